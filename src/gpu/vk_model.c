/* vk_model.c: a model's weights on a Vulkan device, a sequence state (device
 * KV cache + scratch) and the forward pass (gpu.h).
 *
 * The pass for up to max_batch tokens is recorded into one command buffer and
 * submitted once:
 *   copy the step's inputs (embeddings looked up on the host, cos/sin of each
 *   token's position, the slot -> row table, alive bits, mask bits, mixture
 *   weights) from a host-visible staging buffer into device scratch;
 *   per offloaded layer: rmsnorm, [quantize], q/k/v products, rope, K/V into
 *   the tokens' cache rows, attention, [quantize], x += o Wo, rmsnorm,
 *   [quantize], gate/up products, swiglu, [quantize], x += h Wdown;
 *   with every layer on the device: the output norm and matrix, and the
 *   softmax + TEMPO mixture when asked, so only the distribution (and the
 *   logits or attention summary asked for) is copied back;
 *   otherwise the hidden states come back and tp_forward_layers finishes the
 *   batch on the CPU.
 * Barriers separate dependent dispatches; independent ones (q, k, v; gate, up)
 * run back to back.
 *
 * KV rows. The device cache has max_slots rows per offloaded layer. A slot's
 * K/V stay in the row they were written to (tp_slot.row): when the generation
 * loop reclaims pruned slots, tp_kv_compact moves the slots and their row
 * numbers with them, and the attention reads rows through the slot -> row
 * table uploaded with each batch. New slots take the free rows in ascending
 * order (the rows no live slot below kv->n uses), so without compaction slot i
 * is row i.
 */
#ifdef TEMPO_VULKAN

#include "gpu/vk_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/mman.h>
#include <unistd.h>

#include "core/common.h"
#include "format/gguf.h"
#include "format/safetensors.h"
#include "tensor/dtype.h"

#define DEFAULT_BATCH 64
#define WG_ATTN 64
#define WG_ELEM 64
#define MAX_HEAD_DIM (4 * WG_ATTN) /* attn.comp: MAXD values per thread */

typedef uint64_t u64;
typedef uint32_t u32;

/* ------------------------------------------------------------- weights -- */
typedef struct {
    tp_vk_buf buf;
    tp_vk_weight w;
} gweight;

typedef struct {
    gweight wq, wk, wv, wo, gate, up, down;
} glayer;

struct tp_gpu_weights {
    tp_gpu *g;
    int n_layers; /* on the device */
    bool head;
    glayer *L;
    gweight output;
    tp_vk_buf norms;   /* [2 * n_layers + 1][dim]: attn_norm, ffn_norm per layer, then the output norm */
    size_t bytes;
    size_t released;   /* mapped host bytes of uploaded tensors, handed back to the kernel */
    int dim;
};

/* Is [p, p + n) inside one of the model's file mappings (not a heap copy)? */
static bool in_mapping(const tp_model *m, const void *p, size_t n) {
    const uint8_t *a = p;
    if (m->gguf) {
        const gguf_file *f = m->gguf;
        return a >= f->map && a + n <= f->map + f->map_size;
    }
    if (m->hf) {
        const st_set *st = m->hf;
        for (int i = 0; i < st->n_files; i++)
            if (a >= st->files[i]->map && a + n <= st->files[i]->map + st->files[i]->map_size) return true;
    }
    return false;
}

/* Once a mapped tensor is on the device, its pages need not stay resident:
 * drop them (they are file-backed and read-only: touching them again would
 * just read the file), so the host does not hold a second copy of the weights
 * under --max-memory-gb. Only whole pages inside the tensor are dropped. */
static size_t release_pages(const tp_model *m, const void *data, size_t n) {
    if (!in_mapping(m, data, n) || data == m->tok_embd.data) return 0; /* the embedding table stays in use on the host */
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)data + page - 1) & ~(uintptr_t)(page - 1), e = ((uintptr_t)data + n) & ~(uintptr_t)(page - 1);
    if (e > a) madvise((void *)a, e - a, MADV_DONTNEED);
    return n;
}

static uint32_t device_type(uint32_t t) { return tp_vk_type_native(t) ? t : TP_F16; }

static size_t weight_dev_bytes(const tp_weight *w) {
    return tp_dtype_row_bytes(device_type(w->type), (size_t)w->n_in) * (size_t)w->n_out;
}

size_t tp_gpu_weights_bytes_for(const tp_model *m, int n_layers) {
    const tp_hparams *hp = &m->hp;
    if (n_layers < 0 || n_layers > hp->n_layers) n_layers = hp->n_layers;
    size_t b = 0;
    for (int l = 0; l < n_layers; l++) {
        const tp_layer *L = &m->layers[l];
        const tp_weight *ws[7] = { &L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down };
        for (int i = 0; i < 7; i++) b += weight_dev_bytes(ws[i]) + 32;
    }
    bool head = n_layers == hp->n_layers;
    b += sizeof(float) * (size_t)hp->dim * (size_t)(2 * n_layers + 1) + 32;
    if (head) b += weight_dev_bytes(&m->output) + 32;
    return b;
}

