/* test_memory_sweep.c: the memory limit as a property. 200 runs of the release binary on
 * stories260K with random limits (from what the process holds before main() runs, below which
 * no limit can hold, to comfortable), widths, thresholds, pruning, policies and KV types: the peak
 * resident set the kernel reports never passes --max-memory-gb, and the text streamed to stdout
 * holds exactly the steps of the JSON record (nothing completed is lost, nothing extra shown).
 * Every failure prints its seed: `TEMPO_SWEEP_SEED=<seed> build/asan/test_tempo memory_sweep`
 * reruns just that configuration. */
#include "test.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/common.h"
#include "tools/measure.h"

#define STORIES SHARED_DIR "/models/stories260K.gguf"
#define RUNS 200

static uint64_t next(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double uniform(uint64_t *s) { return (double)(next(s) >> 11) / 9007199254740992.0; }

/* What the stream must be: the prompt, then every step with all the members it had when it was
 * shown (members pruned later were shown too), as --no-color --show-token-ids print them. */
static char *expected_stream(const cJSON *doc, const char *prompt) {
    size_t cap = 1 << 16, len = 0;
    char *s = malloc(cap);
    len += (size_t)snprintf(s, cap, "%s", prompt);
    const cJSON *steps = cJSON_GetObjectItem(doc, "steps"), *st;
    cJSON_ArrayForEach(st, steps) {
        const cJSON *toks = cJSON_GetObjectItem(st, "tokens"), *t;
        int n = cJSON_GetArraySize(toks), j = 0;
        if (len + 4096 > cap) s = realloc(s, cap *= 2);
        if (n > 1) s[len++] = '[';
        cJSON_ArrayForEach(t, toks) {
            len += (size_t)snprintf(s + len, cap - len, "%s%s(%d)", j++ ? "/" : "",
                                    cJSON_GetObjectItem(t, "text")->valuestring,
                                    cJSON_GetObjectItem(t, "token_id")->valueint);
            if (len + 4096 > cap) s = realloc(s, cap *= 2);
        }
        if (n > 1) s[len++] = ']';
        s[len] = 0;
    }
    return s;
}

/* The peak of a run that cannot start (a limit of 1 KB): what the process holds before it can
 * judge a limit at all (the C library, the shared libraries and their relocations, then the
 * model file's header and sizes, read to know what the model needs), plus the spread of that
 * between starts. No limit below it can hold, so the sweep's limits start there. (The binary
 * doing nothing, --version, holds ~0.2 MB less: limits in between failed now and then.) */
static double startup_floor_mb(const char *bin) {
    char cmd[512], err[TP_ERR_LEN];
    size_t peak = 0, most = 0;
    int st;
    snprintf(cmd, sizeof cmd, "exec %s --model %s --device cpu --threads 1 --max-memory-gb 0.000001 > /dev/null 2>&1", bin,
             STORIES);
    for (int i = 0; i < 5; i++)
        if (tp_memory_run_measured(cmd, &peak, &st, err) == 0 && peak > most) most = peak;
    /* the dynamic loader's own work varies from one start to the next by up to ~0.2 MB */
    return (double)most / 1048576.0 + 0.25;
}

static void one_run(const char *bin, double floor_mb, uint64_t seed, int *bad) {
    uint64_t r = seed;
    /* from the startup floor (too small to load the model) to comfortable (a run of stories260K
     * holds about 1-3 MB more than the floor) */
    double limit_mb = floor_mb + 8.0 * uniform(&r);
    int width = 1 + (int)(uniform(&r) * 40);
    double threshold = uniform(&r) < 0.3 ? 0.0 : 0.002 + 0.2 * uniform(&r);
    bool pruning = uniform(&r) < 0.5, visible = uniform(&r) < 0.25, auto_width = uniform(&r) < 0.2;
    const char *policy = uniform(&r) < 0.5 ? "adapt" : "stop";
    const char *kv = (const char *[]){ "f32", "f16", "q8_0" }[next(&r) % 3];
    int max_tokens = 5 + (int)(uniform(&r) * 60);
    char dir[] = "/tmp/tempo-sweep-XXXXXX";
    if (!mkdtemp(dir)) { (*bad)++; return; }
    char cmd[2048], width_arg[48] = "";
    if (!auto_width) snprintf(width_arg, sizeof width_arg, "--max-parallel-tokens %d", width);
    snprintf(cmd, sizeof cmd,
             "exec %s --model %s --device cpu --threads 1 --no-color --show-token-ids --max-tokens %d --selection-threshold %g %s %s %s "
             "--memory-policy %s --kv-cache-type %s --max-memory-gb %.6f --output-dir %s > %s/out 2> %s/err",
             bin, STORIES, max_tokens, threshold, width_arg, pruning ? "--use-retroactive-pruning" : "",
             visible ? "--allow-intraset-token-visibility" : "", policy, kv, limit_mb / 1024.0, dir, dir, dir);
    size_t peak = 0;
    int status = -1;
    char err[TP_ERR_LEN];
    if (tp_memory_run_measured(cmd, &peak, &status, err)) { (*bad)++; fprintf(stderr, "  seed %llu: %s\n", (unsigned long long)seed, err); return; }
    char path[256];
    snprintf(path, sizeof path, "%s/out", dir);
    char *out = tp_read_file(path, NULL, err);
    snprintf(path, sizeof path, "%s/results.json", dir);
    char *json = tp_read_file(path, NULL, err);
    cJSON *doc = json ? cJSON_Parse(json) : NULL;
    bool ok = true;
    char why[512] = "";
    if ((double)peak > limit_mb * 1048576.0) {
        ok = false;
        snprintf(why, sizeof why, "peak %.2f MB over the limit %.2f MB", peak / 1048576.0, limit_mb);
    } else if (status != 0 && status != 1) {
        ok = false;
        snprintf(why, sizeof why, "exit status %d", status);
    } else if (doc) {
        /* a run that started: its stream is exactly the record's steps */
        char *want = expected_stream(doc, "Once upon a time");
        size_t wl = strlen(want);
        if (!out || strncmp(out, want, wl) != 0 || (out[wl] != '\n' && out[wl] != 0)) {
            ok = false;
            snprintf(why, sizeof why, "stdout does not hold the record's %d steps", cJSON_GetArraySize(cJSON_GetObjectItem(doc, "steps")));
        }
        free(want);
    } else if (status == 0) {
        ok = false;
        snprintf(why, sizeof why, "exit 0 without a results.json");
    }
    if (!ok) {
        (*bad)++;
        fprintf(stderr, "  FAILED seed %llu (%s): %s\n", (unsigned long long)seed, why, cmd + 5);
    }
    cJSON_Delete(doc);
    free(json);
    free(out);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) (*bad)++;
}

TEST(memory_sweep_limit_holds_and_nothing_is_lost) {
    const char *bin = getenv("TEMPO_RELEASE_BIN");
    if (!bin || !*bin) bin = "build/tempo";
    REQUIRE(access(bin, X_OK) == 0 && "build/tempo is missing: run make");
    const char *one = getenv("TEMPO_SWEEP_SEED");
    double floor_mb = startup_floor_mb(bin);
    REQUIRE(floor_mb > 0.5);
    fprintf(stderr, "  startup floor %.2f MB\n", floor_mb);
    int bad = 0, runs = 0;
    if (one && *one) {
        one_run(bin, floor_mb, strtoull(one, NULL, 10), &bad);
        runs = 1;
    } else {
        for (uint64_t i = 0; i < RUNS; i++, runs++) one_run(bin, floor_mb, 0x7E4D0ull * 1000 + i, &bad);
    }
    CHECK_MSG(bad == 0, "%d of %d runs failed (each printed with its seed)", bad, runs);
}
