#ifndef GBG_VAULT_CPROCESS_H
#define GBG_VAULT_CPROCESS_H

#include <spawn.h>

/// Marks the process non-dumpable (no core dumps, no ptrace by same-user processes).
/// prctl is variadic, so Swift cannot call it directly. Returns 0 on success.
int cprocess_disable_dumpable(void);

/// pipe2(O_CLOEXEC): both ends close-on-exec from creation (Glibc's Swift module does
/// not export pipe2). Used by the test harness. Returns 0 on success.
int cprocess_pipe_cloexec(int fds[2]);

/// memmem(3): the first occurrence of needle in haystack, or -1. Used by the test
/// suite's leak scanner. Returns the offset.
long cprocess_find(const void *haystack, unsigned long haystack_len, const void *needle, unsigned long needle_len);

/// Spawn attributes for a detached child: a new session (no controlling terminal), an
/// empty signal mask and default dispositions for TERM, INT, HUP, QUIT and PIPE, whatever
/// the spawning thread had blocked or ignored. Used by the agent launcher and the test
/// harness. Returns 0 on success.
int cprocess_spawnattr_detached(posix_spawnattr_t *attributes);

/// `vault token NAME` served by a constructor before `main` (EarlyToken.c). What it did:
enum {
    /// Nothing sent: not this shape, no agent, or a failure before the request was written.
    CPROCESS_EARLY_NONE = 0,
    /// A bare token answer (printed by the constructor itself, which then exits).
    CPROCESS_EARLY_BARE_TOKEN = 1,
    /// A JSON answer (an error, `ending`, `other_file`, an older agent's token), for `main`.
    CPROCESS_EARLY_ANSWER = 2,
    /// Sent, then no answer within the token client's wait.
    CPROCESS_EARLY_TIMEOUT = 3,
    /// Sent, then the connection closed (or failed) before a whole answer.
    CPROCESS_EARLY_CLOSED = 4,
    /// Sent, then the agent announced a frame larger than the protocol's limit.
    CPROCESS_EARLY_TOO_LARGE = 5,
    /// Sent, then a bare answer that is not an RFC 6750 b64token.
    CPROCESS_EARLY_MALFORMED = 6,
};

/// What the constructor did, once (later calls give CPROCESS_EARLY_NONE), and the answer's
/// bytes for CPROCESS_EARLY_ANSWER (valid until cprocess_early_token_wipe).
int cprocess_early_token_claim(const unsigned char **answer, unsigned long *length);

/// Wipes the answer buffer.
void cprocess_early_token_wipe(void);

/// The constructor's work for (argc, argv, envp), without printing or exiting: the status,
/// with the answer (for ANSWER and BARE_TOKEN) readable through cprocess_early_token_claim's
/// buffer. Exposed for the tests.
int cprocess_early_token_exchange(int argc, char *const *argv, char *const *envp);

/// The request body (JSON, no length prefix) the constructor sends for `profile`, with the
/// proxy and CA variables of `envp`, stamped with a team vault's location identity `store`,
/// or (`store` NULL) with the vault file's device and inode; its length, or -1 when it does
/// not fit or a value is not plain text. Exposed for the tests.
int cprocess_early_token_request(const char *profile, const char *store, unsigned long long device,
                                 unsigned long long inode, char *const *envp, char *out, unsigned long capacity);

/// A team vault URL's location identity (PostgresLocation.identity), for the plainest
/// spelling of the URL only (see EarlyToken.c); its length, or -1 for any other URL (the
/// constructor then stands aside). Exposed for the tests.
int cprocess_early_token_store_identity(const char *url, char *const *envp, char *out, unsigned long capacity);

#endif
