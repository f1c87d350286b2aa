import CAgent
import Foundation

/// A token the endpoint issued, validated.
public struct IssuedToken: Sendable {
    public var accessToken: SecureBytes
    public var tokenType: String
    public var expiresIn: Int64
}

/// What one exchange did, success or not: the token (if any) and the audit metadata.
public struct ExchangeResult: Sendable {
    public var token: IssuedToken?
    public var error: VaultError?
    public var httpStatus: Int?
    public var oauthError: String?
    public var attempts: Int
    public var durationMs: Int64
    public var requestID: String?

    /// The audit outcome.
    public var outcome: AuditOutcome {
        switch error {
        case nil: .ok
        case .rejected?: .rejected
        case .unavailable?: .unavailable
        case .malformedResponse?: .malformed
        case .wrongPassphrase?, .wrongIdentityPassphrase?, .wrongIdentitySlot?, .notFound?, .integrity?, .notAsRemembered?, .auditRefused?,
             .usage?, .newerVersion?, .keysChanged?, .relayed?, .failure?: .error
        }
    }
}

/// Whom an exchange tells that it is still waiting for the endpoint.
public struct WaitingNotice: Sendable {
    /// The endpoint's origin and the whole seconds waited so far.
    public var tick: @Sendable (_ origin: String, _ seconds: Int) -> Void
    /// The exchange ended, after at least one tick.
    public var done: @Sendable () -> Void

    public init(tick: @escaping @Sendable (String, Int) -> Void, done: @escaping @Sendable () -> Void) {
        self.tick = tick
        self.done = done
    }
}

/// Performs the GBG token exchange with bounded retries.
///
/// Up to `maxAttempts` attempts within one overall deadline; retried on no response,
/// timeouts, 429, 502, 503 and 504 with exponential backoff and full jitter, honouring
/// `Retry-After`; never retried on 400/401 or on a broken or oversized answer.
public struct TokenExchange: Sendable {
    public var transport: any HTTPTransport
    public var timeout: Duration
    public var maxAttempts: Int
    public var baseDelay: Duration
    /// Sleeps between attempts; injected by tests.
    public var sleep: @Sendable (Duration) async throws -> Void
    /// Told once a second, from ``waitingNoticeAfter`` seconds on, while an exchange is
    /// still running (the command line's "waiting for …" at a terminal); nil: nobody.
    public var waiting: WaitingNotice?

    /// Seconds before the first "waiting" notice; the agent's clients wait as long before
    /// theirs (CAgent's VAULT_WAITING_NOTICE_MS, the one place of this delay).
    public static let waitingNoticeAfter = Int(VAULT_WAITING_NOTICE_MS) / 1000

    public static let retryableStatuses: Set<Int> = [429, 502, 503, 504]
    public static let maximumTokenBytes = 8192
    /// Tokens longer than a year are refused as malformed.
    public static let maximumExpiresIn: Int64 = 366 * 24 * 3600

    public init(transport: any HTTPTransport, timeout: Duration = .seconds(30), maxAttempts: Int = 3,
                baseDelay: Duration = .milliseconds(250),
                sleep: @escaping @Sendable (Duration) async throws -> Void = { try await Task.sleep(for: $0) }) {
        self.transport = transport
        self.timeout = timeout
        self.maxAttempts = maxAttempts
        self.baseDelay = baseDelay
        self.sleep = sleep
    }

    public func perform(_ request: TokenRequest) async -> ExchangeResult {
        let clock = ContinuousClock()
        let start = clock.now
        let deadline = start + timeout
        var result = ExchangeResult(token: nil, error: nil, httpStatus: nil, oauthError: nil, attempts: 0, durationMs: 0, requestID: nil)
        let headers = [
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Accept", "application/json"),
            ("User-Agent", "gbg-vault/\(VaultVersion.string)"),
        ]
        let body = request.formBody()
        func finish(_ r: inout ExchangeResult) -> ExchangeResult {
            let elapsed = clock.now - start
            r.durationMs = elapsed.components.seconds * 1000 + elapsed.components.attoseconds / 1_000_000_000_000_000
            return r
        }
        do {
            try await transport.prepare(url: request.tokenURL)
        } catch {
            result.error = error
            return finish(&result)
        }
        let ticker = waiting.map { notice in
            Task {
                var seconds = Self.waitingNoticeAfter
                while (try? await Task.sleep(until: start + .seconds(seconds), clock: .continuous)) != nil {
                    notice.tick(Self.origin(request.tokenURL), seconds)
                    seconds += 1
                }
                return seconds > Self.waitingNoticeAfter
            }
        }
        var outcome = await attempts(request, body: body, headers: headers, deadline: deadline, result: &result)
        ticker?.cancel()
        if await ticker?.value == true { waiting?.done() }
        await transport.finish()
        return finish(&outcome)
    }

