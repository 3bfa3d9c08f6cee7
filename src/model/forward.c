/* forward.c: the Llama forward pass over a batch of tokens.
 *
 * One call feeds n tokens. Each token has its own logical position (RoPE) and
 * may attend to the cached slots its visibility rule allows; its own K/V are
 * appended to the cache as a new slot. The layer loop is the textbook one
 * (llama2.c reads the same), but every matrix product takes the whole batch so
 * each weight row is streamed from memory once per batch:
 *
 *   x = embed(tokens)
 *   for each layer:
 *       xb = rmsnorm(x);  q,k,v = xb·Wq, xb·Wk, xb·Wv;  rope(q, k) at each token's position
 *       store k, v in the token's slot;  o = attention(q over visible slots);  x += o·Wo
 *       xb = rmsnorm(x);  h = silu(xb·Wgate) * (xb·Wup);  x += h·Wdown
 *   logits = rmsnorm(x)·Wout
 *
 * Batches longer than the work buffers are processed in chunks; a chunk's
 * tokens are in the cache before the next chunk runs, so causal and isolated
 * visibility are unaffected by chunking.
 *
 * tp_forward_multi runs the tokens of several sequences (sessions) in one pass:
 * the rows of a chunk may belong to different KV caches; the matrix products
 * see only rows, attention and the KV writes look up each row's sequence. This
 * is how a server batches its clients' steps (continuous batching).
 *
 * The model is read-only here; everything written lives in the tp_compute
 * context and the sequences' caches.
 */
#include "model/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/common.h"
#include "kernels/ops.h"
#include "tensor/dtype.h"

/* Multiply-adds below which attention is not worth splitting across threads. */
#define ATTN_PARALLEL_MIN_WORK (64 * 1024)

struct tp_compute {
    tp_pool *pool;
    tp_matmul_ctx *mm;
    int max_batch, max_ctx, n_threads;
    float *x, *xb, *q, *k, *v, *att, *hb, *hb2; /* [max_batch][...] */
    float *scores;   /* [n_threads][max_ctx] */
    float *kvtmp;    /* [n_threads][2 * head_dim] rows converted from f16/q8_0 */
    float *rope;     /* [max_batch][rope_dim]: each row's cos, sin of its position's angles */
    float *logits;   /* [max_batch][n_vocab] for batches of several sequences (tp_compute_enable_multi) */
    int n_vocab;
    size_t bytes;
};

static float *work_alloc(tp_compute *c, size_t n) {
    c->bytes += n * sizeof(float);
    return tp_alloc_aligned(n * sizeof(float));
}

static int resolve_threads(int n_threads) {
    if (n_threads > 0) return n_threads;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* The buffer sizes, in floats, in one place for tp_compute_new and the estimate. */
typedef struct { size_t x, xb, q, kv, att, hb, scores, kvtmp, rope; } work_sizes;

static work_sizes sizes_of(const tp_model *m, int n_threads, int max_batch, int max_ctx) {
    const tp_hparams *hp = &m->hp;
    size_t B = (size_t)max_batch, q_dim = (size_t)hp->n_heads * hp->head_dim, kv_dim = (size_t)hp->n_kv_heads * hp->head_dim;
    size_t wide = (size_t)hp->dim > q_dim ? (size_t)hp->dim : q_dim;
    work_sizes z = { B * hp->dim, B * wide, B * q_dim, B * kv_dim, B * q_dim, B * hp->ffn_dim,
                     (size_t)n_threads * max_ctx, (size_t)n_threads * 2 * hp->head_dim,
                     B * (size_t)(hp->rope_dim > 0 ? hp->rope_dim : 1) };
    return z;
}

static int clamp_batch(int max_batch) {
    return max_batch > 0 && max_batch <= TP_MATMUL_MAX_BATCH ? max_batch : TP_MATMUL_MAX_BATCH;
}

size_t tp_compute_estimate_bytes(const tp_model *m, int n_threads, int max_batch, int max_ctx) {
    n_threads = resolve_threads(n_threads);
    work_sizes z = sizes_of(m, n_threads, clamp_batch(max_batch), max_ctx);
    size_t floats = z.x + z.xb + z.q + 2 * z.kv + z.att + 2 * z.hb + z.scores + z.kvtmp + z.rope;
    int max_in = m->hp.ffn_dim > m->hp.dim ? m->hp.ffn_dim : m->hp.dim;
    if (m->hp.n_heads * m->hp.head_dim > max_in) max_in = m->hp.n_heads * m->hp.head_dim;
    return floats * sizeof(float) + tp_matmul_ctx_estimate_bytes(n_threads, max_in);
}

void tp_compute_free(tp_compute *c) {
    if (!c) return;
    float *bufs[] = { c->x, c->xb, c->q, c->k, c->v, c->att, c->hb, c->hb2, c->scores, c->kvtmp, c->rope, c->logits };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) tp_free_aligned(bufs[i]);
    if (c->mm) tp_matmul_ctx_free(c->mm);
    if (c->pool) tp_pool_free(c->pool);
    free(c);
}

