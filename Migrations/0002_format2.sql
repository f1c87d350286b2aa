-- gbg-vault schema, format version 2. See FORMAT.md §3 for every column.
-- Shipped migrations are never edited: add a new numbered file instead.
--
-- On a format-1 vault this runs inside the upgrade transaction (FORMAT.md §9): the
-- program first checks every format-1 MAC, secret and audit record, then runs this
-- file, then fills the new columns (random identifiers, current versions, re-sealed
-- secrets, new MACs) and writes the header as format 2, all before one COMMIT.

-- §3.1 The key epoch: 1 at init, +1 on every rekey (a new data key and audit key).
ALTER TABLE vault_header ADD COLUMN key_epoch INTEGER NOT NULL DEFAULT 1 CHECK (key_epoch >= 1);

-- §3.2 Environments gain a random identifier, fixed when the environment is added.
CREATE TABLE environment_v2 (
    name       TEXT PRIMARY KEY NOT NULL,
    uid        BLOB NOT NULL UNIQUE CHECK (length(uid) = 16),
    token_url  TEXT NOT NULL,
    api_base   TEXT,
    created_at TEXT NOT NULL,
    mac        BLOB NOT NULL CHECK (length(mac) = 32)
) STRICT;
INSERT INTO environment_v2 (name, uid, token_url, api_base, created_at, mac)
    SELECT name, randomblob(16), token_url, api_base, created_at, mac FROM environment;
DROP TABLE environment;
ALTER TABLE environment_v2 RENAME TO environment;

-- §3.3 Profiles gain a random identifier (bound into every secret and cached token) and
-- the current secret versions (covered by the profile MAC).
CREATE TABLE profile_v2 (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    uid         BLOB NOT NULL UNIQUE CHECK (length(uid) = 16),
    name        TEXT NOT NULL UNIQUE,
    client_id   TEXT NOT NULL,
    username    TEXT,
    grant_type  TEXT NOT NULL CHECK (grant_type IN ('password', 'client_credentials')),
    scope       TEXT,
    environment TEXT NOT NULL,
    client_secret_version INTEGER NOT NULL CHECK (client_secret_version >= 1),
    password_version      INTEGER CHECK (password_version >= 1),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    mac         BLOB NOT NULL CHECK (length(mac) = 32),
    CHECK ((grant_type = 'password') = (username IS NOT NULL)),
    CHECK ((grant_type = 'password') = (password_version IS NOT NULL))
) STRICT;
INSERT INTO profile_v2 (id, uid, name, client_id, username, grant_type, scope, environment,
                        client_secret_version, password_version, created_at, updated_at, mac)
    SELECT p.id, randomblob(16), p.name, p.client_id, p.username, p.grant_type, p.scope, p.environment,
           (SELECT max(version) FROM secret_version s WHERE s.profile_id = p.id AND s.field = 'client_secret'),
           (SELECT max(version) FROM secret_version s WHERE s.profile_id = p.id AND s.field = 'password'),
           p.created_at, p.updated_at, p.mac
    FROM profile p;
DROP TABLE profile;
ALTER TABLE profile_v2 RENAME TO profile;

-- §3.5 The token cache is bound to the environment's identifier and definition. Format-1
-- cache entries are dropped by the upgrade (the next token is a fresh exchange).
DROP TABLE token_cache;
CREATE TABLE token_cache (
    profile_id      INTEGER NOT NULL REFERENCES profile(id) ON DELETE CASCADE,
    environment     TEXT    NOT NULL,
    environment_uid BLOB    NOT NULL CHECK (length(environment_uid) IN (0, 16)),
    expires_at      INTEGER NOT NULL,
    client_secret_version INTEGER NOT NULL,
    password_version      INTEGER,
    nonce           BLOB    NOT NULL CHECK (length(nonce) = 24),
    ciphertext      BLOB    NOT NULL CHECK (length(ciphertext) >= 17),
    PRIMARY KEY (profile_id, environment)
) STRICT;

-- §3.6 Audit records carry the key epoch whose audit key MACs them; the first record of
-- a new epoch (rekey) is also MAC'd under the previous epoch's key.
ALTER TABLE audit_record ADD COLUMN key_epoch INTEGER NOT NULL DEFAULT 1 CHECK (key_epoch >= 1);
ALTER TABLE audit_record ADD COLUMN previous_key_mac BLOB CHECK (previous_key_mac IS NULL OR length(previous_key_mac) = 32);

-- §3.7 The head names the key epoch it is MAC'd under.
DROP TABLE audit_head;
CREATE TABLE audit_head (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    seq       INTEGER NOT NULL CHECK (seq >= 1),
    key_epoch INTEGER NOT NULL CHECK (key_epoch >= 1),
    last_mac  BLOB    NOT NULL CHECK (length(last_mac) = 32),
    mac       BLOB    NOT NULL CHECK (length(mac) = 32)
) STRICT;

-- §3.8 Audit keys of earlier epochs, each sealed under the next epoch's audit key, so
-- that today's keys verify the whole chain and yesterday's cannot write today's records.
CREATE TABLE retired_audit_key (
    key_epoch INTEGER PRIMARY KEY CHECK (key_epoch >= 1),
    nonce     BLOB NOT NULL CHECK (length(nonce) = 24),
    sealed    BLOB NOT NULL CHECK (length(sealed) = 48)
) STRICT;
