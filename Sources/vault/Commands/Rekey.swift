import ArgumentParser
import VaultCore

extension VaultCLI {
    struct Rekey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rekey",
            abstract: "New data and audit keys (a new key epoch): every secret re-sealed, every row re-MAC'd, atomically.")

        @OptionGroup var options: VaultOptions

        @MainActor func run() async throws {
            let count = try options.unlock().rekey()
            defer { AgentSession.lockAfterKeyChange(options) }
            Output.info("new data key and audit key; \(count) secret version(s) re-sealed, cached tokens dropped")
        }
    }
}
