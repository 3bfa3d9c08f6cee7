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
 * pf: prefetch the stream ahead (the first pass over a tile). */
X86_512 void r16_tile(const tp_mm_job *J, const uint32_t type, const int fmt, const int T, const uint8_t *tile,
                      const uint8_t *mins, const int pf, int r, int nrow, int t0) {
    const int G = J->n_in / 32, nb = J->nb, off = x86_offset(type);
    const size_t bs = fmt == FMT_Q4 ? TP_R16_Q4_0 : TP_R16_U8;
    const int corr = off != 0;
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    __m512 acc[8];
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) acc[t] = _mm512_setzero_ps();
    for (int g = 0; g < G; g++) {
        const uint8_t *b = tile + (size_t)g * bs;
        if (pf) x86_prefetch(b, bs);
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
        /* the inputs' chains side by side (slice j outer), so that the
         * VPDPBUSD latency is covered by the other inputs; one input alone
         * gets two chains */
        __m512i is[8], is2 = _mm512_setzero_si512();
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) is[t] = corr ? _mm512_set1_epi32(J->xc[xg + (size_t)t]) : _mm512_setzero_si512();
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++)
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) {
                const __m512i xb = _mm512_set1_epi32(xw[8 * t + j]);
                if (T == 1 && (j & 1)) is2 = _mm512_dpbusd_epi32(is2, W[j], xb);
                else is[t] = _mm512_dpbusd_epi32(is[t], W[j], xb);
            }
        if (T == 1) is[0] = _mm512_add_epi32(is[0], is2);
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            const __m512 s = _mm512_mul_ps(dw, _mm512_set1_ps(J->xd[xg + (size_t)t]));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is[t]), s, acc[t]);
            if (mins) acc[t] = _mm512_fmadd_ps(mw, _mm512_set1_ps(J->xs[xg + (size_t)t]), acc[t]);
        }
    }
    const __mmask16 m = nrow >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nrow) - 1);
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) _mm512_mask_storeu_ps(J->y + (size_t)(t0 + t) * J->n_out + r, m, acc[t]);
}

X86_512 void r16_tiles(const tp_mm_job *J, const uint32_t type, const int fmt, const uint8_t *tile,
                       const uint8_t *mins, int pf, int r, int nr) {
    int t0 = 0;
    for (; J->nb - t0 >= 8; t0 += 8) {
        r16_tile(J, type, fmt, 8, tile, mins, pf, r, nr, t0);
        pf = 0; /* the tile is in cache now */
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
            r16_tiles(J, type, type == TP_Q4_0 ? FMT_Q4 : FMT_U8, tile, NULL, 1, r, nr);
        } else {
            tp_mm_u8_tile(J, r, nr, scratch);
            r16_tiles(J, type, FMT_U8, scratch, has_min ? scratch + G * TP_R16_U8 : NULL, 0, r, nr);
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

#define AVX512_KKERNEL(name, type)                                                          \
    __attribute__((target(X86_512_TARGET))) static void name(const tp_mm_job *J, int r0,  \
                                                             int r1, uint8_t *scratch) {  \
        avx512_kquant(J, r0, r1, scratch, type);                                          \
    }

/* ------------------------------------------------------------------------ */
/* K-quants: 16 rows x T inputs per 256-value super-block                    */
/*
 * On the interleaved tile (matmul_internal.h). Q4_K/Q5_K: per block of 32
 * values 8 VPDPBUSD give the 16 rows' exact block dot products, one VPMULLD
 * by the rows' 6-bit scales and one add accumulate I (exact); the mins'
 * M = sum of min * block sum is 4 VPDPWSSD on (min, min) pairs and the
 * activations' int16 block sums. Q6_K: signed weights meet the activations
 * stored + 128 (VPDPBUSD needs one unsigned side); the excess 128 * sum of
 * scale * (sum of q) is a weight constant per row, computed once per tile.
 * Then per super-block acc = fma(I, d*dx, acc) (and fma(M, -dmin*dx, acc)),
 * as the generic kernel.
 */

#define KT 8 /* inputs per tile */

/* Q4_K/Q5_K header of a tile's super-block: d, -dmin, the 8 scales (int32
 * per row) and the 4 (min, min) pairs (int16 x 2 per row). */
X86_512 void k4_header(const uint8_t *b, __m512 *d, __m512 *nd, __m512i sc[8], __m512i mp[4]) {
    const __m512i dm = _mm512_loadu_si512(b);
    *d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dm));
    *nd = _mm512_sub_ps(_mm512_setzero_ps(), _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(dm, 16))));
    __m128i B[12];
    for (int i = 0; i < 12; i++) B[i] = _mm_loadu_si128((const __m128i *)(const void *)(b + 64 + 16 * i));
    const __m128i m6 = _mm_set1_epi8(63), m4 = _mm_set1_epi8(0x0F), m3 = _mm_set1_epi8(3);
    __m128i S[8], M[8];
    for (int j = 0; j < 4; j++) {
        S[j] = _mm_and_si128(B[j], m6);
        M[j] = _mm_and_si128(B[j + 4], m6);
    }
    for (int j = 4; j < 8; j++) {
        /* (q[j+4] & 0xF) | ((q[j-4] >> 6) << 4);  (q[j+4] >> 4) | ((q[j] >> 6) << 4) */
        const __m128i hs = _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(B[j - 4], 6), m3), 4);
        const __m128i hm = _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(B[j], 6), m3), 4);
        S[j] = _mm_or_si128(_mm_and_si128(B[j + 4], m4), hs);
        M[j] = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(B[j + 4], 4), m4), hm);
    }
    for (int j = 0; j < 8; j++) sc[j] = _mm512_cvtepu8_epi32(S[j]);
    for (int i = 0; i < 4; i++)
        mp[i] = _mm512_or_si512(_mm512_cvtepu8_epi32(M[2 * i]), _mm512_slli_epi32(_mm512_cvtepu8_epi32(M[2 * i + 1]), 16));
}

