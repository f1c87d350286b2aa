/// The client's reading of the agent's everyday answers (a token, a status, an error, a
/// message) without `JSONDecoder`.
///
/// Why: a `vault token` through the agent is one short process, and `JSONDecoder`'s first
/// use in this binary (generic metadata instantiated from mangled names, protocol
/// conformance scans over ~11,000 records) cost 0.9 ms of CPU, about a sixth of the whole
/// command (BENCHMARKS.md, "Fast start"). Foundation has no cheaper JSON reader
/// (`JSONSerialization` measured the same).
///
/// How it stays safe: the parser is a strict RFC 8259 reader (no trailing commas, no
/// comments, no raw control characters in strings, valid UTF-8 only, `\u` escapes with
/// surrogate pairs checked, integers only where an integer is expected, nesting limited).
/// It accepts a strict subset of what `JSONDecoder` accepts: anything it does not take —
/// a status or verification answer, an unknown or repeated key, a number with a fraction,
/// a type it does not expect — returns nil and the caller decodes with `JSONDecoder`, so
/// the answer is never read differently, only sometimes read faster. A test decodes
/// thousands of generated and mutated answers both ways and compares.
extension AgentResponse {
    /// The answer, if it is one of the everyday shapes; nil means "use JSONDecoder".
    static func decodeEveryday(_ bytes: [UInt8]) -> AgentResponse? {
        guard case .object(let fields)? = try? StrictJSON.parse(bytes) else { return nil }
        var response = AgentResponse(ok: false)
        var seen: [String] = []
        for (key, value) in fields {
            guard !seen.contains(key) else { return nil }
            seen.append(key)
            switch key {
            case CodingKeys.version.rawValue:
                guard let version = value.int.flatMap({ Int(exactly: $0) }) else { return nil }
                response.version = version
            case CodingKeys.ok.rawValue:
                guard case .bool(let ok) = value else { return nil }
                response.ok = ok
            case CodingKeys.message.rawValue:
                guard value.isNull || value.string != nil else { return nil }
                response.message = value.string
            case CodingKeys.ending.rawValue:
                guard let flag = value.optionalBool else { return nil }
                response.ending = flag
            case CodingKeys.otherFile.rawValue:
                guard let flag = value.optionalBool else { return nil }
                response.otherFile = flag
            case CodingKeys.error.rawValue:
                if value.isNull { continue }
                guard let failure = Failure(everyday: value) else { return nil }
                response.error = failure
            case CodingKeys.token.rawValue:
                if value.isNull { continue }
                guard let token = Token(everyday: value) else { return nil }
                response.token = token
            case CodingKeys.status.rawValue:
                if value.isNull { continue }
                guard let status = Status(everyday: value) else { return nil }
                response.status = status
            default:
                return nil // verification, audit, or a key of a newer agent
            }
        }
        guard seen.contains(CodingKeys.version.rawValue), seen.contains(CodingKeys.ok.rawValue) else { return nil }
        return response
    }
}

extension AgentResponse.Failure {
    init?(everyday value: StrictJSON.Value) {
        guard let fields = value.uniqueFields else { return nil }
        var exitCode: Int32?
        var message: String?
        var hint: String?
        for (key, value) in fields {
            switch key {
            case CodingKeys.exitCode.rawValue: exitCode = value.int.flatMap { Int32(exactly: $0) }; if exitCode == nil { return nil }
            case CodingKeys.message.rawValue: message = value.string; if message == nil { return nil }
            case CodingKeys.hint.rawValue:
                guard value.isNull || value.string != nil else { return nil }
                hint = value.string
            default: return nil
            }
        }
        guard let exitCode, let message else { return nil }
        self.init(exitCode: exitCode, message: message, hint: hint)
    }
}

