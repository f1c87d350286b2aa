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

        public init(name: String, status: String, detail: String) {
            self.name = name
            self.status = status
            self.detail = detail
        }
    }

    public var checks: [Check] = []

    /// The store's own checks (a file's path, mode, durability and integrity; a team
    /// vault's server, TLS and rights), then the checks every vault has, then the versions.
    public static func run(path: String) throws(VaultError) -> DoctorReport {
        var report = DoctorReport()
        let vault = try Vault.open(at: path)
        report.checks = try vault.database.doctorChecks()
        report.vaultChecks(vault)
        report.ptraceCheck()
        report.versions()
        return report
    }

    /// Whether a process of this user may read the memory of the user's other processes
    /// (Yama's `kernel.yama.ptrace_scope`; without Yama, or at 0, it may). Where it may, a
    /// process running as you can read an agent's keys in the moment after it starts,
    /// before it makes itself non-dumpable (SECURITY.md, "While the vault is unlocked").
    private mutating func ptraceCheck() {
        let scope = (try? String(contentsOfFile: "/proc/sys/kernel/yama/ptrace_scope", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        if let scope, ["1", "2", "3"].contains(scope) {
            checks.append(Check(name: "ptrace", status: "ok", detail: "kernel.yama.ptrace_scope=\(scope): your processes cannot read each other's memory"))
        } else {
            checks.append(Check(name: "ptrace", status: "warn",
                                detail: "kernel.yama.ptrace_scope is \(scope ?? "not available (no Yama)"): any process running as you may read the memory of your others, an agent's keys among them as it starts; set kernel.yama.ptrace_scope=1"))
        }
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
