import Foundation
import GRDB

/// A vault with its keys: every change and every use of a secret goes through here.
/// Each operation is one immediate transaction that also appends its audit record, so a
/// change and its record are committed together or not at all.
///
/// Key epochs (FORMAT.md §4.2): every read and write checks, inside its transaction, that
/// the keys held here are still the vault's. When another process ran `rekey` meanwhile,
/// the new keys are unwrapped with the key-encryption key already derived and the
/// operation runs once more; when the passphrase changed too, it fails cleanly
/// (``VaultError/keysChanged``) and nothing sealed under a stale key is ever committed.
public final class UnlockedVault: @unchecked Sendable {
    public let vault: Vault
    public let vaultID: [UInt8]
    /// The member that unlocked the vault (format 3): it signs every record this process
    /// writes. `owner` for the passphrase.
    public let member: String
    private let lock = NSLock()
    private var currentHeader: VaultHeader
    private var currentKeys: VaultKeys
    /// The member's private keys: they open its key slot again after a concurrent rekey,
    /// and sign audit records. For the passphrase, the owner's identity from the header.
    private var currentIdentity: MemberIdentity
    var identity: MemberIdentity { lock.withLock { currentIdentity } }
    /// The rollback and fork check of this process's writes, once ``checkKnownState(_:)``
    /// or ``pinKnownState(_:)`` ran (FORMAT.md §12).
    private var trailGuard: TrailGuard?
    /// Cache hits the team store can commit in one statement while nothing changes.
    let unchangedHits = UnchangedHits()
    func adoptTrailGuard(_ guarding: TrailGuard) { lock.withLock { trailGuard = guarding } }
    var trailGuardForFlush: TrailGuard? { lock.withLock { trailGuard } }

    init(vault: Vault, header: VaultHeader, keys: VaultKeys, identity: MemberIdentity, member: String) {
        self.vault = vault
        vaultID = header.vaultID
        currentHeader = header
        currentKeys = keys
        currentIdentity = identity
        self.member = member
    }

    public var header: VaultHeader { lock.withLock { currentHeader } }
    /// The stored header row last found to decode to `currentHeader` (reset when the keys
    /// are reloaded): see ``storedHeaderIsCurrent()``.
    private var checkedHeaderRow: Row?
    var keys: VaultKeys { lock.withLock { currentKeys } }
    var database: any VaultStore { vault.database }
    var now: Date { vault.clock.now() }
    var signer: AuditSigner { AuditSigner(member: member, identity: identity) }
    /// Whether the passphrase unlocked this vault (the owner).
    public var isOwner: Bool { member == Labels.ownerMember }

    /// Lends the member's identity secret (64 bytes) to the agent launcher, which writes
    /// it to the agent's private pipe; nothing else in the program reads it.
    func withIdentitySecret<T>(_ body: (SecureBytes) throws -> T) rethrows -> T {
        try body(identity.secret)
    }

    /// A keyed fingerprint of a token for the audit trail.
    public func fingerprint(token: SecureBytes) -> String { keys.fingerprint(token: token) }

    // MARK: - Key epochs

    /// The header fields ``expectCurrent(_:keys:)`` reads.
    static let currentKeysQuery = StoreQuery("SELECT vault_id, format_version, key_epoch FROM vault_header WHERE id = 1")

    /// Checks, inside a transaction, that `keys` are the vault's current keys.
    func expectCurrent(_ db: StoreDB, keys: VaultKeys) throws {
        guard let row = try db.rows(Self.currentKeysQuery).first else {
            throw VaultError.integrity("the vault header is missing")
        }
        guard Sodium.constantTimeEqual([UInt8](row["vault_id"] as Data), vaultID) else {
            throw VaultError.integrity("the vault file was replaced by another vault while this command ran")
        }
        guard row["format_version"] as Int64 == Int64(Labels.formatVersion), row["key_epoch"] as Int64 == keys.epoch else {
            throw VaultError.keysChanged
        }
    }

    /// Re-reads the header and this member's key slot after another process changed the
    /// keys; true if the slot still opens for this member (a `rekey`), false when it no
    /// longer does (the member was removed).
    private func reloadKeys() throws(VaultError) -> Bool {
        let stored = try vault.header()
        try stored.validate()
        guard stored.vaultID == vaultID, stored.formatVersion == Labels.formatVersion else { return false }
        // A rekey only moves the epoch forward (a `passwd` keeps it): an older epoch is keys
        // put back under the trail (by a removed member who kept a copy), never taken
        // (FORMAT.md §4.2).
        let held = keys.epoch
        guard stored.keyEpoch >= held else {
            throw .integrity("the vault's key epoch went from \(held) back to \(stored.keyEpoch) while this command ran: the keys were put back to an older epoch")
        }
        let seen = lock.withLock { trailGuard }?.newestSeen.seq
        let opened = try database.read { db in
            let opened = try MemberCrypto.openSlot(identity: identity, db: db, vaultID: vaultID, epoch: stored.keyEpoch)
            if let opened {
                let audit = opened.keys.auditEpochKeys
                try AuditChain.checkNewestRecord(db: db, vaultID: vaultID, keys: audit, signedFrom: stored.signedFromSeq)
                // And every record since the one this process saw last, as at unlock (§12.2).
                if let seen, let failure = try AuditChain.verify(db: db, vaultID: vaultID, current: audit, from: max(1, seen)).firstFailure {
                    throw VaultError.integrity("audit record \(failure.seq): \(failure.reason)")
                }
            }
            return opened
        }
        guard let opened, opened.member.name == member else { return false }
        lock.withLock {
            currentHeader = stored
            currentKeys = opened.keys
            checkedHeaderRow = nil
        }
        unchangedHits.forgetAll()
        return true
    }

