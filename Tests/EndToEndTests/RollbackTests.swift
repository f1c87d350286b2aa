import Foundation
import Testing
import VaultTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// What a user's clients remember of each vault (FORMAT.md §12): a vault put back to an
/// older copy, a copy used again after that (a fork), or another vault in its place is
/// refused with exit 7 until accepted deliberately (`vault verify --accept-rollback` /
/// `--repin`, audited), on a file and on PostgreSQL, with and without an agent.
@Suite("rollback, fork and replacement of a vault", .serialized)
struct RollbackTests {
    /// The file that remembers the vaults of this test's user.
    func knownFile(_ vault: TestVault) -> String { vault.directory + "/.local/state/gbg-vault/known-vaults" }

    @Test("a file vault put back to an older copy is refused; --accept-rollback accepts it, audited; nothing leaks")
    func fileRollback() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        #expect(try fixture.token("pw").status == 0)
        let older = vault.directory + "/older.db"
        try FileManager.default.copyItem(atPath: vault.path, toPath: older)
        #expect(try fixture.token("pw", ["--fresh"]).status == 0)
        let newSecret = "cs3-" + UUID().uuidString
        LeakScanner.shared.register(secret: newSecret)
        #expect(try vault.run(["rotate", "cc", "--secrets-stdin"], stdin: Data(#"{"client_secret":"\#(newSecret)"}"#.utf8)).status == 0)
        let remembered = try String(contentsOfFile: knownFile(vault), encoding: .utf8)
        #expect(remembered.contains("\"location\""))
        var mode = stat()
        #expect(stat(knownFile(vault), &mode) == 0 && mode.st_mode & 0o777 == 0o600)

        try FileManager.default.removeItem(atPath: vault.path)
        try FileManager.default.copyItem(atPath: older, toPath: vault.path)
        let requests = try fixture.stub.tokenRequests()
        for command in [["token", "pw"], ["token", "pw", "--fresh"], ["rotate", "cc", "--secrets-stdin"], ["verify"], ["exec", "pw", "--", "/bin/true"]] {
            let refused = try vault.run(command, stdin: Data(#"{"client_secret":"x-\#(UUID().uuidString)"}"#.utf8))
            #expect(refused.status == 7, "\(command): \(refused.stderrText)")
            #expect(refused.stdout.isEmpty)
            #expect(refused.stderrText.contains("older than the one you used") && refused.stderrText.contains("--accept-rollback"),
                    "\(refused.stderrText)")
        }
        #expect(try fixture.stub.tokenRequests() == requests, "nothing was sent for a refused vault")

        let accepted = try vault.run(["verify", "--accept-rollback"])
        #expect(accepted.status == 0, "\(accepted.stderrText)")
        let records = try fixture.auditJSON()
        #expect(records.first?["action"] as? String == "accept-rollback", "\(records.first ?? [:])")
        #expect(try fixture.token("pw").status == 0)
        #expect(try vault.run(["audit", "verify"]).status == 0)
        expectNoLeaks(vault)
    }

