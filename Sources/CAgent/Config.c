// The config file (`${XDG_CONFIG_HOME:-~/.config}/gbg-vault/config`, CAgent.h): its path
// and its one parser, used by the Swift program (VaultConfig) and, for the `vault` key, by
// vault_default_vault_path (Agent.c), which the client before main follows too. Reading it
// allocates one buffer of at most 64 KiB; nothing is printed (the Swift program says what
// is wrong with it).
#define _GNU_SOURCE
#include "CAgent.h"
#include "Environment.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int vault_config_path(char *const *envp, char *out, size_t capacity) {
    const char *config = nonempty(envp, "XDG_CONFIG_HOME");
    if (config != NULL) return fits(snprintf(out, capacity, "%s/gbg-vault/config", config), capacity);
    const char *home = home_directory(envp);
    return home != NULL && fits(snprintf(out, capacity, "%s/.config/gbg-vault/config", home), capacity);
}

static char *trimmed(char *start, char *end) {
    while (start < end && (*start == ' ' || *start == '\t')) start++;
    while (end > start && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r')) end--;
    *end = '\0';
    return start;
}

int vault_config_read(char *const *envp, vault_config_visitor visit, void *context, char *why, size_t why_capacity) {
    char path[PATH_MAX];
    if (why_capacity > 0) why[0] = '\0';
    if (!vault_config_path(envp, path, sizeof path)) return 0;
    // Its directory first: a directory others can write lets them swap the file.
    char *slash = strrchr(path, '/');
    if (slash == NULL) return 0;
    *slash = '\0';
    int directory = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (directory < 0) return 0;
    struct stat folder;
    if (fstat(directory, &folder) != 0 || folder.st_uid != geteuid() || (folder.st_mode & 022)) {
        snprintf(why, why_capacity, "its directory %s belongs to another user or others can write it", path);
        close(directory);
        return -1;
    }
    int fd = openat(directory, slash + 1, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    *slash = '/';
    close(directory);
    if (fd < 0) {
        if (errno == ENOENT || errno == ENOTDIR) return 0;
        snprintf(why, why_capacity, "%s", errno == ELOOP ? "it is a symbolic link" : strerror(errno));
        return -1;
    }
    struct stat info;
    enum { limit = 64 * 1024 };
    const char *problem = NULL;
    if (fstat(fd, &info) != 0) problem = "it cannot be inspected";
    else if (!S_ISREG(info.st_mode)) problem = "it is not a regular file";
    else if (info.st_uid != geteuid()) problem = "it belongs to another user";
    else if (info.st_mode & 022) problem = "group or others can write it";
    else if (info.st_size > limit) problem = "it is larger than 64 KiB";
    if (problem != NULL) {
        snprintf(why, why_capacity, "%s", problem);
        close(fd);
        return -1;
    }
    char *text = malloc(limit + 1);
    if (text == NULL) {
        snprintf(why, why_capacity, "out of memory");
        close(fd);
        return -1;
    }
    size_t length = 0;
    for (;;) {
        ssize_t n = read(fd, text + length, limit - length);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        length += (size_t)n;
        if (length == limit) break;
    }
    close(fd);
    text[length] = '\0';
    if (memchr(text, '\0', length) != NULL) {
        snprintf(why, why_capacity, "it contains a NUL byte");
        free(text);
        return -1;
    }
    int number = 0;
    for (char *line = text; line < text + length;) {
        char *end = memchr(line, '\n', (size_t)(text + length - line));
        if (end == NULL) end = text + length;
        char *next = end + 1;
        number++;
        char *content = trimmed(line, end);
        if (content[0] != '\0' && content[0] != '#' && visit != NULL) {
            char *equals = strchr(content, '=');
            if (equals == NULL) {
                visit(number, content, NULL, context);
            } else {
                char *key = trimmed(content, equals);
                char *value = trimmed(equals + 1, equals + 1 + strlen(equals + 1));
                visit(number, key, value, context);
            }
        }
        line = next;
    }
    free(text);
    return 1;
}

struct config_lookup {
    const char *key;
    char *out;
    size_t capacity;
    int found;
};

static void config_lookup_visit(int line, const char *key, const char *value, void *context) {
    (void)line;
    struct config_lookup *lookup = context;
    if (value != NULL && value[0] != '\0' && strcmp(key, lookup->key) == 0) {
        lookup->found = fits(snprintf(lookup->out, lookup->capacity, "%s", value), lookup->capacity) ? 1 : -1;
    }
}

int vault_config_value(char *const *envp, const char *key, char *out, size_t capacity) {
    struct config_lookup lookup = { key, out, capacity, 0 };
    char why[PATH_MAX + 96];
    if (vault_config_read(envp, config_lookup_visit, &lookup, why, sizeof why) < 0) return -1;
    return lookup.found;
}
