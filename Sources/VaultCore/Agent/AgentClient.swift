import CAgent
import CSodium
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Talks to the agent that serves one vault: one request, one answer, through CAgent's
/// client (the same code `vault`'s client before `main` runs), which checks the socket's
/// directory and the peer's uid before it sends anything.
public struct AgentClient: Sendable {
    public let socketPath: String

    public init(socketPath: String) { self.socketPath = socketPath }

    /// The agent of `vault` (a path or a URL): for a file, the socket named by its device
    /// and inode; for a team vault, by its location identity (parsed, without connecting to
    /// the server). Nil when the file does not exist or the URL is not valid.
    public static func forVault(_ vault: String) -> AgentClient? {
        if PostgresLocation.isURL(vault) {
            guard let location = try? PostgresLocation.parse(vault, readPasswordFile: false) else { return nil }
            return AgentProtocol.socketPath(store: location.identity).map(AgentClient.init)
        }
        var info = stat()
        guard stat(vault, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { return nil }
        return AgentProtocol.socketPath(device: UInt64(info.st_dev), inode: UInt64(info.st_ino)).map(AgentClient.init)
    }

    /// How a call ended.
    public enum Outcome: Sendable {
        /// The agent answered.
        case answered(AgentAnswer)
        /// No agent serves the vault (no socket). Nothing was sent.
        case absent
        /// A socket nobody answered on (its agent was killed): it was removed. Nothing was sent.
        case stale
        /// The socket's directory or the process behind it is not this user's: refused,
        /// nothing was sent.
        case untrusted(String)
        /// The call failed (no answer in time, a closed connection, a broken answer).
        case broken(String)
    }

    /// Whether a socket file exists for this vault.
    public var socketExists: Bool {
        var info = stat()
        return lstat(socketPath, &info) == 0
    }

    /// Sends `operation` (a token request with the network settings of this process and
    /// `cacert`) and waits for the answer: a token request as long as its exchange may take
    /// plus a margin, anything else a few seconds.
    public func call(_ operation: AgentOperationCall, cacert: String? = nil) -> Outcome {
        var request = vault_agent_request()
        request.min_ttl = -1
        request.timeout_ms = -1
        request.connect_timeout_ms = -1
        var wait = Int64(VAULT_AGENT_OTHER_WAIT_SECONDS) * 1000
        let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: 16 * 1024)
        defer { buffer.deallocate() }
        let length: Int
        switch operation {
        case .status: request.op = Int32(VAULT_AGENT_OP_STATUS)
        case .lock: request.op = Int32(VAULT_AGENT_OP_LOCK)
        case .verify: request.op = Int32(VAULT_AGENT_OP_VERIFY)
        case .auditVerify: request.op = Int32(VAULT_AGENT_OP_AUDIT_VERIFY)
        case .proxyRequests: break
        case .token(let token):
            request.op = Int32(VAULT_AGENT_OP_TOKEN)
            request.print = token.print ? 1 : 0
            switch token.action {
            case .token, .refresh: request.action = Int32(VAULT_AGENT_ACTION_TOKEN)
            case .exec: request.action = Int32(VAULT_AGENT_ACTION_EXEC)
            case .serve: request.action = Int32(VAULT_AGENT_ACTION_SERVE)
            case .proxy: request.action = Int32(VAULT_AGENT_ACTION_PROXY)
            }
            request.fresh = token.fresh ? 1 : 0
            request.min_ttl = token.minTTL ?? -1
            request.timeout_ms = token.timeoutMs ?? -1
            request.connect_timeout_ms = token.connectTimeoutMs ?? -1
            wait = (token.timeoutMs ?? Int64(VAULT_TOKEN_TIMEOUT_SECONDS) * 1000) + Int64(VAULT_AGENT_ANSWER_MARGIN_SECONDS) * 1000
        }
        if case .proxyRequests(let profile, let environment, let summary) = operation {
            request.op = Int32(VAULT_AGENT_OP_PROXY_REQUESTS)
            length = profile.withCString { profile in
                withOptionalCString(environment) { environment in
                    summary.detail.withCString { summary in
                        request.profile = profile
                        request.environment = environment
                        request.summary = summary
                        return vault_agent_write_request(&request, environ, buffer, 16 * 1024)
                    }
                }
            }
        } else if case .token(let token) = operation {
            length = token.profile.withCString { profile in
                withOptionalCString(token.environment) { environment in
                    withOptionalCString(token.format?.rawValue) { format in
                        withOptionalCString(cacert) { bundle in
                            withOptionalCString(token.caller) { caller in
                                request.profile = profile
                                request.environment = environment
                                request.format = format
                                request.ca_bundle = bundle
                                request.caller = caller
                                return vault_agent_write_request(&request, environ, buffer, 16 * 1024)
                            }
                        }
                    }
                }
            }
        } else {
            length = vault_agent_write_request(&request, environ, buffer, 16 * 1024)
        }
        guard length >= 0 else { return .broken("the request does not fit in a frame, or a value is not valid UTF-8") }
        var answer = [UInt8](repeating: 0, count: AgentProtocol.maximumFrame)
        var received = 0
        var detail: Int64 = 0
        let result = answer.withUnsafeMutableBytes { raw in
            vault_agent_call(socketPath, buffer, length, wait, raw.baseAddress!.assumingMemoryBound(to: UInt8.self), raw.count,
                             &received, &detail)
        }
        defer { answer.withUnsafeMutableBytes { _ = sodium_memzero($0.baseAddress, $0.count) } }
        return answer.withUnsafeBufferPointer { raw in
            Self.outcome(ofCall: result, answer: UnsafeBufferPointer(rebasing: raw.prefix(received)), detail: detail, socketPath: socketPath)
        }
    }

