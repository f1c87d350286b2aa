import Foundation
import FuzzTargets
import Testing

/// Every committed fuzz input (Fuzz/corpus: the seeds; Fuzz/regressions: each input a
/// fuzzing campaign crashed on, kept once fixed) through its Swift target's properties, as
/// `vault-fuzz` checks them. (The C targets' inputs run in `scripts/fuzz.sh`.)
@Suite("fuzz inputs: every committed seed and regression keeps its target's properties")
struct FuzzCorpusTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz")

    @Test("each Swift target's committed inputs", arguments: FuzzTarget.all.map(\.name))
    func committedInputs(_ name: String) async throws {
        let target = try #require(FuzzTarget.named(name))
        var count = 0
        for folder in ["corpus", "regressions"] {
            let directory = Self.root.appendingPathComponent(folder).appendingPathComponent(name)
            guard let files = try? FileManager.default.contentsOfDirectory(atPath: directory.path) else { continue }
            for file in files.sorted() {
                let input = try [UInt8](Data(contentsOf: directory.appendingPathComponent(file)))
                let problem = await target.check(input)
                #expect(problem == nil, "\(folder)/\(name)/\(file): \(problem ?? "")")
                count += 1
            }
        }
        #expect(count > 0, "\(name) has no committed seed")
    }

    @Test("the vault-file seeds are whole vaults: they unlock with the targets' passphrase and verify clean, so fuzzing starts deep")
    func vaultSeedsOpen() throws {
        let directory = Self.root.appendingPathComponent("corpus/vault-file")
        for file in try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted() {
            let report = try VaultFiles.openAndVerify([UInt8](Data(contentsOf: directory.appendingPathComponent(file))))
            #expect(report.problems.isEmpty && report.profiles > 0, "\(file): \(report.problems)")
        }
    }
}
