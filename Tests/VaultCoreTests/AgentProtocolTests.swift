import Foundation
import Testing
import VaultTestSupport
@testable import VaultCore

/// The client writes its agent request without `JSONEncoder` (`AgentRequest.jsonBytes`,
/// for start-up time); the agent reads it with its strict reader, else `JSONDecoder`.
/// These check that `JSONDecoder` reads every field and every string as written, and that
/// the bytes are the JSON object `JSONEncoder` would have written.
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
        request.reply = maybe { randomString(&generator) }
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
        request.store = "pg"; request.member = "m"; request.recipient = "r"; request.reply = "bare"
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

/// The client reads everyday answers with a strict reader of its own
/// (`AgentResponse.decodeEveryday`) and everything else with `JSONDecoder`: whatever the
/// strict reader accepts must be exactly what `JSONDecoder` reads.
@Suite("agent answers read without JSONDecoder")
struct AgentResponseDecodingTests {
    static func canonical(_ response: AgentResponse) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return try encoder.encode(response)
    }

    static func randomResponse(_ generator: inout SeededGenerator) -> AgentResponse {
        func text() -> String { AgentProtocolTests.randomString(&generator) }
        var response = AgentResponse(ok: generator.next() % 2 == 0)
        switch generator.next() % 5 {
        case 3:
            let entries = (0..<Int(generator.next() % 3)).map { _ in
                AgentResponse.FreshEntry(profile: text(), environment: generator.next() % 2 == 0 ? nil : text(),
                                         expiresAt: generator.next() % 2 == 0 ? nil : Int64(bitPattern: generator.next()),
                                         nextRefreshAt: Int64(bitPattern: generator.next()), refreshes: Int(generator.next() % 1000),
                                         failures: Int(generator.next() % 7), lastError: generator.next() % 2 == 0 ? nil : text())
            }
            response.status = .init(pid: Int32(truncatingIfNeeded: generator.next()), vault: text(), vaultID: text(),
                                    unlockedAt: Int64(bitPattern: generator.next()), expiresAt: Int64(bitPattern: generator.next()),
                                    idleSeconds: Int64(generator.next() % 100_000), idleExpiresAt: Int64(bitPattern: generator.next()),
                                    requests: Int64(generator.next() % 1_000_000), keepFresh: generator.next() % 3 == 0 ? nil : entries)
        case 0:
            response.token = .init(accessToken: text(), tokenType: text(), expiresAt: Int64(bitPattern: generator.next()),
                                   expiresIn: Int64(bitPattern: generator.next()) % 100_000, environment: text(),
                                   apiBase: generator.next() % 2 == 0 ? nil : text(), fromCache: generator.next() % 2 == 0)
        case 1:
            response.error = .init(exitCode: Int32(truncatingIfNeeded: generator.next()), message: text(), hint: generator.next() % 2 == 0 ? nil : text())
        case 2:
            response.message = text()
        default:
            break
        }
        if generator.next() % 5 == 0 { response.ending = generator.next() % 2 == 0 }
        if generator.next() % 5 == 0 { response.otherFile = generator.next() % 2 == 0 }
        return response
    }

    @Test("5,000 answers as the agent writes them: read the same as JSONDecoder reads them")
    func sameAsJSONDecoder() throws {
        var generator = SeededGenerator(seed: 7_2026_1129)
        for _ in 0..<5000 {
            let response = Self.randomResponse(&generator)
            let bytes = try JSONEncoder().encode(response)
            let fast = try #require(AgentResponse.decodeEveryday([UInt8](bytes)), "an everyday answer must be read: \(String(decoding: bytes, as: UTF8.self))")
            let slow = try JSONDecoder().decode(AgentResponse.self, from: bytes)
            #expect(try Self.canonical(fast) == Self.canonical(slow))
        }
    }

    @Test("mutated, truncated and spliced answers: whatever the strict reader accepts, JSONDecoder reads identically")
    func mutatedAnswers() throws {
        var generator = SeededGenerator(seed: 11_2026_1129)
        let alphabet = Array(#"{}[]":,\ -+.0123456789eEtrufalsn"'/bfnrtu"#.utf8) + [0x00, 0x1F, 0x7F, 0xC3, 0xA9, 0xED, 0xA0, 0x80, 0xFF]
        var accepted = 0
        for round in 0..<20_000 {
            var bytes = [UInt8](try JSONEncoder().encode(Self.randomResponse(&generator)))
            switch round % 4 {
            case 0: // flip or replace a byte
                let at = Int(generator.next() % UInt64(bytes.count))
                bytes[at] = generator.next() % 2 == 0 ? bytes[at] ^ UInt8(1 << (generator.next() % 8)) : alphabet[Int(generator.next() % UInt64(alphabet.count))]
            case 1: // truncate
                bytes = Array(bytes.prefix(Int(generator.next() % UInt64(bytes.count))))
            case 2: // insert a byte
                bytes.insert(alphabet[Int(generator.next() % UInt64(alphabet.count))], at: Int(generator.next() % UInt64(bytes.count + 1)))
            default: // a known key's value replaced by another JSON value
                let replacements = [#""version":1.0"#, #""version":-0"#, #""ok":1"#, #""ok":null"#, #""version":1,"version":1"#, #""token":[]"#,
                                    #""version":1e0"#, #""version":"1""#, #""message":"\ud800""#, #""message":"\ud83d\ude00""#, #""message":"a\u0000b""#]
                let text = String(decoding: bytes, as: UTF8.self).replacingOccurrences(of: #""version":1"#, with: replacements[Int(generator.next() % UInt64(replacements.count))])
                bytes = Array(text.utf8)
            }
            guard let fast = AgentResponse.decodeEveryday(bytes) else { continue }
            accepted += 1
            let slow = try JSONDecoder().decode(AgentResponse.self, from: Data(bytes))
            #expect(try Self.canonical(fast) == Self.canonical(slow), "read differently: \(String(decoding: bytes, as: UTF8.self))")
        }
        #expect(accepted > 1000, "the mutations left enough valid answers to compare (\(accepted))")
    }

    @Test("the strict reader refuses what RFC 8259 refuses, and hands other answers to JSONDecoder")
    func refusals() throws {
        for text in [#"{"version":1,"ok":true,}"#, #"{"version":01,"ok":true}"#, #"{"version":1,"ok":true} x"#, "{\"version\":1,\"ok\":true,\"message\":\"a\nb\"}",
                     #"{"version":1,"ok":tru}"#, #"{'version':1,"ok":true}"#, #"{"version":1,"ok":true,"message":"\x"}"#, #"{"version":+1,"ok":true}"#,
                     #"{"version":1,"ok":true,"message":"\udc00"}"#, #"{"version":1,"ok":true,"status":{"pid":1}}"#, #"{"ok":true}"#,
                     #"{"version":1,"ok":true,"audit":{"records_checked":1}}"#,
                     #"{"version":1,"ok":true,"token":{"access_token":"t"}}"#, #"{"version":1,"ok":true,"extra":1}"#,
                     String(repeating: "[", count: 40) + String(repeating: "]", count: 40)] {
            #expect(AgentResponse.decodeEveryday(Array(text.utf8)) == nil, "\(text)")
        }
        let token = try #require(AgentResponse.decodeEveryday(Array(#" {"version":1,"ok":true,"token":{"access_token":"a\/b\u00e9\ud83d\ude00","token_type":"Bearer","expires_at":9,"expires_in":3,"environment":"eu","api_base":null,"from_cache":false}} "#.utf8)))
        #expect(token.token?.accessToken == "a/bé😀" && token.token?.apiBase == nil && token.token?.fromCache == false)
        // Numbers: as written, integers only where an integer is expected.
        for (text, number) in [("0", "0"), ("-0", "-0"), ("-2.5e+3", "-2.5e+3"), ("0.0", "0.0"), (" 12 ", "12")] {
            var reader = StrictJSON.Reader(bytes: Array(text.utf8))
            #expect(try reader.number() == number)
        }
        for text in ["01", "+1", "1.", ".5", "1e", "-", "1.5", "1e2", "9223372036854775808"] {
            #expect(throws: StrictJSON.Malformed.self, "\(text)") {
                var reader = StrictJSON.Reader(bytes: Array(text.utf8))
                _ = try reader.int64()
                try reader.finish()
            }
        }
    }
}

/// The agent reads requests with the same strict reader (`AgentRequest.decodeStrict`) and
/// writes token, error and message answers without `JSONEncoder`
/// (`AgentResponse.everydayJSONBytes`): what the reader accepts must be what
/// `JSONDecoder` reads, and what the writer writes must read back the same.
@Suite("agent requests and answers without Foundation's coders")
struct AgentRequestReadingTests {
    @Test("5,000 requests as clients write them (by hand and by JSONEncoder): read the same as JSONDecoder reads them")
    func sameAsJSONDecoder() throws {
        var generator = SeededGenerator(seed: 3_2026_1129)
        for round in 0..<5000 {
            let request = AgentProtocolTests.randomRequest(&generator)
            let bytes = round % 2 == 0 ? request.jsonBytes() : [UInt8](try JSONEncoder().encode(request))
            let fast = try #require(AgentRequest.decodeStrict(bytes), "a request must be read: \(String(decoding: bytes, as: UTF8.self))")
            #expect(fast == request)
            #expect(fast == (try JSONDecoder().decode(AgentRequest.self, from: Data(bytes))))
        }
    }

    @Test("mutated, truncated and spliced requests: whatever the strict reader accepts, JSONDecoder reads identically")
    func mutatedRequests() throws {
        var generator = SeededGenerator(seed: 5_2026_1129)
        let alphabet = Array(#"{}[]":,\ -+.0123456789eEtrufalsn"'/bfnrtu"#.utf8) + [0x00, 0x1F, 0x7F, 0xC3, 0xA9, 0xED, 0xA0, 0x80, 0xFF]
        var accepted = 0
        for round in 0..<20_000 {
            var bytes = AgentProtocolTests.randomRequest(&generator).jsonBytes()
            switch round % 4 {
            case 0:
                let at = Int(generator.next() % UInt64(bytes.count))
                bytes[at] = generator.next() % 2 == 0 ? bytes[at] ^ UInt8(1 << (generator.next() % 8)) : alphabet[Int(generator.next() % UInt64(alphabet.count))]
            case 1:
                bytes = Array(bytes.prefix(Int(generator.next() % UInt64(bytes.count))))
            case 2:
                bytes.insert(alphabet[Int(generator.next() % UInt64(alphabet.count))], at: Int(generator.next() % UInt64(bytes.count + 1)))
            default:
                let replacements = [#""version":1.0,"#, #""version":"1","#, #""version":null,"#, #""version":1,"version":2,"#, #""version":1,"extra":[1],"#,
                                    #""version":1,"fresh":0,"#, #""version":1,"file_dev":-1,"#, #""version":1,"file_ino":1e3,"#,
                                    #""version":1,"proxy_environment":{"a":1},"#, #""version":1,"proxy_environment":{"a":"1","a":"2"},"#,
                                    #""version":1,"min_ttl":9223372036854775808,"#, #""version":1,"profile":"\ud800","#]
                let text = String(decoding: bytes, as: UTF8.self)
                guard let range = text.range(of: #"^\{"version":-?[0-9]+,"#, options: .regularExpression) else { continue }
                bytes = Array(text.replacingCharacters(in: range, with: "{" + replacements[Int(generator.next() % UInt64(replacements.count))]).utf8)
            }
            guard let fast = AgentRequest.decodeStrict(bytes) else { continue }
            accepted += 1
            #expect(fast == (try JSONDecoder().decode(AgentRequest.self, from: Data(bytes))), "read differently: \(String(decoding: bytes, as: UTF8.self))")
        }
        #expect(accepted > 1000, "the mutations left enough valid requests to compare (\(accepted))")
    }

    @Test("a key this version does not know, a repeated key or a wrong type: left to JSONDecoder")
    func refusals() {
        for text in [#"{"version":1,"op":"token","newer":true}"#, #"{"version":1,"op":"token","op":"lock"}"#, #"{"version":1,"op":"token","fresh":"yes"}"#,
                     #"{"version":1,"op":"token","min_ttl":1.5}"#, #"{"version":1}"#, #"{"op":"token"}"#, #"[{"version":1,"op":"token"}]"#,
                     #"{"version":1,"op":"token"} {}"#, #"{"version":1,"op":"token","file_dev":-1}"#] {
            #expect(AgentRequest.decodeStrict(Array(text.utf8)) == nil, "\(text)")
        }
        #expect(AgentRequest.decodeStrict(Array(#" {"version":1,"op":"token","profile":null,"proxy_environment":{}} "#.utf8)) == {
            var request = AgentRequest(op: "token")
            request.proxyEnvironment = [:]
            return request
        }())
    }

    @Test("5,000 token, error and message answers written by hand: JSONDecoder reads back exactly the answer")
    func writtenAnswers() throws {
        var generator = SeededGenerator(seed: 13_2026_1129)
        var written = 0
        for _ in 0..<5000 {
            let response = AgentResponseDecodingTests.randomResponse(&generator)
            guard let bytes = response.everydayJSONBytes() else {
                #expect(response.status != nil, "only a status is left to JSONEncoder among these")
                continue
            }
            written += 1
            #expect(String(validating: bytes, as: UTF8.self) != nil && !bytes.contains { $0 < 0x20 })
            let read = try JSONDecoder().decode(AgentResponse.self, from: Data(bytes))
            #expect(try AgentResponseDecodingTests.canonical(read) == AgentResponseDecodingTests.canonical(response))
            let everyday = try #require(AgentResponse.decodeEveryday(bytes))
            #expect(try AgentResponseDecodingTests.canonical(everyday) == AgentResponseDecodingTests.canonical(response))
        }
        #expect(written > 3000)
    }
}
