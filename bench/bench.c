/* bench.c: `make bench`: speed of the engine on a Llama-3.2-1B-shaped model,
 * against the machine's roofline.
 *
 * Writes random-weight GGUF files of Llama-3.2-1B shape (dim 2048, 16 layers,
 * 32 heads, 8 KV heads, ffn 8192, the real Llama 3 vocabulary of 128256 tokens,
 * tied embeddings) in F16, Q8_0 and Q4_0 with tempo's own GGUF writer into a
 * temporary folder, and measures the machine in the same run (bench/probe.h):
 * read bandwidth and the int8-dot and f32-FMA peaks at every SIMD level the CPU
 * has, with the bench's threads (median and best of several passes).
 *
 * Then for each file and each SIMD level:
 *   - a 64-token prompt (one causal batch; logits of the last token only);
 *   - TEMPO steps of k = 1, 2, 4, 8, 16 members (forced widths; a full step:
 *     selection, one batched forward of the set, mixture), k = 1 being decode;
 * each against its roofline, the time it cannot beat:
 *     max(weight bytes / bandwidth, multiply-adds / compute peak)
 * with the best probe figures (probed again right before each table, so that
 * a ratio compares figures taken together), where the multiply-adds are the weights' count
 * times the tokens whose products are computed (attention, norms and
 * selection are not counted: they are the part of a step above the roofline).
 * A figure over 100% means a probe did not find the machine's peak and is
 * flagged as a probe error. The table says which file it timed (the weight
 * type of the loaded model).
 *
 * Then steps/s of a real TEMPO run (Q8_0 file), and the memory table on the
 * Q4_0 file: the measured peak resident set of real runs (build/tempo as a
 * child process) against max tokens 100, 1000, 4000 and set width, next to the
 * engine's estimate.
 *
 *   build/bench [--threads N] [--keep DIR] [--only f16|q8_0|q4_0] [--level avx512|avx2|generic]
 *               [--no-memory] [--quick]
 * (--quick leaves out the 4000-token memory run, which takes several minutes.)
 * Timings are medians; the machine may be shared, so compare ratios within one run.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tempo.h"
#include "tools/measure.h"
#include "core/common.h"
#include "format/gguf.h"
#include "tools/gguf_write.h"
#include "tools/xalloc.h"
#include "kernels/threadpool.h"
#include "memory/memory.h"
#include "model/model.h"
#include "tensor/dtype.h"
#include "probe.h"

#define DIM 2048
#define LAYERS 16
#define HEADS 32
#define KV_HEADS 8
#define HEAD_DIM (DIM / HEADS)
#define FFN 8192
#define CTX 16384
#define VOCAB_GGUF "../shared/tokenizer-tests/generated/ggml-vocab-llama3-from-tokenizer-json.gguf"

/* ---- random-weight model files ---- */
typedef struct { uint32_t type; uint64_t seed; float scale; float *tmp; size_t n; } rand_rows;

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void fill_row(void *ctx, uint64_t row, void *dst, size_t row_bytes) {
    rand_rows *r = ctx;
    uint64_t s = r->seed * 1000003u + row;
    for (size_t i = 0; i < r->n; i += 2) {
        uint64_t z = splitmix(&s);
        /* two uniform values in [-scale, scale) from one draw */
        r->tmp[i] = ((float)(z & 0xffffffff) / 4294967296.0f * 2 - 1) * r->scale;
        if (i + 1 < r->n) r->tmp[i + 1] = ((float)(z >> 32) / 4294967296.0f * 2 - 1) * r->scale;
    }
    tp_quantize_row(r->type, r->tmp, dst, r->n);
    (void)row_bytes;
}

static void fill_ones(void *ctx, uint64_t row, void *dst, size_t row_bytes) {
    float *d = dst;
    for (size_t i = 0; i < row_bytes / 4; i++) d[i] = 1.0f;
    (void)ctx; (void)row;
}

