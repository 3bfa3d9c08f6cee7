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
 */
#include "model/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "kernels/ops.h"
#include "tensor/dtype.h"

/* Multiply-adds below which attention is not worth splitting across threads. */
#define ATTN_PARALLEL_MIN_WORK (64 * 1024)

struct tp_fwd_work {
    int max_batch, max_ctx, n_threads;
    float *x, *xb, *q, *k, *v, *att, *hb, *hb2; /* [max_batch][...] */
    float *scores;   /* [n_threads][max_ctx] */
    float *kvtmp;    /* [n_threads][2 * head_dim] rows converted from f16/q8_0 */
    size_t bytes;
};

static float *work_alloc(struct tp_fwd_work *w, size_t n) {
    w->bytes += n * sizeof(float);
    return tp_alloc_aligned(n * sizeof(float));
}

void tp_model_free_work(tp_model *m) {
    struct tp_fwd_work *w = m->work;
    if (!w) return;
    float *bufs[] = { w->x, w->xb, w->q, w->k, w->v, w->att, w->hb, w->hb2, w->scores, w->kvtmp };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) tp_free_aligned(bufs[i]);
    free(w);
    m->work = NULL;
}

size_t tp_forward_work_bytes(const tp_model *m) {
    return (m->work ? m->work->bytes : 0) + (m->mm ? tp_matmul_ctx_bytes(m->mm) : 0);
}

int tp_model_finish(tp_model *m, const tp_load_opts *opts, char *err) {
    tp_hparams *hp = &m->hp;
    int half = hp->rope_dim / 2;
    m->rope_inv_freq = tp_xmalloc((size_t)half * sizeof(float));
    for (int i = 0; i < half; i++) {
        double f = pow((double)hp->rope_base, -2.0 * i / hp->rope_dim);
        if (m->rope_freq_factors) f /= m->rope_freq_factors[i];
        m->rope_inv_freq[i] = (float)f;
    }
    int n_threads = opts ? opts->n_threads : 0;
    m->pool = tp_pool_create(n_threads);
    if (!m->pool) return tp_fail(err, "cannot start %d worker threads", n_threads);

    struct tp_fwd_work *w = tp_xcalloc(1, sizeof *w);
    m->work = w;
    w->max_batch = opts && opts->max_batch > 0 ? opts->max_batch : TP_MATMUL_MAX_BATCH;
    w->max_ctx = opts && opts->max_ctx > 0 && opts->max_ctx < hp->n_ctx ? opts->max_ctx : hp->n_ctx;
    w->n_threads = tp_pool_threads(m->pool);
    int q_dim = hp->n_heads * hp->head_dim, kv_dim = hp->n_kv_heads * hp->head_dim;
    int wide = hp->dim > q_dim ? hp->dim : q_dim;
    size_t B = (size_t)w->max_batch;
    w->x = work_alloc(w, B * hp->dim);
    w->xb = work_alloc(w, B * wide);
    w->q = work_alloc(w, B * q_dim);
    w->k = work_alloc(w, B * kv_dim);
    w->v = work_alloc(w, B * kv_dim);
    w->att = work_alloc(w, B * q_dim);
    w->hb = work_alloc(w, B * hp->ffn_dim);
    w->hb2 = work_alloc(w, B * hp->ffn_dim);
    w->scores = work_alloc(w, (size_t)w->n_threads * w->max_ctx);
    w->kvtmp = work_alloc(w, (size_t)w->n_threads * 2 * hp->head_dim);
    if (!w->x || !w->xb || !w->q || !w->k || !w->v || !w->att || !w->hb || !w->hb2 || !w->scores || !w->kvtmp)
        return tp_fail(err, "cannot allocate forward buffers (%zu bytes)", w->bytes);
    int max_in = hp->ffn_dim > wide ? hp->ffn_dim : wide;
    m->mm = tp_matmul_ctx_new(m->pool, max_in);
    if (!m->mm) return tp_fail(err, "cannot allocate matmul buffers");
    return 0;
}

/* Rotate one head's first rope_dim values by the position's angles. GGUF
 * (Meta) layout rotates adjacent pairs; Hugging Face layout pairs i with i+half. */
static void rope_head(const tp_model *m, float *h, int pos) {
    int half = m->hp.rope_dim / 2;
    for (int i = 0; i < half; i++) {
        float theta = (float)pos * m->rope_inv_freq[i];
        float c = cosf(theta), s = sinf(theta);
        int a = m->hp.rope_split_half ? i : 2 * i;
        int b = m->hp.rope_split_half ? i + half : 2 * i + 1;
        float x0 = h[a], x1 = h[b];
        h[a] = x0 * c - x1 * s;
        h[b] = x0 * s + x1 * c;
    }
}

