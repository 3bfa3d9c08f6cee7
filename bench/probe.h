/* probe.h: the machine's ceilings for the roofline of `make bench` and
 * bench/kernel_timing.c (header-only; x86-64 probes behind target attributes).
 *
 * Bandwidth: a 1 GiB buffer on transparent huge pages where the system gives
 * them (as the loaded weights are, tp_weights_to_hugepages; 4 KiB pages cost
 * a third of the bandwidth on some machines) read by the pool's threads with
 * the SIMD level's vector loads and software prefetch, 9 passes; the median
 * and the best pass are reported, and the best is the ceiling of the roofline
 * (a kernel cannot stream faster than the fastest plain read).
 *
 * Compute, per SIMD level, with all the pool's threads at once: the kernels'
 * inner operation in long independent chains, in registers:
 *   int8 dot   avx512: VPDPBUSD (64 u8 x s8 multiply-adds into int32);
 *              avx2: 8 x VPMADDUBSW + VPADDW (int16 pair sums), one VPMADDWD
 *              + VPADDD to widen: the 4-bit kernels' sequence, 256 multiply-
 *              adds; generic: a C loop of int8 products.
 *   f32 FMA    avx512: 16-lane VFMADD; avx2: 8-lane; generic: fmaf.
 * Figures are multiply-adds per second (one FMA = one multiply-add).
 * A timed kernel above 100% of such a ceiling means the probe is wrong (it
 * did not find the machine's peak), and the bench says so.
 */
#ifndef TEMPO_BENCH_PROBE_H
#define TEMPO_BENCH_PROBE_H

#include <math.h>
#include <stdint.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "core/common.h"
#include "kernels/threadpool.h"

typedef struct {
    double median, best; /* per second: bytes, or multiply-adds */
} probe_rate;

static int probe_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static double probe_median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, probe_cmp);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Anonymous memory on 2 MiB boundaries, advised onto huge pages before it is
 * touched (as tp_weights_to_hugepages places the weights). */
static void *probe_alloc_huge(size_t bytes) {
    const size_t A = (size_t)2 << 20;
    size_t len = (bytes + A - 1) / A * A;
    uint8_t *r = mmap(NULL, len + A, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (r == MAP_FAILED) return NULL;
    uint8_t *a = (uint8_t *)(((uintptr_t)r + A - 1) & ~(uintptr_t)(A - 1));
    if (a > r) munmap(r, (size_t)(a - r));
    if (r + len + A > a + len) munmap(a + len, (size_t)(r + len + A - (a + len)));
    madvise(a, len, MADV_HUGEPAGE);
    return a;
}
static void probe_free_huge(void *p, size_t bytes) {
    const size_t A = (size_t)2 << 20;
    if (p) munmap(p, (bytes + A - 1) / A * A);
}

/* ---- bandwidth ---- */

typedef struct {
    const uint8_t *buf;
    size_t bytes;
    int level; /* 0 generic, 1 avx2, 2 avx512 */
    uint64_t sink[64];
} probe_bw_job;

#if defined(__x86_64__)
__attribute__((target("avx2"))) static uint64_t probe_read_avx2(const uint8_t *p, size_t n) {
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = 0; i + 128 <= n; i += 128) {
        _mm_prefetch((const char *)p + i + 2048, _MM_HINT_T0);
        _mm_prefetch((const char *)p + i + 2048 + 64, _MM_HINT_T0);
        s0 = _mm256_add_epi64(s0, _mm256_load_si256((const __m256i *)(const void *)(p + i)));
        s1 = _mm256_add_epi64(s1, _mm256_load_si256((const __m256i *)(const void *)(p + i + 32)));
        s2 = _mm256_add_epi64(s2, _mm256_load_si256((const __m256i *)(const void *)(p + i + 64)));
        s3 = _mm256_add_epi64(s3, _mm256_load_si256((const __m256i *)(const void *)(p + i + 96)));
    }
    __m256i s = _mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3));
    return (uint64_t)_mm256_extract_epi64(s, 0) + (uint64_t)_mm256_extract_epi64(s, 3);
}

