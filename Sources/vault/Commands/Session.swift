import ArgumentParser
import CTokenClient
import Foundation
import VaultCore
#if canImport(Glibc)
import Glibc
#endif

/// `30m`, `12h`, `90s`, `1d`: a number and its unit. A bare number is refused
/// (``validate()``): `--for 10` must not quietly mean ten seconds.
struct DurationArgument: ExpressibleByArgument {
    var seconds: Int64
    /// Given without a unit.
    var unitless = false

    init?(argument: String) {
        let units: [Character: Int64] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
        if let plain = Int64(argument) {
            seconds = plain
            unitless = true
        } else if let last = argument.last, let unit = units[last], let amount = Int64(argument.dropLast()),
                  amount <= Int64.max / unit {
            seconds = amount * unit
        } else {
            return nil
        }
        guard seconds >= 1 else { return nil }
    }

    init(seconds: Int64) { self.seconds = seconds }

    /// Refuses a value without a unit, naming the option.
    func validate(_ option: String) throws {
        if unitless {
            throw ValidationError("\(option) needs a unit: \(seconds)s, \(seconds)m, \(seconds)h or \(seconds)d")
        }
    }

    /// How a default shows in `--help` and the man page (`12h`, not the struct).
    var defaultValueDescription: String { Self.describe(seconds) }

    static func describe(_ seconds: Int64) -> String {
        if seconds >= 3600, seconds % 3600 == 0 { return "\(seconds / 3600)h" }
        if seconds >= 60, seconds % 60 == 0 { return "\(seconds / 60)m" }
        if seconds >= 3600 { return "\(seconds / 3600)h\((seconds % 3600) / 60)m" }
        if seconds >= 60 { return "\(seconds / 60)m\(seconds % 60)s" }
        return "\(seconds)s"
    }
}

