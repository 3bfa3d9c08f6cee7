/* matmul_avx512.c: AVX-512 (F/BW/VL + VNNI) kernels.
 *
 * Legacy types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0): two rows per register, ggml's
 * order of operations (results equal llama.cpp's and the other levels'), see
 * the g8_* functions.
 *
 * K-quants (Q4_K, Q5_K, Q6_K) work on chunks of 16 groups of 32 weights. A
 * chunk of a row is decoded to unsigned bytes (value + offset) and transposed
 * so that int32 lane i of each of 8 registers holds 4 weights of group i; the
 * activations are stored in the same transposed layout (matmul_internal.h).
 * 8 VPDPBUSD then give the 16 groups' integer dot products, started from the
 * activations' offset corrections, and a single convert + multiply + FMA
 * applies the 16 groups' weight and activation scales: 512 products for ~11
 * instructions. Two rows are done together so that each activation load feeds
 * two VPDPBUSD, and a row pair's decoded chunk serves all the inputs. (ggml's
 * own K-quant order is different again, so nothing is lost in exactness.)
 *
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
X86_512 float hsum_lo(__m512 v) { return x86_hsum8(_mm512_castps512_ps256(v)); }
X86_512 float hsum_hi(__m512 v) {
    return x86_hsum8(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}

/* ------------------------------------------------------------------------ */
/* legacy types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0): ggml's order                */
/*
 * One 512-bit register holds the same block of row r (low half) and row r+1
 * (high half) as unsigned bytes; the input block (32 int8) is broadcast to
 * both halves. Per block and input: VPDPBUSD from the offset correction gives
 * the 8 int32 lanes of 4 products of each row -- the very lanes ggml's AVX2
 * vec_dot forms -- then acc = fma(float(lanes), d_w*d_x, acc), and each half
 * is summed like ggml's hsum_float_8, so the results equal llama.cpp's (and
 * the other levels') bit for bit. Blocks of both rows are decoded once per
 * tile of up to 16 inputs.
 */

/* [h0 x 8 | h1 x 8] as floats: both halves in one integer, one convert of
 * two values, one lane permute */
X86_512 __m512 f16_pair(const uint8_t *a, const uint8_t *b) {
    uint16_t ha, hb;
    memcpy(&ha, a, 2);
    memcpy(&hb, b, 2);
    const __m128 f = _mm_cvtph_ps(_mm_cvtsi32_si128((int)((uint32_t)ha | ((uint32_t)hb << 16))));
    const __m512i idx = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(f));
}

typedef struct {
    __m512i q; /* unsigned bytes (value + offset) */
    __m512 s;  /* d of row r x 8 | d of row r+1 x 8 */
    __m512 m;  /* Q4_1/Q5_1: [m_r, 0 x 7, m_r+1, 0 x 7] */
} g8_block;

/* Scales of blocks g (a0, b0) and g+1 (a1, b1) of rows r and r+1: four
 * halves in one integer, one convert, two lane permutes. */
X86_512 void f16_pair2(const uint8_t *a0, const uint8_t *b0, const uint8_t *a1, const uint8_t *b1, __m512 *s0,
                       __m512 *s1) {
    uint16_t h[4];
    memcpy(&h[0], a0, 2);
    memcpy(&h[1], b0, 2);
    memcpy(&h[2], a1, 2);
    memcpy(&h[3], b1, 2);
    const uint64_t v = (uint64_t)h[0] | ((uint64_t)h[1] << 16) | ((uint64_t)h[2] << 32) | ((uint64_t)h[3] << 48);
    const __m512 f = _mm512_castps128_ps512(_mm_cvtph_ps(_mm_cvtsi64_si128((long long)v)));
    *s0 = _mm512_permutexvar_ps(_mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1), f);
    *s1 = _mm512_permutexvar_ps(_mm512_setr_epi32(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3), f);
}

