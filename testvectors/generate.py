#!/usr/bin/env python3
"""Generates gbg-vault format 2 test vectors with libsodium through ctypes.

An independent implementation of FORMAT.md (canonical encoding, labels, key hierarchy,
additional data, key epochs); the Swift suite checks that VaultCore produces exactly
these bytes, and that it rejects every case marked "expect": "fail" for the reason
given (in the style of C2SP's CCTV vectors). Run: python3 testvectors/generate.py
(writes testvectors/*.json). The format-1 vectors are in testvectors/v1/.
"""
import ctypes, ctypes.util, json, os, struct, sys

sodium = ctypes.CDLL(ctypes.util.find_library("sodium") or "libsodium.so.23")
assert sodium.sodium_init() >= 0
ALG_ARGON2ID13 = 2

def pwhash(passphrase: bytes, salt: bytes, ops: int, mem: int) -> bytes:
    out = ctypes.create_string_buffer(32)
    rc = sodium.crypto_pwhash(out, ctypes.c_ulonglong(32), passphrase, ctypes.c_ulonglong(len(passphrase)),
                              salt, ctypes.c_ulonglong(ops), ctypes.c_size_t(mem), ctypes.c_int(ALG_ARGON2ID13))
    assert rc == 0
    return out.raw

def seal(key: bytes, nonce: bytes, plaintext: bytes, ad: bytes) -> bytes:
    out = ctypes.create_string_buffer(len(plaintext) + 16)
    outlen = ctypes.c_ulonglong(0)
    sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(out, ctypes.byref(outlen), plaintext, ctypes.c_ulonglong(len(plaintext)),
                                                      ad, ctypes.c_ulonglong(len(ad)), None, nonce, key)
    return out.raw[:outlen.value]

def opens(key: bytes, nonce: bytes, ciphertext: bytes, ad: bytes) -> bool:
    out = ctypes.create_string_buffer(max(1, len(ciphertext) - 16))
    outlen = ctypes.c_ulonglong(0)
    return sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(out, ctypes.byref(outlen), None, ciphertext,
        ctypes.c_ulonglong(len(ciphertext)), ad, ctypes.c_ulonglong(len(ad)), nonce, key) == 0

def subkey(key: bytes, sub_id: int, ctx: bytes) -> bytes:
    out = ctypes.create_string_buffer(32)
    assert sodium.crypto_kdf_derive_from_key(out, ctypes.c_size_t(32), ctypes.c_uint64(sub_id), ctx, key) == 0
    return out.raw

def blake2b(msg: bytes, key: bytes = b"", length: int = 32) -> bytes:
    out = ctypes.create_string_buffer(length)
    sodium.crypto_generichash(out, ctypes.c_size_t(length), msg, ctypes.c_ulonglong(len(msg)),
                              key if key else None, ctypes.c_size_t(len(key)))
    return out.raw

# FORMAT.md §2: canonical encoding
def s(v: str) -> bytes: b = v.encode(); return struct.pack(">I", len(b)) + b
def d(v: bytes) -> bytes: return struct.pack(">I", len(v)) + v
def u32(v: int) -> bytes: return struct.pack(">I", v)
def u64(v: int) -> bytes: return struct.pack(">Q", v)
def i64(v: int) -> bytes: return struct.pack(">q", v)
def opt_s(v): return b"\x00" if v is None else b"\x01" + s(v)
def opt_i(v): return b"\x00" if v is None else b"\x01" + i64(v)

def h(b: bytes) -> str: return b.hex()

VAULT_ID = bytes(range(0xa0, 0xb0))
DATA_KEY = bytes(range(0x40, 0x60))
AUDIT_KEY = bytes(range(0x60, 0x80))
AUDIT_KEY_2 = bytes(range(0x80, 0xa0))
PROFILE_UID = bytes(range(0xc0, 0xd0))
OTHER_UID = bytes(range(0xd0, 0xe0))
ENV_UID = bytes(range(0xe0, 0xf0))

def wrap_ad(vid, epoch, ops, mem, salt):
    return s("gbg-vault/v2 wrap") + u32(2) + d(vid) + i64(epoch) + s("argon2id13") + u64(ops) + u64(mem) + d(salt)

