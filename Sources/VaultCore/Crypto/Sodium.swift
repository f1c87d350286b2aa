import CSodium

/// Errors of the crypto layer. Callers map them to vault errors with context.
public enum CryptoError: Error, Equatable, Sendable {
    /// An AEAD ciphertext did not authenticate under the key and additional data given.
    case authenticationFailed
    /// An input had the wrong length for the primitive.
    case invalidLength(what: String, expected: Int, actual: Int)
    /// Argon2id could not run (in practice: the memory limit could not be allocated).
    case keyDerivationFailed
    /// A message was longer than the primitive accepts.
    case messageTooLong
}

/// Thin, length-checked wrappers over the libsodium primitives that gbg-vault uses.
/// Every function here calls exactly one libsodium construction; none is hand-rolled.
public enum Sodium {
    private static let initialised: Bool = {
        // sodium_init returns 0 on first success and 1 when already initialised.
        sodium_init() >= 0
    }()

    /// Initialises libsodium once; aborts if it cannot (no usable randomness).
    public static func ensureInitialised() {
        precondition(initialised, "libsodium could not be initialised")
    }

    /// The libsodium version string, for `vault doctor`.
    public static var versionString: String {
        ensureInitialised()
        return String(cString: sodium_version_string())
    }

    /// Random bytes from `randombytes_buf`.
    public static func randomBytes(_ count: Int) -> [UInt8] {
        ensureInitialised()
        var bytes = [UInt8](repeating: 0, count: count)
        bytes.withUnsafeMutableBytes { randombytes_buf($0.baseAddress!, $0.count) }
        return bytes
    }

    // MARK: - Argon2id (crypto_pwhash)

    public static let saltBytes = Int(crypto_pwhash_argon2id_SALTBYTES)
    public static let keyBytes = 32

    /// Derives a 32-byte key with `crypto_pwhash` and `crypto_pwhash_ALG_ARGON2ID13`.
    public static func argon2id(passphrase: SecureBytes, salt: [UInt8], opslimit: UInt64, memlimit: UInt64) throws(CryptoError) -> SecureBytes {
        ensureInitialised()
        guard salt.count == saltBytes else {
            throw .invalidLength(what: "salt", expected: saltBytes, actual: salt.count)
        }
        let key = SecureBytes(count: keyBytes)
        var empty: CChar = 0
        let status: Int32 = key.withUnsafeMutableBytes { out in
            passphrase.withUnsafeBytes { password in
                withUnsafePointer(to: &empty) { emptyPassword in
                    crypto_pwhash(
                        out.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt64(out.count),
                        password.baseAddress?.assumingMemoryBound(to: CChar.self) ?? emptyPassword, UInt64(password.count),
                        salt, opslimit, Int(memlimit), crypto_pwhash_ALG_ARGON2ID13)
                }
            }
        }
        guard status == 0 else { throw .keyDerivationFailed }
        return key
    }

    // MARK: - XChaCha20-Poly1305-IETF

    public static let aeadKeyBytes = Int(crypto_aead_xchacha20poly1305_ietf_KEYBYTES)
    public static let aeadNonceBytes = Int(crypto_aead_xchacha20poly1305_ietf_NPUBBYTES)
    public static let aeadTagBytes = Int(crypto_aead_xchacha20poly1305_ietf_ABYTES)

    /// Seals `plaintext` with `crypto_aead_xchacha20poly1305_ietf_encrypt`.
    public static func seal(key: SecureBytes, nonce: [UInt8], plaintext: SecureBytes, additionalData: [UInt8]) throws(CryptoError) -> [UInt8] {
        ensureInitialised()
        try checkKeyAndNonce(key: key, nonce: nonce)
        guard UInt(plaintext.count) <= UInt(bitPattern: crypto_aead_xchacha20poly1305_ietf_messagebytes_max()) else {
            throw .messageTooLong
        }
        var ciphertext = [UInt8](repeating: 0, count: plaintext.count + aeadTagBytes)
        var written: UInt64 = 0
        ciphertext.withUnsafeMutableBytes { out in
            plaintext.withUnsafeBytes { message in
                key.withUnsafeBytes { keyBytes in
                    _ = crypto_aead_xchacha20poly1305_ietf_encrypt(
                        out.baseAddress!.assumingMemoryBound(to: UInt8.self), &written,
                        message.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(message.count),
                        additionalData, UInt64(additionalData.count),
                        nil, nonce, keyBytes.baseAddress!.assumingMemoryBound(to: UInt8.self))
                }
            }
        }
        return ciphertext
    }

