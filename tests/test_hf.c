/* test_hf.c: safetensors reader/writer and Hugging Face model folders.
 *
 * The equivalence tests write their own folders:
 *   (a) stories260K (real GGUF) exported to Hugging Face names, q/k rows put in
 *       rotate_half order, config.json, in F32 and BF16: the same greedy ids and
 *       logits as the GGUF (the BF16 one against a GGUF holding the same BF16 bytes).
 *       stories260K's SentencePiece vocabulary cannot be written as a byte-level
 *       BPE tokenizer.json, so its folder gets a stand-in tokenizer.json of 512
 *       tokens (<unk> <s> </s>, the 256 byte characters, fillers): these tests
 *       feed token ids.
 *   (b) a random Llama-3-shaped model (tied embeddings, llama3 rope scaling, the
 *       real Llama 3 tokenizer.json) written as GGUF (q/k permuted the way
 *       llama.cpp's converter does, rope_freqs computed the converter's way) and as a
 *       two-shard Hugging Face folder: equal token ids and logits.
 * Then errors: corrupt safetensors files, bad indexes, bad config.json.
 */
#include "test.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "core/common.h"
#include "format/gguf.h"
#include "tools/gguf_write.h"
#include "format/safetensors.h"
#include "tools/st_write.h"
#include "model/hf.h"
#include "model/model.h"
#include "tensor/dtype.h"
#include "tokenizer/tokenizer.h"

#define STORIES SHARED_DIR "/models/stories260K.gguf"
#define LLAMA3_DIR SHARED_DIR "/tokenizer-tests/llama3-hf"
#define LLAMA3_VOCAB SHARED_DIR "/tokenizer-tests/generated/ggml-vocab-llama3-from-tokenizer-json.gguf"

/* ---- small helpers ---- */

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(data, 1, n, f);
    fclose(f);
}

static void write_text(const char *path, const char *text) { write_file(path, text, strlen(text)); }

static bool copy_file(const char *from, const char *to) {
    char err[TP_ERR_LEN];
    size_t n;
    char *buf = tp_read_file(from, &n, err);
    if (!buf) return false;
    write_file(to, buf, n);
    free(buf);
    return true;
}

static char *join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static void rm_rf(const char *dir) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "  could not remove %s\n", dir);
}

/* Frees a model, including what tp_model_load_hf mapped. Works whether or not
 * tp_model_free already calls tp_hf_free. */
static void close_model(tp_model *m) {
    if (!m) return;
    tp_hf_free(m->hf);
    m->hf = NULL;
    tp_model_free(m);
}

static tp_model *load_model(const char *path, int max_ctx, char *err) {
    tp_load_opts o = { 0 };
    err[0] = 0;
    tp_model *m = tp_model_load(path, &o, err);
    if (!m) fprintf(stderr, "  load %s: %s\n", path, err);
    return m;
}

/* Causal prefill of toks at positions pos; all logits into out ([n][n_vocab]). */
static bool run(tp_model *m, tp_kv *kv, const int32_t *toks, const int32_t *pos, int n, tp_visibility vis,
                float *out) {
    char err[TP_ERR_LEN];
    tp_batch b = { .n = n, .tokens = toks, .pos = pos, .step = -1, .vis = vis, .logits = out };
    if (test_forward(m, kv, &b, err) != 0) { fprintf(stderr, "  forward: %s\n", err); return false; }
    return true;
}

static tp_kv *new_kv(const tp_model *m, int cap) {
    char err[TP_ERR_LEN];
    tp_kv *kv = tp_kv_new(m->hp.n_layers, m->hp.n_kv_heads * m->hp.head_dim, TP_KV_F32, cap, 0, err);
    if (!kv) fprintf(stderr, "  kv: %s\n", err);
    return kv;
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++) if (x[i] > x[b]) b = i;
    return b;
}

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double w = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= w)) w = d; /* NaN propagates as a failure */
    }
    return w;
}

/* Greedy decoding from a prompt: n ids into out. */
static int greedy(tp_model *m, const int32_t *prompt, int np, int n, int32_t *out) {
    tp_kv *kv = new_kv(m, np + n + 1);
    if (!kv) return 0;
    int V = m->hp.n_vocab;
    float *lg = malloc(sizeof(float) * (size_t)V * (size_t)np);
    int32_t pos[64];
    for (int i = 0; i < np; i++) pos[i] = i;
    int got = 0;
    if (run(m, kv, prompt, pos, np, TP_VIS_CAUSAL, lg)) {
        int32_t next = argmax(lg + (size_t)(np - 1) * V, V);
        for (got = 0; got < n; got++) {
            out[got] = next;
            int32_t p = np + got;
            if (got + 1 < n && !run(m, kv, &next, &p, 1, TP_VIS_ISOLATED, lg)) break;
            next = argmax(lg, V);
        }
    }
    free(lg);
    tp_kv_free(kv);
    return got;
}

/* GPT-2's byte -> character mapping, UTF-8 encoded. */
static int byte_char(int b, char *out) {
    int cp;
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) cp = b;
    else {
        int n = 0;
        for (int x = 0; x < b; x++)
            if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) n++;
        cp = 256 + n;
    }
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

#define LLAMA3_REGEX                                                                                   \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|" \
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

/* A byte-level BPE tokenizer.json of n tokens: <unk> <s> </s>, the 256 byte
 * characters, then fillers; no merges. */
static void write_standin_tokenizer(const char *dir, int n) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    const char *sp[3] = { "<unk>", "<s>", "</s>" };
    for (int i = 0; i < 3; i++) {
        cJSON *a = cJSON_CreateObject();
        cJSON_AddNumberToObject(a, "id", i);
        cJSON_AddStringToObject(a, "content", sp[i]);
        cJSON_AddBoolToObject(a, "special", true);
        cJSON_AddItemToArray(added, a);
    }
    cJSON_AddNullToObject(root, "normalizer");
    cJSON *pt = cJSON_AddObjectToObject(root, "pre_tokenizer");
    cJSON_AddStringToObject(pt, "type", "Sequence");
    cJSON *seq = cJSON_AddArrayToObject(pt, "pretokenizers");
    cJSON *split = cJSON_CreateObject();
    cJSON_AddStringToObject(split, "type", "Split");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(split, "pattern"), "Regex", LLAMA3_REGEX);
    cJSON_AddStringToObject(split, "behavior", "Isolated");
    cJSON_AddBoolToObject(split, "invert", false);
    cJSON_AddItemToArray(seq, split);
    cJSON *bl = cJSON_CreateObject();
    cJSON_AddStringToObject(bl, "type", "ByteLevel");
    cJSON_AddBoolToObject(bl, "add_prefix_space", false);
    cJSON_AddBoolToObject(bl, "use_regex", false);
    cJSON_AddItemToArray(seq, bl);
    cJSON_AddStringToObject(cJSON_AddObjectToObject(root, "decoder"), "type", "ByteLevel");
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddBoolToObject(model, "ignore_merges", true);
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    for (int i = 3; i < n; i++) {
        char s[16];
        if (i < 259) s[byte_char(i - 3, s)] = 0;
        else snprintf(s, sizeof s, "<x%d>", i);
        cJSON_AddNumberToObject(vocab, s, i);
    }
    cJSON_AddArrayToObject(model, "merges");
    char *txt = cJSON_Print(root);
    char *p = join(dir, "tokenizer.json");
    write_text(p, txt);
    free(p);
    free(txt);
    cJSON_Delete(root);
    p = join(dir, "tokenizer_config.json");
    write_text(p, "{\"bos_token\": \"<s>\", \"eos_token\": \"</s>\", \"add_bos_token\": true}");
    free(p);
}

/* ---- stories260K exported to a Hugging Face folder ---- */

#define ST_DIM 64
#define ST_LAYERS 5
#define ST_HEADS 8
#define ST_KV 4
#define ST_FFN 172
#define ST_VOCAB 512

