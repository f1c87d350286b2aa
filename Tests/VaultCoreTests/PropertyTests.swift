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
}
