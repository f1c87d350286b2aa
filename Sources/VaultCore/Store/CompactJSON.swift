/// One JSON object as SQLite's `json_object` writes it: compact, keys in the order
/// given, nulls kept, strings escaped as SQLite escapes them (`"`, `\`, control
/// characters; nothing else). The PostgreSQL store builds the same `--json` lines that
/// SQLite builds in SQL on the file store, byte for byte.
struct CompactJSON {
    private(set) var body = ""

    var text: String { "{" + body + "}" }

    private mutating func key(_ name: String) {
        if !body.isEmpty { body += "," }
        body += "\"" + name + "\":"
    }

    mutating func int(_ name: String, _ value: Int64?) {
        key(name)
        body += value.map(String.init) ?? "null"
    }

    mutating func str(_ name: String, _ value: String?) {
        key(name)
        guard let value else {
            body += "null"
            return
        }
        body += "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": body += "\\\""
            case "\\": body += "\\\\"
            case "\n": body += "\\n"
            case "\r": body += "\\r"
            case "\t": body += "\\t"
            case "\u{08}": body += "\\b"
            case "\u{0C}": body += "\\f"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                body += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: body.unicodeScalars.append(scalar)
            }
        }
        body += "\""
    }
}
