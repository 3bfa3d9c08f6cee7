/* test_kernels.c: thread pool, batched matmul (every type, every SIMD level,
 * several thread counts) against a double-precision reference built from
 * tp_dequantize_row, the activation quantizers, and the vector ops. */
#include "test.h"

#include <fcntl.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/mman.h>
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

static int usable_cpus(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
    return (int)sysconf(_SC_NPROCESSORS_ONLN);
}

TEST(kernels_pool_runs_every_thread_once) {
    static pool_probe P;
    for (int want = 1; want <= 3; want++) {
        tp_pool *pool = tp_pool_create(want);
        REQUIRE(pool != NULL);
        int nt = want < usable_cpus() ? want : usable_cpus(); /* capped at the CPUs */
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
    CHECK_INT_EQ(tp_pool_threads(pool), usable_cpus());
    tp_pool_free(pool);
    /* more threads than CPUs are capped: they would only take turns */
    pool = tp_pool_create(usable_cpus() + 3);
    REQUIRE(pool != NULL);
    CHECK_INT_EQ(tp_pool_threads(pool), usable_cpus());
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

#define MAX_NB 70 /* one whole chunk of 64 inputs and 6 more */
static const char *const k_levels[] = { "generic", "avx2", "avx512" };

/* Error bound of one output, from the arithmetic of matmul.h. Every float
 * operation rounds to nearest (relative error u = 2^-24). Legacy/K-quants:
 * each block term (float)isum * fl(d_w*d_x) carries <= 2u of its own size
 * (the int -> float conversion is exact below 2^24; K-quant sums up to 2^27
 * round once more: 3u) and each of the NBLK fused additions <= u of the
 * running sum, which is at most mag (the sum of |terms|): at most
 * (3 + NBLK) * u * mag. Float types: 16 lane chains of n/16 FMAs, a 4-level
 * tree and the tail: at most (n/16 + 4 + n%16 + 1) * u * mag. F16/BF16 weights
 * and quantized activations are exact in the reference (it uses the same
 * dequantized values), so nothing else enters. */
static double err_bound(uint32_t type, int n_in, double mag) {
    const double u = ldexp(1.0, -24);
    int kind = tp_mm_act_kind(type);
    double steps;
    if (kind == TP_ACT_Q8) steps = 3 + 2 * (n_in / 32); /* Q4_1/Q5_1: two FMAs per block */
    else if (kind == TP_ACT_Q8K) steps = 3 + 2 * (n_in / 256);
    else steps = n_in / 16 + 4 + n_in % 16 + 1;
    return steps * u * mag + 1e-30;
}

static void check_type(uint32_t type, int n_in, int n_out) {
    size_t rb;
    uint8_t *w = make_weights(type, n_in, n_out, &rb);
    if (n_in == 512) splice_ggml_rows(type, w, n_in, n_out);
    int kind = tp_mm_act_kind(type);
    const int G = n_in / 32;

    double *wd = malloc(sizeof(double) * (size_t)n_in * n_out);
    float *row = malloc(sizeof(float) * (size_t)n_in);
    for (int r = 0; r < n_out; r++) {
        tp_dequantize_row(type, w + (size_t)r * rb, row, (size_t)n_in);
        for (int i = 0; i < n_in; i++) wd[(size_t)r * n_in + i] = row[i];
    }
    /* Q4_1/Q5_1: the block's min, for ggml's s term */
    double *wmin = calloc((size_t)n_out * (G + 1), sizeof(double));
    if (type == TP_Q4_1 || type == TP_Q5_1)
        for (int r = 0; r < n_out; r++)
            for (int k = 0; k < G; k++) {
                uint16_t m;
                memcpy(&m, w + (size_t)r * rb + (size_t)k * tp_dtype_block_bytes(type) + 2, 2);
                wmin[(size_t)r * G + k] = tp_f16_to_f32(m);
            }

    float *x = malloc(sizeof(float) * (size_t)n_in * MAX_NB);
    double *xd = malloc(sizeof(double) * (size_t)n_in * MAX_NB);
    double *s = malloc(sizeof(double) * (size_t)(G + 1) * MAX_NB);
    double *sumdq = malloc(sizeof(double) * (size_t)(G + 1) * MAX_NB);
    double *ref = malloc(sizeof(double) * (size_t)n_out * MAX_NB);
    double *mag = malloc(sizeof(double) * (size_t)n_out * MAX_NB);
    size_t ny = (size_t)n_out * MAX_NB;
    float *y = malloc(sizeof(float) * ny), *y0 = malloc(sizeof(float) * ny);

    for (int i = 0; i < n_in * MAX_NB; i++) x[i] = rnd_act();
    /* edge cases: an all-zero group, a lone spike, a tie in magnitude */
    for (int i = 0; i < n_in && i < 64; i++) x[n_in + i] = 0.0f;
    if (n_in > 40) x[n_in + 40] = -3.0f;
    if (n_in > 6) { x[2 * n_in + 5] = 2.5f; x[2 * n_in + 6] = -2.5f; }
    for (int b = 0; b < MAX_NB; b++) {
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

    /* the file's layout and, where the type has one, the repacked copy */
    tp_weight W[2] = { { .data = w, .type = type, .n_in = n_in, .n_out = n_out } };
    uint8_t *wp = NULL;
    int n_layouts = 1;
    if (tp_weight_repackable(&W[0])) {
        wp = malloc(rb * (size_t)n_out);
        memcpy(wp, w, rb * (size_t)n_out);
        W[1] = W[0];
        W[1].data = wp;
        CHECK_INT_EQ(tp_weight_repack(&W[1]), 1);
        const int fl = type == TP_F32 || type == TP_F16 || type == TP_BF16, tr = fl ? 4 : 16; /* rows per tile */
        CHECK_INT_EQ(W[1].layout, fl ? TP_WL_R4 : TP_WL_R16);
        if (n_in > 16 || !fl) CHECK(memcmp(wp, w, rb * (size_t)(n_out / tr * tr)) != 0); /* really moved */
        if (n_out % tr) CHECK(memcmp(wp + rb * (size_t)(n_out / tr * tr), w + rb * (size_t)(n_out / tr * tr), rb * (size_t)(n_out % tr)) == 0);
        /* embedding rows read back exactly */
        float *a = malloc(sizeof(float) * (size_t)n_in), *b2 = malloc(sizeof(float) * (size_t)n_in);
        int same = 1;
        for (int r = 0; r < n_out; r++) {
            tp_weight_row(&W[1], r, a);
            tp_dequantize_row(type, w + (size_t)r * rb, b2, (size_t)n_in);
            same &= memcmp(a, b2, sizeof(float) * (size_t)n_in) == 0;
        }
        CHECK_MSG(same, "%s: tp_weight_row of the repacked weight differs", tp_dtype_name(type));
        free(a);
        free(b2);
        n_layouts = 2;
    }

    tp_pool *pools[3] = { tp_pool_create(1), tp_pool_create(2), tp_pool_create(3) };
    tp_matmul_ctx *ctx[3];
    for (int p = 0; p < 3; p++) ctx[p] = tp_matmul_ctx_new(pools[p], n_in);

    int have_base = 0, levels_run = 0;
    for (int l = 0; l < 3; l++) {
        if (tp_matmul_set_simd(k_levels[l]) != 0) continue;
        levels_run++;
        for (int lay = 0; lay < n_layouts; lay++)
            for (int p = 0; p < 3; p++) {
                memset(y, 0xFF, sizeof(float) * ny); /* NaN: every output must be written */
                tp_matmul(ctx[p], y, x, MAX_NB, &W[lay]);
                int bad = 0, diff = 0;
                for (size_t i = 0; i < ny; i++) {
                    double tol = err_bound(type, n_in, mag[i]);
                    if (!(fabs(y[i] - ref[i]) <= tol) && bad++ < 3)
                        test_fail_at(__FILE__, __LINE__, "%s %s %s threads %d [b %d r %d]: %.9g vs ref %.9g (bound %.3g)",
                                     tp_dtype_name(type), k_levels[l], lay ? "repacked" : "rows", p + 1,
                                     (int)(i / n_out), (int)(i % n_out), y[i], ref[i], tol);
                    if (have_base && memcmp(&y[i], &y0[i], sizeof(float)) != 0) diff++;
                }
                /* one arithmetic on every level, layout and thread count */
                CHECK_MSG(diff == 0, "%s %s %s threads %d: %d outputs differ from generic, 1 thread", tp_dtype_name(type),
                          k_levels[l], lay ? "repacked" : "rows", p + 1, diff);
                if (!have_base) { memcpy(y0, y, sizeof(float) * ny); have_base = 1; }
            }
        /* every batch size 1..64 (every tile shape and tail): each input's
         * outputs do not depend on the batch it came in */
        for (int lay = 0; lay < n_layouts; lay++) {
            int bad_nb = 0;
            for (int nb = 1; nb <= 64; nb++) {
                memset(y, 0xFF, sizeof(float) * (size_t)n_out * nb);
                tp_matmul(ctx[nb % 3], y, x, nb, &W[lay]);
                if (memcmp(y, y0, sizeof(float) * (size_t)n_out * nb) != 0 && bad_nb++ < 3)
                    test_fail_at(__FILE__, __LINE__, "%s %s %s: batch of %d differs from the batch of %d",
                                 tp_dtype_name(type), k_levels[l], lay ? "repacked" : "rows", nb, MAX_NB);
            }
        }
    }
    CHECK(levels_run >= 1);
    tp_matmul_set_simd(NULL);
    for (int p = 0; p < 3; p++) {
        tp_matmul_ctx_free(ctx[p]);
        tp_pool_free(pools[p]);
    }
    free(w); free(wp); free(wd); free(wmin); free(row); free(x); free(xd); free(s); free(sumdq);
    free(ref); free(mag); free(y); free(y0);
}

/* 77 rows: several row chunks per thread, 4 whole 16-row tiles and a tail
 * of 13 (and for the float kernels a 4-row tile tail of 1). Rows of 672
 * values (21 blocks) for the 32-value types, 133 (a tail after 8 x 16 lanes)
 * for the float types; the K-quants get 512 (ggml's own rows spliced in) and
 * 768. */
TEST(kernels_matmul_f32) { check_type(TP_F32, 133, 77); }
TEST(kernels_matmul_f16) { check_type(TP_F16, 133, 77); check_type(TP_F16, 2048, 20); }
TEST(kernels_matmul_bf16) { check_type(TP_BF16, 133, 77); }
TEST(kernels_matmul_q8_0) { check_type(TP_Q8_0, 672, 77); }
TEST(kernels_matmul_q4_0) { check_type(TP_Q4_0, 672, 77); check_type(TP_Q4_0, 2048, 32); }
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
/* rows shorter than a tile, one block per row, a float row shorter than 16 */
TEST(kernels_matmul_short_rows) {
    check_type(TP_Q8_0, 32, 5);
    check_type(TP_Q4_0, 64, 3);
    check_type(TP_Q4_0, 32, 16);
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
    tp_weight W3 = { .data = w, .type = TP_F16, .n_in = 32, .n_out = 1, .layout = TP_WL_R16 }; /* not F16's layout */
    tp_matmul(c, y, x, 1, &W3);
    CHECK(isnan(y[0]));
    tp_matmul_ctx_free(c);
}

/* tp_matmul_group (q, k, v or gate, up: the input quantized once, one pool run over every
 * matrix's rows) equals tp_matmul per matrix bit for bit: every level, the types that have
 * tiles, repacked and row-layout matrices side by side, row counts off the 16-row tiles,
 * batches across the 8-input tile and the 64-input batch; a group of mixed types falls back
 * to one product each, and a bad matrix in a group gets NaN alone. */
TEST(kernels_matmul_group_equals_one_by_one) {
    static const uint32_t types[] = { TP_Q4_0, TP_Q8_0, TP_Q4_K, TP_Q6_K, TP_F16, TP_BF16 };
    static const int n_outs[3] = { 64, 21, 37 }, nbs[] = { 1, 3, 8, 13, 70 };
    const int n_in = 512, NB = 70;
    tp_pool *pool = tp_pool_create(3);
    tp_matmul_ctx *c = tp_matmul_ctx_new(pool, n_in);
    REQUIRE(pool && c);
    float *x = malloc(sizeof(float) * (size_t)NB * n_in);
    for (int i = 0; i < NB * n_in; i++) x[i] = rnd_act();
    float *ya[3], *yb[3];
    for (int i = 0; i < 3; i++) {
        ya[i] = malloc(sizeof(float) * (size_t)NB * n_outs[i]);
        yb[i] = malloc(sizeof(float) * (size_t)NB * n_outs[i]);
    }
    int compared = 0;
    for (size_t li = 0; li < sizeof k_levels / sizeof k_levels[0]; li++) {
        if (tp_matmul_set_simd(k_levels[li])) continue;
        for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
            uint8_t *wd[3];
            tp_weight W[3];
            const tp_weight *Wp[3];
            for (int i = 0; i < 3; i++) {
                size_t rb;
                wd[i] = make_weights(types[ti], n_in, n_outs[i], &rb);
                W[i] = (tp_weight){ .data = wd[i], .type = types[ti], .n_in = n_in, .n_out = n_outs[i] };
                if (i < 2) tp_weight_repack(&W[i]); /* the third stays in rows */
                Wp[i] = &W[i];
            }
            for (size_t bi = 0; bi < sizeof nbs / sizeof nbs[0]; bi++) {
                int nb = nbs[bi];
                for (int n = 2; n <= 3; n++) {
                    tp_matmul_group(c, ya, x, nb, Wp, n);
                    for (int i = 0; i < n; i++) {
                        tp_matmul(c, yb[i], x, nb, &W[i]);
                        CHECK_MSG(!memcmp(ya[i], yb[i], sizeof(float) * (size_t)nb * n_outs[i]),
                                  "%s %s nb %d: matrix %d of a group of %d differs", k_levels[li],
                                  tp_dtype_name(types[ti]), nb, i, n);
                        compared++;
                    }
                }
            }
            for (int i = 0; i < 3; i++) free(wd[i]);
        }
    }
    tp_matmul_set_simd(NULL);
    CHECK(compared >= 6 * 5 * 5);

    /* mixed types, and a bad matrix in a group */
    size_t rb;
    uint8_t *w0 = make_weights(TP_Q4_0, n_in, 64, &rb), *w1 = make_weights(TP_Q8_0, n_in, 21, &rb);
    tp_weight M[3] = { { .data = w0, .type = TP_Q4_0, .n_in = n_in, .n_out = 64 },
                       { .data = w1, .type = TP_Q8_0, .n_in = n_in, .n_out = 21 },
                       { .data = w0, .type = TP_Q4_0, .n_in = 48, .n_out = 2 } /* not whole blocks */ };
    const tp_weight *Mp[3] = { &M[0], &M[1], &M[2] };
    tp_matmul_group(c, ya, x, 5, Mp, 3);
    for (int i = 0; i < 2; i++) {
        tp_matmul(c, yb[i], x, 5, &M[i]);
        CHECK(!memcmp(ya[i], yb[i], sizeof(float) * 5 * (size_t)n_outs[i]));
    }
    CHECK(isnan(ya[2][0]) && isnan(ya[2][9]));
    free(w0);
    free(w1);
    for (int i = 0; i < 3; i++) { free(ya[i]); free(yb[i]); }
    free(x);
    tp_matmul_ctx_free(c);
    tp_pool_free(pool);
}

TEST(kernels_repack_only_what_it_can) {
    uint8_t w[16 * 18 * 2];
    memset(w, 0x11, sizeof w);
    tp_weight a = { .data = w, .type = TP_Q4_0, .n_in = 64, .n_out = 15 }; /* fewer than 16 rows */
    CHECK_INT_EQ(tp_weight_repack(&a), 0);
    CHECK_INT_EQ(a.layout, TP_WL_ROWS);
    tp_weight b = { .data = w, .type = TP_F16, .n_in = 64, .n_out = 3 }; /* fewer than 4 rows */
    CHECK_INT_EQ(tp_weight_repack(&b), 0);
    tp_weight b2 = { .data = w, .type = TP_Q2_K, .n_in = 256, .n_out = 16 }; /* no tile layout */
    CHECK_INT_EQ(tp_weight_repack(&b2), 0);
    tp_weight c = { .data = w, .type = TP_Q4_0, .n_in = 32, .n_out = 16 };
    CHECK_INT_EQ(tp_weight_repack(&c), 1);
    CHECK_INT_EQ(tp_weight_repack(&c), 0); /* already packed */
}


/* kB of a /proc/self/status field (RssAnon, RssFile), or -1 */
static long status_kb(const char *field) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t n = strlen(field);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, field, n) && line[n] == ':') v = atol(line + n + 1);
    if (f) fclose(f);
    return v;
}

