import Foundation
import VaultCore
#if canImport(Glibc)
import Glibc
#endif

/// The commands that must start fast (sessions issue, "a fast start"): `vault token NAME`
/// while an agent serves the vault, `vault status`, and the read-only `vault audit` and
/// `vault list` (`vault --version` is answered in `Main` before anything else).
///
/// Building argument-parser's command tree costs more than everything else these do
/// (protocol-conformance scans and reflection over 30 commands; measured in
/// BENCHMARKS.md), so these exact shapes are recognised first, with the same option
/// names, values and checks as the full commands. Anything else (another option, `--help`,
/// `--verbose`, a value that looks like an option, a typo, no agent) returns false and
/// goes the full way, which parses, validates and reports as always. The work itself is
/// the full commands' own code (`AgentSession.token`, `TokenPrinter`, `Status.show`,
/// `ListAudit.printOnce`, `List.show`).
enum FastPath {
    /// Runs `arguments` (without the program name) if it is a fast shape and exits;
    /// returns only when the full parser must take over.
    static func run(_ arguments: [String]) {
        VaultDatabase.keepReadOnlyConnectionsUntilExit = true
        guard !arguments.contains("--"), !TraceOutput.verboseFromEnvironment,
              let parsed = Parsed(arguments), let command = parsed.positionals.first,
              let commandIndex = arguments.firstIndex(of: command) else { return }
        // As the full parser takes them: only the global `--vault` may come before the
        // command word, and `audit`'s `list` right after it.
        let before = Array(arguments[..<commandIndex])
        guard before.isEmpty || (before.count == 2 && before[0] == "--vault") || (before.count == 1 && before[0].hasPrefix("--vault="))
        else { return }
        switch command {
        case "token": token(parsed)
        case "status": status(parsed)
        case "audit": audit(parsed)
        case "list": list(parsed)
        default: return
        }
    }

    /// Runs a read-only command's body and exits with its status.
    private static func finish(_ body: () throws(VaultError) -> Void) -> Never {
        do {
            try body()
            exit(0)
        } catch {
            Output.error(error)
            exit(error.exitCode)
        }
    }

    /// `audit [list] [--profile P] [--env E] [--member M] [--outcome O] [--since T]
    /// [--until T] [--limit N] [--json | --jsonl] [--vault P]`, once (no `--follow`). Read
    /// only, no passphrase, no agent: the same `printOnce` as the full command.
    private static func audit(_ parsed: Parsed) {
        let positionals = parsed.positionals
        guard positionals.count == 1 || (positionals.count == 2 && positionals[1] == "list" && parsed.adjacentFirstPositionals),
              parsed.flags.isSubset(of: ["--json", "--jsonl"]), parsed.flags.count < 2,
              Set(parsed.options.keys).isSubset(of: ["--vault", "--profile", "--env", "--member", "--outcome", "--since", "--until", "--limit"])
        else { return }
        var query = AuditQuery(profile: parsed.options["--profile"], environment: parsed.options["--env"],
                               outcome: parsed.options["--outcome"])
        query.member = parsed.options["--member"]
        if let outcome = query.outcome, !VaultCLI.ListAudit.outcomes.contains(outcome) { return }
        if let text = parsed.options["--limit"] {
            guard let limit = Int(text), limit >= 1 else { return }
            query.limit = limit
        }
        for (name, keyPath) in [("--since", \AuditQuery.since), ("--until", \AuditQuery.until)] {
            if let text = parsed.options[name] {
                guard let time = TimeArgument.parse(text) else { return }
                query[keyPath: keyPath] = time
            }
        }
        finish { () throws(VaultError) in
            try VaultCLI.ListAudit.printOnce(vaultPath: parsed.options["--vault"], query: query,
                                             json: parsed.flags.contains("--json"), jsonl: parsed.flags.contains("--jsonl"))
        }
    }

