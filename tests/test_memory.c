/* test_memory.c: the memory monitor, the run budget, and the memory limits end
 * to end (the spec's memory test: generation under limits, the measured peak
 * stays within --max-memory-gb). */
#include "test.h"

#include <cjson/cJSON.h>
#include <regex.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tempo.h"
#include "kv/kvcache.h"
#include "memory/budget.h"
#include "memory/memory.h"
#include "model/model.h"
#include "tools/measure.h"

#define GIB (1024.0 * 1024.0 * 1024.0)
#define STORIES SHARED_DIR "/models/stories260K.gguf"

/* /proc values read here independently of the monitor (kB lines -> bytes). */
static double proc_kb(const char *file, const char *key) {
    FILE *f = fopen(file, "r");
    if (!f) return -1;
    char line[256];
    double v = -1;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, kl) && line[kl] == ':') { v = atof(line + kl + 1) * 1024.0; break; }
    fclose(f);
    return v;
}

TEST(memory_stats_match_proc) {
    tempo_memory_monitor *mm = tempo_memory_monitor_new(36.0);
    REQUIRE(mm);
    /* touch 64 MB so the process's resident set visibly moves */
    size_t big = 64u << 20;
    char *p = malloc(big);
    REQUIRE(p);
    memset(p, 1, big);
    tempo_memory_stats s;
    tempo_memory_get_stats(mm, &s);
    double total = proc_kb("/proc/meminfo", "MemTotal"), avail = proc_kb("/proc/meminfo", "MemAvailable");
    double rss = proc_kb("/proc/self/status", "VmRSS"), hwm = proc_kb("/proc/self/status", "VmHWM");
    CHECK(total > 0 && rss > 0);
    CHECK_NEAR(s.system_total_gb, total / GIB, 1e-9);
    CHECK_NEAR(s.system_available_gb, avail / GIB, 0.25);                 /* other processes move it */
    CHECK_NEAR(s.system_used_gb + s.system_available_gb, s.system_total_gb, 1e-9);
    CHECK_NEAR(s.system_percent, 100.0 * s.system_used_gb / s.system_total_gb, 1e-9);
    CHECK_NEAR(s.process_rss_gb, rss / GIB, 8.0 / 1024);                  /* within 8 MB */
    CHECK_NEAR(s.process_peak_gb, hwm / GIB, 8.0 / 1024);
    CHECK(s.process_rss_gb >= 64.0 / 1024);
    CHECK(s.process_peak_gb >= s.process_rss_gb - 1e-9);
    CHECK(!s.has_gpu);
    /* usage is at least the measured resident set */
    CHECK(tempo_memory_current_usage_gb(mm) >= rss / GIB - 8.0 / 1024);
    double av = tempo_memory_available_gb(mm);
    CHECK(av >= 0 && av <= 36.0 - tempo_memory_current_usage_gb(mm) + 1e-6);
    CHECK(av <= avail / GIB + 0.25);
    p[big - 1] = 2;
    free(p);
    tempo_memory_monitor_free(mm);
}

/* Warning from exactly 85%, critical from exactly 95% of max_memory_gb. */
TEST(memory_thresholds_exact) {
    char err[TEMPO_ERR_LEN];
    tempo_memory_monitor *mm = tempo_memory_monitor_new(100.0); /* far above this process's resident set */
    size_t limit = tp_memory_limit_bytes(mm);
    CHECK(limit == (size_t)100 << 30);
    tp_memory_set_other(mm, 0);
    size_t warn = (size_t)85 << 30, crit = (size_t)95 << 30;

    tp_memory_set_weights(mm, warn - 1);
    CHECK(tempo_memory_check_limit(mm, "model loading", err) == TEMPO_MEM_OK);
    CHECK(err[0] == 0);
    tp_memory_set_weights(mm, warn);
    CHECK(tempo_memory_check_limit(mm, "model loading", err) == TEMPO_MEM_WARNING);
    CHECK_MSG(strstr(err, "model loading") && strstr(err, "85.0%") && strstr(err, "100.00GB"), "%s", err);
    tp_memory_set_weights(mm, crit - 1);
    CHECK(tempo_memory_check_limit(mm, "step 3", err) == TEMPO_MEM_WARNING);
    /* the parts add up: weights + KV + work + other */
    tp_memory_set_weights(mm, crit - 1000);
    tp_mem_share share = { 600, 399, 0, 0 }; /* a session's KV cache and buffers */
    CHECK(tp_memory_try_add(mm, &share, 0, NULL) == 0);
    CHECK(tempo_memory_check_limit(mm, "step 3", err) == TEMPO_MEM_WARNING);
    tp_memory_set_other(mm, 1);
    CHECK(tempo_memory_check_limit(mm, "step 3", err) == TEMPO_MEM_CRITICAL);
    CHECK_MSG(strstr(err, "step 3") && strstr(err, "95.0%") && strstr(err, "critical") &&
              strstr(err, "--max-memory-gb"), "%s", err);
    CHECK_NEAR(tempo_memory_current_usage_gb(mm), 95.0, 1e-9);
    CHECK_NEAR(tempo_memory_available_gb(mm) <= 5.0 + 1e-9 ? 1 : 0, 1, 0);
    tp_memory_set_weights(mm, (size_t)120 << 30);
    CHECK(tempo_memory_check_limit(mm, "x", err) == TEMPO_MEM_CRITICAL);
    CHECK(tempo_memory_available_gb(mm) == 0.0);
    tempo_memory_monitor_free(mm);
}

TEST(memory_model_fits_names_both_sizes) {
    char err[TEMPO_ERR_LEN] = "";
    CHECK(tp_memory_check_model_fits(2.0, (int64_t)(3.21 * GIB), err) == -1);
    CHECK_MSG(strstr(err, "model needs 3.21GB of weights but --max-memory-gb is 2.00GB"), "%s", err);
    CHECK(tp_memory_check_model_fits(2.0, (int64_t)(2.0 * GIB), err) == 0);
    /* small sizes keep enough digits to be read */
    CHECK(tp_memory_check_model_fits(0.0005, 1185376, err) == -1);
    CHECK_MSG(strstr(err, "0.0011GB") && strstr(err, "0.000500GB"), "%s", err);
}

/* stories260K: dim 64, 5 layers, 8 heads, 4 KV heads, head_dim 8, vocab 512, ctx 2048. */
TEST(memory_estimates_hand_computed) {
    /* KV: 2 (K,V) x tokens x layers x KV heads x head_dim x bytes */
    CHECK_NEAR(tempo_memory_estimate_kv_cache_gb(1, 100, 5, 4, 8, 4) * GIB, 2.0 * 100 * 5 * 4 * 8 * 4, 1e-6);
    CHECK_NEAR(tempo_memory_estimate_kv_cache_gb(1, 100, 5, 4, 8, 4) * GIB, 128000, 1e-6);
    CHECK_NEAR(tempo_memory_estimate_kv_cache_gb(2, 2048, 5, 4, 8, 2) * GIB, 2.0 * 2 * 2048 * 5 * 4 * 8 * 2, 1e-6);
    /* the spec's 3B example shapes: 28 layers, 8 KV heads, head_dim 128, f16, 100 tokens */
    CHECK_NEAR(tempo_memory_estimate_kv_cache_gb(1, 100, 28, 8, 128, 2), 2.0 * 100 * 28 * 8 * 128 * 2 / GIB, 1e-12);
    /* parallel batch: tokens x (hidden + vocab + sequence) x bytes */
    CHECK_NEAR(tempo_memory_estimate_parallel_batch_gb(20, 100, 512, 64, 4) * GIB, 20.0 * (64 + 512 + 100) * 4, 1e-6);
    CHECK_NEAR(tempo_memory_estimate_parallel_batch_gb(20, 100, 128256, 3072, 2),
               20.0 * (3072 + 128256 + 100) * 2 / GIB, 1e-12);
    /* one KV slot: K+V over 5 layers of kv_dim 32 */
    CHECK_INT_EQ(tp_memory_kv_slot_bytes(5, 32, TP_KV_F32), 2 * 5 * 32 * 4);
    CHECK_INT_EQ(tp_memory_kv_slot_bytes(5, 32, TP_KV_F16), 2 * 5 * 32 * 2);
    CHECK_INT_EQ(tp_memory_kv_slot_bytes(5, 32, TP_KV_Q8_0), 2 * 5 * 34);
    CHECK_INT_EQ(tp_memory_token_work_bytes(64, 512, 2048), 4 * (64 + 512 + 2048));
    /* the same rule as the KV cache itself */
    const tp_kv_type types[] = { TP_KV_F32, TP_KV_F16, TP_KV_Q8_0 };
    for (int i = 0; i < 3; i++) {
        char err[TEMPO_ERR_LEN];
        tp_kv *kv = tp_kv_new(5, 32, types[i], 8, 0, err);
        REQUIRE(kv);
        CHECK_INT_EQ(tp_kv_bytes_per_slot(kv), tp_memory_kv_slot_bytes(5, 32, types[i]));
        tp_kv_free(kv);
    }
}

