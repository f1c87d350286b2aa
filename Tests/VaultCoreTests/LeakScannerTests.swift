import Foundation
import Testing
import VaultTestSupport

/// The scanner the end-to-end suite relies on must find what it looks for.
@Suite("leak scanner")
struct LeakScannerTests {
    @Test("a planted secret is found in every encoding, inside other bytes; absent ones are not")
    func finds() throws {
        let scanner = LeakScanner()
        let secret = "s3cr3t/+ é&=?"
        scanner.register(secret: secret)
        for (form, bytes) in LeakScanner.forms(of: secret) {
            let before = scanner.hitCount
            scanner.scan(Data("prefix-".utf8 + bytes + Data("-suffix".utf8)), artefact: form, includeTokens: false)
            #expect(scanner.hitCount > before, "\(form) not found")
        }
        let before = scanner.hitCount
        scanner.scan(Data("nothing to see here".utf8), artefact: "clean", includeTokens: false)
        #expect(scanner.hitCount == before)
        scanner.register(token: "tok-abcdef123456")
        scanner.scan(Data("Authorization: Bearer tok-abcdef123456".utf8), artefact: "expected stdout", includeTokens: false)
        #expect(scanner.hitCount == before)
        scanner.scan(Data("Authorization: Bearer tok-abcdef123456".utf8), artefact: "stderr", includeTokens: true)
        #expect(scanner.hitCount > before)
        #expect(scanner.artefactsScanned == LeakScanner.forms(of: secret).count + 3)
    }
}
