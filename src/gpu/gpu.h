/* gpu.h: the Vulkan compute backend: devices, a model's weights on a device,
 * and a sequence state (KV cache + scratch) on which batches run.
 *
 * Ownership follows the model/session split:
 *   tp_gpu          an opened Vulkan device, shared by everything in the process
 *                   that uses that device (reference counted).
 *   tp_gpu_weights  one model's weights uploaded to a device: read-only after
 *                   tp_gpu_weights_new, shareable by any number of sequences.
 *   tp_gpu_seq      one sequence's state: the KV cache rows of the offloaded
 *                   layers, the scratch buffers and the command buffer. One user
 *                   at a time (like tp_kv, which holds its slot bookkeeping).
 *
 * tp_gpu_forward has tp_forward's contract (model/model.h): the same batch, the
 * same per-token positions, visibility rules, explicit masks, pruned slots and
 * attention summary, the same new KV slots. The first n_layers layers run on
 * the device; when the device holds every layer, the output head, the softmax
 * and the TEMPO mixture run there too and only the step's distribution (or the
 * logits asked for) comes back. Otherwise the hidden states come back and the
 * remaining layers run on the CPU (tp_forward_layers). A batch of up to
 * max_batch tokens is ONE command-buffer submission.
 *
 * Device selection (--device): "cpu"; "auto" (default): the best hardware GPU
 * (discrete, then integrated, then virtual) that has what the backend needs,
 * else the CPU; "gpu": the best hardware GPU, an error when there is none;
 * "gpu:N": Vulkan device N as `tempo devices` lists it, software devices
 * (Mesa's lavapipe) included. Software devices are never chosen by "auto" or
 * "gpu" unless the environment variable TEMPO_VULKAN_ALLOW_CPU=1 is set (what
 * the tests and CI use to run on lavapipe without knowing its index).
 *
 * Memory: every byte the backend allocates through Vulkan is counted
 * (tp_gpu_mem): weights, KV cache, scratch and host-visible staging. Each
 * allocation is checked against the device's memory first (its heap size, or
 * VK_EXT_memory_budget's budget when the driver has it, lowered by
 * TEMPO_VULKAN_MEMORY_MB when set: a way to share a GPU, and how the tests play
 * a small device) and fails with a one-line message naming the device, the
 * size and what is free, never with a driver crash.
 *
 * Builds without Vulkan (make VULKAN=0) keep this interface: tp_gpu_built()
 * is false and every constructor fails with a message saying so.
 */
#ifndef TEMPO_GPU_H
#define TEMPO_GPU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/matmul.h"
#include "kv/kvcache.h"
#include "model/model.h"

/* Built with the Vulkan backend? */
bool tp_gpu_built(void);

/* ---------------------------------------------------------------- devices -- */
typedef struct {
    int index;              /* --device gpu:N */
    char name[256];
    const char *kind;       /* "discrete", "integrated", "virtual", "software", "other" */
    bool software;          /* runs on the CPU (lavapipe, SwiftShader) */
    bool usable;            /* has what the backend needs (Vulkan 1.2, buffer device address, int64, subgroup arithmetic) */
    char missing[128];      /* what it lacks when !usable */
    uint64_t memory_bytes;  /* device-local memory (the largest device-local heap) */
    uint64_t free_bytes;    /* what may still be allocated on it (see free_known) */
    bool free_known;        /* from VK_EXT_memory_budget; otherwise memory_bytes minus this process's allocations */
    char api[16];           /* "1.3.230" */
    char driver[96];
} tp_gpu_device_info;

/* Fill up to cap entries; returns the number of Vulkan devices (0 when there is
 * no Vulkan loader or driver), or -1 with err. */
int tp_gpu_devices(tp_gpu_device_info *out, int cap, char *err);

#define TP_DEVICE_CPU (-1)
/* Resolve a --device value to a device index, TP_DEVICE_CPU, or -2 with err
 * ("gpu" on a machine without a usable hardware GPU, an index that does not
 * exist or lacks a feature, a malformed value). */
int tp_gpu_resolve(const char *spec, char *err);
/* Is spec well formed (auto, cpu, gpu, gpu:N)? */
bool tp_gpu_spec_valid(const char *spec);

/* ----------------------------------------------------------------- device -- */
typedef struct tp_gpu tp_gpu;

