/* prune.c: pruning decisions (design/tempo-semantics.md section 6). */
#include "tempo/prune.h"

void tp_prune_layer_weights(int n_layers, bool multi_scale, float *lambda) {
    if (n_layers <= 0) return;
    if (multi_scale) {
        double sum = 0.0;
        for (int l = 0; l < n_layers; l++) {
            double v = n_layers == 1 ? 0.2 : 0.2 + 0.8 * (double)l / (n_layers - 1);
            lambda[l] = (float)v;
            sum += v;
        }
        for (int l = 0; l < n_layers; l++) lambda[l] = (float)(lambda[l] / sum);
    } else {
        int last = n_layers < 3 ? n_layers : 3;
        for (int l = 0; l < n_layers; l++) lambda[l] = l >= n_layers - last ? 1.0f / (float)last : 0.0f;
    }
}

float tp_prune_score(const float *attn, int stride, const float *p, int n_q, int slot) {
    double total = 0.0, a = 0.0;
    for (int q = 0; q < n_q; q++) total += p[q];
    for (int q = 0; q < n_q; q++) {
        double w = total > 0.0 ? p[q] / total : 1.0 / n_q;
        a += w * attn[(long)q * stride + slot];
    }
    return (float)a;
}

/* Is member i a better keeper than member j? */
static bool better(int i, int j, const float *score, const float *prob, const int32_t *id) {
    if (score[i] != score[j]) return score[i] > score[j];
    if (prob[i] != prob[j]) return prob[i] > prob[j];
    return id[i] < id[j];
}

int tp_prune_decide(const tp_prune_rule *rule, int n, const float *score, const float *prob,
                    const int32_t *id, const bool *alive, bool *prune) {
    int n_alive = 0, keep = -1;
    double sum = 0.0;
    for (int m = 0; m < n; m++) {
        prune[m] = false;
        if (!alive[m]) continue;
        n_alive++;
        sum += score[m];
        if (keep < 0 || better(m, keep, score, prob, id)) keep = m;
    }
    if (n_alive < 2) return 0;
    double limit = rule->relative ? rule->relative_threshold * (sum / n_alive) : rule->attention_threshold;
    int count = 0;
    for (int m = 0; m < n; m++) {
        if (!alive[m] || m == keep) continue;
        if ((double)score[m] < limit) { prune[m] = true; count++; }
    }
    return count;
}
