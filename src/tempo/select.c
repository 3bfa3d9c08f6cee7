/* select.c: thresholds, selection and the mixture (design/tempo-semantics.md 2, 4, 5). */
#include "tempo/select.h"

#include <math.h>
#include <string.h>

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

int tp_argmax(const float *D, int n, const uint8_t *skip) {
    int best = -1;
    for (int i = 0; i < n; i++) {
        if (skip && skip[i]) continue;
        if (best < 0 || D[i] > D[best]) best = i; /* strict: ties keep the lower id */
    }
    return best;
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
    float mx = x[0];
    for (int i = 1; i < n; i++) if (x[i] > mx) mx = x[i];
    float sum = 0.0f;
    for (int i = 0; i < n; i++) { x[i] = expf(x[i] - mx); sum += x[i]; }
    float inv = 1.0f / sum;
    for (int i = 0; i < n; i++) x[i] *= inv;
}

void tp_mixture(float *logits, const float *p, int n, int n_vocab, float *out) {
    float total = 0.0f;
    for (int j = 0; j < n; j++) total += p[j];
    memset(out, 0, sizeof(float) * (size_t)n_vocab);
    for (int j = 0; j < n; j++) {
        float *row = logits + (size_t)j * n_vocab;
        tp_prob_softmax(row, n_vocab);
        float w = total > 0.0f ? p[j] / total : 1.0f / (float)n;
        for (int i = 0; i < n_vocab; i++) out[i] += w * row[i];
    }
}
