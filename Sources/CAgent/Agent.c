// The client side of the agent protocol and its location rules (CAgent.h, PROTOCOL.md).
// Only libc and libsodium's BLAKE2b; no allocation; nothing is printed but the waiting line
// at a terminal (wait_for_answer). The config file's parser is in Config.c. One file, longer
// than most here, because it is one thing: where the socket is, whom to trust, the request's
// bytes and the round trip, in the order a call runs them, each written once for both
// clients (the constructor before main and the Swift commands).
#define _GNU_SOURCE
#include "CAgent.h"
#include "Environment.h"

#include <sodium.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

// MARK: - Writing JSON

struct writer {
    char *bytes;
    size_t length;
    size_t capacity;
    int failed;
};

static void put(struct writer *w, const char *bytes, size_t count) {
    if (w->failed || count > w->capacity - w->length) {
        w->failed = 1;
        return;
    }
    memcpy(w->bytes + w->length, bytes, count);
    w->length += count;
}

static void put_text(struct writer *w, const char *text) { put(w, text, strlen(text)); }

// Well-formed UTF-8 (RFC 3629: no overlong forms, surrogates or code points above U+10FFFF).
static int valid_utf8(const char *text) {
    const unsigned char *p = (const unsigned char *)text;
    while (*p != 0) {
        unsigned char c = p[0];
        if (c < 0x80) {
            p += 1;
            continue;
        }
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

// A JSON string (RFC 8259): `"` and `\` escaped, control characters as \u00XX, everything
// else as it is. Text that is not valid UTF-8 fails the writer.
static void put_string(struct writer *w, const char *text) {
    if (!valid_utf8(text)) {
        w->failed = 1;
        return;
    }
    static const char hex[] = "0123456789abcdef";
    put(w, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)text; *p != 0; p++) {
        if (*p == '"' || *p == '\\') {
            char escaped[2] = { '\\', (char)*p };
            put(w, escaped, 2);
        } else if (*p < 0x20) {
            char escaped[6] = { '\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 0x0F] };
            put(w, escaped, 6);
        } else {
            put(w, (const char *)p, 1);
        }
    }
    put(w, "\"", 1);
}

static void put_key(struct writer *w, int *first, const char *key) {
    if (!*first) put(w, ",", 1);
    *first = 0;
    put_string(w, key);
    put(w, ":", 1);
}

static void put_integer(struct writer *w, long long value) {
    char digits[24];
    int count = snprintf(digits, sizeof digits, "%lld", value);
    put(w, digits, (size_t)count);
}

// The proxy variables a token exchange honours, in the order they are written.
static const char *const proxy_variables[] = {
    "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy",
};

static void put_network(struct writer *w, const char *ca_bundle, char *const *envp) {
    int first = 1;
    put(w, "{", 1);
    const char *bundle = (ca_bundle != NULL && ca_bundle[0] != '\0') ? ca_bundle : nonempty(envp, "VAULT_CA_BUNDLE");
    if (bundle != NULL) {
        // As an absolute path with no symbolic link, so that the same file named from
        // another directory or through a link is the same setting.
        char resolved[PATH_MAX];
        put_key(w, &first, "ca_bundle");
        put_string(w, realpath(bundle, resolved) != NULL ? resolved : bundle);
    }
    put_key(w, &first, "proxy");
    put(w, "{", 1);
    int first_proxy = 1;
    for (size_t i = 0; i < sizeof proxy_variables / sizeof proxy_variables[0]; i++) {
        const char *value = nonempty(envp, proxy_variables[i]);
        if (value == NULL) continue;
        put_key(w, &first_proxy, proxy_variables[i]);
        put_string(w, value);
    }
    put(w, "}}", 2);
}

long vault_agent_write_network(const char *ca_bundle, char *const *envp, char *out, size_t capacity) {
    struct writer w = { out, 0, capacity, 0 };
    put_network(&w, ca_bundle, envp);
    return w.failed ? -1 : (long)w.length;
}

/// The `profile` and, when given, `environment` fields of a token or proxy-requests object.
static void put_profile(struct writer *w, int *field, const vault_agent_request *request) {
    put_key(w, field, "profile");
    put_string(w, request->profile);
    if (request->environment != NULL) {
        put_key(w, field, "environment");
        put_string(w, request->environment);
    }
}

long vault_agent_write_request(const vault_agent_request *request, char *const *envp, char *out, size_t capacity) {
    static const char *const operations[] = { NULL, "status", "lock", "verify", "audit-verify", "token", "proxy-requests" };
    if (request->op < VAULT_AGENT_OP_STATUS || request->op > VAULT_AGENT_OP_PROXY_REQUESTS) return -1;
    struct writer w = { out, 0, capacity, 0 };
    int first = 1;
    put(&w, "{", 1);
    put_key(&w, &first, "version");
    put_integer(&w, VAULT_AGENT_PROTOCOL_VERSION);
    put_key(&w, &first, "op");
    put_string(&w, operations[request->op]);
    if (request->op == VAULT_AGENT_OP_TOKEN) {
        if (request->profile == NULL) return -1;
        int field = 1;
        put_key(&w, &first, "token");
        put(&w, "{", 1);
        put_profile(&w, &field, request);
        if (request->print) {
            put_key(&w, &field, "print");
            put_text(&w, "true");
        }
        if (request->format != NULL) {
            put_key(&w, &field, "format");
            put_string(&w, request->format);
        }
        static const char *const actions[] = { "token", "exec", "serve", "proxy" };
        if (request->action < VAULT_AGENT_ACTION_TOKEN || request->action > VAULT_AGENT_ACTION_PROXY) return -1;
        if (request->action != VAULT_AGENT_ACTION_TOKEN) {
            put_key(&w, &field, "action");
            put_string(&w, actions[request->action]);
        }
        if (request->caller != NULL) {
            put_key(&w, &field, "caller");
            put_string(&w, request->caller);
        }
        if (request->fresh) {
            put_key(&w, &field, "fresh");
            put_text(&w, "true");
        }
        if (request->min_ttl >= 0) {
            put_key(&w, &field, "min_ttl");
            put_integer(&w, request->min_ttl);
        }
        if (request->timeout_ms >= 0) {
            put_key(&w, &field, "timeout_ms");
            put_integer(&w, request->timeout_ms);
        }
        if (request->connect_timeout_ms >= 0) {
            put_key(&w, &field, "connect_timeout_ms");
            put_integer(&w, request->connect_timeout_ms);
        }
        put(&w, "}", 1);
        put_key(&w, &first, "network");
        put_network(&w, request->ca_bundle, envp);
    }
    if (request->op == VAULT_AGENT_OP_PROXY_REQUESTS) {
        if (request->profile == NULL || request->summary == NULL) return -1;
        int field = 1;
        put_key(&w, &first, "requests");
        put(&w, "{", 1);
        put_profile(&w, &field, request);
        put_key(&w, &field, "summary");
        put_string(&w, request->summary);
        put(&w, "}", 1);
    }
    put(&w, "}", 1);
    return w.failed ? -1 : (long)w.length;
}

// MARK: - Where

int vault_data_directory(char *const *envp, char *out, size_t capacity) {
    const char *data = nonempty(envp, "XDG_DATA_HOME");
    if (data != NULL) return fits(snprintf(out, capacity, "%s/gbg-vault", data), capacity);
    const char *home = home_directory(envp);
    return home != NULL && fits(snprintf(out, capacity, "%s/.local/share/gbg-vault", home), capacity);
}

int vault_default_vault_path(char *const *envp, char *out, size_t capacity) {
    const char *path = nonempty(envp, "VAULT_PATH");
    if (path != NULL) return fits(snprintf(out, capacity, "%s", path), capacity);
    char configured[PATH_MAX];
    int found = vault_config_value(envp, "vault", configured, sizeof configured);
    if (found < 0) return 0;
    if (found == 1) {
        // An absolute path, `~/…` (the home directory), or a team vault's URL; a relative
        // path would name a file in whatever directory the command runs in: not used.
        if (configured[0] == '/' || vault_is_postgres_url(configured)) return fits(snprintf(out, capacity, "%s", configured), capacity);
        if (configured[0] == '~' && configured[1] == '/') {
            const char *home = home_directory(envp);
            return home != NULL && fits(snprintf(out, capacity, "%s%s", home, configured + 1), capacity);
        }
        return 0;
    }
    char directory[PATH_MAX];
    if (!vault_data_directory(envp, directory, sizeof directory)) return 0;
    return fits(snprintf(out, capacity, "%s/vault.db", directory), capacity);
}

int vault_is_postgres_url(const char *vault) {
    return strncmp(vault, "postgres://", 11) == 0 || strncmp(vault, "postgresql://", 13) == 0;
}

int vault_agent_directory(char *const *envp, char *out, size_t capacity) {
    const char *runtime = nonempty(envp, "XDG_RUNTIME_DIR");
    if (runtime != NULL && runtime[0] == '/') {
        size_t length = strlen(runtime);
        while (length > 1 && runtime[length - 1] == '/') length--;
        if (length == 1) return fits(snprintf(out, capacity, "/gbg-vault"), capacity);
        return fits(snprintf(out, capacity, "%.*s/gbg-vault", (int)length, runtime), capacity);
    }
    return fits(snprintf(out, capacity, "/tmp/gbg-vault-%u", (unsigned)geteuid()), capacity);
}

int vault_agent_socket_for_file(unsigned long long device, unsigned long long inode, char *const *envp, char *out, size_t capacity) {
    char directory[PATH_MAX];
    if (!vault_agent_directory(envp, directory, sizeof directory)) return 0;
    return fits(snprintf(out, capacity, "%s/agent-file-%llu-%llu.sock", directory, device, inode), capacity);
}

// `<directory>/<prefix><BLAKE2b-128 of bytes, hex><suffix>`.
static int hashed_name(const char *prefix, const unsigned char *bytes, size_t count, const char *suffix,
                       char *const *envp, char *out, size_t capacity) {
    char directory[PATH_MAX];
    if (!vault_agent_directory(envp, directory, sizeof directory)) return 0;
    unsigned char digest[16];
    char hex[33];
    crypto_generichash(digest, sizeof digest, bytes, (unsigned long long)count, NULL, 0);
    sodium_bin2hex(hex, sizeof hex, digest, sizeof digest);
    return fits(snprintf(out, capacity, "%s/%s%s%s", directory, prefix, hex, suffix), capacity);
}

int vault_agent_socket_for_store(const char *identity, char *const *envp, char *out, size_t capacity) {
    return hashed_name("agent-pg-", (const unsigned char *)identity, strlen(identity), ".sock", envp, out, capacity);
}

int vault_agent_url_link(const char *url, char *const *envp, char *out, size_t capacity) {
    const char *user = variable(envp, "PGUSER"), *port = variable(envp, "PGPORT");
    char text[PATH_MAX * 2];
    int count = snprintf(text, sizeof text, "%s\n%s\n%s", url, user == NULL ? "" : user, port == NULL ? "" : port);
    if (!fits(count, sizeof text)) return 0;
    int made = hashed_name("agent-url-", (const unsigned char *)text, (size_t)count, "", envp, out, capacity);
    sodium_memzero(text, sizeof text);
    return made;
}

// `agent-pg-` and 32 lowercase hex digits and `.sock`, and nothing else.
static int store_socket_name(const char *name, size_t length) {
    if (length != 9 + 32 + 5 || memcmp(name, "agent-pg-", 9) != 0 || memcmp(name + 41, ".sock", 5) != 0) return 0;
    for (size_t i = 9; i < 41; i++) {
        if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'f'))) return 0;
    }
    return 1;
}