TEST(memory_max_parallel_rule) {
    size_t per = 0;
    /* 1 MiB available, 100 steps, 1280-byte slots, 4*(64+512+2048) bytes of buffers:
     * per token = 128000 + 10496 = 138496; 0.8 MiB / 138496 = 6.06 -> 6 */
    CHECK_INT_EQ(tp_memory_max_parallel_for(1048576.0, 100, 1280, 10496, &per), 6);
    CHECK_INT_EQ(per, 138496);
    /* exactly 7 tokens' worth after the 20% reserve */
    CHECK_INT_EQ(tp_memory_max_parallel_for(7.0 * 138496 / 0.8 + 1, 100, 1280, 10496, NULL), 7);
    CHECK_INT_EQ(tp_memory_max_parallel_for(7.0 * 138496 / 0.8 - 2, 100, 1280, 10496, NULL), 6);
    /* clamped to 1..50 */
    CHECK_INT_EQ(tp_memory_max_parallel_for(36.0 * GIB, 100, 1280, 10496, NULL), 50);
    CHECK_INT_EQ(tp_memory_max_parallel_for(0, 100, 1280, 10496, NULL), 1);
    CHECK_INT_EQ(tp_memory_max_parallel_for(1000, 100, 1280, 10496, NULL), 1);
    /* longer runs cost more per parallel token */
    CHECK(tp_memory_max_parallel_for(8.0 * 1048576, 1000, 1280, 10496, NULL) <
          tp_memory_max_parallel_for(8.0 * 1048576, 100, 1280, 10496, NULL));
}

TEST(memory_log_line_format) {
    tempo_memory_monitor *mm = tempo_memory_monitor_new(36.0);
    tp_mem_share kv = { (size_t)(0.05 * GIB), 0, 0, 0 };
    tp_memory_try_add(mm, &kv, 0, NULL);
    char line[256];
    tempo_memory_log_line(mm, NULL, line, sizeof line);
    regex_t re;
    REQUIRE(regcomp(&re,
                    "^Memory: System [0-9]+\\.[0-9]{2}/[0-9]+\\.[0-9]{2}GB \\([0-9]+\\.[0-9]%\\) "
                    "Process [0-9]+\\.[0-9]{2}GB \\(peak [0-9]+\\.[0-9]{2}GB\\) KV 0\\.05GB$",
                    REG_EXTENDED) == 0);
    CHECK_MSG(regexec(&re, line, 0, NULL, 0) == 0, "'%s'", line);
    tempo_memory_log_line(mm, "After model load", line, sizeof line);
    CHECK_MSG(!strncmp(line, "After model load: Memory: System ", 33), "'%s'", line);
    CHECK_MSG(regexec(&re, line + 18, 0, NULL, 0) == 0, "'%s'", line);
    regfree(&re);
    tempo_memory_monitor_free(mm);
}

TEST(memory_config_snapshot) {
    tempo_memory_monitor *mm = tempo_memory_monitor_new(12.5);
    tp_memory_set_weights(mm, (size_t)GIB);
    char *txt = tempo_memory_get_config(mm);
    REQUIRE(txt);
    cJSON *o = cJSON_Parse(txt);
    REQUIRE(o);
    CHECK(cJSON_GetObjectItem(o, "max_memory_gb")->valuedouble == 12.5);
    CHECK_NEAR(cJSON_GetObjectItem(o, "weights_gb")->valuedouble, 1.0, 1e-12);
    CHECK(cJSON_GetObjectItem(o, "current_usage_gb")->valuedouble >= 1.0);
    CHECK(cJSON_GetObjectItem(o, "available_gb")->valuedouble <= 11.5 + 1e-9);
    CHECK(cJSON_GetObjectItem(o, "warning_threshold")->valuedouble == 0.85);
    CHECK(cJSON_GetObjectItem(o, "critical_threshold")->valuedouble == 0.95);
    cJSON_Delete(o);
    free(txt);
    tempo_memory_free_memory(mm);
    tempo_memory_monitor_free(mm);
}

/* ---------------------------------------------------------------- budget -- */

/* A model with stories260K's shapes (no weights: the budget reads only shapes and sizes). */
static void fake_model(tp_model *m) {
    memset(m, 0, sizeof *m);
    m->hp = (tp_hparams){ .n_vocab = 512, .dim = 64, .n_layers = 5, .n_heads = 8, .n_kv_heads = 4, .head_dim = 8,
                          .ffn_dim = 172, .n_ctx = 2048, .rope_dim = 8 };
    m->weight_bytes = 1u << 20;
}

/* Make exactly `members` more tokens fit under the 95% level, with what the budget has
 * accounted so far (the prompt's slots included): the accounted runtime is set so that it,
 * not this process's resident set, decides. A token costs its KV slot plus
 * TP_MEM_MEMBER_OVERHEAD. */
static void leave_room(tempo_memory_monitor *mm, long members, size_t slot) {
    size_t crit = (size_t)(0.95 * (double)tp_memory_limit_bytes(mm));
    size_t per = slot + TP_MEM_MEMBER_OVERHEAD;
    tp_memory_set_other(mm, 0);
    size_t known = tp_memory_accounted_bytes(mm);
    tp_memory_set_other(mm, crit - known - (size_t)members * per - per / 2);
}

static tp_budget_params budget_params(int width, int max_tokens, int n_prompt) {
    return (tp_budget_params){ .n_prompt = n_prompt, .max_tokens = max_tokens, .max_parallel_tokens = width,
                               .kv_type = TP_KV_F32, .n_threads = 1 };
}

static tp_kv *fill_prompt(tp_budget *b, int n_prompt, char *err) {
    tp_kv *kv = tp_kv_new(5, 32, TP_KV_F32, tp_budget_kv_max_slots(b), tp_budget_kv_max_bytes(b), err);
    for (int i = 0; kv && i < n_prompt; i++) tp_kv_append(kv, 1, i, -1);
    return kv;
}

