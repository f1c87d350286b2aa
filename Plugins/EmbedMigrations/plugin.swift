import Foundation
import PackagePlugin

/// Embeds the `Migrations/*.sql` files (SQLite) and `Migrations/postgres/*.sql` files
/// (PostgreSQL), with their expected-schema JSON, into the target as Swift literals.
///
/// The SQL files stay the one source of the schema; the generated file is rebuilt when
/// any of them changes or a new one appears.
@main
struct EmbedMigrations: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: any Target) throws -> [Command] {
        let directory = context.package.directoryURL.appending(path: "Migrations")
        let postgres = directory.appending(path: "postgres")
        func files(in directory: URL) throws -> [URL] {
            guard FileManager.default.fileExists(atPath: directory.path) else { return [] }
            return try FileManager.default
                .contentsOfDirectory(at: directory, includingPropertiesForKeys: nil)
                .filter { $0.pathExtension == "sql" || $0.lastPathComponent.hasSuffix(".schema.json") }
                .sorted { $0.lastPathComponent < $1.lastPathComponent }
        }
        let files = try files(in: directory) + files(in: postgres)
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedMigrations.swift")
        return [
            .buildCommand(
                displayName: "Embedding \(files.count) migration and schema files",
                executable: try context.tool(named: "migration-embedder").url,
                arguments: [output.path] + files.map(\.path),
                inputFiles: files + [directory, postgres],
                outputFiles: [output]
            )
        ]
    }
}
