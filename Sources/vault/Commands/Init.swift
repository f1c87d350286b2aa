import ArgumentParser
import VaultCore

extension KDFParameters.Preset: ExpressibleByArgument {}

extension VaultCLI {
    struct Init: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "init",
            abstract: "Create a new vault (never overwrites an existing one).")

        @OptionGroup var options: VaultOptions

        @Option(help: "Argon2id cost preset: interactive, moderate or sensitive.")
        var kdf: KDFParameters.Preset = .moderate

        @MainActor func run() async throws {
            let passphrase = try options.passphrase.new()
            var parameters = kdf.parameters
            if KDFParameters.testOnlyInsecureKDFEnabled { parameters = .testOnlyInsecure }
            let path = options.resolvedPath
            _ = try Vault.initialise(at: path, passphrase: passphrase, kdf: parameters, detail: "kdf=\(kdf.rawValue)")
            Output.info("created vault at \(VaultOptions.display(path)) (\(parameters))")
        }
    }
}
