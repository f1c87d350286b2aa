import CSodium
import Foundation

/// Bytes that hold key material or a secret.
///
/// The memory comes from `sodium_malloc` (guard pages, canary, excluded from core dumps
/// where the kernel allows) and is wiped when the value is released (by `sodium_free`,
/// or by `sodium_memzero` when a small block is kept for reuse: ``GuardedBlocks``).
/// The type cannot be printed, encoded or compared by accident: `description` is
/// redacted and it conforms to neither `Codable` nor `Equatable`.
///
/// > Warning: Copying the bytes out (into an `Array` or a `String`) leaves a copy that
/// > is not wiped. Read them through ``withUnsafeBytes(_:)`` where possible.
public final class SecureBytes: @unchecked Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    private let pointer: UnsafeMutableRawPointer
    /// Number of bytes held.
    public let count: Int

    /// Allocates `count` zeroed bytes of guarded memory.
    public init(count: Int) {
        Sodium.ensureInitialised()
        precondition(count >= 0, "negative size")
        if let reused = GuardedBlocks.shared.take(size: max(count, 1)) {
            pointer = reused
        } else {
            guard let pointer = sodium_malloc(max(count, 1)) else {
                fatalError("sodium_malloc failed: out of memory")
            }
            self.pointer = pointer
        }
        sodium_memzero(pointer, max(count, 1))
        self.count = count
    }

    /// Copies `bytes` into guarded memory. The caller should wipe its own copy.
    public convenience init(copying bytes: some Collection<UInt8>) {
        self.init(count: bytes.count)
        let destination = pointer.assumingMemoryBound(to: UInt8.self)
        var index = 0
        for byte in bytes {
            destination[index] = byte
            index += 1
        }
    }

    /// Copies the UTF-8 encoding of `string` into guarded memory.
    public convenience init(utf8 string: String) {
        var string = string
        let count = string.utf8.count
        self.init(count: count)
        string.withUTF8 { source in
            if let base = source.baseAddress {
                pointer.copyMemory(from: base, byteCount: count)
            }
        }
    }

    /// Fresh random bytes from `randombytes_buf`.
    public static func random(count: Int) -> SecureBytes {
        let bytes = SecureBytes(count: count)
        bytes.withUnsafeMutableBytes { randombytes_buf($0.baseAddress!, $0.count) }
        return bytes
    }

    deinit {
        // Wiped either way; a small block may be kept, wiped, for the next allocation of
        // its size (GuardedBlocks), else sodium_free wipes and unmaps it.
        if !GuardedBlocks.shared.keep(pointer, size: max(count, 1)) { sodium_free(pointer) }
    }

    /// Reads the bytes inside a scope.
    public func withUnsafeBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try body(UnsafeRawBufferPointer(start: pointer, count: count))
    }

    /// Writes the bytes inside a scope.
    public func withUnsafeMutableBytes<R, E: Error>(_ body: (UnsafeMutableRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try body(UnsafeMutableRawBufferPointer(start: pointer, count: count))
    }

    /// A sub-range copied into new guarded memory.
    public func slice(_ range: Range<Int>) -> SecureBytes {
        precondition(range.lowerBound >= 0 && range.upperBound <= count)
        let result = SecureBytes(count: range.count)
        result.withUnsafeMutableBytes { destination in
            destination.baseAddress!.copyMemory(from: pointer + range.lowerBound, byteCount: range.count)
        }
        return result
    }

    /// Concatenates guarded buffers into new guarded memory.
    public static func concatenating(_ parts: [SecureBytes]) -> SecureBytes {
        let result = SecureBytes(count: parts.reduce(0) { $0 + $1.count })
        var offset = 0
        for part in parts {
            part.withUnsafeBytes { source in
                if let base = source.baseAddress {
                    result.pointer.advanced(by: offset).copyMemory(from: base, byteCount: source.count)
                }
            }
            offset += part.count
        }
        return result
    }

    /// Constant-time comparison (`sodium_memcmp`).
    public func constantTimeEquals(_ other: SecureBytes) -> Bool {
        guard count == other.count else { return false }
        return sodium_memcmp(pointer, other.pointer, count) == 0
    }

    /// The bytes decoded as UTF-8, or `nil` when they are not valid UTF-8.
    ///
    /// > Warning: The returned `String` is an ordinary Swift value that is not wiped.
    public func utf8String() -> String? {
        withUnsafeBytes { buffer in
            String(validating: buffer.bindMemory(to: UInt8.self), as: UTF8.self)
        }
    }

    public var description: String { "SecureBytes(\(count) bytes, redacted)" }
    public var debugDescription: String { description }
}

/// Guarded blocks kept for reuse. Each `sodium_malloc` maps fresh pages, locks them,
/// excludes them from core dumps and puts guard pages around them (six system calls, three
/// of them `mprotect`, each a TLB shoot-down in a multi-threaded process), and each
/// `sodium_free` undoes that in four more: the agent paid ~50 µs of a ~0.9 ms cache hit
/// for the one token it opens per request. A freed block of at most a page is wiped
/// (`sodium_memzero`) and kept, still locked, guarded and out of core dumps, for the next
/// allocation of exactly its size, so the block's layout (data against its trailing
/// guard page, canary in front) is the one `sodium_malloc` made for that size. At most
/// four blocks per size and 64 in all are kept; the rest are freed as before.
final class GuardedBlocks: @unchecked Sendable {
    /// The pool every ``SecureBytes`` uses.
    static let shared = GuardedBlocks()

    private let lock = NSLock()
    private var sizes: [Int] = []
    private var blocks: [UnsafeMutableRawPointer] = []
    static let largestKept = 4096
    static let keptPerSize = 4
    static let keptInAll = 64

    /// A kept block of exactly `size` bytes (still holding zeros), or nil.
    func take(size: Int) -> UnsafeMutableRawPointer? {
        guard size <= Self.largestKept else { return nil }
        lock.lock()
        defer { lock.unlock() }
        guard let index = sizes.lastIndex(of: size) else { return nil }
        sizes.remove(at: index)
        return blocks.remove(at: index)
    }

    /// Wipes `block` and keeps it if there is room; false when the caller must free it.
    func keep(_ block: UnsafeMutableRawPointer, size: Int) -> Bool {
        guard size <= Self.largestKept else { return false }
        sodium_memzero(block, size)
        lock.lock()
        defer { lock.unlock() }
        guard blocks.count < Self.keptInAll, sizes.reduce(0, { $0 + ($1 == size ? 1 : 0) }) < Self.keptPerSize else { return false }
        sizes.append(size)
        blocks.append(block)
        return true
    }

    /// Whether every kept block of `size` holds only zeros (tests: wiped when released).
    func keptBlocksAreWiped(size: Int) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        return zip(sizes, blocks).allSatisfy { keptSize, block in
            keptSize != size || UnsafeRawBufferPointer(start: block, count: size).allSatisfy { $0 == 0 }
        }
    }

    /// How many blocks of `size` are kept, and how many in all (tests).
    func keptCount(size: Int? = nil) -> Int {
        lock.lock()
        defer { lock.unlock() }
        return size.map { size in sizes.reduce(0) { $0 + ($1 == size ? 1 : 0) } } ?? blocks.count
    }
}
