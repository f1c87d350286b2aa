import ArgumentParser
import Foundation
import VaultCore

extension VaultCLI {
    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "remove",
            abstract: "Delete a profile, its secret versions and cached tokens; its audit records stay.")

        @Argument(help: "The profile name.", completion: NameCompletion.profiles) var name: String
        @Flag(help: "Do not ask for confirmation.") var yes = false
        @OptionGroup var options: VaultOptions

        @MainActor func run() async throws {
            // The name and the answer first, then the passphrase.
            let locked = try options.open()
            try locked.requireNames(profile: name, environment: nil)
            let profile = try locked.profile(named: name)
            if !yes {
                let answer = try Terminal.readLine(prompt: "Remove profile '\(profile.name)' and all its secret versions? [y/N] ",
                                                   missingSourceHint: "pass --yes to remove without a terminal")
                guard ["y", "yes"].contains(answer.lowercased()) else {
                    Output.info("nothing removed")
                    return
                }
            }
            try options.unlock(locked).removeProfile(named: profile.name)
            Output.info("removed profile '\(profile.name)'")
        }
    }
}

extension Terminal {
    /// A visible one-line answer from the terminal (confirmation prompts).
    static func readLine(prompt: String, missingSourceHint: String) throws(VaultError) -> String {
        let fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC)
        guard fd >= 0 else { throw .usage("no terminal to ask for confirmation", hint: missingSourceHint) }
        defer { close(fd) }
        _ = prompt.withCString { write(fd, $0, strlen($0)) }
        var bytes: [UInt8] = []
        var byte: UInt8 = 0
        while read(fd, &byte, 1) == 1, byte != 0x0a, bytes.count < 256 { bytes.append(byte) }
        return String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
