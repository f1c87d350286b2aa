import ArgumentParser
import Foundation
import VaultCore
#if canImport(Glibc)
import Glibc
#endif

/// `30m`, `12h`, `90s`, `1d`, or plain seconds.
struct DurationArgument: ExpressibleByArgument {
    var seconds: Int64

    init?(argument: String) {
        let units: [Character: Int64] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
        if let plain = Int64(argument) {
            seconds = plain
        } else if let last = argument.last, let unit = units[last], let amount = Int64(argument.dropLast()) {
            seconds = amount * unit
        } else {
            return nil
        }
        guard seconds >= 1 else { return nil }
    }

    init(seconds: Int64) { self.seconds = seconds }

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
            abstract: "Start an agent that holds the unlocked keys, so commands stop asking for the passphrase.",
            discussion: """
                The agent serves this user only, on a 0600 socket in a 0700 directory \
                ($XDG_RUNTIME_DIR/gbg-vault, else /tmp/gbg-vault-UID), and ends after --for \
                (default 12h, at most 7d), after --idle without use (default 30m), on `vault lock`, \
                and when the vault file is replaced or its keys or passphrase change. `passwd`, \
                `rekey`, `member remove` and `upgrade` always ask for the passphrase; `token`, `exec`, \
                `add`, `rotate`, `remove`, `env add/set/remove`, `member add`, `verify` and \
                `audit verify` use the agent. With --identity or VAULT_IDENTITY_FILE (or the default \
                identity) the agent holds that member's keys instead, and signs as that member.
                """)

        @OptionGroup var options: VaultOptions
        @Option(name: .customLong("for"), help: ArgumentHelp("How long the agent lives (e.g. 8h, 90m; at most 7d).", valueName: "duration"))
        var lifetime = DurationArgument(seconds: 12 * 3600)
        @Option(help: ArgumentHelp("End after this long without a request (default 30m, or --for if shorter).", valueName: "duration"))
        var idle: DurationArgument?
        @Option(name: .customLong("keep-fresh"), parsing: .upToNextOption,
                help: ArgumentHelp("Renew these profiles' tokens in the background, before they near expiry (PROFILE or PROFILE@ENV).",
                                   valueName: "profile"),
                completion: NameCompletion.profiles)
        var keepFresh: [String] = []

        var idleSeconds: Int64 { min(idle?.seconds ?? 30 * 60, lifetime.seconds) }

        func validate() throws {
            guard lifetime.seconds <= 7 * 86400 else { throw ValidationError("--for is at most 7d") }
            for entry in keepFresh {
                let parts = entry.split(separator: "@", omittingEmptySubsequences: false)
                guard (1...2).contains(parts.count), parts.allSatisfy({ !$0.isEmpty }) else {
                    throw ValidationError("--keep-fresh takes PROFILE or PROFILE@ENV, not '\(entry)'")
                }
            }
            if let idle, idle.seconds > lifetime.seconds { throw ValidationError("--idle cannot be longer than --for") }
        }

        @MainActor func run() async throws {
            let path = options.resolvedPath
            let vault = try options.open()
            let socket = try vault.database.postgresLocation.map { AgentProtocol.socketPath(store: $0.identity) }
                ?? AgentProtocol.socketPath(vaultID: try vault.header().vaultID)
            if let status = try? AgentClient(socketPath: socket).send(AgentRequest(op: "status"), timeout: 5).status {
                Output.info("already unlocked: agent pid \(status.pid), \(DurationArgument.describe(max(0, status.expiresAt - Int64(Date().timeIntervalSince1970)))) left")
                return
            }
            try AgentProtocol.preparePrivateDirectory((socket as NSString).deletingLastPathComponent, create: true)
            let unlocked = try options.unlock(vault)
            // The agent checks each --keep-fresh profile and environment (MACs included)
            // before it listens, and its error comes back here with its exit code.
            let pid = try AgentLauncher.start(unlocked, vaultPath: path, lifetime: lifetime.seconds, idle: idleSeconds, keepFresh: keepFresh)
            Output.info("unlocked \(VaultOptions.display(path)) for \(DurationArgument.describe(lifetime.seconds)) (idle \(DurationArgument.describe(idleSeconds))), agent pid \(pid)")
        }
    }

    struct Lock: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "lock", abstract: "End the agent of this vault; commands ask for the passphrase again.")
        @OptionGroup var options: VaultOptions

        @MainActor func run() async throws {
            let target = try AgentSession.target(vaultPath: options.resolvedPath)
            do {
                let response = try target.client.send(target.stamped(AgentRequest(op: "lock")), timeout: 10)
                guard response.ok else { throw AgentClient.Failure.noAgent }
                AgentSession.waitForSocketToGo(target)
                Output.info("locked (agent pid \(response.status?.pid ?? 0) ended)")
            } catch {
                Output.info("not unlocked: no agent serves this vault")
            }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "status", abstract: "Whether an agent holds this vault unlocked, and for how long (no passphrase needed).")
        @OptionGroup var options: VaultOptions
        @Flag(help: "Print JSON.") var json = false

        @MainActor func run() async throws {
            try Self.show(vaultPath: options.resolvedPath, json: json)
        }

        /// The whole command, also run by the fast path (`FastPath`).
        static func show(vaultPath path: String, json: Bool) throws(VaultError) {
            let target = try AgentSession.target(vaultPath: path)
            let socket = target.client.socketPath
            var status: AgentResponse.Status?
            if target.client.socketExists, let response = try? target.client.send(target.stamped(AgentRequest(op: "status")), timeout: 5),
               response.ok {
                status = response.status
            }
            let now = Int64(Date().timeIntervalSince1970)
            if json {
                return Output.json(StatusView(unlocked: status != nil, vault: VaultOptions.display(path), socket: socket, pid: status?.pid,
                                              secondsLeft: status.map { max(0, $0.expiresAt - now) },
                                              idleSecondsLeft: status.map { max(0, min($0.idleExpiresAt, $0.expiresAt) - now) },
                                              requests: status?.requests, keepFresh: status?.keepFresh))
            }
            guard let status else { return Output.lines(["locked: \(VaultOptions.display(path))"]) }
            var lines = [
                "unlocked:  \(VaultOptions.display(path))",
                "agent pid: \(status.pid)",
                "time left: \(DurationArgument.describe(max(0, status.expiresAt - now)))",
                "idle left: \(DurationArgument.describe(max(0, min(status.idleExpiresAt, status.expiresAt) - now)))",
                "requests:  \(status.requests)",
            ]
            for entry in status.keepFresh ?? [] {
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

        @MainActor func run() async throws {
            var entries: [(profile: String, environment: String?)] = []
            for entry in keepFresh {
                let parts = entry.split(separator: "@").map(String.init)
                entries.append((parts[0], parts.count == 2 ? parts[1] : nil))
            }
            let server: AgentServer
            do {
                server = try Self.start(vault: vault, lifetime: lifetime, idle: idle, entries: entries)
            } catch {
                AgentLauncher.report(error)
                throw ExitCode(error.exitCode)
            }
            AgentLauncher.report(nil)
            server.run()
        }

        static func start(vault: String, lifetime: Int64, idle: Int64,
                          entries: [(profile: String, environment: String?)]) throws(VaultError) -> AgentServer {
            let identity = try AgentLauncher.receiveIdentity()
            let server = try AgentServer(vaultPath: vault, identity: identity, lifetime: TimeInterval(lifetime), idle: TimeInterval(idle),
                                         keepFresh: entries)
            try server.bind()
            return server
        }
    }
}

