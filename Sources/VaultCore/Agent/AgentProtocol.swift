import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The agent protocol, version 1 (PROTOCOL.md): each frame is a 4-byte big-endian length
/// followed by that many bytes of one UTF-8 JSON object; one request and one response
/// per connection. There is no operation that returns key material or a stored secret:
/// only what the command would print (a token for `token`/`exec`, status metadata).
public enum AgentProtocol {
    public static let version = 1
    /// The largest frame either side accepts (64 KiB).
    public static let maximumFrame = 64 * 1024
    /// A request must arrive whole within this many seconds, or the connection is closed.
    public static let readTimeout: Int64 = 5

    /// `$XDG_RUNTIME_DIR/gbg-vault`, or `/tmp/gbg-vault-<uid>` without one.
    public static func directory(environment: [String: String]? = nil) -> String {
        let runtime = environment.map { $0["XDG_RUNTIME_DIR"] } ?? LocalEnvironment.value("XDG_RUNTIME_DIR")
        if let runtime, runtime.hasPrefix("/") {
            // As `NSString.appendingPathComponent` joins them (one slash; a root of "/"),
            // without bridging to NSString on the client's short path. String operations
            // only: a Substring here reached a generic `append(contentsOf:)` whose first
            // call scans every protocol conformance in the binary (0.25 ms, measured).
            var base = runtime
            while base.utf8.count > 1, base.utf8.last == UInt8(ascii: "/") { base.removeLast() }
            return base == "/" ? "/gbg-vault" : base + "/gbg-vault"
        }
        return "/tmp/gbg-vault-\(geteuid())"
    }

    /// The agent socket of the vault `vaultID`.
    public static func socketPath(vaultID: [UInt8], environment: [String: String]? = nil) -> String {
        directory(environment: environment) + "/agent-\(vaultID.hexString).sock"
    }

    /// The socket of the agent serving a PostgreSQL vault: named by a hash of its
    /// location (``PostgresLocation/identity``), so a client finds it without asking the
    /// server for the vault id.
    public static func socketPath(store identity: String, environment: [String: String]? = nil) -> String {
        directory(environment: environment) + "/agent-pg-\(Sodium.blake2b(Array(identity.utf8), length: 16).hexString).sock"
    }

    /// A second name for a file vault's agent, by the file's device and inode: a symbolic
    /// link, in the agent directory, to the socket's own name. A client that has only the
    /// vault's path finds the agent with one `stat` and one `readlink`, without opening
    /// the vault with SQLite to read its id (the agent still compares the device and inode
    /// the client sends with the file it opened and checked).
    public static func fileLinkPath(device: UInt64, inode: UInt64, environment: [String: String]? = nil) -> String {
        directory(environment: environment) + "/agent-file-\(device)-\(inode)"
    }

    /// The socket a file link names, if the link holds exactly a vault socket's bare name
    /// (`agent-` and 32 lower-case hex digits, `.sock`); anything else is not followed.
    public static func socketPath(fromFileLink link: String, environment: [String: String]? = nil) -> String? {
        var buffer = [UInt8](repeating: 0, count: 64)
        let count = buffer.withUnsafeMutableBufferPointer { raw in
            raw.withMemoryRebound(to: CChar.self) { readlink(link, $0.baseAddress!, $0.count) }
        }
        guard count == 43 else { return nil } // "agent-" + 32 + ".sock"
        let name = buffer[0..<count]
        let hex = name.dropFirst(6).dropLast(5)
        guard name.starts(with: Array("agent-".utf8)), name.suffix(5).elementsEqual(".sock".utf8),
              hex.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0) })
        else { return nil }
        return directory(environment: environment) + "/" + String(decoding: name, as: UTF8.self)
    }

    /// Creates the agent directory 0700 if it is missing, then checks it: a real
    /// directory (not a symbolic link), owned by this user, no group or other access.
    public static func preparePrivateDirectory(_ path: String, create: Bool) throws(VaultError) {
        if create {
            let parent = (path as NSString).deletingLastPathComponent
            if !parent.isEmpty { mkdir(parent, 0o700) }
            if mkdir(path, 0o700) != 0, errno != EEXIST {
                throw .failure("cannot create the agent directory \(path): \(String(cString: strerror(errno)))")
            }
        }
        var info = stat()
        guard lstat(path, &info) == 0 else {
            throw .failure("the agent directory \(path) is missing: \(String(cString: strerror(errno)))")
        }
        guard (info.st_mode & S_IFMT) == S_IFDIR else {
            throw .failure("refusing the agent directory \(path): it is not a directory (a symbolic link?)")
        }
        guard info.st_uid == geteuid() else {
            throw .failure("refusing the agent directory \(path): it belongs to uid \(info.st_uid), not to you (uid \(geteuid()))")
        }
        guard info.st_mode & 0o077 == 0 else {
            throw .failure("refusing the agent directory \(path): its mode is \(String(format: "%04o", info.st_mode & 0o7777)), not 0700",
                           hint: "chmod 700 \(path)")
        }
    }
}

