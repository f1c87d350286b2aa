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
            abstract: "Run a command with a token in its environment.",
            discussion: """
                Sets GO_CUSTOMER_ACCESS, GBG_ACCESS_TOKEN, GBG_API_BASE and GBG_TOKEN_EXPIRES_AT, \
                removes \(LocalEnvironment.secretVariables.joined(separator: ", ")) (and PGPASSWORD for a team vault), \
                then replaces vault with the command (execvp): signals reach the command directly \
                and vault's exit status is the command's.
                """)

        @OptionGroup var options: VaultOptions
        @OptionGroup var selection: TokenSelection
        @OptionGroup var network: NetworkOptions
        @Argument(help: "The profile name.", completion: NameCompletion.profiles) var name: String
        @Argument(parsing: .postTerminator, help: "The command and its arguments, after --.") var command: [String] = []

        func validate() throws {
            guard !command.isEmpty else { throw ValidationError("give the command to run after --, e.g. vault exec NAME -- ./call-api.sh") }
        }

        @MainActor func run() async throws {
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
            ProcessHardening.restoreForChild()
            var argv: [UnsafeMutablePointer<CChar>?] = command.map { strdup($0) }
            argv.append(nil)
            execvp(command[0], &argv)
            let code = errno
            throw VaultError.failure("cannot run '\(command[0].sanitisedForDisplay(limit: 100))': \(String(cString: strerror(code)))")
        }
    }
}
