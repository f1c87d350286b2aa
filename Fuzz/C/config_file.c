// Fuzz target `config-file`: CAgent's config reader (vault_config_read) on any file
// contents, against a plain model of its rules: lines split at '\n', each trimmed of spaces
// and tabs (and at its end of carriage returns: CRLF files), blank and '#' lines skipped, `key = value` split at the first '=' and both
// sides trimmed; a file with a NUL byte is refused. Every line the reader reports must be
// the model's next line, with the same number, key and value.
#include "CAgent.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char directory[512];
static char *environment[3];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    const char *temporary = getenv("TMPDIR");
    snprintf(directory, sizeof directory, "%s/vault-fuzz-config-XXXXXX", temporary != NULL && temporary[0] != '\0' ? temporary : "/tmp");
    if (mkdtemp(directory) == NULL) abort();
    char path[600];
    snprintf(path, sizeof path, "%s/gbg-vault", directory);
    if (mkdir(path, 0700) != 0) abort();
    static char home[600];
    snprintf(home, sizeof home, "XDG_CONFIG_HOME=%s", directory);
    environment[0] = home;
    environment[1] = "HOME=/nonexistent";
    environment[2] = NULL;
    return 0;
}

struct expected_line { int number; char key[512]; char value[512]; int has_value; };
struct check { const struct expected_line *lines; size_t count, seen; int failed; };

static void visit(int line, const char *key, const char *value, void *context) {
    struct check *check = context;
    if (check->seen >= check->count) { check->failed = 1; return; }
    const struct expected_line *want = &check->lines[check->seen++];
    if (want->number != line || strcmp(want->key, key) != 0 || want->has_value != (value != NULL)
        || (value != NULL && strcmp(want->value, value) != 0)) check->failed = 1;
}

static void trim_into(const uint8_t *start, const uint8_t *end, char *out) {
    while (start < end && (*start == ' ' || *start == '\t')) start++;
    while (end > start && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r')) end--;
    size_t n = (size_t)(end - start);
    if (n > 511) n = 511;
    memcpy(out, start, n);
    out[n] = '\0';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 4096) return 0;
    char path[600];
    snprintf(path, sizeof path, "%s/gbg-vault/config", directory);
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0 || (size > 0 && write(fd, data, size) != (ssize_t)size)) abort();
    close(fd);

    static struct expected_line lines[4097];
    size_t count = 0;
    int number = 0;
    for (const uint8_t *line = data; line < data + size;) {
        const uint8_t *end = memchr(line, '\n', (size_t)(data + size - line));
        if (end == NULL) end = data + size;
        number++;
        char content[512];
        trim_into(line, end, content);
        // Lines longer than the model's buffer are not compared (the input limit keeps them rare).
        if ((size_t)(end - line) < 500 && content[0] != '\0' && content[0] != '#') {
            struct expected_line *want = &lines[count++];
            want->number = number;
            const char *equals = strchr(content, '=');
            want->has_value = equals != NULL;
            if (equals == NULL) {
                strcpy(want->key, content);
            } else {
                trim_into((const uint8_t *)content, (const uint8_t *)equals, want->key);
                trim_into((const uint8_t *)equals + 1, (const uint8_t *)content + strlen(content), want->value);
            }
        } else if ((size_t)(end - line) >= 500) {
            return 0;
        }
        line = end + 1;
    }
    struct check check = { lines, count, 0, 0 };
    char why[256];
    int result = vault_config_read(environment, visit, &check, why, sizeof why);
    if (memchr(data, '\0', size) != NULL) {
        if (result != -1 || strstr(why, "NUL") == NULL) { fprintf(stderr, "config-file: a NUL byte was not refused\n"); abort(); }
        return 0;
    }
    if (result != 1 || check.failed || check.seen != check.count) {
        fprintf(stderr, "config-file: result %d, %zu of %zu lines as the model has them%s\n", result, check.seen, check.count,
                check.failed ? ", one differs" : "");
        abort();
    }
    return 0;
}
