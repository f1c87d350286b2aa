import Foundation
import GRDB

/// What the team store's schema check reads from PostgreSQL's catalogs (FORMAT.md §11.3):
/// the digest every transaction compares, and the lines of the full check. The checks
/// themselves, and when they run, are in PostgresStore.swift.
extension PostgresStore {
    /// A digest of the catalog rows that define the vault's tables or attach anything to
    /// them, and of every object in its schema: the schema's `pg_namespace` row; the tables'
    /// `pg_class` rows, found by name; their columns, defaults, constraints (theirs, and any
    /// other table's foreign key to them, whose internal triggers run on their rows: found by
    /// the key's `pg_depend` row on the table, through an index, where a condition on
    /// `confrelid`, which has none, scanned all of `pg_constraint`: 1.04 → 0.52 ms with 3,000
    /// other tables in the database), triggers,
    /// indexes (their `pg_index` and `pg_class` rows: a renamed index was missed without the
    /// second), rules, policies and inheritance either way; and the `pg_depend` rows that tie
    /// an object to the schema: every function, operator, type, collation, conversion,
    /// operator class and family, text search object, statistics object, extension and
    /// relation made in it, or moved into it, has one (an operator there could change what
    /// the vault's own SQL, this query's included, calls; the vault's schema holds none of
    /// them, so their coming is what counts). Those are found through `pg_depend`'s index:
    /// scanning those 13 catalogs for rows of the schema took 0.95 ms a transaction, this
    /// 0.45 ms (`bench/results/2026-12-07-team-digest.md`). Any
    /// DDL that touches one of these rows writes a new row version with a transaction id
    /// newer than every existing one (or removes or adds a row), so the count of rows and the
    /// sum of their `xmin` move; a move makes the transaction check the whole schema again
    /// (``expectCheckedSchema(_:)``), which lists every object of those catalogs. The query
    /// calls no operator that a schema could shadow with a closer match (`||` on mixed types
    /// was one: an outside review froze the digest with its own): the two numbers are joined
    /// here.
    static let fingerprintSQL = """
        WITH nsp AS (SELECT oid, xmin FROM pg_catalog.pg_namespace WHERE nspname = ?),
        rel AS (SELECT c.oid, c.xmin FROM pg_catalog.pg_class c
                WHERE c.relnamespace = (SELECT oid FROM nsp) AND c.relname = ANY(pg_catalog.string_to_array(?, ','))),
        parts(x) AS (
          SELECT xmin FROM nsp
          UNION ALL SELECT xmin FROM rel
          UNION ALL SELECT a.xmin FROM pg_catalog.pg_attribute a WHERE a.attrelid IN (SELECT oid FROM rel)
          UNION ALL SELECT d.xmin FROM pg_catalog.pg_attrdef d WHERE d.adrelid IN (SELECT oid FROM rel)
          UNION ALL SELECT k.xmin FROM pg_catalog.pg_constraint k
                    WHERE k.oid IN (SELECT c.oid FROM pg_catalog.pg_constraint c WHERE c.conrelid IN (SELECT oid FROM rel)
                                    UNION SELECT d.objid FROM pg_catalog.pg_depend d
                                          WHERE d.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass::pg_catalog.oid
                                            AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass::pg_catalog.oid
                                            AND d.refobjid IN (SELECT oid FROM rel))
          UNION ALL SELECT t.xmin FROM pg_catalog.pg_trigger t WHERE t.tgrelid IN (SELECT oid FROM rel)
          UNION ALL SELECT x.xmin FROM pg_catalog.pg_index x WHERE x.indrelid IN (SELECT oid FROM rel)
          UNION ALL SELECT ic.xmin FROM pg_catalog.pg_class ic
                    WHERE ic.oid IN (SELECT x.indexrelid FROM pg_catalog.pg_index x WHERE x.indrelid IN (SELECT oid FROM rel))
          UNION ALL SELECT r.xmin FROM pg_catalog.pg_rewrite r WHERE r.ev_class IN (SELECT oid FROM rel)
          UNION ALL SELECT p.xmin FROM pg_catalog.pg_policy p WHERE p.polrelid IN (SELECT oid FROM rel)
          UNION ALL SELECT i.xmin FROM pg_catalog.pg_inherits i WHERE i.inhparent IN (SELECT oid FROM rel) OR i.inhrelid IN (SELECT oid FROM rel)
          UNION ALL SELECT dep.xmin FROM pg_catalog.pg_depend dep
                    WHERE dep.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass::pg_catalog.oid AND dep.refobjid = (SELECT oid FROM nsp))
        SELECT count(*) AS objects, coalesce(sum(x::text::bigint), 0)::text AS versions FROM parts
        """