/* Weights moved onto huge pages keep their bytes and addresses, the file is
 * not written, and the file's pages leave the process as the copies arrive:
 * the resident set does not hold the weights twice. */
TEST(kernels_weights_to_hugepages_moves_not_copies) {
    char *dir = test_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/w.bin", dir);
    const size_t A = (size_t)2 << 20, size = 16 * A + 12345;
    uint8_t *want = malloc(size);
    for (size_t i = 0; i < size; i++) want[i] = (uint8_t)(i * 2654435761u >> 13);
    FILE *f = fopen(path, "wb");
    REQUIRE(f && fwrite(want, 1, size, f) == size);
    fclose(f);
    int fd = open(path, O_RDONLY);
    REQUIRE(fd >= 0);
    /* a private read-only mapping at a 2 MiB boundary, as tp_gguf_open makes */
    uint8_t *r = mmap(NULL, size + A, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(r != MAP_FAILED);
    uint8_t *a = (uint8_t *)(((uintptr_t)r + A - 1) & ~(uintptr_t)(A - 1));
    uint8_t *m = mmap(a, size, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0);
    close(fd);
    REQUIRE(m == a);
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < size; i += 4096) sink ^= m[i]; /* all resident */
    long anon0 = status_kb("RssAnon"), file0 = status_kb("RssFile");
    /* from an unaligned start: only whole chunks inside the range move */
    size_t moved = tp_weights_to_hugepages(m + 100, size - 100);
    CHECK_INT_EQ((long long)moved, (long long)(15 * A)); /* chunks 1..15 */
    CHECK(memcmp(m, want, size) == 0);
    long anon1 = status_kb("RssAnon"), file1 = status_kb("RssFile");
    if (anon0 >= 0 && file0 >= 0) {
        long grew = (anon1 + file1) - (anon0 + file0), moved_kb = (long)(moved / 1024);
        CHECK_MSG(anon1 - anon0 >= moved_kb - 4096, "anonymous pages grew by %ld kB for %ld kB moved", anon1 - anon0,
                  moved_kb);
        CHECK_MSG(grew < 4096, "the resident set grew by %ld kB (the weights held twice?)", grew);
    }
    munmap(r, size + A); /* the file's mapping, the moved chunks and the reservation around them */
    /* the file is untouched */
    size_t len;
    char err[TP_ERR_LEN];
    char *back = tp_read_file(path, &len, err);
    REQUIRE(back);
    CHECK(len == size && memcmp(back, want, size) == 0);
    free(back);
    free(want);
    unlink(path);
    rmdir(dir);
    free(dir);
    (void)sink;
}

