/* dtype.c: ggml tensor types: names, block geometry, dequantization and the
 * reference quantizers.
 *
 * Block layouts and the arithmetic follow ggml (ggml-common.h, ggml-quants.c).
 * The dequantizers evaluate every expression in the same order and precision
 * as ggml's scalar code so that the results are bit-identical to ggml's (the
 * tests compare with memcmp against ggml's output).
 */
#include "tensor/dtype.h"

#include "core/common.h"

#include <math.h>
#include <string.h>

/* Blocks of the types the header does not declare (layouts from ggml-common.h). */
typedef struct { uint8_t scales[QK_K / 16]; uint8_t qs[QK_K / 4]; uint16_t d, dmin; } block_q2_K;   /* 84 B */
typedef struct { uint8_t hmask[QK_K / 8]; uint8_t qs[QK_K / 4]; uint8_t scales[12]; uint16_t d; } block_q3_K; /* 110 B */
typedef struct { uint16_t d, s; int8_t qs[32]; } block_q8_1;                                        /* 36 B */
typedef struct { float d; int8_t qs[QK_K]; int16_t bsums[QK_K / 16]; } block_q8_K;                  /* 292 B */

_Static_assert(sizeof(block_q4_0) == 18, "q4_0");
_Static_assert(sizeof(block_q4_1) == 20, "q4_1");
_Static_assert(sizeof(block_q5_0) == 22, "q5_0");
_Static_assert(sizeof(block_q5_1) == 24, "q5_1");
_Static_assert(sizeof(block_q8_0) == 34, "q8_0");
_Static_assert(sizeof(block_q8_1) == 36, "q8_1");
_Static_assert(sizeof(block_q2_K) == 84, "q2_K");
_Static_assert(sizeof(block_q3_K) == 110, "q3_K");
_Static_assert(sizeof(block_q4_K) == 144, "q4_K");
_Static_assert(sizeof(block_q5_K) == 176, "q5_K");
_Static_assert(sizeof(block_q6_K) == 210, "q6_K");
_Static_assert(sizeof(block_q8_K) == 292, "q8_K");

typedef struct {
    const char *name;
    uint16_t block_elems;
    uint16_t block_bytes;
} dtype_info;

/* Every type id ggml has defined and not removed (gaps: ids 4, 5, 31-33, 36-38
 * were removed from ggml). The IQ/TQ/MXFP4 geometries let the GGUF reader
 * accept (and the loader name and reject) such files. */
static const dtype_info k_types[] = {
    [0] = { "F32", 1, 4 },
    [1] = { "F16", 1, 2 },
    [2] = { "Q4_0", 32, 18 },
    [3] = { "Q4_1", 32, 20 },
    [6] = { "Q5_0", 32, 22 },
    [7] = { "Q5_1", 32, 24 },
    [8] = { "Q8_0", 32, 34 },
    [9] = { "Q8_1", 32, 36 },
    [10] = { "Q2_K", 256, 84 },
    [11] = { "Q3_K", 256, 110 },
    [12] = { "Q4_K", 256, 144 },
    [13] = { "Q5_K", 256, 176 },
    [14] = { "Q6_K", 256, 210 },
    [15] = { "Q8_K", 256, 292 },
    [16] = { "IQ2_XXS", 256, 66 },
    [17] = { "IQ2_XS", 256, 74 },
    [18] = { "IQ3_XXS", 256, 98 },
    [19] = { "IQ1_S", 256, 50 },
    [20] = { "IQ4_NL", 32, 18 },
    [21] = { "IQ3_S", 256, 110 },
    [22] = { "IQ2_S", 256, 82 },
    [23] = { "IQ4_XS", 256, 136 },
    [24] = { "I8", 1, 1 },
    [25] = { "I16", 1, 2 },
    [26] = { "I32", 1, 4 },
    [27] = { "I64", 1, 8 },
    [28] = { "F64", 1, 8 },
    [29] = { "IQ1_M", 256, 56 },
    [30] = { "BF16", 1, 2 },
    [34] = { "TQ1_0", 256, 54 },
    [35] = { "TQ2_0", 256, 66 },
    [39] = { "MXFP4", 32, 17 },
};

