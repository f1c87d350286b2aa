import CProcess
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The result of running a built executable.
public struct ProcessResult: Sendable {
    public var status: Int32
    public var stdout: Data
    public var stderr: Data
    public var stdoutText: String { String(decoding: stdout, as: UTF8.self) }
    public var stderrText: String { String(decoding: stderr, as: UTF8.self) }
}

/// Locates and runs the package's built executables in real processes.
public enum Binaries {
    /// The folder holding the built `vault` and `gbg-auth-stub` (env `VAULT_TEST_BIN_DIR`
    /// overrides; otherwise the folder of the running test bundle).
    public static let directory: String = {
        if let dir = ProcessInfo.processInfo.environment["VAULT_TEST_BIN_DIR"] { return dir }
        var candidates: [String] = []
        if let exe = Bundle.main.executablePath { candidates.append((exe as NSString).deletingLastPathComponent) }
        candidates.append(Bundle.main.bundlePath)
        candidates.append(((CommandLine.arguments.first ?? "") as NSString).deletingLastPathComponent)
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        candidates.append(root.appendingPathComponent(".build/debug").path)
        for candidate in candidates {
            var dir = candidate
            for _ in 0..<4 {
                if FileManager.default.isExecutableFile(atPath: dir + "/vault") { return dir }
                dir = (dir as NSString).deletingLastPathComponent
            }
        }
        return root.appendingPathComponent(".build/debug").path
    }()

    public static var vault: String { directory + "/vault" }
    public static var stub: String { directory + "/gbg-auth-stub" }

    /// Runs `executable` with `arguments` in a new session (no controlling terminal),
    /// feeding `stdin`, killing it after `timeout` seconds.
    public static func run(_ executable: String, _ arguments: [String], environment: [String: String],
                           stdin: Data? = nil, timeout: TimeInterval = 60) throws -> ProcessResult {
        let child = try ChildProcess(executable, arguments, environment: environment)
        if let stdin { child.writeStdin(stdin) }
        child.closeStdin()
        let out = OutputCollector(child.stdoutFD)
        let err = OutputCollector(child.stderrFD)
        guard let status = child.wait(timeout: timeout) else {
            child.kill(SIGKILL)
            _ = child.wait(timeout: 10)
            _ = out.finish(); _ = err.finish()
            throw HarnessError.timedOut("\((executable as NSString).lastPathComponent) \(arguments.prefix(2).joined(separator: " "))")
        }
        return ProcessResult(status: status, stdout: out.finish(), stderr: err.finish())
    }
}

/// A child process started with posix_spawn in its own session, with piped stdio.
public final class ChildProcess: @unchecked Sendable {
    public let pid: pid_t
    let stdinFD: Int32
    let stdoutFD: Int32
    public var stdoutDescriptor: Int32 { stdoutFD }
    let stderrFD: Int32
    public var stderrDescriptor: Int32 { stderrFD }
    private var exitStatus: Int32?

    /// The sanitizers' settings of `scripts/sanitize.sh`, which every child gets too (a
    /// sanitized `vault` writes its reports where the script looks for them).
    static let sanitizerVariables = ["ASAN_OPTIONS", "UBSAN_OPTIONS", "TSAN_OPTIONS", "LSAN_OPTIONS"]

    public init(_ executable: String, _ arguments: [String], environment: [String: String]) throws {
        var environment = environment
        for name in Self.sanitizerVariables where environment[name] == nil {
            if let value = ProcessInfo.processInfo.environment[name] { environment[name] = value }
        }
        var inPipe: [Int32] = [0, 0], outPipe: [Int32] = [0, 0], errPipe: [Int32] = [0, 0]
        // O_CLOEXEC from the start: a process spawned meanwhile by another test thread must not
        // inherit these ends (it would hold a pipe open, and the reader would wait for it).
        guard cprocess_pipe_cloexec(&inPipe) == 0, cprocess_pipe_cloexec(&outPipe) == 0, cprocess_pipe_cloexec(&errPipe) == 0 else {
            throw HarnessError.spawnFailed("pipe")
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, inPipe[0], 0)
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
        for fd in inPipe + outPipe + errPipe { posix_spawn_file_actions_addclose(&actions, fd) }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // A new session, an empty signal mask and default dispositions: a child must not
        // inherit the calling thread's blocked signals (Dispatch threads block SIGTERM,
        // which left stubs deaf to `stop()` until its SIGKILL fallback).
        _ = cprocess_spawnattr_detached(&attributes)
        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { argv.forEach { free($0) }; envp.forEach { free($0) } }
        var pid: pid_t = 0
        var rc = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        // A binary just copied can be briefly "busy" while another thread's child still
        // holds the copy's write descriptor across fork: retry.
        for _ in 0..<100 where rc == ETXTBSY {
            usleep(20_000)
            rc = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        }
        close(inPipe[0]); close(outPipe[1]); close(errPipe[1])
        guard rc == 0 else {
            close(inPipe[1]); close(outPipe[0]); close(errPipe[0])
            throw HarnessError.spawnFailed("\(executable): \(String(cString: strerror(rc)))")
        }
        self.pid = pid
        stdinFD = inPipe[1]
        stdoutFD = outPipe[0]
        stderrFD = errPipe[0]
    }

