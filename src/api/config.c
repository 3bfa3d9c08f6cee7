/* config.c: tempo_config: defaults, the option table, setting options by name.
 *
 * One table describes every option: its key (the YAML key; the CLI flag is the
 * key with '_' -> '-'), type, where it lives in tempo_config, its range and its
 * help line. The CLI, the YAML loader and --help all read this table, so a new
 * option is one line here.
 */
#include "tempo.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/common.h"

typedef struct {
    tempo_option_info info;
    size_t offset;
    double min, max;        /* numeric range (inclusive) */
    bool max_exclusive;     /* e.g. relu_activation_point in [0, 1) */
    const char *const *choices; /* allowed string values, NULL-terminated, or NULL */
} option;

static const char *const kv_types[] = { "f32", "f16", "q8_0", NULL };
static const char *const policies[] = { "stop", "adapt", NULL };

#define OFF(f) offsetof(tempo_config, f)
#define BIG 1e18
static const option options[] = {
    { { "model", TEMPO_OPT_STRING, "GGUF file or Hugging Face model folder", "" }, OFF(model), 0, 0, false, NULL },
    { { "prompt", TEMPO_OPT_STRING, "prompt text", "Once upon a time" }, OFF(prompt), 0, 0, false, NULL },
    { { "max_tokens", TEMPO_OPT_INT, "generation steps (a TEMPO step may hold several tokens)", "100" }, OFF(max_tokens), 1, BIG, false, NULL },
    { { "min_steps", TEMPO_OPT_INT, "ignore end-of-generation before this step", "0" }, OFF(min_steps), 0, BIG, false, NULL },
    { { "enable_thinking", TEMPO_OPT_BOOL, "wrap the prompt in the chat format with the deep-thinking system message", "false" }, OFF(enable_thinking), 0, 0, false, NULL },
    { { "selection_threshold", TEMPO_OPT_FLOAT, "keep every token with probability >= this", "0.1" }, OFF(selection_threshold), 0, 1, false, NULL },
    { { "max_parallel_tokens", TEMPO_OPT_INT, "most tokens per step (default: computed from the memory limit)", "auto" }, OFF(max_parallel_tokens), 1, BIG, false, NULL },
    { { "isolate", TEMPO_OPT_BOOL, "siblings in a set do not see each other (the default)", "true" }, OFF(isolate), 0, 0, false, NULL },
    { { "allow_intraset_token_visibility", TEMPO_OPT_BOOL, "siblings in a set see each other", "false" }, OFF(allow_intraset_token_visibility), 0, 0, false, NULL },
    { { "dynamic_threshold", TEMPO_OPT_BOOL, "move the threshold from selection_threshold to final_threshold over the run", "false" }, OFF(dynamic_threshold), 0, 0, false, NULL },
    { { "final_threshold", TEMPO_OPT_FLOAT, "threshold at the last step with --dynamic-threshold", "1.0" }, OFF(final_threshold), 0, 1, false, NULL },
    { { "bezier_p1", TEMPO_OPT_FLOAT, "first Bezier control point of the dynamic threshold", "0.2" }, OFF(bezier_p1), 0, 1, false, NULL },
    { { "bezier_p2", TEMPO_OPT_FLOAT, "second Bezier control point of the dynamic threshold", "0.8" }, OFF(bezier_p2), 0, 1, false, NULL },
    { { "use_relu", TEMPO_OPT_BOOL, "ReLU schedule instead of Bezier for the dynamic threshold", "false" }, OFF(use_relu), 0, 0, false, NULL },
    { { "relu_activation_point", TEMPO_OPT_FLOAT, "where the ReLU schedule starts rising, in [0, 1)", "0.5" }, OFF(relu_activation_point), 0, 1, true, NULL },
    { { "use_retroactive_pruning", TEMPO_OPT_BOOL, "prune set members that later tokens ignore", "false" }, OFF(use_retroactive_pruning), 0, 0, false, NULL },
    { { "attention_threshold", TEMPO_OPT_FLOAT, "absolute pruning rule: prune below this attention", "0.01" }, OFF(attention_threshold), 0, 1, false, NULL },
    { { "relative_threshold", TEMPO_OPT_FLOAT, "relative pruning rule: prune below this fraction of the set's mean attention", "0.5" }, OFF(relative_threshold), 0, 1, false, NULL },
    { { "no_relative_attention", TEMPO_OPT_BOOL, "use the absolute pruning rule", "false" }, OFF(no_relative_attention), 0, 0, false, NULL },
    { { "no_multi_scale_attention", TEMPO_OPT_BOOL, "score pruning on the last 3 layers only", "false" }, OFF(no_multi_scale_attention), 0, 0, false, NULL },
    { { "default_mode", TEMPO_OPT_BOOL, "plain autoregressive sampling instead of TEMPO", "false" }, OFF(default_mode), 0, 0, false, NULL },
    { { "temperature", TEMPO_OPT_FLOAT, "sampling temperature in --default-mode (0 = greedy)", "0" }, OFF(temperature), 0, 100, false, NULL },
    { { "top_k", TEMPO_OPT_INT, "sample among the k most probable (0 = off)", "0" }, OFF(top_k), 0, BIG, false, NULL },
    { { "top_p", TEMPO_OPT_FLOAT, "nucleus sampling mass (1 = off)", "1.0" }, OFF(top_p), 0, 1, false, NULL },
    { { "repetition_penalty", TEMPO_OPT_FLOAT, "penalise tokens already present (1 = off)", "1.0" }, OFF(repetition_penalty), 0, 100, false, NULL },
    { { "seed", TEMPO_OPT_INT, "random seed for sampling", "42" }, OFF(seed), 0, BIG, false, NULL },
    { { "threads", TEMPO_OPT_INT, "worker threads (0 = all cores)", "0" }, OFF(threads), 0, 4096, false, NULL },
    { { "kv_cache_type", TEMPO_OPT_STRING, "KV cache storage: f32, f16 or q8_0", "f32" }, OFF(kv_cache_type), 0, 0, false, kv_types },
    { { "max_memory_gb", TEMPO_OPT_FLOAT, "memory limit for the whole run, in GB (1 GB = 1024^3 bytes)", "36.0" }, OFF(max_memory_gb), 1e-6, 1e6, false, NULL },
    { { "max_cache_tokens", TEMPO_OPT_INT, "most KV cache slots (default: the model's context length)", "context" }, OFF(max_cache_tokens), 1, BIG, false, NULL },
    { { "disable_kv_cache", TEMPO_OPT_BOOL, "recompute every slot at each step instead of caching", "false" }, OFF(disable_kv_cache), 0, 0, false, NULL },
    { { "debug_mode", TEMPO_OPT_BOOL, "log memory use to stderr after load, prefill and each step", "false" }, OFF(debug_mode), 0, 0, false, NULL },
    { { "memory_policy", TEMPO_OPT_STRING, "at the memory limit: stop, or adapt (shrink later steps' width)", "stop" }, OFF(memory_policy), 0, 0, false, policies },
    { { "output_json", TEMPO_OPT_BOOL, "print one JSON document on stdout (logs go to stderr)", "false" }, OFF(output_json), 0, 0, false, NULL },
    { { "output_dir", TEMPO_OPT_STRING, "also write DIR/results.json", "" }, OFF(output_dir), 0, 0, false, NULL },
    { { "no_color", TEMPO_OPT_BOOL, "no colour escape codes in the text", "false" }, OFF(no_color), 0, 0, false, NULL },
    { { "show_token_ids", TEMPO_OPT_BOOL, "append (id) to each member in the text", "false" }, OFF(show_token_ids), 0, 0, false, NULL },
};
#define N_OPTIONS ((int)(sizeof options / sizeof options[0]))

