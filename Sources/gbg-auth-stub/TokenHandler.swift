import Foundation
import NIOCore
import NIOHTTP1

/// Handles one HTTP connection: token requests, stats, faults.
final class TokenHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let settings: StubSettings
    let state: StubState
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var tooLarge = false
    /// The body of an API request, digested as it arrives instead of kept.
    private var digest: ApiFake.Digest?
    /// This connection has carried a token request (counted once, as `token_connections`).
    private var carriedTokenRequest = false
    static let maximumRequestBytes = 64 * 1024

    init(settings: StubSettings, state: StubState) {
        self.settings = settings
        self.state = state
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let requestHead):
            head = requestHead
            body = []
            tooLarge = false
            digest = requestHead.uri.hasPrefix(ApiFake.prefix) ? ApiFake.Digest() : nil
        case .body(var buffer):
            if digest != nil {
                digest!.add(buffer.readableBytesView)
            } else if body.count + buffer.readableBytes > Self.maximumRequestBytes {
                tooLarge = true
            } else if let bytes = buffer.readBytes(length: buffer.readableBytes) {
                body += bytes
            }
        case .end:
            guard let head else { return }
            self.head = nil
            handle(head, context: context)
        }
    }

    private func handle(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        let requestID = UUID().uuidString.lowercased()
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        let counts = state.counts.withLockedValue { counts in
            counts.requests += 1
            if path.hasSuffix("/as/token.oauth2") {
                counts.tokenRequests += 1
                if !carriedTokenRequest { counts.tokenConnections += 1 }
            }
            return counts
        }
        if head.method == .GET, path == "/_stub/stats" {
            let api = state.api.counts.withLockedValue { $0 }
            send(.json(.ok, ["requests": counts.requests, "token_requests": counts.tokenRequests, "issued": counts.issued,
                             "token_connections": counts.tokenConnections, "api_requests": api.requests, "api_unauthorized": api.unauthorized]),
                 requestID: requestID, context: context)
            return
        }
        if path.hasPrefix(ApiFake.prefix) {
            api(head, path: path, requestID: requestID, context: context)
            return
        }
        if head.method == .POST, path == "/_stub/revoke" {
            state.api.revokeAll()
            log("revoked every token issued so far")
            send(.json(.ok, ["revoked": true]), requestID: requestID, context: context)
            return
        }
        if path.hasSuffix("/as/token.oauth2") { carriedTokenRequest = true }
        guard path == "/as/token.oauth2" || path == "/captain/api/as/token.oauth2" else {
            send(.json(.notFound, ["error": "not_found"]), requestID: requestID, context: context)
            return
        }
        guard head.method == .POST else {
            send(.oauthError(.methodNotAllowed, "invalid_request", "use POST"), requestID: requestID, context: context)
            return
        }
        let response: StubResponse
        var faultApplies = false
        if counts.tokenRequests <= settings.failFirst {
            var injected = StubResponse.json(HTTPResponseStatus(statusCode: settings.failStatus), ["error": "temporarily_unavailable"])
            if let retryAfter = settings.retryAfter { injected.extraHeaders.append(("Retry-After", String(retryAfter))) }
            response = injected
        } else if tooLarge {
            response = .oauthError(.payloadTooLarge, "invalid_request", "request body too large")
        } else {
            response = authenticate(head)
            faultApplies = true
        }
        let grant = Self.form(body)["grant_type"] ?? "-"
        let client = (Self.form(body)["client_id"] ?? "-").prefix(64)
        log("POST \(path) grant=\(grant.prefix(32)) client_id=\(client) status=\(response.status.code) request_id=\(requestID) fault=\(faultApplies ? settings.fault.rawValue : "none")")
        let deliver = { [self] in
            if faultApplies && settings.fault != .none {
                applyFault(response, requestID: requestID, context: context)
            } else {
                send(response, requestID: requestID, context: context)
            }
        }
        if settings.delayMs > 0 {
            context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(settings.delayMs))) { deliver() }
        } else {
            deliver()
        }
    }

    // MARK: - The GBG behaviour

    private func authenticate(_ head: HTTPRequestHead) -> StubResponse {
        let contentType = head.headers.first(name: "Content-Type")?.lowercased() ?? ""
        guard contentType.hasPrefix("application/x-www-form-urlencoded") else {
            return .oauthError(.badRequest, "invalid_request", "Content-Type must be application/x-www-form-urlencoded")
        }
        let form = Self.form(body)
        guard let grant = form["grant_type"] else {
            return .oauthError(.badRequest, "invalid_request", "Missing grant_type parameter")
        }
        guard grant == "password" || grant == "client_credentials" else {
            return .oauthError(.badRequest, "unsupported_grant_type", "Unsupported grant type")
        }
        // Several entries may share a client id (several valid secrets, e.g. across a rotation).
        guard let clientID = form["client_id"], let secret = form["client_secret"],
              let client = settings.book.clients.first(where: { $0.clientID == clientID && $0.clientSecret == secret })
        else {
            return .oauthError(.unauthorized, "invalid_client", "Invalid client or client credentials")
        }
        if let grants = client.grants, !grants.contains(grant) {
            return .oauthError(.badRequest, "unauthorized_client", "The client is not authorized to use this grant type")
        }
        if grant == "password" {
            guard let username = form["username"], let password = form["password"] else {
                return .oauthError(.badRequest, "invalid_request", "username and password are required")
            }
            guard let user = settings.book.users.first(where: { $0.username == username && $0.password == password }) else {
                return .oauthError(.badRequest, "invalid_grant", "Invalid username or password")
            }
            if let a = client.generation, let b = user.generation, a != b {
                return .oauthError(.badRequest, "invalid_grant", "Client secret and password are from different generations")
            }
            if user.temporary == true {
                return .oauthError(.badRequest, "invalid_grant", "Password expired: the temporary password must be changed")
            }
        } else {
            let scope = form["scope"] ?? ""
            let allowed = client.scopes ?? ["gbg.token"]
            guard !scope.isEmpty, scope.split(separator: " ").allSatisfy({ allowed.contains(String($0)) }) else {
                return .oauthError(.badRequest, "invalid_scope", "The requested scope is invalid")
            }
        }
        state.counts.withLockedValue { $0.issued += 1 }
        var random = SystemRandomNumberGenerator()
        let token = "stub-" + (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &random)) }.joined()
        state.api.issued(token, expiresIn: settings.book.tokenTTL ?? 3600)
        return .json(.ok, ["access_token": token, "token_type": "Bearer", "expires_in": settings.book.tokenTTL ?? 3600])
    }

    /// Decodes an `application/x-www-form-urlencoded` body (`+` is a space).
    static func form(_ body: [UInt8]) -> [String: String] {
        var result: [String: String] = [:]
        for pair in String(decoding: body, as: UTF8.self).split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func decode(_ s: Substring) -> String? { s.replacingOccurrences(of: "+", with: " ").removingPercentEncoding }
            guard let name = decode(parts[0]) else { continue }
            result[name] = parts.count > 1 ? decode(parts[1]) ?? "" : ""
        }
        return result
    }

    // MARK: - The API fake

    private func api(_ head: HTTPRequestHead, path: String, requestID: String, context: ChannelHandlerContext) {
        let fake = state.api
        let authorised = fake.authorised(head)
        fake.counts.withLockedValue {
            $0.requests += 1
            if !authorised { $0.unauthorized += 1 }
        }
        let resource = String(path.dropFirst(ApiFake.prefix.count))
        log("\(head.method) \(path) status=\(authorised ? "ok" : "401") request_id=\(requestID)")
        guard authorised else {
            var refused = StubResponse.json(.unauthorized, ["error": "invalid_token", "error_description": "missing, unknown or expired token"])
            refused.extraHeaders.append(("WWW-Authenticate", "Bearer error=\"invalid_token\""))
            send(refused, requestID: requestID, context: context)
            return
        }
        switch (head.method, resource) {
        case (.GET, "ping"):
            send(.json(.ok, ["ok": true]), requestID: requestID, context: context)
        case (.GET, "headers"):
            send(.json(.ok, ["uri": head.uri, "names": head.headers.map { $0.name.lowercased() }.sorted()]), requestID: requestID, context: context)
        case (.GET, "careless"):
            // An API that echoes its request: the caller's bearer token as its request id.
            let token = String(head.headers.first(name: "Authorization")?.dropFirst(7) ?? "")
            send(.json(.ok, ["ok": true]), requestID: token, context: context)
        case (.POST, "echo"), (.PUT, "echo"):
            let digest = self.digest ?? ApiFake.Digest()
            send(.json(.ok, ["received": digest.count, "digest": digest.hex]), requestID: requestID, context: context)
        case (.GET, "stream"):
            let query = URLComponents(string: head.uri)?.queryItems ?? []
            let total = max(0, Int(query.first { $0.name == "bytes" }?.value ?? "0") ?? 0)
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: "application/octet-stream")
            headers.add(name: "Content-Length", value: String(total))
            headers.add(name: "X-Request-ID", value: requestID)
            context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
            stream(offset: 0, total: total, context: context)
        default:
            send(.json(.notFound, ["error": "not_found"]), requestID: requestID, context: context)
        }
    }

    /// Writes the stream's next chunk once the previous one is written (so a slow reader
    /// slows the writer instead of filling memory).
    private func stream(offset: Int, total: Int, context: ChannelHandlerContext) {
        guard offset < total else {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            return
        }
        let count = min(64 * 1024, total - offset)
        let chunk = context.channel.allocator.buffer(bytes: ApiFake.pattern(offset: offset, count: count))
        // The next chunk as a task of its own: a write that completes at once runs its callback
        // at once, and chaining them directly nested one call per chunk (a 393 MB stream, about
        // 6,000 deep, ended the stub in a review).
        let loop = context.eventLoop
        context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(chunk)))).assumeIsolated().whenSuccess { [self] in
            loop.assumeIsolated().execute { [self] in stream(offset: offset + count, total: total, context: context) }
        }
    }

    // MARK: - Writing

    private func headers(_ response: StubResponse, requestID: String, length: Int) -> HTTPHeaders {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: response.contentType)
        headers.add(name: "Content-Length", value: String(length))
        headers.add(name: "X-Request-ID", value: requestID)
        headers.add(name: "Cache-Control", value: "no-store")
        for (name, value) in response.extraHeaders { headers.add(name: name, value: value) }
        return headers
    }

    private func send(_ response: StubResponse, requestID: String, context: ChannelHandlerContext) {
        let head = HTTPResponseHead(version: .http1_1, status: response.status,
                                    headers: headers(response, requestID: requestID, length: response.body.count))
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: response.body)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    private func applyFault(_ response: StubResponse, requestID: String, context: ChannelHandlerContext) {
        switch settings.fault {
        case .none:
            send(response, requestID: requestID, context: context)
        case .nonJSON:
            send(StubResponse(status: .ok, body: Array("<html><body>Service maintenance</body></html>".utf8), contentType: "text/html"),
                 requestID: requestID, context: context)
        case .empty200:
            send(StubResponse(status: .ok, body: []), requestID: requestID, context: context)
        case .oversized:
            let filler = "{\"access_token\":\"" + String(repeating: "A", count: 2 * 1024 * 1024) + "\",\"token_type\":\"Bearer\",\"expires_in\":3600}"
            send(StubResponse(status: .ok, body: Array(filler.utf8)), requestID: requestID, context: context)
        case .custom:
            var custom = StubResponse(status: HTTPResponseStatus(statusCode: settings.customStatus), body: Array(settings.customBody))
            custom.contentType = settings.customContentType
            send(custom, requestID: requestID, context: context)
        case .closeMidBody:
            let head = HTTPResponseHead(version: .http1_1, status: .ok, headers: headers(response, requestID: requestID, length: response.body.count))
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            let partial = Array(response.body.prefix(max(1, response.body.count / 3)))
            context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: partial)))), promise: nil)
            context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(50)) { context.close(promise: nil) }
        case .stall:
            break // never answer; the client's deadline must fire
        case .slowDrip:
            let head = HTTPResponseHead(version: .http1_1, status: .ok, headers: headers(response, requestID: requestID, length: response.body.count))
            context.writeAndFlush(wrapOutboundOut(.head(head)), promise: nil)
            drip(response.body[...], context: context)
        }
    }

    private func drip(_ rest: ArraySlice<UInt8>, context: ChannelHandlerContext) {
        guard let first = rest.first else {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            return
        }
        context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: [first])))), promise: nil)
        context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(500)) { [self] in
            guard context.channel.isActive else { return }
            drip(rest.dropFirst(), context: context)
        }
    }
}
