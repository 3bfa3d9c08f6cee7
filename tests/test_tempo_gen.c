/* test_tempo_gen.c: TEMPO generation end to end on stories260K: the invariants of
 * design/tempo-semantics.md section 8, end-of-generation handling, pruning,
 * standard mode, limits and the per-step callback.
 *
 * Every test runs on each backend (BACKEND_TEST, test.h): the CPU, and as NAME_gpu the Vulkan
 * device (lavapipe here), with the same expectations; test_gpu.c compares the two backends' runs
 * directly. */
#include "test.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "format/gguf.h"
#include "kv/kvcache.h"
#include "gpu/backend.h"
#include "model/model.h"
#include "tempo/prune.h"
#include "tempo/select.h"
#include "tempo/session.h"
#include "tokenizer/tokenizer.h"

#define STORIES SHARED_DIR "/models/stories260K.gguf"
#define PROMPT "Once upon a time"

/* stories260K on the backend under test: the CPU, or test_backend's device with every layer. */
static tempo_model *open_stories(void) {
    tempo_error err;
    tempo_model_params mp;
    tempo_model_params_init(&mp);
    mp.threads = 2;
    mp.device = test_backend ? test_backend : "cpu";
    tempo_model *m = tempo_model_open(STORIES, &mp, &err);
    if (!m) fprintf(stderr, "  open %s: %s\n", STORIES, err.message);
    return m;
}

static void cfg_init(tempo_gen_params *c, int max_tokens, double threshold, int width) {
    tempo_gen_params_init(c);
    c->max_tokens = max_tokens;
    c->selection_threshold = threshold;
    c->max_parallel_tokens = width;
}

/* How a test drives a run through the session API. */
typedef struct {
    bool reverse;            /* feed every set in reverse selection order (tempo_session_set_members) */
    tp_reclaim reclaim;      /* when pruned slots are reclaimed */
    /* after each step that fed a set with an attention summary: the cache's slots as they were
     * when that set was fed (alive flags and steps of the slots before it, then its own) */
    void (*watch)(void *user, int step, int n_before, const bool *alive, const int *slot_step, int n_q,
                  int stride, const float *attn);
    void *user;
    tempo_session_stats *stats;
    const char *prompt;
} run_opts;

static tempo_result *run(tempo_model *m, const tempo_gen_params *c, const run_opts *o) {
    static const run_opts none;
    if (!o) o = &none;
    tempo_error err;
    tempo_session *s = tempo_session_new(m, c, &err);
    if (!s || tempo_session_prefill(s, o->prompt ? o->prompt : PROMPT, &err)) {
        fprintf(stderr, "  generate: %s\n", err.message);
        tempo_session_free(s);
        return NULL;
    }
    tp_session_set_reclaim(s, o->reclaim);
    bool *alive = NULL;
    int *sstep = NULL, cap = 0;
    tempo_step_info st;
    int rc;
    for (;;) {
        const tp_kv *kv = tp_session_kv(s);
        int n_before = kv->n;
        if (o->watch) {
            if (kv->n > cap) {
                cap = kv->capacity;
                alive = realloc(alive, sizeof *alive * (size_t)cap);
                sstep = realloc(sstep, sizeof *sstep * (size_t)cap);
            }
            for (int i = 0; i < kv->n; i++) { alive[i] = kv->slots[i].alive; sstep[i] = kv->slots[i].step; }
        }
        int fed_step = tempo_session_n_steps(s) - 1;
        rc = tempo_session_step(s, &st, &err);
        int n_q, stride;
        const float *attn = tp_session_last_attention(s, &n_q, &stride);
        if (o->watch && attn) o->watch(o->user, fed_step, n_before, alive, sstep, n_q, stride, attn);
        if (rc != 1) break;
        if (o->reverse && st.step->n_tokens > 1) {
            int32_t ids[64];
            int n = st.step->n_tokens;
            for (int j = 0; j < n; j++) ids[j] = st.step->tokens[n - 1 - j].token_id;
            if (tempo_session_set_members(s, ids, n, &err)) { fprintf(stderr, "  set_members: %s\n", err.message); break; }
        }
    }
    if (rc < 0) fprintf(stderr, "  step: %s\n", err.message);
    if (o->stats) tempo_session_get_stats(s, o->stats);
    tempo_result *r = tempo_session_result(s, &err);
    tempo_session_free(s);
    free(alive);
    free(sstep);
    return r;
}

/* Same steps, same members in the same order, probabilities within tol, same pruning. */
/* The same, comparing each step's members as a set (a replayed run may order them differently). */
static void check_same_members(const tempo_result *a, const tempo_result *b, double tol) {
    CHECK_INT_EQ(a->n_steps, b->n_steps);
    int n = a->n_steps < b->n_steps ? a->n_steps : b->n_steps;
    for (int k = 0; k < n; k++) {
        const tempo_step *x = &a->steps[k], *y = &b->steps[k];
        if (x->n_tokens != y->n_tokens) {
            test_fail_at(__FILE__, __LINE__, "step %d: %d vs %d members", k, x->n_tokens, y->n_tokens);
            return;
        }
        for (int j = 0; j < x->n_tokens; j++) {
            const tempo_token *s = &x->tokens[j], *t = NULL;
            for (int i = 0; i < y->n_tokens; i++)
                if (y->tokens[i].token_id == s->token_id) t = &y->tokens[i];
            if (!t || fabs(s->probability - t->probability) > tol || s->pruned != t->pruned ||
                s->pruned_at_step != t->pruned_at_step) {
                test_fail_at(__FILE__, __LINE__, "step %d member %d (id %d) differs", k, j, s->token_id);
                return;
            }
        }
    }
}

