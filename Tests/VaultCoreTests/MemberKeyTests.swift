import Foundation
import Testing
@testable import VaultCore

/// Members and key changes across processes, in process (two `UnlockedVault`s on one file
/// stand for two `vault` processes).
@Suite("members: key changes across processes")
struct MemberKeyTests {
    let directory = NSTemporaryDirectory() + "gbg-vault-members-" + UUID().uuidString

    init() {
        setenv("GBG_VAULT_TEST_ONLY_INSECURE_KDF", "1", 1)
    }

    func makeVault(_ passphrase: String) throws -> (UnlockedVault, String) {
        let path = directory + "/vault.db"
        let vault = try Vault.initialise(at: path, passphrase: SecureBytes(utf8: passphrase), kdf: .testOnlyInsecure, detail: "test")
        return (vault, path)
    }

    @Test("a member's rekey after a passwd it did not see keeps the new passphrase (the header is re-read inside the transaction)")
    func rekeyAfterPasswd() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (owner, path) = try makeVault("first passphrase")
        let alice = MemberIdentity.generate()
        try owner.addMember(name: "alice", recipient: alice.recipient)
        let asAlice = try Vault.open(at: path).unlock(identity: alice)   // reads the header now
        try owner.changePassphrase(to: SecureBytes(utf8: "second passphrase"), kdf: nil)
        try asAlice.rekey()
        #expect(try Vault.open(at: path).unlock(passphrase: SecureBytes(utf8: "second passphrase")).member == "owner")
        #expect(throws: VaultError.wrongPassphrase) { _ = try Vault.open(at: path).unlock(passphrase: SecureBytes(utf8: "first passphrase")) }
        #expect(try Vault.open(at: path).unlock(identity: alice).verifyAudit().firstFailure == nil)
    }

    @Test("a member removed while another process holds its keys: that process's next write fails cleanly, nothing written")
    func removedWhileOpen() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (owner, path) = try makeVault("a passphrase")
        let ci = MemberIdentity.generate()
        try owner.addMember(name: "ci", recipient: ci.recipient)
        let asCI = try Vault.open(at: path).unlock(identity: ci)
        _ = try owner.removeMember(named: "ci")
        let before = try owner.verifyAudit().recordsChecked
        #expect(throws: VaultError.keysChanged) { try asCI.addEnvironment(name: "late", tokenURL: "https://late.example/t", apiBase: nil) }
        #expect(try owner.verifyAudit().recordsChecked == before)
        #expect(throws: VaultError.wrongIdentitySlot) { _ = try Vault.open(at: path).unlock(identity: ci) }
    }

    @Test("someone who knew the old passphrase keeps the old owner identity: after passwd and rekey it opens nothing; the owner's records still verify")
    func formerPassphraseHolder() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (owner, path) = try makeVault("old passphrase")
        // What a former holder extracts from a copy: the owner identity, unwrapped with the old passphrase.
        let oldHeader = try Vault.open(at: path).header()
        let oldOwner = try #require(try oldHeader.unwrapOwner(kek: try oldHeader.deriveKEK(passphrase: SecureBytes(utf8: "old passphrase"))))
        #expect(try Vault.open(at: path).unlock(identity: oldOwner).member == "owner", "before: it opens the owner's slot")
        try owner.changePassphrase(to: SecureBytes(utf8: "new passphrase"), kdf: nil)
        #expect(throws: VaultError.wrongIdentitySlot, "after passwd the owner's slot is sealed to a new key") {
            _ = try Vault.open(at: path).unlock(identity: oldOwner)
        }
        try owner.rekey()
        #expect(throws: VaultError.wrongIdentitySlot) { _ = try Vault.open(at: path).unlock(identity: oldOwner) }
        let reopened = try Vault.open(at: path).unlock(passphrase: SecureBytes(utf8: "new passphrase"))
        #expect(reopened.member == "owner")
        #expect(try reopened.verifyAudit().firstFailure == nil, "the owner's signing key did not change: its records verify")
        #expect(try reopened.verifyEverything().problems.isEmpty)
    }
}
