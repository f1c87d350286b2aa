import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
#if canImport(Glibc)
import Glibc
#endif

/// A received HTTP response, body capped.
public struct HTTPResponseData: Sendable {
    public var status: Int
    public var headers: [(String, String)]
    public var body: [UInt8]

    public init(status: Int, headers: [(String, String)], body: [UInt8]) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public func header(_ name: String) -> String? {
        headers.first { $0.0.caseInsensitiveCompare(name) == .orderedSame }?.1
    }
}

/// Why a request produced no usable response.
public enum TransportError: Error, Sendable, Equatable {
    /// No response at all: refused, reset before the head, DNS, proxy. Retried.
    case connection(String)
    /// The deadline passed. Retried while time is left.
    case timeout
    /// TLS failed (untrusted certificate, handshake). Not retried.
    case tls(String)
    /// The response started but the body broke off. Not retried.
    case truncated(String)
    /// The body exceeded the cap. Not retried.
    case tooLarge(Int)
}

/// Sends form POSTs for one exchange. Injected so that retry and expiry logic can be
/// tested in-process.
public protocol HTTPTransport: Sendable {
    /// Checks the configuration for `url` (CA bundle, proxy) before the first attempt:
    /// a bad one is a usage error (exit 64), never a retried outage.
    func prepare(url: String) async throws(VaultError)
    func post(url: String, headers: [(String, String)], body: SecureBytes, deadline: ContinuousClock.Instant) async throws(TransportError) -> HTTPResponseData
    /// Releases what `prepare` set up (the HTTP client and its connections).
    func finish() async
}

extension HTTPTransport {
    public func prepare(url: String) async throws(VaultError) {}
    public func finish() async {}
}

/// Network settings of the exchange.
public struct TransportOptions: Sendable {
    /// Extra trusted CA certificates (PEM): `--cacert` or `VAULT_CA_BUNDLE`.
    public var caBundlePath: String?
    /// That bundle's certificates, read once: the agent reads its bundle when `vault unlock`
    /// starts it and never again (nil: read from `caBundlePath` for each new client).
    public var caCertificates: [NIOSSLCertificate]?
    public var connectTimeout: Duration
    /// The responses' size cap.
    public var maxResponseBytes: Int
    /// The proxy variables (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`, …; ``AgentNetwork/proxy``).
    public var environment: [String: String]

    /// `--connect-timeout`'s default, in seconds.
    public static let defaultConnectTimeoutSeconds = 10

    public init(caBundlePath: String? = nil, connectTimeout: Duration = .seconds(defaultConnectTimeoutSeconds),
                maxResponseBytes: Int = 64 * 1024, environment: [String: String] = [:]) {
        self.caBundlePath = caBundlePath
        self.connectTimeout = connectTimeout
        self.maxResponseBytes = maxResponseBytes
        self.environment = environment
    }
}

extension TransportOptions {
    /// The certificates of the PEM bundle at `path` (at least one).
    public static func readCertificates(_ path: String) throws(VaultError) -> [NIOSSLCertificate] {
        guard FileManager.default.isReadableFile(atPath: path) else { throw .usage("cannot read the CA bundle at \(path)") }
        let certificates: [NIOSSLCertificate]
        do {
            certificates = try NIOSSLCertificate.fromPEMFile(path)
        } catch {
            throw .usage("the CA bundle at \(path) is not valid PEM")
        }
        guard !certificates.isEmpty else { throw .usage("no certificate in the CA bundle at \(path)") }
        return certificates
    }
}

/// HTTP clients kept by a process that makes many exchanges (the agent of `vault unlock`):
/// one per distinct network configuration, so that the connection to a token endpoint is
/// kept alive between exchanges instead of being set up (TCP, TLS handshake) for each.
/// A configuration is the CA bundle (its path and the file's identity, size and change
/// time: an edited bundle gets a new client), the connect timeout and the proxy chosen
/// for the URL. ``shutdown()`` closes every connection.
public final class HTTPClientPool: @unchecked Sendable {
    private let lock = NSLock()
    private var clients: [String: HTTPClient] = [:]
    private var closed = false
    /// At most this many configurations are kept; an exchange with yet another one gets a
    /// client of its own, closed when it is done (nothing kept is ever shut down under
    /// another exchange).
    static let maximumClients = 16

