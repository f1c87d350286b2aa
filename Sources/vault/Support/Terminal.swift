import Foundation
import VaultCore
#if canImport(Glibc)
import Glibc
#endif

/// Prompts on the controlling terminal (`/dev/tty`), never on stdout, with echo off for
/// secrets. Without a terminal it fails with a usage error instead of waiting.
enum Terminal {
    /// The terminal's settings to restore, on the heap: a Swift global of an imported C
    /// struct with trailing padding (termios: 57 bytes, 60 in C) is allocated at the Swift
    /// size while an assignment copies the C size, which AddressSanitizer reported as a
    /// 3-byte overflow in the whole-suite run.
    nonisolated(unsafe) private static let savedAttributes: UnsafeMutablePointer<termios> = {
        let pointer = UnsafeMutablePointer<termios>.allocate(capacity: 1)
        pointer.initialize(to: termios())
        return pointer
    }()
    nonisolated(unsafe) private static var ttyDescriptor: Int32 = -1

    /// Reads one line from the terminal without echo.
    static func readHidden(prompt: String, missingSourceHint: String) throws(VaultError) -> SecureBytes {
        let fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC)
        guard fd >= 0 else {
            throw .usage("no terminal to prompt on, and no other source was given", hint: missingSourceHint)
        }
        defer { close(fd) }
        var attributes = termios()
        let canHideEcho = tcgetattr(fd, &attributes) == 0
        if canHideEcho {
            savedAttributes.pointee = attributes
            ttyDescriptor = fd
            signal(SIGINT) { _ in
                tcsetattr(Terminal.ttyDescriptor, TCSAFLUSH, Terminal.savedAttributes)
                _exit(130)
            }
            var hidden = attributes
            hidden.c_lflag &= ~tcflag_t(ECHO)
            hidden.c_lflag |= tcflag_t(ECHONL)
            tcsetattr(fd, TCSAFLUSH, &hidden)
        }
        defer {
            if canHideEcho {
                tcsetattr(fd, TCSAFLUSH, savedAttributes)
                signal(SIGINT, SIG_DFL)
            }
        }
        _ = prompt.withCString { write(fd, $0, strlen($0)) }
        let limit = 16 * 1024
        let buffer = SecureBytes(count: limit)
        var length = 0
        try buffer.withUnsafeMutableBytes { (raw) throws(VaultError) in
            var byte: UInt8 = 0
            while true {
                let n = read(fd, &byte, 1)
                if n < 0, errno == EINTR { continue }
                if n <= 0 { if length == 0 { throw VaultError.usage("no input on the terminal") }; break }
                if byte == 0x0a || byte == 0x0d { break }
                guard length < limit else { throw VaultError.usage("the input is longer than 16 KiB") }
                raw[length] = byte
                length += 1
            }
            byte = 0
        }
        return buffer.slice(0..<length)
    }

    /// Writes a line on the terminal (where the prompts are), if there is one.
    static func say(_ line: String) {
        let fd = open("/dev/tty", O_WRONLY | O_NOCTTY | O_CLOEXEC)
        guard fd >= 0 else { return }
        defer { close(fd) }
        _ = (line + "\n").withCString { write(fd, $0, strlen($0)) }
    }
}

/// Where a passphrase comes from: first found wins.
struct PassphraseReader {
    var passphraseFile: String?
    var environment = ProcessInfo.processInfo.environment
    /// The variables and prompts: the vault's by default; identities have their own.
    var fileVariable = "VAULT_PASSPHRASE_FILE"
    var valueVariable = "VAULT_PASSPHRASE"
    var prompt = "Vault passphrase: "
    var newPrompt = "New vault passphrase: "
    var sourcesHint = Self.sourcesHint

    static let sourcesHint = "give --passphrase-file PATH, or set VAULT_PASSPHRASE_FILE or VAULT_PASSPHRASE"

    init(passphraseFile: String?) {
        self.passphraseFile = passphraseFile
    }

    init(passphraseFile: String?, fileVariable: String, valueVariable: String, prompt: String, newPrompt: String, sourcesHint: String) {
        self.passphraseFile = passphraseFile
        self.fileVariable = fileVariable
        self.valueVariable = valueVariable
        self.prompt = prompt
        self.newPrompt = newPrompt
        self.sourcesHint = sourcesHint
    }

    /// Whether a non-interactive source is set.
    var hasSource: Bool {
        passphraseFile != nil || environment[fileVariable] != nil || environment[valueVariable] != nil
    }

    /// How many times a terminal prompt asks (as ssh and sudo do). A passphrase from a
    /// file or a variable is used once: a script gets its exit code at once.
    static let attempts = 3

    /// The shortest new passphrase accepted without `--allow-short-passphrase`, in
    /// characters (Unicode code points).
    static let minimumLength = 12

    /// Runs `body` with the passphrase of an existing vault (or identity). At the terminal,
    /// a wrong passphrase is asked for again, up to ``attempts`` times in all.
    func withExisting<T>(_ body: (SecureBytes) throws(VaultError) -> T) throws(VaultError) -> T {
        if hasSource { return try body(existing()) }
        var attempt = 1
        while true {
            do throws(VaultError) {
                return try body(existing())
            } catch {
                guard attempt < Self.attempts, error == .wrongPassphrase || error == .wrongIdentityPassphrase else { throw error }
                Terminal.say("wrong passphrase, try again (\(Self.attempts - attempt) left)")
                attempt += 1
            }
        }
    }

    /// The passphrase of an existing vault (or identity).
    func existing() throws(VaultError) -> SecureBytes {
        if let path = passphraseFile ?? environment[fileVariable] {
            return try Self.readFile(path, what: "passphrase")
        }
        if let value = environment[valueVariable] {
            return try Self.nonEmpty(SecureBytes(utf8: value))
        }
        return try Self.nonEmpty(Terminal.readHidden(prompt: prompt, missingSourceHint: sourcesHint))
    }

