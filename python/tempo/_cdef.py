"""The declarations of include/tempo.h that the binding uses, for cffi's ABI mode.

cffi reads these (not the header: its parser takes no preprocessor lines or attributes), so
they are a copy of the header's, and a copy can drift. python/tests/test_cdef.py compiles them
against the real header: every function below must match its prototype, every callback type
its typedef, and every struct's size, field offsets and field types the C compiler's layout,
so a change to tempo.h that the binding does not follow fails the tests instead of corrupting
memory.

Three blocks, because the check treats them differently: TYPES (structs and enums: their
layouts are compared), CALLBACKS and FUNCTIONS (re-declared after the header: C refuses a
conflicting redeclaration).
"""

# The library version these declarations were copied from (TEMPO_VERSION). The loader refuses a
# library of another major.minor version: its structs may be laid out differently.
HEADER_VERSION = "0.4.0"

TYPES = """
#define TEMPO_ERR_LEN 512

typedef enum {
    TEMPO_OK = 0, TEMPO_ERR_ARG = 1, TEMPO_ERR_IO = 2, TEMPO_ERR_FORMAT = 3, TEMPO_ERR_NOMEM = 4,
    TEMPO_ERR_MEMORY_LIMIT = 5, TEMPO_ERR_CACHE_LIMIT = 6, TEMPO_ERR_STATE = 7,
    TEMPO_ERR_NUMERIC = 8, TEMPO_ERR_INTERNAL = 9,
} tempo_status;

typedef struct {
    tempo_status code;
    char message[512];
} tempo_error;

typedef enum { TEMPO_LOG_ERROR = 0, TEMPO_LOG_WARN = 1, TEMPO_LOG_INFO = 2, TEMPO_LOG_DEBUG = 3 } tempo_log_level;

typedef enum { TEMPO_KV_F32 = 0, TEMPO_KV_F16 = 1, TEMPO_KV_Q8_0 = 2 } tempo_kv_type;

typedef struct {
    int threads;
    double max_memory_gb;
    tempo_kv_type kv_cache_type;
    const char *kv_offload;
    void (*progress)(double fraction, void *user);
    void *progress_user;
    const char *device;
    int gpu_layers;
    bool gpu_adapt;
} tempo_model_params;

typedef enum { TEMPO_MEMORY_STOP = 0, TEMPO_MEMORY_ADAPT = 1, TEMPO_MEMORY_PRUNE = 2 } tempo_memory_policy;

typedef struct {
    int max_tokens;
    int min_steps;
    bool enable_thinking;
    char chat_template[32];
    double selection_threshold;
    int max_parallel_tokens;
    bool allow_intraset_token_visibility;
    bool dynamic_threshold;
    double final_threshold;
    double bezier_p1, bezier_p2;
    bool use_relu;
    double relu_activation_point;
    bool use_retroactive_pruning;
    double attention_threshold;
    double relative_threshold;
    bool no_relative_attention;
    bool no_multi_scale_attention;
    bool default_mode;
    double temperature;
    int top_k;
    double top_p;
    double repetition_penalty;
    uint64_t seed;
    bool use_mcts;
    int mcts_simulations;
    double mcts_c_puct;
    int mcts_depth;
    int32_t stop_token_ids[8];
    int n_stop_token_ids;
    int max_cache_tokens;
    bool disable_kv_cache;
    tempo_memory_policy memory_policy;
    bool debug_mode;
} tempo_gen_params;

typedef struct {
    char *model;
    char *prompt;
    tempo_model_params model_params;
    tempo_gen_params gen;
    bool output_json;
    char *output_dir;
    bool no_color;
    bool show_token_ids;
    bool isolate;
    uint64_t set_mask[2];
} tempo_config;

typedef enum { TEMPO_OPT_BOOL, TEMPO_OPT_INT, TEMPO_OPT_FLOAT, TEMPO_OPT_STRING } tempo_opt_type;
typedef struct {
    const char *key;
    tempo_opt_type type;
    const char *help;
    const char *def;
    const char *range;
} tempo_option_info;

typedef struct tempo_model tempo_model;

typedef struct {
    int n_vocab, dim, n_layers, n_heads, n_kv_heads, head_dim, ffn_dim, n_ctx;
    const char *arch;
    const char *tokenizer;
    size_t weight_bytes;
    const char *path;
    int threads;
    double max_memory_gb;
    tempo_kv_type kv_cache_type;
    const char *kv_offload;
    const char *device;
    int gpu_layers;
    size_t gpu_weight_bytes;
} tempo_model_info;

typedef struct {
    const char *role;
    const char *content;
} tempo_chat_message;

typedef struct {
    int32_t token_id;
    char *text;
    float probability;
    bool pruned;
    int pruned_at_step;
    float prune_score;
    int scored_at_step;
} tempo_token;

typedef struct {
    int32_t token_id;
    char *text;
    float probability;
    float prior;
    int visits;
    float value;
    bool committed;
} tempo_mcts_candidate;

typedef struct {
    int step;
    int position;
    int n_tokens;
    tempo_token *tokens;
    bool was_pruned;
    bool chosen;
    int n_mcts;
    tempo_mcts_candidate *mcts;
} tempo_step;

typedef enum {
    TEMPO_STOP_NONE = -1,
    TEMPO_STOP_MAX_TOKENS = 0, TEMPO_STOP_EOS, TEMPO_STOP_MEMORY_LIMIT,
    TEMPO_STOP_CACHE_LIMIT, TEMPO_STOP_ERROR, TEMPO_STOP_INTERRUPTED,
} tempo_stop_reason;

typedef struct tempo_result tempo_result;

typedef struct {
    int step, member, at_step;
    int32_t token_id;
    float score;
    bool pruned;
} tempo_prune_event;

typedef struct tempo_session tempo_session;

typedef struct {
    const tempo_step *step;
    int n_prune;
    const tempo_prune_event *prune;
} tempo_step_info;

typedef struct {
    int n_prompt;
    int n_steps;
    int fed_steps, fed_tokens;
    int forward_calls;
    double prefill_s, steps_s;
    int kv_slots, kv_alive;
    int kv_capacity;
    int width;
    size_t reserved_bytes;
} tempo_session_stats;

typedef enum { TEMPO_EVENT_STEP = 0, TEMPO_EVENT_PRUNE = 1 } tempo_event;

typedef struct {
    double system_total_gb, system_used_gb, system_available_gb, system_percent;
    double process_rss_gb, process_peak_gb;
    double kv_gb, weights_gb, work_gb;
    int sessions;
    bool has_gpu;
    double gpu_allocated_gb, gpu_reserved_gb, gpu_free_gb;
} tempo_memory_stats;

typedef struct tempo_memory_monitor tempo_memory_monitor;
"""

