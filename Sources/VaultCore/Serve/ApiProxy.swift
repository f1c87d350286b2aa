import AsyncHTTPClient
import CSodium
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1

/// `vault proxy`: an authenticating reverse proxy to an environment's API base. A request to
/// `http://ADDR/PATH?QUERY` goes to `API_BASE` + `PATH?QUERY` (the base's own path is the
/// prefix: `/v2/captain/` and `/journey/start` make `/v2/captain/journey/start`) with
/// `Authorization: Bearer <token>` set here; an incoming `Authorization` and this proxy's
/// key header are dropped, as are hop-by-hop headers. Bodies stream both ways. A `401` from
/// upstream gets one retry with a fresh token when the request's body was small enough to
/// keep (``retainedBody``); otherwise the `401` is passed on (the next request has the
/// fresh token). TCP callers must send ``keyHeader`` with this run's key; on a Unix socket
/// the peer's uid is the check. Each request is a line of the ``RequestLog``.
public final class ApiProxy: Sendable {
    /// The header a TCP caller sends with the per-run key.
    public static let keyHeader = "X-Vault-Proxy-Key"
    /// Request bodies up to this size are kept until the answer, for a retry after a `401`.
    public static let retainedBody = 64 * 1024
    /// At most this many bytes of a response body are handed to the caller's connection
    /// before the proxy waits for its event loop to take them (``handle``).
    static let relayWindow = 1024 * 1024
    /// What each chunk counts against ``relayWindow`` besides its bytes: a write of its own
    /// on the event loop, and the buffer it was read into. Without it an API that sends
    /// 1-byte chunks had a million writes in flight per window (an outside review's took the
    /// proxy to 814 MB and kept both cores busy a minute after the callers had gone).
    static let chunkCost = 4 * 1024

    public let key: SecureBytes
    let keyDigest: [UInt8]
    public let keeper: TokenKeeper
    let base: UpstreamBase
    public let apiBase: String
    let client: HTTPClient
    let log: RequestLog?
    let requireKey: Bool