extension VaultCLI {
    struct Unlock: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "unlock",
            abstract: "Start an agent that holds the unlocked keys and hands out tokens, so `token` and `exec` stop asking for the passphrase.",
            discussion: """
                The agent serves this user only, on a 0600 socket in a 0700 directory \
                ($XDG_RUNTIME_DIR/gbg-vault, else /tmp/gbg-vault-UID), and ends after --for \
                (default 12h, at most 7d), after --idle without use (default 30m), on `vault lock`, \
                and when the vault file is replaced or its keys or passphrase change. It serves \
                `token`, `exec`, `verify`, `audit verify`, `status` and `lock`; every command that \
                changes the vault (add, rotate, remove, env, member, identity, passwd, rekey, copy, \
                upgrade) still asks for the passphrase. Its network settings (proxy variables, \
                --cacert or VAULT_CA_BUNDLE) are this command's, read once; a token request with \
                other settings is refused. While an agent runs, `unlock` with other settings (or \
                --for, --idle, --keep-fresh) asks for the passphrase and restarts it.
                """)

        @Option(name: .customLong("for"), help: ArgumentHelp("How long the agent lives (e.g. 8h, 90m; at most 7d; default 12h).", valueName: "duration"))
        var lifetime: DurationArgument?
        @Option(help: ArgumentHelp("End after this long without a request (default 30m, or --for if shorter).", valueName: "duration"))
        var idle: DurationArgument?
        @Option(name: .customLong("keep-fresh"), parsing: .upToNextOption,
                help: ArgumentHelp("Renew these profiles' tokens in the background, before they near expiry (PROFILE or PROFILE@ENV).",
                                   valueName: "profile"),
                completion: NameCompletion.profiles)
        var keepFresh: [String] = []
        @Option(help: ArgumentHelp("Extra trusted CA certificates, PEM, for every exchange of the agent (env VAULT_CA_BUNDLE).", valueName: "path"))
        var cacert: String?

        var lifetimeSeconds: Int64 { lifetime?.seconds ?? 12 * 3600 }
        var idleSeconds: Int64 { min(idle?.seconds ?? 30 * 60, lifetimeSeconds) }
        @OptionGroup var options: VaultOptions

        func validate() throws {
            try lifetime?.validate("--for")
            try idle?.validate("--idle")
            guard lifetimeSeconds <= 7 * 86400 else { throw ValidationError("--for is at most 7d") }
            for entry in keepFresh {
                let parts = entry.split(separator: "@", omittingEmptySubsequences: false)
                guard (1...2).contains(parts.count), parts.allSatisfy({ !$0.isEmpty }) else {
                    throw ValidationError("--keep-fresh takes PROFILE or PROFILE@ENV, not '\(entry)'")
                }
            }
            if let idle, idle.seconds > lifetimeSeconds { throw ValidationError("--idle cannot be longer than --for") }
            if cacert?.isEmpty == true { throw ValidationError("--cacert needs a path (it was given an empty value)") }
        }

        @MainActor func run() async throws {
            let path = options.resolvedPath
            let vault = try options.open()
            // An agent of a vault it cannot write could hand out no token (each needs its record).
            try vault.requireWritable()
            let network = try AgentNetwork.current(cacert: cacert)
            // The directory the agent will use, checked before the passphrase is asked for.
            try AgentProtocol.preparePrivateDirectory(AgentProtocol.directory())
            var running: AgentAnswer.Status?
            if let client = AgentSession.client(vaultPath: path, noAgent: false),
               case .status(let status) = try AgentSession.accepted(client.call(.status)) {
                let asked = lifetime != nil || idle != nil || !keepFresh.isEmpty
                if !asked, status.network == network {
                    let left = max(0, status.expiresAt - Int64(Date().timeIntervalSince1970))
                    Output.info("already unlocked: agent pid \(status.pid), \(DurationArgument.describe(left)) left "
                                + "(to change its time or settings, run unlock with them, or `vault lock`)")
                    return
                }
                running = status
            }
            // The names of --keep-fresh, with suggestions, before the passphrase.
            for entry in keepFresh {
                let parts = entry.split(separator: "@", omittingEmptySubsequences: false).map(String.init)
                try vault.requireNames(profile: parts[0], environment: parts.count > 1 ? parts[1] : nil)
            }
            // The passphrase (or identity) first: a restart never leaves the vault locked by mistake.
            let unlocked = try options.unlock(vault)
            if let running, let client = AgentSession.client(vaultPath: path, noAgent: false) {
                _ = client.call(.lock)
                AgentSession.waitForSocketToGo(client)
                var changed: [String] = []
                if lifetime != nil { changed.append("--for") }
                if idle != nil { changed.append("--idle") }
                if !keepFresh.isEmpty { changed.append("--keep-fresh") }
                changed += network.differences(from: running.network)
                Output.info("restarting the agent (pid \(running.pid) ended) with new settings: \(changed.joined(separator: ", "))")
            }
            let pid = try AgentLauncher.start(unlocked, vaultPath: path, lifetime: lifetimeSeconds, idle: idleSeconds, keepFresh: keepFresh,
                                              cacert: network.caBundle)
            Output.info("unlocked \(VaultOptions.display(path)) for \(DurationArgument.describe(lifetimeSeconds)) (idle \(DurationArgument.describe(idleSeconds))), agent pid \(pid)")
        }
    }

    struct Lock: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "lock", abstract: "End the agent of this vault; commands ask for the passphrase again.")
        @OptionGroup var options: VaultOptions

        @MainActor func run() async throws {
            guard let client = AgentSession.client(vaultPath: options.resolvedPath, noAgent: false),
                  case .status(let status) = try AgentSession.accepted(client.call(.lock))
            else {
                return Output.info("not unlocked: no agent serves this vault")
            }
            AgentSession.waitForSocketToGo(client)
            Output.info("locked (agent pid \(status.pid) ended)")
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "status", abstract: "Whether an agent holds this vault unlocked, and for how long (no passphrase needed).")
        @Flag(help: "Print JSON.") var json = false
        @OptionGroup var options: VaultOptions

        @MainActor func run() async throws {
            let path = options.resolvedPath
            // A vault file that does not exist has no agent; say so rather than "locked".
            var info = stat()
            if !PostgresLocation.isURL(path), stat(path, &info) != 0 { throw VaultError.notFound("no vault at \(path)") }
            let client = AgentClient.forVault(path)
            var status: AgentAnswer.Status?
            if let client, case .status(let found) = try AgentSession.accepted(client.call(.status)) { status = found }
            let now = Int64(Date().timeIntervalSince1970)
            if json {
                return Output.json(StatusView(unlocked: status != nil, vault: VaultOptions.display(path), socket: client?.socketPath, pid: status?.pid,
                                              secondsLeft: status.map { max(0, $0.expiresAt - now) },
                                              idleSecondsLeft: status.map { max(0, min($0.idleExpiresAt, $0.expiresAt) - now) },
                                              requests: status?.requests, network: status?.network.redacted, keepFresh: status?.keepFresh))
            }
            guard let status else { return Output.lines(["locked: \(VaultOptions.display(path))"]) }
            var lines = [
                "unlocked:  \(VaultOptions.display(path))",
                "agent pid: \(status.pid)",
                "time left: \(DurationArgument.describe(max(0, status.expiresAt - now)))",
                "idle left: \(DurationArgument.describe(max(0, min(status.idleExpiresAt, status.expiresAt) - now)))",
                "requests:  \(status.requests)",
            ]
            let network = status.network.redacted
            if let bundle = network.caBundle { lines.append("CA bundle: \(bundle)") }
            for (name, value) in network.proxy.sorted(by: { $0.key < $1.key }) { lines.append("proxy:     \(name)=\(value)") }
            for entry in status.keepFresh {
                let target = entry.profile + (entry.environment.map { "@\($0)" } ?? "")
                let state = entry.lastError.map { "failing (\(entry.failures) attempt(s)): \($0)" }
                    ?? entry.expiresAt.map { "token valid \(DurationArgument.describe(max(0, $0 - now))) more" } ?? "renewing"
                lines.append("fresh:     \(target): \(state); \(entry.refreshes) renewal(s), next in \(DurationArgument.describe(max(0, entry.nextRefreshAt - now)))")
            }
            Output.lines(lines)
        }
    }

    /// The agent process itself, started by `vault unlock` (hidden).
    struct AgentServe: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "agent-serve", abstract: "Run the agent (started by `vault unlock`).",
                                                        shouldDisplay: false)
        @Option var vault: String
        @Option(name: .customLong("for")) var lifetime: Int64
        @Option var idle: Int64
        @Option(name: .customLong("keep-fresh")) var keepFresh: [String] = []
        @Option var cacert: String?
        @Option(name: .customLong("url-link")) var urlLink: String?

        @MainActor func run() async throws {
            var entries: [(profile: String, environment: String?)] = []
            for entry in keepFresh {
                let parts = entry.split(separator: "@").map(String.init)
                entries.append((parts[0], parts.count == 2 ? parts[1] : nil))
            }
            let server: AgentServer
            do {
                let identity = try AgentLauncher.receiveIdentity()
                server = try AgentServer(vaultPath: vault, identity: identity, lifetime: TimeInterval(lifetime), idle: TimeInterval(idle),
                                         keepFresh: entries, cacert: cacert, urlLink: urlLink)
                try server.bind()
            } catch {
                AgentLauncher.report(error)
                throw ExitCode(error.exitCode)
            }
            AgentLauncher.report(nil)
            server.run()
        }
    }
}

