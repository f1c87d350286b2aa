// `vault token NAME` through the agent, done by a constructor before the Swift program starts.
//
// The everyday call of a session, `vault token NAME` while an agent serves the vault, needs
// the Swift program for nothing: find the agent's socket, send one request, print the token
// it answers. Yet after the loader, every process of this binary spends ~0.4 ms on the
// static initialisers of the Swift runtime, libdispatch, CoreFoundation, ICU and libstdc++,
// and on `main`'s first Swift work (arguments, metadata), before it reaches the socket
// (measured: BENCHMARKS.md, "Fast start, sixth pass"). So this one shape is served here,
// in C, from the first constructor of the executable, and the process ends before any of
// that runs. Everything else, and every case this code is not sure of, goes on to `main`
// exactly as before:
//
// - Only `vault token NAME` (argc 3, NAME not starting with `-`), with neither
//   VAULT_NO_AGENT nor VAULT_VERBOSE set to anything, and a vault known from VAULT_PATH,
//   XDG_DATA_HOME or HOME: a regular file whose agent link (by the file's device and inode)
//   names a socket, or a team vault URL in its plainest spelling, whose socket is named by
//   the BLAKE2b of its location identity (libsodium) — the lookups of vault's own client
//   (`AgentSession.target`), where they need no SQLite and no URL parser. The socket must be
//   this user's. Text it would write differently from the Swift client (control characters,
//   invalid UTF-8) makes it stand aside too.
// - Nothing is sent unless all of that holds; until the request is written whole, any
//   failure leaves no trace (no socket is removed: vault's client does that, with its hint).
// - The request is what `AgentTokenAsk(vaultPath:profile:).request(action: "token")` builds,
//   stamped with the file's device and inode (or the team vault's `store`), plus
//   `"reply":"bare"`: a successful answer is then the token's bytes alone, not JSON
//   (PROTOCOL.md). Tests decode both requests and compare them under every proxy and CA
//   variable, and compare the identities with PostgresLocation's on 40,000 URLs.
// - Before the answer can arrive, the process is hardened as `main` does it (no core dumps,
//   not dumpable, SIGPIPE ignored). A bare answer of RFC 6750 b64token characters is
//   written to stdout with a newline in one write loop (as `Output.stdout(secret:)`: a
//   closed pipe ends it quietly), the copy wiped, and the process exits 0.
// - Any other answer (an error, `ending`, `other_file`, a JSON token from an older agent)
//   and any failure after the request went out (no answer in time, a closed connection, a
//   frame too large, a bare answer that is not a b64token) is handed to `main`
//   (`FastPath.earlyToken`), which takes it exactly as an answer to its own client: the
//   token printed, an error and its exit code, or a one-line hint and the usual way (which,
//   for a broken answer, asks the agent once more, as vault's client always has).
//
// Only libc (and libsodium's BLAKE2b) runs here: no allocation, nothing printed but the token.
#include "CProcess.h"

#include <sodium.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

// The agent protocol's limit (AgentProtocol.maximumFrame) and the token client's wait for an
// answer (AgentTokenAsk.answerTimeout: the exchange's 30 s and 15 s for the agent).
#define EARLY_MAXIMUM_FRAME (64 * 1024)
#define EARLY_ANSWER_TIMEOUT_MS 45000

static int early_status = CPROCESS_EARLY_NONE;
static unsigned char early_answer[EARLY_MAXIMUM_FRAME + 4];
static unsigned long early_answer_length = 0;

// The value of `name` in `envp` as getenv(3) finds it (the first entry); NULL when unset.
static const char *env_raw(char *const *envp, const char *name) {
    if (envp == 0) return 0;
    size_t length = strlen(name);
    for (char *const *entry = envp; *entry != 0; entry++) {
        if (strncmp(*entry, name, length) == 0 && (*entry)[length] == '=') return *entry + length + 1;
    }
    return 0;
}

