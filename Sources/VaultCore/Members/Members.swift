import Foundation
import GRDB

/// §3.9 A member row: who can open the vault and whose key signs which records.
struct MemberRecord: Codable, FetchableRecord, PersistableRecord, StoreRecord, Sendable {
    static let databaseTableName = "member"
    static let keyColumns = ["name"]
    var name: String
    var uid: Data
    /// `passphrase` (the owner: the identity wrapped in the header) or `recipient`.
    var kind: String
    var boxPublicKey: Data
    var signPublicKey: Data
    var addedSeq: Int64
    var removedSeq: Int64?
    var createdAt: String
    var mac: Data
    /// Format 4: the owner's signature over the row (§10.6); nil only in a format-3 vault.
    var ownerSignature: Data?

    enum CodingKeys: String, CodingKey {
        case name, uid, kind, boxPublicKey = "box_public_key", signPublicKey = "sign_public_key"
        case addedSeq = "added_seq", removedSeq = "removed_seq", createdAt = "created_at", mac, ownerSignature = "owner_signature"
    }

    /// The row's columns; `owner_signature` only when set, so that the format-3 step of an
    /// upgrade (whose table has no such column yet) can write the row too.
    func encode(to container: inout PersistenceContainer) {
        container["name"] = name
        container["uid"] = uid
        container["kind"] = kind
        container["box_public_key"] = boxPublicKey
        container["sign_public_key"] = signPublicKey
        container["added_seq"] = addedSeq
        container["removed_seq"] = removedSeq
        container["created_at"] = createdAt
        container["mac"] = mac
        if let ownerSignature { container["owner_signature"] = ownerSignature }
    }

    var recipient: Recipient { Recipient(boxPublicKey: [UInt8](boxPublicKey), signPublicKey: [UInt8](signPublicKey)) }

    var isOwner: Bool { kind == "passphrase" }
}

/// §3.10 A key slot: the vault keys sealed to one current member.
struct KeySlotRecord: Codable, FetchableRecord, PersistableRecord, StoreRecord, Sendable {
    static let databaseTableName = "key_slot"
    static let keyColumns = ["member"]
    var member: String
    var keyEpoch: Int64
    var sealed: Data
    var mac: Data
    /// The owner's slot only: the owner's endorsement (§10.3).
    var endorsement: Data?
    /// Format 4: the owner's signature over the slot (§10.6); nil only in a format-3 vault.
    var ownerSignature: Data?

    enum CodingKeys: String, CodingKey {
        case member, keyEpoch = "key_epoch", sealed, mac, endorsement, ownerSignature = "owner_signature"
    }

    /// As ``MemberRecord/encode(to:)``: `owner_signature` only when set.
    func encode(to container: inout PersistenceContainer) {
        container["member"] = member
        container["key_epoch"] = keyEpoch
        container["sealed"] = sealed
        container["mac"] = mac
        container["endorsement"] = endorsement
        if let ownerSignature { container["owner_signature"] = ownerSignature }
    }
}

/// A member as `vault member list` shows it.
public struct Member: Sendable, Equatable, Codable {
    public var name: String
    public var kind: String
    public var recipient: String
    public var addedSeq: Int64
    public var removedSeq: Int64?
    public var createdAt: String
    public var hasSlot: Bool

    enum CodingKeys: String, CodingKey {
        case name, kind, recipient, addedSeq = "added_seq", removedSeq = "removed_seq", createdAt = "created_at", hasSlot = "has_slot"
    }
}

/// The who-signs-what of the audit trail and the key slots (FORMAT.md §10).
enum MemberCrypto {
    /// §10.4 The member row MAC, under the metadata key of the current epoch.
    static func mac(_ r: MemberRecord, vaultID: [UInt8], key: SecureBytes) -> [UInt8] {
        Format.memberMAC(vaultID: vaultID, name: r.name, uid: [UInt8](r.uid), kind: r.kind, boxPublicKey: [UInt8](r.boxPublicKey),
                         signPublicKey: [UInt8](r.signPublicKey), addedSeq: r.addedSeq, removedSeq: r.removedSeq, createdAt: r.createdAt, key: key)
    }

    /// §10.3 A key slot's binding for `member` and `keys`.
    static func slotBinding(vaultID: [UInt8], epoch: Int64, member: MemberRecord, keys: VaultKeys) -> [UInt8] {
        Format.slotBinding(vaultID: vaultID, epoch: epoch, memberName: member.name, memberUID: [UInt8](member.uid),
                           boxPublicKey: [UInt8](member.boxPublicKey), dataKey: keys.dataKey, auditKey: keys.auditKey)
    }

