// swift-tools-version: 6.1
import Foundation
import PackageDescription

// `scripts/fuzz.sh` sets GBG_VAULT_FUZZ=1: the project's own code is then compiled with
// libFuzzer's coverage instrumentation and AddressSanitizer (its C with
// UndefinedBehaviorSanitizer in trap mode too), and the `vault-fuzz` executable, whose `main` is
// libFuzzer's, is added. Other builds never see either.
let fuzzing = ProcessInfo.processInfo.environment["GBG_VAULT_FUZZ"] == "1"
let fuzzSwift: [SwiftSetting] = fuzzing ? [.unsafeFlags(["-sanitize=fuzzer,address"])] : []
let fuzzC: [CSetting] = fuzzing ? [.unsafeFlags(["-fsanitize=fuzzer-no-link,address,undefined", "-fsanitize-trap=undefined"])] : []
// The same build's executables and test bundle carry AddressSanitizer's runtime, so the
// suite's sanitizer subset (scripts/sanitize.sh ci) runs on it too.
let fuzzLink: [LinkerSetting] = fuzzing ? [.unsafeFlags(["-sanitize=address"])] : []

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
] + fuzzSwift

let package = Package(
    name: "gbg-vault",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "vault", targets: ["vault"]),
        .executable(name: "gbg-auth-stub", targets: ["gbg-auth-stub"]),
        .library(name: "VaultCore", targets: ["VaultCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", exact: "1.8.2"),
        .package(url: "https://github.com/groue/GRDB.swift", exact: "7.10.0"),
        .package(url: "https://github.com/swift-server/async-http-client", exact: "1.37.0"),
        .package(url: "https://github.com/apple/swift-log", exact: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", exact: "2.101.3"),
        .package(url: "https://github.com/apple/swift-nio-ssl", exact: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio-extras", exact: "1.35.2"),
        .package(url: "https://github.com/x-sheep/swift-property-based", exact: "2.0.1"),
        .package(url: "https://github.com/vapor/postgres-nio", exact: "1.33.2"),
    ],
    targets: [
        // libsodium from the system (Debian: libsodium-dev), found through pkg-config.
        .systemLibrary(
            name: "CSodium",
            pkgConfig: "libsodium",
            providers: [.apt(["libsodium-dev"])]
        ),
        // sqlite3_db_config (variadic in C): defensive mode on, trusted_schema off.
        .target(
            name: "CSQLiteHardening",
            cSettings: fuzzC,
            linkerSettings: [.linkedLibrary("sqlite3")]
        ),
        // The library: crypto, sealed store, token exchange, audit. No argument parsing.
        .target(
            name: "VaultCore",
            dependencies: [
                "CSodium",
                "CSQLiteHardening",
                "CProcess",
                "CAgent",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ],
            swiftSettings: swiftSettings,
            plugins: ["EmbedMigrations"]
        ),
        // prctl(PR_SET_DUMPABLE) (variadic in C), pipe2 (a GNU extension) and spawn
        // attributes, for the command layer, the agent launcher and the test harness.
        .target(name: "CProcess", cSettings: fuzzC),
        // The agent protocol's client side, written once: where an agent's socket is, whom a
        // client trusts, the request's bytes, one round trip (libsodium's BLAKE2b names a team
        // vault's socket). No constructor: the library links it.
        .target(name: "CAgent", dependencies: ["CSodium"], cSettings: fuzzC),
        // `vault token …` through the agent before `main`: a constructor, so it belongs to the
        // `vault` executable alone, never to a library product.
        .target(name: "CTokenClient", dependencies: ["CAgent"], cSettings: fuzzC),
        // The thin command layer.
        .executableTarget(
            name: "vault",
            dependencies: [
                "VaultCore",
                "CProcess",
                "CTokenClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings,
            linkerSettings: fuzzLink
        ),
        // A local stand-in for the GBG token endpoint (offline use, demos, tests).
        .executableTarget(
            name: "gbg-auth-stub",
            dependencies: [
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings,
            linkerSettings: fuzzLink
        ),
        // Build-time tool: turns Migrations/*.sql into Swift string literals.
        .executableTarget(name: "migration-embedder"),
        .plugin(
            name: "EmbedMigrations",
            capability: .buildTool(),
            dependencies: ["migration-embedder"]
        ),
        .target(
            name: "VaultTestSupport",
            dependencies: ["VaultCore", "CProcess"],
            path: "Tests/VaultTestSupport",
            swiftSettings: swiftSettings
        ),
        // The fuzz targets' checks (Fuzz/README.md): libFuzzer runs them through `vault-fuzz`;
        // the suite runs each committed corpus and regression input through them too.
        .target(
            name: "FuzzTargets",
            dependencies: [
                "VaultCore", "CAgent",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            path: "Fuzz/Targets",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "VaultCoreTests",
            dependencies: [
                "VaultCore", "VaultTestSupport", "CProcess", "CAgent", "FuzzTargets",
                .product(name: "PropertyBased", package: "swift-property-based"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            swiftSettings: swiftSettings,
            linkerSettings: fuzzLink
        ),
        .testTarget(
            name: "EndToEndTests",
            dependencies: ["VaultTestSupport", "vault", "gbg-auth-stub"],
            swiftSettings: swiftSettings,
            linkerSettings: fuzzLink
        ),
    ],
    swiftLanguageModes: [.v6]
)

if fuzzing {
    package.targets.append(.executableTarget(
        name: "vault-fuzz",
        dependencies: ["FuzzTargets"],
        path: "Fuzz/Driver",
        swiftSettings: swiftSettings + [.unsafeFlags(["-parse-as-library"])],
        linkerSettings: [.unsafeFlags(["-sanitize=fuzzer,address"])]
    ))
    package.products.append(.executable(name: "vault-fuzz", targets: ["vault-fuzz"]))
}
