import Foundation
import Testing
import VaultTestSupport

@Suite("input hygiene")
struct InputHygieneTests {
    static let badNames = ["", "-rf", ".hidden", "a/b", "../x", "a b", "a\nb", "a\tb", "a;rm -rf", "$(id)", "`id`", "a|b",
                           "a\u{202e}b", "a\u{200b}b", String(repeating: "x", count: 65), "名前/x", "a\\b", "*"]

    @Test("bad profile and environment names are refused with exit 64 and nothing is stored")
    func names() throws {
        let vault = TestVault()
        try vault.initialise()
        for name in Self.badNames {
            let add = try vault.add(name, clientID: "c", clientSecret: "hygiene-secret", grant: "client-credentials")
            #expect(add.status == 64, "profile \(name.debugDescription): \(add.status) \(add.stderrText)")
            let env = try vault.run(["env", "add", name, "--token-url", "https://auth.example/as/token.oauth2"])
            #expect(env.status == 64, "environment \(name.debugDescription): \(env.status)")
            #expect(!add.stderrText.contains("\n\n"))
        }
        #expect(try vault.sql("SELECT count(*) FROM profile; SELECT count(*) FROM environment").stdoutText == "0\n0\n")
        // Homoglyphs are distinct names, stored NFC-normalised and shown as they are.
        #expect(try vault.add("prod", clientID: "c", clientSecret: "hygiene-secret", grant: "client-credentials").status == 0)
        #expect(try vault.add("prоd", clientID: "c", clientSecret: "hygiene-secret", grant: "client-credentials").status == 0) // Cyrillic о
        #expect(try vault.add("Cafe\u{301}", clientID: "c", clientSecret: "hygiene-secret", grant: "client-credentials").status == 0)
        #expect(try vault.add("Caf\u{e9}", clientID: "c", clientSecret: "hygiene-secret", grant: "client-credentials").status == 1) // same after NFC
        let names = try vault.sql("SELECT name FROM profile ORDER BY name").stdoutText
        #expect(names.split(separator: "\n").count == 3)
    }

    @Test("bad URLs and flag values are refused", arguments: [
        ["env", "add", "x", "--token-url", "http://example.com/as/token.oauth2"],
        ["env", "add", "x", "--token-url", "https://user:secret@example.com/as"],
        ["env", "add", "x", "--token-url", "file:///etc/passwd"],
        ["env", "add", "x", "--token-url", "https://example.com/\u{7}x"],
        ["env", "add", "x", "--token-url", "https://example.com/" + String(repeating: "a", count: 5000)],
        ["env", "add", "x", "--token-url", "https://example.com/", "--api-base", "javascript:alert(1)"],
        ["token", "p", "--min-ttl", "-1"],
        ["token", "p", "--timeout", "0"],
        ["token", "p", "--format", "yaml"],
        ["audit", "--limit", "0"],
        ["add", "p", "--client-id", "c"],
        ["add", "p", "--client-id", "c", "--grant", "client-credentials", "--username", "u"],
        ["add", "p", "--client-id", "", "--grant", "client-credentials", "--secrets-from-env"],
        ["add", "p", "--client-id", "c\nd", "--grant", "client-credentials", "--secrets-from-env"],
    ])
    func flags(arguments: [String]) throws {
        let vault = TestVault()
        try vault.initialise()
        let result = try vault.run(arguments, env: ["GBG_CLIENT_SECRET": "hygiene-secret"])
        #expect(result.status == 64, "\(arguments): \(result.status) \(result.stderrText)")
        #expect(try vault.sql("SELECT count(*) FROM profile; SELECT count(*) FROM environment").stdoutText == "0\n0\n")
    }

    @Test("the vault path as a directory, a dangling path, or a file owned by someone else")
    func paths() throws {
        let vault = TestVault()
        let directory = vault.directory + "/a-directory"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let asDirectory = try vault.run(["list"], env: ["VAULT_PATH": directory])
        #expect(asDirectory.status == 1)
        #expect(asDirectory.stderrText.contains("not a regular file"))
        #expect(try vault.run(["init"], env: ["VAULT_PATH": directory]).status == 1)
        let dangling = vault.directory + "/dangling.db"
        try FileManager.default.createSymbolicLink(atPath: dangling, withDestinationPath: vault.directory + "/nowhere/x.db")
        #expect(try vault.run(["init"], env: ["VAULT_PATH": dangling]).status == 1) // O_NOFOLLOW|O_EXCL: never written through
        #expect(!FileManager.default.fileExists(atPath: vault.directory + "/nowhere/x.db"))
        try vault.initialise()
        if getuid() == 0 {
            chown(vault.path, 65534, 65534)
            let doctor = try vault.run(["doctor"])
            #expect(doctor.status == 1)
            #expect(doctor.stdoutText.contains("owned by uid 65534"))
        }
    }
}
