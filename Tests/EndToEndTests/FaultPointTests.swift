import Foundation
import Testing
import VaultTestSupport

/// Every write fault point (a test build's `GBG_VAULT_TEST_FAULT`, `Sources/VaultCore/FaultPoint.swift`)
/// with `kill`, for each kind of write: the process dies exactly there, and afterwards the
/// vault is exactly as before the command (killed before `COMMIT`) or exactly as after it
/// (killed after), its chain and every secret verify, and no token was printed. Each
/// round starts again from the same copy of the vault.
@Suite("fault points: a kill at each named point of a write", .serialized)
struct FaultPointTests {
    struct Command {
        let arguments: [String]
        var stdin: Data? = nil
        var env: [String: String] = [:]
    }

    static let points = ["write-begins", "write-commits", "write-committed"]

    /// Runs `command` with `GBG_VAULT_TEST_FAULT=fault`; its exit status and what it printed.
    func runArmed(_ vault: TestVault, _ command: Command, fault: String, passphrase: String) throws -> (Int32?, String) {
        var environment = vault.environment(command.env.merging(["GBG_VAULT_TEST_FAULT": fault]) { a, _ in a })
        environment["VAULT_PASSPHRASE"] = passphrase
        let child = try ChildProcess(Binaries.vault, command.arguments, environment: environment)
        if let stdin = command.stdin { child.writeStdin(stdin) }
        child.closeStdin()
        let output = OutputCollector(child.stdoutDescriptor)
        let status = child.wait(timeout: 60)
        return (status, output.text)
    }

    /// The number of audit records `audit verify` checked (with `passphrase`), or nil when it
    /// does not verify.
    func records(_ vault: TestVault, passphrase: String) throws -> Int? {
        let result = try vault.run(["audit", "verify"], env: ["VAULT_PASSPHRASE": passphrase])
        guard result.status == 0 else { return nil }
        let words = result.stdoutText.split(whereSeparator: { !$0.isNumber })
        return words.first.flatMap { Int($0) }
    }

