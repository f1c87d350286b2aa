import Foundation
import GRDB

/// The MAC-chained audit trail (FORMAT.md §6).
public enum AuditChain {
    static let zeroMAC = [UInt8](repeating: 0, count: 32)

    /// The head and the newest record, in one query: what ``append(_:db:vaultID:keys:previous:genesis:signer:)``
    /// reads first (and a writer may send ahead).
    static let headQuery = StoreQuery("""
        SELECT h.*, (SELECT seq FROM audit_record ORDER BY seq DESC LIMIT 1) AS newest_seq,
            (SELECT mac FROM audit_record ORDER BY seq DESC LIMIT 1) AS newest_mac,
            (SELECT key_epoch FROM audit_record ORDER BY seq DESC LIMIT 1) AS newest_epoch,
            (SELECT max(key_epoch) FROM audit_record) AS highest_epoch
        FROM audit_head h WHERE h.id = 1
        """)

    /// Appends `entry` inside the caller's write transaction and moves the head.
    ///
    /// - `genesis`: the `init` record of a new vault (the trail must be empty).
    /// - `previous`: set for the first record of a new key epoch (`rekey`): the head is
    ///   checked under the previous epoch's key and the record is MAC'd under both.
    ///
    /// A writer refuses to append to a trail without a head, or whose head does not
    /// verify or does not name the newest record, and checks that exactly one row was
    /// written each time (an `INSERT` made to do nothing is an integrity failure).
    @discardableResult
    static func append(_ entry: AuditEntry, db: StoreDB, vaultID: [UInt8], keys: AuditEpochKeys,
                       previous: AuditEpochKeys? = nil, genesis: Bool = false, signer: AuditSigner?,
                       trail: TrailMark? = nil) throws -> AuditEntry {
        var entry = entry
        let previousMAC: [UInt8]
        let headRow = try db.rows(headQuery).first
        let head = try headRow.map { try AuditHeadRecord(row: $0) }
        if genesis {
            let count = try Int.fetchOne(db, sql: "SELECT count(*) FROM audit_record") ?? 0
            guard head == nil, count == 0 else {
                throw VaultError.integrity("a new vault's audit trail is not empty")
            }
            entry.seq = 1
            previousMAC = zeroMAC
        } else {
            let head = try checkedHead(head, vaultID: vaultID, keys: previous ?? keys)
            guard let headRow, let newestSeq = headRow["newest_seq"] as Int64?, let newestMAC = headRow["newest_mac"] as Data?,
                  newestSeq == head.seq, Sodium.constantTimeEqual([UInt8](newestMAC), [UInt8](head.lastMAC)) else {
                throw VaultError.integrity("the audit trail does not end at the record its head names; vault does not append to it")
            }
            // The newest record is of the keys' epoch: keys (and rows) put back to an older
            // epoch under a newer trail are refused (FORMAT.md §6.4).
            guard (headRow["newest_epoch"] as Int64? ?? 1) == head.keyEpoch, (headRow["highest_epoch"] as Int64? ?? 1) == head.keyEpoch else {
                throw VaultError.integrity("the newest audit record is of another key epoch than the vault's keys (keys put back to an older epoch?); vault does not append to it")
            }
            // The trail must extend the newest record this process saw (FORMAT.md §12); a
            // newest record another process wrote since is checked as an unlock checks it
            // (§4.4 step 10), so that a long-running process never appends under keys put
            // back to an older epoch.
            if let trail {
                try trail.guarding.check(headSeq: head.seq, headMAC: [UInt8](head.lastMAC), db: db)
                if head.seq != trail.guarding.newestSeen.seq {
                    try checkNewestRecord(db: db, vaultID: vaultID, keys: previous ?? keys, signedFrom: trail.signedFrom)
                }
            }
            entry.seq = head.seq + 1
            previousMAC = [UInt8](head.lastMAC)
        }
        let sealed = seal(entry, previousMAC: previousMAC, vaultID: vaultID, keys: keys, previous: previous, signer: signer)
        entry = sealed.entry
        let (row, mac) = (sealed.row, sealed.mac)
        // Both writes must change exactly one row.
        let recordFailure = VaultError.integrity("the audit record was not stored (something in the database suppressed the insert)")
        let headFailure = VaultError.integrity("the audit chain head was not stored (something in the database suppressed the write)")
        let headSQL = """
            INSERT INTO audit_head (id, seq, key_epoch, last_mac, mac) VALUES (1, ?, ?, ?, ?)
            ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, key_epoch = excluded.key_epoch,
                last_mac = excluded.last_mac, mac = excluded.mac
            """
        let headArguments: [(any DatabaseValueConvertible)?] = [entry.seq, keys.epoch, Data(mac), Data(sealed.headMAC)]
        try row.insert(db, orFail: recordFailure)
        try db.executeExpecting(sql: headSQL, arguments: headArguments, changes: 1, failure: headFailure)
        trail?.appended = (entry.seq, mac)
        return entry
    }

