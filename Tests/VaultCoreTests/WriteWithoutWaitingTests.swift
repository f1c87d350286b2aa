import Foundation
import GRDB
import Testing
@testable import VaultCore

/// `VaultDatabase.writeWithoutWaiting` (the agent's cache hit on its event loop): it never
/// waits for another process's lock, and leaves the connection as it found it.
@Suite("writes that never wait")
struct WriteWithoutWaitingTests {
    let directory = NSTemporaryDirectory() + "gbg-vault-nowait-" + UUID().uuidString

    init() {
        setenv("GBG_VAULT_TEST_ONLY_INSECURE_KDF", "1", 1)
    }

    @Test("another process's write lock: nil at once, nothing done; the busy timeout is back for the next write, which waits for the lock")
    func lockHeldElsewhere() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/vault.db"
        _ = try Vault.initialise(at: path, passphrase: SecureBytes(utf8: "passphrase"), kdf: .testOnlyInsecure, detail: "test")
        let database = try VaultDatabase.open(at: path)
        #expect(try database.writeWithoutWaiting { db in try Int.fetchOne(db, sql: "SELECT 1") } == 1, "a free lock: the write runs")

        // Another connection (another process, as far as SQLite's locks go) holds the lock.
        let holder = try DatabaseQueue(path: path)
        let release = DispatchSemaphore(value: 0)
        let held = DispatchSemaphore(value: 0)
        let holding = Thread {
            try? holder.writeWithoutTransaction { db in
                try db.execute(sql: "BEGIN IMMEDIATE")
                held.signal()
                release.wait()
                try db.execute(sql: "ROLLBACK")
            }
        }
        holding.start()
        held.wait()
        let started = Date()
        let refused = try database.writeWithoutWaiting { db -> Int? in
            try db.execute(sql: "UPDATE vault_header SET created_at = created_at WHERE id = 1")
            return 1
        }
        #expect(refused == nil)
        #expect(Date().timeIntervalSince(started) < 1, "it did not wait for the lock")

        // The usual write on the same connection waits for the lock (busy timeout restored).
        DispatchQueue.global().asyncAfter(deadline: .now() + 0.3) { release.signal() }
        let waited = Date()
        try database.write { db in try db.execute(sql: "UPDATE vault_header SET created_at = created_at WHERE id = 1") }
        #expect(Date().timeIntervalSince(waited) >= 0.25, "the write waited for the lock instead of failing")
        try holder.close()
    }
}
