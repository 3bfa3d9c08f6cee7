/* kvcache.c: slot bookkeeping and K/V storage (see kvcache.h). */
#include "kv/kvcache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/common.h"
#include "kv/spill.h"
#include "tensor/dtype.h"

#define GB (1024.0 * 1024.0 * 1024.0)

size_t tp_kv_row_bytes(const tp_kv *kv) {
    switch (kv->type) {
    case TP_KV_F32: return (size_t)kv->kv_dim * 4;
    case TP_KV_F16: return (size_t)kv->kv_dim * 2;
    case TP_KV_Q8_0: return (size_t)kv->kv_dim / QK8_0 * sizeof(block_q8_0);
    }
    return 0;
}

size_t tp_kv_bytes_per_slot(const tp_kv *kv) {
    return 2 * (size_t)(kv->n_layers - kv->device_layers) * tp_kv_row_bytes(kv);
}

size_t tp_kv_bytes_used(const tp_kv *kv) { return (size_t)kv->n * tp_kv_bytes_per_slot(kv); }

tp_kv *tp_kv_new(int n_layers, int kv_dim, tp_kv_type type, int capacity, size_t max_bytes, char *err) {
    if (capacity <= 0) { tp_fail(err, "KV cache capacity must be positive (got %d)", capacity); return NULL; }
    if (type == TP_KV_Q8_0 && kv_dim % QK8_0) {
        tp_fail(err, "--kv-cache-type q8_0 needs a KV row length that is a multiple of 32 (this model's is %d)", kv_dim);
        return NULL;
    }
    tp_kv *kv = calloc(1, sizeof *kv);
    if (!kv) { tp_fail(err, "out of memory allocating the KV cache"); return NULL; }
    kv->n_layers = n_layers;
    kv->kv_dim = kv_dim;
    kv->type = type;
    kv->capacity = capacity;
    kv->max_slots = capacity;
    kv->max_bytes = max_bytes;
    kv->slots = calloc((size_t)capacity, sizeof *kv->slots);
    kv->k = calloc((size_t)n_layers, sizeof *kv->k);
    kv->v = calloc((size_t)n_layers, sizeof *kv->v);
    if (!kv->slots || !kv->k || !kv->v) {
        kv->n_layers = kv->k && kv->v ? n_layers : 0;
        tp_kv_free(kv);
        tp_fail(err, "out of memory allocating the KV cache's slot table (%d slots)", capacity);
        return NULL;
    }
    /* One anonymous mapping for every layer's K and V rows: its pages are zero and become
     * resident only when a slot is written (calloc would touch a small block to zero it), so
     * reserving the capacity costs nothing and the resident size follows the slots in use --
     * what the memory budget counts -- within one page per row array. */
    size_t layer_bytes = (size_t)capacity * tp_kv_row_bytes(kv);
    kv->map_bytes = 2 * (size_t)n_layers * layer_bytes;
    void *base = mmap(NULL, kv->map_bytes ? kv->map_bytes : 1, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) {
        kv->map = NULL;
        tp_kv_free(kv);
        tp_fail(err, "cannot reserve the KV cache: %d slots x %d layers (%.2fGB)", capacity, n_layers,
                2.0 * (double)layer_bytes * n_layers / GB);
        return NULL;
    }
    kv->map = base;
    for (int l = 0; l < n_layers; l++) {
        kv->k[l] = (char *)base + (size_t)l * layer_bytes;
        kv->v[l] = (char *)base + (size_t)(n_layers + l) * layer_bytes;
    }
    return kv;
}

void tp_kv_free(tp_kv *kv) {
    if (!kv) return;
    if (kv->map) munmap(kv->map, kv->map_bytes ? kv->map_bytes : 1);
    tp_kv_spill_free(kv->spill);
    free(kv->k);
    free(kv->v);
    free(kv->slots);
    free(kv);
}

void tp_kv_clear(tp_kv *kv) {
    kv->n = 0;
    kv->n_alive = 0;
}

