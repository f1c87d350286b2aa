import Foundation
import GRDB
import NIOConcurrencyHelpers
#if canImport(Glibc)
import Glibc
#endif

/// Named points in the write paths where a test build can be told to fail, so that each
/// point's outcome is covered on every run instead of by a random kill (RELIABILITY.md,
/// "Fault points"). Armed by `GBG_VAULT_TEST_FAULT=NAME:ACTION[:N]` — `kill` (SIGKILL, as a
/// crash or a power cut there would end the process) or `ioerror` (the store answers with
/// an input/output error there), at the point's `N`th hit in the process (default 1).
/// Release builds compile the check out: the variable means nothing to them (a test runs
/// the release binary with it armed).
enum FaultPoint {
    /// Inside a write transaction (both stores), once it holds the writer lock and its
    /// schema check passed, before the operation's first statement.
    static let writeBegins = "write-begins"
    /// Inside a write transaction, after the operation's last statement, before `COMMIT`.
    static let writeCommits = "write-commits"
    /// After a write transaction's `COMMIT` returned, before anything else (the reply, the
    /// token, the next transaction).
    static let writeCommitted = "write-committed"
    /// Before each statement an operation runs on a store (reads included), in any
    /// transaction: with `:N`, the Nth statement of the process.
    static let statement = "statement"
    /// The upgrade of a format-2 vault to format 3 (FORMAT.md §9.2) begins, inside its
    /// transaction: after the format-1 to format-2 step of the same upgrade committed.
    static let upgradeFormat3Begins = "upgrade-format3-begins"
    /// The upgrade of a format-3 vault to format 4 (FORMAT.md §9.1) begins, inside its
    /// transaction (after any earlier step of the same upgrade committed).
    static let upgradeFormat4Begins = "upgrade-format4-begins"

    /// `vault copy`: after each table's rows went into the destination, inside the
    /// transaction that builds it (`:N`: after the Nth table).
    static let copyTable = "copy-table"

    /// The agent, before it writes an answer (after the operation's commit, if any).
    static let agentAnswers = "agent-answers"

    /// Stops here when this point is armed (test builds only).
    @inline(__always)
    static func reached(_ name: String) throws {
        #if DEBUG
        guard let armed, armed.name == name else { return }
        let hit = hits.withLockedValue { count -> Int in
            count += 1
            return count
        }
        guard hit == armed.hit else { return }
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
    private static let armed: (name: String, action: String, hit: Int)? = {
        guard let value = LocalEnvironment.value("GBG_VAULT_TEST_FAULT") else { return nil }
        let parts = value.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 2 || parts.count == 3 else { return nil }
        return (parts[0], parts[1], parts.count == 3 ? Int(parts[2]) ?? 1 : 1)
    }()
    private static let hits = NIOLockedValueBox(0)
    #endif
}
