import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A stand-in agent on a Unix socket: reads each request frame, records it, answers with
/// `answer` verbatim (a whole frame, or any bytes at all) and closes. Stopped by `stop()`.
public final class StandInAgent: @unchecked Sendable {
    private let listener: Int32
    private let path: String
    private let answer: [UInt8]
    private let lock = NSLock()
    private var received: [[UInt8]] = []
    private let done = DispatchSemaphore(value: 0)

    /// The request frames received so far (their length prefixes removed).
    public var requests: [[UInt8]] { lock.withLock { received } }

    /// A frame: a 4-byte big-endian length, then `payload`.
    public static func frame(_ payload: [UInt8]) -> [UInt8] {
        let count = UInt32(payload.count)
        return [UInt8(count >> 24), UInt8(count >> 16 & 0xFF), UInt8(count >> 8 & 0xFF), UInt8(count & 0xFF)] + payload
    }

    /// An error answer of protocol version `version` with `exitCode` and `message`.
    public static func failure(exitCode: Int, message: String, ending: Bool = false, version: Int = 2) -> [UInt8] {
        frame(Array("J{\"version\":\(version),\"ok\":false,\"error\":{\"exit_code\":\(exitCode),\"message\":\"\(message)\"\(ending ? ",\"ending\":true" : "")}}".utf8))
    }

    public init(path: String, answer: [UInt8]) throws {
        self.path = path
        self.answer = answer
        unlink(path)
        listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard listener >= 0, bound == 0, listen(listener, 16) == 0 else { throw HarnessError.spawnFailed("stand-in agent at \(path)") }
        chmod(path, 0o600)
        let thread = Thread { [self] in serve() }
        thread.start()
    }

    private func serve() {
        defer { done.signal() }
        while true {
            let connection = accept(listener, nil, nil)
            if connection < 0 {
                if errno == EINTR { continue }
                return  // stop() shut the listener down
            }
            var timeout = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(connection, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            var bytes: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 4096)
            while true {
                if bytes.count >= 4 {
                    let length = Int(bytes[0]) << 24 | Int(bytes[1]) << 16 | Int(bytes[2]) << 8 | Int(bytes[3])
                    if bytes.count >= length + 4 {
                        lock.withLock { received.append(Array(bytes[4..<(4 + length)])) }
                        break
                    }
                }
                let count = chunk.withUnsafeMutableBytes { recv(connection, $0.baseAddress, $0.count, 0) }
                if count <= 0 { break }
                bytes += chunk[0..<count]
            }
            _ = answer.withUnsafeBytes { send(connection, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            close(connection)
        }
    }

    public func stop() {
        shutdown(listener, Int32(SHUT_RDWR))
        done.wait()
        close(listener)
        unlink(path)
    }
}
