/* tempo.h: the public C API of tempo. The CLI, the server and the Python binding use nothing else.
 *
 * Objects, as in llama.h:
 *   tempo_model    a loaded model: weights, tokenizer, and one memory budget (--max-memory-gb)
 *                  for the model plus every live session. Immutable after tempo_model_open;
 *                  share it between any number of threads and sessions.
 *   tempo_session  one generation: KV cache, memory reservation, work buffers, thread pool and
 *                  step state. Used by one thread at a time (tempo_session_cancel excepted).
 *   tempo_result   the record of a generation (the --output-json document as C structs).
 *
 * The simplest use:
 *
 *   tempo_model_params mp;  tempo_model_params_init(&mp);
 *   tempo_gen_params gp;    tempo_gen_params_init(&gp);
 *   tempo_error err;
 *   tempo_model *m = tempo_model_open("model.gguf", &mp, &err);
 *   tempo_result *r = tempo_generate(m, "Once upon a time", &gp, on_step, user, &err);
 *   ... r->clean_text, r->steps ...
 *   tempo_result_free(r);  tempo_model_close(m);
 *
 * Step by step (a UI that branches):
 *
 *   tempo_session *s = tempo_session_new(m, &gp, &err);
 *   tempo_session_prefill(s, "Once upon a time", &err);
 *   tempo_step_info st;
 *   while (tempo_session_step(s, &st, &err) == 1) {
 *       ... st.step is the new set; st.prune lists what feeding the previous set pruned ...
 *       if (user_picked) tempo_session_choose(s, member, &err);   // the member replaces its set
 *   }
 *   tempo_session_free(s);
 *
 * Errors: every function that can fail takes a `tempo_error *` (may be NULL) and fills it with a
 * status code and one line naming the problem (file, key, value, limit). The library never prints
 * (messages go to the log callback, silent by default) and never aborts: running out of memory is
 * TEMPO_ERR_NOMEM.
 *
 * Thread safety is stated per function: "any thread" functions may run concurrently with
 * anything; "session" functions may run concurrently on different sessions (of the same model or
 * not) but not on the same session.
 */
#ifndef TEMPO_H
#define TEMPO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TEMPO_VERSION "0.4.0"
#define TEMPO_VERSION_MAJOR 0
#define TEMPO_VERSION_MINOR 4
#define TEMPO_VERSION_PATCH 0
#define TEMPO_ERR_LEN 512

#if defined(__GNUC__)
#define TEMPO_API __attribute__((visibility("default")))
#else
#define TEMPO_API
#endif

/* ----------------------------------------------------------------- errors -- */
typedef enum {
    TEMPO_OK = 0,
    TEMPO_ERR_ARG = 1,          /* a bad argument or option value */
    TEMPO_ERR_IO = 2,           /* a file that cannot be opened, read or written */
    TEMPO_ERR_FORMAT = 3,       /* a model, tokenizer or config file that is not valid */
    TEMPO_ERR_NOMEM = 4,        /* the machine refused an allocation */
    TEMPO_ERR_MEMORY_LIMIT = 5, /* it would pass --max-memory-gb */
    TEMPO_ERR_CACHE_LIMIT = 6,  /* it would pass --max-cache-tokens or the context */
    TEMPO_ERR_STATE = 7,        /* not valid in the session's state (e.g. step before prefill) */
    TEMPO_ERR_NUMERIC = 8,      /* the model produced NaN or infinite logits */
    TEMPO_ERR_INTERNAL = 9,
} tempo_status;

typedef struct {
    tempo_status code;
    char message[TEMPO_ERR_LEN]; /* one line, no trailing newline; "" when code is TEMPO_OK */
} tempo_error;

/* "ok", "invalid argument", "io", ... Any thread. */
TEMPO_API const char *tempo_status_name(tempo_status s);
/* Library version string, e.g. "0.4.0". Any thread. */
TEMPO_API const char *tempo_version(void);

/* ---------------------------------------------------------------- logging -- */
typedef enum { TEMPO_LOG_ERROR = 0, TEMPO_LOG_WARN = 1, TEMPO_LOG_INFO = 2, TEMPO_LOG_DEBUG = 3 } tempo_log_level;
/* text: one line without a trailing newline. May be called from any thread that runs a library
 * function; the library serialises calls. */
typedef void (*tempo_log_fn)(tempo_log_level level, const char *text, void *user);
/* Install the log callback (NULL: silent, the default). Process-wide. Call it before other
 * threads use the library. What is logged: warnings (memory at 85% of the limit), the automatic
 * width, and with debug_mode the memory log lines. */
