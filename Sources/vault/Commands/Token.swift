import ArgumentParser
import Foundation
import VaultCore

/// Shared options of `token` and `exec`.
struct TokenSelection: ParsableArguments {
    @Option(help: "Environment (default: the profile's).", completion: NameCompletion.environments) var env: String?
    @Flag(help: "Ignore the cache and always exchange.") var fresh = false
    @Option(help: ArgumentHelp("Reuse a cached token only while it has more than this many seconds left (default \(TokenOptions.defaultMinTTL)).",
                               valueName: "seconds"))
    var minTtl: Int64?

    func validate() throws {
        do {
            try minTtl.map(TokenOptions.checkMinTTL)
        } catch {
            throw ValidationError(error.message)
        }
    }

    /// What `token` and `exec` ask for without an agent.
    func options(profile: String, action: TokenAction) -> TokenOptions {
        TokenOptions(profile: profile, environment: env, fresh: fresh, minTTL: minTtl ?? TokenOptions.defaultMinTTL, action: action)
    }
}

extension TokenFormat: ExpressibleByArgument {}

extension VaultCLI {
    struct Token: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "token",
            abstract: "Print a bearer token for a profile, from the sealed cache or a fresh exchange.")

        @OptionGroup var selection: TokenSelection
        @OptionGroup var network: NetworkOptions
        @Argument(help: "The profile name (default: VAULT_PROFILE, else the config file's `profile`).", completion: NameCompletion.profiles)
        var name: String?
        @Option(help: ArgumentHelp("raw, json, header or env (default \(TokenFormat.standard.rawValue)).", valueName: "format"))
        var format: TokenFormat?
        @OptionGroup var options: VaultOptions

        @MainActor func run() async throws {
            let name = try VaultOptions.profile(self.name)
            // Through the agent, the agent writes the output: the same code, in the process
            // that holds the token.
            if let answer = try AgentSession.token(options, selection: selection, network: network, profile: name,
                                                   print: true, format: format, action: .token) {
                guard case .output(let output) = answer else { throw VaultError.failure("the agent gave no token output") }
                return try Output.stdout(secret: output)
            }
            let vault = try options.unlock(profile: name, environment: selection.env)
            let delivered = try await vault.obtainToken(selection.options(profile: name, action: .token), exchange: network.exchange())
            try Output.stdout(secret: TokenOutput.render(delivered, format: format ?? .standard))
        }
    }
}