int vault_agent_locate(const char *vault, char *const *envp, char *out, size_t capacity) {
    if (vault_is_postgres_url(vault)) {
        char link[PATH_MAX], name[64];
        if (!vault_agent_url_link(vault, envp, link, sizeof link)) return 0;
        ssize_t length = readlink(link, name, sizeof name - 1);
        if (length < 0 || !store_socket_name(name, (size_t)length)) return 0;
        name[length] = '\0';
        char directory[PATH_MAX];
        if (!vault_agent_directory(envp, directory, sizeof directory)) return 0;
        return fits(snprintf(out, capacity, "%s/%s", directory, name), capacity);
    }
    struct stat file;
    if (stat(vault, &file) != 0 || !S_ISREG(file.st_mode)) return 0;
    return vault_agent_socket_for_file((unsigned long long)file.st_dev, (unsigned long long)file.st_ino, envp, out, capacity);
}

// MARK: - Whom to trust

int vault_agent_check_directory(const char *directory, int create) {
    if (create && mkdir(directory, 0700) != 0 && errno != EEXIST) return VAULT_DIRECTORY_CANNOT_CREATE;
    struct stat info;
    if (lstat(directory, &info) != 0) return VAULT_DIRECTORY_MISSING;
    if (!S_ISDIR(info.st_mode)) return VAULT_DIRECTORY_NOT_A_DIRECTORY;
    if (info.st_uid != geteuid()) return VAULT_DIRECTORY_NOT_OWNED;
    if ((info.st_mode & 077) != 0) return VAULT_DIRECTORY_OPEN_MODE;
    return VAULT_DIRECTORY_OK;
}

