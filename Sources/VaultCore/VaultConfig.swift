import CAgent
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The optional config file, `${XDG_CONFIG_HOME:-~/.config}/gbg-vault/config`: `key = value`
/// lines, `#` comments. It is read by CAgent's one parser (`vault_config_read`), which
/// `vault`'s client before `main` uses too for the `vault` key. Precedence everywhere: a
/// flag or argument, then the environment variable, then this file.
public struct VaultConfig: Sendable {
    /// The keys it knows, each with what it sets (shown in warnings and by `vault doctor`).
    public static let keys: [(name: String, meaning: String)] = [
        ("vault", "the vault file or postgres:// URL used without --vault or VAULT_PATH"),
        ("profile", "the profile of token, exec, show and history when none is named and VAULT_PROFILE is unset"),
    ]

    /// The file's path (whether or not it exists).
    public var path: String?
    /// Whether the file exists and was read.
    public var found = false
    /// Why an existing file is not used (then nothing in it is).
    public var unusable: String?
    /// The known keys it sets (the last line of a key wins).
    public var values: [String: String] = [:]
    /// One line per unknown key or malformed line, with its line number.
    public var warnings: [String] = []

    /// The file as this process found it, read once.
    public static let current = VaultConfig.load()

    static func load() -> VaultConfig {
        var config = VaultConfig()
        config.path = AgentProtocol.configPath()
        final class Lines {
            var entries: [(line: Int, key: String, value: String?)] = []
        }
        let lines = Lines()
        var why = [CChar](repeating: 0, count: Int(PATH_MAX) + 128)
        let status = withExtendedLifetime(lines) {
            vault_config_read(environ, { line, key, value, context in
                guard let context, let key else { return }
                let lines = Unmanaged<Lines>.fromOpaque(context).takeUnretainedValue()
                lines.entries.append((Int(line), String(cString: key), value.map { String(cString: $0) }))
            }, Unmanaged.passUnretained(lines).toOpaque(), &why, why.count)
        }
        switch status {
        case 0:
            return config
        case 1:
            config.found = true
        default:
            config.found = true
            config.unusable = String(cString: why)
            return config
        }
        let known = Set(keys.map(\.name))
        let location = config.path ?? "the config file"
        for entry in lines.entries {
            guard let value = entry.value else {
                config.warnings.append("\(location) line \(entry.line): not `key = value`; ignored")
                continue
            }
            guard known.contains(entry.key) else {
                config.warnings.append("\(location) line \(entry.line): unknown key '\(entry.key.sanitisedForDisplay(limit: 40))' ignored "
                                       + "(known: \(keys.map(\.name).joined(separator: ", ")))")
                continue
            }
            if !value.isEmpty { config.values[entry.key] = value }
        }
        if let vault = config.values["vault"], !vault.hasPrefix("/"), !vault.hasPrefix("~/"), !PostgresLocation.isURL(vault) {
            config.warnings.append("\(location): `vault = \(vault.sanitisedForDisplay(limit: 80))` is not used: give an absolute path, "
                                   + "a path starting with ~/, or a postgres:// URL (a relative path would depend on the current directory)")
            config.values["vault"] = nil
        }
        if let vault = config.values["vault"], PostgresLocation.isURL(vault),
           let components = URLComponents(string: vault), components.password != nil {
            config.warnings.append("\(location): the `vault` URL holds a database password; keep it in ~/.pgpass or PGPASSWORD instead")
        }
        return config
    }

    /// What `vault` should say about the file on stderr: why it is not used, or its
    /// unknown keys and malformed lines.
    public var problems: [String] {
        if let unusable { return ["the config file \(path ?? "") is not used: \(unusable)"] }
        return warnings
    }

    /// The default profile: `VAULT_PROFILE`, else the file's `profile`, with where it came from.
    public static func defaultProfile() -> (name: String, source: String)? {
        if let name = LocalEnvironment.value("VAULT_PROFILE") { return (name, "VAULT_PROFILE") }
        if let name = current.values["profile"] { return (name, "config \(current.path ?? "")") }
        return nil
    }
}
