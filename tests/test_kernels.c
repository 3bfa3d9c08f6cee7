/* test_kernels.c: thread pool, batched matmul (every type, every SIMD level,
 * several thread counts) against a double-precision reference built from
 * tp_dequantize_row, the activation quantizers, and the vector ops. */
#include "test.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/common.h"
#include "format/gguf.h"
#include "kernels/matmul.h"
#include "kernels/matmul_internal.h"
#include "kernels/ops.h"
#include "kernels/threadpool.h"
#include "tensor/dtype.h"

static uint64_t g_rng = 0x9E3779B97F4A7C15ULL;
static uint32_t rnd_u32(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 16);
}
static float rnd_f(void) { return (float)((rnd_u32() & 0xFFFFFF) / 8388608.0 - 1.0); } /* [-1, 1) */
/* roughly normal, with an occasional outlier like real activations */
static float rnd_act(void) {
    float v = (rnd_f() + rnd_f() + rnd_f()) * 0.7f;
    if ((rnd_u32() & 63) == 0) v *= 8.0f;
    return v;
}

static void sleep_ms(int ms) {
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* ------------------------------------------------------------------------ */
/* thread pool                                                               */

typedef struct {
    atomic_int count[8];
    atomic_int bad_nth;
    int want_nth;
    int data[3000];
} pool_probe;

static void probe_fn(void *ctx, int ith, int nth) {
    pool_probe *p = ctx;
    if (nth != p->want_nth || ith < 0 || ith >= nth) atomic_fetch_add(&p->bad_nth, 1);
    else atomic_fetch_add(&p->count[ith], 1);
    /* plain writes of disjoint slices: visible to the caller after the run */
    for (int i = ith; i < 3000; i += nth) p->data[i] += i;
}

TEST(kernels_pool_runs_every_thread_once) {
    static pool_probe P;
    for (int nt = 1; nt <= 3; nt++) {
        tp_pool *pool = tp_pool_create(nt);
        REQUIRE(pool != NULL);
        CHECK_INT_EQ(tp_pool_threads(pool), nt);
        memset(&P, 0, sizeof P);
        P.want_nth = nt;
        int runs = 400;
        for (int k = 0; k < runs; k++) {
            tp_pool_run(pool, probe_fn, &P);
            if (k == 100 || k == 300) sleep_ms(3); /* let the workers fall asleep */
        }
        CHECK_INT_EQ(atomic_load(&P.bad_nth), 0);
        for (int i = 0; i < nt; i++) CHECK_INT_EQ(atomic_load(&P.count[i]), runs);
        int ok = 1;
        for (int i = 0; i < 3000; i++) ok &= P.data[i] == i * runs;
        CHECK(ok);
        tp_pool_free(pool);
    }
}

TEST(kernels_pool_null_and_default) {
    static pool_probe P;
    memset(&P, 0, sizeof P);
    P.want_nth = 1;
    tp_pool_run(NULL, probe_fn, &P);
    CHECK_INT_EQ(atomic_load(&P.count[0]), 1);
    CHECK_INT_EQ(tp_pool_threads(NULL), 1);
    tp_pool *pool = tp_pool_create(0);
    REQUIRE(pool != NULL);
    CHECK_INT_EQ(tp_pool_threads(pool), (int)sysconf(_SC_NPROCESSORS_ONLN));
    tp_pool_free(pool);
    tp_pool_free(NULL);
}

/* ------------------------------------------------------------------------ */
/* activation quantization, re-implemented independently for the reference  */

static float f16r(float v) { return tp_f16_to_f32(tp_f32_to_f16(v)); }

/* x -> dequantized Q8_0 values (ggml x86: d = amax/127 in fp16,
 * q = nearest-even(x * 127/amax)); s[k] = fp16(d * sum q) (Q8_1's s). */
static void ref_quant_q8(const float *x, int n, double *xd, double *s, double *sumdq) {
    for (int k = 0; k < n / 32; k++) {
        float amax = 0;
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(x[32 * k + i]));
        float d = amax / 127.0f, id = amax != 0 ? 127.0f / amax : 0.0f;
        float dq = f16r(d);
        int sum = 0;
        for (int i = 0; i < 32; i++) {
            int q = (int)rintf(x[32 * k + i] * id);
            sum += q;
            xd[32 * k + i] = (double)q * dq;
        }
        s[k] = f16r(d * (float)sum);
        sumdq[k] = (double)sum * dq;
    }
}

