import CSodium
import Foundation

/// Bytes that hold key material or a secret.
///
/// The memory comes from `sodium_malloc` (guard pages, canary, excluded from core dumps
/// where the kernel allows) and is wiped when the value is released (by `sodium_free`).
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
        guard let pointer = sodium_malloc(max(count, 1)) else {
            fatalError("sodium_malloc failed: out of memory")
        }
        self.pointer = pointer
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
        sodium_free(pointer)  // wipes, then unmaps
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