tp_compute *tp_compute_new(const tp_model *m, int n_threads, int max_batch, int max_ctx, char *err) {
    const tp_hparams *hp = &m->hp;
    if (max_ctx <= 0 || max_ctx > hp->n_ctx) max_ctx = hp->n_ctx;
    tp_compute *c = calloc(1, sizeof *c);
    if (!c) { tp_fail(err, "out of memory allocating the compute context"); return NULL; }
    c->max_batch = clamp_batch(max_batch);
    c->max_ctx = max_ctx;
    c->n_vocab = hp->n_vocab;
    c->pool = tp_pool_create(resolve_threads(n_threads));
    if (!c->pool) {
        tp_fail(err, "cannot start %d worker threads", resolve_threads(n_threads));
        tp_compute_free(c);
        return NULL;
    }
    c->n_threads = tp_pool_threads(c->pool);
    work_sizes z = sizes_of(m, c->n_threads, c->max_batch, c->max_ctx);
    c->x = work_alloc(c, z.x);
    c->xb = work_alloc(c, z.xb);
    c->q = work_alloc(c, z.q);
    c->k = work_alloc(c, z.kv);
    c->v = work_alloc(c, z.kv);
    c->att = work_alloc(c, z.att);
    c->hb = work_alloc(c, z.hb);
    c->hb2 = work_alloc(c, z.hb);
    c->scores = work_alloc(c, z.scores);
    c->kvtmp = work_alloc(c, z.kvtmp);
    c->rope = work_alloc(c, z.rope);
    int max_in = hp->ffn_dim > hp->dim ? hp->ffn_dim : hp->dim;
    if (hp->n_heads * hp->head_dim > max_in) max_in = hp->n_heads * hp->head_dim;
    if (c->x && c->xb && c->q && c->k && c->v && c->att && c->hb && c->hb2 && c->scores && c->kvtmp && c->rope)
        c->mm = tp_matmul_ctx_new(c->pool, max_in);
    if (!c->mm) {
        char g[32];
        tp_fail(err, "out of memory allocating the forward buffers (%s for %d tokens over %d cache slots)",
                tp_fmt_gb((double)c->bytes, g, sizeof g), c->max_batch, c->max_ctx);
        tp_compute_free(c);
        return NULL;
    }
    c->bytes += tp_matmul_ctx_bytes(c->mm);
    return c;
}

size_t tp_compute_multi_bytes(const tp_model *m, int max_batch) {
    return (size_t)clamp_batch(max_batch) * (size_t)m->hp.n_vocab * sizeof(float);
}

int tp_compute_enable_multi(tp_compute *c, char *err) {
    if (c->logits) return 0;
    c->logits = tp_alloc_aligned((size_t)c->max_batch * (size_t)c->n_vocab * sizeof(float));
    if (!c->logits) return tp_fail(err, "out of memory allocating the batch logits buffer");
    c->bytes += (size_t)c->max_batch * (size_t)c->n_vocab * sizeof(float);
    return 0;
}

int tp_compute_threads(const tp_compute *c) { return c->n_threads; }
tp_pool *tp_compute_pool(tp_compute *c) { return c->pool; }
int tp_compute_max_ctx(const tp_compute *c) { return c->max_ctx; }
size_t tp_compute_bytes(const tp_compute *c) { return c ? c->bytes : 0; }

