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
            let source = try LocalService.tokenSource(options, network: network, profile: name, environment: service.env, action: .serve)
            let (endpoint, listener) = try await EndpointService.start(source: source, address: address)
            let lines = EndpointService.variables(endpoint: endpoint, listener: listener).map { "\($0.0)=\($0.1)" }.joined(separator: "\n") + "\n"
            if let credentialsOut {
                try PrivateFile.write(Array(lines.utf8), to: credentialsOut)
                Output.info("the endpoint's credentials are in \(credentialsOut.sanitisedForDisplay(limit: 200))")
            } else {
                Output.stdout(lines)
            }
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
    /// Obtains the first token (a record, `caller=start`: a wrong profile, refused
    /// credentials or an unreachable endpoint end the command here with their exit code),
    /// then listens.
    static func start(source: any TokenSource, address: ListenAddress) async throws(VaultError) -> (LocalTokenEndpoint, LocalListener) {
        let keeper = TokenKeeper(source: source)
        _ = try await keeper.current(caller: "start")
        let endpoint = LocalTokenEndpoint(credentials: .generate(), keeper: keeper)
        let listener = try await LocalListener.bind(address, group: MultiThreadedEventLoopGroup.singleton)
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

/// A file only this user can read, replaced whole (written beside it, then renamed; a link
/// at the path is replaced, not followed).
enum PrivateFile {
    static func write(_ bytes: [UInt8], to path: String) throws(VaultError) {
        let temporary = path + ".tmp-\(getpid())"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw .failure("cannot write \(path.sanitisedForDisplay(limit: 200)): \(String(cString: strerror(errno)))")
        }
        let written = bytes.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
        let synced = fsync(descriptor) == 0
        close(descriptor)
        guard written == bytes.count, synced, rename(temporary, path) == 0 else {
            let why = String(cString: strerror(errno))
            unlink(temporary)
            throw .failure("cannot write \(path.sanitisedForDisplay(limit: 200)): \(why)")
        }
    }
}
