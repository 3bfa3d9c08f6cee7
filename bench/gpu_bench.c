/* gpu_bench.c: the GPU benchmark behind bench/gpu.sh.
 *
 * For Llama-3.2-1B- and 3B-shaped random-weight GGUF files in F16 and Q4_0
 * (written here with tempo's writer; a synthetic byte-fallback vocabulary of
 * Llama 3's size, so nothing outside the repository is needed), on one GPU:
 *   - the device's read bandwidth (a reduction kernel over a 1 GB buffer, the
 *     best of 10 reads) and the roofline: bandwidth / weight bytes per token;
 *   - decode tokens/s: steps of one member through a session (selection, one
 *     forward, the mixture on the device), and the ratio to the roofline;
 *   - TEMPO steps/s with forced widths 1, 2, 4, 8, 16 (every step holds
 *     exactly k members), and the cost of a step of 8 against a step of 1.
 * Then the targets of issue 13 on an H100/H200: decode >= 60% of the roofline,
 * step(8) <= 1.3 x step(1), and >= 170 TEMPO steps/s on the 3B F16 shape.
 *
 *   build/gpu_bench [--device gpu[:N]] [--tiny] [--shapes 1b,3b] [--types f16,q4_0]
 *                   [--steps N] [--dir DIR] [--keep] [--profile]
 * --profile: GPU timestamps after every dispatch; prints where a step's time goes
 * at each width (the timestamps cost a little: take the table from a run without).
 * --tiny: a 2-layer, 256-wide shape with a 1024-token vocabulary (for testing the
 * script on lavapipe: bench/gpu.sh --tiny --device gpu:0).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tempo.h"
#include "core/common.h"
#include "format/gguf.h"
#include "gpu/gpu.h"
#include "gpu/backend.h"
#include "model/model.h"
#include "tools/gguf_write.h"
#include "tools/xalloc.h"
#include "tensor/dtype.h"

typedef struct {
    const char *name;
    int dim, layers, heads, kv_heads, ffn, vocab, ctx;
} shape;

static const shape SHAPES[] = {
    { "1B", 2048, 16, 32, 8, 8192, 128256, 4096 }, /* Llama 3.2 1B */
    { "3B", 3072, 28, 24, 8, 8192, 128256, 4096 }, /* Llama 3.2 3B */
    { "tiny", 256, 2, 4, 2, 512, 1024, 512 },
};

/* ---- writing the files ---- */
#define TABLE (1 << 16)
static float g_table[TABLE + 16384];

static void init_table(void) {
    uint64_t s = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < sizeof g_table / sizeof g_table[0]; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        g_table[i] = (float)((s >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
    }
}

typedef struct { uint32_t type; float scale; float *tmp; size_t n; } rows_ctx;

/* Random-looking rows cheaply: a window of a fixed random table, scaled. */
static void fill_row(void *ctx, uint64_t row, void *dst, size_t row_bytes) {
    rows_ctx *r = ctx;
    size_t off = (size_t)((row * 2654435761u) % TABLE);
    for (size_t i = 0; i < r->n; i += 16384) {
        size_t m = r->n - i < 16384 ? r->n - i : 16384;
        for (size_t j = 0; j < m; j++) r->tmp[i + j] = g_table[off + j] * r->scale;
    }
    tp_quantize_row(r->type, r->tmp, dst, r->n);
    (void)row_bytes;
}

static void fill_ones(void *ctx, uint64_t row, void *dst, size_t row_bytes) {
    float *d = dst;
    for (size_t i = 0; i < row_bytes / 4; i++) d[i] = 1.0f;
    (void)ctx; (void)row;
}

/* A SentencePiece-style vocabulary: <unk> <s> </s>, the 256 byte tokens, then
 * filler pieces, so any prompt tokenizes (byte fallback). */
static void add_vocab(gguf_writer *w, int n) {
    char **toks = tool_xcalloc((size_t)n, sizeof *toks);
    float *scores = tool_xcalloc((size_t)n, sizeof *scores);
    int32_t *types = tool_xcalloc((size_t)n, sizeof *types);
    char buf[32];
    for (int i = 0; i < n; i++) {
        if (i == 0) snprintf(buf, sizeof buf, "<unk>"), types[i] = 2;
        else if (i == 1) snprintf(buf, sizeof buf, "<s>"), types[i] = 3;
        else if (i == 2) snprintf(buf, sizeof buf, "</s>"), types[i] = 3;
        else if (i < 259) snprintf(buf, sizeof buf, "<0x%02X>", i - 3), types[i] = 6;
        else snprintf(buf, sizeof buf, "w%d", i), types[i] = 1;
        toks[i] = tool_xstrdup(buf);
        scores[i] = -(float)i;
    }
    tp_gguf_w_str(w, "tokenizer.ggml.model", "llama");
    tp_gguf_w_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)toks, (size_t)n);
    tp_gguf_w_arr_f32(w, "tokenizer.ggml.scores", scores, (size_t)n);
    tp_gguf_w_arr_i32(w, "tokenizer.ggml.token_type", types, (size_t)n);
    tp_gguf_w_u32(w, "tokenizer.ggml.bos_token_id", 1);
    tp_gguf_w_u32(w, "tokenizer.ggml.eos_token_id", 2);
    tp_gguf_w_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    for (int i = 0; i < n; i++) free(toks[i]);
    free(toks);
    free(scores);
    free(types);
}

