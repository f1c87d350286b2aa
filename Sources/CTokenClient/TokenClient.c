// `vault token …` through the agent, done by a constructor before the Swift program starts.
//
// A session's everyday call, `vault token NAME` while an agent serves the vault, needs the
// Swift program for nothing: find the agent's socket, send one request, print the answer.
// Yet every start of the Swift program costs ~0.4 ms of static initialisers (the runtime,
// libdispatch, Foundation, ICU) and argument-parser's set-up, more than the rest of the call
// (BENCHMARKS.md). So the constructor below reads the token command in every spelling the
// full command accepts — the global options before the command word, options before or
// after the name, `--opt value` and `--opt=value`, the vault from `--vault`, VAULT_PATH, the
// config file or the default path (CAgent's vault_default_vault_path) — sends the agent the request that the full command would send (written
// by the same function, CAgent's vault_agent_write_request), and writes the agent's answer
// to standard output. As ssh does beside ssh-agent, it is a small client without the big
// program, and it serves only what the agent serves.
//
// Whatever it is not sure of, it leaves to `main`, before sending anything: another command,
// an option it does not know, `--help`, `--`, a repeated option, a value it cannot read, a
// value that starts with `-`, `--no-agent`, `--verbose`, VAULT_NO_AGENT or VAULT_VERBOSE set,
// a closed stdin, stdout or stderr (the socket would take its number), and every vault whose
// agent it cannot find without parsing (CAgent's vault_agent_locate). Once it has called the
// agent, it hands every outcome but an output answer to `main`, which takes it as the answer
// of its own client (the same messages, hints and exit codes) and does not ask again.
//
// The option names below are those of `vault token` (Sources/vault/Commands/Token.swift and
// the option groups it uses); the end-to-end suite runs the binary with every spelling, with
// and without this client, against a recording agent and compares the requests.
#define _GNU_SOURCE
#include "CTokenClient.h"
#include "CAgent.h"

#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

static int early_status = VAULT_EARLY_NONE;
static int early_call = VAULT_AGENT_ABSENT;
static long long early_detail = 0;
static char early_socket[PATH_MAX];
static unsigned char early_answer[VAULT_AGENT_MAXIMUM_FRAME];
static size_t early_answer_length = 0;

// The options of `vault token`; `global` ones may also come before the command word.
static const struct {
    const char *name;
    int takes_value;
    int global;
} token_options[] = {
    { "--vault", 1, 1 }, { "--passphrase-file", 1, 1 }, { "--identity", 1, 0 }, { "--env", 1, 0 }, { "--format", 1, 0 },
    { "--min-ttl", 1, 0 }, { "--timeout", 1, 0 }, { "--connect-timeout", 1, 0 }, { "--cacert", 1, 0 }, { "--fresh", 0, 0 },
};
enum { OPTION_COUNT = sizeof token_options / sizeof token_options[0] };

struct parsed {
    const char *values[OPTION_COUNT];
    int given[OPTION_COUNT];
    const char *profile;
};

static int option_index(const char *name, size_t length) {
    for (int i = 0; i < OPTION_COUNT; i++) {
        if (strlen(token_options[i].name) == length && strncmp(token_options[i].name, name, length) == 0) return i;
    }
    return -1;
}

// Reads the option at argv[*at] (a word starting with `--`); 0 to stand aside.
static int read_option(int argc, char *const *argv, int *at, int global_only, struct parsed *parsed) {
    const char *word = argv[*at];
    const char *equals = strchr(word, '=');
    int index = option_index(word, equals != NULL ? (size_t)(equals - word) : strlen(word));
    if (index < 0 || parsed->given[index] || (global_only && !token_options[index].global)) return 0;
    parsed->given[index] = 1;
    *at += 1;
    if (!token_options[index].takes_value) return equals == NULL;
    const char *value = equals != NULL ? equals + 1 : (*at < argc ? argv[(*at)++] : NULL);
    if (value == NULL || value[0] == '\0' || value[0] == '-') return 0;
    parsed->values[index] = value;
    return 1;
}