    /// A passphrase for a new vault (or identity): from the same sources, or asked twice
    /// on the terminal. Shorter than ``minimumLength`` only with `allowShort`.
    func new(allowShort: Bool) throws(VaultError) -> SecureBytes {
        if hasSource { return try Self.checkLength(existing(), allowShort: allowShort) }
        return try Self.askTwice(prompt: newPrompt, hint: sourcesHint, allowShort: allowShort)
    }

    /// The new passphrase of `vault passwd`.
    func replacement(newPassphraseFile: String?, allowShort: Bool) throws(VaultError) -> SecureBytes {
        if let path = newPassphraseFile ?? environment["VAULT_NEW_PASSPHRASE_FILE"] {
            return try Self.checkLength(Self.readFile(path, what: "new passphrase"), allowShort: allowShort)
        }
        if let value = environment["VAULT_NEW_PASSPHRASE"] {
            return try Self.checkLength(Self.nonEmpty(SecureBytes(utf8: value)), allowShort: allowShort)
        }
        return try Self.askTwice(prompt: "New vault passphrase: ",
                                 hint: "give --new-passphrase-file PATH, or set VAULT_NEW_PASSPHRASE_FILE or VAULT_NEW_PASSPHRASE",
                                 allowShort: allowShort)
    }

    /// Asks for a new passphrase and its repetition; an empty or short one, or two that
    /// differ, are asked for again, up to ``attempts`` times in all.
    static func askTwice(prompt: String, hint: String, allowShort: Bool) throws(VaultError) -> SecureBytes {
        for attempt in 1...attempts {
            let first = try Terminal.readHidden(prompt: prompt, missingSourceHint: hint)
            let refusal: VaultError
            if let weakness = weakness(first, allowShort: allowShort) {
                refusal = weakness
            } else if try first.constantTimeEquals(Terminal.readHidden(prompt: "Repeat it: ", missingSourceHint: hint)) {
                return first
            } else {
                refusal = .usage("the two passphrases differ; nothing was changed")
            }
            if attempt == attempts { throw refusal }
            Terminal.say("\(refusal.message.replacingOccurrences(of: "; nothing was changed", with: "")); try again (\(attempts - attempt) left)")
        }
        fatalError("unreachable: the last attempt returns or throws")
    }

    /// Refuses a new passphrase that is empty, or shorter than ``minimumLength`` code
    /// points unless `allowShort`.
    static func checkLength(_ value: SecureBytes, allowShort: Bool) throws(VaultError) -> SecureBytes {
        if let weakness = weakness(value, allowShort: allowShort) { throw weakness }
        return value
    }

    private static func weakness(_ value: SecureBytes, allowShort: Bool) -> VaultError? {
        if value.count == 0 { return .usage("an empty passphrase is not allowed") }
        // UTF-8: every byte that does not continue a sequence starts a code point.
        let length = value.withUnsafeBytes { raw in raw.reduce(0) { $0 + ($1 & 0xc0 == 0x80 ? 0 : 1) } }
        guard !allowShort, length < minimumLength else { return nil }
        return .usage("the new passphrase is too short (\(length) characters; at least \(minimumLength)); nothing was changed",
                      hint: "a few unrelated words are long and easy to type; --allow-short-passphrase accepts a short one")
    }

    static func nonEmpty(_ value: SecureBytes) throws(VaultError) -> SecureBytes {
        guard value.count > 0 else { throw .usage("an empty passphrase is not allowed") }
        return value
    }

    /// As ssh does for keys: a passphrase file that another user owns or that others can
    /// write is refused (someone else could choose your passphrase or read a new one);
    /// one that others can read is used with a warning.
    static func checkPermissions(fd: Int32, path: String, what: String) throws(VaultError) {
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw .usage("cannot inspect the \(what) file \(path)") }
        guard info.st_uid == geteuid() else {
            throw .usage("the \(what) file \(path) is owned by uid \(info.st_uid), not by you (uid \(geteuid())); it was not used",
                         hint: "use a file you own, mode 0600")
        }
        guard info.st_mode & 0o022 == 0 else {
            throw .usage("the \(what) file \(path) can be written by others (mode \(String(format: "%04o", info.st_mode & 0o7777))); it was not used",
                         hint: "chmod 600 \(path)")
        }
        if info.st_mode & 0o044 != 0 {
            Output.warning("the \(what) file \(path) can be read by others (mode \(String(format: "%04o", info.st_mode & 0o7777))); chmod 600 it")
        }
    }

    /// Reads a file's contents, without one trailing newline (`\n` or `\r\n`).
    static func readFile(_ path: String, what: String) throws(VaultError) -> SecureBytes {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .usage("cannot read the \(what) file \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        try checkPermissions(fd: fd, path: path, what: what)
        let limit = 64 * 1024
        let buffer = SecureBytes(count: limit)
        var length = 0
        buffer.withUnsafeMutableBytes { raw in
            while length < limit {
                let n = read(fd, raw.baseAddress! + length, limit - length)
                if n < 0, errno == EINTR { continue }
                if n <= 0 { break }
                length += n
            }
        }
        guard length < limit else { throw .usage("the \(what) file is larger than 64 KiB") }
        let end = buffer.withUnsafeBytes { raw in
            var end = length
            if end > 0, raw[end - 1] == 0x0a { end -= 1; if end > 0, raw[end - 1] == 0x0d { end -= 1 } }
            return end
        }
        return try nonEmpty(buffer.slice(0..<end))
    }
}
