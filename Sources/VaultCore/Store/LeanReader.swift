import CSQLiteHardening
import Foundation
import GRDB

/// The read-only connection of ``FileReader`` (`list`, `show`,
/// `history`, `audit`, `env list/show`, `member list`, shell completion): SQLite's C API
/// through the `CSQLiteHardening` shims, one connection, no dispatch queue.
///
/// Why not a GRDB queue: opening one registers GRDB's default SQL functions and
/// collations, installs its statement authorizer (called for every column of every
/// statement compiled) and starts a dispatch queue, which together cost more than
/// `vault audit`'s query on a million records; these commands are held to the sqlite3
/// shell's time (BENCHMARKS.md, the targets). The connection is hardened exactly as GRDB's
/// (`gbgv_sqlite_harden`: defensive mode, untrusted schema, cell-size checks; double-quoted
/// string literals off; the same busy timeout), the same schema and identity checks run
/// on it, its rows are GRDB `Row`s, and its errors GRDB `DatabaseError`s with SQLite's
/// result code, so everything above reads the same and fails the same.
final class LeanReader: SQLiteDialect, @unchecked Sendable {
    private var connection: OpaquePointer?
    private let lock = NSLock()
    /// Prepared statements by SQL text (a list: a handful per process, and a
    /// `Dictionary<String, OpaquePointer>` cost more to set up than to search).
    private var statements: [(sql: String, statement: OpaquePointer)] = []

    /// Opens `path` read-only; with `uri`, `path` is an SQLite URI (``SQLiteFile/immutableURI(_:)``).
    init(path: String, uri: Bool = false, busyTimeout: TimeInterval) throws {
        var handle: OpaquePointer?
        let code = gbgv_open_readonly(path, uri ? 1 : 0, Int32(min(busyTimeout * 1000, Double(Int32.max))), &handle)
        connection = handle
        guard code == 0 else {
            let error = Self.error(code, handle)
            close()
            throw error
        }
    }

    deinit { close() }

    private func close() {
        for entry in statements { gbgv_finalize(entry.statement) }
        statements.removeAll()
        if let connection { gbgv_close(connection) }
        connection = nil
    }

    private static func error(_ code: Int32, _ handle: OpaquePointer?) -> DatabaseError {
        let message = handle.map { String(cString: gbgv_sqlite_errmsg($0)) } ?? "cannot open the database"
        return DatabaseError(resultCode: ResultCode(rawValue: code), message: message)
    }

    private func failure(_ code: Int32) -> DatabaseError { Self.error(code, connection) }

    /// Runs `body` in one read transaction (one snapshot), as GRDB's `read` does.
    func read<T>(_ body: (LeanReader) throws -> T) throws -> T {
        try lock.withLock {
            guard let connection else { throw DatabaseError(resultCode: .SQLITE_MISUSE, message: "the connection is closed") }
            let code = gbgv_sqlite_exec_static(connection, "BEGIN DEFERRED")
            guard code == 0 else { throw failure(code) }
            defer { _ = gbgv_sqlite_exec_static(connection, "ROLLBACK") }
            return try body(self)
        }
    }

    /// The rows of one statement (prepared once per connection and reused).
    func rows(sql: String, values arguments: [DatabaseValue]) throws -> [Row] {
        var rows: [Row] = []
        try run(sql: sql, arguments: arguments) { statement, names in
            var values: [String: (any DatabaseValueConvertible)?] = [:]
            for column in names.indices { values[names[column]] = Self.value(statement, Int32(column)) }
            rows.append(Row(values))
        }
        return rows
    }

    /// The only column of every row, without building rows (`vault list --json` reads
    /// 10,000 JSON strings this way), or of the first row only (`firstRowOnly`).
    func column(sql: String, values arguments: [DatabaseValue], firstRowOnly: Bool) throws -> [DatabaseValue] {
        var values: [DatabaseValue] = []
        try run(sql: sql, arguments: arguments, firstRowOnly: firstRowOnly) { statement, names in
            guard names.count == 1 else { throw VaultError.failure("internal error: a scalar query returned \(names.count) columns") }
            values.append(Self.value(statement, 0))
        }
        return values
    }