// Removes the links in `directory` whose target is `name` (a stale socket's links).
static void remove_links_to(const char *directory, const char *name) {
    DIR *listing = opendir(directory);
    if (listing == NULL) return;
    struct dirent *entry;
    while ((entry = readdir(listing)) != NULL) {
        if (strncmp(entry->d_name, "agent-url-", 10) != 0) continue;
        char path[PATH_MAX], target[64];
        if (!fits(snprintf(path, sizeof path, "%s/%s", directory, entry->d_name), sizeof path)) continue;
        ssize_t length = readlink(path, target, sizeof target - 1);
        if (length < 0) continue;
        target[length] = '\0';
        if (strcmp(target, name) == 0) unlink(path);
    }
    closedir(listing);
}

static long long now_ms(void) {
    struct timespec spec;
    clock_gettime(CLOCK_MONOTONIC, &spec);
    return (long long)spec.tv_sec * 1000 + spec.tv_nsec / 1000000;
}

// Waits until `fd` is ready for `events`; 0 when the deadline passed first, -1 on error.
static int wait_for(int fd, short events, long long deadline) {
    for (;;) {
        long long left = deadline - now_ms();
        if (left <= 0) return 0;
        struct pollfd entry = { fd, events, 0 };
        int ready = poll(&entry, 1, left > INT_MAX ? INT_MAX : (int)left);
        if (ready > 0) return 1;
        if (ready < 0 && errno != EINTR) return -1;
    }
}

