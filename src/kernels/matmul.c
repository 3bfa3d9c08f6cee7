/* matmul.c: the batched matrix-vector product: dispatch, threading, the
 * activation quantizers, load-time repacking and the portable ("generic")
 * kernels.
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
 *
 * The generic kernels here define the arithmetic of every level (matmul.h):
 * the SIMD kernels compute each output with the same operations in the same
 * order, only many outputs at once, so all levels agree bit for bit. Integer
 * dot products are exact; every float operation is written out (fmaf, no
 * contraction: the build is ISO C, where GCC does not fuse a*b+c).
 */
#include "kernels/matmul.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif
#endif

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

/* Legacy weights are fed to the u8 x s8 instructions as value + offset >= 0.
 * Q6_K is the other way round: its activations are offset (by 128). */
int tp_mm_offset(uint32_t type) {
    switch (type) {
    case TP_Q8_0: return 128;
    case TP_Q4_0: return 8;
    case TP_Q5_0: return 16;
    case TP_Q6_K: return 128;
    default: return 0;
    }
}

static float round_f16(float v) { return tp_f16_to_f32(tp_f32_to_f16(v)); }

/* ------------------------------------------------------------------------ */
/* portable activation quantizers                                            */

/* float -> int as the x86 cvtps2dq + saturating pack do: nearest-even, NaN and
 * out-of-range -> -128 before saturation. For finite inputs |v| <= 127.00001. */
static inline int q8_round(float v) {
    if (!(fabsf(v) < 2147483648.0f)) return -128;
    long r = lrintf(v);
    return r > 127 ? 127 : r < -128 ? -128 : (int)r;
}

void tp_mm_quant_q8_generic(const float *x, int n, int offset, int8_t *q, size_t qs, float *d, int32_t *c, float *s,
                            int16_t *sums, size_t ds) {
    (void)sums;
    for (int g = 0; g < n / 32; g++) {
        const float *xs = x + 32 * g;
        int8_t *qg = q + (size_t)g * qs;
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(xs[j]));
        float dd = amax / 127.0f;
        float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        int sum = 0;
        for (int j = 0; j < 32; j++) {
            qg[j] = (int8_t)q8_round(xs[j] * id);
            sum += qg[j];
        }
        d[(size_t)g * ds] = round_f16(dd);
        c[(size_t)g * ds] = -offset * sum;
        s[(size_t)g * ds] = round_f16(dd * (float)sum);
    }
}

void tp_mm_quant_q8k_generic(const float *x, int n, int offset, int8_t *q, size_t qs, float *d, int32_t *c,
                             float *s, int16_t *sums, size_t ds) {
    (void)c, (void)s;
    for (int b = 0; b < n / 256; b++) {
        const float *xs = x + 256 * b;
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < 256; j++) {
            float ax = fabsf(xs[j]);
            if (ax > amax) { amax = ax; max = xs[j]; }
        }
        float dd = 0.0f, iscale = amax == 0.0f ? 0.0f : -127.0f / max;
        if (amax != 0.0f) dd = 1.0f / iscale;
        int8_t *qb = q + (size_t)b * qs;
        int16_t *sb = sums + 8 * (size_t)b * ds;
        for (int g = 0; g < 8; g++) {
            int sum = 0;
            for (int j = 0; j < 32; j++) {
                int v = q8_round(iscale * xs[32 * g + j]);
                v = v < 127 ? v : 127;
                sum += v;
                qb[32 * g + j] = (int8_t)(uint8_t)(v + offset); /* offset 0 or 128 */
            }
            sb[g] = (int16_t)sum;
        }
        d[(size_t)b * ds] = dd;
    }
}

/* ------------------------------------------------------------------------ */
/* portable kernels                                                          */

/* Legacy types: per block, the exact integer dot product, then
 * acc = fma((float)isum, d_w * d_x, acc); Q4_1/Q5_1: acc = fma(m_w, s_x, acc). */
