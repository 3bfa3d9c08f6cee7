/* sample.c: standard-mode sampling. */
#include "tempo/sample.h"

#include <math.h>
#include <stdlib.h>

#include "core/common.h"
#include "tempo/select.h"

tp_sampler *tp_sampler_new(const tp_sampler_params *p, int n_vocab) {
    tp_sampler *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->p = *p;
    s->n_vocab = n_vocab;
    s->idx = malloc(sizeof(int32_t) * (size_t)n_vocab);
    s->val = malloc(sizeof(float) * (size_t)n_vocab);
    s->mark = calloc((size_t)n_vocab, 1);
    if (!s->idx || !s->val || !s->mark) {
        tp_sampler_free(s);
        return NULL;
    }
    tp_rng_seed(&s->rng, p->seed);
    return s;
}

void tp_sampler_free(tp_sampler *s) {
    if (!s) return;
    free(s->idx);
    free(s->val);
    free(s->mark);
    free(s);
}

/* Descending by logit, ties by id ascending (a total order: reproducible). */
static int cmp_desc(const void *a, const void *b, void *ctx) {
    const float *x = ctx;
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    if (x[i] != x[j]) return x[i] > x[j] ? -1 : 1;
    return (i > j) - (i < j);
}

int tp_sampler_pick(tp_sampler *s, float *logits, const int32_t *hist, int n_hist, const uint8_t *ban) {
    const int V = s->n_vocab;
    if (s->p.repetition_penalty != 1.0 && n_hist > 0) {
        float pen = (float)s->p.repetition_penalty;
        for (int i = 0; i < n_hist; i++) {
            int32_t t = hist[i];
            if (t < 0 || t >= V || s->mark[t]) continue;
            s->mark[t] = 1;
            logits[t] = logits[t] > 0 ? logits[t] / pen : logits[t] * pen;
        }
        for (int i = 0; i < n_hist; i++) if (hist[i] >= 0 && hist[i] < V) s->mark[hist[i]] = 0;
    }
    if (ban)
        for (int i = 0; i < V; i++) if (ban[i]) logits[i] = -INFINITY;

    int best = tp_argmax(logits, V, ban);
    if (best < 0) best = tp_argmax(logits, V, NULL);
    if (s->p.temperature <= 0.0) return best;

    /* Candidates: every allowed id, sorted when top-k or top-p needs an order. */
    int n = 0;
    for (int i = 0; i < V; i++) if (!ban || !ban[i]) s->idx[n++] = i;
    if (n == 0) return best;
    float inv_t = (float)(1.0 / s->p.temperature);
    int sorted = (s->p.top_k > 0 && s->p.top_k < n) || s->p.top_p < 1.0;
    if (sorted) qsort_r(s->idx, (size_t)n, sizeof(int32_t), cmp_desc, logits);
    if (s->p.top_k > 0 && s->p.top_k < n) n = s->p.top_k;

    /* Softmax over the candidates at temperature T. */
    float mx = -INFINITY;
    for (int c = 0; c < n; c++) if (logits[s->idx[c]] > mx) mx = logits[s->idx[c]];
    double sum = 0.0;
    for (int c = 0; c < n; c++) {
        s->val[c] = expf((logits[s->idx[c]] - mx) * inv_t);
        sum += s->val[c];
    }
    if (s->p.top_p < 1.0) {
        /* Smallest prefix whose mass reaches top_p (at least one candidate). */
        double acc = 0.0;
        int keep = n;
        for (int c = 0; c < n; c++) {
            acc += s->val[c] / sum;
            if (acc >= s->p.top_p) { keep = c + 1; break; }
        }
        n = keep;
        sum = 0.0;
        for (int c = 0; c < n; c++) sum += s->val[c];
    }
    double u = tp_rng_uniform(&s->rng) * sum, acc = 0.0;
    for (int c = 0; c < n; c++) {
        acc += s->val[c];
        if (u < acc) return s->idx[c];
    }
    return s->idx[n - 1];
}