int tp_model_finish(tp_model *m, const tp_load_opts *opts, char *err) {
    (void)opts;
    tp_hparams *hp = &m->hp;
    int half = hp->rope_dim / 2;
    size_t bytes = (size_t)(half > 0 ? half : 1) * sizeof(float);
    m->rope_inv_freq = malloc(bytes);
    if (!m->rope_inv_freq) return tp_fail(err, "out of memory (%zu bytes for the RoPE table)", bytes);
    for (int i = 0; i < half; i++) {
        double f = pow((double)hp->rope_base, -2.0 * i / hp->rope_dim);
        if (m->rope_freq_factors) f /= m->rope_freq_factors[i];
        m->rope_inv_freq[i] = (float)f;
    }
    return 0;
}

/* The cosines and sines of a position's angles, theta_i = pos * inv_freq_i: cs[i], cs[half + i].
 * Computed once per row of a forward; every head of every layer rotates by the same angles. */
static void rope_angles(const tp_model *m, float *cs, int pos) {
    int half = m->hp.rope_dim / 2;
    for (int i = 0; i < half; i++) {
        float theta = (float)pos * m->rope_inv_freq[i];
        cs[i] = cosf(theta);
        cs[half + i] = sinf(theta);
    }
}

/* Rotate one head's first rope_dim values by the angles of rope_angles. GGUF
 * (Meta) layout rotates adjacent pairs; Hugging Face layout pairs i with i+half. */
static void rope_head(const tp_model *m, float *h, const float *cs) {
    int half = m->hp.rope_dim / 2;
    for (int i = 0; i < half; i++) {
        float c = cs[i], s = cs[half + i];
        int a = m->hp.rope_split_half ? i : 2 * i;
        int b = m->hp.rope_split_half ? i + half : 2 * i + 1;
        float x0 = h[a], x1 = h[b];
        h[a] = x0 * c - x1 * s;
        h[b] = x0 * s + x1 * c;
    }
}

/* ---- attention ---- */

/* One sequence's part of the current chunk. */
typedef struct {
    tp_kv *kv;
    const tp_batch *b;
    int n0;       /* kv->n before this tp_forward call */
    int n_total;  /* n0 + b->n: row length of mask and attn */
    int first;    /* index in b of the chunk's first token of this sequence */
    int count;    /* tokens of this sequence in the chunk */
    int base;     /* slot of the chunk's first token of this sequence */
    int row0;     /* chunk row of that token */
} seq_part;

typedef struct {
    tp_model *m;
    tp_compute *c;
    const seq_part *parts;
    const int *part_of;  /* [chunk rows] -> index in parts */
    int nb;              /* rows in the chunk */
    int layer;
    bool summary;        /* some sequence wants the attention summary */
} attn_job;

static bool visible(const seq_part *P, int i /* batch index */, int j /* slot */) {
    const tp_batch *b = P->b;
    if (b->mask) return b->mask[(size_t)i * P->n_total + j] != 0;
    if (j < P->n0) return P->kv->slots[j].alive;
    int jb = j - P->n0;
    switch (b->vis) {
    case TP_VIS_CAUSAL: return jb <= i;
    case TP_VIS_ISOLATED: return jb == i;
    case TP_VIS_SET: return true;
    }
    return false;
}

