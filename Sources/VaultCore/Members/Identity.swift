import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A member's public keys, as the one-line recipient string `gbgv1…` (FORMAT.md §10.1):
/// an X25519 key (`crypto_box_seal` receives the vault keys) and an Ed25519 key (checks
/// the member's audit signatures), with a checksum so that a mistyped string is refused.
public struct Recipient: Sendable, Equatable {
    public let boxPublicKey: [UInt8]
    public let signPublicKey: [UInt8]

    public static let prefix = "gbgv1"
    static let checksumBytes = 4
    /// `gbgv1` and 91 base64url characters (68 bytes: keys and checksum).
    public static let length = prefix.count + 91

    public init(boxPublicKey: [UInt8], signPublicKey: [UInt8]) {
        self.boxPublicKey = boxPublicKey
        self.signPublicKey = signPublicKey
    }

    /// `gbgv1` ‖ base64url without padding (box key ‖ sign key ‖ checksum).
    public var string: String {
        let payload = boxPublicKey + signPublicKey + Format.recipientChecksum(boxPublicKey: boxPublicKey, signPublicKey: signPublicKey)
        return Self.prefix + Data(payload).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// Parses a recipient string; a wrong prefix, length, alphabet or checksum is a usage
    /// error (exit 64) naming what is wrong, never a partial key.
    public init(parsing text: String) throws(VaultError) {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard trimmed.hasPrefix(Self.prefix) else {
            throw .usage("not a gbg-vault recipient: it must start with '\(Self.prefix)'",
                         hint: "ask the member for the line `vault identity show` prints")
        }
        guard trimmed.utf8.count == Self.length else {
            throw .usage("the recipient has \(trimmed.utf8.count) characters, not \(Self.length): it is truncated or has extra text")
        }
        let body = trimmed.dropFirst(Self.prefix.count)
        guard body.utf8.allSatisfy({ $0.isBase64URL }) else {
            throw .usage("the recipient has a character outside A-Z a-z 0-9 - _")
        }
        let standard = body.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/") + "="
        guard let payload = Data(base64Encoded: standard).map({ [UInt8]($0) }), payload.count == 68 else {
            throw .usage("the recipient does not decode to a key pair")
        }
        let box = Array(payload[0..<32])
        let sign = Array(payload[32..<64])
        guard Sodium.constantTimeEqual(Array(payload[64..<68]), Format.recipientChecksum(boxPublicKey: box, signPublicKey: sign)) else {
            throw .usage("the recipient's checksum does not match: it was mistyped or changed")
        }
        boxPublicKey = box
        signPublicKey = sign
        // One string per key pair: the last character's unused bits must be zero.
        guard string == trimmed else {
            throw .usage("the recipient is not in its canonical form: it was mistyped or changed")
        }
    }
}

extension UInt8 {
    fileprivate var isBase64URL: Bool {
        (0x41...0x5a).contains(self) || (0x61...0x7a).contains(self) || (0x30...0x39).contains(self) || self == 0x2d || self == 0x5f
    }
}

/// A member identity's private keys (FORMAT.md §10.2): the X25519 secret key and the
/// Ed25519 seed, 64 bytes, held in guarded memory.
public final class MemberIdentity: Sendable {
    public let boxSecretKey: SecureBytes
    public let signSecretKey: SecureBytes
    public let recipient: Recipient
    /// The 64 secret bytes as stored (box secret key ‖ signing seed).
    let secret: SecureBytes

    public init(secret: SecureBytes) throws(VaultError) {
        guard secret.count == 64 else { throw .integrity("the identity's secret has the wrong length") }
        self.secret = secret
        boxSecretKey = secret.slice(0..<32)
        do {
            let box = try Sodium.boxPublicKey(secretKey: boxSecretKey)
            let (signPublic, signSecret) = try Sodium.signKeyPair(seed: secret.slice(32..<64))
            signSecretKey = signSecret
            recipient = Recipient(boxPublicKey: box, signPublicKey: signPublic)
        } catch {
            throw .integrity("the identity's keys are unusable")
        }
    }

    /// A new random identity.
    public static func generate() -> MemberIdentity {
        try! MemberIdentity(secret: .random(count: 64))
    }

    /// Signs `message` with the member's Ed25519 key.
    public func sign(_ message: [UInt8]) -> [UInt8] { Sodium.sign(message, secretKey: signSecretKey) }