TEST(memory_budget_stop_at_memory_limit) {
    char err[TEMPO_ERR_LEN] = "", msg[TEMPO_ERR_LEN];
    tp_model m;
    fake_model(&m);
    tp_budget_params cfg = budget_params(30, 50, 4);
    tempo_memory_monitor *mm = tempo_memory_monitor_new(8.0);
    tp_budget *b = tp_budget_new(mm, &m, &cfg, err);
    REQUIRE(b);
    CHECK_INT_EQ(tp_budget_max_parallel(b), 30);
    CHECK_INT_EQ(tp_budget_kv_max_slots(b), 4 + 49 * 30); /* what the run can use, not the context */
    tp_kv *kv = fill_prompt(b, 4, err);
    REQUIRE(kv);
    leave_room(mm, 100, 1280); /* the prompt's 4 slots + 100 more tokens */
    int fed = 0, k;
    tempo_stop_reason why = TEMPO_STOP_MAX_TOKENS;
    for (k = 0; k < 49; k++) {
        int w = tp_budget_step_width(b, kv, k, 30, &why, msg);
        if (w == 0) break;
        CHECK_INT_EQ(w, 30);
        for (int j = 0; j < w; j++) tp_kv_append(kv, 2, 4 + k, k);
        fed += w;
    }
    CHECK_INT_EQ(k, 3);     /* 3 x 30 = 90 fit, a 4th step of 30 does not */
    CHECK_INT_EQ(fed, 90);
    CHECK(why == TEMPO_STOP_MEMORY_LIMIT);
    CHECK_MSG(strstr(msg, "Memory limit reached at step 3") && strstr(msg, "--max-memory-gb 8.00GB") &&
              strstr(msg, "--memory-policy adapt"), "%s", msg);
    const tempo_adjustment *adj = NULL;
    CHECK_INT_EQ(tp_budget_adjustments(b, &adj), 0);
    tp_kv_free(kv);
    tp_budget_free(b);
    tempo_memory_monitor_free(mm);
}

TEST(memory_budget_adapt_narrows_and_finishes) {
    char err[TEMPO_ERR_LEN] = "", msg[TEMPO_ERR_LEN];
    tp_model m;
    fake_model(&m);
    tp_budget_params cfg = budget_params(10, 51, 4); /* 50 fed steps */
    cfg.adapt = true;
    tempo_memory_monitor *mm = tempo_memory_monitor_new(8.0);
    tp_budget *b = tp_budget_new(mm, &m, &cfg, err);
    REQUIRE(b);
    tp_kv *kv = fill_prompt(b, 4, err);
    REQUIRE(kv);
    leave_room(mm, 120, 1280);
    int fed = 0, prev = 10, steps = 0;
    for (int k = 0; k < 50; k++) {
        tempo_stop_reason why = TEMPO_STOP_MAX_TOKENS;
        int w = tp_budget_step_width(b, kv, k, 10, &why, msg);
        CHECK_MSG(w >= 1, "step %d stopped: %s", k, msg);
        if (w < 1) break;
        CHECK(w <= prev); /* widths only shrink */
        CHECK_INT_EQ(w, tp_budget_current_width(b));
        prev = w;
        for (int j = 0; j < w; j++) tp_kv_append(kv, 2, 4 + k, k);
        fed += w;
        steps++;
    }
    CHECK_INT_EQ(steps, 50);      /* every step ran */
    CHECK(fed <= 120);            /* and the limit held */
    CHECK(prev < 10);
    const tempo_adjustment *adj = NULL;
    int n = tp_budget_adjustments(b, &adj);
    CHECK(n >= 1);
    for (int i = 0; i < n; i++) {
        CHECK(adj[i].new_width >= 1 && adj[i].new_width < adj[i].old_width);
        CHECK(i == 0 ? adj[i].old_width == 10 : adj[i].old_width == adj[i - 1].new_width);
        CHECK(i == 0 || adj[i].from_step > adj[i - 1].from_step);
        CHECK_MSG(adj[i].reason && strstr(adj[i].reason, "memory"), "%s", adj[i].reason);
    }
    if (n) CHECK_INT_EQ(adj[n - 1].new_width, prev);
    /* below one slot, adapt stops too, with the memory message */
    leave_room(mm, 0, 1280);
    tempo_stop_reason why;
    CHECK_INT_EQ(tp_budget_step_width(b, kv, 49, 10, &why, msg), 0);
    CHECK(why == TEMPO_STOP_MEMORY_LIMIT);
    tp_kv_free(kv);
    tp_budget_free(b);
    tempo_memory_monitor_free(mm);
}

TEST(memory_budget_cache_token_limit_and_reclaim) {
    char err[TEMPO_ERR_LEN] = "", msg[TEMPO_ERR_LEN];
    tp_model m;
    fake_model(&m);
    tp_budget_params cfg = budget_params(4, 100, 6);
    cfg.max_cache_tokens = 20;
    tempo_memory_monitor *mm = tempo_memory_monitor_new(36.0);
    tp_budget *b = tp_budget_new(mm, &m, &cfg, err);
    REQUIRE(b);
    CHECK_INT_EQ(tp_budget_kv_max_slots(b), 20);
    tp_kv *kv = fill_prompt(b, 6, err);
    REQUIRE(kv);
    tempo_stop_reason why = TEMPO_STOP_MAX_TOKENS;
    int k = 0;
    for (; k < 10; k++) {
        int w = tp_budget_step_width(b, kv, k, 4, &why, msg);
        if (!w) break;
        for (int j = 0; j < w; j++) tp_kv_append(kv, 2, 6 + k, k);
    }
    CHECK_INT_EQ(k, 3); /* 6 + 12 = 18; 18 + 4 > 20 */
    CHECK(why == TEMPO_STOP_CACHE_LIMIT);
    CHECK_MSG(strstr(msg, "Cache token limit exceeded: 22 > 20."), "%s", msg);
    /* pruned slots: the budget asks for them to be reclaimed before it refuses (the cache's
     * owner compacts), then grants the step */
    tp_kv_kill(kv, 7);
    tp_kv_kill(kv, 8);
    CHECK_INT_EQ(tp_budget_step_width(b, kv, 3, 4, &why, msg), TP_BUDGET_COMPACT);
    CHECK_INT_EQ(kv->n, 18); /* the budget changed nothing */
    tp_kv_compact(kv, NULL);
    CHECK_INT_EQ(tp_budget_step_width(b, kv, 3, 4, &why, msg), 4);
    CHECK_INT_EQ(kv->n, 16);
    tp_kv_free(kv);
    tp_budget_free(b);
    tempo_memory_monitor_free(mm);
}

TEST(memory_budget_auto_width_and_model_check) {
    char err[TEMPO_ERR_LEN] = "";
    tp_model m;
    fake_model(&m);
    tp_budget_params cfg = budget_params(0, 30, 5);
    /* default: auto from memory; plenty of memory -> the cap of 50 */
    tempo_memory_monitor *mm = tempo_memory_monitor_new(36.0);
    tp_budget *b = tp_budget_new(mm, &m, &cfg, err);
    REQUIRE(b);
    double avail = tempo_memory_available_gb(mm);
    if (avail > 1.0) CHECK_INT_EQ(tp_budget_max_parallel(b), 50);
    CHECK(tp_budget_kv_max_bytes(b) > 0 && tp_budget_kv_max_bytes(b) < (size_t)(0.95 * 36 * GIB));
    CHECK_INT_EQ(tp_budget_kv_max_slots(b), 5 + 29 * 50);
    tp_budget_free(b);
    /* a long run: no wider than the context holds for every step, so it never hits the cache limit */
    cfg.max_tokens = 100;
    b = tp_budget_new(mm, &m, &cfg, err);
    REQUIRE(b);
    CHECK_INT_EQ(tp_budget_max_parallel(b), (2048 - 5) / 99);
    CHECK(5 + 99 * tp_budget_max_parallel(b) <= tp_budget_kv_max_slots(b));
    tp_budget_free(b);
    /* the model's budget covers every live session: a session that does not fit does not start */
    tempo_memory_stats st;
    tempo_memory_get_stats(mm, &st);
    CHECK_INT_EQ(st.sessions, 0);
    tp_budget_params big = budget_params(8, 30, 5);
    tp_budget *b1 = tp_budget_new(mm, &m, &big, err);
    REQUIRE(b1);
    tempo_memory_get_stats(mm, &st);
    CHECK_INT_EQ(st.sessions, 1);
    leave_room(mm, 0, 1280); /* nothing left: a second session must be refused */
    tp_budget *b2 = tp_budget_new(mm, &m, &big, err);
    CHECK(b2 == NULL);
    CHECK_MSG(strstr(err, "the session needs") && strstr(err, "1 other live session"), "%s", err);
    tp_budget_free(b2);
    tp_budget_free(b1);
    tempo_memory_monitor_free(mm);
    /* a limit below what this process already holds: the session cannot start */
    mm = tempo_memory_monitor_new(0.001);
    CHECK(tp_budget_new(mm, &m, &cfg, err) == NULL);
    CHECK_MSG(strstr(err, "the session needs") && strstr(err, "--max-memory-gb 0.001000GB"), "%s", err);
    tempo_memory_monitor_free(mm);
}

