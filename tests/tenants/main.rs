//! The hostile-tenant suite: one module per trust rule of SECURITY.md, each test named
//! after the attack it stops and run against the real binary and real peers on loopback.
//! SECURITY.md's role tables name these tests one for one.

#[path = "../support/mod.rs"]
mod support;

mod addresses;
mod admin;
mod caches;
mod credentials;
mod keys;
mod names;
mod readback;
mod records;
mod repository;
mod requests;
