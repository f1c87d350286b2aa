import Foundation
import GRDB

/// A vault with its keys: every change and every use of a secret goes through here.
/// Each operation is one immediate transaction that also appends its audit record, so a
/// change and its record are committed together or not at all.
public final class UnlockedVault: Sendable {
    public let vault: Vault
    public let header: VaultHeader
    let keys: VaultKeys
    private let kek: SecureBytes

    init(vault: Vault, header: VaultHeader, keys: VaultKeys, kek: SecureBytes) {
        self.vault = vault
        self.header = header
        self.keys = keys
        self.kek = kek
    }

    var vaultID: [UInt8] { header.vaultID }
    var database: VaultDatabase { vault.database }
    private var now: Date { vault.clock.now() }

    /// A keyed fingerprint of a token for the audit trail.
    public func fingerprint(token: SecureBytes) -> String { keys.fingerprint(token: token) }

    // MARK: - Sealing (FORMAT.md §5)

    static func secretAD(vaultID: [UInt8], profileID: Int64, field: SecretField, version: Int64) -> [UInt8] {
        var e = CanonicalEncoder(label: Labels.secretAD)
        e.data(vaultID)
        e.str(Labels.secretTable)
        e.i64(profileID)
        e.str(field.rawValue)
        e.i64(version)
        return e.bytes
    }

    static func tokenAD(vaultID: [UInt8], profileID: Int64, environment: String, expiresAt: Int64,
                        clientSecretVersion: Int64, passwordVersion: Int64?) -> [UInt8] {
        var e = CanonicalEncoder(label: Labels.tokenAD)
        e.data(vaultID)
        e.i64(profileID)
        e.str(environment)
        e.i64(expiresAt)
        e.i64(clientSecretVersion)
        e.optionalI64(passwordVersion)
        return e.bytes
    }

    static func profileMAC(_ r: ProfileRecord, id: Int64, vaultID: [UInt8], key: SecureBytes) -> [UInt8] {
        var e = CanonicalEncoder(label: Labels.profileMAC)
        e.data(vaultID)
        e.i64(id)
        e.str(r.name)
        e.str(r.clientID)
        e.optionalStr(r.username)
        e.str(r.grantType)
        e.optionalStr(r.scope)
        e.str(r.environment)
        return Sodium.blake2b(e.bytes, key: key, length: 32)
    }

    static func environmentMAC(name: String, tokenURL: String, apiBase: String?, vaultID: [UInt8], key: SecureBytes) -> [UInt8] {
        var e = CanonicalEncoder(label: Labels.environmentMAC)
        e.data(vaultID)
        e.str(name)
        e.str(tokenURL)
        e.optionalStr(apiBase)
        return Sodium.blake2b(e.bytes, key: key, length: 32)
    }

    private func sealSecret(_ secret: SecureBytes, profileID: Int64, field: SecretField, version: Int64, key: SecureBytes) throws -> SecretVersionRecord {
        let nonce = Sodium.randomBytes(Sodium.aeadNonceBytes)
        let ad = Self.secretAD(vaultID: vaultID, profileID: profileID, field: field, version: version)
        let ciphertext = try Sodium.seal(key: key, nonce: nonce, plaintext: secret, additionalData: ad)
        return SecretVersionRecord(profileID: profileID, field: field.rawValue, version: version,
                                   nonce: Data(nonce), ciphertext: Data(ciphertext), createdAt: now.iso8601)
    }

    private func openSecret(_ record: SecretVersionRecord, key: SecureBytes) throws(VaultError) -> SecureBytes {
        guard let field = SecretField(rawValue: record.field) else {
            throw .integrity("a sealed secret has an unknown field name")
        }
        let ad = Self.secretAD(vaultID: vaultID, profileID: record.profileID, field: field, version: record.version)
        do {
            return try Sodium.open(key: key, nonce: [UInt8](record.nonce), ciphertext: [UInt8](record.ciphertext), additionalData: ad)
        } catch {
            throw .integrity("sealed \(field.rawValue) version \(record.version) of profile #\(record.profileID) failed authentication (tampered, damaged, or moved from another row)")
        }
    }

