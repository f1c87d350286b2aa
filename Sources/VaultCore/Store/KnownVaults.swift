import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What this user's clients remember about each vault they opened (FORMAT.md §12): per
/// location, the vault id and the owner's signing key pinned on first use, and the highest
/// audit record seen with its MAC. A store that is another vault, has another owner, ends
/// below that record, or holds another record at its sequence number is refused (exit 7):
/// a replaced vault, a restored older copy (a rollback) or a diverged one (a fork).
///
/// One file, `${XDG_STATE_HOME:-$HOME/.local/state}/gbg-vault/known-vaults`: one JSON
/// object per line, mode 0600 in a 0700 directory; updates are read, merged and written to
/// a temporary file renamed over it, under an exclusive `flock` of `known-vaults.lock`.
public struct KnownVaults: Sendable {
    /// The file's path.
    public let path: String

    public init(path: String) { self.path = path }

    /// This user's file (`XDG_STATE_HOME` when it is an absolute path, else
    /// `$HOME/.local/state`, else the password database's home directory).
    public static func forUser() -> KnownVaults {
        let base: String
        if let state = LocalEnvironment.value("XDG_STATE_HOME"), state.hasPrefix("/") {
            base = state
        } else {
            base = (LocalEnvironment.value("HOME").flatMap { $0.hasPrefix("/") ? $0 : nil } ?? NSHomeDirectory()) + "/.local/state"
        }
        return KnownVaults(path: base + "/gbg-vault/known-vaults")
    }

    /// One vault as last seen at one location.
    public struct Entry: Codable, Equatable, Sendable {
        /// The store's location identity (a file vault's real path; a team vault's
        /// `postgres://USER@HOST:PORT/DATABASE?schema=SCHEMA`).
        public var location: String
        /// The vault id (hex) and the owner's Ed25519 public key (hex), pinned on first use.
        public var vaultID: String
        public var ownerSignKey: String
        /// The highest audit record seen and its MAC (hex).
        public var seq: Int64
        public var mac: String
        /// Unix seconds: when this location was pinned, and when the entry last moved.
        public var pinnedAt: Int64
        public var seenAt: Int64

        enum CodingKeys: String, CodingKey {
            case location, seq, mac
            case vaultID = "vault_id", ownerSignKey = "owner_sign_key", pinnedAt = "pinned_at", seenAt = "seen_at"
        }
    }

    /// The entry of `location`, if any. A file that is not this user's, or that others can
    /// write, is refused (exit 7): its promises would be anyone's.
    public func entry(for location: String) throws(VaultError) -> Entry? {
        try readAll().first { $0.location == location }
    }

    /// Replaces (or adds) the entry of `entry.location`; with `onlyIfAbsent`, adds it only
    /// when no other process pinned that location meanwhile.
    public func store(_ entry: Entry, onlyIfAbsent: Bool = false) throws(VaultError) {
        try update(flushing: true) { entries in
            if onlyIfAbsent, entries.contains(where: { $0.location == entry.location }) { return }
            entries.removeAll { $0.location == entry.location }
            entries.append(entry)
        }
    }

    /// The entries of other locations that hold the same vault (copies, backups, or an
    /// older copy put at a new path).
    public func entries(ofVault vaultID: String, except location: String) throws(VaultError) -> [Entry] {
        try readAll().filter { $0.vaultID == vaultID && $0.location != location }
    }

    /// The way on from a problem with the file itself (never "restore a backup": that would
    /// be a rollback).
    static let fileHint = "the file only records what your clients saw of each vault: make it yours (mode 0600, its directory 0700), "
        + "or remove it to forget every pin and record"

    /// Moves the entry of `location` forward to `seq`/`mac` when `seq` is higher than the
    /// one it holds (another process may have moved it further meanwhile) and the entry is
    /// still the pin this process checked against (`pinnedAt`): after a deliberate
    /// acceptance or re-pin, a process that saw the trail before it (an agent of another
    /// session) does not write that older view back.
    public func advance(location: String, to seq: Int64, mac: String, at now: Int64, pinnedAt: Int64) throws(VaultError) {
        try update(flushing: false) { entries in
            guard let index = entries.firstIndex(where: { $0.location == location }), entries[index].pinnedAt == pinnedAt,
                  entries[index].seq < seq else { return }
            entries[index].seq = seq
            entries[index].mac = mac
            entries[index].seenAt = now
        }
    }

    private var directory: String { (path as NSString).deletingLastPathComponent }