/* Upload one matrix, converting rows of types the shaders do not read to F16. */
static int upload_weight(tp_gpu *g, gweight *gw, const tp_weight *w, const char *name, char *err) {
    uint32_t dt = device_type(w->type);
    size_t rb = tp_dtype_row_bytes(dt, (size_t)w->n_in), bytes = rb * (size_t)w->n_out;
    if (tp_vk_buf_new(g, &gw->buf, bytes, TP_GPU_MEM_WEIGHTS, false, err)) {
        char tmp[TP_ERR_LEN];
        snprintf(tmp, sizeof tmp, "%s", err);
        return tp_fail(err, "%s: %s", name, tmp);
    }
    gw->w = (tp_vk_weight){ gw->buf.addr, dt, w->n_in, w->n_out, rb };
    if (dt == w->type) return tp_vk_upload(g, &gw->buf, 0, w->data, bytes, err);
    /* Convert a bounded number of rows at a time. */
    size_t src_rb = tp_dtype_row_bytes(w->type, (size_t)w->n_in);
    int rows = (int)((4u << 20) / rb);
    if (rows < 1) rows = 1;
    uint16_t *half = malloc(rb * (size_t)rows);
    float *tmp = malloc(sizeof(float) * (size_t)w->n_in);
    int rc = half && tmp ? 0 : tp_fail(err, "%s: out of memory converting it to F16 for the GPU", name);
    for (int r0 = 0; r0 < w->n_out && !rc; r0 += rows) {
        int nr = w->n_out - r0 < rows ? w->n_out - r0 : rows;
        for (int r = 0; r < nr; r++) {
            tp_dequantize_row(w->type, (const uint8_t *)w->data + (size_t)(r0 + r) * src_rb, tmp, (size_t)w->n_in);
            for (int i = 0; i < w->n_in; i++) half[(size_t)r * w->n_in + i] = tp_f32_to_f16(tmp[i]);
        }
        rc = tp_vk_upload(g, &gw->buf, (size_t)r0 * rb, half, (size_t)nr * rb, err);
    }
    free(half);
    free(tmp);
    return rc;
}

tp_gpu_weights *tp_gpu_weights_new(tp_gpu *g, const tp_model *m, int n_layers, size_t max_bytes, char *err) {
    const tp_hparams *hp = &m->hp;
    if (n_layers < 0 || n_layers > hp->n_layers) n_layers = hp->n_layers;
    if (hp->head_dim > MAX_HEAD_DIM || hp->head_dim % 2)
        return tp_fail(err, "the Vulkan backend needs an even head size of at most %d (this model's is %d)", MAX_HEAD_DIM,
                       hp->head_dim), NULL;
    size_t need = tp_gpu_weights_bytes_for(m, n_layers);
    char a[32], b[32], what[96];
    if (max_bytes && need > max_bytes)
        return tp_fail(err, "the weights of %d layer%s need %s on the GPU, over the %s allowed", n_layers,
                       n_layers == 1 ? "" : "s", tp_fmt_gb((double)need, a, sizeof a),
                       tp_fmt_gb((double)max_bytes, b, sizeof b)), NULL;
    snprintf(what, sizeof what, "the weights of %d layer%s%s", n_layers, n_layers == 1 ? "" : "s",
             n_layers == hp->n_layers ? " and the output head" : "");
    if (tp_vk_check_fits(g, need, what, err)) return NULL;

    tp_gpu_weights *w = calloc(1, sizeof *w);
    if (!w) return tp_fail(err, "out of memory uploading the weights to the GPU"), NULL;
    w->g = g;
    w->n_layers = n_layers;
    w->head = n_layers == hp->n_layers;
    w->dim = hp->dim;
    w->L = calloc((size_t)(n_layers ? n_layers : 1), sizeof *w->L);
    size_t nb = sizeof(float) * (size_t)hp->dim * (size_t)(2 * n_layers + 1);
    float *norms = w->L ? malloc(nb) : NULL;
    if (!norms) {
        free(w->L);
        free(w);
        return tp_fail(err, "out of memory uploading the weights to the GPU"), NULL;
    }
    for (int l = 0; l < n_layers; l++) {
        memcpy(norms + (size_t)(2 * l) * hp->dim, m->layers[l].attn_norm, sizeof(float) * (size_t)hp->dim);
        memcpy(norms + (size_t)(2 * l + 1) * hp->dim, m->layers[l].ffn_norm, sizeof(float) * (size_t)hp->dim);
    }
    memcpy(norms + (size_t)(2 * n_layers) * hp->dim, m->out_norm, sizeof(float) * (size_t)hp->dim);
    int rc = tp_vk_buf_new(g, &w->norms, nb, TP_GPU_MEM_WEIGHTS, false, err) || tp_vk_upload(g, &w->norms, 0, norms, nb, err);
    free(norms);
    static const char *const names[7] = { "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down" };
    for (int l = 0; l < n_layers && !rc; l++) {
        const tp_layer *L = &m->layers[l];
        const tp_weight *src[7] = { &L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down };
        gweight *dst[7] = { &w->L[l].wq, &w->L[l].wk, &w->L[l].wv, &w->L[l].wo, &w->L[l].gate, &w->L[l].up, &w->L[l].down };
        for (int i = 0; i < 7 && !rc; i++) {
            char nm[64];
            snprintf(nm, sizeof nm, "blk.%d.%s", l, names[i]);
            rc = upload_weight(g, dst[i], src[i], nm, err);
        }
    }
    if (!rc && w->head) rc = upload_weight(g, &w->output, &m->output, "output", err);
    for (int l = 0; l < n_layers && !rc; l++) {
        const tp_layer *L = &m->layers[l];
        const tp_weight *src[7] = { &L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down };
        for (int i = 0; i < 7; i++)
            w->released += release_pages(m, src[i]->data, tp_dtype_row_bytes(src[i]->type, (size_t)src[i]->n_in) * (size_t)src[i]->n_out);
    }
    if (!rc && w->head)
        w->released += release_pages(m, m->output.data, tp_dtype_row_bytes(m->output.type, (size_t)m->output.n_in) * (size_t)m->output.n_out);
    if (rc) {
        tp_gpu_weights_free(w);
        return NULL;
    }
    /* what was allocated (the estimate above rounds up) */
    w->bytes = w->norms.size + w->output.buf.size;
    for (int l = 0; l < n_layers; l++) {
        gweight *ws[7] = { &w->L[l].wq, &w->L[l].wk, &w->L[l].wv, &w->L[l].wo, &w->L[l].gate, &w->L[l].up, &w->L[l].down };
        for (int i = 0; i < 7; i++) w->bytes += ws[i]->buf.size;
    }
    g->refs++; /* the weights keep the device open */
    return w;
}

