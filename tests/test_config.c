/* test_config.c: the YAML config file (tempo_config_load_yaml). */
#include "test.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tempo.h"

static char *write_tmp(const char *name, const char *text) {
    char *dir = test_tmpdir();
    if (!dir) return NULL;
    size_t n = strlen(dir) + strlen(name) + 2;
    char *path = malloc(n);
    snprintf(path, n, "%s/%s", dir, name);
    free(dir);
    FILE *f = fopen(path, "w");
    if (!f) { free(path); return NULL; }
    fputs(text, f);
    fclose(f);
    return path;
}

static void remove_tmp(char *path) {
    if (!path) return;
    unlink(path);
    char *slash = strrchr(path, '/');
    if (slash) { *slash = 0; rmdir(path); }
    free(path);
}

static bool str_eq(const char *a, const char *b) { return (!a && !b) || (a && b && !strcmp(a, b)); }

/* Every field of tempo_config, so a key that lands in the wrong field is caught. The parameter
 * structs are compared bytewise: tempo_config_init zeroes them first, padding included. */
static bool cfg_equal(const tempo_config *a, const tempo_config *b) {
    return str_eq(a->model, b->model) && str_eq(a->prompt, b->prompt) &&
           !memcmp(&a->gen, &b->gen, sizeof a->gen) &&
           a->model_params.threads == b->model_params.threads &&
           a->model_params.max_memory_gb == b->model_params.max_memory_gb &&
           a->model_params.kv_cache_type == b->model_params.kv_cache_type &&
           str_eq(a->model_params.kv_offload, b->model_params.kv_offload) && a->isolate == b->isolate &&
           str_eq(a->model_params.device, b->model_params.device) &&
           a->model_params.gpu_layers == b->model_params.gpu_layers &&
           a->model_params.gpu_adapt == b->model_params.gpu_adapt &&
           a->output_json == b->output_json && str_eq(a->output_dir, b->output_dir) && a->no_color == b->no_color &&
           a->show_token_ids == b->show_token_ids;
}

/* The spec's config.yaml example, taken from the spec itself. */
TEST(config_yaml_spec_example_verbatim) {
    tempo_error e_ = { 0 }; const char *err = e_.message;
    FILE *f = fopen(SHARED_DIR "/spec/memory-management.md", "r");
    REQUIRE(f);
    char line[1024], block[4096] = "";
    bool in = false, done = false;
    while (!done && fgets(line, sizeof line, f)) {
        if (!in && !strncmp(line, "```yaml", 7)) { in = true; continue; }
        if (in && !strncmp(line, "```", 3)) { done = true; break; }
        if (in) strncat(block, line, sizeof block - strlen(block) - 1);
    }
    fclose(f);
    REQUIRE(done);
    REQUIRE(strstr(block, "max_parallel_tokens: 20  # Optional"));
    char *path = write_tmp("config.yaml", block);
    REQUIRE(path);
    tempo_config c;
    tempo_config_init(&c);
    int rc = tempo_config_load_yaml(&c, path, &e_);
    CHECK_MSG(rc == 0, "load failed: %s", err);
    CHECK(c.model_params.max_memory_gb == 36.0);
    CHECK_INT_EQ(c.gen.max_parallel_tokens, 20);
    CHECK_INT_EQ(c.gen.max_cache_tokens, 2048);
    CHECK(str_eq(c.prompt, "Your prompt here"));
    CHECK_INT_EQ(c.gen.max_tokens, 100);
    CHECK(c.gen.selection_threshold == 0.1);
    tempo_config_free(&c);
    remove_tmp(path);
}

/* A non-default value for each option, valid for its type and range. */
static const char *other_value(const tempo_option_info *o) {
    switch (o->type) {
    case TEMPO_OPT_BOOL: return strcmp(o->def, "true") == 0 ? "false" : "true";
    case TEMPO_OPT_INT: return "7";
    case TEMPO_OPT_FLOAT: return "0.375";
    case TEMPO_OPT_STRING:
        if (!strcmp(o->key, "kv_cache_type")) return "f16";
        if (!strcmp(o->key, "memory_policy")) return "prune";
        if (!strcmp(o->key, "device")) return "cpu";
        return "some text: with a colon";
    }
    return "";
}

