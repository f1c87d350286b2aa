// swift-tools-version: 6.0
// A standalone benchmark (not part of gbg-vault's build): the statements of one team-vault
// token cache hit, run through PostgresNIO four ways. See README.md.
import PackageDescription

let package = Package(
    name: "postgres-client-bench",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
    ],
    targets: [
        .executableTarget(
            name: "pgc-bench",
            dependencies: [.product(name: "PostgresNIO", package: "postgres-nio")],
            swiftSettings: [.swiftLanguageMode(.v5)]
        ),
    ]
)