TEST(kernels_simd_level_names) {
    const char *lv = tp_simd_level();
    CHECK(strcmp(lv, "generic") == 0 || strcmp(lv, "avx2") == 0 || strcmp(lv, "avx512") == 0);
    CHECK_INT_EQ(tp_matmul_set_simd("generic"), 0);
    CHECK(strcmp(tp_simd_level(), "generic") == 0);
    CHECK_INT_EQ(tp_matmul_set_simd("scalar"), 0); /* the old name */
    CHECK(strcmp(tp_simd_level(), "generic") == 0);
    CHECK_INT_EQ(tp_matmul_set_simd("no-such-level"), -1);
    CHECK(strcmp(tp_simd_level(), "generic") == 0);
    CHECK_INT_EQ(tp_matmul_set_simd(NULL), 0);
    CHECK(strcmp(tp_simd_level(), lv) == 0);
    CHECK(tp_simd_available("generic"));
    const char *env = getenv("TEMPO_SIMD");
#if defined(__x86_64__)
    __builtin_cpu_init();
    int cpu_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    int cpu_512 = cpu_avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
    int capped = env && (!strcmp(env, "generic") || !strcmp(env, "scalar"));
    CHECK_INT_EQ(tp_simd_available("avx2"), cpu_avx2 && !capped);
    capped = capped || (env && !strcmp(env, "avx2"));
    CHECK_INT_EQ(tp_simd_available("avx512"), cpu_512 && !capped);
    /* TEMPO_SIMD caps the levels as a CPU without the higher ones would */
    CHECK_INT_EQ(tp_matmul_set_simd("avx512"), tp_simd_available("avx512") ? 0 : -1);
    tp_matmul_set_simd(NULL);
#endif
    (void)env;
}

