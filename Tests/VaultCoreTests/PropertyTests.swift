import Foundation
import PropertyBased
import Testing
@testable import VaultCore

/// Property-based checks (x-sheep/swift-property-based) of the parsing and encoding that
/// face untrusted input or secrets.
@Suite("properties")
struct PropertyTests {
    static func percentDecode(_ text: String) -> [UInt8]? {
        var out: [UInt8] = []
        var bytes = Array(text.utf8)[...]
        while let b = bytes.popFirst() {
            if b == UInt8(ascii: "+") { out.append(0x20); continue }
            guard b == UInt8(ascii: "%") else { out.append(b); continue }
            guard bytes.count >= 2, let v = UInt8(String(decoding: bytes.prefix(2), as: UTF8.self), radix: 16) else { return nil }
            out.append(v)
            bytes = bytes.dropFirst(2)
        }
        return out
    }

    @Test("form encoding round-trips every byte string and emits only safe characters")
    func formEncoding() async {
        await propertyCheck(count: 2000, input: Gen<UInt8>.value(in: 0...255).array(of: 0...96)) { bytes in
            let encoded = FormEncoding.encode(SecureBytes(copying: bytes)).utf8String() ?? ""
            #expect(Self.percentDecode(encoded) == bytes)
            #expect(encoded.utf8.allSatisfy { FormEncoding.keeps($0) || $0 == UInt8(ascii: "%") || $0 == UInt8(ascii: "+") })
        }
    }

    @Test("any token response is either a printable-safe token or exit 7")
    func tokenResponses() async {
        let token = Gen.unicodeScalar(in: "\u{0}"..."\u{24F}").map { Character($0) }.string(of: 0...40)
        let type = Gen.element(of: ["Bearer", "bearer", "BEARER", "MAC", "", "Bearer\n", "Bearer "])
        let expires = Gen.int(in: -5...40_000_000)
        await propertyCheck(count: 3000, input: token, type, expires) { token, type, expires in
            let object: [String: Any] = ["access_token": token, "token_type": type as Any, "expires_in": expires]
            guard let body = try? JSONSerialization.data(withJSONObject: object) else { return }
            let result = TokenExchange.interpret(HTTPResponseData(status: 200, headers: [], body: Array(body)), grant: .password)
            switch result {
            case .success(let issued):
                #expect(issued.accessToken.utf8String() == token)
                #expect(TokenExchange.isValidToken(token))
                #expect(!token.contains("\n") && !token.contains("'") && !token.contains(" "))
                #expect(issued.expiresIn == Int64(expires) && expires >= 1)
            case .failure(let error):
                #expect(error.exitCode == 7)
            }
        }
    }

    @Test("display sanitising leaves no control characters and caps the length")
    func sanitising() async {
        let text = Gen.unicodeScalar(in: "\u{0}"..."\u{2FFF}").map { Character($0) }.string(of: 0...400)
        await propertyCheck(count: 2000, input: text) { text in
            let clean = text.sanitisedForDisplay(limit: 200)
            #expect(!clean.unicodeScalars.contains { $0.properties.generalCategory == .control || $0.properties.generalCategory == .format })
            #expect(clean.count <= 201)
        }
    }

    @Test("the canonical encoding is injective over (string, optional string) pairs")
    func canonicalEncoding() async {
        let text = Gen.letterOrNumber.string(of: 0...6)
        await propertyCheck(count: 2000, input: text, text, text, text) { a, b, c, d in
            func encode(_ x: String, _ y: String?) -> [UInt8] {
                var e = CanonicalEncoder(label: "t")
                e.str(x)
                e.optionalStr(y)
                return e.bytes
            }
            let y1: String? = b.isEmpty ? nil : b, y2: String? = d.isEmpty ? nil : d
            #expect((encode(a, y1) == encode(c, y2)) == (a == c && y1 == y2))
        }
    }

    @Test("recipients: every key pair round-trips; any one-character change, cut or extension is refused")
    func recipients() async {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/=. gG")
        await propertyCheck(count: 1500, input: Gen<UInt8>.value(in: 0...255).array(of: 64...64), Gen.int(in: 0...200),
                            Gen.int(in: 0...(alphabet.count - 1))) { keys, position, replacement in
            let recipient = Recipient(boxPublicKey: Array(keys[0..<32]), signPublicKey: Array(keys[32..<64]))
            let text = recipient.string
            #expect(text.count == Recipient.length && text.hasPrefix("gbgv1"))
            #expect((try? Recipient(parsing: text)) == recipient)
            var chars = Array(text)
            let index = position % chars.count
            let new = alphabet[replacement]
            if chars[index] != new {
                chars[index] = new
                #expect((try? Recipient(parsing: String(chars))) == nil, "one character changed at \(index)")
            }
            #expect((try? Recipient(parsing: String(text.dropLast(1 + position % 10)))) == nil)
            // (Surrounding whitespace is trimmed, as when pasted; anything else appended is refused.)
            if !alphabet[replacement].isWhitespace {
                #expect((try? Recipient(parsing: text + String(alphabet[replacement]))) == nil)
            }
        }
    }

    @Test("identity files: random and mutated contents are refused with an error, never a crash or a wrong key")
    func identityFiles() async throws {
        let directory = NSTemporaryDirectory() + "gbg-vault-identity-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let identity = MemberIdentity.generate()
        let good = try IdentityFile.encode(identity, passphrase: nil, kdf: .testOnlyInsecure, createdAt: "2026-11-29T00:00:00Z")
        await propertyCheck(count: 500, input: Gen.int(in: 0...(good.count - 1)), Gen<UInt8>.value(in: 0...255), Gen.int(in: 0...2)) { index, byte, mode in
            var data = [UInt8](good)
            switch mode {
            case 0: data[index] = byte                        // one byte changed
            case 1: data = Array(data.prefix(index))          // truncated
            default: data = (0..<index).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(byte)) }  // garbage
            }
            let path = directory + "/id-\(UUID().uuidString)"
            FileManager.default.createFile(atPath: path, contents: Data(data), attributes: [.posixPermissions: 0o600])
            defer { unlink(path) }
            do {
                let opened = try IdentityFile.unseal(try IdentityFile.load(path), passphrase: nil)
                // Only a change that leaves the keys intact (whitespace, a reordered field) may open, and then as the same identity.
                #expect(opened.recipient == identity.recipient)
            } catch {
                #expect([1, 3, 7, 64].contains((error as? VaultError)?.exitCode ?? -1), "\(error)")
            }
        }
    }

    @Test("ISO 8601 text: UTC, whole seconds, the same from many threads at once")
    func iso8601() async {
        #expect(Date(timeIntervalSince1970: 1_764_451_372).iso8601 == "2025-11-29T21:22:52Z")
        let texts = await withTaskGroup(of: String.self) { group in
            for _ in 0..<64 { group.addTask { Date(timeIntervalSince1970: 2_147_483_648).iso8601 } }
            return await group.reduce(into: [String]()) { $0.append($1) }
        }
        #expect(Set(texts) == ["2038-01-19T03:14:08Z"])
    }
}