tp_gpu *tp_gpu_open(int index, char *err);
void tp_gpu_close(tp_gpu *g);
const char *tp_gpu_name(const tp_gpu *g);
int tp_gpu_index(const tp_gpu *g);
/* A software device (lavapipe): its "device" memory is this process's own heap. */
bool tp_gpu_is_software(const tp_gpu *g);

/* Bytes allocated through Vulkan, by kind, now and at the peak. */
enum { TP_GPU_MEM_WEIGHTS = 0, TP_GPU_MEM_KV = 1, TP_GPU_MEM_WORK = 2, TP_GPU_MEM_STAGING = 3, TP_GPU_MEM_KINDS = 4 };
typedef struct {
    uint64_t by_kind[TP_GPU_MEM_KINDS]; /* now */
    uint64_t device_bytes;              /* device-local allocations now (weights, KV, work) */
    uint64_t host_bytes;                /* host-visible staging now */
    uint64_t peak_bytes;                /* largest device_bytes + host_bytes seen */
    uint64_t total_bytes;               /* the device's memory (after TEMPO_VULKAN_MEMORY_MB) */
    uint64_t free_bytes;                /* what is still free on the device for us */
} tp_gpu_mem;
void tp_gpu_mem_get(const tp_gpu *g, tp_gpu_mem *out);

/* ---------------------------------------------------------------- weights -- */
typedef struct tp_gpu_weights tp_gpu_weights;

/* Upload layers [0, n_layers) of m (n_layers < 0 or >= the model's: every layer,
 * the output norm and the output matrix). Weight types F32, F16, BF16, Q8_0,
 * Q4_0, Q4_K, Q6_K stay as they are in the file (dequantized in the shaders);
 * any other type is converted to F16 on upload. max_bytes (0: no limit): the
 * most device memory the weights may take. NULL with err when they do not fit
 * the device or max_bytes ("... needs X GB on device D but Y GB is free"). */
tp_gpu_weights *tp_gpu_weights_new(tp_gpu *g, const tp_model *m, int n_layers, size_t max_bytes, char *err);
void tp_gpu_weights_free(tp_gpu_weights *w);
int tp_gpu_weights_layers(const tp_gpu_weights *w);      /* layers on the device */
bool tp_gpu_weights_has_head(const tp_gpu_weights *w);   /* output norm and matrix too */
size_t tp_gpu_weights_bytes(const tp_gpu_weights *w);    /* device bytes */
/* Host bytes of the model file's mapping no longer resident: the uploaded
 * tensors' pages are dropped after upload (the embedding table, which the host
 * still reads, excepted). */
size_t tp_gpu_weights_released(const tp_gpu_weights *w);
tp_gpu *tp_gpu_weights_device(const tp_gpu_weights *w);
/* Device bytes the weights of layers [0, n) (+ the head when n >= n_layers)
 * would take, without uploading anything (for choosing n). */
size_t tp_gpu_weights_bytes_for(const tp_model *m, int n_layers);

/* --------------------------------------------------------------- sequence -- */
typedef struct tp_gpu_seq tp_gpu_seq;

typedef struct {
    int max_slots;      /* KV rows reserved on the device (<= kv->capacity); <= 0: kv->capacity */
    int max_batch;      /* tokens per submission (default 64, at most the CPU's max_batch with partial offload) */
    bool attn_summary;  /* batches may ask for the attention summary (reserves its buffer) */
    size_t max_bytes;   /* the most device memory this sequence may take (0: no limit) */
    int n_layers;       /* layers this sequence runs on the device (1..the weights'); <= 0: all the weights have.
                         * Fewer: the rest run on the CPU (memory_policy adapt when the KV rows do not fit). */
} tp_gpu_seq_opts;

/* A sequence state for kv on the weights' device. kv must have been made for this model (layers,
 * KV width), be empty and of type f32 or f16. The host rows of the offloaded layers are given up
 * (tp_kv_set_device_layers): their K/V live on the device only. NULL with err when the KV rows
 * and scratch do not fit. */
