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

/// The per-user agent of one vault (`vault unlock`): holds the unlocked keys (in
/// libsodium guarded memory, in a process that cannot be dumped or ptraced), listens on
/// a 0600 Unix socket in a 0700 directory, serves only peers of its own uid, and performs
/// operations for clients. It never returns key material or a stored secret. It ends at
/// its deadline, after its idle time, on `vault lock`, on SIGTERM/SIGHUP/SIGINT, and as
/// soon as the vault file is replaced, moved or removed or its keys or passphrase change.
public final class AgentServer: @unchecked Sendable {
    let unlocked: UnlockedVault
    public let socketPath: String
    let vaultPath: String
    let startedAt: Date
    let deadline: Date
    let idle: TimeInterval
    private let lock = NSLock()
    private var lastActivity: Date
    private var requests: Int64 = 0
    private var stopping = false
    /// Requests accepted whose answer is not yet written.
    private var inFlight = 0
    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private var serverChannel: (any Channel)?
    private var socketIdentity: (dev: UInt64, ino: UInt64)?
    /// The link by the vault file's device and inode, when this agent made it.
    private var fileLink: String?
    private var signalSources: [any DispatchSourceSignal] = []
    /// Profiles kept fresh, and whether a renewal is in flight for each.
    private var fresh: [AgentResponse.FreshEntry] = []
    private var refreshing: Set<Int> = []
    private let finished = DispatchSemaphore(value: 0)
    /// The HTTP clients of the token exchanges, kept alive between them.
    let httpClients = HTTPClientPool()
    /// When a team vault's header was last compared (``reasonToEnd()``).
    private var lastHeaderCheck = Date.distantPast

