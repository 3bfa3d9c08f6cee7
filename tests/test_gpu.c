/* test_gpu.c: the Vulkan backend's kernels against the CPU kernels, on
 * whatever Vulkan device the machine has (Mesa's lavapipe on CI). Every test
 * skips, saying so, only when there is no Vulkan device at all.
 *
 * Tolerances. Both sides compute each product as a sum of the same terms
 * (float weights times f32 activations, or exact integer group sums scaled by
 * the same float scales, from activations quantized to the same bytes: the
 * quantizer test checks those are identical), in different orders. So
 * |gpu - cpu| <= c * n * eps * sum_c |w_c x_c| is the bound; we allow
 * 1e-6 * sum|w x| (measured on lavapipe: below 1e-7). A kernel that skipped
 * the activation quantization (dequantized weights times f32 activations)
 * would miss the CPU by over 1e-4 * sum|w x|: the test measures that too and
 * requires it to be far outside the bound, so the bound tells them apart.
 */
#include "test.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/common.h"
#include "gpu/gpu.h"
#include "kernels/matmul.h"
#include "kernels/matmul_internal.h"
#include "kernels/ops.h"
#include "kernels/threadpool.h"
#include "tensor/dtype.h"
#include "tempo/select.h"
#include "tempo.h"

static tp_gpu *open_gpu(void) {
    int idx = test_gpu_index();
    if (idx < 0) {
        fprintf(stderr, "  skipped: %s\n", tp_gpu_built() ? "no Vulkan device on this machine"
                                                         : "built without the Vulkan backend");
        return NULL;
    }
    char err[TP_ERR_LEN] = "";
    tp_gpu *g = tp_gpu_open(idx, err);
    if (!g) test_fail_at(__FILE__, __LINE__, "open gpu:%d: %s", idx, err);
    return g;
}

static uint64_t rng_state = 88172645463325252ull;
static float frand(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

TEST(gpu_devices_listed_and_resolved) {
    tp_gpu_device_info d[16];
    char err[TP_ERR_LEN] = "";
    int n = tp_gpu_devices(d, 16, err);
    if (!tp_gpu_built()) {
        CHECK_INT_EQ(n, 0);
        CHECK_INT_EQ(tp_gpu_resolve("auto", err), TP_DEVICE_CPU);
        CHECK_INT_EQ(tp_gpu_resolve("gpu", err), -2);
        CHECK(strstr(err, "without the Vulkan backend") != NULL);
        return;
    }
    if (n <= 0) { fprintf(stderr, "  skipped: no Vulkan device\n"); return; }
    for (int i = 0; i < n && i < 16; i++) {
        CHECK_INT_EQ(d[i].index, i);
        CHECK(d[i].name[0] != 0);
        CHECK(d[i].memory_bytes > 0);
        CHECK(d[i].free_bytes <= d[i].memory_bytes);
        fprintf(stderr, "  gpu:%d %s (%s) %.2f GB, usable %d %s\n", i, d[i].name, d[i].kind,
                (double)d[i].memory_bytes / (1 << 30), d[i].usable, d[i].missing);
    }
    /* the public listing says the same */
    tempo_device_info pub[16];
    CHECK_INT_EQ(tempo_devices(pub, 16), n);
    for (int i = 0; i < n && i < 16; i++) {
        CHECK(!strcmp(pub[i].name, d[i].name));
        CHECK_INT_EQ(pub[i].usable, d[i].usable);
        CHECK(pub[i].memory_gb > 0);
    }
    CHECK(tempo_gpu_built());
    CHECK_INT_EQ(tp_gpu_resolve("cpu", err), TP_DEVICE_CPU);
    CHECK_INT_EQ(tp_gpu_resolve("gpu:99", err), -2);
    CHECK(strstr(err, "gpu:99") != NULL);
    CHECK_INT_EQ(tp_gpu_resolve("gpu:x", err), -2);
    CHECK_INT_EQ(tp_gpu_resolve("tpu", err), -2);
    CHECK(strstr(err, "auto, cpu, gpu, gpu:N") != NULL);
    int idx = test_gpu_index();
    char spec[16];
    snprintf(spec, sizeof spec, "gpu:%d", idx);
    CHECK_INT_EQ(tp_gpu_resolve(spec, err), idx);
    /* auto and gpu never pick a software device unless TEMPO_VULKAN_ALLOW_CPU is set */
    const char *old = getenv("TEMPO_VULKAN_ALLOW_CPU");
    char *saved = old ? strdup(old) : NULL;
    unsetenv("TEMPO_VULKAN_ALLOW_CPU");
    int a = tp_gpu_resolve("auto", err);
    if (d[idx].software) {
        CHECK_INT_EQ(a, TP_DEVICE_CPU);
        CHECK_INT_EQ(tp_gpu_resolve("gpu", err), -2);
        CHECK_MSG(strstr(err, "no hardware GPU") && strstr(err, spec), "%s", err);
        setenv("TEMPO_VULKAN_ALLOW_CPU", "1", 1);
        CHECK_INT_EQ(tp_gpu_resolve("auto", err), idx);
        CHECK_INT_EQ(tp_gpu_resolve("gpu", err), idx);
    } else {
        CHECK_INT_EQ(a, idx);
    }
    if (saved) { setenv("TEMPO_VULKAN_ALLOW_CPU", saved, 1); free(saved); }
    else unsetenv("TEMPO_VULKAN_ALLOW_CPU");
}

/* The activation quantizers give the CPU's bytes exactly. */
TEST(gpu_quantize_activations_exactly_as_cpu) {
    tp_gpu *g = open_gpu();
    if (!g) return;
    enum { N = 1024 };
    float x[N];
    for (int i = 0; i < N; i++) x[i] = frand() * (i % 97 == 0 ? 30.0f : 1.5f);
    for (int i = 256; i < 288; i++) x[i] = 0.0f; /* an all-zero group */
    x[300] = 0.5f / 127.0f * 3; /* values near rounding ties */
    for (int kind = 1; kind <= 2; kind++) {
        int8_t qg[N], qc[N];
        float dg[N / 32], mg[N / 32], dc[N / 32], mc[N / 32], sc[N / 32], dk[N / 256];
        int32_t cc[N / 32];
        int16_t sums[N / 32];
        char err[TP_ERR_LEN] = "";
        REQUIRE(tp_gpu_check_quant(g, kind, x, N, qg, dg, mg, err) == 0);
        if (kind == 1) {
            tp_mm_quant_q8_generic(x, N, 0, qc, 32, dc, cc, sc, sums, 1);
        } else {
            /* the CPU keeps one d per 256 values and the int16 sums of 32; the GPU
             * gives per 32 values d and d * sum */
            tp_mm_quant_q8k_generic(x, N, 0, qc, 256, dk, cc, sc, sums, 1);
            for (int i = 0; i < N / 32; i++) {
                dc[i] = dk[i / 8];
                mc[i] = dk[i / 8] * (float)sums[i];
            }
        }
        int bad = 0;
        for (int i = 0; i < N; i++) bad += qg[i] != qc[i];
        for (int i = 0; i < N / 32; i++) bad += dg[i] != dc[i];
        if (kind == 2)
            for (int i = 0; i < N / 32; i++) bad += mg[i] != mc[i];
        CHECK_MSG(bad == 0, "kind %d: %d values differ", kind, bad);
    }
    tp_gpu_close(g);
}

/* y = W x on the GPU against tp_matmul, for every GPU weight type, with odd
 * row counts, batches that cross the shader's tile of 8 and rows whose
 * length is not a multiple of 32 (172: stories260K's FFN). */
static double matmul_case(tp_gpu *g, tp_matmul_ctx *mc, uint32_t type, int n_in, int n_out, int nb, bool glu,
                          double *naive) {
    size_t rb = tp_dtype_row_bytes(type, (size_t)n_in);
    uint8_t *w = malloc(rb * (size_t)n_out);
    float *row = malloc(sizeof(float) * (size_t)n_in), *wf = malloc(sizeof(float) * (size_t)n_in * n_out);
    float *x = malloc(sizeof(float) * (size_t)n_in * nb);
    float *yc = malloc(sizeof(float) * (size_t)n_out * nb), *yg = malloc(sizeof(float) * (size_t)n_out * nb);
    for (int r = 0; r < n_out; r++) {
        for (int i = 0; i < n_in; i++) row[i] = frand() * (r % 5 == 0 ? 3.0f : 0.5f);
        tp_quantize_row(type, row, w + (size_t)r * rb, (size_t)n_in);
        tp_dequantize_row(type, w + (size_t)r * rb, wf + (size_t)r * n_in, (size_t)n_in);
    }
    for (int i = 0; i < n_in * nb; i++) x[i] = frand() * 2.0f;
    /* glu: the input is silu(x) * x2, the CPU's tp_swiglu then the product */
    float *x2 = glu ? malloc(sizeof(float) * (size_t)n_in * nb) : NULL, *xs = x;
    if (glu) {
        xs = malloc(sizeof(float) * (size_t)n_in * nb);
        for (int i = 0; i < n_in * nb; i++) { x2[i] = frand() * 3.0f; xs[i] = x[i] * 3.0f; }
        memcpy(x, xs, sizeof(float) * (size_t)n_in * nb);
        tp_swiglu(xs, x2, n_in * nb);
    }
    tp_weight tw = { .data = w, .type = type, .n_in = n_in, .n_out = n_out };
    tp_matmul(mc, yc, xs, nb, &tw);
    char err[TP_ERR_LEN] = "";
    double worst = 1e9;
    *naive = 0;
    if (tp_gpu_check_matmul(g, &tw, x, x2, nb, yg, err) == 0) {
        worst = 0;
        for (int b = 0; b < nb; b++)
            for (int r = 0; r < n_out; r++) {
                double mag = 0, plain = 0;
                for (int i = 0; i < n_in; i++) {
                    double t = (double)wf[(size_t)r * n_in + i] * xs[(size_t)b * n_in + i];
                    mag += fabs(t);
                    plain += t;
                }
                double d = fabs((double)yg[(size_t)b * n_out + r] - yc[(size_t)b * n_out + r]) / (mag + 1e-30);
                if (d > worst) worst = d;
                d = fabs(plain - yc[(size_t)b * n_out + r]) / (mag + 1e-30);
                if (d > *naive) *naive = d;
            }
    } else fprintf(stderr, "  %s\n", err);
    if (glu) { free(x2); free(xs); }
    free(w); free(row); free(wf); free(x); free(yc); free(yg);
    return worst;
}

TEST(gpu_matmul_every_type_matches_cpu) {
    tp_gpu *g = open_gpu();
    if (!g) return;
    tp_pool *pool = tp_pool_create(1);
    tp_matmul_ctx *mc = tp_matmul_ctx_new(pool, 1024);
    static const uint32_t types[] = { TP_F32, TP_F16, TP_BF16, TP_Q8_0, TP_Q4_0, TP_Q4_K, TP_Q6_K };
    static const int shapes[][3] = { { 64, 3, 1 }, { 256, 67, 5 }, { 512, 33, 9 }, { 768, 130, 17 }, { 172, 64, 3 } };
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int n_in = shapes[s][0];
            if (n_in % (int)tp_dtype_block_elems(types[t])) continue;
            bool glu = s == 1 || s == 4; /* the FFN's down product: SwiGLU applied as the input is read */
            double naive, d = matmul_case(g, mc, types[t], n_in, shapes[s][1], shapes[s][2], glu, &naive);
            CHECK_MSG(d <= 1e-6, "%s %dx%d nb %d%s: max |gpu - cpu| / sum|w x| = %.3g", tp_dtype_name(types[t]),
                      shapes[s][1], n_in, shapes[s][2], glu ? " swiglu" : "", d);
            /* quantized types: f32 activations would be caught */
            if (types[t] != TP_F32 && types[t] != TP_F16 && types[t] != TP_BF16)
                CHECK_MSG(naive > 1e-4, "%s: the f32-activation product is only %.3g from the CPU's", tp_dtype_name(types[t]),
                          naive);
            if (s == 3 || (s == 4 && n_in % 32))
                fprintf(stderr, "  %-5s %4dx%-4d nb %2d: max rel diff %.2g (f32 activations would give %.2g)\n",
                        tp_dtype_name(types[t]), shapes[s][1], n_in, shapes[s][2], d, naive);
        }
    }
    tp_matmul_ctx_free(mc);
    tp_pool_free(pool);
    tp_gpu_close(g);
}

