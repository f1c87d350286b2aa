import CProcess
import Foundation
import Testing
@testable import VaultCore

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
                    cprocess_early_token_request(name.baseAddress, device, inode, envp.baseAddress, &out, UInt(out.count))
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
}
