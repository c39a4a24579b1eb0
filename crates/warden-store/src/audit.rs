//! The shared audit log: events, records and the hash chain over them.
//!
//! Every authority component (tokens, vault, CA) appends to one log. Each record carries
//! `hash = hex(SHA-256(prev_hash || canonical JSON of {"event", "seq", "time"}))`, with
//! `prev_hash` of the first record 64 zeros, and the backend keeps a one-row *head* with the
//! last sequence number and hash. Editing a record breaks its hash; deleting one breaks the
//! sequence and the next record's `prev_hash`; deleting the newest records disagrees with the
//! head. Someone who can rewrite the whole table *and* the head can forge a consistent chain:
//! shipping the head hash somewhere else (a log pipeline, a periodic signed checkpoint) is what
//! closes that, and is future work.
//!
//! **Retention.** [`crate::Store::prune_audit`] deletes the oldest records (by age, by count)
//! behind a [`AuditCheckpoint`]: the seq, hash and time of the last pruned record, MACed
//! (HMAC-SHA256) with a key derived from the key-encryption key. Verification then starts
//! from the checkpoint instead of the genesis hash, after checking its MAC, so the remaining
//! chain is as verifiable as before: an edited record still breaks its hash, a deleted one
//! the sequence, and the checkpoint cannot be moved (to hide deleted records behind it) or
//! replaced by an older one without the KEK (an older one expects records that are gone).
//! Pruning verifies the records it removes first, so damage is never laundered into a
//! checkpoint. The database refuses deleting records the checkpoint does not cover.
//!
//! The log is **not encrypted**: operators must be able to read it. Callers must never put
//! secrets in an event (no token, no client secret, no key, no vault value): `detail` is for
//! ids, names, scopes and reasons.

use ring::digest::{Context, SHA256};
use ring::hmac;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Result, StoreError};

/// The `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The largest event accepted, as canonical JSON.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// What happened, as a component reports it. Never holds secrets (see the module docs).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AuditEvent {
    /// Which component: `"tokens"`, `"vault"`, `"ca"`, `"store"`.
    pub component: String,
    /// What was done, e.g. `"token.issue"`, `"client.authenticate"`.
    pub action: String,
    /// Who did it: a client id, an admin identity, `"system"`.
    pub actor: String,
    /// What it was done to, if anything: a client id, a secret path, a certificate serial.
    pub subject: Option<String>,
    /// `"success"` or `"failure"`.
    pub outcome: String,
    /// Structured, non-secret detail (scopes, audience, reason, jti).
    pub detail: Value,
    /// The client's address, if the action came over the network.
    pub source: Option<String>,
}

/// An event as stored: its place in the chain and when it was appended.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AuditRecord {
    /// 1, 2, 3, … with no gaps.
    pub seq: u64,
    /// When it was appended, in Unix milliseconds (the authority's clock).
    pub time: i64,
    /// The event.
    pub event: AuditEvent,
    /// The previous record's `hash` ([`GENESIS_HASH`] for the first).
    pub prev_hash: String,
    /// This record's hash (lower-case hex SHA-256).
    pub hash: String,
}

/// Where the audit chain starts after its oldest records were pruned.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditCheckpoint {
    /// The last pruned record's seq: the remaining chain starts at `seq + 1`.
    pub seq: u64,
    /// That record's hash, the `prev_hash` of the first remaining record.
    pub hash: String,
    /// That record's time (Unix milliseconds).
    pub time: i64,
    /// When the checkpoint was written (Unix milliseconds).
    pub pruned_at: i64,
    /// Lower-case hex HMAC-SHA256 of the fields above under the store's checkpoint key.
    pub mac: String,
}

/// The key checkpoints are MACed with: derived from the KEK (never stored), so only someone
/// holding the KEK can write a checkpoint that verifies.
pub(crate) fn checkpoint_key(kek: &[u8]) -> hmac::Key {
    let root = hmac::Key::new(hmac::HMAC_SHA256, kek);
    let derived = hmac::sign(&root, b"warden-store/audit-checkpoint/v1");
    hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref())
}

fn checkpoint_message(seq: u64, hash: &str, time: i64, pruned_at: i64) -> String {
    format!("warden-audit-checkpoint/v1\n{seq}\n{hash}\n{time}\n{pruned_at}")
}

