import Testing
@testable import VaultCore

/// Small guarded blocks are wiped and kept for the next allocation of the same size
/// (`GuardedBlocks`), within bounds. Each test uses sizes nothing else allocates, so the
/// counts hold while other suites run.
@Suite("guarded memory reuse")
struct GuardedMemoryTests {
    @Test("released blocks are wiped and kept, at most four per size, and handed out again for that size only")
    func reuse() {
        let size = 1237
        #expect(GuardedBlocks.keptCount(size: size) == 0)
        do {
            let blocks = (0..<6).map { _ in SecureBytes(count: size) }
            for block in blocks { block.withUnsafeMutableBytes { raw in for i in raw.indices { raw[i] = 0xA5 } } }
        }
        #expect(GuardedBlocks.keptCount(size: size) == 4, "six released: four kept, two freed")
        #expect(GuardedBlocks.keptBlocksAreWiped(size: size), "kept blocks were wiped when released")
        let other = SecureBytes(count: size + 1)
        #expect(GuardedBlocks.keptCount(size: size) == 4, "another size does not take them")
        var again: [SecureBytes] = []
        for _ in 0..<6 { again.append(SecureBytes(count: size)) }
        #expect(GuardedBlocks.keptCount(size: size) == 0, "the four kept were handed out again")
        for block in again + [other] {
            #expect(block.withUnsafeBytes { $0.allSatisfy { $0 == 0 } }, "a block handed out holds zeros")
        }
    }

    @Test("blocks larger than a page are never kept")
    func largeBlocks() {
        let size = GuardedBlocks.largestKept + 1
        do { _ = SecureBytes(count: size) }
        #expect(GuardedBlocks.keptCount(size: size) == 0)
    }
}
