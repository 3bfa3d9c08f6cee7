/* vk_ops.c: recording one kernel each (push constants + dispatch), and the
 * one-kernel checks the tests compare with the CPU kernels (gpu.h).
 *
 * The push-constant structs mirror the shaders' push_constant blocks: 64-bit
 * addresses first, then 32-bit fields, so C and std430 agree on every offset.
 */
#ifdef TEMPO_VULKAN

#include "gpu/vk_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "tensor/dtype.h"

#define WG_MM 64    /* matmul of quantized weights: threads per workgroup */
#define WG_MM_F 128 /* matmul of float weights */
#define WG_ROW 256  /* one workgroup per row: rmsnorm (a few loads per thread, not a chain of 32) */
#define WG_WIDE 256 /* one workgroup per long row: softmax over the vocabulary */
#define WG_ELEM 64  /* one invocation per element */
#define WG_ATTN 64

typedef uint64_t u64;
typedef uint32_t u32;

int tp_vk_act_kind(uint32_t type) {
    switch (type) {
    case TP_Q8_0: case TP_Q4_0: return 1;
    case TP_Q4_K: case TP_Q6_K: return 2;
    default: return 0;
    }
}

bool tp_vk_type_native(uint32_t type) {
    switch (type) {
    case TP_F32: case TP_F16: case TP_BF16: case TP_Q8_0: case TP_Q4_0: case TP_Q4_K: case TP_Q6_K: return true;
    default: return false;
    }
}

size_t tp_vk_qact_bytes(int nb, int n) { return (size_t)nb * (size_t)(n / 32) * 48; }

/* A 1D grid of n invocations as (x, y) workgroups within the 65535 limit. */
static void grid(u32 groups, u32 *gx, u32 *gy) {
    if (groups == 0) groups = 1;
    *gx = groups < 65535 ? groups : 65535;
    *gy = (groups + *gx - 1) / *gx;
}

static VkPipeline pipe(tp_vk_cmd *c, int shader, u32 wg, u32 s1, u32 s2, char *err) {
    u32 spec[3] = { wg, s1, s2 };
    return tp_vk_pipeline_get(c->g, shader, spec, 3, err);
}

int tp_vk_op_quant(tp_vk_cmd *c, int kind, VkDeviceAddress x, VkDeviceAddress x2, VkDeviceAddress xq, int n, int nb,
                   char *err) {
    if (n % (kind == 1 ? 32 : 256)) return tp_fail(err, "internal: quantizing rows of %d values for kind %d", n, kind);
    struct { u64 x, xq, x2; u32 n, nb, ldx, glu; } pc = { x, xq, x2, (u32)n, (u32)nb, (u32)n, x2 != 0 };
    VkPipeline p = pipe(c, SH_QUANT, WG_ELEM, (u32)kind, 0, err);
    if (!p) return -1;
    u32 per = (u32)(kind == 1 ? n / 32 : n / 256), gx, gy;
    grid((per * (u32)nb + WG_ELEM - 1) / WG_ELEM, &gx, &gy);
    tp_vk_dispatch(c, p, &pc, sizeof pc, gx, gy, 1);
    return 0;
}

