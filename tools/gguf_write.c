/* gguf_write.c: GGUF v3 writer (tests and the benchmark make their own files).
 *
 * Metadata values are serialized as they are set; tensors are laid out at save
 * time, each at an offset that is a multiple of the alignment, zero-padded.
 * Invalid input is remembered (first error wins) and reported by save, so that
 * callers can build a file with a chain of calls and check once.
 */
#include "tools/gguf_write.h"
#include "tools/xalloc.h"

#include "core/common.h"
#include "tensor/dtype.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GGUF_W_NAME_MAX 63 /* ggml's GGML_MAX_NAME is 64 including the NUL */

typedef struct {
    uint8_t *p;
    size_t len, cap;
} wbuf;

static void wb_put(wbuf *b, const void *src, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n) cap *= 2;
        b->p = tool_xrealloc(b->p, cap);
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, src, n);
    b->len += n;
}
static void wb_u32(wbuf *b, uint32_t v) { wb_put(b, &v, 4); }
static void wb_u64(wbuf *b, uint64_t v) { wb_put(b, &v, 8); }
static void wb_str(wbuf *b, const char *s, size_t n) {
    wb_u64(b, n);
    wb_put(b, s, n);
}

typedef struct {
    char *key;
    wbuf val; /* value type (u32) followed by the value */
} wkv;

typedef struct {
    char name[GGUF_W_NAME_MAX + 1];
    uint32_t type, n_dims;
    uint64_t ne[4];
    uint64_t nbytes, offset;
    const void *data; /* copied (owned) or referenced data; NULL when fill is used */
    bool owned;
    gguf_row_fn fill;
    void *fill_ctx;
} wtensor;

struct gguf_writer {
    uint32_t alignment;
    wkv *kv;
    size_t n_kv, cap_kv;
    wtensor *t;
    size_t n_t, cap_t;
    char error[TP_ERR_LEN]; /* first invalid input, reported by save */
};

static void w_error(gguf_writer *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void w_error(gguf_writer *w, const char *fmt, ...) {
    if (w->error[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->error, sizeof w->error, fmt, ap);
    va_end(ap);
}

gguf_writer *tp_gguf_writer_new(uint32_t alignment) {
    gguf_writer *w = tool_xcalloc(1, sizeof *w);
    w->alignment = alignment ? alignment : 32;
    if (w->alignment & (w->alignment - 1)) w_error(w, "alignment %u is not a power of two", alignment);
    return w;
}

void tp_gguf_writer_free(gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].val.p);
    }
    free(w->kv);
    for (size_t i = 0; i < w->n_t; i++)
        if (w->t[i].owned) free((void *)w->t[i].data);
    free(w->t);
    free(w);
}

/* The value buffer for key: a fresh one, or the existing key's (emptied) to replace it. */
static wbuf *kv_slot(gguf_writer *w, const char *key) {
    if (!key) {
        w_error(w, "metadata key is NULL");
        return NULL;
    }
    if (strlen(key) > 65535) {
        w_error(w, "metadata key '%.40s...' is longer than 65535 bytes", key);
        return NULL;
    }
    for (size_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kv[i].key, key) == 0) {
            w->kv[i].val.len = 0;
            return &w->kv[i].val;
        }
    if (w->n_kv == w->cap_kv) {
        w->cap_kv = w->cap_kv ? 2 * w->cap_kv : 16;
        w->kv = tool_xrealloc(w->kv, w->cap_kv * sizeof *w->kv);
    }
    wkv *e = &w->kv[w->n_kv++];
    e->key = tool_xstrdup(key);
    memset(&e->val, 0, sizeof e->val);
    return &e->val;
}

static void w_scalar(gguf_writer *w, const char *key, uint32_t type, const void *v, size_t n) {
    wbuf *b = kv_slot(w, key);
    if (!b) return;
    wb_u32(b, type);
    wb_put(b, v, n);
}

