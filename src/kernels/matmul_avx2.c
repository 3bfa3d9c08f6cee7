/* matmul_avx2.c: AVX2+FMA+F16C kernels and activation quantizers.
 *
 * Every output is computed with the operations of the generic kernels
 * (matmul.c) in the same order, so the results equal the other levels' bit
 * for bit; only the way many outputs share loads and instructions differs.
 *
 * Legacy types: 16-row tiles (matmul_internal.h: the repacked layout, or a U8
 * tile built in scratch), worked on as two halves of 8 rows (one 32-bit lane
 * per row) against up to 4 inputs. Per 32-value block and input: the 4-value
 * slices of the 8 rows meet the input's 4 values broadcast to every lane
 * (_mm256_maddubs_epi16: unsigned weight x signed activation pairs into int16),
 * several slices are added in int16 while the sums cannot overflow, one
 * _mm256_madd_epi16 widens to int32, and one convert + multiply + FMA applies
 * the block's scales to the 8 outputs. No horizontal sums. Q8_0 weights are
 * signed (|w| * sign(x, w), as ggml), because w + 128 could overflow an int16
 * pair.
 * Float types: tiles of 2 rows x 3 inputs with 16 float lanes per output (two
 * registers, the generic order), 12 accumulators.
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

/* sum of 32 int8 */
X86_AVX2 int sum32(__m256i q) {
    __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), q), _mm256_set1_epi16(1));
    __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4E));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xB1));
    return _mm_cvtsi128_si32(t);
}

__attribute__((target("avx2,fma,f16c"))) void tp_mm_quant_q8_avx2(const float *x, int n, int offset, int8_t *q,
                                                                 size_t qs, float *d, int32_t *c, float *s,
                                                                 int16_t *sums, size_t ds) {
    (void)sums;
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
        _mm256_storeu_si256((__m256i *)(void *)(q + (size_t)g * qs), qv);
        int sum = sum32(qv);
        d[(size_t)g * ds] = round_f16_x86(dd);
        c[(size_t)g * ds] = -offset * sum;
        s[(size_t)g * ds] = round_f16_x86(dd * (float)sum);
    }
}

__attribute__((target("avx2,fma,f16c"))) void tp_mm_quant_q8k_avx2(const float *x, int n, int offset, int8_t *q,
                                                                  size_t qs, float *d, int32_t *c, float *s,
                                                                  int16_t *sums, size_t ds) {
    (void)c, (void)s;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int b = 0; b < n / 256; b++) {
        const float *xs = x + 256 * b;
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
        const __m256i xo = _mm256_set1_epi8((char)(uint8_t)offset);
        int8_t *qb = q + (size_t)b * qs;
        int16_t *sb = sums + 8 * (size_t)b * ds;
        for (int g = 0; g < 8; g++) {
            const float *xg = xs + 32 * g;
            __m256i i0 = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xg), is)), lim);
            __m256i i1 = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xg + 8), is)), lim);
            __m256i i2 = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xg + 16), is)), lim);
            __m256i i3 = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xg + 24), is)), lim);
            __m256i qv = pack32(i0, i1, i2, i3);
            sb[g] = (int16_t)sum32(qv);
            _mm256_storeu_si256((__m256i *)(void *)(qb + 32 * g), _mm256_add_epi8(qv, xo));
        }
        d[(size_t)b * ds] = dd;
    }
}


/* outputs of rows r .. r+nrow-1 (nrow may exceed 8: then 8) for inputs t0.. */
X86_AVX2 void store8(const tp_mm_job *J, const int T, const __m256 *acc, int r, int nrow, int t0) {
    for (int t = 0; t < T; t++) {
        float *y = J->y + (size_t)(t0 + t) * J->n_out + r;
        if (nrow >= 8) {
            _mm256_storeu_ps(y, acc[t]);
        } else {
            float tmp[8];
            _mm256_storeu_ps(tmp, acc[t]);
            memcpy(y, tmp, sizeof(float) * (size_t)nrow);
        }
    }
}

