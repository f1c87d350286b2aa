-- gbg-vault schema, format version 4: the owner signs every member row and key slot.
-- See FORMAT.md §10.6. Shipped migrations are never edited: add a new numbered file instead.
--
-- On a format-3 vault this runs inside the upgrade transaction (FORMAT.md §9.1): the
-- program checks the members, key slots and audit trail first, then runs this file, then
-- signs every member row and key slot with the owner's key, writes the format-4 header and
-- a signed `upgrade` record, all before one COMMIT. The columns are NULL only in the
-- moment between this file and those writes; format 4 requires them.

-- §3.9 The owner's Ed25519 signature over the member row (§10.6).
ALTER TABLE member ADD COLUMN owner_signature BLOB CHECK (owner_signature IS NULL OR length(owner_signature) = 64);

-- §3.10 The owner's Ed25519 signature over the key slot (§10.6).
ALTER TABLE key_slot ADD COLUMN owner_signature BLOB CHECK (owner_signature IS NULL OR length(owner_signature) = 64);

-- §4.4 step 10, §6.4: the highest key epoch in the trail, read at every unlock and append.
CREATE INDEX audit_record_epoch ON audit_record (key_epoch);
