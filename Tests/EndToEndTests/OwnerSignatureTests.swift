import Foundation
import Testing
import VaultTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Format 4 (FORMAT.md §10.6): the owner signs every member row and key slot. The two
/// attacks it exists for, made from outside the code (`Tests/tools/forge.py`, FORMAT.md and
/// libsodium only) against the built binary, on both stores; and the upgrade of a format-3
/// vault made by the format-3 build (`testvectors/v3`), file and team.
@Suite("owner signatures: member keys and key slots (format 4)", .serialized)
struct OwnerSignatureTests {
    /// Starts the store: a file, or a team vault on its own PostgreSQL server.
    private func team(_ store: String) throws -> (TeamFixture, PostgresServer?)? {
        var server: PostgresServer?
        if store == "postgres" {
            guard let started = try startPostgres() else { return nil }
            server = started
        }
        return (try TeamFixture(postgres: server), server)
    }

    /// Runs the forging tool on a copy of the vault (`vault copy`, no key needed) and plants
    /// its statements in the store: with sqlite3 in the file, with psql in the team schema.
    private func forge(_ team: TeamFixture, server: PostgresServer?, _ arguments: [String]) throws -> [String: Any] {
        let vault = team.vault
        let copy = vault.directory + "/forge-\(UUID().uuidString).db"
        defer { for suffix in ["", "-wal", "-shm"] { unlink(copy + suffix) } }
        let copied = try vault.run(["copy", "--to", copy], removing: ["VAULT_PASSPHRASE"])
        try #require(copied.status == 0, "\(copied.stderrText)")
        let tool = repositoryRoot.appendingPathComponent("Tests/tools/forge.py").path
        let made = try Binaries.run("/usr/bin/env", ["python3", "-B", tool, arguments[0], copy] + arguments.dropFirst()
                                        + ["--dialect", server == nil ? "sqlite" : "pg"],
                                    environment: ["PATH": "/usr/local/bin:/usr/bin:/bin"])
        try #require(made.status == 0, "forge.py: \(made.stderrText)")
        if let server {
            let schema = String(vault.path.split(separator: "=").last!)
            try server.psql("SET search_path TO \(schema); " + made.stdoutText, database: "vault")
        } else {
            let planted = try vault.sql(made.stdoutText)
            try #require(planted.status == 0, "sqlite3: \(planted.stderrText)")
        }
        return try JSONSerialization.jsonObject(with: Data(made.stderr)) as? [String: Any] ?? [:]
    }

    @Test("a member who gives another member a key of its own and re-signs records as them (a script holding only its identity) is refused: exit 7 for the owner and every other member",
          arguments: ["file", "postgres"])
    func reattribution(store: String) throws {
        guard let (team, server) = try team(store) else { return }
        defer { team.fixture.stub.stop(); server?.stop() }
        let vault = team.vault
        try team.addBoth()
        let bobPath = vault.directory + "/bob.identity"
        #expect(try vault.run(["identity", "new", "--no-passphrase", "--out", bobPath]).status == 0)
        try team.registerSecrets(ofIdentity: bobPath)
        #expect(try vault.run(["member", "add", "bob", "--recipient", team.recipient(bobPath)]).status == 0)
        // mallory is ci (an unsealed machine identity); alice is the victim; bob looks on.
        #expect(try team.run(as: team.alicePath, ["token", "pw", "--fresh"], token: true).status == 0)
        #expect(try team.run(as: team.ciPath, ["token", "cc", "--fresh"], token: true).status == 0)
        let aliceBefore = try team.audit(["--member", "alice"]).count
        let summary = try forge(team, server: server, ["reattribute", team.ciPath, "alice"])
        #expect((summary["resigned"] as? [Int])?.count ?? 0 >= 2, "\(summary)")
        // What the forger wanted: the rows now say alice did ci's token.
        #expect(try team.audit(["--member", "alice"]).count > aliceBefore)
        #expect(try team.audit(["--member", "ci"]).isEmpty)
        for (who, run) in [("the owner", { (a: [String]) in try vault.run(a) }),
                           ("bob", { (a: [String]) in try team.run(as: bobPath, a) })] {
            for command in [["verify"], ["audit", "verify"]] {
                let result = try run(command)
                #expect(result.status == 7, "\(who) \(command): \(result.status) \(result.stderrText)")
                #expect(result.stderrText.contains("member 'alice' is not signed by the owner"), "\(who) \(command): \(result.stderrText)")
            }
        }
        if server == nil {
            let read = try independentReader(path: vault.path, passphrase: vault.passphrase)
            #expect(read.error?.contains("member alice: owner signature") == true, "\(read.error ?? "accepted")")
        }
        try vault.scanDump()
        expectNoLeaks(vault)
    }

