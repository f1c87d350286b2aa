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
final class PostgresSession: @unchecked Sendable {
    let connection: PostgresConnection
    /// PostgresNIO's logger: a no-op, so no statement, bind or row ever reaches a log.
    static let logger = Logger(label: "gbg-vault.postgres", factory: { _ in SwiftLogNoOpLogHandler() })

    init(connection: PostgresConnection) { self.connection = connection }

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
                let changed = try entry.future.wait()
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
        return try future.wait().metadata.rows ?? 0
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
            return try future.wait().rows.map { try Self.row($0) }
        }
        let future = statement.execute(values.map(Self.data))
        try flush()
        do {
            // PostgresNIO 1.33.2's `PreparedQuery` labels its result columns with the format
            // of the statement's description (text) while it binds for binary results, so
            // the cells are read as the binary they are (vapor/postgres-nio#303, fixed
            // upstream after 1.33.2).
            return try future.wait().map { try Self.row($0, format: .binary) }
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

    /// A query started by ``start(_:_:)``.
    struct Pending {
        let session: PostgresSession
        /// The prepared statement's key, if it was prepared.
        let sql: String?
        let future: EventLoopFuture<[PostgresRow]>

        /// Its rows; a failure forgets the prepared statement, as ``rows(_:_:)`` does.
        func rows() throws -> [Row] {
            do {
                return try future.wait().map { try PostgresSession.row($0, format: sql == nil ? nil : .binary) }
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
        let made = try connection.prepare(query: Self.numberedPlaceholders(sql)).wait()
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

/// The PostgreSQL store of one vault: a schema in a database (FORMAT.md §11).
///
/// Reads run in a `REPEATABLE READ, READ ONLY` transaction (one snapshot). Writes run
/// in a `READ COMMITTED` transaction that first takes `vault_header` in `EXCLUSIVE`
/// mode: writers of one vault queue behind each other (as SQLite's `BEGIN IMMEDIATE`
/// makes them) while readers go on; each statement after the lock sees every change
/// committed before it, so a change is computed from the latest state and the audit
/// chain's head is read and advanced by one writer at a time. A writer waits at most
/// `VAULT_BUSY_TIMEOUT` seconds (`lock_timeout`).
///
/// Sessions are pooled (the agent serves several clients at once; each transaction has
/// a session to itself).
final class PostgresStore: @unchecked Sendable {
    let location: PostgresLocation
    private let lock = NSLock()
    private var idle: [PostgresSession] = []
    private var nextID = 1
    private let tlsContext: NIOSSLContext?

    /// The migrations' own table (FORMAT.md §11).
    static let migrationsTable = "schema_migrations"

    private init(location: PostgresLocation) throws(VaultError) {
        self.location = location
        tlsContext = try Self.tlsContext(for: location)
    }

    private static func tlsContext(for location: PostgresLocation) throws(VaultError) -> NIOSSLContext? {
        guard location.sslMode != .disable, !location.host.hasPrefix("/") else { return nil }
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv12
        switch location.sslMode {
        case .disable: return nil
        case .require: tls.certificateVerification = .none
        case .verifyCA: tls.certificateVerification = .noHostnameVerification
        case .verifyFull: tls.certificateVerification = .fullVerification
        }
        if let file = location.rootCertificate {
            do {
                tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(file))
            } catch {
                throw .usage("cannot read the PostgreSQL root certificate file \(file.sanitisedForDisplay(limit: 200))")
            }
        }
        do {
            return try NIOSSLContext(configuration: tls)
        } catch {
            throw .failure("cannot set up TLS for the PostgreSQL connection: \(String(describing: error).sanitisedForDisplay(limit: 200))")
        }
    }

    /// Connects (one session, checked out at once) to `location`.
    static func connect(_ location: PostgresLocation) throws(VaultError) -> PostgresStore {
        let store = try PostgresStore(location: location)
        let session = try store.openSession()
        store.checkIn(session)
        return store
    }

    private func openSession() throws(VaultError) -> PostgresSession {
        var configuration: PostgresConnection.Configuration
        if location.host.hasPrefix("/") {
            configuration = .init(unixSocketPath: location.host + "/.s.PGSQL.\(location.port)", username: location.user,
                                  password: location.password, database: location.database)
        } else {
            configuration = .init(host: location.host, port: location.port, username: location.user, password: location.password,
                                  database: location.database, tls: tlsContext.map { .require($0) } ?? .disable)
        }
        configuration.options.connectTimeout = .seconds(10)
        // Each session works in the vault's schema only; a writer that stalls inside a
        // transaction is ended by the server rather than holding the vault's lock forever.
        configuration.options.additionalStartupParameters = [
            ("search_path", "\"\(location.schema)\""),
            ("idle_in_transaction_session_timeout", "60000"),
            // How long a writer waits for the vault's writer lock (VAULT_BUSY_TIMEOUT).
            ("lock_timeout", String(Int(VaultDatabase.busyTimeout * 1000))),
            ("application_name", "gbg-vault"),
        ]
        let id = lock.withLock { () -> Int in
            defer { nextID += 1 }
            return nextID
        }
        do {
            let connection = try PostgresConnection.connect(on: MultiThreadedEventLoopGroup.singleton.next(), configuration: configuration,
                                                            id: id, logger: PostgresSession.logger).wait()
            return PostgresSession(connection: connection)
        } catch {
            throw Self.map(error, location: location)
        }
    }

    private func checkOut() throws(VaultError) -> PostgresSession {
        if let session = lock.withLock({ idle.popLast() }) {
            if !session.connection.isClosed { return session }
            session.close()
        }
        return try openSession()
    }

    private func checkIn(_ session: PostgresSession) {
        guard !session.connection.isClosed else { return }
        lock.withLock { idle.append(session) }
    }

    /// Closes every pooled session.
    func close() {
        let sessions = lock.withLock { () -> [PostgresSession] in
            defer { idle.removeAll() }
            return idle
        }
        sessions.forEach { $0.close() }
    }

    deinit { close() }

    // MARK: - Transactions

    /// The vault's tables (the migrations' own included).
    static let tables = ["vault_header", "environment", "profile", "secret_version", "token_cache", "audit_record", "audit_head",
                         "retired_audit_key", "member", "key_slot", migrationsTable]

    /// A read in one snapshot, its tables locked against schema changes until it ends.
    func read<T>(_ body: (StoreDB) throws -> T) throws(VaultError) -> T {
        try transaction("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
                        locks: ["LOCK TABLE \(Self.tables.joined(separator: ", ")) IN ACCESS SHARE MODE"], readOnly: true) {
            try body(StoreDB(postgres: $0))
        }
    }

    /// A write, after taking the vault's writer lock (see the type's comment): every table
    /// in `EXCLUSIVE` mode, `vault_header` first. Writers of the vault queue behind each
    /// other while readers (`ACCESS SHARE`) go on, and no DDL on the tables (`CREATE
    /// TRIGGER`, `CREATE INDEX`, `ALTER TABLE`, …) can commit until the write ends.
    func write<T>(_ body: (StoreDB) throws -> T) throws(VaultError) -> T {
        try transaction("BEGIN ISOLATION LEVEL READ COMMITTED",
                        locks: ["LOCK TABLE \(Self.tables.joined(separator: ", ")) IN EXCLUSIVE MODE"], readOnly: false) {
            try body(StoreDB(postgres: $0))
        }
    }

    /// One transaction on a pooled session: `begin`, then `locks`, then the schema check of
    /// ``expectCheckedSchema(_:)`` (unless `checkingSchema` is false), then `body`; every
    /// statement sent ahead (``StoreDB/executeExpecting(sql:arguments:changes:failure:)``) is
    /// checked before `COMMIT` is sent, and a failure rolls back. (A pooled connection that
    /// the server closed, after a restart for example, is seen closed when it is checked
    /// out and replaced.)
    private func transaction<T>(_ begin: String, locks: [String], readOnly: Bool, checkingSchema: Bool = true,
                                _ body: (PostgresSession) throws -> T) throws(VaultError) -> T {
        let session = try checkOut()
        var committing = false
        var checker: PostgresSession?
        defer { if let checker { checkIn(checker) } }
        do {
            try session.send(begin)
            for lock in locks { try session.send(lock) }
            // The schema's digest, read on a second session once this one holds its locks
            // (so no DDL on the vault's tables can commit until this transaction ends), while
            // the body runs here; checked before anything is committed or returned. (Read
            // here, before the body, it cost a cache hit on a team vault 0.6 ms, and its
            // ratio to a file vault went from 1.5 to 1.66, against 1.5 this way: BENCHMARKS.md.)
            var digest: PostgresSession.Pending?
            if checkingSchema {
                try session.flush()
                let side = try checkOut()
                checker = side
                digest = try side.start(Self.fingerprintSQL, fingerprintArguments)
            }
            let result = try body(session)
            try session.flush()
            if let digest { try expectCheckedSchema(session, fingerprint: try digest.rows().first?["fingerprint"] ?? "") }
            committing = true
            try session.send("COMMIT")
            if !readOnly {
                // A read-only transaction has nothing to commit: nobody waits for its COMMIT
                // (the session's next statement queues behind it). A write waits for it.
                try session.flush()
            }
            checkIn(session)
            return result
        } catch {
            if !session.connection.isClosed { _ = try? session.execute("ROLLBACK") }
            checkIn(session)
            throw Self.map(error, location: location, committing: committing)
        }
    }

    // MARK: - Creating and opening

    /// Creates the vault's schema and tables and calls `populate`, all in one transaction:
    /// a vault never appears half-made, and a schema that already holds a vault is never
    /// changed.
    func create(populate: (StoreDB) throws -> Void) throws(VaultError) {
        try transaction("BEGIN ISOLATION LEVEL READ COMMITTED", locks: [], readOnly: false, checkingSchema: false) { session in
            try session.execute("CREATE SCHEMA IF NOT EXISTS \"\(location.schema)\"")
            try session.execute("CREATE TABLE IF NOT EXISTS \(Self.migrationsTable) (identifier TEXT COLLATE \"C\" PRIMARY KEY, applied_at TEXT COLLATE \"C\" NOT NULL)")
            try session.execute("LOCK TABLE \(Self.migrationsTable) IN EXCLUSIVE MODE")
            let applied = try session.rows("SELECT count(*) AS n FROM \(Self.migrationsTable)").first?["n"] as Int64? ?? 0
            guard applied == 0 else {
                throw VaultError.failure("a vault already exists at \(location.display); it was not changed",
                                         hint: "choose another schema (?schema=NAME) or database")
            }
            let others = try session.rows("SELECT count(*) AS n FROM pg_class c JOIN pg_namespace s ON c.relnamespace = s.oid WHERE s.nspname = ? AND c.relname <> ?",
                                          [location.schema.databaseValue, Self.migrationsTable.databaseValue]).first?["n"] as Int64? ?? 0
            guard others <= 1 else {  // the migrations table's own primary-key index
                throw VaultError.failure("the schema \(location.schema) already holds other tables; a vault needs a schema of its own",
                                         hint: "choose another schema (?schema=NAME)")
            }
            for migration in embeddedPostgresMigrations {
                try session.script(migration.sql)
                try session.execute("INSERT INTO \(Self.migrationsTable) (identifier, applied_at) VALUES (?, ?)",
                                    [migration.name.databaseValue, Date().iso8601.databaseValue])
            }
            try populate(StoreDB(postgres: session))
        }
    }

    /// Names of the migrations this build knows for PostgreSQL, in order.
    static var knownMigrations: [String] { embeddedPostgresMigrations.map(\.name) }

    /// Checks that the schema holds a vault written by this build's migrations and
    /// exactly the tables, columns, constraints and indexes they create: a trigger, rule,
    /// policy, row-level security, function, view or extra column added by someone with
    /// rights on the database is an integrity failure before anything is read (the MACs
    /// and signatures catch what they change in the data anyway).
    func checkSchema() throws(VaultError) -> [String] {
        try transaction("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", locks: [], readOnly: true, checkingSchema: false) { session in
            let fingerprint = try Self.schemaFingerprint(session, schema: location.schema)
            let applied = try verifySchema(StoreDB(postgres: session))
            schemaState.withLockedValue { $0.fingerprint = fingerprint }
            return applied
        }
    }

    /// The schema's lines as the catalogs give them now (``schemaEntries(_:schema:)``), read
    /// without the check against the expected ones: what this build's migrations create,
    /// for the test that keeps `Migrations/postgres/NAME.schema.json` true.
    func currentSchemaEntries() throws(VaultError) -> [String] {
        try transaction("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", locks: [], readOnly: true, checkingSchema: false) { session in
            try Self.schemaEntries(StoreDB(postgres: session), schema: location.schema)
        }
    }

    /// The whole schema check in the transaction of `db`; the migrations applied.
    private func verifySchema(_ db: StoreDB) throws -> [String] {
        let exists = try Int64.fetchOne(db, sql: "SELECT count(*) FROM pg_namespace WHERE nspname = ?", arguments: [location.schema]) ?? 0
        let hasTable = try Int64.fetchOne(db, sql: """
            SELECT count(*) FROM pg_class c JOIN pg_namespace s ON c.relnamespace = s.oid
            WHERE s.nspname = ? AND c.relname = ?
            """, arguments: [location.schema, Self.migrationsTable]) ?? 0
        guard exists > 0, hasTable > 0 else {
            throw VaultError.notFound("no vault at \(location.display)")
        }
        let applied = try String.fetchAll(db, sql: "SELECT identifier FROM \(Self.migrationsTable) ORDER BY identifier")
        let known = Self.knownMigrations
        guard !applied.isEmpty else { throw VaultError.notFound("no vault at \(location.display)") }
        if let unknown = applied.first(where: { !known.contains($0) }) {
            throw VaultError.newerVersion("this vault was written by a newer version of gbg-vault (its schema has migration '\(unknown.sanitisedForDisplay(limit: 60))', which this build does not know)")
        }
        guard applied == Array(known.prefix(applied.count)) else {
            throw VaultError.integrity("the vault's recorded migrations are not a prefix of this build's")
        }
        let expected = embeddedPostgresSchemas[applied.last!] ?? []
        let actual = try Self.schemaEntries(db, schema: location.schema)
        guard actual == expected else {
            let extra = Set(actual).subtracting(expected).sorted()
            let missing = Set(expected).subtracting(actual).sorted()
            var parts: [String] = []
            if !extra.isEmpty { parts.append("unexpected or altered: " + extra.joined(separator: ", ")) }
            if !missing.isEmpty { parts.append("missing or altered: " + missing.joined(separator: ", ")) }
            throw VaultError.integrity("the vault's database schema is not the one gbg-vault creates (\(parts.joined(separator: "; ").sanitisedForDisplay(limit: 400)))")
        }
        return applied
    }

    /// A digest of the catalog rows that define the vault's tables or attach anything to
    /// them: the schema's `pg_namespace` row; the tables' `pg_class` rows, found by name;
    /// their columns, defaults, constraints, triggers, indexes, rules, policies and child
    /// tables. Any DDL that touches one of them writes a new row version with a transaction
    /// id newer than every existing one (or removes or adds a row), so the count of rows
    /// and the sum of their `xmin` move; a move makes the transaction check the whole schema
    /// again (``expectCheckedSchema(_:)``). (Functions, types and operators made in the
    /// schema run only through something attached to a table, which moves the digest; the
    /// full check refuses them.) One query, by the catalogs' indexes.
    static let fingerprintSQL = """
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

    /// The arguments of ``fingerprintSQL`` for this vault.
    private var fingerprintArguments: [DatabaseValue] {
        [location.schema.databaseValue, Self.tables.joined(separator: ",").databaseValue, location.schema.databaseValue]
    }

    static func schemaFingerprint(_ session: PostgresSession, schema: String) throws -> String {
        try session.rows(fingerprintSQL, [schema.databaseValue, tables.joined(separator: ",").databaseValue, schema.databaseValue])
            .first?["fingerprint"] ?? ""
    }

    /// In every transaction, before anything is committed or returned: if the catalogs'
    /// digest of the schema (``fingerprintSQL``, read once the transaction held its locks)
    /// moved since the schema was last checked, the whole schema is checked again in this
    /// transaction; a schema that is not the expected one fails (exit 7, the transaction
    /// rolled back with whatever ran in it) and marks the store refused (the agent ends).
    /// The transaction's locks keep DDL out until it ends, so what was checked is what the
    /// transaction's statements ran against.
    private func expectCheckedSchema(_ session: PostgresSession, fingerprint: String) throws {
        guard fingerprint != schemaState.withLockedValue({ $0.fingerprint }) else { return }
        Trace.debug("the team vault's schema changed since it was checked; checking it again")
        do {
            _ = try verifySchema(StoreDB(postgres: session))
            schemaState.withLockedValue { $0.fingerprint = fingerprint }
        } catch {
            schemaState.withLockedValue { $0.refused = true }
            throw error
        }
    }

    private struct SchemaState {
        var fingerprint: String?
        var refused = false
    }
    private let schemaState = NIOLockedValueBox(SchemaState())

    /// True once a transaction found the schema changed to something other than the
    /// expected one.
    var schemaRefused: Bool { schemaState.withLockedValue { $0.refused } }

    /// One line per schema object, from the catalogs: relations (tables, indexes,
    /// sequences, views), columns with type, nullability, collation and default,
    /// constraints, indexes' definitions, and anything that could run code or hide rows
    /// (triggers, rules, policies, row-level security, functions). Schema-qualified names
    /// are written without the schema, so the list is the same for every vault.
    static func schemaEntries(_ db: StoreDB, schema: String) throws -> [String] {
        let queries = [
            """
            SELECT 'relation ' || c.relkind::text || ' ' || c.relname::text AS line FROM pg_class c JOIN pg_namespace s ON c.relnamespace = s.oid
            WHERE s.nspname = ?
            """,
            // Columns from pg_attribute, each with its type's schema and name (a domain or a
            // type of another schema is not its base type), modifier, nullability, collation,
            // default, identity and generation.
            """
            SELECT 'column ' || c.relname || '.' || a.attname || ' ' || tn.nspname || '.' || t.typname || ' typmod=' || a.atttypmod
                || ' null=' || CASE WHEN a.attnotnull THEN 'NO' ELSE 'YES' END || ' collation=' || coalesce(co.collname, '-')
                || ' default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '-')
                || ' identity=' || CASE WHEN a.attidentity = '' THEN '-' ELSE a.attidentity::text END
                || ' generated=' || CASE WHEN a.attgenerated = '' THEN '-' ELSE a.attgenerated::text END AS line
            FROM pg_attribute a JOIN pg_class c ON a.attrelid = c.oid JOIN pg_namespace s ON c.relnamespace = s.oid
            JOIN pg_type t ON a.atttypid = t.oid JOIN pg_namespace tn ON t.typnamespace = tn.oid
            LEFT JOIN pg_collation co ON co.oid = a.attcollation
            LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE s.nspname = ? AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
            """,
            """
            SELECT 'constraint ' || r.relname || ' ' || k.conname || ': ' || pg_get_constraintdef(k.oid) AS line
            FROM pg_constraint k JOIN pg_class r ON k.conrelid = r.oid JOIN pg_namespace s ON k.connamespace = s.oid WHERE s.nspname = ?
            """,
            "SELECT 'index ' || indexname || ': ' || indexdef AS line FROM pg_indexes WHERE schemaname = ?",
            """
            SELECT 'trigger ' || t.tgname || ' on ' || c.relname AS line FROM pg_trigger t JOIN pg_class c ON t.tgrelid = c.oid
            JOIN pg_namespace s ON c.relnamespace = s.oid WHERE s.nspname = ? AND NOT t.tgisinternal
            """,
            "SELECT 'rule ' || rulename || ' on ' || tablename AS line FROM pg_rules WHERE schemaname = ?",
            "SELECT 'policy ' || policyname || ' on ' || tablename AS line FROM pg_policies WHERE schemaname = ?",
            """
            SELECT 'row security on ' || c.relname AS line FROM pg_class c JOIN pg_namespace s ON c.relnamespace = s.oid
            WHERE s.nspname = ? AND (c.relrowsecurity OR c.relforcerowsecurity)
            """,
            "SELECT 'function ' || p.proname AS line FROM pg_proc p JOIN pg_namespace s ON p.pronamespace = s.oid WHERE s.nspname = ?",
        ]
        var lines: [String] = []
        for sql in queries {
            lines += try String.fetchAll(db, sql: sql, arguments: [schema])
        }
        let qualified = "\(schema)."
        return lines.map { $0.replacingOccurrences(of: qualified, with: "") }.sorted()
    }

    /// Server facts for `vault doctor`: version, TLS, and the rights this user has on the
    /// vault's tables.
    func serverReport() throws(VaultError) -> (version: String, tls: Bool, missingGrants: [String]) {
        try read { db in
            let version = try String.fetchOne(db, sql: "SHOW server_version") ?? "?"
            let tls = (try Int64.fetchOne(db, sql: "SELECT count(*) FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl") ?? 0) > 0
            var missing: [String] = []
            for table in ["vault_header", "environment", "profile", "secret_version", "token_cache", "audit_record", "audit_head",
                          "retired_audit_key", "member", "key_slot"] {
                for privilege in ["SELECT", "INSERT", "UPDATE", "DELETE"] {
                    let granted = try Int64.fetchOne(db, sql: "SELECT count(*) WHERE has_table_privilege(?, ?)",
                                                     arguments: ["\(location.schema).\(table)", privilege]) ?? 0
                    if granted == 0 { missing.append("\(privilege) on \(table)") }
                }
            }
            return (version, tls, missing)
        }
    }

    // MARK: - Errors

    /// Maps PostgreSQL and connection errors to vault errors; never includes statement
    /// arguments, a password or the server's `detail` field (which can quote values).
    static func map(_ error: any Error, location: PostgresLocation, committing: Bool = false) -> VaultError {
        if let error = error as? VaultError { return error }
        if error is RowDecodingError { return .malformedRow }
        let lost = committing
            ? "the connection to the PostgreSQL server was lost while committing: the change may or may not have been written"
            : "the connection to the PostgreSQL server was lost; nothing was changed"
        func isTLS(_ error: any Error) -> Bool {
            let text = String(describing: error)
            return error is NIOSSLError || String(describing: type(of: error)).contains("SSL") || text.contains("handshake") || text.contains("certificate")
        }
        func tlsFailure(_ error: any Error) -> VaultError {
            .failure("TLS with the PostgreSQL server at \(location.host) failed: \(String(describing: error).sanitisedForDisplay(limit: 200))",
                     hint: "check sslmode, sslrootcert / PGSSLROOTCERT and the server's certificate name")
        }
        // Prepared statements report through PostgresNIO's legacy API, which turns its errors
        // into `PostgresError`s: a server error keeps its fields (read as below), a closed
        // connection is `.connectionClosed`, an unclean close a protocol error.
        var serverError: (state: String, message: String)?
        if let legacy = error as? PostgresError {
            switch legacy {
            case .server(let notice):
                serverError = (notice.fields[.sqlState] ?? "", notice.fields[.message] ?? "error")
            case .connectionClosed:
                return .failure(lost, hint: "check the server, then run the command again")
            case .protocol(let what):
                if what.contains("connection close") { return .failure(lost, hint: "check the server, then run the command again") }
                // Its text can quote a server message verbatim (a data row among them): not shown,
                // as for PSQLError's protocol codes below.
                return .failure("PostgreSQL: protocol error")
            }
        } else if let error = error as? PSQLError, error.code == .server {
            serverError = (error.serverInfo?[.sqlState] ?? "", error.serverInfo?[.message] ?? "error")
        }
        if let serverError {
            let state = serverError.state
            let message = serverError.message.sanitisedForDisplay(limit: 200)
            switch state {
            case "55P03":
                return .failure("the vault is locked by another writer (waited \(Int(VaultDatabase.busyTimeout)) s); nothing was changed",
                                hint: "retry when the other vault process has finished")
            case "57P01", "57P02", "57P03", "08000", "08003", "08006":
                return .failure(lost, hint: "check the server, then run the command again")
            case "28P01", "28000":
                return .failure("the PostgreSQL server refused the login for user \(location.user.sanitisedForDisplay(limit: 64))",
                                hint: "set the password in PGPASSWORD or ~/.pgpass (never on the command line)")
            case "3D000":
                return .notFound("no database \(location.database.sanitisedForDisplay(limit: 64)) on the PostgreSQL server (no vault at \(location.display))")
            case "3F000", "42P01":
                return .notFound("no vault at \(location.display)")
            case "42501":
                return .failure("PostgreSQL permission denied: \(message)", hint: "`vault doctor` lists the rights the vault needs")
            case "40001", "40P01":
                return .failure("a concurrent change conflicted with this one; nothing was changed", hint: "run the command again")
            case _ where state.hasPrefix("23"):
                return .integrity("the vault data violates a schema constraint (\(message))")
            case "53100":
                return .failure("the PostgreSQL server's disk is full: the change was not written and the vault is unchanged")
            default:
                return .failure("PostgreSQL error \(state): \(message)")
            }
        }
        guard let error = error as? PSQLError else {
            if isTLS(error) { return tlsFailure(error) }
            return .failure("PostgreSQL: \(String(describing: error).sanitisedForDisplay(limit: 200))")
        }
        if let underlying = error.underlying, isTLS(underlying) { return tlsFailure(underlying) }
        switch error.code {
        case .connectionError, .serverClosedConnection, .uncleanShutdown, .clientClosedConnection:
            if !committing, error.underlying.map({ String(describing: $0).contains("refused") || String(describing: $0).contains("connect") }) == true {
                return .failure("cannot connect to the PostgreSQL server at \(location.host):\(location.port)",
                                hint: "check that the server is running and reachable")
            }
            return .failure(lost, hint: "check the server, then run the command again")
        case .sslUnsupported:
            return .failure("the PostgreSQL server at \(location.host) does not offer TLS (sslmode=\(location.sslMode.rawValue))",
                            hint: "enable ssl on the server; sslmode=disable only on a private network or socket")
        case .failedToAddSSLHandler:
            return .failure("TLS with the PostgreSQL server at \(location.host) could not be set up")
        case .authMechanismRequiresPassword:
            return .failure("the PostgreSQL server wants a password for user \(location.user.sanitisedForDisplay(limit: 64))",
                            hint: "set it in PGPASSWORD or ~/.pgpass (never on the command line)")
        default:
            return .failure("PostgreSQL: \(String(describing: error.code).sanitisedForDisplay(limit: 100))")
        }
    }
}
