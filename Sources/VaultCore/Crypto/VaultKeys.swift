/// The unlocked key material of a vault (FORMAT.md §4.2).
///
/// A random 32-byte *data key* seals secrets and cached tokens and authenticates
/// metadata; a random 32-byte *audit key* authenticates the audit trail. Both are wrapped
/// together under the passphrase's key-encryption key. `passwd` rewraps them; `rekey`
/// replaces both and starts a new key epoch (the old audit key is kept sealed under the
/// new one, so the whole chain still verifies).
public final class VaultKeys: Sendable {
    public let dataKey: SecureBytes
    public let auditKey: SecureBytes
    /// The key epoch these keys belong to (FORMAT.md §4.2).
    public let epoch: Int64

    /// Seals secret versions (`crypto_kdf`, context `gbgvsecr`, id 1).
    public let secretKey: SecureBytes
    /// Seals cached tokens (`gbgvtokn`, id 1).
    public let tokenKey: SecureBytes
    /// MACs profile and environment rows (`gbgvmeta`, id 1).
    public let metadataKey: SecureBytes
    /// MACs audit records (`gbgvaudt`, id 1).
    public let auditMACKey: SecureBytes
    /// Keys token fingerprints (`gbgvaudt`, id 2).
    public let fingerprintKey: SecureBytes
    /// Seals the previous epoch's audit key (`gbgvaudt`, id 3).
    public let retiredKeySealingKey: SecureBytes

    public init(dataKey: SecureBytes, auditKey: SecureBytes, epoch: Int64 = 1) throws(CryptoError) {
        self.dataKey = dataKey
        self.auditKey = auditKey
        self.epoch = epoch
        secretKey = try Sodium.deriveSubkey(from: dataKey, id: 1, context: Labels.secretContext)
        tokenKey = try Sodium.deriveSubkey(from: dataKey, id: 1, context: Labels.tokenContext)
        metadataKey = try Sodium.deriveSubkey(from: dataKey, id: 1, context: Labels.metadataContext)
        auditMACKey = try Sodium.deriveSubkey(from: auditKey, id: Labels.auditMACSubkeyID, context: Labels.auditContext)
        fingerprintKey = try Sodium.deriveSubkey(from: auditKey, id: Labels.fingerprintSubkeyID, context: Labels.auditContext)
        retiredKeySealingKey = try Sodium.deriveSubkey(from: auditKey, id: Labels.retiredKeySubkeyID, context: Labels.auditContext)
    }

    /// Fresh random keys for a new vault (epoch 1).
    public static func generate() -> VaultKeys {
        try! VaultKeys(dataKey: .random(count: 32), auditKey: .random(count: 32), epoch: 1)
    }

    /// A new random data key and audit key in the next key epoch (`vault rekey`).
    public func nextEpoch() -> VaultKeys {
        try! VaultKeys(dataKey: .random(count: 32), auditKey: .random(count: 32), epoch: epoch + 1)
    }

    /// The 64-byte plaintext that is wrapped: data key ‖ audit key.
    func wrappedPlaintext() -> SecureBytes {
        .concatenating([dataKey, auditKey])
    }

    /// A keyed, non-reversible fingerprint of a token for the audit trail: 16 bytes of
    /// keyed BLAKE2b, hex (FORMAT.md §6.3).
    public func fingerprint(token: SecureBytes) -> String {
        Format.tokenFingerprint(token, key: fingerprintKey)
    }
}

/// The audit keys of one key epoch: the current epoch's, or a retired one's (FORMAT.md §6).
public struct AuditEpochKeys: Sendable {
    public var epoch: Int64
    /// MACs audit records and the head (`gbgvaudt`, id 1).
    public var macKey: SecureBytes
    /// Seals the audit key of the epoch before this one (`gbgvaudt`, id 3).
    public var sealingKey: SecureBytes

    init(epoch: Int64, auditKey: SecureBytes) throws(CryptoError) {
        self.epoch = epoch
        macKey = try Sodium.deriveSubkey(from: auditKey, id: Labels.auditMACSubkeyID, context: Labels.auditContext)
        sealingKey = try Sodium.deriveSubkey(from: auditKey, id: Labels.retiredKeySubkeyID, context: Labels.auditContext)
    }

    init(epoch: Int64, macKey: SecureBytes, sealingKey: SecureBytes) {
        self.epoch = epoch
        self.macKey = macKey
        self.sealingKey = sealingKey
    }
}

extension VaultKeys {
    /// This epoch's audit keys: the same two subkeys, already derived when the keys were
    /// opened (deriving them again for every record cost the agent two guarded
    /// allocations, each several `mprotect` calls, per token it hands out).
    public var auditEpochKeys: AuditEpochKeys {
        AuditEpochKeys(epoch: epoch, macKey: auditMACKey, sealingKey: retiredKeySealingKey)
    }
}

extension Array where Element == UInt8 {
    /// Lowercase hexadecimal.
    public var hexString: String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(count * 2)
        for byte in self {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Parses lowercase or uppercase hexadecimal; nil on any other character or odd length.
    public init?(hex: String) {
        let chars = Array(hex.utf8)
        guard chars.count % 2 == 0 else { return nil }
        func value(_ c: UInt8) -> UInt8? {
            switch c {
            case 48...57: c - 48
            case 97...102: c - 87
            case 65...70: c - 55
            default: nil
            }
        }
        var bytes = [UInt8]()
        bytes.reserveCapacity(chars.count / 2)
        var index = 0
        while index < chars.count {
            guard let high = value(chars[index]), let low = value(chars[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
            index += 2
        }
        self = bytes
    }
}
