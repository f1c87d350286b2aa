import ArgumentParser
import VaultCore

extension VaultCLI {
    struct History: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "history", abstract: "List a profile's secret versions (no passphrase needed).")

        @Argument(help: "The profile name (default: VAULT_PROFILE, else the config file's `profile`).", completion: NameCompletion.profiles)
        var name: String?
        @Flag(help: "Print JSON.") var json = false
        @OptionGroup var options: VaultOptions

        @MainActor func run() async throws {
            let vault = try options.openForReading()
            let versions = try vault.secretVersions(of: vault.profile(named: VaultOptions.profile(name)))
                .sorted { ($0.createdAt, $0.field.rawValue, $0.version) < ($1.createdAt, $1.field.rawValue, $1.version) }
            if json { return Output.json(versions) }
            Output.table(["FIELD", "VERSION", "CREATED"], versions.map { [$0.field.rawValue, String($0.version), $0.createdAt] })
        }
    }
}
