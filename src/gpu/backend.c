/* backend.c: the model's device and a session's backend (gpu/backend.h) over the Vulkan code
 * of src/gpu; the CPU is tp_forward itself. */
#include "gpu/backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "gpu/gpu.h"

struct tp_backend {
    tp_device *dev;
    tp_gpu_seq *seq;
    int layers;
    bool head;
};

/* KV rows a model opened with adapt leaves room for on the device, per offloaded layer, besides
 * a run's step buffers: a session of up to this many slots then still fits next to the weights. */
#define ADAPT_ROOM_SLOTS 512

const char *tp_device_resolve(const char *spec, bool auto_cpu, char *buf, size_t cap, char *err) {
    if (!spec || !*spec) spec = "auto";
    if (auto_cpu && !strcmp(spec, "auto")) {
        snprintf(buf, cap, "cpu");
        return buf;
    }
    int idx = tp_gpu_resolve(spec, err);
    if (idx == -2) return NULL;
    if (idx == TP_DEVICE_CPU) snprintf(buf, cap, "cpu");
    else snprintf(buf, cap, "gpu:%d", idx);
    return buf;
}

int tp_device_open(const tp_model *m, const tp_device_opts *o, tp_device **out, char *err) {
    *out = NULL;
    const char *spec = o->device && *o->device ? o->device : "auto";
    bool is_auto = !strcmp(spec, "auto");
    if (is_auto && o->auto_cpu) return 0;
    int idx = tp_gpu_resolve(spec, err);
    if (idx == -2) return -1;
    const tp_hparams *hp = &m->hp;
    int L = hp->n_layers;
    int layers = o->gpu_layers < 0 || o->gpu_layers > L ? L : o->gpu_layers;
    if (idx == TP_DEVICE_CPU || layers == 0) return 0;

    tp_gpu *g = tp_gpu_open(idx, err);
    if (!g) return -1;
    /* With adapt: the largest layer count whose weights fit the device with room left for a run
     * (KV rows of ADAPT_ROOM_SLOTS slots per layer, the step buffers); without: the count asked. */
    int room_slots = hp->n_ctx < ADAPT_ROOM_SLOTS ? hp->n_ctx : ADAPT_ROOM_SLOTS;
    for (;;) {
        size_t wbytes = tp_gpu_weights_bytes_for(m, layers);
        size_t run = o->adapt ? tp_gpu_seq_bytes_for(m, layers, room_slots, 0, true, o->kv_type, NULL) : 0;
        tp_gpu_mem st;
        tp_gpu_mem_get(g, &st);
        bool over_limit = o->max_bytes && wbytes > o->max_bytes;
        bool fits = wbytes + run <= st.free_bytes && !over_limit;
        if (fits) break;
        if (!o->adapt) {
            char a[32], b[32], c[32];
            if (over_limit)
                tp_fail(err,
                        "model needs %s of weights on Vulkan device %d (%s) for %d layer%s%s, over the critical level "
                        "(95%%) of --max-memory-gb %s: raise --max-memory-gb, lower --gpu-layers, use a smaller or "
                        "quantized model, or --memory-policy adapt to offload fewer layers",
                        tp_fmt_gb((double)wbytes, a, sizeof a), idx, tp_gpu_name(g), layers, layers == 1 ? "" : "s",
                        layers == L ? " and the output head" : "", tp_fmt_gb((double)o->max_bytes / 0.95, b, sizeof b));
            else
                tp_fail(err,
                        "model needs %s of weights on Vulkan device %d (%s) for %d layer%s%s but %s of its %s is free: "
                        "lower --gpu-layers, use a smaller or quantized model, --device cpu, or --memory-policy adapt "
                        "to offload fewer layers",
                        tp_fmt_gb((double)wbytes, a, sizeof a), idx, tp_gpu_name(g), layers, layers == 1 ? "" : "s",
                        layers == L ? " and the output head" : "", tp_fmt_gb((double)st.free_bytes, b, sizeof b),
                        tp_fmt_gb((double)st.total_bytes, c, sizeof c));
            tp_gpu_close(g);
            return -1;
        }
        if (--layers == 0) { /* adapt, and not one layer fits: the CPU runs it all */
            tp_gpu_close(g);
            return 0;
        }
    }
    tp_device *d = calloc(1, sizeof *d);
    if (!d) {
        tp_gpu_close(g);
        return tp_fail(err, "out of memory opening Vulkan device %d", idx);
    }
    d->weights = tp_gpu_weights_new(g, m, layers, o->max_bytes, err);
    if (!d->weights) {
        tp_gpu_close(g);
        free(d);
        return -1;
    }
    d->gpu = g;
    d->index = idx;
    d->layers = layers;
    d->head = tp_gpu_weights_has_head(d->weights);
    d->weight_bytes = tp_gpu_weights_bytes(d->weights);
    d->host_released = tp_gpu_weights_released(d->weights);
    d->memory_in_rss = tp_gpu_is_software(g);
    snprintf(d->name, sizeof d->name, "gpu:%d %s", idx, tp_gpu_name(g));
    *out = d;
    return 0;
}

