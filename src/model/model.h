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

typedef struct tp_model {
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

    tp_pool *pool;
    tp_matmul_ctx *mm;
    struct tp_fwd_work *work;  /* forward-pass buffers (model/forward.c) */
} tp_model;

typedef struct {
    int n_threads;      /* <= 0: all cores */
    int max_batch;      /* largest batch the forward will get at once (default 64) */
    int max_ctx;        /* cap on slots any forward sees (default hp.n_ctx) */
    size_t max_bytes;   /* memory limit for loading (mapped files + what the loader allocates); 0 = none */
} tp_load_opts;

/* Load a GGUF file or a Hugging Face folder (a directory). */
tp_model *tp_model_load(const char *path, const tp_load_opts *opts, char *err);
tp_model *tp_model_load_gguf(const char *path, const tp_load_opts *opts, char *err);
tp_model *tp_model_load_hf(const char *dir, const tp_load_opts *opts, char *err); /* model/hf.c */
void tp_model_free(tp_model *m);

/* Size of the model's weights without loading it (for the memory check before loading). */
int64_t tp_model_file_bytes(const char *path, char *err);

/* Register a heap buffer the model owns (freed with the model, counted in owned_bytes). */
void tp_model_own(tp_model *m, void *p, size_t bytes);
/* Finish a loaded model: rope tables, thread pool, matmul context, work buffers. */
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
} tp_batch;

/* Run the batch, append n slots to kv. 0 on success; -1 with err (e.g. cache full). */
int tp_forward(tp_model *m, tp_kv *kv, const tp_batch *b, char *err);

/* Bytes of the forward work buffers (for memory accounting). */
size_t tp_forward_work_bytes(const tp_model *m);

#endif
