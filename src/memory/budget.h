/* budget.h: the memory rules of design/memory.md applied to one session.
 *
 * A session asks its budget, not the memory monitor directly: how wide a step may be, how many
 * KV slots and bytes its cache may use, and whether the run must stop. The budget keeps the
 * session's share of the model's monitor (one --max-memory-gb for the model and every live
 * session) and gives it back when freed. It reads the KV cache's counters but never changes the
 * cache: when only reclaiming dead slots makes room, it says so and the session compacts.
 */
#ifndef TEMPO_BUDGET_H
#define TEMPO_BUDGET_H

#include <stdbool.h>
#include <stddef.h>

#include "tempo.h"
#include "kv/kvcache.h"
#include "model/model.h"

typedef struct tp_budget tp_budget;

typedef struct {
    /* The session's own buffers (record, bookkeeping, logits, attention rows): a fixed part and
     * a part per member of the width; the automatic width counts them. */
    size_t run_bytes_fixed, run_bytes_per_width;
    int n_prompt;            /* prompt tokens (known: the budget is made at prefill) */
    int max_tokens;          /* steps of the run */
    int max_parallel_tokens; /* 0 = auto from memory */
    int max_cache_tokens;    /* 0 = the model's context */
    bool default_mode;       /* one token per step */
    bool adapt;              /* memory_policy adapt */
    bool debug;              /* memory log lines */
    tp_kv_type kv_type;
    int n_threads;           /* of the session's compute context */
    int max_width;           /* a hard cap on W from the caller (visible sets: one forward chunk); 0 = none */
    /* --use-mcts: each step feeds one token (W only sizes the candidates), and a search appends
     * up to scratch_slots slots above the live ones and drops them within the step: every grant
     * keeps them free (in the cache and under the memory limit) for the next step's search. */
    bool one_member;
    int scratch_slots;
    /* --memory-policy prune: once pruning cannot make room (tp_budget_room), a step is cut to
     * what fits instead of stopping the run, and it stops only when not one member fits. */
    bool prune;
    /* --kv-offload: the cache's rows live in spill files; tp_budget_plan_offload reserves the
     * memory its resident part may ever hold, after which a member costs only its record. */
    bool offload;
    /* A GPU session (gpu/backend.h): the KV rows of the first device_layers layers live on the
     * device, reserved once for the cache's capacity (tp_budget_set_device), so a step's new slots
     * cost host memory for the other layers only. The automatic width still counts a slot's every
     * layer, and keeps the device's part within device_room bytes (its free memory less the
     * buffers that do not grow with the cache) at device_slot_bytes per slot. */
    int device_layers;
    size_t device_room, device_slot_bytes;
} tp_budget_params;

/* Computes the effective max_parallel_tokens W (auto from memory when max_parallel_tokens is 0,
 * logged), the KV cache's slot capacity (never more than the run can use, so nothing is sized by
 * a file's context claim alone) and byte share, and reserves the session's fixed part in the
 * model's monitor: the compute context (tp_compute_estimate_bytes), W tokens' working buffers
 * and the prompt's KV slots. NULL with err (prefixed by nothing; the spec's messages) when the
 * session does not fit next to the model and the other sessions. */
tp_budget *tp_budget_new(tempo_memory_monitor *mon, const tp_model *m, const tp_budget_params *p, char *err);
/* Gives the session's share back. */
void tp_budget_free(tp_budget *b);

int tp_budget_max_parallel(const tp_budget *b);   /* W */
int tp_budget_kv_max_slots(const tp_budget *b);   /* tp_kv_new capacity */
size_t tp_budget_kv_max_bytes(const tp_budget *b);
size_t tp_budget_reserved_bytes(const tp_budget *b);
/* Bytes the session may allocate for its per-token buffers and compute context (what was reserved). */
size_t tp_budget_fixed_bytes(const tp_budget *b);

/* tp_budget_step_width's answer when reclaiming the cache's dead slots would change it. */
#define TP_BUDGET_COMPACT (-1)

/* Before a set of `want` members of step `step` is recorded: how many may be fed (1..want).
 * Returns 0 when the run must stop: *why is TEMPO_STOP_CACHE_LIMIT (max_cache_tokens) or
 * TEMPO_STOP_MEMORY_LIMIT (the limit, or the KV cache's byte share of it) and msg
 * (TP_ERR_LEN) holds the spec's message. With memory_policy "adapt" it returns a smaller width
 * instead of stopping while width 1 still fits, and records an adjustment. Returns
 * TP_BUDGET_COMPACT when the cache has dead slots and reclaiming them is what makes room: the
 * caller compacts and asks again. When it returns w > 0, w more slots fit and are accounted. */
int tp_budget_step_width(tp_budget *b, const tp_kv *kv, int step, int want, tempo_stop_reason *why, char *msg);
/* The width cap now in force (max_parallel before any "adapt" narrowing). */
int tp_budget_current_width(const tp_budget *b);

/* Adjustments recorded under "adapt" and "prune" (owned by the budget). */
int tp_budget_adjustments(const tp_budget *b, const tempo_adjustment **out);

/* The session's accounted KV memory (its share of the monitor's KV total). */
size_t tp_budget_kv_bytes(const tp_budget *b);
/* --kv-offload, once the session has reserved its buffers: reserve the memory the cache's
 * resident part may ever hold (the newest tp_budget_kv_hot_slots rows of every layer, plus one
 * layer's older rows while its attention pass reads them), leaving room for the records of the
 * whole run at full width. 0, or -1 with err (the prompt's rows alone do not fit). */
int tp_budget_plan_offload(tp_budget *b, char *err);
/* --kv-offload: the newest slots the cache keeps in memory (tp_kv_set_hot_slots); -1 without. */
int tp_budget_kv_hot_slots(const tp_budget *b);

/* --memory-policy prune. How many more members fit under the critical level now (slots below
 * the high-water mark count as free; the next search's scratch slots are kept), and whether
 * granting `want` of them would bring the usage to the warning level (85%) or past it. */
long tp_budget_room(tp_budget *b, const tp_kv *kv, int want, bool *warning);
/* Record that the pruning rule was tightened at `step` (an adjustment of kind PRUNE_RULE). */
void tp_budget_record_rule(tp_budget *b, int step, bool relative, double old_threshold, double new_threshold,
                           const char *reason);

/* With debug: one memory line through the log callback, "<label>: Memory: System ...". */
void tp_budget_log(tp_budget *b, const char *label, const tp_kv *kv);

/* Reserve `bytes` more of the session's fixed part (a buffer allocated later, e.g. the batch
 * logits buffer); 0, or -1 with err when it does not fit. */
int tp_budget_reserve_more(tp_budget *b, size_t bytes, const char *what, char *err);

/* A GPU session: its share of device bytes (KV rows, scratch, staging) becomes `bytes`, with the
 * KV rows of the first `layers` layers on the device (the host cache keeps the others: the
 * prompt's slots already reserved are re-counted for them). 0; or -1, nothing changed, when the
 * usage would pass the critical level: *left (may be NULL) gets what is left under it. */
int tp_budget_set_device(tp_budget *b, int layers, size_t bytes, size_t *left);
/* The session's device share now. */
size_t tp_budget_device_bytes(const tp_budget *b);

#endif
