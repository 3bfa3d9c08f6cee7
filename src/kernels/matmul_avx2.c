/* matmul_avx2.c: AVX2+FMA+F16C kernels and activation quantizers.
 *
 * For the legacy types the per-block arithmetic is ggml's AVX2 vec_dot's
 * (see matmul_internal.h), so the results equal llama.cpp's bit for bit.
 *
 * Integer kernels: one weight row at a time against a tile of up to 8
 * quantized inputs; each group of 32 weights is decoded once and multiplied
 * with every input of the tile (_mm256_maddubs_epi16 u8 x s8 pairs, then
 * _mm256_madd_epi16 to int32 lanes, then scaled in float). Weights with an
 * offset are fed unsigned and corrected by the per-lane xc term; Q8_0 uses
 * the sign trick (|w| times x with w's sign) because w+128 could overflow
 * maddubs's int16 pair sums.
 * Float kernels: 4 rows x 2 inputs of 8-wide FMAs.
 */
#include "kernels/matmul_internal.h"

#if defined(__x86_64__)

#include "kernels/matmul_x86.h"

/* ------------------------------------------------------------------------ */
/* activation quantizers (bit-identical to the portable ones)                */

X86_AVX2 float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

X86_AVX2 float round_f16_x86(float v) { return _cvtsh_ss(_cvtss_sh(v, 0)); }

/* 4 x 8 int32 -> 32 int8 (saturating), in order */
X86_AVX2 __m256i pack32(__m256i a, __m256i b, __m256i c, __m256i d) {
    __m256i ab = _mm256_packs_epi32(a, b), cd = _mm256_packs_epi32(c, d);
    __m256i v = _mm256_packs_epi16(ab, cd);
    return _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* per-lane sums of 4 int8, the correction lanes and the total */
X86_AVX2 int lane_sums(__m256i q, int offset, int32_t *c) {
    __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), q), _mm256_set1_epi16(1));
    _mm256_storeu_si256((__m256i *)(void *)c, _mm256_mullo_epi32(s, _mm256_set1_epi32(-offset)));
    __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4E));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xB1));
    return _mm_cvtsi128_si32(t);
}

__attribute__((target("avx2,fma,f16c"))) void tp_mm_quant_q8_avx2(const float *x, int n, int offset, int8_t *q,
                                                                 int32_t *c, float *d, float *m, size_t qg,
                                                                 size_t cg, size_t dg) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int g = 0; g < n / 32; g++) {
        const float *xs = x + 32 * g;
        __m256 v0 = _mm256_loadu_ps(xs), v1 = _mm256_loadu_ps(xs + 8);
        __m256 v2 = _mm256_loadu_ps(xs + 16), v3 = _mm256_loadu_ps(xs + 24);
        __m256 a = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1)),
                                 _mm256_max_ps(_mm256_andnot_ps(sign, v2), _mm256_andnot_ps(sign, v3)));
        float amax = hmax8(a);
        float dd = amax / 127.0f;
        __m256 id = _mm256_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
        __m256i qv = pack32(_mm256_cvtps_epi32(_mm256_mul_ps(v0, id)), _mm256_cvtps_epi32(_mm256_mul_ps(v1, id)),
                            _mm256_cvtps_epi32(_mm256_mul_ps(v2, id)), _mm256_cvtps_epi32(_mm256_mul_ps(v3, id)));
        _mm256_storeu_si256((__m256i *)(void *)(q + (size_t)g * qg), qv);
        int sum = lane_sums(qv, offset, c + (size_t)g * cg);
        d[(size_t)g * dg] = round_f16_x86(dd);
        m[(size_t)g * dg] = round_f16_x86(dd * (float)sum);
    }
}

__attribute__((target("avx2,fma,f16c"))) void tp_mm_quant_q8k_avx2(const float *x, int n, int offset, int8_t *q,
                                                                  int32_t *c, float *d, float *m, size_t qg,
                                                                  size_t cg, size_t dg) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int s = 0; s < n / 256; s++) {
        const float *xs = x + 256 * s;
        __m256 a = _mm256_setzero_ps();
        for (int i = 0; i < 256; i += 8) a = _mm256_max_ps(a, _mm256_andnot_ps(sign, _mm256_loadu_ps(xs + i)));
        float amax = hmax8(a), dd = 0.0f, iscale = 0.0f;
        if (amax != 0.0f) {
            /* the first value of largest magnitude gives the sign, as in ggml */
            float max = 0.0f;
            __m256 am = _mm256_set1_ps(amax);
            for (int i = 0; i < 256; i += 8) {
                int msk = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(xs + i)), am, _CMP_EQ_OQ));
                if (msk) { max = xs[i + __builtin_ctz((unsigned)msk)]; break; }
            }
            iscale = -127.0f / max;
            dd = 1.0f / iscale;
        }
        const __m256 is = _mm256_set1_ps(iscale);
        const __m256i lim = _mm256_set1_epi32(127);
        for (int g = 0; g < 8; g++) {
            const float *xg = xs + 32 * g;
            const size_t gi = 8 * (size_t)s + (size_t)g;
            __m256i i0 = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xg), is)), lim);
            __m256i i1 = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xg + 8), is)), lim);
            __m256i i2 = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xg + 16), is)), lim);
            __m256i i3 = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xg + 24), is)), lim);
            __m256i qv = pack32(i0, i1, i2, i3);
            _mm256_storeu_si256((__m256i *)(void *)(q + gi * qg), qv);
            int sum = lane_sums(qv, offset, c + gi * cg);
            d[gi * dg] = dd;
            m[gi * dg] = dd * (float)sum;
        }
    }
}

