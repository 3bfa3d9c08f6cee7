/* test_cli_truths.c: runs end well (signals, output that cannot be written, the output folder
 * checked first) and what a new user finds (tokenize on a vocabulary-only file, options that
 * would be ignored are refused, strict integers, non-finite logits are an error). */
#include "test.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/common.h"
#include "format/gguf.h"
#include "tempo.h"
#include "tools/gguf_write.h"
#include "tools/measure.h"

#define STORIES SHARED_DIR "/models/stories260K.gguf"

static char *cli(const char *args, int *status) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s %s 2>&1", test_tempo_bin(), args);
    return test_run_capture(cmd, status);
}

/* Usage errors: exit 2 and one line naming the option, for every option that would be ignored
 * or that wraps. */
TEST(cli_truths_refused_options) {
    static const struct { const char *args, *want; } cases[] = {
        { "--temperature 0.7", "--temperature applies to --default-mode only" },
        { "--top-k 40", "--top-k applies to --default-mode only" },
        { "--top-p 0.9", "--top-p applies to --default-mode only" },
        { "--seed 7", "--seed applies to --default-mode only" },
        { "--repetition-penalty 1.2", "--repetition-penalty applies to --default-mode only" },
        { "--default-mode --selection-threshold 0.2", "--selection-threshold is a TEMPO option" },
        { "--default-mode --use-retroactive-pruning", "--use-retroactive-pruning is a TEMPO option" },
        { "--isolate --allow-intraset-token-visibility", "contradict each other" },
        { "--kv-cache-type f8", "'f8' is not one of f32, f16, q8_0" },
        { "--memory-policy shrink", "'shrink' is not one of stop, adapt" },
        { "--max-tokens 4294967297", "--max-tokens: 4294967297 is out of range" },
        { "--max-tokens 2147483648", "--max-tokens: 2147483648 is out of range" },
        { "--max-tokens 99999999999999999999", "out of range" },
        { "--top-k 2147483648 --default-mode", "--top-k: 2147483648 is out of range" },
        { "--max-cache-tokens 4294967299", "--max-cache-tokens: 4294967299 is out of range" },
        { "--threads 5000", "--threads: 5000 is out of range" },
        { "--output-dir ''", "--output-dir: the directory name is empty" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char args[512];
        int st;
        snprintf(args, sizeof args, "--model %s --max-tokens 3 %s", STORIES, cases[i].args);
        if (strstr(cases[i].args, "--max-tokens")) snprintf(args, sizeof args, "--model %s %s", STORIES, cases[i].args);
        char *out = cli(args, &st);
        REQUIRE(out);
        CHECK_MSG(st == 2, "%s: exit %d", cases[i].args, st);
        CHECK_MSG(strstr(out, cases[i].want) != NULL, "%s: '%s' not in: %s", cases[i].args, cases[i].want, out);
        CHECK_MSG(strchr(out, '\n') == strrchr(out, '\n'), "%s: more than one line: %s", cases[i].args, out);
        free(out);
    }
    /* the same options are fine where they mean something */
    int st;
    char *out = cli("--model " STORIES " --max-tokens 3 --default-mode --temperature 0.7 --top-k 40 --seed 3", &st);
    CHECK_MSG(st == 0, "exit %d: %s", st, out);
    free(out);
}

/* A vocabulary-only GGUF (no weights) tokenizes: tokenize reads the tokenizer alone. */
TEST(cli_truths_tokenize_vocab_only) {
    int st;
    char *out = cli("tokenize --model " SHARED_DIR "/tokenizer-tests/llama.cpp/ggml-vocab-llama-spm.gguf --no-bos 'Hello world'", &st);
    REQUIRE(out);
    CHECK_MSG(st == 0, "exit %d: %s", st, out);
    CHECK_MSG(strcmp(out, "15043 3186\n") == 0, "%s", out);
    free(out);
    /* generating from it is refused with a clear message, not a crash */
    out = cli("--model " SHARED_DIR "/tokenizer-tests/llama.cpp/ggml-vocab-llama-spm.gguf --max-tokens 2", &st);
    CHECK(st == 1 && strstr(out, "tempo: "));
    free(out);
}

/* SIGINT stops after the current step: the text and its summary, the JSON document and
 * results.json are complete, stop_reason is "interrupted", exit status 130. */
TEST(cli_truths_sigint_keeps_everything) {
    const char *bin = getenv("TEMPO_RELEASE_BIN");
    if (!bin || !*bin) bin = "build/tempo";
    char *dir = test_tmpdir();
    REQUIRE(dir);
    char cmd[4096];
    /* --disable-kv-cache recomputes every slot each step: a run long enough to interrupt */
    snprintf(cmd, sizeof cmd,
             "cd %s && (%s/%s --model %s/%s --max-tokens 2000 --max-parallel-tokens 2 --disable-kv-cache --threads 1 "
             "--output-json --output-dir out > run.json 2> err.txt & pid=$!; "
             "while ! grep -q 'Auto\\|steps' err.txt 2>/dev/null && [ $(stat -c %%s run.json) -eq 0 ]; do "
             "  sleep 0.2; i=$((i+1)); [ $i -gt 5 ] && break; done; sleep 0.5; kill -INT $pid; wait $pid; echo $? > status)",
             dir, getcwd((char[4096]){ 0 }, 4096), bin, getcwd((char[4096]){ 0 }, 4096), STORIES);
    int st;
    char *o = test_run_capture(cmd, &st);
    free(o);
    char path[1024];
    snprintf(path, sizeof path, "%s/status", dir);
    char *status = tp_read_file(path, NULL, (char[TP_ERR_LEN]){ 0 });
    REQUIRE(status);
    CHECK_MSG(atoi(status) == 130, "exit status %s", status);
    free(status);
    snprintf(path, sizeof path, "%s/run.json", dir);
    char *json = tp_read_file(path, NULL, (char[TP_ERR_LEN]){ 0 });
    REQUIRE(json);
    cJSON *d = cJSON_Parse(json);
    CHECK_MSG(d != NULL, "stdout is not one JSON document: %.200s", json);
    if (d) {
        CHECK(strcmp(cJSON_GetObjectItem(d, "stop_reason")->valuestring, "interrupted") == 0);
        int n = cJSON_GetArraySize(cJSON_GetObjectItem(d, "steps"));
        CHECK(n > 0 && n < 2000);
        cJSON_Delete(d);
    }
    snprintf(path, sizeof path, "%s/out/results.json", dir);
    char *saved = tp_read_file(path, NULL, (char[TP_ERR_LEN]){ 0 });
    CHECK_MSG(saved && strncmp(saved, json, strlen(saved)) == 0, "results.json differs from stdout");
    free(saved);
    free(json);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    free(dir);
}

/* Output that cannot be written is an error (exit 1 with the reason), never lost silently; the
 * output folder is made (or refused) before anything runs. */
TEST(cli_truths_write_errors) {
    int st;
    char *out = test_run_capture("build/tempo --model " STORIES " --max-tokens 5 > /dev/full 2>/tmp/tempo-full.err; echo $?", &st);
    REQUIRE(out);
    CHECK_MSG(atoi(out) == 1, "exit %s", out);
    free(out);
    char *err = tp_read_file("/tmp/tempo-full.err", NULL, (char[TP_ERR_LEN]){ 0 });
    CHECK_MSG(err && strstr(err, "cannot write to stdout") && strstr(err, "No space left"), "%s", err ? err : "");
    free(err);
    unlink("/tmp/tempo-full.err");
    out = test_run_capture("build/tempo --model " STORIES " --max-tokens 5 --output-json > /dev/full 2>/dev/null; echo $?", &st);
    CHECK(out && atoi(out) == 1);
    free(out);
    /* an output folder that cannot be made: refused before the model is even read */
    out = cli("--model " STORIES " --max-tokens 5 --output-dir /proc/tempo/x", &st);
    CHECK_MSG(st == 1 && strstr(out, "cannot create the output directory '/proc/tempo/x'") && !strstr(out, "steps"),
              "%d: %s", st, out);
    free(out);
}

/* --memory-policy adapt: width cuts are in the text summary too. */
TEST(cli_truths_adapt_cuts_in_summary) {
    int st;
    char *out = cli("--model " STORIES " --max-tokens 40 --selection-threshold 0 --max-parallel-tokens 8 "
                    "--max-cache-tokens 80 --memory-policy adapt --no-color", &st);
    REQUIRE(out);
    CHECK_MSG(st == 0, "exit %d: %s", st, out);
    CHECK_MSG(strstr(out, "tempo: width cut from 8 to ") && strstr(out, "(cache: "), "%s", out);
    free(out);
}

/* A model that produces NaN stops with "non-finite logits at step N", exit 1, every earlier
 * step kept. stories260K's greedy path is ", there was a little girl": a copy whose embedding
 * row of " little" (the 5th greedy token) is NaN turns the logits non-finite once it is fed. */
TEST(cli_truths_non_finite_logits) {
    char err[TP_ERR_LEN];
    gguf_file *f = tp_gguf_open(STORIES, err);
    REQUIRE(f);
    char *dir = test_tmpdir();
    char path[1024];
    snprintf(path, sizeof path, "%s/nan.gguf", dir);
    gguf_writer *w = tp_gguf_writer_new(32);
    tp_gguf_w_copy_kv(w, f, NULL);
    /* "Once upon a time, there was a little" is 1 403 407 261 378 432 383 286 261 376: 376 is " little" */
    int32_t ids[1] = { 376 };
    char *o = test_run_capture("build/tempo tokenize --model " STORIES " 'Once upon a time, there was a little'", &(int){ 0 });
    REQUIRE(o);
    CHECK_MSG(strstr(o, " 286 261 376\n") != NULL, "%s", o);
    free(o);
    float *copy = NULL;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        const void *data = t->data;
        if (!strcmp(t->name, "token_embd.weight")) {
            REQUIRE(t->type == 0);
            copy = malloc(t->nbytes);
            memcpy(copy, t->data, t->nbytes);
            for (uint64_t c = 0; c < t->ne[0]; c++) copy[(uint64_t)ids[0] * t->ne[0] + c] = NAN;
            data = copy;
        }
        tp_gguf_w_tensor(w, t->name, t->type, t->n_dims, t->ne, data);
    }
    REQUIRE(copy);
    REQUIRE(tp_gguf_writer_save(w, path, err) == 0);
    tp_gguf_writer_free(w);
    tp_gguf_close(f);
    free(copy);
    char args[2048];
    int st;
    snprintf(args, sizeof args, "--model %s --max-tokens 20 --max-parallel-tokens 1 --output-json", path);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s %s 2>%s/err", test_tempo_bin(), args, dir);
    char *out = test_run_capture(cmd, &st);
    CHECK_INT_EQ(st, 1);
    cJSON *d = cJSON_Parse(out);
    REQUIRE(d);
    CHECK(strcmp(cJSON_GetObjectItem(d, "stop_reason")->valuestring, "error") == 0);
    const cJSON *msg = cJSON_GetObjectItem(d, "stop_message");
    CHECK_MSG(cJSON_IsString(msg) && strstr(msg->valuestring, "non-finite logits at step"), "%s", out);
    int n = cJSON_GetArraySize(cJSON_GetObjectItem(d, "steps"));
    CHECK_MSG(n >= 4 && n < 20, "%d steps kept", n);
    cJSON *last = cJSON_GetArrayItem(cJSON_GetObjectItem(d, "steps"), n - 1);
    const cJSON *tok = cJSON_GetArrayItem(cJSON_GetObjectItem(last, "tokens"), 0);
    CHECK(cJSON_GetObjectItem(tok, "token_id")->valueint == ids[0]); /* the NaN token was the last selected */
    cJSON_Delete(d);
    free(out);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    free(dir);
}