/* Block of rows r (at a) and r+1 (at b); the scale s only if with_s. */
X86_512 void g8_decode(const uint32_t type, const uint8_t *a, const uint8_t *b, g8_block *o, const int with_s) {
    if (with_s) o->s = f16_pair(a, b);
    o->m = _mm512_setzero_ps();
    if (type == TP_Q8_0) {
        o->q = _mm512_xor_si512(cat_si(_mm256_loadu_si256((const __m256i *)(const void *)(a + 2)),
                                       _mm256_loadu_si256((const __m256i *)(const void *)(b + 2))),
                                _mm512_set1_epi8((char)0x80));
        return;
    }
    const size_t qo = type == TP_Q4_0 ? 2 : type == TP_Q4_1 ? 4 : type == TP_Q5_0 ? 6 : 8;
    /* [qs_a, qs_a, qs_b, qs_b]; the second copy of each gives the high nibbles */
    __m512i v = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(const void *)(a + qo)));
    v = _mm512_mask_broadcast_i32x4(v, 0xFF00, _mm_loadu_si128((const __m128i *)(const void *)(b + qo)));
    v = _mm512_and_si512(_mm512_mask_srli_epi16(v, 0xFF00FF00u, v, 4), _mm512_set1_epi8(0x0F));
    if (type == TP_Q5_0 || type == TP_Q5_1) {
        uint32_t qa, qb;
        memcpy(&qa, a + qo - 4, 4);
        memcpy(&qb, b + qo - 4, 4);
        __mmask64 hi = _cvtu64_mask64((uint64_t)qa | ((uint64_t)qb << 32));
        v = _mm512_mask_add_epi8(v, hi, v, _mm512_set1_epi8(0x10));
    }
    o->q = v;
    if (type == TP_Q4_1 || type == TP_Q5_1) {
        float ma = x86_f16(a + 2), mb = x86_f16(b + 2);
        o->m = _mm512_set_ps(0, 0, 0, 0, 0, 0, 0, mb, 0, 0, 0, 0, 0, 0, 0, ma);
    }
}

/* Rows rr[0..2*NP) (pairs: rr[0], rr[1]; rr[2], rr[3]) against inputs
 * b0..b0+T-1. NP = 2 pairs give two independent FMA chains per input (each
 * output's chain is sequential over the blocks, as in ggml, and its latency
 * would otherwise bound small tiles). */
