/* budget.c: the memory rules of design/memory.md applied to one generation run.
 *
 * Model of the run's memory (bytes):
 *   other + weights + work + kv_hwm * slot_bytes
 * where kv_hwm is the most KV slots ever in use: the cache's pages become
 * resident when a slot is first written and stay resident after dead slots are
 * reclaimed, so slots below the high-water mark cost nothing new. A step may
 * feed `w` tokens when that model, or the measured resident set if it is
 * larger, plus the new slots stays below the critical level (95%) of
 * --max-memory-gb. The KV cache itself refuses to pass max_cache_tokens slots or
 * its byte share (tp_kv_reserve, whose messages are the spec's).
 */
#include "memory/budget.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "memory/memory.h"
#include "tokenizer/tokenizer.h"

struct tp_budget {
    tempo_memory_monitor *mon;
    const tp_model *m;
    bool adapt, debug, warned;
    int max_tokens;
    int w_start;            /* effective max_parallel_tokens */
    int w_cur;              /* current cap (shrinks under "adapt") */
    int max_slots;
    size_t max_bytes;       /* the KV cache's byte share */
    size_t crit;            /* critical level in bytes */
    int kv_hwm;             /* most slots ever in use */
    size_t records;         /* TP_MEM_MEMBER_OVERHEAD for every token fed so far */
    tempo_adjustment *adj;
    int n_adj, cap_adj;
};

static tp_kv_type kv_type_of(const char *s) {
    if (s && strcmp(s, "f16") == 0) return TP_KV_F16;
    if (s && strcmp(s, "q8_0") == 0) return TP_KV_Q8_0;
    return TP_KV_F32;
}

/* Tokens the prompt will take (an upper bound when it cannot be tokenized). */
static int prompt_tokens(const tp_model *m, const tempo_config *cfg) {
    const char *p = cfg->prompt ? cfg->prompt : "";
    int cap = (int)strlen(p) + 8;
    int n = cap;
    if (m->tok) {
        int32_t *ids = tp_xmalloc((size_t)cap * sizeof *ids);
        int r = tp_tokenizer_encode(m->tok, p, true, true, ids, cap);
        free(ids);
        if (r >= 0) n = r;
    }
    /* the chat wrapping of --enable-thinking: headers and the system message */
    if (cfg->enable_thinking) n += 128;
    return n;
}

tp_budget *tp_budget_new(tempo_memory_monitor *mon, const tp_model *m, const tempo_config *cfg, char *err) {
    if (!mon) { tp_fail(err, "internal: no memory monitor"); return NULL; }
    char msg[TP_ERR_LEN], a[32], b2[32], c[32];
    const tp_hparams *hp = &m->hp;

    tp_memory_set_kv(mon, 0);
    tp_memory_set_model(mon, m);
    tempo_mem_level lv = tempo_memory_check_limit(mon, "model loading", msg);
    if (lv == TEMPO_MEM_CRITICAL) { tp_fail(err, "%s", msg); return NULL; }
    if (lv == TEMPO_MEM_WARNING) fprintf(stderr, "Warning: %s\n", msg);

    tp_budget *b = tp_xcalloc(1, sizeof *b);
    b->mon = mon;
    b->m = m;
    b->adapt = cfg->memory_policy && strcmp(cfg->memory_policy, "adapt") == 0;
    b->debug = cfg->debug_mode;
    b->max_tokens = cfg->max_tokens;
    b->max_slots = hp->n_ctx;
    if (cfg->max_cache_tokens > 0 && cfg->max_cache_tokens < b->max_slots) b->max_slots = cfg->max_cache_tokens;
    b->crit = (size_t)(TP_MEM_CRITICAL_FRACTION * (double)tp_memory_limit_bytes(mon));

    size_t slot = tp_memory_kv_slot_bytes(hp->n_layers, hp->n_kv_heads * hp->head_dim, kv_type_of(cfg->kv_cache_type));
    size_t tok_work = tp_memory_token_work_bytes(hp->dim, hp->n_vocab, b->max_slots);
    size_t usage = tp_memory_usage_bytes(mon);
    int n_prompt = prompt_tokens(m, cfg);

    if (cfg->default_mode) {
        b->w_start = 1;
    } else if (cfg->max_parallel_tokens > 0) {
        b->w_start = cfg->max_parallel_tokens;
    } else {
        /* Auto: what is left of the limit (and of the machine) after the model
         * and the prompt's KV slots, 20% held back, divided by the cost of one
         * parallel token over the whole run. */
        double avail = tempo_memory_available_gb(mon) * TP_GB - (double)n_prompt * (double)slot;
        if (avail < 0) avail = 0;
        size_t per = 0;
        b->w_start = tp_memory_max_parallel_for(avail, cfg->max_tokens, slot + TP_MEM_MEMBER_OVERHEAD, tok_work, &per);
        fprintf(stderr,
                "Auto max_parallel_tokens: %d (%s available under --max-memory-gb %s, 20%% reserved; "
                "%s per parallel token = %d steps x (%zu-byte KV slot + %d bytes of records) + %zu bytes of working "
                "buffers; range 1-%d)\n",
                b->w_start, tp_fmt_gb(avail, a, sizeof a),
                tp_fmt_gb((double)tp_memory_limit_bytes(mon), b2, sizeof b2),
                tp_fmt_gb((double)per, c, sizeof c), cfg->max_tokens, slot, TP_MEM_MEMBER_OVERHEAD, tok_work,
                TP_MEM_AUTO_MAX_PARALLEL);
    }
    b->w_cur = b->w_start;

    /* The KV cache's share: what is left under the critical level once the
     * model, the runtime and the per-token buffers of a full-width step are in. */
    size_t fixed = usage + (size_t)b->w_start * tok_work;
    b->max_bytes = b->crit > fixed ? b->crit - fixed : 1; /* 1, not 0: 0 would mean "no limit" */
    tp_budget_log(b, "After model load", NULL);
    return b;
}