/* ------------------------------------------------------------------------ */
/* legacy types: 8 rows x T inputs                                          */

enum { FMT_Q4 = 0, FMT_U8 = 1 };

/* Half h (rows 8h..8h+7) of a 16-row tile against inputs t0..t0+T-1.
 * fmt: FMT_Q4 (repacked Q4_0) or FMT_U8; off: the weight type's offset
 * (128: signed Q8_0 values); mins: the tile's fp16 mins (Q4_1/Q5_1) or NULL.
 * Results go to y[(t0+t)*n_out + r + 8h + i] for i < nrow. */
X86_AVX2 void r8_tile(const tp_mm_job *J, const uint32_t type, const int fmt, const int T, const uint8_t *tile,
                      const uint8_t *mins, const int pf, int h, int r, int nrow, int t0) {
    const int G = J->n_in / 32, nb = J->nb, off = x86_offset(type);
    const size_t bs = fmt == FMT_Q4 ? TP_R16_Q4_0 : TP_R16_U8;
    const int sgn = type == TP_Q8_0;
    const int corr = off != 0 && !sgn;
    /* int16 partial sums of maddubs pairs that cannot overflow: |pair| <=
     * 2*15*128 = 3840 for 4-bit values (8 fit), 2*31*128 for 5-bit (4 fit),
     * 2*127*127 for signed 8-bit (1 fits) */
    const int k16 = sgn ? 1 : type == TP_Q4_0 || type == TP_Q4_1 ? 8 : 4;
    const __m256i ones = _mm256_set1_epi16(1), m4 = _mm256_set1_epi8(0x0F), x80 = _mm256_set1_epi8((char)0x80);
    __m256 acc[4];
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) acc[t] = _mm256_setzero_ps();
    for (int g = 0; g < G; g++) {
        const uint8_t *b = tile + (size_t)g * bs;
        if (pf) x86_prefetch(b, bs);
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(b + 16 * h)));
        const int32_t *xw = (const int32_t *)(const void *)(J->xq + ((size_t)g * nb + t0) * 32);
        const size_t xg = (size_t)g * nb + (size_t)t0;
        __m256i is[4], p16[4];
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            is[t] = corr ? _mm256_set1_epi32(J->xc[xg + (size_t)t]) : _mm256_setzero_si256();
            p16[t] = _mm256_setzero_si256();
        }
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            /* slice j: 4 values of each of the 8 rows, paired with input dword j */
            __m256i w;
            if (fmt == FMT_Q4) {
                const __m256i raw = _mm256_loadu_si256((const __m256i *)(const void *)(b + 32 + 64 * (j & 3) + 32 * h));
                w = j < 4 ? _mm256_and_si256(raw, m4) : _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
            } else {
                w = _mm256_loadu_si256((const __m256i *)(const void *)(b + 32 + 64 * j + 32 * h));
            }
            __m256i ws = w;
            if (sgn) {
                ws = _mm256_xor_si256(w, x80); /* the signed value */
                w = _mm256_abs_epi8(ws);
            }
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) {
                __m256i xb = _mm256_set1_epi32(xw[8 * t + j]);
                if (sgn) xb = _mm256_sign_epi8(xb, ws);
                p16[t] = _mm256_add_epi16(p16[t], _mm256_maddubs_epi16(w, xb));
                /* keep the sum a chain: reassociated into a tree (integer adds
                 * allow it), every product of the block would be live at once
                 * and spill */
                __asm__("" : "+x"(p16[t]));
                if ((j + 1) % k16 == 0) {
                    is[t] = _mm256_add_epi32(is[t], _mm256_madd_epi16(p16[t], ones));
                    p16[t] = _mm256_setzero_si256();
                }
            }
        }
        __m256 mw = _mm256_setzero_ps();
        if (mins) mw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(mins + 32 * (size_t)g + 16 * h)));
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            const __m256 s = _mm256_mul_ps(dw, _mm256_set1_ps(J->xd[xg + (size_t)t]));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is[t]), s, acc[t]);
            if (mins) acc[t] = _mm256_fmadd_ps(mw, _mm256_set1_ps(J->xs[xg + (size_t)t]), acc[t]);
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) {
        float *y = J->y + (size_t)(t0 + t) * J->n_out + r + 8 * h;
        if (nrow >= 8) {
            _mm256_storeu_ps(y, acc[t]);
        } else {
            float tmp[8];
            _mm256_storeu_ps(tmp, acc[t]);
            memcpy(y, tmp, sizeof(float) * (size_t)nrow);
        }
    }
}