    /// Whether the stored header is no longer the one these keys were opened with (the
    /// agent asks between requests: a `passwd` or `rekey` by another process ends it). The
    /// row is read as it is and compared with the last row that decoded to that header, so
    /// while nothing changed no record is decoded; a changed row is decoded and compared.
    /// A read that fails says nothing (each operation checks the keys in its transaction).
    public func storedHeaderChanged() -> Bool {
        guard let row = try? database.read({ try Self.headerRow($0) }) else { return false }
        return !headerRowIsCurrent(row)
    }

    private static func headerRow(_ db: StoreDB) throws -> Row? {
        try Row.fetchOne(db, sql: "SELECT * FROM vault_header WHERE id = 1")
    }

    private func headerRowIsCurrent(_ row: Row??) -> Bool {
        guard let row = row ?? nil else { return false }
        let (current, checked) = lock.withLock { (currentHeader, checkedHeaderRow) }
        if let checked, checked == row { return true }
        guard let stored = try? HeaderRecord(row: row).header, stored == current else { return false }
        lock.withLock { if currentHeader == current { checkedHeaderRow = row } }
        return true
    }

    /// How often an operation is run again after concurrent rekeys before it gives up.
    static let maximumKeyReloads = 8

    /// Runs `operation` with the current keys; after a concurrent rekey, again with the
    /// new ones (each retry fails only if yet another rekey committed in between, so a
    /// bounded number is enough even when rekeys run back to back). A member removed
    /// meanwhile has no slot any more: it fails cleanly.
    private func withCurrentKeys<T>(_ operation: (VaultKeys) throws(VaultError) -> T) throws(VaultError) -> T {
        var reloads = 0
        while true {
            do {
                return try operation(keys)
            } catch .keysChanged {
                guard reloads < Self.maximumKeyReloads else { throw .keysChanged }
                reloads += 1
                Trace.debug("another process changed the vault's keys; reloading them")
                guard try reloadKeys() else { throw .keysChanged }
                Trace.debug("now in key epoch \(keys.epoch); running the operation again")
            }
        }
    }

    /// A write transaction whose keys are checked inside it (see the type's comment), with
    /// the reads `body` will make first sent ahead (``VaultStore/write(prefetching:_:)``).
    func write<T>(prefetching queries: [StoreQuery] = [], _ body: (VaultTransaction) throws -> T) throws(VaultError) -> T {
        try withCurrentKeys { (keys) throws(VaultError) in
            let mark = lock.withLock { trailGuard }.map { TrailMark($0, signedFrom: header.signedFromSeq) }
            let result = try database.write(prefetching: [Self.currentKeysQuery] + queries) { db in
                try expectCurrent(db, keys: keys)
                return try body(transaction(db, keys, trail: mark))
            }
            if let mark, let appended = mark.appended {
                mark.guarding.committed(appended, now: Int64(now.timeIntervalSince1970))
            }
            return result
        }
    }

    /// Takes the header, keys or identity that a `passwd` or `rekey` of this process
    /// committed (``KeyManagement``).
    func adopt(header: VaultHeader? = nil, keys: VaultKeys? = nil, identity: MemberIdentity? = nil) {
        lock.withLock {
            if let header { currentHeader = header }
            if let keys { currentKeys = keys }
            if let identity { currentIdentity = identity }
            checkedHeaderRow = nil
        }
        unchangedHits.forgetAll()
    }

    /// The transaction value of `db` with `keys`.
    func transaction(_ db: StoreDB, _ keys: VaultKeys, trail: TrailMark? = nil) -> VaultTransaction {
        VaultTransaction(db: db, keys: keys, vaultID: vaultID, signer: signer, signedFromSeq: header.signedFromSeq, now: now, trail: trail)
    }

    /// A read snapshot whose keys are checked inside it.
    func read<T>(_ body: (VaultTransaction) throws -> T) throws(VaultError) -> T {
        try withCurrentKeys { (keys) throws(VaultError) in
            try database.read { db in
                try expectCurrent(db, keys: keys)
                return try body(transaction(db, keys))
            }
        }
    }

}
