import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1

/// A small fake of the GBG GO API under `/v2/captain/`, so that `vault proxy` is tested
/// against real sockets. Every resource checks the bearer token: one this stub issued and
/// that has not expired (else `401 invalid_token`).
///
/// - `GET /v2/captain/ping`: `{"ok":true}`.
/// - `GET /v2/captain/headers`: the request's URI and the names (never the values) of its
///   headers, and whether the token was valid.
/// - `GET /v2/captain/careless`: `{"ok":true}`, with the caller's bearer token as the
///   answer's `X-Request-ID` (an API that echoes its request, for the proxy's log).
/// - `POST|PUT /v2/captain/echo`: reads the body as it arrives (never held whole) and answers
///   its size and FNV-1a 64 digest.
/// - `GET /v2/captain/stream?bytes=N`: N bytes (byte i is i mod 251), written in 64 KiB
///   chunks as the client reads them.
/// - `POST /_stub/revoke`: every token issued so far stops working (forces a refresh).
final class ApiFake: Sendable {
    static let prefix = "/v2/captain/"
    private let tokens = NIOLockedValueBox([String: Int64]())
    let counts = NIOLockedValueBox(Counts())

    struct Counts: Sendable { var requests = 0; var unauthorized = 0 }

    func issued(_ token: String, expiresIn: Int) {
        tokens.withLockedValue { $0[token] = Int64(Date().timeIntervalSince1970) + Int64(expiresIn) }
    }

    func revokeAll() { tokens.withLockedValue { $0.removeAll() } }

    /// Whether the `Authorization` header carries a live token of this stub.
    func authorised(_ head: HTTPRequestHead) -> Bool {
        guard let header = head.headers.first(name: "Authorization"), header.hasPrefix("Bearer ") else { return false }
        let token = String(header.dropFirst(7))
        let now = Int64(Date().timeIntervalSince1970)
        return tokens.withLockedValue { ($0[token] ?? 0) > now }
    }

    /// FNV-1a, 64 bits: a digest tests compare on both sides of the proxy.
    struct Digest {
        var value: UInt64 = 0xcbf2_9ce4_8422_2325
        var count = 0
        mutating func add(_ bytes: some Sequence<UInt8>) {
            for byte in bytes {
                value = (value ^ UInt64(byte)) &* 0x100_0000_01b3
                count += 1
            }
        }
        var hex: String { String(format: "%016llx", value) }
    }

    /// The stream's pattern: byte i is `i % 251`.
    static func pattern(offset: Int, count: Int) -> [UInt8] {
        (0..<count).map { UInt8((offset + $0) % 251) }
    }
}
