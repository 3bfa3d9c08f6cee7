/* kvcache.h: the key/value cache: one slot per fed token, with TEMPO bookkeeping.
 *
 * A slot is one cached token: its id, logical (RoPE) position, the TEMPO step that
 * fed it (-1 for prompt tokens) and whether it is alive. Slots are stored in the
 * order they were appended ("physical order"). Keys and values are stored per
 * layer as rows of kv_dim (= n_kv_heads * head_dim) in f32 (default) or f16.
 *
 * Limits: the cache refuses to grow past max_slots slots or max_bytes of storage
 * (the messages name both numbers). Pruned (dead) slots can be reclaimed with
 * tp_kv_compact, which moves live slots down without changing their contents, so
 * no result changes.
 *
 * Storage is reserved once for the capacity (an anonymous mapping: pages become resident only
 * as slots are written); the per-token path never allocates.
 *
 * Ownership: a session (src/tempo/session.c) owns its cache and is the only code that
 * changes its slot table (append through the forward pass, kill, compact, truncate).
 */
#ifndef TEMPO_KVCACHE_H
#define TEMPO_KVCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { TP_KV_F32 = 0, TP_KV_F16 = 1, TP_KV_Q8_0 = 2 } tp_kv_type;

typedef struct {
    int32_t token;
    int32_t pos;   /* logical position (RoPE) */
    int32_t step;  /* TEMPO step that fed it; -1 = prompt */
    bool alive;
    int32_t row;   /* storage row of its K/V on a device (src/gpu): rows there never move, and
                    * compaction carries this with the slot; the host rows are the slot's index */
} tp_slot;

typedef struct tp_kv {
    int n_layers, kv_dim;
    tp_kv_type type;
    int capacity;          /* slots allocated (<= max_slots) */
    int max_slots;         /* refuse to grow past this many slots */
    size_t max_bytes;      /* refuse to grow past this much K+V storage (0 = no limit) */
    int n;                 /* slots in use (alive or dead, not yet compacted) */
    int n_alive;
    tp_slot *slots;        /* [capacity] */
    void **k, **v;         /* [n_layers] -> [capacity][kv_dim] of type */
    void *map;             /* the one mapping every k[l] and v[l] points into (NULL when offloaded) */
    size_t map_bytes;
    /* --kv-offload (tp_kv_offload): the rows live in memory-mapped spill files (kv/spill.h); the
     * newest hot_slots rows stay in memory, older ones leave it after each layer's attention pass
     * (tp_kv_layer_read) and are paged back in by the next read */
    struct tp_kv_spill *spill;
    int hot_slots;
    /* Layers [0, device_layers) keep their K/V on a GPU (tp_kv_set_device_layers): their host
     * rows are never written (k[l] and v[l] are NULL) and cost nothing here. */
    int device_layers;
} tp_kv;

/* Resident bytes a cache may hold beyond n_slots x tp_kv_bytes_per_slot: the partly used last
 * page of each layer's K and V rows. */
#define TP_KV_PAGE_SLACK(n_layers) ((size_t)2 * (size_t)(n_layers) * 4096)

/* capacity: slots to reserve (usually min(n_ctx, max_cache_tokens)). */
tp_kv *tp_kv_new(int n_layers, int kv_dim, tp_kv_type type, int capacity, size_t max_bytes, char *err);
void tp_kv_free(tp_kv *kv);
void tp_kv_clear(tp_kv *kv);

size_t tp_kv_bytes_per_slot(const tp_kv *kv);      /* K+V over the layers kept here (all but a device's) */
size_t tp_kv_bytes_used(const tp_kv *kv);          /* n * bytes_per_slot */

/* Check that n_new more slots fit (it changes nothing: reclaiming dead slots first is the
 * owner's decision). 0 when they fit; -1 with the spec's message in err, and *which set to
 * 1 (token limit) or 2 (memory limit). */
int tp_kv_reserve(const tp_kv *kv, int n_new, int *which, char *err);

/* Append a slot's metadata; K/V rows are written by the forward pass via the row pointers below. */
int tp_kv_append(tp_kv *kv, int32_t token, int32_t pos, int32_t step);

/* Mark a slot dead (pruned). It stays in place until tp_kv_compact. */
void tp_kv_kill(tp_kv *kv, int slot);
/* Remove dead slots; map_out[old] = new index or -1 (optional, n entries). Returns slots removed. */
int tp_kv_compact(tp_kv *kv, int *map_out);
/* Drop every slot from n on (the newest ones): undoes appends exactly, since nothing older
 * depends on them. */
void tp_kv_truncate(tp_kv *kv, int n);

/* --kv-offload. Move an empty cache's storage into spill files in dir (0, or -1 with err naming
 * --kv-offload and dir; the cache is unchanged then). */
int tp_kv_offload(tp_kv *kv, const char *dir, char *err);
/* How many of the newest slots stay in memory (the memory budget decides). */
void tp_kv_set_hot_slots(tp_kv *kv, int n);
/* hot_slots of an offloaded cache, -1 for an in-memory one. */
int tp_kv_resident_slots(const tp_kv *kv);
/* Before n_new slots are appended: disk blocks for them (no-op in memory). 0, or -1 with err
 * (a full disk). */
int tp_kv_prepare(tp_kv *kv, int n_new, char *err);
/* After layer l's attention has read the cache: its rows older than the hot ones leave memory
 * (no-op in memory). */
void tp_kv_layer_read(tp_kv *kv, int l);
/* Disk bytes of the spill files (0 in memory). */
size_t tp_kv_spill_bytes(const tp_kv *kv);

/* The first n layers' K/V live on a GPU (gpu/backend.h): their host rows are given up (never
 * touched, so never resident) and compaction leaves those layers to the device, which keeps
 * each slot's rows in place (tp_slot.row). On an empty cache, not offloaded (--kv-offload). */
void tp_kv_set_device_layers(tp_kv *kv, int n);

/* Write/read one row (kv_dim values) of layer l, slot s. */
void tp_kv_store(tp_kv *kv, int l, int s, const float *k, const float *v);
/* Pointer to the raw row (type-specific) for the attention kernel. */
static inline const void *tp_kv_krow(const tp_kv *kv, int l, int s);
static inline const void *tp_kv_vrow(const tp_kv *kv, int l, int s);
size_t tp_kv_row_bytes(const tp_kv *kv);
/* out[0..len) = elements off..off+len of a stored row, as f32. */
void tp_kv_load(const tp_kv *kv, const void *row, int off, int len, float *out);

static inline const void *tp_kv_krow(const tp_kv *kv, int l, int s) {
    return (const char *)kv->k[l] + (size_t)s * tp_kv_row_bytes(kv);
}
static inline const void *tp_kv_vrow(const tp_kv *kv, int l, int s) {
    return (const char *)kv->v[l] + (size_t)s * tp_kv_row_bytes(kv);
}

#endif