    public init() {}

    /// The kept client for `key`, made on first use; nil when the pool is full or closed.
    func client(key: String, configuration: () -> HTTPClient.Configuration) -> HTTPClient? {
        lock.withLock { () -> HTTPClient? in
            guard !closed else { return nil }
            if let existing = clients[key] { return existing }
            guard clients.count < Self.maximumClients else { return nil }
            let made = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration())
            clients[key] = made
            return made
        }
    }

    /// Closes every kept connection; later exchanges fail as "not available".
    public func shutdown() async {
        let all = lock.withLock { () -> [HTTPClient] in
            closed = true
            defer { clients.removeAll() }
            return Array(clients.values)
        }
        for client in all { try? await client.shutdown() }
    }
}

/// The transport over async-http-client: TLS 1.2+, custom CA, proxies, no redirects.
/// One HTTP client serves every attempt of an exchange (`prepare` … `finish`); with a
/// ``HTTPClientPool`` it is the pool's client for this configuration, kept afterwards.
public final class AsyncHTTPTransport: HTTPTransport, @unchecked Sendable {
    public let options: TransportOptions
    private let pool: HTTPClientPool?
    private let lock = NSLock()
    private var client: HTTPClient?
    /// The client is this transport's own (made by `prepare`, shut down by `finish`), not
    /// the pool's.
    private var ownsClient = false

    public init(options: TransportOptions, pool: HTTPClientPool? = nil) {
        self.options = options
        self.pool = pool
    }

    public func prepare(url: String) async throws(VaultError) {
        let configuration = try makeConfiguration(for: url)
        let pooled = try pool?.client(key: poolKey(for: url, proxy: configuration.proxy)) { configuration }
        let previous = lock.withLock { () -> HTTPClient? in
            let old = ownsClient ? client : nil
            client = pooled ?? HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
            ownsClient = pooled == nil
            return old
        }
        try? await previous?.shutdown()
    }

    public func finish() async {
        let owned = lock.withLock { () -> HTTPClient? in
            defer { client = nil; ownsClient = false }
            return ownsClient ? client : nil
        }
        try? await owned?.shutdown()
    }

    /// What makes two exchanges' configurations the same (``HTTPClientPool``).
    func poolKey(for url: String, proxy: HTTPClient.Configuration.Proxy?) throws(VaultError) -> String {
        var key = "timeout=\(options.connectTimeout)"
        if options.caCertificates != nil {
            key += "|ca=read at start"
        } else if let path = options.caBundlePath {
            var info = stat()
            guard stat(path, &info) == 0 else { throw .usage("cannot read the CA bundle at \(path)") }
            key += "|ca=\(path)|\(info.st_dev):\(info.st_ino):\(info.st_size):\(info.st_mtim.tv_sec).\(info.st_mtim.tv_nsec):\(info.st_ctim.tv_sec).\(info.st_ctim.tv_nsec)"
        }
        if let proxy { key += "|proxy=\(String(reflecting: proxy))" }
        return key
    }

    public func post(url: String, headers: [(String, String)], body: SecureBytes, deadline: ContinuousClock.Instant) async throws(TransportError) -> HTTPResponseData {
        if lock.withLock({ client == nil }) {
            do { try await prepare(url: url) } catch { throw .connection(error.message) }
        }
        guard let client = lock.withLock({ client }) else { throw .connection("the HTTP client is not available") }
        do {
            return try await send(client: client, url: url, headers: headers, body: body, deadline: deadline)
        } catch let error as TransportError {
            throw error
        } catch {
            throw Self.classify(error, afterHead: false)
        }
    }

