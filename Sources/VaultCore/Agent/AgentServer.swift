import Foundation
import NIOCore
import NIOExtras
import NIOPosix
#if canImport(Glibc)
import Glibc
#endif

/// `struct ucred` (SO_PEERCRED on Linux): pid, uid, gid.
struct PeerCredentials: Sendable {
    var pid: Int32 = 0
    var uid: UInt32 = UInt32.max
    var gid: UInt32 = UInt32.max
}

/// The per-user agent of one vault (`vault unlock`). It holds the unlocked keys (in
/// libsodium guarded memory, in a process that cannot be dumped or ptraced), listens on a
/// 0600 Unix socket in a 0700 directory, serves only peers of its own uid, and performs
/// the operations of ``AgentOperation``: tokens, read-only checks, its status, and `lock`.
/// Nothing it does changes the vault or where a secret is sent: the network settings it
/// uses are those `vault unlock` gave it, and a request with other settings is refused.
/// It ends at its deadline, after its idle time, on `vault lock`, on SIGTERM/SIGHUP/SIGINT,
/// and as soon as the vault file is replaced, moved or removed, its keys or passphrase
/// change, or its database schema is found changed.
public final class AgentServer: @unchecked Sendable {
    let unlocked: UnlockedVault
    public let socketPath: String
    /// The team vault's link by URL (``AgentProtocol/urlLink(_:)``), made by this agent.
    private let urlLink: String?
    let vaultPath: String
    let startedAt: Date
    let deadline: Date
    let idle: TimeInterval
    /// The network settings of every exchange, fixed at `vault unlock`.
    let network: AgentNetwork
    private let transport: TransportOptions
    private let lock = NSLock()
    private var lastActivity: Date
    private var requests: Int64 = 0
    private var stopping = false
    /// Requests accepted whose answer is not yet written.
    private var inFlight = 0
    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private var serverChannel: (any Channel)?
    private var socketIdentity: (dev: UInt64, ino: UInt64)?
    private var signalSources: [any DispatchSourceSignal] = []
    /// Profiles kept fresh, and whether a renewal is in flight for each.
    private var fresh: [AgentAnswer.FreshEntry] = []
    private var refreshing: Set<Int> = []
    private let finished = DispatchSemaphore(value: 0)
    /// The HTTP clients of the token exchanges, kept alive between them.
    let httpClients = HTTPClientPool()
    /// When a team vault's header was last compared (``reasonToEnd()``).
    private var lastHeaderCheck = Date.distantPast
    /// The header the vault was unlocked with: a request that met new keys (a `rekey` or
    /// `passwd` by another process) is served with them once reopened, and the agent ends
    /// after it, as it ends when it sees the stored header change between requests (an
    /// outside review's busy member agent went on under the new keys, an idle one ended).
    private let unlockedHeader: VaultHeader

    /// Opens the vault at `vaultPath` as the member whose identity `vault unlock` handed
    /// over (so Argon2id ran once), reads the CA bundle `cacert` (else `VAULT_CA_BUNDLE`)
    /// once, and names the socket.
    public init(vaultPath: String, identity: MemberIdentity, lifetime: TimeInterval, idle: TimeInterval,
                keepFresh: [(profile: String, environment: String?)] = [], cacert: String? = nil, urlLink: String? = nil) throws(VaultError) {
        let vault = try Vault.open(at: vaultPath)
        unlocked = try vault.unlock(identity: identity)
        unlockedHeader = unlocked.header
        // What this user's clients remember of the vault (FORMAT.md §12): checked once here,
        // then at every write transaction of the agent.
        try unlocked.checkKnownState(KnownVaults.forUser())
        self.vaultPath = vaultPath
        network = try AgentNetwork.current(cacert: cacert)
        var transport = TransportOptions(caBundlePath: network.caBundle, environment: network.proxy)
        if let bundle = network.caBundle { transport.caCertificates = try TransportOptions.readCertificates(bundle) }
        self.transport = transport
        guard let path = unlocked.database.agentSocketPath else {
            throw .failure("cannot name the agent's socket (the vault file moved, or the directory's path is too long)")
        }
        socketPath = path
        self.urlLink = urlLink
        startedAt = Date()
        lastActivity = startedAt
        deadline = startedAt.addingTimeInterval(lifetime)
        self.idle = idle
        for entry in keepFresh {
            _ = try unlocked.verifiedProfile(named: entry.profile)
            if let environment = entry.environment { _ = try unlocked.verifiedEnvironment(named: environment) }
            fresh.append(.init(profile: entry.profile, environment: entry.environment, expiresAt: nil,
                               nextRefreshAt: Int64(startedAt.timeIntervalSince1970), refreshes: 0, failures: 0, lastError: nil))
        }
    }

