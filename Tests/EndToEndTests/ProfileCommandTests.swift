import Foundation
import Testing
import VaultTestSupport

@Suite("profile commands, end to end")
struct ProfileCommandTests {
    @Test("add in one process, exchange in another: both grants, 1 byte to 4 KiB and non-ASCII secrets",
          arguments: [1, 17, 255, 4096])
    func roundTrip(secretLength: Int) throws {
        let vault = TestVault()
        try vault.initialise()
        let base = "sécret-🔑-" + UUID().uuidString
        let secret = String((String(repeating: base, count: secretLength / base.count + 2)).unicodeScalars.prefix(secretLength).map(Character.init))
        let clientSecret = secretLength == 1 ? "Z" : secret
        let password = String(secret.reversed())
        let accounts = try writeAccounts(
            in: vault.directory,
            clients: [["client_id": "cid", "client_secret": clientSecret]],
            users: [["username": "usér", "password": password]])
        let stub = try StubServer(accounts: accounts)
        defer { stub.stop() }
        #expect(try vault.run(["env", "add", "local", "--token-url", stub.tokenURL]).status == 0)
        let name = "prøfile-名前-\(secretLength)"
        #expect(try vault.add(name, clientID: "cid", clientSecret: clientSecret, username: "usér", password: password, env: "local").status == 0)
        #expect(try vault.add("cc-\(secretLength)", clientID: "cid", clientSecret: clientSecret, grant: "client-credentials", env: "local").status == 0)
        for profile in [name, "cc-\(secretLength)"] {
            let result = try vault.run(["token", profile, "--format", "json"], expectTokenOnStdout: true)
            #expect(result.status == 0, "\(result.stderrText)")
            let object = try JSONSerialization.jsonObject(with: result.stdout) as? [String: Any]
            let token = try #require(object?["access_token"] as? String)
            LeakScanner.shared.register(token: token)
            #expect(object?["environment"] as? String == "local")
        }
        let list = try vault.run(["list", "--json"])
        let profiles = try JSONSerialization.jsonObject(with: list.stdout) as? [[String: Any]]
        #expect(profiles?.compactMap { $0["name"] as? String }.contains(name) == true)
        expectNoLeaks(vault)
    }

    @Test("wrong passphrase exits 3 and changes nothing; empty passphrase and no source are usage errors")
    func passphraseFailures() throws {
        let vault = TestVault()
        try vault.initialise()
        try vault.add("p", clientID: "c", clientSecret: "client-secret-value", username: "u", password: "password-value")
        let before = try vault.sql("SELECT hex(ciphertext) FROM secret_version ORDER BY 1; SELECT count(*) FROM audit_record;").stdoutText

        let wrong = try vault.run(["rotate", "p", "--secrets-stdin"], env: ["VAULT_PASSPHRASE": "not the passphrase"],
                                  stdin: Data(#"{"client_secret":"new-secret-1","password":"new-password-1"}"#.utf8))
        #expect(wrong.status == 3)
        #expect(wrong.stderrText.contains("wrong passphrase"))
        #expect(try vault.sql("SELECT hex(ciphertext) FROM secret_version ORDER BY 1; SELECT count(*) FROM audit_record;").stdoutText == before)

        let empty = TestVault(passphrase: "")
        let refused = try empty.run(["init"])
        #expect(refused.status == 64)
        #expect(refused.stderrText.contains("empty passphrase"))
        #expect(!FileManager.default.fileExists(atPath: empty.path))

        let started = Date()
        let noSource = try vault.run(["token", "p"], removing: ["VAULT_PASSPHRASE"], timeout: 20)
        #expect(noSource.status == 64)
        #expect(noSource.stderrText.contains("no terminal"))
        #expect(Date().timeIntervalSince(started) < 15)

        let again = try vault.run(["init"])
        #expect(again.status == 1)
        #expect(again.stderrText.contains("already exists"))
        #expect(try vault.sql("SELECT hex(ciphertext) FROM secret_version ORDER BY 1; SELECT count(*) FROM audit_record;").stdoutText == before)

        let passFile = vault.directory + "/pass.txt"
        try Data((vault.passphrase + "\n").utf8).write(to: URL(fileURLWithPath: passFile))
        #expect(try vault.run(["audit", "verify", "--passphrase-file", passFile], removing: ["VAULT_PASSPHRASE"]).status == 0)
        #expect(try vault.run(["audit", "verify"], env: ["VAULT_PASSPHRASE_FILE": passFile, "VAULT_PASSPHRASE": "wrong"]).status == 0)

        let missing = try vault.run(["list"], env: ["VAULT_PATH": vault.directory + "/nope.db"])
        #expect(missing.status == 6)
        // --vault and --passphrase-file are global: before or after the subcommand.
        #expect(try vault.run(["--vault", vault.path, "list"], env: ["VAULT_PATH": vault.directory + "/nope.db"]).status == 0)
        #expect(try vault.run(["--vault=\(vault.path)", "--passphrase-file", passFile, "audit", "verify"],
                              env: ["VAULT_PATH": "/nonexistent"], removing: ["VAULT_PASSPHRASE"]).status == 0)
        #expect(try vault.run(["audit", "verify", "--vault", vault.path]).status == 0)
        expectNoLeaks(vault)
    }

