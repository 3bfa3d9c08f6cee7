/* safetensors.c: safetensors reader (mmap, bounds-checked) and writer.
 *
 * Layout reference: the huggingface/safetensors README ("Format"). The JSON
 * header is parsed with cJSON straight out of the mapping; every number that
 * becomes a size or an offset is checked to be a non-negative integer, and every
 * product and span against the file before a pointer is formed.
 */
#include "format/safetensors.h"

#include "core/common.h"
#include "tensor/dtype.h"

#include <cjson/cJSON.h>
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

/* A JSON number that is an integer in [0, 2^53]. */
static bool json_uint(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return false;
    double d = j->valuedouble;
    if (!(d >= 0 && d <= ST_MAX_INT) || d != (double)(uint64_t)d) return false;
    *out = (uint64_t)d;
    return true;
}

void tp_st_close(st_file *f) {
    if (!f) return;
    if (f->map && f->map != MAP_FAILED) munmap((void *)f->map, f->map_size);
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    free(f->path);
    free(f);
}

/* Parse one header entry into t (name already set). */
static bool parse_entry(st_file *f, const cJSON *e, st_tensor *t, uint64_t data_size, char *err) {
    const char *nm = t->name;
    if (!cJSON_IsObject(e)) return tp_fail(err, "%s: header entry %s is not an object", f->path, nm), false;
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt)) return tp_fail(err, "%s: tensor %s has no dtype string", f->path, nm), false;
    size_t esize = tp_st_dtype_size(dt->valuestring);
    if (!esize) return tp_fail(err, "%s: tensor %s has unknown dtype '%.20s'", f->path, nm, dt->valuestring), false;
    snprintf(t->dtype, sizeof t->dtype, "%s", dt->valuestring);
    t->type = dtype_to_type(t->dtype);
    if (!cJSON_IsArray(sh)) return tp_fail(err, "%s: tensor %s has no shape array", f->path, nm), false;
    int nd = cJSON_GetArraySize(sh);
    if (nd > ST_MAX_DIMS)
        return tp_fail(err, "%s: tensor %s has %d dimensions (at most %d)", f->path, nm, nd, ST_MAX_DIMS), false;
    t->n_dims = nd;
    uint64_t n = 1;
    int i = 0;
    for (const cJSON *d = sh->child; d; d = d->next, i++) {
        if (!json_uint(d, &t->shape[i]))
            return tp_fail(err, "%s: tensor %s: shape[%d] is not a non-negative integer", f->path, nm, i), false;
        if (__builtin_mul_overflow(n, t->shape[i], &n))
            return tp_fail(err, "%s: tensor %s: shape is too large", f->path, nm), false;
    }
    t->n_elems = n;
    uint64_t want;
    if (__builtin_mul_overflow(n, (uint64_t)esize, &want))
        return tp_fail(err, "%s: tensor %s: shape is too large", f->path, nm), false;
    uint64_t b = 0, en = 0;
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 || !json_uint(off->child, &b) ||
        !json_uint(off->child->next, &en))
        return tp_fail(err, "%s: tensor %s: data_offsets must be two non-negative integers", f->path, nm), false;
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
}

