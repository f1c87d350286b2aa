import Foundation
import Testing
import VaultTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Key epochs under concurrency, `vault verify`, and the input and output hygiene of
/// issue "Format v2".
@Suite("key epochs, vault verify, output hygiene")
struct KeyEpochAndHygieneTests {
    @Test("100 rekeys racing add, rotate and token: every command succeeds and the independent reader opens everything")
    func rekeyRace() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        let rounds = Int(ProcessInfo.processInfo.environment["GBG_VAULT_REKEY_ROUNDS"] ?? "") ?? 100
        let failures = LockedArray<String>()
        let done = LockedArray<Bool>()
        let group = DispatchGroup()
        DispatchQueue.global().async(group: group) {
            for round in 0..<rounds {
                if let r = try? vault.run(["rekey"]), r.status != 0 { failures.append("rekey \(round): \(r.status) \(r.stderrText)") }
            }
            done.append(true)
        }
        DispatchQueue.global().async(group: group) {
            var i = 0
            while done.values.isEmpty {
                let secret = "race-secret-\(i)-" + UUID().uuidString
                if let r = try? vault.add("racer\(i)", clientID: "c\(i)", clientSecret: secret, grant: "client-credentials", env: "local"),
                   r.status != 0 { failures.append("add \(i): \(r.status) \(r.stderrText)") }
                i += 1
            }
        }
        DispatchQueue.global().async(group: group) {
            var i = 0
            while done.values.isEmpty {
                let r = try? vault.run(["rotate", "pw", "--client-secret", "--secrets-stdin"],
                                       stdin: Data(#"{"client_secret":"\#(fixture.clientSecret)"}"#.utf8))
                if let r, r.status != 0 { failures.append("rotate \(i): \(r.status) \(r.stderrText)") }
                i += 1
            }
        }
        DispatchQueue.global().async(group: group) {
            var i = 0
            while done.values.isEmpty {
                if let r = try? fixture.token(i % 2 == 0 ? "pw" : "cc"), r.status != 0 { failures.append("token \(i): \(r.status) \(r.stderrText)") }
                i += 1
            }
        }
        group.wait()
        #expect(failures.values.isEmpty, "\(failures.values.prefix(5))")
        let read = try independentReader(path: vault.path, passphrase: vault.passphrase)
        let report = try #require(read.report, "\(read.error ?? "")")
        #expect(report["key_epoch"] as? Int == rounds + 1)
        let profiles = report["profiles"] as? [String: [String: String]] ?? [:]
        #expect(profiles.count > 2)
        print("rekey race: \(rounds) rekeys, \(profiles.count - 2) profiles added, \((profiles["pw"] ?? [:]).count - 1) pw versions, \(report["audit_records"] ?? 0) audit records")
        #expect(try vault.run(["verify"]).status == 0)
        expectNoLeaks(vault)
    }

    @Test("vault verify names a damaged old secret version, an orphan row and a bad cached token; token still uses only the current version")
    func verifyNamesProblems() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        #expect(try vault.run(["rotate", "pw", "--client-secret", "--secrets-stdin"],
                              stdin: Data(#"{"client_secret":"\#(fixture.clientSecret)"}"#.utf8)).status == 0)
        #expect(try fixture.token("pw").status == 0)
        let clean = try vault.run(["verify", "--json"])
        #expect(clean.status == 0)
        let cleanReport = try JSONSerialization.jsonObject(with: clean.stdout) as? [String: Any]
        #expect(cleanReport?["secret_versions"] as? Int == 4)
        #expect(cleanReport?["cached_tokens"] as? Int == 1)
        // Damage version 1 of pw's client secret (not the current one), add an orphan row,
        // and change a byte of the cached token (the first byte, to 0x00, or to 0x01 when it
        // already is 0x00: a random ciphertext starts with 0x00 once in 256 runs).
        let changedFirstByte = "CAST(CASE WHEN substr(ciphertext, 1, 1) = X'00' THEN X'01' ELSE X'00' END || substr(ciphertext, 2) AS BLOB)"
        try vault.sql("""
            UPDATE secret_version SET ciphertext = \(changedFirstByte)
              WHERE field = 'client_secret' AND version = 1 AND profile_id = (SELECT id FROM profile WHERE name = 'pw');
            INSERT INTO secret_version SELECT 999, field, version, nonce, ciphertext, created_at FROM secret_version LIMIT 1;
            UPDATE token_cache SET ciphertext = \(changedFirstByte);
            """)
        let result = try vault.run(["verify"])
        #expect(result.status == 7)
        #expect(result.stderrText.contains("client_secret version 1 of profile 'pw'"), "\(result.stderrText)")
        #expect(result.stderrText.contains("belongs to no profile") || result.stderrText.contains("foreign key"), "\(result.stderrText)")
        #expect(result.stderrText.contains("cached token of profile 'pw'"), "\(result.stderrText)")
        // A fresh exchange only opens the current version.
        #expect(try fixture.token("pw", ["--fresh"]).status == 0)
        expectNoLeaks(vault)
    }

    @Test("values read from a tampered file reach the terminal sanitised: list, show, history, audit, env list, remove, verify")
    func sanitisedDisplay() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        let escape = "X'1b5b33316d'" // ESC [31m
        try vault.sql("""
            UPDATE profile SET client_id = 'evil' || CAST(\(escape) AS TEXT), name = 'pw' || CAST(X'1b5d303b7469746c6507' AS TEXT) WHERE name = 'cc';
            UPDATE environment SET api_base = 'https://x/' || CAST(\(escape) AS TEXT);
            UPDATE audit_record SET detail = 'd' || CAST(\(escape) AS TEXT), profile = 'p' || CAST(X'9b' AS TEXT) WHERE seq = 2;
            UPDATE secret_version SET created_at = '2026' || CAST(\(escape) AS TEXT);
            """)
        let name = try vault.sql("SELECT name FROM profile WHERE name LIKE 'pw_%'").stdoutText.trimmingCharacters(in: .newlines)
        for arguments in [["list"], ["show", name], ["history", name], ["audit"], ["env", "list"], ["remove", name, "--yes"], ["verify"], ["token", name]] {
            let result = try vault.run(arguments)
            for output in [result.stdout, result.stderr] {
                #expect(!output.contains(0x1b), "\(arguments) printed an escape character")
                #expect(!output.contains(0x07), "\(arguments) printed a bell")
            }
        }
        expectNoLeaks(vault)
    }