void tp_gpu_weights_free(tp_gpu_weights *w) {
    if (!w) return;
    bool counted = w->bytes != 0;
    for (int l = 0; l < w->n_layers; l++) {
        gweight *ws[7] = { &w->L[l].wq, &w->L[l].wk, &w->L[l].wv, &w->L[l].wo, &w->L[l].gate, &w->L[l].up, &w->L[l].down };
        for (int i = 0; i < 7; i++) tp_vk_buf_free(w->g, &ws[i]->buf);
    }
    tp_vk_buf_free(w->g, &w->output.buf);
    tp_vk_buf_free(w->g, &w->norms);
    free(w->L);
    if (counted) tp_gpu_close(w->g);
    free(w);
}

int tp_gpu_weights_layers(const tp_gpu_weights *w) { return w->n_layers; }
bool tp_gpu_weights_has_head(const tp_gpu_weights *w) { return w->head; }
size_t tp_gpu_weights_released(const tp_gpu_weights *w) { return w->released; }
size_t tp_gpu_weights_bytes(const tp_gpu_weights *w) { return w->bytes; }
tp_gpu *tp_gpu_weights_device(const tp_gpu_weights *w) { return w->g; }

/* ------------------------------------------------------------ sequence -- */
/* Byte offsets of the scratch areas (device "work" buffer) and the staging
 * areas ("in": host -> device, "out": device -> host). */
typedef struct {
    size_t x, xb, q, k, v, att, hb, hb2, xq1, xq2, logits, stats, probs, summ, total;
    /* inputs: at the same offsets in the staging buffer and in the work buffer */
    size_t in_x, in_cs, in_rows, in_alive, in_mask, in_mix, in_total;
    /* outputs (staging "out") */
    size_t out_logits, out_probs, out_x, out_summ, out_total;
} layout_t;

struct tp_gpu_seq {
    tp_gpu_weights *w;
    tp_gpu *g;
    const tp_model *m;
    int n_layers, max_slots, B;
    bool head, summary;
    tp_kv_type kvt;
    tp_vk_buf *kc, *vc;  /* [n_layers] */
    tp_vk_buf work, in, out;
    layout_t o;
    tp_vk_cmd cmd;
    int max_in, mwords;
    uint8_t *used;       /* [max_slots] row in use (scratch for row assignment) */
    int32_t *free_rows;  /* [max_slots] */
    size_t dev_bytes, kv_bytes, staging_bytes;
    double last_wait;
};

static size_t up16(size_t n) { return (n + 15) & ~(size_t)15; }

static void plan(const tp_model *m, int B, int R, bool head, bool summary, layout_t *o, int *max_in, int *mwords) {
    const tp_hparams *hp = &m->hp;
    size_t F = sizeof(float), Bz = (size_t)B;
    int q_dim = hp->n_heads * hp->head_dim, kv_dim = hp->n_kv_heads * hp->head_dim;
    int wide = hp->dim > q_dim ? hp->dim : q_dim;
    int mi = hp->ffn_dim > wide ? hp->ffn_dim : wide;
    *max_in = mi;
    *mwords = (R + 31) / 32;
    size_t at = 0;
#define AREA(f, bytes) do { o->f = at; at += up16(bytes); } while (0)
    AREA(x, Bz * hp->dim * F);
    AREA(xb, Bz * wide * F);
    AREA(q, Bz * q_dim * F);
    AREA(k, Bz * kv_dim * F);
    AREA(v, Bz * kv_dim * F);
    AREA(att, Bz * q_dim * F);
    AREA(hb, Bz * hp->ffn_dim * F);
    AREA(hb2, Bz * hp->ffn_dim * F);
    AREA(xq1, tp_vk_qact_bytes(B, mi));
    AREA(xq2, tp_vk_qact_bytes(B, mi));
    AREA(logits, head ? Bz * hp->n_vocab * F : 16);
    AREA(stats, 2 * Bz * F);
    AREA(probs, head ? (size_t)hp->n_vocab * F : 16);
    AREA(summ, summary ? Bz * (size_t)R * F : 16);
    /* inputs follow in the same buffer, laid out as in the staging buffer */
    size_t in0 = at;
    AREA(in_cs, Bz * (size_t)(hp->rope_dim / 2) * 2 * F);
    AREA(in_rows, (size_t)R * 4);
    AREA(in_alive, (size_t)*mwords * 4);
    AREA(in_mask, Bz * (size_t)*mwords * 4);
    AREA(in_mix, Bz * F);
    o->in_total = at - in0;
    o->total = at;
    /* staging offsets are relative to the staging buffer: shift by in0 */
    o->in_cs -= in0; o->in_rows -= in0; o->in_alive -= in0; o->in_mask -= in0; o->in_mix -= in0;
    o->in_x = o->in_total; /* embeddings: in staging after the rest, copied into the x area */
    o->in_total += up16(Bz * hp->dim * F);
    at = 0;
    AREA(out_logits, head ? Bz * hp->n_vocab * F : 16);
    AREA(out_probs, head ? (size_t)hp->n_vocab * F : 16);
    AREA(out_x, Bz * hp->dim * F);
    AREA(out_summ, summary ? Bz * (size_t)R * F : 16);
    o->out_total = at;
#undef AREA
}

