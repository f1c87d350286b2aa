import CSodium
import Foundation

/// One token request as GBG expects it: a form POST with exactly the fields
/// of the grant, `Accept: application/json`, no Authorization header.
public struct TokenRequest: Sendable {
    public var tokenURL: String
    public var grant: GrantType
    public var clientID: String
    public var clientSecret: SecureBytes
    public var username: String?
    public var password: SecureBytes?
    /// Sent with `client_credentials`; GBG uses `gbg.token`.
    public var scope: String?

    public static let defaultScope = "gbg.token"

    public init(tokenURL: String, grant: GrantType, clientID: String, clientSecret: SecureBytes,
                username: String?, password: SecureBytes?, scope: String?) {
        self.tokenURL = tokenURL
        self.grant = grant
        self.clientID = clientID
        self.clientSecret = clientSecret
        self.username = username
        self.password = password
        self.scope = scope
    }

    /// The `application/x-www-form-urlencoded` body, built in guarded memory.
    public func formBody() -> SecureBytes {
        var parts: [(String, SecureBytes)] = [
            ("client_id", SecureBytes(utf8: clientID)),
            ("client_secret", clientSecret),
        ]
        switch grant {
        case .password:
            parts.append(("username", SecureBytes(utf8: username ?? "")))
            parts.append(("password", password ?? SecureBytes(count: 0)))
            parts.append(("grant_type", SecureBytes(utf8: "password")))
        case .clientCredentials:
            parts.append(("grant_type", SecureBytes(utf8: "client_credentials")))
            parts.append(("scope", SecureBytes(utf8: scope ?? Self.defaultScope)))
        }
        let encoded = parts.map { name, value in (FormEncoding.encode(SecureBytes(utf8: name)), FormEncoding.encode(value)) }
        var pieces: [SecureBytes] = []
        for (index, (name, value)) in encoded.enumerated() {
            if index > 0 { pieces.append(SecureBytes(utf8: "&")) }
            pieces.append(name)
            pieces.append(SecureBytes(utf8: "="))
            pieces.append(value)
        }
        return .concatenating(pieces)
    }

    /// The runs of this request's client secret and password (``RepeatedRuns``).
    var secretRuns: RepeatedRuns { RepeatedRuns([clientSecret] + (password.map { [$0] } ?? [])) }

    /// What is shown and recorded in place of a server's text that repeats a secret.
    static let withheld = "(withheld: it repeated a secret the request carried)"
}

/// What a server answers (an error's code and text, a request id, a header) is shown,
/// recorded and passed on only when it repeats none of the secrets the request carried, as
/// they are, form-encoded (`+` for a space) or percent-encoded (`%20`). Text repeats a
/// secret when it holds one of these forms whole (one shorter than ``plainRun``; compared
/// with its case when it is letters and spaces alone, else without), or shares with one,
/// without regard to case, a run of ``run`` bytes that holds a digit or symbol, or a run
/// of ``plainRun`` bytes of any kind. (Runs of letters and spaces alone count only from
/// ``plainRun``: a password holding a word such as `password` would otherwise withhold
/// every message that says it.) An endpoint that echoes its request, as sent or
/// URL-encoded, whole, cut or split across fields, would otherwise put the secrets on
/// standard error and into audit rows. One that transforms a secret first (base64, say) is
/// not caught: it holds the secret, and chooses what it sends back (SECURITY.md). The runs
/// are kept as keyed SipHash values (a key of this value's own), never as bytes of the
/// secrets.
struct RepeatedRuns: Sendable {
    static let run = 8
    static let plainRun = 16

    private let key: SecureBytes
    /// Keyed hashes of runs (``counts(_:_:_:)``), and of whole forms shorter than
    /// ``plainRun`` (always counted; one of letters and spaces alone compared exactly, with
    /// its case, so that a password `Password` does not withhold "invalid password"), by
    /// their length.
    private var runs: [Int: Set<UInt64>] = [:]
    private var wholes: [Int: Set<UInt64>] = [:]
    private var exactWholes: [Int: Set<UInt64>] = [:]

