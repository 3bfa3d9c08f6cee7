/* matmul.c: the batched matrix-vector product: dispatch, threading, the
 * activation quantizers and the portable (scalar) kernels.
 *
 * Activation quantization follows what llama.cpp runs on x86:
 *  - Q8_0 (for Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 weights): per 32 values d = amax/127
 *    stored as fp16, q = round-to-nearest-even(x * (127/amax)) (ggml's AVX2
 *    quantize_row_q8_0; its portable _ref variant uses 1/d and roundf, which
 *    differs in rare last-bit cases). For Q4_1/Q5_1 the Q8_1 sum term
 *    s = fp16(d * sum(q)) is used for the weight's min, as ggml does.
 *  - Q8_K (for K-quants): per 256 values iscale = -127/max (max = the value of
 *    largest magnitude), q = nearest(iscale * x), d = 1/iscale (ggml's
 *    quantize_row_q8_K_ref, which x86 uses too).
 * Dot products are exact in integers per group of 32 (or per 16-value
 * sub-block for Q6_K), then scaled by the weight's and the activation's
 * scales in float, so every SIMD level gives the same result up to the
 * order of float additions.
 */
#include "kernels/matmul.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "kernels/matmul_internal.h"
#include "tensor/dtype.h"

/* ------------------------------------------------------------------------ */
/* type properties                                                           */

int tp_mm_act_kind(uint32_t type) {
    switch (type) {
    case TP_Q4_0: case TP_Q4_1: case TP_Q5_0: case TP_Q5_1: case TP_Q8_0: return TP_ACT_Q8;
    case TP_Q4_K: case TP_Q5_K: case TP_Q6_K: return TP_ACT_Q8K;
    default: return TP_ACT_F32;
    }
}

int tp_mm_is_legacy(uint32_t type) { return tp_mm_act_kind(type) == TP_ACT_Q8; }

/* Weights are fed to the u8 x s8 instructions as value + offset >= 0. */
int tp_mm_offset(uint32_t type) {
    switch (type) {
    case TP_Q8_0: return 128;
    case TP_Q4_0: return 8;
    case TP_Q5_0: return 16;
    case TP_Q6_K: return 32;
    default: return 0;
    }
}

static float round_f16(float v) { return tp_f16_to_f32(tp_f32_to_f16(v)); }

static inline uint16_t rd16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

/* ------------------------------------------------------------------------ */
/* portable activation quantizers                                            */

/* float -> int as the x86 cvtps2dq + saturating pack do: nearest-even, NaN and
 * out-of-range -> -128 before saturation. For finite inputs |v| <= 127.00001. */
static inline int q8_round(float v) {
    if (!(fabsf(v) < 2147483648.0f)) return -128;
    long r = lrintf(v);
    return r > 127 ? 127 : r < -128 ? -128 : (int)r;
}

static void fill_sums(const int8_t *q, int offset, int32_t *c, int *sum) {
    int s = 0;
    for (int l = 0; l < 8; l++) {
        int ls = q[4 * l] + q[4 * l + 1] + q[4 * l + 2] + q[4 * l + 3];
        c[l] = -offset * ls;
        s += ls;
    }
    *sum = s;
}

void tp_mm_quant_q8_scalar(const float *x, int n, int offset, int8_t *q, int32_t *c, float *d, float *m,
                           size_t qg, size_t cg, size_t dg) {
    for (int g = 0; g < n / 32; g++) {
        const float *xs = x + 32 * g;
        int8_t *qs = q + (size_t)g * qg;
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(xs[j]));
        float dd = amax / 127.0f;
        float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        for (int j = 0; j < 32; j++) qs[j] = (int8_t)q8_round(xs[j] * id);
        int sum;
        fill_sums(qs, offset, c + (size_t)g * cg, &sum);
        d[(size_t)g * dg] = round_f16(dd);
        m[(size_t)g * dg] = round_f16(dd * (float)sum);
    }
}

