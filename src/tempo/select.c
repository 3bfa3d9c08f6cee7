/* select.c: thresholds, selection and the mixture (design/tempo-semantics.md 2, 4, 5). */
#include "tempo/select.h"

#include <math.h>
#include <string.h>

#include "kernels/ops.h"

double tp_bezier(double t, double p1, double p2) {
    double u = 1.0 - t;
    return 3.0 * u * u * t * p1 + 3.0 * u * t * t * p2 + t * t * t;
}

double tp_relu_schedule(double t, double a) {
    if (a >= 1.0) return t >= 1.0 ? 1.0 : 0.0; /* rejected by config; keep it finite */
    double v = t - a;
    return v > 0 ? v / (1.0 - a) : 0.0;
}

double tp_threshold(const tp_threshold_params *p, int k) {
    double tau = p->selection_threshold;
    if (p->dynamic) {
        int span = p->max_tokens - 1 > 1 ? p->max_tokens - 1 : 1;
        double t = (double)k / span;
        if (t > 1.0) t = 1.0;
        double b = p->use_relu ? tp_relu_schedule(t, p->relu_activation_point)
                               : tp_bezier(t, p->bezier_p1, p->bezier_p2);
        tau = p->selection_threshold + (p->final_threshold - p->selection_threshold) * b;
    }
    if (tau < 0.0) tau = 0.0;
    if (tau > 1.0) tau = 1.0;
    return tau;
}

/* max of x[i0..i1), i1 > i0: the value `for (i) if (x[i] > mx) mx = x[i]` from mx = x[i0] gives
 * on finite input, in 8 chains (max is exact, so the grouping changes nothing; one chain is a
 * latency-bound 128K-step dependency over the vocabulary). */
static float max_of(const float *x, int i0, int i1) {
    float m[8];
    for (int j = 0; j < 8; j++) m[j] = x[i0];
    int i = i0 + 1;
    for (; i + 8 <= i1; i += 8)
        for (int j = 0; j < 8; j++) m[j] = x[i + j] > m[j] ? x[i + j] : m[j];
    for (; i < i1; i++) m[0] = x[i] > m[0] ? x[i] : m[0];
    float mx = m[0];
    for (int j = 1; j < 8; j++) mx = m[j] > mx ? m[j] : mx;
    return mx;
}

/* The first index, not skipped, holding the largest value: what the loop
 *     if (best < 0 || D[i] > D[best]) best = i;
 * returns (ties keep the lower id; a NaN is never larger, but a NaN in the first
 * place stays), in two passes that have no branch on the data: the maximum, in 8
 * independent chains (max is exact, so their order does not matter), then the
 * first index holding it. It runs over the vocabulary once or twice a token. */
int tp_argmax(const float *D, int n, const uint8_t *skip) {
    int first = 0;
    if (skip)
        while (first < n && skip[first]) first++;
    if (first == n) return -1;
    if (D[first] != D[first]) return first; /* NaN first: the loop keeps it */
    float mx;
    int i = first;
    if (!skip) {
        mx = max_of(D, first, n);
    } else {
        float m[8];
        for (int j = 0; j < 8; j++) m[j] = -INFINITY;
        for (; i + 8 <= n; i += 8)
            for (int j = 0; j < 8; j++) {
                float v = skip[i + j] ? -INFINITY : D[i + j];
                m[j] = v > m[j] ? v : m[j];
            }
        for (; i < n; i++) {
            float v = skip[i] ? -INFINITY : D[i];
            m[0] = v > m[0] ? v : m[0];
        }
        mx = m[0];
        for (int j = 1; j < 8; j++) mx = m[j] > mx ? m[j] : mx;
    }
    for (i = first; i < n; i++)
        if (D[i] == mx && (!skip || !skip[i])) return i;
    return first; /* every candidate -inf or NaN after the first: the loop keeps the first */
}

int tp_select(const float *D, int n_vocab, const uint8_t *is_eog, double tau, int W,
              int k, int min_steps, int32_t *ids, float *probs) {
    if (W < 1) W = 1;
    int top = tp_argmax(D, n_vocab, NULL);
    if (top >= 0 && is_eog && is_eog[top] && k >= min_steps) return 0;

    /* Keep the first W candidates in selection order with an insertion into a
     * sorted list: ids arrive ascending, so an equal probability goes after the
     * ones already there (ties by id ascending). */
    int n = 0;
    for (int i = 0; i < n_vocab; i++) {
        float d = D[i];
        if ((double)d < tau || (is_eog && is_eog[i])) continue;
        if (n == W && !(d > probs[W - 1])) continue;
        int at = n < W ? n : W - 1;
        while (at > 0 && d > probs[at - 1]) {
            probs[at] = probs[at - 1];
            ids[at] = ids[at - 1];
            at--;
        }
        probs[at] = d;
        ids[at] = i;
        if (n < W) n++;
    }
    if (n == 0) {
        int alt = tp_argmax(D, n_vocab, is_eog);
        if (alt < 0) alt = top; /* every id is an end-of-generation id */
        ids[0] = alt;
        probs[0] = D[alt];
        n = 1;
    }
    return n;
}