/* Q8_K: iscale = -127/max (max: first value of largest magnitude), d = 1/iscale */
static void ref_quant_q8k(const float *x, int n, double *xd) {
    for (int k = 0; k < n / 256; k++) {
        const float *v = x + 256 * k;
        float amax = 0, max = 0;
        for (int i = 0; i < 256; i++)
            if (fabsf(v[i]) > amax) { amax = fabsf(v[i]); max = v[i]; }
        if (amax == 0) {
            for (int i = 0; i < 256; i++) xd[256 * k + i] = 0;
            continue;
        }
        float is = -127.0f / max, d = 1.0f / is;
        for (int i = 0; i < 256; i++) {
            int q = (int)rintf(is * v[i]);
            if (q > 127) q = 127;
            xd[256 * k + i] = (double)q * d;
        }
    }
}

/* ------------------------------------------------------------------------ */
/* weights                                                                   */

static uint16_t f16_bits(float v) { return tp_f32_to_f16(v); }
static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

/* Random rows of any supported type. Types with a reference quantizer get
 * quantized random floats; the others random bytes with sane scales. */
static uint8_t *make_weights(uint32_t type, int n_in, int n_out, size_t *row_bytes) {
    size_t rb = tp_dtype_row_bytes(type, (size_t)n_in);
    uint8_t *w = malloc(rb * (size_t)n_out);
    float *tmp = malloc(sizeof(float) * (size_t)n_in);
    size_t bb = tp_dtype_block_bytes(type);
    for (int r = 0; r < n_out; r++) {
        uint8_t *row = w + (size_t)r * rb;
        switch (type) {
        case TP_F32: case TP_F16: case TP_BF16: case TP_Q4_0: case TP_Q4_1: case TP_Q5_0: case TP_Q5_1:
        case TP_Q8_0:
            for (int i = 0; i < n_in; i++) tmp[i] = rnd_f() * 0.1f + (type == TP_Q4_1 ? 0.03f : 0.0f);
            tp_quantize_row(type, tmp, row, (size_t)n_in);
            break;
        default:
            for (size_t i = 0; i < rb; i++) row[i] = (uint8_t)rnd_u32();
            for (size_t k = 0; k < rb / bb; k++) {
                uint8_t *b = row + k * bb;
                float d = 0.002f + 0.004f * (rnd_f() + 1), dmin = 0.001f + 0.002f * (rnd_f() + 1);
                switch (type) {
                case TP_Q4_K: case TP_Q5_K: put16(b, f16_bits(d)); put16(b + 2, f16_bits(dmin)); break;
                case TP_Q6_K: put16(b + 208, f16_bits(d)); break;
                case TP_Q2_K: put16(b + 80, f16_bits(d)); put16(b + 82, f16_bits(dmin)); break;
                case TP_Q3_K: put16(b + 108, f16_bits(d)); break;
                }
            }
        }
    }
    free(tmp);
    *row_bytes = rb;
    return w;
}

/* Replace the first rows by ggml's own quantization of real vectors, when
 * the test file is there (K-quants: realistic scales and mins). */