/* ------------------------------------------------------------------------ */
/* integer kernels                                                           */

X86_AVX2 void avx2_qtile(const tp_mm_job *J, const uint32_t type, const int T, const uint8_t *row,
                         int r, int b0) {
    const int G = J->n_in / 32, gpb = X86_GPB(type), nsb = G / gpb;
    const int corr = type == TP_Q4_0 || type == TP_Q5_0 || type == TP_Q6_K;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[8], macc[8]; /* macc lane 0: Q4_1/Q5_1 min terms, summed apart as in ggml */
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) acc[t] = macc[t] = _mm256_setzero_ps();
    for (int sb = 0; sb < nsb; sb++) {
        xhdr h = x86_hdr(type, row, sb);
#pragma GCC unroll 8
        for (int gi = 0; gi < gpb; gi++) {
            xgroup w = x86_group(type, row, sb, gi, &h);
            const int g = sb * gpb + gi;
            __m256i wq = type == TP_Q8_0 ? _mm256_abs_epi8(w.q) : w.q;
            __m256 mv = _mm256_set_ps(0, 0, 0, 0, 0, 0, 0, w.mn);
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) {
                const size_t b = (size_t)(b0 + t), bg = b * J->xg_bs + (size_t)g * J->xg_gs;
                __m256i x = _mm256_loadu_si256((const __m256i *)(const void *)(J->xq + b * J->xq_bs + (size_t)g * J->xq_gs));
                if (type == TP_Q8_0) x = _mm256_sign_epi8(x, w.q);
                __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(wq, x), ones);
                if (corr) p = _mm256_add_epi32(p, _mm256_loadu_si256((const __m256i *)(const void *)(J->xc + b * J->xc_bs + (size_t)g * J->xc_gs)));
                __m256 sc = _mm256_mul_ps(w.s, _mm256_set1_ps(J->xd[bg]));
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), sc, acc[t]);
                if (X86_HAS_MIN(type)) macc[t] = _mm256_add_ps(macc[t], _mm256_mul_ps(mv, _mm256_set1_ps(J->xm[bg])));
            }
        }
        if (X86_K_MIN(type)) {
#pragma GCC unroll 8
            for (int t = 0; t < T; t++)
                acc[t] = _mm256_fmadd_ps(h.mn, _mm256_loadu_ps(J->xm + (size_t)(b0 + t) * J->xg_bs + 8 * (size_t)sb), acc[t]); /* ACT_MAJOR */
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; t++)
        J->y[(size_t)(b0 + t) * J->n_out + r] = x86_hsum8(acc[t]) + _mm256_cvtss_f32(macc[t]);
}

X86_AVX2 void avx2_qrows(const tp_mm_job *J, int r0, int r1, const uint32_t type) {
    for (int r = r0; r < r1; r++) {
        const uint8_t *row = J->w + (size_t)r * J->row_bytes;
        {
            /* the weights stream: ask for the next row now (the hardware
             * prefetchers alone leave most of the bandwidth unused) */
            const char *next = (const char *)row + J->row_bytes;
            for (size_t o = 0; o < J->row_bytes; o += 64) _mm_prefetch(next + o, _MM_HINT_T0);
        }
        int b = 0;
        if (!X86_HAS_MIN(type))
            for (; J->nb - b >= 8; b += 8) avx2_qtile(J, type, 8, row, r, b);
        for (; J->nb - b >= 4; b += 4) avx2_qtile(J, type, 4, row, r, b);
        if (J->nb - b >= 2) { avx2_qtile(J, type, 2, row, r, b); b += 2; }
        if (J->nb - b >= 1) avx2_qtile(J, type, 1, row, r, b);
    }
}

#define AVX2_QKERNEL(name, type)                                                          \
    __attribute__((target("avx2,fma,f16c"))) static void name(const tp_mm_job *J, int r0, \
                                                              int r1, float *scratch) {   \
        (void)scratch;                                                                    \
        avx2_qrows(J, r0, r1, type);                                                      \
    }