// Waits for the first byte of the agent's answer, as wait_for does. At a terminal, a wait
// longer than VAULT_WAITING_NOTICE_MS (a slow exchange, a long verify) shows one line
// on stderr, rewritten each second and ended when the wait ends, as `vault` itself shows
// while it waits for a token endpoint.
static int wait_for_answer(int fd, long long deadline) {
    long long started = now_ms();
    int terminal = isatty(2), shown = 0, result;
    for (;;) {
        long long now = now_ms();
        long long left = deadline - now;
        if (left <= 0) { result = 0; break; }
        long long slice = left;
        if (terminal) {
            long long waited = now - started;
            long long next = waited < VAULT_WAITING_NOTICE_MS ? VAULT_WAITING_NOTICE_MS : (waited / 1000 + 1) * 1000;
            if (next - waited < slice) slice = next - waited;
        }
        struct pollfd entry = { fd, POLLIN, 0 };
        int ready = poll(&entry, 1, slice > INT_MAX ? INT_MAX : (int)slice);
        if (ready > 0) { result = 1; break; }
        if (ready < 0 && errno != EINTR) { result = -1; break; }
        long long waited = now_ms() - started;
        if (terminal && waited >= VAULT_WAITING_NOTICE_MS) {
            char line[96];
            int count = snprintf(line, sizeof line, "\rvault: waiting for the agent (%lld s)", waited / 1000);
            if (count > 0 && write(2, line, (size_t)count) > 0) shown = 1;
        }
    }
    if (shown && write(2, "\n", 1) < 0) { /* stderr is gone; nothing to end */ }
    return result;
}