// As LocalEnvironment.value: NULL when unset or empty.
static const char *env_value(char *const *envp, const char *name) {
    const char *value = env_raw(envp, name);
    return (value == 0 || value[0] == '\0') ? 0 : value;
}

// Well-formed UTF-8 (no overlong forms, surrogates or code points above U+10FFFF) without
// control characters: text Swift's String reads back byte for byte, and JSON needs no
// escapes for but `"` and `\`.
static int plain_text(const char *text) {
    const unsigned char *p = (const unsigned char *)text;
    while (*p != 0) {
        unsigned char c = p[0];
        if (c < 0x20) return 0;
        if (c < 0x80) { p += 1; continue; }
        int extra;
        uint32_t point;
        if (c >= 0xC2 && c <= 0xDF) { extra = 1; point = c & 0x1F; }
        else if (c >= 0xE0 && c <= 0xEF) { extra = 2; point = c & 0x0F; }
        else if (c >= 0xF0 && c <= 0xF4) { extra = 3; point = c & 0x07; }
        else return 0;
        for (int i = 1; i <= extra; i++) {
            if ((p[i] & 0xC0) != 0x80) return 0;
            point = (point << 6) | (p[i] & 0x3F);
        }
        if ((extra == 2 && point < 0x800) || (extra == 3 && (point < 0x10000 || point > 0x10FFFF))) return 0;
        if (point >= 0xD800 && point <= 0xDFFF) return 0;
        p += 1 + extra;
    }
    return 1;
}

struct writer {
    char *bytes;
    size_t length;
    size_t capacity;
    int failed;
};

static void put(struct writer *w, const char *bytes, size_t count) {
    if (w->failed || count > w->capacity - w->length) { w->failed = 1; return; }
    memcpy(w->bytes + w->length, bytes, count);
    w->length += count;
}

static void put_text(struct writer *w, const char *text) { put(w, text, strlen(text)); }

static void put_string(struct writer *w, const char *text) {
    if (!plain_text(text)) { w->failed = 1; return; }
    put(w, "\"", 1);
    for (const char *p = text; *p != 0; p++) {
        if (*p == '"' || *p == '\\') put(w, "\\", 1);
        put(w, p, 1);
    }
    put(w, "\"", 1);
}

static void put_unsigned(struct writer *w, unsigned long long value) {
    char digits[24];
    int count = snprintf(digits, sizeof digits, "%llu", value);
    put(w, digits, (size_t)count);
}

int cprocess_early_token_request(const char *profile, const char *store, unsigned long long device,
                                 unsigned long long inode, char *const *envp, char *out, unsigned long capacity) {
    struct writer w = { out, 0, capacity, 0 };
    // AgentTokenAsk's defaults: not fresh, min TTL 300 s, timeouts 30 s and 10 s.
    put_text(&w, "{\"version\":1,\"op\":\"token\",\"profile\":");
    put_string(&w, profile);
    put_text(&w, ",\"fresh\":false,\"min_ttl\":300,\"action\":\"token\",\"timeout_ms\":30000,\"connect_timeout_ms\":10000");
    const char *bundle = env_value(envp, "VAULT_CA_BUNDLE");
    if (bundle != 0) {
        put_text(&w, ",\"ca_bundle\":");
        put_string(&w, bundle);
    }
    // AgentRequest.setNetwork: each spelling that is set, even to "".
    put_text(&w, ",\"proxy_environment\":{");
    static const char *const proxies[] = {
        "https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY",
    };
    int first = 1;
    for (size_t i = 0; i < sizeof proxies / sizeof proxies[0]; i++) {
        const char *value = env_raw(envp, proxies[i]);
        if (value == 0) continue;
        if (!first) put(&w, ",", 1);
        first = 0;
        put_string(&w, proxies[i]);
        put(&w, ":", 1);
        put_string(&w, value);
    }
    put_text(&w, "}");
    if (store != 0) {
        put_text(&w, ",\"store\":");
        put_string(&w, store);
    } else {
        put_text(&w, ",\"file_dev\":");
        put_unsigned(&w, device);
        put_text(&w, ",\"file_ino\":");
        put_unsigned(&w, inode);
    }
    put_text(&w, ",\"reply\":\"bare\"}");
    return w.failed ? -1 : (int)w.length;
}