X86_512 void k4_tile(const tp_mm_job *J, const int q5, const int T, const uint8_t *tile, const int pf, int r, int nrow,
                     int t0) {
    const int NS = J->n_in / 256, nb = J->nb;
    const size_t tb = q5 ? 16 * 176 : 16 * 144, qso = q5 ? 768 : 256;
    const __m512i m4 = _mm512_set1_epi8(0x0F), one = _mm512_set1_epi8(1);
    __m512 acc[KT];
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) acc[t] = _mm512_setzero_ps();
    for (int sb = 0; sb < NS; sb++) {
        const uint8_t *b = tile + (size_t)sb * tb;
        __m512 d, nd;
        __m512i sc[8], mp[4];
        k4_header(b, &d, &nd, sc, mp);
        const size_t xg = (size_t)sb * nb + (size_t)t0;
        const int32_t *xw = (const int32_t *)(const void *)(J->xq + xg * 256);
        __m512i I[KT];
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) I[t] = _mm512_setzero_si512();
        for (int g = 0; g < 8; g++) {
            if (pf) x86_prefetch(b + (size_t)g * (tb / 8), tb / 8); /* spread: a burst fills the miss queue */
            __m512i is[KT];
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) is[t] = _mm512_setzero_si512();
#pragma GCC unroll 8
            for (int dd = 0; dd < 8; dd++) {
                const __m512i raw = _mm512_loadu_si512(b + qso + 64 * (8 * (g >> 1) + dd));
                __m512i w = (g & 1) ? _mm512_and_si512(_mm512_srli_epi16(raw, 4), m4) : _mm512_and_si512(raw, m4);
                if (q5) {
                    const __m512i h = _mm512_loadu_si512(b + 256 + 64 * dd);
                    w = _mm512_or_si512(w, _mm512_slli_epi16(_mm512_and_si512(_mm512_srl_epi16(h, _mm_cvtsi32_si128(g)), one), 4));
                }
#pragma GCC unroll 8
                for (int t = 0; t < T; t++) is[t] = _mm512_dpbusd_epi32(is[t], w, _mm512_set1_epi32(xw[64 * t + 8 * g + dd]));
            }
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) I[t] = _mm512_add_epi32(I[t], _mm512_mullo_epi32(is[t], sc[g]));
        }
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            const int32_t *xs = (const int32_t *)(const void *)(J->xsum + (xg + (size_t)t) * 8);
            __m512i M = _mm512_setzero_si512();
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++) M = _mm512_dpwssd_epi32(M, mp[i], _mm512_set1_epi32(xs[i]));
            const __m512 dx = _mm512_set1_ps(J->xd[xg + (size_t)t]);
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(I[t]), _mm512_mul_ps(d, dx), acc[t]);
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(M), _mm512_mul_ps(nd, dx), acc[t]);
        }
    }
    const __mmask16 m = nrow >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nrow) - 1);
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) _mm512_mask_storeu_ps(J->y + (size_t)(t0 + t) * J->n_out + r, m, acc[t]);
}