    private func send(client: HTTPClient, url: String, headers: [(String, String)], body: SecureBytes, deadline: ContinuousClock.Instant) async throws -> HTTPResponseData {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        var buffer = ByteBufferAllocator().buffer(capacity: body.count)
        _ = body.withUnsafeBytes { buffer.writeBytes($0) }
        request.body = .bytes(buffer)
        let remaining = ContinuousClock.now.duration(to: deadline)
        guard remaining > .zero else { throw TransportError.timeout }
        let nioDeadline = NIODeadline.now() + .nanoseconds(Int64(remaining.components.seconds) * 1_000_000_000 + remaining.components.attoseconds / 1_000_000_000)

        let response: HTTPClientResponse
        do {
            response = try await client.execute(request, deadline: nioDeadline)
        } catch {
            throw Self.classify(error, afterHead: false)
        }
        let cap = options.maxResponseBytes
        let collected: ByteBuffer
        do {
            collected = try await withDeadline(deadline) { try await response.body.collect(upTo: cap) }
        } catch let error as TransportError {
            throw error
        } catch is NIOTooManyBytesError {
            throw TransportError.tooLarge(cap)
        } catch {
            throw Self.classify(error, afterHead: true)
        }
        return HTTPResponseData(status: Int(response.status.code),
                                headers: response.headers.map { ($0.name, $0.value) },
                                body: Array(collected.readableBytesView))
    }

    static func classify(_ error: any Error, afterHead: Bool) -> TransportError {
        if let error = error as? TransportError { return error }
        if let error = error as? HTTPClientError {
            if error == .deadlineExceeded || error == .readTimeout || error == .connectTimeout || error == .writeTimeout
                || error == .tlsHandshakeTimeout || error == .httpProxyHandshakeTimeout || error == .socksHandshakeTimeout {
                return .timeout
            }
            if afterHead { return .truncated("the connection closed before the whole response arrived") }
            return .connection(cause(of: error))
        }
        if error is NIOSSLError || error is NIOSSLExtraError || error is BoringSSLError || String(describing: type(of: error)).contains("SSL") {
            return .tls(tlsCause(of: error))
        }
        if afterHead { return .truncated("the response body broke off (\(cause(of: error)))") }
        if let error = error as? ChannelError, case .connectTimeout = error { return .timeout }
        return .connection(cause(of: error))
    }

    /// What went wrong with a connection, in a few words a person can act on: refused,
    /// unreachable, a DNS name not found, a proxy's refusal; the library's own text only
    /// for what is not listed here.
    static func cause(of error: any Error) -> String {
        if let error = error as? NIOConnectionError {
            if let first = error.connectionErrors.first { return cause(of: first.error) }
            if error.dnsAError != nil || error.dnsAAAAError != nil {
                return "DNS name not found (\(error.host.sanitisedForDisplay(limit: 80)))"
            }
        }
        if let error = error as? SocketAddressError.UnknownHost {
            return "DNS name not found (\(error.host.sanitisedForDisplay(limit: 80)))"
        }
        if let error = error as? IOError {
            switch error.errnoCode {
            case ECONNREFUSED: return "connection refused (nothing listens on that port)"
            case ENETUNREACH: return "network unreachable"
            case EHOSTUNREACH: return "host unreachable"
            case ECONNRESET: return "the connection was reset"
            case ETIMEDOUT: return "the connection timed out"
            default: return String(cString: strerror(error.errnoCode))
            }
        }
        if let error = error as? HTTPClientError {
            switch error {
            case .remoteConnectionClosed: return "the server closed the connection without answering"
            case .proxyAuthenticationRequired: return "the proxy asks for a login (give it in the proxy URL)"
            case .invalidProxyResponse: return "the proxy refused to connect to the endpoint"
            default: break
            }
        }
        return String(describing: error).sanitisedForDisplay(limit: 160)
    }

    /// A TLS failure in a few words: an untrusted certificate (a private CA needs
    /// `--cacert`), a certificate for another name, or the handshake itself.
    static func tlsCause(of error: any Error) -> String {
        let text = String(describing: error)
        if let error = error as? NIOSSLExtraError, error == .failedToValidateHostname {
            return "certificate problem: the certificate does not name this host"
        }
        if text.contains("CERTIFICATE_VERIFY_FAILED") || text.contains("certificate verify failed") {
            return "certificate problem: the server's certificate is not trusted (a private CA needs --cacert or VAULT_CA_BUNDLE)"
        }
        if text.contains("WRONG_VERSION_NUMBER") { return "the server does not speak TLS on that port (is it http://?)" }
        return "handshake failed (\(text.sanitisedForDisplay(limit: 160)))"
    }

