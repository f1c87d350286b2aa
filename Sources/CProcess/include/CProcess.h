#ifndef GBG_VAULT_CPROCESS_H
#define GBG_VAULT_CPROCESS_H

/// Marks the process non-dumpable (no core dumps, no ptrace by same-user processes).
/// prctl is variadic, so Swift cannot call it directly. Returns 0 on success.
int cprocess_disable_dumpable(void);

/// pipe2(O_CLOEXEC): both ends close-on-exec from creation (Glibc's Swift module does
/// not export pipe2). Used by the test harness. Returns 0 on success.
int cprocess_pipe_cloexec(int fds[2]);

/// memmem(3): the first occurrence of needle in haystack, or -1. Used by the test
/// suite's leak scanner. Returns the offset.
long cprocess_find(const void *haystack, unsigned long haystack_len, const void *needle, unsigned long needle_len);

#endif