int tp_kv_reserve(const tp_kv *kv, int n_new, int *which, char *err) {
    int need = kv->n + n_new;
    size_t per = tp_kv_bytes_per_slot(kv);
    bool too_many = need > kv->max_slots;
    bool too_big = kv->max_bytes && (size_t)need * per > kv->max_bytes;
    if (too_many) {
        if (which) *which = 1;
        return tp_fail(err,
                       "Cache token limit exceeded: %d > %d. Raise --max-cache-tokens (up to the model's context length), lower --max-tokens, "
                       "or raise --selection-threshold / lower --max-parallel-tokens for fewer tokens per step.",
                       need, kv->max_slots);
    }
    if (too_big) {
        char a[32], b[32];
        if (which) *which = 2;
        return tp_fail(err,
                       "Cache memory limit would be exceeded: %s > %s. Raise --max-memory-gb, lower "
                       "--max-tokens, raise --selection-threshold, or lower --max-parallel-tokens.",
                       tp_fmt_gb((double)need * (double)per, a, sizeof a), tp_fmt_gb((double)kv->max_bytes, b, sizeof b));
    }
    return 0;
}

int tp_kv_append(tp_kv *kv, int32_t token, int32_t pos, int32_t step) {
    if (kv->n >= kv->capacity) return -1;
    tp_slot *s = &kv->slots[kv->n];
    s->token = token;
    s->pos = pos;
    s->step = step;
    s->alive = true;
    s->row = kv->n;
    kv->n_alive++;
    return kv->n++;
}

void tp_kv_kill(tp_kv *kv, int slot) {
    if (slot < 0 || slot >= kv->n || !kv->slots[slot].alive) return;
    kv->slots[slot].alive = false;
    kv->n_alive--;
}

/* An offloaded cache: layer l's rows older than the hot ones, and any past the n in use, leave memory. */
static void drop_cold(tp_kv *kv, int l, int n) {
    size_t rb = tp_kv_row_bytes(kv);
    size_t cold = n > kv->hot_slots ? (size_t)(n - kv->hot_slots) * rb : 0;
    tp_kv_spill_drop(kv->spill, 2 * l, cold, (size_t)n * rb);
    tp_kv_spill_drop(kv->spill, 2 * l + 1, cold, (size_t)n * rb);
}

int tp_kv_compact(tp_kv *kv, int *map_out) {
    size_t rb = tp_kv_row_bytes(kv);
    int w = 0;
    for (int r = 0; r < kv->n; r++) {
        if (map_out) map_out[r] = kv->slots[r].alive ? w : -1;
        w += kv->slots[r].alive;
    }
    /* Rows one layer at a time, so an offloaded cache can let each layer's go right after. */
    for (int l = kv->device_layers; l < kv->n_layers; l++) {
        int to = 0;
        for (int r = 0; r < kv->n; r++) {
            if (!kv->slots[r].alive) continue;
            if (to != r) {
                memcpy((char *)kv->k[l] + (size_t)to * rb, (char *)kv->k[l] + (size_t)r * rb, rb);
                memcpy((char *)kv->v[l] + (size_t)to * rb, (char *)kv->v[l] + (size_t)r * rb, rb);
            }
            to++;
        }
        if (kv->spill) drop_cold(kv, l, w);
    }
    for (int r = 0, to = 0; r < kv->n; r++)
        if (kv->slots[r].alive) kv->slots[to++] = kv->slots[r];
    int removed = kv->n - w;
    kv->n = w;
    return removed;
}

void tp_kv_set_device_layers(tp_kv *kv, int n) {
    if (n < 0) n = 0;
    if (n > kv->n_layers) n = kv->n_layers;
    for (int l = 0; l < n; l++) kv->k[l] = kv->v[l] = NULL; /* the mapping stays whole, untouched there */
    kv->device_layers = n;
}

/* ------------------------------------------------------------ --kv-offload -- */