void tp_mm_quant_q8k_scalar(const float *x, int n, int offset, int8_t *q, int32_t *c, float *d, float *m,
                            size_t qg, size_t cg, size_t dg) {
    for (int s = 0; s < n / 256; s++) {
        const float *xs = x + 256 * s;
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < 256; j++) {
            float ax = fabsf(xs[j]);
            if (ax > amax) { amax = ax; max = xs[j]; }
        }
        float dd = 0.0f, iscale = amax == 0.0f ? 0.0f : -127.0f / max;
        if (amax != 0.0f) dd = 1.0f / iscale;
        for (int g = 0; g < 8; g++) {
            const size_t gi = 8 * (size_t)s + (size_t)g;
            int8_t *qs = q + gi * qg;
            for (int j = 0; j < 32; j++) {
                int v = q8_round(iscale * xs[32 * g + j]);
                qs[j] = (int8_t)(v < 127 ? v : 127);
            }
            int sum;
            fill_sums(qs, offset, c + gi * cg, &sum);
            d[gi * dg] = dd;
            m[gi * dg] = dd * (float)sum;
        }
    }
}

/* ------------------------------------------------------------------------ */
/* portable kernels                                                          */

/* One group of 32 weights: signed values, the scale of elements 0-15 and
 * 16-31 (equal except for Q6_K), and the min term's factor (0 if none). */
typedef struct {
    int8_t v[32];
    float s0, s1, mn;
} sgroup;

static void k4_scale_min(const uint8_t *sc, int j, int *s, int *m) {
    if (j < 4) {
        *s = sc[j] & 63;
        *m = sc[j + 4] & 63;
    } else {
        *s = (sc[j + 4] & 0xF) | ((sc[j - 4] >> 6) << 4);
        *m = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
    }
}

static void sdecode(uint32_t type, const uint8_t *row, int g, sgroup *o) {
    o->mn = 0.0f;
    switch (type) {
    case TP_Q8_0: {
        const uint8_t *b = row + 34 * g;
        o->s0 = o->s1 = tp_f16_to_f32(rd16(b));
        memcpy(o->v, b + 2, 32);
        break;
    }
    case TP_Q4_0: case TP_Q4_1: {
        int off = type == TP_Q4_0 ? 8 : 0;
        const uint8_t *b = row + (type == TP_Q4_0 ? 18 : 20) * g;
        const uint8_t *qs = b + (type == TP_Q4_0 ? 2 : 4);
        o->s0 = o->s1 = tp_f16_to_f32(rd16(b));
        if (type == TP_Q4_1) o->mn = tp_f16_to_f32(rd16(b + 2));
        for (int l = 0; l < 16; l++) {
            o->v[l] = (int8_t)((qs[l] & 0xF) - off);
            o->v[l + 16] = (int8_t)((qs[l] >> 4) - off);
        }
        break;
    }
    case TP_Q5_0: case TP_Q5_1: {
        int q51 = type == TP_Q5_1, off = q51 ? 0 : 16;
        const uint8_t *b = row + (q51 ? 24 : 22) * g;
        uint32_t qh;
        memcpy(&qh, b + (q51 ? 4 : 2), 4);
        const uint8_t *qs = b + (q51 ? 8 : 6);
        o->s0 = o->s1 = tp_f16_to_f32(rd16(b));
        if (q51) o->mn = tp_f16_to_f32(rd16(b + 2));
        for (int l = 0; l < 16; l++) {
            o->v[l] = (int8_t)(((qs[l] & 0xF) | (((qh >> l) & 1) << 4)) - off);
            o->v[l + 16] = (int8_t)(((qs[l] >> 4) | (((qh >> (l + 16)) & 1) << 4)) - off);
        }
        break;
    }
    case TP_Q4_K: case TP_Q5_K: {
        int q5 = type == TP_Q5_K, sb = g / 8, j = g % 8;
        const uint8_t *b = row + (q5 ? 176 : 144) * sb;
        const uint8_t *qh = b + 16, *qs = b + (q5 ? 48 : 16) + 32 * (j / 2);
        int sc, mi;
        k4_scale_min(b + 4, j, &sc, &mi);
        o->s0 = o->s1 = tp_f16_to_f32(rd16(b)) * (float)sc;
        o->mn = -tp_f16_to_f32(rd16(b + 2)) * (float)mi;
        for (int l = 0; l < 32; l++) {
            int v = (j & 1) ? qs[l] >> 4 : qs[l] & 0xF;
            if (q5) v |= ((qh[l] >> j) & 1) << 4;
            o->v[l] = (int8_t)v;
        }
        break;
    }
    case TP_Q6_K: {
        int sb = g / 8, h = (g % 8) / 4, k = g % 4;
        const uint8_t *b = row + 210 * sb;
        const uint8_t *ql = b + 64 * h + ((k & 1) ? 32 : 0), *qh = b + 128 + 32 * h;
        const int8_t *sc = (const int8_t *)(b + 192) + 8 * h + 2 * k;
        float d = tp_f16_to_f32(rd16(b + 208));
        o->s0 = d * (float)sc[0];
        o->s1 = d * (float)sc[1];
        for (int l = 0; l < 32; l++) {
            int lo = (k & 2) ? ql[l] >> 4 : ql[l] & 0xF;
            o->v[l] = (int8_t)((lo | (((qh[l] >> (2 * k)) & 3) << 4)) - 32);
        }
        break;
    }
    default:
        memset(o, 0, sizeof *o);
    }
}

