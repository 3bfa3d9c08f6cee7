/* ops.h: the small per-vector operations of a transformer layer. */
#ifndef TEMPO_OPS_H
#define TEMPO_OPS_H

#include <stddef.h>

/* out = x / rms(x) * w */
void tp_rmsnorm(float *out, const float *x, const float *w, int n, float eps);
/* in-place softmax over n values; returns nothing. Stable (max-subtracted), fp32. */
void tp_softmax(float *x, int n);
/* a[i] = silu(a[i]) * b[i] */
void tp_swiglu(float *a, const float *b, int n);
/* dot product of two f32 vectors (SIMD when available). */
float tp_dot_f32(const float *a, const float *b, int n);
/* y += a * x */
void tp_axpy_f32(float *y, float a, const float *x, int n);

#endif
