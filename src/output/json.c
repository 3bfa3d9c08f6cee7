/* json.c: the result as one JSON document (cJSON). */
#include "output/json.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/jsonbuild.h"
#include "output/text.h"

static cJSON *str(const char *s) {
    if (!s) return cJSON_CreateNull();
    char *shown = tempo_token_display(s); /* valid UTF-8: other bytes as <0xNN> */
    if (!shown) return NULL;
    cJSON *j = cJSON_CreateString(shown);
    free(shown);
    return j;
}

static void add_str(cJSON *o, const char *key, const char *s, bool *bad) { tp_jb_attach(o, key, str(s), bad); }

static const char *kv_name(tempo_kv_type t) { return t == TEMPO_KV_F16 ? "f16" : t == TEMPO_KV_Q8_0 ? "q8_0" : "f32"; }

/* Every option with the value the run used: the generation's and the model's from the result
 * itself, the CLI's own (model path, output settings) from cfg when given. */
static cJSON *config_json(const tempo_config *c, const tempo_result *r, bool *bad) {
    const tempo_gen_params *g = &r->params;
    cJSON *o = tp_jb_must(cJSON_CreateObject(), bad);
    add_str(o, "model", c ? c->model : NULL, bad);
    add_str(o, "prompt", c ? c->prompt : r->prompt, bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "max_tokens", g->max_tokens), bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "min_steps", g->min_steps), bad);
    tp_jb_must(cJSON_AddBoolToObject(o, "enable_thinking", g->enable_thinking), bad);
    add_str(o, "chat_template", g->chat_template[0] ? g->chat_template : NULL, bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "selection_threshold", g->selection_threshold), bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "max_parallel_tokens", r->max_parallel_tokens), bad);
    tp_jb_must(cJSON_AddBoolToObject(o, "isolate", !g->allow_intraset_token_visibility), bad);
    tp_jb_must(cJSON_AddBoolToObject(o, "allow_intraset_token_visibility", g->allow_intraset_token_visibility), bad);
    tp_jb_must(cJSON_AddBoolToObject(o, "dynamic_threshold", g->dynamic_threshold), bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "final_threshold", g->final_threshold), bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "bezier_p1", g->bezier_p1), bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "bezier_p2", g->bezier_p2), bad);
    tp_jb_must(cJSON_AddBoolToObject(o, "use_relu", g->use_relu), bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "relu_activation_point", g->relu_activation_point), bad);
    tp_jb_must(cJSON_AddBoolToObject(o, "use_retroactive_pruning", g->use_retroactive_pruning), bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "attention_threshold", g->attention_threshold), bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "relative_threshold", g->relative_threshold), bad);
    tp_jb_must(cJSON_AddBoolToObject(o, "no_relative_attention", g->no_relative_attention), bad);
    tp_jb_must(cJSON_AddBoolToObject(o, "no_multi_scale_attention", g->no_multi_scale_attention), bad);
    tp_jb_must(cJSON_AddBoolToObject(o, "default_mode", g->default_mode), bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "temperature", g->temperature), bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "top_k", g->top_k), bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "top_p", g->top_p), bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "repetition_penalty", g->repetition_penalty), bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "seed", (double)g->seed), bad);
    tp_jb_must(cJSON_AddBoolToObject(o, "use_mcts", g->use_mcts), bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "mcts_simulations", g->mcts_simulations), bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "mcts_c_puct", g->mcts_c_puct), bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "mcts_depth", g->mcts_depth), bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "threads", r->threads), bad);
    tp_jb_must(cJSON_AddStringToObject(o, "kv_cache_type", kv_name(r->kv_cache_type)), bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "max_memory_gb", r->max_memory_gb), bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "max_cache_tokens", g->max_cache_tokens), bad);
    tp_jb_must(cJSON_AddBoolToObject(o, "disable_kv_cache", g->disable_kv_cache), bad);
    tp_jb_must(cJSON_AddBoolToObject(o, "debug_mode", g->debug_mode), bad);
    const char *policy = g->memory_policy == TEMPO_MEMORY_ADAPT   ? "adapt"
                         : g->memory_policy == TEMPO_MEMORY_PRUNE ? "prune"
                                                                  : "stop";
    tp_jb_must(cJSON_AddStringToObject(o, "memory_policy", policy), bad);
    add_str(o, "kv_offload", r->kv_offload, bad);
    /* the device the run used ("cpu", "gpu:N") and the layers it ran there */
    const char *dev = r->device ? r->device : "cpu";
    const char *sp = strchr(dev, ' ');
    char shortdev[32];
    snprintf(shortdev, sizeof shortdev, "%.*s", sp ? (int)(sp - dev) : (int)strlen(dev), dev);
    tp_jb_must(cJSON_AddStringToObject(o, "device", shortdev), bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "gpu_layers", r->gpu_layers), bad);
    if (c) {
        tp_jb_must(cJSON_AddBoolToObject(o, "output_json", c->output_json), bad);
        add_str(o, "output_dir", c->output_dir, bad);
        tp_jb_must(cJSON_AddBoolToObject(o, "no_color", c->no_color), bad);
        tp_jb_must(cJSON_AddBoolToObject(o, "show_token_ids", c->show_token_ids), bad);
    }
    return o;
}

