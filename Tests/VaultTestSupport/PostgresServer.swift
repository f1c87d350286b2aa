import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A real PostgreSQL server for one test suite: `initdb` into a temporary directory
/// (as the `postgres` user when the tests run as root, since PostgreSQL refuses to run as
/// root), password authentication (SCRAM) on 127.0.0.1 at a free port, optionally TLS
/// with a throwaway CA; stopped (`pg_ctl stop -m immediate`) and removed by ``stop()``.
public final class PostgresServer: @unchecked Sendable {
    public let directory: String
    public let port: Int
    public let admin = "vault_admin"
    public let adminPassword: String
    /// Whether the server offers TLS.
    public let tls: Bool
    /// The CA certificate that signed the server's certificate (TLS servers only).
    public var caFile: String? { tls ? directory + "/ca.crt" : nil }
    private let binDirectory: String
    private let runAs: String?
    private var stopped = false

    /// Where PostgreSQL's server programs are (Debian: /usr/lib/postgresql/N/bin), or nil.
    public static var binDirectory: String? {
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        for version in versions.sorted(by: { (Int($0) ?? 0) > (Int($1) ?? 0) }) {
            let dir = "/usr/lib/postgresql/\(version)/bin"
            if FileManager.default.isExecutableFile(atPath: dir + "/initdb") { return dir }
        }
        for dir in ["/usr/local/bin", "/usr/bin"] where FileManager.default.isExecutableFile(atPath: dir + "/initdb") {
            return dir
        }
        return nil
    }

    /// Why the PostgreSQL tests cannot run here, or nil when they can.
    public static var unavailableReason: String? {
        guard binDirectory != nil else { return "PostgreSQL server programs (initdb, pg_ctl) are not installed: apt-get install postgresql" }
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/psql") else { return "psql is not installed: apt-get install postgresql-client" }
        if getuid() == 0, getpwnam("postgres") == nil { return "running as root needs the postgres user to run the server (apt-get install postgresql)" }
        return nil
    }

    public init(tls: Bool = false) throws {
        guard let bin = Self.binDirectory else { throw HarnessError.commandFailed(Self.unavailableReason ?? "no PostgreSQL") }
        binDirectory = bin
        runAs = getuid() == 0 ? "postgres" : nil
        self.tls = tls
        var template = Array("/tmp/gbg-vault-pg-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw HarnessError.commandFailed("mkdtemp failed") }
        directory = String(cString: made)
        adminPassword = "pg-admin-" + UUID().uuidString
        port = try Self.freePort()
        let pwfile = directory + "/pw"
        try adminPassword.write(toFile: pwfile, atomically: true, encoding: .utf8)
        if let runAs, let user = getpwnam(runAs) {
            chown(directory, user.pointee.pw_uid, user.pointee.pw_gid)
            chown(pwfile, user.pointee.pw_uid, user.pointee.pw_gid)
        }
        chmod(directory, 0o700)
        try runServerTool("initdb", ["-D", directory + "/data", "-U", admin, "--pwfile=" + pwfile, "-A", "scram-sha-256",
                                     "-E", "UTF8", "--locale=C", "--no-sync"])
        unlink(pwfile)
        var conf = """
            listen_addresses = '127.0.0.1'
            port = \(port)
            unix_socket_directories = '\(directory)'
            max_connections = 200
            fsync = off
            synchronous_commit = off
            full_page_writes = off
            log_min_messages = warning

            """
        if tls {
            try makeCertificates()
            conf += """
                ssl = on
                ssl_cert_file = '\(directory)/server.crt'
                ssl_key_file = '\(directory)/server.key'

                """
        }
        let confPath = directory + "/data/postgresql.conf"
        let existing = (try? String(contentsOfFile: confPath, encoding: .utf8)) ?? ""
        try (existing + "\n" + conf).write(toFile: confPath, atomically: false, encoding: .utf8)
        try startServer()
        _ = try psql("CREATE DATABASE vault")
    }

    deinit { stop() }

    /// `pg_ctl start` (again, after ``stopServer()``), waiting until it accepts connections.
    public func startServer() throws {
        try runServerTool("pg_ctl", ["-D", directory + "/data", "-l", directory + "/server.log", "-w", "-t", "60", "start"])
    }

    /// `pg_ctl stop -m fast`: ends every session (their transactions roll back).
    public func stopServer() throws {
        try runServerTool("pg_ctl", ["-D", directory + "/data", "-w", "-m", "fast", "stop"])
    }

    /// Stops the server and removes its directory.
    public func stop() {
        guard !stopped else { return }
        stopped = true
        _ = try? runServerTool("pg_ctl", ["-D", directory + "/data", "-m", "immediate", "-w", "stop"])
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// A vault URL on this server (no password in it: tests pass it in `PGPASSWORD`).
    public func url(schema: String, user: String? = nil, database: String = "vault", sslmode: String = "disable", host: String = "127.0.0.1") -> String {
        "postgres://\(user ?? admin)@\(host):\(port)/\(database)?sslmode=\(sslmode)&schema=\(schema)"
    }

    /// Runs SQL as the administrator with psql (unaligned, tuples only); fails on an error.
    @discardableResult
    public func psql(_ sql: String, database: String = "postgres") throws -> String {
        let result = try Binaries.run("/usr/bin/psql", ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", String(port),
                                                         "-U", admin, "-d", database, "-c", sql],
                                      environment: ["PATH": "/usr/bin:/bin", "PGPASSWORD": adminPassword, "PGSSLMODE": "disable"])
        guard result.status == 0 else { throw HarnessError.commandFailed("psql: \(result.stderrText)") }
        return result.stdoutText
    }

    /// Runs a SQL file (a plain `pg_dump`, say) with psql as the administrator; fails on an error.
    public func restore(_ sql: Data, database: String = "vault") throws {
        let file = NSTemporaryDirectory() + "gv-restore-" + UUID().uuidString + ".sql"
        try sql.write(to: URL(fileURLWithPath: file))
        defer { try? FileManager.default.removeItem(atPath: file) }
        let result = try Binaries.run("/usr/bin/psql", ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", String(port),
                                                         "-U", admin, "-d", database, "-f", file],
                                      environment: ["PATH": "/usr/bin:/bin", "PGPASSWORD": adminPassword, "PGSSLMODE": "disable"])
        guard result.status == 0 else { throw HarnessError.commandFailed("psql -f: \(result.stderrText)") }
    }

