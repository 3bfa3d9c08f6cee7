/* util.c: helpers shared by the tests. */
#include "test.h"

#include "core/common.h"
#include "gpu/gpu.h"

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

char *test_run_capture(const char *cmd, int *status) {
    FILE *p = popen(cmd, "r");
    if (!p) { *status = -1; return NULL; }
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    size_t n;
    while ((n = fread(buf + len, 1, cap - len - 1, p)) > 0) {
        len += n;
        if (len + 1 >= cap) { cap *= 2; buf = realloc(buf, cap); }
    }
    buf[len] = 0;
    int st = pclose(p);
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return buf;
}

const char *test_tempo_bin(void) {
    const char *b = getenv("TEMPO_BIN");
    return b && *b ? b : "build/asan/tempo";
}

int test_parse_ints(const char *s, int *out, int cap) {
    int n = 0;
    char *end;
    while (*s && n < cap) {
        long v = strtol(s, &end, 10);
        if (end == s) { s++; continue; }
        out[n++] = (int)v;
        s = end;
    }
    return n;
}

int test_reference_greedy_ids(int *out, int cap) {
    char err[TP_ERR_LEN];
    char *text = tp_read_file(SHARED_DIR "/models/reference/stories260K-llamacpp-greedy.txt", NULL, err);
    if (!text) return 0;
    int n = 0;
    char *sec = strstr(text, "=== model: models/stories260K.gguf  prompt: \"Once upon a time\"");
    char *line = sec ? strstr(sec, "generated_tokens:") : NULL;
    if (line) {
        char *eol = strchr(line, '\n');
        if (eol) *eol = 0;
        n = test_parse_ints(line + strlen("generated_tokens:"), out, cap);
    }
    free(text);
    return n;
}

char *test_tmpdir(void) {
    char tmpl[] = "/tmp/tempo-test-XXXXXX";
    char *d = mkdtemp(tmpl);
    return d ? strdup(d) : NULL;
}

/* One forward pass with a compute context made for it (2 threads): the tests' stand-in for a
 * session, so they can drive tp_forward on caches of their own. */
int test_forward(tp_model *m, tp_kv *kv, const tp_batch *b, char *err) {
    tp_compute *c = tp_compute_new(m, 2, 0, kv->capacity, err);
    if (!c) return -1;
    int rc = tp_forward(m, c, kv, b, err);
    tp_compute_free(c);
    return rc;
}

const char *test_backend;

int test_gpu_index(void) {
    static int idx = -2;
    if (idx != -2) return idx;
    idx = -1;
    tp_gpu_device_info d[16];
    char err[512];
    int n = tp_gpu_devices(d, 16, err);
    for (int i = 0; i < n && i < 16; i++) {
        if (!d[i].usable) continue;
        if (idx < 0 || (d[idx].software && !d[i].software)) idx = i;
    }
    return idx;
}

const char *test_gpu_device(void) {
    static char buf[16];
    int i = test_gpu_index();
    if (i < 0) return NULL;
    snprintf(buf, sizeof buf, "gpu:%d", i);
    return buf;
}
