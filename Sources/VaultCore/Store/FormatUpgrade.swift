import Foundation
import GRDB

/// The upgrades of an older vault to format 4 (FORMAT.md §9), run by the first unlock
/// with the passphrase (or `vault upgrade`): format 1 to 2 (§9.3), format 2 to 3 (§9.2),
/// then format 3 to 4 (§9.1), each in the transaction of its migration.
///
/// Format 1 to 2. Inside the migration's transaction, before its SQL: every format-1 MAC is checked,
/// every secret version opened, the version sequences and the audit chain verified. A
/// vault that fails any check is not upgraded (integrity failure, exit 7): the upgrade
/// never re-authenticates tampered data. After the SQL: random identifiers, format-2
/// MACs, secrets re-sealed with format-2 additional data, audit records re-MAC'd (key
/// epoch 1), the header rewrapped as format 2, and an `upgrade` record appended. A
/// process killed at any point leaves either the format-1 vault or the format-2 one.
///
/// Format 2 to 3: first the stored header (still format 2, these keys' epoch) and the
/// audit chain's head are checked; then the owner's identity, member row and key slot,
/// the header rewrapped as format 3, and the `upgrade` record, the first one signed.
///
/// Format 3 to 4: first every member row and key slot (MACs, the owner's endorsement) and
/// the whole audit trail with its signatures are checked; then the owner signs every member
/// row and key slot, the header is rewrapped as format 4, and a signed `upgrade` record
/// is appended. Only the passphrase can: it is the owner's signature.
enum FormatUpgrade {
    private final class State: @unchecked Sendable {
        var secrets: [(profileID: Int64, field: SecretField, version: Int64, secret: SecureBytes)] = []
        var entries: [AuditRow] = []
        var cachedTokens = 0
        /// The owner's identity: unwrapped from a format-3 header, or made by the 2-to-3 step.
        var owner: MemberIdentity?
    }

    static func run(vault: Vault, header: VaultHeader, kek: SecureBytes) throws(VaultError) {
        let vaultID = header.vaultID
        let state = State()
        let store = vault.database
        let keys: VaultKeys
        var upgrades: [String: DataUpgrade] = [:]
        if header.formatVersion < 3 {
            guard let unwrapped = try header.unwrap(kek: kek) else { throw .wrongPassphrase }
            keys = unwrapped
            if header.formatVersion == 1, let name = store.formatMigrations[2] {
                upgrades[name] = DataUpgrade(
                    before: { db in try checkFormat1(db, header: header, keys: keys, vaultID: vaultID, state: state) },
                    after: { db in try writeFormat2(db, header: header, keys: keys, kek: kek, vaultID: vaultID, state: state, clock: vault.clock) })
            }
            if let name = store.formatMigrations[3] {
                upgrades[name] = DataUpgrade(
                    before: { db in
                        try FaultPoint.reached(FaultPoint.upgradeFormat3Begins)
                        try checkFormat2(db, vaultID: vaultID, keys: keys, expected: header)
                    },
                    after: { db in try writeFormat3(db, keys: keys, kek: kek, vaultID: vaultID, state: state, clock: vault.clock) })
            }
        } else {
            // Format 3: the owner's identity from the header, the keys from its slot (checked
            // by format 3's rules: there are no signatures yet).
            guard let owner = try header.unwrapOwner(kek: kek) else {
                // The identity wrapped for format 4 under a header that says 3: turned back.
                var written = header
                written.formatVersion = 4
                if try written.unwrapOwner(kek: kek) != nil {
                    throw .integrity("the vault header says format 3, but its owner identity was wrapped for format 4: the vault was turned back to an older format")
                }
                throw .wrongPassphrase
            }
            let opened = try store.read { db in try MemberCrypto.openSlot(identity: owner, db: db, vaultID: vaultID, epoch: header.keyEpoch, signed: false) }
            guard let opened else {
                throw .integrity("the passphrase is right, but the owner's key slot does not open: it was damaged or removed")
            }
            keys = opened.keys
            state.owner = owner
        }
        if let name = store.formatMigrations[4] {
            upgrades[name] = DataUpgrade(
                before: { db in
                    try FaultPoint.reached(FaultPoint.upgradeFormat4Begins)
                    try checkFormat3(db, vaultID: vaultID, keys: keys, expected: header, state: state)
                },
                after: { db in try writeFormat4(db, keys: keys, kek: kek, vaultID: vaultID, state: state, clock: vault.clock) })
        }
        do {
            try store.migrate(upgrades: upgrades)
        } catch {
            if case .failure(let message, _) = error, message == alreadyUpgradedMessage { return }
            // Each step commits on its own: a failure in a later one leaves the earlier ones
            // saved, which the message must not deny.
            if let reached = try? vault.header().formatVersion, reached > header.formatVersion, reached < Labels.formatVersion {
                throw Self.afterEarlierSteps(error, reached: reached)
            }
            throw error
        }
    }