int tp_vk_op_matmul(tp_vk_cmd *c, const tp_vk_weight *const *w, int nw, VkDeviceAddress x, VkDeviceAddress x2, int ldx,
                    VkDeviceAddress xq, const VkDeviceAddress *y, const int *ldy, int nb, bool accumulate, char *err) {
    if (nw < 1 || nw > 3) return tp_fail(err, "internal: %d matrices in one product", nw);
    const tp_vk_weight *w0 = w[0];
    u64 wa[3] = { 0, 0, 0 }, ya[3] = { 0, 0, 0 };
    u32 n[3] = { 0, 0, 0 }, ld[3] = { 0, 0, 0 }, rows = 0;
    for (int i = 0; i < nw; i++) {
        if (w[i]->type != w0->type || w[i]->n_in != w0->n_in)
            return tp_fail(err, "internal: matrices of one product differ in type or input length");
        wa[i] = w[i]->addr;
        ya[i] = y[i];
        n[i] = (u32)w[i]->n_out;
        ld[i] = (u32)ldy[i];
        rows += n[i];
    }
    int kind = tp_vk_act_kind(w0->type);
    VkPipeline p;
    u32 gx, gy;
    /* mm_q: a subgroup per row; mm_f: a subgroup per pair of rows */
    u32 sg = c->g->subgroup_size ? c->g->subgroup_size : WG_MM;
    u32 rpw = kind == 0 ? 2 * (WG_MM_F / sg > 0 ? WG_MM_F / sg : 1) : (WG_MM / sg > 0 ? WG_MM / sg : 1);
    grid((rows + rpw - 1) / rpw, &gx, &gy);
    if (kind == 0) {
        if (w0->type != TP_F32 && w0->type != TP_F16 && w0->type != TP_BF16)
            return tp_fail(err, "internal: no GPU matmul for type %u", w0->type);
        struct { u64 w0, w1, w2, y0, y1, y2, x, x2; u32 n0, n1, n2, n_in, nb, row_bytes, ldx, acc, ldy0, ldy1, ldy2, glu; } pc = {
            wa[0], wa[1], wa[2], ya[0], ya[1], ya[2], x, x2, n[0], n[1], n[2], (u32)w0->n_in, (u32)nb,
            (u32)w0->row_bytes, (u32)ldx, accumulate, ld[0], ld[1], ld[2], x2 != 0 };
        if (!(p = pipe(c, SH_MM_F, WG_MM_F, w0->type, rpw, err))) return -1;
        tp_vk_dispatch(c, p, &pc, sizeof pc, gx, gy, 1);
    } else {
        struct { u64 w0, w1, w2, y0, y1, y2, xq; u32 n0, n1, n2, n_in, nb, row_bytes, acc, ldy0, ldy1, ldy2; } pc = {
            wa[0], wa[1], wa[2], ya[0], ya[1], ya[2], xq, n[0], n[1], n[2], (u32)w0->n_in, (u32)nb,
            (u32)w0->row_bytes, accumulate, ld[0], ld[1], ld[2] };
        if (!(p = pipe(c, SH_MM_Q, WG_MM, w0->type, rpw, err))) return -1;
        tp_vk_dispatch(c, p, &pc, sizeof pc, gx, gy, 1);
    }
    return 0;
}

int tp_vk_op_rmsnorm(tp_vk_cmd *c, VkDeviceAddress x, int ldx, VkDeviceAddress w, VkDeviceAddress out, int ldo,
                     int n, int nb, float eps, char *err) {
    struct { u64 x, w, out; u32 n, ldx, ldo; float eps; } pc = { x, w, out, (u32)n, (u32)ldx, (u32)ldo, eps };
    VkPipeline p = pipe(c, SH_RMSNORM, WG_ROW, 0, 0, err);
    if (!p) return -1;
    u32 gx, gy;
    grid((u32)nb, &gx, &gy);
    tp_vk_dispatch(c, p, &pc, sizeof pc, gx, gy, 1);
    return 0;
}

int tp_vk_op_softmax_mix(tp_vk_cmd *c, VkDeviceAddress logits, VkDeviceAddress stats, VkDeviceAddress mix,
                         VkDeviceAddress probs, int nb, int n, char *err) {
    struct { u64 z, stats; u32 n; } ps = { logits, stats, (u32)n };
    VkPipeline p = pipe(c, SH_SOFTMAX, WG_WIDE, 0, 0, err);
    if (!p) return -1;
    tp_vk_dispatch(c, p, &ps, sizeof ps, (u32)nb, 1, 1);
    tp_vk_barrier(c);
    struct { u64 z, stats, w, out; u32 n, nb; } pm = { logits, stats, mix, probs, (u32)n, (u32)nb };
    if (!(p = pipe(c, SH_MIX, WG_ELEM, 0, 0, err))) return -1;
    u32 gx, gy;
    grid(((u32)n + WG_ELEM - 1) / WG_ELEM, &gx, &gy);
    tp_vk_dispatch(c, p, &pm, sizeof pm, gx, gy, 1);
    return 0;
}

/* --------------------------------------------------------- kernel checks -- */
/* Buffers of one check, freed together. */
typedef struct {
    tp_gpu *g;
    tp_vk_buf b[6];
    int n;
    tp_vk_cmd c;
} check_ctx;

