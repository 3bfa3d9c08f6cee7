/* matmul.h: the hot kernels: batched matrix-vector products over quantized weights.
 *
 * A weight W is n_out rows of n_in elements of one ggml type (row-major, GGUF layout,
 * or the interleaved layout of tp_weight_repack). tp_matmul computes, for each of nb
 * input vectors x[b] (f32, n_in each, contiguous):
 *     y[b*n_out + r] = sum_c W[r][c] * x[b][c]
 * Each weight row is read from memory once for the whole batch (batches of up to
 * TP_MATMUL_MAX_BATCH tokens; larger nb is processed in chunks), and the kernels
 * are register-tiled (several rows x several inputs per tile), so a TEMPO set of
 * k tokens costs one read of the weights plus k times the arithmetic. Rows are
 * split across the pool's threads. Kernels are chosen at run time from the CPU's
 * features (AVX-512 with VNNI, AVX2+FMA, or portable C: "generic").
 *
 * Arithmetic (the same on every level, so the levels agree bit for bit):
 *  - F32/F16/BF16 weights: f32 activations; per output 16 lane sums (lane l takes
 *    the elements c = l mod 16 below n_in rounded down to 16) built with fused
 *    multiply-adds, added pairwise (l, l+8), (l, l+4), (l, l+2), (0, 1), then
 *    the remaining elements by fused multiply-adds in order.
 *  - Q4_0/Q4_1/Q5_0/Q5_1/Q8_0: activations quantized to Q8_0 as ggml's x86
 *    quantize_row_q8_0 does (d = amax/127 stored as fp16, q = nearest-even of
 *    x*127/amax); per 32-value block the integer dot product is exact, and the
 *    output is acc = fma((float)isum, d_w*d_x, acc) block after block (then, for
 *    Q4_1/Q5_1, acc = fma(m_w, s_x, acc) with ggml's Q8_1 s = fp16(d_x*sum q)).
 *    This is not ggml's order (ggml keeps 8 float lanes per block), so our
 *    logits differ from llama.cpp's by float rounding (see tests/test_forward.c).
 *  - Q4_K/Q5_K/Q6_K: activations quantized to Q8_K (ggml's quantize_row_q8_K);
 *    per 256-value super-block the scaled integer sum is exact (I = sum of
 *    scale * block dot), then acc = fma((float)I, d_w*d_x, acc) and, for the
 *    mins, acc = fma((float)M, -dmin_w*d_x, acc) with M = sum of min * block sum.
 *  - Q2_K/Q3_K: each row dequantized to f32, then as F32.
 *
 * Work buffers are owned by a tp_matmul_ctx (one per session's compute context), so
 * the hot path does not allocate; repacked weights are written once at load and
 * read-only after.
 */
#ifndef TEMPO_MATMUL_H
#define TEMPO_MATMUL_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/threadpool.h"

#define TP_MATMUL_MAX_BATCH 64

/* Weight layouts (tp_weight.layout). */
enum {
    TP_WL_ROWS = 0, /* GGUF rows (the file's layout) */
    TP_WL_R16 = 1,  /* quantized: rows 0 .. n_out/16*16 interleaved by tp_weight_repack */
    TP_WL_R4 = 2,   /* F32/F16/BF16: rows 0 .. n_out/4*4 interleaved by tp_weight_repack */
};

typedef struct {
    const void *data; /* n_out rows */
    uint32_t type;    /* ggml type id */
    int n_in, n_out;
    int layout;       /* TP_WL_*; 0 (rows) unless tp_weight_repack changed it */
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

/* y[i] = products of the same input x with w[i], i < n <= TP_MATMUL_MAX_GROUP (q, k and v;
 * gate and up). When the weights share their type and input length, the input is quantized
 * once and one pool run covers every matrix's rows (one wake-up and one wait instead of one
 * per matrix and per quantization); otherwise it is tp_matmul per matrix. The outputs are
 * tp_matmul's bit for bit either way. */
#define TP_MATMUL_MAX_GROUP 3
void tp_matmul_group(tp_matmul_ctx *c, float *const *y, const float *x, int nb, const tp_weight *const *w, int n);

/* Which SIMD level the dispatcher picked: "avx512", "avx2" or "generic".
 * The best level the CPU supports, unless the environment variable
 * TEMPO_SIMD=generic|avx2|avx512 (read once; "scalar" is an alias of
 * "generic") names a lower one: that level then is the highest this process
 * has, as on a CPU without the higher ones (tp_matmul_set_simd refuses them).
 * "avx512" needs AVX-512 F/BW/VL and VNNI. */
const char *tp_simd_level(void);
/* The same level as a number: 0 generic, 1 avx2, 2 avx512 (an atomic load: for per-call dispatch). */
int tp_simd_level_id(void);

/* Force a level by name (tests, benchmarks); NULL restores the automatic
 * choice. Returns 0, or -1 if the name is unknown or this CPU (or TEMPO_SIMD)
 * lacks it (nothing changes). Process-wide; do not call while a tp_matmul runs. */
int tp_matmul_set_simd(const char *level);
/* Whether a level ("generic", "avx2", "avx512") is available in this process. */
int tp_simd_available(const char *level);

/* Row of an embedding table as f32 (any supported type and layout): exactly
 * tp_dequantize_row of the file's row. */
void tp_weight_row(const tp_weight *w, int row, float *out);

/* Load-time repacking. Q4_0, Q8_0, Q4_K, Q5_K and Q6_K rows are rewritten in
 * place, 16 rows at a time, into the interleaved layout TP_WL_R16
 * (matmul_internal.h): per block, each field of the 16 rows' blocks side by
 * side, so that one 64-byte load holds 4 quantized bytes of each of 16 rows.
 * F32/F16/BF16 rows, 4 at a time, into TP_WL_R4: per 16 elements the 4 rows'
 * chunks side by side (a tile is one sequential stream), the rows' last
 * n_in % 16 elements after them.
 * The bytes are the same in number, only moved: written into a private file
 * mapping, the rewritten pages replace the file's pages in the process (the
 * weights are not held twice). Rows past the last whole 16 stay as they are.
 * w->data must be writable for the duration of the call. Returns 1 if
 * repacked (w->layout is then TP_WL_R16 or TP_WL_R4), 0 if the type has no
 * packed layout or the weight is already packed or has fewer rows than a tile. Results of
 * tp_matmul and tp_weight_row do not change. */
int tp_weight_repack(tp_weight *w);
/* Whether tp_weight_repack would repack w (no writing). */
int tp_weight_repackable(const tp_weight *w);
/* tp_weight_repack on each of n weights; weights that share their bytes with
 * an earlier one (a tied output) are repacked once and all get its layout. */
void tp_weights_repack(tp_weight *const *ws, int n);

/* Moves the bytes of [base, base + len), part of a private mapping, onto
 * transparent huge pages: every 2 MiB-aligned chunk inside the range is
 * replaced, at the same address, by anonymous memory holding the same bytes
 * (madvise MADV_HUGEPAGE). Streaming weights from 4 KiB pages costs a third
 * of the read bandwidth on some machines (TLB misses, worst in VMs). The
 * replaced file pages leave the process as each chunk arrives, so the
 * resident set grows by at most one chunk meanwhile and ends as before; the
 * copies are private to the process (another process mapping the same file
 * does not share them). The chunks come back writable. Returns the bytes
 * moved (0 where huge pages or mremap are unavailable). */
size_t tp_weights_to_hugepages(void *base, size_t len);

#endif
