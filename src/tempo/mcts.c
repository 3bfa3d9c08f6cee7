/* mcts.c: Monte Carlo tree search over TEMPO sets (see mcts.h for the algorithm and the cache
 * discipline). */
#include "tempo/mcts.h"

#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"

typedef struct {
    int32_t token;
    int parent;             /* node index; -1 for the root */
    int first_child, n_children;
    int step;               /* the step this token would be generated at */
    int slot;               /* its cache slot once fed (expanded); -1 before */
    int visits;
    double value_sum;
    float logp;             /* log D_parent(token) */
    float prior;            /* D_parent(token) / sum over its siblings */
    bool expanded;          /* fed and given its children, or found to end the run */
    bool terminal;          /* has no children: end of generation, or the run's last step */
    float terminal_value;   /* a terminal node's value, reused when it is selected again */
    int32_t terminal_token; /* the end-of-generation token that ends it (counted in its value), or -1 */
} node;

struct tp_mcts {
    tp_mcts_params p;
    int max_nodes, max_slots;
    node *nodes;
    int n_nodes;
    int *path;              /* nodes of the current simulation below the root */
    float *z, *D, *zw;      /* logits of the newest feed, its softmax, the sampler's copy */
    int32_t *sel_ids;       /* a node's TEMPO set */
    float *sel_probs;
    uint8_t *mask;          /* visibility row of the next feed: [max_slots + 1] */
    int base;               /* cache slots of the committed prefix (where the search's slots start) */
    tp_sampler *sampler;
    /* the newest simulation, for tests */
    int32_t *last_tokens;
    int n_last, last_first_step;
    float last_value;
};

/* A probability that underflowed to 0 in fp32 counts as FLT_MIN, so values stay finite. */
static float safe_log(float p) { return logf(p > FLT_MIN ? p : FLT_MIN); }

static int max_nodes_of(const tp_mcts_params *p) {
    /* the root's children plus, per simulation, at most one expansion of max_width children */
    return 1 + p->max_width * (p->simulations + 1);
}

int tp_mcts_scratch_slots(int simulations, int depth, int max_tokens) {
    return simulations + (depth < max_tokens ? depth : max_tokens);
}

static int last_cap(const tp_mcts_params *p) { return p->simulations + 1 + p->depth; }

size_t tp_mcts_bytes(const tp_mcts_params *p) {
    size_t V = (size_t)p->n_vocab, W = (size_t)p->max_width;
    return sizeof(tp_mcts) + (size_t)max_nodes_of(p) * sizeof(node) + (size_t)(p->simulations + 2) * sizeof(int) +
           3 * V * sizeof(float) + W * (sizeof(int32_t) + sizeof(float)) + (size_t)p->max_slots + 1 +
           (size_t)last_cap(p) * sizeof(int32_t) + sizeof(tp_sampler) + V * (sizeof(int32_t) + sizeof(float) + 1);
}

tp_mcts *tp_mcts_new(const tp_mcts_params *p, char *err) {
    tp_mcts *t = calloc(1, sizeof *t);
    if (!t) { tp_fail(err, "out of memory allocating the MCTS search"); return NULL; }
    t->p = *p;
    t->max_nodes = max_nodes_of(p);
    t->max_slots = p->max_slots;
    size_t V = (size_t)p->n_vocab, W = (size_t)p->max_width;
    t->nodes = calloc((size_t)t->max_nodes, sizeof *t->nodes);
    t->path = calloc((size_t)p->simulations + 2, sizeof *t->path);
    t->z = calloc(V, sizeof *t->z);
    t->D = calloc(V, sizeof *t->D);
    t->zw = calloc(V, sizeof *t->zw);
    t->sel_ids = calloc(W, sizeof *t->sel_ids);
    t->sel_probs = calloc(W, sizeof *t->sel_probs);
    t->mask = calloc((size_t)t->max_slots + 1, 1);
    t->last_tokens = calloc((size_t)last_cap(p), sizeof *t->last_tokens);
    tp_sampler_params sp = p->rollout;
    sp.repetition_penalty = 1.0;
    t->sampler = tp_sampler_new(&sp, p->n_vocab);
    if (!t->nodes || !t->path || !t->z || !t->D || !t->zw || !t->sel_ids || !t->sel_probs || !t->mask ||
        !t->last_tokens || !t->sampler) {
        tp_mcts_free(t);
        tp_fail(err, "out of memory allocating the MCTS search (%d simulations, width %d)", p->simulations,
                p->max_width);
        return NULL;
    }
    return t;
}

