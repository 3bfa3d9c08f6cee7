/* dtype.h: ggml tensor types: ids, block geometry, block structs, dequantization.
 *
 * Block layouts follow ggml (ggml-common.h); dequantize_row reproduces ggml's own
 * dequantization bit-exactly (tested against ggml-quant-vectors.gguf).
 */
#ifndef TEMPO_DTYPE_H
#define TEMPO_DTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum tp_dtype {
    TP_F32 = 0, TP_F16 = 1, TP_Q4_0 = 2, TP_Q4_1 = 3, TP_Q5_0 = 6, TP_Q5_1 = 7,
    TP_Q8_0 = 8, TP_Q8_1 = 9, TP_Q2_K = 10, TP_Q3_K = 11, TP_Q4_K = 12, TP_Q5_K = 13,
    TP_Q6_K = 14, TP_Q8_K = 15, TP_BF16 = 30,
};

#define QK4_0 32
#define QK8_0 32
#define QK_K 256

typedef struct { uint16_t d; uint8_t qs[QK4_0 / 2]; } block_q4_0;            /* 18 B */
typedef struct { uint16_t d, m; uint8_t qs[QK4_0 / 2]; } block_q4_1;         /* 20 B */
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; } block_q5_0;    /* 22 B */
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; } block_q5_1; /* 24 B */
typedef struct { uint16_t d; int8_t qs[QK8_0]; } block_q8_0;                 /* 34 B */
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[QK_K / 2]; } block_q4_K; /* 144 B */
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[QK_K / 8]; uint8_t qs[QK_K / 2]; } block_q5_K; /* 176 B */
typedef struct { uint8_t ql[QK_K / 2]; uint8_t qh[QK_K / 4]; int8_t scales[QK_K / 16]; uint16_t d; } block_q6_K; /* 210 B */

/* Known to this engine (dequantization and matmul)? */
bool tp_dtype_supported(uint32_t type);
/* Name ("Q4_0"), or NULL for an id we do not know at all. */
const char *tp_dtype_name(uint32_t type);
/* Elements per block and bytes per block (0 for unknown types). */
size_t tp_dtype_block_elems(uint32_t type);
size_t tp_dtype_block_bytes(uint32_t type);
/* Bytes of a row of n elements (n must be a multiple of the block size). */
size_t tp_dtype_row_bytes(uint32_t type, size_t n);

/* dst[0..n) = dequantized src (n a multiple of the block size). */
void tp_dequantize_row(uint32_t type, const void *src, float *dst, size_t n);

/* Quantizers, for writing test/bench files (n a multiple of the block size).
 * F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0: ggml's reference (*_ref) algorithms,
 * byte-identical to ggml_quantize_chunk without an importance matrix.
 * Q4_K, Q6_K: a simpler min/max quantizer of our own (same format, similar
 * error, different bytes from ggml's). Other types: dst is zero-filled. */
void tp_quantize_row(uint32_t type, const float *src, void *dst, size_t n);

#endif
