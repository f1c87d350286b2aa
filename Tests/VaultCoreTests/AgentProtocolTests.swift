import Foundation
import Testing
import VaultTestSupport
@testable import VaultCore

/// The client writes its agent request without `JSONEncoder` (`AgentRequest.jsonBytes`,
/// for start-up time); the agent reads it with `JSONDecoder`. These check that the two
/// agree on every field and every string, and that the bytes are the JSON object
/// `JSONEncoder` would have written.
@Suite("agent protocol encoding")
struct AgentProtocolTests {
    /// Strings that stress the escaping: quotes, backslashes, every control character,
    /// DEL, multi-byte UTF-8, a lone combining mark, an emoji, JSON look-alikes.
    static let awkward: [String] = [
        "", "plain", "with \"quotes\"", "back\\slash", "\\\"", "line\nbreak\r\ttab",
        String((0..<32).map { Character(UnicodeScalar(UInt8($0))) }), "\u{7F}", "é", "\u{301}", "👩🏽‍💻", "𝄞",
        "{\"op\":\"lock\"}", "\u{2028}\u{2029}", "/slash/", "%00", "a\u{0}b",
    ]

    static func randomString(_ generator: inout SeededGenerator) -> String {
        let pool = Self.awkward + ["acme", "eu", "https://api.auth.gbgplc.com/as/token.oauth2"]
        var text = pool[Int(generator.next() % UInt64(pool.count))]
        if generator.next() % 2 == 0 {
            let scalars = (0..<Int(generator.next() % 12)).compactMap { _ in UnicodeScalar(UInt32(generator.next() % 0x1_0000)) }
            text += String(String.UnicodeScalarView(scalars))
        }
        return text
    }

    static func randomRequest(_ generator: inout SeededGenerator) -> AgentRequest {
        func maybe<T>(_ make: () -> T) -> T? { generator.next() % 3 == 0 ? nil : make() }
        var request = AgentRequest(op: randomString(&generator))
        request.version = Int(Int64(bitPattern: generator.next()) % 1_000_000)
        request.profile = maybe { randomString(&generator) }
        request.environment = maybe { randomString(&generator) }
        request.fresh = maybe { generator.next() % 2 == 0 }
        request.minTTL = maybe { Int64(bitPattern: generator.next()) }
        request.action = maybe { randomString(&generator) }
        request.timeoutMs = maybe { Int64(bitPattern: generator.next()) }
        request.connectTimeoutMs = maybe { Int64.min }
        request.caBundle = maybe { randomString(&generator) }
        request.proxyEnvironment = maybe {
            Dictionary((0..<Int(generator.next() % 4)).map { _ in (randomString(&generator), randomString(&generator)) }, uniquingKeysWith: { a, _ in a })
        }
        request.clientID = maybe { randomString(&generator) }
        request.username = maybe { randomString(&generator) }
        request.grant = maybe { randomString(&generator) }
        request.scope = maybe { randomString(&generator) }
        request.clientSecret = maybe { randomString(&generator) }
        request.password = maybe { randomString(&generator) }
        request.verify = maybe { generator.next() % 2 == 0 }
        request.tokenURL = maybe { randomString(&generator) }
        request.apiBase = maybe { randomString(&generator) }
        request.clearAPIBase = maybe { generator.next() % 2 == 0 }
        request.fileDevice = maybe { generator.next() }
        request.fileInode = maybe { UInt64.max }
        request.store = maybe { randomString(&generator) }
        request.member = maybe { randomString(&generator) }
        request.recipient = maybe { randomString(&generator) }
        return request
    }

    @Test("the hand-written request decodes to the same request with JSONDecoder, for 5,000 random requests")
    func roundTrip() throws {
        var generator = SeededGenerator(seed: 20261129)
        for _ in 0..<5000 {
            let request = Self.randomRequest(&generator)
            let bytes = request.jsonBytes()
            let decoded = try JSONDecoder().decode(AgentRequest.self, from: Data(bytes))
            #expect(decoded == request)
            // The same object JSONEncoder makes: same keys, same values.
            let mine = try JSONSerialization.jsonObject(with: Data(bytes)) as? NSDictionary
            let theirs = try JSONSerialization.jsonObject(with: JSONEncoder().encode(request)) as? NSDictionary
            #expect(mine != nil && mine == theirs)
        }
    }

    @Test("every field is written: a request with all of them set names every coding key")
    func everyField() throws {
        var request = AgentRequest(op: "token")
        request.profile = "p"; request.environment = "e"; request.fresh = true; request.minTTL = 1; request.action = "token"
        request.timeoutMs = 2; request.connectTimeoutMs = 3; request.caBundle = "/ca"; request.proxyEnvironment = ["HTTPS_PROXY": "x"]
        request.clientID = "c"; request.username = "u"; request.grant = "password"; request.scope = "s"
        request.clientSecret = "cs"; request.password = "pw"; request.verify = false; request.tokenURL = "https://t"
        request.apiBase = "https://a"; request.clearAPIBase = true; request.fileDevice = 4; request.fileInode = 5
        request.store = "pg"; request.member = "m"; request.recipient = "r"
        let object = try #require(try JSONSerialization.jsonObject(with: Data(request.jsonBytes())) as? [String: Any])
        #expect(Set(object.keys) == Set(AgentRequest.CodingKeys.allCases.map(\.rawValue)))
    }

    @Test("control characters are escaped, never written raw; the output is valid UTF-8")
    func escaping() throws {
        var request = AgentRequest(op: "token")
        request.profile = String((0..<32).map { Character(UnicodeScalar(UInt8($0))) }) + "\"\\\u{7F}é"
        let bytes = request.jsonBytes()
        #expect(!bytes.contains { $0 < 0x20 })
        #expect(String(validating: bytes, as: UTF8.self) != nil)
        #expect(try JSONDecoder().decode(AgentRequest.self, from: Data(bytes)).profile == request.profile)
    }
}
