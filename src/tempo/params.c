/* params.c: defaults and checks of the model and generation parameters (include/tempo.h).
 *
 * The ranges here are the option table's (src/api/config.c), restated for callers that fill the
 * structs themselves (a program, the Python binding, the server): a session refuses values the
 * command line would refuse, with the same flag names in the message. A test checks that both
 * agree on every option.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "tempo.h"

void tempo_model_params_init(tempo_model_params *p) {
    memset(p, 0, sizeof *p);
    p->threads = 0;
    p->max_memory_gb = 36.0;
    p->kv_cache_type = TEMPO_KV_F32;
    p->gpu_layers = -1; /* device NULL: auto */
}

void tempo_gen_params_init(tempo_gen_params *p) {
    memset(p, 0, sizeof *p);
    p->max_tokens = 100;
    p->selection_threshold = 0.1;
    p->final_threshold = 1.0;
    p->bezier_p1 = 0.2;
    p->bezier_p2 = 0.8;
    p->relu_activation_point = 0.5;
    p->attention_threshold = 0.01;
    p->relative_threshold = 0.5;
    p->temperature = 0.0;
    p->top_p = 1.0;
    p->repetition_penalty = 1.0;
    p->seed = 42;
    p->use_mcts = false;
    p->mcts_simulations = 10;
    p->mcts_c_puct = 1.0;
    p->mcts_depth = 5;
    p->memory_policy = TEMPO_MEMORY_STOP;
}

static int bad(tempo_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(tempo_error *err, const char *fmt, ...) {
    if (err) {
        err->code = TEMPO_ERR_ARG;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* x in [lo, hi] (a NaN is never in range). */
static bool in(double x, double lo, double hi) { return x >= lo && x <= hi; }

int tempo_gen_params_validate(const tempo_gen_params *p, tempo_error *err) {
    if (err) { err->code = TEMPO_OK; err->message[0] = 0; }
    if (p->max_tokens < 1) return bad(err, "--max-tokens: %d is out of range (must be >= 1)", p->max_tokens);
    if (p->min_steps < 0) return bad(err, "--min-steps: %d is out of range (must be >= 0)", p->min_steps);
    if (p->min_steps > p->max_tokens)
        return bad(err, "--min-steps %d is larger than --max-tokens %d", p->min_steps, p->max_tokens);
    if (!in(p->selection_threshold, 0, 1))
        return bad(err, "--selection-threshold: %g is out of range (must be in [0, 1])", p->selection_threshold);
    if (p->max_parallel_tokens < 0)
        return bad(err, "--max-parallel-tokens: %d is out of range (must be >= 1, or 0 for auto)", p->max_parallel_tokens);
    if (!in(p->final_threshold, 0, 1))
        return bad(err, "--final-threshold: %g is out of range (must be in [0, 1])", p->final_threshold);
    if (!in(p->bezier_p1, 0, 1)) return bad(err, "--bezier-p1: %g is out of range (must be in [0, 1])", p->bezier_p1);
    if (!in(p->bezier_p2, 0, 1)) return bad(err, "--bezier-p2: %g is out of range (must be in [0, 1])", p->bezier_p2);
    if (!(p->relu_activation_point >= 0 && p->relu_activation_point < 1))
        return bad(err, "--relu-activation-point: %g is out of range (must be in [0, 1))", p->relu_activation_point);
    if (!in(p->attention_threshold, 0, 1))
        return bad(err, "--attention-threshold: %g is out of range (must be in [0, 1])", p->attention_threshold);
    if (!in(p->relative_threshold, 0, 1))
        return bad(err, "--relative-threshold: %g is out of range (must be in [0, 1])", p->relative_threshold);
    if (!in(p->temperature, 0, 100)) return bad(err, "--temperature: %g is out of range (must be in [0, 100])", p->temperature);
    if (p->top_k < 0) return bad(err, "--top-k: %d is out of range (must be >= 0)", p->top_k);
    if (!in(p->top_p, 0, 1)) return bad(err, "--top-p: %g is out of range (must be in [0, 1])", p->top_p);
    if (!in(p->repetition_penalty, 0, 100))
        return bad(err, "--repetition-penalty: %g is out of range (must be in [0, 100])", p->repetition_penalty);
    if (p->n_stop_token_ids < 0 || p->n_stop_token_ids > (int)(sizeof p->stop_token_ids / sizeof p->stop_token_ids[0]))
        return bad(err, "stop_token_ids: %d ids (at most %d)", p->n_stop_token_ids,
                   (int)(sizeof p->stop_token_ids / sizeof p->stop_token_ids[0]));
    if (p->max_cache_tokens < 0)
        return bad(err, "--max-cache-tokens: %d is out of range (must be >= 1, or 0 for the context)", p->max_cache_tokens);
    if (p->memory_policy != TEMPO_MEMORY_STOP && p->memory_policy != TEMPO_MEMORY_ADAPT &&
        p->memory_policy != TEMPO_MEMORY_PRUNE)
        return bad(err, "--memory-policy: %d is not one of stop, adapt, prune", (int)p->memory_policy);
    if (p->mcts_simulations < 1 || p->mcts_simulations > TEMPO_MCTS_MAX_SIMULATIONS)
        return bad(err, "--mcts-simulations: %d is out of range (must be in [1, %d])", p->mcts_simulations,
                   TEMPO_MCTS_MAX_SIMULATIONS);
    if (!in(p->mcts_c_puct, 0, 100)) return bad(err, "--mcts-c-puct: %g is out of range (must be in [0, 100])", p->mcts_c_puct);
    if (p->mcts_depth < 0 || p->mcts_depth > TEMPO_MCTS_MAX_DEPTH)
        return bad(err, "--mcts-depth: %d is out of range (must be in [0, %d])", p->mcts_depth, TEMPO_MCTS_MAX_DEPTH);
    if (p->use_mcts && p->default_mode)
        return bad(err, "--use-mcts searches among TEMPO sets and cannot run with --default-mode: leave one of them out");
    if (p->use_mcts && p->disable_kv_cache)
        return bad(err, "--use-mcts runs its rollouts on the KV cache of the committed path and cannot run with "
                        "--disable-kv-cache: leave one of them out");
    if (p->use_mcts && p->use_retroactive_pruning)
        return bad(err, "--use-retroactive-pruning has no effect with --use-mcts (each step commits one token, so "
                        "no set has members to prune): leave one of them out");
    if (p->use_mcts && p->memory_policy == TEMPO_MEMORY_PRUNE)
        return bad(err, "--memory-policy prune has nothing to prune with --use-mcts (each step commits one token): "
                        "use stop or adapt");
    if (p->use_mcts && p->repetition_penalty != 1.0)
        return bad(err, "--repetition-penalty is not used by --use-mcts rollouts (they sample with --temperature, "
                        "--top-k, --top-p and --seed): leave it out");
    if (memchr(p->chat_template, 0, sizeof p->chat_template) == NULL)
        return bad(err, "--chat-template: the name is not terminated");
    return 0;
}