/* ------------------------------------------------------------ end to end -- */
/* The spec's memory test, done right: real generation runs of the CLI on
 * stories260K under limits, with the peak resident set of each run measured by
 * the kernel (wait4's ru_maxrss), not reported by the run itself.
 *
 * The runs use the optimised binary (TEMPO_RELEASE_BIN, default build/tempo): the
 * sanitized one carries tens of MB of AddressSanitizer shadow memory, which
 * would swamp a limit of a few MB. */

static const char *opt_bin(void) {
    const char *b = getenv("TEMPO_RELEASE_BIN");
    if (!b || !*b) b = "build/tempo";
    return access(b, X_OK) == 0 ? b : NULL;
}

typedef struct {
    int status;
    size_t peak;        /* bytes, measured */
    char *out, *err;    /* stdout, stderr */
    cJSON *json;        /* stdout parsed when --output-json */
} run_result;

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return strdup("");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    size_t got = fread(s, 1, (size_t)n, f);
    s[got] = 0;
    fclose(f);
    return s;
}

/* Run `bin --model stories260K <args>`; false when it could not be started.
 * With measure, the peak resident set is measured (under ptrace: not for the
 * sanitized binary, whose leak checker refuses to run traced). */
static bool run_tempo_m(const char *bin, const char *args, run_result *r, bool measure) {
    char dir[] = "/tmp/tempo-mem-XXXXXX";
    memset(r, 0, sizeof *r);
    if (!mkdtemp(dir)) return false;
    char cmd[2048], out[64], errp[64], e[TEMPO_ERR_LEN];
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(errp, sizeof errp, "%s/err", dir);
    /* --device cpu: these runs hold the CPU engine's resident set to limits of a few MB; on a
     * machine with a GPU, auto would take it, and its driver alone needs more */
    snprintf(cmd, sizeof cmd, "exec %s --model %s --device cpu --no-color %s > %s 2> %s", bin, STORIES, args, out, errp);
    if (measure) {
        if (tp_memory_run_measured(cmd, &r->peak, &r->status, e)) return false;
    } else {
        int st = system(cmd);
        r->status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    }
    r->out = slurp(out);
    r->err = slurp(errp);
    unlink(out);
    unlink(errp);
    rmdir(dir);
    r->json = cJSON_Parse(r->out);
    return true;
}

static bool run_tempo(const char *bin, const char *args, run_result *r) { return run_tempo_m(bin, args, r, true); }
static bool run_plain(const char *bin, const char *args, run_result *r) { return run_tempo_m(bin, args, r, false); }

static void run_free(run_result *r) {
    free(r->out);
    free(r->err);
    cJSON_Delete(r->json);
}

static int json_steps(const run_result *r) {
    cJSON *s = r->json ? cJSON_GetObjectItem(r->json, "steps") : NULL;
    return s ? cJSON_GetArraySize(s) : -1;
}

static const char *json_stop(const run_result *r) {
    cJSON *s = r->json ? cJSON_GetObjectItem(r->json, "stop_reason") : NULL;
    return s && cJSON_IsString(s) ? s->valuestring : "";
}

/* Peak of a short run at width w: the fixed part of every run (runtime, model, buffers). */
static size_t base_peak(const char *bin, int w) {
    char args[256];
    run_result r;
    snprintf(args, sizeof args, "--threads 1 --max-tokens 2 --selection-threshold 0 --max-parallel-tokens %d --output-json", w);
    if (!run_tempo(bin, args, &r)) return 0;
    size_t p = r.status == 0 ? r.peak : 0;
    run_free(&r);
    return p;
}

TEST(memory_e2e_peak_within_limit_at_several_limits_and_widths) {
    const char *bin = opt_bin();
    REQUIRE(bin && "build/tempo is missing: run make (make test should build it)");
    const double limits[] = { 0.02, 0.05, 0.25 };
    const int widths[] = { 1, 8, 50 };
    for (int li = 0; li < 3; li++)
        for (int wi = 0; wi < 3; wi++) {
            char args[256];
            run_result r;
            /* threshold 0: every step holds exactly W members, the worst case */
            snprintf(args, sizeof args,
                     "--max-tokens 40 --selection-threshold 0 --max-parallel-tokens %d --max-memory-gb %g --output-json",
                     widths[wi], limits[li]);
            REQUIRE(run_tempo(bin, args, &r));
            CHECK_MSG(r.peak > 0 && (double)r.peak <= limits[li] * GIB,
                      "W=%d limit %gGB: peak %.2fMB", widths[wi], limits[li], r.peak / 1048576.0);
            CHECK_MSG(r.status == 0 && json_steps(&r) == 40 && !strcmp(json_stop(&r), "max_tokens"),
                      "W=%d limit %gGB: status %d, %d steps, stop %s\n%s", widths[wi], limits[li], r.status,
                      json_steps(&r), json_stop(&r), r.err);
            /* the run's own peak report agrees with the kernel's */
            cJSON *mt = r.json ? cJSON_GetObjectItem(r.json, "metrics") : NULL;
            double own = mt ? cJSON_GetObjectItem(mt, "peak_memory_bytes")->valuedouble : 0;
            /* (both read the kernel's resident-set counters, which lag by up to a batch of pages per CPU) */
            CHECK_MSG(own > 0 && fabs(own - (double)r.peak) <= 1048576, "reported peak %.0f vs measured %zu", own,
                      r.peak);
            run_free(&r);
        }
}

/* A limit a little above what a run needs to start: the run stops mid-way with
 * memory_limit, keeps every step it completed, and the peak stays in the limit.
 * One thread: the kernel's resident-set counters lag by a batch of pages per
 * CPU that touched memory, which matters at a 1 MB margin. */
