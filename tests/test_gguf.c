/* test_gguf.c: GGUF reader on the real model files, writer round trip, and
 * robustness against truncated and corrupted files. */
#include "test.h"

#include "core/common.h"
#include "format/gguf.h"
#include "tools/gguf_write.h"
#include "tensor/dtype.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MODELS SHARED_DIR "/models"

static int64_t get_int(const gguf_file *f, const char *key) {
    char err[TP_ERR_LEN] = "";
    int64_t v = -12345;
    if (!tp_gguf_get_int(f, key, &v, err)) return -12345;
    return v;
}

TEST(gguf_reads_stories260K) {
    char err[TP_ERR_LEN] = "";
    gguf_file *f = tp_gguf_open(MODELS "/stories260K.gguf", err);
    CHECK_MSG(f != NULL, "open failed: %s", err);
    REQUIRE(f != NULL);
    CHECK_INT_EQ(f->version, 3);
    CHECK_INT_EQ(f->alignment, 32);
    CHECK(f->data_offset % 32 == 0);
    char *arch = tp_gguf_get_string(f, "general.architecture");
    REQUIRE(arch != NULL);
    CHECK(strcmp(arch, "llama") == 0);
    free(arch);
    CHECK_INT_EQ(get_int(f, "llama.embedding_length"), 64);
    CHECK_INT_EQ(get_int(f, "llama.block_count"), 5);
    CHECK_INT_EQ(get_int(f, "llama.attention.head_count"), 8);
    CHECK_INT_EQ(get_int(f, "llama.attention.head_count_kv"), 4);
    CHECK_INT_EQ(get_int(f, "llama.feed_forward_length"), 172);
    CHECK(tp_gguf_find(f, "llama.rope.freq_base") == NULL);

    double eps = 0;
    CHECK(tp_gguf_get_float(f, "llama.attention.layer_norm_rms_epsilon", &eps, err));
    CHECK_NEAR(eps, 1e-5, 1e-9);

    /* type mismatch names the key */
    int64_t iv;
    err[0] = 0;
    CHECK(!tp_gguf_get_int(f, "general.architecture", &iv, err));
    CHECK(strstr(err, "general.architecture") != NULL);
    /* absent key: false with an empty err */
    strcpy(err, "stale");
    CHECK(!tp_gguf_get_int(f, "no.such.key", &iv, err));
    CHECK(err[0] == 0);

    const gguf_kv *tok = tp_gguf_find(f, "tokenizer.ggml.tokens");
    REQUIRE(tok != NULL);
    CHECK_INT_EQ(tok->value.type, GGUF_ARRAY);
    CHECK_INT_EQ(tok->value.v.arr.elem_type, GGUF_STRING);
    CHECK_INT_EQ(tok->value.v.arr.count, 512);
    gguf_str s0 = tp_gguf_arr_str(&tok->value, 0);
    CHECK(s0.len == 5 && memcmp(s0.str, "<unk>", 5) == 0);
    gguf_str s1 = tp_gguf_arr_str(&tok->value, 1);
    CHECK(s1.len == 3 && memcmp(s1.str, "<s>", 3) == 0);
    CHECK(tp_gguf_arr_str(&tok->value, 512).str == NULL); /* out of range */
    const gguf_kv *sc = tp_gguf_find(f, "tokenizer.ggml.scores");
    REQUIRE(sc != NULL);
    CHECK_INT_EQ(sc->value.v.arr.count, 512);
    CHECK_INT_EQ(sc->value.v.arr.elem_type, GGUF_F32);
    const gguf_kv *tt = tp_gguf_find(f, "tokenizer.ggml.token_type");
    REQUIRE(tt != NULL);
    CHECK_INT_EQ(tt->value.v.arr.count, 512);
    CHECK_INT_EQ(tp_gguf_arr_int(&tt->value, 0), 2); /* <unk> is UNKNOWN */
    CHECK_INT_EQ(tp_gguf_arr_int(&tt->value, 1), 3); /* <s> is CONTROL */

    const gguf_tensor *te = tp_gguf_find_tensor(f, "token_embd.weight");
    REQUIRE(te != NULL);
    CHECK_INT_EQ(te->n_dims, 2);
    CHECK_INT_EQ(te->ne[0], 64);
    CHECK_INT_EQ(te->ne[1], 512);
    CHECK_INT_EQ(te->type, TP_F32);
    CHECK_INT_EQ(te->nbytes, 64 * 512 * 4);
    CHECK((const uint8_t *)te->data >= f->map + f->data_offset);
    CHECK((const uint8_t *)te->data + te->nbytes <= f->map + f->map_size);
    /* token_embd and output hold the same values in this model */
    const gguf_tensor *out = tp_gguf_find_tensor(f, "output.weight");
    REQUIRE(out != NULL);
    CHECK(out->nbytes == te->nbytes && memcmp(out->data, te->data, te->nbytes) == 0);
    CHECK(tp_gguf_find_tensor(f, "blk.4.ffn_down.weight") != NULL);
    CHECK(tp_gguf_find_tensor(f, "blk.5.ffn_down.weight") == NULL);
    /* 2 + 9 per layer + output_norm */
    CHECK_INT_EQ(f->n_tensors, 3 + 9 * 5);
    tp_gguf_close(f);
}

static void check_opens(const char *path, uint32_t want_type_of_q) {
    char err[TP_ERR_LEN] = "";
    gguf_file *f = tp_gguf_open(path, err);
    CHECK_MSG(f != NULL, "%s: %s", path, err);
    if (!f) return;
    const gguf_tensor *q = tp_gguf_find_tensor(f, "blk.0.attn_q.weight");
    CHECK(q != NULL);
    if (q) CHECK_INT_EQ(q->type, want_type_of_q);
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        CHECK(t->data != NULL);
        CHECK((const uint8_t *)t->data + t->nbytes <= f->map + f->map_size);
    }
    tp_gguf_close(f);
}

TEST(gguf_reads_f16_q8_0_q4_0_and_tiny_random) {
    check_opens(MODELS "/generated/stories260K-f16.gguf", TP_F16);
    check_opens(MODELS "/generated/stories260K-q8_0.gguf", TP_Q8_0);
    check_opens(MODELS "/generated/stories260K-q4_0.gguf", TP_Q4_0);
    check_opens(MODELS "/llama-2-tiny-random.gguf", TP_F16);

    char err[TP_ERR_LEN] = "";
    gguf_file *f = tp_gguf_open(MODELS "/llama-2-tiny-random.gguf", err);
    REQUIRE(f != NULL);
    const gguf_kv *tok = tp_gguf_find(f, "tokenizer.ggml.tokens");
    REQUIRE(tok != NULL);
    CHECK_INT_EQ(tok->value.v.arr.count, 32000);
    tp_gguf_close(f);
}