st_file *tp_st_open(const char *path, char *err) {
    st_file *f = tp_xcalloc(1, sizeof *f);
    f->path = tp_xstrdup(path);
    const char *slash = strrchr(f->path, '/');
    f->base = slash ? slash + 1 : f->path;
    cJSON *root = NULL;
    int fd = open(path, O_RDONLY);
    if (fd < 0) { tp_fail(err, "%s: cannot open: %s", path, strerror(errno)); goto fail; }
    struct stat st;
    if (fstat(fd, &st) != 0) { tp_fail(err, "%s: cannot stat: %s", path, strerror(errno)); close(fd); goto fail; }
    if (st.st_size < 8) {
        tp_fail(err, "%s: file is %lld bytes, too short for a safetensors header", path, (long long)st.st_size);
        close(fd);
        goto fail;
    }
    f->map_size = (size_t)st.st_size;
    f->map = tp_map_file(fd, f->map_size); /* at 2 MiB for huge pages */
    close(fd);
    if (f->map == MAP_FAILED) { f->map = NULL; tp_fail(err, "%s: cannot map: %s", path, strerror(errno)); goto fail; }

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
    const char *hdr = (const char *)f->map + 8;
    const char *end = NULL;
    root = cJSON_ParseWithLengthOpts(hdr, (size_t)hlen, &end, false);
    if (!root) {
        size_t at = end && end >= hdr ? (size_t)(end - hdr) : 0;
        tp_fail(err, "%s: header is not valid JSON (near byte %zu of %llu)", path, at, (unsigned long long)hlen);
        goto fail;
    }
    /* Only padding (spaces) may follow the JSON value. */
    for (const char *p = end; p && p < hdr + hlen; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r' && *p != 0) {
            tp_fail(err, "%s: header has trailing bytes after its JSON (at byte %zu)", path, (size_t)(p - hdr));
            goto fail;
        }
    if (!cJSON_IsObject(root)) { tp_fail(err, "%s: header is not a JSON object", path); goto fail; }

    int n = 0;
    for (cJSON *e = root->child; e; e = e->next) n++;
    f->tensors = tp_xcalloc((size_t)(n ? n : 1), sizeof *f->tensors);
    uint64_t data_size = f->map_size - f->data_offset;
    for (cJSON *e = root->child; e; e = e->next) {
        if (!e->string) continue;
        if (strcmp(e->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(e) && !cJSON_IsNull(e)) { tp_fail(err, "%s: __metadata__ is not an object", path); goto fail; }
            continue;
        }
        st_tensor *t = &f->tensors[f->n_tensors++];
        t->name = tp_xstrdup(e->string);
        if (!parse_entry(f, e, t, data_size, err)) goto fail;
    }
    cJSON_Delete(root);
    root = NULL;

    qsort(f->tensors, (size_t)f->n_tensors, sizeof *f->tensors, cmp_tensor);
    for (int i = 1; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i - 1].name, f->tensors[i].name) == 0) {
            tp_fail(err, "%s: tensor %s appears twice in the header", path, f->tensors[i].name);
            goto fail;
        }
    /* Spans must not overlap (empty tensors aside). */
    const st_tensor **by = tp_xmalloc((size_t)(f->n_tensors ? f->n_tensors : 1) * sizeof *by);
    int nb = 0;
    for (int i = 0; i < f->n_tensors; i++)
        if (f->tensors[i].nbytes) by[nb++] = &f->tensors[i];
    qsort(by, (size_t)nb, sizeof *by, cmp_span);
    for (int i = 1; i < nb; i++) {
        const uint8_t *prev_end = (const uint8_t *)by[i - 1]->data + by[i - 1]->nbytes;
        if ((const uint8_t *)by[i]->data < prev_end) {
            tp_fail(err, "%s: tensors %s and %s overlap in the data", path, by[i - 1]->name, by[i]->name);
            free(by);
            goto fail;
        }
    }
    free(by);
    return f;
fail:
    cJSON_Delete(root);
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

