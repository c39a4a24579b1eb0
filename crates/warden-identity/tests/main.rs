//! The integration tests of `warden-identity`, in one test binary: one module per file beside this one.
//! (One binary links the crate and its dependencies once, where a binary per file linked
//! them once per file: far less disk and link time.) Run one file's tests with
//! `cargo nextest run -p warden-identity -E 'test(/^<file>::/)'`.

mod issuance;
mod mtls;
