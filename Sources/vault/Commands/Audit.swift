import ArgumentParser
import Foundation
import VaultCore

extension VaultCLI {
    /// `vault audit [FILTERS]` lists; `vault audit list [FILTERS]` is the same command (the
    /// older spelling); `vault audit verify` checks the chain.
    struct Audit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "audit",
            abstract: "Show past exchanges and vault changes, newest first (no passphrase needed).",
            discussion: """
                At a terminal, the table shows the newest \(AuditListing.terminalLimit) records and says how to see \
                more (--limit N, --all), through $PAGER (else less) when it is longer than the screen. \
                Piped, every record is printed. Times are UTC unless --local-time.
                """,
            subcommands: [ListAudit.self, VerifyAudit.self])

        @OptionGroup var listing: AuditListing
        @OptionGroup var options: VaultOptions

        @MainActor func run() async throws { try await listing.run(options) }
    }

    struct ListAudit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "The same as `vault audit` (list audit records, newest first).")

        @OptionGroup var listing: AuditListing
        @OptionGroup var options: VaultOptions

        @MainActor func run() async throws { try await listing.run(options) }
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

/// `vault audit --requests`: the requests `vault proxy` forwarded, from its request logs,
/// each line checked against the `proxy-requests` record that summarises it (the lines'
/// BLAKE2b-256 digest): anchored, or not yet (a proxy still running, or killed before its
/// last summary). A covered line that was changed, removed or reordered is an integrity
/// failure (exit 7).
enum RequestListing {
    static func statusFilter(_ text: String) -> ((Int) -> Bool)? {
        if text.count == 3, text.hasSuffix("xx"), let first = Int(text.prefix(1)), (1...5).contains(first) { return { $0 / 100 == first } }
        if let code = Int(text), (100...599).contains(code) { return { $0 == code } }
        return nil
    }

    static func print(_ listing: AuditListing, options: VaultOptions) throws(VaultError) {
        let vault = try options.openForReading()
        guard let directory = RequestLog.directory() else { throw VaultError.failure("cannot name the request log directory (no HOME?)") }
        let records = try vault.audit(AuditQuery()).filter { $0.action == .proxyRequests }
        let check = RequestLogCheck.run(directory: directory, records: records)
        let since = listing.since.flatMap { TimeArgument.parse($0) }
        let until = listing.until.flatMap { TimeArgument.parse($0) }
        let statusMatches = listing.status.flatMap(statusFilter)
        var lines = check.lines.filter { entry in
            (listing.profile == nil || entry.line.profile == listing.profile) && (listing.path == nil || entry.line.path.hasPrefix(listing.path!))
                && (since == nil || entry.line.at >= since!) && (until == nil || entry.line.at <= until!) && (statusMatches?(entry.line.status) ?? true)
        }.sorted { ($0.line.at, $0.log, $0.line.seq) < ($1.line.at, $1.log, $1.line.seq) }
        if let limit = listing.limit, lines.count > limit { lines.removeFirst(lines.count - limit) }
        if listing.json || listing.jsonl {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            let objects: [String] = lines.map { entry in
                let line = (try? encoder.encode(entry.line)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
                return #"{"anchored":\#(entry.anchored),"line":\#(line),"log":"\#(entry.log)"}"#
            }
            Output.stdout(listing.json ? "[" + objects.joined(separator: ",") + "]\n" : objects.map { $0 + "\n" }.joined())
        } else {
            let rows = lines.map { entry -> [String] in
                let line = entry.line
                let at = Date(timeIntervalSince1970: TimeInterval(line.at) / 1000)
                return [listing.localTime ? at.iso8601Local : at.iso8601, line.profile.sanitisedForDisplay(limit: 32), line.method,
                        line.path.sanitisedForDisplay(limit: 60), String(line.status), String(line.bytesIn), String(line.bytesOut),
                        String(line.durationMs), line.requestID ?? "-", line.caller, entry.anchored ? "yes" : "no"]
            }
            Output.stdout(Output.tableText(["TIME", "PROFILE", "METHOD", "PATH", "STATUS", "IN", "OUT", "MS", "REQUEST ID", "CALLER", "ANCHORED"], rows))
        }
        if !check.problems.isEmpty {
            throw VaultError.notAsRemembered("request logs: " + check.problems.prefix(5).joined(separator: "; "),
                                             hint: "a request log was edited after its lines were recorded; the proxy-requests records are the reference")
        }
    }
}

/// The filters and formats of `vault audit` (and its older spelling `audit list`).
struct AuditListing: ParsableArguments {
    /// How many records a table shows at a terminal without `--limit` or `--all`.
    static let terminalLimit = 50

