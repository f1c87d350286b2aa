import Foundation
import Testing
import VaultTestSupport

@Suite("token exchange against gbg-auth-stub, end to end")
struct ExchangeTests {
    @Test("both grants succeed, every format prints what it should")
    func formats() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let raw = try fixture.token("pw")
        #expect(raw.status == 0, "\(raw.stderrText)")
        let token = raw.stdoutText.trimmingCharacters(in: .newlines)
        #expect(token.hasPrefix("stub-"))
        let header = try fixture.vault.run(["token", "pw", "--format", "header"], expectTokenOnStdout: true)
        #expect(header.stdoutText == "Authorization: Bearer \(token)\n")
        let env = try fixture.vault.run(["token", "pw", "--format", "env"], expectTokenOnStdout: true)
        #expect(env.stdoutText.contains("export GBG_ACCESS_TOKEN='\(token)'\n"))
        #expect(env.stdoutText.contains("export GBG_API_BASE='\(fixture.stub.apiBase)'\n"))
        let json = try fixture.vault.run(["token", "cc", "--format", "json"], expectTokenOnStdout: true)
        let object = try JSONSerialization.jsonObject(with: json.stdout) as? [String: Any]
        #expect(object?["token_type"] as? String == "Bearer")
        #expect(object?["expires_in"] as? Int == 3600)
        #expect(object?["api_base"] as? String == fixture.stub.apiBase)
        if let t = object?["access_token"] as? String { LeakScanner.shared.register(token: t) }
        // expires_at: whole seconds in UTC, the text ISO8601DateFormatter gives (an hour from now).
        let expiresAt = try #require(object?["expires_at"] as? String)
        let parsed = try #require(ISO8601DateFormatter().date(from: expiresAt), "\(expiresAt)")
        #expect(ISO8601DateFormatter().string(from: parsed) == expiresAt)
        #expect(abs(parsed.timeIntervalSinceNow - 3600) < 120, "\(expiresAt)")
        expectNoLeaks(fixture.vault)
    }

    @Test("--format env survives the shell: an API base with a quote, and a quote with a combining mark, comes back exactly")
    func envFormatQuoting() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let apiBase = fixture.stub.apiBase + "o'brien/o'\u{301}neill/"
        let added = try fixture.vault.run(["env", "add", "quoted", "--token-url", fixture.stub.tokenURL, "--api-base", apiBase])
        try #require(added.status == 0, "\(added.stderrText)")
        let env = try fixture.vault.run(["token", "pw", "--env", "quoted", "--format", "env"], expectTokenOnStdout: true)
        try #require(env.status == 0, "\(env.stderrText)")
        // The output on the shell's stdin (not in its argv: it holds the token).
        let shell = try Binaries.run("/bin/sh", ["-c", "eval \"$(cat)\"; printf '%s\\n%s' \"$GBG_API_BASE\" \"$GBG_TOKEN_EXPIRES_AT\""],
                                     environment: ["PATH": "/usr/bin:/bin"], stdin: env.stdout)
        #expect(shell.status == 0, "\(shell.stderrText)")
        let lines = shell.stdoutText.components(separatedBy: "\n")
        #expect(lines.first == apiBase, "\(shell.stdoutText)")
        let expiresAt = try #require(lines.last.flatMap { ISO8601DateFormatter().date(from: $0) }, "\(shell.stdoutText)")
        #expect(abs(expiresAt.timeIntervalSinceNow - 3600) < 120)
    }

    @Test("every commit is flushed to disk: the WAL is fsynced before a token is printed, and doctor says synchronous=FULL")
    func durableCommits() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        let doctor = try vault.run(["doctor"])
        #expect(doctor.stdoutText.contains("synchronous=FULL"), "\(doctor.stdoutText)")
        let strace = "/usr/bin/strace"
        guard FileManager.default.isExecutableFile(atPath: strace) else {
            Issue.record("strace is not installed (scripts/setup.sh installs it)")
            return
        }
        for arguments in [["token", "pw", "--fresh"], ["token", "pw"]] {
            let trace = vault.directory + "/fsync.trace"
            let result = try Binaries.run(strace, ["-f", "-y", "-e", "trace=fsync,fdatasync,write", "-o", trace, Binaries.vault] + arguments,
                                          environment: vault.environment())
            #expect(result.status == 0, "\(result.stderrText)")
            let token = result.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)
            if !token.isEmpty { LeakScanner.shared.register(token: token) }
            let lines = try String(contentsOfFile: trace, encoding: .utf8).split(separator: "\n")
            try? FileManager.default.removeItem(atPath: trace)
            // The audit record's commit is flushed (fsync/fdatasync of the WAL), and that
            // happens before the token is written to stdout.
            let flush = lines.firstIndex { ($0.contains("fsync(") || $0.contains("fdatasync(")) && $0.contains(".db-wal>") }
            let printed = lines.firstIndex { $0.contains("write(1") }
            #expect(flush != nil, "\(arguments): no flush of the WAL")
            if let flush, let printed { #expect(flush < printed, "\(arguments): the token was printed before the commit was flushed") }
        }
    }

    @Test("rejections exit 4 with the OAuth error; the temporary-password hint appears")
    func rejections() throws {
        let fixture = try Fixture(temporaryPassword: true)
        defer { fixture.stub.stop() }
        let temporary = try fixture.token("pw")
        #expect(temporary.status == 4)
        #expect(temporary.stdout.isEmpty)
        #expect(temporary.stderrText.contains("invalid_grant"))
        #expect(temporary.stderrText.contains("temporary"))
        #expect(temporary.stderrText.contains("vault rotate NAME --password"))

        try fixture.vault.run(["rotate", "cc", "--secrets-stdin"], stdin: Data(#"{"client_secret":"wrong-client-secret"}"#.utf8))
        let badClient = try fixture.token("cc")
        #expect(badClient.status == 4)
        #expect(badClient.stderrText.contains("invalid_client"))
        #expect(badClient.stderrText.contains("HTTP 401"))

        let audit = try fixture.auditJSON(["--outcome", "error"])
        #expect(audit.contains { $0["oauth_error"] as? String == "invalid_grant" && $0["http_status"] as? Int == 400 })
        #expect(audit.contains { $0["oauth_error"] as? String == "invalid_client" && $0["outcome"] as? String == "rejected" })
        #expect(audit.allSatisfy { $0["request_id"] != nil || $0["action"] as? String != "token" })
        expectNoLeaks(fixture.vault)
    }

    @Test("the first two 503s are retried: success with 3 attempts in the audit record")
    func retries() throws {
        let fixture = try Fixture(stubArguments: ["--fail-first", "2", "--fail-status", "503"])
        defer { fixture.stub.stop() }
        let result = try fixture.token("pw")
        #expect(result.status == 0, "\(result.stderrText)")
        let audit = try fixture.auditJSON(["--profile", "pw", "--limit", "1"])
        #expect(audit.first?["attempts"] as? Int == 3)
        #expect(audit.first?["outcome"] as? String == "ok")
        #expect(try fixture.stub.tokenRequests() == 3)
        expectNoLeaks(fixture.vault)
    }

    @Test("503 on every attempt: exit 5 after 3 attempts; 400/401 are never retried")
    func unavailable() throws {
        let fixture = try Fixture(stubArguments: ["--fail-first", "100", "--fail-status", "503"])
        defer { fixture.stub.stop() }
        let result = try fixture.token("pw")
        #expect(result.status == 5)
        #expect(result.stderrText.contains("503"))
        #expect(try fixture.stub.tokenRequests() == 3)
        let audit = try fixture.auditJSON(["--limit", "1"])
        #expect(audit.first?["outcome"] as? String == "unavailable")
        expectNoLeaks(fixture.vault)
    }

    @Test("a stalled server times out with exit 5; nothing listening is exit 5")
    func stalls() throws {
        let fixture = try Fixture(stubArguments: ["--fault", "stall"])
        defer { fixture.stub.stop() }
        let started = Date()
        let result = try fixture.token("pw", ["--timeout", "2"])
        #expect(result.status == 5, "\(result.stderrText)")
        #expect(result.stderrText.contains("timed out after 2 s"), "\(result.stderrText)")
        #expect(Date().timeIntervalSince(started) < 20)
        fixture.stub.stop()
        // One line naming the endpoint and the cause, not the network library's error.
        let refused = try fixture.token("pw", ["--timeout", "3"])
        #expect(refused.status == 5)
        let origin = fixture.stub.tokenURL.components(separatedBy: "/as/").first ?? ""
        #expect(refused.stderrText.components(separatedBy: "\n").first
                    == "vault: error: token endpoint unavailable: \(origin): connection refused (nothing listens on that port)",
                "\(refused.stderrText)")
        // A DNS name that cannot exist (RFC 6761 `.invalid`), given as an https environment.
        #expect(try fixture.vault.run(["env", "add", "nowhere", "--token-url", "https://gbg-vault.invalid/as/token.oauth2"]).status == 0)
        #expect(try fixture.vault.run(["add", "dns", "--client-id", "c", "--grant", "client-credentials", "--env", "nowhere",
                                       "--secrets-stdin"], stdin: Data(#"{"client_secret":"dns-test-secret"}"#.utf8)).status == 0)
        let dns = try fixture.vault.run(["token", "dns", "--timeout", "3"])
        #expect(dns.status == 5)
        // Where the resolver answers at once that the name does not exist (as here and in
        // CI); a machine whose resolver does not answer gets the timeout line instead.
        let resolverAnswers = (try? Binaries.run("/usr/bin/getent", ["hosts", "gbg-vault.invalid"], environment: [:], timeout: 2).status) == 2
        let expected = resolverAnswers ? "https://gbg-vault.invalid: DNS name not found (gbg-vault.invalid)" : "https://gbg-vault.invalid: timed out"
        #expect(dns.stderrText.contains(expected) && !dns.stderrText.contains("SocketAddressError"), "\(dns.stderrText)")
    }

    @Test("non-JSON, oversized, truncated and empty answers exit 7 and print nothing",
          arguments: ["non-json", "oversized", "close-mid-body", "empty-200"])
    func malformed(fault: String) throws {
        let fixture = try Fixture(stubArguments: ["--fault", fault])
        defer { fixture.stub.stop() }
        let result = try fixture.token("pw")
        #expect(result.status == 7, "\(fault): \(result.stderrText)")
        #expect(result.stdout.isEmpty)
        #expect(result.stderrText.contains("malformed"))
        let audit = try fixture.auditJSON(["--limit", "1"])
        #expect(audit.first?["outcome"] as? String == "malformed")
        expectNoLeaks(fixture.vault)
    }

    @Test("http:// to a non-loopback host is refused")
    func plainHTTPRefused() throws {
        let vault = TestVault()
        try vault.initialise()
        let result = try vault.run(["env", "add", "staging", "--token-url", "http://auth.example.com/as/token.oauth2"])
        #expect(result.status == 64)
        #expect(result.stderrText.contains("refusing plain http://"))
        let creds = try vault.run(["env", "add", "staging", "--token-url", "https://user:pw@auth.example.com/as/token.oauth2"])
        #expect(creds.status == 64)
        #expect(try vault.run(["env", "add", "staging", "--token-url", "https://auth.example.com/as/token.oauth2"]).status == 0)
        let list = try vault.run(["env", "list", "--json"]).stdoutText
        #expect(list.contains("https://eu.platform.go.gbgplc.com/v2/captain/"))
        #expect(list.contains("staging"))
    }

    @Test("TLS with a test CA: accepted with --cacert or VAULT_CA_BUNDLE, refused without")
    func tls() throws {
        let vault = TestVault()
        let dir = vault.directory
        let openssl = { (args: [String]) throws -> Void in
            let r = try Binaries.run("/usr/bin/openssl", args, environment: ["PATH": "/usr/bin:/bin"])
            try #require(r.status == 0, "\(r.stderrText)")
        }
        try openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", dir + "/ca.key", "-out", dir + "/ca.pem",
                     "-days", "2", "-subj", "/CN=gbg-vault test CA"])
        try openssl(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", dir + "/server.key", "-out", dir + "/server.csr",
                     "-subj", "/CN=localhost"])
        try Data("subjectAltName=DNS:localhost,IP:127.0.0.1\n".utf8).write(to: URL(fileURLWithPath: dir + "/san.ext"))
        try openssl(["x509", "-req", "-in", dir + "/server.csr", "-CA", dir + "/ca.pem", "-CAkey", dir + "/ca.key",
                     "-CAcreateserial", "-out", dir + "/server.pem", "-days", "2", "-extfile", dir + "/san.ext"])
        let accounts = try writeAccounts(in: dir, clients: [["client_id": "c", "client_secret": "tls-client-secret"]],
                                         users: [["username": "u", "password": "tls-password-value"]])
        let stub = try StubServer(accounts: accounts, arguments: ["--tls-cert", dir + "/server.pem", "--tls-key", dir + "/server.key"], scheme: "https")
        defer { stub.stop() }
        try vault.initialise()
        #expect(try vault.run(["env", "add", "tls", "--token-url", stub.tokenURL]).status == 0)
        try vault.add("p", clientID: "c", clientSecret: "tls-client-secret", username: "u", password: "tls-password-value", env: "tls")
        let untrusted = try vault.run(["token", "p"], expectTokenOnStdout: true)
        #expect(untrusted.status == 5, "\(untrusted.stderrText)")
        #expect(untrusted.stderrText.contains("TLS certificate problem: the server's certificate is not trusted"), "\(untrusted.stderrText)")
        let trusted = try vault.run(["token", "p", "--cacert", dir + "/ca.pem"], expectTokenOnStdout: true)
        #expect(trusted.status == 0, "\(trusted.stderrText)")
        LeakScanner.shared.register(token: trusted.stdoutText.trimmingCharacters(in: .newlines))
        let viaEnv = try vault.run(["token", "p", "--fresh"], env: ["VAULT_CA_BUNDLE": dir + "/ca.pem"], expectTokenOnStdout: true)
        #expect(viaEnv.status == 0, "\(viaEnv.stderrText)")
        LeakScanner.shared.register(token: viaEnv.stdoutText.trimmingCharacters(in: .newlines))
        expectNoLeaks(vault)
    }

    @Test("cache: a second token within the TTL makes no request; the margin and --fresh are respected")
    func cache() throws {
        let fixture = try Fixture(tokenTTL: 400)
        defer { fixture.stub.stop() }
        let first = try fixture.token("pw")
        let second = try fixture.token("pw")
        #expect(first.status == 0 && second.status == 0)
        #expect(first.stdout == second.stdout)
        #expect(try fixture.stub.tokenRequests() == 1)
        // 400 s issued, margin 500 s: the cached token is too close to expiry.
        let margin = try fixture.token("pw", ["--min-ttl", "500"])
        #expect(margin.status == 0)
        #expect(try fixture.stub.tokenRequests() == 2)
        let fresh = try fixture.token("pw", ["--fresh"])
        #expect(fresh.status == 0)
        #expect(try fixture.stub.tokenRequests() == 3)
        let audit = try fixture.auditJSON(["--profile", "pw", "--outcome", "cache_hit"])
        #expect(audit.count == 1)
        expectNoLeaks(fixture.vault)
    }

    @Test("exec passes the token only by environment and exits with the child's status")
    func exec() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let out = fixture.vault.directory + "/child"
        let script = """
            tr '\\0' ' ' < /proc/self/cmdline > \(out).argv
            printf '%s\\n%s\\n%s\\n%s\\n%s\\n' "$GBG_ACCESS_TOKEN" "$GO_CUSTOMER_ACCESS" "$GBG_API_BASE" "$GBG_TOKEN_EXPIRES_AT" "${VAULT_PASSPHRASE:-unset}" > \(out).env
            exit 42
            """
        let result = try fixture.vault.run(["exec", "pw", "--", "/bin/sh", "-c", script])
        #expect(result.status == 42, "\(result.stderrText)")
        let lines = (try String(contentsOfFile: out + ".env", encoding: .utf8)).split(separator: "\n").map(String.init)
        #expect(lines.count == 5)
        #expect(lines[0].hasPrefix("stub-") && lines[0] == lines[1])
        #expect(lines[2] == fixture.stub.apiBase)
        #expect(lines[4] == "unset")
        LeakScanner.shared.register(token: lines[0])
        let argv = FileManager.default.contents(atPath: out + ".argv") ?? Data()
        LeakScanner.shared.scan(argv, artefact: "child argv", includeTokens: true)
        try? FileManager.default.removeItem(atPath: out + ".env")
        let missing = try fixture.vault.run(["exec", "pw", "--", "/nonexistent/command"])
        #expect(missing.status == 127, "as a shell: not found")
        expectNoLeaks(fixture.vault)
    }

    @Test("rotate --verify keeps the old secret when the new one is rejected")
    func rotateVerify() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let bad = try fixture.vault.run(["rotate", "cc", "--verify", "--secrets-stdin"], stdin: Data(#"{"client_secret":"not-the-right-secret"}"#.utf8))
        #expect(bad.status == 4)
        let history = try fixture.vault.run(["history", "cc", "--json"]).stdoutText
        #expect(!history.contains("\"version\":2"))
        #expect(try fixture.token("cc", ["--fresh"]).status == 0)
        let good = try fixture.vault.run(["rotate", "cc", "--verify", "--secrets-stdin"], stdin: Data("{\"client_secret\":\"\(fixture.ccSecret)\"}".utf8))
        #expect(good.status == 0, "\(good.stderrText)")
        #expect(try fixture.vault.run(["history", "cc", "--json"]).stdoutText.contains("\"version\":2"))
        let verify = try fixture.auditJSON(["--profile", "cc"]).filter { $0["action"] as? String == "verify" }
        #expect(verify.map { $0["outcome"] as? String } == ["ok", "rejected"])
        expectNoLeaks(fixture.vault)
    }

    @Test("20 token processes at once: 20 successes, 20 audit records, and the chain verifies")
    func concurrency() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let before = try fixture.auditJSON().count
        let results = LockedArray<Int32>()
        DispatchQueue.concurrentPerform(iterations: 20) { _ in
            let result = try? fixture.token("pw", ["--fresh"])
            results.append(result?.status ?? -1)
        }
        #expect(results.values == Array(repeating: 0, count: 20))
        #expect(try fixture.auditJSON().count == before + 20)
        #expect(try fixture.vault.run(["audit", "verify"]).status == 0)
        expectNoLeaks(fixture.vault)
    }

    @Test("fail closed: a trigger that blocks audit inserts is refused on open: exit 7, nothing printed, nothing sent")
    func failClosed() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        for trigger in ["CREATE TRIGGER block BEFORE INSERT ON audit_record BEGIN SELECT RAISE(ABORT, 'audit disabled'); END;",
                        "CREATE TRIGGER block BEFORE INSERT ON audit_record BEGIN SELECT RAISE(IGNORE); END;"] {
            try fixture.vault.sql(trigger)
            let result = try fixture.token("pw")
            #expect(result.status == 7, "\(result.stderrText)")
            #expect(result.stdout.isEmpty)
            #expect(result.stderrText.contains("schema"))
            #expect(try fixture.stub.tokenRequests() == 0)
            #expect(try fixture.vault.sql("SELECT count(*) FROM token_cache").stdoutText == "0\n")
            try fixture.vault.sql("DROP TRIGGER block")
        }
        expectNoLeaks(fixture.vault)
    }
}
