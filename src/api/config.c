/* config.c: tempo_config: every option of the CLI and the YAML file, by name.
 *
 * One table describes every option: its key (the YAML key; the CLI flag is the key with
 * '_' -> '-'), type, where it lives in tempo_config (the model's parameters, the generation's
 * parameters, or the CLI's output settings), its range and its help line. The CLI, the YAML
 * loader, --help and the bindings all read this table, so a new option is one line here (and a
 * field in include/tempo.h).
 *
 * Integers are parsed in 64 bits and checked against the option's range before they are stored,
 * so no value wraps (--max-tokens 4294967297 is refused, not run as 1 step).
 */
#include "api/api.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/common.h"
#include "gpu/gpu.h"

typedef enum { F_BOOL, F_INT, F_U64, F_DOUBLE, F_STR, F_ENUM, F_CHARS } field_kind;

typedef struct {
    tempo_option_info info;
    field_kind kind;
    size_t offset;
    double min, max;            /* numeric range (inclusive) */
    bool max_exclusive;         /* e.g. relu_activation_point in [0, 1) */
    const char *const *choices; /* F_ENUM: the names, index = stored value */
} option;

static const char *const kv_types[] = { "f32", "f16", "q8_0", NULL };
static const char *const policies[] = { "stop", "adapt", "prune", NULL };

#define OFF(f) offsetof(tempo_config, f)
#define GEN(f) offsetof(tempo_config, gen.f)
#define MOD(f) offsetof(tempo_config, model_params.f)
#define IMAX ((double)INT_MAX)
#define I64MAX 9223372036854775807.0

