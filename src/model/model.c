/* model.c: building a tp_model from a GGUF file, and what every loader shares.
 *
 * The GGUF loader reads the llama hyperparameters ({arch}.*), finds every tensor
 * by its standard name, checks its shape and type, and points the model at the
 * mapped bytes. Only norm vectors that are not f32 are converted (and counted).
 */
#include "model/model.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "core/common.h"
#include "format/gguf.h"
#include "format/safetensors.h"
#include "model/hf.h"
#include "tensor/dtype.h"
#include "tokenizer/tokenizer.h"

void tp_model_own(tp_model *m, void *p, size_t bytes) {
    if (m->n_owned == m->cap_owned) {
        m->cap_owned = m->cap_owned ? 2 * m->cap_owned : 16;
        m->owned = tp_xrealloc(m->owned, (size_t)m->cap_owned * sizeof *m->owned);
    }
    m->owned[m->n_owned++] = p;
    m->owned_bytes += bytes;
}

static bool is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

tp_model *tp_model_load(const char *path, const tp_load_opts *opts, char *err) {
    if (!path || !*path) { tp_fail(err, "no model given (use --model PATH)"); return NULL; }
    if (is_dir(path)) return tp_model_load_hf(path, opts, err);
    return tp_model_load_gguf(path, opts, err);
}

int64_t tp_model_file_bytes(const char *path, char *err) {
    struct stat st;
    if (stat(path, &st) != 0) return tp_fail(err, "%s: cannot open: %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return (int64_t)st.st_size;
    return tp_st_set_file_bytes(path, err); /* a Hugging Face folder: its weight shards */
}

void tp_model_free_work(tp_model *m); /* forward.c */

void tp_model_free(tp_model *m) {
    if (!m) return;
    tp_model_free_work(m);
    if (m->mm) tp_matmul_ctx_free(m->mm);
    if (m->pool) tp_pool_free(m->pool);
    if (m->tok) tp_tokenizer_free(m->tok);
    if (m->gguf) tp_gguf_close(m->gguf);
    tp_hf_free(m->hf);
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->layers);
    free(m->rope_inv_freq);
    free(m);
}

/* ---- GGUF ---- */

typedef struct {
    tp_model *m;
    const gguf_file *f;
    const char *path;
    char *err;
} loader;

static bool get_int_key(loader *ld, const char *suffix, bool required, int64_t def, int64_t *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", ld->m->arch, suffix);
    ld->err[0] = 0;
    if (tp_gguf_get_int(ld->f, key, out, ld->err)) {
        if (*out < 0 || *out > (int64_t)1 << 31) {
            tp_fail(ld->err, "%s: %s = %lld is out of range", ld->path, key, (long long)*out);
            return false;
        }
        return true;
    }
    if (ld->err[0]) return false; /* present with a wrong type */
    if (required) {
        tp_fail(ld->err, "%s: missing required key %s", ld->path, key);
        return false;
    }
    *out = def;
    return true;
}

static bool get_float_key(loader *ld, const char *suffix, double def, double *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", ld->m->arch, suffix);
    ld->err[0] = 0;
    if (tp_gguf_get_float(ld->f, key, out, ld->err)) return true;
    if (ld->err[0]) return false;
    *out = def;
    return true;
}

/* Find a tensor, check its shape ({ne0, ne1}; ne1 = 0 for 1-D) and that we can compute with its type. */
static const gguf_tensor *need_tensor(loader *ld, const char *name, int64_t ne0, int64_t ne1, bool optional) {
    const gguf_tensor *t = tp_gguf_find_tensor(ld->f, name);
    if (!t) {
        if (!optional) tp_fail(ld->err, "%s: missing required tensor %s", ld->path, name);
        return NULL;
    }
    int want_dims = ne1 ? 2 : 1;
    bool ok = (int)t->n_dims == want_dims && (int64_t)t->ne[0] == ne0 && (!ne1 || (int64_t)t->ne[1] == ne1);
    if (!ok) {
        tp_fail(ld->err, "%s: tensor %s has shape [%llu, %llu] (%u dims), expected [%lld, %lld]", ld->path, name,
                (unsigned long long)t->ne[0], (unsigned long long)t->ne[1], t->n_dims, (long long)ne0,
                (long long)(ne1 ? ne1 : 1));
        return NULL;
    }
    if (!tp_dtype_supported(t->type)) {
        const char *tn = tp_dtype_name(t->type);
        tp_fail(ld->err, "%s: tensor %s has type %s, which tempo does not support", ld->path, name, tn ? tn : "?");
        return NULL;
    }
    ld->m->weight_bytes += t->nbytes;
    return t;
}

static bool load_matrix(loader *ld, tp_weight *w, const char *name, int n_in, int n_out, bool optional) {
    const gguf_tensor *t = need_tensor(ld, name, n_in, n_out, optional);
    if (!t) return false;
    w->data = t->data;
    w->type = t->type;
    w->n_in = n_in;
    w->n_out = n_out;
    return true;
}