    /// `error` of a later step, said of an upgrade whose earlier steps (up to format
    /// `reached`) were saved.
    static func afterEarlierSteps(_ error: VaultError, reached: UInt32) -> VaultError {
        let saved = "the vault was upgraded to format \(reached), but not to format \(Labels.formatVersion)"
        switch error {
        case .failure(let message, let hint):
            let cause = message.replacingOccurrences(of: "; nothing was changed", with: "")
                .replacingOccurrences(of: " and the vault is unchanged", with: "")
            return .failure("\(saved): \(cause)", hint: hint ?? "fix the cause and unlock again: the upgrade goes on from format \(reached)")
        case .integrity(let message):
            return .integrity("\(saved): \(message)")
        default:
            return error
        }
    }

    /// How the `upgrade` record of the format-3 to 4 step begins (FORMAT.md §9.1): a
    /// format-3 store whose trail holds one was turned back (refused), and `member-add`
    /// records by members must precede it (§6.7).
    static let format4Detail = "format 3 to 4:"

    /// The failure that aborts this process's upgrade transaction when another process
    /// finished the upgrade first; `run` then simply goes on.
    static let alreadyUpgradedMessage = "the vault was upgraded by another process"

    /// Everything format 1 promises, checked before anything is changed.
    private static func checkFormat1(_ db: StoreDB, header: VaultHeader, keys: VaultKeys, vaultID: [UInt8], state: State) throws {
        guard let stored = try HeaderRecord.fetchOne(db, key: 1) else { throw VaultError.integrity("the vault header is missing") }
        guard stored.formatVersion == 1 else { throw VaultError.failure(alreadyUpgradedMessage) }
        guard stored.header == header else { throw VaultError.keysChanged }

        for row in try Row.fetchAll(db, sql: "SELECT name, token_url, api_base, mac FROM environment") {
            let mac = Format.V1.environmentMAC(vaultID: vaultID, name: row["name"], tokenURL: row["token_url"], apiBase: row["api_base"],
                                               key: keys.metadataKey)
            guard Sodium.constantTimeEqual(mac, [UInt8](row["mac"] as Data)) else {
                throw VaultError.integrity("environment '\((row["name"] as String).sanitisedForDisplay(limit: 64))' fails its format-1 MAC; the vault was not upgraded")
            }
        }
        let profiles = try Row.fetchAll(db, sql: "SELECT id, name, client_id, username, grant_type, scope, environment, mac FROM profile")
        for row in profiles {
            let id: Int64 = row["id"], name: String = row["name"], grant: String = row["grant_type"]
            let display = name.sanitisedForDisplay(limit: 64)
            let mac = Format.V1.profileMAC(vaultID: vaultID, id: id, name: name, clientID: row["client_id"], username: row["username"], grantType: grant, scope: row["scope"], environment: row["environment"], key: keys.metadataKey)
            guard Sodium.constantTimeEqual(mac, [UInt8](row["mac"] as Data)), let grantType = GrantType(rawValue: grant) else {
                throw VaultError.integrity("profile '\(display)' fails its format-1 MAC; the vault was not upgraded")
            }
            var versions: [String: [Int64]] = [:]
            for secret in try SecretVersionRecord.fetchAll(db, where: "profile_id", is: id, orderBy: "field, version") {
                guard let field = SecretField(rawValue: secret.field) else {
                    throw VaultError.integrity("profile '\(display)' has a secret with an unknown field; the vault was not upgraded")
                }
                let opened: SecureBytes
                do {
                    opened = try Sodium.open(key: keys.secretKey, nonce: [UInt8](secret.nonce), ciphertext: [UInt8](secret.ciphertext),
                                             additionalData: Format.V1.secretAD(vaultID: vaultID, profileID: id, field: secret.field, version: secret.version))
                } catch {
                    throw VaultError.integrity("\(secret.field) version \(secret.version) of profile '\(display)' fails authentication; the vault was not upgraded")
                }
                versions[secret.field, default: []].append(secret.version)
                state.secrets.append((id, field, secret.version, opened))
            }
            for field in SecretField.allCases {
                let list = versions[field.rawValue] ?? []
                let required = field == .clientSecret || grantType == .password
                guard required ? (!list.isEmpty && list == Array(1...Int64(list.count))) : list.isEmpty else {
                    throw VaultError.integrity("the \(field.rawValue) versions of profile '\(display)' are not 1 to n; the vault was not upgraded")
                }
            }
        }
        let orphans = try Int.fetchOne(db, sql: "SELECT count(*) FROM secret_version WHERE profile_id NOT IN (SELECT id FROM profile)") ?? 0
        guard orphans == 0 else { throw VaultError.integrity("\(orphans) sealed secret(s) belong to no profile; the vault was not upgraded") }
        state.entries = try AuditChain.verifyV1(db: db, vaultID: vaultID, key: keys.auditMACKey)
        state.cachedTokens = try Int.fetchOne(db, sql: "SELECT count(*) FROM token_cache") ?? 0
    }

