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
    return SQLITE_OK;
}
