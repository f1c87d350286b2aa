#ifndef GBG_VAULT_CSQLITEHARDENING_H
#define GBG_VAULT_CSQLITEHARDENING_H

/* SQLite settings that are variadic in C (sqlite3_db_config), hence this shim. */
typedef struct sqlite3 sqlite3;

/* Turns SQLITE_DBCONFIG_DEFENSIVE on and SQLITE_DBCONFIG_TRUSTED_SCHEMA off for `db`,
   and PRAGMA cell_size_check on. Returns 0 on success, else the SQLite result code of
   the first failure. */
int gbgv_sqlite_harden(sqlite3 *db);

/* Runs one static statement (BEGIN DEFERRED, ROLLBACK) with sqlite3_exec; returns the
   SQLite result code. */
int gbgv_sqlite_exec_static(sqlite3 *db, const char *sql);

/* sqlite3_errmsg of `db`. */
const char *gbgv_sqlite_errmsg(sqlite3 *db);

/* Results of gbgv_read_vault_id. */
enum {
    GBGV_LOOKUP_OK = 0,
    GBGV_LOOKUP_CANNOT_OPEN = 1,
    GBGV_LOOKUP_NOT_A_VAULT = 2,
    GBGV_LOOKUP_NO_HEADER = 3,
};

/* The least work that finds a vault's agent (sessions' fast client path): opens `path`
   read-only (no symbolic link followed, defensive, schema not trusted), checks the
   application id and copies the `capacity`-byte vault id of the header row to `out`.
   Static SQL only; nothing is written. */
int gbgv_read_vault_id(const char *path, int application_id, unsigned char *out, int capacity);

#endif
