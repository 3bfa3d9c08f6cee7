/* session.h: one TEMPO generation over a shared model (the tempo_session of include/tempo.h).
 *
 * The session owns everything that changes during a run: the KV cache (it is the only code that
 * changes the cache's slot table), its memory budget, its compute context (thread pool and work
 * buffers), the step state and the record. The public functions (tempo_session_*) are defined
 * in session.c; this header adds what the library's other parts and the tests read.
 */
#ifndef TEMPO_SESSION_H
#define TEMPO_SESSION_H

#include <stdbool.h>

#include "tempo.h"
#include "kv/kvcache.h"
#include "model/model.h"

typedef struct tempo_session tp_session;

/* When pruned slots are reclaimed: right after the pass that pruned them (the default), or only
 * when the budget needs their room. Results are the same either way (tested). */
typedef enum { TP_RECLAIM_EAGER = 0, TP_RECLAIM_WHEN_NEEDED = 1 } tp_reclaim;
void tp_session_set_reclaim(tp_session *s, tp_reclaim r);

/* The cache (read-only) and the last forward's attention summary: attn is [n_q][stride], row q
 * = member q of the set fed by the last step call (selection order); NULL when that forward
 * computed none. */
const tp_kv *tp_session_kv(const tp_session *s);
const float *tp_session_last_attention(const tp_session *s, int *n_q, int *stride);

/* --use-mcts: the session's search (for tests: tp_mcts_last_simulation); NULL without. */
struct tp_mcts;
const struct tp_mcts *tp_session_mcts(const tp_session *s);

/* The prompt text that is tokenized: the prompt, or with enable_thinking the chat wrapping in
 * the model's format (src/chat; p->chat_template forces one). malloc'ed; NULL with err (an
 * unknown chat template names itself and the supported formats). */
struct tokenizer;
char *tp_session_prompt_text(const struct tokenizer *t, const tempo_gen_params *p, const char *prompt, char *err);

#endif