static st_set *open_index(const char *dir, const char *ipath, char *err) {
    char *txt = tp_read_file(ipath, NULL, err);
    if (!txt) return NULL;
    st_set *s = tp_xcalloc(1, sizeof *s);
    cJSON *root = cJSON_Parse(txt);
    free(txt);
    const char *iname = "model.safetensors.index.json";
    if (!root || !cJSON_IsObject(root)) { tp_fail(err, "%s: not a JSON object", ipath); goto fail; }
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(wm)) { tp_fail(err, "%s: missing weight_map object", ipath); goto fail; }
    int n = cJSON_GetArraySize(wm);
    if (n == 0) { tp_fail(err, "%s: weight_map is empty", ipath); goto fail; }
    s->files = tp_xcalloc((size_t)n, sizeof *s->files);
    s->tensors = tp_xcalloc((size_t)n, sizeof *s->tensors);
    char path[4096];
    for (const cJSON *e = wm->child; e; e = e->next) {
        if (!cJSON_IsString(e) || !plain_name(e->valuestring)) {
            tp_fail(err, "%s: weight_map entry %s is not a file name in the folder", ipath, e->string ? e->string : "?");
            goto fail;
        }
        st_file *f = NULL;
        for (int i = 0; i < s->n_files && !f; i++)
            if (strcmp(s->files[i]->base, e->valuestring) == 0) f = s->files[i];
        if (!f) {
            snprintf(path, sizeof path, "%s/%s", dir, e->valuestring);
            if (!(f = tp_st_open(path, err))) goto fail;
            s->files[s->n_files++] = f;
        }
        const st_tensor *t = tp_st_find(f, e->string);
        if (!t) {
            tp_fail(err, "%s: tensor %s (listed in %s) is not in the file", f->path, e->string, iname);
            goto fail;
        }
        s->tensors[s->n_tensors++] = t;
    }
    cJSON_Delete(root);
    root = NULL;
    qsort(s->tensors, (size_t)s->n_tensors, sizeof *s->tensors, cmp_tensor_ptr);
    for (int i = 1; i < s->n_tensors; i++)
        if (strcmp(s->tensors[i - 1]->name, s->tensors[i]->name) == 0) {
            tp_fail(err, "%s: tensor %s is listed twice", ipath, s->tensors[i]->name);
            goto fail;
        }
    return s;
fail:
    cJSON_Delete(root);
    tp_st_set_free(s);
    return NULL;
}

st_set *tp_st_set_open(const char *dir, char *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (file_exists(path)) return open_index(dir, path, err);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (!file_exists(path)) {
        tp_fail(err, "%s: no model.safetensors or model.safetensors.index.json in the folder", dir);
        return NULL;
    }
    st_file *f = tp_st_open(path, err);
    if (!f) return NULL;
    st_set *s = tp_xcalloc(1, sizeof *s);
    s->files = tp_xcalloc(1, sizeof *s->files);
    s->files[s->n_files++] = f;
    s->tensors = tp_xcalloc((size_t)(f->n_tensors ? f->n_tensors : 1), sizeof *s->tensors);
    for (int i = 0; i < f->n_tensors; i++) s->tensors[s->n_tensors++] = &f->tensors[i]; /* already sorted */
    return s;
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
    char *txt = tp_read_file(path, NULL, err);
    if (!txt) return -1;
    cJSON *root = cJSON_Parse(txt);
    free(txt);
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    int64_t total = -1;
    if (!cJSON_IsObject(wm)) tp_fail(err, "%s: missing weight_map object", path);
    else {
        /* each distinct shard once (entries of one shard are usually adjacent, but need not be) */
        total = 0;
        for (const cJSON *e = wm->child; e && total >= 0; e = e->next) {
            if (!cJSON_IsString(e) || !plain_name(e->valuestring)) {
                total = tp_fail(err, "%s: weight_map entry %s is not a file name in the folder", path,
                                e->string ? e->string : "?");
                break;
            }
            bool seen = false;
            for (const cJSON *p = wm->child; p != e && !seen; p = p->next)
                seen = strcmp(p->valuestring, e->valuestring) == 0;
            if (seen) continue;
            char sp[4096];
            snprintf(sp, sizeof sp, "%s/%s", dir, e->valuestring);
            if (stat(sp, &st) != 0) total = tp_fail(err, "%s: cannot open: %s", sp, strerror(errno));
            else total += (int64_t)st.st_size;
        }
    }
    cJSON_Delete(root);
    return total;
}

/* ---- writer ---- */

typedef struct {
    char *name;
    char dtype[12];
    int n_dims;
    uint64_t shape[ST_MAX_DIMS];
    void *data;
    size_t nbytes;
} st_wtensor;