def secret_ad(uid, field, version):
    return s("gbg-vault/v2 secret") + d(VAULT_ID) + d(uid) + s(field) + i64(version)

def token_ad(uid, env, env_uid, url, api, exp, csv, pwv):
    return (s("gbg-vault/v2 token") + d(VAULT_ID) + d(uid) + s(env) + d(env_uid) + s(url) + opt_s(api)
            + i64(exp) + i64(csv) + opt_i(pwv))

RECORD = {"seq": 1, "at": 1764384000000, "action": "init", "profile": None, "environment": None, "token_url": None,
          "grant_type": None, "outcome": "ok", "http_status": None, "oauth_error": None, "attempts": None, "duration_ms": None,
          "token_type": None, "expires_in": None, "expires_at": None, "request_id": None, "token_fingerprint": None,
          "detail": "kdf=interactive"}

def audit_input(r, prev, epoch):
    return (s("gbg-vault/v2 audit") + d(VAULT_ID) + d(prev) + i64(r["seq"]) + i64(epoch) + i64(r["at"]) + s(r["action"])
            + opt_s(r["profile"]) + opt_s(r["environment"]) + opt_s(r["token_url"]) + opt_s(r["grant_type"]) + s(r["outcome"])
            + opt_i(r["http_status"]) + opt_s(r["oauth_error"]) + opt_i(r["attempts"]) + opt_i(r["duration_ms"])
            + opt_s(r["token_type"]) + opt_i(r["expires_in"]) + opt_i(r["expires_at"]) + opt_s(r["request_id"])
            + opt_s(r["token_fingerprint"]) + opt_s(r["detail"]))

import base64

def box_public(secret_key):
    pk = ctypes.create_string_buffer(32)
    assert sodium.crypto_scalarmult_base(pk, secret_key) == 0
    return pk.raw

def sign_keys(seed):
    pk, sk = ctypes.create_string_buffer(32), ctypes.create_string_buffer(64)
    sodium.crypto_sign_seed_keypair(pk, sk, seed)
    return pk.raw, sk.raw

def sign(message, sk):
    sig = ctypes.create_string_buffer(64)
    sodium.crypto_sign_detached(sig, None, message, ctypes.c_ulonglong(len(message)), sk)
    return sig.raw

def verify(sig, message, pk):
    return sodium.crypto_sign_verify_detached(sig, message, ctypes.c_ulonglong(len(message)), pk) == 0

def seal_box(message, pk):
    out = ctypes.create_string_buffer(len(message) + 48)
    assert sodium.crypto_box_seal(out, message, ctypes.c_ulonglong(len(message)), pk) == 0
    return out.raw

def recipient(box_pk, sign_pk):
    checksum = blake2b(s("gbg-vault/recipient") + d(box_pk) + d(sign_pk), length=16)[:4]
    return "gbgv1" + base64.urlsafe_b64encode(box_pk + sign_pk + checksum).decode().rstrip("=")

