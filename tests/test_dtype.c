/* test_dtype.c: type geometry, and dequantization / quantization checked
 * bit-exactly against ggml's own output (ggml-quant-vectors.gguf). */
#include "test.h"

#include "core/common.h"
#include "format/gguf.h"
#include "tensor/dtype.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define VECTORS SHARED_DIR "/models/generated/ggml-quant-vectors.gguf"

TEST(dtype_geometry) {
    static const struct { uint32_t id; const char *name; size_t be, bb; bool sup; } want[] = {
        { TP_F32, "F32", 1, 4, true },      { TP_F16, "F16", 1, 2, true },
        { TP_BF16, "BF16", 1, 2, true },    { TP_Q4_0, "Q4_0", 32, 18, true },
        { TP_Q4_1, "Q4_1", 32, 20, true },  { TP_Q5_0, "Q5_0", 32, 22, true },
        { TP_Q5_1, "Q5_1", 32, 24, true },  { TP_Q8_0, "Q8_0", 32, 34, true },
        { TP_Q8_1, "Q8_1", 32, 36, false }, { TP_Q2_K, "Q2_K", 256, 84, true },
        { TP_Q3_K, "Q3_K", 256, 110, true }, { TP_Q4_K, "Q4_K", 256, 144, true },
        { TP_Q5_K, "Q5_K", 256, 176, true }, { TP_Q6_K, "Q6_K", 256, 210, true },
        { TP_Q8_K, "Q8_K", 256, 292, false },
        { 16, "IQ2_XXS", 256, 66, false },  { 20, "IQ4_NL", 32, 18, false },
        { 23, "IQ4_XS", 256, 136, false },  { 29, "IQ1_M", 256, 56, false },
        { 28, "F64", 1, 8, false },         { 39, "MXFP4", 32, 17, false },
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const char *n = tp_dtype_name(want[i].id);
        CHECK_MSG(n && strcmp(n, want[i].name) == 0, "type %u: name %s, want %s", want[i].id, n ? n : "(null)",
                  want[i].name);
        CHECK_INT_EQ(tp_dtype_block_elems(want[i].id), want[i].be);
        CHECK_INT_EQ(tp_dtype_block_bytes(want[i].id), want[i].bb);
        CHECK_MSG(tp_dtype_supported(want[i].id) == want[i].sup, "type %s supported?", want[i].name);
    }
    /* removed and never-assigned ids are unknown */
    static const uint32_t unknown[] = { 4, 5, 31, 32, 33, 36, 37, 38, 40, 99, 1000, UINT32_MAX };
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        CHECK(tp_dtype_name(unknown[i]) == NULL);
        CHECK_INT_EQ(tp_dtype_block_elems(unknown[i]), 0);
        CHECK_INT_EQ(tp_dtype_block_bytes(unknown[i]), 0);
        CHECK(!tp_dtype_supported(unknown[i]));
    }
    CHECK_INT_EQ(tp_dtype_row_bytes(TP_Q4_K, 512), 288);
    CHECK_INT_EQ(tp_dtype_row_bytes(TP_Q8_0, 64), 68);
    CHECK_INT_EQ(tp_dtype_row_bytes(TP_F16, 7), 14);
}

typedef struct { const char *tensor; uint32_t type; } vec_case;
static const vec_case k_cases[] = {
    { "vec.f16", TP_F16 },   { "vec.bf16", TP_BF16 }, { "vec.q8_0", TP_Q8_0 }, { "vec.q4_0", TP_Q4_0 },
    { "vec.q4_1", TP_Q4_1 }, { "vec.q5_0", TP_Q5_0 }, { "vec.q5_1", TP_Q5_1 }, { "vec.q2_K", TP_Q2_K },
    { "vec.q3_K", TP_Q3_K }, { "vec.q4_K", TP_Q4_K }, { "vec.q5_K", TP_Q5_K }, { "vec.q6_K", TP_Q6_K },
};

/* Every supported type reproduces ggml's dequantization of the same blocks bit for bit. */
TEST(dtype_dequantize_matches_ggml_bit_exact) {
    char err[TP_ERR_LEN] = "";
    gguf_file *f = tp_gguf_open(VECTORS, err);
    CHECK_MSG(f != NULL, "%s", err);
    REQUIRE(f != NULL);
    for (size_t c = 0; c < sizeof k_cases / sizeof k_cases[0]; c++) {
        char dname[64];
        snprintf(dname, sizeof dname, "%s.deq", k_cases[c].tensor);
        const gguf_tensor *q = tp_gguf_find_tensor(f, k_cases[c].tensor);
        const gguf_tensor *d = tp_gguf_find_tensor(f, dname);
        CHECK_MSG(q && d, "missing %s", k_cases[c].tensor);
        if (!q || !d) continue;
        CHECK_INT_EQ(q->type, k_cases[c].type);
        CHECK_INT_EQ(d->type, TP_F32);
        size_t n = (size_t)q->ne[0], rows = (size_t)q->ne[1];
        size_t rb = tp_dtype_row_bytes(q->type, n);
        CHECK_INT_EQ(rb * rows, q->nbytes);
        float *out = malloc(n * rows * sizeof(float));
        for (size_t r = 0; r < rows; r++)
            tp_dequantize_row(q->type, (const uint8_t *)q->data + r * rb, out + r * n, n);
        size_t mism = 0, first = 0;
        for (size_t i = 0; i < n * rows; i++)
            if (memcmp(&out[i], (const float *)d->data + i, 4) != 0) {
                if (!mism) first = i;
                mism++;
            }
        CHECK_MSG(mism == 0, "%s: %zu of %zu values differ from ggml (first at %zu: %.9g vs %.9g)",
                  k_cases[c].tensor, mism, n * rows, first, out[first], ((const float *)d->data)[first]);
        free(out);
    }
    tp_gguf_close(f);
}

