import Foundation
import Testing
import VaultTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Upgrades from the format-1 vaults in `testvectors/v1/`, which the format-1 binary made.
@Suite("upgrades from formats 1 and 2, from committed fixtures")
struct UpgradeTests {
    struct Fixtures {
        let passphrase: String
        let profiles: [String: [String: [String]]]

        init() throws {
            let data = try Data(contentsOf: repositoryRoot.appendingPathComponent("testvectors/v1/fixtures.json"))
            let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
            passphrase = try #require(object["passphrase"] as? String)
            var profiles: [String: [String: [String]]] = [:]
            for (name, value) in try #require(object["profiles"] as? [String: [String: Any]]) {
                profiles[name] = value.compactMapValues { $0 as? [String] }
            }
            self.profiles = profiles
        }

        /// The secrets as the reader reports them: `field/vN` → value.
        func expected(_ profile: String) -> [String: String] {
            var out: [String: String] = [:]
            for (field, values) in profiles[profile] ?? [:] {
                for (index, value) in values.enumerated() { out["\(field)/v\(index + 1)"] = value }
            }
            return out
        }
    }

    /// A test vault holding a copy of fixture `name`.
    func vault(from name: String, fixtures: Fixtures) throws -> TestVault {
        let vault = TestVault(passphrase: fixtures.passphrase)
        try FileManager.default.createDirectory(atPath: (vault.path as NSString).deletingLastPathComponent, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        try FileManager.default.copyItem(atPath: repositoryRoot.appendingPathComponent("testvectors/v1/\(name).db").path, toPath: vault.path)
        chmod(vault.path, 0o600)
        for values in fixtures.profiles.values.flatMap(\.values) { for value in values { LeakScanner.shared.register(secret: value) } }
        return vault
    }

    /// The file's logical content (`sqlite3 .dump`): every row and the schema. Opening a
    /// WAL database through GRDB bumps SQLite's schema cookie in the file header even when
    /// nothing changes, so raw bytes are not compared.
    func contentDigest(_ path: String) throws -> String {
        let dump = try Binaries.run("/usr/bin/sqlite3", [path, ".dump"], environment: [:])
        try #require(dump.status == 0)
        return dump.stdoutText
    }

    @Test("read-only commands work on format 1 without changing it; the first unlock upgrades; secrets and history survive")
    func firstUnlock() throws {
        let fixtures = try Fixtures()
        let vault = try vault(from: "v1-testkdf", fixtures: fixtures)
        let before = try contentDigest(vault.path)
        for arguments in [["list", "--json"], ["show", "pw"], ["history", "pw"], ["audit", "--json"], ["env", "list"], ["doctor"]] {
            let result = try vault.run(arguments, removing: ["VAULT_PASSPHRASE"])
            #expect(result.status == 0 || (arguments == ["doctor"] && result.status == 1), "\(arguments): \(result.stderrText)")
        }
        #expect(try vault.run(["doctor"], removing: ["VAULT_PASSPHRASE"]).stdoutText.contains("format 1"))
        #expect(try vault.run(["audit", "--json"], removing: ["VAULT_PASSPHRASE"]).stdoutText.contains("\"rotate\""))
        try vault.sql("PRAGMA wal_checkpoint(TRUNCATE)")
        #expect(try contentDigest(vault.path) == before, "a read-only command changed the format-1 file")
        #expect(try independentReader(path: vault.path, passphrase: fixtures.passphrase).report?["format_version"] as? Int == 1)

        // A stub that knows the fixture's newest secrets; the first token upgrades the vault.
        let stub = try StubServer(accounts: try writeAccounts(
            in: vault.directory,
            clients: [["client_id": "client-pw", "client_secret": fixtures.profiles["pw"]!["client_secret"]!.last!, "grants": ["password"]],
                      ["client_id": "client-cc", "client_secret": fixtures.profiles["cc"]!["client_secret"]!.last!,
                       "grants": ["client_credentials"], "scopes": ["gbg.token"]]],
            users: [["username": "api-user@example.com", "password": fixtures.profiles["pw"]!["password"]!.last!]]))
        defer { stub.stop() }
        #expect(try vault.run(["env", "add", "here", "--token-url", stub.tokenURL, "--api-base", stub.apiBase]).status == 0)
        for profile in ["pw", "cc"] {
            let token = try vault.run(["token", profile, "--env", "here"], expectTokenOnStdout: true)
            #expect(token.status == 0, "\(token.stderrText)")
            LeakScanner.shared.register(token: token.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        let read = try independentReader(path: vault.path, passphrase: fixtures.passphrase)
        let report = try #require(read.report, "\(read.error ?? "")")
        #expect(report["format_version"] as? Int == 4)
        let profiles = report["profiles"] as? [String: [String: String]]
        #expect(profiles?["pw"] == fixtures.expected("pw"))
        #expect(profiles?["cc"] == fixtures.expected("cc"))
        // 12 format-1 records, the upgrades to format 2 (unsigned), to format 3 (the first
        // signed record) and to format 4, env-add, 2 tokens; 5 signed records.
        #expect(report["audit_records"] as? Int == 18)
        #expect(report["signatures"] as? Int == 5)
        let audit = try JSONSerialization.jsonObject(with: vault.run(["audit", "--json", "--limit", "6"]).stdout) as? [[String: Any]]
        #expect(audit?.last?["action"] as? String == "upgrade")
        #expect(audit?.dropLast(2).last?["action"] as? String == "upgrade" && audit?.dropLast(2).last?["member"] as? String == "owner"
                && (audit?.dropLast(2).last?["detail"] as? String)?.contains("format 3 to 4") == true)
        #expect((audit?.last?["detail"] as? String)?.contains("12 record(s) re-MAC'd, 6 secret version(s) re-sealed, 2 cached token(s) dropped") == true)
        #expect(audit?.dropLast().last?["action"] as? String == "upgrade" && audit?.dropLast().last?["member"] as? String == "owner")
        #expect(try vault.run(["verify"]).status == 0)
        #expect(try vault.run(["audit", "verify"]).stdoutText.contains("18 record(s)"))
        expectNoLeaks(vault)
    }

    @Test("a failure or a kill in the format-3 step (a test fault point) leaves a complete format-2 vault, said so; the next unlock finishes to format 4")
    func failedSecondStep() throws {
        let fixtures = try Fixtures()
        for action in ["ioerror", "kill"] {
            let vault = try vault(from: "v1-testkdf", fixtures: fixtures)
            let failed = try vault.run(["upgrade"], env: ["GBG_VAULT_TEST_FAULT": "upgrade-format3-begins:\(action)"])
            if action == "ioerror" {
                #expect(failed.status == 1, "\(failed.stderrText)")
                #expect(failed.stderrText.contains("upgraded to format 2, but not to format 4") && failed.stderrText.contains("input/output error"),
                        "\(failed.stderrText)")
                #expect(!failed.stderrText.contains("nothing was changed"), "\(failed.stderrText)")
            } else {
                #expect(failed.status == 128 + 9 || failed.status == -9, "killed: \(failed.status)")
            }
            let between = try #require(try independentReader(path: vault.path, passphrase: fixtures.passphrase).report)
            #expect(between["format_version"] as? Int == 2, "\(action)")
            #expect((between["profiles"] as? [String: [String: String]])?["pw"] == fixtures.expected("pw"))
            let finished = try vault.run(["upgrade"])
            #expect(finished.status == 0 && finished.stderrText.contains("from format 2 to format 4"), "\(finished.stderrText)")
            let after = try #require(try independentReader(path: vault.path, passphrase: fixtures.passphrase).report)
            #expect(after["format_version"] as? Int == 4)
            #expect((after["profiles"] as? [String: [String: String]])?["cc"] == fixtures.expected("cc"))
            #expect(try vault.run(["verify"]).status == 0)
            expectNoLeaks(vault)
        }
    }

    @Test("vault upgrade on the fixture with a real Argon2id preset; a second run has nothing to do")
    func explicitUpgrade() throws {
        let fixtures = try Fixtures()
        let vault = try vault(from: "v1-interactive", fixtures: fixtures)
        let result = try vault.run(["upgrade"], removing: ["GBG_VAULT_TEST_ONLY_INSECURE_KDF"])
        #expect(result.status == 0, "\(result.stderrText)")
        #expect(result.stderrText.contains("from format 1 to format 4"))
        let again = try vault.run(["upgrade"], removing: ["GBG_VAULT_TEST_ONLY_INSECURE_KDF"])
        #expect(again.stderrText.contains("already format 4"))
        let read = try independentReader(path: vault.path, passphrase: fixtures.passphrase)
        #expect(read.report?["format_version"] as? Int == 4, "\(read.error ?? "")")
        #expect((read.report?["profiles"] as? [String: [String: String]])?["pw"] == fixtures.expected("pw"))
        expectNoLeaks(vault)
    }

    @Test("a tampered format-1 vault is not upgraded: exit 7, its content stays exactly as it was",
          arguments: [
            "UPDATE secret_version SET ciphertext = CAST(substr(ciphertext, 1, 5) || CASE WHEN substr(ciphertext, 6, 1) = X'00' THEN X'01' ELSE X'00' END || substr(ciphertext, 7) AS BLOB) WHERE version = 1 AND field = 'password'",
            "UPDATE environment SET token_url = 'https://evil.example/as/token.oauth2' WHERE name = 'local'",
            "UPDATE audit_record SET outcome = 'error' WHERE seq = 3",
            "DELETE FROM secret_version WHERE field = 'client_secret' AND version = 2",
          ])
    func tamperedFormat1(statement: String) throws {
        let fixtures = try Fixtures()
        let vault = try vault(from: "v1-testkdf", fixtures: fixtures)
        #expect(try vault.sql(statement).status == 0)
        try vault.sql("PRAGMA wal_checkpoint(TRUNCATE)")
        let before = try contentDigest(vault.path)
        let result = try vault.run(["upgrade"])
        #expect(result.status == 7, "\(statement): \(result.stderrText)")
        #expect(result.stderrText.contains("not upgraded"))
        try vault.sql("PRAGMA wal_checkpoint(TRUNCATE)")
        #expect(try contentDigest(vault.path) == before)
        #expect(try vault.sql("SELECT format_version FROM vault_header").stdoutText == "1\n")
        expectNoLeaks(vault)
    }

    @Test("SIGKILL during the upgrade: the file is always a whole format-1, 2, 3 or 4 vault (each step is one transaction)")
    func killedUpgrade() throws {
        let fixtures = try Fixtures()
        let rounds = Int(ProcessInfo.processInfo.environment["GBG_VAULT_UPGRADE_KILLS"] ?? "") ?? 40
        var generator = SeededGenerator(seed: UInt64(ProcessInfo.processInfo.environment["GBG_VAULT_CRASH_SEED"] ?? "") ?? 20261129)
        var outcomes: [Int: Int] = [:]
        // The window: one uninterrupted upgrade, timed here (a loaded machine is slower).
        let timed = try vault(from: "v1-testkdf", fixtures: fixtures)
        let started = Date()
        #expect(try timed.run(["upgrade"]).status == 0)
        let span = UInt32(min(2_000_000, max(20_000, Date().timeIntervalSince(started) * 1_200_000)))
        for round in 0..<rounds {
            let vault = try vault(from: "v1-testkdf", fixtures: fixtures)
            let child = try ChildProcess(Binaries.vault, ["upgrade"], environment: vault.environment())
            child.closeStdin()
            usleep(UInt32.random(in: 0...span, using: &generator))
            child.kill(SIGKILL)
            _ = child.wait(timeout: 30)
            let read = try independentReader(path: vault.path, passphrase: fixtures.passphrase)
            let report = try #require(read.report, "round \(round): \(read.error ?? "")")
            let format = report["format_version"] as? Int ?? 0
            outcomes[format, default: 0] += 1
            let profiles = report["profiles"] as? [String: [String: String]]
            #expect(profiles?["pw"] == fixtures.expected("pw"), "round \(round)")
            #expect(profiles?["cc"] == fixtures.expected("cc"), "round \(round)")
            #expect(report["audit_records"] as? Int == [1: 12, 2: 13, 3: 14, 4: 15][format], "round \(round)")
            // And the binary opens it either way.
            #expect(try vault.run(["verify"]).status == 0, "round \(round)")
        }
        print("upgrade kills: \(rounds) rounds in 0–\(span / 1000) ms, left format 1: \(outcomes[1] ?? 0), format 2: \(outcomes[2] ?? 0), format 3: \(outcomes[3] ?? 0), format 4: \(outcomes[4] ?? 0)")
        #expect(outcomes.keys.allSatisfy { (1...4).contains($0) })
        expectNoLeaks()
    }
}