static int splice_ggml_rows(uint32_t type, uint8_t *w, int n_in, int n_out) {
    char name[64], err[TP_ERR_LEN];
    snprintf(name, sizeof name, "vec.%s", tp_dtype_name(type));
    gguf_file *f = tp_gguf_open(SHARED_DIR "/models/generated/ggml-quant-vectors.gguf", err);
    if (!f) return 0;
    const gguf_tensor *t = tp_gguf_find_tensor(f, name);
    int rows = 0;
    if (t && t->type == type && (int)t->ne[0] == n_in) {
        rows = (int)t->ne[1] < n_out ? (int)t->ne[1] : n_out;
        memcpy(w, t->data, tp_dtype_row_bytes(type, (size_t)n_in) * (size_t)rows);
    }
    tp_gguf_close(f);
    return rows;
}

/* ------------------------------------------------------------------------ */
/* matmul against the reference                                              */

static const int k_nbs[] = { 1, 3, 8, 64, 70 };
static const char *const k_levels[] = { "scalar", "avx2", "avx512" };

static void check_type(uint32_t type, int n_in, int n_out) {
    size_t rb;
    uint8_t *w = make_weights(type, n_in, n_out, &rb);
    if (n_in == 512) splice_ggml_rows(type, w, n_in, n_out);
    tp_weight W = { .data = w, .type = type, .n_in = n_in, .n_out = n_out };
    int kind = tp_mm_act_kind(type);
    const int max_nb = 70;

    double *wd = malloc(sizeof(double) * (size_t)n_in * n_out);
    float *row = malloc(sizeof(float) * (size_t)n_in);
    for (int r = 0; r < n_out; r++) {
        tp_dequantize_row(type, w + (size_t)r * rb, row, (size_t)n_in);
        for (int i = 0; i < n_in; i++) wd[(size_t)r * n_in + i] = row[i];
    }
    /* Q4_1/Q5_1: the block's min, for ggml's s term */
    double *wmin = calloc((size_t)n_out * (n_in / 32 + 1), sizeof(double));
    if (type == TP_Q4_1 || type == TP_Q5_1)
        for (int r = 0; r < n_out; r++)
            for (int k = 0; k < n_in / 32; k++) {
                uint16_t m;
                memcpy(&m, w + (size_t)r * rb + (size_t)k * tp_dtype_block_bytes(type) + 2, 2);
                wmin[(size_t)r * (n_in / 32) + k] = tp_f16_to_f32(m);
            }

    float *x = malloc(sizeof(float) * (size_t)n_in * max_nb);
    double *xd = malloc(sizeof(double) * (size_t)n_in * max_nb);
    double *s = malloc(sizeof(double) * (size_t)(n_in / 32 + 1) * max_nb);
    double *sumdq = malloc(sizeof(double) * (size_t)(n_in / 32 + 1) * max_nb);
    double *ref = malloc(sizeof(double) * (size_t)n_out * max_nb);
    double *mag = malloc(sizeof(double) * (size_t)n_out * max_nb);
    size_t ny = (size_t)n_out * max_nb;
    float *y = malloc(sizeof(float) * ny), *y0 = malloc(sizeof(float) * ny), *ys = malloc(sizeof(float) * ny);

    tp_pool *pools[3] = { tp_pool_create(1), tp_pool_create(2), tp_pool_create(3) };
    tp_matmul_ctx *ctx[3];
    for (int p = 0; p < 3; p++) ctx[p] = tp_matmul_ctx_new(pools[p], n_in);

    for (size_t ci = 0; ci < sizeof k_nbs / sizeof k_nbs[0]; ci++) {
        int nb = k_nbs[ci], G = n_in / 32;
        for (int i = 0; i < n_in * nb; i++) x[i] = rnd_act();
        if (nb == 3) { /* edge cases: an all-zero group, a lone spike, a tie in magnitude */
            for (int i = 0; i < 32; i++) x[i] = 0.0f;
            for (int i = 32; i < 64; i++) x[i] = 0.0f;
            x[40] = -3.0f;
            x[n_in + 5] = 2.5f;
            x[n_in + 6] = -2.5f;
        }
        for (int b = 0; b < nb; b++) {
            const float *xb = x + (size_t)b * n_in;
            double *xdb = xd + (size_t)b * n_in;
            if (kind == TP_ACT_Q8) ref_quant_q8(xb, n_in, xdb, s + (size_t)b * G, sumdq + (size_t)b * G);
            else if (kind == TP_ACT_Q8K) ref_quant_q8k(xb, n_in, xdb);
            else for (int i = 0; i < n_in; i++) xdb[i] = xb[i];
            for (int r = 0; r < n_out; r++) {
                double acc = 0, m = 0;
                const double *wr = wd + (size_t)r * n_in;
                for (int i = 0; i < n_in; i++) {
                    acc += wr[i] * xdb[i];
                    m += fabs(wr[i] * xdb[i]);
                }
                if (type == TP_Q4_1 || type == TP_Q5_1)
                    for (int k = 0; k < G; k++) {
                        double mw = wmin[(size_t)r * G + k];
                        acc += mw * (s[(size_t)b * G + k] - sumdq[(size_t)b * G + k]);
                        m += fabs(mw * s[(size_t)b * G + k]);
                    }
                ref[(size_t)b * n_out + r] = acc;
                mag[(size_t)b * n_out + r] = m;
            }
        }
        int have_scalar = 0;
        for (int l = 0; l < 3; l++) {
            if (tp_matmul_set_simd(k_levels[l]) != 0) continue;
            for (int p = 0; p < 3; p++) {
                memset(y, 0xFF, sizeof(float) * ny); /* NaN: every output must be written */
                tp_matmul(ctx[p], y, x, nb, &W);
                if (p == 0) memcpy(y0, y, sizeof(float) * (size_t)n_out * nb);
                int bad = 0, diff_threads = 0, diff_scalar = 0;
                for (int i = 0; i < n_out * nb; i++) {
                    double tol = 4e-6 * mag[i] + 1e-6;
                    if (!(fabs(y[i] - ref[i]) <= tol)) {
                        if (bad++ < 3)
                            test_fail_at(__FILE__, __LINE__, "%s %s threads %d nb %d [b %d r %d]: %.7g vs ref %.7g (tol %.3g)",
                                         tp_dtype_name(type), k_levels[l], p + 1, nb, i / n_out, i % n_out, y[i], ref[i], tol);
                    }
                    if (memcmp(&y[i], &y0[i], sizeof(float)) != 0) diff_threads++;
                    if (have_scalar && !(fabs(y[i] - ys[i]) <= 4e-6 * mag[i] + 1e-6)) diff_scalar++;
                }
                CHECK_MSG(diff_threads == 0, "%s %s: %d outputs differ between 1 and %d threads (nb %d)",
                          tp_dtype_name(type), k_levels[l], diff_threads, p + 1, nb);
                CHECK_MSG(diff_scalar == 0, "%s %s: %d outputs differ from scalar (nb %d)", tp_dtype_name(type),
                          k_levels[l], diff_scalar, nb);
                if (have_scalar && tp_mm_is_legacy(type))
                    CHECK_MSG(memcmp(y, ys, sizeof(float) * (size_t)n_out * nb) == 0,
                              "%s %s: not bit-identical to scalar (ggml's order) at nb %d", tp_dtype_name(type),
                              k_levels[l], nb);
            }
            if (l == 0) { memcpy(ys, y0, sizeof(float) * (size_t)n_out * nb); have_scalar = 1; }
        }
        tp_matmul_set_simd(NULL);
    }
    for (int p = 0; p < 3; p++) {
        tp_matmul_ctx_free(ctx[p]);
        tp_pool_free(pools[p]);
    }
    free(w); free(wd); free(wmin); free(row); free(x); free(xd); free(s); free(sumdq);
    free(ref); free(mag); free(y); free(y0); free(ys);
}

