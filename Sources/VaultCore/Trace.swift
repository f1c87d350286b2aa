import Logging

/// The `--verbose` trace (swift-log): what vault does, step by step, for debugging a
/// connection, a lock or an upgrade. Metadata only: paths, formats, epochs, HTTP status
/// codes, timings and audit sequence numbers, never a secret, token or passphrase (the
/// end-to-end suite runs it through the leak scanner). Silent unless the command layer
/// bootstraps a handler.
public enum Trace {
    public static let logger = Logger(label: "gbg-vault")

    public static func debug(_ message: @autoclosure () -> String) {
        logger.debug("\(message())")
    }
}