X86_512 void g8_tile(const tp_mm_job *J, const uint32_t type, const int NP, const int T, const uint8_t *const *rr,
                     int r, int nrows, int b0) {
    const int G = J->n_in / 32;
    const size_t bs = type == TP_Q8_0 ? 34 : type == TP_Q4_0 ? 18 : type == TP_Q4_1 ? 20 : type == TP_Q5_0 ? 22 : 24;
    const int corr = type == TP_Q8_0 || type == TP_Q4_0 || type == TP_Q5_0;
    const int mins = X86_HAS_MIN(type);
    /* group-major activations: the tile's inputs are adjacent */
    const int8_t *xq = J->xq + (size_t)b0 * 32;
    const int32_t *xc = J->xc + (size_t)b0 * 8;
    const float *xd = J->xd + b0, *xm = J->xm + b0;
    const size_t qgs = J->xq_gs, cgs = J->xc_gs, ggs = J->xg_gs;
    __m512 acc[2][16], macc[2][16];
#pragma GCC unroll 2
    for (int pp = 0; pp < NP; pp++)
#pragma GCC unroll 16
        for (int t = 0; t < T; t++) acc[pp][t] = macc[pp][t] = _mm512_setzero_ps();
    const size_t rbytes = J->row_bytes;
    for (int g = 0; g < G; g += 2) {
        const size_t o0 = (size_t)g * bs;
        {
            /* the weights stream: fetch the next 2*NP rows at this offset (a
             * whole tile of rows ahead, enough to cover the memory latency) */
            const char *nx = (const char *)rr[0] + (size_t)(2 * NP) * rbytes + o0;
#pragma GCC unroll 4
            for (int i = 0; i < 2 * NP; i++) {
                _mm_prefetch(nx + (size_t)i * rbytes, _MM_HINT_T0);
                _mm_prefetch(nx + (size_t)i * rbytes + 64, _MM_HINT_T0);
            }
        }
        /* two blocks per step (their scales are converted together) */
        const int n2 = g + 1 < G ? 2 : 1;
        g8_block w[2][2];
#pragma GCC unroll 2
        for (int pp = 0; pp < NP; pp++) {
            const uint8_t *a = rr[2 * pp] + o0, *b = rr[2 * pp + 1] + o0;
            if (n2 == 2) {
                f16_pair2(a, b, a + bs, b + bs, &w[pp][0].s, &w[pp][1].s);
                g8_decode(type, a, b, &w[pp][0], 0);
                g8_decode(type, a + bs, b + bs, &w[pp][1], 0);
            } else {
                g8_decode(type, a, b, &w[pp][0], 1);
            }
        }
#pragma GCC unroll 2
        for (int h = 0; h < n2; h++) {
            const size_t gh = (size_t)(g + h);
            const int8_t *xqg = xq + gh * qgs;
            const int32_t *xcg = xc + gh * cgs;
            const float *xdg = xd + gh * ggs, *xmg = xm + gh * ggs;
#pragma GCC unroll 16
            for (int t = 0; t < T; t++) {
                const __m512i x = bcast_si(xqg + 32 * t);
                const __m512i c = corr ? bcast_si(xcg + 8 * t) : _mm512_setzero_si512();
                const __m512 dx = _mm512_set1_ps(xdg[t]);
#pragma GCC unroll 2
                for (int pp = 0; pp < NP; pp++) {
                    const __m512i p = _mm512_dpbusd_epi32(c, w[pp][h].q, x);
                    acc[pp][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(w[pp][h].s, dx), acc[pp][t]);
                    if (mins)
                        macc[pp][t] = _mm512_add_ps(macc[pp][t], _mm512_mul_ps(w[pp][h].m, _mm512_set1_ps(xmg[t])));
                }
            }
        }
    }
#pragma GCC unroll 2
    for (int pp = 0; pp < NP; pp++)
#pragma GCC unroll 16
        for (int t = 0; t < T; t++) {
            float *y = J->y + (size_t)(b0 + t) * J->n_out + r + 2 * pp;
            float ma = 0.0f, mb = 0.0f;
            if (mins) {
                ma = _mm512_cvtss_f32(macc[pp][t]);
                mb = _mm512_cvtss_f32(_mm512_castps256_ps512(
                    _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(macc[pp][t]), 1))));
            }
            if (2 * pp < nrows) y[0] = hsum_lo(acc[pp][t]) + ma;
            if (2 * pp + 1 < nrows) y[1] = hsum_hi(acc[pp][t]) + mb;
        }
}

X86_512 void g8_rows(const tp_mm_job *J, int r0, int r1, const uint32_t type) {
    const int big = X86_HAS_MIN(type) ? 8 : 16; /* registers: acc (+ macc) per input */
    for (int r = r0; r < r1;) {
        const int nrows = r1 - r >= 4 && J->nb <= 2 ? 4 : r1 - r >= 2 ? 2 : 1;
        const uint8_t *rr[4];
        for (int i = 0; i < 4; i++) rr[i] = J->w + (size_t)(r + (i < nrows ? i : nrows - 1)) * J->row_bytes;
        int b = 0;
        if (nrows == 4) {
            if (J->nb == 2) g8_tile(J, type, 2, 2, rr, r, 4, 0);
            else g8_tile(J, type, 2, 1, rr, r, 4, 0);
            r += 4;
            continue;
        }
        if (big == 16)
            for (; J->nb - b >= 16; b += 16) g8_tile(J, type, 1, 16, rr, r, nrows, b);
        for (; J->nb - b >= 8; b += 8) g8_tile(J, type, 1, 8, rr, r, nrows, b);
        if (J->nb - b >= 4) { g8_tile(J, type, 1, 4, rr, r, nrows, b); b += 4; }
        if (J->nb - b >= 2) { g8_tile(J, type, 1, 2, rr, r, nrows, b); b += 2; }
        if (J->nb - b >= 1) g8_tile(J, type, 1, 1, rr, r, nrows, b);
        r += nrows;
    }
}

