#version 460
// mm_q: y[b][r] (+)= sum_c W[r][c] x[b][c] for block-quantized weights (Q8_0,
// Q4_0, Q4_K, Q6_K) against activations quantized by quant.comp, the way the
// CPU kernels (kernels/matmul.c) and llama.cpp do it: per group of 32 values
// the products are exact integer sums, then scaled in float by the weight's
// and the activation's scales:
//   Q8_0, Q4_0:  (d_w * d_x) * (i0 + i1)
//   Q4_K, Q6_K:  d_x * (s0 * i0 + s1 * i1) + min_w * m_x
// (i0, i1: the integer dot products of values 0-15 and 16-31; s0 = s1 except
// for Q6_K, whose 16-value sub-blocks have their own scales). So the GPU and
// the CPU differ only in the order of the float additions across groups.
// Weights are decoded to unsigned bytes (value + offset); the activation's
// per-half sums remove the offset exactly.
// Work split as in mm_f: a subgroup per row, one group of 32 per lane per
// iteration, TILE tokens per pass over the weights.
#include "common.glsl"
#extension GL_EXT_control_flow_attributes : enable

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint TYPE = 2; // ggml ids: 8 Q8_0, 2 Q4_0, 12 Q4_K, 14 Q6_K
layout(constant_id = 2) const uint RPW = 2; // rows per workgroup
#define TILE 8

// Up to three matrices of the same type and input length in one dispatch
// (as mm_f): segment i owns global rows [off_i, off_i + n_out_i).
layout(push_constant) uniform PC {
    uint64_t w0, w1, w2, y0, y1, y2, xq;
    uint n0, n1, n2, n_in;
    uint nb, row_bytes, acc, ldy0;
    uint ldy1, ldy2;
} pc;

struct Group { uint q[8]; float s0, s1, mn; int off; };

// Q4_K / Q5_K six-bit scale and min of sub-block j (ggml's get_scale_min_k4).
uint scb(uvec3 sc, uint i) { return (sc[i >> 2] >> (8u * (i & 3u))) & 0xFFu; }
void scale_min_k4(uvec3 sc, uint j, out uint s, out uint m) {
    if (j < 4u) {
        s = scb(sc, j) & 63u;
        m = scb(sc, j + 4u) & 63u;
    } else {
        s = (scb(sc, j + 4u) & 0xFu) | ((scb(sc, j - 4u) >> 6) << 4);
        m = (scb(sc, j + 4u) >> 4) | ((scb(sc, j) >> 6) << 4);
    }
}

Group decode(uint64_t row, uint g) {
    Group o;
    o.mn = 0.0;
    if (TYPE == 8u) { // Q8_0: 34-byte blocks {f16 d, int8 qs[32]}
        // the block's 34 bytes from 9 aligned words (the block starts 2-byte aligned)
        uint64_t b = row + 34ul * g;
        U32 p = U32(b & ~uint64_t(3));
        uint w[9];
        [[unroll]] for (uint k = 0u; k < 9u; k++) w[k] = p.v[k];
        const bool odd = (b & 2ul) != 0ul;
        o.s0 = o.s1 = half_to_float(odd ? w[0] >> 16 : w[0] & 0xFFFFu);
        [[unroll]] for (uint k = 0u; k < 8u; k++) o.q[k] = (odd ? w[k + 1u] : (w[k] >> 16) | (w[k + 1u] << 16)) ^ 0x80808080u;
        o.off = 128;
    } else if (TYPE == 2u) { // Q4_0: 18-byte blocks {f16 d, nibbles qs[16]}; low nibbles are values 0-15
        // the block's 18 bytes from 5 aligned words (the block starts 2-byte aligned)
        uint64_t b = row + 18ul * g;
        U32 p = U32(b & ~uint64_t(3));
        uint w[5];
        [[unroll]] for (uint k = 0u; k < 5u; k++) w[k] = p.v[k];
        const bool odd = (b & 2ul) != 0ul;
        o.s0 = o.s1 = half_to_float(odd ? w[0] >> 16 : w[0] & 0xFFFFu);
        [[unroll]] for (uint k = 0u; k < 4u; k++) {
            uint x = odd ? w[k + 1u] : (w[k] >> 16) | (w[k + 1u] << 16);
            o.q[k] = x & 0x0F0F0F0Fu;
            o.q[k + 4u] = (x >> 4) & 0x0F0F0F0Fu;
        }
        o.off = 8;
    } else if (TYPE == 12u) { // Q4_K: 144-byte super-blocks of 8 groups {f16 d, dmin, scales[12], qs[128]}
        uint sb = g >> 3, j = g & 7u;
        uint64_t b = row + 144ul * sb;
        U32 p = U32(b);
        vec2 dm = half2_to_float(p.v[0]);
        uvec3 sc = uvec3(p.v[1], p.v[2], p.v[3]);
        uint s, m;
        scale_min_k4(sc, j, s, m);
        o.s0 = o.s1 = dm.x * float(s);
        o.mn = -dm.y * float(m);
        uint base = 4u + 8u * (j >> 1);
        uint sh = (j & 1u) * 4u;
        for (uint k = 0u; k < 8u; k++) o.q[k] = (p.v[base + k] >> sh) & 0x0F0F0F0Fu;
        o.off = 0;
    } else { // Q6_K: 210-byte super-blocks {ql[128], qh[64], int8 scales[16], f16 d}
        uint sb = g >> 3, h = (g & 7u) >> 2, k4 = g & 3u;
        uint64_t b = row + 210ul * sb;
        uint64_t ql = b + 64ul * h + ((k4 & 1u) != 0u ? 32ul : 0ul), qh = b + 128ul + 32ul * h;
        uint scw = ld16(b + 192ul + 8ul * h + 2ul * k4);
        float d = half_to_float(ld16(b + 208ul));
        o.s0 = d * float(int(scw << 24) >> 24);
        o.s1 = d * float(int(scw << 16) >> 24);
        uint lsh = (k4 & 2u) != 0u ? 4u : 0u, hsh = 2u * k4;
        for (uint k = 0u; k < 8u; k++) {
            uint lo = (ld32u(ql + 4ul * k) >> lsh) & 0x0F0F0F0Fu;
            uint hi = (ld32u(qh + 4ul * k) >> hsh) & 0x03030303u;
            o.q[k] = lo | (hi << 4);
        }
        o.off = 32;
    }
    return o;
}

