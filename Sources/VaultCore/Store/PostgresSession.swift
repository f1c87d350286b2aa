import Foundation
import GRDB
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import PostgresNIO

/// One PostgreSQL connection used synchronously: each statement waits for its answer
/// on the calling thread (never an event-loop thread; PostgresNIO runs the connection on
/// its own). One transaction at a time per session.
///
/// Why `PostgresConnection` with named prepared statements (cached by SQL text, `?`
/// numbered `$n`, values bound as `PostgresData`), statements sent ahead, and a pool of
/// its own, rather than `PostgresClient` with interpolated binds, which PostgresNIO
/// documents: the team vault's cache hit must cost at most 1.5 times a file vault's
/// (1.31–1.44 measured), and interpolated binds are parsed and planned again on every call,
/// which added 0.95–2.04 ms to a cache hit's twelve statements (ratio 1.6–1.8);
/// `PostgresPreparedStatement` types on `PostgresClient` added 0.21–0.55 ms, and need one
/// type per statement text, which the records' generated SQL is not
/// (`bench/results/postgres-client.md`, `bench/postgres-client/`). Only this file and the
/// PostgresStore files talk to PostgresNIO.
final class PostgresSession: @unchecked Sendable {
    let connection: PostgresConnection
    /// PostgresNIO's logger: a no-op, so no statement, bind or row ever reaches a log.
    static let logger = Logger(label: "gbg-vault.postgres", factory: { _ in SwiftLogNoOpLogHandler() })

    /// Rows changed by the last ``execute(sql:values:)``.
    private var lastChanges = 0

    init(connection: PostgresConnection) {
        self.connection = connection
        let watch = closeWatch
        connection.closeFuture.whenComplete { _ in watch.closed() }
    }

    /// What to fail when the connection closes: every wait in progress (``awaited(_:)``).
    private let closeWatch = CloseWatch()

    final class CloseWatch: Sendable {
        private let state = NIOLockedValueBox<(closed: Bool, next: Int, waiting: [Int: @Sendable () -> Void])>((false, 0, [:]))

        /// Registers `fail` to run when the connection closes; nil (and `fail` not kept)
        /// when it already has.
        func register(_ fail: @escaping @Sendable () -> Void) -> Int? {
            state.withLockedValue { state in
                guard !state.closed else { return nil }
                state.next += 1
                state.waiting[state.next] = fail
                return state.next
            }
        }

        func unregister(_ key: Int?) {
            guard let key else { return }
            _ = state.withLockedValue { $0.waiting.removeValue(forKey: key) }
        }

        func closed() {
            let waiting = state.withLockedValue { state -> [@Sendable () -> Void] in
                state.closed = true
                defer { state.waiting.removeAll() }
                return Array(state.waiting.values)
            }
            waiting.forEach { $0() }
        }
    }

    /// Waits for `future`, or fails as a lost connection once the connection has closed:
    /// PostgresNIO 1.33.2 can leave a statement's promise pending for ever when the server
    /// ends the connection in the middle of it (an outside review's `vault token
    /// --no-agent` waited more than ten minutes in a `prepare` after `pg_terminate_backend`).
    func awaited<T: Sendable>(_ future: EventLoopFuture<T>) throws -> T {
        let promise = future.eventLoop.makePromise(of: T.self)
        let settled = NIOLockedValueBox(false)
        let settle: @Sendable (Result<T, any Error>) -> Void = { result in
            let first = settled.withLockedValue { done -> Bool in
                defer { done = true }
                return !done
            }
            if first { promise.completeWith(result) }
        }
        let key = closeWatch.register { settle(.failure(PostgresError.connectionClosed)) }
        if key == nil { settle(.failure(PostgresError.connectionClosed)) }
        let watch = closeWatch
        future.whenComplete { result in
            watch.unregister(key)
            settle(result)
        }
        return try promise.futureResult.wait()
    }

    private func query(_ sql: String, _ values: [DatabaseValue]) throws -> PostgresQuery {
        var bindings = PostgresBindings(capacity: values.count)
        for value in values {
            switch value.storage {
            case .null: bindings.appendNull()
            case .int64(let number): bindings.append(number)
            case .double(let number): bindings.append(number)
            case .string(let text): bindings.append(text)
            case .blob(let data): bindings.append(ByteBuffer(bytes: data))
            }
        }
        return PostgresQuery(unsafeSQL: Self.numberedPlaceholders(sql), binds: bindings)
    }

