-- gbg-vault schema, format version 1. See FORMAT.md §3 for every column.
-- Shipped migrations are never edited: add a new numbered file instead.

-- §1 Marks the file as a gbg-vault vault ("GBGV").
PRAGMA application_id = 1195525974;

-- §3.1 The vault header: one row, authenticated (FORMAT.md §4.3, §4.4).
CREATE TABLE vault_header (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    format_version INTEGER NOT NULL,
    vault_id       BLOB    NOT NULL CHECK (length(vault_id) = 16),
    kdf_algorithm  TEXT    NOT NULL,
    kdf_opslimit   INTEGER NOT NULL CHECK (kdf_opslimit > 0),
    kdf_memlimit   INTEGER NOT NULL CHECK (kdf_memlimit > 0),
    kdf_salt       BLOB    NOT NULL CHECK (length(kdf_salt) = 16),
    key_nonce      BLOB    NOT NULL CHECK (length(key_nonce) = 24),
    wrapped_keys   BLOB    NOT NULL CHECK (length(wrapped_keys) = 80),
    header_digest  BLOB    NOT NULL CHECK (length(header_digest) = 32),
    created_at     TEXT    NOT NULL
) STRICT;

-- §3.2 User-defined environments (eu, us, au are built in and never stored).
CREATE TABLE environment (
    name       TEXT PRIMARY KEY NOT NULL,
    token_url  TEXT NOT NULL,
    api_base   TEXT,
    created_at TEXT NOT NULL,
    mac        BLOB NOT NULL CHECK (length(mac) = 32)
) STRICT;

-- §3.3 Profiles: metadata in clear, authenticated by `mac`.
CREATE TABLE profile (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL UNIQUE,
    client_id   TEXT NOT NULL,
    username    TEXT,
    grant_type  TEXT NOT NULL CHECK (grant_type IN ('password', 'client_credentials')),
    scope       TEXT,
    environment TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    mac         BLOB NOT NULL CHECK (length(mac) = 32),
    CHECK ((grant_type = 'password') = (username IS NOT NULL))
) STRICT;

-- §3.4 Sealed secrets, every version kept until the profile is removed.
CREATE TABLE secret_version (
    profile_id INTEGER NOT NULL REFERENCES profile(id) ON DELETE CASCADE,
    field      TEXT    NOT NULL CHECK (field IN ('client_secret', 'password')),
    version    INTEGER NOT NULL CHECK (version >= 1),
    nonce      BLOB    NOT NULL CHECK (length(nonce) = 24),
    ciphertext BLOB    NOT NULL CHECK (length(ciphertext) >= 17),
    created_at TEXT    NOT NULL,
    PRIMARY KEY (profile_id, field, version)
) STRICT;

-- §3.5 Sealed token cache, one entry per profile and environment.
CREATE TABLE token_cache (
    profile_id  INTEGER NOT NULL REFERENCES profile(id) ON DELETE CASCADE,
    environment TEXT    NOT NULL,
    expires_at  INTEGER NOT NULL,
    client_secret_version INTEGER NOT NULL,
    password_version      INTEGER,
    nonce       BLOB    NOT NULL CHECK (length(nonce) = 24),
    ciphertext  BLOB    NOT NULL CHECK (length(ciphertext) >= 17),
    PRIMARY KEY (profile_id, environment)
) STRICT;

-- §3.6 The audit trail: metadata only, each record MAC-chained to the previous one.
CREATE TABLE audit_record (
    seq               INTEGER PRIMARY KEY,
    at                INTEGER NOT NULL,
    action            TEXT    NOT NULL,
    profile           TEXT,
    environment       TEXT,
    token_url         TEXT,
    grant_type        TEXT,
    outcome           TEXT    NOT NULL,
    http_status       INTEGER,
    oauth_error       TEXT,
    attempts          INTEGER,
    duration_ms       INTEGER,
    token_type        TEXT,
    expires_in        INTEGER,
    expires_at        INTEGER,
    request_id        TEXT,
    token_fingerprint TEXT,
    detail            TEXT,
    mac               BLOB    NOT NULL CHECK (length(mac) = 32)
) STRICT;
CREATE INDEX audit_record_profile_at ON audit_record(profile, seq);
CREATE INDEX audit_record_at ON audit_record(at);

-- §3.7 The head of the audit chain, so that dropping the newest records is detected.
CREATE TABLE audit_head (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    seq      INTEGER NOT NULL,
    last_mac BLOB    NOT NULL CHECK (length(last_mac) = 32),
    mac      BLOB    NOT NULL CHECK (length(mac) = 32)
) STRICT;
