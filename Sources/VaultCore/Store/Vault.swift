import Foundation
import GRDB

/// A vault opened without its passphrase: metadata reads only (`list`, `show`,
/// `history`, `audit`, `doctor`, `backup`). Unlock it for anything else.
public final class Vault: Sendable {
    let database: any VaultStore
    public let clock: any VaultClock

    init(database: any VaultStore, clock: any VaultClock) {
        self.database = database
        self.clock = clock
    }

    /// Creates a vault at `path` (never overwriting) and returns it unlocked, as its
    /// owner. Argon2id runs once. The owner's identity is made here and wrapped in the
    /// header under the passphrase; the keys reach it through its key slot (FORMAT.md §10).
    public static func initialise(at path: String, passphrase: SecureBytes, kdf: KDFParameters,
                                  detail: String, clock: any VaultClock = SystemClock()) throws(VaultError) -> UnlockedVault {
        guard passphrase.count > 0 else { throw .usage("an empty passphrase is not allowed") }
        guard kdf.meetsMinimum || (kdf == .testOnlyInsecure && KDFParameters.testOnlyInsecureKDFEnabled) else {
            throw .usage("KDF parameters weaker than 'interactive' are not allowed")
        }
        let keys = VaultKeys.generate()
        let owner = MemberIdentity.generate()
        let (header, _) = try VaultHeader.create(
            vaultID: Sodium.randomBytes(VaultHeader.vaultIDBytes), owner: owner, passphrase: passphrase, kdf: kdf,
            createdAt: clock.now().iso8601)
        let signer = AuditSigner(member: Labels.ownerMember, identity: owner)
        let database = try Stores.create(at: path) { db in
            try HeaderRecord(header).insert(db)
            try Self.insertOwner(owner, keys: keys, addedSeq: 1, vaultID: header.vaultID, createdAt: clock.now().iso8601, db: db)
            try AuditChain.append(
                AuditEntry(at: clock.now().unixMilliseconds, action: .initialise, outcome: .ok, detail: detail),
                db: db, vaultID: header.vaultID, keys: keys.auditEpochKeys, genesis: true, signer: signer)
        }
        return UnlockedVault(vault: Vault(database: database, clock: clock), header: header, keys: keys,
                             identity: owner, member: Labels.ownerMember)
    }

    /// The owner's member row and key slot (a new vault, or the format-2 to 3 step of an
    /// upgrade, whose tables have no signature columns yet: `signed` false; the format-4
    /// step signs them).
    static func insertOwner(_ owner: MemberIdentity, keys: VaultKeys, addedSeq: Int64, vaultID: [UInt8], createdAt: String,
                            db: StoreDB, signed: Bool = true) throws {
        var record = MemberCrypto.authenticated(
            MemberRecord(name: Labels.ownerMember, uid: Data(Sodium.randomBytes(16)), kind: "passphrase",
                         boxPublicKey: Data(owner.recipient.boxPublicKey), signPublicKey: Data(owner.recipient.signPublicKey),
                         addedSeq: addedSeq, removedSeq: nil, createdAt: createdAt, mac: Data()),
            vaultID: vaultID, key: keys.metadataKey, owner: owner)
        var slot = try MemberCrypto.sealSlot(keys: keys, for: record, vaultID: vaultID, owner: owner)
        if !signed {
            record.ownerSignature = nil
            slot.ownerSignature = nil
        }
        try record.insert(db)
        try slot.insert(db)
    }

    /// Opens the vault at `path`; exit 6 when there is none.
    public static func open(at path: String, clock: any VaultClock = SystemClock()) throws(VaultError) -> Vault {
        Vault(database: try Stores.open(at: path), clock: clock)
    }

    /// Opens the vault at `path` for metadata reads only (a file on one read-only
    /// connection: ``FileReader``); exit 6 when there is none.
    public static func openForReading(at path: String, clock: any VaultClock = SystemClock()) throws(VaultError) -> Vault {
        Vault(database: try Stores.openForReading(at: path), clock: clock)
    }

    /// The stored header (not yet validated).
    public func header() throws(VaultError) -> VaultHeader {
        guard let record = try database.read({ try HeaderRecord.fetchOne($0, key: 1) }) else {
            throw .integrity("the vault header is missing")
        }
        return record.header
    }

    /// The format version of the stored header (1 until the upgrade).
    public func formatVersion() throws(VaultError) -> UInt32 { try header().formatVersion }