TEST(gpu_rmsnorm_mixture_match_cpu) {
    tp_gpu *g = open_gpu();
    if (!g) return;
    char err[TP_ERR_LEN] = "";
    enum { N = 300, NB = 3, V = 1000, R = 5 };
    float x[N * NB], w[N], yc[N * NB], yg[N * NB];
    for (int i = 0; i < N * NB; i++) x[i] = frand() * 4;
    for (int i = 0; i < N; i++) w[i] = 1.0f + frand() * 0.3f;
    for (int b = 0; b < NB; b++) tp_rmsnorm(yc + b * N, x + b * N, w, N, 1e-5f);
    REQUIRE(tp_gpu_check_rmsnorm(g, x, w, N, NB, 1e-5f, yg, err) == 0);
    double worst = 0;
    for (int i = 0; i < N * NB; i++) worst = fmax(worst, fabs(yg[i] - yc[i]) / (fabs(yc[i]) + 1e-6));
    CHECK_MSG(worst <= 1e-5, "rmsnorm rel %.3g", worst);

    static float z[R * V], zc[R * V], pc[V], pg[V];
    float mix[R] = { 0.4f, 0.3f, 0.15f, 0.1f, 0.05f }, p[R] = { 0.4f, 0.3f, 0.15f, 0.1f, 0.05f };
    for (int i = 0; i < R * V; i++) z[i] = zc[i] = frand() * 12;
    tp_mixture(zc, p, R, V, pc);
    REQUIRE(tp_gpu_check_mixture(g, z, mix, R, V, pg, err) == 0);
    worst = 0;
    double sum = 0;
    for (int i = 0; i < V; i++) { worst = fmax(worst, fabs(pg[i] - pc[i])); sum += pg[i]; }
    CHECK_MSG(worst <= 1e-6, "mixture abs %.3g", worst);
    CHECK_NEAR(sum, 1.0, 1e-5);
    tp_gpu_close(g);
}

/* The profile bench/gpu_bench prints: with profiling on, a submission's
 * dispatches are timed by GPU timestamps and summed per shader; reading clears
 * the sums; with it off, nothing is recorded. */
TEST(gpu_profile_times_each_shader) {
    tp_gpu *g = open_gpu();
    if (!g) return;
    char err[TP_ERR_LEN] = "";
    enum { N = 256, NB = 2 };
    float x[N * NB], w[N], y[N * NB];
    for (int i = 0; i < N * NB; i++) x[i] = frand();
    for (int i = 0; i < N; i++) w[i] = 1.0f;
    tp_gpu_profile pr;
    tp_gpu_profile_read(g, &pr); /* clear */
    tp_gpu_profile_set(g, true);
    REQUIRE(tp_gpu_check_rmsnorm(g, x, w, N, NB, 1e-5f, y, err) == 0);
    tp_gpu_profile_set(g, false);
    tp_gpu_profile_read(g, &pr);
    int rms = -1;
    for (int i = 0; i < pr.n; i++)
        if (!strcmp(pr.name[i], "rmsnorm")) rms = i;
    CHECK_MSG(pr.submits >= 1 && rms >= 0, "submits %llu, rows %d", (unsigned long long)pr.submits, pr.n);
    if (rms >= 0) {
        CHECK_INT_EQ((int)pr.count[rms], 1);
        CHECK(pr.gpu_s[rms] >= 0 && pr.gpu_s[rms] <= pr.span_s && pr.span_s < 10);
        CHECK(pr.wait_s > 0 && pr.record_s >= 0);
    }
    tp_gpu_profile_read(g, &pr);
    CHECK_INT_EQ((int)pr.submits, 0);
    REQUIRE(tp_gpu_check_rmsnorm(g, x, w, N, NB, 1e-5f, y, err) == 0); /* profiling off */
    tp_gpu_profile_read(g, &pr);
    CHECK_INT_EQ((int)pr.submits, 0);
    CHECK_INT_EQ(pr.n, 0);
    tp_gpu_close(g);
}


