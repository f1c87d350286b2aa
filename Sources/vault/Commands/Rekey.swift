import ArgumentParser
import VaultCore

extension VaultCLI {
    struct Rekey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Generate a new data key and re-seal every secret, atomically.")

        @OptionGroup var options: VaultOptions

        func run() async throws {
            let count = try options.unlock().rekey()
            Output.info("new data key; \(count) secret version(s) re-sealed, cached tokens dropped")
        }
    }
}
