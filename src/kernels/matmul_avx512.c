/* matmul_avx512.c: AVX-512 (F/BW/VL + VNNI) kernels.
 *
 * Every output is computed with the operations of the generic kernels
 * (matmul.c) in the same order, so the results equal the other levels' bit
 * for bit.
 *
 * Legacy types: tiles of 16 rows (one 32-bit lane per row; the repacked
 * layout of matmul_internal.h, or a U8 tile built in scratch) x up to 8
 * inputs. Per 32-value block the tile's 8 (Q4_0: 4, split into nibbles)
 * 64-byte slices are decoded once into registers; then per input 8 VPDPBUSD,
 * each with the input's 4 values broadcast to all lanes, give the 16 rows'
 * exact block dot products (started from the activation's offset
 * correction), and one convert + multiply + FMA applies the scales: 512
 * multiply-adds for 11 instructions, the outputs in lanes (no horizontal sum).
 * Float types: tiles of 4 rows x 6 inputs of 16-lane FMAs (24 accumulators),
 * each accumulator reduced once at the end of the row.
 */
#include "kernels/matmul_internal.h"

#if defined(__x86_64__)

#include "kernels/matmul_x86.h"

#define X86_512_TARGET "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"
#define X86_512 __attribute__((target(X86_512_TARGET), always_inline)) static inline

/* ------------------------------------------------------------------------ */
/* legacy types: 16 rows x T inputs                                          */

enum { FMT_Q4 = 0, FMT_U8 = 1 };

/* Tile rows r .. r+nrow-1 (nrow <= 16) against inputs t0 .. t0+T-1, T <= 8.
 * pf: the next tile to prefetch (streaming weights), or NULL. */
X86_512 void r16_tile(const tp_mm_job *J, const uint32_t type, const int fmt, const int T, const uint8_t *tile,
                      const uint8_t *mins, const uint8_t *pf, int r, int nrow, int t0) {
    const int G = J->n_in / 32, nb = J->nb, off = x86_offset(type);
    const size_t bs = fmt == FMT_Q4 ? TP_R16_Q4_0 : TP_R16_U8;
    const int corr = off != 0;
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    __m512 acc[8];
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) acc[t] = _mm512_setzero_ps();
    for (int g = 0; g < G; g++) {
        const uint8_t *b = tile + (size_t)g * bs;
        if (pf)
            for (size_t o = 0; o < bs; o += 64) _mm_prefetch((const char *)pf + (size_t)g * bs + o, _MM_HINT_T0);
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)b));
        /* W[j] pairs with dword j of the input's 32 values */
        __m512i W[8];
        if (fmt == FMT_Q4) {
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) {
                const __m512i raw = _mm512_loadu_si512(b + 32 + 64 * k);
                W[k] = _mm512_and_si512(raw, m4);
                W[4 + k] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), m4);
            }
        } else {
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++) W[j] = _mm512_loadu_si512(b + 32 + 64 * j);
        }
        __m512 mw = _mm512_setzero_ps();
        if (mins) mw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(mins + 32 * (size_t)g)));
        const int32_t *xw = (const int32_t *)(const void *)(J->xq + ((size_t)g * nb + t0) * 32);
        const size_t xg = (size_t)g * nb + (size_t)t0;
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            __m512i i0 = corr ? _mm512_set1_epi32(J->xc[xg + (size_t)t]) : _mm512_setzero_si512();
            if (T <= 2) {
                /* few inputs: two chains, so that the VPDPBUSD latency does not bound the loop */
                __m512i i1 = _mm512_setzero_si512();
#pragma GCC unroll 4
                for (int j = 0; j < 8; j += 2) {
                    i0 = _mm512_dpbusd_epi32(i0, W[j], _mm512_set1_epi32(xw[8 * t + j]));
                    i1 = _mm512_dpbusd_epi32(i1, W[j + 1], _mm512_set1_epi32(xw[8 * t + j + 1]));
                }
                i0 = _mm512_add_epi32(i0, i1);
            } else {
#pragma GCC unroll 8
                for (int j = 0; j < 8; j++) i0 = _mm512_dpbusd_epi32(i0, W[j], _mm512_set1_epi32(xw[8 * t + j]));
            }
            const __m512 s = _mm512_mul_ps(dw, _mm512_set1_ps(J->xd[xg + (size_t)t]));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i0), s, acc[t]);
            if (mins) acc[t] = _mm512_fmadd_ps(mw, _mm512_set1_ps(J->xs[xg + (size_t)t]), acc[t]);
        }
    }
    const __mmask16 m = nrow >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nrow) - 1);
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) _mm512_mask_storeu_ps(J->y + (size_t)(t0 + t) * J->n_out + r, m, acc[t]);
}