static const dtype_info *info(uint32_t type) {
    if (type >= sizeof k_types / sizeof k_types[0] || !k_types[type].name) return NULL;
    return &k_types[type];
}

bool tp_dtype_supported(uint32_t type) {
    switch (type) {
    case TP_F32: case TP_F16: case TP_BF16: case TP_Q4_0: case TP_Q4_1: case TP_Q5_0: case TP_Q5_1:
    case TP_Q8_0: case TP_Q2_K: case TP_Q3_K: case TP_Q4_K: case TP_Q5_K: case TP_Q6_K:
        return true;
    default:
        return false;
    }
}

const char *tp_dtype_name(uint32_t type) {
    const dtype_info *t = info(type);
    return t ? t->name : NULL;
}

size_t tp_dtype_block_elems(uint32_t type) {
    const dtype_info *t = info(type);
    return t ? t->block_elems : 0;
}

size_t tp_dtype_block_bytes(uint32_t type) {
    const dtype_info *t = info(type);
    return t ? t->block_bytes : 0;
}

size_t tp_dtype_row_bytes(uint32_t type, size_t n) {
    const dtype_info *t = info(type);
    return t ? n / t->block_elems * t->block_bytes : 0;
}

/* ---------------------------------------------------------------------------
 * Dequantization. Blocks are read with memcpy-free struct access: the structs
 * have alignment 1 or 2 and the row pointer may be unaligned in a file, so
 * every block is first copied into an aligned local.
 * ------------------------------------------------------------------------- */

static float h2f(uint16_t h) { return tp_f16_to_f32(h); }

static void deq_q4_0(const uint8_t *src, float *y, size_t nb) {
    for (size_t i = 0; i < nb; i++, y += 32) {
        block_q4_0 b;
        memcpy(&b, src + i * sizeof b, sizeof b);
        const float d = h2f(b.d);
        for (int j = 0; j < 16; j++) {
            const int x0 = (b.qs[j] & 0x0F) - 8;
            const int x1 = (b.qs[j] >> 4) - 8;
            y[j] = x0 * d;
            y[j + 16] = x1 * d;
        }
    }
}

static void deq_q4_1(const uint8_t *src, float *y, size_t nb) {
    for (size_t i = 0; i < nb; i++, y += 32) {
        block_q4_1 b;
        memcpy(&b, src + i * sizeof b, sizeof b);
        const float d = h2f(b.d), m = h2f(b.m);
        for (int j = 0; j < 16; j++) {
            const int x0 = b.qs[j] & 0x0F;
            const int x1 = b.qs[j] >> 4;
            y[j] = x0 * d + m;
            y[j + 16] = x1 * d + m;
        }
    }
}

static void deq_q5_0(const uint8_t *src, float *y, size_t nb) {
    for (size_t i = 0; i < nb; i++, y += 32) {
        block_q5_0 b;
        memcpy(&b, src + i * sizeof b, sizeof b);
        const float d = h2f(b.d);
        uint32_t qh;
        memcpy(&qh, b.qh, 4);
        for (int j = 0; j < 16; j++) {
            const uint8_t h0 = (uint8_t)(((qh >> j) << 4) & 0x10);
            const uint8_t h1 = (uint8_t)((qh >> (j + 12)) & 0x10);
            const int32_t x0 = ((b.qs[j] & 0x0F) | h0) - 16;
            const int32_t x1 = ((b.qs[j] >> 4) | h1) - 16;
            y[j] = x0 * d;
            y[j + 16] = x1 * d;
        }
    }
}