TEMPO_API void tempo_log_set(tempo_log_fn fn, void *user);

/* ----------------------------------------------------------- parameters -- */
typedef enum { TEMPO_KV_F32 = 0, TEMPO_KV_F16 = 1, TEMPO_KV_Q8_0 = 2 } tempo_kv_type;

/* Fixed for the model's lifetime. */
typedef struct {
    int threads;                /* worker threads of each session; 0 = all cores */
    double max_memory_gb;       /* limit for the model plus all its live sessions (default 36.0; 1 GB = 1024^3 B) */
    tempo_kv_type kv_cache_type;/* KV storage of the model's sessions (default f32) */
    /* --kv-offload: a writable folder where the model's sessions keep their KV caches in
     * memory-mapped files (unlinked at once, so nothing is left behind), with only the newest
     * slots resident (docs/memory.md); NULL or "" keeps caches in memory. Copied at open. */
    const char *kv_offload;
    /* Called while the weights are read in (fraction in [0, 1]); NULL for none. */
    void (*progress)(double fraction, void *user);
    void *progress_user;
    /* The compute device (README "Running on a GPU"): NULL, "" or "auto" (a hardware GPU when
     * there is one, else the CPU; never a software Vulkan device unless the environment sets
     * TEMPO_VULKAN_ALLOW_CPU=1), "cpu", "gpu" (the best hardware GPU, or an error), "gpu:N" (Vulkan
     * device N of tempo_devices, software ones included). Copied at open. */
    const char *device;
    int gpu_layers;             /* offload the first N layers, the rest on the CPU; -1 = all (default) */
    /* Weights that do not fit the GPU (its free memory, or the limit): offload fewer layers instead
     * of failing (the CLI sets it with --memory-policy adapt). */
    bool gpu_adapt;
} tempo_model_params;

/* At the memory limit: stop; adapt (narrow later steps); prune (from the warning level on, prune
 * the lowest-scoring members retroactively, tightening the rule, before narrowing or stopping). */
typedef enum { TEMPO_MEMORY_STOP = 0, TEMPO_MEMORY_ADAPT = 1, TEMPO_MEMORY_PRUNE = 2 } tempo_memory_policy;

/* One generation's settings (design/tempo-semantics.md). Plain values, no pointers that the
 * session keeps: it copies what it needs. */
typedef struct {
    int max_tokens;                  /* steps (a step may hold several tokens); default 100 */
    int min_steps;                   /* end-of-generation ignored before this step; default 0 */
    bool enable_thinking;            /* wrap the prompt in the model's chat format with the thinking system message */
    char chat_template[32];          /* chat format for enable_thinking; "" = from the model */

    /* TEMPO selection */
    double selection_threshold;      /* keep every token with probability >= this; default 0.1 */
    int max_parallel_tokens;         /* at most this many members per step; 0 = auto from memory */
    bool allow_intraset_token_visibility; /* siblings see each other (default: isolated) */
    bool dynamic_threshold;
    double final_threshold;          /* 1.0 */
    double bezier_p1, bezier_p2;     /* 0.2, 0.8 */
    bool use_relu;
    double relu_activation_point;    /* 0.5, in [0, 1) */

    /* retroactive pruning */
    bool use_retroactive_pruning;
    double attention_threshold;      /* 0.01 */
    double relative_threshold;       /* 0.5 */
    bool no_relative_attention;
    bool no_multi_scale_attention;

    /* standard mode: plain sampling, one token per step */
    bool default_mode;
    double temperature;              /* 0 = greedy */
    int top_k;                       /* 0 = off */
    double top_p;                    /* 1.0 = off */
    double repetition_penalty;       /* 1.0 = off */
    uint64_t seed;                   /* default 42; with use_mcts: the rollouts' sampling seed */

    /* MCTS over TEMPO sets (docs/tempo.md): at each step a search among the set's members,
     * rollouts scored by their mean token log-probability; the most visited member is
     * committed, the search's statistics are recorded (tempo_step.mcts). Rollouts sample with
     * temperature/top_k/top_p and seed (temperature 0 = greedy rollouts, the default). */
    bool use_mcts;
    int mcts_simulations;            /* rollouts per step; default 10 */
    double mcts_c_puct;              /* exploration weight of PUCT; default 1.0 */
    int mcts_depth;                  /* rollout steps after the expanded node; default 5 */

    /* extra end-of-generation ids (besides the tokenizer's), e.g. a stop token */
    int32_t stop_token_ids[8];
    int n_stop_token_ids;

    /* memory */
    int max_cache_tokens;            /* most KV slots; 0 = the model's context */
    bool disable_kv_cache;           /* recompute every slot at each step */
    tempo_memory_policy memory_policy;
    bool debug_mode;                 /* memory log lines through the log callback */
} tempo_gen_params;

