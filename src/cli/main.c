/* main.c: the tempo command line. It uses nothing but include/tempo.h.
 *
 *   tempo [--model PATH] [--config FILE.yaml] [options]
 *   tempo tokenize --model PATH [--no-bos] TEXT
 *   tempo serve --model PATH [--port 8765] [...]   (src/server/, docs/server.md)
 *   tempo devices                                  (the compute devices, README "Running on a GPU")
 *
 * Flags come from the option table (tempo_options): --some-flag sets key some_flag; boolean
 * flags take no value (or --flag=true/false), the others take the next argument or
 * --flag=value. --config is read first, so flags override it wherever they appear.
 *
 * Exit status: 0 done; 1 a runtime error, a run stopped by a memory/cache limit or an error, or
 * output that could not be written; 2 a usage error; 130 interrupted (SIGINT/SIGTERM: the run
 * stops after its current step and everything produced is still printed and written).
 */
#include "cli/sigbus.h"
#include "tempo.h"
#include "server/serve.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define EXIT_USAGE 2
#define EXIT_RUNTIME 1
#define EXIT_INTERRUPTED 130
#define PROGRESS_MIN_BYTES (100ll * 1024 * 1024)

static int fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(int code, const char *fmt, ...) {
    va_list ap;
    fputs("tempo: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return code;
}

/* The library's log lines (automatic width, warnings, --debug-mode memory lines) go to stderr. */
static void log_to_stderr(tempo_log_level level, const char *text, void *user) {
    (void)level;
    (void)user;
    fprintf(stderr, "%s\n", text);
}

/* "--selection-threshold" -> "selection_threshold" (up to '=' when present). */
static void key_of(const char *arg, char *key, size_t cap) {
    size_t i = 0;
    for (arg += 2; *arg && *arg != '=' && i + 1 < cap; arg++) key[i++] = *arg == '-' ? '_' : *arg;
    key[i] = 0;
}

static void print_usage(FILE *f) {
    int n;
    const tempo_option_info *opts = tempo_options(&n);
    fprintf(f, "usage: tempo [--model PATH] [--config FILE.yaml] [options]\n"
               "       tempo tokenize --model PATH [--no-bos] TEXT\n"
               "       tempo serve --model PATH [--port 8765] [options]   (see tempo serve --help)\n"
               "       tempo devices\n\n"
               "TEMPO generation: every token whose probability passes the threshold is kept,\n"
               "and all of a step's tokens go through the model together at one position.\n\n"
               "options:\n");
    for (int i = 0; i < n; i++) {
        char flag[96];
        size_t k = 0;
        flag[k++] = '-'; flag[k++] = '-';
        for (const char *p = opts[i].key; *p && k + 8 < sizeof flag; p++) flag[k++] = *p == '_' ? '-' : *p;
        flag[k] = 0;
        if (opts[i].type != TEMPO_OPT_BOOL) {
            const char *meta = opts[i].type == TEMPO_OPT_INT ? " N" : opts[i].type == TEMPO_OPT_FLOAT ? " X" : " TEXT";
            strncat(flag, meta, sizeof flag - strlen(flag) - 1);
        }
        fprintf(f, "  %-36s %s", flag, opts[i].help);
        if (opts[i].type != TEMPO_OPT_BOOL && opts[i].def && *opts[i].def && !strstr(opts[i].help, "default"))
            fprintf(f, " (default: %s)", opts[i].def);
        if (opts[i].range && *opts[i].range && opts[i].type != TEMPO_OPT_BOOL)
            fprintf(f, " [%s]", opts[i].range);
        fputc('\n', f);
    }
    fprintf(f, "  %-36s %s\n", "--config FILE", "YAML file of options (key: value); command-line flags override it");
    fprintf(f, "  %-36s %s\n", "--help", "this text");
    fprintf(f, "  %-36s %s\n", "--version", "print the version");
    fprintf(f, "\nsubcommands:\n  %-36s %s\n", "tokenize --model PATH [--no-bos] TEXT",
            "print the token ids of TEXT on one line (reads only the tokenizer)");
    fprintf(f, "  %-36s %s\n", "serve --model PATH [options]",
            "HTTP server: the OpenAI API and TEMPO's (see tempo serve --help, docs/server.md)");
    fprintf(f, "  %-36s %s\n", "devices", "list the compute devices (--device values) with their memory");
    fprintf(f, "\nexit status: 0 done, 1 runtime error or a limit stopped the run, 2 usage error, 130 interrupted\n");
}

/* ------------------------------------------------------------- tokenize -- */
static int cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *text = NULL;
    bool bos = true;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--model")) {
            if (i + 1 >= argc) return fail(EXIT_USAGE, "--model needs a value");
            model = argv[++i];
        } else if (!strncmp(a, "--model=", 8)) {
            model = a + 8;
        } else if (!strcmp(a, "--no-bos")) {
            bos = false;
        } else if (!strcmp(a, "--help")) {
            print_usage(stdout);
            return 0;
        } else if (!strncmp(a, "--", 2)) {
            return fail(EXIT_USAGE, "unknown option '%s' for tokenize (see --help)", a);
        } else if (text) {
            return fail(EXIT_USAGE, "tokenize takes one TEXT argument; got '%s' and '%s' (quote the text)", text, a);
        } else {
            text = a;
        }
    }
    if (!model) return fail(EXIT_USAGE, "tokenize: no model given (use --model PATH)");
    if (!text) return fail(EXIT_USAGE, "tokenize: no TEXT given");
    tempo_error err;
    tempo_vocab *v = tempo_vocab_open(model, &err);
    if (!v) return fail(EXIT_RUNTIME, "%s", err.message);
    size_t len = strlen(text);
    if (len > 1u << 30) { tempo_vocab_close(v); return fail(EXIT_USAGE, "tokenize: the text is over 1 GB"); }
    int cap = (int)len + 8;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)cap);
    int n = ids ? tempo_vocab_tokenize(v, text, bos, ids, cap) : -1;
    if (n > cap) {
        int32_t *more = realloc(ids, sizeof(int32_t) * (size_t)n);
        if (more) { ids = more; cap = n; n = tempo_vocab_tokenize(v, text, bos, ids, cap); }
        else n = -1;
    }
    int rc = 0;
    if (n < 0) rc = fail(EXIT_RUNTIME, "could not tokenize the text");
    else {
        for (int i = 0; i < n; i++) printf(i ? " %d" : "%d", (int)ids[i]);
        printf("\n");
        if (fflush(stdout) || ferror(stdout)) rc = fail(EXIT_RUNTIME, "cannot write to stdout: %s", strerror(errno));
    }
    free(ids);
    tempo_vocab_close(v);
    return rc;
}