/* Q6_K value slice: dword dd (0..7) of quarter q (0..3) of half h, as signed bytes. */
X86_512 __m512i k6_slice(const uint8_t *b, int h, int q, int dd) {
    const __m512i ql = _mm512_loadu_si512(b + 64 * (16 * h + 8 * (q & 1) + dd));
    const __m512i qh = _mm512_loadu_si512(b + 2048 + 64 * (8 * h + dd));
    const __m512i m4 = _mm512_set1_epi8(0x0F), m3 = _mm512_set1_epi8(3);
    const __m512i lo = (q & 2) ? _mm512_and_si512(_mm512_srli_epi16(ql, 4), m4) : _mm512_and_si512(ql, m4);
    const __m512i hi = _mm512_and_si512(_mm512_srl_epi16(qh, _mm_cvtsi32_si128(2 * q)), m3);
    return _mm512_sub_epi8(_mm512_or_si512(lo, _mm512_slli_epi16(hi, 4)), _mm512_set1_epi8(32));
}

/* the 16 scales (int32 per row) and d of a Q6_K tile's super-block */
X86_512 void k6_header(const uint8_t *b, __m512i sc[16], __m512 *d) {
    for (int s2 = 0; s2 < 16; s2++)
        sc[s2] = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(const void *)(b + 3072 + 16 * s2)));
    *d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(b + 3328)));
}

/* value dword index (of 64) of half h, quarter q, dword dd; its sub-block */
#define K6_DW(h, q, dd) (32 * (h) + 8 * (q) + (dd))

X86_512 void k6_tile(const tp_mm_job *J, const int T, const uint8_t *tile, int32_t *corr, const int have_corr,
                     const int pf, int r, int nrow, int t0) {
    const int NS = J->n_in / 256, nb = J->nb;
    const size_t tb = 16 * 210;
    __m512 acc[KT];
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) acc[t] = _mm512_setzero_ps();
    for (int sb = 0; sb < NS; sb++) {
        const uint8_t *b = tile + (size_t)sb * tb;
        __m512i sc[16];
        __m512 d;
        k6_header(b, sc, &d);
        const size_t xg = (size_t)sb * nb + (size_t)t0;
        const int32_t *xw = (const int32_t *)(const void *)(J->xq + xg * 256);
        __m512i I[KT];
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) I[t] = _mm512_setzero_si512();
        __m512i C = _mm512_setzero_si512();
        for (int h = 0; h < 2; h++)
            for (int q = 0; q < 4; q++)
                for (int half = 0; half < 2; half++) { /* sub-block 8h + 2q + half: dwords 4 half .. +3 */
                    const int s2 = 8 * h + 2 * q + half;
                    if (pf) x86_prefetch(b + (size_t)s2 * (tb / 16), tb / 16);
                    __m512i is[KT], ws = _mm512_setzero_si512();
#pragma GCC unroll 8
                    for (int t = 0; t < T; t++) is[t] = _mm512_setzero_si512();
#pragma GCC unroll 4
                    for (int e = 0; e < 4; e++) {
                        const int dd = 4 * half + e;
                        const __m512i w = k6_slice(b, h, q, dd);
                        if (!have_corr) ws = _mm512_dpbusd_epi32(ws, _mm512_set1_epi8(1), w);
#pragma GCC unroll 8
                        for (int t = 0; t < T; t++)
                            is[t] = _mm512_dpbusd_epi32(is[t], _mm512_set1_epi32(xw[64 * t + K6_DW(h, q, dd)]), w);
                    }
                    if (!have_corr) C = _mm512_add_epi32(C, _mm512_mullo_epi32(ws, sc[s2]));
#pragma GCC unroll 8
                    for (int t = 0; t < T; t++) I[t] = _mm512_add_epi32(I[t], _mm512_mullo_epi32(is[t], sc[s2]));
                }
        /* the activations' + 128 added 128 * sum of scale * sum of q per row */
        if (!have_corr) _mm512_storeu_si512(corr + 16 * sb, _mm512_slli_epi32(C, 7));
        C = _mm512_loadu_si512(corr + 16 * sb);
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            const __m512 dx = _mm512_set1_ps(J->xd[xg + (size_t)t]);
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(I[t], C)), _mm512_mul_ps(d, dx), acc[t]);
        }
    }
    const __mmask16 m = nrow >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nrow) - 1);
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) _mm512_mask_storeu_ps(J->y + (size_t)(t0 + t) * J->n_out + r, m, acc[t]);
}

X86_512 void kq_tile(const tp_mm_job *J, const uint32_t type, const int T, const uint8_t *tile, int32_t *corr,
                     int have_corr, int pf, int r, int nrow, int t0) {
    if (type == TP_Q6_K) k6_tile(J, T, tile, corr, have_corr, pf, r, nrow, t0);
    else k4_tile(J, type == TP_Q5_K, T, tile, pf, r, nrow, t0);
}

