//! The two databases behind [`crate::Store`], with the same behaviour.
//!
//! Backends see keys and *sealed* values only; encryption, validation and the audit-chain
//! check live above them in `lib.rs`, once. An enum rather than a trait object: two
//! variants, no `async-trait`, and every call is a plain `match`.

pub(crate) mod postgres;
pub(crate) mod sqlite;

use std::time::{SystemTime, UNIX_EPOCH};

use crate::audit::{AuditCheckpoint, AuditRecord};
use crate::error::Result;
use crate::{AuditEvent, Durability};

/// A write, with its value already sealed.
pub(crate) enum RawOp {
    Put { key: String, sealed: Vec<u8> },
    Delete { key: String },
    PutIfAbsent { key: String, sealed: Vec<u8> },
}

/// Which keys `list_keys` returns.
pub(crate) struct ListQuery {
    /// Keys starting with this.
    pub(crate) prefix: String,
    /// Only keys after this one (for paging).
    pub(crate) start_after: Option<String>,
    /// At most this many.
    pub(crate) limit: Option<usize>,
}

pub(crate) enum Backend {
    Sqlite(sqlite::SqliteBackend),
    Postgres(postgres::PgBackend),
}

impl Backend {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match self {
            Backend::Sqlite(b) => b.get(key).await,
            Backend::Postgres(b) => b.get(key).await,
        }
    }

    /// Applies `ops` in one transaction. Returns, per op, whether it changed something
    /// (`Delete`: the key existed). A `PutIfAbsent` on a present key fails the whole
    /// transaction with `Conflict`.
    pub(crate) async fn write(&self, ops: Vec<RawOp>) -> Result<Vec<bool>> {
        match self {
            Backend::Sqlite(b) => b.write(ops).await,
            Backend::Postgres(b) => b.write(ops).await,
        }
    }

    /// Applies `ops` and appends `event` in one transaction (both or neither); returns the
    /// event's seq. Group-committed with other writes and appends.
    pub(crate) async fn write_audited(&self, ops: Vec<RawOp>, event: AuditEvent) -> Result<u64> {
        match self {
            Backend::Sqlite(b) => b.write_audited(ops, event).await,
            Backend::Postgres(b) => b.write_audited(ops, event).await,
        }
    }

    /// Replaces the sealed value at `key` only if it is still `expected` (used to re-seal
    /// under a new DEK without clobbering a concurrent write). Returns whether it did.
    pub(crate) async fn replace_sealed(
        &self,
        key: String,
        expected: Vec<u8>,
        sealed: Vec<u8>,
    ) -> Result<bool> {
        match self {
            Backend::Sqlite(b) => b.replace_sealed(key, expected, sealed).await,
            Backend::Postgres(b) => b.replace_sealed(key, expected, sealed).await,
        }
    }

    pub(crate) async fn list_keys(&self, q: ListQuery) -> Result<Vec<String>> {
        match self {
            Backend::Sqlite(b) => b.list_keys(q).await,
            Backend::Postgres(b) => b.list_keys(q).await,
        }
    }

    /// Every `(id, wrapped DEK)` row, by id.
    pub(crate) async fn keyring_rows(&self) -> Result<Vec<(u32, Vec<u8>)>> {
        match self {
            Backend::Sqlite(b) => b.keyring_rows().await,
            Backend::Postgres(b) => b.keyring_rows().await,
        }
    }

    /// Adds a wrapped DEK unless `id` is taken; returns whether it was added.
    pub(crate) async fn keyring_insert(&self, id: u32, wrapped: Vec<u8>) -> Result<bool> {
        match self {
            Backend::Sqlite(b) => b.keyring_insert(id, wrapped).await,
            Backend::Postgres(b) => b.keyring_insert(id, wrapped).await,
        }
    }

    /// The newest keyring row's id and creation time (Unix ms); `None` before initialization.
    pub(crate) async fn keyring_newest(&self) -> Result<Option<(u32, i64)>> {
        match self {
            Backend::Sqlite(b) => b.keyring_newest().await,
            Backend::Postgres(b) => b.keyring_newest().await,
        }
    }

    /// In one transaction: adds DEK 1 and the seal configuration, unless DEK 1 exists (the
    /// store was initialized). Returns whether it did.
    pub(crate) async fn initialize(&self, wrapped: Vec<u8>, config: String) -> Result<bool> {
        match self {
            Backend::Sqlite(b) => b.initialize(wrapped, config).await,
            Backend::Postgres(b) => b.initialize(wrapped, config).await,
        }
    }

    /// The seal configuration written at initialization.
    pub(crate) async fn seal_config(&self) -> Result<Option<String>> {
        match self {
            Backend::Sqlite(b) => b.seal_config().await,
            Backend::Postgres(b) => b.seal_config().await,
        }
    }

    /// Appends to the audit chain (serialised with every other append); returns the seq.
    pub(crate) async fn audit_append(
        &self,
        event: AuditEvent,
        durability: Durability,
    ) -> Result<u64> {
        match self {
            Backend::Sqlite(b) => b.audit_append(event, durability).await,
            Backend::Postgres(b) => b.audit_append(event, durability).await,
        }
    }

    pub(crate) async fn audit_since(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>> {
        match self {
            Backend::Sqlite(b) => b.audit_since(after_seq, limit).await,
            Backend::Postgres(b) => b.audit_since(after_seq, limit).await,
        }
    }

    /// The retention checkpoint, if records were ever pruned (not checked here).
    pub(crate) async fn audit_checkpoint(&self) -> Result<Option<AuditCheckpoint>> {
        match self {
            Backend::Sqlite(b) => b.audit_checkpoint().await,
            Backend::Postgres(b) => b.audit_checkpoint().await,
        }
    }

    /// In one transaction: if the checkpoint's seq is still `expected_prev` (0: none) and the
    /// record at `cp.seq` has `cp.hash`, writes `cp` and deletes every record up to it.
    /// Returns how many were deleted; `Conflict` if another pruner moved the checkpoint.
    pub(crate) async fn audit_prune(&self, expected_prev: u64, cp: AuditCheckpoint) -> Result<u64> {
        match self {
            Backend::Sqlite(b) => b.audit_prune(expected_prev, cp).await,
            Backend::Postgres(b) => b.audit_prune(expected_prev, cp).await,
        }
    }

    /// The head row: last seq and hash.
    pub(crate) async fn audit_head(&self) -> Result<(u64, String)> {
        match self {
            Backend::Sqlite(b) => b.audit_head().await,
            Backend::Postgres(b) => b.audit_head().await,
        }
    }
}

