/* model.c: building a tp_model from a GGUF file, and what every loader shares.
 *
 * The GGUF loader reads the llama hyperparameters ({arch}.*) as 64-bit integers
 * and has model/hparams.c validate them (bounds, products) before anything is
 * sized by them, finds every tensor by its standard name, checks its shape,
 * type and alignment, and points the model at the mapped bytes. Only norm
 * vectors that are not f32 are converted (and counted). Every allocation the
 * loader makes is charged to a ledger against tp_load_opts.max_bytes first.
 */
#include "model/model.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "core/checked.h"
#include "core/common.h"
#include "format/gguf.h"
#include "format/safetensors.h"
#include "model/hf.h"
#include "model/hparams.h"
#include "tensor/dtype.h"
#include "tokenizer/tokenizer.h"

int tp_model_own(tp_model *m, void *p, size_t bytes, const char *path, char *err) {
    if (m->n_owned == m->cap_owned) {
        /* at most a few per layer (TP_MAX_LAYERS bounds the count): cannot wrap */
        int cap = m->cap_owned ? 2 * m->cap_owned : 16;
        void **o = realloc(m->owned, (size_t)cap * sizeof *o);
        if (!o) {
            free(p);
            return tp_fail(err, "%s: out of memory (%zu bytes for the list of buffers the model owns)", path,
                           (size_t)cap * sizeof *o);
        }
        m->owned = o;
        m->cap_owned = cap;
    }
    m->owned[m->n_owned++] = p;
    m->owned_bytes += bytes;
    return 0;
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

void tp_model_free(tp_model *m) {
    if (!m) return;
    free(m->path);
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
    tp_ledger *led;
    char *err;
} loader;

/* key: an integer of any width, read as 64 bits; x->set false when absent.
 * false (with err) only when the key has a non-integer type. */
static bool read_int(loader *ld, const char *key, tp_hp_int *x) {
    char e2[TP_ERR_LEN] = "";
    x->key = key;
    x->set = tp_gguf_get_int(ld->f, key, &x->v, e2);
    if (!x->set && e2[0]) return tp_fail(ld->err, "%s: %s", ld->path, e2), false;
    return true;
}

static bool read_float(loader *ld, const char *key, double def, double *out) {
    char e2[TP_ERR_LEN] = "";
    if (tp_gguf_get_float(ld->f, key, out, e2)) return true;
    if (e2[0]) return tp_fail(ld->err, "%s: %s", ld->path, e2), false;
    *out = def;
    return true;
}

/* Find a tensor, check its shape ({ne0, ne1}; ne1 = 0 for 1-D), that we can
 * compute with its type and that its bytes are aligned for it. */
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
    const char *tn = tp_dtype_name(t->type);
    if (!tp_dtype_supported(t->type)) {
        tp_fail(ld->err, "%s: tensor %s has type %s, which tempo does not support", ld->path, name, tn ? tn : "?");
        return NULL;
    }
    /* The kernels read f32 elements as floats and every block type's scales as
     * 16-bit halves: a file with general.alignment 1 or 2 can place them at
     * an odd address, which they must not be read from. */
    size_t need = t->type == TP_F32 ? 4 : 2;
    if ((uintptr_t)t->data % need) {
        tp_fail(ld->err, "%s: tensor %s (%s) starts at file offset %llu, not a multiple of %zu (general.alignment "
                         "%llu)", ld->path, name, tn, (unsigned long long)((const uint8_t *)t->data - ld->f->map),
                need, (unsigned long long)ld->f->alignment);
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
    char label[TP_ERR_LEN];
    snprintf(label, sizeof label, "%.200s: converting %.60s to f32", ld->path, name);
    if (tp_ledger_charge(ld->led, (size_t)n * sizeof(float), label, ld->err)) return NULL;
    float *v = malloc((size_t)n * sizeof(float));
    if (!v) {
        tp_fail(ld->err, "%s: out of memory (%zu bytes converting %s to f32)", ld->path, (size_t)n * sizeof(float),
                name);
        return NULL;
    }
    tp_dequantize_row(t->type, t->data, v, (size_t)n);
    if (tp_model_own(ld->m, v, (size_t)n * sizeof(float), ld->path, ld->err)) return NULL;
    return v;
}

/* Placement of the weights for the CPU kernels (kernels/matmul.h), after the
 * device decision (tempo_model_open): the tensor data moves onto huge pages
 * (tp_weights_to_hugepages), then the host's matrices are rewritten in place
 * into the kernels' interleaved layouts (tp_weight_repack). The mappings are
 * private: the moved or written pages replace the file's pages in this
 * process, so the weights are not held twice, the mapped bytes stay counted
 * once, and the files are never written. Layers on a GPU are left alone
 * (uploaded from the file's layout, their pages given back), and so is a tied
 * embedding whose output matrix is on the device; with a device nothing moves
 * (its released pages must stay file-backed). TEMPO_NO_REPACK=1 keeps the
 * files' pages and layout (shared page cache; the kernels then build their
 * tiles per call, far slower). */
void tp_model_place_weights(tp_model *m, int gpu_layers, bool head_on_gpu) {
    const char *no = getenv("TEMPO_NO_REPACK");
    if (no && *no && strcmp(no, "0") != 0) return;
    const int on_dev = gpu_layers > 0 ? gpu_layers : 0;
    const bool head = on_dev > 0 && head_on_gpu;
    const st_set *st = m->hf;
    int n_maps = m->gguf ? 1 : st ? st->n_files : 0;
    if (!n_maps) return;
    if (on_dev == 0) {
        if (m->gguf && m->gguf->data_offset < m->gguf->map_size)
            tp_weights_to_hugepages((void *)(uintptr_t)(m->gguf->map + m->gguf->data_offset),
                                    m->gguf->map_size - m->gguf->data_offset);
        for (int i = 0; st && i < st->n_files; i++)
            if (st->files[i]->data_offset < st->files[i]->map_size)
                tp_weights_to_hugepages((void *)(uintptr_t)(st->files[i]->map + st->files[i]->data_offset),
                                        st->files[i]->map_size - st->files[i]->data_offset);
    }
    int n = 0;
    /* Without this list the weights stay in the files' layout: correct, only
     * slower (as when tp_weight_repack cannot get its tile buffer). */
    tp_weight **ws = malloc((size_t)(2 + 7 * m->hp.n_layers) * sizeof *ws);
    if (!ws) return;
    const bool tied_on_dev = head && m->output.data == m->tok_embd.data;
    if (!tied_on_dev) ws[n++] = &m->tok_embd;
    if (!head && !tied_on_dev) ws[n++] = &m->output;
    for (int l = on_dev; l < m->hp.n_layers; l++) {
        tp_layer *L = &m->layers[l];
        tp_weight *lw[7] = { &L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down };
        memcpy(ws + n, lw, sizeof lw);
        n += 7;
    }
    int ok = 1;
    for (int i = 0; i < n_maps && ok; i++) {
        const uint8_t *map = m->gguf ? m->gguf->map : st->files[i]->map;
        size_t size = m->gguf ? m->gguf->map_size : st->files[i]->map_size;
        ok = mprotect((void *)(uintptr_t)map, size, PROT_READ | PROT_WRITE) == 0;
    }
    if (ok) tp_weights_repack(ws, n);
    for (int i = 0; i < n_maps; i++) {
        const uint8_t *map = m->gguf ? m->gguf->map : st->files[i]->map;
        size_t size = m->gguf ? m->gguf->map_size : st->files[i]->map_size;
        mprotect((void *)(uintptr_t)map, size, PROT_READ);
    }
    free(ws);
}

/* Every hyperparameter, validated in one place (model/hparams.c). */
static bool read_hparams(loader *ld, double *linear_scale) {
    tp_model *m = ld->m;
    static const char *const suffix[] = { "embedding_length", "block_count", "feed_forward_length",
                                          "attention.head_count", "attention.head_count_kv", "context_length",
                                          "attention.key_length", "rope.dimension_count" };
    enum { N_KEYS = sizeof suffix / sizeof suffix[0] };
    char keys[N_KEYS][96];
    tp_hparams_in in = { .path = ld->path };
    tp_hp_int *dst[N_KEYS] = { &in.dim, &in.n_layers, &in.ffn_dim, &in.n_heads, &in.n_kv_heads, &in.n_ctx,
                               &in.head_dim, &in.rope_dim };
    for (int i = 0; i < N_KEYS; i++) {
        snprintf(keys[i], sizeof keys[i], "%s.%s", m->arch, suffix[i]);
        if (!read_int(ld, keys[i], dst[i])) return false;
    }
    /* the vocabulary size is the embedding's row count */
    const gguf_tensor *emb = tp_gguf_find_tensor(ld->f, "token_embd.weight");
    if (!emb) return tp_fail(ld->err, "%s: missing required tensor token_embd.weight", ld->path), false;
    in.n_vocab = (tp_hp_int){ (int64_t)emb->ne[1], true, "the row count of token_embd.weight" };
    char eps_key[96], base_key[96];
    snprintf(eps_key, sizeof eps_key, "%s.attention.layer_norm_rms_epsilon", m->arch);
    snprintf(base_key, sizeof base_key, "%s.rope.freq_base", m->arch);
    in.eps_key = eps_key;
    in.rope_base_key = base_key;
    if (!read_float(ld, eps_key, 1e-5, &in.eps) || !read_float(ld, base_key, 10000.0, &in.rope_base)) return false;
    if (tp_hparams_validate(&in, &m->hp, ld->err)) return false;

    /* linear RoPE scaling: rope.scaling.type "linear" with rope.scaling.factor, or the older rope.scale_linear */
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", m->arch);
    bool linear = tp_gguf_str_is(ld->f, key, "linear");
    snprintf(key, sizeof key, "%s.%s", m->arch, linear ? "rope.scaling.factor" : "rope.scale_linear");
    if (!read_float(ld, key, 1.0, linear_scale)) return false;
    if (!(*linear_scale > 0 && *linear_scale < 1e9))
        return tp_fail(ld->err, "%s: %s = %g is out of range (0, 1e9)", ld->path, key, *linear_scale), false;
    return true;
}

tp_model *tp_model_load_gguf(const char *path, const tp_load_opts *opts, char *err) {
    tp_ledger led = { .limit = opts ? opts->max_bytes : 0 };
    gguf_file *f = tp_gguf_open_ex(path, &led, err);
    if (!f) return NULL;
    tp_model *m = calloc(1, sizeof *m);
    if (!m) {
        tp_fail(err, "%s: out of memory (%zu bytes for the model)", path, sizeof *m);
        tp_gguf_close(f);
        return NULL;
    }
    m->gguf = f;
    loader ld = { m, f, path, &led, err };
    tp_hparams *hp = &m->hp;
    char label[TP_ERR_LEN];
    snprintf(label, sizeof label, "%.200s: the mapped file", path);
    if (tp_ledger_charge(&led, f->map_size, label, err)) goto fail;

    if (tp_gguf_get_str(f, "general.architecture", m->arch, sizeof m->arch) < 0) {
        tp_fail(err, "%s: missing required key general.architecture", path);
        goto fail;
    }
    if (!tp_gguf_str_is(f, "general.architecture", "llama")) {
        tp_fail(err, "%s: architecture '%s' is not supported (tempo runs llama)", path, m->arch);
        goto fail;
    }
    double linear_scale;
    if (!read_hparams(&ld, &linear_scale)) goto fail;

    if (!(m->tok = tp_tokenizer_from_gguf_ex(f, hp->n_vocab, &led, err))) goto fail;

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
    for (int i = 0; m->rope_freq_factors && i < hp->rope_dim / 2; i++)
        if (!(m->rope_freq_factors[i] > 0 && m->rope_freq_factors[i] < 1e9)) {
            tp_fail(err, "%s: rope_freqs.weight[%d] = %g is out of range (0, 1e9)", path, i,
                    (double)m->rope_freq_factors[i]);
            goto fail;
        }

    if (tp_ledger_charge(&led, (size_t)hp->n_layers * sizeof *m->layers, "the layer table", err)) goto fail;
    if (!(m->layers = calloc((size_t)hp->n_layers, sizeof *m->layers))) {
        tp_fail(err, "%s: out of memory (%zu bytes for the layer table)", path,
                (size_t)hp->n_layers * sizeof *m->layers);
        goto fail;
    }
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
    if (tp_model_finish(m, opts, err)) {
        char why[TP_ERR_LEN];
        snprintf(why, sizeof why, "%s", err);
        tp_fail(err, "%s: %s", path, why);
        goto fail;
    }
    if (linear_scale != 1.0)
        for (int i = 0; i < hp->rope_dim / 2; i++) m->rope_inv_freq[i] = (float)(m->rope_inv_freq[i] / linear_scale);
    f->ledger = NULL; /* the ledger ends with loading; the file's tables stay */
    return m;
fail:
    tp_model_free(m);
    return NULL;
}