    /// `apiBase` must be an absolute http(s) URL; `transport` gives the CA and proxy rules
    /// (those of `vault token`).
    public init(apiBase: String, keeper: TokenKeeper, transport: TransportOptions, log: RequestLog?, requireKey: Bool) throws(VaultError) {
        guard let base = UpstreamBase(apiBase: apiBase) else {
            throw .usage("the environment's API base '\(apiBase.sanitisedForDisplay(limit: 100))' is not an http(s) URL")
        }
        self.base = base
        self.apiBase = apiBase
        let secret = PlaceholderCredentials.randomSecret()
        key = SecureBytes(utf8: secret)
        keyDigest = Sodium.blake2b(Array(secret.utf8))
        self.keeper = keeper
        self.log = log
        self.requireKey = requireKey
        var configuration = try AsyncHTTPTransport(options: transport).makeConfiguration(for: apiBase)
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 128)
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.timeout.read = .seconds(120)
        client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }

    public func shutdown() async {
        try? await client.shutdown()
    }

    /// Request headers that are the connection's, not the request's (RFC 9110 §7.6.1), and
    /// what the proxy sets or must not forward.
    static let dropped: Set<String> = ["connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate", "te", "trailer",
                                       "transfer-encoding", "upgrade", "host", "authorization", keyHeader.lowercased(), "content-length", "expect"]

    /// Serves one connection's requests (keep-alive) until it closes.
    public func serve(_ connection: LocalConnection) async {
        try? await connection.channel.executeThenClose { inbound, outbound in
            let reader = PartReader(inbound.makeAsyncIterator())
            while let part = try await reader.next() {
                guard case .head(let head) = part else { continue }
                let keepOpen = try await handle(head, reader: reader, outbound: outbound, loop: connection.channel.channel.eventLoop,
                                                caller: connection.caller)
                // (A CONNECT's answer, a 400, closes the connection: the caller expects a tunnel.)
                if !keepOpen || !head.isKeepAlive || head.method == .CONNECT { return }
            }
        }
    }

    /// One request; false when the connection must close (its body was not read to the end,
    /// or the answer broke off).
    private func handle(_ head: HTTPRequestHead, reader: PartReader, outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>,
                        loop: any EventLoop, caller: String) async throws -> Bool {
        let started = ContinuousClock.now
        var line = RequestLog.Line(method: head.method.rawValue, path: UpstreamBase.loggedPath(head.uri), caller: caller)
        var logged = false
        let counter = ByteCounter()
        func finish(_ status: Int) {
            guard !logged else { return }
            logged = true
            line.status = status
            line.durationMs = Int64((ContinuousClock.now - started) / .milliseconds(1))
            log?.append(line)
        }
        // A request that ends any other way (the caller went away, a write failed) is a line
        // too: what was sent upstream is never missing from the log.
        defer {
            if !logged {
                line.aborted = true
                line.bytesIn = max(line.bytesIn, counter.count)
                finish(line.status)
            }
        }
        if requireKey, !keyMatches(head.headers.first(name: Self.keyHeader)) {
            // Not forwarded, and not a line of the log: any local user can send these, and
            // would otherwise write to the owner's log without bound. The connection closes
            // (kept open, one refused request would hold it for the 150 s idle time).
            logged = true
            _ = try await reader.drainBody(limit: Self.retainedBody)
            try await Self.writeError(.unauthorized, "invalid_proxy_key", "send this run's key in the \(Self.keyHeader) header", to: outbound,
                                      closing: true)
            return false
        }
        // TRACE would have the API reflect the request, the token with it (RFC 9110 §9.3.8: no
        // credentials in a TRACE); CONNECT asks for a tunnel, which the proxy is not.
        if head.method == .TRACE || head.method == .CONNECT {
            let drained = try await reader.drainBody(limit: Self.retainedBody)
            try await Self.writeError(.methodNotAllowed, "invalid_request", "\(head.method.rawValue) is not forwarded", to: outbound)
            finish(405)
            return drained
        }
        guard let target = base.url(for: head.uri) else {
            let drained = try await reader.drainBody(limit: Self.retainedBody)
            try await Self.writeError(.badRequest, "invalid_request", "the path must start with / and contain no '..' segment", to: outbound)
            finish(400)
            return drained
        }
        var headers = HTTPHeaders()
        let connectionNamed = Set(head.headers[canonicalForm: "connection"].map { $0.lowercased() })
        for (name, value) in head.headers where !Self.dropped.contains(name.lowercased()) && !connectionNamed.contains(name.lowercased()) {
            headers.add(name: name, value: value)
        }
        let declaredLength = head.headers.first(name: "content-length").flatMap { Int($0) }
        let hasBody = (declaredLength ?? 0) > 0 || head.headers.contains(name: "transfer-encoding")

        // A client that waits for `100 Continue` (curl does for bodies over 1 MB) gets it
        // here, once its key is checked, instead of waiting a second for nothing.
        if head.headers[canonicalForm: "expect"].contains(where: { $0.lowercased() == "100-continue" }) {
            try await outbound.write(.head(HTTPResponseHead(version: .http1_1, status: .continue)))
        }
        // The body: kept whole when small (a 401 can then be retried), else streamed.
        var kept = ByteBuffer()
        var bodyEnded = !hasBody
        if hasBody {
            while kept.readableBytes <= Self.retainedBody, let part = try await reader.next() {
                if case .body(var chunk) = part { kept.writeBuffer(&chunk) } else { bodyEnded = true; break }
                line.bytesIn = kept.readableBytes
            }
        }
        var token: HandedToken
        do {
            token = try await keeper.current(caller: "proxy")
        } catch {
            let drained = bodyEnded ? true : try await reader.drainBody(limit: 0)
            try await Self.writeError(.serviceUnavailable, "temporarily_unavailable",
                                      "vault could not obtain the profile's token: \(error.message.sanitisedForDisplay(limit: 200))", to: outbound)
            finish(503)
            return drained
        }
        var attempt = 0
        while true {
            attempt += 1
            var request = HTTPClientRequest(url: target)
            request.method = head.method
            request.headers = headers
            token.token.withUnsafeBytes { request.headers.replaceOrAdd(name: "Authorization", value: "Bearer " + String(decoding: $0, as: UTF8.self)) }
            if bodyEnded {
                counter.count = kept.readableBytes
                if hasBody || kept.readableBytes > 0 { request.body = .bytes(kept) }
            } else {
                let stream = BodyStream(prefix: kept, reader: reader, counter: counter)
                request.body = .stream(stream, length: declaredLength.map { .known(Int64($0)) } ?? .unknown)
            }
            let response: HTTPClientResponse
            do {
                response = try await client.execute(request, timeout: .hours(1))
            } catch {
                try await Self.writeError(.badGateway, "upstream_unavailable",
                                          "the API could not be reached: \(AsyncHTTPTransport.cause(of: error).sanitisedForDisplay(limit: 200))", to: outbound)
                line.bytesIn = counter.count
                // A caller that went away mid-upload is what failed the upload: aborted, as
                // when its going away is seen first.
                if reader.brokeOff { line.aborted = true }
                finish(502)
                return bodyEnded || reader.ended
            }
            // The API's own id for the request, unless it repeats the token (an API that echoes
            // its request would put it in the log).
            let tokenRuns = runs(of: token)
            line.requestID = response.headers.first(name: "X-Request-ID").map {
                tokenRuns.found(in: $0) ? TokenRequest.withheld : $0.sanitisedForDisplay(limit: 64)
            }
            line.status = Int(response.status.code)
            line.bytesIn = counter.count
            if response.status == .unauthorized, attempt == 1, bodyEnded {
                // The token was refused (revoked, or expired early): one fresh token, one
                // retry. No new one (replaced less than 10 s ago, or none could be had): the
                // API's 401 is passed on as it came.
                let replacement: HandedToken?
                do {
                    replacement = try await keeper.current(caller: "proxy", replacing: token)
                } catch {
                    Trace.debug("no fresh token after a 401: \(error.message)")
                    replacement = nil
                }
                if let replacement, replacement.generation != token.generation {
                    for try await _ in response.body {}
                    token = replacement
                    line.retried = true
                    continue
                }
            }
            // The API's headers, but none that repeats the token: the caller gets API calls made
            // with it, never the token (an API that echoes its request would hand it back;
            // a body that does is passed on as it comes).
            var responseHeaders = HTTPHeaders()
            for (name, value) in response.headers where !Self.dropped.contains(name.lowercased()) || name.lowercased() == "content-length" {
                responseHeaders.add(name: name, value: tokenRuns.found(in: value) ? TokenRequest.withheld : value)
            }
            try await outbound.write(.head(HTTPResponseHead(version: .http1_1, status: response.status, headers: responseHeaders)))
            var sent = 0
            var unsettled = 0
            var settling: EventLoopFuture<Void>?
            do {
                for try await chunk in response.body {
                    sent += chunk.readableBytes
                    line.bytesOut = sent
                    try await outbound.write(.body(.byteBuffer(chunk)))
                    // The writer hands each write to the caller's event loop and learns that the
                    // caller's socket is full only once the loop has done them: until then it
                    // takes every chunk the API sends (an endless body from a fast API to a fast
                    // caller grew the proxy by hundreds of MB). Every `relayWindow` bytes (each
                    // chunk counting `chunkCost` more) the loop is asked to answer, and the
                    // answer to the previous ask is awaited: at most two windows are in flight,
                    // and the loop never runs dry.
                    unsettled += chunk.readableBytes + Self.chunkCost
                    if unsettled >= Self.relayWindow {
                        unsettled = 0
                        if let previous = settling { try await previous.get() }
                        settling = loop.submit {}
                    }
                }
            } catch {
                // The upstream broke off mid-body, or the caller went away: the connection closes.
                line.bytesIn = counter.count
                line.bytesOut = sent
                line.aborted = true
                finish(Int(response.status.code))
                return false
            }
            try await outbound.write(.end(nil))
            line.bytesIn = counter.count
            line.bytesOut = sent
            finish(Int(response.status.code))
            return bodyEnded || reader.ended
        }
    }

    /// The runs of the token (``RepeatedRuns``), made once per token.
    private let keptTokenRuns = NIOLockedValueBox<(generation: Int, runs: RepeatedRuns)?>(nil)

    private func runs(of token: HandedToken) -> RepeatedRuns {
        keptTokenRuns.withLockedValue { kept in
            if let kept, kept.generation == token.generation { return kept.runs }
            let made = RepeatedRuns([token.token])
            kept = (token.generation, made)
            return made
        }
    }

    private func keyMatches(_ given: String?) -> Bool {
        guard let given else { return false }
        return Sodium.constantTimeEqual(Sodium.blake2b(Array(given.utf8)), keyDigest)
    }

    static func writeError(_ status: HTTPResponseStatus, _ code: String, _ description: String,
                           to outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>, closing: Bool = false) async throws {
        let data = (try? JSONSerialization.data(withJSONObject: ["error": code, "error_description": description], options: [.sortedKeys])) ?? Data()
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: String(data.count))
        if closing { headers.add(name: "Connection", value: "close") }
        try await outbound.write(contentsOf: [.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers)),
                                              .body(.byteBuffer(ByteBuffer(bytes: data))), .end(nil)])
    }
}