struct st_writer {
    st_wtensor *t;
    int n, cap;
    cJSON *meta;
    char bad[TP_ERR_LEN]; /* first invalid input, reported by save */
};

st_writer *tp_st_writer_new(void) {
    st_writer *w = tp_xcalloc(1, sizeof *w);
    w->meta = cJSON_CreateObject();
    return w;
}

void tp_st_writer_free(st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) { free(w->t[i].name); free(w->t[i].data); }
    free(w->t);
    cJSON_Delete(w->meta);
    free(w);
}

void tp_st_w_meta(st_writer *w, const char *key, const char *value) {
    cJSON_DeleteItemFromObjectCaseSensitive(w->meta, key);
    cJSON_AddStringToObject(w->meta, key, value);
}

void tp_st_w_tensor(st_writer *w, const char *name, const char *dtype, int n_dims, const uint64_t *shape,
                 const void *data) {
    size_t es = tp_st_dtype_size(dtype);
    if (!es && !w->bad[0]) tp_fail(w->bad, "tensor %s: unknown dtype '%s'", name, dtype);
    if ((n_dims < 0 || n_dims > ST_MAX_DIMS) && !w->bad[0]) tp_fail(w->bad, "tensor %s: %d dims", name, n_dims);
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->t[i].name, name) == 0 && !w->bad[0]) tp_fail(w->bad, "tensor %s added twice", name);
    if (!es || n_dims < 0 || n_dims > ST_MAX_DIMS) return;
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 16;
        w->t = tp_xrealloc(w->t, (size_t)w->cap * sizeof *w->t);
    }
    st_wtensor *t = &w->t[w->n++];
    memset(t, 0, sizeof *t);
    t->name = tp_xstrdup(name);
    snprintf(t->dtype, sizeof t->dtype, "%s", dtype);
    t->n_dims = n_dims;
    size_t n = 1;
    for (int i = 0; i < n_dims; i++) { t->shape[i] = shape[i]; n *= (size_t)shape[i]; }
    t->nbytes = n * es;
    t->data = tp_xmalloc(t->nbytes ? t->nbytes : 1);
    if (t->nbytes) memcpy(t->data, data, t->nbytes);
}

int tp_st_writer_save(st_writer *w, const char *path, char *err) {
    if (w->bad[0]) return tp_fail(err, "%s: %s", path, w->bad);
    cJSON *root = cJSON_CreateObject();
    if (cJSON_GetArraySize(w->meta) > 0) cJSON_AddItemToObject(root, "__metadata__", cJSON_Duplicate(w->meta, true));
    uint64_t off = 0;
    for (int i = 0; i < w->n; i++) {
        st_wtensor *t = &w->t[i];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "dtype", t->dtype);
        cJSON *sh = cJSON_AddArrayToObject(e, "shape");
        for (int d = 0; d < t->n_dims; d++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t->shape[d]));
        cJSON *o = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(o, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(o, cJSON_CreateNumber((double)(off + t->nbytes)));
        off += t->nbytes;
        cJSON_AddItemToObject(root, t->name, e);
    }
    char *hdr = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    size_t hl = strlen(hdr), padded = (hl + 7) / 8 * 8;
    FILE *fp = fopen(path, "wb");
    if (!fp) { free(hdr); return tp_fail(err, "%s: cannot create: %s", path, strerror(errno)); }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    bool ok = fwrite(len8, 1, 8, fp) == 8 && fwrite(hdr, 1, hl, fp) == hl;
    for (size_t i = hl; ok && i < padded; i++) ok = fputc(' ', fp) != EOF;
    for (int i = 0; ok && i < w->n; i++)
        ok = fwrite(w->t[i].data, 1, w->t[i].nbytes, fp) == w->t[i].nbytes;
    free(hdr);
    if (fclose(fp) != 0) ok = false;
    if (!ok) {
        remove(path);
        return tp_fail(err, "%s: write failed: %s", path, strerror(errno));
    }
    return 0;
}
