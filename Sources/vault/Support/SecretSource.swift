import ArgumentParser
import Foundation
import VaultCore

/// How `add` and `rotate` receive secrets: never as argument values.
struct SecretSourceOptions: ParsableArguments {
    @Flag(help: "Read the secrets from GBG_CLIENT_SECRET and GBG_PASSWORD.")
    var secretsFromEnv = false

    @Flag(help: "Read the secrets from standard input as a JSON object {\"client_secret\": \"...\", \"password\": \"...\"}.")
    var secretsStdin = false

    func validate() throws {
        if secretsFromEnv && secretsStdin {
            throw ValidationError("--secrets-from-env and --secrets-stdin cannot be used together; pick one")
        }
    }

    static let maximumSecretBytes = 16 * 1024

    /// Reads the requested fields from the chosen source (or a hidden prompt).
    func read(clientSecret wantSecret: Bool, password wantPassword: Bool) throws(VaultError) -> SecretInput {
        if secretsFromEnv {
            let env = ProcessInfo.processInfo.environment
            return SecretInput(
                clientSecret: wantSecret ? try Self.required(env["GBG_CLIENT_SECRET"], name: "GBG_CLIENT_SECRET") : nil,
                password: wantPassword ? try Self.required(env["GBG_PASSWORD"], name: "GBG_PASSWORD") : nil)
        }
        if secretsStdin {
            let data = FileHandle.standardInput.readData(ofLength: 256 * 1024)
            guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw .usage("standard input is not a JSON object", hint: "send {\"client_secret\": \"…\", \"password\": \"…\"}")
            }
            let known: Set<String> = ["client_secret", "password"]
            if let unknown = object.keys.first(where: { !known.contains($0) }) {
                throw .usage("unknown field '\(unknown.sanitisedForDisplay(limit: 40))' in the secrets JSON")
            }
            func field(_ name: String, wanted: Bool) throws(VaultError) -> SecureBytes? {
                guard wanted else { return nil }
                guard let value = object[name] else { throw .usage("the secrets JSON has no \(name)") }
                guard let text = value as? String else { throw .usage("\(name) in the secrets JSON must be a string") }
                return try Self.checked(SecureBytes(utf8: text), name: name)
            }
            return SecretInput(clientSecret: try field("client_secret", wanted: wantSecret),
                               password: try field("password", wanted: wantPassword))
        }
        let hint = "use --secrets-from-env or --secrets-stdin when there is no terminal"
        return SecretInput(
            clientSecret: wantSecret ? try Self.checked(Terminal.readHidden(prompt: "Client secret: ", missingSourceHint: hint), name: "client secret") : nil,
            password: wantPassword ? try Self.checked(Terminal.readHidden(prompt: "API password: ", missingSourceHint: hint), name: "password") : nil)
    }

    private static func required(_ value: String?, name: String) throws(VaultError) -> SecureBytes {
        guard let value else { throw .usage("\(name) is not set") }
        return try checked(SecureBytes(utf8: value), name: name)
    }

    private static func checked(_ value: SecureBytes, name: String) throws(VaultError) -> SecureBytes {
        guard value.count > 0 else { throw .usage("the \(name) is empty") }
        guard value.count <= maximumSecretBytes else { throw .usage("the \(name) is longer than 16 KiB") }
        return value
    }
}