    @Test("keys a database administrator seals to a member (an outsider's slot, MACs made with its own keys) are refused before the member uses them: its add and rotate never reach them",
          arguments: ["postgres", "file"])
    func outsiderSlot(store: String) throws {
        guard let (team, server) = try team(store) else { return }
        defer { team.fixture.stub.stop(); server?.stop() }
        let vault = team.vault
        try team.addBoth()
        #expect(try team.run(as: team.alicePath, ["token", "pw"], token: true).status == 0)
        let recordsBefore = try team.audit().count
        let versionsBefore = try vault.run(["history", "pw"]).stdoutText
        _ = try forge(team, server: server, ["seal-outsider", "alice"])
        let secret = "captured-" + UUID().uuidString
        LeakScanner.shared.register(secret: secret)
        let identity = ["VAULT_IDENTITY_FILE": team.alicePath, "VAULT_IDENTITY_PASSPHRASE": team.alicePassphrase]
        let add = try vault.run(["add", "new", "--client-id", "c", "--grant", "client-credentials", "--secrets-stdin"], env: identity,
                                removing: ["VAULT_PASSPHRASE"], stdin: Data(#"{"client_secret":"\#(secret)"}"#.utf8))
        let rotate = try vault.run(["rotate", "pw", "--client-secret", "--secrets-stdin"], env: identity, removing: ["VAULT_PASSPHRASE"],
                                   stdin: Data(#"{"client_secret":"\#(secret)"}"#.utf8))
        let token = try team.run(as: team.alicePath, ["token", "pw", "--fresh"])
        for (name, result) in [("add", add), ("rotate", rotate), ("token", token)] {
            #expect(result.status == 7, "\(name): \(result.status) \(result.stderrText)")
            #expect(result.stderrText.contains("key slot of member 'alice' is not signed by the owner"), "\(name): \(result.stderrText)")
            #expect(result.stdout.isEmpty, "\(name) printed nothing")
        }
        // Nothing was written: no profile, no version, no record; the other members go on.
        #expect(try vault.run(["history", "pw"]).stdoutText == versionsBefore)
        #expect(try vault.run(["list", "--json"]).stdoutText.contains("\"new\"") == false)
        #expect(try team.audit().count == recordsBefore)
        #expect(try team.run(as: team.ciPath, ["token", "cc", "--fresh"], token: true).status == 0, "ci's slot is untouched")
        try vault.scanDump()
        expectNoLeaks(vault)
    }

    /// alice and ci are members; ci fetches a token and keeps a copy of the vault (key epoch
    /// 1), then the owner removes ci (epoch 2). Returns the copy's path.
    private func removedMemberKeepsCopy(_ team: TeamFixture) throws -> String {
        let vault = team.vault
        try team.addBoth()
        #expect(try team.run(as: team.ciPath, ["token", "cc", "--fresh"], token: true).status == 0)
        let kept = vault.directory + "/kept-by-ci.db"
        #expect(try vault.run(["copy", "--to", kept], removing: ["VAULT_PASSPHRASE"]).status == 0)
        #expect(try vault.run(["member", "remove", "ci"]).status == 0)
        return kept
    }

    @Test("a removed member who kept a copy puts the older key epoch (keys, slots, rows) back under the current trail, and appends a record of its own under it: every unlock refuses it before anything is sealed under those keys",
          arguments: ["plain", "append", "append and relabel"])
    func epochRollback(variant: String) throws {
        let append = variant != "plain"
        let team = try TeamFixture()
        defer { team.fixture.stub.stop() }
        let vault = team.vault
        let kept = try removedMemberKeepsCopy(team)
        #expect(try team.run(as: team.alicePath, ["token", "pw", "--fresh"], token: true).status == 0, "alice writes in epoch 2")
        let recordsBefore = try team.audit().count
        let summary = try forge(team, server: nil, ["epoch-rollback", kept, team.ciPath] + (append ? ["--append"] : [])
                                                 + (variant.contains("relabel") ? ["--relabel"] : []))
        #expect(summary["epoch"] as? Int == 1, "\(summary)")
        let secret = "would-be-captured-" + UUID().uuidString
        LeakScanner.shared.register(secret: secret)
        let add = try vault.run(["add", "new", "--client-id", "c", "--grant", "client-credentials", "--secrets-stdin"],
                                env: ["VAULT_IDENTITY_FILE": team.alicePath, "VAULT_IDENTITY_PASSPHRASE": team.alicePassphrase],
                                removing: ["VAULT_PASSPHRASE"], stdin: Data(#"{"client_secret":"\#(secret)"}"#.utf8))
        let ownerToken = try vault.run(["token", "pw", "--fresh"])
        let ciToken = try team.run(as: team.ciPath, ["token", "cc"])
        for (name, result) in [("alice's add", add), ("the owner's token", ownerToken), ("ci's token", ciToken)] {
            #expect(result.status == 7 && result.stdout.isEmpty, "\(name): \(result.status) \(result.stderrText)")
            // Relabelled, the newer records no longer verify from the record each client saw last.
            #expect(result.stderrText.contains(variant.contains("relabel") ? "does not match its MAC" : "put back to an older epoch"),
                    "\(name): \(result.stderrText)")
        }
        #expect(try team.audit().count == recordsBefore + (append ? 1 : 0), "nothing appended but the forger's own record")
        #expect(try vault.run(["list", "--json"]).stdoutText.contains("\"new\"") == false, "nothing added")
        expectNoLeaks(vault)
    }

    @Test("a command that unlocked before a removed member put the older epoch back does not take the older keys when it writes: the reload refuses an epoch that went back")
    func reloadRefusesOlderEpoch() throws {
        let team = try TeamFixture()
        defer { team.fixture.stub.stop() }
        let vault = team.vault
        let kept = try removedMemberKeepsCopy(team)
        let secret = "written-after-the-plant-" + UUID().uuidString
        LeakScanner.shared.register(secret: secret)
        // alice's `add` unlocks (epoch 2, every check passes), then waits for its secret.
        var env = vault.environment()
        env["VAULT_IDENTITY_FILE"] = team.alicePath
        env["VAULT_IDENTITY_PASSPHRASE"] = team.alicePassphrase
        env["VAULT_PASSPHRASE"] = nil
        env["VAULT_VERBOSE"] = "1"
        let add = try ChildProcess(Binaries.vault, ["add", "new", "--client-id", "c", "--grant", "client-credentials", "--secrets-stdin"],
                                   environment: env)
        let heard = OutputCollector(add.stderrDescriptor)
        defer { add.kill(SIGKILL); _ = add.wait(timeout: 10) }
        let deadline = Date().addingTimeInterval(60)
        while !heard.text.contains("unlocked as member 'alice'"), Date() < deadline { usleep(50_000) }
        #expect(heard.text.contains("unlocked as member 'alice'"), "\(heard.text)")
        _ = try forge(team, server: nil, ["epoch-rollback", kept, team.ciPath, "--append", "--relabel"])
        add.writeStdin(Data(#"{"client_secret":"\#(secret)"}"#.utf8))
        add.closeStdin()
        let status = add.wait(timeout: 60)
        let said = String(decoding: heard.finish(), as: UTF8.self)
        #expect(status == 7, "\(String(describing: status)) \(said)")
        #expect(said.contains("went from 2 back to 1"), "\(said)")
        #expect(try vault.run(["list", "--json"], removing: ["VAULT_PASSPHRASE"]).stdoutText.contains("\"new\"") == false, "nothing added")
        expectNoLeaks(vault)
    }

    @Test("a symbolic link planted where the vault was (to another vault, or to an older copy of this one) is the same location: compared with what was seen there, refused")
    func linkPlantedAtThePath() throws {
        let team = try TeamFixture()
        defer { team.fixture.stub.stop() }
        let vault = team.vault
        try team.addBoth()
        #expect(try team.run(as: team.alicePath, ["token", "pw", "--fresh"], token: true).status == 0, "alice pins the vault")
        let older = vault.directory + "/older.db"
        #expect(try vault.run(["copy", "--to", older], removing: ["VAULT_PASSPHRASE"]).status == 0)
        #expect(try team.run(as: team.alicePath, ["token", "cc", "--fresh"], token: true).status == 0, "the vault moves on")
        // Another vault, made by an outsider, with alice added by her public recipient.
        let outsider = TestVault(passphrase: "outsider's own passphrase")
        #expect(try outsider.run(["init"]).status == 0)
        #expect(try outsider.run(["member", "add", "alice", "--recipient", team.recipient(team.alicePath)]).status == 0)
        for (target, expected) in [(outsider.path, "replaced"), (older, "older than")] {
            let original = vault.path + ".real"
            try FileManager.default.moveItem(atPath: vault.path, toPath: original)
            for suffix in ["-wal", "-shm"] { try? FileManager.default.moveItem(atPath: vault.path + suffix, toPath: original + suffix) }
            try FileManager.default.createSymbolicLink(atPath: vault.path, withDestinationPath: target)
            let result = try team.run(as: team.alicePath, ["verify"])
            #expect(result.status == 7 && result.stderrText.contains(expected), "\(target): \(result.status) \(result.stderrText)")
            try FileManager.default.removeItem(atPath: vault.path)
            try FileManager.default.moveItem(atPath: original, toPath: vault.path)
            for suffix in ["-wal", "-shm"] { try? FileManager.default.moveItem(atPath: original + suffix, toPath: vault.path + suffix) }
        }
        #expect(try team.run(as: team.alicePath, ["token", "pw"], token: true).status == 0, "the real vault again")
        expectNoLeaks(vault)
    }

    @Test("a member who turns an upgraded vault back to format 3 (its pre-upgrade copy under the current trail) gets nothing signed: the owner's unlock refuses it (exit 7)")
    func downgradeRefused() throws {
        let vault = TestVault(passphrase: "fixture passphrase v1 ✓")
        try FileManager.default.createDirectory(atPath: (vault.path as NSString).deletingLastPathComponent, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        try FileManager.default.copyItem(atPath: Self.v3.appendingPathComponent("v3-testkdf.db").path, toPath: vault.path)
        let rebuilt = vault.directory + "/rebuilt.db"
        try FileManager.default.copyItem(atPath: vault.path, toPath: rebuilt)  // the member's copy from before the upgrade
        #expect(try vault.run(["upgrade"]).status == 0)
        let grafted = try Binaries.run("/usr/bin/sqlite3", [rebuilt, """
            ATTACH '\(vault.path)' AS new; DELETE FROM audit_record; INSERT INTO audit_record SELECT * FROM new.audit_record;
            DELETE FROM audit_head; INSERT INTO audit_head SELECT * FROM new.audit_head;
            """], environment: ["PATH": "/usr/bin:/bin"])
        #expect(grafted.status == 0, "\(grafted.stderrText)")
        for suffix in ["", "-wal", "-shm"] { unlink(vault.path + suffix) }
        try FileManager.default.moveItem(atPath: rebuilt, toPath: vault.path)
        let token = try vault.run(["token", "pw"])
        #expect(token.status == 7 && token.stderrText.contains("turned back to an older format"), "\(token.status) \(token.stderrText)")
        #expect(try vault.sql("SELECT format_version FROM vault_header").stdoutText == "3\n", "nothing was signed or upgraded")
    }

    /// The format-3 fixture: owner, alice (who added carol, as format 3 allowed), bob
    /// (removed), two profiles, signed records by three members.
    private static let v3 = repositoryRoot.appendingPathComponent("testvectors/v3")

    @Test("a format-3 vault (made by the format-3 build): members are turned away until the owner's unlock upgrades it; then everyone goes on, checked from outside")
    func upgradeFile() throws {
        let vault = TestVault(passphrase: "fixture passphrase v1 ✓")
        try FileManager.default.createDirectory(atPath: (vault.path as NSString).deletingLastPathComponent, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        try FileManager.default.copyItem(atPath: Self.v3.appendingPathComponent("v3-testkdf.db").path, toPath: vault.path)
        var identities: [String: String] = [:]
        for name in ["alice", "bob", "carol"] {
            let path = vault.directory + "/\(name).id"
            try FileManager.default.copyItem(atPath: Self.v3.appendingPathComponent("\(name).id").path, toPath: path)
            chmod(path, 0o600)
            identities[name] = path
        }
        let asMember = { (name: String, arguments: [String]) in
            try vault.run(arguments, env: ["VAULT_IDENTITY_FILE": identities[name]!], removing: ["VAULT_PASSPHRASE"])
        }
        let early = try asMember("alice", ["token", "pw"])
        #expect(early.status == 64 && early.stderrText.contains("the owner must unlock it once with the passphrase"), "\(early.stderrText)")
        #expect(try vault.run(["member", "list"], removing: ["VAULT_PASSPHRASE"]).stdoutText.contains("carol"), "metadata reads work on format 3")
        let upgraded = try vault.run(["upgrade"])
        #expect(upgraded.status == 0 && upgraded.stderrText.contains("from format 3 to format 4"), "\(upgraded.stderrText)")
        for name in ["alice", "carol"] {
            let verified = try asMember(name, ["verify"])
            #expect(verified.status == 0, "\(name): \(verified.stderrText)")
            let read = try independentReader(path: vault.path, passphrase: "", extra: ["--identity", identities[name]!])
            #expect(read.report?["format_version"] as? Int == 4 && read.report?["member"] as? String == name, "\(read.error ?? "")")
        }
        #expect(try asMember("bob", ["verify"]).status == 3, "bob was removed in format 3 and stays out")
        let owner = try #require(try independentReader(path: vault.path, passphrase: vault.passphrase).report)
        #expect(owner["audit_records"] as? Int == 13 && owner["signatures"] as? Int == 13, "\(owner)")
        let last = try JSONSerialization.jsonObject(with: vault.run(["audit", "--json", "--limit", "1"]).stdout) as? [[String: Any]]
        #expect(last?.first?["action"] as? String == "upgrade" && last?.first?["member"] as? String == "owner")
        #expect((last?.first?["detail"] as? String)?.contains("4 member row(s) and 3 key slot(s) signed by the owner") == true, "\(last ?? [])")
        // Carol was added by alice in format 3; her records still verify, and now only the owner adds.
        let byCarol = try asMember("carol", ["member", "add", "dave", "--recipient", vault.run(["identity", "show", "--identity", identities["bob"]!]).stdoutText
            .trimmingCharacters(in: .whitespacesAndNewlines)])
        #expect(byCarol.status == 64 && byCarol.stderrText.contains("only the owner"), "\(byCarol.stderrText)")
        expectNoLeaks(vault)
    }

    @Test("a fault at the start of the format-4 step leaves the format-3 vault exactly as it was; the next unlock upgrades it")
    func upgradeFault() throws {
        for action in ["ioerror", "kill"] {
            let vault = TestVault(passphrase: "fixture passphrase v1 ✓")
            try FileManager.default.createDirectory(atPath: (vault.path as NSString).deletingLastPathComponent, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
            try FileManager.default.copyItem(atPath: Self.v3.appendingPathComponent("v3-testkdf.db").path, toPath: vault.path)
            let failed = try vault.run(["upgrade"], env: ["GBG_VAULT_TEST_FAULT": "upgrade-format4-begins:\(action)"])
            #expect(failed.status == (action == "kill" ? 128 + 9 : 1) || failed.status == -9, "\(action): \(failed.status) \(failed.stderrText)")
            let between = try #require(try independentReader(path: vault.path, passphrase: vault.passphrase).report)
            #expect(between["format_version"] as? Int == 3 && between["audit_records"] as? Int == 12, "\(action)")
            let finished = try vault.run(["upgrade"])
            #expect(finished.status == 0 && finished.stderrText.contains("from format 3 to format 4"), "\(finished.stderrText)")
            #expect(try independentReader(path: vault.path, passphrase: vault.passphrase).report?["format_version"] as? Int == 4)
        }
    }

    @Test("a format-3 team vault (a pg_dump made with the format-3 build) is upgraded by the owner's unlock in one transaction; members go on; the schema check knows both versions")
    func upgradeTeam() throws {
        guard let server = try startPostgres() else { return }
        defer { server.stop() }
        let dump = try Data(contentsOf: Self.v3.appendingPathComponent("team-v3.sql"))
        try server.restore(dump)
        let vault = TestVault(postgres: server, schema: "teamv3", passphrase: "fixture passphrase v1 ✓")
        let alice = vault.directory + "/alice.id"
        try FileManager.default.copyItem(atPath: Self.v3.appendingPathComponent("alice.id").path, toPath: alice)
        chmod(alice, 0o600)
        let env: [String: String] = [:]
        let early = try vault.run(["verify"], env: env.merging(["VAULT_IDENTITY_FILE": alice]) { a, _ in a }, removing: ["VAULT_PASSPHRASE"])
        #expect(early.status == 64 && early.stderrText.contains("the owner must unlock it once"), "\(early.stderrText)")
        let upgraded = try vault.run(["upgrade"], env: env)
        #expect(upgraded.status == 0 && upgraded.stderrText.contains("from format 3 to format 4"), "\(upgraded.stderrText)")
        #expect(try server.psql("SELECT identifier FROM teamv3.schema_migrations ORDER BY 1", database: "vault")
            .split(separator: "\n") == ["0001_vault", "0002_signed_members"])
        #expect(try server.psql("SELECT count(*) FROM teamv3.key_slot WHERE owner_signature IS NULL", database: "vault")
            .trimmingCharacters(in: .whitespacesAndNewlines) == "0")
        let verified = try vault.run(["verify"], env: env.merging(["VAULT_IDENTITY_FILE": alice]) { a, _ in a }, removing: ["VAULT_PASSPHRASE"])
        #expect(verified.status == 0, "\(verified.stderrText)")
        #expect(try vault.run(["upgrade"], env: env).stderrText.contains("already format 4"))
        try vault.scanDump()
    }
}