/* ------------------------------------------------------------------------ */
/* helpers */

/* A reader error is one non-empty line that starts with the path. */
static void check_err_line(const char *err, const char *path) {
    CHECK_MSG(err[0] != 0, "%s: empty error message", path);
    CHECK_MSG(strncmp(err, path, strlen(path)) == 0, "error does not start with the path: %s", err);
    CHECK_MSG(strchr(err, '\n') == NULL, "error has a newline: %s", err);
}

static uint8_t *slurp(const char *path, size_t *n) {
    char err[TP_ERR_LEN];
    char *b = tp_read_file(path, n, err);
    CHECK_MSG(b != NULL, "%s", err);
    return (uint8_t *)b;
}

static void spit(const char *path, const void *p, size_t n) {
    FILE *fp = fopen(path, "wb");
    REQUIRE(fp != NULL);
    CHECK(fwrite(p, 1, n, fp) == n);
    fclose(fp);
}

/* Open path: it must either fail with a proper one-line error or give a file
 * whose every tensor lies inside the mapping and whose metadata reads back. */
static bool open_must_be_safe(const char *path) {
    char err[TP_ERR_LEN] = "";
    gguf_file *f = tp_gguf_open(path, err);
    if (!f) {
        if (getenv("GGUF_TEST_VERBOSE")) fprintf(stderr, "    %s\n", err);
        check_err_line(err, path);
        return false;
    }
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        const uint8_t *d = t->data;
        CHECK_MSG(d >= f->map + f->data_offset && t->nbytes <= f->map_size &&
                      (size_t)(d - f->map) + t->nbytes <= f->map_size,
                  "%s: tensor '%s' out of bounds", path, t->name);
        CHECK(t->nbytes == tp_dtype_row_bytes(t->type, (size_t)t->ne[0]) * t->ne[1] * t->ne[2] * t->ne[3]);
        volatile uint8_t touch = d[0];
        touch = d[t->nbytes - 1];
        (void)touch;
    }
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const gguf_value *v = &f->kv[i].value;
        if (v->type != GGUF_ARRAY) continue;
        uint64_t n = v->v.arr.count;
        if (n == 0) continue;
        /* first and last elements of any array read back without faults */
        if (v->v.arr.elem_type == GGUF_STRING) {
            gguf_str a = tp_gguf_arr_str(v, 0), b = tp_gguf_arr_str(v, n - 1);
            if (a.len) CHECK(a.str[0] || 1);
            if (b.len) CHECK(b.str[b.len - 1] || 1);
        } else {
            (void)tp_gguf_arr_int(v, n - 1);
            (void)tp_gguf_arr_float(v, n - 1);
        }
    }
    if (getenv("GGUF_TEST_VERBOSE")) fprintf(stderr, "    opened OK\n");
    tp_gguf_close(f);
    return true;
}

static const char *const k_models[] = {
    MODELS "/stories260K.gguf",
    MODELS "/llama-2-tiny-random.gguf",
    MODELS "/generated/stories260K-f16.gguf",
    MODELS "/generated/stories260K-q8_0.gguf",
    MODELS "/generated/stories260K-q4_0.gguf",
    MODELS "/generated/ggml-quant-vectors.gguf",
};
#define N_MODELS (sizeof k_models / sizeof k_models[0])

static int cmp_u64_desc(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Where the tensor infos start: the length field of the first tensor's name. */
static size_t tensor_infos_start(const gguf_file *f) {
    if (f->n_tensors == 0) return f->data_offset;
    const char *nm = f->tensors[0].name;
    size_t nl = strlen(nm);
    const uint8_t *p = memmem(f->map, f->data_offset, nm, nl);
    return p && p - f->map >= 8 ? (size_t)(p - f->map) - 8 : 24;
}

static bool read_file_bytes(const char *path, uint8_t *dst, size_t off, size_t n) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return false;
    bool ok = fseek(fp, (long)off, SEEK_SET) == 0 && fread(dst, 1, n, fp) == n;
    fclose(fp);
    return ok;
}

/* ------------------------------------------------------------------------ */
/* robustness */

/* Truncate a copy of every model at 64 points (header, metadata, tensor infos,
 * padding, data): the reader must fail cleanly or give in-bounds tensors. */
TEST(gguf_robust_truncated_models) {
    char *dir = test_tmpdir();
    REQUIRE(dir != NULL);
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s/trunc.gguf", dir);
    for (size_t m = 0; m < N_MODELS; m++) {
        char err[TP_ERR_LEN];
        gguf_file *f = tp_gguf_open(k_models[m], err);
        CHECK_MSG(f != NULL, "%s", err);
        if (!f) continue;
        size_t size = f->map_size, data = f->data_offset, infos = tensor_infos_start(f);
        size_t kv0_val = 24 + 8 + (size_t)f->kv[0].key.len; /* type field of the first key */
        uint64_t pts[64];
        int n = 0;
        static const size_t fixed[] = { 0, 1, 3, 4, 7, 8, 15, 16, 23, 24, 25, 31, 32 };
        for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) pts[n++] = fixed[i];
        pts[n++] = kv0_val;
        pts[n++] = kv0_val + 4;
        for (int i = 1; i <= 14; i++) pts[n++] = 24 + (infos - 24) * (uint64_t)i / 15; /* metadata */
        for (int i = 0; i < 8; i++) pts[n++] = infos + (data - infos) * (uint64_t)i / 8; /* tensor infos */
        pts[n++] = data > 0 ? data - 1 : 0;                                               /* padding */
        pts[n++] = data;
        pts[n++] = data + 1;
        while (n < 63) pts[n] = data + (size - data) * (uint64_t)(n - 43) / 20, n++; /* tensor data */
        pts[n++] = size - 1;
        qsort(pts, (size_t)n, sizeof pts[0], cmp_u64_desc);

        /* one copy, shrunk step by step: no re-copying of the model per point */
        uint8_t *all = slurp(k_models[m], &size);
        spit(tmp, all, size);
        free(all);
        tp_gguf_close(f);
        int opened = 0;
        for (int i = 0; i < n; i++) {
            if (pts[i] >= size) continue;
            REQUIRE(truncate(tmp, (off_t)pts[i]) == 0);
            if (open_must_be_safe(tmp)) opened++;
        }
        /* cutting into the header, metadata or tensor infos must always fail */
        CHECK_MSG(opened <= 1, "%s: %d truncated copies opened", k_models[m], opened);
    }
    unlink(tmp);
    rmdir(dir);
    free(dir);
}