#define AVX512_G8KERNEL(name, type)                                                        \
    __attribute__((target(X86_512_TARGET))) static void name(const tp_mm_job *J, int r0, \
                                                             int r1, float *scratch) {   \
        (void)scratch;                                                                   \
        g8_rows(J, r0, r1, type);                                                        \
    }

AVX512_G8KERNEL(k_q8_0, TP_Q8_0)
AVX512_G8KERNEL(k_q4_0, TP_Q4_0)
AVX512_G8KERNEL(k_q4_1, TP_Q4_1)
AVX512_G8KERNEL(k_q5_0, TP_Q5_0)
AVX512_G8KERNEL(k_q5_1, TP_Q5_1)

/* ------------------------------------------------------------------------ */
/* K-quants: chunks of 16 groups, one group per int32 lane            */

/* vpermt2d index tables (filled once): the 16x8 dword transpose (a, b, c)
 * and the Q4_K chunk pick (k4). */
static int32_t g_tr_a[2][16], g_tr_b[2][16], g_tr_c[2][16], g_tr_k4[8][16];

static void init_transpose_tables(void) {
    for (int k = 0; k < 2; k++)
        for (int jj = 0; jj < 4; jj++)
            for (int gg = 0; gg < 4; gg++) g_tr_a[k][4 * jj + gg] = 16 * (gg >> 1) + 8 * (gg & 1) + 4 * k + jj;
    for (int l = 0; l < 2; l++)
        for (int jj = 0; jj < 2; jj++)
            for (int g8 = 0; g8 < 8; g8++) g_tr_b[l][8 * jj + g8] = 16 * (g8 >> 2) + 4 * (2 * l + jj) + (g8 & 3);
    for (int jj = 0; jj < 2; jj++)
        for (int i = 0; i < 16; i++) g_tr_c[jj][i] = 16 * (i >> 3) + 8 * jj + (i & 7);
    for (int j = 0; j < 8; j++)
        for (int i = 0; i < 16; i++) g_tr_k4[j][i] = 8 * ((i >> 1) & 3) + j;
}

/* N[m] = [group 2m | group 2m+1] (32 bytes each)  ->  W[j]: lane i = bytes 4j..4j+3 of group i.
 * Three rounds of two-source dword permutes: 4 groups x 4 dwords, then 8 x 2, then 16 x 1. */
X86_512 void transpose16(const __m512i N[8], __m512i W[8]) {
    const __m512i a0 = _mm512_loadu_si512(g_tr_a[0]), a1 = _mm512_loadu_si512(g_tr_a[1]);
    const __m512i b0 = _mm512_loadu_si512(g_tr_b[0]), b1 = _mm512_loadu_si512(g_tr_b[1]);
    const __m512i c0 = _mm512_loadu_si512(g_tr_c[0]), c1 = _mm512_loadu_si512(g_tr_c[1]);
    __m512i P[4][2], Q[2][2][2];
#pragma GCC unroll 4
    for (int a = 0; a < 4; a++) {
        P[a][0] = _mm512_permutex2var_epi32(N[2 * a], a0, N[2 * a + 1]);
        P[a][1] = _mm512_permutex2var_epi32(N[2 * a], a1, N[2 * a + 1]);
    }
#pragma GCC unroll 2
    for (int b = 0; b < 2; b++)
#pragma GCC unroll 2
        for (int k = 0; k < 2; k++) {
            Q[b][k][0] = _mm512_permutex2var_epi32(P[2 * b][k], b0, P[2 * b + 1][k]);
            Q[b][k][1] = _mm512_permutex2var_epi32(P[2 * b][k], b1, P[2 * b + 1][k]);
        }
#pragma GCC unroll 2
    for (int k = 0; k < 2; k++)
#pragma GCC unroll 2
        for (int l = 0; l < 2; l++) {
            W[4 * k + 2 * l] = _mm512_permutex2var_epi32(Q[0][k][l], c0, Q[1][k][l]);
            W[4 * k + 2 * l + 1] = _mm512_permutex2var_epi32(Q[0][k][l], c1, Q[1][k][l]);
        }
}