static void kern_scalar_quant(const tp_mm_job *J, int r0, int r1, float *scratch) {
    (void)scratch;
    const int G = J->n_in / 32, nb = J->nb;
    const int has_min = J->type == TP_Q4_1 || J->type == TP_Q5_1 || J->type == TP_Q4_K ||
                        J->type == TP_Q5_K;
    float acc[TP_MATMUL_MAX_BATCH];
    sgroup grp;
    for (int r = r0; r < r1; r++) {
        const uint8_t *row = J->w + (size_t)r * J->row_bytes;
        memset(acc, 0, sizeof(float) * (size_t)nb);
        for (int g = 0; g < G; g++) {
            sdecode(J->type, row, g, &grp);
            for (int b = 0; b < nb; b++) {
                const int8_t *xq = J->xq + (size_t)b * J->xq_bs + (size_t)g * J->xq_gs;
                const size_t xg = (size_t)b * J->xg_bs + (size_t)g * J->xg_gs;
                int i0 = 0, i1 = 0;
                for (int l = 0; l < 16; l++) i0 += grp.v[l] * xq[l];
                for (int l = 16; l < 32; l++) i1 += grp.v[l] * xq[l];
                float t = J->xd[xg] * (grp.s0 * (float)i0 + grp.s1 * (float)i1);
                if (has_min) t += grp.mn * J->xm[xg];
                acc[b] += t;
            }
        }
        for (int b = 0; b < nb; b++) J->y[(size_t)b * J->n_out + r] = acc[b];
    }
}

/* The legacy types in ggml's x86 order (matmul_internal.h): 8 lanes of 4
 * products per block, lane-wise fma with d_w*d_x, ggml's horizontal sum. */
static float hsum8_ggml(const float a[8]) {
    float s0 = a[0] + a[4], s1 = a[1] + a[5], s2 = a[2] + a[6], s3 = a[3] + a[7];
    return (s0 + s2) + (s1 + s3);
}

static void kern_scalar_legacy(const tp_mm_job *J, int r0, int r1, float *scratch) {
    (void)scratch;
    const int G = J->n_in / 32, nb = J->nb;
    const int has_min = J->type == TP_Q4_1 || J->type == TP_Q5_1;
    float acc[TP_MATMUL_MAX_BATCH][8], summs[TP_MATMUL_MAX_BATCH];
    sgroup grp;
    for (int r = r0; r < r1; r++) {
        const uint8_t *row = J->w + (size_t)r * J->row_bytes;
        memset(acc, 0, sizeof acc);
        memset(summs, 0, sizeof summs);
        for (int g = 0; g < G; g++) {
            sdecode(J->type, row, g, &grp);
            for (int b = 0; b < nb; b++) {
                const int8_t *xq = J->xq + (size_t)b * J->xq_bs + (size_t)g * J->xq_gs;
                const size_t xg = (size_t)b * J->xg_bs + (size_t)g * J->xg_gs;
                const float d = grp.s0 * J->xd[xg];
                for (int l = 0; l < 8; l++) {
                    int li = 0;
                    for (int k = 0; k < 4; k++) li += grp.v[4 * l + k] * xq[4 * l + k];
                    acc[b][l] = fmaf(d, (float)li, acc[b][l]);
                }
                if (has_min) summs[b] += grp.mn * J->xm[xg];
            }
        }
        for (int b = 0; b < nb; b++) J->y[(size_t)b * J->n_out + r] = hsum8_ggml(acc[b]) + summs[b];
    }
}

static float dot_f32(const float *a, const float *b, int n) {
    float s[4] = { 0, 0, 0, 0 };
    int i = 0;
    for (; i + 4 <= n; i += 4)
        for (int k = 0; k < 4; k++) s[k] += a[i + k] * b[i + k];
    for (; i < n; i++) s[0] += a[i] * b[i];
    return (s[0] + s[1]) + (s[2] + s[3]);
}

