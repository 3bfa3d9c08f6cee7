/* gguf.c: GGUF v2/v3 reader.
 *
 * The file is mapped read-only and parsed with a bounds-checked cursor: every
 * length, count and offset is checked against the bytes that remain before it
 * is used, and every allocation is bounded by the file size (a count is only
 * accepted if the file could hold that many minimal items) and charged to the
 * caller's memory ledger before it happens. Keys and tensor names are looked up
 * through sorted indexes (bsearch), so a file with millions of entries costs
 * O(n log n), never O(n^2). Layout reference: ggml's docs/gguf.md ("File Structure").
 */
#include "format/gguf.h"

#include "core/checked.h"
#include "core/common.h"
#include "core/mapreg.h"
#include "tensor/dtype.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_MAX_DEPTH 8      /* nesting of arrays of arrays; real files use 1 */
#define GGUF_NAME_MAX 71      /* gguf_tensor.name holds 71 bytes + NUL */

typedef struct {
    const uint8_t *p;
    size_t size;
    size_t pos;
} cursor;

static size_t cur_left(const cursor *c) { return c->size - c->pos; }

static bool rd_bytes(cursor *c, void *out, size_t n) {
    if (cur_left(c) < n) return false;
    memcpy(out, c->p + c->pos, n);
    c->pos += n;
    return true;
}
static bool rd_u32(cursor *c, uint32_t *v) { return rd_bytes(c, v, 4); }
static bool rd_u64(cursor *c, uint64_t *v) { return rd_bytes(c, v, 8); }

/* A gguf string: uint64 length + bytes. The bytes stay in the mapping. */
static bool rd_str(cursor *c, gguf_str *s) {
    uint64_t len;
    if (!rd_u64(c, &len)) return false;
    if (len > cur_left(c)) return false;
    s->len = len;
    s->str = (const char *)(c->p + c->pos);
    c->pos += (size_t)len;
    return true;
}

static size_t scalar_size(uint32_t t) {
    switch (t) {
    case GGUF_U8: case GGUF_I8: case GGUF_BOOL: return 1;
    case GGUF_U16: case GGUF_I16: return 2;
    case GGUF_U32: case GGUF_I32: case GGUF_F32: return 4;
    case GGUF_U64: case GGUF_I64: case GGUF_F64: return 8;
    default: return 0;
    }
}

static const char *vtype_name(uint32_t t) {
    static const char *names[] = { "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool",
                                   "string", "array", "u64", "i64", "f64" };
    return t < sizeof names / sizeof names[0] ? names[t] : "invalid";
}

/* Decode a little-endian scalar of type t at p into v (type already set). */
static void decode_scalar(uint32_t t, const uint8_t *p, gguf_value *v) {
    uint8_t u8; uint16_t u16; uint32_t u32; uint64_t u64;
    int8_t i8; int16_t i16; int32_t i32; int64_t i64;
    float f32; double f64;
    switch (t) {
    case GGUF_U8: memcpy(&u8, p, 1); v->v.u = u8; break;
    case GGUF_BOOL: memcpy(&u8, p, 1); v->v.u = u8 != 0; break;
    case GGUF_I8: memcpy(&i8, p, 1); v->v.i = i8; break;
    case GGUF_U16: memcpy(&u16, p, 2); v->v.u = u16; break;
    case GGUF_I16: memcpy(&i16, p, 2); v->v.i = i16; break;
    case GGUF_U32: memcpy(&u32, p, 4); v->v.u = u32; break;
    case GGUF_I32: memcpy(&i32, p, 4); v->v.i = i32; break;
    case GGUF_F32: memcpy(&f32, p, 4); v->v.f = f32; break;
    case GGUF_U64: memcpy(&u64, p, 8); v->v.u = u64; break;
    case GGUF_I64: memcpy(&i64, p, 8); v->v.i = i64; break;
    case GGUF_F64: memcpy(&f64, p, 8); v->v.f = f64; break;
    default: break;
    }
}

static size_t items_bytes(uint64_t count);

static void free_value(gguf_value *v, tp_ledger *led) {
    if (v->type != GGUF_ARRAY || !v->v.arr.items) return;
    if (v->v.arr.elem_type == GGUF_ARRAY)
        for (uint64_t i = 0; i < v->v.arr.count; i++) free_value(&v->v.arr.items[i], led);
    free(v->v.arr.items);
    tp_ledger_release(led, items_bytes(v->v.arr.count));
    v->v.arr.items = NULL;
}

