import Foundation
import GRDB

/// Where a vault lives, behind one interface. Three implementations:
///
/// - ``FileStore``: a SQLite file through a GRDB `DatabasePool` (WAL), for everything
///   that unlocks or writes;
/// - ``FileReader``: the same file opened read-only on one ``LeanReader`` connection, for
///   the commands that only read metadata (`list`, `show`, `audit`, completion);
/// - ``PostgresStore``: a schema in PostgreSQL (a team vault).
///
/// The code above reads and writes through ``read(_:)`` and ``write(_:)`` (one snapshot or
/// one transaction, a ``StoreConnection``) and never asks which store it has: what differs
/// (the SQL dialect, migrations, the checks of `vault doctor`, how the agent names its
/// socket) is answered here by the implementation.
protocol VaultStore: AnyObject, Sendable {
    /// The file's path, or the PostgreSQL vault's URL without its password.
    var path: String { get }

    /// A read in one consistent snapshot.
    func read<T>(_ body: (StoreDB) throws -> T) throws(VaultError) -> T
    /// A write in one transaction, queued behind other writers; all or nothing. A store
    /// that pays a round trip per statement sends `prefetching` together with the
    /// transaction's start and hands their rows back when `body` runs the same queries
    /// (PostgreSQL); a local file runs them when they come (the queries must read only, and
    /// `body` must run them before it writes).
    func write<T>(prefetching queries: [StoreQuery], _ body: (StoreDB) throws -> T) throws(VaultError) -> T

    /// The team store's cache hit in one statement (see the extension's defaults).
    func stateDigestQuery(_ reads: [StoreQuery]) -> StoreQuery?
    func appendIfUnchanged(_ append: UnchangedAppend) throws(VaultError) -> Bool

    /// Names of the migrations this build knows for this store, in order.
    var knownMigrations: [String] { get }
    /// Migrations this build knows that the store has not applied yet.
    var pendingMigrations: [String] { get }
    /// Applied migration identifiers (`vault doctor`).
    func appliedMigrations() throws(VaultError) -> [String]
    /// The migration that brings this store to each format version whose data it changes
    /// (the keys of ``migrate(upgrades:)``'s `upgrades`).
    var formatMigrations: [UInt32: String] { get }
    /// Applies pending migrations; a format change runs its upgrade in the same transaction.
    func migrate(upgrades: [String: DataUpgrade]) throws(VaultError)
    /// True once a transaction found the schema changed to something other than the
    /// expected one (the agent then ends).
    var schemaRefused: Bool { get }

    /// True while the vault is still the one this process opened (a file not removed,
    /// moved or replaced).
    var isStillInPlace: Bool { get }
    /// True when this process cannot write the vault at all (a file in a read-only place):
    /// every change is refused before it starts.
    var isReadOnlyHere: Bool { get }
    /// How often the agent re-reads the header between requests, in seconds (each
    /// operation checks the key epoch in its own transaction anyway).
    var headerPollInterval: TimeInterval { get }
    /// The agent socket of this vault (PROTOCOL.md §1); nil when it cannot be named.
    var agentSocketPath: String? { get }
    /// Where this store is, as the record of known vaults names it (FORMAT.md §12): a file
    /// vault's absolute path with symbolic links resolved; a team vault's location identity.
    var locationIdentity: String { get }
    /// How the launcher names this vault to the agent it starts (`vaultPath` as the
    /// command was given it).
    func agentLaunch(vaultPath: String) -> AgentLaunchNames

    /// A consistent copy to a new file at `destination` (`vault backup`).
    func backup(to destination: String) throws(VaultError)
    /// The database's own consistency problems (empty when sound).
    func integrityProblems() throws(VaultError) -> [String]
    /// The checks of `vault doctor` that belong to this store (location, rights,
    /// durability, the database's version), before the checks common to every vault.
    func doctorChecks() throws(VaultError) -> [DoctorReport.Check]
    /// Whether `destination` (a path or a URL) names this very vault (`vault copy`).
    func isSameVault(as destination: String) -> Bool
    /// A storage error as a vault error, without statement arguments.
    func storageError(_ error: any Error) -> VaultError
}