static cJSON *step_json(const tempo_step *st, bool *bad) {
    cJSON *o = tp_jb_must(cJSON_CreateObject(), bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "step", st->step), bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "position", st->position), bad);
    cJSON *toks = tp_jb_must(cJSON_AddArrayToObject(o, "tokens"), bad);
    for (int j = 0; j < st->n_tokens; j++) {
        const tempo_token *t = &st->tokens[j];
        cJSON *tj = tp_jb_must(cJSON_CreateObject(), bad);
        tp_jb_must(cJSON_AddNumberToObject(tj, "token_id", t->token_id), bad);
        add_str(tj, "text", t->text ? t->text : "", bad);
        if (t->text && !tp_text_is_utf8(t->text)) {
            /* part of a character: the text shows <0xNN>, the bytes are here */
            cJSON *bytes = tp_jb_must(cJSON_AddArrayToObject(tj, "bytes"), bad);
            for (const unsigned char *p = (const unsigned char *)t->text; *p; p++)
                tp_jb_attach(bytes, NULL, cJSON_CreateNumber(*p), bad);
        }
        tp_jb_must(cJSON_AddNumberToObject(tj, "probability", t->probability), bad);
        tp_jb_must(cJSON_AddBoolToObject(tj, "pruned", t->pruned), bad);
        if (t->pruned) tp_jb_must(cJSON_AddNumberToObject(tj, "pruned_at_step", t->pruned_at_step), bad);
        else tp_jb_must(cJSON_AddNullToObject(tj, "pruned_at_step"), bad);
        if (t->scored_at_step >= 0) {
            tp_jb_must(cJSON_AddNumberToObject(tj, "prune_score", t->prune_score), bad);
            tp_jb_must(cJSON_AddNumberToObject(tj, "scored_at_step", t->scored_at_step), bad);
        }
        tp_jb_attach(toks, NULL, tj, bad);
    }
    tp_jb_must(cJSON_AddNumberToObject(o, "original_count", st->n_tokens), bad);
    tp_jb_must(cJSON_AddBoolToObject(o, "was_pruned", st->was_pruned), bad);
    if (st->chosen) tp_jb_must(cJSON_AddBoolToObject(o, "chosen", true), bad);
    if (st->n_mcts > 0) {
        /* --use-mcts: every candidate of the step's search; the committed one is the step's token */
        cJSON *cands = tp_jb_must(cJSON_AddArrayToObject(o, "mcts"), bad);
        for (int j = 0; j < st->n_mcts; j++) {
            const tempo_mcts_candidate *c = &st->mcts[j];
            cJSON *cj = tp_jb_must(cJSON_CreateObject(), bad);
            tp_jb_must(cJSON_AddNumberToObject(cj, "token_id", c->token_id), bad);
            add_str(cj, "text", c->text ? c->text : "", bad);
            tp_jb_must(cJSON_AddNumberToObject(cj, "probability", c->probability), bad);
            tp_jb_must(cJSON_AddNumberToObject(cj, "prior", c->prior), bad);
            tp_jb_must(cJSON_AddNumberToObject(cj, "visits", c->visits), bad);
            if (c->visits > 0) tp_jb_must(cJSON_AddNumberToObject(cj, "value", c->value), bad);
            else tp_jb_must(cJSON_AddNullToObject(cj, "value"), bad);
            tp_jb_must(cJSON_AddBoolToObject(cj, "committed", c->committed), bad);
            tp_jb_attach(cands, NULL, cj, bad);
        }
    }
    return o;
}

