/// The canonical byte encoding used for additional data, MAC inputs and the header
/// digest (FORMAT.md §2). Every value is length-delimited, so no two different field
/// lists encode to the same bytes.
///
/// - `str`: UTF-8 bytes prefixed by their length as a 32-bit big-endian integer.
/// - `bytes`: raw bytes prefixed likewise.
/// - `u32` / `u64` / `i64`: fixed-width big-endian (two's complement for `i64`).
/// - optional values: one byte `0x00` when absent, `0x01` followed by the value.
public struct CanonicalEncoder: Sendable {
    public private(set) var bytes: [UInt8] = []

    public init(label: String) {
        str(label)
    }

    public mutating func str(_ value: String) {
        let utf8 = Array(value.utf8)
        u32(UInt32(utf8.count))
        bytes += utf8
    }

    public mutating func data(_ value: [UInt8]) {
        u32(UInt32(value.count))
        bytes += value
    }

    public mutating func u32(_ value: UInt32) {
        withUnsafeBytes(of: value.bigEndian) { bytes += $0 }
    }

    public mutating func u64(_ value: UInt64) {
        withUnsafeBytes(of: value.bigEndian) { bytes += $0 }
    }

    public mutating func i64(_ value: Int64) {
        u64(UInt64(bitPattern: value))
    }

    public mutating func optionalStr(_ value: String?) {
        if let value { bytes.append(1); str(value) } else { bytes.append(0) }
    }

    public mutating func optionalI64(_ value: Int64?) {
        if let value { bytes.append(1); i64(value) } else { bytes.append(0) }
    }
}
