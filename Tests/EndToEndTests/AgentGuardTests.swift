import Foundation
import Testing
@testable import VaultCore
import VaultTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The session promise (SECURITY.md, "While the vault is unlocked"): a process of the same
/// user can get tokens from the agent and nothing that leads to a stored secret, outlives
/// the session, changes where secrets go, adds a member, or hides an audit record; another
/// user can do none of it. Each route an attacker tried is run against the built binary.
@Suite("sessions: unlocked is not open", .serialized)
struct AgentGuardTests {
    /// A TCP listener on 127.0.0.1 that records every byte it receives (a token endpoint or a
    /// proxy an attacker would point the agent at), answers nothing useful, and is stopped by
    /// `stop()`.
    final class Listener: @unchecked Sendable {
        let port: Int
        let child: ChildProcess
        let received: OutputCollector

        init() throws {
            let script = """
                import socket, sys, threading
                server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen(16)
                print(server.getsockname()[1], flush=True)
                def serve(connection):
                    connection.settimeout(5)
                    try:
                        while True:
                            data = connection.recv(65536)
                            if not data: break
                            sys.stderr.buffer.write(data); sys.stderr.flush()
                            connection.sendall(b"HTTP/1.1 500 no\\r\\ncontent-length: 0\\r\\n\\r\\n")
                    except OSError:
                        pass
                    connection.close()
                while True:
                    connection, _ = server.accept()
                    threading.Thread(target=serve, args=(connection,), daemon=True).start()
                """
            let process = try ChildProcess("/usr/bin/env", ["python3", "-u", "-c", script], environment: ["PATH": "/usr/local/bin:/usr/bin:/bin"])
            process.closeStdin()
            var line = [UInt8]()
            var byte: UInt8 = 0
            while read(process.stdoutDescriptor, &byte, 1) == 1, byte != 0x0a { line.append(byte) }
            guard let number = Int(String(decoding: line, as: UTF8.self)) else { throw HarnessError.spawnFailed("listener") }
            port = number
            child = process
            received = OutputCollector(process.stderrDescriptor)
        }

        /// Stops it and returns everything it received.
        func stop() -> Data {
            child.kill(SIGKILL)
            _ = child.wait(timeout: 5)
            return received.finish()
        }
    }