static int parse(int argc, char *const *argv, struct parsed *parsed) {
    memset(parsed, 0, sizeof *parsed);
    if (argc < 3 || argv == NULL) return 0;
    int at = 1;
    while (at < argc && strcmp(argv[at], "token") != 0) {
        if (strncmp(argv[at], "--", 2) != 0 || !read_option(argc, argv, &at, 1, parsed)) return 0;
    }
    if (at >= argc) return 0;
    at++;
    while (at < argc) {
        const char *word = argv[at];
        if (word[0] == '-') {
            if (word[1] != '-' || word[2] == '\0' || !read_option(argc, argv, &at, 0, parsed)) return 0;
        } else {
            if (parsed->profile != NULL || word[0] == '\0') return 0;
            parsed->profile = word;
            at++;
        }
    }
    return parsed->profile != NULL;
}

// Digits, optionally a point and more digits: what both this client and the full parser
// read the same way.
static int decimal(const char *text) {
    const char *p = text;
    while (*p >= '0' && *p <= '9') p++;
    if (p == text) return 0;
    if (*p == '.') {
        const char *fraction = ++p;
        while (*p >= '0' && *p <= '9') p++;
        if (p == fraction) return 0;
    }
    return *p == '\0' && p - text <= 12;
}

static const char *value_of(const struct parsed *parsed, const char *name) {
    int index = option_index(name, strlen(name));
    return parsed->given[index] ? parsed->values[index] : NULL;
}

// The request and its socket for (argc, argv, envp); 0 to stand aside.
static long prepare(int argc, char *const *argv, char *const *envp, char *socket, size_t socket_capacity,
                    char *out, size_t capacity, long long *wait_ms) {
    struct parsed parsed;
    if (!parse(argc, argv, &parsed)) return -1;
    for (char *const *entry = envp; entry != NULL && *entry != NULL; entry++) {
        // Either of these, whatever its value, leaves the decision to vault itself.
        if ((strncmp(*entry, "VAULT_NO_AGENT=", 15) == 0 && (*entry)[15] != '\0')
            || (strncmp(*entry, "VAULT_VERBOSE=", 14) == 0 && (*entry)[14] != '\0')) return -1;
    }
    vault_agent_request request;
    memset(&request, 0, sizeof request);
    request.op = VAULT_AGENT_OP_TOKEN;
    request.profile = parsed.profile;
    request.environment = value_of(&parsed, "--env");
    request.format = value_of(&parsed, "--format");
    request.print = 1;
    request.action = VAULT_AGENT_ACTION_TOKEN;
    request.fresh = parsed.given[option_index("--fresh", 7)];
    request.ca_bundle = value_of(&parsed, "--cacert");
    request.min_ttl = request.timeout_ms = request.connect_timeout_ms = -1;
    const char *text = value_of(&parsed, "--min-ttl");
    if (text != NULL) {
        const char *p = text;
        while (*p >= '0' && *p <= '9') p++;
        if (*p != '\0' || p - text > 12) return -1;
        request.min_ttl = strtoll(text, NULL, 10);
    }
    long long timeout_ms = (long long)VAULT_TOKEN_TIMEOUT_SECONDS * 1000;
    if ((text = value_of(&parsed, "--timeout")) != NULL) {
        if (!decimal(text)) return -1;
        request.timeout_ms = timeout_ms = (long long)(strtod(text, NULL) * 1000);
    }
    if ((text = value_of(&parsed, "--connect-timeout")) != NULL) {
        if (!decimal(text)) return -1;
        request.connect_timeout_ms = (long long)(strtod(text, NULL) * 1000);
    }
    *wait_ms = timeout_ms + (long long)VAULT_AGENT_ANSWER_MARGIN_SECONDS * 1000;

    char vault[PATH_MAX];
    const char *explicit_vault = value_of(&parsed, "--vault");
    if (explicit_vault != NULL) {
        if (strlen(explicit_vault) >= sizeof vault) return -1;
        strcpy(vault, explicit_vault);
    } else if (!vault_default_vault_path(envp, vault, sizeof vault)) {
        return -1;
    }
    if (!vault_agent_locate(vault, envp, socket, socket_capacity)) return -1;
    return vault_agent_write_request(&request, envp, out, capacity);
}

