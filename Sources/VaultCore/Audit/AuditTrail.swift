import Foundation
import GRDB

/// What an audit record says (FORMAT.md §6): metadata only, never a token or a secret.
public struct AuditEntry: Sendable, Equatable, Codable {
    public var seq: Int64 = 0
    /// Milliseconds since the Unix epoch.
    public var at: Int64
    /// `init`, `add`, `rotate`, `remove`, `passwd`, `rekey`, `env-add`, `env-remove`,
    /// `token`, `exec`, `verify`.
    public var action: String
    public var profile: String?
    public var environment: String?
    public var tokenURL: String?
    public var grantType: String?
    /// `ok`, `cache_hit`, `rejected`, `unavailable`, `malformed`, `error`.
    public var outcome: String
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

    public init(at: Int64, action: String, outcome: String, profile: String? = nil, environment: String? = nil,
                tokenURL: String? = nil, grantType: String? = nil, detail: String? = nil) {
        self.at = at
        self.action = action
        self.outcome = outcome
        self.profile = profile
        self.environment = environment
        self.tokenURL = tokenURL
        self.grantType = grantType
        self.detail = detail
    }

    /// Outcomes that count as success for `--outcome ok`.
    public static let successOutcomes: Set<String> = ["ok", "cache_hit"]

    enum CodingKeys: String, CodingKey {
        case seq, at, action, profile, environment, tokenURL = "token_url", grantType = "grant_type", outcome
        case httpStatus = "http_status", oauthError = "oauth_error", attempts, durationMs = "duration_ms"
        case tokenType = "token_type", expiresIn = "expires_in", expiresAt = "expires_at"
        case requestID = "request_id", tokenFingerprint = "token_fingerprint", detail
    }
}

/// Filters of `vault audit`.
public struct AuditQuery: Sendable {
    public var profile: String?
    public var environment: String?
    public var since: Int64?
    public var until: Int64?
    /// `ok`, `error`, or one exact outcome name.
    public var outcome: String?
    public var limit: Int?

    public init(profile: String? = nil, environment: String? = nil, since: Int64? = nil, until: Int64? = nil,
                outcome: String? = nil, limit: Int? = nil) {
        self.profile = profile
        self.environment = environment
        self.since = since
        self.until = until
        self.outcome = outcome
        self.limit = limit
    }
}

/// The MAC-chained audit trail (FORMAT.md §6).
public enum AuditChain {
    static let zeroMAC = [UInt8](repeating: 0, count: 32)

    /// The MAC of record `entry` chained to `previousMAC` (FORMAT.md §6.2).
    public static func mac(of entry: AuditEntry, previousMAC: [UInt8], vaultID: [UInt8], key: SecureBytes) -> [UInt8] {
        var e = CanonicalEncoder(label: Labels.auditMAC)
        e.data(vaultID)
        e.data(previousMAC)
        e.i64(entry.seq)
        e.i64(entry.at)
        e.str(entry.action)
        e.optionalStr(entry.profile)
        e.optionalStr(entry.environment)
        e.optionalStr(entry.tokenURL)
        e.optionalStr(entry.grantType)
        e.str(entry.outcome)
        e.optionalI64(entry.httpStatus)
        e.optionalStr(entry.oauthError)
        e.optionalI64(entry.attempts)
        e.optionalI64(entry.durationMs)
        e.optionalStr(entry.tokenType)
        e.optionalI64(entry.expiresIn)
        e.optionalI64(entry.expiresAt)
        e.optionalStr(entry.requestID)
        e.optionalStr(entry.tokenFingerprint)
        e.optionalStr(entry.detail)
        return Sodium.blake2b(e.bytes, key: key, length: 32)
    }

    /// The MAC of the chain head (FORMAT.md §6.4).
    static func headMAC(seq: Int64, lastMAC: [UInt8], vaultID: [UInt8], key: SecureBytes) -> [UInt8] {
        var e = CanonicalEncoder(label: Labels.auditHeadMAC)
        e.data(vaultID)
        e.i64(seq)
        e.data(lastMAC)
        return Sodium.blake2b(e.bytes, key: key, length: 32)
    }

    /// Appends `entry` inside the caller's write transaction and moves the head.
    @discardableResult
    static func append(_ entry: AuditEntry, db: Database, vaultID: [UInt8], key: SecureBytes) throws -> AuditEntry {
        let head = try AuditHeadRecord.fetchOne(db, key: 1)
        var entry = entry
        entry.seq = (head?.seq ?? 0) + 1
        let previous = head.map { [UInt8]($0.lastMAC) } ?? zeroMAC
        let mac = mac(of: entry, previousMAC: previous, vaultID: vaultID, key: key)
        try AuditRow(entry, mac: mac).insert(db)
        try AuditHeadRecord(seq: entry.seq, lastMAC: Data(mac),
                            mac: Data(headMAC(seq: entry.seq, lastMAC: mac, vaultID: vaultID, key: key))).save(db)
        return entry
    }

    /// The result of `vault audit verify`.
    public struct Verification: Sendable, Equatable {
        public var recordsChecked: Int
        /// `nil` when the chain is intact; otherwise the first bad record and why.
        public var firstFailure: (seq: Int64, reason: String)?

