import Foundation
import Testing
import VaultTestSupport

/// Defaults: the config file (`$XDG_CONFIG_HOME/gbg-vault/config`, else
/// `~/.config/gbg-vault/config`) and `VAULT_PROFILE`, with flag > environment > config.
@Suite("defaults: config file and VAULT_PROFILE")
struct DefaultsTests {
    /// Writes the config file under the test vault's HOME, mode `mode`.
    static func writeConfig(_ vault: TestVault, _ text: String, mode: Int = 0o600) throws -> String {
        let directory = vault.directory + "/.config/gbg-vault"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let path = directory + "/config"
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: path)
        return path
    }

    @Test("flag > environment > config file > default, for the vault and the profile; unknown keys warned; doctor shows where each came from")
    func precedence() throws {
        let session = try SessionFixture()
        let fixture = session.fixture
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        let path = try Self.writeConfig(vault, """
            # gbg-vault settings
            vault = \(vault.path)
            profile = pw
            colour = blue
            not a setting
            """)
        let noPath = ["VAULT_PATH"]

        // The config's vault and profile.
        let token = registeringToken(try vault.run(["token"], removing: noPath, expectTokenOnStdout: true))
        #expect(token.status == 0 && token.stdoutText.hasPrefix("stub-"), "\(token.stderrText)")
        #expect(token.stderrText.contains("\(path) line 4: unknown key 'colour' ignored (known: vault, profile)"), "\(token.stderrText)")
        #expect(token.stderrText.contains("\(path) line 5: not `key = value`; ignored"))
        // VAULT_PROFILE over the config; an argument over both.
        let show = { (arguments: [String], extra: [String: String]) throws -> String? in
            let result = try vault.run(arguments + ["--json"], env: extra, removing: noPath)
            return (try? JSONSerialization.jsonObject(with: result.stdout) as? [String: Any])?["name"] as? String
        }
        #expect(try show(["show"], [:]) == "pw")
        #expect(try show(["show"], ["VAULT_PROFILE": "cc"]) == "cc")
        #expect(try show(["show", "pw"], ["VAULT_PROFILE": "cc"]) == "pw")
        let history = try vault.run(["history"], env: ["VAULT_PROFILE": "cc"], removing: noPath)
        #expect(history.status == 0 && history.stdoutText.contains("client_secret"), "\(history.stderrText)")

        // --vault and VAULT_PATH over the config's vault.
        let other = TestVault()
        try other.initialise()
        let viaFlag = try vault.run(["list", "--json", "--vault", other.path], removing: noPath)
        #expect(viaFlag.status == 0 && viaFlag.stdoutText == "[]\n", "\(viaFlag.stdoutText) \(viaFlag.stderrText)")
        let viaEnv = try vault.run(["list", "--json"], env: ["VAULT_PATH": other.path])
        #expect(viaEnv.stdoutText == "[]\n")
        #expect(try vault.run(["list", "--json"], removing: noPath).stdoutText.contains("\"pw\""))

        // doctor says where each setting came from.
        let doctor = try vault.run(["doctor", "--json"], env: ["VAULT_PROFILE": "cc"], removing: noPath).stdoutText
        #expect(doctor.contains("config \(path): \(vault.path)") && doctor.contains("default 'cc' from VAULT_PROFILE"), "\(doctor)")
        #expect(doctor.contains("unknown key 'colour'"))
        let doctorFlag = try vault.run(["doctor", "--json", "--vault", vault.path], removing: noPath).stdoutText
        #expect(doctorFlag.contains("--vault: \(vault.path)") && doctorFlag.contains("default 'pw' from config \(path)"), "\(doctorFlag)")

        // A session: the agent of the config's vault serves `token NAME` (the client before
        // main follows the same rule) and the name-less `token`.
        #expect(try session.run(["unlock", "--for", "5m"], extra: ["VAULT_PATH": vault.path]).status == 0)
        for arguments in [["token", "pw"], ["token"]] {
            var env = session.env
            env["VAULT_PATH"] = nil
            let served = registeringToken(try vault.run(arguments, env: env, removing: noPath + ["VAULT_PASSPHRASE"], expectTokenOnStdout: true))
            #expect(served.status == 0 && served.stdoutText.hasPrefix("stub-"), "\(arguments): \(served.stderrText)")
        }
        #expect(try session.run(["lock"], passphrase: false, extra: ["VAULT_PATH": vault.path]).status == 0)
        expectNoLeaks(vault)
    }

    @Test("a config file others can write is not used (warned), and no default profile is a usage error")
    func unsafeConfigAndNoDefault() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        let path = try Self.writeConfig(vault, "vault = \(vault.path)\nprofile = pw\n", mode: 0o664)
        // Not used: the vault is the default one (none there), the profile none.
        let refused = try vault.run(["list"], removing: ["VAULT_PATH"])
        #expect(refused.status == 6, "\(refused.stderrText)")
        #expect(refused.stderrText.contains("the config file \(path) is not used: group or others can write it"), "\(refused.stderrText)")
        let noDefault = try vault.run(["token"])
        #expect(noDefault.status == 64 && noDefault.stderrText.contains("no profile named and no default profile"), "\(noDefault.stderrText)")
        #expect(noDefault.stderrText.contains("VAULT_PROFILE"))
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: path)
        let used = try vault.run(["list"], removing: ["VAULT_PATH"])
        #expect(used.status == 0 && used.stderrText.isEmpty, "\(used.stderrText)")
        // A relative `vault` is not used (it would depend on the current directory); `~/` is
        // the home directory; a NUL byte or a directory others can write: the file is not used.
        _ = try Self.writeConfig(vault, "vault = vault.db\n")
        let relative = try vault.run(["list"], removing: ["VAULT_PATH"])
        #expect(relative.status == 6 && relative.stderrText.contains("`vault = vault.db` is not used"), "\(relative.stderrText)")
        let home = try Self.writeConfig(vault, "vault = ~/\(vault.path.dropFirst(vault.directory.count + 1))\n")
        #expect(vault.path.hasPrefix(vault.directory + "/"))
        let tilde = try vault.run(["list", "--json"], removing: ["VAULT_PATH"])
        #expect(tilde.status == 0 && tilde.stdoutText.contains("\"pw\""), "\(tilde.stderrText)")
        try Data("vault = \(vault.path)\u{0}junk\n".utf8).write(to: URL(fileURLWithPath: home))
        #expect(try vault.run(["list"], removing: ["VAULT_PATH"]).stderrText.contains("contains a NUL byte"))
        _ = try Self.writeConfig(vault, "vault = \(vault.path)\n")
        let directory = (home as NSString).deletingLastPathComponent
        try FileManager.default.setAttributes([.posixPermissions: 0o777], ofItemAtPath: directory)
        let looseDirectory = try vault.run(["list"], removing: ["VAULT_PATH"])
        #expect(looseDirectory.status == 6 && looseDirectory.stderrText.contains("others can write it"), "\(looseDirectory.stderrText)")
        try FileManager.default.setAttributes([.posixPermissions: 0o700], ofItemAtPath: directory)
        // doctor with no vault at the configured place still says where it looked.
        _ = try Self.writeConfig(vault, "vault = \(vault.directory)/missing.db\n")
        let doctor = try vault.run(["doctor"], removing: ["VAULT_PATH"])
        #expect(doctor.status == 6 && doctor.stdoutText.contains("vault from") && doctor.stdoutText.contains("missing.db"), "\(doctor.stdoutText)")
        // No config file at all: nothing said.
        try FileManager.default.removeItem(atPath: home)
        #expect(try vault.run(["list"]).stderrText.isEmpty)
        expectNoLeaks(vault)
    }
}
