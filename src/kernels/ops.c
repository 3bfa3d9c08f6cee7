/* ops.c: the small per-vector operations, computed as ggml's CPU backend
 * computes them so that our activations track llama.cpp's:
 *  - rmsnorm: squares in float, summed in double; mean and 1/sqrt in float;
 *    out = (x * scale) * w (ggml_rms_norm followed by ggml_mul).
 *  - softmax: max-subtracted exp in float, sum in double, scaled by
 *    (float)(1/sum).
 *  - swiglu: silu(a) * b with silu(v) = v / (1 + exp(-v)).
 * exp is tp_expf (below), whose 8- and 16-lane forms give its bits; dot and
 * axpy: below too. Every operation here gives the same bits on every CPU.
 */
#include "kernels/ops.h"

#include <math.h>
#include <string.h>

#include "kernels/matmul.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* ---- exp ----
 * libm's expf is one call per value; softmax over a 128K vocabulary and
 * SwiGLU over every FFN activation call it millions of times a step. tp_expf
 * computes e^x in double and rounds once to float, so it is the correctly
 * rounded value but for inputs within ~1e-5 ulp of a rounding boundary (libm's
 * expf is within 0.502 ulp too: the two agree on virtually every input); its
 * 8- and 16-lane forms below compute the very same bits:
 *   x clamped to [-104, 89] (beyond: 0 and +inf after the rounding; NaN stays);
 *   n = nearest(x / ln 2), by adding 1.5 * 2^52 (n is then the low bits);
 *   r = x - n ln 2, ln 2 in two parts (n * EXP_LN2_HI is exact), |r| <= 0.35;
 *   e^r by its Taylor series to r^11 (Horner, FMA; the rest < 1e-14);
 *   times 2^n, built in the exponent bits; then one rounding to float. */
#define EXP_LOG2E 1.4426950408889634
#define EXP_SHIFT 6755399441055744.0 /* 1.5 * 2^52 */
#define EXP_LN2_HI 0x1.62e42fefa3800p-1
#define EXP_LN2_LO 0x1.ef35793c76730p-45
#define EXP_BIAS 0x4338000000000000LL /* the bits of EXP_SHIFT */

static const double k_exp_taylor[12] = { /* 1/k!, k = 11 .. 0 */
    1.0 / 39916800, 1.0 / 3628800, 1.0 / 362880, 1.0 / 40320, 1.0 / 5040, 1.0 / 720,
    1.0 / 120,      1.0 / 24,      1.0 / 6,      1.0 / 2,     1.0,        1.0,
};

float tp_expf(float x) {
    if (x != x) return x + x;
    const double xd = x < -104.0f ? -104.0 : x > 89.0f ? 89.0 : (double)x;
    const double t = fma(xd, EXP_LOG2E, EXP_SHIFT);
    const double n = t - EXP_SHIFT;
    double r = fma(n, -EXP_LN2_HI, xd);
    r = fma(n, -EXP_LN2_LO, r);
    double p = k_exp_taylor[0];
    for (int k = 1; k < 12; k++) p = fma(p, r, k_exp_taylor[k]);
    int64_t tb;
    memcpy(&tb, &t, 8);
    const uint64_t sb = (uint64_t)(tb - EXP_BIAS + 1023) << 52; /* 2^n */
    double scale;
    memcpy(&scale, &sb, 8);
    return (float)(p * scale);
}

#if defined(__x86_64__)
/* 4 lanes of tp_expf's double part (x already clamped). */
__attribute__((target("avx2,fma"))) static inline __m128 exp4(__m128 xf) {
    const __m256d x = _mm256_cvtps_pd(xf);
    const __m256d t = _mm256_fmadd_pd(x, _mm256_set1_pd(EXP_LOG2E), _mm256_set1_pd(EXP_SHIFT));
    const __m256d n = _mm256_sub_pd(t, _mm256_set1_pd(EXP_SHIFT));
    __m256d r = _mm256_fmadd_pd(n, _mm256_set1_pd(-EXP_LN2_HI), x);
    r = _mm256_fmadd_pd(n, _mm256_set1_pd(-EXP_LN2_LO), r);
    __m256d p = _mm256_set1_pd(k_exp_taylor[0]);
    for (int k = 1; k < 12; k++) p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(k_exp_taylor[k]));
    const __m256i sb = _mm256_slli_epi64(_mm256_add_epi64(_mm256_castpd_si256(t), _mm256_set1_epi64x(1023 - EXP_BIAS)), 52);
    return _mm256_cvtpd_ps(_mm256_mul_pd(p, _mm256_castsi256_pd(sb)));
}

/* 8 lanes of tp_expf. The clamps keep a NaN (max/min return their second operand then). */
__attribute__((target("avx2,fma"))) static inline __m256 exp8(__m256 x) {
    x = _mm256_min_ps(_mm256_set1_ps(89.0f), _mm256_max_ps(_mm256_set1_ps(-104.0f), x));
    return _mm256_set_m128(exp4(_mm256_extractf128_ps(x, 1)), exp4(_mm256_castps256_ps128(x)));
}

