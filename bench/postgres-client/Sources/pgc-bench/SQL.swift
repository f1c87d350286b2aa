import Foundation
import PostgresNIO

/// The statements of one token cache hit through the agent on a team vault, as the
/// vault's code writes them (`?` placeholders; PostgresStore rewrites them to `$n`), and
/// as PostgreSQL's log showed them for `vault token b` (bench/results/postgres-client.md).
enum SQL {
    static let tables = ["vault_header", "environment", "profile", "secret_version", "token_cache", "audit_record", "audit_head",
                         "retired_audit_key", "member", "key_slot", "schema_migrations"]

    // PostgresStore.write: the transaction and the writer lock (sent, not waited for).
    static let begin = "BEGIN ISOLATION LEVEL READ COMMITTED"
    static let lock = "LOCK TABLE vault_header, environment, profile, secret_version, token_cache, audit_record, audit_head, retired_audit_key, member, key_slot, schema_migrations IN EXCLUSIVE MODE"
    static let commit = "COMMIT"

    // UnlockedVault.expectCurrent
    static let header = "SELECT vault_id, format_version, key_epoch FROM vault_header WHERE id = 1"
    // Profiles.verified(named:) / environment(named:) (GRDB's fetchOne by key)
    static let profile = "SELECT * FROM profile WHERE name = ?"
    static let environment = "SELECT * FROM environment WHERE name = ?"
    // VaultTransaction.checkVersionSequence
    static let versions = """
        SELECT field, count(*) AS n, min(version) AS lo, max(version) AS hi
        FROM secret_version WHERE profile_id = ? GROUP BY field
        """
    // TokenCacheRecord.fetchOne(key:)
    static let tokenCache = "SELECT * FROM token_cache WHERE profile_id = ? AND environment = ?"
    // AuditTrail: the head and the newest record in one query
    static let auditHead = """
        SELECT h.*, (SELECT seq FROM audit_record ORDER BY seq DESC LIMIT 1) AS newest_seq,
            (SELECT mac FROM audit_record ORDER BY seq DESC LIMIT 1) AS newest_mac
        FROM audit_head h WHERE h.id = 1
        """
    // StoreDB.insertSQL (columns sorted), checked write (PostgresStore adds RETURNING 1)
    static let auditInsert = "INSERT INTO audit_record (action, at, attempts, detail, duration_ms, environment, expires_at, expires_in, grant_type, http_status, key_epoch, mac, member, oauth_error, outcome, profile, request_id, seq, signature, token_fingerprint, token_type, token_url) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    // AuditTrail headSQL, checked write
    static let auditHeadUpsert = """
        INSERT INTO audit_head (id, seq, key_epoch, last_mac, mac) VALUES (1, ?, ?, ?, ?)
        ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, key_epoch = excluded.key_epoch,
            last_mac = excluded.last_mac, mac = excluded.mac
        """
    // PostgresStore.fingerprintSQL, on a second session
    static let fingerprint = """
        WITH rel AS (SELECT c.oid, c.xmin FROM pg_class c
                     WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = ?) AND c.relname = ANY(string_to_array(?, ','))),
        parts(x) AS (
          SELECT n.xmin FROM pg_namespace n WHERE n.nspname = ?
          UNION ALL SELECT xmin FROM rel
          UNION ALL SELECT a.xmin FROM pg_attribute a WHERE a.attrelid IN (SELECT oid FROM rel)
          UNION ALL SELECT d.xmin FROM pg_attrdef d WHERE d.adrelid IN (SELECT oid FROM rel)
          UNION ALL SELECT k.xmin FROM pg_constraint k WHERE k.conrelid IN (SELECT oid FROM rel)
          UNION ALL SELECT t.xmin FROM pg_trigger t WHERE t.tgrelid IN (SELECT oid FROM rel)
          UNION ALL SELECT x.xmin FROM pg_index x WHERE x.indrelid IN (SELECT oid FROM rel)
          UNION ALL SELECT r.xmin FROM pg_rewrite r WHERE r.ev_class IN (SELECT oid FROM rel)
          UNION ALL SELECT p.xmin FROM pg_policy p WHERE p.polrelid IN (SELECT oid FROM rel)
          UNION ALL SELECT i.xmin FROM pg_inherits i WHERE i.inhparent IN (SELECT oid FROM rel))
        SELECT count(*) || ':' || coalesce(sum(x::text::bigint), 0) AS fingerprint FROM parts
        """

