import Foundation
import GRDB
import Testing
import VaultTestSupport
@testable import VaultCore

/// The records a token cache hit reads are decoded column by column (`ExactColumns`),
/// falling back to GRDB's `Decodable` decoding for anything unexpected. Whatever the
/// column-by-column reading accepts must be exactly what the `Decodable` way reads.
@Suite("records read column by column")
struct RecordDecodingTests {
    /// A column's value: usually of the type the column holds, sometimes NULL, another
    /// type, or a value that only converts one way.
    static func randomValue(_ generator: inout SeededGenerator) -> DatabaseValue {
        switch generator.next() % 9 {
        case 0: return .null
        case 1, 2: return Int64(bitPattern: generator.next() % 2 == 0 ? generator.next() % 1000 : generator.next()).databaseValue
        case 3: return (generator.next() % 2 == 0 ? 2.0 : 2.5).databaseValue
        case 4, 5: return ["", "acme", "é", "1", "2026-11-29T00:00:00Z", "\u{0}"][Int(generator.next() % 6)].databaseValue
        case 6, 7: return Data((0..<Int(generator.next() % 40)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }).databaseValue
        default: return Data("text in a blob".utf8).databaseValue
        }
    }

    /// A value of the column's own kind (`i` integer, `t` text, `b` blob).
    static func fittingValue(_ kind: Character, _ generator: inout SeededGenerator) -> DatabaseValue {
        switch kind {
        case "i": return Int64(generator.next() % 1000).databaseValue
        case "t": return ["acme", "é", "2026-11-29T00:00:00Z"][Int(generator.next() % 3)].databaseValue
        default: return Data((0..<Int(generator.next() % 40)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }).databaseValue
        }
    }

    /// A row with (most of) `columns` (name:kind), in a shuffled order, mostly with values
    /// of their kind, sometimes with an extra column.
    static func randomRow(_ columns: [String], _ generator: inout SeededGenerator) -> Row {
        var pairs: [(String, DatabaseValue)] = []
        for spec in columns where generator.next() % 40 != 0 {
            let parts = spec.split(separator: ":")
            let value = generator.next() % 10 < 8 ? fittingValue(parts[1].first!, &generator) : randomValue(&generator)
            pairs.append((String(parts[0]), value))
        }
        if generator.next() % 4 == 0 { pairs.append(("newer_column", randomValue(&generator))) }
        pairs.shuffle(using: &generator)
        return Row(pairs.map { ($0.0, $0.1 as (any DatabaseValueConvertible)?) }.reduce(into: [String: (any DatabaseValueConvertible)?]()) { $0[$1.0] = $1.1 })
    }

    static func encoded(_ value: some Encodable) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return try encoder.encode(value)
    }

    static func compare<T: Codable & FetchableRecord>(_ type: T.Type, columns: [String], exact: (Row) -> T?, seed: UInt64) throws {
        var generator = SeededGenerator(seed: seed)
        var accepted = 0
        for _ in 0..<20_000 {
            let row = randomRow(columns, &generator)
            let slow = try? DecodedByGRDB<T>(row: row).value
            guard let fast = exact(row) else { continue }
            accepted += 1
            let decoded = try #require(slow, "read column by column, refused by Decodable: \(row)")
            #expect(try encoded(fast) == encoded(decoded), "read differently: \(row)")
            #expect(try encoded(T(row: row)) == encoded(decoded))
        }
        #expect(accepted > 500, "\(T.self): enough rows were read column by column to compare (\(accepted))")
    }

    @Test("profile, environment, cached token and audit head rows: the same records both ways")
    func sameAsDecodable() throws {
        try Self.compare(ProfileRecord.self, columns: ["id:i", "uid:b", "name:t", "client_id:t", "username:t", "grant_type:t", "scope:t",
                                                      "environment:t", "client_secret_version:i", "password_version:i", "created_at:t",
                                                      "updated_at:t", "mac:b"],
                         exact: { ProfileRecord(exactColumns: $0) }, seed: 17_2026_1129)
        try Self.compare(EnvironmentRecord.self, columns: ["name:t", "uid:b", "token_url:t", "api_base:t", "created_at:t", "mac:b"],
                         exact: { EnvironmentRecord(exactColumns: $0) }, seed: 19_2026_1129)
        try Self.compare(TokenCacheRecord.self, columns: ["profile_id:i", "environment:t", "environment_uid:b", "expires_at:i",
                                                         "client_secret_version:i", "password_version:i", "nonce:b", "ciphertext:b"],
                         exact: { TokenCacheRecord(exactColumns: $0) }, seed: 23_2026_1129)
        try Self.compare(AuditHeadRecord.self, columns: ["id:i", "seq:i", "key_epoch:i", "last_mac:b", "mac:b"],
                         exact: { AuditHeadRecord(exactColumns: $0) }, seed: 29_2026_1129)
    }

    @Test("a well-formed stored row is read column by column")
    func wellFormedRows() throws {
        let row: Row = ["profile_id": 3, "environment": "eu", "environment_uid": Data([1, 2]), "expires_at": 99,
                        "client_secret_version": 2, "password_version": nil, "nonce": Data([3]), "ciphertext": Data([4])]
        let record = try #require(TokenCacheRecord(exactColumns: row))
        #expect(record.profileID == 3 && record.environment == "eu" && record.passwordVersion == nil && record.ciphertext == Data([4]))
    }
}
