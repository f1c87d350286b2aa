#define _GNU_SOURCE
#include "CProcess.h"
#include <signal.h>
#include <spawn.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#if defined(__linux__)
#include <sys/prctl.h>
#endif

int cprocess_disable_dumpable(void) {
#if defined(__linux__)
    return prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
#else
    return 0;
#endif
}

int cprocess_socketpair_cloexec(int fds[2]) {
    return socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds);
}

int cprocess_pipe_cloexec(int fds[2]) {
#if defined(__linux__)
    return pipe2(fds, O_CLOEXEC);
#else
    if (pipe(fds) != 0) return -1;
    fcntl(fds[0], F_SETFD, FD_CLOEXEC);
    fcntl(fds[1], F_SETFD, FD_CLOEXEC);
    return 0;
#endif
}

long cprocess_find(const void *haystack, unsigned long haystack_len, const void *needle, unsigned long needle_len) {
    if (needle_len == 0 || haystack_len < needle_len) return -1;
    const char *hit = memmem(haystack, haystack_len, needle, needle_len);
    return hit ? (long)(hit - (const char *)haystack) : -1;
}

int cprocess_spawnattr_detached(posix_spawnattr_t *attributes) {
    if (cprocess_spawnattr_child(attributes) != 0) return -1;
    return posix_spawnattr_setflags(attributes, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
}

int cprocess_spawnattr_child(posix_spawnattr_t *attributes) {
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    int numbers[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGPIPE};
    for (unsigned i = 0; i < sizeof numbers / sizeof numbers[0]; i++) sigaddset(&defaults, numbers[i]);
    if (posix_spawnattr_setsigmask(attributes, &none) != 0) return -1;
    if (posix_spawnattr_setsigdefault(attributes, &defaults) != 0) return -1;
    return posix_spawnattr_setflags(attributes, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
}

int cprocess_file_actions_close_from(posix_spawn_file_actions_t *actions, int first) {
    return posix_spawn_file_actions_addclosefrom_np(actions, first);
}

/// Descriptors 3 to 1023 open at start, one bit each; a descriptor above is never the caller's.
static unsigned char inherited_descriptors[1024 / 8];

/// Calls `visit` with every descriptor from 3 on listed in /proc/self/fd (not the listing's
/// own). Returns 0, or -1 when the directory cannot be read.
static int each_open_descriptor(int (*visit)(int)) {
    DIR *directory = opendir("/proc/self/fd");
    if (directory == NULL) return -1;
    int status = 0;
    struct dirent *entry;
    while ((entry = readdir(directory)) != NULL) {
        char *end;
        long fd = strtol(entry->d_name, &end, 10);
        if (*end != '\0' || end == entry->d_name || fd < 3 || fd > 0x7fffffff || fd == dirfd(directory)) continue;
        if (visit((int)fd) != 0) status = -1;
    }
    closedir(directory);
    return status;
}

static int remember(int fd) {
    if (fd < 1024) inherited_descriptors[fd / 8] |= (unsigned char)(1u << (fd % 8));
    return 0;
}

static int close_on_exec_unless_inherited(int fd) {
    if (fd < 1024 && (inherited_descriptors[fd / 8] & (1u << (fd % 8)))) return 0;
    int flags = fcntl(fd, F_GETFD);
    if (flags < 0) return errno == EBADF ? 0 : -1;
    return fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0 ? -1 : 0;
}

void cprocess_remember_inherited_descriptors(void) {
    (void)each_open_descriptor(remember);
}

int cprocess_cloexec_own_descriptors(void) {
    return each_open_descriptor(close_on_exec_unless_inherited);
}