void tp_gguf_w_u8(gguf_writer *w, const char *key, uint8_t v) { w_scalar(w, key, GGUF_U8, &v, 1); }
void tp_gguf_w_i8(gguf_writer *w, const char *key, int8_t v) { w_scalar(w, key, GGUF_I8, &v, 1); }
void tp_gguf_w_u16(gguf_writer *w, const char *key, uint16_t v) { w_scalar(w, key, GGUF_U16, &v, 2); }
void tp_gguf_w_i16(gguf_writer *w, const char *key, int16_t v) { w_scalar(w, key, GGUF_I16, &v, 2); }
void tp_gguf_w_u32(gguf_writer *w, const char *key, uint32_t v) { w_scalar(w, key, GGUF_U32, &v, 4); }
void tp_gguf_w_i32(gguf_writer *w, const char *key, int32_t v) { w_scalar(w, key, GGUF_I32, &v, 4); }
void tp_gguf_w_f32(gguf_writer *w, const char *key, float v) { w_scalar(w, key, GGUF_F32, &v, 4); }
void tp_gguf_w_u64(gguf_writer *w, const char *key, uint64_t v) { w_scalar(w, key, GGUF_U64, &v, 8); }
void tp_gguf_w_i64(gguf_writer *w, const char *key, int64_t v) { w_scalar(w, key, GGUF_I64, &v, 8); }
void tp_gguf_w_f64(gguf_writer *w, const char *key, double v) { w_scalar(w, key, GGUF_F64, &v, 8); }
void tp_gguf_w_bool(gguf_writer *w, const char *key, bool v) {
    uint8_t b = v ? 1 : 0;
    w_scalar(w, key, GGUF_BOOL, &b, 1);
}

void tp_gguf_w_str(gguf_writer *w, const char *key, const char *v) {
    wbuf *b = kv_slot(w, key);
    if (!b) return;
    wb_u32(b, GGUF_STRING);
    wb_str(b, v ? v : "", v ? strlen(v) : 0);
}

static size_t scalar_bytes(uint32_t t) {
    switch (t) {
    case GGUF_U8: case GGUF_I8: case GGUF_BOOL: return 1;
    case GGUF_U16: case GGUF_I16: return 2;
    case GGUF_U32: case GGUF_I32: case GGUF_F32: return 4;
    case GGUF_U64: case GGUF_I64: case GGUF_F64: return 8;
    default: return 0;
    }
}

void tp_gguf_w_arr(gguf_writer *w, const char *key, uint32_t elem_type, const void *v, size_t n) {
    size_t esz = scalar_bytes(elem_type);
    if (!esz) {
        w_error(w, "metadata key '%s': tp_gguf_w_arr needs a scalar element type, got %u", key ? key : "",
                elem_type);
        return;
    }
    wbuf *b = kv_slot(w, key);
    if (!b) return;
    wb_u32(b, GGUF_ARRAY);
    wb_u32(b, elem_type);
    wb_u64(b, n);
    wb_put(b, v, n * esz);
}

void tp_gguf_w_arr_f32(gguf_writer *w, const char *key, const float *v, size_t n) { tp_gguf_w_arr(w, key, GGUF_F32, v, n); }
void tp_gguf_w_arr_i32(gguf_writer *w, const char *key, const int32_t *v, size_t n) { tp_gguf_w_arr(w, key, GGUF_I32, v, n); }

void tp_gguf_w_arr_str(gguf_writer *w, const char *key, const char *const *v, size_t n) {
    wbuf *b = kv_slot(w, key);
    if (!b) return;
    wb_u32(b, GGUF_ARRAY);
    wb_u32(b, GGUF_STRING);
    wb_u64(b, n);
    for (size_t i = 0; i < n; i++) wb_str(b, v[i] ? v[i] : "", v[i] ? strlen(v[i]) : 0);
}

/* Serialize the body (no type tag) of a value of type `type`. */
static bool put_value_body(wbuf *b, uint32_t type, const gguf_value *v, int depth) {
    size_t esz = scalar_bytes(type);
    if (esz) {
        /* the union holds u / i / f; narrow to the wire width (little-endian host) */
        uint8_t tmp[8];
        if (type == GGUF_F32) {
            float f = (float)v->v.f;
            memcpy(tmp, &f, 4);
        } else if (type == GGUF_F64) {
            memcpy(tmp, &v->v.f, 8);
        } else {
            memcpy(tmp, &v->v.u, 8); /* i and u share the bits; low bytes first */
        }
        wb_put(b, tmp, esz);
        return true;
    }
    if (type == GGUF_STRING) {
        if (v->v.s.len && !v->v.s.str) return false;
        wb_u64(b, v->v.s.len);
        wb_put(b, v->v.s.str, (size_t)v->v.s.len);
        return true;
    }
    if (type != GGUF_ARRAY || depth > 16) return false;
    uint32_t et = v->v.arr.elem_type;
    uint64_t n = v->v.arr.count;
    wb_u32(b, et);
    wb_u64(b, n);
    size_t ee = scalar_bytes(et);
    if (ee) {
        if (n && !v->v.arr.raw) return false;
        wb_put(b, v->v.arr.raw, (size_t)n * ee);
        return true;
    }
    if (et != GGUF_STRING && et != GGUF_ARRAY) return false;
    if (n && !v->v.arr.items) return false;
    for (uint64_t i = 0; i < n; i++)
        if (!put_value_body(b, et, &v->v.arr.items[i], depth + 1)) return false;
    return true;
}

