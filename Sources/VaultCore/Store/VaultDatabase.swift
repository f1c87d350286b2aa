import CSQLiteHardening
import Foundation
import GRDB
import NIOConcurrencyHelpers
#if canImport(Glibc)
import Glibc
#endif

/// The vault's SQLite database (GRDB `DatabasePool`, WAL mode; or, for commands that
/// only read metadata, one read-only ``LeanReader`` connection on SQLite's C API).
///
/// It wraps the connection(s) privately and exposes reads and immediate write transactions; the
/// operations named for what they do live in ``Vault`` and ``UnlockedVault``.
/// Statement arguments never appear in traces or errors (GRDB's
/// `publicStatementArguments` stays off).
public final class VaultDatabase: Sendable {
    /// The SQLite connection(s); nil for a PostgreSQL vault and for a read-only file.
    private let sqlite: (any DatabaseWriter)?
    /// The read-only connection of ``openForReading(at:)`` (a file).
    private let lean: LeanReader?
    /// The PostgreSQL store; nil for a file.
    let postgres: PostgresStore?
    /// The file's path, or the PostgreSQL vault's URL without its password.
    public let path: String
    /// Opened with ``openForReading(at:)``: one read-only connection, writes fail.
    public let isReadOnly: Bool
    /// Device and inode of the file when it was opened, to notice it being removed or
    /// replaced while this process runs.
    private let identity: (dev: UInt64, ino: UInt64)?
    /// Writes of this process under way or waiting (see ``writeWithoutWaiting(_:)``).
    private let writesUnderWay = NIOLockedValueBox(0)

    /// How long a writer waits for another process's transaction before giving up:
    /// `VAULT_BUSY_TIMEOUT` seconds, default 30.
    public static var busyTimeout: TimeInterval {
        getenv("VAULT_BUSY_TIMEOUT").flatMap { TimeInterval(String(cString: $0)) }.map { min(max($0, 0), 3600) } ?? 30
    }

    private init(pool: any DatabaseWriter, path: String) {
        sqlite = pool
        lean = nil
        postgres = nil
        self.path = path
        isReadOnly = false
        identity = Self.fileIdentity(path)
    }

    private init(lean: LeanReader, path: String) {
        sqlite = nil
        self.lean = lean
        postgres = nil
        self.path = path
        isReadOnly = true
        identity = Self.fileIdentity(path)
    }

    private init(postgres: PostgresStore) {
        sqlite = nil
        lean = nil
        self.postgres = postgres
        path = postgres.location.display
        isReadOnly = false
        identity = nil
    }

    /// The SQLite connection; only file-specific code (migrations, backup, checks) uses it.
    private var pool: any DatabaseWriter {
        guard let sqlite else { preconditionFailure("a GRDB operation on a PostgreSQL vault or a read-only connection") }
        return sqlite
    }

    /// True for a vault in PostgreSQL.
    public var isPostgres: Bool { postgres != nil }

    /// The PostgreSQL vault's location (nil for a file).
    public var postgresLocation: PostgresLocation? { postgres?.location }