/* Why a value failed to parse: truncated, a bad type / nesting, or (PV_LIMIT,
 * the reason in lerr) over the memory limit or out of memory. */
typedef enum { PV_OK, PV_TRUNC, PV_BADTYPE, PV_DEEP, PV_LIMIT } pv_status;

/* Charge the items array of a parsed array value (count entries) to the ledger. */
static size_t items_bytes(uint64_t count) {
    return tp_heap_block_bytes(tp_mul_sat((size_t)(count ? count : 1), sizeof(gguf_value)));
}

/* Parse a value of type `type` at the cursor into *v. On failure *v owns nothing
 * (and nothing stays charged for it). */
static pv_status parse_value(cursor *c, uint32_t type, gguf_value *v, int depth, uint32_t *bad_type,
                             tp_ledger *led, char *lerr) {
    memset(v, 0, sizeof *v);
    v->type = type;
    size_t sz = scalar_size(type);
    if (sz) {
        if (cur_left(c) < sz) return PV_TRUNC;
        decode_scalar(type, c->p + c->pos, v);
        c->pos += sz;
        return PV_OK;
    }
    if (type == GGUF_STRING) return rd_str(c, &v->v.s) ? PV_OK : PV_TRUNC;
    if (type != GGUF_ARRAY) { *bad_type = type; return PV_BADTYPE; }
    if (depth >= GGUF_MAX_DEPTH) return PV_DEEP;

    uint32_t et;
    uint64_t count;
    if (!rd_u32(c, &et) || !rd_u64(c, &count)) return PV_TRUNC;
    v->v.arr.elem_type = et;
    v->v.arr.raw = c->p + c->pos;
    size_t esz = scalar_size(et);
    if (esz) {
        /* count * esz must fit in what is left (division avoids overflow) */
        if (count > cur_left(c) / esz) return PV_TRUNC;
        v->v.arr.count = count;
        c->pos += (size_t)count * esz;
        return PV_OK;
    }
    if (et != GGUF_STRING && et != GGUF_ARRAY) { *bad_type = et; return PV_BADTYPE; }
    /* A string needs at least 8 bytes, an array at least 12: bounds the allocation. */
    size_t min_item = et == GGUF_STRING ? 8 : 12;
    if (count > cur_left(c) / min_item) return PV_TRUNC;
    if (tp_ledger_charge(led, items_bytes(count), "metadata array", lerr)) return PV_LIMIT;
    /* count is bounded by the file size above; the product is checked all the same */
    size_t nb;
    gguf_value *items = NULL;
    if (tp_mul_size((size_t)(count ? count : 1), sizeof *items, &nb)) items = malloc(nb);
    if (!items) {
        tp_ledger_release(led, items_bytes(count));
        tp_fail(lerr, "out of memory (%zu bytes for an array of %llu items)", tp_mul_sat((size_t)count, sizeof *items),
                (unsigned long long)count);
        return PV_LIMIT;
    }
    for (uint64_t i = 0; i < count; i++) {
        pv_status st = parse_value(c, et, &items[i], depth + 1, bad_type, led, lerr);
        if (st != PV_OK) {
            for (uint64_t j = 0; j < i; j++) free_value(&items[j], led);
            free(items);
            tp_ledger_release(led, items_bytes(count));
            return st;
        }
    }
    v->v.arr.count = count;
    v->v.arr.items = items;
    return PV_OK;
}

/* ---- sorted indexes: lookup by name and duplicate detection ---- */

static int cmp_bytes(const char *a, size_t an, const char *b, size_t bn) {
    int r = memcmp(a, b, an < bn ? an : bn);
    return r ? r : (an < bn ? -1 : an > bn);
}

/* qsort has no context argument: the file being indexed, for the comparators.
 * Indexes are built only inside tp_gguf_open, one file at a time per thread. */
static _Thread_local const gguf_file *sort_file;

static int cmp_kv_idx(const void *a, const void *b) {
    const gguf_kv *x = &sort_file->kv[*(const size_t *)a], *y = &sort_file->kv[*(const size_t *)b];
    return cmp_bytes(x->key.str ? x->key.str : "", (size_t)x->key.len, y->key.str ? y->key.str : "", (size_t)y->key.len);
}