/* F32/F16/BF16 and any type without an integer kernel: the row as f32 times
 * the f32 inputs. */
static void kern_scalar_float(const tp_mm_job *J, int r0, int r1, float *scratch) {
    for (int r = r0; r < r1; r++) {
        const uint8_t *row = J->w + (size_t)r * J->row_bytes;
        const float *wf;
        if (J->type == TP_F32 && ((uintptr_t)row & 3) == 0) {
            wf = (const float *)(const void *)row;
        } else {
            tp_dequantize_row(J->type, row, scratch, (size_t)J->n_in);
            wf = scratch;
        }
        for (int b = 0; b < J->nb; b++)
            J->y[(size_t)b * J->n_out + r] = dot_f32(wf, J->xf + (size_t)b * J->n_in, J->n_in);
    }
}

/* ------------------------------------------------------------------------ */
/* dispatch                                                                  */

static tp_mm_impl g_impl[TP_SIMD_N];
static int g_avail[TP_SIMD_N];
static int g_best;
static atomic_int g_level = -1;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static const char *const k_level_names[TP_SIMD_N] = { "scalar", "avx2", "avx512" };

static int cpu_has_avx2(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("avx");
#else
    return 0;
#endif
}

/* AVX-512 level: F/BW/VL for the byte and mask operations, VNNI for the
 * 4-way u8 x s8 dot product (without VNNI the AVX2 kernels are as fast). */
static int cpu_has_avx512(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    return cpu_has_avx2() && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512vnni");
#else
    return 0;
#endif
}

static void init_once(void) {
    tp_mm_impl *s = &g_impl[TP_SIMD_SCALAR];
    for (int t = 0; t < TP_MM_NTYPES; t++) {
        int kind = tp_mm_act_kind((uint32_t)t);
        s->kernel[t] = kind == TP_ACT_F32 ? kern_scalar_float
                       : kind == TP_ACT_Q8 ? kern_scalar_legacy
                                           : kern_scalar_quant;
        s->quant[t] = kind == TP_ACT_Q8 ? tp_mm_quant_q8_scalar : kind == TP_ACT_Q8K ? tp_mm_quant_q8k_scalar : NULL;
        s->layout[t] = kind == TP_ACT_Q8 ? TP_LAYOUT_GROUP_MAJOR : TP_LAYOUT_ACT_MAJOR;
    }
    s->row_step = 1;
    g_avail[TP_SIMD_SCALAR] = 1;
    g_best = TP_SIMD_SCALAR;
    if (cpu_has_avx2() && tp_mm_fill_avx2(&g_impl[TP_SIMD_AVX2])) {
        g_avail[TP_SIMD_AVX2] = 1;
        g_best = TP_SIMD_AVX2;
    }
    if (cpu_has_avx512() && tp_mm_fill_avx512(&g_impl[TP_SIMD_AVX512])) {
        g_avail[TP_SIMD_AVX512] = 1;
        g_best = TP_SIMD_AVX512;
    }
    /* Lower levels fill the gaps of higher ones (kernel, quantizer and
     * layout travel together). */
    for (int l = 1; l < TP_SIMD_N; l++) {
        if (!g_avail[l]) continue;
        tp_mm_impl *hi = &g_impl[l], *lo = &g_impl[l - 1];
        if (hi->row_step < 1) hi->row_step = 1;
        for (int t = 0; t < TP_MM_NTYPES; t++) {
            if (hi->kernel[t]) continue;
            hi->kernel[t] = lo->kernel[t];
            hi->quant[t] = lo->quant[t];
            hi->layout[t] = lo->layout[t];
        }
    }
    int level = g_best;
    const char *env = getenv("TEMPO_SIMD");
    if (env && *env) {
        for (int l = 0; l < TP_SIMD_N; l++)
            if (strcmp(env, k_level_names[l]) == 0 && g_avail[l]) level = l;
    }
    atomic_store(&g_level, level);
}

static int level_now(void) {
    pthread_once(&g_once, init_once);
    return atomic_load_explicit(&g_level, memory_order_relaxed);
}

const char *tp_simd_level(void) { return k_level_names[level_now()]; }

int tp_matmul_set_simd(const char *name) {
    level_now();
    if (!name) {
        atomic_store(&g_level, g_best);
        return 0;
    }
    for (int l = 0; l < TP_SIMD_N; l++) {
        if (strcmp(name, k_level_names[l]) == 0) {
            if (!g_avail[l]) return -1;
            atomic_store(&g_level, l);
            return 0;
        }
    }
    return -1;
}