static int write_model(const char *path, uint32_t type, char *err) {
    gguf_file *voc = tp_gguf_open(VOCAB_GGUF, err);
    if (!voc) return -1;
    gguf_writer *w = tp_gguf_writer_new(32);
    tp_gguf_w_str(w, "general.architecture", "llama");
    tp_gguf_w_str(w, "general.name", "tempo-bench-1B-shape");
    tp_gguf_w_u32(w, "llama.context_length", CTX);
    tp_gguf_w_u32(w, "llama.embedding_length", DIM);
    tp_gguf_w_u32(w, "llama.block_count", LAYERS);
    tp_gguf_w_u32(w, "llama.feed_forward_length", FFN);
    tp_gguf_w_u32(w, "llama.attention.head_count", HEADS);
    tp_gguf_w_u32(w, "llama.attention.head_count_kv", KV_HEADS);
    tp_gguf_w_u32(w, "llama.rope.dimension_count", HEAD_DIM);
    tp_gguf_w_f32(w, "llama.rope.freq_base", 500000.0f);
    tp_gguf_w_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    tp_gguf_w_copy_kv(w, voc, "tokenizer.");
    int n_vocab = 0;
    const gguf_kv *toks = tp_gguf_find(voc, "tokenizer.ggml.tokens");
    if (toks) n_vocab = (int)toks->value.v.arr.count;

    /* one generator per tensor; they must outlive tp_gguf_writer_save */
    enum { MAXT = 2 + LAYERS * 9 };
    rand_rows gens[MAXT];
    int ng = 0;
    float *tmp = tool_xmalloc(sizeof(float) * FFN);
#define ADD_MAT(name, n_in, n_out, sc) do {                                                  \
        uint64_t ne_[2] = { (uint64_t)(n_in), (uint64_t)(n_out) };                           \
        gens[ng] = (rand_rows){ type, (uint64_t)ng + 1, (sc), tmp, (size_t)(n_in) };         \
        tp_gguf_w_tensor_rows(w, name, type, 2, ne_, fill_row, &gens[ng]); ng++; } while (0)
#define ADD_NORM(name) do { uint64_t ne_[1] = { DIM };                                       \
        tp_gguf_w_tensor_rows(w, name, TP_F32, 1, ne_, fill_ones, NULL); } while (0)
    char nm[96];
    ADD_MAT("token_embd.weight", DIM, n_vocab, 0.05f);
    ADD_NORM("output_norm.weight");
    for (int l = 0; l < LAYERS; l++) {
#define NM(s) (snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, s), nm)
        ADD_NORM(NM("attn_norm"));
        ADD_NORM(NM("ffn_norm"));
        ADD_MAT(NM("attn_q"), DIM, DIM, 0.04f);
        ADD_MAT(NM("attn_k"), DIM, KV_HEADS * HEAD_DIM, 0.04f);
        ADD_MAT(NM("attn_v"), DIM, KV_HEADS * HEAD_DIM, 0.04f);
        ADD_MAT(NM("attn_output"), DIM, DIM, 0.02f);
        ADD_MAT(NM("ffn_gate"), DIM, FFN, 0.04f);
        ADD_MAT(NM("ffn_up"), DIM, FFN, 0.04f);
        ADD_MAT(NM("ffn_down"), FFN, DIM, 0.02f);
#undef NM
    }
    int rc = tp_gguf_writer_save(w, path, err);
    tp_gguf_writer_free(w);
    tp_gguf_close(voc);
    free(tmp);
    return rc;
}

/* Weight bytes one step streams (every layer matrix plus the output matrix),
 * and the multiply-adds per token of the layers and of the output. */
static void weight_counts(const tp_model *m, double *bytes, double *layer_macs, double *out_macs) {
    double b = 0, lm = 0;
    for (int l = 0; l < m->hp.n_layers; l++) {
        const tp_layer *L = &m->layers[l];
        const tp_weight *ws[7] = { &L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down };
        for (int i = 0; i < 7; i++) {
            b += (double)tp_dtype_row_bytes(ws[i]->type, (size_t)ws[i]->n_in) * ws[i]->n_out;
            lm += (double)ws[i]->n_in * ws[i]->n_out;
        }
    }
    b += (double)tp_dtype_row_bytes(m->output.type, (size_t)m->output.n_in) * m->output.n_out;
    *bytes = b;
    *layer_macs = lm;
    *out_macs = (double)m->output.n_in * m->output.n_out;
}

static tp_compute *bench_compute; /* the bench's one compute context (threads, buffers) */

static int forward_n(tp_model *m, tp_kv *kv, int n, int pos0, bool same_pos, tp_visibility vis, float *logits) {
    int32_t toks[64], pos[64];
    for (int i = 0; i < n; i++) { toks[i] = 1000 + 37 * i; pos[i] = same_pos ? pos0 : pos0 + i; }
    char err[TP_ERR_LEN];
    tp_batch b = { .n = n, .tokens = toks, .pos = pos, .step = 0, .vis = vis, .logits = logits,
                   .logits_last_only = vis == TP_VIS_CAUSAL };
    if (tp_forward(m, bench_compute, kv, &b, err)) { fprintf(stderr, "bench: %s\n", err); return -1; }
    return 0;
}

/* the machine, per SIMD level (bench/probe.h) */
typedef struct {
    const char *name;
    probe_rate bw, i8, f32;
} level_probe;