static void patch(const char *path, size_t off, const void *bytes, size_t n) {
    FILE *fp = fopen(path, "r+b");
    REQUIRE(fp != NULL);
    CHECK(fseek(fp, (long)off, SEEK_SET) == 0);
    CHECK(fwrite(bytes, 1, n, fp) == n);
    fclose(fp);
}

/* Try `bytes` at off in the copy, check the reader, and restore the original. */
static bool corrupt_try(const char *path, size_t off, const void *bytes, size_t n) {
    uint8_t save[16];
    if (n > sizeof save || !read_file_bytes(path, save, off, n)) return false;
    patch(path, off, bytes, n);
    bool opened = open_must_be_safe(path);
    patch(path, off, save, n);
    return opened;
}

static bool corrupt_u64(const char *path, size_t off, uint64_t v) { return corrupt_try(path, off, &v, 8); }
static bool corrupt_u32(const char *path, size_t off, uint32_t v) { return corrupt_try(path, off, &v, 4); }
/* corruptions that no reader may accept */
#define MUST_FAIL(call) CHECK_MSG(!(call), "%s: accepted: %s", k_models[m], #call)

/* 64 single-byte corruptions at pseudo-random places in the first KBs of every
 * model, plus targeted ones: version, counts, a string length, a value type,
 * tensor dims/type/offset. */
TEST(gguf_robust_corrupted_models) {
    char *dir = test_tmpdir();
    REQUIRE(dir != NULL);
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s/corrupt.gguf", dir);
    for (size_t m = 0; m < N_MODELS; m++) {
        size_t size;
        uint8_t *all = slurp(k_models[m], &size);
        if (!all) continue;
        spit(tmp, all, size);
        char err[TP_ERR_LEN];
        gguf_file *f = tp_gguf_open(k_models[m], err);
        CHECK_MSG(f != NULL, "%s", err);
        if (!f) { free(all); continue; }

        size_t region = f->data_offset < 8192 ? f->data_offset : 8192;
        uint32_t s = 0x9e3779b9u ^ (uint32_t)m;
        for (int i = 0; i < 64; i++) {
            s = s * 1664525u + 1013904223u;
            size_t off = (s >> 8) % region;
            uint8_t b = (uint8_t)(all[off] ^ (uint8_t)(1 + (s >> 3) % 255));
            corrupt_try(tmp, off, &b, 1);
        }
        /* header fields */
        MUST_FAIL(corrupt_u32(tmp, 4, 1));
        MUST_FAIL(corrupt_u32(tmp, 4, 4));
        MUST_FAIL(corrupt_u32(tmp, 4, 0x03000000u));
        corrupt_u64(tmp, 8, f->n_tensors + 1);
        MUST_FAIL(corrupt_u64(tmp, 8, UINT64_MAX));
        MUST_FAIL(corrupt_u64(tmp, 8, (uint64_t)1 << 40));
        corrupt_u64(tmp, 16, f->n_kv + 1);
        MUST_FAIL(corrupt_u64(tmp, 16, UINT64_MAX / 13));
        /* first key: its length, then its value type */
        MUST_FAIL(corrupt_u64(tmp, 24, UINT64_MAX));
        corrupt_u64(tmp, 24, f->kv[0].key.len + 1);
        MUST_FAIL(corrupt_u64(tmp, 24, size));
        size_t type_off = 24 + 8 + (size_t)f->kv[0].key.len;
        MUST_FAIL(corrupt_u32(tmp, type_off, 13));
        corrupt_u32(tmp, type_off, GGUF_ARRAY);
        corrupt_u32(tmp, type_off, GGUF_STRING);
        MUST_FAIL(corrupt_u32(tmp, type_off, UINT32_MAX));
        /* the biggest array: element type and count */
        const gguf_kv *big = NULL;
        for (uint64_t i = 0; i < f->n_kv; i++)
            if (f->kv[i].value.type == GGUF_ARRAY && (!big || f->kv[i].value.v.arr.count > big->value.v.arr.count))
                big = &f->kv[i];
        if (big) {
            size_t at = (size_t)((const uint8_t *)big->key.str - f->map) + (size_t)big->key.len + 4;
            corrupt_u32(tmp, at, GGUF_ARRAY);
            corrupt_u32(tmp, at, GGUF_U64);
            MUST_FAIL(corrupt_u32(tmp, at, 99));
            MUST_FAIL(corrupt_u64(tmp, at + 4, UINT64_MAX));
            MUST_FAIL(corrupt_u64(tmp, at + 4, UINT64_MAX / 4 + 1)); /* count * 4 wraps around */
            corrupt_u64(tmp, at + 4, big->value.v.arr.count + 1);
            if (big->value.v.arr.elem_type == GGUF_STRING && big->value.v.arr.count) {
                /* the first string's length */
                size_t s0 = (size_t)((const uint8_t *)big->value.v.arr.items[0].v.s.str - f->map) - 8;
                MUST_FAIL(corrupt_u64(tmp, s0, UINT64_MAX));
                MUST_FAIL(corrupt_u64(tmp, s0, size));
            }
        }
        /* the last tensor's info: n_dims, ne[0], type, offset */
        if (f->n_tensors) {
            const gguf_tensor *t = &f->tensors[f->n_tensors - 1];
            const uint8_t *nm = memmem(f->map + tensor_infos_start(f), f->data_offset - tensor_infos_start(f),
                                       t->name, strlen(t->name) + 0);
            /* names are not NUL-terminated in the file: find the last occurrence with a matching length */
            const uint8_t *last = NULL;
            while (nm) {
                uint64_t len;
                memcpy(&len, nm - 8, 8);
                if (len == strlen(t->name)) last = nm;
                size_t from = (size_t)(nm - f->map) + 1;
                nm = memmem(f->map + from, f->data_offset - from, t->name, strlen(t->name));
            }
            CHECK(last != NULL);
            if (last) {
                size_t nd = (size_t)(last - f->map) + strlen(t->name);
                size_t ne0 = nd + 4, ty = ne0 + 8 * t->n_dims, of = ty + 4;
                MUST_FAIL(corrupt_u32(tmp, nd, 5));
                corrupt_u32(tmp, nd, 0);
                MUST_FAIL(corrupt_u32(tmp, nd, UINT32_MAX));
                MUST_FAIL(corrupt_u64(tmp, ne0, 0));
                MUST_FAIL(corrupt_u64(tmp, ne0, UINT64_MAX));
                MUST_FAIL(corrupt_u64(tmp, ne0, (uint64_t)1 << 62));
                corrupt_u64(tmp, ne0, t->ne[0] + 1);
                MUST_FAIL(corrupt_u32(tmp, ty, 99));
                MUST_FAIL(corrupt_u32(tmp, ty, 4));
                corrupt_u32(tmp, ty, TP_Q4_K);
                corrupt_u64(tmp, of, t->offset + f->alignment);
                MUST_FAIL(corrupt_u64(tmp, of, t->offset + 1));
                MUST_FAIL(corrupt_u64(tmp, of, UINT64_MAX - f->alignment + 1));
                MUST_FAIL(corrupt_u64(tmp, of, size));
            }
        }
        tp_gguf_close(f);
        free(all);
    }
    unlink(tmp);
    rmdir(dir);
    free(dir);
}