extension AgentResponse.Token {
    init?(everyday value: StrictJSON.Value) {
        guard let fields = value.uniqueFields else { return nil }
        var accessToken: String?, tokenType: String?, environment: String?, apiBase: String?
        var expiresAt: Int64?, expiresIn: Int64?, fromCache: Bool?
        for (key, value) in fields {
            switch key {
            case CodingKeys.accessToken.rawValue: accessToken = value.string; if accessToken == nil { return nil }
            case CodingKeys.tokenType.rawValue: tokenType = value.string; if tokenType == nil { return nil }
            case CodingKeys.environment.rawValue: environment = value.string; if environment == nil { return nil }
            case CodingKeys.apiBase.rawValue:
                guard value.isNull || value.string != nil else { return nil }
                apiBase = value.string
            case CodingKeys.expiresAt.rawValue: expiresAt = value.int; if expiresAt == nil { return nil }
            case CodingKeys.expiresIn.rawValue: expiresIn = value.int; if expiresIn == nil { return nil }
            case CodingKeys.fromCache.rawValue:
                guard case .bool(let flag) = value else { return nil }
                fromCache = flag
            default: return nil
            }
        }
        guard let accessToken, let tokenType, let environment, let expiresAt, let expiresIn, let fromCache else { return nil }
        self.init(accessToken: accessToken, tokenType: tokenType, expiresAt: expiresAt, expiresIn: expiresIn,
                  environment: environment, apiBase: apiBase, fromCache: fromCache)
    }
}

extension AgentResponse.Status {
    init?(everyday value: StrictJSON.Value) {
        guard let fields = value.uniqueFields else { return nil }
        var pid: Int32?, vault: String?, vaultID: String?
        var unlockedAt: Int64?, expiresAt: Int64?, idleSeconds: Int64?, idleExpiresAt: Int64?, requests: Int64?
        var keepFresh: [AgentResponse.FreshEntry]?
        for (key, value) in fields {
            switch key {
            case CodingKeys.pid.rawValue: pid = value.int.flatMap { Int32(exactly: $0) }; if pid == nil { return nil }
            case CodingKeys.vault.rawValue: vault = value.string; if vault == nil { return nil }
            case CodingKeys.vaultID.rawValue: vaultID = value.string; if vaultID == nil { return nil }
            case CodingKeys.unlockedAt.rawValue: unlockedAt = value.int; if unlockedAt == nil { return nil }
            case CodingKeys.expiresAt.rawValue: expiresAt = value.int; if expiresAt == nil { return nil }
            case CodingKeys.idleSeconds.rawValue: idleSeconds = value.int; if idleSeconds == nil { return nil }
            case CodingKeys.idleExpiresAt.rawValue: idleExpiresAt = value.int; if idleExpiresAt == nil { return nil }
            case CodingKeys.requests.rawValue: requests = value.int; if requests == nil { return nil }
            case CodingKeys.keepFresh.rawValue:
                if value.isNull { continue }
                guard case .array(let items) = value else { return nil }
                var entries: [AgentResponse.FreshEntry] = []
                for item in items {
                    guard let entry = AgentResponse.FreshEntry(everyday: item) else { return nil }
                    entries.append(entry)
                }
                keepFresh = entries
            default: return nil
            }
        }
        guard let pid, let vault, let vaultID, let unlockedAt, let expiresAt, let idleSeconds, let idleExpiresAt, let requests
        else { return nil }
        self.init(pid: pid, vault: vault, vaultID: vaultID, unlockedAt: unlockedAt, expiresAt: expiresAt, idleSeconds: idleSeconds,
                  idleExpiresAt: idleExpiresAt, requests: requests, keepFresh: keepFresh)
    }
}