    @Test("a fork: an older copy used again by a client that never saw the newer one is refused by the client that did")
    func fileFork() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        let older = vault.directory + "/older.db"
        try FileManager.default.copyItem(atPath: vault.path, toPath: older)
        #expect(try fixture.token("pw").status == 0)  // record n+1, remembered here
        try FileManager.default.removeItem(atPath: vault.path)
        try FileManager.default.copyItem(atPath: older, toPath: vault.path)
        // Another client (its own state directory) never saw record n+1: it writes its own.
        let elsewhere = vault.directory + "/elsewhere"
        try FileManager.default.createDirectory(atPath: elsewhere, withIntermediateDirectories: true)
        let other = try vault.run(["token", "pw"], env: ["XDG_STATE_HOME": elsewhere], expectTokenOnStdout: true)
        #expect(other.status == 0, "\(other.stderrText)")
        let refused = try vault.run(["token", "pw"])
        #expect(refused.status == 7)
        #expect(refused.stderrText.contains("is not the one you saw") && refused.stderrText.contains("fork"), "\(refused.stderrText)")
        #expect(try vault.run(["verify", "--accept-rollback"]).status == 0)
        #expect(try fixture.token("pw").status == 0)
    }

    @Test("another vault in the pinned one's place is refused; --accept-rollback does not accept it, --repin does")
    func replaced() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        #expect(try fixture.token("pw").status == 0)
        // Someone else makes a vault (same passphrase, so only the pin can tell) and puts it here.
        let impostor = TestVault(passphrase: vault.passphrase)
        try impostor.initialise()
        try FileManager.default.removeItem(atPath: vault.path)
        try FileManager.default.copyItem(atPath: impostor.path, toPath: vault.path)
        let refused = try vault.run(["list"])
        #expect(refused.status == 0, "metadata reads without the passphrase are not checked")
        let unlocked = try vault.run(["env", "add", "x", "--token-url", "https://example.invalid/t"])
        #expect(unlocked.status == 7)
        #expect(unlocked.stderrText.contains("is not the one pinned there") && unlocked.stderrText.contains("--repin"), "\(unlocked.stderrText)")
        #expect(try vault.run(["verify", "--accept-rollback"]).status == 64)
        let repinned = try vault.run(["verify", "--repin"])
        #expect(repinned.status == 0, "\(repinned.stderrText)")
        #expect(try fixture.auditJSON().first?["action"] as? String == "repin")
        #expect(try vault.run(["env", "add", "x", "--token-url", "https://example.invalid/t"]).status == 0)
    }

    @Test("an older copy opened at another path is pinned there with a warning naming where the vault was seen further; a link planted where the vault was is the same place, refused")
    func olderCopyElsewhere() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        try vault.sql("PRAGMA wal_checkpoint(TRUNCATE)")
        let older = vault.directory + "/older.db"
        try FileManager.default.copyItem(atPath: vault.path, toPath: older)
        #expect(try fixture.token("pw").status == 0)
        #expect(try fixture.token("pw", ["--fresh"]).status == 0)
        let elsewhere = try fixture.token("pw", ["--vault", older])
        #expect(elsewhere.stderrText.contains("this vault was seen further along at") && elsewhere.stderrText.contains(vault.path),
                "\(elsewhere.status): \(elsewhere.stderrText)")
        let current = vault.directory + "/current.db"
        try FileManager.default.moveItem(atPath: vault.path, toPath: current)
        try FileManager.default.createSymbolicLink(atPath: vault.path, withDestinationPath: older)
        let linked = try fixture.token("pw")
        #expect(linked.status == 7 && linked.stderrText.contains("older than"), "\(linked.status): \(linked.stderrText)")
    }

    @Test("a state file others can write is not trusted")
    func looseStateFile() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        #expect(try fixture.token("pw").status == 0)
        chmod(knownFile(fixture.vault), 0o666)
        let refused = try fixture.token("pw")
        #expect(refused.status == 7 && refused.stderrText.contains("others can write"), "\(refused.stderrText)")
        #expect(!refused.stderrText.contains("restore the vault from a backup"), "the hint is about the file, not the vault")
        chmod(knownFile(fixture.vault), 0o600)
        let folder = (knownFile(fixture.vault) as NSString).deletingLastPathComponent
        chmod(folder, 0o777)
        let looseFolder = try fixture.token("pw")
        #expect(looseFolder.status == 7 && looseFolder.stderrText.contains("closed to others"), "\(looseFolder.stderrText)")
        chmod(folder, 0o700)
        // A directory above it that others may write (another user could move the record
        // away: found by an outside review); with the sticky bit, as /tmp has, it is safe.
        let above = (folder as NSString).deletingLastPathComponent
        chmod(above, 0o777)
        let looseAbove = try fixture.token("pw")
        #expect(looseAbove.status == 7 && looseAbove.stderrText.contains("is not closed to other users"), "\(looseAbove.stderrText)")
        chmod(above, 0o1777)
        #expect(try fixture.token("pw").status == 0)
        chmod(above, 0o755)
    }

    @Test("a team vault restored from pg_dump is refused, also by a running agent at its next transaction; accepted deliberately")
    func teamRollback() throws {
        guard let server = try startPostgres() else { return }
        defer { server.stop() }
        let fixture = try Fixture(postgres: server)
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        let schema = try #require(vault.path.components(separatedBy: "schema=").last)
        #expect(try fixture.token("pw").status == 0)
        let dump = try server.dump(schema: schema)
        var template = Array("/tmp/gv-run-XXXXXX".utf8CString)
        let runtime = String(cString: try #require(mkdtemp(&template)))
        defer {
            _ = try? vault.run(["lock"], env: ["XDG_RUNTIME_DIR": runtime])
            try? FileManager.default.removeItem(atPath: runtime)
        }
        #expect(try vault.run(["unlock", "--for", "5m"], env: ["XDG_RUNTIME_DIR": runtime]).status == 0)
        for _ in 0..<3 {
            let viaAgent = registeringToken(try vault.run(["token", "pw", "--fresh"], env: ["XDG_RUNTIME_DIR": runtime], removing: ["VAULT_PASSPHRASE"],
                                                          expectTokenOnStdout: true))
            #expect(viaAgent.status == 0, "\(viaAgent.stderrText)")
        }
        try server.psql("DROP SCHEMA \"\(schema)\" CASCADE", database: "vault")
        try server.restore(dump)

        let requests = try fixture.stub.tokenRequests()
        let viaAgent = try vault.run(["token", "pw"], env: ["XDG_RUNTIME_DIR": runtime], removing: ["VAULT_PASSPHRASE"])
        #expect(viaAgent.status == 7 && viaAgent.stdout.isEmpty, "\(viaAgent.stderrText)")
        #expect(viaAgent.stderrText.contains("older than the one you used"), "\(viaAgent.stderrText)")
        let direct = try vault.run(["token", "pw", "--no-agent"])
        #expect(direct.status == 7 && direct.stdout.isEmpty)
        #expect(try fixture.stub.tokenRequests() == requests)
        #expect(try vault.run(["verify", "--accept-rollback"]).status == 0)
        let afterAccept = try fixture.token("pw", ["--no-agent"])
        #expect(afterAccept.status == 0, "\(afterAccept.stderrText)")
        expectNoLeaks(vault)
    }

    /// An agent held back the file's line while it sat idle after a burst (written only at
    /// the next append a second later, or when it ended), so a copy put back after the agent
    /// was killed was taken as current; and an agent still running wrote its newer trail back
    /// over `--accept-rollback` when it ended (both found by an outside review).
    @Test("an idle agent's records are remembered within about a second: a copy put back after the agent is killed is refused; --accept-rollback ends a running agent first, so its newer trail is not written back over the acceptance")
    func agentRemembersPromptly() throws {
        let session = try SessionFixture()
        defer { session.stop() }
        let vault = session.vault
        let older = vault.directory + "/older.db"
        func burst() throws {
            for _ in 0..<5 { #expect(try session.run(["token", "pw"], passphrase: false, token: true).status == 0) }
        }
        func putBack() throws {
            // In place (the same file, as `.restore` writes it): a running agent keeps it.
            #expect(try Binaries.run("/usr/bin/sqlite3", [vault.path, ".restore \(older)"], environment: ["PATH": "/usr/bin:/bin"]).status == 0)
        }

        #expect(try session.run(["unlock", "--for", "10m"]).status == 0)
        #expect(try session.run(["token", "pw"], passphrase: false, token: true).status == 0)
        #expect(try Binaries.run("/usr/bin/sqlite3", [vault.path, ".backup \(older)"], environment: ["PATH": "/usr/bin:/bin"]).status == 0)
        try burst()
        sleep(3)
        let pid = try #require(session.status()["pid"] as? Int)
        kill(pid_t(pid), SIGKILL)
        try putBack()
        let afterKill = try vault.run(["token", "pw", "--no-agent"], env: session.env)
        #expect(afterKill.status == 7 && afterKill.stdout.isEmpty, "the burst was remembered before the kill: \(afterKill.stderrText)")
        #expect(try vault.run(["verify", "--accept-rollback"], env: session.env).status == 0)

        // Now with the agent running when the copy is put back and accepted.
        #expect(try session.run(["unlock", "--for", "10m"]).status == 0)
        #expect(try Binaries.run("/usr/bin/sqlite3", [vault.path, ".backup \(older)"], environment: ["PATH": "/usr/bin:/bin"]).status == 0)
        try burst()
        try putBack()
        // The running agent saw the newer trail: its `audit verify` and `verify` do not call
        // the older one intact (exit 7, as an unlock would; an outside review had seen
        // "intact" here).
        for arguments in [["audit", "verify"], ["verify"]] {
            let checked = try session.run(arguments, passphrase: false)
            #expect(checked.status == 7 && checked.stderrText.contains("older than"), "\(arguments): \(checked.stderrText)")
        }
        let accepted = try vault.run(["verify", "--accept-rollback"], env: session.env)
        #expect(accepted.status == 0 && accepted.stderrText.contains("the agent of this vault was ended"), "\(accepted.stderrText)")
        #expect(try session.status()["unlocked"] as? Bool == false)
        let afterAccept = registeringToken(try vault.run(["token", "pw", "--no-agent"], env: session.env, expectTokenOnStdout: true))
        #expect(afterAccept.status == 0, "the acceptance stands: \(afterAccept.stderrText)")
        expectNoLeaks(vault)
    }

    /// The agent compared the trail only with its own records: an outside review cut the
    /// records of two tokens taken without the agent while it ran (and put the agent's last
    /// head back), the agent's `audit verify` said "intact", and its next record made the cut
    /// permanent. It now takes what the user's other processes saw from the file.
    @Test("records other processes wrote while an agent runs are remembered by the agent too: a cut of them is refused by its audit verify and its next token")
    func agentSeesOtherProcesses() throws {
        let session = try SessionFixture()
        defer { session.stop() }
        let vault = session.vault
        #expect(try session.run(["unlock", "--for", "10m"]).status == 0)
        #expect(try session.run(["token", "pw"], passphrase: false, token: true).status == 0)
        let head = try vault.sql("SELECT seq || '|' || key_epoch || '|' || hex(last_mac) || '|' || hex(mac) FROM audit_head")
            .stdoutText.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "|").map(String.init)
        try #require(head.count == 4)
        for _ in 0..<2 {
            let taken = registeringToken(try vault.run(["token", "pw", "--fresh", "--no-agent"], env: session.env, expectTokenOnStdout: true))
            #expect(taken.status == 0, "\(taken.stderrText)")
        }
        try vault.sql("DELETE FROM audit_record WHERE seq > \(head[0]); "
                      + "UPDATE audit_head SET seq = \(head[0]), key_epoch = \(head[1]), last_mac = X'\(head[2])', mac = X'\(head[3])'")
        for arguments in [["audit", "verify"], ["verify"], ["token", "pw"]] {
            let refused = try session.run(arguments, passphrase: false)
            #expect(refused.status == 7 && (arguments.first != "token" || refused.stdoutText.isEmpty) && refused.stderrText.contains("older than"),
                    "\(arguments): \(refused.stderrText)")
        }
        expectNoLeaks(vault)
    }
}