static int g_probe_error; /* some figure passed 100% */

static const char *pct(double roof_s, double t_s) {
    static char buf[8][16];
    static int k;
    char *o = buf[k++ & 7];
    double p = 100.0 * roof_s / t_s;
    if (p > 100.0) g_probe_error = 1;
    snprintf(o, 16, "%5.0f%%%s", p, p > 100.0 ? "!" : " ");
    return o;
}

typedef struct {
    double bytes, layer_macs, out_macs;
    uint32_t type;
    char label[16];
} file_info;

/* Loads the file, reads what it holds, times a 64-token prompt. */
static int bench_prompt(const char *path, int threads, const level_probe *lp, file_info *fi) {
    char err[TP_ERR_LEN];
    tp_load_opts o = { 0 };
    tp_model *m = tp_model_load(path, &o, err);
    if (!m) { fprintf(stderr, "bench: %s\n", err); return -1; }
    tp_model_place_weights(m, 0, false); /* as tempo_model_open does on the CPU */
    bench_compute = tp_compute_new(m, threads, 0, 1024, err);
    if (!bench_compute) { fprintf(stderr, "bench: %s\n", err); tp_model_free(m); return -1; }
    weight_counts(m, &fi->bytes, &fi->layer_macs, &fi->out_macs);
    fi->type = m->layers[0].wq.type;
    snprintf(fi->label, sizeof fi->label, "%s", tp_dtype_name(fi->type));
    /* fault every page in so the first timings do not measure the disk */
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < m->gguf->map_size; i += 4096) sink ^= m->gguf->map[i];
    (void)sink;
    tp_kv *kv = tp_kv_new(m->hp.n_layers, m->hp.n_kv_heads * m->hp.head_dim, TP_KV_F32, 1024, 0, err);
    float *logits = tool_xmalloc(sizeof(float) * (size_t)m->hp.n_vocab);
    double t[3];
    forward_n(m, kv, 8, 0, false, TP_VIS_CAUSAL, logits); /* warm-up */
    for (int r = 0; r < 3; r++) {
        tp_kv_clear(kv);
        double t0 = tp_now();
        forward_n(m, kv, 64, 0, false, TP_VIS_CAUSAL, logits);
        t[r] = tp_now() - t0;
    }
    double tp = probe_median(t, 3);
    const double peak = fi->type == TP_F16 || fi->type == TP_BF16 || fi->type == TP_F32 ? lp->f32.best : lp->i8.best;
    const double macs = 64 * fi->layer_macs + fi->out_macs;
    const double roof_c = macs / peak, roof_m = fi->bytes / lp->bw.best;
    const double roof = roof_c > roof_m ? roof_c : roof_m;
    printf("  prompt of 64: %8.1f ms (%6.1f tok/s), roofline %7.1f ms (%s bound), %s\n", 1e3 * tp, 64.0 / tp,
           1e3 * roof, roof_c > roof_m ? "compute" : "bandwidth", pct(roof, tp));
    fflush(stdout);
    free(logits);
    tp_kv_free(kv);
    tp_compute_free(bench_compute);
    bench_compute = NULL;
    tp_model_free(m);
    return 0;
}

/* Full TEMPO steps (selection, one batched forward of the set, mixture) with forced widths:
 * threshold 0 and width k make every step hold exactly k members, and min_steps = max_tokens
 * keeps end-of-generation out of the way. */
static void bench_tempo_widths(const char *path, int threads, const level_probe *lp, const file_info *fi) {
    tempo_error err;
    tempo_model_params mp;
    tempo_model_params_init(&mp);
    mp.threads = threads;
    tempo_model *m = tempo_model_open(path, &mp, &err);
    if (!m) { fprintf(stderr, "bench: %s\n", err.message); return; }
    const double peak = fi->type == TP_F16 || fi->type == TP_BF16 || fi->type == TP_F32 ? lp->f32.best : lp->i8.best;
    printf("  TEMPO steps on %s (k members, one batched forward per set):\n", fi->label);
    printf("     k   ms/step  roofline ms   %%roof   x k=1\n");
    double base = 0;
    const int ks[] = { 1, 2, 4, 8, 16 };
    for (int ki = 0; ki < 5; ki++) {
        double per[3];
        int ok = 0;
        for (int rep = 0; rep < 3; rep++) {
            tempo_gen_params g;
            tempo_gen_params_init(&g);
            g.max_tokens = 9; /* 8 fed steps: the last set is never fed */
            g.min_steps = 9;
            g.selection_threshold = 0.0;
            g.max_parallel_tokens = ks[ki];
            tempo_session *s = tempo_session_new(m, &g, &err);
            if (!s || tempo_session_prefill(s, "Once upon a time there was a", &err)) {
                fprintf(stderr, "bench: %s\n", err.message);
                tempo_session_free(s);
                break;
            }
            tempo_step_info info;
            while (tempo_session_step(s, &info, &err) == 1) {}
            tempo_session_stats st;
            tempo_session_get_stats(s, &st);
            if (st.fed_steps > 0) per[ok++] = st.steps_s / st.fed_steps;
            tempo_session_free(s);
        }
        if (!ok) break;
        double t = probe_median(per, ok);
        if (ks[ki] == 1) base = t;
        double roof_m = fi->bytes / lp->bw.best, roof_c = ks[ki] * (fi->layer_macs + fi->out_macs) / peak;
        double roof = roof_m > roof_c ? roof_m : roof_c;
        printf("    %2d  %8.1f  %8.1f %s  %s  %5.2f\n", ks[ki], 1e3 * t, 1e3 * roof, roof_m > roof_c ? "(bw)" : "(cpu)",
               pct(roof, t), t / base);
        fflush(stdout);
    }
    tempo_model_close(m);
}

