//! Hostile tenants: readback (see main.rs).
