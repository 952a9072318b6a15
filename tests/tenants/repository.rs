//! Hostile tenants: repository (see main.rs).
