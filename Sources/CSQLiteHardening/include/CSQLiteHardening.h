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

/* A lean read-only connection for the metadata commands (VaultCore's LeanReader):
   the SQLite C API without GRDB's per-connection set-up, which cost `vault audit` and
   `vault list` more than their queries. Thin wrappers, because sqlite3.h itself belongs
   to GRDB's SQLite module. */
typedef struct sqlite3_stmt sqlite3_stmt;

/* Opens `path` read-only with the flags GRDB uses for a read-only queue, then hardens it as
   gbgv_sqlite_harden, sets the busy timeout, extended result codes, and turns off
   double-quoted string literals (as GRDB does). On failure *out may still need closing. */
/// Opens `path` read-only; with `uri` set, `path` is an SQLite URI (`file:…?immutable=1`).
int gbgv_open_readonly(const char *path, int uri, int busy_timeout_ms, sqlite3 **out);
int gbgv_close(sqlite3 *db);
int gbgv_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **out);
int gbgv_finalize(sqlite3_stmt *stmt);
int gbgv_bind_null(sqlite3_stmt *stmt, int index);
int gbgv_bind_int64(sqlite3_stmt *stmt, int index, long long value);
int gbgv_bind_double(sqlite3_stmt *stmt, int index, double value);
int gbgv_bind_text(sqlite3_stmt *stmt, int index, const char *text, int bytes);
int gbgv_bind_blob(sqlite3_stmt *stmt, int index, const void *bytes, int count);
int gbgv_bind_parameter_count(sqlite3_stmt *stmt);
int gbgv_step(sqlite3_stmt *stmt);
/* sqlite3_reset, then sqlite3_clear_bindings. */
int gbgv_reset(sqlite3_stmt *stmt);
int gbgv_column_count(sqlite3_stmt *stmt);
const char *gbgv_column_name(sqlite3_stmt *stmt, int index);
/* 1 integer, 2 float, 3 text, 4 blob, 5 null (SQLite's codes). */
int gbgv_column_type(sqlite3_stmt *stmt, int index);
long long gbgv_column_int64(sqlite3_stmt *stmt, int index);
double gbgv_column_double(sqlite3_stmt *stmt, int index);
const unsigned char *gbgv_column_text(sqlite3_stmt *stmt, int index);
const void *gbgv_column_blob(sqlite3_stmt *stmt, int index);
int gbgv_column_bytes(sqlite3_stmt *stmt, int index);
int gbgv_extended_errcode(sqlite3 *db);

#endif
