import Foundation
import GRDB

/// One transaction of an unlocked vault (``UnlockedVault/read(_:)``, ``UnlockedVault/write(_:)``):
/// the store, the keys found current inside it, and what every operation needs to read,
/// check, seal and audit. The operations of each concern — ``Profiles``, ``Environments``,
/// ``KeyManagement`` (keys and members), ``TokenCache`` — work on one of these, so that each
/// operation is one transaction with its one audit record.
struct VaultTransaction {
    let db: StoreDB
    /// The keys of the epoch the transaction found current (FORMAT.md §4.2).
    let keys: VaultKeys
    let vaultID: [UInt8]
    /// Who signs the records written (FORMAT.md §6.7).
    let signer: AuditSigner
    /// The signed-from sequence number of the vault's header (FORMAT.md §6.7).
    let signedFromSeq: Int64
    let now: Date
    /// The rollback check of the unlocked vault, when it has one (``TrailGuard``).
    var trail: TrailMark? = nil

    // MARK: - The audit record

    /// Appends `entry` to the audit chain, signed, in this transaction.
    @discardableResult
    func audit(_ entry: AuditEntry) throws -> AuditEntry {
        try AuditChain.append(entry, db: db, vaultID: vaultID, keys: keys.auditEpochKeys, signer: signer, trail: trail)
    }

    /// A record of `action` at this transaction's time.
    func entry(_ action: AuditAction, outcome: AuditOutcome = .ok, profile: String? = nil, environment: String? = nil, detail: String? = nil) -> AuditEntry {
        AuditEntry(at: now.unixMilliseconds, action: action, outcome: outcome, profile: profile, environment: environment, detail: detail)
    }

    /// Refuses to go on when the audit trail has no head or its head does not verify
    /// (checked before any exchange, so a wiped trail stops a token before the network).
    func checkAuditHead() throws {
        _ = try AuditChain.checkedHead(AuditHeadRecord.fetchOne(db, key: 1), vaultID: vaultID, keys: keys.auditEpochKeys)
    }

    // MARK: - Profiles and environments, checked

    /// The profile row named `name` (normalised as names are stored), not yet checked.
    func profileRecord(named name: String) throws -> ProfileRecord {
        guard let row = try db.rows(Self.profileQuery(named: name.precomposedStringWithCanonicalMapping)).first else {
            throw VaultError.notFound("no profile named '\(name.sanitisedForDisplay(limit: 64))'")
        }
        return try ProfileRecord(row: row)
    }

    /// The profile row named `name` (already normalised).
    static func profileQuery(named name: String) -> StoreQuery {
        StoreQuery("SELECT * FROM profile WHERE name = ?", [name])
    }

    /// The profile's MAC (FORMAT.md §5.3) under `key` (the metadata key of this epoch by default).
    func profileMAC(_ r: ProfileRecord, key: SecureBytes? = nil) -> [UInt8] {
        r.computedMAC(vaultID: vaultID, key: key ?? keys.metadataKey)
    }

    /// The profile's MAC, its grant and uid, checked (exit 7 if edited).
    func checkMAC(_ record: ProfileRecord) throws(VaultError) {
        guard record.uid?.count == 16, record.clientSecretVersion != nil,
              Sodium.constantTimeEqual(profileMAC(record), [UInt8](record.mac)) else {
            throw .integrity("the metadata of profile '\(record.name.sanitisedForDisplay(limit: 64))' was modified outside vault (MAC mismatch)")
        }
    }

    /// The environment's MAC (FORMAT.md §5.3) under `key` (the metadata key of this epoch by default).
    func environmentMAC(_ r: EnvironmentRecord, key: SecureBytes? = nil) -> [UInt8] {
        Format.environmentMAC(vaultID: vaultID, uid: [UInt8](r.uid ?? Data()), name: r.name, tokenURL: r.tokenURL, apiBase: r.apiBase,
                              key: key ?? keys.metadataKey)
    }

    func checkEnvironmentMAC(_ record: EnvironmentRecord) throws(VaultError) {
        guard record.uid?.count == 16, Sodium.constantTimeEqual(environmentMAC(record), [UInt8](record.mac)) else {
            throw .integrity("environment '\(record.name.sanitisedForDisplay(limit: 64))' was modified outside vault (MAC mismatch)")
        }
    }

    /// A built-in environment, or a user environment with its MAC checked (an edited token
    /// URL never receives secrets), read by `query` when given (one that selects the row
    /// named `name`), else by its name.
    func environment(named name: String, query: StoreQuery? = nil) throws -> Environment {
        if let builtIn = Environment.builtIns.first(where: { $0.name == name }) { return builtIn }
        guard let row = try db.rows(query ?? StoreQuery("SELECT * FROM environment WHERE name = ?", [name])).first else {
            throw VaultError.notFound("no environment named '\(name.sanitisedForDisplay(limit: 64))'")
        }
        let record = try EnvironmentRecord(row: row)
        try checkEnvironmentMAC(record)
        return Environment(name: record.name, tokenURL: record.tokenURL, apiBase: record.apiBase, builtIn: false,
                           uid: [UInt8](record.uid ?? Data()))
    }

