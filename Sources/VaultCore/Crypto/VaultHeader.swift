import Foundation

/// The vault header (FORMAT.md §3.1, §4): KDF parameters, salt and the wrapped keys.
///
/// It is authenticated twice over: the wrapping AEAD binds every KDF field as additional
/// data, so edited parameters can never unlock the vault with weaker settings; and an
/// unkeyed BLAKE2b digest over every field tells an edited or damaged header (exit 7)
/// apart from a wrong passphrase (exit 3).
public struct VaultHeader: Sendable, Equatable {
    public var formatVersion: UInt32
    public var vaultID: [UInt8]
    public var kdfAlgorithm: String
    public var kdf: KDFParameters
    public var salt: [UInt8]
    public var keyNonce: [UInt8]
    public var wrappedKeys: [UInt8]
    public var headerDigest: [UInt8]
    public var createdAt: String

    public static let vaultIDBytes = 16
    public static let wrappedKeysBytes = 64 + Sodium.aeadTagBytes

    /// Additional data of the key-wrapping AEAD (FORMAT.md §4.2).
    public var wrapAdditionalData: [UInt8] {
        var encoder = CanonicalEncoder(label: Labels.wrapAD)
        encoder.u32(formatVersion)
        encoder.data(vaultID)
        encoder.str(kdfAlgorithm)
        encoder.u64(kdf.opslimit)
        encoder.u64(kdf.memlimit)
        encoder.data(salt)
        return encoder.bytes
    }

    /// The header digest over every field (FORMAT.md §4.3).
    public var computedDigest: [UInt8] {
        var encoder = CanonicalEncoder(label: Labels.headerDigest)
        encoder.u32(formatVersion)
        encoder.data(vaultID)
        encoder.str(kdfAlgorithm)
        encoder.u64(kdf.opslimit)
        encoder.u64(kdf.memlimit)
        encoder.data(salt)
        encoder.data(keyNonce)
        encoder.data(wrappedKeys)
        return Sodium.blake2b(encoder.bytes, length: 32)
    }

    /// Creates the header of a new vault, wrapping `keys` under `passphrase`.
    public static func create(vaultID: [UInt8], keys: VaultKeys, passphrase: SecureBytes, kdf: KDFParameters, createdAt: String) throws(VaultError) -> VaultHeader {
        var header = VaultHeader(
            formatVersion: Labels.formatVersion, vaultID: vaultID, kdfAlgorithm: Labels.kdfAlgorithm,
            kdf: kdf, salt: [], keyNonce: [], wrappedKeys: [], headerDigest: [], createdAt: createdAt)
        try header.wrap(keys: keys, passphrase: passphrase, kdf: kdf)
        return header
    }

    /// Wraps `keys` under `passphrase` with a fresh salt and nonce (init, passwd, rekey).
    public mutating func wrap(keys: VaultKeys, passphrase: SecureBytes, kdf: KDFParameters) throws(VaultError) {
        guard !passphrase.isEmptyPassphrase else { throw .usage("an empty passphrase is not allowed") }
        self.kdf = kdf
        salt = Sodium.randomBytes(Sodium.saltBytes)
        keyNonce = Sodium.randomBytes(Sodium.aeadNonceBytes)
        let kek = try Self.deriveKEK(passphrase: passphrase, salt: salt, kdf: kdf)
        do {
            wrappedKeys = try Sodium.seal(key: kek, nonce: keyNonce, plaintext: keys.wrappedPlaintext(), additionalData: wrapAdditionalData)
        } catch {
            throw .failure("could not wrap the vault keys: \(error)")
        }
        headerDigest = computedDigest
    }

    /// Rewraps `keys` under the same key-encryption key and salt with a fresh nonce
    /// (`vault rekey`).
    public mutating func rewrap(keys: VaultKeys, kek: SecureBytes) throws(VaultError) {
        keyNonce = Sodium.randomBytes(Sodium.aeadNonceBytes)
        do {
            wrappedKeys = try Sodium.seal(key: kek, nonce: keyNonce, plaintext: keys.wrappedPlaintext(), additionalData: wrapAdditionalData)
        } catch {
            throw .failure("could not wrap the vault keys: \(error)")
        }
        headerDigest = computedDigest
    }