    /// Opens a ciphertext with `crypto_aead_xchacha20poly1305_ietf_decrypt`.
    /// Throws ``CryptoError/authenticationFailed`` for any change to key, nonce,
    /// ciphertext, tag or additional data.
    public static func open(key: SecureBytes, nonce: [UInt8], ciphertext: [UInt8], additionalData: [UInt8]) throws(CryptoError) -> SecureBytes {
        ensureInitialised()
        try checkKeyAndNonce(key: key, nonce: nonce)
        guard ciphertext.count >= aeadTagBytes else { throw .authenticationFailed }
        let plaintext = SecureBytes(count: ciphertext.count - aeadTagBytes)
        var written: UInt64 = 0
        let status: Int32 = plaintext.withUnsafeMutableBytes { out in
            key.withUnsafeBytes { keyBytes in
                crypto_aead_xchacha20poly1305_ietf_decrypt(
                    out.baseAddress?.assumingMemoryBound(to: UInt8.self), &written, nil,
                    ciphertext, UInt64(ciphertext.count),
                    additionalData, UInt64(additionalData.count),
                    nonce, keyBytes.baseAddress!.assumingMemoryBound(to: UInt8.self))
            }
        }
        guard status == 0, Int(written) == plaintext.count else { throw .authenticationFailed }
        return plaintext
    }

    private static func checkKeyAndNonce(key: SecureBytes, nonce: [UInt8]) throws(CryptoError) {
        guard key.count == aeadKeyBytes else {
            throw .invalidLength(what: "key", expected: aeadKeyBytes, actual: key.count)
        }
        guard nonce.count == aeadNonceBytes else {
            throw .invalidLength(what: "nonce", expected: aeadNonceBytes, actual: nonce.count)
        }
    }

    // MARK: - crypto_kdf (BLAKE2b subkeys)

    public static let kdfContextBytes = Int(crypto_kdf_CONTEXTBYTES)

    /// Derives a 32-byte subkey with `crypto_kdf_derive_from_key`.
    public static func deriveSubkey(from key: SecureBytes, id: UInt64, context: String) throws(CryptoError) -> SecureBytes {
        ensureInitialised()
        let contextBytes = Array(context.utf8)
        guard contextBytes.count == kdfContextBytes else {
            throw .invalidLength(what: "kdf context", expected: kdfContextBytes, actual: contextBytes.count)
        }
        guard key.count == Int(crypto_kdf_KEYBYTES) else {
            throw .invalidLength(what: "kdf key", expected: Int(crypto_kdf_KEYBYTES), actual: key.count)
        }
        let subkey = SecureBytes(count: 32)
        subkey.withUnsafeMutableBytes { out in
            key.withUnsafeBytes { master in
                contextBytes.map { CChar(bitPattern: $0) }.withUnsafeBufferPointer { ctx in
                    _ = crypto_kdf_derive_from_key(
                        out.baseAddress!.assumingMemoryBound(to: UInt8.self), out.count, id,
                        ctx.baseAddress!, master.baseAddress!.assumingMemoryBound(to: UInt8.self))
                }
            }
        }
        return subkey
    }

    // MARK: - BLAKE2b (crypto_generichash)

    /// `crypto_generichash` with an optional key; `length` between 16 and 64.
    public static func blake2b(_ message: [UInt8], key: SecureBytes? = nil, length: Int = 32) -> [UInt8] {
        ensureInitialised()
        precondition(length >= Int(crypto_generichash_BYTES_MIN) && length <= Int(crypto_generichash_BYTES_MAX))
        var out = [UInt8](repeating: 0, count: length)
        out.withUnsafeMutableBytes { output in
            if let key {
                key.withUnsafeBytes { keyBytes in
                    _ = crypto_generichash(
                        output.baseAddress!.assumingMemoryBound(to: UInt8.self), length,
                        message, UInt64(message.count),
                        keyBytes.baseAddress!.assumingMemoryBound(to: UInt8.self), keyBytes.count)
                }
            } else {
                _ = crypto_generichash(
                    output.baseAddress!.assumingMemoryBound(to: UInt8.self), length,
                    message, UInt64(message.count), nil, 0)
            }
        }
        return out
    }

    // MARK: - X25519 sealed boxes (crypto_box_seal) and Ed25519 (crypto_sign)

    public static let boxPublicKeyBytes = Int(crypto_box_publickeybytes())
    public static let boxSecretKeyBytes = Int(crypto_box_secretkeybytes())
    public static let sealBytes = Int(crypto_box_sealbytes())
    public static let signPublicKeyBytes = Int(crypto_sign_publickeybytes())
    public static let signSeedBytes = Int(crypto_sign_seedbytes())
    public static let signatureBytes = Int(crypto_sign_bytes())

