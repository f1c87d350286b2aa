-- gbg-vault schema, format version 3: members. See FORMAT.md §3 and §10.
-- Shipped migrations are never edited: add a new numbered file instead.
--
-- On a format-2 vault this runs inside the upgrade transaction (FORMAT.md §9.2): the
-- program checks the header and the audit head first, then runs this file, then creates
-- the owner member (the passphrase's identity), its key slot, the format-3 header and a
-- signed `upgrade` record, all before one COMMIT.

-- §3.1 The first audit record that must be signed (1 for a vault made in format 3; the
-- format-3 `upgrade` record of an upgraded vault).
ALTER TABLE vault_header ADD COLUMN signed_from_seq INTEGER CHECK (signed_from_seq IS NULL OR signed_from_seq >= 1);

-- §3.9 Members: who can open the vault and whose key signs which audit records. A
-- removed member keeps its row (removed_seq set) so its old records still verify.
CREATE TABLE member (
    name            TEXT PRIMARY KEY NOT NULL,
    uid             BLOB NOT NULL UNIQUE CHECK (length(uid) = 16),
    kind            TEXT NOT NULL CHECK (kind IN ('passphrase', 'recipient')),
    box_public_key  BLOB NOT NULL CHECK (length(box_public_key) = 32),
    sign_public_key BLOB NOT NULL CHECK (length(sign_public_key) = 32),
    added_seq       INTEGER NOT NULL CHECK (added_seq >= 1),
    removed_seq     INTEGER CHECK (removed_seq IS NULL OR removed_seq > added_seq),
    created_at      TEXT NOT NULL,
    mac             BLOB NOT NULL CHECK (length(mac) = 32)
) STRICT;

-- §3.10 Key slots: the data key and audit key sealed to each current member, a MAC that
-- ties the sealed box to its member's row (any key holder can check it), and, on the
-- owner's slot only, the owner's endorsement (only the owner can make or check it).
CREATE TABLE key_slot (
    member      TEXT PRIMARY KEY NOT NULL REFERENCES member(name),
    key_epoch   INTEGER NOT NULL CHECK (key_epoch >= 1),
    sealed      BLOB NOT NULL CHECK (length(sealed) = 144),
    mac         BLOB NOT NULL CHECK (length(mac) = 32),
    endorsement BLOB CHECK (endorsement IS NULL OR length(endorsement) = 32)
) STRICT;

-- §3.6 Who caused each record, and that member's Ed25519 signature.
ALTER TABLE audit_record ADD COLUMN member TEXT;
ALTER TABLE audit_record ADD COLUMN signature BLOB CHECK (signature IS NULL OR length(signature) = 64);
CREATE INDEX audit_record_member ON audit_record (member, seq);
