/* ops.c: the small per-vector operations, computed as ggml's CPU backend
 * computes them so that our activations track llama.cpp's:
 *  - rmsnorm: squares in float, summed in double; mean and 1/sqrt in float;
 *    out = (x * scale) * w (ggml_rms_norm followed by ggml_mul).
 *  - softmax: max-subtracted expf in float, sum in double, scaled by
 *    (float)(1/sum).
 *  - swiglu: silu(a) * b with silu(v) = v / (1 + expf(-v)).
 * dot and axpy: below (the same bits on every CPU).
 */
#include "kernels/ops.h"

#include <math.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

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
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        float e = expf(x[i] - mx);
        x[i] = e;
        sum += (double)e;
    }
    const float inv = (float)(1.0 / sum);
    for (int i = 0; i < n; i++) x[i] *= inv;
}

void tp_swiglu(float *a, const float *b, int n) {
    for (int i = 0; i < n; i++) {
        float v = a[i];
        a[i] = v / (1.0f + expf(-v)) * b[i];
    }
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
