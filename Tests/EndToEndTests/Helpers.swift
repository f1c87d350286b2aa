import Foundation
import Testing
import VaultTestSupport

/// Fails the current test if the shared scanner has found any secret or token anywhere,
/// and reports how many artefacts have been scanned so far.
func expectNoLeaks(_ vault: TestVault? = nil, sourceLocation: SourceLocation = #_sourceLocation) {
    vault?.scanFiles()
    let scanner = LeakScanner.shared
    #expect(scanner.hits.isEmpty, "leaks: \(scanner.hits.prefix(5))", sourceLocation: sourceLocation)
    print("leak scan: \(scanner.artefactsScanned) artefacts scanned, \(scanner.hitCount) hits")
}

/// A stub with one password-grant user and one client-credentials client.
struct Fixture {
    let vault: TestVault
    let stub: StubServer
    let clientSecret: String
    let password: String
    let ccSecret: String

    init(stubArguments: [String] = [], temporaryPassword: Bool = false, tokenTTL: Int? = nil, addProfiles: Bool = true,
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
    func token(_ name: String, _ extra: [String] = []) throws -> ProcessResult {
        let result = try vault.run(["token", name] + extra, expectTokenOnStdout: true)
        if result.status == 0 {
            let text = result.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)
            if !text.isEmpty, !text.contains("\n") { LeakScanner.shared.register(token: text) }
        }
        return result
    }

    func auditJSON(_ extra: [String] = []) throws -> [[String: Any]] {
        let result = try vault.run(["audit", "--json"] + extra)
        return (try JSONSerialization.jsonObject(with: result.stdout) as? [[String: Any]]) ?? []
    }
}

/// The independent reader of FORMAT.md (`testvectors/open_vault.py`): its JSON report,
/// or nil with the reason when it refuses the file.
func independentReader(path: String, passphrase: String, extra: [String] = [],
                       identityPassphrase: String? = nil) throws -> (report: [String: Any]?, error: String?) {
    let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("testvectors/open_vault.py").path
    var environment = ["PATH": "/usr/local/bin:/usr/bin:/bin", "VAULT_PASSPHRASE": passphrase]
    if let identityPassphrase { environment["VAULT_IDENTITY_PASSPHRASE"] = identityPassphrase }
    let result = try Binaries.run("/usr/bin/env", ["python3", "-B", script, path, "--allow-test-kdf"] + extra,
                                  environment: environment)
    let object = try? JSONSerialization.jsonObject(with: result.stdout) as? [String: Any]
    if result.status == 0, let object { return (object, nil) }
    return (nil, (object?["error"] as? String) ?? "reader failed (\(result.status)): \(result.stderrText)")
}

/// The repository's folder.
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
