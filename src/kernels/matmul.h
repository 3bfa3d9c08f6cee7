/* matmul.h: the hot kernels: batched matrix-vector products over quantized weights.
 *
 * A weight W is n_out rows of n_in elements of one ggml type (row-major, GGUF layout).
 * tp_matmul computes, for each of nb input vectors x[b] (f32, n_in each, contiguous):
 *     y[b*n_out + r] = sum_c W[r][c] * x[b][c]
 * Each weight row is read from memory once for the whole batch (batches of up to
 * TP_MATMUL_MAX_BATCH tokens; larger nb is processed in chunks), so a TEMPO set of
 * k tokens costs about as much memory traffic as one token. Rows are split across
 * the pool's threads. Kernels are chosen at run time from the CPU's features
 * (AVX-512, AVX2+FMA, or portable C).
 *
 * For Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 weights the activations are quantized to Q8_0 first
 * (as ggml's x86 quantize_row_q8_0: d = amax/127 in fp16, nearest-even rounding
 * of x*127/amax) and dotted in integer arithmetic in exactly ggml's x86 order
 * of float operations, so these products equal llama.cpp's bit for bit and
 * every SIMD level gives identical results. K-quant weights use Q8_K
 * activations (ggml's quantize_row_q8_K); their float summation order is our
 * own (levels agree to rounding). F16/BF16/F32 weights use f32 activations
 * (llama.cpp rounds activations to f16/bf16 for such weights; we do not).
 * Q2_K/Q3_K are dequantized per row and dotted in f32.
 *
 * Work buffers are owned by a tp_matmul_ctx (one per session's compute context), so
 * the hot path does not allocate.
 */
#ifndef TEMPO_MATMUL_H
#define TEMPO_MATMUL_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/threadpool.h"

#define TP_MATMUL_MAX_BATCH 64

typedef struct {
    const void *data; /* n_out rows */
    uint32_t type;    /* ggml type id */
    int n_in, n_out;
} tp_weight;

typedef struct tp_matmul_ctx tp_matmul_ctx;

/* max_n_in: the longest input row any weight will see. */
tp_matmul_ctx *tp_matmul_ctx_new(tp_pool *pool, int max_n_in);
void tp_matmul_ctx_free(tp_matmul_ctx *c);
/* Bytes the context holds (for memory accounting). */
size_t tp_matmul_ctx_bytes(const tp_matmul_ctx *c);
/* What tp_matmul_ctx_new would hold for a pool of n_threads (for the budget before allocating). */
size_t tp_matmul_ctx_estimate_bytes(int n_threads, int max_n_in);

void tp_matmul(tp_matmul_ctx *c, float *y, const float *x, int nb, const tp_weight *w);

/* Which SIMD level the dispatcher picked: "avx512", "avx2" or "scalar".
 * The best level the CPU supports, unless the environment variable
 * TEMPO_SIMD=scalar|avx2|avx512 (read once) names a lower available one.
 * "avx512" needs AVX-512 F/BW/VL and VNNI. */
const char *tp_simd_level(void);

/* Force a level by name (tests, benchmarks); NULL restores the automatic
 * choice. Returns 0, or -1 if the name is unknown or this CPU lacks it
 * (nothing changes). Process-wide; do not call while a tp_matmul runs. */
int tp_matmul_set_simd(const char *level);

/* Row of an embedding table as f32 (any supported type). */
void tp_weight_row(const tp_weight *w, int row, float *out);

#endif
