#version 460
// quant: activations -> the groups mm_q reads, exactly as the CPU's matmul
// quantizes them (kernels/matmul.c), so GPU and CPU products see the same
// integers:
//   KIND 1, Q8_0 (for Q8_0/Q4_0 weights): per 32 values d = amax/127 rounded to
//     f16, q = round-to-nearest-even(x * 127/amax) (ggml's x86 quantize_row_q8_0).
//   KIND 2, Q8_K (for Q4_K/Q6_K weights): per 256 values iscale = -127/max (max:
//     the value of largest magnitude), q = min(nearest(iscale * x), 127),
//     d = 1/iscale; m = d * sum(q) per group of 32 (the weight's min term).
// Output per group of 32 (48 bytes): 8 words of int8 q, d, m (float bits), the
// integer sums of q over values 0-15 and 16-31.
// One invocation per group (Q8_0) or per 256-value block (Q8_K).
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint KIND = 1;

// With glu set the input is silu(x) * x2, computed as it is read (mm_f does the
// same for float weights), so the SwiGLU needs no pass of its own.
layout(push_constant) uniform PC {
    uint64_t x, xq, x2;
    uint n, nb, ldx, glu;
} pc;

float xval(uint i) {
    float a = F32(pc.x).v[i];
    if (pc.glu == 0u) return a;
    precise float r = a / (1.0 + exp(-a)) * F32(pc.x2).v[i];
    return r;
}

// a / b rounded to nearest even, as IEEE division on the CPU: Vulkan lets a
// shader's division be off by 2.5 ulp (GPUs multiply by an approximate
// reciprocal), and one ulp in 127/amax moves a value across a rounding tie now
// and then, so the GPU's int8 activations would differ from the CPU's. The
// quotient of the 24-bit mantissas is computed in 64-bit integers. Zeros,
// subnormals, infinities and results outside the normal range (never met here)
// use the plain division.
float div_rn(float a, float b) {
    uint ua = floatBitsToUint(a), ub = floatBitsToUint(b);
    uint sign = (ua ^ ub) & 0x80000000u;
    uint ea = (ua >> 23) & 0xFFu, eb = (ub >> 23) & 0xFFu;
    if (ea == 0u || eb == 0u || ea == 255u || eb == 255u) return a / b;
    uint64_t ma = uint64_t((ua & 0x7FFFFFu) | 0x800000u), mb = uint64_t((ub & 0x7FFFFFu) | 0x800000u);
    uint64_t num = ma << 25;              // num / mb is in (2^24, 2^26)
    uint64_t q = num / mb, r = num % mb;
    uint sh = q >= (1ul << 25) ? 2u : 1u; // keep 24 significant bits
    uint64_t mant = q >> sh, low = q & ((1ul << sh) - 1ul), halfway = 1ul << (sh - 1u);
    if (low > halfway || (low == halfway && (r != 0ul || (mant & 1ul) != 0ul))) mant++;
    int e = int(ea) - int(eb) + int(sh) + 125;
    if (mant == (1ul << 24)) { mant >>= 1; e++; }
    if (e <= 0 || e >= 255) return a / b;
    return uintBitsToFloat(sign | (uint(e) << 23) | (uint(mant) & 0x7FFFFFu));
}

// float -> int as x86's cvtps2dq + saturating pack (the CPU's q8_round).
int q8_round(float v) {
    if (!(abs(v) < 2147483648.0)) return -128;
    return clamp(int(roundEven(v)), -128, 127);
}

void store(uint64_t dst, int q[32], float d, float m) {
    int s0 = 0, s1 = 0;
    for (uint l = 0u; l < 16u; l++) { s0 += q[l]; s1 += q[l + 16u]; }
    U32 o = U32(dst);
    for (uint k = 0u; k < 8u; k++)
        o.v[k] = uint(q[4u * k] & 0xFF) | (uint(q[4u * k + 1u] & 0xFF) << 8) | (uint(q[4u * k + 2u] & 0xFF) << 16) |
                 (uint(q[4u * k + 3u] & 0xFF) << 24);
    o.v[8] = floatBitsToUint(d);
    o.v[9] = floatBitsToUint(m);
    o.v[10] = uint(s0);
    o.v[11] = uint(s1);
}

void main() {
    const uint G = pc.n / 32u;
    const uint per = KIND == 1u ? G : G / 8u; // invocations per token
    const uint id = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    if (id >= per * pc.nb) return;
    const uint b = id / per, u = id % per;
    const uint xb = b * pc.ldx;
    int q[32];
    if (KIND == 1u) {
        const uint g = u;
        float amax = 0.0;
        for (uint j = 0u; j < 32u; j++) amax = max(amax, abs(xval(xb + 32u * g + j)));
        precise float dd = div_rn(amax, 127.0);
        precise float idv = amax != 0.0 ? div_rn(127.0, amax) : 0.0;
        int sum = 0;
        for (uint j = 0u; j < 32u; j++) {
            precise float v = xval(xb + 32u * g + j) * idv;
            q[j] = q8_round(v);
            sum += q[j];
        }
        float d = round_half(dd);
        store(pc.xq + 48ul * (uint64_t(b) * G + g), q, d, round_half(dd * float(sum)));
    } else {
        const uint s = u;
        float amax = 0.0, mx = 0.0;
        for (uint j = 0u; j < 256u; j++) {
            float v = xval(xb + 256u * s + j);
            if (abs(v) > amax) { amax = abs(v); mx = v; }
        }
        precise float iscale = amax == 0.0 ? 0.0 : div_rn(-127.0, mx);
        precise float dd = amax == 0.0 ? 0.0 : div_rn(1.0, iscale);
        for (uint g = 0u; g < 8u; g++) {
            int sum = 0;
            for (uint j = 0u; j < 32u; j++) {
                precise float v = iscale * xval(xb + 256u * s + 32u * g + j);
                q[j] = min(q8_round(v), 127);
                sum += q[j];
            }
            store(pc.xq + 48ul * (uint64_t(b) * G + 8u * s + g), q, dd, dd * float(sum));
        }
    }
}