/* 8 lanes of tp_expf's double part (x already clamped). */
__attribute__((target("avx512f"))) static inline __m256 exp8d(__m256 xf) {
    const __m512d x = _mm512_cvtps_pd(xf);
    const __m512d t = _mm512_fmadd_pd(x, _mm512_set1_pd(EXP_LOG2E), _mm512_set1_pd(EXP_SHIFT));
    const __m512d n = _mm512_sub_pd(t, _mm512_set1_pd(EXP_SHIFT));
    __m512d r = _mm512_fmadd_pd(n, _mm512_set1_pd(-EXP_LN2_HI), x);
    r = _mm512_fmadd_pd(n, _mm512_set1_pd(-EXP_LN2_LO), r);
    __m512d p = _mm512_set1_pd(k_exp_taylor[0]);
    for (int k = 1; k < 12; k++) p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(k_exp_taylor[k]));
    const __m512i sb = _mm512_slli_epi64(_mm512_add_epi64(_mm512_castpd_si512(t), _mm512_set1_epi64(1023 - EXP_BIAS)), 52);
    return _mm512_cvtpd_ps(_mm512_mul_pd(p, _mm512_castsi512_pd(sb)));
}

/* 16 lanes of tp_expf. */
__attribute__((target("avx512f"))) static inline __m512 exp16(__m512 x) {
    x = _mm512_min_ps(_mm512_set1_ps(89.0f), _mm512_max_ps(_mm512_set1_ps(-104.0f), x));
    const __m256 lo = exp8d(_mm512_castps512_ps256(x));
    const __m256 hi = exp8d(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
    return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(lo)), _mm256_castps_pd(hi), 1));
}

__attribute__((target("avx2,fma"))) static void exp_sub_avx2(float *y, const float *x, float sub, int n) {
    const __m256 s = _mm256_set1_ps(sub);
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), s)));
    if (i < n) { /* the tail in one padded vector: the same bits as tp_expf, without its libm fma calls */
        float t[8] = { 0 };
        memcpy(t, x + i, sizeof(float) * (size_t)(n - i));
        _mm256_storeu_ps(t, exp8(_mm256_sub_ps(_mm256_loadu_ps(t), s)));
        memcpy(y + i, t, sizeof(float) * (size_t)(n - i));
    }
}

__attribute__((target("avx512f"))) static void exp_sub_avx512(float *y, const float *x, float sub, int n) {
    const __m512 s = _mm512_set1_ps(sub);
    int i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), s)));
    if (i < n) { /* the tail in one masked vector */
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(y + i, m, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), s)));
    }
}

/* silu(v) * b = v / (1 + exp(-v)) * b, in that order */
__attribute__((target("avx2,fma"))) static void swiglu_avx2(float *a, const float *b, int n) {
    const __m256 one = _mm256_set1_ps(1.0f), neg = _mm256_set1_ps(-0.0f);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(a + i);
        const __m256 e = exp8(_mm256_xor_ps(v, neg));
        _mm256_storeu_ps(a + i, _mm256_mul_ps(_mm256_div_ps(v, _mm256_add_ps(one, e)), _mm256_loadu_ps(b + i)));
    }
    for (; i < n; i++) a[i] = a[i] / (1.0f + tp_expf(-a[i])) * b[i];
}

__attribute__((target("avx512f"))) static void swiglu_avx512(float *a, const float *b, int n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 v = _mm512_loadu_ps(a + i);
        const __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), v));
        _mm512_storeu_ps(a + i, _mm512_mul_ps(_mm512_div_ps(v, _mm512_add_ps(one, e)), _mm512_loadu_ps(b + i)));
    }
    for (; i < n; i++) a[i] = a[i] / (1.0f + tp_expf(-a[i])) * b[i];
}
#endif

#if defined(__x86_64__)
/* The lanes exp runs in: those of the level the matmul dispatcher picked (TEMPO_SIMD caps both),
 * so that a generic run tests the scalar form. */
static int exp_lanes(void) {
    const int level = tp_simd_level_id();
    return level == 2 ? 16 : level == 1 ? 8 : 1;
}
#endif

void tp_expf_sub(float *y, const float *x, float sub, int n) {
#if defined(__x86_64__)
    const int lanes = exp_lanes();
    if (lanes == 16) { exp_sub_avx512(y, x, sub, n); return; }
    if (lanes == 8) { exp_sub_avx2(y, x, sub, n); return; }
#endif
    for (int i = 0; i < n; i++) y[i] = tp_expf(x[i] - sub);
}

void tp_rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    double s[4] = { 0, 0, 0, 0 };
    int i = 0;
    for (; i + 4 <= n; i += 4)
        for (int k = 0; k < 4; k++) s[k] += (double)(x[i + k] * x[i + k]);
    for (; i < n; i++) s[0] += (double)(x[i] * x[i]);
    double sum = (s[0] + s[1]) + (s[2] + s[3]);
    const float mean = (float)(sum / n);
    const float scale = 1.0f / sqrtf(mean + eps);
    for (i = 0; i < n; i++) out[i] = (x[i] * scale) * w[i];
}

