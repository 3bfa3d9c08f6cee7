#version 460
// softmax: per row r of logits, stats[r] = (max, 1/sum exp(z - max)): the
// first half of the TEMPO mixture (mix.comp does the rest). One workgroup per row.
#include "common.glsl"

layout(local_size_x_id = 0) in;

layout(push_constant) uniform PC {
    uint64_t z, stats;
    uint n;
} pc;

void main() {
    const uint WG = gl_WorkGroupSize.x, tid = gl_LocalInvocationID.x, r = gl_WorkGroupID.x;
    F32 z = F32(pc.z + 4ul * uint64_t(r) * pc.n);
    float m = -1.0 / 0.0;
    for (uint i = tid; i < pc.n; i += WG) m = max(m, z.v[i]);
    m = wg_max(m);
    float s = 0.0;
    for (uint i = tid; i < pc.n; i += WG) s += exp(z.v[i] - m);
    s = wg_sum(s);
    if (tid == 0u) {
        F32(pc.stats).v[2u * r] = m;
        F32(pc.stats).v[2u * r + 1u] = 1.0 / s;
    }
}
