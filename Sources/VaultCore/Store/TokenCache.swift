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
    func deliver(profile name: String, environment: String?, minTTL: Int64, action: TokenAction, detail: String?) throws -> (hit: Hit, delivered: DeliveredToken)? {
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
        let hit = Hit(token: token, expiresAt: record.expiresAt, environment: environment, profile: profile.name, tokenURL: tokenURL,
                      grantType: profile.grantType, fingerprint: tx.keys.fingerprint(token: token))
        let entry = hit.entry(at: now, action: action, detail: detail)
        let committed = try tx.audit(entry)
        return (hit, hit.delivered(entry: entry, audit: committed))
    }

    /// A cached token found usable, with what its record says: one record of a cache hit,
    /// whichever way it is committed.
    struct Hit {
        let token: SecureBytes
        let expiresAt: Int64
        let environment: Environment
        let profile: String
        let tokenURL: String
        let grantType: GrantType?
        let fingerprint: String

        /// The record of delivering it at `now`.
        func entry(at now: Date, action: TokenAction, detail: String?) -> AuditEntry {
            var entry = AuditEntry(at: now.unixMilliseconds, action: action.auditAction, outcome: .cacheHit, profile: profile,
                                   environment: environment.name, tokenURL: tokenURL, grantType: grantType, detail: detail)
            entry.tokenType = "Bearer"
            entry.expiresAt = expiresAt
            entry.expiresIn = expiresAt - Int64(now.timeIntervalSince1970)
            entry.tokenFingerprint = fingerprint
            entry.attempts = 0
            entry.durationMs = 0
            return entry
        }

        func delivered(entry: AuditEntry, audit: AuditEntry) -> DeliveredToken {
            DeliveredToken(token: token, tokenType: "Bearer", expiresAt: expiresAt, expiresIn: entry.expiresIn ?? 0,
                           environment: environment, fromCache: true, audit: audit)
        }
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

/// Cache hits that the team store commits in one statement (``UnlockedVault/deliverUnchangedCacheHit(_:minTTL:action:detail:)``):
/// per profile and requested environment, the hit the last transaction checked and the
/// digest of what it read.
final class UnchangedHits: @unchecked Sendable {
    struct Entry {
        let hit: TokenCache.Hit
        let state: StoreQuery
        let digest: Data
        let keyEpoch: Int64
    }

    private let lock = NSLock()
    private var entries: [String: Entry] = [:]

    static func key(profile: String, environment: String?) -> String {
        profile.precomposedStringWithCanonicalMapping + "\u{0}" + (environment ?? "")
    }

    func entry(_ key: String) -> Entry? { lock.withLock { entries[key] } }
    func remember(_ key: String, _ entry: Entry?) { lock.withLock { entries[key] = entry } }
    func forgetAll() { lock.withLock { entries.removeAll() } }
}

extension UnlockedVault {
    /// Delivers a usable cached token (``TokenCache/deliver(profile:environment:minTTL:action:)``)
    /// in one write transaction, its record committed before the token is returned. A
    /// storage failure is ``VaultError/auditRefused(_:)`` (exit 8), as for any exchange.
    ///
    /// On the team store, the transaction also reads the digest of everything it checked
    /// but the audit head; the next hit of the same profile and environment is then one
    /// statement that commits its record only if that digest, the head this process last
    /// saw and the schema are still the same (``deliverUnchangedCacheHit(_:minTTL:action:detail:)``).
    func deliverCachedToken(profile name: String, environment: String?, minTTL: Int64, action: TokenAction, detail: String?) throws(VaultError) -> DeliveredToken? {
        let key = UnchangedHits.key(profile: name, environment: environment)
        if let delivered = try deliverUnchangedCacheHit(key, minTTL: minTTL, action: action, detail: detail) { return delivered }
        let reads = TokenCache.reads(profile: name, environment: environment)
        let state = database.stateDigestQuery([Self.currentKeysQuery] + reads.all.filter { $0 != AuditChain.headQuery })
        let delivered: (hit: TokenCache.Hit, delivered: DeliveredToken, digest: Data?)?
        do {
            delivered = try write(prefetching: reads.all + (state.map { [$0] } ?? [])) { tx in
                guard let found = try TokenCache(tx: tx).deliver(profile: name, environment: environment, minTTL: minTTL, action: action, detail: detail)
                else { return nil }
                return (found.hit, found.delivered, try state.flatMap { try tx.db.rows($0).first?["state"] as Data? })
            }
        } catch {
            switch error {
            case .failure(let what, _): throw .auditRefused(what)
            default: throw error
            }
        }
        guard let delivered else {
            unchangedHits.remember(key, nil)
            return nil
        }
        Trace.debug("audit record \(delivered.delivered.audit.seq) committed (\(delivered.delivered.audit.action.rawValue), cache_hit)")
        try checkRecordStillInPlace()
        if let state, let digest = delivered.digest {
            unchangedHits.remember(key, .init(hit: delivered.hit, state: state, digest: digest, keyEpoch: keys.epoch))
        }
        return delivered.delivered
    }

    /// The team store's cache hit in one statement (FORMAT.md §11.4): the hit the last
    /// transaction of this profile and environment checked, delivered again with a record
    /// that follows the newest one this process knows, committed only if the store still
    /// holds exactly what that transaction read (the digest), that record as its newest
    /// and head, and the schema last checked. Nil when there is no such hit or anything
    /// changed (nothing was written; the caller's transaction checks everything again).
    private func deliverUnchangedCacheHit(_ key: String, minTTL: Int64, action: TokenAction, detail: String?) throws(VaultError) -> DeliveredToken? {
        guard let remembered = unchangedHits.entry(key), let guarding = trailGuardForFlush else { return nil }
        let keys = self.keys
        let now = self.now
        guard remembered.keyEpoch == keys.epoch, remembered.hit.expiresAt - minTTL > Int64(now.timeIntervalSince1970) else { return nil }
        let audit = keys.auditEpochKeys
        let newest = guarding.newestKnown()
        var entry = remembered.hit.entry(at: now, action: action, detail: detail)
        entry.seq = newest.seq + 1
        let sealed = AuditChain.seal(entry, previousMAC: newest.mac, vaultID: vaultID, keys: audit, signer: signer)
        let head = AuditHeadRecord(seq: newest.seq, keyEpoch: audit.epoch, lastMAC: Data(newest.mac),
                                   mac: Data(Format.auditHeadMAC(seq: newest.seq, epoch: audit.epoch, lastMAC: newest.mac, vaultID: vaultID, key: audit.macKey)))
        let next = AuditHeadRecord(seq: entry.seq, keyEpoch: audit.epoch, lastMAC: Data(sealed.mac), mac: Data(sealed.headMAC))
        let appended: Bool
        do {
            // False for anything changed or failed (a lost connection, a concurrent writer of
            // the same record number), which the full transaction meets again and reports.
            appended = try database.appendIfUnchanged(UnchangedAppend(state: remembered.state, stateDigest: remembered.digest, head: head,
                                                                      record: sealed.row, newHead: next))
        } catch {
            switch error {
            case .failure(let what, _): throw .auditRefused(what)
            default: throw error
            }
        }
        guard appended else {
            unchangedHits.remember(key, nil)
            return nil
        }
        guarding.committed((entry.seq, sealed.mac), now: Int64(now.timeIntervalSince1970))
        Trace.debug("audit record \(entry.seq) committed in one statement (\(entry.action.rawValue), cache_hit)")
        return remembered.hit.delivered(entry: sealed.entry, audit: sealed.entry)
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