static void deq_q5_1(const uint8_t *src, float *y, size_t nb) {
    for (size_t i = 0; i < nb; i++, y += 32) {
        block_q5_1 b;
        memcpy(&b, src + i * sizeof b, sizeof b);
        const float d = h2f(b.d), m = h2f(b.m);
        uint32_t qh;
        memcpy(&qh, b.qh, 4);
        for (int j = 0; j < 16; j++) {
            const uint8_t h0 = (uint8_t)(((qh >> j) << 4) & 0x10);
            const uint8_t h1 = (uint8_t)((qh >> (j + 12)) & 0x10);
            const int x0 = (b.qs[j] & 0x0F) | h0;
            const int x1 = (b.qs[j] >> 4) | h1;
            y[j] = x0 * d + m;
            y[j + 16] = x1 * d + m;
        }
    }
}

static void deq_q8_0(const uint8_t *src, float *y, size_t nb) {
    for (size_t i = 0; i < nb; i++, y += 32) {
        block_q8_0 b;
        memcpy(&b, src + i * sizeof b, sizeof b);
        const float d = h2f(b.d);
        for (int j = 0; j < 32; j++) y[j] = b.qs[j] * d;
    }
}

static void deq_q8_1(const uint8_t *src, float *y, size_t nb) {
    for (size_t i = 0; i < nb; i++, y += 32) {
        block_q8_1 b;
        memcpy(&b, src + i * sizeof b, sizeof b);
        const float d = h2f(b.d);
        for (int j = 0; j < 32; j++) y[j] = b.qs[j] * d;
    }
}

static void deq_q2_K(const uint8_t *src, float *y, size_t nb) {
    for (size_t i = 0; i < nb; i++) {
        block_q2_K b;
        memcpy(&b, src + i * sizeof b, sizeof b);
        const float d = h2f(b.d), min = h2f(b.dmin);
        const uint8_t *q = b.qs;
        int is = 0;
        for (int n = 0; n < QK_K; n += 128) {
            int shift = 0;
            for (int j = 0; j < 4; j++) {
                uint8_t sc = b.scales[is++];
                float dl = d * (sc & 0xF), ml = min * (sc >> 4);
                for (int l = 0; l < 16; l++) *y++ = dl * ((int8_t)((q[l] >> shift) & 3)) - ml;
                sc = b.scales[is++];
                dl = d * (sc & 0xF);
                ml = min * (sc >> 4);
                for (int l = 0; l < 16; l++) *y++ = dl * ((int8_t)((q[l + 16] >> shift) & 3)) - ml;
                shift += 2;
            }
            q += 32;
        }
    }
}

/* Q3_K's 16 six-bit scales: low 4 bits in scales[0..7] (two per byte), high
 * 2 bits in scales[8..11] (four per byte). Unpacks to signed scale - 32. */
static void q3_K_scales(const uint8_t packed[12], int8_t out[16]) {
    for (int j = 0; j < 16; j++) {
        int lo = j < 8 ? packed[j] & 0xF : packed[j - 8] >> 4;
        int hi = (packed[8 + (j & 3)] >> (2 * (j >> 2))) & 3;
        out[j] = (int8_t)((lo | (hi << 4)) - 32);
    }
}

static void deq_q3_K(const uint8_t *src, float *y, size_t nb) {
    for (size_t i = 0; i < nb; i++) {
        block_q3_K b;
        memcpy(&b, src + i * sizeof b, sizeof b);
        const float d_all = h2f(b.d);
        int8_t scales[16];
        q3_K_scales(b.scales, scales);
        const uint8_t *q = b.qs, *hm = b.hmask;
        uint8_t m = 1;
        int is = 0;
        for (int n = 0; n < QK_K; n += 128) {
            int shift = 0;
            for (int j = 0; j < 4; j++) {
                float dl = d_all * scales[is++];
                for (int l = 0; l < 16; l++)
                    *y++ = dl * ((int8_t)((q[l] >> shift) & 3) - ((hm[l] & m) ? 0 : 4));
                dl = d_all * scales[is++];
                for (int l = 0; l < 16; l++)
                    *y++ = dl * ((int8_t)((q[l + 16] >> shift) & 3) - ((hm[l + 16] & m) ? 0 : 4));
                shift += 2;
                m = (uint8_t)(m << 1);
            }
            q += 32;
        }
    }
}

