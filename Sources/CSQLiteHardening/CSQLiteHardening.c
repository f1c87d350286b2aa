#include <stddef.h>
#include <sqlite3.h>
#include "CSQLiteHardening.h"

int gbgv_sqlite_harden(sqlite3 *db) {
    int on = -1, off = -1;
    int rc = sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, &on);
    if (rc != SQLITE_OK) return rc;
    if (on != 1) return SQLITE_ERROR;
    rc = sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, &off);
    if (rc != SQLITE_OK) return rc;
    if (off != 0) return SQLITE_ERROR;
    /* Corrupt cells are detected as they are read (FORMAT.md §1.1). */
    return sqlite3_exec(db, "PRAGMA cell_size_check = ON", NULL, NULL, NULL);
}

int gbgv_sqlite_exec_static(sqlite3 *db, const char *sql) {
    return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

const char *gbgv_sqlite_errmsg(sqlite3 *db) {
    return sqlite3_errmsg(db);
}

int gbgv_open_readonly(const char *path, int uri, int busy_timeout_ms, sqlite3 **out) {
    *out = NULL;
    int rc = sqlite3_open_v2(path, out, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX | (uri ? SQLITE_OPEN_URI : 0), NULL);
    if (rc != SQLITE_OK) return *out ? sqlite3_extended_errcode(*out) : rc;
    sqlite3_extended_result_codes(*out, 1);
    rc = gbgv_sqlite_harden(*out);
    if (rc != SQLITE_OK) return rc;
    sqlite3_db_config(*out, SQLITE_DBCONFIG_DQS_DML, 0, (void *)0);
    sqlite3_db_config(*out, SQLITE_DBCONFIG_DQS_DDL, 0, (void *)0);
    return sqlite3_busy_timeout(*out, busy_timeout_ms);
}

int gbgv_close(sqlite3 *db) { return sqlite3_close_v2(db); }
int gbgv_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **out) { return sqlite3_prepare_v3(db, sql, -1, 0, out, NULL); }
int gbgv_finalize(sqlite3_stmt *stmt) { return sqlite3_finalize(stmt); }
int gbgv_bind_null(sqlite3_stmt *stmt, int index) { return sqlite3_bind_null(stmt, index); }
int gbgv_bind_int64(sqlite3_stmt *stmt, int index, long long value) { return sqlite3_bind_int64(stmt, index, value); }
int gbgv_bind_double(sqlite3_stmt *stmt, int index, double value) { return sqlite3_bind_double(stmt, index, value); }
int gbgv_bind_text(sqlite3_stmt *stmt, int index, const char *text, int bytes) { return sqlite3_bind_text(stmt, index, text, bytes, SQLITE_TRANSIENT); }
int gbgv_bind_blob(sqlite3_stmt *stmt, int index, const void *bytes, int count) { return sqlite3_bind_blob(stmt, index, bytes, count, SQLITE_TRANSIENT); }
int gbgv_bind_parameter_count(sqlite3_stmt *stmt) { return sqlite3_bind_parameter_count(stmt); }
int gbgv_step(sqlite3_stmt *stmt) { return sqlite3_step(stmt); }
int gbgv_column_count(sqlite3_stmt *stmt) { return sqlite3_column_count(stmt); }
const char *gbgv_column_name(sqlite3_stmt *stmt, int index) { return sqlite3_column_name(stmt, index); }
int gbgv_column_type(sqlite3_stmt *stmt, int index) { return sqlite3_column_type(stmt, index); }
long long gbgv_column_int64(sqlite3_stmt *stmt, int index) { return sqlite3_column_int64(stmt, index); }
double gbgv_column_double(sqlite3_stmt *stmt, int index) { return sqlite3_column_double(stmt, index); }
const unsigned char *gbgv_column_text(sqlite3_stmt *stmt, int index) { return sqlite3_column_text(stmt, index); }
const void *gbgv_column_blob(sqlite3_stmt *stmt, int index) { return sqlite3_column_blob(stmt, index); }
int gbgv_column_bytes(sqlite3_stmt *stmt, int index) { return sqlite3_column_bytes(stmt, index); }
int gbgv_extended_errcode(sqlite3 *db) { return sqlite3_extended_errcode(db); }
int gbgv_reset(sqlite3_stmt *stmt) { int rc = sqlite3_reset(stmt); sqlite3_clear_bindings(stmt); return rc; }