    /// `?` placeholders (SQLite's) as `$1`, `$2`, … (PostgreSQL's), outside quoted text.
    static func numberedPlaceholders(_ sql: String) -> String {
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

    /// Statements sent but not yet waited for (``send(_:_:expectingChanges:)``), in order,
    /// each with the row count it must change (if any) and the error to throw otherwise.
    /// (A prepared statement's future gives no row count: only statements without an
    /// expected count are sent prepared.)
    private var pending: [(future: EventLoopFuture<Int?>, changes: Int?, failure: (any Error)?, prepared: String?)] = []

    /// Sends a statement without waiting for its answer. PostgresNIO runs a connection's
    /// statements one after another in order (no pipelining on the wire), so this saves the
    /// calling thread a wake-up per statement (`BEGIN` and the writer lock before the
    /// first query, an audit record's insert and head update), not round trips. Its error
    /// (or a row count other than `expectingChanges`, as `failure`) surfaces at the next
    /// statement that waits, and the transaction checks every one before it sends
    /// `COMMIT`: nothing commits past a failed or suppressed write. Statements are sent
    /// prepared (``rows(_:_:)``): one whose row count does not matter (`BEGIN`, the writer
    /// lock, `COMMIT`) as it is, a checked `INSERT`/`UPDATE`/`DELETE` with `RETURNING 1`
    /// so that the rows it returns count the rows it changed (PostgresNIO's prepared
    /// statements give no command tag).
    func send(_ sql: String, _ values: [DatabaseValue] = [], expectingChanges: Int? = nil, failure: (any Error)? = nil) throws {
        if expectingChanges == nil, let statement = try preparedStatement(sql) {
            pending.append((statement.execute(values.map(Self.data)).map { _ in nil }, nil, failure, sql))
        } else if let expectingChanges, let counted = Self.returningEachRow(sql), let statement = try preparedStatement(counted) {
            // A checked write, prepared: its changed rows counted as the rows it returns.
            pending.append((statement.execute(values.map(Self.data)).map { $0.count }, expectingChanges, failure, counted))
        } else {
            pending.append((connection.query(try query(sql, values), logger: Self.logger).map { $0.metadata.rows }, expectingChanges, failure, nil))
        }
    }

    /// Waits for every statement sent so far; throws the first failure.
    func flush() throws {
        let sent = pending
        pending.removeAll()
        var first: (any Error)?
        for entry in sent {
            do {
                let changed = try awaited(entry.future)
                if let expected = entry.changes, (changed ?? 0) != expected, first == nil {
                    first = entry.failure ?? VaultError.integrity("a write changed an unexpected number of rows")
                }
            } catch {
                // A statement that failed is prepared again on its next use: its plan may be
                // what failed (made stale by a schema change, say).
                if let sql = entry.prepared { prepared[sql] = nil }
                if first == nil { first = error }
            }
        }
        if let first { throw first }
    }

    /// Runs a statement; the number of rows it changed.
    @discardableResult
    func execute(_ sql: String, _ values: [DatabaseValue] = []) throws -> Int {
        let future = connection.query(try query(sql, values), logger: Self.logger)
        try flush()
        return try awaited(future).metadata.rows ?? 0
    }

    /// Queries prepared on this connection, by their SQL text (``rows(_:_:)``).
    fileprivate var prepared: [String: PreparedQuery] = [:]
    /// How many statements were prepared on this connection, kept or not.
    private var preparations = 0
    /// At most this many statements are prepared on one connection; queries beyond run as
    /// unnamed statements. The vault's code has a few dozen distinct queries.
    static let maximumPreparations = 128

    /// Runs a query; its rows as GRDB rows keyed by column name.
    ///
    /// A query is prepared on the connection the first time it runs there (a named
    /// statement, parsed and planned by the server once) and afterwards only bound and
    /// executed, as GRDB keeps SQLite's statements: a cache hit through the agent runs six
    /// queries in its transaction, and with pgbench on this machine a prepared read took
    /// 0.09–0.10 ms against 0.15–0.22 ms as an unnamed statement. Parameter types are the
    /// server's inference from the query (integer columns are `BIGINT`, text `TEXT`, blobs
    /// `BYTEA`, as the values are bound). A query that fails is forgotten, so a plan made
    /// stale by a schema change is prepared again on its next use.
    func rows(_ sql: String, _ values: [DatabaseValue] = []) throws -> [Row] {
        guard let statement = try preparedStatement(sql) else {
            let future = connection.query(try query(sql, values), logger: Self.logger)
            try flush()
            return try awaited(future).rows.map { try Self.row($0) }
        }
        let future = statement.execute(values.map(Self.data))
        try flush()
        do {
            // PostgresNIO 1.33.2's `PreparedQuery` labels its result columns with the format
            // of the statement's description (text) while it binds for binary results, so
            // the cells are read as the binary they are (vapor/postgres-nio#303, fixed
            // upstream after 1.33.2).
            return try awaited(future).map { try Self.row($0, format: .binary) }
        } catch {
            prepared[sql] = nil
            throw error
        }
    }

    /// Starts a query without waiting for it; ``Pending/rows()`` waits for its rows. Prepared
    /// as ``rows(_:_:)`` prepares (the first time on a connection, that waits).
    func start(_ sql: String, _ values: [DatabaseValue] = []) throws -> Pending {
        guard let statement = try preparedStatement(sql) else {
            return Pending(session: self, sql: nil, future: connection.query(try query(sql, values), logger: Self.logger).map { $0.rows })
        }
        return Pending(session: self, sql: sql, future: statement.execute(values.map(Self.data)))
    }

    /// Queries started ahead by ``prefetch(_:)``, handed back by the next ``rows(sql:values:)``
    /// of the same query and values in this transaction.
    private var prefetched: [StoreQuery: Pending] = [:]

    /// Starts `query` now (``start(_:_:)``), for the transaction's body to read later.
    func prefetch(_ query: StoreQuery) throws {
        prefetched[query] = try start(query.sql, query.values)
    }

    /// Waits for what was started ahead and not read, and forgets it; throws the first
    /// failure (a transaction whose query failed must not commit as if it had not).
    func settlePrefetched() throws {
        let left = prefetched
        prefetched.removeAll()
        for pending in left.values { _ = try pending.rows() }
    }

    /// Forgets what was started ahead and not read (a transaction that failed).
    func discardPrefetched() {
        prefetched.removeAll()
    }

    /// Forgets every statement prepared on this connection: after any failed transaction,
    /// since what failed may have made other plans stale too (a column's type changed and
    /// changed back: "cache lookup failed for type"). They are prepared again on their next
    /// use. (Not deallocated on the server: PostgresNIO 1.33.2's `deallocate()` on a
    /// connection the server has just ended leaks its promise, a crash in a debug build; the
    /// server drops them with the connection, and ``maximumPreparations`` bounds how many
    /// one connection makes.)
    func forgetPreparedStatements() {
        prepared.removeAll()
    }

    /// The rows of a query started ahead, if it was.
    fileprivate func takePrefetched(sql: String, values: [DatabaseValue]) throws -> [Row]? {
        guard !prefetched.isEmpty, let pending = prefetched.removeValue(forKey: StoreQuery(sql: sql, values: values)) else { return nil }
        return try pending.rows()
    }

    /// A query started by ``start(_:_:)``.
    struct Pending {
        let session: PostgresSession
        /// The prepared statement's key, if it was prepared.
        let sql: String?
        let future: EventLoopFuture<[PostgresRow]>

        /// Its rows; a failure forgets the prepared statement, as ``rows(_:_:)`` does.
        func rows() throws -> [Row] {
            do {
                return try session.awaited(future).map { try PostgresSession.row($0, format: sql == nil ? nil : .binary) }
            } catch {
                if let sql { session.prepared[sql] = nil }
                throw error
            }
        }
    }

    /// `sql` with `RETURNING 1` when it is a plain `INSERT`, `UPDATE` or `DELETE` (one row
    /// returned per row it changed, so a prepared statement, whose result gives no command
    /// tag, still reports its count; a row a trigger suppressed returns nothing), else nil.
    static func returningEachRow(_ sql: String) -> String? {
        let head = sql.prefix(7).uppercased()
        guard head.hasPrefix("INSERT ") || head.hasPrefix("UPDATE ") || head.hasPrefix("DELETE "),
              !sql.uppercased().contains("RETURNING"), !sql.contains(";") else { return nil }
        return sql + " RETURNING 1"
    }

    /// `sql` prepared on this connection: from earlier, else now (after every statement
    /// sent before it has answered, so an earlier failure is the one reported); nil beyond
    /// ``maximumPreparations``.
    private func preparedStatement(_ sql: String) throws -> PreparedQuery? {
        if let known = prepared[sql] { return known }
        guard preparations < Self.maximumPreparations else { return nil }
        try flush()
        preparations += 1
        let made = try awaited(connection.prepare(query: Self.numberedPlaceholders(sql)))
        prepared[sql] = made
        return made
    }

    /// A bound value of a prepared query, in its type's binary form (NULL has none).
    private static func data(_ value: DatabaseValue) -> PostgresData {
        switch value.storage {
        case .null: return .null
        case .int64(let number): return PostgresData(int64: number)
        case .double(let number): return PostgresData(double: number)
        case .string(let text): return PostgresData(string: text)
        case .blob(let data): return PostgresData(bytes: data)
        }
    }

    /// Runs a migration file's statements as one statement: PostgresNIO speaks only the
    /// extended protocol (one statement per message), so the file runs as the body of a
    /// PL/pgSQL `DO` block, in the caller's transaction.
    func script(_ sql: String) throws {
        var tag = "migration"
        while sql.contains("$\(tag)$") { tag += "_" }
        try execute("DO $\(tag)$ BEGIN\n\(sql)\nEND $\(tag)$")
    }

    /// A row as a GRDB row, each cell decoded by PostgresNIO's decoder for its type, in
    /// `format` when given (else the format the cell is labelled with).
    static func row(_ row: PostgresRow, format: PostgresFormat? = nil) throws -> Row {
        var values: [String: DatabaseValue] = [:]
        for cell in row {
            guard var bytes = cell.bytes else {
                values[cell.columnName] = .null
                continue
            }
            let format = format ?? cell.format
            let context = PostgresDecodingContext.default
            switch cell.dataType {
            case .int8, .int4, .int2, .oid:
                values[cell.columnName] = try Int64(from: &bytes, type: cell.dataType, format: format, context: context).databaseValue
            case .bool:
                values[cell.columnName] = (try Bool(from: &bytes, type: cell.dataType, format: format, context: context) ? 1 : 0 as Int64).databaseValue
            case .float8, .float4:
                values[cell.columnName] = try Double(from: &bytes, type: cell.dataType, format: format, context: context).databaseValue
            case .bytea:
                var buffer = ByteBuffer(from: &bytes, type: cell.dataType, format: format, context: context)
                values[cell.columnName] = Data(buffer.readBytes(length: buffer.readableBytes) ?? []).databaseValue
            default:
                values[cell.columnName] = try String(from: &bytes, type: cell.dataType, format: format, context: context).databaseValue
            }
        }
        return Row(values)
    }

    func close() {
        try? connection.close().wait()
    }
}

// MARK: - The store's connection

extension PostgresSession: StoreConnection {
    var changesCount: Int { lastChanges }