X86_AVX2 void r8_tiles(const tp_mm_job *J, const uint32_t type, const int fmt, const uint8_t *tile,
                       const uint8_t *mins, const int stream, int r, int nr) {
    for (int h = 0; h < 2 && 8 * h < nr; h++) {
        const int nrow = nr - 8 * h;
        int t0 = 0, pf = stream && h == 0; /* the first pass over the tile fetches ahead */
        for (; J->nb - t0 >= 4; t0 += 4, pf = 0) r8_tile(J, type, fmt, 4, tile, mins, pf, h, r, nrow, t0);
        switch (J->nb - t0) {
        case 3: r8_tile(J, type, fmt, 3, tile, mins, pf, h, r, nrow, t0); break;
        case 2: r8_tile(J, type, fmt, 2, tile, mins, pf, h, r, nrow, t0); break;
        case 1: r8_tile(J, type, fmt, 1, tile, mins, pf, h, r, nrow, t0); break;
        default: break;
        }
    }
}

X86_AVX2 void avx2_legacy(const tp_mm_job *J, int r0, int r1, uint8_t *scratch, const uint32_t type) {
    const int packed_end = J->layout == TP_WL_R16 ? J->n_out / 16 * 16 : 0;
    const int has_min = type == TP_Q4_1 || type == TP_Q5_1;
    const size_t G = (size_t)J->n_in / 32;
    for (int r = r0; r < r1; r += 16) {
        const int nr = r1 - r < 16 ? r1 - r : 16;
        if (r + 16 <= packed_end) {
            const uint8_t *tile = J->w + (size_t)r * J->row_bytes;
            r8_tiles(J, type, type == TP_Q4_0 ? FMT_Q4 : FMT_U8, tile, NULL, 1, r, nr);
        } else {
            tp_mm_u8_tile(J, r, nr, scratch);
            r8_tiles(J, type, FMT_U8, scratch, has_min ? scratch + G * TP_R16_U8 : NULL, 0, r, nr);
        }
    }
}

#define AVX2_QKERNEL(name, type)                                                          \
    __attribute__((target("avx2,fma,f16c"))) static void name(const tp_mm_job *J, int r0, \
                                                              int r1, uint8_t *scratch) { \
        avx2_legacy(J, r0, r1, scratch, type);                                            \
    }

AVX2_QKERNEL(k_q8_0, TP_Q8_0)
AVX2_QKERNEL(k_q4_0, TP_Q4_0)
AVX2_QKERNEL(k_q4_1, TP_Q4_1)
AVX2_QKERNEL(k_q5_0, TP_Q5_0)
AVX2_QKERNEL(k_q5_1, TP_Q5_1)


/* ------------------------------------------------------------------------ */
/* K-quants: 8 rows x T inputs per 256-value super-block                     */
/*
 * On the interleaved tile (matmul_internal.h), half h = rows 8h..8h+7.
 * VPMADDUBSW pairs are summed in int16 while they cannot overflow, and the
 * widening VPMADDWD multiplies by the rows' block scale (as (scale, scale)
 * int16 pairs) at no cost: I = sum of scale * block dot, exact. Q6_K: the
 * activations stored + 128 are the unsigned side; the excess (128 * sum of
 * scale * sum of q per row) is computed once per tile. Then the float steps
 * of the generic kernel.
 */

#define KT2 4 /* inputs per tile */