def members_vectors(kek, salt, ops, mem, key_nonce):
    """FORMAT.md §4.2 (format 4), §6.7, §10, §12: recipients, the owner wrap, a key slot, member MAC, the owner's
    signatures on a member row and a key slot, a signed record; failures for re-attribution, an outsider's slot,
    and what a client remembers (rollback, fork)."""
    owner_secret = bytes(range(0x01, 0x41))          # box secret key ‖ Ed25519 seed
    alice_secret = bytes(range(0x41, 0x81))
    ids = {}
    for name, secret in (("owner", owner_secret), ("alice", alice_secret)):
        box_pk = box_public(secret[:32])
        sign_pk, sign_sk = sign_keys(secret[32:])
        ids[name] = dict(secret=secret, box_pk=box_pk, sign_pk=sign_pk, sign_sk=sign_sk, recipient=recipient(box_pk, sign_pk))
    epoch, signed_from = 2, 1
    wad = s("gbg-vault/v3 wrap") + u32(4) + d(VAULT_ID) + s("argon2id13") + u64(ops) + u64(mem) + d(salt)
    wrapped = seal(kek, key_nonce, owner_secret, wad)
    digest = blake2b(s("gbg-vault/v3 header") + u32(4) + d(VAULT_ID) + i64(epoch) + i64(signed_from) + s("argon2id13")
                     + u64(ops) + u64(mem) + d(salt) + d(key_nonce) + d(wrapped))
    meta_key = subkey(DATA_KEY, 1, b"gbgvmeta")
    alice_uid = bytes(range(0x10, 0x20))
    member = {"name": "alice", "uid": h(alice_uid), "kind": "recipient", "box_public_key": h(ids["alice"]["box_pk"]),
              "sign_public_key": h(ids["alice"]["sign_pk"]), "added_seq": 2, "removed_seq": None, "created_at": "2026-11-29T10:00:00Z"}
    member_mac = blake2b(s("gbg-vault/v3 member") + d(VAULT_ID) + s("alice") + d(alice_uid) + s("recipient") + d(ids["alice"]["box_pk"])
                         + d(ids["alice"]["sign_pk"]) + i64(2) + opt_i(None) + s("2026-11-29T10:00:00Z"), meta_key)
    binding = blake2b(s("gbg-vault/v3 key-slot") + d(VAULT_ID) + i64(epoch) + s("alice") + d(alice_uid) + d(ids["alice"]["box_pk"])
                      + d(DATA_KEY) + d(AUDIT_KEY))
    sealed = seal_box(DATA_KEY + AUDIT_KEY + binding, ids["alice"]["box_pk"])   # random ephemeral key: open it, do not compare it
    slot_mac = blake2b(s("gbg-vault/v3 key-slot-mac") + d(VAULT_ID) + s("alice") + d(alice_uid) + i64(epoch) + d(sealed), meta_key)
    # §10.6 the owner's signatures on alice's row and slot (Ed25519 is deterministic)
    member_sig_input = (s("gbg-vault/v4 member-signature") + d(VAULT_ID) + s("alice") + d(alice_uid) + s("recipient")
                        + d(ids["alice"]["box_pk"]) + d(ids["alice"]["sign_pk"]) + i64(2) + opt_i(None) + s("2026-11-29T10:00:00Z"))
    member_sig = sign(member_sig_input, ids["owner"]["sign_sk"])
    slot_sig_input = (s("gbg-vault/v4 key-slot-signature") + d(VAULT_ID) + s("alice") + d(alice_uid) + d(ids["alice"]["box_pk"])
                      + i64(epoch) + d(sealed))
    slot_sig = sign(slot_sig_input, ids["owner"]["sign_sk"])
    owner_sealed = seal_box(DATA_KEY + AUDIT_KEY + bytes(32), ids["owner"]["box_pk"])
    endorsement = blake2b(s("gbg-vault/v3 owner-slot") + d(VAULT_ID) + i64(epoch) + d(owner_sealed),
                          subkey(owner_secret[:32], 1, b"gbgvownr"))
    record = dict(RECORD, seq=3, at=1764384120000, action="token", profile="acme", outcome="cache_hit")
    mac_key = subkey(AUDIT_KEY, 1, b"gbgvaudt")
    prev = bytes(range(0x70, 0x90))
    rmac = blake2b(audit_input(record, prev, epoch), mac_key)
    sig_input = s("gbg-vault/v3 audit-signature") + d(VAULT_ID) + i64(3) + s("alice") + d(rmac)
    signature = sign(sig_input, ids["alice"]["sign_sk"])
    assert verify(signature, sig_input, ids["alice"]["sign_pk"])
    # Failure cases
    r = ids["alice"]["recipient"]
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    noncanonical = r[:-1] + last[last.index(r[-1]) + 1]
    typo = r[:10] + ("A" if r[10] != "A" else "B") + r[11:]
    fails = [
        {"kind": "recipient", "input": typo, "expect": "fail", "reason": "the checksum does not match (one character changed)"},
        {"kind": "recipient", "input": noncanonical, "expect": "fail", "reason": "not canonical: the last character's unused bits are set"},
        {"kind": "recipient", "input": "age1" + r[5:], "expect": "fail", "reason": "wrong prefix"},
        {"kind": "recipient", "input": r[:-2], "expect": "fail", "reason": "wrong length"},
        {"kind": "recipient", "input": r[:20] + "+" + r[21:], "expect": "fail", "reason": "a character outside the base64url alphabet"},
    ]
    other_sig_input = s("gbg-vault/v3 audit-signature") + d(VAULT_ID) + i64(3) + s("owner") + d(rmac)
    assert not verify(signature, other_sig_input, ids["owner"]["sign_pk"])
    fails.append({"kind": "signature", "input": h(other_sig_input), "signature": h(signature), "public_key": h(ids["owner"]["sign_pk"]),
                  "expect": "fail", "reason": "a record re-attributed to another member: the signature is alice's, the member named is owner"})
    forged = sign(sig_input, ids["owner"]["sign_sk"])
    assert not verify(forged, sig_input, ids["alice"]["sign_pk"])
    fails.append({"kind": "signature", "input": h(sig_input), "signature": h(forged), "public_key": h(ids["alice"]["sign_pk"]),
                  "expect": "fail", "reason": "a record signed by another member's key under alice's name"})
    swapped = blake2b(s("gbg-vault/v3 key-slot-mac") + d(VAULT_ID) + s("owner") + d(bytes(16)) + i64(epoch) + d(sealed), meta_key)
    fails.append({"kind": "endorsement", "sealed": h(sealed), "endorsement": h(endorsement),
                  "expect": "fail", "reason": "the owner's endorsement of one slot does not endorse another sealed box"})
    fails.append({"kind": "slot-mac", "member": "owner", "member_uid": h(bytes(16)), "sealed": h(sealed), "mac": h(slot_mac),
                  "expect": "fail", "reason": "alice's slot moved to the owner's row: the slot MAC names the member"})
    assert swapped != slot_mac
    # §10.6 a member who gave alice a signing key of its own (the row's MAC recomputed): the owner's signature fails
    mallory_pk, mallory_sk = sign_keys(bytes(range(0x90, 0xb0)))
    forged_row = (s("gbg-vault/v4 member-signature") + d(VAULT_ID) + s("alice") + d(alice_uid) + s("recipient")
                  + d(ids["alice"]["box_pk"]) + d(mallory_pk) + i64(2) + opt_i(None) + s("2026-11-29T10:00:00Z"))
    assert not verify(member_sig, forged_row, ids["owner"]["sign_pk"])
    fails.append({"kind": "signature", "input": h(forged_row), "signature": h(member_sig), "public_key": h(ids["owner"]["sign_pk"]),
                  "expect": "fail", "reason": "alice's row with another signing key: the owner's member signature no longer verifies"})
    self_signed = sign(forged_row, mallory_sk)
    fails.append({"kind": "signature", "input": h(forged_row), "signature": h(self_signed), "public_key": h(ids["owner"]["sign_pk"]),
                  "expect": "fail", "reason": "a member row signed by a member, not the owner"})
    # §10.6 keys an outsider sealed to alice (a database administrator): another sealed box under the owner's slot signature
    outsider = seal_box(bytes(range(0xc0, 0xe0)) + bytes(range(0xe0, 0xff)) + b"\x00" + bytes(32), ids["alice"]["box_pk"])
    outsider_input = (s("gbg-vault/v4 key-slot-signature") + d(VAULT_ID) + s("alice") + d(alice_uid) + d(ids["alice"]["box_pk"])
                      + i64(epoch) + d(outsider))
    fails.append({"kind": "signature", "input": h(outsider_input), "signature": h(slot_sig), "public_key": h(ids["owner"]["sign_pk"]),
                  "expect": "fail", "reason": "a key slot sealed by someone else: the owner's slot signature covers the sealed box"})
    # §12.2 what a client remembers: it saw record 7 with MAC `rmac`
    fails.append({"kind": "known-state", "seen_seq": 7, "seen_mac": h(rmac), "head_seq": 5, "head_mac": h(prev),
                  "mac_at_seen_seq": None, "expect": "fail", "reason": "rollback: the store's head is before the record seen"})
    fails.append({"kind": "known-state", "seen_seq": 7, "seen_mac": h(rmac), "head_seq": 9, "head_mac": h(prev),
                  "mac_at_seen_seq": h(prev), "expect": "fail", "reason": "fork: another record stands at the seq seen"})
    fails.append({"kind": "known-state", "seen_seq": 7, "seen_mac": h(rmac), "head_seq": 7, "head_mac": h(prev),
                  "mac_at_seen_seq": h(prev), "expect": "fail", "reason": "fork: the head is at the seq seen, with another MAC"})
    return {
        "description": "format 4 (FORMAT.md §4.2, §6.7, §10, §12): recipients, the owner's wrapped identity, a key slot, a member MAC, the owner's signatures on a member row and a key slot, a signed record",
        "vault_id": h(VAULT_ID), "data_key": h(DATA_KEY), "audit_key": h(AUDIT_KEY), "key_epoch": epoch, "signed_from_seq": signed_from,
        "identities": {n: {"secret": h(v["secret"]), "expect_box_public_key": h(v["box_pk"]), "expect_sign_public_key": h(v["sign_pk"]),
                           "expect_recipient": v["recipient"]} for n, v in ids.items()},
        "header": {"kek": h(kek), "salt": h(salt), "opslimit": ops, "memlimit": mem, "key_nonce": h(key_nonce),
                   "expect_wrap_ad": h(wad), "expect_wrapped_keys": h(wrapped), "expect_header_digest": h(digest)},
        "member": member, "expect_member_mac": h(member_mac),
        "expect_member_signature_input": h(member_sig_input), "expect_member_signature": h(member_sig),
        "slot": {"member": "alice", "sealed": h(sealed), "expect_binding": h(binding), "expect_mac": h(slot_mac),
                 "expect_signature_input": h(slot_sig_input), "expect_signature": h(slot_sig)},
        "owner_slot": {"sealed": h(owner_sealed), "expect_endorsement": h(endorsement)},
        "record": record, "previous_mac": h(prev), "expect_record_mac": h(rmac), "expect_signature_input": h(sig_input),
        "expect_signature": h(signature),
        "failures": fails, "expect": "ok",
    }

