import CProcess
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
        let team = try TeamFixture(postgres: server)
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
        // `vault token pw` is served before main (Sources/CTokenClient) for either store,
        // whether the vault comes from VAULT_PATH or --vault: no thread is ever started.
        var early = vault.environment(["XDG_RUNTIME_DIR": runtime])
        early.removeValue(forKey: "VAULT_PASSPHRASE")
        let trace = vault.directory + "/threads.trace"
        for arguments in [["token", "pw"], ["--vault", vault.path, "token", "pw", "--format", "header"]] {
            let served = try Binaries.run("/usr/bin/strace", ["-f", "-qq", "-e", "trace=clone,clone3", "-o", trace, Binaries.vault] + arguments,
                                          environment: early)
            #expect(served.status == 0 && served.stdoutText.contains(viaAgent.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)),
                    "\(store) \(arguments): \(served.stderrText)")
            #expect(!((try? String(contentsOfFile: trace, encoding: .utf8)) ?? "?").contains("clone"), "\(store) \(arguments): served before main")
        }
        if store == "postgres" {
            // Another spelling of the same URL finds the agent too (by its location identity,
            // parsed by the full program), and exec's command never gets the database password.
            let respelled = vault.path.replacingOccurrences(of: "postgres://", with: "postgresql://")
            let other = try vault.run(["--vault", respelled, "token", "pw"], env: ["XDG_RUNTIME_DIR": runtime], removing: ["VAULT_PASSPHRASE"],
                                      expectTokenOnStdout: true)
            #expect(other.status == 0 && other.stdoutText == viaAgent.stdoutText, "\(other.stderrText)")
            let exec = try vault.run(["exec", "pw", "--", "sh", "-c", "echo ${PGPASSWORD:-none}"], env: ["XDG_RUNTIME_DIR": runtime],
                                     removing: ["VAULT_PASSPHRASE"])
            #expect(exec.status == 0 && exec.stdoutText == "none\n", "\(exec.stderrText)")
        }
        let status = try vault.run(["status", "--json"], env: ["XDG_RUNTIME_DIR": runtime])
        #expect(status.stdoutText.contains("\"unlocked\":true"), "\(status.stdoutText)")
        #expect(try vault.run(["lock"], env: ["XDG_RUNTIME_DIR": runtime]).status == 0)

        #expect(try vault.run(["member", "remove", "ci"]).status == 0)
        #expect(try team.run(as: team.ciPath, ["token", "pw"]).status == 3)
        let verify = try vault.run(["verify"])
        #expect(verify.status == 0, "\(verify.stdoutText) \(verify.stderrText)")
        #expect(try team.run(as: team.alicePath, ["audit", "verify"]).status == 0)
        let doctor = try vault.run(["doctor"])
        #expect(doctor.status == 1 && !doctor.stdoutText.contains(" fail "), "warnings only (the test KDF): \(doctor.stdoutText) \(doctor.stderrText)")
        if store == "postgres", let server {
            #expect(doctor.stdoutText.contains("PostgreSQL 1") && doctor.stdoutText.contains("grants"), "\(doctor.stdoutText)")
            #expect(try vault.run(["backup", vault.directory + "/b.db"]).status == 64, "backup is for files; vault copy for team vaults")
            // A password inside --vault: it works, vault warns, and never prints it.
            let withPassword = vault.path.replacingOccurrences(of: "\(server.admin)@", with: "\(server.admin):\(server.adminPassword)@")
            let warned = try vault.run(["list", "--vault", withPassword], removing: ["PGPASSWORD"])
            #expect(warned.status == 0 && warned.stderrText.contains("visible to other users"), "\(warned.stderrText)")
            // The agent of such a vault gets the password in its environment, never in its arguments.
            #expect(try vault.run(["unlock", "--vault", withPassword, "--for", "1m"], env: ["XDG_RUNTIME_DIR": runtime], removing: ["PGPASSWORD"]).status == 0)
            let agentStatus = try JSONSerialization.jsonObject(with: vault.run(["status", "--json"], env: ["XDG_RUNTIME_DIR": runtime]).stdout) as? [String: Any]
            let agentPID = try #require(agentStatus?["pid"] as? Int)
            let argv = try Data(contentsOf: URL(fileURLWithPath: "/proc/\(agentPID)/cmdline"))
            LeakScanner.shared.scan(argv, artefact: "the team vault agent's argv", includeTokens: true)
            #expect(!String(decoding: argv, as: UTF8.self).contains(server.adminPassword))
            #expect(try vault.run(["lock"], env: ["XDG_RUNTIME_DIR": runtime]).status == 0)
            let wrongPassword = try vault.run(["list"], env: ["PGPASSWORD": "not-the-password"])
            #expect(wrongPassword.status == 1 && wrongPassword.stderrText.contains("refused the login"), "\(wrongPassword.stderrText)")
            let noSchema = try vault.run(["list", "--vault", server.url(schema: "nothing_here")])
            #expect(noSchema.status == 6, "no vault in that schema: \(noSchema.stderrText)")
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
        let team = try TeamFixture()
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

    /// 8 processes at a time as 3 members (the owner's passphrase, alice, ci), 50 tokens
    /// each, with rotations in between: nothing fails, nothing is lost, one chain.
    @Test("8 concurrent writers as 3 members, 50 tokens each plus rotations: 0 failures, one chain, every signature verifies")
    func concurrentWriters() throws {
        guard let server = try startPostgres() else { return }
        defer { server.stop() }
        let team = try TeamFixture(postgres: server)
        defer { team.fixture.stub.stop() }
        let vault = team.vault
        try team.addBoth()
        let before = try JSONSerialization.jsonObject(with: vault.run(["audit", "--json"]).stdout) as? [[String: Any]] ?? []
        let perWorker = Int(ProcessInfo.processInfo.environment["GBG_VAULT_TEAM_TOKENS"] ?? "") ?? 50
        let failures = LockedArray<String>()
        let rotations = LockedArray<Int>()
        let group = DispatchGroup()
        let started = Date()
        for worker in 0..<8 {
            group.enter()
            Thread {
                defer { group.leave() }
                let identity: String? = [nil, team.alicePath, team.ciPath][worker % 3]
                for i in 0..<perWorker {
                    let arguments = ["token", i % 2 == 0 ? "pw" : "cc"] + (i % 5 == 0 ? ["--fresh"] : [])
                    let result: ProcessResult?
                    if let identity {
                        result = try? team.run(as: identity, arguments, token: true)
                    } else {
                        result = try? team.fixture.token(arguments[1], Array(arguments.dropFirst(2)))
                    }
                    if result?.status != 0 {
                        failures.append("worker \(worker) token \(i): \(result?.status ?? -1) \(result?.stderrText ?? "did not run")")
                    }
                    // The owner's workers rotate pw's client secret now and then (to the same
                    // value at the stub, a new sealed version in the vault).
                    if identity == nil, i % 10 == 9 {
                        let rotate = try? vault.run(["rotate", "pw", "--secrets-stdin"], stdin: Data(
                            #"{"client_secret":"\#(team.fixture.clientSecret)","password":"\#(team.fixture.password)"}"#.utf8))
                        if rotate?.status == 0 { rotations.append(i) } else { failures.append("worker \(worker) rotate \(i): \(rotate?.stderrText ?? "")") }
                    }
                }
            }.start()
        }
        group.wait()
        let seconds = Date().timeIntervalSince(started)
        #expect(failures.values.isEmpty, "\(failures.values.prefix(5))")
        let after = try JSONSerialization.jsonObject(with: vault.run(["audit", "--json"]).stdout) as? [[String: Any]] ?? []
        let appended = after.count - before.count
        #expect(appended == 8 * perWorker + rotations.values.count, "every token and rotation has exactly one record")
        let seqs = after.compactMap { $0["seq"] as? Int }
        #expect(Set(seqs).count == seqs.count && seqs.max() == seqs.count, "one linear chain 1…n")
        let verify = try vault.run(["verify"])
        #expect(verify.status == 0, "\(verify.stdoutText) \(verify.stderrText)")
        #expect(try team.run(as: team.ciPath, ["audit", "verify"]).status == 0)
        let members = Set(after.compactMap { $0["member"] as? String })
        #expect(members.isSuperset(of: ["owner", "alice", "ci"]))
        print("team vault: 8 writers × \(perWorker) tokens + \(rotations.values.count) rotations as 3 members in \(String(format: "%.1f", seconds)) s: "
              + "\(appended) records (\(String(format: "%.0f", Double(appended) / seconds)) per second, whole commands), 0 lost")
        try vault.scanDump()
        expectNoLeaks(vault)
    }

    /// Faults: a writer lock held past the timeout, a connection killed inside a
    /// transaction, the server stopped in the middle of a token exchange and restarted.
    @Test("faults: lock timeout, pg_terminate_backend inside a transaction, server stopped mid-command: clear errors, nothing lost or half-written")
    func faults() throws {
        guard let server = try startPostgres() else { return }
        defer { server.stop() }
        let fixture = try Fixture(stubArguments: ["--delay-ms", "1500"], postgres: server)
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        let schema = String(vault.path.split(separator: "=").last!)
        func profiles() throws -> [String] {
            (try JSONSerialization.jsonObject(with: vault.run(["list", "--json"]).stdout) as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
        }
        let psqlEnv = ["PATH": "/usr/bin:/bin", "PGPASSWORD": server.adminPassword, "PGSSLMODE": "disable"]
        func holdLock(seconds: Int) throws -> ChildProcess {
            try ChildProcess("/usr/bin/psql", ["-X", "-q", "-h", "127.0.0.1", "-p", String(server.port), "-U", server.admin, "-d", "vault", "-c",
                                               "BEGIN; LOCK TABLE \(schema).vault_header IN EXCLUSIVE MODE; SELECT pg_sleep(\(seconds)); COMMIT;"],
                             environment: psqlEnv)
        }

        // 1. Another writer holds the lock past VAULT_BUSY_TIMEOUT: exit 1, clear message, nothing added.
        let holder = try holdLock(seconds: 4)
        usleep(500_000)
        let waited = try vault.add("late", clientID: "client-cc", clientSecret: fixture.ccSecret, grant: "client-credentials", env: "local")
        #expect(waited.status == 0, "with the default timeout (30 s) the writer waits for the lock: \(waited.stderrText)")
        _ = holder.wait(timeout: 10)
        #expect(try profiles().contains("late"), "with the default timeout the writer waits for the lock and then succeeds")
        let holder2 = try holdLock(seconds: 5)
        usleep(500_000)
        let timedOut = try vault.run(["remove", "late", "--yes"], env: ["VAULT_BUSY_TIMEOUT": "1"])
        #expect(timedOut.status == 1 && timedOut.stderrText.contains("locked by another writer"), "\(timedOut.status) \(timedOut.stderrText)")
        _ = holder2.wait(timeout: 10)
        #expect(try profiles().contains("late"), "the timed-out remove changed nothing")

        // 2. The connection is killed while the command waits inside its transaction.
        let holder3 = try holdLock(seconds: 6)
        usleep(500_000)
        let killed = try ChildProcess(Binaries.vault, ["remove", "late", "--yes"], environment: vault.environment())
        killed.closeStdin()
        let killedOutput = OutputCollector(killed.stderrDescriptor)
        _ = OutputCollector(killed.stdoutDescriptor)
        // Killed once it waits for the lock inside its transaction (not after a fixed
        // sleep, which a loaded machine can outrun).
        let waitingBy = Date().addingTimeInterval(5)
        let waitingSQL = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'gbg-vault' AND wait_event_type = 'Lock'"
        while try server.psql(waitingSQL, database: "vault").trimmingCharacters(in: .whitespacesAndNewlines) == "0", Date() < waitingBy {
            usleep(50_000)
        }
        try server.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'gbg-vault' AND state = 'active'",
                        database: "vault")
        let killedStatus = killed.wait(timeout: 20)
        let killedErr = String(decoding: killedOutput.finish(), as: UTF8.self)
        #expect(killedStatus == 1, "\(killedStatus ?? -1) \(killedErr)")
        #expect(killedErr.contains("connection to the PostgreSQL server was lost") && killedErr.contains("nothing was changed"), "\(killedErr)")
        _ = holder3.wait(timeout: 10)
        #expect(try profiles().contains("late"), "the killed remove changed nothing")

        // 3. The server stops while vault waits for the token endpoint: the token is
        // withheld (exit 8) because its audit record cannot be written; after a restart
        // the chain is whole and tokens flow again.
        // The server stops once the request has reached the endpoint (which answers
        // after 1.5 s): on a loaded machine a fixed sleep could stop it before vault
        // had even read the vault, a different fault (covered in step 2).
        let requestsBefore = try fixture.stub.tokenRequests()
        let exchange = try ChildProcess(Binaries.vault, ["token", "pw", "--fresh"], environment: vault.environment())
        exchange.closeStdin()
        let out = OutputCollector(exchange.stdoutDescriptor)
        let err = OutputCollector(exchange.stderrDescriptor)
        let reachBy = Date().addingTimeInterval(20)
        while try fixture.stub.tokenRequests() == requestsBefore, Date() < reachBy { usleep(50_000) }
        #expect(try fixture.stub.tokenRequests() > requestsBefore, "the exchange reached the endpoint")
        try server.stopServer()
        let exchangeStatus = exchange.wait(timeout: 30)
        let printed = out.finish()
        let exchangeErr = String(decoding: err.finish(), as: UTF8.self)
        #expect(exchangeStatus == 8, "\(exchangeStatus ?? -1) \(exchangeErr)")
        #expect(printed.isEmpty, "no token was printed")
        let down = try vault.run(["list"])
        #expect(down.status == 1 && down.stderrText.contains("cannot connect to the PostgreSQL server"), "\(down.stderrText)")
        try server.startServer()
        let verify = try vault.run(["verify"])
        #expect(verify.status == 0, "\(verify.stdoutText) \(verify.stderrText)")
        #expect(try fixture.token("pw", ["--fresh"]).status == 0)

        // 4. An agent outlives a server restart: its pooled connections are replaced.
        var template = Array("/tmp/gv-run-XXXXXX".utf8CString)
        let runtime = String(cString: try #require(mkdtemp(&template)))
        defer { try? FileManager.default.removeItem(atPath: runtime) }
        #expect(try vault.run(["unlock", "--for", "5m"], env: ["XDG_RUNTIME_DIR": runtime]).status == 0)
        #expect(try vault.run(["token", "pw"], env: ["XDG_RUNTIME_DIR": runtime], removing: ["VAULT_PASSPHRASE"], expectTokenOnStdout: true).status == 0)
        try server.stopServer()
        try server.startServer()
        let afterRestart = try vault.run(["token", "pw"], env: ["XDG_RUNTIME_DIR": runtime], removing: ["VAULT_PASSPHRASE"], expectTokenOnStdout: true)
        #expect(afterRestart.status == 0, "the agent reconnects: \(afterRestart.stderrText)")
        #expect(try vault.run(["lock"], env: ["XDG_RUNTIME_DIR": runtime]).status == 0)
        try vault.scanDump()
        expectNoLeaks(vault)
    }

    /// What someone with rights on the database can do to the rows, and what vault says.
    @Test("database administrator tampering is caught (exit 7 / audit verify), and pg_dump holds no secret")
    func administratorTampering() throws {
        guard let server = try startPostgres() else { return }
        defer { server.stop() }
        let fixture = try Fixture(postgres: server)
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        #expect(try fixture.token("pw").status == 0)
        #expect(try fixture.token("cc").status == 0)
        let schema = String(vault.path.split(separator: "=").last!)
        try vault.scanDump()
        try server.psql("CREATE SCHEMA pristine; " + ["vault_header", "environment", "profile", "secret_version", "token_cache", "audit_record",
                                                       "audit_head", "retired_audit_key", "member", "key_slot"]
            .map { "CREATE TABLE pristine.\($0) AS SELECT * FROM \(schema).\($0);" }.joined(), database: "vault")
        func restore() throws {
            try server.psql("SET session_replication_role = replica; " + ["token_cache", "secret_version", "key_slot", "audit_record", "audit_head",
                                                                              "retired_audit_key", "profile", "member", "environment", "vault_header"]
                .map { "DELETE FROM \(schema).\($0);" }.joined()
                + ["vault_header", "environment", "profile", "secret_version", "token_cache", "member", "key_slot", "retired_audit_key",
                   "audit_record", "audit_head"].map { "INSERT INTO \(schema).\($0) SELECT * FROM pristine.\($0);" }.joined(), database: "vault")
            #expect(try vault.run(["verify"]).status == 0, "restored")
        }
        let attacks: [(String, String, [String], Int32)] = [
            // (A flip, so the byte always changes: writing 0x00 left it as it was once in 256 runs.)
            ("edit a sealed secret", "UPDATE \(schema).secret_version SET ciphertext = set_byte(ciphertext, 4, get_byte(ciphertext, 4) # 255) WHERE field = 'client_secret' AND profile_id = (SELECT id FROM \(schema).profile WHERE name = 'pw')",
             ["token", "pw", "--fresh"], 7),
            ("swap sealed secrets between profiles", "UPDATE \(schema).secret_version a SET nonce = b.nonce, ciphertext = b.ciphertext FROM \(schema).secret_version b WHERE a.field = 'client_secret' AND b.field = 'client_secret' AND a.profile_id <> b.profile_id",
             ["token", "cc", "--fresh"], 7),
            ("swap cached tokens between profiles", "UPDATE \(schema).token_cache a SET nonce = b.nonce, ciphertext = b.ciphertext FROM \(schema).token_cache b WHERE a.profile_id <> b.profile_id",
             ["token", "cc"], 7),
            ("edit profile metadata", "UPDATE \(schema).profile SET client_id = 'attacker' WHERE name = 'cc'", ["token", "cc", "--fresh"], 7),
            ("delete audit rows", "DELETE FROM \(schema).audit_record WHERE seq = 3", ["audit", "verify"], 7),
            ("delete the newest audit rows and rewind the head", "DELETE FROM \(schema).audit_record WHERE seq > 2; UPDATE \(schema).audit_head SET seq = 2",
             ["token", "pw"], 7),
            ("add a trigger", "CREATE FUNCTION \(schema).steal() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$; CREATE TRIGGER t BEFORE INSERT ON \(schema).audit_record FOR EACH ROW EXECUTE FUNCTION \(schema).steal()",
             ["list"], 7),
            ("add a row-level security policy", "ALTER TABLE \(schema).audit_record ENABLE ROW LEVEL SECURITY", ["audit"], 7),
            ("add a column", "ALTER TABLE \(schema).profile ADD COLUMN note text", ["list"], 7),
            ("swap a column's type for a domain of another schema whose CHECK calls a SECURITY DEFINER function",
             "CREATE FUNCTION public.spy(text) RETURNS boolean LANGUAGE sql SECURITY DEFINER AS 'SELECT true'; "
                + "CREATE DOMAIN public.watched AS text CHECK (public.spy(VALUE)); "
                + "ALTER TABLE \(schema).audit_record ALTER COLUMN detail TYPE public.watched", ["token", "pw"], 7),
            // An operator in the schema that the checks' own SQL would call (a closer match than
            // pg_catalog's for `text || name`): an outside review masked a trigger's line this way.
            ("shadow an operator the schema check could call",
             "CREATE FUNCTION public.mask(text, name) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT ''constraint''::text'; "
                + "CREATE OPERATOR \(schema).|| (LEFTARG = text, RIGHTARG = name, FUNCTION = public.mask)", ["list"], 7),
            // A foreign key from another schema's table: its internal triggers on the vault's
            // table cascade into that table, whose own triggers then run inside the vault's
            // statements (a second review's way in, which the check did not see).
            ("a foreign key from another schema's table to a vault table",
             "CREATE TABLE public.shadow (puid bytea REFERENCES \(schema).profile(uid) ON UPDATE CASCADE ON DELETE CASCADE)", ["list"], 7),
            ("a table of another schema that inherits a vault table (its rows join every read)",
             "CREATE TABLE public.extra () INHERITS (\(schema).audit_record)", ["audit"], 7),
            // Names that hold the vault schema's name and a dot: the check once took `SCHEMA.`
            // out of every line as text, so `lSCHEMA.ength(mac)` read `length(mac)` and a
            // domain of a schema named `pSCHEMA.g_catalog` read `pg_catalog.text` (an outside
            // review ran its own function in every write this way, unseen).
            ("a CHECK that calls a function of a schema whose name ends in the vault's",
             "CREATE SCHEMA \"l\(schema)\"; CREATE FUNCTION \"l\(schema)\".ength(bytea) RETURNS int LANGUAGE sql AS 'SELECT pg_catalog.length($1)'; "
                + "ALTER TABLE \(schema).audit_record DROP CONSTRAINT audit_record_mac_check, "
                + "ADD CONSTRAINT audit_record_mac_check CHECK (\"l\(schema)\".ength(mac) = 32)", ["list"], 7),
            ("a column type of a schema named like pg_catalog with the vault's name inside",
             "CREATE SCHEMA \"p\(schema).g_catalog\"; CREATE DOMAIN \"p\(schema).g_catalog\".text AS pg_catalog.text; "
                + "ALTER TABLE \(schema).audit_record ALTER COLUMN detail TYPE \"p\(schema).g_catalog\".text COLLATE \"C\"", ["list"], 7),
            // A collation of another schema with the name of pg_catalog's `C` (a third review's,
            // case-insensitive, made profile names collide; the check compared names only).
            ("a column collation of another schema named like pg_catalog's",
             "CREATE COLLATION public.\"C\" (provider = libc, locale = 'C'); "
                + "ALTER TABLE \(schema).profile ALTER COLUMN name TYPE text COLLATE public.\"C\"", ["list"], 7),
        ]
        for (name, sql, command, expected) in attacks {
            try server.psql(sql, database: "vault")
            let result = try vault.run(command)
            #expect(result.status == expected, "\(name): \(command) exited \(result.status): \(result.stderrText)")
            #expect(result.stdout.isEmpty || command.first == "audit", "\(name): nothing printed")
            if name.hasPrefix("add a trigger") { try server.psql("DROP TRIGGER t ON \(schema).audit_record; DROP FUNCTION \(schema).steal()", database: "vault") }
            if name.hasPrefix("add a row-level") { try server.psql("ALTER TABLE \(schema).audit_record DISABLE ROW LEVEL SECURITY", database: "vault") }
            if name.hasPrefix("add a column") { try server.psql("ALTER TABLE \(schema).profile DROP COLUMN note", database: "vault") }
            if name.hasPrefix("a foreign key from") { try server.psql("DROP TABLE public.shadow", database: "vault") }
            if name.hasPrefix("a table of another schema") { try server.psql("DROP TABLE public.extra", database: "vault") }
            if name.hasPrefix("shadow an operator") {
                try server.psql("DROP OPERATOR \(schema).|| (text, name); DROP FUNCTION public.mask(text, name)", database: "vault")
            }
            if name.hasPrefix("a column collation of another schema") {
                try server.psql("ALTER TABLE \(schema).profile ALTER COLUMN name TYPE text COLLATE pg_catalog.\"C\"; DROP COLLATION public.\"C\"",
                                database: "vault")
            }
            if name.hasPrefix("a CHECK that calls") {
                try server.psql("ALTER TABLE \(schema).audit_record DROP CONSTRAINT audit_record_mac_check, "
                                + "ADD CONSTRAINT audit_record_mac_check CHECK (length(mac) = 32); DROP SCHEMA \"l\(schema)\" CASCADE", database: "vault")
            }
            if name.hasPrefix("a column type of a schema named like") {
                try server.psql("ALTER TABLE \(schema).audit_record ALTER COLUMN detail TYPE text COLLATE \"C\"; DROP SCHEMA \"p\(schema).g_catalog\" CASCADE",
                                database: "vault")
            }
            if name.hasPrefix("swap a column's type") {
                try server.psql("ALTER TABLE \(schema).audit_record ALTER COLUMN detail TYPE text COLLATE \"C\"; DROP DOMAIN public.watched; DROP FUNCTION public.spy(text)",
                                database: "vault")
            }
            try restore()
        }
        try vault.scanDump()
        expectNoLeaks(vault)
    }

    /// Waits (up to 5 s) for the agent of `env` to end after a refusal that ends it.
    func awaitAgentEnd(_ vault: TestVault, env: [String: String]) throws {
        let ended = Date().addingTimeInterval(5)
        while Date() < ended, try vault.run(["status"], env: env).stdoutText.contains("unlocked:") { usleep(100_000) }
    }

    /// The agent keeps its connections for hours: DDL made meanwhile is found by the next
    /// transaction (the catalogs' digest of the schema moved), before anything runs.
    @Test("a trigger a database administrator adds while a team agent runs is found at its next transaction: no token, the agent ends")
    func schemaChangedWhileUnlocked() throws {
        guard let server = try startPostgres() else { return }
        defer { server.stop() }
        let fixture = try Fixture(postgres: server)
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        let schema = String(vault.path.split(separator: "=").last!)
        var template = Array("/tmp/gv-run-XXXXXX".utf8CString)
        let runtime = String(cString: try #require(mkdtemp(&template)))
        defer {
            _ = try? vault.run(["lock"], env: ["XDG_RUNTIME_DIR": runtime])
            try? FileManager.default.removeItem(atPath: runtime)
        }
        #expect(try vault.run(["unlock", "--for", "5m"], env: ["XDG_RUNTIME_DIR": runtime]).status == 0)
        // Two tokens: the exchange, then a cache hit, which primes the agent's one-statement
        // hit (FORMAT.md §11.4) that the trigger then meets first.
        for _ in 0..<2 {
            let first = try vault.run(["token", "pw"], env: ["XDG_RUNTIME_DIR": runtime], removing: ["VAULT_PASSPHRASE"], expectTokenOnStdout: true)
            #expect(first.status == 0, "\(first.stderrText)")
        }
        try server.psql("""
            CREATE FUNCTION public.hide() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
            BEGIN DELETE FROM \(schema).audit_record WHERE seq = NEW.seq; RETURN NEW; END $$;
            CREATE TRIGGER hide AFTER UPDATE ON \(schema).audit_head FOR EACH ROW EXECUTE FUNCTION public.hide();
            """, database: "vault")
        let refused = try vault.run(["token", "pw"], env: ["XDG_RUNTIME_DIR": runtime], removing: ["VAULT_PASSPHRASE"])
        #expect(refused.status == 7 && refused.stdoutText.isEmpty && refused.stderrText.contains("trigger hide"), "\(refused.stderrText)")
        try awaitAgentEnd(vault, env: ["XDG_RUNTIME_DIR": runtime])
        #expect(!(try vault.run(["status"], env: ["XDG_RUNTIME_DIR": runtime]).stdoutText.contains("unlocked:")), "the agent ended")
        #expect(try vault.run(["verify"]).status == 7)
        try server.psql("DROP TRIGGER hide ON \(schema).audit_head; DROP FUNCTION public.hide()", database: "vault")
        #expect(try vault.run(["verify"]).status == 0)

        // An operator that would freeze the digest (`bigint || text`, a closer match than
        // pg_catalog's): its own row moves the digest, and the next transaction refuses it.
        #expect(try vault.run(["unlock", "--for", "5m"], env: ["XDG_RUNTIME_DIR": runtime]).status == 0)
        #expect(try vault.run(["token", "pw"], env: ["XDG_RUNTIME_DIR": runtime], removing: ["VAULT_PASSPHRASE"], expectTokenOnStdout: true).status == 0)
        try server.psql("""
            CREATE FUNCTION public.freeze(bigint, text) RETURNS text LANGUAGE sql IMMUTABLE AS $$SELECT 'frozen'$$;
            CREATE OPERATOR \(schema).|| (LEFTARG = bigint, RIGHTARG = text, FUNCTION = public.freeze);
            """, database: "vault")
        let frozen = try vault.run(["token", "pw"], env: ["XDG_RUNTIME_DIR": runtime], removing: ["VAULT_PASSPHRASE"])
        #expect(frozen.status == 7 && frozen.stdoutText.isEmpty && frozen.stderrText.contains("operator ||(bigint,text)"), "\(frozen.stderrText)")
        try server.psql("DROP OPERATOR \(schema).|| (bigint, text); DROP FUNCTION public.freeze(bigint, text)", database: "vault")
        #expect(try vault.run(["verify"]).status == 0)

        // Objects of the other kinds a schema holds, one at a time, made (or moved in) while
        // the agent runs: the digest sees each come by its dependency on the schema.
        let kinds: [(make: String, named: String, undo: String)] = [
            ("CREATE FUNCTION public.moved() RETURNS int LANGUAGE sql AS $$SELECT 1$$; ALTER FUNCTION public.moved() SET SCHEMA \(schema)",
             "function moved", "DROP FUNCTION \(schema).moved()"),
            ("CREATE COLLATION \(schema).c (provider = libc, locale = 'C')", "collation c", "DROP COLLATION \(schema).c"),
            ("CREATE TEXT SEARCH CONFIGURATION \(schema).ts (COPY = pg_catalog.simple)", "text search configuration ts",
             "DROP TEXT SEARCH CONFIGURATION \(schema).ts"),
            ("CREATE DOMAIN \(schema).d AS int", "type d", "DROP DOMAIN \(schema).d"),
            ("CREATE TABLE public.shadow (a int); ALTER TABLE public.shadow SET SCHEMA \(schema)", "shadow", "DROP TABLE \(schema).shadow"),
            // A renamed index changes no row of pg_index, only the index's own pg_class row
            // (an outside review's rename went unseen by the agent).
            ("ALTER INDEX \(schema).audit_record_at RENAME TO audit_record_at_x", "audit_record_at_x",
             "ALTER INDEX \(schema).audit_record_at_x RENAME TO audit_record_at"),
            // A rule on the head makes its upsert fail before the digest is compared (an outside
            // review's answered exit 8 and the agent went on): the failure is the schema's.
            ("CREATE RULE zr AS ON UPDATE TO \(schema).audit_head DO ALSO NOTIFY vault_rule", "rule zr",
             "DROP RULE zr ON \(schema).audit_head"),
            // A foreign key from another schema's table: the digest finds it by its pg_depend
            // row on the vault's table (no index reaches `confrelid`).
            ("CREATE TABLE public.refs (p bytea REFERENCES \(schema).profile(uid))", "foreign key from public.refs",
             "DROP TABLE public.refs"),
        ]
        for kind in kinds {
            #expect(try vault.run(["unlock", "--for", "5m"], env: ["XDG_RUNTIME_DIR": runtime]).status == 0)
            #expect(try vault.run(["token", "pw"], env: ["XDG_RUNTIME_DIR": runtime], removing: ["VAULT_PASSPHRASE"], expectTokenOnStdout: true).status == 0)
            try server.psql(kind.make, database: "vault")
            let found = try vault.run(["token", "pw"], env: ["XDG_RUNTIME_DIR": runtime], removing: ["VAULT_PASSPHRASE"])
            #expect(found.status == 7 && found.stdoutText.isEmpty && found.stderrText.contains(kind.named), "\(kind.named): \(found.stderrText)")
            try server.psql(kind.undo, database: "vault")
            try awaitAgentEnd(vault, env: ["XDG_RUNTIME_DIR": runtime])
            #expect(try vault.run(["verify"]).status == 0)
        }
        expectNoLeaks(vault)
    }

    /// An agent ends when the vault's keys change under it: also when a request meets the
    /// new keys before the agent's header poll does (a team agent polls at most every 2 s;
    /// an outside review's busy member agent reopened its slot, served, and went on).
    @Test("a member's agent that serves a request right after the owner's rekey ends after it, as an idle one does")
    func busyAgentEndsAfterRekey() throws {
        guard let server = try startPostgres() else { return }
        defer { server.stop() }
        let team = try TeamFixture(postgres: server)
        defer { team.fixture.stub.stop() }
        let vault = team.vault
        try team.addBoth()
        var template = Array("/tmp/gv-run-XXXXXX".utf8CString)
        let runtime = String(cString: try #require(mkdtemp(&template)))
        let agentEnv = ["XDG_RUNTIME_DIR": runtime]
        defer {
            _ = try? vault.run(["lock"], env: agentEnv)
            try? FileManager.default.removeItem(atPath: runtime)
        }
        let unlock = try vault.run(["unlock", "--for", "5m"], env: ["XDG_RUNTIME_DIR": runtime, "VAULT_IDENTITY_FILE": team.alicePath,
                                                                    "VAULT_IDENTITY_PASSPHRASE": team.alicePassphrase],
                                   removing: ["VAULT_PASSPHRASE"])
        #expect(unlock.status == 0, "\(unlock.stderrText)")
        for _ in 0..<2 {
            #expect(try vault.run(["token", "pw"], env: agentEnv, removing: ["VAULT_PASSPHRASE"], expectTokenOnStdout: true).status == 0)
        }
        #expect(try vault.run(["rekey"]).status == 0)
        let served = try vault.run(["token", "pw"], env: agentEnv, removing: ["VAULT_PASSPHRASE"], expectTokenOnStdout: true)
        #expect(served.status == 0, "\(served.stderrText)")
        try awaitAgentEnd(vault, env: agentEnv)
        #expect(!(try vault.run(["status"], env: agentEnv).stdoutText.contains("unlocked:")), "the agent ended after the key change")
        #expect(try vault.run(["audit", "verify"]).status == 0)
        expectNoLeaks(vault)
    }

    /// Backends killed again and again under `--no-agent` tokens: each command ends with a
    /// clear answer (an outside review's waited for ever in a statement whose connection the
    /// server had ended: 4 of 50 hung before the fix, in a loop like this one), and every
    /// token printed has its record.
    @Test("backends killed every 0.15 s under 5 loops of --no-agent tokens: every command ends (0, 1 or 8), every token has its record")
    func killedBackends() throws {
        guard let server = try startPostgres() else { return }
        defer { server.stop() }
        let fixture = try Fixture(postgres: server)
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        #expect(try fixture.token("pw").status == 0)
        let before = try fixture.auditJSON().count
        let stop = LockedArray<Bool>()
        let killer = Thread {
            while stop.values.isEmpty {
                _ = try? server.psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = 'vault' AND pid <> pg_backend_pid() AND backend_type = 'client backend'")
                usleep(150_000)
            }
        }
        killer.start()
        let outcomes = LockedArray<String>()
        let delivered = LockedArray<Int>()
        let group = DispatchGroup()
        for worker in 0..<5 {
            group.enter()
            Thread {
                defer { group.leave() }
                for i in 0..<8 {
                    do {
                        let result = try fixture.vault.run(["token", "pw", "--no-agent"] + (i % 4 == 0 ? ["--fresh"] : []), expectTokenOnStdout: true, timeout: 30)
                        if ![0, 1, 8].contains(result.status) || (result.status == 0) == result.stdout.isEmpty {
                            outcomes.append("worker \(worker) token \(i): exit \(result.status), \(result.stdout.count) bytes out: \(result.stderrText)")
                        }
                        if result.status == 0 { delivered.append(1) }
                    } catch {
                        outcomes.append("worker \(worker) token \(i): \(error)")
                    }
                }
            }.start()
        }
        group.wait()
        stop.append(true)
        while killer.isExecuting { usleep(50_000) }
        #expect(outcomes.values.isEmpty, "\(outcomes.values.prefix(3))")
        let records = try fixture.auditJSON().count - before
        // A token is printed only after its record committed; a commit whose answer was lost
        // may have written a record for a token that was withheld (exit 8).
        #expect(records >= delivered.values.count, "\(records) records for \(delivered.values.count) tokens")
        #expect(try vault.run(["verify"]).status == 0)
        expectNoLeaks(vault)
    }

    /// A team agent's cache hit after the first is one statement that commits only while
    /// everything the first one checked is unchanged (FORMAT.md §11.4). Counted in the
    /// server's statement log; each change falls back to the full transaction, which
    /// checks it: another process's record and token, a rotation, an administrator's cut
    /// of the newest record; and concurrent hits through one agent, with other writers,
    /// leave one intact chain.
    @Test("a team agent's repeated cache hit is one statement, and anything changed meanwhile sends it back to the full checks")
    func oneStatementCacheHit() throws {
        guard let server = try startPostgres() else { return }
        defer { server.stop() }
        let fixture = try Fixture(postgres: server)
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        let schema = String(vault.path.split(separator: "=").last!)
        _ = try server.psql("ALTER DATABASE vault SET log_statement = 'all'")
        var template = Array("/tmp/gv-run-XXXXXX".utf8CString)
        let runtime = String(cString: try #require(mkdtemp(&template)))
        let agentEnv = ["XDG_RUNTIME_DIR": runtime]
        defer {
            _ = try? vault.run(["lock"], env: agentEnv)
            try? FileManager.default.removeItem(atPath: runtime)
        }
        let log = server.directory + "/server.log"
        /// A token through the agent, and the statements the server ran for it.
        func agentToken(_ profile: String = "pw") throws -> (result: ProcessResult, statements: [String]) {
            let before = (try? FileManager.default.attributesOfItem(atPath: log)[.size] as? Int) ?? 0
            let result = try vault.run(["token", profile], env: agentEnv, removing: ["VAULT_PASSPHRASE"], expectTokenOnStdout: true)
            let handle = try #require(FileHandle(forReadingAtPath: log))
            defer { try? handle.close() }
            try handle.seek(toOffset: UInt64(before))
            let text = String(decoding: try handle.readToEnd() ?? Data(), as: UTF8.self)
            let statements = text.split(separator: "\n").filter { $0.contains("LOG:  execute") || $0.contains("LOG:  statement") }.map(String.init)
            return (result, statements)
        }
        /// The hit's statement in its own transaction: `BEGIN`, the statement, `COMMIT`.
        /// (Counted by what they are, not how many lines: the agent's header poll, a read
        /// transaction at most every 2 s, can land in the same window.)
        func isOneStatement(_ statements: [String]) -> Bool {
            statements.filter { $0.contains("WITH digest AS") }.count == 1 && statements.contains { $0.contains("COMMIT") }
                && !isFullTransaction(statements)
        }
        /// The full write transaction: the writer lock on every table.
        func isFullTransaction(_ statements: [String]) -> Bool {
            statements.contains { $0.contains("IN EXCLUSIVE MODE") }
        }
        #expect(try vault.run(["unlock", "--for", "5m"], env: agentEnv).status == 0)
        // The agent's first token is an exchange (the fixture cached none), its first cache
        // hit a transaction that checks everything, and the next one statement.
        _ = try agentToken()
        let first = try agentToken()
        #expect(first.result.status == 0 && isFullTransaction(first.statements), "the first hit is a transaction: \(first.statements.count)")
        let second = try agentToken()
        #expect(second.result.status == 0 && second.result.stdout == first.result.stdout)
        #expect(isOneStatement(second.statements), "one statement: \(second.statements.map { String($0.prefix(120)) })")

        // Another process's fresh token: a new record and a new cached token. The agent's
        // statement finds the head and the cache row changed, writes nothing, and the full
        // transaction delivers the new token; then one statement again.
        let fresh = try fixture.token("pw", ["--fresh", "--no-agent"])
        #expect(fresh.status == 0 && fresh.stdout != first.result.stdout)
        let afterFresh = try agentToken()
        #expect(afterFresh.result.status == 0 && afterFresh.result.stdout == fresh.stdout, "the new token, not the one the agent held")
        #expect(isFullTransaction(afterFresh.statements), "back to the transaction")
        #expect(isOneStatement(try agentToken().statements))

        // A rotation by another process (the profile row and its cached token change).
        let rotate = try vault.run(["rotate", "pw", "--secrets-stdin"], stdin: Data(
            #"{"client_secret":"\#(fixture.clientSecret)","password":"\#(fixture.password)"}"#.utf8))
        #expect(rotate.status == 0, "\(rotate.stderrText)")
        let afterRotate = try agentToken()
        #expect(afterRotate.result.status == 0 && afterRotate.result.stdout != fresh.stdout, "a token of the new secret versions")
        #expect(isFullTransaction(afterRotate.statements))

        // Hits of two profiles interleaved (each moves the head the other's statement
        // expects: it follows the newest record this agent wrote), concurrent hits through
        // the agent, and other processes' tokens meanwhile: every one delivered, one chain.
        #expect(try agentToken("cc").result.status == 0)
        let failures = LockedArray<String>()
        let group = DispatchGroup()
        for worker in 0..<5 {
            group.enter()
            Thread {
                defer { group.leave() }
                for i in 0..<12 {
                    let result = worker == 4
                        ? try? fixture.token(i % 2 == 0 ? "pw" : "cc", i % 3 == 0 ? ["--fresh", "--no-agent"] : ["--no-agent"])
                        : try? vault.run(["token", (worker + i) % 2 == 0 ? "pw" : "cc"], env: agentEnv, removing: ["VAULT_PASSPHRASE"],
                                         expectTokenOnStdout: true)
                    if result?.status != 0 { failures.append("worker \(worker) token \(i): \(result?.stderrText ?? "did not run")") }
                }
            }.start()
        }
        group.wait()
        #expect(failures.values.isEmpty, "\(failures.values.prefix(3))")
        let verify = try vault.run(["verify"])
        #expect(verify.status == 0, "\(verify.stdoutText) \(verify.stderrText)")
        let records = try JSONSerialization.jsonObject(with: vault.run(["audit", "--json", "--all"]).stdout) as? [[String: Any]] ?? []
        let seqs = records.compactMap { $0["seq"] as? Int }
        #expect(Set(seqs).count == seqs.count && seqs.max() == seqs.count, "one linear chain 1…n")

        // An administrator holds the head's row lock (a no-op update) and edits the
        // environment in the same transaction: the hit's statement, which waited for that
        // lock, must not commit after the edit on its earlier snapshot (an outside review's
        // did, at READ COMMITTED). It fails, and the full checks refuse the edit.
        #expect(isFullTransaction(try agentToken().statements))
        #expect(isOneStatement(try agentToken().statements))
        let url = try server.psql("SELECT token_url FROM \(schema).environment WHERE name = 'local'", database: "vault")
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let editor = Thread {
            _ = try? server.psql("""
                BEGIN; UPDATE \(schema).audit_head SET seq = seq WHERE id = 1;
                UPDATE \(schema).environment SET token_url = 'http://127.0.0.1:1/edited' WHERE name = 'local';
                SELECT pg_sleep(2); COMMIT;
                """, database: "vault")
        }
        editor.start()
        usleep(700_000)
        let raced = try agentToken()
        #expect(raced.result.status == 7 && raced.result.stdout.isEmpty && raced.result.stderrText.contains("environment 'local'"),
                "\(raced.result.status): \(raced.result.stderrText)")
        while editor.isExecuting { usleep(50_000) }
        _ = try server.psql("UPDATE \(schema).environment SET token_url = '\(url)' WHERE name = 'local'", database: "vault")
        #expect(try vault.run(["verify"]).status == 0)

        // A statement-level trigger fires even when no row matches: an outside review's wrote
        // a row and moved the session's search_path, and both were kept while the statement
        // was committed on its own. Now it is rolled back (and its connection closed): the
        // trigger's row is gone, the full checks name the trigger, no token.
        #expect(isFullTransaction(try agentToken().statements))
        #expect(isOneStatement(try agentToken().statements))
        _ = try server.psql("""
            CREATE SCHEMA evil; CREATE TABLE evil.log (note text);
            CREATE FUNCTION evil.spy() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
            BEGIN INSERT INTO evil.log VALUES (TG_TABLE_NAME); PERFORM pg_catalog.set_config('search_path', 'evil', false); RETURN NULL; END $$;
            CREATE TRIGGER spy BEFORE UPDATE ON \(schema).audit_head FOR EACH STATEMENT EXECUTE FUNCTION evil.spy();
            """, database: "vault")
        let spied = try agentToken()
        #expect(spied.result.status == 7 && spied.result.stdout.isEmpty && spied.result.stderrText.contains("trigger spy"), "\(spied.result.stderrText)")
        #expect(try server.psql("SELECT count(*) FROM evil.log", database: "vault").trimmingCharacters(in: .whitespacesAndNewlines) == "0",
                "nothing the trigger did was committed")
        _ = try server.psql("DROP TRIGGER spy ON \(schema).audit_head; DROP SCHEMA evil CASCADE", database: "vault")
        try awaitAgentEnd(vault, env: agentEnv)
        #expect(try vault.run(["verify"]).status == 0)

        // An administrator cuts the newest record (and leaves the head): the statement finds
        // the trail not ending where this agent left it, and the full checks refuse.
        #expect(try vault.run(["unlock", "--for", "5m"], env: agentEnv).status == 0)
        #expect(isFullTransaction(try agentToken().statements))
        #expect(isOneStatement(try agentToken().statements))
        _ = try server.psql("DELETE FROM \(schema).audit_record WHERE seq = (SELECT max(seq) FROM \(schema).audit_record)", database: "vault")
        let cut = try agentToken()
        #expect(cut.result.status == 7 && cut.result.stdout.isEmpty, "\(cut.result.stderrText)")
        #expect(isFullTransaction(cut.statements))
        _ = try server.psql("ALTER DATABASE vault RESET log_statement")
        expectNoLeaks(vault)
    }

    @Test("a team agent's URL link: made for the unlock's URL, removed with a killed agent's socket by the next client")
    func urlLink() throws {
        guard let server = try startPostgres() else { return }
        defer { server.stop() }
        let fixture = try Fixture(postgres: server)
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        var template = Array("/tmp/gv-run-XXXXXX".utf8CString)
        let runtime = String(cString: try #require(mkdtemp(&template)))
        defer { try? FileManager.default.removeItem(atPath: runtime) }
        #expect(try vault.run(["unlock", "--for", "5m"], env: ["XDG_RUNTIME_DIR": runtime]).status == 0)
        let directory = runtime + "/gbg-vault"
        let entries = try FileManager.default.contentsOfDirectory(atPath: directory)
        let link = try #require(entries.first { $0.hasPrefix("agent-url-") })
        let socket = try #require(entries.first { $0.hasPrefix("agent-pg-") && $0.hasSuffix(".sock") })
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: directory + "/" + link) == socket)
        let status = try JSONSerialization.jsonObject(with: vault.run(["status", "--json"], env: ["XDG_RUNTIME_DIR": runtime]).stdout) as? [String: Any]
        let pid = try #require(status?["pid"] as? Int)
        kill(pid_t(pid), SIGKILL)
        usleep(300_000)
        #expect(FileManager.default.fileExists(atPath: directory + "/" + socket), "SIGKILL leaves the socket")
        let fallback = try vault.run(["token", "pw"], env: ["XDG_RUNTIME_DIR": runtime], expectTokenOnStdout: true)
        #expect(fallback.status == 0 && fallback.stderrText.contains("stale socket was removed"), "\(fallback.stderrText)")
        LeakScanner.shared.register(token: fallback.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines))
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).isEmpty, "the socket and its link are gone")
        expectNoLeaks(vault)
    }

    /// TLS: verify-full against a server whose certificate a test CA signed.
    @Test("sslmode=require: SCRAM with the real server works; a server in the middle asking for a cleartext or MD5 password, or sending before the startup message, gets nothing")
    func requireRefusesRevealingMethods() throws {
        guard let server = try startPostgres(tls: true) else { return }
        defer { server.stop() }
        let vault = TestVault(postgres: server)
        let url = server.url(schema: "req_vault", sslmode: "require", host: "127.0.0.1")
        let initialised = try vault.run(["init", "--vault", url])
        #expect(initialised.status == 0, "SCRAM over unverified TLS is fine: \(initialised.stderrText)")
        #expect(try vault.run(["list", "--vault", url]).status == 0)
        let doctor = try vault.run(["doctor", "--vault", url])
        #expect(doctor.stdoutText.contains("sslmode=require"), "\(doctor.stdoutText)")

        for mode in ["cleartext", "md5", "early"] {
            let log = vault.directory + "/fake-\(mode).log"
            let fake = try ChildProcess("/usr/bin/env", ["python3", "-u", repositoryRoot.appendingPathComponent("Tests/tools/fake_pg_server.py").path,
                                                         server.directory + "/server.crt", server.directory + "/server.key", mode, log],
                                        environment: ["PATH": "/usr/local/bin:/usr/bin:/bin"])
            defer { fake.kill(SIGKILL); _ = fake.wait(timeout: 5) }
            fake.closeStdin()
            let output = OutputCollector(fake.stdoutDescriptor)
            let deadline = Date().addingTimeInterval(10)
            // python3 -u writes "PORT", " ", the number and the newline separately: wait for the whole line.
            while Date() < deadline, !(output.text.hasPrefix("PORT ") && output.text.hasSuffix("\n")) { usleep(20_000) }
            let port = try #require(Int(output.text.dropFirst(5).trimmingCharacters(in: .whitespacesAndNewlines)), "the fake server's port: \(output.text)")
            let target = "postgres://vault_admin@127.0.0.1:\(port)/vault?sslmode=require&schema=req_vault"
            let result = try vault.run(["list", "--vault", target])
            #expect(result.status == 1, "\(mode): \(result.stderrText)")
            // (An early message normally lands before the startup message goes out, and is
            // refused as such; were it to land after, PostgresNIO refuses it as out of turn.)
            if mode != "early" {
                let why = mode == "cleartext" ? "in clear text" : "MD5"
                #expect(result.stderrText.contains(why) && result.stderrText.contains("the password was not sent"), "\(mode): \(result.stderrText)")
            }
            let seen = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            #expect(seen.contains(mode == "early" ? "sent early Z" : "sent R\(mode == "cleartext" ? 3 : 5)"), "\(mode): the fake server: \(seen)")
            #expect(!seen.contains("received p"), "\(mode): a password message reached the fake server: \(seen)")
        }
        expectNoLeaks(vault)
    }

    @Test("TLS: verify-full with the CA works; without it, or under another name, the connection is refused")
    func tls() throws {
        guard let server = try startPostgres(tls: true) else { return }
        defer { server.stop() }
        let vault = TestVault(postgres: server)
        let ca = try #require(server.caFile)
        let good = server.url(schema: "tls_vault", sslmode: "verify-full", host: "localhost")
        let initialised = try vault.run(["init", "--vault", good], env: ["PGSSLROOTCERT": ca])
        #expect(initialised.status == 0, "\(initialised.stderrText)")
        let doctor = try vault.run(["doctor", "--vault", good + "&sslrootcert=" + ca])
        #expect(doctor.stdoutText.contains("certificate and host name verified"), "\(doctor.stdoutText) \(doctor.stderrText)")
        let noCA = try vault.run(["list", "--vault", good])
        #expect(noCA.status == 1 && noCA.stderrText.contains("TLS"), "an unknown CA is refused: \(noCA.stderrText)")
        // The certificate names only `localhost`: reaching the same server by its address
        // under verify-full must fail the name check.
        let wrongName = try vault.run(["list", "--vault", server.url(schema: "tls_vault", sslmode: "verify-full", host: "127.0.0.1")],
                                      env: ["PGSSLROOTCERT": ca])
        #expect(wrongName.status == 1 && wrongName.stderrText.contains("TLS"), "a certificate for another name is refused: \(wrongName.stderrText)")
        let verifyCA = try vault.run(["list", "--vault", server.url(schema: "tls_vault", sslmode: "verify-ca", host: "127.0.0.1")],
                                     env: ["PGSSLROOTCERT": ca])
        #expect(verifyCA.status == 0, "verify-ca checks the chain only: \(verifyCA.stderrText)")
        expectNoLeaks(vault)
    }
}