/* ------------------------------------------------- the forward, every type --
 * The whole pass on the GPU against the CPU for every GPU weight type: the shared stories260K
 * files (F32, F16, Q8_0, Q4_0), stories260K written as BF16, and, for the K-quants (whose
 * 256-value blocks stories260K's rows of 64 cannot hold), a small random model with stories260K's
 * tokenizer and rows of 256 and 512 values, also run with the Hugging Face rope layout; then
 * partial offload (2 of 5 layers on the GPU, the rest on the CPU through tp_forward_layers).
 * Prefill logits and 16 greedy steps, with an f32 and an f16 cache; the greedy tokens must be
 * identical everywhere.
 * Logit tolerances:
 *  - float weights (F32/F16/BF16), f32 cache: 1e-4 (measured: below 1e-5). The sums are the same
 *    terms in another order, and the shaders' exp/sqrt may differ from glibc's in the last bit.
 *  - block-quantized weights (activations requantized to int8 before every product), or an f16
 *    cache: 0.25 (measured up to 0.12 on the random model's logits of magnitude ~10, up to 0.05
 *    on stories260K). A last-bit difference -- a float sum in another order, an RMSNorm in float
 *    rather than double -- sometimes moves a value across a rounding boundary: an int8 activation
 *    by one step (of amax/127; when the value is its block's maximum, the whole block's scale
 *    moves), or an f16 key, value or probability by 2^-11. That step is of the size of the
 *    quantization error itself, and the following layers carry it to the logits. The kernels are
 *    checked for exactness separately (gpu_matmul_every_type_matches_cpu: 1e-6 relative on
 *    identical inputs); a wrong block layout, mask or head moves logits by whole units and
 *    changes the greedy tokens. */
#include "format/gguf.h"
#include "gpu/backend.h"
#include "model/model.h"
#include "tools/gguf_write.h"

#define STORIES SHARED_DIR "/models/stories260K.gguf"

static int write_stories_as(const char *path, uint32_t type) {
    char err[TP_ERR_LEN] = "";
    gguf_file *f = tp_gguf_open(STORIES, err);
    if (!f) return -1;
    gguf_writer *w = tp_gguf_writer_new((uint32_t)f->alignment);
    tp_gguf_w_copy_kv(w, f, NULL);
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        size_t n_in = (size_t)t->ne[0], rows = (size_t)(t->ne[1] * t->ne[2] * t->ne[3]);
        if (t->n_dims != 2 || t->type != TP_F32 || n_in % tp_dtype_block_elems(type)) {
            tp_gguf_w_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data);
            continue;
        }
        size_t rb = tp_dtype_row_bytes(type, n_in);
        uint8_t *q = malloc(rb * rows);
        for (size_t r = 0; r < rows; r++) tp_quantize_row(type, (const float *)t->data + r * n_in, q + r * rb, n_in);
        tp_gguf_w_tensor(w, t->name, type, 2, t->ne, q);
        free(q);
    }
    int rc = tp_gguf_writer_save(w, path, err);
    if (rc) fprintf(stderr, "  %s\n", err);
    tp_gguf_writer_free(w);
    tp_gguf_close(f);
    return rc;
}

static void add_random(gguf_writer *w, const char *name, uint32_t type, int n_in, int n_out, float scale) {
    size_t rb = tp_dtype_row_bytes(type, (size_t)n_in);
    uint8_t *q = malloc(rb * (size_t)n_out);
    float *row = malloc(sizeof(float) * (size_t)n_in);
    for (int r = 0; r < n_out; r++) {
        for (int i = 0; i < n_in; i++) row[i] = frand() * scale;
        tp_quantize_row(type, row, q + (size_t)r * rb, (size_t)n_in);
    }
    uint64_t ne[2] = { (uint64_t)n_in, (uint64_t)n_out };
    tp_gguf_w_tensor(w, name, type, 2, ne, q);
    free(q);
    free(row);
}

static int write_wide(const char *path, uint32_t type, uint32_t down_type) {
    enum { DIM = 256, LAYERS = 2, HEADS = 4, KVH = 2, FFN = 512, CTX = 512 };
    char err[TP_ERR_LEN] = "";
    gguf_file *f = tp_gguf_open(STORIES, err);
    if (!f) return -1;
    gguf_writer *w = tp_gguf_writer_new(32);
    tp_gguf_w_copy_kv(w, f, "tokenizer.");
    tp_gguf_w_str(w, "general.architecture", "llama");
    tp_gguf_w_u32(w, "llama.context_length", CTX);
    tp_gguf_w_u32(w, "llama.embedding_length", DIM);
    tp_gguf_w_u32(w, "llama.block_count", LAYERS);
    tp_gguf_w_u32(w, "llama.feed_forward_length", FFN);
    tp_gguf_w_u32(w, "llama.attention.head_count", HEADS);
    tp_gguf_w_u32(w, "llama.attention.head_count_kv", KVH);
    tp_gguf_w_u32(w, "llama.rope.dimension_count", DIM / HEADS);
    tp_gguf_w_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    const gguf_kv *toks = tp_gguf_find(f, "tokenizer.ggml.tokens");
    int V = toks ? (int)toks->value.v.arr.count : 512;
    float ones[FFN];
    for (int i = 0; i < FFN; i++) ones[i] = 1.0f;
    uint64_t ne1[1] = { DIM };
    add_random(w, "token_embd.weight", type, DIM, V, 1.0f);
    add_random(w, "output.weight", type, DIM, V, 0.15f);
    tp_gguf_w_tensor(w, "output_norm.weight", TP_F32, 1, ne1, ones);
    for (int l = 0; l < LAYERS; l++) {
        char nm[64];
#define NM(s) (snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, s), nm)
        tp_gguf_w_tensor(w, NM("attn_norm"), TP_F32, 1, ne1, ones);
        tp_gguf_w_tensor(w, NM("ffn_norm"), TP_F32, 1, ne1, ones);
        add_random(w, NM("attn_q"), type, DIM, DIM, 0.12f);
        add_random(w, NM("attn_k"), type, DIM, KVH * DIM / HEADS, 0.12f);
        add_random(w, NM("attn_v"), type, DIM, KVH * DIM / HEADS, 0.12f);
        add_random(w, NM("attn_output"), type, DIM, DIM, 0.06f);
        add_random(w, NM("ffn_gate"), type, DIM, FFN, 0.12f);
        add_random(w, NM("ffn_up"), type, DIM, FFN, 0.12f);
        add_random(w, NM("ffn_down"), down_type, FFN, DIM, 0.06f);
#undef NM
    }
    int rc = tp_gguf_writer_save(w, path, err);
    if (rc) fprintf(stderr, "  %s\n", err);
    tp_gguf_writer_free(w);
    tp_gguf_close(f);
    return rc;
}

/* A small model with a long context and wide KV rows (for the memory tests): 2 layers of 256
 * values, 4 heads of 64, KV heads 4 (1 KB f32 rows), a context of 8192, F16 weights. */
static int write_long(const char *path) {
    enum { DIM = 256, LAYERS = 2, HEADS = 4, FFN = 256, CTX = 8192 };
    char err[TP_ERR_LEN] = "";
    gguf_file *f = tp_gguf_open(STORIES, err);
    if (!f) return -1;
    gguf_writer *w = tp_gguf_writer_new(32);
    tp_gguf_w_copy_kv(w, f, "tokenizer.");
    tp_gguf_w_str(w, "general.architecture", "llama");
    tp_gguf_w_u32(w, "llama.context_length", CTX);
    tp_gguf_w_u32(w, "llama.embedding_length", DIM);
    tp_gguf_w_u32(w, "llama.block_count", LAYERS);
    tp_gguf_w_u32(w, "llama.feed_forward_length", FFN);
    tp_gguf_w_u32(w, "llama.attention.head_count", HEADS);
    tp_gguf_w_u32(w, "llama.attention.head_count_kv", HEADS);
    tp_gguf_w_u32(w, "llama.rope.dimension_count", DIM / HEADS);
    tp_gguf_w_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    const gguf_kv *toks = tp_gguf_find(f, "tokenizer.ggml.tokens");
    int V = toks ? (int)toks->value.v.arr.count : 512;
    float ones[DIM];
    for (int i = 0; i < DIM; i++) ones[i] = 1.0f;
    uint64_t ne1[1] = { DIM };
    add_random(w, "token_embd.weight", TP_F16, DIM, V, 1.0f);
    add_random(w, "output.weight", TP_F16, DIM, V, 0.15f);
    tp_gguf_w_tensor(w, "output_norm.weight", TP_F32, 1, ne1, ones);
    for (int l = 0; l < LAYERS; l++) {
        char nm[64];
#define NM(s) (snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, s), nm)
        tp_gguf_w_tensor(w, NM("attn_norm"), TP_F32, 1, ne1, ones);
        tp_gguf_w_tensor(w, NM("ffn_norm"), TP_F32, 1, ne1, ones);
        add_random(w, NM("attn_q"), TP_F16, DIM, DIM, 0.12f);
        add_random(w, NM("attn_k"), TP_F16, DIM, DIM, 0.12f);
        add_random(w, NM("attn_v"), TP_F16, DIM, DIM, 0.12f);
        add_random(w, NM("attn_output"), TP_F16, DIM, DIM, 0.06f);
        add_random(w, NM("ffn_gate"), TP_F16, DIM, FFN, 0.12f);
        add_random(w, NM("ffn_up"), TP_F16, DIM, FFN, 0.12f);
        add_random(w, NM("ffn_down"), TP_F16, FFN, DIM, 0.06f);
#undef NM
    }
    int rc = tp_gguf_writer_save(w, path, err);
    if (rc) fprintf(stderr, "  %s\n", err);
    tp_gguf_writer_free(w);
    tp_gguf_close(f);
    return rc;
}

