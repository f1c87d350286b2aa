import Foundation

/// A token as `vault serve` hands it out and `vault proxy` uses it: its audit record is
/// already committed.
public struct HandedToken: Sendable {
    public var token: SecureBytes
    public var tokenType: String
    /// Unix seconds.
    public var expiresAt: Int64
    /// Seconds the token had left when it was obtained (its lifetime, for a fresh one).
    public var expiresIn: Int64
    /// The environment's API base (`vault proxy`'s upstream).
    public var apiBase: String?
    /// Which of a ``TokenKeeper``'s tokens this is (counted from 1; 0: not from a keeper).
    public internal(set) var generation = 0

    public init(token: SecureBytes, tokenType: String, expiresAt: Int64, expiresIn: Int64, apiBase: String?) {
        self.token = token
        self.tokenType = tokenType
        self.expiresAt = expiresAt
        self.expiresIn = expiresIn
        self.apiBase = apiBase
    }
}

/// Where `vault serve` and `vault proxy` get tokens: the agent, when the vault is unlocked
/// (they then hold no key), or the vault they unlocked themselves. Either way every token
/// has its audit record (`serve` or `proxy`, with the caller) before it is returned.
public protocol TokenSource: Sendable {
    func token(fresh: Bool, minTTL: Int64, caller: String) async throws(VaultError) -> HandedToken
}

/// Tokens through the vault's agent, one request each (PROTOCOL.md).
public struct AgentTokenSource: TokenSource {
    public let client: AgentClient
    public let profile: String
    public let environment: String?
    public let action: TokenAction
    public let cacert: String?
    public let timeoutMs: Int64?
    public let connectTimeoutMs: Int64?

    public init(client: AgentClient, profile: String, environment: String?, action: TokenAction, cacert: String?,
                timeoutMs: Int64?, connectTimeoutMs: Int64?) {
        self.client = client
        self.profile = profile
        self.environment = environment
        self.action = action
        self.cacert = cacert
        self.timeoutMs = timeoutMs
        self.connectTimeoutMs = connectTimeoutMs
    }

    /// Whether the agent still serves the vault (a `status` call, which does not count as use).
    func isAlive() async -> Bool {
        if case .answered(.status) = await client.callDetached(.status) { return true }
        return false
    }

    public func token(fresh: Bool, minTTL: Int64, caller: String) async throws(VaultError) -> HandedToken {
        let request = AgentTokenRequest(profile: profile, environment: environment, print: false, action: action, fresh: fresh,
                                        minTTL: minTTL, timeoutMs: timeoutMs, connectTimeoutMs: connectTimeoutMs, caller: caller)
        let outcome = await client.callDetached(.token(request), cacert: cacert)
        switch outcome {
        case .answered(.token(let token)):
            return HandedToken(token: SecureBytes(utf8: token.accessToken), tokenType: token.tokenType, expiresAt: token.expiresAt,
                               expiresIn: token.expiresIn, apiBase: token.apiBase)
        case .answered(.failure(let failure)) where failure.ending == true:
            throw .unavailable("the vault's session is ending (`vault lock`, or its time was up); `vault unlock` resumes")
        case .absent, .stale:
            throw .unavailable("the vault's session ended (`vault lock`, or its time was up); `vault unlock` resumes")
        case .answered(.failure(let failure)):
            throw failure.error
        case .answered:
            throw .failure("the agent gave an answer of another kind than the one asked for")
        case .untrusted(let why), .broken(let why):
            throw .failure(why)
        }
    }
}

/// Tokens from a vault this process unlocked (no agent): the same code the agent runs.
public struct VaultTokenSource: TokenSource {
    public let unlocked: UnlockedVault
    public let exchange: TokenExchange
    public let profile: String
    public let environment: String?
    public let action: TokenAction

    public init(unlocked: UnlockedVault, exchange: TokenExchange, profile: String, environment: String?, action: TokenAction) {
        self.unlocked = unlocked
        self.exchange = exchange
        self.profile = profile
        self.environment = environment
        self.action = action
    }

    public func token(fresh: Bool, minTTL: Int64, caller: String) async throws(VaultError) -> HandedToken {
        let delivered = try await unlocked.obtainToken(
            TokenOptions(profile: profile, environment: environment, fresh: fresh, minTTL: minTTL, action: action, caller: caller),
            exchange: exchange)
        return HandedToken(token: delivered.token, tokenType: delivered.tokenType, expiresAt: delivered.expiresAt,
                           expiresIn: delivered.expiresIn, apiBase: delivered.environment.apiBase)
    }
}

/// Keeps one profile's token fresh for `vault serve` and `vault proxy`, as `--keep-fresh`
/// does for the agent: renewed (`caller=renewal`) before it drops under
/// ``TokenOptions/renewalMargin(lifetime:)``, so callers never wait on the network; failures
/// retried with backoff. `handOut` asks the source for every token handed out (each is an
/// audit record: a cache hit while the renewal keeps the cache fresh); `current` keeps the
/// token in this process for the proxy, which records requests in its request log instead.
public final class TokenKeeper: @unchecked Sendable {
    public let source: any TokenSource
    private let lock = NSLock()
    private var held: HandedToken?
    /// When a refused token was last replaced.
    private var lastReplacement = Date.distantPast
    private var generations = 0
    /// The exchange ``current(caller:replacing:)`` started and others wait for.
    private var inFlight: Task<HandedToken, any Error>?
    private var lifetime: Int64 = 0
    private var failures = 0
    private var nextRenewal: Int64 = 0
    /// The last error of a renewal or hand-out, for the log.
    public private(set) var lastError: VaultError?

