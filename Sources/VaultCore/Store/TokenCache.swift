import Foundation
import GRDB

/// Cached tokens and the records of exchanges (FORMAT.md §3.5, §5.2, §6), inside one
/// transaction: no token leaves `vault` unless its record is committed with it.
struct TokenCache {
    let tx: VaultTransaction

    /// What ``deliver(profile:environment:minTTL:action:)`` reads, each by the names it is
    /// given (the environment, when not given, is the profile's), so that all of it can be
    /// sent at once with the transaction's start: the profile, the environment, the secret
    /// versions, the cached token, and the audit head it appends to.
    static func reads(profile name: String, environment: String?) -> (all: [StoreQuery], environment: StoreQuery, token: StoreQuery) {
        let name = name.precomposedStringWithCanonicalMapping
        let environmentName = "coalesce(?, (SELECT environment FROM profile WHERE name = ?))"
        let environmentRow = StoreQuery("SELECT * FROM environment WHERE name = \(environmentName)", [environment, name])
        let token = StoreQuery("SELECT * FROM token_cache WHERE profile_id = (SELECT id FROM profile WHERE name = ?) AND environment = \(environmentName)",
                               [name, environment, name])
        return ([VaultTransaction.profileQuery(named: name), environmentRow, VaultTransaction.versionsQuery(profile: name), token,
                 AuditChain.headQuery], environmentRow, token)
    }

    /// A usable cached token of `profile` for `environment`, delivered: the checks the
    /// exchange path makes (profile MAC, environment MAC and URL policy, the secret version
    /// sequence), the cached token opened (the secrets are not: a cache hit needs no
    /// credentials), and its audit record appended. Nil (nothing written) when there is no
    /// cached token for the current secret versions with more than `minTTL` seconds left.
    func deliver(profile name: String, environment: String?, minTTL: Int64, action: TokenAction, detail: String?) throws -> DeliveredToken? {
        let reads = Self.reads(profile: name, environment: environment)
        let profile = try Profiles(tx: tx).verified(named: name)
        let environment = try tx.environment(named: environment ?? profile.environment, query: reads.environment)
        let tokenURL = try EndpointPolicy.validateTokenURL(environment.tokenURL)
        try tx.checkVersionSequence(profile)
        guard let uid = profile.uid, let row = try tx.db.rows(reads.token).first else { return nil }
        let record = try TokenCacheRecord(row: row)
        let now = tx.now
        guard record.environmentUID == Data(environment.uid),
              record.clientSecretVersion == profile.clientSecretVersion,
              record.passwordVersion == profile.passwordVersion,
              record.expiresAt - minTTL > Int64(now.timeIntervalSince1970)
        else { return nil }
        let ad = tx.tokenAD(profileUID: [UInt8](uid), environment: environment, expiresAt: record.expiresAt,
                            clientSecretVersion: record.clientSecretVersion, passwordVersion: record.passwordVersion)
        let token: SecureBytes
        do {
            token = try Sodium.open(key: tx.keys.tokenKey, nonce: [UInt8](record.nonce), ciphertext: [UInt8](record.ciphertext), additionalData: ad)
        } catch {
            throw VaultError.integrity("the cached token of profile '\(profile.name.sanitisedForDisplay(limit: 64))' failed authentication")
        }
        var entry = AuditEntry(at: now.unixMilliseconds, action: action.auditAction, outcome: .cacheHit, profile: profile.name,
                               environment: environment.name, tokenURL: tokenURL, grantType: profile.grantType, detail: detail)
        entry.tokenType = "Bearer"
        entry.expiresAt = record.expiresAt
        entry.expiresIn = record.expiresAt - Int64(now.timeIntervalSince1970)
        entry.tokenFingerprint = tx.keys.fingerprint(token: token)
        entry.attempts = 0
        entry.durationMs = 0
        let committed = try tx.audit(entry)
        return DeliveredToken(token: token, tokenType: "Bearer", expiresAt: record.expiresAt, expiresIn: entry.expiresIn ?? 0,
                              environment: environment, fromCache: true, audit: committed)
    }