static const option options[] = {
    /* what to run */
    { { "model", TEMPO_OPT_STRING, "GGUF file or Hugging Face model folder", "", "" }, F_STR, OFF(model), 0, 0, false, NULL },
    { { "prompt", TEMPO_OPT_STRING, "prompt text", "Once upon a time", "" }, F_STR, OFF(prompt), 0, 0, false, NULL },
    /* generation */
    { { "max_tokens", TEMPO_OPT_INT, "generation steps (a TEMPO step may hold several tokens)", "100", "" }, F_INT, GEN(max_tokens), 1, IMAX, false, NULL },
    { { "min_steps", TEMPO_OPT_INT, "ignore end-of-generation before this step", "0", "" }, F_INT, GEN(min_steps), 0, IMAX, false, NULL },
    { { "enable_thinking", TEMPO_OPT_BOOL, "wrap the prompt in the chat format with the deep-thinking system message", "false", "" }, F_BOOL, GEN(enable_thinking), 0, 0, false, NULL },
    { { "chat_template", TEMPO_OPT_STRING, "chat format for --enable-thinking (default: the model's)", "", "" }, F_CHARS, GEN(chat_template), 0, 0, false, NULL },
    { { "selection_threshold", TEMPO_OPT_FLOAT, "keep every token with probability >= this", "0.1", "" }, F_DOUBLE, GEN(selection_threshold), 0, 1, false, NULL },
    { { "max_parallel_tokens", TEMPO_OPT_INT, "most tokens per step (default: computed from the memory limit)", "auto", "" }, F_INT, GEN(max_parallel_tokens), 1, IMAX, false, NULL },
    { { "isolate", TEMPO_OPT_BOOL, "siblings in a set do not see each other (the default)", "true", "" }, F_BOOL, OFF(isolate), 0, 0, false, NULL },
    { { "allow_intraset_token_visibility", TEMPO_OPT_BOOL, "siblings in a set see each other", "false", "" }, F_BOOL, GEN(allow_intraset_token_visibility), 0, 0, false, NULL },
    { { "dynamic_threshold", TEMPO_OPT_BOOL, "move the threshold from selection_threshold to final_threshold over the run", "false", "" }, F_BOOL, GEN(dynamic_threshold), 0, 0, false, NULL },
    { { "final_threshold", TEMPO_OPT_FLOAT, "threshold at the last step with --dynamic-threshold", "1.0", "" }, F_DOUBLE, GEN(final_threshold), 0, 1, false, NULL },
    { { "bezier_p1", TEMPO_OPT_FLOAT, "first Bezier control point of the dynamic threshold", "0.2", "" }, F_DOUBLE, GEN(bezier_p1), 0, 1, false, NULL },
    { { "bezier_p2", TEMPO_OPT_FLOAT, "second Bezier control point of the dynamic threshold", "0.8", "" }, F_DOUBLE, GEN(bezier_p2), 0, 1, false, NULL },
    { { "use_relu", TEMPO_OPT_BOOL, "ReLU schedule instead of Bezier for the dynamic threshold", "false", "" }, F_BOOL, GEN(use_relu), 0, 0, false, NULL },
    { { "relu_activation_point", TEMPO_OPT_FLOAT, "where the ReLU schedule starts rising, in [0, 1)", "0.5", "" }, F_DOUBLE, GEN(relu_activation_point), 0, 1, true, NULL },
    { { "use_retroactive_pruning", TEMPO_OPT_BOOL, "prune set members that later tokens ignore", "false", "" }, F_BOOL, GEN(use_retroactive_pruning), 0, 0, false, NULL },
    { { "attention_threshold", TEMPO_OPT_FLOAT, "absolute pruning rule: prune below this attention", "0.01", "" }, F_DOUBLE, GEN(attention_threshold), 0, 1, false, NULL },
    { { "relative_threshold", TEMPO_OPT_FLOAT, "relative pruning rule: prune below this fraction of the set's mean attention", "0.5", "" }, F_DOUBLE, GEN(relative_threshold), 0, 1, false, NULL },
    { { "no_relative_attention", TEMPO_OPT_BOOL, "use the absolute pruning rule", "false", "" }, F_BOOL, GEN(no_relative_attention), 0, 0, false, NULL },
    { { "no_multi_scale_attention", TEMPO_OPT_BOOL, "score pruning on the last 3 layers only", "false", "" }, F_BOOL, GEN(no_multi_scale_attention), 0, 0, false, NULL },
    /* standard mode */
    { { "default_mode", TEMPO_OPT_BOOL, "plain autoregressive sampling instead of TEMPO", "false", "" }, F_BOOL, GEN(default_mode), 0, 0, false, NULL },
    { { "temperature", TEMPO_OPT_FLOAT, "sampling temperature (--default-mode only; 0 = greedy)", "0", "" }, F_DOUBLE, GEN(temperature), 0, 100, false, NULL },
    { { "top_k", TEMPO_OPT_INT, "sample among the k most probable (--default-mode only; 0 = off)", "0", "" }, F_INT, GEN(top_k), 0, IMAX, false, NULL },
    { { "top_p", TEMPO_OPT_FLOAT, "nucleus sampling mass (--default-mode only; 1 = off)", "1.0", "" }, F_DOUBLE, GEN(top_p), 0, 1, false, NULL },
    { { "repetition_penalty", TEMPO_OPT_FLOAT, "penalise tokens already present (--default-mode only; 1 = off)", "1.0", "" }, F_DOUBLE, GEN(repetition_penalty), 0, 100, false, NULL },
    { { "seed", TEMPO_OPT_INT, "random seed for sampling (--default-mode, or --use-mcts rollouts)", "42", "" }, F_U64, GEN(seed), 0, I64MAX, false, NULL },
    /* MCTS over TEMPO sets */
    { { "use_mcts", TEMPO_OPT_BOOL, "search among each step's set (PUCT, rollouts scored by mean log-probability) and commit the most visited member", "false", "" }, F_BOOL, GEN(use_mcts), 0, 0, false, NULL },
    { { "mcts_simulations", TEMPO_OPT_INT, "rollouts per step (--use-mcts)", "10", "" }, F_INT, GEN(mcts_simulations), 1, TEMPO_MCTS_MAX_SIMULATIONS, false, NULL },
    { { "mcts_c_puct", TEMPO_OPT_FLOAT, "exploration weight c of PUCT: Q + c * prior * sqrt(N) / (1 + n) (--use-mcts)", "1.0", "" }, F_DOUBLE, GEN(mcts_c_puct), 0, 100, false, NULL },
    { { "mcts_depth", TEMPO_OPT_INT, "rollout steps after the expanded node (--use-mcts)", "5", "" }, F_INT, GEN(mcts_depth), 0, TEMPO_MCTS_MAX_DEPTH, false, NULL },
    /* model and memory */
    { { "threads", TEMPO_OPT_INT, "worker threads (0 = all cores)", "0", "" }, F_INT, MOD(threads), 0, 4096, false, NULL },
    { { "kv_cache_type", TEMPO_OPT_STRING, "KV cache storage: f32, f16 or q8_0", "f32", "" }, F_ENUM, MOD(kv_cache_type), 0, 0, false, kv_types },
    { { "max_memory_gb", TEMPO_OPT_FLOAT, "memory limit for the whole run, in GB (1 GB = 1024^3 bytes)", "36.0", "" }, F_DOUBLE, MOD(max_memory_gb), 1e-6, 1e6, false, NULL },
    { { "max_cache_tokens", TEMPO_OPT_INT, "most KV cache slots (default: the model's context length)", "context", "" }, F_INT, GEN(max_cache_tokens), 1, IMAX, false, NULL },
    { { "disable_kv_cache", TEMPO_OPT_BOOL, "recompute every slot at each step instead of caching", "false", "" }, F_BOOL, GEN(disable_kv_cache), 0, 0, false, NULL },
    { { "debug_mode", TEMPO_OPT_BOOL, "log memory use to stderr after load, prefill and each step", "false", "" }, F_BOOL, GEN(debug_mode), 0, 0, false, NULL },
    { { "memory_policy", TEMPO_OPT_STRING, "at the memory limit: stop, adapt (shrink later steps' width), or prune (from 85% on, prune the lowest-scoring members first, tightening the rule)", "stop", "" }, F_ENUM, GEN(memory_policy), 0, 0, false, policies },
    { { "kv_offload", TEMPO_OPT_STRING, "keep the KV cache in memory-mapped files in this folder, only the newest slots resident (for runs whose cache passes --max-memory-gb)", "", "" }, F_STR, MOD(kv_offload), 0, 0, false, NULL },
    /* compute device */
    { { "device", TEMPO_OPT_STRING, "auto (a hardware GPU if there is one, else the CPU), cpu, gpu, or gpu:N from `tempo devices`", "auto", "" }, F_STR, MOD(device), 0, 0, false, NULL },
    { { "gpu_layers", TEMPO_OPT_INT, "offload the first N layers to the GPU, the rest run on the CPU (-1: all)", "-1", "" }, F_INT, MOD(gpu_layers), -1, IMAX, false, NULL },
    /* output (the CLI's) */
    { { "output_json", TEMPO_OPT_BOOL, "print one JSON document on stdout (logs go to stderr)", "false", "" }, F_BOOL, OFF(output_json), 0, 0, false, NULL },
    { { "output_dir", TEMPO_OPT_STRING, "also write DIR/results.json", "", "" }, F_STR, OFF(output_dir), 0, 0, false, NULL },
    { { "no_color", TEMPO_OPT_BOOL, "no colour escape codes in the text", "false", "" }, F_BOOL, OFF(no_color), 0, 0, false, NULL },
    { { "show_token_ids", TEMPO_OPT_BOOL, "append (id) to each member in the text", "false", "" }, F_BOOL, OFF(show_token_ids), 0, 0, false, NULL },
};
#define N_OPTIONS ((int)(sizeof options / sizeof options[0]))
_Static_assert(N_OPTIONS <= 128, "set_mask holds 128 options");