struct StatusView: Encodable {
    var unlocked: Bool
    var vault: String
    var socket: String?
    var pid: Int32?
    var secondsLeft: Int64?
    var idleSecondsLeft: Int64?
    var requests: Int64?
    var network: AgentNetwork?
    var keepFresh: [AgentAnswer.FreshEntry]?
    enum CodingKeys: String, CodingKey {
        case unlocked, vault, socket, pid, secondsLeft = "seconds_left", idleSecondsLeft = "idle_seconds_left", requests, network
        case keepFresh = "keep_fresh"
    }
}

/// Routing the commands the agent serves through it, when one serves the vault.
enum AgentSession {
    /// Set when `vault`'s client before `main` already called the agent for this process
    /// (CTokenClient): its outcome was taken as this process's, and the agent is not asked again.
    nonisolated(unsafe) static var alreadyCalled = false

    /// Whether `--no-agent` or `VAULT_NO_AGENT=1` asks to bypass the agent.
    static func bypassed(flag: Bool) -> Bool {
        flag || LocalEnvironment.isOn("VAULT_NO_AGENT")
    }

    /// The client of the vault's agent, or nil when bypassed, already called, or the vault
    /// does not exist (the command then opens it itself and reports the real problem).
    static func client(vaultPath: String, noAgent: Bool) -> AgentClient? {
        if alreadyCalled || bypassed(flag: noAgent) { return nil }
        return AgentClient.forVault(vaultPath)
    }