static void check_same_sets(const tempo_result *a, const tempo_result *b, double tol) {
    CHECK_INT_EQ(a->n_steps, b->n_steps);
    CHECK_INT_EQ(a->stop_reason, b->stop_reason);
    int n = a->n_steps < b->n_steps ? a->n_steps : b->n_steps;
    for (int k = 0; k < n; k++) {
        const tempo_step *x = &a->steps[k], *y = &b->steps[k];
        if (x->n_tokens != y->n_tokens) {
            test_fail_at(__FILE__, __LINE__, "step %d: %d vs %d members", k, x->n_tokens, y->n_tokens);
            return;
        }
        for (int j = 0; j < x->n_tokens; j++) {
            const tempo_token *s = &x->tokens[j], *t = &y->tokens[j];
            if (s->token_id != t->token_id || fabs(s->probability - t->probability) > tol ||
                s->pruned != t->pruned || s->pruned_at_step != t->pruned_at_step) {
                test_fail_at(__FILE__, __LINE__, "step %d member %d: id %d/%d p %.7f/%.7f pruned %d@%d / %d@%d", k, j,
                             s->token_id, t->token_id, s->probability, t->probability, s->pruned,
                             s->pruned_at_step, t->pruned, t->pruned_at_step);
                return;
            }
        }
    }
}

static int count_pruned(const tempo_result *r) {
    int n = 0;
    for (int k = 0; k < r->n_steps; k++)
        for (int j = 0; j < r->steps[k].n_tokens; j++) n += r->steps[k].tokens[j].pruned;
    return n;
}

/* ------------------------------------------------------- invariant 1 -- */
static void check_greedy(tempo_model *m, tempo_gen_params *c) {
    int ref[128];
    int nref = test_reference_greedy_ids(ref, 128);
    REQUIRE(nref == 64);
    tempo_result *r = run(m, c, NULL);
    REQUIRE(r);
    CHECK_INT_EQ(r->n_steps, 64);
    CHECK_INT_EQ(r->parallel_steps, 0);
    for (int k = 0; k < r->n_steps && k < 64; k++) {
        CHECK_INT_EQ(r->steps[k].n_tokens, 1);
        if (r->steps[k].tokens[0].token_id != ref[k]) {
            test_fail_at(__FILE__, __LINE__, "step %d: id %d, reference %d", k, r->steps[k].tokens[0].token_id, ref[k]);
            break;
        }
        CHECK_INT_EQ(r->steps[k].position, 5 + k);
    }
    CHECK(strncmp(r->clean_text, "Once upon a time, there was a little girl named Lily.", 53) == 0);
    CHECK(strcmp(r->clean_text, r->generated_text) == 0);
    tempo_result_free(r);
}

BACKEND_TEST(tempo_gen_greedy_width_one_matches_reference) {
    tempo_model *m = open_stories();
    REQUIRE(m);
    tempo_gen_params c;
    cfg_init(&c, 64, 0.01, 1);
    check_greedy(m, &c);
    tempo_model_close(m);
}

BACKEND_TEST(tempo_gen_greedy_high_threshold_matches_reference) {
    tempo_model *m = open_stories();
    REQUIRE(m);
    tempo_gen_params c;
    cfg_init(&c, 64, 0.51, 0); /* width from memory */
    check_greedy(m, &c);
    c.disable_kv_cache = true;
    /* (on the GPU, where every rebuilt chunk is a submission, tempo_gen_kv_cache_off_same_sets
     * covers --disable-kv-cache: lavapipe is slow enough to keep it to one test) */
    if (!test_backend) check_greedy(m, &c);
    tempo_model_close(m);
}

BACKEND_TEST(tempo_gen_default_mode_greedy_matches_reference) {
    tempo_model *m = open_stories();
    REQUIRE(m);
    tempo_gen_params c;
    cfg_init(&c, 64, 0.01, 8);
    c.default_mode = true;
    check_greedy(m, &c);
    c.disable_kv_cache = true;
    if (!test_backend) check_greedy(m, &c); /* (see above) */
    tempo_model_close(m);
}

BACKEND_TEST(tempo_gen_default_mode_sampling_is_seeded) {
    tempo_model *m = open_stories();
    REQUIRE(m);
    tempo_gen_params c;
    cfg_init(&c, 40, 0.1, 0);
    c.default_mode = true;
    c.temperature = 1.0;
    c.top_k = 40;
    c.top_p = 0.9;
    c.repetition_penalty = 1.1;
    c.seed = 7;
    tempo_result *a = run(m, &c, NULL), *b = run(m, &c, NULL);
    c.seed = 8;
    tempo_result *d = run(m, &c, NULL);
    REQUIRE(a && b && d);
    check_same_sets(a, b, 0.0);
    CHECK(strcmp(a->clean_text, d->clean_text) != 0);
    for (int k = 0; k < a->n_steps; k++) CHECK(a->steps[k].n_tokens == 1);
    tempo_result_free(a); tempo_result_free(b); tempo_result_free(d);
    tempo_model_close(m);
}

