/* safetensors.c: safetensors reader (mmap, bounds-checked); the writer tests
 * and tools use is tools/st_write.c.
 *
 * Layout reference: the huggingface/safetensors README ("Format"). The JSON
 * header is read with the streaming scanner (format/json.h) from one heap copy,
 * which also holds the tensor names: memory is about 3x the header whatever it
 * contains (a cJSON tree can be 40x), charged to the ledger first. Every number
 * that becomes a size or an offset is checked to be a non-negative integer, and
 * every product and span against the file before a pointer is formed. The
 * shard index is read the same way and grouped by shard with a sort.
 */
#include "format/safetensors.h"

#include "core/checked.h"
#include "core/common.h"
#include "core/mapreg.h"
#include "format/json.h"
#include "tensor/dtype.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The safetensors library refuses headers above 100 MB; so do we (a corrupt
 * length would otherwise make us parse a whole multi-GB file as JSON). */
#define ST_MAX_HEADER (100u * 1000u * 1000u)
/* JSON numbers are doubles: integers above 2^53 are not exact. */
#define ST_MAX_INT 9007199254740992.0

size_t tp_st_dtype_size(const char *d) {
    static const struct { const char *name; size_t size; } tab[] = {
        { "F64", 8 }, { "F32", 4 }, { "F16", 2 }, { "BF16", 2 }, { "I64", 8 }, { "I32", 4 },
        { "I16", 2 }, { "I8", 1 }, { "U64", 8 }, { "U32", 4 }, { "U16", 2 }, { "U8", 1 },
        { "BOOL", 1 }, { "F8_E4M3", 1 }, { "F8_E5M2", 1 },
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (strcmp(d, tab[i].name) == 0) return tab[i].size;
    return 0;
}

static uint32_t dtype_to_type(const char *d) {
    if (!strcmp(d, "F32")) return TP_F32;
    if (!strcmp(d, "F16")) return TP_F16;
    if (!strcmp(d, "BF16")) return TP_BF16;
    return ST_TYPE_OTHER;
}

static int cmp_tensor(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

/* Sort key for the overlap check: data start, then end. */
static int cmp_span(const void *a, const void *b) {
    const st_tensor *x = *(const st_tensor *const *)a, *y = *(const st_tensor *const *)b;
    const uint8_t *xa = x->data, *ya = y->data;
    if (xa != ya) return xa < ya ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

/* A JSON number that is an integer in [0, 2^53], at the cursor. *ok false (the
 * value skipped) when it is something else. */
static bool read_uint(tp_jscan *s, uint64_t *out, bool *ok) {
    int c = tp_js_peek(s);
    *ok = false;
    if (c != '-' && (c < '0' || c > '9')) return tp_js_skip(s);
    double d;
    if (!tp_js_number(s, &d)) return false;
    if (d >= 0 && d <= ST_MAX_INT && d == (double)(uint64_t)d) { *out = (uint64_t)d; *ok = true; }
    return true;
}

static bool key_is(const char *k, size_t kl, const char *lit) { return kl == strlen(lit) && memcmp(k, lit, kl) == 0; }

void tp_st_close(st_file *f) {
    if (!f) return;
    if (f->map && f->map != MAP_FAILED) {
        tp_map_unregister(f->map);
        munmap((void *)f->map, f->map_size);
    }
    free(f->tensors);
    free(f->header);
    tp_ledger_release(f->ledger, f->charged);
    free(f->path);
    free(f);
}

static bool charge(st_file *f, size_t bytes, const char *what, char *err) {
    char label[TP_ERR_LEN];
    snprintf(label, sizeof label, "%.200s: %s", f->path, what);
    if (tp_ledger_charge(f->ledger, bytes, label, err)) return false;
    f->charged += bytes;
    return true;
}

/* One header entry at the cursor into t (name already set): read it whole,
 * then check it in order: dtype, shape, offsets. */
static bool parse_entry(st_file *f, tp_jscan *s, st_tensor *t, uint64_t data_size, char *err) {
    const char *nm = t->name;
    if (tp_js_peek(s) != '{') return tp_fail(err, "%s: header entry %s is not an object", f->path, nm), false;
    char *dtype = NULL;
    bool seen[3] = { 0 }, shape_arr = false, off_arr = false, more;
    int nd = 0, bad_dim = -1, n_off = 0;
    uint64_t off[2] = { 0, 0 };
    bool off_ok = true;
    if (!tp_js_open(s, '{', &more)) goto bad_json;
    while (more) {
        char *k;
        size_t kl;
        if (!tp_js_key(s, &k, &kl)) goto bad_json;
        int c = tp_js_peek(s);
        if (key_is(k, kl, "dtype") && !seen[0]) {
            seen[0] = true;
            if (c == '"') { if (!tp_js_string(s, &dtype, NULL)) goto bad_json; }
            else if (!tp_js_skip(s)) goto bad_json;
        } else if ((key_is(k, kl, "shape") && !seen[1]) || (key_is(k, kl, "data_offsets") && !seen[2])) {
            bool is_shape = k[0] == 's';
            seen[is_shape ? 1 : 2] = true;
            if (c != '[') { if (!tp_js_skip(s)) goto bad_json; }
            else {
                bool m2;
                if (is_shape) shape_arr = true;
                else off_arr = true;
                if (!tp_js_open(s, '[', &m2)) goto bad_json;
                while (m2) {
                    uint64_t v = 0;
                    bool ok;
                    if (!read_uint(s, &v, &ok)) goto bad_json;
                    if (is_shape) {
                        if (nd < ST_MAX_DIMS) t->shape[nd] = v;
                        if (!ok && bad_dim < 0) bad_dim = nd;
                        nd++;
                    } else {
                        if (n_off < 2) off[n_off] = v;
                        off_ok = off_ok && ok;
                        n_off++;
                    }
                    if (!tp_js_next(s, ']', &m2)) goto bad_json;
                }
            }
        } else if (!tp_js_skip(s)) {
            goto bad_json;
        }
        if (!tp_js_next(s, '}', &more)) goto bad_json;
    }

    if (!dtype) return tp_fail(err, "%s: tensor %s has no dtype string", f->path, nm), false;
    size_t esize = tp_st_dtype_size(dtype);
    if (!esize) return tp_fail(err, "%s: tensor %s has unknown dtype '%.20s'", f->path, nm, dtype), false;
    snprintf(t->dtype, sizeof t->dtype, "%s", dtype);
    t->type = dtype_to_type(t->dtype);
    if (!shape_arr) return tp_fail(err, "%s: tensor %s has no shape array", f->path, nm), false;
    if (nd > ST_MAX_DIMS)
        return tp_fail(err, "%s: tensor %s has %d dimensions (at most %d)", f->path, nm, nd, ST_MAX_DIMS), false;
    if (bad_dim >= 0)
        return tp_fail(err, "%s: tensor %s: shape[%d] is not a non-negative integer", f->path, nm, bad_dim), false;
    t->n_dims = nd;
    uint64_t n = 1;
    for (int i = 0; i < nd; i++)
        if (!tp_mul_u64(n, t->shape[i], &n)) return tp_fail(err, "%s: tensor %s: shape is too large", f->path, nm), false;
    t->n_elems = n;
    uint64_t want;
    if (!tp_mul_u64(n, (uint64_t)esize, &want))
        return tp_fail(err, "%s: tensor %s: shape is too large", f->path, nm), false;
    if (!off_arr || n_off != 2 || !off_ok)
        return tp_fail(err, "%s: tensor %s: data_offsets must be two non-negative integers", f->path, nm), false;
    uint64_t b = off[0], en = off[1];
    if (b > en)
        return tp_fail(err, "%s: tensor %s: data_offsets [%llu, %llu) are reversed", f->path, nm,
                       (unsigned long long)b, (unsigned long long)en), false;
    if (en > data_size)
        return tp_fail(err, "%s: tensor %s offsets [%llu, %llu) exceed the data size %llu", f->path, nm,
                       (unsigned long long)b, (unsigned long long)en, (unsigned long long)data_size), false;
    if (en - b != want)
        return tp_fail(err, "%s: tensor %s: data_offsets [%llu, %llu) hold %llu bytes but shape and dtype %s need %llu",
                       f->path, nm, (unsigned long long)b, (unsigned long long)en, (unsigned long long)(en - b),
                       t->dtype, (unsigned long long)want), false;
    t->nbytes = want;
    t->data = f->map + f->data_offset + b;
    t->file = f;
    return true;
bad_json: /* the header was validated by the counting pass: cannot happen */
    return tp_js_error(s, f->path, err), false;
}

st_file *tp_st_open(const char *path, char *err) { return tp_st_open_ex(path, NULL, err); }

st_file *tp_st_open_ex(const char *path, tp_ledger *led, char *err) {
    st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        tp_fail(err, "%s: out of memory (%zu bytes to open it)", path, sizeof *f + strlen(path) + 1);
        free(f);
        return NULL;
    }
    f->ledger = led;
    const char *slash = strrchr(f->path, '/');
    f->base = slash ? slash + 1 : f->path;
    /* O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below) */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) { tp_fail(err, "%s: cannot open: %s", path, strerror(errno)); goto fail; }
    struct stat st;
    if (fstat(fd, &st) != 0) { tp_fail(err, "%s: cannot stat: %s", path, strerror(errno)); close(fd); goto fail; }
    if (!S_ISREG(st.st_mode)) { tp_fail(err, "%s: not a regular file", path); close(fd); goto fail; }
    if (st.st_size < 8) {
        tp_fail(err, "%s: file is %lld bytes, too short for a safetensors header", path, (long long)st.st_size);
        close(fd);
        goto fail;
    }
    f->map_size = (size_t)st.st_size;
    f->map = tp_map_file(fd, f->map_size); /* at 2 MiB for huge pages */
    close(fd);
    if (f->map == MAP_FAILED) { f->map = NULL; tp_fail(err, "%s: cannot map: %s", path, strerror(errno)); goto fail; }
    if (tp_map_register(f->map, f->map_size, path, err)) goto fail;

    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | f->map[i]; /* little-endian */
    if (hlen > f->map_size - 8) {
        tp_fail(err, "%s: header length %llu exceeds the file size %zu", path, (unsigned long long)hlen, f->map_size);
        goto fail;
    }
    if (hlen < 2 || hlen > ST_MAX_HEADER) {
        tp_fail(err, "%s: header length %llu is not a plausible safetensors header (2 .. %u bytes)", path,
                (unsigned long long)hlen, ST_MAX_HEADER);
        goto fail;
    }
    f->data_offset = 8 + (size_t)hlen;
    /* A private copy of the header: the scanner unescapes names in place and
     * the tensors' names point into it. */
    if (!charge(f, (size_t)hlen + 1, "the header", err)) goto fail;
    if (!(f->header = malloc((size_t)hlen + 1))) { /* hlen is at most ST_MAX_HEADER */
        tp_fail(err, "%s: out of memory (%zu bytes for a copy of the header)", path, (size_t)hlen + 1);
        goto fail;
    }
    memcpy(f->header, f->map + 8, (size_t)hlen);
    f->header[hlen] = 0;

    /* pass 1: validate and count the entries (nothing is written) */
    tp_jscan s;
    tp_js_init(&s, f->header, (size_t)hlen);
    if (tp_js_peek(&s) != '{') {
        if (!tp_js_skip(&s)) { tp_js_error(&s, path, err); goto fail; }
        tp_fail(err, "%s: header is not a JSON object", path);
        goto fail;
    }
    bool more;
    size_t n = 0;
    if (!tp_js_open(&s, '{', &more)) { tp_js_error(&s, path, err); goto fail; }
    while (more) {
        char *k;
        size_t kl;
        if (!tp_js_key_raw(&s, &k, &kl) || !tp_js_skip(&s) || !tp_js_next(&s, '}', &more)) {
            tp_js_error(&s, path, err);
            goto fail;
        }
        n++;
    }
    /* Only padding may follow the JSON value. */
    for (const char *p = s.p; p < s.end; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r' && *p != 0) {
            tp_fail(err, "%s: header has trailing bytes after its JSON (at byte %zu)", path, (size_t)(p - s.base));
            goto fail;
        }
    if (n > INT32_MAX / 2) { tp_fail(err, "%s: header has %zu entries", path, n); goto fail; }
    if (!charge(f, tp_mul_sat(n ? n : 1, sizeof *f->tensors + sizeof(void *)), "the tensor table", err)) goto fail;
    if (!(f->tensors = calloc(n ? n : 1, sizeof *f->tensors))) {
        tp_fail(err, "%s: out of memory (%zu bytes for the tensor table)", path,
                tp_mul_sat(n ? n : 1, sizeof *f->tensors));
        goto fail;
    }

    /* pass 2: read each entry, unescaping in place */
    uint64_t data_size = f->map_size - f->data_offset;
    tp_js_init(&s, f->header, (size_t)hlen);
    tp_js_open(&s, '{', &more);
    while (more) {
        char *k;
        size_t kl;
        if (!tp_js_key(&s, &k, &kl)) { tp_js_error(&s, path, err); goto fail; }
        if (key_is(k, kl, "__metadata__")) {
            int c = tp_js_peek(&s);
            if (c != '{' && c != 'n') { tp_fail(err, "%s: __metadata__ is not an object", path); goto fail; }
            if (!tp_js_skip(&s)) { tp_js_error(&s, path, err); goto fail; }
        } else {
            st_tensor *t = &f->tensors[f->n_tensors++];
            t->name = k; /* NUL-terminated in the header copy */
            if (!parse_entry(f, &s, t, data_size, err)) goto fail;
        }
        if (!tp_js_next(&s, '}', &more)) { tp_js_error(&s, path, err); goto fail; }
    }

    qsort(f->tensors, (size_t)f->n_tensors, sizeof *f->tensors, cmp_tensor);
    for (int i = 1; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i - 1].name, f->tensors[i].name) == 0) {
            tp_fail(err, "%s: tensor %.200s appears twice in the header", path, f->tensors[i].name);
            goto fail;
        }
    /* Spans must not overlap (empty tensors aside). */
    const st_tensor **by = calloc((size_t)(f->n_tensors ? f->n_tensors : 1), sizeof *by);
    if (!by) {
        tp_fail(err, "%s: out of memory (%zu bytes to check the tensors' spans)", path,
                (size_t)(f->n_tensors ? f->n_tensors : 1) * sizeof *by);
        goto fail;
    }
    int nb = 0;
    for (int i = 0; i < f->n_tensors; i++)
        if (f->tensors[i].nbytes) by[nb++] = &f->tensors[i];
    qsort(by, (size_t)nb, sizeof *by, cmp_span);
    for (int i = 1; i < nb; i++) {
        const uint8_t *prev_end = (const uint8_t *)by[i - 1]->data + by[i - 1]->nbytes;
        if ((const uint8_t *)by[i]->data < prev_end) {
            tp_fail(err, "%s: tensors %.200s and %.200s overlap in the data", path, by[i - 1]->name, by[i]->name);
            free(by);
            goto fail;
        }
    }
    free(by);
    return f;
