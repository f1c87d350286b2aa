import ArgumentParser
import Foundation
import VaultCore

extension VaultCLI {
    struct Audit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "audit",
            abstract: "Show past exchanges and vault changes, newest first (no passphrase needed).",
            subcommands: [ListAudit.self, VerifyAudit.self],
            defaultSubcommand: ListAudit.self)
    }

    struct ListAudit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List audit records, newest first.")

        @OptionGroup var options: VaultOptions
        @Option(help: "Only this profile.", completion: NameCompletion.profiles) var profile: String?
        @Option(help: "Only this environment.", completion: NameCompletion.environments) var env: String?
        @Option(help: "Only records caused (and signed) by this member.", completion: NameCompletion.allMembers) var member: String?
        @Option(help: "From this time: ISO 8601, Unix seconds, or an age like 30m, 24h, 7d.") var since: String?
        @Option(help: "Up to this time (same forms as --since).") var until: String?
        @Option(help: "ok (ok, cache_hit), error (everything else), or one outcome name.") var outcome: String?
        @Option(help: "At most this many records (the newest).") var limit: Int?
        @Flag(help: "Print one JSON array, newest first.") var json = false
        @Flag(help: "Print one JSON object per line, oldest first (for log pipelines and SIEMs).") var jsonl = false
        @Flag(help: "Keep printing new records as other processes append them, until interrupted (Ctrl-C).") var follow = false
        @Option(help: "With --follow: how often to look for new records, in milliseconds.") var interval: Int = 250

        func validate() throws {
            if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
            if json && (jsonl || follow) { throw ValidationError("--json prints one array; use --jsonl with --follow") }
            if interval < 10 || interval > 60_000 { throw ValidationError("--interval must be between 10 and 60000 ms") }
            for (flag, value) in [("--since", since), ("--until", until)] {
                if let value, TimeArgument.parse(value) == nil {
                    throw ValidationError("\(flag) '\(value)' is not a time: use ISO 8601, Unix seconds, or an age like 24h")
                }
            }
            if let outcome, AuditQuery.OutcomeFilter(outcome) == nil {
                throw ValidationError("--outcome must be one of " + AuditQuery.OutcomeFilter.names.joined(separator: ", "))
            }
        }

        @MainActor func run() async throws {
            var query = AuditQuery(
                profile: profile, environment: env,
                since: since.flatMap { TimeArgument.parse($0) }, until: until.flatMap { TimeArgument.parse($0) },
                outcome: outcome.flatMap(AuditQuery.OutcomeFilter.init), limit: limit)
            query.member = member
            if !follow { return try Self.printOnce(vaultPath: options.vaultPath, query: query, json: json, jsonl: jsonl) }
            // --follow: the recent past (like tail -f), then each new record as it is appended.
            let vault = try options.openForReading()
            let stop = InterruptFlag()
            if limit == nil, since == nil { query.limit = 10 }
            var printedHeader = false
            while true {
                let step = try vault.auditFollowStep(query, json: jsonl)
                if jsonl {
                    if !step.lines.isEmpty { Output.stdout(step.lines.map { $0.json + "\n" }.joined()) }
                } else if !step.entries.isEmpty || !printedHeader {
                    Output.rows(step.entries.map { Self.row($0) }, header: printedHeader ? nil : Self.header, widths: Self.widths)
                    printedHeader = true
                }
                // Every record up to `newest` was in this snapshot: go on strictly after it.
                let last = step.newest
                query.afterSeq = last
                query.limit = nil
                var grown = false
                while !stop.isSet && !grown {
                    try await Task.sleep(for: .milliseconds(interval))
                    grown = try vault.newestAuditSeq() > last
                }
                if stop.isSet && !grown { return }
            }
        }

        /// The records once, as a table, a JSON array or JSON lines (also run by `FastPath`).
        static func printOnce(vaultPath: String?, query: AuditQuery, json: Bool, jsonl: Bool) throws(VaultError) {
            VaultOptions.warnAboutPasswordInArguments(vaultPath)
            let vault = try Vault.openForReading(at: VaultOptions.defaultPath(explicit: vaultPath))
            if json { return Output.jsonArray(try vault.auditJSON(query)) }
            if jsonl {
                let lines = try vault.auditFollowStep(query, json: true).lines
                if !lines.isEmpty { Output.stdout(lines.map { $0.json + "\n" }.joined()) }
                return
            }
            Output.table(Self.header, try vault.audit(query).map { Self.row($0) })
        }

        static let header = ["SEQ", "TIME", "ACTION", "MEMBER", "PROFILE", "ENV", "OUTCOME", "HTTP", "ERROR", "TRIES", "MS", "REQUEST ID"]
        /// Fixed column widths for `--follow`, where rows arrive over time.
        static let widths = [6, 20, 13, 12, 16, 10, 11, 4, 16, 5, 6, 0]

        static func row(_ r: AuditEntry) -> [String] {
            let time = Date(timeIntervalSince1970: Double(r.at) / 1000).iso8601
            let status: String = r.httpStatus.map { String($0) } ?? "-"
            let attempts: String = r.attempts.map { String($0) } ?? "-"
            let duration: String = r.durationMs.map { String($0) } ?? "-"
            var cells: [String] = [String(r.seq), time, r.action.rawValue, r.member ?? "-", r.profile ?? "-", r.environment ?? "-", r.outcome.rawValue]
            cells += [status, r.oauthError ?? "-", attempts, duration, r.requestID ?? "-"]
            return cells
        }
    }

    struct VerifyAudit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "verify", abstract: "Check the audit trail's MAC chain; names the first bad record.")
        @OptionGroup var options: VaultOptions

        @MainActor func run() async throws {
            var checked: Int
            var failure: String?
            if case .audit(let audit) = try AgentSession.call(options, .auditVerify) {
                checked = audit.recordsChecked
                failure = audit.failureReason
            } else {
                let result = try options.unlock().verifyAudit()
                checked = result.recordsChecked
                failure = result.firstFailure?.reason
            }
            if let failure {
                throw VaultError.integrity("audit trail: \(failure) (\(checked) record(s) before it verified)")
            }
            Output.stdout("audit trail intact: \(checked) record(s) verified\n")
        }
    }
}

/// Set by SIGINT or SIGTERM, so `--follow` finishes the line it is writing and exits 0.
final class InterruptFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var set = false
    private var sources: [any DispatchSourceSignal] = []

    init() {
        for number in [SIGINT, SIGTERM] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { [self] in lock.withLock { set = true } }
            source.resume()
            sources.append(source)
        }
    }

    var isSet: Bool { lock.withLock { set } }
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