/// An audit record to append in one statement if nothing it depends on changed
/// (``PostgresStore/appendIfUnchanged(_:)``).
struct UnchangedAppend {
    /// The digest of the reads that were checked (``VaultStore/stateDigestQuery(_:)``), and
    /// its value when they were.
    let state: StoreQuery
    let stateDigest: Data
    /// The head the trail must still have (its newest record the one it names), and the
    /// head after `record`.
    let head: AuditHeadRecord
    let record: AuditRow
    let newHead: AuditHeadRecord
}

extension VaultStore {
    /// A query whose one row's `state` column digests the answers of `reads`, for
    /// ``appendIfUnchanged(_:)``; nil for a store without that statement (a file: its
    /// transactions cost no round trips).
    func stateDigestQuery(_ reads: [StoreQuery]) -> StoreQuery? { nil }
    /// Appends an audit record in one statement if nothing it depends on changed (the team
    /// store); false when it did not (nothing written), and always for a store without it.
    func appendIfUnchanged(_ append: UnchangedAppend) throws(VaultError) -> Bool { false }

    /// A write in one transaction (``write(prefetching:_:)`` with nothing sent ahead).
    func write<T>(_ body: (StoreDB) throws -> T) throws(VaultError) -> T {
        try write(prefetching: [], body)
    }
}

/// How the agent launcher names a vault to the agent: its `--vault` argument (never with
/// a password), what its environment must add (the database password, as libpq's
/// `PGPASSWORD`), and a second socket name by URL (PROTOCOL.md §1), if any.
struct AgentLaunchNames {
    var vaultArgument: String
    var environment: [String: String] = [:]
    var urlLink: String?
}

/// Work done inside a migration's transaction around its SQL: the format upgrade checks
/// the old data before the SQL runs and fills the new columns after it.
struct DataUpgrade: Sendable {
    var before: @Sendable (StoreDB) throws -> Void
    var after: @Sendable (StoreDB) throws -> Void
}

/// Opening and creating a vault by its path or URL.
enum Stores {
    /// How long a writer waits for another process's transaction before giving up:
    /// `VAULT_BUSY_TIMEOUT` seconds, default 30 (read once: the environment of a running
    /// process does not change under it).
    static let busyTimeout: TimeInterval =
        getenv("VAULT_BUSY_TIMEOUT").flatMap { TimeInterval(String(cString: $0)) }.map { min(max($0, 0), 3600) } ?? 30

    /// Opens an existing vault with its identity and schema checked (FORMAT.md §1.1,
    /// §11.3). Pending migrations are applied only by ``VaultStore/migrate(upgrades:)``,
    /// when the vault is unlocked.
    static func open(at path: String) throws(VaultError) -> any VaultStore {
        if PostgresLocation.isURL(path) { return try PostgresStore.open(try PostgresLocation.parse(path)) }
        // A file that cannot be written here is read as it is, and every write through it
        // is refused: the commands that only read (list, audit, verify, doctor) still work.
        if SQLiteFile.isReadOnlyLocation(path) { return try FileReader.open(at: path) }
        return try FileStore.open(at: path)
    }

    /// Opens an existing vault for metadata reads: a file on one read-only connection
    /// (``FileReader``), with the same checks; writes through it fail.
    static func openForReading(at path: String) throws(VaultError) -> any VaultStore {
        if PostgresLocation.isURL(path) { return try PostgresStore.open(try PostgresLocation.parse(path)) }
        return try FileReader.open(at: path)
    }

    /// Creates a vault at `path` (never over an existing one) and calls `populate` in the
    /// transaction that creates it: a vault never appears half-made.
    static func create(at path: String, populate: (StoreDB) throws -> Void) throws(VaultError) -> any VaultStore {
        if PostgresLocation.isURL(path) { return try PostgresStore.create(try PostgresLocation.parse(path), populate: populate) }
        return try FileStore.create(at: path, populate: populate)
    }
}