/* 77 rows: several row chunks per thread and an odd last chunk. Rows of
 * 672 values (21 blocks: one whole AVX-512 chunk of 16 groups and a partial
 * one, not a multiple of 256) for the 32-value types, 133 (a SIMD tail) for
 * the float types; the K-quants get 512 (ggml's own rows spliced in) and 768
 * (a whole and a half chunk). */
TEST(kernels_matmul_f32) { check_type(TP_F32, 133, 77); }
TEST(kernels_matmul_f16) { check_type(TP_F16, 133, 77); }
TEST(kernels_matmul_bf16) { check_type(TP_BF16, 133, 77); }
TEST(kernels_matmul_q8_0) { check_type(TP_Q8_0, 672, 77); }
TEST(kernels_matmul_q4_0) { check_type(TP_Q4_0, 672, 77); }
TEST(kernels_matmul_q4_1) { check_type(TP_Q4_1, 672, 77); }
TEST(kernels_matmul_q5_0) { check_type(TP_Q5_0, 672, 77); }
TEST(kernels_matmul_q5_1) { check_type(TP_Q5_1, 672, 77); }
TEST(kernels_matmul_q4_K) { check_type(TP_Q4_K, 512, 77); check_type(TP_Q4_K, 768, 21); }
TEST(kernels_matmul_q5_K) { check_type(TP_Q5_K, 512, 77); check_type(TP_Q5_K, 768, 21); }
TEST(kernels_matmul_q6_K) { check_type(TP_Q6_K, 512, 77); check_type(TP_Q6_K, 768, 21); }
TEST(kernels_matmul_q2_K_q3_K_fallback) {
    check_type(TP_Q2_K, 512, 13);
    check_type(TP_Q3_K, 256, 13);
}
/* 64-value rows: one Q8_0 pair per row, the smallest SIMD case */
TEST(kernels_matmul_short_rows) {
    check_type(TP_Q8_0, 32, 5);
    check_type(TP_Q4_0, 64, 3);
    check_type(TP_Q5_1, 160, 4);
    check_type(TP_F16, 5, 6);
}

