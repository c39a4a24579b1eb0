-- Warden store, SQLite, version 2: audit retention.
-- The oldest records may be pruned, behind a checkpoint: the seq and hash of the last pruned
-- record, MACed with a key derived from the key-encryption key, so that the rest of the chain
-- still verifies from a point an attacker without the KEK cannot move (see audit.rs).

CREATE TABLE audit_checkpoint (
    id        INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    seq       INTEGER NOT NULL,
    hash      TEXT    NOT NULL,
    time_ms   INTEGER NOT NULL,
    pruned_ms INTEGER NOT NULL,
    mac       TEXT    NOT NULL
);

-- Records may be deleted only once a checkpoint covers them.
DROP TRIGGER audit_log_no_delete;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
WHEN OLD.seq > COALESCE((SELECT seq FROM audit_checkpoint WHERE id = 1), 0)
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
