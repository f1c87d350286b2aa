import ArgumentParser
import VaultCore

extension VaultCLI {
    struct Passwd: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "passwd",
            abstract: "Change the passphrase; the keys are rewrapped, secrets are not re-sealed.")


        @Option(help: ArgumentHelp("Read the new passphrase from this file (or VAULT_NEW_PASSPHRASE_FILE, VAULT_NEW_PASSPHRASE).", valueName: "path"))
        var newPassphraseFile: String?

        @Option(help: "New Argon2id preset (default: keep the current parameters).")
        var kdf: KDFParameters.Preset?

        @Flag(help: "Accept a new passphrase shorter than \(PassphraseReader.minimumLength) characters.")
        var allowShortPassphrase = false
        @OptionGroup var options: VaultOptions

        @MainActor func run() async throws {
            // Always the passphrase (member 'owner'), never an identity.
            let locked = try options.open()
            let vault = try VaultOptions.checkedAgainstKnownState(
                options.passphrase.withExisting { (passphrase) throws(VaultError) in try locked.unlock(passphrase: passphrase) })
            let newPassphrase = try options.passphrase.replacement(newPassphraseFile: newPassphraseFile, allowShort: allowShortPassphrase)
            var parameters = kdf?.parameters
            if KDFParameters.testOnlyInsecureKDFEnabled, parameters != nil { parameters = .testOnlyInsecure }
            try vault.changePassphrase(to: newPassphrase, kdf: parameters)
            Output.info("passphrase changed (\(parameters ?? vault.header.kdf))")
            AgentSession.lockAfterKeyChange(options)
        }
    }
}
