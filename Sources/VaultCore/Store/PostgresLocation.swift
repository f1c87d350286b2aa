import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Where a PostgreSQL vault lives (FORMAT.md §11, README "Team vault"), parsed from
/// `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=…&sslrootcert=…&schema=…&host=/socket/dir]`
/// (`postgresql://` too), the form libpq and psql take.
///
/// The password comes from the URL, else `PGPASSWORD`, else the password file
/// (`PGPASSFILE` or `~/.pgpass`, libpq's format and rules); it is never printed:
/// ``display`` is the URL without it, and every message names the vault by ``display``.
public struct PostgresLocation: Sendable, Equatable {
    public enum SSLMode: String, Sendable {
        /// No TLS (only sensible on loopback or a private socket).
        case disable
        /// TLS, any certificate (libpq's `require`: encrypted, not authenticated).
        case require
        /// TLS, the certificate must chain to the trusted roots; the name is not checked.
        case verifyCA = "verify-ca"
        /// TLS, the certificate must chain to the trusted roots and name the host (default).
        case verifyFull = "verify-full"
    }

    public var user: String
    package var password: String?
    /// A host name or address, or the directory of a Unix socket (starts with `/`).
    public var host: String
    public var port: Int
    public var database: String
    /// The PostgreSQL schema that holds this vault (several vaults can share a database).
    public var schema: String
    public var sslMode: SSLMode
    /// A PEM file of trusted roots for TLS (`sslrootcert`, else `PGSSLROOTCERT`).
    public var rootCertificate: String?

    /// The default schema when the URL names none.
    public static let defaultSchema = "gbg_vault"

    /// True if `location` is a PostgreSQL URL rather than a file path.
    public static func isURL(_ location: String) -> Bool {
        location.hasPrefix("postgres://") || location.hasPrefix("postgresql://")
    }

    /// The vault's address without the password, for messages, `status` and `doctor`.
    public var display: String {
        // Each part percent-encoded outside RFC 3986's unreserved characters (Foundation's
        // own setters leave a `:` in the user, which would read back as a password).
        func encoded(_ text: String) -> String { text.addingPercentEncoding(withAllowedCharacters: Self.unreserved) ?? "" }
        var components = URLComponents()
        components.scheme = "postgres"
        components.percentEncodedUser = encoded(user)
        // A socket directory goes in `host=`; the port names its socket file, so it stays.
        components.host = host.hasPrefix("/") ? "" : host
        components.port = port
        components.percentEncodedPath = "/" + encoded(database)
        var items = [URLQueryItem(name: "schema", value: schema), URLQueryItem(name: "sslmode", value: sslMode.rawValue)]
        if host.hasPrefix("/") { items.append(URLQueryItem(name: "host", value: host)) }
        if let rootCertificate { items.append(URLQueryItem(name: "sslrootcert", value: rootCertificate)) }
        components.percentEncodedQueryItems = items.map { URLQueryItem(name: $0.name, value: $0.value.map(encoded)) }
        return components.string ?? "postgres://\(encoded(user))@\(host)/\(encoded(database))"
    }

    private static let unreserved = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")

    /// What names this vault for the agent's socket: user, server, database and schema.
    public var identity: String { "postgres://\(user)@\(host):\(port)/\(database)?schema=\(schema)" }

    /// Parses a URL; a malformed one, an unknown parameter or an unsafe schema name is a
    /// usage error (exit 64) that never echoes a password.
    public static func parse(_ text: String, environment: [String: String],
                             readPasswordFile: Bool = true) throws(VaultError) -> PostgresLocation {
        try parse(text, variable: { environment[$0] }, readPasswordFile: readPasswordFile)
    }