TEST(memory_e2e_memory_limit_mid_run) {
    const char *bin = opt_bin();
    REQUIRE(bin && "build/tempo is missing: run make (make test should build it)");
    size_t base = base_peak(bin, 50);
    REQUIRE(base > 0);
    double limit_gb = ((double)base + 1.0 * 1048576) / 0.95 / GIB; /* about 1 MB = 800 slots of room */
    char args[512];
    run_result r;
    snprintf(args, sizeof args,
             "--threads 1 --max-tokens 40 --selection-threshold 0 --max-parallel-tokens 50 --max-memory-gb %.9f --output-json",
             limit_gb);
    REQUIRE(run_tempo(bin, args, &r));
    int n = json_steps(&r);
    CHECK_MSG(r.status != 0, "exit status %d", r.status);
    CHECK_MSG(!strcmp(json_stop(&r), "memory_limit"), "stop %s\n%s", json_stop(&r), r.err);
    CHECK_MSG(n >= 1 && n < 39, "%d steps", n);
    CHECK_MSG((double)r.peak <= limit_gb * GIB, "peak %.3fMB > limit %.3fMB", r.peak / 1048576.0,
              limit_gb * 1024);
    char want[64];
    snprintf(want, sizeof want, "Memory limit reached at step %d:", n);
    CHECK_MSG(strstr(r.err, want), "stderr lacks '%s':\n%s", want, r.err);
    cJSON *sm = r.json ? cJSON_GetObjectItem(r.json, "stop_message") : NULL;
    CHECK(sm && cJSON_IsString(sm) && strstr(sm->valuestring, want));
    /* every completed step has its 50 members */
    cJSON *steps = r.json ? cJSON_GetObjectItem(r.json, "steps") : NULL;
    for (int k = 0; steps && k < n; k++)
        CHECK_INT_EQ(cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetArrayItem(steps, k), "tokens")), 50);
    run_free(&r);

    /* The same run as text, with the JSON written to a file by the same run:
     * every completed step was printed, and is in the file. */
    char *dir = test_tmpdir();
    REQUIRE(dir);
    snprintf(args, sizeof args,
             "--threads 1 --max-tokens 40 --selection-threshold 0 --max-parallel-tokens 50 --max-memory-gb %.9f "
             "--output-dir %s",
             limit_gb, dir);
    REQUIRE(run_tempo(bin, args, &r));
    CHECK(r.status != 0);
    const char *m = strstr(r.err, "Memory limit reached at step ");
    CHECK_MSG(m, "%s", r.err);
    int stopped_at = m ? atoi(m + 29) : -1;
    int groups = 0;
    for (const char *p = r.out; (p = strchr(p, '[')); p++) groups++;
    CHECK_MSG(groups == stopped_at, "%d bracket groups printed, stopped at step %d", groups, stopped_at);
    char path[512];
    snprintf(path, sizeof path, "%s/results.json", dir);
    char *txt = slurp(path);
    cJSON *doc = cJSON_Parse(txt);
    cJSON *st = doc ? cJSON_GetObjectItem(doc, "steps") : NULL;
    CHECK_MSG(st && cJSON_GetArraySize(st) == stopped_at, "results.json: %d steps",
              st ? cJSON_GetArraySize(st) : -1);
    cJSON *sr = doc ? cJSON_GetObjectItem(doc, "stop_reason") : NULL;
    CHECK(sr && cJSON_IsString(sr) && !strcmp(sr->valuestring, "memory_limit"));
    CHECK((double)r.peak <= limit_gb * GIB);
    cJSON_Delete(doc);
    free(txt);
    unlink(path);
    rmdir(dir);
    free(dir);
    run_free(&r);
}

/* --memory-policy adapt at the same limit: later steps narrow, the run finishes. */
TEST(memory_e2e_adapt_finishes_inside_limit) {
    const char *bin = opt_bin();
    REQUIRE(bin && "build/tempo is missing: run make (make test should build it)");
    size_t base = base_peak(bin, 50);
    REQUIRE(base > 0);
    double limit_gb = ((double)base + 1.0 * 1048576) / 0.95 / GIB;
    char args[512];
    run_result r;
    snprintf(args, sizeof args,
             "--threads 1 --max-tokens 40 --selection-threshold 0 --max-parallel-tokens 50 --max-memory-gb %.9f "
             "--memory-policy adapt --output-json",
             limit_gb);
    REQUIRE(run_tempo(bin, args, &r));
    CHECK_MSG(r.status == 0 && !strcmp(json_stop(&r), "max_tokens") && json_steps(&r) == 40,
              "status %d stop %s steps %d\n%s", r.status, json_stop(&r), json_steps(&r), r.err);
    CHECK_MSG((double)r.peak <= limit_gb * GIB, "peak %.3fMB > limit %.3fMB", r.peak / 1048576.0, limit_gb * 1024);
    cJSON *adj = r.json ? cJSON_GetObjectItem(r.json, "adjustments") : NULL;
    int na = adj ? cJSON_GetArraySize(adj) : 0;
    CHECK_MSG(na >= 1, "no adjustments recorded");
    cJSON *steps = cJSON_GetObjectItem(r.json, "steps");
    int prev_new = 50;
    for (int i = 0; i < na; i++) {
        cJSON *a = cJSON_GetArrayItem(adj, i);
        int from = cJSON_GetObjectItem(a, "from_step")->valueint;
        int oldw = cJSON_GetObjectItem(a, "old_width")->valueint, neww = cJSON_GetObjectItem(a, "new_width")->valueint;
        cJSON *reason = cJSON_GetObjectItem(a, "reason");
        CHECK(oldw == prev_new && neww >= 1 && neww < oldw);
        CHECK(reason && cJSON_IsString(reason) && strstr(reason->valuestring, "memory"));
        /* the step it names is the first one with the new width */
        CHECK_INT_EQ(cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetArrayItem(steps, from), "tokens")), neww);
        if (from > 0)
            CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetArrayItem(steps, from - 1), "tokens")) > neww);
        prev_new = neww;
    }
    run_free(&r);
}

TEST(memory_e2e_model_over_limit_stops_before_loading) {
    run_result r;
    REQUIRE(run_plain(test_tempo_bin(), "--max-tokens 5 --max-memory-gb 0.0005 --output-json", &r));
    CHECK(r.status != 0);
    CHECK_MSG(strstr(r.err, "model needs 0.0011GB of weights but --max-memory-gb is 0.000500GB"), "%s", r.err);
    CHECK(r.json == NULL); /* nothing was generated */
    run_free(&r);
}

/* --max-cache-tokens smaller than prompt + steps: cache_limit with the spec's message. */
TEST(memory_e2e_cache_token_limit) {
    const char *bin = test_tempo_bin();
    run_result r;
    /* "Once upon a time" is BOS + 4 tokens = 5 slots; 4 per step: 9, 13, 17, then 21 > 20 */
    REQUIRE(run_plain(bin,
                      "--max-tokens 10 --selection-threshold 0 --max-parallel-tokens 4 --max-cache-tokens 20 "
                      "--output-json",
                      &r));
    CHECK(r.status != 0);
    CHECK_MSG(!strcmp(json_stop(&r), "cache_limit"), "stop %s\n%s", json_stop(&r), r.err);
    CHECK_INT_EQ(json_steps(&r), 3);
    CHECK_MSG(strstr(r.err, "Cache token limit exceeded: 21 > 20. Raise --max-cache-tokens"), "%s", r.err);
    run_free(&r);
}

/* Auto width from a tight limit: printed, smaller than 50, and the run fits. */
TEST(memory_e2e_auto_width_fits) {
    const char *bin = opt_bin();
    REQUIRE(bin && "build/tempo is missing: run make (make test should build it)");
    size_t base = base_peak(bin, 1);
    REQUIRE(base > 0);
    double limit_gb = ((double)base + 1.0 * 1048576) / 0.95 / GIB;
    char args[512];
    run_result r;
    snprintf(args, sizeof args, "--threads 1 --max-tokens 40 --selection-threshold 0 --max-memory-gb %.9f --output-json", limit_gb);
    REQUIRE(run_tempo(bin, args, &r));
    const char *line = strstr(r.err, "Auto max_parallel_tokens: ");
    REQUIRE(line);
    int w = atoi(line + 26);
    CHECK_MSG(w >= 1 && w < 50, "auto width %d", w);
    cJSON *cfg = r.json ? cJSON_GetObjectItem(r.json, "config") : NULL;
    CHECK(cfg && cJSON_GetObjectItem(cfg, "max_parallel_tokens")->valueint == w);
    CHECK_MSG(r.status == 0 && json_steps(&r) == 40, "status %d steps %d\n%s", r.status, json_steps(&r), r.err);
    CHECK_MSG((double)r.peak <= limit_gb * GIB, "peak %.3fMB > limit %.3fMB", r.peak / 1048576.0, limit_gb * 1024);
    run_free(&r);
}