__attribute__((target("avx512f"))) static uint64_t probe_read_avx512(const uint8_t *p, size_t n) {
    __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = 0; i + 256 <= n; i += 256) {
        for (int k = 0; k < 4; k++) _mm_prefetch((const char *)p + i + 2048 + 64 * k, _MM_HINT_T0);
        s0 = _mm512_add_epi64(s0, _mm512_load_si512(p + i));
        s1 = _mm512_add_epi64(s1, _mm512_load_si512(p + i + 64));
        s2 = _mm512_add_epi64(s2, _mm512_load_si512(p + i + 128));
        s3 = _mm512_add_epi64(s3, _mm512_load_si512(p + i + 192));
    }
    return (uint64_t)_mm512_reduce_add_epi64(_mm512_add_epi64(_mm512_add_epi64(s0, s1), _mm512_add_epi64(s2, s3)));
}
#endif

static uint64_t probe_read_generic(const uint8_t *p, size_t n) {
    const uint64_t *q = (const uint64_t *)(const void *)p;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = 0; i + 4 <= n / 8; i += 4) {
        s0 += q[i];
        s1 += q[i + 1];
        s2 += q[i + 2];
        s3 += q[i + 3];
    }
    return s0 + s1 + s2 + s3;
}

static void probe_bw_task(void *ctx, int ith, int nth) {
    probe_bw_job *j = ctx;
    size_t per = j->bytes / (size_t)nth / 4096 * 4096;
    const uint8_t *p = j->buf + per * (size_t)ith;
    uint64_t s;
#if defined(__x86_64__)
    if (j->level == 2) s = probe_read_avx512(p, per);
    else if (j->level == 1) s = probe_read_avx2(p, per);
    else
#endif
        s = probe_read_generic(p, per);
    j->sink[ith % 64] += s;
}

/* bytes per second; level 0 generic, 1 avx2, 2 avx512 */
static probe_rate probe_bandwidth(tp_pool *pool, int level) {
    probe_rate r = { 0, 0 };
    size_t bytes = (size_t)1 << 30;
    uint8_t *buf = probe_alloc_huge(bytes);
    if (!buf) return r;
    for (size_t i = 0; i < bytes; i += 8) {
        uint64_t v = i;
        memcpy(buf + i, &v, 8);
    }
    probe_bw_job j = { .buf = buf, .bytes = bytes, .level = level };
    double t[9];
    for (int k = 0; k < 9; k++) {
        double t0 = tp_now();
        tp_pool_run(pool, probe_bw_task, &j);
        t[k] = tp_now() - t0;
    }
    double best = 1e30;
    for (int k = 0; k < 9; k++) best = t[k] < best ? t[k] : best;
    size_t per = bytes / (size_t)tp_pool_threads(pool) / 4096 * 4096;
    double read = (double)(per * (size_t)tp_pool_threads(pool));
    r.best = read / best;
    r.median = read / probe_median(t, 9);
    probe_free_huge(buf, bytes);
    return r;
}

/* ---- compute ---- */

typedef struct {
    int level, kind; /* kind 0: int8 dot, 1: f32 FMA */
    long long iters;
    double macs[64];
    uint64_t sink[64];
} probe_cpu_job;

#if defined(__x86_64__)
__attribute__((target("avx512f,avx512bw,avx512vnni"))) static double probe_vnni(long long iters, uint64_t *sink) {
    __m512i a[12];
    for (int i = 0; i < 12; i++) a[i] = _mm512_set1_epi32(i);
    __m512i w = _mm512_set1_epi8(3), x = _mm512_set1_epi8(5);
    for (long long k = 0; k < iters; k++) {
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++) a[i] = _mm512_dpbusd_epi32(a[i], w, x);
        __asm__ volatile("" : "+v"(w), "+v"(x));
    }
    for (int i = 1; i < 12; i++) a[0] = _mm512_add_epi32(a[0], a[i]);
    *sink += (uint64_t)_mm512_reduce_add_epi32(a[0]);
    return (double)iters * 12 * 64;
}

