/* hf.c: Hugging Face model folders (config.json + safetensors + tokenizer.json).
 *
 * A folder as published on the Hub runs directly, with no conversion step:
 *   config.json                 hyperparameters (LlamaForCausalLM and Llama-shaped
 *                               names such as MistralForCausalLM)
 *   model.safetensors, or model.safetensors.index.json + its shards
 *                               weights, memory-mapped (format/safetensors.h)
 *   tokenizer.json, tokenizer_config.json
 *                               the tokenizer (tp_tokenizer_from_hf)
 *   generation_config.json      optional: bos/eos ids
 *
 * Weights: a Hugging Face matrix [out, in] (row-major) has the bytes of a GGUF
 * tensor ne [in, out], so F32/F16/BF16 matrices are used in place. Norm vectors
 * that are not f32 are converted (tp_model_own, counted in owned_bytes).
 *
 * RoPE: Hugging Face checkpoints keep q_proj/k_proj rows in rotate_half order
 * (each head's first half pairs with its second half), where GGUF files hold
 * llama.cpp's permutation of them (adjacent pairs). Rather than permuting rows
 * (a copy of q/k), the forward pass rotates (i, i + rope_dim/2) pairs
 * (hp.rope_split_half): the q and k vectors are then a fixed permutation of the
 * GGUF ones, applied to both, so every q.k dot product, and the result, is the
 * same.
 *
 * Hostile folders: config.json and generation_config.json are at most 4 MB and
 * parsed with their cost charged first (format/json.h); every size is read as a
 * 64-bit integer and validated in model/hparams.c; the tokenizer's ids are
 * checked against the embedding's rows before anything is sized by them; every
 * allocation is charged to the load's ledger (tp_load_opts.max_bytes).
 */
#include "model/hf.h"
#include "model/model.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "core/checked.h"
#include "core/common.h"
#include "format/json.h"
#include "format/safetensors.h"
#include "model/hparams.h"
#include "tensor/dtype.h"
#include "tokenizer/tokenizer.h"

void tp_hf_free(void *hf) { tp_st_set_free(hf); }

/* As llama.cpp's convert_hf_to_gguf.py (LlamaModel, rope_freqs): inverse
 * frequencies in f32, wavelength thresholds orig_ctx / {low,high}_freq. */
void tp_llama3_rope_factors(float *out, int rope_dim, double base, double factor, double low_freq,
                            double high_freq, double orig_ctx) {
    double low_wavelen = orig_ctx / low_freq, high_wavelen = orig_ctx / high_freq;
    for (int i = 0; i < rope_dim / 2; i++) {
        float freq = (float)(1.0 / pow(base, (double)(2 * i) / rope_dim));
        double wavelen = 2 * M_PI / freq;
        double f;
        if (wavelen < high_wavelen) f = 1.0;
        else if (wavelen > low_wavelen) f = factor;
        else {
            double smooth = (orig_ctx / wavelen - low_freq) / (high_freq - low_freq);
            f = 1.0 / ((1 - smooth) / factor + smooth);
        }
        out[i] = (float)f;
    }
}

/* ---- config.json ---- */

typedef struct {
    const char *path; /* for messages */
    const cJSON *j;
    char *err;
} cfg_ctx;

/* config.json and generation_config.json are a few KB in published models. */
#define HF_MAX_CONFIG ((size_t)4 << 20)

/* Every key read from config.json and generation_config.json: only these
 * become cJSON trees, each at most HF_MAX_VALUE bytes of text. */
static const char *const config_keys[] = {
    "architectures", "model_type", "hidden_act", "attention_bias", "mlp_bias", "rope_scaling", "rope_parameters",
    "rope_theta", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "num_key_value_heads", "head_dim", "max_position_embeddings", "sliding_window", "rms_norm_eps",
    "tie_word_embeddings", "vocab_size", "bos_token_id", "eos_token_id", NULL,
};
#define HF_MAX_VALUE ((size_t)64 << 10)

static cJSON *read_json(const char *path, bool optional, tp_ledger *led, size_t *charged, char *err) {
    struct stat st;
    *charged = 0;
    if (optional && stat(path, &st) != 0) return NULL;
    return tp_json_read_keys(path, HF_MAX_CONFIG, config_keys, HF_MAX_VALUE, led, charged, err);
}

static const cJSON *item(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNull(v) ? NULL : v; /* null means "not set" in Hugging Face configs */
}

/* A positive integer, read as 64 bits (its upper bound is checked by
 * tp_hparams_validate, which names key and value); absent: x->set false. */