    /// Binds the socket (0600, in the checked 0700 directory). A live agent already
    /// serving this vault is an error; a stale socket file is removed.
    public func bind() throws(VaultError) {
        let directory = (socketPath as NSString).deletingLastPathComponent
        try AgentProtocol.preparePrivateDirectory(directory)
        switch AgentClient(socketPath: socketPath).call(.status) {
        case .answered: throw .failure("an agent already serves this vault (\(socketPath))", hint: "`vault lock` ends it")
        case .untrusted(let why): throw .failure(why)
        case .absent, .stale, .broken: unlink(socketPath)
        }
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 128)
            // A client may close its sending side after the request and still read the answer.
            .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { [self] channel in
                let provider = channel as! any SocketOptionProvider
                let credentials: EventLoopFuture<PeerCredentials> = provider.unsafeGetSocketOption(
                    level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_PEERCRED))
                return credentials.flatMap { peer in
                    // Only this user's processes are served, whoever else can reach the socket.
                    guard peer.uid == geteuid() else {
                        Trace.debug("refused a connection from uid \(peer.uid)")
                        return channel.close()
                    }
                    // The whole request within its deadline from now, however slowly its
                    // bytes arrive; then the connection is closed.
                    let handler = AgentConnectionHandler(server: self)
                    handler.deadline = channel.eventLoop.scheduleTask(in: .seconds(AgentProtocol.requestSeconds)) {
                        if !handler.received { channel.close(promise: nil) }
                    }
                    return channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandlers([
                            AgentServer.frameDecoder(),
                            LengthFieldPrepender(lengthFieldBitLength: .fourBytes),
                            handler,
                        ])
                    }
                }
            }
        let previous = umask(0o177)
        defer { umask(previous) }
        do {
            serverChannel = try bootstrap.bind(unixDomainSocketPath: socketPath).wait()
        } catch {
            throw .failure("cannot listen on \(socketPath): \(String(describing: error).sanitisedForDisplay(limit: 200))")
        }
        chmod(socketPath, 0o600)
        var info = stat()
        guard lstat(socketPath, &info) == 0, info.st_mode & 0o177 == 0 else {
            throw .failure("the agent socket \(socketPath) could not be made private")
        }
        socketIdentity = (UInt64(info.st_dev), UInt64(info.st_ino))
        if let urlLink {
            // A link left by an agent that was killed is replaced; a failure only costs
            // clients with that URL the parse that finds the socket by identity.
            var existing = stat()
            if lstat(urlLink, &existing) == 0, (existing.st_mode & S_IFMT) == S_IFLNK { unlink(urlLink) }
            symlink((socketPath as NSString).lastPathComponent, urlLink)
        }
    }

    /// Serves until the agent ends, then removes the socket.
    public func run() {
        for number in [SIGTERM, SIGHUP, SIGINT] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { [self] in stop(reason: "signal \(number)") }
            source.resume()
            signalSources.append(source)
        }
        group.next().scheduleRepeatedTask(initialDelay: .milliseconds(200), delay: .milliseconds(200)) { [self] _ in
            // The checks read the vault (a team vault over the network), which the event
            // loop must not wait for.
            Task {
                if let reason = reasonToEnd() { return stop(reason: reason) }
                unlocked.flushKnownState(onlyIfDue: true)
                renewDueTokens()
            }
        }
        finished.wait()
        if let channel = serverChannel { try? channel.close().wait() }
        removeSocket()
        // Answers still being written (the `lock` that ended it, a token in flight) finish
        // first: shutting the event loop down under them would drop them, and NIO traps on
        // a write to a loop that has shut down.
        let deadline = Date().addingTimeInterval(5)
        while lock.withLock({ inFlight }) > 0, Date() < deadline { usleep(5_000) }
        unlocked.flushKnownState()
        let closed = DispatchSemaphore(value: 0)
        Task { [httpClients] in
            await httpClients.shutdown()
            closed.signal()
        }
        _ = closed.wait(timeout: .now() + 5)
        try? group.syncShutdownGracefully()
    }

    /// Why the agent must end now, if it must.
    func reasonToEnd() -> String? {
        let now = Date()
        if now >= deadline { return "its time is up" }
        if now.timeIntervalSince(lock.withLock { lastActivity }) >= idle { return "it was idle" }
        if unlocked.database.schemaRefused { return "the vault's database schema changed" }
        if !unlocked.database.isStillInPlace { return "the vault file was replaced, moved or removed" }
        // The header, re-read as often as the store makes cheap (a file before every
        // request, a team vault at most every 2 s: a server that cannot be reached for a
        // moment does not end the session).
        let interval = unlocked.database.headerPollInterval
        let due = lock.withLock { () -> Bool in
            guard now.timeIntervalSince(lastHeaderCheck) >= interval else { return false }
            lastHeaderCheck = now
            return true
        }
        if unlocked.header != unlockedHeader || (due && unlocked.storedHeaderChanged()) {
            return "the vault's keys or passphrase changed"
        }
        var info = stat()
        if let identity = socketIdentity, lstat(socketPath, &info) != 0 || UInt64(info.st_ino) != identity.ino {
            return "its socket was removed"
        }
        return nil
    }

    /// `--keep-fresh`: renews each profile's token before it drops under the margin that
    /// `vault token` needs (the default `--min-ttl` plus a minute, or half the token's
    /// lifetime for short-lived tokens), so a `vault token` never waits on the network.
    /// Every renewal is an exchange with its own audit record (`refresh`); failures are
    /// retried with exponential backoff (2 s doubling, at most 5 min, with jitter) and shown
    /// by `vault status`.
    func renewDueTokens() {
        let now = Int64(Date().timeIntervalSince1970)
        let due: [(Int, AgentAnswer.FreshEntry)] = lock.withLock {
            fresh.enumerated().filter { index, entry in entry.nextRefreshAt <= now && !refreshing.contains(index) }
                .map { index, entry in
                    refreshing.insert(index)
                    return (index, entry)
                }
        }
        for (index, entry) in due {
            Task { await renew(index, entry) }
        }
    }

    private func renew(_ index: Int, _ entry: AgentAnswer.FreshEntry) async {
        let result: Result<DeliveredToken, VaultError>
        do {
            result = .success(try await unlocked.obtainToken(
                TokenOptions(profile: entry.profile, environment: entry.environment, fresh: true, minTTL: 0, action: .refresh),
                exchange: exchange(timeoutMs: nil, connectTimeoutMs: nil)))
        } catch {
            result = .failure(error)
        }
        let now = Int64(Date().timeIntervalSince1970)
        lock.withLock {
            defer { refreshing.remove(index) }
            switch result {
            case .success(let token):
                let margin = TokenOptions.renewalMargin(lifetime: token.expiresIn)
                fresh[index].expiresAt = token.expiresAt
                fresh[index].nextRefreshAt = max(now + 1, token.expiresAt - margin)
                fresh[index].refreshes += 1
                fresh[index].failures = 0
                fresh[index].lastError = nil
            case .failure(let error):
                fresh[index].failures += 1
                fresh[index].lastError = error.message
                let backoff = min(300, Int64(1) << min(8, fresh[index].failures))
                fresh[index].nextRefreshAt = now + backoff / 2 + Int64.random(in: 0...max(1, backoff / 2))
            }
        }
        if case .failure(let error) = result { noteFailure(error) }
    }

    /// The exchange with the agent's own network settings and the request's timeouts.
    private func exchange(timeoutMs: Int64?, connectTimeoutMs: Int64?) -> TokenExchange {
        var options = transport
        if let connectTimeoutMs { options.connectTimeout = .milliseconds(connectTimeoutMs) }
        return TokenExchange(transport: AsyncHTTPTransport(options: options, pool: httpClients),
                             timeout: .milliseconds(timeoutMs ?? Int64(TokenOptions.defaultTimeoutSeconds) * 1000))
    }

    /// An error after which the agent must not go on: the keys changed under it, or its
    /// database's schema is no longer the one it checked.
    private func noteFailure(_ error: VaultError) {
        if case .keysChanged = error { stop(reason: "the vault's keys changed") }
        if unlocked.database.schemaRefused { stop(reason: "the vault's database schema changed") }
    }

    func stop(reason: String) {
        let first = lock.withLock { () -> Bool in
            defer { stopping = true }
            return !stopping
        }
        guard first else { return }
        Trace.debug("agent ends: \(reason)")
        finished.signal()
    }

    /// Removes the socket file and the URL link, if they are still this agent's.
    private func removeSocket() {
        var info = stat()
        if let identity = socketIdentity, lstat(socketPath, &info) == 0,
           UInt64(info.st_dev) == identity.dev, UInt64(info.st_ino) == identity.ino {
            unlink(socketPath)
        }
        var target = [CChar](repeating: 0, count: 128)
        if let urlLink, readlink(urlLink, &target, target.count - 1) > 0,
           String(cString: target) == (socketPath as NSString).lastPathComponent {
            unlink(urlLink)
        }
    }

    // MARK: - Operations

    func status() -> AgentAnswer.Status {
        lock.withLock {
            AgentAnswer.Status(pid: getpid(), vault: unlocked.database.path, unlockedAt: Int64(startedAt.timeIntervalSince1970),
                               expiresAt: Int64(deadline.timeIntervalSince1970), idleSeconds: Int64(idle),
                               idleExpiresAt: Int64(lastActivity.addingTimeInterval(idle).timeIntervalSince1970),
                               requests: requests, network: network, keepFresh: fresh)
        }
    }

    func requestStarted() { lock.withLock { inFlight += 1 } }
    func requestAnswered() { lock.withLock { inFlight -= 1 } }

    /// Answers one request frame; `thenEnd` after `lock`'s answer.
    func answer(_ bytes: [UInt8]) async -> (answer: AgentAnswer, thenEnd: Bool) {
        let request: AgentRequest
        do {
            request = try AgentRequest.read(bytes)
        } catch {
            return (.failure(.init(error)), false)
        }
        if let reason = reasonToEnd() {
            stop(reason: reason)
            return (.failure(.init(.failure("the agent is ending (\(reason))"), ending: true)), false)
        }
        lock.withLock {
            requests += 1
            // Asking for the status does not keep the agent alive; using it does.
            if request.operation != .status { lastActivity = Date() }
        }
        do {
            switch request.operation {
            case .status: return (.status(status()), false)
            case .lock: return (.status(status()), true)
            case .verify: return (.verification(try unlocked.verifyEverything()), false)
            case .auditVerify:
                let result = try unlocked.verifyAudit()
                return (.audit(.init(recordsChecked: result.recordsChecked, failureSeq: result.firstFailure?.seq,
                                     failureReason: result.firstFailure?.reason)), false)
            case .token(let token, let network):
                return (try await self.token(token, network: network), false)
            case .proxyRequests(let profile, let environment, let summary):
                return (.recorded(try unlocked.recordProxyRequests(summary, profile: profile, environment: environment).seq), false)
            }
        } catch {
            noteFailure(error)
            return (.failure(.init(error, ending: lock.withLock { stopping })), false)
        }
    }

    private func token(_ request: AgentTokenRequest, network callerNetwork: AgentNetwork) async throws(VaultError) -> AgentAnswer {
        let differences = callerNetwork.differences(from: network)
        guard differences.isEmpty else {
            throw .usage("this session's agent uses the network settings of `vault unlock`, and this command's differ (\(differences.joined(separator: ", ")))",
                         hint: "run with --no-agent to use these settings with the passphrase, or `vault lock` and `vault unlock` with them")
        }
        let minTTL = request.minTTL ?? TokenOptions.defaultMinTTL
        try TokenOptions.checkMinTTL(minTTL)
        try TokenOptions.checkTimeouts(timeoutMs: request.timeoutMs, connectTimeoutMs: request.connectTimeoutMs)
        var options = TokenOptions(profile: request.profile, environment: request.environment, fresh: request.fresh, minTTL: minTTL,
                                   action: request.action, caller: request.caller)
        options.ownEnvironmentOnly = true
        let delivered = try await unlocked.obtainToken(options, exchange: exchange(timeoutMs: request.timeoutMs, connectTimeoutMs: request.connectTimeoutMs))
        if request.print { return .output(TokenOutput.render(delivered, format: request.format ?? .standard)) }
        let token = delivered.token.withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
        return .token(.init(accessToken: token, tokenType: delivered.tokenType, expiresAt: delivered.expiresAt, expiresIn: delivered.expiresIn,
                            environment: delivered.environment.name, apiBase: delivered.environment.apiBase, fromCache: delivered.fromCache))
    }
}

