//! Hostile tenants: keys (see main.rs).