    /// The catalogs of the objects a schema can hold besides relations, functions, operators
    /// and types (which the full check names with more detail, ``schemaEntries(_:schema:)``),
    /// with the kind the check names an object of it by, and its name and namespace columns.
    /// The vault's schema holds none; the digest sees one come by its `pg_depend` row.
    static let otherObjectCatalogs: [(kind: String, catalog: String, name: String, namespace: String)] = [
        ("collation", "pg_collation", "collname", "collnamespace"), ("conversion", "pg_conversion", "conname", "connamespace"),
        ("operator class", "pg_opclass", "opcname", "opcnamespace"), ("operator family", "pg_opfamily", "opfname", "opfnamespace"),
        ("text search configuration", "pg_ts_config", "cfgname", "cfgnamespace"), ("text search dictionary", "pg_ts_dict", "dictname", "dictnamespace"),
        ("text search parser", "pg_ts_parser", "prsname", "prsnamespace"), ("text search template", "pg_ts_template", "tmplname", "tmplnamespace"),
        ("statistics", "pg_statistic_ext", "stxname", "stxnamespace"), ("extension", "pg_extension", "extname", "extnamespace"),
    ]

    /// The objects of ``otherObjectCatalogs`` as one query's rows (`kind`, `name`, `namespace`).
    static let otherObjectsSQL = otherObjectCatalogs
        .map { "SELECT '\($0.kind)' AS kind, \($0.name)::text AS name, \($0.namespace) AS namespace FROM pg_catalog.\($0.catalog)" }
        .joined(separator: " UNION ALL ")

    /// The digest's two numbers (``fingerprintSQL``).
    struct SchemaDigest: Equatable {
        let objects: Int64
        let versions: String
    }

    /// The digest of a row of ``fingerprintSQL`` (an impossible one for no row).
    static func fingerprint(_ row: Row?) -> SchemaDigest {
        SchemaDigest(objects: row.flatMap { $0["objects"] as Int64? } ?? -1, versions: row.flatMap { $0["versions"] as String? } ?? "")
    }

    /// The arguments of ``fingerprintSQL`` for the vault in `schema`.
    static func fingerprintArguments(schema: String) -> [DatabaseValue] {
        [schema.databaseValue, tables.joined(separator: ",").databaseValue]
    }

    static func schemaFingerprint(_ session: PostgresSession, schema: String) throws -> SchemaDigest {
        fingerprint(try session.rows(fingerprintSQL, fingerprintArguments(schema: schema)).first)
    }