    /// Opens a box sealed to this identity's X25519 key.
    func openBox(_ sealed: [UInt8]) -> SecureBytes? {
        try? Sodium.openBox(sealed, publicKey: recipient.boxPublicKey, secretKey: boxSecretKey)
    }
}

/// The identity file (FORMAT.md §10.2): one JSON object, 0600, owned by its user.
public enum IdentityFile {
    static let format = "gbg-vault identity"

    struct Contents: Codable {
        var format: String
        var version: Int
        var recipient: String
        var protection: String
        var kdf: KDFFields?
        var salt: String?
        var nonce: String?
        var sealed: String?
        var secret: String?
        var createdAt: String
        enum CodingKeys: String, CodingKey {
            case format, version, recipient, protection, kdf, salt, nonce, sealed, secret, createdAt = "created_at"
        }
    }

    struct KDFFields: Codable {
        var algorithm: String
        var opslimit: UInt64
        var memlimit: UInt64
    }

    /// `${XDG_DATA_HOME:-~/.local/share}/gbg-vault/identity`.
    public static func defaultPath() -> String {
        LocalEnvironment.dataDirectory + "/identity"
    }

    /// Additional data of the sealed form (FORMAT.md §10.2).
    static func additionalData(recipient: String, kdf: KDFParameters, salt: [UInt8]) -> [UInt8] {
        Format.identityAD(recipient: recipient, kdfAlgorithm: Labels.kdfAlgorithm, opslimit: kdf.opslimit, memlimit: kdf.memlimit, salt: salt)
    }

