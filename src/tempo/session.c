/* session.c: one TEMPO generation (design/tempo-semantics.md) and standard mode.
 *
 * Life of a session:
 *   tempo_session_new       validate the parameters; nothing large is allocated
 *   tempo_session_prefill   tokenize, size the run (budget: width W, cache capacity), allocate
 *                           everything the run needs, feed the prompt causally: D_0
 *   tempo_session_step      (1) feed the newest set S_{k-1} in ONE forward at position P + k - 1,
 *                           (2) mix its members' distributions into D_k, (3) prune earlier sets
 *                           from that forward's attention, (4) select S_k from D_k and record it.
 *                           S_k is fed by the next call, so a caller may still replace it
 *                           (tempo_session_choose) and the last step's set is never fed.
 *
 * Bookkeeping. Every slot ever fed is recorded in feed order ("fed" arrays) with its step and
 * the pruning pass that killed it, so that --disable-kv-cache can rebuild the cache each step
 * with the exact visibility the cached path had ("a slot is visible to a query only if it was
 * alive when that query was fed"). In the cached path each member remembers its KV slot;
 * compaction happens only here (session_compact), which renumbers the slots it moves.
 *
 * Every buffer is allocated at prefill; a step allocates nothing but, now and then, a chunk for
 * the members' texts.
 */
#include "tempo/session.h"

#include <limits.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/chat.h"
#include "core/common.h"
#include "core/log.h"
#include "memory/breakdown.h"
#include "memory/budget.h"
#include "memory/memory.h"
#include "gpu/backend.h"
#include "output/text.h"
#include "tempo/mcts.h"
#include "tempo/prune.h"
#include "tempo/record.h"
#include "tempo/sample.h"
#include "tempo/select.h"
#include "tokenizer/tokenizer.h"

#define REBUILD_CHUNK 64 /* rows per forward when --disable-kv-cache recomputes old slots */

typedef enum { S_NEW = 0, S_RUNNING, S_DONE, S_FAILED, S_PROMPT_READY } session_state;
/* S_PROMPT_READY: set up by prefill, the prompt not fed yet (only inside tempo_session_prefill_batch) */

struct tempo_session {
    tp_model *m;
    tp_tokenizer *tok;
    tempo_gen_params p;
    atomic_int cancel;
    session_state state;
    tp_reclaim reclaim;

    int V, L, P, T;
    int W;                  /* members per step the buffers hold (the budget's width) */
    tp_visibility vis;
    bool nocache, pruning, standard;

    tp_budget *budget;
    tp_kv *kv;
    tp_compute *compute;
    tp_backend *be;         /* on a GPU: the device's KV rows and buffers (gpu/backend.h); NULL: the CPU */
    tp_sampler *sampler;

    /* the record */
    tp_record rec;
    char *prompt_text;
    bool pending;           /* the newest step's set is recorded but not fed */
    int granted;            /* slots the budget granted for the pending set */
    tempo_stop_reason why;
    char msg[TP_ERR_LEN];

    /* every slot ever fed, in feed order */
    int F;
    int32_t *fed_tok, *fed_pos, *fed_step, *fed_dead; /* fed_dead: pass that pruned it, INT_MAX = alive */
    /* members: global index g = step_off[k] + j */
    int *step_off, *slot_of, *fed_of;
    int *multi, n_multi;    /* fed steps with >= 2 alive members: pruning candidates */

    /* buffers */
    float *D, *logits, *zraw, *attn, *lambda;
    float *mixw;            /* [W] the members' mixture weights, for a backend that mixes on the device */
    uint8_t *mask, *is_eog;
    int32_t *ids, *feed_pos, *hist;
    float *probs, *score, *mprob;
    int32_t *mid;
    bool *malive, *mprune;
    int *map;
    tempo_prune_event *events;
    int n_events, max_events;
    tp_prune_rule rule;
    tp_threshold_params thr;
    /* --memory-policy prune: pruning passes score every step; their decisions apply with
     * --use-retroactive-pruning, and for every run once usage reaches the warning level */
    bool mem_prune, pressure;
    int last_pass;          /* the step whose feed ran the newest pruning pass; -1 before any */
    tempo_layer_memory *mem_layers; /* [L]: the memory breakdown's rows */

    /* the feed in flight between step_begin and step_end */
    tp_batch batch;
    tp_batch prompt_batch;       /* the prompt's feed, between prefill's set-up and its forward */
    bool defer_prompt_forward;   /* tempo_session_prefill_batch: stop before the prompt's forward */
    bool feeding, fed_already, want_attn;
    bool dev_mix;                /* the backend computes D on the device (every layer there; TEMPO mode) */
    bool mixed;                  /* the feed in flight leaves D_k in D itself */
    bool dist_ready, dist_finite; /* step_distribution ran for the feed in flight; its verdict */
    int picked;                  /* standard sampling: the next token, drawn by step_distribution (-1: not yet) */
    bool multi_ready;            /* the compute context has its batch logits buffer */
    int attn_rows, attn_stride;  /* of the last forward's summary */

    /* --use-mcts: the search, and the candidates and statistics of the newest step's search */
    tp_mcts *mcts;
    int32_t *mcts_ids;
    float *mcts_probs;
    tp_mcts_stat *mcts_stats;
    int n_mcts, mcts_committed;

    /* stats */
    int forward_calls, fed_steps, fed_tokens;
    double prefill_s, steps_s, t_start;
};

/* ------------------------------------------------------------------ errors -- */

static void set_err(tempo_error *err, tempo_status code, const char *msg) {
    if (!err) return;
    err->code = code;
    snprintf(err->message, sizeof err->message, "%s", msg ? msg : "");
}

static void log_memory_layers(const tp_session *s, const char *label);

/* End the run: what was produced stays in the record. */
static void stop(tp_session *s, tempo_stop_reason why, const char *msg) {
    if (s->budget && s->state == S_RUNNING) {
        tp_budget_log(s->budget, "End", s->kv);
        log_memory_layers(s, "End");
    }
    s->why = why;
    snprintf(s->msg, sizeof s->msg, "%s", msg ? msg : "");
    s->state = S_DONE;
    s->pending = false;
}

/* The status code a stop reason maps to, for calls that fail because of it. */
static tempo_status status_of(tempo_stop_reason why) {
    switch (why) {
    case TEMPO_STOP_MEMORY_LIMIT: return TEMPO_ERR_MEMORY_LIMIT;
    case TEMPO_STOP_CACHE_LIMIT: return TEMPO_ERR_CACHE_LIMIT;
    default: return TEMPO_ERR_INTERNAL;
    }
}

/* ---------------------------------------------------------------- creation -- */

tempo_session *tempo_session_new(tempo_model *m, const tempo_gen_params *p, tempo_error *err) {
    set_err(err, TEMPO_OK, "");
    if (!m) { set_err(err, TEMPO_ERR_ARG, "no model"); return NULL; }
    if (!m->tok) { set_err(err, TEMPO_ERR_FORMAT, "the model has no tokenizer"); return NULL; }
    tempo_gen_params defaults;
    if (!p) { tempo_gen_params_init(&defaults); p = &defaults; }
    if (tempo_gen_params_validate(p, err)) return NULL;
    tp_session *s = calloc(1, sizeof *s);
    if (!s) { set_err(err, TEMPO_ERR_NOMEM, "out of memory creating a session"); return NULL; }
    s->m = m;
    s->tok = m->tok;
    s->p = *p;
    atomic_init(&s->cancel, 0);
    s->V = m->hp.n_vocab;
    s->L = m->hp.n_layers;
    s->T = p->max_tokens;
    s->standard = p->default_mode;
    s->picked = -1;
    s->nocache = p->disable_kv_cache;
    s->mem_prune = p->memory_policy == TEMPO_MEMORY_PRUNE && !s->standard;
    s->pruning = (p->use_retroactive_pruning || s->mem_prune) && !s->standard;
    s->last_pass = -1;
    s->vis = p->allow_intraset_token_visibility ? TP_VIS_SET : TP_VIS_ISOLATED;
    s->why = TEMPO_STOP_NONE;
    return s;
}

static void free_buffers(tp_session *s) {
    free(s->fed_tok); free(s->fed_pos); free(s->fed_step); free(s->fed_dead);
    free(s->step_off); free(s->slot_of); free(s->fed_of); free(s->multi);
    free(s->D); free(s->logits); free(s->zraw); free(s->attn); free(s->lambda); free(s->mixw);
    free(s->mask); free(s->is_eog);
    free(s->ids); free(s->feed_pos); free(s->hist);
    free(s->probs); free(s->score); free(s->mprob); free(s->mid); free(s->malive); free(s->mprune);
    free(s->map); free(s->events); free(s->mem_layers);
    free(s->mcts_ids); free(s->mcts_probs); free(s->mcts_stats);
    tp_mcts_free(s->mcts);
    tp_sampler_free(s->sampler);
    tp_backend_free(s->be); /* before the cache it was made for, and before the budget gives its share back */
    tp_compute_free(s->compute);
    tp_kv_free(s->kv);
    tp_budget_free(s->budget);
}

void tempo_session_free(tempo_session *s) {
    if (!s) return;
    free_buffers(s);
    tp_record_free(&s->rec);
    free(s->prompt_text);
    free(s);
}

