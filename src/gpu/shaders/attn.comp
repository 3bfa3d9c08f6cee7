#version 460
// attn: attention of each batch token's query heads over the slots it may see,
// with the semantics of the CPU's forward (model/forward.c):
//   visible(i, j): an explicit mask bit when given; else slot j < n0 (cached
//   before this call) when it is alive; else batch slot j - n0 by the rule:
//   causal (<= i), isolated (== i) or set (every member).
//   p_j = exp(s_j - max) / sum, s_j = q.k_j / sqrt(head_dim) over visible j,
//   out = sum_j p_j v_j (j ascending); with an f16 cache q and p_j are
//   rounded to f16 first, as ggml and the CPU do.
//   Attention summary (retroactive pruning): attn[i][j] += lw / n_heads * p_j.
// Two passes over the slots: the first finds the maximum and the sum (each
// thread keeps a running max and rescaled sum, combined at the end), the second
// recomputes the scores, normalizes them and accumulates V, so no score buffer
// of the context's length is needed. K/V rows are found through the slot ->
// device row table (slots move when pruned ones are reclaimed; rows do not).
// One workgroup per (token, head); with the summary, one per token looping
// over its heads, so that one thread owns attn[i][j] for all heads (no atomics).
#include "common.glsl"
#extension GL_EXT_control_flow_attributes : enable

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint F16 = 0;
#define MAXD 4 // head_dim <= MAXD * workgroup size

layout(push_constant) uniform PC {
    uint64_t q, kc, vc, rows, alive, mask, out_, summ;
    uint n0, c0, nb, n_slots;
    uint mode, mwords, ld_summ, n_heads;
    uint n_kv_heads, head_dim;
    float lw, scale;
} pc;

shared float qs[MAXD * 256];
shared float ps[256];
shared uint rs[256];

bool visible(uint bi, uint j) {
    if (pc.mode == 3u) return ((U32(pc.mask).v[bi * pc.mwords + (j >> 5)] >> (j & 31u)) & 1u) != 0u;
    if (j < pc.n0) return ((U32(pc.alive).v[j >> 5] >> (j & 31u)) & 1u) != 0u;
    uint jb = j - pc.n0, i = pc.c0 + bi;
    if (pc.mode == 0u) return jb <= i;
    if (pc.mode == 1u) return jb == i;
    return true;
}

float score(uint64_t krow, uint hd) {
    float s = 0.0;
    if (F16 != 0u) {
        for (uint d = 0u; d < hd; d += 2u) {
            vec2 kk = half2_to_float(U32(krow + 2ul * d).v[0]);
            s += qs[d] * kk.x + qs[d + 1u] * kk.y;
        }
    } else {
        for (uint d = 0u; d < hd; d++) s += qs[d] * F32(krow).v[d];
    }
    return s;
}

// Value d of a cache row's V for this head.
float vval(uint row, uint64_t koff, uint kv_dim, uint esz, uint d) {
    uint64_t vrow = pc.vc + uint64_t(row) * kv_dim * esz + koff;
    return F16 != 0u ? half_to_float(ld16(vrow + 2ul * d)) : F32(vrow).v[d];
}

void main() {
    const uint WG = gl_WorkGroupSize.x, tid = gl_LocalInvocationID.x;
    const uint bi = gl_WorkGroupID.x;
    const uint hd = pc.head_dim, kv_dim = pc.n_kv_heads * hd, q_dim = pc.n_heads * hd;
    const uint esz = F16 != 0u ? 2u : 4u;
    const bool summary = pc.lw != 0.0;
    const uint h0 = summary ? 0u : gl_WorkGroupID.y, h1 = summary ? pc.n_heads : h0 + 1u;
    const float f = pc.lw / float(pc.n_heads);
    for (uint h = h0; h < h1; h++) {
        const uint kvh = h / (pc.n_heads / pc.n_kv_heads);
        const uint64_t koff = uint64_t(kvh * hd) * esz;
        for (uint d = tid; d < hd; d += WG) {
            float v = F32(pc.q).v[bi * q_dim + h * hd + d];
            qs[d] = F16 != 0u ? round_half(v) : v;
        }
        barrier();
        // pass 1: max and sum of exp over the visible slots
        float m = -1.0 / 0.0, l = 0.0;
        for (uint j = tid; j < pc.n_slots; j += WG) {
            if (!visible(bi, j)) continue;
            uint64_t row = uint64_t(U32(pc.rows).v[j]);
            float s = score(pc.kc + row * kv_dim * esz + koff, hd) * pc.scale;
            if (s > m) { l = l * exp(m - s) + 1.0; m = s; }
            else l += exp(s - m);
        }
        const float M = wg_max(m);
        const float L = wg_sum(m == -1.0 / 0.0 ? 0.0 : l * exp(m - M));
        const float inv = 1.0 / L;
        // pass 2: probabilities, the summary, and the weighted sum of V
        float acc[MAXD];
        for (uint k = 0u; k < MAXD; k++) acc[k] = 0.0;
        for (uint base = 0u; base < pc.n_slots; base += WG) {
            const uint j = base + tid;
            float p = 0.0;
            uint row = 0u;
            if (j < pc.n_slots && visible(bi, j)) {
                row = U32(pc.rows).v[j];
                float s = score(pc.kc + uint64_t(row) * kv_dim * esz + koff, hd) * pc.scale;
                p = exp(s - M) * inv;
                if (summary) {
                    uint64_t a = pc.summ + 4ul * (uint64_t(bi) * pc.ld_summ + j);
                    precise float add = f * p;
                    F32(a).v[0] = F32(a).v[0] + add;
                }
                if (F16 != 0u) p = round_half(p);
            }
            ps[tid] = p;
            rs[tid] = row;
            barrier();
            const uint cnt = min(WG, pc.n_slots - base);
            for (uint k = 0u; k < MAXD; k++) {
                const uint d = tid + k * WG;
                if (d >= hd) break;
                // Four slots' values are loaded before the first is added, so
                // four loads are in flight instead of one (a thread's loop is
                // a chain of memory latencies otherwise). They are added in
                // slot order; a slot it may not see (p = 0) adds nothing.
                uint jj = 0u;
                for (; jj + 4u <= cnt; jj += 4u) {
                    float vv[4];
                    [[unroll]] for (uint e = 0u; e < 4u; e++) vv[e] = vval(rs[jj + e], koff, kv_dim, esz, d);
                    [[unroll]] for (uint e = 0u; e < 4u; e++)
                        if (ps[jj + e] != 0.0) acc[k] += ps[jj + e] * vv[e];
                }
                for (; jj < cnt; jj++)
                    if (ps[jj] != 0.0) acc[k] += ps[jj] * vval(rs[jj], koff, kv_dim, esz, d);
            }
            barrier();
        }
        for (uint k = 0u; k < MAXD; k++) {
            const uint d = tid + k * WG;
            if (d < hd) F32(pc.out_).v[bi * q_dim + h * hd + d] = acc[k];
        }
        barrier();
    }
}
