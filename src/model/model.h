/* model.h: a Llama-family model in memory, and its batched forward pass.
 *
 * Weights stay where the loader put them (mapped GGUF or safetensors bytes) in
 * their file type; only tensors that must be f32 for this engine (norm vectors,
 * rope factors) are converted, and those copies are counted in owned_bytes.
 *
 * The forward pass takes a batch of tokens, each with its own logical (RoPE)
 * position, and a visibility rule saying which cached slots each may attend to
 * (design/tempo-semantics.md section 3). It appends one KV slot per token.
 */
#ifndef TEMPO_MODEL_H
#define TEMPO_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/matmul.h"
#include "kernels/threadpool.h"
#include "kv/kvcache.h"
#include "tempo.h"

struct gguf_file;
struct tokenizer;

typedef struct {
    int n_vocab, dim, n_layers, n_heads, n_kv_heads, head_dim, ffn_dim, n_ctx;
    int rope_dim;          /* dimensions rotated per head (<= head_dim) */
    float eps, rope_base;
    bool rope_split_half;  /* Hugging Face rotate_half pairs (i, i+rope_dim/2) instead of GGUF adjacent pairs */
} tp_hparams;

typedef struct {
    const float *attn_norm, *ffn_norm; /* [dim] */
    tp_weight wq, wk, wv, wo, w_gate, w_up, w_down;
} tp_layer;

/* The model handle of include/tempo.h: immutable once loaded, shared by every session. The
 * mutable parts of a run (thread pool, buffers, KV cache) live in the session (src/tempo/session.h)
 * and its compute context (tp_compute, below). The memory monitor is the one mutable member: it
 * keeps the budget of the model and all of its live sessions, behind its own lock. */
typedef struct tempo_model tp_model;

struct tempo_model {
    char arch[32];
    tp_hparams hp;
    tp_weight tok_embd;        /* [n_vocab][dim] */
    const float *out_norm;     /* [dim] */
    tp_weight output;          /* [n_vocab][dim]; equals tok_embd when tied */
    tp_layer *layers;
    const float *rope_freq_factors; /* [rope_dim/2] divisors (Llama 3.1 rope_freqs), or NULL */
    float *rope_inv_freq;      /* [rope_dim/2] base^(-2i/rope_dim) / factor */

    struct tokenizer *tok;
    struct gguf_file *gguf;    /* when loaded from GGUF */
    void *hf;                  /* when loaded from a Hugging Face folder (model/hf.h) */

    size_t weight_bytes;       /* bytes of all weight tensors as loaded (mapped counted in full) */
    size_t owned_bytes;        /* converted copies held on the heap */
    void **owned;              /* heap copies to free */
    int n_owned, cap_owned;

    /* set by tempo_model_open (src/api): the path, the parameters, the memory budget */
    char *path;
    tempo_model_params params;
    int n_threads;             /* params.threads resolved (0 -> online cores) */
    struct tempo_memory_monitor *mon;
    struct tp_device *dev;     /* the compute device and the weights on it (gpu/backend.h); NULL: the CPU */
};

typedef struct {
    size_t max_bytes;   /* memory limit for loading (mapped files + what the loader allocates); 0 = none */
} tp_load_opts;

/* Load a GGUF file or a Hugging Face folder (a directory). */
tp_model *tp_model_load(const char *path, const tp_load_opts *opts, char *err);
tp_model *tp_model_load_gguf(const char *path, const tp_load_opts *opts, char *err);
tp_model *tp_model_load_hf(const char *dir, const tp_load_opts *opts, char *err); /* model/hf.c */
/* The host's weights into the CPU kernels' layouts (huge pages, interleaved
 * tiles; model.c), after the device decision: the first gpu_layers layers (and
 * the output head when head_on_gpu) are on a GPU and left alone; tempo_model_open
 * calls it. Out of memory leaves (some of) them as they are: the kernels read
 * every layout. */
void tp_model_place_weights(tp_model *m, int gpu_layers, bool head_on_gpu);
void tp_model_free(tp_model *m);

/* Size of the model's weights without loading it (for the memory check before loading). */
int64_t tp_model_file_bytes(const char *path, char *err);

/* Register a heap buffer the model owns (freed with the model, counted in owned_bytes).
 * 0; or -1 with "<path>: out of memory ..." in err when the list cannot grow, p then
 * freed (so that a caller only returns). */
int tp_model_own(tp_model *m, void *p, size_t bytes, const char *path, char *err);
/* Finish a loaded model: the rope tables. -1 with err (without the model's
 * path, which the loader adds) when they cannot be allocated. */
int tp_model_finish(tp_model *m, const tp_load_opts *opts, char *err);

