/* matmul_internal.h: what the matmul front end (matmul.c) shares with the
 * per-ISA kernel files (matmul_avx2.c, matmul_avx512.c). Not a public header.
 *
 * Quantized activations. Before a product with a quantized weight, each of the
 * nb input vectors is quantized in groups of 32 values (G = n_in / 32 groups).
 * Group g of input b lives at (strides in the job):
 *   xq  int8  xq + b*xq_bs + g*xq_gs        the 32 quantized values
 *   xc  int32 xc + b*xc_bs + g*xc_gs        corrections (below)
 *   xd  float xd[b*xg_bs + g*xg_gs]         the group's scale (Q8_0: fp16-rounded
 *                                           amax/127; Q8_K: the super-block's d)
 *   xm  float xm[b*xg_bs + g*xg_gs]         the factor of the weight's "min" term:
 *                                           Q8_1-style s = fp16(d * sum(q)) for
 *                                           Q4_1/Q5_1, d * sum(q) for the K-quants
 * in one of three layouts (tp_mm_impl.layout, per weight type):
 *   GROUP_MAJOR (legacy types, every level): all inputs' copies of a group are
 *     adjacent (xq_bs 32, xq_gs 32*nb; xc_bs 8; xg_bs 1, xg_gs nb), so a kernel
 *     reads a tile of inputs at constant offsets. xc[l] (8 per group) =
 *     -offset * (q[4l] + q[4l+1] + q[4l+2] + q[4l+3]): SIMD kernels feed weights
 *     as unsigned bytes (value + offset), and a u8 x s8 dot product of lane l
 *     started at xc[l] equals the signed one.
 *   ACT_MAJOR (K-quants on scalar and AVX2): one input after the other
 *     (xq_bs 32*G, xq_gs 32; xc as above, 8 per group; xg_bs G, xg_gs 1).
 *   T16 (K-quants on AVX-512): inputs one after the other, each padded to Gp =
 *     G rounded up to 16, in chunks k of 16 groups: 512 bytes where row j (64
 *     bytes) lane i (4 bytes) = values 4j..4j+3 of group 16k+i, so that one
 *     VPDPBUSD advances 16 groups at once; xc[32k + i] = -offset * sum of values
 *     0..15 of group 16k+i, xc[32k + 16 + i] = the same for values 16..31;
 *     xd/xm per group (xg_bs Gp, xg_gs 1), zero for the padding groups.
 * The corrections depend on the weight type's offset (tp_mm_offset), so the
 * buffers are refilled for each product.
 */
#ifndef TEMPO_MATMUL_INTERNAL_H
#define TEMPO_MATMUL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/matmul.h"
#include "core/common.h"
#include "tensor/dtype.h"

#include <string.h>

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
    size_t xq_bs, xq_gs, xc_bs, xc_gs, xg_bs, xg_gs; /* per input (b) and per group (g) */
    /* output: y[b*n_out + r] */
    float *y;
} tp_mm_job;

/* Computes rows [r0, r1) for all nb inputs. scratch: n_in floats private to the thread. */
typedef void (*tp_mm_kernel)(const tp_mm_job *j, int r0, int r1, float *scratch);

/* Quantizes one input vector of n values (n a multiple of 32, or of 256 for Q8_K)
 * for a weight with the given offset. q, c, d, m point at the input's group 0;
 * group g goes to q + g*qg, c + g*cg, d[g*dg], m[g*dg] (natural layouts; the
 * T16 quantizer writes its fixed layout, padding included, and ignores them). */
typedef void (*tp_mm_quant_fn)(const float *x, int n, int offset, int8_t *q, int32_t *c, float *d, float *m,
                               size_t qg, size_t cg, size_t dg);

enum { TP_LAYOUT_GROUP_MAJOR = 0, TP_LAYOUT_ACT_MAJOR = 1, TP_LAYOUT_T16 = 2 };

/* One SIMD level: per weight type, the kernel, the activation quantizer it
 * needs (NULL for kernels on f32 inputs) and that quantizer's layout. */
typedef struct {
    tp_mm_kernel kernel[TP_MM_NTYPES];
    tp_mm_quant_fn quant[TP_MM_NTYPES];
    int layout[TP_MM_NTYPES]; /* TP_LAYOUT_* */
    int row_step;                   /* rows a kernel prefers to handle together (chunks are multiples) */
} tp_mm_impl;

/* Which activation format a weight type uses, and its unsigned offset. */
int tp_mm_act_kind(uint32_t type);
int tp_mm_offset(uint32_t type);
/* The "legacy" block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0). Their kernels on
 * every level evaluate each output exactly as ggml's x86 vec_dot does: per
 * block, 8 int32 lanes of 4 products each, acc[l] = fma(d_w*d_x, lane[l],
 * acc[l]) block after block, then ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))
 * (+ the Q4_1/Q5_1 min terms summed separately) -- so that our activations,
 * and the next layer's activation quantization, follow llama.cpp's bit for bit.
 * The levels therefore agree exactly on these types. */
int tp_mm_is_legacy(uint32_t type);

/* Per-ISA tables; return 0 if the file was compiled without that ISA. */
int tp_mm_fill_avx2(tp_mm_impl *impl);
int tp_mm_fill_avx512(tp_mm_impl *impl);

/* The portable quantizers (natural layout; the AVX2 ones must give identical
 * bytes, and the AVX-512 ones the same values transposed). */
void tp_mm_quant_q8_scalar(const float *x, int n, int offset, int8_t *q, int32_t *c, float *d, float *m,
                           size_t qg, size_t cg, size_t dg);
void tp_mm_quant_q8k_scalar(const float *x, int n, int offset, int8_t *q, int32_t *c, float *d, float *m,
                            size_t qg, size_t cg, size_t dg);
#if defined(__x86_64__)
void tp_mm_quant_q8_avx2(const float *x, int n, int offset, int8_t *q, int32_t *c, float *d, float *m,
                         size_t qg, size_t cg, size_t dg);
void tp_mm_quant_q8k_avx2(const float *x, int n, int offset, int8_t *q, int32_t *c, float *d, float *m,
                          size_t qg, size_t cg, size_t dg);
#endif

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