void tp_mcts_free(tp_mcts *t) {
    if (!t) return;
    free(t->nodes);
    free(t->path);
    free(t->z);
    free(t->D);
    free(t->zw);
    free(t->sel_ids);
    free(t->sel_probs);
    free(t->mask);
    free(t->last_tokens);
    tp_sampler_free(t->sampler);
    free(t);
}

/* Give node `parent` its children: a TEMPO set (ids/probs in selection order) at `step`. */
static void add_children(tp_mcts *t, int parent, const int32_t *ids, const float *probs, int n, int step) {
    if (n > t->max_nodes - t->n_nodes) n = t->max_nodes - t->n_nodes; /* cannot happen: sized for every expansion */
    double sum = 0;
    for (int j = 0; j < n; j++) sum += probs[j];
    node *pa = &t->nodes[parent];
    pa->first_child = t->n_nodes;
    pa->n_children = n;
    for (int j = 0; j < n; j++) {
        t->nodes[t->n_nodes++] = (node){ .token = ids[j], .parent = parent, .step = step, .slot = -1,
                                         .terminal_token = -1,
                                         .logp = safe_log(probs[j]),
                                         .prior = sum > 0 ? (float)(probs[j] / sum) : 1.0f / (float)n };
    }
}

/* PUCT: Q + c * prior * sqrt(N) / (1 + n); an unvisited child has Q = 0. Ties: the earlier child. */
static int select_child(const tp_mcts *t, int parent) {
    const node *pa = &t->nodes[parent];
    double sqrt_n = sqrt((double)pa->visits);
    int best = pa->first_child;
    double best_score = -INFINITY;
    for (int c = pa->first_child; c < pa->first_child + pa->n_children; c++) {
        const node *ch = &t->nodes[c];
        double q = ch->visits ? ch->value_sum / ch->visits : 0.0;
        double score = q + t->p.c_puct * ch->prior * sqrt_n / (1.0 + ch->visits);
        if (score > best_score) { best_score = score; best = c; }
    }
    return best;
}

/* The visibility row of a feed at slot n0: the prefix's alive slots (set once per search), the fed
 * ancestors from node `from` up, rollout slots [rollout_from, n0) when rollout_from >= 0, itself. */
static void build_mask(tp_mcts *t, int from, int rollout_from, int n0) {
    memset(t->mask + t->base, 0, (size_t)(n0 + 1 - t->base));
    for (int a = from; a > 0; a = t->nodes[a].parent)
        if (t->nodes[a].slot >= 0) t->mask[t->nodes[a].slot] = 1;
    if (rollout_from >= 0)
        for (int j = rollout_from; j < n0; j++) t->mask[j] = 1;
    t->mask[n0] = 1;
}

/* Feed one token and leave its logits in t->z and its distribution in t->D. */
static int feed(tp_mcts *t, const tp_mcts_env *env, int32_t token, int step, char *err) {
    if (env->kv->n + 1 > t->max_slots)
        return tp_fail(err, "internal: the MCTS search ran out of cache slots (%d)", t->max_slots);
    if (env->feed(env->ctx, token, t->p.n_prompt + step, step, t->mask, t->z, err)) return -1;
    memcpy(t->D, t->z, sizeof(float) * (size_t)t->p.n_vocab);
    tp_prob_softmax(t->D, t->p.n_vocab);
    return 0;
}

