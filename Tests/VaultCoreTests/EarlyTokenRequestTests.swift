import CProcess
import Foundation
import Testing
@testable import VaultCore
import VaultTestSupport

/// `vault token NAME` is served by a C constructor before `main` (`CProcess/EarlyToken.c`),
/// which writes its agent request without the Swift code that builds every other one. These
/// check that the agent reads the two as the same request (plus `"reply":"bare"`) under every
/// proxy and CA variable, and that the C side stands aside for text it would write differently.
@Suite("the constructor's token request")
struct EarlyTokenRequestTests {
    static let proxyNames = ["https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"]

    /// The C request for `profile` under `variables`, as bytes (nil when it stands aside).
    static func cRequest(_ profile: [UInt8], device: UInt64, inode: UInt64, variables: [(String, [UInt8])]) -> [UInt8]? {
        // `NAME=value` entries of the exact bytes (an invalid sequence must reach C as it is).
        var storage: [UnsafeMutablePointer<CChar>?] = variables.map { name, value in
            let bytes = Array(name.utf8) + [UInt8(ascii: "=")] + value + [0]
            let entry = UnsafeMutablePointer<CChar>.allocate(capacity: bytes.count)
            for (index, byte) in bytes.enumerated() { entry[index] = CChar(bitPattern: byte) }
            return entry
        }
        storage.append(nil)
        defer { storage.forEach { $0?.deallocate() } }
        var out = [CChar](repeating: 0, count: 16 * 1024)
        let count = (profile + [0]).withUnsafeBufferPointer { name in
            name.withMemoryRebound(to: CChar.self) { name in
                storage.withUnsafeBufferPointer { envp in
                    cprocess_early_token_request(name.baseAddress, nil, device, inode, envp.baseAddress, &out, UInt(out.count))
                }
            }
        }
        guard count >= 0 else { return nil }
        return out[0..<Int(count)].map { UInt8(bitPattern: $0) }
    }

    /// What vault's Swift client sends for the same call.
    static func swiftRequest(_ profile: String, device: UInt64, inode: UInt64, variables: [(String, String)]) -> AgentRequest {
        var request = AgentTokenAsk(vaultPath: "/unused", profile: profile).request(action: "token") { name in
            variables.first { $0.0 == name }?.1
        }
        request.fileDevice = device
        request.fileInode = inode
        request.reply = "bare"
        return request
    }

    static let profiles = ["pw", "with \"quotes\"", "back\\slash", "\\\"", "é-ü", "👩🏽‍💻", "𝄞", "a b", "{\"op\":\"lock\"}", "\u{7F}", "\u{2028}"]

