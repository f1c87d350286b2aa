import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS

/// `sslmode=require`: TLS whose certificate is not verified, so the server may be anyone in
/// the middle. Such a server must not be handed the database password: like libpq's
/// `require_auth=scram-sha-256`, the connection is refused when the server asks for the
/// password in clear text or as an MD5 hash (which is as good as the password for
/// logging in); SCRAM proves the password without revealing it.
///
/// PostgresNIO (1.33) has no setting for this, and answers a cleartext request by sending
/// the password. So for this mode the vault makes the TCP connection and the TLS session
/// itself and hands PostgresNIO the established channel, with ``AuthenticationMethodGuard``
/// between the TLS handler and PostgresNIO's for the whole connection: it reads only each
/// server message's type byte, length and, for an authentication request, its code; it
/// never changes a byte. The same holds for `sslmode=verify-ca`, whose certificate may be
/// any that chains to a trusted root, for any name.
enum PostgresUnverifiedTLS {
    /// What went wrong, for the connection's error message.
    final class Outcome: @unchecked Sendable {
        private let lock = NIOLock()
        private var reason: String?
        var refusal: String? { lock.withLock { reason } }
        func refuse(_ why: String) { lock.withLock { if reason == nil { reason = why } } }
    }

    /// A TCP connection to `host:port` with TLS (any certificate, as `context` says) and the
    /// guard in place, ready for PostgresNIO's startup message.
    static func connect(host: String, port: Int, context: NIOSSLContext, timeout: TimeAmount,
                        on loop: any EventLoop, outcome: Outcome) throws -> any Channel {
        let channel = try ClientBootstrap(group: loop).connectTimeout(timeout).connect(host: host, port: port).wait()
        do {
            let ready = loop.makePromise(of: Void.self)
            try loop.submit {
                try channel.pipeline.syncOperations.addHandler(
                    SSLRequestHandler(context: context, serverHostname: nil, ready: ready, outcome: outcome))
            }.wait()
            try ready.futureResult.wait()
            return channel
        } catch {
            try? channel.close().wait()
            throw error
        }
    }

    /// Sends the SSLRequest (8 bytes: length 8, code 80877103) and waits for the one-byte
    /// answer; on `S`, puts the TLS handler and the guard in its place.
    final class SSLRequestHandler: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = ByteBuffer
        let context: NIOSSLContext
        let serverHostname: String?
        let ready: EventLoopPromise<Void>
        let outcome: Outcome
        private var answered = false

        init(context: NIOSSLContext, serverHostname: String?, ready: EventLoopPromise<Void>, outcome: Outcome) {
            self.context = context
            self.serverHostname = serverHostname
            self.ready = ready
            self.outcome = outcome
        }

        func handlerAdded(context: ChannelHandlerContext) {
            var request = context.channel.allocator.buffer(capacity: 8)
            request.writeInteger(Int32(8))
            request.writeInteger(Int32(80_877_103))
            context.writeAndFlush(NIOAny(request), promise: nil)
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard !answered else { return }
            answered = true
            var buffer = unwrapInboundIn(data)
            let answer = buffer.readInteger(as: UInt8.self)
            guard answer == UInt8(ascii: "S") else {
                outcome.refuse(answer == UInt8(ascii: "N") ? "the server does not offer TLS" : "the server's answer to the TLS request is not one")
                ready.fail(ChannelError.ioOnClosedChannel)
                context.close(promise: nil)
                return
            }
            // Bytes after the `S`, before the TLS handshake, would be read as if they came
            // from inside the TLS session (CVE-2021-23222 in libpq): refused.
            guard buffer.readableBytes == 0 else {
                outcome.refuse("the server sent data before the TLS handshake")
                ready.fail(ChannelError.ioOnClosedChannel)
                context.close(promise: nil)
                return
            }
            do {
                let tls = try NIOSSLClientHandler(context: self.context, serverHostname: serverHostname)
                let pipeline = context.pipeline.syncOperations
                try pipeline.addHandler(tls, position: .after(self))
                try pipeline.addHandler(AuthenticationMethodGuard(outcome: outcome, handshake: ready), position: .after(tls))
                context.pipeline.syncOperations.removeHandler(self, promise: nil)
            } catch {
                ready.fail(error)
                context.close(promise: nil)
            }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            if !answered { answered = true; ready.fail(error) }
            context.close(promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            if !answered { answered = true; ready.fail(ChannelError.ioOnClosedChannel) }
            context.fireChannelInactive()
        }
    }

