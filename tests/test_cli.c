/* test_cli.c: the tempo command line, driven as a user would (TEMPO_BIN). */
#include "test.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tempo.h"

#define STORIES SHARED_DIR "/models/stories260K.gguf"

/* Run the CLI with args; stdout (and stderr when merge) captured. */
static char *cli(const char *args, bool merge, int *status) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s %s %s", test_tempo_bin(), args, merge ? "2>&1" : "2>/dev/null");
    return test_run_capture(cmd, status);
}

TEST(cli_help_lists_every_option) {
    int st;
    char *out = cli("--help", false, &st);
    REQUIRE(out);
    CHECK_INT_EQ(st, 0);
    int n;
    const tempo_option_info *opts = tempo_options(&n);
    for (int i = 0; i < n; i++) {
        char flag[96];
        snprintf(flag, sizeof flag, "--%s", opts[i].key);
        for (char *p = flag + 2; *p; p++) if (*p == '_') *p = '-';
        CHECK_MSG(strstr(out, flag) != NULL, "--help lacks %s", flag);
    }
    CHECK(strstr(out, "--config") && strstr(out, "--version") && strstr(out, "tokenize"));
    CHECK(strstr(out, "(default: 0.1)") && strstr(out, "(default: Once upon a time)"));
    free(out);
    out = cli("--version", false, &st);
    CHECK_INT_EQ(st, 0);
    CHECK(strstr(out, TEMPO_VERSION) != NULL);
    free(out);
}

