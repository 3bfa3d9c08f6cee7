/* matmul_x86.h: building blocks shared by matmul_avx2.c and matmul_avx512.c
 * (private; include only from those files, x86-64 only).
 *
 * The functions carry target("avx2,fma,f16c") so that this file compiles
 * without -mavx2; GCC inlines them into AVX-512 functions (a superset).
 */
#ifndef TEMPO_MATMUL_X86_H
#define TEMPO_MATMUL_X86_H

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels/matmul_internal.h"
#include "tensor/dtype.h"

#define X86_AVX2 __attribute__((target("avx2,fma,f16c"), always_inline)) static inline

/* Software prefetch of the weight stream, tp_mm_pf_dist bytes ahead of
 * [p, p + n): the hardware prefetchers alone leave bandwidth unused (they
 * stop at 4 KiB boundaries, and the K-quant kernels read a block's scales
 * before its values). A fixed distance, not "the next tile": a tile of long
 * rows is larger than L1. */
X86_AVX2 void x86_prefetch(const void *p, size_t n) {
    const char *q = (const char *)p + tp_mm_pf_dist;
    for (size_t o = 0; o < n; o += 64) _mm_prefetch(q + o, _MM_HINT_T0);
}

/* The float kernels' variant: their f32 inputs (8-32 KiB each) live in L1,
 * and weights fetched far ahead into L1 evict them (F16 at 2-4 inputs ran at
 * half speed). Near lines into L1, far ones into L2 only. */
X86_AVX2 void x86_prefetch_f(const void *p, size_t n) {
    const char *near = (const char *)p + tp_mm_pf_dist / 4, *far = (const char *)p + 2 * tp_mm_pf_dist;
    for (size_t o = 0; o < n; o += 64) {
        _mm_prefetch(near + o, _MM_HINT_T0);
        _mm_prefetch(far + o, _MM_HINT_T1);
    }
}

/* tp_mm_offset, visible to the compiler (kernels specialise on it) */
X86_AVX2 int x86_offset(const uint32_t type) {
    return type == TP_Q8_0 ? 128 : type == TP_Q4_0 ? 8 : type == TP_Q5_0 ? 16 : type == TP_Q6_K ? 128 : 0;
}

X86_AVX2 float x86_f16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* The generic tree of 8 lanes: ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)). */
X86_AVX2 float x86_hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#endif
