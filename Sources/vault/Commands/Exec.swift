import ArgumentParser
import Foundation
import VaultCore
#if canImport(Glibc)
import Glibc
#endif

extension VaultCLI {
    struct Exec: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "exec",
            abstract: "Run a command (or, without one, your $SHELL) with a token in its environment.",
            discussion: """
                Sets GO_CUSTOMER_ACCESS, GBG_ACCESS_TOKEN, GBG_API_BASE, GBG_TOKEN_EXPIRES_AT and \
                GBG_VAULT_PROFILE (the profile's name, for a shell prompt), \
                removes \(LocalEnvironment.secretVariables.joined(separator: ", ")) (and PGPASSWORD for a team vault), \
                then replaces vault with the command (execvp): signals reach the command directly \
                and vault's exit status is the command's. Without a command, $SHELL (else /bin/sh) is \
                started; leave it with `exit`. A command that is not found exits 127, one that cannot \
                be run 126, as in a shell.

                With --serve, the command gets its own token endpoint instead of a token (for programs \
                that run longer than a token lives): \(ServiceVariables.tokenURL), \(ServiceVariables.clientID), \
                \(ServiceVariables.clientSecret) (this run's placeholders), \(ServiceVariables.username), \
                \(ServiceVariables.password) (ignored placeholders) and \(ServiceVariables.apiBase); vault stays \
                to serve it, forwards SIGINT/SIGTERM/SIGHUP, and exits with the command's status when it ends. \
                With --proxy, the command gets its own API proxy instead: \(ServiceVariables.apiBase) is the \
                proxy's URL and \(ServiceVariables.proxyKey) the key to send in \(ApiProxy.keyHeader).
                """)

        @OptionGroup var selection: TokenSelection
        @OptionGroup var network: NetworkOptions
        @Argument(help: "The profile name (default: VAULT_PROFILE, else the config file's `profile`).", completion: NameCompletion.profiles)
        var name: String?
        @Argument(parsing: .postTerminator, help: "The command and its arguments, after -- (default: $SHELL).") var command: [String] = []
        @OptionGroup var options: VaultOptions
        @Flag(help: "Give the command a local token endpoint and placeholder credentials instead of a token (see `vault serve`).")
        var serve = false
        @Flag(help: "Give the command its own API proxy (see `vault proxy`) instead of a token.")
        var proxy = false

        func validate() throws {
            if serve && proxy { throw ValidationError("--serve and --proxy go separately") }
            if serve || proxy, selection.fresh || selection.minTtl != nil {
                throw ValidationError("--fresh and --min-ttl do not apply to --serve and --proxy (they keep the token fresh)")
            }
        }

        @MainActor func run() async throws {
            let name = try VaultOptions.profile(self.name)
            if serve { try await runServing(name) }
            if proxy { try await runProxy(name) }
            let token: SecureBytes
            let apiBase: String?
            let expiresAt: Int64
            if let answer = try AgentSession.token(options, selection: selection, network: network, profile: name,
                                                   print: false, format: nil, action: .exec) {
                guard case .token(let fromAgent) = answer else { throw VaultError.failure("the agent gave no token") }
                token = SecureBytes(utf8: fromAgent.accessToken)
                apiBase = fromAgent.apiBase
                expiresAt = fromAgent.expiresAt
            } else {
                let delivered = try await options.unlock(profile: name, environment: selection.env).obtainToken(selection.options(profile: name, action: .exec), exchange: network.exchange())
                token = delivered.token
                apiBase = delivered.environment.apiBase
                expiresAt = delivered.expiresAt
            }
            // Nothing that opens the vault reaches the command: no passphrase or its file,
            // no secret input, and for a team vault not the database password.
            for name in LocalEnvironment.secretVariables + (PostgresLocation.isURL(options.resolvedPath) ? ["PGPASSWORD"] : []) { unsetenv(name) }
            token.withUnsafeBytes { raw in
                var bytes = Array(raw)
                bytes.append(0)
                bytes.withUnsafeBufferPointer { pointer in
                    pointer.baseAddress!.withMemoryRebound(to: CChar.self, capacity: bytes.count) { cString in
                        setenv("GBG_ACCESS_TOKEN", cString, 1)
                        setenv("GO_CUSTOMER_ACCESS", cString, 1)
                    }
                }
                for i in bytes.indices { bytes[i] = 0 }
            }
            setenv("GBG_API_BASE", apiBase ?? "", 1)
            setenv("GBG_TOKEN_EXPIRES_AT", Date(timeIntervalSince1970: TimeInterval(expiresAt)).iso8601, 1)
            setenv("GBG_VAULT_PROFILE", name, 1)
            try ProcessHardening.restoreForChild()
            let program = self.program(name)
            var argv: [UnsafeMutablePointer<CChar>?] = program.map { strdup($0) }
            argv.append(nil)
            execvp(program[0], &argv)
            let code = errno
            // As a shell does: 127 when there is no such command, 126 when it cannot be run.
            Output.error(.failure("cannot run '\(program[0].sanitisedForDisplay(limit: 100))': \(String(cString: strerror(code)))"))
            Glibc.exit(code == ENOENT || code == ENOTDIR ? 127 : 126)
        }

        /// The command, else $SHELL (else /bin/sh).
        private func program(_ name: String) -> [String] {
            if !command.isEmpty { return command }
            let shell = ProcessInfo.processInfo.environment["SHELL"].flatMap { $0.isEmpty ? nil : $0 } ?? "/bin/sh"
            if isatty(STDERR_FILENO) == 1 {
                Output.info("starting \(shell) with the token of '\(name.sanitisedForDisplay(limit: 64))'; `exit` leaves it")
            }
            return [shell]
        }

        /// `--serve`: an endpoint on a free loopback port for the command alone, ended with it.
        @MainActor private func runServing(_ name: String) async throws -> Never {
            let (source, _) = try LocalService.tokenSource(options, network: network, profile: name, environment: selection.env, action: .serve)
            let (endpoint, listener) = try await EndpointService.start(source: source, address: .loopback)
            let apiBase = try await endpoint.keeper.current(caller: "start").apiBase ?? ""
            let variables = EndpointService.variables(endpoint: endpoint, listener: listener)
                + [(ServiceVariables.username, ServiceVariables.placeholderUsername), (ServiceVariables.password, ServiceVariables.placeholderPassword),
                   (ServiceVariables.apiBase, apiBase), ("GBG_VAULT_PROFILE", name)]
            let child = try LocalService.Child.spawn(program(name), variables: variables, vaultPath: options.resolvedPath)
            await LocalService.run(keeper: endpoint.keeper, listeners: [listener], deadline: nil, child: child, serve: endpoint.serve)
        }

        /// `--proxy`: a proxy on a free loopback port for the command alone, ended with it.
        @MainActor private func runProxy(_ name: String) async throws -> Never {
            let running = try await ProxyService.start(options: options, network: network, profile: name, environment: selection.env, address: .loopback)
            let child = try LocalService.Child.spawn(program(name), variables: running.variables + [("GBG_VAULT_PROFILE", name)],
                                                     vaultPath: options.resolvedPath)
            await running.run(deadline: nil, child: child)
        }
    }
}