/* The largest --mcts-simulations and --mcts-depth (a search's slots and tree are sized by them). */
#define TEMPO_MCTS_MAX_SIMULATIONS 10000
#define TEMPO_MCTS_MAX_DEPTH 1000

/* Defaults (the CLI's). Any thread. */
TEMPO_API void tempo_model_params_init(tempo_model_params *p);
TEMPO_API void tempo_gen_params_init(tempo_gen_params *p);
/* Range and cross-field checks (the messages name the option and its range). Any thread. */
TEMPO_API int tempo_gen_params_validate(const tempo_gen_params *p, tempo_error *err);

/* ---------------------------------------------------------------- config -- */
/* Every option of the CLI and of the YAML config file, by name (`--selection-threshold` is key
 * `selection_threshold`): the model path and prompt, the model's and the generation's
 * parameters, and the output options, which the library stores but does not use (the CLI and the
 * JSON formatter do). */
typedef struct {
    char *model;                /* path: GGUF file or Hugging Face folder */
    char *prompt;               /* default "Once upon a time" */
    tempo_model_params model_params;
    tempo_gen_params gen;
    /* output (CLI) */
    bool output_json;
    char *output_dir;
    bool no_color;
    bool show_token_ids;
    bool isolate;               /* accepted: isolation is the default */
    uint64_t set_mask[2];       /* bit i: option i of tempo_options() was given (flag or file) */
} tempo_config;

TEMPO_API void tempo_config_init(tempo_config *c);
TEMPO_API void tempo_config_free(tempo_config *c); /* frees the strings */
/* Set one option from text ("0.2"): bools take true/false/yes/no/on/off/1/0, integers are checked
 * in 64 bits against the option's range, enums list their values on error. TEMPO_ERR_ARG with
 * the flag and the range. */
TEMPO_API int tempo_config_set(tempo_config *c, const char *key, const char *value, tempo_error *err);
/* Load a YAML file of key: value pairs; errors name the file, line and key; nothing of a file
 * with an error is applied. */
TEMPO_API int tempo_config_load_yaml(tempo_config *c, const char *path, tempo_error *err);
/* Cross-field checks and conflicts (sampling options without default_mode, isolate together with
 * allow_intraset_token_visibility, ...). */
TEMPO_API int tempo_config_validate(const tempo_config *c, tempo_error *err);
/* Was option `key` given (by tempo_config_set or the YAML file)? */
TEMPO_API bool tempo_config_was_set(const tempo_config *c, const char *key);

typedef enum { TEMPO_OPT_BOOL, TEMPO_OPT_INT, TEMPO_OPT_FLOAT, TEMPO_OPT_STRING } tempo_opt_type;
typedef struct {
    const char *key;      /* "selection_threshold" (flag: --selection-threshold) */
    tempo_opt_type type;
    const char *help;
    const char *def;      /* default as text */
    const char *range;    /* "[0, 1]", ">= 1", "f32|f16|q8_0", or "" */
} tempo_option_info;
/* The option table: for --help, the config file and bindings. Any thread. */
TEMPO_API const tempo_option_info *tempo_options(int *n);
/* Type of option `key`, or -1. */
TEMPO_API int tempo_option_type(const char *key);

/* ----------------------------------------------------------------- model -- */
typedef struct tempo_model tempo_model;

typedef struct {
    int n_vocab, dim, n_layers, n_heads, n_kv_heads, head_dim, ffn_dim, n_ctx;
    const char *arch;
    const char *tokenizer;       /* "llama" (SentencePiece) or "gpt2" (BPE) */
    size_t weight_bytes;
    const char *path;
    int threads;                 /* the effective thread count of a session */
    double max_memory_gb;
    tempo_kv_type kv_cache_type;
    const char *kv_offload;      /* NULL when caches stay in memory */
    const char *device;          /* "cpu" or "gpu:N <device name>" */
    int gpu_layers;              /* layers whose weights are on the GPU (0 on the CPU) */
    size_t gpu_weight_bytes;     /* device bytes of those weights */
} tempo_model_info;

