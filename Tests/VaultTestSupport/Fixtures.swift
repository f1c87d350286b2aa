import Foundation
import Testing

// The fixtures the end-to-end suites share: a vault with a stub endpoint and two profiles,
// the same with its own agent runtime directory, and the same with two member identities.

/// Registers the token a successful `vault token` printed (one line) with the leak
/// scanner, which then looks for it in every output; returns the result unchanged.
@discardableResult
public func registeringToken(_ result: ProcessResult) -> ProcessResult {
    if result.status == 0 {
        let text = result.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)
        if !text.isEmpty, !text.contains("\n") { LeakScanner.shared.register(token: text) }
    }
    return result
}

/// A stub with one password-grant user and one client-credentials client.
public struct Fixture: Sendable {
    public let vault: TestVault
    public let stub: StubServer
    public let clientSecret: String
    public let password: String
    public let ccSecret: String

    public init(stubArguments: [String] = [], temporaryPassword: Bool = false, tokenTTL: Int? = nil, addProfiles: Bool = true,
         postgres: PostgresServer? = nil) throws {
        vault = postgres.map { TestVault(postgres: $0) } ?? TestVault()
        clientSecret = "cs-" + UUID().uuidString + "-ß∂ƒ"
        password = "pw-" + UUID().uuidString + " &=+%"
        ccSecret = "cc-" + UUID().uuidString
        let accounts = try writeAccounts(
            in: vault.directory,
            clients: [
                ["client_id": "client-pw", "client_secret": clientSecret, "grants": ["password"]],
                ["client_id": "client-cc", "client_secret": ccSecret, "grants": ["client_credentials"], "scopes": ["gbg.token"]],
            ],
            users: [["username": "api-user@example.com", "password": password, "temporary": temporaryPassword]],
            tokenTTL: tokenTTL)
        stub = try StubServer(accounts: accounts, arguments: stubArguments)
        try vault.initialise()
        guard addProfiles else { return }
        let env = try vault.run(["env", "add", "local", "--token-url", stub.tokenURL, "--api-base", stub.apiBase])
        try #require(env.status == 0, "env add: \(env.stderrText)")
        let pw = try vault.add("pw", clientID: "client-pw", clientSecret: clientSecret, username: "api-user@example.com",
                               password: password, env: "local")
        try #require(pw.status == 0, "add pw: \(pw.stderrText)")
        let cc = try vault.add("cc", clientID: "client-cc", clientSecret: ccSecret, grant: "client-credentials", env: "local")
        try #require(cc.status == 0, "add cc: \(cc.stderrText)")
    }

    /// `vault token NAME --format raw`, registering the token with the scanner.
    public func token(_ name: String, _ extra: [String] = []) throws -> ProcessResult {
        registeringToken(try vault.run(["token", name] + extra, expectTokenOnStdout: true))
    }

    public func auditJSON(_ extra: [String] = []) throws -> [[String: Any]] {
        let result = try vault.run(["audit", "--json"] + extra)
        return (try JSONSerialization.jsonObject(with: result.stdout) as? [[String: Any]]) ?? []
    }
}

/// A fixture with its own short runtime directory (Unix socket paths are limited to
/// 108 bytes).
public final class SessionFixture: @unchecked Sendable {
    public let fixture: Fixture
    public let runtime: String
    public var vault: TestVault { fixture.vault }

    public init(addProfiles: Bool = true, tokenTTL: Int? = nil, stubArguments: [String] = []) throws {
        fixture = try Fixture(stubArguments: stubArguments, tokenTTL: tokenTTL, addProfiles: addProfiles)
        var template = Array("/tmp/gv-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw HarnessError.spawnFailed("mkdtemp") }
        runtime = String(cString: made)
    }

    deinit { try? FileManager.default.removeItem(atPath: runtime) }

    public var env: [String: String] { ["XDG_RUNTIME_DIR": runtime] }

    /// Runs vault with the runtime directory; without any passphrase source when `locked` is false.
    @discardableResult
    public func run(_ arguments: [String], passphrase: Bool = true, extra: [String: String] = [:], token: Bool = false) throws -> ProcessResult {
        let result = try vault.run(arguments, env: env.merging(extra) { $1 }, removing: passphrase ? [] : ["VAULT_PASSPHRASE"],
                                   expectTokenOnStdout: token)
        return token ? registeringToken(result) : result
    }

    public func status() throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: run(["status", "--json"], passphrase: false).stdout) as? [String: Any] ?? [:]
    }

    public var socketPath: String? { (try? status())?["socket"] as? String }

    public func waitUntilLocked(seconds: Double) throws -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try status()["unlocked"] as? Bool == false { return true }
            usleep(100_000)
        }
        return false
    }

    /// Ends the agent whatever state it is in.
    public func stop() {
        if let pid = (try? status())?["pid"] as? Int { kill(pid_t(pid), SIGTERM) }
        _ = try? run(["lock"], passphrase: false)
        fixture.stub.stop()
        try? FileManager.default.removeItem(atPath: runtime)
    }
}

/// A fixture with two member identities besides the owner's passphrase: `alice`
/// (sealed under her own passphrase) and `ci` (an unsealed machine identity).
public final class TeamFixture: @unchecked Sendable {
    public let fixture: Fixture
    public let alicePath: String
    public let ciPath: String
    public let alicePassphrase = "alice's own passphrase " + UUID().uuidString
    public var vault: TestVault { fixture.vault }

    public init(postgres: PostgresServer? = nil) throws {
        fixture = try Fixture(postgres: postgres)
        alicePath = fixture.vault.directory + "/alice.identity"
        ciPath = fixture.vault.directory + "/ci.identity"
        LeakScanner.shared.register(secret: alicePassphrase)
        let alice = try vault.run(["identity", "new", "--out", alicePath], env: ["VAULT_IDENTITY_PASSPHRASE": alicePassphrase])
        try #require(alice.status == 0, "\(alice.stderrText)")
        let ci = try vault.run(["identity", "new", "--no-passphrase", "--out", ciPath])
        try #require(ci.status == 0, "\(ci.stderrText)")
        for path in [alicePath, ciPath] { try registerSecrets(ofIdentity: path) }
    }

    /// The identity files' private parts, so the leak scanner looks for them everywhere.
    public func registerSecrets(ofIdentity path: String) throws {
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any]
        for key in ["secret", "sealed"] {
            if let value = object?[key] as? String { LeakScanner.shared.register(secret: value) }
        }
    }

    public func recipient(_ path: String) throws -> String {
        try vault.run(["identity", "show", "--identity", path]).stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Runs vault as a member: no vault passphrase at all, the identity file instead.
    @discardableResult
    public func run(as identity: String, _ arguments: [String], token: Bool = false) throws -> ProcessResult {
        var env = ["VAULT_IDENTITY_FILE": identity]
        if identity == alicePath { env["VAULT_IDENTITY_PASSPHRASE"] = alicePassphrase }
        let result = try vault.run(arguments, env: env, removing: ["VAULT_PASSPHRASE"], expectTokenOnStdout: token)
        return token ? registeringToken(result) : result
    }

    public func addBoth() throws {
        #expect(try vault.run(["member", "add", "alice", "--recipient", recipient(alicePath)]).status == 0)
        #expect(try vault.run(["member", "add", "ci", "--recipient", recipient(ciPath)]).status == 0)
    }

    public func audit(_ extra: [String] = []) throws -> [[String: Any]] {
        try JSONSerialization.jsonObject(with: vault.run(["audit", "--json"] + extra).stdout) as? [[String: Any]] ?? []
    }
}