    func makeConfiguration(for url: String) throws(VaultError) -> HTTPClient.Configuration {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv12
        if let certificates = options.caCertificates {
            tls.additionalTrustRoots = [.certificates(certificates)]
        } else if let path = options.caBundlePath {
            tls.additionalTrustRoots = [.certificates(try TransportOptions.readCertificates(path))]
        }
        var configuration = HTTPClient.Configuration(
            tlsConfiguration: tls,
            redirectConfiguration: .disallow,
            timeout: .init(connect: TimeAmount(options.connectTimeout)),
            proxy: try ProxySettings.proxy(for: url, environment: options.environment),
            decompression: .disabled)
        // TokenExchange owns the retry policy (attempts, backoff, deadline): the client's
        // own reconnect loop would turn a refused connection into a wait for the whole
        // connect timeout on every attempt.
        configuration.connectionPool.retryConnectionEstablishment = false
        return configuration
    }
}

/// Runs `body`, throwing ``TransportError/timeout`` if `deadline` passes first.
func withDeadline<T: Sendable>(_ deadline: ContinuousClock.Instant, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(until: deadline, clock: .continuous)
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let value = first else { throw TransportError.timeout }
        return value
    }
}

/// The standard proxy variables, read by the program because async-http-client does not.
public enum ProxySettings {
    /// The proxy for `url`, honouring `HTTPS_PROXY`/`https_proxy` (https URLs),
    /// `HTTP_PROXY`/`http_proxy` (http URLs), `ALL_PROXY` and `NO_PROXY`/`no_proxy`.
    /// Loopback hosts never go through a proxy.
    public static func proxy(for url: String, environment: [String: String]) throws(VaultError) -> HTTPClient.Configuration.Proxy? {
        guard let components = URLComponents(string: url), let host = components.host else { return nil }
        if EndpointPolicy.isLoopback(host: host) { return nil }
        let https = components.scheme?.lowercased() == "https"
        let names = https ? ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"] : ["http_proxy", "HTTP_PROXY", "ALL_PROXY", "all_proxy"]
        guard let value = names.lazy.compactMap({ environment[$0] }).first(where: { !$0.isEmpty }) else { return nil }
        let noProxy = environment["NO_PROXY"] ?? environment["no_proxy"] ?? ""
        if bypasses(host: host, noProxy: noProxy) { return nil }
        let proxyText = value.contains("://") ? value : "http://" + value
        guard let proxyURL = URLComponents(string: proxyText), let proxyHost = proxyURL.host, !proxyHost.isEmpty else {
            throw .usage("the proxy setting is not a valid URL")
        }
        switch proxyURL.scheme?.lowercased() {
        case "http":
            let authorization = proxyURL.user.map { HTTPClient.Authorization.basic(username: $0.removingPercentEncoding ?? $0, password: proxyURL.password?.removingPercentEncoding ?? "") }
            return .server(host: proxyHost, port: proxyURL.port ?? 80, authorization: authorization)
        case "socks5", "socks5h":
            return .socksServer(host: proxyHost, port: proxyURL.port ?? 1080)
        default:
            throw .usage("unsupported proxy scheme '\(proxyURL.scheme ?? "")'", hint: "use an http:// or socks5:// proxy")
        }
    }

    /// `NO_PROXY` matching as curl does: `*`, exact hosts, and domain suffixes.
    public static func bypasses(host: String, noProxy: String) -> Bool {
        let host = host.lowercased()
        for raw in noProxy.split(separator: ",") {
            var entry = raw.trimmingCharacters(in: .whitespaces).lowercased()
            if entry == "*" { return true }
            if entry.hasPrefix(".") { entry.removeFirst() }
            if let colon = entry.lastIndex(of: ":"), !entry.contains("]"), entry.filter({ $0 == ":" }).count == 1 {
                entry = String(entry[..<colon])
            }
            guard !entry.isEmpty else { continue }
            if host == entry || host.hasSuffix("." + entry) { return true }
        }
        return false
    }
}
