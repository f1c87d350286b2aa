import Foundation
import NIOCore
#if canImport(Glibc)
import Glibc
#endif

/// Talks to the agent of one vault over its Unix socket: one request, one response.
///
/// A client makes exactly one round trip, so it does it with blocking system calls
/// bounded by `poll` deadlines instead of starting an event loop (a thread and an epoll
/// set per command; measured in BENCHMARKS.md). The framing is NIOCore's length-prefix
/// support (`writeLengthPrefixed` / `readLengthPrefixedSlice`, 4-byte big-endian), the
/// same format the agent's `LengthFieldBasedFrameDecoder` reads.
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

        // The ways an answer fails, in the words of every client (this one and the
        // constructor's, `FastPath.earlyToken`).
        public static let closed = Failure.broken("the agent closed the connection")
        public static let invalidAnswer = Failure.broken("the agent closed the connection without a valid answer")
        public static let frameTooLarge = Failure.broken("the agent announced a frame larger than \(AgentProtocol.maximumFrame) bytes")
        public static func timedOut(_ timeout: TimeInterval) -> Failure {
            .broken("the agent did not answer within \(Int(timeout.rounded(.up))) s")
        }
    }

    /// Whether a socket file exists for this vault.
    public var socketExists: Bool {
        var info = stat()
        return lstat(socketPath, &info) == 0
    }

    /// Sends one request and waits for the response.
    public func send(_ request: AgentRequest, timeout: TimeInterval) throws(Failure) -> AgentResponse {
        try Self.decode(roundTrip(request.jsonBytes(), timeout: timeout))
    }

    /// A JSON answer's bytes as a response.
    public static func decode(_ answer: [UInt8]) throws(Failure) -> AgentResponse {
        // Tokens, errors and messages without JSONDecoder (ResponseDecoding.swift); any
        // other answer, or anything the strict reader does not take, through it.
        if let everyday = AgentResponse.decodeEveryday(answer) { return everyday }
        do {
            return try JSONDecoder().decode(AgentResponse.self, from: Data(answer))
        } catch {
            throw .invalidAnswer
        }
    }

    /// Connects, writes one frame, reads one frame.
    func roundTrip(_ body: [UInt8], timeout: TimeInterval) throws(Failure) -> [UInt8] {
        var info = stat()
        guard lstat(socketPath, &info) == 0 else { throw .noAgent }
        guard (info.st_mode & S_IFMT) == S_IFSOCK, info.st_uid == geteuid() else {
            throw .broken("\(socketPath) is not this user's agent socket")
        }
        guard body.count <= AgentProtocol.maximumFrame else { throw .broken("the request is larger than a frame") }
        let deadline = Self.now() + max(0.001, timeout)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .broken("cannot create a socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard connect(fd, to: socketPath) else {
            let code = errno
            // Nobody listens: the agent died without removing its socket.
            if code == ECONNREFUSED {
                var again = stat()
                if lstat(socketPath, &again) == 0, again.st_ino == info.st_ino { unlink(socketPath) }
                throw .stale
            }
            if code == ENOENT { throw .noAgent }
            throw .broken("cannot connect to \(socketPath): \(String(cString: strerror(code)))")
        }
        var frame = ByteBuffer()
        frame.reserveCapacity(body.count + 4)
        do {
            try frame.writeLengthPrefixed(as: UInt32.self) { buffer in buffer.writeBytes(body) }
        } catch {
            throw .broken("cannot frame the request")
        }
        try frame.withUnsafeReadableBytes { (bytes) throws(Failure) in
            try Self.writeAll(fd, bytes, deadline: deadline, timeout: timeout)
        }
        var received = ByteBuffer()
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            if var answer = received.readLengthPrefixedSlice(as: UInt32.self) {
                return answer.readBytes(length: answer.readableBytes) ?? []
            }
            if let announced = received.getInteger(at: received.readerIndex, as: UInt32.self),
               announced > UInt32(AgentProtocol.maximumFrame) {
                throw .frameTooLarge
            }
            let count = try Self.readSome(fd, into: &chunk, deadline: deadline, timeout: timeout)
            guard count > 0 else { throw .closed }
            received.writeBytes(chunk[0..<count])
        }
    }

    private func connect(_ fd: Int32, to path: String) -> Bool {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            errno = ENAMETOOLONG
            return false
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        return result == 0
    }

    private static func now() -> TimeInterval {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return TimeInterval(spec.tv_sec) + TimeInterval(spec.tv_nsec) / 1e9
    }

    /// Waits until `fd` is ready for `events` or the deadline passes.
    private static func wait(_ fd: Int32, events: Int16, deadline: TimeInterval, timeout: TimeInterval) throws(Failure) {
        while true {
            let left = deadline - now()
            guard left > 0 else { throw .timedOut(timeout) }
            var entry = pollfd(fd: fd, events: events, revents: 0)
            let ready = poll(&entry, 1, Int32(min(left * 1000, Double(Int32.max)).rounded(.up)))
            if ready > 0 { return }
            if ready < 0, errno != EINTR { throw .broken("poll failed: \(String(cString: strerror(errno)))") }
        }
    }

    private static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, deadline: TimeInterval, timeout: TimeInterval) throws(Failure) {
        var offset = 0
        while offset < bytes.count {
            try wait(fd, events: Int16(POLLOUT), deadline: deadline, timeout: timeout)
            let written = Glibc.send(fd, bytes.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT))
            if written < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                throw .closed
            }
            offset += written
        }
    }

    private static func readSome(_ fd: Int32, into chunk: inout [UInt8], deadline: TimeInterval, timeout: TimeInterval) throws(Failure) -> Int {
        while true {
            try wait(fd, events: Int16(POLLIN), deadline: deadline, timeout: timeout)
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if count >= 0 { return count }
            if errno == EINTR || errno == EAGAIN { continue }
            throw .closed
        }
    }
}
