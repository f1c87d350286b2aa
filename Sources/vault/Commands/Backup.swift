import ArgumentParser
import VaultCore

extension VaultCLI {
    struct Backup: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "backup",
            abstract: "Write a consistent online copy of the vault, still sealed (never overwrites).")

        @Argument(help: "Where to write the copy.") var path: String
        @OptionGroup var options: VaultOptions

        @MainActor func run() async throws {
            try options.open().backup(to: path)
            Output.info("backup written to \(path)")
        }
    }
}
