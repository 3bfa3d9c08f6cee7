/* budget.c: the memory rules of design/memory.md applied to one session.
 *
 * Model of the process's memory (bytes), kept by the model's monitor:
 *   other + weights + sum over live sessions of (work + kv_hwm * slot_bytes + records)
 * where a session's kv_hwm is the most KV slots it ever had in use: the cache's pages become
 * resident when a slot is first written and stay resident after dead slots are reclaimed, so
 * slots below the high-water mark cost nothing new. A step may feed `w` tokens when that total,
 * or the measured resident set if it is larger, plus the new slots stays below the critical
 * level (95%) of --max-memory-gb. The KV cache itself refuses to pass its slot capacity or its
 * byte share (tp_kv_reserve, whose messages are the spec's).
 */
#include "memory/budget.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/log.h"
#include "kv/spill.h"
#include "memory/memory.h"

struct tp_budget {
    tempo_memory_monitor *mon;
    const tp_model *m;
    tp_budget_params p;
    bool warned;
    int w_start;            /* effective max_parallel_tokens */
    int w_cur;              /* current cap (shrinks under "adapt") */
    int limit_slots;        /* max_cache_tokens, or the context */
    int max_slots;          /* the cache's capacity: limit_slots, or less when the run cannot use more */
    size_t max_bytes;       /* the KV cache's byte share */
    size_t crit;            /* critical level in bytes */
    size_t slot;            /* host bytes of one KV slot (its layers not on a GPU) */
    size_t slot_all;        /* bytes of one KV slot, every layer */
    int kv_hwm;             /* most slots ever in use */
    long run_members;       /* members the run may feed at full width (their records) */
    int hot;                /* --kv-offload: the newest slots kept in memory */
    int spill_max;          /* --kv-offload: most slots whose one layer fits in memory while it is read */
    tp_mem_share share;     /* what this session added to the monitor */
    tempo_adjustment *adj;
    int n_adj, cap_adj;
};

