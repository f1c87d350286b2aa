import Foundation
import Testing
@testable import VaultCore
import VaultTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// `vault token …` while an agent serves the vault is done by a constructor of the `vault`
/// executable, in C, before the Swift program starts (Sources/CTokenClient), with the same
/// request writer as the Swift commands. These run the built binary: against a recording
/// stand-in agent, every spelling must send the same bytes whichever client sends them; every
/// answer but an output must reach `main`, which reports it as its own; against a real agent,
/// every spelling must be served before `main`.
@Suite("sessions: vault token's client before main", .serialized)
struct TokenClientTests {
    /// The vault's socket in `runtime`, as the agent names it (by the file's device and inode).
    static func socket(of vault: TestVault, runtime: String) throws -> String {
        var file = stat()
        try #require(stat(vault.path, &file) == 0)
        return runtime + "/gbg-vault/agent-file-\(file.st_dev)-\(file.st_ino).sock"
    }

    /// The spellings of one token request the full parser accepts, with their environment.
    static func spellings(vault: TestVault, ca: String, passphraseFile: String, dataHome: String) -> [([String], [String: String])] {
        [
            (["token", "pw"], [:]),
            (["token", "pw", "--env", "local"], [:]),
            (["token", "--env", "local", "pw"], [:]),
            (["token", "--env=local", "pw"], [:]),
            (["--vault", vault.path, "token", "pw"], [:]),
            (["--vault=\(vault.path)", "token", "pw"], [:]),
            (["token", "pw", "--vault", vault.path], [:]),
            (["token", "pw", "--format", "header"], [:]),
            (["token", "--format=json", "pw"], [:]),
            (["token", "pw", "--format", "env", "--min-ttl", "600"], [:]),
            (["token", "pw", "--min-ttl=0"], [:]),
            (["token", "pw", "--timeout", "2.5", "--connect-timeout", "1"], [:]),
            (["--passphrase-file", passphraseFile, "token", "pw"], [:]),
            (["token", "pw", "--identity", passphraseFile], [:]),
            (["token", "pw"], ["VAULT_PATH": "", "XDG_DATA_HOME": dataHome]),
            (["token", "pw", "--cacert", ca], [:]),
            (["token", "pw"], ["VAULT_CA_BUNDLE": ca]),
            (["token", "pw"], ["HTTPS_PROXY": "http://proxy.example:3128", "no_proxy": "localhost,.internal"]),
        ]
    }