/* ------------------------------------------------------------------------ */
/* specific rejections */

TEST(gguf_rejects_missing_and_non_gguf_files) {
    char err[TP_ERR_LEN] = "";
    const char *missing = "/nonexistent-dir/x.gguf";
    CHECK(tp_gguf_open(missing, err) == NULL);
    CHECK_MSG(strcmp(err, "/nonexistent-dir/x.gguf: cannot open: No such file or directory") == 0, "%s", err);

    char *dir = test_tmpdir();
    REQUIRE(dir != NULL);
    char p[512];
    snprintf(p, sizeof p, "%s/text.gguf", dir);
    const char *text = "this is a text file, not a model\n";
    spit(p, text, strlen(text));
    err[0] = 0;
    CHECK(tp_gguf_open(p, err) == NULL);
    check_err_line(err, p);
    CHECK_MSG(strstr(err, ": not a GGUF file (bad magic)") != NULL, "%s", err);

    spit(p, "", 0); /* empty */
    err[0] = 0;
    CHECK(tp_gguf_open(p, err) == NULL);
    check_err_line(err, p);
    CHECK_MSG(strstr(err, "not a GGUF file") != NULL, "%s", err);

    err[0] = 0;
    CHECK(tp_gguf_open(dir, err) == NULL); /* a directory */
    check_err_line(err, dir);
    unlink(p);
    rmdir(dir);
    free(dir);
}

/* A small file made with the writer, in memory, for patching. */
static uint8_t *small_file(const char *dir, size_t *n, char *path_out) {
    gguf_writer *w = tp_gguf_writer_new(0);
    tp_gguf_w_str(w, "general.architecture", "llama");
    tp_gguf_w_u32(w, "llama.block_count", 1);
    float a[64], b[32];
    for (int i = 0; i < 64; i++) a[i] = (float)i;
    for (int i = 0; i < 32; i++) b[i] = (float)-i;
    uint64_t ne_a[2] = { 32, 2 }, ne_b[1] = { 32 };
    tp_gguf_w_tensor(w, "a.weight", TP_F32, 2, ne_a, a);
    tp_gguf_w_tensor(w, "b.weight", TP_F32, 1, ne_b, b);
    sprintf(path_out, "%s/small.gguf", dir);
    char err[TP_ERR_LEN] = "";
    int rc = tp_gguf_writer_save(w, path_out, err);
    CHECK_MSG(rc == 0, "%s", err);
    tp_gguf_writer_free(w);
    return slurp(path_out, n);
}

/* offset of the tensor info of `name` (its name length field) in buf */
static size_t info_at(const uint8_t *buf, size_t n, const char *name) {
    size_t nl = strlen(name);
    for (size_t i = 8; i + nl <= n; i++) {
        uint64_t len;
        memcpy(&len, buf + i - 8, 8);
        if (len == nl && memcmp(buf + i, name, nl) == 0) return i - 8;
    }
    return 0;
}

/* Write buf with `bytes` at off to path, open it, return the reader's error ("" if it opened). */
static void open_patched(const char *path, const uint8_t *buf, size_t n, size_t off, const void *bytes, size_t bn,
                         char *err) {
    uint8_t *c = malloc(n);
    memcpy(c, buf, n);
    memcpy(c + off, bytes, bn);
    spit(path, c, n);
    free(c);
    err[0] = 0;
    gguf_file *f = tp_gguf_open(path, err);
    if (f) {
        err[0] = 0;
        tp_gguf_close(f);
    } else {
        check_err_line(err, path);
    }
}

