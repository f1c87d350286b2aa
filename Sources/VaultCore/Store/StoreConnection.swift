import Foundation
import GRDB

/// One transaction, or one read snapshot, on the vault's store. Its implementations are
/// the stores' own connections: ``SQLiteConnection`` (a file, through GRDB), ``LeanReader``
/// (the file read-only) and ``PostgresSession`` (PostgresNIO). Everything above the store
/// (profiles, key slots, the audit chain, verification) reads and writes through it with
/// plain SQL that both databases run the same way: `?` placeholders, no SQLite-only
/// functions, no positional access to multi-column rows. Values travel as GRDB
/// `DatabaseValue`s (integers, text, blobs, null); a row comes back as a GRDB `Row` keyed
/// by column name, so the record types decode the same from every store. What the two
/// dialects write differently (a listing as JSON text, a sequence after a copy) is a
/// requirement here, answered by each store in its own dialect.
///
/// Statement arguments are never logged or put into errors.
protocol StoreConnection: AnyObject {
    /// Rows changed by the last ``execute(sql:values:)``.
    var changesCount: Int { get }
    /// Runs a statement that returns no rows.
    func execute(sql: String, values: [DatabaseValue]) throws
    /// Runs a write that must change exactly `changes` rows, else fails with `failure`. A
    /// store may check it later, at the latest before the transaction commits (PostgreSQL
    /// does not wait for it: ``PostgresSession/send(_:_:expectingChanges:failure:)``);
    /// ``changesCount`` is then not set by it.
    func executeExpecting(sql: String, values: [DatabaseValue], changes: Int, failure: any Error) throws
    /// A query's rows, copied, so they outlive the statement.
    func rows(sql: String, values: [DatabaseValue]) throws -> [Row]
    /// The only column of every row of a query (or of its first row only).
    func column(sql: String, values: [DatabaseValue], firstRowOnly: Bool) throws -> [DatabaseValue]
    /// The two columns of every row of a two-column query, as pairs.
    func pairs(sql: String, values: [DatabaseValue]) throws -> [(DatabaseValue, DatabaseValue)]
    /// A query's rows decoded as records.
    func records<Record: FetchableRecord>(_ type: Record.Type, sql: String, values: [DatabaseValue]) throws -> [Record]

    /// `vault list --json`: one JSON object per profile, by name.
    func profileListing() throws -> [String]
    /// `vault audit --json`/`--jsonl`: the records selected by `filter` (a `WHERE … ORDER
    /// BY … LIMIT` clause over `audit_record`) as JSON objects, every field but the MAC and
    /// the signature (`member` when `withMember`), with their sequence numbers.
    func auditListing(filter: String, values: [DatabaseValue], withMember: Bool) throws -> [(seq: Int64, json: String)]
    /// After rows were copied in with their ids (`vault copy`): new rows of `table` are
    /// numbered after the largest `column`.
    func continueNumbering(table: String, column: String) throws
}

/// A transaction or snapshot on the vault's store.
typealias StoreDB = any StoreConnection

extension StoreConnection {
    func column(sql: String, values: [DatabaseValue], firstRowOnly: Bool) throws -> [DatabaseValue] {
        let rows = try rows(sql: sql, values: values)
        return try (firstRowOnly ? Array(rows.prefix(1)) : rows).map { row in
            guard row.count == 1, let value = row.databaseValues.first else {
                throw VaultError.failure("internal error: a scalar query returned \(row.count) columns")
            }
            return value
        }
    }

    func pairs(sql: String, values: [DatabaseValue]) throws -> [(DatabaseValue, DatabaseValue)] {
        try rows(sql: sql, values: values).map { row in
            guard row.count == 2 else { throw VaultError.failure("internal error: a query of pairs returned \(row.count) columns") }
            let values = Array(row.databaseValues)
            return (values[0], values[1])
        }
    }

    func records<Record: FetchableRecord>(_ type: Record.Type, sql: String, values: [DatabaseValue]) throws -> [Record] {
        try rows(sql: sql, values: values).map { try Record(row: $0) }
    }

    // The same with arguments of any convertible type, as call sites write them.

    func execute(sql: String, arguments: [(any DatabaseValueConvertible)?] = []) throws {
        try execute(sql: sql, values: StoreSQL.values(arguments))
    }

    func executeExpecting(sql: String, arguments: [(any DatabaseValueConvertible)?] = [], changes: Int, failure: any Error) throws {
        try executeExpecting(sql: sql, values: StoreSQL.values(arguments), changes: changes, failure: failure)
    }

    func rows(sql: String, arguments: [(any DatabaseValueConvertible)?] = []) throws -> [Row] {
        try rows(sql: sql, values: StoreSQL.values(arguments))
    }

