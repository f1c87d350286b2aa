import ArgumentParser
import VaultCore

extension VaultCLI {
    struct Passwd: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "passwd",
            abstract: "Change the passphrase; the keys are rewrapped, secrets are not re-sealed.")

        @OptionGroup var options: VaultOptions

        @Option(help: ArgumentHelp("Read the new passphrase from this file (or VAULT_NEW_PASSPHRASE_FILE, VAULT_NEW_PASSPHRASE).", valueName: "path"))
        var newPassphraseFile: String?

        @Option(help: "New Argon2id preset (default: keep the current parameters).")
        var kdf: KDFParameters.Preset?

        @MainActor func run() async throws {
            // Always the passphrase (member 'owner'), never an identity.
            let vault = try options.open().unlock(passphrase: options.passphrase.existing())
            let newPassphrase = try options.passphrase.replacement(newPassphraseFile: newPassphraseFile)
            var parameters = kdf?.parameters
            if KDFParameters.testOnlyInsecureKDFEnabled, parameters != nil { parameters = .testOnlyInsecure }
            try vault.changePassphrase(to: newPassphrase, kdf: parameters)
            Output.info("passphrase changed (\(parameters ?? vault.header.kdf))")
            AgentSession.lockAfterKeyChange(options)
        }
    }
}
