/* matmul_internal.h: what the matmul front end (matmul.c) shares with the
 * per-ISA kernel files (matmul_avx2.c, matmul_avx512.c). Not a public header.
 *
 * Quantized activations ("group-major"). Before a product with a quantized
 * weight, each of the nb inputs is quantized in groups: 32 values (Q8_0, for
 * the legacy types) or 256 values (Q8_K, for the K-quants); QB below is 32 or
 * 256. All inputs' copies of group g are adjacent, so that a tile of inputs is
 * read at constant offsets and one group of a weight row meets all of them:
 *   xq + (g*nb + t)*QB      the input t's QB int8 values of group g; for Q6_K
 *                           weights stored as value + 128 (unsigned bytes)
 *   xd[g*nb + t]            the scale (Q8_0: fp16-rounded amax/127; Q8_K: 1/iscale)
 *   xc[g*nb + t]            Q8_0: -offset * sum(q), offset = tp_mm_offset(type):
 *                           kernels feed weights as unsigned bytes (value +
 *                           offset), and a u8 x s8 dot product started at xc
 *                           equals the signed one
 *   xs[g*nb + t]            Q8_0: ggml's Q8_1 term s = fp16(d * sum q) (Q4_1/Q5_1)
 *   xsum + (g*nb + t)*8     Q8_K: the 8 sums of 32 values, int16 (Q4_K/Q5_K mins)
 * The layout is the same on every SIMD level, and every level's quantizer
 * writes the same bytes (the AVX2 quantizers are tested against the portable
 * ones).
 *
 * Interleaved weights, TP_WL_R16 (tp_weight_repack; Q4_0, Q8_0, Q4_K, Q5_K,
 * Q6_K). Rows 16i .. 16i+15 form tile i, stored where those 16 rows were
 * (16 * row_bytes bytes), block after block (a block is 32 values, or 256 for
 * the K-quants), each block 16 times the file's block. Every field of the
 * file's block is interleaved by rows at its natural unit: field bytes
 * [u*k, u*k+u) of row r go to field_base + u*(16k + r). The fields, in order
 * (offset in the file's block, size, unit):
 *   Q4_0 (288 B):  d (0, 2, 2)  qs (2, 16, 4)
 *   Q8_0 (544 B):  d (0, 2, 2)  qs (2, 32, 4), stored + 128 (unsigned)
 *   Q4_K (2304 B): d,dmin (0, 4, 4)  scales (4, 12, 1)  qs (16, 128, 4)
 *   Q5_K (2816 B): d,dmin (0, 4, 4)  scales (4, 12, 1)  qh (16, 32, 4)  qs (48, 128, 4)
 *   Q6_K (3360 B): ql (0, 128, 4)  qh (128, 64, 4)  scales (192, 16, 1)  d (208, 2, 2)
 * So one 64-byte load of a qs slice holds 4 quantized bytes of each of 16
 * rows (a 32-bit lane per row), which meet the same 4 activation values
 * broadcast to every lane: one VPDPBUSD makes 64 multiply-adds for 16
 * outputs, with no horizontal sum; the 16 rows' scales of a block are one
 * 16-byte (or 32-byte) load. For Q4_0, slice k's low nibbles are values
 * 4k..4k+3, its high nibbles values 16+4k..; for Q4_K/Q5_K slice k (of 32)
 * holds values 64(k/8) + 4(k%8) .. (low nibbles, block 2(k/8)) and 32 more
 * (high nibbles, block 2(k/8)+1); for Q6_K see matmul.c (kdecode).
 * The same tile is built on the fly in a thread's scratch (tp_r16_pack) for
 * rows past the last whole tile and for weights that were not repacked, so
 * that every row takes the same arithmetic. The other legacy types (Q4_1,
 * Q5_0, Q5_1) use "U8" tiles built on the fly: Q8_0's form with the type's
 * offset instead of 128, and the fp16 mins after the tile (32 bytes per block).
 */
#ifndef TEMPO_MATMUL_INTERNAL_H
#define TEMPO_MATMUL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/matmul.h"
#include "core/common.h"
#include "tensor/dtype.h"

#include <string.h>

enum { TP_SIMD_GENERIC = 0, TP_SIMD_AVX2 = 1, TP_SIMD_AVX512 = 2, TP_SIMD_N = 3 };
enum { TP_ACT_F32 = 0, TP_ACT_Q8 = 1, TP_ACT_Q8K = 2 };
#define TP_MM_NTYPES 32 /* kernel tables are indexed by ggml type id */

#define TP_R16_Q4_0 288 /* bytes per block of a Q4_0 tile */
#define TP_R16_U8 544   /* bytes per block of a Q8_0 / U8 tile */