    /// §10.3 `crypto_box_seal(data_key ‖ audit_key ‖ binding, member's box key)`, endorsed
    /// (the owner's own slot) and signed (§10.6) by `owner`, the owner's identity: only the
    /// owner writes key slots.
    static func sealSlot(keys: VaultKeys, for member: MemberRecord, vaultID: [UInt8], owner: MemberIdentity) throws -> KeySlotRecord {
        let binding = slotBinding(vaultID: vaultID, epoch: keys.epoch, member: member, keys: keys)
        let plaintext = SecureBytes.concatenating([keys.dataKey, keys.auditKey, SecureBytes(copying: binding)])
        let sealed = try Sodium.sealBox(plaintext, to: [UInt8](member.boxPublicKey))
        var endorsement: Data?
        if member.isOwner {
            // The owner's key changed meanwhile (a `passwd` by another process): nothing is written.
            guard Sodium.constantTimeEqual(owner.recipient.boxPublicKey, [UInt8](member.boxPublicKey)) else { throw VaultError.keysChanged }
            endorsement = Data(try ownerEndorsement(owner: owner, epoch: keys.epoch, sealed: sealed, vaultID: vaultID))
        }
        return KeySlotRecord(member: member.name, keyEpoch: keys.epoch, sealed: Data(sealed),
                             mac: Data(slotMAC(member: member, epoch: keys.epoch, sealed: sealed, vaultID: vaultID, key: keys.metadataKey)),
                             endorsement: endorsement,
                             ownerSignature: Data(owner.sign(slotSignatureInput(member: member, epoch: keys.epoch, sealed: sealed, vaultID: vaultID))))
    }

    /// §10.6 What the owner signs for `member`'s row.
    static func signatureInput(_ r: MemberRecord, vaultID: [UInt8]) -> [UInt8] {
        Format.memberSignatureInput(vaultID: vaultID, name: r.name, uid: [UInt8](r.uid), kind: r.kind, boxPublicKey: [UInt8](r.boxPublicKey),
                                    signPublicKey: [UInt8](r.signPublicKey), addedSeq: r.addedSeq, removedSeq: r.removedSeq, createdAt: r.createdAt)
    }

    /// §10.6 What the owner signs for `member`'s slot holding `sealed`.
    static func slotSignatureInput(member: MemberRecord, epoch: Int64, sealed: [UInt8], vaultID: [UInt8]) -> [UInt8] {
        Format.slotSignatureInput(vaultID: vaultID, memberName: member.name, memberUID: [UInt8](member.uid),
                                  boxPublicKey: [UInt8](member.boxPublicKey), epoch: epoch, sealed: sealed)
    }

    /// `member` with its MAC under `key` and the owner's signature (§10.4, §10.6): every
    /// write of a member row goes through here, by the owner.
    static func authenticated(_ member: MemberRecord, vaultID: [UInt8], key: SecureBytes, owner: MemberIdentity) -> MemberRecord {
        var r = member
        r.mac = Data(mac(r, vaultID: vaultID, key: key))
        r.ownerSignature = Data(owner.sign(signatureInput(r, vaultID: vaultID)))
        return r
    }

    /// §10.4 Every row's MAC under `key` (and a known kind, a 16-byte uid): a row a
    /// member changed without the keys, or moved from another vault or epoch, fails.
    static func checkMACs(_ members: [MemberRecord], vaultID: [UInt8], key: SecureBytes) throws {
        for member in members {
            guard Sodium.constantTimeEqual(mac(member, vaultID: vaultID, key: key), [UInt8](member.mac)),
                  member.uid.count == 16, ["passphrase", "recipient"].contains(member.kind) else {
                throw VaultError.integrity("member '\(member.name.sanitisedForDisplay(limit: 64))' was edited (its MAC does not verify)")
            }
        }
    }

    /// §10.6 The owner's row among `members`, whose signing key is the root every other
    /// signature is checked against (itself pinned by each client, FORMAT.md §12).
    static func ownerRow(_ members: [MemberRecord]) throws -> MemberRecord {
        let owners = members.filter(\.isOwner)
        guard owners.count == 1, owners[0].name == Labels.ownerMember else {
            throw VaultError.integrity("the member table does not have exactly one passphrase member, 'owner'")
        }
        return owners[0]
    }

