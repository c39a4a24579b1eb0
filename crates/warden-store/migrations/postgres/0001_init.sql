-- Warden store, PostgreSQL, version 1: the key-value table, the keyring, the audit log.
-- Applied once, inside the migration transaction (under an advisory lock), in the first
-- schema of the connection's search_path; recorded in schema_version.

-- Keys are plain text (prefix listing needs them); values are sealed (AES-256-GCM).
-- COLLATE "C": keys sort and range-match by UTF-8 bytes, whatever the database's locale.
CREATE TABLE kv (
    key   TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    value BYTEA NOT NULL
);

-- Data-encryption keys, each wrapped by the key-encryption key. The highest id seals new writes.
CREATE TABLE keyring (
    id         BIGINT NOT NULL PRIMARY KEY,
    wrapped    BYTEA  NOT NULL,
    created_ms BIGINT NOT NULL
);

-- The shared audit log: plain text for operators, hash-chained, append-only.
CREATE TABLE audit_log (
    seq       BIGINT NOT NULL PRIMARY KEY,
    time_ms   BIGINT NOT NULL,
    component TEXT   NOT NULL,
    action    TEXT   NOT NULL,
    actor     TEXT   NOT NULL,
    subject   TEXT,
    outcome   TEXT   NOT NULL,
    detail    TEXT   NOT NULL,
    source    TEXT,
    prev_hash TEXT   NOT NULL,
    hash      TEXT   NOT NULL
);

-- The chain's head: appends lock it (SELECT ... FOR UPDATE), which serialises them, and it
-- reveals records deleted from the end.
CREATE TABLE audit_head (
    id   INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    seq  BIGINT  NOT NULL,
    hash TEXT    NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Append-only, unless someone disables these triggers (the hash chain still tells).
CREATE FUNCTION warden_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION warden_audit_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION warden_audit_append_only();
