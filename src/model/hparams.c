/* hparams.c: hyperparameter validation shared by the GGUF and Hugging Face loaders. */
#include "model/hparams.h"

#include "core/checked.h"
#include "core/common.h"

int tp_hp_check_range(const char *path, const char *key, int64_t v, int64_t lo, int64_t hi, char *err) {
    if (v >= lo && v <= hi) return 0;
    return tp_fail(err, "%s: %s = %lld is out of range [%lld, %lld]", path, key, (long long)v, (long long)lo,
                   (long long)hi);
}

static int need(const tp_hparams_in *in, const tp_hp_int *x, int64_t lo, int64_t hi, char *err) {
    if (!x->set) return tp_fail(err, "%s: missing required key %s", in->path, x->key);
    return tp_hp_check_range(in->path, x->key, x->v, lo, hi, err);
}

int tp_hparams_validate(const tp_hparams_in *in, tp_hparams *hp, char *err) {
    const char *path = in->path;
    if (need(in, &in->dim, 1, TP_MAX_DIM, err) || need(in, &in->n_layers, 1, TP_MAX_LAYERS, err) ||
        need(in, &in->n_heads, 1, TP_MAX_HEADS, err) || need(in, &in->ffn_dim, 1, TP_MAX_FFN, err) ||
        need(in, &in->n_ctx, 1, TP_MAX_CTX, err))
        return -1;
    int64_t heads = in->n_heads.v;
    int64_t kv_heads = heads;
    if (in->n_kv_heads.set) {
        if (tp_hp_check_range(path, in->n_kv_heads.key, in->n_kv_heads.v, 1, heads, err)) return -1;
        kv_heads = in->n_kv_heads.v;
    }
    if (heads % kv_heads)
        return tp_fail(err, "%s: %s = %lld is not a multiple of %s = %lld", path, in->n_heads.key, (long long)heads,
                       in->n_kv_heads.key, (long long)kv_heads);
    int64_t head_dim;
    if (in->head_dim.set) {
        if (tp_hp_check_range(path, in->head_dim.key, in->head_dim.v, 1, TP_MAX_HEAD_DIM, err)) return -1;
        head_dim = in->head_dim.v;
    } else {
        if (in->dim.v % heads)
            return tp_fail(err, "%s: %s = %lld is not a multiple of %s = %lld (and there is no %s)", path,
                           in->dim.key, (long long)in->dim.v, in->n_heads.key, (long long)heads, in->head_dim.key);
        head_dim = in->dim.v / heads;
        if (tp_hp_check_range(path, "the head size (embedding width / heads)", head_dim, 1, TP_MAX_HEAD_DIM, err))
            return -1;
    }
    uint64_t q_dim;
    if (!tp_mul_u64((uint64_t)heads, (uint64_t)head_dim, &q_dim) || q_dim > TP_MAX_QDIM)
        return tp_fail(err, "%s: %s x %s = %lld x %lld exceeds %d", path, in->n_heads.key, in->head_dim.key,
                       (long long)heads, (long long)head_dim, TP_MAX_QDIM);
    int64_t rope_dim = head_dim;
    if (in->rope_dim.set) {
        rope_dim = in->rope_dim.v;
        if (rope_dim < 2 || rope_dim > head_dim || rope_dim % 2)
            return tp_fail(err, "%s: %s = %lld must be even and in [2, %lld] (the head size)", path,
                           in->rope_dim.key, (long long)rope_dim, (long long)head_dim);
    } else if (rope_dim % 2) {
        return tp_fail(err, "%s: the head size %lld is odd (RoPE rotates pairs)", path, (long long)head_dim);
    }
    if (in->n_vocab.set && tp_hp_check_range(path, in->n_vocab.key, in->n_vocab.v, 1, TP_MAX_VOCAB, err)) return -1;
    /* (as float: eps must not round to 0, the base must stay finite and above 1) */
    if (!(in->eps >= 1e-12 && in->eps < 1))
        return tp_fail(err, "%s: %s = %g is out of range [1e-12, 1)", path, in->eps_key, in->eps);
    if (!(in->rope_base > 1 && in->rope_base < 1e30))
        return tp_fail(err, "%s: %s = %g is out of range (1, 1e30)", path, in->rope_base_key, in->rope_base);

    hp->dim = (int)in->dim.v;
    hp->n_layers = (int)in->n_layers.v;
    hp->n_heads = (int)heads;
    hp->n_kv_heads = (int)kv_heads;
    hp->head_dim = (int)head_dim;
    hp->ffn_dim = (int)in->ffn_dim.v;
    hp->n_ctx = (int)in->n_ctx.v;
    hp->rope_dim = (int)rope_dim;
    if (in->n_vocab.set) hp->n_vocab = (int)in->n_vocab.v;
    hp->eps = (float)in->eps;
    hp->rope_base = (float)in->rope_base;
    return 0;
}