tp_budget *tp_budget_new(tempo_memory_monitor *mon, const tp_model *m, const tp_budget_params *p, char *err) {
    if (!mon) { tp_fail(err, "internal: no memory monitor"); return NULL; }
    char a[32], b2[32], c[32], d[32], e[32], f[32];
    (void)c;
    const tp_hparams *hp = &m->hp;

    tp_budget *b = calloc(1, sizeof *b);
    if (!b) { tp_fail(err, "out of memory"); return NULL; }
    b->mon = mon;
    b->m = m;
    b->p = *p;
    b->crit = (size_t)(TP_MEM_CRITICAL_FRACTION * (double)tp_memory_limit_bytes(mon));
    int dev_layers = p->device_layers < 0 ? 0 : p->device_layers > hp->n_layers ? hp->n_layers : p->device_layers;
    b->p.device_layers = dev_layers;
    b->slot_all = tp_memory_kv_slot_bytes(hp->n_layers, hp->n_kv_heads * hp->head_dim, p->kv_type);
    b->slot = tp_memory_kv_slot_bytes(hp->n_layers - dev_layers, hp->n_kv_heads * hp->head_dim, p->kv_type);
    b->limit_slots = hp->n_ctx;
    if (p->max_cache_tokens > 0 && p->max_cache_tokens < b->limit_slots) b->limit_slots = p->max_cache_tokens;
    int P = p->n_prompt;
    if (P > b->limit_slots) {
        tp_fail(err, "the prompt is %d tokens but the KV cache may hold only %d (--max-cache-tokens)", P, b->limit_slots);
        free(b);
        return NULL;
    }
    if (P + p->scratch_slots + 1 > b->limit_slots) {
        tp_fail(err,
                "the prompt's %d tokens, the --use-mcts search's %d slots and a step need %d KV slots but the KV cache "
                "may hold only %d (--max-cache-tokens, or the context): lower --mcts-simulations or --mcts-depth",
                P, p->scratch_slots, P + p->scratch_slots + 1, b->limit_slots);
        free(b);
        return NULL;
    }
    long steps_fed = p->max_tokens > 1 ? p->max_tokens - 1 : 0; /* the last step's set is not fed */
    /* The most slots the run can use at the widest automatic width: what the estimates below are
     * sized by (a file may claim a context of any length; the run's need bounds it). */
    long widest = (long)P + steps_fed * TP_MEM_AUTO_MAX_PARALLEL + p->scratch_slots;
    int est_slots = widest < b->limit_slots ? (int)widest : b->limit_slots;
    size_t tok_work = tp_memory_token_work_bytes(hp->dim, hp->n_vocab, est_slots);

    if (p->default_mode) {
        b->w_start = 1;
    } else if (p->max_parallel_tokens > 0) {
        b->w_start = p->max_parallel_tokens;
    } else {
        /* Auto: what is left under the limit's critical level (and of the machine) after the model, the other
         * sessions, this session's compute buffers and the prompt's KV slots, 20% held back, divided by the cost of one parallel
         * token over the whole run; then no wider than the cache can hold for every step, so a
         * run sized here never ends at the cache limit. */
        /* What is left under the critical level (95%), where steps are refused, and of the
         * machine's free memory. */
        size_t use_now = tp_memory_usage_bytes(mon);
        double room = b->crit > use_now ? (double)(b->crit - use_now) : 0.0;
        double machine = tempo_memory_available_gb(mon) * TP_GB;
        double avail = (machine < room ? machine : room) - (double)P * (double)b->slot_all -
                       (double)tp_compute_estimate_bytes(m, p->n_threads, TP_MATMUL_MAX_BATCH, est_slots) -
                       (double)p->run_bytes_fixed;
        if (avail < 0) avail = 0;
        /* a parallel token's buffers: at least the spec's hidden state, logits and attention
         * scores; the session's own count when it is larger */
        if (p->run_bytes_per_width > tok_work) tok_work = p->run_bytes_per_width;
        size_t per = 0;
        int w = tp_memory_max_parallel_for(avail, p->max_tokens, b->slot_all + TP_MEM_MEMBER_OVERHEAD, tok_work, &per);
        const char *by = "memory";
        if (p->device_slot_bytes > 0 && p->device_layers > 0 && steps_fed > 0 && !p->one_member) {
            /* a GPU session: the device's KV rows for every step at this width, 20% held back */
            double rows = (double)p->device_room * (1.0 - TP_MEM_AUTO_RESERVE) / (double)p->device_slot_bytes;
            double wd = (rows - P - p->scratch_slots) / (double)steps_fed;
            if (wd < w) {
                w = wd >= 1 ? (int)wd : 1;
                by = "the GPU's free memory";
            }
        }
        if (steps_fed > 0 && !p->one_member && (long)(b->limit_slots - P - p->scratch_slots) / steps_fed < w) {
            w = (int)((b->limit_slots - P - p->scratch_slots) / steps_fed);
            if (w < 1) w = 1;
            by = "the KV cache's slots";
        }
        if (p->max_width > 0 && w > p->max_width) { w = p->max_width; by = "one forward chunk (visible siblings)"; }
        b->w_start = w;
        tp_log(TEMPO_LOG_INFO,
               "Auto max_parallel_tokens: %d (limited by %s; %s available under 95%% of --max-memory-gb %s, 20%% reserved; "
               "%s per parallel token = %d steps x (%zu-byte KV slot + %d bytes of records) + %zu bytes of working "
               "buffers; %d KV slots for a %d-token prompt and %ld fed steps; range 1-%d)",
               w, by, tp_fmt_gb(avail, a, sizeof a), tp_fmt_gb((double)tp_memory_limit_bytes(mon), b2, sizeof b2),
               tp_fmt_gb((double)per, c, sizeof c), p->max_tokens, b->slot_all, TP_MEM_MEMBER_OVERHEAD, tok_work,
               b->limit_slots, P, steps_fed, TP_MEM_AUTO_MAX_PARALLEL);
    }
    b->w_cur = b->w_start;

    /* The cache never needs more than the prompt plus every fed step at full width (one member
     * per step under --use-mcts), plus the search's scratch slots. */
    long per_step = p->one_member ? 1 : b->w_start;
    long need = (long)P + steps_fed * per_step + p->scratch_slots;
    b->max_slots = need < b->limit_slots ? (int)(need > P ? need : P) : b->limit_slots;
    if (b->max_slots < 1) b->max_slots = 1;

    /* The session's fixed part: its compute context and the prompt's slots (and the first
     * search's scratch slots). (Its other buffers, sized by W and the capacity, are reserved by the
     * session itself before it makes them: tp_budget_reserve_more.) */
    size_t compute = tp_compute_estimate_bytes(m, p->n_threads, TP_MATMUL_MAX_BATCH, b->max_slots);
    tp_mem_share first = { (size_t)(P + p->scratch_slots) * b->slot + TP_KV_PAGE_SLACK(hp->n_layers), compute, 0, 0 };
    b->run_members = steps_fed * per_step;
    size_t before = 0;
    if (tp_memory_try_add(mon, &first, b->crit, &before)) {
        tempo_memory_stats st;
        tempo_memory_get_stats(mon, &st);
        size_t left = b->crit > before ? b->crit - before : 0;
        tp_fail(err,
                "Memory limit: the session needs %s (compute buffers %s for %d parallel tokens, the prompt's "
                "%d KV slots %s) but %s is left under the critical level (95%% of --max-memory-gb %s) with the model "
                "and %d other live session%s loaded. Raise --max-memory-gb, lower --max-parallel-tokens or "
                "--max-cache-tokens, or wait for other sessions to end.",
                tp_fmt_gb((double)(first.kv + first.work), a, sizeof a), tp_fmt_gb((double)compute, b2, sizeof b2),
                b->w_start, P, tp_fmt_gb((double)first.kv, d, sizeof d), tp_fmt_gb((double)left, e, sizeof e),
                tp_fmt_gb((double)tp_memory_limit_bytes(mon), f, sizeof f), st.sessions,
                st.sessions == 1 ? "" : "s");
        free(b);
        return NULL;
    }
    b->share = first;
    b->kv_hwm = P + p->scratch_slots;
    tp_memory_session_count(mon, +1);

    /* The KV cache's byte share: what is left under the critical level once the model, the
     * runtime, the other sessions and this session's buffers are in. An offloaded cache has no
     * byte limit: its rows are on disk, its resident part was reserved above. */
    size_t fixed = before + first.work;
    b->max_bytes = p->offload ? 0 : b->crit > fixed ? b->crit - fixed : 1; /* 1, not 0: 0 would mean "no limit" */
    return b;
}