    /// One line per schema object, from the catalogs: relations (tables, indexes,
    /// sequences, views), columns with type, nullability, collation and default,
    /// constraints, indexes' definitions, and anything that could run code or hide rows
    /// (triggers, rules, policies, row-level security, functions). Schema-qualified names
    /// are written without the schema, so the list is the same for every vault.
    static func schemaEntries(_ db: StoreDB, schema: String) throws -> [String] {
        // Lines are joined by pg_catalog.concat, named with its schema: no operator or
        // function a schema could shadow with a closer match (`text || name` was one).
        let queries = [
            """
            SELECT pg_catalog.concat('relation ', c.relkind, ' ', c.relname) AS line FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace s ON c.relnamespace = s.oid
            WHERE s.nspname = ?
            """,
            // Columns from pg_attribute, each with its type's schema and name (a domain or a
            // type of another schema is not its base type), modifier, nullability, collation
            // with its schema (a review's `public."C"`, case-insensitive, passed as `C`),
            // default, identity and generation.
            """
            SELECT pg_catalog.concat('column ', c.relname, '.', a.attname, ' ', tn.nspname, '.', t.typname, ' typmod=', a.atttypmod,
                ' null=', CASE WHEN a.attnotnull THEN 'NO' ELSE 'YES' END, ' collation=', CASE WHEN co.oid IS NULL THEN '-' ELSE pg_catalog.concat(cn.nspname, '.', co.collname) END,
                ' default=', coalesce(pg_catalog.pg_get_expr(d.adbin, d.adrelid), '-'),
                ' identity=', CASE WHEN a.attidentity = '' THEN '-' ELSE a.attidentity::text END,
                ' generated=', CASE WHEN a.attgenerated = '' THEN '-' ELSE a.attgenerated::text END) AS line
            FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON a.attrelid = c.oid JOIN pg_catalog.pg_namespace s ON c.relnamespace = s.oid
            JOIN pg_catalog.pg_type t ON a.atttypid = t.oid JOIN pg_catalog.pg_namespace tn ON t.typnamespace = tn.oid
            LEFT JOIN pg_catalog.pg_collation co ON co.oid = a.attcollation LEFT JOIN pg_catalog.pg_namespace cn ON co.collnamespace = cn.oid
            LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE s.nspname = ? AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
            """,
            """
            SELECT pg_catalog.concat('constraint ', coalesce(r.relname::text, '-'), ' ', k.conname, ': ', pg_catalog.pg_get_constraintdef(k.oid)) AS line
            FROM pg_catalog.pg_constraint k LEFT JOIN pg_catalog.pg_class r ON k.conrelid = r.oid JOIN pg_catalog.pg_namespace s ON k.connamespace = s.oid WHERE s.nspname = ?
            """,
            // An index's definition names its table with the schema, always: that one name is
            // written without it here, on the server, where it stands (an outside review had
            // the schema's name taken out of every line as text, which made `lteam.ength(mac)`
            // read `length(mac)` and another schema's function pass as pg_catalog's).
            """
            SELECT pg_catalog.concat('index ', i.indexname, ': ', pg_catalog.replace(i.indexdef,
                pg_catalog.concat(' ON ', pg_catalog.quote_ident(i.schemaname), '.', pg_catalog.quote_ident(i.tablename), ' USING '),
                pg_catalog.concat(' ON ', pg_catalog.quote_ident(i.tablename), ' USING '))) AS line
            FROM pg_catalog.pg_indexes i WHERE i.schemaname = ?
            """,
            """
            SELECT pg_catalog.concat('trigger ', t.tgname, ' on ', c.relname) AS line FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON t.tgrelid = c.oid
            JOIN pg_catalog.pg_namespace s ON c.relnamespace = s.oid WHERE s.nspname = ? AND NOT t.tgisinternal
            """,
            "SELECT pg_catalog.concat('rule ', rulename, ' on ', tablename) AS line FROM pg_catalog.pg_rules WHERE schemaname = ?",
            "SELECT pg_catalog.concat('policy ', policyname, ' on ', tablename) AS line FROM pg_catalog.pg_policies WHERE schemaname = ?",
            """
            SELECT pg_catalog.concat('row security on ', c.relname) AS line FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace s ON c.relnamespace = s.oid
            WHERE s.nspname = ? AND (c.relrowsecurity OR c.relforcerowsecurity)
            """,
            "SELECT pg_catalog.concat('function ', p.proname) AS line FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace s ON p.pronamespace = s.oid WHERE s.nspname = ?",
            // A foreign key from a table of another schema to a vault table: its internal
            // triggers run on the vault's rows (a cascade then runs that table's own triggers
            // inside the vault's statements, as an outside review's did). The vault's own
            // keys are all within its schema.
            """
            SELECT pg_catalog.concat('foreign key from ', rs.nspname, '.', r.relname, ' ', k.conname, ' to ', f.relname) AS line
            FROM pg_catalog.pg_constraint k JOIN pg_catalog.pg_class r ON k.conrelid = r.oid JOIN pg_catalog.pg_namespace rs ON r.relnamespace = rs.oid
            JOIN pg_catalog.pg_class f ON k.confrelid = f.oid JOIN pg_catalog.pg_namespace s ON f.relnamespace = s.oid
            WHERE s.nspname = ? AND rs.oid <> s.oid
            """,
            // Inheritance either way: a table of another schema that inherits a vault table
            // adds its rows to every read of it; a vault table that inherits one is read with
            // that table's columns. The vault uses none.
            """
            SELECT pg_catalog.concat('inheritance ', cn.nspname, '.', c.relname, ' of ', pn.nspname, '.', p.relname) AS line
            FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON i.inhrelid = c.oid JOIN pg_catalog.pg_namespace cn ON c.relnamespace = cn.oid
            JOIN pg_catalog.pg_class p ON i.inhparent = p.oid JOIN pg_catalog.pg_namespace pn ON p.relnamespace = pn.oid
            WHERE ? IN (cn.nspname::text, pn.nspname::text)
            """,
            // Every other kind of object a schema can hold: the vault's holds its tables' row
            // and array types and nothing else.
            """
            SELECT pg_catalog.concat('operator ', o.oprname, '(', pg_catalog.format_type(o.oprleft, NULL), ',', pg_catalog.format_type(o.oprright, NULL), ')') AS line
            FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_namespace s ON o.oprnamespace = s.oid WHERE s.nspname = ?
            """,
            "SELECT pg_catalog.concat('type ', t.typname, ' ', t.typtype) AS line FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace s ON t.typnamespace = s.oid WHERE s.nspname = ?",
            """
            SELECT pg_catalog.concat(kind, ' ', name) AS line FROM (\(otherObjectsSQL)) o
            JOIN pg_catalog.pg_namespace s ON o.namespace = s.oid WHERE s.nspname = ?
            """,
        ]
        var lines: [String] = []
        for sql in queries {
            lines += try String.fetchAll(db, sql: sql, arguments: [schema])
        }
        // As the server wrote them: the vault's own names are unqualified (the session's
        // search path is the vault's schema), anything of another schema is qualified.
        return lines.sorted()
    }
}
