import Foundation
import GRDB
import NIOSSL
import PostgresNIO

// What a team vault answers as a ``VaultStore``, and how its errors read.
extension PostgresStore {
    // MARK: - The vault store

    /// Opens the vault at `location`, its schema checked (FORMAT.md §11.3).
    static func open(_ location: PostgresLocation) throws(VaultError) -> PostgresStore {
        let store = try connect(location)
        _ = try store.checkSchema()
        return store
    }

    /// Creates a vault at `location` (``create(populate:)``).
    static func create(_ location: PostgresLocation, populate: (StoreDB) throws -> Void) throws(VaultError) -> PostgresStore {
        let store = try connect(location)
        try store.create(populate: populate)
        return store
    }

    var path: String { location.display }
    var knownMigrations: [String] { Self.knownMigrations }
    var formatMigrations: [UInt32: String] { Self.formatMigrations }
    func appliedMigrations() throws(VaultError) -> [String] { try checkSchema() }
    var isStillInPlace: Bool { true }
    /// The header is read over the network: at most every 2 s, so that the agent's checks
    /// between requests do not add a round trip to each.
    var headerPollInterval: TimeInterval { 2 }
    var agentSocketPath: String? { AgentProtocol.socketPath(store: location.identity) }
    var locationIdentity: String { location.identity }

    /// The URL without its password; the password in the agent's environment, readable
    /// only by this user (as libpq's `PGPASSWORD`); a second socket name by the URL as the
    /// command was given it, unless that URL holds a password (its digest would name the
    /// password in the agent's arguments).
    func agentLaunch(vaultPath: String) -> AgentLaunchNames {
        var names = AgentLaunchNames(vaultArgument: location.display)
        if let password = location.password { names.environment["PGPASSWORD"] = password }
        if URLComponents(string: vaultPath)?.password == nil { names.urlLink = AgentProtocol.urlLink(vaultPath) }
        return names
    }

    func backup(to destination: String) throws(VaultError) {
        throw .usage("`vault backup` copies a vault file; for a PostgreSQL vault use `vault copy --to FILE` (or the server's own backups)")
    }

    /// PostgreSQL enforces its foreign keys and checks its pages itself.
    func integrityProblems() throws(VaultError) -> [String] { [] }

    func isSameVault(as destination: String) -> Bool {
        guard PostgresLocation.isURL(destination), let other = try? PostgresLocation.parse(destination) else { return false }
        return other.identity == location.identity
    }

    func storageError(_ error: any Error) -> VaultError { Self.map(error, location: location) }

    /// The location, the server, TLS and the rights this user has.
    func doctorChecks() throws(VaultError) -> [DoctorReport.Check] {
        var checks: [DoctorReport.Check] = []
        func add(_ name: String, _ status: String, _ detail: String) { checks.append(.init(name: name, status: status, detail: detail)) }
        add("location", "ok", location.display)
        let server = try serverReport()
        add("server", "ok", "PostgreSQL \(server.version)")
        switch (location.sslMode, server.tls) {
        case (.verifyFull, true): add("tls", "ok", "TLS, certificate and host name verified")
        case (.verifyCA, true): add("tls", "warn", "TLS, certificate verified but not the host name (sslmode=verify-ca)")
        case (.require, true): add("tls", "warn", "TLS without certificate verification (sslmode=require): a machine in the middle can read the traffic")
        case (_, false) where location.host.hasPrefix("/") || ["127.0.0.1", "::1", "localhost"].contains(location.host):
            add("tls", "warn", "no TLS (sslmode=\(location.sslMode.rawValue)) to a local server")
        default: add("tls", "fail", "no TLS (sslmode=\(location.sslMode.rawValue)): metadata and sealed values cross the network in clear")
        }
        add("grants", server.missingGrants.isEmpty ? "ok" : "fail", server.missingGrants.isEmpty
            ? "SELECT, INSERT, UPDATE, DELETE on every vault table" : "missing: " + server.missingGrants.joined(separator: ", "))
        return checks
    }

    // MARK: - Errors