void tp_session_set_reclaim(tp_session *s, tp_reclaim r) { s->reclaim = r; }
const tp_mcts *tp_session_mcts(const tp_session *s) { return s->mcts; }
const tp_kv *tp_session_kv(const tp_session *s) { return s->kv; }
const float *tp_session_last_attention(const tp_session *s, int *n_q, int *stride) {
    if (n_q) *n_q = s->attn_rows;
    if (stride) *stride = s->attn_stride;
    return s->attn_rows ? s->attn : NULL;
}
void tempo_session_cancel(tempo_session *s) {
    if (s) atomic_store(&s->cancel, 1);
}

/* ---------------------------------------------------------------- prompt -- */

char *tp_session_prompt_text(const tp_tokenizer *t, const tempo_gen_params *p, const char *prompt, char *err) {
    if (!prompt) prompt = "";
    if (!p->enable_thinking) {
        char *d = strdup(prompt);
        if (!d) tp_fail(err, "out of memory");
        return d;
    }
    /* The model's chat format (or the one named by chat_template) around the thinking system
     * message and the prompt, with the assistant's header to continue from. */
    return tp_chat_thinking_prompt(t, p->chat_template[0] ? p->chat_template : NULL, prompt, err);
}

int tempo_session_prefill(tempo_session *s, const char *prompt, tempo_error *err) {
    set_err(err, TEMPO_OK, "");
    if (!s || s->state != S_NEW || s->prompt_text) {
        set_err(err, TEMPO_ERR_STATE, "the session was already prefilled (a session runs one generation)");
        return -1;
    }
    char msg[TP_ERR_LEN] = "";
    char *text = tp_session_prompt_text(s->tok, &s->p, prompt, msg);
    if (!text) { set_err(err, strstr(msg, "out of memory") ? TEMPO_ERR_NOMEM : TEMPO_ERR_ARG, msg); return -1; }
    size_t len = strlen(text);
    if (len > (size_t)INT_MAX / 2) {
        free(text);
        set_err(err, TEMPO_ERR_ARG, "the prompt is too long");
        return -1;
    }
    int cap = (int)len + 8;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)cap);
    int n = ids ? tp_tokenizer_encode(s->tok, text, tp_tokenizer_adds_bos(s->tok), true, ids, cap) : -1;
    if (n > cap) {
        int32_t *more = realloc(ids, sizeof(int32_t) * (size_t)n);
        if (more) { ids = more; cap = n; n = tp_tokenizer_encode(s->tok, text, tp_tokenizer_adds_bos(s->tok), true, ids, cap); }
        else n = TP_TOK_NOMEM;
    }
    int rc;
    if (!ids || n == TP_TOK_NOMEM) { set_err(err, TEMPO_ERR_NOMEM, "out of memory tokenizing the prompt"); rc = -1; }
    else if (n < 0) { set_err(err, TEMPO_ERR_ARG, "could not tokenize the prompt"); rc = -1; }
    else if (n == 0) { set_err(err, TEMPO_ERR_ARG, "the prompt is empty and the tokenizer adds no BOS token"); rc = -1; }
    else {
        s->prompt_text = text;
        text = NULL;
        rc = tempo_session_prefill_tokens(s, ids, n, err);
        if (rc) { free(s->prompt_text); s->prompt_text = NULL; }
    }
    free(text);
    free(ids);
    return rc;
}

static size_t at_least_1(size_t n) { return n ? n : 1; }

/* Every buffer of the run, sized once (design: no allocation per step). With count, nothing is
 * allocated: the bytes they will take are added to *total, so they can be reserved against the
 * memory limit first. */
static int run_buffers(tp_session *s, int width, int capacity, bool count, size_t *total, char *msg) {
    size_t V = (size_t)s->V, W = (size_t)width, T = (size_t)s->T, cap = (size_t)capacity;
    size_t maxfed = (size_t)s->P + T * W, maxmem = T * W;
    bool ok = true;
#define BUF(ptr, n)                                                              \
    do {                                                                         \
        size_t n_ = at_least_1(n);                                               \
        if (count) *total += n_ * sizeof *(ptr);                                 \
        else { (ptr) = calloc(n_, sizeof *(ptr)); ok &= (ptr) != NULL; }         \
    } while (0)
    BUF(s->fed_tok, maxfed);
    BUF(s->fed_pos, maxfed);
    BUF(s->fed_step, maxfed);
    BUF(s->fed_dead, maxfed);
    BUF(s->step_off, T);
    BUF(s->slot_of, maxmem);
    BUF(s->fed_of, maxmem);
    BUF(s->multi, T);
    BUF(s->D, V);
    BUF(s->mixw, W);
    BUF(s->logits, V * W);
    BUF(s->zraw, V);
    BUF(s->is_eog, V);
    BUF(s->ids, W);
    BUF(s->feed_pos, maxfed > W ? maxfed : W);
    BUF(s->probs, W);
    BUF(s->score, W);
    BUF(s->mprob, W);
    BUF(s->mid, W);
    BUF(s->malive, W);
    BUF(s->mprune, W);
    BUF(s->map, cap);
    BUF(s->mem_layers, (size_t)s->L);
    if (s->pruning) {
        BUF(s->attn, W * cap);
        BUF(s->lambda, (size_t)s->L);
        s->max_events = (int)(maxmem < (size_t)INT_MAX ? maxmem : (size_t)INT_MAX);
        BUF(s->events, (size_t)s->max_events);
    }
    if (s->nocache) BUF(s->mask, (W > REBUILD_CHUNK ? W : REBUILD_CHUNK) * cap);
    if (s->standard) BUF(s->hist, (size_t)s->P + T);
    if (s->p.use_mcts) {
        BUF(s->mcts_ids, W);
        BUF(s->mcts_probs, W);
        BUF(s->mcts_stats, W);
    }
#undef BUF
    if (count) {
        /* the record (steps, members, MCTS candidates), the cache's slot table, the sampler's scratch */
        *total += T * sizeof(tempo_step) + maxmem * sizeof(tempo_token) + cap * sizeof(tp_slot) +
                  (s->standard ? V * (sizeof(int32_t) + sizeof(float) + 1) : 0) +
                  (s->p.use_mcts ? maxmem * sizeof(tempo_mcts_candidate) : 0);
        return 0;
    }
    if (!ok)
        return tp_fail(msg, "out of memory allocating the working buffers for %d parallel tokens over a vocabulary of %d "
                            "and %d cache slots (lower --max-parallel-tokens or --max-cache-tokens)",
                       s->W, s->V, s->kv->capacity);
    if (tp_record_init(&s->rec, s->T, s->T * s->W, msg)) return -1;
    if (s->p.use_mcts && tp_record_init_mcts(&s->rec, s->T * s->W, msg)) return -1;
    return 0;
}

static int forward(tp_session *s, const tp_batch *b, char *msg) {
    s->forward_calls++;
    return tp_backend_forward(s->be, s->m, s->compute, s->kv, b, msg); /* no backend: tp_forward */
}

static bool all_finite(const float *x, int n) {
    /* NaN or inf anywhere makes its chain NaN; 8 chains, not one (a chain of 128K dependent
     * additions is latency-bound: ~0.1 ms a check, twice a token per session) */
    float acc[8] = { 0 };
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += x[i + j] * 0.0f;
    for (; i < n; i++) acc[0] += x[i] * 0.0f;
    float all = 0.0f;
    for (int j = 0; j < 8; j++) all += acc[j];
    return all == 0.0f;
}

/* ------------------------------------------------------------------ MCTS -- */
/* --use-mcts (src/tempo/mcts.c): the session lends the search its cache through three calls, so
 * the session stays the only code that changes it: feed one token with an explicit visibility
 * row, read its logits, and drop slots back to a checkpoint. */

static int mcts_feed(void *ctx, int32_t token, int32_t pos, int32_t step, const uint8_t *mask, float *logits,
                     char *err) {
    tp_session *s = ctx;
    tp_batch b = { .n = 1, .tokens = &token, .pos = &pos, .step = step, .vis = TP_VIS_ISOLATED, .mask = mask,
                   .logits = logits };
    return forward(s, &b, err);
}

static void mcts_truncate(void *ctx, int n) { tp_kv_truncate(((tp_session *)ctx)->kv, n); }

static int mcts_new(tp_session *s, char *msg) {
    tp_mcts_params mp = {
        .simulations = s->p.mcts_simulations, .depth = s->p.mcts_depth, .c_puct = s->p.mcts_c_puct,
        .max_width = s->W, .max_slots = s->kv->capacity, .n_vocab = s->V, .n_prompt = s->P,
        .max_tokens = s->T, .min_steps = s->p.min_steps, .thr = s->thr, .is_eog = s->is_eog,
        .rollout = { s->p.temperature, s->p.top_k, s->p.top_p, 1.0, s->p.seed },
    };
    if (tp_budget_reserve_more(s->budget, tp_mcts_bytes(&mp), "the MCTS search", msg)) return -1;
    s->mcts = tp_mcts_new(&mp, msg);
    return s->mcts ? 0 : -1;
}

/* Search among step k's set (s->ids/s->probs, n members) and leave the committed member alone in
 * s->ids[0]/s->probs[0]; the candidates and their statistics are kept for the step's record. */
static int mcts_step(tp_session *s, int k, int n, char *msg) {
    tp_mcts_env env = { s, mcts_feed, mcts_truncate, s->kv };
    int width = tp_budget_current_width(s->budget) < s->W ? tp_budget_current_width(s->budget) : s->W;
    int best = tp_mcts_search(s->mcts, &env, k, s->ids, s->probs, n, width, s->mcts_stats, msg);
    if (best < 0) return -1;
    memcpy(s->mcts_ids, s->ids, sizeof(int32_t) * (size_t)n);
    memcpy(s->mcts_probs, s->probs, sizeof(float) * (size_t)n);
    s->n_mcts = n;
    s->mcts_committed = best;
    s->ids[0] = s->mcts_ids[best];
    s->probs[0] = s->mcts_probs[best];
    return 0;
}

