import Foundation
import GRDB
import Testing
@testable import VaultCore

/// Flips every byte of every sealed value, nonce, wrapped key and header field, one at a
/// time, and checks that each is an integrity failure (exit 7): never a wrong plaintext,
/// never a crash.
@Suite("tamper matrix", .serialized)
final class TamperTests {
    let directory = NSTemporaryDirectory() + "gbg-vault-unit-" + UUID().uuidString
    let passphrase = SecureBytes(utf8: "tamper test passphrase")

    init() {
        setenv("GBG_VAULT_TEST_ONLY_INSECURE_KDF", "1", 1)
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    /// Each test's vaults go with it.
    deinit { try? FileManager.default.removeItem(atPath: directory) }

    func makeVault() throws -> UnlockedVault {
        let vault = try Vault.initialise(at: directory + "/\(UUID().uuidString).db", passphrase: passphrase,
                                         kdf: .testOnlyInsecure, detail: "test")
        try vault.addProfile(NewProfile(name: "a", clientID: "client-a", username: "user-a", grant: .password, scope: nil, environment: "eu"),
                             secrets: SecretInput(clientSecret: SecureBytes(utf8: "secret-a"), password: SecureBytes(utf8: "password-a")))
        try vault.addProfile(NewProfile(name: "b", clientID: "client-b", username: nil, grant: .clientCredentials, scope: "gbg.token", environment: "eu"),
                             secrets: SecretInput(clientSecret: SecureBytes(utf8: "secret-b"), password: nil))
        return vault
    }

    /// Runs `body` with one byte of `column` in `table` (row `whereClause`) flipped, then restores it.
    func withFlippedByte(_ db: any VaultStore, table: String, column: String, whereClause: String, index: Int,
                         _ body: () throws -> Void) throws {
        let original = try db.read { try Data.fetchOne($0, sql: "SELECT \(column) FROM \(table) WHERE \(whereClause)")! }
        var flipped = original
        flipped[flipped.startIndex + index] ^= 0x01
        try db.write { try $0.execute(sql: "UPDATE \(table) SET \(column) = ? WHERE \(whereClause)", arguments: [flipped]) }
        defer { try? db.write { try $0.execute(sql: "UPDATE \(table) SET \(column) = ? WHERE \(whereClause)", arguments: [original]) } }
        try body()
    }

    func expectIntegrityFailure(_ what: String, _ body: () throws -> Void) {
        do {
            try body()
            Issue.record("\(what): tampering was not detected")
        } catch let error as VaultError {
            #expect(error.exitCode == 7, "\(what): got \(error)")
        } catch {
            Issue.record("\(what): unexpected error \(error)")
        }
    }

    @Test("every byte of every sealed secret and nonce")
    func sealedValues() throws {
        let vault = try makeVault()
        let db = vault.vault.database
        var tried = 0
        let rows = try db.read { try Row.fetchAll($0, sql: "SELECT profile_id, field, version, length(nonce) AS n, length(ciphertext) AS c FROM secret_version") }
        for row in rows {
            let pid: Int64 = row["profile_id"], field: String = row["field"], version: Int64 = row["version"]
            let whereClause = "profile_id = \(pid) AND field = '\(field)' AND version = \(version)"
            let profile = try vault.vault.profiles().first { $0.id == pid }!
            for (column, length) in [("nonce", row["n"] as Int), ("ciphertext", row["c"] as Int)] {
                for index in 0..<length {
                    try withFlippedByte(db, table: "secret_version", column: column, whereClause: whereClause, index: index) {
                        expectIntegrityFailure("\(field) \(column)[\(index)]") { _ = try vault.credentials(for: profile) }
                    }
                    tried += 1
                }
            }
        }
        #expect(tried == rows.reduce(0) { $0 + ($1["n"] as Int) + ($1["c"] as Int) } && tried > 100)
        print("tamper matrix: \(tried) sealed-value bytes flipped")
        // Untouched afterwards.
        let a = try vault.credentials(for: try vault.verifiedProfile(named: "a"))
        #expect(a.clientSecret.utf8String() == "secret-a")
    }

    @Test("every byte of every header field, and each integer field")
    func header() throws {
        let vault = try makeVault()
        let db = vault.vault.database
        var tried = 0
        for (column, length) in [("vault_id", 16), ("kdf_salt", 16), ("key_nonce", 24), ("wrapped_keys", 80), ("header_digest", 32)] {
            for index in 0..<length {
                try withFlippedByte(db, table: "vault_header", column: column, whereClause: "id = 1", index: index) {
                    expectIntegrityFailure("\(column)[\(index)]") { _ = try vault.vault.unlock(passphrase: passphrase) }
                }
                tried += 1
            }
        }
        for (column, value) in [("format_version", "0"), ("format_version", "1"), ("kdf_opslimit", "kdf_opslimit + 1"),
                                ("format_version", "2"), ("format_version", "3"), ("kdf_memlimit", "kdf_memlimit * 2"), ("kdf_algorithm", "'argon2i13'"),
                                ("key_epoch", "key_epoch + 1"), ("key_epoch", "key_epoch + 2"), ("signed_from_seq", "signed_from_seq + 1")] {
            let original = try db.read { try DatabaseValue.fetchOne($0, sql: "SELECT \(column) FROM vault_header")! }
            try db.write { try $0.execute(sql: "UPDATE vault_header SET \(column) = \(value)") }
            expectIntegrityFailure(column) { _ = try vault.vault.unlock(passphrase: passphrase) }
            try db.write { try $0.execute(sql: "UPDATE vault_header SET \(column) = ?", arguments: [original]) }
            tried += 1
        }
        try db.write { try $0.execute(sql: "UPDATE vault_header SET format_version = 5") }
        #expect(throws: VaultError.self) { _ = try vault.vault.unlock(passphrase: passphrase) }
        do { _ = try vault.vault.unlock(passphrase: passphrase) } catch { #expect(error.exitCode == 1 && error.message.contains("format version 5")) }
        try db.write { try $0.execute(sql: "UPDATE vault_header SET format_version = 4") }
        print("tamper matrix: \(tried) header fields/bytes altered")
        _ = try vault.vault.unlock(passphrase: passphrase)
    }

    @Test("a sealed value moved to another row, field or version fails to open")
    func movedCiphertext() throws {
        let vault = try makeVault()
        let db = vault.vault.database
        let a = try vault.verifiedProfile(named: "a"), b = try vault.verifiedProfile(named: "b")
        // a's password ciphertext onto a's client secret (another field).
        try db.write { try $0.execute(sql: """
            UPDATE secret_version SET (nonce, ciphertext) = (SELECT nonce, ciphertext FROM secret_version WHERE profile_id = ? AND field = 'password')
            WHERE profile_id = ? AND field = 'client_secret'
            """, arguments: [a.id, a.id]) }
        expectIntegrityFailure("field swap") { _ = try vault.credentials(for: a) }
        // b's client secret onto a's (another row).
        try db.write { try $0.execute(sql: """
            UPDATE secret_version SET (nonce, ciphertext) = (SELECT nonce, ciphertext FROM secret_version WHERE profile_id = ? AND field = 'client_secret')
            WHERE profile_id = ? AND field = 'client_secret'
            """, arguments: [b.id, a.id]) }
        expectIntegrityFailure("row swap") { _ = try vault.credentials(for: a) }
        // A version renumbered.
        try db.write { try $0.execute(sql: "UPDATE secret_version SET version = 5 WHERE profile_id = ? AND field = 'client_secret'", arguments: [b.id]) }
        expectIntegrityFailure("version renumbered") { _ = try vault.credentials(for: b) }
    }

    @Test("edited profile or environment metadata is refused before any secret is used")
    func metadata() throws {
        let vault = try makeVault()
        try vault.addEnvironment(name: "staging", tokenURL: "https://auth.staging.example/as/token.oauth2", apiBase: nil)
        let db = vault.vault.database
        try db.write { try $0.execute(sql: "UPDATE environment SET token_url = 'https://evil.example/as/token.oauth2'") }
        expectIntegrityFailure("token URL redirected") { _ = try vault.verifiedEnvironment(named: "staging") }
        try db.write { try $0.execute(sql: "UPDATE profile SET client_id = 'someone-else' WHERE name = 'a'") }
        expectIntegrityFailure("client id edited") { _ = try vault.verifiedProfile(named: "a") }
    }

    @Test("garbage files: random bytes, truncated and zeroed vaults are integrity failures")
    func garbage() throws {
        let vault = try makeVault()
        let path = vault.vault.database.path
        let random = directory + "/random.db"
        try Data((0..<65536).map { _ in UInt8.random(in: 0...255) }).write(to: URL(fileURLWithPath: random))
        expectIntegrityFailure("random bytes") { _ = try Vault.open(at: random).profiles() }
        let empty = directory + "/empty.db"
        #expect(FileManager.default.createFile(atPath: empty, contents: Data()))
        expectIntegrityFailure("empty file") { _ = try Vault.open(at: empty).profiles() }
        let other = directory + "/other.db"
        let queue = try DatabaseQueue(path: other)
        try queue.write { try $0.execute(sql: "CREATE TABLE t(x)") }
        try queue.close()
        expectIntegrityFailure("some other SQLite file") { _ = try Vault.open(at: other).profiles() }
        _ = path
    }

    @Test("rekey re-seals every version, passwd keeps ciphertexts, the audit chain survives both")
    func passwdRekey() throws {
        let vault = try makeVault()
        try vault.rotate(profileNamed: "a", secrets: SecretInput(clientSecret: SecureBytes(utf8: "secret-a-2"), password: nil))
        let db = vault.vault.database
        let snapshot = { try db.read { try Data.fetchAll($0, sql: "SELECT ciphertext FROM secret_version ORDER BY profile_id, field, version") } }
        let before = try snapshot()
        let newPassphrase = SecureBytes(utf8: "another passphrase")
        try vault.changePassphrase(to: newPassphrase, kdf: nil)
        #expect(try snapshot() == before)
        #expect(throws: VaultError.wrongPassphrase) { _ = try vault.vault.unlock(passphrase: passphrase) }
        let reopened = try vault.vault.unlock(passphrase: newPassphrase)
        #expect(try reopened.rekey() == 4)
        let after = try snapshot()
        #expect(zip(before, after).allSatisfy { $0 != $1 })
        let again = try vault.vault.unlock(passphrase: newPassphrase)
        let all = try again.allSecrets(of: try again.verifiedProfile(named: "a")).map { "\($0.0.field.rawValue)v\($0.0.version)=\($0.1.utf8String()!)" }
        #expect(all == ["client_secretv1=secret-a", "client_secretv2=secret-a-2", "passwordv1=password-a"])
        #expect(try again.verifyAudit().firstFailure == nil)
        #expect(try again.verifyAudit().recordsChecked == 6) // init, add, add, rotate, passwd, rekey
    }
}

@Suite("schema check")
struct SchemaCheckTests {
    static let migrations = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Migrations")

    @Test("each committed Migrations/NAME.schema.json is what GRDB's migrator creates (GBG_VAULT_WRITE_SCHEMA=1 rewrites them)")
    func embeddedSchemasMatchMigrator() throws {
        for name in SQLiteFile.knownMigrations {
            let actual = try SQLiteFile.migratorSchema(upTo: name)
            #expect(try SQLiteFile.builtSchema(upTo: name) == actual, "\(name): the in-memory build differs from the migrator")
            let file = Self.migrations.appendingPathComponent("\(name).schema.json")
            if ProcessInfo.processInfo.environment["GBG_VAULT_WRITE_SCHEMA"] == "1" {
                let data = try JSONSerialization.data(withJSONObject: actual, options: [.prettyPrinted, .withoutEscapingSlashes])
                try (data + Data("\n".utf8)).write(to: file)
            }
            let committed = try JSONSerialization.jsonObject(with: Data(contentsOf: file)) as? [String]
            #expect(committed == actual, "\(name).schema.json is out of date: run GBG_VAULT_WRITE_SCHEMA=1 swift test --filter SchemaCheck")
            #expect(embeddedSchemas[name] == actual, "the embedded \(name) schema is stale: rebuild")
        }
    }
}