/* Every option of the table is read under its key, exactly as tempo_config_set reads it. */
TEST(config_yaml_every_option) {
    tempo_error e_ = { 0 }; const char *err = e_.message;
    int n;
    const tempo_option_info *opts = tempo_options(&n);
    REQUIRE(n > 30);
    tempo_config all_yaml, all_set, def;
    tempo_config_init(&all_yaml);
    tempo_config_init(&all_set);
    tempo_config_init(&def);
    char text[8192] = "# every option\n";
    for (int i = 0; i < n; i++) {
        const char *v = other_value(&opts[i]);
        char one[256];
        snprintf(one, sizeof one, "%s: \"%s\"\n", opts[i].key, v);
        strncat(text, one, sizeof text - strlen(text) - 1);
        /* each key alone: it changes the config, and the same as the flag would */
        char *p = write_tmp("one.yaml", one);
        REQUIRE(p);
        tempo_config a, b;
        tempo_config_init(&a);
        tempo_config_init(&b);
        int ra = tempo_config_load_yaml(&a, p, &e_);
        CHECK_MSG(ra == 0, "%s: %s", opts[i].key, err);
        CHECK_MSG(tempo_config_set(&b, opts[i].key, v, &e_) == 0, "%s: %s", opts[i].key, err);
        CHECK_MSG(cfg_equal(&a, &b), "key %s does not load like its flag", opts[i].key);
        CHECK_MSG(!cfg_equal(&a, &def), "key %s changed nothing", opts[i].key);
        tempo_config_set(&all_set, opts[i].key, v, &e_);
        tempo_config_free(&a);
        tempo_config_free(&b);
        remove_tmp(p);
    }
    char *p = write_tmp("all.yaml", text);
    REQUIRE(p);
    CHECK_MSG(tempo_config_load_yaml(&all_yaml, p, &e_) == 0, "%s", err);
    CHECK(cfg_equal(&all_yaml, &all_set));
    remove_tmp(p);
    tempo_config_free(&all_yaml);
    tempo_config_free(&all_set);
    tempo_config_free(&def);
}

TEST(config_yaml_plain_types) {
    tempo_error e_ = { 0 }; const char *err = e_.message;
    char *p = write_tmp("t.yaml",
                        "model: ../shared/models/stories260K.gguf\n"
                        "debug_mode: yes\n"
                        "disable_kv_cache: true\n"
                        "max_memory_gb: 2\n"
                        "seed: 123456789012\n"
                        "kv_cache_type: q8_0\n"
                        "prompt: 'It''s a test'\n"
                        "memory_policy: adapt\n");
    REQUIRE(p);
    tempo_config c;
    tempo_config_init(&c);
    CHECK_MSG(tempo_config_load_yaml(&c, p, &e_) == 0, "%s", err);
    CHECK(str_eq(c.model, "../shared/models/stories260K.gguf"));
    CHECK(c.gen.debug_mode && c.gen.disable_kv_cache);
    CHECK(c.model_params.max_memory_gb == 2.0);
    CHECK(c.gen.seed == 123456789012ULL);
    CHECK(c.model_params.kv_cache_type == TEMPO_KV_Q8_0);
    CHECK(str_eq(c.prompt, "It's a test"));
    CHECK(c.gen.memory_policy == TEMPO_MEMORY_ADAPT);
    tempo_config_free(&c);
    remove_tmp(p);
}

/* Null means the default; for max_parallel_tokens that is auto (0), also spelled "auto". */
TEST(config_yaml_null_and_auto) {
    tempo_error e_ = { 0 }; const char *err = e_.message;
    const char *cases[] = { "max_parallel_tokens:\n", "max_parallel_tokens: ~\n", "max_parallel_tokens: null\n",
                            "max_parallel_tokens: auto\n", "max_parallel_tokens:   # auto\n" };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *p = write_tmp("n.yaml", cases[i]);
        REQUIRE(p);
        tempo_config c;
        tempo_config_init(&c);
        c.gen.max_parallel_tokens = 5;
        CHECK_MSG(tempo_config_load_yaml(&c, p, &e_) == 0, "%s: %s", cases[i], err);
        CHECK_MSG(c.gen.max_parallel_tokens == 0, "%s gave %d", cases[i], c.gen.max_parallel_tokens);
        tempo_config_free(&c);
        remove_tmp(p);
    }
    char *p = write_tmp("n.yaml", "max_cache_tokens: null\nmodel: ~\nprompt:\nthreads: ~\nmemory_policy: null\n");
    REQUIRE(p);
    tempo_config c;
    tempo_config_init(&c);
    c.gen.max_cache_tokens = 99;
    c.model_params.threads = 3;
    tempo_config_set(&c, "model", "x.gguf", &e_);
    tempo_config_set(&c, "prompt", "changed", &e_);
    tempo_config_set(&c, "memory_policy", "adapt", &e_);
    CHECK_MSG(tempo_config_load_yaml(&c, p, &e_) == 0, "%s", err);
    CHECK_INT_EQ(c.gen.max_cache_tokens, 0);
    CHECK(c.model == NULL);
    CHECK(str_eq(c.prompt, "Once upon a time"));
    CHECK_INT_EQ(c.model_params.threads, 0);
    CHECK(c.gen.memory_policy == TEMPO_MEMORY_STOP);
    tempo_config_free(&c);
    remove_tmp(p);
}

