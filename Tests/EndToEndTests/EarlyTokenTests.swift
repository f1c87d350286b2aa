import CProcess
import Foundation
import Testing
@testable import VaultCore
import VaultTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// `vault token NAME` while an agent serves the vault is done by the executable's first
/// constructor, in C, before the Swift runtime starts (`CProcess/EarlyToken.c`). These run
/// that code in this process against a real agent (what it serves and what it leaves alone,
/// sending nothing), and the built binary against a stand-in agent for every answer it must
/// hand over to `main`.
@Suite("sessions: vault token NAME served before main", .serialized)
struct EarlyTokenTests {
    /// The constructor's work for `arguments` under `environment`, without printing or exiting.
    static func exchange(_ arguments: [String], _ environment: [String: String]) -> (status: Int32, answer: [UInt8]) {
        let argv = arguments.map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        let status = argv.withUnsafeBufferPointer { argv in
            envp.withUnsafeBufferPointer { envp in
                cprocess_early_token_exchange(Int32(arguments.count), argv.baseAddress, envp.baseAddress)
            }
        }
        var bytes: UnsafePointer<UInt8>?
        var length: UInt = 0
        _ = cprocess_early_token_claim(&bytes, &length)
        let answer = Array(UnsafeBufferPointer(start: bytes, count: Int(length)))
        cprocess_early_token_wipe()
        return (status, answer)
    }

    @Test("in process against a real agent: a bare token for `token NAME`, a JSON error handed over, and nothing sent for any other shape or setting")
    func againstTheAgent() throws {
        let session = try SessionTests.Session()
        defer { session.stop() }
        #expect(try session.run(["unlock", "--for", "10m"]).status == 0)
        let vault = session.vault
        var environment = vault.environment(session.env)
        environment.removeValue(forKey: "VAULT_PASSPHRASE")

        let served = Self.exchange(["vault", "token", "pw"], environment)
        #expect(served.status == Int32(CPROCESS_EARLY_BARE_TOKEN))
        let token = String(decoding: served.answer, as: UTF8.self)
        LeakScanner.shared.register(token: token)
        #expect(TokenExchange.isValidToken(token))
        // The binary's own answer (the constructor's, printed) is the same cached token.
        let printed = try session.run(["token", "pw"], passphrase: false, token: true)
        #expect(printed.status == 0 && printed.stdoutText == token + "\n" && printed.stderrText.isEmpty, "\(printed.stderrText)")

        // An error is a JSON answer, for main to report (exit 6 and its message).
        let missing = Self.exchange(["vault", "token", "nobody"], environment)
        #expect(missing.status == Int32(CPROCESS_EARLY_ANSWER))
        let response = try AgentClient.decode(missing.answer)
        #expect(!response.ok && response.error?.exitCode == 6, "\(String(decoding: missing.answer, as: UTF8.self))")

        // The default path from XDG_DATA_HOME, else HOME (a link to the vault file: same
        // device and inode, so the agent's link is found).
        let data = vault.directory + "/xdg-data", home = vault.directory + "/home"
        for directory in [data + "/gbg-vault", home + "/.local/share/gbg-vault"] {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try FileManager.default.createSymbolicLink(atPath: directory + "/vault.db", withDestinationPath: vault.path)
        }
        var byDefault = environment
        byDefault.removeValue(forKey: "VAULT_PATH")
        byDefault["XDG_DATA_HOME"] = data
        #expect(Self.exchange(["vault", "token", "pw"], byDefault).status == Int32(CPROCESS_EARLY_BARE_TOKEN))
        byDefault.removeValue(forKey: "XDG_DATA_HOME")
        byDefault["HOME"] = home
        #expect(Self.exchange(["vault", "token", "pw"], byDefault).status == Int32(CPROCESS_EARLY_BARE_TOKEN))
        byDefault.removeValue(forKey: "HOME")
        #expect(Self.exchange(["vault", "token", "pw"], byDefault).status == Int32(CPROCESS_EARLY_NONE), "no HOME: main decides")

        // Anything else sends nothing: not one audit record more.
        let before = try session.fixture.auditJSON(["--limit", "100000"]).count
        try vault.sql("PRAGMA wal_checkpoint(TRUNCATE)")
        let copy = vault.path + ".copy.db"
        try FileManager.default.copyItem(atPath: vault.path, toPath: copy)
        defer { try? FileManager.default.removeItem(atPath: copy) }
        let otherRuntime = vault.directory + "/other-runtime"
        try FileManager.default.createDirectory(atPath: otherRuntime + "/gbg-vault", withIntermediateDirectories: true)
        let unserved: [([String], [String: String])] = [
            (["vault", "token", "pw", "--fresh"], [:]),
            (["vault", "token", "pw", "--format", "json"], [:]),
            (["vault", "--vault", vault.path, "token", "pw"], [:]),
            (["vault", "token", "-pw"], [:]),
            (["vault", "token", "--help"], [:]),
            (["vault", "token", ""], [:]),
            (["vault", "status", "pw"], [:]),
            (["vault", "token"], [:]),
            (["vault", "token", "p\u{1}w"], [:]),
            (["vault", "token", "pw"], ["VAULT_NO_AGENT": "0"]),
            (["vault", "token", "pw"], ["VAULT_NO_AGENT": ""]),
            (["vault", "token", "pw"], ["VAULT_VERBOSE": "no"]),
            (["vault", "token", "pw"], ["VAULT_PATH": "postgres://vault@127.0.0.1:1/gbg"]),
            (["vault", "token", "pw"], ["VAULT_PATH": vault.directory]),
            (["vault", "token", "pw"], ["VAULT_PATH": vault.path + ".missing"]),
            (["vault", "token", "pw"], ["VAULT_PATH": copy]),
            (["vault", "token", "pw"], ["XDG_RUNTIME_DIR": otherRuntime]),
            (["vault", "token", "pw"], ["XDG_RUNTIME_DIR": "relative/dir"]),
        ]
        for (arguments, extra) in unserved {
            let result = Self.exchange(arguments, environment.merging(extra) { $1 })
            #expect(result.status == Int32(CPROCESS_EARLY_NONE), "\(arguments) \(extra)")
        }
        #expect(try session.fixture.auditJSON(["--limit", "100000"]).count == before, "nothing was sent")

        // The socket of a killed agent: nothing sent, nothing removed (the binary's client
        // removes it, with its hint, and goes the passphrase way).
        let socket = try #require(session.socketPath)
        let pid = try #require(try session.status()["pid"] as? Int)
        kill(pid_t(pid), SIGKILL)
        usleep(300_000)
        #expect(Self.exchange(["vault", "token", "pw"], environment).status == Int32(CPROCESS_EARLY_NONE))
        var info = stat()
        #expect(lstat(socket, &info) == 0, "left for vault's client to clean up")
        let fallback = try session.run(["token", "pw"], passphrase: false)
        #expect(fallback.status == 64 && fallback.stderrText.contains("stale socket was removed"), "\(fallback.stderrText)")
        #expect(lstat(socket, &info) != 0)
        expectNoLeaks(vault)
    }