static int cmp_tensor_idx(const void *a, const void *b) {
    return strcmp(sort_file->tensors[*(const size_t *)a].name, sort_file->tensors[*(const size_t *)b].name);
}

/* Print a key for a message: at most 64 chars, non-printables as '?'. */
static void key_for_msg(const gguf_str *k, char out[72]) {
    size_t n = k->len < 64 ? (size_t)k->len : 64;
    for (size_t i = 0; i < n; i++) {
        char ch = k->str[i];
        out[i] = (ch >= 32 && ch < 127) ? ch : '?';
    }
    if (k->len > 64) { memcpy(out + 64, "...", 3); n = 67; }
    out[n] = 0;
}

void tp_gguf_close(gguf_file *f) {
    if (!f) return;
    tp_ledger *led = f->ledger;
    if (f->kv) {
        for (uint64_t i = 0; i < f->n_kv; i++) free_value(&f->kv[i].value, led);
        free(f->kv);
    }
    free(f->kv_order);
    free(f->tensor_order);
    free(f->tensors);
    tp_ledger_release(led, f->charged);
    if (f->map) {
        tp_map_unregister(f->map);
        munmap((void *)f->map, f->map_size);
    }
    free(f->path);
    free(f);
}

/* Charge a block the file keeps until it is closed. */
static bool charge(gguf_file *f, size_t bytes, const char *what, char *err) {
    char label[TP_ERR_LEN / 2];
    snprintf(label, sizeof label, "%.200s: %.40s", f->path, what);
    if (tp_ledger_charge(f->ledger, bytes, label, err)) return false;
    f->charged += bytes;
    return true;
}

static gguf_file *fail_close(gguf_file *f) {
    tp_gguf_close(f);
    return NULL;
}

/* Parse metadata; f->kv holds f->n_kv fully parsed entries on return (also on failure). */
static bool parse_kvs(gguf_file *f, cursor *c, uint64_t n_kv, char *err) {
    const char *path = f->path;
    /* the smallest kv is an empty key (8) + type (4) + a one-byte value */
    if (n_kv > cur_left(c) / 13)
        return tp_fail(err, "%s: metadata count %llu is too large for file size %zu", path,
                       (unsigned long long)n_kv, f->map_size), false;
    size_t n = (size_t)(n_kv ? n_kv : 1);
    size_t bytes = tp_mul_sat(n, sizeof *f->kv + sizeof *f->kv_order);
    if (!charge(f, bytes, "metadata table", err)) return false;
    f->kv = calloc(n, sizeof *f->kv);
    f->kv_order = calloc(n, sizeof *f->kv_order);
    if (!f->kv || !f->kv_order) /* tp_gguf_close frees what was allocated */
        return tp_fail(err, "%s: out of memory (%zu bytes for the metadata table)", path, bytes), false;
    char lerr[TP_ERR_LEN];
    for (uint64_t i = 0; i < n_kv; i++) {
        gguf_kv *kv = &f->kv[i];
        uint32_t type, bad = 0;
        char kname[72];
        if (!rd_str(c, &kv->key))
            return tp_fail(err, "%s: truncated in metadata key %llu", path, (unsigned long long)i), false;
        key_for_msg(&kv->key, kname);
        if (!rd_u32(c, &type))
            return tp_fail(err, "%s: truncated in metadata key %llu ('%s')", path, (unsigned long long)i, kname), false;
        pv_status st = parse_value(c, type, &kv->value, 0, &bad, f->ledger, lerr);
        if (st == PV_TRUNC)
            return tp_fail(err, "%s: truncated in metadata key %llu ('%s')", path, (unsigned long long)i, kname), false;
        if (st == PV_BADTYPE)
            return tp_fail(err, "%s: metadata key %llu ('%s') has invalid value type %u", path,
                           (unsigned long long)i, kname, bad), false;
        if (st == PV_DEEP)
            return tp_fail(err, "%s: metadata key %llu ('%s') nests arrays deeper than %d", path,
                           (unsigned long long)i, kname, GGUF_MAX_DEPTH), false;
        if (st == PV_LIMIT)
            return tp_fail(err, "%s: metadata key %llu ('%s'): %s", path, (unsigned long long)i, kname, lerr), false;
        f->n_kv = i + 1; /* this entry now owns its value */
    }
    /* the sorted index; equal neighbours are duplicate keys */
    for (uint64_t i = 0; i < f->n_kv; i++) f->kv_order[i] = (size_t)i;
    sort_file = f;
    qsort(f->kv_order, (size_t)f->n_kv, sizeof *f->kv_order, cmp_kv_idx);
    for (uint64_t i = 1; i < f->n_kv; i++)
        if (cmp_kv_idx(&f->kv_order[i - 1], &f->kv_order[i]) == 0) {
            char kname[72];
            key_for_msg(&f->kv[f->kv_order[i]].key, kname);
            return tp_fail(err, "%s: duplicate metadata key '%s'", path, kname), false;
        }
    return true;
}