/* ------------------------------------------------------------------- GPU -- */
/* A session of a model on a GPU (gpu/backend.h): its backend holds the device's KV rows for the
 * cache's whole capacity (they never move: compaction and truncation renumber slots only), the
 * step's scratch and the staging buffers. They are reserved in the budget before anything is
 * allocated, and checked against the device's free memory; with --memory-policy adapt a session
 * that does not fit keeps fewer layers on the device (their KV rows then live in the host cache,
 * counted step by step like a CPU run's), down to none. */
static int gpu_attach(tp_session *s, tempo_status *code, char *msg) {
    tp_model *m = s->m;
    const tp_device *d = m->dev;
    bool adapt = s->p.memory_policy == TEMPO_MEMORY_ADAPT;
    int cap = s->kv->capacity;
    tp_kv_type kt = s->kv->type;
    char a[32], b[32], c[32];
    *code = TEMPO_ERR_MEMORY_LIMIT;
    for (int layers = d->layers; layers > 0; layers--) {
        size_t dev = 0, need = tp_backend_bytes_for(d, m, layers, cap, s->pruning, kt, &dev);
        size_t free_b = tp_device_free_bytes(d), left = 0;
        bool on_device = dev <= free_b;
        if (on_device && tp_budget_set_device(s->budget, layers, need, &left) == 0) {
            s->be = tp_backend_new(m->dev, m, s->kv, layers, s->pruning, msg);
            if (!s->be) return -1;
            size_t got = tp_backend_bytes(s->be); /* what Vulkan allocated: the share follows it */
            if (got != need && tp_budget_set_device(s->budget, layers, got, &left))
                return tp_fail(msg, "Cache memory limit would be exceeded: %s > %s (the GPU buffers as allocated, "
                                    "left under the critical level, 95%% of --max-memory-gb %s)",
                               tp_fmt_gb((double)got, a, sizeof a), tp_fmt_gb((double)left, b, sizeof b),
                               tp_fmt_gb((double)tp_memory_limit_bytes(m->mon), c, sizeof c));
            if (layers < d->layers)
                tp_log(TEMPO_LOG_INFO,
                       "--memory-policy adapt: this session keeps %d of the %d offloaded layers on %s (the KV rows "
                       "of %d slots for more do not fit); the others run on the CPU", layers, d->layers, d->name, cap);
            s->dev_mix = tp_backend_device_mixture(s->be) && !s->standard;
            return 0;
        }
        if (adapt) continue;
        if (!on_device)
            return tp_fail(msg,
                           "Cache memory limit would be exceeded: %s > %s free on Vulkan device %s (%s in all) for the "
                           "GPU KV cache of %d slots x %d layers and the step buffers. Lower --max-cache-tokens, "
                           "--max-tokens or --max-parallel-tokens, use --kv-cache-type f16, lower --gpu-layers, or use "
                           "--memory-policy adapt to offload fewer layers.",
                           tp_fmt_gb((double)dev, a, sizeof a), tp_fmt_gb((double)free_b, b, sizeof b), d->name,
                           tp_fmt_gb((double)tp_device_total_bytes(d), c, sizeof c), cap, layers);
        return tp_fail(msg,
                       "Cache memory limit would be exceeded: %s > %s (left under the critical level, 95%% of "
                       "--max-memory-gb %s, for the GPU KV cache of %d slots x %d layers and the step buffers). Raise "
                       "--max-memory-gb, lower --max-cache-tokens, --max-tokens or --max-parallel-tokens, use "
                       "--kv-cache-type f16, or use --memory-policy adapt to offload fewer layers.",
                       tp_fmt_gb((double)need, a, sizeof a), tp_fmt_gb((double)left, b, sizeof b),
                       tp_fmt_gb((double)tp_memory_limit_bytes(m->mon), c, sizeof c), cap, layers);
    }
    /* adapt, and not one layer fits: this session runs on the CPU, its cache holding every layer */
    size_t left = 0;
    if (tp_budget_set_device(s->budget, 0, 0, &left))
        return tp_fail(msg, "Memory limit: the prompt's KV slots on the CPU need more than the %s left under the "
                            "critical level (95%% of --max-memory-gb %s). Raise --max-memory-gb.",
                       tp_fmt_gb((double)left, a, sizeof a), tp_fmt_gb((double)tp_memory_limit_bytes(m->mon), b, sizeof b));
    tp_log(TEMPO_LOG_INFO, "--memory-policy adapt: the KV rows of %d slots do not fit %s; this session runs on the CPU",
           cap, d->name);
    return 0;
}

static int prefill_finish(tp_session *s, tempo_error *err);
static int prefill_fail(tp_session *s, const char *msg, tempo_error *err);
static int prefill_fail_code(tp_session *s, tempo_status code, const char *why, tempo_error *err);

