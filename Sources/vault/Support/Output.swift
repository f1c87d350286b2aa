import CTokenClient
import Foundation
import VaultCore
#if canImport(Glibc)
import Glibc
#endif

/// Writing to stdout (data only) and stderr (messages).
enum Output {
    static func stdout(_ text: String) {
        write(1, text)
    }

    /// Writes all of `text` to `fd` with write(2) (a closed pipe ends the output quietly:
    /// SIGPIPE is ignored and EPIPE stops the loop).
    static func write(_ fd: Int32, _ text: String) {
        var text = text
        text.withUTF8 { _ = write(fd, UnsafeRawBufferPointer($0)) }
    }

    /// Writes all of `raw` to `fd`; 0, or the errno of the write that failed.
    static func write(_ fd: Int32, _ raw: UnsafeRawBufferPointer) -> Int32 {
        var offset = 0
        while offset < raw.count {
            let n = Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
            if n < 0 { if errno == EINTR { continue }; return errno }
            offset += n
        }
        return 0
    }

    /// Lines of text built from values read from the vault file, each sanitised.
    static func lines(_ lines: [String]) {
        var text = ""
        for line in lines { text += line.sanitisedForDisplay(limit: 2000) + "\n" }  // (not `joined()`: see jsonArray)
        stdout(text)
    }

    /// Writes guarded bytes (a token) to stdout without making a Swift `String` of them.
    static func stdout(prefix: String = "", secret: SecureBytes, suffix: String = "") throws(VaultError) {
        let failed = secret.withUnsafeBytes { stdout(prefix: prefix, secret: $0, suffix: suffix) }
        try expectWritten(failed)
    }

    /// Writes lent secret bytes to stdout in one write, and wipes the copy it wrote from;
    /// 0, or the errno of the write that failed.
    static func stdout(prefix: String = "", secret: UnsafeRawBufferPointer, suffix: String = "") -> Int32 {
        var bytes = Array(prefix.utf8)
        bytes += secret
        bytes += Array(suffix.utf8)
        let failed = bytes.withUnsafeBytes { raw in write(1, raw) }
        for i in bytes.indices { bytes[i] = 0 }
        return failed
    }

    /// A token that could not be written is a failure (a full disk, a closed descriptor),
    /// not a delivery; a reader that went away (EPIPE) ends the output quietly, as
    /// everywhere else.
    static func expectWritten(_ failed: Int32) throws(VaultError) {
        guard failed != 0, failed != EPIPE else { return }
        throw .failure("\(VAULT_TOKEN_WRITE_FAILURE): \(String(cString: strerror(failed)))")
    }

    /// A message on stderr; values from the vault file are in it, so it is sanitised.
    static func info(_ text: String) {
        write(2, "vault: \(text.sanitisedForDisplay(limit: 2000))\n")
    }

    static func warning(_ text: String) {
        write(2, "vault: warning: \(text.sanitisedForDisplay(limit: 2000))\n")
    }

    static func error(_ error: VaultError) {
        var text = "vault: error: \(error.message.sanitisedForDisplay(limit: 2000))\n"
        if let hint = error.hint { text += "vault: hint: \(hint.sanitisedForDisplay(limit: 2000))\n" }
        write(2, text)
    }

    /// A usage error from argument parsing, as `vault: error: …` like every other error.
    static func usageError(_ message: String, help: String) {
        var lines = message.split(separator: "\n", omittingEmptySubsequences: true).map { String($0) }
        if lines.first?.hasPrefix("Error: ") == true { lines[0].removeFirst(7) }
        // argument-parser's sentences in vault's voice: lower-case like every other message
        // ("Unknown option '-f'" → "unknown option '-f'"); an acronym keeps its case.
        if let first = lines.first?.first, first.isUppercase, let second = lines[0].dropFirst().first, second.isLowercase {
            lines[0] = first.lowercased() + lines[0].dropFirst()
        }
        var text = ""
        for (index, line) in lines.enumerated() {
            let clean = line.sanitisedForDisplay(limit: 2000)
            text += index == 0 ? "vault: error: \(clean)\n" : "vault: \(clean)\n"
        }
        text += "vault: hint: \(help)\n"
        write(2, text)
    }