/* -------------------------------------------------------------- devices -- */
static int cmd_devices(int argc, char **argv) {
    if (argc > 0 && (!strcmp(argv[0], "--help") || !strcmp(argv[0], "-h"))) {
        printf("usage: tempo devices\n\nThe compute devices --device can name, with their memory: cpu, and each Vulkan "
               "device as gpu:N.\n");
        return 0;
    }
    if (argc > 0) return fail(EXIT_USAGE, "devices takes no arguments (got '%s')", argv[0]);
    tempo_device_info d[16];
    int n = tempo_devices(d, 16);
    printf("%-7s %-40s %-10s %10s %16s  %s\n", "device", "name", "kind", "memory", "free", "notes");
    printf("%-7s %-40s %-10s %10s %16s  %s\n", "cpu", "CPU", "cpu", "-", "-", "always available");
    for (int i = 0; i < n && i < 16; i++) {
        char id[16], mem[32], fr[32], note[256];
        snprintf(id, sizeof id, "gpu:%d", d[i].index);
        snprintf(mem, sizeof mem, "%.2fGB", d[i].memory_gb);
        snprintf(fr, sizeof fr, "%.2fGB%s", d[i].free_gb, d[i].free_known ? "" : " (est.)");
        if (!d[i].usable) snprintf(note, sizeof note, "not usable: %s", d[i].missing);
        else if (d[i].software)
            snprintf(note, sizeof note, "software (CPU) Vulkan: only as --device %s or with TEMPO_VULKAN_ALLOW_CPU=1", id);
        else snprintf(note, sizeof note, "Vulkan %s, %s", d[i].api, d[i].driver);
        printf("%-7s %-40.40s %-10s %10s %16s  %s\n", id, d[i].name, d[i].kind, mem, fr, note);
    }
    if (!tempo_gpu_built()) printf("(built without the Vulkan backend: install libvulkan-dev and glslc, then rebuild)\n");
    else if (n == 0) printf("(no Vulkan devices: no Vulkan loader or driver on this machine)\n");
    char buf[32];
    tempo_error err;
    const char *a = tempo_device_resolve("auto", buf, sizeof buf, &err);
    printf("--device auto uses: %s\n", a ? a : err.message);
    if (fflush(stdout) || ferror(stdout)) return fail(EXIT_RUNTIME, "cannot write to stdout: %s", strerror(errno));
    return 0;
}

