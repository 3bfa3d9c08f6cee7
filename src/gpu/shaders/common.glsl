// common.glsl: what every compute shader of the Vulkan backend shares.
//
// Buffers are reached through 64-bit device addresses passed in push constants
// (GL_EXT_buffer_reference), so no descriptor sets are needed. Weights keep
// their GGUF byte layout: block types whose blocks are not a multiple of 4
// bytes (Q8_0: 34, Q4_0: 18, Q6_K: 210) put blocks at 2-byte aligned offsets,
// which ld32u/ld16 read with whole aligned 32-bit words.
#extension GL_EXT_buffer_reference : require
#extension GL_EXT_shader_explicit_arithmetic_types_int64 : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require

layout(buffer_reference, std430, buffer_reference_align = 4) buffer U32 { uint v[]; };
layout(buffer_reference, std430, buffer_reference_align = 4) buffer F32 { float v[]; };
layout(buffer_reference, std430, buffer_reference_align = 8) buffer U2 { uvec2 v[]; };
layout(buffer_reference, std430, buffer_reference_align = 16) buffer U4 { uvec4 v[]; };
layout(buffer_reference, std430, buffer_reference_align = 16) buffer V4 { vec4 v[]; };

// 32 bits at a 2-byte aligned address.
uint ld32u(uint64_t a) {
    uint64_t w = a & ~uint64_t(3);
    if ((a & 2ul) == 0ul) return U32(w).v[0];
    U32 p = U32(w);
    return (p.v[0] >> 16) | (p.v[1] << 16);
}

// 16 bits at a 2-byte aligned address.
uint ld16(uint64_t a) {
    uint x = U32(a & ~uint64_t(3)).v[0];
    return (a & 2ul) != 0ul ? x >> 16 : x & 0xFFFFu;
}

// f16 bits -> f32, exactly, subnormals included: unpackHalf2x16 may flush f16
// subnormals to zero (lavapipe does), which zeroes small attention
// probabilities and the scales of small activation groups.
float half_to_float(uint h) {
    uint s = (h & 0x8000u) << 16, e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
    if (e == 0u) {
        float v = float(m) * uintBitsToFloat(0x33800000u); // m * 2^-24, exact
        return (h & 0x8000u) != 0u ? -v : v;
    }
    if (e == 31u) return uintBitsToFloat(s | 0x7F800000u | (m << 13));
    return uintBitsToFloat(s | ((e + 112u) << 23) | (m << 13));
}
vec2 half2_to_float(uint w) { return vec2(half_to_float(w & 0xFFFFu), half_to_float(w >> 16)); }

// f32 -> f16 bits, round to nearest even, exactly as the CPU's tp_f32_to_f16
// (GLSL's packHalf2x16 leaves the rounding to the implementation).
uint float_to_half(float f) {
    uint x = floatBitsToUint(f);
    uint sign = (x >> 16) & 0x8000u;
    uint e = (x >> 23) & 0xFFu;
    uint m = x & 0x7FFFFFu;
    if (e == 0xFFu) return sign | 0x7C00u | (m != 0u ? 0x200u : 0u);
    int ee = int(e) - 112;
    if (ee >= 31) return sign | 0x7C00u;
    if (ee <= 0) {
        if (ee < -10) return sign;
        m |= 0x800000u;
        uint sh = uint(14 - ee);
        uint hm = m >> sh, rem = m & ((1u << sh) - 1u), halfway = 1u << (sh - 1u);
        if (rem > halfway || (rem == halfway && (hm & 1u) != 0u)) hm++;
        return sign | hm;
    }
    uint hm = m >> 13, rem = m & 0x1FFFu;
    uint h = sign | (uint(ee) << 10) | hm;
    if (rem > 0x1000u || (rem == 0x1000u && (hm & 1u) != 0u)) h++; // a carry rounds up into the exponent, as it should
    return h;
}

float round_half(float f) { return half_to_float(float_to_half(f)); }

// Workgroup reductions: subgroup operations, then one partial per subgroup in
// shared memory, summed by every thread in the same order (so every thread
// gets the same value). Call from uniform control flow.
#define MAX_SUBGROUPS 64
shared float red_buf[MAX_SUBGROUPS];

float wg_sum(float v) {
    v = subgroupAdd(v);
    if (subgroupElect()) red_buf[gl_SubgroupID] = v;
    barrier();
    float s = 0.0;
    for (uint i = 0u; i < gl_NumSubgroups; i++) s += red_buf[i];
    barrier();
    return s;
}

float wg_max(float v) {
    v = subgroupMax(v);
    if (subgroupElect()) red_buf[gl_SubgroupID] = v;
    barrier();
    float s = red_buf[0];
    for (uint i = 1u; i < gl_NumSubgroups; i++) s = max(s, red_buf[i]);
    barrier();
    return s;
}

// A linear workgroup index over a 2D grid (grids wider than 65535 groups).
uint wg_index() { return gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x; }
