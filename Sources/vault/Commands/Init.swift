import ArgumentParser
import Foundation
import VaultCore

extension KDFParameters.Preset: ExpressibleByArgument {}

extension VaultCLI {
    struct Init: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "init",
            abstract: "Create a new vault (never overwrites an existing one).")


        @Option(help: "Argon2id cost preset: interactive, moderate or sensitive.")
        var kdf: KDFParameters.Preset = .moderate

        @Flag(help: "Accept a passphrase shorter than \(PassphraseReader.minimumLength) characters.")
        var allowShortPassphrase = false
        @OptionGroup var options: VaultOptions

        @MainActor func run() async throws {
            // An existing vault file is refused before the passphrase is asked for (the
            // creation refuses it again, atomically, whatever happens meanwhile).
            let path = options.resolvedPath
            var existing = stat()
            if !PostgresLocation.isURL(path), lstat(path, &existing) == 0 {
                throw VaultError.failure("a vault already exists at \(VaultOptions.display(path)); it was not changed",
                                         hint: "choose another path with --vault, or remove the old vault yourself")
            }
            let passphrase = try options.passphrase.new(allowShort: allowShortPassphrase)
            var parameters = kdf.parameters
            if KDFParameters.testOnlyInsecureKDFEnabled { parameters = .testOnlyInsecure }
            let vault = try Vault.initialise(at: path, passphrase: passphrase, kdf: parameters, detail: "kdf=\(kdf.rawValue)")
            // The new vault is pinned at its location (a vault made again where an old one
            // was removed replaces what was remembered of the old one).
            try vault.pinKnownState(KnownVaults.forUser())
            Output.info("created vault at \(VaultOptions.display(path)) (\(parameters))")
        }
    }
}