static const char *stories_config =
    "{\n  \"architectures\": [\"LlamaForCausalLM\"],\n  \"model_type\": \"llama\",\n"
    "  \"hidden_size\": 64,\n  \"intermediate_size\": 172,\n  \"num_hidden_layers\": 5,\n"
    "  \"num_attention_heads\": 8,\n  \"num_key_value_heads\": 4,\n  \"max_position_embeddings\": 2048,\n"
    "  \"rms_norm_eps\": 1e-05,\n  \"rope_theta\": 10000.0,\n  \"rope_scaling\": null,\n"
    "  \"tie_word_embeddings\": false,\n  \"vocab_size\": 512,\n  \"hidden_act\": \"silu\",\n"
    "  \"bos_token_id\": 1,\n  \"eos_token_id\": 2,\n  \"torch_dtype\": \"float32\"\n}\n";

/* GGUF name -> Hugging Face name; *heads > 0 for q/k (rows to put in rotate_half order). */
static bool hf_name(const char *g, char *out, size_t cap, int *heads) {
    *heads = 0;
    if (!strcmp(g, "token_embd.weight")) return snprintf(out, cap, "model.embed_tokens.weight"), true;
    if (!strcmp(g, "output_norm.weight")) return snprintf(out, cap, "model.norm.weight"), true;
    if (!strcmp(g, "output.weight")) return snprintf(out, cap, "lm_head.weight"), true;
    int l, k;
    char part[32];
    if (sscanf(g, "blk.%d.%31[a-z_].weight%n", &l, part, &k) != 2 || g[k]) return false;
    static const char *const map[][2] = {
        { "attn_norm", "input_layernorm" }, { "ffn_norm", "post_attention_layernorm" },
        { "attn_q", "self_attn.q_proj" },   { "attn_k", "self_attn.k_proj" },
        { "attn_v", "self_attn.v_proj" },   { "attn_output", "self_attn.o_proj" },
        { "ffn_gate", "mlp.gate_proj" },    { "ffn_up", "mlp.up_proj" },
        { "ffn_down", "mlp.down_proj" },
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (!strcmp(part, map[i][0])) {
            snprintf(out, cap, "model.layers.%d.%s.weight", l, map[i][1]);
            if (!strcmp(part, "attn_q")) *heads = ST_HEADS;
            if (!strcmp(part, "attn_k")) *heads = ST_KV;
            return true;
        }
    return false;
}

/* Row r of the rotate_half (HF) layout comes from this row of the GGUF layout:
 * within a head, HF row i < half is GGUF row 2i, HF row half + i is GGUF 2i + 1. */
static int gguf_row_of_hf(int r, int head_dim) {
    int h = r / head_dim, j = r % head_dim, half = head_dim / 2;
    return h * head_dim + (j < half ? 2 * j : 2 * (j - half) + 1);
}

/* Export stories260K to dir with every tensor in dtype ("F32", "F16" or "BF16").
 * With gguf_out, also write a GGUF holding the same (rounded) values in GGUF order.
 * pad: put a 1-byte tensor first, so that every other tensor is unaligned. */
static bool export_stories_opt(const char *dir, const char *dtype, const char *gguf_out, bool pad) {
    bool half = strcmp(dtype, "F32") != 0, bf16 = strcmp(dtype, "BF16") == 0;
    char err[TP_ERR_LEN];
    gguf_file *src = tp_gguf_open(STORIES, err);
    if (!src) { fprintf(stderr, "  %s\n", err); return false; }
    st_writer *w = tp_st_writer_new();
    tp_st_w_meta(w, "format", "pt");
    if (pad) { /* one byte first: every later tensor is unaligned in the file */
        uint8_t b = 7;
        uint64_t s1[1] = { 1 };
        tp_st_w_tensor(w, "extra.pad", "U8", 1, s1, &b);
    }
    gguf_writer *gw = gguf_out ? tp_gguf_writer_new(0) : NULL;
    if (gw) tp_gguf_w_copy_kv(gw, src, NULL);
    bool ok = true;
    for (uint64_t i = 0; i < src->n_tensors && ok; i++) {
        const gguf_tensor *t = &src->tensors[i];
        char name[96];
        int heads;
        if (t->type != TP_F32 || !hf_name(t->name, name, sizeof name, &heads)) { ok = false; break; }
        size_t n_in = t->ne[0], n_rows = t->n_dims == 2 ? t->ne[1] : 1, n = n_in * n_rows;
        const float *g = t->data;
        float *hf = malloc(n * sizeof(float));
        for (size_t r = 0; r < n_rows; r++) {
            size_t from = heads ? (size_t)gguf_row_of_hf((int)r, (int)(n_rows / heads)) : r;
            memcpy(hf + r * n_in, g + from * n_in, n_in * sizeof(float));
        }
        uint64_t shape[2] = { n_rows, n_in };
        if (t->n_dims == 1) shape[0] = n_in;
        if (half) {
            uint16_t *b = malloc(n * 2), *gb = malloc(n * 2);
            for (size_t k = 0; k < n; k++) {
                b[k] = bf16 ? tp_f32_to_bf16(hf[k]) : tp_f32_to_f16(hf[k]);
                gb[k] = bf16 ? tp_f32_to_bf16(g[k]) : tp_f32_to_f16(g[k]);
            }
            tp_st_w_tensor(w, name, dtype, (int)t->n_dims, shape, b);
            if (gw) tp_gguf_w_tensor(gw, t->name, bf16 ? TP_BF16 : TP_F16, t->n_dims, t->ne, gb);
            free(b);
            free(gb);
        } else {
            tp_st_w_tensor(w, name, "F32", (int)t->n_dims, shape, hf);
            if (gw) tp_gguf_w_tensor(gw, t->name, TP_F32, t->n_dims, t->ne, g);
        }
        free(hf);
    }
    char *p = join(dir, "model.safetensors");
    if (ok && tp_st_writer_save(w, p, err) != 0) { fprintf(stderr, "  %s\n", err); ok = false; }
    free(p);
    if (ok && gw && tp_gguf_writer_save(gw, gguf_out, err) != 0) { fprintf(stderr, "  %s\n", err); ok = false; }
    tp_st_writer_free(w);
    tp_gguf_writer_free(gw);
    tp_gguf_close(src);
    p = join(dir, "config.json");
    write_text(p, stories_config);
    free(p);
    write_standin_tokenizer(dir, ST_VOCAB);
    return ok;
}

static bool export_stories(const char *dir, const char *dtype, const char *gguf_out) {
    return export_stories_opt(dir, dtype, gguf_out, false);
}

bool test_export_stories_hf(const char *dir) { return export_stories(dir, "F32", NULL); }

static const int32_t stories_prompt[5] = { 1, 403, 407, 261, 378 };

/* Compare a GGUF and an HF model: prompt logits at every position and 40 greedy ids from BOS. */
static void compare_models(tp_model *g, tp_model *h, double tol, const char *what) {
    int V = g->hp.n_vocab;
    CHECK_INT_EQ(h->hp.n_vocab, V);
    float *lg = malloc(sizeof(float) * (size_t)V * 5), *lh = malloc(sizeof(float) * (size_t)V * 5);
    int32_t pos[5] = { 0, 1, 2, 3, 4 };
    tp_kv *kg = new_kv(g, 8), *kh = new_kv(h, 8);
    REQUIRE(kg && kh);
    CHECK(run(g, kg, stories_prompt, pos, 5, TP_VIS_CAUSAL, lg));
    CHECK(run(h, kh, stories_prompt, pos, 5, TP_VIS_CAUSAL, lh));
    double d = max_abs_diff(lg, lh, (size_t)V * 5);
    fprintf(stderr, "  %s: max |logit difference| over 5 prompt positions = %.3g\n", what, d);
    CHECK_NEAR(d, 0, tol);
    tp_kv_free(kg);
    tp_kv_free(kh);

    int32_t bos = 1, ig[40], ih[40];
    CHECK_INT_EQ(greedy(g, &bos, 1, 40, ig), 40);
    CHECK_INT_EQ(greedy(h, &bos, 1, 40, ih), 40);
    CHECK(memcmp(ig, ih, sizeof ig) == 0);
    free(lg);
    free(lh);
}

static void check_stories_hparams(const tp_model *h) {
    CHECK_INT_EQ(h->hp.dim, ST_DIM);
    CHECK_INT_EQ(h->hp.n_layers, ST_LAYERS);
    CHECK_INT_EQ(h->hp.n_heads, ST_HEADS);
    CHECK_INT_EQ(h->hp.n_kv_heads, ST_KV);
    CHECK_INT_EQ(h->hp.head_dim, 8);
    CHECK_INT_EQ(h->hp.rope_dim, 8);
    CHECK_INT_EQ(h->hp.ffn_dim, ST_FFN);
    CHECK_INT_EQ(h->hp.n_ctx, 2048);
    CHECK_INT_EQ(h->hp.n_vocab, ST_VOCAB);
    CHECK_NEAR(h->hp.eps, 1e-5, 1e-12);
    CHECK_NEAR(h->hp.rope_base, 10000, 0);
    CHECK(h->hp.rope_split_half);
    CHECK(h->output.data != h->tok_embd.data); /* lm_head is its own tensor */
    CHECK(h->rope_freq_factors == NULL);
    CHECK_INT_EQ(tp_tokenizer_bos(h->tok), 1);
    CHECK_INT_EQ(tp_tokenizer_eos(h->tok), 2);
}

/* Is p inside one of the folder's mapped shards? */
static bool in_mapping(const tp_model *m, const void *p) {
    const st_set *s = m->hf;
    for (int i = 0; s && i < s->n_files; i++) {
        const uint8_t *b = s->files[i]->map;
        if ((const uint8_t *)p >= b && (const uint8_t *)p < b + s->files[i]->map_size) return true;
    }
    return false;
}

TEST(hf_stories260K_f32_matches_gguf) {
    char *dir = test_tmpdir();
    REQUIRE(dir);
    REQUIRE(export_stories(dir, "F32", NULL));
    char err[TP_ERR_LEN];
    tp_model *g = load_model(STORIES, 0, err), *h = load_model(dir, 0, err);
    if (g && h) {
        check_stories_hparams(h);
        compare_models(g, h, 1e-4, "stories260K F32");
        /* weights are mapped in place, nothing converted */
        CHECK_INT_EQ(h->owned_bytes, 0);
        CHECK_INT_EQ(h->weight_bytes, g->weight_bytes);
        CHECK(in_mapping(h, h->tok_embd.data) && in_mapping(h, h->layers[4].w_down.data));
        CHECK(in_mapping(h, h->out_norm));
        /* the split-half rotation is what makes them agree: adjacent pairs on the
         * rotate_half rows give clearly different logits */
        h->hp.rope_split_half = false;
        int V = h->hp.n_vocab;
        float *lg = malloc(sizeof(float) * (size_t)V * 5), *lh = malloc(sizeof(float) * (size_t)V * 5);
        int32_t pos[5] = { 0, 1, 2, 3, 4 };
        tp_kv *kg = new_kv(g, 8), *kh = new_kv(h, 8);
        CHECK(run(g, kg, stories_prompt, pos, 5, TP_VIS_CAUSAL, lg));
        CHECK(run(h, kh, stories_prompt, pos, 5, TP_VIS_CAUSAL, lh));
        CHECK(max_abs_diff(lg, lh, (size_t)V * 5) > 1e-2);
        tp_kv_free(kg);
        tp_kv_free(kh);
        free(lg);
        free(lh);
    }
    CHECK(g && h);
    tp_model_free(g);
    close_model(h);
    rm_rf(dir);
    free(dir);
}

/* A half-precision export against a GGUF holding the same rounded weights. */
static void check_half_export(const char *dtype, uint32_t type) {
    char *dir = test_tmpdir();
    REQUIRE(dir);
    char *gpath = join(dir, "stories-half.gguf.bin"); /* inside the folder, not a .safetensors */
    REQUIRE(export_stories(dir, dtype, gpath));
    char err[TP_ERR_LEN], what[64];
    tp_model *g = load_model(gpath, 0, err), *h = load_model(dir, 0, err);
    if (g && h) {
        check_stories_hparams(h);
        CHECK_INT_EQ(h->tok_embd.type, type);
        CHECK_INT_EQ(h->layers[0].wq.type, type);
        CHECK_INT_EQ(h->output.type, type);
        snprintf(what, sizeof what, "stories260K %s", dtype);
        compare_models(g, h, 1e-4, what);
        /* matrices mapped; the 11 norm vectors converted to f32 and counted */
        CHECK_INT_EQ(h->owned_bytes, (2 * ST_LAYERS + 1) * ST_DIM * 4);
        CHECK_INT_EQ(h->weight_bytes, g->weight_bytes);
        CHECK(in_mapping(h, h->layers[2].wk.data));
        CHECK(!in_mapping(h, h->out_norm));
        for (int i = 0; i < ST_DIM; i++) CHECK(h->out_norm[i] == g->out_norm[i]);
    }
    CHECK(g && h);
    tp_model_free(g);
    close_model(h);
    free(gpath);
    rm_rf(dir);
    free(dir);
}

TEST(hf_stories260K_bf16_matches_gguf_with_same_bf16_weights) { check_half_export("BF16", TP_BF16); }
TEST(hf_stories260K_f16_matches_gguf_with_same_f16_weights) { check_half_export("F16", TP_F16); }

/* Tensors whose bytes are not aligned for their type in the file are copied
 * (and counted); tensors the model does not use are ignored. */
TEST(hf_misaligned_tensors_are_copied_and_counted) {
    char *dir = test_tmpdir();
    REQUIRE(dir);
    REQUIRE(export_stories_opt(dir, "F32", NULL, true));
    char err[TP_ERR_LEN];
    tp_model *g = load_model(STORIES, 0, err), *h = load_model(dir, 0, err);
    if (g && h) {
        CHECK((uintptr_t)h->tok_embd.data % 4 == 0 && (uintptr_t)h->out_norm % 4 == 0);
        CHECK(!in_mapping(h, h->tok_embd.data) && !in_mapping(h, h->layers[0].attn_norm));
        CHECK_INT_EQ(h->owned_bytes, h->weight_bytes);
        CHECK_INT_EQ(h->weight_bytes, g->weight_bytes);
        compare_models(g, h, 1e-4, "stories260K F32, unaligned");
    }
    CHECK(g && h);
    tp_model_free(g);
    close_model(h);
    rm_rf(dir);
    free(dir);
}

/* ---- (b) a random Llama-3-shaped model, GGUF vs a sharded HF folder ---- */

#define R_DIM 64
#define R_LAYERS 2
#define R_HEADS 4
#define R_KV 2
#define R_HD 16
#define R_FFN 128
#define R_VOCAB 128256

static uint64_t rng_state;
static float frand(float a) { /* uniform in [-a, a) */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return a * (2.0f * (float)((rng_state >> 40) * (1.0 / 16777216.0)) - 1.0f);
}

static uint16_t *rand_bf16(size_t n, float center, float a) {
    uint16_t *b = malloc(n * 2);
    for (size_t i = 0; i < n; i++) b[i] = tp_f32_to_bf16(center + frand(a));
    return b;
}

/* llama.cpp's converter, written out independently: f32 inverse frequencies,
 * f32 arithmetic as in its torch code. */
static void converter_rope_freqs(float *out, int dim, float base, float factor, float low, float high, float orig) {
    float low_wl = orig / low, high_wl = orig / high;
    for (int i = 0; i < dim / 2; i++) {
        float freq = 1.0f / powf(base, (float)(2 * i) / (float)dim);
        float wl = 2.0f * (float)M_PI / freq;
        if (wl < high_wl) out[i] = 1.0f;
        else if (wl > low_wl) out[i] = factor;
        else {
            float smooth = (orig / wl - low) / (high - low);
            out[i] = 1.0f / ((1.0f - smooth) / factor + smooth);
        }
    }
}

typedef struct {
    const char *name; /* HF suffix */
    const char *gguf; /* GGUF suffix */
    int rows, cols;   /* HF shape; cols 0 for vectors */
    int heads;        /* q/k: heads whose rows are permuted for GGUF */
} rnd_tensor;

static const rnd_tensor layer_tensors[] = {
    { "input_layernorm", "attn_norm", R_DIM, 0, 0 },
    { "post_attention_layernorm", "ffn_norm", R_DIM, 0, 0 },
    { "self_attn.q_proj", "attn_q", R_HEADS * R_HD, R_DIM, R_HEADS },
    { "self_attn.k_proj", "attn_k", R_KV * R_HD, R_DIM, R_KV },
    { "self_attn.v_proj", "attn_v", R_KV * R_HD, R_DIM, 0 },
    { "self_attn.o_proj", "attn_output", R_DIM, R_HEADS * R_HD, 0 },
    { "mlp.gate_proj", "ffn_gate", R_FFN, R_DIM, 0 },
    { "mlp.up_proj", "ffn_up", R_FFN, R_DIM, 0 },
    { "mlp.down_proj", "ffn_down", R_DIM, R_FFN, 0 },
};
#define N_LAYER_TENSORS (sizeof layer_tensors / sizeof layer_tensors[0])

static const char *random_config =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": 64,"
    " \"intermediate_size\": 128, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
    " \"num_key_value_heads\": 2, \"head_dim\": 16, \"max_position_embeddings\": 131072,"
    " \"rms_norm_eps\": 1e-05, \"rope_theta\": 500000.0, \"rope_scaling\": {\"factor\": 32.0,"
    " \"high_freq_factor\": 4.0, \"low_freq_factor\": 1.0, \"original_max_position_embeddings\": 8192,"
    " \"rope_type\": \"llama3\"}, \"tie_word_embeddings\": true, \"vocab_size\": 128256,"
    " \"hidden_act\": \"silu\", \"attention_bias\": false, \"mlp_bias\": false,"
    " \"bos_token_id\": 128000, \"eos_token_id\": [128001, 128008, 128009], \"torch_dtype\": \"bfloat16\"}";

/* Writes dir/model.gguf and the HF folder dir/hf (2 shards + index). */
static bool write_random_llama3(const char *dir, char *gguf_path, char *hf_dir, size_t cap) {
    char err[TP_ERR_LEN];
    snprintf(gguf_path, cap, "%s/model.gguf", dir);
    snprintf(hf_dir, cap, "%s/hf", dir);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", hf_dir);
    if (system(cmd) != 0) return false;
    gguf_file *vocab = tp_gguf_open(LLAMA3_VOCAB, err);
    if (!vocab) { fprintf(stderr, "  %s\n", err); return false; }
    gguf_writer *gw = tp_gguf_writer_new(0);
    tp_gguf_w_str(gw, "general.architecture", "llama");
    tp_gguf_w_u32(gw, "llama.context_length", 131072);
    tp_gguf_w_u32(gw, "llama.embedding_length", R_DIM);
    tp_gguf_w_u32(gw, "llama.block_count", R_LAYERS);
    tp_gguf_w_u32(gw, "llama.feed_forward_length", R_FFN);
    tp_gguf_w_u32(gw, "llama.attention.head_count", R_HEADS);
    tp_gguf_w_u32(gw, "llama.attention.head_count_kv", R_KV);
    tp_gguf_w_u32(gw, "llama.attention.key_length", R_HD);
    tp_gguf_w_u32(gw, "llama.rope.dimension_count", R_HD);
    tp_gguf_w_f32(gw, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    tp_gguf_w_f32(gw, "llama.rope.freq_base", 500000.0f);
    tp_gguf_w_copy_kv(gw, vocab, "tokenizer.");

    st_writer *sw[2] = { tp_st_writer_new(), tp_st_writer_new() };
    cJSON *index = cJSON_CreateObject();
    cJSON *wm = cJSON_CreateObject();
    const char *shard[2] = { "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors" };
    size_t total = 0;
    rng_state = 0x9E3779B97F4A7C15ull;

    /* embeddings (tied: also the output) in shard 1 */
    uint16_t *emb = rand_bf16((size_t)R_VOCAB * R_DIM, 0, 1.0f);
    uint64_t es[2] = { R_VOCAB, R_DIM }, ene[2] = { R_DIM, R_VOCAB };
    tp_st_w_tensor(sw[0], "model.embed_tokens.weight", "BF16", 2, es, emb);
    tp_gguf_w_tensor(gw, "token_embd.weight", TP_BF16, 2, ene, emb);
    cJSON_AddStringToObject(wm, "model.embed_tokens.weight", shard[0]);
    total += (size_t)R_VOCAB * R_DIM * 2;
    free(emb);

    for (int l = 0; l < R_LAYERS; l++) {
        st_writer *w = sw[l]; /* layer 0 in shard 1, layer 1 in shard 2 */
        for (size_t k = 0; k < N_LAYER_TENSORS; k++) {
            const rnd_tensor *rt = &layer_tensors[k];
            char hn[96], gn[96];
            snprintf(hn, sizeof hn, "model.layers.%d.%s.weight", l, rt->name);
            snprintf(gn, sizeof gn, "blk.%d.%s.weight", l, rt->gguf);
            cJSON_AddStringToObject(wm, hn, shard[l]);
            if (!rt->cols) {
                uint16_t *v = rand_bf16((size_t)rt->rows, 1.0f, 0.2f);
                float *f = malloc(sizeof(float) * (size_t)rt->rows);
                for (int i = 0; i < rt->rows; i++) f[i] = tp_bf16_to_f32(v[i]);
                uint64_t s1[1] = { (uint64_t)rt->rows };
                tp_st_w_tensor(w, hn, "BF16", 1, s1, v);
                tp_gguf_w_tensor(gw, gn, TP_F32, 1, s1, f); /* the converter keeps norms in F32 */
                total += (size_t)rt->rows * 2;
                free(v);
                free(f);
                continue;
            }
            size_t n = (size_t)rt->rows * rt->cols;
            uint16_t *hf = rand_bf16(n, 0, 0.25f), *g = malloc(n * 2);
            /* the converter's permute: GGUF row of (head, pair i, member j) */
            for (int r = 0; r < rt->rows; r++) {
                int gr = rt->heads ? gguf_row_of_hf(r, R_HD) : r;
                memcpy(g + (size_t)gr * rt->cols, hf + (size_t)r * rt->cols, (size_t)rt->cols * 2);
            }
            uint64_t s2[2] = { (uint64_t)rt->rows, (uint64_t)rt->cols }, ne[2] = { s2[1], s2[0] };
            tp_st_w_tensor(w, hn, "BF16", 2, s2, hf);
            tp_gguf_w_tensor(gw, gn, TP_BF16, 2, ne, g);
            total += n * 2;
            free(hf);
            free(g);
        }
    }
    uint16_t *nv = rand_bf16(R_DIM, 1.0f, 0.2f);
    float nf[R_DIM];
    for (int i = 0; i < R_DIM; i++) nf[i] = tp_bf16_to_f32(nv[i]);
    uint64_t sd[1] = { R_DIM };
    tp_st_w_tensor(sw[1], "model.norm.weight", "BF16", 1, sd, nv);
    tp_gguf_w_tensor(gw, "output_norm.weight", TP_F32, 1, sd, nf);
    cJSON_AddStringToObject(wm, "model.norm.weight", shard[1]);
    total += R_DIM * 2;
    free(nv);
    float ff[R_HD / 2];
    converter_rope_freqs(ff, R_HD, 500000.0f, 32.0f, 1.0f, 4.0f, 8192.0f);
    uint64_t sf[1] = { R_HD / 2 };
    tp_gguf_w_tensor(gw, "rope_freqs.weight", TP_F32, 1, sf, ff);

    bool ok = tp_gguf_writer_save(gw, gguf_path, err) == 0;
    if (!ok) fprintf(stderr, "  %s\n", err);
    for (int i = 0; i < 2 && ok; i++) {
        char *p = join(hf_dir, shard[i]);
        if (tp_st_writer_save(sw[i], p, err) != 0) { fprintf(stderr, "  %s\n", err); ok = false; }
        free(p);
    }
    cJSON_AddNumberToObject(cJSON_AddObjectToObject(index, "metadata"), "total_size", (double)total);
    cJSON_AddItemToObject(index, "weight_map", wm);
    char *txt = cJSON_Print(index);
    char *p = join(hf_dir, "model.safetensors.index.json");
    write_text(p, txt);
    free(p);
    free(txt);
    cJSON_Delete(index);
    p = join(hf_dir, "config.json");
    write_text(p, random_config);
    free(p);
    p = join(hf_dir, "generation_config.json");
    write_text(p, "{\"bos_token_id\": 128000, \"eos_token_id\": [128001, 128008, 128009], \"do_sample\": true}");
    free(p);
    const char *tf[2] = { "tokenizer.json", "tokenizer_config.json" };
    for (int i = 0; i < 2 && ok; i++) {
        char *from = join(LLAMA3_DIR, tf[i]), *to = join(hf_dir, tf[i]);
        ok = copy_file(from, to);
        free(from);
        free(to);
    }
    tp_st_writer_free(sw[0]);
    tp_st_writer_free(sw[1]);
    tp_gguf_writer_free(gw);
    tp_gguf_close(vocab);
    return ok;
}

TEST(hf_llama3_random_sharded_matches_gguf) {
    char *dir = test_tmpdir();
    REQUIRE(dir);
    char gpath[512], hdir[512], err[TP_ERR_LEN];
    bool wrote = write_random_llama3(dir, gpath, hdir, sizeof gpath);
    CHECK(wrote);
    tp_model *g = wrote ? load_model(gpath, 64, err) : NULL, *h = wrote ? load_model(hdir, 64, err) : NULL;
    if (g && h) {
        CHECK_INT_EQ(h->hp.n_vocab, R_VOCAB);
        CHECK_INT_EQ(h->hp.head_dim, R_HD);
        CHECK_INT_EQ(h->hp.n_kv_heads, R_KV);
        CHECK_INT_EQ(h->hp.n_ctx, 131072);
        CHECK_NEAR(h->hp.rope_base, 500000, 0);
        CHECK(h->output.data == h->tok_embd.data); /* tied */
        CHECK_INT_EQ(((const st_set *)h->hf)->n_files, 2);

        /* llama3 rope factors: 1 for short wavelengths, 32 for long, interpolated between;
         * the same as the converter's rope_freqs in the GGUF */
        REQUIRE(h->rope_freq_factors && g->rope_freq_factors);
        for (int i = 0; i < R_HD / 2; i++) {
            CHECK_NEAR(h->rope_freq_factors[i], g->rope_freq_factors[i], 1e-6 * g->rope_freq_factors[i]);
            CHECK_NEAR(h->rope_inv_freq[i], g->rope_inv_freq[i], 1e-6 * g->rope_inv_freq[i]);
        }
        for (int i = 0; i < 4; i++) CHECK_NEAR(h->rope_freq_factors[i], 1.0, 0);
        for (int i = 5; i < 8; i++) CHECK_NEAR(h->rope_freq_factors[i], 32.0, 0);
        /* i = 4: wavelength 2*pi*500000^(1/2) = 4442.9, smooth = (8192/4442.9 - 1) / 3 */
        double wl = 2 * M_PI * sqrt(500000.0), sm = (8192 / wl - 1) / 3;
        CHECK_NEAR(h->rope_freq_factors[4], 1 / ((1 - sm) / 32 + sm), 1e-5);

        /* the same tokenizer from tokenizer.json as from the GGUF vocabulary */
        const char *text = "Hello world! The quick brown fox <|eot_id|> 12345 ,\n\n  tabs\tand é";
        int32_t tg[64], th[64];
        int ng = tp_tokenizer_encode(g->tok, text, true, true, tg, 64);
        int nh = tp_tokenizer_encode(h->tok, text, true, true, th, 64);
        CHECK(ng > 10 && ng <= 64);
        CHECK_INT_EQ(nh, ng);
        CHECK(ng == nh && ng > 0 && memcmp(tg, th, sizeof(int32_t) * (size_t)ng) == 0);
        CHECK_INT_EQ(th[0], 128000);
        CHECK_INT_EQ(tp_tokenizer_bos(h->tok), 128000);
        /* (128008 is a reserved token in this Llama 3.0 vocabulary; that it also
         * ends generation, as generation_config.json says, needs a tokenizer setter) */
        CHECK(tp_tokenizer_is_eog(h->tok, 128001) && tp_tokenizer_is_eog(h->tok, 128009));

        /* logits: causal prompt at positions 0.., then an isolated set far out
         * (position 20000, where the scaled low frequencies matter) */
        int n = ng < 32 ? ng : 32, V = R_VOCAB;
        float *lg = malloc(sizeof(float) * (size_t)V * n), *lh = malloc(sizeof(float) * (size_t)V * n);
        int32_t pos[32];
        for (int i = 0; i < n; i++) pos[i] = i;
        tp_kv *kg = new_kv(g, 64), *kh = new_kv(h, 64);
        REQUIRE(kg && kh);
        CHECK(run(g, kg, tg, pos, n, TP_VIS_CAUSAL, lg));
        CHECK(run(h, kh, tg, pos, n, TP_VIS_CAUSAL, lh));
        double d1 = max_abs_diff(lg, lh, (size_t)V * n);
        int32_t set[3] = { 791, 315, 128009 }, far[3] = { 20000, 20000, 20000 };
        CHECK(run(g, kg, set, far, 3, TP_VIS_ISOLATED, lg));
        CHECK(run(h, kh, set, far, 3, TP_VIS_ISOLATED, lh));
        double d2 = max_abs_diff(lg, lh, (size_t)V * 3);
        fprintf(stderr, "  random llama3: max |logit difference| prompt (%d tokens) %.3g, set at 20000 %.3g\n", n, d1,
                d2);
        CHECK_NEAR(d1, 0, 1e-4);
        CHECK_NEAR(d2, 0, 1e-4);
        tp_kv_free(kg);
        tp_kv_free(kh);
        free(lg);
        free(lh);

        /* memory: every matrix mapped in place; the 5 BF16 norms and the rope factors converted and counted */
        size_t mats = (size_t)R_LAYERS * 2 *
                      ((size_t)R_HEADS * R_HD * R_DIM * 2 + (size_t)R_KV * R_HD * R_DIM * 2 + 3 * (size_t)R_FFN * R_DIM);
        CHECK_INT_EQ(h->weight_bytes, (size_t)R_VOCAB * R_DIM * 2 + mats + (2 * R_LAYERS + 1) * R_DIM * 2);
        CHECK_INT_EQ(h->owned_bytes, (2 * R_LAYERS + 1) * R_DIM * 4 + R_HD / 2 * 4);
        CHECK(in_mapping(h, h->tok_embd.data) && in_mapping(h, h->layers[1].w_up.data));
    }
    CHECK(g && h);
    tp_model_free(g);
    close_model(h);
    rm_rf(dir);
    free(dir);
}

/* ---- safetensors reader and writer ---- */

TEST(safetensors_writer_round_trip) {
    char *dir = test_tmpdir();
    REQUIRE(dir);
    char *p = join(dir, "t.safetensors"), err[TP_ERR_LEN];
    float a[6] = { 1, 2, 3, 4, 5, -6.5f };
    uint16_t b[3] = { tp_f32_to_bf16(1.5f), tp_f32_to_bf16(-2), tp_f32_to_bf16(3.25f) };
    int64_t c[2] = { 7, -9 };
    uint64_t sa[2] = { 2, 3 }, sb[1] = { 3 }, sc[1] = { 2 }, s0[2] = { 0, 4 };
    st_writer *w = tp_st_writer_new();
    tp_st_w_meta(w, "format", "pt");
    tp_st_w_tensor(w, "b.bf16", "BF16", 1, sb, b); /* 6 bytes: leaves the next tensor unaligned */
    tp_st_w_tensor(w, "a.f32", "F32", 2, sa, a);
    tp_st_w_tensor(w, "c.i64", "I64", 1, sc, c);
    tp_st_w_tensor(w, "empty", "F16", 2, s0, NULL);
    REQUIRE(tp_st_writer_save(w, p, err) == 0);
    tp_st_writer_free(w);
    st_file *f = tp_st_open(p, err);
    CHECK_MSG(f != NULL, "%s", err);
    REQUIRE(f);
    CHECK_INT_EQ(f->n_tensors, 4);
    CHECK_INT_EQ(f->data_offset % 8, 0); /* header padded */
    const st_tensor *ta = tp_st_find(f, "a.f32"), *tb = tp_st_find(f, "b.bf16"), *tc = tp_st_find(f, "c.i64");
    REQUIRE(ta && tb && tc && tp_st_find(f, "empty") && !tp_st_find(f, "nope"));
    CHECK_INT_EQ(ta->type, TP_F32);
    CHECK_INT_EQ(ta->n_dims, 2);
    CHECK_INT_EQ(ta->shape[0], 2);
    CHECK_INT_EQ(ta->shape[1], 3);
    CHECK_INT_EQ(ta->nbytes, 24);
    CHECK(memcmp(ta->data, a, 24) == 0);
    CHECK_INT_EQ(tb->type, TP_BF16);
    CHECK(memcmp(tb->data, b, 6) == 0);
    CHECK_INT_EQ(tc->type, ST_TYPE_OTHER);
    CHECK(strcmp(tc->dtype, "I64") == 0);
    CHECK(memcmp(tc->data, c, 16) == 0);
    CHECK_INT_EQ(tp_st_find(f, "empty")->nbytes, 0);
    CHECK((const uint8_t *)tb->data == f->map + f->data_offset); /* written in order */
    tp_st_close(f);
    /* the writer reports bad input at save time */
    w = tp_st_writer_new();
    tp_st_w_tensor(w, "x", "Q4_0", 1, sb, b);
    CHECK(tp_st_writer_save(w, p, err) != 0);
    CHECK(strstr(err, "Q4_0") != NULL);
    tp_st_writer_free(w);
    free(p);
    rm_rf(dir);
    free(dir);
}

/* A file with a given header text and data_len zero bytes of data. */
static void write_raw(const char *path, const char *hdr, size_t data_len, int64_t len_override) {
    size_t hl = strlen(hdr);
    uint64_t len = len_override >= 0 ? (uint64_t)len_override : hl;
    size_t n = 8 + hl + data_len;
    uint8_t *buf = calloc(1, n);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(len >> (8 * i));
    memcpy(buf + 8, hdr, hl);
    write_file(path, buf, n);
    free(buf);
}

static void expect_open_error(const char *path, const char *hdr, size_t data_len, int64_t len_override,
                              const char *want) {
    char err[TP_ERR_LEN] = "";
    write_raw(path, hdr, data_len, len_override);
    st_file *f = tp_st_open(path, err);
    CHECK_MSG(f == NULL, "accepted: %s", hdr);
    CHECK_MSG(strstr(err, path) != NULL && strstr(err, want) != NULL, "header %s: error '%s' lacks '%s'", hdr, err,
              want);
    tp_st_close(f);
}

TEST(safetensors_rejects_corrupt_files) {
    char *dir = test_tmpdir();
    REQUIRE(dir);
    char *p = join(dir, "bad.safetensors"), err[TP_ERR_LEN];
    const char *ok = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}";
    write_raw(p, ok, 24, -1);
    st_file *f = tp_st_open(p, err);
    CHECK_MSG(f != NULL, "%s", err);
    tp_st_close(f);

    /* truncated: the data ends before the tensor does */
    expect_open_error(p, ok, 20, -1, "offsets [0, 24) exceed the data size 20");
    /* header length */
    expect_open_error(p, ok, 24, 1000, "header length 1000 exceeds the file size");
    expect_open_error(p, ok, 24, 0, "header length 0");
    write_file(p, "\x10\0\0", 3);
    CHECK(tp_st_open(p, err) == NULL && strstr(err, "too short"));
    /* JSON */
    expect_open_error(p, "{\"w\":{\"dtype\":\"F32\",", 24, -1, "not valid JSON");
    expect_open_error(p, "[1, 2]", 0, -1, "not a JSON object");
    expect_open_error(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}xyz", 24, -1,
                      "trailing bytes");
    expect_open_error(p, "{\"w\":[]}", 0, -1, "not an object");
    /* dtypes */
    expect_open_error(p, "{\"w\":{\"dtype\":\"Q9\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", 24, -1,
                      "unknown dtype 'Q9'");
    expect_open_error(p, "{\"w\":{\"shape\":[2,3],\"data_offsets\":[0,24]}}", 24, -1, "no dtype");
    /* shapes and offsets */
    expect_open_error(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 24, -1,
                      "hold 20 bytes but shape and dtype F32 need 24");
    expect_open_error(p, "{\"w\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", 24, -1,
                      "need 12");
    expect_open_error(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,-3],\"data_offsets\":[0,24]}}", 24, -1, "shape[1]");
    expect_open_error(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,24]}}", 24, -1, "shape[0]");
    expect_open_error(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,24]}}",
                      24, -1, "too large");
    expect_open_error(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[24,0]}}", 24, -1, "reversed");
    expect_open_error(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0]}}", 24, -1, "data_offsets");
    expect_open_error(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[6],\"data_offsets\":[8,32]}}", 24, -1,
                      "exceed the data size 24");
    expect_open_error(p,
                      "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                      "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}",
                      24, -1, "overlap");
    expect_open_error(p,
                      "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
                      24, -1, "appears twice");
    /* a missing file */
    char *q = join(dir, "none.safetensors");
    CHECK(tp_st_open(q, err) == NULL && strstr(err, "none.safetensors") && strstr(err, "cannot open"));
    free(q);
    free(p);
    rm_rf(dir);
    free(dir);
}

