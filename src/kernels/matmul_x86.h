/* matmul_x86.h: AVX2 building blocks shared by matmul_avx2.c and
 * matmul_avx512.c (private; include only from those files, x86-64 only).
 *
 * A weight row is read as groups of 32 values. A decoder returns, for one
 * group, the 32 weights as unsigned bytes (value + tp_mm_offset(type); Q8_0
 * returns its signed bytes unchanged), the per-lane weight scale for the 8
 * int32 lanes of a dot product (lane l covers values 4l..4l+3; Q6_K's two
 * 16-value sub-blocks give lanes 0-3 and 4-7 different scales), and for
 * Q4_1/Q5_1 the block's min. K-quant scales are unpacked once per 256-value
 * super-block (xhdr); their mins are applied per super-block by the kernels
 * (8 mins times the 8 groups' activation sums, one FMA).
 *
 * The functions carry target("avx2,fma,f16c") so that this file compiles
 * without -mavx2; GCC inlines them into AVX-512 functions (a superset).
 */
#ifndef TEMPO_MATMUL_X86_H
#define TEMPO_MATMUL_X86_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "kernels/matmul_internal.h"
#include "tensor/dtype.h"

#define X86_AVX2 __attribute__((target("avx2,fma,f16c"), always_inline)) static inline

typedef struct {
    __m256i q; /* 32 weights, unsigned (value + offset), or signed for Q8_0 */
    __m256 s;  /* scale per int32 lane */
    float mn;  /* Q4_1/Q5_1: the block's min */
} xgroup;

typedef struct {
    __m256 sc; /* Q4_K/Q5_K: d*scale of groups 0..7; Q6_K: d*scales[0..7] */
    __m256 mn; /* Q4_K/Q5_K: -dmin*min of groups 0..7; Q6_K: d*scales[8..15] */
} xhdr;

/* groups per super-block (1 for the 32-value block types) */
#define X86_GPB(type) ((type) == TP_Q4_K || (type) == TP_Q5_K || (type) == TP_Q6_K ? 8 : 1)
#define X86_HAS_MIN(type) ((type) == TP_Q4_1 || (type) == TP_Q5_1)
#define X86_K_MIN(type) ((type) == TP_Q4_K || (type) == TP_Q5_K)

X86_AVX2 float x86_f16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

X86_AVX2 __m256i x86_lo_nibbles(__m256i v) { return _mm256_and_si256(v, _mm256_set1_epi8(0x0F)); }
X86_AVX2 __m256i x86_hi_nibbles(__m256i v) {
    return _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(0x0F));
}

/* 16 bytes -> 32 values: low nibbles then high nibbles (the Q4_0 order). */
X86_AVX2 __m256i x86_unpack16(const uint8_t *qs) {
    __m128i t = _mm_loadu_si128((const __m128i *)(const void *)qs);
    __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(t), _mm_srli_epi16(t, 4), 1);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0F));
}

/* byte j = 0x10 if bit j of x is set, else 0 */
X86_AVX2 __m256i x86_bits_x16(uint32_t x) {
    __m256i v = _mm256_set1_epi32((int)x);
    const __m256i sel = _mm256_set_epi64x(0x0303030303030303LL, 0x0202020202020202LL,
                                          0x0101010101010101LL, 0);
    v = _mm256_shuffle_epi8(v, sel);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

X86_AVX2 __m256 x86_lane(__m256 v, int i) { return _mm256_permutevar8x32_ps(v, _mm256_set1_epi32(i)); }

X86_AVX2 xhdr x86_hdr(const uint32_t type, const uint8_t *row, int sb) {
    xhdr h;
    if (type == TP_Q4_K || type == TP_Q5_K) {
        const uint8_t *b = row + (size_t)sb * (type == TP_Q4_K ? 144 : 176);
        uint32_t u[3];
        memcpy(u, b + 4, 12);
        /* the 6-bit (scale, min) pairs of the 8 groups as 16 bytes */
        uint32_t s_lo = u[0] & 0x3f3f3f3fu, m_lo = u[1] & 0x3f3f3f3fu;
        uint32_t s_hi = (u[2] & 0x0f0f0f0fu) | (((u[0] >> 6) & 0x03030303u) << 4);
        uint32_t m_hi = ((u[2] >> 4) & 0x0f0f0f0fu) | (((u[1] >> 6) & 0x03030303u) << 4);
        __m128i v = _mm_set_epi32((int)m_hi, (int)m_lo, (int)s_hi, (int)s_lo);
        __m256 sc = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
        __m256 mn = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(v, 8)));
        h.sc = _mm256_mul_ps(sc, _mm256_set1_ps(x86_f16(b)));
        h.mn = _mm256_mul_ps(mn, _mm256_set1_ps(-x86_f16(b + 2)));
    } else if (type == TP_Q6_K) {
        const uint8_t *b = row + (size_t)sb * 210;
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(b + 192));
        __m256 d = _mm256_set1_ps(x86_f16(b + 208));
        h.sc = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)), d);
        h.mn = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(v, 8))), d);
    } else {
        h.sc = h.mn = _mm256_setzero_ps();
    }
    return h;
}