static int argmax_of(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++) if (x[i] > x[b]) b = i;
    return b;
}

/* Prefill + greedy steps on the CPU and on the model's device side by side (each sequence with
 * its own cache and compute context, as a session has); returns the largest logit difference. */
static double parity_run(tp_model *m, tp_kv_type kt, int steps, int *same_ids) {
    char err[TP_ERR_LEN] = "";
    int V = m->hp.n_vocab, kv_dim = m->hp.n_kv_heads * m->hp.head_dim;
    tp_kv *kc = tp_kv_new(m->hp.n_layers, kv_dim, kt, 128, 0, err), *kg = tp_kv_new(m->hp.n_layers, kv_dim, kt, 128, 0, err);
    tp_compute *cc = tp_compute_new(m, 2, 0, 128, err), *cg = tp_compute_new(m, 2, 0, 128, err);
    tp_backend *bg = kg ? tp_backend_new(m->dev, m, kg, m->dev->layers, false, err) : NULL;
    float *a = malloc(sizeof(float) * (size_t)V * 5), *b = malloc(sizeof(float) * (size_t)V * 5);
    double worst = 1e9;
    *same_ids = 0;
    if (!kc || !cc || !cg || !bg) { fprintf(stderr, "  %s\n", err); goto out; }
    int32_t toks[5] = { 1, 403, 407, 261, 378 }, pos[5] = { 0, 1, 2, 3, 4 };
    tp_batch pa = { .n = 5, .tokens = toks, .pos = pos, .step = -1, .vis = TP_VIS_CAUSAL, .logits = a }, pb = pa;
    pb.logits = b;
    if (tp_forward(m, cc, kc, &pa, err) || tp_backend_forward(bg, m, cg, kg, &pb, err)) {
        fprintf(stderr, "  %s\n", err);
        goto out;
    }
    worst = 0;
    *same_ids = 1;
    for (int i = 0; i < 5 * V; i++) worst = fmax(worst, fabs(a[i] - b[i]));
    int ta = argmax_of(a + 4 * V, V), tg = argmax_of(b + 4 * V, V);
    for (int s = 0; s < steps; s++) {
        if (ta != tg) { *same_ids = 0; break; }
        int32_t p = 5 + s;
        tp_batch sa = { .n = 1, .tokens = &ta, .pos = &p, .step = s, .vis = TP_VIS_ISOLATED, .logits = a }, sb = sa;
        sb.tokens = &tg;
        sb.logits = b;
        if (tp_forward(m, cc, kc, &sa, err) || tp_backend_forward(bg, m, cg, kg, &sb, err)) {
            fprintf(stderr, "  %s\n", err);
            worst = 1e9;
            break;
        }
        for (int i = 0; i < V; i++) worst = fmax(worst, fabs(a[i] - b[i]));
        ta = argmax_of(a, V);
        tg = argmax_of(b, V);
    }
out:
    free(a);
    free(b);
    tp_backend_free(bg);
    tp_compute_free(cc);
    tp_compute_free(cg);
    tp_kv_free(kc);
    tp_kv_free(kg);
    return worst;
}

static void parity(const char *label, const char *path, bool split_half, int gpu_layers, bool quantized) {
    char err[TP_ERR_LEN] = "";
    tp_load_opts lo = { 0 };
    tp_model *m = tp_model_load(path, &lo, err);
    if (!m) { test_fail_at(__FILE__, __LINE__, "%s: %s", label, err); return; }
    if (split_half) m->hp.rope_split_half = true; /* the Hugging Face layout, on both backends */
    tp_device_opts o = { .device = test_gpu_device(), .gpu_layers = gpu_layers };
    if (tp_device_open(m, &o, &m->dev, err) || !m->dev) {
        test_fail_at(__FILE__, __LINE__, "%s: %s", label, err);
        tp_model_free(m);
        return;
    }
    CHECK_INT_EQ(m->dev->layers, gpu_layers < 0 ? m->hp.n_layers : gpu_layers);
    for (int k = 0; k < 2; k++) {
        tp_kv_type kt = k ? TP_KV_F16 : TP_KV_F32;
        int same;
        double d = parity_run(m, kt, 16, &same);
        double tol = kt == TP_KV_F32 && !quantized ? 1e-4 : 0.25;
        CHECK_MSG(same, "%s, %s cache: the greedy tokens differ", label, k ? "f16" : "f32");
        CHECK_MSG(d <= tol, "%s, %s cache: max |logit gpu - cpu| %.3g > %.3g", label, k ? "f16" : "f32", d, tol);
        fprintf(stderr, "  %-28s %s cache: max |logit diff| %.2g, same greedy tokens %d\n", label, k ? "f16" : "f32", d, same);
    }
    tp_device_free(m->dev);
    tp_model_free(m);
}

TEST(gpu_forward_every_weight_type_matches_cpu) {
    if (test_gpu_index() < 0) { fprintf(stderr, "  skipped: no Vulkan device\n"); return; }
    char *dir = test_tmpdir();
    REQUIRE(dir);
    char bf16[512], q4k[512], q6k[512];
    snprintf(bf16, sizeof bf16, "%s/stories260K-bf16.gguf", dir);
    snprintf(q4k, sizeof q4k, "%s/wide-q4_k.gguf", dir);
    snprintf(q6k, sizeof q6k, "%s/wide-q6_k.gguf", dir);
    REQUIRE(write_stories_as(bf16, TP_BF16) == 0);
    REQUIRE(write_wide(q4k, TP_Q4_K, TP_Q6_K) == 0); /* as Q4_K_M files mix them */
    REQUIRE(write_wide(q6k, TP_Q6_K, TP_Q6_K) == 0);
    parity("stories260K F32", STORIES, false, -1, false);
    parity("stories260K F16", SHARED_DIR "/models/generated/stories260K-f16.gguf", false, -1, false);
    parity("stories260K BF16", bf16, false, -1, false);
    parity("stories260K Q8_0", SHARED_DIR "/models/generated/stories260K-q8_0.gguf", false, -1, true);
    parity("stories260K Q4_0", SHARED_DIR "/models/generated/stories260K-q4_0.gguf", false, -1, true);
    parity("random 256-wide Q4_K+Q6_K", q4k, false, -1, true);
    parity("random 256-wide Q6_K", q6k, false, -1, true);
    parity("random Q4_K, HF rope", q4k, true, -1, true);
    parity("stories260K F32, 2 of 5", STORIES, false, 2, false);
    parity("stories260K Q4_0, 2 of 5", SHARED_DIR "/models/generated/stories260K-q4_0.gguf", false, 2, true);
    if (getenv("TEMPO_KEEP_TEST_FILES")) fprintf(stderr, "  kept %s\n", dir);
    else { remove(bf16); remove(q4k); remove(q6k); rmdir(dir); }
    free(dir);
}

/* ------------------------------------------------------------ TEMPO runs --
 * Whole generations on the GPU against the CPU: the same sets (ids identical, selection
 * probabilities within 1e-4: F32 weights and an f32 cache, see above) and the same pruning, in
 * isolated, visible and pruning modes; partial offload against full; MCTS (single-token feeds with
 * explicit masks and truncation of the device cache); a batched step of several sessions (each
 * GPU session runs its own forward); sessions of one GPU model on two threads. */
#include <pthread.h>

#include "tempo/session.h"

static tempo_model *open_on(const char *device, int gpu_layers, bool adapt, double max_gb, tempo_error *err) {
    tempo_model_params mp;
    tempo_model_params_init(&mp);
    mp.threads = 2;
    mp.device = device;
    mp.gpu_layers = gpu_layers;
    mp.gpu_adapt = adapt;
    if (max_gb > 0) mp.max_memory_gb = max_gb;
    return tempo_model_open(STORIES, &mp, err);
}

static void gen_init(tempo_gen_params *g, int steps, double threshold, int width) {
    tempo_gen_params_init(g);
    g->max_tokens = steps;
    g->selection_threshold = threshold;
    g->max_parallel_tokens = width;
}

static tempo_result *gen(tempo_model *m, const tempo_gen_params *g, tempo_error *err) {
    return tempo_generate(m, "Once upon a time", g, NULL, NULL, NULL, err);
}