int tempo_session_prefill_tokens(tempo_session *s, const int32_t *prompt, int P, tempo_error *err) {
    char msg[TP_ERR_LEN] = "";
    set_err(err, TEMPO_OK, "");
    if (!s || s->state != S_NEW || s->budget) {
        set_err(err, TEMPO_ERR_STATE, "the session was already prefilled (a session runs one generation)");
        return -1;
    }
    tp_model *m = s->m;
    int n_ctx = m->hp.n_ctx;
    if (P <= 0) { set_err(err, TEMPO_ERR_ARG, "the prompt has no tokens"); return -1; }
    for (int i = 0; i < P; i++)
        if (prompt[i] < 0 || prompt[i] >= s->V) {
            snprintf(msg, sizeof msg, "prompt token %d is %d, outside the vocabulary (0..%d)", i, prompt[i], s->V - 1);
            set_err(err, TEMPO_ERR_ARG, msg);
            return -1;
        }
    if (P > n_ctx) {
        snprintf(msg, sizeof msg, "the prompt is %d tokens, longer than the model's context of %d tokens", P, n_ctx);
        set_err(err, TEMPO_ERR_CACHE_LIMIT, msg);
        return -1;
    }
    if ((long)P + s->T > n_ctx) {
        snprintf(msg, sizeof msg,
                 "the prompt (%d tokens) + --max-tokens (%d) = %ld positions, past the model's context of %d tokens", P,
                 s->T, (long)P + s->T, n_ctx);
        set_err(err, TEMPO_ERR_CACHE_LIMIT, msg);
        return -1;
    }
    if (s->vis == TP_VIS_SET && s->p.max_parallel_tokens > TP_MATMUL_MAX_BATCH) {
        /* Visible siblings must share one chunk of the forward pass. */
        snprintf(msg, sizeof msg,
                 "--allow-intraset-token-visibility allows at most %d tokens per step, but --max-parallel-tokens is %d",
                 TP_MATMUL_MAX_BATCH, s->p.max_parallel_tokens);
        set_err(err, TEMPO_ERR_ARG, msg);
        return -1;
    }
    s->P = P;

    /* Size the run and reserve it against the model's memory budget. */
    /* What the run's buffers cost: a fixed part and a part per member of the width, at the
     * largest capacity the cache could get, so the automatic width counts them. */
    int cap_max = m->hp.n_ctx;
    if (s->p.max_cache_tokens > 0 && s->p.max_cache_tokens < cap_max) cap_max = s->p.max_cache_tokens;
    {   /* never more than the run can use at the widest automatic width (a file may claim any context) */
        long widest = (long)P + (long)(s->T > 1 ? s->T - 1 : 0) * TP_MEM_AUTO_MAX_PARALLEL +
                      (s->p.use_mcts ? tp_mcts_scratch_slots(s->p.mcts_simulations, s->p.mcts_depth, s->T) : 0);
        if (widest < cap_max) cap_max = (int)widest;
    }
    size_t run1 = 0, run2 = 0;
    run_buffers(s, 1, cap_max, true, &run1, msg);
    run_buffers(s, 2, cap_max, true, &run2, msg);
    tp_budget_params bp = {
        .run_bytes_fixed = 2 * run1 - run2, .run_bytes_per_width = run2 - run1,
        .n_prompt = P, .max_tokens = s->T, .max_parallel_tokens = s->p.max_parallel_tokens,
        .max_cache_tokens = s->p.max_cache_tokens, .default_mode = s->standard,
        .adapt = s->p.memory_policy == TEMPO_MEMORY_ADAPT, .debug = s->p.debug_mode,
        .kv_type = (tp_kv_type)m->params.kv_cache_type, .n_threads = m->n_threads,
        .max_width = s->vis == TP_VIS_SET ? TP_MATMUL_MAX_BATCH : 0,
        .one_member = s->p.use_mcts,
        .scratch_slots = s->p.use_mcts ? tp_mcts_scratch_slots(s->p.mcts_simulations, s->p.mcts_depth, s->T) : 0,
        .prune = s->mem_prune, .offload = m->params.kv_offload && *m->params.kv_offload,
        /* a GPU model: its layers' KV rows on the device (gpu_attach settles how many) */
        .device_layers = m->dev ? m->dev->layers : 0,
    };
    if (m->dev) { /* the automatic width keeps the device's KV rows and buffers within its free memory */
        tp_kv_type kt = (tp_kv_type)m->params.kv_cache_type;
        size_t fixed = tp_backend_bytes_for(m->dev, m, m->dev->layers, 0, s->pruning, kt, NULL);
        size_t big = tp_backend_bytes_for(m->dev, m, m->dev->layers, 4096, s->pruning, kt, NULL);
        size_t free_b = tp_device_free_bytes(m->dev);
        bp.device_slot_bytes = (big - fixed) / 4096 + 1;
        bp.device_room = free_b > fixed ? free_b - fixed : 0;
    }
    tempo_status code = TEMPO_ERR_MEMORY_LIMIT;
    s->budget = tp_budget_new(m->mon, m, &bp, msg);
    if (!s->budget) {
        if (strstr(msg, "KV cache may hold only")) code = TEMPO_ERR_CACHE_LIMIT;
        goto fail;
    }
    tp_budget_log(s->budget, "After model load", NULL);
    s->W = s->standard ? 1 : tp_budget_max_parallel(s->budget);
    if (s->W < 1) s->W = 1;
    int cap = tp_budget_kv_max_slots(s->budget);
    /* Reserve the run's buffers before a byte of them is allocated. */
    size_t run_bytes = 0;
    run_buffers(s, s->W, cap, true, &run_bytes, msg);
    code = TEMPO_ERR_MEMORY_LIMIT;
    if (tp_budget_reserve_more(s->budget, run_bytes, "the session's buffers", msg)) goto fail;
    code = TEMPO_ERR_NOMEM;
    s->kv = tp_kv_new(s->L, m->hp.n_kv_heads * m->hp.head_dim, (tp_kv_type)m->params.kv_cache_type, cap,
                      tp_budget_kv_max_bytes(s->budget), msg);
    if (!s->kv) {
        if (strstr(msg, "q8_0")) code = TEMPO_ERR_ARG;
        goto fail;
    }
    if (bp.offload) { /* --kv-offload: the rows go to spill files (how many stay resident: below) */
        code = TEMPO_ERR_IO;
        if (tp_kv_offload(s->kv, m->params.kv_offload, msg)) goto fail;
        code = TEMPO_ERR_NOMEM;
    }
    s->compute = tp_compute_new(m, m->n_threads, TP_MATMUL_MAX_BATCH, cap, msg);
    if (!s->compute || run_buffers(s, s->W, cap, false, NULL, msg)) goto fail;
    if (m->dev && gpu_attach(s, &code, msg)) goto fail;
    if (s->standard) {
        tp_sampler_params sp = { s->p.temperature, s->p.top_k, s->p.top_p, s->p.repetition_penalty, s->p.seed };
        s->sampler = tp_sampler_new(&sp, s->V);
        if (!s->sampler) { tp_fail(msg, "out of memory allocating the sampler"); goto fail; }
        memcpy(s->hist, prompt, sizeof(int32_t) * (size_t)P);
    }
    int n_tok_vocab = tp_tokenizer_vocab_size(s->tok);
    for (int i = 0; i < s->V && i < n_tok_vocab; i++) s->is_eog[i] = tp_tokenizer_is_eog(s->tok, i);
    for (int i = 0; i < s->p.n_stop_token_ids; i++)
        if (s->p.stop_token_ids[i] >= 0 && s->p.stop_token_ids[i] < s->V) s->is_eog[s->p.stop_token_ids[i]] = 1;
    s->rule = (tp_prune_rule){ !s->p.no_relative_attention, s->p.relative_threshold, s->p.attention_threshold };
    s->thr = (tp_threshold_params){ s->p.selection_threshold, s->p.max_tokens, s->p.dynamic_threshold,
                                    s->p.final_threshold, s->p.use_relu, s->p.bezier_p1, s->p.bezier_p2,
                                    s->p.relu_activation_point };
    if (s->pruning) tp_prune_layer_weights(s->L, !s->p.no_multi_scale_attention, s->lambda);
    if (s->p.use_mcts && mcts_new(s, msg)) {
        code = strstr(msg, "Memory limit") ? TEMPO_ERR_MEMORY_LIMIT : TEMPO_ERR_NOMEM;
        goto fail;
    }
    if (bp.offload) { /* every buffer is reserved: what is left decides the resident slots */
        code = TEMPO_ERR_MEMORY_LIMIT;
        if (tp_budget_plan_offload(s->budget, msg)) goto fail;
        tp_kv_set_hot_slots(s->kv, tp_budget_kv_hot_slots(s->budget));
    }

    /* Prefill (section 1): the prompt at positions 0..P-1, causally. */
    s->t_start = tp_now();
    for (int i = 0; i < P; i++) {
        s->fed_tok[i] = prompt[i];
        s->fed_pos[i] = i;
        s->fed_step[i] = -1;
        s->fed_dead[i] = INT_MAX;
        s->feed_pos[i] = i;
    }
    s->F = P;
    int which = 0;
    code = TEMPO_ERR_CACHE_LIMIT;
    if (tp_kv_reserve(s->kv, P, &which, msg)) {
        if (which == 2) code = TEMPO_ERR_MEMORY_LIMIT;
        goto fail;
    }
    code = TEMPO_ERR_INTERNAL;
    s->prompt_batch = (tp_batch){ .n = P, .tokens = s->fed_tok, .pos = s->feed_pos, .step = -1,
                                  .vis = TP_VIS_CAUSAL, .logits = s->zraw, .logits_last_only = true };
    if (s->defer_prompt_forward) { /* tempo_session_prefill_batch feeds it with the others */
        s->state = S_PROMPT_READY;
        return 0;
    }
    if (forward(s, &s->prompt_batch, msg)) return prefill_fail(s, msg, err);
    return prefill_finish(s, err);

fail:
    return prefill_fail_code(s, code, msg, err);
}

/* After the prompt's forward: its distribution D_0, and the session runs. */
static int prefill_finish(tp_session *s, tempo_error *err) {
    if (!all_finite(s->zraw, s->V))
        return prefill_fail_code(s, TEMPO_ERR_NUMERIC,
                                 "non-finite logits after the prompt (the model produced NaN or infinite values)", err);
    memcpy(s->D, s->zraw, sizeof(float) * (size_t)s->V);
    tp_prob_softmax(s->D, s->V);
    s->prefill_s = tp_now() - s->t_start;
    s->state = S_RUNNING;
    tp_budget_log(s->budget, "After prefill", s->kv);
    log_memory_layers(s, "After prefill");
    return 0;
}

/* The prompt's forward failed. */
static int prefill_fail(tp_session *s, const char *msg, tempo_error *err) {
    /* the spill files' disk is full */
    return prefill_fail_code(s, strstr(msg, "--kv-offload") ? TEMPO_ERR_IO : TEMPO_ERR_INTERNAL, msg, err);
}

/* A failed prefill leaves a clean session in state S_FAILED with the message. */
static int prefill_fail_code(tp_session *s, tempo_status code, const char *why, tempo_error *err) {
    char msg[TP_ERR_LEN];
    snprintf(msg, sizeof msg, "%s", why);
    set_err(err, code, msg);
    free_buffers(s);
    tp_record_free(&s->rec);
    /* leave a clean NEW session behind (all pointers cleared) so free is safe */
    tp_model *mm = s->m;
    tp_tokenizer *tk = s->tok;
    tempo_gen_params gp = s->p;
    char *pt = s->prompt_text;
    memset(s, 0, sizeof *s);
    s->m = mm; s->tok = tk; s->p = gp; s->prompt_text = pt;
    s->state = S_FAILED;
    s->why = TEMPO_STOP_ERROR;
    snprintf(s->msg, sizeof s->msg, "%s", msg);
    return -1;
}

/* ------------------------------------------------------------ the KV cache -- */

/* Reclaim dead slots; members follow their rows. */
static void session_compact(tp_session *s) {
    int n_before = s->kv->n;
    tp_kv_compact(s->kv, s->map);
    for (int i = 0; i < s->rec.n_tokens; i++)
        if (s->slot_of[i] >= 0 && s->slot_of[i] < n_before) s->slot_of[i] = s->map[s->slot_of[i]];
}

/* Visibility of fed slot j to the query of fed slot i (design sections 3 and 6). */
static bool visible(const tp_session *s, int i, int j) {
    int si = s->fed_step[i], sj = s->fed_step[j];
    if (i == j) return true;
    if (si < 0) return sj < 0 && j < i;          /* prompt: causal */
    if (sj < 0) return true;                     /* prompt slots are never pruned */
    if (sj < si) return s->fed_dead[j] >= si;    /* alive when query i was fed */
    if (sj == si) return s->vis == TP_VIS_SET;   /* siblings */
    return false;
}

/* --disable-kv-cache: clear the cache, recompute every earlier slot with the visibility it had,
 * then feed the new set (its n members are the last n fed). Columns are fed indices. */