/* The 8 six-bit (scale, min) pairs of Q4_K / Q5_K (ggml's get_scale_min_k4). */
static void scale_min_k4(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

static void deq_q4_K(const uint8_t *src, float *y, size_t nb) {
    for (size_t i = 0; i < nb; i++) {
        block_q4_K b;
        memcpy(&b, src + i * sizeof b, sizeof b);
        const float d = h2f(b.d), min = h2f(b.dmin);
        const uint8_t *q = b.qs;
        for (int j = 0, is = 0; j < QK_K; j += 64, is += 2, q += 32) {
            uint8_t sc, m;
            scale_min_k4(is, b.scales, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            scale_min_k4(is + 1, b.scales, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; l++) *y++ = d1 * (q[l] & 0xF) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * (q[l] >> 4) - m2;
        }
    }
}

static void deq_q5_K(const uint8_t *src, float *y, size_t nb) {
    for (size_t i = 0; i < nb; i++) {
        block_q5_K b;
        memcpy(&b, src + i * sizeof b, sizeof b);
        const float d = h2f(b.d), min = h2f(b.dmin);
        const uint8_t *ql = b.qs, *qh = b.qh;
        uint8_t u1 = 1, u2 = 2;
        for (int j = 0, is = 0; j < QK_K; j += 64, is += 2, ql += 32) {
            uint8_t sc, m;
            scale_min_k4(is, b.scales, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            scale_min_k4(is + 1, b.scales, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; l++) *y++ = d1 * ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
            u1 = (uint8_t)(u1 << 2);
            u2 = (uint8_t)(u2 << 2);
        }
    }
}

static void deq_q6_K(const uint8_t *src, float *y, size_t nb) {
    for (size_t i = 0; i < nb; i++) {
        block_q6_K b;
        memcpy(&b, src + i * sizeof b, sizeof b);
        const float d = h2f(b.d);
        const uint8_t *ql = b.ql, *qh = b.qh;
        const int8_t *sc = b.scales;
        for (int n = 0; n < QK_K; n += 128) {
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = d * sc[is] * q1;
                y[l + 32] = d * sc[is + 2] * q2;
                y[l + 64] = d * sc[is + 4] * q3;
                y[l + 96] = d * sc[is + 6] * q4;
            }
            y += 128;
            ql += 64;
            qh += 32;
            sc += 8;
        }
    }
}

static void deq_q8_K(const uint8_t *src, float *y, size_t nb) {
    for (size_t i = 0; i < nb; i++, y += QK_K) {
        block_q8_K b;
        memcpy(&b, src + i * sizeof b, sizeof b);
        for (int j = 0; j < QK_K; j++) y[j] = b.d * b.qs[j];
    }
}

void tp_dequantize_row(uint32_t type, const void *src, float *dst, size_t n) {
    const uint8_t *s = src;
    size_t be = tp_dtype_block_elems(type);
    size_t nb = be ? n / be : 0;
    switch (type) {
    case TP_F32: memcpy(dst, s, n * sizeof(float)); return;
    case TP_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            dst[i] = tp_f16_to_f32(h);
        }
        return;
    case TP_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            dst[i] = tp_bf16_to_f32(h);
        }
        return;
    case TP_Q4_0: deq_q4_0(s, dst, nb); return;
    case TP_Q4_1: deq_q4_1(s, dst, nb); return;
    case TP_Q5_0: deq_q5_0(s, dst, nb); return;
    case TP_Q5_1: deq_q5_1(s, dst, nb); return;
    case TP_Q8_0: deq_q8_0(s, dst, nb); return;
    case TP_Q8_1: deq_q8_1(s, dst, nb); return;
    case TP_Q2_K: deq_q2_K(s, dst, nb); return;
    case TP_Q3_K: deq_q3_K(s, dst, nb); return;
    case TP_Q4_K: deq_q4_K(s, dst, nb); return;
    case TP_Q5_K: deq_q5_K(s, dst, nb); return;
    case TP_Q6_K: deq_q6_K(s, dst, nb); return;
    case TP_Q8_K: deq_q8_K(s, dst, nb); return;
    default:
        /* Not dequantizable here (callers check tp_dtype_supported first): zeros. */
        memset(dst, 0, n * sizeof(float));
        return;
    }
}

