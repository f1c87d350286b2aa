import Foundation
import GRDB

/// The vault's keys and the members who hold them (FORMAT.md §4.2, §10): `passwd`,
/// `rekey`, `member add` and `member remove`, each inside one transaction.
struct KeyManagement {
    let tx: VaultTransaction

    /// `passwd`'s transaction: the header with the owner's new identity wrapped under the new
    /// passphrase, the owner's row and key slot for its new X25519 key, and the record.
    func changePassphrase(header updated: VaultHeader, newOwner: MemberIdentity, kdf: KDFParameters) throws {
        // The header may have moved on (signed_from_seq, epoch) only through a rekey, which
        // the transaction's key check rules out.
        try HeaderRecord(updated).update(tx.db)
        guard tx.db.changesCount == 1 else { throw VaultError.integrity("the vault header was not updated") }
        guard var owner = try tx.checkedMembers().first(where: { $0.name == Labels.ownerMember }) else {
            throw VaultError.integrity("the owner's member row is missing")
        }
        owner.boxPublicKey = Data(newOwner.recipient.boxPublicKey)
        owner = MemberCrypto.authenticated(owner, vaultID: tx.vaultID, key: tx.keys.metadataKey, owner: newOwner)
        try owner.update(tx.db)
        try tx.db.execute(sql: "DELETE FROM key_slot WHERE member = ?", arguments: [Labels.ownerMember])
        try MemberCrypto.sealSlot(keys: tx.keys, for: owner, vaultID: tx.vaultID, owner: newOwner).insert(tx.db)
        try tx.audit(tx.entry(.passwd, detail: kdf.presetName.map { "kdf=\($0)" }))
    }

    /// `rekey`'s transaction (and `member remove`'s, with `removed`): every secret version
    /// re-sealed and every row re-MAC'd under `next`, the keys sealed to every current member
    /// (the owner's slot endorsed by `owner`), the token cache emptied, the old audit key
    /// sealed under the new one, the header's epoch moved, and the record MAC'd under both
    /// epochs' keys. Returns the number of versions re-sealed and the new header.
    func rekey(to next: VaultKeys, owner: MemberIdentity, removing removed: String?, detail: String?) throws -> (count: Int, header: VaultHeader) {
        let keys = tx.keys
        var count = 0
        for var profile in try ProfileRecord.fetchAll(tx.db) {
            try tx.checkMAC(profile)
            try tx.checkVersionSequence(profile)
            for record in try SecretVersionRecord.fetchAll(tx.db, where: "profile_id", is: profile.id) {
                let secret = try tx.openSecret(record, profile: profile, key: keys.secretKey)
                var resealed = try tx.sealSecret(secret, profileID: record.profileID, profileUID: [UInt8](profile.uid ?? Data()),
                                                 field: SecretField(rawValue: record.field)!, version: record.version, key: next.secretKey)
                resealed.createdAt = record.createdAt
                try resealed.update(tx.db)
                count += 1
            }
            profile.mac = Data(tx.profileMAC(profile, key: next.metadataKey))
            try profile.update(tx.db)
        }
        let orphans = try Int.fetchOne(tx.db, sql: "SELECT count(*) FROM secret_version WHERE profile_id NOT IN (SELECT id FROM profile)") ?? 0
        guard orphans == 0 else { throw VaultError.integrity("\(orphans) sealed secret(s) belong to no profile") }
        for var environment in try EnvironmentRecord.fetchAll(tx.db) {
            try tx.checkEnvironmentMAC(environment)
            environment.mac = Data(tx.environmentMAC(environment, key: next.metadataKey))
            try environment.update(tx.db)
        }
        let recordSeq = (try AuditHeadRecord.fetchOne(tx.db, key: 1)?.seq ?? 0) + 1
        let members = try tx.checkedMembers()
        try tx.db.execute(sql: "DELETE FROM key_slot")
        var remaining = 0
        for var member in members {
            if member.name == removed {
                guard member.removedSeq == nil else { throw VaultError.notFound("member '\(member.name)' was already removed") }
                member.removedSeq = recordSeq
            }
            member = MemberCrypto.authenticated(member, vaultID: tx.vaultID, key: next.metadataKey, owner: owner)
            try member.update(tx.db)
            if member.removedSeq == nil {
                try MemberCrypto.sealSlot(keys: next, for: member, vaultID: tx.vaultID, owner: owner).insert(tx.db)
                remaining += 1
            }
        }
        guard remaining > 0 else { throw VaultError.usage("that would leave no member able to open the vault") }
        try tx.db.execute(sql: "DELETE FROM token_cache")
        try AuditChain.retire(keys, under: next.auditEpochKeys, db: tx.db, vaultID: tx.vaultID)
        // The header as stored now (a `passwd` may have committed since this process read
        // it): only the epoch and the digest change.
        guard var updated = try HeaderRecord.fetchOne(tx.db, key: 1)?.header else { throw VaultError.integrity("the vault header is missing") }
        updated.keyEpoch = next.epoch
        updated.headerDigest = updated.computedDigest
        try HeaderRecord(updated).update(tx.db)
        guard tx.db.changesCount == 1 else { throw VaultError.integrity("the vault header was not updated") }
        let action: AuditAction = removed == nil ? .rekey : .memberRemove
        let text = [removed.map { "member=\($0)" }, "resealed=\(count)", "epoch=\(next.epoch)", detail].compactMap { $0 }.joined(separator: " ")
        try AuditChain.append(tx.entry(action, detail: text), db: tx.db, vaultID: tx.vaultID, keys: next.auditEpochKeys,
                              previous: keys.auditEpochKeys, signer: tx.signer, trail: tx.trail)
        return (count, updated)
    }