/// The parts of one connection, read by the connection's loop and, while a request body
/// streams upstream, by the HTTP client (one reader at a time).
final class PartReader: @unchecked Sendable {
    private var iterator: NIOAsyncChannelInboundStream<HTTPServerRequestPart>.AsyncIterator
    /// The current request's `.end` was read.
    private(set) var ended = false
    /// The caller's connection failed or closed before the current request's `.end`.
    private(set) var brokeOff = false

    init(_ iterator: NIOAsyncChannelInboundStream<HTTPServerRequestPart>.AsyncIterator) { self.iterator = iterator }

    func next() async throws -> HTTPServerRequestPart? {
        let part: HTTPServerRequestPart?
        do {
            part = try await iterator.next()
        } catch {
            brokeOff = true
            throw error
        }
        switch part {
        case .head:
            ended = false
            brokeOff = false
        case .end: ended = true
        case nil: if !ended { brokeOff = true }
        case .body: break
        }
        return part
    }

    /// Reads and discards the rest of the body, up to `limit` bytes; false when more came.
    func drainBody(limit: Int) async throws -> Bool {
        var read = 0
        while !ended, let part = try await next() {
            if case .body(let chunk) = part {
                read += chunk.readableBytes
                if read > limit { return false }
            }
        }
        return true
    }
}

