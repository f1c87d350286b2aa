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

    /// Whether `text` repeats this request's client secret or password
    /// (``SecureBytes/isRepeated(in:)``).
    func repeatsSecret(_ text: String) -> Bool {
        clientSecret.isRepeated(in: text) || (password?.isRepeated(in: text) ?? false)
    }

    /// What is shown and recorded in place of a server's text that repeats a secret.
    static let withheld = "(withheld: it repeated a secret the request carried)"
}

extension SecureBytes {
    /// Whether `text` repeats these bytes: holds them as they are or form-encoded (hex digits
    /// in either case), or is itself a piece of them at least 8 bytes long. What a server
    /// answers (an error's text, a request id) is shown and recorded only when it repeats
    /// none of the secrets it was sent: an endpoint that echoes its request would otherwise
    /// put them on standard error and into audit rows.
    func isRepeated(in text: String) -> Bool {
        let haystack = Array(text.utf8)
        guard count > 0, !haystack.isEmpty else { return false }
        func contains(_ outer: UnsafeRawBufferPointer, _ inner: UnsafeRawBufferPointer, ignoringCase: Bool) -> Bool {
            guard inner.count > 0, inner.count <= outer.count else { return false }
            func fold(_ byte: UInt8) -> UInt8 { ignoringCase && (0x41...0x5a).contains(byte) ? byte | 0x20 : byte }
            for start in 0...(outer.count - inner.count) {
                var index = 0
                while index < inner.count, fold(outer[start + index]) == fold(inner[index]) { index += 1 }
                if index == inner.count { return true }
            }
            return false
        }
        let encoded = FormEncoding.encode(self)
        return haystack.withUnsafeBytes { text in
            withUnsafeBytes { secret in
                contains(text, secret, ignoringCase: false) || (text.count >= 8 && contains(secret, text, ignoringCase: false))
            } || encoded.withUnsafeBytes { contains(text, $0, ignoringCase: true) }
        }
    }
}

/// `application/x-www-form-urlencoded` byte serialisation (WHATWG URL §5.2): bytes of
/// `*-._` and ASCII alphanumerics stay, space becomes `+`, every other byte is `%XX`.
enum FormEncoding {
    static func encode(_ value: SecureBytes) -> SecureBytes {
        value.withUnsafeBytes { input in
            var length = 0
            for byte in input { length += keeps(byte) || byte == 0x20 ? 1 : 3 }
            let output = SecureBytes(count: length)
            output.withUnsafeMutableBytes { out in
                let hex = Array("0123456789ABCDEF".utf8)
                var i = 0
                for byte in input {
                    if keeps(byte) {
                        out[i] = byte; i += 1
                    } else if byte == 0x20 {
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
