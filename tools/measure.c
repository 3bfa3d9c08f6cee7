/* measure.c: running a command and reading its peak memory as the kernel reports it, and the
 * memory table of `make bench`. Tools for the tests and the benchmark, not part of the library. */
#include "tools/measure.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <fcntl.h>

#include "core/common.h"
#include "memory/memory.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

/* Read a small /proc file into buf (no allocation). Returns bytes read or -1. */
static ssize_t read_small(const char *path, char *buf, size_t cap) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t len = 0;
    while (len + 1 < cap) {
        ssize_t r = read(fd, buf + len, cap - 1 - len);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = 0;
    return (ssize_t)len;
}

/* Value of "Key:   1234 kB" in /proc text, in bytes; 0 when absent. */
static uint64_t kb_field(const char *text, const char *key) {
    size_t kl = strlen(key);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, key, kl) == 0 && p[kl] == ':') return strtoull(p + kl + 1, NULL, 10) * 1024u;
    }
    return 0;
}


/* VmHWM of a live process (bytes), 0 when unreadable. */
static size_t pid_hwm(pid_t pid) {
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    return read_small(path, buf, sizeof buf) > 0 ? (size_t)kb_field(buf, "VmHWM") : 0;
}

/* Why not just wait4's ru_maxrss: Linux folds the high-water mark of the
 * memory a process had before exec into it, and a child forked from a large
 * process (the sanitized test runner) starts as a copy of it. So the child is
 * traced instead, and its VmHWM -- the high-water mark of the program it
 * exec'ed, alone -- is read when it stops at exit (PTRACE_EVENT_EXIT comes
 * before its memory is released). Where tracing is not allowed, ru_maxrss is
 * the (over-)estimate. */
int tp_memory_run_measured(const char *cmd, size_t *peak_bytes, int *exit_status, char *err) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return tp_fail(err, "cannot start '%s': %s", cmd, strerror(errno));
    if (pid == 0) {
        ptrace(PTRACE_TRACEME, 0, NULL, NULL); /* if refused, the child just runs untraced */
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    struct rusage ru;
    size_t hwm = 0;
    bool traced = false, options_set = false;
    for (;;) {
        pid_t r = wait4(pid, &st, 0, &ru);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return tp_fail(err, "waiting for '%s': %s", cmd, strerror(errno));
        if (!WIFSTOPPED(st)) break;
        traced = true;
        int sig = WSTOPSIG(st), deliver = 0;
        if (!options_set) {
            /* the first stop is the SIGTRAP after exec of the shell */
            ptrace(PTRACE_SETOPTIONS, pid, NULL, (void *)(long)(PTRACE_O_TRACEEXIT | PTRACE_O_EXITKILL));
            options_set = true;
        } else if (sig == SIGTRAP && (st >> 16) == PTRACE_EVENT_EXIT) {
            hwm = pid_hwm(pid);
        } else if (sig != SIGTRAP) {
            deliver = sig; /* a real signal: pass it on */
        }
        ptrace(PTRACE_CONT, pid, NULL, (void *)(long)deliver);
    }
    size_t peak = traced && hwm ? hwm : (size_t)ru.ru_maxrss * 1024u; /* ru_maxrss is in KiB */
    if (peak_bytes) *peak_bytes = peak;
    if (exit_status) *exit_status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return 0;
}

/* ----------------------------------------------------------------- bench ---- */

/* Run one configuration; peak bytes, exit status and wall time. */
static int bench_run(const char *bin, const char *model, const char *extra, int T, int W, size_t *peak, int *st,
                     double *secs, char *err) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "exec %s --model '%s' --max-tokens %d --max-parallel-tokens %d --selection-threshold 0 --no-color %s "
             ">/dev/null 2>&1",
             bin, model, T, W, extra ? extra : "");
    double t0 = tp_now();
    int rc = tp_memory_run_measured(cmd, peak, st, err);
    *secs = tp_now() - t0;
    return rc;
}

int tp_memory_bench(const char *bin, const char *model_path, const char *extra_args, tp_kv_type kv_type,
                    const int *max_tokens, int n_max_tokens, const int *widths, int n_widths, FILE *out, char *err) {
    tp_load_opts lo = { 0 };
    tp_model *m = tp_model_load(model_path, &lo, err);
    if (!m) return -1;
    const tp_hparams *hp = &m->hp;
    int32_t ids[256];
    int P = m->tok ? tp_tokenizer_encode(m->tok, "Once upon a time", true, true, ids, 256) : 8; /* the default prompt */
    if (P < 1) P = 8;
    int rc = 0;
    fprintf(out, "memory: peak resident set of real runs vs the estimate (%s)\n", model_path);
    fprintf(out, "%10s %6s %8s %12s %12s %8s %6s %8s\n", "max_tokens", "width", "slots", "estimate_GB", "peak_GB",
            "peak/est", "exit", "seconds");
    for (int wi = 0; wi < n_widths && rc == 0; wi++) {
        size_t peak1 = 0;
        int st = 0;
        double secs = 0;
        /* the fixed part, from a run of one step at this width */
        if (bench_run(bin, model_path, extra_args, 1, widths[wi], &peak1, &st, &secs, err)) { rc = -1; break; }
        size_t fixed = tp_memory_predict_run_bytes(m, 0, P, 0, widths[wi], kv_type, hp->n_ctx);
        size_t other = peak1 > fixed ? peak1 - fixed : 0;
        for (int ti = 0; ti < n_max_tokens; ti++) {
            int T = max_tokens[ti];
            size_t peak = 0;
            if (bench_run(bin, model_path, extra_args, T, widths[wi], &peak, &st, &secs, err)) { rc = -1; break; }
            /* the last step's set is not fed */
            long long slots = (long long)P + (long long)(T - 1) * widths[wi];
            if (slots > hp->n_ctx) slots = hp->n_ctx;
            size_t est = tp_memory_predict_run_bytes(m, other, P, T - 1, widths[wi], kv_type, hp->n_ctx);
            fprintf(out, "%10d %6d %8lld %12.4f %12.4f %8.2f %6d %8.2f\n", T, widths[wi], slots, est / TP_GB,
                    peak / TP_GB, est ? (double)peak / (double)est : 0.0, st, secs);
        }
    }
    tp_model_free(m);
    return rc;
}