/* The reference quantizers reproduce ggml_quantize_chunk (no imatrix) byte for byte. */
TEST(dtype_quantize_matches_ggml_bit_exact) {
    char err[TP_ERR_LEN] = "";
    gguf_file *f = tp_gguf_open(VECTORS, err);
    CHECK_MSG(f != NULL, "%s", err);
    REQUIRE(f != NULL);
    const gguf_tensor *src = tp_gguf_find_tensor(f, "vec.src");
    REQUIRE(src != NULL && src->type == TP_F32);
    size_t n = (size_t)src->ne[0], rows = (size_t)src->ne[1];
    float *x = malloc(n * rows * sizeof(float));
    memcpy(x, src->data, n * rows * sizeof(float));
    static const vec_case qcases[] = {
        { "vec.f16", TP_F16 },   { "vec.bf16", TP_BF16 }, { "vec.q8_0", TP_Q8_0 },
        { "vec.q4_0", TP_Q4_0 }, { "vec.q4_1", TP_Q4_1 }, { "vec.q5_0", TP_Q5_0 },
        { "vec.q5_1", TP_Q5_1 },
    };
    for (size_t c = 0; c < sizeof qcases / sizeof qcases[0]; c++) {
        const gguf_tensor *q = tp_gguf_find_tensor(f, qcases[c].tensor);
        REQUIRE(q != NULL);
        size_t rb = tp_dtype_row_bytes(qcases[c].type, n);
        uint8_t *buf = malloc(rb * rows);
        for (size_t r = 0; r < rows; r++) tp_quantize_row(qcases[c].type, x + r * n, buf + r * rb, n);
        size_t mism = 0;
        for (size_t i = 0; i < rb * rows; i++) mism += buf[i] != ((const uint8_t *)q->data)[i];
        CHECK_MSG(mism == 0, "%s: %zu of %zu bytes differ from ggml", qcases[c].tensor, mism, rb * rows);
        free(buf);
    }
    free(x);
    tp_gguf_close(f);
}

/* Hand-built blocks: the documented layouts (formats.md 4.2), independent of ggml's files. */
TEST(dtype_dequantize_hand_built_blocks) {
    uint8_t q40[18];
    uint16_t h = tp_f32_to_f16(0.5f);
    memcpy(q40, &h, 2);
    for (int j = 0; j < 16; j++) q40[2 + j] = (uint8_t)((j & 0xF) | ((15 - j) << 4));
    float y[256];
    tp_dequantize_row(TP_Q4_0, q40, y, 32);
    for (int j = 0; j < 16; j++) {
        CHECK_NEAR(y[j], 0.5 * (j - 8), 0);          /* low nibbles: first half */
        CHECK_NEAR(y[j + 16], 0.5 * (15 - j - 8), 0); /* high nibbles: second half */
    }
    uint8_t q80[34];
    h = tp_f32_to_f16(0.25f);
    memcpy(q80, &h, 2);
    for (int j = 0; j < 32; j++) q80[2 + j] = (uint8_t)(int8_t)(j - 16);
    tp_dequantize_row(TP_Q8_0, q80, y, 32);
    for (int j = 0; j < 32; j++) CHECK_NEAR(y[j], 0.25 * (j - 16), 0);

    /* Q6_K: d is the LAST field; all q = 0 except one element of the second half */
    block_q6_K b6;
    memset(&b6, 0, sizeof b6);
    for (int i = 0; i < 128; i++) b6.ql[i] = 0x00;
    for (int i = 0; i < 64; i++) b6.qh[i] = 0xAA; /* high bits 2 everywhere: q = 32 - 32 = 0 */
    for (int i = 0; i < 16; i++) b6.scales[i] = (int8_t)(i + 1);
    b6.d = tp_f32_to_f16(2.0f);
    b6.ql[64 + 3] = 0x05; /* second half, l = 3: q1 = 5 + 32 - 32 = 5, scale index 8 */
    tp_dequantize_row(TP_Q6_K, &b6, y, 256);
    for (int i = 0; i < 256; i++) CHECK_NEAR(y[i], i == 128 + 3 ? 2.0 * 9 * 5 : 0.0, 0);

    /* unaligned source pointer works (blocks inside a file need not be aligned) */
    uint8_t raw[1 + 34];
    memcpy(raw + 1, q80, 34);
    tp_dequantize_row(TP_Q8_0, raw + 1, y, 32);
    CHECK_NEAR(y[31], 0.25 * 15, 0);
}

