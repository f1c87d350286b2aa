import Foundation
import Testing
import VaultTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Sessions (`vault unlock`): the agent, end to end, in real processes over real sockets.
/// Every agent a test starts is ended by that test.
@Suite("sessions: vault unlock and the agent", .serialized)
struct SessionTests {
    @Test("unlock, then token and exec with no passphrase source at all; lock, then the passphrase is needed again")
    func unlockFlow() throws {
        let session = try SessionFixture()
        defer { session.stop() }
        let unlock = try session.run(["unlock", "--for", "10m", "--idle", "5m"])
        #expect(unlock.status == 0, "\(unlock.stderrText)")
        #expect(unlock.stderrText.contains("agent pid"))
        let status = try session.status()
        #expect(status["unlocked"] as? Bool == true)
        let socket = try #require(status["socket"] as? String)
        var info = stat()
        #expect(lstat(socket, &info) == 0 && info.st_mode & 0o777 == 0o600 && (info.st_mode & S_IFMT) == S_IFSOCK)
        #expect(lstat((socket as NSString).deletingLastPathComponent, &info) == 0 && info.st_mode & 0o777 == 0o700)
        for profile in ["pw", "cc", "pw"] {
            let token = try session.run(["token", profile], passphrase: false, token: true)
            #expect(token.status == 0, "\(token.stderrText)")
            #expect(!token.stdoutText.isEmpty)
        }
        let exec = try session.run(["exec", "pw", "--", "sh", "-c", "test -n \"$GBG_ACCESS_TOKEN\" && test -z \"$VAULT_PASSPHRASE\""], passphrase: false)
        #expect(exec.status == 0, "\(exec.stderrText)")
        let json = try session.run(["token", "pw", "--fresh", "--format", "json"], passphrase: false)
        let object = try JSONSerialization.jsonObject(with: json.stdout) as? [String: Any]
        if let token = object?["access_token"] as? String { LeakScanner.shared.register(token: token) }
        #expect(object?["api_base"] as? String == session.fixture.stub.apiBase)
        // Every token the agent handed out is in the audit trail.
        let audit = try session.fixture.auditJSON(["--limit", "5"]).compactMap { $0["action"] as? String }
        #expect(audit.filter { $0 == "token" }.count == 4 && audit.contains("exec"))
        // verify and audit verify are served; every command that changes the vault asks
        // for the passphrase (or an identity) exactly as without an agent, and with none
        // there is nothing changed.
        let vault = session.vault
        #expect(try session.run(["verify"], passphrase: false).status == 0)
        #expect(try session.run(["audit", "verify"], passphrase: false).status == 0)
        let recipient = try vault.run(["identity", "new", "--no-passphrase", "--out", vault.directory + "/spare.id"])
        #expect(recipient.status == 0, "\(recipient.stderrText)")
        let newSecret = "agent-refused-secret-" + UUID().uuidString
        LeakScanner.shared.register(secret: newSecret)
        let records = try session.fixture.auditJSON(["--limit", "100000"]).count
        let changing: [([String], String)] = [
            (["add", "viaagent", "--client-id", "client-cc", "--grant", "client-credentials", "--env", "local", "--secrets-stdin"],
             #"{"client_secret":"\#(newSecret)"}"#),
            (["rotate", "pw", "--secrets-stdin"], #"{"client_secret":"\#(newSecret)"}"#),
            (["rotate", "pw", "--client-secret", "--verify", "--secrets-stdin"], #"{"client_secret":"\#(newSecret)"}"#),
            (["env", "add", "spare", "--token-url", "https://spare.example/as/token.oauth2"], ""),
            (["env", "set", "local", "--token-url", "http://127.0.0.1:9/as/token.oauth2"], ""),
            (["env", "remove", "local"], ""),
            (["remove", "cc", "--yes"], ""),
            (["member", "add", "spare", "--recipient", recipient.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)], ""),
            (["passwd"], ""), (["rekey"], ""), (["upgrade"], ""),
        ]
        for (arguments, stdin) in changing {
            let result = try vault.run(arguments, env: session.env, removing: ["VAULT_PASSPHRASE"], stdin: Data(stdin.utf8))
            #expect(result.status == 64 && result.stderrText.contains("no other source was given"),
                    "\(arguments) while unlocked, without a passphrase: \(result.status) \(result.stderrText)")
        }
        #expect(try session.fixture.auditJSON(["--limit", "100000"]).count == records, "nothing changed")
        #expect(try session.status()["unlocked"] as? Bool == true)
        // With the passphrase they work as always, the agent still running.
        #expect(try session.run(["env", "add", "spare", "--token-url", "https://spare.example/t"]).status == 0)
        #expect(try session.run(["env", "remove", "spare"]).status == 0)
        // --no-agent and VAULT_NO_AGENT=1 go the passphrase way.
        #expect(try session.run(["token", "pw", "--no-agent"], passphrase: false).status == 64)
        #expect(try session.run(["token", "pw"], passphrase: false, extra: ["VAULT_NO_AGENT": "1"]).status == 64)
        let lock = try session.run(["lock"], passphrase: false)
        #expect(lock.status == 0 && lock.stderrText.contains("locked"))
        #expect(lstat(socket, &info) != 0, "the socket was removed")
        #expect(try session.run(["token", "pw"], passphrase: false).status == 64)
        expectNoLeaks(session.vault)
    }

    @Test("a copy of the vault (same vault id, another file) is never served by the original's agent, nor locked by `lock` on it")
    func copies() throws {
        let session = try SessionFixture()
        defer { session.stop() }
        let vault = session.vault
        #expect(try session.run(["unlock", "--for", "10m"]).status == 0)
        try vault.sql("PRAGMA wal_checkpoint(TRUNCATE)")
        let copy = vault.path + ".copy.db"
        try FileManager.default.copyItem(atPath: vault.path, toPath: copy)
        defer { try? FileManager.default.removeItem(atPath: copy) }
        let viaCopy = try session.run(["--vault", copy, "token", "pw"], passphrase: false)
        #expect(viaCopy.status == 64, "no passphrase source: the copy is not served by the agent (\(viaCopy.stderrText))")
        let copyStatus = try session.run(["status", "--json", "--vault", copy], passphrase: false)
        #expect((try JSONSerialization.jsonObject(with: copyStatus.stdout) as? [String: Any])?["unlocked"] as? Bool == false)
        #expect(try session.run(["lock", "--vault", copy], passphrase: false).stderrText.contains("not unlocked"))
        #expect(try session.status()["unlocked"] as? Bool == true, "locking the copy left the original's agent alone")
        let withPassphrase = try session.run(["--vault", copy, "token", "pw"], token: true)
        #expect(withPassphrase.status == 0, "\(withPassphrase.stderrText)")
        let version = try vault.run(["--version"])
        #expect(version.status == 0 && !version.stdoutText.isEmpty && version.stderrText.isEmpty)
        expectNoLeaks(vault)
    }

    @Test("the agent keeps its connection to the token endpoint alive between exchanges; each passphrase-path process makes its own")
    func keptAliveExchanges() throws {
        let session = try SessionFixture()
        defer { session.stop() }
        let stub = session.fixture.stub
        #expect(try session.run(["unlock", "--for", "10m"]).status == 0)
        let (requests, connections) = (try stub.tokenRequests(), try stub.tokenConnections())
        for name in ["pw", "pw", "cc", "pw"] {
            let fresh = try session.run(["token", name, "--fresh"], passphrase: false, token: true)
            #expect(fresh.status == 0, "\(fresh.stderrText)")
        }
        #expect(try stub.tokenRequests() == requests + 4)
        #expect(try stub.tokenConnections() == connections + 1, "four exchanges through the agent, one connection")
        for _ in 0..<2 { #expect(try session.run(["token", "pw", "--fresh", "--no-agent"], token: true).status == 0) }
        #expect(try stub.tokenConnections() == connections + 3, "a process of its own makes its own connection")
        // Every exchange is audited as always, and the chain verifies.
        #expect(try session.run(["audit", "verify"], passphrase: false).status == 0)
        expectNoLeaks(session.vault)
    }

    @Test("the agent is found by the vault file's device and inode: the client never opens the vault file")
    func foundByFileIdentity() throws {
        let session = try SessionFixture()
        defer { session.stop() }
        #expect(try session.run(["unlock", "--for", "10m"]).status == 0)
        var info = stat()
        #expect(stat(session.vault.path, &info) == 0)
        #expect(session.socketPath == session.runtime + "/gbg-vault/agent-file-\(info.st_dev)-\(info.st_ino).sock")
        let strace = "/usr/bin/strace"
        try #require(FileManager.default.isExecutableFile(atPath: strace), "strace is not installed (scripts/setup.sh installs it)")
        let trace = session.runtime + "/opens.trace"
        for arguments in [["token", "pw"], ["token", "pw", "--verbose"]] {
            var environment = session.vault.environment(session.env)
            environment.removeValue(forKey: "VAULT_PASSPHRASE")
            let traced = try Binaries.run(strace, ["-f", "-e", "trace=open,openat", "-o", trace, Binaries.vault] + arguments, environment: environment)
            #expect(traced.status == 0, "\(traced.stderrText)")
            LeakScanner.shared.register(token: traced.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines))
            session.vault.scanner.scan(traced.stderr, artefact: "stderr of vault token --verbose", includeTokens: true)
            let opens = try String(contentsOfFile: trace, encoding: .utf8)
            #expect(!opens.contains(session.vault.path), "\(arguments): the client opened the vault")
        }
        expectNoLeaks(session.vault)
    }

    @Test("the agent ends at its deadline and when idle; status does not keep it alive")
    func expiry() throws {
        let session = try SessionFixture()
        defer { session.stop() }
        let unitless = try session.run(["unlock", "--for", "3"])
        #expect(unitless.status == 64 && unitless.stderrText.contains("--for needs a unit: 3s, 3m, 3h or 3d"), "\(unitless.stderrText)")
        #expect(try session.run(["unlock", "--for", "10m", "--idle", "90"]).status == 64)
        #expect(try session.run(["unlock", "--for", "3s", "--idle", "3s"]).status == 0)
        let socket = try #require(session.socketPath)
        #expect(try session.run(["token", "cc"], passphrase: false, token: true).status == 0)
        #expect(try session.waitUntilLocked(seconds: 8))
        var info = stat()
        #expect(lstat(socket, &info) != 0)
        // Status right away, then at every poll: none of them resets the idle timer, so the
        // agent still ends about 5 s after the unlock (a loaded CI host gets a wide margin).
        #expect(try session.run(["unlock", "--for", "60s", "--idle", "5s"]).status == 0)
        #expect(try session.status()["unlocked"] as? Bool == true)
        #expect(try session.waitUntilLocked(seconds: 20), "polling status every 0.1 s kept the agent alive")
    }

    @Test("SIGTERM ends the agent; after SIGKILL the stale socket is removed and the command falls back to the passphrase")
    func signals() throws {
        let session = try SessionFixture()
        defer { session.stop() }
        #expect(try session.run(["unlock", "--for", "10m"]).status == 0)
        let pid = try #require(try session.status()["pid"] as? Int)
        kill(pid_t(pid), SIGTERM)
        #expect(try session.waitUntilLocked(seconds: 5))
        #expect(try session.run(["unlock", "--for", "10m"]).status == 0)
        let socket = try #require(session.socketPath)
        let second = try #require(try session.status()["pid"] as? Int)
        kill(pid_t(second), SIGKILL)
        usleep(300_000)
        var info = stat()
        #expect(lstat(socket, &info) == 0, "SIGKILL leaves the socket behind")
        let fallback = try session.run(["token", "pw"], token: true)
        #expect(fallback.status == 0, "\(fallback.stderrText)")
        #expect(fallback.stderrText.contains("stale socket was removed"))
        #expect(lstat(socket, &info) != 0)
        expectNoLeaks(session.vault)
    }

    @Test("the vault file replaced or removed while unlocked is not served; passwd and rekey always ask for the passphrase and end the agent")
    func fileAndKeys() throws {
        let session = try SessionFixture()
        defer { session.stop() }
        let vault = session.vault
        #expect(try session.run(["unlock", "--for", "10m"]).status == 0)
        // Replaced by a copy of itself (same vault id, another file).
        try vault.sql("PRAGMA wal_checkpoint(TRUNCATE)")
        try FileManager.default.copyItem(atPath: vault.path, toPath: vault.path + ".copy")
        try FileManager.default.removeItem(atPath: vault.path)
        try FileManager.default.moveItem(atPath: vault.path + ".copy", toPath: vault.path)
        #expect(try session.waitUntilLocked(seconds: 5))
        #expect(try session.run(["token", "pw"], passphrase: false).status == 64)
        // passwd and rekey: the passphrase is needed even while unlocked, and the agent ends.
        for command in [["passwd"], ["rekey"]] {
            #expect(try session.run(["unlock", "--for", "10m"]).status == 0)
            let refused = try session.run(command, passphrase: false)
            #expect(refused.status == 64, "\(command) without a passphrase while unlocked: \(refused.stderrText)")
            #expect(try session.status()["unlocked"] as? Bool == true)
            let extra = command == ["passwd"] ? ["VAULT_NEW_PASSPHRASE": vault.passphrase] : [:]
            let changed = try session.run(command, extra: extra)
            #expect(changed.status == 0, "\(changed.stderrText)")
            #expect(try session.waitUntilLocked(seconds: 5))
        }
        expectNoLeaks(vault)
    }

    @Test("another process's write lock does not stall the agent, and a passwd it was not told of ends it at the next request")
    func heldLockAndPasswd() throws {
        let session = try SessionFixture()
        defer { session.stop() }
        let vault = session.vault
        #expect(try session.run(["unlock", "--for", "10m"]).status == 0)
        let first = try session.run(["token", "pw"], passphrase: false, token: true)
        #expect(first.status == 0, "\(first.stderrText)")
        let hits = { try Int(vault.sql("SELECT count(*) FROM audit_record WHERE outcome = 'cache_hit'").stdoutText
            .trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1 }

        // Another process holds the file's write lock: the cache hit waits (on the busy
        // timeout, off the event loop) while the agent keeps answering others; when the lock
        // goes, the token comes, audited.
        let holder = try ChildProcess("/usr/bin/env", ["python3", "-u", "-c", """
            import sqlite3, sys
            db = sqlite3.connect(sys.argv[1], isolation_level=None)
            db.execute("BEGIN IMMEDIATE")
            print("locked", flush=True)
            sys.stdin.read()
            db.execute("ROLLBACK")
            """, vault.path], environment: ["PATH": "/usr/bin:/bin"])
        let holderOut = OutputCollector(holder.stdoutDescriptor)
        let holderErr = OutputCollector(holder.stderrDescriptor)
        defer { holder.kill(SIGKILL); _ = holder.wait(timeout: 5) }
        let lockedBy = Date().addingTimeInterval(10)
        while !holderOut.text.contains("locked"), Date() < lockedBy { usleep(20_000) }
        #expect(holderOut.text.contains("locked"))
        let hitsBefore = try hits()
        let waiting = try ChildProcess(Binaries.vault, ["token", "pw"],
                                       environment: vault.environment(session.env).filter { $0.key != "VAULT_PASSPHRASE" })
        let waitingOut = OutputCollector(waiting.stdoutDescriptor)
        let waitingErr = OutputCollector(waiting.stderrDescriptor)
        defer { waiting.kill(SIGKILL); _ = waiting.wait(timeout: 5) }
        usleep(300_000)
        #expect(waiting.wait(timeout: 0) == nil, "the token waits for the lock")
        let started = Date()
        let status = try session.status()
        #expect(status["unlocked"] as? Bool == true)
        #expect(Date().timeIntervalSince(started) < 2, "the agent answered while a token request waited for the file's lock")
        holder.closeStdin()
        #expect(holder.wait(timeout: 10) == 0)
        _ = holderOut.finish()
        #expect(holderErr.finish().isEmpty)
        let waited = waiting.wait(timeout: 20)
        let waitingStderr = String(decoding: waitingErr.finish(), as: UTF8.self)
        let token = String(decoding: waitingOut.finish(), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(waited == 0, "\(waitingStderr)")
        LeakScanner.shared.register(token: token)
        vault.scanner.scan(Data(waitingStderr.utf8), artefact: "stderr of the waiting vault token", includeTokens: true)
        #expect(token == first.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines), "the cached token, once the lock was released")
        #expect(try hits() == hitsBefore + 1, "and its record")

        // A passwd the agent was not told of (run where it cannot find the agent): the next
        // request is not served with the old unlock, and no token is handed out.
        let elsewhere = session.runtime + "/elsewhere"
        try FileManager.default.createDirectory(atPath: elsewhere, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        LeakScanner.shared.register(secret: vault.passphrase + " 2")
        let changed = try session.run(["passwd"], extra: ["XDG_RUNTIME_DIR": elsewhere, "VAULT_NEW_PASSPHRASE": vault.passphrase + " 2"])
        #expect(changed.status == 0, "\(changed.stderrText)")
        vault.passphrase += " 2"
        let hitsAfterPasswd = try hits()
        let refused = try session.run(["token", "pw"], passphrase: false)
        #expect(refused.status == 64, "after a passwd, no passphrase source: \(refused.stderrText)")
        #expect(try hits() == hitsAfterPasswd)
        #expect(try session.waitUntilLocked(seconds: 5))
        #expect(try session.run(["audit", "verify"]).status == 0)
        expectNoLeaks(vault)
    }

    @Test("directory checks: a loose mode or another owner makes unlock refuse; an agent of another uid refuses even root")
    func peersAndDirectories() throws {
        let session = try SessionFixture()
        defer { session.stop() }
        let directory = session.runtime + "/gbg-vault"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        chmod(directory, 0o755)
        let loose = try session.run(["unlock", "--for", "10m"])
        #expect(loose.status == 1)
        #expect(loose.stderrText.contains("refusing the agent directory"))
        #expect(try session.status()["unlocked"] as? Bool == false)
        chmod(directory, 0o700)
        guard getuid() == 0 else { return }
        chown(directory, 65534, 65534)
        let foreign = try session.run(["unlock", "--for", "10m"])
        #expect(foreign.status == 1)
        #expect(foreign.stderrText.contains("belongs to uid 65534"))
        chown(directory, 0, 0)

        // An agent run by uid 65534 on its own vault.
        let other = "/tmp/gv-other-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: other + "/run", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: other) }
        chmod(other, 0o755)
        chmod(other + "/run", 0o700)
        chown(other, 65534, 65534)
        chown(other + "/run", 65534, 65534)
        var env = session.vault.environment(["XDG_RUNTIME_DIR": other + "/run", "VAULT_PATH": other + "/vault.db", "HOME": other])
        env["PATH"] = "/usr/bin:/bin"
        let asNobody = ["--reuid=65534", "--regid=65534", "--clear-groups", Binaries.vault]
        let initResult = try Binaries.run("/usr/bin/setpriv", asNobody + ["init"], environment: env)
        #expect(initResult.status == 0, "\(initResult.stderrText)")
        let unlock = try Binaries.run("/usr/bin/setpriv", asNobody + ["unlock", "--for", "60s"], environment: env)
        #expect(unlock.status == 0, "\(unlock.stderrText)")
        defer { _ = try? Binaries.run("/usr/bin/setpriv", asNobody + ["lock"], environment: env) }
        let status = try Binaries.run("/usr/bin/setpriv", asNobody + ["status", "--json"], environment: env)
        let socket = try #require((try JSONSerialization.jsonObject(with: status.stdout) as? [String: Any])?["socket"] as? String)
        // Root connects straight to that socket: the agent closes without an answer.
        let probe = """
            import json, socket, struct, sys
            s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(sys.argv[1])
            body = json.dumps({"version": 2, "op": "status"}).encode()
            try:
                s.sendall(struct.pack(">I", len(body)) + body)
                print(len(s.recv(65536)))
            except OSError:
                print(0)  # reset by the agent: no answer either
            """
        let answer = try Binaries.run("/usr/bin/env", ["python3", "-c", probe, socket], environment: ["PATH": "/usr/local/bin:/usr/bin:/bin"])
        #expect(answer.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines) == "0", "root got an answer: \(answer.stdoutText) \(answer.stderrText)")
        // Its own user is served.
        let own = try Binaries.run("/usr/bin/setpriv", asNobody + ["status"], environment: env)
        #expect(own.stdoutText.contains("unlocked:"))
    }

    @Test("no key, passphrase or stored secret crosses the socket in a whole session; tokens cross only for token and exec")
    func socketTraffic() throws {
        let session = try SessionFixture()
        defer { session.stop() }
        let vault = session.vault
        #expect(try session.run(["unlock", "--for", "10m"]).status == 0)
        let socket = try #require(session.socketPath)
        // Clients talk to a recording relay in another runtime directory.
        let relayRuntime = session.runtime + "-relay"
        try FileManager.default.createDirectory(atPath: relayRuntime + "/gbg-vault", withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        defer { try? FileManager.default.removeItem(atPath: relayRuntime) }
        let capture = relayRuntime + "/capture.bin"
        let relay = try ChildProcess("/usr/bin/env", ["python3", "-u", repositoryRoot.appendingPathComponent("Tests/tools/agent_relay.py").path,
                                                      relayRuntime + "/gbg-vault/" + (socket as NSString).lastPathComponent, socket, capture],
                                     environment: ["PATH": "/usr/local/bin:/usr/bin:/bin"])
        defer { relay.kill(SIGKILL); _ = relay.wait(timeout: 5) }
        relay.closeStdin()
        let ready = OutputCollector(relay.stdoutDescriptor)
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline, !ready.text.contains("READY") { usleep(50_000) }
        let viaRelay = ["XDG_RUNTIME_DIR": relayRuntime]
        var tokens: [String] = []
        for arguments in [["token", "pw"], ["token", "cc", "--fresh"], ["token", "pw", "--format", "header"], ["status"]] {
            let result = try vault.run(arguments, env: viaRelay, removing: ["VAULT_PASSPHRASE"], expectTokenOnStdout: arguments[0] == "token")
            #expect(result.status == 0, "\(arguments): \(result.stderrText)")
            if arguments == ["token", "pw"] || arguments == ["token", "cc", "--fresh"] {
                let token = result.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)
                LeakScanner.shared.register(token: token)
                tokens.append(token)
            }
        }
        #expect(try vault.run(["exec", "pw", "--", "true"], env: viaRelay, removing: ["VAULT_PASSPHRASE"]).status == 0)
        let traffic = try Data(contentsOf: URL(fileURLWithPath: capture))
        #expect(traffic.count > 200, "the relay recorded the session")
        for token in tokens { #expect(traffic.range(of: Data(token.utf8)) != nil, "the token crossed for `token`") }
        // Keys, derived independently from FORMAT.md by the reader.
        let read = try independentReader(path: vault.path, passphrase: vault.passphrase, extra: ["--show-keys"])
        let keys = try #require(read.report?["keys"] as? [String: Any])
        var keyHexes = [keys["kek"] as? String, keys["data_key"] as? String].compactMap { $0 }
        keyHexes += (keys["audit_keys"] as? [String: String])?.values.map { $0 } ?? []
        // The owner's identity (X25519 secret key ‖ Ed25519 seed), whole and each half.
        let identity = try #require(keys["identity_secret"] as? String)
        keyHexes += [identity, String(identity.prefix(64)), String(identity.suffix(64))]
        #expect(keyHexes.count >= 6)
        for hex in keyHexes {
            let raw = Data(Self.bytes(hex: hex))
            for form in [raw, Data(hex.utf8), Data(hex.uppercased().utf8), Data(raw.base64EncodedString().utf8)] {
                #expect(traffic.range(of: form) == nil, "key material crossed the socket")
            }
        }
        // Secrets and the passphrase (registered with the scanner), in every encoding.
        LeakScanner.shared.scan(traffic, artefact: "agent socket traffic", includeTokens: false)
        expectNoLeaks(vault)
    }

    @Test("bounded protocol fuzzing: mutated, truncated, huge, garbage frames and slow writers; the agent keeps serving")
    func fuzzing() throws {
        let session = try SessionFixture()
        defer { session.stop() }
        #expect(try session.run(["unlock", "--for", "10m"]).status == 0)
        let socket = try #require(session.socketPath)
        let iterations = ProcessInfo.processInfo.environment["GBG_VAULT_AGENT_FUZZ"] ?? "300"
        let fuzz = try Binaries.run("/usr/bin/env", ["python3", repositoryRoot.appendingPathComponent("Tests/tools/agent_fuzz.py").path,
                                                     socket, iterations, "20261129"],
                                    environment: ["PATH": "/usr/local/bin:/usr/bin:/bin"], timeout: 120)
        #expect(fuzz.status == 0, "\(fuzz.stdoutText) \(fuzz.stderrText)")
        print("agent fuzz: \(fuzz.stdoutText)")
        let token = try session.run(["token", "pw"], passphrase: false, token: true)
        #expect(token.status == 0, "\(token.stderrText)")
        expectNoLeaks(session.vault)
    }

    @Test("--keep-fresh renews tokens before they expire, audits every renewal, and shows a failing endpoint in status")
    func keepFresh() throws {
        let session = try SessionFixture(tokenTTL: 6)
        defer { session.stop() }
        #expect(try session.run(["env", "add", "dead", "--token-url", "http://127.0.0.1:9/as/token.oauth2"]).status == 0)
        let unlock = try session.run(["unlock", "--for", "10m", "--keep-fresh", "cc", "pw@dead"])
        #expect(unlock.status == 0, "\(unlock.stderrText)")
        usleep(8_500_000)
        let status = try session.status()
        let entries = try #require(status["keep_fresh"] as? [[String: Any]])
        let cc = try #require(entries.first { $0["profile"] as? String == "cc" })
        let dead = try #require(entries.first { $0["environment"] as? String == "dead" })
        #expect((cc["refreshes"] as? Int ?? 0) >= 2, "\(cc)")
        #expect(cc["failures"] as? Int == 0)
        #expect(cc["expires_at"] as? Int ?? 0 > Int(Date().timeIntervalSince1970), "the kept token has not expired")
        #expect((dead["failures"] as? Int ?? 0) >= 1, "\(dead)")
        #expect((dead["last_error"] as? String)?.contains("unavailable") == true)
        #expect(try session.run(["status"], passphrase: false).stdoutText.contains("failing"))
        // A token for a kept-fresh profile is a cache hit, no exchange of its own.
        let requests = try session.fixture.stub.tokenRequests()
        let refreshes = try session.fixture.auditJSON(["--profile", "cc"]).filter { $0["action"] as? String == "refresh" }
        #expect(refreshes.count >= 2 && refreshes.allSatisfy { $0["outcome"] as? String == "ok" })
        let token = try session.run(["token", "cc", "--min-ttl", "1"], passphrase: false, token: true)
        #expect(token.status == 0, "\(token.stderrText)")
        // (A renewal may have been recorded just after it: look at the newest `token` record.)
        let newestToken = try session.fixture.auditJSON(["--profile", "cc", "--limit", "3"]).first { $0["action"] as? String == "token" }
        #expect(newestToken?["outcome"] as? String == "cache_hit", "\(String(describing: newestToken))")
        #expect(try session.fixture.stub.tokenRequests() <= requests + 1, "at most a renewal ran meanwhile")
        // Failed renewals are audited too.
        #expect(try session.fixture.auditJSON(["--env", "dead"]).contains { $0["action"] as? String == "refresh" && $0["outcome"] as? String == "unavailable" })
        #expect(try session.run(["audit", "verify"], passphrase: false).status == 0)
        expectNoLeaks(session.vault)
    }

    @Test("many clients at once against one agent: no failure, every token audited, the chain verifies")
    func concurrentClients() throws {
        let session = try SessionFixture()
        defer { session.stop() }
        #expect(try session.run(["unlock", "--for", "10m"]).status == 0)
        let env = ProcessInfo.processInfo.environment
        let clients = Int(env["GBG_VAULT_AGENT_CLIENTS"] ?? "") ?? 10
        let each = Int(env["GBG_VAULT_AGENT_TOKENS"] ?? "") ?? 5
        let before = try session.fixture.auditJSON().count
        let statuses = LockedArray<Int32>()
        DispatchQueue.concurrentPerform(iterations: clients) { client in
            for i in 0..<each {
                let result = try? session.run(["token", client % 2 == 0 ? "pw" : "cc"] + (i == 0 ? ["--fresh"] : []), passphrase: false, token: true)
                statuses.append(result?.status ?? -1)
            }
        }
        #expect(statuses.values.count == clients * each)
        #expect(statuses.values.allSatisfy { $0 == 0 }, "\(statuses.values.filter { $0 != 0 })")
        #expect(try session.fixture.auditJSON().count == before + clients * each)
        #expect(try session.run(["audit", "verify"], passphrase: false).status == 0)
        expectNoLeaks(session.vault)
    }

    static func bytes(hex: String) -> [UInt8] {
        var out: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex, let next = hex.index(index, offsetBy: 2, limitedBy: hex.endIndex) {
            if let byte = UInt8(hex[index..<next], radix: 16) { out.append(byte) }
            index = next
        }
        return out
    }
}