int tp_kv_offload(tp_kv *kv, const char *dir, char *err) {
    if (kv->spill) return 0;
    if (kv->n) return tp_fail(err, "internal: offloading a KV cache that is in use");
    if (kv->device_layers) return tp_fail(err, "internal: --kv-offload of a KV cache kept on a GPU");
    size_t layer_bytes = (size_t)kv->capacity * tp_kv_row_bytes(kv);
    tp_kv_spill *sp = tp_kv_spill_new(dir, 2 * kv->n_layers, layer_bytes, err);
    if (!sp) return -1;
    /* the in-memory rows were never written: give their (untouched) mapping back */
    if (kv->map) munmap(kv->map, kv->map_bytes ? kv->map_bytes : 1);
    kv->map = NULL;
    kv->map_bytes = 0;
    for (int l = 0; l < kv->n_layers; l++) {
        kv->k[l] = tp_kv_spill_region(sp, 2 * l);
        kv->v[l] = tp_kv_spill_region(sp, 2 * l + 1);
    }
    kv->spill = sp;
    kv->hot_slots = kv->capacity;
    return 0;
}

void tp_kv_set_hot_slots(tp_kv *kv, int n) { kv->hot_slots = n < 0 ? 0 : n; }
int tp_kv_resident_slots(const tp_kv *kv) { return kv->spill ? kv->hot_slots : -1; }
size_t tp_kv_spill_bytes(const tp_kv *kv) { return kv->spill ? tp_kv_spill_disk_bytes(kv->spill) : 0; }

int tp_kv_prepare(tp_kv *kv, int n_new, char *err) {
    if (!kv->spill) return 0;
    long n = (long)kv->n + n_new;
    if (n > kv->capacity) n = kv->capacity;
    return tp_kv_spill_reserve(kv->spill, (size_t)n * tp_kv_row_bytes(kv), err);
}

void tp_kv_layer_read(tp_kv *kv, int l) {
    if (kv->spill) drop_cold(kv, l, kv->n);
}

void tp_kv_truncate(tp_kv *kv, int n) {
    if (n < 0) n = 0;
    for (int s = n; s < kv->n; s++) kv->n_alive -= kv->slots[s].alive;
    if (n < kv->n) kv->n = n;
}

/* Q8_0 rows: the same rounding as ggml's quantize_row_q8_0 reference. */
static void store_row(const tp_kv *kv, void *dst, const float *src) {
    switch (kv->type) {
    case TP_KV_F32: memcpy(dst, src, (size_t)kv->kv_dim * 4); break;
    case TP_KV_F16: {
        uint16_t *d = dst;
        for (int i = 0; i < kv->kv_dim; i++) d[i] = tp_f32_to_f16(src[i]);
        break;
    }
    case TP_KV_Q8_0: tp_quantize_row(TP_Q8_0, src, dst, (size_t)kv->kv_dim); break;
    }
}

void tp_kv_store(tp_kv *kv, int l, int s, const float *k, const float *v) {
    size_t rb = tp_kv_row_bytes(kv);
    store_row(kv, (char *)kv->k[l] + (size_t)s * rb, k);
    store_row(kv, (char *)kv->v[l] + (size_t)s * rb, v);
}

void tp_kv_load(const tp_kv *kv, const void *row, int off, int len, float *out) {
    switch (kv->type) {
    case TP_KV_F32: memcpy(out, (const float *)row + off, (size_t)len * 4); break;
    case TP_KV_F16: {
        const uint16_t *r = (const uint16_t *)row + off;
        for (int i = 0; i < len; i++) out[i] = tp_f16_to_f32(r[i]);
        break;
    }
    case TP_KV_Q8_0: {
        const block_q8_0 *b = row;
        for (int i = 0; i < len; i++) {
            int e = off + i;
            out[i] = tp_f16_to_f32(b[e / QK8_0].d) * (float)b[e / QK8_0].qs[e % QK8_0];
        }
        break;
    }
    }
}
