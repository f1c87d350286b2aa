import Foundation
import PostgresNIO

func collect(_ rows: PostgresRowSequence) async throws -> [DecodedRow] {
    var out: [DecodedRow] = []
    for try await row in rows { out.append(try decodeCells(row)) }
    return out
}

// MARK: - (b) PostgresClient, interpolated binds (unnamed statements, parsed on every call)

/// One cache hit: the transaction on a connection leased from the client's pool, every
/// statement a `PostgresQuery` built by string interpolation and awaited in turn; the
/// schema digest through `client.query` (another pooled connection) while the body runs.
func cacheHitInterpolated(_ client: PostgresClient, _ w: Workload, logger: Logger) async throws {
    try await client.withConnection { conn in
        try await conn.query("BEGIN ISOLATION LEVEL READ COMMITTED", logger: logger)
        try await conn.query("LOCK TABLE vault_header, environment, profile, secret_version, token_cache, audit_record, audit_head, retired_audit_key, member, key_slot, schema_migrations IN EXCLUSIVE MODE", logger: logger)
        Phases.mark(1)
        async let digest = fingerprintInterpolated(client, w)

        guard try await collect(conn.query("SELECT vault_id, format_version, key_epoch FROM vault_header WHERE id = 1", logger: logger)).count == 1
        else { throw BenchError("no header") }
        guard try await collect(conn.query("SELECT * FROM profile WHERE name = \(w.profileName)", logger: logger)).first?["id"]?.int == w.profileID
        else { throw BenchError("no profile") }
        guard try await collect(conn.query("SELECT * FROM environment WHERE name = \(w.environmentName)", logger: logger)).count == 1
        else { throw BenchError("no environment") }
        guard try await collect(conn.query("""
            SELECT field, count(*) AS n, min(version) AS lo, max(version) AS hi
            FROM secret_version WHERE profile_id = \(w.profileID) GROUP BY field
            """, logger: logger)).count == 2 else { throw BenchError("versions") }
        guard try await collect(conn.query("SELECT * FROM token_cache WHERE profile_id = \(w.profileID) AND environment = \(w.environmentName)", logger: logger)).count == 1
        else { throw BenchError("no token") }
        guard let newest = try await collect(conn.query("""
            SELECT h.*, (SELECT seq FROM audit_record ORDER BY seq DESC LIMIT 1) AS newest_seq,
                (SELECT mac FROM audit_record ORDER BY seq DESC LIMIT 1) AS newest_mac
            FROM audit_head h WHERE h.id = 1
            """, logger: logger)).first?["newest_seq"]?.int else { throw BenchError("no audit head") }
        Phases.mark(2)
        let seq = newest + 1
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        let mac = ByteBuffer(bytes: w.mac), headMAC = ByteBuffer(bytes: w.headMAC), signature = ByteBuffer(bytes: w.signature)
        let noText: String? = nil, noInt: Int64? = nil
        let inserted = try await collect(conn.query("INSERT INTO audit_record (action, at, attempts, detail, duration_ms, environment, expires_at, expires_in, grant_type, http_status, key_epoch, mac, member, oauth_error, outcome, profile, request_id, seq, signature, token_fingerprint, token_type, token_url) VALUES (\("token"), \(now), \(Int64(0)), \(noText), \(Int64(0)), \(w.environmentName), \(now / 1000 + 3599), \(Int64(3599)), \("password"), \(noInt), \(Int64(1)), \(mac), \("owner"), \(noText), \("cache_hit"), \(w.profileName), \(noText), \(seq), \(signature), \(w.tokenFingerprint), \("Bearer"), \(w.tokenURL)) RETURNING 1", logger: logger)).count
        guard inserted == 1 else { throw BenchError("audit insert") }
        let upserted = try await collect(conn.query("""
            INSERT INTO audit_head (id, seq, key_epoch, last_mac, mac) VALUES (1, \(seq), \(Int64(1)), \(mac), \(headMAC))
            ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, key_epoch = excluded.key_epoch,
                last_mac = excluded.last_mac, mac = excluded.mac RETURNING 1
            """, logger: logger)).count
        guard upserted == 1 else { throw BenchError("audit head") }
        Phases.mark(3)
        guard try await digest == w.expectedFingerprint else { throw BenchError("schema digest moved") }
        Phases.mark(4)
        try await conn.query("COMMIT", logger: logger)
        Phases.mark(5)
    }
}