__attribute__((target("avx2"))) static double probe_maddubs(long long iters, uint64_t *sink) {
    /* 4 independent chains of the 4-bit kernels' 256 multiply-adds: 8 x
     * (VPMADDUBSW, VPADDW), VPMADDWD, VPADDD (written out: a compiler would
     * merge the identical multiplies) */
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    const __m256i w = _mm256_set1_epi8(3), x = _mm256_set1_epi8(5), ones = _mm256_set1_epi16(1);
    for (long long k = 0; k < iters; k++) {
        __asm__ volatile(
            "vpmaddubsw %[x], %[w], %%ymm8\n\t"
            "vpmaddubsw %[x], %[w], %%ymm9\n\t"
            "vpmaddubsw %[x], %[w], %%ymm10\n\t"
            "vpmaddubsw %[x], %[w], %%ymm11\n\t"
            "vpmaddubsw %[x], %[w], %%ymm12\n\t"
            "vpaddw %%ymm12, %%ymm8, %%ymm8\n\t"
            "vpmaddubsw %[x], %[w], %%ymm13\n\t"
            "vpaddw %%ymm13, %%ymm9, %%ymm9\n\t"
            "vpmaddubsw %[x], %[w], %%ymm14\n\t"
            "vpaddw %%ymm14, %%ymm10, %%ymm10\n\t"
            "vpmaddubsw %[x], %[w], %%ymm15\n\t"
            "vpaddw %%ymm15, %%ymm11, %%ymm11\n\t"
            "vpmaddubsw %[x], %[w], %%ymm12\n\t"
            "vpaddw %%ymm12, %%ymm8, %%ymm8\n\t"
            "vpmaddubsw %[x], %[w], %%ymm13\n\t"
            "vpaddw %%ymm13, %%ymm9, %%ymm9\n\t"
            "vpmaddubsw %[x], %[w], %%ymm14\n\t"
            "vpaddw %%ymm14, %%ymm10, %%ymm10\n\t"
            "vpmaddubsw %[x], %[w], %%ymm15\n\t"
            "vpaddw %%ymm15, %%ymm11, %%ymm11\n\t"
            "vpmaddubsw %[x], %[w], %%ymm12\n\t"
            "vpaddw %%ymm12, %%ymm8, %%ymm8\n\t"
            "vpmaddubsw %[x], %[w], %%ymm13\n\t"
            "vpaddw %%ymm13, %%ymm9, %%ymm9\n\t"
            "vpmaddubsw %[x], %[w], %%ymm14\n\t"
            "vpaddw %%ymm14, %%ymm10, %%ymm10\n\t"
            "vpmaddubsw %[x], %[w], %%ymm15\n\t"
            "vpaddw %%ymm15, %%ymm11, %%ymm11\n\t"
            "vpmaddubsw %[x], %[w], %%ymm12\n\t"
            "vpaddw %%ymm12, %%ymm8, %%ymm8\n\t"
            "vpmaddubsw %[x], %[w], %%ymm13\n\t"
            "vpaddw %%ymm13, %%ymm9, %%ymm9\n\t"
            "vpmaddubsw %[x], %[w], %%ymm14\n\t"
            "vpaddw %%ymm14, %%ymm10, %%ymm10\n\t"
            "vpmaddubsw %[x], %[w], %%ymm15\n\t"
            "vpaddw %%ymm15, %%ymm11, %%ymm11\n\t"
            "vpmaddubsw %[x], %[w], %%ymm12\n\t"
            "vpaddw %%ymm12, %%ymm8, %%ymm8\n\t"
            "vpmaddubsw %[x], %[w], %%ymm13\n\t"
            "vpaddw %%ymm13, %%ymm9, %%ymm9\n\t"
            "vpmaddubsw %[x], %[w], %%ymm14\n\t"
            "vpaddw %%ymm14, %%ymm10, %%ymm10\n\t"
            "vpmaddubsw %[x], %[w], %%ymm15\n\t"
            "vpaddw %%ymm15, %%ymm11, %%ymm11\n\t"
            "vpmaddubsw %[x], %[w], %%ymm12\n\t"
            "vpaddw %%ymm12, %%ymm8, %%ymm8\n\t"
            "vpmaddubsw %[x], %[w], %%ymm13\n\t"
            "vpaddw %%ymm13, %%ymm9, %%ymm9\n\t"
            "vpmaddubsw %[x], %[w], %%ymm14\n\t"
            "vpaddw %%ymm14, %%ymm10, %%ymm10\n\t"
            "vpmaddubsw %[x], %[w], %%ymm15\n\t"
            "vpaddw %%ymm15, %%ymm11, %%ymm11\n\t"
            "vpmaddubsw %[x], %[w], %%ymm12\n\t"
            "vpaddw %%ymm12, %%ymm8, %%ymm8\n\t"
            "vpmaddubsw %[x], %[w], %%ymm13\n\t"
            "vpaddw %%ymm13, %%ymm9, %%ymm9\n\t"
            "vpmaddubsw %[x], %[w], %%ymm14\n\t"
            "vpaddw %%ymm14, %%ymm10, %%ymm10\n\t"
            "vpmaddubsw %[x], %[w], %%ymm15\n\t"
            "vpaddw %%ymm15, %%ymm11, %%ymm11\n\t"
            "vpmaddwd %[o], %%ymm8, %%ymm12\n\t"
            "vpaddd %%ymm12, %[a0], %[a0]\n\t"
            "vpmaddwd %[o], %%ymm9, %%ymm13\n\t"
            "vpaddd %%ymm13, %[a1], %[a1]\n\t"
            "vpmaddwd %[o], %%ymm10, %%ymm14\n\t"
            "vpaddd %%ymm14, %[a2], %[a2]\n\t"
            "vpmaddwd %[o], %%ymm11, %%ymm15\n\t"
            "vpaddd %%ymm15, %[a3], %[a3]\n\t"
            : [a0] "+x"(a0), [a1] "+x"(a1), [a2] "+x"(a2), [a3] "+x"(a3)
            : [w] "x"(w), [x] "x"(x), [o] "x"(ones)
            : "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
    }
    a0 = _mm256_add_epi32(_mm256_add_epi32(a0, a1), _mm256_add_epi32(a2, a3));
    *sink += (uint64_t)_mm256_extract_epi32(a0, 0);
    return (double)iters * 4 * 256;
}

__attribute__((target("avx512f"))) static double probe_fma512(long long iters, uint64_t *sink) {
    __m512 a[12];
    for (int i = 0; i < 12; i++) a[i] = _mm512_set1_ps((float)i);
    __m512 w = _mm512_set1_ps(1.0001f), x = _mm512_set1_ps(0.9999f);
    for (long long k = 0; k < iters; k++) {
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++) a[i] = _mm512_fmadd_ps(w, x, a[i]);
        __asm__ volatile("" : "+v"(w), "+v"(x));
    }
    for (int i = 1; i < 12; i++) a[0] = _mm512_add_ps(a[0], a[i]);
    *sink += (uint64_t)_mm512_reduce_add_ps(a[0]);
    return (double)iters * 12 * 16;
}

