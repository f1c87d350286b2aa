import CSodium
import Foundation
import NIOCore
import NIOHTTP1

/// The per-run credentials a caller of `vault serve` presents instead of the real ones:
/// a random client id and secret, compared in constant time. A password-grant client's
/// `username` and `password` are accepted and ignored (never logged or recorded).
public struct PlaceholderCredentials: Sendable {
    public let clientID: String
    public let clientSecret: SecureBytes

    /// Fresh random credentials: `gbgvault-` and 12 hex digits; 32 random bytes, base64url.
    public static func generate() -> PlaceholderCredentials {
        let id = "gbgvault-" + Sodium.randomBytes(6).map { String(format: "%02x", $0) }.joined()
        return PlaceholderCredentials(clientID: id, clientSecret: SecureBytes(utf8: randomSecret()))
    }

    /// 32 random bytes as unpadded base64url (43 characters): a placeholder secret, the
    /// proxy's key.
    static func randomSecret() -> String {
        Data(Sodium.randomBytes(32)).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    /// Given credentials (the fuzz target's fixed ones; `vault serve` uses ``generate()``).
    public init(clientID: String, clientSecret: SecureBytes) {
        self.clientID = clientID
        self.clientSecret = clientSecret
    }

    /// Whether `id` and `secret` are these (BLAKE2b of each side, compared in constant time,
    /// so neither the length nor a prefix leaks through timing).
    func matches(id: String, secret: String) -> Bool {
        let given = Sodium.blake2b(Array(id.utf8) + [0] + Array(secret.utf8))
        let expected = clientSecret.withUnsafeBytes { Sodium.blake2b(Array(clientID.utf8) + [0] + Array($0)) }
        return Sodium.constantTimeEqual(given, expected)
    }
}

/// `vault serve`'s token endpoint: `POST /as/token.oauth2` (and the v1 path
/// `/captain/api/as/token.oauth2`) answered as GBG's endpoint answers, with the profile's
/// real token for callers that present the placeholder credentials (form fields or HTTP
/// Basic, RFC 6749 §2.3.1), and RFC 6749 §5.2 errors otherwise. Every token handed out is an
/// audit record (`serve`, `caller=…`) committed before the answer is written.
public final class LocalTokenEndpoint: Sendable {
    public let credentials: PlaceholderCredentials
    public let keeper: TokenKeeper
    /// The largest request body read (a token request is a few hundred bytes).
    static let maximumBody = 16 * 1024
    public static let tokenPaths: Set<String> = ["/as/token.oauth2", "/captain/api/as/token.oauth2"]

    public init(credentials: PlaceholderCredentials, keeper: TokenKeeper) {
        self.credentials = credentials
        self.keeper = keeper
    }

    /// One answer: status, JSON body, extra headers.
    public struct Answer {
        public var status: HTTPResponseStatus
        public var body: SecureBytes
        public var headers: [(String, String)] = []

        static func error(_ status: HTTPResponseStatus, _ code: String, _ description: String, headers: [(String, String)] = []) -> Answer {
            let object = ["error": code, "error_description": description]
            let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
            return Answer(status: status, body: SecureBytes(copying: [UInt8](data)), headers: headers)
        }
    }

    /// Serves one connection's requests (keep-alive) until it closes.
    public func serve(_ connection: LocalConnection) async {
        try? await connection.channel.executeThenClose { inbound, outbound in
            var head: HTTPRequestHead?
            var body: [UInt8] = []
            var tooLarge = false
            for try await part in inbound {
                switch part {
                case .head(let requestHead):
                    head = requestHead
                    body = []
                    tooLarge = false
                case .body(let buffer):
                    if body.count + buffer.readableBytes > Self.maximumBody { tooLarge = true } else { body += buffer.readableBytesView }
                case .end:
                    guard let requestHead = head else { continue }
                    head = nil
                    let answer = tooLarge ? .error(.payloadTooLarge, "invalid_request", "the request body is too large")
                                          : await self.answer(requestHead, body: body, caller: connection.caller)
                    sodium_memzero(&body, body.count)
                    // Only a token keeps the connection open: after a refusal it closes (an
                    // outside review held connections 150 s each by one refused request, where a
                    // silent one has 10 s). After a CONNECT the caller expects a tunnel, and
                    // SwiftNIO sends no body with the answer: closed too.
                    let keepAlive = requestHead.isKeepAlive && requestHead.method != .CONNECT && answer.status == .ok
                    try await Self.write(answer, keepAlive: keepAlive, to: outbound)
                    if !keepAlive { return }
                }
            }
        }
    }

    static func write(_ answer: Answer, keepAlive: Bool, to outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>) async throws {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json;charset=UTF-8")
        headers.add(name: "Content-Length", value: String(answer.body.count))
        headers.add(name: "Cache-Control", value: "no-store")
        headers.add(name: "Pragma", value: "no-cache")
        headers.add(name: "X-Request-ID", value: UUID().uuidString.lowercased())
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        for (name, value) in answer.headers { headers.add(name: name, value: value) }
        var buffer = ByteBuffer()
        answer.body.withUnsafeBytes { buffer.writeBytes($0) }
        try await outbound.write(contentsOf: [.head(HTTPResponseHead(version: .http1_1, status: answer.status, headers: headers)),
                                              .body(.byteBuffer(buffer)), .end(nil)])
        // The buffer held a token: overwritten before it is released.
        buffer.withUnsafeMutableReadableBytes { _ = sodium_memzero($0.baseAddress, $0.count) }
    }

