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
        if host.hasPrefix("/") {
            components.host = ""
        } else if host.contains(":") {
            components.percentEncodedHost = "[" + host.replacingOccurrences(of: "%", with: "%25") + "]"
        } else {
            components.percentEncodedHost = host
        }
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
        // No space or control character in the text, and what it percent-encodes is valid
        // UTF-8 without control characters: the same text then always names the same
        // location, and its display form names it again.
        guard !text.unicodeScalars.contains(where: { $0 == " " || $0.properties.generalCategory == .control }) else {
            throw .usage("the vault URL has a space or a control character: percent-encode it (%20)")
        }
        // (The host is checked below, in the form the URL gives it.)
        for (encoded, decoded) in [(components.percentEncodedUser, components.user), (components.percentEncodedPassword, components.password),
                                   (components.percentEncodedPath, components.path)] {
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
        var host = components.encodedHost ?? ""
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
        // A host name (IDNA names as the URL gives them, in their xn-- form), an IPv4
        // address, or an IPv6 address (in brackets in the URL; a zone as %25zone); a socket
        // directory (`host=/path`) is a path.
        if !host.hasPrefix("/") {
            guard let checked = Self.checkedHost(host) else { throw .usage("the vault URL's host is neither a host name nor an IP address") }
            host = checked
        }
        // Scalar by scalar: a combining mark after the `/` must not hide it.
        let database = String(String.UnicodeScalarView(components.path.unicodeScalars.drop(while: { $0 == "/" })))
        guard !database.isEmpty, !database.unicodeScalars.contains("/") else { throw .usage("the vault URL names no database (postgres://USER@HOST/DATABASE)") }
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
        // As libpq: an empty password (in the URL or PGPASSWORD) is no password.
        if location.password?.isEmpty == true { location.password = nil }
        if location.password == nil, let password = variable("PGPASSWORD"), !password.isEmpty { location.password = password }
        if location.password == nil, readPasswordFile { location.password = try passwordFromFile(for: location, variable: variable) }
        return location
    }

    /// A variable of the process environment (`getenv`), for ``parse(_:variable:readPasswordFile:)``.
    public static func environmentVariable(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }

    /// The password from libpq's password file (`PGPASSFILE`, else `~/.pgpass`), read as
    /// libpq's `passwordFromFile` reads it: lines `host:port:database:user:password`, byte
    /// by byte; trailing CR and LF dropped; `#` lines skipped; a field of exactly `*`
    /// matches anything; `\` escapes the next byte (`\*` is a plain `*`); the password
    /// ends at the first unescaped `:`, and a lone `\` at its end is kept. The host of a
    /// socket directory is `localhost` for the default directories (`/var/run/postgresql`,
    /// `/tmp`) and the directory itself otherwise. Like libpq, a file that the group or
    /// others can read is ignored (with a warning).
    package static func passwordFromFile(for location: PostgresLocation, variable: (String) -> String?) throws(VaultError) -> String? {
        let named = variable("PGPASSFILE").flatMap { $0.isEmpty ? nil : $0 }
        let path = named ?? (variable("HOME").map { $0 + "/.pgpass" } ?? "")
        guard !path.isEmpty else { return nil }
        var info = stat()
        guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { return nil }
        if info.st_mode & 0o077 != 0 {
            FileHandle.standardError.write(Data("vault: warning: password file \(path) has group or world access; it is ignored (chmod 0600)\n".utf8))
            return nil
        }
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        let hostKey = ["/var/run/postgresql", "/tmp"].contains(location.host) ? "localhost" : location.host
        let wanted = [hostKey, String(location.port), location.database, location.user].map { Array($0.utf8) }
        let colon = UInt8(ascii: ":"), backslash = UInt8(ascii: "\\")
        for var line in [UInt8](data).split(separator: UInt8(ascii: "\n")) {
            while line.last == UInt8(ascii: "\r") { line = line.dropLast() }
            guard !line.isEmpty, line.first != UInt8(ascii: "#") else { continue }
            var rest = line[...]
            // The four fields, each up to an unescaped `:`.
            var matches = true
            for expected in wanted {
                if rest.starts(with: [UInt8(ascii: "*"), colon]) {
                    rest = rest.dropFirst(2)
                    continue
                }
                var field: [UInt8] = []
                var ended = false
                while let byte = rest.popFirst() {
                    if byte == backslash, let next = rest.popFirst() {
                        field.append(next)
                    } else if byte == colon {
                        ended = true
                        break
                    } else {
                        field.append(byte)
                    }
                }
                guard ended, field == expected else { matches = false; break }
            }
            guard matches else { continue }
            var password: [UInt8] = []
            while let byte = rest.popFirst(), byte != colon {
                if byte == backslash, let next = rest.popFirst() {
                    password.append(next)
                } else {
                    password.append(byte)
                }
            }
            return String(validating: password, as: UTF8.self)
        }
        return nil
    }
}

extension PostgresLocation {
    /// `host` as the connection uses it (an IPv6 address without its brackets, its zone
    /// decoded), or nil when it is neither a host name nor an IP address.
    static func checkedHost(_ text: String) -> String? {
        var host = text
        let bracketed = host.hasPrefix("[") && host.hasSuffix("]")
        if bracketed {
            host = String(host.dropFirst().dropLast()).removingPercentEncoding ?? ""
        }
        if bracketed || host.contains(":") {
            let parts = host.split(separator: "%", maxSplits: 1, omittingEmptySubsequences: false)
            var address = in6_addr()
            guard inet_pton(AF_INET6, String(parts[0]), &address) == 1 else { return nil }
            if parts.count == 2 {
                guard !parts[1].isEmpty, parts[1].utf8.allSatisfy({ $0.isASCIIAlphanumeric || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") })
                else { return nil }
            }
            return host
        }
        let bytes = Array(host.utf8)
        guard !bytes.isEmpty, bytes.allSatisfy({ $0.isASCIIAlphanumeric || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") })
        else { return nil }
        return host
    }
}

extension UInt8 {
    fileprivate var isASCIIAlphanumeric: Bool {
        (0x30...0x39).contains(self) || (0x41...0x5a).contains(self) || (0x61...0x7a).contains(self)
    }
}
