import Foundation

/// OAuth2 grant a profile uses at the token endpoint.
public enum GrantType: String, Sendable, CaseIterable, Codable {
    case password
    case clientCredentials = "client_credentials"

    /// The spelling used on the command line (`client-credentials`).
    public var flagValue: String { self == .password ? "password" : "client-credentials" }

    public init?(flagValue: String) {
        switch flagValue {
        case "password": self = .password
        case "client-credentials", "client_credentials": self = .clientCredentials
        default: return nil
        }
    }
}

/// A sealed secret field of a profile.
public enum SecretField: String, Sendable, CaseIterable, Codable {
    case clientSecret = "client_secret"
    case password
}

/// A profile's metadata (never a secret).
public struct Profile: Sendable, Equatable, Codable {
    public var id: Int64
    /// The random identifier bound into the profile's secrets and cached tokens (format 2).
    public var uid: [UInt8]
    public var name: String
    public var clientID: String
    public var username: String?
    public var grant: GrantType
    public var scope: String?
    public var environment: String
    /// The current secret versions (covered by the profile MAC in format 2).
    public var clientSecretVersion: Int64
    public var passwordVersion: Int64?
    public var createdAt: String
    public var updatedAt: String
}

/// One stored version of a secret field: metadata only.
public struct SecretVersionInfo: Sendable, Equatable, Codable {
    public var field: SecretField
    public var version: Int64
    public var createdAt: String

    enum CodingKeys: String, CodingKey { case field, version, createdAt = "created_at" }
}

/// An environment: where tokens come from and which API base they are for.
public struct Environment: Sendable, Equatable, Codable {
    public var name: String
    public var tokenURL: String
    public var apiBase: String?
    public var builtIn: Bool
    /// The random identifier of a user environment (format 2); empty for built-ins.
    public var uid: [UInt8] = []

    public init(name: String, tokenURL: String, apiBase: String?, builtIn: Bool, uid: [UInt8] = []) {
        self.name = name
        self.tokenURL = tokenURL
        self.apiBase = apiBase
        self.builtIn = builtIn
        self.uid = uid
    }

    /// The GBG GO v2 token URL, global for every region.
    public static let gbgTokenURL = "https://api.auth.gbgplc.com/as/token.oauth2"

    /// `eu`, `us` and `au`: built in, never stored, cannot be removed.
    public static let builtIns: [Environment] = ["eu", "us", "au"].map {
        Environment(name: $0, tokenURL: gbgTokenURL,
                    apiBase: "https://\($0).platform.go.gbgplc.com/v2/captain/", builtIn: true)
    }
}

/// The secrets of one profile, as opened for an exchange.
public struct Credentials: Sendable {
    public var clientSecret: SecureBytes
    public var password: SecureBytes?
    public var clientSecretVersion: Int64
    public var passwordVersion: Int64?
}

/// New secret values supplied by the user (add, rotate).
public struct SecretInput: Sendable {
    public var clientSecret: SecureBytes?
    public var password: SecureBytes?

    public init(clientSecret: SecureBytes?, password: SecureBytes?) {
        self.clientSecret = clientSecret
        self.password = password
    }
}

/// Clock used for timestamps and token expiry; injectable for tests.
public protocol VaultClock: Sendable {
    func now() -> Date
}

public struct SystemClock: VaultClock {
    public init() {}
    public func now() -> Date { Date() }
}

extension Date {
    /// ISO 8601 in UTC with seconds, as shown to users and stored in `created_at`
    /// (`2026-11-29T21:22:52Z`, the text of `ISO8601DateFormatter`'s default options), from
    /// one formatter per process (setting one up loads ICU's calendar data).
    public var iso8601: String { ISO8601Text.shared.string(self) }

    /// Milliseconds since the Unix epoch.
    public var unixMilliseconds: Int64 { Int64((timeIntervalSince1970 * 1000).rounded()) }
}

/// Rules for names of profiles and environments (FORMAT.md §3.3).
public enum NameRule {
    /// 1–64 Unicode letters, marks, digits, `.`, `_` and `-`, not starting with `.` or `-`,
    /// compared in Unicode NFC. Returns the normalised name.
    @discardableResult
    public static func validate(_ name: String, what: String) throws(VaultError) -> String {
        let normalised = name.precomposedStringWithCanonicalMapping
        let scalars = Array(normalised.unicodeScalars)
        let allowed = scalars.allSatisfy { scalar in
            switch scalar.properties.generalCategory {
            case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter,
                 .nonspacingMark, .spacingMark, .enclosingMark, .decimalNumber, .letterNumber, .otherNumber:
                return true
            default:
                return scalar == "." || scalar == "_" || scalar == "-"
            }
        }
        guard !scalars.isEmpty, normalised.count <= 64, allowed, scalars.first != ".", scalars.first != "-" else {
            throw .usage("invalid \(what) name '\(name.sanitisedForDisplay(limit: 64))'",
                         hint: "use 1-64 letters, digits, '.', '_' or '-', not starting with '.' or '-'")
        }
        return normalised
    }

    /// Free-text identifiers (client id, username, scope): 1–256 bytes, no control characters.
    public static func validateField(_ value: String, what: String) throws(VaultError) {
        guard !value.isEmpty, value.utf8.count <= 256,
              !value.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
        else {
            throw .usage("invalid \(what): it must be 1-256 bytes without control characters")
        }
    }
}

/// The process's one `ISO8601DateFormatter`, used under a lock.
private final class ISO8601Text: @unchecked Sendable {
    static let shared = ISO8601Text()
    private let lock = NSLock()
    private let formatter = ISO8601DateFormatter()

    func string(_ date: Date) -> String { lock.withLock { formatter.string(from: date) } }
}
