import ArgumentParser
import VaultCore

extension VaultCLI {
    struct Env: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "env",
            abstract: "Manage environments (token URL + API base); eu, us and au are built in.",
            subcommands: [ListEnvironments.self, ShowEnvironment.self, AddEnvironment.self, SetEnvironment.self, RemoveEnvironment.self])
    }

    struct ListEnvironments: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List environments.")
        @Flag(help: "Print JSON.") var json = false
        @OptionGroup var options: VaultOptions

        @MainActor func run() async throws {
            let environments = try options.openForReading().environments()
            if json { return Output.json(environments.map(EnvironmentView.init)) }
            Output.table(["NAME", "TOKEN URL", "API BASE", "KIND"], environments.map {
                [$0.name, $0.tokenURL, $0.apiBase ?? "-", $0.builtIn ? "built-in" : "user"]
            })
        }
    }

    struct AddEnvironment: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "add", abstract: "Add an environment.")
        @Argument(help: "The environment name.") var name: String
        @Option(help: "The token URL (https://, or http:// to a loopback host).") var tokenUrl: String
        @Option(help: "The API base URL.") var apiBase: String?
        @OptionGroup var options: VaultOptions

        @MainActor func run() async throws {
            // Check the URLs before asking for the passphrase.
            _ = try EndpointPolicy.validateTokenURL(tokenUrl)
            if let apiBase { _ = try EndpointPolicy.validateAPIBase(apiBase) }
            try options.unlock().addEnvironment(name: name, tokenURL: tokenUrl, apiBase: apiBase)
            Output.info("added environment '\(name)'")
        }
    }

    struct ShowEnvironment: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "show", abstract: "Show one environment: URLs, kind, the profiles that use it, cached tokens (no passphrase needed).")
        @Argument(help: "The environment name.", completion: NameCompletion.environments) var name: String
        @Flag(help: "Print JSON.") var json = false
        @OptionGroup var options: VaultOptions

        @MainActor func run() async throws {
            let usage = try options.openForReading().environmentUsage(named: name)
            let e = usage.environment
            if json {
                return Output.json(EnvironmentDetail(name: e.name, tokenURL: e.tokenURL, apiBase: e.apiBase, builtIn: e.builtIn,
                                                     createdAt: usage.createdAt, profiles: usage.profiles, cachedTokens: usage.cachedTokens))
            }
            Output.lines([
                "name:          \(e.name)",
                "kind:          \(e.builtIn ? "built-in" : "user")",
                "token url:     \(e.tokenURL)",
                "api base:      \(e.apiBase ?? "-")",
                "created:       \(usage.createdAt ?? "-")",
                "default of:    \(usage.profiles.isEmpty ? "-" : usage.profiles.joined(separator: ", "))",
                "cached tokens: \(usage.cachedTokens)",
            ])
        }
    }

    struct SetEnvironment: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set", abstract: "Change a user environment's token URL or API base (built-ins stay fixed).",
            discussion: "The change is MAC'd and audited, and tokens cached for the old definition are dropped.")
        @Argument(help: "The environment name.", completion: NameCompletion.userEnvironments) var name: String
        @Option(help: "The new token URL (https://, or http:// to a loopback host).") var tokenUrl: String?
        @Option(help: "The new API base URL.") var apiBase: String?
        @Flag(help: "Remove the API base.") var noApiBase = false
        @OptionGroup var options: VaultOptions

        func validate() throws {
            if apiBase != nil && noApiBase { throw ValidationError("--api-base and --no-api-base cannot be used together") }
            if tokenUrl == nil && apiBase == nil && !noApiBase { throw ValidationError("give --token-url, --api-base or --no-api-base") }
        }

        @MainActor func run() async throws {
            // Everything that needs no passphrase is checked before asking for it.
            if Environment.builtIns.contains(where: { $0.name == name }) {
                throw VaultError.usage("'\(name)' is a built-in environment and cannot be changed", hint: "add your own with `vault env add`")
            }
            if let tokenUrl { _ = try EndpointPolicy.validateTokenURL(tokenUrl) }
            if let apiBase { _ = try EndpointPolicy.validateAPIBase(apiBase) }
            let locked = try options.open()
            try locked.requireEnvironment(name)
            let changed = try options.unlock(locked).setEnvironment(name: name, tokenURL: tokenUrl, apiBase: noApiBase ? .some(nil) : apiBase.map { .some($0) })
            Output.info("environment '\(changed.name)' now uses \(changed.tokenURL)" + (changed.apiBase.map { " and API base \($0)" } ?? " and no API base"))
        }
    }

    struct RemoveEnvironment: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "remove", abstract: "Remove an environment no profile uses.")
        @Argument(help: "The environment name.", completion: NameCompletion.userEnvironments) var name: String
        @OptionGroup var options: VaultOptions

        @MainActor func run() async throws {
            if Environment.builtIns.contains(where: { $0.name == name }) {
                throw VaultError.usage("'\(name)' is a built-in environment and cannot be removed")
            }
            let locked = try options.open()
            try locked.requireEnvironment(name)
            try options.unlock(locked).removeEnvironment(name: name)
            Output.info("removed environment '\(name)'")
        }
    }
}

struct EnvironmentView: Encodable {
    var name: String
    var tokenURL: String
    var apiBase: String?
    var builtIn: Bool
    init(_ e: Environment) { name = e.name; tokenURL = e.tokenURL; apiBase = e.apiBase; builtIn = e.builtIn }
    enum CodingKeys: String, CodingKey { case name, tokenURL = "token_url", apiBase = "api_base", builtIn = "built_in" }
}

struct EnvironmentDetail: Encodable {
    var name: String
    var tokenURL: String
    var apiBase: String?
    var builtIn: Bool
    var createdAt: String?
    var profiles: [String]
    var cachedTokens: Int
    enum CodingKeys: String, CodingKey {
        case name, tokenURL = "token_url", apiBase = "api_base", builtIn = "built_in", createdAt = "created_at", profiles
        case cachedTokens = "cached_tokens"
    }
}
