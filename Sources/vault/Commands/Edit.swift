import ArgumentParser
import VaultCore

extension VaultCLI {
    struct Edit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "edit",
            abstract: "Change a profile's client id, username, grant, scope or environment; its secrets and their history are kept.",
            discussion: """
                Audited as `edit`; the profile's cached tokens are dropped (they were issued for the \
                old settings). Changing the grant to client-credentials drops the username and the \
                stored password versions; changing it to password needs --username and a password \
                (hidden prompt, --secrets-from-env: GBG_PASSWORD, or --secrets-stdin: {"password": "..."}).
                """)

        @OptionGroup var secrets: SecretSourceOptions

        @Argument(help: "The profile name.", completion: NameCompletion.profiles)
        var name: String

        @Option(help: "The new API client id.")
        var clientId: String?

        @Option(help: "The new API username (password grant).")
        var username: String?

        @Option(help: "password or client-credentials.")
        var grant: GrantType?

        @Option(help: "The new scope.")
        var scope: String?

        @Option(help: "The new default environment.", completion: NameCompletion.environments)
        var env: String?
        @OptionGroup var options: VaultOptions

        func validate() throws {
            guard clientId != nil || username != nil || grant != nil || scope != nil || env != nil else {
                throw ValidationError("give what to change: --client-id, --username, --grant, --scope or --env")
            }
        }

        @MainActor func run() async throws {
            // The names first (no passphrase), then the keys.
            let locked = try options.open()
            try locked.requireNames(profile: name, environment: env)
            let current = try locked.profile(named: name)
            let vault = try options.unlock(locked)
            let password = grant == .password && current.grant != .password
                ? try secrets.read(clientSecret: false, password: true).password : nil
            let edited = try vault.editProfile(named: name, ProfileEdit(clientID: clientId, username: username, grant: grant, scope: scope,
                                                                        environment: env, password: password))
            Output.info("edited profile '\(edited.profile.name)': \(edited.changed.joined(separator: ", ")) (secrets kept; cached tokens dropped)")
        }
    }
}
