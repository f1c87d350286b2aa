import Foundation
import GRDB

// Record types, one per table (FORMAT.md §3). Column names are snake_case in SQL.

/// §3.1 The single vault header row.
struct HeaderRecord: Codable, FetchableRecord, PersistableRecord, StoreRecord {
    static let databaseTableName = "vault_header"
    static let keyColumns = ["id"]
    var id: Int64 = 1
    var formatVersion: Int64
    var vaultID: Data
    var kdfAlgorithm: String
    var kdfOpslimit: Int64
    var kdfMemlimit: Int64
    var kdfSalt: Data
    var keyNonce: Data
    var wrappedKeys: Data
    var headerDigest: Data
    var createdAt: String
    /// Format 2 (absent, so nil, in a format-1 file).
    var keyEpoch: Int64?
    /// Format 3 (absent before; nil values are not written, so older files still update).
    var signedFromSeq: Int64?

    enum CodingKeys: String, CodingKey {
        case id, formatVersion = "format_version", vaultID = "vault_id", kdfAlgorithm = "kdf_algorithm"
        case kdfOpslimit = "kdf_opslimit", kdfMemlimit = "kdf_memlimit", kdfSalt = "kdf_salt"
        case keyNonce = "key_nonce", wrappedKeys = "wrapped_keys", headerDigest = "header_digest"
        case createdAt = "created_at", keyEpoch = "key_epoch", signedFromSeq = "signed_from_seq"
    }

    /// Every column, but `key_epoch` and `signed_from_seq` only when set: an older file
    /// lacks those columns until its upgrade's migration adds them.
    func encode(to container: inout PersistenceContainer) throws {
        container["id"] = id
        container["format_version"] = formatVersion
        container["vault_id"] = vaultID
        container["kdf_algorithm"] = kdfAlgorithm
        container["kdf_opslimit"] = kdfOpslimit
        container["kdf_memlimit"] = kdfMemlimit
        container["kdf_salt"] = kdfSalt
        container["key_nonce"] = keyNonce
        container["wrapped_keys"] = wrappedKeys
        container["header_digest"] = headerDigest
        container["created_at"] = createdAt
        if let keyEpoch { container["key_epoch"] = keyEpoch }
        if let signedFromSeq { container["signed_from_seq"] = signedFromSeq }
    }

    init(_ header: VaultHeader) {
        formatVersion = Int64(header.formatVersion)
        vaultID = Data(header.vaultID)
        kdfAlgorithm = header.kdfAlgorithm
        kdfOpslimit = Int64(clamping: header.kdf.opslimit)
        kdfMemlimit = Int64(clamping: header.kdf.memlimit)
        kdfSalt = Data(header.salt)
        keyNonce = Data(header.keyNonce)
        wrappedKeys = Data(header.wrappedKeys)
        headerDigest = Data(header.headerDigest)
        createdAt = header.createdAt
        keyEpoch = header.formatVersion >= 2 ? header.keyEpoch : nil
        signedFromSeq = header.formatVersion >= 3 ? header.signedFromSeq : nil
    }

    var header: VaultHeader {
        VaultHeader(
            formatVersion: UInt32(clamping: formatVersion), vaultID: [UInt8](vaultID), kdfAlgorithm: kdfAlgorithm,
            kdf: KDFParameters(opslimit: UInt64(clamping: kdfOpslimit), memlimit: UInt64(clamping: kdfMemlimit)),
            salt: [UInt8](kdfSalt), keyNonce: [UInt8](keyNonce), wrappedKeys: [UInt8](wrappedKeys),
            headerDigest: [UInt8](headerDigest), createdAt: createdAt, keyEpoch: keyEpoch ?? 1, signedFromSeq: signedFromSeq ?? 0)
    }
}

/// §3.2 A user-defined environment.
struct EnvironmentRecord: Codable, FetchableRecord, PersistableRecord, StoreRecord {
    static let databaseTableName = "environment"
    static let keyColumns = ["name"]
    var name: String
    /// Optional only so that a format-1 file can be listed before its upgrade.
    var uid: Data?
    var tokenURL: String
    var apiBase: String?
    var createdAt: String
    var mac: Data

    enum CodingKeys: String, CodingKey {
        case name, uid, tokenURL = "token_url", apiBase = "api_base", createdAt = "created_at", mac
    }
}

/// §3.3 A profile's metadata.
struct ProfileRecord: Codable, FetchableRecord, MutablePersistableRecord, StoreRecord {
    static let databaseTableName = "profile"
    static let keyColumns = ["id"]
    var id: Int64?
    /// Optional only so that a format-1 file can be listed before its upgrade.
    var uid: Data?
    var name: String
    var clientID: String
    var username: String?
    var grantType: GrantType
    var scope: String?
    var environment: String
    var clientSecretVersion: Int64?
    var passwordVersion: Int64?
    var createdAt: String
    var updatedAt: String
    var mac: Data

    enum CodingKeys: String, CodingKey {
        case id, uid, name, clientID = "client_id", username, grantType = "grant_type", scope, environment
        case clientSecretVersion = "client_secret_version", passwordVersion = "password_version"
        case createdAt = "created_at", updatedAt = "updated_at", mac
    }

    enum Columns {
        static let name = Column(CodingKeys.name)
    }

    mutating func didInsert(_ inserted: InsertionSuccess) {
        id = inserted.rowID
    }