/* Same steps, members (ids and order), probabilities within tol, the same pruning. */
static void same_sets(const char *label, const tempo_result *a, const tempo_result *b, double tol) {
    CHECK_MSG(a->n_steps == b->n_steps, "%s: %d vs %d steps", label, a->n_steps, b->n_steps);
    for (int k = 0; k < a->n_steps && k < b->n_steps; k++) {
        const tempo_step *x = &a->steps[k], *y = &b->steps[k];
        if (x->n_tokens != y->n_tokens) {
            test_fail_at(__FILE__, __LINE__, "%s: step %d: %d vs %d members", label, k, x->n_tokens, y->n_tokens);
            return;
        }
        for (int j = 0; j < x->n_tokens; j++) {
            const tempo_token *s = &x->tokens[j], *t = &y->tokens[j];
            if (s->token_id != t->token_id || fabs(s->probability - t->probability) > tol || s->pruned != t->pruned ||
                s->pruned_at_step != t->pruned_at_step) {
                test_fail_at(__FILE__, __LINE__, "%s: step %d member %d: id %d/%d p %.7f/%.7f pruned %d@%d / %d@%d", label,
                             k, j, s->token_id, t->token_id, s->probability, t->probability, s->pruned,
                             s->pruned_at_step, t->pruned, t->pruned_at_step);
                return;
            }
        }
    }
}

static int pruned_count(const tempo_result *r) {
    int n = 0;
    for (int k = 0; k < r->n_steps; k++)
        for (int j = 0; j < r->steps[k].n_tokens; j++) n += r->steps[k].tokens[j].pruned;
    return n;
}

TEST(tempo_gen_gpu_same_sets_as_cpu) {
    const char *dev = test_gpu_device();
    if (!dev) { fprintf(stderr, "  skipped: no Vulkan device\n"); return; }
    tempo_error err;
    tempo_model *cpu = open_on("cpu", -1, false, 0, &err), *gpu = open_on(dev, -1, false, 0, &err);
    REQUIRE(cpu && gpu);
    static const struct { const char *label; bool visible, pruning, relative, f16; } modes[] = {
        { "isolated", false, false, true, false },
        { "visible", true, false, true, false },
        { "isolated, pruning (relative)", false, true, true, false },
        { "visible, pruning (absolute)", true, true, false, false },
    };
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        tempo_gen_params g;
        gen_init(&g, 40, 0.05, 5);
        g.allow_intraset_token_visibility = modes[i].visible;
        g.use_retroactive_pruning = modes[i].pruning;
        g.no_relative_attention = !modes[i].relative;
        g.attention_threshold = 0.02;
        tempo_result *a = gen(cpu, &g, &err), *b = gen(gpu, &g, &err);
        REQUIRE(a && b);
        CHECK(a->parallel_steps >= 5);
        if (modes[i].pruning) CHECK(pruned_count(a) > 0);
        same_sets(modes[i].label, a, b, 1e-4);
        CHECK(!strcmp(a->generated_text, b->generated_text));
        CHECK(!strcmp(a->device, "cpu") && !strncmp(b->device, dev, strlen(dev)));
        CHECK_INT_EQ(b->gpu_layers, 5);
        fprintf(stderr, "  %-30s %d steps (%d parallel, %d pruned): the same sets\n", modes[i].label, a->n_steps,
                a->parallel_steps, pruned_count(a));
        tempo_result_free(a);
        tempo_result_free(b);
    }
    tempo_model_close(cpu);
    tempo_model_close(gpu);
}

/* --gpu-layers 2 (layers 2-4 and the head on the CPU, hidden states handed over) gives the full
 * offload's sets; with pruning, the attention summary is the sum of both halves' layers. */
TEST(tempo_gen_gpu_partial_offload_equals_full) {
    const char *dev = test_gpu_device();
    if (!dev) { fprintf(stderr, "  skipped: no Vulkan device\n"); return; }
    tempo_error err;
    tempo_model *full = open_on(dev, -1, false, 0, &err), *part = open_on(dev, 2, false, 0, &err);
    REQUIRE(full && part);
    tempo_model_info fi, pi;
    tempo_model_get_info(full, &fi);
    tempo_model_get_info(part, &pi);
    CHECK_INT_EQ(fi.gpu_layers, 5);
    CHECK_INT_EQ(pi.gpu_layers, 2);
    CHECK(pi.gpu_weight_bytes < fi.gpu_weight_bytes);
    tempo_gen_params g;
    gen_init(&g, 40, 0.05, 5);
    g.use_retroactive_pruning = true;
    tempo_result *a = gen(full, &g, &err), *b = gen(part, &g, &err);
    REQUIRE(a && b);
    CHECK(pruned_count(a) > 0);
    same_sets("2 of 5 layers", a, b, 1e-4);
    CHECK_INT_EQ(a->gpu_layers, 5);
    CHECK_INT_EQ(b->gpu_layers, 2);
    tempo_result_free(a);
    tempo_result_free(b);
    tempo_model_close(full);
    tempo_model_close(part);
}

/* --use-mcts on the GPU: rollouts feed single tokens with explicit masks and truncate the cache
 * back to a checkpoint; the device's rows follow the slot table, so the search commits the same
 * members with the same statistics as on the CPU. */
TEST(tempo_gen_gpu_mcts_same_as_cpu) {
    const char *dev = test_gpu_device();
    if (!dev) { fprintf(stderr, "  skipped: no Vulkan device\n"); return; }
    tempo_error err;
    tempo_model *cpu = open_on("cpu", -1, false, 0, &err), *gpu = open_on(dev, -1, false, 0, &err);
    REQUIRE(cpu && gpu);
    tempo_gen_params g;
    gen_init(&g, 8, 0.05, 4);
    g.use_mcts = true;
    g.mcts_simulations = 4;
    g.mcts_depth = 3;
    tempo_result *a = gen(cpu, &g, &err), *b = gen(gpu, &g, &err);
    REQUIRE(a && b);
    same_sets("mcts", a, b, 1e-4);
    int searched = 0;
    for (int k = 0; k < a->n_steps && k < b->n_steps; k++) {
        CHECK_INT_EQ(a->steps[k].n_mcts, b->steps[k].n_mcts);
        searched += a->steps[k].n_mcts > 1;
        for (int j = 0; j < a->steps[k].n_mcts && j < b->steps[k].n_mcts; j++) {
            CHECK_INT_EQ(a->steps[k].mcts[j].visits, b->steps[k].mcts[j].visits);
            CHECK_INT_EQ(a->steps[k].mcts[j].committed, b->steps[k].mcts[j].committed);
            CHECK_NEAR(a->steps[k].mcts[j].value, b->steps[k].mcts[j].value, 1e-3);
        }
    }
    CHECK(searched > 0);
    tempo_result_free(a);
    tempo_result_free(b);
    tempo_model_close(cpu);
    tempo_model_close(gpu);
}

/* tempo_session_step_batch with GPU sessions (each runs its own forward on the device) gives each
 * session what tempo_session_step gives it alone. */
TEST(tempo_gen_gpu_step_batch_same_as_alone) {
    const char *dev = test_gpu_device();
    if (!dev) { fprintf(stderr, "  skipped: no Vulkan device\n"); return; }
    tempo_error err;
    tempo_model *m = open_on(dev, -1, false, 0, &err);
    REQUIRE(m);
    enum { N = 3 };
    static const char *const prompts[N] = { "Once upon a time", "The cat", "Lily and Ben" };
    tempo_gen_params g;
    gen_init(&g, 12, 0.05, 4);
    tempo_session *ss[N], *alone[N];
    for (int i = 0; i < N; i++) {
        g.use_retroactive_pruning = i == 1;
        ss[i] = tempo_session_new(m, &g, &err);
        alone[i] = tempo_session_new(m, &g, &err);
        REQUIRE(ss[i] && alone[i]);
        REQUIRE(tempo_session_prefill(ss[i], prompts[i], &err) == 0);
        REQUIRE(tempo_session_prefill(alone[i], prompts[i], &err) == 0);
    }
    int rc[N], steps = 0;
    tempo_step_info out[N];
    for (;;) {
        tempo_session_step_batch(ss, N, rc, out, NULL);
        int live = 0;
        for (int i = 0; i < N; i++) {
            tempo_step_info one;
            int r1 = tempo_session_step(alone[i], &one, &err);
            CHECK_INT_EQ(rc[i], r1);
            live += rc[i] == 1;
        }
        if (!live) break;
        steps++;
    }
    CHECK_INT_EQ(steps, 12);
    for (int i = 0; i < N; i++) {
        tempo_result *a = tempo_session_result(ss[i], &err), *b = tempo_session_result(alone[i], &err);
        REQUIRE(a && b);
        same_sets(prompts[i], a, b, 0.0);
        CHECK_INT_EQ(a->gpu_layers, 5);
        tempo_result_free(a);
        tempo_result_free(b);
        tempo_session_free(ss[i]);
        tempo_session_free(alone[i]);
    }
    tempo_model_close(m);
}

