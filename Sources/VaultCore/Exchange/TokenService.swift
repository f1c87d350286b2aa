import CAgent
import Foundation

/// What `vault token` and `vault exec` ask for.
public struct TokenOptions: Sendable {
    public var profile: String
    /// Overrides the profile's default environment.
    public var environment: String?
    /// Skip the cache and always exchange.
    public var fresh: Bool
    /// A cached token is reused only while it has more than this many seconds left.
    public var minTTL: Int64
    /// The audit action.
    public var action: TokenAction
    /// Who asked, for the record's `detail` (`caller=…`): `vault serve`'s and `vault
    /// proxy`'s callers. Shown as given; at most ``maximumCallerLength`` printable ASCII.
    public var caller: String?
    /// Exchange only at the profile's own environment (a cached token of another is still
    /// handed out): what the agent serves, so that a caller without the passphrase cannot
    /// send a profile's secrets to another environment's token URL (SECURITY.md).
    public var ownEnvironmentOnly = false

    /// The longest `caller`.
    public static let maximumCallerLength = 120

    /// Checks a `caller` value: printable ASCII without spaces, 1…``maximumCallerLength``.
    public static func checkCaller(_ value: String) throws(VaultError) {
        guard (1...maximumCallerLength).contains(value.utf8.count), value.utf8.allSatisfy({ (0x21...0x7e).contains($0) }) else {
            throw .usage("a caller is 1 to \(maximumCallerLength) printable ASCII characters without spaces")
        }
    }

    /// `--min-ttl`'s default: GBG asks clients to renew before a token expires.
    public static let defaultMinTTL: Int64 = 300
    /// How long before it expires a kept-fresh token is renewed (`--keep-fresh`, `vault
    /// serve`, `vault proxy`): the default `--min-ttl` plus a minute, so that a `vault token`
    /// never waits on the network, or half the lifetime of a short-lived token.
    public static func renewalMargin(lifetime: Int64) -> Int64 {
        min(defaultMinTTL + 60, max(1, lifetime / 2))
    }

    /// The largest `--min-ttl` (366 days).
    public static let maximumMinTTL: Int64 = 366 * 24 * 3600

    /// `--timeout`'s default, in seconds: the overall deadline of an exchange, retries included.
    public static let defaultTimeoutSeconds = Int(VAULT_TOKEN_TIMEOUT_SECONDS)
    /// The longest `--timeout` and `--connect-timeout`, in seconds.
    public static let maximumTimeoutSeconds = 600

    /// Checks `--timeout` and `--connect-timeout` values, in milliseconds (nil: not given).
    public static func checkTimeouts(timeoutMs: Int64?, connectTimeoutMs: Int64?) throws(VaultError) {
        let limit = Int64(maximumTimeoutSeconds) * 1000
        if let timeoutMs, !(1...limit).contains(timeoutMs) {
            throw .usage("--timeout must be between 0 and \(maximumTimeoutSeconds) seconds")
        }
        if let connectTimeoutMs, !(1...limit).contains(connectTimeoutMs) {
            throw .usage("--connect-timeout must be between 0 and \(maximumTimeoutSeconds) seconds")
        }
    }

    /// Checks a `--min-ttl` value.
    public static func checkMinTTL(_ value: Int64) throws(VaultError) {
        guard (0...maximumMinTTL).contains(value) else { throw .usage("--min-ttl must be between 0 and \(maximumMinTTL)") }
    }

    public init(profile: String, environment: String? = nil, fresh: Bool = false, minTTL: Int64 = defaultMinTTL, action: TokenAction = .token,
                caller: String? = nil) {
        self.profile = profile
        self.environment = environment
        self.fresh = fresh
        self.minTTL = minTTL
        self.action = action
        self.caller = caller
    }

    /// The record's `detail` for `caller`.
    var callerDetail: String? { caller.map { "caller=\($0)" } }
}

/// A token that may leave `vault`: its audit record is already committed.
public struct DeliveredToken: Sendable {
    public var token: SecureBytes
    public var tokenType: String
    /// Unix seconds.
    public var expiresAt: Int64
    /// Seconds left at delivery.
    public var expiresIn: Int64
    public var environment: Environment
    public var fromCache: Bool
    public var audit: AuditEntry

    public init(token: SecureBytes, tokenType: String, expiresAt: Int64, expiresIn: Int64, environment: Environment,
                fromCache: Bool, audit: AuditEntry) {
        self.token = token
        self.tokenType = tokenType
        self.expiresAt = expiresAt
        self.expiresIn = expiresIn
        self.environment = environment
        self.fromCache = fromCache
        self.audit = audit
    }
}

