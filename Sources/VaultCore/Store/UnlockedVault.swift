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
    private var identity: MemberIdentity { lock.withLock { currentIdentity } }

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
    var database: VaultDatabase { vault.database }
    private var now: Date { vault.clock.now() }
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

    /// Checks, inside a transaction, that `keys` are the vault's current keys.
    private func expectCurrent(_ db: StoreDB, keys: VaultKeys) throws {
        guard let row = try Row.fetchOne(db, sql: "SELECT vault_id, format_version, key_epoch FROM vault_header WHERE id = 1") else {
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
        let opened = try database.read { db in
            try MemberCrypto.openSlot(identity: identity, db: db, vaultID: vaultID, epoch: stored.keyEpoch)
        }
        guard let opened, opened.member.name == member else { return false }
        lock.withLock {
            currentHeader = stored
            currentKeys = opened.keys
            checkedHeaderRow = nil
        }
        return true
    }

    /// Whether the stored header is still the one these keys were opened with (the agent
    /// asks before every request: a `passwd` or `rekey` by another process ends it). The
    /// row is read as it is and compared with the last row that decoded to that header, so
    /// while nothing changed no record is decoded; a changed row is decoded and compared.
    public func storedHeaderIsCurrent() -> Bool {
        headerRowIsCurrent(try? database.read { try Self.headerRow($0) })
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

    /// A write transaction whose keys are checked inside it (see the type's comment).
    func write<T>(_ body: (StoreDB, VaultKeys) throws -> T) throws(VaultError) -> T {
        try withCurrentKeys { (keys) throws(VaultError) in
            try database.write { db in
                try expectCurrent(db, keys: keys)
                return try body(db, keys)
            }
        }
    }

    /// A read snapshot whose keys are checked inside it.
    func read<T>(_ body: (StoreDB, VaultKeys) throws -> T) throws(VaultError) -> T {
        try withCurrentKeys { (keys) throws(VaultError) in
            try database.read { db in
                try expectCurrent(db, keys: keys)
                return try body(db, keys)
            }
        }
    }

    // MARK: - Sealing (FORMAT.md §5)

    static func tokenAD(vaultID: [UInt8], profileUID: [UInt8], environment: Environment, expiresAt: Int64,
                        clientSecretVersion: Int64, passwordVersion: Int64?) -> [UInt8] {
        Format.tokenAD(vaultID: vaultID, profileUID: profileUID, environmentName: environment.name, environmentUID: environment.uid,
                       tokenURL: environment.tokenURL, apiBase: environment.apiBase, expiresAt: expiresAt,
                       clientSecretVersion: clientSecretVersion, passwordVersion: passwordVersion)
    }

    static func profileMAC(_ r: ProfileRecord, vaultID: [UInt8], key: SecureBytes) -> [UInt8] {
        Format.profileMAC(vaultID: vaultID, uid: [UInt8](r.uid ?? Data()), name: r.name, clientID: r.clientID, username: r.username,
                          grantType: r.grantType, scope: r.scope, environment: r.environment, clientSecretVersion: r.clientSecretVersion ?? 0,
                          passwordVersion: r.passwordVersion, key: key)
    }

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

    private func audit(_ entry: AuditEntry, _ db: StoreDB, _ keys: VaultKeys) throws {
        try AuditChain.append(entry, db: db, vaultID: vaultID, keys: keys.auditEpochKeys, signer: signer)
    }

    private func entry(_ action: String, outcome: String = "ok", profile: String? = nil, environment: String? = nil, detail: String? = nil) -> AuditEntry {
        AuditEntry(at: now.unixMilliseconds, action: action, outcome: outcome, profile: profile, environment: environment, detail: detail)
    }

    // MARK: - Checks shared by reads and writes

    /// The profile's MAC, its grant and uid, checked (exit 7 if edited).
    func checkMAC(_ record: ProfileRecord, keys: VaultKeys) throws(VaultError) {
        let expected = Self.profileMAC(record, vaultID: vaultID, key: keys.metadataKey)
        guard record.uid?.count == 16, record.clientSecretVersion != nil,
              Sodium.constantTimeEqual(expected, [UInt8](record.mac)), GrantType(rawValue: record.grantType) != nil else {
            throw .integrity("the metadata of profile '\(record.name.sanitisedForDisplay(limit: 64))' was modified outside vault (MAC mismatch)")
        }
    }

    func checkEnvironmentMAC(_ record: EnvironmentRecord, keys: VaultKeys) throws(VaultError) {
        let uid = [UInt8](record.uid ?? Data())
        let expected = Format.environmentMAC(vaultID: vaultID, uid: uid, name: record.name, tokenURL: record.tokenURL, apiBase: record.apiBase, key: keys.metadataKey)
        guard uid.count == 16, Sodium.constantTimeEqual(expected, [UInt8](record.mac)) else {
            throw .integrity("environment '\(record.name.sanitisedForDisplay(limit: 64))' was modified outside vault (MAC mismatch)")
        }
    }

    /// The stored versions of each field of `profile` must be exactly 1…current, with the
    /// current versions those its MAC covers (so a deleted newest version is a failure,
    /// never a silent roll-back).
    func checkVersionSequence(_ db: StoreDB, profile: ProfileRecord) throws {
        let rows = try Row.fetchAll(db, sql: """
            SELECT field, count(*) AS n, min(version) AS lo, max(version) AS hi
            FROM secret_version WHERE profile_id = ? GROUP BY field
            """, arguments: [profile.id])
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

    /// Refuses to go on when the audit trail has no head or its head does not verify
    /// (checked before any exchange, so a wiped trail stops a token before the network).
    func checkAuditHead(_ db: StoreDB, keys: VaultKeys) throws {
        _ = try AuditChain.checkedHead(AuditHeadRecord.fetchOne(db, key: 1), vaultID: vaultID, keys: keys.auditEpochKeys)
    }

    // MARK: - Profiles

    /// Adds a profile with version 1 of each secret (`vault add`).
    @discardableResult
    public func addProfile(_ new: NewProfile, secrets: SecretInput) throws(VaultError) -> Profile {
        let name = try NameRule.validate(new.name, what: "profile")
        try NameRule.validateField(new.clientID, what: "client id")
        if let username = new.username { try NameRule.validateField(username, what: "username") }
        if let scope = new.scope { try NameRule.validateField(scope, what: "scope") }
        _ = try verifiedEnvironment(named: new.environment)
        guard let clientSecret = secrets.clientSecret, clientSecret.count > 0 else {
            throw .usage("a client secret is required")
        }
        switch new.grant {
        case .password:
            guard new.username != nil else { throw .usage("the password grant needs --username") }
            guard let password = secrets.password, password.count > 0 else { throw .usage("the password grant needs a password") }
        case .clientCredentials:
            guard new.username == nil else { throw .usage("--username is only for the password grant") }
        }
        let stamp = now.iso8601
        return try write { db, keys in
            if try Int.fetchOne(db, sql: "SELECT count(*) FROM profile WHERE name = ?", arguments: [name]) ?? 0 > 0 {
                throw VaultError.failure("a profile named '\(name)' already exists", hint: "use `vault rotate \(name)` to change its secrets")
            }
            let uid = Sodium.randomBytes(16)
            var record = ProfileRecord(id: nil, uid: Data(uid), name: name, clientID: new.clientID, username: new.username,
                                       grantType: new.grant.rawValue, scope: new.scope, environment: new.environment,
                                       clientSecretVersion: 1, passwordVersion: new.grant == .password ? 1 : nil,
                                       createdAt: stamp, updatedAt: stamp, mac: Data(count: 32))
            record.mac = Data(Self.profileMAC(record, vaultID: vaultID, key: keys.metadataKey))
            try record.insertReturningGenerated(db)
            let id = record.id!
            try sealSecret(clientSecret, profileID: id, profileUID: uid, field: .clientSecret, version: 1, key: keys.secretKey).insert(db)
            if new.grant == .password, let password = secrets.password {
                try sealSecret(password, profileID: id, profileUID: uid, field: .password, version: 1, key: keys.secretKey).insert(db)
            }
            try audit(entry("add", profile: name, environment: new.environment, detail: "grant=\(new.grant.rawValue)"), db, keys)
            return record.profile
        }
    }

    private func profileRecord(_ db: StoreDB, named name: String) throws -> ProfileRecord {
        let normalised = name.precomposedStringWithCanonicalMapping
        guard let record = try ProfileRecord.fetchOne(db, sql: "SELECT * FROM profile WHERE name = ?", arguments: [normalised]) else {
            throw VaultError.notFound("no profile named '\(name.sanitisedForDisplay(limit: 64))'")
        }
        return record
    }

    /// The profile named `name`, with its metadata MAC checked (exit 7 if edited).
    public func verifiedProfile(named name: String) throws(VaultError) -> Profile {
        try read { db, keys in
            let record = try profileRecord(db, named: name)
            try checkMAC(record, keys: keys)
            return record.profile
        }
    }

    /// What an exchange needs, read and checked in one snapshot: the profile and the
    /// environment (MACs checked), the token URL allowed to receive the secrets, the
    /// current secrets (versions checked against the profile MAC), and the audit head.
    func exchangeTarget(profile name: String, environment: String?) throws(VaultError) -> ExchangeTarget {
        try read { db, keys in
            let record = try profileRecord(db, named: name)
            try checkMAC(record, keys: keys)
            let environment = try environmentRecord(db, named: environment ?? record.environment, keys: keys)
            let tokenURL = try EndpointPolicy.validateTokenURL(environment.tokenURL)
            try checkVersionSequence(db, profile: record)
            try checkAuditHead(db, keys: keys)
            let credentials = try credentials(db, profile: record, keys: keys)
            return ExchangeTarget(profile: record.profile, environment: environment, tokenURL: tokenURL, credentials: credentials)
        }
    }

    private func credentials(_ db: StoreDB, profile: ProfileRecord, keys: VaultKeys) throws -> Credentials {
        func current(_ field: SecretField, _ version: Int64) throws -> SecureBytes {
            guard let record = try SecretVersionRecord.fetchOne(db, key: ["profile_id": profile.id, "field": field.rawValue, "version": version]) else {
                throw VaultError.integrity("profile '\(profile.name.sanitisedForDisplay(limit: 64))' has no sealed \(field.rawValue) version \(version)")
            }
            return try openSecret(record, profile: profile, key: keys.secretKey)
        }
        let clientSecretVersion = profile.clientSecretVersion ?? 0
        return Credentials(
            clientSecret: try current(.clientSecret, clientSecretVersion),
            password: try profile.passwordVersion.map { try current(.password, $0) },
            clientSecretVersion: clientSecretVersion,
            passwordVersion: profile.passwordVersion)
    }

    /// Opens the current version of each secret of `profile` (tests, `rotate --verify`).
    public func credentials(for profile: Profile) throws(VaultError) -> Credentials {
        try exchangeTarget(profile: profile.name, environment: nil).credentials
    }

    /// Opens every stored version of every secret (tests, `rekey` checks).
    public func allSecrets(of profile: Profile) throws(VaultError) -> [(SecretVersionInfo, SecureBytes)] {
        try read { db, keys in
            let record = try profileRecord(db, named: profile.name)
            try checkMAC(record, keys: keys)
            try checkVersionSequence(db, profile: record)
            let rows = try SecretVersionRecord.fetchAll(db, where: "profile_id", is: record.id, orderBy: "field, version")
            return try rows.map { row in
                (SecretVersionInfo(field: SecretField(rawValue: row.field) ?? .clientSecret, version: row.version, createdAt: row.createdAt),
                 try openSecret(row, profile: record, key: keys.secretKey))
            }
        }
    }

    /// Adds new versions of the given secrets; older versions stay (`vault rotate`).
    /// Cached tokens of the profile are dropped.
    @discardableResult
    public func rotate(profileNamed name: String, secrets: SecretInput, detail: String? = nil) throws(VaultError) -> [SecretVersionInfo] {
        let profile = try verifiedProfile(named: name)
        var updates: [(SecretField, SecureBytes)] = []
        if let secret = secrets.clientSecret {
            guard secret.count > 0 else { throw .usage("the new client secret is empty") }
            updates.append((.clientSecret, secret))
        }
        if let password = secrets.password {
            guard profile.grant == .password else { throw .usage("profile '\(profile.name)' uses client credentials and has no password") }
            guard password.count > 0 else { throw .usage("the new password is empty") }
            updates.append((.password, password))
        }
        guard !updates.isEmpty else { throw .usage("nothing to rotate") }
        let stamp = now.iso8601
        return try write { db, keys in
            var record = try profileRecord(db, named: profile.name)
            guard record.uid == Data(profile.uid) else {
                throw VaultError.failure("profile '\(profile.name)' was removed and added again while this command ran; nothing was changed")
            }
            try checkMAC(record, keys: keys)
            try checkVersionSequence(db, profile: record)
            let uid = [UInt8](record.uid ?? Data())
            var created: [SecretVersionInfo] = []
            for (field, secret) in updates {
                let next = (field == .clientSecret ? record.clientSecretVersion ?? 0 : record.passwordVersion ?? 0) + 1
                try sealSecret(secret, profileID: record.id!, profileUID: uid, field: field, version: next, key: keys.secretKey).insert(db)
                if field == .clientSecret { record.clientSecretVersion = next } else { record.passwordVersion = next }
                created.append(SecretVersionInfo(field: field, version: next, createdAt: stamp))
            }
            record.updatedAt = stamp
            record.mac = Data(Self.profileMAC(record, vaultID: vaultID, key: keys.metadataKey))
            try record.update(db)
            try db.execute(sql: "DELETE FROM token_cache WHERE profile_id = ?", arguments: [record.id])
            let fields = created.map { "\($0.field.rawValue)=v\($0.version)" }.joined(separator: ",")
            try audit(entry("rotate", profile: record.name, environment: record.environment,
                            detail: [fields, detail].compactMap { $0 }.joined(separator: " ")), db, keys)
            return created
        }
    }

    /// Deletes a profile, every secret version and cached token; audit records stay.
    /// A profile whose metadata fails its MAC can still be removed.
    public func removeProfile(named name: String) throws(VaultError) {
        try write { db, keys in
            let record = try profileRecord(db, named: name)
            try db.execute(sql: "DELETE FROM token_cache WHERE profile_id = ?", arguments: [record.id])
            try db.execute(sql: "DELETE FROM secret_version WHERE profile_id = ?", arguments: [record.id])
            _ = try ProfileRecord.deleteOne(db, key: record.id)
            try audit(entry("remove", profile: record.name, environment: record.environment), db, keys)
        }
    }

    // MARK: - Passphrase and keys

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
            // The header may have moved on (signed_from_seq, epoch) only through a rekey,
            // which expectCurrent rules out.
            try HeaderRecord(updated).update(db)
            guard db.changesCount == 1 else { throw VaultError.integrity("the vault header was not updated") }
            guard var owner = try checkedMembers(db, keys: wrappedFor).first(where: { $0.name == Labels.ownerMember }) else {
                throw VaultError.integrity("the owner's member row is missing")
            }
            owner.boxPublicKey = Data(newOwner.recipient.boxPublicKey)
            owner.mac = Data(MemberCrypto.mac(owner, vaultID: vaultID, key: wrappedFor.metadataKey))
            try owner.update(db)
            try db.execute(sql: "DELETE FROM key_slot WHERE member = ?", arguments: [Labels.ownerMember])
            try MemberCrypto.sealSlot(keys: wrappedFor, for: owner, vaultID: vaultID, owner: newOwner).insert(db)
            try audit(entry("passwd", detail: parameters.presetName.map { "kdf=\($0)" }), db, wrappedFor)
        }
        lock.withLock {
            currentHeader = updated
            currentIdentity = newOwner
        }
    }

    /// New data and audit keys (a new key epoch): every secret version re-sealed, every
    /// row re-MAC'd, the keys sealed anew to every current member, the token cache
    /// emptied, the old audit key sealed under the new one, and the record MAC'd under
    /// both, all in one transaction (`vault rekey`, `vault member remove`). Only the owner
    /// can: every new epoch's owner slot carries the owner's endorsement (FORMAT.md §10.3).
    /// Returns the number of secret versions re-sealed.
    @discardableResult
    public func rekey(detail: String? = nil, removing removed: String? = nil) throws(VaultError) -> Int {
        // New keys mean a new owner's slot, which only the owner can endorse (FORMAT.md §10.3).
        guard isOwner else {
            throw .usage("only the owner (the passphrase) can \(removed == nil ? "rekey the vault" : "remove a member"): the owner's new key slot must be endorsed by the owner",
                         hint: "run it with the vault passphrase (--passphrase-file, VAULT_PASSPHRASE_FILE, VAULT_PASSPHRASE or the prompt)")
        }
        let (count, next, updated) = try write { db, keys in
            let next = keys.nextEpoch()
            var count = 0
            for var profile in try ProfileRecord.fetchAll(db) {
                try checkMAC(profile, keys: keys)
                try checkVersionSequence(db, profile: profile)
                for record in try SecretVersionRecord.fetchAll(db, where: "profile_id", is: profile.id) {
                    let secret = try openSecret(record, profile: profile, key: keys.secretKey)
                    var resealed = try sealSecret(secret, profileID: record.profileID, profileUID: [UInt8](profile.uid ?? Data()),
                                                  field: SecretField(rawValue: record.field)!, version: record.version, key: next.secretKey)
                    resealed.createdAt = record.createdAt
                    try resealed.update(db)
                    count += 1
                }
                profile.mac = Data(Self.profileMAC(profile, vaultID: vaultID, key: next.metadataKey))
                try profile.update(db)
            }
            let orphans = try Int.fetchOne(db, sql: "SELECT count(*) FROM secret_version WHERE profile_id NOT IN (SELECT id FROM profile)") ?? 0
            guard orphans == 0 else { throw VaultError.integrity("\(orphans) sealed secret(s) belong to no profile") }
            for var environment in try EnvironmentRecord.fetchAll(db) {
                try checkEnvironmentMAC(environment, keys: keys)
                environment.mac = Data(Format.environmentMAC(vaultID: vaultID, uid: [UInt8](environment.uid ?? Data()), name: environment.name, tokenURL: environment.tokenURL, apiBase: environment.apiBase, key: next.metadataKey))
                try environment.update(db)
            }
            let recordSeq = (try AuditHeadRecord.fetchOne(db, key: 1)?.seq ?? 0) + 1
            let members = try checkedMembers(db, keys: keys)
            try db.execute(sql: "DELETE FROM key_slot")
            var remaining = 0
            for var member in members {
                if member.name == removed {
                    guard member.removedSeq == nil else { throw VaultError.notFound("member '\(member.name)' was already removed") }
                    member.removedSeq = recordSeq
                }
                member.mac = Data(MemberCrypto.mac(member, vaultID: vaultID, key: next.metadataKey))
                try member.update(db)
                if member.removedSeq == nil {
                    try MemberCrypto.sealSlot(keys: next, for: member, vaultID: vaultID, owner: identity).insert(db)
                    remaining += 1
                }
            }
            guard remaining > 0 else { throw VaultError.usage("that would leave no member able to open the vault") }
            try db.execute(sql: "DELETE FROM token_cache")
            try AuditChain.retire(keys, under: next.auditEpochKeys, db: db, vaultID: vaultID)
            // The header as stored now (a `passwd` may have committed since this process
            // read it): only the epoch and the digest change.
            guard var updated = try HeaderRecord.fetchOne(db, key: 1)?.header else { throw VaultError.integrity("the vault header is missing") }
            updated.keyEpoch = next.epoch
            updated.headerDigest = updated.computedDigest
            try HeaderRecord(updated).update(db)
            guard db.changesCount == 1 else { throw VaultError.integrity("the vault header was not updated") }
            let action = removed == nil ? "rekey" : "member-remove"
            let text = [removed.map { "member=\($0)" }, "resealed=\(count)", "epoch=\(next.epoch)", detail].compactMap { $0 }.joined(separator: " ")
            try AuditChain.append(entry(action, detail: text), db: db, vaultID: vaultID, keys: next.auditEpochKeys,
                                  previous: keys.auditEpochKeys, signer: signer)
            return (count, next, updated)
        }
        lock.withLock {
            currentKeys = next
            currentHeader = updated
        }
        return count
    }

    // MARK: - Members

    /// Every member row, each MAC checked under the current metadata key.
    func checkedMembers(_ db: StoreDB, keys: VaultKeys) throws -> [MemberRecord] {
        let members = try MemberRecord.fetchAll(db, orderBy: "added_seq, name")
        for member in members {
            guard Sodium.constantTimeEqual(MemberCrypto.mac(member, vaultID: vaultID, key: keys.metadataKey), [UInt8](member.mac)),
                  member.uid.count == 16, ["passphrase", "recipient"].contains(member.kind) else {
                throw VaultError.integrity("member '\(member.name.sanitisedForDisplay(limit: 64))' was edited (its MAC does not verify)")
            }
        }
        guard members.filter({ $0.kind == "passphrase" }).map(\.name) == [Labels.ownerMember] else {
            throw VaultError.integrity("the member table does not have exactly one passphrase member, 'owner'")
        }
        try MemberCrypto.checkSlots(db, members: members, keys: keys, vaultID: vaultID)
        return members
    }

    /// Adds a member who opens the vault with the identity behind `recipient` (`vault
    /// member add`): its row (MAC'd), a key slot with the current keys, and a signed
    /// `member-add` record, in one transaction.
    public func addMember(name: String, recipient: Recipient) throws(VaultError) {
        let name = try NameRule.validate(name, what: "member")
        try write { db, keys in
            let members = try checkedMembers(db, keys: keys)
            if members.contains(where: { $0.name == name }) {
                throw VaultError.failure("a member named '\(name)' exists or existed (names are never reused, so old records keep their signer)")
            }
            if let same = members.first(where: { $0.removedSeq == nil && $0.boxPublicKey == Data(recipient.boxPublicKey) }) {
                throw VaultError.failure("that recipient is already member '\(same.name)'")
            }
            let seq = (try AuditHeadRecord.fetchOne(db, key: 1)?.seq ?? 0) + 1
            var record = MemberRecord(name: name, uid: Data(Sodium.randomBytes(16)), kind: "recipient",
                                      boxPublicKey: Data(recipient.boxPublicKey), signPublicKey: Data(recipient.signPublicKey),
                                      addedSeq: seq, removedSeq: nil, createdAt: now.iso8601, mac: Data())
            record.mac = Data(MemberCrypto.mac(record, vaultID: vaultID, key: keys.metadataKey))
            try record.insert(db)
            try MemberCrypto.sealSlot(keys: keys, for: record, vaultID: vaultID, owner: nil).insert(db)
            try audit(entry("member-add", detail: "member=\(name)"), db, keys)
        }
    }

    /// Removes a member (`vault member remove`): a new key epoch whose keys are sealed to
    /// the remaining members only. The owner cannot be removed (the passphrase is the
    /// vault's last-resort key).
    public func removeMember(named name: String) throws(VaultError) -> Int {
        guard name != Labels.ownerMember else {
            throw .usage("'owner' is the passphrase's member and cannot be removed (it is the vault's last-resort key)",
                         hint: "change the passphrase with `vault passwd` instead")
        }
        let exists = try read { db, keys in try checkedMembers(db, keys: keys).contains { $0.name == name && $0.removedSeq == nil } }
        guard exists else { throw .notFound("no current member named '\(name.sanitisedForDisplay(limit: 64))'") }
        return try rekey(removing: name)
    }

    // MARK: - Environments

    /// Adds a user environment (`vault env add`).
    public func addEnvironment(name: String, tokenURL: String, apiBase: String?) throws(VaultError) {
        let name = try NameRule.validate(name, what: "environment")
        guard !Environment.builtIns.contains(where: { $0.name == name }) else {
            throw .usage("'\(name)' is a built-in environment")
        }
        let tokenURL = try EndpointPolicy.validateTokenURL(tokenURL)
        let apiBase = try apiBase.map { (u) throws(VaultError) in try EndpointPolicy.validateAPIBase(u) }
        try write { db, keys in
            if try EnvironmentRecord.fetchOne(db, key: name) != nil {
                throw VaultError.failure("an environment named '\(name)' already exists",
                                         hint: "remove it first with `vault env remove \(name)`")
            }
            let uid = Sodium.randomBytes(16)
            try EnvironmentRecord(name: name, uid: Data(uid), tokenURL: tokenURL, apiBase: apiBase, createdAt: now.iso8601,
                                  mac: Data(Format.environmentMAC(vaultID: vaultID, uid: uid, name: name, tokenURL: tokenURL, apiBase: apiBase, key: keys.metadataKey))).insert(db)
            try audit(AuditEntry(at: now.unixMilliseconds, action: "env-add", outcome: "ok", environment: name, tokenURL: tokenURL), db, keys)
        }
    }

    /// Changes a user environment's token URL and/or API base (`vault env set`). The row
    /// keeps its identifier and is MAC'd anew; tokens cached for the old definition are
    /// dropped in the same transaction (their additional data names it), and the change is
    /// audited. Built-ins cannot be changed. `apiBase: .some(nil)` removes the API base.
    @discardableResult
    public func setEnvironment(name: String, tokenURL: String?, apiBase: String??) throws(VaultError) -> Environment {
        guard !Environment.builtIns.contains(where: { $0.name == name }) else {
            throw .usage("'\(name)' is a built-in environment and cannot be changed", hint: "add your own with `vault env add`")
        }
        guard tokenURL != nil || apiBase != nil else { throw .usage("give --token-url, --api-base or --no-api-base") }
        let newTokenURL = try tokenURL.map { (u) throws(VaultError) in try EndpointPolicy.validateTokenURL(u) }
        let newAPIBase: String?? = try apiBase.map { (value) throws(VaultError) -> String? in
            try value.map { (u) throws(VaultError) in try EndpointPolicy.validateAPIBase(u) }
        }
        return try write { db, keys in
            guard var record = try EnvironmentRecord.fetchOne(db, key: name) else {
                throw VaultError.notFound("no environment named '\(name.sanitisedForDisplay(limit: 64))'")
            }
            try checkEnvironmentMAC(record, keys: keys)
            var changes: [String] = []
            if let newTokenURL, newTokenURL != record.tokenURL { record.tokenURL = newTokenURL; changes.append("token_url") }
            if let newAPIBase, newAPIBase != record.apiBase { record.apiBase = newAPIBase; changes.append("api_base") }
            let uid = [UInt8](record.uid ?? Data())
            record.mac = Data(Format.environmentMAC(vaultID: vaultID, uid: uid, name: record.name, tokenURL: record.tokenURL, apiBase: record.apiBase, key: keys.metadataKey))
            try record.update(db)
            try db.execute(sql: "DELETE FROM token_cache WHERE environment = ?", arguments: [name])
            let dropped = db.changesCount
            try audit(AuditEntry(at: now.unixMilliseconds, action: "env-set", outcome: "ok", environment: name, tokenURL: record.tokenURL,
                                 detail: "changed=\(changes.isEmpty ? "nothing" : changes.joined(separator: ",")) cached_tokens_dropped=\(dropped)"),
                      db, keys)
            return Environment(name: record.name, tokenURL: record.tokenURL, apiBase: record.apiBase, builtIn: false, uid: uid)
        }
    }

    /// Removes a user environment that no profile uses as its default; tokens cached for
    /// it are dropped with it.
    public func removeEnvironment(name: String) throws(VaultError) {
        guard !Environment.builtIns.contains(where: { $0.name == name }) else {
            throw .usage("'\(name)' is a built-in environment and cannot be removed")
        }
        try write { db, keys in
            guard try EnvironmentRecord.fetchOne(db, key: name) != nil else {
                throw VaultError.notFound("no environment named '\(name.sanitisedForDisplay(limit: 64))'")
            }
            let users = try String.fetchAll(db, sql: "SELECT name FROM profile WHERE environment = ? ORDER BY name", arguments: [name])
            guard users.isEmpty else {
                throw VaultError.failure("environment '\(name)' is the default of \(users.count) profile(s): \(users.prefix(5).map { $0.sanitisedForDisplay(limit: 64) }.joined(separator: ", "))",
                                         hint: "remove those profiles or add them again with another --env")
            }
            try db.execute(sql: "DELETE FROM token_cache WHERE environment = ?", arguments: [name])
            _ = try EnvironmentRecord.deleteOne(db, key: name)
            try audit(entry("env-remove", environment: name), db, keys)
        }
    }

    private func environmentRecord(_ db: StoreDB, named name: String, keys: VaultKeys) throws -> Environment {
        if let builtIn = Environment.builtIns.first(where: { $0.name == name }) { return builtIn }
        guard let record = try EnvironmentRecord.fetchOne(db, key: name) else {
            throw VaultError.notFound("no environment named '\(name.sanitisedForDisplay(limit: 64))'")
        }
        try checkEnvironmentMAC(record, keys: keys)
        return Environment(name: record.name, tokenURL: record.tokenURL, apiBase: record.apiBase, builtIn: false,
                           uid: [UInt8](record.uid ?? Data()))
    }

    /// An environment with its MAC checked, so an edited token URL never receives secrets.
    public func verifiedEnvironment(named name: String) throws(VaultError) -> Environment {
        try read { db, keys in try environmentRecord(db, named: name, keys: keys) }
    }

    // MARK: - Token cache and exchange records

    /// Delivers a usable cached token of `profile` for `environment`, if there is one,
    /// in one write transaction: the checks the exchange path makes (profile MAC,
    /// environment MAC and URL policy, the secret version sequence), the cached token
    /// opened (the secrets are not: a cache hit needs no credentials), and its audit
    /// record appended (which checks the head) and committed, all under the writer lock,
    /// before the token is returned. Nil (nothing written) when there is no cached token
    /// for the current secret versions with more than `minTTL` seconds left. A storage
    /// failure is ``VaultError/auditRefused(_:)`` (exit 8), as for any exchange.
    func deliverCachedToken(profile name: String, environment: String?, minTTL: Int64, action: TokenAction) throws(VaultError) -> DeliveredToken? {
        let delivered: DeliveredToken?
        let hit = { [self] (db: StoreDB, keys: VaultKeys) throws -> DeliveredToken? in
            let profile = try profileRecord(db, named: name)
            try checkMAC(profile, keys: keys)
            let environment = try environmentRecord(db, named: environment ?? profile.environment, keys: keys)
            let tokenURL = try EndpointPolicy.validateTokenURL(environment.tokenURL)
            try checkVersionSequence(db, profile: profile)
            guard let id = profile.id, let uid = profile.uid,
                  let record = try TokenCacheRecord.fetchOne(db, key: ["profile_id": id, "environment": environment.name]) else {
                return nil
            }
            let now = self.now
            guard record.environmentUID == Data(environment.uid),
                  record.clientSecretVersion == profile.clientSecretVersion,
                  record.passwordVersion == profile.passwordVersion,
                  record.expiresAt - minTTL > Int64(now.timeIntervalSince1970)
            else { return nil }
            let ad = Self.tokenAD(vaultID: vaultID, profileUID: [UInt8](uid), environment: environment,
                                  expiresAt: record.expiresAt, clientSecretVersion: record.clientSecretVersion,
                                  passwordVersion: record.passwordVersion)
            let token: SecureBytes
            do {
                token = try Sodium.open(key: keys.tokenKey, nonce: [UInt8](record.nonce), ciphertext: [UInt8](record.ciphertext), additionalData: ad)
            } catch {
                throw VaultError.integrity("the cached token of profile '\(profile.name.sanitisedForDisplay(limit: 64))' failed authentication")
            }
            var entry = AuditEntry(at: now.unixMilliseconds, action: action.rawValue, outcome: "cache_hit", profile: profile.name,
                                   environment: environment.name, tokenURL: tokenURL, grantType: profile.grantType)
            entry.tokenType = "Bearer"
            entry.expiresAt = record.expiresAt
            entry.expiresIn = record.expiresAt - Int64(now.timeIntervalSince1970)
            entry.tokenFingerprint = keys.fingerprint(token: token)
            entry.attempts = 0
            entry.durationMs = 0
            let committed = try AuditChain.append(entry, db: db, vaultID: vaultID, keys: keys.auditEpochKeys, signer: signer)
            return DeliveredToken(token: token, tokenType: "Bearer", expiresAt: record.expiresAt, expiresIn: entry.expiresIn ?? 0,
                                  environment: environment, fromCache: true, audit: committed)
        }
        do {
            delivered = try write(hit)
        } catch {
            switch error {
            case .failure(let what, _): throw .auditRefused(what)
            default: throw error
            }
        }
        guard let delivered else { return nil }
        Trace.debug("audit record \(delivered.audit.seq) committed (\(delivered.audit.action), cache_hit)")
        try checkRecordStillInPlace()
        return delivered
    }

    /// A record committed to a file that was removed or replaced meanwhile is lost to the
    /// audit trail: the token is withheld.
    private func checkRecordStillInPlace() throws(VaultError) {
        guard database.isStillInPlace else {
            throw .auditRefused("the vault file at \(database.path) was removed or replaced while vault ran")
        }
    }

    /// Commits the audit record of an exchange (and, for a fresh token, its sealed cache
    /// entry) in one transaction. The token must not be released unless this returns:
    /// a storage failure is ``VaultError/auditRefused(_:)`` (exit 8), a damaged trail an
    /// integrity failure (exit 7).
    @discardableResult
    func recordExchange(_ entry: AuditEntry, cache: (target: ExchangeTarget, token: SecureBytes, expiresAt: Int64)?) throws(VaultError) -> AuditEntry {
        let committed: AuditEntry
        do {
            committed = try write { db, keys in
                if let cache {
                    // Cache only if the profile is still the same one with the same secret
                    // versions (a concurrent rotate or remove wins).
                    let current = try ProfileRecord.fetchOne(db, key: cache.target.profile.id)
                    if let current, current.uid == Data(cache.target.profile.uid),
                       current.clientSecretVersion == cache.target.credentials.clientSecretVersion,
                       current.passwordVersion == cache.target.credentials.passwordVersion {
                        let nonce = Sodium.randomBytes(Sodium.aeadNonceBytes)
                        let ad = Self.tokenAD(vaultID: vaultID, profileUID: cache.target.profile.uid, environment: cache.target.environment,
                                              expiresAt: cache.expiresAt, clientSecretVersion: cache.target.credentials.clientSecretVersion,
                                              passwordVersion: cache.target.credentials.passwordVersion)
                        let ciphertext = try Sodium.seal(key: keys.tokenKey, nonce: nonce, plaintext: cache.token, additionalData: ad)
                        try TokenCacheRecord(profileID: cache.target.profile.id, environment: cache.target.environment.name,
                                             environmentUID: Data(cache.target.environment.uid), expiresAt: cache.expiresAt,
                                             clientSecretVersion: cache.target.credentials.clientSecretVersion,
                                             passwordVersion: cache.target.credentials.passwordVersion,
                                             nonce: Data(nonce), ciphertext: Data(ciphertext)).save(db)
                    }
                }
                return try AuditChain.append(entry, db: db, vaultID: vaultID, keys: keys.auditEpochKeys, signer: signer)
            }
        } catch {
            switch error {
            case .integrity: throw error
            default: throw .auditRefused(error.message)
            }
        }
        Trace.debug("audit record \(committed.seq) committed (\(committed.action), \(committed.outcome))")
        try checkRecordStillInPlace()
        return committed
    }

    /// Appends an audit record on its own (failed exchanges, `rotate --verify`).
    public func appendAudit(_ entry: AuditEntry) throws(VaultError) {
        try write { db, keys in try audit(entry, db, keys) }
    }

    /// Checks the whole audit chain (`vault audit verify`).
    public func verifyAudit() throws(VaultError) -> AuditChain.Verification {
        try read { db, keys in
            let members = try checkedMembers(db, keys: keys)
            return try AuditChain.verify(db: db, vaultID: vaultID, current: keys.auditEpochKeys,
                                         signatures: .init(signedFrom: header.signedFromSeq, members: members))
        }
    }
}

/// What one exchange is for, read and checked in one snapshot.
struct ExchangeTarget: Sendable {
    var profile: Profile
    var environment: Environment
    var tokenURL: String
    var credentials: Credentials
}