static int feed_rebuild(tp_session *s, int k, int n, bool want_attn, char *msg) {
    int old = s->F - n;
    tp_kv_clear(s->kv);
    for (int start = 0, c; start < old; start += c) {
        /* A chunk never splits a set: with visible siblings, a member must see siblings that
         * come after it in the set. Prompt tokens split anywhere. */
        c = 0;
        while (start + c < old) {
            int e = start + c, grp = 1;
            if (s->fed_step[e] >= 0)
                while (e + grp < old && s->fed_step[e + grp] == s->fed_step[e]) grp++;
            if (c > 0 && c + grp > REBUILD_CHUNK) break;
            c += grp;
            if (c >= REBUILD_CHUNK) break;
        }
        int cols = start + c;
        for (int i = 0; i < c; i++)
            for (int j = 0; j < cols; j++) s->mask[(size_t)i * cols + j] = visible(s, start + i, j);
        tp_batch b = { .n = c, .tokens = s->fed_tok + start, .pos = s->fed_pos + start,
                       .step = s->fed_step[start], .vis = TP_VIS_CAUSAL, .mask = s->mask };
        if (forward(s, &b, msg)) return -1;
        for (int x = start; x < cols; x++) s->kv->slots[x].step = s->fed_step[x];
    }
    int cols = s->F;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < cols; j++) s->mask[(size_t)i * cols + j] = visible(s, old + i, j);
    tp_batch b = { .n = n, .tokens = s->fed_tok + old, .pos = s->fed_pos + old, .step = k,
                   .vis = s->vis, .mask = s->mask, .logits = s->logits,
                   .layer_weights = want_attn ? s->lambda : NULL, .attn = want_attn ? s->attn : NULL };
    return forward(s, &b, msg);
}

/* Column of member g in the last forward's attention summary. */
static int column_of(const tp_session *s, int g) { return s->nocache ? s->fed_of[g] : s->slot_of[g]; }

/* Member mb of step j is pruned by the pass after step `pass` was fed: no later query sees it. */
static void prune_member(tp_session *s, int j, int mb, int pass) {
    tempo_step *st = &s->rec.steps[j];
    int g = s->step_off[j] + mb;
    st->tokens[mb].pruned = true;
    st->tokens[mb].pruned_at_step = pass;
    st->was_pruned = true;
    s->fed_dead[s->fed_of[g]] = pass;
    if (!s->nocache) {
        tp_kv_kill(s->kv, s->slot_of[g]);
        s->slot_of[g] = -1;
    }
}

/* Retroactive pruning after the forward of S_k (design section 6). Records one event per member
 * scored (the events buffer holds every member of the run, so it never overflows). */
static void prune_pass(tp_session *s, int k, int n_q, int stride) {
    /* --memory-policy prune scores every pass; it prunes once usage reaches the warning level */
    bool apply = s->p.use_retroactive_pruning || s->pressure;
    bool any = false;
    int kept = 0;
    s->last_pass = k;
    for (int i = 0; i < s->n_multi; i++) {
        int j = s->multi[i], off = s->step_off[j], alive = 0;
        tempo_step *st = &s->rec.steps[j];
        for (int mb = 0; mb < st->n_tokens; mb++) {
            tempo_token *t = &st->tokens[mb];
            s->malive[mb] = !t->pruned;
            s->mprob[mb] = t->probability;
            s->mid[mb] = t->token_id;
            s->score[mb] = t->pruned ? 0.0f : tp_prune_score(s->attn, stride, s->probs, n_q, column_of(s, off + mb));
        }
        tp_prune_decide(&s->rule, st->n_tokens, s->score, s->mprob, s->mid, s->malive, s->mprune);
        if (!apply) memset(s->mprune, 0, sizeof *s->mprune * (size_t)st->n_tokens); /* scores only */
        for (int mb = 0; mb < st->n_tokens; mb++) {
            tempo_token *t = &st->tokens[mb];
            if (t->pruned) continue;
            t->prune_score = s->score[mb];
            t->scored_at_step = k;
            if (s->mprune[mb]) {
                prune_member(s, j, mb, k);
                any = true;
            }
            if (s->n_events < s->max_events)
                s->events[s->n_events++] = (tempo_prune_event){ j, mb, k, t->token_id, s->score[mb], s->mprune[mb] };
            alive += !t->pruned;
        }
        if (alive >= 2) s->multi[kept++] = j;
    }
    s->n_multi = kept;
    /* Reclaim the dead slots now; compaction keeps every live row as it was. */
    if (any && !s->nocache && s->reclaim == TP_RECLAIM_EAGER) session_compact(s);
}

/* ------------------------------------------------- memory-aware pruning -- */
/* --memory-policy prune (docs/memory.md): once granting a step would bring usage to the warning
 * level (85% of --max-memory-gb), pruning decisions apply (with the configured rule, even without
 * --use-retroactive-pruning), and while the step's members do not fit under the critical level
 * the rule is tightened one notch at a time and judged again on the newest pass's scores, so the
 * lowest-scoring members go first; their slots are reclaimed at once. What pruning cannot free
 * is the budget's to settle: a narrower step, or the stop. */

/* Judge the sets scored by the newest pass again with the rule in force. True if any member went. */
static bool rejudge(tp_session *s) {
    int pass = s->last_pass, kept = 0;
    bool any = false;
    if (pass < 0) return false;
    for (int i = 0; i < s->n_multi; i++) {
        int j = s->multi[i], alive = 0;
        tempo_step *st = &s->rec.steps[j];
        bool scored = true;
        for (int mb = 0; mb < st->n_tokens; mb++) {
            const tempo_token *t = &st->tokens[mb];
            s->malive[mb] = !t->pruned;
            s->mprob[mb] = t->probability;
            s->mid[mb] = t->token_id;
            s->score[mb] = t->pruned ? 0.0f : t->prune_score;
            scored &= t->pruned || t->scored_at_step == pass;
        }
        if (scored) tp_prune_decide(&s->rule, st->n_tokens, s->score, s->mprob, s->mid, s->malive, s->mprune);
        for (int mb = 0; mb < st->n_tokens; mb++) {
            tempo_token *t = &st->tokens[mb];
            if (scored && !t->pruned && s->mprune[mb]) {
                prune_member(s, j, mb, pass);
                any = true;
                if (s->n_events < s->max_events)
                    s->events[s->n_events++] = (tempo_prune_event){ j, mb, pass, t->token_id, t->prune_score, true };
            }
            alive += !t->pruned;
        }
        if (alive >= 2) s->multi[kept++] = j;
    }
    s->n_multi = kept;
    if (any && !s->nocache) session_compact(s); /* the memory-aware policy frees at once */
    return any;
}

/* Raise the rule's threshold one notch (doubling it; relative rule: at most W times the set's
 * mean, where only each set's best member survives; absolute: at most 1, the largest score).
 * False when there is nothing left to judge or the rule is at its strictest. */
static bool tighten(tp_session *s, int k, long room, int want) {
    bool judgeable = false;
    for (int i = 0; i < s->n_multi && !judgeable; i++) {
        const tempo_step *st = &s->rec.steps[s->multi[i]];
        bool all = true;
        for (int mb = 0; mb < st->n_tokens; mb++)
            all &= st->tokens[mb].pruned || st->tokens[mb].scored_at_step == s->last_pass;
        judgeable = all;
    }
    bool rel = s->rule.relative;
    double *th = rel ? &s->rule.relative_threshold : &s->rule.attention_threshold;
    double cap = rel ? (double)s->W : 1.0, old = *th;
    if (!judgeable || old >= cap) return false;
    double nw = 2 * old > (rel ? 0.25 : 0.01) ? 2 * old : (rel ? 0.25 : 0.01);
    if (nw > cap) nw = cap;
    *th = nw;
    char reason[TP_ERR_LEN], lim[32];
    snprintf(reason, sizeof reason,
             "memory: room for %ld of the step's %d tokens under 95%% of --max-memory-gb %s",
             room > 0 ? room : 0, want, tp_fmt_gb(s->m->params.max_memory_gb * 1073741824.0, lim, sizeof lim));
    tp_budget_record_rule(s->budget, k, rel, old, nw, reason);
    return true;
}

static void memory_prune(tp_session *s, int k, int want) {
    bool warning = false;
    long room = tp_budget_room(s->budget, s->kv, want, &warning);
    if (!warning && !s->pressure) return;
    if (!s->pressure) { /* the warning level is reached: pruning applies from now on */
        s->pressure = true;
        if (rejudge(s)) room = tp_budget_room(s->budget, s->kv, want, NULL);
    }
    while (room < want && tighten(s, k, room, want)) {
        rejudge(s);
        room = tp_budget_room(s->budget, s->kv, want, NULL);
    }
}

/* ---------------------------------------------------------------- one step -- */

/* Standard sampling's token for step k (end-of-generation ids are banned before min_steps). */
static int sampler_pick(tp_session *s, int k) {
    const uint8_t *ban = k < s->p.min_steps ? s->is_eog : NULL;
    return tp_sampler_pick(s->sampler, s->zraw, s->hist, s->P + k, ban);
}

/* Choose S_k into s->ids/s->probs; 0 = stop at end of generation. */
static int choose(tp_session *s, int k, int width) {
    if (s->standard) {
        int id = s->picked >= 0 ? s->picked : sampler_pick(s, k); /* step_begin clears picked */
        if (s->is_eog[id] && k >= s->p.min_steps) return 0;
        s->ids[0] = id;
        s->probs[0] = s->D[id];
        s->hist[s->P + k] = id;
        return 1;
    }
    return tp_select(s->D, s->V, s->is_eog, tp_threshold(&s->thr, k), width, k, s->p.min_steps, s->ids, s->probs);
}

/* The text of token id into the record; NULL on out of memory. */
static char *token_text(tp_session *s, int32_t id) {
    char buf[256];
    int len = tp_tokenizer_piece(s->tok, id, true, buf, sizeof buf);
    if (len >= 0) return tp_record_text(&s->rec, buf, (size_t)len);
    if (len == -1) return tp_record_text(&s->rec, "", 0);
    char *big = malloc((size_t)-len + 1);
    if (!big) return NULL;
    int l2 = tp_tokenizer_piece(s->tok, id, true, big, -len + 1);
    char *t = tp_record_text(&s->rec, big, l2 > 0 ? (size_t)l2 : 0);
    free(big);
    return t;
}

