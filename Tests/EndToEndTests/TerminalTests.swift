import Foundation
import Testing
import VaultTestSupport

/// What happens only at a terminal, run on a pseudo-terminal of its own
/// (`Tests/tools/pty_run.py`): passphrase retries and the new-passphrase rules, the
/// subshell of `exec`, the "waiting for" line; and that a pipe gets none of it.
@Suite("at a terminal: prompts, retries, subshell, waiting line")
struct TerminalTests {
    /// The lines of a terminal transcript, without carriage returns.
    static func lines(_ result: ProcessResult) -> [String] {
        result.stdoutText.replacingOccurrences(of: "\r", with: "").components(separatedBy: "\n")
    }

    /// The token a terminal run printed (its `stub-` line), registered with the scanner.
    static func registerToken(_ result: ProcessResult) {
        for line in lines(result) where line.hasPrefix("stub-") { LeakScanner.shared.register(token: line) }
    }

    static func occurrences(_ text: String, in transcript: ProcessResult) -> Int {
        transcript.stdoutText.components(separatedBy: text).count - 1
    }

    @Test("a wrong passphrase at the terminal is asked for again, three times in all; from a variable or a pipe it is tried once")
    func passphraseRetries() throws {
        let team = try TeamFixture()
        let fixture = team.fixture
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        try team.addBoth()
        let second = try vault.runOnTerminal(["token", "pw"], removing: ["VAULT_PASSPHRASE"], steps: [
            .expect("Vault passphrase: "), .send("not the passphrase"),
            .expect("wrong passphrase, try again (2 left)"),
            .expect("Vault passphrase: "), .send(vault.passphrase),
        ], expectTokenOnScreen: true)
        Self.registerToken(second)
        #expect(second.status == 0, "\(second.stdoutText) \(second.stderrText)")
        #expect(Self.lines(second).contains { $0.hasPrefix("stub-") })

        let three = try vault.runOnTerminal(["token", "pw"], removing: ["VAULT_PASSPHRASE"], steps: [
            .expect("Vault passphrase: "), .send("wrong 1"),
            .expect("Vault passphrase: "), .send("wrong 2"),
            .expect("(1 left)"),
            .expect("Vault passphrase: "), .send("wrong 3"),
        ])
        #expect(three.status == 3, "\(three.stdoutText)")
        #expect(Self.occurrences("Vault passphrase: ", in: three) == 3)
        #expect(three.stdoutText.contains("vault: error: wrong passphrase"))
        let records = try fixture.auditJSON()
        #expect(records.filter { $0["action"] as? String == "token" }.count == 1, "a wrong passphrase writes no record")

        // Not at a terminal: a wrong passphrase from the variable fails at once, and with
        // no source there is no prompt at all.
        let variable = try vault.run(["token", "pw"], env: ["VAULT_PASSPHRASE": "not the passphrase"])
        #expect(variable.status == 3 && !variable.stderrText.contains("try again"), "\(variable.stderrText)")
        let piped = try vault.run(["token", "pw"], removing: ["VAULT_PASSPHRASE"], stdin: Data("\(vault.passphrase)\n".utf8))
        #expect(piped.status == 64 && piped.stderrText.contains("no terminal to prompt on"), "\(piped.stderrText)")
        #expect(!piped.stderrText.contains("passphrase: "))
        // The same for a member's identity passphrase, at a terminal.
        let identity = try vault.runOnTerminal(["token", "pw", "--fresh"], env: ["VAULT_IDENTITY_FILE": team.alicePath],
                                               removing: ["VAULT_PASSPHRASE"], steps: [
            .expect("Identity passphrase: "), .send("not hers"),
            .expect("wrong passphrase, try again (2 left)"),
            .expect("Identity passphrase: "), .send(team.alicePassphrase),
        ], expectTokenOnScreen: true)
        Self.registerToken(identity)
        #expect(identity.status == 0, "\(identity.stdoutText)")
        expectNoLeaks(vault)
    }