/* ------------------------------------------------------- invariant 2 -- */
static void check_cache_off(tempo_model *m, bool visible, bool pruning, bool relative) {
    tempo_gen_params c;
    cfg_init(&c, 40, 0.05, 4);
    c.allow_intraset_token_visibility = visible;
    c.use_retroactive_pruning = pruning;
    c.no_relative_attention = !relative;
    c.attention_threshold = 0.02;
    tempo_result *a = run(m, &c, NULL);
    c.disable_kv_cache = true;
    tempo_result *b = run(m, &c, NULL);
    REQUIRE(a && b);
    CHECK(a->parallel_steps >= 5);
    if (pruning) CHECK(count_pruned(a) > 0);
    check_same_sets(a, b, 1e-4);
    CHECK(strcmp(a->generated_text, b->generated_text) == 0);
    tempo_result_free(a);
    tempo_result_free(b);
}

BACKEND_TEST(tempo_gen_kv_cache_off_same_sets) {
    tempo_model *m = open_stories();
    REQUIRE(m);
    /* on the GPU the two pruning runs only: they have both visibilities and both rules */
    if (!test_backend) check_cache_off(m, false, false, true);
    if (!test_backend) check_cache_off(m, true, false, true);
    check_cache_off(m, false, true, true);
    check_cache_off(m, true, true, false);
    tempo_model_close(m);
}

/* ------------------------------------------------------- invariant 3 -- */
/* A KV cache and, on a model on a GPU, its backend (as a session holds them). */
typedef struct {
    tp_kv *kv;
    tp_backend *be;
} tseq;

static int tseq_new(tp_model *m, int cap, bool summary, tseq *q, char *err) {
    q->be = NULL;
    q->kv = tp_kv_new(m->hp.n_layers, m->hp.n_kv_heads * m->hp.head_dim, TP_KV_F32, cap, 0, err);
    if (!q->kv) return -1;
    if (m->dev && !(q->be = tp_backend_new(m->dev, m, q->kv, m->dev->layers, summary, err))) return -1;
    return 0;
}

static void tseq_free(tseq *q) {
    tp_backend_free(q->be);
    tp_kv_free(q->kv);
}

/* Feed `set` after the prompt in a fresh cache; logits [n][V]. */
static int feed_after_prompt(tp_model *tm, const int32_t *set, int n, tp_visibility vis, float *logits) {
    char err[TP_ERR_LEN] = "";
    static const int32_t prompt[5] = { 1, 403, 407, 261, 378 };
    int32_t pos[16];
    tseq q;
    int rc = tseq_new(tm, 64, false, &q, err);
    tp_compute *c = rc ? NULL : tp_compute_new(tm, 2, 0, 64, err);
    if (!c) { fprintf(stderr, "  %s\n", err); tseq_free(&q); return -1; }
    for (int i = 0; i < 5; i++) pos[i] = i;
    tp_batch pb = { .n = 5, .tokens = prompt, .pos = pos, .step = -1, .vis = TP_VIS_CAUSAL };
    rc = tp_backend_forward(q.be, tm, c, q.kv, &pb, err);
    for (int i = 0; i < n; i++) pos[i] = 5;
    tp_batch b = { .n = n, .tokens = set, .pos = pos, .step = 0, .vis = vis, .logits = logits };
    if (!rc) rc = tp_backend_forward(q.be, tm, c, q.kv, &b, err);
    if (rc) fprintf(stderr, "  forward: %s\n", err);
    tseq_free(&q);
    tp_compute_free(c);
    return rc;
}

static float max_diff(const float *a, const float *b, int n) {
    float d = 0;
    for (int i = 0; i < n; i++) d = fmaxf(d, fabsf(a[i] - b[i]));
    return d;
}

BACKEND_TEST(tempo_gen_isolated_logits_independent_of_siblings) {
    tempo_model *m = open_stories();
    REQUIRE(m);
    tp_model *tm = m;
    int V = tm->hp.n_vocab;
    float *l1 = malloc(sizeof(float) * V * 5), *l2 = malloc(sizeof(float) * V * 5), *l3 = malloc(sizeof(float) * V);
    const int32_t a[3] = { 432, 383, 286 }, b[3] = { 286, 432, 383 }, alone[1] = { 383 };
    const int32_t other[5] = { 100, 383, 200, 300, 50 };
    REQUIRE(!feed_after_prompt(tm, a, 3, TP_VIS_ISOLATED, l1));
    REQUIRE(!feed_after_prompt(tm, b, 3, TP_VIS_ISOLATED, l2));
    REQUIRE(!feed_after_prompt(tm, alone, 1, TP_VIS_ISOLATED, l3));
    /* 383: row 1 of a, row 2 of b, row 0 alone, row 1 of other */
    CHECK(max_diff(l1 + V, l2 + 2 * V, V) <= 1e-5f);
    CHECK(max_diff(l1 + V, l3, V) <= 1e-5f);
    CHECK(max_diff(l1, l2 + V, V) <= 1e-5f);       /* 432 */
    REQUIRE(!feed_after_prompt(tm, other, 5, TP_VIS_ISOLATED, l2));
    CHECK(max_diff(l1 + V, l2 + V, V) <= 1e-5f);
    /* visible siblings: a full block, so order does not matter either, but siblings do */
    REQUIRE(!feed_after_prompt(tm, a, 3, TP_VIS_SET, l1));
    REQUIRE(!feed_after_prompt(tm, b, 3, TP_VIS_SET, l2));
    CHECK(max_diff(l1 + V, l2 + 2 * V, V) <= 1e-5f);
    CHECK(max_diff(l1 + V, l3, V) > 1e-3f);
    free(l1); free(l2); free(l3);
    tempo_model_close(m);
}

