import Foundation
import Testing
import VaultTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Members (FORMAT.md §10): identities, key slots, removal, signed audit records, end to
/// end with the binary, checked from outside by the independent reader.
@Suite("members: identities, key slots, signed audit records")
struct MemberTests {
    @Test("three members fetch tokens; audit names who; member remove locks a member out of everything written afterwards")
    func team() throws {
        let team = try TeamFixture()
        defer { team.fixture.stub.stop() }
        let vault = team.vault
        try team.addBoth()
        let members = try JSONSerialization.jsonObject(with: vault.run(["member", "list", "--json"]).stdout) as? [[String: Any]]
        #expect(members?.compactMap { $0["name"] as? String } == ["owner", "alice", "ci"])
        #expect(members?.allSatisfy { ($0["recipient"] as? String)?.hasPrefix("gbgv1") == true && $0["has_slot"] as? Bool == true } == true)

        // Each member fetches tokens its own way.
        #expect(try team.fixture.token("pw", ["--fresh"]).status == 0)
        #expect(try team.run(as: team.alicePath, ["token", "pw", "--fresh"], token: true).status == 0)
        #expect(try team.run(as: team.ciPath, ["token", "cc", "--fresh"], token: true).status == 0)
        #expect(try team.run(as: team.ciPath, ["token", "cc"], token: true).status == 0)
        let records = try team.audit(["--limit", "4"])
        #expect(records.compactMap { $0["member"] as? String } == ["ci", "ci", "alice", "owner"])
        #expect(try team.audit(["--member", "ci"]).count == 2)
        #expect(try team.audit(["--member", "alice"]).compactMap { $0["action"] as? String } == ["token"])
        let table = try vault.run(["audit", "--limit", "2"]).stdoutText
        #expect(table.contains("MEMBER") && table.contains(" ci "))
        let verified = try team.run(as: team.ciPath, ["audit", "verify"])
        #expect(verified.status == 0, "\(verified.stderrText)")

        // The independent reader opens the vault with each key source and checks every signature.
        for (extra, name) in [([String](), "owner"), (["--identity", team.alicePath], "alice"), (["--identity", team.ciPath], "ci")] {
            let read = try independentReader(path: vault.path, passphrase: vault.passphrase, extra: extra, identityPassphrase: team.alicePassphrase)
            let report = try #require(read.report, "\(name): \(read.error ?? "")")
            #expect(report["member"] as? String == name)
            #expect((report["profiles"] as? [String: [String: String]])?["pw"]?["client_secret/v1"] == team.fixture.clientSecret)
            #expect((report["signatures"] as? Int ?? 0) == (report["audit_records"] as? Int ?? -1))
        }

        // Remove ci: new keys for the rest; ci's identity opens nothing written afterwards.
        let removed = try vault.run(["member", "remove", "ci"])
        #expect(removed.status == 0, "\(removed.stderrText)")
        #expect(removed.stderrText.contains("GBG credentials") && removed.stderrText.contains("vault rotate PROFILE --verify"))
        let lockedOut = try team.run(as: team.ciPath, ["token", "cc"])
        #expect(lockedOut.status == 3, "\(lockedOut.stderrText)")
        #expect(lockedOut.stderrText.contains("no key slot"))
        try vault.sql("PRAGMA wal_checkpoint(TRUNCATE)")
        let copy = vault.directory + "/copy-after-removal.db"
        try FileManager.default.copyItem(atPath: vault.path, toPath: copy)
        let ciRead = try independentReader(path: copy, passphrase: "", extra: ["--identity", team.ciPath])
        #expect(ciRead.report == nil && ciRead.error?.contains("no key slot") == true, "\(ciRead.error ?? "opened")")
        let aliceRead = try independentReader(path: copy, passphrase: "", extra: ["--identity", team.alicePath], identityPassphrase: team.alicePassphrase)
        #expect(aliceRead.report?["member"] as? String == "alice", "\(aliceRead.error ?? "")")
        #expect(try team.run(as: team.alicePath, ["token", "pw"], token: true).status == 0)
        let after = try JSONSerialization.jsonObject(with: vault.run(["member", "list", "--json"]).stdout) as? [[String: Any]]
        #expect(after?.first { $0["name"] as? String == "ci" }?["removed_seq"] as? Int != nil)
        #expect(try vault.run(["audit", "verify"]).status == 0, "removed members' old records still verify")

        // What must be refused.
        #expect(try vault.run(["member", "remove", "owner"]).status == 64)
        #expect(try vault.run(["member", "add", "ci", "--recipient", team.recipient(team.ciPath)]).status == 1, "names are never reused")
        let recipient = try team.recipient(team.ciPath)
        let mistyped = String(recipient.dropLast()) + (recipient.last == "A" ? "B" : "A")
        let before = try vault.sql("SELECT count(*) FROM member").stdoutText
        for bad in [mistyped, "age1" + recipient.dropFirst(5), String(recipient.dropLast(3)), recipient + "x"] {
            let result = try vault.run(["member", "add", "mallory", "--recipient", bad])
            #expect(result.status == 64, "\(bad): \(result.stderrText)")
        }
        #expect(try vault.sql("SELECT count(*) FROM member").stdoutText == before, "nothing stored")
        chmod(team.ciPath, 0o644)
        #expect(try team.run(as: team.ciPath, ["token", "cc"]).status == 64, "an identity file others can read is refused")
        chmod(team.ciPath, 0o600)
        let wrong = try vault.run(["token", "pw"], env: ["VAULT_IDENTITY_FILE": team.alicePath, "VAULT_IDENTITY_PASSPHRASE": "not hers"],
                                  removing: ["VAULT_PASSPHRASE"])
        #expect(wrong.status == 3)
        expectNoLeaks(vault)
    }

