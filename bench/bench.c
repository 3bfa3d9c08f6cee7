/* bench.c: `make bench`: speed of the engine on a Llama-3.2-1B-shaped model.
 *
 * Writes random-weight GGUF files of Llama-3.2-1B shape (dim 2048, 16 layers,
 * 32 heads, 8 KV heads, ffn 8192, the real Llama 3 vocabulary of 128256 tokens,
 * tied embeddings) in F16, Q8_0 and Q4_0 with tempo's own GGUF writer into a
 * temporary folder, measures this machine's memory read bandwidth in the same
 * run, and prints for each file:
 *   - prompt tokens/s (one 64-token batch),
 *   - decode tokens/s (median of single-token steps),
 *   - the bandwidth bound: bandwidth / weight bytes read per token, and the ratio.
 * Then the TEMPO table on the Q8_0 file: time per full step (selection, one
 * batched forward of the set, mixture) against the set width k = 1, 2, 4, 8, 16
 * (forced widths), and steps/s of a real TEMPO run through the public API.
 *
 * Last, the memory table on the Q4_0 file: the measured peak resident set of
 * real runs (build/tempo as a child process) against max tokens 100, 1000, 4000
 * and set width, next to the engine's estimate.
 *
 *   build/bench [--threads N] [--keep DIR] [--only f16|q8_0|q4_0] [--no-memory] [--quick]
 * (--quick leaves out the 4000-token memory run, which takes several minutes.)
 * Timings are medians; the machine is shared, so compare ratios within one run.
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
#include "kernels/threadpool.h"
#include "memory/memory.h"
#include "model/model.h"
#include "tensor/dtype.h"

#define DIM 2048
#define LAYERS 16
#define HEADS 32
#define KV_HEADS 8
#define HEAD_DIM (DIM / HEADS)
#define FFN 8192
#define CTX 16384
#define VOCAB_GGUF "../shared/tokenizer-tests/generated/ggml-vocab-llama3-from-tokenizer-json.gguf"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* ---- memory read bandwidth ---- */
typedef struct { const uint64_t *buf; size_t n; uint64_t sums[64]; } bw_job;

/* Sums 64-byte lines with wide vector adds (GCC vector extension), so the loop is
 * limited by memory, not by the adds. */
typedef uint64_t v4u64 __attribute__((vector_size(32)));
static void bw_task(void *ctx, int ith, int nth) {
    bw_job *j = ctx;
    size_t n = j->n / 8; /* 64-byte lines */
    size_t per = n / (size_t)nth, a = per * (size_t)ith, b = ith == nth - 1 ? n : a + per;
    const v4u64 *p = (const v4u64 *)j->buf;
    v4u64 s0 = { 0 }, s1 = { 0 }, s2 = { 0 }, s3 = { 0 };
    for (size_t i = a; i + 2 <= b; i += 2) {
        s0 += p[2 * i]; s1 += p[2 * i + 1]; s2 += p[2 * i + 2]; s3 += p[2 * i + 3];
    }
    v4u64 s = s0 + s1 + s2 + s3;
    j->sums[ith % 64] = s[0] + s[1] + s[2] + s[3];
}

static double measure_bandwidth(tp_pool *pool) {
    size_t bytes = (size_t)1 << 30;
    uint64_t *buf = tp_alloc_aligned(bytes);
    if (!buf) return 0;
    bw_job j = { buf, bytes / 8, {0} };
    for (size_t i = 0; i < j.n; i++) buf[i] = i;
    /* The bound is a ceiling, so take the fastest of several passes: on a shared
     * machine a median would understate what the memory can deliver. */
    double best = 1e30;
    for (int r = 0; r < 9; r++) {
        double t0 = tp_now();
        tp_pool_run(pool, bw_task, &j);
        double dt = tp_now() - t0;
        if (dt < best) best = dt;
    }
    tp_free_aligned(buf);
    return (double)bytes / best;
}

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
    float *tmp = tp_xmalloc(sizeof(float) * FFN);
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