    /// The format-2 rows, after the migration's SQL has reshaped the tables.
    private static func writeFormat2(_ db: StoreDB, header: VaultHeader, keys: VaultKeys, kek: SecureBytes, vaultID: [UInt8],
                                     state: State, clock: any VaultClock) throws {
        for var environment in try EnvironmentRecord.fetchAll(db) {
            let uid = Sodium.randomBytes(16)
            environment.uid = Data(uid)
            environment.mac = Data(Format.environmentMAC(vaultID: vaultID, uid: uid, name: environment.name, tokenURL: environment.tokenURL, apiBase: environment.apiBase, key: keys.metadataKey))
            try environment.update(db)
        }
        var uids: [Int64: [UInt8]] = [:]
        for var profile in try ProfileRecord.fetchAll(db) {
            let uid = Sodium.randomBytes(16)
            uids[profile.id!] = uid
            profile.uid = Data(uid)
            profile.mac = Data(profile.computedMAC(vaultID: vaultID, key: keys.metadataKey))
            try profile.update(db)
        }
        for secret in state.secrets {
            guard let uid = uids[secret.profileID] else { throw VaultError.integrity("a secret lost its profile during the upgrade") }
            let nonce = Sodium.randomBytes(Sodium.aeadNonceBytes)
            let ad = Format.secretAD(vaultID: vaultID, profileUID: uid, field: secret.field.rawValue, version: secret.version)
            let ciphertext = try Sodium.seal(key: keys.secretKey, nonce: nonce, plaintext: secret.secret, additionalData: ad)
            try db.execute(sql: "UPDATE secret_version SET nonce = ?, ciphertext = ? WHERE profile_id = ? AND field = ? AND version = ?",
                           arguments: [Data(nonce), Data(ciphertext), secret.profileID, secret.field.rawValue, secret.version])
            guard db.changesCount == 1 else { throw VaultError.integrity("a secret could not be re-sealed during the upgrade") }
        }
        let epochKeys = keys.auditEpochKeys
        try AuditChain.remacAsFormat2(state.entries, db: db, vaultID: vaultID, keys: epochKeys)
        var upgraded = header
        upgraded.formatVersion = 2
        upgraded.keyEpoch = 1
        try upgraded.rewrap(keys: keys, kek: kek)
        try HeaderRecord(upgraded).update(db)
        guard db.changesCount == 1 else { throw VaultError.integrity("the vault header was not updated") }
        let detail = "format 1 to 2: \(state.entries.count) record(s) re-MAC'd, \(state.secrets.count) secret version(s) re-sealed, \(state.cachedTokens) cached token(s) dropped"
        try AuditChain.append(AuditEntry(at: clock.now().unixMilliseconds, action: .upgrade, outcome: .ok, detail: detail),
                              db: db, vaultID: vaultID, keys: epochKeys, signer: nil)
    }

