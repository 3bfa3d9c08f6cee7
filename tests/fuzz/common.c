/* common.c: helpers and tiny valid models for the fuzz harnesses (fuzz.h). */
#include "fuzz.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/common.h"
#include "format/gguf.h"
#include "tools/gguf_write.h"
#include "format/safetensors.h"
#include "tools/st_write.h"
#include "kv/kvcache.h"
#include "tensor/dtype.h"
#include "tokenizer/tok_internal.h"
#include "tokenizer/tokenizer.h"

/* ---- files ---- */

static char dir_buf[256];

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st; (void)flag; (void)ftw;
    return remove(p);
}

static void rm_dir(void) {
    if (dir_buf[0]) nftw(dir_buf, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

const char *fuzz_dir(void) {
    if (dir_buf[0]) return dir_buf;
    struct stat st;
    snprintf(dir_buf, sizeof dir_buf, "%s/tempo-fuzz-XXXXXX",
             stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp");
    if (!mkdtemp(dir_buf)) { perror("mkdtemp"); abort(); }
    atexit(rm_dir);
    return dir_buf;
}

const char *fuzz_path(int slot, const char *name) {
    static char buf[4][512];
    snprintf(buf[slot], sizeof buf[slot], "%s/%s", fuzz_dir(), name);
    return buf[slot];
}

void fuzz_write(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f) != 0) { perror(path); abort(); }
}

void fuzz_write_text(const char *path, const char *text) { fuzz_write(path, text, strlen(text)); }

void fuzz_check_error(const char *err) {
    if (!err[0] || strchr(err, '\n')) {
        fprintf(stderr, "error contract broken: '%s'\n", err);
        abort();
    }
}

/* ---- running a loaded model ---- */

tp_load_opts fuzz_load_opts(void) {
    return (tp_load_opts){ .max_bytes = FUZZ_MAX_BYTES };
}

void fuzz_run_model(tp_model *m) {
    char err[TP_ERR_LEN] = "";
    int32_t ids[16], pos[16];
    int n = tp_tokenizer_encode(m->tok, "Hello world", true, true, ids, 16);
    if (n <= 0) { ids[0] = 0; n = 1; }
    if (n > 8) n = 8;
    for (int i = 0; i < n; i++) pos[i] = i;
    int V = m->hp.n_vocab, kv_dim = m->hp.n_kv_heads * m->hp.head_dim;
    tp_kv_type kt = kv_dim % 32 == 0 && V % 2 ? TP_KV_Q8_0 : V % 3 == 0 ? TP_KV_F16 : TP_KV_F32;
    tp_kv *kv = tp_kv_new(m->hp.n_layers, kv_dim, kt, 16, 0, err);
    if (!kv) { fuzz_check_error(err); return; }
    /* one thread, batches of 4, 16 cache slots: the forward's buffers stay small whatever the
     * file claims (as a session's follow its cache's capacity) */
    tp_compute *c = tp_compute_new(m, 1, 4, 16, err);
    if (!c) { fuzz_check_error(err); tp_kv_free(kv); return; }
    float *logits = malloc((size_t)V * 2 * sizeof(float));
    tp_batch b = { .n = n, .tokens = ids, .pos = pos, .step = -1, .vis = TP_VIS_CAUSAL, .logits = logits,
                   .logits_last_only = true };
    if (tp_forward(m, c, kv, &b, err)) {
        fuzz_check_error(err);
    } else {
        int best = 0;
        for (int i = 1; i < V; i++)
            if (logits[i] > logits[best]) best = i;
        int32_t set[2] = { best, (best + 1) % V }, p2[2] = { n, n };
        float w[1024];
        int nl = m->hp.n_layers < 1024 ? m->hp.n_layers : 1024;
        for (int l = 0; l < nl; l++) w[l] = 1.0f / (float)nl;
        float *attn = calloc((size_t)2 * (size_t)(kv->n + 2), sizeof(float));
        tp_batch b2 = { .n = 2, .tokens = set, .pos = p2, .step = 0, .vis = TP_VIS_ISOLATED, .logits = logits,
                        .layer_weights = nl == m->hp.n_layers ? w : NULL, .attn = attn };
        if (tp_forward(m, c, kv, &b2, err)) fuzz_check_error(err);
        free(attn);
        char *text = tp_tokenizer_decode(m->tok, set, 2);
        free(text);
    }
    free(logits);
    tp_compute_free(c);
    tp_kv_free(kv);
}

/* ---- tiny models ---- */

static uint64_t rng = 88172645463325252ull;
static float frand(void) { /* [-0.5, 0.5) */
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (float)((rng >> 40) & 0xffffff) / 16777216.0f - 0.5f;
}

/* The GPT-2 character of byte b, UTF-8. */
static int byte_char(int b, char *out) { return tp_bpe_byte_utf8((uint8_t)b, out); }

/* 256 byte characters, three merged tokens, three control tokens. */
#define BPE_N 262
static void bpe_vocab(char tok[BPE_N][24]) {
    for (int b = 0; b < 256; b++) tok[b][byte_char(b, tok[b])] = 0;
    strcpy(tok[256], "\xc4\xa0t"); /* "Ġt" */
    strcpy(tok[257], "he");
    strcpy(tok[258], "\xc4\xa0the");
    strcpy(tok[259], "<|begin_of_text|>");
    strcpy(tok[260], "<|end_of_text|>");
    strcpy(tok[261], "<|eot_id|>");
}
static const char *const bpe_merges[3] = { "\xc4\xa0 t", "h e", "\xc4\xa0t he" };

#define SPM_N 270
static void spm_vocab(char tok[SPM_N][24], float *score, int32_t *type) {
    strcpy(tok[0], "<unk>"); type[0] = TOKT_UNKNOWN;
    strcpy(tok[1], "<s>"); type[1] = TOKT_CONTROL;
    strcpy(tok[2], "</s>"); type[2] = TOKT_CONTROL;
    for (int b = 0; b < 256; b++) { snprintf(tok[3 + b], 24, "<0x%02X>", b); type[3 + b] = TOKT_BYTE; }
    static const char *const words[11] = { "\xe2\x96\x81", "\xe2\x96\x81\x61", "\xe2\x96\x81the", "t", "h", "e",
                                           "th", "he", "the", "\xe2\x96\x81t", "\xe2\x96\x81th" };
    for (int i = 0; i < 11; i++) { strcpy(tok[259 + i], words[i]); type[259 + i] = TOKT_NORMAL; }
    for (int i = 0; i < SPM_N; i++) score[i] = type[i] == TOKT_NORMAL ? -(float)i : 0.0f;
}

static void add_matrix(gguf_writer *w, const char *name, uint32_t type, int n_in, int n_out, float center) {
    size_t n = (size_t)n_in * n_out;
    float *v = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) v[i] = center + frand();
    uint64_t ne[2] = { (uint64_t)n_in, (uint64_t)n_out };
    int dims = center != 0 ? 1 : 2; /* norm vectors (centred on 1) are 1-D */
    size_t rb = tp_dtype_row_bytes(type, (size_t)n_in);
    void *q = malloc(rb * (size_t)n_out);
    if (type == TP_F32) memcpy(q, v, n * sizeof(float));
    else for (int r = 0; r < n_out; r++) tp_quantize_row(type, v + (size_t)r * n_in, (uint8_t *)q + rb * r, (size_t)n_in);
    tp_gguf_w_tensor(w, name, type, (uint32_t)dims, ne, q);
    free(q);
    free(v);
}