/* --kv-offload: size the cache's resident part from what the limit leaves once everything the
 * session reserved so far and the records of every member the run may feed are counted. With H
 * hot slots, n slots in use and slot = L x lslot bytes (lslot: one layer's K and V rows), the
 * resident part is at most H x slot + (n - H) x lslot + slack: every layer's hot rows, and the
 * older rows of the one layer whose attention pass is reading them. H is the most that keeps this
 * within the room for the cache's whole capacity; when even H = 0 does not, the run may grow only
 * to spill_max slots. The reservation made so far for the prompt's slots becomes this one. */
int tp_budget_plan_offload(tp_budget *b, char *err) {
    const tp_hparams *hp = &b->m->hp;
    size_t use = tp_memory_usage_bytes(b->mon);
    size_t records = (size_t)b->run_members * TP_MEM_MEMBER_OVERHEAD;
    size_t have = use > b->share.kv ? use - b->share.kv : 0; /* usage without this cache's reservation */
    size_t room = b->crit > have + records ? b->crit - have - records : 0;
    size_t slot = b->slot, lslot = slot / (size_t)hp->n_layers, slack = tp_kv_spill_slack_bytes(hp->n_layers);
    size_t cap = (size_t)b->max_slots, reserve;
    if (room >= cap * slot + slack) {
        b->hot = b->spill_max = b->max_slots; /* it all fits: nothing ever leaves memory */
        reserve = cap * slot + slack;
    } else if (slot > lslot && room >= cap * lslot + slack) {
        b->hot = (int)((room - slack - cap * lslot) / (slot - lslot));
        b->spill_max = b->max_slots;
        reserve = room;
    } else {
        b->hot = 0;
        b->spill_max = room > slack ? (int)((room - slack) / lslot < cap ? (room - slack) / lslot : cap) : 0;
        reserve = room;
    }
    int P = b->p.n_prompt + b->p.scratch_slots;
    if (b->spill_max < P) {
        char a[32], c[32], d[32];
        return tp_fail(err,
                       "Memory limit: with --kv-offload the prompt's %d KV slots need %s of one layer's rows in memory "
                       "while it is read, but %s is left under the critical level (95%% of --max-memory-gb %s) once "
                       "the model, the buffers and the run's records are counted. Raise --max-memory-gb, or lower "
                       "--max-tokens or --max-parallel-tokens.",
                       P, tp_fmt_gb((double)P * (double)lslot + (double)slack, a, sizeof a), tp_fmt_gb((double)room, c, sizeof c),
                       tp_fmt_gb((double)tp_memory_limit_bytes(b->mon), d, sizeof d));
    }
    if (reserve > b->share.kv) {
        tp_mem_share add = { reserve - b->share.kv, 0, 0, 0 };
        if (tp_memory_try_add(b->mon, &add, b->crit, NULL))
            return tp_fail(err, "Memory limit: another session took the memory --kv-offload planned for this one");
    } else {
        tp_mem_share sub = { b->share.kv - reserve, 0, 0, 0 };
        tp_memory_sub(b->mon, &sub);
    }
    b->share.kv = reserve;
    return 0;
}

