#version 460
// mm_f: y[b][r] (+)= sum_c W[r][c] x[b][c] for float weights (F32, F16, BF16)
// and f32 activations, as the CPU's float kernels compute it (no activation
// rounding). Lanes split a row in units of 4 values and each keeps TILE
// partial sums, so every weight value read
// from memory feeds TILE tokens: a TEMPO set of up to TILE members costs one
// pass over the weights, larger batches one pass per TILE tokens (the repeats
// hit the cache: a subgroup rereads only its own row).
// Each subgroup owns whole rows, two at a time (a warp per pair of rows on
// NVIDIA, a wave on AMD): its lanes stride along the rows and one subgroupAdd
// per token and row finishes them, with no shared memory or barriers. A
// workgroup covers RPW rows whatever the subgroup size the driver picks (its
// subgroups take pairs of rows in turn).
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

// The segment of global row rg: its weight rows, output and output stride.
void segment(uint rg, out uint r, out uint64_t w, out uint64_t y, out uint ldy) {
    const uint seg = rg < pc.n0 ? 0u : rg < pc.n0 + pc.n1 ? 1u : 2u;
    r = seg == 0u ? rg : seg == 1u ? rg - pc.n0 : rg - pc.n0 - pc.n1;
    w = seg == 0u ? pc.w0 : seg == 1u ? pc.w1 : pc.w2;
    y = seg == 0u ? pc.y0 : seg == 1u ? pc.y1 : pc.y2;
    ldy = seg == 0u ? pc.ldy0 : seg == 1u ? pc.ldy1 : pc.ldy2;
}

void store(uint64_t y, uint ldy, uint r, uint t, float s) {
    if (gl_SubgroupInvocationID == 0u) {
        uint o = t * ldy + r;
        F32(y).v[o] = pc.acc != 0u ? F32(y).v[o] + s : s;
    }
}

void unpack8(uvec4 p, out vec4 a, out vec4 b) {
    if (TYPE == 1u) {
        a = vec4(unpackHalf2x16(p.x), unpackHalf2x16(p.y));
        b = vec4(unpackHalf2x16(p.z), unpackHalf2x16(p.w));
    } else {
        a = vec4(bf16(p.x & 0xFFFFu), bf16(p.x >> 16), bf16(p.y & 0xFFFFu), bf16(p.y >> 16));
        b = vec4(bf16(p.z & 0xFFFFu), bf16(p.z >> 16), bf16(p.w & 0xFFFFu), bf16(p.w >> 16));
    }
}