/* One query head of chunk row r over its sequence's slots appended so far. */
static void attend(const attn_job *J, int r, int h, float *scores, float *tmp) {
    const tp_hparams *hp = &J->m->hp;
    const seq_part *P = &J->parts[J->part_of[r]];
    tp_kv *kv = P->kv;
    tp_compute *c = J->c;
    int hd = hp->head_dim, kvh = h / (hp->n_heads / hp->n_kv_heads);
    int i = P->first + (r - P->row0);          /* index in the sequence's batch */
    int n_slots = P->base + P->count;          /* the sequence's slots so far */
    const float *q = c->q + (size_t)r * hp->n_heads * hd + (size_t)h * hd;
    float *out = c->att + (size_t)r * hp->n_heads * hd + (size_t)h * hd;
    float scale = 1.0f / sqrtf((float)hd);
    /* With a 16-bit cache, ggml rounds the query to f16 too before the dot
     * product; doing the same keeps our logits within 1e-4 of llama.cpp's. */
    float qh[hd];
    const float *qq = q;
    if (kv->type == TP_KV_F16) {
        for (int d = 0; d < hd; d++) qh[d] = tp_f16_to_f32(tp_f32_to_f16(q[d]));
        qq = qh;
    }
    float maxs = -INFINITY;
    for (int j = 0; j < n_slots; j++) {
        if (!visible(P, i, j)) { scores[j] = -INFINITY; continue; }
        const float *kr;
        if (kv->type == TP_KV_F32) kr = (const float *)tp_kv_krow(kv, J->layer, j) + (size_t)kvh * hd;
        else { tp_kv_load(kv, tp_kv_krow(kv, J->layer, j), kvh * hd, hd, tmp); kr = tmp; }
        float s = tp_dot_f32(qq, kr, hd) * scale;
        scores[j] = s;
        if (s > maxs) maxs = s;
    }
    /* softmax over the visible slots (every query sees at least itself; -inf gives 0) */
    tp_expf_sub(scores, scores, maxs, n_slots);
    double sum = 0;
    for (int j = 0; j < n_slots; j++) sum += scores[j];
    float inv = (float)(1.0 / sum);
    for (int j = 0; j < n_slots; j++) scores[j] *= inv;
    if (kv->type == TP_KV_F32) {
        /* the rows' weighted sum with the output in registers (tp_axpy_f32 per row, bit for bit) */
        const float *v0 = (const float *)tp_kv_vrow(kv, J->layer, 0) + (size_t)kvh * hd;
        tp_wsum_rows_f32(out, scores, v0, tp_kv_row_bytes(kv) / sizeof(float), n_slots, hd);
    } else {
        memset(out, 0, (size_t)hd * sizeof(float));
        for (int j = 0; j < n_slots; j++) {
            if (scores[j] == 0.0f) continue;
            float p = scores[j];
            if (kv->type == TP_KV_F16) p = tp_f16_to_f32(tp_f32_to_f16(p)); /* as ggml: f16 probabilities times f16 V */
            tp_kv_load(kv, tp_kv_vrow(kv, J->layer, j), kvh * hd, hd, tmp + hd);
            tp_axpy_f32(out, p, tmp + hd, hd);
        }
    }
    const tp_batch *b = P->b;
    float lw = b->layer_weights ? b->layer_weights[J->layer] : 0.0f;
    if (lw != 0.0f) {
        float *a = b->attn + (size_t)i * P->n_total;
        float f = lw / (float)hp->n_heads;
        for (int j = 0; j < n_slots; j++) a[j] += f * scores[j];
    }
}

/* SwiGLU of the chunk's FFN activations, split across the pool: element-wise, so the split
 * changes no bit, and its expf per element is worth the wake-up from one token up. */
typedef struct {
    float *a;
    const float *b;
    size_t n;
} swiglu_job;

static void swiglu_task(void *ctx, int ith, int nth) {
    const swiglu_job *J = ctx;
    size_t per = (J->n + (size_t)nth - 1) / (size_t)nth, i0 = per * (size_t)ith;
    size_t i1 = i0 + per < J->n ? i0 + per : J->n;
    if (i0 < i1) tp_swiglu(J->a + i0, J->b + i0, (int)(i1 - i0));
}

static void attn_task(void *ctx, int ith, int nth) {
    const attn_job *J = ctx;
    tp_compute *c = J->c;
    float *scores = c->scores + (size_t)ith * c->max_ctx;
    float *tmp = c->kvtmp + (size_t)ith * 2 * J->m->hp.head_dim;
    int H = J->m->hp.n_heads;
    if (J->summary) {
        /* The summary row of a token is shared by its heads: give each thread whole tokens. */
        for (int r = ith; r < J->nb; r += nth)
            for (int h = 0; h < H; h++) attend(J, r, h, scores, tmp);
    } else {
        for (int t = ith; t < J->nb * H; t += nth) attend(J, t / H, t % H, scores, tmp);
    }
}

