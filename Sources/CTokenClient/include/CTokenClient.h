// `vault token …` through the agent, before the Swift program starts (TokenClient.c). Linked
// into the `vault` executable only.
#ifndef GBG_VAULT_CTOKENCLIENT_H
#define GBG_VAULT_CTOKENCLIENT_H

#include <stddef.h>

/// What the constructor did, for `main`.
enum {
    /// Nothing was sent: not a token command it serves, no agent, or anything it is not sure
    /// of. `main` does everything as usual.
    VAULT_EARLY_NONE = 0,
    /// It called the agent (vault_agent_call), and the outcome was not an output answer,
    /// which it would have printed before exiting: an answer for `main` to read, or a
    /// failure, before or after sending. `main` takes it as the outcome of its own client
    /// and does not call the agent again.
    VAULT_EARLY_CALLED = 1,
};

/// What the constructor did, once (later calls give VAULT_EARLY_NONE). For VAULT_EARLY_CALLED,
/// `call` and `detail` get vault_agent_call's result and detail, `socket` the socket it
/// called, and `answer`/`length` its answer (valid until vault_early_wipe).
int vault_early_claim(int *call, long long *detail, const char **socket, const unsigned char **answer, size_t *length);

/// Wipes the kept answer.
void vault_early_wipe(void);

/// What both clients say (exit 1) when the token cannot be written to standard output for
/// any reason but a reader that went away (EPIPE, which ends the output quietly), followed
/// by strerror's text.
#define VAULT_TOKEN_WRITE_FAILURE "cannot write the token to standard output"

#endif
