#version 460
// rmsnorm: out[b] = (x[b] * 1/sqrt(mean(x[b]^2) + eps)) * w, one workgroup per
// row, the arithmetic of the CPU's tp_rmsnorm (the sum of squares in float
// here, in double there: they differ by rounding only).
#include "common.glsl"

layout(local_size_x_id = 0) in;

layout(push_constant) uniform PC {
    uint64_t x, w, out_;
    uint n, ldx, ldo;
    float eps;
} pc;

void main() {
    const uint WG = gl_WorkGroupSize.x, tid = gl_LocalInvocationID.x, b = wg_index();
    F32 x = F32(pc.x), w = F32(pc.w), o = F32(pc.out_);
    float s = 0.0;
    for (uint i = tid; i < pc.n; i += WG) {
        float v = x.v[b * pc.ldx + i];
        s += v * v;
    }
    s = wg_sum(s);
    float mean = s / float(pc.n);
    float scale = 1.0 / sqrt(mean + pc.eps);
    for (uint i = tid; i < pc.n; i += WG) {
        precise float v = x.v[b * pc.ldx + i] * scale;
        o.v[b * pc.ldo + i] = v * w.v[i];
    }
}
