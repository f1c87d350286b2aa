import Foundation
import Logging
import VaultCore

/// Sends VaultCore's swift-log trace to stderr as `vault: trace: …` lines when
/// `--verbose` (anywhere before `--`) or `VAULT_VERBOSE=1` asks for it.
enum TraceOutput {
    static func bootstrap(arguments: [String]) {
        let beforeTerminator = arguments.prefix { $0 != "--" }
        let env = ProcessInfo.processInfo.environment["VAULT_VERBOSE"] ?? ""
        let verbose = beforeTerminator.contains("--verbose") || ["1", "true", "yes"].contains(env.lowercased())
        LoggingSystem.bootstrap { _ in TraceHandler(logLevel: verbose ? .debug : .critical) }
    }
}

struct TraceHandler: LogHandler {
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let text = "vault: trace: \(event.message.description.sanitisedForDisplay(limit: 1000))\n"
        FileHandle.standardError.write(Data(text.utf8))
    }
}
