#!/usr/bin/env python3
"""Opens a gbg-vault file using only FORMAT.md, a key source and libsodium (ctypes).

Independent of the Swift code. For formats 3 and 4 it unwraps the owner's identity with
the passphrase (§4.2), or opens a member identity file (§10.2), finds the member's key slot
by trying every slot (§10.3), checks every member MAC (§10.4) and every audit signature
(§6.7); for format 4 also the owner's signature on every member row and key slot
(§10.6). As for format 2 it checks the header (§4.4), unwraps the
keys (§4.2), checks every environment and profile MAC (§5.3) and the version sequences
(§3.4), opens every secret version (§5.1) and cached token (§5.2), unwraps the retired
audit keys (§6.6) and verifies the audit chain (§6.5). Format 1 (§9) is read too, so a
crash during the upgrade can be checked from outside. Prints a JSON report on stdout;
on the first violation prints {"error": "..."} and exits 1.

usage: VAULT_PASSPHRASE=… python3 open_vault.py VAULT.db [--allow-test-kdf]
       [--show-keys]   (adds the KEK, data key and audit keys in hex: for leak scans)
       [--identity PATH]  (format 3: open as that member; a sealed identity file takes
                           VAULT_IDENTITY_PASSPHRASE)
"""
import json, os, sqlite3, sys
from generate import sodium, pwhash, subkey, blake2b, s, d, u32, u64, i64, opt_s, opt_i
import ctypes

class Violation(Exception):
    pass

def check(condition, reason):
    if not condition:
        raise Violation(reason)

def aead_open(key, nonce, ciphertext, ad, what):
    out = ctypes.create_string_buffer(max(1, len(ciphertext) - 16))
    outlen = ctypes.c_ulonglong(0)
    rc = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(out, ctypes.byref(outlen), None, ciphertext,
        ctypes.c_ulonglong(len(ciphertext)), ad, ctypes.c_ulonglong(len(ad)), nonce, key)
    check(rc == 0, f"{what}: authentication failed")
    return out.raw[:outlen.value]

AUDIT_COLS = ("seq, at, action, profile, environment, token_url, grant_type, outcome, http_status, oauth_error, attempts, "
              "duration_ms, token_type, expires_in, expires_at, request_id, token_fingerprint, detail, mac")

def audit_fields(row):
    (seq, at, action, profile, env, url, grant, outcome, status, oerr, attempts, dur, ttype, ein, eat, rid, fp, detail) = row[:18]
    return (i64(at) + s(action) + opt_s(profile) + opt_s(env) + opt_s(url) + opt_s(grant) + s(outcome) + opt_i(status)
            + opt_s(oerr) + opt_i(attempts) + opt_i(dur) + opt_s(ttype) + opt_i(ein) + opt_i(eat) + opt_s(rid) + opt_s(fp)
            + opt_s(detail))

BUILTINS = {n: ("https://api.auth.gbgplc.com/as/token.oauth2", f"https://{n}.platform.go.gbgplc.com/v2/captain/") for n in ("eu", "us", "au")}

def read_header(db, allow_test):
    check(db.execute("PRAGMA application_id").fetchone()[0] == 0x47424756, "not a gbg-vault file")
    cols = [r[1] for r in db.execute("PRAGMA table_info(vault_header)")]
    epoch_sql = ", key_epoch" if "key_epoch" in cols else ", 1"
    signed_sql = ", signed_from_seq" if "signed_from_seq" in cols else ", NULL"
    row = db.execute("SELECT format_version, vault_id, kdf_algorithm, kdf_opslimit, kdf_memlimit, kdf_salt, key_nonce, "
                     f"wrapped_keys, header_digest{epoch_sql}{signed_sql} FROM vault_header").fetchall()
    check(len(row) == 1, "the header must be exactly one row")
    (fv, vid, alg, ops, mem, salt, knonce, wrapped, digest, epoch, signed_from) = row[0]
    check(fv in (1, 2, 3, 4), f"format version {fv}")
    check(len(vid) == 16 and len(salt) == 16 and len(knonce) == 24 and len(wrapped) == 80 and len(digest) == 32, "header blob lengths")
    check(epoch >= 1, "key epoch")
    check(fv < 3 or (signed_from is not None and signed_from >= 1), "format 3 or 4 without signed_from_seq")
    label = {1: "gbg-vault/v1 header", 2: "gbg-vault/v2 header", 3: "gbg-vault/v3 header", 4: "gbg-vault/v3 header"}[fv]
    ep = (i64(epoch) if fv >= 2 else b"") + (i64(signed_from) if fv >= 3 else b"")
    expect = blake2b(s(label) + u32(fv) + d(vid) + ep + s(alg) + u64(ops) + u64(mem) + d(salt) + d(knonce) + d(wrapped))
    check(expect == digest, "header digest mismatch")
    check(alg == "argon2id13", "kdf algorithm")
    check(ops <= 64 and mem <= 4 << 30, "KDF above maximum")
    check((ops >= 2 and mem >= 67108864) or (allow_test and (ops, mem) == (1, 8192)), "KDF below interactive")
    return dict(fv=fv, vid=vid, alg=alg, ops=ops, mem=mem, salt=salt, knonce=knonce, wrapped=wrapped, epoch=epoch,
                signed_from=signed_from)