/* The SIMD activation quantizers must write the very bytes of the portable ones. */
TEST(kernels_act_quantizers_match_generic) {
#if defined(__x86_64__)
    if (!tp_simd_available("avx2")) return;
    enum { N = 1024 };
    static float x[N];
    static int8_t q1[N], q2[N];
    static int32_t c1[N / 32], c2[N / 32];
    static int16_t s1[N / 32], s2[N / 32];
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
                memset(s1, 1, sizeof s1); memset(s2, 2, sizeof s2);
                memset(d1, 1, sizeof d1); memset(d2, 2, sizeof d2);
                memset(m1, 1, sizeof m1); memset(m2, 2, sizeof m2);
                if (kind == TP_ACT_Q8) {
                    tp_mm_quant_q8_generic(x, N, off, q1, 32, d1, c1, m1, s1, 1);
                    tp_mm_quant_q8_avx2(x, N, off, q2, 32, d2, c2, m2, s2, 1);
                    CHECK_MSG(memcmp(c1, c2, sizeof c1) == 0, "trial %d: c differs", trial);
                    CHECK_MSG(memcmp(m1, m2, sizeof m1) == 0, "trial %d: s differs", trial);
                } else {
                    tp_mm_quant_q8k_generic(x, N, off, q1, 256, d1, c1, m1, s1, 1);
                    tp_mm_quant_q8k_avx2(x, N, off, q2, 256, d2, c2, m2, s2, 1);
                    CHECK_MSG(memcmp(s1, s2, sizeof(int16_t) * N / 32) == 0, "trial %d: sums differ", trial);
                }
                int nd = kind == TP_ACT_Q8 ? N / 32 : N / 256;
                CHECK_MSG(memcmp(q1, q2, sizeof q1) == 0, "trial %d kind %d off %d: q differs", trial, kind, off);
                CHECK_MSG(memcmp(d1, d2, sizeof(float) * (size_t)nd) == 0, "trial %d kind %d: d differs", trial, kind);
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
    int32_t c;
    int16_t sum;
    float d, s;
    tp_mm_quant_q8_generic(x, 32, 8, q, 32, &d, &c, &s, &sum, 1);
    CHECK_INT_EQ(q[0], 127);
    CHECK_INT_EQ(q[1], 2);
    CHECK_INT_EQ(q[2], 4);
    CHECK_INT_EQ(q[3], -2);
    CHECK_INT_EQ(q[4], 0);
    CHECK(d == 1.0f);
    CHECK(s == 131.0f);                    /* 127 + 2 + 4 - 2 */
    CHECK_INT_EQ(c, -8 * (127 + 2 + 4 - 2)); /* offset 8 */
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

/* tp_expf against exp in double: within 0.501 ulp (the rounding of a value computed to ~1e-14)
 * over the whole finite range (every 997th float, ~4M values), overflow and underflow where
 * float has them, NaN; and the 8- and 16-lane forms (tp_expf_sub, tp_swiglu) give the scalar's
 * bits on every level, tails included. */
TEST(kernels_expf_correctly_rounded_and_the_same_on_every_level) {
    double worst = 0;
    float worst_x = 0;
    for (uint32_t u = 0; u < 0xFFFFFFFFu - 997; u += 997) {
        float x;
        memcpy(&x, &u, 4);
        if (!(x >= -87.33f && x <= 88.72f)) continue; /* normal results */
        const double want = exp((double)x);
        const float w = (float)want;
        const double ulp = (double)nextafterf(w, INFINITY) - (double)w;
        const double e = fabs((double)tp_expf(x) - want) / ulp;
        if (e > worst) { worst = e; worst_x = x; }
    }
    CHECK_MSG(worst <= 0.501, "tp_expf is %.4f ulp off at %.9g", worst, worst_x);
    CHECK(tp_expf(0.0f) == 1.0f && tp_expf(-0.0f) == 1.0f);
    CHECK(isinf(tp_expf(88.73f)) && isinf(tp_expf(INFINITY)) && tp_expf(88.72f) > 3.3e38f);
    CHECK(tp_expf(-103.0f) > 0.0f && tp_expf(-103.0f) < 1.17549435e-38f); /* subnormal */
    CHECK(tp_expf(-104.0f) == 0.0f && tp_expf(-INFINITY) == 0.0f);
    CHECK(isnan(tp_expf(NAN)));

    enum { N = 1000 + 13 };
    float x[N], ref[N], got[N], a[N], b[N], sw[N];
    for (int i = 0; i < N; i++) x[i] = (rnd_f() - 0.5f) * 240.0f; /* past both clamps */
    x[3] = NAN; x[4] = INFINITY; x[5] = -INFINITY; x[6] = 0.0f;
    for (int i = 0; i < N; i++) {
        ref[i] = tp_expf(x[i] - 1.5f);
        a[i] = x[i] * 0.2f;
        b[i] = rnd_f() * 2 - 1;
        sw[i] = a[i] / (1.0f + tp_expf(-a[i])) * b[i];
    }
    for (int l = 0; l < 3; l++) {
        if (tp_matmul_set_simd(k_levels[l]) != 0) continue;
        for (int n = 1; n <= N; n += (n < 40 ? 1 : 97)) { /* every tail length */
            tp_expf_sub(got, x, 1.5f, n);
            for (int i = 0; i < n; i++)
                CHECK_MSG(memcmp(&got[i], &ref[i], 4) == 0 || (isnan(got[i]) && isnan(ref[i])),
                          "%s exp of %.9g: %.9g, scalar %.9g", k_levels[l], x[i] - 1.5f, got[i], ref[i]);
        }
        memcpy(got, a, sizeof a);
        tp_swiglu(got, b, N);
        for (int i = 0; i < N; i++)
            CHECK_MSG(memcmp(&got[i], &sw[i], 4) == 0 || (isnan(got[i]) && isnan(sw[i])),
                      "%s swiglu of %.9g: %.9g, scalar %.9g", k_levels[l], a[i], got[i], sw[i]);
        memcpy(got, x + 7, 64 * sizeof(float)); /* in place */
        tp_expf_sub(got, got, 1.5f, 64);
        CHECK(memcmp(got, ref + 7, 64 * sizeof(float)) == 0);
    }
    tp_matmul_set_simd(NULL);
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

/* The weighted sum of rows (attention's p x V) equals zeroing then tp_axpy_f32 per row with
 * p != 0, bit for bit: widths around the 64- and 8-value blocks, strides past the width, zeros
 * skipped (a row with p == 0 is never read: NaN there must not leak). */
TEST(kernels_wsum_rows_equals_axpy_per_row) {
    enum { R = 37, S = 263 };
    static float rows[R * S];
    float p[R], got[S], want[S];
    for (int i = 0; i < R * S; i++) rows[i] = rnd_f() * 2 - 1;
    for (int n = 1; n <= 256; n += (n < 72 ? 1 : 61)) {
        for (int nr = 1; nr <= R; nr += 9) {
            for (int j = 0; j < nr; j++) p[j] = (j % 4 == 1) ? 0.0f : rnd_f();
            if (nr > 1) rows[1 * S + n / 2] = NAN; /* p[1] == 0 */
            tp_wsum_rows_f32(got, p, rows, S, nr, n);
            for (int i = 0; i < n; i++) want[i] = 0.0f;
            for (int j = 0; j < nr; j++)
                if (p[j] != 0.0f) tp_axpy_f32(want, p[j], rows + (size_t)j * S, n);
            CHECK_MSG(memcmp(got, want, sizeof(float) * (size_t)n) == 0, "n %d rows %d", n, nr);
            rows[1 * S + n / 2] = 0.5f;
        }
    }
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
        float d = tp_dot_f32(a, b, n);
        CHECK_NEAR(d, ref, 1e-6 * mag + 1e-7);
        /* the one order of every CPU (ops.c): 16 FMA lanes, tree, tail */
        float l[16] = { 0 }, s8[8], s4[4];
        for (int i = 0; i < (n & ~15); i += 16)
            for (int k = 0; k < 16; k++) l[k] = fmaf(a[i + k], b[i + k], l[k]);
        for (int k = 0; k < 8; k++) s8[k] = l[k] + l[k + 8];
        for (int k = 0; k < 4; k++) s4[k] = s8[k] + s8[k + 4];
        float want = (s4[0] + s4[2]) + (s4[1] + s4[3]);
        for (int i = n & ~15; i < n; i++) want = fmaf(a[i], b[i], want);
        CHECK_MSG(memcmp(&d, &want, sizeof d) == 0, "dot n %d: %.9g, the order gives %.9g", n, d, want);
        tp_axpy_f32(y, 0.75f, a, n);
        for (int i = 0; i < n; i++) {
            float w2 = fmaf(0.75f, a[i], y2[i]);
            CHECK(memcmp(&y[i], &w2, sizeof w2) == 0);
        }
    }
}