    /// The two columns of every row as a pair, without building rows (the audit listing's
    /// sequence numbers and JSON texts). A row as GRDB builds it needs a dictionary, and the
    /// first dictionary of a process costs a scan of every protocol conformance record.
    func pairs(sql: String, values arguments: [DatabaseValue]) throws -> [(DatabaseValue, DatabaseValue)] {
        var pairs: [(DatabaseValue, DatabaseValue)] = []
        try run(sql: sql, arguments: arguments) { statement, names in
            guard names.count == 2 else { throw VaultError.failure("internal error: a query of pairs returned \(names.count) columns") }
            pairs.append((Self.value(statement, 0), Self.value(statement, 1)))
        }
        return pairs
    }

    /// One column's value, read as GRDB reads it (text with `String(cString:)`, so a
    /// value reads the same through either connection).
    private static func value(_ statement: OpaquePointer, _ index: Int32) -> DatabaseValue {
        switch gbgv_column_type(statement, index) {
        case 1: return gbgv_column_int64(statement, index).databaseValue
        case 2: return gbgv_column_double(statement, index).databaseValue
        case 3: return (gbgv_column_text(statement, index).map { String(cString: $0) } ?? "").databaseValue
        case 4:
            let count = Int(gbgv_column_bytes(statement, index))
            return (gbgv_column_blob(statement, index).map { Data(bytes: $0, count: count) } ?? Data()).databaseValue
        default: return .null
        }
    }

    private func run(sql: String, arguments: [DatabaseValue], firstRowOnly: Bool = false,
                     row: (OpaquePointer, [String]) throws -> Void) throws {
        guard let connection else { throw DatabaseError(resultCode: .SQLITE_MISUSE, message: "the connection is closed") }
        let statement: OpaquePointer
        if let cached = statements.first(where: { $0.sql == sql }) {
            statement = cached.statement
        } else {
            var prepared: OpaquePointer?
            let code = gbgv_prepare(connection, sql, &prepared)
            guard code == 0, let prepared else { throw failure(code) }
            statement = prepared
            statements.append((sql, prepared))
        }
        defer { sqlite3Reset(statement) }
        guard Int(gbgv_bind_parameter_count(statement)) == arguments.count else {
            throw DatabaseError(resultCode: .SQLITE_MISUSE, message: "wrong number of statement arguments")
        }
        for (offset, value) in arguments.enumerated() {
            let index = Int32(offset + 1)
            let code: Int32
            switch value.storage {
            case .null: code = gbgv_bind_null(statement, index)
            case .int64(let number): code = gbgv_bind_int64(statement, index, number)
            case .double(let number): code = gbgv_bind_double(statement, index, number)
            case .string(let text): code = gbgv_bind_text(statement, index, text, Int32(text.utf8.count))
            case .blob(let data): code = data.withUnsafeBytes { gbgv_bind_blob(statement, index, $0.baseAddress ?? UnsafeRawPointer(bitPattern: 1), Int32($0.count)) }
            }
            guard code == 0 else { throw failure(code) }
        }
        let names = (0..<Int(gbgv_column_count(statement))).map { String(cString: gbgv_column_name(statement, Int32($0))) }
        while true {
            let code = gbgv_step(statement)
            if code == 101 { return } // SQLITE_DONE
            guard code == 100 else { throw failure(code) } // SQLITE_ROW
            try row(statement, names)
            if firstRowOnly { return }
        }
    }

    private func sqlite3Reset(_ statement: OpaquePointer) {
        _ = gbgv_reset(statement)
    }
}

// A read-only connection: every write is refused.
extension LeanReader {
    var changesCount: Int { 0 }

    func execute(sql: String, values: [DatabaseValue]) throws {
        throw VaultError.failure("internal error: a write through a read-only connection")
    }

    func executeExpecting(sql: String, values: [DatabaseValue], changes: Int, failure: any Error) throws {
        throw VaultError.failure("internal error: a write through a read-only connection")
    }
}
