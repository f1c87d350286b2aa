import ArgumentParser
import VaultCore

extension VaultCLI {
    struct Copy: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "copy",
            abstract: "Copy the whole vault, still sealed, to a new file or PostgreSQL schema (never overwrites).",
            discussion: """
                DEST is a file path or a postgres:// URL. Secrets, versions, members, key slots and the \
                audit chain are copied row for row without being decrypted, in one transaction: the copy \
                is complete or absent. Check it with `vault verify --vault DEST`. No passphrase needed.
                """)

        @Option(name: .customLong("to"), help: ArgumentHelp("The new vault: a file path or a postgres:// URL.", valueName: "dest"))
        var destination: String
        @OptionGroup var options: VaultOptions

        @MainActor func run() async throws {
            VaultOptions.warnAboutPasswordInArguments(destination)
            let source = try options.open()
            let summary = try VaultCopy.copy(source, to: destination)
            let shown = VaultOptions.display(destination)
            Output.info("copied \(options.displayPath) to \(shown): \(summary.rows["profile"] ?? 0) profiles, "
                        + "\(summary.rows["member"] ?? 0) members, \(summary.rows["audit_record"] ?? 0) audit records")
            Output.info("hint: check the copy with `vault verify --vault \(shown)`")
        }
    }
}