    /// The file's text for `identity`; sealed under `passphrase` (Argon2id at `kdf`) or,
    /// with nil, unsealed (machine identities, `--no-passphrase`).
    public static func encode(_ identity: MemberIdentity, passphrase: SecureBytes?, kdf: KDFParameters, createdAt: String) throws(VaultError) -> Data {
        let recipient = identity.recipient.string
        var contents = Contents(format: format, version: 1, recipient: recipient, protection: "none", createdAt: createdAt)
        if let passphrase {
            guard passphrase.count > 0 else { throw .usage("an empty passphrase is not allowed") }
            let salt = Sodium.randomBytes(Sodium.saltBytes)
            let nonce = Sodium.randomBytes(Sodium.aeadNonceBytes)
            let key = try VaultHeader.deriveKEK(passphrase: passphrase, salt: salt, kdf: kdf)
            let sealed: [UInt8]
            do {
                sealed = try Sodium.seal(key: key, nonce: nonce, plaintext: identity.secret,
                                         additionalData: additionalData(recipient: recipient, kdf: kdf, salt: salt))
            } catch {
                throw .failure("could not seal the identity")
            }
            contents.protection = "passphrase"
            contents.kdf = KDFFields(algorithm: Labels.kdfAlgorithm, opslimit: kdf.opslimit, memlimit: kdf.memlimit)
            contents.salt = Data(salt).base64EncodedString()
            contents.nonce = Data(nonce).base64EncodedString()
            contents.sealed = Data(sealed).base64EncodedString()
        } else {
            contents.secret = identity.secret.withUnsafeBytes { Data($0).base64EncodedString() }
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        do {
            return try encoder.encode(contents) + Data("\n".utf8)
        } catch {
            throw .failure("could not encode the identity")
        }
    }

    /// Writes a new identity file 0600 (never over an existing file), creating its
    /// directory 0700.
    public static func write(_ data: Data, to path: String) throws(VaultError) {
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty, !FileManager.default.fileExists(atPath: directory) {
            do {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                        attributes: [.posixPermissions: 0o700])
            } catch {
                throw .failure("cannot create the directory \(directory): \(error.localizedDescription)")
            }
        }
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            if errno == EEXIST {
                throw .failure("\(path) already exists; an identity is never written over a file",
                               hint: "choose another path with --out, or remove the old identity yourself")
            }
            throw .failure("cannot create \(path): \(String(cString: strerror(errno)))")
        }
        var ok = fchmod(fd, 0o600) == 0
        data.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 { if errno == EINTR { continue }; ok = false; break }
                offset += n
            }
        }
        ok = ok && fsync(fd) == 0
        close(fd)
        guard ok else {
            unlink(path)
            throw .failure("cannot write \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// What a file holds before any passphrase is asked: its recipient and whether it is
    /// sealed. The file must be a regular file this user owns, with no group or other
    /// access at all (a private key: stricter than a passphrase file).
    public struct Loaded: Sendable {
        public let path: String
        public let recipient: Recipient
        public let sealed: Bool
        let raw: Data
    }

    public static func load(_ path: String) throws(VaultError) -> Loaded {
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { throw .usage("no identity file at \(path)", hint: "`vault identity new` makes one") }
            if errno == ELOOP { throw .usage("the identity file \(path) is a symbolic link; it was not used") }
            throw .usage("cannot read the identity file \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { throw .usage("the identity file \(path) is not a regular file") }
        guard info.st_uid == geteuid() else {
            throw .usage("the identity file \(path) is owned by uid \(info.st_uid), not by you (uid \(geteuid())); it was not used")
        }
        guard info.st_mode & 0o077 == 0 else {
            throw .usage("the identity file \(path) can be read or written by others (mode \(String(format: "%04o", info.st_mode & 0o7777))); it was not used",
                         hint: "chmod 600 \(path)")
        }
        var raw = Data()
        var chunk = [UInt8](repeating: 0, count: 4096)
        while raw.count <= 64 * 1024 {
            let n = read(fd, &chunk, chunk.count)
            if n < 0, errno == EINTR { continue }
            if n <= 0 { break }
            raw.append(contentsOf: chunk[0..<n])
        }
        guard raw.count <= 64 * 1024, let contents = try? JSONDecoder().decode(Contents.self, from: raw),
              contents.format == format else {
            throw .usage("\(path) is not a gbg-vault identity file")
        }
        guard contents.version == 1 else { throw .newerVersion("the identity file \(path) has version \(contents.version); this gbg-vault reads version 1") }
        let recipient: Recipient
        do { recipient = try Recipient(parsing: contents.recipient) } catch { throw .integrity("the identity file \(path) holds a damaged recipient") }
        guard ["passphrase", "none"].contains(contents.protection) else { throw .integrity("the identity file \(path) has an unknown protection") }
        return Loaded(path: path, recipient: recipient, sealed: contents.protection == "passphrase", raw: raw)
    }

    /// Opens the private keys: with the identity's passphrase when it is sealed (a wrong
    /// one is exit 3). The keys must give the recorded recipient.
    public static func unseal(_ loaded: Loaded, passphrase: SecureBytes?) throws(VaultError) -> MemberIdentity {
        guard let contents = try? JSONDecoder().decode(Contents.self, from: loaded.raw) else { throw .usage("\(loaded.path) is not a gbg-vault identity file") }
        func bytes(_ text: String?, _ what: String) throws(VaultError) -> [UInt8] {
            guard let text, let data = Data(base64Encoded: text) else { throw .integrity("the identity file \(loaded.path) lacks a valid \(what)") }
            return [UInt8](data)
        }
        let secret: SecureBytes
        if loaded.sealed {
            guard let passphrase else { throw .usage("the identity \(loaded.path) is sealed with a passphrase") }
            guard let fields = contents.kdf, fields.algorithm == Labels.kdfAlgorithm else {
                throw .integrity("the identity file \(loaded.path) has unknown key-derivation settings")
            }
            let kdf = KDFParameters(opslimit: fields.opslimit, memlimit: fields.memlimit)
            guard kdf.withinMaximum, kdf.meetsMinimum || (kdf == .testOnlyInsecure && KDFParameters.testOnlyInsecureKDFEnabled) else {
                throw .integrity("the identity file \(loaded.path) has key-derivation settings outside the allowed range")
            }
            let salt = try bytes(contents.salt, "salt")
            let nonce = try bytes(contents.nonce, "nonce")
            let sealed = try bytes(contents.sealed, "sealed secret")
            guard salt.count == Sodium.saltBytes else { throw .integrity("the identity file \(loaded.path) has a salt of the wrong length") }
            let key = try VaultHeader.deriveKEK(passphrase: passphrase, salt: salt, kdf: kdf)
            do {
                secret = try Sodium.open(key: key, nonce: nonce, ciphertext: sealed,
                                         additionalData: additionalData(recipient: contents.recipient, kdf: kdf, salt: salt))
            } catch {
                throw .wrongIdentityPassphrase
            }
        } else {
            let plain = try bytes(contents.secret, "secret")
            secret = SecureBytes(copying: plain)
        }
        let identity = try MemberIdentity(secret: secret)
        guard identity.recipient == loaded.recipient else {
            throw .integrity("the identity file \(loaded.path) was changed: its keys do not match its recipient")
        }
        return identity
    }
}