/* ---- attention ---- */

typedef struct {
    tp_model *m;
    tp_kv *kv;
    const tp_batch *b;
    int layer;
    int n0;       /* slots before this tp_forward call */
    int c0, nb;   /* chunk: batch tokens c0 .. c0+nb-1 */
    int n_total;  /* n0 + b->n: row length of mask/attn */
    float lw;     /* this layer's weight in the attention summary (0: no summary) */
} attn_job;

static bool visible(const attn_job *J, int i /* batch index */, int j /* slot */) {
    const tp_batch *b = J->b;
    if (b->mask) return b->mask[(size_t)i * J->n_total + j] != 0;
    if (j < J->n0) return J->kv->slots[j].alive;
    int jb = j - J->n0;
    switch (b->vis) {
    case TP_VIS_CAUSAL: return jb <= i;
    case TP_VIS_ISOLATED: return jb == i;
    case TP_VIS_SET: return true;
    }
    return false;
}

/* One query head of one batch token over the slots [0, n_slots). */
static void attend(const attn_job *J, int bi, int h, float *scores, float *tmp) {
    tp_model *m = J->m;
    const tp_hparams *hp = &m->hp;
    tp_kv *kv = J->kv;
    struct tp_fwd_work *w = m->work;
    int hd = hp->head_dim, kvh = h / (hp->n_heads / hp->n_kv_heads);
    int i = J->c0 + bi; /* index in the whole batch */
    int n_slots = J->n0 + J->c0 + J->nb;
    const float *q = w->q + (size_t)bi * hp->n_heads * hd + (size_t)h * hd;
    float *out = w->att + (size_t)bi * hp->n_heads * hd + (size_t)h * hd;
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
        if (!visible(J, i, j)) { scores[j] = -INFINITY; continue; }
        const float *kr;
        if (kv->type == TP_KV_F32) kr = (const float *)tp_kv_krow(kv, J->layer, j) + (size_t)kvh * hd;
        else { tp_kv_load(kv, tp_kv_krow(kv, J->layer, j), kvh * hd, hd, tmp); kr = tmp; }
        float s = tp_dot_f32(qq, kr, hd) * scale;
        scores[j] = s;
        if (s > maxs) maxs = s;
    }
    /* softmax over the visible slots (every query sees at least itself) */
    double sum = 0;
    for (int j = 0; j < n_slots; j++) {
        float e = scores[j] == -INFINITY ? 0.0f : expf(scores[j] - maxs);
        scores[j] = e;
        sum += e;
    }
    float inv = (float)(1.0 / sum);
    memset(out, 0, (size_t)hd * sizeof(float));
    for (int j = 0; j < n_slots; j++) {
        if (scores[j] == 0.0f) continue;
        float p = scores[j] * inv;
        scores[j] = p;
        if (kv->type == TP_KV_F16) p = tp_f16_to_f32(tp_f32_to_f16(p)); /* as ggml: f16 probabilities times f16 V */
        const float *vr;
        if (kv->type == TP_KV_F32) vr = (const float *)tp_kv_vrow(kv, J->layer, j) + (size_t)kvh * hd;
        else { tp_kv_load(kv, tp_kv_vrow(kv, J->layer, j), kvh * hd, hd, tmp + hd); vr = tmp + hd; }
        tp_axpy_f32(out, p, vr, hd);
    }
    if (J->lw != 0.0f) {
        float *a = J->b->attn + (size_t)i * J->n_total;
        float f = J->lw / (float)hp->n_heads;
        for (int j = 0; j < n_slots; j++) a[j] += f * scores[j];
    }
}

static void attn_task(void *ctx, int ith, int nth) {
    const attn_job *J = ctx;
    struct tp_fwd_work *w = J->m->work;
    float *scores = w->scores + (size_t)ith * w->max_ctx;
    float *tmp = w->kvtmp + (size_t)ith * 2 * J->m->hp.head_dim;
    int H = J->m->hp.n_heads;
    if (J->lw != 0.0f) {
        /* The summary row of a token is shared by its heads: give each thread whole tokens. */
        for (int bi = ith; bi < J->nb; bi += nth)
            for (int h = 0; h < H; h++) attend(J, bi, h, scores, tmp);
    } else {
        for (int t = ith; t < J->nb * H; t += nth) attend(J, t / H, t % H, scores, tmp);
    }
}

/* ---- the pass ---- */

