import ArgumentParser
import Foundation
import VaultCore

/// Shared options of `token` and `exec`.
struct TokenSelection: ParsableArguments {
    @Option(help: "Environment (default: the profile's).", completion: NameCompletion.environments) var env: String?
    @Flag(help: "Ignore the cache and always exchange.") var fresh = false
    @Option(help: "Reuse a cached token only while it has more than this many seconds left.") var minTtl: Int64 = 300

    func validate() throws {
        guard minTtl >= 0, minTtl <= 366 * 24 * 3600 else { throw ValidationError("--min-ttl must be between 0 and 31622400") }
    }
}

enum TokenFormat: String, ExpressibleByArgument, CaseIterable {
    case raw, json, header, env
}

extension VaultCLI {
    struct Token: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "token",
            abstract: "Print a bearer token for a profile, from the sealed cache or a fresh exchange.")

        @OptionGroup var options: VaultOptions
        @OptionGroup var selection: TokenSelection
        @OptionGroup var network: NetworkOptions
        @Argument(help: "The profile name.", completion: NameCompletion.profiles) var name: String
        @Option(help: "raw, json, header or env.") var format: TokenFormat = .raw

        @MainActor func run() async throws {
            if let delivered = try AgentSession.token(options, selection: selection, network: network, profile: name, action: "token") {
                return TokenPrinter.print(delivered, format: format)
            }
            let vault = try options.unlock()
            let delivered = try await vault.obtainToken(
                TokenOptions(profile: name, environment: selection.env, fresh: selection.fresh, minTTL: selection.minTtl),
                exchange: network.exchange)
            TokenPrinter.print(delivered, format: format)
        }
    }
}

enum TokenPrinter {
    /// What is printed besides the token itself.
    struct Details {
        var tokenType: String
        var expiresIn: Int64
        var expiresAt: Int64
        var environment: String
        var apiBase: String?
    }

    static func expiresAtISO(_ t: DeliveredToken) -> String { expiresAtISO(t.expiresAt) }

    static func expiresAtISO(_ unixSeconds: Int64) -> String {
        Date(timeIntervalSince1970: TimeInterval(unixSeconds)).iso8601
    }

    static func print(_ t: DeliveredToken, format: TokenFormat) {
        let details = Details(tokenType: t.tokenType, expiresIn: t.expiresIn, expiresAt: t.expiresAt,
                              environment: t.environment.name, apiBase: t.environment.apiBase)
        t.token.withUnsafeBytes { print(token: $0, details, format: format) }
    }

    /// Prints the token whose bytes are lent for the call (from guarded memory, or from
    /// the agent's answer on the fast path) without making a `String` of them here.
    static func print(token: UnsafeRawBufferPointer, _ t: Details, format: TokenFormat) {
        switch format {
        case .raw:
            Output.stdout(secret: token, suffix: "\n")
        case .header:
            Output.stdout(prefix: "Authorization: Bearer ", secret: token, suffix: "\n")
        case .json:
            // The token is validated as RFC 6750 b64token characters, so it needs no JSON escaping.
            // (The other strings by `JSONText`, not `JSONEncoder`, nor `replacingOccurrences` in
            // `shellQuote`: both set up Foundation machinery this path otherwise never needs.)
            let rest: [(String, String)] = [
                ("token_type", JSONText.quoted(t.tokenType)),
                ("expires_in", String(t.expiresIn)),
                ("expires_at", JSONText.quoted(expiresAtISO(t.expiresAt))),
                ("environment", JSONText.quoted(t.environment)),
                ("api_base", t.apiBase.map(JSONText.quoted) ?? "null"),
            ]
            let tail = rest.map { ",\n  \"\($0.0)\": \($0.1)" }.joined()
            Output.stdout(prefix: "{\n  \"access_token\": \"", secret: token, suffix: "\"" + tail + "\n}\n")
        case .env:
            // Single-quoted for POSIX shells; a b64token contains no quote characters.
            for name in ["GBG_ACCESS_TOKEN", "GO_CUSTOMER_ACCESS"] {
                Output.stdout(prefix: "export \(name)='", secret: token, suffix: "'\n")
            }
            Output.stdout("export GBG_API_BASE=\(shellQuote(t.apiBase ?? ""))\n")
            Output.stdout("export GBG_TOKEN_EXPIRES_AT=\(shellQuote(expiresAtISO(t.expiresAt)))\n")
        }
    }

    /// `s` single-quoted for POSIX shells, each `'` written as `'\''`. By Unicode scalar,
    /// not `Character`: a quote followed by a combining mark is one `Character` that is not
    /// `"'"`, and the shell would still see the quote.
    static func shellQuote(_ s: String) -> String {
        var quoted = String.UnicodeScalarView()
        quoted.append("'")
        for scalar in s.unicodeScalars {
            if scalar == "'" { quoted.append(contentsOf: "'\\''".unicodeScalars) } else { quoted.append(scalar) }
        }
        quoted.append("'")
        return String(quoted)
    }
}
