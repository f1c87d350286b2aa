import CAgent
import Foundation
import NIOCore
import NIOEmbedded
import VaultCore

/// The agent's frame reader (the decoder its connections use, PROTOCOL.md "Frames") and
/// request reader, on any bytes a client can send: the frames come out exactly as a
/// plain reading of the length prefixes gives them, and each is a typed request or a
/// usage error (exit 64) with a message safe to show.
enum AgentFrames {
    static func check(_ input: [UInt8]) -> String? {
        let channel = EmbeddedChannel()
        defer { _ = try? channel.finish() }
        do {
            try channel.pipeline.syncOperations.addHandler(AgentServer.frameDecoder())
        } catch {
            return "the decoder could not be added: \(error)"
        }
        // The bytes arrive in reads of the sizes the input's first byte picks.
        let step = max(1, Int(input.first ?? 1))
        var decoded: [[UInt8]] = []
        var refused = false
        var offset = 0
        while offset < input.count, !refused {
            let end = min(input.count, offset + step)
            do {
                try channel.writeInbound(ByteBuffer(bytes: input[offset..<end]))
            } catch {
                refused = true
            }
            while let frame = try? channel.readInbound(as: ByteBuffer.self) {
                decoded.append(Array(frame.readableBytesView))
            }
            offset = end
        }
        // The model: 4-byte big-endian length, then that many bytes; the decoder's buffer
        // refuses more than the largest frame and its prefix.
        var expected: [[UInt8]] = []
        var at = 0
        while input.count - at >= 4 {
            let length = input[at..<at + 4].reduce(0) { $0 << 8 | Int($1) }
            guard input.count - at - 4 >= length else { break }
            expected.append(Array(input[at + 4..<at + 4 + length]))
            at += 4 + length
        }
        if !refused {
            guard decoded == expected else { return "the decoder gave \(decoded.count) frames, the model \(expected.count)" }
        } else {
            guard decoded.count <= expected.count, Array(expected.prefix(decoded.count)) == decoded else {
                return "the decoder gave frames the model does not"
            }
        }
        for frame in decoded where frame.count <= AgentProtocol.maximumFrame {
            do {
                _ = try AgentRequest.read(frame)
            } catch {
                if let problem = checkRefusal(error, allowed: [64]) { return problem }
            }
        }
        return nil
    }
}

/// The C client's request writer against the agent's reader: any request the writer
/// accepts is read back as the same typed request, with the same network settings; what
/// it refuses (text that is not UTF-8) it never writes.
enum AgentRequestWriter {
    static let proxyVariables = ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"]