    public init(source: any TokenSource) { self.source = source }

    /// The `--min-ttl` of a hand-out: the default, or a quarter of the lifetime of a
    /// short-lived token (which the renewal replaces at half its lifetime).
    var handOutMinTTL: Int64 { lock.withLock { handOutMinTTLLocked } }

    /// ``handOutMinTTL`` with the lock held.
    private var handOutMinTTLLocked: Int64 {
        lifetime > 0 ? min(TokenOptions.defaultMinTTL, max(1, lifetime / 4)) : TokenOptions.defaultMinTTL
    }

    /// A token for `caller`, with its own audit record.
    public func handOut(caller: String) async throws(VaultError) -> HandedToken {
        return note(try await source.token(fresh: false, minTTL: handOutMinTTL, caller: caller))
    }

    /// The token this process holds, obtained (with a record naming `caller`) when there is
    /// none, it is about to expire, or `replacing` is it (an upstream refused it).
    public func current(caller: String, replacing refused: HandedToken? = nil) async throws(VaultError) -> HandedToken {
        let now = Int64(Date().timeIntervalSince1970)
        let (kept, replacing) = lock.withLock { () -> (HandedToken?, Task<HandedToken, any Error>?) in
            // A refused token is being replaced: wait for the new one.
            if refused != nil, let inFlight { return (nil, inFlight) }
            return (keptToken(now: now, refused: refused), nil)
        }
        if let replacing {
            do { return try await replacing.value } catch { throw (error as? VaultError) ?? .failure("the token could not be obtained") }
        }
        if let kept { return kept }
        // One exchange for every request that finds the token missing or refused at once
        // (64 connections hit by the same 401 make one exchange, not 64).
        let task = lock.withLock { () -> Task<HandedToken, any Error> in
            if let inFlight { return inFlight }
            let fresh = refused != nil
            let minTTL = handOutMinTTLLocked
            let task = Task { [self] () async throws -> HandedToken in
                defer { lock.withLock { inFlight = nil } }
                return note(try await source.token(fresh: fresh, minTTL: minTTL, caller: caller))
            }
            inFlight = task
            return task
        }
        do {
            return try await task.value
        } catch {
            throw (error as? VaultError) ?? .failure("the token could not be obtained")
        }
    }

    /// The held token if it may be used (call with the lock held): not about to expire, and
    /// not the refused one, unless that was replaced less than
    /// ``minimumReplacementSeconds`` ago (then it is used as it is, and the API's 401 passed on).
    private func keptToken(now: Int64, refused: HandedToken?) -> HandedToken? {
        guard let held, held.expiresAt - handOutMinTTLLocked > now else { return nil }
        // A refused token is replaced, but not more often than every
        // `minimumReplacementSeconds`: an API path that answers 401 for its own reasons
        // must not send the real secrets to the token endpoint on every call.
        if let refused, refused.generation == held.generation,
           Date().timeIntervalSince(lastReplacement) >= Self.minimumReplacementSeconds {
            lastReplacement = Date()
            return nil
        }
        return held
    }

    /// Keeps `token` if it is the newest, and numbers it.
    private func note(_ token: HandedToken) -> HandedToken {
        let now = Int64(Date().timeIntervalSince1970)
        return lock.withLock {
            var token = token
            generations += 1
            token.generation = generations
            if held == nil || token.expiresAt >= held!.expiresAt {
                held = token
                lifetime = max(lifetime, token.expiresIn)
                nextRenewal = max(now + 1, token.expiresAt - TokenOptions.renewalMargin(lifetime: lifetime))
            }
            return token
        }
    }

    /// The shortest time between two replacements of a refused token.
    public static let minimumReplacementSeconds: TimeInterval = 10

    /// With the agent: forgets the token held here once the agent has ended (`vault
    /// lock`), so that nothing this process holds outlives the session. Call about once a
    /// second.
    public func forgetIfSessionEnded() async {
        guard let agent = source as? AgentTokenSource, lock.withLock({ held != nil }) else { return }
        if await !agent.isAlive() {
            lock.withLock { held = nil }
            Trace.debug("the agent ended: the token held here is forgotten")
        }
    }

    /// Renews when due; call about once a second.
    public func renewIfDue() async {
        let now = Int64(Date().timeIntervalSince1970)
        let due = lock.withLock { held != nil && nextRenewal <= now }
        guard due else { return }
        do {
            let token = try await source.token(fresh: true, minTTL: 0, caller: "renewal")
            _ = note(token)
            lock.withLock {
                lifetime = token.expiresIn
                failures = 0
                lastError = nil
                nextRenewal = max(now + 1, token.expiresAt - TokenOptions.renewalMargin(lifetime: token.expiresIn))
            }
        } catch {
            lock.withLock {
                failures += 1
                lastError = error
                let backoff = min(300, Int64(1) << min(8, failures))
                nextRenewal = now + backoff / 2 + Int64.random(in: 0...max(1, backoff / 2))
            }
            Trace.debug("renewal failed: \(error.message)")
        }
    }
}
