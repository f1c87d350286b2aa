import Foundation
import GRDB
import Testing
@testable import VaultCore

/// The metadata commands read through ``LeanReader`` (SQLite's C API) rather than a GRDB
/// connection: every table must read the same either way, odd values included.
@Suite("lean read-only connection", .serialized)
final class LeanReaderTests {
    let directory = NSTemporaryDirectory() + "gbg-vault-lean-" + UUID().uuidString

    init() {
        setenv("GBG_VAULT_TEST_ONLY_INSECURE_KDF", "1", 1)
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    /// Each test's vault goes with it.
    deinit { try? FileManager.default.removeItem(atPath: directory) }

    @Test("every row of every table reads the same through the lean connection as through GRDB, odd text and blobs included")
    func sameRows() throws {
        let path = directory + "/vault.db"
        let vault = try Vault.initialise(at: path, passphrase: SecureBytes(utf8: "lean reader test"), kdf: .testOnlyInsecure, detail: "test")
        try vault.addProfile(NewProfile(name: "a", clientID: "client-ä-😀", username: "user \"quoted\"", grant: .password, scope: nil, environment: "eu"),
                             secrets: SecretInput(clientSecret: SecureBytes(utf8: "secret-a"), password: SecureBytes(utf8: "password-a")))
        // Text only a tampered file would hold (the tables are STRICT, so types stay): the
        // lean reader must read it as GRDB does (up to its first NUL, invalid UTF-8 repaired).
        try vault.database.write { db in
            try db.execute(sql: "UPDATE audit_record SET detail = CAST(? AS TEXT) WHERE seq = 1", arguments: [Data([0x61, 0x00, 0x62, 0xFF, 0xC3])])
        }
        let tables = try vault.database.read { db in try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name") }
        #expect(tables.contains("audit_record") && tables.contains("profile"))
        let lean = try FileReader.open(at: path)
        for table in tables {
            let sql = "SELECT * FROM \(table) ORDER BY rowid"
            let viaGRDB = try vault.database.read { db in try Row.fetchAll(db, sql: sql) }
            let viaLean = try lean.read { db in try Row.fetchAll(db, sql: sql) }
            #expect(viaGRDB.count == viaLean.count, "\(table)")
            for (a, b) in zip(viaGRDB, viaLean) {
                #expect(Set(a.columnNames) == Set(b.columnNames), "\(table)")
                for name in a.columnNames { #expect(a[name] as DatabaseValue == b[name] as DatabaseValue, "\(table).\(name)") }
            }
        }
        // Single-column reads (no rows built) and whole listings, both ways.
        let sql = "SELECT client_id FROM profile ORDER BY name"
        #expect(try lean.read { db in try String.fetchAll(db, sql: sql) } == vault.database.read { db in try String.fetchAll(db, sql: sql) })
        #expect(try lean.read { db in try Int64?.fetchAll(db, sql: "SELECT expires_at FROM audit_record ORDER BY seq") }
                == vault.database.read { db in try Int64?.fetchAll(db, sql: "SELECT expires_at FROM audit_record ORDER BY seq") })
        // A scalar's first row only, pairs without rows, and the schema lines, both ways.
        let several = "SELECT seq FROM audit_record ORDER BY seq DESC"
        #expect(try lean.read { db in try Int64.fetchOne(db, sql: several) } == vault.database.read { db in try Int64.fetchOne(db, sql: several) })
        #expect(try lean.read { db in try Int64.fetchOne(db, sql: "SELECT seq FROM audit_record WHERE seq < 0") } == nil)
        let pairSQL = "SELECT seq, detail FROM audit_record ORDER BY seq"
        let pairsLean = try lean.read { db in try db.pairs(sql: pairSQL) }
        let pairsGRDB = try vault.database.read { db in try db.pairs(sql: pairSQL) }
        #expect(pairsLean.count == pairsGRDB.count && pairsLean.count >= 2)
        for (a, b) in zip(pairsLean, pairsGRDB) { #expect(a.0 == b.0 && a.1 == b.1) }
        #expect(throws: VaultError.self) { _ = try lean.read { db in try db.pairs(sql: "SELECT seq FROM audit_record") } }
        #expect(throws: VaultError.self) { _ = try lean.read { db in try Int64.fetchOne(db, sql: "SELECT seq, at FROM audit_record") } }
        #expect(try lean.read(SQLiteFile.schemaEntries) == vault.database.read(SQLiteFile.schemaEntries))
        let writable = try Vault.open(at: path), readOnly = try Vault.openForReading(at: path)
        #expect(try readOnly.profilesJSON() == writable.profilesJSON())
        #expect(try readOnly.auditJSON(AuditQuery()) == writable.auditJSON(AuditQuery()))
        // Bound arguments of every type, and a statement reused with other arguments.
        for name in ["a", "nobody"] {
            let viaLean = try lean.read { db in try Row.fetchAll(db, sql: "SELECT name, ? AS i, ? AS r, ? AS b, ? AS n FROM profile WHERE name = ?",
                                                                   arguments: [Int64(-7), 2.25, Data([0, 1, 2]), nil, name]) }
            #expect(viaLean.count == (name == "a" ? 1 : 0))
            if let row = viaLean.first {
                #expect(row["i"] as Int64 == -7 && row["r"] as Double == 2.25 && row["b"] as Data == Data([0, 1, 2]) && (row["n"] as DatabaseValue).isNull)
            }
        }
        // Writes are refused, never attempted.
        #expect(throws: VaultError.self) { try lean.write { db in try db.execute(sql: "DELETE FROM profile") } }
        #expect(try vault.database.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM profile") } == 1)
        // Errors are GRDB's codes, mapped as for any connection: not a vault, missing.
        let empty = directory + "/empty.db"
        #expect(FileManager.default.createFile(atPath: empty, contents: Data()))
        #expect(throws: VaultError.self) { _ = try FileReader.open(at: empty) }
        let garbage = directory + "/garbage.db"
        #expect(FileManager.default.createFile(atPath: garbage, contents: Data(repeating: 0x42, count: 8192)))
        do {
            _ = try FileReader.open(at: garbage)
            Issue.record("a garbage file opened")
        } catch {
            #expect(error.exitCode == 7, "\(error)")
        }
    }
}
