// Fuzz target `token-arguments`: the pre-`main` client's reading of `vault token …`
// (Sources/CTokenClient, included whole for its static functions) on any argument list
// (the input split at NUL bytes). What it accepts must be what the full command reads the
// same way: the words before `token` are global options, the profile is a non-empty word
// not starting with '-', every option's value is non-empty and does not start with '-',
// and it stands aside for `--`, `--help`, a short option, and any option given twice.
// Then the request is prepared against an environment where no agent can be found, which
// must stand aside without sending anything.
#include "../../Sources/CTokenClient/TokenClient.c"

#include <stdint.h>
#include <stdio.h>

enum { MAX_WORDS = 64 };

static int counts_as(const char *word, const char *name) {
    size_t n = strlen(name);
    return strncmp(word, name, n) == 0 && (word[n] == '\0' || word[n] == '=');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 2048) return 0;
    char *copy = malloc(size + 1);
    memcpy(copy, data, size);
    copy[size] = '\0';
    char *argv[MAX_WORDS + 2];
    int argc = 0;
    argv[argc++] = "vault";
    for (size_t start = 0; start <= size && argc < MAX_WORDS + 1;) {
        argv[argc++] = copy + start;
        start += strlen(copy + start) + 1;
    }
    argv[argc] = NULL;

    struct parsed parsed;
    int accepted = parse(argc, argv, &parsed);
    if (accepted) {
        int token_at = -1;
        for (int i = 1; i < argc; i++) if (strcmp(argv[i], "token") == 0) { token_at = i; break; }
        const char *why = NULL;
        if (token_at < 0) why = "no token word";
        else if (parsed.profile == NULL || parsed.profile[0] == '\0' || parsed.profile[0] == '-') why = "a bad profile";
        for (int i = 0; i < OPTION_COUNT && why == NULL; i++) {
            if (parsed.values[i] != NULL && (parsed.values[i][0] == '\0' || parsed.values[i][0] == '-')) why = "a bad option value";
            int seen = 0;
            for (int w = 1; w < argc; w++) seen += counts_as(argv[w], token_options[i].name);
            if (seen > 1) why = "an option given twice";
        }
        for (int w = 1; w < argc && why == NULL; w++) {
            if (strcmp(argv[w], "--") == 0 || strcmp(argv[w], "--help") == 0 || strcmp(argv[w], "-h") == 0) why = "--, --help or -h";
            else if (argv[w][0] == '-' && argv[w][1] != '-') why = "a short option";
            else if (w < token_at && argv[w][0] != '-' && (w == 1 || argv[w - 1][0] != '-' || strchr(argv[w - 1], '=') != NULL)) {
                why = "a word before token that is neither a global option nor its value";
            }
        }
        if (why != NULL) {
            fprintf(stderr, "token-arguments: accepted with %s\n", why);
            abort();
        }
    }
    char *environment[] = { "HOME=/nonexistent/fuzz", "XDG_RUNTIME_DIR=/nonexistent/fuzz/run", "XDG_CONFIG_HOME=/nonexistent/fuzz",
                            "VAULT_PATH=/nonexistent/fuzz/vault.db", NULL };
    char socket[PATH_MAX], out[16 * 1024];
    long long wait_ms = 0;
    if (prepare(argc, argv, environment, socket, sizeof socket, out, sizeof out, &wait_ms) >= 0) {
        fprintf(stderr, "token-arguments: a request was prepared with no agent to find\n");
        abort();
    }
    free(copy);
    return 0;
}