    @Test("every spelling sends the same request bytes from the client before main and from the full parser (VAULT_VERBOSE)")
    func sameRequestBothWays() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        var template = Array("/tmp/gv-XXXXXX".utf8CString)
        let runtime = String(cString: try #require(mkdtemp(&template)))
        defer { try? FileManager.default.removeItem(atPath: runtime) }
        #expect(mkdir(runtime + "/gbg-vault", 0o700) == 0)
        let ca = vault.directory + "/ca.pem", passphraseFile = vault.directory + "/pass"
        #expect(FileManager.default.createFile(atPath: ca, contents: Data("not checked by the client\n".utf8)))
        #expect(FileManager.default.createFile(atPath: passphraseFile, contents: Data(vault.passphrase.utf8), attributes: [.posixPermissions: 0o600]))
        let dataHome = vault.directory + "/data"
        try FileManager.default.createDirectory(atPath: dataHome + "/gbg-vault", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: dataHome + "/gbg-vault/vault.db", withDestinationPath: vault.path)
        let agent = try StandInAgent(path: try Self.socket(of: vault, runtime: runtime),
                                     answer: StandInAgent.failure(exitCode: 6, message: "answered by the stand-in"))
        defer { agent.stop() }
        for (arguments, extra) in Self.spellings(vault: vault, ca: ca, passphraseFile: passphraseFile, dataHome: dataHome) {
            let before = agent.requests.count
            let environment = extra.merging(["XDG_RUNTIME_DIR": runtime]) { $1 }
            let early = try vault.run(arguments, env: environment, removing: ["VAULT_PASSPHRASE"])
            let full = try vault.run(arguments, env: environment.merging(["VAULT_VERBOSE": "1"]) { $1 }, removing: ["VAULT_PASSPHRASE"])
            for result in [early, full] {
                #expect(result.status == 6 && result.stderrText.contains("vault: error: answered by the stand-in"), "\(arguments): \(result.stderrText)")
            }
            let requests = agent.requests.dropFirst(before)
            try #require(requests.count == 2, "\(arguments) \(extra): one request each, \(requests.count) in all")
            #expect(requests.first == requests.last, "\(arguments) \(extra): \(String(decoding: requests.first!, as: UTF8.self)) / \(String(decoding: requests.last!, as: UTF8.self))")
            let read = try AgentRequest.read(requests.first!)
            guard case .token(let token, let network) = read.operation else {
                Issue.record("\(arguments): not a token request")
                continue
            }
            #expect(token.profile == "pw" && token.print && token.action == .token)
            if extra["VAULT_CA_BUNDLE"] != nil || arguments.contains("--cacert") { #expect(network.caBundle == ca) }
        }
        expectNoLeaks(vault)
    }

    @Test("every answer but an output is handed to main, which reports it as its own client does, and asks the agent once")
    func handedOver() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        var template = Array("/tmp/gv-XXXXXX".utf8CString)
        let runtime = String(cString: try #require(mkdtemp(&template)))
        defer { try? FileManager.default.removeItem(atPath: runtime) }
        #expect(mkdir(runtime + "/gbg-vault", 0o700) == 0)
        let socket = try Self.socket(of: vault, runtime: runtime)
        let output = "Authorization: Bearer stand-in-" + UUID().uuidString.lowercased() + "\n"
        LeakScanner.shared.register(token: String(output.dropFirst(22).dropLast()))
        let olderAgent = StandInAgent.frame(Array(#"{"version":1,"ok":true,"token":{"access_token":"x","token_type":"Bearer","expires_at":1,"expires_in":1,"environment":"eu","from_cache":true}}"#.utf8))
        let cases: [(answer: [UInt8], status: Int32, stdout: String, stderr: String)] = [
            (StandInAgent.frame([UInt8(ascii: "O")] + Array(output.utf8)), 0, output, ""),
            (StandInAgent.failure(exitCode: 5, message: "the token endpoint is unavailable"), 5, "", "vault: error: the token endpoint is unavailable"),
            (StandInAgent.failure(exitCode: 1, message: "the agent is ending", ending: true), 64, "", "the agent for this vault is ending"),
            (olderAgent, 64, "", "not one this version reads"),
            (StandInAgent.failure(exitCode: 5, message: "x", version: 1), 64, "", "not one this version reads"),
            ([], 64, "", "closed the connection without a whole answer"),
            ([0xFF, 0xFF, 0xFF, 0xFF], 64, "", "announced a frame larger than 65536 bytes"),
            (StandInAgent.frame(Array("X-unknown".utf8)), 64, "", "not one this version reads"),
            (StandInAgent.frame([]), 64, "", "not one this version reads"),
        ]
        for expected in cases {
            let agent = try StandInAgent(path: socket, answer: expected.answer)
            defer { agent.stop() }
            let result = try vault.run(["token", "pw", "--format", "header"], env: ["XDG_RUNTIME_DIR": runtime], removing: ["VAULT_PASSPHRASE"],
                                       expectTokenOnStdout: expected.status == 0)
            let shown = String(decoding: expected.answer.prefix(40), as: UTF8.self)
            #expect(result.status == expected.status, "\(shown): \(result.stderrText)")
            #expect(result.stdoutText == expected.stdout, "\(shown)")
            #expect(expected.stderr.isEmpty ? result.stderrText.isEmpty : result.stderrText.contains(expected.stderr), "\(shown): \(result.stderrText)")
            #expect(agent.requests.count == 1, "\(shown): the agent is asked once, whatever it answered")
        }
        // Started with stdout closed, the socket would take descriptor 1: the client before
        // main stands aside, and the Swift client asks (one request); the token cannot be
        // written, which is a failure (exit 1, the reason), not a delivery.
        let agent = try StandInAgent(path: socket, answer: StandInAgent.frame([UInt8(ascii: "O")] + Array(output.utf8)))
        defer { agent.stop() }
        var shellEnvironment = vault.environment(["XDG_RUNTIME_DIR": runtime])
        shellEnvironment.removeValue(forKey: "VAULT_PASSPHRASE")
        let closed = try Binaries.run("/bin/sh", ["-c", "exec \"$0\" token pw >&-", Binaries.vault], environment: shellEnvironment)
        #expect(closed.status == 1 && closed.stderrText.contains("cannot write the token to standard output"), "\(closed.stderrText)")
        #expect(agent.requests.count == 1)
        // --no-agent, VAULT_NO_AGENT and --help never reach the agent.
        for (arguments, extra) in [(["token", "pw", "--no-agent"], [String: String]()), (["token", "pw"], ["VAULT_NO_AGENT": "1"]),
                                   (["token", "--help"], [:]), (["token", "pw", "--", "x"], [:])] {
            _ = try vault.run(arguments, env: extra.merging(["XDG_RUNTIME_DIR": runtime]) { $1 }, removing: ["VAULT_PASSPHRASE"])
        }
        #expect(agent.requests.count == 1, "nothing more was sent")
        expectNoLeaks(vault)
    }

    @Test("against a real agent, every spelling is served before main (no thread is ever started) with the same cached token")
    func servedBeforeMain() throws {
        let session = try SessionFixture()
        defer { session.stop() }
        let vault = session.vault
        #expect(try session.run(["unlock", "--for", "10m"]).status == 0)
        let first = try session.run(["token", "pw"], passphrase: false, token: true)
        #expect(first.status == 0, "\(first.stderrText)")
        let token = first.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)
        let passphraseFile = vault.directory + "/pass"
        #expect(FileManager.default.createFile(atPath: passphraseFile, contents: Data(vault.passphrase.utf8), attributes: [.posixPermissions: 0o600]))
        let dataHome = vault.directory + "/data"
        try FileManager.default.createDirectory(atPath: dataHome + "/gbg-vault", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: dataHome + "/gbg-vault/vault.db", withDestinationPath: vault.path)
        let strace = "/usr/bin/strace"
        try #require(FileManager.default.isExecutableFile(atPath: strace), "strace is not installed (scripts/setup.sh installs it)")
        let spellings = Self.spellings(vault: vault, ca: "", passphraseFile: passphraseFile, dataHome: dataHome)
            .filter { !$0.0.contains("--cacert") && $0.1["VAULT_CA_BUNDLE"] == nil && $0.1["HTTPS_PROXY"] == nil }
        for (arguments, extra) in spellings {
            var environment = vault.environment(session.env.merging(extra) { $1 })
            environment.removeValue(forKey: "VAULT_PASSPHRASE")
            let trace = vault.directory + "/threads.trace"
            let result = try Binaries.run(strace, ["-f", "-qq", "-e", "trace=clone,clone3", "-o", trace, Binaries.vault] + arguments,
                                          environment: environment)
            #expect(result.status == 0, "\(arguments) \(extra): \(result.stderrText)")
            vault.scanner.scan(result.stderr, artefact: "stderr of vault token", includeTokens: true)
            #expect(result.stdoutText.contains(token), "\(arguments): the same cached token")
            let threads = (try? String(contentsOfFile: trace, encoding: .utf8)) ?? "?"
            #expect(!threads.contains("clone"), "\(arguments) \(extra): the Swift program ran (\(threads.prefix(200)))")
        }
        // A request the agent refuses goes to main, which reports it with its exit code.
        let other = try session.run(["token", "pw", "--timeout", "900"], passphrase: false)
        #expect(other.status == 64 && other.stderrText.contains("--timeout must be between"), "\(other.stderrText)")
        expectNoLeaks(vault)
    }
}
