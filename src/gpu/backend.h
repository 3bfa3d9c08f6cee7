/* backend.h: one interface for running the model, whatever computes it.
 *
 *   "run this batch over this sequence state": tp_backend_forward(be, m, c, kv, batch)
 *
 * has tp_forward's contract (model.h) and two implementations: the CPU forward (model/forward.c,
 * be == NULL) and the Vulkan backend (src/gpu), which runs the first gpu_layers layers on a GPU
 * and the rest, if any, on the CPU with the session's compute context (tp_forward_layers). With
 * every layer on the device it also computes the TEMPO mixture (tp_batch.mix/probs) there, so only
 * that distribution comes back to the host.
 *
 * Ownership follows the model/session split:
 *   tp_device   per model (tempo_model.dev): which GPU, and the model's weights on it, uploaded
 *               once at tempo_model_open, read-only afterwards, shared by every session and
 *               thread. NULL: the model runs on the CPU.
 *   tp_backend  per session: the KV rows of the offloaded layers on the device, the scratch and
 *               staging buffers and a command buffer, made at prefill next to the session's KV
 *               cache (whose slot table stays the bookkeeping, as on the CPU) and compute context.
 *
 * Memory: the device's weight bytes are the model's, a backend's bytes (tp_backend_bytes_for:
 * KV rows for the cache's capacity, scratch, staging) the session's share of the model's monitor;
 * the session reserves them through its budget before tp_backend_new allocates anything, and
 * every allocation is also checked against the device's own free memory: what does not fit gets
 * a one-line message naming the device and the sizes, never a driver crash.
 */
#ifndef TEMPO_BACKEND_H
#define TEMPO_BACKEND_H

#include <stdbool.h>
#include <stddef.h>

#include "kv/kvcache.h"
#include "model/model.h"

struct tp_gpu;
struct tp_gpu_weights;

typedef struct {
    const char *device;    /* --device: NULL or "auto" (default), "cpu", "gpu", "gpu:N" */
    int gpu_layers;        /* layers to offload; < 0: all (then the output head too) */
    bool adapt;            /* weights that do not fit the device: offload fewer layers */
    bool auto_cpu;         /* "auto" stays on the CPU (the run needs what only the CPU has) */
    tp_kv_type kv_type;    /* the sessions' KV storage (with adapt: room is left for their KV rows) */
    size_t max_bytes;      /* the most device bytes the weights may take (0: no limit) */
} tp_device_opts;

typedef struct tp_device {
    int index;                      /* the Vulkan device (--device gpu:N) */
    struct tp_gpu *gpu;
    struct tp_gpu_weights *weights;
    int layers;                     /* offloaded layers (1..n_layers) */
    bool head;                      /* the output norm and matrix too (every layer offloaded) */
    size_t weight_bytes;            /* device bytes of the weights */
    size_t host_released;           /* host bytes of the file mapping given back after upload */
    bool memory_in_rss;             /* a software device: its "device" memory is this process's */
    char name[256];                 /* "gpu:N <name>" */
} tp_device;

/* Resolve o->device for m and upload the weights. 0 with *out NULL when the model runs on the CPU
 * (cpu, auto without a GPU, gpu_layers 0, or adapt when not one layer fits); 0 with *out set on a
 * GPU; -1 with err when the device asked for is missing or the weights do not fit it. */
int tp_device_open(const tp_model *m, const tp_device_opts *o, tp_device **out, char *err);
void tp_device_free(tp_device *d);
/* What --device resolves to on this machine: "cpu", "gpu:N", or NULL with err. */
const char *tp_device_resolve(const char *spec, bool auto_cpu, char *buf, size_t cap, char *err);

/* Device free memory now (the driver's budget, or the device's size less tempo's allocations),
 * and its size (TEMPO_VULKAN_MEMORY_MB, when set, plays a smaller device). */
size_t tp_device_free_bytes(const tp_device *d);
size_t tp_device_total_bytes(const tp_device *d);
/* Bytes a session's backend with `layers` offloaded layers and `slots` KV rows per layer would
 * allocate through Vulkan: device-local (KV rows, scratch) in *device_bytes, plus host-visible
 * staging: the total. Rounded up as the driver may round. */
size_t tp_backend_bytes_for(const tp_device *d, const tp_model *m, int layers, int slots, bool attn_summary,
                            tp_kv_type kv_type, size_t *device_bytes);

typedef struct tp_backend tp_backend;

/* A session's state on d for kv (made for m, f32 or f16, empty): KV rows for kv->capacity slots
 * of the first `layers` layers (<= d->layers; those layers' host rows are given up:
 * tp_kv_set_device_layers). attn_summary: batches may ask for the attention summary. NULL with
 * err when it does not fit the device. */
tp_backend *tp_backend_new(tp_device *d, const tp_model *m, tp_kv *kv, int layers, bool attn_summary, char *err);
void tp_backend_free(tp_backend *be);
/* tp_forward's contract on be's device; be NULL: tp_forward itself (the CPU path, unchanged).
 * c: the session's compute context, which runs the layers the device does not. */
int tp_backend_forward(tp_backend *be, tp_model *m, tp_compute *c, tp_kv *kv, const tp_batch *b, char *err);
/* Does be compute the mixture on the device (tp_batch.mix/probs; every layer and the head there)? */
bool tp_backend_device_mixture(const tp_backend *be);
int tp_backend_gpu_layers(const tp_backend *be);      /* 0 for NULL */
size_t tp_backend_bytes(const tp_backend *be);        /* allocated through Vulkan now (device + staging) */

#endif