def box_public(secret_key):
    pk = ctypes.create_string_buffer(32)
    check(sodium.crypto_scalarmult_base(pk, secret_key) == 0, "box public key")
    return pk.raw

def sign_public(seed):
    pk, sk = ctypes.create_string_buffer(32), ctypes.create_string_buffer(64)
    sodium.crypto_sign_seed_keypair(pk, sk, seed)
    return pk.raw

def seal_open(sealed, pk, sk):
    if len(sealed) < 48:
        return None
    out = ctypes.create_string_buffer(len(sealed) - 48)
    rc = sodium.crypto_box_seal_open(out, sealed, ctypes.c_ulonglong(len(sealed)), pk, sk)
    return out.raw if rc == 0 else None

def sig_ok(signature, message, pk):
    return sodium.crypto_sign_verify_detached(signature, message, ctypes.c_ulonglong(len(message)), pk) == 0

def unwrap_owner(h, passphrase):
    """§4.2 formats 3 and 4: the passphrase opens the owner's identity (box secret key ‖ signing seed)."""
    kek = pwhash(passphrase, h["salt"], h["ops"], h["mem"])
    wrap_ad = s("gbg-vault/v3 wrap") + u32(h["fv"]) + d(h["vid"]) + s(h["alg"]) + u64(h["ops"]) + u64(h["mem"]) + d(h["salt"])
    return kek, aead_open(kek, h["knonce"], h["wrapped"], wrap_ad, "wrong passphrase (wrapped owner identity)")

def identity_secret(path):
    """§10.2 an identity file: unsealed, or sealed under its own passphrase."""
    f = json.load(open(path))
    check(f.get("format") == "gbg-vault identity" and f.get("version") == 1, "not an identity file")
    import base64
    if f["protection"] == "none":
        secret = base64.b64decode(f["secret"])
    else:
        k = f["kdf"]
        salt, nonce, sealed = (base64.b64decode(f[x]) for x in ("salt", "nonce", "sealed"))
        key = pwhash(os.environ["VAULT_IDENTITY_PASSPHRASE"].encode(), salt, k["opslimit"], k["memlimit"])
        ad = s("gbg-vault/identity") + s(f["recipient"]) + s(k["algorithm"]) + u64(k["opslimit"]) + u64(k["memlimit"]) + d(salt)
        secret = aead_open(key, nonce, sealed, ad, "wrong identity passphrase")
    check(len(secret) == 64, "identity secret length")
    return secret

def recipient_string(box_pk, sign_pk):
    import base64
    checksum = blake2b(s("gbg-vault/recipient") + d(box_pk) + d(sign_pk), length=16)[:4]
    return "gbgv1" + base64.urlsafe_b64encode(box_pk + sign_pk + checksum).decode().rstrip("=")