BACKEND_TEST(tempo_gen_sibling_order_independent) {
    tempo_model *m = open_stories();
    REQUIRE(m);
    for (int vis = 0; vis < 2; vis++) {
        tempo_gen_params c;
        cfg_init(&c, 40, 0.05, 5);
        c.allow_intraset_token_visibility = vis;
        c.use_retroactive_pruning = true;
        run_opts rev = { .reverse = true };
        tempo_result *a = run(m, &c, NULL), *b = run(m, &c, &rev);
        REQUIRE(a && b);
        CHECK(a->parallel_steps >= 5);
        check_same_members(a, b, 1e-5);
        tempo_result_free(a);
        tempo_result_free(b);
        }
    tempo_model_close(m);
}

/* ------------------------------------------------------- invariant 4 -- */
/* A TEMPO loop at the forward level, run twice side by side: cache A gets each set in one
 * batched forward, cache B gets each member alone with a mask hiding the siblings fed before
 * it. Their logits and attention summaries must agree within 1e-4 at every step. */
BACKEND_TEST(tempo_gen_batched_equals_one_by_one) {
    tempo_model *m = open_stories();
    REQUIRE(m);
    char err[TP_ERR_LEN];
    const int V = m->hp.n_vocab, L = m->hp.n_layers, CAP = 256, W = 6;
    tseq qa, qb;
    REQUIRE(tseq_new(m, CAP, true, &qa, err) == 0 && tseq_new(m, CAP, true, &qb, err) == 0);
    tp_kv *ka = qa.kv, *kb = qb.kv;
    tp_compute *c = tp_compute_new(m, 2, 0, CAP, err);
    float *la = malloc(sizeof(float) * V * W), *lb = malloc(sizeof(float) * V * W), *D = malloc(sizeof(float) * V);
    float *aa = calloc((size_t)W * CAP, sizeof(float)), *ab = calloc((size_t)W * CAP, sizeof(float));
    float *row = calloc(CAP, sizeof(float)), lambda[16];
    uint8_t *mask = calloc(CAP, 1);
    REQUIRE(ka && kb && c && la && lb && D && aa && ab && row && mask && L <= 16);
    tp_prune_layer_weights(L, true, lambda);
    static const int32_t prompt[5] = { 1, 403, 407, 261, 378 };
    int32_t pos[64], ids[W];
    float probs[W];
    for (int i = 0; i < 5; i++) pos[i] = i;
    tp_batch pb = { .n = 5, .tokens = prompt, .pos = pos, .step = -1, .vis = TP_VIS_CAUSAL, .logits = D, .logits_last_only = true };
    REQUIRE(tp_backend_forward(qa.be, m, c, ka, &pb, err) == 0);
    pb.logits = NULL;
    REQUIRE(tp_backend_forward(qb.be, m, c, kb, &pb, err) == 0);
    tp_prob_softmax(D, V);
    float worst = 0, worst_attn = 0;
    int wide = 0;
    for (int k = 0; k < 30; k++) {
        int n = tp_select(D, V, NULL, 0.05, W, k, 0, ids, probs);
        wide += n > 1;
        for (int j = 0; j < n; j++) pos[j] = 5 + k;
        int n0 = ka->n;
        tp_batch b = { .n = n, .tokens = ids, .pos = pos, .step = k, .vis = TP_VIS_ISOLATED, .logits = la,
                       .layer_weights = lambda, .attn = aa };
        REQUIRE(tp_backend_forward(qa.be, m, c, ka, &b, err) == 0);
        for (int j = 0; j < n; j++) {
            int cols = kb->n + 1;
            for (int x = 0; x < cols - 1; x++) mask[x] = kb->slots[x].step != k; /* earlier siblings hidden */
            mask[cols - 1] = 1;
            tp_batch one = { .n = 1, .tokens = &ids[j], .pos = pos, .step = k, .vis = TP_VIS_ISOLATED, .mask = mask,
                             .logits = lb + (size_t)j * V, .layer_weights = lambda, .attn = row };
            REQUIRE(tp_backend_forward(qb.be, m, c, kb, &one, err) == 0);
            /* slot x of B is slot x of A for the prompt and earlier steps; this member's own slot
             * is column n0 + j in A and column n0 + j in B as well */
            for (int x = 0; x < n0; x++) worst_attn = fmaxf(worst_attn, fabsf(row[x] - aa[(size_t)j * (n0 + n) + x]));
            worst_attn = fmaxf(worst_attn, fabsf(row[cols - 1] - aa[(size_t)j * (n0 + n) + n0 + j]));
        }
        worst = fmaxf(worst, max_diff(la, lb, n * V));
        tp_mixture(la, probs, n, V, D);
    }
    CHECK(wide >= 5);
    CHECK_MSG(worst <= 1e-4f, "logits differ by %g", worst);
    CHECK_MSG(worst_attn <= 1e-5f, "attention differs by %g", worst_attn);
    free(la); free(lb); free(D); free(aa); free(ab); free(row); free(mask);
    tseq_free(&qa); tseq_free(&qb); tp_compute_free(c);

    /* and the session feeds ONE forward per set: the prefill plus one per fed step */
    tempo_gen_params g;
    cfg_init(&g, 40, 0.05, 6);
    tempo_session_stats st;
    run_opts o = { .stats = &st };
    tempo_result *r = run(m, &g, &o);
    REQUIRE(r);
    CHECK(r->parallel_steps >= 5);
    CHECK_INT_EQ(st.forward_calls, 1 + st.fed_steps);
    CHECK(st.fed_tokens > st.fed_steps);
    tempo_result_free(r);
    tempo_model_close(m);
}