    /// An exchange's record, and for a fresh token its sealed cache entry if the profile is
    /// still the same one with the same secret versions (a concurrent rotate or remove wins).
    func record(_ entry: AuditEntry, cache: (target: ExchangeTarget, token: SecureBytes, expiresAt: Int64)?) throws -> AuditEntry {
        if let cache, let current = try ProfileRecord.fetchOne(tx.db, key: cache.target.profile.id),
           current.uid == Data(cache.target.profile.uid),
           current.clientSecretVersion == cache.target.credentials.clientSecretVersion,
           current.passwordVersion == cache.target.credentials.passwordVersion {
            let nonce = Sodium.randomBytes(Sodium.aeadNonceBytes)
            let ad = tx.tokenAD(profileUID: cache.target.profile.uid, environment: cache.target.environment, expiresAt: cache.expiresAt,
                                clientSecretVersion: cache.target.credentials.clientSecretVersion,
                                passwordVersion: cache.target.credentials.passwordVersion)
            let ciphertext = try Sodium.seal(key: tx.keys.tokenKey, nonce: nonce, plaintext: cache.token, additionalData: ad)
            try TokenCacheRecord(profileID: cache.target.profile.id, environment: cache.target.environment.name,
                                 environmentUID: Data(cache.target.environment.uid), expiresAt: cache.expiresAt,
                                 clientSecretVersion: cache.target.credentials.clientSecretVersion,
                                 passwordVersion: cache.target.credentials.passwordVersion,
                                 nonce: Data(nonce), ciphertext: Data(ciphertext)).save(tx.db)
        }
        return try tx.audit(entry)
    }
}

extension UnlockedVault {
    /// Delivers a usable cached token (``TokenCache/deliver(profile:environment:minTTL:action:)``)
    /// in one write transaction, its record committed before the token is returned. A
    /// storage failure is ``VaultError/auditRefused(_:)`` (exit 8), as for any exchange.
    func deliverCachedToken(profile name: String, environment: String?, minTTL: Int64, action: TokenAction, detail: String?) throws(VaultError) -> DeliveredToken? {
        let delivered: DeliveredToken?
        do {
            delivered = try write(prefetching: TokenCache.reads(profile: name, environment: environment).all) {
                try TokenCache(tx: $0).deliver(profile: name, environment: environment, minTTL: minTTL, action: action, detail: detail)
            }
        } catch {
            switch error {
            case .failure(let what, _): throw .auditRefused(what)
            default: throw error
            }
        }
        guard let delivered else { return nil }
        Trace.debug("audit record \(delivered.audit.seq) committed (\(delivered.audit.action.rawValue), cache_hit)")
        try checkRecordStillInPlace()
        return delivered
    }

    /// Commits the audit record of an exchange (and, for a fresh token, its sealed cache
    /// entry) in one transaction. The token must not be released unless this returns:
    /// a storage failure is ``VaultError/auditRefused(_:)`` (exit 8), a damaged trail an
    /// integrity failure (exit 7).
    @discardableResult
    func recordExchange(_ entry: AuditEntry, cache: (target: ExchangeTarget, token: SecureBytes, expiresAt: Int64)?) throws(VaultError) -> AuditEntry {
        let committed: AuditEntry
        do {
            committed = try write { try TokenCache(tx: $0).record(entry, cache: cache) }
        } catch {
            switch error {
            case .integrity, .notAsRemembered: throw error
            default: throw .auditRefused(error.message)
            }
        }
        Trace.debug("audit record \(committed.seq) committed (\(committed.action.rawValue), \(committed.outcome.rawValue))")
        try checkRecordStillInPlace()
        return committed
    }

    /// In a long-running process (the agent, whose `verify` and `audit verify` read a trail
    /// it unlocked long ago): the trail must still extend the newest record this process saw,
    /// as at an unlock (exit 7 otherwise: records cut from the end and an older head put back
    /// are not "intact").
    func expectTrailExtendsSeen(_ db: StoreDB) throws {
        guard let guarding = trailGuardForFlush, let row = try db.rows(AuditChain.headQuery).first else { return }
        let head = try AuditHeadRecord(row: row)
        try guarding.check(headSeq: head.seq, headMAC: [UInt8](head.lastMAC), db: db)
    }

    /// A record committed to a file that was removed or replaced meanwhile is lost to the
    /// audit trail: the token is withheld.
    private func checkRecordStillInPlace() throws(VaultError) {
        guard database.isStillInPlace else {
            throw .auditRefused("the vault file at \(database.path) was removed or replaced while vault ran")
        }
    }

    /// Appends an audit record on its own (failed exchanges, `rotate --verify`).
    @discardableResult
    public func appendAudit(_ entry: AuditEntry) throws(VaultError) -> AuditEntry {
        try write { try $0.audit(entry) }
    }

    /// Checks the whole audit chain (`vault audit verify`).
    public func verifyAudit() throws(VaultError) -> AuditChain.Verification {
        try read { tx in
            try expectTrailExtendsSeen(tx.db)
            return try AuditChain.verify(db: tx.db, vaultID: tx.vaultID, current: tx.keys.auditEpochKeys,
                                  signatures: .init(signedFrom: tx.signedFromSeq, members: tx.checkedMembers()))
        }
    }
}