/* Load `text`, expect failure; the message must contain every string in want (NULL-terminated). */
static void expect_error(const char *text, const char *const *want, int line) {
    tempo_error e_ = { 0 }; const char *err = e_.message;
    char *p = write_tmp("config.yaml", text);
    if (!p) { test_fail_at(__FILE__, line, "cannot write temp file"); return; }
    tempo_config c, before;
    tempo_config_init(&c);
    tempo_config_init(&before);
    int rc = tempo_config_load_yaml(&c, p, &e_);
    if (rc != -1) test_fail_at(__FILE__, line, "expected an error for %s", text);
    if (!strstr(err, p)) test_fail_at(__FILE__, line, "message does not name the file: %s", err);
    for (; *want; want++)
        if (!strstr(err, *want)) test_fail_at(__FILE__, line, "message lacks '%s': %s", *want, err);
    if (strchr(err, '\n')) test_fail_at(__FILE__, line, "message is not one line: %s", err);
    /* nothing of a failed file is applied */
    if (!cfg_equal(&c, &before)) test_fail_at(__FILE__, line, "a failed load changed the config");
    tempo_config_free(&c);
    tempo_config_free(&before);
    remove_tmp(p);
}
#define EXPECT_ERROR(text, ...) do { const char *const w_[] = { __VA_ARGS__, NULL }; expect_error(text, w_, __LINE__); } while (0)

TEST(config_yaml_unknown_key_names_line) {
    EXPECT_ERROR("# config\nmax_memory_gb: 2.0\nprompt: \"hi\"\nmax_tokenz: 100\n", "config.yaml:4: unknown key 'max_tokenz'",
                 "did you mean 'max_tokens'");
    EXPECT_ERROR("max-memory-gb: 2.0\n", "config.yaml:1: unknown key 'max-memory-gb'", "'max_memory_gb'");
    EXPECT_ERROR("max_tokens: 5\nfrobnicate: 1\n", "config.yaml:2: unknown key 'frobnicate'");
}

TEST(config_yaml_wrong_types_name_key_and_line) {
    EXPECT_ERROR("prompt: hi\nmax_tokens: 100\nselection_threshold: abc\n", "config.yaml:3: selection_threshold:",
                 "expected a number", "'abc'");
    EXPECT_ERROR("max_tokens: [1, 2]\n", "config.yaml:1: max_tokens:", "expected a single value, got a list");
    EXPECT_ERROR("max_memory_gb:\n  - 1\n  - 2\n", "config.yaml:2: max_memory_gb:", "got a list");
    EXPECT_ERROR("max_parallel_tokens: {a: 1}\n", "config.yaml:1: max_parallel_tokens:", "got a mapping");
    EXPECT_ERROR("max_tokens: 1.5\n", "config.yaml:1: max_tokens:", "expected an integer");
    EXPECT_ERROR("debug_mode: maybe\n", "config.yaml:1: debug_mode:", "expected true or false");
    EXPECT_ERROR("\n\nselection_threshold: 1.5\n", "config.yaml:3: selection_threshold:", "out of range");
    EXPECT_ERROR("max_memory_gb: -1\n", "config.yaml:1: max_memory_gb:", "out of range");
    EXPECT_ERROR("max_parallel_tokens: 0\n", "config.yaml:1: max_parallel_tokens:", "out of range");
    EXPECT_ERROR("kv_cache_type: f8\n", "config.yaml:1: kv_cache_type:", "'f8'");
    EXPECT_ERROR("max_tokens: 10\nmax_tokens: 20\n", "config.yaml:2:", "'max_tokens' is given twice", "line 1");
}

