import ArgumentParser
import Foundation
import NIOPosix
import VaultCore
#if canImport(Glibc)
import Glibc
#endif

/// `--listen`, `--for` and `--env` of `vault serve` and `vault proxy`.
struct ServiceOptions: ParsableArguments {
    @Option(help: "Environment (default: the profile's).", completion: NameCompletion.environments) var env: String?
    @Option(help: ArgumentHelp("127.0.0.1:PORT (default: a free loopback port), another IP address:PORT given explicitly (a docker bridge), or unix:PATH (0600, your uid only).",
                               valueName: "addr"))
    var listen: String?
    @Option(name: .customLong("for"), help: ArgumentHelp("Stop after this long (e.g. 8h, 90m; default: until interrupted).", valueName: "duration"))
    var lifetime: DurationArgument?

    func validate() throws {
        try lifetime?.validate("--for")
    }

    func address() throws(VaultError) -> ListenAddress {
        try listen.map(ListenAddress.parse) ?? .loopback
    }

    var deadline: Date? { lifetime.map { Date().addingTimeInterval(TimeInterval($0.seconds)) } }
}

extension VaultCLI {
    struct Serve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "serve",
            abstract: "A local GBG token endpoint for programs: the profile's token, never its secrets.",
            discussion: """
                Answers POST /as/token.oauth2 as GBG's endpoint does (both grants, RFC 6749 errors) for \
                callers that present this run's placeholder client id and secret, printed once on \
                standard output as \(ServiceVariables.tokenURL)=…, \(ServiceVariables.clientID)=… and \
                \(ServiceVariables.clientSecret)=… lines (or written to the 0600 file --credentials-out \
                names; a docker --env-file). Anything else gets 401 invalid_client. The token is the \
                profile's, from the cache and renewed before it expires; every one handed out is an \
                audit record (serve, caller=ADDRESS:PORT or uid/pid). With `vault unlock`, tokens come \
                from the agent and this process holds no key; else the passphrase is asked for once. \
                Stops on SIGINT/SIGTERM or after --for.
                """)

        @OptionGroup var service: ServiceOptions
        @OptionGroup var network: NetworkOptions
        @Argument(help: "The profile name (default: VAULT_PROFILE, else the config file's `profile`).", completion: NameCompletion.profiles)
        var name: String?
        @Option(help: ArgumentHelp("Write the endpoint and placeholder credentials to this file (0600) instead of standard output.",
                                   valueName: "path"))
        var credentialsOut: String?
        @OptionGroup var options: VaultOptions

        @MainActor func run() async throws {
            let name = try VaultOptions.profile(self.name)
            let address = try service.address()
            let (source, _) = try LocalService.tokenSource(options, network: network, profile: name, environment: service.env, action: .serve)
            let (endpoint, listener) = try await EndpointService.start(source: source, address: address)
            let lines = EndpointService.variables(endpoint: endpoint, listener: listener).map { "\($0.0)=\($0.1)" }.joined(separator: "\n") + "\n"
            try PrivateFile.hand(lines, to: credentialsOut, what: "the endpoint's credentials")
            if !address.isLocalOnly {
                Output.warning("listening on \(listener.location): reachable from other machines and containers on that network; callers still need the credentials")
            }
            Output.info("serving tokens of '\(name.sanitisedForDisplay(limit: 64))' at \(listener.location)/as/token.oauth2; Ctrl-C stops")
            await LocalService.run(keeper: endpoint.keeper, listeners: [listener], deadline: service.deadline, child: nil, serve: endpoint.serve)
        }
    }
}

/// Starting `vault serve`'s endpoint (also for `vault exec --serve`).
enum EndpointService {
    /// Listens, then obtains the first token (a record, `caller=start`: a wrong profile,
    /// refused credentials or an unreachable endpoint end the command here with their exit
    /// code); nothing is served before that.
    static func start(source: any TokenSource, address: ListenAddress) async throws(VaultError) -> (LocalTokenEndpoint, LocalListener) {
        let listener = try await LocalListener.bind(address, deadline: .wholeRequest, group: MultiThreadedEventLoopGroup.singleton)
        let keeper = TokenKeeper(source: source)
        _ = try await keeper.current(caller: "start")
        let endpoint = LocalTokenEndpoint(credentials: .generate(), keeper: keeper)
        return (endpoint, listener)
    }

    /// What a caller needs: the token URL and the placeholder credentials.
    static func variables(endpoint: LocalTokenEndpoint, listener: LocalListener) -> [(String, String)] {
        var variables: [(String, String)]
        if case .unix(let path) = listener.address {
            variables = [(ServiceVariables.tokenURL, "http://localhost/as/token.oauth2"), (ServiceVariables.tokenSocket, path)]
        } else {
            variables = [(ServiceVariables.tokenURL, "\(listener.location)/as/token.oauth2")]
        }
        let secret = endpoint.credentials.clientSecret.withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
        variables += [(ServiceVariables.clientID, endpoint.credentials.clientID), (ServiceVariables.clientSecret, secret)]
        return variables
    }
}