__attribute__((target("avx2,fma"))) static double probe_fma256(long long iters, uint64_t *sink) {
    __m256 a[12];
    for (int i = 0; i < 12; i++) a[i] = _mm256_set1_ps((float)i);
    __m256 w = _mm256_set1_ps(1.0001f), x = _mm256_set1_ps(0.9999f);
    for (long long k = 0; k < iters; k++) {
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++) a[i] = _mm256_fmadd_ps(w, x, a[i]);
        __asm__ volatile("" : "+x"(w), "+x"(x));
    }
    for (int i = 1; i < 12; i++) a[0] = _mm256_add_ps(a[0], a[i]);
    float f[8];
    _mm256_storeu_ps(f, a[0]);
    *sink += (uint64_t)f[0];
    return (double)iters * 12 * 8;
}
#endif

static double probe_generic_int8(long long iters, uint64_t *sink) {
    int8_t w[64], x[64];
    for (int i = 0; i < 64; i++) { w[i] = (int8_t)(i - 32); x[i] = (int8_t)(3 * i - 90); }
    int32_t s = 0;
    for (long long k = 0; k < iters; k++) {
        for (int i = 0; i < 64; i++) s += w[i] * x[i];
        __asm__ volatile("" : "+r"(s) : : "memory");
    }
    *sink += (uint64_t)s;
    return (double)iters * 64;
}

