/* test_model_load.c: the GGUF model loader's checks: every required key and
 * tensor, shapes, types; and that truncated or corrupted model files give a
 * one-line error from the whole loader (not only the GGUF reader), never a crash. */
#include "test.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/common.h"
#include "format/gguf.h"
#include "tools/gguf_write.h"
#include "model/model.h"
#include "tensor/dtype.h"

#define STORIES SHARED_DIR "/models/stories260K.gguf"

/* Re-write stories260K without `skip_key` / `skip_tensor`, or with tensor
 * `reshape` given a wrong shape; returns 0 and the path. */
static int write_variant(const char *path, const char *skip_key, const char *skip_tensor, const char *reshape,
                         const char *set_u32_key, uint32_t set_u32) {
    char err[TP_ERR_LEN];
    gguf_file *f = tp_gguf_open(STORIES, err);
    if (!f) return -1;
    gguf_writer *w = tp_gguf_writer_new(32);
    for (uint64_t i = 0; i < f->n_kv; i++) {
        char key[256];
        snprintf(key, sizeof key, "%.*s", (int)f->kv[i].key.len, f->kv[i].key.str);
        if (skip_key && !strcmp(key, skip_key)) continue;
        if (set_u32_key && !strcmp(key, set_u32_key)) { tp_gguf_w_u32(w, key, set_u32); continue; }
        tp_gguf_w_value(w, key, &f->kv[i].value);
    }
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        if (skip_tensor && !strcmp(t->name, skip_tensor)) continue;
        uint64_t ne[4] = { t->ne[0], t->ne[1], t->ne[2], t->ne[3] };
        if (reshape && !strcmp(t->name, reshape)) {
            /* same bytes, other shape: swap the two dimensions */
            uint64_t tmp = ne[0]; ne[0] = ne[1]; ne[1] = tmp;
        }
        tp_gguf_w_tensor(w, t->name, t->type, t->n_dims, ne, t->data);
    }
    int rc = tp_gguf_writer_save(w, path, err);
    tp_gguf_writer_free(w);
    tp_gguf_close(f);
    return rc;
}

static void expect_load_error(const char *path, const char *want) {
    char err[TP_ERR_LEN] = "";
    tp_load_opts o = { 0 };
    tp_model *m = tp_model_load(path, &o, err);
    CHECK_MSG(!m, "%s loaded, expected an error containing '%s'", path, want);
    if (m) tp_model_free(m);
    CHECK_MSG(strstr(err, want) != NULL, "error '%s' lacks '%s'", err, want);
    CHECK_MSG(!strchr(err, '\n'), "error is not one line: '%s'", err);
}

TEST(model_load_missing_key_tensor_and_bad_shape) {
    char *dir = test_tmpdir();
    REQUIRE(dir);
    char p[512];
    snprintf(p, sizeof p, "%s/v.gguf", dir);

    REQUIRE(write_variant(p, "llama.block_count", NULL, NULL, NULL, 0) == 0);
    expect_load_error(p, "missing required key llama.block_count");
    REQUIRE(write_variant(p, "general.architecture", NULL, NULL, NULL, 0) == 0);
    expect_load_error(p, "missing required key general.architecture");
    REQUIRE(write_variant(p, NULL, "blk.2.ffn_up.weight", NULL, NULL, 0) == 0);
    expect_load_error(p, "missing required tensor blk.2.ffn_up.weight");
    REQUIRE(write_variant(p, NULL, "output_norm.weight", NULL, NULL, 0) == 0);
    expect_load_error(p, "missing required tensor output_norm.weight");
    REQUIRE(write_variant(p, NULL, NULL, "blk.1.attn_k.weight", NULL, 0) == 0);
    expect_load_error(p, "tensor blk.1.attn_k.weight has shape [32, 64]");
    /* 8 heads over 3 KV heads is not grouped-query attention */
    REQUIRE(write_variant(p, NULL, NULL, NULL, "llama.attention.head_count_kv", 3) == 0);
    expect_load_error(p, "llama.attention.head_count = 8 is not a multiple of llama.attention.head_count_kv = 3");
    /* a layer count that does not match the tensors */
    REQUIRE(write_variant(p, NULL, NULL, NULL, "llama.block_count", 6) == 0);
    expect_load_error(p, "missing required tensor blk.5.attn_norm.weight");
    REQUIRE(write_variant(p, NULL, NULL, NULL, "llama.rope.dimension_count", 9) == 0);
    expect_load_error(p, "llama.rope.dimension_count = 9 must be even");

    /* the unmodified copy loads: the variants fail for the reason tested */
    REQUIRE(write_variant(p, NULL, NULL, NULL, NULL, 0) == 0);
    char err[TP_ERR_LEN];
    tp_load_opts o = { 0 };
    tp_model *m = tp_model_load(p, &o, err);
    CHECK_MSG(m != NULL, "%s", err);
    tp_model_free(m);
    unlink(p);
    rmdir(dir);
    free(dir);
}

TEST(model_load_missing_file_and_directory_errors) {
    expect_load_error("no/such/model.gguf", "no/such/model.gguf: cannot open");
    expect_load_error(SHARED_DIR "/README.md", "not a GGUF file");
}

/* Truncate every test model at 64 points and load it through the whole loader. */
TEST(model_load_truncated_models_fail_cleanly) {
    const char *models[] = { STORIES, SHARED_DIR "/models/generated/stories260K-q4_0.gguf",
                             SHARED_DIR "/models/llama-2-tiny-random.gguf" };
    char *dir = test_tmpdir();
    REQUIRE(dir);
    char p[512];
    snprintf(p, sizeof p, "%s/t.gguf", dir);
    for (size_t mi = 0; mi < sizeof models / sizeof models[0]; mi++) {
        size_t len;
        char err[TP_ERR_LEN];
        char *data = tp_read_file(models[mi], &len, err);
        REQUIRE(data);
        for (int k = 0; k < 64; k++) {
            /* dense near the start (header, metadata), then spread over the data */
            size_t cut = k < 32 ? (size_t)k * k * 7 : len / 64 * (size_t)k;
            if (cut >= len) cut = len - 1;
            FILE *f = fopen(p, "wb");
            REQUIRE(f);
            fwrite(data, 1, cut, f);
            fclose(f);
            tp_load_opts o = { 0 };
            err[0] = 0;
            tp_model *m = tp_model_load(p, &o, err);
            CHECK_MSG(!m, "%s cut at %zu loaded", models[mi], cut);
            if (m) tp_model_free(m);
            CHECK_MSG(err[0] && !strchr(err, '\n'), "cut at %zu: bad error '%s'", cut, err);
        }
        free(data);
    }
    unlink(p);
    rmdir(dir);
    free(dir);
}