/* One weight row's chunk k, ready for the dot products: unsigned bytes in
 * the transposed layout, per-lane (= per-group) scales and mins. Q6_K has two
 * 16-value sub-blocks per group: s for values 0-15, s2 for 16-31. */
typedef struct {
    __m512i w[8];
    __m512 s, s2, m;
} t16_chunk;

/* Full chunks of Q4_K/Q5_K without the per-group AVX2 decode. */

/* Q4_K/Q5_K, two super-blocks: group i is nibble (i & 1) of 32-byte chunk
 * (i >> 1) & 3 of super-block i >> 3; Q5_K adds bit (i & 7) of qh. */
X86_512 void prep_q4k(const uint32_t type, const uint8_t *b, t16_chunk *o) {
    const int q5 = type == TP_Q5_K;
    const size_t bs = q5 ? 176 : 144, qo = q5 ? 48 : 16;
    const __m512i z00 = _mm512_loadu_si512(b + qo), z01 = _mm512_loadu_si512(b + qo + 64);
    const __m512i z10 = _mm512_loadu_si512(b + bs + qo), z11 = _mm512_loadu_si512(b + bs + qo + 64);
    const __m512i lo4 = _mm512_set1_epi8(0x0F);
    __m512i qh = _mm512_setzero_si512(), qsh = _mm512_setzero_si512();
    if (q5) {
        qh = cat_si(_mm256_loadu_si256((const __m256i *)(const void *)(b + 16)),
                    _mm256_loadu_si256((const __m256i *)(const void *)(b + bs + 16)));
        qsh = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7);
    }
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++) {
        const __m512i idx = _mm512_loadu_si512(g_tr_k4[j]);
        __m512i w = _mm512_mask_blend_epi32(0xFF00, _mm512_permutex2var_epi32(z00, idx, z01),
                                            _mm512_permutex2var_epi32(z10, idx, z11));
        w = _mm512_and_si512(_mm512_mask_srli_epi16(w, 0xCCCCCCCCu, w, 4), lo4);
        if (q5) {
            __m512i h = _mm512_permutexvar_epi32(_mm512_setr_epi32(j, j, j, j, j, j, j, j, 8 + j, 8 + j, 8 + j, 8 + j,
                                                                   8 + j, 8 + j, 8 + j, 8 + j), qh);
            h = _mm512_and_si512(_mm512_srlv_epi32(h, qsh), _mm512_set1_epi8(1));
            w = _mm512_or_si512(w, _mm512_slli_epi32(h, 4));
        }
        o->w[j] = w;
    }
    xhdr h0 = x86_hdr(type, b, 0), h1 = x86_hdr(type, b, 1);
    o->s = o->s2 = cat_ps(h0.sc, h1.sc);
    o->m = cat_ps(h0.mn, h1.mn);
}