    private func attempts(_ request: TokenRequest, body: SecureBytes, headers: [(String, String)], deadline: ContinuousClock.Instant,
                          result: inout ExchangeResult) async -> ExchangeResult {
        let clock = ContinuousClock()
        func finish(_ r: inout ExchangeResult) -> ExchangeResult { r }

        // The secrets' runs, made once per exchange (not per attempt), for what the server says.
        let secrets = request.secretRuns
        while true {
            result.attempts += 1
            var retryAfter: Duration?
            do {
                Trace.debug("attempt \(result.attempts): POST to \(Self.origin(request.tokenURL)) (\(request.grant.rawValue) grant)")
                let response = try await transport.post(url: request.tokenURL, headers: headers, body: body, deadline: deadline)
                Trace.debug("attempt \(result.attempts): HTTP \(response.status), \(response.body.count) bytes")
                result.httpStatus = response.status
                result.requestID = response.header("X-Request-ID").map { secrets.found(in: $0) ? TokenRequest.withheld : Self.sanitiseRequestID($0) }
                if Self.retryableStatuses.contains(response.status) {
                    result.error = .unavailable("HTTP \(response.status) from the token endpoint after \(result.attempts) attempt(s)")
                    retryAfter = response.header("Retry-After").flatMap(Self.parseRetryAfter)
                } else {
                    let interpreted = Self.interpret(response, grant: request.grant, withholding: secrets.found(in:))
                    result.token = try? interpreted.get()
                    if case .failure(let error) = interpreted {
                        result.error = error
                        if case .rejected(let code, _, _, _) = error { result.oauthError = code }
                    } else {
                        result.error = nil
                    }
                    return finish(&result)
                }
            } catch {
                Trace.debug("attempt \(result.attempts): no usable response (\(error))")
                switch error {
                case .timeout:
                    result.error = .unavailable("\(Self.origin(request.tokenURL)): timed out after \(Self.seconds(timeout)) s (\(result.attempts) attempt(s))")
                case .connection(let why):
                    result.error = .unavailable("\(Self.origin(request.tokenURL)): \(why)")
                case .tls(let why):
                    result.error = .unavailable("\(Self.origin(request.tokenURL)): TLS \(why)")
                    return finish(&result)
                case .truncated(let why):
                    result.error = .malformedResponse(why)
                    return finish(&result)
                case .tooLarge(let cap):
                    result.error = .malformedResponse("the response is larger than \(cap / 1024) KiB")
                    return finish(&result)
                }
            }
            guard result.attempts < maxAttempts else { return finish(&result) }
            // Exponential backoff with full jitter in [d/2, d], or the server's Retry-After.
            let exponential = baseDelay * (1 << (result.attempts - 1))
            let jittered = exponential / 2 + .nanoseconds(Int64.random(in: 0...max(1, Int64(Self.milliseconds(exponential) * 500_000))))
            let delay = retryAfter.map { min($0, .seconds(30)) } ?? jittered
            guard clock.now + delay < deadline else { return finish(&result) }
            Trace.debug("retrying in \(Self.seconds(delay)) s")
            do { try await sleep(delay) } catch { return finish(&result) }
        }
    }

    // MARK: - Interpreting answers

    /// The fields of a token or error response that gbg-vault reads; each is nil when
    /// absent or of the wrong JSON type.
    struct ResponseBody: Decodable {
        var accessToken: String?
        var tokenType: String?
        var expiresIn: Int64??
        var error: String?
        var errorDescription: String?

