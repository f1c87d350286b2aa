// What Agent.c and Config.c share, static so that nothing leaves the library: the
// environment read from an explicit `envp` (the client before main has no other), and
// snprintf's fit check.
#ifndef GBG_VAULT_CAGENT_ENVIRONMENT_H
#define GBG_VAULT_CAGENT_ENVIRONMENT_H

#include <pwd.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

// The value of `name` in `envp` as getenv(3) finds it (the first entry); NULL when unset.
static inline const char *variable(char *const *envp, const char *name) {
    if (envp == NULL) return NULL;
    size_t length = strlen(name);
    for (char *const *entry = envp; *entry != NULL; entry++) {
        if (strncmp(*entry, name, length) == 0 && (*entry)[length] == '=') return *entry + length + 1;
    }
    return NULL;
}

// As `variable`, with an empty value counting as unset.
static inline const char *nonempty(char *const *envp, const char *name) {
    const char *value = variable(envp, name);
    return (value == NULL || value[0] == '\0') ? NULL : value;
}

static inline int fits(int count, size_t capacity) { return count >= 0 && (size_t)count < capacity; }

// HOME, else the password database's home directory; NULL when neither names one.
static inline const char *home_directory(char *const *envp) {
    const char *home = nonempty(envp, "HOME");
    if (home != NULL) return home;
    struct passwd *entry = getpwuid(geteuid());
    return (entry == NULL || entry->pw_dir == NULL || entry->pw_dir[0] == '\0') ? NULL : entry->pw_dir;
}

// The last non-empty value of `key` in the config file (Config.c): 1 when found, 0 when it
// is not set or there is no file, -1 when the file is not used or the value does not fit.
int vault_config_value(char *const *envp, const char *key, char *out, size_t capacity);

#endif