extension VaultCLI {
    struct Proxy: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "proxy",
            abstract: "An authenticating reverse proxy to the environment's API base: programs call the API without a token or secret.",
            discussion: """
                A request to http://ADDR/PATH goes to the environment's API base + PATH with \
                `Authorization: Bearer <token>` set by vault (an incoming Authorization is dropped), \
                bodies streamed both ways, TLS with the CA and proxy settings of `vault token`. On a 401 \
                from the API it takes a fresh token and retries once (requests whose body was at most \
                64 KiB). TCP callers must send this run's key in the \(ApiProxy.keyHeader) header; it is \
                printed once as \(ServiceVariables.proxyKey)=… beside \(ServiceVariables.apiBase)=… (or \
                written to --credentials-out). On --listen unix:PATH the socket (0600) and the caller's uid \
                are the check instead. Each request is a line of a request log (method, path without \
                query, status, bytes, duration, upstream request id; never a header value or a body) \
                anchored every minute by a proxy-requests audit record; `vault audit --requests` shows \
                and checks it.
                """)

        @OptionGroup var service: ServiceOptions
        @OptionGroup var network: NetworkOptions
        @Argument(help: "The profile name (default: VAULT_PROFILE, else the config file's `profile`).", completion: NameCompletion.profiles)
        var name: String?
        @Option(help: ArgumentHelp("Write the proxy's URL and key to this file (0600) instead of standard output.", valueName: "path"))
        var credentialsOut: String?
        @OptionGroup var options: VaultOptions

        @MainActor func run() async throws {
            let name = try VaultOptions.profile(self.name)
            let address = try service.address()
            let running = try await ProxyService.start(options: options, network: network, profile: name, environment: service.env, address: address)
            let lines = running.variables.map { "\($0.0)=\($0.1)" }.joined(separator: "\n") + "\n"
            try PrivateFile.hand(lines, to: credentialsOut, what: "the proxy's URL and key")
            if !address.isLocalOnly {
                Output.warning("listening on \(running.listener.location): reachable from other machines and containers on that network; callers still need the key")
            }
            Output.info("proxying to \(running.proxy.apiBase.sanitisedForDisplay(limit: 200)) with the tokens of '\(name.sanitisedForDisplay(limit: 64))' "
                        + "at \(running.listener.location); requests are logged in \(running.log.path); Ctrl-C stops")
            await running.run(deadline: service.deadline, child: nil)
        }
    }
}

/// A running `vault proxy` (also for `vault exec --proxy`).
struct ProxyService: Sendable {
    /// Records the request log's new lines at most this often.
    static let summarySeconds: TimeInterval = 60

    let proxy: ApiProxy
    let listener: LocalListener
    let log: RequestLog
    let recorder: RequestRecorder
    let profile: String
    let environment: String?

    /// Listens, obtains the first token (a record, `caller=start`), opens the request log;
    /// nothing is served before `run`.
    static func start(options: VaultOptions, network: NetworkOptions, profile: String, environment: String?,
                      address: ListenAddress) async throws(VaultError) -> ProxyService {
        let (source, recorder) = try LocalService.tokenSource(options, network: network, profile: profile, environment: environment, action: .proxy)
        guard let directory = RequestLog.directory() else { throw .failure("cannot name the request log's directory (no HOME?)") }
        // The address first (one in use costs no exchange), then the first token, then the log.
        let listener = try await LocalListener.bind(address, deadline: .head, group: MultiThreadedEventLoopGroup.singleton)
        let keeper = TokenKeeper(source: source)
        let first = try await keeper.current(caller: "start")
        guard let apiBase = first.apiBase, !apiBase.isEmpty else {
            throw .usage("the environment has no API base to proxy to", hint: "vault env set ENV --api-base URL")
        }
        let log = try RequestLog(directory: directory, profile: profile)
        let current = try AgentNetwork.current(cacert: network.cacert)
        let transport = TransportOptions(caBundlePath: current.caBundle,
                                         connectTimeout: .milliseconds(network.connectTimeoutMs ?? Int64(TransportOptions.defaultConnectTimeoutSeconds) * 1000),
                                         environment: current.proxy)
        var requireKey = true
        if case .unix = address { requireKey = false }
        let proxy = try ApiProxy(apiBase: apiBase, keeper: keeper, transport: transport, log: log, requireKey: requireKey)
        return ProxyService(proxy: proxy, listener: listener, log: log, recorder: recorder, profile: profile, environment: environment)
    }

    /// What a caller needs: the proxy's URL (as the API base) and key.
    var variables: [(String, String)] {
        if case .unix(let path) = listener.address {
            return [(ServiceVariables.apiBase, "http://localhost/"), ("GBG_API_SOCKET", path)]
        }
        let key = proxy.key.withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
        return [(ServiceVariables.apiBase, "\(listener.location)/"), (ServiceVariables.proxyKey, key)]
    }

    /// Serves until the end, recording the request log's new lines every minute and at the end.
    func run(deadline: Date?, child: LocalService.Child?) async -> Never {
        let summarise: @Sendable () async -> Void = { [log, recorder, profile, environment] in
            guard let summary = log.takeSummary() else { return }
            do throws(VaultError) {
                try await recorder.record(summary, profile: profile, environment: environment)
            } catch {
                Output.warning("the request log's lines \(summary.first)-\(summary.last) could not be recorded: \(error.message)")
            }
        }
        let started = Date()
        let nextSummary = Counter()
        await LocalService.run(keeper: proxy.keeper, listeners: [listener], deadline: deadline, child: child, tick: {
            let due = Int(Date().timeIntervalSince(started) / Self.summarySeconds)
            if due > nextSummary.value {
                nextSummary.value = due
                await summarise()
            }
        }, finish: { [proxy] in
            await summarise()
            await proxy.shutdown()
        }, serve: proxy.serve)
    }
}

final class Counter: @unchecked Sendable {
    var value = 0
}

extension PrivateFile {
    /// `text` on standard output, or into the private file `path` (with a line saying so).
    static func hand(_ text: String, to path: String?, what: String) throws(VaultError) {
        guard let path else { return Output.stdout(text) }
        try write(Array(text.utf8), to: path)
        Output.info("\(what) are in \(path.sanitisedForDisplay(limit: 200))")
    }
}