/* The range as text, for --help and messages. */
static void range_text(const option *o, char *buf, size_t cap) {
    if (o->kind == F_ENUM) {
        size_t n = 0;
        buf[0] = 0;
        for (const char *const *ch = o->choices; *ch && n + 1 < cap; ch++)
            n += (size_t)snprintf(buf + n, cap - n, "%s%s", ch == o->choices ? "" : ", ", *ch);
    } else if (o->kind == F_INT || o->kind == F_U64 || o->kind == F_DOUBLE) {
        if (o->max >= IMAX) snprintf(buf, cap, ">= %g", o->min);
        else snprintf(buf, cap, "[%g, %g%c", o->min, o->max, o->max_exclusive ? ')' : ']');
    } else {
        buf[0] = 0;
    }
}

static tempo_option_info infos[N_OPTIONS];
static char ranges[N_OPTIONS][48];

static void fill_infos(void) {
    for (int i = 0; i < N_OPTIONS; i++) {
        infos[i] = options[i].info;
        range_text(&options[i], ranges[i], sizeof ranges[i]);
        infos[i].range = ranges[i];
    }
}

const tempo_option_info *tempo_options(int *n) {
    /* "any thread": filled once (two threads filling it at once would be a data race) */
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, fill_infos);
    *n = N_OPTIONS;
    return infos;
}