    @Test("secrets are never accepted as argument values")
    func noSecretArguments() throws {
        let vault = TestVault()
        try vault.initialise()
        let result = try vault.run(["add", "p", "--client-id", "c", "--username", "u", "--client-secret", "oops"])
        #expect(result.status == 64)
        let both = try vault.run(["add", "p", "--client-id", "c", "--username", "u", "--secrets-stdin", "--secrets-from-env"])
        #expect(both.status == 64)
        #expect(both.stderrText.contains("--secrets-from-env") && both.stderrText.contains("--secrets-stdin"))
    }

    @Test("passwd: old passphrase stops working, new works, ciphertexts unchanged; rekey changes every ciphertext")
    func passwdAndRekey() throws {
        let fixture = try Fixture()
        let vault = fixture.vault
        let ciphertexts = { try vault.sql("SELECT hex(nonce) || hex(ciphertext) FROM secret_version ORDER BY profile_id, field, version").stdoutText }
        let before = try ciphertexts()
        let newPassphrase = "a new passphrase " + UUID().uuidString
        LeakScanner.shared.register(secret: newPassphrase)
        let passwd = try vault.run(["passwd"], env: ["VAULT_NEW_PASSPHRASE": newPassphrase])
        #expect(passwd.status == 0, "\(passwd.stderrText)")
        #expect(try ciphertexts() == before)
        #expect(try vault.run(["audit", "verify"]).status == 3)
        #expect(try vault.run(["audit", "verify"], env: ["VAULT_PASSPHRASE": newPassphrase]).status == 0)
        vault.passphrase = newPassphrase

        let rekey = try vault.run(["rekey"])
        #expect(rekey.status == 0, "\(rekey.stderrText)")
        let after = try ciphertexts()
        let beforeRows = before.split(separator: "\n"), afterRows = after.split(separator: "\n")
        #expect(beforeRows.count == afterRows.count && !beforeRows.isEmpty)
        for (old, new) in zip(beforeRows, afterRows) { #expect(old != new) }
        // Every secret still intact: both profiles still exchange.
        #expect(try fixture.token("pw", ["--fresh"]).status == 0)
        #expect(try fixture.token("cc", ["--fresh"]).status == 0)
        #expect(try vault.run(["audit", "verify"]).status == 0)
        expectNoLeaks(vault)
    }

    @Test("rotate keeps previous versions; history lists them; remove leaves no sealed value")
    func rotateHistoryRemove() throws {
        let fixture = try Fixture()
        let vault = fixture.vault
        let rotate = try vault.run(["rotate", "pw", "--password", "--secrets-stdin"], stdin: Data(#"{"password":"rotated-password-value"}"#.utf8))
        LeakScanner.shared.register(secret: "rotated-password-value")
        #expect(rotate.status == 0, "\(rotate.stderrText)")
        let history = try JSONSerialization.jsonObject(with: try vault.run(["history", "pw", "--json"]).stdout) as? [[String: Any]]
        let passwords = history?.filter { $0["field"] as? String == "password" }.compactMap { $0["version"] as? Int }
        #expect(passwords?.sorted() == [1, 2])
        let show = try vault.run(["show", "pw", "--json"]).stdoutText
        #expect(show.contains("\"secret_versions\""))
        // The rotated password is wrong at the stub: exit 4 proves version 2 is in use.
        #expect(try fixture.token("pw", ["--fresh"]).status == 4)

        let id = try vault.sql("SELECT id FROM profile WHERE name = 'pw'").stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)
        let noConfirm = try vault.run(["remove", "pw"])
        #expect(noConfirm.status == 64)
        #expect(try vault.run(["remove", "pw", "--yes"]).status == 0)
        #expect(try vault.sql("SELECT count(*) FROM secret_version WHERE profile_id = \(id); SELECT count(*) FROM token_cache WHERE profile_id = \(id)").stdoutText == "0\n0\n")
        #expect(try vault.run(["show", "pw"]).status == 6)
        let audit = try fixture.auditJSON(["--profile", "pw"])
        #expect(audit.contains { $0["action"] as? String == "remove" })
        #expect(audit.contains { $0["action"] as? String == "add" })
        expectNoLeaks(vault)
    }

    @Test("the binary carries its migrations: it works when copied alone elsewhere; newer schemas are refused")
    func embeddedMigrations() throws {
        let vault = TestVault()
        let copy = vault.directory + "/bin/vault"
        try FileManager.default.createDirectory(atPath: vault.directory + "/bin", withIntermediateDirectories: true)
        // Copy with O_CLOEXEC so no process spawned meanwhile by a parallel test inherits the
        // write descriptor (which would make the copy "busy" for as long as that process lives).
        let bytes = try Data(contentsOf: URL(fileURLWithPath: Binaries.vault))
        let fd = open(copy, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o755)
        #expect(fd >= 0)
        bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n <= 0 { break }
                offset += n
            }
        }
        close(fd)
        let result = try Binaries.run(copy, ["init"], environment: vault.environment())
        #expect(result.status == 0, "\(result.stderrText)")
        #expect(try vault.sql("SELECT identifier FROM grdb_migrations ORDER BY identifier").stdoutText == "0001_initial\n0002_format2\n0003_members\n0004_signed_members\n")
        try vault.sql("INSERT INTO grdb_migrations VALUES ('9999_from_the_future')")
        let newer = try vault.run(["list"])
        #expect(newer.status == 1)
        #expect(newer.stderrText.contains("newer version"))
    }