/* ------------------------------------------------------- invariant 5 -- */
typedef struct {
    bool compacting;
    int dead_seen, dead_nonzero, alive_zero, lingering, calls;
} attn_watch;

static void watch_attention(void *user, int step, int n_before, const bool *alive, const int *slot_step, int n_q,
                            int stride, const float *attn) {
    attn_watch *w = user;
    w->calls++;
    for (int x = 0; x < n_before; x++) {
        if (w->compacting && !alive[x]) w->lingering++;
        bool earlier = slot_step[x] < step;
        for (int q = 0; q < n_q; q++) {
            float a = attn[(size_t)q * stride + x];
            if (!alive[x]) w->dead_nonzero += a != 0.0f;
            else if (earlier) w->alive_zero += a == 0.0f;
        }
        w->dead_seen += !alive[x];
    }
}

BACKEND_TEST(tempo_gen_pruning_hides_pruned_slots) {
    tempo_model *m = open_stories();
    REQUIRE(m);
    tempo_gen_params c;
    cfg_init(&c, 48, 0.05, 6);
    c.use_retroactive_pruning = true;
    attn_watch keep = { 0 }, compact = { .compacting = true };
    run_opts o1 = { .reclaim = TP_RECLAIM_WHEN_NEEDED, .watch = watch_attention, .user = &keep };
    run_opts o2 = { .watch = watch_attention, .user = &compact };
    tempo_result *a = run(m, &c, &o1), *b = run(m, &c, &o2);
    REQUIRE(a && b);
    int pruned = count_pruned(a);
    CHECK(pruned > 0);
    CHECK(keep.dead_seen > 0);          /* pruned slots stayed in the cache ... */
    CHECK_INT_EQ(keep.dead_nonzero, 0); /* ... and got exactly zero attention */
    CHECK_INT_EQ(keep.alive_zero, 0);   /* while every live earlier slot got some */
    CHECK_INT_EQ(compact.lingering, 0); /* reclaimed: no dead slot survives to the next forward */
    CHECK(compact.calls > 0);
    check_same_sets(a, b, 1e-5);        /* compaction changes no result */
    for (int k = 0; k < a->n_steps; k++) {
        const tempo_step *st = &a->steps[k];
        int alive = 0, pr = 0;
        for (int j = 0; j < st->n_tokens; j++) {
            const tempo_token *t = &st->tokens[j];
            alive += !t->pruned;
            pr += t->pruned;
            if (t->pruned) CHECK(t->pruned_at_step > k && t->pruned_at_step < a->n_steps);
            else CHECK(t->pruned_at_step == -1);
        }
        CHECK(alive >= 1);
        CHECK(st->was_pruned == (pr > 0));
    }
    /* the text holds the alive members only: rebuild it independently */
    char *want = malloc(strlen(a->generated_text) + 1);
    size_t len = 0, cap = strlen(a->generated_text) + 1;
    bool fits = true;
#define PUT(str) do { size_t l_ = strlen(str); if (len + l_ < cap) { memcpy(want + len, str, l_); len += l_; } else fits = false; } while (0)
    PUT(a->prompt);
    for (int k = 0; k < a->n_steps; k++) {
        const tempo_step *st = &a->steps[k];
        int alive = 0, put = 0;
        for (int j = 0; j < st->n_tokens; j++) alive += !st->tokens[j].pruned;
        if (alive > 1) PUT("[");
        for (int j = 0; j < st->n_tokens; j++) {
            if (st->tokens[j].pruned) continue;
            if (put++) PUT("/");
            PUT(st->tokens[j].text);
        }
        if (alive > 1) PUT("]");
    }
#undef PUT
    want[len] = 0;
    CHECK(fits);
    CHECK_MSG(strcmp(want, a->generated_text) == 0, "'%s' vs '%s'", want, a->generated_text);
    free(want);
    tempo_result_free(a);
    tempo_result_free(b);
    tempo_model_close(m);
}

