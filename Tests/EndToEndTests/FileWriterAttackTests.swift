import Foundation
import Testing
import VaultTestSupport

/// The attacks of issue "Format v2", reproduced against the binary by someone who can
/// write the vault file but does not know the passphrase. Each must now fail with exit 7,
/// and no request carrying a secret may reach any endpoint (the stubs count every token
/// request they receive).
@Suite("attacks by someone who can write the vault file")
struct FileWriterAttackTests {
    /// A second endpoint, the attacker's: it records every token request.
    static func attackerStub(in directory: String) throws -> StubServer {
        let accounts = try writeAccounts(in: directory, clients: [["client_id": "client-new", "client_secret": "attacker-knows-nothing"]],
                                         users: [["username": "new-user", "password": "attacker-knows-nothing"]])
        return try StubServer(accounts: accounts)
    }

    @Test("1. a removed profile's sealed rows put back under a re-used profile id never reach the attacker's URL")
    func reusedProfileID() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        let attacker = try Self.attackerStub(in: vault.directory)
        defer { attacker.stop() }
        // The attacker saves cc's sealed rows (the newest profile, so its id can be handed out
        // again) in a file of their own; the vault's schema stays untouched.
        let id = try vault.sql("SELECT id FROM profile WHERE name = 'cc'").stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)
        let saved = vault.directory + "/saved.db"
        try vault.sql("ATTACH '\(saved)' AS s; CREATE TABLE s.rows AS SELECT * FROM secret_version WHERE profile_id = \(id);")
        #expect(try vault.run(["remove", "cc", "--yes"]).status == 0)
        // sqlite_sequence set back, so the next profile gets cc's old id.
        try vault.sql("UPDATE sqlite_sequence SET seq = \(Int(id)! - 1) WHERE name = 'profile'")
        // The user adds a profile on an environment the attacker controls.
        #expect(try vault.run(["env", "add", "elsewhere", "--token-url", attacker.tokenURL]).status == 0)
        #expect(try vault.add("newp", clientID: "client-new", clientSecret: "new-profile-secret-1", grant: "client-credentials",
                              env: "elsewhere").status == 0)
        #expect(try vault.sql("SELECT id FROM profile WHERE name = 'newp'").stdoutText.trimmingCharacters(in: .whitespacesAndNewlines) == id)
        // The saved rows go back in place of newp's.
        try vault.sql("ATTACH '\(saved)' AS s; DELETE FROM secret_version WHERE profile_id = \(id); INSERT INTO secret_version SELECT * FROM s.rows;")
        let result = try fixture.token("newp")
        #expect(result.status == 7, "\(result.stderrText)")
        #expect(result.stdout.isEmpty)
        #expect(try attacker.tokenRequests() == 0)
        #expect(try fixture.stub.tokenRequests() == 0)
        expectNoLeaks(vault)
    }

    @Test("2. a wiped audit trail (every record and the head deleted) stops tokens and fails verification")
    func wipedTrail() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        #expect(try fixture.token("pw").status == 0)
        let requests = try fixture.stub.tokenRequests()
        try vault.sql("DELETE FROM audit_record; DELETE FROM audit_head;")
        for extra in [[], ["--fresh"]] {
            let result = try fixture.token("pw", extra)
            #expect(result.status == 7, "\(result.stderrText)")
            #expect(result.stdout.isEmpty)
        }
        #expect(try fixture.stub.tokenRequests() == requests)
        #expect(try vault.sql("SELECT count(*) FROM audit_record").stdoutText == "0\n")
        let verify = try vault.run(["audit", "verify"])
        #expect(verify.status == 7)
        #expect(verify.stderrText.contains("empty"))
        // Nor can a change start a new trail.
        #expect(try vault.run(["env", "add", "x", "--token-url", "https://x.example/t"]).status == 7)
        // Only the head removed: also refused.
        let other = try Fixture()
        defer { other.stub.stop() }
        try other.vault.sql("DELETE FROM audit_head")
        #expect(try other.token("pw").status == 7)
        #expect(try other.stub.tokenRequests() == 0)
        expectNoLeaks(vault)
    }

    @Test("3. triggers, views, indexes, tables and columns added to the file: exit 7 before anything runs",
          arguments: [
            "CREATE TRIGGER quiet BEFORE INSERT ON audit_record BEGIN SELECT RAISE(IGNORE); END;",
            "CREATE TRIGGER quiet2 BEFORE UPDATE ON audit_head BEGIN SELECT RAISE(IGNORE); END;",
            "CREATE VIEW v AS SELECT * FROM profile;",
            "CREATE INDEX extra ON audit_record(outcome);",
            "CREATE TABLE extra(x);",
            "ALTER TABLE profile ADD COLUMN note TEXT;",
            "DROP INDEX audit_record_at;",
          ])
    func schemaEdits(statement: String) throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        #expect(try vault.sql(statement).status == 0)
        for arguments in [["list"], ["audit"], ["token", "pw"], ["exec", "pw", "--", "true"], ["doctor"]] {
            let result = try vault.run(arguments, expectTokenOnStdout: true)
            #expect(result.status == 7, "\(arguments) after \(statement): \(result.stderrText)")
            #expect(result.stderrText.contains("schema"), "\(result.stderrText)")
        }
        #expect(try fixture.stub.tokenRequests() == 0)
        #expect(try vault.sql("SELECT count(*) FROM audit_record").stdoutText == "4\n")
        expectNoLeaks(vault)
    }

    @Test("4. deleting the newest secret version (and its cache row) is no silent roll-back")
    func rollBackVersion() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        let rotated = try vault.run(["rotate", "pw", "--client-secret", "--secrets-stdin"],
                                    stdin: Data(#"{"client_secret":"\#(fixture.clientSecret)"}"#.utf8))
        #expect(rotated.status == 0)
        #expect(try fixture.token("pw").status == 0)
        let requests = try fixture.stub.tokenRequests()
        try vault.sql("DELETE FROM secret_version WHERE field = 'client_secret' AND version = 2; DELETE FROM token_cache;")
        let result = try fixture.token("pw")
        #expect(result.status == 7, "\(result.stderrText)")
        #expect(result.stderrText.contains("client_secret"))
        #expect(try fixture.stub.tokenRequests() == requests)
        // Renumbering an old version into the gap is refused too (its additional data names version 1).
        try vault.sql("UPDATE secret_version SET version = 2 WHERE field = 'client_secret' AND version = 1")
        #expect(try fixture.token("pw").status == 7)
        #expect(try fixture.stub.tokenRequests() == requests)
        expectNoLeaks(vault)
    }

    @Test("5. an environment removed and added again under the same name never gets the old cached token")
    func environmentRedefined() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        let second = try StubServer(accounts: try writeAccounts(
            in: vault.directory,
            clients: [["client_id": "client-pw", "client_secret": fixture.clientSecret, "grants": ["password"]]],
            users: [["username": "api-user@example.com", "password": fixture.password]]))
        defer { second.stop() }
        #expect(try vault.run(["env", "add", "alt", "--token-url", fixture.stub.tokenURL, "--api-base", fixture.stub.apiBase]).status == 0)
        #expect(try fixture.token("pw", ["--env", "alt"]).status == 0)
        let cachedRow = try vault.sql("SELECT hex(nonce), hex(ciphertext), expires_at FROM token_cache WHERE environment = 'alt'").stdoutText
        #expect(!cachedRow.isEmpty)
        #expect(try vault.run(["env", "remove", "alt"]).status == 0)
        #expect(try vault.sql("SELECT count(*) FROM token_cache WHERE environment = 'alt'").stdoutText == "0\n")
        #expect(try vault.run(["env", "add", "alt", "--token-url", second.tokenURL, "--api-base", second.apiBase]).status == 0)
        let json = try vault.run(["token", "pw", "--env", "alt", "--format", "json"], expectTokenOnStdout: true)
        #expect(json.status == 0, "\(json.stderrText)")
        let object = try JSONSerialization.jsonObject(with: json.stdout) as? [String: Any]
        if let token = object?["access_token"] as? String { LeakScanner.shared.register(token: token) }
        #expect(object?["api_base"] as? String == second.apiBase)
        #expect(try second.tokenRequests() == 1)
        // The attacker copies a cache row of another environment onto 'alt': never served.
        try vault.sql("""
            UPDATE token_cache SET (nonce, ciphertext, expires_at, environment_uid) =
              (SELECT nonce, ciphertext, expires_at, environment_uid FROM token_cache WHERE environment = 'local')
            WHERE environment = 'alt' AND EXISTS (SELECT 1 FROM token_cache WHERE environment = 'local')
            """)
        #expect(try fixture.token("pw").status == 0) // caches for 'local'
        try vault.sql("""
            UPDATE token_cache SET (nonce, ciphertext, expires_at) =
              (SELECT nonce, ciphertext, expires_at FROM token_cache WHERE environment = 'local')
            WHERE environment = 'alt'
            """)
        let moved = try fixture.token("pw", ["--env", "alt"])
        #expect(moved.status == 7, "\(moved.stderrText)")
        #expect(moved.stdout.isEmpty)
        expectNoLeaks(vault)
    }

    @Test("a record forged with the audit key of an earlier epoch (a former key holder) fails verification")
    func formerKeyHolder() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        // Someone holds the passphrase and the file today, and reads the keys.
        let before = try independentReader(path: vault.path, passphrase: vault.passphrase, extra: ["--show-keys"])
        let oldKey = try #require(((before.report?["keys"] as? [String: Any])?["audit_keys"] as? [String: String])?["1"])
        #expect(try vault.run(["rekey"]).status == 0)
        #expect(try fixture.token("pw").status == 0)
        #expect(try vault.run(["audit", "verify"]).status == 0)
        // They append a record of their own, MAC'd and chained with the key they kept.
        let script = """
            import sqlite3, sys
            sys.path.insert(0, sys.argv[3])
            from generate import subkey, blake2b, s, d, i64
            from open_vault import audit_fields
            db = sqlite3.connect(sys.argv[1]); key = subkey(bytes.fromhex(sys.argv[2]), 1, b"gbgvaudt")
            vid = db.execute("SELECT vault_id FROM vault_header").fetchone()[0]
            seq, prev = db.execute("SELECT seq, mac FROM audit_record ORDER BY seq DESC LIMIT 1").fetchone()
            seq += 1
            row = (seq, 1764384000000, "token", "pw", "local", None, None, "ok") + (None,) * 10
            mac = blake2b(s("gbg-vault/v2 audit") + d(vid) + d(prev) + i64(seq) + i64(2) + audit_fields(row), key)
            db.execute("INSERT INTO audit_record (seq, at, action, profile, environment, outcome, mac, key_epoch) VALUES (?, ?, 'token', 'pw', 'local', 'ok', ?, 2)", (seq, row[1], mac))
            head = blake2b(s("gbg-vault/v2 audit-head") + d(vid) + i64(seq) + i64(2) + d(mac), key)
            db.execute("UPDATE audit_head SET seq = ?, last_mac = ?, mac = ?", (seq, mac, head)); db.commit()
            """
        let forge = try Binaries.run("/usr/bin/env", ["python3", "-B", "-c", script, vault.path, oldKey, repositoryRoot.appendingPathComponent("testvectors").path],
                                     environment: ["PATH": "/usr/local/bin:/usr/bin:/bin"])
        #expect(forge.status == 0, "\(forge.stderrText)")
        let verify = try vault.run(["audit", "verify"])
        #expect(verify.status == 7)
        #expect(verify.stderrText.contains("head") || verify.stderrText.contains("record"))
        #expect(try fixture.token("pw").status == 7)
        expectNoLeaks(vault)
    }
}
