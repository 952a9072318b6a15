//! Hostile tenants: names (see main.rs).
