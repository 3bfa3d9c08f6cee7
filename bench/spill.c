/* spill.c: `make bench-spill` (run by `make bench`): what --kv-offload costs.
 *
 * The same generation three ways with build/tempo, each as a child process whose peak resident
 * set the kernel reports (tools/measure.c); wall and CPU time are medians of 3 runs, and the
 * slowdown is the ratio of CPU times (the machine may be shared; the runs use one thread):
 *   in memory   --max-memory-gb 4: the cache stays in memory;
 *   file, roomy --kv-offload with the same limit: the rows live in the spill files but every slot
 *               stays resident (the cost of file-backed pages alone);
 *   spilled     --kv-offload under a limit that keeps at most about a quarter of the cache resident: old
 *               rows leave memory after each layer reads them and are paged back in at the next
 *               step (the slowdown reported).
 * The peak of a long run is set by the end, when the result and its JSON are built, so the
 * spilled run's peak is lower than the in-memory one by less than its cache.
 * The outputs must be identical (checked: the clean_text of every run).
 *
 *   build/bench_spill [--model PATH] [--tokens N] [--width W]
 * Default: stories260K (../shared), 1500 steps of 1 member: a cache of ~1500 slots. The model is
 * tiny, so the forward pass is cheap and page-ins weigh more than on a real model: an upper bound.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "tempo.h"
#include "core/common.h"
#include "kv/spill.h"
#include "memory/memory.h"
#include "tools/measure.h"

#define RUNS 3

typedef struct {
    double seconds;     /* median wall time */
    double cpu;         /* median CPU time (user + system): steadier than wall time on a shared machine */
    size_t peak;        /* bytes, the largest of the runs */
    int status, steps, hot;
    double spilled;     /* bytes */
    char text[256];     /* the end of clean_text */
} run_stats;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double children_cpu(void) {
    struct rusage ru;
    getrusage(RUSAGE_CHILDREN, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

static int run(const char *model, int tokens, int width, const char *extra, const char *out_path, run_stats *rs) {
    char cmd[2048], err[TP_ERR_LEN];
    double t[RUNS], c[RUNS];
    memset(rs, 0, sizeof *rs);
    snprintf(cmd, sizeof cmd,
             "exec build/tempo --model '%s' --threads 1 --max-tokens %d --max-parallel-tokens %d "
             "--selection-threshold 0 --output-json %s > %s 2>/dev/null",
             model, tokens, width, extra, out_path);
    for (int i = 0; i < RUNS; i++) {
        size_t peak = 0;
        double t0 = tp_now(), c0 = children_cpu();
        if (tp_memory_run_measured(cmd, &peak, &rs->status, err)) { fprintf(stderr, "bench_spill: %s\n", err); return -1; }
        t[i] = tp_now() - t0;
        c[i] = children_cpu() - c0; /* the child was reaped: its CPU time is in RUSAGE_CHILDREN */
        if (peak > rs->peak) rs->peak = peak;
    }
    qsort(t, RUNS, sizeof t[0], cmp_double);
    qsort(c, RUNS, sizeof c[0], cmp_double);
    rs->seconds = t[RUNS / 2];
    rs->cpu = c[RUNS / 2];
    char *text = tp_read_file(out_path, NULL, err);
    cJSON *d = text ? cJSON_Parse(text) : NULL;
    free(text);
    if (!d) { fprintf(stderr, "bench_spill: no JSON from: %s\n", cmd); return -1; }
    rs->steps = cJSON_GetArraySize(cJSON_GetObjectItem(d, "steps"));
    cJSON *mem = cJSON_GetObjectItem(cJSON_GetObjectItem(d, "metrics"), "memory");
    cJSON *hot = mem ? cJSON_GetObjectItem(mem, "kv_resident_slots") : NULL;
    rs->hot = cJSON_IsNumber(hot) ? hot->valueint : -1;
    rs->spilled = mem ? cJSON_GetObjectItem(mem, "kv_spilled_bytes")->valuedouble : 0;
    const char *ct = cJSON_GetObjectItem(d, "clean_text")->valuestring;
    size_t n = strlen(ct);
    snprintf(rs->text, sizeof rs->text, "%s", n > 200 ? ct + n - 200 : ct);
    cJSON_Delete(d);
    return 0;
}

static void row(const char *label, const run_stats *r, const run_stats *base) {
    printf("%-14s %6d %7.3f %7.3f %9.2f %6d %11.2f %8.2fx\n", label, r->steps, r->seconds, r->cpu,
           r->peak / 1048576.0, r->hot, r->spilled / 1048576.0, base->cpu > 0 ? r->cpu / base->cpu : 0.0);
}

int main(int argc, char **argv) {
    const char *model = "../shared/models/stories260K.gguf";
    int tokens = 1500, width = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--model")) model = argv[i + 1];
        else if (!strcmp(argv[i], "--tokens")) tokens = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--width")) width = atoi(argv[i + 1]);
        else { fprintf(stderr, "usage: build/bench_spill [--model PATH] [--tokens N] [--width W]\n"); return 2; }
    }
    if (access(model, R_OK) != 0) { fprintf(stderr, "bench_spill: cannot read %s\n", model); return 1; }
    char dir[] = "/tmp/tempo-bench-spill-XXXXXX";
    if (!mkdtemp(dir)) { perror("bench_spill: mkdtemp"); return 1; }
    char out[sizeof dir + 16], extra[512];
    snprintf(out, sizeof out, "%s.json", dir);

    /* the fixed part: a 2-step run's peak; then the room the spilled run gets */
    run_stats two, mem, roomy, spilled;
    char cmd_extra[64] = "--max-memory-gb 4";
    int rc = -1;
    if (run(model, 2, width, cmd_extra, out, &two)) goto done;
    if (run(model, tokens, width, cmd_extra, out, &mem)) goto done;
    snprintf(extra, sizeof extra, "--max-memory-gb 4 --kv-offload %s", dir);
    if (run(model, tokens, width, extra, out, &roomy)) goto done;
    /* The spilled run's limit: the fixed part (a 2-step run's peak), the records of every member
     * (tempo's accounting: 1 KB each), one layer's rows of the whole cache (read by its attention
     * pass), the spill's page slack, and an eighth of the cache resident: so about seven eighths
     * of the old rows leave memory after each layer reads them. */
    tempo_error e;
    tempo_model *m = tempo_model_open(model, NULL, &e);
    if (!m) { fprintf(stderr, "bench_spill: %s\n", e.message); goto done; }
    tempo_model_info info;
    tempo_model_get_info(m, &info);
    tempo_model_close(m);
    double slot = 2.0 * info.n_layers * info.n_kv_heads * info.head_dim * 4, cap = 8.0 + (double)tokens * width;
    double need = cap * TP_MEM_MEMBER_OVERHEAD + cap * slot / info.n_layers + (double)tp_kv_spill_slack_bytes(info.n_layers) +
                  cap / 8 * slot + 256.0 * 1024;
    double limit = 0;
    /* the estimate is rough (the run's own accounting is the judge): lower the limit until at
     * most a quarter of the cache stays resident, while the run still completes */
    for (int attempt = 0; attempt < 6; attempt++, need -= cap * slot / 16) {
        run_stats r;
        double l = ((double)two.peak + need) / 0.95 / TP_GB;
        snprintf(extra, sizeof extra, "--max-memory-gb %.9f --kv-offload %s", l, dir);
        if (run(model, tokens, width, extra, out, &r)) goto done;
        if (r.steps != tokens) break;
        spilled = r;
        limit = l;
        if (r.hot >= 0 && r.hot <= cap / 4) break;
    }
    if (limit == 0) { fprintf(stderr, "bench_spill: no limit found at which the spilled run completes\n"); goto done; }

    printf("kv offload: %s, %d steps x %d member(s), 1 thread, median of %d runs\n", model, tokens, width, RUNS);
    printf("%-14s %6s %7s %7s %9s %6s %11s %9s\n", "run", "steps", "wall_s", "cpu_s", "peak_MB", "hot", "spilled_MB",
           "slowdown");
    row("in memory", &mem, &mem);
    row("file, roomy", &roomy, &mem);
    row("spilled", &spilled, &mem);
    printf("spilled run: --max-memory-gb %.6f (%.2f MB); outputs %s\n", limit, limit * 1024,
           !strcmp(mem.text, roomy.text) && !strcmp(mem.text, spilled.text) && mem.steps == spilled.steps
               ? "identical"
               : "DIFFER");
    rc = mem.steps == spilled.steps && !strcmp(mem.text, spilled.text) ? 0 : 1;
done:
    unlink(out);
    rmdir(dir);
    return rc;
}