X86_512 void t16_prep(const uint32_t type, const uint8_t *row, int k, int G, t16_chunk *o) {
    __m512i N[8];
    if (16 * k + 16 <= G) {
        if (type == TP_Q4_K || type == TP_Q5_K) {
            prep_q4k(type, row + (size_t)k * 2 * (type == TP_Q4_K ? 144 : 176), o);
            return;
        }
    }
    {
        /* chunk k = super-blocks 2k, 2k+1 (the second may be past the row) */
        xhdr h[2];
#pragma GCC unroll 2
        for (int s = 0; s < 2; s++) {
            const int sb = 2 * k + s;
            const int have = 16 * k + 8 * s < G;
            if (have) h[s] = x86_hdr(type, row, sb);
            else h[s].sc = h[s].mn = _mm256_setzero_ps();
#pragma GCC unroll 4
            for (int m = 0; m < 4; m++) {
                if (have) {
                    xgroup ga = x86_group(type, row, sb, 2 * m, &h[s]), gb = x86_group(type, row, sb, 2 * m + 1, &h[s]);
                    N[4 * s + m] = cat_si(ga.q, gb.q);
                } else {
                    N[4 * s + m] = _mm512_setzero_si512();
                }
            }
        }
        if (type == TP_Q6_K) {
            /* sub-block scales 2i (values 0-15 of group i) and 2i+1 */
            __m512 s0 = cat_ps(h[0].sc, h[0].mn), s1 = cat_ps(h[1].sc, h[1].mn);
            const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            const __m512i od = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
            o->s = _mm512_permutex2var_ps(s0, ev, s1);
            o->s2 = _mm512_permutex2var_ps(s0, od, s1);
            o->m = _mm512_setzero_ps();
        } else {
            o->s = o->s2 = cat_ps(h[0].sc, h[1].sc);
            o->m = cat_ps(h[0].mn, h[1].mn);
        }
    }
    transpose16(N, o->w);
}

/* 16 accumulators -> their 16 horizontal sums, in order (a tree of lane
 * shuffles instead of 16 separate reductions). */
X86_512 __m512 hsum16(const __m512 *a) {
    __m512 s1[8], s2[4], s3[2];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) /* [a.q0+a.q2, a.q1+a.q3, b.q0+b.q2, b.q1+b.q3] */
        s1[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0x44),
                              _mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0xEE));
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) /* quarter q: the 4 partial sums of acc 4i+q */
        s2[i] = _mm512_add_ps(_mm512_shuffle_f32x4(s1[2 * i], s1[2 * i + 1], 0x88),
                              _mm512_shuffle_f32x4(s1[2 * i], s1[2 * i + 1], 0xDD));
#pragma GCC unroll 2
    for (int i = 0; i < 2; i++) /* quarter q: [u0+u2, v0+v2, u1+u3, v1+v3], u = s2[2i], v = s2[2i+1] */
        s3[i] = _mm512_add_ps(_mm512_unpacklo_ps(s2[2 * i], s2[2 * i + 1]),
                              _mm512_unpackhi_ps(s2[2 * i], s2[2 * i + 1]));
    /* quarter q: [sum acc q, sum acc 4+q, sum acc 8+q, sum acc 12+q] */
    __m512 r = _mm512_add_ps(_mm512_shuffle_ps(s3[0], s3[1], 0x44), _mm512_shuffle_ps(s3[0], s3[1], 0xEE));
    /* lane 4q + m holds acc 4m + q: transpose the 4x4 */
    const __m512i idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    return _mm512_permutexvar_ps(idx, r);
}

/* Rows r and r+1 (ra, rb; rb == ra when the row is single) against all nb
 * inputs. Per chunk, both rows are decoded once and kept in registers; each
 * activation load then feeds two VPDPBUSD. The float accumulators of the nb
 * inputs live in a small buffer (L1): acc[2t] row r, acc[2t+1] row r+1. */
