import Foundation
import GRDB

/// Profiles and their sealed secret versions (FORMAT.md §3.3, §3.4, §5.1, §5.3), inside
/// one transaction.
struct Profiles {
    let tx: VaultTransaction

    /// Adds a profile (already validated) with version 1 of each secret.
    func add(_ new: NewProfile, name: String, secrets: SecretInput) throws -> Profile {
        if try Int.fetchOne(tx.db, sql: "SELECT count(*) FROM profile WHERE name = ?", arguments: [name]) ?? 0 > 0 {
            throw VaultError.failure("a profile named '\(name)' already exists", hint: "use `vault rotate \(name)` to change its secrets")
        }
        let stamp = tx.now.iso8601
        let uid = Sodium.randomBytes(16)
        var record = ProfileRecord(id: nil, uid: Data(uid), name: name, clientID: new.clientID, username: new.username,
                                   grantType: new.grant, scope: new.scope, environment: new.environment,
                                   clientSecretVersion: 1, passwordVersion: new.grant == .password ? 1 : nil,
                                   createdAt: stamp, updatedAt: stamp, mac: Data(count: 32))
        record.mac = Data(tx.profileMAC(record))
        try record.insertReturningGenerated(tx.db)
        let id = record.id!
        if let clientSecret = secrets.clientSecret {
            try tx.sealSecret(clientSecret, profileID: id, profileUID: uid, field: .clientSecret, version: 1, key: tx.keys.secretKey).insert(tx.db)
        }
        if new.grant == .password, let password = secrets.password {
            try tx.sealSecret(password, profileID: id, profileUID: uid, field: .password, version: 1, key: tx.keys.secretKey).insert(tx.db)
        }
        try tx.audit(tx.entry(.add, profile: name, environment: new.environment, detail: "grant=\(new.grant.rawValue)"))
        return record.profile
    }

    /// The profile named `name`, its MAC checked (exit 7 if edited).
    func verified(named name: String) throws -> ProfileRecord {
        let record = try tx.profileRecord(named: name)
        try tx.checkMAC(record)
        return record
    }

    /// What an exchange needs, read and checked in one snapshot: the profile and the
    /// environment (MACs checked), the token URL allowed to receive the secrets, the
    /// current secrets (versions checked against the profile MAC), and the audit head.
    func exchangeTarget(profile name: String, environment: String?, ownEnvironmentOnly: Bool = false) throws -> ExchangeTarget {
        let record = try verified(named: name)
        let environment = try tx.environment(named: environment ?? record.environment)
        if ownEnvironmentOnly, environment.name != record.environment {
            throw VaultError.usage("through the agent, profile '\(record.name.sanitisedForDisplay(limit: 64))' is exchanged only at its own environment "
                                   + "'\(record.environment.sanitisedForDisplay(limit: 64))', not '\(environment.name.sanitisedForDisplay(limit: 64))' "
                                   + "(a session never sends a profile's secrets to another token URL)",
                                   hint: "run with --no-agent to exchange there with the passphrase, or add a profile for that environment")
        }
        let tokenURL = try EndpointPolicy.validateTokenURL(environment.tokenURL)
        try tx.checkVersionSequence(record)
        try tx.checkAuditHead()
        return ExchangeTarget(profile: record.profile, environment: environment, tokenURL: tokenURL, credentials: try credentials(record))
    }

    /// The current version of each secret of `profile`, opened.
    func credentials(_ profile: ProfileRecord) throws -> Credentials {
        func current(_ field: SecretField, _ version: Int64) throws -> SecureBytes {
            guard let record = try SecretVersionRecord.fetchOne(tx.db, key: ["profile_id": profile.id, "field": field.rawValue, "version": version]) else {
                throw VaultError.integrity("profile '\(profile.name.sanitisedForDisplay(limit: 64))' has no sealed \(field.rawValue) version \(version)")
            }
            return try tx.openSecret(record, profile: profile, key: tx.keys.secretKey)
        }
        let clientSecretVersion = profile.clientSecretVersion ?? 0
        return Credentials(clientSecret: try current(.clientSecret, clientSecretVersion),
                           password: try profile.passwordVersion.map { try current(.password, $0) },
                           clientSecretVersion: clientSecretVersion, passwordVersion: profile.passwordVersion)
    }

    /// Every stored version of every secret of the profile, opened.
    func allSecrets(named name: String) throws -> [(SecretVersionInfo, SecureBytes)] {
        let record = try verified(named: name)
        try tx.checkVersionSequence(record)
        let rows = try SecretVersionRecord.fetchAll(tx.db, where: "profile_id", is: record.id, orderBy: "field, version")
        return try rows.map { row in
            (SecretVersionInfo(field: SecretField(rawValue: row.field) ?? .clientSecret, version: row.version, createdAt: row.createdAt),
             try tx.openSecret(row, profile: record, key: tx.keys.secretKey))
        }
    }

