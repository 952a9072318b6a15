//! Hostile tenants: credentials (see main.rs).
