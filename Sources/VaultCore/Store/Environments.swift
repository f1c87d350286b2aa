import Foundation
import GRDB

/// User environments (FORMAT.md §3.2, §5.3), inside one transaction. `eu`, `us` and `au`
/// are built in and never stored.
struct Environments {
    let tx: VaultTransaction

    /// Adds an environment whose name and URLs are already checked.
    func add(name: String, tokenURL: String, apiBase: String?) throws {
        if try EnvironmentRecord.fetchOne(tx.db, key: name) != nil {
            throw VaultError.failure("an environment named '\(name)' already exists", hint: "remove it first with `vault env remove \(name)`")
        }
        var record = EnvironmentRecord(name: name, uid: Data(Sodium.randomBytes(16)), tokenURL: tokenURL, apiBase: apiBase,
                                       createdAt: tx.now.iso8601, mac: Data())
        record.mac = Data(tx.environmentMAC(record))
        try record.insert(tx.db)
        try tx.audit(AuditEntry(at: tx.now.unixMilliseconds, action: .envAdd, outcome: .ok, environment: name, tokenURL: tokenURL))
    }

    /// Changes an environment's token URL and/or API base (`apiBase: .some(nil)` removes
    /// it); the row keeps its identifier and is MAC'd anew, and the tokens cached for the
    /// old definition are dropped (their additional data names it).
    func set(name: String, tokenURL: String?, apiBase: String??) throws -> Environment {
        guard var record = try EnvironmentRecord.fetchOne(tx.db, key: name) else {
            throw VaultError.notFound("no environment named '\(name.sanitisedForDisplay(limit: 64))'")
        }
        try tx.checkEnvironmentMAC(record)
        var changes: [String] = []
        if let tokenURL, tokenURL != record.tokenURL { record.tokenURL = tokenURL; changes.append("token_url") }
        if let apiBase, apiBase != record.apiBase { record.apiBase = apiBase; changes.append("api_base") }
        record.mac = Data(tx.environmentMAC(record))
        try record.update(tx.db)
        try tx.db.execute(sql: "DELETE FROM token_cache WHERE environment = ?", arguments: [name])
        let dropped = tx.db.changesCount
        try tx.audit(AuditEntry(at: tx.now.unixMilliseconds, action: .envSet, outcome: .ok, environment: name, tokenURL: record.tokenURL,
                                detail: "changed=\(changes.isEmpty ? "nothing" : changes.joined(separator: ",")) cached_tokens_dropped=\(dropped)"))
        return Environment(name: record.name, tokenURL: record.tokenURL, apiBase: record.apiBase, builtIn: false, uid: [UInt8](record.uid ?? Data()))
    }

    /// Removes an environment no profile uses as its default; its cached tokens go with it.
    func remove(name: String) throws {
        guard try EnvironmentRecord.fetchOne(tx.db, key: name) != nil else {
            throw VaultError.notFound("no environment named '\(name.sanitisedForDisplay(limit: 64))'")
        }
        let users = try String.fetchAll(tx.db, sql: "SELECT name FROM profile WHERE environment = ? ORDER BY name", arguments: [name])
        guard users.isEmpty else {
            throw VaultError.failure("environment '\(name)' is the default of \(users.count) profile(s): \(users.prefix(5).map { $0.sanitisedForDisplay(limit: 64) }.joined(separator: ", "))",
                                     hint: "remove those profiles or add them again with another --env")
        }
        try tx.db.execute(sql: "DELETE FROM token_cache WHERE environment = ?", arguments: [name])
        _ = try EnvironmentRecord.deleteOne(tx.db, key: name)
        try tx.audit(tx.entry(.envRemove, environment: name))
    }
}

extension UnlockedVault {
    /// Adds a user environment (`vault env add`).
    public func addEnvironment(name: String, tokenURL: String, apiBase: String?) throws(VaultError) {
        let name = try NameRule.validate(name, what: "environment")
        guard !Environment.builtIns.contains(where: { $0.name == name }) else { throw .usage("'\(name)' is a built-in environment") }
        let tokenURL = try EndpointPolicy.validateTokenURL(tokenURL)
        let apiBase = try apiBase.map { (u) throws(VaultError) in try EndpointPolicy.validateAPIBase(u) }
        try write { try Environments(tx: $0).add(name: name, tokenURL: tokenURL, apiBase: apiBase) }
    }

    /// Changes a user environment's token URL and/or API base (`vault env set`), audited.
    /// Built-ins cannot be changed. `apiBase: .some(nil)` removes the API base.
    @discardableResult
    public func setEnvironment(name: String, tokenURL: String?, apiBase: String??) throws(VaultError) -> Environment {
        guard !Environment.builtIns.contains(where: { $0.name == name }) else {
            throw .usage("'\(name)' is a built-in environment and cannot be changed", hint: "add your own with `vault env add`")
        }
        guard tokenURL != nil || apiBase != nil else { throw .usage("give --token-url, --api-base or --no-api-base") }
        let newTokenURL = try tokenURL.map { (u) throws(VaultError) in try EndpointPolicy.validateTokenURL(u) }
        let newAPIBase: String?? = try apiBase.map { (value) throws(VaultError) -> String? in
            try value.map { (u) throws(VaultError) in try EndpointPolicy.validateAPIBase(u) }
        }
        return try write { try Environments(tx: $0).set(name: name, tokenURL: newTokenURL, apiBase: newAPIBase) }
    }

    /// Removes a user environment that no profile uses as its default.
    public func removeEnvironment(name: String) throws(VaultError) {
        guard !Environment.builtIns.contains(where: { $0.name == name }) else {
            throw .usage("'\(name)' is a built-in environment and cannot be removed")
        }
        try write { try Environments(tx: $0).remove(name: name) }
    }

    /// An environment with its MAC checked, so an edited token URL never receives secrets.
    public func verifiedEnvironment(named name: String) throws(VaultError) -> Environment {
        try read { try $0.environment(named: name) }
    }
}