    @Option(help: "Only this profile.", completion: NameCompletion.profiles) var profile: String?
    @Option(help: "Only this environment.", completion: NameCompletion.environments) var env: String?
    @Option(help: "Only records caused (and signed) by this member.", completion: NameCompletion.allMembers) var member: String?
    @Option(help: "From this time: ISO 8601, Unix seconds, or an age like 30m, 24h, 7d.") var since: String?
    @Option(help: "Up to this time (same forms as --since).") var until: String?
    @Option(help: "ok (ok, cache_hit), error (everything else), or one outcome name.") var outcome: String?
    @Option(help: "At most this many records (the newest).") var limit: Int?
    @Flag(help: "Every record, also at a terminal.") var all = false
    @Flag(help: "Print one JSON array, newest first.") var json = false
    @Flag(help: "Print one JSON object per line, oldest first (for log pipelines and SIEMs).") var jsonl = false
    @Flag(help: "Keep printing new records as other processes append them, until interrupted (Ctrl-C).") var follow = false
    @Option(help: "With --follow: how often to look for new records, in milliseconds.") var interval: Int = 250
    @Flag(help: "Show the table's times in the local time zone (JSON stays UTC).") var localTime = false
    @Flag(help: "Never page the table, even at a terminal.") var noPager = false
    @Flag(help: "The requests `vault proxy` forwarded (its request logs, each line checked against the trail), oldest first.")
    var requests = false
    @Option(help: "With --requests: only this status (200) or class (2xx … 5xx).") var status: String?
    @Option(help: "With --requests: only paths that start with this.") var path: String?

    func validate() throws {
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
        if all && limit != nil { throw ValidationError("--all and --limit ask for different amounts; give one") }
        if json && jsonl { throw ValidationError("--json and --jsonl are two formats; give one") }
        if json && follow { throw ValidationError("--json prints one array at the end; with --follow use --jsonl or the table") }
        if localTime && (json || jsonl) { throw ValidationError("--local-time changes the table's times; JSON times stay UTC") }
        if interval < 10 || interval > 60_000 { throw ValidationError("--interval must be between 10 and 60000 ms") }
        for (flag, value) in [("--since", since), ("--until", until)] {
            if let value, TimeArgument.parse(value) == nil {
                throw ValidationError("\(flag) '\(value)' is not a time: use ISO 8601, Unix seconds, or an age like 24h")
            }
        }
        if !requests, status != nil || path != nil { throw ValidationError("--status and --path filter --requests") }
        if requests {
            if env != nil || member != nil || outcome != nil || follow || all {
                throw ValidationError("--requests takes --profile, --since, --until, --status, --path, --limit, --json or --jsonl")
            }
            if let status, RequestListing.statusFilter(status) == nil { throw ValidationError("--status takes a status (200) or a class (2xx … 5xx)") }
        }
        if let outcome, AuditQuery.OutcomeFilter(outcome) == nil {
            throw ValidationError("--outcome must be one of " + AuditQuery.OutcomeFilter.names.joined(separator: ", "))
        }
    }

    var query: AuditQuery {
        var query = AuditQuery(
            profile: profile, environment: env,
            since: since.flatMap { TimeArgument.parse($0) }, until: until.flatMap { TimeArgument.parse($0) },
            outcome: outcome.flatMap(AuditQuery.OutcomeFilter.init), limit: limit)
        query.member = member
        return query
    }

    var format: AuditTable.Format { AuditTable.Format(json: json, jsonl: jsonl, all: all, localTime: localTime, noPager: noPager) }