/* Load a GGUF file or a Hugging Face folder. Checks the weights fit max_memory_gb before loading
 * and that the loaded model leaves room under the critical level (95%). Any thread. */
TEMPO_API tempo_model *tempo_model_open(const char *path, const tempo_model_params *p, tempo_error *err);
/* Every session of the model must be freed first. */
TEMPO_API void tempo_model_close(tempo_model *m);
/* Any thread. */
TEMPO_API void tempo_model_get_info(const tempo_model *m, tempo_model_info *info);

/* Tokenizer access (any thread). tempo_tokenize returns the count (may exceed cap: call again
 * with a larger buffer), or -1. */
TEMPO_API int tempo_tokenize(const tempo_model *m, const char *text, bool add_bos, int32_t *out, int cap);
/* The text of one token, malloc'ed; NULL for an id outside the vocabulary (or out of memory). */
TEMPO_API char *tempo_token_text(const tempo_model *m, int32_t id);
/* Concatenated text of ids (special tokens rendered), malloc'ed; NULL on a bad id or out of
 * memory. */
TEMPO_API char *tempo_detokenize(const tempo_model *m, const int32_t *ids, int n);

/* ------------------------------------------------------------------- chat -- */
/* One message of a conversation: role "system", "user", "assistant" (formats that write the
 * role as it is, like chatml or llama3, take others such as "tool"); content is UTF-8. */
typedef struct {
    const char *role;
    const char *content;
} tempo_chat_message;

/* The conversation as the one prompt text the model was trained on: the model's chat template
 * (GGUF tokenizer.chat_template, tokenizer_config.json chat_template) recognised as one of the
 * supported formats, or the format `template_name` names (NULL or "": the model's). With
 * add_generation_prompt the text ends where the assistant's reply begins. malloc'ed; NULL with
 * err naming the template (and the supported names) when it is not recognised. Any thread. */
TEMPO_API char *tempo_chat_apply(const tempo_model *m, const char *template_name, const tempo_chat_message *msgs,
                                 size_t n, bool add_generation_prompt, tempo_error *err);
/* The supported format names, ", "-separated, into buf (like snprintf: returns the full length). */
TEMPO_API size_t tempo_chat_formats(char *buf, size_t cap);
/* The chat format the model would use (its name, e.g. "llama3"), or NULL with err. */
TEMPO_API const char *tempo_chat_format_of(const tempo_model *m, const char *template_name, tempo_error *err);

/* A tokenizer alone: from a GGUF (vocabulary-only files work; no weights are read) or a Hugging
 * Face folder's tokenizer.json. For `tempo tokenize` on a model of any size. */
typedef struct tempo_vocab tempo_vocab;
TEMPO_API tempo_vocab *tempo_vocab_open(const char *path, tempo_error *err);
TEMPO_API void tempo_vocab_close(tempo_vocab *v);
TEMPO_API int tempo_vocab_tokenize(const tempo_vocab *v, const char *text, bool add_bos, int32_t *out, int cap);

/* The model file (a GGUF, or a safetensors shard) whose memory mapping holds addr, or NULL.
 * Async-signal-safe: a SIGBUS handler uses it to name a file that was truncated or rewritten
 * while mapped (see src/cli/sigbus.c). */
TEMPO_API const char *tempo_mapped_file_at(const void *addr);

/* ------------------------------------------------------------ generation -- */
typedef struct {
    int32_t token_id;
    char *text;                  /* the token's bytes as the tokenizer decodes them (may be part of a UTF-8 character) */
    float probability;           /* selection probability p_{k,j} */
    bool pruned;
    int pruned_at_step;          /* the step whose pass pruned it; -1 when not pruned */
    float prune_score;           /* the latest pruning score a(m) it received; -1 when never scored */
    int scored_at_step;          /* the step whose pass gave that score; -1 when never scored */
} tempo_token;

/* One candidate of an MCTS step (use_mcts): a member of the step's TEMPO set. */
typedef struct {
    int32_t token_id;
    char *text;
    float probability;           /* p_{k,j} under the step's distribution */
    float prior;                 /* probability / sum over the candidates (PUCT's prior) */
    int visits;                  /* simulations that went through it */
    float value;                 /* mean value of those simulations (mean token log-probability); 0 when unvisited */
    bool committed;              /* the most visited candidate: the step's token */
} tempo_mcts_candidate;

