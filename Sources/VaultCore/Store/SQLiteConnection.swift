import Foundation
import GRDB

/// A transaction or snapshot on a vault file through GRDB (``FileStore``). Queries and
/// checked writes use the connection's prepared-statement cache: the agent runs the same
/// few statements for every token.
final class SQLiteConnection: SQLiteDialect {
    let db: Database

    init(_ db: Database) { self.db = db }

    var changesCount: Int { db.changesCount }

    func execute(sql: String, values: [DatabaseValue]) throws {
        try FaultPoint.reached(FaultPoint.statement)
        try db.execute(sql: sql, arguments: StatementArguments(values))
    }

    func executeExpecting(sql: String, values: [DatabaseValue], changes: Int, failure: any Error) throws {
        try FaultPoint.reached(FaultPoint.statement)
        try db.cachedStatement(sql: sql).execute(arguments: StatementArguments(values))
        guard db.changesCount == changes else { throw failure }
    }

    func rows(sql: String, values: [DatabaseValue]) throws -> [Row] {
        try FaultPoint.reached(FaultPoint.statement)
        return try Row.fetchAll(db.cachedStatement(sql: sql), arguments: StatementArguments(values))
    }

    func column(sql: String, values: [DatabaseValue], firstRowOnly: Bool) throws -> [DatabaseValue] {
        try FaultPoint.reached(FaultPoint.statement)
        let statement = try db.cachedStatement(sql: sql)
        guard statement.columnCount == 1 else {
            throw VaultError.failure("internal error: a scalar query returned \(statement.columnCount) columns")
        }
        if firstRowOnly {
            return try DatabaseValue.fetchOne(statement, arguments: StatementArguments(values)).map { [$0] } ?? []
        }
        return try DatabaseValue.fetchAll(statement, arguments: StatementArguments(values))
    }

    func records<Record: FetchableRecord>(_ type: Record.Type, sql: String, values: [DatabaseValue]) throws -> [Record] {
        try FaultPoint.reached(FaultPoint.statement)
        return try Record.fetchAll(db.cachedStatement(sql: sql), arguments: StatementArguments(values))
    }
}

/// What a vault file's connections (``SQLiteConnection``, ``LeanReader``) write in
/// SQLite's own dialect: listings built by SQLite's JSON functions, which do the escaping
/// and are fast on large vaults.
protocol SQLiteDialect: StoreConnection {}

extension SQLiteDialect {
    /// The grant's command-line spelling is bound from ``GrantType`` (one `WHEN` per
    /// case); each row's stored grant type is checked, as the records' decoding checks it.
    func profileListing() throws -> [String] {
        var spellings = ""
        var values: [DatabaseValue] = []
        for grant in GrantType.allCases {
            spellings += " WHEN ? THEN ?"
            values += [grant.rawValue.databaseValue, grant.flagValue.databaseValue]
        }
        return try pairs(sql: """
            SELECT grant_type, json_object('name', name, 'client_id', client_id, 'username', username,
                'grant', CASE grant_type\(spellings) END,
                'scope', scope, 'environment', environment, 'created_at', created_at, 'updated_at', updated_at)
            FROM profile ORDER BY name
            """, values: values).map { grant, json in
            guard let grant = String.fromDatabaseValue(grant), GrantType(rawValue: grant) != nil,
                  let json = String.fromDatabaseValue(json) else { throw VaultError.malformedRow }
            return json
        }
    }

    func auditListing(filter: String, values: [DatabaseValue], withMember: Bool) throws -> [(seq: Int64, json: String)] {
        let object = """
            json_object('seq', seq, 'at', at, 'action', action, 'profile', profile, 'environment', environment,
                'token_url', token_url, 'grant_type', grant_type, 'outcome', outcome, 'http_status', http_status,
                'oauth_error', oauth_error, 'attempts', attempts, 'duration_ms', duration_ms, 'token_type', token_type,
                'expires_in', expires_in, 'expires_at', expires_at, 'request_id', request_id,
                'token_fingerprint', token_fingerprint, 'detail', detail\(withMember ? ", 'member', member" : ""))
            """
        return try pairs(sql: "SELECT seq, \(object) AS json FROM audit_record" + filter, values: values).map { seq, json in
            guard let seq = Int64.fromDatabaseValue(seq), let json = String.fromDatabaseValue(json) else {
                throw VaultError.integrity("an audit record has no sequence number or could not be written as JSON")
            }
            return (seq: seq, json: json)
        }
    }

    /// SQLite numbers a new row after the largest id by itself.
    func continueNumbering(table: String, column: String) throws {}
}
