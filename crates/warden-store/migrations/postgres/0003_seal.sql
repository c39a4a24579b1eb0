-- Warden store, PostgreSQL, version 3: the seal's configuration.
-- How the key-encryption key is supplied (auto from config, or split into key shares) and,
-- for shares, how many there are and how many unseal. Not secret, and readable while the
-- store is sealed (seal-status reports it). Written once, with the first keyring row.

CREATE TABLE seal_config (
    id         INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    config     TEXT    NOT NULL,
    created_ms BIGINT  NOT NULL
);
