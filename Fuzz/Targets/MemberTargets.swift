import Foundation
import VaultCore

/// Recipient strings (`vault member add --recipient`): one string per key pair. An
/// accepted string is the canonical form of its keys, and that form is read back as the
/// same keys; a refusal is exit 64 with a message safe to show.
enum Recipients {
    static func check(_ input: [UInt8]) -> String? {
        let text = String(decoding: input, as: UTF8.self)
        do {
            let recipient = try Recipient(parsing: text)
            guard recipient.string == text.trimmingCharacters(in: .whitespaces) else { return "accepted in a form that is not canonical" }
            guard try Recipient(parsing: recipient.string) == recipient else { return "the canonical form reads back differently" }
        } catch {
            return checkRefusal(error, allowed: [64])
        }
        return nil
    }
}

/// Identity files (§10.2 of FORMAT.md), as any bytes in a 0600 file of the user's. A file
/// that loads names a valid recipient; an unsealed one opens only to keys that give that
/// recipient, and is written again as a file that loads to the same recipient. A sealed
/// one is opened with a fixed passphrase when its KDF settings are the test-only ones
/// (Argon2id at real settings would make each run take a second). Refusals are exit 1,
/// 3, 7 or 64 with a message safe to show.
enum IdentityFiles {
    static let allowed: Set<Int32> = [1, 3, 7, 64]

    static func check(_ input: [UInt8]) -> String? {
        Scratch.enableTestOnlyKDF()
        let path = Scratch.file("identity", input)
        defer { unlink(path) }
        let loaded: IdentityFile.Loaded
        do {
            loaded = try IdentityFile.load(path)
        } catch {
            return checkRefusal(error, allowed: allowed)
        }
        guard (try? Recipient(parsing: loaded.recipient.string)) == loaded.recipient else { return "a loaded recipient does not parse" }
        let opened: MemberIdentity
        do {
            opened = try IdentityFile.unseal(loaded, passphrase: loaded.sealed ? SecureBytes(utf8: VaultFiles.passphrase) : nil)
        } catch {
            return checkRefusal(error, allowed: allowed)
        }
        guard opened.recipient == loaded.recipient else { return "opened to keys of another recipient" }
        do {
            let again = try IdentityFile.encode(opened, passphrase: nil, kdf: .testOnlyInsecure, createdAt: "2026-01-01T00:00:00Z")
            let written = Scratch.file("identity-again", [UInt8](again))
            defer { unlink(written) }
            let reloaded = try IdentityFile.load(written)
            guard try IdentityFile.unseal(reloaded, passphrase: nil).recipient == opened.recipient else { return "written again to another recipient" }
        } catch {
            return "an opened identity cannot be written and read again: \(error.message)"
        }
        return nil
    }
}
