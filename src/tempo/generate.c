/* generate.c: the TEMPO generation loop (design/tempo-semantics.md) and standard mode.
 *
 * Per run: tokenize the prompt, prefill it causally, then for every step k select
 * the parallel set S_k from D_k, report it, feed all of its members in ONE forward
 * at position P + k (isolated or mutually visible), mix their distributions into
 * D_{k+1}, and optionally prune earlier sets from this forward's attention.
 *
 * Bookkeeping. Every slot ever fed is recorded in feed order ("fed" arrays) with
 * its step and the pruning pass that killed it, so that --disable-kv-cache can
 * rebuild the cache each step with the exact visibility the cached path had
 * ("a slot is visible to a query only if it was alive when that query was fed").
 * In the cached path each member remembers its KV slot; compaction (ours, the
 * budget's or the cache's own) renumbers slots, and we follow it.
 *
 * Every buffer is allocated once per run; the step loop does not allocate except
 * for token texts, which go into large chunks.
 */
#include "tempo/generate.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "chat/chat.h"
#include "core/common.h"
#include "memory/budget.h"
#include "model/model.h"
#include "output/text.h"
#include "tempo/prune.h"
#include "tempo/sample.h"
#include "tempo/select.h"
#include "tokenizer/tokenizer.h"

#define REBUILD_CHUNK 64 /* rows per forward when --disable-kv-cache recomputes old slots */

/* ------------------------------------------------------------------ result -- */
typedef struct text_chunk {
    struct text_chunk *next;
    size_t used, cap;
    char data[];
} text_chunk;

/* The public result plus what it owns in bulk. */
typedef struct {
    tempo_result pub; /* first, so a tempo_result * is a result_priv * */
    tempo_token *token_block;
    text_chunk *texts;
} result_priv;

static char *text_put(result_priv *rp, const char *s, size_t n) {
    text_chunk *c = rp->texts;
    if (!c || c->used + n + 1 > c->cap) {
        size_t cap = n + 1 > 16384 ? n + 1 : 16384;
        c = tp_xmalloc(sizeof *c + cap);
        c->next = rp->texts;
        c->used = 0;
        c->cap = cap;
        rp->texts = c;
    }
    char *d = c->data + c->used;
    memcpy(d, s, n);
    d[n] = 0;
    c->used += n + 1;
    return d;
}

void tp_tempo_result_free(tempo_result *r) {
    if (!r) return;
    result_priv *rp = (result_priv *)r;
    free(r->prompt);
    free(r->generated_text);
    free(r->clean_text);
    free(r->steps);
    free(r->stop_message);
    for (int i = 0; i < r->n_adjustments; i++) free(r->adjustments[i].reason);
    free(r->adjustments);
    free(rp->token_block);
    for (text_chunk *c = rp->texts, *next; c; c = next) { next = c->next; free(c); }
    free(rp);
}

/* -------------------------------------------------------------- the prompt -- */
char *tp_tempo_prompt_text(const struct tokenizer *t, const tempo_config *cfg) {
    const char *prompt = cfg->prompt ? cfg->prompt : "";
    if (!cfg->enable_thinking) return tp_xstrdup(prompt);
    /* The model's chat format (src/chat). This function cannot report an error, so a
     * template src/chat does not recognise gets the format a model without one gets
     * (Llama 3 headers when the vocabulary has them, else System/User/Assistant),
     * which is what tempo always did; the caller that can report errors should call
     * tp_chat_thinking_prompt itself. */
    char err[TP_ERR_LEN];
    char *s = tp_chat_thinking_prompt(t, NULL, prompt, err);
    if (!s) s = tp_chat_thinking_prompt(t, tp_chat_format_name(tp_chat_format_default(t)), prompt, err);
    return s ? s : tp_xstrdup(prompt); /* only past the size limits of chat.h */
}