static VkDeviceAddress cbuf(check_ctx *k, size_t bytes, const void *init, char *err) {
    if (k->n == 6) { tp_fail(err, "internal: too many check buffers"); return 0; }
    tp_vk_buf *b = &k->b[k->n];
    if (tp_vk_buf_new(k->g, b, bytes ? bytes : 4, TP_GPU_MEM_WORK, false, err)) return 0;
    k->n++;
    if (init && tp_vk_upload(k->g, b, 0, init, bytes, err)) return 0;
    return b->addr;
}

static int check_begin(check_ctx *k, tp_gpu *g, char *err) {
    memset(k, 0, sizeof *k);
    k->g = g;
    if (tp_vk_cmd_init(g, &k->c, err)) return -1;
    tp_vk_cmd_begin(&k->c);
    return 0;
}

static void check_end(check_ctx *k) {
    tp_vk_cmd_free(&k->c);
    for (int i = 0; i < k->n; i++) tp_vk_buf_free(k->g, &k->b[i]);
}

int tp_gpu_check_matmul(tp_gpu *g, const tp_weight *w, const float *x, const float *x2, int nb, float *y, char *err) {
    if (!tp_vk_type_native(w->type)) return tp_fail(err, "type %u is not computed on the GPU", w->type);
    check_ctx k;
    if (check_begin(&k, g, err)) return -1;
    int rc = -1, kind = tp_vk_act_kind(w->type);
    size_t rb = tp_dtype_row_bytes(w->type, (size_t)w->n_in);
    tp_vk_weight vw = { 0, w->type, w->n_in, w->n_out, rb };
    VkDeviceAddress xa, ya, qa = 0, x2a = 0;
    if (!(vw.addr = cbuf(&k, rb * (size_t)w->n_out, w->data, err))) goto out;
    if (!(xa = cbuf(&k, sizeof(float) * (size_t)nb * (size_t)w->n_in, x, err))) goto out;
    if (!(ya = cbuf(&k, sizeof(float) * (size_t)nb * (size_t)w->n_out, NULL, err))) goto out;
    if (x2 && !(x2a = cbuf(&k, sizeof(float) * (size_t)nb * (size_t)w->n_in, x2, err))) goto out;
    if (kind) {
        if (!(qa = cbuf(&k, tp_vk_qact_bytes(nb, w->n_in), NULL, err))) goto out;
        if (tp_vk_op_quant(&k.c, kind, xa, x2a, qa, w->n_in, nb, err)) goto out;
        tp_vk_barrier(&k.c);
    }
    const tp_vk_weight *ws[1] = { &vw };
    int ldy = w->n_out;
    if (tp_vk_op_matmul(&k.c, ws, 1, xa, x2a, w->n_in, qa, &ya, &ldy, nb, false, err)) goto out;
    if (tp_vk_cmd_submit(&k.c, err)) goto out;
    rc = tp_vk_download(g, &k.b[2], 0, y, sizeof(float) * (size_t)nb * (size_t)w->n_out, err);
out:
    if (k.c.recording) tp_vk.vkEndCommandBuffer(k.c.cb);
    check_end(&k);
    return rc;
}

int tp_gpu_check_quant(tp_gpu *g, int kind, const float *x, int n, int8_t *q, float *d, float *m, char *err) {
    check_ctx k;
    if (check_begin(&k, g, err)) return -1;
    int rc = -1;
    size_t qb = tp_vk_qact_bytes(1, n);
    uint32_t *host = NULL;
    VkDeviceAddress xa, qa;
    if (!(xa = cbuf(&k, sizeof(float) * (size_t)n, x, err))) goto out;
    if (!(qa = cbuf(&k, qb, NULL, err))) goto out;
    if (tp_vk_op_quant(&k.c, kind, xa, 0, qa, n, 1, err)) goto out;
    if (tp_vk_cmd_submit(&k.c, err)) goto out;
    host = malloc(qb);
    if (!host) { tp_fail(err, "out of memory"); goto out; }
    if (tp_vk_download(g, &k.b[1], 0, host, qb, err)) goto out;
    for (int gi = 0; gi < n / 32; gi++) {
        const uint32_t *e = host + 12 * gi;
        memcpy(q + 32 * gi, e, 32);
        memcpy(&d[gi], &e[8], 4);
        memcpy(&m[gi], &e[9], 4);
        int s0 = 0, s1 = 0;
        for (int l = 0; l < 16; l++) { s0 += q[32 * gi + l]; s1 += q[32 * gi + 16 + l]; }
        if ((int32_t)e[10] != s0 || (int32_t)e[11] != s1) {
            tp_fail(err, "group %d: half sums %d %d, expected %d %d", gi, (int32_t)e[10], (int32_t)e[11], s0, s1);
            goto out;
        }
    }
    rc = 0;
out:
    if (k.c.recording) tp_vk.vkEndCommandBuffer(k.c.cb);
    free(host);
    check_end(&k);
    return rc;
}

