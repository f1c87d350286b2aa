import ArgumentParser
import VaultCore

extension GrantType: ExpressibleByArgument {
    public init?(argument: String) { self.init(flagValue: argument) }
    public static var allValueStrings: [String] { allCases.map(\.flagValue) }
}

extension VaultCLI {
    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "add",
            abstract: "Add a profile; its secrets come from a hidden prompt, the environment or stdin.")

        @OptionGroup var secrets: SecretSourceOptions

        @Argument(help: "The profile name.")
        var name: String

        @Option(help: "The API client id.")
        var clientId: String

        @Option(help: "The API username (password grant).")
        var username: String?

        @Option(help: "password or client-credentials.")
        var grant: GrantType = .password

        @Option(help: "Scope for the client-credentials grant (default gbg.token).")
        var scope: String?

        @Option(help: "Default environment: eu, us, au or one added with `vault env add`.", completion: NameCompletion.environments)
        var env: String = "eu"
        @OptionGroup var options: VaultOptions

        func validate() throws {
            switch grant {
            case .password where username == nil:
                throw ValidationError("the password grant needs --username")
            case .clientCredentials where username != nil:
                throw ValidationError("--username is only for the password grant; drop it or use --grant password")
            default: break
            }
        }

        @MainActor func run() async throws {
            let vault = try options.unlock()
            let input = try secrets.read(clientSecret: true, password: grant == .password)
            let profile = try vault.addProfile(
                NewProfile(name: name, clientID: clientId, username: username, grant: grant,
                           scope: grant == .clientCredentials ? (scope ?? TokenRequest.defaultScope) : scope,
                           environment: env),
                secrets: input)
            Output.info("added profile '\(profile.name)' (\(profile.grant.flagValue), environment \(profile.environment))")
        }
    }
}