def open_slot(db, h, identity):
    """§10.3 try every slot; the one that opens must be this member's, for this epoch, bound to it."""
    box_sk, seed = identity[:32], identity[32:]
    box_pk, sign_pk = box_public(box_sk), sign_public(seed)
    found, opening = None, 0
    for (member, epoch, sealed, endorsement) in db.execute("SELECT member, key_epoch, sealed, endorsement FROM key_slot"):
        opened = seal_open(sealed, box_pk, box_sk)
        if opened is not None:
            opening += 1
            if found is None:
                found = (member, epoch, opened, sealed, endorsement)
    check(found is not None, "this identity has no key slot in the vault")
    check(opening == 1, f"{opening} key slots open for this identity (a slot copied to another row)")
    (member, epoch, opened, sealed, endorsement) = found
    check(len(opened) == 96 and epoch == h["epoch"], "key slot epoch")
    row = db.execute("SELECT uid, box_public_key, sign_public_key, removed_seq FROM member WHERE name = ?", (member,)).fetchone()
    check(row is not None and row[3] is None and row[1] == box_pk and row[2] == sign_pk, "the slot belongs to another member")
    data_key, audit_key = opened[:32], opened[32:64]
    binding = blake2b(s("gbg-vault/v3 key-slot") + d(h["vid"]) + i64(epoch) + s(member) + d(row[0]) + d(box_pk) + d(data_key) + d(audit_key))
    check(binding == opened[64:], "key slot binding")
    kind = db.execute("SELECT kind FROM member WHERE name = ?", (member,)).fetchone()[0]
    if kind == "passphrase":
        # §10.3 the owner's slot must carry the owner's own endorsement
        key = subkey(box_sk, 1, b"gbgvownr")
        check(endorsement is not None and blake2b(s("gbg-vault/v3 owner-slot") + d(h["vid"]) + i64(epoch) + d(sealed), key) == endorsement,
              "the owner's key slot was not sealed by the owner")
    if h["fv"] >= 4:
        # §10.6 before the keys are trusted: the member's row and its slot are signed by the owner
        owner_pk = db.execute("SELECT sign_public_key FROM member WHERE name = 'owner' AND kind = 'passphrase'").fetchone()
        check(owner_pk is not None, "the owner's member row is missing")
        full = db.execute("SELECT name, uid, kind, box_public_key, sign_public_key, added_seq, removed_seq, created_at, owner_signature "
                          "FROM member WHERE name = ?", (member,)).fetchone()
        check(full[8] is not None and sig_ok(full[8], member_sig_input(h, full[:8]), owner_pk[0]), f"member {member}: owner signature")
        slot_sig = db.execute("SELECT owner_signature FROM key_slot WHERE member = ?", (member,)).fetchone()[0]
        check(slot_sig is not None and sig_ok(slot_sig, slot_sig_input(h, member, row[0], box_pk, epoch, sealed), owner_pk[0]),
              f"key slot of {member}: owner signature")
    return member, data_key, audit_key

def member_sig_input(h, row):
    """§10.6 what the owner signs for a member row."""
    (name, uid, kind, box_pk, sign_pk, added, removed, created) = row
    return (s("gbg-vault/v4 member-signature") + d(h["vid"]) + s(name) + d(uid) + s(kind) + d(box_pk) + d(sign_pk)
            + i64(added) + opt_i(removed) + s(created))

def slot_sig_input(h, member, uid, box_pk, epoch, sealed):
    """§10.6 what the owner signs for a key slot."""
    return s("gbg-vault/v4 key-slot-signature") + d(h["vid"]) + s(member) + d(uid) + d(box_pk) + i64(epoch) + d(sealed)