void tp_device_free(tp_device *d) {
    if (!d) return;
    tp_gpu_weights_free(d->weights); /* closes the device when it counted itself a user */
    tp_gpu_close(d->gpu);
    free(d);
}

size_t tp_device_free_bytes(const tp_device *d) {
    tp_gpu_mem st;
    tp_gpu_mem_get(d->gpu, &st);
    return st.free_bytes;
}

size_t tp_device_total_bytes(const tp_device *d) {
    tp_gpu_mem st;
    tp_gpu_mem_get(d->gpu, &st);
    return st.total_bytes;
}

size_t tp_backend_bytes_for(const tp_device *d, const tp_model *m, int layers, int slots, bool attn_summary,
                            tp_kv_type kv_type, size_t *device_bytes) {
    (void)d;
    size_t staging = 0, dev = layers > 0 ? tp_gpu_seq_bytes_for(m, layers, slots, 0, attn_summary, kv_type, &staging) : 0;
    if (device_bytes) *device_bytes = dev;
    return dev + staging;
}

tp_backend *tp_backend_new(tp_device *d, const tp_model *m, tp_kv *kv, int layers, bool attn_summary, char *err) {
    if (!d || layers < 1 || layers > d->layers) {
        tp_fail(err, "internal: a GPU backend of %d layers on a device holding %d", layers, d ? d->layers : 0);
        return NULL;
    }
    tp_backend *be = calloc(1, sizeof *be);
    if (!be) {
        tp_fail(err, "out of memory creating the GPU backend");
        return NULL;
    }
    tp_gpu_seq_opts so = { .max_slots = kv->capacity, .attn_summary = attn_summary, .n_layers = layers };
    be->seq = tp_gpu_seq_new(d->weights, m, kv, &so, err);
    if (!be->seq) {
        free(be);
        return NULL;
    }
    be->dev = d;
    be->layers = layers;
    be->head = d->head && layers == m->hp.n_layers;
    return be;
}

void tp_backend_free(tp_backend *be) {
    if (!be) return;
    tp_gpu_seq_free(be->seq);
    free(be);
}

int tp_backend_forward(tp_backend *be, tp_model *m, tp_compute *c, tp_kv *kv, const tp_batch *b, char *err) {
    if (!be) return tp_forward(m, c, kv, b, err);
    return tp_gpu_forward(be->seq, c, kv, b, err);
}

bool tp_backend_device_mixture(const tp_backend *be) { return be && be->head; }
int tp_backend_gpu_layers(const tp_backend *be) { return be ? be->layers : 0; }
size_t tp_backend_bytes(const tp_backend *be) {
    return be ? tp_gpu_seq_device_bytes(be->seq) + tp_gpu_seq_staging_bytes(be->seq) : 0;
}