    func execute(sql: String, values: [DatabaseValue]) throws {
        try FaultPoint.reached(FaultPoint.statement)
        lastChanges = try execute(sql, values)
    }

    /// Sent without waiting; checked with the next statement that waits, at the latest
    /// before the transaction commits (``send(_:_:expectingChanges:failure:)``).
    func executeExpecting(sql: String, values: [DatabaseValue], changes: Int, failure: any Error) throws {
        try FaultPoint.reached(FaultPoint.statement)
        try send(sql, values, expectingChanges: changes, failure: failure)
    }

    func rows(sql: String, values: [DatabaseValue]) throws -> [Row] {
        try FaultPoint.reached(FaultPoint.statement)
        if let rows = try takePrefetched(sql: sql, values: values) { return rows }
        return try rows(sql, values)
    }

    /// Built here from the records, key for key the text SQLite's `json_object` writes for
    /// a file (``SQLiteDialect``).
    func profileListing() throws -> [String] {
        try ProfileRecord.fetchAll(self, orderBy: "name").map { p in
            var o = CompactJSON()
            o.str("name", p.name); o.str("client_id", p.clientID); o.str("username", p.username)
            o.str("grant", p.grantType.flagValue)
            o.str("scope", p.scope); o.str("environment", p.environment); o.str("created_at", p.createdAt)
            o.str("updated_at", p.updatedAt)
            return o.text
        }
    }

