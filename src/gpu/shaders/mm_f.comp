#version 460
// mm_f: y[b][r] (+)= sum_c W[r][c] x[b][c] for float weights (F32, F16, BF16)
// and f32 activations, as the CPU's float kernels compute it (no activation
// rounding). Lanes split a row in units of 4 values and each keeps TILE
// partial sums, so every weight value read
// from memory feeds TILE tokens: a TEMPO set of up to TILE members costs one
// pass over the weights, larger batches one pass per TILE tokens (the repeats
// hit the cache: a subgroup rereads only its own row).
// Each subgroup owns whole rows (a warp per row on NVIDIA, a wave on AMD):
// its lanes stride along the row and one subgroupAdd per token finishes it,
// with no shared memory or barriers. A workgroup covers RPW rows whatever the
// subgroup size the driver picks (its subgroups take rows in turn).
#include "common.glsl"
#extension GL_EXT_control_flow_attributes : enable

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint TYPE = 1; // ggml ids: 0 F32, 1 F16, 30 BF16
layout(constant_id = 2) const uint RPW = 2; // rows per workgroup
#define TILE 8

// Up to three matrices of the same type and input length (q, k and v; gate and
// up) in one dispatch: segment i owns global rows [off_i, off_i + n_out_i).
// With glu set the input is silu(x) * x2 computed as it is read (the SwiGLU of
// the CPU's tp_swiglu, same expression), so no separate pass writes it.
layout(push_constant) uniform PC {
    uint64_t w0, w1, w2, y0, y1, y2, x, x2;
    uint n0, n1, n2, n_in;
    uint nb, row_bytes, ldx, acc;
    uint ldy0, ldy1, ldy2, glu;
} pc;

float bf16(uint h) { return uintBitsToFloat(h << 16); }

float elem(uint64_t row, uint i) {
    if (TYPE == 0u) return F32(row).v[i];
    uint h = ld16(row + 2ul * uint64_t(i));
    return TYPE == 1u ? half_to_float(h) : bf16(h);
}

vec4 quad(uint64_t row, uint u) {
    if (TYPE == 0u) return V4(row).v[u];
    uvec2 p = U2(row).v[u];
    if (TYPE == 1u) return vec4(unpackHalf2x16(p.x), unpackHalf2x16(p.y));
    return vec4(bf16(p.x & 0xFFFFu), bf16(p.x >> 16), bf16(p.y & 0xFFFFu), bf16(p.y >> 16));
}

float silu_mul(float a, float b) {
    precise float r = a / (1.0 + exp(-a)) * b;
    return r;
}

vec4 xload4(uint64_t off) { // activations at element offset off (a multiple of 4)
    vec4 a = V4(pc.x + 4ul * off).v[0];
    if (pc.glu == 0u) return a;
    vec4 b = V4(pc.x2 + 4ul * off).v[0];
    return vec4(silu_mul(a.x, b.x), silu_mul(a.y, b.y), silu_mul(a.z, b.z), silu_mul(a.w, b.w));
}

float xload(uint off) {
    float a = F32(pc.x).v[off];
    return pc.glu == 0u ? a : silu_mul(a, F32(pc.x2).v[off]);
}

void main() {
    const uint SG = gl_SubgroupSize, lane = gl_SubgroupInvocationID;
    const uint n_out = pc.n0 + pc.n1 + pc.n2;
    // Vector loads need 16-byte (F32) or 8-byte (F16/BF16) aligned rows and
    // 16-byte aligned activation rows; otherwise every value goes the scalar way.
    const bool vec_ok = (pc.n_in & 3u) == 0u && (pc.ldx & 3u) == 0u &&
                        (pc.row_bytes & (TYPE == 0u ? 15u : 7u)) == 0u;
    // F16/BF16 rows that are 16-byte aligned are read 8 values (16 bytes) per
    // lane per load, the width that keeps a bandwidth-bound kernel fed.
    const bool wide = TYPE != 0u && vec_ok && (pc.row_bytes & 15u) == 0u;
    const uint units8 = wide ? pc.n_in / 8u : 0u;
    const uint units = vec_ok && !wide ? pc.n_in / 4u : 0u;
    const uint done = wide ? units8 * 8u : units * 4u;
    for (uint rr = gl_SubgroupID; rr < RPW; rr += gl_NumSubgroups) {
        const uint rg = wg_index() * RPW + rr;
        if (rg >= n_out) break;
        // the segment of this row
        const uint seg = rg < pc.n0 ? 0u : rg < pc.n0 + pc.n1 ? 1u : 2u;
        const uint r = seg == 0u ? rg : seg == 1u ? rg - pc.n0 : rg - pc.n0 - pc.n1;
        const uint64_t w = seg == 0u ? pc.w0 : seg == 1u ? pc.w1 : pc.w2;
        const uint64_t y = seg == 0u ? pc.y0 : seg == 1u ? pc.y1 : pc.y2;
        const uint ldy = seg == 0u ? pc.ldy0 : seg == 1u ? pc.ldy1 : pc.ldy2;
        const uint64_t row = w + uint64_t(r) * pc.row_bytes;
        for (uint b0 = 0u; b0 < pc.nb; b0 += TILE) {
            const uint nt = min(TILE, pc.nb - b0);
            float acc[TILE];
            [[unroll]] for (uint t = 0u; t < TILE; t++) acc[t] = 0.0;
            for (uint u = lane; u < units8; u += SG) {
                uvec4 p = U4(row).v[u];
                vec4 w0, w1;
                if (TYPE == 1u) {
                    w0 = vec4(unpackHalf2x16(p.x), unpackHalf2x16(p.y));
                    w1 = vec4(unpackHalf2x16(p.z), unpackHalf2x16(p.w));
                } else {
                    w0 = vec4(bf16(p.x & 0xFFFFu), bf16(p.x >> 16), bf16(p.y & 0xFFFFu), bf16(p.y >> 16));
                    w1 = vec4(bf16(p.z & 0xFFFFu), bf16(p.z >> 16), bf16(p.w & 0xFFFFu), bf16(p.w >> 16));
                }
                [[unroll]] for (uint t = 0u; t < TILE; t++) {
                    if (t < nt) {
                        uint64_t o = uint64_t(b0 + t) * pc.ldx + 8u * u;
                        acc[t] += dot(w0, xload4(o)) + dot(w1, xload4(o + 4ul));
                    }
                }
            }
            for (uint u = lane; u < units; u += SG) {
                vec4 wv = quad(row, u);
                [[unroll]] for (uint t = 0u; t < TILE; t++)
                    if (t < nt) acc[t] += dot(wv, xload4(uint64_t(b0 + t) * pc.ldx + 4u * u));
            }
            for (uint i = done + lane; i < pc.n_in; i += SG) {
                float wv = elem(row, i);
                for (uint t = 0u; t < TILE; t++)
                    if (t < nt) acc[t] += wv * xload((b0 + t) * pc.ldx + i);
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