TEST(gguf_rejects_bad_versions_types_and_layout) {
    char *dir = test_tmpdir();
    REQUIRE(dir != NULL);
    char path[512], p2[512], err[TP_ERR_LEN];
    size_t n;
    uint8_t *buf = small_file(dir, &n, path);
    REQUIRE(buf != NULL);
    snprintf(p2, sizeof p2, "%s/patched.gguf", dir);
    uint32_t u32;
    uint64_t u64;

    u32 = 2; /* v2 has the same layout: accepted */
    open_patched(p2, buf, n, 4, &u32, 4, err);
    CHECK_MSG(err[0] == 0, "v2 rejected: %s", err);
    u32 = 1;
    open_patched(p2, buf, n, 4, &u32, 4, err);
    CHECK_MSG(strstr(err, ": unsupported GGUF version 1") != NULL, "%s", err);
    u32 = 4;
    open_patched(p2, buf, n, 4, &u32, 4, err);
    CHECK_MSG(strstr(err, ": unsupported GGUF version 4") != NULL, "%s", err);

    size_t ib = info_at(buf, n, "b.weight");
    REQUIRE(ib > 0);
    size_t b_ndims = ib + 8 + 8, b_ne0 = b_ndims + 4, b_type = b_ne0 + 8, b_off = b_type + 4;
    u32 = 99;
    open_patched(p2, buf, n, b_type, &u32, 4, err);
    CHECK_MSG(strstr(err, "tensor 'b.weight' has unknown type 99") != NULL, "%s", err);
    u32 = 31; /* a removed ggml type id */
    open_patched(p2, buf, n, b_type, &u32, 4, err);
    CHECK_MSG(strstr(err, "tensor 'b.weight' has unknown type 31") != NULL, "%s", err);
    u32 = TP_Q8_0; /* 32 elements of Q8_0 = 34 bytes: fits, accepted */
    open_patched(p2, buf, n, b_type, &u32, 4, err);
    CHECK_MSG(err[0] == 0, "%s", err);
    u32 = TP_Q4_K; /* 32 is not a multiple of 256 */
    open_patched(p2, buf, n, b_type, &u32, 4, err);
    CHECK_MSG(strstr(err, "'b.weight' row length 32 is not a multiple of the Q4_K block size 256") != NULL, "%s", err);
    u32 = 5;
    open_patched(p2, buf, n, b_ndims, &u32, 4, err);
    CHECK_MSG(strstr(err, "'b.weight' has 5 dimensions") != NULL, "%s", err);
    u64 = 0;
    open_patched(p2, buf, n, b_ne0, &u64, 8, err);
    CHECK_MSG(strstr(err, "'b.weight' has invalid size 0") != NULL, "%s", err);
    u64 = 1000;
    open_patched(p2, buf, n, b_ne0, &u64, 8, err);
    CHECK_MSG(strstr(err, "tensor 'b.weight' data [") && strstr(err, "exceeds file size"), "%s", err);
    u64 = 16; /* not a multiple of the alignment */
    open_patched(p2, buf, n, b_off, &u64, 8, err);
    CHECK_MSG(strstr(err, "'b.weight' offset 16 is not a multiple of the alignment 32") != NULL, "%s", err);
    u64 = UINT64_MAX - 31; /* offset + size wraps around */
    open_patched(p2, buf, n, b_off, &u64, 8, err);
    CHECK_MSG(strstr(err, "'b.weight' data [") != NULL, "%s", err);
    open_patched(p2, buf, n, ib + 8, "a", 1, err); /* b.weight -> a.weight */
    CHECK_MSG(strstr(err, "duplicate tensor name 'a.weight'") != NULL, "%s", err);

    /* element count overflow: a [2^62, 8] tensor */
    size_t ia = info_at(buf, n, "a.weight");
    uint64_t ne2[2] = { (uint64_t)1 << 62, 8 };
    open_patched(p2, buf, n, ia + 8 + 8 + 4, ne2, 16, err);
    CHECK_MSG(strstr(err, "'a.weight'") && strstr(err, "overflows"), "%s", err);

    free(buf);

    /* duplicate keys and a bad general.alignment via hand-made metadata */
    gguf_writer *w = tp_gguf_writer_new(0);
    tp_gguf_w_u32(w, "x.aaaa", 1);
    tp_gguf_w_u32(w, "x.bbbb", 2);
    CHECK(tp_gguf_writer_save(w, path, err) == 0);
    tp_gguf_writer_free(w);
    buf = slurp(path, &n);
    const uint8_t *kb = memmem(buf, n, "x.bbbb", 6);
    REQUIRE(kb != NULL);
    open_patched(p2, buf, n, (size_t)(kb - buf), "x.aaaa", 6, err);
    CHECK_MSG(strstr(err, "duplicate metadata key 'x.aaaa'") != NULL, "%s", err);
    open_patched(p2, buf, n, (size_t)(kb - buf), "x.aaab", 6, err);
    CHECK_MSG(err[0] == 0, "%s", err);
    free(buf);

    w = tp_gguf_writer_new(0);
    tp_gguf_w_u32(w, "general.alignmenx", 48);
    CHECK(tp_gguf_writer_save(w, path, err) == 0);
    tp_gguf_writer_free(w);
    buf = slurp(path, &n);
    kb = memmem(buf, n, "general.alignmenx", 17);
    REQUIRE(kb != NULL);
    open_patched(p2, buf, n, (size_t)(kb - buf) + 16, "t", 1, err);
    CHECK_MSG(strstr(err, "general.alignment 48 is not a power of two") != NULL, "%s", err);
    buf[(size_t)(kb - buf) + 16] = 't'; /* now really "general.alignment" */
    u32 = GGUF_F32;                     /* ... of the wrong type */
    open_patched(p2, buf, n, (size_t)(kb - buf) + 17, &u32, 4, err);
    CHECK_MSG(strstr(err, "general.alignment") && strstr(err, "type f32"), "%s", err);
    u32 = 64; /* a good value */
    open_patched(p2, buf, n, (size_t)(kb - buf) + 21, &u32, 4, err);
    CHECK_MSG(err[0] == 0, "%s", err);
    free(buf);

    /* arrays nested deeper than the reader allows */
    gguf_value lv[12];
    memset(lv, 0, sizeof lv);
    uint32_t inner[2] = { 7, 8 };
    lv[0].type = GGUF_ARRAY;
    lv[0].v.arr.elem_type = GGUF_U32;
    lv[0].v.arr.count = 2;
    lv[0].v.arr.raw = inner;
    for (int i = 1; i < 12; i++) {
        lv[i].type = GGUF_ARRAY;
        lv[i].v.arr.elem_type = GGUF_ARRAY;
        lv[i].v.arr.count = 1;
        lv[i].v.arr.items = &lv[i - 1];
    }
    w = tp_gguf_writer_new(0);
    tp_gguf_w_value(w, "deep", &lv[11]);
    CHECK(tp_gguf_writer_save(w, path, err) == 0);
    tp_gguf_writer_free(w);
    err[0] = 0;
    gguf_file *f = tp_gguf_open(path, err);
    CHECK(f == NULL);
    CHECK_MSG(strstr(err, "'deep'") && strstr(err, "deeper"), "%s", err);
    tp_gguf_close(f);

    unlink(path);
    unlink(p2);
    rmdir(dir);
    free(dir);
}

/* ------------------------------------------------------------------------ */
/* writer */

/* Re-writing every model (all keys, all tensors) reproduces the file byte for byte. */
TEST(gguf_writer_rewrites_models_byte_identical) {
    char *dir = test_tmpdir();
    REQUIRE(dir != NULL);
    char out[512];
    snprintf(out, sizeof out, "%s/copy.gguf", dir);
    for (size_t m = 0; m < N_MODELS; m++) {
        char err[TP_ERR_LEN] = "";
        gguf_file *f = tp_gguf_open(k_models[m], err);
        CHECK_MSG(f != NULL, "%s", err);
        if (!f) continue;
        gguf_writer *w = tp_gguf_writer_new((uint32_t)f->alignment);
        tp_gguf_w_copy_kv(w, f, NULL);
        for (uint64_t i = 0; i < f->n_tensors; i++) {
            const gguf_tensor *t = &f->tensors[i];
            tp_gguf_w_tensor_ref(w, t->name, t->type, t->n_dims, t->ne, t->data);
        }
        CHECK_MSG(tp_gguf_writer_save(w, out, err) == 0, "%s", err);
        tp_gguf_writer_free(w);
        size_t n;
        uint8_t *b = slurp(out, &n);
        CHECK_MSG(b && n == f->map_size && memcmp(b, f->map, n) == 0, "%s: copy differs", k_models[m]);
        free(b);
        tp_gguf_close(f);
    }
    unlink(out);
    rmdir(dir);
    free(dir);
}