    @Test("a member unlocks a session with its identity; the agent signs what it does as that member")
    func agentAsMember() throws {
        let team = try TeamFixture()
        defer { team.fixture.stub.stop() }
        let vault = team.vault
        try team.addBoth()
        var template = Array("/tmp/gv-XXXXXX".utf8CString)
        let runtime = String(cString: try #require(mkdtemp(&template)))
        defer { try? FileManager.default.removeItem(atPath: runtime) }
        let unlock = try vault.run(["unlock", "--for", "5m"], env: ["XDG_RUNTIME_DIR": runtime, "VAULT_IDENTITY_FILE": team.alicePath,
                                                                    "VAULT_IDENTITY_PASSPHRASE": team.alicePassphrase],
                                   removing: ["VAULT_PASSPHRASE"])
        #expect(unlock.status == 0, "\(unlock.stderrText)")
        defer { _ = try? vault.run(["lock"], env: ["XDG_RUNTIME_DIR": runtime]) }
        // No key source at all: the agent (alice) serves, and signs as alice.
        let token = try vault.run(["token", "pw", "--fresh"], env: ["XDG_RUNTIME_DIR": runtime], removing: ["VAULT_PASSPHRASE"],
                                  expectTokenOnStdout: true)
        #expect(token.status == 0, "\(token.stderrText)")
        LeakScanner.shared.register(token: token.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines))
        // Adding a member is never the agent's to do: it needs a key of the caller's own.
        let add = try vault.run(["member", "add", "bob", "--recipient", team.recipient(team.ciPath)],
                                env: ["XDG_RUNTIME_DIR": runtime], removing: ["VAULT_PASSPHRASE"])
        #expect(add.status == 64, "no passphrase or identity here, whatever the agent holds: \(add.stderrText)")
        // Removing a member re-keys, which only the owner can (its new slot needs the owner's
        // endorsement): refused through a member's agent, nothing changed.
        let refused = try vault.run(["member", "remove", "ci"], env: ["XDG_RUNTIME_DIR": runtime], removing: ["VAULT_PASSPHRASE"])
        #expect(refused.status == 64, "no passphrase source here: \(refused.stderrText)")
        let asAlice = try team.run(as: team.alicePath, ["member", "remove", "ci"])
        #expect(asAlice.status == 64 && asAlice.stderrText.contains("only the owner"), "\(asAlice.stderrText)")
        let added = try vault.run(["identity", "new", "--no-passphrase", "--out", vault.directory + "/bob.identity"])
        #expect(added.status == 0)
        // Only the owner adds members (it signs each member's keys): alice's own identity cannot.
        let byAlice = try team.run(as: team.alicePath, ["member", "add", "bob", "--recipient", team.recipient(vault.directory + "/bob.identity")])
        #expect(byAlice.status == 64 && byAlice.stderrText.contains("only the owner"), "\(byAlice.stderrText)")
        #expect(try vault.run(["member", "add", "bob", "--recipient", team.recipient(vault.directory + "/bob.identity")]).status == 0)
        let records = try team.audit(["--limit", "2"])
        #expect(records.compactMap { $0["member"] as? String } == ["owner", "alice"], "\(records)")
        #expect(records.compactMap { $0["action"] as? String } == ["member-add", "token"])
        // The owner removes ci; the agent (alice) ends with the key change, and a new session goes on.
        #expect(try vault.run(["member", "remove", "ci"], env: ["XDG_RUNTIME_DIR": runtime]).status == 0)
        let relock = try vault.run(["unlock", "--for", "5m"], env: ["XDG_RUNTIME_DIR": runtime, "VAULT_IDENTITY_FILE": team.alicePath,
                                                                    "VAULT_IDENTITY_PASSPHRASE": team.alicePassphrase],
                                   removing: ["VAULT_PASSPHRASE"])
        #expect(relock.status == 0, "\(relock.stderrText)")
        let again = try vault.run(["token", "pw", "--fresh"], env: ["XDG_RUNTIME_DIR": runtime], removing: ["VAULT_PASSPHRASE"],
                                  expectTokenOnStdout: true)
        #expect(again.status == 0, "\(again.stderrText)")
        LeakScanner.shared.register(token: again.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines))
        #expect(try vault.run(["audit", "verify"]).status == 0)
        expectNoLeaks(vault)
    }

    @Test("a default identity that is not a member of this vault does not stand in the owner's way: the passphrase is asked for; one that is a member is used")
    func defaultIdentityOfAnotherVault() throws {
        let team = try TeamFixture()
        defer { team.fixture.stub.stop() }
        let vault = team.vault
        // The owner makes a default identity (to join someone else's vault).
        #expect(try vault.run(["identity", "new", "--no-passphrase"]).status == 0)
        let defaultPath = vault.directory + "/.local/share/gbg-vault/identity"
        try team.registerSecrets(ofIdentity: defaultPath)
        // With no passphrase source: not "no key slot" (exit 3) but the passphrase way,
        // which here has no terminal to ask on (exit 64); with one, everything works.
        for arguments in [["token", "pw"], ["member", "add", "alice", "--recipient", try team.recipient(team.alicePath)], ["rekey"]] {
            let asked = try vault.run(arguments, removing: ["VAULT_PASSPHRASE"])
            #expect(asked.status == 64 && asked.stderrText.contains("no terminal"), "\(arguments): \(asked.status) \(asked.stderrText)")
        }
        #expect(try vault.run(["member", "add", "alice", "--recipient", try team.recipient(team.alicePath)]).status == 0)
        // Once the default identity is a member here, it is used without a passphrase.
        #expect(try vault.run(["member", "add", "me", "--recipient", try team.recipient(defaultPath)]).status == 0)
        let member = registeringToken(try vault.run(["token", "pw"], removing: ["VAULT_PASSPHRASE"], expectTokenOnStdout: true))
        #expect(member.status == 0, "\(member.stderrText)")
        #expect(try team.audit(["--member", "me"]).count == 1)
        expectNoLeaks(vault)
    }

    @Test("tampering with members, slots and signatures is caught: exit 7, or named by audit verify",
          arguments: [
            "flip a signature byte", "re-attribute a record to another member", "edit a member's signing key",
            "swap two members' key slots", "delete a member's row", "damage the owner's key slot",
          ])
    func tamper(_ attack: String) throws {
        let team = try TeamFixture()
        defer { team.fixture.stub.stop() }
        let vault = team.vault
        try team.addBoth()
        #expect(try team.run(as: team.ciPath, ["token", "cc", "--fresh"], token: true).status == 0)
        let ciRecord = try #require(try team.audit(["--member", "ci", "--limit", "1"]).first?["seq"] as? Int)
        let statement: String
        switch attack {
        case "flip a signature byte":
            statement = "UPDATE audit_record SET signature = CAST(CASE WHEN substr(signature, 1, 1) = X'00' THEN X'01' ELSE X'00' END || substr(signature, 2) AS BLOB) WHERE seq = \(ciRecord)"
        case "re-attribute a record to another member":
            statement = "UPDATE audit_record SET member = 'alice' WHERE seq = \(ciRecord)"
        case "edit a member's signing key":
            statement = "UPDATE member SET sign_public_key = (SELECT sign_public_key FROM member WHERE name = 'alice') WHERE name = 'ci'"
        case "swap two members' key slots":
            statement = """
                UPDATE key_slot SET sealed = CASE member WHEN 'ci' THEN (SELECT sealed FROM key_slot WHERE member = 'alice')
                                                        ELSE (SELECT sealed FROM key_slot WHERE member = 'ci') END
                WHERE member IN ('ci', 'alice')
                """
        case "damage the owner's key slot":
            statement = "UPDATE key_slot SET sealed = CAST(CASE WHEN substr(sealed, 1, 1) = X'00' THEN X'01' ELSE X'00' END || substr(sealed, 2) AS BLOB) WHERE member = 'owner'"
        default:
            statement = "PRAGMA foreign_keys = OFF; DELETE FROM key_slot WHERE member = 'ci'; DELETE FROM member WHERE name = 'ci'"
        }
        #expect(try vault.sql(statement).status == 0)
        let check = try vault.run(["audit", "verify"])
        #expect(check.status == 7, "\(attack): \(check.stdoutText) \(check.stderrText)")
        if attack.contains("signature") || attack.contains("re-attribute") || attack.contains("delete") {
            #expect((check.stdoutText + check.stderrText).contains("record \(ciRecord)"), "\(attack) names the record: \(check.stdoutText)")
        }
        if attack.contains("owner") {
            #expect(check.stderrText.contains("owner's key slot does not open"), "not a wrong passphrase: \(check.stderrText)")
        }
        if attack.contains("swap") {
            let asCI = try team.run(as: team.ciPath, ["token", "cc"])
            #expect(asCI.status == 7, "\(asCI.stderrText)")
        }
        let read = try independentReader(path: vault.path, passphrase: vault.passphrase)
        #expect(read.report == nil, "the independent reader refuses it too (\(attack))")
        expectNoLeaks(vault)
    }

    @Test("rekeys by the owner race member add and remove (by the owner) and tokens by another member: every command succeeds, the chain and every signature verify")
    func memberRace() throws {
        let team = try TeamFixture()
        defer { team.fixture.stub.stop() }
        let vault = team.vault
        try team.addBoth()
        let rounds = Int(ProcessInfo.processInfo.environment["GBG_VAULT_MEMBER_RACE"] ?? "") ?? 30
        let failures = LockedArray<String>()
        let done = LockedArray<Bool>()
        let counts = LockedArray<String>()
        let group = DispatchGroup()
        // Real threads (not the dispatch pool, which on 2 cores may run the loops one after another).
        func start(_ body: @escaping @Sendable () -> Void) {
            group.enter()
            Thread { body(); group.leave() }.start()
        }
        start {
            for round in 0..<rounds {
                if let r = try? vault.run(["rekey"]), r.status != 0 { failures.append("rekey \(round): \(r.status) \(r.stderrText)") }
                usleep(20_000)
            }
            done.append(true)
        }
        start {
            var i = 0
            while done.values.isEmpty {
                let path = vault.directory + "/extra-\(i).identity"
                guard (try? vault.run(["identity", "new", "--no-passphrase", "--out", path]))?.status == 0,
                      let recipient = try? team.recipient(path) else { failures.append("identity \(i)"); break }
                if let r = try? vault.run(["member", "add", "extra\(i)", "--recipient", recipient]), r.status != 0 {
                    failures.append("member add \(i): \(r.status) \(r.stderrText)")
                }
                if i % 2 == 1, let r = try? vault.run(["member", "remove", "extra\(i - 1)"]), r.status != 0 {
                    failures.append("member remove \(i - 1): \(r.status) \(r.stderrText)")
                }
                counts.append("member")
                i += 1
            }
        }
        start {
            var i = 0
            while done.values.isEmpty {
                if let r = try? team.run(as: team.ciPath, ["token", i % 2 == 0 ? "pw" : "cc"], token: true), r.status != 0 {
                    failures.append("token as ci \(i): \(r.status) \(r.stderrText)")
                }
                counts.append("token")
                i += 1
            }
        }
        group.wait()
        #expect(failures.values.isEmpty, "\(failures.values.prefix(5))")
        let read = try independentReader(path: vault.path, passphrase: vault.passphrase)
        let report = try #require(read.report, "\(read.error ?? "")")
        #expect(report["key_epoch"] as? Int ?? 0 >= rounds + 1)
        #expect(report["signatures"] as? Int == report["audit_records"] as? Int)
        #expect(counts.values.contains("token") && counts.values.contains("member"), "the loops ran concurrently")
        print("member race: \(rounds) rekeys by the owner, \(counts.values.filter { $0 == "member" }.count) member changes (added by alice, removed by the owner), "
              + "\(counts.values.filter { $0 == "token" }.count) tokens by ci, key epoch \(report["key_epoch"] ?? 0), \(report["audit_records"] ?? 0) records")
        #expect(try vault.run(["verify"]).status == 0)
        #expect(try team.run(as: team.ciPath, ["audit", "verify"]).status == 0)
        expectNoLeaks(vault)
    }

    @Test("SIGKILL during member remove: exactly one of the old and new key sets opens the vault, every secret intact")
    func killedRemoval() throws {
        let team = try TeamFixture()
        defer { team.fixture.stub.stop() }
        let vault = team.vault
        try team.addBoth()
        try vault.sql("PRAGMA wal_checkpoint(TRUNCATE)")
        let pristine = vault.directory + "/pristine.db"
        try FileManager.default.copyItem(atPath: vault.path, toPath: pristine)
        let rounds = Int(ProcessInfo.processInfo.environment["GBG_VAULT_MEMBER_KILLS"] ?? "") ?? 25
        var generator = SeededGenerator(seed: 20261129)
        // How long a whole `member remove` takes here: kills land before, during and after its commit.
        let started = Date()
        for suffix in ["", "-wal", "-shm"] { unlink(vault.path + suffix) }
        try FileManager.default.copyItem(atPath: pristine, toPath: vault.path)
        #expect(try vault.run(["member", "remove", "ci"]).status == 0)
        let span = UInt32(min(2_000_000, max(20_000, Date().timeIntervalSince(started) * 1_200_000)))
        var outcomes = (old: 0, new: 0)
        for round in 0..<rounds {
            for suffix in ["", "-wal", "-shm"] { unlink(vault.path + suffix) }
            try FileManager.default.copyItem(atPath: pristine, toPath: vault.path)
            vault.forgetKnownVaults()  // each round starts from the restored copy, on purpose
            let child = try ChildProcess(Binaries.vault, ["member", "remove", "ci"], environment: vault.environment())
            child.closeStdin()
            usleep(UInt32.random(in: 0...span, using: &generator))
            child.kill(SIGKILL)
            _ = child.wait(timeout: 30)
            let owner = try independentReader(path: vault.path, passphrase: vault.passphrase)
            let report = try #require(owner.report, "round \(round): \(owner.error ?? "")")
            #expect((report["profiles"] as? [String: [String: String]])?["pw"]?["password/v1"] == team.fixture.password, "round \(round)")
            #expect((report["profiles"] as? [String: [String: String]])?["cc"]?["client_secret/v1"] == team.fixture.ccSecret, "round \(round)")
            let epoch = report["key_epoch"] as? Int
            let ci = try independentReader(path: vault.path, passphrase: "", extra: ["--identity", team.ciPath])
            if epoch == 1 {
                outcomes.old += 1
                #expect(ci.report?["member"] as? String == "ci", "round \(round): the old keys still open for ci")
            } else {
                outcomes.new += 1
                #expect(epoch == 2 && ci.report == nil, "round \(round): the new keys are not ci's")
            }
            #expect(try vault.run(["audit", "verify"]).status == 0, "round \(round)")
        }
        print("member remove kills: \(rounds) rounds, old keys: \(outcomes.old), new keys: \(outcomes.new)")
        expectNoLeaks(vault)
    }
}
