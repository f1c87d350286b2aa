import Foundation
import PostgresNIO

// (a) Today's way: PostgresStore / PostgresSession of Sources/VaultCore/Store/PostgresStore.swift,
// without GRDB: PostgresConnection, `.wait()` on the calling thread, named statements
// prepared once per connection with `connection.prepare(query:)` and kept by SQL text,
// `?` rewritten to `$n`, BEGIN / the lock and the two audit writes sent without waiting
// (checked at the next wait), the schema digest on a second pooled session while the
// body runs, COMMIT sent and (a write) waited for.

final class LegacySession {
    let connection: PostgresConnection
    private var pending: [(future: EventLoopFuture<Int?>, changes: Int?, prepared: String?)] = []
    fileprivate var prepared: [String: PreparedQuery] = [:]

    init(connection: PostgresConnection) { self.connection = connection }

    func send(_ sql: String, _ values: [PostgresData] = [], expectingChanges: Int? = nil) throws {
        if expectingChanges == nil, let statement = try preparedStatement(sql) {
            pending.append((statement.execute(values).map { _ in nil }, nil, sql))
        } else if let expectingChanges, let counted = SQL.returningEachRow(sql), let statement = try preparedStatement(counted) {
            pending.append((statement.execute(values).map { $0.count }, expectingChanges, counted))
        } else {
            throw BenchError("unprepared path not modelled")
        }
    }

    func flush() throws {
        let sent = pending
        pending.removeAll()
        var first: (any Error)?
        for entry in sent {
            do {
                let changed = try entry.future.wait()
                if let expected = entry.changes, (changed ?? 0) != expected, first == nil {
                    first = BenchError("a write changed an unexpected number of rows")
                }
            } catch {
                if let sql = entry.prepared { prepared[sql] = nil }
                if first == nil { first = error }
            }
        }
        if let first { throw first }
    }

    func rows(_ sql: String, _ values: [PostgresData] = []) throws -> [DecodedRow] {
        guard let statement = try preparedStatement(sql) else { throw BenchError("unprepared") }
        let future = statement.execute(values)
        try flush()
        do {
            return try future.wait().map { try decodeCells($0, format: .binary) }
        } catch {
            prepared[sql] = nil
            throw error
        }
    }

    struct Pending {
        let session: LegacySession
        let sql: String
        let future: EventLoopFuture<[PostgresRow]>
        func rows() throws -> [DecodedRow] {
            do {
                return try future.wait().map { try decodeCells($0, format: .binary) }
            } catch {
                session.prepared[sql] = nil
                throw error
            }
        }
    }

    func start(_ sql: String, _ values: [PostgresData] = []) throws -> Pending {
        guard let statement = try preparedStatement(sql) else { throw BenchError("unprepared") }
        return Pending(session: self, sql: sql, future: statement.execute(values))
    }

    private func preparedStatement(_ sql: String) throws -> PreparedQuery? {
        if let known = prepared[sql] { return known }
        try flush()
        let made = try connection.prepare(query: SQL.numbered(sql)).wait()
        prepared[sql] = made
        return made
    }

    func close() { try? connection.close().wait() }
}

/// PostgresStore's pool: idle sessions in an array under a lock.
final class LegacyStore {
    let configuration: PostgresConnection.Configuration
    private let lock = NSLock()
    private var idle: [LegacySession] = []
    private var nextID = 1
    private var all: [LegacySession] = []
    let logger: Logger

    init(configuration: PostgresConnection.Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    private func openSession() throws -> LegacySession {
        let id = lock.withLock { () -> Int in
            defer { nextID += 1 }
            return nextID
        }
        let connection = try PostgresConnection.connect(on: MultiThreadedEventLoopGroup.singleton.next(), configuration: configuration,
                                                        id: id, logger: logger).wait()
        let session = LegacySession(connection: connection)
        lock.withLock { all.append(session) }
        return session
    }

    func checkOut() throws -> LegacySession {
        if let session = lock.withLock({ idle.popLast() }) {
            if !session.connection.isClosed { return session }
            session.close()
        }
        return try openSession()
    }

    func checkIn(_ session: LegacySession) {
        guard !session.connection.isClosed else { return }
        lock.withLock { idle.append(session) }
    }

    func close() {
        let sessions = lock.withLock { all }
        sessions.forEach { $0.close() }
    }
}

/// One cache hit, today's way (synchronous: the agent calls the store from a task and
/// blocks that thread in `.wait()`).
func cacheHitLegacy(_ store: LegacyStore, _ w: Workload) throws {
    let session = try store.checkOut()
    var checker: LegacySession?
    defer { if let checker { store.checkIn(checker) } }
    try session.send(SQL.begin)
    try session.send(SQL.lock)
    try session.flush()
    Phases.mark(1)
    var digest: LegacySession.Pending?
    if w.withDigest {
        let side = try store.checkOut()
        checker = side
        digest = try side.start(SQL.fingerprint, [PostgresData(string: w.schema), PostgresData(string: w.tableList), PostgresData(string: w.schema)])
    }

    guard try session.rows(SQL.header).count == 1 else { throw BenchError("no header") }
    guard try session.rows(SQL.profile, [PostgresData(string: w.profileName)]).first?["id"]?.int == w.profileID else { throw BenchError("no profile") }
    guard try session.rows(SQL.environment, [PostgresData(string: w.environmentName)]).count == 1 else { throw BenchError("no environment") }
    guard try session.rows(SQL.versions, [PostgresData(int64: w.profileID)]).count == 2 else { throw BenchError("versions") }
    guard try session.rows(SQL.tokenCache, [PostgresData(int64: w.profileID), PostgresData(string: w.environmentName)]).count == 1 else { throw BenchError("no token") }
    guard let newest = try session.rows(SQL.auditHead).first?["newest_seq"]?.int else { throw BenchError("no audit head") }
    Phases.mark(2)
    let seq = newest + 1
    let now = Int64(Date().timeIntervalSince1970 * 1000)
    try session.send(SQL.auditInsert, [
        PostgresData(string: "token"), PostgresData(int64: now), PostgresData(int64: 0), .null, PostgresData(int64: 0),
        PostgresData(string: w.environmentName), PostgresData(int64: now / 1000 + 3599), PostgresData(int64: 3599),
        PostgresData(string: "password"), .null, PostgresData(int64: 1), PostgresData(bytes: w.mac), PostgresData(string: "owner"),
        .null, PostgresData(string: "cache_hit"), PostgresData(string: w.profileName), .null, PostgresData(int64: seq),
        PostgresData(bytes: w.signature), PostgresData(string: w.tokenFingerprint), PostgresData(string: "Bearer"),
        PostgresData(string: w.tokenURL),
    ], expectingChanges: 1)
    try session.send(SQL.auditHeadUpsert, [PostgresData(int64: seq), PostgresData(int64: 1), PostgresData(bytes: w.mac),
                                           PostgresData(bytes: w.headMAC)], expectingChanges: 1)
    try session.flush()
    Phases.mark(3)
    guard try digest.map({ try $0.rows().first?["fingerprint"]?.text }) ?? w.expectedFingerprint == w.expectedFingerprint else { throw BenchError("schema digest moved") }
    Phases.mark(4)
    try session.send(SQL.commit)
    try session.flush()
    Phases.mark(5)
    store.checkIn(session)
}