    /// Adds the next version of each of `updates` to `profile` and drops its cached tokens.
    func rotate(_ profile: Profile, updates: [(SecretField, SecureBytes)], detail: String?) throws -> [SecretVersionInfo] {
        var record = try tx.profileRecord(named: profile.name)
        guard record.uid == Data(profile.uid) else {
            throw VaultError.failure("profile '\(profile.name)' was removed and added again while this command ran; nothing was changed")
        }
        try tx.checkMAC(record)
        try tx.checkVersionSequence(record)
        let stamp = tx.now.iso8601
        let uid = [UInt8](record.uid ?? Data())
        var created: [SecretVersionInfo] = []
        for (field, secret) in updates {
            let next = (field == .clientSecret ? record.clientSecretVersion ?? 0 : record.passwordVersion ?? 0) + 1
            try tx.sealSecret(secret, profileID: record.id!, profileUID: uid, field: field, version: next, key: tx.keys.secretKey).insert(tx.db)
            if field == .clientSecret { record.clientSecretVersion = next } else { record.passwordVersion = next }
            created.append(SecretVersionInfo(field: field, version: next, createdAt: stamp))
        }
        record.updatedAt = stamp
        record.mac = Data(tx.profileMAC(record))
        try record.update(tx.db)
        try tx.db.execute(sql: "DELETE FROM token_cache WHERE profile_id = ?", arguments: [record.id])
        let fields = created.map { "\($0.field.rawValue)=v\($0.version)" }.joined(separator: ",")
        try tx.audit(tx.entry(.rotate, profile: record.name, environment: record.environment,
                              detail: [fields, detail].compactMap { $0 }.joined(separator: " ")))
        return created
    }

    /// Changes the profile's settings (`vault edit`), keeping its secrets and their history;
    /// drops its cached tokens (issued for the old settings). A profile that becomes a
    /// client-credentials one loses its username and password versions; one that becomes
    /// a password one gets `password` as version 1. The profile gets a new uid and every
    /// kept version is sealed again under it (FORMAT.md §3.4): a secret row or cached token
    /// from before the edit, put back by someone who can write the store, no longer opens.
    func edit(_ name: String, _ change: ProfileEdit) throws -> (Profile, [String]) {
        var record = try verified(named: name)
        try tx.checkVersionSequence(record)
        let before = record
        let uid = Sodium.randomBytes(16)
        if let environment = change.environment { record.environment = try tx.environment(named: environment).name }
        if let clientID = change.clientID { record.clientID = clientID }
        if let scope = change.scope { record.scope = scope }
        var passwordVersionsDropped = 0
        switch (record.grantType, change.grant ?? record.grantType) {
        case (.password, .clientCredentials):
            guard change.username == nil else { throw VaultError.usage("--username is only for the password grant") }
            record.grantType = .clientCredentials
            record.username = nil
            record.passwordVersion = nil
            if change.scope == nil, record.scope == nil { record.scope = TokenRequest.defaultScope }
            passwordVersionsDropped = try Int.fetchOne(tx.db, sql: "SELECT count(*) FROM secret_version WHERE profile_id = ? AND field = ?",
                                                       arguments: [record.id, SecretField.password.rawValue]) ?? 0
            try tx.db.execute(sql: "DELETE FROM secret_version WHERE profile_id = ? AND field = ?", arguments: [record.id, SecretField.password.rawValue])
        case (.clientCredentials, .password):
            guard let username = change.username else { throw VaultError.usage("the password grant needs --username") }
            guard let password = change.password, password.count > 0 else { throw VaultError.usage("the password grant needs a password") }
            record.grantType = .password
            record.username = username
            record.passwordVersion = 1
            try tx.sealSecret(password, profileID: record.id!, profileUID: uid, field: .password, version: 1,
                              key: tx.keys.secretKey).insert(tx.db)
        case (.clientCredentials, .clientCredentials):
            guard change.username == nil else { throw VaultError.usage("--username is only for the password grant") }
        case (.password, .password):
            if let username = change.username { record.username = username }
        }
        var changed: [String] = []
        if record.clientID != before.clientID { changed.append("client_id") }
        if record.username != before.username { changed.append("username") }
        if record.grantType != before.grantType { changed.append("grant_type") }
        if record.scope != before.scope { changed.append("scope") }
        if record.environment != before.environment { changed.append("environment") }
        guard !changed.isEmpty else { throw VaultError.usage("nothing changes: the profile already has these settings") }
        for row in try SecretVersionRecord.fetchAll(tx.db, where: "profile_id", is: record.id, orderBy: "field, version") {
            guard row.field != SecretField.password.rawValue || before.grantType == .password else { continue }  // sealed just above
            guard let field = SecretField(rawValue: row.field) else { throw VaultError.integrity("a sealed secret has an unknown field name") }
            var resealed = try tx.sealSecret(tx.openSecret(row, profile: before, key: tx.keys.secretKey), profileID: row.profileID,
                                             profileUID: uid, field: field, version: row.version, key: tx.keys.secretKey)
            resealed.createdAt = row.createdAt
            try resealed.update(tx.db)
        }
        record.uid = Data(uid)
        record.updatedAt = tx.now.iso8601
        record.mac = Data(tx.profileMAC(record))
        try record.update(tx.db)
        let dropped = try Int.fetchOne(tx.db, sql: "SELECT count(*) FROM token_cache WHERE profile_id = ?", arguments: [record.id]) ?? 0
        try tx.db.execute(sql: "DELETE FROM token_cache WHERE profile_id = ?", arguments: [record.id])
        var detail = "changed=\(changed.joined(separator: ",")) cached_tokens_dropped=\(dropped)"
        if passwordVersionsDropped > 0 { detail += " password_versions_dropped=\(passwordVersionsDropped)" }
        try tx.audit(tx.entry(.edit, profile: record.name, environment: record.environment, detail: detail))
        return (record.profile, changed)
    }