/* ------------------------------------------------------------------------ */
/* context and threading                                                     */

struct tp_matmul_ctx {
    tp_pool *pool;
    int max_n_in; /* rounded up to 256 */
    int n_threads;
    int8_t *xq;
    int32_t *xc;
    float *xd, *xm;
    float *scratch; /* n_threads x max_n_in */
    size_t bytes;

    /* the product being computed (valid during a pool run) */
    tp_mm_job job;
    const tp_mm_impl *impl;
    tp_mm_kernel kernel;
    int chunk_rows, n_chunks;
    _Alignas(64) atomic_int next_chunk;
};

/* The context's buffer sizes, shared by tp_matmul_ctx_new and the estimate. */
static void ctx_sizes(int n_threads, int max_n_in, size_t *sz_q, size_t *sz_c, size_t *sz_d, size_t *sz_s) {
    size_t n = (size_t)TP_MATMUL_MAX_BATCH * (size_t)max_n_in, G = n / 32;
    *sz_q = n;
    *sz_c = G * 8 * sizeof(int32_t);
    *sz_d = G * sizeof(float);
    *sz_s = (size_t)n_threads * (size_t)max_n_in * sizeof(float);
}

size_t tp_matmul_ctx_estimate_bytes(int n_threads, int max_n_in) {
    if (max_n_in < 1) max_n_in = 1;
    max_n_in = (max_n_in + 511) / 512 * 512;
    size_t sz_q, sz_c, sz_d, sz_s;
    ctx_sizes(n_threads, max_n_in, &sz_q, &sz_c, &sz_d, &sz_s);
    return sizeof(tp_matmul_ctx) + sz_q + sz_c + 2 * sz_d + sz_s;
}

tp_matmul_ctx *tp_matmul_ctx_new(tp_pool *pool, int max_n_in) {
    if (max_n_in < 1) max_n_in = 1;
    tp_matmul_ctx *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->pool = pool;
    c->n_threads = tp_pool_threads(pool);
    c->max_n_in = (max_n_in + 511) / 512 * 512; /* whole chunks of 16 groups */
    size_t sz_q, sz_c, sz_d, sz_s;
    ctx_sizes(c->n_threads, c->max_n_in, &sz_q, &sz_c, &sz_d, &sz_s);
    c->xq = tp_alloc_aligned(sz_q);
    c->xc = tp_alloc_aligned(sz_c);
    c->xd = tp_alloc_aligned(sz_d);
    c->xm = tp_alloc_aligned(sz_d);
    c->scratch = tp_alloc_aligned(sz_s);
    c->bytes = sizeof *c + sz_q + sz_c + 2 * sz_d + sz_s;
    if (!c->xq || !c->xc || !c->xd || !c->xm || !c->scratch) {
        tp_matmul_ctx_free(c);
        return NULL;
    }
    atomic_init(&c->next_chunk, 0);
    level_now();
    return c;
}

void tp_matmul_ctx_free(tp_matmul_ctx *c) {
    if (!c) return;
    tp_free_aligned(c->xq);
    tp_free_aligned(c->xc);
    tp_free_aligned(c->xd);
    tp_free_aligned(c->xm);
    tp_free_aligned(c->scratch);
    free(c);
}

size_t tp_matmul_ctx_bytes(const tp_matmul_ctx *c) { return c ? c->bytes : 0; }

static void quantize_acts(const tp_matmul_ctx *c, int b0, int b1) {
    const tp_mm_job *J = &c->job;
    int off = tp_mm_offset(J->type);
    tp_mm_quant_fn q = c->impl->quant[J->type];
    for (int b = b0; b < b1; b++)
        q(J->xf + (size_t)b * J->n_in, J->n_in, off, c->xq + (size_t)b * J->xq_bs, c->xc + (size_t)b * J->xc_bs,
          c->xd + (size_t)b * J->xg_bs, c->xm + (size_t)b * J->xg_bs, J->xq_gs, J->xc_gs, J->xg_gs);
}

static void quant_task(void *ctx, int ith, int nth) {
    tp_matmul_ctx *c = ctx;
    int nb = c->job.nb;
    quantize_acts(c, nb * ith / nth, nb * (ith + 1) / nth);
}