    init(_ secrets: [SecureBytes]) {
        key = SecureBytes.random(count: Int(crypto_shorthash_KEYBYTES))
        for secret in secrets where secret.count > 0 {
            for form in [secret, FormEncoding.encode(secret), FormEncoding.encode(secret, spaceAsPercent: true)] {
                let folded = SecureBytes(count: form.count)
                form.withUnsafeBytes { input in
                    folded.withUnsafeMutableBytes { output in for index in 0..<input.count { output[index] = Self.fold(input[index]) } }
                }
                let plain = form.withUnsafeBytes { bytes in bytes.allSatisfy { Self.isLetterOrSpace(Self.fold($0)) } }
                if plain, form.count < Self.plainRun {
                    form.withUnsafeBytes { bytes in exactWholes[bytes.count, default: []].insert(hash(bytes, 0, bytes.count)) }
                }
                folded.withUnsafeBytes { bytes in
                    if !plain, bytes.count < Self.plainRun { wholes[bytes.count, default: []].insert(hash(bytes, 0, bytes.count)) }
                    for length in [Self.run, Self.plainRun] where length <= bytes.count {
                        for start in 0...(bytes.count - length) where Self.counts(bytes, start, length) {
                            runs[length, default: []].insert(hash(bytes, start, length))
                        }
                    }
                }
            }
        }
    }

    /// Whether `text` repeats one of the secrets.
    func found(in text: String) -> Bool {
        guard !runs.isEmpty || !wholes.isEmpty || !exactWholes.isEmpty else { return false }
        let exact = Array(text.utf8)
        let exactly = exact.withUnsafeBytes { bytes in
            exactWholes.contains { length, set in
                length <= bytes.count && (0...(bytes.count - length)).contains { set.contains(hash(bytes, $0, length)) }
            }
        }
        if exactly { return true }
        let folded = exact.map(Self.fold)
        return folded.withUnsafeBytes { bytes in
            for (counted, table) in [(false, wholes), (true, runs)] {
                for (length, set) in table where length <= bytes.count {
                    for start in 0...(bytes.count - length) where (!counted || Self.counts(bytes, start, length)) && set.contains(hash(bytes, start, length)) {
                        return true
                    }
                }
            }
            return false
        }
    }

    /// Whether a run counts: one of ``plainRun`` always, one of ``run`` only when it holds a
    /// byte other than a letter or a space.
    private static func counts(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ length: Int) -> Bool {
        guard length == run else { return true }
        for index in start..<(start + length) where !isLetterOrSpace(bytes[index]) { return true }
        return false
    }

    /// Whether a folded byte is a letter (folded to lower case) or a space.
    private static func isLetterOrSpace(_ byte: UInt8) -> Bool { byte == 0x20 || (0x61...0x7a).contains(byte) }

    private func hash(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ length: Int) -> UInt64 {
        var value: UInt64 = 0
        key.withUnsafeBytes { key in
            withUnsafeMutableBytes(of: &value) { out in
                _ = crypto_shorthash(out.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                     bytes.baseAddress!.advanced(by: start).assumingMemoryBound(to: UInt8.self), UInt64(length),
                                     key.baseAddress!.assumingMemoryBound(to: UInt8.self))
            }
        }
        return value
    }

    private static func fold(_ byte: UInt8) -> UInt8 { (0x41...0x5a).contains(byte) ? byte | 0x20 : byte }
}

/// `application/x-www-form-urlencoded` byte serialisation (WHATWG URL §5.2): bytes of
/// `*-._` and ASCII alphanumerics stay, space becomes `+`, every other byte is `%XX`.
enum FormEncoding {
    /// `spaceAsPercent`: a space as `%20` (percent-encoding, as a URL's path or query writes
    /// it) instead of `+`.
    static func encode(_ value: SecureBytes, spaceAsPercent: Bool = false) -> SecureBytes {
        value.withUnsafeBytes { input in
            var length = 0
            for byte in input { length += keeps(byte) || (byte == 0x20 && !spaceAsPercent) ? 1 : 3 }
            let output = SecureBytes(count: length)
            output.withUnsafeMutableBytes { out in
                let hex = Array("0123456789ABCDEF".utf8)
                var i = 0
                for byte in input {
                    if keeps(byte) {
                        out[i] = byte; i += 1
                    } else if byte == 0x20 && !spaceAsPercent {
                        out[i] = 0x2b; i += 1
                    } else {
                        out[i] = 0x25
                        out[i + 1] = hex[Int(byte >> 4)]
                        out[i + 2] = hex[Int(byte & 0x0f)]
                        i += 3
                    }
                }
            }
            return output
        }
    }

    static func keeps(_ byte: UInt8) -> Bool {
        (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a)
            || byte == 0x2a || byte == 0x2d || byte == 0x2e || byte == 0x5f
    }
}
