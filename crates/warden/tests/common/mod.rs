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

/// A port free on 127.0.0.1 a moment ago (for `warden serve` configs that need a fixed one).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