/* Record step k's set (s->ids/s->probs, n members). */
static int record_step(tp_session *s, int k, int n, char *msg) {
    tp_record *r = &s->rec;
    tempo_step *st = &r->steps[k];
    int off = r->n_tokens;
    s->step_off[k] = off;
    *st = (tempo_step){ .step = k, .position = s->P + k, .n_tokens = n, .tokens = r->tokens + off };
    for (int j = 0; j < n; j++) {
        tempo_token *t = &st->tokens[j];
        char *text = token_text(s, s->ids[j]);
        if (!text) return tp_fail(msg, "out of memory recording step %d", k);
        *t = (tempo_token){ .token_id = s->ids[j], .text = text, .probability = s->probs[j], .pruned = false,
                            .pruned_at_step = -1, .prune_score = -1.0f, .scored_at_step = -1 };
        s->slot_of[off + j] = -1;
        s->fed_of[off + j] = -1;
    }
    if (s->mcts) {
        /* the search's candidates, after the previous step's (a replaced set is recorded again) */
        const tempo_step *prev = k > 0 ? &r->steps[k - 1] : NULL;
        int moff = prev ? (int)(prev->mcts - r->mcts) + prev->n_mcts : 0;
        st->mcts = r->mcts + moff;
        st->n_mcts = s->n_mcts;
        for (int j = 0; j < s->n_mcts; j++) {
            char *text = token_text(s, s->mcts_ids[j]);
            if (!text) return tp_fail(msg, "out of memory recording step %d", k);
            const tp_mcts_stat *ms = &s->mcts_stats[j];
            st->mcts[j] = (tempo_mcts_candidate){ .token_id = s->mcts_ids[j], .text = text,
                                                  .probability = s->mcts_probs[j], .prior = ms->prior,
                                                  .visits = ms->visits, .value = ms->value,
                                                  .committed = j == s->mcts_committed };
        }
    }
    r->n_tokens = off + n;
    r->n_steps = k + 1;
    return 0;
}

/* Ask the budget for room for n members of step k (reclaiming dead slots when that is what
 * makes room). Returns the width (<= n) or 0 after stopping the run. */
static int budget_width(tp_session *s, int k, int n) {
    tempo_stop_reason why = TEMPO_STOP_ERROR;
    char msg[TP_ERR_LEN] = "";
    int width = tp_budget_step_width(s->budget, s->kv, k, n, &why, msg);
    if (width == TP_BUDGET_COMPACT) {
        session_compact(s);
        width = tp_budget_step_width(s->budget, s->kv, k, n, &why, msg);
    }
    if (width <= 0) { stop(s, why, msg); return 0; }
    return width;
}

/* First half of a step: settle whether the run goes on, and prepare the feed of the newest
 * set. Returns 1 when s->batch must be run through the model (the caller may batch it with
 * other sessions'), 0 when there is nothing to feed (or it was fed already: --disable-kv-cache
 * rebuilds with its own passes), -1 when the run is over (state S_DONE) or failed. */
static int step_begin(tp_session *s, char *msg) {
    s->feeding = s->fed_already = s->mixed = s->dist_ready = false;
    s->picked = -1;
    s->n_events = 0;
    s->attn_rows = 0;
    if (s->state != S_RUNNING) return -1;
    if (atomic_load(&s->cancel)) { stop(s, TEMPO_STOP_INTERRUPTED, "interrupted"); return -1; }
    if (s->rec.n_steps == s->T) { stop(s, TEMPO_STOP_MAX_TOKENS, NULL); return -1; }
    if (!s->pending) return 0;

    int k = s->rec.n_steps - 1;
    tempo_step *st = &s->rec.steps[k];
    int n = st->n_tokens, off = s->step_off[k];
    for (int j = 0; j < n; j++) {
        int f = s->F + j;
        s->ids[j] = st->tokens[j].token_id;
        s->probs[j] = st->tokens[j].probability;
        s->fed_tok[f] = s->ids[j];
        s->fed_pos[f] = s->P + k;
        s->fed_step[f] = k;
        s->fed_dead[f] = INT_MAX;
        s->fed_of[off + j] = f;
        s->feed_pos[j] = s->P + k;
    }
    s->F += n;
    s->want_attn = s->pruning && k >= 1;
    if (s->nocache) {
        if (feed_rebuild(s, k, n, s->want_attn, msg)) { stop(s, TEMPO_STOP_ERROR, msg); s->state = S_FAILED; return -1; }
        s->fed_already = true;
        return 0;
    }
    int which = 0;
    if (tp_kv_reserve(s->kv, n, &which, msg)) { /* the budget granted these slots: should not happen */
        stop(s, which == 2 ? TEMPO_STOP_MEMORY_LIMIT : TEMPO_STOP_CACHE_LIMIT, msg);
        return -1;
    }
    for (int j = 0; j < n; j++) s->slot_of[off + j] = s->kv->n + j;
    s->batch = (tp_batch){ .n = n, .tokens = s->ids, .pos = s->feed_pos, .step = k, .vis = s->vis,
                           .logits = s->logits, .layer_weights = s->want_attn ? s->lambda : NULL,
                           .attn = s->want_attn ? s->attn : NULL };
    if (s->dev_mix) {
        /* The device mixes the members' distributions itself (tp_mixture's weights): only D_k
         * comes back, not n rows of logits. */
        float total = 0.0f;
        for (int j = 0; j < n; j++) total += s->probs[j];
        for (int j = 0; j < n; j++) s->mixw[j] = total > 0.0f ? s->probs[j] / total : 1.0f / (float)n;
        s->batch.mix = s->mixw;
        s->batch.probs = s->D;
        s->batch.logits = NULL;
        s->mixed = true;
    }
    s->feeding = true;
    return 1;
}

/* The fed set's distribution D_k (and the raw logits for standard sampling) and whether it is
 * finite: the arithmetic of step_end, on pool (NULL: this thread). It touches only the session's
 * own buffers, so tempo_session_step_batch runs it for several sessions at once. */
static void step_distribution(tp_session *s, tp_pool *pool) {
    if (!(s->feeding || s->fed_already) || s->dist_ready) return;
    int n = s->rec.steps[s->rec.n_steps - 1].n_tokens;
    if (s->standard) memcpy(s->zraw, s->logits, sizeof(float) * (size_t)s->V);
    if (!s->mixed) tp_mixture_pool(s->logits, s->probs, n, s->V, s->D, pool);
    s->dist_finite = all_finite(s->D, s->V) && (!s->standard || all_finite(s->zraw, s->V));
    s->dist_ready = true;
    /* Standard sampling draws the next token from the session's own logits, history and
     * generator only, so it is drawn here too (side by side in a batch) when step_end will
     * ask for it: the distribution is finite and the generation goes on. */
    if (s->standard && s->dist_finite && s->rec.n_steps < s->T) s->picked = sampler_pick(s, s->rec.n_steps);
}

/* Second half: the fed set's distributions and pruning, then the next set. Returns as
 * tempo_session_step. */
static int step_end(tp_session *s, tempo_step_info *out, char *msg) {
    if (s->feeding || s->fed_already) {
        int k = s->rec.n_steps - 1;
        int n = s->rec.steps[k].n_tokens;
        s->pending = false;
        s->fed_steps++;
        s->fed_tokens += n;
        step_distribution(s, tp_compute_pool(s->compute));
        s->dist_ready = false;
        if (!s->dist_finite) {
            tp_fail(msg, "non-finite logits at step %d (the model produced NaN or infinite values)", k);
            stop(s, TEMPO_STOP_ERROR, msg);
            return -1;
        }
        if (s->want_attn) {
            int stride = s->nocache ? s->F : s->kv->n;
            s->attn_rows = n;
            s->attn_stride = stride;
            prune_pass(s, k, n, stride);
        }
        if (s->pruning && n >= 2) s->multi[s->n_multi++] = k;
        char label[48];
        snprintf(label, sizeof label, "Step %d", k);
        tp_budget_log(s->budget, label, s->kv);
    }
    s->feeding = s->fed_already = false;
    if (out) {
        out->n_prune = s->n_events;
        out->prune = s->events;
    }
    if (s->rec.n_steps == s->T) { stop(s, TEMPO_STOP_MAX_TOKENS, NULL); return 0; }

    /* Select S_k first, then ask the budget for room for the members actually chosen; if it
     * grants fewer, keep the most probable ones (the set is in selection order). */
    int k = s->rec.n_steps;
    bool last = k == s->T - 1;
    int n = choose(s, k, tp_budget_current_width(s->budget) < s->W ? tp_budget_current_width(s->budget) : s->W);
    if (n == 0) { stop(s, TEMPO_STOP_EOS, NULL); return 0; }
    if (s->mcts) { /* the search commits one member of the set */
        if (mcts_step(s, k, n, msg)) { stop(s, TEMPO_STOP_ERROR, msg); return -1; }
        n = 1;
    }
    s->granted = 0;
    if (!last && s->mem_prune) memory_prune(s, k, n);
    if (!last) {
        int width = budget_width(s, k, n);
        if (width == 0) return 0;
        if (width < n) n = width;
        s->granted = width;
    }
    if (record_step(s, k, n, msg)) { stop(s, TEMPO_STOP_ERROR, msg); return -1; }
    s->pending = !last;
    if (out) out->step = &s->rec.steps[k];
    return 1;
}