void tp_budget_free(tp_budget *b) {
    if (!b) return;
    tp_memory_sub(b->mon, &b->share);
    tp_memory_session_count(b->mon, -1);
    for (int i = 0; i < b->n_adj; i++) free(b->adj[i].reason);
    free(b->adj);
    free(b);
}

int tp_budget_max_parallel(const tp_budget *b) { return b->w_start; }
size_t tp_budget_kv_bytes(const tp_budget *b) { return b->share.kv; }
int tp_budget_kv_hot_slots(const tp_budget *b) { return b->p.offload ? b->hot : -1; }
int tp_budget_kv_max_slots(const tp_budget *b) { return b->max_slots; }
size_t tp_budget_kv_max_bytes(const tp_budget *b) { return b->max_bytes; }
int tp_budget_current_width(const tp_budget *b) { return b->w_cur; }
size_t tp_budget_reserved_bytes(const tp_budget *b) {
    return b->share.kv + b->share.work + b->share.records + b->share.device;
}
size_t tp_budget_device_bytes(const tp_budget *b) { return b->share.device; }

int tp_budget_set_device(tp_budget *b, int layers, size_t bytes, size_t *left) {
    const tp_hparams *hp = &b->m->hp;
    if (layers < 0) layers = 0;
    if (layers > hp->n_layers) layers = hp->n_layers;
    size_t slot = tp_memory_kv_slot_bytes(hp->n_layers - layers, hp->n_kv_heads * hp->head_dim, b->p.kv_type);
    /* the slots counted so far (the prompt's), at the new host cost */
    size_t kv_fixed = (size_t)b->kv_hwm * b->slot, kv_new = (size_t)b->kv_hwm * slot;
    tp_mem_share add = { kv_new > kv_fixed ? kv_new - kv_fixed : 0, 0, 0,
                         bytes > b->share.device ? bytes - b->share.device : 0 };
    tp_mem_share sub = { kv_fixed > kv_new ? kv_fixed - kv_new : 0, 0, 0,
                         b->share.device > bytes ? b->share.device - bytes : 0 };
    size_t use = 0;
    tp_memory_sub(b->mon, &sub); /* what shrinks first, so a smaller total can fit */
    if (tp_memory_try_add(b->mon, &add, b->crit, &use)) {
        tp_memory_try_add(b->mon, &sub, 0, NULL); /* put it back: nothing changed */
        if (left) *left = b->crit > use ? b->crit - use : 0;
        return -1;
    }
    b->share.kv = b->share.kv - sub.kv + add.kv;
    b->share.device = bytes;
    b->slot = slot;
    b->p.device_layers = layers;
    return 0;
}
size_t tp_budget_fixed_bytes(const tp_budget *b) { return b->share.work; }