/* --debug-mode: the memory line after load, after prefill, after each fed step and at the end. */
TEST(memory_e2e_debug_log_lines) {
    run_result r;
    REQUIRE(run_plain(test_tempo_bin(), "--max-tokens 6 --max-parallel-tokens 3 --selection-threshold 0 --debug-mode", &r));
    CHECK(r.status == 0);
    regex_t re;
    REQUIRE(regcomp(&re,
                    "^(After model load|After prefill|Step [0-9]+|End): Memory: System [0-9]+\\.[0-9]{2}/[0-9]+\\.[0-9]{2}GB "
                    "\\([0-9]+\\.[0-9]%\\) Process [0-9]+\\.[0-9]{2}GB \\(peak [0-9]+\\.[0-9]{2}GB\\) KV [0-9]+\\.[0-9]{2}GB$",
                    REG_EXTENDED | REG_NEWLINE) == 0);
    int n_load = 0, n_prefill = 0, n_step = 0, n_end = 0, n_bad = 0;
    char *save = NULL;
    for (char *ln = strtok_r(r.err, "\n", &save); ln; ln = strtok_r(NULL, "\n", &save)) {
        if (!strstr(ln, "Memory: ")) continue;
        if (regexec(&re, ln, 0, NULL, 0)) { n_bad++; fprintf(stderr, "  bad line: %s\n", ln); continue; }
        n_load += !strncmp(ln, "After model load:", 17);
        n_prefill += !strncmp(ln, "After prefill:", 14);
        n_step += !strncmp(ln, "Step ", 5);
        n_end += !strncmp(ln, "End:", 4);
    }
    regfree(&re);
    CHECK_INT_EQ(n_bad, 0);
    CHECK_INT_EQ(n_load, 1);
    CHECK_INT_EQ(n_prefill, 1);
    CHECK_INT_EQ(n_step, 5); /* 6 steps, the last is not fed */
    CHECK_INT_EQ(n_end, 1);
    run_free(&r);
}

/* Pruned slots are reclaimed before the cache refuses: with retroactive pruning
 * the same --max-cache-tokens lets the run go further. */
TEST(memory_e2e_cache_limit_reclaims_pruned_slots) {
    run_result a, b;
    const char *common = "--max-tokens 30 --selection-threshold 0 --max-parallel-tokens 4 --max-cache-tokens 60 --output-json";
    char args[512];
    REQUIRE(run_plain(test_tempo_bin(), common, &a));
    snprintf(args, sizeof args, "%s --use-retroactive-pruning", common);
    REQUIRE(run_plain(test_tempo_bin(), args, &b));
    CHECK(a.status != 0 && !strcmp(json_stop(&a), "cache_limit"));
    CHECK_INT_EQ(json_steps(&a), 13); /* 5 + 4 x 13 = 57; 61 > 60 */
    int pruned = 0;
    cJSON *steps = b.json ? cJSON_GetObjectItem(b.json, "steps") : NULL;
    for (int k = 0; steps && k < cJSON_GetArraySize(steps); k++) {
        cJSON *t = cJSON_GetObjectItem(cJSON_GetArrayItem(steps, k), "tokens");
        for (int j = 0; j < cJSON_GetArraySize(t); j++)
            pruned += cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetArrayItem(t, j), "pruned"));
    }
    CHECK(pruned > 0);
    CHECK_MSG(json_steps(&b) > json_steps(&a), "pruned run: %d steps, %d pruned", json_steps(&b), pruned);
    CHECK(json_steps(&b) == 30 || !strcmp(json_stop(&b), "cache_limit"));
    run_free(&a);
    run_free(&b);
}

/* ------------------------------------------------------------ by layer -- */
/* The breakdown of a live session: stories260K's layers are 7 f32 matrices (q, o: 64x64; k, v:
 * 64x32; gate, up, down: 64x172) and 2 norm vectors of 64 floats; the embeddings and the untied
 * output are 512x64 each, the final norm 64. The sums are the monitor's totals. */
TEST(memory_breakdown_by_layer_matches_the_monitor) {
    tempo_error err;
    tempo_model_params mp;
    tempo_model_params_init(&mp);
    mp.threads = 1;
    tempo_model *m = tempo_model_open(STORIES, &mp, &err);
    REQUIRE(m);
    tempo_gen_params g;
    tempo_gen_params_init(&g);
    g.max_tokens = 12;
    g.selection_threshold = 0;
    g.max_parallel_tokens = 4;
    tempo_session *s = tempo_session_new(m, &g, &err);
    REQUIRE(s && tempo_session_prefill(s, "Once upon a time", &err) == 0);
    tempo_step_info st;
    while (tempo_session_step(s, &st, &err) == 1) {}
    tempo_result *r = tempo_session_result(s, &err);
    REQUIRE(r);
    const tempo_memory_breakdown *mb = &r->memory;
    REQUIRE(mb->n_layers == 5 && mb->layers);
    const size_t layer = (64 * 64 * 2 + 64 * 32 * 2 + 64 * 172 * 3) * 4 + 2 * 64 * 4;
    size_t w = 0, kv = 0;
    for (int l = 0; l < 5; l++) {
        CHECK_INT_EQ(mb->layers[l].weights_bytes, layer);
        CHECK(mb->layers[l].scratch_bytes > 0 && mb->layers[l].scratch_bytes <= mb->scratch_bytes);
        CHECK_INT_EQ(mb->layers[l].kv_spilled_bytes, 0);
        w += mb->layers[l].weights_bytes;
        kv += mb->layers[l].kv_bytes;
    }
    CHECK_INT_EQ(mb->shared_weights_bytes, 2 * 512 * 64 * 4 + 64 * 4);
    CHECK_INT_EQ(mb->other_weights_bytes, 0);
    /* the monitor's own numbers, read independently while the session is alive */
    tempo_memory_stats ms;
    tempo_memory_get_stats(tempo_model_memory(m), &ms);
    CHECK_INT_EQ(w + mb->shared_weights_bytes + mb->other_weights_bytes, mb->weights_bytes);
    CHECK_NEAR((double)mb->weights_bytes, ms.weights_gb * GIB, 0.5);
    CHECK_INT_EQ(kv, mb->kv_bytes);
    CHECK_NEAR((double)mb->kv_bytes, ms.kv_gb * GIB, 0.5);
    CHECK_NEAR((double)mb->scratch_bytes, ms.work_gb * GIB, 0.5);
    /* the KV share: 5 + 11 x 4 = 49 slots of 1280 bytes, and a partly used page per row array */
    CHECK_INT_EQ(mb->kv_bytes, 49 * 1280 + TP_KV_PAGE_SLACK(5));
    CHECK_INT_EQ(mb->accounted_bytes, tp_memory_accounted_bytes(tempo_model_memory(m)));
    CHECK_INT_EQ(mb->accounted_bytes,
                 mb->weights_bytes + mb->kv_bytes + mb->scratch_bytes + mb->records_bytes + mb->other_bytes);
    CHECK(mb->kv_resident_slots == -1);
    /* the JSON carries the same numbers */
    char *js = tempo_result_to_json(r, NULL);
    cJSON *d = cJSON_Parse(js);
    cJSON *mem = d ? cJSON_GetObjectItem(cJSON_GetObjectItem(d, "metrics"), "memory") : NULL;
    REQUIRE(mem);
    cJSON *layers = cJSON_GetObjectItem(mem, "layers");
    CHECK_INT_EQ(cJSON_GetArraySize(layers), 5);
    CHECK(cJSON_GetObjectItem(cJSON_GetArrayItem(layers, 2), "weights_bytes")->valuedouble == (double)layer);
    CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(mem, "totals"), "kv_bytes")->valuedouble == (double)mb->kv_bytes);
    cJSON_Delete(d);
    free(js);
    tempo_result_free(r);
    tempo_session_free(s);
    tempo_model_close(m);
}