    @Test("the agent reads the C request as the Swift client's, for every profile text and variable set")
    func sameRequest() throws {
        let variableSets: [[(String, String)]] = [
            [],
            [("VAULT_CA_BUNDLE", "/etc/ssl/ca \"bundle\".pem")],
            [("VAULT_CA_BUNDLE", "")],
            Self.proxyNames.map { ($0, "http://proxy.example:3128") },
            [("https_proxy", ""), ("NO_PROXY", "localhost,127.0.0.1,.example"), ("ALL_PROXY", "socks5://ü.example:1080/\\")],
            [("HTTP_PROXY", "http://user:p%40ss@proxy:8080"), ("VAULT_CA_BUNDLE", "/ca.pem"), ("UNRELATED", "x")],
        ]
        for profile in Self.profiles {
            for variables in variableSets {
                let device = UInt64.random(in: 0...UInt64.max), inode = UInt64.random(in: 0...UInt64.max)
                let bytes = try #require(Self.cRequest(Array(profile.utf8), device: device, inode: inode,
                                                        variables: variables.map { ($0.0, Array($0.1.utf8)) }),
                                         "C stood aside for \(profile.debugDescription)")
                let expected = Self.swiftRequest(profile, device: device, inode: inode, variables: variables)
                // The agent's strict reader takes it (its fast way), and JSONDecoder agrees.
                let strict = try #require(AgentRequest.decodeStrict(bytes), "\(String(decoding: bytes, as: UTF8.self))")
                #expect(strict == expected, "\(profile.debugDescription) \(variables)")
                #expect(try JSONDecoder().decode(AgentRequest.self, from: Data(bytes)) == expected)
                #expect(bytes.count <= AgentProtocol.maximumFrame)
            }
        }
    }

    @Test("text the Swift client would write differently, or that does not fit, makes the C side stand aside")
    func standsAside() {
        let refusedProfiles: [[UInt8]] = [
            Array("line\nbreak".utf8), Array("tab\t".utf8), [0x61, 0x01],
            [0xC3, 0x28], [0xC0, 0xAF], [0xE0, 0x80, 0xAF], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xF8, 0x88, 0x80, 0x80, 0x80],
            [0xE2, 0x82], [0xFF], Array(repeating: UInt8(ascii: "a"), count: 20_000),
        ]
        for profile in refusedProfiles {
            #expect(Self.cRequest(profile, device: 1, inode: 2, variables: []) == nil, "\(profile.prefix(8))")
        }
        #expect(Self.cRequest(Array("pw".utf8), device: 1, inode: 2, variables: [("HTTPS_PROXY", [0x68, 0x0A])]) == nil)
        #expect(Self.cRequest(Array("pw".utf8), device: 1, inode: 2, variables: [("VAULT_CA_BUNDLE", [0xC3])]) == nil)
        // A control character in an unrelated variable is not its business.
        #expect(Self.cRequest(Array("pw".utf8), device: 1, inode: 2, variables: [("OTHER", [0x0A])]) != nil)
    }

    /// The C identity of a team vault URL under `variables` (nil when it stands aside).
    static func cIdentity(_ url: String, variables: [(String, String)]) -> String? {
        var storage: [UnsafeMutablePointer<CChar>?] = variables.map { strdup("\($0.0)=\($0.1)") }
        storage.append(nil)
        defer { storage.forEach { free($0) } }
        var out = [CChar](repeating: 0, count: 4096)
        let count = storage.withUnsafeBufferPointer { cprocess_early_token_store_identity(url, $0.baseAddress, &out, UInt(out.count)) }
        guard count >= 0 else { return nil }
        return String(decoding: out[0..<Int(count)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    @Test("a team vault's identity: wherever the C side names one, PostgresLocation parses the URL to the same (40,000 URLs)")
    func storeIdentity() throws {
        let schemes = ["postgres://", "postgresql://", "Postgres://"]
        let users = ["u", "bench", "a.b-c_d", "", "User", "u%40x", "u:pw", "ü", "u@v"]
        let hosts = ["127.0.0.1", "localhost", "db.example", "db.", "DB.example", "xn--bcher-kva.example", "a.xn--p1ai", "[::1]", "", "h_1", "a..b", "-h"]
        let ports = ["", ":5432", ":0", ":1", ":65535", ":65536", ":05432", ":", ":x", ":123456"]
        let paths = ["/gbg", "/", "//gbg", "/g%62g", "/a/b", "/db.name", "", "/DB-1"]
        let queries = ["", "?", "?schema=team", "?sslmode=disable&schema=team", "?schema=Team", "?schema=pg_x", "?schema=1x", "?schema=",
                       "?schema=" + String(repeating: "s", count: 64), "?sslmode=bogus", "?sslrootcert=/etc/ca.pem&sslmode=verify-full",
                       "?sslmode=verify-ca", "?sslmode=require", "?sslrootcert=", "?host=/run/pg", "?schema=a&schema=b", "?unknown=1",
                       "?schema=team#frag", "?sslmode=require&", "?sslrootcert=/a=b", "?schema=a+b"]
        let environments: [[(String, String)]] = [[], [("PGPORT", "6543")], [("PGUSER", "envuser")], [("PGPORT", "")], [("PGPORT", "x")]]
        var generator = SeededGenerator(seed: 20261130)
        var accepted = 0
        var cases: [(String, [(String, String)])] = [
            ("postgres://bench@127.0.0.1:5432/gbg?sslmode=disable&schema=team", []),
            ("postgresql://u@db.example/vaults", []),
            ("postgres://u@db.example/vaults?schema=gbg_vault&sslrootcert=/etc/ssl/ca.pem", [("PGUSER", "x")]),
        ]
        for _ in 0..<40_000 {
            let url = schemes.randomElement(using: &generator)! + users.randomElement(using: &generator)! + "@"
                + hosts.randomElement(using: &generator)! + ports.randomElement(using: &generator)! + paths.randomElement(using: &generator)!
                + queries.randomElement(using: &generator)!
            cases.append((url, environments.randomElement(using: &generator)!))
        }
        for (url, variables) in cases {
            guard let mine = Self.cIdentity(url, variables: variables) else { continue }
            accepted += 1
            let location = try PostgresLocation.parse(url, variable: { name in variables.first { $0.0 == name }?.1 }, readPasswordFile: false)
            #expect(mine == location.identity, "\(url) \(variables)")
        }
        print("team vault URLs named by the C side: \(accepted) of \(cases.count)")
        #expect(accepted >= 3 && accepted < cases.count, "some URLs are served, others left to main (\(accepted) of \(cases.count))")
        for url in ["postgres://bench@127.0.0.1:5432/gbg?sslmode=disable&schema=team", "postgresql://u@db.example/vaults"] {
            #expect(Self.cIdentity(url, variables: []) != nil, "\(url)")
        }
    }

    @Test("a team vault's request: the store identity instead of the file's, read as the Swift client's")
    func storeRequest() throws {
        let store = "postgres://bench@127.0.0.1:5432/gbg?schema=team"
        for profile in Self.profiles {
            var out = [CChar](repeating: 0, count: 16 * 1024)
            let count = cprocess_early_token_request(profile, store, 0, 0, nil, &out, UInt(out.count))
            let bytes = out[0..<Int(try #require(count >= 0 ? count : nil))].map { UInt8(bitPattern: $0) }
            var expected = AgentTokenAsk(vaultPath: store, profile: profile).request(action: "token") { _ in nil }
            expected.store = store
            expected.reply = "bare"
            #expect(AgentRequest.decodeStrict(bytes) == expected, "\(profile.debugDescription)")
        }
    }
}