void tp_budget_free(tp_budget *b) {
    if (!b) return;
    for (int i = 0; i < b->n_adj; i++) free(b->adj[i].reason);
    free(b->adj);
    free(b);
}

int tp_budget_max_parallel(const tp_budget *b) { return b->w_start; }
int tp_budget_kv_max_slots(const tp_budget *b) { return b->max_slots; }
size_t tp_budget_kv_max_bytes(const tp_budget *b) { return b->max_bytes; }
int tp_budget_current_width(const tp_budget *b) { return b->w_cur; }

/* Resident bytes now: the accounted model with the KV high-water mark and the
 * records of the tokens fed so far, or the measured resident set when that is
 * larger. */
static size_t base_bytes(tp_budget *b, size_t slot) {
    tp_memory_set_kv(b->mon, (size_t)b->kv_hwm * slot);
    tp_proc_mem pm;
    tp_memory_read_proc(&pm);
    size_t acc = tp_memory_accounted_bytes(b->mon) + b->records;
    return (size_t)pm.vm_rss > acc ? (size_t)pm.vm_rss : acc;
}

/* How many more members fit under the critical level. A member costs its KV
 * slot (unless it reuses a reclaimed one) plus its record and its share of the
 * text and JSON output. */
static long mem_free_slots(tp_budget *b, const tp_kv *kv, size_t slot, size_t *base_out) {
    size_t base = base_bytes(b, slot);
    if (base_out) *base_out = base;
    long fresh = b->crit > base ? (long)((b->crit - base) / (slot + TP_MEM_MEMBER_OVERHEAD)) : 0;
    long reuse = b->kv_hwm > kv->n ? b->kv_hwm - kv->n : 0;
    return fresh + reuse;
}

/* Slots left under max_cache_tokens. */
static long cache_free_slots(const tp_kv *kv) { return (long)kv->max_slots - kv->n; }

/* Slots left under the KV cache's byte share of the memory limit. */
static long share_free_slots(const tp_kv *kv, size_t slot) {
    return kv->max_bytes ? (long)(kv->max_bytes / slot) - kv->n : (long)kv->max_slots - kv->n;
}

static void record(tp_budget *b, int step, int old_w, int new_w, const char *reason) {
    if (b->n_adj == b->cap_adj) {
        b->cap_adj = b->cap_adj ? 2 * b->cap_adj : 8;
        b->adj = tp_xrealloc(b->adj, (size_t)b->cap_adj * sizeof *b->adj);
    }
    tempo_adjustment *a = &b->adj[b->n_adj++];
    a->from_step = step;
    a->old_width = old_w;
    a->new_width = new_w;
    a->reason = tp_xstrdup(reason);
}

static int stop_memory(tp_budget *b, int step, int width, size_t slot, long mem_free, tempo_stop_reason *why,
                       char *msg) {
    char need[32], left[32], lim[32];
    *why = TEMPO_STOP_MEMORY_LIMIT;
    tp_fail(msg,
            "Memory limit reached at step %d: %d more token%s need %s but %s is left under the critical level "
            "(95%% of --max-memory-gb %s). Raise --max-memory-gb, lower --max-parallel-tokens or --max-tokens, "
            "raise --selection-threshold, use --kv-cache-type f16, or use --memory-policy adapt to narrow later "
            "steps instead of stopping.",
            step, width, width == 1 ? "" : "s",
            tp_fmt_gb((double)width * (double)(slot + TP_MEM_MEMBER_OVERHEAD), need, sizeof need),
            tp_fmt_gb((double)(mem_free > 0 ? mem_free : 0) * (double)(slot + TP_MEM_MEMBER_OVERHEAD), left,
                             sizeof left),
            tp_fmt_gb((double)tp_memory_limit_bytes(b->mon), lim, sizeof lim));
    return 0;
}