const tempo_option_info *tempo_options(int *n) {
    static tempo_option_info infos[N_OPTIONS];
    for (int i = 0; i < N_OPTIONS; i++) infos[i] = options[i].info;
    *n = N_OPTIONS;
    return infos;
}

void tempo_config_init(tempo_config *c) {
    memset(c, 0, sizeof *c);
    c->prompt = tp_xstrdup("Once upon a time");
    c->max_tokens = 100;
    c->selection_threshold = 0.1;
    c->isolate = true;
    c->final_threshold = 1.0;
    c->bezier_p1 = 0.2;
    c->bezier_p2 = 0.8;
    c->relu_activation_point = 0.5;
    c->attention_threshold = 0.01;
    c->relative_threshold = 0.5;
    c->temperature = 0.0;
    c->top_p = 1.0;
    c->repetition_penalty = 1.0;
    c->seed = 42;
    c->kv_cache_type = tp_xstrdup("f32");
    c->max_memory_gb = 36.0;
    c->memory_policy = tp_xstrdup("stop");
}

void tempo_config_free(tempo_config *c) {
    for (int i = 0; i < N_OPTIONS; i++) {
        if (options[i].info.type == TEMPO_OPT_STRING) {
            char **p = (char **)((char *)c + options[i].offset);
            free(*p);
            *p = NULL;
        }
    }
}

