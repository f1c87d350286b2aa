import Foundation
import VaultCore

/// The token endpoint's answer (a hostile or broken server): any status, `Retry-After`
/// and body. A token is accepted only as RFC 6750 `b64token` text with a `Bearer` type and
/// an `expires_in` in range; everything else is exit 4 (an OAuth error), 7 (malformed) or
/// 1 (another status), with a message safe to show.
enum TokenResponses {
    static func check(_ input: [UInt8]) -> String? {
        var reader = FuzzReader(input)
        let status = 100 + (Int(reader.byte()) << 8 | Int(reader.byte())) % 500
        let grant: GrantType = reader.bool() ? .password : .clientCredentials
        let retryAfter = String(decoding: reader.chunk(limit: 64), as: UTF8.self)
        if let wait = TokenExchange.parseRetryAfter(retryAfter), wait < .zero { return "a negative Retry-After" }
        let response = HTTPResponseData(status: status, headers: [("Retry-After", retryAfter)], body: reader.rest())
        switch TokenExchange.interpret(response, grant: grant) {
        case .success(let token):
            guard status == 200 else { return "a token accepted from HTTP \(status)" }
            let bytes = token.accessToken.withUnsafeBytes { Array($0) }
            let allowed = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/".utf8)
            let body = bytes.prefix { $0 != UInt8(ascii: "=") }
            guard !body.isEmpty, bytes.count <= TokenExchange.maximumTokenBytes, body.allSatisfy(allowed.contains),
                  bytes.dropFirst(body.count).allSatisfy({ $0 == UInt8(ascii: "=") }) else {
                return "an accepted token is not b64token text"
            }
            guard token.tokenType == "Bearer", (1...TokenExchange.maximumExpiresIn).contains(token.expiresIn) else {
                return "an accepted token with type \(token.tokenType) or expires_in \(token.expiresIn)"
            }
        case .failure(let error):
            let allowed: Set<Int32> = [400, 401, 403].contains(status) ? [4, 7] : status == 200 ? [7] : [1]
            return checkRefusal(error, allowed: allowed)
        }
        return nil
    }
}
