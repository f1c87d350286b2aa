import ArgumentParser
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// A local stand-in for the GBG GO token endpoint.
@main
struct AuthStub: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gbg-auth-stub",
        abstract: "A local GBG GO token endpoint for offline use, demos and tests.",
        discussion: """
            Serves POST /as/token.oauth2 (and the v1 path /captain/api/as/token.oauth2) with both \
            grants and RFC 6749 errors, GET /_stub/stats with request counts, a small fake of the API \
            under /v2/captain/ (ping, headers, careless, echo, stream?bytes=N; each checks the bearer token it \
            issued) and POST /_stub/revoke (every token issued so far stops working). With --port 0 the \
            first line on stdout is `PORT <n>`. Logs go to stderr, without secrets.
            """)

    @Option(help: "Accounts JSON file.") var accounts: String
    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port (0 picks a free one).") var port = 0
    @Option(help: "PEM certificate chain for TLS.") var tlsCert: String?
    @Option(help: "PEM private key for TLS.") var tlsKey: String?
    @Option(help: "Fail the first N token requests with --fail-status.") var failFirst = 0
    @Option(help: "Status for --fail-first (429, 502, 503, 504).") var failStatus = 503
    @Option(help: "Retry-After seconds sent with injected failures.") var retryAfter: Int?
    @Option(help: "Delay every token response by this many milliseconds.") var delayMs = 0
    @Option(help: "Fault for token responses: none, non-json, oversized, close-mid-body, stall, slow-drip, empty-200, custom.")
    var fault: Fault = .none
    @Option(help: "With --fault custom: file whose bytes are the response body.") var customBody: String?
    @Option(help: "With --fault custom: the response status.") var customStatus = 200
    @Option(help: "With --fault custom: the Content-Type.") var customContentType = "application/json"
    @Option(help: "Lifetime of issued tokens, in seconds (overrides the accounts file).") var tokenTtl: Int?
    @Flag(help: "Exit when the process that started the stub is gone (test harnesses: no orphaned stubs).")
    var exitWithParent = false

    enum Fault: String, ExpressibleByArgument, Sendable {
        case none, nonJSON = "non-json", oversized, closeMidBody = "close-mid-body", stall, slowDrip = "slow-drip"
        case empty200 = "empty-200", custom
    }

    func validate() throws {
        if (tlsCert == nil) != (tlsKey == nil) { throw ValidationError("--tls-cert and --tls-key go together") }
        if fault == .custom && customBody == nil { throw ValidationError("--fault custom needs --custom-body") }
    }

    func run() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: accounts))
        var book = try JSONDecoder().decode(AccountBook.self, from: data)
        if let tokenTtl { book.tokenTTL = tokenTtl }
        let settings = StubSettings(
            book: book, failFirst: failFirst, failStatus: failStatus, retryAfter: retryAfter, delayMs: delayMs,
            fault: fault, customBody: try customBody.map { try Data(contentsOf: URL(fileURLWithPath: $0)) } ?? Data(),
            customStatus: customStatus, customContentType: customContentType)
        let state = StubState()

        var sslContext: NIOSSLContext?
        if let tlsCert, let tlsKey {
            let configuration = TLSConfiguration.makeServerConfiguration(
                certificateChain: try NIOSSLCertificate.fromPEMFile(tlsCert).map { .certificate($0) },
                privateKey: .privateKey(try NIOSSLPrivateKey(file: tlsKey, format: .pem)))
            sslContext = try NIOSSLContext(configuration: configuration)
        }

        let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { [sslContext] channel in
                channel.eventLoop.makeCompletedFuture {
                    if let sslContext {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: sslContext))
                    }
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(TokenHandler(settings: settings, state: state))
                }
            }
        let channel = try bootstrap.bind(host: host, port: port).wait()
        let boundPort = channel.localAddress?.port ?? port
        FileHandle.standardOutput.write(Data("PORT \(boundPort)\n".utf8))
        log("listening on \(sslContext == nil ? "http" : "https")://\(host):\(boundPort)")
        if exitWithParent {
            let parent = getppid()
            group.next().scheduleRepeatedTask(initialDelay: .milliseconds(500), delay: .milliseconds(500)) { _ in
                if getppid() != parent {
                    log("the process that started the stub is gone; exiting")
                    Foundation.exit(0)
                }
            }
        }
        try channel.closeFuture.wait()
    }
}

func log(_ line: String) {
    FileHandle.standardError.write(Data("gbg-auth-stub: \(line)\n".utf8))
}

/// The accounts file.
struct AccountBook: Decodable, Sendable {
    struct Client: Decodable, Sendable {
        var clientID: String
        var clientSecret: String
        var grants: [String]?
        var scopes: [String]?
        /// For consistency tests: a password grant succeeds only when the client secret
        /// and the password carry the same generation.
        var generation: Int?
        enum CodingKeys: String, CodingKey { case clientID = "client_id", clientSecret = "client_secret", grants, scopes, generation }
    }
    struct User: Decodable, Sendable {
        var username: String
        var password: String
        var temporary: Bool?
        var generation: Int?
    }
    var clients: [Client]
    var users: [User]
    var tokenTTL: Int?
    enum CodingKeys: String, CodingKey { case clients, users, tokenTTL = "token_ttl" }
}

struct StubSettings: Sendable {
    var book: AccountBook
    var failFirst: Int
    var failStatus: Int
    var retryAfter: Int?
    var delayMs: Int
    var fault: AuthStub.Fault
    var customBody: Data
    var customStatus: Int
    var customContentType: String
}

/// Counters that tests read through GET /_stub/stats.
final class StubState: Sendable {
    struct Counts: Sendable { var requests = 0; var tokenRequests = 0; var issued = 0; var tokenConnections = 0 }
    let counts = NIOLockedValueBox(Counts())
    let api = ApiFake()
}

/// A minimal response description.
struct StubResponse {
    var status: HTTPResponseStatus
    var body: [UInt8]
    var contentType = "application/json"
    var extraHeaders: [(String, String)] = []

    static func json(_ status: HTTPResponseStatus, _ object: [String: Any]) -> StubResponse {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
        return StubResponse(status: status, body: Array(data))
    }

    static func oauthError(_ status: HTTPResponseStatus, _ code: String, _ description: String) -> StubResponse {
        json(status, ["error": code, "error_description": description])
    }
}