static size_t kv_row_bytes(const tp_model *m, tp_kv_type t) {
    return (size_t)m->hp.n_kv_heads * m->hp.head_dim * (t == TP_KV_F16 ? 2 : 4);
}

/* A buffer of n bytes as the driver may allocate it: tp_vk_buf_new's slack, then whole pages. */
static size_t alloc_bytes(size_t n) { return (n + 32 + 4095) & ~(size_t)4095; }

size_t tp_gpu_seq_bytes_for(const tp_model *m, int n_layers, int max_slots, int max_batch, bool attn_summary,
                            tp_kv_type kv_type, size_t *staging) {
    if (n_layers < 0 || n_layers > m->hp.n_layers) n_layers = m->hp.n_layers;
    if (max_batch <= 0 || max_batch > DEFAULT_BATCH) max_batch = DEFAULT_BATCH;
    layout_t o;
    int mi, mw;
    plan(m, max_batch, max_slots, n_layers == m->hp.n_layers, attn_summary, &o, &mi, &mw);
    if (staging) *staging = alloc_bytes(o.in_total) + alloc_bytes(o.out_total);
    /* device-local buffers: the KV rows of every offloaded layer and the work buffer */
    return 2 * (size_t)n_layers * alloc_bytes((size_t)max_slots * kv_row_bytes(m, kv_type)) + alloc_bytes(o.total + o.in_total);
}

void tp_gpu_seq_free(tp_gpu_seq *s) {
    if (!s) return;
    tp_vk_cmd_free(&s->cmd);
    for (int l = 0; s->kc && s->vc && l < s->n_layers; l++) {
        tp_vk_buf_free(s->g, &s->kc[l]);
        tp_vk_buf_free(s->g, &s->vc[l]);
    }
    free(s->kc);
    free(s->vc);
    tp_vk_buf_free(s->g, &s->work);
    tp_vk_buf_free(s->g, &s->in);
    tp_vk_buf_free(s->g, &s->out);
    free(s->used);
    free(s->free_rows);
    free(s);
}

tp_gpu_seq *tp_gpu_seq_new(tp_gpu_weights *w, const tp_model *m, tp_kv *kv, const tp_gpu_seq_opts *opts, char *err) {
    static const tp_gpu_seq_opts defaults = { 0 };
    const tp_gpu_seq_opts *o = opts ? opts : &defaults;
    const tp_hparams *hp = &m->hp;
    if (kv->n_layers != hp->n_layers || kv->kv_dim != hp->n_kv_heads * hp->head_dim)
        return tp_fail(err, "internal: the KV cache was not made for this model"), NULL;
    if (kv->type == TP_KV_Q8_0)
        return tp_fail(err, "--kv-cache-type q8_0 is not supported by the Vulkan backend (use f16 or f32, or --device cpu)"),
               NULL;
    if (kv->n || kv->spill) return tp_fail(err, "internal: a GPU sequence for a KV cache in use or offloaded"), NULL;
    if (w->dim != hp->dim) return tp_fail(err, "internal: GPU weights of another model"), NULL;
    tp_gpu_seq *s = calloc(1, sizeof *s);
    if (!s) return tp_fail(err, "out of memory creating the GPU sequence state"), NULL;
    s->w = w;
    s->g = w->g;
    s->m = m;
    s->n_layers = o->n_layers > 0 && o->n_layers < w->n_layers ? o->n_layers : w->n_layers;
    s->head = w->head && s->n_layers == hp->n_layers;
    s->summary = o->attn_summary;
    s->kvt = kv->type;
    s->max_slots = o->max_slots > 0 && o->max_slots < kv->capacity ? o->max_slots : kv->capacity;
    /* chunks of the CPU's size: the same visibility rules, the same continuation on the CPU */
    s->B = o->max_batch > 0 && o->max_batch < TP_MATMUL_MAX_BATCH ? o->max_batch : TP_MATMUL_MAX_BATCH;
    if (s->B > DEFAULT_BATCH) s->B = DEFAULT_BATCH;
    plan(m, s->B, s->max_slots, s->head, s->summary, &s->o, &s->max_in, &s->mwords);

    size_t row = kv_row_bytes(m, s->kvt), need = tp_gpu_seq_bytes_for(m, s->n_layers, s->max_slots, s->B, s->summary, s->kvt, NULL);
    char a[32], b[32], what[160];
    if (o->max_bytes && need > o->max_bytes) {
        tp_fail(err, "the GPU KV cache (%d slots x %d layers) and buffers need %s, over the %s left for them under --max-memory-gb",
                s->max_slots, s->n_layers, tp_fmt_gb((double)need, a, sizeof a), tp_fmt_gb((double)o->max_bytes, b, sizeof b));
        free(s);
        return NULL;
    }
    snprintf(what, sizeof what, "the KV cache of %d slots x %d layers and the step buffers", s->max_slots, s->n_layers);
    if (tp_vk_check_fits(s->g, need, what, err)) {
        free(s);
        return NULL;
    }
    int rc = 0;
    s->kc = calloc((size_t)(s->n_layers ? s->n_layers : 1), sizeof *s->kc);
    s->vc = calloc((size_t)(s->n_layers ? s->n_layers : 1), sizeof *s->vc);
    s->used = calloc((size_t)s->max_slots, 1);
    s->free_rows = calloc((size_t)s->max_slots, sizeof *s->free_rows);
    if (!s->kc || !s->vc || !s->used || !s->free_rows) rc = tp_fail(err, "out of memory creating the GPU sequence state");
    for (int l = 0; l < s->n_layers && !rc; l++)
        rc = tp_vk_buf_new(s->g, &s->kc[l], (size_t)s->max_slots * row, TP_GPU_MEM_KV, false, err) ||
             tp_vk_buf_new(s->g, &s->vc[l], (size_t)s->max_slots * row, TP_GPU_MEM_KV, false, err);
    if (!rc) rc = tp_vk_buf_new(s->g, &s->work, s->o.total + s->o.in_total, TP_GPU_MEM_WORK, false, err);
    if (!rc) rc = tp_vk_buf_new(s->g, &s->in, s->o.in_total, TP_GPU_MEM_STAGING, true, err);
    if (!rc) rc = tp_vk_buf_new(s->g, &s->out, s->o.out_total, TP_GPU_MEM_STAGING, true, err);
    if (!rc) rc = tp_vk_cmd_init(s->g, &s->cmd, err);
    if (rc) {
        tp_gpu_seq_free(s);
        return NULL;
    }
    s->kv_bytes = 0;
    for (int l = 0; l < s->n_layers; l++) s->kv_bytes += s->kc[l].size + s->vc[l].size;
    s->dev_bytes = s->kv_bytes + s->work.size;
    s->staging_bytes = s->in.size + s->out.size;
    tp_kv_set_device_layers(kv, s->n_layers);
    return s;
}

