#include "CProcess.h"
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