extension AgentServer {
    /// The reader of a connection's request frames (PROTOCOL.md, "Frames"): a 4-byte
    /// big-endian length, then the request; more than the largest frame is refused.
    package static func frameDecoder() -> ByteToMessageHandler<LengthFieldBasedFrameDecoder> {
        ByteToMessageHandler(LengthFieldBasedFrameDecoder(lengthFieldBitLength: .fourBytes), maximumBufferSize: AgentProtocol.maximumFrame + 4)
    }
}

/// One client connection: one framed request in, one framed answer out.
final class AgentConnectionHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let server: AgentServer
    /// A whole request arrived (read on the event loop only).
    private(set) var received = false
    /// Closes the connection if the request is not whole in time.
    var deadline: Scheduled<Void>?

    init(server: AgentServer) { self.server = server }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var frame = unwrapInboundIn(data)
        guard !received else { return }
        received = true
        deadline?.cancel()
        // The decoder's buffer limit is checked per read, not per frame: the frame's own
        // limit is enforced here (PROTOCOL.md, "Frames").
        guard frame.readableBytes <= AgentProtocol.maximumFrame else {
            context.close(promise: nil)
            return
        }
        let bytes = frame.readBytes(length: frame.readableBytes) ?? []
        let channel = context.channel
        let server = server
        server.requestStarted()
        Task {
            let (answer, thenEnd) = await server.answer(bytes)
            try? FaultPoint.reached(FaultPoint.agentAnswers)
            var payload = answer.frame()
            var buffer = channel.allocator.buffer(capacity: payload.count)
            buffer.writeBytes(payload)
            payload.withUnsafeMutableBytes { raw in for i in raw.indices { raw[i] = 0 } }
            channel.writeAndFlush(buffer).whenComplete { _ in
                channel.close(promise: nil)
                server.requestAnswered()
                if thenEnd { server.stop(reason: "vault lock") }
            }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed, !received {
            context.close(promise: nil)  // the client stopped before a whole request
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadline?.cancel()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // Oversized, malformed or broken frames: close this connection, keep serving.
        context.close(promise: nil)
    }
}