/// A request to the agent.
public struct AgentRequest: Codable, Sendable, Equatable {
    public var version: Int = AgentProtocol.version
    /// `status`, `lock` or `token`.
    public var op: String
    public var profile: String?
    public var environment: String?
    public var fresh: Bool?
    public var minTTL: Int64?
    /// `token` or `exec`: the audit action.
    public var action: String?
    public var timeoutMs: Int64?
    public var connectTimeoutMs: Int64?
    /// The caller's `--cacert` / `VAULT_CA_BUNDLE`.
    public var caBundle: String?
    /// The caller's proxy variables (`HTTPS_PROXY`, `NO_PROXY`, …).
    public var proxyEnvironment: [String: String]?
    /// `add`: the new profile's metadata.
    public var clientID: String?
    public var username: String?
    public var grant: String?
    public var scope: String?
    /// `add`, `rotate`: new secret values, base64 of their bytes; client to agent only
    /// (never answered back).
    public var clientSecret: String?
    public var password: String?

    /// Puts secret bytes into a request (base64, so any byte string survives JSON).
    public static func encode(_ secret: SecureBytes?) -> String? {
        secret.map { $0.withUnsafeBytes { Data($0).base64EncodedString() } }
    }

    static func decode(_ text: String?) throws(VaultError) -> SecureBytes? {
        guard let text else { return nil }
        guard let data = Data(base64Encoded: text) else { throw .usage("a secret in the request is not base64") }
        return SecureBytes(copying: data)
    }
    /// `rotate`: exchange with the new secrets first.
    public var verify: Bool?
    /// `env-add`, `env-set`: the URLs; `clearAPIBase` removes the API base.
    public var tokenURL: String?
    public var apiBase: String?
    public var clearAPIBase: Bool?

    /// Device and inode of the vault file the client opened; an agent whose own file
    /// differs (a copy of the vault, same vault id) answers `other_file` and does nothing.
    public var fileDevice: UInt64?
    public var fileInode: UInt64?
    /// For a PostgreSQL vault: its ``PostgresLocation/identity`` (instead of dev/ino).
    public var store: String?
    /// `member-add`, `member-remove`: the member's name; `member-add`: its recipient.
    public var member: String?
    public var recipient: String?
    /// `token`: `bare` asks for a successful answer as the token's bytes alone instead of
    /// a JSON object (the client that reads it has no JSON reader: `CProcess/EarlyToken.c`);
    /// any other answer stays JSON. Other values are ignored.
    public var reply: String?

    public init(op: String) { self.op = op }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case version, op, profile, environment, fresh, minTTL = "min_ttl", action, timeoutMs = "timeout_ms"
        case connectTimeoutMs = "connect_timeout_ms", caBundle = "ca_bundle", proxyEnvironment = "proxy_environment"
        case clientID = "client_id", username, grant, scope, clientSecret = "client_secret", password, verify
        case tokenURL = "token_url", apiBase = "api_base", clearAPIBase = "clear_api_base"
        case fileDevice = "file_dev", fileInode = "file_ino", store, member, recipient, reply
    }

    /// The request as the JSON object `JSONEncoder` makes of it (same keys, absent
    /// optionals left out), written directly: the client sends one request per process,
    /// and `JSONEncoder`'s first use in this binary (generic metadata and protocol
    /// conformance lookups) cost ~0.6 ms of a 7 ms `vault token` (BENCHMARKS.md). The agent
    /// decodes it with `JSONDecoder`; a test checks the two agree for every field.
    public func jsonBytes() -> [UInt8] {
        var writer = JSONObjectWriter()
        writer.add(CodingKeys.version.rawValue, Int64(version))
        writer.add(CodingKeys.op.rawValue, op)
        writer.add(CodingKeys.profile.rawValue, profile)
        writer.add(CodingKeys.environment.rawValue, environment)
        writer.add(CodingKeys.fresh.rawValue, fresh)
        writer.add(CodingKeys.minTTL.rawValue, minTTL)
        writer.add(CodingKeys.action.rawValue, action)
        writer.add(CodingKeys.timeoutMs.rawValue, timeoutMs)
        writer.add(CodingKeys.connectTimeoutMs.rawValue, connectTimeoutMs)
        writer.add(CodingKeys.caBundle.rawValue, caBundle)
        writer.add(CodingKeys.proxyEnvironment.rawValue, proxyEnvironment)
        writer.add(CodingKeys.clientID.rawValue, clientID)
        writer.add(CodingKeys.username.rawValue, username)
        writer.add(CodingKeys.grant.rawValue, grant)
        writer.add(CodingKeys.scope.rawValue, scope)
        writer.add(CodingKeys.clientSecret.rawValue, clientSecret)
        writer.add(CodingKeys.password.rawValue, password)
        writer.add(CodingKeys.verify.rawValue, verify)
        writer.add(CodingKeys.tokenURL.rawValue, tokenURL)
        writer.add(CodingKeys.apiBase.rawValue, apiBase)
        writer.add(CodingKeys.clearAPIBase.rawValue, clearAPIBase)
        writer.add(CodingKeys.fileDevice.rawValue, fileDevice)
        writer.add(CodingKeys.fileInode.rawValue, fileInode)
        writer.add(CodingKeys.store.rawValue, store)
        writer.add(CodingKeys.member.rawValue, member)
        writer.add(CodingKeys.recipient.rawValue, recipient)
        writer.add(CodingKeys.reply.rawValue, reply)
        return writer.finish()
    }
}

