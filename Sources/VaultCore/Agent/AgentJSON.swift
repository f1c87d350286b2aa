/// The agent protocol's everyday messages read and written without `JSONDecoder` and
/// `JSONEncoder`: the client's token, status, error and message answers, the agent's
/// reading of requests, and the agent's writing of token, error and message answers.
///
/// Why: a `vault token` through the agent is one short process, and `JSONDecoder`'s first
/// use in this binary (generic metadata instantiated from mangled names, protocol
/// conformance scans over ~11,000 records) cost 0.9 ms of CPU, about a sixth of the whole
/// command; in the agent, the two coders were ~8 % of the CPU of a cache hit
/// (BENCHMARKS.md, "Fast start"). Foundation has no cheaper JSON reader
/// (`JSONSerialization` measured the same).
///
/// How it stays safe: the reader is a strict RFC 8259 reader (no trailing commas, no
/// comments, no raw control characters in strings, valid UTF-8 only, `\u` escapes with
/// surrogate pairs checked, integers only where an integer is expected, no repeated
/// keys). It reads only the fields it knows, each as the type it expects, straight into
/// the message (no tree of values, whose generic types the runtime would first have to set
/// up). It accepts a strict subset of what `JSONDecoder` accepts: anything else — a status
/// with a field it does not know, a verification, a number with a fraction, a type it does
/// not expect, a key of a newer version — returns nil and the caller decodes with
/// `JSONDecoder`, so a message is never read differently, only sometimes read faster.
/// Tests decode thousands of generated and mutated messages both ways and compare, and
/// decode what the writer writes with `JSONDecoder`.
enum StrictJSON {
    /// Not JSON, or not a shape the strict reader takes (the caller then falls back).
    struct Malformed: Error {}

    /// Reads one message front to back, field by field.
    struct Reader {
        let bytes: [UInt8]
        var index = 0

        init(bytes: [UInt8]) { self.bytes = bytes }

        mutating func skipWhitespace() {
            while index < bytes.count {
                switch bytes[index] {
                case 0x20, 0x09, 0x0A, 0x0D: index += 1
                default: return
                }
            }
        }

        /// Nothing but whitespace is left.
        mutating func finish() throws(Malformed) {
            skipWhitespace()
            guard index == bytes.count else { throw Malformed() }
        }

        private mutating func expect(_ literal: StaticString) throws(Malformed) {
            let text = UnsafeBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount)
            guard index + text.count <= bytes.count, bytes[index..<index + text.count].elementsEqual(text) else { throw Malformed() }
            index += text.count
        }

        private mutating func peek() throws(Malformed) -> UInt8 {
            skipWhitespace()
            guard index < bytes.count else { throw Malformed() }
            return bytes[index]
        }

        /// An object: `field` is called with each key, the reader at its value, and must
        /// read that value. A key that repeats is refused.
        mutating func object(_ field: (inout Reader, String) throws(Malformed) -> Void) throws(Malformed) {
            guard try peek() == UInt8(ascii: "{") else { throw Malformed() }
            index += 1
            if try peek() == UInt8(ascii: "}") {
                index += 1
                return
            }
            var keys: [String] = []
            while true {
                guard try peek() == UInt8(ascii: "\"") else { throw Malformed() }
                let key = try stringAtQuote()
                guard !keys.contains(key) else { throw Malformed() }
                keys.append(key)
                guard try peek() == UInt8(ascii: ":") else { throw Malformed() }
                index += 1
                try field(&self, key)
                let next = try peek()
                index += 1
                if next == UInt8(ascii: ",") { continue }
                guard next == UInt8(ascii: "}") else { throw Malformed() }
                return
            }
        }

        /// An array: `element` is called with the reader at each element, and must read it.
        mutating func array(_ element: (inout Reader) throws(Malformed) -> Void) throws(Malformed) {
            guard try peek() == UInt8(ascii: "[") else { throw Malformed() }
            index += 1
            if try peek() == UInt8(ascii: "]") {
                index += 1
                return
            }
            while true {
                try element(&self)
                let next = try peek()
                index += 1
                if next == UInt8(ascii: ",") { continue }
                guard next == UInt8(ascii: "]") else { throw Malformed() }
                return
            }
        }

        /// `null` (read), or false with nothing read.
        mutating func null() throws(Malformed) -> Bool {
            guard try peek() == UInt8(ascii: "n") else { return false }
            try expect("null")
            return true
        }

        mutating func string() throws(Malformed) -> String {
            guard try peek() == UInt8(ascii: "\"") else { throw Malformed() }
            return try stringAtQuote()
        }