int vault_agent_call(const char *socket_path, const char *request, size_t length, long long wait_ms,
                     unsigned char *answer, size_t capacity, size_t *answer_length, long long *detail) {
    long long ignored;
    if (detail == NULL) detail = &ignored;
    *detail = 0;
    *answer_length = 0;
    if (length > VAULT_AGENT_MAXIMUM_FRAME || capacity < VAULT_AGENT_MAXIMUM_FRAME) return VAULT_AGENT_UNREACHABLE;
    long long deadline = now_ms() + (wait_ms > 0 ? wait_ms : 1);

    char directory[PATH_MAX];
    const char *slash = strrchr(socket_path, '/');
    if (slash == NULL || !fits(snprintf(directory, sizeof directory, "%.*s", (int)(slash - socket_path), socket_path), sizeof directory)) {
        return VAULT_AGENT_UNREACHABLE;
    }
    int checked = vault_agent_check_directory(directory[0] == '\0' ? "/" : directory, 0);
    if (checked == VAULT_DIRECTORY_MISSING) return VAULT_AGENT_ABSENT;
    if (checked != VAULT_DIRECTORY_OK) {
        *detail = checked;
        return VAULT_AGENT_UNTRUSTED_DIRECTORY;
    }
    struct stat socket_file;
    if (lstat(socket_path, &socket_file) != 0) return VAULT_AGENT_ABSENT;
    if (!S_ISSOCK(socket_file.st_mode) || socket_file.st_uid != geteuid()) {
        *detail = (long long)socket_file.st_uid;
        return VAULT_AGENT_UNTRUSTED_PEER;
    }

    struct sockaddr_un address;
    memset(&address, 0, sizeof address);
    address.sun_family = AF_UNIX;
    if (!fits(snprintf(address.sun_path, sizeof address.sun_path, "%s", socket_path), sizeof address.sun_path)) {
        *detail = ENAMETOOLONG;
        return VAULT_AGENT_UNREACHABLE;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *detail = errno;
        return VAULT_AGENT_UNREACHABLE;
    }
    if (connect(fd, (const struct sockaddr *)&address, sizeof address) != 0) {
        int code = errno;
        close(fd);
        if (code == ENOENT) return VAULT_AGENT_ABSENT;
        if (code == ECONNREFUSED) {
            // Nobody listens: its agent was killed. The socket (if it is still the one seen
            // above) and the links that name it go.
            struct stat again;
            if (lstat(socket_path, &again) == 0 && again.st_ino == socket_file.st_ino && again.st_dev == socket_file.st_dev) {
                unlink(socket_path);
                remove_links_to(directory, slash + 1);
            }
            return VAULT_AGENT_STALE;
        }
        *detail = code;
        return VAULT_AGENT_UNREACHABLE;
    }
    // The process that accepted must run as this user: a socket in a directory that was
    // swapped after it was checked, or a name that another user's process bound, is refused
    // before anything is written.
    struct ucred peer;
    socklen_t peer_length = sizeof peer;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &peer_length) != 0 || peer_length != sizeof peer) {
        *detail = errno;
        close(fd);
        return VAULT_AGENT_UNREACHABLE;
    }
    if (peer.uid != geteuid()) {
        *detail = (long long)peer.uid;
        close(fd);
        return VAULT_AGENT_UNTRUSTED_PEER;
    }

    // The frame: a 4-byte big-endian length, then the request.
    unsigned char prefix[4] = { (unsigned char)(length >> 24), (unsigned char)(length >> 16), (unsigned char)(length >> 8),
                                (unsigned char)length };
    size_t total = length + 4, sent = 0;
    while (sent < total) {
        int ready = wait_for(fd, POLLOUT, deadline);
        if (ready <= 0) {
            close(fd);
            return ready == 0 ? VAULT_AGENT_TIMED_OUT : VAULT_AGENT_CLOSED;
        }
        const void *from = sent < 4 ? (const void *)(prefix + sent) : (const void *)(request + (sent - 4));
        size_t count = sent < 4 ? 4 - sent : total - sent;
        ssize_t written = send(fd, from, count, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (written < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            close(fd);
            return VAULT_AGENT_CLOSED;
        }
        sent += (size_t)written;
    }

    // The answer: its length prefix, then that many bytes.
    unsigned char header[4];
    size_t received = 0, announced = 0;
    for (;;) {
        if (received >= 4 && received - 4 == announced) break;
        int ready = received == 0 ? wait_for_answer(fd, deadline) : wait_for(fd, POLLIN, deadline);
        if (ready <= 0) {
            close(fd);
            return ready == 0 ? VAULT_AGENT_TIMED_OUT : VAULT_AGENT_CLOSED;
        }
        ssize_t count = received < 4 ? recv(fd, header + received, 4 - received, MSG_DONTWAIT)
                                      : recv(fd, answer + (received - 4), announced - (received - 4), MSG_DONTWAIT);
        if (count == 0) {
            close(fd);
            return VAULT_AGENT_CLOSED;
        }
        if (count < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            close(fd);
            return VAULT_AGENT_CLOSED;
        }
        received += (size_t)count;
        if (received == 4) {
            announced = ((size_t)header[0] << 24) | ((size_t)header[1] << 16) | ((size_t)header[2] << 8) | (size_t)header[3];
            if (announced > VAULT_AGENT_MAXIMUM_FRAME) {
                close(fd);
                return VAULT_AGENT_TOO_LARGE;
            }
        }
    }
    close(fd);
    *answer_length = announced;
    return VAULT_AGENT_ANSWERED;
}
