import CSodium
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Argon2id cost parameters of a vault (FORMAT.md §4.1).
public struct KDFParameters: Sendable, Equatable, CustomStringConvertible {
    public var opslimit: UInt64
    public var memlimit: UInt64

    public init(opslimit: UInt64, memlimit: UInt64) {
        self.opslimit = opslimit
        self.memlimit = memlimit
    }

    /// libsodium's presets for Argon2id.
    public enum Preset: String, CaseIterable, Sendable {
        case interactive, moderate, sensitive

        public var parameters: KDFParameters {
            switch self {
            case .interactive:
                KDFParameters(opslimit: UInt64(crypto_pwhash_argon2id_opslimit_interactive()),
                              memlimit: UInt64(crypto_pwhash_argon2id_memlimit_interactive()))
            case .moderate:
                KDFParameters(opslimit: UInt64(crypto_pwhash_argon2id_opslimit_moderate()),
                              memlimit: UInt64(crypto_pwhash_argon2id_memlimit_moderate()))
            case .sensitive:
                KDFParameters(opslimit: UInt64(crypto_pwhash_argon2id_opslimit_sensitive()),
                              memlimit: UInt64(crypto_pwhash_argon2id_memlimit_sensitive()))
            }
        }
    }

    /// The name of the preset these parameters equal, if any.
    public var presetName: String? {
        Preset.allCases.first { $0.parameters == self }?.rawValue
    }

    /// Upper bounds that keep a hostile header from exhausting memory or time (FORMAT.md §4.1).
    public static let maximumOpslimit: UInt64 = 64
    public static let maximumMemlimit: UInt64 = 4 << 30

    /// True when these parameters are at least as strong as `interactive` in both costs.
    public var meetsMinimum: Bool {
        let floor = Preset.interactive.parameters
        return opslimit >= floor.opslimit && memlimit >= floor.memlimit
    }

    public var withinMaximum: Bool {
        opslimit <= Self.maximumOpslimit && memlimit <= Self.maximumMemlimit
    }

    public var description: String {
        "argon2id opslimit=\(opslimit) memlimit=\(memlimit / 1024 / 1024) MiB" + (presetName.map { " (\($0))" } ?? "")
    }

    // MARK: - Test-only cheap KDF

    /// The cheapest parameters libsodium accepts. Used only by the test suite.
    public static let testOnlyInsecure = KDFParameters(
        opslimit: UInt64(crypto_pwhash_argon2id_OPSLIMIT_MIN),
        memlimit: UInt64(crypto_pwhash_argon2id_MEMLIMIT_MIN))

    /// Whether the test-only insecure KDF is enabled in this process.
    ///
    /// Only debug builds honour it, and only when `GBG_VAULT_TEST_ONLY_INSECURE_KDF=1` is
    /// set: release builds cannot create or open a vault weaker than `interactive`.
    public static var testOnlyInsecureKDFEnabled: Bool {
        #if DEBUG
        return getenv("GBG_VAULT_TEST_ONLY_INSECURE_KDF").map { String(cString: $0) } == "1"
        #else
        return false
        #endif
    }
}