typedef struct { float scale; } fill_ctx;
static void fill_rows(void *ctx, uint64_t row, void *dst, size_t row_bytes) {
    float *d = dst;
    for (size_t i = 0; i < row_bytes / 4; i++) d[i] = ((fill_ctx *)ctx)->scale * (float)(row * 1000 + i);
}

static void roundtrip_with_alignment(uint32_t align) {
    char *dir = test_tmpdir();
    REQUIRE(dir != NULL);
    char path[512], err[TP_ERR_LEN] = "";
    snprintf(path, sizeof path, "%s/rt.gguf", dir);

    gguf_writer *w = tp_gguf_writer_new(align);
    tp_gguf_w_u8(w, "t.u8", 200);
    tp_gguf_w_i8(w, "t.i8", -100);
    tp_gguf_w_u16(w, "t.u16", 60000);
    tp_gguf_w_i16(w, "t.i16", -30000);
    tp_gguf_w_u32(w, "t.u32", 4000000000u);
    tp_gguf_w_i32(w, "t.i32", -2000000000);
    tp_gguf_w_f32(w, "t.f32", 0.1f);
    tp_gguf_w_bool(w, "t.bool", true);
    tp_gguf_w_bool(w, "t.bool0", false);
    tp_gguf_w_str(w, "t.str", "héllo ▁world");
    tp_gguf_w_str(w, "t.empty", "");
    tp_gguf_w_u64(w, "t.u64", UINT64_MAX);
    tp_gguf_w_i64(w, "t.i64", INT64_MIN);
    tp_gguf_w_f64(w, "t.f64", 1e300);
    tp_gguf_w_u32(w, "t.replaced", 1);
    tp_gguf_w_str(w, "t.replaced", "second"); /* replaces the u32 */
    const char *strs[3] = { "a", "", "<0x0A>" };
    tp_gguf_w_arr_str(w, "t.arr_str", strs, 3);
    float fa[4] = { 1.5f, -2.0f, 0.0f, 3e-8f };
    tp_gguf_w_arr_f32(w, "t.arr_f32", fa, 4);
    int32_t ia[3] = { -1, 0, 2147483647 };
    tp_gguf_w_arr_i32(w, "t.arr_i32", ia, 3);
    tp_gguf_w_arr_i32(w, "t.arr_empty", NULL, 0);
    uint16_t ua[2] = { 1, 65535 };
    tp_gguf_w_arr(w, "t.arr_u16", GGUF_U16, ua, 2);
    double da[2] = { 0.25, -1e-300 };
    tp_gguf_w_arr(w, "t.arr_f64", GGUF_F64, da, 2);
    uint8_t ba[3] = { 1, 0, 1 };
    tp_gguf_w_arr(w, "t.arr_bool", GGUF_BOOL, ba, 3);
    /* array of arrays: [[1, 2, 3], []] of i64, and an array of arrays of strings */
    int64_t i64s[3] = { 1, 2, 3 };
    gguf_value inner[2], outer, sitems[2], sinner, souter;
    memset(inner, 0, sizeof inner);
    memset(&outer, 0, sizeof outer);
    inner[0].type = inner[1].type = GGUF_ARRAY;
    inner[0].v.arr.elem_type = inner[1].v.arr.elem_type = GGUF_I64;
    inner[0].v.arr.count = 3;
    inner[0].v.arr.raw = i64s;
    outer.type = GGUF_ARRAY;
    outer.v.arr.elem_type = GGUF_ARRAY;
    outer.v.arr.count = 2;
    outer.v.arr.items = inner;
    tp_gguf_w_value(w, "t.nested", &outer);
    memset(sitems, 0, sizeof sitems);
    sitems[0].type = sitems[1].type = GGUF_STRING;
    sitems[0].v.s = (gguf_str){ 3, "foo" };
    sitems[1].v.s = (gguf_str){ 2, "ba" };
    memset(&sinner, 0, sizeof sinner);
    sinner.type = GGUF_ARRAY;
    sinner.v.arr.elem_type = GGUF_STRING;
    sinner.v.arr.count = 2;
    sinner.v.arr.items = sitems;
    memset(&souter, 0, sizeof souter);
    souter.type = GGUF_ARRAY;
    souter.v.arr.elem_type = GGUF_ARRAY;
    souter.v.arr.count = 1;
    souter.v.arr.items = &sinner;
    tp_gguf_w_value(w, "t.nested_str", &souter);

    /* tensors of several types */
    float src[2 * 256];
    for (int i = 0; i < 512; i++) src[i] = sinf((float)i * 0.37f) * 3.0f;
    uint8_t q8[2 * 8 * 34], q4[2 * 8 * 18], h16[512 * 2], qk[2 * 144];
    for (int r = 0; r < 2; r++) {
        tp_quantize_row(TP_Q8_0, src + 256 * r, q8 + r * 8 * 34, 256);
        tp_quantize_row(TP_Q4_0, src + 256 * r, q4 + r * 8 * 18, 256);
    }
    tp_quantize_row(TP_F16, src, h16, 512);
    for (size_t i = 0; i < sizeof qk; i++) qk[i] = (uint8_t)(i * 7 + 3);
    uint64_t ne_f32[2] = { 3, 5 }, ne_q[2] = { 256, 2 }, ne_h[3] = { 64, 4, 2 }, ne_k[1] = { 512 },
             ne_r[2] = { 16, 3 };
    float small[15];
    for (int i = 0; i < 15; i++) small[i] = (float)i / 7.0f;
    tp_gguf_w_tensor(w, "small.f32", TP_F32, 2, ne_f32, small); /* 60 bytes: needs padding */
    tp_gguf_w_tensor(w, "q8", TP_Q8_0, 2, ne_q, q8);
    tp_gguf_w_tensor(w, "q4", TP_Q4_0, 2, ne_q, q4);
    tp_gguf_w_tensor(w, "h16", TP_F16, 3, ne_h, h16);
    tp_gguf_w_tensor(w, "q4k", TP_Q4_K, 1, ne_k, qk);
    fill_ctx fc = { 0.5f };
    tp_gguf_w_tensor_rows(w, "rows", TP_F32, 2, ne_r, fill_rows, &fc);
    int rc = tp_gguf_writer_save(w, path, err);
    CHECK_MSG(rc == 0, "%s", err);
    tp_gguf_writer_free(w);

    gguf_file *f = tp_gguf_open(path, err);
    CHECK_MSG(f != NULL, "%s", err);
    REQUIRE(f != NULL);
    uint32_t want_align = align ? align : 32;
    CHECK_INT_EQ(f->version, 3);
    CHECK_INT_EQ(f->alignment, want_align);
    CHECK_INT_EQ(f->data_offset % want_align, 0);
    CHECK((tp_gguf_find(f, "general.alignment") != NULL) == (want_align != 32));
    int64_t iv;
    double dv;
    bool bv;
    CHECK(tp_gguf_get_int(f, "t.u8", &iv, err) && iv == 200);
    CHECK(tp_gguf_get_int(f, "t.i8", &iv, err) && iv == -100);
    CHECK(tp_gguf_get_int(f, "t.u16", &iv, err) && iv == 60000);
    CHECK(tp_gguf_get_int(f, "t.i16", &iv, err) && iv == -30000);
    CHECK(tp_gguf_get_int(f, "t.u32", &iv, err) && iv == 4000000000ll);
    CHECK(tp_gguf_get_int(f, "t.i32", &iv, err) && iv == -2000000000);
    CHECK(tp_gguf_get_int(f, "t.i64", &iv, err) && iv == INT64_MIN);
    err[0] = 0;
    CHECK(!tp_gguf_get_int(f, "t.u64", &iv, err)); /* does not fit in int64 */
    CHECK(strstr(err, "t.u64") != NULL);
    CHECK_INT_EQ(tp_gguf_find(f, "t.u64")->value.v.u == UINT64_MAX, 1);
    CHECK(tp_gguf_get_float(f, "t.f32", &dv, err) && dv == (double)0.1f);
    CHECK(tp_gguf_get_float(f, "t.f64", &dv, err) && dv == 1e300);
    CHECK(tp_gguf_get_float(f, "t.u16", &dv, err) && dv == 60000.0); /* ints convert to float */
    CHECK(tp_gguf_get_bool(f, "t.bool", &bv, err) && bv);
    CHECK(tp_gguf_get_bool(f, "t.bool0", &bv, err) && !bv);
    err[0] = 0;
    CHECK(!tp_gguf_get_bool(f, "t.str", &bv, err) && strstr(err, "t.str"));
    err[0] = 0;
    CHECK(!tp_gguf_get_float(f, "t.arr_f32", &dv, err) && strstr(err, "t.arr_f32"));
    char *s = tp_gguf_get_string(f, "t.str");
    CHECK(s && strcmp(s, "héllo ▁world") == 0);
    free(s);
    s = tp_gguf_get_string(f, "t.empty");
    CHECK(s && s[0] == 0);
    free(s);
    s = tp_gguf_get_string(f, "t.replaced");
    CHECK(s && strcmp(s, "second") == 0);
    free(s);
    CHECK(tp_gguf_get_string(f, "t.u8") == NULL);

    const gguf_kv *kv = tp_gguf_find(f, "t.arr_str");
    REQUIRE(kv != NULL);
    CHECK_INT_EQ(kv->value.v.arr.count, 3);
    for (int i = 0; i < 3; i++) {
        gguf_str g = tp_gguf_arr_str(&kv->value, (uint64_t)i);
        CHECK(g.len == strlen(strs[i]) && memcmp(g.str, strs[i], g.len) == 0);
    }
    kv = tp_gguf_find(f, "t.arr_f32");
    REQUIRE(kv != NULL);
    for (int i = 0; i < 4; i++) CHECK(tp_gguf_arr_float(&kv->value, (uint64_t)i) == (double)fa[i]);
    kv = tp_gguf_find(f, "t.arr_i32");
    REQUIRE(kv != NULL);
    for (int i = 0; i < 3; i++) CHECK(tp_gguf_arr_int(&kv->value, (uint64_t)i) == ia[i]);
    kv = tp_gguf_find(f, "t.arr_empty");
    CHECK(kv && kv->value.v.arr.count == 0 && kv->value.v.arr.elem_type == GGUF_I32);
    kv = tp_gguf_find(f, "t.arr_u16");
    CHECK(kv && tp_gguf_arr_int(&kv->value, 1) == 65535);
    kv = tp_gguf_find(f, "t.arr_f64");
    CHECK(kv && tp_gguf_arr_float(&kv->value, 1) == -1e-300);
    kv = tp_gguf_find(f, "t.arr_bool");
    CHECK(kv && kv->value.v.arr.elem_type == GGUF_BOOL && tp_gguf_arr_int(&kv->value, 2) == 1 &&
          tp_gguf_arr_int(&kv->value, 1) == 0);
    kv = tp_gguf_find(f, "t.nested");
    REQUIRE(kv != NULL);
    CHECK(kv->value.v.arr.elem_type == GGUF_ARRAY && kv->value.v.arr.count == 2);
    const gguf_value *in0 = &kv->value.v.arr.items[0], *in1 = &kv->value.v.arr.items[1];
    CHECK(in0->v.arr.elem_type == GGUF_I64 && in0->v.arr.count == 3 && tp_gguf_arr_int(in0, 2) == 3);
    CHECK(in1->v.arr.elem_type == GGUF_I64 && in1->v.arr.count == 0);
    kv = tp_gguf_find(f, "t.nested_str");
    REQUIRE(kv != NULL && kv->value.v.arr.count == 1);
    gguf_str g = tp_gguf_arr_str(&kv->value.v.arr.items[0], 1);
    CHECK(g.len == 2 && memcmp(g.str, "ba", 2) == 0);

    CHECK_INT_EQ(f->n_tensors, 6);
    const gguf_tensor *t = tp_gguf_find_tensor(f, "small.f32");
    CHECK(t && t->n_dims == 2 && t->ne[0] == 3 && t->ne[1] == 5 && t->nbytes == 60 &&
          memcmp(t->data, small, 60) == 0);
    t = tp_gguf_find_tensor(f, "q8");
    CHECK(t && t->type == TP_Q8_0 && t->nbytes == sizeof q8 && memcmp(t->data, q8, sizeof q8) == 0);
    t = tp_gguf_find_tensor(f, "q4");
    CHECK(t && t->type == TP_Q4_0 && t->nbytes == sizeof q4 && memcmp(t->data, q4, sizeof q4) == 0);
    t = tp_gguf_find_tensor(f, "h16");
    CHECK(t && t->type == TP_F16 && t->n_dims == 3 && t->ne[2] == 2 && memcmp(t->data, h16, sizeof h16) == 0);
    t = tp_gguf_find_tensor(f, "q4k");
    CHECK(t && t->type == TP_Q4_K && t->nbytes == sizeof qk && memcmp(t->data, qk, sizeof qk) == 0);
    t = tp_gguf_find_tensor(f, "rows");
    REQUIRE(t != NULL);
    CHECK(t->nbytes == 16 * 3 * 4);
    float row2[16];
    memcpy(row2, (const float *)t->data + 32, sizeof row2);
    CHECK(row2[5] == 0.5f * 2005.0f);
    for (uint64_t i = 0; i < f->n_tensors; i++) CHECK(f->tensors[i].offset % want_align == 0);
    /* the Q8_0 data reads back into what it quantized to */
    float y[256];
    tp_dequantize_row(TP_Q8_0, tp_gguf_find_tensor(f, "q8")->data, y, 256);
    for (int i = 0; i < 256; i++) CHECK_NEAR(y[i], src[i], 3.0 / 127 * 0.51 + 1e-3);
    tp_gguf_close(f);
    unlink(path);
    rmdir(dir);
    free(dir);
}

