import Foundation
import GRDB

/// The upgrades of an older vault file to format 3 (FORMAT.md §9), run by the first
/// unlock (or `vault upgrade`): format 1 to 2 (§9.2), then format 2 to 3 (§9.1), each in
/// the transaction of its migration.
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
enum FormatUpgrade {
    private final class State: @unchecked Sendable {
        var secrets: [(profileID: Int64, field: SecretField, version: Int64, secret: SecureBytes)] = []
        var entries: [AuditRow] = []
        var cachedTokens = 0
    }

    static func run(vault: Vault, header: VaultHeader, keys: VaultKeys, kek: SecureBytes) throws(VaultError) {
        let vaultID = header.vaultID
        let state = State()
        var upgrades: [String: DataUpgrade] = [:]
        if header.formatVersion == 1 {
            upgrades[SQLiteFile.format2Migration] = DataUpgrade(
                before: { db in try checkFormat1(db, header: header, keys: keys, vaultID: vaultID, state: state) },
                after: { db in try writeFormat2(db, header: header, keys: keys, kek: kek, vaultID: vaultID, state: state, clock: vault.clock) })
        }
        upgrades[SQLiteFile.format3Migration] = DataUpgrade(
            before: { db in
                try FaultPoint.reached(FaultPoint.upgradeFormat3Begins)
                try checkFormat2(db, vaultID: vaultID, keys: keys, expected: header)
            },
            after: { db in try writeFormat3(db, keys: keys, kek: kek, vaultID: vaultID, clock: vault.clock) })
        do {
            try vault.database.migrate(upgrades: upgrades)
        } catch {
            if case .failure(let message, _) = error, message == alreadyUpgradedMessage { return }
            // Each step commits on its own: a failure in the second one leaves the first
            // saved, which the message must not deny.
            if header.formatVersion == 1, (try? vault.header().formatVersion) == 2 {
                throw Self.afterFirstStep(error)
            }
            throw error
        }
    }

    /// `error` of the format-2 to format-3 step, said of an upgrade whose first step (format
    /// 1 to 2) was saved.
    static func afterFirstStep(_ error: VaultError) -> VaultError {
        let saved = "the vault was upgraded to format 2, but not to format 3"
        switch error {
        case .failure(let message, let hint):
            let cause = message.replacingOccurrences(of: "; nothing was changed", with: "")
                .replacingOccurrences(of: " and the vault is unchanged", with: "")
            return .failure("\(saved): \(cause)", hint: hint ?? "fix the cause and unlock again: the upgrade goes on from format 2")
        case .integrity(let message):
            return .integrity("\(saved): \(message)")
        default:
            return error
        }
    }

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
    private static func writeFormat3(_ db: StoreDB, keys: VaultKeys, kek: SecureBytes, vaultID: [UInt8], clock: any VaultClock) throws {
        guard var header = try HeaderRecord.fetchOne(db, key: 1)?.header else { throw VaultError.integrity("the vault header is missing") }
        let head = try AuditChain.checkedHead(try AuditHeadRecord.fetchOne(db, key: 1), vaultID: vaultID, keys: keys.auditEpochKeys)
        let owner = MemberIdentity.generate()
        let firstSigned = head.seq + 1
        try Vault.insertOwner(owner, keys: keys, addedSeq: firstSigned, vaultID: vaultID, createdAt: clock.now().iso8601, db: db)
        header.formatVersion = 3
        header.signedFromSeq = firstSigned
        try header.wrapOwner(owner, kek: kek)
        try HeaderRecord(header).update(db)
        guard db.changesCount == 1 else { throw VaultError.integrity("the vault header was not updated") }
        try AuditChain.append(AuditEntry(at: clock.now().unixMilliseconds, action: .upgrade, outcome: .ok,
                                         detail: "format 2 to 3: members; the passphrase is member 'owner'; records from \(firstSigned) on are signed"),
                              db: db, vaultID: vaultID, keys: keys.auditEpochKeys, signer: AuditSigner(member: Labels.ownerMember, identity: owner))
    }
}
