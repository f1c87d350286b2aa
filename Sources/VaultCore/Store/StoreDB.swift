import Foundation
import GRDB

/// One transaction, or one read snapshot, on the vault's store: a SQLite file (GRDB) or a
/// PostgreSQL schema (PostgresNIO). Everything above the store (profiles, key slots, the
/// audit chain, verification) reads and writes through this type with plain SQL that
/// both databases run the same way: `?` placeholders, no SQLite-only functions, no
/// positional access to multi-column rows. Values travel as GRDB `DatabaseValue`s
/// (integers, text, blobs, null); a PostgreSQL row comes back as a GRDB `Row` keyed by
/// column name, so the record types decode from either store unchanged.
///
/// Statement arguments are never logged or put into errors.
public final class StoreDB {
    enum Connection {
        case sqlite(Database)
        case postgres(PostgresSession)
        /// The read-only connection of `openForReading` (``LeanReader``).
        case lean(LeanReader)
    }

    let connection: Connection
    /// Rows changed by the last ``execute(sql:arguments:)``.
    public private(set) var changesCount = 0

    init(_ db: Database) { connection = .sqlite(db) }
    init(postgres: PostgresSession) { connection = .postgres(postgres) }
    init(lean: LeanReader) { connection = .lean(lean) }

    /// True for the PostgreSQL store.
    var isPostgres: Bool {
        if case .postgres = connection { return true }
        return false
    }

    /// Runs a statement that returns no rows.
    public func execute(sql: String, arguments: [(any DatabaseValueConvertible)?] = []) throws {
        switch connection {
        case .sqlite(let db):
            try db.execute(sql: sql, arguments: StatementArguments(arguments))
            changesCount = db.changesCount
        case .postgres(let session):
            changesCount = try session.execute(sql, Self.values(arguments))
        case .lean:
            throw VaultError.failure("internal error: a write through a read-only connection")
        }
    }

    /// Runs a write that must change exactly `changes` rows, else fails with `failure`.
    /// On PostgreSQL the caller does not wait for it: it is checked with the next statement
    /// that waits, at the latest before the transaction commits; ``changesCount`` is not
    /// set by it.
    public func executeExpecting(sql: String, arguments: [(any DatabaseValueConvertible)?] = [], changes: Int, failure: any Error) throws {
        switch connection {
        case .sqlite(let db):
            try db.cachedStatement(sql: sql).execute(arguments: StatementArguments(arguments))
            changesCount = db.changesCount
            guard changesCount == changes else { throw failure }
        case .postgres(let session):
            try session.send(sql, Self.values(arguments), expectingChanges: changes, failure: failure)
        case .lean:
            throw VaultError.failure("internal error: a write through a read-only connection")
        }
    }

    /// Runs a query and returns its rows (copied, so they outlive the statement). On SQLite,
    /// queries and checked writes use the connection's prepared-statement cache: the agent
    /// runs the same few statements for every token, and compiling them (with GRDB's
    /// authorizer called for every column) was a fifth of its work on a cache hit.
    public func rows(sql: String, arguments: [(any DatabaseValueConvertible)?] = []) throws -> [Row] {
        switch connection {
        case .sqlite(let db):
            return try Row.fetchAll(db.cachedStatement(sql: sql), arguments: StatementArguments(arguments))
        case .postgres(let session):
            return try session.rows(sql, Self.values(arguments))
        case .lean(let reader):
            return try reader.rows(sql: sql, arguments: Self.values(arguments))
        }
    }

    /// The two columns of every row of a two-column query, as pairs (on the read-only
    /// connection without building rows: ``LeanReader/pairs(sql:arguments:)``).
    func pairs(sql: String, arguments: [(any DatabaseValueConvertible)?] = []) throws -> [(DatabaseValue, DatabaseValue)] {
        if case .lean(let reader) = connection {
            return try reader.pairs(sql: sql, arguments: Self.values(arguments))
        }
        return try rows(sql: sql, arguments: arguments).map { row in
            guard row.count == 2 else { throw VaultError.failure("internal error: a query of pairs returned \(row.count) columns") }
            let values = Array(row.databaseValues)
            return (values[0], values[1])
        }
    }

