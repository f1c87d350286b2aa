import Foundation
import Logging
import VaultCore

/// Sends VaultCore's swift-log trace to stderr as `vault: trace: …` lines when
/// `--verbose` (anywhere before `--`) or `VAULT_VERBOSE=1` asks for it.
enum TraceOutput {
    static func bootstrap(arguments: [String]) {
        let beforeTerminator = arguments.prefix { $0 != "--" }
        let verbose = beforeTerminator.contains("--verbose") || verboseFromEnvironment
        _ = TraceHandler.start
        Trace.isEnabled = verbose
        LoggingSystem.bootstrap { _ in TraceHandler(logLevel: verbose ? .debug : .critical) }
    }

    /// `VAULT_VERBOSE=1` (or `true`, `yes`).
    static var verboseFromEnvironment: Bool {
        LocalEnvironment.isOn("VAULT_VERBOSE")
    }
}

struct TraceHandler: LogHandler {
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// Milliseconds since the process started (CLOCK_MONOTONIC against the process's
    /// start time from /proc would be exact; the first trace call is close enough).
    static let start = ContinuousClock.now

    func log(event: LogEvent) {
        let elapsed = ContinuousClock.now - Self.start
        let ms = Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15
        let text = "vault: trace: [\(String(format: "%.1f", ms)) ms] \(event.message.description.sanitisedForDisplay(limit: 1000))\n"
        Output.write(2, text)
    }
}