def check_members(db, h, data_key, report):
    """§10.4 member MACs; returns name → (kind, sign key, added, removed)."""
    meta_key = subkey(data_key, 1, b"gbgvmeta")
    members = {}
    for (name, uid, kind, box_pk, sign_pk, added, removed, created, mac) in db.execute(
            "SELECT name, uid, kind, box_public_key, sign_public_key, added_seq, removed_seq, created_at, mac FROM member"):
        m = blake2b(s("gbg-vault/v3 member") + d(h["vid"]) + s(name) + d(uid) + s(kind) + d(box_pk) + d(sign_pk)
                    + i64(added) + opt_i(removed) + s(created), meta_key)
        check(m == mac, f"member {name} MAC")
        members[name] = (kind, sign_pk, added, removed)
        report["members"].append({"name": name, "kind": kind, "recipient": recipient_string(box_pk, sign_pk),
                                  "added_seq": added, "removed_seq": removed})
    check([n for n, v in members.items() if v[0] == "passphrase"] == ["owner"], "exactly one passphrase member, owner")
    if h["fv"] >= 4:
        # §10.6 every member row carries the owner's signature
        owner_pk = members["owner"][1]
        for row in db.execute("SELECT name, uid, kind, box_public_key, sign_public_key, added_seq, removed_seq, created_at, owner_signature FROM member"):
            check(row[8] is not None and sig_ok(row[8], member_sig_input(h, row[:8]), owner_pk), f"member {row[0]}: owner signature")
    # §10.3 every slot: a current member's, this epoch, its MAC; every current member has one
    uids = dict(db.execute("SELECT name, uid FROM member"))
    current = {n for n, v in members.items() if v[3] is None}
    slots = set()
    for (member, epoch, sealed, mac, endorsement) in db.execute("SELECT member, key_epoch, sealed, mac, endorsement FROM key_slot"):
        check(member in current and epoch == h["epoch"], f"key slot of {member}: not a current member's, or another epoch")
        check((endorsement is not None) == (members[member][0] == "passphrase"), f"key slot of {member}: endorsement only on the owner's")
        m = blake2b(s("gbg-vault/v3 key-slot-mac") + d(h["vid"]) + s(member) + d(uids[member]) + i64(epoch) + d(sealed), meta_key)
        check(m == mac, f"key slot of {member} MAC (swapped or moved)")
        if h["fv"] >= 4:
            box_pk = db.execute("SELECT box_public_key FROM member WHERE name = ?", (member,)).fetchone()[0]
            sig = db.execute("SELECT owner_signature FROM key_slot WHERE member = ?", (member,)).fetchone()[0]
            check(sig is not None and sig_ok(sig, slot_sig_input(h, member, uids[member], box_pk, epoch, sealed), members["owner"][1]),
                  f"key slot of {member}: owner signature")
        slots.add(member)
    check(slots == current, "every current member has exactly one key slot")
    return members

def unwrap(h, passphrase):
    kek = pwhash(passphrase, h["salt"], h["ops"], h["mem"])
    if h["fv"] == 2:
        wrap_ad = s("gbg-vault/v2 wrap") + u32(2) + d(h["vid"]) + i64(h["epoch"]) + s(h["alg"]) + u64(h["ops"]) + u64(h["mem"]) + d(h["salt"])
    else:
        wrap_ad = s("gbg-vault/v1 wrap") + u32(1) + d(h["vid"]) + s(h["alg"]) + u64(h["ops"]) + u64(h["mem"]) + d(h["salt"])
    keys = aead_open(kek, h["knonce"], h["wrapped"], wrap_ad, "wrong passphrase (wrapped keys)")
    return kek, keys[:32], keys[32:]

def check_versions(rows, name, grant, current):
    by_field = {}
    for (field, version) in rows:
        by_field.setdefault(field, []).append(version)
    for field in ("client_secret", "password"):
        versions = sorted(by_field.get(field, []))
        cur = current.get(field)
        if cur is None:
            check(not versions, f"profile {name}: {field} versions on a profile without that field")
        else:
            check(versions == list(range(1, cur + 1)), f"profile {name}: {field} versions {versions} are not 1..{cur}")
    check(set(by_field) <= {"client_secret", "password"}, f"profile {name}: unknown field")

