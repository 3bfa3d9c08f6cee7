/* gpu_stub.c: the GPU interface in builds without Vulkan (make VULKAN=0, or no
 * Vulkan headers / glslc at build time): no devices, and every constructor
 * fails with a message that says how to get the backend. */
#ifndef TEMPO_VULKAN

#include <string.h>

#include "core/common.h"
#include "gpu/gpu.h"

#define NO_VULKAN "this tempo was built without the Vulkan backend (install libvulkan-dev and glslc, then rebuild)"

bool tp_gpu_built(void) { return false; }

int tp_gpu_devices(tp_gpu_device_info *out, int cap, char *err) {
    (void)out; (void)cap; (void)err;
    return 0;
}

bool tp_gpu_spec_valid(const char *s) {
    if (!s || !strcmp(s, "auto") || !strcmp(s, "cpu") || !strcmp(s, "gpu")) return true;
    if (strncmp(s, "gpu:", 4) || !s[4] || strlen(s + 4) > 3) return false;
    for (const char *p = s + 4; *p; p++)
        if (*p < '0' || *p > '9') return false;
    return true;
}

int tp_gpu_resolve(const char *spec, char *err) {
    if (!spec || !*spec || !strcmp(spec, "auto") || !strcmp(spec, "cpu")) return TP_DEVICE_CPU;
    if (!tp_gpu_spec_valid(spec)) {
        tp_fail(err, "--device: '%s' is not one of auto, cpu, gpu, gpu:N", spec);
        return -2;
    }
    tp_fail(err, "--device %s: %s", spec, NO_VULKAN);
    return -2;
}

tp_gpu *tp_gpu_open(int index, char *err) { (void)index; tp_fail(err, NO_VULKAN); return NULL; }
void tp_gpu_close(tp_gpu *g) { (void)g; }
const char *tp_gpu_name(const tp_gpu *g) { (void)g; return ""; }
int tp_gpu_index(const tp_gpu *g) { (void)g; return -1; }
bool tp_gpu_is_software(const tp_gpu *g) { (void)g; return false; }
void tp_gpu_mem_get(const tp_gpu *g, tp_gpu_mem *out) { (void)g; memset(out, 0, sizeof *out); }
void tp_gpu_profile_set(tp_gpu *g, bool on) { (void)g; (void)on; }
void tp_gpu_profile_read(tp_gpu *g, tp_gpu_profile *out) { (void)g; memset(out, 0, sizeof *out); }

tp_gpu_weights *tp_gpu_weights_new(tp_gpu *g, const tp_model *m, int n_layers, size_t max_bytes, char *err) {
    (void)g; (void)m; (void)n_layers; (void)max_bytes;
    tp_fail(err, NO_VULKAN);
    return NULL;
}
void tp_gpu_weights_free(tp_gpu_weights *w) { (void)w; }
int tp_gpu_weights_layers(const tp_gpu_weights *w) { (void)w; return 0; }
bool tp_gpu_weights_has_head(const tp_gpu_weights *w) { (void)w; return false; }
size_t tp_gpu_weights_bytes(const tp_gpu_weights *w) { (void)w; return 0; }
size_t tp_gpu_weights_released(const tp_gpu_weights *w) { (void)w; return 0; }
tp_gpu *tp_gpu_weights_device(const tp_gpu_weights *w) { (void)w; return NULL; }
size_t tp_gpu_weights_bytes_for(const tp_model *m, int n_layers) { (void)m; (void)n_layers; return 0; }

tp_gpu_seq *tp_gpu_seq_new(tp_gpu_weights *w, const tp_model *m, tp_kv *kv, const tp_gpu_seq_opts *o, char *err) {
    (void)w; (void)m; (void)kv; (void)o;
    tp_fail(err, NO_VULKAN);
    return NULL;
}
void tp_gpu_seq_free(tp_gpu_seq *s) { (void)s; }
size_t tp_gpu_seq_device_bytes(const tp_gpu_seq *s) { (void)s; return 0; }
size_t tp_gpu_seq_kv_bytes(const tp_gpu_seq *s) { (void)s; return 0; }
int tp_gpu_seq_max_slots(const tp_gpu_seq *s) { (void)s; return 0; }
size_t tp_gpu_seq_bytes_for(const tp_model *m, int n_layers, int max_slots, int max_batch, bool attn_summary,
                            tp_kv_type kv_type, size_t *staging) {
    (void)m; (void)n_layers; (void)max_slots; (void)max_batch; (void)attn_summary; (void)kv_type;
    if (staging) *staging = 0;
    return 0;
}
size_t tp_gpu_seq_staging_bytes(const tp_gpu_seq *s) { (void)s; return 0; }
int tp_gpu_forward(tp_gpu_seq *s, tp_compute *c, tp_kv *kv, const tp_batch *b, char *err) {
    (void)s; (void)c; (void)kv; (void)b;
    return tp_fail(err, NO_VULKAN);
}
double tp_gpu_seq_last_wait_s(const tp_gpu_seq *s) { (void)s; return 0; }

int tp_gpu_check_matmul(tp_gpu *g, const tp_weight *w, const float *x, const float *x2, int nb, float *y, char *err) {
    (void)g; (void)w; (void)x; (void)x2; (void)nb; (void)y;
    return tp_fail(err, NO_VULKAN);
}
int tp_gpu_check_rmsnorm(tp_gpu *g, const float *x, const float *w, int n, int nb, float eps, float *out, char *err) {
    (void)g; (void)x; (void)w; (void)n; (void)nb; (void)eps; (void)out;
    return tp_fail(err, NO_VULKAN);
}
int tp_gpu_check_mixture(tp_gpu *g, const float *logits, const float *mix, int nb, int n, float *probs, char *err) {
    (void)g; (void)logits; (void)mix; (void)nb; (void)n; (void)probs;
    return tp_fail(err, NO_VULKAN);
}
int tp_gpu_check_quant(tp_gpu *g, int kind, const float *x, int n, int8_t *q, float *d, float *m, char *err) {
    (void)g; (void)kind; (void)x; (void)n; (void)q; (void)d; (void)m;
    return tp_fail(err, NO_VULKAN);
}
double tp_gpu_read_bandwidth(tp_gpu *g, size_t bytes, int reps, char *err) {
    (void)g; (void)bytes; (void)reps;
    tp_fail(err, NO_VULKAN);
    return -1;
}

#endif /* !TEMPO_VULKAN */