/* ---------------------------------------------------------------------------
 * Reference quantizers (ggml's quantize_row_*_ref). Float-to-int conversions
 * are clamped first so that NaN/huge inputs cannot cause undefined behaviour;
 * for finite inputs the clamps are no-ops and the results match ggml's.
 * ------------------------------------------------------------------------- */

/* (int8_t)(v) of ggml, defined for any v: truncation toward zero, clamped. */
static int trunc_i8(float v) {
    if (!(v > -128.0f)) return -128; /* also NaN */
    if (v >= 127.0f) return 127;
    return (int)v;
}

static void quant_q8_0(const float *x, uint8_t *dst, size_t nb) {
    for (size_t i = 0; i < nb; i++, x += 32) {
        block_q8_0 b;
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127;
        const float id = d ? 1.0f / d : 0.0f;
        b.d = tp_f32_to_f16(d);
        for (int j = 0; j < 32; j++) {
            float r = roundf(x[j] * id);
            b.qs[j] = (int8_t)(r > 127.0f ? 127 : r < -128.0f ? -128 : r == r ? (int)r : 0);
        }
        memcpy(dst + i * sizeof b, &b, sizeof b);
    }
}

static void quant_q4_0(const float *x, uint8_t *dst, size_t nb) {
    for (size_t i = 0; i < nb; i++, x += 32) {
        block_q4_0 b;
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < 32; j++)
            if (amax < fabsf(x[j])) { amax = fabsf(x[j]); max = x[j]; }
        const float d = max / -8;
        const float id = d ? 1.0f / d : 0.0f;
        b.d = tp_f32_to_f16(d);
        for (int j = 0; j < 16; j++) {
            int x0 = trunc_i8(x[j] * id + 8.5f), x1 = trunc_i8(x[j + 16] * id + 8.5f);
            /* ggml stores MIN(15, (int8_t)v) in a uint8_t; v >= 0.5 for finite input */
            uint8_t q0 = (uint8_t)(x0 < 15 ? x0 : 15), q1 = (uint8_t)(x1 < 15 ? x1 : 15);
            b.qs[j] = (uint8_t)((q0 & 0xF) | (q1 << 4));
        }
        memcpy(dst + i * sizeof b, &b, sizeof b);
    }
}

static void quant_q4_1(const float *x, uint8_t *dst, size_t nb) {
    for (size_t i = 0; i < nb; i++, x += 32) {
        block_q4_1 b;
        float min = x[0], max = x[0];
        for (int j = 1; j < 32; j++) {
            if (x[j] < min) min = x[j];
            if (x[j] > max) max = x[j];
        }
        const float d = (max - min) / 15;
        const float id = d ? 1.0f / d : 0.0f;
        b.d = tp_f32_to_f16(d);
        b.m = tp_f32_to_f16(min);
        for (int j = 0; j < 16; j++) {
            int x0 = trunc_i8((x[j] - min) * id + 0.5f), x1 = trunc_i8((x[j + 16] - min) * id + 0.5f);
            uint8_t q0 = (uint8_t)(x0 < 15 ? x0 : 15), q1 = (uint8_t)(x1 < 15 ? x1 : 15);
            b.qs[j] = (uint8_t)((q0 & 0xF) | (q1 << 4));
        }
        memcpy(dst + i * sizeof b, &b, sizeof b);
    }
}

