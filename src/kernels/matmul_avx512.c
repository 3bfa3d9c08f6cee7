/* matmul_avx512.c: AVX-512 (F/BW/VL + VNNI) kernels.
 *
 * Integer kernels work on two weight rows at once: one 512-bit register holds
 * the same group of 32 weights of row r (low half) and row r+1 (high half) as
 * unsigned bytes, and each input group (32 int8, broadcast to both halves) is
 * multiplied with VPDPBUSD, whose int32 lanes start from the per-lane offset
 * correction xc. One VPDPBUSD + convert + 2 float ops thus cover 64
 * weight-input products, and the decoded weights are reused for a tile of up
 * to 16 inputs. Each half is summed on its own at the end, so a row's result
 * does not depend on which row it was paired with.
 * Float kernels: 4 rows x up to 4 inputs of 16-wide FMAs.
 */
#include "kernels/matmul_internal.h"

#if defined(__x86_64__)

#include "kernels/matmul_x86.h"

#define X86_512_TARGET "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"
#define X86_512 __attribute__((target(X86_512_TARGET), always_inline)) static inline

X86_512 __m512 cat_ps(__m256 a, __m256 b) {
    return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(a)), _mm256_castps_pd(b), 1));
}
X86_512 __m512i cat_si(__m256i a, __m256i b) { return _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1); }
X86_512 __m512i bcast_si(const void *p) { return _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)p)); }
X86_512 __m512 bcast_ps(const float *p) {
    return _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(_mm256_loadu_ps(p))));
}
X86_512 float hsum_lo(__m512 v) { return x86_hsum8(_mm512_castps512_ps256(v)); }
X86_512 float hsum_hi(__m512 v) {
    return x86_hsum8(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}

/* ------------------------------------------------------------------------ */
/* integer kernels                                                           */

X86_512 void avx512_qtile(const tp_mm_job *J, const uint32_t type, const int T, const uint8_t *ra,
                          const uint8_t *rb, int r, int two, int b0) {
    const int n_in = J->n_in, G = n_in / 32, gpb = X86_GPB(type), nsb = G / gpb;
    const int corr = type == TP_Q8_0 || type == TP_Q4_0 || type == TP_Q5_0 || type == TP_Q6_K;
    __m512 acc[16];
#pragma GCC unroll 16
    for (int t = 0; t < T; t++) acc[t] = _mm512_setzero_ps();
    for (int sb = 0; sb < nsb; sb++) {
        xhdr ha = x86_hdr(type, ra, sb), hb = x86_hdr(type, rb, sb);
#pragma GCC unroll 8
        for (int gi = 0; gi < gpb; gi++) {
            xgroup wa = x86_group(type, ra, sb, gi, &ha), wb = x86_group(type, rb, sb, gi, &hb);
            const int g = sb * gpb + gi;
            __m512i q = cat_si(wa.q, wb.q);
            if (type == TP_Q8_0) q = _mm512_xor_si512(q, _mm512_set1_epi8((char)0x80));
            __m512 s = cat_ps(wa.s, wb.s);
            __m512 mv = _mm512_setzero_ps();
            if (X86_HAS_MIN(type))
                mv = _mm512_set_ps(0, 0, 0, 0, 0, 0, 0, wb.mn, 0, 0, 0, 0, 0, 0, 0, wa.mn);
#pragma GCC unroll 16
            for (int t = 0; t < T; t++) {
                const size_t bg = (size_t)(b0 + t) * G + g;
                __m512i x = bcast_si(J->xq + (size_t)(b0 + t) * n_in + 32 * g);
                __m512i c = corr ? bcast_si(J->xc + bg * 8) : _mm512_setzero_si512();
                __m512i p = _mm512_dpbusd_epi32(c, q, x);
                __m512 sc = _mm512_mul_ps(s, _mm512_set1_ps(J->xd[bg]));
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), sc, acc[t]);
                if (X86_HAS_MIN(type)) acc[t] = _mm512_fmadd_ps(mv, _mm512_set1_ps(J->xm[bg]), acc[t]);
            }
        }
        if (X86_K_MIN(type)) {
            __m512 mn = cat_ps(ha.mn, hb.mn);
#pragma GCC unroll 16
            for (int t = 0; t < T; t++)
                acc[t] = _mm512_fmadd_ps(mn, bcast_ps(J->xm + (size_t)(b0 + t) * G + 8 * sb), acc[t]);
        }
    }
#pragma GCC unroll 16
    for (int t = 0; t < T; t++) {
        float *y = J->y + (size_t)(b0 + t) * J->n_out + r;
        y[0] = hsum_lo(acc[t]);
        if (two) y[1] = hsum_hi(acc[t]);
    }
}

X86_512 void avx512_qrows(const tp_mm_job *J, int r0, int r1, const uint32_t type) {
    for (int r = r0; r < r1; r += 2) {
        const uint8_t *ra = J->w + (size_t)r * J->row_bytes;
        int two = r + 1 < r1;
        const uint8_t *rb = two ? ra + J->row_bytes : ra;
        int b = 0;
        for (; J->nb - b >= 16; b += 16) avx512_qtile(J, type, 16, ra, rb, r, two, b);
        if (J->nb - b >= 8) { avx512_qtile(J, type, 8, ra, rb, r, two, b); b += 8; }
        if (J->nb - b >= 4) { avx512_qtile(J, type, 4, ra, rb, r, two, b); b += 4; }
        if (J->nb - b >= 2) { avx512_qtile(J, type, 2, ra, rb, r, two, b); b += 2; }
        if (J->nb - b >= 1) avx512_qtile(J, type, 1, ra, rb, r, two, b);
    }
}