    /// Deletes the profile, every secret version and cached token; its audit records stay.
    /// A profile whose metadata fails its MAC can still be removed.
    func remove(named name: String) throws {
        let record = try tx.profileRecord(named: name)
        try tx.db.execute(sql: "DELETE FROM token_cache WHERE profile_id = ?", arguments: [record.id])
        try tx.db.execute(sql: "DELETE FROM secret_version WHERE profile_id = ?", arguments: [record.id])
        _ = try ProfileRecord.deleteOne(tx.db, key: record.id)
        try tx.audit(tx.entry(.remove, profile: record.name, environment: record.environment))
    }
}

/// What one exchange is for, read and checked in one snapshot.
struct ExchangeTarget: Sendable {
    var profile: Profile
    var environment: Environment
    var tokenURL: String
    var credentials: Credentials
}

extension UnlockedVault {
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
        return try write { try Profiles(tx: $0).add(new, name: name, secrets: secrets) }
    }

    /// The profile named `name`, with its metadata MAC checked (exit 7 if edited).
    public func verifiedProfile(named name: String) throws(VaultError) -> Profile {
        try read { try Profiles(tx: $0).verified(named: name).profile }
    }

    /// What an exchange needs (``Profiles/exchangeTarget(profile:environment:)``).
    func exchangeTarget(profile name: String, environment: String?, ownEnvironmentOnly: Bool = false) throws(VaultError) -> ExchangeTarget {
        try read { try Profiles(tx: $0).exchangeTarget(profile: name, environment: environment, ownEnvironmentOnly: ownEnvironmentOnly) }
    }

    /// Opens the current version of each secret of `profile` (tests, `rotate --verify`).
    public func credentials(for profile: Profile) throws(VaultError) -> Credentials {
        try exchangeTarget(profile: profile.name, environment: nil).credentials
    }

    /// Opens every stored version of every secret (tests, `rekey` checks).
    public func allSecrets(of profile: Profile) throws(VaultError) -> [(SecretVersionInfo, SecureBytes)] {
        try read { try Profiles(tx: $0).allSecrets(named: profile.name) }
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
        return try write { try Profiles(tx: $0).rotate(profile, updates: updates, detail: detail) }
    }

    /// Changes a profile's settings, keeping its secrets (`vault edit`); returns the
    /// profile and the names of the columns that changed.
    @discardableResult
    public func editProfile(named name: String, _ change: ProfileEdit) throws(VaultError) -> (profile: Profile, changed: [String]) {
        if let clientID = change.clientID { try NameRule.validateField(clientID, what: "client id") }
        if let username = change.username { try NameRule.validateField(username, what: "username") }
        if let scope = change.scope { try NameRule.validateField(scope, what: "scope") }
        return try write { try Profiles(tx: $0).edit(name, change) }
    }

    /// Deletes a profile, every secret version and cached token; audit records stay.
    public func removeProfile(named name: String) throws(VaultError) {
        try write { try Profiles(tx: $0).remove(named: name) }
    }
}
