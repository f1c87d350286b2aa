import ArgumentParser
import CProcess
import Foundation
import VaultCore
#if canImport(Glibc)
import Glibc
#endif

/// `vault`: a sealed credential vault and token tool for the GBG GO API.
struct VaultCLI: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vault",
        abstract: "A sealed credential vault and token tool for the GBG GO identity-verification API.",
        discussion: """
            Secrets are sealed with libsodium under a key derived from your passphrase. \
            Passphrase sources, first found wins: --passphrase-file, VAULT_PASSPHRASE_FILE, \
            VAULT_PASSPHRASE, a no-echo prompt on the terminal.

            Exit codes: 0 success, 1 other failure, 3 wrong passphrase, 4 credentials rejected, \
            5 token endpoint unavailable, 6 not found, 7 integrity failure or malformed response, \
            8 audit record not written (token withheld), 64 usage error.
            """,
        version: VaultVersion.string,
        subcommands: [
            Init.self, Add.self, Edit.self, List.self, Show.self, Rotate.self, History.self, Remove.self,
            Passwd.self, Rekey.self, Env.self, Token.self, Exec.self, Audit.self, Backup.self, Copy.self, Doctor.self,
            Verify.self, Upgrade.self, Unlock.self, Lock.self, Status.self, Serve.self, Proxy.self, IdentityCommand.self, MemberCommand.self, AgentServe.self,
        ]
    )
}

/// Options every command that touches a vault shares.
struct VaultOptions: ParsableArguments {
    @Option(name: .customLong("vault"), help: ArgumentHelp("The vault file, or a postgres:// URL of a team vault (env VAULT_PATH).",
                                                          valueName: "path|url"))
    var vaultPath: String?

    @Option(help: ArgumentHelp("Read the vault passphrase from this file.", valueName: "path"))
    var passphraseFile: String?

    @Flag(help: "Trace what vault does on stderr (metadata only, never a secret; env VAULT_VERBOSE=1).")
    var verbose = false

    @Flag(help: "Do not use the agent of `vault unlock`, ask for the passphrase (env VAULT_NO_AGENT=1).")
    var noAgent = false

    @Option(help: ArgumentHelp("Unlock as the member of this identity file instead of with the passphrase (env VAULT_IDENTITY_FILE).",
                               valueName: "path"))
    var identity: String?

    /// An empty `--vault` (a script's `--vault "$UNSET"`) is refused, not read as "no option":
    /// it would otherwise open the default vault instead of the one the script meant.
    /// (An empty `VAULT_PATH` counts as unset, as empty variables usually do.)
    func validate() throws {
        if vaultPath?.isEmpty == true { throw ValidationError("--vault needs a path or URL (it was given an empty value)") }
        if passphraseFile?.isEmpty == true { throw ValidationError("--passphrase-file needs a path (it was given an empty value)") }
        if identity?.isEmpty == true { throw ValidationError("--identity needs a path (it was given an empty value)") }
    }

    /// `--vault`, else `VAULT_PATH`, else the config file's `vault`, else
    /// `${XDG_DATA_HOME:-~/.local/share}/gbg-vault/vault.db` (CAgent's rule, which the
    /// client before `main` follows too).
    var resolvedPath: String { Self.defaultPath(explicit: vaultPath) }

    /// Where ``resolvedPath`` came from (`vault doctor`).
    var pathSource: String {
        if let vaultPath, !vaultPath.isEmpty { return "--vault" }
        if LocalEnvironment.value("VAULT_PATH") != nil { return "VAULT_PATH" }
        if VaultConfig.current.unusable == nil, VaultConfig.current.values["vault"] != nil { return "config \(VaultConfig.current.path ?? "")" }
        return "default"
    }

    /// The profile a command names, else the default one (`VAULT_PROFILE`, else the config
    /// file's `profile`).
    static func profile(_ name: String?) throws(VaultError) -> String {
        if let name { return name }
        if let found = VaultConfig.defaultProfile() { return found.name }
        throw .usage("no profile named and no default profile",
                     hint: "name one, or set a default: VAULT_PROFILE, or `profile = NAME` in \(VaultConfig.current.path ?? "the config file")")
    }

    static func defaultPath(explicit: String?) -> String {
        if let explicit, !explicit.isEmpty { return explicit }
        return AgentProtocol.defaultVaultPath() ?? LocalEnvironment.dataDirectory + "/vault.db"
    }

