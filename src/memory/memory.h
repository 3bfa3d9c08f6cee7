/* memory.h: the internal side of the memory monitor (the public side is the
 * "memory" section of include/tempo.h).
 *
 * The monitor knows two kinds of numbers (design/memory.md):
 *   - accounted bytes: what the engine knows it holds: the runtime's own resident
 *     memory ("other": libraries, tokenizer, bookkeeping), model weights as
 *     loaded (mapped bytes counted in full), the KV cache and the forward work
 *     buffers. The limit is applied to these.
 *   - measured bytes: the process's resident set (VmRSS) and its peak (VmHWM)
 *     from /proc/self/status, and the system's MemTotal / MemAvailable.
 * "Usage" is the larger of the two, so memory that escapes the accounting still
 * counts against the limit.
 *
 * 1 GB = 1024^3 bytes everywhere.
 */
#ifndef TEMPO_MEMORY_H
#define TEMPO_MEMORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tempo.h"
#include "kv/kvcache.h"

struct tempo_model;

#define TP_GB (1024.0 * 1024.0 * 1024.0)
#define TP_MEM_WARNING_FRACTION 0.85
#define TP_MEM_CRITICAL_FRACTION 0.95
#define TP_MEM_AUTO_RESERVE 0.20   /* calculate_max_parallel_tokens keeps 20% back */
#define TP_MEM_AUTO_MAX_PARALLEL 50
/* Bytes one fed token costs beyond its KV slot: its record in the result (id,
 * probability, text) and its share of the text and JSON output built at the
 * end. Measured on stories260K runs at about 0.5-1 KB; it matters only for
 * tiny models, where a KV slot is about 1 KB itself. */
#define TP_MEM_MEMBER_OVERHEAD 1024

/* Snapshot of /proc (bytes). Fields that could not be read are 0. */
typedef struct {
    uint64_t mem_total, mem_available;   /* /proc/meminfo */
    uint64_t vm_rss, vm_hwm;             /* /proc/self/status */
} tp_proc_mem;
/* 0, or -1 when neither file could be read. No allocation (safe per step). */
int tp_memory_read_proc(tp_proc_mem *out);

/* Before loading: does the model alone fit the limit? 0, or -1 with
 * "model needs 3.21GB of weights but --max-memory-gb is 2.00GB. ..." in err. */
int tp_memory_check_model_fits(double max_memory_gb, int64_t model_bytes, char *err);

/* While loading: would the process's resident set now plus more_bytes (weights still to be read
 * in) pass the critical level (95%) of the limit? 0, or -1 with the spec's "Memory critical during
 * model loading" message ("when" says what the total is: "loading"). Checked before the file is
 * mapped and again before its pages are read, so a limit too small to load is refused before
 * the process passes it. */
int tp_memory_check_load_room(double max_memory_gb, size_t more_bytes, const char *when, char *err);

/* Accounting (bytes). The model's monitor is shared by every session of the model, so the
 * per-session parts are sums that sessions add to and take from under the monitor's lock. */
void tp_memory_set_other(tempo_memory_monitor *mm, size_t bytes);
void tp_memory_set_weights(tempo_memory_monitor *mm, size_t bytes);
/* Weights (weight_bytes + owned_bytes) of a loaded model, and "other" = what the process holds
 * beyond them and the sessions' parts now (resident set minus those). A model on a GPU
 * (m->dev, gpu/backend.h): the host part of its weights (the file's pages given back after the
 * upload are not counted), its device weight bytes as the model's GPU part, and the device whose
 * real allocation and free memory the stats report. */
void tp_memory_set_model(tempo_memory_monitor *mm, const struct tempo_model *m);

/* One session's share of the monitor. */
typedef struct {
    size_t kv, work, records;
    size_t device;  /* bytes allocated through Vulkan: a GPU session's KV rows, scratch and staging */
} tp_mem_share;
/* Add `add` to the session sums if the usage after it stays below `ceiling` bytes (0: no check):
 * usage = max(accounted, measured resident set) + add. 0, or -1 (nothing added) and *usage_out
 * (may be NULL) gets the usage before. Atomic with respect to other sessions. */
int tp_memory_try_add(tempo_memory_monitor *mm, const tp_mem_share *add, size_t ceiling, size_t *usage_out);
/* Take a session's share back (at its end). */
void tp_memory_sub(tempo_memory_monitor *mm, const tp_mem_share *sub);
/* Live sessions counter (for /health and stats). */
void tp_memory_session_count(tempo_memory_monitor *mm, int delta);

/* The accounted parts, read together under the lock (for the memory breakdown). */
typedef struct {
    size_t other, weights, kv, work, records;
    size_t gpu_weights, device;  /* the model's weights on a GPU; the sessions' device shares */
} tp_mem_parts;
void tp_memory_parts(tempo_memory_monitor *mm, tp_mem_parts *out);

size_t tp_memory_accounted_bytes(tempo_memory_monitor *mm);
size_t tp_memory_limit_bytes(const tempo_memory_monitor *mm);
double tp_memory_max_gb(const tempo_memory_monitor *mm);
/* max(accounted, measured resident) in bytes. */
size_t tp_memory_usage_bytes(tempo_memory_monitor *mm);
/* The level of `bytes` against the limit (>= 85% warning, >= 95% critical). */
tempo_mem_level tp_memory_level(const tempo_memory_monitor *mm, size_t bytes);

/* Bytes of one KV slot (K and V over all layers) for a storage type; the same
 * rule as tp_kv_bytes_per_slot. */
size_t tp_memory_kv_slot_bytes(int n_layers, int kv_dim, tp_kv_type type);
/* Working buffers one parallel token needs per step: its hidden state (dim),
 * its logits over the vocabulary and its attention scores over `ctx` cached
 * slots; all f32. (The same sum as tempo_memory_estimate_parallel_batch_gb.) */
size_t tp_memory_token_work_bytes(int dim, int n_vocab, int ctx);

/* design/memory.md's rule: W = floor(0.8 * available / per_token) clamped to
 * 1..50, per_token = steps * slot_bytes + token_work_bytes. `available` in
 * bytes. Fills *per_token_out when not NULL. */
int tp_memory_max_parallel_for(double available_bytes, int steps, size_t slot_bytes, size_t token_work,
                               size_t *per_token_out);

/* Predicted peak resident bytes of one generation run (for the bench and the
 * tests): other + weights + work + KV for min(prompt + steps * width, max_slots)
 * slots + TP_MEM_MEMBER_OVERHEAD per fed token + `width` tokens' working buffers. */
size_t tp_memory_predict_run_bytes(const struct tempo_model *m, size_t other_bytes, int prompt_tokens, int steps,
                                   int width, tp_kv_type type, int max_slots);

#endif