static void bench_tempo_run(const char *path, int threads) {
    tempo_error err;
    tempo_model_params mp;
    tempo_model_params_init(&mp);
    mp.threads = threads;
    tempo_gen_params g;
    tempo_gen_params_init(&g);
    g.max_tokens = 16;
    g.selection_threshold = 0.00002;
    g.max_parallel_tokens = 8;
    tempo_model *m = tempo_model_open(path, &mp, &err);
    if (!m) { fprintf(stderr, "bench: %s\n", err.message); return; }
    tempo_result *r = tempo_generate(m, "Once upon a time there was a", &g, NULL, NULL, NULL, &err);
    if (r) {
        int members = 0;
        for (int i = 0; i < r->n_steps; i++) members += r->steps[i].n_tokens;
        printf("TEMPO run (threshold 0.00002, W 8, %d steps, best level): %.2f steps/s, %.2f members/step, %d parallel steps\n",
               r->n_steps, r->n_steps / r->generation_time_s, (double)members / (r->n_steps ? r->n_steps : 1),
               r->parallel_steps);
        tempo_result_free(r);
    } else fprintf(stderr, "bench: %s\n", err.message);
    tempo_model_close(m);
}

/* Peak memory of real runs against max tokens and width (KV slots grow with
 * both), beside the estimate the memory budget plans with. Widths are forced
 * (threshold 0 keeps exactly W members per step). */
static void bench_memory(const char *path, int threads, bool quick) {
    char err[TP_ERR_LEN], extra[128];
    snprintf(extra, sizeof extra, "--threads %d --max-memory-gb 64", threads);
    const int short_runs[] = { 100, 1000 }, widths[] = { 1, 4 }, long_run[] = { 4000 }, one[] = { 1 };
    fflush(stdout);
    if (tp_memory_bench("build/tempo", path, extra, TP_KV_F32, short_runs, 2, widths, 2, stdout, err))
        fprintf(stderr, "bench: %s\n", err);
    if (!quick && tp_memory_bench("build/tempo", path, extra, TP_KV_F32, long_run, 1, one, 1, stdout, err))
        fprintf(stderr, "bench: %s\n", err);
}