struct StatusView: Encodable {
    var unlocked: Bool
    var vault: String
    var socket: String
    var pid: Int32?
    var secondsLeft: Int64?
    var idleSecondsLeft: Int64?
    var requests: Int64?
    var keepFresh: [AgentResponse.FreshEntry]?
    enum CodingKeys: String, CodingKey {
        case unlocked, vault, socket, pid, secondsLeft = "seconds_left", idleSecondsLeft = "idle_seconds_left", requests
        case keepFresh = "keep_fresh"
    }
}

/// Routing commands through the agent when one serves the vault.
enum AgentSession {
    /// The agent socket of one vault file, and that file's identity (sent with every
    /// request, so an agent serving a copy of the vault with the same id does nothing).
    struct Target {
        var client: AgentClient
        var device: UInt64?
        var inode: UInt64?
        /// A PostgreSQL vault's identity (instead of a file's device and inode).
        var store: String?

        func stamped(_ request: AgentRequest) -> AgentRequest {
            var request = request
            request.fileDevice = device
            request.fileInode = inode
            request.store = store
            return request
        }
    }

    /// Where the agent of the vault at `vaultPath` would listen: its link by the file's
    /// device and inode, else by the vault id (a lean read: one read-only connection, no
    /// pool, no schema check).
    static func target(vaultPath: String) throws(VaultError) -> Target {
        if PostgresLocation.isURL(vaultPath) {
            // No connection: the socket is named by the location itself.
            let identity = try PostgresLocation.parse(vaultPath, readPasswordFile: false).identity
            return Target(client: AgentClient(socketPath: AgentProtocol.socketPath(store: identity)), store: identity)
        }
        // The agent's link by this file's device and inode, if there is one: no SQLite at
        // all (a replaced file has another inode, so it never matches an agent's link).
        var info = stat()
        if stat(vaultPath, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG,
           let socket = AgentProtocol.socketPath(fromFileLink: AgentProtocol.fileLinkPath(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))) {
            return Target(client: AgentClient(socketPath: socket), device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
        }
        let found = try VaultDatabase.agentLookup(at: vaultPath)
        return Target(client: AgentClient(socketPath: AgentProtocol.socketPath(vaultID: found.vaultID)), device: found.dev, inode: found.ino)
    }

    /// Whether `--no-agent` or `VAULT_NO_AGENT=1` asks to bypass the agent.
    static func bypassed(flag: Bool) -> Bool {
        flag || LocalEnvironment.isOn("VAULT_NO_AGENT")
    }

    /// The agent of the vault, or nil when bypassed or no agent socket exists (the
    /// command then goes the passphrase way).
    static func client(_ options: VaultOptions) -> Target? {
        client(vaultPath: options.resolvedPath, noAgent: options.noAgent)
    }

    /// When the lean lookup fails (no vault, not a vault, an unreadable file) there is no
    /// agent to use: the command opens the vault itself and reports the real problem.
    static func client(vaultPath: String, noAgent: Bool) -> Target? {
        if bypassed(flag: noAgent) { return nil }
        guard let target = try? target(vaultPath: vaultPath) else { return nil }
        return target.client.socketExists ? target : nil
    }

    /// Sends `request`; nil when the agent turned out to be gone, ending or serving
    /// another file (after a one-line hint), an error with the command's exit code when
    /// the operation failed.
    static func send(_ target: Target, _ request: AgentRequest, timeout: TimeInterval = 60) throws(VaultError) -> AgentResponse? {
        let outcome: Result<AgentResponse, AgentClient.Failure>
        do {
            outcome = .success(try target.client.send(target.stamped(request), timeout: timeout))
        } catch {
            outcome = .failure(error)
        }
        return try accepted(outcome)
    }

    /// The agent's answer (or the failure to get one) as the command takes it; also for
    /// the answer `vault token NAME`'s constructor handed over (`FastPath.earlyToken`).
    static func accepted(_ outcome: Result<AgentResponse, AgentClient.Failure>) throws(VaultError) -> AgentResponse? {
        let response: AgentResponse
        switch outcome {
        case .success(let answer): response = answer
        case .failure(.noAgent): return nil
        case .failure(.stale):
            Output.info("hint: the agent for this vault had stopped; its stale socket was removed (asking for the passphrase)")
            return nil
        case .failure(.broken(let why)):
            Output.info("hint: the agent did not answer properly (\(why)); asking for the passphrase")
            return nil
        }
        if response.ending == true {
            Output.info("hint: the agent for this vault is ending; asking for the passphrase")
            return nil
        }
        if response.otherFile == true {
            Output.info("hint: the running agent serves another copy of this vault; asking for the passphrase")
            return nil
        }
        guard response.ok else {
            let failure = response.error ?? .init(exitCode: 1, message: "the agent did not perform the operation", hint: nil)
            throw .relayed(exitCode: failure.exitCode, message: failure.message, hint: failure.hint)
        }
        return response
    }

    /// Runs `request` through the agent if one serves the vault; nil otherwise.
    static func perform(_ options: VaultOptions, _ request: AgentRequest) throws(VaultError) -> AgentResponse? {
        guard let target = client(options) else { return nil }
        return try send(target, request)
    }

    static func networkFields(_ request: inout AgentRequest, _ network: NetworkOptions) {
        request.setNetwork(timeout: network.timeout, connectTimeout: network.connectTimeout, cacert: network.cacert)
    }

    /// What `token` and `exec` ask for (VaultCore's ``AgentTokenAsk``).
    typealias TokenAsk = AgentTokenAsk

    /// The token from the agent, or nil when there is none.
    static func token(_ options: VaultOptions, selection: TokenSelection, network: NetworkOptions,
                      profile: String, action: String) throws(VaultError) -> DeliveredToken? {
        var ask = TokenAsk(vaultPath: options.resolvedPath, profile: profile)
        ask.noAgent = options.noAgent
        ask.environment = selection.env
        ask.fresh = selection.fresh
        ask.minTTL = selection.minTtl
        ask.timeout = network.timeout
        ask.connectTimeout = network.connectTimeout
        ask.cacert = network.cacert
        return try token(ask, action: action)
    }

    static func token(_ ask: TokenAsk, action: String) throws(VaultError) -> DeliveredToken? {
        guard let target = client(vaultPath: ask.vaultPath, noAgent: ask.noAgent) else { return nil }
        return try token(ask, target: target, action: action)
    }

    static func token(_ ask: TokenAsk, target: Target, action: String) throws(VaultError) -> DeliveredToken? {
        guard let token = try agentToken(ask, target: target, action: action) else { return nil }
        let environment = Environment(name: token.environment, tokenURL: "", apiBase: token.apiBase, builtIn: false)
        let audit = AuditEntry(at: 0, action: action, outcome: token.fromCache ? "cache_hit" : "ok")
        return DeliveredToken(token: SecureBytes(utf8: token.accessToken), tokenType: token.tokenType, expiresAt: token.expiresAt,
                              expiresIn: token.expiresIn, environment: environment, fromCache: token.fromCache, audit: audit)
    }

    /// The agent's answer to a token request, as it came (`vault token`'s fast path prints
    /// it from there: the token is already in this process's memory as the agent sent it,
    /// so copying it into guarded memory first would protect nothing, and would set up
    /// libsodium for nothing else).
    static func agentToken(_ ask: TokenAsk, target: Target, action: String) throws(VaultError) -> AgentResponse.Token? {
        guard let response = try send(target, ask.request(action: action), timeout: ask.answerTimeout) else { return nil }
        guard let token = response.token else { throw .failure("the agent gave no token") }
        return token
    }

    /// Ends the agent of the vault after `passwd` or `rekey` changed the keys (the agent
    /// also notices by itself within a fraction of a second).
    static func lockAfterKeyChange(_ options: VaultOptions) {
        guard let target = try? target(vaultPath: options.resolvedPath), target.client.socketExists else { return }
        if let response = try? target.client.send(target.stamped(AgentRequest(op: "lock")), timeout: 5), response.ok {
            waitForSocketToGo(target)
            Output.info("the agent of this vault was ended; run `vault unlock` again")
        }
    }

    /// The agent ends right after answering `lock`: wait (up to 3 s) until its socket is
    /// gone, so that `vault lock` returns when the session is over.
    static func waitForSocketToGo(_ target: Target) {
        let deadline = Date().addingTimeInterval(3)
        while target.client.socketExists, Date() < deadline { usleep(10_000) }
    }
}
