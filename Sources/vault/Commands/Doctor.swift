import ArgumentParser
import Foundation
import VaultCore

extension VaultCLI {
    struct Doctor: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "doctor",
            abstract: "Check integrity, schema version, file modes, KDF strength and library versions.",
            discussion: "Exit 0 when all is well, 7 on an integrity failure, 1 when only warnings were found.")

        @OptionGroup var options: VaultOptions
        @Flag(help: "Print JSON.") var json = false

        @MainActor func run() async throws {
            let report = try DoctorReport.run(path: options.resolvedPath)
            if json {
                Output.json(report.checks)
            } else {
                Output.table(["CHECK", "STATUS", "DETAIL"], report.checks.map { [$0.name, $0.status, $0.detail] })
            }
            if report.checks.contains(where: { $0.status == "fail" }) { throw ExitCode(7) }
            if report.checks.contains(where: { $0.status == "warn" }) { throw ExitCode(1) }
        }
    }
}