    func auditListing(filter: String, values: [DatabaseValue], withMember: Bool) throws -> [(seq: Int64, json: String)] {
        try records(AuditRow.self, sql: "SELECT * FROM audit_record" + filter, values: values).map { r in
            var o = CompactJSON()
            o.int("seq", r.seq); o.int("at", r.at); o.str("action", r.action); o.str("profile", r.profile); o.str("environment", r.environment)
            o.str("token_url", r.tokenURL); o.str("grant_type", r.grantType); o.str("outcome", r.outcome); o.int("http_status", r.httpStatus)
            o.str("oauth_error", r.oauthError); o.int("attempts", r.attempts); o.int("duration_ms", r.durationMs); o.str("token_type", r.tokenType)
            o.int("expires_in", r.expiresIn); o.int("expires_at", r.expiresAt); o.str("request_id", r.requestID)
            o.str("token_fingerprint", r.tokenFingerprint); o.str("detail", r.detail)
            if withMember { o.str("member", r.member) }
            return (r.seq, o.text)
        }
    }

    /// Rows copied in keep their ids; the identity column continues after the largest.
    func continueNumbering(table: String, column: String) throws {
        try execute(sql: "SELECT setval(pg_get_serial_sequence('\(table)', '\(column)'), coalesce((SELECT max(\(column)) FROM \(table)), 0) + 1, false)", values: [])
    }
}