    @MainActor func run(_ options: VaultOptions) async throws {
        if requests { return try RequestListing.print(self, options: options) }
        var query = query
        if !follow { return try AuditTable.printOnce(vaultPath: options.vaultPath, query: query, format: format) }
        // --follow: the recent past (like tail -f), then each new record as it is appended.
        let vault = try options.openForReading()
        // A vault read as it is (this user cannot write it, so SQLite cannot share its
        // write-ahead log index) would never show the records appended after the start.
        if vault.isReadOnlyHere {
            throw VaultError.failure("cannot follow \(VaultOptions.display(options.resolvedPath)): you cannot write it or its directory, "
                                     + "so records appended after the start would not be seen",
                                     hint: "follow it as a user who can write the vault's directory; one-shot `vault audit` works")
        }
        let stop = InterruptFlag()
        if limit == nil, since == nil, !all { query.limit = 10 }
        var printedHeader = false
        while true {
            let step = try vault.auditFollowStep(query, json: jsonl)
            if jsonl {
                if !step.lines.isEmpty { Output.stdout(step.lines.map { $0.json + "\n" }.joined()) }
            } else if !step.entries.isEmpty || !printedHeader {
                Output.rows(step.entries.map { AuditTable.row($0, localTime: localTime) }, header: printedHeader ? nil : AuditTable.header,
                            widths: AuditTable.widths)
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
}

/// How audit records print: the table (also of `--follow`), JSON, JSON lines.
enum AuditTable {
    struct Format {
        var json = false
        var jsonl = false
        var all = false
        var localTime = false
        var noPager = false
    }

    /// The records once, as a table, a JSON array or JSON lines (also run by `FastPath`).
    /// At a terminal, a table without `--limit` or `--all` shows the newest
    /// ``AuditListing/terminalLimit`` records and a line saying how to see more, and one
    /// longer than the screen goes through the pager.
    static func printOnce(vaultPath: String?, query: AuditQuery, format: Format) throws(VaultError) {
        VaultOptions.warnAboutPasswordInArguments(vaultPath)
        let vault = try Vault.openForReading(at: VaultOptions.defaultPath(explicit: vaultPath))
        if format.json { return Output.jsonArray(try vault.auditJSON(query)) }
        if format.jsonl {
            let lines = try vault.auditFollowStep(query, json: true).lines
            if !lines.isEmpty { Output.stdout(lines.map { $0.json + "\n" }.joined()) }
            return
        }
        let terminal = isatty(STDOUT_FILENO) == 1
        var query = query
        let capped = terminal && query.limit == nil && !format.all
        if capped { query.limit = AuditListing.terminalLimit + 1 }
        var entries = try vault.audit(query)
        var footer: String?
        if capped, entries.count > AuditListing.terminalLimit {
            entries.removeLast(entries.count - AuditListing.terminalLimit)
            footer = "(the newest \(AuditListing.terminalLimit) records; --limit N or --all for more)"
        }
        var text = Output.tableText(header, entries.map { row($0, localTime: format.localTime) }, minimumWidths: widths)
        if let footer { text += footer + "\n" }
        if terminal, !format.noPager, Pager.isLongerThanScreen(text) {
            Pager.show(text)
        } else {
            Output.stdout(text)
        }
    }

    static let header = ["SEQ", "TIME", "ACTION", "MEMBER", "PROFILE", "ENV", "OUTCOME", "HTTP", "ERROR", "TRIES", "MS", "REQUEST ID"]
    /// Column widths of `--follow`, where rows arrive over time, and the least width of
    /// each column of the table, so that both line up the same.
    static let widths = [6, 20, 13, 12, 16, 10, 11, 4, 16, 5, 6, 0]

    static func row(_ r: AuditEntry, localTime: Bool = false) -> [String] {
        let date = Date(timeIntervalSince1970: Double(r.at) / 1000)
        let time = localTime ? date.iso8601Local : date.iso8601
        let status: String = r.httpStatus.map { String($0) } ?? "-"
        let attempts: String = r.attempts.map { String($0) } ?? "-"
        let duration: String = r.durationMs.map { String($0) } ?? "-"
        var cells: [String] = [String(r.seq), time, r.action.rawValue, r.member ?? "-", r.profile ?? "-", r.environment ?? "-", r.outcome.rawValue]
        cells += [status, r.oauthError ?? "-", attempts, duration, r.requestID ?? "-"]
        return cells
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

extension Date {
    /// ISO 8601 in the local time zone (`TZ`), with its offset: `2026-12-06T18:01:53+01:00`.
    var iso8601Local: String { LocalTimeText.formatter.string(from: self) }
}

private enum LocalTimeText {
    nonisolated(unsafe) static let formatter: ISO8601DateFormatter = {
        let formatter = ISO8601DateFormatter()
        formatter.timeZone = .current
        return formatter
    }()
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
