import CProcess
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Starts the agent for an unlocked vault (`vault unlock`): the same `vault` binary with
/// the hidden `agent-serve` command, in a new session with no terminal and stdio on
/// /dev/null. The unlocking member's identity secret (64 bytes: for the passphrase, the
/// owner's identity from the header) goes to it over a private socket (descriptor 3), never
/// through argv or the environment; it reports "ok" or its error on descriptor 4.
public enum AgentLauncher {
    /// Starts the agent of `vault`, opened at `vaultPath`, for `lifetime` seconds; `cacert`
    /// (absolute) is read by the agent once, for every exchange.
    public static func start(_ vault: UnlockedVault, vaultPath: String, lifetime: Int64, idle: Int64,
                             keepFresh: [String] = [], cacert: String? = nil) throws(VaultError) -> pid_t {
        // Both channels are sockets, not pipes: a process of the same user could open a
        // pipe again through /proc/AGENT/fd/3 in the moment before the agent makes itself
        // non-dumpable, and read the identity; a socket cannot be opened that way.
        var keyChannel: [Int32] = [0, 0], statusChannel: [Int32] = [0, 0]
        guard cprocess_socketpair_cloexec(&keyChannel) == 0, cprocess_socketpair_cloexec(&statusChannel) == 0 else {
            throw .failure("cannot create a channel for the agent: \(String(cString: strerror(errno)))")
        }
        var executable = [CChar](repeating: 0, count: 4096)
        let length = readlink("/proc/self/exe", &executable, executable.count - 1)
        guard length > 0 else { throw .failure("cannot find the vault executable to start the agent") }
        let path = String(decoding: executable[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, keyChannel[0], 3)
        posix_spawn_file_actions_adddup2(&actions, statusChannel[1], 4)
        // Nothing else: not a descriptor the caller gave `vault unlock` (a `7<file`, a CI
        // job's pipe), which the agent would otherwise hold for its whole life.
        guard cprocess_file_actions_close_from(&actions, 5) == 0 else { throw .failure("cannot prepare the agent's descriptors") }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // No controlling terminal (a new session), and an empty signal mask with default
        // dispositions, whatever the launching thread had blocked or ignored.
        guard cprocess_spawnattr_detached(&attributes) == 0 else { throw .failure("cannot prepare the agent's process attributes") }
        // The vault as the store names it to the agent: never a password in the agent's
        // arguments (a team vault's reaches it in its environment, readable only by this user).
        let names = vault.database.agentLaunch(vaultPath: vaultPath)
        var arguments = ["vault", "agent-serve", "--vault", names.vaultArgument, "--for", String(lifetime), "--idle", String(idle)]
            + keepFresh.flatMap { ["--keep-fresh", $0] }
        if let cacert { arguments += ["--cacert", cacert] }
        if let link = names.urlLink { arguments += ["--url-link", link] }
        var environment = ProcessInfo.processInfo.environment.filter { !LocalEnvironment.secretVariables.contains($0.key) }
        environment.merge(names.environment) { _, store in store }
        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { argv.forEach { free($0) }; envp.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &actions, &attributes, argv, envp)
        close(keyChannel[0])
        close(statusChannel[1])
        defer { close(statusChannel[0]) }
        guard rc == 0 else {
            close(keyChannel[1])
            throw .failure("cannot start the agent: \(String(cString: strerror(rc)))")
        }
        vault.withIdentitySecret { secret in
            secret.withUnsafeBytes { raw in
                var offset = 0
                while offset < raw.count {
                    let n = write(keyChannel[1], raw.baseAddress! + offset, raw.count - offset)
                    if n < 0, errno == EINTR { continue }
                    if n <= 0 { break }
                    offset += n
                }
            }
        }
        close(keyChannel[1])
        // The agent's first word: "ok", or "error <exit code> <message>".
        var answer = [UInt8]()
        var byte: UInt8 = 0
        var poller = pollfd(fd: statusChannel[0], events: Int16(POLLIN), revents: 0)
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline, answer.count < 4096 {
            guard poll(&poller, 1, 100) >= 0 || errno == EINTR else { break }
            if poller.revents == 0 { continue }
            let n = read(statusChannel[0], &byte, 1)
            if n < 0, errno == EINTR { continue }
            if n <= 0 || byte == 0x0a { break }
            answer.append(byte)
        }
        let text = String(decoding: answer, as: UTF8.self)
        if text == "ok" { return pid }
        kill(pid, SIGTERM)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        let parts = text.split(separator: " ", maxSplits: 2).map(String.init)
        if parts.count == 3, parts[0] == "error", let code = Int32(parts[1]) {
            throw .relayed(exitCode: code, message: parts[2], hint: nil)
        }
        throw .failure("the agent did not start" + (text.isEmpty ? "" : ": \(text.sanitisedForDisplay(limit: 200))"))
    }

    /// The agent side of the hand-over: reads the member's identity from descriptor 3.
    public static func receiveIdentity() throws(VaultError) -> MemberIdentity {
        let secret = SecureBytes(count: 64)
        var total = 0
        secret.withUnsafeMutableBytes { raw in
            while total < raw.count {
                let n = read(3, raw.baseAddress! + total, raw.count - total)
                if n < 0, errno == EINTR { continue }
                if n <= 0 { break }
                total += n
            }
        }
        close(3)
        guard total == 64 else { throw .failure("the agent did not receive its key") }
        return try MemberIdentity(secret: secret)
    }

    /// The agent side: reports its start to `vault unlock` on descriptor 4.
    public static func report(_ error: VaultError?) {
        let line = error.map { "error \($0.exitCode) \($0.message.replacingOccurrences(of: "\n", with: " "))\n" } ?? "ok\n"
        _ = line.withCString { write(4, $0, strlen($0)) }
        close(4)
    }
}