    /// PostgresSession.numberedPlaceholders: `?` as `$1`, `$2`, … outside quoted text.
    static func numbered(_ sql: String) -> String {
        var out = ""
        var number = 0
        var quote: Character?
        for character in sql {
            if let open = quote {
                if character == open { quote = nil }
                out.append(character)
            } else if character == "'" || character == "\"" {
                quote = character
                out.append(character)
            } else if character == "?" {
                number += 1
                out += "$\(number)"
            } else {
                out.append(character)
            }
        }
        return out
    }

    /// PostgresSession.returningEachRow
    static func returningEachRow(_ sql: String) -> String? {
        let head = sql.prefix(7).uppercased()
        guard head.hasPrefix("INSERT ") || head.hasPrefix("UPDATE ") || head.hasPrefix("DELETE "),
              !sql.uppercased().contains("RETURNING"), !sql.contains(";") else { return nil }
        return sql + " RETURNING 1"
    }
}

/// A decoded cell (the vault decodes every cell into a GRDB DatabaseValue the same way).
enum Cell: Equatable {
    case null, int(Int64), double(Double), text(String), bytes([UInt8])

    var int: Int64? { if case .int(let v) = self { return v } else { return nil } }
    var text: String? { if case .text(let v) = self { return v } else { return nil } }
}
typealias DecodedRow = [String: Cell]

/// PostgresSession.row: each cell decoded by PostgresNIO's decoder for its type, in
/// `format` when given (the legacy PreparedQuery mislabels its cells, vapor/postgres-nio#303).
func decodeCells(_ row: PostgresRow, format forced: PostgresFormat? = nil) throws -> DecodedRow {
    var values: DecodedRow = [:]
    for cell in row {
        guard var bytes = cell.bytes else {
            values[cell.columnName] = .null
            continue
        }
        let format = forced ?? cell.format
        let context = PostgresDecodingContext.default
        switch cell.dataType {
        case .int8, .int4, .int2, .oid:
            values[cell.columnName] = .int(try Int64(from: &bytes, type: cell.dataType, format: format, context: context))
        case .bool:
            values[cell.columnName] = .int(try Bool(from: &bytes, type: cell.dataType, format: format, context: context) ? 1 : 0)
        case .float8, .float4:
            values[cell.columnName] = .double(try Double(from: &bytes, type: cell.dataType, format: format, context: context))
        case .bytea:
            var buffer = ByteBuffer(from: &bytes, type: cell.dataType, format: format, context: context)
            values[cell.columnName] = .bytes(buffer.readBytes(length: buffer.readableBytes) ?? [])
        default:
            values[cell.columnName] = .text(try String(from: &bytes, type: cell.dataType, format: format, context: context))
        }
    }
    return values
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The values one cache hit binds (the same in every variant). The audit record's MAC and
/// signature are random bytes of the real lengths (the vault computes them; no crypto here).
struct Workload: Sendable {
    let schema: String
    let profileName = "b"
    let environmentName = "local"
    let profileID: Int64 = 1
    let tokenURL = "http://127.0.0.1:43345/as/token.oauth2"
    let tokenFingerprint = "5a2a19f81a7aebbc7ce5e9dc788df634"
    let mac: [UInt8] = (0..<32).map { _ in UInt8.random(in: 0...255) }
    let headMAC: [UInt8] = (0..<32).map { _ in UInt8.random(in: 0...255) }
    let signature: [UInt8] = (0..<64).map { _ in UInt8.random(in: 0...255) }
    var tableList: String { SQL.tables.joined(separator: ",") }
    /// The fingerprint the schema had when the benchmark set it up.
    var expectedFingerprint = ""
    /// False (`--digest 0`): no schema digest on the second connection (to see its share).
    var withDigest = true

    init(schema: String) { self.schema = schema }
}

/// Where the time of one transaction goes (`--phases 1`): timestamps at fixed points of
/// each variant (1: BEGIN and the lock done, 2: the six reads done, 3: the two audit writes
/// done, 4: the schema digest received, 5: COMMIT done; 0 is the start, 6 the end after the
/// connection is back in its pool). Variants run one at a time, so one set of marks will do.
enum Phases {
    nonisolated(unsafe) static var enabled = false
    nonisolated(unsafe) static var marks = [UInt64](repeating: 0, count: 7)
    @inline(__always) static func mark(_ index: Int) {
        if enabled { marks[index] = DispatchTime.now().uptimeNanoseconds }
    }
    static let names = ["checkout + BEGIN + LOCK", "6 SELECTs", "2 audit writes", "wait for digest", "COMMIT", "release"]
}