    /// Format 2 to 3, checked first: the stored header is a format-2 one with the keys
    /// held (the one unlocked, or the one the 1-to-2 step just wrote) and the audit head
    /// verifies, so the signed `upgrade` record goes onto a sound trail.
    private static func checkFormat2(_ db: StoreDB, vaultID: [UInt8], keys: VaultKeys, expected: VaultHeader) throws {
        guard let stored = try HeaderRecord.fetchOne(db, key: 1)?.header else { throw VaultError.integrity("the vault header is missing") }
        guard stored.formatVersion == 2 else { throw VaultError.failure(alreadyUpgradedMessage) }
        if expected.formatVersion == 2, stored != expected { throw VaultError.keysChanged }
        try stored.validate()
        guard stored.vaultID == vaultID, stored.keyEpoch == keys.epoch else { throw VaultError.keysChanged }
        _ = try AuditChain.checkedHead(try AuditHeadRecord.fetchOne(db, key: 1), vaultID: vaultID, keys: keys.auditEpochKeys)
    }

    /// The members of format 3, after the migration's SQL: the owner (the passphrase's
    /// new identity, wrapped in the header), its key slot, the format-3 header and the
    /// `upgrade` record, the first one signed (by the owner). Existing records keep their
    /// MACs and stay unsigned (FORMAT.md §6.7).
    private static func writeFormat3(_ db: StoreDB, keys: VaultKeys, kek: SecureBytes, vaultID: [UInt8], state: State,
                                     clock: any VaultClock) throws {
        guard var header = try HeaderRecord.fetchOne(db, key: 1)?.header else { throw VaultError.integrity("the vault header is missing") }
        let head = try AuditChain.checkedHead(try AuditHeadRecord.fetchOne(db, key: 1), vaultID: vaultID, keys: keys.auditEpochKeys)
        let owner = MemberIdentity.generate()
        state.owner = owner
        let firstSigned = head.seq + 1
        try Vault.insertOwner(owner, keys: keys, addedSeq: firstSigned, vaultID: vaultID, createdAt: clock.now().iso8601, db: db, signed: false)
        header.signedFromSeq = firstSigned
        try finish(db, header: header, format: 3, owner: owner, keys: keys, kek: kek, clock: clock,
                   detail: "format 2 to 3: members; the passphrase is member 'owner'; records from \(firstSigned) on are signed")
    }

    /// The end of the 2-to-3 and 3-to-4 steps: the header in `format`, the owner identity
    /// wrapped again under the same KEK (a fresh nonce; `WRAP_AD` holds the version), and
    /// the `upgrade` record signed by the owner.
    private static func finish(_ db: StoreDB, header: VaultHeader, format: UInt32, owner: MemberIdentity, keys: VaultKeys, kek: SecureBytes,
                               clock: any VaultClock, detail: String) throws {
        var header = header
        header.formatVersion = format
        try header.wrapOwner(owner, kek: kek)
        try HeaderRecord(header).update(db)
        guard db.changesCount == 1 else { throw VaultError.integrity("the vault header was not updated") }
        try AuditChain.append(AuditEntry(at: clock.now().unixMilliseconds, action: .upgrade, outcome: .ok, detail: detail),
                              db: db, vaultID: header.vaultID, keys: keys.auditEpochKeys, signer: AuditSigner(member: Labels.ownerMember, identity: owner))
    }