    /// `entry` (numbered: its `seq` set) as the row appended after the record whose MAC is
    /// `previousMAC`: its MAC (FORMAT.md §6.2) under `keys` (and under `previous` too, for
    /// the first record of a new key epoch), the signature of `signer` (§6.7), and the MAC
    /// of the head that names it (§6.3). The one place a record is sealed, for both ways
    /// one is appended (``append(_:db:vaultID:keys:previous:genesis:signer:trail:)`` and the
    /// team store's single statement, ``UnlockedVault/deliverUnchangedCacheHit(_:)``).
    static func seal(_ entry: AuditEntry, previousMAC: [UInt8], vaultID: [UInt8], keys: AuditEpochKeys,
                     previous: AuditEpochKeys? = nil, signer: AuditSigner?) -> (entry: AuditEntry, row: AuditRow, mac: [UInt8], headMAC: [UInt8]) {
        var entry = entry
        var row = AuditRow(entry)
        let input = Format.auditMACInput(row, previousMAC: previousMAC, vaultID: vaultID, epoch: keys.epoch)
        let mac = Sodium.blake2b(input, key: keys.macKey, length: 32)
        let previousKeyMAC = previous.map { Sodium.blake2b(input, key: $0.macKey, length: 32) }
        row.mac = Data(mac)
        row.keyEpoch = keys.epoch
        row.previousKeyMAC = previousKeyMAC.map { Data($0) }
        if let signer {
            // Format 3 (§6.7): the member who caused it signs the record's MAC.
            entry.member = signer.member
            row.member = signer.member
            row.signature = Data(signer.identity.sign(Format.auditSignatureInput(vaultID: vaultID, seq: entry.seq, member: signer.member, mac: mac)))
        }
        let headMAC = Format.auditHeadMAC(seq: entry.seq, epoch: keys.epoch, lastMAC: mac, vaultID: vaultID, key: keys.macKey)
        return (entry, row, mac, headMAC)
    }

    /// The head, which must exist and verify under `keys` (the epoch it names): an empty,
    /// headless or forged trail is an integrity failure. Checked before every append and
    /// before every exchange.
    static func checkedHead(_ head: AuditHeadRecord?, vaultID: [UInt8], keys: AuditEpochKeys) throws -> AuditHeadRecord {
        guard let head else {
            throw VaultError.integrity("the audit trail has no head (records were removed); vault refuses to work without its audit trail")
        }
        let expected = Format.auditHeadMAC(seq: head.seq, epoch: head.keyEpoch, lastMAC: [UInt8](head.lastMAC), vaultID: vaultID, key: keys.macKey)
        guard head.keyEpoch == keys.epoch, Sodium.constantTimeEqual(expected, [UInt8](head.mac)) else {
            throw VaultError.integrity("the audit chain head does not verify")
        }
        return head
    }