void tp_prob_softmax(float *x, int n) {
    float mx = max_of(x, 0, n);
    float sum = 0.0f;
    tp_expf_sub(x, x, mx, n);
    for (int i = 0; i < n; i++) sum += x[i];
    float inv = 1.0f / sum;
    for (int i = 0; i < n; i++) x[i] *= inv;
}

void tp_mixture(float *logits, const float *p, int n, int n_vocab, float *out) {
    tp_mixture_pool(logits, p, n, n_vocab, out, NULL);
}

/* Member j's weight in the mixture: p_j / sum p (uniform when every p is 0). */
static float mixture_weight(const float *p, float total, int j, int n) {
    return total > 0.0f ? p[j] / total : 1.0f / (float)n;
}

/* The pool version's shared state: each stage is one tp_pool_run. The arithmetic of every
 * element is tp_prob_softmax's and the serial mixture's, in the same order. */
enum { MIX_MAX, MIX_EXP, MIX_SUM, MIX_MIX };
#define MIX_MAX_THREADS 64
#define MIX_MAX_ROWS 64

typedef struct {
    float *logits, *out;
    const float *p;
    int n, n_vocab, stage;
    float total;
    float mx[MIX_MAX_ROWS], inv[MIX_MAX_ROWS];
    float part[MIX_MAX_THREADS][MIX_MAX_ROWS]; /* per thread, per row: its slice's max */
} mix_job;

static void mix_task(void *ctx, int ith, int nth) {
    mix_job *J = ctx;
    const int V = J->n_vocab;
    /* this thread's slice of the vocabulary (possibly empty) */
    int per = (V + nth - 1) / nth, i0 = per * ith, i1 = i0 + per < V ? i0 + per : V;
    switch (J->stage) {
    case MIX_MAX:
        for (int j = 0; j < J->n; j++) {
            const float *row = J->logits + (size_t)j * V;
            J->part[ith][j] = i0 < i1 ? max_of(row, i0, i1) : row[0];
        }
        break;
    case MIX_EXP:
        for (int j = 0; j < J->n; j++) {
            float *row = J->logits + (size_t)j * V;
            if (i0 < i1) tp_expf_sub(row + i0, row + i0, J->mx[j], i1 - i0);
        }
        break;
    case MIX_SUM: /* whole rows: a denominator is added in index order, as tp_prob_softmax adds it */
        for (int j = ith; j < J->n; j += nth) {
            const float *row = J->logits + (size_t)j * V;
            float sum = 0.0f;
            for (int i = 0; i < V; i++) sum += row[i];
            J->inv[j] = 1.0f / sum;
        }
        break;
    case MIX_MIX:
        if (i0 >= i1) break;
        memset(J->out + i0, 0, sizeof(float) * (size_t)(i1 - i0));
        for (int j = 0; j < J->n; j++) {
            float *row = J->logits + (size_t)j * V;
            const float w = mixture_weight(J->p, J->total, j, J->n);
            for (int i = i0; i < i1; i++) row[i] *= J->inv[j];
            for (int i = i0; i < i1; i++) J->out[i] += w * row[i];
        }
        break;
    }
}

void tp_mixture_pool(float *logits, const float *p, int n, int n_vocab, float *out, tp_pool *pool) {
    float total = 0.0f;
    for (int j = 0; j < n; j++) total += p[j];
    int nth = pool ? tp_pool_threads(pool) : 1;
    if (nth < 2 || nth > MIX_MAX_THREADS || n > MIX_MAX_ROWS || n_vocab < 2 * nth) {
        memset(out, 0, sizeof(float) * (size_t)n_vocab);
        for (int j = 0; j < n; j++) {
            float *row = logits + (size_t)j * n_vocab;
            tp_prob_softmax(row, n_vocab);
            const float w = mixture_weight(p, total, j, n);
            for (int i = 0; i < n_vocab; i++) out[i] += w * row[i];
        }
        return;
    }
    mix_job J = { .logits = logits, .out = out, .p = p, .n = n, .n_vocab = n_vocab, .total = total };
    J.stage = MIX_MAX;
    tp_pool_run(pool, mix_task, &J);
    for (int j = 0; j < n; j++) { /* max is exact whatever the split */
        J.mx[j] = J.part[0][j];
        for (int t = 1; t < nth; t++) if (J.part[t][j] > J.mx[j]) J.mx[j] = J.part[t][j];
    }
    J.stage = MIX_EXP;
    tp_pool_run(pool, mix_task, &J);
    J.stage = MIX_SUM;
    tp_pool_run(pool, mix_task, &J);
    J.stage = MIX_MIX;
    tp_pool_run(pool, mix_task, &J);
}