static bool get_alignment(gguf_file *f, char *err) {
    f->alignment = 32;
    const gguf_kv *kv = tp_gguf_find(f, "general.alignment");
    if (!kv) return true;
    int64_t a;
    char e2[TP_ERR_LEN];
    if (!tp_gguf_get_int(f, "general.alignment", &a, e2))
        return tp_fail(err, "%s: %s", f->path, e2), false;
    /* The spec asks for a multiple of 8; we accept any power of two (and cap it so
     * that aligning an offset cannot overflow). */
    if (a <= 0 || (a & (a - 1)) != 0 || a > (1 << 30))
        return tp_fail(err, "%s: general.alignment %lld is not a power of two in [1, 2^30]", f->path,
                       (long long)a), false;
    f->alignment = (uint64_t)a;
    return true;
}

static bool parse_tensor_infos(gguf_file *f, cursor *c, uint64_t n_t, char *err) {
    const char *path = f->path;
    /* smallest info: name (8) + n_dims (4) + type (4) + offset (8) */
    if (n_t > cur_left(c) / 24)
        return tp_fail(err, "%s: tensor count %llu is too large for file size %zu", path,
                       (unsigned long long)n_t, f->map_size), false;
    size_t n = (size_t)(n_t ? n_t : 1);
    size_t bytes = tp_mul_sat(n, sizeof *f->tensors + sizeof *f->tensor_order);
    if (!charge(f, bytes, "tensor table", err)) return false;
    f->tensors = calloc(n, sizeof *f->tensors);
    f->tensor_order = calloc(n, sizeof *f->tensor_order);
    if (!f->tensors || !f->tensor_order)
        return tp_fail(err, "%s: out of memory (%zu bytes for the tensor table)", path, bytes), false;
    f->n_tensors = n_t;
    for (uint64_t i = 0; i < n_t; i++) {
        gguf_tensor *t = &f->tensors[i];
        gguf_str name;
        unsigned long long ii = (unsigned long long)i;
        if (!rd_str(c, &name)) return tp_fail(err, "%s: truncated in tensor info %llu", path, ii), false;
        char nm[72];
        key_for_msg(&name, nm);
        if (name.len == 0 || name.len > GGUF_NAME_MAX)
            return tp_fail(err, "%s: tensor %llu name '%s' has length %llu (must be 1..%d)", path, ii, nm,
                           (unsigned long long)name.len, GGUF_NAME_MAX), false;
        if (memchr(name.str, 0, (size_t)name.len))
            return tp_fail(err, "%s: tensor %llu name contains a NUL byte", path, ii), false;
        memcpy(t->name, name.str, (size_t)name.len);
        t->name[name.len] = 0;
        if (!rd_u32(c, &t->n_dims))
            return tp_fail(err, "%s: truncated in tensor info %llu ('%s')", path, ii, t->name), false;
        if (t->n_dims > 4)
            return tp_fail(err, "%s: tensor '%s' has %u dimensions (max 4)", path, t->name, t->n_dims), false;
        for (int d = 0; d < 4; d++) t->ne[d] = 1;
        for (uint32_t d = 0; d < t->n_dims; d++)
            if (!rd_u64(c, &t->ne[d]))
                return tp_fail(err, "%s: truncated in tensor info %llu ('%s')", path, ii, t->name), false;
        if (!rd_u32(c, &t->type) || !rd_u64(c, &t->offset))
            return tp_fail(err, "%s: truncated in tensor info %llu ('%s')", path, ii, t->name), false;
    }
    return true;
}

