#define _GNU_SOURCE
#include "CProcess.h"
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
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