    var passphrase: PassphraseReader { PassphraseReader(passphraseFile: passphraseFile) }

    /// The vault as messages name it: a path, or a URL without its password.
    var displayPath: String { Self.display(resolvedPath) }

    static func display(_ location: String) -> String {
        guard PostgresLocation.isURL(location) else { return location }
        return (try? PostgresLocation.parse(location, readPasswordFile: false).display) ?? "the PostgreSQL vault"
    }

    nonisolated(unsafe) private static var warned = false

    /// A password inside a URL on the command line is visible to every local user (ps);
    /// say so once, and where it belongs instead.
    static func warnAboutPasswordInArguments(_ argument: String?) {
        guard !warned, let argument, PostgresLocation.isURL(argument),
              let components = URLComponents(string: argument), components.password != nil else { return }
        warned = true
        Output.info("warning: the database password in --vault/--to is visible to other users in the process list; "
                    + "use PGPASSWORD, ~/.pgpass or VAULT_PATH instead")
    }

    func open() throws(VaultError) -> Vault {
        Self.warnAboutPasswordInArguments(vaultPath)
        return try Vault.open(at: resolvedPath)
    }

    /// The vault for metadata reads only (one read-only connection; no passphrase).
    func openForReading() throws(VaultError) -> Vault {
        Self.warnAboutPasswordInArguments(vaultPath)
        return try Vault.openForReading(at: resolvedPath)
    }

    func unlock() throws(VaultError) -> UnlockedVault {
        try unlock(open())
    }

    /// Unlocks for an operation on `profile` (and `environment`), once their names are
    /// found in the vault's metadata, read without the passphrase: a mistyped name costs
    /// no Argon2id and gets a suggestion (the unlocked operation checks everything again).
    func unlock(profile: String, environment: String? = nil) throws(VaultError) -> UnlockedVault {
        let vault = try open()
        try vault.requireNames(profile: profile, environment: environment)
        return try unlock(vault)
    }

    /// Unlocks with, first found: `--identity` / `VAULT_IDENTITY_FILE`; a passphrase
    /// source given (`--passphrase-file`, `VAULT_PASSPHRASE_FILE`, `VAULT_PASSPHRASE`); the
    /// default identity file if it exists and is a current member of this vault (an owner
    /// who made one, to join other vaults, is still asked for this vault's passphrase);
    /// the passphrase prompt.
    func unlock(_ vault: Vault) throws(VaultError) -> UnlockedVault {
        try Self.checkedAgainstKnownState(unlockUnchecked(vault))
    }

    /// Checks an unlocked vault against what this user's clients remember of its location
    /// (pinned on first use; refused, exit 7, when replaced, rolled back or forked:
    /// FORMAT.md §12), and guards this process's writes the same way.
    static func checkedAgainstKnownState(_ unlocked: UnlockedVault) throws(VaultError) -> UnlockedVault {
        try unlocked.checkKnownState(KnownVaults.forUser())
        return unlocked
    }

    /// ``unlock(_:)`` without the check against the known state (`vault verify
    /// --accept-rollback`/`--repin`, which check the vault in full instead).
    func unlockUnchecked(_ vault: Vault) throws(VaultError) -> UnlockedVault {
        if let path = identity ?? LocalEnvironment.value("VAULT_IDENTITY_FILE") {
            return try vault.unlock(identity: Self.openIdentity(path))
        }
        if passphrase.hasSource {
            return try unlockWithPassphrase(vault)
        }
        let fallback = IdentityFile.defaultPath()
        var info = stat()
        if lstat(fallback, &info) == 0 {
            let loaded = try IdentityFile.load(fallback)
            if try vault.hasCurrentMember(loaded.recipient) {
                return try vault.unlock(identity: Self.open(loaded))
            }
            Trace.debug("the default identity \(fallback) is not a member of this vault: using the passphrase")
        }
        return try unlockWithPassphrase(vault)
    }

    /// Unlocks with the passphrase (asked for again at the terminal when wrong).
    func unlockWithPassphrase(_ vault: Vault) throws(VaultError) -> UnlockedVault {
        try passphrase.withExisting { (secret) throws(VaultError) in try vault.unlock(passphrase: secret) }
    }

