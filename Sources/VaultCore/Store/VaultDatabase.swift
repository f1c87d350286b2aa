import Foundation
import GRDB
#if canImport(Glibc)
import Glibc
#endif

/// The vault's SQLite database (GRDB `DatabasePool`, WAL mode).
///
/// It wraps the pool privately and exposes reads and immediate write transactions; the
/// operations named for what they do live in ``Vault`` and ``UnlockedVault``.
/// Statement arguments never appear in traces or errors (GRDB's
/// `publicStatementArguments` stays off).
public final class VaultDatabase: Sendable {
    private let pool: DatabasePool
    public let path: String
    /// Device and inode of the file when it was opened, to notice it being removed or
    /// replaced while this process runs.
    private let identity: (dev: UInt64, ino: UInt64)?

    /// How long a writer waits for another process's transaction before giving up:
    /// `VAULT_BUSY_TIMEOUT` seconds, default 30.
    public static var busyTimeout: TimeInterval {
        getenv("VAULT_BUSY_TIMEOUT").flatMap { TimeInterval(String(cString: $0)) }.map { min(max($0, 0), 3600) } ?? 30
    }

    private init(pool: DatabasePool, path: String) {
        self.pool = pool
        self.path = path
        identity = Self.fileIdentity(path)
    }

    private static func fileIdentity(_ path: String) -> (dev: UInt64, ino: UInt64)? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return (UInt64(info.st_dev), UInt64(info.st_ino))
    }

    /// True while the vault path still names the file this process opened.
    public var isStillInPlace: Bool {
        guard let identity, let now = Self.fileIdentity(path) else { return false }
        return now == identity
    }

    /// The migrations, embedded at build time from `Migrations/*.sql`.
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        for migration in embeddedMigrations {
            migrator.registerMigration(migration.name) { db in
                try db.execute(sql: migration.sql)
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
        return config
    }

    /// Creates a new vault file, 0600, in a 0700 directory. Never overwrites.
    public static func create(at path: String) throws(VaultError) -> VaultDatabase {
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty, !FileManager.default.fileExists(atPath: directory) {
            do {
                try FileManager.default.createDirectory(
                    atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            } catch {
                throw .failure("cannot create the directory \(directory): \(error.localizedDescription)")
            }
        }
        // O_EXCL: an existing file (or a symlink, even dangling) is never overwritten.
        let fd = Glibc.open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        if fd < 0 {
            let code = errno
            if code == EEXIST {
                throw .failure("a vault already exists at \(path); it was not changed",
                               hint: "choose another path with --vault, or remove the old vault yourself")
            }
            throw .failure("cannot create \(path): \(String(cString: strerror(code)))")
        }
        fchmod(fd, 0o600)
        close(fd)
        do {
            let database = try VaultDatabase(pool: DatabasePool(path: path, configuration: configuration()), path: path)
            try database.migrate()
            return database
        } catch {
            unlink(path)
            unlink(path + "-wal")
            unlink(path + "-shm")
            throw VaultDatabase.map(error, path: path)
        }
    }

    /// Opens an existing vault and applies any pending migrations.
    public static func open(at path: String) throws(VaultError) -> VaultDatabase {
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
        do {
            let database = try VaultDatabase(pool: DatabasePool(path: path, configuration: configuration()), path: path)
            try database.checkIdentity()
            try database.migrate()
            return database
        } catch {
            throw VaultDatabase.map(error, path: path)
        }
    }

    private func checkIdentity() throws {
        let (applicationID, tableCount) = try pool.read { db in
            (try Int32.fetchOne(db, sql: "PRAGMA application_id") ?? 0,
             try Int.fetchOne(db, sql: "SELECT count(*) FROM sqlite_master") ?? 0)
        }
        guard applicationID == Labels.applicationID else {
            throw VaultError.integrity(tableCount == 0
                ? "\(path) is an empty file, not a gbg-vault vault"
                : "\(path) is not a gbg-vault vault (SQLite application_id \(applicationID))")
        }
    }

    private func migrate() throws {
        let migrator = Self.migrator
        if try pool.read({ try migrator.hasBeenSuperseded($0) }) {
            throw VaultError.newerVersion("this vault was written by a newer version of gbg-vault (its schema has migrations this build does not know)")
        }
        if try pool.read({ try !migrator.hasCompletedMigrations($0) }) {
            try migrator.migrate(pool)
        }
    }

    /// Applied migration identifiers, for `vault doctor`.
    public func appliedMigrations() throws(VaultError) -> [String] {
        try read { db in try Self.migrator.appliedIdentifiers(db).sorted() }
    }

    // MARK: - Transactions

    /// A read in a consistent snapshot.
    public func read<T>(_ body: (Database) throws -> T) throws(VaultError) -> T {
        do {
            return try pool.read(body)
        } catch {
            throw Self.map(error, path: path)
        }
    }

    /// A write in a `BEGIN IMMEDIATE` transaction, so concurrent processes queue on the
    /// busy timeout instead of failing on a stale snapshot. All or nothing.
    public func write<T>(_ body: (Database) throws -> T) throws(VaultError) -> T {
        do {
            return try pool.writeWithoutTransaction { db in
                var result: T?
                try db.inTransaction(.immediate) {
                    result = try body(db)
                    return .commit
                }
                return result!
            }
        } catch {
            throw Self.map(error, path: path)
        }
    }

    /// A consistent online copy to `destination` (SQLite backup API), created 0600.
    public func backup(to destination: String) throws(VaultError) {
        let fd = Glibc.open(destination, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        if fd < 0 {
            let code = errno
            if code == EEXIST { throw .failure("\(destination) already exists; a backup never overwrites a file") }
            throw .failure("cannot create \(destination): \(String(cString: strerror(code)))")
        }
        close(fd)
        do {
            let target = try DatabaseQueue(path: destination)
            try pool.backup(to: target)
            try target.writeWithoutTransaction { db in
                try db.execute(sql: "PRAGMA journal_mode = DELETE")
            }
            try target.close()
        } catch {
            unlink(destination)
            throw Self.map(error, path: destination)
        }
    }

    /// `PRAGMA integrity_check` and `PRAGMA foreign_key_check` results; empty when sound.
    public func integrityProblems() throws(VaultError) -> [String] {
        try read { db in
            var problems = try String.fetchAll(db, sql: "PRAGMA integrity_check").filter { $0 != "ok" }
            let foreignKeyFailures = try Row.fetchAll(db, sql: "PRAGMA foreign_key_check")
            problems += foreignKeyFailures.map { "foreign key violation in \($0[0] as String? ?? "?")" }
            return problems
        }
    }

    /// The SQLite library version.
    public func sqliteVersion() throws(VaultError) -> String {
        try read { db in try String.fetchOne(db, sql: "SELECT sqlite_version()") ?? "?" }
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
            return .integrity("the vault data violates a schema constraint (\(error.message ?? "constraint"))")
        default:
            return .failure("storage error: \(error.message ?? "SQLite error \(error.resultCode.rawValue)")")
        }
    }
}