/* --------------------------------------------------------------- the loop -- */
typedef struct {
    tp_model *m;
    tp_kv *kv;
    tokenizer *tok;
    tp_budget *budget;
    const tempo_config *cfg;
    const tp_tempo_opts *o;
    tempo_step_cb cb;
    void *user;
    result_priv *rp;

    int V, L, P, T, W, cap;
    tp_visibility vis;
    bool nocache, pruning, standard;

    /* every slot ever fed, in feed order */
    int F;
    int32_t *fed_tok, *fed_pos, *fed_step, *fed_dead; /* fed_dead: pass that pruned it, INT_MAX = alive */
    /* members: global index g = step_off[k] + j */
    int n_members;
    int *step_off, *slot_of, *fed_of;
    int *multi, n_multi; /* fed steps with >= 2 alive members: pruning candidates */

    /* buffers */
    float *D, *logits, *zraw, *attn, *attn_row, *lambda;
    uint8_t *mask, *is_eog;
    int32_t *ids, *feed_tok, *feed_pos, *hist;
    float *probs, *score, *mprob;
    int32_t *mid;
    bool *malive, *mprune;
    int *order, *map;
    tp_sampler *sampler;
    tp_prune_rule rule;
    tp_threshold_params thr;

    tempo_stop_reason why;
    char msg[TP_ERR_LEN];
    int forward_calls;
} gen;

static void stop(gen *g, tempo_stop_reason why, const char *msg) {
    g->why = why;
    snprintf(g->msg, sizeof g->msg, "%s", msg ? msg : "");
}

/* Find each member's KV slot again after someone compacted the cache: within a
 * step, members have distinct token ids, so (step, token) names a slot. */
static void resync_slots(gen *g) {
    for (int i = 0; i < g->n_members; i++) g->slot_of[i] = -1;
    const tempo_result *r = &g->rp->pub;
    for (int s = 0; s < g->kv->n; s++) {
        const tp_slot *sl = &g->kv->slots[s];
        if (sl->step < 0 || sl->step >= r->n_steps || !sl->alive) continue;
        const tempo_step *st = &r->steps[sl->step];
        for (int j = 0; j < st->n_tokens; j++)
            if (st->tokens[j].token_id == sl->token) g->slot_of[g->step_off[sl->step] + j] = s;
    }
}

/* Visibility of fed slot j to the query of fed slot i (design section 3 and 6). */
static bool visible(const gen *g, int i, int j) {
    int si = g->fed_step[i], sj = g->fed_step[j];
    if (i == j) return true;
    if (si < 0) return sj < 0 && j < i;          /* prompt: causal */
    if (sj < 0) return true;                     /* prompt slots are never pruned */
    if (sj < si) return g->fed_dead[j] >= si;    /* alive when query i was fed */
    if (sj == si) return g->vis == TP_VIS_SET;   /* siblings */
    return false;
}

static int fwd(gen *g, const tp_batch *b, char *err) {
    g->forward_calls++;
    return tp_forward(g->m, g->kv, b, err);
}

static int kv_reserve(gen *g, int n) {
    int which = 0, before = g->kv->n;
    char err[TP_ERR_LEN];
    if (tp_kv_reserve(g->kv, n, &which, err)) {
        stop(g, which == 2 ? TEMPO_STOP_MEMORY_LIMIT : TEMPO_STOP_CACHE_LIMIT, err);
        return -1;
    }
    if (g->kv->n != before && !g->nocache) resync_slots(g);
    return 0;
}

static void swap_rows(float *a, int r1, int r2, size_t len) {
    float *x = a + (size_t)r1 * len, *y = a + (size_t)r2 * len;
    for (size_t i = 0; i < len; i++) { float t = x[i]; x[i] = y[i]; y[i] = t; }
}

/* --disable-kv-cache: clear the cache, recompute every earlier slot with the
 * visibility it had, then feed the new set. Columns are fed indices. */
