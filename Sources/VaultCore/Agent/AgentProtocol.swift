import CAgent
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The agent protocol (PROTOCOL.md). A frame is a 4-byte big-endian length and that many
/// bytes; one request and one answer per connection. Requests are written by one function
/// (CAgent's `vault_agent_write_request`, for every client) and read by one
/// (``AgentRequest/read(_:)``, in the agent); answers are written by the agent
/// (``AgentAnswer/frame()``) and read by ``AgentAnswer/read(_:)``. Where a socket is and whom
/// a client trusts are CAgent's rules too. No operation returns key material or a stored
/// secret, and none changes the vault: the agent hands out tokens, checks, and reports.
public enum AgentProtocol {
    public static let version = Int(VAULT_AGENT_PROTOCOL_VERSION)
    public static let maximumFrame = Int(VAULT_AGENT_MAXIMUM_FRAME)
    /// A request must arrive whole within this many seconds of the connection's accept.
    public static let requestSeconds = Int64(VAULT_AGENT_REQUEST_SECONDS)

    /// The agent directory (`$XDG_RUNTIME_DIR/gbg-vault`, else `/tmp/gbg-vault-<uid>`).
    public static func directory() -> String {
        path { vault_agent_directory(environ, $0, $1) } ?? "/tmp/gbg-vault-\(geteuid())"
    }

    /// The socket of the agent of the vault file with this device and inode.
    public static func socketPath(device: UInt64, inode: UInt64) -> String? {
        path { vault_agent_socket_for_file(device, inode, environ, $0, $1) }
    }

    /// The socket of the agent of a team vault, by its location identity.
    public static func socketPath(store identity: String) -> String? {
        path { vault_agent_socket_for_store(identity, environ, $0, $1) }
    }

    /// The link by which a client holding only the URL `url` finds a team vault's agent.
    public static func urlLink(_ url: String) -> String? {
        path { vault_agent_url_link(url, environ, $0, $1) }
    }

    /// The vault `vault` uses without `--vault`.
    public static func defaultVaultPath() -> String? {
        path { vault_default_vault_path(environ, $0, $1) }
    }

    /// The config file's path (``VaultConfig``).
    public static func configPath() -> String? {
        path { vault_config_path(environ, $0, $1) }
    }

    /// Where the default vault and identity live.
    public static func dataDirectory() -> String? {
        path { vault_data_directory(environ, $0, $1) }
    }

    private static func path(_ body: (UnsafeMutablePointer<CChar>, Int) -> Int32) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 128)
        guard body(&buffer, buffer.count) == 1 else { return nil }
        return String(cString: buffer)
    }

    /// Makes the agent directory (0700) if it is missing, then checks it as every client
    /// does: a real directory, this user's, no group or other access.
    public static func preparePrivateDirectory(_ path: String) throws(VaultError) {
        if let problem = directoryProblem(path, code: vault_agent_check_directory(path, 1)) { throw problem }
    }

    /// Why the directory `path` is refused, for a check's result `code` (nil: it is fine).
    static func directoryProblem(_ path: String, code: Int32) -> VaultError? {
        var info = stat()
        let found = lstat(path, &info) == 0
        switch Int(code) {
        case Int(VAULT_DIRECTORY_OK): return nil
        case Int(VAULT_DIRECTORY_MISSING): return .failure("the agent directory \(path) is missing")
        case Int(VAULT_DIRECTORY_CANNOT_CREATE): return .failure("cannot create the agent directory \(path): \(String(cString: strerror(errno)))")
        case Int(VAULT_DIRECTORY_NOT_OWNED):
            return .failure("refusing the agent directory \(path): it belongs to uid \(found ? info.st_uid : 0), not to you (uid \(geteuid()))")
        case Int(VAULT_DIRECTORY_OPEN_MODE):
            return .failure("refusing the agent directory \(path): its mode is \(String(format: "%04o", found ? info.st_mode & 0o7777 : 0)), not 0700",
                            hint: "chmod 700 \(path)")
        default:
            return .failure("refusing the agent directory \(path): it is not a directory (a symbolic link?)")
        }
    }
}

/// How a token request wants its answer, and what it asks for.
public struct AgentTokenRequest: Sendable, Equatable {
    public var profile: String
    /// Overrides the profile's environment.
    public var environment: String?
    /// The output to print (`vault token`), in `format` (nil: ``TokenFormat/standard``); or,
    /// when false, the token as a JSON object (`vault exec`).
    public var print: Bool
    public var format: TokenFormat?
    public var action: TokenAction
    public var fresh: Bool
    /// nil: ``TokenOptions/defaultMinTTL``.
    public var minTTL: Int64?
    /// The exchange's overall deadline and connect timeout, in milliseconds (nil: the defaults).
    public var timeoutMs: Int64?
    public var connectTimeoutMs: Int64?
    /// Who asked `vault serve` or `vault proxy` (``TokenOptions/caller``).
    public var caller: String?