tp_gpu_seq *tp_gpu_seq_new(tp_gpu_weights *w, const tp_model *m, tp_kv *kv, const tp_gpu_seq_opts *o, char *err);
void tp_gpu_seq_free(tp_gpu_seq *s);
/* Device bytes the sequence holds (KV rows + scratch; its staging buffers are host memory). */
size_t tp_gpu_seq_device_bytes(const tp_gpu_seq *s);
size_t tp_gpu_seq_kv_bytes(const tp_gpu_seq *s);
int tp_gpu_seq_max_slots(const tp_gpu_seq *s);
/* Device bytes a sequence with these options would take (KV rows + scratch) for a model with
 * n_layers offloaded layers, each buffer rounded up to 4 KB as drivers may round; *staging (may
 * be NULL): the host-visible staging bytes it would take besides. */
size_t tp_gpu_seq_bytes_for(const tp_model *m, int n_layers, int max_slots, int max_batch, bool attn_summary,
                            tp_kv_type kv_type, size_t *staging);
/* Bytes the sequence's staging buffers hold (host-visible memory). */
size_t tp_gpu_seq_staging_bytes(const tp_gpu_seq *s);

/* tp_forward's contract (model/model.h) on the device; also fills b->probs (the TEMPO mixture
 * of b->mix) when asked, which needs every layer and the head on the device. c: the compute
 * context that runs the layers the device does not (tp_forward_layers); may be NULL when the
 * device runs them all. */
int tp_gpu_forward(tp_gpu_seq *s, tp_compute *c, tp_kv *kv, const tp_batch *b, char *err);

/* Timing of the last tp_gpu_forward (seconds): recording + submission + wait. */
double tp_gpu_seq_last_wait_s(const tp_gpu_seq *s);

/* ------------------------------------------------------ kernel checks (tests) --
 * Each runs one kernel on the device with fresh buffers and returns its
 * result, for comparison with the CPU kernels. 0, or -1 with err. */
/* y[b][r] = sum_c W[r][c] x[b][c] (the weight as given: any GPU type); with
 * x2, the input is silu(x) * x2 (the SwiGLU the FFN's down product applies as
 * it reads its input). */
int tp_gpu_check_matmul(tp_gpu *g, const tp_weight *w, const float *x, const float *x2, int nb, float *y, char *err);
/* out[b] = rmsnorm(x[b]) * w, nb rows of n. */
int tp_gpu_check_rmsnorm(tp_gpu *g, const float *x, const float *w, int n, int nb, float eps, float *out, char *err);
/* In place: probs[i] = sum_r mix[r] softmax(logits[r])[i], nb rows of n. */
int tp_gpu_check_mixture(tp_gpu *g, const float *logits, const float *mix, int nb, int n, float *probs, char *err);
/* Activation quantization as the CPU's matmul does it: kind 1 = Q8_0 groups of
 * 32 (d rounded to f16), 2 = Q8_K blocks of 256. q: n int8, d and sum: one per 32. */
int tp_gpu_check_quant(tp_gpu *g, int kind, const float *x, int n, int8_t *q, float *d, float *m, char *err);

/* Device memory bandwidth (bytes/s): the best of `reps` reads of a buffer of
 * `bytes` by a reduction kernel (the roofline of bench/gpu.sh). */
double tp_gpu_read_bandwidth(tp_gpu *g, size_t bytes, int reps, char *err);

/* Where the device's time goes (bench/gpu_bench). With profiling on, every
 * dispatch and copy of a submission is followed by a GPU timestamp and the gaps
 * between them are summed per shader; the host's time recording a submission
 * and waiting for it is summed beside. Turn it on before the sessions whose
 * forwards it should see are created (their command buffers get the query
 * pool then); reading returns the sums since the last read and clears them. */
#define TP_GPU_PROF_ROWS 12
typedef struct {
    const char *name[TP_GPU_PROF_ROWS]; /* shader, or "copy" */
    double gpu_s[TP_GPU_PROF_ROWS];
    uint64_t count[TP_GPU_PROF_ROWS];
    int n;
    uint64_t submits;
    double span_s;   /* first to last timestamp of each submission, summed */
    double record_s; /* host: beginning the recording to submitting it */
    double wait_s;   /* host: submitting to the fence */
} tp_gpu_profile;
void tp_gpu_profile_set(tp_gpu *g, bool on);
void tp_gpu_profile_read(tp_gpu *g, tp_gpu_profile *out);

#endif
