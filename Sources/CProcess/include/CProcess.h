#ifndef GBG_VAULT_CPROCESS_H
#define GBG_VAULT_CPROCESS_H

#include <spawn.h>

/// Marks the process non-dumpable (no core dumps, no ptrace by same-user processes).
/// prctl is variadic, so Swift cannot call it directly. Returns 0 on success.
int cprocess_disable_dumpable(void);

/// pipe2(O_CLOEXEC): both ends close-on-exec from creation (Glibc's Swift module does
/// not export pipe2). Used by the test harness. Returns 0 on success.
int cprocess_pipe_cloexec(int fds[2]);

/// socketpair(AF_UNIX, SOCK_STREAM) with both ends close-on-exec from creation: the
/// agent's hand-over channels. Unlike a pipe, a socket cannot be opened again through
/// /proc/PID/fd/N (ENXIO), so a process of the same user cannot read what is written to
/// it by opening the agent's descriptor. Returns 0 on success.
int cprocess_socketpair_cloexec(int fds[2]);

/// memmem(3): the first occurrence of needle in haystack, or -1. Used by the test
/// suite's leak scanner. Returns the offset.
long cprocess_find(const void *haystack, unsigned long haystack_len, const void *needle, unsigned long needle_len);

/// Spawn attributes for a detached child: a new session (no controlling terminal), an
/// empty signal mask and default dispositions for TERM, INT, HUP, QUIT and PIPE, whatever
/// the spawning thread had blocked or ignored. Used by the agent launcher and the test
/// harness. Returns 0 on success.
int cprocess_spawnattr_detached(posix_spawnattr_t *attributes);


/// Closes every descriptor from `first` on in the child (glibc's closefrom action).
int cprocess_file_actions_close_from(posix_spawn_file_actions_t *actions, int first);

/// Starts `file` (searched in PATH, as execvp does) with `argv` and `envp` in a child that the
/// kernel kills (SIGKILL) when this process ends in any way, a SIGKILL of vault included
/// (PR_SET_PDEATHSIG, set before the program runs; a parent already gone by then ends the
/// child at once): `vault exec --serve/--proxy`'s command never outlives the endpoint whose
/// port another user could then take. SIGTERM, SIGINT, SIGHUP, SIGQUIT and SIGPIPE at their
/// defaults, no signal blocked, no descriptor above 2. The kernel's signal follows the thread
/// that forked, so a thread of its own forks and then lives as long as the process. Returns
/// the child's pid, or -1 with errno (the program could not be run).
pid_t cprocess_spawn_tied(const char *file, char *const argv[], char *const envp[]);

/// Notes which descriptors from 3 to 1023 are open now (listed in /proc/self/fd): those the
/// caller gave this process. Called once, first thing in `main`.
void cprocess_remember_inherited_descriptors(void);

/// Marks close-on-exec every open descriptor from 3 on that was not open when
/// ``cprocess_remember_inherited_descriptors`` ran, so that the program this process execs
/// next gets what its caller gave (stdio, a systemd socket, a `3<file`) and nothing this
/// process opened (SwiftNIO's epoll and event descriptors, the vault's database). Returns 0
/// on success.
int cprocess_cloexec_own_descriptors(void);

#endif