BACKEND_TEST(tempo_gen_pruning_rules_and_layer_weights) {
    tempo_model *m = open_stories();
    REQUIRE(m);
    tempo_gen_params c;
    cfg_init(&c, 40, 0.05, 6);
    c.use_retroactive_pruning = true;
    tempo_result *rel = run(m, &c, NULL);
    c.no_multi_scale_attention = true;
    tempo_result *last3 = run(m, &c, NULL);
    c.no_multi_scale_attention = false;
    c.no_relative_attention = true;
    c.attention_threshold = 1.0; /* prunes every member but the best of each earlier set */
    tempo_result *all = run(m, &c, NULL);
    c.attention_threshold = 0.0; /* prunes nothing */
    tempo_result *none = run(m, &c, NULL);
    REQUIRE(rel && last3 && all && none);
    CHECK(count_pruned(rel) > 0);
    CHECK(count_pruned(last3) > 0);
    CHECK_INT_EQ(count_pruned(none), 0);
    /* threshold 1: after the pass following step k, every set before k has one member */
    for (int k = 0; k + 1 < all->n_steps; k++) {
        const tempo_step *st = &all->steps[k];
        int alive = 0;
        for (int j = 0; j < st->n_tokens; j++) {
            alive += !st->tokens[j].pruned;
            if (st->tokens[j].pruned) CHECK_INT_EQ(st->tokens[j].pruned_at_step, k + 1);
        }
        if (k + 2 < all->n_steps) CHECK_INT_EQ(alive, 1);
    }
    tempo_result_free(rel); tempo_result_free(last3); tempo_result_free(all); tempo_result_free(none);
    tempo_model_close(m);
}

/* ------------------------------------------------------------ selection -- */
BACKEND_TEST(tempo_gen_sets_follow_the_threshold) {
    tempo_model *m = open_stories();
    REQUIRE(m);
    tempo_gen_params c;
    cfg_init(&c, 30, 0.05, 3);
    c.dynamic_threshold = true;
    tempo_result *r = run(m, &c, NULL);
    REQUIRE(r);
    tp_threshold_params p = { 0.05, 30, true, 1.0, false, 0.2, 0.8, 0.5 };
    int wide = 0;
    for (int k = 0; k < r->n_steps; k++) {
        const tempo_step *st = &r->steps[k];
        double tau = tp_threshold(&p, k);
        CHECK(st->n_tokens <= 3);
        if (st->n_tokens > 1) {
            wide++;
            for (int j = 0; j < st->n_tokens; j++) CHECK(st->tokens[j].probability >= tau);
            for (int j = 1; j < st->n_tokens; j++) CHECK(st->tokens[j - 1].probability >= st->tokens[j].probability);
        }
    }
    CHECK(wide > 0);
    CHECK_INT_EQ(r->steps[r->n_steps - 1].n_tokens, 1); /* tau = 1 at the end */
    tempo_result_free(r);
    tempo_model_close(m);
}

typedef struct { int steps, prunes, last_step; bool ordered; int abort_at; } cb_state;

static int count_cb(tempo_event ev, const tempo_step *st, void *user) {
    cb_state *s = user;
    if (ev == TEMPO_EVENT_PRUNE) { s->prunes++; return 0; }
    if (st->step != s->last_step + 1) s->ordered = false;
    s->last_step = st->step;
    s->steps++;
    return s->abort_at >= 0 && st->step == s->abort_at;
}

BACKEND_TEST(tempo_gen_callback_reports_each_step) {
    tempo_model *m = open_stories();
    REQUIRE(m);
    tempo_gen_params c;
    cfg_init(&c, 30, 0.05, 4);
    c.use_retroactive_pruning = true;
    tempo_error err;
    cb_state s = { 0, 0, -1, true, -1 };
    tempo_result *r = tempo_generate(m, PROMPT, &c, count_cb, &s, NULL, &err);
    REQUIRE(r);
    CHECK_INT_EQ(s.steps, r->n_steps);
    CHECK(s.ordered);
    int sets_pruned = 0;
    for (int k = 0; k < r->n_steps; k++) sets_pruned += r->steps[k].was_pruned;
    CHECK(s.prunes >= sets_pruned);
    CHECK(sets_pruned > 0);
    tempo_result_free(r);
    cb_state ab = { 0, 0, -1, true, 4 };
    r = tempo_generate(m, PROMPT, &c, count_cb, &ab, NULL, &err);
    REQUIRE(r);
    CHECK_INT_EQ(r->n_steps, 5);
    CHECK_INT_EQ(r->stop_reason, TEMPO_STOP_INTERRUPTED);
    tempo_result_free(r);
    /* the cancel flag of tempo_generate stops it the same way */
    volatile int flag = 1;
    r = tempo_generate(m, PROMPT, &c, NULL, NULL, &flag, &err);
    REQUIRE(r);
    CHECK_INT_EQ(r->n_steps, 1);
    CHECK_INT_EQ(r->stop_reason, TEMPO_STOP_INTERRUPTED);
    tempo_result_free(r);
    tempo_model_close(m);
}

