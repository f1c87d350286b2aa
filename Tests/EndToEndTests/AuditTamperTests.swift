import Foundation
import Testing
import VaultTestSupport

@Suite("audit trail tamper evidence, end to end")
struct AuditTamperTests {
    /// A vault with a few exchanges, for tampering.
    func populated() throws -> Fixture {
        let fixture = try Fixture()
        for _ in 0..<3 { _ = try fixture.token("pw", ["--fresh"]) }
        fixture.stub.stop()
        #expect(try fixture.vault.run(["audit", "verify"]).status == 0)
        return fixture
    }

    @Test("editing a record is detected and named")
    func edit() throws {
        let fixture = try populated()
        try fixture.vault.sql("UPDATE audit_record SET outcome = 'error' WHERE seq = 5")
        let result = try fixture.vault.run(["audit", "verify"])
        #expect(result.status == 7)
        #expect(result.stderrText.contains("record 5"))
    }

    @Test("deleting a record in the middle or at the end is detected and named", arguments: [4, 7])
    func delete(seq: Int) throws {
        let fixture = try populated()
        let last = try fixture.vault.sql("SELECT max(seq) FROM audit_record").stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)
        let target = seq == 7 ? Int(last)! : seq
        try fixture.vault.sql("DELETE FROM audit_record WHERE seq = \(target)")
        let result = try fixture.vault.run(["audit", "verify"])
        #expect(result.status == 7)
        #expect(result.stderrText.contains("record \(target)"), "\(result.stderrText)")
    }

    @Test("reordering two records is detected and named")
    func reorder() throws {
        let fixture = try populated()
        try fixture.vault.sql("""
            UPDATE audit_record SET seq = -1 WHERE seq = 5;
            UPDATE audit_record SET seq = 5 WHERE seq = 6;
            UPDATE audit_record SET seq = 6 WHERE seq = -1;
            """)
        let result = try fixture.vault.run(["audit", "verify"])
        #expect(result.status == 7)
        #expect(result.stderrText.contains("record 5"))
    }

    @Test("a stored name this version does not know (action, outcome, grant type) is an integrity failure, never read as a default")
    func unknownNames() throws {
        let fixture = try populated()
        let vault = fixture.vault
        try vault.sql("UPDATE audit_record SET action = 'teleport' WHERE seq = 3")
        let listed = try vault.run(["audit"], removing: ["VAULT_PASSPHRASE"])
        #expect(listed.status == 7)
        #expect(listed.stderrText.contains("audit record 3") && listed.stderrText.contains("teleport"), "\(listed.stderrText)")
        #expect(try vault.run(["audit", "verify"]).status == 7)
        try vault.sql("UPDATE audit_record SET action = 'token', outcome = 'half_ok' WHERE seq = 3")
        #expect(try vault.run(["audit"], removing: ["VAULT_PASSPHRASE"]).status == 7)
        // A profile's grant type the exchange does not know (past the schema's CHECK, as
        // anyone who can write the file can): refused, not read as one it knows.
        try vault.sql("PRAGMA ignore_check_constraints = ON; UPDATE profile SET grant_type = 'implicit' WHERE name = 'pw'")
        for arguments in [["list"], ["list", "--json"], ["show", "pw"], ["token", "pw"]] {
            let result = try vault.run(arguments, removing: arguments[0] == "token" ? [] : ["VAULT_PASSPHRASE"])
            #expect(result.status == 7, "\(arguments): \(result.stderrText)")
            #expect(result.stderrText.contains("integrity failure"))
        }
        expectNoLeaks(vault)
    }

    @Test("audit filters: profile, environment, outcome, limit, time range; newest first; no passphrase")
    func filters() throws {
        let fixture = try populated()
        let all = try fixture.vault.run(["audit", "--json"], removing: ["VAULT_PASSPHRASE"])
        #expect(all.status == 0)
        let records = try JSONSerialization.jsonObject(with: all.stdout) as? [[String: Any]] ?? []
        let seqs = records.compactMap { $0["seq"] as? Int }
        #expect(seqs == seqs.sorted(by: >))
        #expect(try fixture.auditJSON(["--profile", "pw", "--env", "local", "--outcome", "ok", "--limit", "2"]).count == 2)
        #expect(try fixture.auditJSON(["--since", "1h"]).count == records.count)
        #expect(try fixture.auditJSON(["--until", "2000-01-01"]).isEmpty)
        #expect(try fixture.vault.run(["audit", "--since", "yesterday-ish"]).status == 64)
        for record in records {
            for key in record.keys { #expect(!["access_token", "client_secret", "password"].contains(key)) }
        }
    }
}

