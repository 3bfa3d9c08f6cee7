/* test_progress.c: loading a model over 100 MB draws a progress bar on a
 * terminal, and never when output is redirected. */
#include "test.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/common.h"
#include "format/gguf.h"
#include "tools/gguf_write.h"

/* stories260K plus an unused 101 MB tensor: a "big" model that still runs. */
static int write_big_model(const char *path) {
    char err[TP_ERR_LEN];
    gguf_file *f = tp_gguf_open(SHARED_DIR "/models/stories260K.gguf", err);
    if (!f) return -1;
    gguf_writer *w = tp_gguf_writer_new(32);
    tp_gguf_w_copy_kv(w, f, NULL);
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        tp_gguf_w_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data);
    }
    uint64_t ne[2] = { 1024, 101 * 256 }; /* 101 MiB of f32 */
    float *pad = calloc(ne[0] * ne[1], sizeof(float));
    tp_gguf_w_tensor(w, "padding.weight", 0, 2, ne, pad);
    int rc = tp_gguf_writer_save(w, path, err);
    free(pad);
    tp_gguf_writer_free(w);
    tp_gguf_close(f);
    return rc;
}

TEST(cli_progress_bar_only_on_a_terminal) {
    if (system("command -v script >/dev/null 2>&1") != 0) {
        fprintf(stderr, "  (util-linux 'script' missing: cannot make a terminal)\n");
        CHECK(!"script(1) is needed for this test");
        return;
    }
    char *dir = test_tmpdir();
    REQUIRE(dir);
    char model[512], cmd[2048];
    snprintf(model, sizeof model, "%s/big.gguf", dir);
    REQUIRE(write_big_model(model) == 0);
    int st;
    /* script(1) runs the command on a pseudo-terminal: stdout and stderr are a tty */
    snprintf(cmd, sizeof cmd,
             "script -qec '%s --model %s --max-tokens 3 --threads 1 --max-parallel-tokens 1' /dev/null 2>&1",
             test_tempo_bin(), model);
    char *out = test_run_capture(cmd, &st);
    REQUIRE(out);
    CHECK_INT_EQ(st, 0);
    CHECK_MSG(strstr(out, "loading [") && strstr(out, "100%"), "no progress bar on a terminal:\n%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "%s --model %s --max-tokens 3 --threads 1 --max-parallel-tokens 1 2>&1",
             test_tempo_bin(), model);
    out = test_run_capture(cmd, &st);
    REQUIRE(out);
    CHECK_INT_EQ(st, 0);
    CHECK_MSG(!strstr(out, "loading ["), "progress bar drawn into a pipe:\n%s", out);
    free(out);
    unlink(model);
    rmdir(dir);
    free(dir);
}