/* Sessions of one GPU model on two threads at once (the device's queue, pipelines and memory
 * accounting are shared): each gets what it gets alone. */
typedef struct {
    tempo_model *m;
    tempo_gen_params g;
    tempo_result *r;
} thread_job;

static void *thread_run(void *arg) {
    thread_job *j = arg;
    tempo_error err;
    j->r = gen(j->m, &j->g, &err);
    return NULL;
}

TEST(tempo_gen_gpu_sessions_on_two_threads) {
    const char *dev = test_gpu_device();
    if (!dev) { fprintf(stderr, "  skipped: no Vulkan device\n"); return; }
    tempo_error err;
    tempo_model *m = open_on(dev, -1, false, 0, &err);
    REQUIRE(m);
    thread_job jobs[2];
    for (int i = 0; i < 2; i++) {
        jobs[i].m = m;
        gen_init(&jobs[i].g, 20, 0.05, 3 + i);
        jobs[i].g.use_retroactive_pruning = i == 1;
    }
    tempo_result *want[2] = { gen(m, &jobs[0].g, &err), gen(m, &jobs[1].g, &err) };
    pthread_t th[2];
    for (int i = 0; i < 2; i++) REQUIRE(pthread_create(&th[i], NULL, thread_run, &jobs[i]) == 0);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 2; i++) {
        REQUIRE(want[i] && jobs[i].r);
        same_sets(i ? "thread 1" : "thread 0", want[i], jobs[i].r, 0.0);
        tempo_result_free(want[i]);
        tempo_result_free(jobs[i].r);
    }
    tempo_memory_stats st;
    tempo_memory_get_stats(tempo_model_memory(m), &st);
    CHECK_INT_EQ(st.sessions, 0);
    tempo_model_close(m);
}

/* What runs only on the CPU: --kv-offload (the cache in files on the host) and a q8_0 cache are
 * refused with a GPU named, and "auto" settles on the CPU for them. */
TEST(gpu_refuses_what_only_the_cpu_does) {
    const char *dev = test_gpu_device();
    if (!dev) { fprintf(stderr, "  skipped: no Vulkan device\n"); return; }
    tempo_error err;
    tempo_model_params mp;
    tempo_model_params_init(&mp);
    mp.device = dev;
    mp.kv_offload = "/tmp";
    CHECK(tempo_model_open(STORIES, &mp, &err) == NULL);
    CHECK_INT_EQ(err.code, TEMPO_ERR_ARG);
    CHECK_MSG(strstr(err.message, "--kv-offload") && strstr(err.message, "--device cpu"), "%s", err.message);
    mp.kv_offload = NULL;
    mp.kv_cache_type = TEMPO_KV_Q8_0;
    CHECK(tempo_model_open(STORIES, &mp, &err) == NULL);
    CHECK_INT_EQ(err.code, TEMPO_ERR_ARG);
    CHECK_MSG(strstr(err.message, "q8_0") && strstr(err.message, "f16"), "%s", err.message);
    mp.device = "gpu:x";
    CHECK(tempo_model_open(STORIES, &mp, &err) == NULL);
    CHECK_MSG(err.code == TEMPO_ERR_ARG && strstr(err.message, "auto, cpu, gpu, gpu:N"), "%s", err.message);
    /* auto may take the software device here (TEMPO_VULKAN_ALLOW_CPU), but not for a q8_0 cache */
    const char *old = getenv("TEMPO_VULKAN_ALLOW_CPU");
    char *saved = old ? strdup(old) : NULL;
    setenv("TEMPO_VULKAN_ALLOW_CPU", "1", 1);
    mp.device = "auto";
    tempo_model *m = tempo_model_open(STORIES, &mp, &err);
    REQUIRE(m);
    tempo_model_info info;
    tempo_model_get_info(m, &info);
    CHECK(!strcmp(info.device, "cpu"));
    tempo_model_close(m);
    mp.kv_cache_type = TEMPO_KV_F32;
    m = tempo_model_open(STORIES, &mp, &err);
    REQUIRE(m);
    tempo_model_get_info(m, &info);
    CHECK_MSG(!strncmp(info.device, "gpu:", 4), "%s", info.device);
    tempo_model_close(m);
    /* gpu_layers 0: the CPU, whatever the device */
    mp.device = dev;
    mp.gpu_layers = 0;
    m = tempo_model_open(STORIES, &mp, &err);
    REQUIRE(m);
    tempo_model_get_info(m, &info);
    CHECK(!strcmp(info.device, "cpu") && info.gpu_layers == 0);
    tempo_model_close(m);
    if (saved) { setenv("TEMPO_VULKAN_ALLOW_CPU", saved, 1); free(saved); }
    else unsetenv("TEMPO_VULKAN_ALLOW_CPU");
}

/* ------------------------------------------------------- device memory --
 * Device bytes are the ledger's: the weights the model's, a session's KV rows (for its cache's
 * capacity), scratch and staging the session's share, added at prefill and given back when it
 * ends; the monitor's GPU fields report the device's real allocation and free memory, and so do
 * the debug log line and the JSON. What does not fit the device (TEMPO_VULKAN_MEMORY_MB plays a
 * small one) or --max-memory-gb gets a message naming the device and the sizes, or with
 * --memory-policy adapt fewer offloaded layers. */
#include <cjson/cJSON.h>

#include "memory/memory.h"

static size_t gpu_device_bytes(void) {
    char err[TP_ERR_LEN];
    tp_gpu *g = tp_gpu_open(test_gpu_index(), err);
    if (!g) return 0;
    tp_gpu_mem gm;
    tp_gpu_mem_get(g, &gm);
    tp_gpu_close(g);
    return gm.device_bytes;
}

