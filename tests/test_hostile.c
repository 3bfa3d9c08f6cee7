/* test_hostile.c: the attacks of issue 11 on model files from the internet.
 * Each gives a one-line error naming the key and value (through the library
 * and through the release CLI), never a crash, an abort or an allocation sized
 * by a number the file merely claims; loading is charged to the memory limit;
 * and a model file truncated while the CLI runs ends it with a message. */
#include "test.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "core/checked.h"
#include "core/common.h"
#include "format/gguf.h"
#include "tools/gguf_write.h"
#include "model/hparams.h"
#include "model/model.h"
#include "tensor/dtype.h"
#include "tokenizer/tokenizer.h"

#define STORIES SHARED_DIR "/models/stories260K.gguf"
#define GB (1024.0 * 1024.0 * 1024.0)

/* ---- helpers ---- */

/* Peak resident set since the last reset (kB), and the reset (/proc/self/clear_refs). */
static long peak_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) v = atol(line + 6);
    if (f) fclose(f);
    return v;
}
static void reset_peak(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f) { fputs("5", f); fclose(f); }
}

static const char *release_bin(void) {
    const char *b = getenv("TEMPO_RELEASE_BIN");
    return b && *b ? b : "build/tempo";
}

/* Run the CLI (stdout and stderr together); returns its output (malloc'ed). */
static char *run_cli(const char *bin, const char *args, int *status) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s %s 2>&1", bin, args);
    return test_run_capture(cmd, status);
}

/* One metadata value to set on a copy of stories260K. */
typedef struct {
    const char *key;
    char kind; /* 'u' u32, 'U' u64, 'I' i64, 'f' f32, 's' string */
    uint64_t u;
    int64_t i;
    double f;
    const char *s;
} kv_set;

/* stories260K with some metadata replaced; alignment 0 = the default. */
static bool write_stories(const char *path, const kv_set *sets, int n_sets, uint32_t alignment) {
    char err[TP_ERR_LEN];
    gguf_file *f = tp_gguf_open(STORIES, err);
    if (!f) { fprintf(stderr, "  %s\n", err); return false; }
    gguf_writer *w = tp_gguf_writer_new(alignment);
    tp_gguf_w_copy_kv(w, f, NULL);
    for (int k = 0; k < n_sets; k++) {
        const kv_set *s = &sets[k];
        switch (s->kind) {
        case 'u': tp_gguf_w_u32(w, s->key, (uint32_t)s->u); break;
        case 'U': tp_gguf_w_u64(w, s->key, s->u); break;
        case 'I': tp_gguf_w_i64(w, s->key, s->i); break;
        case 'f': tp_gguf_w_f32(w, s->key, (float)s->f); break;
        case 's': tp_gguf_w_str(w, s->key, s->s); break;
        }
    }
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        tp_gguf_w_tensor_ref(w, t->name, t->type, t->n_dims, t->ne, t->data);
    }
    int rc = tp_gguf_writer_save(w, path, err);
    if (rc) fprintf(stderr, "  %s\n", err);
    tp_gguf_writer_free(w);
    tp_gguf_close(f);
    return rc == 0;
}

static void rm_rf(const char *dir) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "  could not remove %s\n", dir);
}

/* ---- item 1: every size from a file checked, one line naming key and value ---- */

