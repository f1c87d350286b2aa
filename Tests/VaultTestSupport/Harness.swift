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
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/setsid")
        process.arguments = ["--wait", executable] + arguments
        process.environment = environment
        let out = Pipe(), err = Pipe(), input = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = input
        try process.run()
        if let stdin { try? input.fileHandleForWriting.write(contentsOf: stdin) }
        try? input.fileHandleForWriting.close()
        let outData = OutputCollector(out.fileHandleForReading)
        let errData = OutputCollector(err.fileHandleForReading)
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning, Date() < deadline { usleep(2000) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            while process.isRunning { usleep(2000) }
            throw HarnessError.timedOut("\((executable as NSString).lastPathComponent) \(arguments.prefix(2).joined(separator: " "))")
        }
        return ProcessResult(status: process.terminationStatus, stdout: outData.finish(), stderr: errData.finish())
    }
}

public enum HarnessError: Error, CustomStringConvertible {
    case timedOut(String)
    case stubDidNotStart(String)
    public var description: String {
        switch self {
        case .timedOut(let what): "timed out: \(what)"
        case .stubDidNotStart(let why): "gbg-auth-stub did not start: \(why)"
        }
    }
}

/// Drains a pipe on a background thread so a chatty child never blocks.
final class OutputCollector: @unchecked Sendable {
    private let handle: FileHandle
    private let done = DispatchSemaphore(value: 0)
    private var data = Data()

    init(_ handle: FileHandle) {
        self.handle = handle
        Thread.detachNewThread { [self] in
            data = handle.readDataToEndOfFile()
            done.signal()
        }
    }

    func finish() -> Data {
        done.wait()
        return data
    }
}

/// A `gbg-auth-stub` process on a free loopback port, stopped by `stop()` or on release.
public final class StubServer: @unchecked Sendable {
    public let port: Int
    public let process: Process
    public let scheme: String
    private let errorLog: Pipe

    public var tokenURL: String { "\(scheme)://127.0.0.1:\(port)/as/token.oauth2" }
    public var apiBase: String { "\(scheme)://127.0.0.1:\(port)/v2/captain/" }

    /// Starts the stub with `accounts` and extra flags.
    public init(accounts: String, arguments: [String] = [], scheme: String = "http") throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Binaries.stub)
        process.arguments = ["--accounts", accounts, "--port", "0"] + arguments
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Read the first stdout line: `PORT <n>`.
        var line = Data()
        let handle = out.fileHandleForReading
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            let byte = handle.readData(ofLength: 1)
            if byte.isEmpty { break }
            if byte == Data([0x0a]) { break }
            line += byte
        }
        let text = String(decoding: line, as: UTF8.self)
        guard text.hasPrefix("PORT "), let port = Int(text.dropFirst(5)) else {
            process.terminate()
            throw HarnessError.stubDidNotStart("first line was '\(text)'")
        }
        self.port = port
        self.process = process
        self.scheme = scheme
        self.errorLog = err
        Thread.detachNewThread { _ = err.fileHandleForReading.readDataToEndOfFile() }
    }

    /// Token requests the stub has received, from GET /_stub/stats.
    public func tokenRequests() throws -> Int {
        let result = try Binaries.run("/usr/bin/curl", ["-sk", "\(scheme)://127.0.0.1:\(port)/_stub/stats"], environment: [:], timeout: 10)
        let object = try JSONSerialization.jsonObject(with: result.stdout) as? [String: Any]
        return object?["token_requests"] as? Int ?? -1
    }

    /// Sends SIGTERM, then SIGKILL if the stub is still there after 5 s, and waits for it.
    public func stop() {
        let pid = process.processIdentifier
        guard process.isRunning else { return }
        kill(pid, SIGTERM)
        let deadline = Date().addingTimeInterval(5)
        while process.isRunning, Date() < deadline { usleep(5000) }
        if process.isRunning { kill(pid, SIGKILL) }
        while process.isRunning { usleep(5000) }
    }

    deinit { stop() }
}