/// Bytes sent upstream.
final class ByteCounter: @unchecked Sendable {
    var count = 0
}

/// A request body for the HTTP client: the part already read, then the rest as it arrives
/// (the channel's back-pressure slows the caller when upstream is slow).
struct BodyStream: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let prefix: ByteBuffer
    let reader: PartReader
    let counter: ByteCounter

    struct AsyncIterator: AsyncIteratorProtocol {
        var prefix: ByteBuffer?
        let reader: PartReader
        let counter: ByteCounter

        mutating func next() async throws -> ByteBuffer? {
            if let first = prefix {
                prefix = nil
                if first.readableBytes > 0 {
                    counter.count += first.readableBytes
                    return first
                }
            }
            while !reader.ended, let part = try await reader.next() {
                if case .body(let chunk) = part {
                    counter.count += chunk.readableBytes
                    return chunk
                }
            }
            return nil
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(prefix: prefix, reader: reader, counter: counter) }
}

/// The API base a proxy forwards to, and how a caller's request target becomes a URL under
/// it (the base's path, then the caller's path and query).
public struct UpstreamBase: Sendable, Equatable {
    public let scheme: String
    public let host: String
    public let port: Int?
    /// Percent-encoded, ending in `/`.
    public let path: String

    /// nil unless `apiBase` is an absolute http(s) URL with a host.
    public init?(apiBase: String) {
        guard let components = URLComponents(string: apiBase), let scheme = components.scheme?.lowercased(), scheme == "https" || scheme == "http",
              let host = components.host, !host.isEmpty else { return nil }
        var path = components.percentEncodedPath
        if !path.hasSuffix("/") { path += "/" }
        (self.scheme, self.host, self.port, self.path) = (scheme, host, components.port, path)
    }

    /// The upstream URL for an origin-form request target, without its fragment (never
    /// sent); nil for anything else.
    public func url(for uri: String) -> String? {
        guard uri.hasPrefix("/"), !uri.hasPrefix("//") else { return nil }
        // The path ends at a `?` or a `#`, as URL readers end it (fuzzing found `/%2E#`: a
        // path read to its end passed the dot check while the URL's path ended in `%2E`).
        let target = Self.prefix(of: uri) { $0 != "#" }
        let path = Self.prefix(of: target) { $0 != "?" }
        // Every escape must decode to UTF-8 (an invalid one made the HTTP client drop the
        // whole path), and no segment may be `.` or `..`, escaped or not, nor start so
        // before a `;` (`..;/`): the request stays under the API base, whatever a server
        // behind it normalises.
        guard let decoded = path.removingPercentEncoding, !decoded.contains("\\") else { return nil }
        let segments = decoded.split(separator: "/", omittingEmptySubsequences: false)
        guard !segments.contains(where: { segment in
            let name = segment.split(separator: ";", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            return name == "." || name == ".."
        }) else { return nil }
        let hostPart = host.contains(":") ? "[\(host)]" : host
        let url = "\(scheme)://\(hostPart)\(port.map { ":\($0)" } ?? "")\(self.path)\(target.dropFirst())"
        // What the HTTP client will send must be the base's path and then the caller's.
        guard let parsed = URLComponents(string: url), parsed.host?.lowercased() == host.lowercased(),
              parsed.percentEncodedPath.hasPrefix(self.path) else { return nil }
        return url
    }

    /// A request target as the request log keeps it: without its query or fragment, safe
    /// to show, at most 200 characters.
    public static func loggedPath(_ uri: String) -> String {
        prefix(of: uri) { $0 != "?" && $0 != "#" }.sanitisedForDisplay(limit: 200)
    }

    /// The text before the first Unicode scalar that `keep` refuses. By scalars, as a URL
    /// reader splits, not by characters: a `?` followed by a combining mark is one
    /// character, which a split by characters would miss (fuzzing found the query logged).
    static func prefix(of text: String, while keep: (Unicode.Scalar) -> Bool) -> String {
        String(String.UnicodeScalarView(text.unicodeScalars.prefix(while: keep)))
    }
}
