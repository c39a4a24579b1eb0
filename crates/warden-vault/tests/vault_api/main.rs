//! The vault's HTTP API over real sockets, on SQLite and (with `WARDEN_TEST_DATABASE_URL`)
//! PostgreSQL. One test binary for all of it, to link once.

mod approle;
mod audit_device;
mod common;
mod database;
mod isolation;
mod kv;
mod leases;
mod mounts;
mod policies;
mod tokens;
mod transit;
mod wrapping;