    /// The version counts and bounds of each secret field of the profile named `name` (as
    /// stored), by its name, so that it can be sent before the profile is read.
    static func versionsQuery(profile name: String) -> StoreQuery {
        StoreQuery("""
            SELECT field, count(*) AS n, min(version) AS lo, max(version) AS hi
            FROM secret_version WHERE profile_id = (SELECT id FROM profile WHERE name = ?) GROUP BY field
            """, [name])
    }

    /// The stored versions of each field of `profile` must be exactly 1…current, with the
    /// current versions those its MAC covers (so a deleted newest version is a failure,
    /// never a silent roll-back).
    func checkVersionSequence(_ profile: ProfileRecord) throws {
        let rows = try db.rows(Self.versionsQuery(profile: profile.name))
        var seen: [String: (Int64, Int64, Int64)] = [:]
        for row in rows { seen[row["field"]] = (row["n"], row["lo"], row["hi"]) }
        let expected: [(SecretField, Int64?)] = [(.clientSecret, profile.clientSecretVersion), (.password, profile.passwordVersion)]
        for (field, current) in expected {
            let name = profile.name.sanitisedForDisplay(limit: 64)
            switch (seen[field.rawValue], current) {
            case (nil, nil): continue
            case let ((n, lo, hi)?, current?) where n == current && lo == 1 && hi == current: continue
            case (_, let current?):
                throw VaultError.integrity("the stored \(field.rawValue) versions of profile '\(name)' are not 1 to \(current) (a version was removed or added outside vault)")
            case (_, nil):
                throw VaultError.integrity("profile '\(name)' has \(field.rawValue) versions it should not have")
            }
        }
    }

    // MARK: - Sealing (FORMAT.md §5)

    func sealSecret(_ secret: SecureBytes, profileID: Int64, profileUID: [UInt8], field: SecretField, version: Int64,
                    key: SecureBytes) throws -> SecretVersionRecord {
        let nonce = Sodium.randomBytes(Sodium.aeadNonceBytes)
        let ad = Format.secretAD(vaultID: vaultID, profileUID: profileUID, field: field.rawValue, version: version)
        let ciphertext = try Sodium.seal(key: key, nonce: nonce, plaintext: secret, additionalData: ad)
        return SecretVersionRecord(profileID: profileID, field: field.rawValue, version: version,
                                   nonce: Data(nonce), ciphertext: Data(ciphertext), createdAt: now.iso8601)
    }

    func openSecret(_ record: SecretVersionRecord, profile: ProfileRecord, key: SecureBytes) throws(VaultError) -> SecureBytes {
        guard let field = SecretField(rawValue: record.field) else {
            throw .integrity("a sealed secret has an unknown field name")
        }
        let ad = Format.secretAD(vaultID: vaultID, profileUID: [UInt8](profile.uid ?? Data()), field: field.rawValue, version: record.version)
        do {
            return try Sodium.open(key: key, nonce: [UInt8](record.nonce), ciphertext: [UInt8](record.ciphertext), additionalData: ad)
        } catch {
            throw .integrity("sealed \(field.rawValue) version \(record.version) of profile '\(profile.name.sanitisedForDisplay(limit: 64))' failed authentication (tampered, damaged, or moved from another row)")
        }
    }

    /// The additional data of a cached token of `profileUID` for `environment` (FORMAT.md §5.2).
    func tokenAD(profileUID: [UInt8], environment: Environment, expiresAt: Int64, clientSecretVersion: Int64,
                 passwordVersion: Int64?) -> [UInt8] {
        Format.tokenAD(vaultID: vaultID, profileUID: profileUID, environmentName: environment.name, environmentUID: environment.uid,
                       tokenURL: environment.tokenURL, apiBase: environment.apiBase, expiresAt: expiresAt,
                       clientSecretVersion: clientSecretVersion, passwordVersion: passwordVersion)
    }

    // MARK: - Members

    /// Every member row, each MAC checked under the current metadata key and (`signed`:
    /// format 4) each signed by the owner, and every key slot (FORMAT.md §10).
    func checkedMembers(signed: Bool = true) throws -> [MemberRecord] {
        let members = try MemberRecord.fetchAll(db, orderBy: "added_seq, name")
        try MemberCrypto.checkMACs(members, vaultID: vaultID, key: keys.metadataKey)
        let owner = try MemberCrypto.ownerRow(members)
        if signed {
            for member in members { try MemberCrypto.checkSignature(of: member, owner: owner, vaultID: vaultID) }
        }
        try MemberCrypto.checkSlots(db, members: members, keys: keys, vaultID: vaultID, signed: signed)
        return members
    }
}

extension ProfileRecord {
    /// This row's MAC (FORMAT.md §5.3) under `key`.
    func computedMAC(vaultID: [UInt8], key: SecureBytes) -> [UInt8] {
        Format.profileMAC(vaultID: vaultID, uid: [UInt8](uid ?? Data()), name: name, clientID: clientID, username: username,
                          grantType: grantType.rawValue, scope: scope, environment: environment, clientSecretVersion: clientSecretVersion ?? 0,
                          passwordVersion: passwordVersion, key: key)
    }
}
