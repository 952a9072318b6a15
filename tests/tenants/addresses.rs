//! Hostile tenants: addresses (see main.rs).
