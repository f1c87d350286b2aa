import Foundation
import Testing
@testable import VaultCore

/// Language-neutral vectors in `testvectors/`, produced by an independent implementation
/// of FORMAT.md (`testvectors/generate.py`, libsodium through ctypes): VaultCore must
/// produce exactly these bytes, and reject every `"expect": "fail"` case.
@Suite("format test vectors")
struct TestVectorTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("testvectors")

    static func load(_ name: String) throws -> [String: Any] {
        let data = try Data(contentsOf: directory.appendingPathComponent(name + ".json"))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    func bytes(_ object: [String: Any], _ key: String) throws -> [UInt8] {
        let text = try #require(object[key] as? String, "\(key)")
        return try #require([UInt8](hex: text))
    }

    func int(_ object: [String: Any], _ key: String) throws -> Int64 {
        Int64(try #require(object[key] as? Int, "\(key)"))
    }

    @Test("format-2 header: KEK, wrap AD with the key epoch, wrapped keys and digest")
    func header() throws {
        let v = try Self.load("header")
        #expect(v["expect"] as? String == "ok")
        let passphrase = SecureBytes(copying: try bytes(v, "passphrase_utf8_hex"))
        let kdf = KDFParameters(opslimit: UInt64(try int(v, "opslimit")), memlimit: UInt64(try int(v, "memlimit")))
        let kek = try Sodium.argon2id(passphrase: passphrase, salt: try bytes(v, "salt"), opslimit: kdf.opslimit, memlimit: kdf.memlimit)
        #expect(kek.withUnsafeBytes { Array($0) } == (try bytes(v, "expect_kek")))
        let epoch = try int(v, "key_epoch")
        let keys = try VaultKeys(dataKey: SecureBytes(copying: try bytes(v, "data_key")), auditKey: SecureBytes(copying: try bytes(v, "audit_key")), epoch: epoch)
        var header = VaultHeader(formatVersion: 2, vaultID: try bytes(v, "vault_id"), kdfAlgorithm: "argon2id13", kdf: kdf,
                                 salt: try bytes(v, "salt"), keyNonce: try bytes(v, "key_nonce"), wrappedKeys: [], headerDigest: [],
                                 createdAt: "", keyEpoch: epoch)
        #expect(header.wrapAdditionalData == (try bytes(v, "expect_wrap_ad")))
        header.wrappedKeys = try Sodium.seal(key: kek, nonce: header.keyNonce, plaintext: keys.wrappedPlaintext(), additionalData: header.wrapAdditionalData)
        #expect(header.wrappedKeys == (try bytes(v, "expect_wrapped_keys")))
        header.headerDigest = header.computedDigest
        #expect(header.headerDigest == (try bytes(v, "expect_header_digest")))
        let unlocked = try header.unlock(passphrase: passphrase)
        #expect(unlocked.dataKey.constantTimeEquals(keys.dataKey))
        #expect(unlocked.epoch == epoch)
        #expect(throws: VaultError.wrongPassphrase) { try header.unlock(passphrase: SecureBytes(utf8: "wrong")) }
    }

    @Test("format-1 header and secret vectors still read (the upgrade's input)")
    func formatOne() throws {
        let v = try Self.load("v1/header")
        let kdf = KDFParameters(opslimit: UInt64(try int(v, "opslimit")), memlimit: UInt64(try int(v, "memlimit")))
        let header = VaultHeader(formatVersion: 1, vaultID: try bytes(v, "vault_id"), kdfAlgorithm: "argon2id13", kdf: kdf,
                                 salt: try bytes(v, "salt"), keyNonce: try bytes(v, "key_nonce"), wrappedKeys: try bytes(v, "expect_wrapped_keys"),
                                 headerDigest: try bytes(v, "expect_header_digest"), createdAt: "")
        #expect(header.wrapAdditionalData == (try bytes(v, "expect_wrap_ad")))
        #expect(header.computedDigest == (try bytes(v, "expect_header_digest")))
        let keys = try header.unlock(passphrase: SecureBytes(copying: try bytes(v, "passphrase_utf8_hex")))
        #expect(keys.dataKey.withUnsafeBytes { Array($0) } == (try bytes(v, "data_key")))
        for name in ["v1/secret-1", "v1/secret-2", "v1/secret-3"] {
            let s = try Self.load(name)
            let ad = Format.V1.secretAD(vaultID: try bytes(s, "vault_id"), profileID: try int(s, "profile_id"),
                                        field: try #require(s["field"] as? String), version: try int(s, "version"))
            #expect(ad == (try bytes(s, "expect_ad")))
        }
    }

    @Test("sealed secrets: subkey, additional data with the profile uid, ciphertext")
    func secrets() throws {
        let cases = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: Self.directory.appendingPathComponent("secrets.json"))) as? [[String: Any]])
        #expect(cases.count == 3)
        for v in cases {
            let keys = try VaultKeys(dataKey: SecureBytes(copying: try bytes(v, "data_key")), auditKey: .random(count: 32))
            #expect(keys.secretKey.withUnsafeBytes { Array($0) } == (try bytes(v, "expect_secret_key")))
            let field = try #require(SecretField(rawValue: v["field"] as? String ?? ""))
            let ad = Format.secretAD(vaultID: try bytes(v, "vault_id"), profileUID: try bytes(v, "profile_uid"),
                                     field: field.rawValue, version: try int(v, "version"))
            #expect(ad == (try bytes(v, "expect_ad")))
            let sealed = try Sodium.seal(key: keys.secretKey, nonce: try bytes(v, "nonce"),
                                         plaintext: SecureBytes(copying: try bytes(v, "plaintext")), additionalData: ad)
            #expect(sealed == (try bytes(v, "expect_ciphertext")))
        }
    }

    @Test("cached token bound to the environment's definition; profile and environment MACs")
    func tokenAndMetadata() throws {
        let t = try Self.load("token")
        let keys = try VaultKeys(dataKey: SecureBytes(copying: try bytes(t, "data_key")), auditKey: .random(count: 32))
        #expect(keys.tokenKey.withUnsafeBytes { Array($0) } == (try bytes(t, "expect_token_key")))
        let e = try #require(t["environment"] as? [String: Any])
        let ad = Format.tokenAD(vaultID: try bytes(t, "vault_id"), profileUID: try bytes(t, "profile_uid"), environmentName: e["name"] as! String,
                                environmentUID: try bytes(e, "uid"), tokenURL: e["token_url"] as! String, apiBase: e["api_base"] as? String,
                                expiresAt: try int(t, "expires_at"), clientSecretVersion: try int(t, "client_secret_version"),
                                passwordVersion: try int(t, "password_version"))
        #expect(ad == (try bytes(t, "expect_ad")))
        #expect(try Sodium.seal(key: keys.tokenKey, nonce: try bytes(t, "nonce"), plaintext: SecureBytes(utf8: t["token"] as! String),
                                additionalData: ad) == (try bytes(t, "expect_ciphertext")))

        let m = try Self.load("metadata")
        let meta = try VaultKeys(dataKey: SecureBytes(copying: try bytes(m, "data_key")), auditKey: .random(count: 32))
        #expect(meta.metadataKey.withUnsafeBytes { Array($0) } == (try bytes(m, "expect_metadata_key")))
        let p = try #require(m["profile"] as? [String: Any])
        #expect(Format.profileMAC(vaultID: try bytes(m, "vault_id"), uid: try bytes(p, "uid"), name: p["name"] as! String,
                                  clientID: p["client_id"] as! String, username: p["username"] as? String, grantType: p["grant_type"] as! String,
                                  scope: p["scope"] as? String, environment: p["environment"] as! String,
                                  clientSecretVersion: try int(p, "client_secret_version"), passwordVersion: try int(p, "password_version"),
                                  key: meta.metadataKey) == (try bytes(m, "expect_profile_mac")))
        let env = try #require(m["environment"] as? [String: Any])
        #expect(Format.environmentMAC(vaultID: try bytes(m, "vault_id"), uid: try bytes(env, "uid"), name: env["name"] as! String, tokenURL: env["token_url"] as! String, apiBase: env["api_base"] as? String, key: meta.metadataKey)
                == (try bytes(m, "expect_environment_mac")))
    }

    /// A stored record from a vector's fields (the MAC covers the stored text).
    static func entry(_ r: [String: Any]) -> AuditRow {
        AuditRow(seq: Int64(r["seq"] as! Int), at: Int64(r["at"] as! Int), action: r["action"] as! String,
                 profile: r["profile"] as? String, environment: r["environment"] as? String, tokenURL: r["token_url"] as? String,
                 grantType: r["grant_type"] as? String, outcome: r["outcome"] as! String,
                 httpStatus: (r["http_status"] as? Int).map(Int64.init), oauthError: r["oauth_error"] as? String,
                 attempts: (r["attempts"] as? Int).map(Int64.init), durationMs: (r["duration_ms"] as? Int).map(Int64.init),
                 tokenType: r["token_type"] as? String, expiresIn: (r["expires_in"] as? Int).map(Int64.init),
                 expiresAt: (r["expires_at"] as? Int).map(Int64.init), requestID: r["request_id"] as? String,
                 tokenFingerprint: r["token_fingerprint"] as? String, detail: r["detail"] as? String,
                 keyEpoch: nil, previousKeyMAC: nil, mac: Data())
    }

    @Test("audit chain across a key epoch: record MACs, previous-key MAC, head, retired key, fingerprint")
    func audit() throws {
        let v = try Self.load("audit")
        let vaultID = try bytes(v, "vault_id")
        let one = try VaultKeys(dataKey: .random(count: 32), auditKey: SecureBytes(copying: try bytes(v, "audit_key_epoch_1")), epoch: 1)
        let two = try VaultKeys(dataKey: .random(count: 32), auditKey: SecureBytes(copying: try bytes(v, "audit_key_epoch_2")), epoch: 2)
        #expect(one.auditMACKey.withUnsafeBytes { Array($0) } == (try bytes(v, "expect_mac_key_epoch_1")))
        let records = try #require(v["records"] as? [[String: Any]])
        let first = Self.entry(records[0]), rekey = Self.entry(records[1])
        let mac1 = Format.auditMAC(first, previousMAC: AuditChain.zeroMAC, vaultID: vaultID, epoch: 1, key: one.auditMACKey)
        #expect(mac1 == (try bytes(v, "expect_mac_1")))
        let mac2 = Format.auditMAC(rekey, previousMAC: mac1, vaultID: vaultID, epoch: 2, key: two.auditMACKey)
        #expect(mac2 == (try bytes(v, "expect_mac_2")))
        #expect(Format.auditMAC(rekey, previousMAC: mac1, vaultID: vaultID, epoch: 2, key: one.auditMACKey) == (try bytes(v, "expect_previous_key_mac_2")))
        #expect(Format.auditHeadMAC(seq: 2, epoch: 2, lastMAC: mac2, vaultID: vaultID, key: two.auditMACKey) == (try bytes(v, "expect_head_mac")))
        let sealed = try Sodium.seal(key: two.retiredKeySealingKey, nonce: try bytes(v, "retired_nonce"), plaintext: one.auditKey,
                                     additionalData: Format.retiredAuditKeyAD(vaultID: vaultID, epoch: 1))
        #expect(sealed == (try bytes(v, "expect_retired_sealed")))
        #expect(Format.tokenFingerprint(SecureBytes(utf8: v["fingerprint_token"] as! String), key: one.fingerprintKey) == v["expect_fingerprint"] as? String)
    }

    @Test("format 4: recipients, the owner's wrapped identity, a key slot, a member MAC, the owner's signatures, a signed record; their failure cases (re-attribution, an outsider's slot, rollback and fork)")
    func members() throws {
        let v = try Self.load("members")
        let vaultID = try bytes(v, "vault_id")
        let epoch = try int(v, "key_epoch")
        let keys = try VaultKeys(dataKey: SecureBytes(copying: try bytes(v, "data_key")), auditKey: SecureBytes(copying: try bytes(v, "audit_key")),
                                 epoch: epoch)
        let identities = try #require(v["identities"] as? [String: [String: Any]])
        var made: [String: MemberIdentity] = [:]
        for (name, entry) in identities {
            let identity = try MemberIdentity(secret: SecureBytes(copying: try bytes(entry, "secret")))
            #expect(identity.recipient.boxPublicKey == (try bytes(entry, "expect_box_public_key")), "\(name)")
            #expect(identity.recipient.signPublicKey == (try bytes(entry, "expect_sign_public_key")), "\(name)")
            #expect(identity.recipient.string == entry["expect_recipient"] as? String, "\(name)")
            #expect(try Recipient(parsing: try #require(entry["expect_recipient"] as? String)) == identity.recipient)
            made[name] = identity
        }
        // The header wraps the owner's identity (§4.2).
        let h = try #require(v["header"] as? [String: Any])
        var header = VaultHeader(formatVersion: 4, vaultID: vaultID, kdfAlgorithm: "argon2id13",
                                 kdf: KDFParameters(opslimit: UInt64(try int(h, "opslimit")), memlimit: UInt64(try int(h, "memlimit"))),
                                 salt: try bytes(h, "salt"), keyNonce: try bytes(h, "key_nonce"), wrappedKeys: [], headerDigest: [],
                                 createdAt: "", keyEpoch: epoch, signedFromSeq: try int(v, "signed_from_seq"))
        #expect(Format.wrapAD(formatVersion: 4, vaultID: vaultID, keyEpoch: epoch, kdfAlgorithm: "argon2id13", opslimit: header.kdf.opslimit,
                              memlimit: header.kdf.memlimit, salt: header.salt) == (try bytes(h, "expect_wrap_ad")))
        let kek = SecureBytes(copying: try bytes(h, "kek"))
        let owner = try #require(made["owner"])
        header.wrappedKeys = try Sodium.seal(key: kek, nonce: header.keyNonce, plaintext: owner.secret, additionalData: header.wrapAdditionalData)
        #expect(header.wrappedKeys == (try bytes(h, "expect_wrapped_keys")))
        header.headerDigest = Format.headerDigest(formatVersion: 4, vaultID: vaultID, keyEpoch: epoch, signedFromSeq: header.signedFromSeq,
                                                  kdfAlgorithm: "argon2id13", opslimit: header.kdf.opslimit, memlimit: header.kdf.memlimit,
                                                  salt: header.salt, keyNonce: header.keyNonce, wrappedKeys: header.wrappedKeys)
        #expect(header.headerDigest == (try bytes(h, "expect_header_digest")))
        #expect(try header.unwrapOwner(kek: kek)?.recipient == owner.recipient)
        // Member MAC, slot binding and MAC, and opening the slot with alice's identity (§10.3, §10.4).
        let m = try #require(v["member"] as? [String: Any])
        let member = MemberRecord(name: "alice", uid: Data(try bytes(m, "uid")), kind: "recipient", boxPublicKey: Data(try bytes(m, "box_public_key")),
                                  signPublicKey: Data(try bytes(m, "sign_public_key")), addedSeq: try int(m, "added_seq"), removedSeq: nil,
                                  createdAt: try #require(m["created_at"] as? String), mac: Data())
        #expect(Format.memberMAC(vaultID: vaultID, name: "alice", uid: try bytes(m, "uid"), kind: "recipient",
                                 boxPublicKey: try bytes(m, "box_public_key"), signPublicKey: try bytes(m, "sign_public_key"),
                                 addedSeq: try int(m, "added_seq"), removedSeq: nil, createdAt: member.createdAt, key: keys.metadataKey)
                == (try bytes(v, "expect_member_mac")))
        let slot = try #require(v["slot"] as? [String: Any])
        #expect(Format.slotBinding(vaultID: vaultID, epoch: epoch, memberName: "alice", memberUID: try bytes(m, "uid"),
                                   boxPublicKey: try bytes(m, "box_public_key"), dataKey: keys.dataKey, auditKey: keys.auditKey)
                == (try bytes(slot, "expect_binding")))
        let sealed = try bytes(slot, "sealed")
        #expect(Format.slotMAC(vaultID: vaultID, memberName: "alice", memberUID: try bytes(m, "uid"), epoch: epoch, sealed: sealed,
                               key: keys.metadataKey) == (try bytes(slot, "expect_mac")))
        // The owner's signatures on alice's row and slot (§10.6).
        let signedRow = MemberCrypto.signatureInput(member, vaultID: vaultID)
        #expect(signedRow == (try bytes(v, "expect_member_signature_input")))
        #expect(owner.sign(signedRow) == (try bytes(v, "expect_member_signature")))
        let signedSlot = MemberCrypto.slotSignatureInput(member: member, epoch: epoch, sealed: sealed, vaultID: vaultID)
        #expect(signedSlot == (try bytes(slot, "expect_signature_input")))
        #expect(owner.sign(signedSlot) == (try bytes(slot, "expect_signature")))
        let opened = try #require(made["alice"]?.openBox(sealed))
        #expect(opened.slice(0..<32).constantTimeEquals(keys.dataKey) && opened.slice(32..<64).constantTimeEquals(keys.auditKey))
        #expect(owner.openBox(sealed) == nil, "sealed to alice only")
        // The owner's endorsement of its own slot (§10.3).
        let ownerSlot = try #require(v["owner_slot"] as? [String: Any])
        #expect(try MemberCrypto.ownerEndorsement(owner: owner, epoch: epoch, sealed: try bytes(ownerSlot, "sealed"), vaultID: vaultID)
                == (try bytes(ownerSlot, "expect_endorsement")))
        // The signed record (§6.7): Ed25519 signatures are deterministic.
        var record = Self.entry(try #require(v["record"] as? [String: Any]))
        record.seq = 3
        let mac = Format.auditMAC(record, previousMAC: try bytes(v, "previous_mac"), vaultID: vaultID, epoch: epoch, key: keys.auditEpochKeys.macKey)
        #expect(mac == (try bytes(v, "expect_record_mac")))
        let input = Format.auditSignatureInput(vaultID: vaultID, seq: 3, member: "alice", mac: mac)
        #expect(input == (try bytes(v, "expect_signature_input")))
        #expect(try #require(made["alice"]).sign(input) == (try bytes(v, "expect_signature")))
        // Failure cases.
        for c in try #require(v["failures"] as? [[String: Any]]) {
            let reason = c["reason"] as? String ?? "?"
            switch c["kind"] as? String {
            case "recipient":
                #expect(throws: VaultError.self, "\(reason)") { _ = try Recipient(parsing: c["input"] as? String ?? "") }
            case "signature":
                #expect(!Sodium.verify(signature: try bytes(c, "signature"), message: try bytes(c, "input"), publicKey: try bytes(c, "public_key")), "\(reason)")
            case "endorsement":
                #expect(try MemberCrypto.ownerEndorsement(owner: owner, epoch: epoch, sealed: try bytes(c, "sealed"), vaultID: vaultID)
                        != (try bytes(c, "endorsement")), "\(reason)")
            case "known-state":
                let guarding = TrailGuard(known: KnownVaults(path: "/nonexistent/known-vaults"), location: "vector",
                                          seen: (try int(c, "seen_seq"), try bytes(c, "seen_mac")), pinnedAt: 0)
                let atSeen = c["mac_at_seen_seq"] as? String
                #expect(throws: VaultError.self, "\(reason)") {
                    try guarding.expectExtends(headSeq: try int(c, "head_seq"), headMAC: try bytes(c, "head_mac"),
                                               seen: guarding.newestSeen) { atSeen.flatMap { [UInt8](hex: $0) } }
                }
                // The same seen record further along a trail that holds it: accepted.
                try guarding.expectExtends(headSeq: try int(c, "seen_seq") + 2, headMAC: try bytes(c, "head_mac"),
                                           seen: guarding.newestSeen) { try bytes(c, "seen_mac") }
            case "slot-mac":
                var moved = member
                moved.name = try #require(c["member"] as? String)
                moved.uid = Data(try bytes(c, "member_uid"))
                #expect(MemberCrypto.slotMAC(member: moved, epoch: epoch, sealed: try bytes(c, "sealed"), vaultID: vaultID, key: keys.metadataKey)
                        != (try bytes(c, "mac")), "\(reason)")
            default:
                Issue.record("unknown failure kind \(c["kind"] ?? "nil")")
            }
        }
    }

    @Test("every failure vector is rejected")
    func failures() throws {
        let v = try Self.load("failures")
        let cases = try #require(v["cases"] as? [[String: Any]])
        #expect(cases.count >= 8)
        for c in cases {
            #expect(c["expect"] as? String == "fail")
            let what = c["description"] as? String ?? "?"
            switch c["kind"] as? String {
            case "secret", "token":
                let keys = try VaultKeys(dataKey: SecureBytes(copying: try bytes(c, "data_key")), auditKey: .random(count: 32))
                let key = c["kind"] as? String == "secret" ? keys.secretKey : keys.tokenKey
                #expect(throws: CryptoError.self, "\(what)") {
                    _ = try Sodium.open(key: key, nonce: try bytes(c, "nonce"), ciphertext: try bytes(c, "ciphertext"), additionalData: try bytes(c, "ad"))
                }
            case "wrap":
                #expect(throws: CryptoError.self, "\(what)") {
                    _ = try Sodium.open(key: SecureBytes(copying: try bytes(c, "kek")), nonce: try bytes(c, "nonce"),
                                        ciphertext: try bytes(c, "ciphertext"), additionalData: try bytes(c, "ad"))
                }
            case "audit-mac":
                let key = SecureBytes(copying: try bytes(c, "mac_key"))
                #expect(Sodium.blake2b(try bytes(c, "input"), key: key, length: 32) != (try bytes(c, "mac")), "\(what)")
            case "audit-first":
                // A record 1 that is correctly MAC'd and headed, but is not `init`: only the
                // "the trail starts with init" rule can catch it, and it must.
                setenv("GBG_VAULT_TEST_ONLY_INSECURE_KDF", "1", 1)
                let directory = NSTemporaryDirectory() + "gbg-vault-vector-" + UUID().uuidString
                defer { try? FileManager.default.removeItem(atPath: directory) }
                let vault = try Vault.initialise(at: directory + "/v.db", passphrase: SecureBytes(utf8: "vector passphrase"),
                                                 kdf: .testOnlyInsecure, detail: "vector")
                var record = Self.entry(try #require(c["record"] as? [String: Any]))
                record.seq = 1
                let keys = vault.keys.auditEpochKeys
                let mac = Format.auditMAC(record, previousMAC: AuditChain.zeroMAC, vaultID: vault.vaultID, epoch: 1, key: keys.macKey)
                let head = Format.auditHeadMAC(seq: 1, epoch: 1, lastMAC: mac, vaultID: vault.vaultID, key: keys.macKey)
                try vault.vault.database.write { db in
                    try db.execute(sql: "DELETE FROM audit_record")
                    var row = record
                    row.mac = Data(mac)
                    row.keyEpoch = 1
                    try row.insert(db)
                    try db.execute(sql: "UPDATE audit_head SET seq = 1, last_mac = ?, mac = ?", arguments: [Data(mac), Data(head)])
                }
                let verification = try vault.verifyAudit()
                #expect(verification.firstFailure?.seq == 1, "\(what)")
                #expect(verification.firstFailure?.reason.contains("not the vault's init record") == true, "\(what)")
            default:
                Issue.record("unknown failure kind in \(what)")
            }
        }
    }
}
