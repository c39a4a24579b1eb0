-- Warden store, SQLite, version 1: the key-value table, the keyring, the audit log.
-- Applied once, inside the migration transaction; recorded in schema_version.

-- Keys are plain text (prefix listing needs them); values are sealed (AES-256-GCM).
-- BINARY collation: keys sort and range-match by UTF-8 bytes, as on PostgreSQL (COLLATE "C").
CREATE TABLE kv (
    key   TEXT NOT NULL PRIMARY KEY COLLATE BINARY,
    value BLOB NOT NULL
);

-- Data-encryption keys, each wrapped by the key-encryption key. The highest id seals new writes.
CREATE TABLE keyring (
    id         INTEGER NOT NULL PRIMARY KEY,
    wrapped    BLOB    NOT NULL,
    created_ms INTEGER NOT NULL
);

-- The shared audit log: plain text for operators, hash-chained, append-only.
CREATE TABLE audit_log (
    seq       INTEGER NOT NULL PRIMARY KEY,
    time_ms   INTEGER NOT NULL,
    component TEXT    NOT NULL,
    action    TEXT    NOT NULL,
    actor     TEXT    NOT NULL,
    subject   TEXT,
    outcome   TEXT    NOT NULL,
    detail    TEXT    NOT NULL,
    source    TEXT,
    prev_hash TEXT    NOT NULL,
    hash      TEXT    NOT NULL
);

-- The chain's head: the last seq and hash. Appends read and update it inside their
-- transaction (which serialises them), and it reveals records deleted from the end.
CREATE TABLE audit_head (
    id   INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT    NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Append-only, unless someone drops these triggers (the hash chain still tells).
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
