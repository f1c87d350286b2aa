#ifndef GBG_VAULT_CPROCESS_H
#define GBG_VAULT_CPROCESS_H

/// Marks the process non-dumpable (no core dumps, no ptrace by same-user processes).
/// prctl is variadic, so Swift cannot call it directly. Returns 0 on success.
int cprocess_disable_dumpable(void);

#endif