void tempo_config_init(tempo_config *c) {
    memset(c, 0, sizeof *c);
    c->prompt = strdup("Once upon a time");
    tempo_model_params_init(&c->model_params);
    tempo_gen_params_init(&c->gen);
    c->isolate = true;
}

void tempo_config_free(tempo_config *c) {
    free(c->model);
    free(c->prompt);
    free(c->output_dir);
    free((char *)c->model_params.kv_offload); /* set by tp_config_set: the config's own copy */
    free((char *)c->model_params.device);     /* likewise */
    c->model = c->prompt = c->output_dir = NULL;
    c->model_params.kv_offload = NULL;
    c->model_params.device = NULL;
}

static int find_index(const char *key) {
    for (int i = 0; i < N_OPTIONS; i++)
        if (strcmp(options[i].info.key, key) == 0) return i;
    return -1;
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

int tp_config_set(tempo_config *c, const char *key, const char *value, char *err) {
    int idx = find_index(key);
    char flag[80], range[256];
    if (idx < 0) return tp_fail(err, "unknown option '%s'", key);
    if (!value) value = "";
    const option *o = &options[idx];
    flag_name(key, flag, sizeof flag);
    range_text(o, range, sizeof range);
    void *field = (char *)c + o->offset;
    switch (o->kind) {
    case F_BOOL: {
        bool b;
        if (parse_bool(value, &b)) return tp_fail(err, "%s: expected true or false, got '%s'", flag, value);
        *(bool *)field = b;
        break;
    }
    case F_INT:
    case F_U64: {
        char *end;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (end == value || *end) return tp_fail(err, "%s: expected an integer, got '%s'", flag, value);
        if (errno == ERANGE || (double)v < o->min || (double)v > o->max)
            return tp_fail(err, "%s: %s is out of range (must be %s)", flag, value, range);
        if (o->kind == F_U64) *(uint64_t *)field = (uint64_t)v;
        else *(int *)field = (int)v;
        break;
    }
    case F_DOUBLE: {
        char *end;
        errno = 0;
        double v = strtod(value, &end);
        if (end == value || *end || !isfinite(v)) return tp_fail(err, "%s: expected a number, got '%s'", flag, value);
        if (v < o->min || v > o->max || (o->max_exclusive && v >= o->max))
            return tp_fail(err, "%s: %g is out of range (must be in %s)", flag, v, range);
        *(double *)field = v;
        break;
    }
    case F_ENUM: {
        int which = -1;
        for (int i = 0; o->choices[i]; i++)
            if (!strcmp(o->choices[i], value)) which = i;
        if (which < 0) return tp_fail(err, "%s: '%s' is not one of %s", flag, value, range);
        *(int *)field = which;
        break;
    }
    case F_CHARS: {
        size_t cap = sizeof(((tempo_gen_params *)0)->chat_template);
        if (strlen(value) >= cap) return tp_fail(err, "%s: '%s' is longer than %zu characters", flag, value, cap - 1);
        memcpy(field, value, strlen(value) + 1);
        break;
    }
    case F_STR: {
        if (o->offset == MOD(device) && !tp_gpu_spec_valid(value))
            return tp_fail(err, "%s: '%s' is not one of auto, cpu, gpu, gpu:N", flag, value);
        char *d = strdup(value);
        if (!d) return tp_fail(err, "%s: out of memory", flag);
        char **p = (char **)field;
        free(*p);
        *p = d;
        break;
    }
    }
    /* --memory-policy adapt also lets the model offload fewer layers when its weights do not fit
     * the GPU (the model's parameter; the CLI and the server open the model from this config) */
    if (o->offset == GEN(memory_policy)) c->model_params.gpu_adapt = c->gen.memory_policy == TEMPO_MEMORY_ADAPT;
    c->set_mask[idx / 64] |= 1ULL << (idx % 64);
    return 0;
}

int tp_config_reset(tempo_config *c, const char *key) {
    int idx = find_index(key);
    if (idx < 0) return -1;
    const option *o = &options[idx];
    tempo_config d;
    tempo_config_init(&d);
    void *dst = (char *)c + o->offset;
    const void *src = (const char *)&d + o->offset;
    switch (o->kind) {
    case F_BOOL: *(bool *)dst = *(const bool *)src; break;
    case F_INT: case F_ENUM: *(int *)dst = *(const int *)src; break;
    case F_U64: *(uint64_t *)dst = *(const uint64_t *)src; break;
    case F_DOUBLE: *(double *)dst = *(const double *)src; break;
    case F_CHARS: memcpy(dst, src, sizeof(((tempo_gen_params *)0)->chat_template)); break;
    case F_STR: {
        char **p = (char **)dst, **q = (char **)((char *)&d + o->offset);
        free(*p);
        *p = *q; /* take the default's string */
        *q = NULL;
        break;
    }
    }
    tempo_config_free(&d);
    if (o->offset == GEN(memory_policy)) c->model_params.gpu_adapt = c->gen.memory_policy == TEMPO_MEMORY_ADAPT;
    c->set_mask[idx / 64] |= 1ULL << (idx % 64);
    return 0;
}

int tempo_config_set(tempo_config *c, const char *key, const char *value, tempo_error *err) {
    char msg[TEMPO_ERR_LEN];
    if (tp_config_set(c, key, value, msg) == 0) { tp_ok(err); return 0; }
    return tp_set_error(err, TEMPO_ERR_ARG, msg);
}

bool tempo_config_was_set(const tempo_config *c, const char *key) {
    int idx = find_index(key);
    return idx >= 0 && (c->set_mask[idx / 64] >> (idx % 64) & 1);
}

int tempo_option_type(const char *key) {
    int idx = find_index(key);
    return idx < 0 ? -1 : (int)options[idx].info.type;
}

/* Options that only mean something in --default-mode (all of them) or for --use-mcts rollouts (all but the
 * repetition penalty), the TEMPO ones that mean nothing in --default-mode, and the MCTS ones. */
static const char *const sampling_keys[] = { "temperature", "top_k", "top_p", "repetition_penalty", "seed", NULL };
static const char *const mcts_keys[] = { "mcts_simulations", "mcts_c_puct", "mcts_depth", NULL };
static const char *const tempo_keys[] = { "selection_threshold", "max_parallel_tokens", "allow_intraset_token_visibility",
                                          "dynamic_threshold", "use_retroactive_pruning", NULL };

int tempo_config_validate(const tempo_config *c, tempo_error *err) {
    char flag[80];
    if (!c->gen.default_mode)
        for (const char *const *k = sampling_keys; *k; k++)
            if (tempo_config_was_set(c, *k) && (!c->gen.use_mcts || !strcmp(*k, "repetition_penalty"))) {
                flag_name(*k, flag, sizeof flag);
                return tp_set_error(err, TEMPO_ERR_ARG,
                                    "%s applies to --default-mode only%s: TEMPO mode keeps every token above "
                                    "--selection-threshold and samples nothing (add --default-mode, or leave %s out)",
                                    flag, strcmp(*k, "repetition_penalty") ? " (and to --use-mcts rollouts)" : "", flag);
            }
    if (!c->gen.use_mcts)
        for (const char *const *k = mcts_keys; *k; k++)
            if (tempo_config_was_set(c, *k)) {
                flag_name(*k, flag, sizeof flag);
                return tp_set_error(err, TEMPO_ERR_ARG, "%s applies to --use-mcts only (add --use-mcts, or leave %s out)",
                                    flag, flag);
            }
    if (c->gen.default_mode)
        for (const char *const *k = tempo_keys; *k; k++)
            if (tempo_config_was_set(c, *k)) {
                flag_name(*k, flag, sizeof flag);
                return tp_set_error(err, TEMPO_ERR_ARG,
                                    "%s is a TEMPO option and has no effect with --default-mode (one sampled token per "
                                    "step): leave one of them out", flag);
            }
    if (tempo_config_was_set(c, "isolate") && c->isolate && c->gen.allow_intraset_token_visibility)
        return tp_set_error(err, TEMPO_ERR_ARG,
                            "--isolate and --allow-intraset-token-visibility contradict each other: give one of them");
    if (tempo_config_was_set(c, "isolate") && !c->isolate && !c->gen.allow_intraset_token_visibility)
        return tp_set_error(err, TEMPO_ERR_ARG,
                            "--isolate=false: use --allow-intraset-token-visibility to let siblings see each other");
    return tempo_gen_params_validate(&c->gen, err);
}
