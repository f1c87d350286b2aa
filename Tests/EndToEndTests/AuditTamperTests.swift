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