static int feed_rebuild(gen *g, int k, int n, bool want_attn) {
    char err[TP_ERR_LEN];
    int old = g->F - n;
    tp_kv_clear(g->kv);
    if (kv_reserve(g, g->F)) return -1;
    for (int start = 0, c; start < old; start += c) {
        /* A chunk never splits a set: with visible siblings, a member must see
         * siblings that come after it in the set. Prompt tokens split anywhere. */
        c = 0;
        while (start + c < old) {
            int e = start + c, grp = 1;
            if (g->fed_step[e] >= 0)
                while (e + grp < old && g->fed_step[e + grp] == g->fed_step[e]) grp++;
            if (c > 0 && c + grp > REBUILD_CHUNK) break;
            c += grp;
            if (c >= REBUILD_CHUNK) break;
        }
        int cols = start + c;
        for (int i = 0; i < c; i++)
            for (int j = 0; j < cols; j++) g->mask[(size_t)i * cols + j] = visible(g, start + i, j);
        tp_batch b = { .n = c, .tokens = g->fed_tok + start, .pos = g->fed_pos + start,
                       .step = g->fed_step[start], .vis = TP_VIS_CAUSAL, .mask = g->mask };
        if (fwd(g, &b, err)) { stop(g, TEMPO_STOP_ERROR, err); return -1; }
        for (int s = start; s < cols; s++) g->kv->slots[s].step = g->fed_step[s];
    }
    int cols = g->F;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < cols; j++) g->mask[(size_t)i * cols + j] = visible(g, old + i, j);
    tp_batch b = { .n = n, .tokens = g->fed_tok + old, .pos = g->fed_pos + old, .step = k,
                   .vis = g->vis, .mask = g->mask, .logits = g->logits,
                   .layer_weights = want_attn ? g->lambda : NULL, .attn = want_attn ? g->attn : NULL };
    if (fwd(g, &b, err)) { stop(g, TEMPO_STOP_ERROR, err); return -1; }
    return 0;
}

/* Test hook: each member alone, hiding the siblings fed before it. */
static int feed_one_by_one(gen *g, int k, int n, bool want_attn) {
    char err[TP_ERR_LEN];
    int off = g->step_off[k], n0 = g->kv->n, stride = n0 + n;
    for (int j = 0; j < n; j++) {
        int cols = g->kv->n + 1;
        for (int c = 0; c < cols - 1; c++) g->mask[c] = g->kv->slots[c].alive && g->kv->slots[c].step != k;
        g->mask[cols - 1] = 1;
        tp_batch b = { .n = 1, .tokens = &g->ids[j], .pos = g->feed_pos, .step = k, .vis = g->vis,
                       .mask = g->mask, .logits = g->logits + (size_t)j * g->V,
                       .layer_weights = want_attn ? g->lambda : NULL, .attn = want_attn ? g->attn_row : NULL };
        if (fwd(g, &b, err)) { stop(g, TEMPO_STOP_ERROR, err); return -1; }
        g->slot_of[off + j] = cols - 1;
        if (want_attn) {
            float *row = g->attn + (size_t)j * stride;
            memcpy(row, g->attn_row, sizeof(float) * (size_t)cols);
            memset(row + cols, 0, sizeof(float) * (size_t)(stride - cols));
        }
    }
    return 0;
}

/* Feed S_k (members g->ids[0..n) at position P + k). On return logits row j and
 * attention row j belong to member j (selection order). */
static int feed_set(gen *g, int k, int n, bool want_attn) {
    char err[TP_ERR_LEN];
    int off = g->step_off[k];
    for (int j = 0; j < n; j++) {
        int f = g->F + j;
        g->fed_tok[f] = g->ids[j];
        g->fed_pos[f] = g->P + k;
        g->fed_step[f] = k;
        g->fed_dead[f] = INT_MAX;
        g->fed_of[off + j] = f;
        g->feed_pos[j] = g->P + k;
    }
    g->F += n;
    if (g->nocache) return feed_rebuild(g, k, n, want_attn);
    if (kv_reserve(g, n)) return -1;
    if (g->o->one_by_one && g->vis == TP_VIS_ISOLATED) return feed_one_by_one(g, k, n, want_attn);

    int n0 = g->kv->n;
    for (int f = 0; f < n; f++) {
        g->order[f] = g->o->reverse_feed ? n - 1 - f : f;
        g->feed_tok[f] = g->ids[g->order[f]];
    }
    tp_batch b = { .n = n, .tokens = g->feed_tok, .pos = g->feed_pos, .step = k, .vis = g->vis,
                   .logits = g->logits, .layer_weights = want_attn ? g->lambda : NULL,
                   .attn = want_attn ? g->attn : NULL };
    if (fwd(g, &b, err)) { stop(g, TEMPO_STOP_ERROR, err); return -1; }
    for (int f = 0; f < n; f++) g->slot_of[off + g->order[f]] = n0 + f;
    if (g->o->reverse_feed) /* order is an involution: swapping rows f and n-1-f restores member order */
        for (int f = 0; f < n / 2; f++) {
            swap_rows(g->logits, f, n - 1 - f, (size_t)g->V);
            if (want_attn) swap_rows(g->attn, f, n - 1 - f, (size_t)(n0 + n));
        }
    return 0;
}