    /// Watches every message the server sends on the connection: nothing may arrive before
    /// the client's startup message has gone out (bytes the server sends earlier, with its
    /// last handshake record for example, would be counted here but dropped before
    /// PostgresNIO is attached, and the framing of the two would part); an authentication
    /// request (`R`) for a cleartext password (code 3) or an MD5 hash (code 5), at any time,
    /// closes the connection before PostgresNIO sees it. Bytes are held back only while a
    /// message's header is incomplete, then passed on unchanged.
    final class AuthenticationMethodGuard: ChannelDuplexHandler, RemovableChannelHandler {
        typealias InboundIn = ByteBuffer
        typealias InboundOut = ByteBuffer
        typealias OutboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let outcome: Outcome
        /// Completed when the TLS handshake is: the channel is then PostgresNIO's.
        private var handshake: EventLoopPromise<Void>?
        /// Whether the client has written anything (its startup message comes first).
        private var startupSent = false
        private var held: ByteBuffer?
        /// Body bytes of the current message still to pass.
        private var remaining = 0
        private var refused = false

        init(outcome: Outcome, handshake: EventLoopPromise<Void>) {
            self.outcome = outcome
            self.handshake = handshake
        }

        /// The handshake's end is this code's to wait for: PostgresNIO, given a channel
        /// whose TLS it did not set up, must not see it (it would take it for its own).
        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case TLSUserEvent.handshakeCompleted = event {
                handshake?.succeed(())
                handshake = nil
                return
            }
            context.fireUserInboundEventTriggered(event)
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            if let handshake {
                self.handshake = nil
                handshake.fail(error)
                context.close(promise: nil)
                return
            }
            context.fireErrorCaught(error)
        }

        func channelInactive(context: ChannelHandlerContext) {
            if let handshake {
                self.handshake = nil
                handshake.fail(ChannelError.ioOnClosedChannel)
            }
            context.fireChannelInactive()
        }

        func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
            startupSent = true
            context.write(data, promise: promise)
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard !refused else { return }
            guard startupSent else { return refuse(context, "the server sent data before the connection's startup message") }
            var incoming = unwrapInboundIn(data)
            if held == nil { held = incoming } else { held!.writeBuffer(&incoming) }
            guard var buffer = held else { return }
            var checked = 0
            let end = buffer.readableBytes
            let base = buffer.readerIndex
            while checked < end {
                if remaining > 0 {
                    let skip = min(remaining, end - checked)
                    checked += skip
                    remaining -= skip
                    continue
                }
                guard end - checked >= 5, let type = buffer.getInteger(at: base + checked, as: UInt8.self),
                      let length = buffer.getInteger(at: base + checked + 1, as: Int32.self) else { break }
                guard length >= 4 else { return refuse(context, "the server sent a malformed message") }
                if type == UInt8(ascii: "R") {
                    guard end - checked >= 9, let code = buffer.getInteger(at: base + checked + 5, as: Int32.self) else { break }
                    if code == 3 { return refuse(context, "the server asked for the password in clear text") }
                    if code == 5 { return refuse(context, "the server asked for an MD5 password hash") }
                }
                checked += 5
                remaining = Int(length) - 4
            }
            let passed = buffer.readSlice(length: checked)!
            held = buffer.readableBytes > 0 ? buffer : nil
            if passed.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(passed)) }
        }

        private func refuse(_ context: ChannelHandlerContext, _ why: String) {
            refused = true
            held = nil
            outcome.refuse(why)
            context.fireErrorCaught(ChannelError.ioOnClosedChannel)
            context.close(promise: nil)
        }
    }
}