    @Test("no stored secret can be sent anywhere through the agent: environments and members are not the agent's to change, and a request with other proxy or CA settings is refused")
    func noRedirection() throws {
        let session = try SessionFixture()
        defer { session.stop() }
        let vault = session.vault
        let listener = try Listener()
        let evil = "http://127.0.0.1:\(listener.port)/as/token.oauth2"
        // An environment the user made (with the passphrase) whose loopback port an attacker
        // now listens on (its stub stopped): a session never sends another profile there.
        #expect(try session.run(["env", "add", "stopped", "--token-url", evil]).status == 0)
        #expect(try session.run(["unlock", "--for", "10m"]).status == 0)
        for arguments in [["token", "pw", "--env", "stopped"], ["token", "--env", "stopped", "pw", "--fresh"],
                          ["exec", "pw", "--env", "stopped", "--", "true"]] {
            let refused = try session.run(arguments, passphrase: false)
            #expect(refused.status == 64 && refused.stderrText.contains("--no-agent") && refused.stdoutText.isEmpty,
                    "\(arguments): \(refused.stderrText)")
        }
        let environmentsBefore = try vault.run(["env", "list", "--json"]).stdoutText
        // The environment route: adding or changing one needs the passphrase.
        for arguments in [["env", "add", "evil", "--token-url", evil], ["env", "set", "local", "--token-url", evil]] {
            let refused = try session.run(arguments, passphrase: false)
            #expect(refused.status == 64, "\(arguments): \(refused.stderrText)")
        }
        #expect(try vault.run(["env", "list", "--json"]).stdoutText == environmentsBefore)
        let missing = try session.run(["token", "pw", "--env", "evil", "--fresh"], passphrase: false)
        #expect(missing.status == 6 && missing.stdoutText.isEmpty, "\(missing.stderrText)")
        // The same operations sent as raw requests, in this version's and the last one's words.
        let socket = try #require(session.socketPath)
        let raw = """
            import json, socket, struct, sys
            for body in sys.argv[2:]:
                s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(sys.argv[1])
                data = body.encode(); s.sendall(struct.pack(">I", len(data)) + data)
                answer = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk: break
                    answer += chunk
                print(answer[4:].decode(errors="replace"))
            """
        let requests = [
            #"{"version":2,"op":"env-add","environment":"evil","token_url":"\#(evil)"}"#,
            #"{"version":2,"op":"env-set","environment":"local","token_url":"\#(evil)"}"#,
            #"{"version":1,"op":"env-set","environment":"local","token_url":"\#(evil)"}"#,
            #"{"version":2,"op":"member-add","member":"backup","recipient":"gbgv1x"}"#,
            #"{"version":2,"op":"rotate","profile":"pw","client_secret":"eA=="}"#,
            #"{"version":2,"op":"token","token":{"profile":"pw","environment":"stopped","fresh":true},"network":{"proxy":{}}}"#,
        ]
        let answers = try Binaries.run("/usr/bin/env", ["python3", "-c", raw, socket] + requests, environment: ["PATH": "/usr/local/bin:/usr/bin:/bin"])
        let lines = answers.stdoutText.split(separator: "\n")
        #expect(lines.count == requests.count && lines.allSatisfy { $0.contains(#""ok":false"#) && $0.contains(#""exit_code":64"#) }, "\(answers.stdoutText)")
        #expect(lines.last?.contains("only at its own environment") == true, "\(answers.stdoutText)")
        #expect(try vault.run(["env", "list", "--json"]).stdoutText == environmentsBefore, "nothing changed")
        // The network route: the agent's settings are those of `unlock`; a request with a
        // proxy or CA bundle of its own is refused, naming --no-agent.
        let before = try session.fixture.auditJSON(["--limit", "100000"]).count
        for extra in [["HTTPS_PROXY": "http://127.0.0.1:\(listener.port)"], ["HTTP_PROXY": "127.0.0.1:\(listener.port)"],
                      ["ALL_PROXY": "socks5://127.0.0.1:\(listener.port)"], ["VAULT_CA_BUNDLE": vault.directory + "/evil-ca.pem"]] {
            for arguments in [["token", "pw", "--fresh"], ["token", "pw", "--fresh", "--verbose"], ["exec", "pw", "--fresh", "--", "true"]] {
                let refused = try session.run(arguments, passphrase: false, extra: extra)
                #expect(refused.status == 64 && refused.stderrText.contains("--no-agent") && refused.stdoutText.isEmpty,
                        "\(arguments) \(extra): \(refused.stderrText)")
            }
        }
        #expect(try session.fixture.auditJSON(["--limit", "100000"]).count == before, "no exchange was made")
        // The unlock's own settings still serve.
        #expect(try session.run(["token", "pw", "--fresh"], passphrase: false, token: true).status == 0)
        let got = listener.stop()
        #expect(got.isEmpty, "the attacker's listener received \(got.count) bytes")
        LeakScanner.shared.scan(got, artefact: "the attacker's listener", includeTokens: true)
        expectNoLeaks(vault)
    }

    @Test("nothing outlives `vault lock`: no member or identity can be added through the agent")
    func nothingOutlivesLock() throws {
        let session = try SessionFixture()
        defer { session.stop() }
        let vault = session.vault
        #expect(try session.run(["unlock", "--for", "10m"]).status == 0)
        let identity = vault.directory + "/backup.id"
        let made = try session.run(["identity", "new", "--no-passphrase", "--out", identity], passphrase: false)
        #expect(made.status == 0, "an identity file of one's own needs no vault: \(made.stderrText)")
        let recipient = made.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)
        let membersBefore = try vault.run(["member", "list", "--json"]).stdoutText
        let added = try session.run(["member", "add", "backup", "--recipient", recipient], passphrase: false)
        #expect(added.status == 64, "\(added.stderrText)")
        #expect(try vault.run(["member", "list", "--json"]).stdoutText == membersBefore)
        #expect(try session.run(["lock"], passphrase: false).status == 0)
        let after = try vault.run(["token", "pw", "--fresh"], env: session.env.merging(["VAULT_IDENTITY_FILE": identity]) { $1 },
                                  removing: ["VAULT_PASSPHRASE"])
        #expect(after.status == 3 && after.stdoutText.isEmpty, "\(after.stderrText)")
        let read = try independentReader(path: vault.path, passphrase: "", extra: ["--identity", identity])
        #expect(read.report == nil && read.error?.contains("no key slot") == true, "\(String(describing: read.error))")
        expectNoLeaks(vault)
    }

    @Test("the identity handed to a starting agent cannot be read by another process of the user opening the agent's descriptors through /proc")
    func handOverOutOfReach() throws {
        let session = try SessionFixture()
        defer { session.stop() }
        let racer = try ChildProcess("/usr/bin/env", ["python3", repositoryRoot.appendingPathComponent("Tests/tools/fd_racer.py").path],
                                     environment: ["PATH": "/usr/local/bin:/usr/bin:/bin"])
        racer.closeStdin()
        let output = OutputCollector(racer.stdoutDescriptor), errors = OutputCollector(racer.stderrDescriptor)
        for _ in 0..<6 {
            #expect(try session.run(["unlock", "--for", "10m"]).status == 0)
            #expect(try session.run(["token", "pw"], passphrase: false, token: true).status == 0)
            #expect(try session.run(["lock"], passphrase: false).status == 0)
        }
        racer.kill(SIGTERM)
        #expect(racer.wait(timeout: 10) == 0)
        let summaryText = String(decoding: output.finish(), as: UTF8.self)
        _ = errors.finish()
        let summary = try #require(try JSONSerialization.jsonObject(with: Data(summaryText.utf8)) as? [String: Any], "\(summaryText)")
        print("hand-over racer: \(summaryText)")
        #expect(summary["opened"] as? Int == 0, "a descriptor of a starting agent was opened: \(summaryText)")
        expectNoLeaks(session.vault)
    }

    /// A trigger that hides every new audit record, added by `CREATE TRIGGER`, or written
    /// straight into `sqlite_master` under the name of a statistics table (which the check
    /// leaves out only as `ANALYZE` creates it).
    @Test("a trigger added to the file while the agent runs is found at the next transaction: no token leaves without its record, the agent ends, verify names it",
          arguments: ["hide", "sqlite_stat1"])
    func schemaChangedWhileUnlocked(name: String) throws {
        let session = try SessionFixture()
        defer { session.stop() }
        let vault = session.vault
        #expect(try session.run(["unlock", "--for", "10m"]).status == 0)
        var delivered = 0
        for _ in 0..<2 {
            let token = try session.run(["token", "pw"], passphrase: false, token: true)
            #expect(token.status == 0, "\(token.stderrText)")
            delivered += 1
        }
        let recordsBefore = try session.fixture.auditJSON(["--limit", "100000"]).filter { $0["action"] as? String == "token" }.count
        // The attack: each new record deleted and the head put back, so nothing shows.
        let body = """
            CREATE TRIGGER \(name) AFTER UPDATE ON audit_head BEGIN
              DELETE FROM audit_record WHERE seq = NEW.seq;
              UPDATE audit_head SET seq = OLD.seq, key_epoch = OLD.key_epoch, last_mac = OLD.last_mac, mac = OLD.mac WHERE id = 1;
            END
            """
        let trigger = name == "hide" ? body + ";" : """
            PRAGMA writable_schema = ON;
            INSERT INTO sqlite_master (type, name, tbl_name, rootpage, sql) VALUES ('trigger', '\(name)', 'audit_head', 0, '\(body)');
            PRAGMA writable_schema = OFF;
            PRAGMA schema_version = \(Int(Date().timeIntervalSince1970) % 100_000 + 1000);
            """
        #expect(try vault.sql(trigger).status == 0)
        let issuedBefore = try session.fixture.stub.tokenRequests()
        // The agent's next transaction sees the schema moved, checks it, refuses, and ends.
        let refused = try session.run(["token", "pw"], passphrase: false)
        #expect(refused.status == 7 && refused.stdoutText.isEmpty && refused.stderrText.contains("trigger \(name)"), "\(refused.stderrText)")
        #expect(try session.waitUntilLocked(seconds: 5), "the agent ended")
        // Without it, every process checks the schema when it opens the file.
        for arguments in [["token", "pw", "--fresh"], ["exec", "pw", "--", "true"], ["token", "cc", "--verbose"]] {
            let result = try session.run(arguments)
            #expect(result.status == 7 && result.stdoutText.isEmpty && result.stderrText.contains("trigger \(name)"),
                    "\(arguments): \(result.status) \(result.stderrText)")
        }
        #expect(try session.fixture.stub.tokenRequests() == issuedBefore, "the check comes before anything else, the exchange included")
        let verify = try vault.run(["verify"])
        #expect(verify.status == 7 && verify.stderrText.contains(name), "verify names the trigger: \(verify.stderrText)")
        let drop = name == "hide" ? "DROP TRIGGER hide" : """
            PRAGMA writable_schema = ON; DELETE FROM sqlite_master WHERE type = 'trigger' AND name = '\(name)'; PRAGMA writable_schema = OFF;
            """
        #expect(try vault.sql(drop).status == 0)
        let clean = try vault.run(["verify"])
        #expect(clean.status == 0, "\(clean.stdoutText) \(clean.stderrText)")
        let records = try session.fixture.auditJSON(["--limit", "100000"]).filter { $0["action"] as? String == "token" }.count
        #expect(records == recordsBefore && recordsBefore >= delivered, "every token delivered has its record, and no more were made")
        expectNoLeaks(vault)
    }

    @Test("clients check whom they talk to: another user's directory or process is refused before anything is sent, and its token never printed")
    func otherUsers() throws {
        guard geteuid() == 0 else { return }  // needs a second user, made with root's rights
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        var template = Array("/tmp/gv-XXXXXX".utf8CString)
        let runtime = String(cString: try #require(mkdtemp(&template)))
        defer { try? FileManager.default.removeItem(atPath: runtime) }
        let socket = try TokenClientTests.socket(of: vault, runtime: runtime)
        let fakeToken = "fake-" + UUID().uuidString.lowercased()
        let fake = StandInAgent.frame([UInt8(ascii: "O")] + Array((fakeToken + "\n").utf8))
        // 1. The agent directory is another user's (or a link to one): nothing is sent.
        let directory = runtime + "/gbg-vault"
        let elsewhere = runtime + "/elsewhere"
        #expect(mkdir(elsewhere, 0o700) == 0)
        for setUp in ["owned by 65534", "a symbolic link", "mode 0755"] {
            try? FileManager.default.removeItem(atPath: directory)
            switch setUp {
            case "owned by 65534":
                #expect(mkdir(directory, 0o700) == 0)
                chown(directory, 65534, 65534)
            case "a symbolic link":
                #expect(symlink(elsewhere, directory) == 0)
            default:
                #expect(mkdir(directory, 0o755) == 0)
                chmod(directory, 0o755)
            }
            let agent = try StandInAgent(path: (setUp == "a symbolic link" ? elsewhere : directory) + "/" + (socket as NSString).lastPathComponent, answer: fake)
            defer { agent.stop() }
            for arguments in [["token", "pw"], ["token", "pw", "--verbose"], ["status"]] {
                let result = try vault.run(arguments, env: ["XDG_RUNTIME_DIR": runtime], expectTokenOnStdout: arguments[0] == "token")
                #expect(!result.stdoutText.contains(fakeToken), "\(setUp) \(arguments)")
                #expect(result.stderrText.contains("refusing the agent directory"), "\(setUp) \(arguments): \(result.stderrText)")
                if arguments[0] == "token" {
                    #expect(result.status == 0, "the passphrase way: \(result.stderrText)")
                    LeakScanner.shared.register(token: result.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines))
                }
            }
            // Nor do the commands that change the vault ever talk to an agent.
            let rotate = try vault.run(["rotate", "cc", "--secrets-from-env"], env: ["XDG_RUNTIME_DIR": runtime, "GBG_CLIENT_SECRET": fixture.ccSecret])
            #expect(rotate.status == 0, "\(rotate.stderrText)")
            #expect(agent.requests.isEmpty, "\(setUp): the stand-in received \(agent.requests.count) request(s)")
            let unlock = try vault.run(["unlock", "--for", "1m"], env: ["XDG_RUNTIME_DIR": runtime])
            #expect(unlock.status == 1 && unlock.stderrText.contains("refusing the agent directory"), "\(setUp): \(unlock.stderrText)")
        }
        // 2. Our own private directory, but the socket in it is answered by a process of
        // another user (its file moved in and given to us): the peer's uid refuses it.
        try? FileManager.default.removeItem(atPath: directory)
        #expect(mkdir(directory, 0o700) == 0)
        let theirs = "/tmp/gv-theirs-\(UUID().uuidString.prefix(8))"
        #expect(mkdir(theirs, 0o755) == 0)
        chown(theirs, 65534, 65534)
        defer { try? FileManager.default.removeItem(atPath: theirs) }
        let listener = """
            import os, socket, sys
            s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(8)
            print("READY", flush=True)
            while True:
                c, _ = s.accept(); c.settimeout(2)
                try:
                    data = c.recv(65536)
                    if data: sys.stderr.buffer.write(b"RECEIVED " + data); sys.stderr.flush()
                except OSError: pass
                c.close()
            """
        let other = try ChildProcess("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-u", "-c",
                                                          listener, theirs + "/s.sock"], environment: ["PATH": "/usr/bin:/bin"])
        defer { other.kill(SIGKILL); _ = other.wait(timeout: 5) }
        other.closeStdin()
        let ready = OutputCollector(other.stdoutDescriptor)
        let heard = OutputCollector(other.stderrDescriptor)
        let deadline = Date().addingTimeInterval(10)
        while !ready.text.contains("READY"), Date() < deadline { usleep(20_000) }
        #expect(rename(theirs + "/s.sock", socket) == 0)
        chown(socket, 0, 0)
        for arguments in [["token", "pw"], ["token", "pw", "--verbose"], ["status"]] {
            let result = try vault.run(arguments, env: ["XDG_RUNTIME_DIR": runtime], expectTokenOnStdout: arguments[0] == "token")
            #expect(result.stderrText.contains("runs as uid 65534"), "\(arguments): \(result.stderrText)")
            if arguments[0] == "token" {
                #expect(result.status == 0, "\(result.stderrText)")
                LeakScanner.shared.register(token: result.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines))
            }
        }
        other.kill(SIGKILL)
        _ = other.wait(timeout: 5)
        _ = ready.finish()
        #expect(!String(decoding: heard.finish(), as: UTF8.self).contains("RECEIVED"), "the other user's process received nothing")
        expectNoLeaks(vault)
    }

    @Test("a request must arrive whole within 5 s of the accept, however slowly its bytes trickle in")
    func requestDeadline() throws {
        let session = try SessionFixture()
        defer { session.stop() }
        #expect(try session.run(["unlock", "--for", "10m"]).status == 0)
        let socket = try #require(session.socketPath)
        let trickle = """
            import json, socket, struct, sys, time
            body = json.dumps({"version": 2, "op": "status"}).encode()
            frame = struct.pack(">I", len(body)) + body
            s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(1.0)
            start = time.time()
            for byte in frame[:-1]:
                try:
                    s.send(bytes([byte]))
                    if s.recv(10) == b"": break
                except socket.timeout: pass
                except OSError: break
                if time.time() - start > 20: break
            print(round(time.time() - start, 1))
            """
        let result = try Binaries.run("/usr/bin/env", ["python3", "-c", trickle, socket], environment: ["PATH": "/usr/local/bin:/usr/bin:/bin"])
        let seconds = try #require(Double(result.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)), "\(result.stderrText)")
        #expect(seconds >= 4 && seconds <= 6.5, "closed after \(seconds) s")
        #expect(try session.status()["unlocked"] as? Bool == true, "and the agent kept serving")
    }

    @Test("unlock while unlocked: without new settings it says so; with them it asks for the passphrase and restarts the agent")
    func unlockAgain() throws {
        let session = try SessionFixture()
        defer { session.stop() }
        #expect(try session.run(["unlock", "--for", "10m"]).status == 0)
        let first = try #require(try session.status()["pid"] as? Int)
        let again = try session.run(["unlock"], passphrase: false)
        #expect(again.status == 0 && again.stderrText.contains("already unlocked"), "\(again.stderrText)")
        let refused = try session.run(["unlock", "--for", "20m"], passphrase: false)
        #expect(try refused.status == 64 && (session.status()["pid"] as? Int) == first, "no passphrase: the agent stays as it was")
        let restarted = try session.run(["unlock", "--for", "20m"])
        #expect(restarted.status == 0 && restarted.stderrText.contains("restarting the agent (pid \(first) ended)"), "\(restarted.stderrText)")
        let status = try session.status()
        #expect(status["pid"] as? Int != first && (status["seconds_left"] as? Int ?? 0) > 15 * 60)
        // A proxy in this shell that the agent does not use: unlock says what differs and
        // restarts; status shows the proxy without its password.
        let proxyPassword = "proxy-secret-" + UUID().uuidString.prefix(8)
        LeakScanner.shared.register(secret: String(proxyPassword))
        let proxy = "http://proxyuser:\(proxyPassword)@proxy.example:3128"
        let proxied = try session.run(["unlock"], extra: ["HTTPS_PROXY": proxy])
        #expect(proxied.status == 0 && proxied.stderrText.contains("HTTPS_PROXY"), "\(proxied.stderrText)")
        #expect(((try session.status()["network"] as? [String: Any])?["proxy"] as? [String: String])?["HTTPS_PROXY"] == "http://***@proxy.example:3128")
        #expect(try session.run(["status"], passphrase: false).stdoutText.contains("HTTPS_PROXY=http://***@proxy.example:3128"))
        // exec's command never gets a passphrase source.
        let passphraseFile = session.vault.directory + "/pass"
        #expect(FileManager.default.createFile(atPath: passphraseFile, contents: Data(session.vault.passphrase.utf8), attributes: [.posixPermissions: 0o600]))
        let exec = try session.run(["exec", "pw", "--", "sh", "-c", "env | grep -c PASSPHRASE || true"],
                                   extra: ["VAULT_PASSPHRASE_FILE": passphraseFile, "VAULT_NEW_PASSPHRASE_FILE": passphraseFile, "HTTPS_PROXY": proxy])
        #expect(exec.status == 0 && exec.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines) == "0", "\(exec.stdoutText) \(exec.stderrText)")
        expectNoLeaks(session.vault)
    }
}
