/// Domain-separation labels and constants of format version 1 (FORMAT.md §2, §4).
/// They are part of the file format: never change one.
public enum Labels {
    public static let formatVersion: UInt32 = 1
    /// SQLite `PRAGMA application_id` of a vault file ("GBGV").
    public static let applicationID: Int32 = 0x4742_4756
    public static let kdfAlgorithm = "argon2id13"

    public static let headerDigest = "gbg-vault/v1 header"
    public static let wrapAD = "gbg-vault/v1 wrap"
    public static let secretAD = "gbg-vault/v1 secret"
    public static let tokenAD = "gbg-vault/v1 token"
    public static let profileMAC = "gbg-vault/v1 profile"
    public static let environmentMAC = "gbg-vault/v1 environment"
    public static let auditMAC = "gbg-vault/v1 audit"
    public static let auditHeadMAC = "gbg-vault/v1 audit-head"

    /// `crypto_kdf` contexts (8 bytes each) and subkey ids.
    public static let secretContext = "gbgvsecr"
    public static let tokenContext = "gbgvtokn"
    public static let metadataContext = "gbgvmeta"
    public static let auditContext = "gbgvaudt"
    public static let auditMACSubkeyID: UInt64 = 1
    public static let fingerprintSubkeyID: UInt64 = 2

    /// The table name bound into a secret's additional data.
    public static let secretTable = "secret_version"
}