/* 8 bytes of half h of a 16-row byte vector, as int32 lanes */
X86_AVX2 __m256i half8(__m128i v, int h) { return _mm256_cvtepu8_epi32(h ? _mm_srli_si128(v, 8) : v); }
X86_AVX2 __m256i pair16(__m256i a, __m256i b) { return _mm256_or_si256(a, _mm256_slli_epi32(b, 16)); }

X86_AVX2 void k4_header2(const uint8_t *b, int h, __m256 *d, __m256 *nd, __m256i sc[8], __m256i mp[4]) {
    const __m256i dm = _mm256_loadu_si256((const __m256i *)(const void *)(b + 32 * h));
    /* low halves of the dwords are d, high halves dmin */
    const __m256i lo = _mm256_and_si256(dm, _mm256_set1_epi32(0xFFFF)), hi = _mm256_srli_epi32(dm, 16);
    const __m128i dl = _mm_packus_epi32(_mm256_castsi256_si128(lo), _mm256_extracti128_si256(lo, 1));
    const __m128i dh = _mm_packus_epi32(_mm256_castsi256_si128(hi), _mm256_extracti128_si256(hi, 1));
    *d = _mm256_cvtph_ps(dl);
    *nd = _mm256_sub_ps(_mm256_setzero_ps(), _mm256_cvtph_ps(dh));
    __m128i B[12];
    for (int i = 0; i < 12; i++) B[i] = _mm_loadu_si128((const __m128i *)(const void *)(b + 64 + 16 * i));
    const __m128i m6 = _mm_set1_epi8(63), m4 = _mm_set1_epi8(0x0F), m3 = _mm_set1_epi8(3);
    __m128i S[8], M[8];
    for (int j = 0; j < 4; j++) {
        S[j] = _mm_and_si128(B[j], m6);
        M[j] = _mm_and_si128(B[j + 4], m6);
    }
    for (int j = 4; j < 8; j++) {
        const __m128i hs = _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(B[j - 4], 6), m3), 4);
        const __m128i hm = _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(B[j], 6), m3), 4);
        S[j] = _mm_or_si128(_mm_and_si128(B[j + 4], m4), hs);
        M[j] = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(B[j + 4], 4), m4), hm);
    }
    for (int j = 0; j < 8; j++) {
        const __m256i v = half8(S[j], h);
        sc[j] = pair16(v, v);
    }
    for (int i = 0; i < 4; i++) mp[i] = pair16(half8(M[2 * i], h), half8(M[2 * i + 1], h));
}

X86_AVX2 void k4_tile2(const tp_mm_job *J, const int q5, const int T, const uint8_t *tile, const int pf, int h, int r,
                       int nrow, int t0) {
    const int NS = J->n_in / 256, nb = J->nb;
    const size_t tb = q5 ? 16 * 176 : 16 * 144, qso = q5 ? 768 : 256;
    const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    const int k16 = q5 ? 4 : 8; /* int16 pair sums that cannot overflow: 2*15*127, 2*31*127 */
    __m256 acc[KT2];
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) acc[t] = _mm256_setzero_ps();
    for (int sb = 0; sb < NS; sb++) {
        const uint8_t *b = tile + (size_t)sb * tb;
        __m256 d, nd;
        __m256i sc[8], mp[4];
        k4_header2(b, h, &d, &nd, sc, mp);
        const size_t xg = (size_t)sb * nb + (size_t)t0;
        const int32_t *xw = (const int32_t *)(const void *)(J->xq + xg * 256);
        __m256i I[KT2];
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) I[t] = _mm256_setzero_si256();
        for (int g = 0; g < 8; g++) {
            if (pf) x86_prefetch(b + (size_t)g * (tb / 8), tb / 8); /* spread: a burst fills the miss queue */
            __m256i p16[KT2];
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) p16[t] = _mm256_setzero_si256();
#pragma GCC unroll 8
            for (int dd = 0; dd < 8; dd++) {
                const __m256i raw = _mm256_loadu_si256((const __m256i *)(const void *)(b + qso + 64 * (8 * (g >> 1) + dd) + 32 * h));
                __m256i w = (g & 1) ? _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4) : _mm256_and_si256(raw, m4);
                if (q5) {
                    const __m256i qh = _mm256_loadu_si256((const __m256i *)(const void *)(b + 256 + 64 * dd + 32 * h));
                    w = _mm256_or_si256(w, _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(g)), one), 4));
                }
