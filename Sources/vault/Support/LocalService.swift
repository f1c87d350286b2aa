import CProcess
import Foundation
import NIOPosix
import VaultCore
#if canImport(Glibc)
import Glibc
#endif

/// What `vault serve`, `vault proxy` and `vault exec --serve/--proxy` share: where tokens
/// come from, how the process ends, and the child it may run.
enum LocalService {
    /// The agent when one serves the vault (this process then holds no key), else the vault
    /// unlocked here once (the passphrase or an identity, asked for now).
    static func tokenSource(_ options: VaultOptions, network: NetworkOptions, profile: String, environment: String?,
                            action: TokenAction) throws(VaultError) -> (any TokenSource, RequestRecorder) {
        if let client = AgentSession.client(vaultPath: options.resolvedPath, noAgent: options.noAgent), client.socketExists,
           case .answered(.status) = client.call(.status) {
            Output.info("using the agent of `vault unlock`: this process holds no key, and stops getting tokens at `vault lock`")
            return (AgentTokenSource(client: client, profile: profile, environment: environment, action: action, cacert: network.cacert,
                                     timeoutMs: network.timeoutMs, connectTimeoutMs: network.connectTimeoutMs),
                    .agent(client))
        }
        let unlocked = try options.unlock(profile: profile, environment: environment)
        return (VaultTokenSource(unlocked: unlocked, exchange: try network.exchange(), profile: profile, environment: environment, action: action),
                .vault(unlocked))
    }

    /// Runs until SIGINT, SIGTERM or SIGHUP, `deadline`, or the end of `child`: renews the
    /// kept token about once a second, then closes `listeners` and exits (with the child's
    /// status when there is one, else 0).
    static func run(keeper: TokenKeeper, listeners: [LocalListener], deadline: Date?, child: Child?,
                    tick: @Sendable () async -> Void = {}, finish: @Sendable () async -> Void = {},
                    serve: @escaping @Sendable (LocalConnection) async -> Void) async -> Never {
        let stop = StopFlag()
        var sources: [any DispatchSourceSignal] = []
        for number in [SIGTERM, SIGHUP, SIGINT] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                // A child gets the signal to end; this process follows when it has.
                if let child { kill(child.pid, number == SIGINT ? SIGINT : SIGTERM) } else { stop.set(status: 0) }
            }
            source.resume()
            sources.append(source)
        }
        if let child {
            Thread.detachNewThread { stop.set(status: child.waitForExit()) }
        }
        for listener in listeners {
            Task.detached { await listener.serve(serve) }
        }
        while stop.status == nil {
            if let deadline, Date() >= deadline {
                Output.info("--for is up: stopping")
                if let child { kill(child.pid, SIGTERM) } else { stop.set(status: 0) }
            }
            await keeper.forgetIfSessionEnded()
            await keeper.renewIfDue()
            await tick()
            try? await Task.sleep(for: .milliseconds(250))
        }
        for listener in listeners { await listener.close() }
        await finish()
        _ = sources
        exit(stop.status ?? 0)
    }

    /// A child process run by `vault exec --serve/--proxy`.
    struct Child: Sendable {
        let pid: pid_t

        /// Starts `program` (searched in PATH) with this process's environment minus what
        /// opens the vault, plus `variables`; the caller's umask, core limit and signal
        /// dispositions restored; killed by the kernel if vault ends first, a SIGKILL
        /// included (``cprocess_spawn_tied``: its endpoint's port is then free for anyone to
        /// take). Exits 127/126 as a shell does when it cannot.
        static func spawn(_ program: [String], variables: [(String, String)], vaultPath: String) throws(VaultError) -> Child {
            let removed = Set(LocalEnvironment.secretVariables + (PostgresLocation.isURL(vaultPath) ? ["PGPASSWORD"] : [])
                              + variables.map(\.0))
            var environment = ProcessInfo.processInfo.environment.filter { !removed.contains($0.key) }.map { "\($0.key)=\($0.value)" }
            environment += variables.map { "\($0.0)=\($0.1)" }
            let argv: [UnsafeMutablePointer<CChar>?] = program.map { strdup($0) } + [nil]
            let envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup($0) } + [nil]
            defer {
                for pointer in argv { free(pointer) }
                for pointer in envp {
                    if let pointer { memset(pointer, 0, strlen(pointer)) }
                    free(pointer)
                }
            }
            let pid = ProcessHardening.withChildSettings { cprocess_spawn_tied(program[0], argv, envp) }
            guard pid > 0 else {
                let status = errno
                Output.error(.failure("cannot run '\(program[0].sanitisedForDisplay(limit: 100))': \(String(cString: strerror(status)))"))
                exit(status == ENOENT || status == ENOTDIR ? 127 : 126)
            }
            return Child(pid: pid)
        }

        /// Waits for the child; its exit status, or 128 + the signal that ended it.
        func waitForExit() -> Int32 {
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 {
                if errno != EINTR { return 1 }
            }
            let signalled = status & 0x7f
            return signalled == 0 ? (status >> 8) & 0xff : 128 + signalled
        }
    }
}

/// The status to exit with, once one is known.
final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Int32?
    var status: Int32? { lock.withLock { value } }
    func set(status: Int32) { lock.withLock { if value == nil { value = status } } }
}
