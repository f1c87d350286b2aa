import Foundation
import VaultCore

/// `postgres://` URLs: a URL that parses is shown (`display`, no password) as a URL that
/// parses to the same location, with the same location identity (which names the
/// agent's socket and the known-vaults entry); refusals are exit 64, safe to show, and
/// never echo the password.
enum PostgresURLs {
    static func check(_ input: [UInt8]) -> String? {
        let text = String(decoding: input, as: UTF8.self)
        let location: PostgresLocation
        do {
            location = try PostgresLocation.parse(text, environment: [:], readPasswordFile: false)
        } catch {
            // (A password that is also a word of the message, or pasted elsewhere in the URL, is
            // not a finding.)
            if let components = URLComponents(string: text), let password = components.password, password.count >= 8,
               let userinfo = components.percentEncodedPassword.map({ ":" + $0 + "@" }),
               !text.replacingOccurrences(of: userinfo, with: "@").contains(password), error.message.contains(password) {
                return "a refusal echoes the password"
            }
            return checkRefusal(error, allowed: [64])
        }
        let shown: PostgresLocation
        do {
            shown = try PostgresLocation.parse(location.display, environment: [:], readPasswordFile: false)
        } catch {
            return "the displayed form \(location.display.debugDescription) does not parse: \(error.message)"
        }
        guard shown.identity == location.identity else { return "identity \(location.identity.debugDescription) became \(shown.identity.debugDescription)" }
        var withoutPassword = location
        withoutPassword.password = nil
        guard shown == withoutPassword else { return "the displayed form parses to another location" }
        if URLComponents(string: location.display)?.password != nil { return "display shows a password" }
        return nil
    }
}