static bool cfg_int64(cfg_ctx *c, const char *key, tp_hp_int *x) {
    const cJSON *v = item(c->j, key);
    x->key = key;
    x->set = v != NULL;
    if (!v) return true;
    double d = cJSON_IsNumber(v) ? v->valuedouble : -1;
    if (!(d >= 1 && d <= 9007199254740992.0) || d != floor(d))
        return tp_fail(c->err, "%s: %s must be a positive integer", c->path, key), false;
    x->v = (int64_t)d;
    return true;
}

/* A required (def < 0) or optional positive integer no larger than an int. */
static bool cfg_int(cfg_ctx *c, const char *key, int64_t def, int *out) {
    tp_hp_int x;
    if (!cfg_int64(c, key, &x)) return false;
    if (!x.set) {
        if (def < 0) return tp_fail(c->err, "%s: missing %s", c->path, key), false;
        *out = (int)def;
        return true;
    }
    if (tp_hp_check_range(c->path, key, x.v, 1, INT32_MAX, c->err)) return false;
    *out = (int)x.v;
    return true;
}

/* A number from object o (c->j when NULL); absent: def, or an error if required. */
static bool cfg_num(cfg_ctx *c, const cJSON *o, const char *what, const char *key, bool required, double def,
                    double *out) {
    const cJSON *v = item(o ? o : c->j, key);
    if (!v) {
        if (required) return tp_fail(c->err, "%s: %s needs %s", c->path, what, key), false;
        *out = def;
        return true;
    }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return tp_fail(c->err, "%s: %s%s%s must be a number", c->path, o ? what : "", o ? " " : "", key), false;
    *out = v->valuedouble;
    return true;
}

static bool llama_shaped(const char *arch) {
    static const char *const names[] = { "LlamaForCausalLM", "LLaMAForCausalLM", "MistralForCausalLM" };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(arch, names[i]) == 0) return true;
    return false;
}

/* The architecture: architectures[0], else model_type. */
static bool check_arch(cfg_ctx *c, tp_model *m) {
    const cJSON *a = item(c->j, "architectures");
    const char *arch = NULL;
    if (cJSON_IsArray(a) && cJSON_IsString(a->child)) arch = a->child->valuestring;
    else if (a && !cJSON_IsArray(a)) return tp_fail(c->err, "%s: architectures is not a list", c->path), false;
    if (arch) {
        if (!llama_shaped(arch))
            return tp_fail(c->err, "%s: architecture '%.60s' is not Llama-shaped (tempo runs LlamaForCausalLM, "
                                   "MistralForCausalLM)", c->path, arch), false;
    } else {
        const cJSON *mt = item(c->j, "model_type");
        if (!cJSON_IsString(mt)) return tp_fail(c->err, "%s: missing architectures and model_type", c->path), false;
        if (strcmp(mt->valuestring, "llama") != 0 && strcmp(mt->valuestring, "mistral") != 0)
            return tp_fail(c->err, "%s: model_type '%.60s' is not Llama-shaped (tempo runs llama, mistral)", c->path,
                           mt->valuestring), false;
    }
    /* Llama-shaped also means: SiLU gated FFN, no biases. */
    const cJSON *act = item(c->j, "hidden_act");
    if (act && (!cJSON_IsString(act) || strcmp(act->valuestring, "silu") != 0))
        return tp_fail(c->err, "%s: hidden_act '%.40s' is not supported (silu)", c->path,
                       cJSON_IsString(act) ? act->valuestring : "?"), false;
    static const char *const biases[] = { "attention_bias", "mlp_bias" };
    for (int i = 0; i < 2; i++)
        if (cJSON_IsTrue(item(c->j, biases[i])))
            return tp_fail(c->err, "%s: %s = true is not supported (Llama layers have no biases)", c->path,
                           biases[i]), false;
    snprintf(m->arch, sizeof m->arch, "llama");
    return true;
}

/* rope_scaling (or transformers 5's rope_parameters): none, linear, or llama3. */
typedef struct {
    double linear;                    /* divisor of every frequency (1 = none) */
    bool llama3;
    double factor, low, high, orig;   /* llama3 */
} rope_cfg;

