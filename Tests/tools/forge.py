#!/usr/bin/env python3
"""Forges the two team attacks that format 4's owner signatures exist to stop, from
outside gbg-vault's code (FORMAT.md and libsodium only), and prints the SQL that plants
them. It reads a copy of the vault as an SQLite file (`vault copy` makes one of a team
vault: the rows are the same) and writes UPDATE statements for `--dialect sqlite` (the
file itself) or `--dialect pg` (the team vault's schema, via psql).

  reattribute VAULT.db IDENTITY VICTIM
      As the member whose identity file is IDENTITY (unsealed): open its key slot, give
      member VICTIM a signing key the attacker made, recompute VICTIM's row MAC with the
      metadata key every member holds, and re-sign as VICTIM every record the attacker
      or VICTIM signed (the attacker's records now say VICTIM did them).

  seal-outsider VAULT.db MEMBER
      As someone with no key at all (a database administrator): seal keys of their own to
      MEMBER's box key, with the binding, slot MAC and row MAC those keys give, so that
      MEMBER would open the attacker's keys and seal whatever it adds under them.

  epoch-rollback VAULT.db OLD.db IDENTITY   (--dialect sqlite only)
      As a removed member who kept OLD.db, a copy from while it was a member (an older
      key epoch), and can write the store: put the older epoch's header fields, member
      rows, key slots, profiles, environments and secrets back under the current audit
      trail, with the head re-MAC'd under the older audit key the member still holds, so
      that the remaining members would seal new secrets under keys it knows. With
      --append, it also appends a record of its own under the older epoch (MAC'd with its
      old audit key, signed with its own key, whose restored row is current), so that the
      newest record is of the older epoch too. With --relabel as well, the newer epoch's
      records are relabelled as the older epoch (key_epoch only; their MACs untouched), so
      that no record names an epoch above the header's.

Test tool only: the keys it makes are thrown away; it prints no secret.
"""
import ctypes, json, os, sqlite3, sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "testvectors"))
from generate import sodium, subkey, blake2b, s, d, u32, u64, i64, opt_i  # noqa: E402
from open_vault import read_header, identity_secret, open_slot, audit_fields  # noqa: E402


def sign_keypair():
    pk, sk = ctypes.create_string_buffer(32), ctypes.create_string_buffer(64)
    sodium.crypto_sign_keypair(pk, sk)
    return pk.raw, sk.raw


def sign(message, sk):
    sig = ctypes.create_string_buffer(64)
    sodium.crypto_sign_detached(sig, None, message, ctypes.c_ulonglong(len(message)), sk)
    return sig.raw


def seal_box(message, pk):
    out = ctypes.create_string_buffer(len(message) + 48)
    sodium.crypto_box_seal(out, message, ctypes.c_ulonglong(len(message)), pk)
    return out.raw


def literal(b, dialect):
    return f"X'{b.hex()}'" if dialect == "sqlite" else f"'\\x{b.hex()}'::bytea"


def member_mac(h, row, meta_key):
    (name, uid, kind, box_pk, sign_pk, added, removed, created) = row
    return blake2b(s("gbg-vault/v3 member") + d(h["vid"]) + s(name) + d(uid) + s(kind) + d(box_pk) + d(sign_pk)
                   + i64(added) + opt_i(removed) + s(created), meta_key)


MEMBER_COLS = "name, uid, kind, box_public_key, sign_public_key, added_seq, removed_seq, created_at"


def reattribute(db, h, identity_path, victim, dialect):
    attacker, data_key, _ = open_slot(db, h, identity_secret(identity_path))
    meta_key = subkey(data_key, 1, b"gbgvmeta")
    row = db.execute(f"SELECT {MEMBER_COLS} FROM member WHERE name = ?", (victim,)).fetchone()
    assert row is not None, f"no member {victim}"
    pk, sk = sign_keypair()
    forged = row[:4] + (pk,) + row[5:]
    out = [f"UPDATE member SET sign_public_key = {literal(pk, dialect)}, mac = {literal(member_mac(h, forged, meta_key), dialect)} "
           f"WHERE name = '{victim}';"]
    resigned = []
    for (seq, mac) in db.execute("SELECT seq, mac FROM audit_record WHERE member IN (?, ?) ORDER BY seq", (attacker, victim)):
        sig = sign(s("gbg-vault/v3 audit-signature") + d(h["vid"]) + i64(seq) + s(victim) + d(mac), sk)
        out.append(f"UPDATE audit_record SET member = '{victim}', signature = {literal(sig, dialect)} WHERE seq = {seq};")
        resigned.append(seq)
    return out, {"attacker": attacker, "victim": victim, "resigned": resigned}