// Two rows at once for F16/BF16 rows read 16 bytes per lane per load (the
// bandwidth-bound case): each activation load feeds both rows, and each lane
// has four 16-byte weight loads in flight (units u and u + SG of both rows)
// before it needs the first, which is what keeps the memory system busy with
// few warps per multiprocessor. Each row's lane still adds its units in the
// order u, u + SG, u + 2 SG, ..., so a row's sum is the one-row loop's.
void rows_wide(uint rg0, uint n_out) {
    const uint SG = gl_SubgroupSize, lane = gl_SubgroupInvocationID;
    const bool two = rg0 + 1u < n_out;
    uint r0, r1, ldy0, ldy1;
    uint64_t w0, w1, y0, y1;
    segment(rg0, r0, w0, y0, ldy0);
    segment(two ? rg0 + 1u : rg0, r1, w1, y1, ldy1);
    U4 row0 = U4(w0 + uint64_t(r0) * pc.row_bytes);
    U4 row1 = U4(w1 + uint64_t(r1) * pc.row_bytes);
    const uint units8 = pc.n_in / 8u;
    for (uint b0 = 0u; b0 < pc.nb; b0 += TILE) {
        const uint nt = min(TILE, pc.nb - b0);
        float a0[TILE], a1[TILE];
        [[unroll]] for (uint t = 0u; t < TILE; t++) { a0[t] = 0.0; a1[t] = 0.0; }
        uint u = lane;
        for (; u + SG < units8; u += 2u * SG) {
            const uvec4 p00 = row0.v[u], p01 = row0.v[u + SG], p10 = row1.v[u], p11 = row1.v[u + SG];
            vec4 wa, wb, wc, wd, va, vb, vc, vd;
            unpack8(p00, wa, wb);
            unpack8(p01, wc, wd);
            unpack8(p10, va, vb);
            unpack8(p11, vc, vd);
            [[unroll]] for (uint t = 0u; t < TILE; t++) {
                if (t < nt) {
                    const uint64_t o = uint64_t(b0 + t) * pc.ldx + 8u * u, o2 = o + 8u * SG;
                    const vec4 x0 = xload4(o), x1 = xload4(o + 4ul), x2 = xload4(o2), x3 = xload4(o2 + 4ul);
                    a0[t] += dot(wa, x0) + dot(wb, x1);
                    a0[t] += dot(wc, x2) + dot(wd, x3);
                    a1[t] += dot(va, x0) + dot(vb, x1);
                    a1[t] += dot(vc, x2) + dot(vd, x3);
                }
            }
        }
        if (u < units8) {
            const uvec4 p00 = row0.v[u], p10 = row1.v[u];
            vec4 wa, wb, va, vb;
            unpack8(p00, wa, wb);
            unpack8(p10, va, vb);
            [[unroll]] for (uint t = 0u; t < TILE; t++) {
                if (t < nt) {
                    const uint64_t o = uint64_t(b0 + t) * pc.ldx + 8u * u;
                    const vec4 x0 = xload4(o), x1 = xload4(o + 4ul);
                    a0[t] += dot(wa, x0) + dot(wb, x1);
                    a1[t] += dot(va, x0) + dot(vb, x1);
                }
            }
        }
        for (uint t = 0u; t < nt; t++) {
            const float s0 = subgroupAdd(a0[t]), s1 = subgroupAdd(a1[t]);
            store(y0, ldy0, r0, b0 + t, s0);
            if (two) store(y1, ldy1, r1, b0 + t, s1);
        }
    }
}

// Any row: 4 values per lane per load when the rows and activations are
// aligned for it, else one value at a time.
void row_any(uint rg) {
    const uint SG = gl_SubgroupSize, lane = gl_SubgroupInvocationID;
    const bool vec_ok = (pc.n_in & 3u) == 0u && (pc.ldx & 3u) == 0u &&
                        (pc.row_bytes & (TYPE == 0u ? 15u : 7u)) == 0u;
    const uint units = vec_ok ? pc.n_in / 4u : 0u;
    const uint done = units * 4u;
    uint r, ldy;
    uint64_t w, y;
    segment(rg, r, w, y, ldy);
    const uint64_t row = w + uint64_t(r) * pc.row_bytes;
    for (uint b0 = 0u; b0 < pc.nb; b0 += TILE) {
        const uint nt = min(TILE, pc.nb - b0);
        float acc[TILE];
        [[unroll]] for (uint t = 0u; t < TILE; t++) acc[t] = 0.0;
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
        for (uint t = 0u; t < nt; t++) store(y, ldy, r, b0 + t, subgroupAdd(acc[t]));
    }
}

void main() {
    const uint n_out = pc.n0 + pc.n1 + pc.n2;
    // F16/BF16 rows that are 16-byte aligned, with 16-byte aligned activation
    // rows, are read 8 values (16 bytes) per lane per load.
    const bool wide = TYPE != 0u && (pc.n_in & 7u) == 0u && (pc.ldx & 3u) == 0u && (pc.row_bytes & 15u) == 0u;
    // Each subgroup takes two consecutive rows of the workgroup's RPW.
    for (uint rr = 2u * gl_SubgroupID; rr < RPW; rr += 2u * gl_NumSubgroups) {
        const uint rg = wg_index() * RPW + rr;
        if (rg >= n_out) break;
        if (wide) {
            rows_wide(rg, n_out);
        } else {
            row_any(rg);
            if (rg + 1u < n_out && rr + 1u < RPW) row_any(rg + 1u);
        }
    }
}