    /// Checks the header and derives the keys; exit 3 on a wrong passphrase. A format-1, 2
    /// or 3 vault is upgraded to format 4 here, one transaction per step (FORMAT.md §9).
    public func unlock(passphrase: SecureBytes) throws(VaultError) -> UnlockedVault {
        var header = try header()
        try header.validate()
        Trace.debug("deriving the key-encryption key: argon2id \(header.kdf.presetName ?? "custom") (\(header.kdf))")
        let kek = try header.deriveKEK(passphrase: passphrase)
        if header.formatVersion < Labels.formatVersion {
            Trace.debug("upgrading the vault from format \(header.formatVersion) to format \(Labels.formatVersion)")
            try FormatUpgrade.run(vault: self, header: header, kek: kek)
            header = try self.header()
            try header.validate()
        }
        // Format 3: the owner's identity from the header, then its key slot.
        guard header.formatVersion == Labels.formatVersion else { throw .keysChanged }
        guard let owner = try header.unwrapOwner(kek: kek) else { throw .wrongPassphrase }
        Trace.debug("unlocked the owner's identity: format \(header.formatVersion), key epoch \(header.keyEpoch)")
        // The passphrase is right (the identity's AEAD opened): a slot that does not open
        // for it is damage, not a wrong passphrase (FORMAT.md §4.4, step 9).
        return try unlock(identity: owner, header: header, wrongIdentity: .integrity(
            "the passphrase is right, but the owner's key slot does not open: it was damaged or removed"))
    }

    /// Unlocks with a member identity (`--identity`, `VAULT_IDENTITY_FILE`, the default
    /// identity): its key slot is found by trying every slot. An identity without a slot
    /// is exit 3, like a wrong passphrase, and takes the same time as one whose slot
    /// does not open.
    public func unlock(identity: MemberIdentity) throws(VaultError) -> UnlockedVault {
        let header = try header()
        try header.validate()
        guard header.formatVersion == Labels.formatVersion else {
            let why = header.formatVersion < 3 ? "has no members yet" : "has no owner signatures on its members yet"
            throw .usage("this vault \(why) (format \(header.formatVersion)): the owner must unlock it once with the passphrase, which upgrades it to format \(Labels.formatVersion)",
                         hint: "the owner runs `vault upgrade`")
        }
        return try unlock(identity: identity, header: header, wrongIdentity: .wrongIdentitySlot)
    }

    private func unlock(identity: MemberIdentity, header: VaultHeader, wrongIdentity: VaultError) throws(VaultError) -> UnlockedVault {
        guard database.pendingMigrations.isEmpty else {
            throw .integrity("the vault header says format \(header.formatVersion) but the schema lacks \(database.pendingMigrations.joined(separator: ", "))")
        }
        // The header and the slots are read in one snapshot: a rekey committed between two
        // reads would pair a header of one epoch with slots of another. A header changed
        // since the caller read it (a rekey: new epoch) is taken as it now is, if it is
        // still the same vault in the same format.
        let found = try database.read { db -> (VaultHeader, (member: MemberRecord, keys: VaultKeys)?) in
            guard let current = try HeaderRecord.fetchOne(db, key: 1)?.header else { throw VaultError.integrity("the vault header is missing") }
            try current.validate()
            guard current.vaultID == header.vaultID, current.formatVersion == header.formatVersion else { throw VaultError.keysChanged }
            let opened = try MemberCrypto.openSlot(identity: identity, db: db, vaultID: current.vaultID, epoch: current.keyEpoch)
            if let opened {
                try AuditChain.checkNewestRecord(db: db, vaultID: current.vaultID, keys: opened.keys.auditEpochKeys, signedFrom: current.signedFromSeq)
            }
            return (current, opened)
        }
        guard let opened = found.1 else { throw wrongIdentity }
        Trace.debug("unlocked as member '\(opened.member.name)' (key epoch \(found.0.keyEpoch))")
        return UnlockedVault(vault: self, header: found.0, keys: opened.keys, identity: identity, member: opened.member.name)
    }

    // MARK: - Metadata reads (no passphrase)

