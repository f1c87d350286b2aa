import Foundation
import GRDB
import Testing
import VaultTestSupport
@testable import VaultCore

@Suite("PostgreSQL store (unit)", .serialized)
struct PostgresStoreTests {
    static let migrations = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Migrations/postgres")

    @Test("Migrations/postgres/NAME.schema.json is what the migrations create on a real server (GBG_VAULT_WRITE_SCHEMA=1 rewrites it)")
    func embeddedSchemaMatchesServer() throws {
        guard let server = try startPostgres() else { return }
        defer { server.stop() }
        setenv("PGPASSWORD", server.adminPassword, 1)
        defer { unsetenv("PGPASSWORD") }
        let location = try PostgresLocation.parse(server.url(schema: "schema_check"))
        let store = try PostgresStore.connect(location)
        defer { store.close() }
        try store.create { _ in }
        let actual = try store.currentSchemaEntries()
        let name = PostgresStore.knownMigrations.last!
        let file = Self.migrations.appendingPathComponent("\(name).schema.json")
        if ProcessInfo.processInfo.environment["GBG_VAULT_WRITE_SCHEMA"] == "1" {
            let data = try JSONSerialization.data(withJSONObject: actual, options: [.prettyPrinted, .withoutEscapingSlashes])
            try (data + Data("\n".utf8)).write(to: file)
        }
        let committed = try? JSONSerialization.jsonObject(with: Data(contentsOf: file)) as? [String]
        #expect(committed == actual, "\(name).schema.json is out of date: run GBG_VAULT_WRITE_SCHEMA=1 swift test --filter PostgresStore")
        #expect(embeddedPostgresSchemas[name] == actual, "the embedded \(name) schema is stale: rebuild")
        // A second vault in the same schema is refused; the first is untouched.
        #expect(throws: VaultError.self) { try store.create { _ in } }
    }

    /// A PostgreSQL server of the test's own, a vault's schema `schema` in it and a store on
    /// it, and `tables` made by the administrator in a schema of their own (`schema_data`:
    /// every transaction checks the vault's schema, which must hold the vault's tables only);
    /// the admin password in PGPASSWORD meanwhile; everything stopped afterwards.
    private func withStore(schema: String, tables: String, _ body: (PostgresServer, PostgresStore) throws -> Void) throws {
        guard let server = try startPostgres() else { return }
        defer { server.stop() }
        setenv("PGPASSWORD", server.adminPassword, 1)
        defer { unsetenv("PGPASSWORD") }
        let store = try PostgresStore.connect(try PostgresLocation.parse(server.url(schema: schema)))
        defer { store.close() }
        try store.create { _ in }
        _ = try server.psql("CREATE SCHEMA \(schema)_data; SET search_path = \(schema)_data; " + tables, database: "vault")
        try body(server, store)
    }

