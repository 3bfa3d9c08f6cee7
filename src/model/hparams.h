/* hparams.h: the one place where a model's hyperparameters are validated.
 *
 * Both loaders (GGUF in model.c, Hugging Face config.json in hf.c) read every
 * size as a 64-bit integer, with the name of the key it came from, and hand
 * them to tp_hparams_validate: each value is checked against a sane upper bound
 * and every product the engine forms from them (heads x head size) against
 * its own, before anything is sized or indexed by them. A file that fails gets
 * one line naming the key and the value:
 *     m.gguf: llama.attention.head_count = 65537 is out of range [1, 1024]
 * The bounds are far above every published Llama-family model and low enough
 * that every int product the forward pass forms (a batch of 64 tokens times any
 * of these widths) stays below 2^31.
 */
#ifndef TEMPO_HPARAMS_H
#define TEMPO_HPARAMS_H

#include <stdbool.h>
#include <stdint.h>

#include "model/model.h"

#define TP_MAX_DIM      65536       /* embedding width (Llama 3.1 405B: 16384) */
#define TP_MAX_LAYERS   1024        /* (405B: 126) */
#define TP_MAX_HEADS    1024        /* query heads (405B: 128) */
#define TP_MAX_HEAD_DIM 1024        /* per-head width (Llamas: 64..256) */
#define TP_MAX_QDIM     (1 << 18)   /* heads x head width (405B: 16384) */
#define TP_MAX_FFN      (1 << 20)   /* feed-forward width (405B: 53248) */
#define TP_MAX_VOCAB    (1 << 22)   /* embedding rows (largest published: 262144) */
/* The context length a file claims. Nothing is sized by it at load time (the
 * run sizes its buffers by its own cache length), so the bound only keeps
 * positions and slot counts far from int overflow. */
#define TP_MAX_CTX      (1 << 28)

/* One integer from the file: its value, whether the file has it, its key. */
typedef struct {
    int64_t v;
    bool set;
    const char *key;
} tp_hp_int;

typedef struct {
    const char *path;           /* for messages */
    tp_hp_int dim, n_layers, n_heads, n_kv_heads, head_dim, ffn_dim, n_ctx, rope_dim, n_vocab;
    double eps, rope_base;      /* required (the loader applies its format's default) */
    const char *eps_key, *rope_base_key;
} tp_hparams_in;

/* Defaults for absent optional values: n_kv_heads = n_heads, head_dim =
 * dim / n_heads (which must then divide), rope_dim = head_dim; n_vocab is
 * checked only when set. 0 and hp filled, or -1 with err. */
int tp_hparams_validate(const tp_hparams_in *in, tp_hparams *hp, char *err);

/* One value against [lo, hi]: 0, or -1 with "path: key = v is out of range [lo, hi]". */
int tp_hp_check_range(const char *path, const char *key, int64_t v, int64_t lo, int64_t hi, char *err);

#endif
