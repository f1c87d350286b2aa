import Foundation
import GRDB

/// The rollback, fork and replacement check of one unlocked vault against what this user's
/// clients remember of it (``KnownVaults``, FORMAT.md §12).
///
/// At unlock (``UnlockedVault/checkKnownState(_:)``): the store must be the vault pinned at
/// its location (same vault id, same owner signing key), its audit trail must reach the
/// highest record seen there, and hold at that sequence number the record seen (same MAC).
/// Then, in every write transaction, the head the audit append reads must extend the
/// newest record this process saw (no extra query while nobody else wrote; one indexed
/// read when someone did), and after the commit the remembered record moves forward.
final class TrailGuard: @unchecked Sendable {
    let known: KnownVaults
    let location: String
    private let lock = NSLock()
    private var seen: (seq: Int64, mac: [UInt8])
    private let pinnedAt: Int64

    init(known: KnownVaults, location: String, seen: (seq: Int64, mac: [UInt8]), pinnedAt: Int64) {
        self.known = known
        self.location = location
        self.seen = seen
        self.pinnedAt = pinnedAt
    }

    /// The newest record this process knows of.
    var newestSeen: (seq: Int64, mac: [UInt8]) { lock.withLock { seen } }

    /// The newest record this process or (``adoptFromFile()``) any other of this user saw.
    func newestKnown() -> (seq: Int64, mac: [UInt8]) {
        adoptFromFile()
        return newestSeen
    }

    /// Checks that a trail whose head is `headSeq`/`headMAC` extends the newest record seen,
    /// by this process or (``adoptFromFile()``) by any other of this user; `db` answers for
    /// the record at that sequence number when the head moved past it.
    func check(headSeq: Int64, headMAC: [UInt8], db: StoreDB) throws {
        let seen = newestKnown()
        try expectExtends(headSeq: headSeq, headMAC: headMAC, seen: seen) {
            try Data.fetchOne(db, sql: "SELECT mac FROM audit_record WHERE seq = ?", arguments: [seen.seq]).map { [UInt8]($0) }
        }
    }

    /// The one rule of both checks (at unlock and in each write): a trail whose head is
    /// `headSeq`/`headMAC` extends `seen` when it is not shorter and holds `seen`'s record at
    /// its sequence number (the head's own MAC when they are the same record, else what
    /// `recordAtSeen` reads).
    func expectExtends(headSeq: Int64, headMAC: [UInt8], seen: (seq: Int64, mac: [UInt8]),
                       recordAtSeen: () throws -> [UInt8]?) throws {
        if headSeq < seen.seq {
            throw Self.rollback(location: location, headSeq: headSeq, seenSeq: seen.seq, since: pinnedAt)
        }
        guard let stored = headSeq == seen.seq ? headMAC : try recordAtSeen(), Sodium.constantTimeEqual(stored, seen.mac) else {
            throw Self.fork(location: location, seenSeq: seen.seq, since: pinnedAt)
        }
    }

    /// The file as this process last read it (device, inode, size, modification time).
    private var fileStamp: [Int64]?

    /// A long-running process (the agent) takes the newest record the user's other processes
    /// saw, from the file, when the file changed since it last looked and holds a record
    /// further along under the same pin. (Without it, an agent compared the trail only with
    /// its own records: an outside review cut the records of two `--no-agent` tokens, and the
    /// agent's `audit verify` said "intact" and its next write made the cut permanent.) One
    /// `stat` per check; the file is read again only when it changed. A file that cannot be
    /// trusted or read leaves this process's own view as it is.
    private func adoptFromFile() {
        var info = stat()
        guard stat(known.path, &info) == 0 else { return }
        let stamp = [Int64(info.st_dev), Int64(info.st_ino), Int64(info.st_size), Int64(info.st_mtim.tv_sec), Int64(info.st_mtim.tv_nsec)]
        guard lock.withLock({ stamp != fileStamp }) else { return }
        let entry = try? known.entry(for: location)
        lock.withLock {
            fileStamp = stamp
            guard let entry, entry.pinnedAt == pinnedAt, entry.seq > seen.seq, let mac = [UInt8](hex: entry.mac) else { return }
            seen = (entry.seq, mac)
        }
    }