TEST(cli_usage_errors) {
    static const struct { const char *args, *want; } cases[] = {
        { "--model " STORIES " --frobnicate", "tempo: unknown option '--frobnicate' (see --help)" },
        { "--model " STORIES " --frobnicate=3", "tempo: unknown option '--frobnicate' (see --help)" },
        { "--model " STORIES " --selection-threshold 1.5", "--selection-threshold" },
        { "--model " STORIES " --selection-threshold -0.1", "[0, 1]" },
        { "--model " STORIES " --max-tokens 0", "--max-tokens" },
        { "--model " STORIES " --max-parallel-tokens 0", "--max-parallel-tokens" },
        { "--model " STORIES " --bezier-p1 2", "--bezier-p1" },
        { "--model " STORIES " --bezier-p2=-1", "--bezier-p2" },
        { "--model " STORIES " --relu-activation-point 1", "[0, 1)" },
        { "--model " STORIES " --prompt", "--prompt needs a value" },
        { "--model " STORIES " --no-color=maybe", "--no-color" },
        { "--model " STORIES " stray", "unexpected argument 'stray'" },
        { "--max-tokens 3", "no model given" },
        { "--config /nonexistent/tempo.yaml --model " STORIES, "/nonexistent/tempo.yaml" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int st;
        char *out = cli(cases[i].args, true, &st);
        REQUIRE(out);
        CHECK_MSG(st == 2, "%s: exit %d", cases[i].args, st);
        CHECK_MSG(strstr(out, cases[i].want) != NULL, "%s: got '%s'", cases[i].args, out);
        CHECK_MSG(strncmp(out, "tempo: ", 7) == 0 && strchr(out, '\n') == out + strlen(out) - 1,
                  "%s: not one 'tempo: ' line: '%s'", cases[i].args, out);
        free(out);
    }
}

TEST(cli_runtime_errors) {
    int st;
    char *out = cli("--model /nonexistent.gguf", true, &st);
    CHECK_INT_EQ(st, 1);
    CHECK(strstr(out, "tempo: ") == out && strstr(out, "/nonexistent.gguf"));
    free(out);
    out = cli("--model " STORIES " --max-tokens 2044 --no-color", true, &st);
    CHECK_INT_EQ(st, 1);
    CHECK_MSG(strstr(out, "5 tokens") && strstr(out, "2044") && strstr(out, "2048"), "got '%s'", out);
    free(out);
}

TEST(cli_tokenize) {
    int st;
    char *out = cli("tokenize --model " STORIES " 'Once upon a time'", false, &st);
    REQUIRE(out);
    CHECK_INT_EQ(st, 0);
    CHECK(strcmp(out, "1 403 407 261 378\n") == 0);
    free(out);
    out = cli("tokenize --model " STORIES " --no-bos 'Once upon a time'", false, &st);
    CHECK(strcmp(out, "403 407 261 378\n") == 0);
    free(out);
    out = cli("tokenize --model " STORIES, true, &st);
    CHECK_INT_EQ(st, 2);
    free(out);
}

TEST(cli_greedy_text_streams) {
    int st;
    char *out = cli("--model " STORIES " --max-parallel-tokens 1 --max-tokens 64 --threads 2", false, &st);
    REQUIRE(out);
    CHECK_INT_EQ(st, 0);
    CHECK_MSG(strncmp(out, "Once upon a time, there was a little girl named Lily. She loved to play outside in the park.", 91) == 0,
              "got '%s'", out);
    CHECK(strchr(out, '[') == NULL && strchr(out, '\x1b') == NULL);
    free(out);
}

/* The streamed text equals generated_text, with and without colour. */
TEST(cli_text_colour_and_json_agree) {
    const char *args = "--model " STORIES " --max-tokens 30 --selection-threshold 0.05 --max-parallel-tokens 4 --threads 2";
    char a[1024];
    int st;
    snprintf(a, sizeof a, "%s --output-json", args);
    char *js = cli(a, false, &st);
    REQUIRE(js);
    CHECK_INT_EQ(st, 0);
    const char *end = NULL;
    cJSON *d = cJSON_ParseWithOpts(js, &end, false);
    REQUIRE(d);
    while (end && (*end == '\n' || *end == ' ')) end++;
    CHECK_MSG(end && *end == 0, "stdout has more than one JSON document");
    const char *gen = cJSON_GetObjectItem(d, "generated_text")->valuestring;
    CHECK(strchr(gen, '[') != NULL);
    CHECK(strstr(js, "\\u001b") == NULL);

    char *plain = cli(args, false, &st);
    CHECK_INT_EQ(st, 0);
    char want[8192];
    snprintf(want, sizeof want, "%s\n", gen);
    CHECK_MSG(strcmp(plain, want) == 0, "stream '%s' vs generated_text '%s'", plain, gen);

    char cmd[2048];
    snprintf(cmd, sizeof cmd, "CLICOLOR_FORCE=1 %s %s 2>/dev/null", test_tempo_bin(), args);
    char *col = test_run_capture(cmd, &st);
    CHECK(strstr(col, "\x1b[32m") && strstr(col, "\x1b[33m") && strstr(col, "\x1b[0m"));
    snprintf(cmd, sizeof cmd, "CLICOLOR_FORCE=1 %s %s --no-color 2>/dev/null", test_tempo_bin(), args);
    char *nocol = test_run_capture(cmd, &st);
    CHECK(strcmp(nocol, want) == 0);
    /* colour codes removed, the coloured text is the plain text */
    char *s = col, *w = col;
    while (*s) {
        if (*s == '\x1b') { while (*s && *s != 'm') s++; if (*s) s++; continue; }
        *w++ = *s++;
    }
    *w = 0;
    CHECK(strcmp(col, want) == 0);
    free(js); free(plain); free(col); free(nocol);
    cJSON_Delete(d);
}

TEST(cli_show_token_ids) {
    int st;
    char *out = cli("--model " STORIES " --max-parallel-tokens 1 --max-tokens 3 --show-token-ids", false, &st);
    CHECK_INT_EQ(st, 0);
    CHECK_MSG(strcmp(out, "Once upon a time,(432) there(383) was(286)\n") == 0, "got '%s'", out);
    free(out);
}

TEST(cli_json_and_output_dir) {
    char *dir = test_tmpdir();
    REQUIRE(dir);
    char args[1024];
    snprintf(args, sizeof args, "--model " STORIES " --max-tokens 12 --selection-threshold 0.05 --use-retroactive-pruning "
                                "--output-json --output-dir %s/out/sub", dir);
    int st;
    char *js = cli(args, false, &st);
    CHECK_INT_EQ(st, 0);
    cJSON *d = cJSON_Parse(js);
    REQUIRE(d);
    const char *keys[] = { "prompt", "generated_text", "clean_text", "steps", "config", "metrics", "stop_reason" };
    for (int i = 0; i < 7; i++) CHECK_MSG(cJSON_HasObjectItem(d, keys[i]), "missing %s", keys[i]);
    CHECK_INT_EQ(cJSON_GetArraySize(cJSON_GetObjectItem(d, "steps")), 12);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(d, "config"), "use_retroactive_pruning")));
    char path[1024];
    snprintf(path, sizeof path, "cat %s/out/sub/results.json", dir);
    char *file = test_run_capture(path, &st);
    CHECK_INT_EQ(st, 0);
    cJSON *f = cJSON_Parse(file);
    REQUIRE(f);
    CHECK(strcmp(cJSON_GetObjectItem(f, "generated_text")->valuestring,
                 cJSON_GetObjectItem(d, "generated_text")->valuestring) == 0);
    cJSON_Delete(f);
    cJSON_Delete(d);
    free(js);
    free(file);
    snprintf(path, sizeof path, "rm -rf %s", dir);
    free(test_run_capture(path, &st));
    free(dir);
}