/* ---- the pass ---- */

static bool whole(const tp_batch *b) { return b->vis == TP_VIS_SET || b->mask; }

static int check_seq(const tp_model *m, const tp_compute *c, const tp_kv *kv, const tp_batch *b, int n_seqs,
                     char *err) {
    if (b->n <= 0) return tp_fail(err, "empty batch");
    for (int i = 0; i < b->n; i++) {
        if (b->tokens[i] < 0 || b->tokens[i] >= m->hp.n_vocab)
            return tp_fail(err, "token id %d is outside the vocabulary (0..%d)", b->tokens[i], m->hp.n_vocab - 1);
        if (b->pos[i] < 0 || b->pos[i] >= m->hp.n_ctx)
            return tp_fail(err, "position %d is outside the model's context (%d)", b->pos[i], m->hp.n_ctx);
    }
    int total = kv->n + b->n;
    if (total > kv->capacity)
        return tp_fail(err, "Cache token limit exceeded: %d > %d", total, kv->capacity);
    if (total > c->max_ctx)
        return tp_fail(err, "context full: %d slots > %d", total, c->max_ctx);
    if (kv->kv_dim != m->hp.n_kv_heads * m->hp.head_dim || kv->n_layers != m->hp.n_layers)
        return tp_fail(err, "internal: KV cache shape does not match the model");
    int B = c->max_batch;
    if (b->n > B && whole(b)) {
        if (n_seqs > 1 || !b->mask)
            return tp_fail(err, "a %s batch of %d tokens exceeds the batch size %d", b->mask ? "masked" : "set-visible",
                           b->n, B);
        /* A later chunk's token must not be visible to an earlier chunk's. */
        for (int i = 0; i < b->n; i++)
            for (int j = (i / B + 1) * B; j < b->n; j++)
                if (b->mask[(size_t)i * total + kv->n + j])
                    return tp_fail(err, "masked batch of %d tokens: token %d sees token %d of a later chunk", b->n, i, j);
    }
    if (b->layer_weights && !b->attn) return tp_fail(err, "attention summary requested without a buffer");
    return 0;
}

/* Layers [l0, n_layers) over the chunk's rows (c->x holds their embeddings, or the hidden states
 * after layer l0 - 1 when a GPU ran the first layers: tp_forward_layers). */
static void run_layers(tp_model *m, tp_compute *c, const seq_part *parts, int n_parts, const int *part_of,
                       const int32_t *pos, int nb, bool summary, int l0) {
    const tp_hparams *hp = &m->hp;
    int dim = hp->dim, hd = hp->head_dim;
    int q_dim = hp->n_heads * hd, kv_dim = hp->n_kv_heads * hd;
    size_t attn_work = 0;
    for (int p = 0; p < n_parts; p++) attn_work += (size_t)parts[p].count * (parts[p].base + parts[p].count);
    attn_work *= (size_t)hp->n_heads * hd;
    for (int i = 0; i < nb; i++) rope_angles(m, c->rope + (size_t)i * hp->rope_dim, pos[i]);
    for (int l = l0; l < hp->n_layers; l++) {
        const tp_layer *L = &m->layers[l];
        for (int i = 0; i < nb; i++)
            tp_rmsnorm(c->xb + (size_t)i * dim, c->x + (size_t)i * dim, L->attn_norm, dim, hp->eps);
        /* q, k and v read the same input: quantized once, one pool run (tp_matmul_group) */
        float *const qkv_y[3] = { c->q, c->k, c->v };
        const tp_weight *const qkv_w[3] = { &L->wq, &L->wk, &L->wv };
        tp_matmul_group(c->mm, qkv_y, c->xb, nb, qkv_w, 3);
        for (int i = 0; i < nb; i++) {
            const float *cs = c->rope + (size_t)i * hp->rope_dim;
            for (int h = 0; h < hp->n_heads; h++) rope_head(m, c->q + (size_t)i * q_dim + (size_t)h * hd, cs);
            for (int h = 0; h < hp->n_kv_heads; h++) rope_head(m, c->k + (size_t)i * kv_dim + (size_t)h * hd, cs);
            const seq_part *P = &parts[part_of[i]];
            tp_kv_store(P->kv, l, P->base + (i - P->row0), c->k + (size_t)i * kv_dim, c->v + (size_t)i * kv_dim);
        }
        attn_job J = { m, c, parts, part_of, nb, l, summary };
        /* Waking workers costs microseconds: small attention runs on this thread. */
        if (attn_work < ATTN_PARALLEL_MIN_WORK) attn_task(&J, 0, 1);
        else tp_pool_run(c->pool, attn_task, &J);
        /* --kv-offload: this layer's old rows may leave memory until the next pass reads them */
        for (int p = 0; p < n_parts; p++) tp_kv_layer_read(parts[p].kv, l);
        tp_matmul(c->mm, c->xb, c->att, nb, &L->wo);
        for (size_t i = 0; i < (size_t)nb * dim; i++) c->x[i] += c->xb[i];

        for (int i = 0; i < nb; i++)
            tp_rmsnorm(c->xb + (size_t)i * dim, c->x + (size_t)i * dim, L->ffn_norm, dim, hp->eps);
        float *const gu_y[2] = { c->hb, c->hb2 };
        const tp_weight *const gu_w[2] = { &L->w_gate, &L->w_up };
        tp_matmul_group(c->mm, gu_y, c->xb, nb, gu_w, 2);
        swiglu_job sw = { c->hb, c->hb2, (size_t)nb * (size_t)hp->ffn_dim };
        tp_pool_run(c->pool, swiglu_task, &sw);
        tp_matmul(c->mm, c->xb, c->hb, nb, &L->w_down);
        for (size_t i = 0; i < (size_t)nb * dim; i++) c->x[i] += c->xb[i];
    }
}