/* The status of a failed step_end, from its message. */
static tempo_status step_failure(const char *msg) {
    if (strstr(msg, "non-finite")) return TEMPO_ERR_NUMERIC;
    if (strstr(msg, "--kv-offload")) return TEMPO_ERR_IO; /* an MCTS feed met a full disk */
    return TEMPO_ERR_NOMEM;
}

static int state_error(tp_session *s, tempo_error *err) {
    if (s->state == S_NEW) set_err(err, TEMPO_ERR_STATE, "the session has no prompt yet (call tempo_session_prefill first)");
    else set_err(err, TEMPO_ERR_STATE, s->msg[0] ? s->msg : "the session failed");
    return -1;
}

int tempo_session_step(tempo_session *s, tempo_step_info *out, tempo_error *err) {
    char msg[TP_ERR_LEN] = "";
    set_err(err, TEMPO_OK, "");
    if (out) memset(out, 0, sizeof *out);
    if (!s) { set_err(err, TEMPO_ERR_ARG, "no session"); return -1; }
    if (s->state == S_NEW || s->state == S_FAILED) return state_error(s, err);
    if (s->state == S_DONE) return 0;
    double t0 = tp_now();
    int rc = step_begin(s, msg);
    if (rc == 1 && forward(s, &s->batch, msg)) { stop(s, TEMPO_STOP_ERROR, msg); s->state = S_FAILED; rc = -1; }
    if (rc == -1) {
        s->steps_s += tp_now() - t0;
        if (s->state == S_FAILED) {
            set_err(err, strstr(s->msg, "--kv-offload") ? TEMPO_ERR_IO : TEMPO_ERR_INTERNAL, s->msg);
            return -1;
        }
        return 0;
    }
    rc = step_end(s, out, msg);
    s->steps_s += tp_now() - t0;
    if (rc < 0) {
        set_err(err, step_failure(msg), msg);
        s->state = S_FAILED;
    }
    return rc;
}

/* One forward for the sequences of several sessions (sessions ss[idx[q]], seqs[q]): the pass runs
 * on the compute context with the most cache slots, so every other session's cache fits its
 * attention buffers (a session's capacity is its context's). A logits buffer for all rows, so the
 * output matrix is read once, is reserved once in that lead session's budget; without it, each
 * session's logits take their own product. */
static int forward_sessions(tempo_session *const *ss, const int *idx, const tp_fwd_seq *seqs, int n_seqs, char *msg) {
    tp_session *lead = ss[idx[0]];
    for (int q = 1; q < n_seqs; q++)
        if (tp_compute_max_ctx(ss[idx[q]]->compute) > tp_compute_max_ctx(lead->compute)) lead = ss[idx[q]];
    msg[0] = 0;
    if (n_seqs > 1 && !lead->multi_ready &&
        tp_budget_reserve_more(lead->budget, tp_compute_multi_bytes(lead->m, TP_MATMUL_MAX_BATCH), "the batch logits buffer", msg) == 0) {
        if (tp_compute_enable_multi(lead->compute, msg) == 0) lead->multi_ready = true;
    }
    msg[0] = 0;
    return tp_forward_multi(lead->m, lead->compute, seqs, n_seqs, msg);
}

typedef struct {
    tempo_session *const *ss;
    const int *rc; /* 2: the session goes on to step_end */
    int n;
} dist_job;

static void dist_task(void *ctx, int ith, int nth) {
    const dist_job *J = ctx;
    for (int i = 0, q = 0; i < J->n; i++)
        if (J->rc[i] == 2 && q++ % nth == ith) step_distribution(J->ss[i], NULL);
}

void tempo_session_step_batch(tempo_session *const *ss, int n, int *rc, tempo_step_info *out, tempo_error *err) {
    char msg[TP_ERR_LEN];
    tp_fwd_seq seqs[TP_MATMUL_MAX_BATCH];
    int idx[TP_MATMUL_MAX_BATCH];
    int n_seqs = 0;
    for (int i = 0; i < n; i++) {
        tp_session *s = ss[i];
        if (out) memset(&out[i], 0, sizeof out[i]);
        set_err(err ? &err[i] : NULL, TEMPO_OK, "");
        rc[i] = 0;
        if (!s) { rc[i] = -1; set_err(err ? &err[i] : NULL, TEMPO_ERR_ARG, "no session"); continue; }
        if (s->state == S_NEW || s->state == S_FAILED) { rc[i] = state_error(s, err ? &err[i] : NULL); continue; }
        if (s->state == S_DONE) { rc[i] = 0; continue; }
        if (s->m != ss[0]->m) { rc[i] = -1; set_err(err ? &err[i] : NULL, TEMPO_ERR_ARG, "sessions of different models"); continue; }
        msg[0] = 0;
        int b = step_begin(s, msg);
        if (b == -1) {
            if (s->state == S_FAILED) { rc[i] = -1; set_err(err ? &err[i] : NULL, TEMPO_ERR_INTERNAL, s->msg); }
            else rc[i] = 0;
            continue;
        }
        rc[i] = 2; /* goes on to step_end */
        /* The batch's tokens must fit one sequence list; sessions past it (more than 64 feeding
         * at once) run their own forward, and so does a session on a GPU (its backend). */
        if (b == 1 && !s->be && n_seqs < TP_MATMUL_MAX_BATCH && s->batch.n <= TP_MATMUL_MAX_BATCH) {
            seqs[n_seqs] = (tp_fwd_seq){ s->kv, &s->batch };
            idx[n_seqs++] = i;
        } else if (b == 1) {
            if (forward(s, &s->batch, msg)) { stop(s, TEMPO_STOP_ERROR, msg); s->state = S_FAILED; rc[i] = -1; }
        }
    }
    if (n_seqs > 0) {
        double t0 = tp_now();
        int frc = forward_sessions(ss, idx, seqs, n_seqs, msg);
        double dt = tp_now() - t0;
        for (int q = 0; q < n_seqs; q++) {
            tp_session *s = ss[idx[q]];
            s->forward_calls++;
            s->steps_s += dt;
            if (frc) { stop(s, TEMPO_STOP_ERROR, msg); s->state = S_FAILED; rc[idx[q]] = -1; }
        }
    }
    /* The sessions' distributions side by side, one session per thread (a 128K vocabulary is
     * 128K expf per member: on one thread, 8 sessions' would leave the others idle). */
    dist_job D = { ss, rc, n };
    tp_pool *pool = NULL;
    int ready = 0;
    for (int i = 0; i < n; i++)
        if (rc[i] == 2 && ready++ == 0) pool = tp_compute_pool(ss[i]->compute);
    if (ready >= 2) tp_pool_run(pool, dist_task, &D);
    for (int i = 0; i < n; i++) {
        tp_session *s = ss[i];
        if (rc[i] == -1 && s && s->state == S_FAILED) { set_err(err ? &err[i] : NULL, TEMPO_ERR_INTERNAL, s->msg); continue; }
        if (rc[i] != 2) continue;
        msg[0] = 0;
        rc[i] = step_end(s, out ? &out[i] : NULL, msg);
        if (rc[i] < 0) {
            set_err(err ? &err[i] : NULL, step_failure(msg), msg);
            s->state = S_FAILED;
        }
    }
}

/* Prefill n sessions: each is set up as by tempo_session_prefill (tokens, budget, buffers, its
 * prompt's KV slots), then every prompt goes through the model in ONE batched forward (causal
 * within each prompt, sessions apart), as a server admits several requests at once. */
void tempo_session_prefill_batch(tempo_session *const *ss, const char *const *prompts, int n, int *rc,
                                 tempo_error *err) {
    char msg[TP_ERR_LEN];
    tp_fwd_seq seqs[TP_MATMUL_MAX_BATCH];
    int idx[TP_MATMUL_MAX_BATCH];
    int n_seqs = 0;
    for (int i = 0; i < n; i++) {
        tp_session *s = ss[i];
        tempo_error *e = err ? &err[i] : NULL;
        if (!s) { rc[i] = -1; set_err(e, TEMPO_ERR_ARG, "no session"); continue; }
        if (s->m != ss[0]->m) { rc[i] = -1; set_err(e, TEMPO_ERR_ARG, "sessions of different models"); continue; }
        /* a session on a GPU, or past the sequence list, feeds its prompt alone */
        s->defer_prompt_forward = !s->be && n_seqs < TP_MATMUL_MAX_BATCH;
        rc[i] = tempo_session_prefill(s, prompts ? prompts[i] : NULL, e);
        s->defer_prompt_forward = false;
        if (rc[i] == 0 && s->state == S_PROMPT_READY) {
            seqs[n_seqs] = (tp_fwd_seq){ s->kv, &s->prompt_batch };
            idx[n_seqs++] = i;
        }
    }
    if (n_seqs == 0) return;
    int frc = forward_sessions(ss, idx, seqs, n_seqs, msg);
    for (int q = 0; q < n_seqs; q++) {
        tp_session *s = ss[idx[q]];
        tempo_error *e = err ? &err[idx[q]] : NULL;
        s->forward_calls++;
        rc[idx[q]] = frc ? prefill_fail(s, msg, e) : prefill_finish(s, e);
    }
}

/* ------------------------------------------------------------ choosing -- */

