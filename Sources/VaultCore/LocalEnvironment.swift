import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Environment variables and the per-user data directory, read one variable at a time
/// with `getenv` (the commands need a handful, never a copy of the whole environment).
public enum LocalEnvironment {
    /// The variable's value; nil when it is unset or empty.
    public static func value(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 }
    }

    /// Whether the variable is `1`, `true` or `yes` (any case).
    public static func isOn(_ name: String) -> Bool {
        ["1", "true", "yes"].contains(value(name)?.lowercased() ?? "")
    }

    /// Variables that open the vault or hold a secret: passphrases and their files, the
    /// identity file and its passphrase, secret input. Neither the agent nor a command run
    /// by `vault exec` inherits them (nor, for a team vault, `PGPASSWORD`).
    public static let secretVariables = [
        "VAULT_PASSPHRASE", "VAULT_PASSPHRASE_FILE", "VAULT_NEW_PASSPHRASE", "VAULT_NEW_PASSPHRASE_FILE",
        "VAULT_IDENTITY_FILE", "VAULT_IDENTITY_PASSPHRASE", "VAULT_IDENTITY_PASSPHRASE_FILE", "GBG_CLIENT_SECRET", "GBG_PASSWORD",
    ]

    /// `${XDG_DATA_HOME:-$HOME/.local/share}/gbg-vault`: where the default vault and the
    /// default identity live (CAgent's rule, which `vault`'s client before `main` follows too).
    public static var dataDirectory: String {
        AgentProtocol.dataDirectory() ?? NSHomeDirectory() + "/.local/share/gbg-vault"
    }
}