#pragma GCC unroll 4
                for (int t = 0; t < T; t++) {
                    p16[t] = _mm256_add_epi16(p16[t], _mm256_maddubs_epi16(w, _mm256_set1_epi32(xw[64 * t + 8 * g + dd])));
                    __asm__("" : "+x"(p16[t])); /* a chain, not a tree (see r8_tile) */
                    if ((dd + 1) % k16 == 0) {
                        I[t] = _mm256_add_epi32(I[t], _mm256_madd_epi16(p16[t], sc[g]));
                        p16[t] = _mm256_setzero_si256();
                    }
                }
            }
        }
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            const int32_t *xs = (const int32_t *)(const void *)(J->xsum + (xg + (size_t)t) * 8);
            __m256i M = _mm256_setzero_si256();
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++) M = _mm256_add_epi32(M, _mm256_madd_epi16(mp[i], _mm256_set1_epi32(xs[i])));
            const __m256 dx = _mm256_set1_ps(J->xd[xg + (size_t)t]);
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(I[t]), _mm256_mul_ps(d, dx), acc[t]);
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(M), _mm256_mul_ps(nd, dx), acc[t]);
        }
    }
    store8(J, T, acc, r + 8 * h, nrow, t0);
}

/* Q6_K value slice (see matmul_avx512.c, k6_slice), rows of half h, signed */
X86_AVX2 __m256i k6_slice2(const uint8_t *b, int hh, int q, int dd, int h) {
    const __m256i ql = _mm256_loadu_si256((const __m256i *)(const void *)(b + 64 * (16 * hh + 8 * (q & 1) + dd) + 32 * h));
    const __m256i qh = _mm256_loadu_si256((const __m256i *)(const void *)(b + 2048 + 64 * (8 * hh + dd) + 32 * h));
    const __m256i m4 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(3);
    const __m256i lo = (q & 2) ? _mm256_and_si256(_mm256_srli_epi16(ql, 4), m4) : _mm256_and_si256(ql, m4);
    const __m256i hi = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * q)), m3);
    return _mm256_sub_epi8(_mm256_or_si256(lo, _mm256_slli_epi16(hi, 4)), _mm256_set1_epi8(32));
}