void tp_gguf_w_value(gguf_writer *w, const char *key, const gguf_value *v) {
    wbuf *b = kv_slot(w, key);
    if (!b) return;
    wb_u32(b, v->type);
    if (!put_value_body(b, v->type, v, 0))
        w_error(w, "metadata key '%s': invalid value (type %u)", key, v->type);
}

void tp_gguf_w_copy_kv(gguf_writer *w, const gguf_file *src, const char *prefix) {
    size_t pl = prefix ? strlen(prefix) : 0;
    for (uint64_t i = 0; i < src->n_kv; i++) {
        const gguf_kv *kv = &src->kv[i];
        if (pl && (kv->key.len < pl || memcmp(kv->key.str, prefix, pl) != 0)) continue;
        if (memchr(kv->key.str, 0, (size_t)kv->key.len)) {
            w_error(w, "%s: metadata key %llu contains a NUL byte", src->path, (unsigned long long)i);
            continue;
        }
        char *key = tool_xmalloc((size_t)kv->key.len + 1);
        memcpy(key, kv->key.str, (size_t)kv->key.len);
        key[kv->key.len] = 0;
        tp_gguf_w_value(w, key, &kv->value);
        free(key);
    }
}

/* Validate and append a tensor entry; NULL (error recorded) if invalid. */
static wtensor *add_tensor(gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims, const uint64_t *ne) {
    if (!name || !*name || strlen(name) > GGUF_W_NAME_MAX) {
        w_error(w, "tensor name '%.80s' must have 1..%d bytes", name ? name : "", GGUF_W_NAME_MAX);
        return NULL;
    }
    const char *tn = tp_dtype_name(type);
    size_t be = tp_dtype_block_elems(type), bb = tp_dtype_block_bytes(type);
    if (!tn || !be) {
        w_error(w, "tensor '%s' has unknown type %u", name, type);
        return NULL;
    }
    if (n_dims < 1 || n_dims > 4) {
        w_error(w, "tensor '%s' has %u dimensions (must be 1..4)", name, n_dims);
        return NULL;
    }
    for (size_t i = 0; i < w->n_t; i++)
        if (strcmp(w->t[i].name, name) == 0) {
            w_error(w, "duplicate tensor name '%s'", name);
            return NULL;
        }
    wtensor t;
    memset(&t, 0, sizeof t);
    strcpy(t.name, name);
    t.type = type;
    t.n_dims = n_dims;
    uint64_t rows = 1;
    for (uint32_t d = 0; d < 4; d++) {
        t.ne[d] = d < n_dims ? ne[d] : 1;
        if (t.ne[d] == 0 || t.ne[d] > (uint64_t)INT64_MAX) {
            w_error(w, "tensor '%s' has invalid size %llu in dimension %u", name, (unsigned long long)t.ne[d], d);
            return NULL;
        }
        if (d > 0 && __builtin_mul_overflow(rows, t.ne[d], &rows)) {
            w_error(w, "tensor '%s' size overflows", name);
            return NULL;
        }
    }
    if (t.ne[0] % be) {
        w_error(w, "tensor '%s' row length %llu is not a multiple of the %s block size %zu", name,
                (unsigned long long)t.ne[0], tn, be);
        return NULL;
    }
    if (t.ne[0] / be > SIZE_MAX / bb || __builtin_mul_overflow((uint64_t)(t.ne[0] / be * bb), rows, &t.nbytes) ||
        t.nbytes > (uint64_t)SIZE_MAX / 2) {
        w_error(w, "tensor '%s' size overflows", name);
        return NULL;
    }
    if (w->n_t == w->cap_t) {
        w->cap_t = w->cap_t ? 2 * w->cap_t : 16;
        w->t = tool_xrealloc(w->t, w->cap_t * sizeof *w->t);
    }
    w->t[w->n_t] = t;
    return &w->t[w->n_t++];
}