TEST(kernels_matmul_rejects_bad_shape) {
    float x[64] = { 0 }, y[4] = { 0 };
    uint8_t w[4 * 18] = { 0 };
    tp_matmul_ctx *c = tp_matmul_ctx_new(NULL, 32);
    REQUIRE(c != NULL);
    tp_weight W = { .data = w, .type = TP_Q4_0, .n_in = 48, .n_out = 2 }; /* not whole blocks */
    tp_matmul(c, y, x, 1, &W);
    CHECK(isnan(y[0]) && isnan(y[1]));
    tp_weight W2 = { .data = w, .type = TP_Q4_0, .n_in = 1024, .n_out = 1 }; /* longer than max_n_in (32, rounded up to 512) */
    CHECK(tp_matmul_ctx_bytes(c) > 0);
    tp_matmul(c, y, x, 1, &W2);
    CHECK(isnan(y[0]));
    tp_matmul_ctx_free(c);
}

TEST(kernels_simd_level_names) {
    const char *lv = tp_simd_level();
    CHECK(strcmp(lv, "scalar") == 0 || strcmp(lv, "avx2") == 0 || strcmp(lv, "avx512") == 0);
    CHECK_INT_EQ(tp_matmul_set_simd("scalar"), 0);
    CHECK(strcmp(tp_simd_level(), "scalar") == 0);
    CHECK_INT_EQ(tp_matmul_set_simd("no-such-level"), -1);
    CHECK(strcmp(tp_simd_level(), "scalar") == 0);
    CHECK_INT_EQ(tp_matmul_set_simd(NULL), 0);
    CHECK(strcmp(tp_simd_level(), lv) == 0 || getenv("TEMPO_SIMD") != NULL);
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) CHECK_INT_EQ(tp_matmul_set_simd("avx2"), 0);
    tp_matmul_set_simd(NULL);
#endif
}

