import Foundation
import Testing
import VaultTestSupport
@testable import VaultCore

/// Mutation fuzzing of the token-response path, in process: random byte flips,
/// truncations, insertions (control characters, quotes, newlines, invalid UTF-8),
/// duplicated and missing fields, odd `expires_in` values. Nothing may crash; every case
/// must end in a token that is safe to print or in a documented exit code.
@Suite("hostile token responses (mutation fuzzing)")
struct ResponseFuzzTests {
    static let seeds: [String] = [
        #"{"access_token":"eyJhbGciOi.J9.abc-_","token_type":"Bearer","expires_in":3600}"#,
        #"{"error":"invalid_grant","error_description":"Password expired"}"#,
        #"{"access_token":"a","access_token":"b","token_type":"Bearer","expires_in":3600}"#,
        #"{"access_token":"abc","token_type":"Bearer","expires_in":"3600","extra":[1,2,{"x":null}]}"#,
    ]
    static let insertions: [[UInt8]] = [[0x0a], [0x0d], [0x00], [0x1b, 0x5b, 0x33, 0x31, 0x6d], [0x27], [0x22], [0xff], [0xc3],
                                        Array("\\n".utf8), Array("\\u0000".utf8), Array(",\"expires_in\":-5".utf8),
                                        Array(",\"access_token\":\"x y\"".utf8), Array("e999".utf8)]

    func mutate(_ input: [UInt8], _ rng: inout SeededGenerator) -> [UInt8] {
        var bytes = input
        for _ in 0..<Int.random(in: 1...4, using: &rng) {
            switch Int.random(in: 0..<5, using: &rng) {
            case 0 where !bytes.isEmpty:
                bytes[Int.random(in: 0..<bytes.count, using: &rng)] ^= UInt8(1 << Int.random(in: 0..<8, using: &rng))
            case 1 where !bytes.isEmpty:
                bytes = Array(bytes.prefix(Int.random(in: 0..<bytes.count, using: &rng)))
            case 2:
                let at = Int.random(in: 0...bytes.count, using: &rng)
                bytes.insert(contentsOf: Self.insertions.randomElement(using: &rng)!, at: at)
            case 3 where !bytes.isEmpty:
                let at = Int.random(in: 0..<bytes.count, using: &rng)
                bytes.insert(contentsOf: bytes[at..<min(bytes.count, at + 20)], at: at)
            default:
                bytes.removeAll { _ in Int.random(in: 0..<40, using: &rng) == 0 }
            }
        }
        return bytes
    }

    @Test("5,000 mutated responses per status: no crash, only safe tokens or documented exit codes")
    func fuzz() {
        let seed = UInt64(ProcessInfo.processInfo.environment["GBG_VAULT_FUZZ_SEED"] ?? "") ?? UInt64.random(in: 1...UInt64.max / 2)
        let iterations = Int(ProcessInfo.processInfo.environment["GBG_VAULT_FUZZ_ITERATIONS"] ?? "") ?? 5000
        var rng = SeededGenerator(seed: seed)
        var accepted = 0
        var outcomes: [Int32: Int] = [:]
        for i in 0..<iterations {
            let status = [200, 200, 200, 400, 401, 403, 500][i % 7]
            let body = mutate(Array(Self.seeds[i % Self.seeds.count].utf8), &rng)
            let result = TokenExchange.interpret(HTTPResponseData(status: status, headers: [], body: body), grant: .password)
            switch result {
            case .success(let token):
                accepted += 1
                let text = token.accessToken.utf8String() ?? ""
                #expect(TokenExchange.isValidToken(text), "seed \(seed) case \(i): unsafe token accepted")
                #expect(token.expiresIn >= 1 && token.expiresIn <= TokenExchange.maximumExpiresIn)
            case .failure(let error):
                outcomes[error.exitCode, default: 0] += 1
                #expect([1, 4, 7].contains(error.exitCode), "seed \(seed) case \(i): exit \(error.exitCode)")
                #expect(!error.message.unicodeScalars.contains { $0.properties.generalCategory == .control },
                        "seed \(seed) case \(i): control character in message")
                #expect(error.message.count < 600)
            }
        }
        print("response fuzz: seed \(seed), \(iterations) cases, \(accepted) accepted as safe tokens, exits \(outcomes.sorted { $0.key < $1.key })")
    }

    @Test("huge, deeply nested and endless-looking bodies are handled", arguments: [
        String(repeating: "[", count: 100_000),
        "{\"access_token\":\"" + String(repeating: "A", count: 9000) + "\",\"token_type\":\"Bearer\",\"expires_in\":3600}",
        "{\"access_token\":\"abc\",\"token_type\":\"Bearer\",\"expires_in\":" + String(repeating: "9", count: 400) + "}",
    ])
    func extremes(body: String) {
        let result = TokenExchange.interpret(HTTPResponseData(status: 200, headers: [], body: Array(body.utf8)), grant: .password)
        if case .failure(let error) = result { #expect(error.exitCode == 7) } else { Issue.record("accepted") }
    }
}
