//! Hostile tenants: requests (see main.rs).
