import Foundation
import Testing
import VaultTestSupport

/// Disk full, read-only file system, a lock held past the busy timeout, and the vault
/// removed mid-run. Mounting a small tmpfs needs root (CI runs as root).
@Suite("storage faults", .serialized, .enabled(if: getuid() == 0, "mounting a tmpfs needs root"))
struct StorageFaultTests {
    /// A fixture whose vault lives on its own small tmpfs.
    final class SmallDisk {
        let mount: String
        init(_ directory: String, size: String) throws {
            mount = directory + "/disk"
            try FileManager.default.createDirectory(atPath: mount, withIntermediateDirectories: true)
            let r = try Binaries.run("/bin/mount", ["-t", "tmpfs", "-o", "size=\(size)", "tmpfs", mount], environment: ["PATH": "/usr/bin:/bin"])
            guard r.status == 0 else { throw HarnessError.spawnFailed("mount: \(r.stderrText)") }
        }
        func remount(_ mode: String) throws {
            _ = try Binaries.run("/bin/mount", ["-o", "remount,\(mode)", mount], environment: ["PATH": "/usr/bin:/bin"])
        }
        /// Fills the file system to the last byte.
        func fill() {
            let handle = FileManager.default.createFile(atPath: mount + "/filler", contents: nil) ? FileHandle(forWritingAtPath: mount + "/filler") : nil
            let chunk = Data(count: 4096)
            while let handle, (try? handle.write(contentsOf: chunk)) != nil {}
            let small = Data(count: 1)
            while let handle, (try? handle.write(contentsOf: small)) != nil {}
            try? handle?.close()
        }
        func unfill() { try? FileManager.default.removeItem(atPath: mount + "/filler") }
        deinit { _ = try? Binaries.run("/bin/umount", ["-l", mount], environment: ["PATH": "/usr/bin:/bin"]) }
    }

    /// A copy of the fixture's vault (WAL checkpointed) on its own tmpfs of `size`.
    func vaultOnSmallDisk(_ fixture: Fixture, size: String) throws -> (disk: SmallDisk, path: String) {
        let disk = try SmallDisk(fixture.vault.directory, size: size)
        let moved = disk.mount + "/vault.db"
        try fixture.vault.sql("PRAGMA wal_checkpoint(TRUNCATE)")
        try FileManager.default.copyItem(atPath: fixture.vault.path, toPath: moved)
        return (disk, moved)
    }

    func snapshot(_ vault: TestVault) throws -> String {
        try vault.sql("SELECT name, client_id FROM profile ORDER BY name; SELECT profile_id, field, version, hex(ciphertext) FROM secret_version ORDER BY 1, 2, 3;").stdoutText
    }

    /// Every row of the vault at `path` that a write could change.
    func snapshot(_ vault: TestVault, path: String) throws -> String {
        let sql = ["vault_header", "environment", "profile", "secret_version", "token_cache", "member", "key_slot", "audit_record", "audit_head"]
            .map { "SELECT * FROM \($0) ORDER BY 1;" }.joined(separator: " ")
        let result = try Binaries.run("/usr/bin/sqlite3", ["-readonly", path, sql], environment: [:])
        #expect(result.status == 0, "\(result.stderrText)")
        return result.stdoutText
    }

    @Test("disk full during every kind of write (add, rotate, env add and set, remove, rekey, passwd, member add, a cache hit's record, copy, backup, an exchange's record): clear message, exit 1 or 8, nothing changed")
    func diskFull() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let (disk, moved) = try vaultOnSmallDisk(fixture, size: "2m")
        let vault = fixture.vault
        let env = ["VAULT_PATH": moved]
        let before = try vault.run(["list", "--json"], env: env).stdoutText
        #expect(before.contains("\"pw\""))
        _ = try Binaries.run("/usr/bin/sqlite3", [moved, "PRAGMA wal_checkpoint(TRUNCATE)"], environment: [:])
        disk.fill()