    /// When the file was last written (monotonic nanoseconds), and whether it lags.
    private var writtenAt: UInt64?
    private var lagging = false
    /// At most one write of the file per this many nanoseconds: the agent commits a record
    /// for every token, and rewriting the file each time cost it 0.35–0.45 ms per cache hit
    /// (bench/results); a process that ends calls ``flush(now:)``.
    static let writeInterval: UInt64 = 1_000_000_000

    /// Whether a write of the file is due at `clock` (the one place of the rule); called
    /// under `lock`.
    private func writeDue(at clock: UInt64) -> Bool {
        guard let writtenAt else { return true }
        return clock &- writtenAt >= Self.writeInterval
    }

    /// After a commit that appended `record`: remembers it, here and (at most once a second)
    /// in the file.
    func committed(_ record: (seq: Int64, mac: [UInt8]), now: Int64) {
        let write = lock.withLock { () -> Bool in
            guard record.seq > seen.seq else { return false }
            seen = record
            let clock = DispatchTime.now().uptimeNanoseconds
            guard writeDue(at: clock) else {
                lagging = true
                return false
            }
            writtenAt = clock
            lagging = false
            return true
        }
        if write { persist(record, now: now) }
    }

    /// Writes the newest record seen to the file if a recent one was held back; with
    /// `onlyIfDue`, only once ``writeInterval`` has passed since the last write (the agent
    /// asks every 200 ms, so the file is never more than about a second behind its trail,
    /// however long it then sits idle).
    func flush(now: Int64, onlyIfDue: Bool = false) {
        let record = lock.withLock { () -> (seq: Int64, mac: [UInt8])? in
            let clock = DispatchTime.now().uptimeNanoseconds
            guard lagging, !onlyIfDue || writeDue(at: clock) else { return nil }
            lagging = false
            writtenAt = clock
            return seen
        }
        if let record { persist(record, now: now) }
    }

    private func persist(_ record: (seq: Int64, mac: [UInt8]), now: Int64) {
        do {
            try known.advance(location: location, to: record.seq, mac: record.mac.hexString, at: now, pinnedAt: pinnedAt)
        } catch {
            // The commit stands; the record of it lags (the next check is against an older
            // record, which the trail still holds). Said once, on standard error.
            KnownVaults.warnOnce("cannot remember audit record \(record.seq) in \(known.path) (\(error.message))")
        }
    }

    static func date(_ seconds: Int64) -> String {
        Date(timeIntervalSince1970: TimeInterval(seconds)).iso8601.prefix(10).description
    }

    static let acceptHint = "if you restored it yourself, `vault verify --accept-rollback` checks it in full and accepts it (audited)"
    static let repinHint = "if it was replaced on purpose, `vault verify --repin` checks it in full and pins it (audited)"

    static func rollback(location: String, headSeq: Int64, seenSeq: Int64, since: Int64) -> VaultError {
        .notAsRemembered("this vault is older than the one you used at \(location.sanitisedForDisplay(limit: 200)) (known since \(date(since))): "
                         + "its audit trail ends at record \(headSeq), and you saw record \(seenSeq): a restored backup or dump, "
                         + "or a rollback by someone with access to the store", hint: acceptHint)
    }

    static func fork(location: String, seenSeq: Int64, since: Int64) -> VaultError {
        .notAsRemembered("this vault's audit record \(seenSeq) is not the one you saw at \(location.sanitisedForDisplay(limit: 200)) "
                         + "(known since \(date(since))): an older copy restored and used again (a fork), or a rewritten trail",
                         hint: acceptHint)
    }
}

/// Per write transaction: what its audit append wrote, for ``TrailGuard/committed(_:now:)``.
final class TrailMark: @unchecked Sendable {
    let guarding: TrailGuard
    /// The vault's first signed record (§6.7), for the check of a newest record another
    /// process wrote.
    let signedFrom: Int64
    var appended: (seq: Int64, mac: [UInt8])?
    init(_ guarding: TrailGuard, signedFrom: Int64) {
        self.guarding = guarding
        self.signedFrom = signedFrom
    }
}

