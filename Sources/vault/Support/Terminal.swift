import Foundation
import VaultCore
#if canImport(Glibc)
import Glibc
#endif

/// Prompts on the controlling terminal (`/dev/tty`), never on stdout, with echo off for
/// secrets. Without a terminal it fails with a usage error instead of waiting.
enum Terminal {
    nonisolated(unsafe) private static var savedAttributes = termios()
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
            savedAttributes = attributes
            ttyDescriptor = fd
            signal(SIGINT) { _ in
                tcsetattr(Terminal.ttyDescriptor, TCSAFLUSH, &Terminal.savedAttributes)
                _exit(130)
            }
            var hidden = attributes
            hidden.c_lflag &= ~tcflag_t(ECHO)
            hidden.c_lflag |= tcflag_t(ECHONL)
            tcsetattr(fd, TCSAFLUSH, &hidden)
        }
        defer {
            if canHideEcho {
                tcsetattr(fd, TCSAFLUSH, &savedAttributes)
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
    /// on the terminal.
    func new() throws(VaultError) -> SecureBytes {
        if hasSource { return try existing() }
        return try Self.askTwice(prompt: newPrompt, hint: sourcesHint)
    }

    /// The new passphrase of `vault passwd`.
    func replacement(newPassphraseFile: String?) throws(VaultError) -> SecureBytes {
        if let path = newPassphraseFile ?? environment["VAULT_NEW_PASSPHRASE_FILE"] {
            return try Self.readFile(path, what: "new passphrase")
        }
        if let value = environment["VAULT_NEW_PASSPHRASE"] {
            return try Self.nonEmpty(SecureBytes(utf8: value))
        }
        return try Self.askTwice(prompt: "New vault passphrase: ",
                                 hint: "give --new-passphrase-file PATH, or set VAULT_NEW_PASSPHRASE_FILE or VAULT_NEW_PASSPHRASE")
    }

    static func askTwice(prompt: String, hint: String) throws(VaultError) -> SecureBytes {
        let first = try nonEmpty(Terminal.readHidden(prompt: prompt, missingSourceHint: hint))
        let second = try Terminal.readHidden(prompt: "Repeat it: ", missingSourceHint: hint)
        guard first.constantTimeEquals(second) else { throw .usage("the two passphrases differ; nothing was changed") }
        return first
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
