/* test_gguf.c: GGUF reader on the real model files, writer round trip, and
 * robustness against truncated and corrupted files. */
#include "test.h"

#include "core/common.h"
#include "format/gguf.h"
#include "tensor/dtype.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MODELS SHARED_DIR "/models"

static int64_t get_int(const gguf_file *f, const char *key) {
    char err[TP_ERR_LEN] = "";
    int64_t v = -12345;
    if (!gguf_get_int(f, key, &v, err)) return -12345;
    return v;
}

TEST(gguf_reads_stories260K) {
    char err[TP_ERR_LEN] = "";
    gguf_file *f = gguf_open(MODELS "/stories260K.gguf", err);
    CHECK_MSG(f != NULL, "open failed: %s", err);
    REQUIRE(f != NULL);
    CHECK_INT_EQ(f->version, 3);
    CHECK_INT_EQ(f->alignment, 32);
    CHECK(f->data_offset % 32 == 0);
    char *arch = gguf_get_string(f, "general.architecture");
    REQUIRE(arch != NULL);
    CHECK(strcmp(arch, "llama") == 0);
    free(arch);
    CHECK_INT_EQ(get_int(f, "llama.embedding_length"), 64);
    CHECK_INT_EQ(get_int(f, "llama.block_count"), 5);
    CHECK_INT_EQ(get_int(f, "llama.attention.head_count"), 8);
    CHECK_INT_EQ(get_int(f, "llama.attention.head_count_kv"), 4);
    CHECK_INT_EQ(get_int(f, "llama.feed_forward_length"), 172);
    CHECK(gguf_find(f, "llama.rope.freq_base") == NULL);

    double eps = 0;
    CHECK(gguf_get_float(f, "llama.attention.layer_norm_rms_epsilon", &eps, err));
    CHECK_NEAR(eps, 1e-5, 1e-9);

    /* type mismatch names the key */
    int64_t iv;
    err[0] = 0;
    CHECK(!gguf_get_int(f, "general.architecture", &iv, err));
    CHECK(strstr(err, "general.architecture") != NULL);
    /* absent key: false with an empty err */
    strcpy(err, "stale");
    CHECK(!gguf_get_int(f, "no.such.key", &iv, err));
    CHECK(err[0] == 0);

    const gguf_kv *tok = gguf_find(f, "tokenizer.ggml.tokens");
    REQUIRE(tok != NULL);
    CHECK_INT_EQ(tok->value.type, GGUF_ARRAY);
    CHECK_INT_EQ(tok->value.v.arr.elem_type, GGUF_STRING);
    CHECK_INT_EQ(tok->value.v.arr.count, 512);
    gguf_str s0 = gguf_arr_str(&tok->value, 0);
    CHECK(s0.len == 5 && memcmp(s0.str, "<unk>", 5) == 0);
    gguf_str s1 = gguf_arr_str(&tok->value, 1);
    CHECK(s1.len == 3 && memcmp(s1.str, "<s>", 3) == 0);
    CHECK(gguf_arr_str(&tok->value, 512).str == NULL); /* out of range */
    const gguf_kv *sc = gguf_find(f, "tokenizer.ggml.scores");
    REQUIRE(sc != NULL);
    CHECK_INT_EQ(sc->value.v.arr.count, 512);
    CHECK_INT_EQ(sc->value.v.arr.elem_type, GGUF_F32);
    const gguf_kv *tt = gguf_find(f, "tokenizer.ggml.token_type");
    REQUIRE(tt != NULL);
    CHECK_INT_EQ(tt->value.v.arr.count, 512);
    CHECK_INT_EQ(gguf_arr_int(&tt->value, 0), 2); /* <unk> is UNKNOWN */
    CHECK_INT_EQ(gguf_arr_int(&tt->value, 1), 3); /* <s> is CONTROL */

    const gguf_tensor *te = gguf_find_tensor(f, "token_embd.weight");
    REQUIRE(te != NULL);
    CHECK_INT_EQ(te->n_dims, 2);
    CHECK_INT_EQ(te->ne[0], 64);
    CHECK_INT_EQ(te->ne[1], 512);
    CHECK_INT_EQ(te->type, TP_F32);
    CHECK_INT_EQ(te->nbytes, 64 * 512 * 4);
    CHECK((const uint8_t *)te->data >= f->map + f->data_offset);
    CHECK((const uint8_t *)te->data + te->nbytes <= f->map + f->map_size);
    /* token_embd and output hold the same values in this model */
    const gguf_tensor *out = gguf_find_tensor(f, "output.weight");
    REQUIRE(out != NULL);
    CHECK(out->nbytes == te->nbytes && memcmp(out->data, te->data, te->nbytes) == 0);
    CHECK(gguf_find_tensor(f, "blk.4.ffn_down.weight") != NULL);
    CHECK(gguf_find_tensor(f, "blk.5.ffn_down.weight") == NULL);
    /* 2 + 9 per layer + output_norm */
    CHECK_INT_EQ(f->n_tensors, 3 + 9 * 5);
    gguf_close(f);
}

static void check_opens(const char *path, uint32_t want_type_of_q) {
    char err[TP_ERR_LEN] = "";
    gguf_file *f = gguf_open(path, err);
    CHECK_MSG(f != NULL, "%s: %s", path, err);
    if (!f) return;
    const gguf_tensor *q = gguf_find_tensor(f, "blk.0.attn_q.weight");
    CHECK(q != NULL);
    if (q) CHECK_INT_EQ(q->type, want_type_of_q);
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        CHECK(t->data != NULL);
        CHECK((const uint8_t *)t->data + t->nbytes <= f->map + f->map_size);
    }
    gguf_close(f);
}

TEST(gguf_reads_f16_q8_0_q4_0_and_tiny_random) {
    check_opens(MODELS "/generated/stories260K-f16.gguf", TP_F16);
    check_opens(MODELS "/generated/stories260K-q8_0.gguf", TP_Q8_0);
    check_opens(MODELS "/generated/stories260K-q4_0.gguf", TP_Q4_0);
    check_opens(MODELS "/llama-2-tiny-random.gguf", TP_F16);

    char err[TP_ERR_LEN] = "";
    gguf_file *f = gguf_open(MODELS "/llama-2-tiny-random.gguf", err);
    REQUIRE(f != NULL);
    const gguf_kv *tok = gguf_find(f, "tokenizer.ggml.tokens");
    REQUIRE(tok != NULL);
    CHECK_INT_EQ(tok->value.v.arr.count, 32000);
    gguf_close(f);
}
