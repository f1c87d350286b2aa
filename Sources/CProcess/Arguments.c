// The program's arguments, as glibc hands them to the executable's constructors.
//
// Swift's runtime (6.x, Linux) finds argv for `CommandLine` with a static initializer that
// runs in every process before `main`: it opens /proc/self/maps, reads and sscanf()s every
// line to find the stack, then walks the stack for argv (CommandLine.cpp, `argvGrabber`).
// That is ~45 lines of procfs text rendered by the kernel and parsed on every start
// (~0.05 ms of `vault --version`, measured side by side; BENCHMARKS.md, "Fast start, fifth
// pass"). glibc passes (argc, argv, envp) to every function of a dynamically linked
// executable's .init_array, so the arguments are simply kept here, and the two runtime
// entry points of CommandLine.cpp are defined by this object: the static linker then never
// extracts CommandLine.cpp's member from libswiftCore.a, and its initializer is not linked.
// (Were it extracted anyway, by a symbol only it defines, the link would fail on the
// duplicate definitions: nothing is silently doubled.) `CommandLine.arguments`,
// `unsafeArgv` and `argc` read the same argv the runtime would have found.
//
// With a shared libswiftCore (debug builds) the runtime's own definitions and initializer
// stay in that library; whichever definition a call binds to, both give the same argv.
#include "CProcess.h"

static char *empty_argv[] = {0};
static int captured_argc = 0;
static char **captured_argv = empty_argv;
static char **override_argv = 0;
static int override_argc = 0;

__attribute__((constructor)) static void cprocess_capture_arguments(int argc, char **argv, char **envp) {
    (void)envp;
    if (argv != 0 && argc >= 0) {
        captured_argc = argc;
        captured_argv = argv;
    }
}

// The runtime's interface (SwiftShims RuntimeStubs.h, SWIFT_RUNTIME_STDLIB_INTERFACE).
void _swift_stdlib_overrideUnsafeArgvArgc(char **argv, int argc) {
    override_argv = argv;
    override_argc = argc;
}

char **_swift_stdlib_getUnsafeArgvArgc(int *outArgLen) {
    if (override_argv != 0) {
        *outArgLen = override_argc;
        return override_argv;
    }
    *outArgLen = captured_argc;
    return captured_argv;
}