X86_AVX2 void k6_tile2(const tp_mm_job *J, const int T, const uint8_t *tile, int32_t *corr, const int have_corr,
                       const int pf, int h, int r, int nrow, int t0) {
    const int NS = J->n_in / 256, nb = J->nb;
    const size_t tb = 16 * 210;
    const __m256i ones8 = _mm256_set1_epi8(1);
    __m256 acc[KT2];
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) acc[t] = _mm256_setzero_ps();
    for (int sb = 0; sb < NS; sb++) {
        const uint8_t *b = tile + (size_t)sb * tb;
        const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(b + 3328 + 16 * h)));
        const size_t xg = (size_t)sb * nb + (size_t)t0;
        const int32_t *xw = (const int32_t *)(const void *)(J->xq + xg * 256);
        __m256i I[KT2], C = _mm256_setzero_si256();
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) I[t] = _mm256_setzero_si256();
        for (int hh = 0; hh < 2; hh++)
            for (int q = 0; q < 4; q++)
                for (int half = 0; half < 2; half++) {
                    const int s2 = 8 * hh + 2 * q + half;
                    if (pf) x86_prefetch(b + (size_t)s2 * (tb / 16), tb / 16);
                    const __m128i sv = _mm_loadu_si128((const __m128i *)(const void *)(b + 3072 + 16 * s2));
                    const __m256i s8 = _mm256_cvtepi8_epi32(h ? _mm_srli_si128(sv, 8) : sv);
                    const __m256i scp = _mm256_or_si256(_mm256_and_si256(s8, _mm256_set1_epi32(0xFFFF)), _mm256_slli_epi32(s8, 16));
                    __m256i p16[KT2], ws = _mm256_setzero_si256();
#pragma GCC unroll 4
                    for (int t = 0; t < T; t++) p16[t] = _mm256_setzero_si256();
#pragma GCC unroll 4
                    for (int e = 0; e < 4; e++) {
                        const int dd = 4 * half + e;
                        const __m256i w = k6_slice2(b, hh, q, dd, h);
                        if (!have_corr) ws = _mm256_add_epi16(ws, _mm256_maddubs_epi16(ones8, w));
#pragma GCC unroll 4
                        for (int t = 0; t < T; t++) {
                            /* unsigned activation x signed weight: |pair| <= 2*255*32, two fit */
                            p16[t] = _mm256_add_epi16(p16[t], _mm256_maddubs_epi16(_mm256_set1_epi32(xw[64 * t + 32 * hh + 8 * q + dd]), w));
                            __asm__("" : "+x"(p16[t]));
                            if (e & 1) {
                                I[t] = _mm256_add_epi32(I[t], _mm256_madd_epi16(p16[t], scp));
                                p16[t] = _mm256_setzero_si256();
                            }
                        }
                    }
                    if (!have_corr) C = _mm256_add_epi32(C, _mm256_madd_epi16(ws, scp));
                }
        if (!have_corr) _mm256_storeu_si256((__m256i *)(void *)(corr + 16 * sb + 8 * h), _mm256_slli_epi32(C, 7));
        C = _mm256_loadu_si256((const __m256i *)(const void *)(corr + 16 * sb + 8 * h));
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            const __m256 dx = _mm256_set1_ps(J->xd[xg + (size_t)t]);
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(I[t], C)), _mm256_mul_ps(d, dx), acc[t]);
        }
    }
    store8(J, T, acc, r + 8 * h, nrow, t0);
}

X86_AVX2 void kq_tile2(const tp_mm_job *J, const uint32_t type, const int T, const uint8_t *tile, int32_t *corr,
                       int have_corr, int pf, int h, int r, int nrow, int t0) {
    if (type == TP_Q6_K) k6_tile2(J, T, tile, corr, have_corr, pf, h, r, nrow, t0);
    else k4_tile2(J, type == TP_Q5_K, T, tile, pf, h, r, nrow, t0);
}

X86_AVX2 void avx2_kquant(const tp_mm_job *J, int r0, int r1, uint8_t *scratch, const uint32_t type) {
    int32_t *corr = (int32_t *)(void *)(scratch + (16 * J->row_bytes + 63) / 64 * 64);
    for (int r = r0; r < r1; r += 16) {
        const int nr = r1 - r < 16 ? r1 - r : 16;
        const uint8_t *tile = tp_mm_r16_tile(J, r, nr, scratch);
        const int stream = tile != scratch;
        for (int h = 0; h < 2 && 8 * h < nr; h++) {
            const int nrow = nr - 8 * h;
            int t0 = 0, have = 0, pf = stream && h == 0;
            for (; J->nb - t0 >= KT2; t0 += KT2, have = 1, pf = 0) kq_tile2(J, type, KT2, tile, corr, have, pf, h, r, nrow, t0);
            switch (J->nb - t0) {
            case 3: kq_tile2(J, type, 3, tile, corr, have, pf, h, r, nrow, t0); break;
            case 2: kq_tile2(J, type, 2, tile, corr, have, pf, h, r, nrow, t0); break;
            case 1: kq_tile2(J, type, 1, tile, corr, have, pf, h, r, nrow, t0); break;
            default: break;
            }
        }
    }
}

#define AVX2_KKERNEL(name, type)                                                          \
    __attribute__((target("avx2,fma,f16c"))) static void name(const tp_mm_job *J, int r0, \
                                                              int r1, uint8_t *scratch) { \
        avx2_kquant(J, r0, r1, scratch, type);                                            \
    }

