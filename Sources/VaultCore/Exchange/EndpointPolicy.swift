import Foundation

/// Rules for token URLs and API bases (SECURITY.md, "From whom": network attackers).
public enum EndpointPolicy {
    /// True for `localhost`, `127.0.0.0/8` and `::1`.
    public static func isLoopback(host: String) -> Bool {
        let host = host.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        if host == "localhost" || host == "::1" || host == "0:0:0:0:0:0:0:1" { return true }
        let parts = host.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0] == "127" else { return false }
        return parts.allSatisfy { part in UInt8(part) != nil }
    }

    /// A token URL must be absolute `https://`, or `http://` to a loopback host; it must
    /// not carry credentials, a fragment, whitespace or control characters.
    public static func validateTokenURL(_ text: String) throws(VaultError) -> String {
        try validate(text, what: "token URL")
    }

    /// API bases follow the same rules as token URLs.
    public static func validateAPIBase(_ text: String) throws(VaultError) -> String {
        try validate(text, what: "API base")
    }

    private static func validate(_ text: String, what: String) throws(VaultError) -> String {
        guard !text.isEmpty, text.utf8.count <= 2048,
              !text.unicodeScalars.contains(where: { $0.properties.isWhitespace || $0.properties.generalCategory == .control }),
              let components = URLComponents(string: text), let scheme = components.scheme?.lowercased(),
              let host = components.host, !host.isEmpty
        else {
            throw .usage("invalid \(what) '\(text.sanitisedForDisplay(limit: 100))': it must be an absolute http(s) URL")
        }
        guard components.user == nil, components.password == nil else {
            throw .usage("the \(what) must not contain credentials", hint: "secrets belong in the vault, not in URLs")
        }
        guard components.fragment == nil else { throw .usage("the \(what) must not contain a fragment") }
        switch scheme {
        case "https": return text
        case "http":
            guard isLoopback(host: host) else {
                throw .usage("refusing plain http:// to non-loopback host '\(host.sanitisedForDisplay(limit: 100))'",
                             hint: "use https://; http:// is allowed only for localhost, 127.0.0.0/8 and ::1")
            }
            return text
        default:
            throw .usage("invalid \(what) scheme '\(scheme.sanitisedForDisplay(limit: 20))': only https (or http to loopback) is allowed")
        }
    }
}
