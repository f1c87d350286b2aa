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
