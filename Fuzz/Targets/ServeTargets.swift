import Dispatch
import Foundation
import NIOHTTP1
import VaultCore

/// `vault serve`'s token endpoint, as a local caller drives it: any method, request target,
/// Content-Type, Authorization and body. The form reader and the Basic reader give back
/// what their canonical encoding reads as; the endpoint hands out the token exactly when
/// the request is a POST of a form to a token path that presents this run's placeholder
/// credentials (form fields, or Basic without a `client_secret` field and with the same id)
/// and a supported grant; every other answer is an RFC 6749 error object whose description
/// is safe to show and holds no token.
///
/// Input: a method byte, then length-prefixed request target, Content-Type and
/// Authorization (empty: no header), then the body.
enum ServeRequests {
    static let credentials = PlaceholderCredentials(clientID: "gbgvault-0123456789ab", clientSecret: SecureBytes(utf8: "fuzz-placeholder-secret-0123456789abcdefghi"))
    static let token = "fuzz-token-0123456789"
    static let endpoint = LocalTokenEndpoint(credentials: credentials, keeper: TokenKeeper(source: FixedToken()))
    static let methods: [HTTPMethod] = [.POST, .GET, .PUT, .DELETE, .HEAD, .OPTIONS, .PATCH, .RAW(value: "post")]
    static let errors: Set<String> = ["invalid_request", "invalid_client", "unsupported_grant_type", "server_error", "temporarily_unavailable"]

    struct FixedToken: TokenSource {
        func token(fresh: Bool, minTTL: Int64, caller: String) async throws(VaultError) -> HandedToken {
            HandedToken(token: SecureBytes(utf8: ServeRequests.token), tokenType: "Bearer", expiresAt: Int64(Date().timeIntervalSince1970) + 3600,
                        expiresIn: 3600, apiBase: nil)
        }
    }

    static func check(_ input: [UInt8]) async -> String? {
        var reader = FuzzReader(input)
        let method = methods[Int(reader.byte()) % methods.count]
        let uri = String(decoding: reader.chunk(), as: UTF8.self)
        let contentType = String(decoding: reader.chunk(), as: UTF8.self)
        let authorization = String(decoding: reader.chunk(), as: UTF8.self)
        let body = reader.rest()

        let form = LocalTokenEndpoint.form(body)
        if let form {
            guard LocalTokenEndpoint.form(Array(encode(form).utf8)) == form else { return "a form does not read back from its encoding" }
        }
        let basic = authorization.isEmpty ? nil : LocalTokenEndpoint.basicCredentials(authorization)
        if let basic {
            let again = "Basic " + Data((formEncoded(basic.id) + ":" + formEncoded(basic.secret)).utf8).base64EncodedString()
            guard let read = LocalTokenEndpoint.basicCredentials(again), read == basic else { return "Basic credentials do not read back from their encoding" }
        }

        var headers = HTTPHeaders()
        if !contentType.isEmpty { headers.add(name: "Content-Type", value: contentType) }
        if !authorization.isEmpty { headers.add(name: "Authorization", value: authorization) }
        let head = HTTPRequestHead(version: .http1_1, method: method, uri: uri, headers: headers)
        let answer = await endpoint.answer(head, body: body, caller: "fuzz")
        let text = answer.body.withUnsafeBytes { String(decoding: $0, as: UTF8.self) }

        // The model: when the token must be handed out.
        let path = String(String.UnicodeScalarView(uri.unicodeScalars.prefix { $0 != "?" }))
        let isForm = contentType.lowercased().split(separator: ";").first?.trimmingCharacters(in: .whitespaces) == "application/x-www-form-urlencoded"
        var presented: (id: String?, secret: String?)? = form.map { ($0["client_id"], $0["client_secret"]) }
        if !authorization.isEmpty, let fields = presented {
            if fields.secret == nil, let basic, fields.id == nil || fields.id == basic.id { presented = (basic.id, basic.secret) } else { presented = nil }
        }
        let authenticated = presented.map { $0.id == credentials.clientID && $0.secret == "fuzz-placeholder-secret-0123456789abcdefghi" } ?? false
        let grant = form?["grant_type"]
        let handsOut = LocalTokenEndpoint.tokenPaths.contains(path) && method == .POST && isForm && authenticated
            && (grant == "password" || grant == "client_credentials")

        if handsOut {
            guard answer.status == .ok, text.contains("\"access_token\":\"\(token)\"") else { return "a valid request got \(answer.status.code): \(text)" }
            return nil
        }
        guard answer.status != .ok, !text.contains(token) else { return "the token was handed out to a request without the placeholder credentials" }
        guard let object = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: String],
              let code = object["error"], errors.contains(code), let description = object["error_description"], isDisplaySafe(description)
        else { return "a refusal that is not an RFC 6749 error object safe to show: \(text.debugDescription)" }
        return nil
    }

    /// A form body: each name and value percent-encoded but for RFC 3986's unreserved characters.
    static func encode(_ form: [String: String]) -> String {
        form.keys.sorted().map { formEncoded($0) + "=" + formEncoded(form[$0]!) }.joined(separator: "&")
    }

    static func formEncoded(_ text: String) -> String {
        let unreserved = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
        return text.addingPercentEncoding(withAllowedCharacters: unreserved) ?? ""
    }
}

