//! The integration tests of `warden-agent`, in one test binary: one module per file beside this one.
//! (One binary links the crate and its dependencies once, where a binary per file linked
//! them once per file: far less disk and link time.) Run one file's tests with
//! `cargo nextest run -p warden-agent -E 'test(/^<file>::/)'`.

mod common;

mod agent;
mod workload_api;
