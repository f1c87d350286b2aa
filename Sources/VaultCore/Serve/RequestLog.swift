import CSodium
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `vault proxy`'s request log: one JSON line per forwarded request (metadata only: never a
/// header value, a query or a body), appended to a 0600 file of its own per run, and
/// anchored in the audit chain by periodic `proxy-requests` records whose `detail` carries
/// the lines' range, counts and BLAKE2b-256 digest (FORMAT.md §6.8). A busy program makes
/// millions of requests a day: a chained, signed record each would cost a transaction per
/// request and grow the vault by about a gigabyte a day; a line costs one `write`.
public final class RequestLog: @unchecked Sendable {
    /// One request, as a line of the log.
    public struct Line: Codable, Sendable, Equatable {
        public var seq: Int64 = 0
        /// Milliseconds since the Unix epoch (when the request ended).
        public var at: Int64 = 0
        public var profile: String = ""
        public var method: String
        /// The path, without its query.
        public var path: String
        public var status: Int = 0
        public var bytesIn: Int = 0
        public var bytesOut: Int = 0
        public var durationMs: Int64 = 0
        /// The upstream's `X-Request-ID`.
        public var requestID: String?
        public var caller: String
        /// Sent again with a fresh token after a `401`.
        public var retried: Bool?
        /// The exchange with the caller broke off (it went away, or a write failed): the
        /// request may have reached the API; `status` is the API's, or 0 before its answer.
        public var aborted: Bool?

        enum CodingKeys: String, CodingKey {
            case seq, at, profile, method, path, status, bytesIn = "bytes_in", bytesOut = "bytes_out", durationMs = "ms"
            case requestID = "request_id", caller, retried, aborted
        }

        public init(method: String, path: String, caller: String) {
            self.method = method
            self.path = path
            self.caller = caller
        }
    }

    /// What a `proxy-requests` record says about lines `first…last` of the log `name`.
    public struct Summary: Sendable, Equatable {
        public var name: String
        public var first: Int64
        public var last: Int64
        public var statusClasses: [Int] = [0, 0, 0, 0]  // 2xx, 3xx, 4xx, 5xx
        public var bytesIn: Int64 = 0
        public var bytesOut: Int64 = 0
        /// BLAKE2b-256 of the lines' bytes, newlines included, hex.
        public var digest: String

        public var requests: Int64 { last - first + 1 }

        /// The record's `detail`.
        public var detail: String {
            "log=\(name) lines=\(first)-\(last) requests=\(requests) 2xx=\(statusClasses[0]) 3xx=\(statusClasses[1]) 4xx=\(statusClasses[2]) "
                + "5xx=\(statusClasses[3]) bytes_in=\(bytesIn) bytes_out=\(bytesOut) digest=\(digest)"
        }