    /// Members, current and removed (format 3 on; no passphrase, MACs not checked here).
    public func members() throws(VaultError) -> [Member] {
        guard hasMembers else { return [] }
        return try database.read { db in
            let slots = Set(try String.fetchAll(db, sql: "SELECT member FROM key_slot"))
            return try MemberRecord.fetchAll(db, orderBy: "added_seq, name").map {
                Member(name: $0.name, kind: $0.kind, recipient: $0.recipient.string, addedSeq: $0.addedSeq,
                       removedSeq: $0.removedSeq, createdAt: $0.createdAt, hasSlot: slots.contains($0.name))
            }
        }
    }

    /// Whether `recipient` is a current member with a key slot (public data, read without
    /// the passphrase and without checking MACs: it only chooses which key to try; the
    /// unlock checks everything).
    public func hasCurrentMember(_ recipient: Recipient) throws(VaultError) -> Bool {
        try members().contains { $0.removedSeq == nil && $0.hasSlot && $0.recipient == recipient.string }
    }

    public func profiles() throws(VaultError) -> [Profile] {
        try database.read { db in try ProfileRecord.fetchAll(db, orderBy: "name") }.map(\.profile)
    }

    public func profile(named name: String) throws(VaultError) -> Profile {
        let normalised = name.precomposedStringWithCanonicalMapping
        guard let record = try database.read({ try ProfileRecord.fetchOne($0, sql: "SELECT * FROM profile WHERE name = ?", arguments: [normalised]) }) else {
            throw .notFound("no profile named '\(name.sanitisedForDisplay(limit: 64))'")
        }
        return record.profile
    }

    /// `vault list --json`: one JSON object per profile, by name, as the store writes it
    /// (``StoreConnection/profileListing()``).
    public func profilesJSON() throws(VaultError) -> [String] {
        try database.read { db in try db.profileListing() }
    }

    /// A consistent copy of the vault file to a new file at `destination` (`vault backup`).
    public func backup(to destination: String) throws(VaultError) {
        try database.backup(to: destination)
    }

    /// Every stored version of every secret field, oldest first: metadata only.
    public func secretVersions(of profile: Profile) throws(VaultError) -> [SecretVersionInfo] {
        try database.read { db in
            try Row.fetchAll(db, sql: """
                SELECT field, version, created_at FROM secret_version WHERE profile_id = ? ORDER BY field, version
                """, arguments: [profile.id])
        }.compactMap { row in
            guard let field = SecretField(rawValue: row["field"]) else { return nil }
            return SecretVersionInfo(field: field, version: row["version"], createdAt: row["created_at"])
        }
    }

    /// Built-in environments then the user's, by name.
    public func environments() throws(VaultError) -> [Environment] {
        let stored = try database.read { db in try EnvironmentRecord.fetchAll(db, orderBy: "name") }
        return Environment.builtIns + stored.map {
            Environment(name: $0.name, tokenURL: $0.tokenURL, apiBase: $0.apiBase, builtIn: false, uid: [UInt8]($0.uid ?? Data()))
        }
    }

    /// Metadata of one environment for `vault env show` (no passphrase): which profiles use
    /// it as their default, and how many tokens are cached for it.
    public func environmentUsage(named name: String) throws(VaultError) -> (environment: Environment, createdAt: String?, profiles: [String], cachedTokens: Int) {
        let environment = try environment(named: name)
        return try database.read { db in
            let created = try String.fetchOne(db, sql: "SELECT created_at FROM environment WHERE name = ?", arguments: [name])
            let profiles = try String.fetchAll(db, sql: "SELECT name FROM profile WHERE environment = ? ORDER BY name", arguments: [name])
            let cached = try Int.fetchOne(db, sql: "SELECT count(*) FROM token_cache WHERE environment = ?", arguments: [name]) ?? 0
            return (environment, created, profiles, cached)
        }
    }

    /// Profile and environment names only, for shell completion (no passphrase, no checks
    /// beyond opening the file).
    /// Whether this process cannot write the vault (a file in a read-only place): it is
    /// read as it is, and every change, exchange and `--follow` is refused.
    public var isReadOnlyHere: Bool { database.isReadOnlyHere }

    /// Refuses, before anything is sent or changed, when ``isReadOnlyHere``.
    public func requireWritable() throws(VaultError) {
        if isReadOnlyHere { throw SQLiteFile.readOnlyRefusal(database.path) }
    }

    public func names() throws(VaultError) -> (profiles: [String], environments: [String]) {
        let profiles = try database.read { db in try String.fetchAll(db, sql: "SELECT name FROM profile ORDER BY name") }
        return (profiles, try environments().map(\.name))
    }

