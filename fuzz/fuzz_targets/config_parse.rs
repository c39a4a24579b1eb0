//! The whole config loader: TOML, per-section decoding, value types (durations, sizes, CIDRs,
//! regexes, timestamps, secret references) and validation. A config that loads is written
//! back as TOML (`toml::to_string`) and must load again to the same thing (compared through
//! `to_redacted_json`, what `/config` shows).
//!
//! The same text also goes through the API key file parser (`auth.api_keys.file`, which
//! `warden apikey create|revoke` rewrites with `write_key_file`): keys read, written back and
//! read again must be the same keys, and `ApiKeyStore::from_keys` must not panic on them.
//!
//! Validation reads `file:` secrets with `std::fs::read`; an input naming `/dev/zero` or a FIFO
//! would hang or exhaust memory, which is not what this target is about. Inputs with a `file:`
//! string whose path has a `/` are skipped (a bare name is looked up in the working directory).

#![no_main]

use libfuzzer_sys::fuzz_target;
use warden_auth::apikey;

/// Whether any string in the document is a `file:` reference outside the working directory.
fn names_outside_file(v: &toml::Value) -> bool {
    match v {
        toml::Value::String(s) => s.strip_prefix("file:").is_some_and(|p| p.contains('/')),
        toml::Value::Array(a) => a.iter().any(names_outside_file),
        toml::Value::Table(t) => t.values().any(names_outside_file),
        _ => false,
    }
}

fn key_file(text: &str) {
    let Ok(keys) = apikey::parse_key_file(text) else {
        return;
    };
    let written = apikey::write_key_file(&keys);
    match apikey::parse_key_file(&written) {
        Ok(again) => assert_eq!(
            again, keys,
            "keys changed through write_key_file:\n{written}"
        ),
        Err(e) => panic!("a key file written by write_key_file does not load: {e}\n---\n{written}"),
    }
    let _ = apikey::ApiKeyStore::from_keys(keys);
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    key_file(text);
    match toml::from_str::<toml::Table>(text) {
        Ok(t) if t.values().any(names_outside_file) => return,
        _ => {}
    }
    let config = match warden_config::parse(text) {
        Ok(c) => c,
        Err(errors) => {
            assert!(!errors.is_empty(), "Err without errors");
            let _ = errors.to_string();
            return;
        }
    };
    let json = warden_config::to_redacted_json(&config);
    let Ok(again) = toml::to_string(&config) else {
        return;
    };
    match warden_config::parse(&again) {
        Ok(c) => assert_eq!(
            warden_config::to_redacted_json(&c),
            json,
            "config changed through toml::to_string:\n{again}"
        ),
        Err(e) => panic!("a loaded config, written back, no longer loads:\n{e}\n---\n{again}"),
    }
});