    public init(profile: String, environment: String? = nil, print: Bool, format: TokenFormat? = nil, action: TokenAction = .token,
                fresh: Bool = false, minTTL: Int64? = nil, timeoutMs: Int64? = nil, connectTimeoutMs: Int64? = nil, caller: String? = nil) {
        self.caller = caller
        self.profile = profile
        self.environment = environment
        self.print = print
        self.format = format
        self.action = action
        self.fresh = fresh
        self.minTTL = minTTL
        self.timeoutMs = timeoutMs
        self.connectTimeoutMs = connectTimeoutMs
    }
}

/// The network settings a token request carries: the CA bundle (absolute) and the proxy
/// variables that are set. The agent compares them with its own, fixed at `vault unlock`,
/// and refuses a request whose settings differ; it never uses the caller's.
public struct AgentNetwork: Codable, Sendable, Equatable {
    public var caBundle: String?
    public var proxy: [String: String]

    enum CodingKeys: String, CodingKey { case caBundle = "ca_bundle", proxy }

    package init(caBundle: String?, proxy: [String: String]) {
        self.caBundle = caBundle
        self.proxy = proxy
    }

    /// This process's settings, with `cacert` (else `VAULT_CA_BUNDLE`), as a client would
    /// send them (CAgent's rules: which variables, empty ones left out, the bundle resolved).
    public static func current(cacert: String?) throws(VaultError) -> AgentNetwork {
        var buffer = [CChar](repeating: 0, count: 16 * 1024)
        let length = vault_agent_write_network(cacert, environ, &buffer, buffer.count)
        guard length >= 0 else { throw .usage("the proxy or CA bundle settings are too long or not valid UTF-8") }
        let bytes = buffer.prefix(length).map { UInt8(bitPattern: $0) }
        do {
            return try JSONDecoder().decode(AgentNetwork.self, from: Data(bytes))
        } catch {
            throw .failure("internal error: the network settings could not be read back")
        }
    }

    /// The settings as they may be shown (`vault status`): a proxy's user and password, if
    /// a value carries them (`http://user:pass@proxy:3128`), replaced by `***`.
    public var redacted: AgentNetwork {
        AgentNetwork(caBundle: caBundle, proxy: proxy.mapValues(Self.withoutCredentials))
    }

    static func withoutCredentials(_ value: String) -> String {
        let start = value.range(of: "://")?.upperBound ?? value.startIndex
        let authorityEnd = value[start...].firstIndex(of: "/") ?? value.endIndex
        guard let at = value[start..<authorityEnd].lastIndex(of: "@") else { return value }
        return String(value[..<start]) + "***" + String(value[at...])
    }

    /// What differs between `self` (a caller's) and `other` (the agent's), for a message.
    public func differences(from other: AgentNetwork) -> [String] {
        var names: [String] = []
        if caBundle != other.caBundle { names.append("CA bundle (--cacert, VAULT_CA_BUNDLE)") }
        for name in Set(proxy.keys).union(other.proxy.keys).sorted() where proxy[name] != other.proxy[name] { names.append(name) }
        return names
    }
}

/// The operations of the agent.
public enum AgentOperation: Sendable, Equatable {
    /// The agent's metadata. Does not count as use for the idle timer.
    case status
    /// Answers with the status, then the agent ends.
    case lock
    /// `vault verify`: the full check, read only.
    case verify
    /// `vault audit verify`: the audit chain check, read only.
    case auditVerify
    /// A token, exactly as `vault token`/`vault exec` obtain one with the passphrase.
    case token(AgentTokenRequest, network: AgentNetwork)
    /// A `proxy-requests` record: `vault proxy`'s summary of a stretch of its request log.
    case proxyRequests(profile: String, environment: String?, summary: RequestLog.Summary)
}

/// A request as the agent reads it.
public struct AgentRequest: Sendable, Equatable {
    public var version: Int
    public var operation: AgentOperation

    package init(version: Int, operation: AgentOperation) {
        self.version = version
        self.operation = operation
    }

    /// The wire form (PROTOCOL.md, "Requests"); fields this version does not know are ignored.
    private struct Wire: Decodable {
        var version: Int
        var op: String
        var token: TokenWire?
        var network: AgentNetwork?
        var requests: RequestsWire?
    }