    /// ``call(_:cacert:)`` for async code: the call blocks (a socket round trip, up to an
    /// exchange's deadline), so it runs off the cooperative threads.
    public func callDetached(_ operation: AgentOperationCall, cacert: String? = nil) async -> Outcome {
        await withCheckedContinuation { (continuation: CheckedContinuation<Outcome, Never>) in
            DispatchQueue.global().async { continuation.resume(returning: call(operation, cacert: cacert)) }
        }
    }

    /// How a call that ended with `result` (a VAULT_AGENT_ code of vault_agent_call) went,
    /// for this client and for the outcome `vault`'s client before `main` hands over.
    public static func outcome(ofCall result: Int32, answer: UnsafeBufferPointer<UInt8>, detail: Int64, socketPath: String) -> Outcome {
        switch Int(result) {
        case Int(VAULT_AGENT_ANSWERED):
            guard let read = AgentAnswer.read(Array(answer)) else {
                return .broken("the agent's answer is not one this version reads (an agent of another version of vault?)")
            }
            return .answered(read)
        case Int(VAULT_AGENT_ABSENT): return .absent
        case Int(VAULT_AGENT_STALE): return .stale
        case Int(VAULT_AGENT_UNTRUSTED_DIRECTORY):
            let directory = (socketPath as NSString).deletingLastPathComponent
            return .untrusted(AgentProtocol.directoryProblem(directory, code: Int32(truncatingIfNeeded: detail))?.message
                              ?? "refusing the agent directory \(directory)")
        case Int(VAULT_AGENT_UNTRUSTED_PEER):
            return .untrusted("refusing \(socketPath): it is not this user's socket, or the process behind it runs as uid \(detail), not as you (uid \(geteuid()))")
        case Int(VAULT_AGENT_UNREACHABLE):
            return .broken("cannot connect to \(socketPath): \(String(cString: strerror(Int32(truncatingIfNeeded: detail))))")
        case Int(VAULT_AGENT_TIMED_OUT): return .broken("the agent did not answer in time")
        case Int(VAULT_AGENT_TOO_LARGE): return .broken("the agent announced a frame larger than \(AgentProtocol.maximumFrame) bytes")
        default: return .broken("the agent closed the connection without a whole answer")
        }
    }
}

/// An operation as a client asks for it (the agent reads it back as ``AgentOperation``;
/// the network settings are this process's, added by the request writer).
public enum AgentOperationCall: Sendable {
    case status, lock, verify, auditVerify
    case token(AgentTokenRequest)
    case proxyRequests(profile: String, environment: String?, summary: RequestLog.Summary)
}

private func withOptionalCString<R>(_ text: String?, _ body: (UnsafePointer<CChar>?) -> R) -> R {
    guard let text else { return body(nil) }
    return text.withCString { body($0) }
}
