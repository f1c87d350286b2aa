import Foundation
import GRDB

/// What `vault verify` found: every problem, named, and what was checked.
public struct FullVerification: Sendable, Codable {
    public var problems: [String] = []
    public var profiles = 0
    public var environments = 0
    public var secretVersions = 0
    public var cachedTokens = 0
    public var auditRecords = 0
    public var keyEpoch: Int64 = 1

    public var isSound: Bool { problems.isEmpty }

    enum CodingKeys: String, CodingKey {
        case problems, profiles, environments, secretVersions = "secret_versions", cachedTokens = "cached_tokens"
        case auditRecords = "audit_records", keyEpoch = "key_epoch"
    }
}

extension UnlockedVault {
    /// Opens every secret version and cached token and checks every MAC, the version
    /// sequences, orphan rows, SQLite's own integrity and the audit chain, in one read
    /// snapshot (`vault verify`). Unlike the other operations it does not stop at the
    /// first problem: it names each one.
    public func verifyEverything() throws(VaultError) -> FullVerification {
        let sqliteProblems = try database.integrityProblems()
        var report = try read { tx -> FullVerification in
            let db = tx.db, keys = tx.keys
            try expectTrailExtendsSeen(db)
            var report = FullVerification()
            report.keyEpoch = keys.epoch
            func check(_ body: () throws -> Void) {
                do { try body() } catch let error as VaultError { report.problems.append(error.message) } catch {
                    report.problems.append(database.storageError(error).message)
                }
            }
            var environments: [String: Environment] = [:]
            for record in try EnvironmentRecord.fetchAll(db) {
                report.environments += 1
                check {
                    try tx.checkEnvironmentMAC(record)
                    environments[record.name] = Environment(name: record.name, tokenURL: record.tokenURL, apiBase: record.apiBase,
                                                            builtIn: false, uid: [UInt8](record.uid ?? Data()))
                }
            }
            for builtIn in Environment.builtIns { environments[builtIn.name] = builtIn }
            var profiles: [Int64: ProfileRecord] = [:]
            for record in try ProfileRecord.fetchAll(db) {
                report.profiles += 1
                let name = record.name.sanitisedForDisplay(limit: 64)
                check {
                    try tx.checkMAC(record)
                    profiles[record.id!] = record
                }
                check { try tx.checkVersionSequence(record) }
                if environments[record.environment] == nil, !Environment.builtIns.contains(where: { $0.name == record.environment }) {
                    report.problems.append("profile '\(name)' names environment '\(record.environment.sanitisedForDisplay(limit: 64))', which does not exist")
                }
            }
            for secret in try SecretVersionRecord.fetchAll(db) {
                report.secretVersions += 1
                guard let profile = profiles[secret.profileID] else {
                    if try ProfileRecord.fetchOne(db, key: secret.profileID) == nil {
                        report.problems.append("\(secret.field) version \(secret.version) belongs to no profile (row of profile #\(secret.profileID))")
                    }
                    continue
                }
                check { _ = try tx.openSecret(secret, profile: profile, key: keys.secretKey) }
            }
            for cached in try TokenCacheRecord.fetchAll(db) {
                report.cachedTokens += 1
                guard let profile = profiles[cached.profileID] else {
                    if try ProfileRecord.fetchOne(db, key: cached.profileID) == nil {
                        report.problems.append("a cached token belongs to no profile (row of profile #\(cached.profileID))")
                    }
                    continue
                }
                let name = profile.name.sanitisedForDisplay(limit: 64)
                guard let environment = environments[cached.environment], Data(environment.uid) == cached.environmentUID else {
                    report.problems.append("the cached token of profile '\(name)' is for an environment that no longer exists as it was")
                    continue
                }
                let ad = tx.tokenAD(profileUID: [UInt8](profile.uid ?? Data()), environment: environment, expiresAt: cached.expiresAt,
                                    clientSecretVersion: cached.clientSecretVersion, passwordVersion: cached.passwordVersion)
                do {
                    _ = try Sodium.open(key: keys.tokenKey, nonce: [UInt8](cached.nonce), ciphertext: [UInt8](cached.ciphertext), additionalData: ad)
                } catch {
                    report.problems.append("the cached token of profile '\(name)' for '\(environment.name.sanitisedForDisplay(limit: 64))' failed authentication")
                }
            }
            var members: [MemberRecord] = []
            check { members = try tx.checkedMembers() }
            check {
                let audit = try AuditChain.verify(db: db, vaultID: vaultID, current: keys.auditEpochKeys,
                                                  signatures: .init(signedFrom: tx.signedFromSeq, members: members))
                report.auditRecords = audit.recordsChecked
                if let failure = audit.firstFailure { report.problems.append("audit trail: \(failure.reason)") }
            }
            return report
        }
        report.problems.insert(contentsOf: sqliteProblems.map { "sqlite: \($0.sanitisedForDisplay(limit: 200))" }, at: 0)
        return report
    }
}
