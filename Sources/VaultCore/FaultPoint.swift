import Foundation
import GRDB
#if canImport(Glibc)
import Glibc
#endif

/// Named points in the write paths where a test build can be told to fail, so that each
/// point's outcome is covered on every run instead of by a random kill (RELIABILITY.md,
/// "Fault points"). Armed by `GBG_VAULT_TEST_FAULT=NAME:ACTION` — `kill` (SIGKILL, as a
/// crash or a power cut there would end the process) or `ioerror` (the store answers with
/// an input/output error there). Release builds compile the check out: the variable means
/// nothing to them (a test runs the release binary with it armed).
enum FaultPoint {
    /// The upgrade of a format-2 vault to format 3 (FORMAT.md §9.1) begins, inside its
    /// transaction: after the format-1 to format-2 step of the same upgrade committed.
    static let upgradeFormat3Begins = "upgrade-format3-begins"

    /// Stops here when this point is armed (test builds only).
    @inline(__always)
    static func reached(_ name: String) throws {
        #if DEBUG
        guard let armed = armed, armed.name == name else { return }
        switch armed.action {
        case "kill":
            kill(getpid(), SIGKILL)
        case "ioerror":
            throw DatabaseError(resultCode: .SQLITE_IOERR, message: "disk I/O error (test fault point \(name))")
        default:
            return
        }
        #endif
    }

    #if DEBUG
    private static let armed: (name: String, action: String)? = {
        guard let value = LocalEnvironment.value("GBG_VAULT_TEST_FAULT"), let colon = value.lastIndex(of: ":") else { return nil }
        return (String(value[..<colon]), String(value[value.index(after: colon)...]))
    }()
    #endif
}