        /// Reads a `detail` back (strictly: every field, in order, each in range).
        public init?(detail: String) {
            let fields = detail.split(separator: " ").map { $0.split(separator: "=", maxSplits: 1).map(String.init) }
            let names = ["log", "lines", "requests", "2xx", "3xx", "4xx", "5xx", "bytes_in", "bytes_out", "digest"]
            guard fields.count == names.count, zip(fields, names).allSatisfy({ $0.count == 2 && $0[0] == $1 }) else { return nil }
            let values = fields.map { $0[1] }
            let range = values[1].split(separator: "-").compactMap { Int64($0) }
            guard RequestLog.isValidName(values[0]), range.count == 2, range[0] >= 1, range[1] >= range[0],
                  Int64(values[2]) == range[1] - range[0] + 1,
                  let classes = Optional(values[3...6].compactMap { Int($0) }), classes.count == 4, classes.allSatisfy({ $0 >= 0 }),
                  let bytesIn = Int64(values[7]), let bytesOut = Int64(values[8]), bytesIn >= 0, bytesOut >= 0,
                  values[9].utf8.count == 64, values[9].utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) })
            else { return nil }
            self.init(name: values[0], first: range[0], last: range[1], statusClasses: classes, bytesIn: bytesIn, bytesOut: bytesOut, digest: values[9])
        }

        public init(name: String, first: Int64, last: Int64, statusClasses: [Int], bytesIn: Int64, bytesOut: Int64, digest: String) {
            self.name = name
            self.first = first
            self.last = last
            self.statusClasses = statusClasses
            self.bytesIn = bytesIn
            self.bytesOut = bytesOut
            self.digest = digest
        }
    }

    /// Where request logs are kept: `<data directory>/requests`.
    public static func directory() -> String? {
        AgentProtocol.dataDirectory().map { $0 + "/requests" }
    }

    /// A log's file name: letters, digits, `.`, `_` and `-`, ending in `.jsonl`.
    public static func isValidName(_ name: String) -> Bool {
        name.hasSuffix(".jsonl") && !name.hasPrefix(".") && name.utf8.count <= 200
            && name.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x41...0x5a).contains($0) || (0x61...0x7a).contains($0) || $0 == 0x2e || $0 == 0x5f || $0 == 0x2d }
    }

    public let path: String
    public let name: String
    let profile: String
    private let descriptor: Int32
    private let lock = NSLock()
    private var seq: Int64 = 0
    private var window: Summary?
    private let state = StreamingHash()

    /// Creates a new log for `profile` in `directory` (0700, made if missing):
    /// `PROFILE-YYYYMMDDTHHMMSSZ-PID.jsonl`, 0600, never an existing file.
    public init(directory: String, profile: String) throws(VaultError) {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw .failure("cannot create \(directory): \(error.localizedDescription)")
        }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
        let safeProfile = String(profile.unicodeScalars.map { scalar -> Character in
            scalar.isASCII && (CharacterSet.alphanumerics.contains(scalar) || scalar == "_" || scalar == "-") ? Character(scalar) : "_"
        }.prefix(64))
        name = "\(safeProfile)-\(formatter.string(from: Date()))-\(getpid()).jsonl"
        path = directory + "/" + name
        self.profile = profile
        descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw .failure("cannot create the request log \(path): \(String(cString: strerror(errno)))") }
    }

    deinit { close(descriptor) }

    /// Appends one request (numbered here).
    public func append(_ line: Line) {
        lock.withLock {
            seq += 1
            var line = line
            line.seq = seq
            line.at = Date().unixMilliseconds
            line.profile = profile
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            guard var bytes = try? Array(encoder.encode(line)) else { return }
            bytes.append(0x0a)
            let written = bytes.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
            if written != bytes.count { Trace.debug("the request log could not be written: \(String(cString: strerror(errno)))") }
            state.update(bytes)
            var summary = window ?? Summary(name: name, first: seq, last: seq, statusClasses: [0, 0, 0, 0], bytesIn: 0, bytesOut: 0, digest: "")
            summary.last = seq
            if (200...599).contains(line.status) { summary.statusClasses[line.status / 100 - 2] += 1 }
            summary.bytesIn += Int64(line.bytesIn)
            summary.bytesOut += Int64(line.bytesOut)
            window = summary
        }
    }

    /// The lines since the last summary, as a summary (nil when there are none); the next
    /// one starts after them.
    public func takeSummary() -> Summary? {
        lock.withLock { () -> Summary? in
            guard var summary = window else { return nil }
            summary.digest = state.finishAndRestart()
            window = nil
            return summary
        }
    }

    /// Reads a log's lines (numbered from 1) with their exact bytes.
    public static func read(_ path: String) throws(VaultError) -> [(line: Line?, bytes: [UInt8])] {
        guard let data = FileManager.default.contents(atPath: path) else { throw .notFound("cannot read the request log \(path)") }
        var result: [(Line?, [UInt8])] = []
        var start = data.startIndex
        let decoder = JSONDecoder()
        while start < data.endIndex {
            let end = data[start...].firstIndex(of: 0x0a) ?? data.endIndex
            let bytes = Array(data[start..<min(end + 1, data.endIndex)])
            result.append((try? decoder.decode(Line.self, from: Data(data[start..<end])), bytes))
            start = min(end + 1, data.endIndex)
        }
        return result
    }

    /// BLAKE2b-256 of `lines`' bytes, hex.
    public static func digest(_ lines: some Sequence<[UInt8]>) -> String {
        let state = StreamingHash()
        for bytes in lines { state.update(bytes) }
        return state.finishAndRestart()
    }
}

/// libsodium's incremental BLAKE2b-256 (`crypto_generichash_init/update/final`), in memory
/// aligned as the state needs.
final class StreamingHash: @unchecked Sendable {
    private let state: UnsafeMutableRawPointer

    init() {
        state = UnsafeMutableRawPointer.allocate(byteCount: crypto_generichash_statebytes(), alignment: 64)
        crypto_generichash_init(OpaquePointer(state), nil, 0, 32)
    }

    deinit { state.deallocate() }

    func update(_ bytes: [UInt8]) {
        crypto_generichash_update(OpaquePointer(state), bytes, UInt64(bytes.count))
    }

