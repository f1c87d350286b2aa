import ArgumentParser
import Foundation
import VaultCore
#if canImport(Glibc)
import Glibc
#endif

extension VaultCLI {
    struct IdentityCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "identity",
            abstract: "Make and show member identities (an X25519 key pair for the vault keys, an Ed25519 key pair for audit signatures).",
            subcommands: [NewIdentity.self, ShowIdentity.self])
    }

    struct NewIdentity: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "new",
            abstract: "Make a new identity file (0600; never overwrites a file) and print its recipient.",
            discussion: """
                The private keys are sealed under the identity's own passphrase (Argon2id), read from \
                VAULT_IDENTITY_PASSPHRASE_FILE, VAULT_IDENTITY_PASSPHRASE or asked twice on the terminal. \
                For machines (CI runners, batch hosts), --no-passphrase writes them unsealed, 0600, \
                for use from VAULT_IDENTITY_FILE. Give the printed recipient to a vault's owner: \
                `vault member add NAME --recipient gbgv1...`.
                """)

        @Option(help: ArgumentHelp("Where to write it (default: ${XDG_DATA_HOME:-~/.local/share}/gbg-vault/identity).", valueName: "path"))
        var out: String?
        @Flag(help: "Write the private keys unsealed (machine identities; protect the file like an SSH host key).")
        var noPassphrase = false
        @Option(help: "Argon2id cost preset for the identity passphrase: interactive, moderate or sensitive.")
        var kdf: KDFParameters.Preset = .moderate
        @Flag(help: "Accept a new passphrase shorter than \(PassphraseReader.minimumLength) characters.")
        var allowShortPassphrase = false

        @MainActor func run() async throws {
            let path = out ?? IdentityFile.defaultPath()
            var existing = stat()
            if lstat(path, &existing) == 0 {
                throw VaultError.failure("\(path) already exists; an identity is never written over a file",
                                         hint: "choose another path with --out, or remove the old identity yourself")
            }
            let passphrase = noPassphrase ? nil : try IdentityPassphrase.reader.new(allowShort: allowShortPassphrase)
            var parameters = kdf.parameters
            if KDFParameters.testOnlyInsecureKDFEnabled { parameters = .testOnlyInsecure }
            let identity = MemberIdentity.generate()
            let data = try IdentityFile.encode(identity, passphrase: passphrase, kdf: parameters, createdAt: Date().iso8601)
            try IdentityFile.write(data, to: path)
            Output.info("wrote \(noPassphrase ? "an unsealed" : "a passphrase-sealed") identity to \(path); its recipient:")
            Output.stdout(identity.recipient.string + "\n")
        }
    }

    struct ShowIdentity: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "show",
            abstract: "Print an identity's recipient (public keys only; no passphrase needed).")

        @Option(help: ArgumentHelp("The identity file (env VAULT_IDENTITY_FILE; default: the default identity).", valueName: "path"))
        var identity: String?

        @MainActor func run() async throws {
            let loaded = try IdentityFile.load(IdentityPassphrase.path(explicit: identity))
            Output.stdout(loaded.recipient.string + "\n")
        }
    }
}

/// Where an identity and its passphrase come from.
enum IdentityPassphrase {
    static let reader = PassphraseReader(
        passphraseFile: nil, fileVariable: "VAULT_IDENTITY_PASSPHRASE_FILE", valueVariable: "VAULT_IDENTITY_PASSPHRASE",
        prompt: "Identity passphrase: ", newPrompt: "New identity passphrase: ",
        sourcesHint: "set VAULT_IDENTITY_PASSPHRASE_FILE or VAULT_IDENTITY_PASSPHRASE, or run on a terminal")

    /// `--identity`, else `VAULT_IDENTITY_FILE`, else the default identity file.
    static func path(explicit: String?) -> String {
        if let explicit, !explicit.isEmpty { return explicit }
        return LocalEnvironment.value("VAULT_IDENTITY_FILE") ?? IdentityFile.defaultPath()
    }
}