static double probe_generic_fma(long long iters, uint64_t *sink) {
    float a[16];
    for (int i = 0; i < 16; i++) a[i] = (float)i;
    float w = 1.0001f, x = 0.9999f;
    for (long long k = 0; k < iters; k++) {
        for (int i = 0; i < 16; i++) a[i] = fmaf(w, x, a[i]);
        __asm__ volatile("" : "+m"(a));
    }
    *sink += (uint64_t)a[0];
    return (double)iters * 16;
}

static void probe_cpu_task(void *ctx, int ith, int nth) {
    (void)nth;
    probe_cpu_job *j = ctx;
    uint64_t *sink = &j->sink[ith % 64];
    double m = 0;
#if defined(__x86_64__)
    if (j->kind == 0 && j->level == 2) m = probe_vnni(j->iters, sink);
    else if (j->kind == 0 && j->level == 1) m = probe_maddubs(j->iters / 4, sink);
    else if (j->kind == 1 && j->level == 2) m = probe_fma512(j->iters, sink);
    else if (j->kind == 1 && j->level == 1) m = probe_fma256(j->iters, sink);
    else
#endif
        m = j->kind == 0 ? probe_generic_int8(j->iters / 8, sink) : probe_generic_fma(j->iters / 4, sink);
    j->macs[ith % 64] = m;
}

/* multiply-adds per second of all the pool's threads together; kind 0 int8
 * dot, 1 f32 FMA; level 0 generic, 1 avx2, 2 avx512. Each pass runs every
 * thread for ~50 ms; its rate is all the threads' work over the pass's wall
 * time (threads that do not run at once do not add up). */
static probe_rate probe_compute(tp_pool *pool, int level, int kind) {
    probe_cpu_job j = { .level = level, .kind = kind, .iters = 1 };
    int nt = tp_pool_threads(pool);
    /* calibrate to ~50 ms per pass */
    for (;;) {
        double t0 = tp_now();
        tp_pool_run(pool, probe_cpu_task, &j);
        double dt = tp_now() - t0;
        if (dt > 0.05 || j.iters > (1LL << 40)) break;
        j.iters *= dt < 0.005 ? 8 : 2;
    }
    double r[7];
    for (int k = 0; k < 7; k++) {
        double t0 = tp_now();
        tp_pool_run(pool, probe_cpu_task, &j);
        double dt = tp_now() - t0, s = 0;
        for (int i = 0; i < nt && i < 64; i++) s += j.macs[i];
        r[k] = s / dt;
    }
    probe_rate out;
    out.best = 0;
    for (int k = 0; k < 7; k++) out.best = r[k] > out.best ? r[k] : out.best;
    out.median = probe_median(r, 7);
    return out;
}

#endif