/* Column of member gi in this forward's attention summary. */
static int column_of(const gen *g, int gi) { return g->nocache ? g->fed_of[gi] : g->slot_of[gi]; }

/* Retroactive pruning after the forward of S_k (design section 6). */
static int prune_pass(gen *g, int k, int n_q, int stride) {
    tempo_result *r = &g->rp->pub;
    bool any = false;
    int kept = 0;
    for (int i = 0; i < g->n_multi; i++) {
        int j = g->multi[i], off = g->step_off[j], alive = 0;
        tempo_step *st = &r->steps[j];
        for (int m = 0; m < st->n_tokens; m++) {
            tempo_token *t = &st->tokens[m];
            g->malive[m] = !t->pruned;
            g->mprob[m] = t->probability;
            g->mid[m] = t->token_id;
            g->score[m] = t->pruned ? 0.0f : tp_prune_score(g->attn, stride, g->probs, n_q, column_of(g, off + m));
        }
        int cnt = tp_prune_decide(&g->rule, st->n_tokens, g->score, g->mprob, g->mid, g->malive, g->mprune);
        for (int m = 0; m < st->n_tokens; m++) {
            if (g->mprune[m]) {
                st->tokens[m].pruned = true;
                st->tokens[m].pruned_at_step = k;
                g->fed_dead[g->fed_of[off + m]] = k;
                if (!g->nocache) {
                    tp_kv_kill(g->kv, g->slot_of[off + m]);
                    g->slot_of[off + m] = -1;
                }
            }
            alive += !st->tokens[m].pruned;
        }
        if (cnt) {
            st->was_pruned = true;
            any = true;
            if (g->cb && g->cb(TEMPO_EVENT_PRUNE, st, g->user)) {
                stop(g, TEMPO_STOP_ERROR, "generation aborted by the step callback");
                return -1;
            }
        }
        if (alive >= 2) g->multi[kept++] = j;
    }
    g->n_multi = kept;
    if (any && !g->nocache && !g->o->no_compact) {
        /* Reclaim the dead slots now; compaction keeps every live row as it was. */
        int n_before = g->kv->n;
        tp_kv_compact(g->kv, g->map);
        for (int i = 0; i < g->n_members; i++)
            if (g->slot_of[i] >= 0 && g->slot_of[i] < n_before) g->slot_of[i] = g->map[g->slot_of[i]];
    }
    return 0;
}

static tp_kv_type kv_type_of(const char *s) {
    if (s && !strcmp(s, "f16")) return TP_KV_F16;
    if (s && !strcmp(s, "q8_0")) return TP_KV_Q8_0;
    return TP_KV_F32;
}

static void gen_free(gen *g) {
    free(g->fed_tok); free(g->fed_pos); free(g->fed_step); free(g->fed_dead);
    free(g->step_off); free(g->slot_of); free(g->fed_of); free(g->multi);
    free(g->D); free(g->logits); free(g->zraw); free(g->attn); free(g->attn_row); free(g->lambda);
    free(g->mask); free(g->is_eog);
    free(g->ids); free(g->feed_tok); free(g->feed_pos); free(g->hist);
    free(g->probs); free(g->score); free(g->mprob); free(g->mid); free(g->malive); free(g->mprune);
    free(g->order); free(g->map);
    tp_sampler_free(g->sampler);
    if (g->kv) tp_kv_free(g->kv);
    if (g->budget) tp_budget_free(g->budget);
}

