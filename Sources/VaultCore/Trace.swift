import Logging

/// The `--verbose` trace (swift-log): what vault does, step by step, for debugging a
/// connection, a lock or an upgrade. Metadata only: paths, formats, epochs, HTTP status
/// codes, timings and audit sequence numbers, never a secret, token or passphrase (the
/// end-to-end suite runs it through the leak scanner). Silent unless the command layer
/// bootstraps a handler.
public enum Trace {
    /// Set once, at start-up, by the command layer when it installs a handler that shows
    /// debug messages (`--verbose`). Until then nothing is traced and no logger is made:
    /// the short commands never set up swift-log at all.
    nonisolated(unsafe) public static var isEnabled = false

    public static let logger = Logger(label: "gbg-vault")

    public static func debug(_ message: @autoclosure () -> String) {
        guard isEnabled else { return }
        logger.debug("\(message())")
    }
}
