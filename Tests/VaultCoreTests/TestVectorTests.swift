import Foundation
import Testing
@testable import VaultCore

/// Language-neutral vectors in `testvectors/`, produced by an independent implementation
/// of FORMAT.md (`testvectors/generate.py`, libsodium through ctypes).
@Suite("format test vectors")
struct TestVectorTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("testvectors")

    static func load(_ name: String) throws -> [String: Any] {
        let data = try Data(contentsOf: directory.appendingPathComponent(name + ".json"))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    func bytes(_ object: [String: Any], _ key: String) throws -> [UInt8] {
        let text = try #require(object[key] as? String)
        return try #require([UInt8](hex: text))
    }

    @Test("header: KEK, wrap AD, wrapped keys and digest")
    func header() throws {
        let v = try Self.load("header")
        #expect(v["expect"] as? String == "ok")
        let passphrase = SecureBytes(copying: try bytes(v, "passphrase_utf8_hex"))
        let kdf = KDFParameters(opslimit: UInt64(v["opslimit"] as! Int), memlimit: UInt64(v["memlimit"] as! Int))
        let kek = try Sodium.argon2id(passphrase: passphrase, salt: try bytes(v, "salt"), opslimit: kdf.opslimit, memlimit: kdf.memlimit)
        #expect(kek.withUnsafeBytes { Array($0) } == (try bytes(v, "expect_kek")))
        let keys = try VaultKeys(dataKey: SecureBytes(copying: try bytes(v, "data_key")), auditKey: SecureBytes(copying: try bytes(v, "audit_key")))
        var header = VaultHeader(formatVersion: 1, vaultID: try bytes(v, "vault_id"), kdfAlgorithm: "argon2id13", kdf: kdf,
                                 salt: try bytes(v, "salt"), keyNonce: try bytes(v, "key_nonce"), wrappedKeys: [], headerDigest: [], createdAt: "")
        #expect(header.wrapAdditionalData == (try bytes(v, "expect_wrap_ad")))
        header.wrappedKeys = try Sodium.seal(key: kek, nonce: header.keyNonce, plaintext: keys.wrappedPlaintext(), additionalData: header.wrapAdditionalData)
        #expect(header.wrappedKeys == (try bytes(v, "expect_wrapped_keys")))
        header.headerDigest = header.computedDigest
        #expect(header.headerDigest == (try bytes(v, "expect_header_digest")))
        let unlocked = try header.unlock(passphrase: passphrase)
        #expect(unlocked.dataKey.constantTimeEquals(keys.dataKey))
        #expect(throws: VaultError.wrongPassphrase) { try header.unlock(passphrase: SecureBytes(utf8: "wrong")) }
    }

    @Test("sealed secrets: subkey, additional data, ciphertext", arguments: ["secret-1", "secret-2", "secret-3"])
    func secret(name: String) throws {
        let v = try Self.load(name)
        let keys = try VaultKeys(dataKey: SecureBytes(copying: try bytes(v, "data_key")), auditKey: .random(count: 32))
        #expect(keys.secretKey.withUnsafeBytes { Array($0) } == (try bytes(v, "expect_secret_key")))
        let field = try #require(SecretField(rawValue: v["field"] as! String))
        let ad = UnlockedVault.secretAD(vaultID: try bytes(v, "vault_id"), profileID: Int64(v["profile_id"] as! Int),
                                        field: field, version: Int64(v["version"] as! Int))
        #expect(ad == (try bytes(v, "expect_ad")))
        let sealed = try Sodium.seal(key: keys.secretKey, nonce: try bytes(v, "nonce"),
                                     plaintext: SecureBytes(copying: try bytes(v, "plaintext")), additionalData: ad)
        #expect(sealed == (try bytes(v, "expect_ciphertext")))
        let opened = try Sodium.open(key: keys.secretKey, nonce: try bytes(v, "nonce"), ciphertext: sealed, additionalData: ad)
        #expect(opened.withUnsafeBytes { Array($0) } == (try bytes(v, "plaintext")))
    }

    @Test("audit record MAC and token fingerprint")
    func audit() throws {
        let v = try Self.load("audit-mac")
        let keys = try VaultKeys(dataKey: .random(count: 32), auditKey: SecureBytes(copying: try bytes(v, "audit_key")))
        #expect(keys.auditMACKey.withUnsafeBytes { Array($0) } == (try bytes(v, "expect_mac_key")))
        let r = try #require(v["record"] as? [String: Any])
        var entry = AuditEntry(at: Int64(r["at"] as! Int), action: r["action"] as! String, outcome: r["outcome"] as! String,
                               profile: r["profile"] as? String, environment: r["environment"] as? String,
                               tokenURL: r["token_url"] as? String, grantType: r["grant_type"] as? String)
        entry.seq = Int64(r["seq"] as! Int)
        entry.httpStatus = (r["http_status"] as? Int).map(Int64.init)
        entry.attempts = (r["attempts"] as? Int).map(Int64.init)
        entry.durationMs = (r["duration_ms"] as? Int).map(Int64.init)
        entry.tokenType = r["token_type"] as? String
        entry.expiresIn = (r["expires_in"] as? Int).map(Int64.init)
        entry.expiresAt = (r["expires_at"] as? Int).map(Int64.init)
        entry.requestID = r["request_id"] as? String
        entry.tokenFingerprint = r["token_fingerprint"] as? String
        let mac = AuditChain.mac(of: entry, previousMAC: [UInt8](repeating: 0, count: 32), vaultID: try bytes(v, "vault_id"), key: keys.auditMACKey)
        #expect(mac == (try bytes(v, "expect_mac")))

        let f = try Self.load("fingerprint")
        let fpKeys = try VaultKeys(dataKey: .random(count: 32), auditKey: SecureBytes(copying: try bytes(f, "audit_key")))
        #expect(fpKeys.fingerprint(token: SecureBytes(utf8: f["token"] as! String)) == f["expect_fingerprint"] as? String)
    }
}