TEST(gpu_memory_counted_and_reported) {
    const char *dev = test_gpu_device();
    if (!dev) { fprintf(stderr, "  skipped: no Vulkan device\n"); return; }
    tempo_error err;
    size_t dev0 = gpu_device_bytes();
    tempo_model *m = open_on(dev, -1, false, 0, &err);
    REQUIRE(m);
    tempo_memory_monitor *mon = tempo_model_memory(m);
    tempo_model_info info;
    tempo_model_get_info(m, &info);
    size_t wdev = info.gpu_weight_bytes;
    CHECK_MSG(wdev > 1000000 && wdev < 1300000, "%zu", wdev); /* stories260K's F32 weights and head, about 1.1 MB */
    CHECK_INT_EQ(gpu_device_bytes() - dev0, wdev);             /* what Vulkan allocated, counted exactly */
    tempo_memory_stats st;
    tempo_memory_get_stats(mon, &st);
    CHECK(st.has_gpu);
    CHECK(st.gpu_allocated_gb * TP_GB >= (double)wdev);
    CHECK(st.gpu_reserved_gb >= st.gpu_allocated_gb);
    CHECK(st.gpu_free_gb > 0);
    /* the weights are on the device; the host counts only what it still reads */
    CHECK(st.weights_gb * TP_GB < (double)info.weight_bytes);
    tp_mem_parts p0;
    tp_memory_parts(mon, &p0);
    CHECK_INT_EQ(p0.gpu_weights, wdev);
    size_t acc0 = tp_memory_accounted_bytes(mon);

    /* a session: its device KV rows and buffers are its share, given back at its end */
    tempo_gen_params g;
    gen_init(&g, 20, 0.05, 4);
    g.use_retroactive_pruning = true;
    tempo_session *s = tempo_session_new(m, &g, &err);
    REQUIRE(s);
    REQUIRE(tempo_session_prefill(s, "Once upon a time", &err) == 0);
    tempo_session_stats ss;
    tempo_session_get_stats(s, &ss);
    size_t dev_session = gpu_device_bytes() - dev0 - wdev; /* its KV rows and scratch, as allocated */
    size_t want = 2u * 5u * (size_t)ss.kv_capacity * 128u; /* K and V rows: 5 layers x 32 f32 values */
    CHECK_MSG(dev_session >= want, "session device bytes %zu < KV rows %zu", dev_session, want);
    tp_mem_parts p1;
    tp_memory_parts(mon, &p1);
    CHECK_MSG(p1.device >= dev_session && p1.device < dev_session + 1024 * 1024, "device share %zu for %zu on the device",
              p1.device, dev_session);
    CHECK(tp_memory_accounted_bytes(mon) >= acc0 + p1.device);
    CHECK(p1.kv < p1.device); /* every layer on the device: the host cache holds no rows */
    tempo_step_info si;
    while (tempo_session_step(s, &si, &err) == 1) {}
    tempo_result *r = tempo_session_result(s, &err);
    REQUIRE(r);
    CHECK(r->device && !strncmp(r->device, dev, strlen(dev)));
    CHECK_INT_EQ(r->gpu_layers, 5);
    CHECK(r->gpu_allocated_bytes >= wdev + dev_session);
    CHECK(r->gpu_reserved_bytes > r->gpu_allocated_bytes); /* plus the staging buffers */
    CHECK_INT_EQ(r->memory.gpu_weights_bytes, wdev);
    CHECK_INT_EQ(r->memory.gpu_sessions_bytes, p1.device);
    char *js = tempo_result_to_json(r, NULL);
    cJSON *d = js ? cJSON_Parse(js) : NULL;
    REQUIRE(d);
    cJSON *met = cJSON_GetObjectItem(d, "metrics"), *cfg = cJSON_GetObjectItem(d, "config");
    CHECK(!strncmp(cJSON_GetObjectItem(met, "device")->valuestring, dev, strlen(dev)));
    CHECK_INT_EQ(cJSON_GetObjectItem(met, "gpu_layers")->valueint, 5);
    CHECK(cJSON_GetObjectItem(met, "gpu_allocated_bytes")->valuedouble >= (double)(wdev + dev_session));
    CHECK(cJSON_GetObjectItem(met, "gpu_reserved_bytes") && cJSON_GetObjectItem(met, "gpu_free_bytes"));
    CHECK(!strcmp(cJSON_GetObjectItem(cfg, "device")->valuestring, dev));
    cJSON *tot = cJSON_GetObjectItem(cJSON_GetObjectItem(met, "memory"), "totals");
    CHECK(tot && cJSON_GetObjectItem(tot, "gpu_weights_bytes")->valuedouble == (double)wdev);
    cJSON_Delete(d);
    free(js);
    tempo_result_free(r);
    char line[512];
    tempo_memory_log_line(mon, "End", line, sizeof line);
    CHECK_MSG(strstr(line, " GPU ") && strstr(line, "allocated") && strstr(line, "reserved") && strstr(line, "free"),
              "%s", line);
    char *cfgj = tempo_memory_get_config(mon);
    cJSON *cj = cfgj ? cJSON_Parse(cfgj) : NULL;
    REQUIRE(cj);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(cj, "has_gpu")));
    CHECK(cJSON_GetObjectItem(cj, "gpu_allocated_gb") && cJSON_GetObjectItem(cj, "gpu_free_gb"));
    CHECK(cJSON_GetObjectItem(cj, "gpu_sessions_gb")->valuedouble > 0);
    cJSON_Delete(cj);
    free(cfgj);
    tempo_session_free(s);
    tp_mem_parts p2;
    tp_memory_parts(mon, &p2);
    CHECK_INT_EQ(p2.device, 0);
    CHECK_INT_EQ(p2.kv, p0.kv);
    CHECK_INT_EQ(tp_memory_accounted_bytes(mon), acc0);
    CHECK_INT_EQ(gpu_device_bytes() - dev0, wdev);
    tempo_model_close(m);
    CHECK_INT_EQ(gpu_device_bytes(), dev0);
}

/* TEMPO_VULKAN_MEMORY_MB for a device with `mb_over` MB free over what is allocated on it now. */
static void cap_device(double mb_over) {
    char cap[32];
    snprintf(cap, sizeof cap, "%.4f", (double)gpu_device_bytes() / (1024.0 * 1024.0) + mb_over);
    setenv("TEMPO_VULKAN_MEMORY_MB", cap, 1);
}

TEST(gpu_memory_does_not_fit_messages_and_adapt) {
    const char *dev = test_gpu_device();
    if (!dev) { fprintf(stderr, "  skipped: no Vulkan device\n"); return; }
    tempo_error err;
    tempo_gen_params g;
    gen_init(&g, 20, 0.05, 4);
    tempo_model *cpu = open_on("cpu", -1, false, 0, &err);
    REQUIRE(cpu);
    tempo_result *rc = gen(cpu, &g, &err);
    REQUIRE(rc);

    /* a device with 0.8 MB free: not stories260K's weights (0.97 MB with the head), but with adapt
     * a layer (181 KB) and room for a run of 512 slots (its KV rows, 128 KB a layer, and 0.35 MB
     * of step buffers) */
    cap_device(0.8);
    tempo_model *m = open_on(dev, -1, false, 0, &err);
    CHECK(m == NULL);
    CHECK_INT_EQ(err.code, TEMPO_ERR_MEMORY_LIMIT);
    CHECK_MSG(strstr(err.message, "Vulkan device") && strstr(err.message, "free") && strstr(err.message, "--gpu-layers") &&
              strstr(err.message, "--memory-policy adapt"), "%s", err.message);
    fprintf(stderr, "  stop:  %s\n", err.message);
    m = open_on(dev, -1, true, 0, &err);
    REQUIRE(m);
    tempo_model_info info;
    tempo_model_get_info(m, &info);
    CHECK_MSG(info.gpu_layers >= 1 && info.gpu_layers < 5, "adapt offloaded %d layers", info.gpu_layers);
    g.memory_policy = TEMPO_MEMORY_ADAPT;
    tempo_result *r = gen(m, &g, &err);
    REQUIRE(r);
    CHECK_INT_EQ(r->gpu_layers, info.gpu_layers);
    CHECK_MSG(!strcmp(r->generated_text, rc->generated_text), "%s\n%s", r->generated_text, rc->generated_text);
    fprintf(stderr, "  adapt: %d of 5 layers on the GPU, the CPU's text\n", info.gpu_layers);
    tempo_result_free(r);
    tempo_model_close(m);

    /* the weights fit, a run's KV rows (1955 slots x 5 layers, 2.5 MB) do not */
    unsetenv("TEMPO_VULKAN_MEMORY_MB");
    m = open_on(dev, -1, false, 0, &err);
    REQUIRE(m);
    cap_device(1.6);
    tempo_gen_params wide;
    gen_init(&wide, 40, 0.9, 50);
    r = gen(m, &wide, &err);
    CHECK(r == NULL);
    CHECK_INT_EQ(err.code, TEMPO_ERR_MEMORY_LIMIT);
    CHECK_MSG(strstr(err.message, "Cache memory limit would be exceeded") && strstr(err.message, "Vulkan device") &&
              strstr(err.message, "free") && strstr(err.message, "--memory-policy adapt"), "%s", err.message);
    fprintf(stderr, "  stop:  %s\n", err.message);
    wide.memory_policy = TEMPO_MEMORY_ADAPT; /* fewer layers for this session; the others run on the CPU */
    r = gen(m, &wide, &err);
    REQUIRE(r);
    CHECK_MSG(r->gpu_layers >= 1 && r->gpu_layers < 5, "%d layers", r->gpu_layers);
    CHECK_INT_EQ(r->n_steps, 40);
    fprintf(stderr, "  adapt: this session keeps %d of 5 layers on the GPU\n", r->gpu_layers);
    tempo_result_free(r);
    /* the automatic width stays within the device's free memory */
    tempo_gen_params au;
    gen_init(&au, 20, 0.0, 0);
    au.min_steps = 20;
    r = gen(m, &au, &err);
    tempo_result *rcpu = gen(cpu, &au, &err);
    REQUIRE(r && rcpu);
    CHECK_INT_EQ(r->gpu_layers, 5);
    CHECK_MSG(r->max_parallel_tokens < rcpu->max_parallel_tokens, "auto width %d on the GPU, %d on the CPU",
              r->max_parallel_tokens, rcpu->max_parallel_tokens);
    fprintf(stderr, "  auto width: %d on a device with 1.6 MB free, %d on the CPU\n", r->max_parallel_tokens,
            rcpu->max_parallel_tokens);
    tempo_result_free(r);
    tempo_result_free(rcpu);
    tempo_model_close(m);
    unsetenv("TEMPO_VULKAN_MEMORY_MB");

    /* --max-memory-gb: room for the weights and the session's buffers, not for the GPU KV rows of
     * its whole capacity (reserved at prefill). A model with a long context and wide KV rows (4 KB
     * a slot over its 2 layers: a wide run's 4755 slots take 19 MB on the device). The limit is
     * played by the monitor's "other" bytes (what the process holds besides the model and the
     * sessions), set so that exactly the room wanted is left under the critical level: measured
     * resident sets move too much in a sanitized process to aim at a few MB. */
    char *dir = test_tmpdir();
    REQUIRE(dir);
    char longctx[512];
    snprintf(longctx, sizeof longctx, "%s/long.gguf", dir);
    REQUIRE(write_long(longctx) == 0);
    tempo_model_params mp;
    tempo_model_params_init(&mp);
    mp.threads = 2;
    mp.device = dev;
    mp.max_memory_gb = 8.0;
    m = tempo_model_open(longctx, &mp, &err);
    REQUIRE(m);
    tempo_memory_monitor *mon = tempo_model_memory(m);
    gen_init(&wide, 20, 0.9, 250);
    tempo_session *s = tempo_session_new(m, &wide, &err);
    REQUIRE(s && tempo_session_prefill(s, "Once upon a time", &err) == 0);
    tempo_session_stats ss;
    tempo_session_get_stats(s, &ss);
    tp_mem_parts pp;
    tp_memory_parts(mon, &pp);
    size_t host_share = ss.reserved_bytes - pp.device, dev_share = pp.device;
    CHECK_MSG(dev_share > 15u << 20, "%zu device bytes for %d slots", dev_share, ss.kv_capacity);
    tempo_session_free(s);
    /* leave room for the session's host part and 65% of its device part: one of the 2 layers */
    size_t crit = (size_t)(0.95 * (double)tp_memory_limit_bytes(mon)), acc = tp_memory_accounted_bytes(mon);
    size_t room = host_share + (size_t)(0.65 * (double)dev_share);
    tp_memory_parts(mon, &pp);
    REQUIRE(crit > acc + room);
    tp_memory_set_other(mon, pp.other + (crit - acc - room));
    CHECK(tp_memory_usage_bytes(mon) == tp_memory_accounted_bytes(mon)); /* the ledger, not the resident set, decides */
    r = gen(m, &wide, &err);
    CHECK(r == NULL);
    CHECK_INT_EQ(err.code, TEMPO_ERR_MEMORY_LIMIT);
    CHECK_MSG(strstr(err.message, "Cache memory limit would be exceeded") && strstr(err.message, "--max-memory-gb") &&
              strstr(err.message, "GPU KV cache of 4755 slots x 2 layers"), "%s", err.message);
    fprintf(stderr, "  limit: %s\n", err.message);
    wide.memory_policy = TEMPO_MEMORY_ADAPT;
    r = gen(m, &wide, &err);
    REQUIRE(r);
    CHECK_MSG(r->gpu_layers == 1, "%d layers under the limit", r->gpu_layers);
    CHECK_INT_EQ(r->n_steps, 20);
    fprintf(stderr, "  adapt: %d of 2 layers on the GPU under the limit\n", r->gpu_layers);
    tempo_result_free(r);
    tempo_model_close(m);
    remove(longctx);
    rmdir(dir);
    free(dir);
    tempo_result_free(rc);
    tempo_model_close(cpu);
}