        mutating func optionalString() throws(Malformed) -> String? {
            try null() ? nil : try string()
        }

        mutating func bool() throws(Malformed) -> Bool {
            switch try peek() {
            case UInt8(ascii: "t"):
                try expect("true")
                return true
            case UInt8(ascii: "f"):
                try expect("false")
                return false
            default:
                throw Malformed()
            }
        }

        mutating func optionalBool() throws(Malformed) -> Bool? {
            try null() ? nil : try bool()
        }

        /// An integer written without fraction or exponent, in Int64's range.
        mutating func int64() throws(Malformed) -> Int64 {
            guard let value = Int64(try number()) else { throw Malformed() }
            return value
        }

        mutating func optionalInt64() throws(Malformed) -> Int64? {
            try null() ? nil : try int64()
        }

        /// An integer written without fraction or exponent, in UInt64's range.
        mutating func uint64() throws(Malformed) -> UInt64 {
            guard let value = UInt64(try number()) else { throw Malformed() }
            return value
        }

        /// A number's text as written (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`).
        mutating func number() throws(Malformed) -> String {
            _ = try peek()
            let start = index
            func digits() -> Int {
                let from = index
                while index < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) { index += 1 }
                return index - from
            }
            if bytes[index] == UInt8(ascii: "-") { index += 1 }
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