TEST(hostile_gguf_hyperparameters_give_named_errors) {
    char *dir = test_tmpdir();
    REQUIRE(dir);
    char p[512];
    snprintf(p, sizeof p, "%s/h.gguf", dir);
    struct {
        kv_set set[2];
        int n;
        const char *want; /* the whole error after "<path>: " */
    } cases[] = {
        /* the attack: 65537 x 65536 wraps int to 65536 */
        { { { "llama.attention.head_count", 'u', .u = 65537 }, { "llama.attention.key_length", 'u', .u = 65536 } }, 2,
          "llama.attention.head_count = 65537 is out of range [1, 1024]" },
        { { { "llama.attention.key_length", 'u', .u = 65536 } }, 1,
          "llama.attention.key_length = 65536 is out of range [1, 1024]" },
        { { { "llama.attention.head_count", 'u', .u = 1024 }, { "llama.attention.key_length", 'u', .u = 1024 } }, 2,
          "llama.attention.head_count x llama.attention.key_length = 1024 x 1024 exceeds 262144" },
        { { { "llama.embedding_length", 'U', .u = 4294967360ull } }, 1,
          "llama.embedding_length = 4294967360 is out of range [1, 65536]" },
        { { { "llama.block_count", 'u', .u = 0 } }, 1, "llama.block_count = 0 is out of range [1, 1024]" },
        { { { "llama.feed_forward_length", 'I', .i = -172 } }, 1,
          "llama.feed_forward_length = -172 is out of range [1, 1048576]" },
        { { { "llama.context_length", 'U', .u = 1ull << 30 } }, 1,
          "llama.context_length = 1073741824 is out of range [1, 268435456]" },
        { { { "llama.context_length", 'U', .u = UINT64_MAX } }, 1,
          "key 'llama.context_length': value 18446744073709551615 does not fit in int64" },
        { { { "llama.context_length", 's', .s = "2048" } }, 1,
          "key 'llama.context_length' has type string, expected an integer" },
        { { { "llama.attention.head_count_kv", 'u', .u = 16 } }, 1,
          "llama.attention.head_count_kv = 16 is out of range [1, 8]" },
        { { { "llama.attention.head_count_kv", 'u', .u = 3 } }, 1,
          "llama.attention.head_count = 8 is not a multiple of llama.attention.head_count_kv = 3" },
        { { { "llama.rope.dimension_count", 'u', .u = 10 } }, 1,
          "llama.rope.dimension_count = 10 must be even and in [2, 8] (the head size)" },
        { { { "llama.attention.layer_norm_rms_epsilon", 'f', .f = NAN } }, 1,
          "llama.attention.layer_norm_rms_epsilon = nan is out of range [1e-12, 1)" },
        { { { "llama.rope.freq_base", 'f', .f = INFINITY } }, 1, "llama.rope.freq_base = inf is out of range (1, 1e30)" },
        { { { "llama.rope.scaling.type", 's', .s = "linear" }, { "llama.rope.scaling.factor", 'f', .f = -4 } }, 2,
          "llama.rope.scaling.factor = -4 is out of range (0, 1e9)" },
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        REQUIRE(write_stories(p, cases[c].set, cases[c].n, 0));
        char err[TP_ERR_LEN] = "", want[1024];
        snprintf(want, sizeof want, "%s: %s", p, cases[c].want);
        tp_load_opts o = { 0 };
        tp_model *m = tp_model_load(p, &o, err);
        CHECK_MSG(!m && strcmp(err, want) == 0, "case %zu:\n   got '%s'\n  want '%s'", c, err, want);
        tp_model_free(m);
    }
    /* the release CLI (the build the issue crashed with SIGSEGV) prints the same line and exits 1 */
    REQUIRE(write_stories(p, cases[0].set, 2, 0));
    char args[600], want[1024];
    snprintf(args, sizeof args, "--model %s --max-tokens 2", p);
    int st;
    char *out = run_cli(release_bin(), args, &st);
    snprintf(want, sizeof want, "tempo: %s: llama.attention.head_count = 65537 is out of range [1, 1024]\n", p);
    CHECK_MSG(st == 1 && out && strcmp(out, want) == 0, "status %d, output '%s'", st, out ? out : "");
    free(out);
    rm_rf(dir);
    free(dir);
}

/* general.alignment 1 lets a file put an f32 tensor at an odd address: refused,
 * not read through a misaligned float pointer. */
TEST(hostile_gguf_misaligned_tensor_is_refused) {
    char *dir = test_tmpdir();
    REQUIRE(dir);
    char p[512];
    snprintf(p, sizeof p, "%s/a.gguf", dir);
    kv_set odd[1] = { { "x.pad", 's', .s = "odd" } };
    bool refused = false;
    /* the data section starts right after the metadata: try pad lengths until it is odd */
    for (int k = 0; k < 4 && !refused; k++) {
        char pad[8] = "abcd";
        pad[k + 1] = 0;
        odd[0].s = pad;
        REQUIRE(write_stories(p, odd, 1, 1));
        char err[TP_ERR_LEN] = "";
        tp_load_opts o = { 0 };
        tp_model *m = tp_model_load(p, &o, err);
        if (!m) {
            CHECK_MSG(strstr(err, "not a multiple of 4 (general.alignment 1)") != NULL, "%s", err);
            refused = true;
        }
        tp_model_free(m);
    }
    CHECK(refused);
    rm_rf(dir);
    free(dir);
}

/* ---- item 2, the loader's side: nothing sized by the context a file claims ---- */