TEST(gguf_writer_roundtrip_all_types_default_alignment) { roundtrip_with_alignment(0); }
TEST(gguf_writer_roundtrip_all_types_alignment_64) { roundtrip_with_alignment(64); }

/* Copying only the tokenizer keys of a model makes a vocab-only file. */
TEST(gguf_writer_copy_kv_prefix) {
    char *dir = test_tmpdir();
    REQUIRE(dir != NULL);
    char path[512], err[TP_ERR_LEN] = "";
    snprintf(path, sizeof path, "%s/vocab.gguf", dir);
    gguf_file *src = tp_gguf_open(MODELS "/stories260K.gguf", err);
    REQUIRE(src != NULL);
    gguf_writer *w = tp_gguf_writer_new(0);
    tp_gguf_w_str(w, "general.architecture", "llama");
    tp_gguf_w_copy_kv(w, src, "tokenizer.");
    CHECK_MSG(tp_gguf_writer_save(w, path, err) == 0, "%s", err);
    tp_gguf_writer_free(w);
    gguf_file *f = tp_gguf_open(path, err);
    CHECK_MSG(f != NULL, "%s", err);
    REQUIRE(f != NULL);
    uint64_t n_tok = 0;
    for (uint64_t i = 0; i < src->n_kv; i++)
        if (src->kv[i].key.len >= 10 && memcmp(src->kv[i].key.str, "tokenizer.", 10) == 0) n_tok++;
    CHECK(n_tok >= 3);
    CHECK_INT_EQ(f->n_kv, n_tok + 1);
    CHECK_INT_EQ(f->n_tensors, 0);
    CHECK(tp_gguf_find(f, "llama.block_count") == NULL);
    const gguf_kv *a = tp_gguf_find(src, "tokenizer.ggml.tokens"), *b = tp_gguf_find(f, "tokenizer.ggml.tokens");
    REQUIRE(a && b);
    CHECK_INT_EQ(b->value.v.arr.count, 512);
    for (uint64_t i = 0; i < 512; i++) {
        gguf_str x = tp_gguf_arr_str(&a->value, i), y = tp_gguf_arr_str(&b->value, i);
        CHECK(x.len == y.len && memcmp(x.str, y.str, x.len) == 0);
    }
    a = tp_gguf_find(src, "tokenizer.ggml.scores");
    b = tp_gguf_find(f, "tokenizer.ggml.scores");
    REQUIRE(a && b);
    CHECK(memcmp(a->value.v.arr.raw, b->value.v.arr.raw, 512 * 4) == 0);
    tp_gguf_close(f);
    tp_gguf_close(src);
    unlink(path);
    rmdir(dir);
    free(dir);
}