extension UnlockedVault {
    /// The store's state as the check at unlock reads it: the audit head, the record at
    /// `seq`, the owner's signing key.
    static func knownStateQuery(seq: Int64) -> StoreQuery {
        StoreQuery("""
            SELECT h.seq, h.last_mac, (SELECT mac FROM audit_record WHERE seq = ?) AS seen_mac,
                (SELECT sign_public_key FROM member WHERE name = 'owner' AND kind = 'passphrase') AS owner_key
            FROM audit_head h WHERE h.id = 1
            """, [seq])
    }

    /// What the known-vaults record compares, in one snapshot (``knownStateQuery(seq:)``):
    /// nil for a vault without an audit head or an owner.
    private func knownState(seenSeq: Int64) throws(VaultError) -> (seq: Int64, mac: [UInt8], seenMAC: [UInt8]?, owner: [UInt8])? {
        try database.read { db in
            guard let row = try db.rows(Self.knownStateQuery(seq: seenSeq)).first,
                  let seq = row["seq"] as Int64?, let mac = row["last_mac"] as Data?, let owner = row["owner_key"] as Data? else {
                return nil
            }
            return (seq, [UInt8](mac), (row["seen_mac"] as Data?).map { [UInt8]($0) }, [UInt8](owner))
        }
    }

    /// Checks this vault against what `known` remembers of its location, or pins it there
    /// when nothing is (trust on first use); then guards every write of this process
    /// (``TrailGuard``). Exit 7 when the store is another vault, has another owner, or is
    /// older than or diverged from what was seen.
    public func checkKnownState(_ known: KnownVaults) throws(VaultError) {
        let location = database.locationIdentity
        let entry = try known.entry(for: location)
        let now = Int64(self.now.timeIntervalSince1970)
        let read = try knownState(seenSeq: entry?.seq ?? 0)
        // A vault without an audit head or an owner was refused by the unlock; one that lost
        // them since (another process, in between) is not compared or pinned but refused.
        guard let state = read else {
            throw .integrity("the vault has no audit head or no owner: nothing to compare with what was seen")
        }
        guard let entry else {
            // First use: the whole trail verifies before it is trusted (FORMAT.md §12.2).
            try verifyTrail(since: 1)
            // The same vault seen further along elsewhere: a copy or backup opened here, or an
            // older copy put at a new path (a link planted where the vault was). Said, not
            // refused: copies of one vault are legitimate.
            if let further = try known.entries(ofVault: vaultID.hexString, except: location).filter({ $0.seq > state.seq }).max(by: { $0.seq < $1.seq }) {
                KnownVaults.warnOnce("this vault was seen further along at \(further.location.sanitisedForDisplay(limit: 200)) (audit record "
                                     + "\(further.seq), here \(state.seq)); if this is not a copy or backup you made, it may be an older copy put here")
            }
            do {
                try known.store(.init(location: location, vaultID: vaultID.hexString, ownerSignKey: state.owner.hexString,
                                      seq: state.seq, mac: state.mac.hexString, pinnedAt: now, seenAt: now), onlyIfAbsent: true)
            } catch {
                // A home that cannot be written (a read-only container, another user's): the
                // command goes on, unprotected against a later rollback, and says so.
                KnownVaults.warnOnce("cannot remember this vault in \(known.path) (\(error.message)); a later rollback or replacement of it will not be noticed")
                return
            }
            Trace.debug("pinned the vault at \(location) in \(known.path) (first use)")
            // (Another process may have pinned it a moment before: its pin is the one kept.)
            let pinnedAt = (try? known.entry(for: location))??.pinnedAt ?? now
            adoptTrailGuard(TrailGuard(known: known, location: location, seen: (state.seq, state.mac), pinnedAt: pinnedAt))
            return
        }
        let shown = location.sanitisedForDisplay(limit: 200)
        guard entry.vaultID == vaultID.hexString else {
            throw .notAsRemembered("the vault at \(shown) is not the one pinned there on \(TrailGuard.date(entry.pinnedAt)) "
                                   + "(vault id \(entry.vaultID.prefix(16))…, now \(vaultID.hexString.prefix(16))…): it was replaced",
                                   hint: TrailGuard.repinHint)
        }
        guard entry.ownerSignKey == state.owner.hexString else {
            throw .notAsRemembered("the vault at \(shown) has another owner than the one pinned there on \(TrailGuard.date(entry.pinnedAt)) "
                                   + "(owner key \(entry.ownerSignKey.prefix(16))…, now \(state.owner.hexString.prefix(16))…): "
                                   + "another vault made with this vault's id", hint: TrailGuard.repinHint)
        }
        guard let seenMAC = [UInt8](hex: entry.mac) else {
            throw .integrity("\(known.path) holds a MAC that is not hex for \(shown)")
        }
        let guarding = TrailGuard(known: known, location: location, seen: (entry.seq, seenMAC), pinnedAt: entry.pinnedAt)
        do {
            try guarding.expectExtends(headSeq: state.seq, headMAC: state.mac, seen: (entry.seq, seenMAC)) { state.seenMAC }
        } catch {
            throw (error as? VaultError) ?? .integrity("the vault's audit trail could not be compared with what was seen")
        }
        // The record seen and every one after it verify under their epochs' keys: a newer
        // epoch's records relabelled as an older one (keys put back under the trail) fail.
        try verifyTrail(since: entry.seq)
        guarding.committed((state.seq, state.mac), now: now)
        adoptTrailGuard(guarding)
    }