typedef struct {
    int step;
    int position;                /* logical position P + k */
    int n_tokens;                /* original_count */
    tempo_token *tokens;         /* selection order */
    bool was_pruned;             /* some member was pruned later */
    bool chosen;                 /* the set was replaced by a chosen member (tempo_session_choose) */
    int n_mcts;                  /* use_mcts: the search's candidates (the TEMPO set), selection order */
    tempo_mcts_candidate *mcts;  /* NULL without use_mcts */
} tempo_step;

typedef enum {
    TEMPO_STOP_NONE = -1,        /* still running */
    TEMPO_STOP_MAX_TOKENS = 0, TEMPO_STOP_EOS, TEMPO_STOP_MEMORY_LIMIT,
    TEMPO_STOP_CACHE_LIMIT, TEMPO_STOP_ERROR, TEMPO_STOP_INTERRUPTED,
} tempo_stop_reason;
/* "max_tokens", "eos", "memory_limit", "cache_limit", "error", "interrupted". Any thread. */
TEMPO_API const char *tempo_stop_reason_name(tempo_stop_reason r);

typedef enum {
    TEMPO_ADJUST_WIDTH = 0,      /* the width cap was cut (memory_policy adapt, or prune once pruning is spent) */
    TEMPO_ADJUST_PRUNE_RULE = 1, /* memory_policy prune: the pruning rule's threshold was raised */
} tempo_adjustment_kind;

typedef struct {
    int from_step;               /* the change applies from this step on */
    int old_width, new_width;    /* equal for a rule change */
    char *reason;
    tempo_adjustment_kind kind;
    /* TEMPO_ADJUST_PRUNE_RULE: the threshold of the rule in force: relative_threshold (a multiple
     * of the set's mean score; above 1 it prunes members above the mean too) or, with
     * no_relative_attention, attention_threshold */
    bool relative;
    double old_threshold, new_threshold;
} tempo_adjustment;

/* Memory by layer (--debug-mode, JSON metrics.memory). */
typedef struct {
    size_t weights_bytes;        /* the layer's tensors (7 matrices and 2 norm vectors) */
    size_t kv_bytes;             /* the layer's share of the session's accounted KV memory */
    size_t kv_spilled_bytes;     /* --kv-offload: its K and V rows held only in the spill file */
    size_t scratch_bytes;        /* the forward's work buffers its pass uses: the same buffers serve
                                    every layer, so they are not additive (counted once in scratch_bytes below) */
} tempo_layer_memory;

typedef struct {
    int n_layers;
    tempo_layer_memory *layers;  /* [n_layers] */
    size_t shared_weights_bytes; /* token embeddings, output matrix (when not tied), final norm, rope factors */
    size_t other_weights_bytes;  /* the rest of the weights: loader copies of converted tensors */
    /* the model's memory monitor (the model and every live session of it) */
    size_t weights_bytes, kv_bytes, scratch_bytes, records_bytes, other_bytes, accounted_bytes, limit_bytes;
    int kv_resident_slots;       /* --kv-offload: the newest slots kept in memory (-1 without) */
    size_t kv_spilled_bytes;     /* --kv-offload: KV bytes held only in the spill file now */
    /* on a GPU (accounted, in accounted_bytes too): the model's weights there, and the live
     * sessions' device shares (KV rows for their capacity, scratch, staging) */
    size_t gpu_weights_bytes, gpu_sessions_bytes;
} tempo_memory_breakdown;

typedef struct tempo_result {
    char *prompt;                /* the text that was tokenized (after chat wrapping with enable_thinking) */
    char *generated_text;        /* bracket form, no escape codes */
    char *clean_text;
    int n_steps;
    tempo_step *steps;
    tempo_stop_reason stop_reason;
    char *stop_message;          /* the limit's or error's message, or NULL */
    int n_adjustments;
    tempo_adjustment *adjustments;
    /* metrics */
    double generation_time_s;
    int parallel_steps;          /* steps with more than one member */
    int total_slots;             /* prompt tokens + every member selected */
    int n_prompt_tokens;
    size_t peak_memory_bytes;    /* process peak resident (VmHWM) */
    int max_parallel_tokens;     /* the effective W (after the automatic calculation) */
    /* the settings that ran (model side: what the model was opened with) */
    tempo_gen_params params;
    int threads;
    double max_memory_gb;
    tempo_kv_type kv_cache_type;
    char *kv_offload;            /* the model's --kv-offload folder, or NULL */
    tempo_memory_breakdown memory; /* by layer, and the monitor's totals, when the record was taken */
    /* where it ran: "cpu" or "gpu:N <device name>", the layers this session ran on the GPU, and the
     * GPU's memory when the record was taken (as tempo_memory_stats reports it) */
    char *device;
    int gpu_layers;
    size_t gpu_allocated_bytes, gpu_reserved_bytes, gpu_free_bytes;
} tempo_result;

