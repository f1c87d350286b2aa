import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
#if canImport(Glibc)
import Glibc
#endif

/// Where `vault serve` and `vault proxy` listen: a TCP address (`HOST:PORT`, `[IPV6]:PORT`;
/// port 0 picks a free one) or a Unix socket (`unix:PATH`, made 0600, and only processes of
/// this user are served).
public enum ListenAddress: Sendable, Equatable {
    case tcp(host: String, port: Int)
    case unix(path: String)

    /// The default: a free port on the IPv4 loopback.
    public static let loopback = ListenAddress.tcp(host: "127.0.0.1", port: 0)

    public static func parse(_ text: String) throws(VaultError) -> ListenAddress {
        if text.hasPrefix("unix:") {
            let path = String(text.dropFirst(5))
            guard !path.isEmpty, !path.utf8.contains(0) else { throw .usage("--listen unix: needs a path") }
            let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
            guard absolute.utf8.count < 100 else { throw .usage("--listen unix:\(path.sanitisedForDisplay(limit: 60)): the path is too long for a socket") }
            return .unix(path: absolute)
        }
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                throw .usage("--listen takes HOST:PORT, [IPV6]:PORT or unix:PATH")
            }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":"), !text[..<colon].contains(":") else {
                throw .usage("--listen takes HOST:PORT, [IPV6]:PORT or unix:PATH")
            }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        guard !host.isEmpty, let port = Int(portText), (0...65535).contains(port) else {
            throw .usage("--listen takes HOST:PORT, [IPV6]:PORT or unix:PATH, with a port from 0 to 65535")
        }
        // An address, never a name: what the listener is reachable on is what the user typed.
        guard (try? SocketAddress(ipAddress: String(host), port: port)) != nil else {
            throw .usage("--listen: '\(String(host).sanitisedForDisplay(limit: 60))' is not an IP address")
        }
        return .tcp(host: String(host), port: port)
    }

    /// Whether only this machine can connect (a loopback address or a Unix socket).
    public var isLocalOnly: Bool {
        switch self {
        case .unix: true
        case .tcp(let host, _): host.hasPrefix("127.") || host == "::1"
        }
    }
}

/// One accepted connection: its HTTP/1.1 parts, and who is on the other end
/// (`tcp:ADDRESS:PORT`, or `unix:uid=U,pid=P` for a Unix socket), for audit records.
public struct LocalConnection: Sendable {
    public let channel: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>
    public let caller: String
}

/// A listening socket of `vault serve` or `vault proxy`: HTTP/1.1 with keep-alive. A Unix
/// socket is created 0600 and serves only peers with this process's uid (`SO_PEERCRED`);
/// connections from another uid are closed before a byte is read.
public final class LocalListener: Sendable {
    public let address: ListenAddress
    /// The bound TCP port (0 for a Unix socket).
    public let port: Int
    let server: NIOAsyncChannel<LocalConnection?, Never>
    let socketIdentity: (dev: UInt64, ino: UInt64)?

    private init(address: ListenAddress, port: Int, server: NIOAsyncChannel<LocalConnection?, Never>, socketIdentity: (dev: UInt64, ino: UInt64)?) {
        self.address = address
        self.port = port
        self.server = server
        self.socketIdentity = socketIdentity
    }

    /// How a caller reaches it: `http://HOST:PORT` or `unix:PATH`.
    public var location: String {
        switch address {
        case .unix(let path): "unix:\(path)"
        case .tcp(let host, _): "http://\(host.contains(":") ? "[\(host)]" : host):\(port)"
        }
    }

    /// How long a connection may be idle (nothing read or written) between requests before
    /// it is closed.
    static let idleSeconds: Int64 = 150
    /// How long a connection has for its first request, from the accept, and each later
    /// request from its first byte, before the connection is closed: the head (the proxy,
    /// whose bodies stream and may be slow) or the whole request (serve, whose bodies are a
    /// few hundred bytes). A local caller writes a request at once; one that opens a
    /// connection and sends nothing, or trickles its bytes, would otherwise hold the
    /// connection as long as it likes.
    static let requestSeconds: Int64 = 10
    /// At most this many connections are open at once, and never more than half the
    /// process's descriptor limit (``connectionCap()``); one accepted beyond is closed before
    /// a byte is read. (Without a cap a review's 12,000 held connections took serve to
    /// 340 MB, and 1,100 from another user used up a 1,024-descriptor limit: nothing was
    /// served, and the accept loop spun.)
    static let maximumConnections = 512

