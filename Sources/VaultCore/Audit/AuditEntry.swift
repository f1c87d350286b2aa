import Foundation
import GRDB

/// What an audit record records (FORMAT.md §6.1 `action`); stored as its raw value.
public enum AuditAction: String, Sendable, CaseIterable, Codable {
    /// The vault's first record.
    case initialise = "init"
    case add, rotate, remove, passwd, rekey, upgrade
    /// `vault edit`: a profile's settings changed, its secrets kept.
    case edit
    case envAdd = "env-add", envSet = "env-set", envRemove = "env-remove"
    case memberAdd = "member-add", memberRemove = "member-remove"
    /// A token delivered by `vault token`, `vault exec` or a renewal by the agent.
    case token, exec, refresh
    /// A token handed out by `vault serve`'s endpoint (`detail` names the caller), or taken
    /// by `vault proxy` for its upstream requests.
    case serve, proxy
    /// A summary of the requests `vault proxy` forwarded, anchoring its request log
    /// (FORMAT.md §6.8).
    case proxyRequests = "proxy-requests"
    /// `vault verify PROFILE`: an exchange whose token is discarded.
    case verify
    /// `vault verify --accept-rollback` / `--repin`: an older, diverged or replaced vault
    /// accepted deliberately (FORMAT.md §12).
    case acceptRollback = "accept-rollback", repin

    /// Actions that may open a new key epoch (their record carries `previous_key_mac`).
    var startsKeyEpoch: Bool {
        switch self {
        case .rekey, .memberRemove: true
        case .initialise, .add, .edit, .rotate, .remove, .passwd, .upgrade, .envAdd, .envSet, .envRemove, .memberAdd,
             .token, .exec, .refresh, .serve, .proxy, .proxyRequests, .verify, .acceptRollback, .repin: false
        }
    }

    /// Actions only the owner (the passphrase) can take: their records, from the first
    /// signed one on, must be signed by the owner (FORMAT.md §6.7, rule 6).
    var ownerOnly: Bool {
        switch self {
        case .rekey, .memberRemove, .passwd, .upgrade: true
        case .initialise, .add, .edit, .rotate, .remove, .envAdd, .envSet, .envRemove, .memberAdd,
             .token, .exec, .refresh, .serve, .proxy, .proxyRequests, .verify, .acceptRollback, .repin: false
        }
    }

    /// Actions whose record may be the vault's first signed one (FORMAT.md §6.7).
    var mayStartSignatures: Bool {
        switch self {
        case .initialise, .upgrade: true
        case .add, .edit, .rotate, .remove, .passwd, .rekey, .envAdd, .envSet, .envRemove, .memberAdd, .memberRemove,
             .token, .exec, .refresh, .serve, .proxy, .proxyRequests, .verify, .acceptRollback, .repin: false
        }
    }
}

/// How the recorded operation ended (FORMAT.md §6.1 `outcome`); stored as its raw value.
public enum AuditOutcome: String, Sendable, CaseIterable, Codable {
    case ok
    /// A token served from the cache.
    case cacheHit = "cache_hit"
    /// The endpoint refused the credentials (HTTP 400/401).
    case rejected
    /// The endpoint could not be reached, or kept failing.
    case unavailable
    /// The endpoint's answer was not a valid token response.
    case malformed
    case error

    /// Whether `vault audit --outcome ok` counts it as a success.
    public var isSuccess: Bool {
        switch self {
        case .ok, .cacheHit: true
        case .rejected, .unavailable, .malformed, .error: false
        }
    }
}

/// What an audit record says (FORMAT.md §6): metadata only, never a token or a secret.
public struct AuditEntry: Sendable, Equatable, Codable {
    public var seq: Int64 = 0
    /// Milliseconds since the Unix epoch.
    public var at: Int64
    public var action: AuditAction
    public var profile: String?
    public var environment: String?
    public var tokenURL: String?
    public var grantType: GrantType?
    public var outcome: AuditOutcome
    public var httpStatus: Int64?
    public var oauthError: String?
    public var attempts: Int64?
    public var durationMs: Int64?
    public var tokenType: String?
    public var expiresIn: Int64?
    public var expiresAt: Int64?
    public var requestID: String?
    public var tokenFingerprint: String?
    /// Free text without secrets: which fields were rotated, the KDF preset chosen.
    public var detail: String?
    /// Format 3: the member who caused the record (its signer); nil on records written
    /// before the vault had members.
    public var member: String?