typedef struct {
    /* weight */
    const uint8_t *w;
    size_t row_bytes;
    uint32_t type;
    int layout; /* TP_WL_* */
    int n_in, n_out;
    /* activations of this batch chunk */
    int nb;
    const float *xf; /* f32 inputs, nb x n_in */
    const int8_t *xq;
    const float *xd;
    const int32_t *xc;
    const float *xs;
    const int16_t *xsum;
    /* output: y[b*n_out + r] */
    float *y;
} tp_mm_job;

/* Computes rows [r0, r1) for all nb inputs. r0 is a multiple of 16 and r1 is
 * one too or n_out. scratch: TP_MM_SCRATCH(n_in) bytes, 64-byte aligned,
 * private to the thread. */
typedef void (*tp_mm_kernel)(const tp_mm_job *j, int r0, int r1, uint8_t *scratch);
#define TP_MM_SCRATCH(n_in) ((size_t)(n_in) * 24 + 8192)

/* Quantizes one input vector of n values (n a multiple of 32, or of 256 for
 * Q8_K). Group g goes to q + g*qs; d[g*ds], c[g*ds], s[g*ds]; sums + 8*g*ds.
 * Q8_0: offset is the weight's (for c); sums unused. Q8_K: offset 128 stores
 * the values + 128 (Q6_K), 0 as they are; c and s unused. */
typedef void (*tp_mm_quant_fn)(const float *x, int n, int offset, int8_t *q, size_t qs, float *d, int32_t *c,
                               float *s, int16_t *sums, size_t ds);

/* One SIMD level: per weight type the kernel; per activation kind the quantizer. */
typedef struct {
    tp_mm_kernel kernel[TP_MM_NTYPES];
    tp_mm_quant_fn quant[3]; /* by TP_ACT_* (F32: NULL) */
} tp_mm_impl;

/* How far ahead (bytes) the SIMD kernels prefetch the weight stream: 8 KiB
 * (measured best of 1-32 KiB on the development machine; the environment
 * variable TEMPO_PF_DIST overrides it, for tuning on other machines). */
extern size_t tp_mm_pf_dist;

/* Which activation format a weight type uses, and its unsigned offset. */
int tp_mm_act_kind(uint32_t type);
int tp_mm_offset(uint32_t type);
int tp_mm_is_legacy(uint32_t type);

/* Per-ISA tables; return 0 if the file was compiled without that ISA. */
int tp_mm_fill_avx2(tp_mm_impl *impl);
int tp_mm_fill_avx512(tp_mm_impl *impl);

/* The portable quantizers (the AVX2 ones must give identical bytes). */
void tp_mm_quant_q8_generic(const float *x, int n, int offset, int8_t *q, size_t qs, float *d, int32_t *c, float *s,
                            int16_t *sums, size_t ds);
void tp_mm_quant_q8k_generic(const float *x, int n, int offset, int8_t *q, size_t qs, float *d, int32_t *c,
                             float *s, int16_t *sums, size_t ds);
#if defined(__x86_64__)
void tp_mm_quant_q8_avx2(const float *x, int n, int offset, int8_t *q, size_t qs, float *d, int32_t *c, float *s,
                         int16_t *sums, size_t ds);
void tp_mm_quant_q8k_avx2(const float *x, int n, int offset, int8_t *q, size_t qs, float *d, int32_t *c, float *s,
                          int16_t *sums, size_t ds);
#endif

/* ---- the legacy types' blocks, in any layout ---- */

static inline uint16_t tp_mm_rd16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

/* Block bytes of the legacy types (Q4_0 18, Q4_1 20, Q5_0 22, Q5_1 24, Q8_0 34). */
static inline size_t tp_mm_block_bytes(uint32_t type) { return tp_dtype_block_bytes(type); }

/* ---- float tiles (TP_WL_R4) ----
 * Rows 4i .. 4i+3 form tile i, where those rows were: for c < n_in/16, the
 * 4 rows' elements [16c, 16c+16) side by side (row j at (4c + j) * 16
 * elements), then each row's n_in % 16 last elements (row j at 64*(n_in/16)
 * + j * (n_in % 16)). */
static inline int tp_mm_is_float(uint32_t type) { return type == TP_F32 || type == TP_F16 || type == TP_BF16; }
/* Element offset of element k of row j in a float tile of rows of n. */
static inline size_t tp_r4_elem(int n, int j, int k) {
    const int n16 = n & ~15;
    if (k < n16) return (size_t)(4 * (k >> 4) + j) * 16 + (size_t)(k & 15);
    return (size_t)4 * (size_t)n16 + (size_t)j * (size_t)(n - n16) + (size_t)(k - n16);
}

/* ---- interleaved tiles (TP_WL_R16) ---- */

/* Bytes per block of a 16-row tile (0: the type has no R16 layout). */
size_t tp_r16_block_bytes(uint32_t type);
/* Packs rows [0, nrows) (nrows <= 16; the others are zero) of nblk blocks,
 * row r at src + r*src_stride, into one tile at dst. */