    /// The cap now: ``maximumConnections``, or half the soft `RLIMIT_NOFILE` when that is
    /// lower (read at each accept, so a limit changed while running counts; unlimited reads
    /// as the largest value), at least 16.
    static func connectionCap() -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return maximumConnections }
        return max(16, min(maximumConnections, Int(clamping: limit.rlim_cur / 2)))
    }

    /// What ``requestSeconds`` bounds.
    public enum RequestDeadline: Sendable {
        /// The request head: its body may take as long as it needs (the proxy's uploads).
        case head
        /// The head and the body.
        case wholeRequest
    }

    public static func bind(_ address: ListenAddress, deadline: RequestDeadline, group: any EventLoopGroup) async throws(VaultError) -> LocalListener {
        let open = NIOLockedValueBox(0)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            // A caller may close its sending side after the request and still read the answer.
            .childChannelOption(.allowRemoteHalfClosure, value: true)
        let isUnix: Bool
        if case .unix = address { isUnix = true } else { isUnix = false }
        let initializer: @Sendable (any Channel) -> EventLoopFuture<LocalConnection?> = { channel in
            let cap = Self.connectionCap()
            let admitted = open.withLockedValue { count in
                guard count < cap else { return false }
                count += 1
                return true
            }
            guard admitted else {
                Trace.debug("closed a connection: \(cap) are open")
                return channel.close().map { nil }
            }
            channel.closeFuture.whenComplete { _ in open.withLockedValue { $0 -= 1 } }
            let caller: EventLoopFuture<String?>
            if isUnix {
                let provider = channel as! any SocketOptionProvider
                let credentials: EventLoopFuture<PeerCredentials> = provider.unsafeGetSocketOption(
                    level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_PEERCRED))
                caller = credentials.map { peer in peer.uid == geteuid() ? "unix:uid=\(peer.uid),pid=\(peer.pid)" : nil }
            } else {
                let remote = channel.remoteAddress
                let text = remote.map { "tcp:\($0.ipAddress.map { $0.contains(":") ? "[\($0)]" : $0 } ?? "?"):\($0.port ?? 0)" } ?? "tcp:?"
                caller = channel.eventLoop.makeSucceededFuture(text)
            }
            return caller.flatMap { caller in
                guard let caller else {
                    Trace.debug("refused a connection from another user")
                    return channel.close().map { nil }
                }
                return channel.eventLoop.makeCompletedFuture {
                    // A connection with neither a byte read nor written for this long is closed
                    // (a held connection costs memory, and a caller waiting on an answer sees
                    // bytes long before: an exchange's deadline is 30 s, the API's read 120 s).
                    let timer = RequestTimer(coversBody: deadline == .wholeRequest)
                    try channel.pipeline.syncOperations.addHandlers([IdleStateHandler(allTimeout: .seconds(Self.idleSeconds)), IdleCloser(),
                                                                     RequestTimer.Start(timer)])
                    // Without SwiftNIO's error handler: it answers a malformed request (or a body
                    // cut short by a reset) with a 400 of its own, which could cross the answer
                    // vault writes; a malformed request closes the connection instead.
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: false)
                    try channel.pipeline.syncOperations.addHandlers([RequestTimer.End(timer), BodyCoalescer()])
                    let wrapped = try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(wrappingChannelSynchronously: channel)
                    return LocalConnection(channel: wrapped, caller: caller)
                }
            }
        }
        do {
            switch address {
            case .tcp(let host, let port):
                let server = try await bootstrap.bind(host: host, port: port, childChannelInitializer: initializer)
                return LocalListener(address: address, port: server.channel.localAddress?.port ?? port, server: server, socketIdentity: nil)
            case .unix(let path):
                var info = stat()
                if lstat(path, &info) == 0 {
                    guard (info.st_mode & S_IFMT) == S_IFSOCK, info.st_uid == geteuid() else {
                        throw VaultError.usage("--listen unix:\(path.sanitisedForDisplay(limit: 100)): something else is at that path (only a socket of yours is replaced)")
                    }
                    // A socket someone still listens on is in use; only a stale one is replaced.
                    guard !Self.answers(path) else {
                        throw VaultError.usage("--listen unix:\(path.sanitisedForDisplay(limit: 100)): the address is in use (another process listens there)")
                    }
                    unlink(path)
                }
                let previous = umask(0o177)
                defer { umask(previous) }
                let server = try await bootstrap.bind(unixDomainSocketPath: path, childChannelInitializer: initializer)
                chmod(path, 0o600)
                guard lstat(path, &info) == 0, info.st_mode & 0o177 == 0 else {
                    try? await server.channel.close()
                    throw VaultError.failure("the socket \(path.sanitisedForDisplay(limit: 100)) could not be made private")
                }
                return LocalListener(address: address, port: 0, server: server, socketIdentity: (UInt64(info.st_dev), UInt64(info.st_ino)))
            }
        } catch let error as VaultError {
            throw error
        } catch {
            throw .failure("cannot listen on \(address): \(String(describing: error).sanitisedForDisplay(limit: 200))")
        }
    }

    /// Whether a process accepts connections on the Unix socket `path`.
    static func answers(_ path: String) -> Bool {
        let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { return false }
        defer { Glibc.close(descriptor) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in bytes.enumerated() { raw[index] = byte }
        }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0 }
        }
    }

    /// Accepts connections and runs `handle` for each (concurrently) until ``close()``.
    public func serve(_ handle: @escaping @Sendable (LocalConnection) async -> Void) async {
        try? await withThrowingDiscardingTaskGroup { group in
            try await server.executeThenClose { inbound in
                for try await connection in inbound {
                    guard let connection else { continue }
                    group.addTask { await handle(connection) }
                }
            }
        }
    }

    /// Stops accepting; removes a Unix socket that is still this listener's.
    public func close() async {
        try? await server.channel.close()
        if case .unix(let path) = address, let identity = socketIdentity {
            var info = stat()
            if lstat(path, &info) == 0, UInt64(info.st_dev) == identity.dev, UInt64(info.st_ino) == identity.ino { unlink(path) }
        }
    }
}

