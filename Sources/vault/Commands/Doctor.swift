import ArgumentParser
import Foundation
import VaultCore

extension VaultCLI {
    struct Doctor: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "doctor",
            abstract: "Check integrity, schema version, file modes, KDF strength and library versions.",
            discussion: "Exit 0 when all is well, 7 on an integrity failure, 1 when only warnings were found.")

        @Flag(help: "Print JSON.") var json = false
        @OptionGroup var options: VaultOptions

        @MainActor func run() async throws {
            var report: DoctorReport
            do {
                report = try DoctorReport.run(path: options.resolvedPath)
            } catch {
                // No vault to check (or none that opens): where the settings came from is
                // then what helps most.
                if json { Output.json(settingsChecks()) } else { Output.table(["CHECK", "STATUS", "DETAIL"], settingsChecks().map { [$0.name, $0.status, $0.detail] }) }
                throw error
            }
            report.checks.insert(contentsOf: settingsChecks(), at: 0)
            if json {
                Output.json(report.checks)
            } else {
                Output.table(["CHECK", "STATUS", "DETAIL"], report.checks.map { [$0.name, $0.status, $0.detail] })
            }
            if report.checks.contains(where: { $0.status == "fail" }) { throw ExitCode(7) }
            if report.checks.contains(where: { $0.status == "warn" }) { throw ExitCode(1) }
        }

        /// Where the settings came from, by their precedence: flag, environment, config
        /// file, default.
        func settingsChecks() -> [DoctorReport.Check] {
            let config = VaultConfig.current
            var checks: [DoctorReport.Check] = []
            if !config.found {
                checks.append(.init(name: "config", status: "ok", detail: "\(config.path ?? "-") (none; optional)"))
            } else if config.problems.isEmpty {
                let set = config.values.keys.sorted().joined(separator: ", ")
                checks.append(.init(name: "config", status: "ok", detail: "\(config.path ?? "-") (\(set.isEmpty ? "no keys" : "sets \(set)"))"))
            } else {
                for problem in config.problems { checks.append(.init(name: "config", status: "warn", detail: problem)) }
            }
            checks.append(.init(name: "vault from", status: "ok", detail: "\(options.pathSource): \(VaultOptions.display(options.resolvedPath))"))
            if let profile = VaultConfig.defaultProfile() {
                checks.append(.init(name: "profile", status: "ok", detail: "default '\(profile.name)' from \(profile.source)"))
            } else {
                checks.append(.init(name: "profile", status: "ok", detail: "no default (VAULT_PROFILE, or `profile` in the config file)"))
            }
            return checks
        }
    }
}