size_t tp_gpu_seq_device_bytes(const tp_gpu_seq *s) { return s->dev_bytes; }
size_t tp_gpu_seq_kv_bytes(const tp_gpu_seq *s) { return s->kv_bytes; }
size_t tp_gpu_seq_staging_bytes(const tp_gpu_seq *s) { return s->staging_bytes; }
int tp_gpu_seq_max_slots(const tp_gpu_seq *s) { return s->max_slots; }
double tp_gpu_seq_last_wait_s(const tp_gpu_seq *s) { return s->last_wait; }

/* ------------------------------------------------------------- forward -- */
/* The same checks as the CPU's forward (model/forward.c), plus the device's limits. */
static int check_batch(const tp_gpu_seq *s, const tp_compute *c, const tp_kv *kv, const tp_batch *b, char *err) {
    const tp_hparams *hp = &s->m->hp;
    if (b->n <= 0) return tp_fail(err, "empty batch");
    for (int i = 0; i < b->n; i++) {
        if (b->tokens[i] < 0 || b->tokens[i] >= hp->n_vocab)
            return tp_fail(err, "token id %d is outside the vocabulary (0..%d)", b->tokens[i], hp->n_vocab - 1);
        if (b->pos[i] < 0 || b->pos[i] >= hp->n_ctx)
            return tp_fail(err, "position %d is outside the model's context (%d)", b->pos[i], hp->n_ctx);
    }
    int total = kv->n + b->n;
    if (total > kv->capacity) return tp_fail(err, "Cache token limit exceeded: %d > %d", total, kv->capacity);
    if (total > s->max_slots)
        return tp_fail(err, "the GPU KV cache holds %d slots; this batch needs %d", s->max_slots, total);
    if (!s->head && !c) return tp_fail(err, "internal: a partly offloaded batch without a compute context");
    if (c && !s->head && total > tp_compute_max_ctx(c))
        return tp_fail(err, "context full: %d slots > %d", total, tp_compute_max_ctx(c));
    int B = s->B;
    if (b->n > B && (b->vis == TP_VIS_SET || b->mask)) {
        if (!b->mask) return tp_fail(err, "a set-visible batch of %d tokens exceeds the batch size %d", b->n, B);
        for (int i = 0; i < b->n; i++)
            for (int j = (i / B + 1) * B; j < b->n; j++)
                if (b->mask[(size_t)i * total + kv->n + j])
                    return tp_fail(err, "masked batch of %d tokens: token %d sees token %d of a later chunk", b->n, i, j);
    }
    if (b->layer_weights && !b->attn) return tp_fail(err, "attention summary requested without a buffer");
    if (b->layer_weights && !s->summary)
        return tp_fail(err, "internal: attention summary asked of a GPU sequence made without attn_summary");
    if (b->probs && (!b->mix || !s->head))
        return tp_fail(err, "internal: a device mixture needs its weights and every layer on the device");
    if (kv->type != s->kvt) return tp_fail(err, "internal: the KV cache changed type");
    return 0;
}