fail:
    tp_st_close(f);
    return NULL;
}

const st_tensor *tp_st_find(const st_file *f, const char *name) {
    st_tensor key = { .name = (char *)name };
    return bsearch(&key, f->tensors, (size_t)f->n_tensors, sizeof *f->tensors, cmp_tensor);
}

/* ---- sets of shards ---- */

static int cmp_tensor_ptr(const void *a, const void *b) {
    return strcmp((*(const st_tensor *const *)a)->name, (*(const st_tensor *const *)b)->name);
}

void tp_st_set_free(st_set *s) {
    if (!s) return;
    for (int i = 0; i < s->n_files; i++) tp_st_close(s->files[i]);
    free(s->files);
    free(s->tensors);
    free(s);
}

const st_tensor *tp_st_set_find(const st_set *s, const char *name) {
    st_tensor key = { .name = (char *)name };
    const st_tensor *kp = &key;
    const st_tensor **r = bsearch(&kp, s->tensors, (size_t)s->n_tensors, sizeof *s->tensors, cmp_tensor_ptr);
    return r ? *r : NULL;
}

static bool file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* A shard name from the index: a plain file name in the folder. */
static bool plain_name(const char *s) {
    return *s && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

/* model.safetensors.index.json's weight_map, read in place: (tensor, shard) pairs. */
typedef struct {
    const char *tensor, *shard;
} st_pair;

typedef struct {
    char *text;      /* the index file; the pairs point into it */
    size_t text_len;
    st_pair *pairs;
    size_t n;
} st_index;

/* The index is a small file in real folders (tens of KB); this bounds a hostile one. */
#define ST_MAX_INDEX ((size_t)64 << 20)

static void index_free(st_index *x) {
    free(x->text);
    free(x->pairs);
}

static int cmp_pair_shard(const void *a, const void *b) {
    const st_pair *x = a, *y = b;
    int r = strcmp(x->shard, y->shard);
    return r ? r : strcmp(x->tensor, y->tensor);
}

static bool read_index(const char *ipath, st_index *x, tp_ledger *led, size_t *charged, char *err) {
    memset(x, 0, sizeof *x);
    struct stat st;
    size_t fbytes = stat(ipath, &st) == 0 && st.st_size > 0 ? (size_t)st.st_size + 2 : 2;
    char label[TP_ERR_LEN];
    snprintf(label, sizeof label, "%.200s: reading the file", ipath);
    *charged = 0;
    if (fbytes <= ST_MAX_INDEX + 2) { /* else tp_read_file_max refuses it */
        if (tp_ledger_charge(led, fbytes, label, err)) return false;
        *charged = fbytes;
    }
    if (!(x->text = tp_read_file_max(ipath, ST_MAX_INDEX, &x->text_len, err))) return false;
    tp_jscan s;
    tp_js_init(&s, x->text, x->text_len);
    if (tp_js_peek(&s) != '{') {
        if (!tp_js_skip(&s) || !tp_js_finish(&s)) return tp_js_error(&s, ipath, err), false;
        return tp_fail(err, "%s: not a JSON object", ipath), false;
    }
    /* validate the whole document first (pass 2 unescapes in place) */
    if (!tp_js_skip(&s) || !tp_js_finish(&s)) return tp_js_error(&s, ipath, err), false;
    char *wb = NULL, *we = NULL;
    bool more;
    tp_js_init(&s, x->text, x->text_len);
    tp_js_open(&s, '{', &more);
    while (more) {
        char *k;
        size_t kl;
        tp_js_key_raw(&s, &k, &kl);
        if (!wb && kl == 10 && memcmp(k, "weight_map", 10) == 0) {
            if (tp_js_peek(&s) != '{') return tp_fail(err, "%s: missing weight_map object", ipath), false;
            tp_js_skip_span(&s, &wb, &we);
        } else {
            tp_js_skip(&s);
        }
        tp_js_next(&s, '}', &more);
    }
    if (!wb) return tp_fail(err, "%s: missing weight_map object", ipath), false;
    /* count, then read the pairs */
    tp_js_init(&s, wb, (size_t)(we - wb));
    tp_js_open(&s, '{', &more);
    while (more) {
        char *k;
        size_t kl;
        tp_js_key_raw(&s, &k, &kl);
        tp_js_skip(&s);
        tp_js_next(&s, '}', &more);
        x->n++;
    }
    if (x->n == 0) return tp_fail(err, "%s: weight_map is empty", ipath), false;
    size_t pb = tp_mul_sat(x->n, sizeof *x->pairs + 2 * sizeof(void *));
    snprintf(label, sizeof label, "%.200s: the weight map (%zu entries)", ipath, x->n);
    if (tp_ledger_charge(led, pb, label, err)) return false;
    *charged += pb;
    if (!(x->pairs = calloc(x->n, sizeof *x->pairs))) /* the caller frees x->text */
        return tp_fail(err, "%s: out of memory (%zu bytes for the weight map)", ipath,
                       tp_mul_sat(x->n, sizeof *x->pairs)), false;
    tp_js_init(&s, wb, (size_t)(we - wb));
    tp_js_open(&s, '{', &more);
    for (size_t i = 0; more; i++) {
        char *k, *v = NULL;
        size_t kl;
        tp_js_key(&s, &k, &kl);
        if (tp_js_peek(&s) == '"') tp_js_string(&s, &v, NULL);
        else tp_js_skip(&s);
        if (!v || !plain_name(v))
            return tp_fail(err, "%s: weight_map entry %.200s is not a file name in the folder", ipath, k), false;
        x->pairs[i] = (st_pair){ k, v };
        tp_js_next(&s, '}', &more);
    }
    return true;
}

static st_set *open_index(const char *dir, const char *ipath, tp_ledger *led, char *err) {
    st_index x;
    size_t charged = 0;
    st_set *s = NULL;
    const char *iname = "model.safetensors.index.json";
    char path[4096];
    if (!read_index(ipath, &x, led, &charged, err)) goto fail;
    /* x.n pointers each: at most one shard per weight_map entry */
    if (!(s = calloc(1, sizeof *s)) || !(s->files = calloc(x.n, sizeof *s->files)) ||
        !(s->tensors = calloc(x.n, sizeof *s->tensors))) {
        tp_fail(err, "%s: out of memory (%zu bytes for the table of %zu shards and tensors)", ipath,
                tp_mul_sat(x.n, sizeof *s->files + sizeof *s->tensors), x.n);
        goto fail;
    }
    /* each shard once: group the pairs by shard (O(n log n)) */
    qsort(x.pairs, x.n, sizeof *x.pairs, cmp_pair_shard);
    st_file *f = NULL;
    for (size_t i = 0; i < x.n; i++) {
        if (i == 0 || strcmp(x.pairs[i].shard, x.pairs[i - 1].shard) != 0) {
            snprintf(path, sizeof path, "%s/%s", dir, x.pairs[i].shard);
            if (!(f = tp_st_open_ex(path, led, err))) goto fail;
            s->files[s->n_files++] = f;
        }
        const st_tensor *t = tp_st_find(f, x.pairs[i].tensor);
        if (!t) {
            tp_fail(err, "%s: tensor %.200s (listed in %s) is not in the file", f->path, x.pairs[i].tensor, iname);
            goto fail;
        }
        s->tensors[s->n_tensors++] = t;
    }
    qsort(s->tensors, (size_t)s->n_tensors, sizeof *s->tensors, cmp_tensor_ptr);
    for (int i = 1; i < s->n_tensors; i++)
        if (strcmp(s->tensors[i - 1]->name, s->tensors[i]->name) == 0) {
            tp_fail(err, "%s: tensor %.200s is listed twice", ipath, s->tensors[i]->name);
            goto fail;
        }
    index_free(&x);
    tp_ledger_release(led, charged);
    return s;
fail:
    index_free(&x);
    tp_ledger_release(led, charged);
    tp_st_set_free(s);
    return NULL;
}

st_set *tp_st_set_open(const char *dir, char *err) { return tp_st_set_open_ex(dir, NULL, err); }

st_set *tp_st_set_open_ex(const char *dir, tp_ledger *led, char *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (file_exists(path)) return open_index(dir, path, led, err);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (!file_exists(path)) {
        tp_fail(err, "%s: no model.safetensors or model.safetensors.index.json in the folder", dir);
        return NULL;
    }
    st_file *f = tp_st_open_ex(path, led, err);
    if (!f) return NULL;
    st_set *s = calloc(1, sizeof *s);
    if (!s || !(s->files = calloc(1, sizeof *s->files)) ||
        !(s->tensors = calloc((size_t)(f->n_tensors ? f->n_tensors : 1), sizeof *s->tensors))) {
        tp_fail(err, "%s: out of memory (%zu bytes for the table of its %d tensors)", path,
                (size_t)(f->n_tensors ? f->n_tensors : 1) * sizeof *s->tensors, f->n_tensors);
        tp_st_close(f);
        tp_st_set_free(s); /* n_files 0: frees only the tables */
        return NULL;
    }
    s->files[s->n_files++] = f;
    for (int i = 0; i < f->n_tensors; i++) s->tensors[s->n_tensors++] = &f->tensors[i]; /* already sorted */
    return s;
}

void tp_st_set_detach_ledger(st_set *s) {
    for (int i = 0; s && i < s->n_files; i++) s->files[i]->ledger = NULL;
}

int64_t tp_st_set_file_bytes(const char *dir, char *err) {
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (!file_exists(path)) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            return tp_fail(err, "%s: no model.safetensors or model.safetensors.index.json in the folder", dir);
        return (int64_t)st.st_size;
    }
    st_index x;
    size_t charged = 0;
    int64_t total = -1;
    if (read_index(path, &x, NULL, &charged, err)) {
        /* each distinct shard once */
        qsort(x.pairs, x.n, sizeof *x.pairs, cmp_pair_shard);
        total = 0;
        for (size_t i = 0; i < x.n; i++) {
            if (i > 0 && strcmp(x.pairs[i].shard, x.pairs[i - 1].shard) == 0) continue;
            char sp[4096];
            snprintf(sp, sizeof sp, "%s/%s", dir, x.pairs[i].shard);
            if (stat(sp, &st) != 0) { total = tp_fail(err, "%s: cannot open: %s", sp, strerror(errno)); break; }
            total += (int64_t)st.st_size;
        }
    }
    index_free(&x);
    return total;
}