    /// `pg_dump` of a whole database (plain SQL), or of one schema, as the administrator.
    public func dump(database: String = "vault", schema: String? = nil) throws -> Data {
        let dump = FileManager.default.isExecutableFile(atPath: binDirectory + "/pg_dump") ? binDirectory + "/pg_dump" : "/usr/bin/pg_dump"
        let result = try Binaries.run(dump, ["-h", "127.0.0.1", "-p", String(port), "-U", admin, "-d", database] + (schema.map { ["-n", $0] } ?? []),
                                      environment: ["PATH": "/usr/bin:/bin", "PGPASSWORD": adminPassword, "PGSSLMODE": "disable"])
        guard result.status == 0 else { throw HarnessError.commandFailed("pg_dump: \(result.stderrText)") }
        return result.stdout
    }

    private func runServerTool(_ tool: String, _ arguments: [String]) throws {
        let executable = binDirectory + "/" + tool
        let result: ProcessResult
        if let runAs {
            result = try Binaries.run("/usr/bin/setpriv", ["--reuid=\(runAs)", "--regid=\(runAs)", "--init-groups", "--", executable] + arguments,
                                      environment: ["PATH": "/usr/bin:/bin", "LANG": "C"], timeout: 120)
        } else {
            result = try Binaries.run(executable, arguments, environment: ["PATH": "/usr/bin:/bin", "LANG": "C"], timeout: 120)
        }
        guard result.status == 0 else {
            let log = (try? String(contentsOfFile: directory + "/server.log", encoding: .utf8)) ?? ""
            throw HarnessError.commandFailed("\(tool) failed: \(result.stderrText) \(result.stdoutText) \(log.suffix(2000))")
        }
    }

    /// A CA and a server certificate for `localhost` only (openssl, P-256).
    private func makeCertificates() throws {
        let d = directory
        let steps: [[String]] = [
            ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "\(d)/ca.key",
             "-out", "\(d)/ca.crt", "-subj", "/CN=gbg-vault test CA", "-days", "2"],
            ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "\(d)/server.key",
             "-out", "\(d)/server.csr", "-subj", "/CN=localhost"],
            ["x509", "-req", "-in", "\(d)/server.csr", "-CA", "\(d)/ca.crt", "-CAkey", "\(d)/ca.key", "-CAcreateserial",
             "-out", "\(d)/server.crt", "-days", "2", "-extfile", "\(d)/san.ext"],
        ]
        try "subjectAltName=DNS:localhost\n".write(toFile: "\(d)/san.ext", atomically: true, encoding: .utf8)
        for step in steps {
            let result = try Binaries.run("/usr/bin/openssl", step, environment: ["PATH": "/usr/bin:/bin"])
            guard result.status == 0 else { throw HarnessError.commandFailed("openssl \(step[0]): \(result.stderrText)") }
        }
        chmod("\(d)/server.key", 0o600)
        chmod("\(d)/ca.crt", 0o644)
        if let runAs, let user = getpwnam(runAs) {
            for file in ["server.key", "server.crt", "ca.crt"] { chown("\(d)/\(file)", user.pointee.pw_uid, user.pointee.pw_gid) }
        }
    }

    private static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw HarnessError.commandFailed("no free port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

/// A PostgreSQL server for one test, or nil after recording why there is none: the
/// PostgreSQL tests never pass silently without a server (GBG_VAULT_SKIP_POSTGRES=1
/// turns the missing server into a printed skip, for machines without it; CI has it).
public func startPostgres(tls: Bool = false) throws -> PostgresServer? {
    if let reason = PostgresServer.unavailableReason {
        if ProcessInfo.processInfo.environment["GBG_VAULT_SKIP_POSTGRES"] == "1" {
            print("SKIPPED (GBG_VAULT_SKIP_POSTGRES=1): \(reason)")
        } else {
            Issue.record("this test needs a PostgreSQL server: \(reason)")
        }
        return nil
    }
    return try PostgresServer(tls: tls)
}
