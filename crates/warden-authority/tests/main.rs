//! The integration tests of `warden-authority`, in one test binary: one module per file beside this one.
//! (One binary links the crate and its dependencies once, where a binary per file linked
//! them once per file: far less disk and link time.) Run one file's tests with
//! `cargo nextest run -p warden-authority -E 'test(/^<file>::/)'`.

#[macro_use]
mod common;

mod hvac_seal;
mod identity;
mod seal;
mod tls_listener;
mod token_service;