static int pending_check(tp_session *s, tempo_error *err) {
    if (!s) { set_err(err, TEMPO_ERR_ARG, "no session"); return -1; }
    if (s->state == S_NEW || s->state == S_FAILED) return state_error(s, err);
    if (s->rec.n_steps == 0 || !(s->pending || (s->state == S_RUNNING && s->rec.n_steps == s->T))) {
        set_err(err, TEMPO_ERR_STATE, "there is no unfed step to choose in (call tempo_session_step first)");
        return -1;
    }
    return 0;
}

int tempo_session_choose(tempo_session *s, int member, tempo_error *err) {
    set_err(err, TEMPO_OK, "");
    if (pending_check(s, err)) return -1;
    tempo_step *st = &s->rec.steps[s->rec.n_steps - 1];
    if (member < 0 || member >= st->n_tokens) {
        char msg[128];
        snprintf(msg, sizeof msg, "member %d is not in step %d's set (0..%d)", member, st->step, st->n_tokens - 1);
        set_err(err, TEMPO_ERR_ARG, msg);
        return -1;
    }
    st->tokens[0] = st->tokens[member];
    st->n_tokens = 1;
    st->chosen = true;
    s->rec.n_tokens = s->step_off[st->step] + 1;
    if (s->standard) s->hist[s->P + st->step] = st->tokens[0].token_id;
    return 0;
}

int tempo_session_set_members(tempo_session *s, const int32_t *ids, int n, tempo_error *err) {
    char msg[TP_ERR_LEN];
    set_err(err, TEMPO_OK, "");
    if (pending_check(s, err)) return -1;
    tempo_step *st = &s->rec.steps[s->rec.n_steps - 1];
    int k = st->step;
    if (n < 1 || n > s->W) {
        snprintf(msg, sizeof msg, "a set of %d members: step %d may hold 1..%d (the session's width)", n, k, s->W);
        set_err(err, TEMPO_ERR_ARG, msg);
        return -1;
    }
    for (int j = 0; j < n; j++) {
        if (ids[j] < 0 || ids[j] >= s->V) {
            snprintf(msg, sizeof msg, "token id %d is outside the vocabulary (0..%d)", ids[j], s->V - 1);
            set_err(err, TEMPO_ERR_ARG, msg);
            return -1;
        }
        for (int i = 0; i < j; i++)
            if (ids[i] == ids[j]) {
                snprintf(msg, sizeof msg, "token id %d appears twice in the set", ids[j]);
                set_err(err, TEMPO_ERR_ARG, msg);
                return -1;
            }
    }
    bool last = k == s->T - 1;
    if (!last && n > s->granted) { /* more members than the budget granted: ask again */
        s->rec.n_tokens = s->step_off[k];
        s->rec.n_steps = k;
        tempo_stop_reason why = TEMPO_STOP_ERROR;
        int width = tp_budget_step_width(s->budget, s->kv, k, n, &why, msg);
        if (width == TP_BUDGET_COMPACT) {
            session_compact(s);
            width = tp_budget_step_width(s->budget, s->kv, k, n, &why, msg);
        }
        s->rec.n_steps = k + 1;
        s->rec.n_tokens = s->step_off[k] + st->n_tokens;
        if (width < n) {
            if (width > 0) snprintf(msg, sizeof msg, "only %d of the %d members fit the memory budget at step %d", width, n, k);
            set_err(err, width > 0 ? TEMPO_ERR_MEMORY_LIMIT : status_of(why), msg);
            return -1;
        }
        s->granted = width;
    }
    for (int j = 0; j < n; j++) {
        s->ids[j] = ids[j];
        s->probs[j] = s->D[ids[j]];
    }
    s->rec.n_steps = k;
    s->rec.n_tokens = s->step_off[k];
    if (record_step(s, k, n, msg)) {
        stop(s, TEMPO_STOP_ERROR, msg);
        set_err(err, TEMPO_ERR_NOMEM, msg);
        return -1;
    }
    s->rec.steps[k].chosen = true;
    if (s->standard) s->hist[s->P + k] = ids[0];
    return 0;
}

/* ---------------------------------------------------------------- reading -- */

/* Memory by layer now (src/memory/breakdown.c): this session's KV share, the work buffers one
 * layer's pass uses, the monitor's totals. */
static void memory_breakdown(const tp_session *s, tempo_memory_breakdown *out) {
    out->layers = s->mem_layers;
    size_t scratch = s->compute ? tp_compute_estimate_bytes(s->m, tp_compute_threads(s->compute), TP_MATMUL_MAX_BATCH,
                                                            tp_compute_max_ctx(s->compute))
                                : 0;
    tp_memory_breakdown(s->m, s->m->mon, tp_budget_kv_bytes(s->budget), scratch, s->kv, out);
}

/* --debug-mode: the breakdown as log lines. */
static void log_memory_layers(const tp_session *s, const char *label) {
    if (!s->p.debug_mode || !s->mem_layers || !s->budget) return;
    tempo_memory_breakdown mb;
    memory_breakdown(s, &mb);
    tp_memory_log_breakdown(&mb, label);
}

int tempo_session_top_logprobs(const tempo_session *s, int k, int32_t *ids, float *logprobs) {
    if (!s || !s->D || s->rec.n_steps == 0 || k <= 0) return -1;
    /* insertion into a short sorted list: k is small (an API's top_logprobs <= 20) */
    int n = 0;
    for (int i = 0; i < s->V; i++) {
        float d = s->D[i];
        if (n == k && !(d > s->D[ids[k - 1]])) continue;
        int at = n < k ? n : k - 1;
        while (at > 0 && d > s->D[ids[at - 1]]) { ids[at] = ids[at - 1]; at--; }
        ids[at] = i;
        if (n < k) n++;
    }
    for (int i = 0; i < n; i++) logprobs[i] = s->D[ids[i]] > 0 ? logf(s->D[ids[i]]) : -INFINITY;
    return n;
}

float tempo_session_logprob(const tempo_session *s, int32_t id) {
    if (!s || !s->D || id < 0 || id >= s->V) return -INFINITY;
    return s->D[id] > 0 ? logf(s->D[id]) : -INFINITY;
}

int tempo_session_n_steps(const tempo_session *s) { return s ? s->rec.n_steps : 0; }

const tempo_step *tempo_session_get_step(const tempo_session *s, int k) {
    return s && k >= 0 && k < s->rec.n_steps ? &s->rec.steps[k] : NULL;
}

tempo_stop_reason tempo_session_stop_reason(const tempo_session *s, const char **message) {
    if (message) *message = s && s->msg[0] ? s->msg : NULL;
    return s ? s->why : TEMPO_STOP_ERROR;
}

tempo_result *tempo_session_result(const tempo_session *s, tempo_error *err) {
    set_err(err, TEMPO_OK, "");
    if (!s) { set_err(err, TEMPO_ERR_ARG, "no session"); return NULL; }
    const tempo_adjustment *adj = NULL;
    int n_adj = s->budget ? tp_budget_adjustments(s->budget, &adj) : 0;
    int total = s->P;
    for (int k = 0; k < s->rec.n_steps; k++) total += s->rec.steps[k].n_tokens;
    tp_record_meta meta = {
        .prompt = s->prompt_text, .stop_reason = s->why, .stop_message = s->msg,
        .adjustments = adj, .n_adjustments = n_adj, .generation_time_s = s->prefill_s + s->steps_s,
        .total_slots = total, .n_prompt_tokens = s->P, .max_parallel_tokens = s->W, .params = &s->p,
        .threads = s->compute ? tp_compute_threads(s->compute) : s->m->n_threads,
        .max_memory_gb = s->m->params.max_memory_gb, .kv_cache_type = s->m->params.kv_cache_type,
        .kv_offload = s->m->params.kv_offload,
        .device = s->be ? s->m->dev->name : "cpu", .gpu_layers = tp_backend_gpu_layers(s->be),
    };
    if (s->m->dev) {
        tempo_memory_stats ms;
        tempo_memory_get_stats(s->m->mon, &ms);
        meta.gpu_allocated_bytes = (size_t)(ms.gpu_allocated_gb * TP_GB);
        meta.gpu_reserved_bytes = (size_t)(ms.gpu_reserved_gb * TP_GB);
        meta.gpu_free_bytes = (size_t)(ms.gpu_free_gb * TP_GB);
    }
    tempo_memory_breakdown mb;
    if (s->mem_layers && s->budget) {
        memory_breakdown(s, &mb);
        meta.memory = &mb;
    }
    tempo_result *r = tp_record_snapshot(&s->rec, &meta);
    if (!r) set_err(err, TEMPO_ERR_NOMEM, "out of memory building the result");
    return r;
}

void tempo_session_get_stats(const tempo_session *s, tempo_session_stats *o) {
    memset(o, 0, sizeof *o);
    if (!s) return;
    o->n_prompt = s->P;
    o->n_steps = s->rec.n_steps;
    o->fed_steps = s->fed_steps;
    o->fed_tokens = s->fed_tokens;
    o->forward_calls = s->forward_calls;
    o->prefill_s = s->prefill_s;
    o->steps_s = s->steps_s;
    if (s->kv) {
        o->kv_slots = s->kv->n;
        o->kv_alive = s->kv->n_alive;
        o->kv_capacity = s->kv->capacity;
    }
    o->width = s->budget ? tp_budget_current_width(s->budget) : 0;
    o->reserved_bytes = s->budget ? tp_budget_reserved_bytes(s->budget) : 0;
}