/// Merges the body parts that one read of the socket decoded into one part, up to
/// ``limit`` bytes: a caller that sends its body in 1-byte chunks would otherwise make as
/// many parts, each a task and a write of its own upstream (an outside review's 1-byte
/// upload took the proxy to 235 MB and kept it busy for minutes). Parts are merged only
/// within a read, so nothing waits for bytes that have not arrived.
final class BodyCoalescer: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    static let limit = 64 * 1024
    private var pending: ByteBuffer?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .body(var chunk) = unwrapInboundIn(data) else {
            pass(context)
            context.fireChannelRead(data)
            return
        }
        if pending == nil {
            pending = chunk
        } else {
            pending!.writeBuffer(&chunk)
        }
        if pending!.readableBytes >= Self.limit { pass(context) }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        pass(context)
        context.fireChannelReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        pass(context)
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        pass(context)
        context.fireChannelInactive()
    }

    /// Hands on what was merged so far.
    private func pass(_ context: ChannelHandlerContext) {
        guard let merged = pending else { return }
        pending = nil
        context.fireChannelRead(wrapInboundOut(.body(merged)))
    }
}

/// Closes the connection on ``IdleStateHandler``'s event.
final class IdleCloser: ChannelInboundHandler, Sendable {
    typealias InboundIn = NIOAny

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }
}

/// ``LocalListener/requestSeconds``: a timer from the accept (the first request) or from the
/// first byte read while no request is under way (``Start``, before the HTTP decoder), stopped
/// by the decoded head or, when it covers the body, by the request's end (``End``, after the
/// decoder); a request's end waits for the next request's first byte. The timer closes the
/// connection. Used on the connection's event loop only.
final class RequestTimer {
    let coversBody: Bool
    var timer: Scheduled<Void>?
    var betweenRequests = true

    init(coversBody: Bool) { self.coversBody = coversBody }

    func start(_ channel: any Channel) {
        guard timer == nil else { return }
        let what = coversBody ? "request" : "request head"
        timer = channel.eventLoop.scheduleTask(in: .seconds(LocalListener.requestSeconds)) {
            Trace.debug("closed a connection whose \(what) was not whole \(LocalListener.requestSeconds) s after it began")
            channel.close(promise: nil)
        }
    }

    func stop() {
        timer?.cancel()
        timer = nil
    }

    final class Start: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias InboundOut = ByteBuffer
        let owner: RequestTimer

        init(_ owner: RequestTimer) { self.owner = owner }

        // The first request's time runs from the accept: a connection that sends nothing is
        // closed as one that trickles.
        func handlerAdded(context: ChannelHandlerContext) {
            if context.channel.isActive { owner.start(context.channel) }
        }

        func channelActive(context: ChannelHandlerContext) {
            owner.start(context.channel)
            context.fireChannelActive()
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            if owner.betweenRequests { owner.start(context.channel) }
            context.fireChannelRead(data)
        }

        func channelInactive(context: ChannelHandlerContext) {
            owner.stop()
            context.fireChannelInactive()
        }
    }

    final class End: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias InboundOut = HTTPServerRequestPart
        let owner: RequestTimer

        init(_ owner: RequestTimer) { self.owner = owner }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head:
                owner.betweenRequests = false
                if !owner.coversBody { owner.stop() }
            case .end:
                owner.betweenRequests = true
                owner.stop()
            case .body:
                break
            }
            context.fireChannelRead(data)
        }
    }
}
