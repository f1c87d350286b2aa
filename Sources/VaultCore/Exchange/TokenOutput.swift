import Foundation

/// How `vault token` prints a token (`--format`).
public enum TokenFormat: String, Sendable, CaseIterable {
    /// The token and a newline.
    case raw
    /// `{access_token, token_type, expires_in, expires_at, environment, api_base}`.
    case json
    /// `Authorization: Bearer …`.
    case header
    /// `export GBG_ACCESS_TOKEN=…` lines, shell-quoted.
    case env

    /// Without `--format`.
    public static let standard = TokenFormat.raw
}

/// Why a token is fetched: the audit record's action.
public enum TokenAction: String, Sendable {
    /// `vault token`.
    case token
    /// `vault exec`.
    case exec
    /// A renewal by the agent (`vault unlock --keep-fresh`).
    case refresh
    /// A token handed out by `vault serve`'s endpoint.
    case serve
    /// A token `vault proxy` puts on the requests it forwards.
    case proxy

    /// The action its audit record names.
    var auditAction: AuditAction {
        switch self {
        case .token: .token
        case .exec: .exec
        case .refresh: .refresh
        case .serve: .serve
        case .proxy: .proxy
        }
    }
}

/// The text `vault token` writes to standard output, made in guarded memory: by the command
/// itself, or by the agent, which sends it as the answer (PROTOCOL.md).
public enum TokenOutput {
    /// `delivered` in `format`. The token has been checked as an RFC 6750 `b64token`
    /// (``TokenExchange/isValidToken(_:)``), so it needs no JSON escaping or shell quoting.
    public static func render(_ delivered: DeliveredToken, format: TokenFormat) -> SecureBytes {
        let expiresAt = Date(timeIntervalSince1970: TimeInterval(delivered.expiresAt)).iso8601
        var parts: [(prefix: String, suffix: String)]
        switch format {
        case .raw:
            parts = [("", "\n")]
        case .header:
            parts = [("Authorization: Bearer ", "\n")]
        case .json:
            let rest: [(String, String)] = [
                ("token_type", quoted(delivered.tokenType)),
                ("expires_in", String(delivered.expiresIn)),
                ("expires_at", quoted(expiresAt)),
                ("environment", quoted(delivered.environment.name)),
                ("api_base", delivered.environment.apiBase.map(quoted) ?? "null"),
            ]
            // vault's one JSON style: one compact object on one line.
            parts = [("{\"access_token\":\"", "\"" + rest.map { ",\"\($0.0)\":\($0.1)" }.joined() + "}\n")]
        case .env:
            parts = [("export GBG_ACCESS_TOKEN='", "'\n"),
                     ("export GO_CUSTOMER_ACCESS='", "'\nexport GBG_API_BASE=\(shellQuote(delivered.environment.apiBase ?? ""))\n"
                        + "export GBG_TOKEN_EXPIRES_AT=\(shellQuote(expiresAt))\n")]
        }
        let token = delivered.token
        let total = parts.reduce(0) { $0 + $1.prefix.utf8.count + token.count + $1.suffix.utf8.count }
        let output = SecureBytes(count: total)
        output.withUnsafeMutableBytes { out in
            var offset = 0
            func append(_ raw: UnsafeRawBufferPointer) {
                out.baseAddress!.advanced(by: offset).copyMemory(from: raw.baseAddress!, byteCount: raw.count)
                offset += raw.count
            }
            for part in parts {
                var prefix = part.prefix, suffix = part.suffix
                prefix.withUTF8 { append(UnsafeRawBufferPointer($0)) }
                token.withUnsafeBytes { append($0) }
                suffix.withUTF8 { append(UnsafeRawBufferPointer($0)) }
            }
        }
        return output
    }

    /// A JSON string literal of `text`.
    static func quoted(_ text: String) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .withoutEscapingSlashes
        let data = (try? encoder.encode(text)) ?? Data("\"\"".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    /// `s` single-quoted for POSIX shells, each `'` written as `'\''`. By Unicode scalar,
    /// not `Character`: a quote followed by a combining mark is one `Character` that is not
    /// `"'"`, and the shell would still see the quote.
    public static func shellQuote(_ s: String) -> String {
        var quoted = String.UnicodeScalarView()
        quoted.append("'")
        for scalar in s.unicodeScalars {
            if scalar == "'" { quoted.append(contentsOf: "'\\''".unicodeScalars) } else { quoted.append(scalar) }
        }
        quoted.append("'")
        return String(quoted)
    }
}