/* Header length of a safetensors file (its first 8 bytes). */
static uint64_t st_open_header_bytes(const char *path) {
    uint8_t b[8] = { 0 };
    FILE *f = fopen(path, "rb");
    if (f) { if (fread(b, 1, 8, f) != 8) memset(b, 0, 8); fclose(f); }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | b[i];
    return n;
}

/* Random byte changes in a small valid file's header and length: each open either
 * succeeds with every tensor inside the file or fails with a message; never a crash. */
TEST(safetensors_survives_header_mutations) {
    char *dir = test_tmpdir();
    REQUIRE(dir);
    char *p = join(dir, "m.safetensors"), err[TP_ERR_LEN];
    float v[8] = { 0 };
    uint64_t s2[2] = { 2, 2 }, s1[1] = { 4 };
    st_writer *w = tp_st_writer_new();
    tp_st_w_tensor(w, "a", "F32", 2, s2, v);
    tp_st_w_tensor(w, "b", "BF16", 1, s1, v);
    tp_st_w_tensor(w, "c", "F16", 1, s1, v);
    REQUIRE(tp_st_writer_save(w, p, err) == 0);
    tp_st_writer_free(w);
    size_t n;
    char *orig = tp_read_file(p, &n, err);
    REQUIRE(orig);
    size_t hdr_end = 8 + (size_t)st_open_header_bytes(p);
    uint64_t seed = 12345;
    int opened = 0, refused = 0;
    for (int iter = 0; iter < 400; iter++) {
        char *buf = malloc(n);
        memcpy(buf, orig, n);
        for (int k = 0; k < 1 + iter % 3; k++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            size_t at = (size_t)(seed >> 33) % hdr_end;
            static const char repl[] = "0123456789[]{}\",:-.e\\ FBIU";
            buf[at] = (seed >> 20) & 1 ? repl[(seed >> 40) % (sizeof repl - 1)] : (char)(seed >> 48);
        }
        write_file(p, buf, n);
        free(buf);
        err[0] = 0;
        st_file *f = tp_st_open(p, err);
        if (f) {
            opened++;
            for (int i = 0; i < f->n_tensors; i++) {
                const uint8_t *d = f->tensors[i].data;
                CHECK(d >= f->map + f->data_offset && d + f->tensors[i].nbytes <= f->map + f->map_size);
            }
        } else {
            refused++;
            CHECK(strstr(err, p) != NULL);
        }
        tp_st_close(f);
    }
    fprintf(stderr, "  400 mutated headers: %d opened, %d refused\n", opened, refused);
    CHECK(refused > 100);
    free(orig);
    free(p);
    rm_rf(dir);
    free(dir);
}