    @Test("exec gives the command the caller's umask, not vault's 077")
    func execUmask() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let result = try Binaries.run("/bin/sh", ["-c", "umask 027; exec \"$0\" exec pw -- sh -c umask", Binaries.vault],
                                      environment: fixture.vault.environment())
        #expect(result.status == 0, "\(result.stderrText)")
        #expect(result.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines) == "0027")
        expectNoLeaks(fixture.vault)
    }

    @Test("exec gives the command only the descriptors it was given: no epoll, eventfd or database descriptor of vault's")
    func execDescriptors() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        // vault is started with stdio and descriptor 5 only (a launcher closes the rest, which
        // the test process would otherwise hand down). 5 is the caller's to give: kept, as a
        // shell keeps it. In the command, 3 is the listing's own directory descriptor.
        let launcher = "import os, sys; os.closerange(3, 65536); os.dup2(os.open('/dev/null', os.O_RDONLY), 5); os.execv(sys.argv[1], sys.argv[1:])"
        let listing = "import os; print(' '.join(sorted(os.listdir('/proc/self/fd'), key=int)))"
        for arguments in [["exec", "pw", "--", "python3", "-c", listing], ["exec", "pw", "--fresh", "--", "python3", "-c", listing]] {
            let result = try Binaries.run("/usr/bin/env", ["python3", "-c", launcher, Binaries.vault] + arguments,
                                          environment: fixture.vault.environment())
            #expect(result.status == 0, "\(result.stderrText)")
            #expect(result.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines) == "0 1 2 3 5", "\(arguments): \(result.stdoutText)")
        }
        expectNoLeaks(fixture.vault)
    }

    /// A token that was not written is not a delivery: exit 1 with the reason, through
    /// `main` and through the client before `main` (the agent's answer); a reader that went
    /// away (a closed pipe) still ends the output quietly.
    @Test("vault token to a full disk or a closed stdout exits 1 with the reason, with and without the agent")
    func tokenOutputFailure() throws {
        let session = try SessionFixture()
        defer { session.stop() }
        let vault = session.vault
        func token(_ redirection: String, agent: Bool) throws -> ProcessResult {
            try Binaries.run("/bin/sh", ["-c", "exec \"$0\" token pw \(redirection)", Binaries.vault],
                             environment: vault.environment().merging(session.env) { $1 }.filter { agent ? $0.key != "VAULT_PASSPHRASE" : true })
        }
        for agent in [false, true] {
            if agent { #expect(try session.run(["unlock", "--for", "5m"]).status == 0) }
            let full = try token("> /dev/full", agent: agent)
            #expect(full.status == 1 && full.stderrText.contains("cannot write the token to standard output: No space left on device"),
                    "agent \(agent): \(full.status) \(full.stderrText)")
            let closed = try token(">&-", agent: agent)
            #expect(closed.status == 1 && closed.stderrText.contains("cannot write the token to standard output"), "agent \(agent): \(closed.stderrText)")
            let piped = try token("| true", agent: agent)
            #expect(piped.status == 0, "a closed pipe is quiet: \(piped.stderrText)")
        }
        expectNoLeaks(vault)
    }

    /// The agent is started with stdio on /dev/null and its two channels, nothing else:
    /// a descriptor the caller gave `vault unlock` is not held for the agent's life.
    @Test("the agent holds no descriptor the caller gave vault unlock")
    func agentDescriptors() throws {
        let session = try SessionFixture()
        defer { session.stop() }
        let vault = session.vault
        let marker = vault.directory + "/caller-only.txt"
        #expect(FileManager.default.createFile(atPath: marker, contents: Data("x".utf8)))
        let launcher = "import os, sys; os.dup2(os.open(sys.argv[1], os.O_RDONLY), 7); os.execv(sys.argv[2], sys.argv[2:])"
        let unlocked = try Binaries.run("/usr/bin/env", ["python3", "-c", launcher, marker, Binaries.vault, "unlock", "--for", "5m"],
                                        environment: vault.environment().merging(session.env) { $1 })
        #expect(unlocked.status == 0, "\(unlocked.stderrText)")
        let pid = try #require(session.status()["pid"] as? Int)
        let descriptors = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")
        let targets = descriptors.compactMap { try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\($0)") }
        #expect(!targets.contains(marker), "\(targets)")
        #expect(!descriptors.contains("7") || targets.count == descriptors.count, "\(descriptors) \(targets)")
    }

    @Test("--passphrase-file: refused when others can write it or another user owns it, a warning when others can read it")
    func passphraseFilePermissions() throws {
        let vault = TestVault()
        try vault.initialise()
        let file = vault.directory + "/passphrase"
        try Data((vault.passphrase + "\n").utf8).write(to: URL(fileURLWithPath: file))
        func list(_ mode: mode_t) throws -> ProcessResult {
            chmod(file, mode)
            return try vault.run(["rekey", "--passphrase-file", file], removing: ["VAULT_PASSPHRASE"])
        }
        #expect(try list(0o600).status == 0)
        let readable = try list(0o644)
        #expect(readable.status == 0)
        #expect(readable.stderrText.contains("can be read by others"))
        for mode: mode_t in [0o666, 0o620, 0o602] {
            let writable = try list(mode)
            #expect(writable.status == 64, "mode \(String(mode, radix: 8))")
            #expect(writable.stderrText.contains("can be written by others"))
        }
        chmod(file, 0o600)
        if getuid() == 0 {
            chown(file, 65534, 65534)
            let foreign = try vault.run(["rekey", "--passphrase-file", file], removing: ["VAULT_PASSPHRASE"])
            #expect(foreign.status == 64)
            #expect(foreign.stderrText.contains("owned by uid 65534"))
            let viaEnv = try vault.run(["rekey"], env: ["VAULT_PASSPHRASE_FILE": file], removing: ["VAULT_PASSPHRASE"])
            #expect(viaEnv.status == 64)
        }
        // Nothing was changed by the refused runs: two rekeys, not more.
        #expect(try vault.sql("SELECT key_epoch FROM vault_header").stdoutText == "3\n")
        expectNoLeaks(vault)
    }

    @Test("argument errors use the `vault: error:` prefix and exit 64; a bad --cacert is a usage error before any request")
    func usageErrors() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        for arguments in [["tokn", "pw"], ["token"], ["token", "pw", "--format", "yaml"], ["list", "--bogus"]] {
            let result = try vault.run(arguments)
            #expect(result.status == 64, "\(arguments)")
            #expect(result.stderrText.hasPrefix("vault: error: "), "\(arguments): \(result.stderrText)")
            #expect(!result.stderrText.contains("\nError:"))
        }
        let help = try vault.run(["--help"])
        #expect(help.status == 0 && help.stdoutText.contains("USAGE"))
        let badCA = vault.directory + "/not-a-ca.pem"
        try Data("not a certificate".utf8).write(to: URL(fileURLWithPath: badCA))
        for cacert in [badCA, vault.directory + "/missing.pem"] {
            let result = try fixture.token("pw", ["--fresh", "--cacert", cacert])
            #expect(result.status == 64, "\(result.stderrText)")
            #expect(result.stderrText.contains("CA bundle"))
        }
        let proxy = try vault.run(["token", "pw", "--fresh", "--env", "eu"], env: ["HTTPS_PROXY": "ftp://proxy.example:21"])
        #expect(proxy.status == 64, "\(proxy.stderrText)")
        #expect(try fixture.stub.tokenRequests() == 0)
        expectNoLeaks(vault)
    }

    @Test("--verbose and VAULT_VERBOSE=1 trace the steps on stderr, with no secret, token or passphrase in them")
    func verboseTrace() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let flag = try fixture.token("pw", ["--fresh", "--verbose"])
        #expect(flag.status == 0)
        for line in ["vault: trace: [", "] opened ", "unlocked as member 'owner' (key epoch 1)", "attempt 1: HTTP 200", "audit record 5 committed (token, ok)"] {
            #expect(flag.stderrText.contains(line), "missing '\(line)' in \(flag.stderrText)")
        }
        let env = try fixture.vault.run(["token", "cc"], env: ["VAULT_VERBOSE": "1"], expectTokenOnStdout: true)
        #expect(env.status == 0)
        #expect(env.stderrText.contains("vault: trace: "))
        let quiet = try fixture.token("pw")
        #expect(!quiet.stderrText.contains("trace"))
        expectNoLeaks(fixture.vault)
    }
}
