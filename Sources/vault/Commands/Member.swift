import ArgumentParser
import Foundation
import VaultCore

extension VaultCLI {
    struct MemberCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "member",
            abstract: "Who can open this vault: the passphrase ('owner') and member identities, each with its own key slot.",
            subcommands: [ListMembers.self, AddMember.self, RemoveMember.self],
            defaultSubcommand: ListMembers.self)
    }

    struct ListMembers: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "list",
            abstract: "List members, current and removed (no passphrase needed; `vault verify` checks their MACs).")
        @Flag(help: "Print JSON.") var json = false
        @OptionGroup var options: VaultOptions

        @MainActor func run() async throws {
            let members = try options.openForReading().members()
            if json { return Output.json(members) }
            Output.table(["NAME", "KIND", "SINCE", "REMOVED", "RECIPIENT"], members.map {
                [$0.name, $0.kind, "#\($0.addedSeq)", $0.removedSeq.map { "#\($0)" } ?? "-", $0.recipient]
            })
        }
    }

    struct AddMember: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "add",
            abstract: "Give a member identity its own key slot, signed by the owner (needs the passphrase, even while unlocked).")
        @Argument(help: "The member's name (letters, digits, . _ -).") var name: String
        @Option(help: ArgumentHelp("The member's recipient, as `vault identity show` prints it (gbgv1...).", valueName: "recipient"))
        var recipient: String
        @OptionGroup var options: VaultOptions

        @MainActor func run() async throws {
            // Checked before anything is unlocked: a mistyped recipient is exit 64, nothing stored.
            let parsed = try Recipient(parsing: recipient)
            try options.unlock().addMember(name: name, recipient: parsed)
            Output.info("added member '\(name)'; it can now open this vault with its identity")
        }
    }

    struct RemoveMember: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "remove",
            abstract: "Remove a member: new keys for everyone else, in one transaction (like rekey; needs the passphrase).")
        @Argument(help: "The member's name.", completion: NameCompletion.members) var name: String
        @OptionGroup var options: VaultOptions

        @MainActor func run() async throws {
            // Like `rekey`: never through the agent; it needs the owner (the passphrase), and
            // the agent of this vault ends with the key change.
            let locked = try options.open()
            try locked.requireCurrentMember(name)
            let count = try options.unlock(locked).removeMember(named: name)
            defer { AgentSession.lockAfterKeyChange(options) }
            Output.info(Self.message(name: name, resealed: count))
            Output.warning("'\(name)' could have copied every secret while a member: rotate each profile's GBG credentials (`vault rotate PROFILE --verify`)")
        }

        static func message(name: String, resealed: Int) -> String {
            "removed member '\(name)': new data and audit keys sealed to the remaining members; \(resealed) secret version(s) re-sealed, cached tokens dropped"
        }
    }
}