        enum CodingKeys: String, CodingKey {
            case accessToken = "access_token", tokenType = "token_type", expiresIn = "expires_in"
            case error, errorDescription = "error_description"
        }

        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            accessToken = try? c.decodeIfPresent(String.self, forKey: .accessToken)
            tokenType = try? c.decodeIfPresent(String.self, forKey: .tokenType)
            error = try? c.decodeIfPresent(String.self, forKey: .error)
            errorDescription = try? c.decodeIfPresent(String.self, forKey: .errorDescription)
            if c.contains(.expiresIn) {
                // A whole number, or a string of one (some servers quote it); nil otherwise.
                if let number = try? c.decode(Int64.self, forKey: .expiresIn) {
                    expiresIn = .some(number)
                } else if let text = try? c.decode(String.self, forKey: .expiresIn) {
                    expiresIn = .some(Int64(text))
                } else {
                    expiresIn = .some(nil)
                }
            } else {
                expiresIn = nil
            }
        }
    }

    /// Maps a non-retryable response to a token or an error (and so to its exit code). An
    /// error's code or text for which `withholding` is true (it repeats a secret the request
    /// sent) is replaced by ``TokenRequest/withheld``.
    package static func interpret(_ response: HTTPResponseData, grant: GrantType,
                                  withholding: (String) -> Bool = { _ in false }) -> Result<IssuedToken, VaultError> {
        let body = try? JSONDecoder().decode(ResponseBody.self, from: Data(response.body))
        switch response.status {
        case 200:
            guard let body else {
                return .failure(.malformedResponse("HTTP 200 without a JSON object body"))
            }
            return parseToken(body)
        case 400, 401, 403:
            guard let body, let code = body.error, !code.isEmpty else {
                return .failure(.malformedResponse("HTTP \(response.status) without an OAuth error body"))
            }
            let safeCode = withholding(code) ? TokenRequest.withheld : code.sanitisedForDisplay(limit: 64)
            let description = body.errorDescription.map { withholding($0) ? TokenRequest.withheld : $0.sanitisedForDisplay(limit: 200) }
            return .failure(.rejected(error: safeCode, description: description, status: response.status,
                                      hint: hint(for: safeCode, grant: grant)))
        case 300..<400:
            return .failure(.failure("the token endpoint answered with a redirect (HTTP \(response.status)); redirects are not followed",
                                     hint: "check the environment's token URL"))
        default:
            return .failure(.failure("unexpected HTTP \(response.status) from the token endpoint",
                                     hint: "check the environment's token URL"))
        }
    }

    static func hint(for code: String, grant: GrantType) -> String? {
        switch (code, grant) {
        case ("invalid_grant", .password):
            "GBG API passwords start as temporary and fail until reset: sign in once on the GBG GO sign-in page to set a new password, then store it with `vault rotate NAME --password`"
        case ("invalid_grant", .clientCredentials), ("invalid_client", _), ("unauthorized_client", _):
            "check the client id, or store a new client secret with `vault rotate NAME --client-secret`"
        case ("invalid_scope", _):
            "check the profile's --scope (GBG uses gbg.token)"
        case ("unsupported_grant_type", _):
            "this API client may need the other grant: add the profile again with --grant password or client-credentials"
        default: nil
        }
    }

    static func parseToken(_ body: ResponseBody) -> Result<IssuedToken, VaultError> {
        guard let token = body.accessToken else {
            return .failure(.malformedResponse("no access_token string in the response"))
        }
        guard isValidToken(token) else {
            return .failure(.malformedResponse("the access_token is empty, too long, or has characters a bearer token cannot have"))
        }
        guard let type = body.tokenType, type.caseInsensitiveCompare("Bearer") == .orderedSame else {
            return .failure(.malformedResponse("token_type is missing or not Bearer"))
        }
        guard let expiresIn = body.expiresIn ?? nil, expiresIn >= 1, expiresIn <= maximumExpiresIn else {
            return .failure(.malformedResponse("expires_in is missing, not a whole number, or out of range (1 s to 366 days)"))
        }
        return .success(IssuedToken(accessToken: SecureBytes(utf8: token), tokenType: "Bearer", expiresIn: expiresIn))
    }

    /// RFC 6750 `b64token`: `ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/"`, then `=`s.
    static func isValidToken(_ token: String) -> Bool {
        let bytes = Array(token.utf8)
        guard !bytes.isEmpty, bytes.count <= maximumTokenBytes else { return false }
        var seenPadding = false
        for byte in bytes {
            let body = (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a)
                || byte == 0x2d || byte == 0x2e || byte == 0x5f || byte == 0x7e || byte == 0x2b || byte == 0x2f
            if byte == 0x3d { seenPadding = true; continue }
            if !body || seenPadding { return false }
        }
        return bytes.first != 0x3d
    }

    package static func parseRetryAfter(_ value: String) -> Duration? {
        if let seconds = Int(value.trimmingCharacters(in: .whitespaces)), seconds >= 0 { return .seconds(seconds) }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        guard let date = formatter.date(from: value) else { return nil }
        return .seconds(max(0, Int(date.timeIntervalSinceNow.rounded(.up))))
    }

    static func sanitiseRequestID(_ value: String) -> String {
        value.sanitisedForDisplay(limit: 128)
    }

    static func origin(_ url: String) -> String {
        guard let c = URLComponents(string: url), let host = c.host else { return "the token endpoint" }
        return "\(c.scheme ?? "https")://\(host)\(c.port.map { ":\($0)" } ?? "")"
    }

    static func seconds(_ d: Duration) -> String {
        let s = Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
        return s == s.rounded() ? String(Int(s)) : String(format: "%.1f", s)
    }

    static func milliseconds(_ d: Duration) -> Double {
        Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15
    }
}

/// The gbg-vault version string.
public enum VaultVersion {
    public static let string = "0.1.0"
}