static void quant_q5_0(const float *x, uint8_t *dst, size_t nb) {
    for (size_t i = 0; i < nb; i++, x += 32) {
        block_q5_0 b;
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < 32; j++)
            if (amax < fabsf(x[j])) { amax = fabsf(x[j]); max = x[j]; }
        const float d = max / -16;
        const float id = d ? 1.0f / d : 0.0f;
        b.d = tp_f32_to_f16(d);
        uint32_t qh = 0;
        for (int j = 0; j < 16; j++) {
            int x0 = trunc_i8(x[j] * id + 16.5f), x1 = trunc_i8(x[j + 16] * id + 16.5f);
            uint8_t q0 = (uint8_t)(x0 < 31 ? x0 : 31), q1 = (uint8_t)(x1 < 31 ? x1 : 31);
            b.qs[j] = (uint8_t)((q0 & 0x0F) | ((q1 & 0x0F) << 4));
            qh |= ((q0 & 0x10u) >> 4) << j;
            qh |= ((q1 & 0x10u) >> 4) << (j + 16);
        }
        memcpy(b.qh, &qh, 4);
        memcpy(dst + i * sizeof b, &b, sizeof b);
    }
}

static void quant_q5_1(const float *x, uint8_t *dst, size_t nb) {
    for (size_t i = 0; i < nb; i++, x += 32) {
        block_q5_1 b;
        float min = x[0], max = x[0];
        for (int j = 1; j < 32; j++) {
            if (x[j] < min) min = x[j];
            if (x[j] > max) max = x[j];
        }
        const float d = (max - min) / 31;
        const float id = d ? 1.0f / d : 0.0f;
        b.d = tp_f32_to_f16(d);
        b.m = tp_f32_to_f16(min);
        uint32_t qh = 0;
        for (int j = 0; j < 16; j++) {
            /* ggml: (uint8_t)(v + 0.5f) with v in [0, 31] */
            int x0 = trunc_i8((x[j] - min) * id + 0.5f), x1 = trunc_i8((x[j + 16] - min) * id + 0.5f);
            uint8_t q0 = (uint8_t)(x0 < 0 ? 0 : x0 > 31 ? 31 : x0), q1 = (uint8_t)(x1 < 0 ? 0 : x1 > 31 ? 31 : x1);
            b.qs[j] = (uint8_t)((q0 & 0x0F) | ((q1 & 0x0F) << 4));
            qh |= ((q0 & 0x10u) >> 4) << j;
            qh |= ((q1 & 0x10u) >> 4) << (j + 16);
        }
        memcpy(b.qh, &qh, 4);
        memcpy(dst + i * sizeof b, &b, sizeof b);
    }
}

/* Q4_K and Q6_K: a simple min/max quantizer of our own (NOT ggml's iterative
 * search in make_qkx2_quants / make_qx_quants, so the bytes differ from ggml's;
 * the error is of the same order, see tests). Used to make test files. */

static int round_clamp(float v, int lo, int hi) {
    if (!(v > (float)lo)) return lo; /* also NaN */
    if (v >= (float)hi) return hi;
    return (int)lrintf(v);
}

static void quant_q4_K(const float *x, uint8_t *dst, size_t nb) {
    for (size_t i = 0; i < nb; i++, x += QK_K) {
        block_q4_K b;
        memset(&b, 0, sizeof b);
        float scale[8], mn[8], max_scale = 0, max_min = 0;
        for (int j = 0; j < 8; j++) {
            float lo = 0.0f, hi = -INFINITY; /* the min is kept <= 0: m is stored as a positive offset */
            for (int l = 0; l < 32; l++) {
                lo = fminf(lo, x[32 * j + l]);
                hi = fmaxf(hi, x[32 * j + l]);
            }
            scale[j] = (hi - lo) / 15;
            mn[j] = -lo;
            max_scale = fmaxf(max_scale, scale[j]);
            max_min = fmaxf(max_min, mn[j]);
        }
        b.d = tp_f32_to_f16(max_scale / 63);
        b.dmin = tp_f32_to_f16(max_min / 63);
        const float d = tp_f16_to_f32(b.d), dmin = tp_f16_to_f32(b.dmin);
        uint8_t sc[8], m[8];
        for (int j = 0; j < 8; j++) {
            sc[j] = (uint8_t)(d > 0 ? round_clamp(scale[j] / d, 0, 63) : 0);
            m[j] = (uint8_t)(dmin > 0 ? round_clamp(mn[j] / dmin, 0, 63) : 0);
        }
        /* pack 8 six-bit (sc, m) pairs: the inverse of scale_min_k4 */
        for (int j = 0; j < 4; j++) {
            b.scales[j] = (uint8_t)(sc[j] | ((sc[j + 4] >> 4) << 6));
            b.scales[j + 4] = (uint8_t)(m[j] | ((m[j + 4] >> 4) << 6));
            b.scales[j + 8] = (uint8_t)((sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4));
        }
        uint8_t q[QK_K];
        for (int j = 0; j < 8; j++) {
            const float ds = d * sc[j], dm = dmin * m[j];
            for (int l = 0; l < 32; l++)
                q[32 * j + l] = (uint8_t)(ds > 0 ? round_clamp((x[32 * j + l] + dm) / ds, 0, 15) : 0);
        }
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++) b.qs[32 * c + l] = (uint8_t)(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
        memcpy(dst + i * sizeof b, &b, sizeof b);
    }
}

