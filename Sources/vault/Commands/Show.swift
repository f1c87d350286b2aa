import ArgumentParser
import VaultCore

extension VaultCLI {
    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "show",
            abstract: "Show one profile's metadata and secret versions (never a secret).")

        @Argument(help: "The profile name (default: VAULT_PROFILE, else the config file's `profile`).", completion: NameCompletion.profiles)
        var name: String?
        @Flag(help: "Print JSON.") var json = false
        @OptionGroup var options: VaultOptions

        @MainActor func run() async throws {
            let vault = try options.openForReading()
            let profile = try vault.profile(named: VaultOptions.profile(name))
            let versions = try vault.secretVersions(of: profile)
            if json { return Output.json(ProfileView(profile, versions: versions)) }
            var lines = [
                "name:        \(profile.name)",
                "grant:       \(profile.grant.flagValue)",
                "client id:   \(profile.clientID)",
            ]
            if let username = profile.username { lines.append("username:    \(username)") }
            if let scope = profile.scope { lines.append("scope:       \(scope)") }
            lines += [
                "environment: \(profile.environment)",
                "created:     \(profile.createdAt)",
                "updated:     \(profile.updatedAt)",
            ]
            for field in SecretField.allCases {
                let mine = versions.filter { $0.field == field }
                guard let latest = mine.last else { continue }
                lines.append("\(field.rawValue): version \(latest.version) of \(mine.count), set \(latest.createdAt)")
            }
            Output.lines(lines)
        }
    }
}