    func run(store: String) throws {
        var server: PostgresServer?
        if store == "postgres" {
            guard let started = try startPostgres() else { return }
            server = started
        }
        defer { server?.stop() }
        let fixture = try Fixture(postgres: server)
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        #expect(try fixture.token("pw").status == 0)
        let passphrase = vault.passphrase
        let newPassphrase = "fault point passphrase ✓ " + UUID().uuidString
        LeakScanner.shared.register(secret: newPassphrase)
        let newSecret = "cc-fault-" + UUID().uuidString
        LeakScanner.shared.register(secret: newSecret)
        var commands = [
            Command(arguments: ["token", "pw", "--fresh"]),
            Command(arguments: ["rotate", "cc", "--secrets-stdin"], stdin: Data(#"{"client_secret":"\#(newSecret)"}"#.utf8)),
        ]
        if store == "file" {
            commands += [
                Command(arguments: ["token", "pw"]),
                Command(arguments: ["add", "p3", "--client-id", "c3", "--grant", "client-credentials", "--secrets-stdin"],
                        stdin: Data(#"{"client_secret":"\#(newSecret)"}"#.utf8)),
                Command(arguments: ["env", "add", "x", "--token-url", "https://x.example/t"]),
                Command(arguments: ["remove", "cc", "--yes"]),
                Command(arguments: ["rekey"]),
                Command(arguments: ["passwd"], env: ["VAULT_NEW_PASSPHRASE": newPassphrase]),
            ]
        }

        // The vault every round starts from.
        let pristine = vault.directory + "/pristine.db"
        var dump: Data?
        let schema = vault.path.components(separatedBy: "schema=").last ?? ""
        if let server {
            dump = try server.dump(schema: schema)
        } else {
            try vault.sql("PRAGMA wal_checkpoint(TRUNCATE)")
            try FileManager.default.copyItem(atPath: vault.path, toPath: pristine)
        }
        func restore() throws {
            if let server, let dump {
                try server.psql("DROP SCHEMA \"\(schema)\" CASCADE", database: "vault")
                try server.restore(dump)
            } else {
                for suffix in ["", "-wal", "-shm"] { unlink(vault.path + suffix) }
                try FileManager.default.copyItem(atPath: pristine, toPath: vault.path)
            }
            vault.forgetKnownVaults()
        }
        let before = try #require(try records(vault, passphrase: passphrase))

        var rounds = 0
        for command in commands {
            for point in Self.points {
                try restore()
                let (status, output) = try runArmed(vault, command, fault: "\(point):kill", passphrase: passphrase)
                let label = "\(store) \(command.arguments.joined(separator: " ")) at \(point)"
                #expect(status == 128 + 9 || status == -9, "\(label): killed there (status \(String(describing: status)))")
                #expect(output.isEmpty, "\(label): nothing printed (no token without its committed record)")
                let committed = point == "write-committed"
                let opener = committed && command.arguments == ["passwd"] ? newPassphrase : passphrase
                let count = try records(vault, passphrase: opener)
                #expect(count == (committed ? before + 1 : before), "\(label): \(String(describing: count)) records, \(before) before")
                let verify = try vault.run(["verify"], env: ["VAULT_PASSPHRASE": opener])
                #expect(verify.status == 0, "\(label): \(verify.stderrText)")
                if store == "file" {
                    let read = try independentReader(path: vault.path, passphrase: opener)
                    let report = try #require(read.report, "\(label): \(read.error ?? "")")
                    let cc = (report["profiles"] as? [String: [String: String]])?["cc"]
                    switch command.arguments.first {
                    case "rotate": #expect((cc?["client_secret/v2"] == newSecret) == committed, "\(label)")
                    case "remove": #expect((cc == nil) == committed, "\(label)")
                    default: #expect(cc?["client_secret/v1"] == fixture.ccSecret, "\(label)")
                    }
                }
                rounds += 1
            }
        }
        print("fault points (\(store)): \(rounds) kills, each left the vault exactly before or exactly after")
        expectNoLeaks(vault)
    }

    /// Kills each command before its 1st, 2nd, … statement until it runs to the end: every
    /// kill leaves the vault exactly as before (each of these commands makes one write
    /// transaction, its statements before its `COMMIT`). `GBG_VAULT_FAULT_COMMANDS=all`
    /// runs every command below; CI runs the first two (the cache hit, and `rekey`, which
    /// rewrites every row).
    @Test("file vault: a kill before each statement of token (cache hit) and rekey (every write command with GBG_VAULT_FAULT_COMMANDS=all)")
    func everyStatement() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        #expect(try fixture.token("pw").status == 0)
        let newSecret = "cc-statement-" + UUID().uuidString
        LeakScanner.shared.register(secret: newSecret)
        let newPassphrase = "statement passphrase ✓ " + UUID().uuidString
        LeakScanner.shared.register(secret: newPassphrase)
        var commands = [
            Command(arguments: ["token", "pw"]),
            Command(arguments: ["rekey"]),
        ]
        if ProcessInfo.processInfo.environment["GBG_VAULT_FAULT_COMMANDS"] == "all" {
            commands += [
                Command(arguments: ["rotate", "cc", "--secrets-stdin"], stdin: Data(#"{"client_secret":"\#(newSecret)"}"#.utf8)),
                Command(arguments: ["token", "pw", "--fresh"]),
                Command(arguments: ["add", "p3", "--client-id", "c3", "--grant", "client-credentials", "--secrets-stdin"],
                        stdin: Data(#"{"client_secret":"\#(newSecret)"}"#.utf8)),
                Command(arguments: ["env", "add", "x", "--token-url", "https://x.example/t"]),
                Command(arguments: ["remove", "cc", "--yes"]),
                Command(arguments: ["passwd"], env: ["VAULT_NEW_PASSPHRASE": newPassphrase]),
            ]
        }
        try vault.sql("PRAGMA wal_checkpoint(TRUNCATE)")
        let pristine = vault.directory + "/pristine.db"
        try FileManager.default.copyItem(atPath: vault.path, toPath: pristine)
        let before = try #require(try records(vault, passphrase: vault.passphrase))
        var kills = 0
        for command in commands {
            var statement = 1
            while statement < 500 {
                for suffix in ["", "-wal", "-shm"] { unlink(vault.path + suffix) }
                try FileManager.default.copyItem(atPath: pristine, toPath: vault.path)
                vault.forgetKnownVaults()
                let (status, output) = try runArmed(vault, command, fault: "statement:kill:\(statement)", passphrase: vault.passphrase)
                let label = "\(command.arguments.joined(separator: " ")) before statement \(statement)"
                if status == 0 { break }  // fewer statements than that: the command ran to its end
                #expect(status == 128 + 9 || status == -9, "\(label): status \(String(describing: status))")
                #expect(output.isEmpty, "\(label): nothing printed")
                #expect(try records(vault, passphrase: vault.passphrase) == before, "\(label): the vault as before")
                #expect(try vault.run(["verify"]).status == 0, "\(label)")
                let read = try independentReader(path: vault.path, passphrase: vault.passphrase)
                #expect((read.report?["profiles"] as? [String: [String: String]])?["cc"]?["client_secret/v1"] == fixture.ccSecret, "\(label)")
                kills += 1
                statement += 1
            }
            #expect(statement > 1 && statement < 500, "\(command.arguments): \(statement - 1) statements")
            print("statement kills: \(command.arguments.joined(separator: " ")): \(statement - 1) statements, each killed once")
        }
        print("statement kills: \(kills) in all, each left the vault exactly as before")
        expectNoLeaks(vault)
    }

    @Test("file vault: token (exchange and cache hit), rotate, add, env add, remove, rekey, passwd × every write point")
    func file() throws { try run(store: "file") }

    @Test("vault copy, file to file and file to PostgreSQL: a kill after each table leaves no destination, and the copy then made verifies")
    func copy() throws {
        guard let server = try startPostgres() else { return }
        defer { server.stop() }
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        #expect(try fixture.token("pw").status == 0)
        let before = try #require(try records(vault, passphrase: vault.passphrase))
        let tables = 10  // VaultCopy.tables
        let env = ["PGPASSWORD": server.adminPassword]
        for destinationKind in ["file", "postgres"] {
            for table in 1...tables {
                let destination = destinationKind == "file"
                    ? vault.directory + "/copy-\(table).db"
                    : server.url(schema: "copy_\(table)")
                let (status, output) = try runArmed(vault, Command(arguments: ["copy", "--to", destination], env: env),
                                                    fault: "copy-table:kill:\(table)", passphrase: vault.passphrase)
                let label = "copy to \(destinationKind), killed after table \(table)"
                #expect(status == 128 + 9 || status == -9, "\(label): killed there (status \(String(describing: status)))")
                #expect(output.isEmpty, "\(label)")
                // Nothing at the destination: no file, no vault in the schema.
                if destinationKind == "file" {
                    #expect(!FileManager.default.fileExists(atPath: destination), "\(label): a destination file exists")
                } else {
                    let listed = try vault.run(["list", "--vault", destination], env: env)
                    #expect(listed.status == 6, "\(label): \(listed.status) \(listed.stderrText)")
                }
                // The source is as it was, and the same copy made again is whole.
                #expect(try records(vault, passphrase: vault.passphrase) == before, "\(label): the source changed")
                let copied = try vault.run(["copy", "--to", destination], env: env)
                #expect(copied.status == 0, "\(label): the copy made afterwards: \(copied.stderrText)")
                let verified = try vault.run(["verify", "--vault", destination], env: env)
                #expect(verified.status == 0, "\(label): \(verified.stderrText)")
            }
        }
        // What a killed file copy leaves: its private build directory beside the destination
        // (0700, a sealed copy, never at the destination's name).
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: vault.directory).filter { $0.hasPrefix(".gbg-vault-tmp-") }
        print("copy kills: \(2 * tables), each left no destination; \(leftovers.count) private build directories left behind by the file copies")
        expectNoLeaks(vault)
    }

    @Test("the agent killed after a token's commit, before its answer: no token printed without a record, the chain verifies, the next command goes on without it")
    func agentKilledBeforeAnswer() throws {
        let session = try SessionFixture()
        defer { session.stop() }
        let before = try #require(try records(session.vault, passphrase: session.vault.passphrase))
        #expect(try session.run(["unlock", "--for", "10m"], extra: ["GBG_VAULT_TEST_FAULT": "agent-answers:kill:1"]).status == 0)
        // Without the passphrase: the agent commits the exchange's record, dies, and the
        // client has nothing to fall back on.
        let unanswered = try session.run(["token", "cc", "--fresh"], passphrase: false)
        #expect(unanswered.status != 0 && unanswered.stdout.isEmpty, "\(unanswered.stderrText)")
        #expect(try session.waitUntilLocked(seconds: 10))
        #expect(try records(session.vault, passphrase: session.vault.passphrase) == before + 1, "the exchange's record, committed before the kill")
        // With it: the command goes on without the agent (stale socket removed) and its token has its own record.
        let fallback = try session.run(["token", "cc"], token: true)
        #expect(fallback.status == 0, "\(fallback.stderrText)")
        #expect(try records(session.vault, passphrase: session.vault.passphrase) ?? 0 >= before + 1)
        #expect(try session.vault.run(["verify"]).status == 0)
        expectNoLeaks(session.vault)
    }

    @Test("team vault (PostgreSQL): token --fresh and rotate × every write point, the COMMIT included")
    func team() throws { try run(store: "postgres") }
}