    static func check(_ input: [UInt8]) -> String? {
        var reader = FuzzReader(input)
        let flags = reader.byte()
        let op = Int(reader.byte() % 7)
        func text(_ present: Bool) -> [UInt8]? {
            let bytes = reader.chunk()
            return present ? Array(bytes.prefix { $0 != 0 }) : nil
        }
        let profile = text(flags & 1 != 0)
        let environment = text(flags & 2 != 0)
        let format = text(flags & 4 != 0)
        let minTTL = flags & 8 != 0 ? reader.int64() : -1
        let timeout = flags & 16 != 0 ? reader.int64() : -1
        let connect = flags & 32 != 0 ? reader.int64() : -1
        let options = reader.byte()
        var proxies: [(String, [UInt8])] = []
        let chosen = reader.byte()
        for (index, name) in proxyVariables.enumerated() where chosen & (1 << index) != 0 {
            proxies.append((name, Array(reader.chunk().prefix { $0 != 0 })))
        }

        var out = [CChar](repeating: 0, count: 16 * 1024)
        var variables: [[CChar]] = proxies.map { (name, value) in Array(name.utf8CString.dropLast()) + [61] + value.map { CChar(bitPattern: $0) } + [0] }
        variables.append(Array("UNRELATED=1".utf8CString))
        let length: Int = withCStrings([profile, environment, format]) { strings in
            var request = vault_agent_request()
            request.op = Int32(op)
            request.profile = strings[0]
            request.environment = strings[1]
            request.format = strings[2]
            request.print = Int32(options & 1)
            request.fresh = Int32(options >> 1 & 1)
            request.action = Int32(options >> 2 & 1)
            request.min_ttl = minTTL
            request.timeout_ms = timeout
            request.connect_timeout_ms = connect
            return withEnvironment(variables) { envp in vault_agent_write_request(&request, envp, &out, out.count) }
        }
        // Only a token request carries text (the other operations are their `op` alone).
        let decodable = op != VAULT_AGENT_OP_TOKEN
            || ([profile, environment, format].allSatisfy { $0.map { String(validating: $0, as: UTF8.self) != nil } ?? true }
                && proxies.allSatisfy { String(validating: $0.1, as: UTF8.self) != nil })
        let knownOperation = (1...5).contains(op) && (op != VAULT_AGENT_OP_TOKEN || profile != nil)
        guard length >= 0 else {
            return decodable && knownOperation ? "the writer refused a request of valid UTF-8" : nil
        }
        guard decodable, knownOperation else { return "the writer wrote a request it should refuse" }
        let bytes = out.prefix(length).map { UInt8(bitPattern: $0) }
        guard String(validating: bytes, as: UTF8.self) != nil, !bytes.contains(where: { $0 < 0x20 }) else {
            return "the request is not escaped, valid UTF-8"
        }
        let read: AgentRequest
        do {
            read = try AgentRequest.read(bytes)
        } catch {
            // Only an unknown format may be refused by the reader.
            if op == VAULT_AGENT_OP_TOKEN, let format, TokenFormat(rawValue: String(decoding: format, as: UTF8.self)) == nil {
                return checkRefusal(error, allowed: [64])
            }
            return "the reader refused what the writer wrote: \(error.message)"
        }
        let expected: AgentOperation
        switch op {
        case VAULT_AGENT_OP_STATUS: expected = .status
        case VAULT_AGENT_OP_LOCK: expected = .lock
        case VAULT_AGENT_OP_VERIFY: expected = .verify
        case VAULT_AGENT_OP_AUDIT_VERIFY: expected = .auditVerify
        default:
            let string = { (bytes: [UInt8]?) in bytes.map { String(decoding: $0, as: UTF8.self) } }
            guard let formatText = string(format).map({ TokenFormat(rawValue: $0) }) ?? .some(nil) else {
                return "the reader accepted an unknown format"
            }
            let token = AgentTokenRequest(profile: string(profile)!, environment: string(environment), print: options & 1 != 0,
                                          format: formatText, action: options >> 2 & 1 == 1 ? .exec : .token, fresh: options >> 1 & 1 != 0,
                                          minTTL: minTTL >= 0 ? minTTL : nil, timeoutMs: timeout >= 0 ? timeout : nil,
                                          connectTimeoutMs: connect >= 0 ? connect : nil)
            // Empty proxy variables are left out; a variable set twice counts once (the first).
            var proxy: [String: String] = [:]
            for (name, value) in proxies where !value.isEmpty && proxy[name] == nil { proxy[name] = String(decoding: value, as: UTF8.self) }
            expected = .token(token, network: AgentNetwork(caBundle: nil, proxy: proxy))
        }
        guard read == AgentRequest(version: AgentProtocol.version, operation: expected) else {
            return "read back differently: \(read) for \(expected)"
        }
        return nil
    }

    static func withCStrings<T>(_ strings: [[UInt8]?], _ body: ([UnsafePointer<CChar>?]) -> T) -> T {
        let copies: [UnsafeMutablePointer<CChar>?] = strings.map { bytes in
            bytes.map { bytes in
                let pointer = UnsafeMutablePointer<CChar>.allocate(capacity: bytes.count + 1)
                for (i, byte) in bytes.enumerated() { pointer[i] = CChar(bitPattern: byte) }
                pointer[bytes.count] = 0
                return pointer
            }
        }
        defer { copies.forEach { $0?.deallocate() } }
        return body(copies.map { $0.map { UnsafePointer($0) } })
    }

    static func withEnvironment<T>(_ variables: [[CChar]], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> T) -> T {
        let copies: [UnsafeMutablePointer<CChar>?] = variables.map { variable in
            let pointer = UnsafeMutablePointer<CChar>.allocate(capacity: variable.count)
            pointer.initialize(from: variable, count: variable.count)
            return pointer
        } + [nil]
        defer { copies.forEach { $0?.deallocate() } }
        return copies.withUnsafeBufferPointer { body($0.baseAddress!) }
    }
}

/// The client's answer reader (a hostile or confused agent): an answer it accepts is
/// written back as the same frame, read again as the same answer.
enum AgentAnswers {
    static func check(_ input: [UInt8]) -> String? {
        guard let answer = AgentAnswer.read(input) else { return nil }
        let frame = answer.frame()
        guard let again = AgentAnswer.read(frame) else { return "an accepted answer is not read back" }
        guard again.frame() == frame else { return "an accepted answer is read back differently" }
        return nil
    }
}
