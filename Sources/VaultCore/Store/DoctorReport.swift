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

    /// The store's own checks (a file's path, mode, durability and integrity; a team
    /// vault's server, TLS and rights), then the checks every vault has, then the versions.
    public static func run(path: String) throws(VaultError) -> DoctorReport {
        var report = DoctorReport()
        let vault = try Vault.open(at: path)
        report.checks = try vault.database.doctorChecks()
        report.vaultChecks(vault)
        report.versions()
        return report
    }

    private mutating func versions() {
        checks.append(Check(name: "libsodium", status: "ok", detail: Sodium.versionString))
        checks.append(Check(name: "gbg-vault", status: "ok", detail: VaultVersion.string))
    }

    /// The checks that need no passphrase and are the same on every store.
    private mutating func vaultChecks(_ vault: Vault) {
        func add(_ name: String, _ status: String, _ detail: String) { checks.append(Check(name: name, status: status, detail: detail)) }
        do {
            try vaultChecksThrowing(vault, add)
        } catch {
            add("vault", "fail", error.message)
        }
    }

    private func vaultChecksThrowing(_ vault: Vault, _ add: (String, String, String) -> Void) throws(VaultError) {
        let applied = try vault.database.appliedMigrations()
        let known = vault.database.knownMigrations
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
