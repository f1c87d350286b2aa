// The client side of the agent protocol (PROTOCOL.md), written once, in C: where an agent's
// socket is, whom a client may talk to, the request's bytes, and one round trip. `vault`'s
// client before `main` (Sources/CTokenClient) and its Swift commands (VaultCore's
// AgentClient) both call these functions, and VaultCore's agent names and checks its own
// socket with them, so every rule and default below exists in exactly one place.
//
// This target has no constructor and no global state: a program that links the VaultCore
// library gets these functions and nothing that runs by itself.
#ifndef GBG_VAULT_CAGENT_H
#define GBG_VAULT_CAGENT_H

#include <stddef.h>

/// The protocol version every request carries and every answer repeats.
#define VAULT_AGENT_PROTOCOL_VERSION 2
/// The largest frame either side accepts, in bytes (the 4-byte length prefix not counted).
#define VAULT_AGENT_MAXIMUM_FRAME 65536
/// A request must arrive whole within this many seconds of the connection being accepted.
#define VAULT_AGENT_REQUEST_SECONDS 5
/// `--timeout`'s default: the overall deadline of one token exchange, in seconds.
#define VAULT_TOKEN_TIMEOUT_SECONDS 30
/// A token client waits for the agent's answer the exchange's deadline plus this long
/// (the agent's transaction and audit record).
#define VAULT_AGENT_ANSWER_MARGIN_SECONDS 15
/// What the other operations wait for an answer.
#define VAULT_AGENT_OTHER_WAIT_SECONDS 10

/// The operations (request field `op`).
enum {
    VAULT_AGENT_OP_STATUS = 1,
    VAULT_AGENT_OP_LOCK = 2,
    VAULT_AGENT_OP_VERIFY = 3,
    VAULT_AGENT_OP_AUDIT_VERIFY = 4,
    VAULT_AGENT_OP_TOKEN = 5,
    VAULT_AGENT_OP_PROXY_REQUESTS = 6,
};

/// The audit action of a token request.
enum {
    VAULT_AGENT_ACTION_TOKEN = 0,
    VAULT_AGENT_ACTION_EXEC = 1,
    VAULT_AGENT_ACTION_SERVE = 2,
    VAULT_AGENT_ACTION_PROXY = 3,
};

/// One request. Strings are UTF-8; NULL (or a negative number) is "not given", and the
/// agent then applies its own default. Only `op` is read for the operations other than token.
typedef struct vault_agent_request {
    int op;
    const char *profile;
    /// The environment to use instead of the profile's.
    const char *environment;
    /// 1: the answer is the output to print, in `format` (`raw`, `json`, `header` or `env`;
    /// NULL: the agent's default). 0: the answer is the token as a JSON object (for `exec`).
    int print;
    const char *format;
    int action;
    int fresh;
    long long min_ttl;
    long long timeout_ms;
    long long connect_timeout_ms;
    /// `--cacert`; NULL: `VAULT_CA_BUNDLE` from the environment, if set and not empty.
    const char *ca_bundle;
    /// Who asked `vault serve` or `vault proxy` for the token (the record's `caller=`); NULL: not given.
    const char *caller;
    /// proxy-requests: the summary of a stretch of `vault proxy`'s request log, as its
    /// record's `detail` (the agent reads it back strictly); with `profile` and `environment`.
    const char *summary;
} vault_agent_request;

/// Writes `request` as the JSON object of a frame (without its length prefix), with the
/// caller's network settings read from `envp` (a token request only). Returns its length,
/// or -1 when it does not fit in `capacity` or a string is not valid UTF-8.
long vault_agent_write_request(const vault_agent_request *request, char *const *envp, char *out, size_t capacity);

/// Writes the network settings object alone (`{"ca_bundle":…,"proxy":{…}}`), as a token
/// request carries them: the agent makes its own with it at start, to compare. Returns its
/// length, or -1.
long vault_agent_write_network(const char *ca_bundle, char *const *envp, char *out, size_t capacity);

/// `${XDG_DATA_HOME:-$HOME/.local/share}/gbg-vault` (HOME, else the password database's
/// home directory). Returns 1, or 0 when no directory can be named or it does not fit.
int vault_data_directory(char *const *envp, char *out, size_t capacity);

/// The vault `vault` uses without `--vault`: `$VAULT_PATH` (not empty), else the config
/// file's `vault` key, else `vault_data_directory()/vault.db`. Returns 1, or 0 (also when
/// the config file exists but is not used: `main` then says why).
int vault_default_vault_path(char *const *envp, char *out, size_t capacity);

/// The config file: `$XDG_CONFIG_HOME/gbg-vault/config`, else
/// `$HOME/.config/gbg-vault/config` (HOME, else the password database's home directory).
/// Returns 1, or 0 when no path can be named.
int vault_config_path(char *const *envp, char *out, size_t capacity);

/// Called for each line of the config file that is neither blank nor a `#` comment: its
/// number (from 1), the key and the value, each trimmed of spaces and tabs (and, at its end,
/// of carriage returns, so that CRLF files read the same); `value` is NULL
/// on a line without `=`.
typedef void (*vault_config_visitor)(int line, const char *key, const char *value, void *context);

/// Reads the config file (`key = value` lines). Returns 0 when there is none, 1 when it was
/// read (each line given to `visit`, which may be NULL), or -1 when it exists but is not
/// used, with the reason in `why`: not a regular file, owned by another user, writable by
/// group or others (someone else could choose your vault), unreadable, larger than 64 KiB.
int vault_config_read(char *const *envp, vault_config_visitor visit, void *context, char *why, size_t why_capacity);

/// Whether `vault` names a PostgreSQL team vault (`postgres://` or `postgresql://`).
int vault_is_postgres_url(const char *vault);