    public func environment(named name: String) throws(VaultError) -> Environment {
        guard let environment = try environments().first(where: { $0.name == name.precomposedStringWithCanonicalMapping }) else {
            throw .notFound("no environment named '\(name.sanitisedForDisplay(limit: 64))'")
        }
        return environment
    }

    /// Audit records matching `query`, newest first.
    public func audit(_ query: AuditQuery) throws(VaultError) -> [AuditEntry] {
        if query.member != nil, !hasMembers { return [] }
        return try database.read { db in try AuditChain.records(db, query).map { try $0.entry() } }
    }

    /// Audit records matching `query` as one-line JSON objects, oldest first, with their
    /// sequence numbers (`vault audit --jsonl`, `--follow`): the newest `limit` of them.
    public func auditJSONLines(_ query: AuditQuery) throws(VaultError) -> [(seq: Int64, json: String)] {
        try auditFollowStep(query, json: true).lines
    }

    /// Whether the store has format 3's member tables and columns (an older vault not yet
    /// unlocked has not).
    var hasMembers: Bool {
        guard let members = database.formatMigrations[3] else { return true }
        return !database.pendingMigrations.contains(members)
    }

    /// One step of `vault audit --follow`, in one read snapshot: the matching records
    /// (oldest first; as JSON lines or entries) and the newest sequence number in the
    /// trail, so the next step can start exactly after it with nothing missed.
    public func auditFollowStep(_ query: AuditQuery, json: Bool) throws(VaultError)
        -> (lines: [(seq: Int64, json: String)], entries: [AuditEntry], newest: Int64) {
        var query = query
        if query.member != nil, !hasMembers { query.afterSeq = Int64.max }
        return try database.read { db in
            let newest = try Int64.fetchOne(db, sql: "SELECT max(seq) FROM audit_record") ?? 0
            if json {
                let lines = try AuditChain.jsonRecords(db, query, withMember: hasMembers)
                return (Array(lines.reversed()), [], newest)
            }
            return ([], Array(try AuditChain.records(db, query).map { try $0.entry() }.reversed()), newest)
        }
    }

    /// The newest sequence number in the trail (0 when empty).
    public func newestAuditSeq() throws(VaultError) -> Int64 {
        try database.read { db in try Int64.fetchOne(db, sql: "SELECT max(seq) FROM audit_record") ?? 0 }
    }

    /// Audit records matching `query` as JSON objects, newest first (`vault audit --json`).
    public func auditJSON(_ query: AuditQuery) throws(VaultError) -> [String] {
        if query.member != nil, !hasMembers { return [] }
        return try database.read { db in
            try AuditChain.jsonRecords(db, query, withMember: hasMembers).map(\.json)
        }
    }
}

extension ProfileRecord {
    var profile: Profile {
        Profile(id: id ?? 0, uid: [UInt8](uid ?? Data()), name: name, clientID: clientID, username: username,
                grant: grantType, scope: scope, environment: environment,
                clientSecretVersion: clientSecretVersion ?? 0, passwordVersion: passwordVersion,
                createdAt: createdAt, updatedAt: updatedAt)
    }
}

/// A new profile's metadata (`vault add`).
/// What `vault edit` changes (nil: unchanged). `password` is needed only when the grant
/// becomes `password`.
public struct ProfileEdit: Sendable {
    public var clientID: String?
    public var username: String?
    public var grant: GrantType?
    public var scope: String?
    public var environment: String?
    public var password: SecureBytes?

    public init(clientID: String? = nil, username: String? = nil, grant: GrantType? = nil, scope: String? = nil,
                environment: String? = nil, password: SecureBytes? = nil) {
        self.clientID = clientID
        self.username = username
        self.grant = grant
        self.scope = scope
        self.environment = environment
        self.password = password
    }
}

public struct NewProfile: Sendable {
    public var name: String
    public var clientID: String
    public var username: String?
    public var grant: GrantType
    public var scope: String?
    public var environment: String

    public init(name: String, clientID: String, username: String?, grant: GrantType, scope: String?, environment: String) {
        self.name = name
        self.clientID = clientID
        self.username = username
        self.grant = grant
        self.scope = scope
        self.environment = environment
    }
}

/// A cached token that is still usable.
public struct CachedToken: Sendable {
    public var token: SecureBytes
    public var expiresAt: Int64
}