    /// The agent's answer as the command takes it: the answer; an error with the command's
    /// exit code; or nil, to go on without the agent (after a one-line hint when something
    /// was wrong: a stale socket, a refused directory or peer, a broken answer, an agent
    /// that is ending).
    static func accepted(_ outcome: AgentClient.Outcome) throws(VaultError) -> AgentAnswer? {
        switch outcome {
        case .absent: return nil
        case .stale:
            Output.info("hint: the agent for this vault had stopped; its stale socket was removed")
            return nil
        case .untrusted(let why):
            Output.warning("\(why); the agent was not used")
            return nil
        case .broken(let why):
            Output.info("hint: the agent did not answer properly (\(why)); going on without it")
            return nil
        case .answered(.failure(let failure)) where failure.ending == true:
            Output.info("hint: the agent for this vault is ending; going on without it")
            return nil
        case .answered(.failure(let failure)):
            throw failure.error
        case .answered(let answer):
            return answer
        }
    }

    /// Runs `operation` through the agent if one serves the vault; nil otherwise.
    static func call(_ options: VaultOptions, _ operation: AgentOperationCall) throws(VaultError) -> AgentAnswer? {
        guard let client = client(vaultPath: options.resolvedPath, noAgent: options.noAgent) else { return nil }
        return try accepted(client.call(operation))
    }

    /// A token through the agent, as `token` (`print`: the output in `format`) or `exec`
    /// asks for it; nil when no agent serves the vault.
    static func token(_ options: VaultOptions, selection: TokenSelection, network: NetworkOptions, profile: String,
                      print: Bool, format: TokenFormat?, action: TokenAction) throws(VaultError) -> AgentAnswer? {
        guard let client = client(vaultPath: options.resolvedPath, noAgent: options.noAgent) else { return nil }
        let request = AgentTokenRequest(profile: profile, environment: selection.env, print: print, format: format, action: action,
                                        fresh: selection.fresh, minTTL: selection.minTtl,
                                        timeoutMs: network.timeout.map { Int64($0 * 1000) },
                                        connectTimeoutMs: network.connectTimeout.map { Int64($0 * 1000) })
        return try accepted(client.call(.token(request), cacert: network.cacert))
    }

    /// Ends the agent of the vault after `passwd`, `rekey` or `member remove` changed the
    /// keys (the agent also notices by itself within a fraction of a second).
    static func lockAfterKeyChange(_ options: VaultOptions) {
        guard let client = AgentClient.forVault(options.resolvedPath), client.socketExists,
              case .answered(.status) = client.call(.lock) else { return }
        waitForSocketToGo(client)
        Output.info("the agent of this vault was ended; run `vault unlock` again")
    }

    /// The agent ends right after answering `lock`: wait (up to 3 s) until its socket is
    /// gone, so that `vault lock` returns when the session is over.
    static func waitForSocketToGo(_ client: AgentClient) {
        let deadline = Date().addingTimeInterval(3)
        while client.socketExists, Date() < deadline { usleep(10_000) }
    }

    /// What `vault`'s client before `main` did for `vault token …`, if it called the agent
    /// and did not print an answer itself: its outcome, taken as this process's own (an
    /// error and its exit code, or a hint and the passphrase way), and the agent is not
    /// called again. Runs first in `main`.
    static func takeEarlyOutcome() {
        var call: Int32 = 0
        var detail: Int64 = 0
        var socket: UnsafePointer<CChar>?
        var answer: UnsafePointer<UInt8>?
        var length = 0
        guard vault_early_claim(&call, &detail, &socket, &answer, &length) == Int32(VAULT_EARLY_CALLED) else { return }
        alreadyCalled = true
        let outcome = AgentClient.outcome(ofCall: call, answer: UnsafeBufferPointer(start: answer, count: length), detail: detail,
                                          socketPath: socket.map { String(cString: $0) } ?? "")
        vault_early_wipe()
        do throws(VaultError) {
            guard let answer = try accepted(outcome) else { return }
            if case .output(let bytes) = answer {
                try Output.stdout(secret: bytes)
                exit(0)
            }
            throw VaultError.failure("the agent gave an answer of another kind than the one asked for")
        } catch {
            Output.error(error)
            exit(error.exitCode)
        }
    }
}
