/* breakdown.c: memory by layer (see breakdown.h). */
#include "memory/breakdown.h"

#include <string.h>

#include "core/common.h"
#include "core/log.h"
#include "memory/memory.h"
#include "tensor/dtype.h"

static size_t matrix_bytes(const tp_weight *w) {
    return w->data ? tp_dtype_row_bytes(w->type, (size_t)w->n_in) * (size_t)w->n_out : 0;
}

size_t tp_memory_layer_weight_bytes(const tp_model *m, int l) {
    const tp_layer *L = &m->layers[l];
    const tp_weight *w[] = { &L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down };
    size_t b = 2 * (size_t)m->hp.dim * sizeof(float); /* attn_norm, ffn_norm: f32 as used */
    for (size_t i = 0; i < sizeof w / sizeof w[0]; i++) b += matrix_bytes(w[i]);
    return b;
}

size_t tp_memory_shared_weight_bytes(const tp_model *m) {
    size_t b = matrix_bytes(&m->tok_embd) + (size_t)m->hp.dim * sizeof(float); /* + output_norm */
    if (m->output.data != m->tok_embd.data) b += matrix_bytes(&m->output);      /* not tied */
    if (m->rope_freq_factors) b += (size_t)(m->hp.rope_dim / 2) * sizeof(float);
    return b;
}

void tp_memory_breakdown(const tp_model *m, tempo_memory_monitor *mon, size_t session_kv_bytes,
                         size_t layer_scratch_bytes, const tp_kv *kv, tempo_memory_breakdown *out) {
    int L = m->hp.n_layers;
    tempo_layer_memory *layers = out->layers;
    memset(out, 0, sizeof *out);
    out->layers = layers;
    out->n_layers = L;
    int resident = kv ? tp_kv_resident_slots(kv) : -1;
    size_t spilled_rows = resident >= 0 && kv->n > resident ? (size_t)(kv->n - resident) : 0;
    size_t layer_weights = 0;
    for (int l = 0; l < L; l++) {
        tempo_layer_memory *lm = &layers[l];
        lm->weights_bytes = tp_memory_layer_weight_bytes(m, l);
        /* every layer holds the same slots: an even split, the rest to the last layer; layers whose
         * rows live on a GPU (the first kv->device_layers) hold none of the host share */
        int d = kv ? kv->device_layers : 0, H = L - d;
        lm->kv_bytes = l < d || H <= 0 ? 0 : session_kv_bytes / (size_t)H + (l == L - 1 ? session_kv_bytes % (size_t)H : 0);
        lm->kv_spilled_bytes = spilled_rows * 2 * (kv ? tp_kv_row_bytes(kv) : 0);
        lm->scratch_bytes = layer_scratch_bytes;
        layer_weights += lm->weights_bytes;
        out->kv_spilled_bytes += lm->kv_spilled_bytes;
    }
    tp_mem_parts parts;
    tp_memory_parts(mon, &parts);
    out->shared_weights_bytes = tp_memory_shared_weight_bytes(m);
    size_t named = layer_weights + out->shared_weights_bytes;
    out->other_weights_bytes = parts.weights > named ? parts.weights - named : 0;
    out->weights_bytes = parts.weights;
    out->kv_bytes = parts.kv;
    out->scratch_bytes = parts.work;
    out->records_bytes = parts.records;
    out->other_bytes = parts.other;
    out->gpu_weights_bytes = parts.gpu_weights;
    out->gpu_sessions_bytes = parts.device;
    out->accounted_bytes = parts.other + parts.weights + parts.kv + parts.work + parts.records + parts.gpu_weights + parts.device;
    out->limit_bytes = tp_memory_limit_bytes(mon);
    out->kv_resident_slots = resident;
}

void tp_memory_log_breakdown(const tempo_memory_breakdown *mb, const char *label) {
    if (!tp_log_enabled()) return;
    char a[32], b[32], c[32], d[32], e[32], f[32], g[32], h[32], i[32];
    for (int l = 0; l < mb->n_layers; l++) {
        const tempo_layer_memory *lm = &mb->layers[l];
        tp_log(TEMPO_LOG_DEBUG, "%s: layer %d: weights %s, KV %s (spilled %s), scratch %s (shared by every layer)", label,
               l, tp_fmt_gb((double)lm->weights_bytes, a, sizeof a), tp_fmt_gb((double)lm->kv_bytes, b, sizeof b),
               tp_fmt_gb((double)lm->kv_spilled_bytes, c, sizeof c), tp_fmt_gb((double)lm->scratch_bytes, d, sizeof d));
    }
    if (mb->gpu_weights_bytes || mb->gpu_sessions_bytes)
        tp_log(TEMPO_LOG_DEBUG, "%s: memory on the GPU: weights %s, sessions' KV rows and buffers %s (in the totals below)",
               label, tp_fmt_gb((double)mb->gpu_weights_bytes, a, sizeof a), tp_fmt_gb((double)mb->gpu_sessions_bytes, b, sizeof b));
    tp_log(TEMPO_LOG_DEBUG,
           "%s: memory totals: weights %s (layers, plus %s embeddings/output, %s other), KV %s, scratch %s, records %s, "
           "runtime %s; accounted %s of --max-memory-gb %s",
           label, tp_fmt_gb((double)mb->weights_bytes, a, sizeof a), tp_fmt_gb((double)mb->shared_weights_bytes, b, sizeof b),
           tp_fmt_gb((double)mb->other_weights_bytes, c, sizeof c), tp_fmt_gb((double)mb->kv_bytes, d, sizeof d),
           tp_fmt_gb((double)mb->scratch_bytes, e, sizeof e), tp_fmt_gb((double)mb->records_bytes, f, sizeof f),
           tp_fmt_gb((double)mb->other_bytes, g, sizeof g), tp_fmt_gb((double)mb->accounted_bytes, h, sizeof h),
           tp_fmt_gb((double)mb->limit_bytes, i, sizeof i));
}
