import ArgumentParser
import VaultCore

extension VaultCLI {
    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "list", abstract: "List profiles (no passphrase needed).")

        @Flag(help: "Print JSON.") var json = false
        @OptionGroup var options: VaultOptions

        @MainActor func run() async throws {
            try Self.show(vaultPath: options.vaultPath, json: json)
        }

        /// The whole command (also run by `FastPath`).
        static func show(vaultPath: String?, json: Bool) throws(VaultError) {
            VaultOptions.warnAboutPasswordInArguments(vaultPath)
            let vault = try Vault.openForReading(at: VaultOptions.defaultPath(explicit: vaultPath))
            if json { return Output.jsonArray(try vault.profilesJSON()) }
            let profiles = try vault.profiles()
            Output.table(["NAME", "GRANT", "CLIENT ID", "USERNAME", "ENV", "UPDATED"], profiles.map {
                [$0.name, $0.grant.flagValue, $0.clientID, $0.username ?? "-", $0.environment, $0.updatedAt]
            })
        }
    }
}

/// The JSON shape of a profile in `list` and `show`.
struct ProfileView: Encodable {
    var name: String
    var clientID: String
    var username: String?
    var grant: String
    var scope: String?
    var environment: String
    var createdAt: String
    var updatedAt: String
    var secretVersions: [SecretVersionInfo]?

    init(_ p: Profile, versions: [SecretVersionInfo]? = nil) {
        name = p.name
        clientID = p.clientID
        username = p.username
        grant = p.grant.flagValue
        scope = p.scope
        environment = p.environment
        createdAt = p.createdAt
        updatedAt = p.updatedAt
        secretVersions = versions
    }

    enum CodingKeys: String, CodingKey {
        case name, clientID = "client_id", username, grant, scope, environment
        case createdAt = "created_at", updatedAt = "updated_at", secretVersions = "secret_versions"
    }
}