// Bytes of `text` from `start` while `allowed` holds; their count.
static size_t span(const char *text, int (*allowed)(char)) {
    size_t count = 0;
    while (text[count] != '\0' && allowed(text[count])) count++;
    return count;
}

static int url_word(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
}
static int host_byte(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-'; }
static int digit(char c) { return c >= '0' && c <= '9'; }
static int schema_byte(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'; }
static int path_byte(char c) { return url_word(c) || c == '/'; }

int cprocess_early_token_store_identity(const char *url, char *const *envp, char *out, unsigned long capacity) {
    // Only the plainest spelling of PostgresLocation's URL, where its parse is plainly this:
    // `postgres[ql]://USER@HOST[:PORT]/DATABASE[?sslmode=…&sslrootcert=…&schema=…]` with
    // USER and DATABASE of letters, digits, `_`, `-`, `.`; HOST of lower-case letters,
    // digits, `.`, `-` (no `xn--` label: URLComponents would decode it); no password, no
    // percent escape, no Unix socket `host=`, no repeated or unknown parameter, a valid
    // sslmode and schema (PostgresLocation refuses others: main reports that). Without a
    // port in the URL, PGPORT must be unset (5432).
    const char *p;
    if (strncmp(url, "postgres://", 11) == 0) p = url + 11;
    else if (strncmp(url, "postgresql://", 13) == 0) p = url + 13;
    else return -1;
    size_t user_length = span(p, url_word);
    if (user_length == 0 || p[user_length] != '@') return -1;
    const char *user = p;
    p += user_length + 1;
    size_t host_length = span(p, host_byte);
    if (host_length == 0) return -1;
    const char *host = p;
    for (size_t i = 0; i < host_length; i++) {
        if ((i == 0 || host[i - 1] == '.') && host_length - i >= 4 && strncmp(host + i, "xn--", 4) == 0) return -1;
    }
    p += host_length;
    unsigned long port = 5432;
    if (*p == ':') {
        p++;
        size_t digits = span(p, digit);
        if (digits == 0 || digits > 5) return -1;
        port = 0;
        for (size_t i = 0; i < digits; i++) port = port * 10 + (unsigned long)(p[i] - '0');
        if (port < 1 || port > 65535) return -1;
        p += digits;
    } else if (env_raw(envp, "PGPORT") != 0) {
        return -1;
    }
    if (*p != '/') return -1;
    p++;
    size_t database_length = span(p, url_word);
    if (database_length == 0) return -1;
    const char *database = p;
    p += database_length;
    const char *schema = "gbg_vault";
    size_t schema_length = strlen(schema);
    int seen_sslmode = 0, seen_root = 0, seen_schema = 0;
    if (*p == '?') {
        p++;
        for (;;) {
            const char *name = p;
            size_t name_length = span(p, url_word);
            if (p[name_length] != '=') return -1;
            const char *value = p + name_length + 1;
            size_t value_length;
            if (name_length == 7 && strncmp(name, "sslmode", 7) == 0 && !seen_sslmode) {
                seen_sslmode = 1;
                value_length = span(value, url_word);
                if (!((value_length == 7 && strncmp(value, "disable", 7) == 0) || (value_length == 7 && strncmp(value, "require", 7) == 0)
                      || (value_length == 9 && strncmp(value, "verify-ca", 9) == 0)
                      || (value_length == 11 && strncmp(value, "verify-full", 11) == 0))) return -1;
            } else if (name_length == 11 && strncmp(name, "sslrootcert", 11) == 0 && !seen_root) {
                seen_root = 1;
                value_length = span(value, path_byte);
            } else if (name_length == 6 && strncmp(name, "schema", 6) == 0 && !seen_schema) {
                seen_schema = 1;
                value_length = span(value, schema_byte);
                if (value_length == 0 || value_length > 63 || digit(value[0]) || (value_length >= 3 && strncmp(value, "pg_", 3) == 0)) return -1;
                schema = value;
                schema_length = value_length;
            } else {
                return -1;
            }
            p = value + value_length;
            if (*p == '\0') break;
            if (*p != '&') return -1;
            p++;
        }
    }
    if (*p != '\0') return -1;
    int count = snprintf(out, capacity, "postgres://%.*s@%.*s:%lu/%.*s?schema=%.*s", (int)user_length, user, (int)host_length, host,
                         port, (int)database_length, database, (int)schema_length, schema);
    return (count < 0 || (unsigned long)count >= capacity) ? -1 : count;
}

// `$VAULT_PATH`, else `${XDG_DATA_HOME:-$HOME/.local/share}/gbg-vault/vault.db`
// (VaultOptions.defaultPath): 1 for a file, 2 for a team vault's URL, 0 when it cannot be
// known here.
static int vault_path(char *const *envp, char *path, size_t capacity) {
    const char *explicit_path = env_value(envp, "VAULT_PATH");
    const char *data = env_value(envp, "XDG_DATA_HOME");
    const char *home = env_value(envp, "HOME");
    int count;
    if (explicit_path != 0) count = snprintf(path, capacity, "%s", explicit_path);
    else if (data != 0) count = snprintf(path, capacity, "%s/gbg-vault/vault.db", data);
    else if (home != 0) count = snprintf(path, capacity, "%s/.local/share/gbg-vault/vault.db", home);
    else return 0;
    if (count < 0 || (size_t)count >= capacity || !plain_text(path)) return 0;
    if (strncmp(path, "postgres://", 11) == 0 || strncmp(path, "postgresql://", 13) == 0) return 2;
    return 1;
}

// `$XDG_RUNTIME_DIR/gbg-vault` (an absolute XDG_RUNTIME_DIR, trailing slashes dropped),
// else `/tmp/gbg-vault-<uid>` (AgentProtocol.directory).
static int agent_directory(char *const *envp, char *directory, size_t capacity) {
    const char *runtime = env_value(envp, "XDG_RUNTIME_DIR");
    int count;
    if (runtime != 0 && runtime[0] == '/') {
        size_t length = strlen(runtime);
        while (length > 1 && runtime[length - 1] == '/') length--;
        if (length == 1) count = snprintf(directory, capacity, "/gbg-vault");
        else count = snprintf(directory, capacity, "%.*s/gbg-vault", (int)length, runtime);
    } else {
        count = snprintf(directory, capacity, "/tmp/gbg-vault-%u", (unsigned)geteuid());
    }
    return count >= 0 && (size_t)count < capacity && plain_text(directory);
}

// The agent's socket for (argc, argv, envp), with the request for it in `frame` (length
// prefix included); 0 when this is not a call to serve here.
static int locate(int argc, char *const *argv, char *const *envp, struct sockaddr_un *address,
                  char *frame, size_t capacity, size_t *frame_length) {
    if (argc != 3 || argv == 0 || argv[1] == 0 || argv[2] == 0) return 0;
    if (strcmp(argv[1], "token") != 0 || argv[2][0] == '\0' || argv[2][0] == '-') return 0;
    // Either of these, whatever its value, leaves the decision to vault itself.
    if (env_raw(envp, "VAULT_NO_AGENT") != 0 || env_raw(envp, "VAULT_VERBOSE") != 0) return 0;

    char path[PATH_MAX], directory[PATH_MAX], name[64], store[PATH_MAX];
    struct stat file;
    int kind = vault_path(envp, path, sizeof path);
    if (kind == 0 || !agent_directory(envp, directory, sizeof directory)) return 0;
    if (kind == 2) {
        // A team vault's socket is named by its location identity: `agent-pg-` and the
        // BLAKE2b-128 of it in hex (AgentProtocol.socketPath(store:)).
        int length = cprocess_early_token_store_identity(path, envp, store, sizeof store);
        if (length < 0) return 0;
        unsigned char digest[16];
        crypto_generichash(digest, sizeof digest, (const unsigned char *)store, (unsigned long long)length, 0, 0);
        memcpy(name, "agent-pg-", 9);
        sodium_bin2hex(name + 9, 33, digest, sizeof digest);
        memcpy(name + 41, ".sock", 6);
    } else {
        if (stat(path, &file) != 0 || !S_ISREG(file.st_mode)) return 0;
        // The agent's link by the file's device and inode (AgentProtocol.fileLinkPath) holds
        // exactly `agent-` + 32 lower-case hex digits + `.sock` (AgentProtocol.socketPath(fromFileLink:)).
        char link[PATH_MAX + 64];
        int count = snprintf(link, sizeof link, "%s/agent-file-%llu-%llu", directory,
                             (unsigned long long)file.st_dev, (unsigned long long)file.st_ino);
        if (count < 0 || (size_t)count >= sizeof link) return 0;
        ssize_t length = readlink(link, name, sizeof name - 1);
        if (length != 43 || memcmp(name, "agent-", 6) != 0 || memcmp(name + 38, ".sock", 5) != 0) return 0;
        for (int i = 6; i < 38; i++) {
            if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'f'))) return 0;
        }
        name[43] = '\0';
    }
    memset(address, 0, sizeof *address);
    address->sun_family = AF_UNIX;
    int count = snprintf(address->sun_path, sizeof address->sun_path, "%s/%s", directory, name);
    if (count < 0 || (size_t)count >= sizeof address->sun_path) return 0;
    // This user's socket (AgentClient.roundTrip checks the same).
    struct stat socket_file;
    if (lstat(address->sun_path, &socket_file) != 0 || !S_ISSOCK(socket_file.st_mode) || socket_file.st_uid != geteuid()) return 0;

    int body = kind == 2 ? cprocess_early_token_request(argv[2], store, 0, 0, envp, frame + 4, capacity - 4)
                         : cprocess_early_token_request(argv[2], 0, (unsigned long long)file.st_dev,
                                                        (unsigned long long)file.st_ino, envp, frame + 4, capacity - 4);
    if (body < 0) return 0;
    frame[0] = (char)((body >> 24) & 0xFF);
    frame[1] = (char)((body >> 16) & 0xFF);
    frame[2] = (char)((body >> 8) & 0xFF);
    frame[3] = (char)(body & 0xFF);
    *frame_length = (size_t)body + 4;
    return 1;
}