/* ------------------------------------------------------------------ CLI -- */
TEST(gpu_cli_devices_flags_log_and_json) {
    int st;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s devices", test_tempo_bin());
    char *out = test_run_capture(cmd, &st);
    REQUIRE(out);
    CHECK_INT_EQ(st, 0);
    /* auto: a hardware GPU when there is one, else the CPU; never lavapipe by itself */
    tp_gpu_device_info all[16];
    char e0[TP_ERR_LEN];
    int n_all = tp_gpu_devices(all, 16, e0);
    bool hardware = false;
    for (int i = 0; i < n_all && i < 16; i++) hardware |= !all[i].software;
    CHECK_MSG(strstr(out, "cpu") && strstr(out, hardware ? "--device auto uses: gpu:" : "--device auto uses: cpu"), "%s",
              out);
    const char *dev = test_gpu_device();
    if (dev) CHECK_MSG(strstr(out, dev) != NULL, "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "%s --model %s --device tpu 2>&1", test_tempo_bin(), STORIES);
    out = test_run_capture(cmd, &st);
    CHECK_INT_EQ(st, 2);
    CHECK_MSG(out && strstr(out, "--device: 'tpu' is not one of auto, cpu, gpu, gpu:N"), "%s", out);
    free(out);
    if (!dev) { fprintf(stderr, "  skipped the GPU runs: no Vulkan device\n"); return; }
    /* gpu: the best hardware GPU, never the software one */
    tp_gpu_device_info di[16];
    char e[TP_ERR_LEN];
    tp_gpu_devices(di, 16, e);
    if (di[test_gpu_index()].software) {
        snprintf(cmd, sizeof cmd, "env -u TEMPO_VULKAN_ALLOW_CPU %s --model %s --device gpu --max-tokens 2 2>&1",
                 test_tempo_bin(), STORIES);
        out = test_run_capture(cmd, &st);
        CHECK_INT_EQ(st, 2);
        CHECK_MSG(out && strstr(out, "no hardware GPU") && strstr(out, "--device gpu:"), "%s", out);
        free(out);
    }
    /* the memory lines of --debug-mode carry the GPU's numbers */
    snprintf(cmd, sizeof cmd,
             "%s --model %s --device %s --gpu-layers 3 --max-tokens 4 --debug-mode --no-color 2>&1 >/dev/null",
             test_tempo_bin(), STORIES, dev);
    out = test_run_capture(cmd, &st);
    CHECK_INT_EQ(st, 0);
    CHECK_MSG(out && strstr(out, "After prefill: Memory:") && strstr(out, " GPU ") && strstr(out, "allocated") &&
              strstr(out, "memory on the GPU"), "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "%s --model %s --device %s --max-tokens 4 --output-json 2>/dev/null", test_tempo_bin(),
             STORIES, dev);
    out = test_run_capture(cmd, &st);
    CHECK_INT_EQ(st, 0);
    cJSON *d = out ? cJSON_Parse(out) : NULL;
    REQUIRE(d);
    cJSON *met = cJSON_GetObjectItem(d, "metrics"), *cfg = cJSON_GetObjectItem(d, "config");
    CHECK(!strncmp(cJSON_GetObjectItem(met, "device")->valuestring, dev, strlen(dev)));
    CHECK_INT_EQ(cJSON_GetObjectItem(met, "gpu_layers")->valueint, 5);
    CHECK(cJSON_GetObjectItem(met, "gpu_reserved_bytes")->valuedouble > 1e6);
    CHECK(!strcmp(cJSON_GetObjectItem(cfg, "device")->valuestring, dev));
    cJSON_Delete(d);
    free(out);
}

/* A run on the CPU loads no Vulkan driver (a driver brings tens of MB into a process whose limit
 * may be a few): --device cpu never, and auto not on a machine without GPU device nodes. The
 * dynamic loader says what it loads (LD_DEBUG=files). */
static bool has_gpu_nodes(void) {
    int st;
    char *out = test_run_capture("ls /dev/dri/ 2>/dev/null | grep -c renderD; ls /dev 2>/dev/null | grep -c '^nvidia[0-9]'", &st);
    int a = 0, b = 0;
    bool any = out && sscanf(out, "%d %d", &a, &b) >= 1 && (a > 0 || b > 0);
    free(out);
    return any;
}

TEST(gpu_cpu_runs_load_no_vulkan_driver) {
    char cmd[1024];
    int st;
    const char *devs[2] = { "cpu", "auto" };
    for (int i = 0; i < 2; i++) {
        if (i == 1 && has_gpu_nodes()) { fprintf(stderr, "  auto: this machine has GPU device nodes\n"); continue; }
        snprintf(cmd, sizeof cmd,
                 "env -u TEMPO_VULKAN_ALLOW_CPU LD_DEBUG=files %s --model %s --device %s --max-tokens 2 2>&1 >/dev/null | "
                 "grep -c 'file=libvulkan'", test_tempo_bin(), STORIES, devs[i]);
        char *out = test_run_capture(cmd, &st);
        CHECK_MSG(out && atoi(out) == 0, "--device %s loaded libvulkan (%s)", devs[i], out ? out : "?");
        free(out);
    }
    if (!test_gpu_device()) return;
    /* and a GPU run does load it (the check can see it) */
    snprintf(cmd, sizeof cmd, "LD_DEBUG=files %s --model %s --device %s --max-tokens 2 2>&1 >/dev/null | grep -c 'file=libvulkan'",
             test_tempo_bin(), STORIES, test_gpu_device());
    char *out = test_run_capture(cmd, &st);
    CHECK_MSG(out && atoi(out) > 0, "a GPU run shows no libvulkan (%s)", out ? out : "?");
    free(out);
}