static void kern_generic_legacy(const tp_mm_job *J, int r0, int r1, uint8_t *scratch) {
    (void)scratch;
    const int G = J->n_in / 32, nb = J->nb, off = tp_mm_offset(J->type);
    const int mins = J->type == TP_Q4_1 || J->type == TP_Q5_1;
    float acc[TP_MATMUL_MAX_BATCH];
    for (int r = r0; r < r1; r++) {
        memset(acc, 0, sizeof acc);
        for (int g = 0; g < G; g++) {
            uint8_t u[32];
            uint16_t dh, mh;
            tp_mm_row_block_u8(J, r, g, u, &dh, &mh);
            const float dw = tp_f16_to_f32(dh), mw = tp_f16_to_f32(mh);
            int v[32];
            for (int i = 0; i < 32; i++) v[i] = (int)u[i] - off;
            for (int t = 0; t < nb; t++) {
                const int8_t *xq = J->xq + ((size_t)g * nb + t) * 32;
                int isum = 0;
                for (int i = 0; i < 32; i++) isum += v[i] * xq[i];
                const float s = dw * J->xd[(size_t)g * nb + t];
                acc[t] = fmaf((float)isum, s, acc[t]);
                if (mins) acc[t] = fmaf(mw, J->xs[(size_t)g * nb + t], acc[t]);
            }
        }
        for (int t = 0; t < nb; t++) J->y[(size_t)t * J->n_out + r] = acc[t];
    }
}

/* One K-quant super-block: 256 values (Q4_K/Q5_K unsigned 0..31, Q6_K signed
 * -32..31), the integer scales of its 8 (Q6_K: 16) blocks, the 8 mins, d, dmin. */
typedef struct {
    int v[256];
    int sc[16], mn[8];
    float d, dmin;
} ksuper;