/* Checks that need the alignment and the data section start. */
static bool check_tensors(gguf_file *f, char *err) {
    const char *path = f->path;
    bool ok = false;
    size_t data_avail = f->map_size - f->data_offset;
    for (uint64_t i = 0; i < f->n_tensors; i++) f->tensor_order[i] = (size_t)i;
    sort_file = f;
    qsort(f->tensor_order, (size_t)f->n_tensors, sizeof *f->tensor_order, cmp_tensor_idx);
    for (uint64_t i = 1; i < f->n_tensors; i++)
        if (cmp_tensor_idx(&f->tensor_order[i - 1], &f->tensor_order[i]) == 0)
            return tp_fail(err, "%s: duplicate tensor name '%s'", path, f->tensors[f->tensor_order[i]].name), false;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        const char *tname = tp_dtype_name(t->type);
        size_t be = tp_dtype_block_elems(t->type), bb = tp_dtype_block_bytes(t->type);
        if (!tname || !be || !bb) {
            tp_fail(err, "%s: tensor '%s' has unknown type %u", path, t->name, t->type);
            goto out;
        }
        uint64_t nel = 1;
        for (int d = 0; d < 4; d++) {
            if (t->ne[d] == 0 || t->ne[d] > (uint64_t)INT64_MAX) {
                tp_fail(err, "%s: tensor '%s' has invalid size %llu in dimension %d", path, t->name,
                        (unsigned long long)t->ne[d], d);
                goto out;
            }
            if (!tp_mul_u64(nel, t->ne[d], &nel) || nel > (uint64_t)INT64_MAX) {
                tp_fail(err, "%s: tensor '%s' element count overflows", path, t->name);
                goto out;
            }
        }
        if (t->ne[0] % be != 0) {
            tp_fail(err, "%s: tensor '%s' row length %llu is not a multiple of the %s block size %zu", path,
                    t->name, (unsigned long long)t->ne[0], tname, be);
            goto out;
        }
        uint64_t nbytes;
        if (!tp_mul_u64(t->ne[0] / be, (uint64_t)bb, &nbytes) || !tp_mul_u64(nbytes, t->ne[1], &nbytes) ||
            !tp_mul_u64(nbytes, t->ne[2], &nbytes) || !tp_mul_u64(nbytes, t->ne[3], &nbytes)) {
            tp_fail(err, "%s: tensor '%s' byte size overflows", path, t->name);
            goto out;
        }
        t->nbytes = nbytes;
        if (t->offset % f->alignment != 0) {
            tp_fail(err, "%s: tensor '%s' offset %llu is not a multiple of the alignment %llu", path, t->name,
                    (unsigned long long)t->offset, (unsigned long long)f->alignment);
            goto out;
        }
        if (t->offset > data_avail || nbytes > data_avail - t->offset) {
            unsigned long long off = (unsigned long long)f->data_offset + t->offset;
            tp_fail(err, "%s: tensor '%s' data [%llu, %llu) exceeds file size %zu", path, t->name, off,
                    off + nbytes < off ? ~0ull : off + nbytes, f->map_size);
            goto out;
        }
        t->data = f->map + f->data_offset + t->offset;
    }
    ok = true;
out:
    return ok;
}

gguf_file *tp_gguf_open(const char *path, char *err) { return tp_gguf_open_ex(path, NULL, err); }