    private struct RequestsWire: Decodable {
        var profile: String
        var environment: String?
        var summary: String
    }

    private struct TokenWire: Decodable {
        var profile: String
        var environment: String?
        var print: Bool?
        var format: String?
        var action: String?
        var fresh: Bool?
        var minTTL: Int64?
        var timeoutMs: Int64?
        var connectTimeoutMs: Int64?
        var caller: String?
        enum CodingKeys: String, CodingKey {
            case profile, environment, print, format, action, fresh, minTTL = "min_ttl", timeoutMs = "timeout_ms"
            case connectTimeoutMs = "connect_timeout_ms", caller
        }
    }

    /// Reads a request frame: one JSON object (`JSONDecoder`: RFC 8259, valid UTF-8),
    /// `version` first checked, then `op` and its fields, each as its type. Anything else is
    /// a usage error that names what is wrong.
    public static func read(_ bytes: [UInt8]) throws(VaultError) -> AgentRequest {
        let wire: Wire
        do {
            wire = try JSONDecoder().decode(Wire.self, from: Data(bytes))
        } catch {
            if let version = try? JSONDecoder().decode(VersionOnly.self, from: Data(bytes)).version, version != AgentProtocol.version {
                throw unsupported(version)
            }
            throw .usage("the request is not a valid agent protocol message")
        }
        guard wire.version == AgentProtocol.version else { throw unsupported(wire.version) }
        let operation: AgentOperation
        switch wire.op {
        case "status": operation = .status
        case "lock": operation = .lock
        case "verify": operation = .verify
        case "audit-verify": operation = .auditVerify
        case "token":
            guard let token = wire.token, let network = wire.network else { throw .usage("a token request needs its token and network fields") }
            var format: TokenFormat?
            if let text = token.format {
                guard let known = TokenFormat(rawValue: text) else {
                    throw .usage("unknown token format '\(text.sanitisedForDisplay(limit: 20))' (raw, json, header or env)")
                }
                format = known
            }
            var action = TokenAction.token
            if let text = token.action {
                guard let known = TokenAction(rawValue: text), known != .refresh else {
                    throw .usage("unknown token action '\(text.sanitisedForDisplay(limit: 20))'")
                }
                action = known
            }
            if let caller = token.caller { try TokenOptions.checkCaller(caller) }
            operation = .token(AgentTokenRequest(profile: token.profile, environment: token.environment, print: token.print ?? false,
                                                 format: format, action: action, fresh: token.fresh ?? false, minTTL: token.minTTL,
                                                 timeoutMs: token.timeoutMs, connectTimeoutMs: token.connectTimeoutMs, caller: token.caller),
                               network: network)
        case "proxy-requests":
            guard let requests = wire.requests, let summary = RequestLog.Summary(detail: requests.summary) else {
                throw .usage("a proxy-requests request needs its profile and a valid summary")
            }
            operation = .proxyRequests(profile: requests.profile, environment: requests.environment, summary: summary)
        default:
            throw .usage("unknown agent operation '\(wire.op.sanitisedForDisplay(limit: 40))'",
                         hint: "only token, proxy-requests, status, lock, verify and audit-verify are served; everything else needs the passphrase")
        }
        return AgentRequest(version: wire.version, operation: operation)
    }

    private struct VersionOnly: Decodable { var version: Int }

    private static func unsupported(_ version: Int) -> VaultError {
        .usage("agent protocol version \(version) is not supported (this agent speaks \(AgentProtocol.version))",
               hint: "`vault lock`, then `vault unlock` with this version of vault")
    }
}

/// The agent's answer.
public enum AgentAnswer: Sendable {
    /// The output of a token request that asked to print (the exact bytes for stdout).
    case output(SecureBytes)
    case token(Token)
    case status(Status)
    case verification(FullVerification)
    case audit(AuditCheck)
    /// A record was appended (`proxy-requests`): its sequence number.
    case recorded(Int64)
    /// The operation failed: the command's exit code, message and hint. With `ending`, the
    /// agent is shutting down (its time is up, the keys changed, …): the client goes on
    /// without it.
    case failure(Failure)

    public struct Failure: Codable, Sendable, Equatable {
        public var exitCode: Int32
        public var message: String
        public var hint: String?
        public var ending: Bool?
        enum CodingKeys: String, CodingKey { case exitCode = "exit_code", message, hint, ending }

        public init(_ error: VaultError, ending: Bool = false) {
            exitCode = error.exitCode
            message = error.message
            hint = error.hint
            self.ending = ending ? true : nil
        }