/* Group gi of super-block sb (for the 32-value types: block sb, gi = 0). */
X86_AVX2 xgroup x86_group(const uint32_t type, const uint8_t *row, int sb, int gi, const xhdr *h) {
    xgroup o;
    o.mn = 0.0f;
    switch (type) {
    case TP_Q8_0: {
        const uint8_t *b = row + (size_t)sb * 34;
        o.q = _mm256_loadu_si256((const __m256i *)(const void *)(b + 2));
        o.s = _mm256_set1_ps(x86_f16(b));
        break;
    }
    case TP_Q4_0: {
        const uint8_t *b = row + (size_t)sb * 18;
        o.q = x86_unpack16(b + 2);
        o.s = _mm256_set1_ps(x86_f16(b));
        break;
    }
    case TP_Q4_1: {
        const uint8_t *b = row + (size_t)sb * 20;
        o.q = x86_unpack16(b + 4);
        o.s = _mm256_set1_ps(x86_f16(b));
        o.mn = x86_f16(b + 2);
        break;
    }
    case TP_Q5_0: case TP_Q5_1: {
        const int q51 = type == TP_Q5_1;
        const uint8_t *b = row + (size_t)sb * (q51 ? 24 : 22);
        uint32_t qh;
        memcpy(&qh, b + (q51 ? 4 : 2), 4);
        o.q = _mm256_or_si256(x86_unpack16(b + (q51 ? 8 : 6)), x86_bits_x16(qh));
        o.s = _mm256_set1_ps(x86_f16(b));
        if (q51) o.mn = x86_f16(b + 2);
        break;
    }
    case TP_Q4_K: case TP_Q5_K: {
        const int q5 = type == TP_Q5_K;
        const uint8_t *b = row + (size_t)sb * (q5 ? 176 : 144);
        __m256i raw = _mm256_loadu_si256((const __m256i *)(const void *)(b + (q5 ? 48 : 16) + 32 * (gi >> 1)));
        o.q = (gi & 1) ? x86_hi_nibbles(raw) : x86_lo_nibbles(raw);
        if (q5) {
            __m256i qh = _mm256_loadu_si256((const __m256i *)(const void *)(b + 16));
            __m256i bit = _mm256_and_si256(_mm256_srli_epi16(qh, gi), _mm256_set1_epi8(1));
            o.q = _mm256_or_si256(o.q, _mm256_slli_epi16(bit, 4));
        }
        o.s = x86_lane(h->sc, gi);
        break;
    }
    case TP_Q6_K: {
        const int half = gi >> 2, k = gi & 3;
        const uint8_t *b = row + (size_t)sb * 210;
        __m256i ql = _mm256_loadu_si256((const __m256i *)(const void *)(b + 64 * half + 32 * (k & 1)));
        __m256i qh = _mm256_loadu_si256((const __m256i *)(const void *)(b + 128 + 32 * half));
        __m256i lo = (k & 2) ? x86_hi_nibbles(ql) : x86_lo_nibbles(ql);
        __m256i hi = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * k), _mm256_set1_epi8(3));
        o.q = _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4));
        /* lanes 0-3: scale 2k, lanes 4-7: scale 2k+1 (of this half) */
        __m256i idx = _mm256_set_epi32(2 * k + 1, 2 * k + 1, 2 * k + 1, 2 * k + 1, 2 * k, 2 * k, 2 * k, 2 * k);
        o.s = _mm256_permutevar8x32_ps(half ? h->mn : h->sc, idx);
        break;
    }
    default:
        o.q = _mm256_setzero_si256();
        o.s = _mm256_setzero_ps();
    }
    return o;
}

X86_AVX2 float x86_hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#endif