        let add = try vault.run(["add", "new", "--client-id", "x", "--grant", "client-credentials", "--secrets-stdin"], env: env,
                                stdin: Data(#"{"client_secret":"disk-full-secret-value"}"#.utf8))
        LeakScanner.shared.register(secret: "disk-full-secret-value")
        #expect(add.status == 1, "\(add.stderrText)")
        #expect(add.stderrText.contains("disk is full"))
        let rotate = try vault.run(["rotate", "cc", "--secrets-stdin"], env: env, stdin: Data(#"{"client_secret":"disk-full-rotation"}"#.utf8))
        LeakScanner.shared.register(secret: "disk-full-rotation")
        #expect(rotate.status == 1, "\(rotate.stderrText)")
        let token = try fixture.token("pw", ["--fresh", "--vault", moved])
        // Either the read before the exchange or the audit write fails; no token either way.
        #expect(token.status == 8 || token.status == 1, "\(token.stderrText)")
        #expect(token.stderrText.contains("disk is full"), "\(token.stderrText)")
        #expect(token.stdout.isEmpty)

        disk.unfill()
        #expect(try vault.run(["list", "--json"], env: env).stdoutText == before)
        #expect(try vault.run(["audit", "verify"], env: env).status == 0)
        // Every other kind of write, each on a disk filled again: refused with the disk-full
        // message, and every row as it was (read once the disk has room again).
        #expect(try vault.run(["env", "add", "mine", "--token-url", "https://mine.example/t"], env: env).status == 0)
        let sealedBefore = try snapshot(vault, path: moved)
        let identity = vault.directory + "/disk-full.id"
        let recipient = try vault.run(["identity", "new", "--no-passphrase", "--out", identity]).stdoutText
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let writes: [(arguments: [String], env: [String: String])] = [
            (["env", "add", "full", "--token-url", "https://full.example/t"], [:]),
            (["env", "set", "mine", "--api-base", "https://full.example/api/"], [:]),
            (["remove", "cc", "--yes"], [:]),
            (["rekey"], [:]),
            (["passwd"], ["VAULT_NEW_PASSPHRASE": "disk full new passphrase ✓"]),
            (["member", "add", "robot", "--recipient", recipient], [:]),
            (["token", "cc"], [:]),
            (["copy", "--to", disk.mount + "/copy.db"], [:]),
            (["backup", disk.mount + "/backup.db"], [:]),
        ]
        for write in writes {
            // An empty WAL before a write into the vault, so that it needs new space (a WAL
            // grown by an earlier, failed write would have room for a small one). (`copy` and
            // `backup` write a new file instead.)
            if !["copy", "backup"].contains(write.arguments[0]) {
                _ = try Binaries.run("/usr/bin/sqlite3", [moved, "PRAGMA wal_checkpoint(TRUNCATE)"], environment: [:])
            }
            disk.fill()
            let result = try vault.run(write.arguments, env: env.merging(write.env) { a, _ in a })
            disk.unfill()
            let label = write.arguments.joined(separator: " ")
            #expect(result.status == 1 || (write.arguments.first == "token" && result.status == 8), "\(label): \(result.status) \(result.stderrText)")
            #expect(result.stderrText.contains("disk is full"), "\(label): \(result.stderrText)")
            #expect(result.stdout.isEmpty, "\(label)")
            #expect(try snapshot(vault, path: moved) == sealedBefore, "\(label): the vault changed")
            #expect(!FileManager.default.fileExists(atPath: disk.mount + "/copy.db") && !FileManager.default.fileExists(atPath: disk.mount + "/backup.db"))
        }
        #expect(try fixture.token("cc", ["--fresh", "--vault", moved]).status == 0)
        if let data = FileManager.default.contents(atPath: moved) { LeakScanner.shared.scan(data, artefact: "vault on full disk", includeTokens: true) }
        expectNoLeaks(vault)
    }

    @Test("read-only file system: every command that only reads works; changes and tokens refused (exit 1, nothing sent); data intact once writable again")
    func readOnly() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let (disk, moved) = try vaultOnSmallDisk(fixture, size: "4m")
        let env = ["VAULT_PATH": moved]
        let before = try snapshot(fixture.vault)
        let listing = try fixture.vault.run(["list", "--json"], env: env).stdoutText
        let requests = try fixture.stub.tokenRequests()
        try disk.remount("ro")
        try expectReadOnlyBehaviour(fixture, env: env, listing: listing, backup: fixture.vault.directory + "/from-read-only.db")
        #expect(try fixture.stub.tokenRequests() == requests, "a vault that cannot record a token gets no exchange")
        let doctor = try fixture.vault.run(["doctor", "--json"], env: env)
        #expect(doctor.status == 1, "warnings only: \(doctor.stderrText)")
        #expect(doctor.stdoutText.contains("a read-only file system") && doctor.stdoutText.contains("a token needs its audit record"), "\(doctor.stdoutText)")
        try disk.remount("rw")
        let after = try Binaries.run("/usr/bin/sqlite3", [moved, "SELECT name, client_id FROM profile ORDER BY name; SELECT profile_id, field, version, hex(ciphertext) FROM secret_version ORDER BY 1, 2, 3;"], environment: [:]).stdoutText
        #expect(after == before)
        #expect(try fixture.vault.run(["audit", "verify"], env: env).status == 0)
        #expect(try fixture.token("cc", ["--vault", moved]).status == 0, "writable again: tokens work")
        expectNoLeaks(fixture.vault)
    }

    @Test("a directory without write permission (another user's, or chmod 555): the same, run as an unprivileged user")
    func readOnlyDirectory() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        // A root-owned 0755 directory holding a vault that belongs to `nobody`: nobody can
        // read and write the file but not create the WAL's files beside it.
        let directory = "/tmp/gbg-vault-ro-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o755])
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let moved = directory + "/vault.db"
        try fixture.vault.sql("PRAGMA wal_checkpoint(TRUNCATE)")
        try FileManager.default.copyItem(atPath: fixture.vault.path, toPath: moved)
        #expect(chown(moved, 65534, 65534) == 0)
        let probe = try Binaries.run("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", Binaries.vault, "--version"], environment: [:])
        guard probe.status == 0 else {
            print("skipped: the built vault cannot be run as nobody here (\(probe.stderrText))")
            return
        }
        let listing = try fixture.vault.run(["list", "--json"], env: ["VAULT_PATH": moved]).stdoutText
        let asNobody = ["VAULT_PATH": moved, "HOME": directory, "XDG_RUNTIME_DIR": directory]
        try expectReadOnlyBehaviour(fixture, env: asNobody, listing: listing, backup: nil,
                                    prefix: ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"])
        expectNoLeaks(fixture.vault)
    }

    /// What a read-only vault location allows: every read (list, show, history, audit,
    /// env and member listings, verify, audit verify, status, backup); no change, no token.
    func expectReadOnlyBehaviour(_ fixture: Fixture, env: [String: String], listing: String, backup: String?,
                                 prefix: [String] = []) throws {
        func run(_ arguments: [String], stdin: Data? = nil) throws -> ProcessResult {
            guard !prefix.isEmpty else { return try fixture.vault.run(arguments, env: env, stdin: stdin) }
            let result = try Binaries.run(prefix[0], Array(prefix.dropFirst()) + [Binaries.vault] + arguments,
                                          environment: fixture.vault.environment(env), stdin: stdin)
            LeakScanner.shared.scan(result.stdout + result.stderr, artefact: "vault \(arguments.first ?? "") as nobody", includeTokens: true)
            return result
        }
        #expect(try run(["list", "--json"]).stdoutText == listing)
        for arguments in [["audit"], ["audit", "--json"], ["show", "pw"], ["history", "pw"], ["env", "list"], ["member", "list"],
                          ["verify"], ["audit", "verify"], ["status"]] {
            let result = try run(arguments)
            #expect(result.status == 0, "\(arguments): \(result.stderrText)")
        }
        if let backup {
            #expect(try run(["backup", backup]).status == 0)
            #expect(try Binaries.run("/usr/bin/sqlite3", [backup, "SELECT count(*) FROM profile"], environment: [:]).stdoutText == "2\n")
        }
        let rotate = try run(["rotate", "cc", "--secrets-stdin"], stdin: Data(#"{"client_secret":"read-only-rotation"}"#.utf8))
        LeakScanner.shared.register(secret: "read-only-rotation")
        #expect(rotate.status == 1 && rotate.stderrText.contains("is read-only here"), "\(rotate.stderrText)")
        let token = try run(["token", "pw", "--fresh"])
        #expect(token.stdout.isEmpty)
        #expect(token.status == 1 && token.stderrText.contains("is read-only here"), "\(token.stderrText)")
        // An exchange that would not be audited, an agent that could serve nothing, a follow
        // that would never see a new record: refused too.
        let verify = try run(["rotate", "pw", "--password", "--verify", "--secrets-stdin"], stdin: Data(#"{"password":"read-only-verify"}"#.utf8))
        LeakScanner.shared.register(secret: "read-only-verify")
        #expect(verify.status == 1 && verify.stderrText.contains("is read-only here"), "\(verify.stderrText)")
        let unlock = try run(["unlock", "--for", "1m"])
        #expect(unlock.status == 1 && unlock.stderrText.contains("is read-only here"), "\(unlock.stderrText)")
        let follow = try run(["audit", "--follow"])
        #expect(follow.status == 1 && follow.stderrText.contains("cannot follow"), "\(follow.stderrText)")
    }

    @Test("a lock held past VAULT_BUSY_TIMEOUT: exit 1, 'locked by another process', nothing changed; works once released")
    func heldLock() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let before = try snapshot(fixture.vault)
        let holder = try ChildProcess("/usr/bin/python3", ["-c", """
            import sqlite3, sys, time
            c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
            c.execute('BEGIN IMMEDIATE')
            print('locked', flush=True)
            time.sleep(6)
            c.execute('ROLLBACK')
            """, fixture.vault.path], environment: ["PATH": "/usr/bin:/bin"])
        holder.closeStdin()
        var byte: UInt8 = 0
        while read(holderStdout(holder), &byte, 1) == 1, byte != 0x0a {}
        let started = Date()
        let rotate = try fixture.vault.run(["rotate", "cc", "--secrets-stdin"], env: ["VAULT_BUSY_TIMEOUT": "1"],
                                           stdin: Data(#"{"client_secret":"locked-rotation-value"}"#.utf8))
        LeakScanner.shared.register(secret: "locked-rotation-value")
        #expect(rotate.status == 1, "\(rotate.stderrText)")
        #expect(rotate.stderrText.contains("locked by another process"))
        #expect(Date().timeIntervalSince(started) < 5)
        #expect(try snapshot(fixture.vault) == before)
        _ = holder.wait(timeout: 20)
        let retry = try fixture.vault.run(["rotate", "cc", "--secrets-stdin"], stdin: Data(#"{"client_secret":"locked-rotation-value"}"#.utf8))
        #expect(retry.status == 0, "\(retry.stderrText)")
        expectNoLeaks(fixture.vault)
    }

    @Test("the vault removed while a token exchange is in flight: exit 8, no token printed")
    func removedMidRun() throws {
        let fixture = try Fixture(stubArguments: ["--delay-ms", "1500"])
        defer { fixture.stub.stop() }
        let child = try ChildProcess(Binaries.vault, ["token", "pw", "--fresh"], environment: fixture.vault.environment())
        child.closeStdin()
        let out = holderStdout(child)
        usleep(700_000)
        try FileManager.default.removeItem(atPath: (fixture.vault.path as NSString).deletingLastPathComponent)
        let status = child.wait(timeout: 30)
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = read(out, &buffer, buffer.count)
        #expect(status == 8)
        #expect(n <= 0, "a token was printed")
    }
}

/// The stdout descriptor of a child (test helper).
func holderStdout(_ child: ChildProcess) -> Int32 { child.stdoutDescriptor }
