/* matmul_internal.h: what the matmul front end (matmul.c) shares with the
 * per-ISA kernel files (matmul_avx2.c, matmul_avx512.c). Not a public header.
 *
 * Quantized activations. Before a product with a quantized weight, each of the
 * nb input vectors is quantized in groups of 32 values. G = n_in / 32 groups,
 * padded to Gp = a multiple of the level's chunk_groups (zero groups). Per
 * input b the buffers hold (strides in the job):
 *   xd  float [b*xg_stride + g]   the group's scale (Q8_0: fp16-rounded amax/127;
 *                                 Q8_K: the super-block's d, repeated per group)
 *   xm  float [b*xg_stride + g]   the factor of the weight's "min" term:
 *                                 Q8_1-style s = fp16(d * sum(q)) for Q4_1/Q5_1,
 *                                 d * sum(q) for the K-quants (Q8_K bsums)
 *   xq  int8, xq_stride bytes per input, and xc int32, xc_stride per input, in
 *   one of two layouts:
 *   - natural (chunk_groups 1: scalar, AVX2): xq[32g + i] the quantized values;
 *     xc[8g + l] = -offset * (q[4l] + q[4l+1] + q[4l+2] + q[4l+3]) of group g:
 *     SIMD kernels feed weights as unsigned bytes (value + offset), and a u8 x s8
 *     dot product of lane l started at xc[8g + l] equals the signed one.
 *   - transposed (chunk_groups 16: AVX-512): per chunk k of 16 groups, 512 bytes
 *     where row j (64 bytes) lane i (4 bytes) = values 4j..4j+3 of group 16k+i,
 *     so that one VPDPBUSD advances the dot products of 16 groups at once; and
 *     xc[32k + i] = -offset * sum of values 0..15 of group 16k+i,
 *     xc[32k + 16 + i] = the same for values 16..31.
 * The corrections depend on the weight type's offset (tp_mm_offset), so the
 * buffers are refilled for each product.
 */
#ifndef TEMPO_MATMUL_INTERNAL_H
#define TEMPO_MATMUL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/matmul.h"

enum { TP_SIMD_SCALAR = 0, TP_SIMD_AVX2 = 1, TP_SIMD_AVX512 = 2, TP_SIMD_N = 3 };
enum { TP_ACT_F32 = 0, TP_ACT_Q8 = 1, TP_ACT_Q8K = 2 };
#define TP_MM_NTYPES 32 /* kernel tables are indexed by ggml type id */

typedef struct {
    /* weight */
    const uint8_t *w;
    size_t row_bytes;
    uint32_t type;
    int n_in, n_out;
    /* activations of this batch chunk */
    int nb;
    const float *xf; /* f32 inputs, nb x n_in */
    const int8_t *xq;
    const int32_t *xc;
    const float *xd, *xm;
    size_t xq_stride, xc_stride, xg_stride; /* per input: bytes, int32s, groups */
    /* output: y[b*n_out + r] */
    float *y;
} tp_mm_job;

/* Computes rows [r0, r1) for all nb inputs. scratch: n_in floats private to the thread. */
typedef void (*tp_mm_kernel)(const tp_mm_job *j, int r0, int r1, float *scratch);

/* Quantizes one input vector of n values (n a multiple of 32, or of 256 for Q8_K)
 * into the level's layout above (padded groups included), for a weight with the
 * given offset. */
typedef void (*tp_mm_quant_fn)(const float *x, int n, int offset, int8_t *q, int32_t *c, float *d,
                               float *m);

typedef struct {
    tp_mm_kernel kernel[TP_MM_NTYPES];
    tp_mm_quant_fn quant[3]; /* indexed by TP_ACT_* (F32 unused) */
    int row_step;            /* rows a kernel prefers to handle together (chunks are multiples) */
    int chunk_groups;        /* 1: natural activation layout, 16: transposed */
} tp_mm_impl;

/* Which activation format a weight type uses, and its unsigned offset. */
int tp_mm_act_kind(uint32_t type);
int tp_mm_offset(uint32_t type);

/* Per-ISA tables; return 0 if the file was compiled without that ISA. */
int tp_mm_fill_avx2(tp_mm_impl *impl);
int tp_mm_fill_avx512(tp_mm_impl *impl);

/* The portable quantizers (natural layout; the AVX2 ones must give identical
 * bytes, and the AVX-512 ones the same values transposed). */
void tp_mm_quant_q8_scalar(const float *x, int n, int offset, int8_t *q, int32_t *c, float *d, float *m);
void tp_mm_quant_q8k_scalar(const float *x, int n, int offset, int8_t *q, int32_t *c, float *d, float *m);
#if defined(__x86_64__)
void tp_mm_quant_q8_avx2(const float *x, int n, int offset, int8_t *q, int32_t *c, float *d, float *m);
void tp_mm_quant_q8k_avx2(const float *x, int n, int offset, int8_t *q, int32_t *c, float *d, float *m);
#endif

#endif