/// `postgres://` URLs built from valid parts, as users write them: any user, password and
/// database text (percent-encoded), a host name, an IPv4 address, an IPv6 address in
/// brackets (with or without a zone), an IDNA name in its `xn--` form, or a socket directory
/// in `host=`; a port or none; a schema; an sslmode. Each parses to exactly those parts, and
/// its display form to the same location.
enum PostgresURLParts {
    static func check(_ input: [UInt8]) -> String? {
        var reader = FuzzReader(input)
        func text(_ limit: Int) -> String {
            String(decoding: reader.chunk(limit: limit), as: UTF8.self).unicodeScalars
                .filter { $0.properties.generalCategory != .control }.reduce(into: "") { $0.unicodeScalars.append($1) }
        }
        func encoded(_ text: String) -> String {
            text.addingPercentEncoding(withAllowedCharacters: CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")) ?? ""
        }
        let user = text(24), password = text(24), database = String(String.UnicodeScalarView(text(24).unicodeScalars.filter { $0 != "/" }))
        guard !user.isEmpty, !database.isEmpty else { return nil }
        let label = String(decoding: reader.chunk(limit: 12).map { "abcdefghijklmnopqrstuvwxyz0123456789-".utf8.map { $0 }[Int($0) % 37] }, as: UTF8.self)
        var v6 = [UInt8](repeating: 0, count: 16)
        for i in 0..<16 { v6[i] = reader.byte() }
        var text6 = [CChar](repeating: 0, count: 64)
        _ = v6.withUnsafeBytes { inet_ntop(AF_INET6, $0.baseAddress, &text6, 64) }
        let address6 = String(cString: text6)
        let hostKind = reader.byte() % 6
        let (authority, host, socket): (String, String, String?) = switch hostKind {
        case 0: ("db-" + label + ".example.com", "db-" + label + ".example.com", nil)
        case 1: ("\(reader.byte()).\(reader.byte()).\(reader.byte()).\(reader.byte())", "", nil)
        case 2: ("[" + address6 + "]", address6, nil)
        case 3: ("[" + address6 + "%25eth0]", address6 + "%eth0", nil)
        case 4: ("xn--" + label + "-kva.example", "xn--" + label + "-kva.example", nil)
        default: ("", "/run/" + label, "/run/" + label)
        }
        let port = reader.bool() ? (Int(reader.byte()) * 256 + Int(reader.byte())) % 65535 + 1 : nil
        let schema = "s_" + String(label.filter { $0.isLetter || $0.isNumber }).lowercased()
        let modes: [PostgresLocation.SSLMode] = [.disable, .require, .verifyCA, .verifyFull]
        let mode = modes[Int(reader.byte()) % 4]
        let userinfo = encoded(user) + (password.isEmpty ? "" : ":" + encoded(password))
        var url = "postgres://\(userinfo)@\(authority)\(port.map { ":\($0)" } ?? "")/\(encoded(database))?schema=\(schema)&sslmode=\(mode.rawValue)"
        if let socket { url += "&host=" + encoded(socket) }
        let location: PostgresLocation
        do {
            location = try PostgresLocation.parse(url, environment: [:], readPasswordFile: false)
        } catch {
            return "refused \(url.debugDescription): \(error.message)"
        }
        let expectedHost = hostKind == 1 ? String(authority) : host
        guard location.user == user, location.password == (password.isEmpty ? nil : password), location.host == expectedHost,
              location.port == (port ?? 5432), location.database == database, location.schema == schema, location.sslMode == mode else {
            return "\(url.debugDescription) parsed as \(location.user.debugDescription)@\(location.host.debugDescription):\(location.port)/\(location.database.debugDescription)"
        }
        guard let shown = try? PostgresLocation.parse(location.display, environment: [:], readPasswordFile: false),
              shown.identity == location.identity else {
            return "the display form \(location.display.debugDescription) does not name the same location"
        }
        return nil
    }
}

/// libpq's password file: a line made of any four fields and a password, with `:` and `\`
/// escaped as libpq escapes them, is found for the location it names and gives back the
/// password exactly, whatever other lines (any bytes) come before it.
enum PasswordFiles {
    static func check(_ input: [UInt8]) -> String? {
        var reader = FuzzReader(input)
        func field() -> String {
            // One line's field: no line break of any kind (libpq reads lines), no NUL.
            String(decoding: reader.chunk(limit: 40), as: UTF8.self).filter { !$0.isNewline && $0 != "\0" }
        }
        let host = field(), database = field(), user = field(), password = field()
        let port = Int(reader.byte()) + 1
        let before = reader.rest()
        // Escaped scalar by scalar (a combining mark after a `:` must not hide it).
        func escaped(_ text: String) -> String {
            var out = String.UnicodeScalarView()
            for scalar in text.unicodeScalars {
                if scalar == ":" || scalar == "\\" { out.append("\\") }
                out.append(scalar)
            }
            return String(out)
        }
        // (A host starting with `#` would make the line a comment, for libpq too.)
        guard !host.isEmpty, !host.hasPrefix("/"), !host.hasPrefix("#"), host != "*", !database.isEmpty, database != "*", !user.isEmpty, user != "*" else { return nil }
        let line = [host, String(port), database, user, password].map(escaped).joined(separator: ":")
        // Earlier lines must not match the same location: they are commented out.
        let earlier = String(decoding: before, as: UTF8.self).split(whereSeparator: \.isNewline).map { "#" + $0 }.joined(separator: "\n")
        let file = Scratch.file("pgpass", Array((earlier + "\n" + line + "\n").utf8))
        defer { unlink(file) }
        let location: PostgresLocation
        do {
            location = try PostgresLocation.parse("postgres://placeholder@localhost/placeholder", environment: [:], readPasswordFile: false)
        } catch {
            return "the base URL does not parse"
        }
        var target = location
        target.host = host
        target.port = port
        target.database = database
        target.user = user
        let found: String?
        do {
            found = try PostgresLocation.passwordFromFile(for: target, variable: { $0 == "PGPASSFILE" ? file : nil })
        } catch {
            return "the password file is refused: \(error.message)"
        }
        guard found == password else { return "found \(found.map { "\($0.count) characters" } ?? "nothing") for a password of \(password.count)" }
        return nil
    }
}

/// A vault file of any bytes (a damaged disk, a file planted by someone else), opened
/// with the passphrase its seeds were made with: header, schema check, key slots, records
/// and the audit chain are all read. It is refused with a documented exit code and a
/// message safe to show, or it opens and its full verification runs to the end. Seeds are
/// real vaults (FORMAT.md's formats 1 to 3, test-only KDF settings); libFuzzer mutates
/// their pages.
public enum VaultFiles {
    /// The passphrase of every seed vault (testvectors/v1 has the format-1 one).
    static let passphrase = "fixture passphrase v1 ✓"

    static func check(_ input: [UInt8]) -> String? {
        do {
            let report = try openAndVerify(input)
            for problem in report.problems where !isDisplaySafe(problem) { return "an unsafe problem line: \(problem.debugDescription)" }
        } catch {
            return checkRefusal(error, allowed: [1, 3, 6, 7, 8, 64])
        }
        return nil
    }

    /// Opens the bytes as a vault file, lists it, unlocks it and runs `vault verify`'s check.
    public static func openAndVerify(_ input: [UInt8]) throws(VaultError) -> FullVerification {
        Scratch.enableTestOnlyKDF()
        let path = Scratch.file("vault.db", input)
        defer { for suffix in ["", "-wal", "-shm", "-journal"] { unlink(path + suffix) } }
        let vault = try Vault.open(at: path)
        _ = try vault.profiles()
        _ = try vault.environments()
        return try vault.unlock(passphrase: SecureBytes(utf8: passphrase)).verifyEverything()
    }
}
