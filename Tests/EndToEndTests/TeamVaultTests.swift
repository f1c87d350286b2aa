import Foundation
import Testing
import VaultTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Team vaults on PostgreSQL (README "Team vault", FORMAT.md §11), end to end: the built
/// binary against a real PostgreSQL server that each test starts and stops itself.
@Suite("team vault on PostgreSQL", .serialized)
struct TeamVaultTests {
    /// The main scenario, the same on both stores: init, environments, add, token, exec,
    /// rotate, audit with its filters, verify, members, agent session.
    @Test("main scenario on both stores", arguments: ["file", "postgres"])
    func mainScenario(store: String) throws {
        var server: PostgresServer?
        if store == "postgres" {
            guard let started = try startPostgres() else { return }
            server = started
        }
        defer { server?.stop() }
        let team = try MemberTests.Team(postgres: server)
        defer { team.fixture.stub.stop() }
        let vault = team.vault
        let fixture = team.fixture

        let first = try fixture.token("pw")
        #expect(first.status == 0, "\(first.stderrText)")
        let cached = try fixture.token("pw")
        #expect(cached.stdoutText == first.stdoutText, "the second token comes from the sealed cache")
        let exec = try vault.run(["exec", "cc", "--", "/bin/sh", "-c", "test -n \"$GBG_ACCESS_TOKEN\""])
        #expect(exec.status == 0, "\(exec.stderrText)")
        let newSecret = "cs2-" + UUID().uuidString
        LeakScanner.shared.register(secret: newSecret)
        let rotate = try vault.run(["rotate", "cc", "--secrets-stdin"], stdin: Data(#"{"client_secret":"\#(newSecret)"}"#.utf8))
        #expect(rotate.status == 0, "\(rotate.stderrText)")
        let history = try vault.run(["history", "cc"])
        #expect(history.status == 0 && history.stdoutText.contains("2"), "\(history.stderrText)")
        #expect(try vault.run(["list", "--json"]).stdoutText.contains("\"cc\""))

        try team.addBoth()
        let asCI = try team.run(as: team.ciPath, ["token", "pw", "--fresh"], token: true)
        #expect(asCI.status == 0, "\(asCI.stderrText)")
        let byCI = try JSONSerialization.jsonObject(with: vault.run(["audit", "--member", "ci", "--json"]).stdout) as? [[String: Any]]
        #expect(byCI?.count == 1 && byCI?.first?["profile"] as? String == "pw")
        let byProfile = try JSONSerialization.jsonObject(with: vault.run(["audit", "--profile", "cc", "--json"]).stdout) as? [[String: Any]]
        #expect((byProfile ?? []).allSatisfy { $0["profile"] as? String == "cc" } && (byProfile?.count ?? 0) >= 3)
        let errors = try vault.run(["audit", "--outcome", "error", "--json"])
        #expect(errors.status == 0)
        let jsonl = try vault.run(["audit", "--jsonl", "--limit", "2"])
        #expect(jsonl.stdoutText.split(separator: "\n").count == 2)

        // A session: the agent serves tokens with no passphrase source at all.
        var template = Array("/tmp/gv-run-XXXXXX".utf8CString)  // short: a socket path has 108 bytes
        let runtime = String(cString: try #require(mkdtemp(&template)))
        defer { try? FileManager.default.removeItem(atPath: runtime) }
        #expect(try vault.run(["unlock", "--for", "5m"], env: ["XDG_RUNTIME_DIR": runtime]).status == 0)
        let viaAgent = try vault.run(["token", "pw"], env: ["XDG_RUNTIME_DIR": runtime], removing: ["VAULT_PASSPHRASE"], expectTokenOnStdout: true)
        #expect(viaAgent.status == 0, "\(viaAgent.stderrText)")
        let status = try vault.run(["status", "--json"], env: ["XDG_RUNTIME_DIR": runtime])
        #expect(status.stdoutText.contains("\"unlocked\":true") || status.stdoutText.contains("\"unlocked\" : true"), "\(status.stdoutText)")
        #expect(try vault.run(["lock"], env: ["XDG_RUNTIME_DIR": runtime]).status == 0)

        #expect(try vault.run(["member", "remove", "ci"]).status == 0)
        #expect(try team.run(as: team.ciPath, ["token", "pw"]).status == 3)
        let verify = try vault.run(["verify"])
        #expect(verify.status == 0, "\(verify.stdoutText) \(verify.stderrText)")
        #expect(try team.run(as: team.alicePath, ["audit", "verify"]).status == 0)
        let doctor = try vault.run(["doctor"])
        #expect(doctor.status == 1 && !doctor.stdoutText.contains(" fail "), "warnings only (the test KDF): \(doctor.stdoutText) \(doctor.stderrText)")
        if store == "postgres" {
            #expect(doctor.stdoutText.contains("PostgreSQL 1") && doctor.stdoutText.contains("grants"), "\(doctor.stdoutText)")
            try vault.scanDump()
        }
        expectNoLeaks(vault)
    }

    /// `vault copy` both ways: file → PostgreSQL → file, each copy verified with the keys
    /// and the last one read by the independent reader (testvectors/open_vault.py).
    @Test("vault copy: a file to PostgreSQL and back, verified, read by the independent reader")
    func copyBothWays() throws {
        guard let server = try startPostgres() else { return }
        defer { server.stop() }
        let team = try MemberTests.Team()
        defer { team.fixture.stub.stop() }
        let vault = team.vault
        try team.addBoth()
        #expect(try team.fixture.token("pw").status == 0)
        #expect(try team.run(as: team.ciPath, ["token", "cc"], token: true).status == 0)
        let records = try JSONSerialization.jsonObject(with: vault.run(["audit", "--json"]).stdout) as? [[String: Any]]

        let url = server.url(schema: "copied")
        let env = ["PGPASSWORD": server.adminPassword]
        let toPostgres = try vault.run(["copy", "--to", url], env: env)
        #expect(toPostgres.status == 0, "\(toPostgres.stderrText)")
        #expect(try vault.run(["copy", "--to", url], env: env).status == 1, "a copy never overwrites a vault")
        let verifyThere = try vault.run(["verify", "--vault", url], env: env)
        #expect(verifyThere.status == 0, "\(verifyThere.stdoutText) \(verifyThere.stderrText)")
        let there = try JSONSerialization.jsonObject(with: vault.run(["audit", "--json", "--vault", url], env: env).stdout) as? [[String: Any]]
        #expect(there?.count == records?.count)
        // The copy is a working vault: members and tokens, new records signed and chained.
        let token = try vault.run(["token", "pw", "--fresh", "--vault", url], env: env, expectTokenOnStdout: true)
        #expect(token.status == 0, "\(token.stderrText)")
        if token.status == 0 { LeakScanner.shared.register(token: token.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)) }
        let aliceThere = try vault.run(["audit", "verify", "--vault", url], env: env.merging([
            "VAULT_IDENTITY_FILE": team.alicePath, "VAULT_IDENTITY_PASSPHRASE": team.alicePassphrase]) { a, _ in a }, removing: ["VAULT_PASSPHRASE"])
        #expect(aliceThere.status == 0, "a member opens the copy with the same identity: \(aliceThere.stderrText)")

        let back = vault.directory + "/back/vault.db"
        let toFile = try vault.run(["copy", "--vault", url, "--to", back], env: env)
        #expect(toFile.status == 0, "\(toFile.stderrText)")
        let read = try independentReader(path: back, passphrase: vault.passphrase)
        let report = try #require(read.report, "\(read.error ?? "")")
        #expect((report["profiles"] as? [String: [String: String]])?["pw"]?["client_secret/v1"] == team.fixture.clientSecret)
        #expect((report["profiles"] as? [String: [String: String]])?["pw"]?["password/v1"] == team.fixture.password)
        #expect(report["audit_records"] as? Int == (records?.count ?? 0) + 1)
        #expect((report["signatures"] as? Int ?? 0) == (report["audit_records"] as? Int ?? -1))
        var info = stat()
        #expect(stat(back, &info) == 0 && info.st_mode & 0o777 == 0o600)
        try vault.scanDump()
        if let dump = try? server.dump() { LeakScanner.shared.scan(dump, artefact: "pg_dump after copy", includeTokens: true) }
        expectNoLeaks(vault)
    }
}
