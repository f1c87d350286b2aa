import CSQLiteHardening
import Foundation
import GRDB
import NIOConcurrencyHelpers
#if canImport(Glibc)
import Glibc
#endif

/// A vault file opened for reading and writing: a GRDB `DatabasePool` (WAL mode), every
/// write an immediate transaction.
/// Statement arguments never appear in traces or errors (GRDB's
/// `publicStatementArguments` stays off).
final class FileStore: SQLiteFileStore {
    var isReadOnlyHere: Bool { false }
    let file: SQLiteFile
    private let pool: DatabasePool

    private init(pool: DatabasePool, path: String) {
        self.pool = pool
        file = SQLiteFile(path: path)
    }

    private static func configuration() -> Configuration {
        var config = Configuration()
        config.busyMode = .timeout(Stores.busyTimeout)
        config.foreignKeysEnabled = true
        config.label = "gbg-vault"
        config.prepareDatabase { db in
            // The file is not trusted to run code: no functions with side effects from the
            // schema, no writable schema, no shadow-table writes (FORMAT.md §1.1): defensive
            // mode, trusted_schema off and cell_size_check on, set by one C call.
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
    func writerSynchronousLevel() throws(VaultError) -> Int {
        do {
            return try pool.writeWithoutTransaction { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1 }
        } catch {
            throw storageError(error)
        }
    }

    /// Creates a new vault at `path` (never overwriting), 0600, in a 0700 directory.
    ///
    /// The file is built complete (schema, then `populate`, which writes the header and
    /// the first audit record) in a private 0700 directory made next to `path`, then
    /// hard-linked into place: nobody can swap a symbolic link in while SQLite opens the
    /// file by name, and a vault never appears half-made. `link` fails if `path` exists.
    static func create(at path: String, populate: (StoreDB) throws -> Void) throws(VaultError) -> FileStore {
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
        try SQLiteFile.buildPrivately(near: path, what: "vault") { (temporary) throws(VaultError) in
            do {
                let pool = try Self.durablePool(path: temporary)
                try SQLiteFile.migrator().migrate(pool)
                try pool.writeWithoutTransaction { db in
                    try db.inTransaction(.immediate) {
                        try populate(SQLiteConnection(db))
                        return .commit
                    }
                }
                try pool.close()
            } catch {
                throw SQLiteFile.map(error, path: path)
            }
        }
        return try open(at: path)
    }

    /// Opens an existing vault file: the application id, then the schema, which must be
    /// exactly what this build's migrations create (FORMAT.md §1.1).
    static func open(at path: String) throws(VaultError) -> FileStore {
        _ = try SQLiteFile.existingVaultFile(path)
        do {
            Trace.debug("opening \(path)")
            let store = FileStore(pool: try durablePool(path: path), path: path)
            try store.pool.read { db in try store.file.checkOpened(SQLiteConnection(db)) }
            Trace.debug("opened \(path): schema verified, \(SQLiteFile.knownMigrations.count - store.pendingMigrations.count) of \(SQLiteFile.knownMigrations.count) migrations applied")
            return store
        } catch {
            throw SQLiteFile.map(error, path: path)
        }
    }

    func migrate(upgrades: [String: DataUpgrade]) throws(VaultError) {
        do {
            try SQLiteFile.migrator(upgrades: upgrades).migrate(pool)
            try pool.read { db in try file.verifySchema(SQLiteConnection(db)) }
        } catch {
            throw storageError(error)
        }
    }

    func appliedMigrations() throws(VaultError) -> [String] {
        do {
            return try pool.read { db in try SQLiteFile.migrator().appliedIdentifiers(db).sorted() }
        } catch {
            throw storageError(error)
        }
    }

    func read<T>(_ body: (StoreDB) throws -> T) throws(VaultError) -> T {
        do {
            return try pool.read { db in
                let connection = SQLiteConnection(db)
                try file.expectCheckedSchema(connection)
                return try body(connection)
            }
        } catch {
            throw storageError(error)
        }
    }

    /// A write in a `BEGIN IMMEDIATE` transaction, so concurrent processes queue on the
    /// busy timeout instead of failing on a stale snapshot.
    func write<T>(prefetching queries: [StoreQuery], _ body: (StoreDB) throws -> T) throws(VaultError) -> T {
        do {
            return try pool.writeWithoutTransaction { db in
                var result: T?
                try db.inTransaction(.immediate) {
                    let connection = SQLiteConnection(db)
                    try file.expectCheckedSchema(connection)
                    try FaultPoint.reached(FaultPoint.writeBegins)
                    result = try body(connection)
                    try FaultPoint.reached(FaultPoint.writeCommits)
                    return .commit
                }
                try FaultPoint.reached(FaultPoint.writeCommitted)
                return result!
            }
        } catch {
            throw storageError(error)
        }
    }

    /// A consistent online copy (SQLite's backup API), created 0600 in a private directory
    /// and linked into place, so it never overwrites a file and never writes through a
    /// symbolic link.
    func backup(to destination: String) throws(VaultError) {
        var existing = stat()
        if lstat(destination, &existing) == 0 {
            throw .failure("\(destination) already exists; a backup never overwrites a file")
        }
        try SQLiteFile.buildPrivately(near: destination, what: "backup") { (temporary) throws(VaultError) in
            do {
                let target = try DatabaseQueue(path: temporary)
                try pool.backup(to: target)
                try target.writeWithoutTransaction { db in
                    try db.execute(sql: "PRAGMA journal_mode = DELETE")
                }
                try target.close()
            } catch {
                throw SQLiteFile.map(error, path: destination)
            }
        }
    }

    func doctorChecks() throws(VaultError) -> [DoctorReport.Check] {
        var checks = file.fileChecks()
        let journal = try read { db in try String.fetchOne(db, sql: "PRAGMA journal_mode") ?? "?" }
        checks.append(.init(name: "journal", status: journal == "wal" ? "ok" : "warn", detail: "journal_mode=\(journal)"))
        let synchronous = try writerSynchronousLevel()
        checks.append(.init(name: "durability", status: synchronous == 2 ? "ok" : "warn",
                            detail: synchronous == 2 ? "synchronous=FULL (every commit flushed to disk)" : "synchronous=\(synchronous) (expected FULL)"))
        checks += try read { db in try SQLiteFile.databaseChecks(db) }
        return checks
    }
}

/// A vault file opened for metadata reads (`list`, `show`, `history`, `audit`, `env
/// list/show`, `member list`, completion): one read-only ``LeanReader`` connection instead
/// of a GRDB pool, with the same identity and schema checks as ``FileStore``, each read in
/// one snapshot. Writes through it fail.
///
/// A file in a place this process cannot write (a read-only mount, a directory or file
/// without write permission) is opened as immutable (``SQLiteFile/immutableURI(_:)``): SQLite
/// could not create the WAL's index there. Every command that writes then gets
/// ``SQLiteFile/readOnlyRefusal(_:)``.
final class FileReader: SQLiteFileStore {
    let file: SQLiteFile
    private let reader: LeanReader
    /// Opened as immutable, because the file or its directory cannot be written.
    let readOnlyLocation: Bool
    var isReadOnlyHere: Bool { readOnlyLocation }

    private init(reader: LeanReader, path: String, readOnlyLocation: Bool) {
        self.reader = reader
        self.readOnlyLocation = readOnlyLocation
        file = SQLiteFile(path: path)
    }

    static func open(at path: String) throws(VaultError) -> FileReader {
        _ = try SQLiteFile.existingVaultFile(path)
        let readOnlyLocation = SQLiteFile.isReadOnlyLocation(path)
        let location = readOnlyLocation ? try SQLiteFile.immutableURI(path) : path
        do {
            Trace.debug("opening \(path) read-only\(readOnlyLocation ? " (immutable: the file or its directory cannot be written)" : "")")
            let store = FileReader(reader: try LeanReader(path: location, uri: readOnlyLocation, busyTimeout: Stores.busyTimeout),
                                   path: path, readOnlyLocation: readOnlyLocation)
            try store.reader.read { connection in try store.file.checkOpened(connection) }
            Trace.debug("opened \(path): schema verified")
            return store
        } catch {
            throw SQLiteFile.map(error, path: path)
        }
    }

    func migrate(upgrades: [String: DataUpgrade]) throws(VaultError) {
        throw .failure("internal error: a migration through the read-only connection of \(path)")
    }

    func appliedMigrations() throws(VaultError) -> [String] {
        try read { db in try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations") }.sorted()
    }

    func read<T>(_ body: (StoreDB) throws -> T) throws(VaultError) -> T {
        do {
            return try reader.read { connection in
                try file.expectCheckedSchema(connection)
                return try body(connection)
            }
        } catch {
            throw storageError(error)
        }
    }

    func write<T>(prefetching queries: [StoreQuery], _ body: (StoreDB) throws -> T) throws(VaultError) -> T {
        guard readOnlyLocation else { throw .failure("internal error: a write through the read-only connection of \(path)") }
        throw SQLiteFile.readOnlyRefusal(path)
    }

    /// A vault that cannot be written here is copied as it is (it is immutable: no WAL).
    func backup(to destination: String) throws(VaultError) {
        guard readOnlyLocation else { throw .failure("internal error: a backup through the read-only connection of \(path)") }
        var existing = stat()
        if lstat(destination, &existing) == 0 {
            throw .failure("\(destination) already exists; a backup never overwrites a file")
        }
        let source = try SQLiteFile.immutableURI(path)
        try SQLiteFile.buildPrivately(near: destination, what: "backup") { (temporary) throws(VaultError) in
            do {
                var configuration = Configuration()
                configuration.readonly = true
                let original = try DatabaseQueue(path: source, configuration: configuration)
                let target = try DatabaseQueue(path: temporary)
                try original.backup(to: target)
                try target.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA journal_mode = DELETE") }
                try target.close()
                try original.close()
            } catch {
                throw SQLiteFile.map(error, path: destination)
            }
        }
    }

    func doctorChecks() throws(VaultError) -> [DoctorReport.Check] {
        try file.fileChecks() + read { db in try SQLiteFile.databaseChecks(db) }
    }
}

/// What ``FileStore`` and ``FileReader`` answer alike, from their ``SQLiteFile``.
protocol SQLiteFileStore: VaultStore {
    var file: SQLiteFile { get }
}

extension SQLiteFileStore {
    var path: String { file.path }
    var knownMigrations: [String] { SQLiteFile.knownMigrations }
    var formatMigrations: [UInt32: String] { SQLiteFile.formatMigrations }
    var pendingMigrations: [String] { file.pendingMigrations }
    var schemaRefused: Bool { file.schemaRefused }
    var isStillInPlace: Bool { file.isStillInPlace }
    /// A local read is cheap: the agent looks before every request it serves.
    var headerPollInterval: TimeInterval { 0 }
    var agentSocketPath: String? { file.agentSocketPath }
    /// The path as configured, made absolute, with `.` and `..` removed by their names,
    /// symbolic links not resolved (FORMAT.md §12.1): a link planted where the vault was is
    /// the same location, compared with what was seen there.
    var locationIdentity: String { SQLiteFile.lexicalAbsolutePath(path) }
    func agentLaunch(vaultPath: String) -> AgentLaunchNames { AgentLaunchNames(vaultArgument: vaultPath) }
    func isSameVault(as destination: String) -> Bool { file.isSameVault(as: destination) }
    func storageError(_ error: any Error) -> VaultError { SQLiteFile.map(error, path: path) }

    func integrityProblems() throws(VaultError) -> [String] {
        try read { db in try SQLiteFile.integrityProblems(db) }
    }
}