/* Invalid tensors are reported by save, naming the tensor; nothing is written. */
TEST(gguf_writer_reports_invalid_input) {
    char *dir = test_tmpdir();
    REQUIRE(dir != NULL);
    char path[512], err[TP_ERR_LEN] = "";
    snprintf(path, sizeof path, "%s/bad.gguf", dir);
    uint8_t data[1024] = { 0 };
    uint64_t ne[2] = { 48, 1 };

    gguf_writer *w = tp_gguf_writer_new(0);
    tp_gguf_w_tensor(w, "odd", TP_Q8_0, 2, ne, data);
    CHECK(tp_gguf_writer_save(w, path, err) == -1);
    CHECK_MSG(strstr(err, "'odd'") && strstr(err, "block size 32"), "%s", err);
    CHECK(access(path, F_OK) != 0);
    tp_gguf_writer_free(w);

    w = tp_gguf_writer_new(0);
    tp_gguf_w_tensor(w, "weird", 99, 2, ne, data);
    CHECK(tp_gguf_writer_save(w, path, err) == -1);
    CHECK_MSG(strstr(err, "'weird' has unknown type 99"), "%s", err);
    tp_gguf_writer_free(w);

    w = tp_gguf_writer_new(0);
    ne[0] = 32;
    tp_gguf_w_tensor(w, "dup", TP_F32, 2, ne, data);
    tp_gguf_w_tensor(w, "dup", TP_F32, 2, ne, data);
    CHECK(tp_gguf_writer_save(w, path, err) == -1);
    CHECK_MSG(strstr(err, "duplicate tensor name 'dup'"), "%s", err);
    tp_gguf_writer_free(w);

    w = tp_gguf_writer_new(24);
    CHECK(tp_gguf_writer_save(w, path, err) == -1);
    CHECK_MSG(strstr(err, "alignment 24"), "%s", err);
    tp_gguf_writer_free(w);

    w = tp_gguf_writer_new(0);
    CHECK(tp_gguf_writer_save(w, "/nonexistent-dir/x.gguf", err) == -1);
    CHECK_MSG(strstr(err, "/nonexistent-dir/x.gguf: cannot create") == err, "%s", err);
    tp_gguf_writer_free(w);
    rmdir(dir);
    free(dir);
}