/* --debug-mode: one line per layer and one of totals, after prefill and at the end. */
TEST(memory_e2e_debug_by_layer) {
    run_result r;
    REQUIRE(run_plain(test_tempo_bin(), "--max-tokens 4 --max-parallel-tokens 2 --selection-threshold 0 --debug-mode", &r));
    CHECK(r.status == 0);
    regex_t re;
    REQUIRE(regcomp(&re,
                    "^(After prefill|End): layer [0-4]: weights [0-9.]+GB, KV [0-9.]+GB \\(spilled [0-9.]+GB\\), "
                    "scratch [0-9.]+GB \\(shared by every layer\\)$",
                    REG_EXTENDED | REG_NEWLINE) == 0);
    int layer_lines = 0, totals = 0;
    char *save = NULL;
    for (char *ln = strtok_r(r.err, "\n", &save); ln; ln = strtok_r(NULL, "\n", &save)) {
        layer_lines += regexec(&re, ln, 0, NULL, 0) == 0;
        totals += strstr(ln, ": memory totals: weights ") && strstr(ln, "accounted ") != NULL;
    }
    regfree(&re);
    CHECK_INT_EQ(layer_lines, 10);
    CHECK_INT_EQ(totals, 2);
    run_free(&r);
}

/* ------------------------------------------------------ --memory-policy prune -- */
static int json_pruned(const run_result *r) {
    int n = 0;
    cJSON *steps = r->json ? cJSON_GetObjectItem(r->json, "steps") : NULL;
    for (int k = 0; steps && k < cJSON_GetArraySize(steps); k++) {
        cJSON *t = cJSON_GetObjectItem(cJSON_GetArrayItem(steps, k), "tokens");
        for (int j = 0; j < cJSON_GetArraySize(t); j++)
            n += cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetArrayItem(t, j), "pruned"));
    }
    return n;
}

/* The limit that stops a run under "stop" lets it go further under "prune": from the warning
 * level on, earlier sets lose their lowest-scoring members and their slots are reused; the rule
 * is tightened (recorded) before any width is cut; the measured peak stays under the limit. */
TEST(memory_e2e_prune_policy_outlasts_stop) {
    const char *bin = opt_bin();
    REQUIRE(bin && "build/tempo is missing: run make (make test should build it)");
    /* 200 steps of 10 members: a member costs 1280 bytes of KV and 1 KB of record; from 85% of
     * the limit on, pruning lets the members of later steps reuse the KV slots of pruned ones */
    size_t base = base_peak(bin, 10);
    REQUIRE(base > 0);
    double limit_gb = ((double)base + 1.5 * 1048576) / 0.95 / GIB;
    char args[512];
    run_result a, b;
    const char *common = "--threads 1 --max-tokens 200 --selection-threshold 0 --max-parallel-tokens 10 --output-json";
    snprintf(args, sizeof args, "%s --max-memory-gb %.9f", common, limit_gb);
    REQUIRE(run_tempo(bin, args, &a));
    snprintf(args, sizeof args, "%s --max-memory-gb %.9f --memory-policy prune", common, limit_gb);
    REQUIRE(run_tempo(bin, args, &b));
    CHECK_MSG(!strcmp(json_stop(&a), "memory_limit"), "stop: %s", json_stop(&a));
    CHECK_MSG(json_steps(&b) > json_steps(&a), "prune: %d steps, stop: %d steps\n%s", json_steps(&b), json_steps(&a),
              b.err);
    CHECK_MSG((double)b.peak <= limit_gb * GIB, "peak %.3fMB > limit %.3fMB", b.peak / 1048576.0, limit_gb * 1024);
    CHECK(json_pruned(&b) > 0);
    CHECK_INT_EQ(json_pruned(&a), 0);
    /* the rule changes are recorded, each raising the threshold, all before the first width cut */
    cJSON *adj = b.json ? cJSON_GetObjectItem(b.json, "adjustments") : NULL;
    int rules = 0, first_cut = -1;
    double prev = 0.5;
    for (int i = 0; adj && i < cJSON_GetArraySize(adj); i++) {
        cJSON *x = cJSON_GetArrayItem(adj, i);
        const char *kind = cJSON_GetObjectItem(x, "kind")->valuestring;
        if (!strcmp(kind, "prune_rule")) {
            CHECK(i > 0 || first_cut < 0); /* pruning is tightened before any width is cut */
            CHECK(!strcmp(cJSON_GetObjectItem(x, "rule")->valuestring, "relative"));
            CHECK(cJSON_GetObjectItem(x, "old_threshold")->valuedouble == prev);
            prev = cJSON_GetObjectItem(x, "new_threshold")->valuedouble;
            CHECK(prev > cJSON_GetObjectItem(x, "old_threshold")->valuedouble);
            rules++;
        } else if (first_cut < 0) {
            first_cut = i;
        }
    }
    CHECK_MSG(rules >= 1 && first_cut != 0, "%d rule changes, first width cut at adjustment %d\n%s", rules, first_cut,
              b.err);
    CHECK(strstr(b.err, "pruning rule tightened at step ") != NULL);
    run_free(&a);
    run_free(&b);
}

/* ------------------------------------------------------------ --kv-offload -- */
static bool dir_is_empty(const char *dir) {
    char cmd[600];
    int st;
    snprintf(cmd, sizeof cmd, "ls -A '%s'", dir);
    char *out = test_run_capture(cmd, &st);
    bool empty = out && !*out && st == 0;
    free(out);
    return empty;
}

/* Every step's members and probabilities, exactly. */
static bool same_steps(const run_result *a, const run_result *b) {
    cJSON *x = cJSON_GetObjectItem(a->json, "steps"), *y = cJSON_GetObjectItem(b->json, "steps");
    if (!x || !y || cJSON_GetArraySize(x) != cJSON_GetArraySize(y)) return false;
    for (int k = 0; k < cJSON_GetArraySize(x); k++) {
        cJSON *tx = cJSON_GetObjectItem(cJSON_GetArrayItem(x, k), "tokens"), *ty = cJSON_GetObjectItem(cJSON_GetArrayItem(y, k), "tokens");
        if (cJSON_GetArraySize(tx) != cJSON_GetArraySize(ty)) return false;
        for (int j = 0; j < cJSON_GetArraySize(tx); j++) {
            cJSON *p = cJSON_GetArrayItem(tx, j), *q = cJSON_GetArrayItem(ty, j);
            if (cJSON_GetObjectItem(p, "token_id")->valueint != cJSON_GetObjectItem(q, "token_id")->valueint ||
                cJSON_GetObjectItem(p, "probability")->valuedouble != cJSON_GetObjectItem(q, "probability")->valuedouble ||
                cJSON_IsTrue(cJSON_GetObjectItem(p, "pruned")) != cJSON_IsTrue(cJSON_GetObjectItem(q, "pruned")))
                return false;
        }
    }
    return !strcmp(cJSON_GetObjectItem(a->json, "clean_text")->valuestring,
                   cJSON_GetObjectItem(b->json, "clean_text")->valuestring);
}

/* A run whose KV cache passes the limit: in memory it stops; with --kv-offload it completes
 * with the same output as a run with room to spare, the measured peak under the limit, its old
 * slots spilled, and nothing left in the folder. With pruning too (compaction moves spilled rows). */