def main():
    here = os.path.dirname(os.path.abspath(__file__))
    vectors = {}
    passphrase = "correct horse battery staple ✓".encode()
    salt = bytes(range(16))
    ops, mem = 2, 67108864  # interactive
    key_nonce = bytes(range(0x10, 0x28))
    kek = pwhash(passphrase, salt, ops, mem)
    epoch = 3
    wad = wrap_ad(VAULT_ID, epoch, ops, mem, salt)
    wrapped = seal(kek, key_nonce, DATA_KEY + AUDIT_KEY, wad)
    digest = blake2b(s("gbg-vault/v2 header") + u32(2) + d(VAULT_ID) + i64(epoch) + s("argon2id13") + u64(ops) + u64(mem)
                     + d(salt) + d(key_nonce) + d(wrapped))
    vectors["header"] = {
        "description": "format-2 header in key epoch 3: Argon2id KEK at interactive, wrapped keys, header digest (FORMAT.md §4)",
        "passphrase_utf8_hex": h(passphrase), "salt": h(salt), "opslimit": ops, "memlimit": mem, "key_epoch": epoch,
        "vault_id": h(VAULT_ID), "key_nonce": h(key_nonce), "data_key": h(DATA_KEY), "audit_key": h(AUDIT_KEY),
        "expect_kek": h(kek), "expect_wrap_ad": h(wad), "expect_wrapped_keys": h(wrapped), "expect_header_digest": h(digest),
        "expect": "ok",
    }
    secret_key = subkey(DATA_KEY, 1, b"gbgvsecr")
    secrets = []
    for i, (field, version, plaintext) in enumerate([
        ("client_secret", 1, "s3cr3t".encode()),
        ("password", 3, "pässwörd 🔑 &=+%".encode()),
        ("client_secret", 12, b"x"),
    ]):
        nonce = bytes((j * 7 + i) & 0xff for j in range(24))
        ad = secret_ad(PROFILE_UID, field, version)
        ct = seal(secret_key, nonce, plaintext, ad)
        secrets.append({
            "description": f"sealed {field} v{version} (FORMAT.md §5.1)",
            "data_key": h(DATA_KEY), "vault_id": h(VAULT_ID), "profile_uid": h(PROFILE_UID), "field": field, "version": version,
            "nonce": h(nonce), "plaintext": h(plaintext),
            "expect_secret_key": h(secret_key), "expect_ad": h(ad), "expect_ciphertext": h(ct), "expect": "ok",
        })
    vectors["secrets"] = secrets

    token_key = subkey(DATA_KEY, 1, b"gbgvtokn")
    url, api = "https://auth.staging.example/as/token.oauth2", "https://api.staging.example/v2/captain/"
    tad = token_ad(PROFILE_UID, "staging", ENV_UID, url, api, 1764387600, 2, 1)
    tnonce = bytes(range(0x30, 0x48))
    tct = seal(token_key, tnonce, b"stub-token-value", tad)
    vectors["token"] = {
        "description": "cached token bound to profile uid and the environment's definition (FORMAT.md §5.2)",
        "data_key": h(DATA_KEY), "vault_id": h(VAULT_ID), "profile_uid": h(PROFILE_UID),
        "environment": {"name": "staging", "uid": h(ENV_UID), "token_url": url, "api_base": api},
        "expires_at": 1764387600, "client_secret_version": 2, "password_version": 1, "nonce": h(tnonce), "token": "stub-token-value",
        "expect_token_key": h(token_key), "expect_ad": h(tad), "expect_ciphertext": h(tct), "expect": "ok",
    }

    meta_key = subkey(DATA_KEY, 1, b"gbgvmeta")
    pmac = blake2b(s("gbg-vault/v2 profile") + d(VAULT_ID) + d(PROFILE_UID) + s("acme") + s("client-1") + opt_s("api@example.com")
                   + s("password") + opt_s(None) + s("staging") + i64(2) + opt_i(1), meta_key)
    emac = blake2b(s("gbg-vault/v2 environment") + d(VAULT_ID) + d(ENV_UID) + s("staging") + s(url) + opt_s(api), meta_key)
    vectors["metadata"] = {
        "description": "profile and environment MACs (FORMAT.md §5.3)",
        "data_key": h(DATA_KEY), "vault_id": h(VAULT_ID),
        "profile": {"uid": h(PROFILE_UID), "name": "acme", "client_id": "client-1", "username": "api@example.com",
                    "grant_type": "password", "scope": None, "environment": "staging", "client_secret_version": 2, "password_version": 1},
        "environment": {"uid": h(ENV_UID), "name": "staging", "token_url": url, "api_base": api},
        "expect_metadata_key": h(meta_key), "expect_profile_mac": h(pmac), "expect_environment_mac": h(emac), "expect": "ok",
    }

    mac1 = subkey(AUDIT_KEY, 1, b"gbgvaudt")
    mac2 = subkey(AUDIT_KEY_2, 1, b"gbgvaudt")
    m1 = blake2b(audit_input(RECORD, bytes(32), 1), mac1)
    rekey = dict(RECORD, seq=2, at=1764384060000, action="rekey", detail="resealed=0 epoch=2")
    rekey_input = audit_input(rekey, m1, 2)
    m2 = blake2b(rekey_input, mac2)
    pkm = blake2b(rekey_input, mac1)
    head = blake2b(s("gbg-vault/v2 audit-head") + d(VAULT_ID) + i64(2) + i64(2) + d(m2), mac2)
    sealing2 = subkey(AUDIT_KEY_2, 3, b"gbgvaudt")
    rnonce = bytes(range(0x50, 0x68))
    retired = seal(sealing2, rnonce, AUDIT_KEY, s("gbg-vault/v2 retired-audit-key") + d(VAULT_ID) + i64(1))
    vectors["audit"] = {
        "description": "init record (epoch 1), rekey record (epoch 2, also MAC'd under epoch 1), head, retired key (FORMAT.md §6)",
        "vault_id": h(VAULT_ID), "audit_key_epoch_1": h(AUDIT_KEY), "audit_key_epoch_2": h(AUDIT_KEY_2),
        "records": [RECORD, rekey],
        "expect_mac_key_epoch_1": h(mac1), "expect_mac_1": h(m1), "expect_mac_2": h(m2), "expect_previous_key_mac_2": h(pkm),
        "expect_head_mac": h(head), "retired_nonce": h(rnonce), "expect_retired_sealed": h(retired),
        "expect_fingerprint": h(blake2b(b"stub-token-value", subkey(AUDIT_KEY, 2, b"gbgvaudt"), 16)), "fingerprint_token": "stub-token-value",
        "expect": "ok",
    }

    # Failure vectors: each must be rejected, for the reason given.
    fails = []
    s0 = secrets[0]
    ct0 = bytes.fromhex(s0["expect_ciphertext"])
    n0 = bytes.fromhex(s0["nonce"])
    other_ad = secret_ad(OTHER_UID, "client_secret", 1)
    assert not opens(secret_key, n0, ct0, other_ad)
    fails.append({"description": "a secret copied to another profile (same row id reused, new uid)", "kind": "secret",
                  "data_key": h(DATA_KEY), "nonce": h(n0), "ciphertext": h(ct0), "ad": h(other_ad),
                  "expect": "fail", "reason": "AEAD authentication fails: the profile uid is in the additional data"})
    v2_ad = secret_ad(PROFILE_UID, "client_secret", 2)
    assert not opens(secret_key, n0, ct0, v2_ad)
    fails.append({"description": "version 1 of a secret presented as version 2", "kind": "secret",
                  "data_key": h(DATA_KEY), "nonce": h(n0), "ciphertext": h(ct0), "ad": h(v2_ad),
                  "expect": "fail", "reason": "AEAD authentication fails: the version is in the additional data"})
    readded = token_ad(PROFILE_UID, "staging", OTHER_UID, url, api, 1764387600, 2, 1)
    assert not opens(token_key, tnonce, tct, readded)
    fails.append({"description": "a cached token served for an environment removed and added again under the same name", "kind": "token",
                  "data_key": h(DATA_KEY), "nonce": h(tnonce), "ciphertext": h(tct), "ad": h(readded),
                  "expect": "fail", "reason": "AEAD authentication fails: the environment uid is in the additional data"})
    moved = token_ad(PROFILE_UID, "staging", ENV_UID, url, "https://elsewhere.example/v2/", 1764387600, 2, 1)
    assert not opens(token_key, tnonce, tct, moved)
    fails.append({"description": "a cached token after the environment's API base changed", "kind": "token",
                  "data_key": h(DATA_KEY), "nonce": h(tnonce), "ciphertext": h(tct), "ad": h(moved),
                  "expect": "fail", "reason": "AEAD authentication fails: the API base is in the additional data"})
    epoch_edit = wrap_ad(VAULT_ID, 2, ops, mem, salt)
    assert not opens(kek, key_nonce, wrapped, epoch_edit)
    fails.append({"description": "the header's key epoch edited from 3 to 2", "kind": "wrap",
                  "kek": h(kek), "nonce": h(key_nonce), "ciphertext": h(wrapped), "ad": h(epoch_edit),
                  "expect": "fail", "reason": "the keys do not unwrap: the epoch is in WRAP_AD (and the digest no longer matches)"})
    v1_ad = s("gbg-vault/v1 wrap") + u32(1) + d(VAULT_ID) + s("argon2id13") + u64(ops) + u64(mem) + d(salt)
    assert not opens(kek, key_nonce, wrapped, v1_ad)
    fails.append({"description": "a format-2 header relabelled as format 1", "kind": "wrap",
                  "kek": h(kek), "nonce": h(key_nonce), "ciphertext": h(wrapped), "ad": h(v1_ad),
                  "expect": "fail", "reason": "the keys do not unwrap: the format version and label are in WRAP_AD"})
    forged = blake2b(rekey_input, mac1)
    fails.append({"description": "a record of epoch 2 MAC'd only with the epoch-1 audit key (a former key holder forging a new record)",
                  "kind": "audit-mac", "mac_key": h(mac2), "input": h(rekey_input), "mac": h(forged),
                  "expect": "fail", "reason": "the record MAC must verify under its own epoch's key"})
    wiped = dict(RECORD, action="token", profile="acme")
    fails.append({"description": "a trail whose first record is not init (the trail was wiped and restarted)",
                  "kind": "audit-first", "record": wiped, "expect": "fail", "reason": "record 1 must be the init record"})
    vectors["failures"] = {"description": "inputs every implementation must reject", "cases": fails}
    vectors["members"] = members_vectors(kek, salt, ops, mem, key_nonce)

    for name, case in vectors.items():
        with open(os.path.join(here, f"{name}.json"), "w") as f:
            json.dump(case, f, indent=2, ensure_ascii=False)
            f.write("\n")
    print(f"wrote {len(vectors)} vector files ({len(fails)} failure cases)")

if __name__ == "__main__":
    main()
