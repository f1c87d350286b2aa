import AsyncHTTPClient
import Foundation
import Testing
@testable import VaultCore

/// A scripted transport: answers in order, records what it was sent.
final class ScriptedTransport: HTTPTransport, @unchecked Sendable {
    var answers: [Result<HTTPResponseData, TransportError>]
    private(set) var bodies: [String] = []
    private(set) var headers: [[(String, String)]] = []
    init(_ answers: [Result<HTTPResponseData, TransportError>]) { self.answers = answers }

    func post(url: String, headers: [(String, String)], body: SecureBytes, deadline: ContinuousClock.Instant) async throws(TransportError) -> HTTPResponseData {
        bodies.append(body.utf8String() ?? "")
        self.headers.append(headers)
        let next = answers.isEmpty ? .failure(.connection("no more answers")) : answers.removeFirst()
        return try next.get()
    }
}

func response(_ status: Int, _ body: String, headers: [(String, String)] = []) -> Result<HTTPResponseData, TransportError> {
    .success(HTTPResponseData(status: status, headers: headers + [("X-Request-ID", "req-\(status)")], body: Array(body.utf8)))
}

let okBody = #"{"access_token":"abc.DEF-123_~+/=","token_type":"Bearer","expires_in":3600}"#

func request(_ grant: GrantType = .password) -> TokenRequest {
    TokenRequest(tokenURL: "https://auth.example/as/token.oauth2", grant: grant, clientID: "client id",
                 clientSecret: SecureBytes(utf8: "s&cr=t+ ü"), username: grant == .password ? "user@example.com" : nil,
                 password: grant == .password ? SecureBytes(utf8: "p w") : nil, scope: grant == .clientCredentials ? "gbg.token" : nil)
}

final class SleepLog: @unchecked Sendable {
    var delays: [Duration] = []
}

func exchange(_ transport: ScriptedTransport, log: SleepLog = SleepLog()) -> TokenExchange {
    TokenExchange(transport: transport, timeout: .seconds(60), sleep: { log.delays.append($0) })
}

@Suite("token exchange logic (injected transport)")
struct ExchangeLogicTests {
    @Test("the form body has exactly the GBG fields of each grant")
    func formBody() async {
        let t = ScriptedTransport([response(200, okBody), response(200, okBody)])
        _ = await exchange(t).perform(request(.password))
        _ = await exchange(t).perform(request(.clientCredentials))
        #expect(t.bodies[0] == "client_id=client+id&client_secret=s%26cr%3Dt%2B+%C3%BC&username=user%40example.com&password=p+w&grant_type=password")
        #expect(t.bodies[1] == "client_id=client+id&client_secret=s%26cr%3Dt%2B+%C3%BC&grant_type=client_credentials&scope=gbg.token")
        let names = t.headers[0].map { $0.0.lowercased() }
        #expect(names.contains("accept") && !names.contains("authorization"))
    }

    @Test("two 503s then success: 3 attempts, backoff grows")
    func retries() async {
        let t = ScriptedTransport([response(503, ""), .failure(.connection("refused")), response(200, okBody)])
        let log = SleepLog()
        let result = await exchange(t, log: log).perform(request())
        #expect(result.error == nil)
        #expect(result.attempts == 3)
        #expect(result.requestID == "req-200")
        #expect(log.delays.count == 2)
        #expect(log.delays[0] >= .milliseconds(125) && log.delays[0] <= .milliseconds(250))
        #expect(log.delays[1] >= .milliseconds(250) && log.delays[1] <= .milliseconds(500))
    }