static int write_model(const char *path, const shape *s, uint32_t type, char *err) {
    gguf_writer *w = tp_gguf_writer_new(32);
    tp_gguf_w_str(w, "general.architecture", "llama");
    tp_gguf_w_str(w, "general.name", "tempo-gpu-bench");
    tp_gguf_w_u32(w, "llama.context_length", (uint32_t)s->ctx);
    tp_gguf_w_u32(w, "llama.embedding_length", (uint32_t)s->dim);
    tp_gguf_w_u32(w, "llama.block_count", (uint32_t)s->layers);
    tp_gguf_w_u32(w, "llama.feed_forward_length", (uint32_t)s->ffn);
    tp_gguf_w_u32(w, "llama.attention.head_count", (uint32_t)s->heads);
    tp_gguf_w_u32(w, "llama.attention.head_count_kv", (uint32_t)s->kv_heads);
    tp_gguf_w_u32(w, "llama.rope.dimension_count", (uint32_t)(s->dim / s->heads));
    tp_gguf_w_f32(w, "llama.rope.freq_base", 500000.0f);
    tp_gguf_w_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    add_vocab(w, s->vocab);
    int hd = s->dim / s->heads, kvd = s->kv_heads * hd;
    int maxt = 2 + s->layers * 9;
    rows_ctx *g = tool_xcalloc((size_t)maxt, sizeof *g);
    float *tmp = tool_xmalloc(sizeof(float) * (size_t)(s->ffn > s->dim ? s->ffn : s->dim));
    int ng = 0;
#define MAT(name, n_in, n_out, sc) do {                                                        \
        uint64_t ne_[2] = { (uint64_t)(n_in), (uint64_t)(n_out) };                             \
        g[ng] = (rows_ctx){ type, (sc), tmp, (size_t)(n_in) };                                  \
        tp_gguf_w_tensor_rows(w, name, type, 2, ne_, fill_row, &g[ng]); ng++; } while (0)
#define NORM(name) do { uint64_t ne_[1] = { (uint64_t)s->dim };                                 \
        tp_gguf_w_tensor_rows(w, name, TP_F32, 1, ne_, fill_ones, NULL); } while (0)
    char nm[96];
    MAT("token_embd.weight", s->dim, s->vocab, 0.05f); /* tied: also the output matrix */
    NORM("output_norm.weight");
    for (int l = 0; l < s->layers; l++) {
#define NM(x) (snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, x), nm)
        NORM(NM("attn_norm"));
        NORM(NM("ffn_norm"));
        MAT(NM("attn_q"), s->dim, s->dim, 0.04f);
        MAT(NM("attn_k"), s->dim, kvd, 0.04f);
        MAT(NM("attn_v"), s->dim, kvd, 0.04f);
        MAT(NM("attn_output"), s->dim, s->dim, 0.02f);
        MAT(NM("ffn_gate"), s->dim, s->ffn, 0.04f);
        MAT(NM("ffn_up"), s->dim, s->ffn, 0.04f);
        MAT(NM("ffn_down"), s->ffn, s->dim, 0.02f);
#undef NM
    }