static const option *find_option(const char *key) {
    for (int i = 0; i < N_OPTIONS; i++)
        if (strcmp(options[i].info.key, key) == 0) return &options[i];
    return NULL;
}

/* "--selection-threshold" spelling of a key, for messages. */
static void flag_name(const char *key, char *buf, size_t cap) {
    size_t i = 0;
    if (cap < 4) return;
    buf[i++] = '-'; buf[i++] = '-';
    for (; *key && i + 1 < cap; key++) buf[i++] = *key == '_' ? '-' : *key;
    buf[i] = 0;
}

static int parse_bool(const char *s, bool *out) {
    if (!strcasecmp(s, "true") || !strcmp(s, "1") || !strcasecmp(s, "yes") || !strcasecmp(s, "on")) { *out = true; return 0; }
    if (!strcasecmp(s, "false") || !strcmp(s, "0") || !strcasecmp(s, "no") || !strcasecmp(s, "off")) { *out = false; return 0; }
    return -1;
}

static void range_text(const option *o, char *buf, size_t cap) {
    if (o->max >= BIG) snprintf(buf, cap, ">= %g", o->min);
    else snprintf(buf, cap, "[%g, %g%c", o->min, o->max, o->max_exclusive ? ')' : ']');
}

int tempo_config_set(tempo_config *c, const char *key, const char *value, char *err) {
    const option *o = find_option(key);
    char flag[80], range[64];
    if (!o) return tp_fail(err, "unknown option '%s'", key);
    flag_name(key, flag, sizeof flag);
    void *field = (char *)c + o->offset;
    switch (o->info.type) {
    case TEMPO_OPT_BOOL: {
        bool b;
        if (parse_bool(value, &b)) return tp_fail(err, "%s: expected true or false, got '%s'", flag, value);
        *(bool *)field = b;
        return 0;
    }
    case TEMPO_OPT_INT: {
        char *end;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (errno || end == value || *end) return tp_fail(err, "%s: expected an integer, got '%s'", flag, value);
        if ((double)v < o->min || (double)v > o->max) {
            range_text(o, range, sizeof range);
            return tp_fail(err, "%s: %lld is out of range (must be %s)", flag, v, range);
        }
        if (o->offset == OFF(seed)) *(int64_t *)field = v;
        else *(int *)field = (int)v;
        return 0;
    }
    case TEMPO_OPT_FLOAT: {
        char *end;
        errno = 0;
        double v = strtod(value, &end);
        if (errno || end == value || *end || !isfinite(v)) return tp_fail(err, "%s: expected a number, got '%s'", flag, value);
        if (v < o->min || v > o->max || (o->max_exclusive && v >= o->max)) {
            range_text(o, range, sizeof range);
            return tp_fail(err, "%s: %g is out of range (must be in %s)", flag, v, range);
        }
        *(double *)field = v;
        return 0;
    }
    case TEMPO_OPT_STRING: {
        if (o->choices) {
            bool ok = false;
            for (const char *const *ch = o->choices; *ch; ch++) ok |= strcmp(*ch, value) == 0;
            if (!ok) return tp_fail(err, "%s: '%s' is not one of the allowed values", flag, value);
        }
        char **p = (char **)field;
        free(*p);
        *p = tp_xstrdup(value);
        return 0;
    }
    }
    return tp_fail(err, "%s: bad option type", flag);
}

/* Is the option boolean? (The CLI uses this: boolean flags take no value.) */
int tempo_option_type(const char *key) {
    const option *o = find_option(key);
    return o ? (int)o->info.type : -1;
}

int tempo_config_validate(const tempo_config *c, char *err) {
    if (c->min_steps > c->max_tokens)
        return tp_fail(err, "--min-steps %d is larger than --max-tokens %d", c->min_steps, c->max_tokens);
    if (c->use_relu && c->relu_activation_point >= 1.0)
        return tp_fail(err, "--relu-activation-point: %g is out of range (must be in [0, 1))", c->relu_activation_point);
    return 0;
}

const char *tempo_stop_reason_name(tempo_stop_reason r) {
    switch (r) {
    case TEMPO_STOP_MAX_TOKENS: return "max_tokens";
    case TEMPO_STOP_EOS: return "eos";
    case TEMPO_STOP_MEMORY_LIMIT: return "memory_limit";
    case TEMPO_STOP_CACHE_LIMIT: return "cache_limit";
    case TEMPO_STOP_ERROR: return "error";
    }
    return "error";
}
