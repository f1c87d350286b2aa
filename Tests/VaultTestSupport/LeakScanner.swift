import CProcess
import Foundation

/// Searches artefacts for secrets and tokens in raw, URL-encoded, base64 and hex form.
///
/// One scanner is shared by the whole end-to-end suite: every `vault` run's stdout and
/// stderr, the vault files and child argv go through it, and it reports how many
/// artefacts it read and every hit.
public final class LeakScanner: @unchecked Sendable {
    public static let shared = LeakScanner()

    private let lock = NSLock()
    private var secrets: Set<String> = []
    private var tokens: Set<String> = []
    private var formCache: [String: [String: [UInt8]]] = [:]
    private(set) public var artefactsScanned = 0
    private(set) public var hits: [String] = []

    public init() {}

    public func register(secret: String) {
        guard secret.utf8.count >= 4 else { return } // shorter strings occur by chance
        lock.withLock { _ = secrets.insert(secret) }
    }

    public func register(token: String) {
        lock.withLock { _ = tokens.insert(token) }
    }

    /// Every encoding of `value` that is searched for.
    public static func forms(of value: String) -> [String: [UInt8]] {
        let raw = Array(value.utf8)
        var forms: [String: [UInt8]] = ["raw": raw]
        let formAllowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "*-._"))
        if let encoded = value.addingPercentEncoding(withAllowedCharacters: formAllowed) {
            forms["url-encoded"] = Array(encoded.utf8)
            forms["form-encoded"] = Array(encoded.replacingOccurrences(of: "%20", with: "+").utf8)
        }
        if let encoded = value.addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed) {
            forms["query-encoded"] = Array(encoded.utf8)
        }
        let base64 = Data(raw).base64EncodedString()
        // Drop the padding and the last partial group so the form also matches inside longer base64.
        let stable = String(base64.prefix(max(4, (raw.count / 3) * 4)))
        forms["base64"] = Array(stable.utf8)
        forms["base64url"] = Array(stable.replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").utf8)
        forms["hex"] = Array(raw.map { String(format: "%02x", $0) }.joined().utf8)
        forms["HEX"] = Array(raw.map { String(format: "%02X", $0) }.joined().utf8)
        return forms
    }

    /// Scans one artefact; records hits instead of throwing so every test reports them.
    public func scan(_ data: Data, artefact: String, includeTokens: Bool) {
        let (secrets, tokens) = lock.withLock { (self.secrets, self.tokens) }
        let haystack = [UInt8](data)
        var found: [String] = []
        for value in secrets.union(includeTokens ? tokens : []) {
            let forms = lock.withLock { () -> [String: [UInt8]] in
                if let cached = formCache[value] { return cached }
                let computed = Self.forms(of: value)
                formCache[value] = computed
                return computed
            }
            for (form, needle) in forms where Self.contains(haystack, needle) {
                found.append("\(artefact): a \(tokens.contains(value) ? "token" : "secret") (\(value.utf8.count) bytes) in \(form) form")
            }
        }
        lock.withLock {
            artefactsScanned += 1
            hits += found
        }
    }

    static func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        haystack.withUnsafeBytes { h in
            needle.withUnsafeBytes { n in
                cprocess_find(h.baseAddress, UInt(h.count), n.baseAddress, UInt(n.count)) >= 0
            }
        }
    }

    public var hitCount: Int { lock.withLock { hits.count } }
}

/// Writes an accounts file for `gbg-auth-stub`.
public func writeAccounts(in directory: String, clients: [[String: Any]], users: [[String: Any]], tokenTTL: Int? = nil) throws -> String {
    var object: [String: Any] = ["clients": clients, "users": users]
    if let tokenTTL { object["token_ttl"] = tokenTTL }
    let path = directory + "/accounts-\(UUID().uuidString).json"
    try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: path))
    return path
}