static bool read_rope(cfg_ctx *c, double *theta, rope_cfg *r) {
    memset(r, 0, sizeof *r);
    r->linear = 1.0;
    const cJSON *rs = item(c->j, "rope_scaling");
    const cJSON *rp = item(c->j, "rope_parameters");
    if (rp && !cJSON_IsObject(rp)) return tp_fail(c->err, "%s: rope_parameters is not an object", c->path), false;
    if (!cfg_num(c, NULL, "", "rope_theta", false, 10000.0, theta)) return false;
    if (rp && !item(c->j, "rope_theta") && !cfg_num(c, rp, "rope_parameters", "rope_theta", false, 10000.0, theta))
        return false;
    if (!(*theta > 1)) return tp_fail(c->err, "%s: rope_theta %g must be greater than 1", c->path, *theta), false;
    if (!rs) rs = rp;
    if (!rs) return true;
    if (!cJSON_IsObject(rs)) return tp_fail(c->err, "%s: rope_scaling is not an object", c->path), false;
    const cJSON *ty = item(rs, "rope_type");
    if (!ty) ty = item(rs, "type");
    if (ty && !cJSON_IsString(ty)) return tp_fail(c->err, "%s: rope_scaling type is not a string", c->path), false;
    const char *type = ty ? ty->valuestring : "default";
    if (strcmp(type, "default") == 0) return true;
    if (strcmp(type, "linear") == 0) {
        if (!cfg_num(c, rs, "rope_scaling linear", "factor", true, 1, &r->linear)) return false;
        if (!(r->linear > 0))
            return tp_fail(c->err, "%s: rope_scaling factor %g must be positive", c->path, r->linear), false;
        return true;
    }
    if (strcmp(type, "llama3") == 0) {
        const char *w = "rope_scaling llama3";
        r->llama3 = true;
        if (!cfg_num(c, rs, w, "factor", true, 0, &r->factor) ||
            !cfg_num(c, rs, w, "low_freq_factor", true, 0, &r->low) ||
            !cfg_num(c, rs, w, "high_freq_factor", true, 0, &r->high) ||
            !cfg_num(c, rs, w, "original_max_position_embeddings", true, 0, &r->orig))
            return false;
        if (!(r->factor > 0) || !(r->low > 0) || !(r->high > r->low) || !(r->orig >= 1))
            return tp_fail(c->err, "%s: rope_scaling llama3 needs factor > 0, 0 < low_freq_factor < high_freq_factor "
                                   "and original_max_position_embeddings >= 1 (got %g, %g, %g, %g)",
                           c->path, r->factor, r->low, r->high, r->orig), false;
        return true;
    }
    return tp_fail(c->err, "%s: rope_scaling type '%.40s' is not supported (llama3, linear)", c->path, type), false;
}

/* Every size as 64 bits, validated in one place (model/hparams.c). The rope
 * base comes from read_rope (theta). */
static bool read_hparams(cfg_ctx *c, tp_hparams *hp, double theta) {
    tp_hparams_in in = { .path = c->path, .eps_key = "rms_norm_eps", .rope_base_key = "rope_theta",
                         .rope_base = theta };
    if (!cfg_int64(c, "hidden_size", &in.dim) || !cfg_int64(c, "num_hidden_layers", &in.n_layers) ||
        !cfg_int64(c, "num_attention_heads", &in.n_heads) || !cfg_int64(c, "intermediate_size", &in.ffn_dim) ||
        !cfg_int64(c, "num_key_value_heads", &in.n_kv_heads) || !cfg_int64(c, "head_dim", &in.head_dim) ||
        !cfg_int64(c, "max_position_embeddings", &in.n_ctx))
        return false;
    const char *req[] = { "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size" };
    const tp_hp_int *reqv[] = { &in.dim, &in.n_layers, &in.n_heads, &in.ffn_dim };
    for (int i = 0; i < 4; i++)
        if (!reqv[i]->set) return tp_fail(c->err, "%s: missing %s", c->path, req[i]), false;
    if (!in.n_ctx.set) in.n_ctx = (tp_hp_int){ 2048, true, "max_position_embeddings" }; /* LlamaConfig's default */
    /* Mistral's sliding window: attention over the whole context equals it only
     * while the context fits the window, so the window caps the context. */
    tp_hp_int sw;
    if (!cfg_int64(c, "sliding_window", &sw)) return false;
    if (sw.set && sw.v < in.n_ctx.v) in.n_ctx = sw;
    if (!cfg_num(c, NULL, "", "rms_norm_eps", false, 1e-6, &in.eps)) return false; /* LlamaConfig's default */
    return tp_hparams_validate(&in, hp, c->err) == 0;
}