// MARK: - (d) extra: (b) with today's sends ahead kept

/// As (b), but `BEGIN` and the lock, and then the two audit writes, are sent together through
/// the connection's EventLoopFuture `query` and awaited together, as PostgresStore sends them
/// today (separates the cost of unnamed statements from the cost of awaiting each one).
func cacheHitInterpolatedSentAhead(_ client: PostgresClient, _ w: Workload, logger: Logger) async throws {
    try await client.withConnection { conn in
        let begin: EventLoopFuture<PostgresQueryResult> = conn.query("BEGIN ISOLATION LEVEL READ COMMITTED", logger: logger)
        let lock: EventLoopFuture<PostgresQueryResult> = conn.query("LOCK TABLE vault_header, environment, profile, secret_version, token_cache, audit_record, audit_head, retired_audit_key, member, key_slot, schema_migrations IN EXCLUSIVE MODE", logger: logger)
        _ = try await begin.get()
        _ = try await lock.get()
        Phases.mark(1)
        async let digest = fingerprintInterpolated(client, w)

        guard try await collect(conn.query("SELECT vault_id, format_version, key_epoch FROM vault_header WHERE id = 1", logger: logger)).count == 1
        else { throw BenchError("no header") }
        guard try await collect(conn.query("SELECT * FROM profile WHERE name = \(w.profileName)", logger: logger)).first?["id"]?.int == w.profileID
        else { throw BenchError("no profile") }
        guard try await collect(conn.query("SELECT * FROM environment WHERE name = \(w.environmentName)", logger: logger)).count == 1
        else { throw BenchError("no environment") }
        guard try await collect(conn.query("""
            SELECT field, count(*) AS n, min(version) AS lo, max(version) AS hi
            FROM secret_version WHERE profile_id = \(w.profileID) GROUP BY field
            """, logger: logger)).count == 2 else { throw BenchError("versions") }
        guard try await collect(conn.query("SELECT * FROM token_cache WHERE profile_id = \(w.profileID) AND environment = \(w.environmentName)", logger: logger)).count == 1
        else { throw BenchError("no token") }
        guard let newest = try await collect(conn.query("""
            SELECT h.*, (SELECT seq FROM audit_record ORDER BY seq DESC LIMIT 1) AS newest_seq,
                (SELECT mac FROM audit_record ORDER BY seq DESC LIMIT 1) AS newest_mac
            FROM audit_head h WHERE h.id = 1
            """, logger: logger)).first?["newest_seq"]?.int else { throw BenchError("no audit head") }
        Phases.mark(2)
        let seq = newest + 1
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        let mac = ByteBuffer(bytes: w.mac), headMAC = ByteBuffer(bytes: w.headMAC), signature = ByteBuffer(bytes: w.signature)
        let noText: String? = nil, noInt: Int64? = nil
        let insert: EventLoopFuture<PostgresQueryResult> = conn.query("INSERT INTO audit_record (action, at, attempts, detail, duration_ms, environment, expires_at, expires_in, grant_type, http_status, key_epoch, mac, member, oauth_error, outcome, profile, request_id, seq, signature, token_fingerprint, token_type, token_url) VALUES (\("token"), \(now), \(Int64(0)), \(noText), \(Int64(0)), \(w.environmentName), \(now / 1000 + 3599), \(Int64(3599)), \("password"), \(noInt), \(Int64(1)), \(mac), \("owner"), \(noText), \("cache_hit"), \(w.profileName), \(noText), \(seq), \(signature), \(w.tokenFingerprint), \("Bearer"), \(w.tokenURL)) RETURNING 1", logger: logger)
        let upsert: EventLoopFuture<PostgresQueryResult> = conn.query("""
            INSERT INTO audit_head (id, seq, key_epoch, last_mac, mac) VALUES (1, \(seq), \(Int64(1)), \(mac), \(headMAC))
            ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, key_epoch = excluded.key_epoch,
                last_mac = excluded.last_mac, mac = excluded.mac RETURNING 1
            """, logger: logger)
        guard try await insert.get().rows.count == 1 else { throw BenchError("audit insert") }
        guard try await upsert.get().rows.count == 1 else { throw BenchError("audit head") }
        Phases.mark(3)
        guard try await digest == w.expectedFingerprint else { throw BenchError("schema digest moved") }
        Phases.mark(4)
        try await conn.query("COMMIT", logger: logger)
        Phases.mark(5)
    }
}

