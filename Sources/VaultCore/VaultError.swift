/// Every failure `vault` reports, each with its documented exit code (README, "Exit codes").
///
/// Messages are lowercase, never contain a secret or a token, and name what the user
/// can act on; `hint` says what to do next.
public enum VaultError: Error, Sendable, Equatable {
    /// The passphrase did not unlock the vault. Exit 3.
    case wrongPassphrase
    /// The identity's passphrase did not open it, or the identity has no slot in this
    /// vault (the two are not told apart). Exit 3.
    case wrongIdentityPassphrase
    /// The identity opened no key slot of this vault (not a member, or removed). Exit 3.
    case wrongIdentitySlot
    /// No vault, profile or environment by that name. Exit 6.
    case notFound(String, hint: String? = nil)
    /// Vault data failed authentication or is corrupt. Exit 7.
    case integrity(String)
    /// The store is not the vault this user's clients remember at its location: replaced,
    /// rolled back or forked (FORMAT.md §12); the hint names the deliberate way on.
    case notAsRemembered(String, hint: String)
    /// The token endpoint rejected the credentials with an OAuth error. Exit 4.
    case rejected(error: String, description: String?, status: Int, hint: String?)
    /// The token endpoint could not be reached or kept failing. Exit 5.
    case unavailable(String)
    /// The token endpoint answered something that is not a valid token response. Exit 7.
    case malformedResponse(String)
    /// The audit record could not be written, so the token was withheld. Exit 8.
    case auditRefused(String)
    /// The command line or its inputs are wrong. Exit 64.
    case usage(String, hint: String? = nil)
    /// The vault was written by a newer version of gbg-vault. Exit 1.
    case newerVersion(String)
    /// Another process changed the vault's keys (`rekey`, `passwd`) while this one ran,
    /// and the keys could not be re-read; nothing was written. Exit 1.
    case keysChanged
    /// An error reported by the agent (`vault unlock`), with its exit code and text.
    case relayed(exitCode: Int32, message: String, hint: String?)
    /// Anything else. Exit 1.
    case failure(String, hint: String? = nil)

    /// The process exit code for this error.
    public var exitCode: Int32 {
        switch self {
        case .wrongPassphrase, .wrongIdentityPassphrase, .wrongIdentitySlot: 3
        case .rejected: 4
        case .unavailable: 5
        case .notFound: 6
        case .integrity, .notAsRemembered, .malformedResponse: 7
        case .auditRefused: 8
        case .usage: 64
        case .newerVersion, .failure, .keysChanged: 1
        case .relayed(let code, _, _): code
        }
    }

    /// A row the store returned that does not decode as its record: a value missing, of
    /// another type, or a name (grant type) this version does not know.
    static let malformedRow = VaultError.integrity("a stored row has a missing value, or a value of a type or name this version does not know")

    /// The one-line message shown after `vault: error: `.
    public var message: String {
        switch self {
        case .wrongPassphrase: "wrong passphrase: the vault could not be unlocked"
        case .wrongIdentityPassphrase: "the identity could not be opened: wrong identity passphrase"
        case .wrongIdentitySlot: "this identity cannot open the vault: it has no key slot here (not a member, or removed)"
        case .notFound(let what, _): what
        case .integrity(let what): "integrity failure: \(what)"
        case .notAsRemembered(let what, _): "integrity failure: \(what)"
        case .rejected(let error, let description, let status, _):
            "the token endpoint rejected the credentials (HTTP \(status), \(error))"
                + (description.map { ": \($0)" } ?? "")
        case .unavailable(let what): "token endpoint unavailable: \(what)"
        case .malformedResponse(let what): "malformed token response: \(what)"
        case .auditRefused(let what): "the audit record could not be written, so no token was released: \(what)"
        case .usage(let what, _): what
        case .newerVersion(let what): what
        case .keysChanged: "the vault's keys were changed by another process (passwd or rekey) while this command ran; nothing was changed"
        case .relayed(_, let message, _): message
        case .failure(let what, _): what
        }
    }

    /// What the user can do next, if there is something useful to say.
    public var hint: String? {
        switch self {
        case .wrongPassphrase:
            "check the passphrase source (--passphrase-file, VAULT_PASSPHRASE_FILE, VAULT_PASSPHRASE, prompt)"
        case .wrongIdentityPassphrase:
            "check the identity passphrase source (VAULT_IDENTITY_PASSPHRASE_FILE, VAULT_IDENTITY_PASSPHRASE, prompt)"
        case .wrongIdentitySlot:
            "ask the owner to run `vault member add NAME --recipient …` with your `vault identity show`"
        case .rejected(_, _, _, let hint): hint
        case .unavailable: "check the network, proxy settings and the environment's token URL, then retry"
        case .integrity: "`vault verify` names every problem; restore the vault from a backup"
        case .notAsRemembered(_, let hint): hint
        case .usage(_, let hint): hint
        case .newerVersion: "upgrade gbg-vault to open this vault"
        case .keysChanged: "run the command again"
        case .relayed(_, _, let hint): hint
        case .failure(_, let hint): hint
        case .notFound(_, let hint): hint
        case .malformedResponse, .auditRefused: nil
        }
    }
}