def read_v2(db, h, data_key, audit_key, report):
    vid = h["vid"]
    secret_key = subkey(data_key, 1, b"gbgvsecr")
    token_key = subkey(data_key, 1, b"gbgvtokn")
    meta_key = subkey(data_key, 1, b"gbgvmeta")
    envs = {n: (b"", url, api) for n, (url, api) in BUILTINS.items()}
    for (name, uid, token_url, api_base, mac) in db.execute("SELECT name, uid, token_url, api_base, mac FROM environment"):
        check(len(uid) == 16, f"environment {name}: uid length")
        m = blake2b(s("gbg-vault/v2 environment") + d(vid) + d(uid) + s(name) + s(token_url) + opt_s(api_base), meta_key)
        check(m == mac, f"environment {name} MAC")
        envs[name] = (uid, token_url, api_base)
        report["environments"].append(name)
    profiles = {}
    for (pid, uid, name, cid, user, grant, scope, env, csv, pwv, mac) in db.execute(
            "SELECT id, uid, name, client_id, username, grant_type, scope, environment, client_secret_version, password_version, mac FROM profile"):
        check(len(uid) == 16, f"profile {name}: uid length")
        check(grant in ("password", "client_credentials"), f"profile {name}: grant")
        m = blake2b(s("gbg-vault/v2 profile") + d(vid) + d(uid) + s(name) + s(cid) + opt_s(user) + s(grant) + opt_s(scope)
                    + s(env) + i64(csv) + opt_i(pwv), meta_key)
        check(m == mac, f"profile {name} MAC")
        check((grant == "password") == (pwv is not None) == (user is not None), f"profile {name}: fields for its grant")
        rows = db.execute("SELECT field, version FROM secret_version WHERE profile_id = ?", (pid,)).fetchall()
        check_versions(rows, name, grant, {"client_secret": csv, "password": pwv})
        secrets = {}
        for (field, version, nonce, ct) in db.execute(
                "SELECT field, version, nonce, ciphertext FROM secret_version WHERE profile_id = ? ORDER BY field, version", (pid,)):
            ad = s("gbg-vault/v2 secret") + d(vid) + d(uid) + s(field) + i64(version)
            secrets[f"{field}/v{version}"] = aead_open(secret_key, nonce, ct, ad, f"profile {name} {field} v{version}").decode()
        report["profiles"][name] = secrets
        profiles[pid] = (uid, name)
    orphans = db.execute("SELECT count(*) FROM secret_version WHERE profile_id NOT IN (SELECT id FROM profile)").fetchone()[0]
    check(orphans == 0, f"{orphans} secret(s) belong to no profile")
    for (pid, env, env_uid, exp, csv, pwv, nonce, ct) in db.execute(
            "SELECT profile_id, environment, environment_uid, expires_at, client_secret_version, password_version, nonce, ciphertext FROM token_cache"):
        check(pid in profiles, "a cached token belongs to no profile")
        check(env in envs and envs[env][0] == env_uid, f"cached token for unknown environment {env}")
        (uid, name) = profiles[pid]
        (e_uid, url, api) = envs[env]
        ad = (s("gbg-vault/v2 token") + d(vid) + d(uid) + s(env) + d(e_uid) + s(url) + opt_s(api) + i64(exp) + i64(csv) + opt_i(pwv))
        aead_open(token_key, nonce, ct, ad, f"cached token of {name} for {env}")
        report["cached_tokens"] += 1
    # §6.6 retired audit keys, newest first
    epoch = h["epoch"]
    keys = {epoch: audit_key}
    rows = {e: (n, sealed) for (e, n, sealed) in db.execute("SELECT key_epoch, nonce, sealed FROM retired_audit_key")}
    check(set(rows) == set(range(1, epoch)), f"retired audit keys {sorted(rows)} are not 1..{epoch - 1}")
    for e in range(epoch - 1, 0, -1):
        sealing = subkey(keys[e + 1], 3, b"gbgvaudt")
        (n, sealed) = rows[e]
        keys[e] = aead_open(sealing, n, sealed, s("gbg-vault/v2 retired-audit-key") + d(vid) + i64(e), f"retired audit key {e}")
    macs = {e: subkey(k, 1, b"gbgvaudt") for e, k in keys.items()}
    prev, expected_seq, current = bytes(32), 1, 1
    members = report.get("_members")
    # §6.7 rule 5: the record each member row's added_seq and removed_seq points at.
    membership = {}
    for name, (kind, _, added, removed) in (members or {}).items():
        membership.setdefault(added, []).append((name, False, kind == "passphrase"))
        if removed is not None:
            membership.setdefault(removed, []).append((name, True, kind == "passphrase"))
    signed_sql = ", member, signature" if members is not None else ", NULL, NULL"
    added_by_members = []  # §6.7 rule 7 (format 4): member-add records not signed by the owner, before a "format 3 to 4:" upgrade
    for row in db.execute(f"SELECT {AUDIT_COLS}, key_epoch, previous_key_mac{signed_sql} FROM audit_record ORDER BY seq"):
        seq, action, mac, rec_epoch, pkm, signer, signature = row[0], row[2], row[18], row[19], row[20], row[21], row[22]
        if members is not None:
            # §6.7 signatures from signed_from_seq on
            if seq < h["signed_from"]:
                check(signer is None and signature is None, f"record {seq} is signed before the first signed record")
            else:
                check(signer in members and signature is not None, f"record {seq} has no valid signer")
                (kind, sign_pk, added, removed) = members[signer]
                check(added <= seq and (removed is None or seq <= removed), f"record {seq} signed outside {signer}'s membership")
                if seq == h["signed_from"]:
                    check(kind == "passphrase" and action in ("init", "upgrade"), f"record {seq} is not an owner-signed init/upgrade")
                # §6.7 rule 6: only the owner rekeys, removes members, changes the passphrase and upgrades.
                if action in ("rekey", "member-remove", "passwd", "upgrade"):
                    check(kind == "passphrase", f"record {seq} ({action}) is not signed by the owner")
                detail = row[17] or ""
                if h["fv"] >= 4 and action == "member-add" and kind != "passphrase":
                    added_by_members.append(seq)
                elif action == "upgrade" and detail.startswith("format 3 to 4:"):
                    added_by_members = []
                for (name, removal, owner) in membership.pop(seq, []):
                    if owner and not removal:
                        check(seq == h["signed_from"], f"the owner's row points at record {seq}, not the first signed record")
                    elif removal:
                        check(action == "member-remove" and detail.split(" ")[0] == f"member={name}",
                              f"member {name}'s removed_seq points at record {seq}, not its member-remove record")
                    else:
                        check(action == "member-add" and detail == f"member={name}",
                              f"member {name}'s added_seq points at record {seq}, not its member-add record")
                check(sig_ok(signature, s("gbg-vault/v3 audit-signature") + d(vid) + i64(seq) + s(signer) + d(mac), sign_pk),
                      f"record {seq} signature by {signer}")
                report["signatures"] += 1
        check(seq == expected_seq, f"audit record {expected_seq} missing")
        if seq == 1:
            check(action == "init" and rec_epoch == 1, "record 1 is not the init record of epoch 1")
        msg = s("gbg-vault/v2 audit") + d(vid) + d(prev) + i64(seq) + i64(rec_epoch) + audit_fields(row)
        if rec_epoch == current + 1 and seq > 1:
            check(action in ("rekey", "member-remove") and pkm is not None, f"record {seq} starts an epoch but is not a rekey record")
            check(blake2b(msg, macs[current]) == pkm, f"record {seq}: previous_key_mac")
            current = rec_epoch
        else:
            check(rec_epoch == current and pkm is None, f"record {seq}: key epoch out of order")
        check(current in macs, f"record {seq}: unknown epoch")
        check(blake2b(msg, macs[current]) == mac, f"audit record {seq} MAC")
        prev, expected_seq = mac, expected_seq + 1
    check(expected_seq > 1, "the audit trail is empty")
    check(not membership, f"member rows point at records that do not exist: {sorted(membership)}")
    check(not added_by_members, f"record {added_by_members[:1]} (member-add) is not signed by the owner, as format 4 requires")
    head = db.execute("SELECT seq, key_epoch, last_mac, mac FROM audit_head").fetchone()
    check(head is not None, "the audit head is missing")
    check(head[1] == epoch == current, "head epoch")
    check(head[0] == expected_seq - 1 and head[2] == prev, "head does not name the last record")
    check(blake2b(s("gbg-vault/v2 audit-head") + d(vid) + i64(head[0]) + i64(head[1]) + d(head[2]), macs[epoch]) == head[3], "head MAC")
    report["audit_records"] = expected_seq - 1
    return keys