gguf_file *tp_gguf_open_ex(const char *path, tp_ledger *led, char *err) {
    gguf_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        tp_fail(err, "%s: out of memory (%zu bytes to open it)", path, sizeof *f + strlen(path) + 1);
        free(f);
        return NULL;
    }
    f->ledger = led;
    /* O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below) */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        tp_fail(err, "%s: cannot open: %s", path, strerror(errno));
        return fail_close(f);
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        tp_fail(err, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return fail_close(f);
    }
    if (!S_ISREG(st.st_mode)) {
        tp_fail(err, "%s: not a regular file", path);
        close(fd);
        return fail_close(f);
    }
    if (st.st_size < 4) {
        tp_fail(err, "%s: not a GGUF file (only %lld bytes)", path, (long long)st.st_size);
        close(fd);
        return fail_close(f);
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        tp_fail(err, "%s: file too large to map", path);
        close(fd);
        return fail_close(f);
    }
    void *m = tp_map_file(fd, (size_t)st.st_size); /* at 2 MiB for huge pages */
    int merr = errno;
    close(fd);
    if (m == MAP_FAILED) {
        tp_fail(err, "%s: cannot mmap: %s", path, strerror(merr));
        return fail_close(f);
    }
    f->map = m;
    f->map_size = (size_t)st.st_size;
    if (tp_map_register(f->map, f->map_size, path, err)) return fail_close(f);

    cursor c = { f->map, f->map_size, 0 };
    if (memcmp(f->map, "GGUF", 4) != 0) {
        tp_fail(err, "%s: not a GGUF file (bad magic)", path);
        return fail_close(f);
    }
    c.pos = 4;
    uint64_t n_t, n_kv;
    if (!rd_u32(&c, &f->version)) {
        tp_fail(err, "%s: truncated in header", path);
        return fail_close(f);
    }
    if (f->version != 2 && f->version != 3) {
        if (f->version == 0x02000000u || f->version == 0x03000000u)
            tp_fail(err, "%s: unsupported GGUF version %u (a big-endian file?)", path, f->version);
        else
            tp_fail(err, "%s: unsupported GGUF version %u", path, f->version);
        return fail_close(f);
    }
    if (!rd_u64(&c, &n_t) || !rd_u64(&c, &n_kv)) {
        tp_fail(err, "%s: truncated in header", path);
        return fail_close(f);
    }
    if (!parse_kvs(f, &c, n_kv, err)) return fail_close(f);
    if (!get_alignment(f, err)) return fail_close(f);
    if (!parse_tensor_infos(f, &c, n_t, err)) return fail_close(f);

    /* Data section: the end of the tensor infos rounded up to the alignment. */
    uint64_t a = f->alignment;
    uint64_t data = ((uint64_t)c.pos + a - 1) / a * a;
    if (data > f->map_size) {
        if (n_t > 0) {
            tp_fail(err, "%s: truncated in padding before tensor data (data section at %llu, file size %zu)",
                    path, (unsigned long long)data, f->map_size);
            return fail_close(f);
        }
        data = f->map_size; /* no tensors: trailing padding may be absent */
    }
    f->data_offset = (size_t)data;
    if (!check_tensors(f, err)) return fail_close(f);
    return f;
}

/* ---- lookup ---- */