void tp_gguf_w_tensor(gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims, const uint64_t *ne,
                   const void *data) {
    wtensor *t = add_tensor(w, name, type, n_dims, ne);
    if (!t) return;
    void *copy = tool_xmalloc((size_t)t->nbytes);
    memcpy(copy, data, (size_t)t->nbytes);
    t->data = copy;
    t->owned = true;
}

void tp_gguf_w_tensor_ref(gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims, const uint64_t *ne,
                       const void *data) {
    wtensor *t = add_tensor(w, name, type, n_dims, ne);
    if (t) t->data = data;
}

void tp_gguf_w_tensor_rows(gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims, const uint64_t *ne,
                        gguf_row_fn fill, void *ctx) {
    wtensor *t = add_tensor(w, name, type, n_dims, ne);
    if (!t) return;
    t->fill = fill;
    t->fill_ctx = ctx;
}

static uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

static bool put_zeros(FILE *fp, uint64_t n) {
    static const uint8_t zeros[64];
    while (n) {
        size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
        if (fwrite(zeros, 1, k, fp) != k) return false;
        n -= k;
    }
    return true;
}

static bool write_tensor_data(FILE *fp, const wtensor *t) {
    if (!t->fill) return fwrite(t->data, 1, (size_t)t->nbytes, fp) == t->nbytes;
    size_t rb = tp_dtype_row_bytes(t->type, (size_t)t->ne[0]);
    uint64_t rows = t->ne[1] * t->ne[2] * t->ne[3];
    uint8_t *row = tool_xmalloc(rb);
    bool ok = true;
    for (uint64_t r = 0; r < rows && ok; r++) {
        memset(row, 0, rb);
        t->fill(t->fill_ctx, r, row, rb);
        ok = fwrite(row, 1, rb, fp) == rb;
    }
    free(row);
    return ok;
}

int tp_gguf_writer_save(gguf_writer *w, const char *path, char *err) {
    if (w->error[0]) return tp_fail(err, "%s: %s", path, w->error);
    const uint64_t a = w->alignment;

    /* Header + metadata + tensor infos, in memory (they are small). */
    wbuf h = { 0 };
    uint64_t n_kv = 0;
    for (size_t i = 0; i < w->n_kv; i++) n_kv += strcmp(w->kv[i].key, "general.alignment") != 0;
    if (a != 32) n_kv++;
    wb_put(&h, "GGUF", 4);
    wb_u32(&h, 3);
    wb_u64(&h, w->n_t);
    wb_u64(&h, n_kv);
    if (a != 32) {
        wb_str(&h, "general.alignment", strlen("general.alignment"));
        wb_u32(&h, GGUF_U32);
        wb_u32(&h, (uint32_t)a);
    }
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, "general.alignment") == 0) continue;
        wb_str(&h, w->kv[i].key, strlen(w->kv[i].key));
        wb_put(&h, w->kv[i].val.p, w->kv[i].val.len);
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        wtensor *t = &w->t[i];
        t->offset = off;
        off = align_up(off + t->nbytes, a);
        wb_str(&h, t->name, strlen(t->name));
        wb_u32(&h, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++) wb_u64(&h, t->ne[d]);
        wb_u32(&h, t->type);
        wb_u64(&h, t->offset);
    }

    FILE *fp = fopen(path, "wb");
    if (!fp) {
        free(h.p);
        return tp_fail(err, "%s: cannot create: %s", path, strerror(errno));
    }
    bool ok = fwrite(h.p, 1, h.len, fp) == h.len && put_zeros(fp, align_up(h.len, a) - h.len);
    for (size_t i = 0; ok && i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        ok = write_tensor_data(fp, t) && put_zeros(fp, align_up(t->nbytes, a) - t->nbytes);
    }
    int saved_errno = errno;
    free(h.p);
    if (fclose(fp) != 0 && ok) {
        ok = false;
        saved_errno = errno;
    }
    if (!ok) {
        unlink(path);
        return tp_fail(err, "%s: write error: %s", path, strerror(saved_errno));
    }
    return 0;
}