AVX2_KKERNEL(k_q4_K, TP_Q4_K)
AVX2_KKERNEL(k_q5_K, TP_Q5_K)
AVX2_KKERNEL(k_q6_K, TP_Q6_K)

/* ------------------------------------------------------------------------ */
/* float kernels                                                             */

X86_AVX2 __m256 load8f(const uint32_t type, const uint8_t *row, int i) {
    if (type == TP_F32) return _mm256_loadu_ps((const float *)(const void *)row + i);
    __m128i h = _mm_loadu_si128((const __m128i *)(const void *)(row + 2 * (size_t)i));
    if (type == TP_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)); /* BF16 */
}

/* R rows x T inputs (R*T <= 6 or R = 4, T = 1); each output keeps 16 lanes
 * in two registers (lanes 0-7, 8-15), added at the end as the generic tree
 * does: (l + l+8), then x86_hsum8. Rows as in matmul_avx512.c (avx512_ftile):
 * an R4 tile when interleaved and whole, else the file's rows. */
X86_AVX2 void avx2_ftile(const tp_mm_job *J, const uint32_t type, const int R, const int T, int r, int b0, const int pf) {
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
    const float *xs[3];
    __m256 acc[4][3][2];
#pragma GCC unroll 3
    for (int t = 0; t < T; t++) xs[t] = J->xf + (size_t)(b0 + t) * n;
#pragma GCC unroll 4
    for (int i = 0; i < R; i++)
#pragma GCC unroll 3
        for (int t = 0; t < T; t++) acc[i][t][0] = acc[i][t][1] = _mm256_setzero_ps();
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
#pragma GCC unroll 4
        for (int i = 0; i < R; i++)
#pragma GCC unroll 2
            for (int hh = 0; hh < 2; hh++) {
                const __m256 wv = load8f(type, base[i] + off, 8 * hh);
#pragma GCC unroll 3
                for (int t = 0; t < T; t++)
                    acc[i][t][hh] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xs[t] + k + 8 * hh), acc[i][t][hh]);
            }
    }
#pragma GCC unroll 4
    for (int i = 0; i < R; i++)
#pragma GCC unroll 3
        for (int t = 0; t < T; t++) {
            float s = x86_hsum8(_mm256_add_ps(acc[i][t][0], acc[i][t][1]));
            for (int k = n16; k < n; k++) s = fmaf(tp_mm_elem_f32(type, tail[i], k - n16), xs[t][k], s);
            J->y[(size_t)(b0 + t) * J->n_out + r + i] = s;
        }
}

X86_AVX2 void avx2_frow_tiles(const tp_mm_job *J, const uint32_t type, const int R, int r) {
    int b = 0;
    for (; J->nb - b >= 3; b += 3) avx2_ftile(J, type, R, 3, r, b, b == 0);
    if (J->nb - b == 2) avx2_ftile(J, type, R, 2, r, b, b == 0);
    else if (J->nb - b == 1) avx2_ftile(J, type, R, 1, r, b, b == 0);
}

X86_AVX2 void avx2_frows(const tp_mm_job *J, int r0, int r1, const uint32_t type) {
    int r = r0; /* a multiple of 16: R4 tiles start at r */
    if (J->nb == 1) {
        /* one input: whole 4-row tiles, one stream */
        for (; r + 4 <= r1; r += 4) avx2_ftile(J, type, 4, 1, r, 0, 1);
    } else {
        for (; r + 2 <= r1; r += 2) avx2_frow_tiles(J, type, 2, r);
    }
    for (; r < r1; r++) avx2_frow_tiles(J, type, 1, r);
}

#define AVX2_FKERNEL(name, type)                                                          \
    __attribute__((target("avx2,fma,f16c"))) static void name(const tp_mm_job *J, int r0, \
                                                              int r1, uint8_t *scratch) { \
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
    impl->quant[TP_ACT_Q8] = tp_mm_quant_q8_avx2;
    impl->quant[TP_ACT_Q8K] = tp_mm_quant_q8k_avx2;
    return 1;
}

#endif /* __x86_64__ */
