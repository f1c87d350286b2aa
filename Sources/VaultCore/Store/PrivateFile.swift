import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A file only this user can read, replaced whole: written beside it (0600, never through a
/// link), optionally flushed, then renamed over it, so a link at the path is replaced, not
/// followed, and a reader sees the old file or the new one. (The known-vaults file,
/// `vault serve --credentials-out`.)
public enum PrivateFile {
    public static func write(_ bytes: [UInt8], to path: String, flush: Bool = true) throws(VaultError) {
        let temporary = path + ".tmp-\(getpid())"
        unlink(temporary)
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw .failure("cannot write \(path.sanitisedForDisplay(limit: 200)): \(String(cString: strerror(errno)))")
        }
        let written = bytes.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
        let synced = !flush || fsync(descriptor) == 0
        close(descriptor)
        guard written == bytes.count, synced, rename(temporary, path) == 0 else {
            let why = String(cString: strerror(errno))
            unlink(temporary)
            throw .failure("cannot write \(path.sanitisedForDisplay(limit: 200)): \(why)")
        }
    }
}