    /// The X25519 public key of a secret key (`crypto_scalarmult_base`).
    public static func boxPublicKey(secretKey: SecureBytes) throws(CryptoError) -> [UInt8] {
        ensureInitialised()
        guard secretKey.count == boxSecretKeyBytes else {
            throw .invalidLength(what: "box secret key", expected: boxSecretKeyBytes, actual: secretKey.count)
        }
        var publicKey = [UInt8](repeating: 0, count: boxPublicKeyBytes)
        let status = secretKey.withUnsafeBytes { sk in
            crypto_scalarmult_base(&publicKey, sk.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }
        guard status == 0 else { throw .authenticationFailed }
        return publicKey
    }

    /// Ed25519 key pair from a 32-byte seed (`crypto_sign_seed_keypair`): the public key
    /// and the 64-byte secret key, in guarded memory.
    public static func signKeyPair(seed: SecureBytes) throws(CryptoError) -> (publicKey: [UInt8], secretKey: SecureBytes) {
        ensureInitialised()
        guard seed.count == signSeedBytes else {
            throw .invalidLength(what: "signing seed", expected: signSeedBytes, actual: seed.count)
        }
        var publicKey = [UInt8](repeating: 0, count: signPublicKeyBytes)
        let secretKey = SecureBytes(count: Int(crypto_sign_secretkeybytes()))
        secretKey.withUnsafeMutableBytes { sk in
            seed.withUnsafeBytes { seedBytes in
                _ = crypto_sign_seed_keypair(&publicKey, sk.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                             seedBytes.baseAddress!.assumingMemoryBound(to: UInt8.self))
            }
        }
        return (publicKey, secretKey)
    }

    /// A detached Ed25519 signature (`crypto_sign_detached`).
    public static func sign(_ message: [UInt8], secretKey: SecureBytes) -> [UInt8] {
        ensureInitialised()
        precondition(secretKey.count == Int(crypto_sign_secretkeybytes()))
        var signature = [UInt8](repeating: 0, count: signatureBytes)
        secretKey.withUnsafeBytes { sk in
            _ = crypto_sign_detached(&signature, nil, message, UInt64(message.count), sk.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }
        return signature
    }

    /// Checks a detached Ed25519 signature (`crypto_sign_verify_detached`).
    public static func verify(signature: [UInt8], message: [UInt8], publicKey: [UInt8]) -> Bool {
        ensureInitialised()
        guard signature.count == signatureBytes, publicKey.count == signPublicKeyBytes else { return false }
        return crypto_sign_verify_detached(signature, message, UInt64(message.count), publicKey) == 0
    }

    /// Seals `plaintext` to an X25519 public key (`crypto_box_seal`: ephemeral sender key).
    public static func sealBox(_ plaintext: SecureBytes, to publicKey: [UInt8]) throws(CryptoError) -> [UInt8] {
        ensureInitialised()
        guard publicKey.count == boxPublicKeyBytes else {
            throw .invalidLength(what: "box public key", expected: boxPublicKeyBytes, actual: publicKey.count)
        }
        var sealed = [UInt8](repeating: 0, count: plaintext.count + sealBytes)
        let status = plaintext.withUnsafeBytes { message in
            crypto_box_seal(&sealed, message.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt64(message.count), publicKey)
        }
        guard status == 0 else { throw .authenticationFailed }
        return sealed
    }

    /// Opens a sealed box (`crypto_box_seal_open`); ``CryptoError/authenticationFailed``
    /// when it was not sealed to this key pair or was changed.
    public static func openBox(_ sealed: [UInt8], publicKey: [UInt8], secretKey: SecureBytes) throws(CryptoError) -> SecureBytes {
        ensureInitialised()
        guard sealed.count >= sealBytes, publicKey.count == boxPublicKeyBytes, secretKey.count == boxSecretKeyBytes else {
            throw .authenticationFailed
        }
        let plaintext = SecureBytes(count: sealed.count - sealBytes)
        let status: Int32 = plaintext.withUnsafeMutableBytes { out in
            secretKey.withUnsafeBytes { sk in
                crypto_box_seal_open(out.baseAddress!.assumingMemoryBound(to: UInt8.self), sealed, UInt64(sealed.count),
                                     publicKey, sk.baseAddress!.assumingMemoryBound(to: UInt8.self))
            }
        }
        guard status == 0 else { throw .authenticationFailed }
        return plaintext
    }

    /// Constant-time equality of two byte arrays (`sodium_memcmp`).
    public static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        if a.isEmpty { return true }
        return sodium_memcmp(a, b, a.count) == 0
    }
}