/// The agent directory: `$XDG_RUNTIME_DIR/gbg-vault` when XDG_RUNTIME_DIR is an absolute
/// path, else `/tmp/gbg-vault-<uid>`. Returns 1, or 0 when it does not fit.
int vault_agent_directory(char *const *envp, char *out, size_t capacity);

/// The socket of the agent of a vault file, by the device and inode of the file it opened:
/// `<directory>/agent-file-<dev>-<ino>.sock` (decimal). Returns 1, or 0.
int vault_agent_socket_for_file(unsigned long long device, unsigned long long inode, char *const *envp, char *out, size_t capacity);

/// The socket of the agent of a team vault, by its location identity (VaultCore's
/// PostgresLocation.identity): `<directory>/agent-pg-<h>.sock`, `<h>` the BLAKE2b-128 of the
/// identity in lowercase hex. Returns 1, or 0.
int vault_agent_socket_for_store(const char *identity, char *const *envp, char *out, size_t capacity);

/// A second name for a team vault's agent, by the URL exactly as `vault unlock` was given it
/// and the PGUSER and PGPORT it ran with (the parts of the environment a URL's meaning
/// depends on): `<directory>/agent-url-<h>`, `<h>` the BLAKE2b-128, in lowercase hex, of
/// the URL, a newline, PGUSER, a newline, PGPORT. The agent makes it a symbolic link to its
/// socket's name, so that a client that has only the same URL finds the agent without
/// parsing it. Returns 1, or 0.
int vault_agent_url_link(const char *url, char *const *envp, char *out, size_t capacity);

/// The socket of the agent that would serve `vault` (a path or a URL) without parsing it:
/// for a file, by `stat` (a regular file; the device and inode); for a URL, through its
/// link (`vault_agent_url_link`), whose target must be an `agent-pg-<32 hex digits>.sock`
/// name in the same directory. Returns 1 with the path in `out`, or 0 (no such file, no
/// link, a link of another shape): the caller then knows no agent this way.
int vault_agent_locate(const char *vault, char *const *envp, char *out, size_t capacity);

/// What `vault_agent_check_directory` found.
enum {
    VAULT_DIRECTORY_OK = 0,
    /// It does not exist (and `create` was 0).
    VAULT_DIRECTORY_MISSING = 1,
    /// Something other than a directory is there (a symbolic link, a file).
    VAULT_DIRECTORY_NOT_A_DIRECTORY = 2,
    /// Another user owns it.
    VAULT_DIRECTORY_NOT_OWNED = 3,
    /// Its group or other permission bits are not all clear.
    VAULT_DIRECTORY_OPEN_MODE = 4,
    /// `create` was 1 and mkdir failed for a reason other than its existing.
    VAULT_DIRECTORY_CANNOT_CREATE = 5,
};

/// Checks the agent directory with `lstat` (no symbolic link is followed): a directory
/// owned by this user with no group or other permission bits. With `create`, first makes
/// it with mode 0700 if it is missing (mkdir never follows a link in place of it; the
/// directory above it is never created). Returns a VAULT_DIRECTORY_ value.
int vault_agent_check_directory(const char *directory, int create);

/// After how long a wait for the agent's answer `vault_agent_call` shows a waiting line at a
/// terminal; `vault`'s own notice, while it waits for a token endpoint, uses it too.
#define VAULT_WAITING_NOTICE_MS 2000

/// What `vault_agent_call` found.
enum {
    /// A whole answer is in the buffer.
    VAULT_AGENT_ANSWERED = 0,
    /// No agent: no directory or no socket. Nothing was sent.
    VAULT_AGENT_ABSENT = 1,
    /// A socket nobody listens on (its agent was killed): it was removed, with the links
    /// that named it. Nothing was sent.
    VAULT_AGENT_STALE = 2,
    /// The directory is not this user's private directory (see vault_agent_check_directory;
    /// the code is in `detail`). Nothing was sent.
    VAULT_AGENT_UNTRUSTED_DIRECTORY = 3,
    /// The socket is not a socket of this user's, or the process that answered runs as
    /// another user (its uid is in `detail`). Nothing was sent.
    VAULT_AGENT_UNTRUSTED_PEER = 4,
    /// The connection could not be made (errno in `detail`). Nothing was sent.
    VAULT_AGENT_UNREACHABLE = 5,
    /// The request went out and no whole answer came within the wait.
    VAULT_AGENT_TIMED_OUT = 6,
    /// The request went out (or was being written) and the connection closed or failed
    /// before a whole answer.
    VAULT_AGENT_CLOSED = 7,
    /// The agent announced an answer larger than VAULT_AGENT_MAXIMUM_FRAME.
    VAULT_AGENT_TOO_LARGE = 8,
};

/// One round trip with the agent at `socket_path`: checks its directory, connects, checks
/// that the peer's uid (SO_PEERCRED) is this user's, writes the request as one frame and
/// reads one answer frame into `answer` (its length prefix removed), all within `wait_ms`.
/// `capacity` must be at least VAULT_AGENT_MAXIMUM_FRAME. Returns a VAULT_AGENT_ value;
/// `detail` (may be NULL) gets the directory check's code, the peer's uid or an errno.
int vault_agent_call(const char *socket_path, const char *request, size_t length, long long wait_ms,
                     unsigned char *answer, size_t capacity, size_t *answer_length, long long *detail);

/// The kinds of answer (an answer frame's first byte).
enum {
    /// The rest is one JSON object.
    VAULT_AGENT_ANSWER_JSON = 'J',
    /// The rest is the output of a token request that named a format, to be written to
    /// standard output as it is.
    VAULT_AGENT_ANSWER_OUTPUT = 'O',
};

#endif
