import ArgumentParser
import Foundation
import VaultCore

/// "Did you mean …?" for mistyped subcommands and option names (edit distance).
enum Suggestions {
    /// Options every command accepts (argument-parser's and vault's global ones).
    static let globalOptions: Set<String> = ["--help", "--version", "--vault", "--passphrase-file", "--verbose"]

    static func name(of command: any ParsableCommand.Type) -> String {
        command.configuration.commandName ?? command._commandName
    }

    /// The subcommand path named by `arguments`, and the first word that should have
    /// been a subcommand but is not one.
    static func resolve(_ arguments: [String]) -> (path: [any ParsableCommand.Type], unknown: String?) {
        var path: [any ParsableCommand.Type] = [VaultCLI.self]
        var skipNext = false
        for argument in arguments {
            if argument == "--" { break }
            if skipNext { skipNext = false; continue }
            if argument.hasPrefix("-") {
                // An option's value is not a command word (`audit --since 24h`), nor is the
                // word after an option the command does not know (`audit --limt 3`: the
                // mistyped option is the mistake to name).
                if ["--vault", "--passphrase-file"].contains(argument) || valueOptions(of: path.last!).contains(argument)
                    || (argument.hasPrefix("--") && !argument.contains("=") && !options(of: path.last!).contains(argument)) {
                    skipNext = true
                }
                continue
            }
            let subcommands = path.last!.configuration.subcommands
            guard !subcommands.isEmpty else { break }
            if let match = subcommands.first(where: { name(of: $0) == argument }) {
                path.append(match)
                continue
            }
            // Under a default subcommand a word may be that subcommand's argument; it is
            // taken for a mistyped command only when it is close to one (`member lst`).
            if path.last!.configuration.defaultSubcommand == nil || nearest(argument, in: subcommands.map(name(of:))) != nil {
                return (path, argument)
            }
            break
        }
        return (path, nil)
    }

    /// Option names (`--…`) the command accepts, read from its help.
    static func options(of command: any ParsableCommand.Type) -> Set<String> {
        let help = VaultCLI.helpMessage(for: command, includeHidden: true, columns: 1000)
        var names = globalOptions
        var current = ""
        for character in help + " " {
            if character == "-" || character.isLetter || character.isNumber, !(current.isEmpty && character != "-") {
                current.append(character)
            } else {
                if current.hasPrefix("--"), current.count > 2 { names.insert(current) }
                current = ""
            }
        }
        return names
    }

    /// The options of `command` that take a value (`--name <value>` in its help).
    static func valueOptions(of command: any ParsableCommand.Type) -> Set<String> {
        let help = VaultCLI.helpMessage(for: command, includeHidden: true, columns: 1000)
        let words = help.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "," || $0 == "[" || $0 == "]" })
        var names: Set<String> = []
        for (index, word) in words.enumerated() where word.hasPrefix("--") && index + 1 < words.count && words[index + 1].hasPrefix("<") {
            names.insert(String(word))
        }
        return names
    }

    /// Damerau–Levenshtein distance (optimal string alignment): insertions, deletions,
    /// substitutions and transpositions of neighbours each count 1 (`lsit` is 1 from `list`).
    static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        guard !a.isEmpty else { return b.count }
        guard !b.isEmpty else { return a.count }
        var d = Array(repeating: Array(repeating: 0, count: b.count + 1), count: a.count + 1)
        for i in 0...a.count { d[i][0] = i }
        for j in 0...b.count { d[0][j] = j }
        for i in 1...a.count {
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] { d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1) }
            }
        }
        return d[a.count][b.count]
    }

    /// The one candidate that `word` begins (`hist` → `history`), else the nearest within a
    /// small edit distance (ties: alphabetical), else nil.
    static func nearest(_ word: String, in candidates: some Sequence<String>) -> String? {
        let candidates = Array(candidates)
        let prefixed = candidates.filter { $0.hasPrefix(word) && word.count >= 2 && $0 != word }
        if prefixed.count == 1 { return prefixed[0] }
        let limit = max(2, word.count / 3)
        let scored = candidates.map { ($0, distance(word, $0)) }.filter { $0.1 <= limit }.sorted { ($0.1, $0.0) < ($1.1, $1.0) }
        return scored.first?.0
    }

    /// A better message and hint for an argument error, when a typo explains it.
    static func explain(_ arguments: [String]) -> (message: String, hint: String)? {
        let (path, unknown) = resolve(arguments)
        let spelled = path.map(name(of:)).joined(separator: " ")
        if let unknown {
            let names = path.last!.configuration.subcommands.map(name(of:))
            if let guess = nearest(unknown, in: names) {
                return ("unknown command '\(unknown.sanitisedForDisplay(limit: 40))'", "did you mean `\(spelled) \(guess)`?")
            }
            return ("unknown command '\(unknown.sanitisedForDisplay(limit: 40))'", "see `\(spelled) --help` for the commands")
        }
        let known = options(of: path.last!)
        for argument in arguments.prefix(while: { $0 != "--" }) where argument.hasPrefix("--") && argument.count > 2 {
            let option = String(argument.split(separator: "=", maxSplits: 1).first ?? "")
            guard !known.contains(option) else { continue }
            if let guess = nearest(option, in: known) {
                return ("unknown option '\(option.sanitisedForDisplay(limit: 40))'", "did you mean `\(guess)`? (see `\(spelled) --help`)")
            }
            return ("unknown option '\(option.sanitisedForDisplay(limit: 40))'", "see `\(spelled) --help`")
        }
        return nil
    }

    static func helpHint(for arguments: [String]) -> String {
        let spelled = resolve(arguments).path.map(name(of:)).joined(separator: " ")
        return "see `\(spelled) --help`"
    }
}

extension Vault {
    /// Throws exit 6, with the nearest name as a hint, unless a profile named `profile`
    /// (and an environment named `environment`, when given) exists. Metadata only, no MAC
    /// checked: it saves a mistyped name the passphrase.
    func requireNames(profile: String, environment: String?) throws(VaultError) {
        let known = try names()
        if !known.profiles.contains(profile.precomposedStringWithCanonicalMapping) {
            throw Self.missing("profile", profile, in: known.profiles)
        }
        if let environment, !known.environments.contains(environment.precomposedStringWithCanonicalMapping) {
            throw Self.missing("environment", environment, in: known.environments)
        }
    }

    /// Exit 6, with the nearest name as a hint, unless an environment named `name` exists.
    func requireEnvironment(_ name: String) throws(VaultError) {
        let known = try names().environments
        if !known.contains(name.precomposedStringWithCanonicalMapping) { throw Self.missing("environment", name, in: known) }
    }

    /// Exit 6, with the nearest name as a hint, unless `name` is a current member.
    func requireCurrentMember(_ name: String) throws(VaultError) {
        let current = try members().filter { $0.removedSeq == nil }.map(\.name)
        if !current.contains(name) { throw Self.missing("current member", name, in: current) }
    }

    private static func missing(_ what: String, _ name: String, in candidates: [String]) -> VaultError {
        let suggestion = Suggestions.nearest(name, in: candidates).map { "did you mean '\($0.sanitisedForDisplay(limit: 64))'?" }
        return .notFound("no \(what) named '\(name.sanitisedForDisplay(limit: 64))'", hint: suggestion)
    }
}