    /// Format 3 to 4, checked first: the stored header is the format-3 one of these keys
    /// (the one unlocked, or the one the 2-to-3 step just wrote), every member row and key
    /// slot verifies by format 3's rules, the owner's row holds the owner's identity, and
    /// the whole audit trail verifies with its signatures: the owner signs nothing that was
    /// edited (FORMAT.md §9.1).
    private static func checkFormat3(_ db: StoreDB, vaultID: [UInt8], keys: VaultKeys, expected: VaultHeader, state: State) throws {
        guard let stored = try HeaderRecord.fetchOne(db, key: 1)?.header else { throw VaultError.integrity("the vault header is missing") }
        guard stored.formatVersion == 3 else { throw VaultError.failure(alreadyUpgradedMessage) }
        if expected.formatVersion == 3, stored != expected { throw VaultError.keysChanged }
        try stored.validate()
        guard stored.vaultID == vaultID, stored.keyEpoch == keys.epoch, let owner = state.owner else { throw VaultError.keysChanged }
        let members = try MemberRecord.fetchAll(db, orderBy: "added_seq, name")
        try MemberCrypto.checkMACs(members, vaultID: vaultID, key: keys.metadataKey)
        let ownerRow = try MemberCrypto.ownerRow(members)
        guard Sodium.constantTimeEqual([UInt8](ownerRow.boxPublicKey), owner.recipient.boxPublicKey),
              Sodium.constantTimeEqual([UInt8](ownerRow.signPublicKey), owner.recipient.signPublicKey) else {
            throw VaultError.integrity("the owner's member row does not hold the passphrase's identity; the vault was not upgraded")
        }
        try MemberCrypto.checkSlots(db, members: members, keys: keys, vaultID: vaultID, signed: false)
        let verification = try AuditChain.verify(db: db, vaultID: vaultID, current: keys.auditEpochKeys,
                                                 signatures: .init(signedFrom: stored.signedFromSeq, members: members, ownerAddsMembers: false))
        if let failure = verification.firstFailure {
            throw VaultError.integrity("audit record \(failure.seq): \(failure.reason); the vault was not upgraded")
        }
        // A vault that was upgraded once and is format 3 again was turned back (a member's
        // old copy of the tables under the current trail): signing it would sign whatever
        // that member put in. (The trail verified: such a record is the owner's.)
        if let seq = try Int64.fetchOne(db, sql: """
            SELECT seq FROM audit_record WHERE action = 'upgrade' AND substr(detail, 1, \(format4Detail.utf8.count)) = ? ORDER BY seq LIMIT 1
            """, arguments: [format4Detail]) {
            throw VaultError.integrity("this format-3 vault was already upgraded to format 4 (audit record \(seq)): it was turned back to an older format; the vault was not upgraded")
        }
    }

    /// Format 4, after the migration's SQL: the owner's signature on every member row and
    /// key slot (the MACs stay), the format-4 header, and the signed `upgrade` record.
    private static func writeFormat4(_ db: StoreDB, keys: VaultKeys, kek: SecureBytes, vaultID: [UInt8], state: State,
                                     clock: any VaultClock) throws {
        guard let header = try HeaderRecord.fetchOne(db, key: 1)?.header, let owner = state.owner else {
            throw VaultError.integrity("the vault header is missing")
        }
        var byName: [String: MemberRecord] = [:]
        for member in try MemberRecord.fetchAll(db) {
            let signed = MemberCrypto.authenticated(member, vaultID: vaultID, key: keys.metadataKey, owner: owner)
            try signed.update(db)
            byName[member.name] = signed
        }
        var slots = 0
        for var slot in try KeySlotRecord.fetchAll(db) {
            guard let member = byName[slot.member] else { throw VaultError.integrity("a key slot belongs to no member") }
            slot.ownerSignature = Data(owner.sign(MemberCrypto.slotSignatureInput(member: member, epoch: slot.keyEpoch,
                                                                                  sealed: [UInt8](slot.sealed), vaultID: vaultID)))
            try slot.update(db)
            slots += 1
        }
        try finish(db, header: header, format: 4, owner: owner, keys: keys, kek: kek, clock: clock,
                   detail: "\(format4Detail) \(byName.count) member row(s) and \(slots) key slot(s) signed by the owner; only the owner adds members")
    }
}