    /// An outside review got the secrets past a check for the whole secret: cut, split across
    /// fields, percent-encoded with `%20`, with escaped slashes. Every form that shares 8
    /// bytes in a row with a secret (or holds a short one whole) is withheld; text that does
    /// not, is not.
    @Test("server text that repeats a secret, whole, cut, split, encoded or escaped, is withheld; other text is not")
    func repeatedSecrets() async {
        let secret = "S3cr3t-Client+Secret/xyz=="
        let password = "P@ssw0rd word%!"
        let runs = RepeatedRuns([SecureBytes(utf8: secret), SecureBytes(utf8: password)])
        let repeated = [
            secret, "bad " + secret + " end", "bad:client_id=c&client_secret=S3cr3t-Client%2BSec", "ES3cr3t-Client", "D+Secret/xyz==",
            "invalid password P%40ssw0rd%20word%25%21", "P%40SSW0RD+WORD", #"received "S3cr3t-Client+Secret\/xyz==""#, "s3cr3t-c",
            "req-&username=u&password=P%40ssw0r",
        ]
        for text in repeated { #expect(runs.found(in: text), "\(text)") }
        let other = ["invalid_grant", "The user credentials are incorrect.", "req-200", "S3cr3t-", "Secret", "P@ssw0r", ""]
        for text in other { #expect(!runs.found(in: text), "\(text)") }
        let short = RepeatedRuns([SecureBytes(utf8: "p w")])
        #expect(short.found(in: "bad p w") && short.found(in: "P+W") && short.found(in: "p%20w") && !short.found(in: "pw"))
        // A password that holds a word: a message that says the word is not withheld (runs of
        // letters and spaces count from 16 bytes), the password whole or its marked runs are.
        let worded = RepeatedRuns([SecureBytes(utf8: "gen-12-password-3f9a"), SecureBytes(utf8: "password")])
        #expect(worded.found(in: "Client secret and password are from different generations"), "the whole 8-letter secret 'password'")
        // A secret of letters alone is compared with its case when whole (a review's password
        // `Password` withheld "Invalid username or password").
        let capital = RepeatedRuns([SecureBytes(utf8: "Password")])
        #expect(!capital.found(in: "Invalid username or password. Account locked after 5 attempts") && capital.found(in: "got Password"))
        let wordy = RepeatedRuns([SecureBytes(utf8: "gen-12-password-3f9a")])
        #expect(!wordy.found(in: "Client secret and password are from different generations"))
        #expect(wordy.found(in: "x-password-3") && wordy.found(in: "GEN-12-PA"))
        let letters = RepeatedRuns([SecureBytes(utf8: "correct horse battery staple")])
        #expect(letters.found(in: "got orse battery stapl") && !letters.found(in: "the correct horse"))

        // Through the exchange: the code, the description and the request id each withheld.
        let t = ScriptedTransport([.success(HTTPResponseData(status: 400, headers: [("X-Request-ID", "id-p w")],
                                                             body: Array(#"{"error":"x-s%26cr%3Dt%2B+%C3%BC","error_description":"cut s&cr=t+ here"}"#.utf8)))])
        let result = await exchange(t).perform(request())
        #expect(result.oauthError == TokenRequest.withheld && result.requestID == TokenRequest.withheld)
        guard case .rejected(_, let description, _, _) = result.error else { Issue.record("not a refusal: \(String(describing: result.error))"); return }
        #expect(description == TokenRequest.withheld)
    }

    @Test("Retry-After is honoured")
    func retryAfter() async {
        let t = ScriptedTransport([response(429, "", headers: [("Retry-After", "2")]), response(200, okBody)])
        let log = SleepLog()
        let result = await exchange(t, log: log).perform(request())
        #expect(result.error == nil)
        #expect(log.delays == [.seconds(2)])
    }

    @Test("400 and 401 are never retried and map to exit 4", arguments: [400, 401])
    func noRetryOnRejection(status: Int) async {
        let t = ScriptedTransport([response(status, #"{"error":"invalid_client","error_description":"bad\u001b[31m client"}"#), response(200, okBody)])
        let result = await exchange(t).perform(request())
        #expect(result.attempts == 1)
        #expect(result.error?.exitCode == 4)
        #expect(result.oauthError == "invalid_client")
        #expect(result.error?.message.contains("\u{1b}") == false)
    }

    @Test("retries stop after 3 attempts with exit 5")
    func exhausted() async {
        let t = ScriptedTransport([response(502, ""), response(504, ""), response(503, "")])
        let result = await exchange(t).perform(request())
        #expect(result.attempts == 3)
        #expect(result.error?.exitCode == 5)
        #expect(result.outcome == .unavailable)
    }

    @Test("hostile token responses are malformed (exit 7)", arguments: [
        #"{"access_token":"abc\ndef","token_type":"Bearer","expires_in":3600}"#,
        #"{"access_token":"abc'; rm -rf /","token_type":"Bearer","expires_in":3600}"#,
        #"{"access_token":"","token_type":"Bearer","expires_in":3600}"#,
        #"{"access_token":"abc","token_type":"mac","expires_in":3600}"#,
        #"{"access_token":"abc","token_type":"Bearer","expires_in":-1}"#,
        #"{"access_token":"abc","token_type":"Bearer","expires_in":0}"#,
        #"{"access_token":"abc","token_type":"Bearer","expires_in":99999999999}"#,
        #"{"access_token":"abc","token_type":"Bearer","expires_in":"soon"}"#,
        #"{"access_token":"abc","token_type":"Bearer","expires_in":true}"#,
        #"{"access_token":"abc","token_type":"Bearer","expires_in":36.5}"#,
        #"{"access_token":"abc","token_type":"Bearer"}"#,
        #"{"access_token":123,"token_type":"Bearer","expires_in":3600}"#,
        #"[1,2,3]"#, "", "\u{FF}\u{FE}", "null",
    ])
    func hostile(body: String) async {
        let t = ScriptedTransport([response(200, body)])
        let result = await exchange(t).perform(request())
        #expect(result.error?.exitCode == 7, "\(body)")
        #expect(result.token == nil)
    }

    @Test("expires_in as a quoted number is accepted")
    func quotedExpiry() async {
        let t = ScriptedTransport([response(200, #"{"access_token":"abc","token_type":"bearer","expires_in":"3600"}"#)])
        let result = await exchange(t).perform(request())
        #expect(result.token?.expiresIn == 3600)
    }

    @Test("the temporary-password hint accompanies invalid_grant on the password grant only")
    func hint() async {
        let body = #"{"error":"invalid_grant","error_description":"Password expired"}"#
        let pw = await exchange(ScriptedTransport([response(400, body)])).perform(request(.password))
        #expect(pw.error?.hint?.contains("temporary") == true)
        let cc = await exchange(ScriptedTransport([response(400, body)])).perform(request(.clientCredentials))
        #expect(cc.error?.hint?.contains("temporary") == false)
    }

    @Test("truncated, oversized and TLS failures are not retried")
    func noRetryOnBrokenAnswers() async {
        for failure in [TransportError.truncated("cut"), .tooLarge(65536), .tls("untrusted")] {
            let t = ScriptedTransport([.failure(failure), response(200, okBody)])
            let result = await exchange(t).perform(request())
            #expect(result.attempts == 1)
            #expect(result.error != nil)
        }
    }

    @Test("the connect timeout reaches the HTTP client to the millisecond (a value under a second is not zero)",
          arguments: [1, 500, 999, 1000, 2500])
    func connectTimeoutPrecision(milliseconds: Int64) throws {
        let transport = AsyncHTTPTransport(options: TransportOptions(connectTimeout: .milliseconds(milliseconds)))
        let configuration = try transport.makeConfiguration(for: "https://api.auth.gbgplc.com/as/token.oauth2")
        #expect(configuration.timeout.connect == .milliseconds(milliseconds))
    }

    @Test("proxy settings: HTTPS_PROXY, NO_PROXY, loopback bypass")
    func proxies() throws {
        let env = ["HTTPS_PROXY": "http://user:pa%20ss@proxy.corp:3128", "NO_PROXY": "internal.example,.corp.example"]
        let proxy = try ProxySettings.proxy(for: "https://api.auth.gbgplc.com/as/token.oauth2", environment: env)
        #expect(proxy?.host == "proxy.corp" && proxy?.port == 3128)
        #expect(try ProxySettings.proxy(for: "https://auth.internal.example/x", environment: env) == nil)
        #expect(try ProxySettings.proxy(for: "https://a.corp.example/x", environment: env) == nil)
        #expect(try ProxySettings.proxy(for: "http://127.0.0.1:8080/x", environment: ["HTTP_PROXY": "http://p:1"]) == nil)
        #expect(try ProxySettings.proxy(for: "https://x.example/x", environment: [:]) == nil)
    }

    @Test("endpoint policy: https everywhere, http only on loopback, no credentials in URLs")
    func policy() {
        #expect((try? EndpointPolicy.validateTokenURL("https://api.auth.gbgplc.com/as/token.oauth2")) != nil)
        #expect((try? EndpointPolicy.validateTokenURL("http://127.0.0.1:9/as/token.oauth2")) != nil)
        #expect((try? EndpointPolicy.validateTokenURL("http://localhost/as")) != nil)
        #expect((try? EndpointPolicy.validateTokenURL("http://[::1]:80/as")) != nil)
        for bad in ["http://api.auth.gbgplc.com/as", "http://127.0.0.1.evil.com/", "ftp://x/", "https://u:p@x/", "https://x/#f",
                    "https://x/\n", "", "not a url", "https:///nohost"] {
            #expect((try? EndpointPolicy.validateTokenURL(bad)) == nil, "\(bad)")
        }
    }

    @Test("names: letters, digits, . _ -; NFC-normalised; everything else refused")
    func names() {
        #expect((try? NameRule.validate("prod-eu_1.x", what: "profile")) == "prod-eu_1.x")
        #expect((try? NameRule.validate("Cafe\u{301}", what: "profile")) == "Caf\u{e9}")
        for bad in ["", "-x", ".x", "a/b", "a b", "a\u{0}b", "a\nb", "a;b", "$(x)", String(repeating: "a", count: 65), "a\u{202e}b"] {
            #expect((try? NameRule.validate(bad, what: "profile")) == nil, "\(bad.debugDescription)")
        }
    }
}

@Suite("the agent's kept HTTP clients")
struct HTTPClientPoolTests {
    @Test("a client is kept per configuration: an edited CA bundle, another timeout or another proxy gets a new one")
    func keys() throws {
        let directory = NSTemporaryDirectory() + "gv-pool-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let bundle = directory + "/ca.pem"
        try Data("first".utf8).write(to: URL(fileURLWithPath: bundle))
        let url = "https://api.auth.gbgplc.com/as/token.oauth2"
        func key(_ options: TransportOptions) throws -> String {
            let transport = AsyncHTTPTransport(options: options)
            return try transport.poolKey(for: url, proxy: try ProxySettings.proxy(for: url, environment: options.environment))
        }
        let base = try key(TransportOptions(caBundlePath: bundle, environment: [:]))
        #expect(try key(TransportOptions(caBundlePath: bundle, environment: [:])) == base)
        try Data("second, longer".utf8).write(to: URL(fileURLWithPath: bundle))
        #expect(try key(TransportOptions(caBundlePath: bundle, environment: [:])) != base, "an edited bundle")
        #expect(try key(TransportOptions(caBundlePath: nil, environment: [:])) != base)
        #expect(try key(TransportOptions(connectTimeout: .seconds(3), environment: [:])) != (try key(TransportOptions(environment: [:]))))
        #expect(try key(TransportOptions(environment: ["HTTPS_PROXY": "http://proxy.example:3128"]))
                != (try key(TransportOptions(environment: [:]))))
        #expect(throws: VaultError.self) { try key(TransportOptions(caBundlePath: directory + "/missing.pem", environment: [:])) }
    }

    @Test("the pool keeps at most 16 clients: a 17th configuration gets none (its exchange makes its own), kept ones stay; none after shutdown")
    func bounded() async throws {
        let pool = HTTPClientPool()
        let configuration = { HTTPClient.Configuration() }
        for index in 0..<HTTPClientPool.maximumClients {
            #expect(pool.client(key: "k\(index)", configuration: configuration) != nil)
        }
        #expect(pool.client(key: "one too many", configuration: configuration) == nil)
        let first = pool.client(key: "k0", configuration: configuration)
        #expect(first != nil && first === pool.client(key: "k0", configuration: configuration), "the same client for the same key")
        await pool.shutdown()
        #expect(pool.client(key: "k0", configuration: configuration) == nil)
    }
}