bool fuzz_tiny_gguf(const char *path, int variant) {
    bool q8 = variant & TINY_Q8, f16 = variant & TINY_F16, bpe = variant & TINY_BPE;
    int dim = q8 ? 32 : 8, heads = 2, kv_heads = variant & TINY_GQA ? 1 : 2, hd = dim / heads, ffn = q8 ? 32 : 16;
    int layers = 2, V = bpe ? BPE_N : SPM_N;
    uint32_t mt = q8 ? TP_Q8_0 : f16 ? TP_F16 : TP_F32, nt = f16 ? TP_F16 : TP_F32;
    gguf_writer *w = tp_gguf_writer_new(0);
    tp_gguf_w_str(w, "general.architecture", "llama");
    tp_gguf_w_str(w, "general.name", "tiny");
    tp_gguf_w_u32(w, "llama.context_length", 64);
    tp_gguf_w_u32(w, "llama.embedding_length", (uint32_t)dim);
    tp_gguf_w_u32(w, "llama.block_count", (uint32_t)layers);
    tp_gguf_w_u32(w, "llama.feed_forward_length", (uint32_t)ffn);
    tp_gguf_w_u32(w, "llama.attention.head_count", (uint32_t)heads);
    tp_gguf_w_u32(w, "llama.attention.head_count_kv", (uint32_t)kv_heads);
    tp_gguf_w_u32(w, "llama.rope.dimension_count", (uint32_t)hd);
    tp_gguf_w_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    tp_gguf_w_f32(w, "llama.rope.freq_base", 10000.0f);
    if (bpe) {
        static char tok[BPE_N][24];
        bpe_vocab(tok);
        const char *tp[BPE_N];
        int32_t type[BPE_N];
        for (int i = 0; i < BPE_N; i++) { tp[i] = tok[i]; type[i] = i >= 259 ? TOKT_CONTROL : TOKT_NORMAL; }
        tp_gguf_w_str(w, "tokenizer.ggml.model", "gpt2");
        tp_gguf_w_str(w, "tokenizer.ggml.pre", "llama-bpe");
        tp_gguf_w_arr_str(w, "tokenizer.ggml.tokens", tp, BPE_N);
        tp_gguf_w_arr_i32(w, "tokenizer.ggml.token_type", type, BPE_N);
        tp_gguf_w_arr_str(w, "tokenizer.ggml.merges", bpe_merges, 3);
        tp_gguf_w_u32(w, "tokenizer.ggml.bos_token_id", 259);
        tp_gguf_w_u32(w, "tokenizer.ggml.eos_token_id", 260);
    } else {
        static char tok[SPM_N][24];
        float score[SPM_N];
        int32_t type[SPM_N];
        spm_vocab(tok, score, type);
        const char *tp[SPM_N];
        for (int i = 0; i < SPM_N; i++) tp[i] = tok[i];
        tp_gguf_w_str(w, "tokenizer.ggml.model", "llama");
        tp_gguf_w_arr_str(w, "tokenizer.ggml.tokens", tp, SPM_N);
        tp_gguf_w_arr_f32(w, "tokenizer.ggml.scores", score, SPM_N);
        tp_gguf_w_arr_i32(w, "tokenizer.ggml.token_type", type, SPM_N);
        tp_gguf_w_u32(w, "tokenizer.ggml.bos_token_id", 1);
        tp_gguf_w_u32(w, "tokenizer.ggml.eos_token_id", 2);
        tp_gguf_w_bool(w, "tokenizer.ggml.add_bos_token", true);
    }
    add_matrix(w, "token_embd.weight", mt, dim, V, 0);
    add_matrix(w, "output_norm.weight", nt, dim, 1, 1);
    if (!(variant & TINY_TIED)) add_matrix(w, "output.weight", mt, dim, V, 0);
    if (variant & TINY_ROPE_FREQS) add_matrix(w, "rope_freqs.weight", TP_F32, hd / 2, 1, 2);
    for (int l = 0; l < layers; l++) {
        char nm[64];
#define NAME(s) (snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, s), nm)
        add_matrix(w, NAME("attn_norm"), nt, dim, 1, 1);
        add_matrix(w, NAME("ffn_norm"), nt, dim, 1, 1);
        add_matrix(w, NAME("attn_q"), mt, dim, heads * hd, 0);
        add_matrix(w, NAME("attn_k"), mt, dim, kv_heads * hd, 0);
        add_matrix(w, NAME("attn_v"), mt, dim, kv_heads * hd, 0);
        add_matrix(w, NAME("attn_output"), mt, heads * hd, dim, 0);
        add_matrix(w, NAME("ffn_gate"), mt, dim, ffn, 0);
        add_matrix(w, NAME("ffn_up"), mt, dim, ffn, 0);
        add_matrix(w, NAME("ffn_down"), mt, ffn, dim, 0);
#undef NAME
    }
    char err[TP_ERR_LEN];
    int rc = tp_gguf_writer_save(w, path, err);
    if (rc) fprintf(stderr, "%s\n", err);
    tp_gguf_writer_free(w);
    return rc == 0;
}