    private func audit(_ entry: AuditEntry, _ db: Database) throws {
        try AuditChain.append(entry, db: db, vaultID: vaultID, key: keys.auditMACKey)
    }

    private func entry(_ action: String, outcome: String = "ok", profile: String? = nil, environment: String? = nil, detail: String? = nil) -> AuditEntry {
        AuditEntry(at: now.unixMilliseconds, action: action, outcome: outcome, profile: profile, environment: environment, detail: detail)
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
        return try database.write { db in
            if try ProfileRecord.filter(ProfileRecord.Columns.name == name).fetchCount(db) > 0 {
                throw VaultError.failure("a profile named '\(name)' already exists", hint: "use `vault rotate \(name)` to change its secrets")
            }
            var record = ProfileRecord(id: nil, name: name, clientID: new.clientID, username: new.username,
                                       grantType: new.grant.rawValue, scope: new.scope, environment: new.environment,
                                       createdAt: stamp, updatedAt: stamp, mac: Data(count: 32))
            try record.insert(db)
            let id = record.id!
            record.mac = Data(Self.profileMAC(record, id: id, vaultID: vaultID, key: keys.metadataKey))
            try record.update(db)
            try sealSecret(clientSecret, profileID: id, field: .clientSecret, version: 1, key: keys.secretKey).insert(db)
            if new.grant == .password, let password = secrets.password {
                try sealSecret(password, profileID: id, field: .password, version: 1, key: keys.secretKey).insert(db)
            }
            try audit(entry("add", profile: name, environment: new.environment,
                            detail: "grant=\(new.grant.rawValue)"), db)
            return record.profile
        }
    }

    /// The profile named `name`, with its metadata MAC checked (exit 7 if edited).
    public func verifiedProfile(named name: String) throws(VaultError) -> Profile {
        let normalised = name.precomposedStringWithCanonicalMapping
        guard let record = try database.read({ try ProfileRecord.filter(ProfileRecord.Columns.name == normalised).fetchOne($0) }) else {
            throw .notFound("no profile named '\(name.sanitisedForDisplay(limit: 64))'")
        }
        try checkMAC(record)
        return record.profile
    }

    private func checkMAC(_ record: ProfileRecord) throws(VaultError) {
        let expected = Self.profileMAC(record, id: record.id ?? 0, vaultID: vaultID, key: keys.metadataKey)
        guard Sodium.constantTimeEqual(expected, [UInt8](record.mac)), GrantType(rawValue: record.grantType) != nil else {
            throw .integrity("the metadata of profile '\(record.name.sanitisedForDisplay(limit: 64))' was modified outside vault (MAC mismatch)")
        }
    }

    /// Opens the newest version of each secret of `profile` in one snapshot.
    public func credentials(for profile: Profile) throws(VaultError) -> Credentials {
        let records = try database.read { db in
            try SecretVersionRecord.fetchAll(db, sql: """
                SELECT s.* FROM secret_version s
                WHERE s.profile_id = ? AND s.version = (
                    SELECT max(version) FROM secret_version WHERE profile_id = s.profile_id AND field = s.field)
                """, arguments: [profile.id])
        }
        guard let secretRecord = records.first(where: { $0.field == SecretField.clientSecret.rawValue }) else {
            throw .integrity("profile '\(profile.name)' has no sealed client secret")
        }
        let passwordRecord = records.first(where: { $0.field == SecretField.password.rawValue })
        if profile.grant == .password, passwordRecord == nil {
            throw .integrity("profile '\(profile.name)' has no sealed password")
        }
        return Credentials(
            clientSecret: try openSecret(secretRecord, key: keys.secretKey),
            password: try passwordRecord.map { (r) throws(VaultError) in try openSecret(r, key: keys.secretKey) },
            clientSecretVersion: secretRecord.version,
            passwordVersion: passwordRecord?.version)
    }