int tp_budget_reserve_more(tp_budget *b, size_t bytes, const char *what, char *err) {
    tp_mem_share add = { 0, bytes, 0, 0 };
    size_t use = 0;
    if (tp_memory_try_add(b->mon, &add, b->crit, &use)) {
        tempo_memory_stats st;
        tempo_memory_get_stats(b->mon, &st);
        char a[32], l[32], t[32];
        return tp_fail(err,
                       "Memory limit: %s need %s but %s is left under the critical level (95%% of --max-memory-gb %s) "
                       "with the model and %d other live session%s loaded. Raise --max-memory-gb, lower "
                       "--max-parallel-tokens, --max-tokens or --max-cache-tokens, or wait for other sessions to end.",
                       what, tp_fmt_gb((double)bytes, a, sizeof a),
                       tp_fmt_gb(b->crit > use ? (double)(b->crit - use) : 0.0, l, sizeof l),
                       tp_fmt_gb((double)tp_memory_limit_bytes(b->mon), t, sizeof t), st.sessions - 1,
                       st.sessions - 1 == 1 ? "" : "s");
    }
    b->share.work += bytes;
    return 0;
}

/* How many more members fit under the critical level, the next search's scratch slots kept. A
 * member costs its record and its share of the text and JSON output, and its KV slot unless the
 * slot is below the high-water mark (its pages are resident already). */
static long mem_free_slots(tp_budget *b, const tp_kv *kv, size_t *base_out) {
    size_t base = tp_memory_usage_bytes(b->mon);
    if (base_out) *base_out = base;
    double avail = b->crit > base ? (double)(b->crit - base) : 0.0;
    if (b->p.offload) {
        /* the cache's resident part was reserved at the start: a member costs its record, and
         * the cache may grow while one layer's rows fit in memory during its attention pass */
        long fresh = (long)(avail / TP_MEM_MEMBER_OVERHEAD);
        long rows = (long)b->spill_max - kv->n - b->p.scratch_slots;
        return fresh < rows ? fresh : rows;
    }
    long reuse = (long)b->kv_hwm - kv->n - b->p.scratch_slots; /* free slots below the high-water mark */
    long records_only = (long)(avail / TP_MEM_MEMBER_OVERHEAD);
    if (reuse >= records_only) return records_only;
    /* w > reuse members: w records and w - reuse new slots */
    double w = (avail + (double)reuse * (double)b->slot) / (double)(b->slot + TP_MEM_MEMBER_OVERHEAD);
    return w > 0 ? (long)w : 0;
}

/* Slots left under the cache's capacity. */
static long cache_free_slots(const tp_kv *kv) { return (long)kv->max_slots - kv->n; }

/* Slots left under the KV cache's byte share of the memory limit. */
static long share_free_slots(const tp_kv *kv, size_t slot) {
    /* a GPU session with every layer on the device has no host rows (slot 0): no byte share to pass */
    if (!slot) return LONG_MAX / 2;
    return kv->max_bytes ? (long)(kv->max_bytes / slot) - kv->n : (long)kv->max_slots - kv->n;
}

static tempo_adjustment *record(tp_budget *b, int step, int old_w, int new_w, const char *reason) {
    if (b->n_adj == b->cap_adj) {
        int cap = b->cap_adj ? 2 * b->cap_adj : 8;
        tempo_adjustment *more = realloc(b->adj, (size_t)cap * sizeof *more);
        if (!more) return NULL; /* the adjustment still applies; only its record is lost */
        b->adj = more;
        b->cap_adj = cap;
    }
    char *r = strdup(reason);
    if (!r) return NULL;
    b->adj[b->n_adj] = (tempo_adjustment){ .from_step = step, .old_width = old_w, .new_width = new_w, .reason = r,
                                           .kind = TEMPO_ADJUST_WIDTH };
    return &b->adj[b->n_adj++];
}

static int stop_memory(tp_budget *b, int step, int width, long mem_free, tempo_stop_reason *why, char *msg) {
    char need[32], left[32], lim[32];
    size_t per = (b->p.offload ? 0 : b->slot) + TP_MEM_MEMBER_OVERHEAD;
    *why = TEMPO_STOP_MEMORY_LIMIT;
    tp_fail(msg,
            "Memory limit reached at step %d: %d more token%s need %s but %s is left under the critical level "
            "(95%% of --max-memory-gb %s). Raise --max-memory-gb, lower --max-parallel-tokens or --max-tokens, "
            "raise --selection-threshold, use --kv-cache-type f16, or use --memory-policy adapt to narrow later "
            "steps instead of stopping.",
            step, width, width == 1 ? "" : "s", tp_fmt_gb((double)width * (double)per, need, sizeof need),
            tp_fmt_gb((double)(mem_free > 0 ? mem_free : 0) * (double)per, left, sizeof left),
            tp_fmt_gb((double)tp_memory_limit_bytes(b->mon), lim, sizeof lim));
    return 0;
}

