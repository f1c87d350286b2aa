import Foundation
import GRDB
#if canImport(Glibc)
import Glibc
#endif

/// The checks of `vault doctor` (no passphrase needed).
public struct DoctorReport: Sendable {
    public struct Check: Sendable, Encodable {
        public var name: String
        /// `ok`, `warn` or `fail`.
        public var status: String
        public var detail: String
    }

    public var checks: [Check] = []

    public static func run(path: String) throws(VaultError) -> DoctorReport {
        var report = DoctorReport()
        func add(_ name: String, _ status: String, _ detail: String) { report.checks.append(Check(name: name, status: status, detail: detail)) }

        if PostgresLocation.isURL(path) { return try runPostgres(url: path) }
        var link = stat()
        if lstat(path, &link) == 0, (link.st_mode & S_IFMT) == S_IFLNK {
            let target = (try? FileManager.default.destinationOfSymbolicLink(atPath: path)) ?? "?"
            add("path", "warn", "\(path) is a symbolic link to \(target); anyone who can change the link can swap the vault")
        } else {
            add("path", "ok", path)
        }
        let vault = try Vault.open(at: path)

        var info = stat()
        if stat(path, &info) == 0 {
            let mode = info.st_mode & 0o777
            add("file mode", mode & 0o077 == 0 ? "ok" : "warn",
                String(format: "%04o", mode) + (mode & 0o077 == 0 ? "" : " (expected 0600: others can read the sealed vault)"))
            add("file owner", info.st_uid == getuid() ? "ok" : "warn",
                info.st_uid == getuid() ? "uid \(info.st_uid)" : "owned by uid \(info.st_uid), not by you (uid \(getuid()))")
        }
        let directory = (path as NSString).deletingLastPathComponent.isEmpty ? "." : (path as NSString).deletingLastPathComponent
        var dirInfo = stat()
        if stat(directory, &dirInfo) == 0 {
            let mode = dirInfo.st_mode & 0o777
            add("directory mode", mode & 0o077 == 0 ? "ok" : "warn",
                "\(directory) " + String(format: "%04o", mode) + (mode & 0o077 == 0 ? "" : " (expected 0700)"))
        }

        report.vaultChecks(vault)
        let journal = try vault.database.read { db in try String.fetchOne(db, sql: "PRAGMA journal_mode") ?? "?" }
        add("journal", journal == "wal" ? "ok" : "warn", "journal_mode=\(journal)")
        let synchronous = try vault.database.writerSynchronousLevel()
        add("durability", synchronous == 2 ? "ok" : "warn",
            synchronous == 2 ? "synchronous=FULL (every commit flushed to disk)" : "synchronous=\(synchronous) (expected FULL)")
        add("sqlite", "ok", try vault.database.sqliteVersion())
        report.versions()
        return report
    }

    /// `vault doctor` on a PostgreSQL vault: the connection (TLS), the server, the
    /// schema and the rights this user has, then the same vault checks.
    static func runPostgres(url: String) throws(VaultError) -> DoctorReport {
        var report = DoctorReport()
        func add(_ name: String, _ status: String, _ detail: String) { report.checks.append(Check(name: name, status: status, detail: detail)) }
        let location = try PostgresLocation.parse(url)
        add("location", "ok", location.display)
        let vault = try Vault.open(at: url)
        guard let store = vault.database.postgres else { return report }
        let server = try store.serverReport()
        add("server", "ok", "PostgreSQL \(server.version)")
        switch (location.sslMode, server.tls) {
        case (.verifyFull, true): add("tls", "ok", "TLS, certificate and host name verified")
        case (.verifyCA, true): add("tls", "warn", "TLS, certificate verified but not the host name (sslmode=verify-ca)")
        case (.require, true): add("tls", "warn", "TLS without certificate verification (sslmode=require): a machine in the middle can read the traffic")
        case (_, false) where location.host.hasPrefix("/") || ["127.0.0.1", "::1", "localhost"].contains(location.host):
            add("tls", "warn", "no TLS (sslmode=\(location.sslMode.rawValue)) to a local server")
        default: add("tls", "fail", "no TLS (sslmode=\(location.sslMode.rawValue)): metadata and sealed values cross the network in clear")
        }
        add("grants", server.missingGrants.isEmpty ? "ok" : "fail", server.missingGrants.isEmpty
            ? "SELECT, INSERT, UPDATE, DELETE on every vault table" : "missing: " + server.missingGrants.joined(separator: ", "))
        report.vaultChecks(vault)
        report.versions()
        return report
    }

    private mutating func versions() {
        checks.append(Check(name: "libsodium", status: "ok", detail: Sodium.versionString))
        checks.append(Check(name: "gbg-vault", status: "ok", detail: VaultVersion.string))
    }

    /// The checks that need no passphrase and are the same on both stores.
    private mutating func vaultChecks(_ vault: Vault) {
        func add(_ name: String, _ status: String, _ detail: String) { checks.append(Check(name: name, status: status, detail: detail)) }
        do {
            try vaultChecksThrowing(vault, add)
        } catch {
            add("vault", "fail", error.message)
        }
    }

    private func vaultChecksThrowing(_ vault: Vault, _ add: (String, String, String) -> Void) throws(VaultError) {
        let problems = try vault.database.integrityProblems()
        if !vault.database.isPostgres {
            add("sqlite integrity", problems.isEmpty ? "ok" : "fail", problems.isEmpty ? "ok" : problems.prefix(3).joined(separator: "; "))
        }

        let applied = try vault.database.appliedMigrations()
        let known = vault.database.isPostgres ? PostgresStore.knownMigrations : VaultDatabase.knownMigrations
        add("schema", applied == known ? "ok" : "warn", "migrations \(applied.joined(separator: ", ")) (this build knows \(known.count))")

        do {
            let header = try vault.header()
            do {
                try header.validate()
                add("header", "ok", "format version \(header.formatVersion), key epoch \(header.keyEpoch), digest verified")
                if header.formatVersion < Labels.formatVersion {
                    add("format", "warn", "format \(header.formatVersion): upgraded to \(Labels.formatVersion) by the next unlock or `vault upgrade`")
                }
            } catch {
                add("header", "fail", error.message)
            }
            let kdf = header.kdf
            let moderate = KDFParameters.Preset.moderate.parameters
            let strong = kdf.opslimit >= moderate.opslimit && kdf.memlimit >= moderate.memlimit
            let testOnly = kdf == .testOnlyInsecure && KDFParameters.testOnlyInsecureKDFEnabled
            add("kdf", kdf.meetsMinimum ? (strong ? "ok" : "warn") : (testOnly ? "warn" : "fail"),
                kdf.description + (kdf.meetsMinimum && !strong ? "; consider `vault passwd --kdf moderate`" : ""))
        } catch {
            add("header", "fail", error.message)
        }

        let records = try vault.database.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM audit_record") ?? 0 }
        add("audit records", "ok", "\(records) (run `vault audit verify` to check the chain)")
        if let members = try? vault.members(), !members.isEmpty {
            let current = members.filter { $0.removedSeq == nil }
            let withoutSlot = current.filter { !$0.hasSlot }.map(\.name)
            add("members", withoutSlot.isEmpty ? "ok" : "fail",
                "\(current.count) current (\(current.map(\.name).joined(separator: ", "))), \(members.count - current.count) removed"
                    + (withoutSlot.isEmpty ? "" : "; without a key slot: \(withoutSlot.joined(separator: ", "))"))
        }
    }
}