    /// The digest of what was added (hex); the state starts over.
    func finishAndRestart() -> String {
        var digest = [UInt8](repeating: 0, count: 32)
        crypto_generichash_final(OpaquePointer(state), &digest, 32)
        crypto_generichash_init(OpaquePointer(state), nil, 0, 32)
        return digest.map { String(format: "%02x", $0) }.joined()
    }
}

extension UnlockedVault {
    /// Appends the `proxy-requests` record of `summary` for `profile` (and `environment`,
    /// which must exist): the anchor of those lines of the request log.
    @discardableResult
    public func recordProxyRequests(_ summary: RequestLog.Summary, profile: String, environment: String?) throws(VaultError) -> AuditEntry {
        try vault.requireWritable()
        let checked = try verifiedProfile(named: profile)
        if let environment { _ = try verifiedEnvironment(named: environment) }
        let entry = AuditEntry(at: vault.clock.now().unixMilliseconds, action: .proxyRequests, outcome: .ok, profile: checked.name,
                               environment: environment ?? checked.environment, detail: summary.detail)
        return try appendAudit(entry)
    }
}

/// Where `vault proxy` sends its summaries: the agent, or the vault it unlocked.
public enum RequestRecorder: Sendable {
    case agent(AgentClient)
    case vault(UnlockedVault)

    public func record(_ summary: RequestLog.Summary, profile: String, environment: String?) async throws(VaultError) {
        switch self {
        case .vault(let unlocked):
            try unlocked.recordProxyRequests(summary, profile: profile, environment: environment)
        case .agent(let client):
            let outcome = await client.callDetached(.proxyRequests(profile: profile, environment: environment, summary: summary))
            switch outcome {
            case .answered(.recorded): return
            case .answered(.failure(let failure)): throw failure.error
            case .answered: throw .failure("the agent gave an answer of another kind than the one asked for")
            case .absent, .stale: throw .unavailable("the vault's session ended (`vault lock`); the request log's last lines are not anchored")
            case .untrusted(let why), .broken(let why): throw .failure(why)
            }
        }
    }
}

/// The request logs of a directory checked against the `proxy-requests` records of a
/// vault's trail (`vault audit requests`).
public struct RequestLogCheck: Sendable {
    public struct Checked: Sendable {
        public var log: String
        public var line: RequestLog.Line
        /// Covered by a record whose digest matches.
        public var anchored: Bool
    }

    public var lines: [Checked] = []
    /// Lines a record covers that are missing or changed, or records whose log is gone:
    /// each a sentence.
    public var problems: [String] = []

    /// Checks every log named by a record in `records` (and every other log in
    /// `directory`, whose lines are then unanchored).
    public static func run(directory: String, records: [AuditEntry]) -> RequestLogCheck {
        var result = RequestLogCheck()
        var summaries: [String: [(seq: Int64, summary: RequestLog.Summary)]] = [:]
        for record in records where record.action == .proxyRequests {
            guard let summary = record.detail.flatMap(RequestLog.Summary.init(detail:)) else {
                result.problems.append("record \(record.seq): its summary cannot be read")
                continue
            }
            summaries[summary.name, default: []].append((record.seq, summary))
        }
        let present = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter(RequestLog.isValidName)
        for name in Set(present).union(summaries.keys).sorted() {
            let path = directory + "/" + name
            guard let lines = try? RequestLog.read(path) else {
                result.problems.append("the request log \(name) is missing, though record \(summaries[name]?.first?.seq ?? 0) summarises it")
                continue
            }
            var anchored = Set<Int64>()
            for (seq, summary) in summaries[name] ?? [] {
                let range = Int(summary.first - 1)..<Int(summary.last)
                guard range.upperBound <= lines.count else {
                    result.problems.append("\(name): record \(seq) covers lines \(summary.first)-\(summary.last), but the log has \(lines.count)")
                    continue
                }
                guard RequestLog.digest(lines[range].map(\.bytes)) == summary.digest else {
                    result.problems.append("\(name): lines \(summary.first)-\(summary.last) do not match record \(seq) (changed, removed or reordered)")
                    continue
                }
                anchored.formUnion(summary.first...summary.last)
            }
            for (index, entry) in lines.enumerated() {
                guard let line = entry.line else {
                    result.problems.append("\(name): line \(index + 1) is not a request log line")
                    continue
                }
                result.lines.append(Checked(log: name, line: line, anchored: anchored.contains(Int64(index + 1))))
            }
        }
        return result
    }
}
