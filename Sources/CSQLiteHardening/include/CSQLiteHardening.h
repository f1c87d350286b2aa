#ifndef GBG_VAULT_CSQLITEHARDENING_H
#define GBG_VAULT_CSQLITEHARDENING_H

/* SQLite settings that are variadic in C (sqlite3_db_config), hence this shim. */
typedef struct sqlite3 sqlite3;

/* Turns SQLITE_DBCONFIG_DEFENSIVE on and SQLITE_DBCONFIG_TRUSTED_SCHEMA off for `db`.
   Returns 0 on success, else the SQLite result code of the first failure. */
int gbgv_sqlite_harden(sqlite3 *db);

#endif
