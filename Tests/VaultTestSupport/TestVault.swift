import Foundation

/// A throwaway vault in its own temporary directory, driven through the built binary.
/// Every run's stdout and stderr go through the shared ``LeakScanner``.
public final class TestVault: @unchecked Sendable {
    public let directory: String
    public let path: String
    public var passphrase: String
    public let scanner: LeakScanner
    /// The PostgreSQL server holding this vault (nil: a file).
    public let postgres: PostgresServer?

    public convenience init(passphrase: String = "correct horse battery staple ✓", scanner: LeakScanner = .shared) {
        self.init(postgres: nil, location: nil, passphrase: passphrase, scanner: scanner)
    }

    /// A vault in its own schema on `postgres`; `path` is its URL (no password: the
    /// administrator's password goes in `PGPASSWORD`, and is itself scanned for).
    public convenience init(postgres: PostgresServer, schema: String = "v_" + UUID().uuidString.prefix(8).lowercased(),
                            passphrase: String = "correct horse battery staple ✓", scanner: LeakScanner = .shared) {
        self.init(postgres: postgres, location: postgres.url(schema: schema), passphrase: passphrase, scanner: scanner)
        scanner.register(secret: postgres.adminPassword)
    }

    private init(postgres: PostgresServer?, location: String?, passphrase: String, scanner: LeakScanner) {
        directory = NSTemporaryDirectory() + "gbg-vault-test-" + UUID().uuidString
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        path = location ?? directory + "/vault/vault.db"
        self.passphrase = passphrase
        self.scanner = scanner
        self.postgres = postgres
        scanner.register(secret: passphrase)
    }

    deinit { try? FileManager.default.removeItem(atPath: directory) }

    /// Forgets what this test user's clients remember of the vaults they used (FORMAT.md
    /// §12): for tests that put a vault back to an earlier copy on purpose, round after round.
    public func forgetKnownVaults() {
        unlink(directory + "/.local/state/gbg-vault/known-vaults")
    }

    /// The environment of a `vault` run: cheap test-only KDF, the passphrase, no terminal.
    public func environment(_ extra: [String: String] = [:]) -> [String: String] {
        var env: [String: String] = [
            "PATH": "/usr/bin:/bin",
            "HOME": directory,
            "VAULT_PATH": path,
            "VAULT_PASSPHRASE": passphrase,
            "GBG_VAULT_TEST_ONLY_INSECURE_KDF": "1",
            "LANG": "C.UTF-8",
        ]
        if let postgres { env["PGPASSWORD"] = postgres.adminPassword }
        for (k, v) in extra { env[k] = v }
        return env
    }

    /// Runs `vault ARGS…`. `expectTokenOnStdout` exempts the token (not secrets) from
    /// the stdout scan, for `token` itself.
    @discardableResult
    public func run(_ arguments: [String], env: [String: String] = [:], removing: [String] = [], stdin: Data? = nil,
                    expectTokenOnStdout: Bool = false, timeout: TimeInterval = 60) throws -> ProcessResult {
        var environment = environment(env)
        for name in removing { environment.removeValue(forKey: name) }
        let result = try Binaries.run(Binaries.vault, arguments, environment: environment, stdin: stdin, timeout: timeout)
        scanner.scan(result.stderr, artefact: "stderr of vault \(arguments.first ?? "")", includeTokens: true)
        scanner.scan(result.stdout, artefact: "stdout of vault \(arguments.first ?? "")", includeTokens: !expectTokenOnStdout)
        scanFiles() // the vault file and its WAL after every command
        return result
    }

    /// One step of a terminal session (`Tests/tools/pty_run.py`).
    public enum TerminalStep: Sendable {
        /// Wait until the terminal shows this text (after what earlier steps matched).
        case expect(String)
        /// Type a line.
        case send(String)
        /// Wait this many seconds, reading what the terminal shows.
        case pause(Double)
        /// Type exactly these characters (no newline): `"\u{3}"` is Ctrl-C.
        case sendRaw(String)

        var json: [String] {
            switch self {
            case .expect(let text): ["expect", text]
            case .send(let line): ["send", line]
            case .sendRaw(let text): ["sendraw", text]
            case .pause(let seconds): ["sleep", String(seconds)]
            }
        }
    }

    /// Runs `vault ARGS…` on a pseudo-terminal of its own, answering prompts by `steps`.
    /// `stdout` is the terminal's transcript (vault's stdout and stderr and its prompts,
    /// as a person would see them); `stderr` is the driver's (a step that timed out, 124).
    /// What is typed goes to the driver on its stdin, never in arguments.
    @discardableResult
    public func runOnTerminal(_ arguments: [String], env: [String: String] = [:], removing: [String] = [],
                              steps: [TerminalStep], rows: Int = 24, expectTokenOnScreen: Bool = false,
                              timeout: TimeInterval = 30) throws -> ProcessResult {
        var environment = environment(env)
        for name in removing { environment.removeValue(forKey: name) }
        environment["TERM"] = environment["TERM"] ?? "dumb"
        let job: [String: Any] = ["argv": [Binaries.vault] + arguments, "env": environment, "steps": steps.map(\.json),
                                  "rows": rows, "cols": 100, "timeout": timeout]
        let driver = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("tools/pty_run.py").path
        let result = try Binaries.run("/usr/bin/python3", [driver], environment: ["PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"],
                                      stdin: try JSONSerialization.data(withJSONObject: job), timeout: timeout + 10)
        scanner.scan(result.stdout, artefact: "terminal of vault \(arguments.first ?? "")", includeTokens: !expectTokenOnScreen)
        scanner.scan(result.stderr, artefact: "pty driver of vault \(arguments.first ?? "")", includeTokens: true)
        scanFiles()
        return result
    }

    /// `vault init` with the test passphrase.
    public func initialise() throws {
        let result = try run(["init"])
        guard result.status == 0 else { throw HarnessError.commandFailed("vault init: \(result.stderrText)") }
    }

    /// `vault add` with secrets from stdin JSON.
    @discardableResult
    public func add(_ name: String, clientID: String, clientSecret: String, username: String? = nil, password: String? = nil,
                    grant: String = "password", env: String = "eu", extra: [String] = []) throws -> ProcessResult {
        scanner.register(secret: clientSecret)
        if let password { scanner.register(secret: password) }
        var object = ["client_secret": clientSecret]
        if let password { object["password"] = password }
        let json = try JSONSerialization.data(withJSONObject: object)
        var args = ["add", name, "--client-id", clientID, "--grant", grant, "--env", env, "--secrets-stdin"]
        if let username { args += ["--username", username] }
        return try run(args + extra, stdin: json)
    }

    /// Scans the vault file and its WAL/SHM/journal for every registered secret and token.
    public func scanFiles() {
        guard postgres == nil else { return }  // PostgreSQL vaults: a pg_dump scan (``scanDump()``)
        for suffix in ["", "-wal", "-shm", "-journal"] {
            if let data = FileManager.default.contents(atPath: path + suffix) {
                scanner.scan(data, artefact: "vault file\(suffix)", includeTokens: true)
            }
        }
    }

    /// Scans a `pg_dump` of the whole database for every registered secret and token.
    public func scanDump() throws {
        guard let postgres else { return }
        scanner.scan(try postgres.dump(), artefact: "pg_dump of the team database", includeTokens: true)
    }

    /// Runs the `sqlite3` shell on the vault (for tampering in tests).
    @discardableResult
    public func sql(_ statement: String) throws -> ProcessResult {
        try Binaries.run("/usr/bin/sqlite3", [path, statement], environment: ["PATH": "/usr/bin:/bin"])
    }
}