TEST(hostile_gguf_context_1e8_loads_without_allocating_for_it) {
    char *dir = test_tmpdir();
    REQUIRE(dir);
    char p[512];
    snprintf(p, sizeof p, "%s/c.gguf", dir);
    kv_set ctx[1] = { { "llama.context_length", 'u', .u = 100000000 } };
    REQUIRE(write_stories(p, ctx, 1, 0));
    char err[TP_ERR_LEN] = "";
    /* loading sizes nothing by the file's claim (a session's buffers follow its cache's capacity) */
    tp_load_opts o = { .max_bytes = (size_t)(0.1 * GB) };
    reset_peak();
    long before = peak_kb();
    tp_model *m = tp_model_load(p, &o, err);
    long grew = peak_kb() - before;
    CHECK_MSG(m != NULL, "%s", err);
    if (m) CHECK_INT_EQ(m->hp.n_ctx, 100000000);
    /* sized by the claim this would be 0.38 GB per thread */
    CHECK_MSG(grew < 32 * 1024, "loading grew the peak by %ld kB", grew);
    tp_model_free(m);
    rm_rf(dir);
    free(dir);
}

/* Metadata is charged as it is parsed: a big string array fits a generous
 * limit and is refused, with the key named, under a small one. */
TEST(hostile_gguf_metadata_is_charged_to_the_limit) {
    char *dir = test_tmpdir();
    REQUIRE(dir);
    char p[512];
    snprintf(p, sizeof p, "%s/m.gguf", dir);
    char err[TP_ERR_LEN];
    gguf_file *f = tp_gguf_open(STORIES, err);
    REQUIRE(f);
    gguf_writer *w = tp_gguf_writer_new(0);
    tp_gguf_w_copy_kv(w, f, NULL);
    size_t n = 500000; /* 4 MB of empty strings become 20 MB of parsed values */
    const char **strs = malloc(n * sizeof *strs);
    for (size_t i = 0; i < n; i++) strs[i] = "";
    tp_gguf_w_arr_str(w, "x.filler", strs, n);
    free(strs);
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        tp_gguf_w_tensor_ref(w, t->name, t->type, t->n_dims, t->ne, t->data);
    }
    REQUIRE(tp_gguf_writer_save(w, p, err) == 0);
    tp_gguf_writer_free(w);
    tp_gguf_close(f);

    tp_load_opts o = { .max_bytes = 12 << 20 };
    tp_model *m = tp_model_load(p, &o, err);
    CHECK_MSG(!m && strstr(err, "metadata key") && strstr(err, "'x.filler'") && strstr(err, "metadata array needs") &&
                  strstr(err, "but --max-memory-gb 0.0117188 leaves"), "%s", err);
    tp_model_free(m);
    o.max_bytes = 64 << 20;
    m = tp_model_load(p, &o, err);
    CHECK_MSG(m != NULL, "%s", err);
    tp_model_free(m);
    rm_rf(dir);
    free(dir);
}

/* ---- item 3: tokenizer.json sized by its entries, ids checked against the rows ---- */

/* dir's tokenizer.json with one more vocabulary entry "evil": id. */
static bool add_vocab_entry(const char *dir, double id) {
    char p[512];
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    char err[TP_ERR_LEN];
    char *txt = tp_read_file(p, NULL, err);
    if (!txt) return false;
    cJSON *j = cJSON_Parse(txt);
    free(txt);
    cJSON *vocab = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "model"), "vocab");
    if (!vocab) { cJSON_Delete(j); return false; }
    cJSON_AddNumberToObject(vocab, "evil", id);
    char *out = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    FILE *f = fopen(p, "w");
    bool ok = f && fputs(out, f) >= 0;
    if (f) fclose(f);
    free(out);
    return ok;
}