/* bos/eos ids: a number or a list of numbers; each must be a vocabulary id. */
static bool check_ids(const char *path, const cJSON *j, const char *key, int n_vocab, char *err) {
    const cJSON *v = item(j, key);
    if (!v) return true;
    const cJSON *e = cJSON_IsArray(v) ? v->child : v;
    for (; e; e = cJSON_IsArray(v) ? e->next : NULL) {
        double d = cJSON_IsNumber(e) ? e->valuedouble : -1;
        if (!(d >= 0 && d < n_vocab) || d != floor(d))
            return tp_fail(err, "%s: %s must be token ids below the vocabulary size %d", path, key, n_vocab), false;
    }
    return true;
}

/* Every eos id of a config (a number or a list) ends generation. */
static void add_eos_ids(tokenizer *t, const cJSON *j) {
    const cJSON *v = j ? item(j, "eos_token_id") : NULL;
    if (!v) return;
    const cJSON *e = cJSON_IsArray(v) ? v->child : v;
    for (; e; e = cJSON_IsArray(v) ? e->next : NULL)
        if (cJSON_IsNumber(e)) tp_tokenizer_add_eog(t, (int)e->valuedouble);
}

/* ---- tensors ---- */

typedef struct {
    tp_model *m;
    const st_set *st;
    const char *dir;
    tp_ledger *led;
    char *err;
} hf_loader;

static const char *type_name(const st_tensor *t) { return t->dtype; }

static bool charge(hf_loader *ld, size_t bytes, const char *what, const char *name) {
    char label[TP_ERR_LEN];
    snprintf(label, sizeof label, "%.200s: %s %.100s", ld->dir, what, name);
    return tp_ledger_charge(ld->led, bytes, label, ld->err) == 0;
}

static void fmt_shape(char *buf, size_t cap, const st_tensor *t) {
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < t->n_dims && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%llu", i ? ", " : "", (unsigned long long)t->shape[i]);
    if (n < cap) snprintf(buf + n, cap - n, "]");
}

/* Find a tensor and check its shape ([d0] or [d0, d1], outermost first) and dtype. */
static const st_tensor *need(hf_loader *ld, const char *name, int64_t d0, int64_t d1, bool optional) {
    const st_tensor *t = tp_st_set_find(ld->st, name);
    if (!t) {
        if (!optional) tp_fail(ld->err, "%s: missing required tensor %s", ld->dir, name);
        return NULL;
    }
    int nd = d1 ? 2 : 1;
    if (t->n_dims != nd || (int64_t)t->shape[0] != d0 || (d1 && (int64_t)t->shape[1] != d1)) {
        char got[96];
        fmt_shape(got, sizeof got, t);
        if (d1)
            tp_fail(ld->err, "%s: tensor %s has shape %s, expected [%lld, %lld]", t->file->path, name, got,
                    (long long)d0, (long long)d1);
        else
            tp_fail(ld->err, "%s: tensor %s has shape %s, expected [%lld]", t->file->path, name, got, (long long)d0);
        return NULL;
    }
    if (t->type == ST_TYPE_OTHER) {
        tp_fail(ld->err, "%s: tensor %s has dtype %s; tempo computes with F32, F16 and BF16", t->file->path, name,
                type_name(t));
        return NULL;
    }
    ld->m->weight_bytes += t->nbytes;
    return t;
}

/* The mapped bytes when they are aligned for their element type (safetensors
 * only aligns what its header padding gives); otherwise an owned aligned copy. */
static const void *usable(hf_loader *ld, const st_tensor *t) {
    size_t es = t->type == TP_F32 ? 4 : 2;
    if ((uintptr_t)t->data % es == 0) return t->data;
    if (!charge(ld, t->nbytes, "aligning", t->name)) return NULL;
    void *p = NULL;
    if (posix_memalign(&p, 64, t->nbytes ? t->nbytes : 1) != 0) {
        tp_fail(ld->err, "%s: cannot allocate %llu bytes to align tensor %s", t->file->path,
                (unsigned long long)t->nbytes, t->name);
        return NULL;
    }
    memcpy(p, t->data, t->nbytes);
    if (tp_model_own(ld->m, p, t->nbytes, ld->dir, ld->err)) return NULL;
    return p;
}

static bool load_matrix(hf_loader *ld, tp_weight *w, const char *name, int n_in, int n_out) {
    const st_tensor *t = need(ld, name, n_out, n_in, false);
    if (!t) return false;
    if (!(w->data = usable(ld, t))) return false;
    w->type = t->type;
    w->n_in = n_in;
    w->n_out = n_out;
    return true;
}