static int check_batch(const tp_model *m, const tp_kv *kv, const tp_batch *b, char *err) {
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
    if (total > m->work->max_ctx)
        return tp_fail(err, "context full: %d slots > %d", total, m->work->max_ctx);
    int B = m->work->max_batch;
    if (b->n > B && (b->vis == TP_VIS_SET || b->mask)) {
        /* A later chunk's token must not be visible to an earlier chunk's. */
        if (!b->mask) return tp_fail(err, "a set-visible batch of %d tokens exceeds the batch size %d", b->n, B);
        for (int i = 0; i < b->n; i++)
            for (int j = (i / B + 1) * B; j < b->n; j++)
                if (b->mask[(size_t)i * total + kv->n + j])
                    return tp_fail(err, "masked batch of %d tokens: token %d sees token %d of a later chunk", b->n, i, j);
    }
    if (b->layer_weights && !b->attn) return tp_fail(err, "attention summary requested without a buffer");
    return 0;
}

int tp_forward(tp_model *m, tp_kv *kv, const tp_batch *b, char *err) {
    if (check_batch(m, kv, b, err)) return -1;
    const tp_hparams *hp = &m->hp;
    struct tp_fwd_work *w = m->work;
    int dim = hp->dim, hd = hp->head_dim;
    int q_dim = hp->n_heads * hd, kv_dim = hp->n_kv_heads * hd;
    int n0 = kv->n, n_total = n0 + b->n;
    if (b->attn) memset(b->attn, 0, (size_t)b->n * n_total * sizeof(float));

    for (int c0 = 0; c0 < b->n; c0 += w->max_batch) {
        int nb = b->n - c0 < w->max_batch ? b->n - c0 : w->max_batch;
        int base = kv->n; /* first slot of this chunk */
        for (int i = 0; i < nb; i++) {
            tp_weight_row(&m->tok_embd, b->tokens[c0 + i], w->x + (size_t)i * dim);
            tp_kv_append(kv, b->tokens[c0 + i], b->pos[c0 + i], b->step);
        }
        for (int l = 0; l < hp->n_layers; l++) {
            const tp_layer *L = &m->layers[l];
            for (int i = 0; i < nb; i++)
                tp_rmsnorm(w->xb + (size_t)i * dim, w->x + (size_t)i * dim, L->attn_norm, dim, hp->eps);
            tp_matmul(m->mm, w->q, w->xb, nb, &L->wq);
            tp_matmul(m->mm, w->k, w->xb, nb, &L->wk);
            tp_matmul(m->mm, w->v, w->xb, nb, &L->wv);
            for (int i = 0; i < nb; i++) {
                int pos = b->pos[c0 + i];
                for (int h = 0; h < hp->n_heads; h++) rope_head(m, w->q + (size_t)i * q_dim + (size_t)h * hd, pos);
                for (int h = 0; h < hp->n_kv_heads; h++) rope_head(m, w->k + (size_t)i * kv_dim + (size_t)h * hd, pos);
                tp_kv_store(kv, l, base + i, w->k + (size_t)i * kv_dim, w->v + (size_t)i * kv_dim);
            }
            attn_job J = { m, kv, b, l, n0, c0, nb, n_total, b->layer_weights ? b->layer_weights[l] : 0.0f };
            /* Waking workers costs microseconds: small attention runs on this thread. */
            if ((size_t)nb * hp->n_heads * (base + nb) * hd < ATTN_PARALLEL_MIN_WORK) attn_task(&J, 0, 1);
            else tp_pool_run(m->pool, attn_task, &J);
            tp_matmul(m->mm, w->xb, w->att, nb, &L->wo);
            for (size_t i = 0; i < (size_t)nb * dim; i++) w->x[i] += w->xb[i];

            for (int i = 0; i < nb; i++)
                tp_rmsnorm(w->xb + (size_t)i * dim, w->x + (size_t)i * dim, L->ffn_norm, dim, hp->eps);
            tp_matmul(m->mm, w->hb, w->xb, nb, &L->w_gate);
            tp_matmul(m->mm, w->hb2, w->xb, nb, &L->w_up);
            tp_swiglu(w->hb, w->hb2, nb * hp->ffn_dim);
            tp_matmul(m->mm, w->xb, w->hb, nb, &L->w_down);
            for (size_t i = 0; i < (size_t)nb * dim; i++) w->x[i] += w->xb[i];
        }
        if (!b->logits) continue;
        if (b->logits_last_only) {
            if (c0 + nb < b->n) continue;
            tp_rmsnorm(w->xb, w->x + (size_t)(nb - 1) * dim, m->out_norm, dim, hp->eps);
            tp_matmul(m->mm, b->logits, w->xb, 1, &m->output);
        } else {
            for (int i = 0; i < nb; i++)
                tp_rmsnorm(w->xb + (size_t)i * dim, w->x + (size_t)i * dim, m->out_norm, dim, hp->eps);
            tp_matmul(m->mm, b->logits + (size_t)c0 * hp->n_vocab, w->xb, nb, &m->output);
        }
    }
    return 0;
}