/// `vault proxy`'s request target → upstream URL, for a few API bases: an accepted target
/// gives a URL that Foundation's readers (the HTTP client's) put on the base's host, port and
/// scheme, with a path that starts with the base's path and whose remainder has no `.` or
/// `..` segment (escaped or not, or before a `;`) and no backslash; the path the log keeps
/// has no query or fragment and is safe to show.
///
/// Input: a byte choosing the base, then the request target.
enum ProxyPaths {
    static let bases = ["https://eu.platform.go.gbgplc.com/v2/captain/", "http://127.0.0.1:8080/", "http://[::1]:9/api", "https://API.example.com/a%20b/c"]
        .map { UpstreamBase(apiBase: $0)! }

    static func check(_ input: [UInt8]) -> String? {
        var reader = FuzzReader(input)
        let base = bases[Int(reader.byte()) % bases.count]
        let uri = String(decoding: reader.rest(), as: UTF8.self)

        // The logged path: never the query or fragment (a `?` in it stands for a control
        // character of the path, as text safe to show has it), at most 200 characters and `…`.
        let logged = UpstreamBase.loggedPath(uri)
        // (By scalars: a `?` followed by a combining mark is one character.)
        let pathPart = uri.unicodeScalars.prefix { $0 != "?" && $0 != "#" }
        let controls = pathPart.prefix(200).filter { [.control, .format, .lineSeparator, .paragraphSeparator].contains($0.properties.generalCategory) }.count
        guard !logged.unicodeScalars.contains("#"), logged.unicodeScalars.filter({ $0 == "?" }).count == controls, isDisplaySafe(logged),
              logged.unicodeScalars.count <= 201 else {
            return "a logged path with a query, a fragment or unsafe text: \(logged.debugDescription)"
        }
        guard let url = base.url(for: uri) else { return nil }
        guard let components = URLComponents(string: url), let parsed = URL(string: url),
              let fromURL = URLComponents(url: parsed, resolvingAgainstBaseURL: false) else { return "an accepted target gives a URL that does not parse: \(url.debugDescription)" }
        for (host, port, scheme, path) in [(components.host, components.port, components.scheme, components.percentEncodedPath),
                                           (fromURL.host, fromURL.port, fromURL.scheme, fromURL.percentEncodedPath)] {
            guard host?.lowercased() == base.host.lowercased(), port == base.port, scheme == base.scheme else { return "sent to another origin: \(url.debugDescription)" }
            guard path.hasPrefix(base.path) else { return "sent outside the base's path: \(url.debugDescription)" }
            guard let rest = String(path.dropFirst(base.path.count)).removingPercentEncoding, !rest.contains("\\") else { return "a remainder that does not decode: \(url.debugDescription)" }
            let escapes = rest.split(separator: "/", omittingEmptySubsequences: false).contains { segment in
                let name = segment.split(separator: ";", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
                return name == "." || name == ".."
            }
            guard !escapes else { return "a dot segment reaches the API: \(url.debugDescription)" }
        }
        return nil
    }
}

/// The request log as read back: a `proxy-requests` record's `detail` that reads as a
/// summary is that summary's canonical form read back the same; a log file is split into
/// lines whose bytes are exactly the file's (the digest covers them), and every line that
/// decodes encodes and decodes again to the same line.
enum RequestLogs {
    static func check(_ input: [UInt8]) -> String? {
        let text = String(decoding: input, as: UTF8.self)
        if let summary = RequestLog.Summary(detail: text) {
            guard RequestLog.Summary(detail: summary.detail) == summary else { return "a summary's detail does not read back the same" }
            guard summary.requests == summary.last - summary.first + 1, isDisplaySafe(summary.detail) else { return "a summary out of range or unsafe to show" }
        }
        let path = Scratch.file("requests.jsonl", input)
        defer { unlink(path) }
        let lines: [(line: RequestLog.Line?, bytes: [UInt8])]
        do {
            lines = try RequestLog.read(path)
        } catch {
            return "a log that exists cannot be read: \(error.message)"
        }
        guard lines.flatMap(\.bytes) == input else { return "the lines' bytes are not the file's" }
        guard lines.dropLast().allSatisfy({ $0.bytes.last == 0x0a }), lines.allSatisfy({ !$0.bytes.dropLast().contains(0x0a) }) else {
            return "a line split elsewhere than at a newline"
        }
        for case let line? in lines.map(\.line) {
            guard let encoded = try? JSONEncoder().encode(line), (try? JSONDecoder().decode(RequestLog.Line.self, from: encoded)) == line else {
                return "a decoded line does not encode and decode to itself"
            }
        }
        return nil
    }
}