const gguf_kv *tp_gguf_find(const gguf_file *f, const char *key) {
    size_t kl = strlen(key), lo = 0, hi = (size_t)f->n_kv;
    if (!f->kv_order) return NULL;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const gguf_kv *kv = &f->kv[f->kv_order[mid]];
        int r = cmp_bytes(kv->key.str ? kv->key.str : "", (size_t)kv->key.len, key, kl);
        if (r == 0) return kv;
        if (r < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

const gguf_tensor *tp_gguf_find_tensor(const gguf_file *f, const char *name) {
    size_t lo = 0, hi = (size_t)f->n_tensors;
    if (!f->tensor_order) return NULL;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const gguf_tensor *t = &f->tensors[f->tensor_order[mid]];
        int r = strcmp(t->name, name);
        if (r == 0) return t;
        if (r < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

static bool is_unsigned(uint32_t t) { return t == GGUF_U8 || t == GGUF_U16 || t == GGUF_U32 || t == GGUF_U64; }
static bool is_signed(uint32_t t) { return t == GGUF_I8 || t == GGUF_I16 || t == GGUF_I32 || t == GGUF_I64; }

bool tp_gguf_get_int(const gguf_file *f, const char *key, int64_t *out, char *err) {
    const gguf_kv *kv = tp_gguf_find(f, key);
    if (!kv) { if (err) err[0] = 0; return false; }
    uint32_t t = kv->value.type;
    if (is_signed(t)) { *out = kv->value.v.i; return true; }
    if (is_unsigned(t)) {
        if (kv->value.v.u > (uint64_t)INT64_MAX)
            return tp_fail(err, "key '%s': value %llu does not fit in int64", key,
                           (unsigned long long)kv->value.v.u), false;
        *out = (int64_t)kv->value.v.u;
        return true;
    }
    return tp_fail(err, "key '%s' has type %s, expected an integer", key, vtype_name(t)), false;
}

bool tp_gguf_get_float(const gguf_file *f, const char *key, double *out, char *err) {
    const gguf_kv *kv = tp_gguf_find(f, key);
    if (!kv) { if (err) err[0] = 0; return false; }
    uint32_t t = kv->value.type;
    if (t == GGUF_F32 || t == GGUF_F64) { *out = kv->value.v.f; return true; }
    /* an integer where a float is expected converts (e.g. rope.freq_base written as u32) */
    if (is_signed(t)) { *out = (double)kv->value.v.i; return true; }
    if (is_unsigned(t)) { *out = (double)kv->value.v.u; return true; }
    return tp_fail(err, "key '%s' has type %s, expected a float", key, vtype_name(t)), false;
}

bool tp_gguf_get_bool(const gguf_file *f, const char *key, bool *out, char *err) {
    const gguf_kv *kv = tp_gguf_find(f, key);
    if (!kv) { if (err) err[0] = 0; return false; }
    uint32_t t = kv->value.type;
    if (t == GGUF_BOOL || is_unsigned(t)) { *out = kv->value.v.u != 0; return true; }
    if (is_signed(t)) { *out = kv->value.v.i != 0; return true; }
    return tp_fail(err, "key '%s' has type %s, expected a bool", key, vtype_name(t)), false;
}

char *tp_gguf_get_string(const gguf_file *f, const char *key) {
    const gguf_kv *kv = tp_gguf_find(f, key);
    if (!kv || kv->value.type != GGUF_STRING) return NULL;
    size_t n = (size_t)kv->value.v.s.len; /* inside the mapping: n + 1 cannot wrap */
    char *s = malloc(n + 1);
    if (!s) return NULL;
    if (n) memcpy(s, kv->value.v.s.str, n);
    s[n] = 0;
    return s;
}

int64_t tp_gguf_get_str(const gguf_file *f, const char *key, char *buf, size_t cap) {
    const gguf_kv *kv = tp_gguf_find(f, key);
    if (cap) buf[0] = 0;
    if (!kv || kv->value.type != GGUF_STRING) return -1;
    size_t n = (size_t)kv->value.v.s.len;
    if (cap) {
        size_t k = n < cap - 1 ? n : cap - 1;
        if (k) memcpy(buf, kv->value.v.s.str, k);
        buf[k] = 0;
    }
    return (int64_t)n;
}

bool tp_gguf_str_is(const gguf_file *f, const char *key, const char *lit) {
    const gguf_kv *kv = tp_gguf_find(f, key);
    size_t n = strlen(lit);
    return kv && kv->value.type == GGUF_STRING && kv->value.v.s.len == n && memcmp(kv->value.v.s.str, lit, n) == 0;
}

int64_t tp_gguf_arr_int(const gguf_value *arr, uint64_t i) {
    if (!arr || arr->type != GGUF_ARRAY || i >= arr->v.arr.count) return 0;
    uint32_t et = arr->v.arr.elem_type;
    size_t sz = scalar_size(et);
    if (!sz) return 0;
    gguf_value v = { .type = et };
    decode_scalar(et, (const uint8_t *)arr->v.arr.raw + i * sz, &v);
    if (is_signed(et)) return v.v.i;
    if (et == GGUF_F32 || et == GGUF_F64) {
        if (!(v.v.f >= -9.2e18 && v.v.f <= 9.2e18)) return 0; /* NaN / out of range */
        return (int64_t)v.v.f;
    }
    return (int64_t)v.v.u;
}

double tp_gguf_arr_float(const gguf_value *arr, uint64_t i) {
    if (!arr || arr->type != GGUF_ARRAY || i >= arr->v.arr.count) return 0;
    uint32_t et = arr->v.arr.elem_type;
    size_t sz = scalar_size(et);
    if (!sz) return 0;
    gguf_value v = { .type = et };
    decode_scalar(et, (const uint8_t *)arr->v.arr.raw + i * sz, &v);
    if (et == GGUF_F32 || et == GGUF_F64) return v.v.f;
    if (is_signed(et)) return (double)v.v.i;
    return (double)v.v.u;
}

gguf_str tp_gguf_arr_str(const gguf_value *arr, uint64_t i) {
    gguf_str none = { 0, NULL };
    if (!arr || arr->type != GGUF_ARRAY || arr->v.arr.elem_type != GGUF_STRING || i >= arr->v.arr.count ||
        !arr->v.arr.items)
        return none;
    return arr->v.arr.items[i].v.s;
}