/* ---- forward ---- */
typedef enum {
    TP_VIS_CAUSAL = 0,   /* token i sees batch tokens 0..i (prompt prefill) */
    TP_VIS_ISOLATED = 1, /* token i sees only itself among the batch (TEMPO default) */
    TP_VIS_SET = 2,      /* token i sees every batch token (--allow-intraset-token-visibility) */
} tp_visibility;

typedef struct {
    int n;                       /* tokens in this batch (any number; processed in chunks) */
    const int32_t *tokens;       /* [n] */
    const int32_t *pos;          /* [n] logical positions */
    int32_t step;                /* recorded in each new slot (-1 for prompt tokens) */
    tp_visibility vis;           /* visibility among the batch's tokens; every alive cached slot is visible */
    /* Optional explicit visibility: mask[i * (n0 + n) + j] != 0 when batch token i may attend
     * to slot j, where n0 = kv->n before the call and slots n0..n0+n-1 are this batch.
     * Overrides vis and the alive flags. */
    const uint8_t *mask;
    float *logits;               /* [n][n_vocab] or, with logits_last_only, [n_vocab]; may be NULL */
    bool logits_last_only;
    /* Optional attention summary for retroactive pruning: with layer_weights [n_layers],
     * attn[i * (n0 + n) + j] = sum_l layer_weights[l] * mean_heads A_l(i -> j). */
    const float *layer_weights;
    float *attn;
    /* Optional TEMPO mixture (design/tempo-semantics.md section 4), computed by a GPU backend
     * (gpu/backend.h) that runs every layer and the output head: with mix [n] (the members'
     * weights, summing to 1) and probs [n_vocab], probs = sum_i mix[i] * softmax(logits of token i),
     * so only this distribution comes back to the host (logits may be NULL). tp_forward does not
     * read them. */
    const float *mix;
    float *probs;
} tp_batch;

/* The mutable side of a forward pass: a thread pool, the matmul context and the work buffers for
 * up to max_batch tokens at once over up to max_ctx cached slots. One per session (the model stays
 * immutable); a forward pass uses one context at a time. */
typedef struct tp_compute tp_compute;

/* n_threads <= 0: all online cores; max_batch <= 0: TP_MATMUL_MAX_BATCH. */
tp_compute *tp_compute_new(const tp_model *m, int n_threads, int max_batch, int max_ctx, char *err);
void tp_compute_free(tp_compute *c);
int tp_compute_threads(const tp_compute *c);
int tp_compute_max_ctx(const tp_compute *c);
/* The context's thread pool (the session's per-step work outside the forward runs on it too). */
tp_pool *tp_compute_pool(tp_compute *c);
/* Heap bytes the context holds, and what tp_compute_new would allocate (for the budget before allocating). */
size_t tp_compute_bytes(const tp_compute *c);
size_t tp_compute_estimate_bytes(const tp_model *m, int n_threads, int max_batch, int max_ctx);
/* Give the context a logits buffer for batches of several sequences (max_batch rows over the
 * vocabulary), so the output matrix is read once per chunk for all of them. Idempotent. */
int tp_compute_enable_multi(tp_compute *c, char *err);
size_t tp_compute_multi_bytes(const tp_model *m, int max_batch);

/* Run the batch, append n slots to kv. 0 on success; -1 with err (e.g. cache full). */
int tp_forward(tp_model *m, tp_compute *c, tp_kv *kv, const tp_batch *b, char *err);

/* Several sequences in one pass: each weight is read once for all of their tokens, while every
 * token attends within its own sequence's cache (its own positions and visibility). A sequence
 * whose batch uses TP_VIS_SET or a mask is never split across chunks (so it must hold at most
 * max_batch tokens when n > 1). Logits of several sequences need tp_compute_enable_multi. */
typedef struct {
    tp_kv *kv;
    const tp_batch *b;
} tp_fwd_seq;
int tp_forward_multi(tp_model *m, tp_compute *c, const tp_fwd_seq *seqs, int n, char *err);

/* The CPU half of a batch whose first layers ran on a GPU (src/gpu): batch tokens c0..c0+nb-1
 * (nb <= the context's max_batch) went through layers [0, l0) elsewhere; x [nb][dim] holds their
 * hidden states and their slots are in kv already (kv->n == n0 + c0 + nb, n0 = the slot count
 * before the batch). Runs layers [l0, n_layers) and the output head exactly as tp_forward does:
 * K/V of those layers stored, their share added to b->attn (cleared by the caller), the logits
 * of these tokens written to b->logits as tp_forward writes them. */
int tp_forward_layers(tp_model *m, tp_compute *c, tp_kv *kv, const tp_batch *b, int n0, int c0, int nb, int l0,
                      const float *x, char *err);

#endif