    /// The newest record checked as far as one unlock can afford (FORMAT.md §4.4 step 10):
    /// it is the record the head names, of the header's key epoch, its MAC verifies under
    /// that epoch's audit key after the record before it, and (from `signedFrom` on) it
    /// carries the signature of a member whose row the owner signed. So the keys, key slots
    /// and rows cannot be put back to an older key epoch (by a removed member who kept a
    /// copy) under the current trail: the newest record was written with the newest keys.
    static func checkNewestRecord(db: StoreDB, vaultID: [UInt8], keys: AuditEpochKeys, signedFrom: Int64) throws {
        /// A failure here is rare and means tampering: the whole chain is walked to name the
        /// first bad record (§6.5), which is more use than "the newest one".
        func refuse(_ reason: String) throws -> Never {
            if let first = try? verify(db: db, vaultID: vaultID, current: keys).firstFailure {
                throw VaultError.integrity("audit record \(first.seq): \(first.reason)")
            }
            throw VaultError.integrity(reason)
        }
        let head: AuditHeadRecord
        do {
            head = try checkedHead(try AuditHeadRecord.fetchOne(db, key: 1), vaultID: vaultID, keys: keys)
        } catch VaultError.integrity(let reason) {
            try refuse(reason)
        }
        let stale = "the vault's keys are of key epoch \(keys.epoch) but its newest audit record, record \(head.seq),"
        guard let row = try AuditRow.fetchOne(db, sql: "SELECT * FROM audit_record WHERE seq = ?", arguments: [head.seq]) else {
            try refuse("audit record \(head.seq), which the audit head names, is missing")
        }
        // The highest epoch anywhere in the trail, not only the newest record's: a record
        // appended under an older epoch's keys after newer ones is the same attack.
        let highest = try Int64.fetchOne(db, sql: "SELECT max(key_epoch) FROM audit_record") ?? 1
        guard (row.keyEpoch ?? 1) == keys.epoch, highest == keys.epoch else {
            throw VaultError.integrity("\(stale) is of epoch \(row.keyEpoch ?? 1) and the trail reaches epoch \(highest): the keys and key slots were put back to an older epoch")
        }
        guard signedFrom <= head.seq else {
            throw VaultError.integrity("the header says records are signed from \(signedFrom) on, after the newest record (\(head.seq))")
        }
        var previousMAC = zeroMAC
        if head.seq > 1 {
            guard let mac = try Data.fetchOne(db, sql: "SELECT mac FROM audit_record WHERE seq = ?", arguments: [head.seq - 1]) else {
                try refuse("audit record \(head.seq - 1) is missing")
            }
            previousMAC = [UInt8](mac)
        }
        let mac = Format.auditMAC(row, previousMAC: previousMAC, vaultID: vaultID, epoch: keys.epoch, key: keys.macKey)
        guard Sodium.constantTimeEqual(mac, [UInt8](row.mac)), Sodium.constantTimeEqual(mac, [UInt8](head.lastMAC)) else {
            try refuse("\(stale) does not verify under them (the keys were put back to an older epoch, or the record was edited)")
        }
        guard let name = row.member, let signature = row.signature, let member = try MemberRecord.fetchOne(db, key: name),
              let owner = try MemberRecord.fetchOne(db, key: Labels.ownerMember), owner.isOwner else {
            throw VaultError.integrity("the newest audit record, record \(head.seq), is not signed by a member")
        }
        try MemberCrypto.checkSignature(of: member, owner: owner, vaultID: vaultID)
        guard Sodium.verify(signature: [UInt8](signature), message: Format.auditSignatureInput(vaultID: vaultID, seq: head.seq, member: name, mac: mac),
                            publicKey: [UInt8](member.signPublicKey)) else {
            throw VaultError.integrity("the newest audit record, record \(head.seq), is not signed by its member '\(name.sanitisedForDisplay(limit: 64))'")
        }
    }

