import ArgumentParser
import VaultCore

extension VaultCLI {
    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rotate",
            abstract: "Store new secret versions; previous versions are kept.",
            discussion: "Without --client-secret or --password, every secret of the profile is replaced.")

        @OptionGroup var secrets: SecretSourceOptions
        @OptionGroup var network: NetworkOptions

        @Argument(help: "The profile name.", completion: NameCompletion.profiles) var name: String
        @Flag(help: "Replace the client secret.") var clientSecret = false
        @Flag(help: "Replace the API password.") var password = false
        @Flag(help: "Exchange with the new secrets first; keep the old ones if that fails.") var verify = false
        @Option(help: "Environment for --verify (default: the profile's).", completion: NameCompletion.environments) var env: String?
        @OptionGroup var options: VaultOptions

        func validate() throws {
            if env != nil && !verify { throw ValidationError("--env goes with --verify") }
        }

        @MainActor func run() async throws {
            let vault = try options.unlock(profile: name, environment: env)
            let profile = try vault.verifiedProfile(named: name)
            let everything = !clientSecret && !password
            if password && profile.grant != .password {
                throw VaultError.usage("profile '\(profile.name)' uses client credentials and has no password")
            }
            let input = try secrets.read(clientSecret: clientSecret || everything,
                                         password: password || (everything && profile.grant == .password))
            let created: [SecretVersionInfo]
            if verify {
                created = try await vault.rotateVerified(profileNamed: name, secrets: input, environment: env, exchange: network.exchange())
            } else {
                created = try vault.rotate(profileNamed: name, secrets: input)
            }
            Output.info("rotated \(created.map { "\($0.field.rawValue) (now version \($0.version))" }.joined(separator: ", "))"
                        + (verify ? " after a successful exchange" : ""))
        }
    }
}
