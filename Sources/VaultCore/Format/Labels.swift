/// Domain-separation labels and constants of the file format (FORMAT.md §2, §4).
/// They are part of the file format: never change one. Format 2 gives every construction
/// whose input changed a new `gbg-vault/v2 …` label; the format-1 labels remain only to
/// read a format-1 vault once, while upgrading it (FORMAT.md §9).
public enum Labels {
    /// The format this build writes.
    public static let formatVersion: UInt32 = 4
    /// SQLite `PRAGMA application_id` of a vault file ("GBGV").
    public static let applicationID: Int32 = 0x4742_4756
    public static let kdfAlgorithm = "argon2id13"

    public static let headerDigest = "gbg-vault/v2 header"
    public static let wrapAD = "gbg-vault/v2 wrap"
    public static let secretAD = "gbg-vault/v2 secret"
    public static let tokenAD = "gbg-vault/v2 token"
    public static let profileMAC = "gbg-vault/v2 profile"
    public static let environmentMAC = "gbg-vault/v2 environment"
    public static let auditMAC = "gbg-vault/v2 audit"
    public static let auditHeadMAC = "gbg-vault/v2 audit-head"
    public static let retiredAuditKeyAD = "gbg-vault/v2 retired-audit-key"
    /// Member identities (FORMAT.md §10).
    public static let recipientChecksum = "gbg-vault/recipient"
    /// Format 3 (members, FORMAT.md §10): the header wraps the owner's identity.
    public static let headerDigestV3 = "gbg-vault/v3 header"
    public static let wrapADV3 = "gbg-vault/v3 wrap"
    public static let keySlot = "gbg-vault/v3 key-slot"
    public static let keySlotMAC = "gbg-vault/v3 key-slot-mac"
    public static let ownerSlot = "gbg-vault/v3 owner-slot"
    /// `crypto_kdf` context of the owner's endorsement key (from its X25519 secret key).
    public static let ownerContext = "gbgvownr"
    public static let memberMAC = "gbg-vault/v3 member"
    public static let auditSignature = "gbg-vault/v3 audit-signature"
    /// Format 4 (FORMAT.md §10.6): the owner signs every member row and every key slot.
    /// The header, wrap and digest keep their format-3 labels (`format_version` is in them).
    public static let memberSignature = "gbg-vault/v4 member-signature"
    public static let slotSignature = "gbg-vault/v4 key-slot-signature"
    /// The member of the passphrase slot.
    public static let ownerMember = "owner"
    public static let identityAD = "gbg-vault/identity"

    /// Format-1 labels (FORMAT.md §9), used only by the upgrade.
    public enum V1 {
        public static let headerDigest = "gbg-vault/v1 header"
        public static let wrapAD = "gbg-vault/v1 wrap"
        public static let secretAD = "gbg-vault/v1 secret"
        public static let profileMAC = "gbg-vault/v1 profile"
        public static let environmentMAC = "gbg-vault/v1 environment"
        public static let auditMAC = "gbg-vault/v1 audit"
        public static let auditHeadMAC = "gbg-vault/v1 audit-head"
        /// The table name format 1 bound into a secret's additional data.
        public static let secretTable = "secret_version"
    }

    /// `crypto_kdf` contexts (8 bytes each) and subkey ids.
    public static let secretContext = "gbgvsecr"
    public static let tokenContext = "gbgvtokn"
    public static let metadataContext = "gbgvmeta"
    public static let auditContext = "gbgvaudt"
    public static let auditMACSubkeyID: UInt64 = 1
    public static let fingerprintSubkeyID: UInt64 = 2
    /// Seals the audit key of the previous key epoch (format 2).
    public static let retiredKeySubkeyID: UInt64 = 3
}