    @Test("prepared reads: every column type read as written, reused, and prepared again after a schema change")
    func preparedReads() throws {
        let tables = "CREATE TABLE kinds (id BIGINT PRIMARY KEY, name TEXT, blob BYTEA, flag BOOLEAN, ratio DOUBLE PRECISION, small INTEGER)"
        try withStore(schema: "prepared_reads", tables: tables) { server, store in
            try store.write { db in
                try db.execute(sql: "INSERT INTO prepared_reads_data.kinds VALUES (?, ?, ?, true, ?, ?)",
                               arguments: [Int64.max, "nön-ascii ✓", Data([0, 1, 255]), 0.25, -7])
                try db.execute(sql: "INSERT INTO prepared_reads_data.kinds (id) VALUES (?)", arguments: [-1])
            }
            let sql = "SELECT * FROM prepared_reads_data.kinds WHERE id = ? OR name = ? ORDER BY id"
            for _ in 0..<3 {  // prepared on first use, then bound and executed again
                let rows = try store.read { db in try db.rows(sql: sql, arguments: [-1, "nön-ascii ✓"]) }
                #expect(rows.count == 2)
                #expect(rows[0]["id"] as Int64? == -1 && rows[0]["name"] as String? == nil && rows[0]["blob"] as Data? == nil)
                #expect(rows[1]["id"] as Int64? == Int64.max && rows[1]["name"] as String? == "nön-ascii ✓")
                #expect(rows[1]["blob"] as Data? == Data([0, 1, 255]) && rows[1]["flag"] as Int64? == 1)
                #expect(rows[1]["ratio"] as Double? == 0.25 && rows[1]["small"] as Int64? == -7)
            }
            // Another connection changes the table's columns: the plan is stale once (the
            // server refuses it), then the query is prepared again and reads the new column.
            _ = try server.psql("ALTER TABLE prepared_reads_data.kinds ADD COLUMN extra TEXT DEFAULT 'added'", database: "vault")
            var failures = 0
            var extra: String?
            for _ in 0..<3 where extra == nil {
                do {
                    extra = try store.read { db in try db.rows(sql: sql, arguments: [-1, "x"]) }.first?["extra"]
                } catch {
                    failures += 1
                }
            }
            #expect(extra == "added" && failures <= 2, "at most once on each of the two pooled sessions (a transaction and its schema check)")
        }
    }