    /// Loads an identity file and opens it (its passphrase only when it is sealed).
    static func openIdentity(_ path: String) throws(VaultError) -> MemberIdentity {
        try open(IdentityFile.load(path))
    }

    /// Opens a loaded identity (its passphrase only when it is sealed).
    static func open(_ loaded: IdentityFile.Loaded) throws(VaultError) -> MemberIdentity {
        guard loaded.sealed else { return try IdentityFile.unseal(loaded, passphrase: nil) }
        return try IdentityPassphrase.reader.withExisting { (secret) throws(VaultError) in try IdentityFile.unseal(loaded, passphrase: secret) }
    }
}

/// Network options of commands that talk to a token endpoint.
struct NetworkOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Extra trusted CA certificates, PEM (env VAULT_CA_BUNDLE).", valueName: "path"))
    var cacert: String?

    @Option(help: ArgumentHelp("Overall deadline for the exchange, retries included, in seconds (default \(TokenOptions.defaultTimeoutSeconds)).",
                               valueName: "seconds"))
    var timeout: Double?

    @Option(help: ArgumentHelp("Connect timeout per attempt, in seconds (default \(TransportOptions.defaultConnectTimeoutSeconds)).",
                               valueName: "seconds"))
    var connectTimeout: Double?

    /// `--timeout` in milliseconds (nil: not given).
    var timeoutMs: Int64? { timeout.map(Self.milliseconds) }
    var connectTimeoutMs: Int64? { connectTimeout.map(Self.milliseconds) }

    /// Seconds as milliseconds; 0 (refused by the check) for what is not a finite number
    /// in range.
    private static func milliseconds(_ seconds: Double) -> Int64 {
        seconds.isFinite && seconds > 0 && seconds < 1e9 ? Int64(seconds * 1000) : 0
    }

    func validate() throws {
        do {
            try TokenOptions.checkTimeouts(timeoutMs: timeoutMs, connectTimeoutMs: connectTimeoutMs)
        } catch {
            throw ValidationError(error.message)
        }
    }

    /// The exchange with this process's network settings, collected by the same rule as
    /// the agent's (``AgentNetwork/current(cacert:)``: `--cacert` else `VAULT_CA_BUNDLE`, and
    /// the proxy variables that are set).
    func exchange() throws(VaultError) -> TokenExchange {
        let network = try AgentNetwork.current(cacert: cacert)
        let options = TransportOptions(
            caBundlePath: network.caBundle,
            connectTimeout: .milliseconds(connectTimeoutMs ?? Int64(TransportOptions.defaultConnectTimeoutSeconds) * 1000),
            environment: network.proxy)
        var exchange = TokenExchange(transport: AsyncHTTPTransport(options: options),
                                     timeout: .milliseconds(timeoutMs ?? Int64(TokenOptions.defaultTimeoutSeconds) * 1000))
        // At a terminal, a slow endpoint is not silence: one line, rewritten each second.
        if isatty(STDERR_FILENO) == 1 {
            exchange.waiting = WaitingNotice(
                tick: { origin, seconds in Output.write(2, "\rvault: waiting for \(origin.sanitisedForDisplay(limit: 200)) (\(seconds) s)") },
                done: { Output.write(2, "\n") })
        }
        return exchange
    }
}

/// Process set-up before anything else runs: no core dumps, not ptrace-able by other
/// processes of the same user, private file modes.
enum ProcessHardening {
    nonisolated(unsafe) static var originalCoreLimit = rlimit()
    nonisolated(unsafe) static var originalUmask: mode_t = 0o022

    static func apply() {
        cprocess_remember_inherited_descriptors()
        getrlimit(Int32(RLIMIT_CORE.rawValue), &originalCoreLimit)
        var none = rlimit(rlim_cur: 0, rlim_max: originalCoreLimit.rlim_max)
        setrlimit(Int32(RLIMIT_CORE.rawValue), &none)
        _ = cprocess_disable_dumpable()
        originalUmask = umask(0o077)
        signal(SIGPIPE, SIG_IGN)
    }

    /// Runs `body` (a `posix_spawn`) with the caller's core limit and umask, restored here
    /// again afterwards: the child gets them, this process keeps its own.
    static func withChildSettings<R>(_ body: () -> R) -> R {
        var hardened = rlimit()
        getrlimit(Int32(RLIMIT_CORE.rawValue), &hardened)
        setrlimit(Int32(RLIMIT_CORE.rawValue), &originalCoreLimit)
        let own = umask(originalUmask)
        defer {
            umask(own)
            setrlimit(Int32(RLIMIT_CORE.rawValue), &hardened)
        }
        return body()
    }

