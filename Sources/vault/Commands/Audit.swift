import ArgumentParser
import Foundation
import VaultCore

extension VaultCLI {
    struct Audit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show past exchanges and vault changes, newest first (no passphrase needed).",
            subcommands: [ListAudit.self, VerifyAudit.self],
            defaultSubcommand: ListAudit.self)
    }

    struct ListAudit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List audit records, newest first.")

        @OptionGroup var options: VaultOptions
        @Option(help: "Only this profile.") var profile: String?
        @Option(help: "Only this environment.") var env: String?
        @Option(help: "From this time: ISO 8601, Unix seconds, or an age like 30m, 24h, 7d.") var since: String?
        @Option(help: "Up to this time (same forms as --since).") var until: String?
        @Option(help: "ok (ok, cache_hit), error (everything else), or one outcome name.") var outcome: String?
        @Option(help: "At most this many records.") var limit: Int?
        @Flag(help: "Print JSON.") var json = false

        func validate() throws {
            if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
            for (flag, value) in [("--since", since), ("--until", until)] {
                if let value, TimeArgument.parse(value) == nil {
                    throw ValidationError("\(flag) '\(value)' is not a time: use ISO 8601, Unix seconds, or an age like 24h")
                }
            }
            if let outcome, !["ok", "error", "cache_hit", "rejected", "unavailable", "malformed"].contains(outcome) {
                throw ValidationError("--outcome must be ok, error, cache_hit, rejected, unavailable or malformed")
            }
        }

        func run() async throws {
            let query = AuditQuery(
                profile: profile, environment: env,
                since: since.flatMap { TimeArgument.parse($0) }, until: until.flatMap { TimeArgument.parse($0) },
                outcome: outcome, limit: limit)
            if json { return Output.jsonArray(try options.open().auditJSON(query)) }
            let records = try options.open().audit(query)
            Output.table(["SEQ", "TIME", "ACTION", "PROFILE", "ENV", "OUTCOME", "HTTP", "ERROR", "TRIES", "MS", "REQUEST ID"],
                         records.map { Self.row($0) })
        }

        static func row(_ r: AuditEntry) -> [String] {
            let time = Date(timeIntervalSince1970: Double(r.at) / 1000).iso8601
            let status: String = r.httpStatus.map { String($0) } ?? "-"
            let attempts: String = r.attempts.map { String($0) } ?? "-"
            let duration: String = r.durationMs.map { String($0) } ?? "-"
            var cells: [String] = [String(r.seq), time, r.action, r.profile ?? "-", r.environment ?? "-", r.outcome]
            cells += [status, r.oauthError ?? "-", attempts, duration, r.requestID ?? "-"]
            return cells
        }
    }

    struct VerifyAudit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "verify", abstract: "Check the audit trail's MAC chain; names the first bad record.")
        @OptionGroup var options: VaultOptions

        func run() async throws {
            let result = try options.unlock().verifyAudit()
            if let failure = result.firstFailure {
                throw VaultError.integrity("audit trail: \(failure.reason) (\(result.recordsChecked) record(s) before it verified)")
            }
            Output.stdout("audit trail intact: \(result.recordsChecked) record(s) verified\n")
        }
    }
}

/// Parses `--since`/`--until`: ISO 8601 date or date-time, Unix seconds, or an age.
enum TimeArgument {
    /// Milliseconds since the epoch.
    static func parse(_ text: String, now: Date = Date()) -> Int64? {
        if let seconds = Int64(text) { return seconds * 1000 }
        if let last = text.last, let unit = ["s": 1, "m": 60, "h": 3600, "d": 86400][String(last)],
           let amount = Int64(text.dropLast()), amount >= 0 {
            return now.unixMilliseconds - amount * Int64(unit) * 1000
        }
        let full = ISO8601DateFormatter()
        if let date = full.date(from: text) { return date.unixMilliseconds }
        let dateOnly = ISO8601DateFormatter()
        dateOnly.formatOptions = [.withFullDate]
        if let date = dateOnly.date(from: text) { return date.unixMilliseconds }
        return nil
    }
}