    /// No other user can move or replace the file's directory: every existing directory
    /// above it belongs to root or this user, and one that others may write has the sticky
    /// bit (as /tmp has), so only its owner can move what is in it. (Else another user could
    /// move the record away, and every rollback would then be taken as a first use.)
    private func expectSafeAncestors() throws(VaultError) {
        var current = (directory as NSString).deletingLastPathComponent
        while true {
            var info = stat()
            if stat(current, &info) == 0 {
                guard (info.st_mode & S_IFMT) == S_IFDIR, info.st_uid == 0 || info.st_uid == geteuid(),
                      info.st_mode & 0o022 == 0 || info.st_mode & S_ISVTX != 0 else {
                    throw .notAsRemembered("\(current) (above \(directory)) is not closed to other users: another user could move away "
                                           + "the record of the vaults you used; vault does not trust it there",
                                           hint: "make \(current) yours and closed to others (or give it the sticky bit), "
                                           + "or set XDG_STATE_HOME to a directory of yours")
                }
            }
            if current == "/" || current.isEmpty { return }
            current = (current as NSString).deletingLastPathComponent
        }
    }

    nonisolated(unsafe) private static var warned = false
    private static let warnedLock = NSLock()

    /// A warning on standard error, once per process.
    static func warnOnce(_ message: String) {
        let first = warnedLock.withLock { () -> Bool in
            defer { warned = true }
            return !warned
        }
        guard first else { return }
        FileHandle.standardError.write(Data("vault: warning: \(message)\n".utf8))
    }

    private func readAll() throws(VaultError) -> [Entry] {
        // (Every write reads first, under its lock: one check of the directories above serves both.)
        try expectSafeAncestors()
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else {
            if errno == ENOENT { return [] }
            throw .notAsRemembered("cannot read \(path) (\(String(cString: strerror(errno)))), the record of the vaults you used", hint: Self.fileHint)
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
            throw .notAsRemembered("\(path) is not a regular file", hint: Self.fileHint)
        }
        guard info.st_uid == geteuid(), info.st_mode & 0o022 == 0 else {
            throw .notAsRemembered("\(path) belongs to another user or others can write it; vault does not trust it", hint: Self.fileHint)
        }
        var folder = stat()
        guard lstat(directory, &folder) == 0, (folder.st_mode & S_IFMT) == S_IFDIR, folder.st_uid == geteuid(), folder.st_mode & 0o022 == 0 else {
            throw .notAsRemembered("\(directory) is not a directory of yours closed to others; vault does not trust the record in it", hint: Self.fileHint)
        }
        var data = Data()
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = read(fd, &buffer, buffer.count)
            if count < 0 { if errno == EINTR { continue }; throw .integrity("cannot read \(path)") }
            if count == 0 { break }
            data.append(contentsOf: buffer[0..<count])
        }
        let decoder = JSONDecoder()
        var entries: [Entry] = []
        for line in data.split(separator: UInt8(ascii: "\n")) where !line.isEmpty {
            guard let entry = try? decoder.decode(Entry.self, from: Data(line)) else {
                throw .notAsRemembered("\(path) has a line that is not a known-vault entry; vault does not guess", hint: Self.fileHint)
            }
            entries.append(entry)
        }
        return entries
    }

    /// Read, change, write back: under an exclusive lock, to a temporary file renamed over
    /// the old one (a reader sees the old file or the new one, never a part). A pin is
    /// flushed to the disk before the rename; a move forward is not (it happens at every
    /// audit record, and a crash that loses it leaves an older record remembered, which the
    /// vault still holds).
    private func update(flushing: Bool, _ change: (inout [Entry]) -> Void) throws(VaultError) {
        try makeDirectory()
        let lockPath = path + ".lock"
        let lockFD = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard lockFD >= 0 else { throw .failure("cannot open \(lockPath): \(String(cString: strerror(errno)))") }
        defer { close(lockFD) }
        while flock(lockFD, LOCK_EX) != 0 {
            guard errno == EINTR else { throw .failure("cannot lock \(lockPath): \(String(cString: strerror(errno)))") }
        }
        var entries = try readAll()
        let before = entries
        change(&entries)
        guard entries != before else { return }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var bytes = Data()
        for entry in entries.sorted(by: { $0.location < $1.location }) {
            guard let line = try? encoder.encode(entry) else { continue }
            bytes.append(line)
            bytes.append(UInt8(ascii: "\n"))
        }
        try PrivateFile.write([UInt8](bytes), to: path, flush: flushing)
    }

    /// The directory, made 0700 when missing (its parents too: `~/.local/state` may not
    /// exist yet); an existing one must be this user's and closed to others.
    private func makeDirectory() throws(VaultError) {
        var info = stat()
        if lstat(directory, &info) != 0 {
            do {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                        attributes: [.posixPermissions: 0o700])
            } catch {
                throw .failure("cannot create \(directory): \(error.localizedDescription)")
            }
            guard lstat(directory, &info) == 0 else { throw .failure("cannot create \(directory)") }
        }
        guard (info.st_mode & S_IFMT) == S_IFDIR, info.st_uid == geteuid(), info.st_mode & 0o022 == 0 else {
            throw .notAsRemembered("\(directory) is not a directory of yours closed to others; vault does not keep its record of vaults there",
                                   hint: Self.fileHint)
        }
    }
}
