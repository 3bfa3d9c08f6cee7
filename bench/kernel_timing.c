/* kernel_timing.c: tp_matmul alone against its roofline.
 *
 * Build and run by hand (not part of the test suite):
 *   make build/kernel_timing
 *   build/kernel_timing [threads=2] [simd level] [types, e.g. q4_0,f16]
 *
 * Prints the probes (bench/probe.h: read bandwidth, int8-dot and f32-FMA peaks
 * at the level, with the given threads), then for Q4_0, Q8_0, F16, BF16, Q4_K
 * and Q6_K weights of Llama-3.2-1B's FFN shapes (8192 x 2048 and 2048 x 8192)
 * the time of one tp_matmul with nb = 1 .. 64 inputs against its roofline
 *     max(weight bytes / bandwidth, nb x n_in x n_out / compute peak)
 * as a percentage. Each call uses the next of several copies of the weights
 * (together >= 1 GiB, more than the last-level cache), so the weights come
 * from DRAM as they do in a real decode. As the loader does, the copies are
 * on huge pages and Q4_0/Q8_0 ones are repacked. Best of 3 passes over the copies.
 */
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "kernels/matmul.h"
#include "kernels/threadpool.h"
#include "tensor/dtype.h"
#include "probe.h"

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
    const char *only = argc > 3 ? argv[3] : NULL;
    tp_pool *pool = tp_pool_create(nt);
    const char *lv = tp_simd_level();
    int level = !strcmp(lv, "avx512") ? 2 : !strcmp(lv, "avx2") ? 1 : 0;
    probe_rate bw = probe_bandwidth(pool, level);
    probe_rate i8 = probe_compute(pool, level, 0), f32 = probe_compute(pool, level, 1);
    printf("threads %d, simd %s: read %.1f GB/s (median %.1f), int8 dot %.0f G/s (median %.0f), f32 FMA %.0f G/s "
           "(median %.0f)\n", tp_pool_threads(pool), lv, bw.best / 1e9, bw.median / 1e9, i8.best / 1e9,
           i8.median / 1e9, f32.best / 1e9, f32.median / 1e9);

    const uint32_t types[] = { TP_Q4_0, TP_Q8_0, TP_F16, TP_BF16, TP_Q4_K, TP_Q6_K };
    const int shapes[2][2] = { { 2048, 8192 }, { 8192, 2048 } }; /* n_in, n_out */
    int nbs[7] = { 1, 2, 4, 8, 16, 32, 64 }, n_nbs = 7;
    if (getenv("NB")) { nbs[0] = atoi(getenv("NB")); n_nbs = 1; } /* one batch size only (profiling) */
    float *x = malloc(sizeof(float) * 8192 * 64);
    float *y = malloc(sizeof(float) * 8192 * 64);
    for (int i = 0; i < 8192 * 64; i++) x[i] = rnd();
    tp_matmul_ctx *ctx = tp_matmul_ctx_new(pool, 8192);
    printf("%-5s %-11s %4s %9s %9s %6s %8s\n", "type", "n_in x out", "nb", "ms/call", "roof ms", "%roof", "x nb=1");
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        uint32_t type = types[ti];
        char lname[16];
        snprintf(lname, sizeof lname, "%s", tp_dtype_name(type));
        for (char *p = lname; *p; p++) *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
        if (only && !strstr(only, lname)) continue;
        double peak = type == TP_F16 || type == TP_BF16 ? f32.best : i8.best;
        for (int si = 0; si < 2; si++) {
            int n_in = shapes[si][0], n_out = shapes[si][1];
            size_t rb = tp_dtype_row_bytes(type, (size_t)n_in), wbytes = rb * (size_t)n_out;
            int copies = (int)(((size_t)1 << 30) / wbytes) + 1;
            uint8_t *w = probe_alloc_huge(wbytes * (size_t)copies); /* as the loader places weights */
            float *row = malloc(sizeof(float) * (size_t)n_in);
            for (int r = 0; r < n_out; r++) {
                for (int i = 0; i < n_in; i++) row[i] = rnd() * 0.05f;
                if (type == TP_Q4_K || type == TP_Q6_K) {
                    /* no reference quantizer for the bytes we want: random blocks, sane scales */
                    for (size_t i = 0; i < rb; i++) w[(size_t)r * rb + i] = (uint8_t)((g_rng = g_rng * 1664525u + 1013904223u) >> 3);
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
            tp_weight *W = calloc((size_t)copies, sizeof *W);
            for (int c = 0; c < copies; c++) {
                W[c] = (tp_weight){ .data = w + (size_t)c * wbytes, .type = type, .n_in = n_in, .n_out = n_out };
                if (!getenv("NOREPACK")) tp_weight_repack(&W[c]); /* NOREPACK=1: the file's layout */
            }
            double t1 = 0;
            for (int ni = 0; ni < n_nbs; ni++) {
                int nb = nbs[ni];
                double tbest = 1e9;
                for (int rep = 0; rep < 3; rep++) {
                    double t0 = tp_now();
                    for (int k = 0; k < copies; k++) tp_matmul(ctx, y, x, nb, &W[k]);
                    double dt = (tp_now() - t0) / copies;
                    if (dt < tbest) tbest = dt;
                }
                if (nb == 1) t1 = tbest;
                double roof_mem = (double)wbytes / bw.best, roof_cpu = (double)nb * n_in * n_out / peak;
                double roof = roof_mem > roof_cpu ? roof_mem : roof_cpu;
                printf("%-5s %4dx%-6d %4d %9.3f %9.3f %5.0f%%%s %6.2f\n", tp_dtype_name(type), n_in, n_out, nb,
                       tbest * 1e3, roof * 1e3, 100.0 * roof / tbest, roof / tbest > 1.0 ? "!" : " ", tbest / t1);
                fflush(stdout);
            }
            free(W);
            probe_free_huge(w, wbytes * (size_t)copies);
        }
    }
    tp_matmul_ctx_free(ctx);
    tp_pool_free(pool);
    free(x);
    free(y);
    return 0;
}