    @Test("the built binary against a stand-in agent: every answer but a bare token is handed to main, which reports it as vault's own client does")
    func handedOver() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        var template = Array("/tmp/gv-XXXXXX".utf8CString)
        let runtime = String(cString: try #require(mkdtemp(&template)))
        defer { try? FileManager.default.removeItem(atPath: runtime) }
        // The agent directory as an agent makes it: the socket and the link by the vault
        // file's device and inode.
        let directory = runtime + "/gbg-vault"
        #expect(mkdir(directory, 0o700) == 0)
        let name = "agent-" + String(repeating: "5a", count: 16) + ".sock"
        var file = stat()
        #expect(stat(vault.path, &file) == 0)
        #expect(symlink(name, directory + "/agent-file-\(file.st_dev)-\(file.st_ino)") == 0)
        var environment = ["XDG_RUNTIME_DIR": runtime]
        environment["VAULT_CA_BUNDLE"] = "/nonexistent/ca.pem"

        func frame(_ body: [UInt8]) -> [UInt8] {
            let count = UInt32(body.count)
            return [UInt8(count >> 24), UInt8(count >> 16 & 0xFF), UInt8(count >> 8 & 0xFF), UInt8(count & 0xFF)] + body
        }
        let olderAgentToken = "older-agent-token-" + UUID().uuidString.lowercased()
        let bareToken = "bare.Token_~+/" + UUID().uuidString.lowercased() + "=="
        LeakScanner.shared.register(token: olderAgentToken)
        LeakScanner.shared.register(token: bareToken)
        let olderAgent = #"{"version":1,"ok":true,"token":{"access_token":"\#(olderAgentToken)","token_type":"Bearer","expires_at":4102444800,"expires_in":3599,"environment":"local","from_cache":true}}"#
        let cases: [(answer: [UInt8], status: Int32, stdout: String, stderr: String)] = [
            (frame(Array(bareToken.utf8)), 0, bareToken + "\n", ""),
            (frame(Array(olderAgent.utf8)), 0, olderAgentToken + "\n", ""),
            (frame(Array(#"{"version":1,"ok":false,"error":{"exit_code":5,"message":"the token endpoint is unavailable"}}"#.utf8)), 5, "",
             "vault: error: the token endpoint is unavailable"),
            (frame(Array(#"{"version":1,"ok":false,"ending":true}"#.utf8)), 64, "", "the agent for this vault is ending"),
            (frame(Array(#"{"version":1,"ok":false,"other_file":true}"#.utf8)), 64, "", "serves another copy of this vault"),
            ([], 64, "", "the agent did not answer properly (the agent closed the connection)"),
            ([0xFF, 0xFF, 0xFF, 0xFF], 64, "", "announced a frame larger than 65536 bytes"),
            (frame(Array("not a token!".utf8)), 64, "", "without a valid answer"),
            (frame([]), 64, "", "without a valid answer"),
        ]
        for expected in cases {
            let agent = try StandInAgent(path: directory + "/" + name, answer: expected.answer)
            defer { agent.stop() }
            let result = try vault.run(["token", "pw"], env: environment, removing: ["VAULT_PASSPHRASE"],
                                       expectTokenOnStdout: expected.status == 0)
            let shown = String(decoding: expected.answer.prefix(40), as: UTF8.self)
            #expect(result.status == expected.status, "\(shown): \(result.stderrText)")
            #expect(result.stdoutText == expected.stdout, "\(shown)")
            #expect(expected.stderr.isEmpty ? result.stderrText.isEmpty : result.stderrText.contains(expected.stderr),
                    "\(shown): \(result.stderrText)")
            // The first request is the constructor's: the agent's strict reader takes it, and
            // it asks for a bare answer for this file.
            let request = try #require(agent.requests.first.flatMap { AgentRequest.decodeStrict($0) })
            #expect(request.op == "token" && request.profile == "pw" && request.reply == "bare" && request.action == "token")
            #expect(request.fileDevice == UInt64(file.st_dev) && request.fileInode == UInt64(file.st_ino))
            #expect(request.caBundle == "/nonexistent/ca.pem" && request.minTTL == 300 && request.fresh == false)
            // A bare token or a token is taken from the first answer; nothing is asked twice.
            if expected.status == 0 { #expect(agent.requests.count == 1) }
        }
        // Started with stdout closed, the constructor's socket would take descriptor 1: it
        // stands aside, and vault's client asks (a JSON answer) and prints the token to the
        // closed descriptor, quietly.
        let agent = try StandInAgent(path: directory + "/" + name, answer: frame(Array(olderAgent.utf8)))
        defer { agent.stop() }
        var shellEnvironment = vault.environment(environment)
        shellEnvironment.removeValue(forKey: "VAULT_PASSPHRASE")
        let closed = try Binaries.run("/bin/sh", ["-c", "exec \"$0\" token pw >&-", Binaries.vault], environment: shellEnvironment)
        #expect(closed.status == 0 && closed.stderrText.isEmpty, "\(closed.stderrText)")
        #expect(agent.requests.count == 1 && agent.requests.first.flatMap { AgentRequest.decodeStrict($0) }?.reply == nil,
                "one request, from vault's Swift client (no bare answer asked)")
        expectNoLeaks(vault)
    }
}

/// A stand-in agent on a Unix socket: reads each request frame, records it, answers with
/// `answer` verbatim (length prefix included, or any bytes at all) and closes.
final class StandInAgent: @unchecked Sendable {
    private let listener: Int32
    private let path: String
    private let answer: [UInt8]
    private let lock = NSLock()
    private var received: [[UInt8]] = []
    private let done = DispatchSemaphore(value: 0)

    var requests: [[UInt8]] { lock.withLock { received } }

    init(path: String, answer: [UInt8]) throws {
        self.path = path
        self.answer = answer
        unlink(path)
        listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard listener >= 0, bound == 0, listen(listener, 16) == 0 else { throw HarnessError.spawnFailed("stand-in agent at \(path)") }
        chmod(path, 0o600)
        let thread = Thread { [self] in serve() }
        thread.start()
    }

    private func serve() {
        defer { done.signal() }
        while true {
            let connection = accept(listener, nil, nil)
            if connection < 0 {
                if errno == EINTR { continue }
                return  // stop() shut the listener down
            }
            var timeout = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(connection, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            var bytes: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 4096)
            while true {
                if bytes.count >= 4 {
                    let length = Int(bytes[0]) << 24 | Int(bytes[1]) << 16 | Int(bytes[2]) << 8 | Int(bytes[3])
                    if bytes.count >= length + 4 {
                        lock.withLock { received.append(Array(bytes[4..<(4 + length)])) }
                        break
                    }
                }
                let count = chunk.withUnsafeMutableBytes { recv(connection, $0.baseAddress, $0.count, 0) }
                if count <= 0 { break }
                bytes += chunk[0..<count]
            }
            _ = answer.withUnsafeBytes { send(connection, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            close(connection)
        }
    }

    func stop() {
        shutdown(listener, Int32(SHUT_RDWR))
        done.wait()
        close(listener)
        unlink(path)
    }
}
