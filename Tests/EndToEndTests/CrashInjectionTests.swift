import Foundation
import Testing
import VaultTestSupport

/// SIGKILLs `vault` at random moments during add, rotate, passwd, rekey, remove and token,
/// then checks that nothing committed is lost: exactly one passphrase (old or new) opens
/// the vault, every profile's newest secret is its old or its new value, secret versions
/// stay contiguous, and the audit chain verifies. `GBG_VAULT_CRASH_KILLS` sets the number
/// of kills (default 50; the full-size run in RELIABILITY.md uses 1000) and
/// `GBG_VAULT_CRASH_SEED` the random seed.
@Suite("crash injection", .serialized)
struct CrashInjectionTests {
    /// The secrets as an independent reader (testvectors/open_vault.py) sees them. A team
    /// vault is first copied, sealed, to a file (`vault copy`, which needs no key and reads
    /// one snapshot of what is committed).
    func readVault(_ vault: TestVault) throws -> [String: [String: String]] {
        var path = vault.path
        if vault.postgres != nil {
            path = vault.directory + "/snapshot-\(UUID().uuidString).db"
            let copied = try vault.run(["copy", "--to", path])
            guard copied.status == 0 else {
                Issue.record("vault copy of the team vault failed: \(copied.stderrText)")
                return [:]
            }
        }
        defer { if vault.postgres != nil { try? FileManager.default.removeItem(atPath: path) } }
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("testvectors/open_vault.py").path
        let result = try Binaries.run("/usr/bin/env", ["python3", script, path, "--allow-test-kdf"],
                                      environment: ["PATH": "/usr/local/bin:/usr/bin:/bin", "VAULT_PASSPHRASE": vault.passphrase])
        guard result.status == 0 else {
            Issue.record("the independent reader failed: \(result.stderrText)")
            return [:]
        }
        let report = try JSONSerialization.jsonObject(with: result.stdout) as? [String: Any]
        return report?["profiles"] as? [String: [String: String]] ?? [:]
    }

    static func newest(_ secrets: [String: String], field: String) -> (version: Int, value: String)? {
        let versions = secrets.keys.compactMap { key -> Int? in
            let parts = key.split(separator: "/")
            return parts.count == 2 && parts[0] == field ? Int(parts[1].dropFirst()) : nil
        }.sorted()
        guard let last = versions.last else { return nil }
        #expect(versions == Array(1...last), "versions of \(field) are not contiguous: \(versions)")
        return (last, secrets["\(field)/v\(last)"] ?? "")
    }