BACKEND_TEST(tempo_gen_json_of_a_run) {
    tempo_model *m = open_stories();
    REQUIRE(m);
    tempo_gen_params c;
    cfg_init(&c, 20, 0.05, 4);
    tempo_result *r = run(m, &c, NULL);
    REQUIRE(r);
    char *js = tempo_result_to_json(r, NULL);
    cJSON *d = cJSON_Parse(js);
    REQUIRE(d);
    cJSON *steps = cJSON_GetObjectItem(d, "steps");
    CHECK_INT_EQ(cJSON_GetArraySize(steps), r->n_steps);
    CHECK_INT_EQ(cJSON_GetObjectItem(cJSON_GetArrayItem(steps, 3), "position")->valueint, 5 + 3);
    CHECK(strcmp(cJSON_GetObjectItem(d, "generated_text")->valuestring, r->generated_text) == 0);
    CHECK(strcmp(cJSON_GetObjectItem(d, "stop_reason")->valuestring, "max_tokens") == 0);
    cJSON *met = cJSON_GetObjectItem(d, "metrics");
    CHECK_INT_EQ(cJSON_GetObjectItem(met, "steps")->valueint, 20);
    CHECK(cJSON_GetObjectItem(met, "peak_memory_bytes")->valuedouble > 1e6);
    int slots = 5;
    for (int k = 0; k < r->n_steps; k++) slots += r->steps[k].n_tokens;
    CHECK_INT_EQ(cJSON_GetObjectItem(met, "total_slots")->valueint, slots);
    cJSON_Delete(d);
    free(js);
    tempo_result_free(r);
    tempo_model_close(m);
}

/* ---------------------------------------------------------------- limits -- */
BACKEND_TEST(tempo_gen_context_and_cache_limits) {
    tempo_model *m = open_stories();
    REQUIRE(m);
    tempo_error e;
    const char *err = e.message;
    tempo_gen_params c;
    cfg_init(&c, 2044, 0.05, 4); /* 5 + 2044 > 2048 */
    tempo_result *r = tempo_generate(m, PROMPT, &c, NULL, NULL, NULL, &e);
    CHECK(r == NULL);
    CHECK(e.code == TEMPO_ERR_CACHE_LIMIT);
    CHECK(strstr(err, "5 tokens") && strstr(err, "2044") && strstr(err, "2048"));
    tempo_result_free(r);
    c.max_tokens = 10;
    c.max_parallel_tokens = 100; /* visible siblings must fit one forward chunk */
    c.allow_intraset_token_visibility = true;
    r = tempo_generate(m, PROMPT, &c, NULL, NULL, NULL, &e);
    CHECK(r == NULL);
    CHECK_MSG(strstr(err, "--allow-intraset-token-visibility") && strstr(err, "64") && strstr(err, "100"), "%s", err);
    c.allow_intraset_token_visibility = false;
    c.max_tokens = 2043; /* fits the context exactly */
    c.max_parallel_tokens = 1;
    c.max_cache_tokens = 30; /* but not the cache */
    r = tempo_generate(m, PROMPT, &c, NULL, NULL, NULL, &e);
    REQUIRE(r);
    CHECK_INT_EQ(r->stop_reason, TEMPO_STOP_CACHE_LIMIT);
    CHECK(r->stop_message && strstr(r->stop_message, "Cache token limit exceeded"));
    CHECK(r->n_steps >= 20 && r->n_steps <= 26);
    CHECK(strlen(r->clean_text) > strlen("Once upon a time"));
    tempo_result_free(r);
    tempo_model_close(m);
}

BACKEND_TEST(tempo_gen_forced_width) {
    tempo_model *m = open_stories();
    REQUIRE(m);
    tempo_gen_params c;
    /* exactly 8 members per step, as the benchmark forces them: threshold 0, width 8, end of
     * generation ignored throughout */
    cfg_init(&c, 10, 0.0, 8);
    c.min_steps = 10;
    tempo_session_stats st;
    run_opts o = { .stats = &st };
    tempo_result *r = run(m, &c, &o);
    REQUIRE(r);
    CHECK_INT_EQ(r->n_steps, 10);
    for (int k = 0; k < r->n_steps; k++) CHECK_INT_EQ(r->steps[k].n_tokens, 8);
    CHECK_INT_EQ(st.fed_steps, 9);
    CHECK_INT_EQ(st.fed_tokens, 72);
    tempo_result_free(r);
    tempo_model_close(m);
}