TEMPO_API void tempo_result_free(tempo_result *r);

/* One pruning decision: member `member` of step `step` received `score` in the pass run after
 * the set of step `at_step` was fed; `pruned` when that pass removed it. */
typedef struct {
    int step, member, at_step;
    int32_t token_id;
    float score;
    bool pruned;
} tempo_prune_event;

/* ---------------------------------------------------------------- session -- */
typedef struct tempo_session tempo_session;

/* A session over a shared model. Validates p. Allocates nothing large yet: the KV cache and the
 * buffers are sized and reserved against the model's memory budget by tempo_session_prefill,
 * when the prompt's length is known. Any thread (the model is shared). */
TEMPO_API tempo_session *tempo_session_new(tempo_model *m, const tempo_gen_params *p, tempo_error *err);
/* Releases the session and its memory reservation. Session. */
TEMPO_API void tempo_session_free(tempo_session *s);

/* Feed the prompt (once): with enable_thinking it is wrapped in the model's chat format first.
 * Fails (TEMPO_ERR_MEMORY_LIMIT) when the session's buffers and the prompt's KV slots do not fit
 * in what the model and the other live sessions leave of max_memory_gb; TEMPO_ERR_CACHE_LIMIT
 * when the prompt plus max_tokens passes the context. Session. */
TEMPO_API int tempo_session_prefill(tempo_session *s, const char *prompt, tempo_error *err);
/* The same with token ids (no BOS is added). */
TEMPO_API int tempo_session_prefill_tokens(tempo_session *s, const int32_t *ids, int n, tempo_error *err);
/* Prefill n sessions of the same model at once: each as tempo_session_prefill with prompts[i], but
 * all the prompts go through the model in ONE batched forward (causal within each prompt; the
 * same distributions as one by one), e.g. when a server admits several requests together. rc[i]
 * is 0 or -1 with err[i] (err may be NULL); a session that fails leaves the others running.
 * Sessions on a GPU feed their prompt on their own within the call. Runs on the thread pool of
 * one of the sessions; no other call may use any of them meanwhile. */
TEMPO_API void tempo_session_prefill_batch(tempo_session *const *sessions, const char *const *prompts, int n, int *rc,
                                           tempo_error *err);

typedef struct {
    const tempo_step *step;            /* the new set (owned by the session; updated in place when pruned later) */
    int n_prune;                       /* decisions of the pass that feeding the previous set ran */
    const tempo_prune_event *prune;    /* valid until the next step call */
} tempo_step_info;

/* One TEMPO step: feed the previous step's set (if any) in one forward, mix its members'
 * distributions, run the pruning pass, then select the next set from the new distribution and
 * return it. The new set is fed by the next call, so tempo_session_choose can still replace it.
 * Returns 1 with a new step in *out; 0 when the generation is over (tempo_session_stop_reason
 * says why: max_tokens, eos, a limit, interrupted; out->prune may still list the decisions of a
 * final feed); -1 with err on an error (the session's record keeps every completed step and its
 * stop reason becomes "error"). Session. */
TEMPO_API int tempo_session_step(tempo_session *s, tempo_step_info *out, tempo_error *err);

/* Advance n sessions of the same model by one step each in ONE batched forward pass (each token
 * keeps its own session, position and visibility): the same results as tempo_session_step on each,
 * in rc[i] (1/0/-1), out[i] and err[i] (err may be NULL). Runs on the thread pool of sessions[0];
 * sessions on a GPU run their own forward on the device within the call. No other call may use any
 * of these sessions meanwhile. */
TEMPO_API void tempo_session_step_batch(tempo_session *const *sessions, int n, int *rc, tempo_step_info *out,
                                        tempo_error *err);

/* Continue from a chosen member: member `member` (selection index) of the newest step replaces
 * its set, as if it had been selected alone (the record keeps only it; step->chosen is set). */
TEMPO_API int tempo_session_choose(tempo_session *s, int member, tempo_error *err);
/* Replace the newest step's set by these token ids, in this order (each with its probability under
 * the step's distribution): replays a path recorded by another session, e.g. on another server. */