    /// `member add`'s transaction: the member's row (MAC'd and signed by `owner`), a key
    /// slot with the current keys (signed by `owner`), and a signed `member-add` record.
    func addMember(name: String, recipient: Recipient, owner: MemberIdentity) throws {
        let members = try tx.checkedMembers()
        if members.contains(where: { $0.name == name }) {
            throw VaultError.failure("a member named '\(name)' exists or existed (names are never reused, so old records keep their signer)")
        }
        if let same = members.first(where: { $0.removedSeq == nil && $0.boxPublicKey == Data(recipient.boxPublicKey) }) {
            throw VaultError.failure("that recipient is already member '\(same.name)'")
        }
        let seq = (try AuditHeadRecord.fetchOne(tx.db, key: 1)?.seq ?? 0) + 1
        let record = MemberCrypto.authenticated(
            MemberRecord(name: name, uid: Data(Sodium.randomBytes(16)), kind: "recipient",
                         boxPublicKey: Data(recipient.boxPublicKey), signPublicKey: Data(recipient.signPublicKey),
                         addedSeq: seq, removedSeq: nil, createdAt: tx.now.iso8601, mac: Data()),
            vaultID: tx.vaultID, key: tx.keys.metadataKey, owner: owner)
        try record.insert(tx.db)
        try MemberCrypto.sealSlot(keys: tx.keys, for: record, vaultID: tx.vaultID, owner: owner).insert(tx.db)
        try tx.audit(tx.entry(.memberAdd, detail: "member=\(name)"))
    }
}