/* Rows for the n new slots: the rows no slot below n0 uses, ascending. */
static int assign_rows(tp_gpu_seq *s, const tp_kv *kv, int n0, int n, char *err) {
    memset(s->used, 0, (size_t)s->max_slots);
    for (int j = 0; j < n0; j++) {
        int r = kv->slots[j].row;
        if (r < 0 || r >= s->max_slots) return tp_fail(err, "internal: slot %d has device row %d", j, r);
        s->used[r] = 1;
    }
    int k = 0;
    for (int r = 0; r < s->max_slots && k < n; r++)
        if (!s->used[r]) s->free_rows[k++] = r;
    if (k < n) return tp_fail(err, "the GPU KV cache has %d free rows; this batch needs %d", k, n);
    return 0;
}

typedef struct {
    tp_gpu_seq *s;
    tp_vk_cmd *c;
    VkDeviceAddress wa; /* work base */
    char *err;
} rec;

#define A(f) (R->wa + R->s->o.f)

/* Quantize the activations a weight needs (once per kind); returns the address to pass. */
static int prep_act(rec *R, const tp_vk_weight *w, VkDeviceAddress x, VkDeviceAddress x2, int n, int nb, int *done,
                    VkDeviceAddress *xq) {
    int kind = tp_vk_act_kind(w->type);
    *xq = 0;
    if (!kind) return 0;
    *xq = kind == 1 ? A(xq1) : A(xq2);
    if (*done & (1 << kind)) return 0;
    *done |= 1 << kind;
    return tp_vk_op_quant(R->c, kind, x, x2, *xq, n, nb, R->err);
}

/* Products of the weights ws[0..nw) with the same input x (x2 != 0: the input
 * is silu(x) * x2): the activation quantization each type needs, a barrier,
 * then the products, as one dispatch for matrices that share a type (q, k, v;
 * gate, up) and one per type otherwise. */
static int mm_group(rec *R, const gweight *const *ws, int nw, VkDeviceAddress x, VkDeviceAddress x2, int ldx,
                    const VkDeviceAddress *ys, const int *ldys, int nb, bool acc) {
    int done = 0;
    VkDeviceAddress xq[3];
    for (int i = 0; i < nw; i++)
        if (prep_act(R, &ws[i]->w, x, x2, ws[i]->w.n_in, nb, &done, &xq[i])) return -1;
    if (done) tp_vk_barrier(R->c);
    bool same = true;
    for (int i = 1; i < nw; i++) same &= ws[i]->w.type == ws[0]->w.type && ws[i]->w.n_in == ws[0]->w.n_in;
    const tp_vk_weight *vw[3];
    for (int i = 0; i < nw; i++) vw[i] = &ws[i]->w;
    if (same) return tp_vk_op_matmul(R->c, vw, nw, x, x2, ldx, xq[0], ys, ldys, nb, acc, R->err);
    for (int i = 0; i < nw; i++)
        if (tp_vk_op_matmul(R->c, &vw[i], 1, x, x2, ldx, xq[i], &ys[i], &ldys[i], nb, acc, R->err)) return -1;
    return 0;
}

static int record_layer(rec *R, int l, const tp_batch *b, int n0, int c0, int nb, int base, uint32_t mode) {
    tp_gpu_seq *s = R->s;
    const tp_hparams *hp = &s->m->hp;
    const glayer *L = &s->w->L[l];
    int dim = hp->dim, hd = hp->head_dim, q_dim = hp->n_heads * hd, kv_dim = hp->n_kv_heads * hd;
    VkDeviceAddress norms = s->w->norms.addr, in = R->wa + s->o.total;
    char *err = R->err;
    tp_vk_cmd *c = R->c;
    bool f16 = s->kvt == TP_KV_F16;

    if (tp_vk_op_rmsnorm(c, A(x), dim, norms + sizeof(float) * (size_t)(2 * l) * dim, A(xb), dim, dim, nb, hp->eps, err))
        return -1;
    tp_vk_barrier(c);
    const gweight *qkv[3] = { &L->wq, &L->wk, &L->wv };
    VkDeviceAddress ys[3] = { A(q), A(k), A(v) };
    int lds[3] = { q_dim, kv_dim, kv_dim };
    if (mm_group(R, qkv, 3, A(xb), 0, dim, ys, lds, nb, false)) return -1;
    tp_vk_barrier(c);

    /* rope on q and k, and the keys and values into the tokens' cache rows */
    struct { u64 q, k, v, cs, kc, vc, rows; u32 nb, n_heads, n_kv_heads, head_dim, rope_dim, split_half, ldq, ldk; } rp = {
        A(q), A(k), A(v), in + s->o.in_cs, s->kc[l].addr, s->vc[l].addr, in + s->o.in_rows + 4 * (size_t)base,
        (u32)nb, (u32)hp->n_heads, (u32)hp->n_kv_heads, (u32)hd, (u32)hp->rope_dim, hp->rope_split_half,
        (u32)q_dim, (u32)kv_dim };
    u32 spec[3] = { WG_ELEM, f16, 0 };
    VkPipeline p = tp_vk_pipeline_get(s->g, SH_ROPE_KV, spec, 3, err);
    if (!p) return -1;
    u32 total = (u32)nb * (u32)hp->n_heads * (u32)(hp->rope_dim / 2) + (u32)nb * (u32)(kv_dim / 2);
    tp_vk_dispatch(c, p, &rp, sizeof rp, (total + WG_ELEM - 1) / WG_ELEM, 1, 1);
    tp_vk_barrier(c);

    float lw = b->layer_weights ? b->layer_weights[l] : 0.0f;
    struct { u64 q, kc, vc, rows, alive, mask, out, summ; u32 n0, c0, nb, n_slots, mode, mwords, ld_summ, n_heads,
             n_kv_heads, head_dim; float lw, scale; } ap = {
        A(q), s->kc[l].addr, s->vc[l].addr, in + s->o.in_rows, in + s->o.in_alive, in + s->o.in_mask, A(att), A(summ),
        (u32)n0, (u32)c0, (u32)nb, (u32)(base + nb), mode, (u32)s->mwords, (u32)(n0 + b->n), (u32)hp->n_heads,
        (u32)hp->n_kv_heads, (u32)hd, lw, 1.0f / sqrtf((float)hd) };
    spec[0] = WG_ATTN;
    if (!(p = tp_vk_pipeline_get(s->g, SH_ATTN, spec, 3, err))) return -1;
    tp_vk_dispatch(c, p, &ap, sizeof ap, (u32)nb, lw != 0.0f ? 1 : (u32)hp->n_heads, 1);
    tp_vk_barrier(c);

    const gweight *wo[1] = { &L->wo };
    VkDeviceAddress yx[1] = { A(x) };
    int ldx1[1] = { dim };
    if (mm_group(R, wo, 1, A(att), 0, q_dim, yx, ldx1, nb, true)) return -1;
    tp_vk_barrier(c);

    if (tp_vk_op_rmsnorm(c, A(x), dim, norms + sizeof(float) * (size_t)(2 * l + 1) * dim, A(xb), dim, dim, nb, hp->eps,
                         err))
        return -1;
    tp_vk_barrier(c);
    const gweight *gu[2] = { &L->gate, &L->up };
    VkDeviceAddress yh[2] = { A(hb), A(hb2) };
    int ldh[2] = { hp->ffn_dim, hp->ffn_dim };
    if (mm_group(R, gu, 2, A(xb), 0, dim, yh, ldh, nb, false)) return -1;
    tp_vk_barrier(c);
    /* x += W_down (silu(gate) * up): the SwiGLU is applied as the product reads its input */
    const gweight *dn[1] = { &L->down };
    if (mm_group(R, dn, 1, A(hb), A(hb2), hp->ffn_dim, yx, ldx1, nb, true)) return -1;
    tp_vk_barrier(c);
    return 0;
}