CALLBACKS = """
typedef void (*tempo_log_fn)(tempo_log_level level, const char *text, void *user);
typedef int (*tempo_step_cb)(tempo_event ev, const tempo_step *step, void *user);
"""

FUNCTIONS = """
const char *tempo_status_name(tempo_status s);
const char *tempo_version(void);
void tempo_log_set(tempo_log_fn fn, void *user);

void tempo_config_init(tempo_config *c);
void tempo_config_free(tempo_config *c);
int tempo_config_set(tempo_config *c, const char *key, const char *value, tempo_error *err);
int tempo_config_validate(const tempo_config *c, tempo_error *err);
const tempo_option_info *tempo_options(int *n);

tempo_model *tempo_model_open(const char *path, const tempo_model_params *p, tempo_error *err);
void tempo_model_close(tempo_model *m);
void tempo_model_get_info(const tempo_model *m, tempo_model_info *info);
int tempo_tokenize(const tempo_model *m, const char *text, bool add_bos, int32_t *out, int cap);
char *tempo_token_text(const tempo_model *m, int32_t id);
char *tempo_detokenize(const tempo_model *m, const int32_t *ids, int n);
char *tempo_chat_apply(const tempo_model *m, const char *template_name, const tempo_chat_message *msgs,
                       size_t n, bool add_generation_prompt, tempo_error *err);

const char *tempo_stop_reason_name(tempo_stop_reason r);
void tempo_result_free(tempo_result *r);

tempo_session *tempo_session_new(tempo_model *m, const tempo_gen_params *p, tempo_error *err);
void tempo_session_free(tempo_session *s);
int tempo_session_prefill(tempo_session *s, const char *prompt, tempo_error *err);
int tempo_session_prefill_tokens(tempo_session *s, const int32_t *ids, int n, tempo_error *err);
int tempo_session_step(tempo_session *s, tempo_step_info *out, tempo_error *err);
int tempo_session_choose(tempo_session *s, int member, tempo_error *err);
int tempo_session_set_members(tempo_session *s, const int32_t *ids, int n, tempo_error *err);
void tempo_session_cancel(tempo_session *s);
int tempo_session_top_logprobs(const tempo_session *s, int k, int32_t *ids, float *logprobs);
int tempo_session_n_steps(const tempo_session *s);
const tempo_step *tempo_session_get_step(const tempo_session *s, int k);
tempo_stop_reason tempo_session_stop_reason(const tempo_session *s, const char **message);
tempo_result *tempo_session_result(const tempo_session *s, tempo_error *err);
void tempo_session_get_stats(const tempo_session *s, tempo_session_stats *out);

tempo_result *tempo_generate(tempo_model *m, const char *prompt, const tempo_gen_params *p,
                             tempo_step_cb cb, void *user, volatile int *cancel, tempo_error *err);

char *tempo_step_text(const tempo_step *step, bool color, bool show_token_ids);
char *tempo_token_display(const char *text);
char *tempo_result_to_json(const tempo_result *r, const tempo_config *cfg);

tempo_memory_monitor *tempo_model_memory(tempo_model *m);
void tempo_memory_get_stats(tempo_memory_monitor *mm, tempo_memory_stats *out);
"""

# The C library's free(), for the strings the library returns malloc'ed. Not from tempo.h.
LIBC = """
void free(void *p);
"""