    /// Opens every stored version of every secret (tests, `rekey` checks).
    public func allSecrets(of profile: Profile) throws(VaultError) -> [(SecretVersionInfo, SecureBytes)] {
        let records = try database.read { db in
            try SecretVersionRecord.filter(SecretVersionRecord.Columns.profileID == profile.id)
                .order(SecretVersionRecord.Columns.field, SecretVersionRecord.Columns.version).fetchAll(db)
        }
        var result: [(SecretVersionInfo, SecureBytes)] = []
        for record in records {
            let info = SecretVersionInfo(field: SecretField(rawValue: record.field) ?? .clientSecret, version: record.version, createdAt: record.createdAt)
            result.append((info, try openSecret(record, key: keys.secretKey)))
        }
        return result
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
        return try database.write { db in
            var created: [SecretVersionInfo] = []
            for (field, secret) in updates {
                let current = try Int64.fetchOne(db, sql: "SELECT max(version) FROM secret_version WHERE profile_id = ? AND field = ?",
                                                 arguments: [profile.id, field.rawValue]) ?? 0
                let record = try sealSecret(secret, profileID: profile.id, field: field, version: current + 1, key: keys.secretKey)
                try record.insert(db)
                created.append(SecretVersionInfo(field: field, version: current + 1, createdAt: stamp))
            }
            try db.execute(sql: "UPDATE profile SET updated_at = ? WHERE id = ?", arguments: [stamp, profile.id])
            try db.execute(sql: "DELETE FROM token_cache WHERE profile_id = ?", arguments: [profile.id])
            let fields = created.map { "\($0.field.rawValue)=v\($0.version)" }.joined(separator: ",")
            try audit(entry("rotate", profile: profile.name, environment: profile.environment,
                            detail: [fields, detail].compactMap { $0 }.joined(separator: " ")), db)
            return created
        }
    }

    /// Deletes a profile, every secret version and cached token; audit records stay.
    public func removeProfile(named name: String) throws(VaultError) {
        let profile = try vault.profile(named: name)
        try database.write { db in
            try db.execute(sql: "DELETE FROM token_cache WHERE profile_id = ?", arguments: [profile.id])
            try db.execute(sql: "DELETE FROM secret_version WHERE profile_id = ?", arguments: [profile.id])
            _ = try ProfileRecord.deleteOne(db, key: profile.id)
            try audit(entry("remove", profile: profile.name, environment: profile.environment), db)
        }
    }

    // MARK: - Passphrase and keys

    /// Rewraps the keys under a new passphrase (`vault passwd`). Secret ciphertexts are untouched.
    public func changePassphrase(to newPassphrase: SecureBytes, kdf: KDFParameters?) throws(VaultError) {
        guard newPassphrase.count > 0 else { throw .usage("an empty passphrase is not allowed") }
        let parameters = kdf ?? header.kdf
        guard parameters.meetsMinimum || (parameters == .testOnlyInsecure && KDFParameters.testOnlyInsecureKDFEnabled) else {
            throw .usage("KDF parameters weaker than 'interactive' are not allowed")
        }
        var updated = header
        try updated.wrap(keys: keys, passphrase: newPassphrase, kdf: parameters)
        try database.write { db in
            try expectHeaderUnchanged(db)
            try HeaderRecord(updated).update(db)
            try audit(entry("passwd", detail: parameters.presetName.map { "kdf=\($0)" }), db)
        }
    }

    /// A new data key: every secret version re-sealed, metadata re-authenticated, token
    /// cache dropped, all in one transaction (`vault rekey`). Returns the number of
    /// secret versions re-sealed.
    @discardableResult
    public func rekey() throws(VaultError) -> Int {
        let newKeys = keys.withNewDataKey()
        var updated = header
        try updated.rewrap(keys: newKeys, kek: kek)
        return try database.write { db in
            try expectHeaderUnchanged(db)
            var count = 0
            for var profile in try ProfileRecord.fetchAll(db) {
                try checkMAC(profile)
                profile.mac = Data(Self.profileMAC(profile, id: profile.id!, vaultID: vaultID, key: newKeys.metadataKey))
                try profile.update(db)
            }
            for record in try SecretVersionRecord.fetchAll(db) {
                let secret = try openSecret(record, key: keys.secretKey)
                var resealed = try sealSecret(secret, profileID: record.profileID, field: SecretField(rawValue: record.field)!,
                                              version: record.version, key: newKeys.secretKey)
                resealed.createdAt = record.createdAt
                try resealed.update(db)
                count += 1
            }
            for var environment in try EnvironmentRecord.fetchAll(db) {
                try checkEnvironmentMAC(environment)
                environment.mac = Data(Self.environmentMAC(name: environment.name, tokenURL: environment.tokenURL,
                                                           apiBase: environment.apiBase, vaultID: vaultID, key: newKeys.metadataKey))
                try environment.update(db)
            }
            try db.execute(sql: "DELETE FROM token_cache")
            try HeaderRecord(updated).update(db)
            try audit(entry("rekey", detail: "resealed=\(count)"), db)
            return count
        }
    }