    /// §10.6 `member`'s row carries the owner's signature.
    static func checkSignature(of member: MemberRecord, owner: MemberRecord, vaultID: [UInt8]) throws {
        guard let signature = member.ownerSignature,
              Sodium.verify(signature: [UInt8](signature), message: signatureInput(member, vaultID: vaultID), publicKey: [UInt8](owner.signPublicKey)) else {
            throw VaultError.integrity("member '\(member.name.sanitisedForDisplay(limit: 64))' is not signed by the owner (its keys or dates were changed by someone else)")
        }
    }

    /// §10.6 `slot` (of `member`) carries the owner's signature.
    static func checkSignature(of slot: KeySlotRecord, member: MemberRecord, owner: MemberRecord, vaultID: [UInt8]) throws {
        guard let signature = slot.ownerSignature,
              Sodium.verify(signature: [UInt8](signature),
                            message: slotSignatureInput(member: member, epoch: slot.keyEpoch, sealed: [UInt8](slot.sealed), vaultID: vaultID),
                            publicKey: [UInt8](owner.signPublicKey)) else {
            throw VaultError.integrity("the key slot of member '\(member.name.sanitisedForDisplay(limit: 64))' is not signed by the owner (keys sealed by someone else?)")
        }
    }

    /// §10.3 The owner's endorsement of its own slot, keyed by a subkey of the owner's
    /// X25519 secret key (which only the passphrase unwraps): a slot sealed to the owner
    /// by anyone else (a file writer with keys of their own) is refused at unlock.
    static func ownerEndorsement(owner: MemberIdentity, epoch: Int64, sealed: [UInt8], vaultID: [UInt8]) throws -> [UInt8] {
        let key = try Sodium.deriveSubkey(from: owner.boxSecretKey, id: 1, context: Labels.ownerContext)
        return Format.ownerEndorsement(vaultID: vaultID, epoch: epoch, sealed: sealed, key: key)
    }

    /// §10.3 The slot MAC of `member`'s slot.
    static func slotMAC(member: MemberRecord, epoch: Int64, sealed: [UInt8], vaultID: [UInt8], key: SecureBytes) -> [UInt8] {
        Format.slotMAC(vaultID: vaultID, memberName: member.name, memberUID: [UInt8](member.uid), epoch: epoch, sealed: sealed, key: key)
    }