TEST(config_yaml_bad_files) {
    tempo_error e_ = { 0 }; const char *err = e_.message;
    tempo_config c;
    tempo_config_init(&c);
    CHECK(tempo_config_load_yaml(&c, "/nonexistent/dir/config.yaml", &e_) == -1);
    CHECK_MSG(strstr(err, "/nonexistent/dir/config.yaml") && strstr(err, "cannot read"), "%s", err);
    CHECK(tempo_config_load_yaml(&c, "/tmp", &e_) == -1);
    CHECK_MSG(strstr(err, "/tmp") && strstr(err, "directory"), "%s", err);
    tempo_config_free(&c);
    EXPECT_ERROR("max_tokens: 10\nprompt: \"unterminated\n", "config.yaml:", "YAML syntax error");
    EXPECT_ERROR("- max_tokens\n- 10\n", "config.yaml:1:", "key: value");
    EXPECT_ERROR("max_tokens: 10\n---\nmax_tokens: 20\n", "config.yaml:2:", "more than one YAML document");
}

TEST(config_yaml_empty_file_changes_nothing) {
    tempo_error e_ = { 0 }; const char *err = e_.message;
    const char *texts[] = { "", "# only a comment\n", "---\n" };
    for (size_t i = 0; i < 3; i++) {
        char *p = write_tmp("e.yaml", texts[i]);
        REQUIRE(p);
        tempo_config c, d;
        tempo_config_init(&c);
        tempo_config_init(&d);
        CHECK_MSG(tempo_config_load_yaml(&c, p, &e_) == 0, "'%s': %s", texts[i], err);
        CHECK(cfg_equal(&c, &d));
        tempo_config_free(&c);
        tempo_config_free(&d);
        remove_tmp(p);
    }
}

/* The CLI reads the file first; flags override it. Bad files stop with the file:line message. */
TEST(config_cli_file_then_flags) {
    char cmd[1024];
    int st;
    char *p = write_tmp("run.yaml",
                        "# config.yaml\nmax_memory_gb: 36.0\nmax_parallel_tokens: 2\nprompt: \"Your prompt here\"\n"
                        "max_tokens: 3\nselection_threshold: 0\n");
    REQUIRE(p);
    snprintf(cmd, sizeof cmd, "%s --model %s/models/stories260K.gguf --config %s --max-tokens 5 --output-json 2>/dev/null",
             test_tempo_bin(), SHARED_DIR, p);
    char *out = test_run_capture(cmd, &st);
    REQUIRE(out);
    CHECK_MSG(st == 0, "exit %d", st);
    CHECK_MSG(strstr(out, "\"prompt\": \"Your prompt here\"") || strstr(out, "\"prompt\":\"Your prompt here\""), "%s", out);
    CHECK_MSG(strstr(out, "\"max_tokens\": 5") || strstr(out, "\"max_tokens\":5"), "flag did not override the file");
    CHECK(strstr(out, "\"max_parallel_tokens\": 2") || strstr(out, "\"max_parallel_tokens\":2"));
    free(out);
    remove_tmp(p);

    p = write_tmp("bad.yaml", "max_tokens: 3\nmax_tokenz: 4\n");
    REQUIRE(p);
    snprintf(cmd, sizeof cmd, "%s --model %s/models/stories260K.gguf --config %s 2>&1", test_tempo_bin(), SHARED_DIR, p);
    out = test_run_capture(cmd, &st);
    REQUIRE(out);
    CHECK_MSG(st == 2, "exit %d", st);
    CHECK_MSG(strstr(out, "bad.yaml:2: unknown key 'max_tokenz'"), "%s", out);
    free(out);
    remove_tmp(p);

    snprintf(cmd, sizeof cmd, "%s --config /nonexistent.yaml 2>&1", test_tempo_bin());
    out = test_run_capture(cmd, &st);
    CHECK(st == 2 && out && strstr(out, "/nonexistent.yaml: cannot read"));
    free(out);
}

/* The option table (src/api/config.c) and tempo_gen_params_validate (src/tempo/params.c) state
 * the same ranges: every numeric generation option is accepted at the ends of its range and
 * refused, with its flag named, just outside it. A new numeric option must be listed here. */
typedef struct {
    const char *key;
    size_t off;
    bool is_int;
    bool zero_is_auto; /* the struct takes 0 for "auto" (the flag has no such value) */
} gen_field;

