import Foundation
import PostgresNIO

// Usage: PGPASSWORD=… pgc-bench [--host H] [--port P] [--user U] [--db D] [--schema S]
//          [--iterations N] [--warmup N] [--migration FILE] [--audit-rows N] [--phases 1] [--digest 0]
// Creates (drops first) schema S with the vault's PostgreSQL migration and sample rows,
// then times one token cache hit's statements four ways, interleaved round-robin.

struct Options {
    var host = ProcessInfo.processInfo.environment["PGHOST"] ?? "127.0.0.1"
    var port = Int(ProcessInfo.processInfo.environment["PGPORT"] ?? "") ?? 5432
    var user = ProcessInfo.processInfo.environment["PGUSER"] ?? "postgres"
    var database = ProcessInfo.processInfo.environment["PGDATABASE"] ?? "postgres"
    var password = ProcessInfo.processInfo.environment["PGPASSWORD"]
    var schema = "pgc_bench"
    var iterations = 2000
    var warmup = 200
    var phases = false
    /// Audit records the sample vault starts with: enough that the planner picks the indexes
    /// from the start (with a handful, a named statement keeps a seq-scan-and-sort plan of
    /// the audit head query while the table grows during the run).
    var auditRows = 20000
    var digest = true
    var migration = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Migrations/postgres/0001_vault.sql").path
}

func parseOptions() -> Options {
    var options = Options()
    var args = Array(CommandLine.arguments.dropFirst())
    while !args.isEmpty {
        let flag = args.removeFirst()
        guard !args.isEmpty else { fatalError("missing value for \(flag)") }
        let value = args.removeFirst()
        switch flag {
        case "--host": options.host = value
        case "--port": options.port = Int(value)!
        case "--user": options.user = value
        case "--db": options.database = value
        case "--schema": options.schema = value
        case "--iterations": options.iterations = Int(value)!
        case "--warmup": options.warmup = Int(value)!
        case "--migration": options.migration = value
        case "--phases": options.phases = value == "1"
        case "--audit-rows": options.auditRows = Int(value)!
        case "--digest": options.digest = value != "0"
        default: fatalError("unknown option \(flag)")
        }
    }
    return options
}

/// PostgresStore.openSession's startup parameters.
func startupParameters(_ schema: String) -> [(String, String)] {
    [("search_path", "\"\(schema)\""), ("idle_in_transaction_session_timeout", "60000"),
     ("lock_timeout", "5000"), ("application_name", "pgc-bench")]
}