/* metrics.memory: per layer, then the monitor's totals. */
static cJSON *memory_json(const tempo_memory_breakdown *mb, bool *bad) {
    cJSON *o = tp_jb_must(cJSON_CreateObject(), bad);
    cJSON *layers = tp_jb_must(cJSON_AddArrayToObject(o, "layers"), bad);
    for (int l = 0; l < mb->n_layers; l++) {
        const tempo_layer_memory *lm = &mb->layers[l];
        cJSON *lj = tp_jb_must(cJSON_CreateObject(), bad);
        tp_jb_must(cJSON_AddNumberToObject(lj, "layer", l), bad);
        tp_jb_must(cJSON_AddNumberToObject(lj, "weights_bytes", (double)lm->weights_bytes), bad);
        tp_jb_must(cJSON_AddNumberToObject(lj, "kv_bytes", (double)lm->kv_bytes), bad);
        tp_jb_must(cJSON_AddNumberToObject(lj, "kv_spilled_bytes", (double)lm->kv_spilled_bytes), bad);
        tp_jb_must(cJSON_AddNumberToObject(lj, "scratch_bytes", (double)lm->scratch_bytes), bad);
        tp_jb_attach(layers, NULL, lj, bad);
    }
    tp_jb_must(cJSON_AddNumberToObject(o, "shared_weights_bytes", (double)mb->shared_weights_bytes), bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "other_weights_bytes", (double)mb->other_weights_bytes), bad);
    cJSON *t = tp_jb_must(cJSON_AddObjectToObject(o, "totals"), bad);
    tp_jb_must(cJSON_AddNumberToObject(t, "weights_bytes", (double)mb->weights_bytes), bad);
    tp_jb_must(cJSON_AddNumberToObject(t, "kv_bytes", (double)mb->kv_bytes), bad);
    tp_jb_must(cJSON_AddNumberToObject(t, "scratch_bytes", (double)mb->scratch_bytes), bad);
    tp_jb_must(cJSON_AddNumberToObject(t, "records_bytes", (double)mb->records_bytes), bad);
    tp_jb_must(cJSON_AddNumberToObject(t, "other_bytes", (double)mb->other_bytes), bad);
    tp_jb_must(cJSON_AddNumberToObject(t, "accounted_bytes", (double)mb->accounted_bytes), bad);
    tp_jb_must(cJSON_AddNumberToObject(t, "limit_bytes", (double)mb->limit_bytes), bad);
    tp_jb_must(cJSON_AddNumberToObject(t, "gpu_weights_bytes", (double)mb->gpu_weights_bytes), bad);
    tp_jb_must(cJSON_AddNumberToObject(t, "gpu_sessions_bytes", (double)mb->gpu_sessions_bytes), bad);
    if (mb->kv_resident_slots >= 0) tp_jb_must(cJSON_AddNumberToObject(o, "kv_resident_slots", mb->kv_resident_slots), bad);
    else tp_jb_must(cJSON_AddNullToObject(o, "kv_resident_slots"), bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "kv_spilled_bytes", (double)mb->kv_spilled_bytes), bad);
    return o;
}

/* cJSON indents with tabs and writes "key":<tab>value. Literal tabs only occur in
 * that layout (a tab inside a string is escaped), so rewrite them as the usual
 * two-space indent and "key": value. */
static char *reindent(const char *text) {
    tp_str s = { 0 };
    bool line_start = true;
    for (const char *p = text; *p; p++) {
        if (*p == '\t') {
            tp_str_cat(&s, line_start ? "  " : " ");
            continue;
        }
        line_start = *p == '\n';
        tp_str_append(&s, p, 1);
    }
    return tp_str_take(&s);
}