    /// The answer to one whole request.
    public func answer(_ head: HTTPRequestHead, body: [UInt8], caller: String) async -> Answer {
        let path = UpstreamBase.prefix(of: head.uri) { $0 != "?" }
        guard Self.tokenPaths.contains(path) else {
            return .error(.notFound, "invalid_request", "only POST /as/token.oauth2 is served here")
        }
        guard head.method == .POST else {
            return .error(.methodNotAllowed, "invalid_request", "use POST", headers: [("Allow", "POST")])
        }
        let contentType = head.headers.first(name: "Content-Type")?.lowercased() ?? ""
        guard contentType.split(separator: ";").first?.trimmingCharacters(in: .whitespaces) == "application/x-www-form-urlencoded" else {
            return .error(.badRequest, "invalid_request", "Content-Type must be application/x-www-form-urlencoded")
        }
        guard let form = Self.form(body) else {
            return .error(.badRequest, "invalid_request", "the body is not a form, or a parameter is repeated")
        }
        // RFC 6749 §2.3: one client authentication method per request.
        var id = form["client_id"]
        var secret = form["client_secret"]
        if let authorization = head.headers.first(name: "Authorization") {
            guard secret == nil else {
                return .error(.badRequest, "invalid_request", "the client authenticated twice (Authorization and client_secret)")
            }
            guard let basic = Self.basicCredentials(authorization), id == nil || id == basic.id else {
                return .error(.unauthorized, "invalid_client", "Invalid client or client credentials", headers: [("WWW-Authenticate", "Basic realm=\"vault serve\"")])
            }
            (id, secret) = (basic.id, basic.secret)
        }
        guard let grant = form["grant_type"] else {
            return .error(.badRequest, "invalid_request", "Missing grant_type parameter")
        }
        guard let id, let secret, credentials.matches(id: id, secret: secret) else {
            return .error(.unauthorized, "invalid_client", "Invalid client or client credentials")
        }
        guard grant == "password" || grant == "client_credentials" else {
            return .error(.badRequest, "unsupported_grant_type", "Unsupported grant type")
        }
        let token: HandedToken
        do {
            token = try await keeper.handOut(caller: caller)
        } catch {
            Trace.debug("no token for \(caller): \(error.message)")
            let description = "vault could not obtain the profile's token: \(error.message.sanitisedForDisplay(limit: 200))"
            switch error {
            case .unavailable: return .error(.serviceUnavailable, "temporarily_unavailable", description)
            default: return .error(.internalServerError, "server_error", description)
            }
        }
        let expiresIn = max(0, token.expiresAt - Int64(Date().timeIntervalSince1970))
        let prefix = Array(#"{"access_token":""#.utf8)
        let suffix = Array(#"","token_type":"\#(token.tokenType.sanitisedForDisplay(limit: 20))","expires_in":\#(expiresIn)}"#.utf8)
        // The token is an RFC 6750 b64token (checked when it was obtained): no JSON escaping.
        let json = token.token.withUnsafeBytes { SecureBytes(copying: prefix + Array($0) + suffix) }
        return Answer(status: .ok, body: json)
    }

    /// An `application/x-www-form-urlencoded` body (`+` a space, percent-decoded, as
    /// URLComponents reads a query); nil when it is not one (a character a query cannot hold
    /// unescaped, such as a space or a non-ASCII letter) or a name repeats (RFC 6749 §3.1).
    public static func form(_ body: [UInt8]) -> [String: String]? {
        guard let text = String(validating: body, as: UTF8.self) else { return nil }
        if text.isEmpty { return [:] }
        // URLComponents(string:) refuses such a character; setting `percentEncodedQuery`
        // would stop the process instead (a caller without credentials could end serve).
        guard let components = URLComponents(string: "?" + text.replacingOccurrences(of: "+", with: "%20")),
              let items = components.queryItems else { return nil }
        var result: [String: String] = [:]
        for item in items {
            guard result[item.name] == nil else { return nil }
            result[item.name] = item.value ?? ""
        }
        return result
    }

    /// `Basic base64(form-encoded id ":" form-encoded secret)` (RFC 6749 §2.3.1).
    public static func basicCredentials(_ header: String) -> (id: String, secret: String)? {
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "basic", let data = Data(base64Encoded: String(parts[1])),
              let text = String(data: data, encoding: .utf8), let colon = text.firstIndex(of: ":") else { return nil }
        func decode(_ s: Substring) -> String? { s.replacingOccurrences(of: "+", with: " ").removingPercentEncoding }
        guard let id = decode(text[..<colon]), let secret = decode(text[text.index(after: colon)...]) else { return nil }
        return (id, secret)
    }
}

/// The variables `vault serve --credentials-out` writes and `vault exec --serve`/`--proxy`
/// set for the child: what a GBG client reads to find its token endpoint or API.
public enum ServiceVariables {
    /// `vault serve`: the endpoint and the placeholder credentials (`--secrets-from-env`'s
    /// names for the secret and password, as GBG samples name them).
    public static let tokenURL = "GBG_TOKEN_URL"
    public static let clientID = "GBG_CLIENT_ID"
    public static let clientSecret = "GBG_CLIENT_SECRET"
    public static let username = "GBG_USERNAME"
    public static let password = "GBG_PASSWORD"
    /// A Unix-socket endpoint's path (the URL's host is then only a name).
    public static let tokenSocket = "GBG_TOKEN_SOCKET"
    /// The API base: the environment's (`--serve`) or the proxy's (`--proxy`).
    public static let apiBase = "GBG_API_BASE"
    /// `vault proxy`: the per-run key callers send in ``ApiProxy/keyHeader``.
    public static let proxyKey = "GBG_PROXY_KEY"
    /// The placeholder username and password a password-grant client sends (ignored).
    public static let placeholderUsername = "vault"
    public static let placeholderPassword = "unused"
}
