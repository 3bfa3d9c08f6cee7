/* st_write.c: safetensors writer (tests, fuzz harnesses and seeds make their own files).
 *
 * The header is built as a cJSON tree and printed once at save time; tensor
 * data is copied when added. Invalid input is remembered (first error wins)
 * and reported by save, so that callers can add a list of tensors and check
 * once. Layout reference: the huggingface/safetensors README ("Format").
 */
#include "tools/st_write.h"
#include "tools/xalloc.h"

#include "core/checked.h"
#include "core/common.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    st_writer *w = tool_xcalloc(1, sizeof *w);
    if (!(w->meta = cJSON_CreateObject())) tool_oom(sizeof(cJSON));
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
    if (!cJSON_AddStringToObject(w->meta, key, value) && !w->bad[0])
        tp_fail(w->bad, "metadata %s: out of memory", key);
}

void tp_st_w_tensor(st_writer *w, const char *name, const char *dtype, int n_dims, const uint64_t *shape,
                    const void *data) {
    size_t es = tp_st_dtype_size(dtype);
    if (!es && !w->bad[0]) tp_fail(w->bad, "tensor %s: unknown dtype '%s'", name, dtype);
    if ((n_dims < 0 || n_dims > ST_MAX_DIMS) && !w->bad[0]) tp_fail(w->bad, "tensor %s: %d dims", name, n_dims);
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->t[i].name, name) == 0 && !w->bad[0]) tp_fail(w->bad, "tensor %s added twice", name);
    if (!es || n_dims < 0 || n_dims > ST_MAX_DIMS) return;
    size_t nbytes = es;
    for (int i = 0; i < n_dims; i++)
        if (shape[i] > SIZE_MAX || !tp_mul_size(nbytes, (size_t)shape[i], &nbytes)) {
            if (!w->bad[0]) tp_fail(w->bad, "tensor %s: shape is too large", name);
            return;
        }
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 16;
        w->t = tool_xrealloc(w->t, (size_t)w->cap * sizeof *w->t);
    }
    st_wtensor *t = &w->t[w->n++];
    memset(t, 0, sizeof *t);
    t->name = tool_xstrdup(name);
    snprintf(t->dtype, sizeof t->dtype, "%s", dtype);
    t->n_dims = n_dims;
    for (int i = 0; i < n_dims; i++) t->shape[i] = shape[i];
    t->nbytes = nbytes;
    t->data = tool_xmalloc(nbytes);
    if (nbytes) memcpy(t->data, data, nbytes);
}

/* The header JSON: __metadata__ (when set), then each tensor with its offsets.
 * NULL when cJSON runs out of memory. */
static char *header_json(const st_writer *w) {
    cJSON *root = cJSON_CreateObject();
    bool ok = root != NULL;
    if (ok && cJSON_GetArraySize(w->meta) > 0) {
        cJSON *m = cJSON_Duplicate(w->meta, true);
        ok = m && cJSON_AddItemToObject(root, "__metadata__", m);
        if (!ok) cJSON_Delete(m);
    }
    uint64_t off = 0;
    for (int i = 0; ok && i < w->n; i++) {
        const st_wtensor *t = &w->t[i];
        cJSON *e = cJSON_CreateObject(), *sh = NULL, *o = NULL;
        ok = e && cJSON_AddStringToObject(e, "dtype", t->dtype) && (sh = cJSON_AddArrayToObject(e, "shape")) &&
             (o = cJSON_AddArrayToObject(e, "data_offsets"));
        for (int d = 0; ok && d < t->n_dims; d++) ok = cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t->shape[d]));
        ok = ok && cJSON_AddItemToArray(o, cJSON_CreateNumber((double)off)) &&
             cJSON_AddItemToArray(o, cJSON_CreateNumber((double)(off + t->nbytes)));
        off += t->nbytes;
        if (ok) ok = cJSON_AddItemToObject(root, t->name, e);
        if (!ok) cJSON_Delete(e);
    }
    char *hdr = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    return hdr;
}

int tp_st_writer_save(st_writer *w, const char *path, char *err) {
    if (w->bad[0]) return tp_fail(err, "%s: %s", path, w->bad);
    char *hdr = header_json(w);
    if (!hdr) return tp_fail(err, "%s: out of memory building the header", path);
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
