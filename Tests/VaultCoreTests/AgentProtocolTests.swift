import CAgent
import CProcess
import Foundation
import Testing
import VaultTestSupport
@testable import VaultCore
#if canImport(Glibc)
import Glibc
#endif

/// The agent protocol's one writer of requests (CAgent's `vault_agent_write_request`, used by
/// every client) against its one reader (`AgentRequest.read`, in the agent), the answers'
/// writer against their reader, and the location rules, all in this process.
@Suite("agent protocol: one writer, one reader, the location rules")
struct AgentProtocolTests {
    @Test("the agent's hand-over channel cannot be opened again through /proc/PID/fd, as a pipe can")
    func handOverChannelIsNotReopenable() throws {
        var socketEnds: [Int32] = [-1, -1], pipeEnds: [Int32] = [-1, -1]
        #expect(cprocess_socketpair_cloexec(&socketEnds) == 0 && cprocess_pipe_cloexec(&pipeEnds) == 0)
        defer { for fd in socketEnds + pipeEnds where fd >= 0 { close(fd) } }
        let socketViaProc = open("/proc/self/fd/\(socketEnds[0])", O_RDONLY | O_NONBLOCK)
        let socketError = errno
        #expect(socketViaProc == -1 && socketError == ENXIO, "a socket cannot be reopened by path")
        let pipeViaProc = open("/proc/self/fd/\(pipeEnds[0])", O_RDONLY | O_NONBLOCK)
        #expect(pipeViaProc >= 0, "the control: a pipe can (what the agent's key once went through)")
        if pipeViaProc >= 0 { close(pipeViaProc) }
        if socketViaProc >= 0 { close(socketViaProc) }
    }

    /// Strings that stress the escaping: quotes, backslashes, every control character,
    /// DEL, multi-byte UTF-8, a lone combining mark, an emoji, JSON look-alikes.
    static let awkward: [String] = [
        "plain", "with \"quotes\"", "back\\slash", "\\\"", "line\nbreak\r\ttab",
        String((1..<32).map { Character(UnicodeScalar(UInt8($0))) }), "\u{7F}", "é", "\u{301}", "👩🏽‍💻", "𝄞",
        "{\"op\":\"lock\"}", "\u{2028}\u{2029}", "/slash/", "%00", "acme", "eu",
    ]

    /// `body` with a C environment made of `variables` (NAME=value strings).
    static func withEnvironment<T>(_ variables: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> T) -> T {
        let envp = variables.map { strdup($0) } + [nil]
        defer { envp.forEach { free($0) } }
        return envp.withUnsafeBufferPointer { body($0.baseAddress!) }
    }

    /// The request `request` as the C writer writes it under `variables`, or nil when it refuses.
    static func written(_ request: AgentTokenRequest?, op: Int32 = Int32(VAULT_AGENT_OP_TOKEN), cacert: String? = nil,
                        variables: [String] = []) -> [UInt8]? {
        var c = vault_agent_request()
        c.op = op
        c.min_ttl = request?.minTTL ?? -1
        c.timeout_ms = request?.timeoutMs ?? -1
        c.connect_timeout_ms = request?.connectTimeoutMs ?? -1
        c.fresh = request?.fresh == true ? 1 : 0
        c.print = request?.print == true ? 1 : 0
        c.action = Int32(request?.action == .exec ? VAULT_AGENT_ACTION_EXEC : VAULT_AGENT_ACTION_TOKEN)
        var out = [CChar](repeating: 0, count: 16 * 1024)
        let profile = request.map { strdup($0.profile) } ?? nil
        let environment = request?.environment.map { strdup($0) } ?? nil
        let format = request?.format.map { strdup($0.rawValue) } ?? nil
        let bundle = cacert.map { strdup($0) } ?? nil
        defer { for pointer in [profile, environment, format, bundle] { free(pointer) } }
        c.profile = UnsafePointer(profile)
        c.environment = UnsafePointer(environment)
        c.format = UnsafePointer(format)
        c.ca_bundle = UnsafePointer(bundle)
        let length = withEnvironment(variables) { envp in vault_agent_write_request(&c, envp, &out, out.count) }
        guard length >= 0 else { return nil }
        return out.prefix(length).map { UInt8(bitPattern: $0) }
    }