int tp_budget_step_width(tp_budget *b, tp_kv *kv, int step, int want, tempo_stop_reason *why, char *msg) {
    if (want < 1) want = 1;
    if (kv->n > b->kv_hwm) b->kv_hwm = kv->n; /* the prompt's slots, fed before the first step */
    int width = want < b->w_cur ? want : b->w_cur;
    size_t slot = tp_kv_bytes_per_slot(kv);
    size_t base = 0;
    long mem_free = 0, cache_free = 0, share_free = 0;
    for (int pass = 0; pass < 2; pass++) {
        mem_free = mem_free_slots(b, kv, slot, &base);
        cache_free = cache_free_slots(kv);
        share_free = share_free_slots(kv, slot);
        if (share_free < mem_free) mem_free = share_free; /* both are the memory limit */
        if (pass == 1 || !(width > mem_free || width > cache_free) || kv->n_alive == kv->n) break;
        tp_kv_compact(kv, NULL); /* reclaim pruned slots before refusing or narrowing */
    }

    if (b->adapt) {
        /* Steps still to feed, this one included (the last step's set is not fed). */
        long rest = (long)b->max_tokens - 1 - step;
        if (rest < 1) rest = 1;
        bool by_memory = mem_free <= cache_free;
        long free_slots = by_memory ? mem_free : cache_free;
        if (free_slots < 1) {
            if (by_memory) return stop_memory(b, step, 1, slot, mem_free, why, msg);
            int which = 0;
            tp_kv_reserve(kv, 1, &which, msg);
            *why = TEMPO_STOP_CACHE_LIMIT;
            return 0;
        }
        /* Narrow when this width would leave later steps without one slot each:
         * the new cap shares what is left evenly over the remaining steps. */
        if (free_slots - width < rest - 1) {
            int nw = (int)(free_slots / rest);
            if (nw < 1) nw = 1;
            if (nw < b->w_cur) {
                char reason[TP_ERR_LEN], lim[32];
                if (by_memory)
                    snprintf(reason, sizeof reason,
                             "memory: room for %ld more tokens under 95%% of --max-memory-gb %s, %ld steps to go",
                             free_slots, tp_fmt_gb((double)tp_memory_limit_bytes(b->mon), lim, sizeof lim),
                             rest);
                else
                    snprintf(reason, sizeof reason,
                             "cache: %ld of %d KV slots (--max-cache-tokens) left, %ld steps to go", free_slots,
                             kv->max_slots, rest);
                record(b, step, b->w_cur, nw, reason);
                b->w_cur = nw;
            }
            if (width > nw) width = nw;
        }
    } else if (width > mem_free) {
        return stop_memory(b, step, width, slot, mem_free, why, msg);
    }

    int which = 0;
    if (tp_kv_reserve(kv, width, &which, msg)) {
        /* past max_cache_tokens: cache_limit; past the cache's byte share of the memory limit: memory_limit */
        *why = which == 2 ? TEMPO_STOP_MEMORY_LIMIT : TEMPO_STOP_CACHE_LIMIT;
        return 0;
    }

    int new_n = kv->n + width;
    size_t grow = (size_t)width * TP_MEM_MEMBER_OVERHEAD + (new_n > b->kv_hwm ? (size_t)(new_n - b->kv_hwm) * slot : 0);
    if (new_n > b->kv_hwm) b->kv_hwm = new_n;
    b->records += (size_t)width * TP_MEM_MEMBER_OVERHEAD;
    tp_memory_set_kv(b->mon, (size_t)b->kv_hwm * slot);
    if (!b->warned && tp_memory_level(b->mon, base + grow) >= TEMPO_MEM_WARNING) {
        char u[32], lim[32];
        fprintf(stderr, "Warning: memory at %s of --max-memory-gb %s (%.1f%%, warning level 85%%) at step %d\n",
                tp_fmt_gb((double)(base + grow), u, sizeof u),
                tp_fmt_gb((double)tp_memory_limit_bytes(b->mon), lim, sizeof lim),
                100.0 * (double)(base + grow) / (double)tp_memory_limit_bytes(b->mon), step);
        b->warned = true;
    }
    if (msg) msg[0] = 0;
    return width;
}

int tp_budget_adjustments(tp_budget *b, tempo_adjustment **out) {
    int n = b->n_adj;
    *out = b->adj;
    b->adj = NULL;
    b->n_adj = b->cap_adj = 0;
    return n;
}

void tp_budget_log(tp_budget *b, const char *label, const tp_kv *kv) {
    if (!b->debug) return;
    if (kv) {
        int used = kv->n > b->kv_hwm ? kv->n : b->kv_hwm;
        tp_memory_set_kv(b->mon, (size_t)used * tp_kv_bytes_per_slot(kv));
    }
    char line[256];
    tempo_memory_log_line(b->mon, label, line, sizeof line);
    fprintf(stderr, "%s\n", line);
}