    /// Checks the header (FORMAT.md §4.4, in that order) and unwraps the keys.
    public func unlock(passphrase: SecureBytes) throws(VaultError) -> VaultKeys {
        try unlockReturningKEK(passphrase: passphrase).keys
    }

    /// Like ``unlock(passphrase:)``, also returning the key-encryption key.
    public func unlockReturningKEK(passphrase: SecureBytes) throws(VaultError) -> (keys: VaultKeys, kek: SecureBytes) {
        try validate()
        let kek = try Self.deriveKEK(passphrase: passphrase, salt: salt, kdf: kdf)
        let plaintext: SecureBytes
        do {
            plaintext = try Sodium.open(key: kek, nonce: keyNonce, ciphertext: wrappedKeys, additionalData: wrapAdditionalData)
        } catch {
            throw .wrongPassphrase
        }
        guard plaintext.count == 64 else { throw .integrity("the wrapped keys have the wrong length") }
        do {
            return (try VaultKeys(dataKey: plaintext.slice(0..<32), auditKey: plaintext.slice(32..<64)), kek)
        } catch {
            throw .integrity("the vault keys are unusable")
        }
    }

    /// The checks that need no passphrase (also used by `vault doctor`).
    public func validate() throws(VaultError) {
        if formatVersion > Labels.formatVersion {
            throw .newerVersion("this vault has format version \(formatVersion); this gbg-vault reads version \(Labels.formatVersion)")
        }
        guard formatVersion == Labels.formatVersion else {
            throw .integrity("the vault header has an invalid format version (\(formatVersion))")
        }
        guard vaultID.count == Self.vaultIDBytes, salt.count == Sodium.saltBytes,
              keyNonce.count == Sodium.aeadNonceBytes, wrappedKeys.count == Self.wrappedKeysBytes,
              headerDigest.count == 32
        else {
            throw .integrity("a vault header field has the wrong length")
        }
        guard Sodium.constantTimeEqual(headerDigest, computedDigest) else {
            throw .integrity("the vault header was modified or is damaged (digest mismatch)")
        }
        guard kdfAlgorithm == Labels.kdfAlgorithm else {
            throw .integrity("unknown key-derivation algorithm '\(kdfAlgorithm.sanitisedForDisplay(limit: 40))'")
        }
        guard kdf.withinMaximum else {
            throw .integrity("the vault's KDF parameters exceed the allowed maximum (\(kdf))")
        }
        guard kdf.meetsMinimum || (kdf == .testOnlyInsecure && KDFParameters.testOnlyInsecureKDFEnabled) else {
            throw .integrity("the vault's KDF parameters are weaker than 'interactive' (\(kdf))")
        }
    }

    static func deriveKEK(passphrase: SecureBytes, salt: [UInt8], kdf: KDFParameters) throws(VaultError) -> SecureBytes {
        do {
            return try Sodium.argon2id(passphrase: passphrase, salt: salt, opslimit: kdf.opslimit, memlimit: kdf.memlimit)
        } catch {
            throw .failure("the key derivation failed (not enough memory for \(kdf.memlimit / 1024 / 1024) MiB?)")
        }
    }
}

extension SecureBytes {
    /// True for a zero-length passphrase.
    var isEmptyPassphrase: Bool { count == 0 }
}

extension String {
    /// The string with control characters replaced and its length capped, safe to show in
    /// a terminal or a log line (server-supplied text, names from a tampered file).
    public func sanitisedForDisplay(limit: Int = 200) -> String {
        var out = ""
        var count = 0
        for scalar in unicodeScalars {
            if count >= limit { out += "…"; break }
            let isControl = scalar.properties.generalCategory == .control
                || scalar.properties.generalCategory == .format
                || scalar.properties.generalCategory == .lineSeparator
                || scalar.properties.generalCategory == .paragraphSeparator
            out.unicodeScalars.append(isControl ? "?" : scalar)
            count += 1
        }
        return out
    }
}