def read_v1(db, h, data_key, audit_key, report):
    vid = h["vid"]
    secret_key = subkey(data_key, 1, b"gbgvsecr")
    meta_key = subkey(data_key, 1, b"gbgvmeta")
    mac_key = subkey(audit_key, 1, b"gbgvaudt")
    for (name, token_url, api_base, mac) in db.execute("SELECT name, token_url, api_base, mac FROM environment"):
        m = blake2b(s("gbg-vault/v1 environment") + d(vid) + s(name) + s(token_url) + opt_s(api_base), meta_key)
        check(m == mac, f"environment {name} MAC")
        report["environments"].append(name)
    for (pid, name, cid, user, grant, scope, env, mac) in db.execute(
            "SELECT id, name, client_id, username, grant_type, scope, environment, mac FROM profile"):
        m = blake2b(s("gbg-vault/v1 profile") + d(vid) + i64(pid) + s(name) + s(cid) + opt_s(user) + s(grant) + opt_s(scope) + s(env), meta_key)
        check(m == mac, f"profile {name} MAC")
        secrets = {}
        for (field, version, nonce, ct) in db.execute(
                "SELECT field, version, nonce, ciphertext FROM secret_version WHERE profile_id = ? ORDER BY field, version", (pid,)):
            ad = s("gbg-vault/v1 secret") + d(vid) + s("secret_version") + i64(pid) + s(field) + i64(version)
            secrets[f"{field}/v{version}"] = aead_open(secret_key, nonce, ct, ad, f"profile {name} {field} v{version}").decode()
        report["profiles"][name] = secrets
    prev, expected_seq = bytes(32), 1
    for row in db.execute(f"SELECT {AUDIT_COLS} FROM audit_record ORDER BY seq"):
        seq, mac = row[0], row[18]
        check(seq == expected_seq, f"audit record {expected_seq} missing")
        msg = s("gbg-vault/v1 audit") + d(vid) + d(prev) + i64(seq) + audit_fields(row)
        check(blake2b(msg, mac_key) == mac, f"audit record {seq} MAC")
        prev, expected_seq = mac, expected_seq + 1
    head = db.execute("SELECT seq, last_mac, mac FROM audit_head").fetchone()
    check(head is not None and head[0] == expected_seq - 1 and head[1] == prev, "head does not name the last record")
    check(blake2b(s("gbg-vault/v1 audit-head") + d(vid) + i64(head[0]) + d(head[1]), mac_key) == head[2], "head MAC")
    report["audit_records"] = expected_seq - 1
    return {1: audit_key}