    func pairs(sql: String, arguments: [(any DatabaseValueConvertible)?] = []) throws -> [(DatabaseValue, DatabaseValue)] {
        try pairs(sql: sql, values: StoreSQL.values(arguments))
    }
}

/// A query with its values: what a store may send ahead of a transaction's first wait
/// (``VaultStore/write(prefetching:_:)``) and hand back when the same query runs.
struct StoreQuery: Hashable, Sendable {
    let sql: String
    let values: [DatabaseValue]

    init(_ sql: String, _ arguments: [(any DatabaseValueConvertible)?] = []) {
        self.sql = sql
        values = StoreSQL.values(arguments)
    }

    init(sql: String, values: [DatabaseValue]) {
        self.sql = sql
        self.values = values
    }
}

extension StoreConnection {
    /// The rows of `query`.
    func rows(_ query: StoreQuery) throws -> [Row] {
        try rows(sql: query.sql, values: query.values)
    }
}

/// SQL text both dialects share.
enum StoreSQL {
    /// `INSERT INTO table (columns) VALUES (?, …)[, (?, …)…]` for `rows` rows.
    static func insert(into table: String, columns: [String], rows: Int = 1) -> String {
        let tuple = "(" + Array(repeating: "?", count: columns.count).joined(separator: ", ") + ")"
        return "INSERT INTO \(table) (\(columns.joined(separator: ", "))) VALUES " + Array(repeating: tuple, count: rows).joined(separator: ", ")
    }

    static func values(_ arguments: [(any DatabaseValueConvertible)?]) -> [DatabaseValue] {
        arguments.map { $0?.databaseValue ?? .null }
    }
}

// MARK: - Scalars and rows

extension DatabaseValueConvertible {
    /// The first column of the first row (the query must select exactly one column).
    static func fetchOne(_ db: StoreDB, sql: String, arguments: [(any DatabaseValueConvertible)?] = []) throws -> Self? {
        guard let value = try db.column(sql: sql, values: StoreSQL.values(arguments), firstRowOnly: true).first else { return nil }
        return try decode(value)
    }

    /// The first column of every row (the query must select exactly one column); NULLs
    /// are left out.
    static func fetchAll(_ db: StoreDB, sql: String, arguments: [(any DatabaseValueConvertible)?] = []) throws -> [Self] {
        try db.column(sql: sql, values: StoreSQL.values(arguments), firstRowOnly: false).compactMap { try decode($0) }
    }

    fileprivate static func decode(_ value: DatabaseValue) throws -> Self? {
        if value.isNull { return nil }
        guard let decoded = Self.fromDatabaseValue(value) else {
            throw VaultError.integrity("a stored value has an unexpected type")
        }
        return decoded
    }
}

extension Row {
    static func fetchOne(_ db: StoreDB, sql: String, arguments: [(any DatabaseValueConvertible)?] = []) throws -> Row? {
        try db.rows(sql: sql, arguments: arguments).first
    }

    static func fetchAll(_ db: StoreDB, sql: String, arguments: [(any DatabaseValueConvertible)?] = []) throws -> [Row] {
        try db.rows(sql: sql, arguments: arguments)
    }
}

// MARK: - Records

/// A record type stored in one table, with the columns of its primary key. Its SQL is
/// generated here from GRDB's encoding of the record (`databaseDictionary`), so the same
/// record reads and writes on every store. (GRDB's own `insert`/`update`/`save` need a
/// GRDB `Database`, which a PostgreSQL session is not; these are the same operations in
/// the SQL both dialects share.)
protocol StoreRecord: FetchableRecord, EncodableRecord, TableRecord {
    /// The primary key's columns.
    static var keyColumns: [String] { get }
    /// A column the database numbers on insert when the record leaves it nil.
    static var generatedColumn: String? { get }
    /// Called after an insert that let the database number ``generatedColumn``.
    mutating func storeDidInsert(generated: Int64)
}

extension StoreRecord {
    static var generatedColumn: String? { nil }
    mutating func storeDidInsert(generated: Int64) {}

    static func fetchAll(_ db: StoreDB, sql: String, arguments: [(any DatabaseValueConvertible)?] = []) throws -> [Self] {
        try db.records(Self.self, sql: sql, values: StoreSQL.values(arguments))
    }

    static func fetchOne(_ db: StoreDB, sql: String, arguments: [(any DatabaseValueConvertible)?] = []) throws -> Self? {
        try db.rows(sql: sql, arguments: arguments).first.map { try Self(row: $0) }
    }

    /// Every row, in `orderBy` order (column names, never user input).
    static func fetchAll(_ db: StoreDB, orderBy: String? = nil) throws -> [Self] {
        try fetchAll(db, sql: "SELECT * FROM \(databaseTableName)" + (orderBy.map { " ORDER BY \($0)" } ?? ""))
    }