func fingerprintInterpolated(_ client: PostgresClient, _ w: Workload) async throws -> String? {
    guard w.withDigest else { return w.expectedFingerprint }
    let rows = try await client.query("""
        WITH rel AS (SELECT c.oid, c.xmin FROM pg_class c
                     WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = \(w.schema)) AND c.relname = ANY(string_to_array(\(w.tableList), ','))),
        parts(x) AS (
          SELECT n.xmin FROM pg_namespace n WHERE n.nspname = \(w.schema)
          UNION ALL SELECT xmin FROM rel
          UNION ALL SELECT a.xmin FROM pg_attribute a WHERE a.attrelid IN (SELECT oid FROM rel)
          UNION ALL SELECT d.xmin FROM pg_attrdef d WHERE d.adrelid IN (SELECT oid FROM rel)
          UNION ALL SELECT k.xmin FROM pg_constraint k WHERE k.conrelid IN (SELECT oid FROM rel)
          UNION ALL SELECT t.xmin FROM pg_trigger t WHERE t.tgrelid IN (SELECT oid FROM rel)
          UNION ALL SELECT x.xmin FROM pg_index x WHERE x.indrelid IN (SELECT oid FROM rel)
          UNION ALL SELECT r.xmin FROM pg_rewrite r WHERE r.ev_class IN (SELECT oid FROM rel)
          UNION ALL SELECT p.xmin FROM pg_policy p WHERE p.polrelid IN (SELECT oid FROM rel)
          UNION ALL SELECT i.xmin FROM pg_inherits i WHERE i.inhparent IN (SELECT oid FROM rel))
        SELECT count(*) || ':' || coalesce(sum(x::text::bigint), 0) AS fingerprint FROM parts
        """)
    return try await collect(rows).first?["fingerprint"]?.text
}

// MARK: - (c) PostgresPreparedStatement types (named, prepared once per connection by PostgresNIO)

/// A statement without rows. (Run through the row-sequence `execute`: in 1.33.2 the
/// overload for `Row == ()` that returns the command tag stopped this benchmark with
/// "commandTag may only be called if all rows have been consumed" on `BEGIN`.)
protocol TagStatement: PostgresPreparedStatement where Row == () {}
extension TagStatement {
    func makeBindings() throws -> PostgresBindings { PostgresBindings() }
    func decodeRow(_ row: PostgresRow) throws -> Row { () }
}
/// A statement whose rows are decoded cell by cell (as the vault reads every row).
protocol RowsStatement: PostgresPreparedStatement where Row == DecodedRow {}
extension RowsStatement {
    func decodeRow(_ row: PostgresRow) throws -> DecodedRow { try decodeCells(row) }
}
/// A checked write: `RETURNING 1`, its rows counted.
protocol CountedStatement: PostgresPreparedStatement where Row == Int {}
extension CountedStatement {
    func decodeRow(_ row: PostgresRow) throws -> Int { 1 }
}

struct BeginStatement: TagStatement { static let sql = SQL.begin }
struct LockStatement: TagStatement { static let sql = SQL.lock }
struct CommitStatement: TagStatement { static let sql = SQL.commit }