// Sum of 4 unsigned bytes times 4 signed bytes.
int dot4(uint w, uint x) {
    ivec4 xs = ivec4(int(x << 24) >> 24, int(x << 16) >> 24, int(x << 8) >> 24, int(x) >> 24);
    ivec4 ws = ivec4(w & 0xFFu, (w >> 8) & 0xFFu, (w >> 16) & 0xFFu, w >> 24);
    return xs.x * ws.x + xs.y * ws.y + xs.z * ws.z + xs.w * ws.w;
}

// One weight group against token t's activation group g: 8 words of int8,
// then d, m, and the sums of values 0-15 and 16-31.
float group_dot(Group grp, uint t, uint g, uint G, bool kquant) {
    uint64_t xa = pc.xq + 48ul * (uint64_t(t) * G + g);
    uvec4 q0 = U4(xa).v[0], q1 = U4(xa).v[1], dm = U4(xa).v[2];
    float xd = uintBitsToFloat(dm.x), xm = uintBitsToFloat(dm.y);
    int i0 = -grp.off * int(dm.z), i1 = -grp.off * int(dm.w);
    i0 += dot4(grp.q[0], q0.x) + dot4(grp.q[1], q0.y) + dot4(grp.q[2], q0.z) + dot4(grp.q[3], q0.w);
    i1 += dot4(grp.q[4], q1.x) + dot4(grp.q[5], q1.y) + dot4(grp.q[6], q1.z) + dot4(grp.q[7], q1.w);
    precise float v;
    if (kquant) v = xd * (grp.s0 * float(i0) + grp.s1 * float(i1)) + grp.mn * xm;
    else v = (grp.s0 * xd) * float(i0 + i1);
    return v;
}

void main() {
    const uint SG = gl_SubgroupSize, lane = gl_SubgroupInvocationID;
    const uint G = pc.n_in / 32u;
    const bool kquant = TYPE == 12u || TYPE == 14u;
    const uint n_out = pc.n0 + pc.n1 + pc.n2;
    for (uint rr = gl_SubgroupID; rr < RPW; rr += gl_NumSubgroups) {
        const uint rg = wg_index() * RPW + rr;
        if (rg >= n_out) break;
        const uint seg = rg < pc.n0 ? 0u : rg < pc.n0 + pc.n1 ? 1u : 2u;
        const uint r = seg == 0u ? rg : seg == 1u ? rg - pc.n0 : rg - pc.n0 - pc.n1;
        const uint64_t w = seg == 0u ? pc.w0 : seg == 1u ? pc.w1 : pc.w2;
        const uint64_t y = seg == 0u ? pc.y0 : seg == 1u ? pc.y1 : pc.y2;
        const uint ldy = seg == 0u ? pc.ldy0 : seg == 1u ? pc.ldy1 : pc.ldy2;
        const uint64_t row = w + uint64_t(r) * pc.row_bytes;
        for (uint b0 = 0u; b0 < pc.nb; b0 += TILE) {
            const uint nt = min(TILE, pc.nb - b0);
            float acc[TILE];
            for (uint t = 0u; t < TILE; t++) acc[t] = 0.0;
            // Two groups per lane per iteration (g and g + SG, decoded before
            // either is used, so both blocks' loads are in flight together),
            // added in the order g, g + SG as the one-group loop would.
            uint g = lane;
            for (; g + SG < G; g += 2u * SG) {
                Group ga = decode(row, g), gb = decode(row, g + SG);
                for (uint t = 0u; t < TILE; t++) {
                    if (t >= nt) break;
                    acc[t] += group_dot(ga, b0 + t, g, G, kquant);
                    acc[t] += group_dot(gb, b0 + t, g + SG, G, kquant);
                }
            }
            if (g < G) {
                Group ga = decode(row, g);
                for (uint t = 0u; t < TILE; t++) {
                    if (t >= nt) break;
                    acc[t] += group_dot(ga, b0 + t, g, G, kquant);
                }
            }
            for (uint t = 0u; t < TILE; t++) {
                if (t >= nt) break;
                float s = subgroupAdd(acc[t]);
                if (lane == 0u) {
                    uint o = (b0 + t) * ldy + r;
                    F32(y).v[o] = pc.acc != 0u ? F32(y).v[o] + s : s;
                }
            }
        }
    }
}