extension UnlockedVault {
    /// Resolves the profile and environment, reuses a cached token or performs the
    /// exchange, and commits the audit record before returning (fail closed: exit 8
    /// and no token if the record cannot be written).
    public func obtainToken(_ options: TokenOptions, exchange: TokenExchange) async throws(VaultError) -> DeliveredToken {
        // Every exchange needs its audit record: a vault that cannot be written gets none.
        try vault.requireWritable()
        // A cache hit: one transaction that reads, checks and audits (no secret opened).
        if !options.fresh, let hit = try deliverCachedToken(profile: options.profile, environment: options.environment,
                                                            minTTL: options.minTTL, action: options.action, detail: options.callerDetail) {
            return hit
        }

        let target = try exchangeTarget(profile: options.profile, environment: options.environment,
                                        ownEnvironmentOnly: options.ownEnvironmentOnly)
        let (profile, environment) = (target.profile, target.environment)
        var entry = AuditEntry(at: vault.clock.now().unixMilliseconds, action: options.action.auditAction, outcome: .ok, profile: profile.name,
                               environment: environment.name, tokenURL: target.tokenURL, grantType: profile.grant,
                               detail: options.callerDetail)

        let request = TokenRequest(tokenURL: target.tokenURL, grant: profile.grant, clientID: profile.clientID,
                                   clientSecret: target.credentials.clientSecret, username: profile.username,
                                   password: target.credentials.password, scope: profile.scope)
        let result = await exchange.perform(request)
        entry.at = vault.clock.now().unixMilliseconds
        fill(&entry, from: result)
        guard let issued = result.token, result.error == nil else {
            try? appendAudit(entry)
            throw result.error ?? .failure("the exchange failed")
        }
        let expiresAt = Int64(vault.clock.now().timeIntervalSince1970) + issued.expiresIn
        entry.expiresAt = expiresAt
        entry.tokenFingerprint = fingerprint(token: issued.accessToken)
        let committed = try recordExchange(entry, cache: (target, issued.accessToken, expiresAt))
        return DeliveredToken(token: issued.accessToken, tokenType: issued.tokenType, expiresAt: expiresAt,
                              expiresIn: issued.expiresIn, environment: environment, fromCache: false, audit: committed)
    }

    /// `vault rotate --verify`: exchanges with the new secrets first, and stores them
    /// only if that succeeds. Either way the attempt is audited.
    @discardableResult
    public func rotateVerified(profileNamed name: String, secrets: SecretInput, environment: String?,
                               exchange: TokenExchange) async throws(VaultError) -> [SecretVersionInfo] {
        try vault.requireWritable()
        let target = try exchangeTarget(profile: name, environment: environment)
        let (profile, env, current) = (target.profile, target.environment, target.credentials)
        let request = TokenRequest(tokenURL: target.tokenURL, grant: profile.grant, clientID: profile.clientID,
                                   clientSecret: secrets.clientSecret ?? current.clientSecret, username: profile.username,
                                   password: secrets.password ?? current.password, scope: profile.scope)
        let result = await exchange.perform(request)
        var entry = AuditEntry(at: vault.clock.now().unixMilliseconds, action: .verify, outcome: .ok, profile: profile.name,
                               environment: env.name, tokenURL: target.tokenURL, grantType: profile.grant,
                               detail: "rotate --verify")
        fill(&entry, from: result)
        if let token = result.token?.accessToken { entry.tokenFingerprint = fingerprint(token: token) }
        guard result.error == nil, result.token != nil else {
            try? appendAudit(entry)
            throw result.error ?? .failure("verification failed")
        }
        try appendAudit(entry)
        return try rotate(profileNamed: name, secrets: secrets, detail: "verified")
    }

    private func fill(_ entry: inout AuditEntry, from result: ExchangeResult) {
        entry.outcome = result.outcome
        entry.httpStatus = result.httpStatus.map(Int64.init)
        entry.oauthError = result.oauthError
        entry.attempts = Int64(result.attempts)
        entry.durationMs = result.durationMs
        entry.requestID = result.requestID
        if let token = result.token {
            entry.tokenType = token.tokenType
            entry.expiresIn = token.expiresIn
        }
        // Why an exchange failed goes into the record, except a refusal, whose OAuth error
        // and HTTP status are recorded in their own fields.
        let explained: Bool
        switch result.outcome {
        case .error, .malformed, .unavailable: explained = true
        case .ok, .cacheHit, .rejected: explained = false
        }
        if explained, let error = result.error {
            entry.detail = [entry.detail, error.message.sanitisedForDisplay(limit: 200)].compactMap { $0 }.joined(separator: "; ")
        }
    }
}