        public var error: VaultError { .relayed(exitCode: exitCode, message: message, hint: hint) }
    }

    /// One profile the agent keeps fresh (`vault unlock --keep-fresh`).
    public struct FreshEntry: Codable, Sendable {
        public var profile: String
        public var environment: String?
        /// When the cached token it last obtained expires (Unix s).
        public var expiresAt: Int64?
        /// When it will renew next (Unix s).
        public var nextRefreshAt: Int64
        public var refreshes: Int
        public var failures: Int
        public var lastError: String?
        enum CodingKeys: String, CodingKey {
            case profile, environment, expiresAt = "expires_at", nextRefreshAt = "next_refresh_at", refreshes, failures
            case lastError = "last_error"
        }
    }

    public struct Status: Codable, Sendable {
        public var pid: Int32
        public var vault: String
        public var unlockedAt: Int64
        public var expiresAt: Int64
        public var idleSeconds: Int64
        public var idleExpiresAt: Int64
        public var requests: Int64
        /// The network settings it uses for every exchange (fixed at `vault unlock`).
        public var network: AgentNetwork
        public var keepFresh: [FreshEntry]
        enum CodingKeys: String, CodingKey {
            case pid, vault, unlockedAt = "unlocked_at", expiresAt = "expires_at", idleSeconds = "idle_seconds"
            case idleExpiresAt = "idle_expires_at", requests, network, keepFresh = "keep_fresh"
        }
    }

    public struct Token: Codable, Sendable {
        public var accessToken: String
        public var tokenType: String
        public var expiresAt: Int64
        public var expiresIn: Int64
        public var environment: String
        public var apiBase: String?
        public var fromCache: Bool
        enum CodingKeys: String, CodingKey {
            case accessToken = "access_token", tokenType = "token_type", expiresAt = "expires_at", expiresIn = "expires_in"
            case environment, apiBase = "api_base", fromCache = "from_cache"
        }
    }

    public struct AuditCheck: Codable, Sendable {
        public var recordsChecked: Int
        public var failureSeq: Int64?
        public var failureReason: String?
        enum CodingKeys: String, CodingKey { case recordsChecked = "records_checked", failureSeq = "failure_seq", failureReason = "failure_reason" }
    }

    /// The JSON answers' wire form (PROTOCOL.md, "Answers").
    private struct Wire: Codable {
        var version = AgentProtocol.version
        var ok: Bool
        var token: Token?
        var status: Status?
        var verification: FullVerification?
        var audit: AuditCheck?
        var recorded: Int64?
        var error: Failure?
    }

    /// The answer as a frame's payload: the kind byte, then the output or the JSON object.
    public func frame() -> [UInt8] {
        let wire: Wire
        switch self {
        case .output(let bytes): return [UInt8(VAULT_AGENT_ANSWER_OUTPUT)] + bytes.withUnsafeBytes { Array($0) }
        case .token(let token): wire = Wire(ok: true, token: token)
        case .status(let status): wire = Wire(ok: true, status: status)
        case .verification(let report): wire = Wire(ok: true, verification: report)
        case .audit(let check): wire = Wire(ok: true, audit: check)
        case .recorded(let seq): wire = Wire(ok: true, recorded: seq)
        case .failure(let failure): wire = Wire(ok: false, error: failure)
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let json = (try? encoder.encode(wire)).map { [UInt8]($0) }
            ?? Array(#"{"version":\#(AgentProtocol.version),"ok":false,"error":{"exit_code":1,"message":"the agent could not write its answer"}}"#.utf8)
        return [UInt8(VAULT_AGENT_ANSWER_JSON)] + json
    }

    /// Reads an answer frame's payload; nil when it is not an answer of this protocol.
    public static func read(_ bytes: [UInt8]) -> AgentAnswer? {
        guard let kind = bytes.first else { return nil }
        if kind == UInt8(VAULT_AGENT_ANSWER_OUTPUT) {
            return .output(bytes.dropFirst().withUnsafeBytes { SecureBytes(copying: $0) })
        }
        guard kind == UInt8(VAULT_AGENT_ANSWER_JSON),
              let wire = try? JSONDecoder().decode(Wire.self, from: Data(bytes.dropFirst())), wire.version == AgentProtocol.version
        else { return nil }
        if !wire.ok { return wire.error.map { .failure($0) } }
        if let token = wire.token { return .token(token) }
        if let status = wire.status { return .status(status) }
        if let report = wire.verification { return .verification(report) }
        if let check = wire.audit { return .audit(check) }
        if let seq = wire.recorded { return .recorded(seq) }
        return nil
    }
}