AVX2_QKERNEL(k_q8_0, TP_Q8_0)
AVX2_QKERNEL(k_q4_0, TP_Q4_0)
AVX2_QKERNEL(k_q4_1, TP_Q4_1)
AVX2_QKERNEL(k_q5_0, TP_Q5_0)
AVX2_QKERNEL(k_q5_1, TP_Q5_1)
AVX2_QKERNEL(k_q4_K, TP_Q4_K)
AVX2_QKERNEL(k_q5_K, TP_Q5_K)
AVX2_QKERNEL(k_q6_K, TP_Q6_K)

/* ------------------------------------------------------------------------ */
/* float kernels                                                             */

X86_AVX2 __m256 load8f(const uint32_t type, const uint8_t *row, int i) {
    if (type == TP_F32) return _mm256_loadu_ps((const float *)(const void *)row + i);
    __m128i h = _mm_loadu_si128((const __m128i *)(const void *)(row + 2 * (size_t)i));
    if (type == TP_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)); /* BF16 */
}

/* R rows x T inputs */
X86_AVX2 void avx2_ftile(const tp_mm_job *J, const uint32_t type, const int R, const int T, int r, int b0) {
    const int n = J->n_in, n8 = n & ~7;
    const uint8_t *rows[4];
    const float *xs[2];
    __m256 acc[4][2];
#pragma GCC unroll 4
    for (int i = 0; i < R; i++) rows[i] = J->w + (size_t)(r + i) * J->row_bytes;
#pragma GCC unroll 2
    for (int t = 0; t < T; t++) xs[t] = J->xf + (size_t)(b0 + t) * n;
#pragma GCC unroll 4
    for (int i = 0; i < R; i++)
#pragma GCC unroll 2
        for (int t = 0; t < T; t++) acc[i][t] = _mm256_setzero_ps();
    for (int k = 0; k < n8; k += 8) {
        __m256 xv[2];
#pragma GCC unroll 2
        for (int t = 0; t < T; t++) xv[t] = _mm256_loadu_ps(xs[t] + k);
#pragma GCC unroll 4
        for (int i = 0; i < R; i++) {
            __m256 wv = load8f(type, rows[i], k);
#pragma GCC unroll 2
            for (int t = 0; t < T; t++) acc[i][t] = _mm256_fmadd_ps(wv, xv[t], acc[i][t]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < R; i++)
#pragma GCC unroll 2
        for (int t = 0; t < T; t++) {
            float s = x86_hsum8(acc[i][t]);
            for (int k = n8; k < n; k++) s += tp_mm_elem_f32(type, rows[i], k) * xs[t][k];
            J->y[(size_t)(b0 + t) * J->n_out + r + i] = s;
        }
}

X86_AVX2 void avx2_frows(const tp_mm_job *J, int r0, int r1, const uint32_t type) {
    int r = r0;
    for (; r + 4 <= r1; r += 4) {
        int b = 0;
        for (; J->nb - b >= 2; b += 2) avx2_ftile(J, type, 4, 2, r, b);
        if (b < J->nb) avx2_ftile(J, type, 4, 1, r, b);
    }
    for (; r < r1; r++) {
        int b = 0;
        for (; J->nb - b >= 2; b += 2) avx2_ftile(J, type, 1, 2, r, b);
        if (b < J->nb) avx2_ftile(J, type, 1, 1, r, b);
    }
}

#define AVX2_FKERNEL(name, type)                                                          \
    __attribute__((target("avx2,fma,f16c"))) static void name(const tp_mm_job *J, int r0, \
                                                              int r1, float *scratch) {   \
        (void)scratch;                                                                    \
        avx2_frows(J, r0, r1, type);                                                      \
    }

AVX2_FKERNEL(k_f32, TP_F32)
AVX2_FKERNEL(k_f16, TP_F16)
AVX2_FKERNEL(k_bf16, TP_BF16)

int tp_mm_fill_avx2(tp_mm_impl *impl) {
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
    for (int t = 0; t < TP_MM_NTYPES; t++) {
        int kind = tp_mm_act_kind((uint32_t)t);
        if (!impl->kernel[t] || kind == TP_ACT_F32) continue;
        impl->quant[t] = kind == TP_ACT_Q8 ? tp_mm_quant_q8_avx2 : tp_mm_quant_q8k_avx2;
        impl->layout[t] = kind == TP_ACT_Q8 ? TP_LAYOUT_GROUP_MAJOR : TP_LAYOUT_ACT_MAJOR;
    }
    impl->row_step = 4;
    return 1;
}

#endif /* __x86_64__ */