X86_512 void r16_tiles(const tp_mm_job *J, const uint32_t type, const int fmt, const uint8_t *tile,
                       const uint8_t *mins, const uint8_t *pf, int r, int nr) {
    int t0 = 0;
    for (; J->nb - t0 >= 8; t0 += 8) {
        r16_tile(J, type, fmt, 8, tile, mins, pf, r, nr, t0);
        pf = NULL; /* the tile is in cache now; fetch the next one once */
    }
    switch (J->nb - t0) {
    case 7: r16_tile(J, type, fmt, 7, tile, mins, pf, r, nr, t0); break;
    case 6: r16_tile(J, type, fmt, 6, tile, mins, pf, r, nr, t0); break;
    case 5: r16_tile(J, type, fmt, 5, tile, mins, pf, r, nr, t0); break;
    case 4: r16_tile(J, type, fmt, 4, tile, mins, pf, r, nr, t0); break;
    case 3: r16_tile(J, type, fmt, 3, tile, mins, pf, r, nr, t0); break;
    case 2: r16_tile(J, type, fmt, 2, tile, mins, pf, r, nr, t0); break;
    case 1: r16_tile(J, type, fmt, 1, tile, mins, pf, r, nr, t0); break;
    default: break;
    }
}

X86_512 void avx512_legacy(const tp_mm_job *J, int r0, int r1, uint8_t *scratch, const uint32_t type) {
    const int packed_end = J->layout == TP_WL_R16 ? J->n_out / 16 * 16 : 0;
    const int has_min = type == TP_Q4_1 || type == TP_Q5_1;
    const size_t G = (size_t)J->n_in / 32;
    for (int r = r0; r < r1; r += 16) {
        const int nr = r1 - r < 16 ? r1 - r : 16;
        if (r + 16 <= packed_end) {
            const uint8_t *tile = J->w + (size_t)r * J->row_bytes;
            const uint8_t *pf = r + 32 <= packed_end ? tile + 16 * J->row_bytes : NULL;
            r16_tiles(J, type, type == TP_Q4_0 ? FMT_Q4 : FMT_U8, tile, NULL, pf, r, nr);
        } else {
            tp_mm_u8_tile(J, r, nr, scratch);
            r16_tiles(J, type, FMT_U8, scratch, has_min ? scratch + G * TP_R16_U8 : NULL, NULL, r, nr);
        }
    }
}

#define AVX512_QKERNEL(name, type)                                                          \
    __attribute__((target(X86_512_TARGET))) static void name(const tp_mm_job *J, int r0,  \
                                                             int r1, uint8_t *scratch) {  \
        avx512_legacy(J, r0, r1, scratch, type);                                          \
    }

AVX512_QKERNEL(k_q8_0, TP_Q8_0)
AVX512_QKERNEL(k_q4_0, TP_Q4_0)
AVX512_QKERNEL(k_q4_1, TP_Q4_1)
AVX512_QKERNEL(k_q5_0, TP_Q5_0)
AVX512_QKERNEL(k_q5_1, TP_Q5_1)

/* ------------------------------------------------------------------------ */
/* float kernels                                                             */

X86_512 __m512 load16f(const uint32_t type, const uint8_t *row, int i) {
    if (type == TP_F32) return _mm512_loadu_ps((const float *)(const void *)row + i);
    __m256i h = _mm256_loadu_si256((const __m256i *)(const void *)(row + 2 * (size_t)i));
    if (type == TP_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); /* BF16 */
}