TEST(kernels_weight_row_is_dequantized_row) {
    size_t rb;
    uint8_t *w = make_weights(TP_Q4_K, 256, 3, &rb);
    tp_weight W = { .data = w, .type = TP_Q4_K, .n_in = 256, .n_out = 3 };
    float a[256], b[256];
    tp_weight_row(&W, 2, a);
    tp_dequantize_row(TP_Q4_K, w + 2 * rb, b, 256);
    CHECK(memcmp(a, b, sizeof a) == 0);
    free(w);
}

/* The SIMD activation quantizers must write the very bytes of the portable ones. */
TEST(kernels_act_quantizers_match_scalar) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) return;
    tp_mm_impl impl;
    REQUIRE(tp_mm_fill_avx2(&impl));
    enum { N = 1024 };
    static float x[N];
    static int8_t q1[N], q2[N];
    static int32_t c1[N / 4], c2[N / 4];
    static float d1[N / 32], d2[N / 32], m1[N / 32], m2[N / 32];
    for (int trial = 0; trial < 6; trial++) {
        for (int i = 0; i < N; i++) x[i] = rnd_act() * (trial == 3 ? 1e-6f : 1.0f);
        if (trial == 1) for (int i = 0; i < 256; i++) x[i] = 0.0f;          /* zero group / super-block */
        if (trial == 2) { x[300] = 4.0f; x[301] = -4.0f; x[600] = -4.0f; x[610] = 4.0f; } /* ties */
        if (trial == 4) for (int i = 0; i < N; i++) x[i] = (float)((i % 255) - 127) / 127.0f * 0.5f;
        if (trial == 5) for (int i = 0; i < N; i++) x[i] = (float)(i % 7) * 0.25f + 0.125f; /* .5 after scaling */
        for (int kind = TP_ACT_Q8; kind <= TP_ACT_Q8K; kind++)
            for (int off = 0; off <= 128; off += 128) {
                memset(q1, 1, sizeof q1); memset(q2, 2, sizeof q2);
                memset(c1, 1, sizeof c1); memset(c2, 2, sizeof c2);
                memset(d1, 1, sizeof d1); memset(d2, 2, sizeof d2);
                memset(m1, 1, sizeof m1); memset(m2, 2, sizeof m2);
                if (kind == TP_ACT_Q8) tp_mm_quant_q8_scalar(x, N, off, q1, c1, d1, m1, 32, 8, 1);
                else tp_mm_quant_q8k_scalar(x, N, off, q1, c1, d1, m1, 32, 8, 1);
                impl.quant[kind == TP_ACT_Q8 ? TP_Q8_0 : TP_Q4_K](x, N, off, q2, c2, d2, m2, 32, 8, 1);
                CHECK_MSG(memcmp(q1, q2, sizeof q1) == 0, "trial %d kind %d: q differs", trial, kind);
                CHECK_MSG(memcmp(c1, c2, sizeof c1) == 0, "trial %d kind %d: c differs", trial, kind);
                CHECK_MSG(memcmp(d1, d2, sizeof d1) == 0, "trial %d kind %d: d differs", trial, kind);
                CHECK_MSG(memcmp(m1, m2, sizeof m1) == 0, "trial %d kind %d: m differs", trial, kind);
            }
    }
#endif
}

/* Q8_0 activation quantization reproduces ggml's rounding: values that land
 * exactly halfway go to the even integer, d is fp16. */
TEST(kernels_act_q8_0_rounding) {
    float x[32];
    for (int i = 0; i < 32; i++) x[i] = 0.0f;
    x[0] = 127.0f; /* amax 127: id = 1, d = 1 */
    x[1] = 2.5f;   /* -> 2 (even) */
    x[2] = 3.5f;   /* -> 4 */
    x[3] = -2.5f;  /* -> -2 */
    x[4] = 0.49f;  /* -> 0 */
    int8_t q[32];
    int32_t c[8];
    float d, m;
    tp_mm_quant_q8_scalar(x, 32, 8, q, c, &d, &m, 32, 8, 1);
    CHECK_INT_EQ(q[0], 127);
    CHECK_INT_EQ(q[1], 2);
    CHECK_INT_EQ(q[2], 4);
    CHECK_INT_EQ(q[3], -2);
    CHECK_INT_EQ(q[4], 0);
    CHECK(d == 1.0f);
    CHECK(m == 131.0f);                    /* 127 + 2 + 4 - 2 */
    CHECK_INT_EQ(c[0], -8 * (127 + 2 + 4 - 2)); /* lane 0 = values 0..3, offset 8 */
    CHECK_INT_EQ(c[1], 0);
}

