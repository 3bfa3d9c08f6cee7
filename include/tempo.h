/* tempo.h: the public C API of tempo. The CLI (src/cli) uses nothing else.
 *
 *   tempo_config cfg;  tempo_config_init(&cfg);
 *   tempo_config_set(&cfg, "selection_threshold", "0.2", err);   // or load a YAML file
 *   tempo_model *m = tempo_model_open(cfg.model, &cfg, err);
 *   tempo_result *r = tempo_generate(m, &cfg, on_step, user, err);
 *   ... r->clean_text, r->steps ...
 *   tempo_result_free(r); tempo_model_close(m);
 *
 * Errors: functions that can fail take `char *err` of TEMPO_ERR_LEN bytes and
 * write one line naming the problem into it.
 */
#ifndef TEMPO_H
#define TEMPO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TEMPO_VERSION "0.1.0"
#define TEMPO_ERR_LEN 512

/* ---------------------------------------------------------------- config -- */
/* Every generation and memory option. Names are the CLI flags with '-' -> '_'
 * and the keys of the YAML config file. */
typedef struct tempo_config {
    /* model and engine */
    char *model;                 /* path: GGUF file or Hugging Face folder */
    int threads;                 /* 0 = all cores */
    char *kv_cache_type;         /* "f32" (default), "f16", "q8_0" */

    /* prompt and length */
    char *prompt;                /* default "Once upon a time" */
    int max_tokens;              /* steps; default 100 */
    int min_steps;               /* EOG ignored before this step; default 0 */
    bool enable_thinking;        /* wrap the prompt in the chat format with the thinking system message */

    /* TEMPO selection */
    double selection_threshold;  /* default 0.1, in [0,1] */
    int max_parallel_tokens;     /* 0 = auto (from memory); else >= 1 */
    bool isolate;                /* accepted; isolation is the default */
    bool allow_intraset_token_visibility;
    bool dynamic_threshold;
    double final_threshold;      /* 1.0 */
    double bezier_p1, bezier_p2; /* 0.2, 0.8 */
    bool use_relu;
    double relu_activation_point; /* 0.5, in [0,1) */

    /* retroactive pruning */
    bool use_retroactive_pruning;
    double attention_threshold;  /* 0.01 */
    double relative_threshold;   /* 0.5 */
    bool no_relative_attention;
    bool no_multi_scale_attention;

    /* standard mode */
    bool default_mode;
    double temperature;          /* 0 = greedy (default) */
    int top_k;                   /* 0 = off */
    double top_p;                /* 1.0 = off */
    double repetition_penalty;   /* 1.0 = off */
    int64_t seed;                /* default 42 */

    /* memory */
    double max_memory_gb;        /* 36.0 */
    int max_cache_tokens;        /* 0 = the model's context length */
    bool disable_kv_cache;
    bool debug_mode;
    char *memory_policy;         /* "stop" (default) or "adapt" */

    /* output */
    bool output_json;
    char *output_dir;
    bool no_color;
    bool show_token_ids;
} tempo_config;

void tempo_config_init(tempo_config *c);
void tempo_config_free(tempo_config *c); /* frees the strings */
/* Set one option by its key ("selection_threshold") from text ("0.2"). Bool options
 * take true/false/1/0/yes/no. Range errors name the flag and the range. */
int tempo_config_set(tempo_config *c, const char *key, const char *value, char *err);
/* Load a YAML file of key: value pairs. Errors name the file, line and key. */
int tempo_config_load_yaml(tempo_config *c, const char *path, char *err);
/* Cross-field checks (e.g. p1/p2 ranges); 0 or -1 with err. */
int tempo_config_validate(const tempo_config *c, char *err);

/* The option table, for --help and the config file: one entry per option. */
typedef enum { TEMPO_OPT_BOOL, TEMPO_OPT_INT, TEMPO_OPT_FLOAT, TEMPO_OPT_STRING } tempo_opt_type;
typedef struct {
    const char *key;      /* "selection_threshold" (flag: --selection-threshold) */
    tempo_opt_type type;
    const char *help;
    const char *def;      /* default as text, for --help */
} tempo_option_info;
const tempo_option_info *tempo_options(int *n);
/* The type of option `key` (a tempo_opt_type), or -1 if there is no such option. */
int tempo_option_type(const char *key);

/* ----------------------------------------------------------------- model -- */
typedef struct tempo_model tempo_model;

typedef struct {
    int n_vocab, dim, n_layers, n_heads, n_kv_heads, head_dim, ffn_dim, n_ctx;
    const char *arch;
    const char *tokenizer;       /* "llama" (SentencePiece) or "gpt2" (BPE) */
    size_t weight_bytes;
} tempo_model_info;

/* Loads the model. Checks the memory limit first (cfg->max_memory_gb). Shows a
 * progress bar on stderr when it is a terminal and the model is over 100 MB. */
tempo_model *tempo_model_open(const char *path, const tempo_config *cfg, char *err);
void tempo_model_close(tempo_model *m);
void tempo_model_get_info(const tempo_model *m, tempo_model_info *info);

/* The model file (a GGUF, or a safetensors shard) whose memory mapping holds
 * addr, or NULL. Async-signal-safe: a SIGBUS handler uses it to name a file
 * that was truncated or rewritten while mapped (see src/cli/sigbus.c). */
const char *tempo_mapped_file_at(const void *addr);

