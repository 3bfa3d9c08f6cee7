/* main.c: the tempo command line. It uses nothing but include/tempo.h.
 *
 *   tempo [--model PATH] [--config FILE.yaml] [options]
 *   tempo tokenize --model PATH [--no-bos] TEXT
 *
 * Flags come from the option table (tempo_options): --some-flag sets key
 * some_flag; boolean flags take no value (or --flag=true/false), the others take
 * the next argument or --flag=value. --config is read first, so flags override it
 * wherever they appear. Exit status: 0 done, 1 runtime error or a run stopped by
 * a memory/cache limit or an error, 2 usage error.
 */
#include "cli/sigbus.h"
#include "tempo.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define EXIT_USAGE 2
#define EXIT_RUNTIME 1

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
               "       tempo tokenize --model PATH [--no-bos] TEXT\n\n"
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
        fputc('\n', f);
    }
    fprintf(f, "  %-36s %s\n", "--config FILE", "YAML file of options (key: value); command-line flags override it");
    fprintf(f, "  %-36s %s\n", "--help", "this text");
    fprintf(f, "  %-36s %s\n", "--version", "print the version");
    fprintf(f, "\nsubcommands:\n  %-36s %s\n", "tokenize --model PATH [--no-bos] TEXT",
            "print the token ids of TEXT on one line");
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
    char err[TEMPO_ERR_LEN] = "";
    tempo_config cfg;
    tempo_config_init(&cfg);
    tempo_model *m = tempo_model_open(model, &cfg, err);
    tempo_config_free(&cfg);
    if (!m) return fail(EXIT_RUNTIME, "%s", err);
    int cap = (int)strlen(text) + 8;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)cap);
    int n = ids ? tempo_tokenize(m, text, bos, ids, cap) : -1;
    if (n > cap) {
        int32_t *more = realloc(ids, sizeof(int32_t) * (size_t)n);
        if (more) { ids = more; cap = n; n = tempo_tokenize(m, text, bos, ids, cap); }
        else n = -1;
    }
    int rc = 0;
    if (n < 0) rc = fail(EXIT_RUNTIME, "could not tokenize the text");
    else {
        for (int i = 0; i < n; i++) printf(i ? " %d" : "%d", (int)ids[i]);
        printf("\n");
    }
    free(ids);
    tempo_model_close(m);
    return rc;
}

/* ------------------------------------------------------------ streaming -- */
typedef struct {
    bool stream, color, show_ids;
    const char *prompt;
    bool prompt_shown;
    int pruned_events;
} printer;

/* The prompt goes out with the first step, so an error before generation
 * starts leaves stdout empty. */
static void show_prompt(printer *p) {
    if (!p->stream || p->prompt_shown) return;
    fputs(p->prompt, stdout);
    p->prompt_shown = true;
}

/* One step to stdout, in the library's bracket form. */
static void print_step(const tempo_step *st, bool color, bool ids) {
    char *s = tempo_step_text(st, color, ids);
    fputs(s, stdout);
    free(s);
}

static int on_step(tempo_event ev, const tempo_step *st, void *user) {
    printer *p = user;
    if (ev == TEMPO_EVENT_PRUNE) { p->pruned_events++; return 0; }
    if (p->stream) {
        show_prompt(p);
        print_step(st, p->color, p->show_ids);
        fflush(stdout);
    }
    return 0;
}

/* ---------------------------------------------------------------- output -- */
static int mkdir_p(const char *dir) {
    char path[4096];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof path) return -1;
    memcpy(path, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (path[i] == '/' || path[i] == 0) {
            char c = path[i];
            path[i] = 0;
            if (mkdir(path, 0777) && errno != EEXIST) return -1;
            path[i] = c;
        }
    }
    return 0;
}

static int write_results(const char *dir, const char *json) {
    if (mkdir_p(dir)) return fail(EXIT_RUNTIME, "cannot create the output directory '%s': %s", dir, strerror(errno));
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
        if (fclose(f)) rc = fail(EXIT_RUNTIME, "cannot write '%s': %s", path, strerror(errno));
    }
    free(path);
    return rc;
}