/* A 1-D f32 vector; converted (and owned) when stored in another type. */
static const float *load_vector(loader *ld, const char *name, int n, bool optional) {
    const gguf_tensor *t = need_tensor(ld, name, n, 0, optional);
    if (!t) return NULL;
    if (t->type == TP_F32) return t->data;
    if (n % (int)tp_dtype_block_elems(t->type)) {
        tp_fail(ld->err, "%s: tensor %s: %d elements is not a whole number of %s blocks", ld->path, name, n,
                tp_dtype_name(t->type));
        return NULL;
    }
    float *v = tp_xmalloc((size_t)n * sizeof(float));
    tp_dequantize_row(t->type, t->data, v, (size_t)n);
    tp_model_own(ld->m, v, (size_t)n * sizeof(float));
    return v;
}

/* Load-time placement (kernels/matmul.h): the tensor data moves onto huge
 * pages (tp_weights_to_hugepages), then the matrices are rewritten in place
 * into the kernels' interleaved layouts (tp_weight_repack). The mapping
 * is private: the moved or written pages replace the file's pages in this
 * process, so the weights are not held twice, weight_bytes (mapped bytes
 * counted in full) stays right, and the file is never written.
 * TEMPO_NO_REPACK=1 keeps the file's pages and layout (shared page cache, and
 * comparisons). */
static void repack_weights(tp_model *m) {
    const char *no = getenv("TEMPO_NO_REPACK");
    if ((no && *no && strcmp(no, "0") != 0) || !m->gguf) return;
    gguf_file *f = m->gguf;
    if (f->data_offset < f->map_size)
        tp_weights_to_hugepages((void *)(uintptr_t)(f->map + f->data_offset), f->map_size - f->data_offset);
    int n = 2 + 7 * m->hp.n_layers, any = 0;
    tp_weight **ws = tp_xmalloc((size_t)n * sizeof *ws);
    ws[0] = &m->tok_embd;
    ws[1] = &m->output;
    for (int l = 0; l < m->hp.n_layers; l++) {
        tp_layer *L = &m->layers[l];
        tp_weight *lw[7] = { &L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down };
        memcpy(ws + 2 + 7 * l, lw, sizeof lw);
    }
    for (int i = 0; i < n; i++) any |= tp_weight_repackable(ws[i]);
    if (any && mprotect((void *)(uintptr_t)m->gguf->map, m->gguf->map_size, PROT_READ | PROT_WRITE) == 0) {
        tp_weights_repack(ws, n);
        mprotect((void *)(uintptr_t)m->gguf->map, m->gguf->map_size, PROT_READ);
    }
    free(ws);
}