impl AuditCheckpoint {
    /// A checkpoint after the record `(seq, hash, time)`, MACed with `key`.
    pub(crate) fn new(key: &hmac::Key, seq: u64, hash: &str, time: i64, pruned_at: i64) -> Self {
        let tag = hmac::sign(
            key,
            checkpoint_message(seq, hash, time, pruned_at).as_bytes(),
        );
        AuditCheckpoint {
            seq,
            hash: hash.to_owned(),
            time,
            pruned_at,
            mac: hex(tag.as_ref()),
        }
    }

    /// Whether the MAC holds (constant time).
    pub(crate) fn authentic(&self, key: &hmac::Key) -> bool {
        let Some(tag) = unhex(&self.mac) else {
            return false;
        };
        let msg = checkpoint_message(self.seq, &self.hash, self.time, self.pruned_at);
        hmac::verify(key, msg.as_bytes(), &tag).is_ok()
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// Checks records in sequence order, one at a time, so a log of any length is verified in
/// bounded memory.
pub(crate) struct ChainVerifier {
    next_seq: u64,
    prev_hash: String,
}

impl ChainVerifier {
    pub(crate) fn new() -> Self {
        ChainVerifier {
            next_seq: 1,
            prev_hash: GENESIS_HASH.to_owned(),
        }
    }

    /// Continues a chain whose records up to `seq` (the last with `hash`) were pruned.
    pub(crate) fn resume(seq: u64, hash: &str) -> Self {
        ChainVerifier {
            next_seq: seq + 1,
            prev_hash: hash.to_owned(),
        }
    }

    /// The seq of the last record checked (the start's, before any): records up to it are
    /// accounted for.
    pub(crate) fn count(&self) -> u64 {
        self.next_seq - 1
    }

    pub(crate) fn check(&mut self, rec: &AuditRecord) -> Result<()> {
        let seq = self.next_seq;
        if rec.seq != seq {
            return Err(StoreError::Corrupt(format!(
                "audit record {seq} is missing (the next record is {})",
                rec.seq
            )));
        }
        if rec.prev_hash != self.prev_hash {
            return Err(StoreError::Corrupt(format!(
                "audit record {seq}: prev_hash does not match the hash of record {}",
                seq - 1
            )));
        }
        if record_hash(&rec.prev_hash, rec.seq, rec.time, &rec.event)? != rec.hash {
            return Err(StoreError::Corrupt(format!(
                "audit record {seq} was altered: its hash does not match its contents"
            )));
        }
        self.prev_hash.clone_from(&rec.hash);
        self.next_seq += 1;
        Ok(())
    }

    /// Compares the end of the chain with the backend's head row.
    pub(crate) fn finish(&self, head_seq: u64, head_hash: &str) -> Result<u64> {
        let last = self.count();
        if head_seq != last || (last > 0 && head_hash != self.prev_hash) {
            let first_bad = last + 1;
            return Err(StoreError::Corrupt(format!(
                "audit record {first_bad} is missing: the log ends at {last} but its head records {head_seq}"
            )));
        }
        Ok(last)
    }
}

/// `hex(SHA-256(prev_hash || canonical JSON of {"event","seq","time"}))`.
pub(crate) fn record_hash(
    prev_hash: &str,
    seq: u64,
    time: i64,
    event: &AuditEvent,
) -> Result<String> {
    let mut body = String::with_capacity(256);
    body.push_str("{\"event\":");
    canonical_event(event, &mut body)?;
    body.push_str(",\"seq\":");
    body.push_str(&seq.to_string());
    body.push_str(",\"time\":");
    body.push_str(&time.to_string());
    body.push('}');
    let mut ctx = Context::new(&SHA256);
    ctx.update(prev_hash.as_bytes());
    ctx.update(body.as_bytes());
    Ok(hex(ctx.finish().as_ref()))
}

/// The event as canonical JSON (object keys sorted, no spaces); also checks its size.
pub(crate) fn canonical_event(event: &AuditEvent, out: &mut String) -> Result<()> {
    let start = out.len();
    let value = serde_json::to_value(event)
        .map_err(|e| StoreError::Corrupt(format!("audit event: {e}")))?;
    canonical_json(&value, out);
    if out.len() - start > MAX_EVENT_BYTES {
        return Err(StoreError::TooLarge(format!(
            "an audit event is {} bytes as JSON, more than {MAX_EVENT_BYTES}",
            out.len() - start
        )));
    }
    Ok(())
}

/// The `detail` field as canonical JSON, the form the backends store.
pub(crate) fn canonical_detail(detail: &Value) -> String {
    let mut out = String::new();
    canonical_json(detail, &mut out);
    out
}

/// Writes JSON with object keys in byte order, whatever map type serde_json was built with
/// (a crate elsewhere in the build may turn on `preserve_order`).
fn canonical_json(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical_json(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(detail: Value) -> AuditEvent {
        AuditEvent {
            component: "tokens".into(),
            action: "token.issue".into(),
            actor: "svc-a".into(),
            subject: None,
            outcome: "success".into(),
            detail,
            source: Some("127.0.0.1".into()),
        }
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let mut out = String::new();
        canonical_json(
            &json!({"b": 1, "a": {"d": [1, {"z": 0, "y": "\"q"}], "c": null}}),
            &mut out,
        );
        assert_eq!(out, r#"{"a":{"c":null,"d":[1,{"y":"\"q","z":0}]},"b":1}"#);
    }

    #[test]
    fn hash_is_stable_and_covers_every_field() {
        let e = event(json!({"scope": "read", "aud": "api"}));
        let h = record_hash(GENESIS_HASH, 1, 1000, &e).unwrap();
        assert_eq!(h.len(), 64);
        assert_eq!(h, record_hash(GENESIS_HASH, 1, 1000, &e).unwrap());
        assert_ne!(h, record_hash(GENESIS_HASH, 2, 1000, &e).unwrap());
        assert_ne!(h, record_hash(GENESIS_HASH, 1, 1001, &e).unwrap());
        assert_ne!(h, record_hash(&h, 1, 1000, &e).unwrap());
        let mut e2 = e.clone();
        e2.subject = Some("x".into());
        assert_ne!(h, record_hash(GENESIS_HASH, 1, 1000, &e2).unwrap());
    }

    #[test]
    fn verifier_names_the_first_bad_record() {
        let mut recs = Vec::new();
        let mut prev = GENESIS_HASH.to_owned();
        for seq in 1..=3 {
            let e = event(json!({ "n": seq }));
            let hash = record_hash(&prev, seq, 5, &e).unwrap();
            recs.push(AuditRecord {
                seq,
                time: 5,
                event: e,
                prev_hash: prev.clone(),
                hash: hash.clone(),
            });
            prev = hash;
        }
        let mut v = ChainVerifier::new();
        recs.iter().for_each(|r| v.check(r).unwrap());
        assert_eq!(v.finish(3, &prev).unwrap(), 3);
        assert!(v
            .finish(4, &prev)
            .unwrap_err()
            .to_string()
            .contains("record 4 is missing"));

        let mut altered = recs.clone();
        altered[1].event.actor = "mallory".into();
        let mut v = ChainVerifier::new();
        v.check(&altered[0]).unwrap();
        assert!(v
            .check(&altered[1])
            .unwrap_err()
            .to_string()
            .contains("record 2 was altered"));

        let mut v = ChainVerifier::new();
        v.check(&recs[0]).unwrap();
        assert!(v
            .check(&recs[2])
            .unwrap_err()
            .to_string()
            .contains("record 2 is missing"));
    }

    #[test]
    fn checkpoint_mac_covers_every_field_and_needs_the_key() {
        let key = checkpoint_key(&[1u8; 32]);
        let cp = AuditCheckpoint::new(&key, 7, GENESIS_HASH, 1000, 2000);
        assert!(cp.authentic(&key));
        assert!(!cp.authentic(&checkpoint_key(&[2u8; 32])));
        for altered in [
            AuditCheckpoint {
                seq: 8,
                ..cp.clone()
            },
            AuditCheckpoint {
                hash: "00".repeat(32).replace("00", "11"),
                ..cp.clone()
            },
            AuditCheckpoint {
                time: 1001,
                ..cp.clone()
            },
            AuditCheckpoint {
                pruned_at: 1,
                ..cp.clone()
            },
            AuditCheckpoint {
                mac: "zz".into(),
                ..cp.clone()
            },
        ] {
            assert!(!altered.authentic(&key), "{altered:?}");
        }
    }

    #[test]
    fn oversized_event_refused() {
        let e = event(json!({ "x": "a".repeat(MAX_EVENT_BYTES) }));
        assert!(matches!(
            canonical_event(&e, &mut String::new()),
            Err(StoreError::TooLarge(_))
        ));
    }
}
