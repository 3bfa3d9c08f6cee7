/* ops.h: the small per-vector operations of a transformer layer. */
#ifndef TEMPO_OPS_H
#define TEMPO_OPS_H

#include <stddef.h>

/* out = x / rms(x) * w */
void tp_rmsnorm(float *out, const float *x, const float *w, int n, float eps);
/* in-place softmax over n values; returns nothing. Stable (max-subtracted), fp32. */
void tp_softmax(float *x, int n);
/* e^x computed in double and rounded once (ops.c): within 0.501 ulp, overflow
 * to +inf and underflow through the subnormals to 0 as float's, NaN for NaN.
 * The same bits on every CPU and SIMD level. */
float tp_expf(float x);
/* y[i] = tp_expf(x[i] - sub) for n values, 8 or 16 lanes at a time (y may be x). */
void tp_expf_sub(float *y, const float *x, float sub, int n);
/* a[i] = silu(a[i]) * b[i], silu(v) = v / (1 + tp_expf(-v)) */
void tp_swiglu(float *a, const float *b, int n);
/* dot product of two f32 vectors (SIMD when available). */
float tp_dot_f32(const float *a, const float *b, int n);
/* y += a * x */
void tp_axpy_f32(float *y, float a, const float *x, int n);
/* out[0..n) = the sum of p[j] * row j over the n_rows rows (row j at rows + j * stride), skipping
 * p[j] == 0: out zeroed, then tp_axpy_f32 of each row in order, bit for bit, with out held in
 * registers across the rows. */
void tp_wsum_rows_f32(float *out, const float *p, const float *rows, size_t stride, int n_rows, int n);

#endif
