import ArgumentParser
import VaultCore

extension VaultCLI {
    struct Env: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Manage environments (token URL + API base); eu, us and au are built in.",
            subcommands: [ListEnvironments.self, AddEnvironment.self, RemoveEnvironment.self])
    }

    struct ListEnvironments: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List environments.")
        @OptionGroup var options: VaultOptions
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            let environments = try options.open().environments()
            if json { return Output.json(environments.map(EnvironmentView.init)) }
            Output.table(["NAME", "TOKEN URL", "API BASE", "KIND"], environments.map {
                [$0.name, $0.tokenURL, $0.apiBase ?? "-", $0.builtIn ? "built-in" : "user"]
            })
        }
    }

    struct AddEnvironment: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "add", abstract: "Add an environment.")
        @OptionGroup var options: VaultOptions
        @Argument(help: "The environment name.") var name: String
        @Option(help: "The token URL (https://, or http:// to a loopback host).") var tokenUrl: String
        @Option(help: "The API base URL.") var apiBase: String?

        func run() async throws {
            // Check the URLs before asking for the passphrase.
            _ = try EndpointPolicy.validateTokenURL(tokenUrl)
            if let apiBase { _ = try EndpointPolicy.validateAPIBase(apiBase) }
            try options.unlock().addEnvironment(name: name, tokenURL: tokenUrl, apiBase: apiBase)
            Output.info("added environment '\(name)'")
        }
    }

    struct RemoveEnvironment: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "remove", abstract: "Remove an environment no profile uses.")
        @OptionGroup var options: VaultOptions
        @Argument(help: "The environment name.") var name: String

        func run() async throws {
            try options.unlock().removeEnvironment(name: name)
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