/* Logits of the chunk's rows that want them: normalised rows gathered in c->xb, one product with
 * the output matrix, rows copied to each sequence's buffer (or written in place for one part). */
static void run_logits(tp_model *m, tp_compute *c, const seq_part *parts, int n_parts) {
    const tp_hparams *hp = &m->hp;
    int dim = hp->dim;
    size_t V = (size_t)hp->n_vocab;
    int rows = 0, wanted = 0;
    for (int p = 0; p < n_parts; p++) {
        const seq_part *P = &parts[p];
        const tp_batch *b = P->b;
        if (!b->logits) continue;
        wanted++;
        for (int t = 0; t < P->count; t++) {
            int i = P->first + t;
            if (b->logits_last_only && i != b->n - 1) continue;
            tp_rmsnorm(c->xb + (size_t)rows * dim, c->x + (size_t)(P->row0 + t) * dim, m->out_norm, dim, hp->eps);
            rows++;
        }
    }
    if (!rows) return;
    if (wanted == 1 || !c->logits) {
        /* One sequence (or no batch buffer): write straight into its buffer, one product per part. */
        int r0 = 0;
        for (int p = 0; p < n_parts; p++) {
            const seq_part *P = &parts[p];
            const tp_batch *b = P->b;
            if (!b->logits) continue;
            int n = 0, first = P->first;
            if (b->logits_last_only) { if (P->first + P->count == b->n) n = 1; first = 0; }
            else n = P->count;
            if (!n) continue;
            tp_matmul(c->mm, b->logits + (size_t)first * V, c->xb + (size_t)r0 * dim, n, &m->output);
            r0 += n;
        }
        return;
    }
    tp_matmul(c->mm, c->logits, c->xb, rows, &m->output);
    int r = 0;
    for (int p = 0; p < n_parts; p++) {
        const seq_part *P = &parts[p];
        const tp_batch *b = P->b;
        if (!b->logits) continue;
        for (int t = 0; t < P->count; t++) {
            int i = P->first + t;
            if (b->logits_last_only && i != b->n - 1) continue;
            float *dst = b->logits + (b->logits_last_only ? 0 : (size_t)i * V);
            memcpy(dst, c->logits + (size_t)r * V, V * sizeof(float));
            r++;
        }
    }
}

