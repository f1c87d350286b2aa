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

        let problems = try vault.database.integrityProblems()
        add("sqlite integrity", problems.isEmpty ? "ok" : "fail", problems.isEmpty ? "ok" : problems.prefix(3).joined(separator: "; "))

        let applied = try vault.database.appliedMigrations()
        let known = VaultDatabase.knownMigrations
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

        let journal = try vault.database.read { db in try String.fetchOne(db, sql: "PRAGMA journal_mode") ?? "?" }
        add("journal", journal == "wal" ? "ok" : "warn", "journal_mode=\(journal)")
        let records = try vault.database.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM audit_record") ?? 0 }
        add("audit records", "ok", "\(records) (run `vault audit verify` to check the chain)")
        if let members = try? vault.members(), !members.isEmpty {
            let current = members.filter { $0.removedSeq == nil }
            let withoutSlot = current.filter { !$0.hasSlot }.map(\.name)
            add("members", withoutSlot.isEmpty ? "ok" : "fail",
                "\(current.count) current (\(current.map(\.name).joined(separator: ", "))), \(members.count - current.count) removed"
                    + (withoutSlot.isEmpty ? "" : "; without a key slot: \(withoutSlot.joined(separator: ", "))"))
        }
        add("libsodium", "ok", Sodium.versionString)
        add("sqlite", "ok", try vault.database.sqliteVersion())
        add("gbg-vault", "ok", VaultVersion.string)
        return report
    }
}
