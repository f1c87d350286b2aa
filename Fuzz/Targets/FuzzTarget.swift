import Foundation
import VaultCore

/// One fuzz target: a parser of untrusted bytes and the properties checked on each input
/// (Fuzz/README.md). `check` returns nil when every property holds, else what failed;
/// `vault-fuzz` turns that into a crash libFuzzer records, and the suite into a failed
/// expectation for each committed input. (Async because `vault serve`'s endpoint answers
/// on a task; the others are synchronous functions.)
public struct FuzzTarget: Sendable {
    public let name: String
    public let check: @Sendable ([UInt8]) async -> String?

    public static let all: [FuzzTarget] = [
        FuzzTarget(name: "agent-frames", check: AgentFrames.check),
        FuzzTarget(name: "agent-request-writer", check: AgentRequestWriter.check),
        FuzzTarget(name: "agent-answer", check: AgentAnswers.check),
        FuzzTarget(name: "token-response", check: TokenResponses.check),
        FuzzTarget(name: "recipient", check: Recipients.check),
        FuzzTarget(name: "identity-file", check: IdentityFiles.check),
        FuzzTarget(name: "postgres-url", check: PostgresURLs.check),
        FuzzTarget(name: "postgres-url-parts", check: PostgresURLParts.check),
        FuzzTarget(name: "pgpass", check: PasswordFiles.check),
        FuzzTarget(name: "vault-file", check: VaultFiles.check),
        FuzzTarget(name: "serve-request", check: ServeRequests.check),
        FuzzTarget(name: "proxy-path", check: ProxyPaths.check),
        FuzzTarget(name: "request-log", check: RequestLogs.check),
    ]

    public static func named(_ name: String) -> FuzzTarget? { all.first { $0.name == name } }
}

/// Takes typed values off the front of a fuzz input; past its end, zeros and empty strings.
struct FuzzReader {
    private var bytes: ArraySlice<UInt8>

    init(_ bytes: [UInt8]) { self.bytes = bytes[...] }

    var isAtEnd: Bool { bytes.isEmpty }

    mutating func byte() -> UInt8 { bytes.popFirst() ?? 0 }

    mutating func bool() -> Bool { byte() & 1 == 1 }

    mutating func int64() -> Int64 {
        var value: UInt64 = 0
        for _ in 0..<8 { value = value << 8 | UInt64(byte()) }
        return Int64(bitPattern: value)
    }

    /// Up to `limit` bytes: a length byte, then that many bytes.
    mutating func chunk(limit: Int = 255) -> [UInt8] {
        let count = min(Int(byte()), limit, bytes.count)
        defer { bytes = bytes.dropFirst(count) }
        return Array(bytes.prefix(count))
    }

    /// What is left.
    mutating func rest() -> [UInt8] {
        defer { bytes = [] }
        return Array(bytes)
    }
}

/// Whether text is safe to show at a terminal or in a log line: no control, format (the
/// bidirectional overrides among them), line or paragraph separator characters.
func isDisplaySafe(_ text: String) -> Bool {
    !text.unicodeScalars.contains { scalar in
        [.control, .format, .lineSeparator, .paragraphSeparator].contains(scalar.properties.generalCategory)
    }
}

/// The properties every refusal must have: an exit code of the documented list and a
/// message (and hint) safe to show.
func checkRefusal(_ error: VaultError, allowed: Set<Int32>) -> String? {
    guard allowed.contains(error.exitCode) else { return "exit \(error.exitCode) is not one of \(allowed.sorted())" }
    guard isDisplaySafe(error.message), isDisplaySafe(error.hint ?? "") else { return "an unsafe message: \(error.message.debugDescription)" }
    return nil
}

/// A private scratch directory for the targets that read files, made once per process.
enum Scratch {
    static let directory: String = {
        var template = Array((NSTemporaryDirectory() + "/vault-fuzz-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else { fatalError("vault-fuzz: cannot make a scratch directory") }
        // Each file is removed after its input; the directory goes at exit.
        atexit { rmdir(Scratch.directory) }
        return String(cString: made)
    }()

    /// Argon2id at the test-only settings (debug builds only), for seeds made with them.
    static func enableTestOnlyKDF() {
        setenv("GBG_VAULT_TEST_ONLY_INSECURE_KDF", "1", 1)
    }

    /// Writes `bytes` to a new 0600 file in the scratch directory and returns its path (a
    /// name of its own each time: the suite runs targets on several threads at once).
    static func file(_ name: String, _ bytes: [UInt8]) -> String {
        let path = directory + "/" + name + "-" + UUID().uuidString
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        precondition(fd >= 0, "vault-fuzz: cannot write \(path)")
        var written = 0
        while written < bytes.count {
            let n = bytes[written...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            precondition(n > 0, "vault-fuzz: cannot write \(path)")
            written += n
        }
        close(fd)
        return path
    }
}
