-- Warden store, PostgreSQL, version 2: audit retention.
-- The oldest records may be pruned, behind a checkpoint: the seq and hash of the last pruned
-- record, MACed with a key derived from the key-encryption key, so that the rest of the chain
-- still verifies from a point an attacker without the KEK cannot move (see audit.rs).

CREATE TABLE audit_checkpoint (
    id        INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    seq       BIGINT  NOT NULL,
    hash      TEXT    NOT NULL,
    time_ms   BIGINT  NOT NULL,
    pruned_ms BIGINT  NOT NULL,
    mac       TEXT    NOT NULL
);

-- Records may be deleted only once a checkpoint covers them; never updated or truncated.
CREATE FUNCTION warden_audit_prune_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.seq <= COALESCE((SELECT seq FROM audit_checkpoint WHERE id = 1), 0) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'the audit log is append-only';
END
$$;
DROP TRIGGER audit_log_append_only ON audit_log;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION warden_audit_append_only();
CREATE TRIGGER audit_log_prune_only BEFORE DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION warden_audit_prune_only();