int tp_gpu_check_rmsnorm(tp_gpu *g, const float *x, const float *w, int n, int nb, float eps, float *out, char *err) {
    check_ctx k;
    if (check_begin(&k, g, err)) return -1;
    int rc = -1;
    size_t bytes = sizeof(float) * (size_t)n * (size_t)nb;
    VkDeviceAddress xa, wa, oa;
    if (!(xa = cbuf(&k, bytes, x, err)) || !(wa = cbuf(&k, sizeof(float) * (size_t)n, w, err)) ||
        !(oa = cbuf(&k, bytes, NULL, err)))
        goto out;
    if (tp_vk_op_rmsnorm(&k.c, xa, n, wa, oa, n, n, nb, eps, err) || tp_vk_cmd_submit(&k.c, err)) goto out;
    rc = tp_vk_download(g, &k.b[2], 0, out, bytes, err);
out:
    if (k.c.recording) tp_vk.vkEndCommandBuffer(k.c.cb);
    check_end(&k);
    return rc;
}

int tp_gpu_check_mixture(tp_gpu *g, const float *logits, const float *mix, int nb, int n, float *probs, char *err) {
    check_ctx k;
    if (check_begin(&k, g, err)) return -1;
    int rc = -1;
    VkDeviceAddress za, sa, wa, pa;
    if (!(za = cbuf(&k, sizeof(float) * (size_t)n * (size_t)nb, logits, err)) ||
        !(sa = cbuf(&k, sizeof(float) * 2 * (size_t)nb, NULL, err)) ||
        !(wa = cbuf(&k, sizeof(float) * (size_t)nb, mix, err)) || !(pa = cbuf(&k, sizeof(float) * (size_t)n, NULL, err)))
        goto out;
    if (tp_vk_op_softmax_mix(&k.c, za, sa, wa, pa, nb, n, err) || tp_vk_cmd_submit(&k.c, err)) goto out;
    rc = tp_vk_download(g, &k.b[3], 0, probs, sizeof(float) * (size_t)n, err);
out:
    if (k.c.recording) tp_vk.vkEndCommandBuffer(k.c.cb);
    check_end(&k);
    return rc;
}

double tp_gpu_read_bandwidth(tp_gpu *g, size_t bytes, int reps, char *err) {
    check_ctx k;
    if (check_begin(&k, g, err)) return -1;
    tp_vk_cmd_submit(&k.c, err); /* close the empty recording */
    double best = -1;
    const u32 groups = 4096, wg = 256;
    VkDeviceAddress src, dst;
    bytes &= ~(size_t)15;
    if (!(src = cbuf(&k, bytes, NULL, err)) || !(dst = cbuf(&k, 4 * groups, NULL, err))) goto out;
    VkPipeline p = pipe(&k.c, SH_READBW, wg, 0, 0, err);
    if (!p) goto out;
    struct { u64 src, dst; u32 n16; } pc = { src, dst, (u32)(bytes / 16) };
    for (int r = 0; r <= reps; r++) {
        tp_vk_cmd_begin(&k.c);
        tp_vk_dispatch(&k.c, p, &pc, sizeof pc, groups, 1, 1);
        double t0 = tp_now();
        if (tp_vk_cmd_submit(&k.c, err)) { best = -1; goto out; }
        double t = tp_now() - t0;
        if (r > 0 && (best < 0 || (double)bytes / t > best)) best = (double)bytes / t; /* r = 0 warms up */
    }
out:
    check_end(&k);
    return best;
}

#endif /* TEMPO_VULKAN */
