/* kernel_timing.c: how close tp_matmul gets to the memory bandwidth bound.
 *
 * Build and run by hand (not part of the test suite):
 *   make build/libtempo.a
 *   cc -O2 -D_GNU_SOURCE -Iinclude -Isrc bench/kernel_timing.c build/libtempo.a -lpthread -lm -o build/kernel_timing
 *   build/kernel_timing [threads=2] [simd level]
 *
 * 1. Memory read bandwidth: sum of a 1 GiB buffer with the pool's threads.
 * 2. For Q4_0, Q8_0, F16 (and Q4_K, Q6_K) weights of Llama-3.2-1B's FFN shapes
 *    (8192 x 2048 and 2048 x 8192), the time of one tp_matmul with nb = 1, 8, 16
 *    inputs, as GB/s of weight bytes. Each call uses the next of several copies
 *    of the weights (together >= 1 GiB, more than the last-level cache), so the
 *    weights come from DRAM as they do in a real decode.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "kernels/matmul.h"
#include "kernels/threadpool.h"
#include "tensor/dtype.h"

typedef struct {
    const uint64_t *buf;
    size_t n;
    uint64_t sums[64];
} bw_job;

static void bw_task(void *ctx, int ith, int nth) {
    bw_job *J = ctx;
    size_t a = J->n * (size_t)ith / (size_t)nth, b = J->n * (size_t)(ith + 1) / (size_t)nth;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = a; i + 4 <= b; i += 4) {
        s0 += J->buf[i];
        s1 += J->buf[i + 1];
        s2 += J->buf[i + 2];
        s3 += J->buf[i + 3];
    }
    J->sums[ith] = s0 + s1 + s2 + s3;
}

static uint32_t g_rng = 12345;
static float rnd(void) {
    g_rng = g_rng * 1664525u + 1013904223u;
    return (float)((g_rng >> 8) & 0xFFFF) / 32768.0f - 1.0f;
}

int main(int argc, char **argv) {
    int nt = argc > 1 ? atoi(argv[1]) : 2;
    if (argc > 2 && tp_matmul_set_simd(argv[2]) != 0) {
        fprintf(stderr, "SIMD level %s not available\n", argv[2]);
        return 1;
    }
    tp_pool *pool = tp_pool_create(nt);
    printf("threads %d, simd %s\n", tp_pool_threads(pool), tp_simd_level());

    /* 1. read bandwidth */
    size_t bytes = (size_t)1 << 30;
    uint64_t *buf = tp_alloc_aligned(bytes);
    for (size_t i = 0; i < bytes / 8; i++) buf[i] = i;
    bw_job bj = { .buf = buf, .n = bytes / 8 };
    double best = 1e9;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = tp_now();
        tp_pool_run(pool, bw_task, &bj);
        double dt = tp_now() - t0;
        if (dt < best) best = dt;
    }
    double bw = (double)bytes / best / 1e9;
    printf("memory read bandwidth (sum of 1 GiB, %d threads): %.1f GB/s  (checksum %llu)\n", nt, bw,
           (unsigned long long)(bj.sums[0] & 0xFF));
    tp_free_aligned(buf);

    /* 2. matmul */
    const uint32_t types[] = { TP_Q4_0, TP_Q8_0, TP_F16, TP_Q4_K, TP_Q6_K };
    const int shapes[2][2] = { { 2048, 8192 }, { 8192, 2048 } }; /* n_in, n_out */
    const int nbs[] = { 1, 8, 16 };
    float *x = malloc(sizeof(float) * 8192 * 16);
    float *y = malloc(sizeof(float) * 8192 * 16);
    for (int i = 0; i < 8192 * 16; i++) x[i] = rnd();
    tp_matmul_ctx *ctx = tp_matmul_ctx_new(pool, 8192);
    printf("%-5s %-11s %4s %9s %8s %7s %8s\n", "type", "n_in x out", "nb", "ms/call", "GB/s", "%bw", "x nb=1");
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        uint32_t type = types[ti];
        for (int si = 0; si < 2; si++) {
            int n_in = shapes[si][0], n_out = shapes[si][1];
            size_t rb = tp_dtype_row_bytes(type, (size_t)n_in), wbytes = rb * (size_t)n_out;
            int copies = (int)(((size_t)1 << 30) / wbytes) + 1;
            uint8_t *w = tp_alloc_aligned(wbytes * (size_t)copies);
            /* one quantized template, copied (K-quants have no quantizer: random blocks) */
            float *row = malloc(sizeof(float) * (size_t)n_in);
            for (int r = 0; r < n_out; r++) {
                for (int i = 0; i < n_in; i++) row[i] = rnd() * 0.05f;
                if (type == TP_Q4_K || type == TP_Q6_K) {
                    for (size_t i = 0; i < rb; i++) w[(size_t)r * rb + i] = (uint8_t)(g_rng = g_rng * 1664525u + 1013904223u) >> 3;
                    for (size_t k = 0; k < rb / tp_dtype_block_bytes(type); k++) {
                        uint16_t d = tp_f32_to_f16(0.003f);
                        uint8_t *b = w + (size_t)r * rb + k * tp_dtype_block_bytes(type);
                        memcpy(type == TP_Q6_K ? b + 208 : b, &d, 2);
                        if (type == TP_Q4_K) memcpy(b + 2, &d, 2);
                    }
                } else {
                    tp_quantize_row(type, row, w + (size_t)r * rb, (size_t)n_in);
                }
            }
            free(row);
            for (int c = 1; c < copies; c++) memcpy(w + (size_t)c * wbytes, w, wbytes);
            double t1 = 0;
            for (size_t ni = 0; ni < sizeof nbs / sizeof nbs[0]; ni++) {
                int nb = nbs[ni];
                int calls = 3 * copies;
                double tbest = 1e9;
                for (int rep = 0; rep < 3; rep++) {
                    double t0 = tp_now();
                    for (int k = 0; k < copies; k++) {
                        tp_weight W = { .data = w + (size_t)k * wbytes, .type = type, .n_in = n_in, .n_out = n_out };
                        tp_matmul(ctx, y, x, nb, &W);
                    }
                    double dt = (tp_now() - t0) / copies;
                    if (dt < tbest) tbest = dt;
                }
                (void)calls;
                if (nb == 1) t1 = tbest;
                double gbs = (double)wbytes / tbest / 1e9;
                printf("%-5s %4dx%-6d %4d %9.3f %8.1f %6.0f%% %8.2f\n", tp_dtype_name(type), n_in, n_out, nb,
                       tbest * 1e3, gbs, 100.0 * gbs / bw, tbest / t1);
            }
            tp_free_aligned(w);
        }
    }
    tp_matmul_ctx_free(ctx);
    tp_pool_free(pool);
    free(x);
    free(y);
    return 0;
}
