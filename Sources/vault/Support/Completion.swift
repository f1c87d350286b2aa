import ArgumentParser
import Foundation
import VaultCore

/// Dynamic shell completion of profile and environment names (argument-parser's
/// `.custom` completion): the completion script calls back into `vault`, which opens the
/// vault without a passphrase (as `vault list` does) and prints the names. Any failure
/// completes nothing.
enum NameCompletion {
    /// The vault path the command line being completed would use.
    static func vaultPath(in words: [String]) -> String {
        var path: String?
        for (index, word) in words.enumerated() {
            if word == "--vault", index + 1 < words.count { path = words[index + 1] }
            if word.hasPrefix("--vault=") { path = String(word.dropFirst("--vault=".count)) }
        }
        return VaultOptions.defaultPath(explicit: path)
    }

    static func names(_ words: [String]) -> (profiles: [String], environments: [String]) {
        guard let vault = try? Vault.openForReading(at: vaultPath(in: words)), let names = try? vault.names() else {
            return ([], Environment.builtIns.map(\.name))
        }
        return names
    }

    static let profiles: CompletionKind = .custom { words, _, prefix in
        names(words).profiles.filter { $0.hasPrefix(prefix) }
    }

    static let environments: CompletionKind = .custom { words, _, prefix in
        names(words).environments.filter { $0.hasPrefix(prefix) }
    }

    /// Current members (for `member remove`; `owner` cannot be removed).
    static let members: CompletionKind = .custom { words, _, prefix in
        let current = (try? Vault.openForReading(at: vaultPath(in: words)).members()) ?? []
        return current.filter { $0.removedSeq == nil && $0.kind != "passphrase" && $0.name.hasPrefix(prefix) }.map(\.name)
    }

    /// Every member, removed ones too (for `audit --member`).
    static let allMembers: CompletionKind = .custom { words, _, prefix in
        ((try? Vault.openForReading(at: vaultPath(in: words)).members()) ?? []).map(\.name).filter { $0.hasPrefix(prefix) }
    }

    static let userEnvironments: CompletionKind = .custom { words, _, prefix in
        let builtIn = Set(Environment.builtIns.map(\.name))
        return names(words).environments.filter { !builtIn.contains($0) && $0.hasPrefix(prefix) }
    }
}
