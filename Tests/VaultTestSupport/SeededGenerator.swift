/// A small seeded generator (SplitMix64) so randomized tests can print and replay a seed.
public struct SeededGenerator: RandomNumberGenerator {
    public var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

import Foundation

/// Values appended from several threads (concurrent process runs in tests).
public final class LockedArray<Element: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var storage: [Element] = []
    public init() {}
    public func append(_ value: Element) { lock.withLock { storage.append(value) } }
    public var values: [Element] { lock.withLock { storage } }
}