static void matmul_task(void *ctx, int ith, int nth) {
    (void)nth;
    tp_matmul_ctx *c = ctx;
    float *scratch = c->scratch + (size_t)ith * c->max_n_in;
    for (;;) {
        int k = atomic_fetch_add_explicit(&c->next_chunk, 1, memory_order_relaxed);
        if (k >= c->n_chunks) break;
        int r0 = k * c->chunk_rows, r1 = r0 + c->chunk_rows;
        if (r1 > c->job.n_out) r1 = c->job.n_out;
        c->kernel(&c->job, r0, r1, scratch);
    }
}

void tp_matmul(tp_matmul_ctx *c, float *y, const float *x, int nb, const tp_weight *w) {
    const tp_mm_impl *impl = &g_impl[level_now()];
    uint32_t type = w->type;
    int n_in = w->n_in, n_out = w->n_out;
    size_t be = tp_dtype_block_elems(type);
    int kind = tp_mm_act_kind(type);
    int bad = type >= TP_MM_NTYPES || !tp_dtype_supported(type) || be == 0 || n_in % (int)be != 0 ||
              n_in > c->max_n_in || (kind != TP_ACT_F32 && n_in % 32 != 0) || !impl->kernel[type] ||
              (kind != TP_ACT_F32 && !impl->quant[type]);
    if (bad) {
        /* A caller bug (the loader checks types and shapes): make it visible. */
        for (size_t i = 0; i < (size_t)nb * (size_t)n_out; i++) y[i] = NAN;
        return;
    }
    c->impl = impl;
    c->kernel = impl->kernel[type];
    tp_mm_job *J = &c->job;
    J->w = w->data;
    J->row_bytes = tp_dtype_row_bytes(type, (size_t)n_in);
    J->type = type;
    J->n_in = n_in;
    J->n_out = n_out;
    J->xq = c->xq;
    J->xc = c->xc;
    J->xd = c->xd;
    J->xm = c->xm;
    const int layout = impl->layout[type];
    const size_t G = (size_t)(n_in / 32), Gp = (G + 15) / 16 * 16;

    /* Rows in chunks handed out dynamically: a few chunks per thread keep the
     * threads balanced, and each chunk is a long sequential stream. */
    int step = impl->row_step;
    int per = n_out / (c->n_threads * 6);
    if (per < 16) per = 16;
    per = (per + step - 1) / step * step;
    c->chunk_rows = per;
    c->n_chunks = (n_out + per - 1) / per;

    for (int b0 = 0; b0 < nb; b0 += TP_MATMUL_MAX_BATCH) {
        int nbc = nb - b0 < TP_MATMUL_MAX_BATCH ? nb - b0 : TP_MATMUL_MAX_BATCH;
        J->nb = nbc;
        J->xf = x + (size_t)b0 * n_in;
        J->y = y + (size_t)b0 * n_out;
        if (layout == TP_LAYOUT_GROUP_MAJOR) {
            J->xq_bs = 32, J->xq_gs = 32 * (size_t)nbc;
            J->xc_bs = 8, J->xc_gs = 8 * (size_t)nbc;
            J->xg_bs = 1, J->xg_gs = (size_t)nbc;
        } else {
            size_t gs = layout == TP_LAYOUT_T16 ? Gp : G;
            J->xq_bs = 32 * gs, J->xq_gs = 32;
            J->xc_bs = 8 * gs, J->xc_gs = 8;
            J->xg_bs = gs, J->xg_gs = 1;
        }
        if (kind != TP_ACT_F32) {
            if (nbc > 1 && c->n_threads > 1 && (size_t)nbc * (size_t)n_in >= 16384)
                tp_pool_run(c->pool, quant_task, c);
            else
                quantize_acts(c, 0, nbc);
        }
        atomic_store_explicit(&c->next_chunk, 0, memory_order_relaxed);
        tp_pool_run(c->pool, matmul_task, c);
    }
}

void tp_weight_row(const tp_weight *w, int row, float *out) {
    size_t rb = tp_dtype_row_bytes(w->type, (size_t)w->n_in);
    tp_dequantize_row(w->type, (const uint8_t *)w->data + (size_t)row * rb, out, (size_t)w->n_in);
}

/* ------------------------------------------------------------------------ */
/* builds without the x86 kernel files' ISAs                                 */
#if !defined(__x86_64__)
int tp_mm_fill_avx2(tp_mm_impl *impl) { (void)impl; return 0; }
int tp_mm_fill_avx512(tp_mm_impl *impl) { (void)impl; return 0; }
#endif