void tp_r16_pack(uint32_t type, const uint8_t *src, size_t src_stride, int nrows, size_t nblk, uint8_t *dst);
/* The file's bytes of block `blk` of row `lane` of a tile. */
void tp_r16_unpack_block(uint32_t type, const uint8_t *tile, int lane, size_t blk, uint8_t *out);
/* Row r's block blk as the file stores it, from either layout (out: a
 * buffer of the type's block size; the returned pointer is out or in the
 * weight). */
static inline const uint8_t *tp_mm_file_block(const tp_mm_job *J, int r, size_t blk, uint8_t *out) {
    if (J->layout == TP_WL_R16 && r < J->n_out / 16 * 16) {
        tp_r16_unpack_block(J->type, J->w + (size_t)(r >> 4) * 16 * J->row_bytes, r & 15, blk, out);
        return out;
    }
    return J->w + (size_t)r * J->row_bytes + blk * tp_dtype_block_bytes(J->type);
}

/* Block g of row r as 32 unsigned values (value + tp_mm_offset(type)), its
 * fp16 scale and (Q4_1/Q5_1) fp16 min, from either layout. */
static inline void tp_mm_row_block_u8(const tp_mm_job *J, int r, int g, uint8_t u[32], uint16_t *d, uint16_t *m) {
    uint8_t buf[34];
    const uint32_t type = J->type;
    const uint8_t *b = tp_mm_file_block(J, r, (size_t)g, buf);
    *d = tp_mm_rd16(b);
    *m = 0;
    switch (type) {
    case TP_Q8_0:
        for (int i = 0; i < 32; i++) u[i] = (uint8_t)(b[2 + i] ^ 0x80);
        break;
    case TP_Q4_0: case TP_Q4_1: {
        const uint8_t *qs = b + (type == TP_Q4_0 ? 2 : 4);
        if (type == TP_Q4_1) *m = tp_mm_rd16(b + 2);
        for (int i = 0; i < 16; i++) {
            u[i] = qs[i] & 0xF;
            u[i + 16] = qs[i] >> 4;
        }
        break;
    }
    case TP_Q5_0: case TP_Q5_1: {
        const int q51 = type == TP_Q5_1;
        uint32_t qh;
        memcpy(&qh, b + (q51 ? 4 : 2), 4);
        const uint8_t *qs = b + (q51 ? 8 : 6);
        if (q51) *m = tp_mm_rd16(b + 2);
        for (int i = 0; i < 16; i++) {
            u[i] = (uint8_t)((qs[i] & 0xF) | (((qh >> i) & 1) << 4));
            u[i + 16] = (uint8_t)((qs[i] >> 4) | (((qh >> (i + 16)) & 1) << 4));
        }
        break;
    }
    default:
        memset(u, 0, 32);
    }
}

/* Builds the U8 tile of rows r0 .. r0+nr-1 (nr <= 16; missing rows are zero)
 * into t: G blocks of TP_R16_U8 bytes, then (Q4_1/Q5_1) G x 16 fp16 mins. */
static inline void tp_mm_u8_tile(const tp_mm_job *J, int r0, int nr, uint8_t *t) {
    const int G = J->n_in / 32;
    const int mins = J->type == TP_Q4_1 || J->type == TP_Q5_1;
    uint8_t *mt = t + (size_t)G * TP_R16_U8;
    for (int g = 0; g < G; g++) {
        uint8_t *b = t + (size_t)g * TP_R16_U8;
        for (int i = 0; i < 16; i++) {
            uint8_t u[32];
            uint16_t d = 0, m = 0;
            if (i < nr) tp_mm_row_block_u8(J, r0 + i, g, u, &d, &m);
            else memset(u, 0, 32);
            memcpy(b + 2 * i, &d, 2);
            for (int j = 0; j < 8; j++) memcpy(b + 32 + 64 * j + 4 * i, u + 4 * j, 4);
            if (mins) memcpy(mt + 32 * (size_t)g + 2 * i, &m, 2);
        }
    }
}

/* The tile of rows r .. r+nr-1 of an R16 type: in the weight when repacked
 * (and whole), else packed into scratch. */
static inline const uint8_t *tp_mm_r16_tile(const tp_mm_job *J, int r, int nr, uint8_t *scratch) {
    if (J->layout == TP_WL_R16 && r + 16 <= J->n_out / 16 * 16) return J->w + (size_t)r * J->row_bytes;
    tp_r16_pack(J->type, J->w + (size_t)r * J->row_bytes, J->row_bytes, nr,
                J->row_bytes / tp_dtype_block_bytes(J->type), scratch);
    return scratch;
}

/* Element i of an F32/F16/BF16 row as f32: the scalar tail of the float kernels. */
static inline float tp_mm_elem_f32(uint32_t type, const uint8_t *row, int i) {
    if (type == TP_F32) {
        float f;
        memcpy(&f, row + 4 * (size_t)i, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, row + 2 * (size_t)i, 2);
    return type == TP_F16 ? tp_f16_to_f32(h) : tp_bf16_to_f32(h);
}

#endif