static void k4_scale_min(const uint8_t *q, int j, int *s, int *m) {
    if (j < 4) {
        *s = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *s = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

static void kdecode(uint32_t type, const uint8_t *row, int sb, ksuper *o) {
    if (type == TP_Q4_K || type == TP_Q5_K) {
        const int q5 = type == TP_Q5_K;
        const uint8_t *b = row + (size_t)sb * (q5 ? 176 : 144);
        o->d = tp_f16_to_f32(tp_mm_rd16(b));
        o->dmin = tp_f16_to_f32(tp_mm_rd16(b + 2));
        const uint8_t *qh = b + 16, *qs = b + (q5 ? 48 : 16);
        for (int j = 0; j < 8; j++) {
            k4_scale_min(b + 4, j, &o->sc[j], &o->mn[j]);
            for (int l = 0; l < 32; l++) {
                int v = (j & 1) ? qs[32 * (j / 2) + l] >> 4 : qs[32 * (j / 2) + l] & 0xF;
                if (q5) v |= ((qh[l] >> j) & 1) << 4;
                o->v[32 * j + l] = v;
            }
        }
    } else { /* Q6_K */
        const uint8_t *b = row + (size_t)sb * 210;
        o->d = tp_f16_to_f32(tp_mm_rd16(b + 208));
        o->dmin = 0.0f;
        for (int s = 0; s < 16; s++) o->sc[s] = ((const int8_t *)(b + 192))[s];
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = b + 64 * h, *qh = b + 128 + 32 * h;
            for (int l = 0; l < 32; l++) {
                int *y = o->v + 128 * h + l;
                y[0] = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                y[32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                y[64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                y[96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            }
        }
    }
}

/* K-quants: per super-block I = sum of scale * block dot (exact),
 * acc = fma((float)I, d_w*d_x, acc); Q4_K/Q5_K: M = sum of min * block sum,
 * acc = fma((float)M, -(dmin_w*d_x), acc). */
static void kern_generic_k(const tp_mm_job *J, int r0, int r1, uint8_t *scratch) {
    (void)scratch;
    const int NS = J->n_in / 256, nb = J->nb;
    const int q6 = J->type == TP_Q6_K;
    float acc[TP_MATMUL_MAX_BATCH];
    ksuper S;
    uint8_t blk[210];
    for (int r = r0; r < r1; r++) {
        memset(acc, 0, sizeof acc);
        for (int sb = 0; sb < NS; sb++) {
            kdecode(J->type, tp_mm_file_block(J, r, (size_t)sb, blk), 0, &S);
            for (int t = 0; t < nb; t++) {
                const int8_t *xq = J->xq + ((size_t)sb * nb + t) * 256;
                const float dx = J->xd[(size_t)sb * nb + t];
                int I = 0;
                if (q6) {
                    for (int s = 0; s < 16; s++) {
                        int dot = 0;
                        for (int i = 0; i < 16; i++) dot += S.v[16 * s + i] * ((int)(uint8_t)xq[16 * s + i] - 128);
                        I += S.sc[s] * dot;
                    }
                    acc[t] = fmaf((float)I, S.d * dx, acc[t]);
                } else {
                    const int16_t *xs = J->xsum + ((size_t)sb * nb + t) * 8;
                    int M = 0;
                    for (int g = 0; g < 8; g++) {
                        int dot = 0;
                        for (int i = 0; i < 32; i++) dot += S.v[32 * g + i] * xq[32 * g + i];
                        I += S.sc[g] * dot;
                        M += S.mn[g] * xs[g];
                    }
                    acc[t] = fmaf((float)I, S.d * dx, acc[t]);
                    acc[t] = fmaf((float)M, -(S.dmin * dx), acc[t]);
                }
            }
        }
        for (int t = 0; t < nb; t++) J->y[(size_t)t * J->n_out + r] = acc[t];
    }
}

/* The float order: 16 lanes of fused multiply-adds, the pairwise tree, the tail. */
static float tree16(const float l[16]) {
    float s8[8], s4[4];
    for (int i = 0; i < 8; i++) s8[i] = l[i] + l[i + 8];
    for (int i = 0; i < 4; i++) s4[i] = s8[i] + s8[i + 4];
    return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}

static float dot_generic(const float *w, const float *x, int n) {
    float l[16] = { 0 };
    const int n16 = n & ~15;
    for (int k = 0; k < n16; k += 16)
        for (int i = 0; i < 16; i++) l[i] = fmaf(w[k + i], x[k + i], l[i]);
    float s = tree16(l);
    for (int k = n16; k < n; k++) s = fmaf(w[k], x[k], s);
    return s;
}

/* F32/F16/BF16 and the types without an integer kernel (Q2_K, Q3_K): the row
 * as f32 (exact for F16/BF16) times the f32 inputs. */
static void kern_generic_float(const tp_mm_job *J, int r0, int r1, uint8_t *scratch) {
    float *wrow = (float *)(void *)scratch;
    uint8_t *rowbuf = scratch + (size_t)J->n_in * sizeof(float);
    for (int r = r0; r < r1; r++) {
        const uint8_t *row = J->w + (size_t)r * J->row_bytes;
        if (J->layout == TP_WL_R4 && r < J->n_out / 4 * 4) { /* gather the row from its tile */
            const size_t es = J->row_bytes / (size_t)J->n_in;
            const uint8_t *tile = J->w + (size_t)(r & ~3) * J->row_bytes;
            for (int k = 0; k < J->n_in; k++) memcpy(rowbuf + (size_t)k * es, tile + tp_r4_elem(J->n_in, r & 3, k) * es, es);
            row = rowbuf;
        }
        const float *wf;
        if (J->type == TP_F32 && ((uintptr_t)row & 3) == 0) {
            wf = (const float *)(const void *)row;
        } else {
            tp_dequantize_row(J->type, row, wrow, (size_t)J->n_in);
            wf = wrow;
        }
        for (int t = 0; t < J->nb; t++)
            J->y[(size_t)t * J->n_out + r] = dot_generic(wf, J->xf + (size_t)t * J->n_in, J->n_in);
    }
}

/* ------------------------------------------------------------------------ */
/* dispatch                                                                  */

size_t tp_mm_pf_dist = 8192;

static tp_mm_impl g_impl[TP_SIMD_N];
static int g_avail[TP_SIMD_N];
static int g_best;
static atomic_int g_level = -1;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static const char *const k_level_names[TP_SIMD_N] = { "generic", "avx2", "avx512" };

static int level_by_name(const char *name) {
    if (!name) return -1;
    if (strcmp(name, "scalar") == 0) return TP_SIMD_GENERIC; /* the old name */
    for (int l = 0; l < TP_SIMD_N; l++)
        if (strcmp(name, k_level_names[l]) == 0) return l;
    return -1;
}

/* F16C straight from CPUID leaf 1 (ECX bit 29): clang 14's
 * __builtin_cpu_supports does not know the name. */
static int cpu_has_f16c(void) {
#if defined(__x86_64__)
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
#else
    return 0;
#endif
}

static int cpu_has_avx2(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("avx") && cpu_has_f16c();
#else
    return 0;
#endif
}

/* AVX-512 level: F/BW/VL for the byte and mask operations, VNNI for the
 * 4-way u8 x s8 dot product. */
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
    tp_mm_impl *s = &g_impl[TP_SIMD_GENERIC];
    for (int t = 0; t < TP_MM_NTYPES; t++) {
        int kind = tp_mm_act_kind((uint32_t)t);
        s->kernel[t] = kind == TP_ACT_F32 ? kern_generic_float : kind == TP_ACT_Q8 ? kern_generic_legacy : kern_generic_k;
    }
    s->quant[TP_ACT_Q8] = tp_mm_quant_q8_generic;
    s->quant[TP_ACT_Q8K] = tp_mm_quant_q8k_generic;
    g_avail[TP_SIMD_GENERIC] = 1;
    if (cpu_has_avx2() && tp_mm_fill_avx2(&g_impl[TP_SIMD_AVX2])) g_avail[TP_SIMD_AVX2] = 1;
    if (g_avail[TP_SIMD_AVX2] && cpu_has_avx512() && tp_mm_fill_avx512(&g_impl[TP_SIMD_AVX512]))
        g_avail[TP_SIMD_AVX512] = 1;
    /* TEMPO_SIMD caps the levels: the process then behaves as on a CPU
     * without the higher ones (tests of an AVX2-only machine on AVX-512). */
    const char *pf = getenv("TEMPO_PF_DIST"); /* tuning on other machines (matmul_internal.h) */
    if (pf && atoi(pf) > 0) tp_mm_pf_dist = (size_t)atoi(pf);
    const char *env = getenv("TEMPO_SIMD");
    int cap = level_by_name(env && *env ? env : NULL);
    if (cap >= 0)
        for (int l = cap + 1; l < TP_SIMD_N; l++) g_avail[l] = 0;
    g_best = TP_SIMD_GENERIC;
    for (int l = 0; l < TP_SIMD_N; l++)
        if (g_avail[l]) g_best = l;
    /* Lower levels fill the gaps of higher ones. */
    for (int l = 1; l < TP_SIMD_N; l++) {
        if (!g_avail[l]) continue;
        tp_mm_impl *hi = &g_impl[l], *lo = &g_impl[l - 1];
        for (int t = 0; t < TP_MM_NTYPES; t++)
            if (!hi->kernel[t]) hi->kernel[t] = lo->kernel[t];
        for (int k = 0; k < 3; k++)
            if (!hi->quant[k]) hi->quant[k] = lo->quant[k];
    }
    atomic_store(&g_level, g_best);
}

static int level_now(void) {
    pthread_once(&g_once, init_once);
    return atomic_load_explicit(&g_level, memory_order_relaxed);
}

const char *tp_simd_level(void) { return k_level_names[level_now()]; }
int tp_simd_level_id(void) { return level_now(); }

int tp_simd_available(const char *name) {
    level_now();
    int l = level_by_name(name);
    return l >= 0 && g_avail[l];
}

int tp_matmul_set_simd(const char *name) {
    level_now();
    if (!name) {
        atomic_store(&g_level, g_best);
        return 0;
    }
    int l = level_by_name(name);
    if (l < 0 || !g_avail[l]) return -1;
    atomic_store(&g_level, l);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* context and threading                                                     */

struct tp_matmul_ctx {
    tp_pool *pool;
    int max_n_in; /* rounded up to 512 */
    int n_threads;
    int8_t *xq;
    float *xd, *xs;
    int32_t *xc;
    int16_t *xsum;
    uint8_t *scratch; /* n_threads x scratch_bytes */
    size_t scratch_bytes;
    size_t bytes;

    /* the products being computed (valid during a pool run): one job per matrix of a group
     * (they share the quantized input), job i's 16-row tiles numbered from first_tile[i] */
    tp_mm_job job[TP_MATMUL_MAX_GROUP];
    int n_jobs;
    int first_tile[TP_MATMUL_MAX_GROUP + 1];
    const tp_mm_impl *impl;
    tp_mm_kernel kernel;
    int kind;
    int chunk_tiles, n_tiles; /* the largest chunk; all tiles */
    _Alignas(64) atomic_int next_tile;
};

/* The context's buffer sizes, shared by tp_matmul_ctx_new and the estimate. */
/* The context's buffer sizes (max_n_in rounded up to 512), shared by
 * tp_matmul_ctx_new and the estimate: quantized activations, three per-group
 * arrays (scale, correction, Q8_1 sum), the int16 group sums, and per thread
 * a scratch (a tile built on the fly, a dequantized row). */
static void ctx_sizes(int n_threads, int max_n_in, size_t *sz_q, size_t *sz_g, size_t *sz_sum, size_t *scratch_bytes,
                      size_t *sz_s) {
    size_t n = (size_t)TP_MATMUL_MAX_BATCH * (size_t)max_n_in, G = n / 32;
    *sz_q = n;
    *sz_g = G * sizeof(float);
    *sz_sum = G * sizeof(int16_t);
    *scratch_bytes = (TP_MM_SCRATCH(max_n_in) + 63) / 64 * 64;
    *sz_s = (size_t)(n_threads > 0 ? n_threads : 1) * *scratch_bytes;
}

size_t tp_matmul_ctx_estimate_bytes(int n_threads, int max_n_in) {
    if (max_n_in < 1) max_n_in = 1;
    max_n_in = (max_n_in + 511) / 512 * 512;
    size_t sz_q, sz_g, sz_sum, sb, sz_s;
    ctx_sizes(n_threads, max_n_in, &sz_q, &sz_g, &sz_sum, &sb, &sz_s);
    return sizeof(tp_matmul_ctx) + sz_q + 3 * sz_g + sz_sum + sz_s;
}

tp_matmul_ctx *tp_matmul_ctx_new(tp_pool *pool, int max_n_in) {
    if (max_n_in < 1) max_n_in = 1;
    tp_matmul_ctx *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->pool = pool;
    c->n_threads = tp_pool_threads(pool);
    c->max_n_in = (max_n_in + 511) / 512 * 512;
    size_t sz_q, sz_g, sz_sum, sz_s;
    ctx_sizes(c->n_threads, c->max_n_in, &sz_q, &sz_g, &sz_sum, &c->scratch_bytes, &sz_s);
    c->xq = tp_alloc_aligned(sz_q);
    c->xd = tp_alloc_aligned(sz_g);
    c->xs = tp_alloc_aligned(sz_g);
    c->xc = tp_alloc_aligned(sz_g);
    c->xsum = tp_alloc_aligned(sz_sum);
    c->scratch = tp_alloc_aligned(sz_s);
    c->bytes = sizeof *c + sz_q + 3 * sz_g + sz_sum + sz_s;
    if (!c->xq || !c->xd || !c->xs || !c->xc || !c->xsum || !c->scratch) {
        tp_matmul_ctx_free(c);
        return NULL;
    }
    atomic_init(&c->next_tile, 0);
    level_now();
    return c;
}

void tp_matmul_ctx_free(tp_matmul_ctx *c) {
    if (!c) return;
    tp_free_aligned(c->xq);
    tp_free_aligned(c->xd);
    tp_free_aligned(c->xs);
    tp_free_aligned(c->xc);
    tp_free_aligned(c->xsum);
    tp_free_aligned(c->scratch);
    free(c);
}

size_t tp_matmul_ctx_bytes(const tp_matmul_ctx *c) { return c ? c->bytes : 0; }

static void quantize_acts(const tp_matmul_ctx *c, int b0, int b1) {
    const tp_mm_job *J = &c->job[0];
    const int off = tp_mm_offset(J->type), nb = J->nb;
    const size_t QB = c->kind == TP_ACT_Q8K ? 256 : 32;
    tp_mm_quant_fn q = c->impl->quant[c->kind];
    for (int b = b0; b < b1; b++)
        q(J->xf + (size_t)b * J->n_in, J->n_in, c->kind == TP_ACT_Q8K && J->type != TP_Q6_K ? 0 : off,
          c->xq + (size_t)b * QB, QB * (size_t)nb, c->xd + b, c->xc + b, c->xs + b, c->xsum + 8 * (size_t)b,
          (size_t)nb);
}

static void quant_task(void *ctx, int ith, int nth) {
    tp_matmul_ctx *c = ctx;
    int nb = c->job[0].nb;
    quantize_acts(c, nb * ith / nth, nb * (ith + 1) / nth);
}

/* Chunks of tiles from a shared counter ("guided"): at most chunk_tiles, and past the last
 * ~third of the tiles a chunk is a share of what is left (left / (2 * nth)), down to one tile, so
 * that the threads finish together instead of one waiting out another's last long chunk (at 64
 * tokens a chunk of 16-row tiles is ~0.4 ms). A chunk never crosses from one matrix to the next. */
static void matmul_task(void *ctx, int ith, int nth) {
    tp_matmul_ctx *c = ctx;
    uint8_t *scratch = c->scratch + (size_t)ith * c->scratch_bytes;
    int i = 0; /* the job of the last chunk: a thread's chunks come in increasing order */
    for (;;) {
        int t0 = atomic_load_explicit(&c->next_tile, memory_order_relaxed), size;
        do {
            if (t0 >= c->n_tiles) return;
            while (t0 >= c->first_tile[i + 1]) i++;
            size = (c->n_tiles - t0) / (2 * nth);
            if (size > c->chunk_tiles) size = c->chunk_tiles;
            if (size < 1) size = 1;
            if (size > c->first_tile[i + 1] - t0) size = c->first_tile[i + 1] - t0;
        } while (!atomic_compare_exchange_weak_explicit(&c->next_tile, &t0, t0 + size, memory_order_relaxed,
                                                        memory_order_relaxed));
        const tp_mm_job *J = &c->job[i];
        int r0 = (t0 - c->first_tile[i]) * 16, r1 = r0 + size * 16;
        if (r1 > J->n_out) r1 = J->n_out;
        c->kernel(J, r0, r1, scratch);
    }
}

/* Can this build's level compute w? (A caller bug otherwise: the loader checks types and shapes.) */
static bool computable(const tp_matmul_ctx *c, const tp_mm_impl *impl, const tp_weight *w) {
    uint32_t type = w->type;
    size_t be = tp_dtype_block_elems(type);
    int kind = tp_mm_act_kind(type);
    return !(type >= TP_MM_NTYPES || !tp_dtype_supported(type) || be == 0 || w->n_in % (int)be != 0 ||
             w->n_in > c->max_n_in || !impl->kernel[type] || (kind != TP_ACT_F32 && !impl->quant[kind]) ||
             (w->layout == TP_WL_R16 && tp_r16_block_bytes(type) == 0) ||
             (w->layout == TP_WL_R4 && !tp_mm_is_float(type)) || w->layout > TP_WL_R4);
}

/* The products of x with w[0..n), which share type and input length: the input quantized
 * once per batch of TP_MATMUL_MAX_BATCH, the rows of all of them in one pool run. */
static void matmul_same(tp_matmul_ctx *c, const tp_mm_impl *impl, float *const *y, const float *x, int nb,
                        const tp_weight *const *w, int n) {
    uint32_t type = w[0]->type;
    int n_in = w[0]->n_in, kind = tp_mm_act_kind(type);
    c->impl = impl;
    c->kernel = impl->kernel[type];
    c->kind = kind;
    c->n_jobs = n;

    /* Rows in chunks of whole 16-row tiles, handed out dynamically: a few
     * chunks per thread keep the threads balanced (a thread the OS
     * preempts holds up one chunk, not a fixed share), and each chunk is a
     * long sequential stream. */
    int tiles = 0;
    for (int i = 0; i < n; i++) tiles += (w[i]->n_out + 15) / 16;
    int per = tiles / (c->n_threads * 6);
    if (per < 1) per = 1;
    c->chunk_tiles = per;
    c->first_tile[0] = 0;
    for (int i = 0; i < n; i++) {
        tp_mm_job *J = &c->job[i];
        J->w = w[i]->data;
        J->row_bytes = tp_dtype_row_bytes(type, (size_t)n_in);
        J->type = type;
        J->layout = w[i]->layout;
        J->n_in = n_in;
        J->n_out = w[i]->n_out;
        J->xq = c->xq;
        J->xd = c->xd;
        J->xc = c->xc;
        J->xs = c->xs;
        J->xsum = c->xsum;
        c->first_tile[i + 1] = c->first_tile[i] + (w[i]->n_out + 15) / 16;
    }
    c->n_tiles = c->first_tile[n];

    for (int b0 = 0; b0 < nb; b0 += TP_MATMUL_MAX_BATCH) {
        int nbc = nb - b0 < TP_MATMUL_MAX_BATCH ? nb - b0 : TP_MATMUL_MAX_BATCH;
        for (int i = 0; i < n; i++) {
            c->job[i].nb = nbc;
            c->job[i].xf = x + (size_t)b0 * n_in;
            c->job[i].y = y[i] + (size_t)b0 * c->job[i].n_out;
        }
        if (kind != TP_ACT_F32) {
            if (nbc > 1 && c->n_threads > 1 && (size_t)nbc * (size_t)n_in >= 16384)
                tp_pool_run(c->pool, quant_task, c);
            else
                quantize_acts(c, 0, nbc);
        }
        atomic_store_explicit(&c->next_tile, 0, memory_order_relaxed);
        if (c->n_tiles <= c->chunk_tiles) matmul_task(c, 0, 1); /* one chunk: no need to wake anyone */
        else tp_pool_run(c->pool, matmul_task, c);
    }
}

void tp_matmul(tp_matmul_ctx *c, float *y, const float *x, int nb, const tp_weight *w) {
    tp_matmul_group(c, &y, x, nb, &w, 1);
}

void tp_matmul_group(tp_matmul_ctx *c, float *const *y, const float *x, int nb, const tp_weight *const *w, int n) {
    const tp_mm_impl *impl = &g_impl[level_now()];
    bool same = n >= 1 && n <= TP_MATMUL_MAX_GROUP;
    for (int i = 0; i < n && same; i++)
        same = computable(c, impl, w[i]) && w[i]->type == w[0]->type && w[i]->n_in == w[0]->n_in;
    if (same) {
        matmul_same(c, impl, y, x, nb, w, n);
        return;
    }
    for (int i = 0; i < n; i++) {
        if (!computable(c, impl, w[i])) {
            /* A caller bug (the loader checks types and shapes): make it visible. */
            for (size_t e = 0; e < (size_t)nb * (size_t)w[i]->n_out; e++) y[i][e] = NAN;
            continue;
        }
        matmul_same(c, impl, &y[i], x, nb, &w[i], 1);
    }
}

/* ------------------------------------------------------------------------ */
/* load-time repacking                                                       */

/* The fields of each type's block, in tile order (matmul_internal.h). */
typedef struct {
    uint8_t off, size, unit, xor80;
} r16_field;

static int r16_fields(uint32_t type, const r16_field **f) {
    static const r16_field q4_0[] = { { 0, 2, 2, 0 }, { 2, 16, 4, 0 } };
    static const r16_field q8_0[] = { { 0, 2, 2, 0 }, { 2, 32, 4, 1 } };
    static const r16_field q4_k[] = { { 0, 4, 4, 0 }, { 4, 12, 1, 0 }, { 16, 128, 4, 0 } };
    static const r16_field q5_k[] = { { 0, 4, 4, 0 }, { 4, 12, 1, 0 }, { 16, 32, 4, 0 }, { 48, 128, 4, 0 } };
    static const r16_field q6_k[] = { { 0, 128, 4, 0 }, { 128, 64, 4, 0 }, { 192, 16, 1, 0 }, { 208, 2, 2, 0 } };
    switch (type) {
    case TP_Q4_0: *f = q4_0; return 2;
    case TP_Q8_0: *f = q8_0; return 2;
    case TP_Q4_K: *f = q4_k; return 3;
    case TP_Q5_K: *f = q5_k; return 4;
    case TP_Q6_K: *f = q6_k; return 4;
    default: *f = NULL; return 0;
    }
}

size_t tp_r16_block_bytes(uint32_t type) {
    const r16_field *f;
    return r16_fields(type, &f) ? 16 * tp_dtype_block_bytes(type) : 0;
}

void tp_r16_pack(uint32_t type, const uint8_t *src, size_t src_stride, int nrows, size_t nblk, uint8_t *dst) {
    const r16_field *f;
    const int nf = r16_fields(type, &f);
    const size_t bb = tp_dtype_block_bytes(type), tb = 16 * bb;
    for (size_t b = 0; b < nblk; b++) {
        uint8_t *o = dst + b * tb;
        for (int fi = 0; fi < nf; fi++) {
            const size_t u = f[fi].unit;
            for (size_t k = 0; k < f[fi].size / u; k++)
                for (int r = 0; r < 16; r++) {
                    uint8_t *d = o + u * (16 * k + (size_t)r);
                    if (r < nrows) {
                        memcpy(d, src + (size_t)r * src_stride + b * bb + f[fi].off + u * k, u);
                        if (f[fi].xor80)
                            for (size_t e = 0; e < u; e++) d[e] ^= 0x80;
                    } else {
                        memset(d, 0, u);
                    }
                }
            o += 16 * (size_t)f[fi].size;
        }
    }
}

void tp_r16_unpack_block(uint32_t type, const uint8_t *tile, int lane, size_t blk, uint8_t *out) {
    const r16_field *f;
    const int nf = r16_fields(type, &f);
    const uint8_t *t = tile + blk * 16 * tp_dtype_block_bytes(type);
    for (int fi = 0; fi < nf; fi++) {
        const size_t u = f[fi].unit;
        for (size_t k = 0; k < f[fi].size / u; k++) {
            uint8_t *d = out + f[fi].off + u * k;
            memcpy(d, t + u * (16 * k + (size_t)lane), u);
            if (f[fi].xor80)
                for (size_t e = 0; e < u; e++) d[e] ^= 0x80;
        }
        t += 16 * (size_t)f[fi].size;
    }
}

int tp_weight_repackable(const tp_weight *w) {
    size_t be = tp_dtype_block_elems(w->type);
    if (w->layout != TP_WL_ROWS || w->n_in <= 0) return 0;
    if (tp_mm_is_float(w->type)) return w->n_out >= 4;
    return tp_r16_block_bytes(w->type) > 0 && w->n_out >= 16 && w->n_in % (int)be == 0;
}

int tp_weight_repack(tp_weight *w) {
    if (!tp_weight_repackable(w)) return 0;
    const size_t rb = tp_dtype_row_bytes(w->type, (size_t)w->n_in);
    uint8_t *tmp = malloc(16 * rb);
    if (!tmp) return 0;
    uint8_t *base = (uint8_t *)(uintptr_t)w->data; /* the caller made it writable */
    if (tp_mm_is_float(w->type)) {
        const size_t es = rb / (size_t)w->n_in;
        for (int t = 0; t < w->n_out / 4; t++) {
            uint8_t *tile = base + (size_t)t * 4 * rb;
            memcpy(tmp, tile, 4 * rb);
            for (int j = 0; j < 4; j++)
                for (int k0 = 0; k0 < w->n_in; k0 += 16) {
                    int n = w->n_in - k0 < 16 ? w->n_in - k0 : 16;
                    memcpy(tile + tp_r4_elem(w->n_in, j, k0) * es, tmp + (size_t)j * rb + (size_t)k0 * es, (size_t)n * es);
                }
        }
        free(tmp);
        w->layout = TP_WL_R4;
        return 1;
    }
    for (int t = 0; t < w->n_out / 16; t++) {
        uint8_t *tile = base + (size_t)t * 16 * rb;
        memcpy(tmp, tile, 16 * rb);
        tp_r16_pack(w->type, tmp, rb, 16, rb / tp_dtype_block_bytes(w->type), tile);
    }
    free(tmp);
    w->layout = TP_WL_R16;
    return 1;
}

void tp_weights_repack(tp_weight *const *ws, int n) {
    for (int i = 0; i < n; i++) {
        int shared = 0;
        for (int j = 0; j < i && !shared; j++)
            if (ws[j]->data == ws[i]->data && ws[j]->type == ws[i]->type) {
                ws[i]->layout = ws[j]->layout;
                shared = 1;
            }
        if (!shared) tp_weight_repack(ws[i]);
    }
}

size_t tp_weights_to_hugepages(void *base, size_t len) {
#if defined(__linux__) && defined(MREMAP_FIXED)
    const uintptr_t A = (uintptr_t)2 << 20;
    uintptr_t b = ((uintptr_t)base + A - 1) & ~(A - 1), e = ((uintptr_t)base + len) & ~(A - 1);
    size_t moved = 0;
    for (uintptr_t c = b; c + A <= e; c += A) {
        /* a 2 MiB-aligned anonymous chunk (from a 4 MiB reservation) */
        uint8_t *r = mmap(NULL, 2 * A, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (r == MAP_FAILED) break;
        uint8_t *a = (uint8_t *)(((uintptr_t)r + A - 1) & ~(A - 1));
        if (a > r) munmap(r, (size_t)(a - r));
        if (r + 2 * A > a + A) munmap(a + A, (size_t)(r + 2 * A - (a + A)));
        madvise(a, A, MADV_HUGEPAGE);
        memcpy(a, (const void *)c, A);
        /* put it where the file's pages were; those leave the process */
        if (mremap(a, A, A, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)c) == MAP_FAILED) {
            munmap(a, A);
            break;
        }
        moved += A;
    }
    return moved;
#else
    (void)base, (void)len;
    return 0;
#endif
}

void tp_weight_row(const tp_weight *w, int row, float *out) {
    size_t rb = tp_dtype_row_bytes(w->type, (size_t)w->n_in);
    if (w->layout == TP_WL_R16 && row < w->n_out / 16 * 16) {
        /* rebuild the file's blocks, then dequantize them as stored */
        const size_t bb = tp_dtype_block_bytes(w->type), be = tp_dtype_block_elems(w->type);
        const uint8_t *tile = (const uint8_t *)w->data + (size_t)(row >> 4) * 16 * rb;
        uint8_t buf[256 * 34 / 32 * 8];
        const size_t per = sizeof buf / bb; /* blocks per call */
        for (size_t b0 = 0; b0 < rb / bb; b0 += per) {
            size_t n = rb / bb - b0 < per ? rb / bb - b0 : per;
            for (size_t b = 0; b < n; b++) tp_r16_unpack_block(w->type, tile, row & 15, b0 + b, buf + b * bb);
            tp_dequantize_row(w->type, buf, out + b0 * be, n * be);
        }
        return;
    }
    if (w->layout == TP_WL_R4 && row < w->n_out / 4 * 4) {
        const size_t es = rb / (size_t)w->n_in;
        const uint8_t *tile = (const uint8_t *)w->data + (size_t)(row & ~3) * rb;
        for (int k0 = 0; k0 < w->n_in; k0 += 16) {
            int n = w->n_in - k0 < 16 ? w->n_in - k0 : 16;
            tp_dequantize_row(w->type, tile + tp_r4_elem(w->n_in, row & 3, k0) * es, out + k0, (size_t)n);
        }
        return;
    }
    tp_dequantize_row(w->type, (const uint8_t *)w->data + (size_t)row * rb, out, (size_t)w->n_in);
}

/* ------------------------------------------------------------------------ */
/* builds without the x86 kernel files' ISAs                                 */
#if !defined(__x86_64__)
int tp_mm_fill_avx2(tp_mm_impl *impl) { (void)impl; return 0; }
int tp_mm_fill_avx512(tp_mm_impl *impl) { (void)impl; return 0; }
#endif
