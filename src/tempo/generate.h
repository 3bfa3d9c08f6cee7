/* generate.h: the TEMPO generation loop (design/tempo-semantics.md) and standard
 * mode, behind tempo_generate. Internal options let tests and the benchmark
 * exercise the invariants of section 8 and force set widths.
 */
#ifndef TEMPO_GENERATE_H
#define TEMPO_GENERATE_H

#include <stdbool.h>
#include <stdint.h>

#include "tempo.h"
#include "kv/kvcache.h"

struct tokenizer;

/* Filled by the loop when tp_tempo_opts.stats is set. */
typedef struct {
    double prefill_s;      /* prompt forward */
    double steps_s;        /* all steps after prefill (selection, forward, mixture, pruning) */
    int fed_steps;         /* steps whose set went through the model */
    int fed_tokens;        /* tokens fed after the prompt */
    int n_prompt;          /* prompt tokens */
    int forward_calls;     /* tp_forward calls, prefill included */
} tp_tempo_stats;

typedef struct {
    /* > 0: every step has exactly this many members (the most probable ones; the
     * threshold is ignored and end-of-generation never stops the run). For the
     * benchmark's time-per-step-against-width table. */
    int forced_width;
    /* Test hooks (design section 8). */
    bool no_compact;       /* leave pruned slots in the cache (dead) instead of reclaiming them */
    bool reverse_feed;     /* feed each set's members in reverse selection order */
    bool one_by_one;       /* feed each member in its own forward (isolated mode only) */
    const int32_t *extra_eog; /* ids treated as end-of-generation too (stories260K never ends a story) */
    int n_extra_eog;
    /* Called after every forward of a set that computed the attention summary:
     * attn is [n_q][kv->n] (row q = member q in selection order). */
    void (*on_attention)(void *user, int step, const tp_kv *kv, int n_q, const float *attn);
    void *user;
    tp_tempo_stats *stats;
} tp_tempo_opts;

tempo_result *tp_tempo_generate(tempo_model *m, const tempo_config *cfg, const tp_tempo_opts *o,
                                tempo_step_cb cb, void *user, char *err);
void tp_tempo_result_free(tempo_result *r);

/* The prompt text that is tokenized: cfg->prompt, or with enable_thinking the chat
 * wrapping (Llama 3 headers when the vocabulary has them, else System/User/Assistant). */
char *tp_tempo_prompt_text(const struct tokenizer *t, const tempo_config *cfg);

#endif