X86_512 void t16_rowpair(const tp_mm_job *J, const uint32_t type, const uint8_t *ra, const uint8_t *rb, int r,
                         int two) {
    const int G = J->n_in / 32, nk = (G + 15) / 16, nb = J->nb;
    const int corr = type == TP_Q6_K;
    const int mins = X86_K_MIN(type);
    __m512 acc[2 * TP_MATMUL_MAX_BATCH];
    for (int t = 0; t < 2 * nb; t++) acc[t] = _mm512_setzero_ps();
    for (int k = 0; k < nk; k++) {
        {
            /* the weights stream: fetch the next row pair's chunk k */
            const size_t cb = J->row_bytes / (size_t)nk;
            const char *nx = (const char *)ra + 2 * J->row_bytes + (size_t)k * cb;
            for (size_t l = 0; l < cb; l += 64) {
                _mm_prefetch(nx + l, _MM_HINT_T0);
                _mm_prefetch(nx + J->row_bytes + l, _MM_HINT_T0);
            }
        }
        t16_chunk ca, cb;
        t16_prep(type, ra, k, G, &ca);
        t16_prep(type, rb, k, G, &cb);
        for (int t = 0; t < nb; t++) {
            const int8_t *xq = J->xq + (size_t)t * J->xq_bs + 512 * (size_t)k;
            const int32_t *xc = J->xc + (size_t)t * J->xc_bs + 32 * (size_t)k;
            const size_t xg = (size_t)t * J->xg_bs + 16 * (size_t)k;
            /* values 0-15 and 16-31 of each group in separate chains (shorter
             * latency; Q6_K scales them separately) */
            __m512i a0 = corr ? _mm512_loadu_si512(xc) : _mm512_setzero_si512();
            __m512i a1 = corr ? _mm512_loadu_si512(xc + 16) : _mm512_setzero_si512();
            __m512i b0 = a0, b1 = a1;
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) {
                const __m512i x0 = _mm512_loadu_si512(xq + 64 * j), x1 = _mm512_loadu_si512(xq + 64 * (j + 4));
                a0 = _mm512_dpbusd_epi32(a0, ca.w[j], x0);
                b0 = _mm512_dpbusd_epi32(b0, cb.w[j], x0);
                a1 = _mm512_dpbusd_epi32(a1, ca.w[j + 4], x1);
                b1 = _mm512_dpbusd_epi32(b1, cb.w[j + 4], x1);
            }
            const __m512 dx = _mm512_loadu_ps(J->xd + xg);
            __m512 fa = acc[2 * t], fb = acc[2 * t + 1];
            if (type == TP_Q6_K) {
                fa = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a0), _mm512_mul_ps(ca.s, dx), fa);
                fa = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a1), _mm512_mul_ps(ca.s2, dx), fa);
                fb = _mm512_fmadd_ps(_mm512_cvtepi32_ps(b0), _mm512_mul_ps(cb.s, dx), fb);
                fb = _mm512_fmadd_ps(_mm512_cvtepi32_ps(b1), _mm512_mul_ps(cb.s2, dx), fb);
            } else {
                fa = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(a0, a1)), _mm512_mul_ps(ca.s, dx), fa);
                fb = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(b0, b1)), _mm512_mul_ps(cb.s, dx), fb);
            }
            if (mins) {
                const __m512 xm = _mm512_loadu_ps(J->xm + xg);
                fa = _mm512_fmadd_ps(ca.m, xm, fa);
                fb = _mm512_fmadd_ps(cb.m, xm, fb);
            }
            acc[2 * t] = fa;
            acc[2 * t + 1] = fb;
        }
    }
    int t = 0;
    for (; t + 8 <= nb; t += 8) {
        _Alignas(64) float sums[16];
        _mm512_store_ps(sums, hsum16(acc + 2 * t));
        for (int u = 0; u < 8; u++) {
            float *y = J->y + (size_t)(t + u) * J->n_out + r;
            y[0] = sums[2 * u];
            if (two) y[1] = sums[2 * u + 1];
        }
    }
    for (; t < nb; t++) {
        float *y = J->y + (size_t)t * J->n_out + r;
        y[0] = _mm512_reduce_add_ps(acc[2 * t]);
        if (two) y[1] = _mm512_reduce_add_ps(acc[2 * t + 1]);
    }
}

X86_512 void t16_rows(const tp_mm_job *J, int r0, int r1, const uint32_t type) {
    for (int r = r0; r < r1; r += 2) {
        const uint8_t *ra = J->w + (size_t)r * J->row_bytes;
        const int two = r + 1 < r1;
        t16_rowpair(J, type, ra, two ? ra + J->row_bytes : ra, r, two);
    }
}