    /// `INSERT INTO table (columns) VALUES (?, …)[, (?, …)…]` for `rows` rows.
    static func insertSQL(into table: String, columns: [String], rows: Int = 1) -> String {
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
        if case .lean(let reader) = db.connection {
            // Its first row's only column, without building a row (a GRDB row is built from a
            // dictionary, and a read-only start makes none: see LeanReader.pairs).
            guard let value = try reader.column(sql: sql, arguments: StoreDB.values(arguments), firstRowOnly: true).first else { return nil }
            return try decode(value)
        }
        guard let row = try db.rows(sql: sql, arguments: arguments).first else { return nil }
        return try decodeOnlyColumn(row)
    }

    /// The first column of every row (the query must select exactly one column).
    static func fetchAll(_ db: StoreDB, sql: String, arguments: [(any DatabaseValueConvertible)?] = []) throws -> [Self] {
        if case .sqlite(let database) = db.connection {
            // GRDB's own cursor: no row copied (list --json on 10,000 profiles).
            return try Optional<Self>.fetchAll(database.cachedStatement(sql: sql), arguments: StatementArguments(arguments)).compactMap { $0 }
        }
        if case .lean(let reader) = db.connection {
            return try reader.column(sql: sql, arguments: StoreDB.values(arguments)).compactMap { try decode($0) }
        }
        return try db.rows(sql: sql, arguments: arguments).compactMap { try decodeOnlyColumn($0) }
    }

    fileprivate static func decodeOnlyColumn(_ row: Row) throws -> Self? {
        guard row.count == 1, let value = row.databaseValues.first else {
            throw VaultError.failure("internal error: a scalar query returned \(row.count) columns")
        }
        return try decode(value)
    }

    fileprivate static func decode(_ value: DatabaseValue) throws -> Self? {
        if value.isNull { return nil }
        guard let decoded = Self.fromDatabaseValue(value) else {
            throw VaultError.integrity("a stored value has an unexpected type")
        }
        return decoded
    }
}

extension DatabaseValueConvertible where Self: StatementColumnConvertible {
    /// The first column of every row, read straight from SQLite's columns on a file
    /// (`vault list --json` on 10,000 profiles); a NULL is an error, as in GRDB.
    static func fetchAll(_ db: StoreDB, sql: String, arguments: [(any DatabaseValueConvertible)?] = []) throws -> [Self] {
        if case .sqlite(let database) = db.connection {
            return try Self.fetchAll(database.cachedStatement(sql: sql), arguments: StatementArguments(arguments))
        }
        if case .lean(let reader) = db.connection {
            // As GRDB: a NULL is an error for a non-optional type, nil for an optional one.
            return try reader.column(sql: sql, arguments: StoreDB.values(arguments)).map { value in
                guard let decoded = Self.fromDatabaseValue(value) else {
                    throw VaultError.integrity(value.isNull ? "a stored value is missing" : "a stored value has an unexpected type")
                }
                return decoded
            }
        }
        return try db.rows(sql: sql, arguments: arguments).compactMap { try decodeOnlyColumn($0) }
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
/// record reads and writes on both stores.
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
        if case .sqlite(let database) = db.connection {
            return try Self.fetchAll(database.cachedStatement(sql: sql), arguments: StatementArguments(arguments))
        }
        return try db.rows(sql: sql, arguments: arguments).map { try Self(row: $0) }
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
    private func columnsAndValues() throws -> [(String, DatabaseValue)] {
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
        let sql = StoreDB.insertSQL(into: Self.databaseTableName, columns: pairs.map(\.0)) + (needsNumber ? " RETURNING \(generated!)" : "")
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
        try db.executeExpecting(sql: StoreDB.insertSQL(into: Self.databaseTableName, columns: pairs.map(\.0)),
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
        try db.execute(sql: StoreDB.insertSQL(into: Self.databaseTableName, columns: pairs.map(\.0)) + " ON CONFLICT ("
                       + keys.joined(separator: ", ") + ") DO UPDATE SET "
                       + set.map { "\($0.0) = excluded.\($0.0)" }.joined(separator: ", "),
                       arguments: pairs.map(\.1))
    }
}