/* Host-side inputs of one chunk into the staging buffer. */
static void write_inputs(tp_gpu_seq *s, const tp_kv *kv, const tp_batch *b, int n0, int c0, int nb) {
    const tp_model *m = s->m;
    const tp_hparams *hp = &m->hp;
    char *in = s->in.map;
    float *x = (float *)(void *)(in + s->o.in_x);
    for (int i = 0; i < nb; i++) tp_weight_row(&m->tok_embd, b->tokens[c0 + i], x + (size_t)i * hp->dim);
    int half = hp->rope_dim / 2;
    float *cs = (float *)(void *)(in + s->o.in_cs);
    for (int i = 0; i < nb; i++) {
        int pos = b->pos[c0 + i];
        for (int p = 0; p < half; p++) {
            /* the CPU's rope_head: theta = (float)pos * inv_freq, cosf, sinf */
            float theta = (float)pos * m->rope_inv_freq[p];
            cs[2 * ((size_t)i * half + p)] = cosf(theta);
            cs[2 * ((size_t)i * half + p) + 1] = sinf(theta);
        }
    }
    if (b->mask) {
        uint32_t *mw = (uint32_t *)(void *)(in + s->o.in_mask);
        int n_total = n0 + b->n, n_slots = n0 + c0 + nb;
        memset(mw, 0, sizeof(uint32_t) * (size_t)nb * (size_t)s->mwords);
        for (int i = 0; i < nb; i++) {
            const uint8_t *row = b->mask + (size_t)(c0 + i) * n_total;
            for (int j = 0; j < n_slots; j++)
                if (row[j]) mw[(size_t)i * s->mwords + (j >> 5)] |= 1u << (j & 31);
        }
    }
    if (b->mix) memcpy(in + s->o.in_mix, b->mix + c0, sizeof(float) * (size_t)nb);
    (void)kv;
}

