//! Hostile tenants: admin (see main.rs).