/* One simulation from the root (select, expand, roll out, back up). 0, or -1 with err. */
static int simulate(tp_mcts *t, const tp_mcts_env *env, int k, int width, char *err) {
    const tp_mcts_params *p = &t->p;
    const int last_step = p->max_tokens - 1;
    int cur = 0, len = 0, n_tok = 0;
    double sum = 0;
    /* select: the root always has children */
    while (t->nodes[cur].expanded && t->nodes[cur].n_children > 0) {
        cur = select_child(t, cur);
        t->path[len++] = cur;
        sum += t->nodes[cur].logp;
        t->last_tokens[n_tok++] = t->nodes[cur].token;
    }
    node *leaf = &t->nodes[cur];
    double v;
    if (leaf->terminal) {
        v = leaf->terminal_value;
        if (leaf->terminal_token >= 0) t->last_tokens[n_tok++] = leaf->terminal_token;
    } else if (leaf->step >= last_step) {
        /* the run's last step: nothing after it is generated, so nothing to feed */
        v = sum / len;
        leaf->expanded = leaf->terminal = true;
        leaf->terminal_value = (float)v;
        leaf->terminal_token = -1;
    } else {
        /* expand: feed the leaf (it sees the prefix and its ancestors) and make its TEMPO set */
        int n0 = env->kv->n;
        build_mask(t, leaf->parent, -1, n0);
        if (feed(t, env, leaf->token, leaf->step, err)) return -1;
        leaf = &t->nodes[cur];
        leaf->slot = n0;
        leaf->expanded = true;
        int next = leaf->step + 1;
        int nc = tp_select(t->D, p->n_vocab, p->is_eog, tp_threshold(&p->thr, next), width, next, p->min_steps,
                           t->sel_ids, t->sel_probs);
        add_children(t, cur, t->sel_ids, t->sel_probs, nc, next);
        leaf = &t->nodes[cur];
        int rollout_from = env->kv->n;
        double rsum = sum;
        int rcount = len;
        if (nc == 0) {
            /* the model ends the generation here (its most probable token is an end of
             * generation, as in selection): that token closes the sequence and counts */
            int32_t eog = (int32_t)tp_argmax(t->D, p->n_vocab, NULL);
            rsum += safe_log(t->D[eog]);
            rcount++;
            t->last_tokens[n_tok++] = eog;
            leaf->terminal = true;
            leaf->terminal_token = eog;
        }
        /* otherwise roll out from the leaf's distribution; rollout slots go when the simulation ends */
        for (int d = 1; d <= p->depth && nc > 0; d++) {
            int step = leaf->step + d;
            if (step > last_step) break;
            memcpy(t->zw, t->z, sizeof(float) * (size_t)p->n_vocab);
            int32_t r = tp_sampler_pick(t->sampler, t->zw, NULL, 0, step < p->min_steps ? p->is_eog : NULL);
            rsum += safe_log(t->D[r]);
            rcount++;
            t->last_tokens[n_tok++] = r;
            if (p->is_eog[r] || d == p->depth || step == last_step) break;
            build_mask(t, cur, rollout_from, env->kv->n);
            if (feed(t, env, r, step, err)) return -1;
        }
        env->truncate(env->ctx, rollout_from);
        v = rsum / rcount;
        leaf = &t->nodes[cur];
        if (leaf->terminal) leaf->terminal_value = (float)v;
    }
    for (int i = 0; i < len; i++) {
        t->nodes[t->path[i]].visits++;
        t->nodes[t->path[i]].value_sum += v;
    }
    t->nodes[0].visits++;
    t->n_last = n_tok;
    t->last_first_step = k;
    t->last_value = (float)v;
    return 0;
}

int tp_mcts_search(tp_mcts *t, const tp_mcts_env *env, int k, const int32_t *ids, const float *probs, int n, int width,
                   tp_mcts_stat *stats, char *err) {
    const tp_kv *kv = env->kv;
    if (n < 1 || n > t->p.max_width) return tp_fail(err, "internal: %d MCTS candidates (1..%d)", n, t->p.max_width);
    if (width < 1 || width > t->p.max_width) width = t->p.max_width;
    t->base = kv->n;
    for (int j = 0; j < t->base; j++) t->mask[j] = kv->slots[j].alive;
    t->n_nodes = 1;
    t->nodes[0] = (node){ .token = -1, .parent = -1, .step = k - 1, .slot = -1, .expanded = true };
    add_children(t, 0, ids, probs, n, k);
    int rc = 0;
    for (int s = 0; s < t->p.simulations && rc == 0; s++) rc = simulate(t, env, k, width, err);
    env->truncate(env->ctx, t->base); /* the cache holds the committed prefix again */
    if (rc) return -1;
    int best = 0;
    for (int j = 0; j < n; j++) {
        const node *c = &t->nodes[1 + j];
        stats[j] = (tp_mcts_stat){ c->prior, c->visits, c->visits ? (float)(c->value_sum / c->visits) : 0.0f };
        const node *b = &t->nodes[1 + best];
        if (c->visits > b->visits ||
            (c->visits == b->visits && c->visits > 0 && c->value_sum / c->visits > b->value_sum / b->visits))
            best = j;
    }
    return best;
}

int tp_mcts_last_simulation(const tp_mcts *t, const int32_t **tokens, int *first_step, float *value) {
    if (tokens) *tokens = t->last_tokens;
    if (first_step) *first_step = t->last_first_step;
    if (value) *value = t->last_value;
    return t->n_last;
}
