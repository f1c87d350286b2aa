import Foundation
import VaultCore
#if canImport(Glibc)
import Glibc
#endif

/// The read-only `vault audit` and `vault list`, which must start fast (their benchmarks
/// against the sqlite3 shell: BENCHMARKS.md). `vault token` through the agent is served
/// before `main` (Sources/CTokenClient); `vault --version` in `Main` before anything else.
///
/// Building argument-parser's command tree costs more than everything else these do
/// (protocol-conformance scans and reflection over 30 commands), so these exact shapes are
/// recognised first, with the same option
/// names, values and checks as the full commands. Anything else (another option, `--help`,
/// `--verbose`, a value that looks like an option, a typo, no agent) returns false and
/// goes the full way, which parses, validates and reports as always. The work itself is
/// the full commands' own code (`AuditTable.printOnce`, `List.show`).
enum FastPath {
    /// Runs `arguments` (without the program name) if it is a fast shape and exits;
    /// returns only when the full parser must take over.
    static func run(_ arguments: [String]) {
        guard !arguments.contains("--"), !TraceOutput.verboseFromEnvironment, VaultConfig.current.problems.isEmpty,
              let parsed = Parsed(arguments), let command = parsed.positionals.first,
              let commandIndex = arguments.firstIndex(of: command) else { return }
        // As the full parser takes them: only the global `--vault` may come before the
        // command word, and `audit`'s `list` right after it.
        let before = Array(arguments[..<commandIndex])
        guard before.isEmpty || (before.count == 2 && before[0] == "--vault") || (before.count == 1 && before[0].hasPrefix("--vault="))
        else { return }
        switch command {
        case "audit": audit(parsed)
        case "list": list(parsed)
        default: return
        }
    }

    /// Runs a command's body and exits with its status.
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
    /// [--until T] [--limit N | --all] [--json | --jsonl] [--local-time] [--no-pager]
    /// [--vault P]`, once (no `--follow`). Read
    /// only, no passphrase, no agent: the same `printOnce` as the full command.
    private static func audit(_ parsed: Parsed) {
        let positionals = parsed.positionals
        guard positionals.count == 1 || (positionals.count == 2 && positionals[1] == "list" && parsed.adjacentFirstPositionals),
              parsed.only(flags: ["--json", "--jsonl", "--all", "--local-time", "--no-pager"],
                          options: ["--vault", "--profile", "--env", "--member", "--outcome", "--since", "--until", "--limit"])
        else { return }
        // Combinations the full command refuses go the full way, which says why.
        let format = AuditTable.Format(json: parsed.has("--json"), jsonl: parsed.has("--jsonl"), all: parsed.has("--all"),
                                       localTime: parsed.has("--local-time"), noPager: parsed.has("--no-pager"))
        guard !(format.json && format.jsonl), !(format.all && parsed.option("--limit") != nil),
              !(format.localTime && (format.json || format.jsonl)) else { return }
        var query = AuditQuery(profile: parsed.option("--profile"), environment: parsed.option("--env"))
        query.member = parsed.option("--member")
        if let text = parsed.option("--outcome") {
            guard let outcome = AuditQuery.OutcomeFilter(text) else { return }
            query.outcome = outcome
        }
        if let text = parsed.option("--limit") {
            guard let limit = Int(text), limit >= 1 else { return }
            query.limit = limit
        }
        if let text = parsed.option("--since") {
            guard let time = TimeArgument.parse(text) else { return }
            query.since = time
        }
        if let text = parsed.option("--until") {
            guard let time = TimeArgument.parse(text) else { return }
            query.until = time
        }
        finish { () throws(VaultError) in
            try AuditTable.printOnce(vaultPath: parsed.option("--vault"), query: query, format: format)
        }
    }

    /// `list [--json] [--vault P]`.
    private static func list(_ parsed: Parsed) {
        guard parsed.positionals.count == 1, parsed.only(flags: ["--json"], options: ["--vault"]) else { return }
        finish { () throws(VaultError) in
            try VaultCLI.List.show(vaultPath: parsed.option("--vault"), json: parsed.has("--json"))
        }
    }

    /// Words split into positionals, `--flag`s and `--option value` / `--option=value`.
    /// Only the names below are known; anything else makes the shape unknown (nil).
    struct Parsed {
        static let flagNames = ["--json", "--jsonl", "--all", "--local-time", "--no-pager"]
        static let optionNames = ["--vault", "--env", "--profile", "--member", "--outcome", "--since", "--until", "--limit"]

        var positionals: [String] = []
        private(set) var flags: [String] = []
        private var options: [(name: String, value: String)] = []
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
                    guard !flags.contains(word) else { return nil }
                    flags.append(word)
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
                guard Self.optionNames.contains(name), option(name) == nil, !value.isEmpty, !value.hasPrefix("-") else { return nil }
                options.append((name, value))
            }
        }

        func option(_ name: String) -> String? { options.first { $0.name == name }?.value }
        func has(_ flag: String) -> Bool { flags.contains(flag) }

        /// No flag and no option other than these.
        func only(flags allowedFlags: [String], options allowedOptions: [String]) -> Bool {
            flags.allSatisfy(allowedFlags.contains) && options.allSatisfy { allowedOptions.contains($0.name) }
        }
    }
}