int tp_forward_multi(tp_model *m, tp_compute *c, const tp_fwd_seq *seqs, int n, char *err) {
    if (n <= 0) return tp_fail(err, "empty batch");
    for (int s = 0; s < n; s++) {
        if (check_seq(m, c, seqs[s].kv, seqs[s].b, n, err)) return -1;
        for (int t = 0; t < s; t++)
            if (seqs[t].kv == seqs[s].kv) return tp_fail(err, "internal: two sequences share one KV cache");
    }
    /* --kv-offload: disk blocks for the new rows before any is written (a full disk fails here) */
    for (int s = 0; s < n; s++)
        if (tp_kv_prepare(seqs[s].kv, seqs[s].b->n, err)) return -1;
    const int B = c->max_batch, dim = m->hp.dim;
    /* Per-call bookkeeping on the stack: at most B rows and B parts per chunk. */
    seq_part parts[TP_MATMUL_MAX_BATCH];
    int part_of[TP_MATMUL_MAX_BATCH];
    int32_t pos[TP_MATMUL_MAX_BATCH];
    int n0[n > 0 ? n : 1];
    for (int s = 0; s < n; s++) {
        n0[s] = seqs[s].kv->n;
        const tp_batch *b = seqs[s].b;
        if (b->attn) memset(b->attn, 0, (size_t)b->n * (n0[s] + b->n) * sizeof(float));
    }
    int s = 0, done_in_s = 0; /* next token: sequence s, index done_in_s */
    while (s < n) {
        /* Fill one chunk. */
        int nb = 0, n_parts = 0;
        bool summary = false;
        while (s < n && nb < B) {
            const tp_batch *b = seqs[s].b;
            int left = b->n - done_in_s, room = B - nb;
            if (whole(b) && left <= B && left > room && nb > 0) break; /* keep it in one chunk */
            int take = left < room ? left : room;
            seq_part *P = &parts[n_parts++];
            tp_kv *kv = seqs[s].kv;
            *P = (seq_part){ kv, b, n0[s], n0[s] + b->n, done_in_s, take, kv->n, nb };
            summary |= b->layer_weights != NULL;
            for (int t = 0; t < take; t++) {
                int i = done_in_s + t;
                tp_weight_row(&m->tok_embd, b->tokens[i], c->x + (size_t)(nb + t) * dim);
                tp_kv_append(kv, b->tokens[i], b->pos[i], b->step);
                part_of[nb + t] = n_parts - 1;
                pos[nb + t] = b->pos[i];
            }
            nb += take;
            done_in_s += take;
            if (done_in_s == b->n) { s++; done_in_s = 0; }
        }
        run_layers(m, c, parts, n_parts, part_of, pos, nb, summary, 0);
        run_logits(m, c, parts, n_parts);
    }
    return 0;
}

int tp_forward(tp_model *m, tp_compute *c, tp_kv *kv, const tp_batch *b, char *err) {
    tp_fwd_seq seq = { kv, b };
    return tp_forward_multi(m, c, &seq, 1, err);
}

int tp_forward_layers(tp_model *m, tp_compute *c, tp_kv *kv, const tp_batch *b, int n0, int c0, int nb, int l0,
                      const float *x, char *err) {
    if (nb < 1 || nb > c->max_batch || c0 < 0 || c0 + nb > b->n || l0 < 0 || l0 > m->hp.n_layers ||
        kv->n != n0 + c0 + nb || n0 + b->n > c->max_ctx)
        return tp_fail(err, "internal: tp_forward_layers(c0 %d, nb %d, l0 %d) outside the batch of %d (max %d, %d slots)",
                       c0, nb, l0, b->n, c->max_batch, c->max_ctx);
    seq_part part = { kv, b, n0, n0 + b->n, c0, nb, n0 + c0, 0 };
    int part_of[TP_MATMUL_MAX_BATCH];
    int32_t pos[TP_MATMUL_MAX_BATCH];
    for (int i = 0; i < nb; i++) {
        part_of[i] = 0;
        pos[i] = b->pos[c0 + i];
    }
    memcpy(c->x, x, sizeof(float) * (size_t)nb * (size_t)m->hp.dim);
    run_layers(m, c, &part, 1, part_of, pos, nb, b->layer_weights != NULL, l0);
    run_logits(m, c, &part, 1);
    return 0;
}