    static func fileIdentity(_ path: String) -> (dev: UInt64, ino: UInt64)? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return (UInt64(info.st_dev), UInt64(info.st_ino))
    }

    /// Device and inode of the file this process opened (what the agent binds to).
    public var fileIdentity: (dev: UInt64, ino: UInt64)? { identity }

    /// True while the vault path still names the file this process opened.
    public var isStillInPlace: Bool {
        if postgres != nil { return true }
        guard let identity, let now = Self.fileIdentity(path) else { return false }
        return now == identity
    }

    /// The migration that turns a format-1 vault into format 2 (FORMAT.md §9).
    public static let format2Migration = "0002_format2"
    /// The migration that turns a format-2 vault into format 3, with members (FORMAT.md §9.2).
    public static let format3Migration = "0003_members"

    /// Work done inside a migration's transaction around its SQL: the format upgrade
    /// checks the old data before the SQL runs and fills the new columns after it.
    struct DataUpgrade: Sendable {
        var before: @Sendable (Database) throws -> Void
        var after: @Sendable (Database) throws -> Void
    }

    /// The migrations, embedded at build time from `Migrations/*.sql`. A migration that
    /// changes the sealed format needs its entry in `upgrades` when the vault already
    /// holds data (its header row exists); without it that migration refuses to run.
    static func migrator(upgrades: [String: DataUpgrade] = [:]) -> DatabaseMigrator {
        var migrator = DatabaseMigrator()
        for migration in embeddedMigrations {
            migrator.registerMigration(migration.name) { db in
                let formatChange = [format2Migration, format3Migration].contains(migration.name)
                let headerRows = formatChange ? try Int.fetchOne(db, sql: "SELECT count(*) FROM vault_header") ?? 0 : 0
                guard headerRows > 0 else {
                    try db.execute(sql: migration.sql)
                    return
                }
                guard let upgrade = upgrades[migration.name] else {
                    throw VaultError.failure("this vault must be unlocked with its passphrase to be upgraded", hint: "run `vault upgrade`")
                }
                try upgrade.before(db)
                try db.execute(sql: migration.sql)
                try upgrade.after(db)
            }
        }
        return migrator
    }

    /// Names of the migrations this build knows, in order.
    public static var knownMigrations: [String] { embeddedMigrations.map(\.name) }

    private static func configuration() -> Configuration {
        var config = Configuration()
        config.busyMode = .timeout(busyTimeout)
        config.foreignKeysEnabled = true
        config.label = "gbg-vault"
        config.prepareDatabase { db in
            // The file is not trusted to run code: no functions with side effects from the
            // schema, no writable schema, no shadow-table writes (FORMAT.md §1.1).
            // Defensive mode, trusted_schema off and cell_size_check on, through the C
            // API (GRDB's multi-statement execute cost a read-only start ~0.2 ms).
            guard gbgv_sqlite_harden(db.sqliteConnection) == 0 else {
                throw VaultError.failure("this SQLite library cannot enable defensive mode")
            }
        }
        return config
    }

    /// The writing connection of a file vault. GRDB puts a WAL database in
    /// `synchronous = NORMAL`, where a commit is not flushed to the disk (it survives a
    /// crash of the process, not of the machine): a token could then be handed out and
    /// its audit record lost with the power. `FULL` flushes the WAL on every commit, so
    /// whatever a command reported as done, and every delivered token's record, is on
    /// the disk first (FORMAT.md §1).
    static func durablePool(path: String) throws -> DatabasePool {
        let pool = try DatabasePool(path: path, configuration: configuration())
        try pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA synchronous = FULL") }
        return pool
    }

    /// The `synchronous` level of the writing connection (2 = FULL), for tests and `doctor`.
    public func writerSynchronousLevel() throws(VaultError) -> Int {
        guard !isReadOnly, let writer = pool as? DatabasePool else { return -1 }
        do {
            return try writer.writeWithoutTransaction { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1 }
        } catch {
            throw Self.map(error, path: path)
        }
    }

    /// Creates a new vault at `path` (never overwriting), 0600, in a 0700 directory.
    ///
    /// The file is built complete (schema, then `populate`, which writes the header and
    /// the first audit record) in a private 0700 directory made next to `path`, then
    /// hard-linked into place: nobody can swap a symbolic link in while SQLite opens the
    /// file by name, and a vault never appears half-made. `link` fails if `path` exists.
    public static func create(at path: String, populate: (StoreDB) throws -> Void) throws(VaultError) -> VaultDatabase {
        if PostgresLocation.isURL(path) {
            let store = try PostgresStore.connect(try PostgresLocation.parse(path))
            try store.create(populate: populate)
            return VaultDatabase(postgres: store)
        }
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty, !FileManager.default.fileExists(atPath: directory) {
            do {
                try FileManager.default.createDirectory(
                    atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            } catch {
                throw .failure("cannot create the directory \(directory): \(error.localizedDescription)")
            }
        }
        var existing = stat()
        if lstat(path, &existing) == 0 {
            throw .failure("a vault already exists at \(path); it was not changed",
                           hint: "choose another path with --vault, or remove the old vault yourself")
        }
        try buildPrivately(near: path, what: "vault") { (temporary) throws(VaultError) in
            do {
                let pool = try Self.durablePool(path: temporary)
                try migrator().migrate(pool)
                try pool.writeWithoutTransaction { db in
                    try db.inTransaction(.immediate) {
                        try populate(StoreDB(db))
                        return .commit
                    }
                }
                try pool.close()
            } catch {
                throw map(error, path: path)
            }
        }
        return try open(at: path)
    }

    /// Builds a file at a temporary name inside a fresh 0700 directory next to
    /// `destination`, then links it to `destination` (never replacing anything) and
    /// removes the temporary directory.
    static func buildPrivately(near destination: String, what: String, _ build: (String) throws(VaultError) -> Void) throws(VaultError) {
        let parent = (destination as NSString).deletingLastPathComponent.isEmpty ? "." : (destination as NSString).deletingLastPathComponent
        var template = Array((parent + "/.gbg-vault-tmp-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else {
            throw .failure("cannot create \(destination): \(String(cString: strerror(errno)))")
        }
        let scratch = String(cString: made)
        defer {
            for suffix in ["", "-wal", "-shm", "-journal"] { unlink(scratch + "/file.db" + suffix) }
            rmdir(scratch)
        }
        let temporary = scratch + "/file.db"
        try build(temporary)
        chmod(temporary, 0o600)
        if link(temporary, destination) != 0 {
            let code = errno
            if code == EEXIST {
                throw .failure("\(destination) already exists; the \(what) was not written over it")
            }
            throw .failure("cannot create \(destination): \(String(cString: strerror(code)))")
        }
    }

    /// Opens an existing vault: checks the application id and that the schema is exactly
    /// what this build's migrations create (FORMAT.md §1.1). Pending migrations are
    /// applied only by ``migrate(upgrade:)``, when the vault is unlocked.
    public static func open(at path: String) throws(VaultError) -> VaultDatabase {
        try open(at: path, readOnly: false)
    }

    /// Opens an existing vault for metadata reads (`list`, `show`, `history`, `audit`,
    /// `env list/show`, `member list`, completion): one read-only ``LeanReader``
    /// connection instead of a GRDB pool, with the same application-id and schema checks
    /// as ``open(at:)``, each read in one snapshot. Writes through it fail.
    public static func openForReading(at path: String) throws(VaultError) -> VaultDatabase {
        try open(at: path, readOnly: true)
    }

    /// The vault id and file identity of the vault at `path`, the least work that finds
    /// its agent: one read-only connection, the application id, one column of the header.
    /// The schema is not checked here: the agent serves only the file it opened and
    /// checked itself, and the client sends this file's identity for it to compare.
    public static func agentLookup(at path: String) throws(VaultError) -> (vaultID: [UInt8], dev: UInt64, ino: UInt64) {
        let info = try existingVaultFile(path)
        // The SQLite C API directly (CSQLiteHardening): a GRDB queue would start and
        // dispose of a dispatch queue, which costs this path a worker thread.
        var vaultID = [UInt8](repeating: 0, count: VaultHeader.vaultIDBytes)
        let result = gbgv_read_vault_id(path, Labels.applicationID, &vaultID, Int32(vaultID.count))
        switch Int(result) {
        case Int(GBGV_LOOKUP_OK): break
        case Int(GBGV_LOOKUP_NOT_A_VAULT): throw .integrity("\(path) is not a gbg-vault vault")
        case Int(GBGV_LOOKUP_NO_HEADER): throw .integrity("the vault header is missing")
        default: throw .failure("cannot open \(path)")
        }
        return (vaultID, UInt64(info.st_dev), UInt64(info.st_ino))
    }

    /// The `stat` of `path`, which must be an existing regular file (exit 6 when missing).
    private static func existingVaultFile(_ path: String) throws(VaultError) -> stat {
        var info = stat()
        guard stat(path, &info) == 0 else {
            if errno == ENOENT {
                throw .notFound("no vault at \(path)")
            }
            throw .failure("cannot open \(path): \(String(cString: strerror(errno)))")
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw .failure("\(path) is not a regular file")
        }
        return info
    }

    private static func open(at path: String, readOnly: Bool) throws(VaultError) -> VaultDatabase {
        if PostgresLocation.isURL(path) {
            let store = try PostgresStore.connect(try PostgresLocation.parse(path))
            _ = try store.checkSchema()
            return VaultDatabase(postgres: store)
        }
        _ = try existingVaultFile(path)
        do {
            Trace.debug("opening \(path)\(readOnly ? " read-only" : "")")
            let database = readOnly
                ? VaultDatabase(lean: try LeanReader(path: path, busyTimeout: busyTimeout), path: path)
                : VaultDatabase(pool: try Self.durablePool(path: path), path: path)
            try database.checkIdentity()
            Trace.debug("application id checked")
            try database.checkSchema()
            Trace.debug("opened \(path): schema verified, \(database.appliedCount) of \(knownMigrations.count) migrations applied")
            return database
        } catch {
            throw VaultDatabase.map(error, path: path)
        }
    }

    private func checkIdentity() throws {
        let (applicationID, tableCount) = try storeRead { db in
            (try Int32.fetchOne(db, sql: "PRAGMA application_id") ?? 0,
             try Int.fetchOne(db, sql: "SELECT count(*) FROM sqlite_master") ?? 0)
        }
        guard applicationID == Labels.applicationID else {
            throw VaultError.integrity(tableCount == 0
                ? "\(path) is an empty file, not a gbg-vault vault"
                : "\(path) is not a gbg-vault vault (SQLite application_id \(applicationID))")
        }
    }

    /// One line per schema object: type, name, table and its SQL text.
    static func schemaEntries(_ db: StoreDB) throws -> [String] {
        try Row.fetchAll(db, sql: """
            SELECT type, name, tbl_name, sql FROM sqlite_master
            WHERE name NOT IN ('sqlite_stat1', 'sqlite_stat4') ORDER BY type, name
            """).map { row in
            "\(row["type"] as String? ?? "?") \(row["name"] as String? ?? "?") on \(row["tbl_name"] as String? ?? "?"): \(row["sql"] as String? ?? "")"
        }
    }

    nonisolated(unsafe) private static var expectedSchemaCache: [String: [String]] = [:]
    private static let expectedSchemaLock = NSLock()

    /// GRDB's own table of applied migrations, as its migrator creates it.
    static let migrationsTableSQL = "CREATE TABLE grdb_migrations (identifier TEXT NOT NULL PRIMARY KEY)"

    /// The schema that the migrations up to `last` create (FORMAT.md §1.1). Building it
    /// in memory costs SQLite a schema re-parse per DDL statement (~4 ms on every open),
    /// so it is computed once and committed as `Migrations/NAME.schema.json`, embedded at
    /// build time; a unit test checks each file against GRDB's migrator (and rewrites
    /// them with `GBG_VAULT_WRITE_SCHEMA=1`).
    static func expectedSchema(upTo last: String) throws -> [String] {
        if let embedded = embeddedSchemas[last], !embedded.isEmpty { return embedded }
        return try builtSchema(upTo: last)
    }

    /// The expected schema built in memory from the migrations' SQL (used when no
    /// `Migrations/NAME.schema.json` is embedded, and by the test that writes those files).
    static func builtSchema(upTo last: String) throws -> [String] {
        expectedSchemaLock.lock()
        defer { expectedSchemaLock.unlock() }
        if let cached = expectedSchemaCache[last] { return cached }
        let queue = try DatabaseQueue()
        let entries = try queue.inDatabase { db -> [String] in
            try db.inTransaction {
                try db.execute(sql: migrationsTableSQL)
                for migration in embeddedMigrations {
                    try db.execute(sql: migration.sql)
                    if migration.name == last { break }
                }
                return .commit
            }
            return try schemaEntries(StoreDB(db))
        }
        expectedSchemaCache[last] = entries
        return entries
    }

    /// The schema GRDB's migrator creates up to `last` (for the test that keeps
    /// ``expectedSchema(upTo:)`` honest).
    static func migratorSchema(upTo last: String) throws -> [String] {
        let queue = try DatabaseQueue()
        try migrator().migrate(queue, upTo: last)
        return try queue.read { db in try schemaEntries(StoreDB(db)) }
    }

    /// The identifiers of applied migrations, in order; the file's schema must be exactly
    /// what they create: an extra trigger, view, table, index or column is an integrity
    /// failure before anything else is read.
    private func checkSchema() throws {
        let applied = try storeRead { db -> [String] in
            // (Not `db.tableExists`: GRDB's schema introspection costs a read-only start
            // more than this whole check.)
            guard try Int.fetchOne(db, sql: "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'grdb_migrations'") == 1
            else { return [] }
            return try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations")
        }
        let known = Self.knownMigrations
        guard !applied.isEmpty else { throw VaultError.integrity("\(path) records no schema migration") }
        if let unknown = applied.first(where: { !known.contains($0) }) {
            throw VaultError.newerVersion("this vault was written by a newer version of gbg-vault (its schema has migration '\(unknown.sanitisedForDisplay(limit: 60))', which this build does not know)")
        }
        let ordered = known.filter { applied.contains($0) }
        guard ordered == Array(known.prefix(ordered.count)), ordered.count == applied.count else {
            throw VaultError.integrity("the vault's recorded migrations are not a prefix of this build's")
        }
        let expected = try Self.expectedSchema(upTo: ordered.last!)
        Trace.debug("expected schema ready")
        let actual = try storeRead(Self.schemaEntries)
        guard actual == expected else {
            let extra = Set(actual).subtracting(expected).map { $0.prefix(while: { $0 != ":" }) }.sorted()
            let missing = Set(expected).subtracting(actual).map { $0.prefix(while: { $0 != ":" }) }.sorted()
            var parts: [String] = []
            if !extra.isEmpty { parts.append("unexpected or altered: " + extra.joined(separator: ", ")) }
            if !missing.isEmpty { parts.append("missing or altered: " + missing.joined(separator: ", ")) }
            throw VaultError.integrity("the vault's database schema is not the one gbg-vault creates (\(parts.joined(separator: "; ").sanitisedForDisplay(limit: 300)))")
        }
        appliedCount = ordered.count
    }

    nonisolated(unsafe) private var appliedCount = 0

    /// Migrations this build knows that the file has not applied yet.
    public var pendingMigrations: [String] { postgres != nil ? [] : Array(Self.knownMigrations.dropFirst(appliedCount)) }

    /// Applies pending migrations; a format change runs its upgrade in the same transaction.
    func migrate(upgrades: [String: DataUpgrade]) throws(VaultError) {
        if postgres != nil { return }
        do {
            try Self.migrator(upgrades: upgrades).migrate(pool)
            appliedCount = Self.knownMigrations.count
        } catch {
            throw Self.map(error, path: path)
        }
    }

    /// Applied migration identifiers, for `vault doctor`.
    public func appliedMigrations() throws(VaultError) -> [String] {
        if let postgres { return try postgres.checkSchema() }
        do {
            if lean != nil { return try storeRead { db in try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations") }.sorted() }
            return try pool.read { db in try Self.migrator().appliedIdentifiers(db).sorted() }
        } catch {
            throw Self.map(error, path: path)
        }
    }

    // MARK: - Transactions

    /// A read in a consistent snapshot.
    /// A read in one snapshot on the file: the lean read-only connection of
    /// ``openForReading(at:)``, or a reader of the pool. Errors are GRDB's.
    private func storeRead<T>(_ body: (StoreDB) throws -> T) throws -> T {
        if let lean { return try lean.read { reader in try body(StoreDB(lean: reader)) } }
        return try pool.read { db in try body(StoreDB(db)) }
    }

    public func read<T>(_ body: (StoreDB) throws -> T) throws(VaultError) -> T {
        if let postgres { return try postgres.read(body) }
        do {
            return try storeRead(body)
        } catch {
            throw Self.map(error, path: path)
        }
    }

    /// A write in a `BEGIN IMMEDIATE` transaction, so concurrent processes queue on the
    /// busy timeout instead of failing on a stale snapshot. All or nothing.
    public func write<T>(_ body: (StoreDB) throws -> T) throws(VaultError) -> T {
        if let postgres { return try postgres.write(body) }
        if lean != nil { throw .failure("internal error: a write through the read-only connection of \(path)") }
        writesUnderWay.withLockedValue { $0 += 1 }
        defer { writesUnderWay.withLockedValue { $0 -= 1 } }
        do {
            return try pool.writeWithoutTransaction { db in
                var result: T?
                try db.inTransaction(.immediate) {
                    result = try body(StoreDB(db))
                    return .commit
                }
                return result!
            }
        } catch {
            throw Self.map(error, path: path)
        }
    }

    /// The same immediate write transaction as ``write(_:)``, for a thread that must not
    /// wait (the agent's event loop): nil, with nothing done, when another write of this
    /// process is under way or another process holds the file's write lock (the busy
    /// handler is off while the transaction begins). A file vault only.
    public func writeWithoutWaiting<T>(_ body: (StoreDB) throws -> T) throws(VaultError) -> T? {
        guard postgres == nil, lean == nil else { return nil }
        guard writesUnderWay.withLockedValue({ (count: inout Int) -> Bool in
            guard count == 0 else { return false }
            count += 1
            return true
        }) else { return nil }
        defer { writesUnderWay.withLockedValue { $0 -= 1 } }
        do {
            return try pool.writeWithoutTransaction { db -> T? in
                // The busy handler off while the transaction begins, and back on whatever
                // happens, before anything else runs on this connection.
                let connection = db.sqliteConnection
                _ = gbgv_busy_timeout(connection, 0)
                let begun: Result<Void, any Error> = Result { try db.execute(sql: "BEGIN IMMEDIATE TRANSACTION") }
                _ = gbgv_busy_timeout(connection, Int32(min(Self.busyTimeout * 1000, Double(Int32.max))))
                if case .failure(let error) = begun {
                    if let error = error as? DatabaseError, error.resultCode == .SQLITE_BUSY { return nil }
                    throw error
                }
                do {
                    let result = try body(StoreDB(db))
                    try db.commit()
                    return result
                } catch {
                    try? db.rollback()
                    throw error
                }
            }
        } catch {
            throw Self.map(error, path: path)
        }
    }

    /// A consistent online copy to `destination` (SQLite backup API), created 0600 in a
    /// private directory and linked into place, so it never overwrites a file and never
    /// writes through a symbolic link.
    public func backup(to destination: String) throws(VaultError) {
        var existing = stat()
        if lstat(destination, &existing) == 0 {
            throw .failure("\(destination) already exists; a backup never overwrites a file")
        }
        if postgres != nil {
            throw .usage("`vault backup` copies a vault file; for a PostgreSQL vault use `vault copy --to FILE` (or the server's own backups)")
        }
        try Self.buildPrivately(near: destination, what: "backup") { (temporary) throws(VaultError) in
            do {
                let target = try DatabaseQueue(path: temporary)
                try pool.backup(to: target)
                try target.writeWithoutTransaction { db in
                    try db.execute(sql: "PRAGMA journal_mode = DELETE")
                }
                try target.close()
            } catch {
                throw Self.map(error, path: destination)
            }
        }
    }

    /// `PRAGMA integrity_check` and `PRAGMA foreign_key_check` results; empty when sound.
    public func integrityProblems() throws(VaultError) -> [String] {
        // PostgreSQL enforces its foreign keys and checks its pages itself.
        if postgres != nil { return [] }
        return try read { db in
            var problems = try String.fetchAll(db, sql: "PRAGMA integrity_check").filter { $0 != "ok" }
            let foreignKeyFailures = try Row.fetchAll(db, sql: "PRAGMA foreign_key_check")
            problems += foreignKeyFailures.map { "foreign key violation in \($0[0] as String? ?? "?")" }
            return problems
        }
    }

    /// The SQLite library version.
    public func sqliteVersion() throws(VaultError) -> String {
        if let postgres { return "PostgreSQL " + (try postgres.serverReport().version) }
        return try read { db in try String.fetchOne(db, sql: "SELECT sqlite_version()") ?? "?" }
    }

    // MARK: - Errors

    /// True when the file system holding `path` has no space left (SQLite reports some
    /// ENOSPC cases, such as growing the shared-memory file, as I/O errors).
    static func diskIsFull(near path: String) -> Bool {
        var info = statvfs()
        let directory = (path as NSString).deletingLastPathComponent
        guard statvfs(directory.isEmpty ? "." : directory, &info) == 0 else { return false }
        return info.f_bavail == 0
    }

    /// Maps storage errors to vault errors without leaking statement arguments.
    static func map(_ error: any Error, path: String) -> VaultError {
        if let error = error as? VaultError { return error }
        guard let error = error as? DatabaseError else {
            return .failure("storage error: \(String(describing: error).sanitisedForDisplay())")
        }
        switch error.resultCode {
        case .SQLITE_NOTADB:
            return .integrity("\(path) is not a vault database, or is damaged (file is not a database)")
        case .SQLITE_CORRUPT:
            return .integrity("the vault database at \(path) is corrupt")
        case .SQLITE_FULL:
            return .failure("the disk is full: the change was not written and the vault is unchanged")
        case .SQLITE_BUSY, .SQLITE_LOCKED:
            return .failure("the vault is locked by another process (waited \(Int(busyTimeout)) s); nothing was changed",
                            hint: "retry when the other vault process has finished")
        case .SQLITE_READONLY:
            return .failure("the vault at \(path) is read-only; nothing was changed")
        case .SQLITE_CANTOPEN:
            return .failure("cannot open the vault database at \(path)")
        case .SQLITE_IOERR:
            if diskIsFull(near: path) {
                return .failure("the disk is full: the change was not written and the vault is unchanged")
            }
            return .failure("input/output error on \(path); nothing was changed")
        case .SQLITE_CONSTRAINT:
            return .integrity("the vault data violates a schema constraint (\((error.message ?? "constraint").sanitisedForDisplay(limit: 200)))")
        default:
            return .failure("storage error: \((error.message ?? "SQLite error \(error.resultCode.rawValue)").sanitisedForDisplay(limit: 200))")
        }
    }
}