TEMPO_API int tempo_session_set_members(tempo_session *s, const int32_t *ids, int n, tempo_error *err);

/* Ask the session to stop: the next step call returns 0 with stop reason "interrupted"; a running
 * tempo_generate stops after its current step. Any thread, and async-signal-safe. */
TEMPO_API void tempo_session_cancel(tempo_session *s);

/* The k most probable tokens of the distribution the newest step was selected from (valid until
 * the next step call), with their log-probabilities, most probable first: for logprobs in an
 * API. Returns how many were written (<= k), or -1 before the first step. Session. */
TEMPO_API int tempo_session_top_logprobs(const tempo_session *s, int k, int32_t *ids, float *logprobs);
/* Log-probability of one token under that distribution (-INFINITY when it is 0). */
TEMPO_API float tempo_session_logprob(const tempo_session *s, int32_t id);

/* Steps recorded so far, and step k's record (NULL when k is out of range); the pointer stays
 * valid until the session is freed. Session. */
TEMPO_API int tempo_session_n_steps(const tempo_session *s);
TEMPO_API const tempo_step *tempo_session_get_step(const tempo_session *s, int k);

/* The stop reason so far (TEMPO_STOP_NONE while running) and its message (NULL if none). Session. */
TEMPO_API tempo_stop_reason tempo_session_stop_reason(const tempo_session *s, const char **message);
/* A copy of the record so far, with the texts built (free with tempo_result_free); NULL on out of
 * memory. Session. */
TEMPO_API tempo_result *tempo_session_result(const tempo_session *s, tempo_error *err);

typedef struct {
    int n_prompt;                /* prompt tokens */
    int n_steps;                 /* steps recorded */
    int fed_steps, fed_tokens;   /* sets and tokens fed after the prompt */
    int forward_calls;           /* forward passes, prefill included */
    double prefill_s, steps_s;   /* time in prefill and in steps */
    int kv_slots, kv_alive;      /* KV slots in use, of them alive */
    int kv_capacity;             /* slots the cache may hold */
    int width;                   /* the width cap in force (W, after any adapt narrowing) */
    size_t reserved_bytes;       /* this session's share of the model's memory budget */
} tempo_session_stats;
/* Session. */
TEMPO_API void tempo_session_get_stats(const tempo_session *s, tempo_session_stats *out);

/* Called once per step as soon as its set exists (before it is fed), and with
 * TEMPO_EVENT_PRUNE for an earlier set when a pruning pass marks some of its members pruned.
 * Return non-zero to stop (stop reason "interrupted"). */
typedef enum { TEMPO_EVENT_STEP = 0, TEMPO_EVENT_PRUNE = 1 } tempo_event;
typedef int (*tempo_step_cb)(tempo_event ev, const tempo_step *step, void *user);

/* The whole run in one call: session, prefill, steps until done. Returns the record even when a
 * limit, an error or a cancel stopped the run (stop_reason says which; what was produced is kept;
 * for an error or a limit, err also holds its status code and message, e.g. TEMPO_ERR_NUMERIC);
 * NULL only when nothing could start. cancel (may be NULL): a flag another thread or a signal
 * handler sets to stop after the current step. Any thread (the model is shared). */
TEMPO_API tempo_result *tempo_generate(tempo_model *m, const char *prompt, const tempo_gen_params *p,
                                       tempo_step_cb cb, void *user, volatile int *cancel, tempo_error *err);

/* ----------------------------------------------------------------- output -- */
/* One step as the user reads it: its single alive member, or [a/b/c] over the alive members in
 * selection order; color: ANSI colour per member index; show_token_ids: "(id)" after each member.
 * Bytes that are not valid UTF-8 are shown as <0xFE>. malloc'ed. Any thread. */
TEMPO_API char *tempo_step_text(const tempo_step *step, bool color, bool show_token_ids);
/* A token's text as shown: valid UTF-8, invalid bytes as <0xFE>. malloc'ed. */
TEMPO_API char *tempo_token_display(const char *text);
/* The JSON document of the run (malloc'ed, pretty-printed). cfg (may be NULL) adds the CLI's
 * own options (model path, output settings) to the "config" object. Any thread. */
TEMPO_API char *tempo_result_to_json(const tempo_result *r, const tempo_config *cfg);