/// What `token` and `exec` ask the agent for, as plain values (built by the commands and
/// by vault's `FastPath`; for `vault token NAME` with these defaults the same request is
/// written by the constructor in `CProcess/EarlyToken.c`, which a test compares with
/// ``request(action:)``).
public struct AgentTokenAsk: Sendable {
    public var vaultPath: String
    public var noAgent = false
    public var profile: String
    public var environment: String?
    public var fresh = false
    public var minTTL: Int64 = 300
    public var timeout: Double = 30
    public var connectTimeout: Double = 10
    public var cacert: String?

    public init(vaultPath: String, profile: String) {
        self.vaultPath = vaultPath
        self.profile = profile
    }

    /// How long a client waits for the agent's answer: the exchange's own timeout and
    /// time for the agent's transaction (45 s by default, as `EarlyToken.c` waits).
    public var answerTimeout: TimeInterval { timeout + 15 }

    /// The request (not yet stamped with the vault file's identity), with the proxy and CA
    /// variables as `variable` reads them (the process environment by default).
    public func request(action: String, variable: (String) -> String? = AgentRequest.processVariable) -> AgentRequest {
        var request = AgentRequest(op: "token")
        request.profile = profile
        request.environment = environment
        request.fresh = fresh
        request.minTTL = minTTL
        request.action = action
        request.setNetwork(timeout: timeout, connectTimeout: connectTimeout, cacert: cacert, variable: variable)
        return request
    }
}

extension AgentRequest {
    /// The caller's network settings, for an operation that may exchange: the timeouts,
    /// `--cacert` else `VAULT_CA_BUNDLE`, and the proxy variables that are set, as they are
    /// (the agent uses the caller's, not its own).
    public mutating func setNetwork(timeout: Double, connectTimeout: Double, cacert: String?,
                                    variable: (String) -> String? = processVariable) {
        timeoutMs = Int64(timeout * 1000)
        connectTimeoutMs = Int64(connectTimeout * 1000)
        caBundle = cacert ?? variable("VAULT_CA_BUNDLE").flatMap { $0.isEmpty ? nil : $0 }
        var proxies: [String: String] = [:]
        for name in ["https_proxy", "http_proxy", "all_proxy", "no_proxy"] {
            for spelling in [name, name.uppercased()] {
                if let value = variable(spelling) { proxies[spelling] = value }
            }
        }
        proxyEnvironment = proxies
    }

    /// A variable of this process's environment as getenv(3) reads it (set, even if empty).
    public static func processVariable(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }
}