/* the generic tree of 16 lanes: (l + l+8), then x86_hsum8 */
X86_512 float hsum16(__m512 v) {
    return x86_hsum8(_mm256_add_ps(_mm512_castps512_ps256(v),
                                   _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
}

/* R rows x T inputs (R <= 4, T <= 6): 24 accumulators, 4 weight registers. */
X86_512 void avx512_ftile(const tp_mm_job *J, const uint32_t type, const int R, const int T, int r, int b0,
                          const int pf) {
    const int n = J->n_in, n16 = n & ~15;
    const size_t es = type == TP_F32 ? 4 : 2;
    const uint8_t *rows[4];
    const float *xs[6];
    __m512 acc[4][6];
#pragma GCC unroll 4
    for (int i = 0; i < R; i++) rows[i] = J->w + (size_t)(r + i) * J->row_bytes;
#pragma GCC unroll 6
    for (int t = 0; t < T; t++) xs[t] = J->xf + (size_t)(b0 + t) * n;
#pragma GCC unroll 4
    for (int i = 0; i < R; i++)
#pragma GCC unroll 6
        for (int t = 0; t < T; t++) acc[i][t] = _mm512_setzero_ps();
    for (int k = 0; k < n16; k += 16) {
        if (pf && ((size_t)k * es) % 64 == 0)
#pragma GCC unroll 4
            for (int i = 0; i < R; i++)
                _mm_prefetch((const char *)rows[i] + (size_t)R * J->row_bytes + (size_t)k * es + 1024, _MM_HINT_T0);
        __m512 wv[4];
#pragma GCC unroll 4
        for (int i = 0; i < R; i++) wv[i] = load16f(type, rows[i], k);
#pragma GCC unroll 6
        for (int t = 0; t < T; t++) {
            const __m512 xv = _mm512_loadu_ps(xs[t] + k);
#pragma GCC unroll 4
            for (int i = 0; i < R; i++) acc[i][t] = _mm512_fmadd_ps(wv[i], xv, acc[i][t]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < R; i++)
#pragma GCC unroll 6
        for (int t = 0; t < T; t++) {
            float s = hsum16(acc[i][t]);
            for (int k = n16; k < n; k++) s = fmaf(tp_mm_elem_f32(type, rows[i], k), xs[t][k], s);
            J->y[(size_t)(b0 + t) * J->n_out + r + i] = s;
        }
}

X86_512 void avx512_frow_tiles(const tp_mm_job *J, const uint32_t type, const int R, int r, const int pf) {
    int b = 0;
    for (; J->nb - b >= 6; b += 6) avx512_ftile(J, type, R, 6, r, b, pf && b == 0);
    switch (J->nb - b) {
    case 5: avx512_ftile(J, type, R, 5, r, b, pf && b == 0); break;
    case 4: avx512_ftile(J, type, R, 4, r, b, pf && b == 0); break;
    case 3: avx512_ftile(J, type, R, 3, r, b, pf && b == 0); break;
    case 2: avx512_ftile(J, type, R, 2, r, b, pf && b == 0); break;
    case 1: avx512_ftile(J, type, R, 1, r, b, pf && b == 0); break;
    default: break;
    }
}

X86_512 void avx512_frows(const tp_mm_job *J, int r0, int r1, const uint32_t type) {
    int r = r0;
    for (; r + 4 <= r1; r += 4) avx512_frow_tiles(J, type, 4, r, r + 8 <= r1);
    for (; r < r1; r++) avx512_frow_tiles(J, type, 1, r, 0);
}

#define AVX512_FKERNEL(name, type)                                                         \
    __attribute__((target(X86_512_TARGET))) static void name(const tp_mm_job *J, int r0, \
                                                             int r1, uint8_t *scratch) { \
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
    /* the activation quantizers of the AVX2 level (same bytes; not the bottleneck) */
    return 1;
}

#endif /* __x86_64__ */