    /// Restores the soft core limit and the caller's umask before `exec` hands the
    /// process to the user's command, and marks close-on-exec every descriptor vault
    /// opened (SwiftNIO's epoll and event descriptors, the vault's database): the command
    /// gets the descriptors its caller gave vault, no others.
    static func restoreForChild() throws(VaultError) {
        guard cprocess_cloexec_own_descriptors() == 0 else {
            throw .failure("cannot keep vault's own descriptors from the command (\(String(cString: strerror(errno))))")
        }
        setrlimit(Int32(RLIMIT_CORE.rawValue), &originalCoreLimit)
        signal(SIGPIPE, SIG_DFL)
        umask(originalUmask)
    }
}

/// `--vault PATH` and `--passphrase-file PATH` are global: given before the
/// subcommand, they are moved after it (before any `--`), where the commands parse them.
enum GlobalOptions {
    static let names: Set<String> = ["--vault", "--passphrase-file"]

    static func hoisted(_ arguments: [String]) -> [String] {
        var leading: [String] = []
        var rest = arguments[...]
        while let first = rest.first {
            if names.contains(first), rest.count >= 2 {
                leading += rest.prefix(2)
                rest = rest.dropFirst(2)
            } else if let name = first.split(separator: "=", maxSplits: 1).first, names.contains(String(name)), first.contains("=") {
                leading.append(first)
                rest = rest.dropFirst()
            } else {
                break
            }
        }
        guard !leading.isEmpty else { return arguments }
        var result = Array(rest)
        if let terminator = result.firstIndex(of: "--") {
            result.insert(contentsOf: leading, at: terminator)
        } else {
            result += leading
        }
        return result
    }
}

@main
enum Main {
    /// Synchronous on purpose: the fast shapes (`--version`, `audit`, `list`) finish before
    /// any task or executor exists; everything
    /// else runs as the main task of the concurrency runtime, on the main actor, exactly
    /// as an `async` main would (the main thread then serves the main queue).
    static func main() {
        // `--version` straight from argv, before the runtime builds `CommandLine.arguments`.
        if CommandLine.argc == 2, let word = CommandLine.unsafeArgv[1], strcmp(word, "--version") == 0 {
            Output.stdout(VaultVersion.string + "\n")
            exit(0)
        }
        let arguments = Array(CommandLine.arguments.dropFirst())
        ProcessHardening.apply()
        // What `vault token …`'s client before `main` got from the agent, when it did not
        // print the answer itself (Sources/CTokenClient).
        AgentSession.takeEarlyOutcome()
        // The fast shapes never trace (`--verbose` and VAULT_VERBOSE=1 take the full way),
        // so they run before swift-log is set up.
        FastPath.run(arguments)
        TraceOutput.bootstrap(arguments: arguments)
        startFull(arguments)
    }

    /// Not inlined into `main`, so that what the task needs is set up only on the full
    /// way, not before `--version` and the fast shapes.
    @inline(never)
    static func startFull(_ arguments: [String]) -> Never {
        Task { @MainActor in
            await full(arguments)
        }
        dispatchMain()
    }

    @MainActor
    static func full(_ arguments: [String]) async -> Never {
        for problem in VaultConfig.current.problems { Output.warning(problem) }
        do {
            var command = try VaultCLI.parseAsRoot(GlobalOptions.hoisted(arguments))
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let error as VaultError {
            Output.error(error)
            exit(error.exitCode)
        } catch {
            // argument-parser's own errors: help and --version print as usual; everything
            // else gets the same `vault: error:` prefix as vault's errors.
            let code = VaultCLI.exitCode(for: error)
            if code == .success || error is ExitCode { VaultCLI.exit(withError: error) }
            let arguments = GlobalOptions.hoisted(arguments)
            if let better = Suggestions.explain(arguments) {
                Output.usageError(better.message, help: better.hint)
            } else {
                Output.usageError(VaultCLI.message(for: error), help: Suggestions.helpHint(for: arguments))
            }
            exit(code.rawValue)
        }
        exit(0)
    }
}