TEST(safetensors_set_index_errors) {
    char *dir = test_tmpdir();
    REQUIRE(dir);
    char err[TP_ERR_LEN];
    /* no weights at all */
    CHECK(tp_st_set_open(dir, err) == NULL && strstr(err, "no model.safetensors"));
    float v[4] = { 1, 2, 3, 4 };
    uint64_t s[1] = { 4 };
    st_writer *w = tp_st_writer_new();
    tp_st_w_tensor(w, "x", "F32", 1, s, v);
    char *shard = join(dir, "part-1.safetensors"), *idx = join(dir, "model.safetensors.index.json");
    REQUIRE(tp_st_writer_save(w, shard, err) == 0);
    tp_st_writer_free(w);
    write_text(idx, "{\"weight_map\": {\"x\": \"part-1.safetensors\"}}");
    st_set *set = tp_st_set_open(dir, err);
    CHECK_MSG(set != NULL, "%s", err);
    if (set) {
        const st_tensor *t = tp_st_set_find(set, "x");
        CHECK(t && t->nbytes == 16 && memcmp(t->data, v, 16) == 0);
        CHECK(tp_st_set_find(set, "y") == NULL);
    }
    tp_st_set_free(set);
    /* the weight bytes for the memory check: the shards the index names, not other files */
    char *decoy = join(dir, "consolidated.safetensors");
    write_text(decoy, "not counted");
    write_text(idx, "{\"weight_map\": {\"x\": \"part-1.safetensors\", \"y\": \"part-1.safetensors\"}}");
    CHECK_INT_EQ(tp_st_set_file_bytes(dir, err), 8 + (int64_t)st_open_header_bytes(shard) + 16);
    free(decoy);
    struct { const char *index, *want; } bad[] = {
        { "{\"weight_map\": {\"x\": \"part-1.safetensors\", \"y\": \"part-1.safetensors\"}}",
          "tensor y (listed in model.safetensors.index.json) is not in the file" },
        { "{\"weight_map\": {\"x\": \"part-2.safetensors\"}}", "part-2.safetensors: cannot open" },
        { "{\"weight_map\": {\"x\": \"../part-1.safetensors\"}}", "not a file name in the folder" },
        { "{\"weight_map\": {\"x\": 3}}", "not a file name" },
        { "{\"metadata\": {}}", "missing weight_map" },
        { "{\"weight_map\": {}}", "weight_map is empty" },
        { "[\"weight_map\"]", "not a JSON object" },
        { "{\"weight_map\": ", "not valid JSON at byte 15: expected a value" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_text(idx, bad[i].index);
        err[0] = 0;
        set = tp_st_set_open(dir, err);
        CHECK_MSG(set == NULL && strstr(err, bad[i].want), "index %s: '%s'", bad[i].index, err);
        tp_st_set_free(set);
    }
    CHECK(tp_st_set_file_bytes(dir, err) < 0 && strstr(err, "not valid JSON"));
    write_text(idx, "{\"weights\": {}}");
    CHECK(tp_st_set_file_bytes(dir, err) < 0 && strstr(err, "missing weight_map"));
    write_text(idx, "{\"weight_map\": {\"x\": \"part-9.safetensors\"}}");
    CHECK(tp_st_set_file_bytes(dir, err) < 0 && strstr(err, "part-9.safetensors: cannot open"));
    remove(idx);
    CHECK(tp_st_set_file_bytes(dir, err) < 0 && strstr(err, "no model.safetensors"));
    free(shard);
    free(idx);
    rm_rf(dir);
    free(dir);
}

/* ---- config.json and folder errors ---- */

/* Replace "key": value text in the stories config (value up to the next ',' or '\n'). */
static char *config_with(const char *key, const char *value) {
    size_t n = strlen(stories_config) + (value ? strlen(value) : 0) + 64;
    char *out = malloc(n);
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *s = strstr(stories_config, pat);
    if (!s) { snprintf(out, n, "%s", stories_config); return out; }
    const char *e = s + strlen(pat);
    while (*e && *e != ',' && *e != '\n') e++;
    if (value) snprintf(out, n, "%.*s%s %s%s", (int)(s - stories_config), stories_config, pat, value, e);
    else snprintf(out, n, "%.*s\"_removed\": 0%s", (int)(s - stories_config), stories_config, e);
    return out;
}

TEST(hf_config_errors_and_variants) {
    char *dir = test_tmpdir();
    REQUIRE(dir);
    REQUIRE(export_stories(dir, "F32", NULL));
    char *cfg = join(dir, "config.json"), err[TP_ERR_LEN];
    struct { const char *key, *value, *want; } bad[] = {
        { "hidden_size", NULL, "config.json: missing hidden_size" },
        { "num_hidden_layers", "\"five\"", "config.json: num_hidden_layers must be a positive integer" },
        { "architectures", "[\"GPT2LMHeadModel\"]", "config.json: architecture 'GPT2LMHeadModel' is not Llama-shaped" },
        { "hidden_act", "\"gelu\"", "hidden_act 'gelu'" },
        { "rope_scaling", "{\"rope_type\": \"yarn\", \"factor\": 4.0}", "rope_scaling type 'yarn' is not supported" },
        { "rope_scaling", "{\"rope_type\": \"llama3\", \"factor\": 8.0}", "rope_scaling llama3 needs low_freq_factor" },
        { "rope_scaling", "{\"type\": \"linear\", \"factor\": -2}", "rope_scaling factor -2 must be positive" },
        { "rope_theta", "\"big\"", "rope_theta must be a number" },
        { "num_key_value_heads", "3", "num_attention_heads = 8 is not a multiple of num_key_value_heads = 3" },
        { "hidden_size", "32", "tensor model.embed_tokens.weight has shape [512, 64], expected [512, 32]" },
        { "intermediate_size", "100", "tensor model.layers.0.mlp.gate_proj.weight has shape [172, 64], expected [100, 64]" },
        { "num_hidden_layers", "6", "missing required tensor model.layers.5.input_layernorm.weight" },
        { "vocab_size", "600", "vocab_size 600 but model.embed_tokens.weight has 512 rows" },
        { "tie_word_embeddings", "\"yes\"", "tie_word_embeddings is not true/false" },
        { "eos_token_id", "[2, 9999]", "eos_token_id must be token ids below the vocabulary size 512" },
        { "max_position_embeddings", "2048, \"head_dim\": 1000000", "config.json: head_dim = 1000000 is out of range [1, 1024]" },
        { "max_position_embeddings", "0", "max_position_embeddings must be a positive integer" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *c = config_with(bad[i].key, bad[i].value);
        write_text(cfg, c);
        free(c);
        tp_load_opts o = { 0 };
        err[0] = 0;
        tp_model *m = tp_model_load(dir, &o, err);
        CHECK_MSG(m == NULL && strstr(err, bad[i].want), "%s = %s: got '%s'", bad[i].key,
                  bad[i].value ? bad[i].value : "(removed)", err);
        close_model(m);
    }
    write_text(cfg, "{\"hidden_size\": ");
    CHECK(tp_model_load(dir, NULL, err) == NULL && strstr(err, "config.json: not valid JSON"));

    /* accepted variants: Mistral's name, linear rope scaling, null head_dim, a sliding window */
    char *c = config_with("architectures", "[\"MistralForCausalLM\"]");
    write_text(cfg, c);
    free(c);
    tp_model *m = load_model(dir, 0, err);
    CHECK(m != NULL);
    close_model(m);
    c = config_with("rope_scaling", "{\"type\": \"linear\", \"factor\": 4.0}");
    write_text(cfg, c);
    free(c);
    m = load_model(dir, 0, err);
    tp_model *g = load_model(STORIES, 0, err);
    CHECK(m && g);
    if (m && g)
        for (int i = 0; i < 4; i++) CHECK_NEAR(m->rope_inv_freq[i], g->rope_inv_freq[i] / 4, 1e-7);
    close_model(m);
    tp_model_free(g);
    c = config_with("max_position_embeddings", "2048, \"sliding_window\": 512, \"head_dim\": null");
    write_text(cfg, c);
    free(c);
    m = load_model(dir, 0, err);
    CHECK(m && m->hp.n_ctx == 512 && m->hp.head_dim == 8);
    close_model(m);

    /* folder errors: a tensor of a dtype tempo cannot use, no tokenizer.json */
    write_text(cfg, stories_config);
    char *tok = join(dir, "tokenizer.json"), *tok2 = join(dir, "tokenizer.json.off");
    REQUIRE(rename(tok, tok2) == 0);
    CHECK(tp_model_load(dir, NULL, err) == NULL && strstr(err, "tokenizer.json"));
    REQUIRE(rename(tok2, tok) == 0);
    free(tok);
    free(tok2);
    char *sp = join(dir, "model.safetensors");
    st_file *f = tp_st_open(sp, err);
    REQUIRE(f);
    st_writer *w = tp_st_writer_new();
    for (int i = 0; i < f->n_tensors; i++) {
        const st_tensor *t = &f->tensors[i];
        bool q = strcmp(t->name, "model.layers.0.self_attn.q_proj.weight") == 0;
        tp_st_w_tensor(w, t->name, q ? "I32" : t->dtype, t->n_dims, t->shape, t->data);
    }
    tp_st_close(f);
    REQUIRE(tp_st_writer_save(w, sp, err) == 0);
    tp_st_writer_free(w);
    m = tp_model_load(dir, NULL, err);
    CHECK(m == NULL && strstr(err, "model.safetensors: tensor model.layers.0.self_attn.q_proj.weight has dtype I32"));
    close_model(m);
    free(sp);
    free(cfg);
    rm_rf(dir);
    free(dir);
}

/* ---- the command line runs a folder as it runs the GGUF ---- */

/* stdout of the CLI; its stderr goes to dir/cli.err (shown when it fails and show_fail). */
static char *run_cli(const char *dir, const char *model, const char *args, int *status, bool show_fail) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s %s '%s' 2>'%s/cli.err'", test_tempo_bin(), args, model, dir);
    char *out = test_run_capture(cmd, status);
    if (*status != 0 && show_fail) {
        char err[TP_ERR_LEN], *p = join(dir, "cli.err");
        char *log = tp_read_file(p, NULL, err);
        fprintf(stderr, "  %s exited %d:\n%.3000s\n", cmd, *status, log ? log : err);
        free(log);
        free(p);
    }
    return out;
}

TEST(hf_cli_runs_folder_like_gguf) {
    char *dir = test_tmpdir();
    REQUIRE(dir);
    char gpath[512], hdir[512];
    REQUIRE(write_random_llama3(dir, gpath, hdir, sizeof gpath));
    int sg, sh;
    /* the same ids from tokenizer.json as from the GGUF vocabulary */
    const char *tok = "tokenize 'Hello, world! 123' --model";
    char *a = run_cli(dir, gpath, tok, &sg, true), *b = run_cli(dir, hdir, tok, &sh, true);
    REQUIRE(a && b);
    CHECK_INT_EQ(sg, 0);
    CHECK_INT_EQ(sh, 0);
    CHECK_MSG(strncmp(a, "128000 ", 7) == 0 && strcmp(a, b) == 0, "'%s' vs '%s'", a, b);
    free(a);
    free(b);
    /* TEMPO generation in the chat format (--enable-thinking): the same document */
    const char *gen = "--enable-thinking --prompt 'Why is the sky blue?' --max-tokens 6 --max-parallel-tokens 4 "
                      "--max-cache-tokens 128 --threads 2 --output-json --model";
    a = run_cli(dir, gpath, gen, &sg, true);
    b = run_cli(dir, hdir, gen, &sh, true);
    REQUIRE(a && b);
    CHECK_INT_EQ(sg, 0);
    CHECK_INT_EQ(sh, 0);
    cJSON *ja = cJSON_Parse(a), *jb = cJSON_Parse(b);
    CHECK(ja && jb);
    if (ja && jb) {
        const cJSON *ga = cJSON_GetObjectItem(ja, "generated_text"), *gb = cJSON_GetObjectItem(jb, "generated_text");
        const cJSON *sa = cJSON_GetObjectItem(ja, "steps"), *sb = cJSON_GetObjectItem(jb, "steps");
        CHECK(cJSON_IsString(ga) && cJSON_IsString(gb) && strcmp(ga->valuestring, gb->valuestring) == 0);
        CHECK(cJSON_GetArraySize(sa) >= 1 && cJSON_GetArraySize(sa) == cJSON_GetArraySize(sb));
        /* every step's token ids agree */
        for (int k = 0; k < cJSON_GetArraySize(sa); k++) {
            const cJSON *ta = cJSON_GetObjectItem(cJSON_GetArrayItem(sa, k), "tokens");
            const cJSON *tb = cJSON_GetObjectItem(cJSON_GetArrayItem(sb, k), "tokens");
            CHECK_INT_EQ(cJSON_GetArraySize(ta), cJSON_GetArraySize(tb));
            for (int i = 0; i < cJSON_GetArraySize(ta) && i < cJSON_GetArraySize(tb); i++)
                CHECK_INT_EQ(cJSON_GetObjectItem(cJSON_GetArrayItem(ta, i), "token_id")->valueint,
                             cJSON_GetObjectItem(cJSON_GetArrayItem(tb, i), "token_id")->valueint);
        }
    }
    cJSON_Delete(ja);
    cJSON_Delete(jb);
    free(a);
    free(b);
    /* --max-memory-gb refuses a folder whose weights (16.5 MB of shards) exceed it, as for the GGUF */
    const char *small = "--max-memory-gb 0.01 --max-tokens 2 --model";
    a = run_cli(dir, gpath, small, &sg, false);
    b = run_cli(dir, hdir, small, &sh, false);
    CHECK(sg != 0 && sh != 0);
    char *p = join(dir, "cli.err"), err[TP_ERR_LEN];
    char *log = tp_read_file(p, NULL, err);
    CHECK_MSG(log && strstr(log, "model needs") && strstr(log, "--max-memory-gb"), "'%s'", log ? log : err);
    free(log);
    free(p);
    free(a);
    free(b);
    rm_rf(dir);
    free(dir);
}