/* -------------------------------------------------------------- signals -- */
static tempo_session *volatile running; /* the session a signal stops */
static volatile sig_atomic_t interrupted;

static void on_signal(int sig) {
    (void)sig;
    interrupted = 1;
    tempo_session *s = running;
    if (s) tempo_session_cancel(s); /* an atomic store: safe in a handler */
}

static void catch_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    /* A file size limit (ulimit -f) makes writes past it fail with EFBIG, like a full disk, instead of
     * killing the run: --kv-offload and --output-dir then report it and keep what was produced. */
    signal(SIGXFSZ, SIG_IGN);
}

/* --------------------------------------------------------------- loading -- */
static void draw_progress(double fraction, void *user) {
    (void)user;
    int pct = (int)(100.0 * fraction);
    if (pct > 100) pct = 100;
    fprintf(stderr, "\rloading [%-40.*s] %3d%%", pct * 40 / 100, "########################################", pct);
    if (pct == 100) fputc('\n', stderr);
}

/* Size of a model file, or -1 for a folder or an unreadable path (the loader reports those). */
static long long file_size(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return -1;
    return S_ISDIR(st.st_mode) ? PROGRESS_MIN_BYTES + 1 : (long long)st.st_size;
}

/* ---------------------------------------------------------------- output -- */
static int mkdir_p(const char *dir) {
    char path[4096];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof path) { errno = ENAMETOOLONG; return -1; }
    memcpy(path, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (path[i] == '/' || path[i] == 0) {
            char c = path[i];
            path[i] = 0;
            if (mkdir(path, 0777) && errno != EEXIST) return -1;
            path[i] = c;
        }
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) { errno = ENOTDIR; return -1; }
    return access(dir, W_OK);
}

static int write_results(const char *dir, const char *json) {
    size_t n = strlen(dir) + 16;
    char *path = malloc(n);
    if (!path) return fail(EXIT_RUNTIME, "out of memory");
    snprintf(path, n, "%s/results.json", dir);
    FILE *f = fopen(path, "w");
    int rc = 0;
    if (!f) rc = fail(EXIT_RUNTIME, "cannot write '%s': %s", path, strerror(errno));
    else {
        fputs(json, f);
        fputc('\n', f);
        if (ferror(f) | fclose(f)) rc = fail(EXIT_RUNTIME, "cannot write '%s': %s", path, strerror(errno));
    }
    free(path);
    return rc;
}

/* One step to stdout, in the library's bracket form. */
static void print_step(const tempo_step *st, bool color, bool ids) {
    char *s = tempo_step_text(st, color, ids);
    if (s) fputs(s, stdout);
    free(s);
}

