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
#include <stdio.h>

#include "tempo.h"
#include "kv/kvcache.h"

struct tp_model;

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

/* Accounting setters (bytes). */
void tp_memory_set_other(tempo_memory_monitor *mm, size_t bytes);
void tp_memory_set_weights(tempo_memory_monitor *mm, size_t bytes);
void tp_memory_set_kv(tempo_memory_monitor *mm, size_t bytes);
void tp_memory_set_work(tempo_memory_monitor *mm, size_t bytes);
/* Weights (weight_bytes + owned_bytes) and forward work of a loaded model, and
 * "other" = what the process holds beyond them now (resident set minus those). */
void tp_memory_set_model(tempo_memory_monitor *mm, const struct tp_model *m);

size_t tp_memory_accounted_bytes(const tempo_memory_monitor *mm);
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
size_t tp_memory_predict_run_bytes(const struct tp_model *m, size_t other_bytes, int prompt_tokens, int steps,
                                   int width, tp_kv_type type, int max_slots);

/* Run `cmd` through /bin/sh as a child process and report its peak resident
 * set, measured by the kernel (VmHWM read when the process stops at exit, under
 * ptrace; not reported by the child), and exit status (-1 when it did not exit
 * normally). `cmd` should start with "exec " so the shell becomes the program.
 * 0, or -1 with err. */
int tp_memory_run_measured(const char *cmd, size_t *peak_bytes, int *exit_status, char *err);



/* For make bench: the measured peak of real runs next to the estimate.
 * For each (max_tokens, width) pair runs
 *   bin --model model_path --max-tokens T --max-parallel-tokens W --selection-threshold 0 <extra_args>
 * (threshold 0: every step holds exactly W members, the worst case the estimate
 * is for), measures its peak resident set (kernel-reported) and prints one row:
 *   max_tokens width slots estimate_GB peak_GB peak/estimate stop seconds
 * The estimate is tp_memory_predict_run_bytes with "other" (runtime, tokenizer)
 * taken from a 1-step run of the same file. The runs use the default prompt;
 * extra_args may add flags (e.g. "--max-memory-gb 64") but not change the
 * prompt; kv_type must match any --kv-cache-type in them. 0, or -1 with err. */
int tp_memory_bench(const char *bin, const char *model_path, const char *extra_args, tp_kv_type kv_type,
                    const int *max_tokens, int n_max_tokens, const int *widths, int n_widths, FILE *out, char *err);

#endif