    /// The audit keys of every epoch, newest first unwrapped from the current one
    /// (FORMAT.md §6.6). Throws an integrity failure if one is missing or does not open.
    static func epochKeys(db: StoreDB, vaultID: [UInt8], current: AuditEpochKeys) throws -> [Int64: AuditEpochKeys] {
        var result: [Int64: AuditEpochKeys] = [current.epoch: current]
        var newer = current
        let rows = try RetiredAuditKeyRecord.fetchAll(db)
        guard rows.count == Int(current.epoch - 1), Set(rows.map(\.keyEpoch)) == Set((1..<max(1, current.epoch)).map { $0 }) else {
            throw VaultError.integrity("the retired audit keys are not exactly epochs 1 to \(current.epoch - 1)")
        }
        let byEpoch = Dictionary(uniqueKeysWithValues: rows.map { ($0.keyEpoch, $0) })
        var epoch = current.epoch - 1
        while epoch >= 1 {
            let row = byEpoch[epoch]!
            let opened: SecureBytes
            do {
                opened = try Sodium.open(key: newer.sealingKey, nonce: [UInt8](row.nonce), ciphertext: [UInt8](row.sealed),
                                         additionalData: Format.retiredAuditKeyAD(vaultID: vaultID, epoch: epoch))
            } catch {
                throw VaultError.integrity("the retired audit key of epoch \(epoch) failed authentication")
            }
            let keys = try AuditEpochKeys(epoch: epoch, auditKey: opened)
            result[epoch] = keys
            newer = keys
            epoch -= 1
        }
        return result
    }

