import Foundation
import NIOCore
import NIOExtras
import NIOPosix
#if canImport(Glibc)
import Glibc
#endif

/// Talks to the agent of one vault over its Unix socket (same framing as the server:
/// NIOExtras' length-field codec).
public struct AgentClient: Sendable {
    public let socketPath: String

    public init(socketPath: String) { self.socketPath = socketPath }

    public enum Failure: Error, Sendable {
        /// No socket file: no agent runs for this vault.
        case noAgent
        /// A socket file nobody answers on (the agent was killed): it was removed.
        case stale
        /// The agent did not answer in time or broke the protocol.
        case broken(String)
    }

    /// Whether a socket file exists for this vault.
    public var socketExists: Bool {
        var info = stat()
        return lstat(socketPath, &info) == 0
    }

    /// Sends one request and waits for the response.
    public func send(_ request: AgentRequest, timeout: TimeInterval) throws(Failure) -> AgentResponse {
        var info = stat()
        guard lstat(socketPath, &info) == 0 else { throw .noAgent }
        guard (info.st_mode & S_IFMT) == S_IFSOCK, info.st_uid == geteuid() else {
            throw .broken("\(socketPath) is not this user's agent socket")
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let promise = group.next().makePromise(of: ByteBuffer.self)
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(.seconds(2))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers([
                        ByteToMessageHandler(LengthFieldBasedFrameDecoder(lengthFieldBitLength: .fourBytes),
                                             maximumBufferSize: AgentProtocol.maximumFrame + 4),
                        LengthFieldPrepender(lengthFieldBitLength: .fourBytes),
                        ResponseCollector(promise: promise),
                    ])
                }
            }
        let channel: any Channel
        do {
            channel = try bootstrap.connect(unixDomainSocketPath: socketPath).wait()
        } catch {
            // Nobody listens: the agent died without removing its socket.
            var again = stat()
            if lstat(socketPath, &again) == 0, again.st_ino == info.st_ino { unlink(socketPath) }
            promise.fail(error)
            throw .stale
        }
        defer { channel.close(promise: nil) }
        let body: Data
        do { body = try JSONEncoder().encode(request) } catch { throw .broken("cannot encode the request") }
        var buffer = channel.allocator.buffer(capacity: body.count)
        buffer.writeBytes(body)
        channel.writeAndFlush(buffer, promise: nil)
        let scheduled = group.next().scheduleTask(in: .milliseconds(Int64(timeout * 1000))) {
            promise.fail(Failure.broken("the agent did not answer within \(Int(timeout)) s"))
        }
        defer { scheduled.cancel() }
        do {
            var frame = try promise.futureResult.wait()
            let bytes = frame.readBytes(length: frame.readableBytes) ?? []
            return try JSONDecoder().decode(AgentResponse.self, from: Data(bytes))
        } catch let failure as Failure {
            throw failure
        } catch {
            throw .broken("the agent closed the connection without a valid answer")
        }
    }
}

/// Collects the one response frame.
private final class ResponseCollector: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    let promise: EventLoopPromise<ByteBuffer>
    init(promise: EventLoopPromise<ByteBuffer>) { self.promise = promise }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        promise.succeed(unwrapInboundIn(data))
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(AgentClient.Failure.broken("the agent closed the connection"))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(error)
        context.close(promise: nil)
    }
}
