/* json.c: the result as one JSON document (cJSON). */
#include "output/json.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdlib.h>

#include "core/common.h"
#include "output/text.h"

static cJSON *str(const char *s) {
    if (!s) return cJSON_CreateNull();
    char *clean = tp_utf8_sanitize(s);
    cJSON *j = cJSON_CreateString(clean);
    free(clean);
    return j;
}

static void add_str(cJSON *o, const char *key, const char *s) { cJSON_AddItemToObject(o, key, str(s)); }

/* Every option of the table, with its effective value. */
static cJSON *config_json(const tempo_config *c, const tempo_result *r) {
    cJSON *o = cJSON_CreateObject();
    add_str(o, "model", c->model);
    add_str(o, "prompt", c->prompt);
    cJSON_AddNumberToObject(o, "max_tokens", c->max_tokens);
    cJSON_AddNumberToObject(o, "min_steps", c->min_steps);
    cJSON_AddBoolToObject(o, "enable_thinking", c->enable_thinking);
    cJSON_AddNumberToObject(o, "selection_threshold", c->selection_threshold);
    cJSON_AddNumberToObject(o, "max_parallel_tokens", r && r->max_parallel_tokens > 0 ? r->max_parallel_tokens : c->max_parallel_tokens);
    cJSON_AddBoolToObject(o, "isolate", !c->allow_intraset_token_visibility);
    cJSON_AddBoolToObject(o, "allow_intraset_token_visibility", c->allow_intraset_token_visibility);
    cJSON_AddBoolToObject(o, "dynamic_threshold", c->dynamic_threshold);
    cJSON_AddNumberToObject(o, "final_threshold", c->final_threshold);
    cJSON_AddNumberToObject(o, "bezier_p1", c->bezier_p1);
    cJSON_AddNumberToObject(o, "bezier_p2", c->bezier_p2);
    cJSON_AddBoolToObject(o, "use_relu", c->use_relu);
    cJSON_AddNumberToObject(o, "relu_activation_point", c->relu_activation_point);
    cJSON_AddBoolToObject(o, "use_retroactive_pruning", c->use_retroactive_pruning);
    cJSON_AddNumberToObject(o, "attention_threshold", c->attention_threshold);
    cJSON_AddNumberToObject(o, "relative_threshold", c->relative_threshold);
    cJSON_AddBoolToObject(o, "no_relative_attention", c->no_relative_attention);
    cJSON_AddBoolToObject(o, "no_multi_scale_attention", c->no_multi_scale_attention);
    cJSON_AddBoolToObject(o, "default_mode", c->default_mode);
    cJSON_AddNumberToObject(o, "temperature", c->temperature);
    cJSON_AddNumberToObject(o, "top_k", c->top_k);
    cJSON_AddNumberToObject(o, "top_p", c->top_p);
    cJSON_AddNumberToObject(o, "repetition_penalty", c->repetition_penalty);
    cJSON_AddNumberToObject(o, "seed", (double)c->seed);
    cJSON_AddNumberToObject(o, "threads", c->threads);
    add_str(o, "kv_cache_type", c->kv_cache_type);
    cJSON_AddNumberToObject(o, "max_memory_gb", c->max_memory_gb);
    cJSON_AddNumberToObject(o, "max_cache_tokens", c->max_cache_tokens);
    cJSON_AddBoolToObject(o, "disable_kv_cache", c->disable_kv_cache);
    cJSON_AddBoolToObject(o, "debug_mode", c->debug_mode);
    add_str(o, "memory_policy", c->memory_policy);
    cJSON_AddBoolToObject(o, "output_json", c->output_json);
    add_str(o, "output_dir", c->output_dir);
    cJSON_AddBoolToObject(o, "no_color", c->no_color);
    cJSON_AddBoolToObject(o, "show_token_ids", c->show_token_ids);
    return o;
}

static cJSON *step_json(const tempo_step *st) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "step", st->step);
    cJSON_AddNumberToObject(o, "position", st->position);
    cJSON *toks = cJSON_AddArrayToObject(o, "tokens");
    for (int j = 0; j < st->n_tokens; j++) {
        const tempo_token *t = &st->tokens[j];
        cJSON *tj = cJSON_CreateObject();
        cJSON_AddNumberToObject(tj, "token_id", t->token_id);
        add_str(tj, "text", t->text ? t->text : "");
        cJSON_AddNumberToObject(tj, "probability", t->probability);
        cJSON_AddBoolToObject(tj, "pruned", t->pruned);
        if (t->pruned) cJSON_AddNumberToObject(tj, "pruned_at_step", t->pruned_at_step);
        else cJSON_AddNullToObject(tj, "pruned_at_step");
        cJSON_AddItemToArray(toks, tj);
    }
    cJSON_AddNumberToObject(o, "original_count", st->n_tokens);
    cJSON_AddBoolToObject(o, "was_pruned", st->was_pruned);
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
    cJSON *doc = cJSON_CreateObject();
    add_str(doc, "prompt", r->prompt);
    add_str(doc, "generated_text", r->generated_text);
    add_str(doc, "clean_text", r->clean_text);
    cJSON *steps = cJSON_AddArrayToObject(doc, "steps");
    for (int k = 0; k < r->n_steps; k++) cJSON_AddItemToArray(steps, step_json(&r->steps[k]));
    cJSON_AddItemToObject(doc, "config", config_json(cfg, r));

    cJSON *m = cJSON_AddObjectToObject(doc, "metrics");
    cJSON_AddNumberToObject(m, "generation_time_s", r->generation_time_s);
    cJSON_AddNumberToObject(m, "steps", r->n_steps);
    cJSON_AddNumberToObject(m, "parallel_steps", r->parallel_steps);
    cJSON_AddNumberToObject(m, "total_slots", r->total_slots);
    cJSON_AddNumberToObject(m, "peak_memory_bytes", (double)r->peak_memory_bytes);
    cJSON_AddNumberToObject(m, "steps_per_second",
                            r->generation_time_s > 0 ? r->n_steps / r->generation_time_s : 0.0);

    cJSON_AddStringToObject(doc, "stop_reason", tempo_stop_reason_name(r->stop_reason));
    add_str(doc, "stop_message", r->stop_message);
    cJSON *adj = cJSON_AddArrayToObject(doc, "adjustments");
    for (int i = 0; i < r->n_adjustments; i++) {
        const tempo_adjustment *a = &r->adjustments[i];
        cJSON *aj = cJSON_CreateObject();
        cJSON_AddNumberToObject(aj, "from_step", a->from_step);
        cJSON_AddNumberToObject(aj, "old_width", a->old_width);
        cJSON_AddNumberToObject(aj, "new_width", a->new_width);
        add_str(aj, "reason", a->reason);
        cJSON_AddItemToArray(adj, aj);
    }
    char *text = cJSON_Print(doc);
    cJSON_Delete(doc);
    char *out = reindent(text ? text : "{}");
    cJSON_free(text);
    return out;
}