const char fuzz_tiny_config_json[] =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": 8,"
    " \"intermediate_size\": 16, \"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"num_key_value_heads\": 1,"
    " \"max_position_embeddings\": 64, \"rms_norm_eps\": 1e-05, \"rope_theta\": 500000.0,"
    " \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0,"
    " \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 16},"
    " \"tie_word_embeddings\": false, \"vocab_size\": 262, \"hidden_act\": \"silu\", \"bos_token_id\": 259,"
    " \"eos_token_id\": [260, 261], \"torch_dtype\": \"float32\"}";
const char fuzz_tiny_generation_config_json[] = "{\"bos_token_id\": 259, \"eos_token_id\": [260, 261], \"do_sample\": true}";
const char fuzz_tiny_tokenizer_config_json[] =
    "{\"bos_token\": \"<|begin_of_text|>\", \"eos_token\": {\"content\": \"<|end_of_text|>\"}, \"add_bos_token\": true,"
    " \"add_eos_token\": false}";

/* A JSON string literal of s. */
static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

char *fuzz_tiny_tokenizer_json(bool pair_merges, bool template_sequence) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    static char tok[BPE_N][24];
    bpe_vocab(tok);
    fputs("{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"added_tokens\":[", f);
    for (int i = 259; i < BPE_N; i++) {
        fprintf(f, "%s{\"id\":%d,\"content\":", i > 259 ? "," : "", i);
        json_str(f, tok[i]);
        fputs(",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":true}", f);
    }
    fputs("],\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\","
          "\"pattern\":{\"Regex\":", f);
    json_str(f, tp_bpe_llama3_hf_regex);
    fputs("},\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,"
          "\"trim_offsets\":true,\"use_regex\":false}]},", f);
    const char *tmpl = "{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<|begin_of_text|>\","
                       "\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"pair\":[],\"special_tokens\":{}}";
    if (template_sequence)
        fprintf(f, "\"post_processor\":{\"type\":\"Sequence\",\"processors\":[{\"type\":\"ByteLevel\"},%s]},", tmpl);
    else fprintf(f, "\"post_processor\":%s,", tmpl);
    fputs("\"decoder\":{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"trim_offsets\":true,\"use_regex\":true},"
          "\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":null,\"fuse_unk\":false,\"byte_fallback\":false,"
          "\"ignore_merges\":true,\"vocab\":{", f);
    for (int i = 0; i < 259; i++) {
        if (i) fputc(',', f);
        json_str(f, tok[i]);
        fprintf(f, ":%d", i);
    }
    fputs("},\"merges\":[", f);
    for (int i = 0; i < 3; i++) {
        if (i) fputc(',', f);
        if (pair_merges) {
            const char *sp = strchr(bpe_merges[i] + 1, ' ');
            char l[24];
            snprintf(l, sizeof l, "%.*s", (int)(sp - bpe_merges[i]), bpe_merges[i]);
            fputc('[', f);
            json_str(f, l);
            fputc(',', f);
            json_str(f, sp + 1);
            fputc(']', f);
        } else {
            json_str(f, bpe_merges[i]);
        }
    }
    fputs("]}}", f);
    fclose(f);
    return buf;
}