/* A norm vector as f32: the mapped bytes when they are f32, else an owned copy. */
static const float *load_vector(hf_loader *ld, const char *name, int n) {
    const st_tensor *t = need(ld, name, n, 0, false);
    if (!t) return NULL;
    if (t->type == TP_F32) return usable(ld, t);
    if (!charge(ld, (size_t)n * sizeof(float), "converting", name)) return NULL;
    float *v = malloc((size_t)n * sizeof(float));
    if (!v) {
        tp_fail(ld->err, "%s: out of memory (%zu bytes converting %s to f32)", t->file->path, (size_t)n * sizeof(float),
                name);
        return NULL;
    }
    const uint8_t *p = t->data;
    for (int i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * (size_t)i, 2); /* may be unaligned */
        v[i] = t->type == TP_BF16 ? tp_bf16_to_f32(h) : tp_f16_to_f32(h);
    }
    if (tp_model_own(ld->m, v, (size_t)n * sizeof(float), ld->dir, ld->err)) return NULL;
    return v;
}

static bool load_weights(hf_loader *ld, bool tied) {
    tp_model *m = ld->m;
    tp_hparams *hp = &m->hp;
    const st_tensor *emb = tp_st_set_find(ld->st, "model.embed_tokens.weight");
    if (!emb) return tp_fail(ld->err, "%s: missing required tensor model.embed_tokens.weight", ld->dir), false;
    if (emb->n_dims != 2)
        return tp_fail(ld->err, "%s: tensor model.embed_tokens.weight is not a [vocab, %d] matrix", emb->file->path,
                       hp->dim), false;
    if (tp_hp_check_range(emb->file->path, "the row count of model.embed_tokens.weight",
                          emb->shape[0] > INT64_MAX ? INT64_MAX : (int64_t)emb->shape[0], 1, TP_MAX_VOCAB, ld->err))
        return false;
    hp->n_vocab = (int)emb->shape[0];
    int q_dim = hp->n_heads * hp->head_dim, kv_dim = hp->n_kv_heads * hp->head_dim;
    if (!load_matrix(ld, &m->tok_embd, "model.embed_tokens.weight", hp->dim, hp->n_vocab)) return false;
    if (!(m->out_norm = load_vector(ld, "model.norm.weight", hp->dim))) return false;
    if (tied) m->output = m->tok_embd;
    else if (!load_matrix(ld, &m->output, "lm_head.weight", hp->dim, hp->n_vocab)) return false;

    if (!charge(ld, (size_t)hp->n_layers * sizeof *m->layers, "the layer table", "")) return false;
    if (!(m->layers = calloc((size_t)hp->n_layers, sizeof *m->layers)))
        return tp_fail(ld->err, "%s: out of memory (%zu bytes for the layer table)", ld->dir,
                       (size_t)hp->n_layers * sizeof *m->layers), false;
    for (int l = 0; l < hp->n_layers; l++) {
        tp_layer *L = &m->layers[l];
        char nm[128];
#define NAME(s) (snprintf(nm, sizeof nm, "model.layers.%d.%s.weight", l, s), nm)
        if (!(L->attn_norm = load_vector(ld, NAME("input_layernorm"), hp->dim))) return false;
        if (!(L->ffn_norm = load_vector(ld, NAME("post_attention_layernorm"), hp->dim))) return false;
        if (!load_matrix(ld, &L->wq, NAME("self_attn.q_proj"), hp->dim, q_dim)) return false;
        if (!load_matrix(ld, &L->wk, NAME("self_attn.k_proj"), hp->dim, kv_dim)) return false;
        if (!load_matrix(ld, &L->wv, NAME("self_attn.v_proj"), hp->dim, kv_dim)) return false;
        if (!load_matrix(ld, &L->wo, NAME("self_attn.o_proj"), q_dim, hp->dim)) return false;
        if (!load_matrix(ld, &L->w_gate, NAME("mlp.gate_proj"), hp->dim, hp->ffn_dim)) return false;
        if (!load_matrix(ld, &L->w_up, NAME("mlp.up_proj"), hp->dim, hp->ffn_dim)) return false;
        if (!load_matrix(ld, &L->w_down, NAME("mlp.down_proj"), hp->ffn_dim, hp->dim)) return false;
#undef NAME
    }
    return true;
}