extension AgentResponse.FreshEntry {
    init?(everyday value: StrictJSON.Value) {
        guard let fields = value.uniqueFields else { return nil }
        var profile: String?, environment: String?, lastError: String?
        var expiresAt: Int64?, nextRefreshAt: Int64?, refreshes: Int?, failures: Int?
        for (key, value) in fields {
            switch key {
            case CodingKeys.profile.rawValue: profile = value.string; if profile == nil { return nil }
            case CodingKeys.environment.rawValue:
                guard value.isNull || value.string != nil else { return nil }
                environment = value.string
            case CodingKeys.lastError.rawValue:
                guard value.isNull || value.string != nil else { return nil }
                lastError = value.string
            case CodingKeys.expiresAt.rawValue:
                guard value.isNull || value.int != nil else { return nil }
                expiresAt = value.int
            case CodingKeys.nextRefreshAt.rawValue: nextRefreshAt = value.int; if nextRefreshAt == nil { return nil }
            case CodingKeys.refreshes.rawValue: refreshes = value.int.flatMap { Int(exactly: $0) }; if refreshes == nil { return nil }
            case CodingKeys.failures.rawValue: failures = value.int.flatMap { Int(exactly: $0) }; if failures == nil { return nil }
            default: return nil
            }
        }
        guard let profile, let nextRefreshAt, let refreshes, let failures else { return nil }
        self.init(profile: profile, environment: environment, expiresAt: expiresAt, nextRefreshAt: nextRefreshAt,
                  refreshes: refreshes, failures: failures, lastError: lastError)
    }
}

/// A strict RFC 8259 reader for the agent's answers (see `decodeEveryday`).
enum StrictJSON {
    indirect enum Value: Equatable, Sendable {
        case object([(String, Value)])
        case array([Value])
        case string(String)
        /// The number's text as written (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`).
        case number(String)
        case bool(Bool)
        case null

        static func == (a: Value, b: Value) -> Bool {
            switch (a, b) {
            case (.object(let x), .object(let y)): return x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
            case (.array(let x), .array(let y)): return x == y
            case (.string(let x), .string(let y)): return x == y
            case (.number(let x), .number(let y)): return x == y
            case (.bool(let x), .bool(let y)): return x == y
            case (.null, .null): return true
            default: return false
            }
        }

        var string: String? { if case .string(let s) = self { return s } else { return nil } }
        var isNull: Bool { if case .null = self { return true } else { return false } }
        /// An integer written without fraction or exponent, in Int64's range.
        var int: Int64? { if case .number(let text) = self { return Int64(text) } else { return nil } }
        /// nil for anything but a boolean or null; `.some(nil)` for null.
        var optionalBool: Bool?? {
            switch self {
            case .bool(let flag): return .some(flag)
            case .null: return .some(nil)
            default: return nil
            }
        }
        /// An object's fields when no key repeats.
        var uniqueFields: [(String, Value)]? {
            guard case .object(let fields) = self else { return nil }
            var keys: [String] = []
            for (key, _) in fields {
                guard !keys.contains(key) else { return nil }
                keys.append(key)
            }
            return fields
        }
    }

    struct Malformed: Error {}

    /// Deeper nesting than this is refused.
    static let maximumDepth = 16

    /// One JSON value with nothing but whitespace around it.
    static func parse(_ bytes: [UInt8]) throws(Malformed) -> Value {
        var reader = Reader(bytes: bytes)
        let value = try reader.value(depth: 0)
        reader.skipWhitespace()
        guard reader.index == bytes.count else { throw Malformed() }
        return value
    }

    struct Reader {
        let bytes: [UInt8]
        var index = 0

        mutating func skipWhitespace() {
            while index < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[index]) { index += 1 }
        }