    /// Refuses to overwrite a header another process changed since this one unlocked.
    private func expectHeaderUnchanged(_ db: Database) throws {
        guard let stored = try HeaderRecord.fetchOne(db, key: 1), stored.header == header else {
            throw VaultError.failure("the vault's keys were changed by another process while this one ran; nothing was changed",
                                     hint: "run the command again")
        }
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
        try database.write { db in
            if try EnvironmentRecord.fetchOne(db, key: name) != nil {
                throw VaultError.failure("an environment named '\(name)' already exists",
                                         hint: "remove it first with `vault env remove \(name)`")
            }
            try EnvironmentRecord(name: name, tokenURL: tokenURL, apiBase: apiBase, createdAt: now.iso8601,
                                  mac: Data(Self.environmentMAC(name: name, tokenURL: tokenURL, apiBase: apiBase,
                                                                vaultID: vaultID, key: keys.metadataKey))).insert(db)
            try audit(AuditEntry(at: now.unixMilliseconds, action: "env-add", outcome: "ok", environment: name, tokenURL: tokenURL), db)
        }
    }

    /// Removes a user environment that no profile uses as its default.
    public func removeEnvironment(name: String) throws(VaultError) {
        guard !Environment.builtIns.contains(where: { $0.name == name }) else {
            throw .usage("'\(name)' is a built-in environment and cannot be removed")
        }
        try database.write { db in
            guard try EnvironmentRecord.fetchOne(db, key: name) != nil else {
                throw VaultError.notFound("no environment named '\(name.sanitisedForDisplay(limit: 64))'")
            }
            let users = try String.fetchAll(db, sql: "SELECT name FROM profile WHERE environment = ? ORDER BY name", arguments: [name])
            guard users.isEmpty else {
                throw VaultError.failure("environment '\(name)' is the default of \(users.count) profile(s): \(users.prefix(5).joined(separator: ", "))",
                                         hint: "remove those profiles or add them again with another --env")
            }
            _ = try EnvironmentRecord.deleteOne(db, key: name)
            try audit(entry("env-remove", environment: name), db)
        }
    }

    /// An environment with its MAC checked, so an edited token URL never receives secrets.
    public func verifiedEnvironment(named name: String) throws(VaultError) -> Environment {
        if let builtIn = Environment.builtIns.first(where: { $0.name == name }) { return builtIn }
        guard let record = try database.read({ try EnvironmentRecord.fetchOne($0, key: name) }) else {
            throw .notFound("no environment named '\(name.sanitisedForDisplay(limit: 64))'")
        }
        try checkEnvironmentMAC(record)
        return Environment(name: record.name, tokenURL: record.tokenURL, apiBase: record.apiBase, builtIn: false)
    }

    private func checkEnvironmentMAC(_ record: EnvironmentRecord) throws(VaultError) {
        let expected = Self.environmentMAC(name: record.name, tokenURL: record.tokenURL, apiBase: record.apiBase,
                                           vaultID: vaultID, key: keys.metadataKey)
        guard Sodium.constantTimeEqual(expected, [UInt8](record.mac)) else {
            throw .integrity("environment '\(record.name.sanitisedForDisplay(limit: 64))' was modified outside vault (MAC mismatch)")
        }
    }

    // MARK: - Token cache and exchange records