/* -------------------------------------------------------------- thinking -- */
BACKEND_TEST(tempo_gen_thinking_prompt) {
    tempo_model *m = open_stories();
    REQUIRE(m);
    tempo_gen_params c;
    cfg_init(&c, 3, 0.1, 2);
    c.enable_thinking = true;
    char err[TP_ERR_LEN];
    char *p = tp_session_prompt_text(m->tok, &c, "Hi", err);
    REQUIRE(p);
    CHECK(strcmp(p, "System: Enable deep thinking subroutine.\n\nUser: Hi\n\nAssistant:") == 0);
    free(p);
    run_opts hi = { .prompt = "Hi" };
    tempo_result *r = run(m, &c, &hi);
    REQUIRE(r);
    CHECK(strncmp(r->prompt, "System: Enable", 14) == 0);
    CHECK(strncmp(r->generated_text, r->prompt, strlen(r->prompt)) == 0);
    tempo_result_free(r);
    tempo_model_close(m);

    gguf_file *f = tp_gguf_open(SHARED_DIR "/tokenizer-tests/generated/ggml-vocab-llama3-from-tokenizer-json.gguf", err);
    REQUIRE(f);
    tokenizer *t = tp_tokenizer_from_gguf(f, err);
    REQUIRE(t);
    p = tp_session_prompt_text(t, &c, "Hi", err);
    REQUIRE(p);
    CHECK(strcmp(p, "<|start_header_id|>system<|end_header_id|>\n\nEnable deep thinking subroutine.<|eot_id|>"
                    "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\n") == 0);
    int32_t ids[64];
    int n = tp_tokenizer_encode(t, p, true, true, ids, 64);
    CHECK(n > 10 && ids[0] == 128000 && ids[1] == tp_tokenizer_find(t, "<|start_header_id|>"));
    CHECK(ids[n - 3] == tp_tokenizer_find(t, "<|end_header_id|>") || ids[n - 2] == tp_tokenizer_find(t, "<|end_header_id|>"));
    free(p);
    tp_tokenizer_free(t);
    tp_gguf_close(f);
}

/* ------------------------------------------------------ end of generation -- */
/* stories260K never predicts its EOS, so " there" (383, greedy step 1) plays one. */
static bool has_member(const tempo_result *r, int id) {
    for (int k = 0; k < r->n_steps; k++)
        for (int j = 0; j < r->steps[k].n_tokens; j++)
            if (r->steps[k].tokens[j].token_id == id) return true;
    return false;
}

BACKEND_TEST(tempo_gen_end_of_generation_and_min_steps) {
    tempo_model *m = open_stories();
    REQUIRE(m);
    tempo_gen_params c;
    cfg_init(&c, 30, 0.01, 1);
    c.stop_token_ids[0] = 383;
    c.n_stop_token_ids = 1;
    tempo_result *r = run(m, &c, NULL);
    REQUIRE(r);
    CHECK_INT_EQ(r->stop_reason, TEMPO_STOP_EOS); /* argmax at step 1 is the EOG: nothing appended */
    CHECK_INT_EQ(r->n_steps, 1);
    CHECK_INT_EQ(r->steps[0].tokens[0].token_id, 432);
    CHECK(strcmp(r->clean_text, "Once upon a time,") == 0);
    tempo_result_free(r);

    c.min_steps = 2; /* step 1 ignores it: the EOG is removed and the next best taken */
    r = run(m, &c, NULL);
    REQUIRE(r);
    CHECK(r->n_steps >= 2);
    CHECK(!has_member(r, 383));
    if (r->stop_reason == TEMPO_STOP_EOS) CHECK(r->n_steps >= 2);
    tempo_result_free(r);

    c.min_steps = 30; /* wide sets: the EOG is never a member, even when it passes the threshold */
    c.max_parallel_tokens = 6;
    r = run(m, &c, NULL);
    REQUIRE(r);
    CHECK_INT_EQ(r->n_steps, 30);
    CHECK_INT_EQ(r->stop_reason, TEMPO_STOP_MAX_TOKENS);
    CHECK(!has_member(r, 383));
    CHECK(r->parallel_steps > 5);
    tempo_result_free(r);

    c.min_steps = 0; /* a wide run stops too when the EOG is the argmax */
    r = run(m, &c, NULL);
    REQUIRE(r);
    CHECK_INT_EQ(r->stop_reason, TEMPO_STOP_EOS);
    CHECK(!has_member(r, 383));
    tempo_result_free(r);
    tempo_model_close(m);
}

/* With lazy reclaiming, dead slots pile up until the budget needs their room and the session
 * compacts them then; the sets must be those of the eagerly compacting run. */
typedef struct { int prev_n, shrunk; } shrink_watch;

static void watch_shrink(void *user, int step, int n_before, const bool *alive, const int *slot_step, int n_q,
                         int stride, const float *attn) {
    shrink_watch *w = user;
    if (n_before < w->prev_n) w->shrunk++;
    w->prev_n = n_before;
}

BACKEND_TEST(tempo_gen_follows_compaction_by_the_budget) {
    tempo_model *m = open_stories();
    REQUIRE(m);
    tempo_gen_params c;
    cfg_init(&c, 60, 0.05, 4);
    c.use_retroactive_pruning = true;
    c.max_cache_tokens = 90;
    shrink_watch w = { 0, 0 };
    run_opts lazy = { .reclaim = TP_RECLAIM_WHEN_NEEDED, .watch = watch_shrink, .user = &w };
    tempo_result *a = run(m, &c, NULL), *b = run(m, &c, &lazy);
    REQUIRE(a && b);
    CHECK(w.shrunk > 0);
    CHECK(count_pruned(a) > 0);
    check_same_sets(a, b, 1e-5);
    tempo_result_free(a);
    tempo_result_free(b);
    tempo_model_close(m);
}