    @Test("a new passphrase: a short one or a mistyped repetition is asked for again; from a source a short one is refused unless allowed")
    func newPassphraseRules() throws {
        let vault = TestVault()
        let made = try vault.runOnTerminal(["init"], removing: ["VAULT_PASSPHRASE"], steps: [
            .expect("New vault passphrase: "), .send("short"),
            .expect("too short (5 characters; at least 12); try again (2 left)"),
            .expect("New vault passphrase: "), .send(vault.passphrase),
            .expect("Repeat it: "), .send(vault.passphrase + " typo"),
            .expect("the two passphrases differ; try again (1 left)"),
            .expect("New vault passphrase: "), .send(vault.passphrase),
            .expect("Repeat it: "), .send(vault.passphrase),
        ])
        #expect(made.status == 0, "\(made.stdoutText) \(made.stderrText)")
        #expect(try vault.run(["audit", "verify"]).status == 0, "the vault opens with the passphrase typed the third time")

        // Three mistakes end the command; nothing is created.
        let other = TestVault()
        let failed = try other.runOnTerminal(["init"], removing: ["VAULT_PASSPHRASE"], steps: [
            .expect("New vault passphrase: "), .send("a"),
            .expect("New vault passphrase: "), .send("b"),
            .expect("New vault passphrase: "), .send("c"),
        ])
        #expect(failed.status == 64 && failed.stdoutText.contains("vault: error: the new passphrase is too short"), "\(failed.stdoutText)")
        #expect(!FileManager.default.fileExists(atPath: other.path))

        // From a variable: refused at once (12 code points is the rule: "ß∂ƒ" counts 3).
        let short = TestVault(passphrase: "ß∂ƒ 7 chars")
        let refused = try short.run(["init"])
        #expect(refused.status == 64 && refused.stderrText.contains("too short (11 characters; at least 12)"), "\(refused.stderrText)")
        #expect(refused.stderrText.contains("--allow-short-passphrase"))
        #expect(!FileManager.default.fileExists(atPath: short.path))
        #expect(try short.run(["init", "--allow-short-passphrase"]).status == 0)
        #expect(try short.run(["audit", "verify"]).status == 0)

        // passwd: a short new passphrase is refused and the old one still opens the vault.
        let passwd = try vault.run(["passwd"], env: ["VAULT_NEW_PASSPHRASE": "2short"])
        #expect(passwd.status == 64 && passwd.stderrText.contains("too short"), "\(passwd.stderrText)")
        #expect(try vault.run(["audit", "verify"]).status == 0)
        expectNoLeaks(vault)
    }

    @Test("exec without a command starts $SHELL with the token and GBG_VAULT_PROFILE; a missing command exits 127, one that cannot run 126")
    func execShell() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        let shell = try vault.runOnTerminal(["exec", "pw"], env: ["SHELL": "/bin/sh", "PS1": "test-shell$ "], steps: [
            .expect("starting /bin/sh with the token of 'pw'"),
            .expect("test-shell$ "), .send(#"echo "profile=$GBG_VAULT_PROFILE length=${#GBG_ACCESS_TOKEN} passphrase=${VAULT_PASSPHRASE:-unset}""#),
            .expect("profile=pw length="),
            .expect("test-shell$ "), .send("exit 7"),
        ])
        #expect(shell.status == 7, "\(shell.stdoutText) \(shell.stderrText)")
        #expect(shell.stdoutText.contains("passphrase=unset"), "the subshell never sees the passphrase")
        #expect(!shell.stdoutText.contains("length=0"))

        let missing = try vault.run(["exec", "pw", "--", "/nonexistent/gbg-vault-test-command"])
        #expect(missing.status == 127 && missing.stderrText.contains("cannot run '/nonexistent/gbg-vault-test-command'"), "\(missing.stderrText)")
        let notExecutable = vault.directory + "/not-executable.sh"
        try Data("echo hi\n".utf8).write(to: URL(fileURLWithPath: notExecutable))
        let denied = try vault.run(["exec", "pw", "--", notExecutable])
        #expect(denied.status == 126, "\(denied.stderrText)")
        // In a pipe, the shell reads its commands from stdin, as `sh` does.
        let piped = try vault.run(["exec", "pw"], env: ["SHELL": "/bin/sh"], stdin: Data("echo \"in $GBG_VAULT_PROFILE\"\n".utf8))
        #expect(piped.status == 0 && piped.stdoutText == "in pw\n", "\(piped.stdoutText) \(piped.stderrText)")
        #expect(!piped.stderrText.contains("starting"))
        expectNoLeaks(vault)
    }

    @Test("a slow endpoint shows a waiting line at the terminal after 2 s, and none in a pipe")
    func waitingLine() throws {
        let fixture = try Fixture(stubArguments: ["--fault", "stall"])
        defer { fixture.stub.stop() }
        let origin = fixture.stub.tokenURL.components(separatedBy: "/as/").first ?? ""
        let shown = try fixture.vault.runOnTerminal(["token", "pw", "--timeout", "4"], steps: [
            .expect("vault: waiting for \(origin) (2 s)"),
            .expect("(3 s)"),
        ])
        #expect(shown.status == 5, "\(shown.stdoutText)")
        #expect(shown.stdoutText.contains("\nvault: error: token endpoint unavailable: \(origin): timed out after 4 s"), "\(shown.stdoutText)")
        let piped = try fixture.token("pw", ["--timeout", "3"])
        #expect(piped.status == 5 && !piped.stderrText.contains("waiting"), "\(piped.stderrText)")
        expectNoLeaks(fixture.vault)
    }