    /// §12.2: every audit record from `seq` to the head verifies (MACs under their epochs'
    /// keys, the epochs in order, the head), with the current keys.
    private func verifyTrail(since seq: Int64) throws(VaultError) {
        let verification = try read { tx in
            try AuditChain.verify(db: tx.db, vaultID: vaultID, current: tx.keys.auditEpochKeys, from: max(1, seq))
        }
        if let failure = verification.firstFailure {
            throw .integrity("audit record \(failure.seq): \(failure.reason)")
        }
    }

    /// Pins the vault as it is now at its location (`vault verify --repin`, `--accept-rollback`
    /// after a sound verification, `vault init`), replacing what was remembered there.
    public func pinKnownState(_ known: KnownVaults) throws(VaultError) {
        let location = database.locationIdentity
        let now = Int64(self.now.timeIntervalSince1970)
        guard let state = try knownState(seenSeq: 0) else {
            throw .integrity("the vault has no audit head or no owner; vault refuses to work without them")
        }
        // A pin time of its own (later than the one replaced), which processes that checked
        // against the old pin see as a new pin and do not move forward (``KnownVaults/advance``).
        let pinnedAt = max(now, (try known.entry(for: location)?.pinnedAt ?? 0) + 1)
        try known.store(.init(location: location, vaultID: vaultID.hexString, ownerSignKey: state.owner.hexString,
                              seq: state.seq, mac: state.mac.hexString, pinnedAt: pinnedAt, seenAt: now))
        adoptTrailGuard(TrailGuard(known: known, location: location, seen: (state.seq, state.mac), pinnedAt: pinnedAt))
    }
}

extension UnlockedVault {
    /// Records a deliberate acceptance (`vault verify --accept-rollback` / `--repin`) in the
    /// audit trail; its sequence number.
    public func recordAcceptance(_ action: AuditAction, detail: String) throws(VaultError) -> Int64 {
        try write { tx in try tx.audit(tx.entry(action, detail: detail)).seq }
    }
}

extension UnlockedVault {
    /// Writes what this process saw last to the known-vaults file if a write was held
    /// back (``TrailGuard/writeInterval``): the agent, when it ends, and (`onlyIfDue`) every
    /// 200 ms while it runs.
    public func flushKnownState(onlyIfDue: Bool = false) {
        trailGuardForFlush?.flush(now: Int64(now.timeIntervalSince1970), onlyIfDue: onlyIfDue)
    }

    /// The location identity under which ``KnownVaults`` remembers this vault.
    public var knownLocation: String { database.locationIdentity }

    /// The owner's Ed25519 public key as the member table holds it.
    public func ownerSignKey() throws(VaultError) -> [UInt8] {
        guard let state = try knownState(seenSeq: 0) else { throw .integrity("the vault has no audit head or no owner") }
        return state.owner
    }
}