/* ------------------------------------------------------------------------ */
/* ops                                                                       */

TEST(kernels_rmsnorm_matches_naive) {
    int n = 1000;
    float *x = malloc(sizeof(float) * n), *w = malloc(sizeof(float) * n), *o = malloc(sizeof(float) * n);
    for (int i = 0; i < n; i++) { x[i] = rnd_act() * 3; w[i] = 1.0f + rnd_f() * 0.5f; }
    tp_rmsnorm(o, x, w, n, 1e-5f);
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    double sc = 1.0 / sqrt(ss / n + 1e-5);
    for (int i = 0; i < n; i++) CHECK_NEAR(o[i], x[i] * sc * w[i], 1e-6 * fabs(x[i] * sc * w[i]) + 1e-7);
    tp_rmsnorm(x, x, w, n, 1e-5f); /* in place */
    CHECK(memcmp(x, o, sizeof(float) * n) == 0);
    free(x); free(w); free(o);
}

TEST(kernels_softmax_matches_naive) {
    int n = 777;
    float *x = malloc(sizeof(float) * n);
    double *e = malloc(sizeof(double) * n);
    for (int i = 0; i < n; i++) x[i] = rnd_f() * 20 + 900; /* large: needs the max subtraction */
    double mx = -1e30, sum = 0;
    for (int i = 0; i < n; i++) if (x[i] > mx) mx = x[i];
    for (int i = 0; i < n; i++) { e[i] = exp((double)x[i] - mx); sum += e[i]; }
    tp_softmax(x, n);
    double tot = 0;
    for (int i = 0; i < n; i++) {
        CHECK_NEAR(x[i], e[i] / sum, 1e-6 * e[i] / sum + 1e-9);
        tot += x[i];
    }
    CHECK_NEAR(tot, 1.0, 1e-5);
    float one[1] = { -5.0f };
    tp_softmax(one, 1);
    CHECK(one[0] == 1.0f);
    free(x); free(e);
}

TEST(kernels_swiglu_matches_naive) {
    float a[100], b[100], r[100];
    for (int i = 0; i < 100; i++) {
        a[i] = rnd_f() * 10;
        b[i] = rnd_f() * 2;
        r[i] = (float)(a[i] / (1.0 + exp(-(double)a[i])) * b[i]);
    }
    tp_swiglu(a, b, 100);
    for (int i = 0; i < 100; i++) CHECK_NEAR(a[i], r[i], 1e-6 * fabs(r[i]) + 1e-7);
}

TEST(kernels_dot_axpy_match_naive) {
    float a[131], b[131], y[131], y2[131];
    for (int n = 0; n <= 131; n += (n < 40 ? 1 : 13)) {
        double ref = 0, mag = 0;
        for (int i = 0; i < n; i++) {
            a[i] = rnd_f();
            b[i] = rnd_f();
            ref += (double)a[i] * b[i];
            mag += fabs((double)a[i] * b[i]);
            y[i] = y2[i] = rnd_f();
        }
        CHECK_NEAR(tp_dot_f32(a, b, n), ref, 1e-6 * mag + 1e-7);
        tp_axpy_f32(y, 0.75f, a, n);
        for (int i = 0; i < n; i++) CHECK_NEAR(y[i], y2[i] + 0.75 * a[i], 1e-6);
    }
}
