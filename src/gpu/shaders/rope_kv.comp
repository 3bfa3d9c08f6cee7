#version 460
// rope_kv: rotate each token's query heads in place, and write its rotated keys
// and its values into its KV cache row (f32, or f16 rounded to nearest even
// like the CPU cache), in one dispatch:
//   invocations [0, nb * n_heads * rope_dim/2): one (token, q head, pair) each;
//   then [0, nb * kv_dim/2): one (token, pair of adjacent values) each, which
//   reads the unrotated k (nothing writes k here) and writes one 32-bit word
//   of an f16 row, or two floats, so no two invocations share a word.
// The host computes cos and sin of pos * inv_freq for each token with the same
// float expressions as the CPU (GPU sin/cos of large arguments are not
// accurate enough), and the rotation is written with `precise` so it is not
// fused into other roundings than the CPU's:
//   x0' = x0 c - x1 s,  x1' = x0 s + x1 c
// over pairs (2i, 2i+1) (GGUF) or (i, i + rope_dim/2) (Hugging Face).
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint F16 = 0;

layout(push_constant) uniform PC {
    uint64_t q, k, v, cs, kc, vc, rows; // cs: [nb][rope_dim/2] pairs (cos, sin); rows: the tokens' cache rows
    uint nb, n_heads, n_kv_heads, head_dim;
    uint rope_dim, split_half, ldq, ldk;
} pc;

// Element d (within its head) of the rotated head whose values start at base.
float rotated(F32 x, uint base, uint d, uint b) {
    const uint half_ = pc.rope_dim / 2u;
    if (d >= pc.rope_dim) return x.v[base + d];
    uint p, a, bb;
    if (pc.split_half != 0u) { p = d < half_ ? d : d - half_; a = p; bb = p + half_; }
    else { p = d / 2u; a = 2u * p; bb = a + 1u; }
    const float c = F32(pc.cs).v[2u * (b * half_ + p)], s = F32(pc.cs).v[2u * (b * half_ + p) + 1u];
    const float x0 = x.v[base + a], x1 = x.v[base + bb];
    precise float r0 = x0 * c, r1 = x1 * s;
    precise float y;
    if (d == a) y = r0 - r1;
    else { precise float s0 = x0 * s, s1 = x1 * c; y = s0 + s1; }
    return y;
}

void main() {
    const uint half_ = pc.rope_dim / 2u;
    const uint kv_dim = pc.n_kv_heads * pc.head_dim;
    const uint nq = pc.nb * pc.n_heads * half_;
    uint id = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    if (id < nq) {
        const uint p = id % half_, h = (id / half_) % pc.n_heads, b = id / (half_ * pc.n_heads);
        F32 qv = F32(pc.q);
        const uint base = b * pc.ldq + h * pc.head_dim;
        const uint ia = base + (pc.split_half != 0u ? p : 2u * p);
        const uint ib = base + (pc.split_half != 0u ? p + half_ : 2u * p + 1u);
        const float c = F32(pc.cs).v[2u * (b * half_ + p)], s = F32(pc.cs).v[2u * (b * half_ + p) + 1u];
        const float x0 = qv.v[ia], x1 = qv.v[ib];
        precise float a0 = x0 * c, a1 = x1 * s, b0 = x0 * s, b1 = x1 * c;
        precise float y0 = a0 - a1, y1 = b0 + b1;
        qv.v[ia] = y0;
        qv.v[ib] = y1;
        return;
    }
    id -= nq;
    if (id >= pc.nb * (kv_dim / 2u)) return;
    const uint b = id / (kv_dim / 2u), e = 2u * (id % (kv_dim / 2u));
    const uint h = e / pc.head_dim, d = e % pc.head_dim; // e even, head_dim even: e, e+1 share the head
    const uint base = b * pc.ldk + h * pc.head_dim;
    const float k0 = rotated(F32(pc.k), base, d, b), k1 = rotated(F32(pc.k), base, d + 1u, b);
    const float v0 = F32(pc.v).v[b * pc.ldk + e], v1 = F32(pc.v).v[b * pc.ldk + e + 1u];
    const uint64_t row = uint64_t(U32(pc.rows).v[b]);
    if (F16 != 0u) {
        const uint64_t o = 4ul * (row * uint64_t(kv_dim / 2u) + uint64_t(e / 2u));
        U32(pc.kc + o).v[0] = float_to_half(k0) | (float_to_half(k1) << 16);
        U32(pc.vc + o).v[0] = float_to_half(v0) | (float_to_half(v1) << 16);
    } else {
        const uint64_t o = 4ul * (row * uint64_t(kv_dim) + uint64_t(e));
        F32(pc.kc + o).v[0] = k0;
        F32(pc.kc + o).v[1] = k1;
        F32(pc.vc + o).v[0] = v0;
        F32(pc.vc + o).v[1] = v1;
    }
}