    @Test("file modes: 0600 vault in a 0700 directory; doctor reports loose modes and symlinks")
    func fileModes() throws {
        let vault = TestVault()
        try vault.initialise()
        let attributes = try FileManager.default.attributesOfItem(atPath: vault.path)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        let dir = try FileManager.default.attributesOfItem(atPath: (vault.path as NSString).deletingLastPathComponent)
        #expect((dir[.posixPermissions] as? Int) == 0o700)
        let healthy = try vault.run(["doctor", "--json"])
        #expect(healthy.stdoutText.contains("\"integrity\"") || healthy.stdoutText.contains("sqlite integrity"))
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: vault.path)
        let link = vault.directory + "/link.db"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: vault.path)
        let doctor = try vault.run(["doctor"], env: ["VAULT_PATH": link])
        #expect(doctor.status == 1)
        #expect(doctor.stdoutText.contains("symbolic link"))
        #expect(doctor.stdoutText.contains("0644"))
    }

    @Test("backup is a consistent sealed copy that opens with the same passphrase")
    func backup() throws {
        let fixture = try Fixture()
        let target = fixture.vault.directory + "/backup.db"
        #expect(try fixture.vault.run(["backup", target]).status == 0)
        #expect(try fixture.vault.run(["backup", target]).status == 1) // never overwrites
        #expect(try fixture.vault.run(["audit", "verify"], env: ["VAULT_PATH": target]).status == 0)
        #expect(try fixture.vault.run(["list"], env: ["VAULT_PATH": target]).stdoutText.contains("pw"))
        if let data = FileManager.default.contents(atPath: target) {
            LeakScanner.shared.scan(data, artefact: "backup file", includeTokens: true)
        }
        expectNoLeaks(fixture.vault)
    }
}

