#version 460
// readbw: read a buffer once (16 bytes per load, consecutive threads on
// consecutive addresses) and fold it into one word per workgroup: the device's
// read bandwidth, which bounds a bandwidth-limited decode step (bench/gpu.sh).
#include "common.glsl"

layout(local_size_x_id = 0) in;

layout(push_constant) uniform PC {
    uint64_t src, dst;
    uint n16;    // uvec4 elements
} pc;

void main() {
    const uint WG = gl_WorkGroupSize.x;
    const uint stride = gl_NumWorkGroups.x * WG;
    uvec4 acc = uvec4(0u);
    for (uint i = gl_WorkGroupID.x * WG + gl_LocalInvocationID.x; i < pc.n16; i += stride) acc ^= U4(pc.src).v[i];
    uint x = subgroupXor(acc.x ^ acc.y ^ acc.z ^ acc.w);
    if (subgroupElect()) U32(pc.dst).v[gl_WorkGroupID.x] = x;
}