extension UnlockedVault {
    /// Changes the passphrase (`vault passwd`): the owner gets a new X25519 key (its
    /// Ed25519 key stays, so its records keep verifying), its key slot is sealed to the new
    /// key, and the new owner identity is wrapped under the new passphrase. Someone who
    /// knew the old passphrase (and so the old owner identity) can open no slot sealed
    /// after this; with `rekey` as well, nothing they held opens the vault (FORMAT.md
    /// §4.2). Secret ciphertexts are untouched. Only the owner can do it.
    public func changePassphrase(to newPassphrase: SecureBytes, kdf: KDFParameters?) throws(VaultError) {
        guard isOwner else { throw .usage("only the passphrase (member 'owner') can change the passphrase") }
        guard newPassphrase.count > 0 else { throw .usage("an empty passphrase is not allowed") }
        let parameters = kdf ?? header.kdf
        guard parameters.meetsMinimum || (parameters == .testOnlyInsecure && KDFParameters.testOnlyInsecureKDFEnabled) else {
            throw .usage("KDF parameters weaker than 'interactive' are not allowed")
        }
        let newOwner = try MemberIdentity(secret: .concatenating([.random(count: 32), identity.secret.slice(32..<64)]))
        // Argon2id runs before the transaction, with the keys held now; if a rekey lands
        // meanwhile, the check inside the transaction fails and nothing is written.
        let wrappedFor = keys
        var updated = header
        try updated.wrapOwner(newOwner, passphrase: newPassphrase, kdf: parameters)
        try database.write { db in
            try expectCurrent(db, keys: wrappedFor)
            try KeyManagement(tx: transaction(db, wrappedFor)).changePassphrase(header: updated, newOwner: newOwner, kdf: parameters)
        }
        adopt(header: updated, identity: newOwner)
    }

    /// New data and audit keys (a new key epoch), all in one transaction (`vault rekey`,
    /// `vault member remove`; ``KeyManagement/rekey(to:owner:removing:detail:)``). Only the
    /// owner can: every new epoch's owner slot carries the owner's endorsement (FORMAT.md
    /// §10.3). Returns the number of secret versions re-sealed.
    @discardableResult
    public func rekey(detail: String? = nil, removing removed: String? = nil) throws(VaultError) -> Int {
        guard isOwner else {
            throw .usage("only the owner (the passphrase) can \(removed == nil ? "rekey the vault" : "remove a member"): the owner's new key slot must be endorsed by the owner",
                         hint: "run it with the vault passphrase (--passphrase-file, VAULT_PASSPHRASE_FILE, VAULT_PASSPHRASE or the prompt)")
        }
        let owner = identity
        let (count, next, updated) = try write { tx in
            let next = tx.keys.nextEpoch()
            let (count, updated) = try KeyManagement(tx: tx).rekey(to: next, owner: owner, removing: removed, detail: detail)
            return (count, next, updated)
        }
        adopt(header: updated, keys: next)
        return count
    }

    /// Adds a member who opens the vault with the identity behind `recipient` (`vault
    /// member add`), in one transaction. Only the owner can: the owner signs every member
    /// row and key slot (FORMAT.md §10.6), so that no member can give itself, or anyone,
    /// another member's name or keys.
    public func addMember(name: String, recipient: Recipient) throws(VaultError) {
        guard isOwner else {
            throw .usage("only the owner (the passphrase) can add a member: the owner signs every member's keys",
                         hint: "run it with the vault passphrase (--passphrase-file, VAULT_PASSPHRASE_FILE, VAULT_PASSPHRASE or the prompt)")
        }
        let name = try NameRule.validate(name, what: "member")
        let owner = identity
        try write { try KeyManagement(tx: $0).addMember(name: name, recipient: recipient, owner: owner) }
    }

    /// Removes a member (`vault member remove`): a new key epoch whose keys are sealed to
    /// the remaining members only. The owner cannot be removed (the passphrase is the
    /// vault's last-resort key).
    public func removeMember(named name: String) throws(VaultError) -> Int {
        guard name != Labels.ownerMember else {
            throw .usage("'owner' is the passphrase's member and cannot be removed (it is the vault's last-resort key)",
                         hint: "change the passphrase with `vault passwd` instead")
        }
        let exists = try read { try $0.checkedMembers().contains { $0.name == name && $0.removedSeq == nil } }
        guard exists else { throw .notFound("no current member named '\(name.sanitisedForDisplay(limit: 64))'") }
        return try rekey(removing: name)
    }
}