X86_512 void avx512_kquant(const tp_mm_job *J, int r0, int r1, uint8_t *scratch, const uint32_t type) {
    /* scratch: the tile when it is built on the fly, then Q6_K's per-row corrections */
    int32_t *corr = (int32_t *)(void *)(scratch + (16 * J->row_bytes + 63) / 64 * 64);
    for (int r = r0; r < r1; r += 16) {
        const int nr = r1 - r < 16 ? r1 - r : 16;
        const uint8_t *tile = tp_mm_r16_tile(J, r, nr, scratch);
        const int stream = tile != scratch; /* prefetch weights read from memory */
        int t0 = 0, have = 0;
        for (; J->nb - t0 >= KT; t0 += KT, have = 1) kq_tile(J, type, KT, tile, corr, have, stream && !have, r, nr, t0);
        const int pf = stream && !have;
        switch (J->nb - t0) {
        case 7: kq_tile(J, type, 7, tile, corr, have, pf, r, nr, t0); break;
        case 6: kq_tile(J, type, 6, tile, corr, have, pf, r, nr, t0); break;
        case 5: kq_tile(J, type, 5, tile, corr, have, pf, r, nr, t0); break;
        case 4: kq_tile(J, type, 4, tile, corr, have, pf, r, nr, t0); break;
        case 3: kq_tile(J, type, 3, tile, corr, have, pf, r, nr, t0); break;
        case 2: kq_tile(J, type, 2, tile, corr, have, pf, r, nr, t0); break;
        case 1: kq_tile(J, type, 1, tile, corr, have, pf, r, nr, t0); break;
        default: break;
        }
    }
}

AVX512_KKERNEL(k_q4_K, TP_Q4_K)
AVX512_KKERNEL(k_q5_K, TP_Q5_K)
AVX512_KKERNEL(k_q6_K, TP_Q6_K)

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

/* R rows x T inputs (R <= 4, T <= 6): 24 accumulators, 4 weight registers.
 * Rows r .. r+R-1: in an R4 tile (lanes r%4 ..) when the weight is
 * interleaved and the tile whole, else the file's rows. Row i's elements
 * [16c, 16c+16) are at base[i] + c * cs, its tail at tail[i]. */
X86_512 void avx512_ftile(const tp_mm_job *J, const uint32_t type, const int R, const int T, int r, int b0,
                          const int pf) {
    const int n = J->n_in, n16 = n & ~15;
    const size_t es = type == TP_F32 ? 4 : 2;
    const int r4 = J->layout == TP_WL_R4 && r < J->n_out / 4 * 4;
    const uint8_t *base[4], *tail[4];
    size_t cs;
    if (r4) {
        const uint8_t *tile = J->w + (size_t)(r & ~3) * J->row_bytes;
        cs = 64 * es;
#pragma GCC unroll 4
        for (int i = 0; i < R; i++) {
            base[i] = tile + tp_r4_elem(n, (r & 3) + i, 0) * es;
            tail[i] = tile + tp_r4_elem(n, (r & 3) + i, n16) * es;
        }
    } else {
        cs = 16 * es;
#pragma GCC unroll 4
        for (int i = 0; i < R; i++) {
            base[i] = J->w + (size_t)(r + i) * J->row_bytes;
            tail[i] = base[i] + (size_t)n16 * es;
        }
    }
    const float *xs[6];
    __m512 acc[4][6];
#pragma GCC unroll 6
    for (int t = 0; t < T; t++) xs[t] = J->xf + (size_t)(b0 + t) * n;
#pragma GCC unroll 4
    for (int i = 0; i < R; i++)
#pragma GCC unroll 6
        for (int t = 0; t < T; t++) acc[i][t] = _mm512_setzero_ps();
    for (int k = 0; k < n16; k += 16) {
        const size_t off = (size_t)(k >> 4) * cs;
        if (pf) {
            if (r4) {
                if (R == 4 || (r & 3) == 0) x86_prefetch_f(base[0] + off, cs); /* the tile: one stream */
            } else if ((off & 63) == 0) {
#pragma GCC unroll 4
                for (int i = 0; i < R; i++) x86_prefetch_f(base[i] + off, 64);
            }
        }
        __m512 wv[4];
#pragma GCC unroll 4
        for (int i = 0; i < R; i++) wv[i] = load16f(type, base[i] + off, 0);
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
            for (int k = n16; k < n; k++) s = fmaf(tp_mm_elem_f32(type, tail[i], k - n16), xs[t][k], s);
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
    int r = r0; /* a multiple of 16: R4 tiles start at r */
    for (; r + 4 <= r1; r += 4) avx512_frow_tiles(J, type, 4, r, 1);
    for (; r < r1; r++) avx512_frow_tiles(J, type, 1, r, 1);
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
    impl->kernel[TP_Q4_K] = k_q4_K;
    impl->kernel[TP_Q5_K] = k_q5_K;
    impl->kernel[TP_Q6_K] = k_q6_K;
    /* the activation quantizers of the AVX2 level (same bytes; not the bottleneck) */
    return 1;
}

#endif /* __x86_64__ */