        public static func == (a: Verification, b: Verification) -> Bool {
            a.recordsChecked == b.recordsChecked && a.firstFailure?.seq == b.firstFailure?.seq
                && a.firstFailure?.reason == b.firstFailure?.reason
        }
    }

    /// Walks the whole chain in order (FORMAT.md §6.5).
    static func verify(db: Database, vaultID: [UInt8], key: SecureBytes) throws -> Verification {
        var previous = zeroMAC
        var expectedSeq: Int64 = 1
        var checked = 0
        let cursor = try AuditRow.order(Column("seq")).fetchCursor(db)
        while let row = try cursor.next() {
            if row.seq != expectedSeq {
                return Verification(recordsChecked: checked, firstFailure: (
                    expectedSeq, row.seq > expectedSeq
                        ? "record \(expectedSeq) is missing (the chain jumps to record \(row.seq))"
                        : "record \(row.seq) is out of sequence"))
            }
            let computed = mac(of: row.entry, previousMAC: previous, vaultID: vaultID, key: key)
            guard Sodium.constantTimeEqual(computed, [UInt8](row.mac)) else {
                return Verification(recordsChecked: checked, firstFailure: (
                    row.seq, "record \(row.seq) does not match its MAC (edited, reordered, or the record before it was removed)"))
            }
            previous = computed
            expectedSeq += 1
            checked += 1
        }
        let lastSeq = expectedSeq - 1
        guard let head = try AuditHeadRecord.fetchOne(db, key: 1) else {
            return Verification(recordsChecked: checked, firstFailure: checked == 0
                ? (1, "the audit trail is empty and has no head (records were removed)")
                : (lastSeq, "the audit chain head is missing"))
        }
        let headMAC = headMAC(seq: head.seq, lastMAC: [UInt8](head.lastMAC), vaultID: vaultID, key: key)
        guard Sodium.constantTimeEqual(headMAC, [UInt8](head.mac)) else {
            return Verification(recordsChecked: checked, firstFailure: (head.seq, "the audit chain head does not match its MAC"))
        }
        guard head.seq == lastSeq, Sodium.constantTimeEqual([UInt8](head.lastMAC), previous) else {
            if head.seq > lastSeq {
                return Verification(recordsChecked: checked, firstFailure: (
                    lastSeq + 1, "record \(lastSeq + 1) is missing (the head says the trail ends at record \(head.seq))"))
            }
            return Verification(recordsChecked: checked, firstFailure: (
                head.seq + 1, "record \(head.seq + 1) was not written by this vault (after the chain head)"))
        }
        return Verification(recordsChecked: checked, firstFailure: nil)
    }

    /// The JSON object of one record (every field but the MAC), built by SQLite.
    static let jsonColumns = """
        json_object('seq', seq, 'at', at, 'action', action, 'profile', profile, 'environment', environment,
            'token_url', token_url, 'grant_type', grant_type, 'outcome', outcome, 'http_status', http_status,
            'oauth_error', oauth_error, 'attempts', attempts, 'duration_ms', duration_ms, 'token_type', token_type,
            'expires_in', expires_in, 'expires_at', expires_at, 'request_id', request_id,
            'token_fingerprint', token_fingerprint, 'detail', detail)
        """

    /// The request for records matching `query`, newest first. Needs no key.
    static func request(for query: AuditQuery) -> QueryInterfaceRequest<AuditRow> {
        var request = AuditRow.all()
        if let profile = query.profile { request = request.filter(Column("profile") == profile) }
        if let environment = query.environment { request = request.filter(Column("environment") == environment) }
        if let since = query.since { request = request.filter(Column("at") >= since) }
        if let until = query.until { request = request.filter(Column("at") <= until) }
        switch query.outcome {
        case nil: break
        case "ok": request = request.filter(AuditEntry.successOutcomes.contains(Column("outcome")))
        case "error": request = request.filter(!AuditEntry.successOutcomes.contains(Column("outcome")))
        case let outcome?: request = request.filter(Column("outcome") == outcome)
        }
        request = request.order(Column("seq").desc)
        if let limit = query.limit { request = request.limit(limit) }
        return request
    }
}

extension AuditRow {
    init(_ e: AuditEntry, mac: [UInt8]) {
        self.init(seq: e.seq, at: e.at, action: e.action, profile: e.profile, environment: e.environment,
                  tokenURL: e.tokenURL, grantType: e.grantType, outcome: e.outcome, httpStatus: e.httpStatus,
                  oauthError: e.oauthError, attempts: e.attempts, durationMs: e.durationMs, tokenType: e.tokenType,
                  expiresIn: e.expiresIn, expiresAt: e.expiresAt, requestID: e.requestID,
                  tokenFingerprint: e.tokenFingerprint, detail: e.detail, mac: Data(mac))
    }

    var entry: AuditEntry {
        var e = AuditEntry(at: at, action: action, outcome: outcome, profile: profile, environment: environment,
                           tokenURL: tokenURL, grantType: grantType, detail: detail)
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
        return e
    }
}