/* --------------------------------------------------------------- devices -- */
/* The Vulkan devices of this machine (`tempo devices`). */
typedef struct {
    int index;                   /* --device gpu:N */
    char name[256];
    const char *kind;            /* "discrete", "integrated", "virtual", "software", "other" */
    bool software;               /* a CPU implementation (lavapipe): chosen only as gpu:N or with TEMPO_VULKAN_ALLOW_CPU=1 */
    bool usable;                 /* has what the backend needs; else `missing` says what it lacks */
    char missing[128];
    double memory_gb, free_gb;   /* device-local memory, and what is free of it */
    bool free_known;             /* free_gb from the driver's budget (else: the size less tempo's own allocations) */
    char api[16], driver[96];
} tempo_device_info;
/* Fills up to cap entries and returns how many devices there are (0 without Vulkan, or in a
 * build without the backend). Loads the Vulkan driver. Any thread. */
TEMPO_API int tempo_devices(tempo_device_info *out, int cap);
/* Was this library built with the Vulkan backend? Any thread. */
TEMPO_API bool tempo_gpu_built(void);
/* What a device value resolves to here: "cpu" or "gpu:N" into buf; NULL with err (TEMPO_ERR_ARG)
 * for a value that is malformed or names a device this machine lacks. Any thread. */
TEMPO_API const char *tempo_device_resolve(const char *device, char *buf, size_t cap, tempo_error *err);

/* ---------------------------------------------------------------- memory -- */
typedef struct {
    double system_total_gb, system_used_gb, system_available_gb, system_percent;
    double process_rss_gb, process_peak_gb;
    double kv_gb, weights_gb, work_gb;   /* accounted: every live session's KV and buffers */
    int sessions;                        /* live sessions of the model */
    /* A model on a GPU: the device's memory as Vulkan reports it. allocated: tempo's device-local
     * buffers (weights, KV rows, scratch: every model and session on that device); reserved: that
     * plus the host-visible staging buffers (all tempo holds through Vulkan); free: what the device
     * has left (the driver's budget, or its size less tempo's allocations). */
    bool has_gpu;
    double gpu_allocated_gb, gpu_reserved_gb, gpu_free_gb;
} tempo_memory_stats;

typedef enum { TEMPO_MEM_OK = 0, TEMPO_MEM_WARNING = 1, TEMPO_MEM_CRITICAL = 2 } tempo_mem_level;

/* The spec's memory monitor. A standalone monitor (tempo_memory_monitor_new) knows only the
 * process; the model's monitor (tempo_model_memory) also accounts the weights and every live
 * session. All monitor functions may be called from any thread. */
typedef struct tempo_memory_monitor tempo_memory_monitor;
TEMPO_API tempo_memory_monitor *tempo_memory_monitor_new(double max_memory_gb);
TEMPO_API void tempo_memory_monitor_free(tempo_memory_monitor *mm);
/* The model's monitor (owned by the model). */
TEMPO_API tempo_memory_monitor *tempo_model_memory(tempo_model *m);
TEMPO_API void tempo_memory_get_stats(tempo_memory_monitor *mm, tempo_memory_stats *out);
TEMPO_API double tempo_memory_current_usage_gb(tempo_memory_monitor *mm);
TEMPO_API double tempo_memory_available_gb(tempo_memory_monitor *mm);
/* Warning at 85%, critical at 95% of max_memory_gb; the message goes to err (TEMPO_ERR_LEN bytes, may be NULL). */
TEMPO_API tempo_mem_level tempo_memory_check_limit(tempo_memory_monitor *mm, const char *operation, char *err);
TEMPO_API double tempo_memory_estimate_kv_cache_gb(int batch_size, int sequence_length, int num_layers,
                                                   int num_kv_heads, int head_dim, int bytes_per_elem);
TEMPO_API double tempo_memory_estimate_parallel_batch_gb(int num_parallel_tokens, int sequence_length,
                                                         int vocab_size, int hidden_size, int bytes_per_elem);
TEMPO_API int tempo_memory_calculate_max_parallel_tokens(tempo_memory_monitor *mm, const tempo_model *m,
                                                         int sequence_length);
TEMPO_API void tempo_memory_free_memory(tempo_memory_monitor *mm);
/* "Memory: System 15.23/64.00GB (23.8%) Process 1.20GB (peak 1.31GB) KV 0.05GB" */
TEMPO_API void tempo_memory_log_line(tempo_memory_monitor *mm, const char *label, char *buf, size_t cap);
/* JSON object text of the memory config snapshot (malloc'ed); NULL when out of memory. */
TEMPO_API char *tempo_memory_get_config(tempo_memory_monitor *mm);

#ifdef __cplusplus
}
#endif
#endif
