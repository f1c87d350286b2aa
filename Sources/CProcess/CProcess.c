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
#include <sys/wait.h>
#include <pthread.h>
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

/// The signals a child gets back at their defaults (vault handles or ignores them).
static const int child_default_signals[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGPIPE};

/// Spawn attributes for a child: an empty signal mask, and child_default_signals at their
/// defaults.
static int spawnattr_child(posix_spawnattr_t *attributes) {
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    for (unsigned i = 0; i < sizeof child_default_signals / sizeof child_default_signals[0]; i++) sigaddset(&defaults, child_default_signals[i]);
    if (posix_spawnattr_setsigmask(attributes, &none) != 0) return -1;
    if (posix_spawnattr_setsigdefault(attributes, &defaults) != 0) return -1;
    return posix_spawnattr_setflags(attributes, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
}

int cprocess_spawnattr_detached(posix_spawnattr_t *attributes) {
    if (spawnattr_child(attributes) != 0) return -1;
    return posix_spawnattr_setflags(attributes, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
}

int cprocess_file_actions_close_from(posix_spawn_file_actions_t *actions, int first) {
    return posix_spawn_file_actions_addclosefrom_np(actions, first);
}

#if defined(__linux__)
/// One request to the thread that forks a tied child (cprocess_spawn_tied).
struct tied_spawn {
    const char *file;
    char *const *argv;
    char *const *envp;
    pid_t pid;
    int error;
    int done[2];
};

/// Forks and execs the request's program; the child dies with the thread that forked it.
static pid_t fork_tied(const struct tied_spawn *request) {
    pid_t parent = getpid();
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) return -1;
    pid_t pid = fork();
    if (pid < 0) {
        int failed = errno;
        close(report[0]);
        close(report[1]);
        errno = failed;
        return -1;
    }
    if (pid == 0) {
        // Only async-signal-safe calls from here to exec: this process had threads.
        if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0 || getppid() != parent) _exit(127);
        struct sigaction action;
        memset(&action, 0, sizeof action);
        action.sa_handler = SIG_DFL;
        sigemptyset(&action.sa_mask);
        for (unsigned i = 0; i < sizeof child_default_signals / sizeof child_default_signals[0]; i++) sigaction(child_default_signals[i], &action, NULL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        // Nothing of vault's beyond standard input, output and error (the report pipe closes
        // at exec).
        if (report[1] > 3) close_range(3, (unsigned)report[1] - 1, 0);
        close_range((unsigned)report[1] + 1, ~0U, 0);
        execvpe(request->file, request->argv, request->envp);
        int failed = errno;
        (void)!write(report[1], &failed, sizeof failed);
        _exit(127);
    }
    close(report[1]);
    int failed = 0;
    ssize_t got;
    do got = read(report[0], &failed, sizeof failed); while (got < 0 && errno == EINTR);
    close(report[0]);
    if (got == (ssize_t)sizeof failed) {
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
        errno = failed;
        return -1;
    }
    return pid;
}

/// The child's parent thread: it forks, reports, and then never ends (every signal blocked,
/// so none runs a handler here), because the kernel sends the parent-death signal when the
/// thread that forked ends, not the process. (The Swift program's threads come and go: an
/// idle dispatch worker that forked ended after a few seconds, and the child with it.)
static void *tied_parent(void *context) {
    struct tied_spawn *request = context;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, NULL);
    request->pid = fork_tied(request);
    request->error = request->pid < 0 ? errno : 0;
    int done = request->done[1];
    (void)!write(done, "", 1);  // `request` belongs to the caller from here on
    for (;;) pause();
    return NULL;
}
#endif

pid_t cprocess_spawn_tied(const char *file, char *const argv[], char *const envp[]) {
#if defined(__linux__)
    struct tied_spawn request = {.file = file, .argv = argv, .envp = envp, .pid = -1, .error = 0};
    if (pipe2(request.done, O_CLOEXEC) != 0) return -1;
    pthread_attr_t attributes;
    pthread_attr_init(&attributes);
    pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attributes, 64 * 1024);
    pthread_t thread;
    int created = pthread_create(&thread, &attributes, tied_parent, &request);
    pthread_attr_destroy(&attributes);
    if (created != 0) {
        close(request.done[0]);
        close(request.done[1]);
        errno = created;
        return -1;
    }
    char byte;
    while (read(request.done[0], &byte, 1) < 0 && errno == EINTR) {}
    close(request.done[0]);
    close(request.done[1]);
    errno = request.error;
    return request.pid;
#else
    errno = ENOSYS;
    return -1;
#endif
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