    /// Maps PostgreSQL and connection errors to vault errors; never includes statement
    /// arguments, a password or the server's `detail` field (which can quote values).
    static func map(_ error: any Error, location: PostgresLocation, committing: Bool = false) -> VaultError {
        if let error = error as? VaultError { return error }
        if error is RowDecodingError { return .malformedRow }
        let lost = committing
            ? "the connection to the PostgreSQL server was lost while committing: the change may or may not have been written"
            : "the connection to the PostgreSQL server was lost; nothing was changed"
        func isTLS(_ error: any Error) -> Bool {
            let text = String(describing: error)
            return error is NIOSSLError || String(describing: type(of: error)).contains("SSL") || text.contains("handshake") || text.contains("certificate")
        }
        func tlsFailure(_ error: any Error) -> VaultError {
            .failure("TLS with the PostgreSQL server at \(location.host) failed: \(String(describing: error).sanitisedForDisplay(limit: 200))",
                     hint: "check sslmode, sslrootcert / PGSSLROOTCERT and the server's certificate name")
        }
        // Prepared statements report through PostgresNIO's legacy API, which turns its errors
        // into `PostgresError`s: a server error keeps its fields (read as below), a closed
        // connection is `.connectionClosed`, an unclean close a protocol error.
        var serverError: (state: String, message: String)?
        if let legacy = error as? PostgresError {
            switch legacy {
            case .server(let notice):
                serverError = (notice.fields[.sqlState] ?? "", notice.fields[.message] ?? "error")
            case .connectionClosed:
                return .failure(lost, hint: "check the server, then run the command again")
            case .protocol(let what):
                if what.contains("connection close") { return .failure(lost, hint: "check the server, then run the command again") }
                // Its text can quote a server message verbatim (a data row among them): not shown,
                // as for PSQLError's protocol codes below.
                return .failure("PostgreSQL: protocol error")
            }
        } else if let error = error as? PSQLError, error.code == .server {
            serverError = (error.serverInfo?[.sqlState] ?? "", error.serverInfo?[.message] ?? "error")
        }
        if let serverError {
            let state = serverError.state
            let message = serverError.message.sanitisedForDisplay(limit: 200)
            switch state {
            case "55P03":
                return .failure("the vault is locked by another writer (waited \(Int(Stores.busyTimeout)) s); nothing was changed",
                                hint: "retry when the other vault process has finished")
            case "57P01", "57P02", "57P03", "08000", "08003", "08006":
                return .failure(lost, hint: "check the server, then run the command again")
            case "28P01", "28000":
                return .failure("the PostgreSQL server refused the login for user \(location.user.sanitisedForDisplay(limit: 64))",
                                hint: "set the password in PGPASSWORD or ~/.pgpass (never on the command line)")
            case "3D000":
                return .notFound("no database \(location.database.sanitisedForDisplay(limit: 64)) on the PostgreSQL server (no vault at \(location.display))")
            case "3F000", "42P01":
                return .notFound("no vault at \(location.display)")
            case "42501":
                return .failure("PostgreSQL permission denied: \(message)", hint: "`vault doctor` lists the rights the vault needs")
            case "40001", "40P01":
                return .failure("a concurrent change conflicted with this one; nothing was changed", hint: "run the command again")
            case _ where state.hasPrefix("23"):
                return .integrity("the vault data violates a schema constraint (\(message))")
            case "53100":
                return .failure("the PostgreSQL server's disk is full: the change was not written and the vault is unchanged")
            default:
                return .failure("PostgreSQL error \(state): \(message)")
            }
        }
        guard let error = error as? PSQLError else {
            if isTLS(error) { return tlsFailure(error) }
            return .failure("PostgreSQL: \(String(describing: error).sanitisedForDisplay(limit: 200))")
        }
        if let underlying = error.underlying, isTLS(underlying) { return tlsFailure(underlying) }
        switch error.code {
        case .connectionError, .serverClosedConnection, .uncleanShutdown, .clientClosedConnection:
            if !committing, error.underlying.map({ String(describing: $0).contains("refused") || String(describing: $0).contains("connect") }) == true {
                return .failure("cannot connect to the PostgreSQL server at \(location.host):\(location.port)",
                                hint: "check that the server is running and reachable")
            }
            return .failure(lost, hint: "check the server, then run the command again")
        case .sslUnsupported:
            return .failure("the PostgreSQL server at \(location.host) does not offer TLS (sslmode=\(location.sslMode.rawValue))",
                            hint: "enable ssl on the server; sslmode=disable only on a private network or socket")
        case .failedToAddSSLHandler:
            return .failure("TLS with the PostgreSQL server at \(location.host) could not be set up")
        case .authMechanismRequiresPassword:
            return .failure("the PostgreSQL server wants a password for user \(location.user.sanitisedForDisplay(limit: 64))",
                            hint: "set it in PGPASSWORD or ~/.pgpass (never on the command line)")
        default:
            return .failure("PostgreSQL: \(String(describing: error.code).sanitisedForDisplay(limit: 100))")
        }
    }
}
