/* prune.h: retroactive pruning decisions (design/tempo-semantics.md section 6) as
 * pure functions. The generation loop gathers scores from the forward pass's
 * attention summary and applies the decisions to the KV cache.
 */
#ifndef TEMPO_PRUNE_H
#define TEMPO_PRUNE_H

#include <stdbool.h>
#include <stdint.h>

/* Layer weights lambda[n_layers], summing to 1: multi-scale proportional to
 * linspace(0.2, 1.0, n_layers); otherwise the mean of the last min(3, n_layers). */
void tp_prune_layer_weights(int n_layers, bool multi_scale, float *lambda);

/* a(m) = sum_q w_q * attn[q * stride + slot], w_q = p_q / sum p, over the n_q
 * queries of the set just fed. */
float tp_prune_score(const float *attn, int stride, const float *p, int n_q, int slot);

typedef struct {
    bool relative;              /* relative rule (default) or absolute */
    double relative_threshold;  /* prune a(m) < rt * mean(a over alive members) */
    double attention_threshold; /* absolute: prune a(m) < at */
} tp_prune_rule;

/* Judge one earlier set all at once. score/prob/id/alive: [n] per member.
 * Sets prune[m] for the members to remove (never the set's best alive member:
 * highest score, ties higher probability, then lower id) and returns how many.
 * Sets with fewer than two alive members are left alone. */
int tp_prune_decide(const tp_prune_rule *rule, int n, const float *score, const float *prob,
                    const int32_t *id, const bool *alive, bool *prune);

#endif