/// A JSON string literal (RFC 8259) of any text, escaped as ``JSONObjectWriter`` escapes
/// strings: for output built by hand (`vault token --format json`), without `JSONEncoder`.
public enum JSONText {
    public static func quoted(_ text: String) -> String {
        var bytes: [UInt8] = []
        JSONObjectWriter.appendString(text, to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// Writes one flat JSON object (RFC 8259): strings escaped (quote, backslash and every
/// control character; everything else as UTF-8), integers in decimal, booleans, and
/// objects of strings; `nil` values are left out, as `JSONEncoder` leaves them out.
struct JSONObjectWriter {
    private var bytes: [UInt8] = [UInt8(ascii: "{")]
    private var empty = true

    private mutating func key(_ name: String) {
        if !empty { bytes.append(UInt8(ascii: ",")) }
        empty = false
        Self.appendString(name, to: &bytes)
        bytes.append(UInt8(ascii: ":"))
    }

    mutating func add(_ name: String, _ value: String?) {
        guard let value else { return }
        key(name)
        Self.appendString(value, to: &bytes)
    }

    mutating func add(_ name: String, _ value: Int64?) {
        guard let value else { return }
        key(name)
        bytes += Array(String(value).utf8)
    }

    mutating func add(_ name: String, _ value: UInt64?) {
        guard let value else { return }
        key(name)
        bytes += Array(String(value).utf8)
    }

    mutating func add(_ name: String, _ value: Bool?) {
        guard let value else { return }
        key(name)
        bytes += Array((value ? "true" : "false").utf8)
    }

    mutating func add(_ name: String, _ value: [String: String]?) {
        guard let value else { return }
        key(name)
        var inner = JSONObjectWriter()
        // In key order; sorting the keys alone (an array of strings) rather than the pairs,
        // whose array type the runtime would set up from its mangled name on every start.
        for entryKey in value.keys.sorted() { inner.add(entryKey, value[entryKey]) }
        bytes += inner.finish()
    }

    /// An object written by another writer, as this one's value.
    mutating func add(_ name: String, object: JSONObjectWriter) {
        key(name)
        bytes += object.finish()
    }

    func finish() -> [UInt8] { bytes + [UInt8(ascii: "}")] }

    static func appendString(_ text: String, to bytes: inout [UInt8]) {
        let hex = Array("0123456789abcdef".utf8)
        bytes.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): bytes += [UInt8(ascii: "\\"), UInt8(ascii: "\"")]
            case UInt8(ascii: "\\"): bytes += [UInt8(ascii: "\\"), UInt8(ascii: "\\")]
            case 0x0A: bytes += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
            case 0x0D: bytes += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
            case 0x09: bytes += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
            case 0x00..<0x20:
                bytes += [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"), hex[Int(byte >> 4)], hex[Int(byte & 0x0F)]]
            default: bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }
}

/// The agent's answer.
public struct AgentResponse: Codable, Sendable {
    public struct Failure: Codable, Sendable {
        public var exitCode: Int32
        public var message: String
        public var hint: String?
        enum CodingKeys: String, CodingKey { case exitCode = "exit_code", message, hint }
        public init(exitCode: Int32, message: String, hint: String?) {
            self.exitCode = exitCode
            self.message = message
            self.hint = hint
        }
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
        public var vaultID: String
        public var unlockedAt: Int64
        public var expiresAt: Int64
        public var idleSeconds: Int64
        public var idleExpiresAt: Int64
        public var requests: Int64
        public var keepFresh: [FreshEntry]?
        enum CodingKeys: String, CodingKey {
            case keepFresh = "keep_fresh"
            case pid, vault, vaultID = "vault_id", unlockedAt = "unlocked_at", expiresAt = "expires_at"
            case idleSeconds = "idle_seconds", idleExpiresAt = "idle_expires_at", requests
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

    public var version: Int = AgentProtocol.version
    public var ok: Bool
    /// The line the command prints on stderr (`add`, `rotate`, `remove`, `env-*`).
    public var message: String?
    /// `verify`: the full report; `audit-verify`: the chain check.
    public var verification: FullVerification?
    public var audit: AuditCheck?
    /// Set when the agent is shutting down (deadline, keys changed, file replaced): the
    /// client goes on without it.
    public var ending: Bool?
    /// Set when the request named a vault file other than the one this agent serves (a
    /// copy with the same vault id): nothing was done, the client goes on without it.
    public var otherFile: Bool?
    public var error: Failure?
    public var status: Status?
    public var token: Token?

    enum CodingKeys: String, CodingKey {
        case version, ok, message, verification, audit, ending, otherFile = "other_file", error, status, token
    }

    public init(ok: Bool, error: Failure? = nil, status: Status? = nil, token: Token? = nil, message: String? = nil,
                verification: FullVerification? = nil, audit: AuditCheck? = nil) {
        self.message = message
        self.verification = verification
        self.audit = audit
        self.ok = ok
        self.error = error
        self.status = status
        self.token = token
    }

    static func failure(_ error: VaultError) -> AgentResponse {
        AgentResponse(ok: false, error: Failure(exitCode: error.exitCode, message: error.message, hint: error.hint))
    }
}