/* A tiny model whose file claims a context of 1e8 tokens, run under --max-memory-gb 0.1: nothing
 * is sized by the claim (the session's cache and buffers follow what the run can use), and the
 * kernel-measured peak of the process stays under the limit. */
TEST(cli_truths_context_claim_allocates_nothing) {
    const char *bin = getenv("TEMPO_RELEASE_BIN");
    if (!bin || !*bin) bin = "build/tempo";
    const char *model = "build/fuzz-seeds/corpus/gguf/issue11-context-1e8.gguf"; /* make test makes it */
    REQUIRE(access(model, R_OK) == 0);
    char cmd[1024], err[TP_ERR_LEN];
    size_t peak = 0;
    int status = -1;
    for (int threads = 1; threads <= 2; threads++) {
        snprintf(cmd, sizeof cmd,
                 "exec %s --model %s --max-memory-gb 0.1 --max-tokens 20 --threads %d --selection-threshold 0.05 "
                 "> /dev/null 2>&1", bin, model, threads);
        REQUIRE(tp_memory_run_measured(cmd, &peak, &status, err) == 0);
        CHECK_MSG(status == 0, "%d threads: exit %d", threads, status);
        CHECK_MSG((double)peak < 0.1 * 1073741824.0, "%d threads: peak %.1f MB", threads, peak / 1048576.0);
        /* sized by the claim, one thread's attention scores alone would be 0.37 GB */
        CHECK_MSG(peak < 64u << 20, "%d threads: peak %.1f MB", threads, peak / 1048576.0);
    }
}