/* The cache's limit messages count the search's slots too: say so. */
static void scratch_note(char *msg, int scratch) {
    size_t n = strlen(msg);
    snprintf(msg + n, TP_ERR_LEN > n ? TP_ERR_LEN - n : 0, " (The count includes the %d slots the --use-mcts search "
             "uses within a step: lower --mcts-simulations or --mcts-depth.)", scratch);
}

int tp_budget_step_width(tp_budget *b, const tp_kv *kv, int step, int want, tempo_stop_reason *why, char *msg) {
    if (want < 1) want = 1;
    if (kv->n > b->kv_hwm && !b->p.offload) { /* slots fed outside a granted step (the prompt): account them now */
        tp_mem_share add = { (size_t)(kv->n - b->kv_hwm) * b->slot, 0, 0, 0 };
        tp_memory_try_add(b->mon, &add, 0, NULL);
        b->share.kv += add.kv;
        b->kv_hwm = kv->n;
    }
    int width = want < b->w_cur ? want : b->w_cur;
    int scratch = b->p.scratch_slots; /* kept free for the next step's search */
    size_t base = 0;
    long mem_free = mem_free_slots(b, kv, &base);
    long cache_free = cache_free_slots(kv) - scratch;
    long share_free = share_free_slots(kv, b->slot) - scratch;
    if (share_free < mem_free) mem_free = share_free; /* both are the memory limit */
    if ((width > mem_free || width > cache_free) && kv->n_alive < kv->n) return TP_BUDGET_COMPACT;

    if (b->p.adapt) {
        /* Steps still to feed, this one included (the last step's set is not fed). */
        long rest = (long)b->p.max_tokens - 1 - step;
        if (rest < 1) rest = 1;
        bool by_memory = mem_free <= cache_free;
        long free_slots = by_memory ? mem_free : cache_free;
        if (free_slots < 1) {
            if (by_memory) return stop_memory(b, step, 1, mem_free, why, msg);
            int which = 0;
            tp_kv_reserve(kv, 1 + scratch, &which, msg);
            if (scratch) scratch_note(msg, scratch);
            *why = TEMPO_STOP_CACHE_LIMIT;
            return 0;
        }
        /* Narrow when this width would leave later steps without one slot each: the new cap
         * shares what is left evenly over the remaining steps. */
        if (free_slots - width < rest - 1) {
            int nw = (int)(free_slots / rest);
            if (nw < 1) nw = 1;
            if (nw < b->w_cur) {
                char reason[TP_ERR_LEN], lim[32];
                if (by_memory)
                    snprintf(reason, sizeof reason,
                             "memory: room for %ld more tokens under 95%% of --max-memory-gb %s, %ld steps to go",
                             free_slots, tp_fmt_gb((double)tp_memory_limit_bytes(b->mon), lim, sizeof lim), rest);
                else
                    snprintf(reason, sizeof reason, "cache: %ld of %d KV slots (--max-cache-tokens) left, %ld steps to go",
                             free_slots, kv->max_slots, rest);
                record(b, step, b->w_cur, nw, reason);
                b->w_cur = nw;
            }
            if (width > nw) width = nw;
        }
    } else if (width > mem_free) {
        if (b->p.prune && mem_free >= 1) {
            /* --memory-policy prune: the session pruned what it could (tp_budget_room); what
             * still does not fit is cut from this and later steps */
            char reason[TP_ERR_LEN], lim[32];
            snprintf(reason, sizeof reason,
                     "memory: pruning freed what it could; room for %ld more tokens under 95%% of --max-memory-gb %s",
                     mem_free, tp_fmt_gb((double)tp_memory_limit_bytes(b->mon), lim, sizeof lim));
            record(b, step, b->w_cur, (int)mem_free, reason);
            b->w_cur = (int)mem_free;
            width = (int)mem_free;
        } else if (b->p.offload && (long)b->spill_max - kv->n - scratch < width) {
            char lim[32];
            *why = TEMPO_STOP_MEMORY_LIMIT;
            return tp_fail(msg,
                           "Memory limit reached at step %d: with --kv-offload the cache may grow to %d slots (one "
                           "layer's rows of all of them must fit in memory while it is read under 95%% of "
                           "--max-memory-gb %s); %d more do not fit. Raise --max-memory-gb, lower --max-tokens or "
                           "--max-parallel-tokens, or use --memory-policy adapt.",
                           step, b->spill_max, tp_fmt_gb((double)tp_memory_limit_bytes(b->mon), lim, sizeof lim), width),
                   0;
        } else {
            return stop_memory(b, step, width, mem_free, why, msg);
        }
    }

    int which = 0;
    if (tp_kv_reserve(kv, width + scratch, &which, msg)) {
        /* past the cache's capacity: cache_limit; past its byte share of the memory limit: memory_limit */
        *why = which == 2 ? TEMPO_STOP_MEMORY_LIMIT : TEMPO_STOP_CACHE_LIMIT;
        if (scratch) scratch_note(msg, scratch);
        return 0;
    }

    int new_n = kv->n + width + scratch;
    tp_mem_share add = { !b->p.offload && new_n > b->kv_hwm ? (size_t)(new_n - b->kv_hwm) * b->slot : 0, 0,
                         (size_t)width * TP_MEM_MEMBER_OVERHEAD, 0 };
    if (tp_memory_try_add(b->mon, &add, b->crit, NULL))
        return stop_memory(b, step, width, mem_free_slots(b, kv, NULL), why, msg); /* another session took it */
    b->share.kv += add.kv;
    b->share.records += add.records;
    if (new_n > b->kv_hwm) b->kv_hwm = new_n;
    size_t grow = add.kv + add.records;
    if (!b->warned && tp_memory_level(b->mon, base + grow) >= TEMPO_MEM_WARNING) {
        char u[32], lim[32];
        tp_log(TEMPO_LOG_WARN, "Warning: memory at %s of --max-memory-gb %s (%.1f%%, warning level 85%%) at step %d",
               tp_fmt_gb((double)(base + grow), u, sizeof u),
               tp_fmt_gb((double)tp_memory_limit_bytes(b->mon), lim, sizeof lim),
               100.0 * (double)(base + grow) / (double)tp_memory_limit_bytes(b->mon), step);
        b->warned = true;
    }
    if (msg) msg[0] = 0;
    return width;
}

