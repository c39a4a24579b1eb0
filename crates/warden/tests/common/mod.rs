//! Running the `warden` binary from CLI tests.

#![allow(dead_code, unreachable_pub)]

use std::process::{Command, Output};

use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_warden");

/// Runs `warden` with `args`.
pub fn warden(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run warden")
}

/// The JSON a successful run printed on stdout.
pub fn json_out(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "warden failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("JSON on stdout")
}