    /// Opens the vault at `vaultPath` as the member whose identity `vault unlock` handed
    /// over (so Argon2id ran once), and prepares the socket path.
    public init(vaultPath: String, identity: MemberIdentity, lifetime: TimeInterval, idle: TimeInterval,
                keepFresh: [(profile: String, environment: String?)] = []) throws(VaultError) {
        let vault = try Vault.open(at: vaultPath)
        unlocked = try vault.unlock(identity: identity)
        self.vaultPath = vaultPath
        socketPath = unlocked.database.postgresLocation.map { AgentProtocol.socketPath(store: $0.identity) }
            ?? AgentProtocol.socketPath(vaultID: unlocked.vaultID)
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
        try AgentProtocol.preparePrivateDirectory(directory, create: true)
        var existing = stat()
        if lstat(socketPath, &existing) == 0 {
            guard (existing.st_mode & S_IFMT) == S_IFSOCK, existing.st_uid == geteuid() else {
                throw .failure("\(socketPath) exists and is not this user's agent socket; it was left alone")
            }
            if (try? AgentClient(socketPath: socketPath).send(AgentRequest(op: "status"), timeout: 2)) != nil {
                throw .failure("an agent already serves this vault (\(socketPath))", hint: "`vault lock` ends it")
            }
            unlink(socketPath)
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
                    return channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandlers([
                            IdleStateHandler(readTimeout: .seconds(AgentProtocol.readTimeout)),
                            ByteToMessageHandler(LengthFieldBasedFrameDecoder(lengthFieldBitLength: .fourBytes),
                                                 maximumBufferSize: AgentProtocol.maximumFrame + 4),
                            LengthFieldPrepender(lengthFieldBitLength: .fourBytes),
                            AgentConnectionHandler(server: self),
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
        // The second name, by the vault file's device and inode (AgentProtocol.fileLinkPath).
        // A link left by an agent that was killed is replaced; a failure only costs
        // clients the longer lookup by vault id.
        if let file = unlocked.database.fileIdentity {
            let link = AgentProtocol.fileLinkPath(device: file.dev, inode: file.ino)
            var existing = stat()
            if lstat(link, &existing) == 0, (existing.st_mode & S_IFMT) == S_IFLNK, existing.st_uid == geteuid() { unlink(link) }
            if symlink((socketPath as NSString).lastPathComponent, link) == 0 { fileLink = link }
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
            // A team vault's header is read over the network, which the event loop must
            // not wait for: its checks run on a task.
            if unlocked.database.isPostgres {
                Task {
                    if let reason = reasonToEnd() { return stop(reason: reason) }
                    renewDueTokens()
                }
                return
            }
            if let reason = reasonToEnd() { return stop(reason: reason) }
            renewDueTokens()
        }
        finished.wait()
        if let channel = serverChannel { try? channel.close().wait() }
        removeSocket()
        // Answers still being written (the `lock` that ended it, a token in flight) finish
        // first: shutting the event loop down under them would drop them, and NIO traps on
        // a write to a loop that has shut down.
        let deadline = Date().addingTimeInterval(5)
        while lock.withLock({ inFlight }) > 0, Date() < deadline { usleep(5_000) }
        let closed = DispatchSemaphore(value: 0)
        Task { [httpClients] in
            await httpClients.shutdown()
            closed.signal()
        }
        _ = closed.wait(timeout: .now() + 5)
        try? group.syncShutdownGracefully()
    }

    /// Why the agent must end now, if it must. `checkingHeader: false` leaves out the
    /// comparison of the stored header (a `passwd` or `rekey` by another process), for a
    /// request that makes it inside its own transaction (``cachedTokenInline(_:)``).
    func reasonToEnd(checkingHeader: Bool = true) -> String? {
        let now = Date()
        if now >= deadline { return "its time is up" }
        if now.timeIntervalSince(lock.withLock { lastActivity }) >= idle { return "it was idle" }
        if !unlocked.database.isStillInPlace { return "the vault file was replaced, moved or removed" }
        if unlocked.database.isPostgres {
            // A team vault: the header is read over the network, so at most every 2 s, and
            // a server that cannot be reached for a moment does not end the session (each
            // operation checks the key epoch inside its own transaction anyway).
            let due = lock.withLock { () -> Bool in
                guard now.timeIntervalSince(lastHeaderCheck) >= 2 else { return false }
                lastHeaderCheck = now
                return true
            }
            if due, let stored = try? unlocked.vault.header(), stored != unlocked.header {
                return "the vault's keys or passphrase changed"
            }
        } else if checkingHeader {
            guard unlocked.storedHeaderIsCurrent() else { return "the vault's keys or passphrase changed" }
        }
        var info = stat()
        if let identity = socketIdentity, lstat(socketPath, &info) != 0 || UInt64(info.st_ino) != identity.ino {
            return "its socket was removed"
        }
        return nil
    }

    /// `--keep-fresh`: renews each profile's token before it drops under the margin that
    /// `vault token` needs (the default `--min-ttl` of 300 s plus a minute, or half the
    /// token's lifetime for short-lived tokens), so a `vault token` never waits on the
    /// network. Every renewal is an exchange with its own audit record (`refresh`);
    /// failures are retried with exponential backoff (2 s doubling, at most 5 min, with
    /// jitter) and shown by `vault status`.
    func renewDueTokens() {
        let now = Int64(Date().timeIntervalSince1970)
        let due: [(Int, AgentResponse.FreshEntry)] = lock.withLock {
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

    private func renew(_ index: Int, _ entry: AgentResponse.FreshEntry) async {
        let environment = ProcessInfo.processInfo.environment
        let options = TransportOptions(caBundlePath: environment["VAULT_CA_BUNDLE"].flatMap { $0.isEmpty ? nil : $0 }, environment: environment)
        let exchange = TokenExchange(transport: AsyncHTTPTransport(options: options, pool: httpClients), timeout: .seconds(30))
        let result: Result<DeliveredToken, VaultError>
        do {
            result = .success(try await unlocked.obtainToken(
                TokenOptions(profile: entry.profile, environment: entry.environment, fresh: true, minTTL: 0, action: "refresh"),
                exchange: exchange))
        } catch {
            result = .failure(error)
        }
        let now = Int64(Date().timeIntervalSince1970)
        lock.withLock {
            defer { refreshing.remove(index) }
            switch result {
            case .success(let token):
                let margin = min(360, max(1, token.expiresIn / 2))
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
        if case .failure(.keysChanged) = result { stop(reason: "the vault's keys changed") }
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

    /// Removes the socket file, if it is still the one this agent bound.
    private func removeSocket() {
        var info = stat()
        if let identity = socketIdentity, lstat(socketPath, &info) == 0,
           UInt64(info.st_dev) == identity.dev, UInt64(info.st_ino) == identity.ino {
            unlink(socketPath)
        }
        // The file link, if it still names this agent's socket.
        if let fileLink, AgentProtocol.socketPath(fromFileLink: fileLink) == socketPath { unlink(fileLink) }
    }

    // MARK: - Operations

    func status() -> AgentResponse.Status {
        lock.withLock {
            AgentResponse.Status(pid: getpid(), vault: vaultPath, vaultID: unlocked.vaultID.hexString,
                                 unlockedAt: Int64(startedAt.timeIntervalSince1970), expiresAt: Int64(deadline.timeIntervalSince1970),
                                 idleSeconds: Int64(idle), idleExpiresAt: Int64(lastActivity.addingTimeInterval(idle).timeIntervalSince1970),
                                 requests: requests, keepFresh: fresh)
        }
    }

    func requestStarted() { lock.withLock { inFlight += 1 } }
    func requestAnswered() { lock.withLock { inFlight -= 1 } }

    /// Performs one request that passed ``preflight(_:)``. Everything that reaches a
    /// client goes through here or ``cachedTokenInline(_:)``.
    func perform(_ request: AgentRequest) async -> AgentResponse {
        switch request.op {
        case "status":
            return AgentResponse(ok: true, status: status())
        case "lock":
            // The agent ends once this answer is written (AgentConnectionHandler).
            return AgentResponse(ok: true, status: status())
        case "token":
            return await token(request)
        case "add", "rotate", "remove", "env-add", "env-set", "env-remove", "verify", "audit-verify", "member-add":
            do {
                return try await change(request)
            } catch {
                if case .keysChanged = error { stop(reason: "the vault's keys changed") }
                return .failure(error)
            }
        default:
            return .failure(.usage("unknown agent operation '\(request.op.sanitisedForDisplay(limit: 40))'"))
        }
    }

    /// A token request answered from the cache right where it was read, on the event
    /// loop, without handing it to a task on another thread and back (each hand-off wakes
    /// a thread; a cache hit went from 0.67 to 0.61 ms, measured back to back). Only for a
    /// vault file, only when no other write of this process is under way, and only if the
    /// file's write lock is free at once (``VaultDatabase/writeWithoutWaiting(_:)``), so
    /// the loop never waits on another process. Its transaction also compares the stored
    /// header (the preflight leaves that out for it). Nil whenever it cannot answer this
    /// way — a write would wait, no usable cached token, a changed header — and the
    /// request takes the usual way, which checks everything again.
    /// The caller has checked ``mayAnswerInline(_:)``.
    func cachedTokenInline(_ request: AgentRequest) -> AgentResponse? {
        guard let profile = request.profile else { return nil }
        let action = request.action ?? "token"
        do {
            guard let delivered = try unlocked.deliverCachedTokenWithoutWaiting(
                profile: profile, environment: request.environment, minTTL: request.minTTL ?? 300, action: action) else { return nil }
            return Self.answer(delivered)
        } catch {
            if case .keysChanged = error { stop(reason: "the vault's keys changed") }
            return .failure(error)
        }
    }

    /// A token request that ``cachedTokenInline(_:)`` may answer.
    func mayAnswerInline(_ request: AgentRequest) -> Bool {
        request.op == "token" && request.fresh != true && request.profile != nil && !unlocked.database.isPostgres
            && (request.action == nil || request.action == "token" || request.action == "exec")
    }

    /// The stored-header check that ``preflight(_:checkingHeader:)`` left out: a refusal
    /// (the agent ends) when the vault's keys or passphrase changed, else nil.
    func headerRefusal() -> AgentResponse? {
        guard !unlocked.database.isPostgres, !unlocked.storedHeaderIsCurrent() else { return nil }
        return ending(because: "the vault's keys or passphrase changed")
    }

    /// Ends the agent and answers so: the client goes on without it.
    private func ending(because reason: String) -> AgentResponse {
        stop(reason: reason)
        var response = AgentResponse.failure(.failure("the agent is ending (\(reason))"))
        response.ending = true
        return response
    }

    /// The checks every request passes first: protocol version, the vault it is for, and
    /// whether the agent is ending; counts it. A refusal, or nil to go on.
    func preflight(_ request: AgentRequest, checkingHeader: Bool = true) -> AgentResponse? {
        guard request.version == AgentProtocol.version else {
            return .failure(.usage("agent protocol version \(request.version) is not supported (this agent speaks \(AgentProtocol.version))"))
        }
        let servedStore = unlocked.database.postgresLocation?.identity
        let otherStore = request.store != servedStore && (request.store != nil || servedStore != nil)
        if otherStore || (request.fileDevice.flatMap { device in request.fileInode.map { (device, $0) } }
                            .map { asked in unlocked.database.fileIdentity.map { $0 != asked } ?? true } ?? false) {
            var response = AgentResponse.failure(.failure("this agent serves another file with the same vault id (a copy of the vault?)"))
            response.otherFile = true
            return response
        }
        if let reason = reasonToEnd(checkingHeader: checkingHeader) { return ending(because: reason) }
        lock.withLock {
            requests += 1
            // Asking for the status does not keep the agent alive; using it does.
            if request.op != "status" { lastActivity = Date() }
        }
        return nil
    }

    /// The operations that change the vault or check it (everything but `token`), with
    /// the same library calls the commands make with the passphrase.
    private func change(_ request: AgentRequest) async throws(VaultError) -> AgentResponse {
        func need<T>(_ value: T?, _ what: String) throws(VaultError) -> T {
            guard let value else { throw .usage("the \(request.op) operation needs \(what)") }
            return value
        }
        let secrets = SecretInput(clientSecret: try AgentRequest.decode(request.clientSecret),
                                  password: try AgentRequest.decode(request.password))
        switch request.op {
        case "add":
            guard let grant = GrantType(flagValue: try need(request.grant, "a grant")) else { throw .usage("unknown grant") }
            let profile = try unlocked.addProfile(
                NewProfile(name: try need(request.profile, "a profile"), clientID: try need(request.clientID, "a client id"),
                           username: request.username, grant: grant, scope: request.scope, environment: request.environment ?? "eu"),
                secrets: secrets)
            return AgentResponse(ok: true, message: "added profile '\(profile.name)' (\(profile.grant.flagValue), environment \(profile.environment))")
        case "rotate":
            let name = try need(request.profile, "a profile")
            let created: [SecretVersionInfo]
            if request.verify == true {
                let options = TransportOptions(caBundlePath: request.caBundle, connectTimeout: .milliseconds(request.connectTimeoutMs ?? 10_000),
                                               environment: request.proxyEnvironment ?? [:])
                created = try await unlocked.rotateVerified(
                    profileNamed: name, secrets: secrets, environment: request.environment,
                    exchange: TokenExchange(transport: AsyncHTTPTransport(options: options, pool: httpClients), timeout: .milliseconds(request.timeoutMs ?? 30_000)))
            } else {
                created = try unlocked.rotate(profileNamed: name, secrets: secrets)
            }
            return AgentResponse(ok: true, message: "rotated \(created.map { "\($0.field.rawValue) (now version \($0.version))" }.joined(separator: ", "))"
                                 + (request.verify == true ? " after a successful exchange" : ""))
        case "remove":
            let name = try need(request.profile, "a profile")
            try unlocked.removeProfile(named: name)
            return AgentResponse(ok: true, message: "removed profile '\(name)'")
        case "env-add":
            let name = try need(request.environment, "an environment")
            try unlocked.addEnvironment(name: name, tokenURL: try need(request.tokenURL, "a token URL"), apiBase: request.apiBase)
            return AgentResponse(ok: true, message: "added environment '\(name)'")
        case "env-set":
            let changed = try unlocked.setEnvironment(name: try need(request.environment, "an environment"), tokenURL: request.tokenURL,
                                                      apiBase: request.clearAPIBase == true ? .some(nil) : request.apiBase.map { .some($0) })
            return AgentResponse(ok: true, message: "environment '\(changed.name)' now uses \(changed.tokenURL)"
                                 + (changed.apiBase.map { " and API base \($0)" } ?? " and no API base"))
        case "env-remove":
            let name = try need(request.environment, "an environment")
            try unlocked.removeEnvironment(name: name)
            return AgentResponse(ok: true, message: "removed environment '\(name)'")
        case "verify":
            return AgentResponse(ok: true, verification: try unlocked.verifyEverything())
        case "member-add":
            let name = try need(request.member, "a member name")
            try unlocked.addMember(name: name, recipient: try Recipient(parsing: try need(request.recipient, "a recipient")))
            return AgentResponse(ok: true, message: "added member '\(name)'; it can now open this vault with its identity")

        default: // audit-verify
            let result = try unlocked.verifyAudit()
            return AgentResponse(ok: true, audit: .init(recordsChecked: result.recordsChecked, failureSeq: result.firstFailure?.seq,
                                                        failureReason: result.firstFailure?.reason))
        }
    }

    private func token(_ request: AgentRequest) async -> AgentResponse {
        guard let profile = request.profile else { return .failure(.usage("the token operation needs a profile")) }
        let action = request.action ?? "token"
        guard action == "token" || action == "exec" else { return .failure(.usage("unknown action '\(action.sanitisedForDisplay(limit: 20))'")) }
        let options = TransportOptions(caBundlePath: request.caBundle,
                                       connectTimeout: .milliseconds(request.connectTimeoutMs ?? 10_000),
                                       environment: request.proxyEnvironment ?? [:])
        let exchange = TokenExchange(transport: AsyncHTTPTransport(options: options, pool: httpClients), timeout: .milliseconds(request.timeoutMs ?? 30_000))
        do {
            let delivered = try await unlocked.obtainToken(
                TokenOptions(profile: profile, environment: request.environment, fresh: request.fresh ?? false,
                             minTTL: request.minTTL ?? 300, action: action),
                exchange: exchange)
            return Self.answer(delivered)
        } catch {
            if case .keysChanged = error { stop(reason: "the vault's keys changed") }
            return .failure(error)
        }
    }
}

extension AgentServer {
    /// The answer that hands `delivered` to the client.
    static func answer(_ delivered: DeliveredToken) -> AgentResponse {
        let token = delivered.token.withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
        return AgentResponse(ok: true, token: .init(accessToken: token, tokenType: delivered.tokenType, expiresAt: delivered.expiresAt,
                                                    expiresIn: delivered.expiresIn, environment: delivered.environment.name,
                                                    apiBase: delivered.environment.apiBase, fromCache: delivered.fromCache))
    }
}

/// One client connection: one framed JSON request in, one framed JSON response out.
final class AgentConnectionHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let server: AgentServer
    private var answered = false

    init(server: AgentServer) { self.server = server }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var frame = unwrapInboundIn(data)
        guard !answered else { return }
        answered = true
        let bytes = frame.readBytes(length: frame.readableBytes) ?? []
        let channel = context.channel
        server.requestStarted()
        guard let request = AgentRequest.decodeStrict(bytes) ?? (try? JSONDecoder().decode(AgentRequest.self, from: Data(bytes))) else {
            respond(.failure(.usage("the request is not a valid agent protocol message")), on: channel, thenEnd: false)
            return
        }
        let server = server
        // A cache hit on a vault file is answered right here (its transaction also checks
        // the stored header, which its preflight then leaves out); anything else goes to a
        // task, which never makes the event loop wait (a team vault's checks go over the
        // network).
        let inline = server.mayAnswerInline(request)
        if inline, let answer = server.preflight(request, checkingHeader: false) ?? server.cachedTokenInline(request) {
            respond(answer, on: channel, thenEnd: false, bare: request.reply == "bare")
            return
        }
        Task {
            let response: AgentResponse
            if inline {
                // Preflighted above; the header check it left out.
                if let refusal = server.headerRefusal() {
                    response = refusal
                } else {
                    response = await server.perform(request)
                }
            } else if let refusal = server.preflight(request) {
                response = refusal
            } else {
                response = await server.perform(request)
            }
            respond(response, on: channel, thenEnd: request.op == "lock" && response.ok, bare: request.reply == "bare")
        }
    }

    /// Writes the answer and closes the connection; after `vault lock`'s answer is
    /// written, the agent ends. With `bare` (the request's `"reply":"bare"`), a delivered
    /// token is answered as its bytes alone (a b64token never starts with `{`, so the client
    /// tells it from JSON by the first byte); anything else stays JSON.
    private func respond(_ response: AgentResponse, on channel: any Channel, thenEnd: Bool, bare: Bool = false) {
        if bare, response.ok, response.error == nil, response.ending != true, response.otherFile != true,
           let token = response.token, TokenExchange.isValidToken(token.accessToken) {
            write(Array(token.accessToken.utf8), on: channel, thenEnd: thenEnd)
            return
        }
        let data = response.everydayJSONBytes() ?? (try? JSONEncoder().encode(response)).map { [UInt8]($0) }
            ?? Array(#"{"version":1,"ok":false}"#.utf8)
        write(data, on: channel, thenEnd: thenEnd)
    }

    private func write(_ data: [UInt8], on channel: any Channel, thenEnd: Bool) {
        var buffer = channel.allocator.buffer(capacity: data.count)
        buffer.writeBytes(data)
        let server = server
        channel.writeAndFlush(buffer).whenComplete { _ in
            channel.close(promise: nil)
            server.requestAnswered()
            if thenEnd { server.stop(reason: "vault lock") }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)  // a slow or stalled writer
        } else if let event = event as? ChannelEvent, event == .inputClosed, !answered {
            context.close(promise: nil)  // the client stopped before a whole request
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // Oversized, malformed or broken frames: close this connection, keep serving.
        context.close(promise: nil)
    }
}
