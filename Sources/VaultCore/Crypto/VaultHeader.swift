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
    /// Format 2: 1 at `init`, +1 on every `rekey` (FORMAT.md §4.2). Always 1 in format 1.
    public var keyEpoch: Int64 = 1
    /// Format 3: the first audit record that must be signed (FORMAT.md §6.7); 0 before.
    public var signedFromSeq: Int64 = 0

    public static let vaultIDBytes = 16
    public static let wrappedKeysBytes = 64 + Sodium.aeadTagBytes
    /// The oldest format this build opens (and upgrades).
    public static let oldestReadableFormat: UInt32 = 1

    /// Additional data of the key-wrapping AEAD (FORMAT.md §4.2; §9 for formats 1 and 2).
    /// Only format 2 binds the key epoch: format 1 had none, and formats 3 and 4 wrap the owner's
    /// identity, which a `rekey` does not change.
    public var wrapAdditionalData: [UInt8] {
        Format.wrapAD(formatVersion: formatVersion, vaultID: vaultID, keyEpoch: keyEpoch, kdfAlgorithm: kdfAlgorithm,
                      opslimit: kdf.opslimit, memlimit: kdf.memlimit, salt: salt)
    }

    /// The header digest over every field (FORMAT.md §4.3; §9 for format 1).
    public var computedDigest: [UInt8] {
        Format.headerDigest(formatVersion: formatVersion, vaultID: vaultID, keyEpoch: keyEpoch, signedFromSeq: signedFromSeq,
                            kdfAlgorithm: kdfAlgorithm, opslimit: kdf.opslimit, memlimit: kdf.memlimit, salt: salt,
                            keyNonce: keyNonce, wrappedKeys: wrappedKeys)
    }

    /// Creates the format-3 header of a new vault, wrapping the owner's identity under
    /// `passphrase`; also returns the key-encryption key, so that `init` runs Argon2id once.
    public static func create(vaultID: [UInt8], owner: MemberIdentity, passphrase: SecureBytes, kdf: KDFParameters,
                              createdAt: String) throws(VaultError) -> (header: VaultHeader, kek: SecureBytes) {
        var header = VaultHeader(
            formatVersion: Labels.formatVersion, vaultID: vaultID, kdfAlgorithm: Labels.kdfAlgorithm,
            kdf: kdf, salt: [], keyNonce: [], wrappedKeys: [], headerDigest: [], createdAt: createdAt, keyEpoch: 1,
            signedFromSeq: 1)
        guard !passphrase.isEmptyPassphrase else { throw .usage("an empty passphrase is not allowed") }
        header.salt = Sodium.randomBytes(Sodium.saltBytes)
        let kek = try deriveKEK(passphrase: passphrase, salt: header.salt, kdf: kdf)
        try header.wrapOwner(owner, kek: kek)
        return (header, kek)
    }

    /// Format 3: wraps the owner's identity (box secret key ‖ signing seed, 64 bytes)
    /// under `kek` with a fresh nonce, and recomputes the digest.
    public mutating func wrapOwner(_ owner: MemberIdentity, kek: SecureBytes) throws(VaultError) {
        keyNonce = Sodium.randomBytes(Sodium.aeadNonceBytes)
        do {
            wrappedKeys = try Sodium.seal(key: kek, nonce: keyNonce, plaintext: owner.secret, additionalData: wrapAdditionalData)
        } catch {
            throw .failure("could not wrap the owner's keys: \(error)")
        }
        headerDigest = computedDigest
    }

    /// Format 3: the owner's identity, or nil when `kek` does not open it (a wrong passphrase).
    public func unwrapOwner(kek: SecureBytes) throws(VaultError) -> MemberIdentity? {
        guard formatVersion >= 3 else { return nil }
        let plaintext: SecureBytes
        do {
            plaintext = try Sodium.open(key: kek, nonce: keyNonce, ciphertext: wrappedKeys, additionalData: wrapAdditionalData)
        } catch {
            return nil
        }
        return try MemberIdentity(secret: plaintext)
    }

    /// Derives the key-encryption key of this header from `passphrase` (Argon2id).
    public func deriveKEK(passphrase: SecureBytes) throws(VaultError) -> SecureBytes {
        try Self.deriveKEK(passphrase: passphrase, salt: salt, kdf: kdf)
    }

    /// Wraps `keys` under `passphrase` with a fresh salt and nonce (init, passwd) and
    /// returns the new key-encryption key.
    @discardableResult
    public mutating func wrap(keys: VaultKeys, passphrase: SecureBytes, kdf: KDFParameters) throws(VaultError) -> SecureBytes {
        guard !passphrase.isEmptyPassphrase else { throw .usage("an empty passphrase is not allowed") }
        self.kdf = kdf
        salt = Sodium.randomBytes(Sodium.saltBytes)
        let kek = try Self.deriveKEK(passphrase: passphrase, salt: salt, kdf: kdf)
        try rewrap(keys: keys, kek: kek)
        return kek
    }

    /// Format 3 (`passwd`): wraps the owner's identity under a new passphrase with a
    /// fresh salt; returns the new key-encryption key.
    @discardableResult
    public mutating func wrapOwner(_ owner: MemberIdentity, passphrase: SecureBytes, kdf: KDFParameters) throws(VaultError) -> SecureBytes {
        guard !passphrase.isEmptyPassphrase else { throw .usage("an empty passphrase is not allowed") }
        self.kdf = kdf
        salt = Sodium.randomBytes(Sodium.saltBytes)
        let kek = try Self.deriveKEK(passphrase: passphrase, salt: salt, kdf: kdf)
        try wrapOwner(owner, kek: kek)
        return kek
    }

    /// Wraps `keys` under the same key-encryption key and salt with a fresh nonce
    /// (`rekey`, the format upgrade), after the caller set `keyEpoch`/`formatVersion`.
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
        guard let keys = try unwrap(kek: kek) else { throw .wrongPassphrase }
        return (keys, kek)
    }

    /// Opens `wrappedKeys` with a key-encryption key already derived; nil if it does not
    /// open (a wrong passphrase, or a header rewrapped by `passwd` since).
    public func unwrap(kek: SecureBytes) throws(VaultError) -> VaultKeys? {
        let plaintext: SecureBytes
        do {
            plaintext = try Sodium.open(key: kek, nonce: keyNonce, ciphertext: wrappedKeys, additionalData: wrapAdditionalData)
        } catch {
            return nil
        }
        guard plaintext.count == 64 else { throw .integrity("the wrapped keys have the wrong length") }
        do {
            return try VaultKeys(dataKey: plaintext.slice(0..<32), auditKey: plaintext.slice(32..<64), epoch: keyEpoch)
        } catch {
            throw .integrity("the vault keys are unusable")
        }
    }

    /// The checks that need no passphrase (also used by `vault doctor`).
    public func validate() throws(VaultError) {
        if formatVersion > Labels.formatVersion {
            throw .newerVersion("this vault has format version \(formatVersion); this gbg-vault reads versions \(Self.oldestReadableFormat) to \(Labels.formatVersion)")
        }
        guard formatVersion >= Self.oldestReadableFormat else {
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
        guard keyEpoch >= 1 else { throw .integrity("the vault header has an invalid key epoch") }
        guard formatVersion < 3 || signedFromSeq >= 1 else { throw .integrity("the vault header has no first signed record") }
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