static long long now_ms(void) {
    struct timespec spec;
    clock_gettime(CLOCK_MONOTONIC, &spec);
    return (long long)spec.tv_sec * 1000 + spec.tv_nsec / 1000000;
}

// Reads one frame from `fd` into early_answer (length prefix removed).
static int read_answer(int fd) {
    long long deadline = now_ms() + EARLY_ANSWER_TIMEOUT_MS;
    size_t received = 0;
    for (;;) {
        if (received >= 4) {
            uint32_t announced = ((uint32_t)early_answer[0] << 24) | ((uint32_t)early_answer[1] << 16)
                               | ((uint32_t)early_answer[2] << 8) | (uint32_t)early_answer[3];
            if (announced > EARLY_MAXIMUM_FRAME) return CPROCESS_EARLY_TOO_LARGE;
            if (received >= (size_t)announced + 4) {
                memmove(early_answer, early_answer + 4, announced);
                early_answer_length = announced;
                return CPROCESS_EARLY_ANSWER;
            }
        }
        long long left = deadline - now_ms();
        if (left <= 0) return CPROCESS_EARLY_TIMEOUT;
        struct pollfd entry = { fd, POLLIN, 0 };
        int ready = poll(&entry, 1, (int)left);
        if (ready < 0 && errno != EINTR) return CPROCESS_EARLY_CLOSED;
        if (ready <= 0) continue;
        ssize_t count = recv(fd, early_answer + received, sizeof early_answer - received, MSG_DONTWAIT);
        if (count == 0) return CPROCESS_EARLY_CLOSED;
        if (count < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            return CPROCESS_EARLY_CLOSED;
        }
        received += (size_t)count;
    }
}