#define AVX512_QKERNEL(name, type)                                                         \
    __attribute__((target(X86_512_TARGET))) static void name(const tp_mm_job *J, int r0, \
                                                             int r1, float *scratch) {   \
        (void)scratch;                                                                   \
        t16_rows(J, r0, r1, type);                                                       \
    }

AVX512_QKERNEL(k_q4_K, TP_Q4_K)
AVX512_QKERNEL(k_q5_K, TP_Q5_K)
AVX512_QKERNEL(k_q6_K, TP_Q6_K)

/* ------------------------------------------------------------------------ */
/* activation quantizers: the AVX2 ones per chunk, then transposed           */

X86_512 void t16_quant(const float *x, int n, int offset, int8_t *q, int32_t *c, float *d, float *m) {
    const int G = n / 32, nk = (G + 15) / 16;
    _Alignas(64) int8_t tq[512];
    _Alignas(64) int32_t tc[128];
    for (int k = 0; k < nk; k++) {
        int ng = G - 16 * k < 16 ? G - 16 * k : 16;
        tp_mm_quant_q8k_avx2(x + 512 * k, 32 * ng, offset, tq, tc, d + 16 * k, m + 16 * k, 32, 8, 1);
        for (int i = ng; i < 16; i++) {
            memset(tq + 32 * i, 0, 32);
            memset(tc + 8 * i, 0, 32);
            d[16 * k + i] = m[16 * k + i] = 0.0f;
        }
        __m512i N[8], W[8];
        for (int i = 0; i < 8; i++) N[i] = _mm512_load_si512(tq + 64 * i);
        transpose16(N, W);
        for (int j = 0; j < 8; j++) _mm512_storeu_si512(q + 512 * (size_t)k + 64 * j, W[j]);
        for (int i = 0; i < 16; i++) {
            c[32 * k + i] = tc[8 * i] + tc[8 * i + 1] + tc[8 * i + 2] + tc[8 * i + 3];
            c[32 * k + 16 + i] = tc[8 * i + 4] + tc[8 * i + 5] + tc[8 * i + 6] + tc[8 * i + 7];
        }
    }
}

__attribute__((target(X86_512_TARGET))) static void quant_q8k_t16(const float *x, int n, int offset, int8_t *q,
                                                                  int32_t *c, float *d, float *m, size_t qg,
                                                                  size_t cg, size_t dg) {
    (void)qg, (void)cg, (void)dg; /* fixed T16 layout */
    t16_quant(x, n, offset, q, c, d, m);
}

/* ------------------------------------------------------------------------ */
/* float kernels                                                             */

X86_512 __m512 load16f(const uint32_t type, const uint8_t *row, int i) {
    if (type == TP_F32) return _mm512_loadu_ps((const float *)(const void *)row + i);
    __m256i h = _mm256_loadu_si256((const __m256i *)(const void *)(row + 2 * (size_t)i));
    if (type == TP_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); /* BF16 */
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
            for (int k = n16; k < n; k++) s += tp_mm_elem_f32(type, rows[i], k) * xs[t][k];
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
    for (int t = 0; t < TP_MM_NTYPES; t++) {
        int kind = tp_mm_act_kind((uint32_t)t);
        if (!impl->kernel[t] || kind == TP_ACT_F32) continue;
        /* legacy types: the natural layout of the AVX2 quantizer; K-quants: transposed */
        impl->quant[t] = kind == TP_ACT_Q8 ? tp_mm_quant_q8_avx2 : quant_q8k_t16;
        impl->layout[t] = kind == TP_ACT_Q8 ? TP_LAYOUT_GROUP_MAJOR : TP_LAYOUT_T16;
    }
    impl->row_step = 4;
    init_transpose_tables();
    return 1;
}

#endif /* __x86_64__ */