    @Test("a token request the writer writes is read back as the same typed request, for 3,000 generated requests with awkward text")
    func roundTrip() throws {
        var generator = SeededGenerator(seed: 20261206)
        func pick<T>(_ values: [T]) -> T { values[Int(generator.next() % UInt64(values.count))] }
        func maybe<T>(_ make: () -> T) -> T? { generator.next() % 3 == 0 ? nil : make() }
        for _ in 0..<3000 {
            let request = AgentTokenRequest(
                profile: pick(Self.awkward) + pick(["", "-x", "\u{1}"]), environment: maybe { pick(Self.awkward) },
                print: generator.next() % 2 == 0, format: maybe { pick(TokenFormat.allCases) },
                action: pick([TokenAction.token, .exec]), fresh: generator.next() % 2 == 0,
                minTTL: maybe { Int64(generator.next() % 40_000_000) }, timeoutMs: maybe { Int64(generator.next() % 700_000) },
                connectTimeoutMs: maybe { Int64(generator.next() % 700_000) })
            let proxies = ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"]
            let set = proxies.filter { _ in generator.next() % 3 == 0 }
            let values = Dictionary(uniqueKeysWithValues: set.map { ($0, pick(Self.awkward)) })
            let variables = values.map { "\($0.key)=\($0.value)" } + ["UNRELATED=1", "VAULT_CA_BUNDLE=\(pick(["", "/nonexistent/ca.pem"]))"]
            let bytes = try #require(Self.written(request, variables: variables))
            #expect(String(validating: bytes, as: UTF8.self) != nil && !bytes.contains { $0 < 0x20 }, "escaped, valid UTF-8")
            let read = try AgentRequest.read(bytes)
            let bundle = variables.contains("VAULT_CA_BUNDLE=/nonexistent/ca.pem") ? "/nonexistent/ca.pem" : nil
            #expect(read == AgentRequest(version: AgentProtocol.version,
                                         operation: .token(request, network: AgentNetwork(caBundle: bundle, proxy: values))))
        }
    }

    @Test("the other operations, and what the writer refuses: a string that is not UTF-8, no profile, an unknown operation")
    func operationsAndRefusals() throws {
        let operations: [(Int32, AgentOperation)] = [(Int32(VAULT_AGENT_OP_STATUS), .status), (Int32(VAULT_AGENT_OP_LOCK), .lock),
                                                      (Int32(VAULT_AGENT_OP_VERIFY), .verify), (Int32(VAULT_AGENT_OP_AUDIT_VERIFY), .auditVerify)]
        for (op, expected) in operations {
            let bytes = try #require(Self.written(nil, op: op, variables: ["HTTPS_PROXY=http://x:1"]))
            #expect(try AgentRequest.read(bytes).operation == expected)
            #expect(!String(decoding: bytes, as: UTF8.self).contains("proxy"), "the network settings go with token requests only")
        }
        #expect(Self.written(nil) == nil, "a token request needs a profile")
        #expect(Self.written(nil, op: 0) == nil && Self.written(nil, op: 99) == nil)
        // Bytes that are not UTF-8, as argv or the environment can hold them.
        var c = vault_agent_request()
        c.op = Int32(VAULT_AGENT_OP_TOKEN)
        var out = [CChar](repeating: 0, count: 4096)
        let bad: [CChar] = [0x70, CChar(bitPattern: 0xC3), 0x28, 0]
        let length = bad.withUnsafeBufferPointer { profile in
            c.profile = profile.baseAddress
            return vault_agent_write_request(&c, nil, &out, out.count)
        }
        #expect(length == -1, "invalid UTF-8 is refused, never sent")
        // Too small a buffer: refused, not cut.
        c.op = Int32(VAULT_AGENT_OP_STATUS)
        #expect(vault_agent_write_request(&c, nil, &out, 10) == -1)
    }

    @Test("the reader: each refusal names what is wrong; unknown fields are ignored")
    func readerRules() throws {
        func refusal(_ text: String) -> String? {
            do {
                _ = try AgentRequest.read(Array(text.utf8))
                return nil
            } catch {
                #expect(error.exitCode == 64)
                return error.message
            }
        }
        let cases: [(String, String)] = [
            (#"{"version":1,"op":"status"}"#, "version 1 is not supported"),
            (#"{"version":2,"op":"env-add","environment":"evil","token_url":"http://127.0.0.1:9/t"}"#, "unknown agent operation 'env-add'"),
            (#"{"version":2,"op":"member-add"}"#, "unknown agent operation 'member-add'"),
            (#"{"version":2,"op":"add","client_secret":"eA=="}"#, "unknown agent operation 'add'"),
            (#"{"version":2,"op":"token","token":{"profile":"p"}}"#, "needs its token and network fields"),
            (#"{"version":2,"op":"token","token":{"profile":"p","format":"xml"},"network":{"proxy":{}}}"#, "unknown token format 'xml'"),
            (#"{"version":2,"op":"token","token":{"profile":"p","action":"refresh"},"network":{"proxy":{}}}"#, "unknown token action 'refresh'"),
            (#"{"version":2,"op":"token","token":{"profile":"p","min_ttl":1.5},"network":{"proxy":{}}}"#, "not a valid agent protocol message"),
            (#"{"version":2,"op":"status"} trailing"#, "not a valid agent protocol message"),
            ("not json", "not a valid agent protocol message"),
            ("", "not a valid agent protocol message"),
        ]
        for (text, expected) in cases {
            let message = refusal(text)
            #expect(message?.contains(expected) == true, "\(text): \(message ?? "accepted")")
        }
        let lenient = try AgentRequest.read(Array(#"{"version":2,"op":"status","from_the_future":[1,{"x":null}]}"#.utf8))
        #expect(lenient.operation == .status)
    }

    @Test("answers: every kind is read back as written; an unknown kind or another version is no answer")
    func answers() throws {
        let status = AgentAnswer.Status(pid: 7, vault: "/v.db", unlockedAt: 1, expiresAt: 2, idleSeconds: 3, idleExpiresAt: 4, requests: 5,
                                        network: AgentNetwork(caBundle: "/ca", proxy: ["NO_PROXY": "*"]),
                                        keepFresh: [.init(profile: "p", environment: nil, expiresAt: 9, nextRefreshAt: 8, refreshes: 1,
                                                          failures: 0, lastError: nil)])
        let token = AgentAnswer.Token(accessToken: "abc.DEF_~+/=", tokenType: "Bearer", expiresAt: 9, expiresIn: 3, environment: "eu",
                                      apiBase: "https://eu.platform.go.gbgplc.com/v2/captain/", fromCache: true)
        var report = FullVerification()
        report.problems = ["one \"problem\"\n"]
        let answers: [AgentAnswer] = [
            .output(SecureBytes(copying: Array("Authorization: Bearer x\n".utf8))), .token(token), .status(status), .verification(report),
            .audit(.init(recordsChecked: 3, failureSeq: 2, failureReason: "bad")),
            .failure(.init(.notFound("no profile named 'x'"))), .failure(.init(.failure("ending"), ending: true)),
        ]
        for answer in answers {
            let read = try #require(AgentAnswer.read(answer.frame()))
            switch (answer, read) {
            case (.output(let a), .output(let b)): #expect(a.constantTimeEquals(b))
            case (.token(let a), .token(let b)): #expect(a.accessToken == b.accessToken && a.apiBase == b.apiBase && a.fromCache == b.fromCache)
            case (.status(let a), .status(let b)): #expect(a.pid == b.pid && a.network == b.network && b.keepFresh.count == 1)
            case (.verification(let a), .verification(let b)): #expect(a.problems == b.problems)
            case (.audit(let a), .audit(let b)): #expect(a.failureSeq == b.failureSeq && a.failureReason == b.failureReason)
            case (.failure(let a), .failure(let b)): #expect(a == b)
            default: Issue.record("\(answer) was read as \(read)")
            }
        }
        #expect(AgentAnswer.read([]) == nil)
        #expect(AgentAnswer.read(Array(#"{"version":2,"ok":true}"#.utf8)) == nil, "no kind byte")
        #expect(AgentAnswer.read([UInt8(ascii: "J")] + Array(#"{"version":1,"ok":false,"error":{"exit_code":1,"message":"x"}}"#.utf8)) == nil)
        #expect(AgentAnswer.read([UInt8(ascii: "J")] + Array(#"{"version":2,"ok":true}"#.utf8)) == nil, "ok, but nothing in it")
    }

    @Test("a proxy's user and password are never shown")
    func redaction() {
        let network = AgentNetwork(caBundle: "/ca.pem", proxy: ["HTTPS_PROXY": "http://alice:s3cret@proxy.example:3128", "HTTP_PROXY": "bob:pw@proxy:80",
                                                                  "ALL_PROXY": "socks5://proxy:1080/x@y", "NO_PROXY": "localhost,.internal"])
        #expect(network.redacted.proxy == ["HTTPS_PROXY": "http://***@proxy.example:3128", "HTTP_PROXY": "***@proxy:80",
                                           "ALL_PROXY": "socks5://proxy:1080/x@y", "NO_PROXY": "localhost,.internal"])
        #expect(network.redacted.caBundle == "/ca.pem")
    }

    @Test("where: the agent directory, the default vault, the socket names and the URL link follow one rule each")
    func location() throws {
        func name(_ variables: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>, UnsafeMutablePointer<CChar>, Int) -> Int32) -> String? {
            var out = [CChar](repeating: 0, count: 4096)
            let ok = Self.withEnvironment(variables) { body($0, &out, out.count) }
            return ok == 1 ? String(cString: out) : nil
        }
        let directory = { (variables: [String]) in name(variables) { vault_agent_directory($0, $1, $2) } }
        #expect(directory(["XDG_RUNTIME_DIR=/run/user/5"]) == "/run/user/5/gbg-vault")
        #expect(directory(["XDG_RUNTIME_DIR=/run/user/5//"]) == "/run/user/5/gbg-vault")
        #expect(directory(["XDG_RUNTIME_DIR=/"]) == "/gbg-vault")
        #expect(directory(["XDG_RUNTIME_DIR=relative"]) == "/tmp/gbg-vault-\(geteuid())", "a relative directory is not used")
        #expect(directory(["XDG_RUNTIME_DIR="]) == "/tmp/gbg-vault-\(geteuid())")
        #expect(directory([]) == "/tmp/gbg-vault-\(geteuid())")
        let vaultPath = { (variables: [String]) in name(variables) { vault_default_vault_path($0, $1, $2) } }
        #expect(vaultPath(["VAULT_PATH=/v.db", "HOME=/h"]) == "/v.db")
        #expect(vaultPath(["VAULT_PATH=", "XDG_DATA_HOME=/d", "HOME=/h"]) == "/d/gbg-vault/vault.db")
        #expect(vaultPath(["HOME=/h"]) == "/h/.local/share/gbg-vault/vault.db")
        #expect(vaultPath([])?.hasSuffix("/.local/share/gbg-vault/vault.db") == true, "without HOME, the password database's home")
        let file = name(["XDG_RUNTIME_DIR=/r"]) { vault_agent_socket_for_file(2049, 77, $0, $1, $2) }
        #expect(file == "/r/gbg-vault/agent-file-2049-77.sock")
        let store = name(["XDG_RUNTIME_DIR=/r"]) { vault_agent_socket_for_store("postgres://u@h:5432/d?schema=s", $0, $1, $2) }
        let digest = Sodium.blake2b(Array("postgres://u@h:5432/d?schema=s".utf8), length: 16).hexString
        #expect(store == "/r/gbg-vault/agent-pg-\(digest).sock")
        // The URL link: the URL as given and the variables its meaning depends on.
        let url = "postgres://h/d?schema=s"
        let link = { (variables: [String]) in name(["XDG_RUNTIME_DIR=/r"] + variables) { vault_agent_url_link(url, $0, $1, $2) } }
        let plain = try #require(link([]))
        #expect(plain == "/r/gbg-vault/agent-url-" + Sodium.blake2b(Array("\(url)\n\n".utf8), length: 16).hexString)
        #expect(link(["PGUSER=alice"]) != plain && link(["PGPORT=5433"]) != plain && link(["PGUSER=alice"]) != link(["PGPORT=alice"]))
        #expect(link(["PGHOST=elsewhere", "PGPASSWORD=x"]) == plain)
    }

    @Test("locate: a file by its device and inode, a URL only through a link of the exact shape; the directory check")
    func locateAndDirectory() throws {
        var template = Array("/tmp/gv-loc-XXXXXX".utf8CString)
        let root = String(cString: try #require(mkdtemp(&template)))
        defer { try? FileManager.default.removeItem(atPath: root) }
        let runtime = ["XDG_RUNTIME_DIR=\(root)"]
        func locate(_ vault: String, _ variables: [String] = []) -> String? {
            var out = [CChar](repeating: 0, count: 4096)
            let found = Self.withEnvironment(runtime + variables) { vault_agent_locate(vault, $0, &out, out.count) }
            return found == 1 ? String(cString: out) : nil
        }
        let vault = root + "/v.db"
        #expect(FileManager.default.createFile(atPath: vault, contents: Data()))
        var info = stat()
        #expect(stat(vault, &info) == 0)
        #expect(locate(vault) == "\(root)/gbg-vault/agent-file-\(info.st_dev)-\(info.st_ino).sock")
        #expect(locate(root) == nil, "a directory is not a vault")
        #expect(locate(root + "/missing.db") == nil)
        #expect(mkdir(root + "/gbg-vault", 0o700) == 0)
        let url = "postgres://u@h/d"
        #expect(locate(url) == nil, "no link")
        var out = [CChar](repeating: 0, count: 4096)
        #expect(Self.withEnvironment(runtime) { vault_agent_url_link(url, $0, &out, out.count) } == 1)
        let link = String(cString: out)
        let socketName = "agent-pg-" + String(repeating: "0a", count: 16) + ".sock"
        for (target, expected) in [(socketName, "\(root)/gbg-vault/\(socketName)"), ("../" + socketName, nil), ("agent-pg-XX.sock", nil),
                                   ("agent-file-1-2.sock", nil), (socketName + "x", nil)] {
            unlink(link)
            #expect(symlink(target, link) == 0)
            #expect(locate(url) == expected, "\(target)")
        }
        #expect(locate(url, ["PGUSER=someone"]) == nil, "another PGUSER: another link")

        let dir = root + "/checked"
        #expect(vault_agent_check_directory(dir, 0) == Int32(VAULT_DIRECTORY_MISSING))
        #expect(vault_agent_check_directory(dir, 1) == Int32(VAULT_DIRECTORY_OK))
        chmod(dir, 0o750)
        #expect(vault_agent_check_directory(dir, 1) == Int32(VAULT_DIRECTORY_OPEN_MODE))
        chmod(dir, 0o700)
        let linked = root + "/linked"
        #expect(symlink(dir, linked) == 0)
        #expect(vault_agent_check_directory(linked, 1) == Int32(VAULT_DIRECTORY_NOT_A_DIRECTORY), "a symbolic link is never followed")
        #expect(vault_agent_check_directory(vault, 0) == Int32(VAULT_DIRECTORY_NOT_A_DIRECTORY))
        #expect(vault_agent_check_directory(root + "/no/such/parent", 1) == Int32(VAULT_DIRECTORY_CANNOT_CREATE), "no parent is made")
        if geteuid() == 0 {
            chown(dir, 65534, 65534)
            #expect(vault_agent_check_directory(dir, 0) == Int32(VAULT_DIRECTORY_NOT_OWNED))
        }
    }
}