func setUp(_ o: Options, logger: Logger) async throws -> String {
    let migration = try String(contentsOfFile: o.migration, encoding: .utf8)
    var configuration = PostgresConnection.Configuration(host: o.host, port: o.port, username: o.user, password: o.password,
                                                         database: o.database, tls: .disable)
    configuration.options.additionalStartupParameters = [("application_name", "pgc-bench-setup")]
    let conn = try await PostgresConnection.connect(configuration: configuration, id: 0, logger: logger)
    defer { Task { try? await conn.close() } }
    let s = "\"\(o.schema)\""
    for sql in [
        "DROP SCHEMA IF EXISTS \(s) CASCADE",
        "CREATE SCHEMA \(s)",
        "SET search_path TO \(s)",
        "CREATE TABLE schema_migrations (identifier TEXT COLLATE \"C\" PRIMARY KEY, applied_at TEXT COLLATE \"C\" NOT NULL)",
        "DO $migration$ BEGIN\n\(migration)\nEND $migration$",
        "INSERT INTO schema_migrations VALUES ('0001_vault', '2026-12-06T00:00:00Z')",
        // Sample rows shaped as a one-profile team vault (lengths as the schema's checks require).
        """
        DO $rows$ BEGIN
        INSERT INTO vault_header VALUES (1, 3, decode(repeat('11',16),'hex'), 'argon2id', 2, 67108864, decode(repeat('12',16),'hex'),
            decode(repeat('13',24),'hex'), decode(repeat('14',80),'hex'), decode(repeat('15',32),'hex'), '2026-12-06T00:00:00Z', 1, 1);
        INSERT INTO environment VALUES ('local', decode(repeat('21',16),'hex'), 'http://127.0.0.1:43345/as/token.oauth2', NULL,
            '2026-12-06T00:00:00Z', decode(repeat('22',32),'hex'));
        INSERT INTO profile VALUES (1, decode(repeat('31',16),'hex'), 'b', 'bench', 'u', 'password', NULL, 'local', 1, 1,
            '2026-12-06T00:00:00Z', '2026-12-06T00:00:00Z', decode(repeat('32',32),'hex'));
        INSERT INTO secret_version VALUES (1, 'client_secret', 1, decode(repeat('41',24),'hex'), decode(repeat('42',35),'hex'), '2026-12-06T00:00:00Z'),
            (1, 'password', 1, decode(repeat('43',24),'hex'), decode(repeat('44',30),'hex'), '2026-12-06T00:00:00Z');
        INSERT INTO token_cache VALUES (1, 'local', decode(repeat('21',16),'hex'), 4102444800, 1, 1, decode(repeat('51',24),'hex'),
            decode(repeat('52',916),'hex'));
        INSERT INTO member VALUES ('owner', decode(repeat('61',16),'hex'), 'passphrase', decode(repeat('62',32),'hex'),
            decode(repeat('63',32),'hex'), 1, NULL, '2026-12-06T00:00:00Z', decode(repeat('64',32),'hex'));
        INSERT INTO key_slot VALUES ('owner', 1, decode(repeat('71',144),'hex'), decode(repeat('72',32),'hex'), NULL);
        INSERT INTO audit_record (seq, at, action, profile, environment, outcome, mac, key_epoch, member, signature)
            SELECT g, 1796568000000 + g, 'add', 'b', 'local', 'ok', decode(repeat('81',32),'hex'), 1, 'owner', decode(repeat('82',64),'hex')
            FROM generate_series(1, \(o.auditRows)) g;
        INSERT INTO audit_head VALUES (1, \(o.auditRows), 1, decode(repeat('81',32),'hex'), decode(repeat('83',32),'hex'));
        END $rows$
        """,
        "ANALYZE",
    ] {
        try await conn.query(PostgresQuery(unsafeSQL: sql), logger: logger)
    }
    var bindings = PostgresBindings()
    bindings.append(o.schema); bindings.append(SQL.tables.joined(separator: ",")); bindings.append(o.schema)
    let rows = try await collect(conn.query(PostgresQuery(unsafeSQL: SQL.numbered(SQL.fingerprint), binds: bindings), logger: logger))
    guard let fingerprint = rows.first?["fingerprint"]?.text else { throw BenchError("no fingerprint") }
    return fingerprint
}

struct Stats {
    let name: String
    var samples: [Double] = []  // milliseconds
    func pct(_ p: Double, _ sorted: [Double]) -> Double {
        let i = min(sorted.count - 1, max(0, Int((p * Double(sorted.count - 1)).rounded())))
        return sorted[i]
    }
    var line: String {
        let s = samples.sorted()
        let n = s.count
        let median = n % 2 == 1 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2
        let mean = s.reduce(0, +) / Double(n)
        return String(format: "| %@ | %d | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f |", name, n, median, mean, s[0], pct(0.1, s), pct(0.9, s), pct(0.99, s))
    }
    var median: Double {
        let s = samples.sorted(); let n = s.count
        return n % 2 == 1 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2
    }
    var mean: Double { samples.reduce(0, +) / Double(samples.count) }
}

@inline(never)
func runLegacy(_ store: LegacyStore, _ w: Workload) throws { try cacheHitLegacy(store, w) }