    /// A cached token for `profile` in `environment` with more than `minTTL` seconds left,
    /// sealed under the current secret versions; nil otherwise.
    public func cachedToken(profile: Profile, environment: String, credentials: Credentials, minTTL: Int64) throws(VaultError) -> CachedToken? {
        guard let record = try database.read({
            try TokenCacheRecord.fetchOne($0, key: ["profile_id": profile.id, "environment": environment])
        }) else { return nil }
        guard record.clientSecretVersion == credentials.clientSecretVersion,
              record.passwordVersion == credentials.passwordVersion,
              record.expiresAt - minTTL > Int64(now.timeIntervalSince1970)
        else { return nil }
        let ad = Self.tokenAD(vaultID: vaultID, profileID: profile.id, environment: environment, expiresAt: record.expiresAt,
                              clientSecretVersion: record.clientSecretVersion, passwordVersion: record.passwordVersion)
        do {
            let token = try Sodium.open(key: keys.tokenKey, nonce: [UInt8](record.nonce), ciphertext: [UInt8](record.ciphertext), additionalData: ad)
            return CachedToken(token: token, expiresAt: record.expiresAt)
        } catch {
            throw .integrity("the cached token of profile '\(profile.name)' failed authentication")
        }
    }

    /// Commits the audit record of an exchange (and, for a fresh token, its sealed cache
    /// entry) in one transaction. Any failure here means the token must not be released:
    /// it is reported as ``VaultError/auditRefused(_:)`` (exit 8).
    @discardableResult
    public func recordExchange(_ entry: AuditEntry, cache: (profile: Profile, token: SecureBytes, expiresAt: Int64, credentials: Credentials)?) throws(VaultError) -> AuditEntry {
        let committed = try commitExchange(entry, cache: cache)
        // A record committed to a file that was removed or replaced meanwhile is lost to
        // the audit trail: withhold the token.
        guard database.isStillInPlace else {
            throw .auditRefused("the vault file at \(database.path) was removed or replaced while vault ran")
        }
        return committed
    }

    private func commitExchange(_ entry: AuditEntry, cache: (profile: Profile, token: SecureBytes, expiresAt: Int64, credentials: Credentials)?) throws(VaultError) -> AuditEntry {
        do {
            return try database.write { db in
                if let cache {
                    let nonce = Sodium.randomBytes(Sodium.aeadNonceBytes)
                    let ad = Self.tokenAD(vaultID: vaultID, profileID: cache.profile.id, environment: entry.environment ?? "",
                                          expiresAt: cache.expiresAt, clientSecretVersion: cache.credentials.clientSecretVersion,
                                          passwordVersion: cache.credentials.passwordVersion)
                    // Cache only if the secrets used are still the newest (a concurrent rotate wins).
                    let newest = try Row.fetchAll(db, sql: "SELECT field, max(version) AS v FROM secret_version WHERE profile_id = ? GROUP BY field",
                                                  arguments: [cache.profile.id])
                    let current = Dictionary(uniqueKeysWithValues: newest.map { ($0["field"] as String, $0["v"] as Int64) })
                    if current[SecretField.clientSecret.rawValue] == cache.credentials.clientSecretVersion,
                       current[SecretField.password.rawValue] == cache.credentials.passwordVersion {
                        let ciphertext = try Sodium.seal(key: keys.tokenKey, nonce: nonce, plaintext: cache.token, additionalData: ad)
                        try TokenCacheRecord(profileID: cache.profile.id, environment: entry.environment ?? "", expiresAt: cache.expiresAt,
                                             clientSecretVersion: cache.credentials.clientSecretVersion,
                                             passwordVersion: cache.credentials.passwordVersion,
                                             nonce: Data(nonce), ciphertext: Data(ciphertext)).save(db)
                    }
                }
                return try AuditChain.append(entry, db: db, vaultID: vaultID, key: keys.auditMACKey)
            }
        } catch {
            throw .auditRefused(error.message)
        }
    }

    /// Appends an audit record on its own (failed exchanges, `exec`).
    public func appendAudit(_ entry: AuditEntry) throws(VaultError) {
        try database.write { db in try audit(entry, db) }
    }

    /// Checks the whole audit chain (`vault audit verify`).
    public func verifyAudit() throws(VaultError) -> AuditChain.Verification {
        try database.read { db in try AuditChain.verify(db: db, vaultID: vaultID, key: keys.auditMACKey) }
    }
}
