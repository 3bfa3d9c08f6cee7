/* mcts.h: Monte Carlo tree search over TEMPO sets (--use-mcts).
 *
 * At step k the session has fed the committed path and holds D_k; the candidates are the
 * step's TEMPO set (threshold and width cap as usual). One search runs `simulations` of:
 *   select   from the root, descend by PUCT: Q + c * prior * sqrt(N) / (1 + n)
 *            (N: the parent's visits, n and Q: the child's visits and mean value, prior: the
 *            child's probability / the sum over its siblings; an unvisited child counts Q = 0,
 *            the best a mean log-probability can be, so untried candidates are tried early;
 *            ties go to the earlier child in selection order);
 *   expand   feed the leaf's token at its position and take the TEMPO set of its distribution
 *            (the threshold of that step, the same width cap and end-of-generation rules) as its
 *            children;
 *   roll out up to `depth` more tokens from the leaf's distribution, each sampled with the
 *            rollout sampler (temperature 0 = greedy; otherwise temperature/top-k/top-p from
 *            the seeded generator), stopping at an end-of-generation token (it counts) or at
 *            the run's last step. A leaf whose most probable token is an end of generation
 *            (from min_steps on) has no children: that token ends its sequence instead, and
 *            the leaf keeps that value when selected again. A leaf at the run's last step is
 *            not fed: its value is its path's;
 *   score    the simulation's value: the mean log-probability, under the model, of its tokens
 *            from the root's child down to the last rollout token;
 *   back up  visits + 1 and the value into every node of the path.
 * The most visited candidate is committed (ties: the higher mean value, then selection order).
 *
 * The cache: the search appends slots after the committed prefix and drops them all before it
 * returns, so no slot of the prefix is recomputed and none of the search's slots outlives it.
 * Tree nodes keep their slot for the whole search (a node is fed once, when it is expanded);
 * each query sees the prefix's alive slots, its own ancestors and itself (an explicit mask), so
 * siblings never see each other. Rollout slots are dropped after each simulation. At most
 * tp_mcts_scratch_slots() slots are in use beyond the prefix.
 *
 * Nothing is allocated after tp_mcts_new. Deterministic: the same inputs and seed give the same
 * search.
 */
#ifndef TEMPO_MCTS_H
#define TEMPO_MCTS_H

#include <stddef.h>
#include <stdint.h>

#include "kv/kvcache.h"
#include "tempo/sample.h"
#include "tempo/select.h"

typedef struct tp_mcts tp_mcts;

typedef struct {
    int simulations, depth;
    double c_puct;
    int max_width;              /* most children of a node (the session's width W) */
    int max_slots;              /* the cache's capacity (prefix and the search's slots) */
    int n_vocab;
    int n_prompt;               /* P: step j's tokens sit at position P + j */
    int max_tokens, min_steps;  /* the run's steps, and end of generation banned before min_steps */
    tp_threshold_params thr;    /* the threshold schedule of the run */
    const uint8_t *is_eog;      /* [n_vocab] end-of-generation flags (the session's; outlives the search) */
    tp_sampler_params rollout;  /* temperature, top_k, top_p, seed (repetition penalty unused) */
} tp_mcts_params;

/* What the search needs from its session, which owns the cache (the only code that changes it). */
typedef struct {
    void *ctx;
    /* Append one slot: token at logical position pos, recorded as step `step`; its query sees the
     * slots j < kv->n with mask[j] != 0, and itself (mask[kv->n] = 1). Writes its logits
     * [n_vocab]. 0, or -1 with err. */
    int (*feed)(void *ctx, int32_t token, int32_t pos, int32_t step, const uint8_t *mask, float *logits, char *err);
    /* Drop every slot from n on. */
    void (*truncate)(void *ctx, int n);
    const tp_kv *kv;            /* read-only: slot count and alive flags */
} tp_mcts_env;

/* One root candidate after a search. */
typedef struct {
    float prior;
    int visits;
    float value; /* mean value; 0 when unvisited */
} tp_mcts_stat;

/* Bytes tp_mcts_new allocates (for the memory budget, before allocating). */
size_t tp_mcts_bytes(const tp_mcts_params *p);
/* Most cache slots a search appends beyond the prefix: one per expansion (at most one a
 * simulation) plus a rollout's fed tokens (fewer than depth, and than the run's steps). */
int tp_mcts_scratch_slots(int simulations, int depth, int max_tokens);

tp_mcts *tp_mcts_new(const tp_mcts_params *p, char *err);
void tp_mcts_free(tp_mcts *t);

/* Search among the n candidates (ids/probs: step k's set in selection order, n <= max_width;
 * the cache holds the committed prefix and D_k is the current distribution). Fills stats[n]
 * and returns the committed candidate's index, or -1 with err (the cache is back to the prefix
 * either way). `width`: the cap on children now in force (<= max_width). */
int tp_mcts_search(tp_mcts *t, const tp_mcts_env *env, int k, const int32_t *ids, const float *probs, int n, int width,
                   tp_mcts_stat *stats, char *err);

/* For tests: the newest simulation's tokens (from the root's child on: tree path, then rollout),
 * the step of the first one, and its value. Returns the token count (0 before any search). */
int tp_mcts_last_simulation(const tp_mcts *t, const int32_t **tokens, int *first_step, float *value);

#endif