int tp_gpu_forward(tp_gpu_seq *s, tp_compute *cc, tp_kv *kv, const tp_batch *b, char *err) {
    if (check_batch(s, cc, kv, b, err)) return -1;
    double t0 = tp_now();
    const tp_model *m = s->m;
    const tp_hparams *hp = &m->hp;
    const int V = hp->n_vocab, dim = hp->dim;
    const int n0 = kv->n, n_total = n0 + b->n;
    if (b->attn) memset(b->attn, 0, sizeof(float) * (size_t)b->n * (size_t)n_total);
    if (assign_rows(s, kv, n0, b->n, err)) return -1;
    char *in = s->in.map, *out = s->out.map;

    /* Inputs shared by every chunk: the row of each slot, the alive bits. */
    uint32_t *rows = (uint32_t *)(void *)(in + s->o.in_rows);
    for (int j = 0; j < n0; j++) rows[j] = (uint32_t)kv->slots[j].row;
    for (int i = 0; i < b->n; i++) rows[n0 + i] = (uint32_t)s->free_rows[i];
    uint32_t *alive = (uint32_t *)(void *)(in + s->o.in_alive);
    memset(alive, 0, sizeof(uint32_t) * (size_t)((n0 + 31) / 32 + 1));
    for (int j = 0; j < n0; j++)
        if (kv->slots[j].alive) alive[j >> 5] |= 1u << (j & 31);
    uint32_t mode = b->mask ? 3u : (uint32_t)b->vis;

    for (int c0 = 0; c0 < b->n; c0 += s->B) {
        int nb = b->n - c0 < s->B ? b->n - c0 : s->B;
        int base = n0 + c0; /* first slot of this chunk */
        for (int i = 0; i < nb; i++) {
            int slot = tp_kv_append(kv, b->tokens[c0 + i], b->pos[c0 + i], b->step);
            kv->slots[slot].row = s->free_rows[c0 + i];
        }
        write_inputs(s, kv, b, n0, c0, nb);
        bool last_chunk = c0 + nb == b->n;
        bool want_logits = b->logits && (!b->logits_last_only || last_chunk);

        tp_vk_cmd *c = &s->cmd;
        rec R_ = { s, c, s->work.addr, err }, *R = &R_;
        tp_vk_cmd_begin(c);
        /* inputs: embeddings into x, the rest into the input area */
        tp_vk_copy(c, &s->in, s->o.in_x, &s->work, s->o.x, sizeof(float) * (size_t)nb * dim);
        tp_vk_copy(c, &s->in, 0, &s->work, s->o.total, s->o.in_rows + 4 * (size_t)(base + nb));
        tp_vk_copy(c, &s->in, s->o.in_alive, &s->work, s->o.total + s->o.in_alive, 4 * (size_t)((n0 + 31) / 32 + 1));
        if (b->mask)
            tp_vk_copy(c, &s->in, s->o.in_mask, &s->work, s->o.total + s->o.in_mask, 4 * (size_t)nb * s->mwords);
        if (b->mix) tp_vk_copy(c, &s->in, s->o.in_mix, &s->work, s->o.total + s->o.in_mix, sizeof(float) * (size_t)nb);
        if (b->layer_weights)
            tp_vk.vkCmdFillBuffer(c->cb, s->work.buf, s->o.summ, up16(sizeof(float) * (size_t)nb * n_total), 0);
        tp_vk_barrier(c);
        int rc = 0;
        for (int l = 0; l < s->n_layers && !rc; l++) rc = record_layer(R, l, b, n0, c0, nb, base, mode);

        bool dev_head = s->head && (want_logits || b->probs);
        if (!rc && dev_head) {
            /* rows of the head: the last token only, or every token of the chunk */
            int r0 = b->logits_last_only && !b->probs ? nb - 1 : 0, nr = nb - r0;
            rc = tp_vk_op_rmsnorm(c, A(x) + sizeof(float) * (size_t)r0 * dim, dim,
                                  s->w->norms.addr + sizeof(float) * (size_t)(2 * s->n_layers) * dim, A(xb), dim, dim, nr,
                                  hp->eps, err);
            tp_vk_barrier(c);
            const gweight *ow[1] = { &s->w->output };
            VkDeviceAddress yl[1] = { A(logits) };
            int ldv[1] = { V };
            if (!rc) rc = mm_group(R, ow, 1, A(xb), 0, dim, yl, ldv, nr, false);
            tp_vk_barrier(c);
            if (!rc && b->probs) {
                rc = tp_vk_op_softmax_mix(c, A(logits), A(stats), R->wa + s->o.total + s->o.in_mix, A(probs), nb, V, err);
                tp_vk_barrier(c);
                tp_vk_copy(c, &s->work, s->o.probs, &s->out, s->o.out_probs, sizeof(float) * (size_t)V);
            }
            if (want_logits) {
                int lr0 = b->logits_last_only ? nr - 1 : 0;
                tp_vk_copy(c, &s->work, s->o.logits + sizeof(float) * (size_t)lr0 * V, &s->out, s->o.out_logits,
                           sizeof(float) * (size_t)(nr - lr0) * V);
            }
        }
        if (!s->head) tp_vk_copy(c, &s->work, s->o.x, &s->out, s->o.out_x, sizeof(float) * (size_t)nb * dim);
        if (b->layer_weights)
            tp_vk_copy(c, &s->work, s->o.summ, &s->out, s->o.out_summ, sizeof(float) * (size_t)nb * n_total);
        if (rc) {
            tp_vk.vkEndCommandBuffer(c->cb);
            c->recording = false;
            return -1;
        }
        if (tp_vk_cmd_submit(c, err)) return -1;

        /* outputs */
        if (b->layer_weights)
            memcpy(b->attn + (size_t)c0 * n_total, out + s->o.out_summ, sizeof(float) * (size_t)nb * n_total);
        if (s->head) {
            if (want_logits) {
                float *dst = b->logits_last_only ? b->logits : b->logits + (size_t)c0 * V;
                memcpy(dst, out + s->o.out_logits, sizeof(float) * (size_t)(b->logits_last_only ? 1 : nb) * V);
            }
            if (b->probs) {
                const float *p = (const float *)(const void *)(out + s->o.out_probs);
                if (c0 == 0) memcpy(b->probs, p, sizeof(float) * (size_t)V);
                else for (int i = 0; i < V; i++) b->probs[i] += p[i]; /* wider sets than a chunk: add the chunks' parts */
            }
        } else {
            /* The rest of the layers, and the head, on the CPU (the same code as its forward). */
            if (tp_forward_layers((tp_model *)m, cc, kv, b, n0, c0, nb, s->n_layers,
                                  (const float *)(const void *)(out + s->o.out_x), err))
                return -1;
        }
    }
    s->last_wait = tp_now() - t0;
    return 0;
}

#endif /* TEMPO_VULKAN */