/* Record step k's set in the result and report it. */
static int record_step(gen *g, int k, int n) {
    tempo_result *r = &g->rp->pub;
    tempo_step *st = &r->steps[k];
    int off = k == 0 ? 0 : g->step_off[k - 1] + r->steps[k - 1].n_tokens;
    g->step_off[k] = off;
    st->step = k;
    st->position = g->P + k;
    st->n_tokens = n;
    st->tokens = g->rp->token_block + off;
    st->was_pruned = false;
    for (int j = 0; j < n; j++) {
        tempo_token *t = &st->tokens[j];
        char buf[256];
        int len = tp_tokenizer_piece(g->tok, g->ids[j], true, buf, sizeof buf);
        if (len < 0 && len != -1) {
            char *big = tp_xmalloc((size_t)-len + 1);
            int l2 = tp_tokenizer_piece(g->tok, g->ids[j], true, big, -len + 1);
            t->text = text_put(g->rp, big, l2 > 0 ? (size_t)l2 : 0);
            free(big);
        } else {
            t->text = text_put(g->rp, buf, len > 0 ? (size_t)len : 0);
        }
        t->token_id = g->ids[j];
        t->probability = g->probs[j];
        t->pruned = false;
        t->pruned_at_step = -1;
        g->slot_of[off + j] = -1;
        g->fed_of[off + j] = -1;
    }
    g->n_members = off + n;
    r->n_steps = k + 1;
    r->parallel_steps += n > 1;
    r->total_slots += n;
    if (g->cb && g->cb(TEMPO_EVENT_STEP, st, g->user)) {
        stop(g, TEMPO_STOP_ERROR, "generation aborted by the step callback");
        return -1;
    }
    return 0;
}

/* Choose S_k into g->ids/g->probs; 0 = stop at end of generation. */
static int choose(gen *g, int k, int width) {
    if (g->standard) {
        const uint8_t *ban = k < g->cfg->min_steps ? g->is_eog : NULL;
        int id = tp_sampler_pick(g->sampler, g->zraw, g->hist, g->P + k, ban);
        if (g->is_eog[id] && k >= g->cfg->min_steps) return 0;
        g->ids[0] = id;
        g->probs[0] = g->D[id];
        g->hist[g->P + k] = id;
        return 1;
    }
    if (g->o->forced_width > 0)
        return tp_select(g->D, g->V, g->is_eog, 0.0, width, k, INT_MAX, g->ids, g->probs);
    return tp_select(g->D, g->V, g->is_eog, tp_threshold(&g->thr, k), width, k, g->cfg->min_steps,
                     g->ids, g->probs);
}

