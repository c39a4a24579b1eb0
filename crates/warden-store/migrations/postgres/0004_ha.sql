-- Warden store, PostgreSQL, version 4: who is the active authority.
-- Authorities sharing the database compete for a session-level advisory lock; the one that
-- holds it is active and writes its address here, so standbys can point clients at it
-- (`sys/leader`, redirects). Not secret; readable while sealed. The lock, not this row, is
-- the truth: the row may name an authority that has just died, until the next one writes it.

CREATE TABLE ha_leader (
    id         INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    address    TEXT    NOT NULL,
    holder     TEXT    NOT NULL,
    since_ms   BIGINT  NOT NULL
);