tp_model *tp_model_load_hf(const char *dir, const tp_load_opts *opts, char *err) {
    char path[4096], gpath[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    snprintf(gpath, sizeof gpath, "%s/generation_config.json", dir);
    tp_ledger led = { .limit = opts ? opts->max_bytes : 0 };
    size_t cfg_charged = 0, gen_charged = 0;
    cJSON *cfg = read_json(path, false, &led, &cfg_charged, err);
    if (!cfg) return NULL;
    err[0] = 0;
    cJSON *gen = read_json(gpath, true, &led, &gen_charged, err);
    if (!gen && err[0]) { cJSON_Delete(cfg); return NULL; }

    tp_model *m = calloc(1, sizeof *m);
    if (!m) {
        tp_fail(err, "%s: out of memory (%zu bytes for the model)", dir, sizeof *m);
        cJSON_Delete(cfg);
        cJSON_Delete(gen);
        return NULL;
    }
    tp_hparams *hp = &m->hp;
    cfg_ctx c = { path, cfg, err };
    double theta;
    rope_cfg rope;
    if (!check_arch(&c, m) || !read_rope(&c, &theta, &rope) || !read_hparams(&c, hp, theta)) goto fail;
    hp->rope_split_half = true;
    const cJSON *tie = item(cfg, "tie_word_embeddings");
    if (tie && !cJSON_IsBool(tie)) { tp_fail(err, "%s: tie_word_embeddings is not true/false", path); goto fail; }
    bool tied = cJSON_IsTrue(tie); /* LlamaConfig's default: false */

    st_set *st = tp_st_set_open_ex(dir, &led, err);
    if (!st) goto fail;
    m->hf = st;
    size_t mapped = 0;
    for (int i = 0; i < st->n_files; i++) mapped = tp_add_sat(mapped, st->files[i]->map_size);
    char label[TP_ERR_LEN];
    snprintf(label, sizeof label, "%.200s: the mapped weights", dir);
    if (tp_ledger_charge(&led, mapped, label, err)) goto fail;
    hf_loader ld = { m, st, dir, &led, err };
    if (!load_weights(&ld, tied)) goto fail;
    int cfg_vocab;
    if (!cfg_int(&c, "vocab_size", hp->n_vocab, &cfg_vocab)) goto fail;
    if (cfg_vocab != hp->n_vocab) {
        tp_fail(err, "%s: vocab_size %d but model.embed_tokens.weight has %d rows", path, cfg_vocab, hp->n_vocab);
        goto fail;
    }
    if (!check_ids(path, cfg, "bos_token_id", hp->n_vocab, err) ||
        !check_ids(path, cfg, "eos_token_id", hp->n_vocab, err) ||
        (gen && (!check_ids(gpath, gen, "bos_token_id", hp->n_vocab, err) ||
                 !check_ids(gpath, gen, "eos_token_id", hp->n_vocab, err))))
        goto fail;

    if (!(m->tok = tp_tokenizer_from_hf_ex(dir, hp->n_vocab, &led, err))) goto fail;
    add_eos_ids(m->tok, cfg);
    add_eos_ids(m->tok, gen);

    if (rope.llama3) {
        size_t fb = (size_t)(hp->rope_dim / 2) * sizeof(float);
        if (tp_ledger_charge(&led, fb, "the llama3 RoPE factors", err)) goto fail;
        float *ff = malloc(fb);
        if (!ff) {
            tp_fail(err, "%s: out of memory (%zu bytes for the llama3 RoPE factors)", dir, fb);
            goto fail;
        }
        tp_llama3_rope_factors(ff, hp->rope_dim, theta, rope.factor, rope.low, rope.high, rope.orig);
        if (tp_model_own(m, ff, fb, dir, err)) goto fail;
        m->rope_freq_factors = ff;
    }
    if (tp_model_finish(m, opts, err)) {
        char why[TP_ERR_LEN];
        snprintf(why, sizeof why, "%s", err);
        tp_fail(err, "%s: %s", dir, why);
        goto fail;
    }
    if (rope.linear != 1.0)
        for (int i = 0; i < hp->rope_dim / 2; i++) m->rope_inv_freq[i] = (float)(m->rope_inv_freq[i] / rope.linear);
    cJSON_Delete(cfg);
    cJSON_Delete(gen);
    tp_st_set_detach_ledger(st); /* the ledger ends with loading */
    return m;
fail:
    cJSON_Delete(cfg);
    cJSON_Delete(gen);
    /* freed here so that tp_model_free need not know about it (see tp_hf_free) */
    tp_hf_free(m->hf);
    m->hf = NULL;
    tp_model_free(m);
    return NULL;
}