    public init(at: Int64, action: AuditAction, outcome: AuditOutcome, profile: String? = nil, environment: String? = nil,
                tokenURL: String? = nil, grantType: GrantType? = nil, detail: String? = nil) {
        self.at = at
        self.action = action
        self.outcome = outcome
        self.profile = profile
        self.environment = environment
        self.tokenURL = tokenURL
        self.grantType = grantType
        self.detail = detail
    }

    enum CodingKeys: String, CodingKey {
        case seq, at, action, profile, environment, tokenURL = "token_url", grantType = "grant_type", outcome
        case httpStatus = "http_status", oauthError = "oauth_error", attempts, durationMs = "duration_ms"
        case tokenType = "token_type", expiresIn = "expires_in", expiresAt = "expires_at"
        case requestID = "request_id", tokenFingerprint = "token_fingerprint", detail, member
    }
}

/// Filters of `vault audit`.
public struct AuditQuery: Sendable {
    /// `--outcome`: a class of outcomes, or one outcome.
    public enum OutcomeFilter: Sendable, Equatable {
        /// `ok`: every successful outcome (``AuditOutcome/isSuccess``).
        case succeeded
        /// `error`: every other outcome.
        case failed
        /// One outcome by its stored name.
        case exactly(AuditOutcome)

        /// What `--outcome` accepts: the two classes, then the other outcomes' names.
        public static let names = ["ok", "error"] + AuditOutcome.allCases.filter { $0 != .ok && $0 != .error }.map(\.rawValue)

        /// `ok`, `error`, or an outcome's stored name; nil for anything else.
        public init?(_ text: String) {
            switch text {
            case "ok": self = .succeeded
            case "error": self = .failed
            default:
                guard let outcome = AuditOutcome(rawValue: text) else { return nil }
                self = .exactly(outcome)
            }
        }
    }

    public var profile: String?
    public var environment: String?
    public var since: Int64?
    public var until: Int64?
    public var outcome: OutcomeFilter?
    public var limit: Int?
    /// Only records after this sequence number (`--follow`).
    public var afterSeq: Int64?
    /// Only records signed by this member (format 3).
    public var member: String?

    public init(profile: String? = nil, environment: String? = nil, since: Int64? = nil, until: Int64? = nil,
                outcome: OutcomeFilter? = nil, limit: Int? = nil, afterSeq: Int64? = nil) {
        self.afterSeq = afterSeq
        self.profile = profile
        self.environment = environment
        self.since = since
        self.until = until
        self.outcome = outcome
        self.limit = limit
    }
}

extension AuditRow {
    /// The record as stored (its MAC, epoch and signature are set by the caller).
    init(_ e: AuditEntry) {
        self.init(seq: e.seq, at: e.at, action: e.action.rawValue, profile: e.profile, environment: e.environment,
                  tokenURL: e.tokenURL, grantType: e.grantType?.rawValue, outcome: e.outcome.rawValue, httpStatus: e.httpStatus,
                  oauthError: e.oauthError, attempts: e.attempts, durationMs: e.durationMs, tokenType: e.tokenType,
                  expiresIn: e.expiresIn, expiresAt: e.expiresAt, requestID: e.requestID,
                  tokenFingerprint: e.tokenFingerprint, detail: e.detail, keyEpoch: nil, previousKeyMAC: nil, mac: Data())
    }

    /// The stored record as an entry; a name this build does not know (an action, an
    /// outcome or a grant type) is an integrity failure naming the record.
    func entry() throws(VaultError) -> AuditEntry {
        guard let typedAction = AuditAction(rawValue: action), let typedOutcome = AuditOutcome(rawValue: outcome) else {
            throw .integrity("audit record \(seq) has an action or outcome this version does not know ('\(action.sanitisedForDisplay(limit: 32))', '\(outcome.sanitisedForDisplay(limit: 32))')")
        }
        var typedGrant: GrantType?
        if let grantType {
            guard let known = GrantType(rawValue: grantType) else {
                throw .integrity("audit record \(seq) has a grant type this version does not know ('\(grantType.sanitisedForDisplay(limit: 32))')")
            }
            typedGrant = known
        }
        var e = AuditEntry(at: at, action: typedAction, outcome: typedOutcome, profile: profile, environment: environment,
                           tokenURL: tokenURL, grantType: typedGrant, detail: detail)
        e.seq = seq
        e.httpStatus = httpStatus
        e.oauthError = oauthError
        e.attempts = attempts
        e.durationMs = durationMs
        e.tokenType = tokenType
        e.expiresIn = expiresIn
        e.expiresAt = expiresAt
        e.requestID = requestID
        e.tokenFingerprint = tokenFingerprint
        e.member = member
        return e
    }
}
