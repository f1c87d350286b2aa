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
        @OptionGroup var options: VaultOptions

        @MainActor func run() async throws {
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
    }

    struct Upgrade: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "upgrade",
            abstract: "Upgrade a format-1 or format-2 vault to format 3 now (the first unlock does it anyway).",
            discussion: "One transaction: every format-1 MAC, secret and audit record is checked first; a vault that fails is left as it was (exit 7).")

        @OptionGroup var options: VaultOptions

        @MainActor func run() async throws {
            let vault = try options.open()
            let before = try vault.formatVersion()
            let unlocked = try options.passphrase.withExisting { (passphrase) throws(VaultError) in try vault.unlock(passphrase: passphrase) }
            if before < unlocked.header.formatVersion {
                Output.info("upgraded the vault from format \(before) to format \(unlocked.header.formatVersion)")
            } else {
                Output.info("the vault is already format \(unlocked.header.formatVersion); nothing to do")
            }
        }
    }
}