/* ------------------------------------------------------------------ main -- */
/* Apply every flag but --config to cfg; 0 or an exit status. */
static int apply_flags(tempo_config *cfg, int argc, char **argv) {
    char err[TEMPO_ERR_LEN];
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
        if (tempo_config_set(cfg, key, value, err)) return fail(EXIT_USAGE, "%s", err);
    }
    return 0;
}

int main(int argc, char **argv) {
    tp_cli_install_sigbus_handler(); /* a model file truncated while mapped: a message, exit 1 */
    if (argc > 1 && !strcmp(argv[1], "tokenize")) return cmd_tokenize(argc - 2, argv + 2);

    const char *config_path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { print_usage(stdout); return 0; }
        if (!strcmp(argv[i], "--version")) { printf("tempo %s\n", TEMPO_VERSION); return 0; }
        if (!strcmp(argv[i], "--config")) {
            if (i + 1 >= argc) return fail(EXIT_USAGE, "--config needs a file (see --help)");
            config_path = argv[++i];
        } else if (!strncmp(argv[i], "--config=", 9)) {
            config_path = argv[i] + 9;
        }
    }

    char err[TEMPO_ERR_LEN] = "";
    tempo_config cfg;
    tempo_config_init(&cfg);
    int rc = 0;
    if (config_path && tempo_config_load_yaml(&cfg, config_path, err)) { rc = fail(EXIT_USAGE, "%s", err); goto done; }
    if ((rc = apply_flags(&cfg, argc, argv))) goto done;
    if (tempo_config_validate(&cfg, err)) { rc = fail(EXIT_USAGE, "%s", err); goto done; }
    if (!cfg.model || !*cfg.model) { rc = fail(EXIT_USAGE, "no model given (use --model PATH; see --help)"); goto done; }

    tempo_model *m = tempo_model_open(cfg.model, &cfg, err);
    if (!m) { rc = fail(EXIT_RUNTIME, "%s", err); goto done; }

    const char *force = getenv("CLICOLOR_FORCE"), *nocolor = getenv("NO_COLOR");
    bool tty = isatty(STDOUT_FILENO) || (force && *force && strcmp(force, "0"));
    printer p = { .stream = !cfg.output_json, .show_ids = cfg.show_token_ids,
                  .color = tty && !cfg.no_color && !(nocolor && *nocolor), .prompt = cfg.prompt ? cfg.prompt : "" };
    tempo_result *r = tempo_generate(m, &cfg, on_step, &p, err);
    if (!r) {
        if (p.prompt_shown) fputc('\n', stdout);
        rc = fail(EXIT_RUNTIME, "%s", err);
        tempo_model_close(m);
        goto done;
    }
    if (p.stream) {
        show_prompt(&p);
        fputc('\n', stdout);
        if (p.pruned_events) {
            /* Members pruned after they were shown: the text without them. */
            printf("\n[after pruning]\n%s", cfg.prompt ? cfg.prompt : "");
            for (int k = 0; k < r->n_steps; k++) print_step(&r->steps[k], p.color, p.show_ids);
            fputc('\n', stdout);
        }
        fflush(stdout);
    }
    double sps = r->generation_time_s > 0 ? r->n_steps / r->generation_time_s : 0.0;
    fprintf(stderr, "tempo: %d steps (%d parallel), %d slots, %.3f s, %.1f steps/s, max parallel tokens %d, stop: %s\n",
            r->n_steps, r->parallel_steps, r->total_slots, r->generation_time_s, sps, r->max_parallel_tokens,
            tempo_stop_reason_name(r->stop_reason));
    if (r->stop_message && *r->stop_message) fprintf(stderr, "tempo: %s\n", r->stop_message);

    if (cfg.output_json || (cfg.output_dir && *cfg.output_dir)) {
        char *json = tempo_result_to_json(r, &cfg);
        if (cfg.output_json) {
            fputs(json, stdout);
            fputc('\n', stdout);
            fflush(stdout);
        }
        if (cfg.output_dir && *cfg.output_dir) rc = write_results(cfg.output_dir, json);
        free(json);
    }
    if (r->stop_reason == TEMPO_STOP_MEMORY_LIMIT || r->stop_reason == TEMPO_STOP_CACHE_LIMIT ||
        r->stop_reason == TEMPO_STOP_ERROR)
        rc = EXIT_RUNTIME;
    tempo_result_free(r);
    tempo_model_close(m);
done:
    tempo_config_free(&cfg);
    return rc;
}