tp_model *tp_model_load_gguf(const char *path, const tp_load_opts *opts, char *err) {
    gguf_file *f = tp_gguf_open(path, err);
    if (!f) return NULL;
    tp_model *m = tp_xcalloc(1, sizeof *m);
    m->gguf = f;
    loader ld = { m, f, path, err };
    tp_hparams *hp = &m->hp;

    char *arch = tp_gguf_get_string(f, "general.architecture");
    if (!arch) { tp_fail(err, "%s: missing required key general.architecture", path); goto fail; }
    snprintf(m->arch, sizeof m->arch, "%s", arch);
    free(arch);
    if (strcmp(m->arch, "llama") != 0) {
        tp_fail(err, "%s: architecture '%s' is not supported (tempo runs llama)", path, m->arch);
        goto fail;
    }

    int64_t v;
    double d;
    if (!get_int_key(&ld, "embedding_length", true, 0, &v)) goto fail;
    hp->dim = (int)v;
    if (!get_int_key(&ld, "block_count", true, 0, &v)) goto fail;
    hp->n_layers = (int)v;
    if (!get_int_key(&ld, "feed_forward_length", true, 0, &v)) goto fail;
    hp->ffn_dim = (int)v;
    if (!get_int_key(&ld, "attention.head_count", true, 0, &v)) goto fail;
    hp->n_heads = (int)v;
    if (!get_int_key(&ld, "attention.head_count_kv", false, hp->n_heads, &v)) goto fail;
    hp->n_kv_heads = (int)v;
    if (!get_int_key(&ld, "context_length", true, 0, &v)) goto fail;
    hp->n_ctx = (int)v;
    if (hp->dim <= 0 || hp->n_layers <= 0 || hp->ffn_dim <= 0 || hp->n_heads <= 0 || hp->n_kv_heads <= 0 ||
        hp->n_ctx <= 0 || hp->n_heads % hp->n_kv_heads) {
        tp_fail(err, "%s: inconsistent hyperparameters (dim %d, layers %d, ffn %d, heads %d, kv heads %d, ctx %d)",
                path, hp->dim, hp->n_layers, hp->ffn_dim, hp->n_heads, hp->n_kv_heads, hp->n_ctx);
        goto fail;
    }
    if (!get_int_key(&ld, "attention.key_length", false, hp->dim / hp->n_heads, &v)) goto fail;
    hp->head_dim = (int)v;
    if (!get_int_key(&ld, "rope.dimension_count", false, hp->head_dim, &v)) goto fail;
    hp->rope_dim = (int)v;
    if (hp->head_dim <= 0 || hp->rope_dim <= 0 || hp->rope_dim > hp->head_dim || hp->rope_dim % 2) {
        tp_fail(err, "%s: rope.dimension_count %d does not fit head size %d", path, hp->rope_dim, hp->head_dim);
        goto fail;
    }
    if (!get_float_key(&ld, "attention.layer_norm_rms_epsilon", 1e-5, &d)) goto fail;
    hp->eps = (float)d;
    if (!get_float_key(&ld, "rope.freq_base", 10000.0, &d)) goto fail;
    hp->rope_base = (float)d;
    double linear_scale = 1.0;
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", m->arch);
    char *stype = tp_gguf_get_string(f, key);
    if (stype && strcmp(stype, "linear") == 0) {
        if (!get_float_key(&ld, "rope.scaling.factor", 1.0, &linear_scale)) { free(stype); goto fail; }
    } else if (!get_float_key(&ld, "rope.scale_linear", 1.0, &linear_scale)) { free(stype); goto fail; }
    free(stype);

    m->tok = tp_tokenizer_from_gguf(f, err);
    if (!m->tok) goto fail;

    const gguf_tensor *emb = tp_gguf_find_tensor(f, "token_embd.weight");
    if (!emb) { tp_fail(err, "%s: missing required tensor token_embd.weight", path); goto fail; }
    hp->n_vocab = (int)emb->ne[1];
    if (tp_tokenizer_vocab_size(m->tok) > hp->n_vocab) {
        tp_fail(err, "%s: tokenizer has %d tokens but token_embd.weight has %d rows", path,
                tp_tokenizer_vocab_size(m->tok), hp->n_vocab);
        goto fail;
    }
    int q_dim = hp->n_heads * hp->head_dim, kv_dim = hp->n_kv_heads * hp->head_dim;
    if (!load_matrix(&ld, &m->tok_embd, "token_embd.weight", hp->dim, hp->n_vocab, false)) goto fail;
    if (!(m->out_norm = load_vector(&ld, "output_norm.weight", hp->dim, false))) goto fail;
    err[0] = 0;
    if (!load_matrix(&ld, &m->output, "output.weight", hp->dim, hp->n_vocab, true)) {
        if (err[0]) goto fail;
        m->output = m->tok_embd; /* tied embeddings */
    }
    err[0] = 0;
    m->rope_freq_factors = load_vector(&ld, "rope_freqs.weight", hp->rope_dim / 2, true);
    if (!m->rope_freq_factors && err[0]) goto fail;

    m->layers = tp_xcalloc((size_t)hp->n_layers, sizeof *m->layers);
    for (int l = 0; l < hp->n_layers; l++) {
        tp_layer *L = &m->layers[l];
        char nm[96];
#define NAME(s) (snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, s), nm)
        if (!(L->attn_norm = load_vector(&ld, NAME("attn_norm"), hp->dim, false))) goto fail;
        if (!(L->ffn_norm = load_vector(&ld, NAME("ffn_norm"), hp->dim, false))) goto fail;
        if (!load_matrix(&ld, &L->wq, NAME("attn_q"), hp->dim, q_dim, false)) goto fail;
        if (!load_matrix(&ld, &L->wk, NAME("attn_k"), hp->dim, kv_dim, false)) goto fail;
        if (!load_matrix(&ld, &L->wv, NAME("attn_v"), hp->dim, kv_dim, false)) goto fail;
        if (!load_matrix(&ld, &L->wo, NAME("attn_output"), q_dim, hp->dim, false)) goto fail;
        if (!load_matrix(&ld, &L->w_gate, NAME("ffn_gate"), hp->dim, hp->ffn_dim, false)) goto fail;
        if (!load_matrix(&ld, &L->w_up, NAME("ffn_up"), hp->dim, hp->ffn_dim, false)) goto fail;
        if (!load_matrix(&ld, &L->w_down, NAME("ffn_down"), hp->ffn_dim, hp->dim, false)) goto fail;
#undef NAME
    }
    if (linear_scale <= 0) { tp_fail(err, "%s: rope scaling factor %g must be positive", path, linear_scale); goto fail; }
    repack_weights(m);
    if (tp_model_finish(m, opts, err)) goto fail;
    if (linear_scale != 1.0)
        for (int i = 0; i < hp->rope_dim / 2; i++) m->rope_inv_freq[i] = (float)(m->rope_inv_freq[i] / linear_scale);
    return m;
fail:
    tp_model_free(m);
    return NULL;
}