def main():
    path = sys.argv[1]
    allow_test = "--allow-test-kdf" in sys.argv
    identity_path = sys.argv[sys.argv.index("--identity") + 1] if "--identity" in sys.argv else None
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    report = {"profiles": {}, "environments": [], "audit_records": 0, "cached_tokens": 0}
    try:
        h = read_header(db, allow_test)
        kek, identity = None, None
        if h["fv"] >= 3:
            # §4.4 step 2: a member identity never opens a vault of an older format
            check(h["fv"] == 4 or not identity_path, "a member identity does not open a format-3 vault: the owner must upgrade it")
            if identity_path:
                identity = identity_secret(identity_path)
            else:
                kek, identity = unwrap_owner(h, os.environ["VAULT_PASSPHRASE"].encode())
            member, data_key, audit_key = open_slot(db, h, identity)
            report["member"] = member
            report["members"], report["signatures"] = [], 0
            report["_members"] = check_members(db, h, data_key, report)
        else:
            check(identity_path is None, "a format-1 or format-2 vault has no members")
            kek, data_key, audit_key = unwrap(h, os.environ["VAULT_PASSPHRASE"].encode())
        report["format_version"] = h["fv"]
        report["key_epoch"] = h["epoch"]
        audit_keys = (read_v2 if h["fv"] >= 2 else read_v1)(db, h, data_key, audit_key, report)
        report.pop("_members", None)
        if "--show-keys" in sys.argv:
            report["keys"] = {"kek": kek.hex() if kek else None, "data_key": data_key.hex(),
                              "audit_keys": {str(e): k.hex() for e, k in audit_keys.items()}}
            if identity is not None:
                report["keys"]["identity_secret"] = identity.hex()
    except Violation as v:
        json.dump({"error": str(v)}, sys.stdout)
        sys.exit(1)
    json.dump(report, sys.stdout, ensure_ascii=False, sort_keys=True)

if __name__ == "__main__":
    main()