struct HeaderStatement: RowsStatement {
    static let sql = SQL.header
    func makeBindings() throws -> PostgresBindings { PostgresBindings() }
}
struct ProfileStatement: RowsStatement {
    static let sql = SQL.numbered(SQL.profile)
    let name: String
    func makeBindings() throws -> PostgresBindings { var b = PostgresBindings(capacity: 1); b.append(name); return b }
}
struct EnvironmentStatement: RowsStatement {
    static let sql = SQL.numbered(SQL.environment)
    let name: String
    func makeBindings() throws -> PostgresBindings { var b = PostgresBindings(capacity: 1); b.append(name); return b }
}
struct VersionsStatement: RowsStatement {
    static let sql = SQL.numbered(SQL.versions)
    let profileID: Int64
    func makeBindings() throws -> PostgresBindings { var b = PostgresBindings(capacity: 1); b.append(profileID); return b }
}
struct TokenCacheStatement: RowsStatement {
    static let sql = SQL.numbered(SQL.tokenCache)
    let profileID: Int64
    let environment: String
    func makeBindings() throws -> PostgresBindings {
        var b = PostgresBindings(capacity: 2); b.append(profileID); b.append(environment); return b
    }
}
struct AuditHeadStatement: RowsStatement {
    static let sql = SQL.auditHead
    func makeBindings() throws -> PostgresBindings { PostgresBindings() }
}
struct FingerprintStatement: RowsStatement {
    static let sql = SQL.numbered(SQL.fingerprint)
    let schema: String
    let tables: String
    func makeBindings() throws -> PostgresBindings {
        var b = PostgresBindings(capacity: 3); b.append(schema); b.append(tables); b.append(schema); return b
    }
}
struct AuditInsertStatement: CountedStatement {
    static let sql = SQL.numbered(SQL.returningEachRow(SQL.auditInsert)!)
    let w: Workload
    let seq: Int64
    let now: Int64
    func makeBindings() throws -> PostgresBindings {
        var b = PostgresBindings(capacity: 22)
        b.append("token"); b.append(now); b.append(Int64(0)); b.appendNull(); b.append(Int64(0))
        b.append(w.environmentName); b.append(now / 1000 + 3599); b.append(Int64(3599))
        b.append("password"); b.appendNull(); b.append(Int64(1)); b.append(ByteBuffer(bytes: w.mac)); b.append("owner")
        b.appendNull(); b.append("cache_hit"); b.append(w.profileName); b.appendNull(); b.append(seq)
        b.append(ByteBuffer(bytes: w.signature)); b.append(w.tokenFingerprint); b.append("Bearer"); b.append(w.tokenURL)
        return b
    }
}
struct AuditHeadUpsertStatement: CountedStatement {
    static let sql = SQL.numbered(SQL.returningEachRow(SQL.auditHeadUpsert)!)
    let w: Workload
    let seq: Int64
    func makeBindings() throws -> PostgresBindings {
        var b = PostgresBindings(capacity: 4)
        b.append(seq); b.append(Int64(1)); b.append(ByteBuffer(bytes: w.mac)); b.append(ByteBuffer(bytes: w.headMAC))
        return b
    }
}

func rows<S: PostgresPreparedStatement>(_ conn: PostgresConnection, _ statement: S, _ logger: Logger) async throws -> [S.Row] {
    var out: [S.Row] = []
    for try await row in try await conn.execute(statement, logger: logger) { out.append(row) }
    return out
}

/// One cache hit with `PostgresPreparedStatement`s on a leased connection, awaited in
/// turn; the digest through `client.execute` on another pooled connection meanwhile.
func cacheHitPreparedStatements(_ client: PostgresClient, _ w: Workload, logger: Logger) async throws {
    try await client.withConnection { conn in
        _ = try await rows(conn, BeginStatement(), logger)
        _ = try await rows(conn, LockStatement(), logger)
        Phases.mark(1)
        async let digest: String? = {
            guard w.withDigest else { return w.expectedFingerprint }
            var fingerprint: String?
            for try await row in try await client.execute(FingerprintStatement(schema: w.schema, tables: w.tableList), logger: logger) {
                fingerprint = row["fingerprint"]?.text
            }
            return fingerprint
        }()
        guard try await rows(conn, HeaderStatement(), logger).count == 1 else { throw BenchError("no header") }
        guard try await rows(conn, ProfileStatement(name: w.profileName), logger).first?["id"]?.int == w.profileID else { throw BenchError("no profile") }
        guard try await rows(conn, EnvironmentStatement(name: w.environmentName), logger).count == 1 else { throw BenchError("no environment") }
        guard try await rows(conn, VersionsStatement(profileID: w.profileID), logger).count == 2 else { throw BenchError("versions") }
        guard try await rows(conn, TokenCacheStatement(profileID: w.profileID, environment: w.environmentName), logger).count == 1
        else { throw BenchError("no token") }
        guard let newest = try await rows(conn, AuditHeadStatement(), logger).first?["newest_seq"]?.int else { throw BenchError("no audit head") }
        Phases.mark(2)
        let seq = newest + 1
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        guard try await rows(conn, AuditInsertStatement(w: w, seq: seq, now: now), logger).count == 1 else { throw BenchError("audit insert") }
        guard try await rows(conn, AuditHeadUpsertStatement(w: w, seq: seq), logger).count == 1 else { throw BenchError("audit head") }
        Phases.mark(3)
        guard try await digest == w.expectedFingerprint else { throw BenchError("schema digest moved") }
        Phases.mark(4)
        _ = try await rows(conn, CommitStatement(), logger)
        Phases.mark(5)
    }
}