TEST(cli_config_file_overridden_by_flags) {
    char *dir = test_tmpdir();
    REQUIRE(dir);
    char path[512], cmd[1024];
    snprintf(path, sizeof path, "%s/c.yaml", dir);
    FILE *f = fopen(path, "w");
    REQUIRE(f);
    fprintf(f, "model: %s\nmax_tokens: 3\nmax_parallel_tokens: 1\nprompt: \"Once upon a time\"\n", STORIES);
    fclose(f);
    int st;
    snprintf(cmd, sizeof cmd, "--max-tokens 5 --config %s --output-json", path);
    char *js = cli(cmd, false, &st);
    CHECK_INT_EQ(st, 0);
    cJSON *d = cJSON_Parse(js);
    REQUIRE(d);
    CHECK_INT_EQ(cJSON_GetArraySize(cJSON_GetObjectItem(d, "steps")), 5);   /* the flag wins though it came first */
    CHECK_INT_EQ(cJSON_GetObjectItem(cJSON_GetObjectItem(d, "config"), "max_parallel_tokens")->valueint, 1);
    cJSON_Delete(d);
    free(js);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    free(test_run_capture(cmd, &st));
    free(dir);
}

TEST(cli_limit_exit_status_keeps_output) {
    int st;
    char *out = cli("--model " STORIES " --max-parallel-tokens 1 --max-tokens 60 --max-cache-tokens 20 --output-json", false, &st);
    CHECK_INT_EQ(st, 1);
    cJSON *d = cJSON_Parse(out);
    REQUIRE(d);
    CHECK(strcmp(cJSON_GetObjectItem(d, "stop_reason")->valuestring, "cache_limit") == 0);
    CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(d, "steps")) > 5);
    cJSON_Delete(d);
    free(out);
}

TEST(cli_default_mode_and_pruning_run) {
    int st;
    char *out = cli("--model " STORIES " --default-mode --temperature 0.8 --top-k 20 --seed 3 --max-tokens 20", false, &st);
    char *again = cli("--model " STORIES " --default-mode --temperature 0.8 --top-k 20 --seed 3 --max-tokens 20", false, &st);
    CHECK_INT_EQ(st, 0);
    CHECK(strcmp(out, again) == 0 && strchr(out, '[') == NULL);
    free(out);
    free(again);
    out = cli("--model " STORIES " --use-retroactive-pruning --selection-threshold 0.05 --max-tokens 30 --isolate", false, &st);
    CHECK_INT_EQ(st, 0);
    CHECK(strstr(out, "[after pruning]") != NULL);
    free(out);
}

/* examples/embed.c (built by `make build/asan/example_embed`). */
TEST(cli_example_embed) {
    const char *bin = "build/asan/example_embed";
    REQUIRE(access(bin, X_OK) == 0); /* `make test` builds it */
    int st;
    char *out = test_run_capture("build/asan/example_embed " STORIES " 'Once upon a time' 2>&1", &st);
    CHECK_INT_EQ(st, 0);
    CHECK(strstr(out, "clean: Once upon a time, there was") != NULL);
    CHECK(strstr(out, "24 steps") != NULL);
    free(out);
}