long tp_budget_room(tp_budget *b, const tp_kv *kv, int want, bool *warning) {
    int scratch = b->p.scratch_slots;
    size_t base = 0;
    long free_slots = mem_free_slots(b, kv, &base);
    long share = share_free_slots(kv, b->slot) - scratch;
    if (share < free_slots) free_slots = share;
    /* the usage after granting `want`: new KV slots above the high-water mark, and the records */
    long fresh = (long)kv->n + want + scratch - b->kv_hwm;
    size_t after = base + (fresh > 0 && !b->p.offload ? (size_t)fresh * b->slot : 0) + (size_t)want * TP_MEM_MEMBER_OVERHEAD;
    if (warning) *warning = tp_memory_level(b->mon, after) >= TEMPO_MEM_WARNING;
    return free_slots;
}

void tp_budget_record_rule(tp_budget *b, int step, bool relative, double old_threshold, double new_threshold,
                           const char *reason) {
    tempo_adjustment *a = record(b, step, b->w_cur, b->w_cur, reason);
    if (!a) return; /* out of memory: the rule still changes, only its record is lost */
    a->kind = TEMPO_ADJUST_PRUNE_RULE;
    a->relative = relative;
    a->old_threshold = old_threshold;
    a->new_threshold = new_threshold;
}

int tp_budget_adjustments(const tp_budget *b, const tempo_adjustment **out) {
    *out = b->adj;
    return b->n_adj;
}

void tp_budget_log(tp_budget *b, const char *label, const tp_kv *kv) {
    (void)kv;
    if (!b->p.debug) return;
    char line[256];
    tempo_memory_log_line(b->mon, label, line, sizeof line);
    tp_log(TEMPO_LOG_DEBUG, "%s", line);
}