    /// ``parse(_:environment:readPasswordFile:)`` with the variables looked up one by one,
    /// by default in the process environment.
    public static func parse(_ text: String, variable: (String) -> String? = environmentVariable,
                             readPasswordFile: Bool = true) throws(VaultError) -> PostgresLocation {
        guard isURL(text), let components = URLComponents(string: text) else {
            throw .usage("the vault URL is not a valid postgres:// URL", hint: "postgres://USER@HOST[:PORT]/DATABASE?sslmode=verify-full")
        }
        // A URL is printable ASCII (anything else percent-encoded), and what it encodes is
        // valid UTF-8 without control characters: the same text then always names the
        // same location, and its display form names it again.
        guard text.utf8.allSatisfy({ (0x21...0x7e).contains($0) }) else {
            throw .usage("the vault URL has a space, a control character or non-ASCII text: percent-encode it (%20, %C3%A9, …)")
        }
        for (encoded, decoded) in [(components.percentEncodedUser, components.user), (components.percentEncodedPassword, components.password),
                                   (components.percentEncodedHost, components.host), (components.percentEncodedPath, components.path)] {
            guard encoded == nil || decoded.map({ !$0.unicodeScalars.contains { $0.properties.generalCategory == .control } }) == true else {
                throw .usage("the vault URL has a percent-encoding that is not valid UTF-8 text, or encodes a control character")
            }
        }
        // Text echoed in a message never shows the password, even where it was pasted twice.
        func shown(_ text: String, limit: Int) -> String {
            var text = text
            if let password = components.password, !password.isEmpty { text = text.replacingOccurrences(of: password, with: "***") }
            return text.sanitisedForDisplay(limit: limit)
        }
        var host = components.host ?? ""
        var schema = defaultSchema
        var sslMode: SSLMode?
        var rootCertificate = variable("PGSSLROOTCERT")
        for item in components.queryItems ?? [] {
            let value = item.value ?? ""
            guard !(item.name + value).unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
                throw .usage("a parameter of the vault URL encodes a control character")
            }
            switch item.name {
            case "sslmode":
                switch value {
                case "disable": sslMode = .disable
                case "require": sslMode = .require
                case "verify-ca": sslMode = .verifyCA
                case "verify-full": sslMode = .verifyFull
                default:
                    throw .usage("sslmode must be disable, require, verify-ca or verify-full (not '\(shown(value, limit: 32))')")
                }
            case "sslrootcert": rootCertificate = value
            case "schema": schema = value
            case "host": host = value
            default:
                throw .usage("unknown parameter '\(shown(item.name, limit: 32))' in the vault URL",
                             hint: "known: sslmode, sslrootcert, schema, host")
            }
        }
        guard !host.isEmpty else { throw .usage("the vault URL names no host") }
        // A host name or an IPv4 or IPv6 address; a socket directory (`host=/path`) is a path.
        if !host.hasPrefix("/") {
            let bytes = Array(host.utf8)
            let isName = bytes.allSatisfy { $0.isASCIIAlphanumeric || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") }
            var address = in6_addr()
            let isIPv6 = inet_pton(AF_INET6, host, &address) == 1
            guard isName || isIPv6 else { throw .usage("the vault URL's host is neither a host name nor an IP address") }
        }
        let database = String(components.path.drop(while: { $0 == "/" }))
        guard !database.isEmpty, !database.contains("/") else { throw .usage("the vault URL names no database (postgres://USER@HOST/DATABASE)") }
        guard let user = components.user ?? variable("PGUSER"), !user.isEmpty else {
            throw .usage("the vault URL names no user (postgres://USER@HOST/DATABASE)")
        }
        // Checked byte by byte: letters, digits and _ only.
        let bytes = Array(schema.utf8)
        let allowed = !bytes.isEmpty && bytes.count <= 63 && !(bytes[0] >= UInt8(ascii: "0") && bytes[0] <= UInt8(ascii: "9"))
            && bytes.allSatisfy { ($0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z")) || ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9")) || $0 == UInt8(ascii: "_") }
        guard allowed, !schema.hasPrefix("pg_") else {
            throw .usage("the schema name must be lowercase letters, digits and _ (at most 63), not starting with pg_")
        }
        let port = components.port ?? variable("PGPORT").flatMap(Int.init) ?? 5432
        guard (1...65535).contains(port) else { throw .usage("the port in the vault URL is out of range") }
        var location = PostgresLocation(user: user, password: components.password, host: host, port: port, database: database,
                                        schema: schema, sslMode: sslMode ?? .verifyFull, rootCertificate: rootCertificate)
        if location.password == nil { location.password = variable("PGPASSWORD") }
        if location.password == nil, readPasswordFile { location.password = try passwordFromFile(for: location, variable: variable) }
        return location
    }

    /// A variable of the process environment (`getenv`), for ``parse(_:variable:readPasswordFile:)``.
    public static func environmentVariable(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }

    /// The password from libpq's password file (`PGPASSFILE`, else `~/.pgpass`): lines
    /// `host:port:database:user:password`, `*` matches anything, `\` escapes `:` and `\`;
    /// like libpq, a file that the group or others can read is ignored (with a warning).
    package static func passwordFromFile(for location: PostgresLocation, variable: (String) -> String?) throws(VaultError) -> String? {
        let path = variable("PGPASSFILE") ?? (variable("HOME").map { $0 + "/.pgpass" } ?? "")
        guard !path.isEmpty else { return nil }
        var info = stat()
        guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { return nil }
        if info.st_mode & 0o077 != 0 {
            FileHandle.standardError.write(Data("vault: warning: password file \(path) has group or world access; it is ignored (chmod 0600)\n".utf8))
            return nil
        }
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        let hostKey = location.host.hasPrefix("/") ? "localhost" : location.host
        let wanted = [hostKey, String(location.port), location.database, location.user].map { Array($0.utf8) }
        // As libpq reads it: byte by byte (a combining mark after a `:` is still a
        // separator), lines end at `\n` (a `\r` before it is dropped).
        for var line in [UInt8](data).split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: true) {
            if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
            guard line.first != UInt8(ascii: "#") else { continue }
            var fields: [[UInt8]] = [[]]
            var escaped = false
            for byte in line {
                if escaped {
                    fields[fields.count - 1].append(byte)
                    escaped = false
                } else if byte == UInt8(ascii: "\\") {
                    escaped = true
                } else if byte == UInt8(ascii: ":"), fields.count < 5 {
                    fields.append([])
                } else {
                    fields[fields.count - 1].append(byte)
                }
            }
            guard fields.count == 5 else { continue }
            if zip(fields.prefix(4), wanted).allSatisfy({ $0 == Array("*".utf8) || $0 == $1 }) {
                return String(validating: fields[4], as: UTF8.self)
            }
        }
        return nil
    }
}

extension UInt8 {
    fileprivate var isASCIIAlphanumeric: Bool {
        (0x30...0x39).contains(self) || (0x41...0x5a).contains(self) || (0x61...0x7a).contains(self)
    }
}