/* Weight bytes one decode token streams: every layer matrix plus the output matrix. */
static double bytes_per_token(const tp_model *m) {
    double b = 0;
    const tp_weight *ws[7];
    for (int l = 0; l < m->hp.n_layers; l++) {
        const tp_layer *L = &m->layers[l];
        ws[0] = &L->wq; ws[1] = &L->wk; ws[2] = &L->wv; ws[3] = &L->wo;
        ws[4] = &L->w_gate; ws[5] = &L->w_up; ws[6] = &L->w_down;
        for (int i = 0; i < 7; i++) b += (double)tp_dtype_row_bytes(ws[i]->type, (size_t)ws[i]->n_in) * ws[i]->n_out;
    }
    b += (double)tp_dtype_row_bytes(m->output.type, (size_t)m->output.n_in) * m->output.n_out;
    return b;
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

static void bench_file(const char *label, const char *path, int threads, double bw) {
    char err[TP_ERR_LEN];
    tp_load_opts o = { 0 };
    tp_model *m = tp_model_load(path, &o, err);
    if (!m) { fprintf(stderr, "bench: %s\n", err); return; }
    bench_compute = tp_compute_new(m, threads, 0, 1024, err);
    if (!bench_compute) { fprintf(stderr, "bench: %s\n", err); tp_model_free(m); return; }
    /* fault the mapping in so the first timings do not measure the disk */
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < m->gguf->map_size; i += 4096) sink ^= m->gguf->map[i];
    (void)sink;
    tp_kv *kv = tp_kv_new(m->hp.n_layers, m->hp.n_kv_heads * m->hp.head_dim, TP_KV_F32, 1024, 0, err);
    float *logits = tp_xmalloc(sizeof(float) * (size_t)m->hp.n_vocab * 16);

    double t[16];
    for (int r = 0; r < 3; r++) {
        tp_kv_clear(kv);
        double t0 = tp_now();
        forward_n(m, kv, 64, 0, false, TP_VIS_CAUSAL, logits);
        t[r] = tp_now() - t0;
    }
    double prompt_tps = 64.0 / median(t, 3);
    int steps = 12;
    for (int r = 0; r < steps; r++) {
        double t0 = tp_now();
        forward_n(m, kv, 1, 64 + r, false, TP_VIS_ISOLATED, logits);
        t[r] = tp_now() - t0;
    }
    double decode_tps = 1.0 / median(t, steps);
    double bpt = bytes_per_token(m);
    double bound = bw / bpt;
    printf("%-6s %8.0f MB/token  prompt %7.1f tok/s  decode %6.2f tok/s  bound %6.2f tok/s  ratio %5.1f%%\n",
           label, bpt / 1e6, prompt_tps, decode_tps, bound, 100.0 * decode_tps / bound);
    fflush(stdout);

    free(logits);
    tp_kv_free(kv);
    tp_compute_free(bench_compute);
    bench_compute = NULL;
    tp_model_free(m);
}

/* Full TEMPO steps (selection, one batched forward of the set, mixture) with forced widths:
 * threshold 0 and width k make every step hold exactly k members, and min_steps = max_tokens
 * keeps end-of-generation out of the way. */
static void bench_tempo_widths(const char *label, const char *path, int threads) {
    tempo_error err;
    tempo_model_params mp;
    tempo_model_params_init(&mp);
    mp.threads = threads;
    tempo_model *m = tempo_model_open(path, &mp, &err);
    if (!m) { fprintf(stderr, "bench: %s\n", err.message); return; }
    printf("TEMPO step cost on %s (%d threads): k members per step, one batched forward per set\n", label, threads);
    printf("   k   ms/step   x k=1\n");
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
        double ms = 1000.0 * median(per, ok);
        if (ks[ki] == 1) base = ms;
        printf("  %2d  %8.1f   %5.2f\n", ks[ki], ms, ms / base);
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
        printf("\nTEMPO run (threshold 0.00002, W 8, %d steps): %.2f steps/s, %.2f members/step, %d parallel steps\n",
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
    const char *keep = NULL, *only = NULL;
    bool memory_table = true, quick = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--keep") && i + 1 < argc) keep = argv[++i];
        else if (!strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
        else if (!strcmp(argv[i], "--no-memory")) memory_table = false;
        else if (!strcmp(argv[i], "--quick")) quick = true;
        else { fprintf(stderr, "usage: bench [--threads N] [--keep DIR] [--only f16|q8_0|q4_0] [--no-memory] [--quick]\n"); return 2; }
    }
    if (access(VOCAB_GGUF, R_OK) != 0) { fprintf(stderr, "bench: needs %s\n", VOCAB_GGUF); return 1; }
    char dir[256];
    if (keep) snprintf(dir, sizeof dir, "%s", keep);
    else {
        snprintf(dir, sizeof dir, "/tmp/tempo-bench-XXXXXX");
        if (!mkdtemp(dir)) { perror("bench: mkdtemp"); return 1; }
    }
    tp_pool *pool = tp_pool_create(threads);
    double bw = measure_bandwidth(pool);
    tp_pool_free(pool);
    printf("tempo bench: Llama-3.2-1B shape (dim %d, %d layers, %d/%d heads, ffn %d, vocab 128256), %d threads\n",
           DIM, LAYERS, HEADS, KV_HEADS, FFN, threads);
    printf("memory read bandwidth (%d threads, best of 9 reads of 1 GiB): %.2f GB/s\n\n", threads, bw / 1e9);
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
        bench_file(files[i].label, paths[i], threads, bw);
        if (files[i].type == TP_Q8_0) {
            printf("\n");
            bench_tempo_widths(files[i].label, paths[i], threads);
            bench_tempo_run(paths[i], threads);
        }
        printf("\n");
        if (files[i].type == TP_Q4_0 && memory_table) bench_memory(paths[i], threads, quick);
        if (!keep) unlink(paths[i]);
    }
    if (!keep) rmdir(dir);
    return 0;
}