int main(int argc, char **argv) {
    int threads = 2;
    const char *keep = NULL, *only = NULL, *only_level = NULL;
    bool memory_table = true, quick = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--keep") && i + 1 < argc) keep = argv[++i];
        else if (!strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
        else if (!strcmp(argv[i], "--level") && i + 1 < argc) only_level = argv[++i];
        else if (!strcmp(argv[i], "--no-memory")) memory_table = false;
        else if (!strcmp(argv[i], "--quick")) quick = true;
        else {
            fprintf(stderr, "usage: bench [--threads N] [--keep DIR] [--only f16|q8_0|q4_0] [--level avx512|avx2|generic] "
                            "[--no-memory] [--quick]\n");
            return 2;
        }
    }
    if (access(VOCAB_GGUF, R_OK) != 0) { fprintf(stderr, "bench: needs %s\n", VOCAB_GGUF); return 1; }
    char dir[256];
    if (keep) snprintf(dir, sizeof dir, "%s", keep);
    else {
        snprintf(dir, sizeof dir, "/tmp/tempo-bench-XXXXXX");
        if (!mkdtemp(dir)) { perror("bench: mkdtemp"); return 1; }
    }
    /* the SIMD levels to time: every one the CPU has (generic only when it has none) */
    const char *names[3] = { "avx512", "avx2", "generic" };
    level_probe lp[3];
    int n_levels = 0;
    tp_pool *pool = tp_pool_create(threads);
    for (int l = 0; l < 3; l++) {
        if (!tp_simd_available(names[l]) || (only_level && strcmp(only_level, names[l]))) continue;
        if (!only_level && l == 2 && n_levels > 0) continue;
        int code = l == 0 ? 2 : l == 1 ? 1 : 0;
        lp[n_levels].name = names[l];
        lp[n_levels].bw = probe_bandwidth(pool, code);
        lp[n_levels].i8 = probe_compute(pool, code, 0);
        lp[n_levels].f32 = probe_compute(pool, code, 1);
        n_levels++;
    }
    tp_pool_free(pool);
    if (!n_levels) { fprintf(stderr, "bench: no SIMD level %s here\n", only_level ? only_level : ""); return 1; }
    printf("tempo bench: Llama-3.2-1B shape (dim %d, %d layers, %d/%d heads, ffn %d, vocab 128256), %d threads\n",
           DIM, LAYERS, HEADS, KV_HEADS, FFN, threads);
    printf("machine (%d threads; median / best of several passes):\n", threads);
    printf("  level     read GB/s      int8 dot G/s     f32 FMA G/s\n");
    for (int l = 0; l < n_levels; l++)
        printf("  %-7s  %5.1f / %5.1f   %6.0f / %6.0f   %5.0f / %5.0f\n", lp[l].name, lp[l].bw.median / 1e9,
               lp[l].bw.best / 1e9, lp[l].i8.median / 1e9, lp[l].i8.best / 1e9, lp[l].f32.median / 1e9,
               lp[l].f32.best / 1e9);
    printf("(roofline: max(weight bytes / best read, multiply-adds / best peak); int8 dot for Q8_0/Q4_0, FMA for F16)\n\n");
    struct { const char *label; uint32_t type; } files[] = { { "F16", TP_F16 }, { "Q8_0", TP_Q8_0 }, { "Q4_0", TP_Q4_0 } };
    char paths[3][320];
    for (int i = 0; i < 3; i++) {
        const char *lname = files[i].type == TP_F16 ? "f16" : files[i].type == TP_Q8_0 ? "q8_0" : "q4_0";
        if (only && strcmp(only, lname)) continue;
        snprintf(paths[i], sizeof paths[i], "%s/bench-1b-%s.gguf", dir, lname);
        char err[TP_ERR_LEN];
        if (access(paths[i], R_OK) != 0) {
            double t0 = tp_now();
            if (write_model(paths[i], files[i].type, err)) { fprintf(stderr, "bench: %s\n", err); return 1; }
            fprintf(stderr, "wrote %s in %.1f s\n", paths[i], tp_now() - t0);
        }
        for (int l = 0; l < n_levels; l++) {
            tp_matmul_set_simd(lp[l].name);
            file_info fi;
            /* the machine again, right before its tables: on a shared machine the
             * ceilings move, and a ratio should compare figures taken together */
            level_probe now = lp[l];
            tp_pool *pp = tp_pool_create(threads);
            int code = !strcmp(lp[l].name, "avx512") ? 2 : !strcmp(lp[l].name, "avx2") ? 1 : 0;
            now.bw = probe_bandwidth(pp, code);
            now.i8 = probe_compute(pp, code, 0);
            now.f32 = probe_compute(pp, code, 1);
            tp_pool_free(pp);
            printf("%s (%s), %s, %d threads: read %.1f GB/s, int8 dot %.0f G/s, f32 FMA %.0f G/s (best, just now)\n",
                   paths[i], files[i].label, lp[l].name, threads, now.bw.best / 1e9, now.i8.best / 1e9,
                   now.f32.best / 1e9);
            if (bench_prompt(paths[i], threads, &now, &fi) == 0) {
                printf("  weights %.0f MB per step: %.1f G multiply-adds per token (layers) + %.2f G (output)\n",
                       fi.bytes / 1e6, fi.layer_macs / 1e9, fi.out_macs / 1e9);
                bench_tempo_widths(paths[i], threads, &now, &fi);
            }
            printf("\n");
        }
        tp_matmul_set_simd(NULL);
        if (files[i].type == TP_Q8_0) bench_tempo_run(paths[i], threads);
        printf("\n");
        if (files[i].type == TP_Q4_0 && memory_table) bench_memory(paths[i], threads, quick);
        if (!keep) unlink(paths[i]);
    }
    if (g_probe_error)
        printf("\n!: over 100%% of the roofline: a probe did not find the machine's peak (probe error).\n");
    if (!keep) rmdir(dir);
    return 0;
}