    /// An encodable value in vault's one JSON style (README, "Programs and scripts"): an
    /// object on one line; an array as `[`, one object per line, `]`; compact, keys sorted.
    static func json(_ value: some Encodable) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let data = (try? encoder.encode(value)) ?? Data("null".utf8)
        if data.first == UInt8(ascii: "["), let array = try? JSONSerialization.jsonObject(with: data) as? [Any] {
            return jsonArray(array.map { element in
                let one = (try? JSONSerialization.data(withJSONObject: element, options: [.sortedKeys, .withoutEscapingSlashes, .fragmentsAllowed]))
                return one.map { String(decoding: $0, as: UTF8.self) } ?? "null"
            })
        }
        stdout(String(decoding: data, as: UTF8.self) + "\n")
    }

    /// A JSON array of already-encoded objects, one per line.
    /// (A loop, not `joined(separator:)`: the unspecialised `joined` looks up a protocol
    /// conformance at run time, a scan of every conformance record on the first use.)
    static func jsonArray(_ objects: [String]) {
        guard !objects.isEmpty else { return stdout("[]\n") }
        var text = "[\n"
        for (index, object) in objects.enumerated() {
            if index > 0 { text += ",\n" }
            text += object
        }
        stdout(text + "\n]\n")
    }

    /// Rows with fixed column widths (a width of 0: as wide as the cell), optionally after
    /// a header row; for output that arrives over time (`audit --follow`).
    static func rows(_ rows: [[String]], header: [String]?, widths: [Int]) {
        render((header.map { [$0] } ?? []) + sanitised(rows), widths: widths)
    }

    /// A plain text table with a header row. Cells hold values read from the vault file,
    /// so each is sanitised (control and format characters shown as `?`).
    static func table(_ header: [String], _ rows: [[String]]) {
        stdout(tableText(header, rows))
    }

    /// The text of ``table(_:_:)``; each column at least as wide as `minimumWidths` says.
    static func tableText(_ header: [String], _ rows: [[String]], minimumWidths: [Int] = []) -> String {
        let all = [header] + sanitised(rows)
        return text(all, widths: header.indices.map { column in
            max(all.map { $0[column].count }.max() ?? 0, column < minimumWidths.count ? minimumWidths[column] : 0)
        })
    }

    private static func sanitised(_ rows: [[String]]) -> [[String]] {
        rows.map { $0.map { $0.sanitisedForDisplay(limit: 300) } }
    }

    /// Cells padded to `widths` (0: as wide as the cell; the last column is never padded),
    /// two spaces apart. Widths and padding both count characters (`NSString` padding
    /// counts UTF-16 units, one short after an emoji).
    private static func render(_ rows: [[String]], widths: [Int]) {
        stdout(text(rows, widths: widths))
    }

    private static func text(_ rows: [[String]], widths: [Int]) -> String {
        var text = ""
        for row in rows {
            for (index, cell) in row.enumerated() {
                if index > 0 { text += "  " }
                text += cell
                let width = index < widths.count ? widths[index] : 0
                if index < row.count - 1, cell.count < width {
                    text += String(repeating: " ", count: width - cell.count)
                }
            }
            text += "\n"
        }
        return text
    }
}

/// Long output at a terminal through the user's pager, as git does: `$PAGER` (empty or
/// `cat`: none), else `less` with `LESS=FRX` unless `LESS` is set.
enum Pager {
    /// Whether stdout is a terminal with fewer rows than `text` has lines.
    static func isLongerThanScreen(_ text: String) -> Bool {
        var size = winsize()
        guard ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &size) == 0, size.ws_row > 0 else { return false }
        return text.reduce(0) { $1 == "\n" ? $0 + 1 : $0 } >= Int(size.ws_row)
    }

    /// Shows `text` through the pager and waits for it; prints it directly when there is
    /// no pager or it cannot be started. The pager gets no variable that opens the vault.
    static func show(_ text: String) {
        let configured = ProcessInfo.processInfo.environment["PAGER"]
        let command = configured ?? "less"
        guard !command.trimmingCharacters(in: .whitespaces).isEmpty, command != "cat" else { return Output.stdout(text) }
        if configured == nil, getenv("LESS") == nil { setenv("LESS", "FRX", 1) }
        for name in LocalEnvironment.secretVariables { unsetenv(name) }
        // Ctrl-C belongs to the pager while it runs (as git does): vault waits for it.
        let previousInterrupt = signal(SIGINT, SIG_IGN), previousQuit = signal(SIGQUIT, SIG_IGN)
        defer { signal(SIGINT, previousInterrupt); signal(SIGQUIT, previousQuit) }
        guard let pipe = popen(command, "w") else { return Output.stdout(text) }
        var bytes = Array(text.utf8)
        _ = fwrite(&bytes, 1, bytes.count, pipe)
        let status = pclose(pipe)
        // A pager that could not run (sh's 127): the text directly instead.
        if status != -1, (status >> 8) & 0xff == 127 { Output.stdout(text) }
    }
}