    /// `list [--json] [--vault P]`.
    private static func list(_ parsed: Parsed) {
        guard parsed.positionals.count == 1, parsed.flags.isSubset(of: ["--json"]),
              Set(parsed.options.keys).isSubset(of: ["--vault"]) else { return }
        finish { () throws(VaultError) in
            try VaultCLI.List.show(vaultPath: parsed.options["--vault"], json: parsed.flags.contains("--json"))
        }
    }

    /// `token NAME [--env E] [--fresh] [--min-ttl N] [--format F] [--vault P]`, served by
    /// the agent; without one the full command asks for the passphrase.
    private static func token(_ parsed: Parsed) {
        guard parsed.positionals.count == 2, parsed.flags.isSubset(of: ["--fresh"]),
              Set(parsed.options.keys).isSubset(of: ["--vault", "--env", "--min-ttl", "--format"]) else { return }
        var ask = AgentSession.TokenAsk(vaultPath: VaultOptions.defaultPath(explicit: parsed.options["--vault"]),
                                        profile: parsed.positionals[1])
        ask.environment = parsed.options["--env"]
        ask.fresh = parsed.flags.contains("--fresh")
        if let text = parsed.options["--min-ttl"] {
            guard let value = Int64(text), (0...366 * 24 * 3600).contains(value) else { return }
            ask.minTTL = value
        }
        var format = TokenFormat.raw
        if let text = parsed.options["--format"] {
            guard let value = TokenFormat(rawValue: text) else { return }
            format = value
        }
        // No agent, bypassed, or no vault there: the full command takes it from here
        // (and reports a missing vault exactly as it always does).
        guard let target = AgentSession.client(vaultPath: ask.vaultPath, noAgent: false) else { return }
        do {
            guard let delivered = try AgentSession.token(ask, target: target, action: "token") else { return }
            TokenPrinter.print(delivered, format: format)
            exit(0)
        } catch {
            Output.error(error)
            exit(error.exitCode)
        }
    }

    /// `status [--json] [--vault P]`.
    private static func status(_ parsed: Parsed) {
        guard parsed.positionals.count == 1, parsed.flags.isSubset(of: ["--json"]),
              Set(parsed.options.keys).isSubset(of: ["--vault"]) else { return }
        do {
            try VaultCLI.Status.show(vaultPath: VaultOptions.defaultPath(explicit: parsed.options["--vault"]),
                                     json: parsed.flags.contains("--json"))
            exit(0)
        } catch {
            Output.error(error)
            exit(error.exitCode)
        }
    }

    /// Words split into positionals, `--flag`s and `--option value` / `--option=value`.
    /// Only the names below are known; anything else makes the shape unknown (nil).
    struct Parsed {
        static let flagNames: Set<String> = ["--fresh", "--json", "--jsonl"]
        static let optionNames: Set<String> = ["--vault", "--env", "--min-ttl", "--format",
                                               "--profile", "--member", "--outcome", "--since", "--until", "--limit"]

        var positionals: [String] = []
        var flags: Set<String> = []
        var options: [String: String] = [:]
        /// The first two positionals were next to each other (`audit list`).
        var adjacentFirstPositionals = false
        private var firstPositionalIndex = -2

        init?(_ arguments: [String]) {
            var index = 0
            while index < arguments.count {
                let word = arguments[index]
                index += 1
                guard word.hasPrefix("-") else {
                    if positionals.isEmpty { firstPositionalIndex = index - 1 }
                    if positionals.count == 1, index - 1 == firstPositionalIndex + 1 { adjacentFirstPositionals = true }
                    positionals.append(word)
                    continue
                }
                if Self.flagNames.contains(word) {
                    guard flags.insert(word).inserted else { return nil }
                    continue
                }
                let name: String
                let value: String
                if let equals = word.firstIndex(of: "=") {
                    name = String(word[..<equals])
                    value = String(word[word.index(after: equals)...])
                } else {
                    guard index < arguments.count else { return nil }
                    name = word
                    value = arguments[index]
                    index += 1
                }
                guard Self.optionNames.contains(name), options[name] == nil, !value.isEmpty, !value.hasPrefix("-") else { return nil }
                options[name] = value
            }
        }
    }
}