__attribute__((constructor(101))) static void vault_token_client(int argc, char **argv, char **envp) {
    // Every `vault` process is made non-dumpable first, before anything else of it runs
    // (`main` does it again): the moment in which a process of the same user may open its
    // descriptors or memory is as short as the loader makes it (the agent receives its key
    // right after it starts).
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    if (argc < 3) return;
    char request[16 * 1024];
    long long wait_ms = 0;
    long length = prepare(argc, argv, envp, early_socket, sizeof early_socket, request, sizeof request, &wait_ms);
    if (length < 0) return;
    // Started with stdin, stdout or stderr closed, the socket would take that descriptor.
    for (int fd = 0; fd <= 2; fd++) {
        if (fcntl(fd, F_GETFD) < 0) return;
    }
    // Hardened before the answer can arrive, as `main` does (ProcessHardening; the process
    // is non-dumpable since the first line): the soft core limit is put back if `main`
    // takes over, which lowers it again and keeps the original for the command `exec` runs.
    struct rlimit original_core, no_core;
    int have_core = getrlimit(RLIMIT_CORE, &original_core) == 0;
    if (have_core) {
        no_core = original_core;
        no_core.rlim_cur = 0;
        setrlimit(RLIMIT_CORE, &no_core);
    }
    struct sigaction ignore, original_pipe;
    memset(&ignore, 0, sizeof ignore);
    ignore.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &ignore, &original_pipe);

    early_call = vault_agent_call(early_socket, request, (size_t)length, wait_ms, early_answer, sizeof early_answer,
                                  &early_answer_length, &early_detail);
    explicit_bzero(request, sizeof request);
    if (early_call == VAULT_AGENT_ANSWERED && early_answer_length > 0 && early_answer[0] == VAULT_AGENT_ANSWER_OUTPUT) {
        // The output, as the agent wrote it, then the copy is wiped. A closed pipe ends it
        // quietly, as `main`'s output does; any other failed write (a full disk, a closed
        // descriptor) is a failure, as in `main` (Output.expectWritten).
        size_t offset = 1;
        int failed = 0;
        while (offset < early_answer_length) {
            ssize_t written = write(1, early_answer + offset, early_answer_length - offset);
            if (written < 0) {
                if (errno == EINTR) continue;
                failed = errno;
                break;
            }
            offset += (size_t)written;
        }
        explicit_bzero(early_answer, sizeof early_answer);
        if (failed != 0 && failed != EPIPE) {
            char message[200];
            int n = snprintf(message, sizeof message, "vault: error: " VAULT_TOKEN_WRITE_FAILURE ": %s\n", strerror(failed));
            if (n > 0) (void)!write(2, message, (size_t)n < sizeof message ? (size_t)n : sizeof message - 1);
            _exit(1);
        }
        _exit(0);
    }
    early_status = VAULT_EARLY_CALLED;
    if (have_core) setrlimit(RLIMIT_CORE, &original_core);
    sigaction(SIGPIPE, &original_pipe, NULL);
}

int vault_early_claim(int *call, long long *detail, const char **socket, const unsigned char **answer, size_t *length) {
    int status = early_status;
    early_status = VAULT_EARLY_NONE;
    *call = early_call;
    *detail = early_detail;
    *socket = early_socket;
    *answer = early_answer;
    *length = early_answer_length;
    return status;
}

void vault_early_wipe(void) {
    explicit_bzero(early_answer, sizeof early_answer);
    early_answer_length = 0;
}
