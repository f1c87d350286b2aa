import Foundation
import Testing
import VaultTestSupport

/// The program's arguments as `vault` sees them, in the debug and (.ci/run, with
/// `VAULT_TEST_BIN_DIR`) the release binary.
@Suite("arguments")
struct ArgumentTests {
    @Test("the test builds' fault points: armed in the debug binary, ignored by the release binary (compiled out)")
    func faultPointsOnlyInTestBuilds() throws {
        let vault = TestVault(passphrase: "fixture passphrase v1 ✓")
        try FileManager.default.createDirectory(atPath: (vault.path as NSString).deletingLastPathComponent, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        try FileManager.default.copyItem(atPath: repositoryRoot.appendingPathComponent("testvectors/v1/v1-interactive.db").path, toPath: vault.path)
        // The fixture with a real Argon2id preset: a release binary refuses the test-only KDF.
        let result = try vault.run(["upgrade"], env: ["GBG_VAULT_TEST_FAULT": "upgrade-format3-begins:ioerror"],
                                   removing: ["GBG_VAULT_TEST_ONLY_INSECURE_KDF"])
        if ProcessInfo.processInfo.environment["VAULT_TEST_BIN_DIR"] != nil {
            #expect(result.status == 0 && result.stderrText.contains("from format 1 to format 4"), "release: \(result.stderrText)")
        } else {
            #expect(result.status == 1 && result.stderrText.contains("but not to format 4"), "debug: \(result.stderrText)")
        }
    }

    @Test("arguments reach vault byte for byte: spaces, non-ASCII, an emoji, on the fast and the full way")
    func exact() throws {
        let vault = TestVault()
        let odd = vault.directory + "/dir with spaces/naïve 🔑 ünïcode.db"
        // `list` and `status` take the fast way, `env list` the full parser: each names the path.
        for arguments in [["list", "--vault", odd], ["--vault", odd, "status"], ["env", "list", "--vault=" + odd]] {
            let result = try vault.run(arguments)
            #expect(result.status == 6, "\(arguments): \(result.status) \(result.stderrText)")
            #expect(result.stderrText.contains("no vault at \(odd)"), "\(arguments): \(result.stderrText)")
        }
        let extra = try vault.run(["list", "first extra", "zweites ünïcode"])
        #expect(extra.status == 64)
        #expect(extra.stderrText.contains("'first extra', 'zweites ünïcode'"), "\(extra.stderrText)")
    }

    @Test("an empty --vault, --passphrase-file or --identity is a usage error, never the default vault")
    func emptyValues() throws {
        let vault = TestVault()
        // A vault at the default location ($HOME/.local/share/gbg-vault/vault.db here), with a profile.
        let home = ["VAULT_PATH": ""]
        #expect(try vault.run(["init", "--kdf", "interactive"], env: home).status == 0)
        let add = try vault.run(["add", "home-profile", "--client-id", "c", "--grant", "client-credentials", "--secrets-from-env"],
                                env: home.merging(["GBG_CLIENT_SECRET": "argument-test-secret"]) { $1 })
        #expect(add.status == 0, "\(add.stderrText)")
        #expect(try vault.run(["list"], env: home).stdoutText.contains("home-profile"), "the default vault is there")
        for arguments in [["list", "--vault", ""], ["--vault", "", "list"], ["token", "home-profile", "--vault", ""],
                          ["status", "--vault", ""], ["audit", "--vault", ""], ["add", "x", "--client-id", "c", "--vault", ""],
                          ["list", "--passphrase-file", ""], ["token", "home-profile", "--identity", ""]] {
            let result = try vault.run(arguments, env: home)
            #expect(result.status == 64, "\(arguments): \(result.status) \(result.stderrText)")
            #expect(result.stderrText.contains("needs a path"), "\(arguments): \(result.stderrText)")
            #expect(!result.stdoutText.contains("home-profile"), "\(arguments) read the default vault")
        }
        #expect(try vault.run(["list"], env: home).stdoutText.split(separator: "\n").filter { $0.contains("profile") }.count == 1,
                "nothing was added to the default vault")
    }
}
