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

/* One prepared statement, one row, one column; SQLITE_ROW's value handed to `take`. */
static int first_value(sqlite3 *db, const char *sql, sqlite3_stmt **out) {
    int rc = sqlite3_prepare_v2(db, sql, -1, out, NULL);
    if (rc != SQLITE_OK) return rc;
    rc = sqlite3_step(*out);
    return rc == SQLITE_ROW ? SQLITE_OK : (rc == SQLITE_DONE ? SQLITE_NOTFOUND : rc);
}

int gbgv_read_vault_id(const char *path, int application_id, unsigned char *out, int capacity) {
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    int result = GBGV_LOOKUP_CANNOT_OPEN;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOFOLLOW, NULL) != SQLITE_OK) goto done;
    if (gbgv_sqlite_harden(db) != SQLITE_OK) goto done;
    sqlite3_busy_timeout(db, 5000);
    /* An unreadable file (no -shm on a read-only or full file system, a lock) stays
       GBGV_LOOKUP_CANNOT_OPEN: the full open reports the real reason. */
    if (first_value(db, "PRAGMA application_id", &stmt) != SQLITE_OK) goto done;
    result = GBGV_LOOKUP_NOT_A_VAULT;
    if (sqlite3_column_int(stmt, 0) != application_id) goto done;
    sqlite3_finalize(stmt);
    stmt = NULL;
    result = GBGV_LOOKUP_NO_HEADER;
    if (first_value(db, "SELECT vault_id FROM vault_header WHERE id = 1", &stmt) != SQLITE_OK) goto done;
    if (sqlite3_column_type(stmt, 0) != SQLITE_BLOB) goto done;
    int length = sqlite3_column_bytes(stmt, 0);
    const unsigned char *bytes = sqlite3_column_blob(stmt, 0);
    if (length != capacity || bytes == NULL) goto done;
    for (int i = 0; i < length; i++) out[i] = bytes[i];
    result = GBGV_LOOKUP_OK;
done:
    if (stmt) sqlite3_finalize(stmt);
    if (db) sqlite3_close_v2(db);
    return result;
}