char *tp_json_result(const tempo_result *r, const tempo_config *cfg) {
    bool oom = false, *bad = &oom;
    cJSON *doc = tp_jb_must(cJSON_CreateObject(), bad);
    add_str(doc, "prompt", r->prompt, bad);
    add_str(doc, "generated_text", r->generated_text, bad);
    add_str(doc, "clean_text", r->clean_text, bad);
    cJSON *steps = tp_jb_must(cJSON_AddArrayToObject(doc, "steps"), bad);
    for (int k = 0; k < r->n_steps; k++) tp_jb_attach(steps, NULL, step_json(&r->steps[k], bad), bad);
    tp_jb_attach(doc, "config", config_json(cfg, r, bad), bad);

    cJSON *m = tp_jb_must(cJSON_AddObjectToObject(doc, "metrics"), bad);
    tp_jb_must(cJSON_AddNumberToObject(m, "generation_time_s", r->generation_time_s), bad);
    tp_jb_must(cJSON_AddNumberToObject(m, "steps", r->n_steps), bad);
    tp_jb_must(cJSON_AddNumberToObject(m, "parallel_steps", r->parallel_steps), bad);
    tp_jb_must(cJSON_AddNumberToObject(m, "total_slots", r->total_slots), bad);
    tp_jb_must(cJSON_AddNumberToObject(m, "prompt_tokens", r->n_prompt_tokens), bad);
    tp_jb_must(cJSON_AddNumberToObject(m, "peak_memory_bytes", (double)r->peak_memory_bytes), bad);
    tp_jb_must(cJSON_AddNumberToObject(m, "steps_per_second",
                            r->generation_time_s > 0 ? r->n_steps / r->generation_time_s : 0.0), bad);
    /* where it ran, and the GPU's memory when the record was taken (README "Running on a GPU") */
    add_str(m, "device", r->device ? r->device : "cpu", bad);
    tp_jb_must(cJSON_AddNumberToObject(m, "gpu_layers", r->gpu_layers), bad);
    if (r->device && !strncmp(r->device, "gpu", 3)) {
        tp_jb_must(cJSON_AddNumberToObject(m, "gpu_allocated_bytes", (double)r->gpu_allocated_bytes), bad);
        tp_jb_must(cJSON_AddNumberToObject(m, "gpu_reserved_bytes", (double)r->gpu_reserved_bytes), bad);
        tp_jb_must(cJSON_AddNumberToObject(m, "gpu_free_bytes", (double)r->gpu_free_bytes), bad);
    }
    if (r->memory.n_layers > 0) tp_jb_attach(m, "memory", memory_json(&r->memory, bad), bad);

    tp_jb_must(cJSON_AddStringToObject(doc, "stop_reason", tempo_stop_reason_name(r->stop_reason)), bad);
    add_str(doc, "stop_message", r->stop_message, bad);
    cJSON *adj = tp_jb_must(cJSON_AddArrayToObject(doc, "adjustments"), bad);
    for (int i = 0; i < r->n_adjustments; i++) {
        const tempo_adjustment *a = &r->adjustments[i];
        cJSON *aj = tp_jb_must(cJSON_CreateObject(), bad);
        tp_jb_must(cJSON_AddNumberToObject(aj, "from_step", a->from_step), bad);
        tp_jb_must(cJSON_AddStringToObject(aj, "kind", a->kind == TEMPO_ADJUST_PRUNE_RULE ? "prune_rule" : "width"), bad);
        tp_jb_must(cJSON_AddNumberToObject(aj, "old_width", a->old_width), bad);
        tp_jb_must(cJSON_AddNumberToObject(aj, "new_width", a->new_width), bad);
        if (a->kind == TEMPO_ADJUST_PRUNE_RULE) {
            tp_jb_must(cJSON_AddStringToObject(aj, "rule", a->relative ? "relative" : "absolute"), bad);
            tp_jb_must(cJSON_AddNumberToObject(aj, "old_threshold", a->old_threshold), bad);
            tp_jb_must(cJSON_AddNumberToObject(aj, "new_threshold", a->new_threshold), bad);
        }
        add_str(aj, "reason", a->reason, bad);
        cJSON_AddItemToArray(adj, aj);
    }
    char *text = oom ? NULL : cJSON_Print(doc); /* a member missing: no document rather than a wrong one */
    cJSON_Delete(doc);
    if (!text) return NULL;
    char *out = reindent(text);
    cJSON_free(text);
    return out;
}