    @Test("through an agent, a slow exchange shows the client's waiting line at the terminal after 2 s, and none in a pipe")
    func waitingLineThroughAgent() throws {
        let session = try SessionFixture(stubArguments: ["--fault", "stall"])
        defer { session.fixture.stub.stop() }
        let vault = session.vault
        #expect(try session.run(["unlock", "--for", "5m"]).status == 0)
        defer { _ = try? session.run(["lock"], passphrase: false) }
        let shown = try vault.runOnTerminal(["token", "pw", "--fresh", "--timeout", "4"], env: session.env, removing: ["VAULT_PASSPHRASE"], steps: [
            .expect("vault: waiting for the agent (2 s)"),
            .expect("(3 s)"),
        ])
        #expect(shown.status == 5, "\(shown.stdoutText)")
        #expect(shown.stdoutText.contains(" s)\r\nvault: error: token endpoint unavailable"), "the line is ended before the error: \(shown.stdoutText)")
        let piped = try session.run(["token", "pw", "--fresh", "--timeout", "3"], passphrase: false)
        #expect(piped.status == 5 && !piped.stderrText.contains("waiting"), "\(piped.stderrText)")
        expectNoLeaks(vault)
    }

    @Test("audit at a terminal: the newest 50 and how to see more, the pager when longer than the screen, local times; piped: everything")
    func auditAtTerminal() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        for _ in 0..<30 { for name in ["pw", "cc"] { #expect(try fixture.token(name).status == 0) } }
        let total = try Int(vault.sql("SELECT count(*) FROM audit_record").stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        #expect(total > 60)
        let dataRows = { (result: ProcessResult) in Self.lines(result).filter { $0.first?.isNumber == true }.count }

        let capped = try vault.runOnTerminal(["audit"], steps: [], rows: 200)
        #expect(capped.status == 0 && dataRows(capped) == 50, "\(capped.stdoutText)")
        #expect(capped.stdoutText.contains("(the newest 50 records; --limit N or --all for more)"))
        let all = try vault.runOnTerminal(["audit", "--all"], steps: [], rows: 200)
        #expect(dataRows(all) == total && !all.stdoutText.contains("the newest 50"))
        let list = try vault.runOnTerminal(["audit", "list", "--limit", "70"], steps: [], rows: 200)
        #expect(dataRows(list) == min(70, total) && !list.stdoutText.contains("the newest"))

        // Longer than the screen: through $PAGER (here one that marks each line).
        let paged = try vault.runOnTerminal(["audit"], env: ["PAGER": "sed 's/^/paged: /'"], steps: [], rows: 24)
        #expect(paged.status == 0)
        #expect(Self.lines(paged).filter { $0.hasPrefix("paged: ") }.count == 52, "header, 50 rows and the footer: \(paged.stdoutText)")
        let unpaged = try vault.runOnTerminal(["audit", "--no-pager"], env: ["PAGER": "sed 's/^/paged: /'"], steps: [], rows: 24)
        #expect(!unpaged.stdoutText.contains("paged: ") && dataRows(unpaged) == 50)
        let short = try vault.runOnTerminal(["audit", "--limit", "3"], env: ["PAGER": "sed 's/^/paged: /'"], steps: [], rows: 24)
        #expect(!short.stdoutText.contains("paged: ") && dataRows(short) == 3, "shorter than the screen: no pager")

        // Ctrl-C while the pager runs is the pager's: vault waits for it and ends with it.
        let patient = try vault.runOnTerminal(["audit"], env: ["PAGER": "sh -c 'trap \"\" INT; cat >/dev/null; echo pager-started; sleep 1; echo pager-done'"],
                                              steps: [.expect("pager-started"), .sendRaw("\u{3}"), .expect("pager-done")], rows: 24)
        #expect(patient.status == 0, "vault ended before its pager: \(patient.status) \(patient.stdoutText)")

        // Local time: the same instants with the zone's offset.
        let local = try vault.runOnTerminal(["audit", "--limit", "1", "--local-time"], env: ["TZ": "Asia/Kolkata"], steps: [], rows: 200)
        #expect(local.stdoutText.contains("+05:30"), "\(local.stdoutText)")

        // Piped: every record, no footer, never a pager.
        let piped = try vault.run(["audit"], env: ["PAGER": "sed 's/^/paged: /'"])
        #expect(piped.stdoutText.split(separator: "\n").count == total + 1 && !piped.stdoutText.contains("paged: "))
        expectNoLeaks(vault)
    }
}