    /// Seals the retiring epoch's audit key under the next epoch's keys (`rekey`).
    static func retire(_ retiring: VaultKeys, under next: AuditEpochKeys, db: StoreDB, vaultID: [UInt8]) throws {
        let nonce = Sodium.randomBytes(Sodium.aeadNonceBytes)
        let sealed = try Sodium.seal(key: next.sealingKey, nonce: nonce, plaintext: retiring.auditKey,
                                     additionalData: Format.retiredAuditKeyAD(vaultID: vaultID, epoch: retiring.epoch))
        try RetiredAuditKeyRecord(keyEpoch: retiring.epoch, nonce: Data(nonce), sealed: Data(sealed)).insert(db)
        guard db.changesCount == 1 else { throw VaultError.integrity("the retired audit key was not stored") }
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

    /// Format 3: the first record that must be signed, and the (MAC-checked) members.
    struct SignatureRules {
        var signedFrom: Int64
        var members: [MemberRecord]
        /// Format 4: a `member-add` signed by a member other than the owner must precede the
        /// `format 3 to 4` upgrade record (false: checking a format-3 trail, where members added members).
        var ownerAddsMembers = true
    }

    /// The signature rules of §6.7 for one record whose MAC is `mac`; nil when they hold.
    static func signatureProblem(_ row: AuditRow, mac: [UInt8], vaultID: [UInt8], rules: SignatureRules,
                                 byName: [String: MemberRecord]) -> String? {
        let seq = row.seq
        if seq < rules.signedFrom {
            return row.member == nil && row.signature == nil ? nil
                : "record \(seq) carries a signer but precedes the vault's first signed record (\(rules.signedFrom))"
        }
        guard let name = row.member, let signature = row.signature else {
            return "record \(seq) is not signed (every record from \(rules.signedFrom) on names its member and carries a signature)"
        }
        let display = name.sanitisedForDisplay(limit: 64)
        guard let member = byName[name] else { return "record \(seq) names signer '\(display)', who is not a member" }
        guard member.addedSeq <= seq, member.removedSeq.map({ seq <= $0 }) ?? true else {
            return "record \(seq) is signed by '\(display)' outside the member's membership (records \(member.addedSeq) to \(member.removedSeq.map(String.init) ?? "now"))"
        }
        if seq == rules.signedFrom, member.kind != "passphrase" || AuditAction(rawValue: row.action)?.mayStartSignatures != true {
            return "record \(seq), the first signed record, is not an init or upgrade record signed by the owner"
        }
        if member.kind != "passphrase", let action = AuditAction(rawValue: row.action), action.ownerOnly {
            return "record \(seq) (\(action.rawValue)) is signed by '\(display)', but only the owner can \(action.rawValue)"
        }
        let input = Format.auditSignatureInput(vaultID: vaultID, seq: seq, member: name, mac: mac)
        guard Sodium.verify(signature: [UInt8](signature), message: input, publicKey: [UInt8](member.signPublicKey)) else {
            return "record \(seq)'s signature does not verify under member '\(display)' (forged, re-signed by another member, or its signer edited)"
        }
        return nil
    }

    /// The record each member row's `added_seq` and `removed_seq` must point at (FORMAT.md
    /// §6.7, rule 5): the owner's addition is the first signed record; a recipient's, a
    /// `member-add` record whose detail is `member=NAME`; a removal, a `member-remove` record
    /// whose detail starts with `member=NAME`.
    struct MembershipRecord {
        let member: String
        let removal: Bool
        let owner: Bool
    }

    static func membershipProblem(_ row: AuditRow, expected: MembershipRecord, signedFrom: Int64) -> String? {
        let display = expected.member.sanitisedForDisplay(limit: 64)
        if expected.owner, !expected.removal {
            return row.seq == signedFrom ? nil
                : "the owner's member row says it was added by record \(row.seq), which is not the vault's first signed record"
        }
        let words = (row.detail ?? "").split(separator: " ", omittingEmptySubsequences: false)
        let names = words.first == Substring("member=\(expected.member)") && (!expected.removal ? words.count == 1 : true)
        let action = expected.removal ? AuditAction.memberRemove : AuditAction.memberAdd
        guard row.action == action.rawValue, names else {
            return "member '\(display)' says it was \(expected.removal ? "removed" : "added") by record \(row.seq), "
                + "which is not a \(action.rawValue) record for it (a member row edited or planted)"
        }
        return nil
    }

    /// Walks the whole chain in order (FORMAT.md §6.5, and §6.7 when `signatures` is given);
    /// from record `from` on (its own MAC included, after the stored MAC and epoch of the
    /// record before it) when `from` > 1: what a client checks at unlock since the record it
    /// saw last (§12.2).
    static func verify(db: StoreDB, vaultID: [UInt8], current: AuditEpochKeys, signatures: SignatureRules? = nil,
                       from: Int64 = 1) throws -> Verification {
        let byName = Dictionary((signatures?.members ?? []).map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var membership: [Int64: [MembershipRecord]] = [:]
        for member in signatures?.members ?? [] {
            let owner = member.kind == "passphrase"
            membership[member.addedSeq, default: []].append(MembershipRecord(member: member.name, removal: false, owner: owner))
            if let removed = member.removedSeq {
                membership[removed, default: []].append(MembershipRecord(member: member.name, removal: true, owner: owner))
            }
        }
        let keys = try epochKeys(db: db, vaultID: vaultID, current: current)
        // §6.7 rule 7: `member-add` records signed by a member other than the owner are
        // format 3's, so each must be followed by the `format 3 to 4` upgrade record.
        var addedByMembers: [(seq: Int64, member: String)] = []
        var previous = zeroMAC
        var expectedSeq: Int64 = 1
        var epoch: Int64 = 1
        var checked = 0
        func failure(_ seq: Int64, _ reason: String) -> Verification {
            Verification(recordsChecked: checked, firstFailure: (seq, reason))
        }
        if from > 1 {
            guard let before = try Row.fetchOne(db, sql: "SELECT mac, key_epoch FROM audit_record WHERE seq = ?", arguments: [from - 1]),
                  let mac = before["mac"] as Data? else {
                return failure(from - 1, "record \(from - 1) is missing")
            }
            previous = [UInt8](mac)
            epoch = before["key_epoch"] as Int64? ?? 1
            expectedSeq = from
        }
        // In pages of `verifyPage` records by sequence number (one snapshot: the caller's
        // read), so a trail of millions is never held in memory at once.
        var page: [AuditRow] = []
        var pageIndex = 0
        var lastFetched: Int64 = expectedSeq - 1
        func next() throws -> AuditRow? {
            if pageIndex == page.count {
                page = try AuditRow.fetchAll(db, sql: "SELECT * FROM audit_record WHERE seq > ? ORDER BY seq LIMIT \(verifyPage)",
                                             arguments: [lastFetched])
                pageIndex = 0
                guard let last = page.last else { return nil }
                lastFetched = last.seq
            }
            defer { pageIndex += 1 }
            return page[pageIndex]
        }
        while let row = try next() {
            if row.seq != expectedSeq {
                return failure(expectedSeq, row.seq > expectedSeq
                    ? "record \(expectedSeq) is missing (the chain jumps to record \(row.seq))"
                    : "record \(row.seq) is out of sequence")
            }
            if row.seq == 1, row.action != AuditAction.initialise.rawValue {
                return failure(1, "record 1 is not the vault's init record (the trail was replaced)")
            }
            let recordEpoch = row.keyEpoch ?? 1
            if recordEpoch == epoch + 1, row.seq > 1 {
                guard AuditAction(rawValue: row.action)?.startsKeyEpoch == true, let previousKeyMAC = row.previousKeyMAC,
                      let previousKeys = keys[epoch] else {
                    return failure(row.seq, "record \(row.seq) starts key epoch \(recordEpoch) but is not a rekey record")
                }
                let input = Format.auditMACInput(row, previousMAC: previous, vaultID: vaultID, epoch: recordEpoch)
                guard Sodium.constantTimeEqual(Sodium.blake2b(input, key: previousKeys.macKey, length: 32), [UInt8](previousKeyMAC)) else {
                    return failure(row.seq, "record \(row.seq) is not MAC'd under the previous key epoch (the epochs do not link)")
                }
                epoch = recordEpoch
            } else if recordEpoch != epoch || row.previousKeyMAC != nil {
                return failure(row.seq, "record \(row.seq) names key epoch \(recordEpoch) out of order")
            }
            guard let epochKeys = keys[epoch] else {
                return failure(row.seq, "record \(row.seq) names key epoch \(epoch), which this vault does not have")
            }
            let computed = Format.auditMAC(row, previousMAC: previous, vaultID: vaultID, epoch: epoch, key: epochKeys.macKey)
            guard Sodium.constantTimeEqual(computed, [UInt8](row.mac)) else {
                return failure(row.seq, "record \(row.seq) does not match its MAC (edited, reordered, or the record before it was removed)")
            }
            if let signatures, let problem = signatureProblem(row, mac: computed, vaultID: vaultID, rules: signatures, byName: byName) {
                return failure(row.seq, problem)
            }
            if signatures?.ownerAddsMembers == true, let action = AuditAction(rawValue: row.action) {
                if action == .memberAdd, let name = row.member, byName[name]?.isOwner == false {
                    addedByMembers.append((row.seq, name))
                } else if action == .upgrade, row.detail?.hasPrefix(FormatUpgrade.format4Detail) == true {
                    addedByMembers.removeAll()
                }
            }
            if let signatures, let expected = membership.removeValue(forKey: row.seq) {
                for one in expected {
                    if let problem = membershipProblem(row, expected: one, signedFrom: signatures.signedFrom) { return failure(row.seq, problem) }
                }
            }
            previous = computed
            expectedSeq += 1
            checked += 1
        }
        let lastSeq = expectedSeq - 1
        guard checked > 0 else {
            return failure(1, "the audit trail is empty (every record was removed); it must start with the init record")
        }
        if let first = addedByMembers.first {
            return failure(first.seq, "record \(first.seq) (member-add) is signed by '\(first.member.sanitisedForDisplay(limit: 64))', but since format 4 only the owner adds members")
        }
        if let (seq, expected) = membership.min(by: { $0.key < $1.key }), let one = expected.first {
            return failure(seq, "member '\(one.member.sanitisedForDisplay(limit: 64))' says it was \(one.removal ? "removed" : "added") by record \(seq), which does not exist")
        }
        guard let head = try AuditHeadRecord.fetchOne(db, key: 1) else {
            return failure(lastSeq, "the audit chain head is missing")
        }
        guard head.keyEpoch == current.epoch,
              Sodium.constantTimeEqual(Format.auditHeadMAC(seq: head.seq, epoch: head.keyEpoch, lastMAC: [UInt8](head.lastMAC), vaultID: vaultID, key: current.macKey),
                                       [UInt8](head.mac)) else {
            return failure(head.seq, "the audit chain head does not match its MAC")
        }
        guard epoch == current.epoch else {
            return failure(lastSeq, "the trail ends in key epoch \(epoch) but the vault is in epoch \(current.epoch) (the rekey record was removed)")
        }
        guard head.seq == lastSeq, Sodium.constantTimeEqual([UInt8](head.lastMAC), previous) else {
            if head.seq > lastSeq {
                return failure(lastSeq + 1, "record \(lastSeq + 1) is missing (the head says the trail ends at record \(head.seq))")
            }
            return failure(head.seq + 1, "record \(head.seq + 1) was not written by this vault (after the chain head)")
        }
        return Verification(recordsChecked: checked, firstFailure: nil)
    }

    /// Checks a format-1 chain (FORMAT.md §9) before the upgrade re-MACs it; throws on
    /// the first problem, so a tampered format-1 trail is never blessed by the upgrade.
    static func verifyV1(db: StoreDB, vaultID: [UInt8], key: SecureBytes) throws -> [AuditRow] {
        var previous = zeroMAC
        var entries: [AuditRow] = []
        for row in try Row.fetchAll(db, sql: "SELECT * FROM audit_record ORDER BY seq") {
            let record = try AuditRow(row: row)
            let expectedSeq = Int64(entries.count + 1)
            guard record.seq == expectedSeq else {
                throw VaultError.integrity("format-1 audit trail: record \(expectedSeq) is missing; the vault was not upgraded")
            }
            guard expectedSeq != 1 || record.action == AuditAction.initialise.rawValue else {
                throw VaultError.integrity("format-1 audit trail: record 1 is not the init record; the vault was not upgraded")
            }
            let computed = Format.V1.auditMAC(record, previousMAC: previous, vaultID: vaultID, key: key)
            guard Sodium.constantTimeEqual(computed, [UInt8](record.mac)) else {
                throw VaultError.integrity("format-1 audit trail: record \(record.seq) does not match its MAC; the vault was not upgraded")
            }
            previous = computed
            entries.append(record)
        }
        guard !entries.isEmpty, let head = try Row.fetchOne(db, sql: "SELECT seq, last_mac, mac FROM audit_head WHERE id = 1") else {
            throw VaultError.integrity("format-1 audit trail: empty or without a head; the vault was not upgraded")
        }
        let headSeq: Int64 = head["seq"], lastMAC = [UInt8](head["last_mac"] as Data), headMAC = [UInt8](head["mac"] as Data)
        guard headSeq == Int64(entries.count), Sodium.constantTimeEqual(lastMAC, previous),
              Sodium.constantTimeEqual(Format.V1.auditHeadMAC(seq: headSeq, lastMAC: lastMAC, vaultID: vaultID, key: key), headMAC) else {
            throw VaultError.integrity("format-1 audit trail: the head does not match the last record; the vault was not upgraded")
        }
        return entries
    }

    /// Re-MACs the verified format-1 records as format-2 records of key epoch 1, in the
    /// upgrade transaction (FORMAT.md §9).
    static func remacAsFormat2(_ entries: [AuditRow], db: StoreDB, vaultID: [UInt8], keys: AuditEpochKeys) throws {
        var previous = zeroMAC
        for entry in entries {
            let mac = Format.auditMAC(entry, previousMAC: previous, vaultID: vaultID, epoch: keys.epoch, key: keys.macKey)
            try db.execute(sql: "UPDATE audit_record SET mac = ?, key_epoch = ?, previous_key_mac = NULL WHERE seq = ?",
                           arguments: [Data(mac), keys.epoch, entry.seq])
            guard db.changesCount == 1 else { throw VaultError.integrity("an audit record could not be re-MAC'd") }
            previous = mac
        }
        try db.execute(sql: "INSERT INTO audit_head (id, seq, key_epoch, last_mac, mac) VALUES (1, ?, ?, ?, ?)",
                       arguments: [Int64(entries.count), keys.epoch, Data(previous),
                                   Data(Format.auditHeadMAC(seq: Int64(entries.count), epoch: keys.epoch, lastMAC: previous, vaultID: vaultID, key: keys.macKey))])
    }

    /// How many records `verify` reads per query.
    static let verifyPage = 10_000

    /// The WHERE clause and arguments for records matching `query` (no key needed).
    private static func filter(for query: AuditQuery) -> (sql: String, arguments: [(any DatabaseValueConvertible)?]) {
        var conditions: [String] = []
        var arguments: [(any DatabaseValueConvertible)?] = []
        func add(_ condition: String, _ values: (any DatabaseValueConvertible)?...) {
            conditions.append(condition)
            arguments += values
        }
        if let profile = query.profile { add("profile = ?", profile) }
        if let environment = query.environment { add("environment = ?", environment) }
        if let since = query.since { add("at >= ?", since) }
        if let until = query.until { add("at <= ?", until) }
        if let after = query.afterSeq { add("seq > ?", after) }
        if let member = query.member { add("member = ?", member) }
        switch query.outcome {
        case nil: break
        case .exactly(let outcome)?: add("outcome = ?", outcome.rawValue)
        case let filter?:
            // The successful outcomes' names as placeholders, `IN` or `NOT IN` by the class.
            let successes = AuditOutcome.allCases.filter(\.isSuccess).map(\.rawValue)
            var placeholders = ""
            for index in successes.indices { placeholders += index == 0 ? "?" : ", ?" }
            conditions.append("outcome \(filter == .succeeded ? "IN" : "NOT IN") (\(placeholders))")
            arguments += successes
        }
        var sql = ""
        for (index, condition) in conditions.enumerated() { sql += (index == 0 ? " WHERE " : " AND ") + condition }
        sql += " ORDER BY seq DESC"
        if let limit = query.limit { sql += " LIMIT \(max(0, limit))" }
        return (sql, arguments)
    }

    /// Records matching `query`, newest first. Needs no key.
    static func records(_ db: StoreDB, _ query: AuditQuery) throws -> [AuditRow] {
        let (filter, arguments) = filter(for: query)
        return try AuditRow.fetchAll(db, sql: "SELECT * FROM audit_record" + filter, arguments: arguments)
    }

    /// Records matching `query` as one-line JSON objects (every field but the MAC and the
    /// signature), newest first, as the store writes them (``StoreConnection/auditListing(filter:values:withMember:)``).
    static func jsonRecords(_ db: StoreDB, _ query: AuditQuery, withMember: Bool) throws -> [(seq: Int64, json: String)] {
        let (filter, arguments) = filter(for: query)
        return try db.auditListing(filter: filter, values: StoreSQL.values(arguments), withMember: withMember)
    }
}
