-- Warden store, SQLite, version 4: who is the active authority.
-- Kept in step with PostgreSQL's schema (same table). Active/standby needs PostgreSQL: a
-- SQLite store belongs to one authority, which never competes for a lock, so this table
-- stays empty (see leader.rs).

CREATE TABLE ha_leader (
    id         INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    address    TEXT    NOT NULL,
    holder     TEXT    NOT NULL,
    since_ms   INTEGER NOT NULL
);