    @Test("SIGKILL at random moments never loses committed data", arguments: ["file", "postgres"])
    func randomKills(store: String) throws {
        let env = ProcessInfo.processInfo.environment
        var server: PostgresServer?
        if store == "postgres" {
            guard let started = try startPostgres() else { return }
            server = started
        }
        defer { server?.stop() }
        let kills = Int(env["GBG_VAULT_CRASH_KILLS"] ?? "") ?? (store == "file" ? 50 : 30)
        let seed = UInt64(env["GBG_VAULT_CRASH_SEED"] ?? "") ?? UInt64.random(in: 1...UInt64.max / 2)
        print("crash injection (\(store)): \(kills) kills, seed \(seed)")
        var rng = SeededGenerator(seed: seed)
        let fixture = try Fixture(postgres: server)
        defer { fixture.stub.stop() }
        let vault = fixture.vault
        var ccSecret = fixture.ccSecret
        var temporary: [String: String] = [:]   // tmp profiles known to exist → their client secret
        var landed = 0

        for round in 0..<kills {
            let operation = Int.random(in: 0..<6, using: &rng)
            var arguments: [String] = []
            var extraEnv: [String: String] = [:]
            var stdin: Data?
            var candidateSecret: String?
            var candidatePassphrase: String?
            var candidateTemporary: (String, String)?
            var removing: String?
            switch operation {
            case 0:
                candidateSecret = "cc-round-\(round)-\(UInt32.random(in: 0...UInt32.max, using: &rng))"
                LeakScanner.shared.register(secret: candidateSecret!)
                arguments = ["rotate", "cc", "--secrets-stdin"]
                stdin = Data("{\"client_secret\":\"\(candidateSecret!)\"}".utf8)
            case 1:
                candidatePassphrase = "passphrase round \(round) \(UInt32.random(in: 0...UInt32.max, using: &rng))"
                LeakScanner.shared.register(secret: candidatePassphrase!)
                arguments = ["passwd"]
                extraEnv["VAULT_NEW_PASSPHRASE"] = candidatePassphrase
            case 2:
                arguments = ["rekey"]
            case 3:
                let name = "tmp-\(round)", secret = "tmp-secret-\(round)-\(UInt32.random(in: 0...UInt32.max, using: &rng))"
                LeakScanner.shared.register(secret: secret)
                candidateTemporary = (name, secret)
                arguments = ["add", name, "--client-id", "c-\(round)", "--grant", "client-credentials", "--secrets-stdin"]
                stdin = Data("{\"client_secret\":\"\(secret)\"}".utf8)
            case 4:
                if let victim = temporary.keys.sorted().first {
                    removing = victim
                    arguments = ["remove", victim, "--yes"]
                } else {
                    arguments = ["token", "pw", "--fresh"]
                }
            default:
                arguments = ["token", "pw", "--fresh"]
            }

            var environment = vault.environment(extraEnv)
            environment["VAULT_PASSPHRASE"] = vault.passphrase
            let child = try ChildProcess(Binaries.vault, arguments, environment: environment)
            if let stdin { child.writeStdin(stdin) }
            child.closeStdin()
            usleep(UInt32.random(in: 0...150_000, using: &rng))
            child.kill(SIGKILL)
            let status = child.wait(timeout: 30)
            _ = status

            // 1. Exactly one passphrase opens the vault, and the audit chain verifies.
            let candidates = [vault.passphrase] + (candidatePassphrase.map { [$0] } ?? [])
            var opened: [String] = []
            for passphrase in candidates {
                let verify = try vault.run(["audit", "verify"], env: ["VAULT_PASSPHRASE": passphrase])
                if verify.status == 0 { opened.append(passphrase) } else {
                    #expect(verify.status == 3, "round \(round) \(arguments[0]): verify exit \(verify.status): \(verify.stderrText)")
                }
            }
            #expect(opened.count == 1, "round \(round) \(arguments[0]): \(opened.count) passphrases open the vault")
            guard let current = opened.first else { break }
            if current != vault.passphrase { vault.passphrase = current; landed += 1 }

            // 2. Every profile decrypts to its old or new value; none is lost.
            let secrets = try readVault(vault)
            #expect(Self.newest(secrets["pw"] ?? [:], field: "client_secret")?.value == fixture.clientSecret, "round \(round): pw lost")
            #expect(Self.newest(secrets["pw"] ?? [:], field: "password")?.value == fixture.password, "round \(round): pw password lost")
            let cc = Self.newest(secrets["cc"] ?? [:], field: "client_secret")?.value
            #expect(cc == ccSecret || (candidateSecret != nil && cc == candidateSecret), "round \(round): cc is neither old nor new")
            if let cc, cc != ccSecret { ccSecret = cc; landed += 1 }
            for (name, secret) in temporary where name != removing {
                #expect(Self.newest(secrets[name] ?? [:], field: "client_secret")?.value == secret, "round \(round): \(name) lost")
            }
            if let removing, secrets[removing] == nil { temporary.removeValue(forKey: removing); landed += 1 }
            if let (name, secret) = candidateTemporary, let stored = secrets[name] {
                #expect(Self.newest(stored, field: "client_secret")?.value == secret)
                temporary[name] = secret
                landed += 1
            }
        }
        print("crash injection (\(store)): \(kills) kills; \(landed) changes had committed before the kill, the rest were rolled back")
        #expect(try vault.run(["audit", "verify"]).status == 0)
        expectNoLeaks(vault)
    }
}