    static let generatedColumn: String? = "id"

    mutating func storeDidInsert(generated: Int64) {
        id = generated
    }
}

/// §3.4 One sealed version of one secret field.
struct SecretVersionRecord: Codable, FetchableRecord, PersistableRecord, StoreRecord {
    static let databaseTableName = "secret_version"
    static let keyColumns = ["profile_id", "field", "version"]
    var profileID: Int64
    var field: String
    var version: Int64
    var nonce: Data
    var ciphertext: Data
    var createdAt: String

    enum CodingKeys: String, CodingKey {
        case profileID = "profile_id", field, version, nonce, ciphertext, createdAt = "created_at"
    }

    enum Columns {
        static let profileID = Column(CodingKeys.profileID)
        static let field = Column(CodingKeys.field)
        static let version = Column(CodingKeys.version)
    }
}

/// §3.5 A sealed cached token.
struct TokenCacheRecord: Codable, FetchableRecord, PersistableRecord, StoreRecord {
    static let databaseTableName = "token_cache"
    static let keyColumns = ["profile_id", "environment"]
    var profileID: Int64
    var environment: String
    var environmentUID: Data
    var expiresAt: Int64
    var clientSecretVersion: Int64
    var passwordVersion: Int64?
    var nonce: Data
    var ciphertext: Data

    enum CodingKeys: String, CodingKey {
        case profileID = "profile_id", environment, environmentUID = "environment_uid", expiresAt = "expires_at"
        case clientSecretVersion = "client_secret_version", passwordVersion = "password_version"
        case nonce, ciphertext
    }
}

/// §3.6 One audit record, as stored.
struct AuditRow: Codable, FetchableRecord, PersistableRecord, StoreRecord {
    static let databaseTableName = "audit_record"
    static let keyColumns = ["seq"]
    var seq: Int64
    var at: Int64
    var action: String
    var profile: String?
    var environment: String?
    var tokenURL: String?
    var grantType: String?
    var outcome: String
    var httpStatus: Int64?
    var oauthError: String?
    var attempts: Int64?
    var durationMs: Int64?
    var tokenType: String?
    var expiresIn: Int64?
    var expiresAt: Int64?
    var requestID: String?
    var tokenFingerprint: String?
    var detail: String?
    /// Format 2: the key epoch whose audit key MACs this record (absent in format 1).
    var keyEpoch: Int64?
    /// Format 2: on the first record of an epoch, its MAC under the previous epoch's key.
    var previousKeyMAC: Data?
    var mac: Data
    /// Format 3: the member who caused the record and its Ed25519 signature (§6.7).
    var member: String?
    var signature: Data?

    enum CodingKeys: String, CodingKey {
        case seq, at, action, profile, environment, tokenURL = "token_url", grantType = "grant_type", outcome
        case httpStatus = "http_status", oauthError = "oauth_error", attempts, durationMs = "duration_ms"
        case tokenType = "token_type", expiresIn = "expires_in", expiresAt = "expires_at"
        case requestID = "request_id", tokenFingerprint = "token_fingerprint", detail
        case keyEpoch = "key_epoch", previousKeyMAC = "previous_key_mac", mac, member, signature
    }

    /// Every column, but `member` and `signature` only when set: records written while a
    /// format-1 vault is upgraded come before the columns exist.
    func encode(to container: inout PersistenceContainer) throws {
        container["seq"] = seq
        container["at"] = at
        container["action"] = action
        container["profile"] = profile
        container["environment"] = environment
        container["token_url"] = tokenURL
        container["grant_type"] = grantType
        container["outcome"] = outcome
        container["http_status"] = httpStatus
        container["oauth_error"] = oauthError
        container["attempts"] = attempts
        container["duration_ms"] = durationMs
        container["token_type"] = tokenType
        container["expires_in"] = expiresIn
        container["expires_at"] = expiresAt
        container["request_id"] = requestID
        container["token_fingerprint"] = tokenFingerprint
        container["detail"] = detail
        if let keyEpoch { container["key_epoch"] = keyEpoch }
        if let previousKeyMAC { container["previous_key_mac"] = previousKeyMAC }
        container["mac"] = mac
        if let member { container["member"] = member }
        if let signature { container["signature"] = signature }
    }
}

/// §3.7 The audit chain head.
struct AuditHeadRecord: Codable, FetchableRecord, PersistableRecord, StoreRecord {
    static let databaseTableName = "audit_head"
    static let keyColumns = ["id"]
    var id: Int64 = 1
    var seq: Int64
    var keyEpoch: Int64
    var lastMAC: Data
    var mac: Data

    enum CodingKeys: String, CodingKey {
        case id, seq, keyEpoch = "key_epoch", lastMAC = "last_mac", mac
    }
}

/// §3.8 The audit key of an earlier key epoch, sealed under the next epoch's audit key.
struct RetiredAuditKeyRecord: Codable, FetchableRecord, PersistableRecord, StoreRecord {
    static let databaseTableName = "retired_audit_key"
    static let keyColumns = ["key_epoch"]
    var keyEpoch: Int64
    var nonce: Data
    var sealed: Data

    enum CodingKeys: String, CodingKey {
        case keyEpoch = "key_epoch", nonce, sealed
    }
}

/// Stored as its raw value (`password`, `client_credentials`); any other text in the
/// column fails to decode (an integrity failure, exit 7).
extension GrantType: DatabaseValueConvertible {}