TEST(hostile_tokenizer_json_large_ids_are_refused_before_sizing) {
    char *dir = test_tmpdir();
    REQUIRE(dir);
    REQUIRE(test_export_stories_hf(dir));
    /* the files: one id of 2^30-1 (an 8 GB attempt and abort()), one of 3e7 (11 s, 1.3 GB) */
    const double ids[] = { 1073741823.0, 30000000.0 };
    for (int k = 0; k < 2; k++) {
        char *d2 = test_tmpdir();
        REQUIRE(d2);
        char cmd[1200];
        snprintf(cmd, sizeof cmd, "cp -r '%s/.' '%s/'", dir, d2);
        REQUIRE(system(cmd) == 0);
        REQUIRE(add_vocab_entry(d2, ids[k]));
        char err[TP_ERR_LEN] = "", want[TP_ERR_LEN];
        snprintf(want, sizeof want,
                 "%s/tokenizer.json: model.vocab[\"evil\"] = %.0f is not below the vocabulary size 512 (the model's "
                 "embedding rows)", d2, ids[k]);
        tp_load_opts o = { .max_bytes = (size_t)(0.1 * GB) };
        reset_peak();
        long before = peak_kb();
        double t0 = tp_now();
        tp_model *m = tp_model_load(d2, &o, err);
        double secs = tp_now() - t0;
        long grew = peak_kb() - before;
        CHECK_MSG(!m && strcmp(err, want) == 0, "\n   got '%s'\n  want '%s'", err, want);
        tp_model_free(m);
        CHECK_MSG(secs < 2.0 && grew < 32 * 1024, "id %.0f: %.2f s, peak +%ld kB", ids[k], secs, grew);
        /* the tokenizer alone (no model): the vocabulary is sized by its entries */
        tokenizer *t = tp_tokenizer_from_hf(d2, err);
        CHECK_MSG(!t && strstr(err, "would leave most of the vocabulary empty (513 entries)"), "%s", err);
        tp_tokenizer_free(t);
        if (k == 0) { /* and the release CLI says so in one line */
            char args[700];
            snprintf(args, sizeof args, "--model %s --max-tokens 2", d2);
            int st;
            char *out = run_cli(release_bin(), args, &st);
            char w2[TP_ERR_LEN + 16];
            snprintf(w2, sizeof w2, "tempo: %s\n", want);
            CHECK_MSG(st == 1 && out && strcmp(out, w2) == 0, "status %d, output '%s'", st, out ? out : "");
            free(out);
        }
        rm_rf(d2);
        free(d2);
    }
    rm_rf(dir);
    free(dir);
}

/* A valid tokenizer.json of many small entries (the shape that costs cJSON 20-40x
 * its size): parsed in bounded time with a peak of a small multiple of the file. */
TEST(hostile_tokenizer_json_memory_is_a_small_multiple_of_the_file) {
    char *dir = test_tmpdir();
    REQUIRE(dir);
    char p[512];
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    FILE *f = fopen(p, "w");
    REQUIRE(f);
    fputs("{\"version\":\"1.0\",\"normalizer\":null,\"added_tokens\":[],"
          "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
          "\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}| ?[^\\\\s\\\\p{L}"
          "\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},\"behavior\":\"Isolated\","
          "\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}]},"
          "\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",\"vocab\":{", f);
    /* 300000 one-to-four-letter tokens, then 1.2 million merges of them */
    const int nv = 300000, nm = 1200000;
    for (int i = 0; i < nv; i++) {
        char s[8];
        int k = 0, x = i;
        do { s[k++] = (char)('a' + x % 26); x /= 26; } while (x);
        fprintf(f, "%s\"%.*s\":%d", i ? "," : "", k, s, i);
    }
    fputs("},\"merges\":[", f);
    for (int i = 0; i < nm; i++)
        fprintf(f, "%s\"%c %c\"", i ? "," : "", 'a' + i % 26, 'a' + (i / 26) % 26);
    fputs("]}}", f);
    fclose(f);
    struct stat st;
    REQUIRE(stat(p, &st) == 0);
    char err[TP_ERR_LEN];
    reset_peak();
    long before = peak_kb();
    double t0 = tp_now();
    tokenizer *t = tp_tokenizer_from_hf(dir, err);
    double secs = tp_now() - t0;
    long grew = peak_kb() - before;
    CHECK_MSG(t != NULL, "%s", err);
    if (t) CHECK_INT_EQ(tp_tokenizer_vocab_size(t), nv);
    tp_tokenizer_free(t);
    double ratio = (double)grew * 1024 / (double)st.st_size;
    fprintf(stderr, "  tokenizer.json of %.1f MB: %.2f s, peak +%.1f MB (%.1fx the file)\n", st.st_size / 1e6, secs,
            grew / 1024.0, ratio);
    CHECK_MSG(ratio < 12, "peak is %.1fx the file", ratio);
    CHECK_MSG(secs < 20, "%.1f s", secs);
    rm_rf(dir);
    free(dir);
}

/* ---- item 6: a model file truncated while the CLI has it mapped ---- */

