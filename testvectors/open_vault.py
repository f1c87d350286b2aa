#!/usr/bin/env python3
"""Opens a gbg-vault file using only FORMAT.md, the passphrase and libsodium (ctypes).

Independent of the Swift code: it checks the header (§4.4), unwraps the keys (§4.2),
checks every profile and environment MAC (§5.3), opens every secret version (§5.1) and
verifies the audit chain (§6.5). Prints a JSON report on stdout.

usage: VAULT_PASSPHRASE=… python3 open_vault.py VAULT.db [--allow-test-kdf]
"""
import json, os, sqlite3, sys
from generate import sodium, pwhash, subkey, blake2b, s, d, u32, u64, i64, opt_s, opt_i
import ctypes

def aead_open(key, nonce, ciphertext, ad):
    out = ctypes.create_string_buffer(max(1, len(ciphertext) - 16))
    outlen = ctypes.c_ulonglong(0)
    rc = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(out, ctypes.byref(outlen), None, ciphertext,
        ctypes.c_ulonglong(len(ciphertext)), ad, ctypes.c_ulonglong(len(ad)), nonce, key)
    if rc != 0:
        raise ValueError("authentication failed")
    return out.raw[:outlen.value]

def main():
    path = sys.argv[1]
    allow_test = "--allow-test-kdf" in sys.argv
    passphrase = os.environ["VAULT_PASSPHRASE"].encode()
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    assert db.execute("PRAGMA application_id").fetchone()[0] == 0x47424756, "not a gbg-vault file"
    (fv, vid, alg, ops, mem, salt, knonce, wrapped, digest) = db.execute(
        "SELECT format_version, vault_id, kdf_algorithm, kdf_opslimit, kdf_memlimit, kdf_salt, key_nonce, wrapped_keys, header_digest FROM vault_header").fetchone()
    assert fv == 1
    expect = blake2b(s("gbg-vault/v1 header") + u32(fv) + d(vid) + s(alg) + u64(ops) + u64(mem) + d(salt) + d(knonce) + d(wrapped))
    assert expect == digest, "header digest mismatch"
    assert alg == "argon2id13"
    assert (ops >= 2 and mem >= 67108864) or (allow_test and (ops, mem) == (1, 8192)), "KDF below interactive"
    kek = pwhash(passphrase, salt, ops, mem)
    wrap_ad = s("gbg-vault/v1 wrap") + u32(fv) + d(vid) + s(alg) + u64(ops) + u64(mem) + d(salt)
    keys = aead_open(kek, knonce, wrapped, wrap_ad)
    data_key, audit_key = keys[:32], keys[32:]
    secret_key = subkey(data_key, 1, b"gbgvsecr")
    meta_key = subkey(data_key, 1, b"gbgvmeta")
    mac_key = subkey(audit_key, 1, b"gbgvaudt")
    report = {"profiles": {}, "environments": [], "audit_records": 0}
    for (name, token_url, api_base, mac) in db.execute("SELECT name, token_url, api_base, mac FROM environment"):
        m = blake2b(s("gbg-vault/v1 environment") + d(vid) + s(name) + s(token_url) + opt_s(api_base), meta_key)
        assert m == mac, f"environment {name} MAC"
        report["environments"].append(name)
    for (pid, name, cid, user, grant, scope, env, mac) in db.execute(
            "SELECT id, name, client_id, username, grant_type, scope, environment, mac FROM profile"):
        m = blake2b(s("gbg-vault/v1 profile") + d(vid) + i64(pid) + s(name) + s(cid) + opt_s(user) + s(grant) + opt_s(scope) + s(env), meta_key)
        assert m == mac, f"profile {name} MAC"
        secrets = {}
        for (field, version, nonce, ct) in db.execute(
                "SELECT field, version, nonce, ciphertext FROM secret_version WHERE profile_id = ? ORDER BY field, version", (pid,)):
            ad = s("gbg-vault/v1 secret") + d(vid) + s("secret_version") + i64(pid) + s(field) + i64(version)
            secrets[f"{field}/v{version}"] = aead_open(secret_key, nonce, ct, ad).decode()
        report["profiles"][name] = secrets
    prev, expected_seq = bytes(32), 1
    cols = "seq, at, action, profile, environment, token_url, grant_type, outcome, http_status, oauth_error, attempts, duration_ms, token_type, expires_in, expires_at, request_id, token_fingerprint, detail, mac"
    for row in db.execute(f"SELECT {cols} FROM audit_record ORDER BY seq"):
        (seq, at, action, profile, env, url, grant, outcome, status, oerr, attempts, dur, ttype, ein, eat, rid, fp, detail, mac) = row
        assert seq == expected_seq, f"record {expected_seq} missing"
        msg = (s("gbg-vault/v1 audit") + d(vid) + d(prev) + i64(seq) + i64(at) + s(action) + opt_s(profile) + opt_s(env)
               + opt_s(url) + opt_s(grant) + s(outcome) + opt_i(status) + opt_s(oerr) + opt_i(attempts) + opt_i(dur)
               + opt_s(ttype) + opt_i(ein) + opt_i(eat) + opt_s(rid) + opt_s(fp) + opt_s(detail))
        assert blake2b(msg, mac_key) == mac, f"record {seq} MAC"
        prev, expected_seq = mac, expected_seq + 1
    head = db.execute("SELECT seq, last_mac, mac FROM audit_head").fetchone()
    assert head is not None and head[0] == expected_seq - 1 and head[1] == prev
    assert blake2b(s("gbg-vault/v1 audit-head") + d(vid) + i64(head[0]) + d(head[1]), mac_key) == head[2], "head MAC"
    report["audit_records"] = expected_seq - 1
    json.dump(report, sys.stdout, ensure_ascii=False, sort_keys=True)

if __name__ == "__main__":
    main()