/// The least string greater than every string that starts with `prefix`, or `None` if there
/// is none (empty prefix). Code-point order is UTF-8 byte order, which both backends compare by.
pub(crate) fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = last as u32 + 1;
        if next == 0xD800 {
            next = 0xE000;
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
        // `last` was U+10FFFF: carry into the previous character.
    }
    None
}

/// Now, in Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Turns a stored seq (signed in both databases) into the API's `u64`.
pub(crate) fn seq_from_db(seq: i64) -> Result<u64> {
    u64::try_from(seq)
        .map_err(|_| crate::StoreError::Corrupt(format!("audit seq {seq} is negative")))
}

/// Builds the record from stored columns, parsing `detail`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn record_from_columns(
    seq: i64,
    time: i64,
    component: String,
    action: String,
    actor: String,
    subject: Option<String>,
    outcome: String,
    detail: &str,
    source: Option<String>,
    prev_hash: String,
    hash: String,
) -> Result<AuditRecord> {
    let detail = serde_json::from_str(detail).map_err(|e| {
        crate::StoreError::Corrupt(format!("audit record {seq}: detail is not JSON: {e}"))
    })?;
    Ok(AuditRecord {
        seq: seq_from_db(seq)?,
        time,
        event: AuditEvent {
            component,
            action,
            actor,
            subject,
            outcome,
            detail,
            source,
        },
        prev_hash,
        hash,
    })
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_next_string_after_the_prefix_range() {
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("a/b").as_deref(), Some("a/c"));
        assert_eq!(prefix_end("a/").as_deref(), Some("a0"));
        assert_eq!(prefix_end("x\u{D7FF}").as_deref(), Some("x\u{E000}"));
        assert_eq!(prefix_end("x\u{10FFFF}").as_deref(), Some("y"));
        assert_eq!(prefix_end("\u{10FFFF}"), None);
    }
}
