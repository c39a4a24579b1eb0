//! The integration tests of `warden`, in one test binary: one module per file beside this one.
//! (One binary links the crate and its dependencies once, where a binary per file linked
//! them once per file: far less disk and link time.) Run one file's tests with
//! `cargo nextest run -p warden -E 'test(/^<file>::/)'`.

mod common;

mod apikey_cli;
mod audit_cli;
mod authority_events;
mod cli;
mod client_cli;
mod config_signing;
mod console;
mod deploy_monitoring;
mod federation;
mod netns;
mod otlp;
mod sidecar;
mod vault_crash;
mod vault_ha;
mod workload_cli;