TEST(memory_e2e_kv_offload_continues_past_the_limit) {
    const char *bin = opt_bin();
    REQUIRE(bin && "build/tempo is missing: run make (make test should build it)");
    size_t base = base_peak(bin, 4);
    REQUIRE(base > 0);
    char *dir = test_tmpdir();
    REQUIRE(dir);
    /* 400 steps x 4 members: 1601 KV slots of 1280 bytes (2 MB) next to 1.6 MB of records: in
     * memory the run needs 3.7 MB more than a 2-step run, offloaded about 2 MB, plus the budget's
     * allowance for the kernel's lagging resident-set count (memory.c, rss_slack: 256 KB on 2 CPUs) */
    double limit_gb = ((double)base + 3.0 * 1048576) / 0.95 / GIB;
    for (int pruning = 0; pruning < 2; pruning++) {
        char common[256], args[768];
        snprintf(common, sizeof common, "--threads 1 --max-tokens 400 --selection-threshold 0 --max-parallel-tokens 4 "
                 "--output-json%s", pruning ? " --use-retroactive-pruning" : "");
        run_result mem = { 0 }, off, ref;
        snprintf(args, sizeof args, "%s --max-memory-gb %.9f", common, limit_gb);
        if (!pruning) REQUIRE(run_tempo(bin, args, &mem)); /* with pruning the cache may fit anyway */
        snprintf(args, sizeof args, "%s --max-memory-gb %.9f --kv-offload %s", common, limit_gb, dir);
        REQUIRE(run_tempo(bin, args, &off));
        REQUIRE(run_tempo(bin, common, &ref));
        if (!pruning)
            CHECK_MSG(!strcmp(json_stop(&mem), "memory_limit"), "in memory: %s after %d steps", json_stop(&mem),
                      json_steps(&mem));
        CHECK_MSG(off.status == 0 && json_steps(&off) == 400 && !strcmp(json_stop(&off), "max_tokens"),
                  "offloaded (pruning %d): status %d, %d steps, %s\n%s", pruning, off.status, json_steps(&off),
                  json_stop(&off), off.err);
        CHECK_MSG((double)off.peak <= limit_gb * GIB, "peak %.3fMB > limit %.3fMB", off.peak / 1048576.0,
                  limit_gb * 1024);
        CHECK(ref.json && off.json && same_steps(&off, &ref));
        if (pruning) CHECK(json_pruned(&off) > 0);
        cJSON *mm = off.json ? cJSON_GetObjectItem(cJSON_GetObjectItem(off.json, "metrics"), "memory") : NULL;
        REQUIRE(mm);
        int hot = cJSON_GetObjectItem(mm, "kv_resident_slots")->valueint;
        CHECK_MSG(hot >= 0 && hot < 1601, "%d resident slots", hot);
        if (!pruning) CHECK(cJSON_GetObjectItem(mm, "kv_spilled_bytes")->valuedouble > 0); /* pruned runs may fit */
        CHECK(!strcmp(cJSON_GetObjectItem(cJSON_GetObjectItem(off.json, "config"), "kv_offload")->valuestring, dir));
        CHECK(dir_is_empty(dir));
        run_free(&mem);
        run_free(&off);
        run_free(&ref);
    }
    rmdir(dir);
    free(dir);
}

/* A full disk (here: a file size limit of 128 KiB, which refuses the spill files' growth the
 * same way): a clear error naming --kv-offload, every step before it kept, nothing left behind. */
TEST(memory_e2e_kv_offload_full_disk_keeps_steps) {
    const char *bin = opt_bin();
    REQUIRE(bin && "build/tempo is missing: run make (make test should build it)");
    char *dir = test_tmpdir();
    REQUIRE(dir);
    char cmd[1024];
    int status;
    /* stdout is a pipe (the limit is on files); 128 KiB = 1024 rows of 128 bytes per spill file */
    snprintf(cmd, sizeof cmd,
             "sh -c 'ulimit -f 256; exec %s --model %s --threads 1 --max-tokens 400 --selection-threshold 0 "
             "--max-parallel-tokens 4 --kv-offload %s --output-json 2>/dev/null'",
             bin, STORIES, dir);
    char *out = test_run_capture(cmd, &status);
    cJSON *d = out ? cJSON_Parse(out) : NULL;
    REQUIRE(d);
    CHECK_INT_EQ(status, 1);
    cJSON *steps = cJSON_GetObjectItem(d, "steps"), *msg = cJSON_GetObjectItem(d, "stop_message");
    CHECK(!strcmp(cJSON_GetObjectItem(d, "stop_reason")->valuestring, "error"));
    CHECK_MSG(cJSON_IsString(msg) && strstr(msg->valuestring, "--kv-offload") && strstr(msg->valuestring, dir) &&
              strstr(msg->valuestring, "cannot grow the KV spill files") && strstr(msg->valuestring, "File too large"),
              "%s", cJSON_IsString(msg) ? msg->valuestring : "(none)");
    /* 5 + 4 x 255 = 1025 slots pass 1024 rows: the feed of step 255 fails, steps 0..254 are kept */
    CHECK_INT_EQ(cJSON_GetArraySize(steps), 255);
    for (int k = 0; k < cJSON_GetArraySize(steps); k++)
        CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetArrayItem(steps, k), "tokens")) == 4);
    CHECK(dir_is_empty(dir));
    cJSON_Delete(d);
    free(out);
    rmdir(dir);
    free(dir);
}

/* The spill files have no name from the start: an interrupted run (SIGINT: exit 130, the steps so
 * far printed) or a killed one leaves nothing in the folder. While it runs, its open files are
 * the deleted spill files of that folder. */
TEST(memory_e2e_kv_offload_leaves_nothing_behind) {
    const char *bin = opt_bin();
    REQUIRE(bin && "build/tempo is missing: run make (make test should build it)");
    char *dir = test_tmpdir();
    REQUIRE(dir);
    for (int sig = 0; sig < 2; sig++) {
        char cmd[1024], out[700];
        snprintf(out, sizeof out, "%s.out", dir);
        snprintf(cmd, sizeof cmd,
                 "%s --model %s --threads 1 --max-tokens 1500 --selection-threshold 0 --max-parallel-tokens 1 "
                 "--kv-offload %s --no-color > %s 2>/dev/null & p=$!; sleep 0.3; "
                 "n=$(ls -l /proc/$p/fd 2>/dev/null | grep -c '%s/tempo-kv-.* (deleted)'); "
                 "kill -%s $p; wait $p; echo \"$? $n\"",
                 bin, STORIES, dir, out, dir, sig ? "KILL" : "INT");
        int status;
        char *res = test_run_capture(cmd, &status);
        int rc = -1, open_files = -1;
        CHECK(res && sscanf(res, "%d %d", &rc, &open_files) == 2);
        CHECK_INT_EQ(open_files, 10); /* 5 layers x K and V */
        CHECK_INT_EQ(rc, sig ? 128 + 9 : 130);
        CHECK(dir_is_empty(dir));
        char *text = slurp(out);
        if (!sig) CHECK_MSG(text && !strncmp(text, "Once upon a time", 16) && strlen(text) > 40, "%s", text ? text : "");
        free(text);
        free(res);
        unlink(out);
    }
    rmdir(dir);
    free(dir);
}

TEST(memory_kv_offload_bad_folder) {
    run_result r;
    REQUIRE(run_plain(test_tempo_bin(), "--max-tokens 2 --kv-offload /nonexistent/folder", &r));
    CHECK_INT_EQ(r.status, 2);
    CHECK_MSG(strstr(r.err, "--kv-offload: '/nonexistent/folder' is not a writable folder"), "%s", r.err);
    run_free(&r);
}
