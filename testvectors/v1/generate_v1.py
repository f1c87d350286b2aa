#!/usr/bin/env python3
"""Generates gbg-vault format v1 test vectors with libsodium through ctypes.

This is an independent implementation of FORMAT.md (canonical encoding, labels, key
hierarchy, additional data); the Swift suite checks that VaultCore produces exactly
these bytes. Kept for reference: it wrote the format-1 vectors in this folder
(run from here: python3 generate_v1.py).
"""
import ctypes, ctypes.util, json, os, struct, sys

# The libsodium primitives and the canonical encoding are those of the format-2 generator.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from generate import sodium, pwhash, seal, subkey, blake2b, s, d, u32, u64, i64, opt_s, opt_i, h  # noqa: E402

def main():
    here = os.path.dirname(os.path.abspath(__file__))
    passphrase = "correct horse battery staple ✓".encode()
    salt = bytes(range(16))
    ops, mem = 2, 67108864  # interactive
    vault_id = bytes(range(0xa0, 0xb0))
    data_key = bytes(range(0x40, 0x60))
    audit_key = bytes(range(0x60, 0x80))
    key_nonce = bytes(range(0x10, 0x28))
    kek = pwhash(passphrase, salt, ops, mem)
    wrap_ad = s("gbg-vault/v1 wrap") + u32(1) + d(vault_id) + s("argon2id13") + u64(ops) + u64(mem) + d(salt)
    wrapped = seal(kek, key_nonce, data_key + audit_key, wrap_ad)
    digest = blake2b(s("gbg-vault/v1 header") + u32(1) + d(vault_id) + s("argon2id13") + u64(ops) + u64(mem)
                     + d(salt) + d(key_nonce) + d(wrapped))
    header = {
        "description": "vault header: Argon2id KEK at interactive, wrapped keys, header digest (FORMAT.md §4)",
        "passphrase_utf8_hex": h(passphrase), "salt": h(salt), "opslimit": ops, "memlimit": mem,
        "vault_id": h(vault_id), "key_nonce": h(key_nonce), "data_key": h(data_key), "audit_key": h(audit_key),
        "expect_kek": h(kek), "expect_wrap_ad": h(wrap_ad), "expect_wrapped_keys": h(wrapped), "expect_header_digest": h(digest),
        "expect": "ok",
    }
    secret_key = subkey(data_key, 1, b"gbgvsecr")
    cases = [header]
    for i, (pid, field, version, plaintext) in enumerate([
        (1, "client_secret", 1, "s3cr3t".encode()),
        (7, "password", 3, "pässwörd 🔑 &=+%".encode()),
        (42, "client_secret", 12, b"x"),
    ]):
        nonce = bytes((j * 7 + i) & 0xff for j in range(24))
        ad = s("gbg-vault/v1 secret") + d(vault_id) + s("secret_version") + i64(pid) + s(field) + i64(version)
        cases.append({
            "description": f"sealed {field} v{version} of profile #{pid} (FORMAT.md §5.1)",
            "data_key": h(data_key), "vault_id": h(vault_id), "profile_id": pid, "field": field, "version": version,
            "nonce": h(nonce), "plaintext": h(plaintext),
            "expect_secret_key": h(secret_key), "expect_ad": h(ad), "expect_ciphertext": h(seal(secret_key, nonce, plaintext, ad)),
            "expect": "ok",
        })
    mac_key = subkey(audit_key, 1, b"gbgvaudt")
    prev = bytes(32)
    msg = (s("gbg-vault/v1 audit") + d(vault_id) + d(prev) + i64(1) + i64(1764384000000) + s("token") + opt_s("demo")
           + opt_s("eu") + opt_s("https://api.auth.gbgplc.com/as/token.oauth2") + opt_s("password") + s("ok") + opt_i(200)
           + opt_s(None) + opt_i(1) + opt_i(87) + opt_s("Bearer") + opt_i(3600) + opt_i(1764387600) + opt_s("req-1")
           + opt_s("00112233445566778899aabbccddeeff") + opt_s(None))
    cases.append({
        "description": "first audit record MAC (FORMAT.md §6.2)",
        "audit_key": h(audit_key), "vault_id": h(vault_id),
        "record": {"seq": 1, "at": 1764384000000, "action": "token", "profile": "demo", "environment": "eu",
                   "token_url": "https://api.auth.gbgplc.com/as/token.oauth2", "grant_type": "password", "outcome": "ok",
                   "http_status": 200, "attempts": 1, "duration_ms": 87, "token_type": "Bearer", "expires_in": 3600,
                   "expires_at": 1764387600, "request_id": "req-1", "token_fingerprint": "00112233445566778899aabbccddeeff"},
        "expect_mac_key": h(mac_key), "expect_mac": h(blake2b(msg, mac_key)),
        "expect": "ok",
    })
    fp_key = subkey(audit_key, 2, b"gbgvaudt")
    cases.append({
        "description": "token fingerprint (FORMAT.md §6.3)",
        "audit_key": h(audit_key), "token": "stub-token-value", "expect_fingerprint": h(blake2b(b"stub-token-value", fp_key, 16)),
        "expect": "ok",
    })
    names = ["header", "secret-1", "secret-2", "secret-3", "audit-mac", "fingerprint-v1"]
    for name, case in zip(names, cases):
        with open(os.path.join(here, f"{name}.json"), "w") as f:
            json.dump(case, f, indent=2, ensure_ascii=False)
            f.write("\n")
    print(f"wrote {len(cases)} vectors")

if __name__ == "__main__":
    main()