TEST(hostile_model_truncated_while_running_ends_with_a_message) {
    char *dir = test_tmpdir();
    REQUIRE(dir);
    char p[512], errp[600], cmd[2048];
    snprintf(p, sizeof p, "%s/t.gguf", dir);
    snprintf(errp, sizeof errp, "%s/stderr.txt", dir);
    snprintf(cmd, sizeof cmd, "cp %s %s", STORIES, p);
    REQUIRE(system(cmd) == 0);
    /* a long greedy run: 2000 steps (EOS ignored) */
    snprintf(cmd, sizeof cmd,
             "exec %s --model %s --max-tokens 2000 --min-steps 2000 --max-parallel-tokens 1 "
             "--selection-threshold 0 --no-color 2>%s",
             test_tempo_bin(), p, errp);
    FILE *out = popen(cmd, "r");
    REQUIRE(out);
    int c = fgetc(out); /* the first step is out: the model is mapped and in use */
    CHECK(c != EOF);
    CHECK(truncate(p, 4096) == 0);
    while (fgetc(out) != EOF) {}
    int st = pclose(out);
    char err[TP_ERR_LEN];
    char *msg = tp_read_file(errp, NULL, err);
    char want[700];
    snprintf(want, sizeof want, "tempo: %s: changed or truncated while in use", p);
    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 1, "status %d (signal %d)", WIFEXITED(st) ? WEXITSTATUS(st) : -1,
              WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    CHECK_MSG(msg && strstr(msg, want), "stderr: '%s'", msg ? msg : "");
    free(msg);
    rm_rf(dir);
    free(dir);
}

/* config.json: only the keys tempo reads become cJSON trees. 3.5 MB of other
 * members ([0,0,...], 40x its size as a tree) load under a 0.1 GB limit with
 * a small peak; a read key with an absurd value is refused by size. */
TEST(hostile_config_json_parses_only_its_keys) {
    char *dir = test_tmpdir();
    REQUIRE(dir);
    REQUIRE(test_export_stories_hf(dir));
    char p[600], err[TP_ERR_LEN];
    snprintf(p, sizeof p, "%s/config.json", dir);
    char *cfg = tp_read_file(p, NULL, err);
    REQUIRE(cfg);
    char *brace = strrchr(cfg, '}');
    REQUIRE(brace);
    *brace = 0;
    size_t n = 1750000;
    for (int k = 0; k < 2; k++) {
        FILE *f = fopen(p, "w");
        REQUIRE(f);
        fputs(cfg, f);
        fputs(k == 0 ? ", \"padding\": [" : ", \"rope_parameters\": {\"rope_theta\": 10000, \"x\": [", f);
        for (size_t i = 0; i < (k == 0 ? n : 40000); i++) fputs(i ? ",0" : "0", f);
        fputs(k == 0 ? "]}\n" : "]}}\n", f);
        fclose(f);
        tp_load_opts o = { .max_bytes = (size_t)(0.1 * GB) };
        reset_peak();
        long before = peak_kb();
        err[0] = 0;
        tp_model *m = tp_model_load(dir, &o, err);
        long grew = peak_kb() - before;
        if (k == 0) {
            CHECK_MSG(m != NULL, "%s", err);
            CHECK_MSG(grew < 24 * 1024, "peak +%ld kB for a 3.5 MB config.json", grew);
        } else {
            CHECK_MSG(!m && strstr(err, "config.json: rope_parameters is 80029 bytes of JSON (at most 65536)"), "%s", err);
        }
        tp_model_free(m);
    }
    free(cfg);
    rm_rf(dir);
    free(dir);
}

/* A FIFO (or device) where a model file or tokenizer.json should be: refused
 * at once (opening it must not wait for a writer, reading it must not be
 * unbounded). */
TEST(hostile_fifo_instead_of_a_file_is_refused) {
    char *dir = test_tmpdir();
    REQUIRE(dir);
    char p[600], err[TP_ERR_LEN], want[700];
    snprintf(p, sizeof p, "%s/m.gguf", dir);
    REQUIRE(mkfifo(p, 0600) == 0);
    tp_load_opts o = { 0 };
    tp_model *m = tp_model_load(p, &o, err);
    snprintf(want, sizeof want, "%s: not a regular file", p);
    CHECK_MSG(!m && strcmp(err, want) == 0, "%s", err);
    tp_model_free(m);
    REQUIRE(unlink(p) == 0);
    REQUIRE(test_export_stories_hf(dir));
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    REQUIRE(unlink(p) == 0 && mkfifo(p, 0600) == 0);
    m = tp_model_load(dir, &o, err);
    snprintf(want, sizeof want, "%s: not a regular file", p);
    CHECK_MSG(!m && strcmp(err, want) == 0, "%s", err);
    tp_model_free(m);
    rm_rf(dir);
    free(dir);
}
