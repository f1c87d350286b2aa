import Foundation
import Testing
import VaultTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Everyday ergonomics: env set/show, suggestions, cheap checks before the passphrase,
/// completions, the man page, audit as a stream.
@Suite("everyday ergonomics, end to end")
struct ErgonomicsTests {
    @Test("env set moves the next exchange to the new endpoint, drops cached tokens, is audited; refused on built-ins and bad URLs")
    func environmentSet() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        let moved = try StubServer(accounts: try writeAccounts(
            in: vault.directory,
            clients: [["client_id": "client-pw", "client_secret": fixture.clientSecret, "grants": ["password"]]],
            users: [["username": "api-user@example.com", "password": fixture.password]]))
        defer { moved.stop() }
        #expect(try fixture.token("pw").status == 0)
        #expect(try vault.sql("SELECT count(*) FROM token_cache WHERE environment = 'local'").stdoutText == "1\n")
        let before = try vault.sql("SELECT token_url, api_base, hex(mac) FROM environment; SELECT count(*) FROM audit_record").stdoutText

        // Refused, nothing changed: built-ins, bad URLs, nothing to set, no such environment.
        for (arguments, code) in [(["env", "set", "eu", "--token-url", "https://x.example/t"], 64),
                                  (["env", "set", "local", "--token-url", "http://evil.example/t"], 64),
                                  (["env", "set", "local", "--token-url", "https://user:pw@x.example/t"], 64),
                                  (["env", "set", "local", "--api-base", "ftp://x.example/"], 64),
                                  (["env", "set", "local"], 64),
                                  (["env", "set", "nowhere", "--token-url", "https://x.example/t"], 6)] {
            let result = try vault.run(arguments)
            #expect(result.status == Int32(code), "\(arguments): \(result.stderrText)")
        }
        #expect(try vault.sql("SELECT token_url, api_base, hex(mac) FROM environment; SELECT count(*) FROM audit_record").stdoutText == before)