// RFC 6750 b64token: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=".
static int b64token(const unsigned char *bytes, size_t count) {
    size_t i = 0;
    while (i < count && ((bytes[i] >= 'A' && bytes[i] <= 'Z') || (bytes[i] >= 'a' && bytes[i] <= 'z')
                         || (bytes[i] >= '0' && bytes[i] <= '9') || strchr("-._~+/", bytes[i]) != 0)) i++;
    if (i == 0) return 0;
    while (i < count && bytes[i] == '=') i++;
    return i == count;
}

int cprocess_early_token_exchange(int argc, char *const *argv, char *const *envp) {
    early_answer_length = 0;
    struct sockaddr_un address;
    char frame[16 * 1024];
    size_t frame_length = 0;
    if (!locate(argc, argv, envp, &address, frame, sizeof frame, &frame_length)) return CPROCESS_EARLY_NONE;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return CPROCESS_EARLY_NONE;
    // Started with stdin, stdout or stderr closed, this socket would take its number; vault's
    // own client handles that case.
    if (fd <= 2 || connect(fd, (const struct sockaddr *)&address, sizeof address) != 0) {
        close(fd);
        return CPROCESS_EARLY_NONE;
    }
    // A fresh Unix socket takes a frame this small whole, or not at all; a frame cut short
    // is never performed (the agent acts on whole frames only).
    if (send(fd, frame, frame_length, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)frame_length) {
        close(fd);
        return CPROCESS_EARLY_NONE;
    }
    int status = read_answer(fd);
    close(fd);
    if (status == CPROCESS_EARLY_ANSWER && early_answer_length > 0 && early_answer[0] != '{') {
        status = b64token(early_answer, early_answer_length) ? CPROCESS_EARLY_BARE_TOKEN : CPROCESS_EARLY_MALFORMED;
    }
    return status;
}

