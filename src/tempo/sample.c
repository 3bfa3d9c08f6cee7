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

/* The allowed ids whose logit is at least L into s->idx, in id order or (sort) in descending
 * order of logit, ties by id; returns their number. */
static int sorted_above(tp_sampler *s, float *logits, const uint8_t *ban, float L, bool sort) {
    int m = 0;
    for (int i = 0; i < s->n_vocab; i++)
        if ((!ban || !ban[i]) && logits[i] >= L) s->idx[m++] = i;
    if (sort && m > 1) qsort_r(s->idx, (size_t)m, sizeof(int32_t), cmp_desc, logits);
    return m;
}

/* The k best allowed ids into s->idx in that order, by insertion into a sorted list (for a
 * small k): ids arrive ascending, so an equal logit goes after the ones already there. */
static int best_k(tp_sampler *s, const float *logits, const uint8_t *ban, int k) {
    int m = 0;
    for (int i = 0; i < s->n_vocab; i++) {
        if (ban && ban[i]) continue;
        const float x = logits[i];
        if (m == k && !(x > logits[s->idx[k - 1]])) continue;
        int at = m < k ? m : k - 1;
        while (at > 0 && x > logits[s->idx[at - 1]]) {
            s->idx[at] = s->idx[at - 1];
            at--;
        }
        s->idx[at] = i;
        if (m < k) m++;
    }
    return m;
}

/* The weights of the first n candidates at temperature 1/inv_t into s->val; their sum, in order. */
static double weights(tp_sampler *s, const float *logits, int n, float mx, float inv_t) {
    double sum = 0.0;
    for (int c = 0; c < n; c++) {
        s->val[c] = expf((logits[s->idx[c]] - mx) * inv_t);
        sum += s->val[c];
    }
    return sum;
}

/* Top-p: the length of the smallest prefix of val whose mass over denom reaches top_p, or -1
 * when all n do not reach it. */
static int reach(const float *val, int n, double denom, double top_p) {
    double acc = 0.0;
    for (int c = 0; c < n; c++) {
        acc += val[c] / denom;
        if (acc >= top_p) return c + 1;
    }
    return -1;
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

    float inv_t = (float)(1.0 / s->p.temperature);
    int n = 0;
    for (int i = 0; i < V; i++) if (!ban || !ban[i]) n++;
    if (n == 0) return best;
    const bool use_k = s->p.top_k > 0 && s->p.top_k < n, use_p = s->p.top_p < 1.0;
    const float mx = logits[best]; /* the largest allowed logit */
    double sum;
    if (!use_k && !use_p) {
        n = sorted_above(s, logits, ban, -INFINITY, false); /* every allowed id, in id order */
        sum = weights(s, logits, n, mx, inv_t);
    } else {
        /* The candidates in descending order of logit (ties by id) are needed only as far as
         * top-k or the top-p mass reaches. The ids whose logit is at least L are a prefix of
         * that order whatever L is (a larger logit never has a smaller weight), so sorting the
         * ids above a falling L until the prefix is long enough gives the same prefix as
         * sorting all of them, without sorting the vocabulary every token. Top-p without
         * top-k divides by the mass of every allowed id, added in id order (a full sort added
         * it in logit order: the sums differ in the last bits of a double). */
        const int k = use_k ? s->p.top_k : 0;
        double total = 0.0;
        if (!use_k)
            for (int i = 0; i < V; i++)
                if (!ban || !ban[i]) total += expf((logits[i] - mx) * inv_t);
        static const float span[] = { 4.0f, 8.0f, 16.0f, 32.0f, 64.0f };
        for (int round = 0;; round++) {
            const bool last = round == (int)(sizeof span / sizeof span[0]);
            if (k > 0 && k <= 256) {
                n = best_k(s, logits, ban, k);
            } else {
                n = sorted_above(s, logits, ban, last ? -INFINITY : mx - span[round] / inv_t, true);
                if (k > 0 && n < k && !last) continue; /* not k of them yet */
                if (k > 0) n = k;
            }
            sum = weights(s, logits, n, mx, inv_t); /* top-k: the softmax over the k best */
            if (!use_p) break;
            int keep = reach(s->val, n, use_k ? sum : total, s->p.top_p);
            if (keep < 0 && !use_k && !last) continue; /* the prefix is too short: lower L */
            if (keep > 0) {
                n = keep;
                sum = 0.0;
                for (int c = 0; c < n; c++) sum += s->val[c];
            }
            break;
        }
    }
    double u = tp_rng_uniform(&s->rng) * sum, acc = 0.0;
    for (int c = 0; c < n; c++) {
        acc += s->val[c];
        if (u < acc) return s->idx[c];
    }
    return s->idx[n - 1];
}