@Suite("FORMAT.md is enough to open a vault")
struct IndependentReaderTests {
    @Test("an independent Python reader (FORMAT.md + libsodium via ctypes) opens every secret and verifies the audit chain")
    func pythonReader() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        _ = try fixture.token("pw")
        try fixture.vault.run(["rotate", "cc", "--secrets-stdin"], stdin: Data(#"{"client_secret":"second-cc-secret"}"#.utf8))
        LeakScanner.shared.register(secret: "second-cc-secret")
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("testvectors/open_vault.py").path
        let result = try Binaries.run("/usr/bin/env", ["python3", script, fixture.vault.path, "--allow-test-kdf"],
                                      environment: ["PATH": "/usr/local/bin:/usr/bin:/bin", "VAULT_PASSPHRASE": fixture.vault.passphrase])
        #expect(result.status == 0, "\(result.stderrText)")
        let report = try JSONSerialization.jsonObject(with: result.stdout) as? [String: Any]
        let profiles = report?["profiles"] as? [String: [String: String]]
        #expect(profiles?["pw"]?["client_secret/v1"] == fixture.clientSecret)
        #expect(profiles?["pw"]?["password/v1"] == fixture.password)
        #expect(profiles?["cc"]?["client_secret/v2"] == "second-cc-secret")
        #expect((report?["audit_records"] as? Int ?? 0) >= 6)
        // The reader's stdout holds secrets by design; it is not a vault output, so it is not scanned.
    }

    @Test("edit changes settings (MAC'd, audited as edit, cached tokens dropped), keeps secrets and history; grant changes; mistakes change nothing")
    func edit() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        #expect(try fixture.token("pw").status == 0)
        #expect(try vault.sql("SELECT count(*) FROM token_cache").stdoutText == "1\n")
        let versionsBefore = try vault.sql("SELECT profile_id, field, version, created_at FROM secret_version ORDER BY 1, 2, 3").stdoutText
        let sealedBefore = try vault.sql("SELECT hex(ciphertext) FROM secret_version WHERE profile_id = (SELECT id FROM profile WHERE name = 'pw') ORDER BY field, version").stdoutText
        let state = { try vault.sql("SELECT name, client_id, username, grant_type, scope, environment, hex(mac) FROM profile ORDER BY name; SELECT count(*) FROM audit_record").stdoutText }
        let before = try state()

        // Refused, nothing changed: nothing to change, unknown names (before any passphrase),
        // a username on client credentials, a grant change without what it needs, no change.
        for (arguments, code) in [(["edit", "pw"], 64), (["edit", "pww", "--client-id", "x"], 6), (["edit", "pw", "--env", "nowhere"], 6),
                                  (["edit", "cc", "--username", "u"], 64), (["edit", "cc", "--grant", "password", "--secrets-from-env"], 64),
                                  (["edit", "pw", "--client-id", "client-pw"], 64), (["edit", "pw", "--client-id", "a\u{7}b"], 64)] {
            let result = try vault.run(arguments)
            #expect(result.status == Int32(code), "\(arguments): \(result.stderrText)")
        }
        #expect(try state() == before)
        let locked = try vault.run(["edit", "pww", "--scope", "s"], removing: ["VAULT_PASSPHRASE"])
        #expect(locked.status == 6 && locked.stderrText.contains("did you mean 'pw'?"), "\(locked.stderrText)")

        // A real change: the environment and the username; the secrets stay, the token goes.
        let moved = try vault.run(["edit", "pw", "--env", "eu", "--username", "other@example.com"])
        #expect(moved.status == 0 && moved.stderrText.contains("username, environment"), "\(moved.stderrText)")
        #expect(try vault.sql("SELECT count(*) FROM token_cache").stdoutText == "0\n")
        // The same versions, sealed again under the profile's new uid (its other profile untouched).
        #expect(try vault.sql("SELECT profile_id, field, version, created_at FROM secret_version ORDER BY 1, 2, 3").stdoutText == versionsBefore)
        let sealedAfter = try vault.sql("SELECT hex(ciphertext) FROM secret_version WHERE profile_id = (SELECT id FROM profile WHERE name = 'pw') ORDER BY field, version").stdoutText
        #expect(Set(sealedAfter.split(separator: "\n")).isDisjoint(with: sealedBefore.split(separator: "\n")), "every version sealed again")
        let shown = try JSONSerialization.jsonObject(with: vault.run(["show", "pw", "--json"]).stdout) as? [String: Any]
        #expect(shown?["environment"] as? String == "eu" && shown?["username"] as? String == "other@example.com")
        let record = try fixture.auditJSON(["--limit", "1"]).first
        #expect(record?["action"] as? String == "edit" && record?["profile"] as? String == "pw")
        #expect((record?["detail"] as? String) == "changed=username,environment cached_tokens_dropped=1", "\(String(describing: record))")
        // Back to the stub: the kept secrets still work.
        #expect(try vault.run(["edit", "pw", "--env", "local", "--username", "api-user@example.com"]).status == 0)
        #expect(try fixture.token("pw").status == 0)

        // Grant changes: to client credentials drops the username and the password versions;
        // back to password needs a username and a password, stored as version 1.
        #expect(try vault.run(["edit", "pw", "--grant", "client-credentials"]).status == 0)
        #expect(try vault.sql("SELECT count(*) FROM secret_version WHERE field = 'password'").stdoutText == "0\n")
        #expect((try fixture.auditJSON(["--limit", "1"]).first?["detail"] as? String)?.contains("password_versions_dropped=1") == true)
        let back = try vault.run(["edit", "pw", "--grant", "password", "--username", "api-user@example.com", "--secrets-stdin"],
                                 stdin: Data("{\"password\": \"\(fixture.password)\"}".utf8))
        #expect(back.status == 0, "\(back.stderrText)")
        #expect(try fixture.token("pw", ["--fresh"]).status == 0, "the password grant works again with the password given")
        #expect(try vault.run(["verify"]).status == 0)
        #expect(try vault.run(["audit", "verify"]).status == 0)
        // Rows from before an edit, put back by someone who can write the file, no longer
        // open: every edit gives the profile a new uid and seals its versions again.
        let saved = try vault.sql("SELECT hex(nonce) || ' ' || hex(ciphertext) FROM secret_version WHERE field = 'client_secret' AND version = 1 AND profile_id = (SELECT id FROM profile WHERE name = 'pw')").stdoutText
            .trimmingCharacters(in: .whitespacesAndNewlines).split(separator: " ").map(String.init)
        let cachedBefore = try vault.sql("SELECT hex(nonce) || ' ' || hex(ciphertext) || ' ' || expires_at FROM token_cache WHERE profile_id = (SELECT id FROM profile WHERE name = 'pw')").stdoutText
            .trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(saved.count == 2 && !cachedBefore.isEmpty)
        #expect(try vault.run(["edit", "pw", "--scope", "other.scope"]).status == 0)
        #expect(try vault.run(["verify"]).status == 0, "the re-sealed versions open")
        let clean = try independentReader(path: vault.path, passphrase: vault.passphrase)
        #expect(clean.error == nil, "the independent reader opens the edited vault: \(clean.error ?? "")")
        try vault.sql("UPDATE secret_version SET nonce = X'\(saved[0])', ciphertext = X'\(saved[1])' WHERE field = 'client_secret' AND version = 1 AND profile_id = (SELECT id FROM profile WHERE name = 'pw')")
        let restored = try vault.run(["verify"])
        #expect(restored.status == 7 && restored.stderrText.contains("client_secret version 1 of profile 'pw'"), "\(restored.stderrText)")
        let reader = try independentReader(path: vault.path, passphrase: vault.passphrase)
        #expect(reader.error != nil, "the independent reader refuses the put-back row too")
        expectNoLeaks(vault)
    }
}