        let set = try vault.run(["env", "set", "local", "--token-url", moved.tokenURL, "--api-base", moved.apiBase])
        #expect(set.status == 0, "\(set.stderrText)")
        #expect(try vault.sql("SELECT count(*) FROM token_cache").stdoutText == "0\n")
        let show = try JSONSerialization.jsonObject(with: vault.run(["env", "show", "local", "--json"], removing: ["VAULT_PASSPHRASE"]).stdout) as? [String: Any]
        #expect(show?["token_url"] as? String == moved.tokenURL)
        #expect(show?["api_base"] as? String == moved.apiBase)
        #expect((show?["profiles"] as? [String])?.sorted() == ["cc", "pw"])
        let json = try vault.run(["token", "pw", "--format", "json"], expectTokenOnStdout: true)
        #expect(json.status == 0, "\(json.stderrText)")
        let object = try JSONSerialization.jsonObject(with: json.stdout) as? [String: Any]
        if let token = object?["access_token"] as? String { LeakScanner.shared.register(token: token) }
        #expect(object?["api_base"] as? String == moved.apiBase)
        #expect(try moved.tokenRequests() == 1)
        #expect(try fixture.stub.tokenRequests() == 1)
        let audit = try fixture.auditJSON(["--limit", "2"])
        #expect(audit.last?["action"] as? String == "env-set")
        #expect((audit.last?["detail"] as? String)?.contains("changed=token_url,api_base cached_tokens_dropped=1") == true)
        #expect(try vault.run(["env", "set", "local", "--no-api-base"]).status == 0)
        #expect(try vault.run(["env", "show", "local"]).stdoutText.contains("api base:      -"))
        #expect(try vault.run(["verify"]).status == 0)
        expectNoLeaks(vault)
    }

    @Test("audit and list print the same on the fast path as through the full parser, errors included")
    func readOnlyFastPath() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        for name in ["pw", "cc", "pw"] { #expect(try fixture.token(name).status == 0) }
        #expect(try vault.run(["token", "pw", "--fresh"], expectTokenOnStdout: true).status == 0)
        // Each pair: a shape the fast path takes, and the same request with `--verbose`
        // (unknown to the fast path: the full parser takes it; the trace goes to stderr).
        let shapes: [[String]] = [
            ["audit"], ["audit", "list"], ["audit", "--json"], ["audit", "--jsonl"], ["audit", "list", "--jsonl", "--limit", "2"],
            ["audit", "--profile", "pw", "--limit", "3", "--json"], ["audit", "--profile=cc", "--env", "local", "--jsonl"],
            ["audit", "--outcome", "ok", "--json"], ["audit", "--outcome", "cache_hit"], ["audit", "--outcome", "error", "--json"],
            ["audit", "--since", "1h", "--until", "\(Int(Date().timeIntervalSince1970) + 60)", "--json"],
            ["audit", "--member", "nobody", "--json"], ["--vault", vault.path, "audit", "--limit", "1"], ["audit", "--all"],
            ["audit", "list", "--all", "--no-pager"], ["audit", "--local-time", "--limit", "2"],
            ["list"], ["list", "--json"], ["--vault=\(vault.path)", "list"],
        ]
        for shape in shapes {
            let fast = try vault.run(shape, removing: ["VAULT_PASSPHRASE"])
            let full = try vault.run(shape + ["--verbose"], removing: ["VAULT_PASSPHRASE"])
            #expect(fast.status == 0 && full.status == 0, "\(shape): \(fast.stderrText) / \(full.stderrText)")
            #expect(fast.stdoutText == full.stdoutText, "\(shape): the fast path and the full parser differ")
            #expect(!fast.stdoutText.isEmpty || shape.contains("nobody"), "\(shape) printed nothing")
            #expect(fast.stderrText.isEmpty, "\(shape): \(fast.stderrText)")
        }
        // Wrong input: the same exit code and message either way (the fast path hands
        // anything it does not take to the full parser).
        let errors: [[String]] = [
            ["audit", "--limit", "0"], ["audit", "--outcome", "nope"], ["audit", "--since", "yesterday"],
            ["audit", "--json", "--jsonl"], ["audit", "--profile"], ["list", "extra"], ["audit", "bogus"],
            ["audit", "--all", "--limit", "2"], ["audit", "--json", "--local-time"],
            ["--vault", vault.directory + "/missing.db", "audit"], ["--vault", vault.directory + "/missing.db", "list", "--json"],
        ]
        let firstLine = { (text: String) in text.split(separator: "\n").first { $0.hasPrefix("vault: error:") || $0.hasPrefix("Error:") } }
        for shape in errors {
            let fast = try vault.run(shape, removing: ["VAULT_PASSPHRASE"])
            let full = try vault.run(shape + ["--verbose"], removing: ["VAULT_PASSPHRASE"])
            #expect(fast.status != 0 && fast.status == full.status, "\(shape): \(fast.status) / \(full.status)")
            #expect(firstLine(fast.stderrText) == firstLine(full.stderrText), "\(shape): \(fast.stderrText) / \(full.stderrText)")
        }
        // `audit` and `audit list` are one command: the same messages for every filter and
        // format mistake (including --follow, which the fast path never takes).
        for mistake in [["--since", "yesterday"], ["--outcome", "nope"], ["--limit", "0"], ["--follow", "--json"], ["--jsonl", "--json"],
                        ["--interval", "5", "--follow"], ["--frobnicate"]] {
            let bare = try vault.run(["audit"] + mistake, removing: ["VAULT_PASSPHRASE"])
            let list = try vault.run(["audit", "list"] + mistake, removing: ["VAULT_PASSPHRASE"])
            #expect(bare.status == 64 && list.status == 64, "\(mistake): \(bare.stderrText) / \(list.stderrText)")
            #expect(firstLine(bare.stderrText) == firstLine(list.stderrText) && !bare.stderrText.contains("unknown option '--since'"),
                    "\(mistake): \(bare.stderrText) / \(list.stderrText)")
        }
        #expect(try vault.run(["audit", "--json", "--jsonl"]).stderrText.contains("two formats"), "no mention of --follow when none was given")
        let help = try vault.run(["audit", "--help"]).stdoutText
        for option in ["--profile", "--since", "--outcome", "--limit", "--all", "--follow", "--local-time"] {
            #expect(help.contains(option), "audit --help shows \(option)")
        }
        expectNoLeaks(vault)
    }

    @Test("did you mean …? for mistyped commands and options, exit 64",
          arguments: [(["tokn", "pw"], "`vault token`"), (["lst"], "`vault list`"), (["env", "lst"], "`vault env list`"),
                      (["audti"], "`vault audit`"), (["token", "pw", "--fres"], "`--fresh`"),
                      (["token", "pw", "--frmat", "json"], "`--format`"), (["list", "--jsn"], "`--json`"),
                      (["rotate", "pw", "--client-secrt"], "`--client-secret`"), (["lsit"], "`vault list`"),
                      (["hist"], "`vault history`"), (["member", "lst"], "`vault member list`"), (["audit", "--limt", "3"], "`--limit`")])
    func suggestions(arguments: [String], suggestion: String) throws {
        let vault = TestVault()
        let result = try vault.run(arguments)
        #expect(result.status == 64)
        #expect(result.stderrText.hasPrefix("vault: error: unknown "), "\(result.stderrText)")
        #expect(result.stderrText.contains("did you mean \(suggestion)?"), "\(result.stderrText)")
    }

    @Test("one voice: every error is `vault: error:` in lower case, parser errors included; machine output in one JSON style")
    func oneVoice() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        for arguments in [["token", "-f"], ["token", "pw", "--format"], ["show", "pw", "extra"], ["add"], ["env", "add", "x"],
                          ["token", "pw", "--min-ttl", "abc"], ["audit", "--limit", "x"]] {
            let result = try vault.run(arguments)
            let first = result.stderrText.split(separator: "\n").first.map(String.init) ?? ""
            #expect(result.status == 64, "\(arguments): \(result.stderrText)")
            #expect(first.hasPrefix("vault: error: ") && first.dropFirst("vault: error: ".count).first?.isUppercase == false,
                    "\(arguments): \(result.stderrText)")
            #expect(result.stderrText.contains("vault: hint: "), "\(arguments)")
        }
        #expect(try vault.run(["token", "pw", "-f"]).stderrText.hasPrefix("vault: error: unknown option '-f'"))
        // --help: the command's own options first, then the ones every command shares.
        for (command, own) in [(["token"], "--format"), (["add"], "--client-id"), (["audit"], "--since"), (["rotate"], "--verify")] {
            let help = try vault.run(command + ["--help"]).stdoutText
            let ownAt = help.range(of: own)?.lowerBound, sharedAt = help.range(of: "--vault <")?.lowerBound
            #expect(ownAt != nil && sharedAt != nil && ownAt! < sharedAt!, "\(command): \(own) after --vault")
        }
        // JSON: an object on one line, or an array with one object per line; nothing pretty-printed.
        for arguments in [["list", "--json"], ["show", "pw", "--json"], ["history", "pw", "--json"], ["env", "list", "--json"],
                          ["env", "show", "local", "--json"], ["member", "list", "--json"], ["status", "--json"], ["doctor", "--json"],
                          ["verify", "--json"], ["audit", "--json", "--limit", "3"]] {
            let text = try vault.run(arguments).stdoutText
            let lines = text.split(separator: "\n").map(String.init)
            let objects = lines.first == "[" ? Array(lines.dropFirst().dropLast()) : lines
            #expect(lines.first == "[" ? lines.last == "]" : lines.count == 1, "\(arguments): \(text)")
            for line in objects {
                let trimmed = line.hasSuffix(",") ? String(line.dropLast()) : line
                #expect((try? JSONSerialization.jsonObject(with: Data(trimmed.utf8))) is [String: Any], "\(arguments): \(line)")
                #expect(!line.contains("\" : "), "\(arguments): pretty-printed")
            }
        }
        let token = try vault.run(["token", "pw", "--format", "json"], expectTokenOnStdout: true)
        if let value = (try? JSONSerialization.jsonObject(with: token.stdout) as? [String: Any])?["access_token"] as? String {
            LeakScanner.shared.register(token: value)
        }
        #expect(token.stdoutText.split(separator: "\n").count == 1 && token.stdoutText.hasPrefix("{\"access_token\":\""), "\(token.stdoutText.count) bytes")
        expectNoLeaks(vault)
    }

    @Test("checks that need no passphrase come before it: a mistyped profile or environment (with a suggestion), an existing vault for init, remove's confirmation")
    func cheapChecksFirst() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        // No passphrase source and no terminal: had the passphrase been asked first, each
        // of these would say "no terminal to prompt on" (exit 64).
        let locked = ["VAULT_PASSPHRASE"]
        for (arguments, message, hint) in [
            (["token", "pww"], "no profile named 'pww'", "did you mean 'pw'?"),
            (["exec", "cc_", "--", "true"], "no profile named 'cc_'", "did you mean 'cc'?"),
            (["token", "pw", "--env", "lcoal"], "no environment named 'lcoal'", "did you mean 'local'?"),
            (["rotate", "zzzzzz"], "no profile named 'zzzzzz'", nil),
            (["edit", "cx", "--scope", "s"], "no profile named 'cx'", "did you mean 'cc'?"),
            (["env", "set", "loacl", "--api-base", "https://api.example/"], "no environment named 'loacl'", "did you mean 'local'?"),
            (["env", "remove", "locl"], "no environment named 'locl'", "did you mean 'local'?"),
            (["member", "remove", "ownr"], "no current member named 'ownr'", "did you mean 'owner'?"),
            (["unlock", "--keep-fresh", "pw@locl"], "no environment named 'locl'", "did you mean 'local'?"),
        ] as [([String], String, String?)] {
            let result = try vault.run(arguments, removing: locked)
            #expect(result.status == 6, "\(arguments): \(result.status) \(result.stderrText)")
            #expect(result.stderrText.contains(message), "\(arguments): \(result.stderrText)")
            if let hint { #expect(result.stderrText.contains(hint), "\(arguments): \(result.stderrText)") }
        }
        // Names are compared as stored, NFC: an environment typed decomposed is found.
        #expect(try vault.run(["env", "add", "cafe\u{301}", "--token-url", fixture.stub.tokenURL]).status == 0)
        let composed = try vault.run(["token", "pw", "--env", "caf\u{e9}"], removing: locked)
        #expect(composed.status == 64 && composed.stderrText.contains("no terminal to prompt on"), "found, then the passphrase: \(composed.stderrText)")
        let again = try vault.run(["init"], removing: locked)
        #expect(again.status == 1 && again.stderrText.contains("a vault already exists"), "\(again.stderrText)")
        let remove = try vault.run(["remove", "pw"], removing: locked)
        #expect(remove.status == 64 && remove.stderrText.contains("no terminal to ask for confirmation"), "\(remove.stderrText)")
        #expect(try vault.run(["list", "--json"]).stdoutText.contains("\"pw\""), "nothing removed")
        expectNoLeaks(vault)
    }

    @Test("completion scripts carry the dynamic hooks; bash offers the stored profile and environment names")
    func completions() throws {
        let fixture = try Fixture(addProfiles: false)
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        #expect(try vault.run(["env", "add", "local", "--token-url", fixture.stub.tokenURL]).status == 0)
        #expect(try vault.add("acme-eu", clientID: "c1", clientSecret: "completion-secret-1", grant: "client-credentials", env: "local").status == 0)
        #expect(try vault.add("acme-us", clientID: "c2", clientSecret: "completion-secret-2", grant: "client-credentials", env: "us").status == 0)
        for shell in ["bash", "zsh", "fish"] {
            let script = try vault.run(["--generate-completion-script", shell])
            #expect(script.status == 0)
            #expect(script.stdoutText.contains("---completion"), "\(shell) script has no dynamic completion hook")
        }
        let script = vault.directory + "/vault.bash"
        try vault.run(["--generate-completion-script", "bash"]).stdout.write(to: URL(fileURLWithPath: script))
        func complete(_ words: [String]) throws -> [String] {
            let line = words.joined(separator: " ")
            let program = """
                source "$1"; complete -p vault >/dev/null || exit 3
                COMP_WORDS=(\(words.map { "'\($0)'" }.joined(separator: " "))); COMP_CWORD=\(words.count - 1)
                COMP_LINE='\(line)'; COMP_POINT=${#COMP_LINE}
                _vault vault '\(words.last!)' '\(words[words.count - 2])'; printf '%s\\n' "${COMPREPLY[@]}"
                """
            var env = vault.environment()
            env["PATH"] = Binaries.directory + ":/usr/bin:/bin"
            env.removeValue(forKey: "VAULT_PASSPHRASE")
            let result = try Binaries.run("/bin/bash", ["-c", program, "bash", script], environment: env)
            #expect(result.status == 0, "\(result.stderrText)")
            return result.stdoutText.split(separator: "\n").map(String.init).sorted()
        }
        #expect(try complete(["vault", "token", ""]) == ["acme-eu", "acme-us"])
        #expect(try complete(["vault", "show", "acme-u"]) == ["acme-us"])
        #expect(try complete(["vault", "token", "acme-eu", "--env", ""]) == ["au", "eu", "local", "us"])
        #expect(try complete(["vault", "env", "remove", ""]) == ["local"])
        // `audit` takes its filters itself (and `audit list` the same ones).
        #expect(try complete(["vault", "audit", "--profile", ""]) == ["acme-eu", "acme-us"])
        #expect(try complete(["vault", "audit", "--env", ""]) == ["au", "eu", "local", "us"])
        #expect(try complete(["vault", "audit", "list", "--profile", ""]) == ["acme-eu", "acme-us"])
        // Members: `member remove` offers current members but not `owner`; `audit --member` every member.
        let identity = vault.directory + "/ci.identity"
        #expect(try vault.run(["identity", "new", "--no-passphrase", "--out", identity]).status == 0)
        let recipient = try vault.run(["identity", "show", "--identity", identity]).stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(try vault.run(["member", "add", "ci-runner", "--recipient", recipient]).status == 0)
        #expect(try complete(["vault", "member", "remove", ""]) == ["ci-runner"])
        #expect(try complete(["vault", "audit", "list", "--member", ""]) == ["ci-runner", "owner"])
        expectNoLeaks(vault)
    }

    @Test("the committed man page names every subcommand, hides none that is hidden, has its sections, and reads cleanly with man --warnings")
    func manPage() throws {
        let page = try String(contentsOf: repositoryRoot.appendingPathComponent("docs/man/vault.1"), encoding: .utf8)
        #expect(page.contains(".Dt VAULT 1"))
        let vault = TestVault()
        func subcommands(_ arguments: [String]) throws -> [String] {
            let help = try vault.run(arguments + ["--help"]).stdoutText
            guard let start = help.range(of: "SUBCOMMANDS:") else { return [] }
            return help[start.upperBound...].split(separator: "\n").compactMap { line in
                let trimmed = line.trimmingCharacters(in: .whitespaces)
                guard line.hasPrefix("  "), !line.hasPrefix("   "), let first = trimmed.split(separator: " ").first else { return nil }
                return String(first)
            }.filter { !$0.hasPrefix("-") && $0 != "See" }
        }
        let top = try subcommands([])
        #expect(top.count >= 17, "\(top)")
        for command in top {
            #expect(page.contains(".It Em \(command)"), "the man page lacks \(command)")
            for sub in try subcommands([command]) {
                #expect(page.contains(".It Em \(sub)"), "the man page lacks \(command) \(sub)")
            }
        }
        #expect(!page.contains("agent-serve"), "a hidden command is listed")
        #expect(page.components(separatedBy: "Show the version.").count == 2, "--version is described once")
        for section in ["EXIT STATUS", "ENVIRONMENT", "FILES", "EXAMPLES", "SEE ALSO"] {
            #expect(page.contains(".Sh \(section)") || page.contains(".Sh \"\(section)\""), "the man page lacks \(section)")
        }
        for code in ["0", "1", "3", "4", "5", "6", "7", "8", "64", "126 , 127"] { #expect(page.contains(".It \(code)\n"), "exit \(code)") }
        // Rendered as man shows it: no warning, and the samples that once lost their
        // non-ASCII text arrive whole.
        let rendered = try Binaries.run("/usr/bin/man", ["--warnings", "-l", repositoryRoot.appendingPathComponent("docs/man/vault.1").path],
                                        environment: ["PATH": "/usr/bin:/bin", "MANWIDTH": "200", "MANPAGER": "cat", "LANG": "C.UTF-8"])
        #expect(rendered.status == 0 && rendered.stderrText.isEmpty, "\(rendered.stderrText)")
        for sample in [#"{"client_secret": "...", "password": "..."}"#, "--recipient gbgv1...", "(gbgv1...)"] {
            #expect(rendered.stdoutText.contains(sample), "the man page lost \(sample)")
        }
    }

    @Test("audit --jsonl --follow prints records appended by concurrent vault token processes, in order, none missing or twice; SIGINT stops it cleanly")
    func follow() throws {
        let fixture = try Fixture()
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        let start = try Int(vault.sql("SELECT max(seq) FROM audit_record").stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        let follower = try ChildProcess(Binaries.vault, ["audit", "--jsonl", "--follow", "--interval", "50"],
                                        environment: vault.environment(["VAULT_PASSPHRASE": ""]))
        follower.closeStdin()
        let output = OutputCollector(follower.stdoutDescriptor)
        usleep(300_000)
        let results = LockedArray<Int32>()
        DispatchQueue.concurrentPerform(iterations: 4) { worker in
            for i in 0..<6 {
                let result = try? fixture.token(worker % 2 == 0 ? "pw" : "cc", i % 3 == 0 ? ["--fresh"] : [])
                results.append(result?.status ?? -1)
            }
        }
        #expect(results.values.allSatisfy { $0 == 0 })
        let end = start + 24
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline, !output.text.contains("\"seq\":\(end),") { usleep(50_000) }
        follower.kill(SIGINT)
        let status = follower.wait(timeout: 10)
        #expect(status == 0)
        let lines = String(decoding: output.finish(), as: UTF8.self).split(separator: "\n")
        let seqs = lines.compactMap { line -> Int? in
            (try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["seq"] as? Int
        }
        #expect(seqs.count == lines.count, "every line is one JSON object")
        #expect(seqs == Array((seqs.first ?? 0)...(seqs.last ?? 0)), "in order, none missing, none twice")
        #expect(seqs.last == end)
        #expect(seqs.first.map { $0 <= start + 1 } == true)
        for line in lines {
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            #expect(object?["access_token"] == nil)
            let keys = Set(object.map { Array($0.keys) } ?? [])
            #expect(keys.isSuperset(of: ["seq", "at", "action", "outcome", "profile", "token_fingerprint"]))
        }
        LeakScanner.shared.scan(Data(lines.joined(separator: "\n").utf8), artefact: "audit --follow output", includeTokens: true)
        expectNoLeaks(vault)
    }
}
