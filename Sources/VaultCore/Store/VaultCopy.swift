import Foundation
import GRDB

/// `vault copy --to DEST`: the whole vault, sealed, from one store to another (a file to
/// PostgreSQL, PostgreSQL to a file, or file to file): every table row for row, in one
/// read snapshot of the source and one transaction at the destination, so the copy is
/// complete or absent. Nothing is decrypted: the sealed values, MACs, key slots and
/// signatures are bound to the vault id, uids, versions and sequence numbers (FORMAT.md
/// §5–§6), never to a store or a row id, so they verify unchanged at the destination;
/// `vault verify --vault DEST` proves it with the keys.
public enum VaultCopy {
    /// The tables in an order that satisfies their foreign keys, with their key order.
    static let tables: [(name: String, order: String)] = [
        ("vault_header", "id"), ("environment", "name"), ("profile", "id"), ("secret_version", "profile_id, field, version"),
        ("token_cache", "profile_id, environment"), ("member", "name"), ("key_slot", "member"),
        ("retired_audit_key", "key_epoch"), ("audit_record", "seq"), ("audit_head", "id"),
    ]

    /// Rows read and written per statement batch (the audit trail can hold millions).
    static let page = 5_000

    public struct Summary: Sendable {
        public var rows: [String: Int] = [:]
    }

    /// Copies `source` to a new vault at `destination` (a path or a postgres:// URL),
    /// which must not exist yet.
    public static func copy(_ source: Vault, to destination: String) throws(VaultError) -> Summary {
        guard source.database.pendingMigrations.isEmpty else {
            throw .usage("this vault is in an older format; unlock it once (e.g. `vault upgrade`) before copying it")
        }
        if source.database.isSameVault(as: destination) {
            throw .usage("the destination is the vault itself")
        }
        var summary = Summary()
        try source.database.read { from in
            _ = try Stores.create(at: destination) { to in
                for table in tables {
                    summary.rows[table.name] = try copyTable(table.name, order: table.order, from: from, to: to)
                    try FaultPoint.reached(FaultPoint.copyTable)
                }
                // Rows keep their ids; new profiles are numbered after them.
                try to.continueNumbering(table: "profile", column: "id")
            }
        }
        return summary
    }

    /// Rows per INSERT statement.
    static let rowsPerInsert = 200

    private static func copyTable(_ table: String, order: String, from: StoreDB, to: StoreDB) throws -> Int {
        var copied = 0
        var lastSeq: Int64 = 0
        while true {
            // The audit trail pages by sequence number; the other tables are small.
            let rows = table == "audit_record"
                ? try Row.fetchAll(from, sql: "SELECT * FROM audit_record WHERE seq > ? ORDER BY seq LIMIT \(page)", arguments: [lastSeq])
                : try Row.fetchAll(from, sql: "SELECT * FROM \(table) ORDER BY \(order) LIMIT \(page) OFFSET \(copied)")
            var start = 0
            while start < rows.count {
                let batch = rows[start..<min(rows.count, start + rowsPerInsert)]
                let columns = Array(batch.first!.columnNames)
                var values: [(any DatabaseValueConvertible)?] = []
                for row in batch {
                    for column in columns { values.append(row[column] as DatabaseValue) }
                }
                try to.execute(sql: StoreSQL.insert(into: table, columns: columns, rows: batch.count), arguments: values)
                guard to.changesCount == batch.count else { throw VaultError.failure("the copy of \(table) was incomplete") }
                start += batch.count
            }
            copied += rows.count
            if table == "audit_record", let last = rows.last { lastSeq = last["seq"] }
            if rows.count < page { return copied }
        }
    }
}
