#version 460
// mix: the next TEMPO distribution, D[i] = sum_r w_r * softmax(z_r)[i]
// (design section 4), with the softmax statistics from softmax.comp. Members
// are added in order r = 0, 1, ... as the CPU's tp_mixture adds them.
#include "common.glsl"

layout(local_size_x_id = 0) in;

layout(push_constant) uniform PC {
    uint64_t z, stats, w, out_;
    uint n, nb;
} pc;

void main() {
    const uint i = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    if (i >= pc.n) return;
    float acc = 0.0;
    for (uint r = 0u; r < pc.nb; r++) {
        float m = F32(pc.stats).v[2u * r], inv = F32(pc.stats).v[2u * r + 1u];
        precise float p = exp(F32(pc.z).v[r * pc.n + i] - m) * inv;
        precise float t = F32(pc.w).v[r] * p;
        acc += t;
    }
    F32(pc.out_).v[i] = acc;
}
