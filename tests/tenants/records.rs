//! Hostile tenants: records (see main.rs).