        private mutating func hexQuad() throws(Malformed) -> UInt32 {
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
        private mutating func stringAtQuote() throws(Malformed) -> String {
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

// MARK: - Answers, read by the client

extension AgentResponse {
    /// The answer, if it is one of the everyday shapes; nil means "use JSONDecoder".
    static func decodeEveryday(_ bytes: [UInt8]) -> AgentResponse? {
        var reader = StrictJSON.Reader(bytes: bytes)
        do {
            var response = AgentResponse(ok: false)
            var version: Int?, ok: Bool?
            try reader.object { (reader, key) throws(StrictJSON.Malformed) in
                switch key {
                case CodingKeys.version.rawValue:
                    guard let value = Int(exactly: try reader.int64()) else { throw StrictJSON.Malformed() }
                    version = value
                case CodingKeys.ok.rawValue: ok = try reader.bool()
                case CodingKeys.message.rawValue: response.message = try reader.optionalString()
                case CodingKeys.ending.rawValue: response.ending = try reader.optionalBool()
                case CodingKeys.otherFile.rawValue: response.otherFile = try reader.optionalBool()
                case CodingKeys.error.rawValue: if !(try reader.null()) { response.error = try Failure(everyday: &reader) }
                case CodingKeys.token.rawValue: if !(try reader.null()) { response.token = try Token(everyday: &reader) }
                case CodingKeys.status.rawValue: if !(try reader.null()) { response.status = try Status(everyday: &reader) }
                default: throw StrictJSON.Malformed() // verification, audit, or a key of a newer agent
                }
            }
            try reader.finish()
            guard let version, let ok else { return nil }
            response.version = version
            response.ok = ok
            return response
        } catch {
            return nil
        }
    }
}

extension AgentResponse.Failure {
    init(everyday reader: inout StrictJSON.Reader) throws(StrictJSON.Malformed) {
        var exitCode: Int32?, message: String?, hint: String?
        try reader.object { (reader, key) throws(StrictJSON.Malformed) in
            switch key {
            case CodingKeys.exitCode.rawValue:
                guard let value = Int32(exactly: try reader.int64()) else { throw StrictJSON.Malformed() }
                exitCode = value
            case CodingKeys.message.rawValue: message = try reader.string()
            case CodingKeys.hint.rawValue: hint = try reader.optionalString()
            default: throw StrictJSON.Malformed()
            }
        }
        guard let exitCode, let message else { throw StrictJSON.Malformed() }
        self.init(exitCode: exitCode, message: message, hint: hint)
    }
}

extension AgentResponse.Token {
    init(everyday reader: inout StrictJSON.Reader) throws(StrictJSON.Malformed) {
        var accessToken: String?, tokenType: String?, environment: String?, apiBase: String?
        var expiresAt: Int64?, expiresIn: Int64?, fromCache: Bool?
        try reader.object { (reader, key) throws(StrictJSON.Malformed) in
            switch key {
            case CodingKeys.accessToken.rawValue: accessToken = try reader.string()
            case CodingKeys.tokenType.rawValue: tokenType = try reader.string()
            case CodingKeys.environment.rawValue: environment = try reader.string()
            case CodingKeys.apiBase.rawValue: apiBase = try reader.optionalString()
            case CodingKeys.expiresAt.rawValue: expiresAt = try reader.int64()
            case CodingKeys.expiresIn.rawValue: expiresIn = try reader.int64()
            case CodingKeys.fromCache.rawValue: fromCache = try reader.bool()
            default: throw StrictJSON.Malformed()
            }
        }
        guard let accessToken, let tokenType, let environment, let expiresAt, let expiresIn, let fromCache else { throw StrictJSON.Malformed() }
        self.init(accessToken: accessToken, tokenType: tokenType, expiresAt: expiresAt, expiresIn: expiresIn,
                  environment: environment, apiBase: apiBase, fromCache: fromCache)
    }
}

extension AgentResponse.Status {
    init(everyday reader: inout StrictJSON.Reader) throws(StrictJSON.Malformed) {
        var pid: Int32?, vault: String?, vaultID: String?
        var unlockedAt: Int64?, expiresAt: Int64?, idleSeconds: Int64?, idleExpiresAt: Int64?, requests: Int64?
        var keepFresh: [AgentResponse.FreshEntry]?
        try reader.object { (reader, key) throws(StrictJSON.Malformed) in
            switch key {
            case CodingKeys.pid.rawValue:
                guard let value = Int32(exactly: try reader.int64()) else { throw StrictJSON.Malformed() }
                pid = value
            case CodingKeys.vault.rawValue: vault = try reader.string()
            case CodingKeys.vaultID.rawValue: vaultID = try reader.string()
            case CodingKeys.unlockedAt.rawValue: unlockedAt = try reader.int64()
            case CodingKeys.expiresAt.rawValue: expiresAt = try reader.int64()
            case CodingKeys.idleSeconds.rawValue: idleSeconds = try reader.int64()
            case CodingKeys.idleExpiresAt.rawValue: idleExpiresAt = try reader.int64()
            case CodingKeys.requests.rawValue: requests = try reader.int64()
            case CodingKeys.keepFresh.rawValue:
                if try reader.null() {
                    keepFresh = nil
                    return
                }
                var entries: [AgentResponse.FreshEntry] = []
                try reader.array { (reader) throws(StrictJSON.Malformed) in entries.append(try AgentResponse.FreshEntry(everyday: &reader)) }
                keepFresh = entries
            default: throw StrictJSON.Malformed()
            }
        }
        guard let pid, let vault, let vaultID, let unlockedAt, let expiresAt, let idleSeconds, let idleExpiresAt, let requests
        else { throw StrictJSON.Malformed() }
        self.init(pid: pid, vault: vault, vaultID: vaultID, unlockedAt: unlockedAt, expiresAt: expiresAt, idleSeconds: idleSeconds,
                  idleExpiresAt: idleExpiresAt, requests: requests, keepFresh: keepFresh)
    }
}

extension AgentResponse.FreshEntry {
    init(everyday reader: inout StrictJSON.Reader) throws(StrictJSON.Malformed) {
        var profile: String?, environment: String?, lastError: String?
        var expiresAt: Int64?, nextRefreshAt: Int64?, refreshes: Int?, failures: Int?
        try reader.object { (reader, key) throws(StrictJSON.Malformed) in
            switch key {
            case CodingKeys.profile.rawValue: profile = try reader.string()
            case CodingKeys.environment.rawValue: environment = try reader.optionalString()
            case CodingKeys.lastError.rawValue: lastError = try reader.optionalString()
            case CodingKeys.expiresAt.rawValue: expiresAt = try reader.optionalInt64()
            case CodingKeys.nextRefreshAt.rawValue: nextRefreshAt = try reader.int64()
            case CodingKeys.refreshes.rawValue:
                guard let value = Int(exactly: try reader.int64()) else { throw StrictJSON.Malformed() }
                refreshes = value
            case CodingKeys.failures.rawValue:
                guard let value = Int(exactly: try reader.int64()) else { throw StrictJSON.Malformed() }
                failures = value
            default: throw StrictJSON.Malformed()
            }
        }
        guard let profile, let nextRefreshAt, let refreshes, let failures else { throw StrictJSON.Malformed() }
        self.init(profile: profile, environment: environment, expiresAt: expiresAt, nextRefreshAt: nextRefreshAt,
                  refreshes: refreshes, failures: failures, lastError: lastError)
    }
}

// MARK: - Requests, read by the agent

extension AgentRequest {
    /// The request, if the strict reader takes it (every field this version knows, each
    /// as its type, or null); nil means "use JSONDecoder" (which also ignores keys it does
    /// not know, as a newer client's).
    static func decodeStrict(_ bytes: [UInt8]) -> AgentRequest? {
        var reader = StrictJSON.Reader(bytes: bytes)
        do {
            var request = AgentRequest(op: "")
            var version: Int?, op: String?
            try reader.object { (reader, key) throws(StrictJSON.Malformed) in
                guard let field = CodingKeys(rawValue: key) else { throw StrictJSON.Malformed() }
                switch field {
                case .version:
                    guard let value = Int(exactly: try reader.int64()) else { throw StrictJSON.Malformed() }
                    version = value
                case .op: op = try reader.string()
                case .profile: request.profile = try reader.optionalString()
                case .environment: request.environment = try reader.optionalString()
                case .fresh: request.fresh = try reader.optionalBool()
                case .minTTL: request.minTTL = try reader.optionalInt64()
                case .action: request.action = try reader.optionalString()
                case .timeoutMs: request.timeoutMs = try reader.optionalInt64()
                case .connectTimeoutMs: request.connectTimeoutMs = try reader.optionalInt64()
                case .caBundle: request.caBundle = try reader.optionalString()
                case .proxyEnvironment:
                    if try reader.null() {
                        request.proxyEnvironment = nil
                        return
                    }
                    var keys: [String] = [], values: [String] = []
                    try reader.object { (reader, name) throws(StrictJSON.Malformed) in
                        keys.append(name)
                        values.append(try reader.string())
                    }
                    var proxies: [String: String] = [:]
                    for (name, value) in zip(keys, values) { proxies[name] = value }
                    request.proxyEnvironment = proxies
                case .clientID: request.clientID = try reader.optionalString()
                case .username: request.username = try reader.optionalString()
                case .grant: request.grant = try reader.optionalString()
                case .scope: request.scope = try reader.optionalString()
                case .clientSecret: request.clientSecret = try reader.optionalString()
                case .password: request.password = try reader.optionalString()
                case .verify: request.verify = try reader.optionalBool()
                case .tokenURL: request.tokenURL = try reader.optionalString()
                case .apiBase: request.apiBase = try reader.optionalString()
                case .clearAPIBase: request.clearAPIBase = try reader.optionalBool()
                case .fileDevice: request.fileDevice = try reader.null() ? nil : try reader.uint64()
                case .fileInode: request.fileInode = try reader.null() ? nil : try reader.uint64()
                case .store: request.store = try reader.optionalString()
                case .member: request.member = try reader.optionalString()
                case .recipient: request.recipient = try reader.optionalString()
                case .reply: request.reply = try reader.optionalString()
                }
            }
            try reader.finish()
            guard let version, let op else { return nil }
            request.version = version
            request.op = op
            return request
        } catch {
            return nil
        }
    }
}

// MARK: - Answers, written by the agent

extension AgentResponse {
    /// The answer as the JSON object `JSONEncoder` makes of it (same keys, absent optionals
    /// left out) when it is one of the everyday shapes (a token, an error, a message);
    /// nil for anything else (a status, a verification), which `JSONEncoder` writes.
    func everydayJSONBytes() -> [UInt8]? {
        guard status == nil, verification == nil, audit == nil else { return nil }
        var writer = JSONObjectWriter()
        writer.add(CodingKeys.version.rawValue, Int64(version))
        writer.add(CodingKeys.ok.rawValue, ok)
        writer.add(CodingKeys.message.rawValue, message)
        writer.add(CodingKeys.ending.rawValue, ending)
        writer.add(CodingKeys.otherFile.rawValue, otherFile)
        if let error {
            var inner = JSONObjectWriter()
            inner.add(Failure.CodingKeys.exitCode.rawValue, Int64(error.exitCode))
            inner.add(Failure.CodingKeys.message.rawValue, error.message)
            inner.add(Failure.CodingKeys.hint.rawValue, error.hint)
            writer.add(CodingKeys.error.rawValue, object: inner)
        }
        if let token {
            var inner = JSONObjectWriter()
            inner.add(Token.CodingKeys.accessToken.rawValue, token.accessToken)
            inner.add(Token.CodingKeys.tokenType.rawValue, token.tokenType)
            inner.add(Token.CodingKeys.expiresAt.rawValue, token.expiresAt)
            inner.add(Token.CodingKeys.expiresIn.rawValue, token.expiresIn)
            inner.add(Token.CodingKeys.environment.rawValue, token.environment)
            inner.add(Token.CodingKeys.apiBase.rawValue, token.apiBase)
            inner.add(Token.CodingKeys.fromCache.rawValue, token.fromCache)
            writer.add(CodingKeys.token.rawValue, object: inner)
        }
        return writer.finish()
    }
}
