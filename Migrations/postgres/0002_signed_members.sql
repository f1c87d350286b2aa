-- Format 4, as Migrations/0004_signed_members.sql for the SQLite file (FORMAT.md §10.6):
-- the owner's Ed25519 signature over each member row and each key slot. Run inside the
-- vault's schema, in the upgrade transaction that checks the format-3 vault first and
-- signs the rows after (FORMAT.md §9.1, §11.2).

ALTER TABLE member ADD COLUMN owner_signature BYTEA CHECK (owner_signature IS NULL OR length(owner_signature) = 64);
ALTER TABLE key_slot ADD COLUMN owner_signature BYTEA CHECK (owner_signature IS NULL OR length(owner_signature) = 64);
CREATE INDEX audit_record_epoch ON audit_record (key_epoch);