    @Test("queries sent ahead of a write come back to the same query in it, and never to another transaction")
    func prefetchedReads() throws {
        let tables = "CREATE TABLE counters (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)"
        try withStore(schema: "prefetch", tables: tables) { _, store in
            try store.write { db in try db.execute(sql: "INSERT INTO prefetch_data.counters VALUES (1, 10), (2, 20)") }
            let one = StoreQuery("SELECT n FROM prefetch_data.counters WHERE id = ?", [1])
            let two = StoreQuery("SELECT n FROM prefetch_data.counters WHERE id = ?", [2])
            // Read in the body: the answers sent ahead, for exactly those values.
            let read = try store.write(prefetching: [one, two]) { db -> [Int64?] in
                [try db.rows(two).first?["n"], try db.rows(one).first?["n"], try Int64.fetchOne(db, sql: one.sql, arguments: [2])]
            }
            #expect(read == [20, 10, 20])
            // Sent ahead but not read: forgotten with the transaction; the next one reads afresh.
            try store.write(prefetching: [one]) { db in try db.execute(sql: "UPDATE prefetch_data.counters SET n = 11 WHERE id = 1") }
            #expect(try store.write { db in try db.rows(one).first?["n"] as Int64? } == 11)
            for _ in 0..<3 {
                #expect(try store.write(prefetching: [one]) { _ in 0 } == 0)
                #expect(try store.read { db in try db.rows(one).first?["n"] as Int64? } == 11)
            }
            // A query sent ahead that fails fails the transaction, nothing written.
            #expect(throws: VaultError.self) {
                try store.write(prefetching: [StoreQuery("SELECT no_such_column FROM prefetch_data.counters")]) { db in
                    try db.execute(sql: "UPDATE prefetch_data.counters SET n = 99 WHERE id = 2")
                }
            }
            #expect(try store.read { db in try db.rows(two).first?["n"] as Int64? } == 20)
        }
    }

    @Test("checked writes sent prepared count the rows they change, and a suppressed write fails its check")
    func preparedCheckedWrites() throws {
        try withStore(schema: "checked_writes", tables: "CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT)") { server, store in
            let suppressed = VaultError.integrity("suppressed write")
            func isSuppressed(_ error: any Error) -> Bool { (error as? VaultError).map { "\($0)".contains("suppressed write") && $0.exitCode == 7 } ?? false }
            #expect(PostgresSession.returningEachRow("INSERT INTO checked_writes_data.items (id) VALUES (?)") == "INSERT INTO checked_writes_data.items (id) VALUES (?) RETURNING 1")
            #expect(PostgresSession.returningEachRow("SELECT 1") == nil && PostgresSession.returningEachRow("DELETE FROM t RETURNING id") == nil)
            for round in 0..<2 {  // prepared on the first round, reused on the second
                try store.write { db in
                    try db.executeExpecting(sql: "INSERT INTO checked_writes_data.items (id, name) VALUES (?, ?)", arguments: [round * 10 + 1, "a"], changes: 1, failure: suppressed)
                    try db.executeExpecting(sql: "INSERT INTO checked_writes_data.items (id, name) VALUES (?, ?)", arguments: [round * 10 + 2, "a"], changes: 1, failure: suppressed)
                    try db.executeExpecting(sql: "UPDATE checked_writes_data.items SET name = ? WHERE name = ?", arguments: ["b", "a"], changes: 2, failure: suppressed)
                }
            }
            #expect(performing: {
                try store.write { db in
                    try db.executeExpecting(sql: "UPDATE checked_writes_data.items SET name = ? WHERE name = ?", arguments: ["c", "b"], changes: 1, failure: suppressed)
                }
            }, throws: isSuppressed)
            #expect(try store.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM checked_writes_data.items WHERE name = 'c'") } == 0)  // rolled back
            // A trigger that drops the row: the insert reports no error, but its count is 0.
            _ = try server.psql("CREATE FUNCTION checked_writes_data.drop_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$; "
                                + "CREATE TRIGGER t BEFORE INSERT ON checked_writes_data.items FOR EACH ROW EXECUTE FUNCTION checked_writes_data.drop_row()",
                                database: "vault")
            #expect(performing: {
                try store.write { db in
                    try db.executeExpecting(sql: "INSERT INTO checked_writes_data.items (id, name) VALUES (?, ?)", arguments: [99, "z"], changes: 1, failure: suppressed)
                }
            }, throws: isSuppressed)
            // A statement prepared while a column had a domain type binds that type; once the
            // domain is gone it fails ("cache lookup failed for type") until it is prepared
            // again: a failed sent statement is forgotten, so the next use works.
            let upsert = "UPDATE checked_writes_data.items SET name = ? WHERE id = ?"
            _ = try server.psql("DROP TRIGGER t ON checked_writes_data.items; CREATE DOMAIN checked_writes_data.label AS text; "
                                + "ALTER TABLE checked_writes_data.items ALTER COLUMN name TYPE checked_writes_data.label", database: "vault")
            for _ in 0..<2 {  // prepared on both pooled sessions
                try store.write { db in try db.executeExpecting(sql: upsert, arguments: ["d", 1], changes: 1, failure: suppressed) }
            }
            _ = try server.psql("ALTER TABLE checked_writes_data.items ALTER COLUMN name TYPE text; DROP DOMAIN checked_writes_data.label",
                                database: "vault")
            var failed = 0
            for _ in 0..<4 {
                do {
                    try store.write { db in try db.executeExpecting(sql: upsert, arguments: ["e", 1], changes: 1, failure: suppressed) }
                } catch {
                    failed += 1
                }
            }
            #expect(failed <= 2, "each pooled session fails once at most, then prepares again (\(failed) failures)")
            #expect(try store.read { db in try String.fetchOne(db, sql: "SELECT name FROM checked_writes_data.items WHERE id = 1") } == "e")
        }
    }

    @Test("URLs: parameters, password sources and unsafe names")
    func urls() throws {
        let full = try PostgresLocation.parse("postgres://alice:s3cret@db.example:6543/gbg?sslmode=verify-ca&schema=team_a&sslrootcert=/etc/ca.pem",
                                              environment: [:])
        #expect(full.user == "alice" && full.host == "db.example" && full.port == 6543 && full.database == "gbg")
        #expect(full.schema == "team_a" && full.sslMode == .verifyCA && full.rootCertificate == "/etc/ca.pem")
        #expect(full.password == "s3cret")
        #expect(!full.display.contains("s3cret") && !full.identity.contains("s3cret"))
        let defaults = try PostgresLocation.parse("postgresql://bob@db/gbg", environment: ["PGPASSWORD": "from-env"])
        #expect(defaults.sslMode == .verifyFull && defaults.schema == PostgresLocation.defaultSchema && defaults.port == 5432)
        #expect(defaults.password == "from-env")
        for bad in ["postgres://db/gbg", "postgres://u@db/", "postgres://u@db/gbg?schema=Bad-Name", "postgres://u@db/gbg?schema=pg_x",
                    "postgres://u@db/gbg?sslmode=allow", "postgres://u@db/gbg?password=x", "postgres://u@db:0/gbg"] {
            #expect(throws: VaultError.self, "\(bad)") { try PostgresLocation.parse(bad, environment: [:]) }
        }
        // ~/.pgpass: libpq's format, escapes and wildcards; ignored unless 0600.
        let dir = NSTemporaryDirectory() + "pgpass-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let file = dir + "/pgpass"
        try "# comment\nother:5432:gbg:carol:nope\n*:5432:gbg:carol:pa\\:ss\\\\word\n".write(toFile: file, atomically: true, encoding: .utf8)
        chmod(file, 0o600)
        let fromFile = try PostgresLocation.parse("postgres://carol@db/gbg", environment: ["PGPASSFILE": file])
        #expect(fromFile.password == "pa:ss\\word")
        chmod(file, 0o644)
        #expect(try PostgresLocation.parse("postgres://carol@db/gbg", environment: ["PGPASSFILE": file]).password == nil)
    }

    @Test("the password file as libpq reads it: the password ends at an unescaped ':', \\* is a plain *, a lone \\ at the end is kept, CRs dropped, socket directories by path, empty passwords count as none")
    func passwordFileAsLibpq() throws {
        let dir = NSTemporaryDirectory() + "pgpass-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let file = dir + "/pgpass"
        func password(_ contents: String, _ url: String, _ environment: [String: String] = [:]) throws -> String? {
            try contents.write(toFile: file, atomically: true, encoding: .utf8)
            chmod(file, 0o600)
            return try PostgresLocation.parse(url, environment: ["PGPASSFILE": file].merging(environment) { a, _ in a }).password
        }
        #expect(try password("*:*:*:*:abc:def\n", "postgres://u@db/gbg") == "abc")
        #expect(try password("db:5432:gbg:u:a\\:b\\\n", "postgres://u@db/gbg") == "a:b\\")
        #expect(try password("\\*:5432:gbg:u:literal\n*:5432:gbg:u:wild\n", "postgres://u@db/gbg") == "wild")
        #expect(try password("db:5432:gbg:u:crlf\r\r\n", "postgres://u@db/gbg") == "crlf")
        #expect(try password("db:5432:gbg:u:no-final-newline", "postgres://u@db/gbg") == "no-final-newline")
        #expect(try password("localhost:5432:gbg:u:default-dir\n", "postgres://u@x/gbg?host=/var/run/postgresql") == "default-dir")
        #expect(try password("localhost:5432:gbg:u:default-dir\n", "postgres://u@x/gbg?host=/srv/pg") == nil)
        #expect(try password("/srv/pg:5432:gbg:u:by-path\n", "postgres://u@x/gbg?host=/srv/pg") == "by-path")
        #expect(try password("db:5432:gbg:u:from-file\n", "postgres://u:@db/gbg") == "from-file", "an empty URL password is none")
        #expect(try password("db:5432:gbg:u:from-file\n", "postgres://u@db/gbg", ["PGPASSWORD": ""]) == "from-file", "so is an empty PGPASSWORD")
    }

    @Test("the host as the connection uses it: IPv6 without brackets (a zone decoded), IDNA names in their xn-- form; the environment is read variable by variable")
    func hostAndVariables() throws {
        let hosts = ["127.0.0.1": "127.0.0.1", "db.example": "db.example", "localhost": "localhost", "[::1]": "::1", "[fe80::1]": "fe80::1",
                     "[fe80::1%25eth0]": "fe80::1%eth0", "DB.Example": "DB.Example", "xn--bcher-kva.example": "xn--bcher-kva.example",
                     "bücher.example": "xn--bcher-kva.example"]
        for (written, used) in hosts {
            let location = try PostgresLocation.parse("postgres://u@\(written):5432/gbg", environment: [:], readPasswordFile: false)
            #expect(location.host == used, "\(written)")
            // The display form names the same location again.
            #expect(try PostgresLocation.parse(location.display, environment: [:], readPasswordFile: false).identity == location.identity, "\(written)")
        }
        for refused in ["[::1", "[not-an-address]", "db%3Aa5433", "[fe80::1%25eth%200]"] {
            #expect(throws: VaultError.self, "\(refused)") { try PostgresLocation.parse("postgres://u@\(refused):5432/gbg", environment: [:], readPasswordFile: false) }
        }
        // host= names an IPv6 address or a socket directory too; both are shown again as given.
        for (query, used) in [("host=::1", "::1"), ("host=/srv/pg", "/srv/pg")] {
            let location = try PostgresLocation.parse("postgres://u@x:6000/gbg?\(query)&schema=team2", environment: [:], readPasswordFile: false)
            #expect(location.host == used && location.port == 6000)
            #expect(try PostgresLocation.parse(location.display, environment: [:], readPasswordFile: false) == location, "\(location.display)")
        }
        // The process environment is read variable by variable, and what parse reads from it
        // is what it reads from a dictionary of the same variables.
        #expect(PostgresLocation.environmentVariable("HOME") == ProcessInfo.processInfo.environment["HOME"])
        #expect(PostgresLocation.environmentVariable("GBG_VAULT_SURELY_UNSET_\(UUID().uuidString.prefix(8))") == nil)
        let variables = ["PGUSER": "envuser", "PGPORT": "6544", "PGPASSWORD": "pw", "PGSSLROOTCERT": "/ca.pem"]
        let viaDictionary = try PostgresLocation.parse("postgres://db/gbg", environment: variables, readPasswordFile: false)
        let viaLookup = try PostgresLocation.parse("postgres://db/gbg", variable: { variables[$0] }, readPasswordFile: false)
        #expect(viaDictionary == viaLookup && viaLookup.user == "envuser" && viaLookup.port == 6544 && viaLookup.rootCertificate == "/ca.pem")
    }

    @Test("CompactJSON writes what SQLite's json_object writes, byte for byte")
    func compactJSONMatchesSQLite() throws {
        let queue = try DatabaseQueue()
        var samples = ["", "plain", "quote \" backslash \\ slash /", "tab\tnl\ncr\r", "\u{01}\u{08}\u{0C}\u{1F}\u{7F}", "é ✓ 𝄞 \u{2028}"]
        // From 1: SQLite's json_object stops a string at NUL, and PostgreSQL text cannot
        // hold NUL at all (vault refuses control characters in names and fields anyway).
        samples += (1..<32).map { String(UnicodeScalar(UInt8($0))) }
        for sample in samples {
            let sqlite = try queue.read { db in try String.fetchOne(db, sql: "SELECT json_object('s', ?, 'n', NULL, 'i', -42)", arguments: [sample]) }
            var ours = CompactJSON()
            ours.str("s", sample); ours.str("n", nil); ours.int("i", -42)
            #expect(ours.text == sqlite, "\(sample.unicodeScalars.map { $0.value })")
        }
    }

    @Test("placeholders become $n outside quoted text")
    func placeholders() {
        #expect(PostgresSession.numberedPlaceholders("SELECT a FROM t WHERE b = ? AND c IN ('?', ?) AND \"d?\" = ?")
                == "SELECT a FROM t WHERE b = $1 AND c IN ('?', $2) AND \"d?\" = $3")
    }
}