    public func writeStdin(_ data: Data) {
        data.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = write(stdinFD, raw.baseAddress! + offset, raw.count - offset)
                if n <= 0 { if errno == EINTR { continue }; break }
                offset += n
            }
        }
    }

    public func closeStdin() { close(stdinFD) }

    public func kill(_ signal: Int32) { if exitStatus == nil { _ = Glibc.kill(pid, signal) } }

    /// The exit status (128 + signal when killed), or nil if still running after `timeout`.
    public func wait(timeout: TimeInterval) -> Int32? {
        if let exitStatus { return exitStatus }
        let deadline = Date().addingTimeInterval(timeout)
        var status: Int32 = 0
        while true {
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid {
                let code = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
                exitStatus = code
                return code
            }
            if r < 0, errno != EINTR { exitStatus = -1; return -1 }
            if Date() >= deadline { return nil }
            usleep(2000)
        }
    }
}

public enum HarnessError: Error, CustomStringConvertible {
    case timedOut(String)
    case stubDidNotStart(String)
    case spawnFailed(String)
    case commandFailed(String)
    public var description: String {
        switch self {
        case .commandFailed(let what): "a set-up command failed: \(what)"
        case .spawnFailed(let why): "could not start a process: \(why)"
        case .timedOut(let what): "timed out: \(what)"
        case .stubDidNotStart(let why): "gbg-auth-stub did not start: \(why)"
        }
    }
}

/// Drains a pipe on a background thread so a chatty child never blocks; what arrived so
/// far can be read while the child runs.
public final class OutputCollector: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    private let lock = NSLock()
    private var data = Data()

    public init(_ fd: Int32) {
        Thread.detachNewThread { [self] in
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = read(fd, &buffer, buffer.count)
                if n < 0, errno == EINTR { continue }
                if n <= 0 { break }
                lock.withLock { data.append(contentsOf: buffer[0..<n]) }
            }
            close(fd)
            done.signal()
        }
    }

    /// What has arrived so far, as text.
    public var text: String { lock.withLock { String(decoding: data, as: UTF8.self) } }

    /// Waits for the end of the stream and returns everything.
    public func finish() -> Data {
        done.wait()
        return lock.withLock { data }
    }
}

/// A `gbg-auth-stub` process on a free loopback port, stopped by `stop()` or on release.
public final class StubServer: @unchecked Sendable {
    public let port: Int
    public let child: ChildProcess
    public let scheme: String
    private var log: OutputCollector?
    private var scanned = false

    public var tokenURL: String { "\(scheme)://127.0.0.1:\(port)/as/token.oauth2" }
    public var apiBase: String { "\(scheme)://127.0.0.1:\(port)/v2/captain/" }

    /// Starts the stub with `accounts` and extra flags.
    public init(accounts: String, arguments: [String] = [], scheme: String = "http") throws {
        let child = try ChildProcess(Binaries.stub, ["--accounts", accounts, "--port", "0", "--exit-with-parent"] + arguments,
                                     environment: ["PATH": "/usr/bin:/bin"])
        child.closeStdin()
        // Read the first stdout line: `PORT <n>`.
        var line = [UInt8]()
        var byte: UInt8 = 0
        while read(child.stdoutFD, &byte, 1) == 1, byte != 0x0a { line.append(byte) }
        let text = String(decoding: line, as: UTF8.self)
        guard text.hasPrefix("PORT "), let port = Int(text.dropFirst(5)) else {
            child.kill(SIGKILL)
            _ = child.wait(timeout: 5)
            throw HarnessError.stubDidNotStart("first line was '\(text)'")
        }
        self.port = port
        self.child = child
        self.scheme = scheme
        _ = OutputCollector(child.stdoutFD)
        log = OutputCollector(child.stderrFD)
    }

    /// Token requests the stub has received, from GET /_stub/stats.
    public func tokenRequests() throws -> Int { try stat("token_requests") }

    /// Connections that carried at least one token request.
    public func tokenConnections() throws -> Int { try stat("token_connections") }

    private func stat(_ name: String) throws -> Int {
        let result = try Binaries.run("/usr/bin/curl", ["-sk", "\(scheme)://127.0.0.1:\(port)/_stub/stats"], environment: [:], timeout: 10)
        let object = try JSONSerialization.jsonObject(with: result.stdout) as? [String: Any]
        return object?[name] as? Int ?? -1
    }

    /// Sends SIGTERM, then SIGKILL if the stub is still there after 5 s, and reaps it.
    /// Its log (stderr) goes through the shared leak scanner: it must name no secret or token.
    public func stop() {
        child.kill(SIGTERM)
        if child.wait(timeout: 5) == nil {
            child.kill(SIGKILL)
            _ = child.wait(timeout: 5)
        }
        if !scanned, let log {
            scanned = true
            LeakScanner.shared.scan(log.finish(), artefact: "gbg-auth-stub log", includeTokens: true)
        }
    }

    deinit { stop() }
}