        mutating func expect(_ literal: StaticString) throws(Malformed) {
            let text = UnsafeBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount)
            guard index + text.count <= bytes.count, bytes[index..<index + text.count].elementsEqual(text) else { throw Malformed() }
            index += text.count
        }

        mutating func value(depth: Int) throws(Malformed) -> Value {
            guard depth <= StrictJSON.maximumDepth else { throw Malformed() }
            skipWhitespace()
            guard index < bytes.count else { throw Malformed() }
            switch bytes[index] {
            case UInt8(ascii: "{"):
                index += 1
                var fields: [(String, Value)] = []
                skipWhitespace()
                if index < bytes.count, bytes[index] == UInt8(ascii: "}") { index += 1; return .object(fields) }
                while true {
                    skipWhitespace()
                    guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { throw Malformed() }
                    let key = try string()
                    skipWhitespace()
                    guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { throw Malformed() }
                    index += 1
                    fields.append((key, try value(depth: depth + 1)))
                    skipWhitespace()
                    guard index < bytes.count else { throw Malformed() }
                    if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
                    guard bytes[index] == UInt8(ascii: "}") else { throw Malformed() }
                    index += 1
                    return .object(fields)
                }
            case UInt8(ascii: "["):
                index += 1
                var items: [Value] = []
                skipWhitespace()
                if index < bytes.count, bytes[index] == UInt8(ascii: "]") { index += 1; return .array(items) }
                while true {
                    items.append(try value(depth: depth + 1))
                    skipWhitespace()
                    guard index < bytes.count else { throw Malformed() }
                    if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
                    guard bytes[index] == UInt8(ascii: "]") else { throw Malformed() }
                    index += 1
                    return .array(items)
                }
            case UInt8(ascii: "\""):
                return .string(try string())
            case UInt8(ascii: "t"):
                try expect("true")
                return .bool(true)
            case UInt8(ascii: "f"):
                try expect("false")
                return .bool(false)
            case UInt8(ascii: "n"):
                try expect("null")
                return .null
            default:
                return .number(try number())
            }
        }

        mutating func number() throws(Malformed) -> String {
            let start = index
            func digits() -> Int {
                let from = index
                while index < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) { index += 1 }
                return index - from
            }
            if index < bytes.count, bytes[index] == UInt8(ascii: "-") { index += 1 }
            guard index < bytes.count else { throw Malformed() }
            if bytes[index] == UInt8(ascii: "0") {
                index += 1
            } else {
                guard digits() > 0 else { throw Malformed() }
            }
            if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
                index += 1
                guard digits() > 0 else { throw Malformed() }
            }
            if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
                index += 1
                if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
                guard digits() > 0 else { throw Malformed() }
            }
            return String(decoding: bytes[start..<index], as: UTF8.self)
        }

        mutating func hexQuad() throws(Malformed) -> UInt32 {
            guard index + 4 <= bytes.count else { throw Malformed() }
            var value: UInt32 = 0
            for byte in bytes[index..<index + 4] {
                let digit: UInt8
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
                default: throw Malformed()
                }
                value = value << 4 | UInt32(digit)
            }
            index += 4
            return value
        }

        /// A string at `index` (which is at its opening quote).
        mutating func string() throws(Malformed) -> String {
            index += 1
            var out: [UInt8] = []
            while true {
                guard index < bytes.count else { throw Malformed() }
                let byte = bytes[index]
                index += 1
                switch byte {
                case UInt8(ascii: "\""):
                    guard let text = String(validating: out, as: UTF8.self) else { throw Malformed() }
                    return text
                case 0x00..<0x20:
                    throw Malformed()
                case UInt8(ascii: "\\"):
                    guard index < bytes.count else { throw Malformed() }
                    let escape = bytes[index]
                    index += 1
                    switch escape {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(escape)
                    case UInt8(ascii: "b"): out.append(0x08)
                    case UInt8(ascii: "f"): out.append(0x0C)
                    case UInt8(ascii: "n"): out.append(0x0A)
                    case UInt8(ascii: "r"): out.append(0x0D)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "u"):
                        var scalar = try hexQuad()
                        if (0xD800...0xDBFF).contains(scalar) {
                            guard index + 2 <= bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else { throw Malformed() }
                            index += 2
                            let low = try hexQuad()
                            guard (0xDC00...0xDFFF).contains(low) else { throw Malformed() }
                            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        }
                        guard let unicode = Unicode.Scalar(scalar) else { throw Malformed() } // lone low surrogate
                        out += Array(String(Character(unicode)).utf8)
                    default:
                        throw Malformed()
                    }
                default:
                    out.append(byte)
                }
            }
        }
    }
}
