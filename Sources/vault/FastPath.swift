import Foundation
import VaultCore
#if canImport(Glibc)
import Glibc
#endif

/// The commands that must start fast (sessions issue, "a fast start"): `vault --version`,
/// `vault token NAME` while an agent serves the vault, and `vault status`.
///
/// Building argument-parser's command tree costs more than everything else these do
/// (protocol-conformance scans and reflection over 30 commands; measured in
/// BENCHMARKS.md), so these exact shapes are recognised first, with the same option
/// names, values and checks as the full commands. Anything else (another option, `--help`,
/// `--verbose`, a value that looks like an option, a typo, no agent) returns false and
/// goes the full way, which parses, validates and reports as always. The work itself is
/// the full commands' own code (`AgentSession.token`, `TokenPrinter`, `Status.show`).
enum FastPath {
    /// Runs `arguments` (without the program name) if it is a fast shape and exits;
    /// returns only when the full parser must take over.
    static func run(_ arguments: [String]) {
        if arguments == ["--version"] {
            Output.stdout(VaultVersion.string + "\n")
            exit(0)
        }
        guard !arguments.contains("--"), !TraceOutput.verboseFromEnvironment,
              let parsed = Parsed(arguments), let command = parsed.positionals.first else { return }
        switch command {
        case "token": token(parsed)
        case "status": status(parsed)
        default: return
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
        static let flagNames: Set<String> = ["--fresh", "--json"]
        static let optionNames: Set<String> = ["--vault", "--env", "--min-ttl", "--format"]

        var positionals: [String] = []
        var flags: Set<String> = []
        var options: [String: String] = [:]

        init?(_ arguments: [String]) {
            var index = 0
            while index < arguments.count {
                let word = arguments[index]
                index += 1
                guard word.hasPrefix("-") else {
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
