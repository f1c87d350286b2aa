// libFuzzer's entry points for `vault-fuzz` (built by scripts/fuzz.sh only): the target is
// chosen by VAULT_FUZZ_TARGET; a property that fails is a crash libFuzzer records.
import Dispatch
import FuzzTargets
#if canImport(Glibc)
import Glibc
#endif

nonisolated(unsafe) private var selected: FuzzTarget?

@_cdecl("LLVMFuzzerInitialize")
public func fuzzerInitialize(_ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> Int32 {
    let name = getenv("VAULT_FUZZ_TARGET").map { String(cString: $0) } ?? ""
    guard let target = FuzzTarget.named(name) else {
        report("vault-fuzz: VAULT_FUZZ_TARGET must name one of: \(FuzzTarget.all.map(\.name).joined(separator: ", "))")
        exit(64)
    }
    selected = target
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let input = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    let target = selected!
    if let problem = blocking({ await target.check(input) }) {
        report("vault-fuzz: \(selected!.name): \(problem)")
        abort()
    }
    return 0
}

/// Runs a target's check on a task and waits for it here (libFuzzer's thread, not one of
/// the tasks' threads).
private func blocking(_ body: @escaping @Sendable () async -> String?) -> String? {
    final class Box: @unchecked Sendable { var value: String? }
    let box = Box()
    let done = DispatchSemaphore(value: 0)
    Task {
        box.value = await body()
        done.signal()
    }
    done.wait()
    return box.value
}

private func report(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
}

// SwiftPM links an executable with `main` defined as `vault_fuzz_main` (so that tests can
// link executable modules); here that is libFuzzer's driver.
@_silgen_name("LLVMFuzzerRunDriver")
private func runDriver(_ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                       _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32

@_cdecl("vault_fuzz_main")
public func vaultFuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int32 {
    var count = argc
    var arguments: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = argv
    return withUnsafeMutablePointer(to: &arguments) { pointer in
        runDriver(&count, pointer, { data, size in fuzzerTestOneInput(data, size) })
    }
}