def seal_outsider(db, h, member, dialect):
    (name, uid, kind, box_pk, sign_pk, added, removed, created) = db.execute(
        f"SELECT {MEMBER_COLS} FROM member WHERE name = ?", (member,)).fetchone()
    data_key, audit_key = os.urandom(32), os.urandom(32)
    meta_key = subkey(data_key, 1, b"gbgvmeta")
    epoch = h["epoch"]
    binding = blake2b(s("gbg-vault/v3 key-slot") + d(h["vid"]) + i64(epoch) + s(name) + d(uid) + d(box_pk) + d(data_key) + d(audit_key))
    sealed = seal_box(data_key + audit_key + binding, box_pk)
    slot_mac = blake2b(s("gbg-vault/v3 key-slot-mac") + d(h["vid"]) + s(name) + d(uid) + i64(epoch) + d(sealed), meta_key)
    row_mac = member_mac(h, (name, uid, kind, box_pk, sign_pk, added, removed, created), meta_key)
    return [f"UPDATE key_slot SET sealed = {literal(sealed, dialect)}, mac = {literal(slot_mac, dialect)} WHERE member = '{name}';",
            f"UPDATE member SET mac = {literal(row_mac, dialect)} WHERE name = '{name}';"], {"member": name}


def epoch_rollback(db, h, old_path, identity_path, append=False, relabel=False):
    old = sqlite3.connect(f"file:{old_path}?mode=ro", uri=True)
    oh = read_header(old, True)
    assert oh["vid"] == h["vid"] and oh["epoch"] < h["epoch"], "OLD.db must be an older epoch of the same vault"
    member, _, old_audit_key = open_slot(old, oh, identity_secret(identity_path))
    digest = blake2b(s("gbg-vault/v3 header") + u32(oh["fv"]) + d(oh["vid"]) + i64(oh["epoch"]) + i64(oh["signed_from"])
                     + s(oh["alg"]) + u64(oh["ops"]) + u64(oh["mem"]) + d(oh["salt"]) + d(oh["knonce"]) + d(oh["wrapped"]))
    (seq, last_mac) = db.execute("SELECT seq, last_mac FROM audit_head").fetchone()
    mac_key = subkey(old_audit_key, 1, b"gbgvaudt")
    x = lambda b: literal(b, "sqlite")
    appended = []
    if append:
        secret = identity_secret(identity_path)
        pk, sk = ctypes.create_string_buffer(32), ctypes.create_string_buffer(64)
        sodium.crypto_sign_seed_keypair(pk, sk, secret[32:])
        seq, at = seq + 1, 1764384000000
        row = (seq, at, "token", "cc", None, None, None, "cache_hit") + (None,) * 10
        mac = blake2b(s("gbg-vault/v2 audit") + d(h["vid"]) + d(last_mac) + i64(seq) + i64(oh["epoch"]) + audit_fields(row), mac_key)
        sig = sign(s("gbg-vault/v3 audit-signature") + d(h["vid"]) + i64(seq) + s(member) + d(mac), sk.raw)
        appended = [f"INSERT INTO audit_record (seq, at, action, profile, outcome, mac, key_epoch, member, signature) VALUES "
                    f"({seq}, {at}, 'token', 'cc', 'cache_hit', {x(mac)}, {oh['epoch']}, '{member}', {x(sig)});"]
        last_mac = mac
    head_mac = blake2b(s("gbg-vault/v2 audit-head") + d(h["vid"]) + i64(seq) + i64(oh["epoch"]) + d(last_mac), mac_key)
    tables = ["member", "environment", "profile", "secret_version", "key_slot"]
    return ([f"ATTACH '{old_path}' AS old;", "PRAGMA foreign_keys = OFF;", "BEGIN;", "DELETE FROM token_cache;",
             "DELETE FROM retired_audit_key;"]
            + [f"DELETE FROM {name};" for name in reversed(tables)]
            + [f"INSERT INTO {name} SELECT * FROM old.{name};" for name in tables]
            + [f"UPDATE vault_header SET key_epoch = {oh['epoch']}, kdf_salt = {x(oh['salt'])}, key_nonce = {x(oh['knonce'])}, "
               f"wrapped_keys = {x(oh['wrapped'])}, header_digest = {x(digest)};",
               *([f"UPDATE audit_record SET key_epoch = {oh['epoch']}, previous_key_mac = NULL WHERE key_epoch > {oh['epoch']};"]
                 if relabel else []),
               *appended,
               f"UPDATE audit_head SET seq = {seq}, key_epoch = {oh['epoch']}, last_mac = {x(last_mac)}, mac = {x(head_mac)};", "COMMIT;"],
            {"member": member, "epoch": oh["epoch"], "head": seq})


def main():
    mode, path = sys.argv[1], sys.argv[2]
    dialect = sys.argv[sys.argv.index("--dialect") + 1] if "--dialect" in sys.argv else "sqlite"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    h = read_header(db, True)
    if mode == "reattribute":
        statements, summary = reattribute(db, h, sys.argv[3], sys.argv[4], dialect)
    elif mode == "epoch-rollback":
        statements, summary = epoch_rollback(db, h, sys.argv[3], sys.argv[4], append="--append" in sys.argv, relabel="--relabel" in sys.argv)
    elif mode == "seal-outsider":
        statements, summary = seal_outsider(db, h, sys.argv[3], dialect)
    else:
        sys.exit(f"unknown mode {mode}")
    sys.stderr.write(json.dumps(summary) + "\n")
    print("\n".join(statements))


if __name__ == "__main__":
    main()