/* HF layout: [out, in] rows; the same bytes as GGUF ne [in, out]. */
static void add_st(st_writer *w, const char *name, int rows, int cols, float center) {
    size_t n = (size_t)rows * (size_t)(cols ? cols : 1); /* cols 0: a vector */
    float *v = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) v[i] = center + frand();
    uint64_t shape[2] = { (uint64_t)rows, (uint64_t)cols };
    if (cols == 0) { shape[0] = (uint64_t)rows; tp_st_w_tensor(w, name, "F32", 1, shape, v); }
    else tp_st_w_tensor(w, name, "F32", 2, shape, v);
    free(v);
}

bool fuzz_tiny_hf(const char *dir) {
    int dim = 8, heads = 2, kv = 1, hd = 4, ffn = 16, V = BPE_N;
    st_writer *w = tp_st_writer_new();
    tp_st_w_meta(w, "format", "pt");
    add_st(w, "model.embed_tokens.weight", V, dim, 0);
    add_st(w, "model.norm.weight", dim, 0, 1);
    add_st(w, "lm_head.weight", V, dim, 0);
    for (int l = 0; l < 2; l++) {
        char nm[96];
#define NAME(s) (snprintf(nm, sizeof nm, "model.layers.%d.%s.weight", l, s), nm)
        add_st(w, NAME("input_layernorm"), dim, 0, 1);
        add_st(w, NAME("post_attention_layernorm"), dim, 0, 1);
        add_st(w, NAME("self_attn.q_proj"), heads * hd, dim, 0);
        add_st(w, NAME("self_attn.k_proj"), kv * hd, dim, 0);
        add_st(w, NAME("self_attn.v_proj"), kv * hd, dim, 0);
        add_st(w, NAME("self_attn.o_proj"), dim, heads * hd, 0);
        add_st(w, NAME("mlp.gate_proj"), ffn, dim, 0);
        add_st(w, NAME("mlp.up_proj"), ffn, dim, 0);
        add_st(w, NAME("mlp.down_proj"), dim, ffn, 0);
#undef NAME
    }
    char p[600], err[TP_ERR_LEN];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    int rc = tp_st_writer_save(w, p, err);
    tp_st_writer_free(w);
    if (rc) { fprintf(stderr, "%s\n", err); return false; }
    snprintf(p, sizeof p, "%s/config.json", dir);
    fuzz_write_text(p, fuzz_tiny_config_json);
    snprintf(p, sizeof p, "%s/generation_config.json", dir);
    fuzz_write_text(p, fuzz_tiny_generation_config_json);
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    fuzz_write_text(p, fuzz_tiny_tokenizer_config_json);
    char *tj = fuzz_tiny_tokenizer_json(false, false);
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    fuzz_write_text(p, tj);
    free(tj);
    return true;
}