/* Quantize-then-dequantize stays within each format's step size. */
TEST(dtype_quantize_roundtrip_error_bounds) {
    enum { N = 256 };
    float x[N], y[N];
    uint32_t s = 12345;
    for (int i = 0; i < N; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = ((float)(s >> 8) / (float)(1 << 24) - 0.5f) * 4.0f;
    }
    x[7] = 0.0f;
    static const struct { uint32_t t; double rel; } cases[] = {
        { TP_F16, 1e-3 }, { TP_BF16, 8e-3 }, { TP_Q8_0, 1.0 / 127 }, { TP_Q4_0, 1.0 / 8 },
        { TP_Q4_1, 1.0 / 15 }, { TP_Q5_0, 1.0 / 16 }, { TP_Q5_1, 1.0 / 31 },
    };
    uint8_t buf[N * 4];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        tp_quantize_row(cases[c].t, x, buf, N);
        tp_dequantize_row(cases[c].t, buf, y, N);
        double worst = 0;
        for (int i = 0; i < N; i++) {
            double e = fabs((double)y[i] - x[i]);
            if (e > worst) worst = e;
        }
        /* |x| <= 2: error at most one quantization step of the block range (plus fp16 scale rounding) */
        CHECK_MSG(worst <= 2.0 * cases[c].rel * 1.01 + 1e-6, "%s: max error %g", tp_dtype_name(cases[c].t), worst);
    }
    /* an all-zero block quantizes to zeros without dividing by zero */
    float z[32] = { 0 };
    tp_quantize_row(TP_Q4_0, z, buf, 32);
    tp_dequantize_row(TP_Q4_0, buf, y, 32);
    for (int i = 0; i < 32; i++) CHECK(y[i] == 0.0f);
}

/* Our Q4_K / Q6_K quantizers (not ggml's algorithm) produce valid blocks whose
 * error on vec.src is close to ggml's own quantization of the same data. */
TEST(dtype_quantize_k_quants_error_close_to_ggml) {
    char err[TP_ERR_LEN] = "";
    gguf_file *f = tp_gguf_open(VECTORS, err);
    CHECK_MSG(f != NULL, "%s", err);
    REQUIRE(f != NULL);
    const gguf_tensor *src = tp_gguf_find_tensor(f, "vec.src");
    REQUIRE(src != NULL);
    size_t n = (size_t)src->ne[0] * (size_t)src->ne[1];
    const float *x = src->data; /* 32-byte aligned in the mapping */
    static const struct { uint32_t t; const char *deq; } cases[] = {
        { TP_Q4_K, "vec.q4_K.deq" }, { TP_Q6_K, "vec.q6_K.deq" },
    };
    for (size_t c = 0; c < 2; c++) {
        const gguf_tensor *g = tp_gguf_find_tensor(f, cases[c].deq);
        REQUIRE(g != NULL);
        uint8_t *q = malloc(tp_dtype_row_bytes(cases[c].t, n));
        float *y = malloc(n * sizeof(float));
        tp_quantize_row(cases[c].t, x, q, n);
        tp_dequantize_row(cases[c].t, q, y, n);
        double e_ours = 0, e_ggml = 0, amax = 0;
        for (size_t i = 0; i < n; i++) {
            e_ours += ((double)y[i] - x[i]) * ((double)y[i] - x[i]);
            double gd = ((const float *)g->data)[i];
            e_ggml += (gd - x[i]) * (gd - x[i]);
            if (fabs(x[i]) > amax) amax = fabs(x[i]);
        }
        e_ours = sqrt(e_ours / (double)n);
        e_ggml = sqrt(e_ggml / (double)n);
        /* ggml searches for better scales; plain min/max costs some accuracy but must stay near */
        CHECK_MSG(e_ours <= 1.3 * e_ggml && e_ours > 0, "%s: rmse %g vs ggml %g", tp_dtype_name(cases[c].t), e_ours,
                  e_ggml);
        CHECK_MSG(e_ours < amax * (cases[c].t == TP_Q4_K ? 0.012 : 0.004), "%s: rmse %g, max |x| %g",
                  tp_dtype_name(cases[c].t), e_ours, amax);
        free(q);
        free(y);
    }
    /* a zero block stays zero */
    float z[256] = { 0 }, y[256];
    uint8_t buf[210];
    tp_quantize_row(TP_Q6_K, z, buf, 256);
    tp_dequantize_row(TP_Q6_K, buf, y, 256);
    for (int i = 0; i < 256; i++) CHECK(y[i] == 0.0f);
    tp_quantize_row(TP_Q4_K, z, buf, 256);
    tp_dequantize_row(TP_Q4_K, buf, y, 256);
    for (int i = 0; i < 256; i++) CHECK(y[i] == 0.0f);
    tp_gguf_close(f);
}