static const gen_field gen_fields[] = {
    { "max_tokens", offsetof(tempo_gen_params, max_tokens), true, false },
    { "min_steps", offsetof(tempo_gen_params, min_steps), true, false },
    { "selection_threshold", offsetof(tempo_gen_params, selection_threshold), false, false },
    { "max_parallel_tokens", offsetof(tempo_gen_params, max_parallel_tokens), true, true },
    { "final_threshold", offsetof(tempo_gen_params, final_threshold), false, false },
    { "bezier_p1", offsetof(tempo_gen_params, bezier_p1), false, false },
    { "bezier_p2", offsetof(tempo_gen_params, bezier_p2), false, false },
    { "relu_activation_point", offsetof(tempo_gen_params, relu_activation_point), false, false },
    { "attention_threshold", offsetof(tempo_gen_params, attention_threshold), false, false },
    { "relative_threshold", offsetof(tempo_gen_params, relative_threshold), false, false },
    { "temperature", offsetof(tempo_gen_params, temperature), false, false },
    { "top_k", offsetof(tempo_gen_params, top_k), true, false },
    { "top_p", offsetof(tempo_gen_params, top_p), false, false },
    { "repetition_penalty", offsetof(tempo_gen_params, repetition_penalty), false, false },
    { "mcts_simulations", offsetof(tempo_gen_params, mcts_simulations), true, false },
    { "mcts_c_puct", offsetof(tempo_gen_params, mcts_c_puct), false, false },
    { "mcts_depth", offsetof(tempo_gen_params, mcts_depth), true, false },
    { "max_cache_tokens", offsetof(tempo_gen_params, max_cache_tokens), true, true },
};

/* validate with field f set to v; 0 or -1, message in e */
static int validate_with(const gen_field *f, double v, tempo_error *e) {
    tempo_gen_params g;
    tempo_gen_params_init(&g);
    if (f->is_int) *(int *)((char *)&g + f->off) = (int)v;
    else *(double *)((char *)&g + f->off) = v;
    return tempo_gen_params_validate(&g, e);
}

TEST(config_ranges_agree_with_params_validate) {
    int n;
    const tempo_option_info *opts = tempo_options(&n);
    int covered = 0;
    for (int i = 0; i < n; i++) {
        const tempo_option_info *o = &opts[i];
        if (o->type != TEMPO_OPT_INT && o->type != TEMPO_OPT_FLOAT) continue;
        if (!strcmp(o->key, "threads") || !strcmp(o->key, "max_memory_gb") || !strcmp(o->key, "seed") ||
            !strcmp(o->key, "gpu_layers")) /* the model's */
            continue;
        const gen_field *f = NULL;
        for (size_t j = 0; j < sizeof gen_fields / sizeof gen_fields[0]; j++)
            if (!strcmp(gen_fields[j].key, o->key)) f = &gen_fields[j];
        CHECK_MSG(f, "option %s is not in this test's list", o->key);
        if (!f) continue;
        covered++;
        char flag[80];
        snprintf(flag, sizeof flag, "--%s", o->key);
        for (char *p = flag; *p; p++) if (*p == '_') *p = '-';
        double lo, hi = INFINITY;
        char close = ']';
        if (sscanf(o->range, ">= %lf", &lo) == 1) {
        } else {
            CHECK_MSG(sscanf(o->range, "[%lf, %lf%c", &lo, &hi, &close) == 3, "%s: range '%s'", o->key, o->range);
        }
        double eps = f->is_int ? 1 : 1e-9;
        tempo_error e;
        CHECK_MSG(validate_with(f, lo, &e) == 0, "%s = %g (its minimum): %s", o->key, lo, e.message);
        double below = lo - eps;
        if (f->zero_is_auto && below == 0) below = -1;
        CHECK_MSG(validate_with(f, below, &e) == -1 && strstr(e.message, flag), "%s = %g accepted: '%s'", o->key,
                  below, e.message);
        if (isfinite(hi)) {
            double top = close == ')' ? hi - eps : hi;
            CHECK_MSG(validate_with(f, top, &e) == 0, "%s = %g (its maximum): %s", o->key, top, e.message);
            double above = close == ')' ? hi : hi + eps;
            CHECK_MSG(validate_with(f, above, &e) == -1 && strstr(e.message, flag), "%s = %g accepted: '%s'", o->key,
                      above, e.message);
        }
    }
    CHECK_INT_EQ(covered, (int)(sizeof gen_fields / sizeof gen_fields[0]));
}