tempo_result *tp_tempo_generate(tempo_model *tm, const tempo_config *cfg, const tp_tempo_opts *o,
                                tempo_step_cb cb, void *user, char *err) {
    static const tp_tempo_opts no_opts;
    if (!o) o = &no_opts;
    if (!tm || !tm->m) { tp_fail(err, "no model"); return NULL; }
    if (tempo_config_validate(cfg, err)) return NULL;
    tp_model *m = tm->m;
    if (!m->tok) { tp_fail(err, "the model has no tokenizer"); return NULL; }

    gen G = { 0 }, *g = &G;
    g->m = m;
    g->tok = m->tok;
    g->cfg = cfg;
    g->o = o;
    g->cb = cb;
    g->user = user;
    g->V = m->hp.n_vocab;
    g->L = m->hp.n_layers;
    g->T = cfg->max_tokens;
    g->standard = cfg->default_mode;
    g->nocache = cfg->disable_kv_cache;
    g->pruning = cfg->use_retroactive_pruning && !g->standard;
    g->vis = cfg->allow_intraset_token_visibility ? TP_VIS_SET : TP_VIS_ISOLATED;

    /* Prompt. */
    char *ptext = tp_tempo_prompt_text(g->tok, cfg);
    int pcap = (int)strlen(ptext) + 8;
    int32_t *prompt = tp_xmalloc(sizeof(int32_t) * (size_t)pcap);
    int P = tp_tokenizer_encode(g->tok, ptext, tp_tokenizer_adds_bos(g->tok), true, prompt, pcap);
    if (P > pcap) {
        prompt = tp_xrealloc(prompt, sizeof(int32_t) * (size_t)P);
        pcap = P;
        P = tp_tokenizer_encode(g->tok, ptext, tp_tokenizer_adds_bos(g->tok), true, prompt, pcap);
    }
    int n_ctx = m->hp.n_ctx;
    if (P < 0) { tp_fail(err, "could not tokenize the prompt"); goto fail_prompt; }
    if (P == 0) { tp_fail(err, "the prompt is empty and the tokenizer adds no BOS token"); goto fail_prompt; }
    if (P > n_ctx) {
        tp_fail(err, "the prompt is %d tokens, longer than the model's context of %d tokens", P, n_ctx);
        goto fail_prompt;
    }
    if ((long)P + g->T > n_ctx) {
        tp_fail(err, "the prompt (%d tokens) + --max-tokens (%d) = %ld positions, past the model's context of %d tokens",
                P, g->T, (long)P + g->T, n_ctx);
        goto fail_prompt;
    }
    g->P = P;

    /* Memory budget, width, cache. */
    g->budget = tp_budget_new(tm->mon, m, cfg, err);
    if (!g->budget) goto fail_prompt;
    g->W = g->standard ? 1 : tp_budget_max_parallel(g->budget);
    if (g->W < 1) g->W = 1;
    int Wb = o->forced_width > g->W ? o->forced_width : g->W; /* buffer width */
    if (g->vis == TP_VIS_SET && Wb > TP_MATMUL_MAX_BATCH) {
        /* Visible siblings must share one chunk of the forward pass. */
        tp_fail(err, "--allow-intraset-token-visibility allows at most %d tokens per step, but --max-parallel-tokens is %d",
                TP_MATMUL_MAX_BATCH, Wb);
        goto fail;
    }
    g->cap = tp_budget_kv_max_slots(g->budget);
    if (P > g->cap) {
        tp_fail(err, "the prompt is %d tokens but the KV cache may hold only %d (--max-cache-tokens)", P, g->cap);
        goto fail;
    }
    g->kv = tp_kv_new(g->L, m->hp.n_kv_heads * m->hp.head_dim, kv_type_of(cfg->kv_cache_type), g->cap,
                      tp_budget_kv_max_bytes(g->budget), err);
    if (!g->kv) goto fail;
    g->cap = g->kv->capacity > g->cap ? g->kv->capacity : g->cap;

    /* Buffers, once per run. */
    size_t V = (size_t)g->V, maxfed = (size_t)P + (size_t)g->T * (size_t)Wb;
    size_t maxmem = (size_t)g->T * (size_t)Wb;
    g->fed_tok = tp_xmalloc(sizeof(int32_t) * maxfed);
    g->fed_pos = tp_xmalloc(sizeof(int32_t) * maxfed);
    g->fed_step = tp_xmalloc(sizeof(int32_t) * maxfed);
    g->fed_dead = tp_xmalloc(sizeof(int32_t) * maxfed);
    g->step_off = tp_xcalloc((size_t)g->T, sizeof(int));
    g->slot_of = tp_xmalloc(sizeof(int) * maxmem);
    g->fed_of = tp_xmalloc(sizeof(int) * maxmem);
    g->multi = tp_xmalloc(sizeof(int) * (size_t)g->T);
    g->D = tp_xmalloc(sizeof(float) * V);
    /* The buffers that grow with the width may be large: fail cleanly, not abort. */
    g->logits = malloc(sizeof(float) * V * (size_t)Wb);
    g->zraw = tp_xmalloc(sizeof(float) * V);
    g->is_eog = tp_xcalloc(V, 1);
    g->ids = tp_xmalloc(sizeof(int32_t) * (size_t)Wb);
    g->feed_tok = tp_xmalloc(sizeof(int32_t) * (size_t)Wb);
    g->feed_pos = tp_xmalloc(sizeof(int32_t) * (maxfed > (size_t)Wb ? maxfed : (size_t)Wb));
    g->probs = tp_xmalloc(sizeof(float) * (size_t)Wb);
    g->score = tp_xmalloc(sizeof(float) * (size_t)Wb);
    g->mprob = tp_xmalloc(sizeof(float) * (size_t)Wb);
    g->mid = tp_xmalloc(sizeof(int32_t) * (size_t)Wb);
    g->malive = tp_xmalloc(sizeof(bool) * (size_t)Wb);
    g->mprune = tp_xmalloc(sizeof(bool) * (size_t)Wb);
    g->order = tp_xmalloc(sizeof(int) * (size_t)Wb);
    g->map = tp_xmalloc(sizeof(int) * (size_t)g->cap);
    if (g->pruning) {
        g->attn = malloc(sizeof(float) * (size_t)Wb * (size_t)g->cap);
        g->attn_row = tp_xmalloc(sizeof(float) * (size_t)g->cap);
        g->lambda = tp_xmalloc(sizeof(float) * (size_t)g->L);
        tp_prune_layer_weights(g->L, !cfg->no_multi_scale_attention, g->lambda);
    }
    if (g->nocache || o->one_by_one) {
        size_t rows = (size_t)(Wb > REBUILD_CHUNK ? Wb : REBUILD_CHUNK);
        g->mask = malloc(rows * (size_t)g->cap);
    }
    if (!g->logits || (g->pruning && !g->attn) || ((g->nocache || o->one_by_one) && !g->mask)) {
        tp_fail(err, "cannot allocate the working buffers for %d parallel tokens over a vocabulary of %d and %d cache slots "
                "(lower --max-parallel-tokens or --max-cache-tokens)", Wb, g->V, g->cap);
        goto fail;
    }
    if (g->standard) {
        tp_sampler_params sp = { cfg->temperature, cfg->top_k, cfg->top_p, cfg->repetition_penalty, (uint64_t)cfg->seed };
        g->sampler = tp_sampler_new(&sp, g->V);
        g->hist = tp_xmalloc(sizeof(int32_t) * ((size_t)P + (size_t)g->T));
        memcpy(g->hist, prompt, sizeof(int32_t) * (size_t)P);
    }
    int n_tok_vocab = tp_tokenizer_vocab_size(g->tok);
    for (int i = 0; i < g->V && i < n_tok_vocab; i++) g->is_eog[i] = tp_tokenizer_is_eog(g->tok, i);
    for (int i = 0; i < o->n_extra_eog; i++)
        if (o->extra_eog[i] >= 0 && o->extra_eog[i] < g->V) g->is_eog[o->extra_eog[i]] = 1;
    g->rule = (tp_prune_rule){ !cfg->no_relative_attention, cfg->relative_threshold, cfg->attention_threshold };
    g->thr = (tp_threshold_params){ cfg->selection_threshold, cfg->max_tokens, cfg->dynamic_threshold,
                                    cfg->final_threshold, cfg->use_relu, cfg->bezier_p1, cfg->bezier_p2,
                                    cfg->relu_activation_point };

    result_priv *rp = tp_xcalloc(1, sizeof *rp);
    g->rp = rp;
    tempo_result *r = &rp->pub;
    r->prompt = ptext;
    ptext = NULL;
    r->steps = tp_xcalloc((size_t)g->T, sizeof(tempo_step));
    rp->token_block = tp_xcalloc(maxmem, sizeof(tempo_token));
    r->max_parallel_tokens = g->W;
    r->total_slots = P;
    g->why = TEMPO_STOP_MAX_TOKENS;

    /* Prefill (section 1). */
    double t0 = tp_now();
    for (int i = 0; i < P; i++) {
        g->fed_tok[i] = prompt[i];
        g->fed_pos[i] = i;
        g->fed_step[i] = -1;
        g->fed_dead[i] = INT_MAX;
        g->feed_pos[i] = i;
    }
    g->F = P;
    if (kv_reserve(g, P)) {
        tp_fail(err, "%s", g->msg);
        tp_tempo_result_free(r);
        goto fail;
    }
    tp_batch pb = { .n = P, .tokens = prompt, .pos = g->feed_pos, .step = -1, .vis = TP_VIS_CAUSAL,
                    .logits = g->zraw, .logits_last_only = true };
    if (fwd(g, &pb, err)) {
        tp_tempo_result_free(r);
        goto fail;
    }
    memcpy(g->D, g->zraw, sizeof(float) * V);
    tp_prob_softmax(g->D, g->V);
    double t1 = tp_now();
    tp_budget_log(g->budget, "After prefill", g->kv);

    /* Steps. */
    int fed_steps = 0, fed_tokens = 0;
    for (int k = 0; k < g->T; k++) {
        bool last = k == g->T - 1;
        /* Select first, then ask the budget for room for the members actually
         * chosen; if it grants fewer, keep the most probable ones (the set is in
         * selection order). */
        int want = o->forced_width > 0 ? o->forced_width : g->W;
        int n = choose(g, k, want);
        if (n == 0) { stop(g, TEMPO_STOP_EOS, NULL); break; }
        if (!last) {
            tempo_stop_reason why = TEMPO_STOP_ERROR;
            char msg[TP_ERR_LEN] = "";
            int before = g->kv->n;
            int width = tp_budget_step_width(g->budget, g->kv, k, n, &why, msg);
            if (g->kv->n != before && !g->nocache) resync_slots(g);
            if (width <= 0) { stop(g, why, msg); break; }
            if (width < n) n = width;
        }
        if (record_step(g, k, n)) break;
        if (last) break; /* nothing would read the last set's outputs */

        bool want_attn = g->pruning && k >= 1;
        if (feed_set(g, k, n, want_attn)) break;
        fed_steps++;
        fed_tokens += n;
        if (g->standard) memcpy(g->zraw, g->logits, sizeof(float) * V);
        tp_mixture(g->logits, g->probs, n, g->V, g->D);
        if (want_attn) {
            int stride = g->nocache ? g->F : g->kv->n;
            if (o->on_attention) o->on_attention(o->user, k, g->kv, n, g->attn);
            if (prune_pass(g, k, n, stride)) break;
        }
        if (g->pruning && n >= 2) g->multi[g->n_multi++] = k;
        char label[48];
        snprintf(label, sizeof label, "Step %d", k);
        tp_budget_log(g->budget, label, g->kv);
    }
    double t2 = tp_now();

    r->stop_reason = g->why;
    if (g->why != TEMPO_STOP_MAX_TOKENS && g->why != TEMPO_STOP_EOS && g->msg[0]) r->stop_message = tp_xstrdup(g->msg);
    r->generation_time_s = t2 - t0;
    r->generated_text = tp_text_generated(r->prompt, r->steps, r->n_steps, cfg->show_token_ids);
    r->clean_text = tp_text_clean(r->prompt, r->steps, r->n_steps);
    r->n_adjustments = tp_budget_adjustments(g->budget, &r->adjustments);
    if (tm->mon) {
        tempo_memory_stats ms;
        tempo_memory_get_stats(tm->mon, &ms);
        r->peak_memory_bytes = (size_t)(ms.process_peak_gb * 1024.0 * 1024.0 * 1024.0);
    }
    tp_budget_log(g->budget, "End", g->kv);
    if (o->stats) {
        o->stats->prefill_s = t1 - t0;
        o->stats->steps_s = t2 - t1;
        o->stats->fed_steps = fed_steps;
        o->stats->fed_tokens = fed_tokens;
        o->stats->n_prompt = P;
        o->stats->forward_calls = g->forward_calls;
    }
    if (r->n_steps == 0) { free(r->steps); r->steps = NULL; }
    free(prompt);
    gen_free(g);
    return r;

fail:
    gen_free(g);
fail_prompt:
    free(ptext);
    free(prompt);
    return NULL;
}