#define AVX512_QKERNEL(name, type)                                                         \
    __attribute__((target(X86_512_TARGET))) static void name(const tp_mm_job *J, int r0, \
                                                             int r1, float *scratch) {   \
        (void)scratch;                                                                   \
        avx512_qrows(J, r0, r1, type);                                                   \
    }

AVX512_QKERNEL(k_q8_0, TP_Q8_0)
AVX512_QKERNEL(k_q4_0, TP_Q4_0)
AVX512_QKERNEL(k_q4_1, TP_Q4_1)
AVX512_QKERNEL(k_q5_0, TP_Q5_0)
AVX512_QKERNEL(k_q5_1, TP_Q5_1)
AVX512_QKERNEL(k_q4_K, TP_Q4_K)
AVX512_QKERNEL(k_q5_K, TP_Q5_K)
AVX512_QKERNEL(k_q6_K, TP_Q6_K)

/* ------------------------------------------------------------------------ */
/* float kernels                                                             */

X86_512 __m512 load16f(const uint32_t type, const uint8_t *row, int i) {
    if (type == TP_F32) return _mm512_loadu_ps((const float *)(const void *)row + i);
    __m256i h = _mm256_loadu_si256((const __m256i *)(const void *)(row + 2 * (size_t)i));
    if (type == TP_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); /* BF16 */
}

X86_512 float load1f_512(const uint32_t type, const uint8_t *row, int i) {
    if (type == TP_F32) {
        float f;
        memcpy(&f, row + 4 * (size_t)i, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, row + 2 * (size_t)i, 2);
    if (type == TP_F16) return _cvtsh_ss(h);
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

X86_512 void avx512_ftile(const tp_mm_job *J, const uint32_t type, const int R, const int T, int r, int b0) {
    const int n = J->n_in, n16 = n & ~15;
    const uint8_t *rows[4];
    const float *xs[4];
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int i = 0; i < R; i++) rows[i] = J->w + (size_t)(r + i) * J->row_bytes;
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) xs[t] = J->xf + (size_t)(b0 + t) * n;
#pragma GCC unroll 4
    for (int i = 0; i < R; i++)
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) acc[i][t] = _mm512_setzero_ps();
    for (int k = 0; k < n16; k += 16) {
        __m512 xv[4];
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) xv[t] = _mm512_loadu_ps(xs[t] + k);
#pragma GCC unroll 4
        for (int i = 0; i < R; i++) {
            __m512 wv = load16f(type, rows[i], k);
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) acc[i][t] = _mm512_fmadd_ps(wv, xv[t], acc[i][t]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < R; i++)
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            float s = _mm512_reduce_add_ps(acc[i][t]);
            for (int k = n16; k < n; k++) s += load1f_512(type, rows[i], k) * xs[t][k];
            J->y[(size_t)(b0 + t) * J->n_out + r + i] = s;
        }
}

X86_512 void avx512_frows(const tp_mm_job *J, int r0, int r1, const uint32_t type) {
    int r = r0;
    for (; r + 4 <= r1; r += 4) {
        int b = 0;
        for (; J->nb - b >= 4; b += 4) avx512_ftile(J, type, 4, 4, r, b);
        if (J->nb - b >= 2) { avx512_ftile(J, type, 4, 2, r, b); b += 2; }
        if (J->nb - b >= 1) avx512_ftile(J, type, 4, 1, r, b);
    }
    for (; r < r1; r++) {
        int b = 0;
        for (; J->nb - b >= 4; b += 4) avx512_ftile(J, type, 1, 4, r, b);
        if (J->nb - b >= 2) { avx512_ftile(J, type, 1, 2, r, b); b += 2; }
        if (J->nb - b >= 1) avx512_ftile(J, type, 1, 1, r, b);
    }
}

#define AVX512_FKERNEL(name, type)                                                         \
    __attribute__((target(X86_512_TARGET))) static void name(const tp_mm_job *J, int r0, \
                                                             int r1, float *scratch) {   \
        (void)scratch;                                                                   \
        avx512_frows(J, r0, r1, type);                                                   \
    }

AVX512_FKERNEL(k_f32, TP_F32)
AVX512_FKERNEL(k_f16, TP_F16)
AVX512_FKERNEL(k_bf16, TP_BF16)

int tp_mm_fill_avx512(tp_mm_impl *impl) {
    memset(impl, 0, sizeof *impl);
    impl->kernel[TP_F32] = k_f32;
    impl->kernel[TP_F16] = k_f16;
    impl->kernel[TP_BF16] = k_bf16;
    impl->kernel[TP_Q8_0] = k_q8_0;
    impl->kernel[TP_Q4_0] = k_q4_0;
    impl->kernel[TP_Q4_1] = k_q4_1;
    impl->kernel[TP_Q5_0] = k_q5_0;
    impl->kernel[TP_Q5_1] = k_q5_1;
    impl->kernel[TP_Q4_K] = k_q4_K;
    impl->kernel[TP_Q5_K] = k_q5_K;
    impl->kernel[TP_Q6_K] = k_q6_K;
    /* activation quantizers: the AVX2 ones (filled in by the dispatcher) */
    impl->row_step = 4;
    return 1;
}

#endif /* __x86_64__ */
