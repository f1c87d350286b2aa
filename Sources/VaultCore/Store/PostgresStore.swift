import Foundation
import GRDB
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import PostgresNIO

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
final class PostgresStore: VaultStore, @unchecked Sendable {
    var isReadOnlyHere: Bool { false }
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
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let unverified = PostgresUnverifiedTLS.Outcome()
        if location.sslMode == .require || location.sslMode == .verifyCA, !location.host.hasPrefix("/"), let tlsContext {
            // TLS whose certificate does not prove the server's name: only SCRAM may have
            // the password (``PostgresUnverifiedTLS``).
            do {
                let channel = try PostgresUnverifiedTLS.connect(host: location.host, port: location.port, context: tlsContext,
                                                                timeout: .seconds(10), on: loop, outcome: unverified)
                configuration = .init(establishedChannel: channel, username: location.user, password: location.password,
                                      database: location.database)
            } catch {
                throw unverified.refusal.map(unverifiedRefusal) ?? Self.map(error, location: location)
            }
        } else if location.host.hasPrefix("/") {
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
            // (`pg_temp` named last: unnamed, a session's temporary tables would come first,
            // before the vault's own, for every unqualified table name.)
            ("search_path", "\"\(location.schema)\", pg_temp"),
            ("idle_in_transaction_session_timeout", "60000"),
            // How long a writer waits for the vault's writer lock (VAULT_BUSY_TIMEOUT).
            ("lock_timeout", String(Int(Stores.busyTimeout * 1000))),
            ("application_name", "gbg-vault"),
            // Prepared statements are planned once per connection, not at every execution:
            // the server's default re-planned the one-statement cache hit (FORMAT.md §11.4)
            // at each bind, 1.2–1.9 ms of its 2.2–2.9 ms. The vault's queries are lookups by
            // key, for which a generic plan is the plan.
            ("plan_cache_mode", "force_generic_plan"),
            // A record is durable when its COMMIT answers, whatever a role's or database's
            // defaults say (a schema's owner can `ALTER ROLE … SET synchronous_commit = off`;
            // settings of the connection request come after those defaults).
            ("synchronous_commit", "on"),
        ]
        let id = lock.withLock { () -> Int in
            defer { nextID += 1 }
            return nextID
        }
        do {
            let connection = try PostgresConnection.connect(on: loop, configuration: configuration,
                                                            id: id, logger: PostgresSession.logger).wait()
            return PostgresSession(connection: connection)
        } catch {
            throw unverified.refusal.map(unverifiedRefusal) ?? Self.map(error, location: location)
        }
    }

    /// The refusal of a server reached with `sslmode=require` (``PostgresUnverifiedTLS``).
    private func unverifiedRefusal(_ why: String) -> VaultError {
        .failure("refusing the PostgreSQL server at \(location.host):\(location.port): \(why), and with sslmode=\(location.sslMode.rawValue) "
                 + "its certificate does not prove its name, so it could be anyone in the middle; the password was not sent",
                 hint: "use sslmode=verify-full with the server's CA (sslrootcert=…), or have the server use scram-sha-256")
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
    /// (`audit_head` before `audit_record`: the order in which the writer lock takes them is
    /// the order in which ``appendIfUnchanged(_:)``'s statement does, so that neither can hold
    /// one while it waits for the other.)
    static let tables = ["vault_header", "environment", "profile", "secret_version", "token_cache", "audit_head", "audit_record",
                         "retired_audit_key", "member", "key_slot", migrationsTable]

    /// A read in one snapshot, its tables locked against schema changes until it ends.
    func read<T>(_ body: (StoreDB) throws -> T) throws(VaultError) -> T {
        try transaction("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
                        locks: ["LOCK TABLE \(Self.tables.joined(separator: ", ")) IN ACCESS SHARE MODE"], readOnly: true) {
            try body($0)
        }
    }

    /// A write, after taking the vault's writer lock (see the type's comment): every table
    /// in `EXCLUSIVE` mode, `vault_header` first. Writers of the vault queue behind each
    /// other while readers (`ACCESS SHARE`) go on, and no DDL on the tables (`CREATE
    /// TRIGGER`, `CREATE INDEX`, `ALTER TABLE`, …) can commit until the write ends. The
    /// `prefetching` queries go out right behind the lock, so that their answers come back
    /// with it: one round trip for all of them instead of one each.
    func write<T>(prefetching queries: [StoreQuery], _ body: (StoreDB) throws -> T) throws(VaultError) -> T {
        try transaction("BEGIN ISOLATION LEVEL READ COMMITTED",
                        locks: ["LOCK TABLE \(Self.tables.joined(separator: ", ")) IN EXCLUSIVE MODE"], readOnly: false,
                        prefetching: queries) {
            try body($0)
        }
    }

    /// One transaction on a pooled session: `begin`, then `locks`, then the schema check of
    /// ``expectCheckedSchema(_:)`` (unless `checkingSchema` is false), then `body`; every
    /// statement sent ahead (``StoreDB/executeExpecting(sql:arguments:changes:failure:)``) is
    /// checked before `COMMIT` is sent, and a failure rolls back. (A pooled connection that
    /// the server closed, after a restart for example, is seen closed when it is checked
    /// out and replaced.)
    private func transaction<T>(_ begin: String, locks: [String], readOnly: Bool, checkingSchema: Bool = true,
                                prefetching: [StoreQuery] = [],
                                _ body: (PostgresSession) throws -> T) throws(VaultError) -> T {
        let session = try checkOut()
        var committing = false
        var checker: PostgresSession?
        var digest: PostgresSession.Pending?
        defer { if let checker { checkIn(checker) } }
        do {
            try session.send(begin)
            for lock in locks { try session.send(lock) }
            for query in prefetching { try session.prefetch(query) }
            // The schema's digest, read on a second session once this one holds its locks
            // (so no DDL on the vault's tables can commit until this transaction ends), while
            // the body runs here; checked before anything is committed or returned. (Read
            // before the body, it is one more round trip in every transaction, which the
            // team vault's cache-hit target, 1.5 times a file's, does not leave room for.)
            if checkingSchema {
                try session.flush()
                let side = try checkOut()
                checker = side
                digest = try side.start(Self.fingerprintSQL, fingerprintArguments)
            }
            if !readOnly { try FaultPoint.reached(FaultPoint.writeBegins) }
            let result = try body(session)
            try session.settlePrefetched()
            try session.flush()
            if let digest { try expectCheckedSchema(session, fingerprint: Self.fingerprint(try digest.rows().first)) }
            if !readOnly { try FaultPoint.reached(FaultPoint.writeCommits) }
            committing = true
            try session.send("COMMIT")
            if !readOnly {
                // A read-only transaction has nothing to commit: nobody waits for its COMMIT
                // (the session's next statement queues behind it). A write waits for it.
                try session.flush()
                try FaultPoint.reached(FaultPoint.writeCommitted)
            }
            checkIn(session)
            return result
        } catch {
            session.discardPrefetched()
            // A statement that failed because the schema changed (a rule on `audit_head`
            // makes the head's upsert fail before the digest is compared: an outside review's
            // answered exit 8, and the agent went on) is reported as the schema change: the
            // digest, read under this transaction's locks, is compared on the other session.
            let schemaFailure: VaultError?
            if let digest, let checker, !committing, let fingerprint = try? Self.fingerprint(digest.rows().first),
               fingerprint != schemaState.withLockedValue({ $0.fingerprint }) {
                do {
                    try expectCheckedSchema(checker, fingerprint: fingerprint)
                    schemaFailure = nil
                } catch {
                    schemaFailure = Self.map(error, location: location)
                }
            } else {
                schemaFailure = nil
            }
            if !session.connection.isClosed {
                _ = try? session.execute("ROLLBACK")
                session.forgetPreparedStatements()
            }
            checkIn(session)
            if let schemaFailure { throw schemaFailure }
            throw Self.map(error, location: location, committing: committing)
        }
    }

    // MARK: - A cache hit in one statement

    /// The answers of `reads` (queries of a write transaction's body) as one value: the
    /// SHA-256 of the text of their rows (`record_out`, each query's rows sorted, the lists
    /// in an array: an injective text), so that one value equal to the one read when they
    /// were checked means every row is still the one that was checked.
    func stateDigestQuery(_ reads: [StoreQuery]) -> StoreQuery? {
        let parts = reads.map { "(SELECT pg_catalog.array_agg(q::text ORDER BY q::text) FROM (\($0.sql)) AS q)::text" }
        return StoreQuery(sql: "SELECT pg_catalog.sha256(pg_catalog.convert_to(ARRAY[\(parts.joined(separator: ", "))]::text, 'UTF8')) AS state",
                          values: reads.flatMap(\.values))
    }

    /// Appends `append.record` and moves the head in one statement of its own transaction
    /// (FORMAT.md §11.4), when, in the statement's snapshot, the head and the newest record
    /// are `append.head`, `append.state` reads `append.stateDigest`, and the schema's digest
    /// is the one last checked; committed only then, rolled back otherwise (false). The
    /// statement's locks (`ROW EXCLUSIVE` on the two audit tables) queue it behind every
    /// writer's lock and keep DDL on them out until the transaction ends; it also returns the
    /// schema's digest in its snapshot: a record appended under another schema (something in
    /// the database rewrote the statement) is an integrity failure, and the store is refused.
    ///
    /// Rolled back, not committed with nothing appended: a statement-level trigger fires
    /// even when no row matches (an outside review's ran, and its writes and its change of
    /// the session's `search_path` were kept, while the statement appended nothing). And the
    /// session of a hit that was not committed is closed, not pooled, so that nothing it ran
    /// can outlast it. A lock held past `VAULT_BUSY_TIMEOUT` is reported as such (the full
    /// transaction would wait as long again); any other failure is false, and the caller's
    /// full transaction meets it again and reports it.
    func appendIfUnchanged(_ append: UnchangedAppend) throws(VaultError) -> Bool {
        let expected = schemaState.withLockedValue { $0.refused ? nil : $0.fingerprint }
        guard let expected else { return false }
        let columns: [(String, DatabaseValue)]
        do { columns = try append.record.columnsAndValues() } catch { throw Self.map(error, location: location) }
        let placeholders = Array(repeating: "?", count: columns.count).joined(separator: ", ")
        let sql = """
            WITH digest AS MATERIALIZED (\(Self.fingerprintSQL)),
            head AS (
              UPDATE audit_head SET seq = ?, last_mac = ?, mac = ?
              WHERE id = 1 AND seq = ? AND key_epoch = ? AND last_mac = ? AND mac = ?
                AND (SELECT seq FROM audit_record ORDER BY seq DESC LIMIT 1) = ?
                AND (SELECT mac FROM audit_record ORDER BY seq DESC LIMIT 1) = ?
                AND (SELECT max(key_epoch) FROM audit_record) = ?
                AND (\(append.state.sql)) = ?
                AND (SELECT objects FROM digest) = ? AND (SELECT versions FROM digest) = ?
              RETURNING 1),
            record AS (INSERT INTO audit_record (\(columns.map(\.0).joined(separator: ", "))) SELECT \(placeholders) FROM head RETURNING 1)
            SELECT (SELECT count(*) FROM record) AS appended, (SELECT count(*) FROM head) AS moved, objects, versions FROM digest
            """
        let (head, next) = (append.head, append.newHead)
        let values: [DatabaseValue] = fingerprintArguments
            + [next.seq.databaseValue, next.lastMAC.databaseValue, next.mac.databaseValue,
               head.seq.databaseValue, head.keyEpoch.databaseValue, head.lastMAC.databaseValue, head.mac.databaseValue,
               head.seq.databaseValue, head.lastMAC.databaseValue, head.keyEpoch.databaseValue]
            + append.state.values + [append.stateDigest.databaseValue, expected.objects.databaseValue, expected.versions.databaseValue]
            + columns.map(\.1)
        let session = try checkOut()
        var committed = false
        defer { if committed { checkIn(session) } else { session.close() } }
        do {
            // REPEATABLE READ: a head row updated by anyone after the statement's snapshot
            // fails it (then rolled back) instead of being re-read alone while the statement's
            // checks keep their snapshot (an outside review held the head's row lock with a
            // no-op update, edited an environment in the same transaction, and the hit
            // committed after it).
            try session.send("BEGIN ISOLATION LEVEL REPEATABLE READ")
            let row = try session.rows(sql, values).first
            let appended = row.flatMap { $0["appended"] as Int64? } == 1 && row.flatMap { $0["moved"] as Int64? } == 1
            guard appended, Self.fingerprint(row) == expected else {
                try session.execute("ROLLBACK")
                if appended {
                    schemaState.withLockedValue { $0.refused = true }
                    throw VaultError.integrity("the vault's database schema changed under a cache hit's audit record (something in the database rewrote its statement); nothing was written and the token was withheld")
                }
                return false
            }
            try session.send("COMMIT")
            try session.flush()
            committed = true
            return true
        } catch {
            let mapped = Self.map(error, location: location)
            switch mapped {
            case .integrity where error is VaultError: throw mapped
            case .failure where (error as? PostgresError).flatMap(Self.sqlState) == "55P03" || (error as? PSQLError)?.serverInfo?[.sqlState] == "55P03":
                throw mapped
            default:
                Trace.debug("the one-statement cache hit failed (\(mapped.message)); checking everything in a transaction")
                return false
            }
        }
    }

    /// The SQLSTATE of a server error reported through PostgresNIO's legacy API.
    private static func sqlState(_ error: PostgresError) -> String? {
        if case .server(let notice) = error { return notice.fields[.sqlState] }
        return nil
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
            try populate(session)
        }
    }

    /// Names of the migrations this build knows for PostgreSQL, in order.
    static var knownMigrations: [String] { embeddedPostgresMigrations.map(\.name) }

    /// The migration that brings a team vault to each format whose data it changes (a team
    /// vault starts at format 3): format 4, the owner's signatures (FORMAT.md §9.1).
    static let formatMigrations: [UInt32: String] = [4: "0002_signed_members"]

    /// Migrations this build knows that the schema has not applied yet (as of its last check).
    var pendingMigrations: [String] { Array(Self.knownMigrations.dropFirst(schemaState.withLockedValue { $0.applied })) }

    /// Applies the pending migrations in one transaction that holds every table of the
    /// vault in `ACCESS EXCLUSIVE` mode (no reader or writer sees a half-upgraded vault),
    /// each with its data upgrade around its SQL; a vault already upgraded by another
    /// process is left as it is.
    func migrate(upgrades: [String: DataUpgrade]) throws(VaultError) {
        try transaction("BEGIN ISOLATION LEVEL READ COMMITTED",
                        locks: ["LOCK TABLE \(Self.tables.joined(separator: ", ")) IN ACCESS EXCLUSIVE MODE"], readOnly: false,
                        checkingSchema: false) { session in
            let applied = try verifySchema(session)
            for migration in embeddedPostgresMigrations.dropFirst(applied.count) {
                guard let upgrade = upgrades[migration.name] else {
                    throw VaultError.failure("this vault must be unlocked with its passphrase to be upgraded", hint: "run `vault upgrade`")
                }
                try upgrade.before(session)
                try session.script(migration.sql)
                // Statements prepared before the tables changed cannot run after ("cached plan
                // must not change result type"): prepared again from here on.
                session.forgetPreparedStatements()
                try session.execute("INSERT INTO \(Self.migrationsTable) (identifier, applied_at) VALUES (?, ?)",
                                    [migration.name.databaseValue, Date().iso8601.databaseValue])
                try upgrade.after(session)
            }
        }
        // The pool's other sessions prepared their statements against the old tables.
        close()
        _ = try checkSchema()
    }

    /// Checks that the schema holds a vault written by this build's migrations and
    /// exactly the tables, columns, constraints and indexes they create: a trigger, rule,
    /// policy, row-level security, function, view or extra column added by someone with
    /// rights on the database is an integrity failure before anything is read (the MACs
    /// and signatures catch what they change in the data anyway).
    func checkSchema() throws(VaultError) -> [String] {
        try transaction("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", locks: [], readOnly: true, checkingSchema: false) { session in
            let fingerprint = try Self.schemaFingerprint(session, schema: location.schema)
            let applied = try verifySchema(session)
            schemaState.withLockedValue {
                $0.fingerprint = fingerprint
                $0.applied = applied.count
            }
            return applied
        }
    }

    /// The schema's lines as the catalogs give them now (``schemaEntries(_:schema:)``), read
    /// without the check against the expected ones: what this build's migrations create,
    /// for the test that keeps `Migrations/postgres/NAME.schema.json` true.
    func currentSchemaEntries() throws(VaultError) -> [String] {
        try transaction("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", locks: [], readOnly: true, checkingSchema: false) { session in
            try Self.schemaEntries(session, schema: location.schema)
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


    /// The arguments of ``fingerprintSQL`` for this vault.
    private var fingerprintArguments: [DatabaseValue] { Self.fingerprintArguments(schema: location.schema) }

    /// In every transaction, before anything is committed or returned: if the catalogs'
    /// digest of the schema (``fingerprintSQL``, read once the transaction held its locks)
    /// moved since the schema was last checked, the whole schema is checked again in this
    /// transaction; a schema that is not the expected one fails (exit 7, the transaction
    /// rolled back with whatever ran in it) and marks the store refused (the agent ends).
    /// The transaction's locks keep DDL out until it ends, so what was checked is what the
    /// transaction's statements ran against.
    private func expectCheckedSchema(_ session: PostgresSession, fingerprint: SchemaDigest) throws {
        guard fingerprint != schemaState.withLockedValue({ $0.fingerprint }) else { return }
        Trace.debug("the team vault's schema changed since it was checked; checking it again")
        do {
            let applied = try verifySchema(session)
            schemaState.withLockedValue {
                $0.fingerprint = fingerprint
                $0.applied = applied.count
            }
        } catch {
            schemaState.withLockedValue { $0.refused = true }
            throw error
        }
    }

    private struct SchemaState {
        var fingerprint: SchemaDigest?
        var refused = false
        /// How many of this build's migrations the schema had at its last check.
        var applied = 0
    }
    private let schemaState = NIOLockedValueBox(SchemaState())

    /// True once a transaction found the schema changed to something other than the
    /// expected one.
    var schemaRefused: Bool { schemaState.withLockedValue { $0.refused } }

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
}