    /// The rows whose `column` equals `value`, in `orderBy` order.
    static func fetchAll(_ db: StoreDB, where column: String, is value: (any DatabaseValueConvertible)?, orderBy: String? = nil) throws -> [Self] {
        try fetchAll(db, sql: "SELECT * FROM \(databaseTableName) WHERE \(column) = ?" + (orderBy.map { " ORDER BY \($0)" } ?? ""),
                     arguments: [value])
    }

    /// The row with this single-column primary key.
    static func fetchOne(_ db: StoreDB, key: (any DatabaseValueConvertible)?) throws -> Self? {
        precondition(keyColumns.count == 1)
        return try fetchOne(db, sql: "SELECT * FROM \(databaseTableName) WHERE \(keyColumns[0]) = ?", arguments: [key])
    }

    /// The row with this (possibly composite) primary key.
    static func fetchOne(_ db: StoreDB, key: [String: (any DatabaseValueConvertible)?]) throws -> Self? {
        let columns = keyColumns
        precondition(Set(key.keys) == Set(columns))
        return try fetchOne(db, sql: "SELECT * FROM \(databaseTableName) WHERE " + columns.map { "\($0) = ?" }.joined(separator: " AND "),
                            arguments: columns.map { key[$0]! })
    }

    /// Deletes the row with this single-column primary key; true if there was one.
    @discardableResult
    static func deleteOne(_ db: StoreDB, key: (any DatabaseValueConvertible)?) throws -> Bool {
        precondition(keyColumns.count == 1)
        try db.execute(sql: "DELETE FROM \(databaseTableName) WHERE \(keyColumns[0]) = ?", arguments: [key])
        return db.changesCount > 0
    }

    /// The record's columns and values, in a fixed order.
    func columnsAndValues() throws -> [(String, DatabaseValue)] {
        try databaseDictionary.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    /// Inserts the record (a duplicate key fails).
    func insert(_ db: StoreDB) throws {
        var copy = self
        try copy.insertReturningGenerated(db)
    }

    /// Inserts the record; a nil ``generatedColumn`` is numbered by the database.
    mutating func insertReturningGenerated(_ db: StoreDB) throws {
        var pairs = try columnsAndValues()
        let generated = Self.generatedColumn
        if let generated { pairs.removeAll { $0.0 == generated && $0.1.isNull } }
        let needsNumber = generated != nil && !pairs.contains { $0.0 == generated }
        let sql = StoreSQL.insert(into: Self.databaseTableName, columns: pairs.map(\.0)) + (needsNumber ? " RETURNING \(generated!)" : "")
        if needsNumber {
            let rows = try db.rows(sql: sql, arguments: pairs.map(\.1))
            guard let number = rows.first?.databaseValues.first.flatMap(Int64.fromDatabaseValue) else {
                throw VaultError.failure("the database did not number the new row")
            }
            storeDidInsert(generated: number)
        } else {
            try db.execute(sql: sql, arguments: pairs.map(\.1))
            guard db.changesCount == 1 else { throw VaultError.failure("a row was not inserted") }
        }
    }

    /// Inserts the record, which must add exactly one row (else `failure`); checked later
    /// on PostgreSQL (``StoreDB/executeExpecting(sql:arguments:changes:failure:)``).
    func insert(_ db: StoreDB, orFail failure: any Error) throws {
        let pairs = try columnsAndValues()
        try db.executeExpecting(sql: StoreSQL.insert(into: Self.databaseTableName, columns: pairs.map(\.0)),
                                arguments: pairs.map(\.1), changes: 1, failure: failure)
    }

    /// Updates every non-key column of the row with this record's key; the caller checks
    /// `db.changesCount` where a missing row matters.
    func update(_ db: StoreDB) throws {
        let pairs = try columnsAndValues()
        let keys = Self.keyColumns
        let set = pairs.filter { !keys.contains($0.0) }
        let where_ = keys.map { key in (key, pairs.first { $0.0 == key }?.1 ?? .null) }
        try db.execute(sql: "UPDATE \(Self.databaseTableName) SET " + set.map { "\($0.0) = ?" }.joined(separator: ", ")
                       + " WHERE " + where_.map { "\($0.0) = ?" }.joined(separator: " AND "),
                       arguments: set.map(\.1) + where_.map(\.1))
    }

    /// Inserts the record, or replaces the non-key columns of the row with its key.
    func save(_ db: StoreDB) throws {
        let pairs = try columnsAndValues()
        let keys = Self.keyColumns
        let set = pairs.filter { !keys.contains($0.0) }
        try db.execute(sql: StoreSQL.insert(into: Self.databaseTableName, columns: pairs.map(\.0)) + " ON CONFLICT ("
                       + keys.joined(separator: ", ") + ") DO UPDATE SET "
                       + set.map { "\($0.0) = excluded.\($0.0)" }.joined(separator: ", "),
                       arguments: pairs.map(\.1))
    }
}
