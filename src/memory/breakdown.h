/* breakdown.h: memory by layer (--debug-mode, JSON metrics.memory).
 *
 * Per layer: its weights (its 7 matrices as stored plus its 2 norm vectors as used), its share of
 * the session's accounted KV memory (every layer holds the same slots, so the share is an even
 * split), the KV rows held only in the spill file (--kv-offload), and the forward's work buffers
 * its pass uses. Those buffers serve every layer in turn, so the per-layer scratch figure is not
 * additive: the totals count them once. The totals are the model monitor's own numbers, so the
 * layer rows add up to them: sum(weights) + shared + other weights = weights, sum(kv) = kv (with
 * one live session; the monitor sums every session).
 */
#ifndef TEMPO_BREAKDOWN_H
#define TEMPO_BREAKDOWN_H

#include <stddef.h>

#include "tempo.h"
#include "kv/kvcache.h"
#include "model/model.h"

/* Bytes of layer l's tensors, and of the tensors outside the layers (embeddings, output, final
 * norm, rope factors). */
size_t tp_memory_layer_weight_bytes(const tp_model *m, int l);
size_t tp_memory_shared_weight_bytes(const tp_model *m);

/* Fill out: out->layers must hold m->hp.n_layers entries (the caller's buffer).
 * session_kv_bytes: the session's accounted KV memory; layer_scratch_bytes: the work buffers one
 * layer's pass uses; kv (may be NULL): for the spilled rows. */
void tp_memory_breakdown(const tp_model *m, tempo_memory_monitor *mon, size_t session_kv_bytes,
                         size_t layer_scratch_bytes, const tp_kv *kv, tempo_memory_breakdown *out);

/* With a log callback: one DEBUG line per layer and one of totals. */
void tp_memory_log_breakdown(const tempo_memory_breakdown *mb, const char *label);

#endif
