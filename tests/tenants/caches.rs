//! Hostile tenants: caches (see main.rs).