    /// Every slot belongs to a current member, is for `keys`' epoch and carries its MAC;
    /// every current member has its slot (a swapped, moved or extra slot is exit 7).
    /// With `signed` (format 4), every slot also carries the owner's signature (§10.6).
    static func checkSlots(_ db: StoreDB, members: [MemberRecord], keys: VaultKeys, vaultID: [UInt8], signed: Bool = true) throws {
        let owner = try ownerRow(members)
        let current = Dictionary(members.filter { $0.removedSeq == nil }.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let slots = try KeySlotRecord.fetchAll(db)
        for slot in slots {
            let display = slot.member.sanitisedForDisplay(limit: 64)
            guard let member = current[slot.member] else { throw VaultError.integrity("a key slot belongs to '\(display)', who is not a current member") }
            guard (slot.endorsement != nil) == member.isOwner else {
                throw VaultError.integrity("the key slot of member '\(display)' has an endorsement where it must not, or lacks one")
            }
            guard slot.keyEpoch == keys.epoch,
                  Sodium.constantTimeEqual(slotMAC(member: member, epoch: slot.keyEpoch, sealed: [UInt8](slot.sealed), vaultID: vaultID,
                                                   key: keys.metadataKey), [UInt8](slot.mac)) else {
                throw VaultError.integrity("the key slot of member '\(display)' does not verify (swapped, moved or from another epoch)")
            }
            if signed { try checkSignature(of: slot, member: member, owner: owner, vaultID: vaultID) }
        }
        guard Set(slots.map(\.member)) == Set(current.keys) else {
            throw VaultError.integrity("not every current member has a key slot")
        }
    }

    /// Opens the slot sealed to `identity`, trying every slot (as age tries every stanza)
    /// so that "no slot for this identity" and "a slot that does not open" take the same
    /// time. Returns the member and its keys; nil when no slot opens.
    /// With `signed` (format 4), the member's row and slot must carry the owner's
    /// signatures (§10.6), under the owner row's key: a slot sealed by anyone else (a
    /// database administrator with keys of their own) is refused before anything is read
    /// or written with its keys.
    static func openSlot(identity: MemberIdentity, db: StoreDB, vaultID: [UInt8], epoch: Int64, signed: Bool = true) throws -> (member: MemberRecord, keys: VaultKeys)? {
        let slots = try KeySlotRecord.fetchAll(db)
        var found: (KeySlotRecord, SecureBytes)?
        var opening = 0
        for slot in slots {
            if let opened = identity.openBox([UInt8](slot.sealed)) {
                opening += 1
                if found == nil { found = (slot, opened) }
            }
        }
        guard let (slot, plaintext) = found else { return nil }
        guard opening == 1 else { throw VaultError.integrity("\(opening) key slots open for this identity (a slot was copied to another member's row)") }
        guard plaintext.count == 96, slot.keyEpoch == epoch else {
            throw VaultError.integrity("the key slot of member '\(slot.member.sanitisedForDisplay(limit: 64))' is not for the vault's current key epoch")
        }
        guard let member = try MemberRecord.fetchOne(db, key: slot.member), member.removedSeq == nil,
              Sodium.constantTimeEqual([UInt8](member.boxPublicKey), identity.recipient.boxPublicKey) else {
            throw VaultError.integrity("a key slot opened by this identity belongs to another member (slots were swapped)")
        }
        guard Sodium.constantTimeEqual([UInt8](member.signPublicKey), identity.recipient.signPublicKey) else {
            throw VaultError.integrity("member '\(member.name.sanitisedForDisplay(limit: 64))' has another signing key than this identity (its row was edited)")
        }
        var ownerRow: MemberRecord?
        if signed {
            // Before the box's keys are used for anything: the slot and the row are the owner's
            // work, under the owner row's key, which that row itself must carry signed.
            guard let owner = try MemberRecord.fetchOne(db, key: Labels.ownerMember), owner.isOwner else {
                throw VaultError.integrity("the owner's member row is missing")
            }
            try checkSignature(of: owner, owner: owner, vaultID: vaultID)
            try checkSignature(of: member, owner: owner, vaultID: vaultID)
            try checkSignature(of: slot, member: member, owner: owner, vaultID: vaultID)
            ownerRow = owner
        }
        let keys: VaultKeys
        do {
            keys = try VaultKeys(dataKey: plaintext.slice(0..<32), auditKey: plaintext.slice(32..<64), epoch: epoch)
        } catch {
            throw VaultError.integrity("the vault keys in a key slot are unusable")
        }
        let binding = plaintext.withUnsafeBytes { Array($0[64..<96]) }
        guard Sodium.constantTimeEqual(binding, slotBinding(vaultID: vaultID, epoch: epoch, member: member, keys: keys)) else {
            throw VaultError.integrity("the key slot of member '\(member.name.sanitisedForDisplay(limit: 64))' is bound to another vault, epoch or member")
        }
        for row in [member] + (ownerRow.map { [$0] } ?? []) {
            guard Sodium.constantTimeEqual(mac(row, vaultID: vaultID, key: keys.metadataKey), [UInt8](row.mac)) else {
                throw VaultError.integrity("member '\(row.name.sanitisedForDisplay(limit: 64))' was edited (its MAC does not verify)")
            }
        }
        guard Sodium.constantTimeEqual(slotMAC(member: member, epoch: epoch, sealed: [UInt8](slot.sealed), vaultID: vaultID, key: keys.metadataKey),
                                       [UInt8](slot.mac)) else {
            throw VaultError.integrity("the key slot of member '\(member.name.sanitisedForDisplay(limit: 64))' does not verify (swapped or moved)")
        }
        if member.isOwner {
            // The owner checks that its slot is its own work, not keys someone else sealed to it.
            let expected = try ownerEndorsement(owner: identity, epoch: epoch, sealed: [UInt8](slot.sealed), vaultID: vaultID)
            guard let endorsement = slot.endorsement, Sodium.constantTimeEqual(expected, [UInt8](endorsement)) else {
                throw VaultError.integrity("the owner's key slot was not sealed by the owner (keys substituted by someone who can write the file?)")
            }
        }
        return (member, keys)
    }
}

/// Who signs the audit records a process writes: the member that unlocked the vault.
public struct AuditSigner: Sendable {
    public let member: String
    let identity: MemberIdentity

    init(member: String, identity: MemberIdentity) {
        self.member = member
        self.identity = identity
    }
}