/* Tokenizer access. tempo_tokenize returns the count (may exceed cap), -1 on error. */
int tempo_tokenize(const tempo_model *m, const char *text, bool add_bos, int32_t *out, int cap);
/* Text of one token (malloc'ed). */
char *tempo_token_text(const tempo_model *m, int32_t id);

/* ------------------------------------------------------------ generation -- */
typedef struct {
    int32_t token_id;
    char *text;                  /* the token's text */
    float probability;           /* selection probability p_{k,j} */
    bool pruned;
    int pruned_at_step;          /* -1 when not pruned */
} tempo_token;

typedef struct {
    int step;
    int position;                /* logical position P + k */
    int n_tokens;                /* original_count */
    tempo_token *tokens;         /* selection order */
    bool was_pruned;             /* some member was pruned later */
} tempo_step;

typedef enum {
    TEMPO_STOP_MAX_TOKENS = 0, TEMPO_STOP_EOS, TEMPO_STOP_MEMORY_LIMIT,
    TEMPO_STOP_CACHE_LIMIT, TEMPO_STOP_ERROR,
} tempo_stop_reason;
const char *tempo_stop_reason_name(tempo_stop_reason r); /* "max_tokens", "eos", ... */

typedef struct {
    int from_step;               /* memory_policy adapt: width reduced from this step on */
    int old_width, new_width;
    char *reason;
} tempo_adjustment;

typedef struct tempo_result {
    char *prompt;                /* the prompt text as given (after chat wrapping when thinking) */
    char *generated_text;        /* bracket form, no escape codes */
    char *clean_text;
    int n_steps;
    tempo_step *steps;
    tempo_stop_reason stop_reason;
    char *stop_message;          /* the limit's message, or NULL */
    int n_adjustments;
    tempo_adjustment *adjustments;
    /* metrics */
    double generation_time_s;
    int parallel_steps;          /* steps with more than one member */
    int total_slots;             /* tokens fed or selected over the run */
    size_t peak_memory_bytes;    /* process peak resident (VmHWM) */
    int max_parallel_tokens;     /* the effective W (after auto calculation) */
} tempo_result;

/* Called once per step as soon as its set exists (before it is fed), and again
 * with event=TEMPO_EVENT_PRUNE when a pruning pass marks earlier members pruned. */
typedef enum { TEMPO_EVENT_STEP = 0, TEMPO_EVENT_PRUNE = 1 } tempo_event;
typedef int (*tempo_step_cb)(tempo_event ev, const tempo_step *step, void *user); /* non-zero aborts */

/* Runs TEMPO (or standard mode with cfg->default_mode). Returns a result even
 * when a limit stopped the run (stop_reason says which; what was produced is
 * kept). NULL only when nothing could start (err says why). */
tempo_result *tempo_generate(tempo_model *m, const tempo_config *cfg, tempo_step_cb cb, void *user, char *err);
void tempo_result_free(tempo_result *r);

/* One step as the user reads it: its single alive member, or [a/b/c] over the
 * alive members in selection order; color: ANSI colour per member index;
 * show_token_ids: "(id)" after each member. malloc'ed. */
char *tempo_step_text(const tempo_step *step, bool color, bool show_token_ids);

/* The JSON document of section 7 (malloc'ed, pretty-printed). */
char *tempo_result_to_json(const tempo_result *r, const tempo_config *cfg);

/* ---------------------------------------------------------------- memory -- */
typedef struct {
    double system_total_gb, system_used_gb, system_available_gb, system_percent;
    double process_rss_gb, process_peak_gb;
    double kv_gb, weights_gb;
    bool has_gpu;
    double gpu_allocated_gb, gpu_reserved_gb, gpu_free_gb;
} tempo_memory_stats;

typedef enum { TEMPO_MEM_OK = 0, TEMPO_MEM_WARNING = 1, TEMPO_MEM_CRITICAL = 2 } tempo_mem_level;

typedef struct tempo_memory_monitor tempo_memory_monitor;
tempo_memory_monitor *tempo_memory_monitor_new(double max_memory_gb);
void tempo_memory_monitor_free(tempo_memory_monitor *mm);
void tempo_memory_get_stats(tempo_memory_monitor *mm, tempo_memory_stats *out);
double tempo_memory_current_usage_gb(tempo_memory_monitor *mm);
double tempo_memory_available_gb(tempo_memory_monitor *mm);
/* Warning at 85%, critical at 95% of max_memory_gb; the message goes to err. */
tempo_mem_level tempo_memory_check_limit(tempo_memory_monitor *mm, const char *operation, char *err);
double tempo_memory_estimate_kv_cache_gb(int batch_size, int sequence_length, int num_layers,
                                         int num_kv_heads, int head_dim, int bytes_per_elem);
double tempo_memory_estimate_parallel_batch_gb(int num_parallel_tokens, int sequence_length,
                                               int vocab_size, int hidden_size, int bytes_per_elem);
int tempo_memory_calculate_max_parallel_tokens(tempo_memory_monitor *mm, const tempo_model *m,
                                               int sequence_length);
void tempo_memory_free_memory(tempo_memory_monitor *mm);
/* "Memory: System 15.23/64.00GB (23.8%) Process 1.20GB (peak 1.31GB) KV 0.05GB" */
void tempo_memory_log_line(tempo_memory_monitor *mm, const char *label, char *buf, size_t cap);
/* JSON object text of the memory config snapshot (malloc'ed). */
char *tempo_memory_get_config(tempo_memory_monitor *mm);

#ifdef __cplusplus
}
#endif
#endif