/* ------------------------------------------------------------------ main -- */
/* Apply every flag but --config to cfg; 0 or an exit status. */
static int apply_flags(tempo_config *cfg, int argc, char **argv) {
    tempo_error err;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) || !a[2]) return fail(EXIT_USAGE, "unexpected argument '%s' (see --help)", a);
        const char *eq = strchr(a, '=');
        if (!strcmp(a, "--config")) { i++; continue; }
        if (!strncmp(a, "--config=", 9)) continue;
        char key[128];
        key_of(a, key, sizeof key);
        int type = tempo_option_type(key);
        if (type < 0) {
            char flag[160];
            snprintf(flag, sizeof flag, "%.*s", eq ? (int)(eq - a) : (int)strlen(a), a);
            return fail(EXIT_USAGE, "unknown option '%s' (see --help)", flag);
        }
        const char *value;
        if (eq) value = eq + 1;
        else if (type == TEMPO_OPT_BOOL) value = "true";
        else if (i + 1 < argc) value = argv[++i];
        else return fail(EXIT_USAGE, "%s needs a value (see --help)", a);
        if (tempo_config_set(cfg, key, value, &err)) return fail(EXIT_USAGE, "%s", err.message);
    }
    return 0;
}

/* Generate with the step API, printing each set as it appears. Returns the exit status. */
static int generate(tempo_model *m, const tempo_config *cfg) {
    tempo_error err;
    const char *force = getenv("CLICOLOR_FORCE"), *nocolor = getenv("NO_COLOR");
    bool tty = isatty(STDOUT_FILENO) || (force && *force && strcmp(force, "0"));
    bool color = tty && !cfg->no_color && !(nocolor && *nocolor);
    bool stream = !cfg->output_json;
    const char *prompt = cfg->prompt ? cfg->prompt : "";

    tempo_session *s = tempo_session_new(m, &cfg->gen, &err);
    if (!s) return fail(err.code == TEMPO_ERR_ARG ? EXIT_USAGE : EXIT_RUNTIME, "%s", err.message);
    running = s;
    if (interrupted) tempo_session_cancel(s);
    if (tempo_session_prefill(s, prompt, &err)) {
        running = NULL;
        tempo_session_free(s);
        return fail(EXIT_RUNTIME, "%s", err.message);
    }
    bool prompt_shown = false, any_pruned = false;
    tempo_step_info st;
    int rc;
    while ((rc = tempo_session_step(s, &st, &err)) >= 0) {
        for (int i = 0; i < st.n_prune; i++) any_pruned |= st.prune[i].pruned;
        if (rc == 0) break;
        if (stream) {
            /* The prompt goes out with the first step, so an error before generation starts
             * leaves stdout empty. */
            if (!prompt_shown) { fputs(prompt, stdout); prompt_shown = true; }
            print_step(st.step, color, cfg->show_token_ids);
            fflush(stdout);
        }
    }
    running = NULL;
    tempo_result *r = tempo_session_result(s, &err);
    tempo_session_free(s);
    if (!r) return fail(EXIT_RUNTIME, "%s", err.message);

    int status = 0;
    if (stream) {
        if (!prompt_shown) fputs(prompt, stdout);
        fputc('\n', stdout);
        if (any_pruned) {
            /* Members pruned after they were shown: the text without them. */
            printf("\n[after pruning]\n%s", prompt);
            for (int k = 0; k < r->n_steps; k++) print_step(&r->steps[k], color, cfg->show_token_ids);
            fputc('\n', stdout);
        }
    }
    double sps = r->generation_time_s > 0 ? r->n_steps / r->generation_time_s : 0.0;
    fprintf(stderr, "tempo: %d steps (%d parallel), %d slots, %.3f s, %.1f steps/s, max parallel tokens %d, stop: %s\n",
            r->n_steps, r->parallel_steps, r->total_slots, r->generation_time_s, sps, r->max_parallel_tokens,
            tempo_stop_reason_name(r->stop_reason));
    for (int i = 0; i < r->n_adjustments; i++) {
        const tempo_adjustment *a = &r->adjustments[i];
        if (a->kind == TEMPO_ADJUST_PRUNE_RULE)
            fprintf(stderr, "tempo: pruning rule tightened at step %d: %s threshold %g -> %g (%s)\n", a->from_step,
                    a->relative ? "relative" : "attention", a->old_threshold, a->new_threshold, a->reason);
        else
            fprintf(stderr, "tempo: width cut from %d to %d at step %d (%s)\n", a->old_width, a->new_width,
                    a->from_step, a->reason);
    }
    if (r->stop_message && *r->stop_message && r->stop_reason != TEMPO_STOP_INTERRUPTED)
        fprintf(stderr, "tempo: %s\n", r->stop_message);

    if (cfg->output_json || (cfg->output_dir && *cfg->output_dir)) {
        char *json = tempo_result_to_json(r, cfg);
        if (!json) status = fail(EXIT_RUNTIME, "out of memory writing the JSON document");
        else {
            if (cfg->output_json) fprintf(stdout, "%s\n", json);
            if (cfg->output_dir && *cfg->output_dir && write_results(cfg->output_dir, json)) status = EXIT_RUNTIME;
            free(json);
        }
    }
    if (fflush(stdout) || ferror(stdout)) status = fail(EXIT_RUNTIME, "cannot write to stdout: %s", strerror(errno));
    if (!status) {
        if (r->stop_reason == TEMPO_STOP_INTERRUPTED) status = EXIT_INTERRUPTED;
        else if (r->stop_reason == TEMPO_STOP_MEMORY_LIMIT || r->stop_reason == TEMPO_STOP_CACHE_LIMIT ||
                 r->stop_reason == TEMPO_STOP_ERROR)
            status = EXIT_RUNTIME;
    }
    tempo_result_free(r);
    return status;
}

