import CSodium
import Testing
@testable import VaultCore

/// Small guarded blocks are wiped and kept for the next allocation of the same size
/// (`GuardedBlocks`), within bounds. The pool's rules are checked on a pool of the test's
/// own (the shared one is used by every suite running at the same time).
@Suite("guarded memory reuse")
struct GuardedMemoryTests {
    static func guarded(_ size: Int) -> UnsafeMutableRawPointer {
        _ = sodium_init()
        return sodium_malloc(size)!
    }

    @Test("released blocks are wiped and kept, at most four per size, and handed out again for that size only")
    func reuse() {
        let pool = GuardedBlocks()
        let size = 1237
        let blocks = (0..<6).map { _ in Self.guarded(size) }
        for block in blocks { block.initializeMemory(as: UInt8.self, repeating: 0xA5, count: size) }
        let kept = blocks.map { pool.keep($0, size: size) }
        #expect(kept == [true, true, true, true, false, false], "six released: four kept, two to be freed")
        for (block, wasKept) in zip(blocks, kept) where !wasKept { sodium_free(block) }
        #expect(pool.keptCount(size: size) == 4 && pool.keptBlocksAreWiped(size: size), "kept blocks were wiped when released")
        #expect(pool.take(size: size + 1) == nil, "another size does not take them")
        var taken: [UnsafeMutableRawPointer] = []
        while let block = pool.take(size: size) { taken.append(block) }
        #expect(taken.count == 4 && Set(taken).isSubset(of: Set(blocks)))
        for block in taken {
            #expect(UnsafeRawBufferPointer(start: block, count: size).allSatisfy { $0 == 0 }, "a block handed out holds zeros")
            sodium_free(block)
        }
    }

    @Test("at most 64 blocks in all; never a block larger than a page")
    func bounds() {
        let pool = GuardedBlocks()
        var blocks: [UnsafeMutableRawPointer] = []
        for size in 1...20 {
            for _ in 0..<4 {
                let block = Self.guarded(size)
                if pool.keep(block, size: size) { blocks.append(block) } else { sodium_free(block) }
            }
        }
        #expect(pool.keptCount() == GuardedBlocks.keptInAll)
        let large = Self.guarded(GuardedBlocks.largestKept + 1)
        #expect(!pool.keep(large, size: GuardedBlocks.largestKept + 1))
        sodium_free(large)
        for size in 1...20 { while let block = pool.take(size: size) { sodium_free(block) } }
        #expect(pool.keptCount() == 0)
    }

    @Test("SecureBytes from the shared pool start as zeros, however their block was used before")
    func secureBytesStartZeroed() {
        let size = 1239
        do {
            let first = SecureBytes(count: size)
            first.withUnsafeMutableBytes { raw in for i in raw.indices { raw[i] = 0x5A } }
        }
        let second = SecureBytes(count: size)
        #expect(second.withUnsafeBytes { $0.allSatisfy { $0 == 0 } })
    }
}