func benchmark() async throws {
    let o = parseOptions()
    var logger = Logger(label: "pgc-bench")
    logger.logLevel = .critical  // no statement, bind or row is ever logged
    var w = Workload(schema: o.schema)
    w.expectedFingerprint = try await setUp(o, logger: logger)
    w.withDigest = o.digest

    // (a) PostgresStore's own pool of PostgresConnections.
    var legacyConfiguration = PostgresConnection.Configuration(host: o.host, port: o.port, username: o.user, password: o.password,
                                                               database: o.database, tls: .disable)
    legacyConfiguration.options.connectTimeout = .seconds(10)
    legacyConfiguration.options.additionalStartupParameters = startupParameters(o.schema)
    let store = LegacyStore(configuration: legacyConfiguration, logger: logger)

    // (b) and (c): a PostgresClient each (their own pools), run in a task.
    func makeClient() -> PostgresClient {
        var c = PostgresClient.Configuration(host: o.host, port: o.port, username: o.user, password: o.password,
                                             database: o.database, tls: .disable)
        c.options.additionalStartupParameters = startupParameters(o.schema)
        return PostgresClient(configuration: c, backgroundLogger: logger)
    }
    let interpolatedClient = makeClient(), preparedClient = makeClient(), sentAheadClient = makeClient()
    let runners = [Task { await interpolatedClient.run() }, Task { await preparedClient.run() }, Task { await sentAheadClient.run() }]

    var stats = [Stats(name: "(a) PostgresConnection + PreparedQuery, .wait(), sends ahead (today)"),
                 Stats(name: "(b) PostgresClient, interpolated binds (unnamed statements)"),
                 Stats(name: "(c) PostgresClient, PostgresPreparedStatement types"),
                 Stats(name: "(d) extra: (b) with BEGIN+LOCK and the 2 writes sent ahead (EventLoopFuture query)")]
    // Every round runs each way once; the order cycles through all 24 permutations.
    func permutations(_ items: [Int]) -> [[Int]] {
        items.count <= 1 ? [items] : items.indices.flatMap { i -> [[Int]] in
            var rest = items; let first = rest.remove(at: i)
            return permutations(rest).map { [first] + $0 }
        }
    }
    let orders = permutations([0, 1, 2, 3])
    Phases.enabled = o.phases
    var phaseSums = [[Double]](repeating: [Double](repeating: 0, count: 6), count: 4)
    for round in 0..<(o.warmup + o.iterations) {
        for variant in orders[round % orders.count] {
            let start = DispatchTime.now().uptimeNanoseconds
            Phases.marks[0] = start
            switch variant {
            case 0: try runLegacy(store, w)
            case 1: try await cacheHitInterpolated(interpolatedClient, w, logger: logger)
            case 2: try await cacheHitPreparedStatements(preparedClient, w, logger: logger)
            default: try await cacheHitInterpolatedSentAhead(sentAheadClient, w, logger: logger)
            }
            let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
            if round >= o.warmup { stats[variant].samples.append(elapsed) }
            if o.phases, round >= o.warmup {
                Phases.marks[6] = start + UInt64(elapsed * 1e6)
                for i in 0..<6 { phaseSums[variant][i] += Double(Phases.marks[i + 1] - Phases.marks[i]) / 1e6 }
            }
        }
    }

    print("One team-vault token cache hit's statements (BEGIN, LOCK, 6 SELECTs, 2 audit writes, COMMIT; " +
          (o.digest ? "the schema digest on a second connection" : "WITHOUT the schema digest (--digest 0)") + "), per transaction, ms")
    print("PostgreSQL \(o.host):\(o.port), \(o.auditRows) audit records to start with, \(o.warmup) warm-up rounds, \(o.iterations) measured rounds, the ways interleaved (rotating order)")
    print("")
    print("| way | n | median | mean | min | p10 | p90 | p99 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for s in stats { print(s.line) }
    print("")
    for s in stats.dropFirst() {
        print(String(format: "%@: %+.3f ms median, %+.3f ms mean against (a)", String(s.name.prefix(3)), s.median - stats[0].median, s.mean - stats[0].mean))
    }

    if o.phases {
        print("")
        print("Where the time goes (mean ms per transaction):")
        print("")
        print("| way | " + Phases.names.joined(separator: " | ") + " |")
        print("|---|" + String(repeating: "---:|", count: 6))
        for v in 0..<4 {
            print("| " + String(stats[v].name.prefix(3)) + " | " + phaseSums[v].map { String(format: "%.3f", $0 / Double(o.iterations)) }.joined(separator: " | ") + " |")
        }
    }

    store.close()
    runners.forEach { $0.cancel() }
    for r in runners { await r.value }
}

// Run off the main actor, on the global executor, as the agent answers each request on a task.
let done = DispatchSemaphore(value: 0)
Task.detached {
    do { try await benchmark() } catch {
        FileHandle.standardError.write("pgc-bench: \(error)\n".data(using: .utf8)!)
        exit(1)
    }
    done.signal()
}
done.wait()