#undef MAT
#undef NORM
    int rc = tp_gguf_writer_save(w, path, err);
    tp_gguf_writer_free(w);
    free(tmp);
    free(g);
    return rc;
}

/* Weight bytes a decode token reads: every layer matrix and the output matrix. */
static double bytes_per_token(const tp_model *m) {
    double b = 0;
    for (int l = 0; l < m->hp.n_layers; l++) {
        const tp_layer *L = &m->layers[l];
        const tp_weight *ws[7] = { &L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down };
        for (int i = 0; i < 7; i++) b += (double)tp_dtype_row_bytes(ws[i]->type, (size_t)ws[i]->n_in) * ws[i]->n_out;
    }
    return b + (double)tp_dtype_row_bytes(m->output.type, (size_t)m->output.n_in) * m->output.n_out;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Seconds per fed step at a forced width (threshold 0, end of generation ignored: every step
 * holds exactly `width` members), the median of 3 sessions of `steps` fed steps. */
static double step_time(tempo_model *m, int width, int steps) {
    tempo_error err;
    double t[3];
    int ok = 0;
    tempo_gen_params g;
    tempo_gen_params_init(&g);
    g.max_tokens = steps + 1; /* the last step's set is not fed */
    g.min_steps = g.max_tokens;
    g.selection_threshold = 0.0;
    g.max_parallel_tokens = width;
    for (int rep = 0; rep < 3; rep++) {
        tempo_session *s = tempo_session_new(m, &g, &err);
        if (!s || tempo_session_prefill(s, "Once upon a time there was a", &err)) {
            fprintf(stderr, "gpu_bench: %s\n", err.message);
            tempo_session_free(s);
            return -1;
        }
        tempo_step_info si;
        while (tempo_session_step(s, &si, &err) == 1) {}
        tempo_session_stats st;
        tempo_session_get_stats(s, &st);
        if (st.fed_steps > 0) t[ok++] = st.steps_s / st.fed_steps;
        tempo_session_free(s);
    }
    if (!ok) return -1;
    qsort(t, (size_t)ok, sizeof t[0], cmp_d);
    return t[ok / 2];
}

int main(int argc, char **argv) {
    const char *device = "gpu", *dir = NULL, *shapes = "1b,3b", *types = "f16,q4_0";
    bool keep = false, tiny = false, profile = false;
    int steps = 32;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--device") && i + 1 < argc) device = argv[++i];
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc) dir = argv[++i];
        else if (!strcmp(argv[i], "--shapes") && i + 1 < argc) shapes = argv[++i];
        else if (!strcmp(argv[i], "--types") && i + 1 < argc) types = argv[++i];
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--keep")) keep = true;
        else if (!strcmp(argv[i], "--tiny")) tiny = true;
        else if (!strcmp(argv[i], "--profile")) profile = true;
        else {
            fprintf(stderr, "usage: gpu_bench [--device gpu[:N]] [--tiny] [--shapes 1b,3b] [--types f16,q4_0] "
                            "[--steps N] [--dir DIR] [--keep] [--profile]\n");
            return 2;
        }
    }
    if (tiny) shapes = "tiny";
    char err[TEMPO_ERR_LEN] = "", buf[32];
    tempo_error terr;
    if (!tp_gpu_built()) { fprintf(stderr, "gpu_bench: tempo was built without the Vulkan backend\n"); return 1; }
    const char *res = tempo_device_resolve(device, buf, sizeof buf, &terr);
    if (!res || !strcmp(res, "cpu")) {
        fprintf(stderr, "gpu_bench: %s\n", res ? "no GPU (see tempo devices)" : terr.message);
        return 1;
    }
    int idx = atoi(res + 4);
    tp_gpu *g = tp_gpu_open(idx, err);
    if (!g) { fprintf(stderr, "gpu_bench: %s\n", err); return 1; }
    tp_gpu_mem gm;
    tp_gpu_mem_get(g, &gm);
    if (profile) tp_gpu_profile_set(g, true); /* before the models' sessions exist */
    size_t probe = tiny ? (64u << 20) : (1u << 30);
    double bw = tp_gpu_read_bandwidth(g, probe, 10, err);
    if (bw <= 0) { fprintf(stderr, "gpu_bench: bandwidth probe: %s\n", err); return 1; }
    printf("device %s: %s, %.1f GB memory; read bandwidth %.0f GB/s (best of 10 reads of %zu MB)\n", res, tp_gpu_name(g),
           (double)gm.total_bytes / (1 << 30), bw / 1e9, probe >> 20);
    fflush(stdout);

    char tmpl[] = "/tmp/tempo-gpu-bench-XXXXXX";
    if (!dir) dir = mkdtemp(tmpl);
    if (!dir) { perror("gpu_bench: mkdtemp"); return 1; }
    mkdir(dir, 0777);
    init_table();

    printf("\n%-5s %-5s %8s %9s %9s %9s %7s | %-40s | %6s\n", "shape", "type", "weights", "roofline", "decode", "", "",
           "TEMPO steps/s at width 1 2 4 8 16", "w8/w1");
    printf("%-5s %-5s %8s %9s %9s %9s %7s | %-40s | %6s\n", "", "", "MB/tok", "tok/s", "tok/s", "fwd tok/s", "%roof", "", "");
    int fails = 0;
    for (size_t si = 0; si < sizeof SHAPES / sizeof SHAPES[0]; si++) {
        const shape *s = &SHAPES[si];
        char lname[8];
        snprintf(lname, sizeof lname, "%s", s->name);
        for (char *p = lname; *p; p++) *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
        if (!strstr(shapes, lname)) continue;
        for (int ti = 0; ti < 2; ti++) {
            uint32_t type = ti ? TP_Q4_0 : TP_F16;
            if (!strstr(types, ti ? "q4_0" : "f16")) continue;
            char path[1024];
            snprintf(path, sizeof path, "%s/%s-%s.gguf", dir, s->name, ti ? "q4_0" : "f16");
            struct stat sb;
            double t0 = tp_now();
            if (stat(path, &sb) != 0 && write_model(path, s, type, err)) { fprintf(stderr, "gpu_bench: %s\n", err); return 1; }
            double t_write = tp_now() - t0;
            tempo_model_params mp;
            tempo_model_params_init(&mp);
            mp.device = res;
            mp.max_memory_gb = 1000;
            t0 = tp_now();
            tempo_model *m = tempo_model_open(path, &mp, &terr);
            if (!m) { fprintf(stderr, "gpu_bench: %s\n", terr.message); return 1; }
            if (!m->dev) { fprintf(stderr, "gpu_bench: %s did not open on %s\n", path, res); return 1; }
            double t_load = tp_now() - t0;
            double bpt = bytes_per_token(m), roof = bw / bpt;

            /* the bare forward of one token (one submission), for reference */
            tp_kv *kv = tp_kv_new(m->hp.n_layers, m->hp.n_kv_heads * m->hp.head_dim, TP_KV_F32, 256, 0, err);
            tp_backend *be = kv ? tp_backend_new(m->dev, m, kv, m->dev->layers, false, err) : NULL;
            if (!be) fprintf(stderr, "gpu_bench: %s\n", err);
            float *probs = tool_xmalloc(sizeof(float) * (size_t)m->hp.n_vocab);
            double fw[16];
            int nf = 0;
            for (int r = 0; be && r < 16; r++) {
                int32_t tok = 300 + r, pos = r;
                float one = 1.0f;
                tp_batch b = { .n = 1, .tokens = &tok, .pos = &pos, .step = r, .vis = TP_VIS_ISOLATED, .mix = &one, .probs = probs };
                double f0 = tp_now();
                if (tp_backend_forward(be, m, NULL, kv, &b, err)) { fprintf(stderr, "gpu_bench: %s\n", err); break; }
                if (r >= 4) fw[nf++] = tp_now() - f0; /* the first ones warm up */
            }
            qsort(fw, (size_t)nf, sizeof fw[0], cmp_d);
            double fwd_tps = nf ? 1.0 / fw[nf / 2] : 0;
            free(probs);
            tp_backend_free(be);
            tp_kv_free(kv);

            static const int widths[5] = { 1, 2, 4, 8, 16 };
            double st[5];
            char prof[5][512];
            for (int k = 0; k < 5; k++) {
                tp_gpu_profile pr;
                tp_gpu_profile_read(g, &pr); /* clears */
                st[k] = step_time(m, widths[k], steps);
                tp_gpu_profile_read(g, &pr);
                prof[k][0] = 0;
                if (profile && pr.submits) {
                    double per = 1e3 / (double)pr.submits;
                    int n = snprintf(prof[k], sizeof prof[k], "      w%-2d step %.3f ms: device %.3f ms (", widths[k],
                                     st[k] * 1e3, pr.span_s * per);
                    for (int i = 0; i < pr.n && n < (int)sizeof prof[k] - 64; i++)
                        n += snprintf(prof[k] + n, sizeof prof[k] - (size_t)n, "%s%s %.3f x%.0f", i ? ", " : "", pr.name[i],
                                      pr.gpu_s[i] * per, (double)pr.count[i] / (double)pr.submits);
                    snprintf(prof[k] + n, sizeof prof[k] - (size_t)n, "); host: record %.3f, submit to fence %.3f, %.1f submits",
                             pr.record_s * per, pr.wait_s * per, (double)pr.submits / (3.0 * steps));
                }
            }
            double decode = st[0] > 0 ? 1.0 / st[0] : 0;
            char row[128];
            int n = 0;
            for (int k = 0; k < 5; k++) n += snprintf(row + n, sizeof row - (size_t)n, " %7.1f", st[k] > 0 ? 1.0 / st[k] : 0.0);
            double ratio = st[0] > 0 && st[3] > 0 ? st[3] / st[0] : 0;
            printf("%-5s %-5s %8.1f %9.1f %9.1f %9.1f %6.1f%% | %-40s | %6.2f   (write %.0fs, load %.1fs)\n", s->name,
                   ti ? "Q4_0" : "F16", bpt / (1 << 20), roof, decode, fwd_tps, 100.0 * decode / roof, row, ratio, t_write,
                   t_load);
            for (int k = 0; k < 5; k++)
                if (prof[k][0]) printf("%s\n", prof[k]);
            fflush(stdout);
            /* the targets (issue 13, for an H100/H200) */
            if (!tiny) {
                bool ok_roof = decode >= 0.6 * roof, ok_w8 = ratio > 0 && ratio <= 1.3;
                printf("      target decode >= 60%% of roofline: %s; step(8) <= 1.3 x step(1): %s", ok_roof ? "PASS" : "FAIL",
                       ok_w8 ? "PASS" : "FAIL");
                fails += !ok_roof + !ok_w8;
                if (si == 1 && ti == 0) {
                    bool ok170 = st[0] > 0 && 1.0 / st[0] >= 170 && st[3] > 0 && 1.0 / st[3] >= 170;
                    printf("; >= 170 TEMPO steps/s at widths 1 and 8: %s", ok170 ? "PASS" : "FAIL");
                    fails += !ok170;
                }
                printf("\n");
            }
            tempo_model_close(m);
            if (!keep) remove(path);
        }
    }
    if (!keep) rmdir(dir);
    else printf("files kept in %s\n", dir);
    tp_gpu_close(g);
    if (!tiny) printf("\n%s\n", fails ? "some targets were missed (see above)" : "all targets met");
    return 0;
}