__attribute__((constructor(101))) static void cprocess_early_token(int argc, char **argv, char **envp) {
    if (argc != 3 || argv == 0 || argv[1] == 0 || strcmp(argv[1], "token") != 0) return;
    // Hardened before the answer can arrive, as `main` does (ProcessHardening): the soft
    // core limit is put back if `main` takes over, which lowers it again and keeps the
    // original for the commands `exec` runs.
    struct rlimit original_core, no_core;
    int have_core = getrlimit(RLIMIT_CORE, &original_core) == 0;
    if (have_core) {
        no_core = original_core;
        no_core.rlim_cur = 0;
        setrlimit(RLIMIT_CORE, &no_core);
    }
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    struct sigaction ignore, original_pipe;
    memset(&ignore, 0, sizeof ignore);
    ignore.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &ignore, &original_pipe);

    early_status = cprocess_early_token_exchange(argc, argv, envp);
    if (early_status == CPROCESS_EARLY_BARE_TOKEN) {
        early_answer[early_answer_length] = '\n';
        size_t total = early_answer_length + 1, offset = 0;
        while (offset < total) {
            ssize_t written = write(1, early_answer + offset, total - offset);
            if (written < 0) {
                if (errno == EINTR) continue;
                break;
            }
            offset += (size_t)written;
        }
        explicit_bzero(early_answer, sizeof early_answer);
        _exit(0);
    }
    if (have_core) setrlimit(RLIMIT_CORE, &original_core);
    sigaction(SIGPIPE, &original_pipe, 0);
}

int cprocess_early_token_claim(const unsigned char **answer, unsigned long *length) {
    int status = early_status;
    early_status = CPROCESS_EARLY_NONE;
    *answer = early_answer;
    *length = early_answer_length;
    return status;
}

void cprocess_early_token_wipe(void) {
    explicit_bzero(early_answer, sizeof early_answer);
    early_answer_length = 0;
}