int main(int argc, char **argv) {
    tp_cli_install_sigbus_handler(); /* a model file truncated while mapped: a message, exit 1 */
    if (argc > 1 && !strcmp(argv[1], "tokenize")) return cmd_tokenize(argc - 2, argv + 2);
    if (argc > 1 && !strcmp(argv[1], "serve")) return tempo_serve_main(argc - 1, argv + 1);
    if (argc > 1 && !strcmp(argv[1], "devices")) return cmd_devices(argc - 2, argv + 2);

    const char *config_path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { print_usage(stdout); return 0; }
        if (!strcmp(argv[i], "--version")) { printf("tempo %s\n", tempo_version()); return 0; }
        if (!strcmp(argv[i], "--config")) {
            if (i + 1 >= argc) return fail(EXIT_USAGE, "--config needs a file (see --help)");
            config_path = argv[++i];
        } else if (!strncmp(argv[i], "--config=", 9)) {
            config_path = argv[i] + 9;
        }
    }

    tempo_error err;
    tempo_config cfg;
    tempo_config_init(&cfg);
    int rc = 0;
    if (config_path && tempo_config_load_yaml(&cfg, config_path, &err)) { rc = fail(EXIT_USAGE, "%s", err.message); goto done; }
    if ((rc = apply_flags(&cfg, argc, argv))) goto done;
    if (tempo_config_validate(&cfg, &err)) { rc = fail(EXIT_USAGE, "%s", err.message); goto done; }
    if (!cfg.model || !*cfg.model) { rc = fail(EXIT_USAGE, "no model given (use --model PATH; see --help)"); goto done; }
    if (tempo_config_was_set(&cfg, "output_dir") && (!cfg.output_dir || !*cfg.output_dir)) {
        rc = fail(EXIT_USAGE, "--output-dir: the directory name is empty");
        goto done;
    }
    /* The output folder is made before the run, so a bad path costs nothing. */
    if (cfg.output_dir && *cfg.output_dir && mkdir_p(cfg.output_dir)) {
        rc = fail(EXIT_RUNTIME, "cannot create the output directory '%s': %s", cfg.output_dir, strerror(errno));
        goto done;
    }

    tempo_log_set(log_to_stderr, NULL);
    catch_signals();
    bool bar = file_size(cfg.model) > PROGRESS_MIN_BYTES && isatty(STDERR_FILENO) && isatty(STDOUT_FILENO);
    cfg.model_params.progress = bar ? draw_progress : NULL;
    tempo_model *m = tempo_model_open(cfg.model, &cfg.model_params, &err);
    if (!m) { rc = fail(err.code == TEMPO_ERR_ARG ? EXIT_USAGE : EXIT_RUNTIME, "%s", err.message); goto done; }
    rc = generate(m, &cfg);
    tempo_model_close(m);
done:
    tempo_config_free(&cfg);
    return rc;
}
