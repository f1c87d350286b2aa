import Foundation
import GRDB
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

    @Test("a rekey by a process that did not see a concurrent passwd fails cleanly and never reverts the new passphrase")
    func rekeyAfterPasswd() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (owner, path) = try makeVault("first passphrase")
        let alice = MemberIdentity.generate()
        try owner.addMember(name: "alice", recipient: alice.recipient)
        let other = try Vault.open(at: path).unlock(passphrase: SecureBytes(utf8: "first passphrase"))   // reads the header now
        try owner.changePassphrase(to: SecureBytes(utf8: "second passphrase"), kdf: nil)
        #expect(throws: VaultError.keysChanged) { try other.rekey() }
        #expect(try Vault.open(at: path).unlock(passphrase: SecureBytes(utf8: "second passphrase")).member == "owner")
        #expect(throws: VaultError.wrongPassphrase) { _ = try Vault.open(at: path).unlock(passphrase: SecureBytes(utf8: "first passphrase")) }
        try owner.rekey()
        #expect(try Vault.open(at: path).unlock(passphrase: SecureBytes(utf8: "second passphrase")).header.keyEpoch == 2)
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

    @Test("a key holder re-pointing a member row at another record, or signing an owner-only record: verify names it")
    func membershipRecords() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (owner, path) = try makeVault("the passphrase")
        let vaultID = owner.vaultID
        let bob = MemberIdentity.generate()
        let ci = MemberIdentity.generate()
        try owner.addMember(name: "bob", recipient: bob.recipient)
        try owner.addMember(name: "ci", recipient: ci.recipient)
        _ = try owner.removeMember(named: "ci")
        try owner.addEnvironment(name: "extra", tokenURL: "https://extra.example/t", apiBase: nil)
        #expect(try owner.verifyAudit().firstFailure == nil)
        #expect(try owner.verifyEverything().problems.isEmpty)
        let keys = owner.keys
        /// Changes one member row as a key holder can (the member MAC recomputed): the owner's
        /// signature no longer verifies (exit 7). Then the same change signed by the owner
        /// itself (as only the owner could): the §6.7 membership checks still name it. The
        /// row is put back after each.
        func expectRefused(_ name: String, _ change: (inout MemberRecord) -> Void, _ words: String) throws {
            var original: MemberRecord?
            for signedByOwner in [false, true] {
                try owner.vault.database.write { db in
                    var row = try #require(try MemberRecord.fetchOne(db, key: name))
                    original = row
                    change(&row)
                    row.mac = Data(MemberCrypto.mac(row, vaultID: vaultID, key: keys.metadataKey))
                    if signedByOwner { row = MemberCrypto.authenticated(row, vaultID: vaultID, key: keys.metadataKey, owner: owner.identity) }
                    try row.update(db)
                }
                if signedByOwner {
                    let reopened = try Vault.open(at: path).unlock(passphrase: SecureBytes(utf8: "the passphrase"))
                    let failure = try reopened.verifyAudit().firstFailure
                    #expect(failure?.reason.contains(words) == true, "\(name): \(failure?.reason ?? "no failure")")
                    #expect(try reopened.verifyEverything().problems.contains { $0.contains(words) })
                } else {
                    do {
                        // (The owner's own row is checked at the unlock already.)
                        _ = try Vault.open(at: path).unlock(passphrase: SecureBytes(utf8: "the passphrase")).verifyAudit()
                        Issue.record("\(name): a row a key holder changed was accepted")
                    } catch {
                        #expect(error.exitCode == 7 && error.message.contains("is not signed by the owner"), "\(name): \(error)")
                    }
                }
                try owner.vault.database.write { db in try #require(original).update(db) }
                #expect(try owner.verifyAudit().firstFailure == nil)
            }
        }
        let bobAdded = try #require(try owner.vault.members().first { $0.name == "bob" }).addedSeq
        // bob's row pointed at ci's member-add record, at the environment's record, at a record that does not exist.
        try expectRefused("bob", { $0.addedSeq = bobAdded + 1 }, "not a member-add record for it")
        try expectRefused("bob", { $0.addedSeq = bobAdded + 3 }, "not a member-add record for it")
        try expectRefused("ci", { $0.removedSeq = bobAdded + 3 }, "not a member-remove record for it")
        try expectRefused("ci", { $0.removedSeq = 99 }, "does not exist")
        try expectRefused("owner", { $0.addedSeq = bobAdded }, "outside the member's membership")
        // An owner-only record (ci's removal) attributed to bob and signed with bob's key.
        let removal = bobAdded + 2
        try owner.vault.database.write { db in
            let mac = try #require(try Data.fetchOne(db, sql: "SELECT mac FROM audit_record WHERE seq = ?", arguments: [removal]))
            let signature = bob.sign(Format.auditSignatureInput(vaultID: vaultID, seq: removal, member: "bob", mac: [UInt8](mac)))
            try db.execute(sql: "UPDATE audit_record SET member = 'bob', signature = ? WHERE seq = ?", arguments: [Data(signature), removal])
        }
        let forged = try Vault.open(at: path).unlock(passphrase: SecureBytes(utf8: "the passphrase")).verifyAudit().firstFailure
        #expect(forged?.seq == removal && forged?.reason.contains("only the owner can member-remove") == true, "\(String(describing: forged))")
    }

    @Test("someone who can write the file seals keys of their own to the owner: the passphrase unlock refuses the slot (exit 7)")
    func substitutedOwnerSlot() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (owner, path) = try makeVault("the passphrase")
        let vaultID = owner.vaultID
        let fake = VaultKeys.generate()
        try owner.vault.database.write { db in
            var row = try #require(try MemberRecord.fetchOne(db, key: "owner"))
            row.mac = Data(MemberCrypto.mac(row, vaultID: vaultID, key: fake.metadataKey))
            try row.update(db)
            let binding = MemberCrypto.slotBinding(vaultID: vaultID, epoch: 1, member: row, keys: fake)
            let sealed = try Sodium.sealBox(.concatenating([fake.dataKey, fake.auditKey, SecureBytes(copying: binding)]), to: [UInt8](row.boxPublicKey))
            let mac = MemberCrypto.slotMAC(member: row, epoch: 1, sealed: sealed, vaultID: vaultID, key: fake.metadataKey)
            try db.execute(sql: "UPDATE key_slot SET sealed = ?, mac = ?, endorsement = ? WHERE member = 'owner'",
                           arguments: [Data(sealed), Data(mac), Data(Sodium.randomBytes(32))])
        }
        do {
            _ = try Vault.open(at: path).unlock(passphrase: SecureBytes(utf8: "the passphrase"))
            Issue.record("the substituted slot was accepted")
        } catch {
            #expect(error.exitCode == 7 && error.message.contains("key slot of member 'owner' is not signed by the owner"), "\(error)")
        }
    }

    @Test("a member-add record signed by a member (format 3's rule) in a format-4 vault: verify names it")
    func memberAddByMember() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (owner, path) = try makeVault("the passphrase")
        let alice = MemberIdentity.generate(), bob = MemberIdentity.generate()
        try owner.addMember(name: "alice", recipient: alice.recipient)
        let asAlice = try Vault.open(at: path).unlock(identity: alice)
        let ownerIdentity = owner.identity
        // The rows signed by the owner (as if stolen), the record signed by alice.
        try asAlice.write { tx in try KeyManagement(tx: tx).addMember(name: "bob", recipient: bob.recipient, owner: ownerIdentity) }
        let failure = try Vault.open(at: path).unlock(passphrase: SecureBytes(utf8: "the passphrase")).verifyAudit().firstFailure
        #expect(failure?.reason.contains("since format 4 only the owner adds members") == true, "\(String(describing: failure))")
    }

    @Test("only the owner can re-key, add or remove a member (it signs every member row and key slot)")
    func ownerOnlyKeyChanges() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (owner, path) = try makeVault("the passphrase")
        let alice = MemberIdentity.generate(), bob = MemberIdentity.generate()
        try owner.addMember(name: "alice", recipient: alice.recipient)
        let asAlice = try Vault.open(at: path).unlock(identity: alice)
        #expect(throws: VaultError.self) { try asAlice.rekey() }
        #expect(throws: VaultError.self) { _ = try asAlice.removeMember(named: "alice") }
        #expect(throws: VaultError.self) { try asAlice.addMember(name: "bob", recipient: bob.recipient) }
        #expect(throws: VaultError.wrongIdentitySlot) { _ = try Vault.open(at: path).unlock(identity: bob) }
        try owner.addMember(name: "bob", recipient: bob.recipient)
        #expect(try Vault.open(at: path).unlock(identity: bob).member == "bob")
        _ = try owner.removeMember(named: "bob")
        #expect(throws: VaultError.wrongIdentitySlot) { _ = try Vault.open(at: path).unlock(identity: bob) }
        #expect(try Vault.open(at: path).unlock(identity: alice).verifyAudit().firstFailure == nil)
    }
}