void tp_softmax(float *x, int n) {
    if (n <= 0) return;
    float mx = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > mx) mx = x[i];
    tp_expf_sub(x, x, mx, n);
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += (double)x[i];
    const float inv = (float)(1.0 / sum);
    for (int i = 0; i < n; i++) x[i] *= inv;
}

void tp_swiglu(float *a, const float *b, int n) {
#if defined(__x86_64__)
    const int lanes = exp_lanes();
    if (lanes == 16) { swiglu_avx512(a, b, n); return; }
    if (lanes == 8) { swiglu_avx2(a, b, n); return; }
#endif
    for (int i = 0; i < n; i++) a[i] = a[i] / (1.0f + tp_expf(-a[i])) * b[i];
}

/* dot and axpy: one order on every CPU, the float kernels' (matmul.h): 16
 * lanes of fused multiply-adds, the pairwise tree, then the tail; axpy one
 * fused multiply-add per element. The AVX2 code computes the same bits as the
 * portable loops, so attention does not depend on the CPU either. */
#if defined(__x86_64__)
static int have_avx2_fma(void) {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

__attribute__((target("avx2,fma"))) static float dot_avx2(const float *a, const float *b, int n) {
    __m256 lo = _mm256_setzero_ps(), hi = lo;
    const int n16 = n & ~15;
    for (int i = 0; i < n16; i += 16) {
        lo = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), lo);
        hi = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), hi);
    }
    __m256 s = _mm256_add_ps(lo, hi); /* lanes l + l+8 */
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    float r = _mm_cvtss_f32(h);
    for (int i = n16; i < n; i++) r = fmaf(a[i], b[i], r);
    return r;
}

__attribute__((target("avx2,fma"))) static void axpy_avx2(float *y, float a, const float *x, int n) {
    __m256 av = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] = fmaf(a, x[i], y[i]);
}
#endif

#if defined(__x86_64__)
/* 64 outputs in 8 registers across all the rows: out is read and written once, not once per row. */
__attribute__((target("avx2,fma"))) static void wsum_avx2(float *out, const float *p, const float *rows, size_t stride,
                                                       int n_rows, int n) {
    int i = 0;
    for (; i + 64 <= n; i += 64) {
        __m256 acc[8];
        for (int k = 0; k < 8; k++) acc[k] = _mm256_setzero_ps();
        for (int j = 0; j < n_rows; j++) {
            if (p[j] == 0.0f) continue;
            const __m256 pj = _mm256_set1_ps(p[j]);
            const float *r = rows + (size_t)j * stride + i;
            for (int k = 0; k < 8; k++) acc[k] = _mm256_fmadd_ps(pj, _mm256_loadu_ps(r + 8 * k), acc[k]);
        }
        for (int k = 0; k < 8; k++) _mm256_storeu_ps(out + i + 8 * k, acc[k]);
    }
    for (; i + 8 <= n; i += 8) {
        __m256 acc = _mm256_setzero_ps();
        for (int j = 0; j < n_rows; j++)
            if (p[j] != 0.0f) acc = _mm256_fmadd_ps(_mm256_set1_ps(p[j]), _mm256_loadu_ps(rows + (size_t)j * stride + i), acc);
        _mm256_storeu_ps(out + i, acc);
    }
    for (; i < n; i++) {
        float a = 0.0f;
        for (int j = 0; j < n_rows; j++)
            if (p[j] != 0.0f) a = fmaf(p[j], rows[(size_t)j * stride + i], a);
        out[i] = a;
    }
}
#endif

void tp_wsum_rows_f32(float *out, const float *p, const float *rows, size_t stride, int n_rows, int n) {
#if defined(__x86_64__)
    if (have_avx2_fma()) {
        wsum_avx2(out, p, rows, stride, n_rows, n);
        return;
    }
#endif
    for (int i = 0; i < n; i++) out[i] = 0.0f;
    for (int j = 0; j < n_rows; j++)
        if (p[j] != 0.0f) tp_axpy_f32(out, p[j], rows + (size_t)j * stride, n);
}

float tp_dot_f32(const float *a, const float *b, int n) {
#if defined(__x86_64__)
    if (have_avx2_fma()) return dot_avx2(a, b, n);
#endif
    float l[16] = { 0 }, s8[8], s4[4];
    const int n16 = n & ~15;
    for (int i = 0; i < n16; i += 16)
        for (int k = 0; k < 16; k++) l[k] = fmaf(a[i + k], b[i + k], l[k]);
    for (int k = 0; k < 8; k++) s8[k] = l[k] + l[k + 8];
    for (int k = 0; k < 4; k++) s4[k] = s8[k] + s8[k + 4];
    float r = (s4[0] + s4[2]) + (s4[1] + s4[3]);
    for (int i = n16; i < n; i++) r = fmaf(a[i], b[i], r);
    return r;
}

void tp_axpy_f32(float *y, float a, const float *x, int n) {
#if defined(__x86_64__)
    if (have_avx2_fma()) {
        axpy_avx2(y, a, x, n);
        return;
    }
#endif
    for (int i = 0; i < n; i++) y[i] = fmaf(a, x[i], y[i]);
}
