/* select.h: TEMPO's per-step arithmetic as pure functions (design/tempo-semantics.md
 * sections 2, 4 and 5): the threshold schedule, the selection of a parallel set
 * from a distribution, and the probability-weighted mixture that gives the next
 * distribution. No allocation; callers pass every buffer.
 */
#ifndef TEMPO_SELECT_H
#define TEMPO_SELECT_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/threadpool.h"

/* Threshold schedule (section 5). */
typedef struct {
    double selection_threshold;   /* tau_0 */
    int max_tokens;               /* steps in the run */
    bool dynamic;                 /* --dynamic-threshold */
    double final_threshold;       /* tau_f */
    bool use_relu;
    double bezier_p1, bezier_p2;
    double relu_activation_point; /* a, in [0, 1) */
} tp_threshold_params;

/* B(t) = 3(1-t)^2 t p1 + 3(1-t) t^2 p2 + t^3 */
double tp_bezier(double t, double p1, double p2);
/* B(t) = max(0, t - a) / (1 - a) */
double tp_relu_schedule(double t, double a);
/* tau_k, clamped to [0, 1]. */
double tp_threshold(const tp_threshold_params *p, int k);

/* Selection (section 2). D: the distribution over n_vocab ids; is_eog: [n_vocab]
 * flags (NULL = none). Writes at most W members in selection order (probability
 * descending, ties by id ascending) into ids/probs and returns their count, >= 1;
 * returns 0 when argmax D is an end-of-generation id and k >= min_steps (stop). */
int tp_select(const float *D, int n_vocab, const uint8_t *is_eog, double tau, int W,
              int k, int min_steps, int32_t *ids, float *probs);

/* Index of the largest D (ties: lowest id), skipping flagged ids when skip != NULL;
 * -1 when every id is skipped. */
int tp_argmax(const float *D, int n, const uint8_t *skip);

/* In-place fp32 softmax of one row. */
void tp_prob_softmax(float *x, int n);

/* Mixture (section 4): out = sum_j w_j softmax(logits_j), w_j = p_j / sum p.
 * logits: [n][n_vocab], overwritten with the members' softmax. */
void tp_mixture(float *logits, const float *p, int n, int n_vocab, float *out);
/* The same on a thread pool (NULL: this thread), bit for bit: the vocabulary is split across
 * the threads for the max, the exponentials, the scaling and the sum over members, and each
 * row's softmax denominator is still added up in index order (by one thread per row). It is the
 * largest per-step work outside the model's forward (a 128K vocabulary is 128K expf per member). */
void tp_mixture_pool(float *logits, const float *p, int n, int n_vocab, float *out, tp_pool *pool);

#endif
