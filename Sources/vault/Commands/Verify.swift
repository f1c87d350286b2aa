import ArgumentParser
import Foundation
import VaultCore

extension VaultCLI {
    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "verify",
            abstract: "Full integrity check: every secret version, cached token, MAC, version sequence, the schema and the audit chain.",
            discussion: "Names every problem found. Exit 0 when the vault is sound, 7 when anything is wrong. `vault doctor` keeps the quick checks that need no passphrase.")

        @Flag(help: "Print JSON.") var json = false
        @Flag(help: "Accept this vault although it is older than, or diverged from, the one you used here before (a deliberate restore from a backup or dump): after a sound check it is remembered as it is now, with an audit record.")
        var acceptRollback = false
        @Flag(help: "Accept this vault although it is another vault, or has another owner, than the one pinned at its location: after a sound check it is pinned as it is now, with an audit record.")
        var repin = false
        @OptionGroup var options: VaultOptions

        @MainActor func run() async throws {
            if acceptRollback || repin {
                try accept()
                return
            }
            let report: FullVerification
            if case .verification(let fromAgent) = try AgentSession.call(options, .verify) {
                report = fromAgent
            } else {
                report = try options.unlock().verifyEverything()
            }
            if json {
                Output.json(report)
            } else {
                for problem in report.problems { Output.info("problem: \(problem)") }
                Output.lines([
                    "profiles: \(report.profiles), environments: \(report.environments), secret versions: \(report.secretVersions), "
                        + "cached tokens: \(report.cachedTokens), audit records: \(report.auditRecords), key epoch: \(report.keyEpoch)",
                    report.isSound ? "vault verified: no problem found" : "vault verification failed: \(report.problems.count) problem(s)",
                ])
            }
            if !report.isSound { throw ExitCode(7) }
        }

        /// `--accept-rollback` / `--repin`: the full check without the agent and without the
        /// check against what was remembered; a sound vault is remembered as it is now and
        /// the acceptance recorded in its audit trail.
        @MainActor func accept() throws {
            // A running agent of this vault ends first: it remembers the newer trail, and
            // would write it back over the acceptance when it ended.
            AgentSession.lockAfterKeyChange(options)
            let vault = try options.open()
            let known = KnownVaults.forUser()
            let unlocked = try options.unlockUnchecked(vault)
            let before = try known.entry(for: unlocked.knownLocation)
            let ownerKey = try unlocked.ownerSignKey().hexString
            if acceptRollback, !repin, let before, before.vaultID != unlocked.vaultID.hexString || before.ownerSignKey != ownerKey {
                throw VaultError.usage("this is another vault, or has another owner, than the one pinned here; "
                                       + "--accept-rollback accepts an older copy of the same vault",
                                       hint: "`vault verify --repin` if the vault was replaced on purpose")
            }
            let report = try unlocked.verifyEverything()
            for problem in report.problems { Output.info("problem: \(problem)") }
            guard report.isSound else {
                Output.info("vault verification failed: \(report.problems.count) problem(s); nothing was accepted")
                throw ExitCode(7)
            }
            let was = before.map { "vault \($0.vaultID.prefix(16)), audit record \($0.seq) seen, pinned \(Date(timeIntervalSince1970: TimeInterval($0.pinnedAt)).iso8601)" }
                ?? "nothing remembered"
            // The record first: a vault is never accepted without it.
            let record = try unlocked.recordAcceptance(repin ? .repin : .acceptRollback, detail: "before: \(was)")
            try unlocked.pinKnownState(known)
            Output.info("vault verified and accepted as it is now (audit record \(record)); before: \(was)")
        }
    }

    struct Upgrade: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "upgrade",
            abstract: "Upgrade a vault of an older format to format 4 now, with the passphrase (the first unlock with it does it anyway).",
            discussion: "One transaction per format step: everything the older format authenticates (MACs, secrets, key slots, the audit trail and its signatures) is checked first; a vault that fails is left as it was (exit 7). Members cannot open a vault of an older format until the owner has upgraded it.")

        @OptionGroup var options: VaultOptions

        @MainActor func run() async throws {
            let vault = try options.open()
            let before = try vault.formatVersion()
            let unlocked = try VaultOptions.checkedAgainstKnownState(
                options.passphrase.withExisting { (passphrase) throws(VaultError) in try vault.unlock(passphrase: passphrase) })
            if before < unlocked.header.formatVersion {
                Output.info("upgraded the vault from format \(before) to format \(unlocked.header.formatVersion)")
            } else {
                Output.info("the vault is already format \(unlocked.header.formatVersion); nothing to do")
            }
        }
    }
}
