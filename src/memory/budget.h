/* budget.h: the memory rules of design/memory.md applied to one generation run.
 *
 * The generation loop (src/tempo) asks the budget, not the memory monitor
 * directly: how wide a step may be, how many KV slots and bytes the cache may
 * use, and whether the run must stop. This keeps every limit in one place.
 */
#ifndef TEMPO_BUDGET_H
#define TEMPO_BUDGET_H

#include <stdbool.h>
#include <stddef.h>

#include "tempo.h"
#include "kv/kvcache.h"
#include "model/model.h"

typedef struct tp_budget tp_budget;

/* Computes the effective max_parallel_tokens (auto from memory when
 * cfg->max_parallel_tokens == 0, printed to stderr as the spec asks), the KV
 * cache's slot and byte limits, and checks the model itself fits
 * (check_memory_limit("model loading")). NULL with err when the run cannot start. */
tp_budget *tp_budget_new(tempo_memory_monitor *mon, const tp_model *m, const tempo_config *cfg, char *err);
void tp_budget_free(tp_budget *b);

int tp_budget_max_parallel(const tp_budget *b);   /* W */
int tp_budget_kv_max_slots(const tp_budget *b);   /* for tp_kv_new capacity */
size_t tp_budget_kv_max_bytes(const tp_budget *b);

/* Before selecting step `step`'s members: how many may be fed (1..want). Reclaims
 * dead KV slots first when that is what makes room. Returns 0 when the run must
 * stop: *why is TEMPO_STOP_CACHE_LIMIT (max_cache_tokens) or TEMPO_STOP_MEMORY_LIMIT
 * (the memory limit, or the KV cache's byte share of it) and msg (TP_ERR_LEN)
 * holds the spec's message. With memory_policy "adapt" it returns a smaller width
 * instead of stopping while width 1 still fits, and records an adjustment.
 * Ask only for steps whose set will be fed (not the last step). When it returns
 * w > 0, w slots are known to fit: tp_kv_reserve(kv, w) has passed. It may call
 * tp_kv_compact(kv) (only when dead slots exist), like tp_kv_reserve itself. */
int tp_budget_step_width(tp_budget *b, tp_kv *kv, int step, int want, tempo_stop_reason *why, char *msg);
/* The width cap now in force (max_parallel before any "adapt" narrowing). */
int tp_budget_current_width(const tp_budget *b);

/* Adjustments recorded under "adapt" (the result's adjustments take ownership:
 * free each reason, then the array). */
int tp_budget_adjustments(tp_budget *b, tempo_adjustment **out);

/* With debug_mode: one memory line to stderr, "<label>: Memory: System ...". */
void tp_budget_log(tp_budget *b, const char *label, const tp_kv *kv);

#endif