static void quant_q6_K(const float *x, uint8_t *dst, size_t nb) {
    for (size_t i = 0; i < nb; i++, x += QK_K) {
        block_q6_K b;
        memset(&b, 0, sizeof b);
        float scale[16], amax_scale = 0;
        for (int k = 0; k < 16; k++) {
            float amax = 0, max = 0;
            for (int l = 0; l < 16; l++)
                if (fabsf(x[16 * k + l]) > amax) { amax = fabsf(x[16 * k + l]); max = x[16 * k + l]; }
            scale[k] = max / -32; /* the extreme value maps to q = -32 exactly */
            amax_scale = fmaxf(amax_scale, fabsf(scale[k]));
        }
        b.d = tp_f32_to_f16(amax_scale / 127);
        const float d = tp_f16_to_f32(b.d);
        uint8_t q[QK_K];
        for (int k = 0; k < 16; k++) {
            int sc = d > 0 ? round_clamp(scale[k] / d, -128, 127) : 0;
            b.scales[k] = (int8_t)sc;
            const float ds = d * sc;
            for (int l = 0; l < 16; l++)
                q[16 * k + l] = (uint8_t)(ds != 0 ? round_clamp(x[16 * k + l] / ds, -32, 31) + 32 : 32);
        }
        for (int h = 0; h < 2; h++) {
            const uint8_t *qq = q + 128 * h;
            for (int l = 0; l < 32; l++) {
                int q1 = qq[l], q2 = qq[l + 32], q3 = qq[l + 64], q4 = qq[l + 96];
                b.ql[64 * h + l] = (uint8_t)((q1 & 0xF) | ((q3 & 0xF) << 4));
                b.ql[64 * h + l + 32] = (uint8_t)((q2 & 0xF) | ((q4 & 0xF) << 4));
                b.qh[32 * h + l] = (uint8_t)((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
            }
        }
        memcpy(dst + i * sizeof b, &b, sizeof b);
    }
}

void tp_quantize_row(uint32_t type, const float *src, void *dst, size_t n) {
    uint8_t *d = dst;
    size_t be = tp_dtype_block_elems(type);
    size_t nb = be ? n / be : 0;
    switch (type) {
    case TP_F32: memcpy(d, src, n * sizeof(float)); return;
    case TP_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = tp_f32_to_f16(src[i]);
            memcpy(d + 2 * i, &h, 2);
        }
        return;
    case TP_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = tp_f32_to_bf16(src[i]);
            memcpy(d + 2 * i, &h, 2);
        }
        return;
    case TP_Q4_0: quant_q4_0(src, d, nb); return;
    case TP_Q4_1: quant_q4_1(src, d, nb); return;
    case TP_Q5_0: quant_q5_0(src, d, nb); return;
    case TP_Q5_1: quant_q5_1(src, d, nb); return;
    case TP_Q8_0: quant_q8_0(src, d, nb); return;
    case TP_Q4_K: quant_q4_K(src, d, nb); return;
    case TP_Q6_K: quant_q6_K(src, d, nb); return;
    default:
        /* No quantizer for this type: zero bytes (callers only use the types above). */
        memset(d, 0, tp_dtype_row_bytes(type, n));
        return;
    }
}