@Suite("vault data tampering through the binary")
struct VaultTamperTests {
    @Test("a flipped ciphertext byte, a moved ciphertext, an edited header or token URL: exit 7, nothing printed")
    func tampered() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        // One byte of the newest client secret of 'pw'.
        #expect(try vault.sql("UPDATE secret_version SET ciphertext = CAST(substr(ciphertext, 1, 3) || X'FF' || substr(ciphertext, 5) AS BLOB) WHERE field = 'client_secret' AND profile_id = (SELECT id FROM profile WHERE name = 'pw'); SELECT changes()").stdoutText == "1\n")
        let flipped = try fixture.token("pw")
        #expect(flipped.status == 7)
        #expect(flipped.stdout.isEmpty)
        #expect(flipped.stderrText.contains("failed authentication"))
        // cc's sealed secret copied onto pw's row.
        try vault.sql("UPDATE secret_version SET (nonce, ciphertext) = (SELECT nonce, ciphertext FROM secret_version WHERE profile_id = (SELECT id FROM profile WHERE name = 'cc')) WHERE field = 'client_secret' AND profile_id = (SELECT id FROM profile WHERE name = 'pw')")
        #expect(try fixture.token("pw").status == 7)
        // The environment's token URL pointed elsewhere: refused before any secret is sent.
        try vault.sql("UPDATE environment SET token_url = 'http://127.0.0.1:9/as/token.oauth2'")
        let redirected = try fixture.token("cc")
        #expect(redirected.status == 7)
        #expect(redirected.stderrText.contains("modified outside vault"))
        // A header byte: integrity failure, not "wrong passphrase".
        try vault.sql("UPDATE vault_header SET kdf_salt = X'00112233445566778899AABBCCDDEEFF'")
        let header = try vault.run(["audit", "verify"])
        #expect(header.status == 7)
        #expect(header.stderrText.contains("header"))
        // Metadata reads without the passphrase still work.
        #expect(try vault.run(["list"], removing: ["VAULT_PASSPHRASE"]).status == 0)
        expectNoLeaks(vault)
    }

    @Test("random bytes, a truncated file and zeroed pages are integrity failures (exit 7), never a crash")
    func damagedFiles() throws {
        let fixture = try Fixture(addProfiles: true)
        fixture.stub.stop()
        let vault = fixture.vault
        try vault.sql("PRAGMA wal_checkpoint(TRUNCATE)")
        let original = try Data(contentsOf: URL(fileURLWithPath: vault.path))
        let damaged: [(String, Data)] = [
            ("random bytes", Data((0..<original.count).map { _ in UInt8.random(in: 0...255) })),
            ("truncated to half", original.prefix(original.count / 2)),
            ("first page zeroed", Data(count: 4096) + original.dropFirst(4096)),
            ("every page after the first zeroed", original.prefix(4096) + Data(count: original.count - 4096)),
            ("empty", Data()),
        ]
        for (what, data) in damaged {
            for suffix in ["-wal", "-shm"] { try? FileManager.default.removeItem(atPath: vault.path + suffix) }
            try data.write(to: URL(fileURLWithPath: vault.path))
            let list = try vault.run(["list"])
            let token = try vault.run(["token", "pw"])
            #expect(list.status == 7, "\(what): list \(list.status) \(list.stderrText)")
            #expect(token.status == 7, "\(what): token \(token.status) \(token.stderrText)")
            #expect(token.stderrText.contains("integrity failure"), "\(what): \(token.stderrText)")
            #expect(token.stdout.isEmpty)
            #expect(list.status < 128 && token.status < 128, "\(what): crashed")
        }
    }
}
