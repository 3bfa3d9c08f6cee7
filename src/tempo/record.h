/* record.h: the record of a run (the steps, their members and the members' texts) in storage
 * sized once, and the tempo_result snapshots handed to callers.
 *
 * A session records each step as it is selected: its members go into one block sized for the
 * whole run (max_steps x width), their texts into large chunks, so recording a step allocates
 * at most one chunk now and then. Pointers into the record stay valid until it is freed (a later
 * pruning pass updates members in place).
 */
#ifndef TEMPO_RECORD_H
#define TEMPO_RECORD_H

#include <stddef.h>

#include "tempo.h"

struct tp_text_chunk;

typedef struct {
    int max_steps, max_tokens;   /* capacity */
    int n_steps, n_tokens;       /* used */
    tempo_step *steps;           /* [max_steps] */
    tempo_token *tokens;         /* [max_tokens]: step k's members start at steps[k].tokens */
    tempo_mcts_candidate *mcts;  /* --use-mcts: [max_mcts], step k's candidates start at steps[k].mcts */
    int max_mcts;
    struct tp_text_chunk *texts;
} tp_record;

/* 0, or -1 with err (out of memory). */
int tp_record_init(tp_record *r, int max_steps, int max_tokens, char *err);
/* --use-mcts: room for the searches' candidates (after tp_record_init). */
int tp_record_init_mcts(tp_record *r, int max_candidates, char *err);
void tp_record_free(tp_record *r);
/* A copy of n bytes of text (NUL-terminated) kept with the record; NULL on out of memory. */
char *tp_record_text(tp_record *r, const char *s, size_t n);

/* What a snapshot needs besides the steps. */
typedef struct {
    const char *prompt;
    tempo_stop_reason stop_reason;
    const char *stop_message;
    const tempo_adjustment *adjustments;
    int n_adjustments;
    double generation_time_s;
    int total_slots, n_prompt_tokens, max_parallel_tokens;
    const tempo_gen_params *params;
    int threads;
    double max_memory_gb;
    tempo_kv_type kv_cache_type;
    const char *kv_offload;
    const tempo_memory_breakdown *memory; /* copied (its layers too); NULL for none */
    const char *device;                   /* "cpu" or "gpu:N <name>" (copied) */
    int gpu_layers;
    size_t gpu_allocated_bytes, gpu_reserved_bytes, gpu_free_bytes;
} tp_record_meta;

/* A self-contained tempo_result (free with tempo_result_free), with generated_text and
 * clean_text built; NULL on out of memory. */
tempo_result *tp_record_snapshot(const tp_record *r, const tp_record_meta *meta);

#endif
