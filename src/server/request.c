/* request.c: a request body -> srv_request, or a 400 naming the field.
 *
 * Pure: bytes in, a parsed request or an error out; no model and no threads, so the fuzz harness
 * (tests/fuzz/fuzz_server_body.c) can feed it anything. Every value goes through the library's
 * option table (tempo_config_set), so a field has the CLI's type, range and defaults; the server's
 * own defaults (its --config and flags) are the starting point of every request.
 */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/server.h"

/* ------------------------------------------------------------------ errors -- */

/* Messages and field names echo what the client sent: keep them one line of valid UTF-8
 * (control characters and invalid bytes become '?'). */
static void one_line(char *s) {
    for (unsigned char *p = (unsigned char *)s; *p;) {
        int n = *p < 0x80 ? 1 : (*p >> 5) == 6 ? 2 : (*p >> 4) == 14 ? 3 : (*p >> 3) == 30 ? 4 : 0;
        for (int i = 1; i < n; i++)
            if ((p[i] & 0xC0) != 0x80) n = 0;
        if (n == 0 || *p < 0x20 || *p == 0x7f) { *p++ = '?'; continue; }
        p += n;
    }
}

int srv_fail(srv_error *e, int status, const char *param, const char *code, const char *fmt, ...) {
    if (!e) return -1;
    e->status = status;
    e->type = status == 401 ? "authentication_error" : status >= 500 ? "server_error" : "invalid_request_error";
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    one_line(e->param);
    one_line(e->message);
    return -1;
}

char *srv_error_json(const srv_error *e) {
    cJSON *doc = cJSON_CreateObject(), *o = cJSON_AddObjectToObject(doc, "error");
    cJSON_AddStringToObject(o, "message", e->message);
    cJSON_AddStringToObject(o, "type", e->type ? e->type : "server_error");
    if (e->param[0]) cJSON_AddStringToObject(o, "param", e->param);
    else cJSON_AddNullToObject(o, "param");
    if (e->code) cJSON_AddStringToObject(o, "code", e->code);
    else cJSON_AddNullToObject(o, "code");
    char *s = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    return s;
}

/* ---------------------------------------------------------------- config -- */

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

int srv_config_copy(tempo_config *dst, const tempo_config *src) {
    *dst = *src;
    dst->model = dup_or_null(src->model);
    dst->prompt = dup_or_null(src->prompt);
    dst->output_dir = dup_or_null(src->output_dir);
    dst->model_params.kv_offload = dup_or_null(src->model_params.kv_offload); /* tempo_config_free frees it */
    dst->model_params.device = dup_or_null(src->model_params.device);         /* likewise */
    if ((src->model && !dst->model) || (src->prompt && !dst->prompt) || (src->output_dir && !dst->output_dir) ||
        (src->model_params.kv_offload && !dst->model_params.kv_offload) ||
        (src->model_params.device && !dst->model_params.device)) {
        tempo_config_free(dst);
        return -1;
    }
    return 0;
}

/* Forget that an option was given (its value stays): the OpenAI endpoints switch modes, and the
 * CLI's conflict checks must judge the request, not the server's defaults. */
static void config_forget(tempo_config *c, const char *key) {
    int n;
    const tempo_option_info *o = tempo_options(&n);
    for (int i = 0; i < n && i < 128; i++)
        if (!strcmp(o[i].key, key)) c->set_mask[i / 64] &= ~(1ULL << (i % 64));
}

/* Options a request may not change: they belong to the loaded model or to the CLI's files. */
static const char *const server_only[] = { "model", "threads", "kv_cache_type", "max_memory_gb", "kv_offload",
                                           "device", "gpu_layers", "output_dir", NULL };
/* Options that make an OpenAI request a TEMPO one. */
static const char *const tempo_fields[] = {
    "selection_threshold", "max_parallel_tokens", "isolate", "allow_intraset_token_visibility", "dynamic_threshold",
    "final_threshold", "bezier_p1", "bezier_p2", "use_relu", "relu_activation_point", "use_retroactive_pruning",
    "attention_threshold", "relative_threshold", "no_relative_attention", "no_multi_scale_attention", NULL,
};
static const char *const sampling_fields[] = { "temperature", "top_k", "top_p", "repetition_penalty", "seed", NULL };

static bool in_list(const char *const *list, const char *key) {
    for (; *list; list++)
        if (!strcmp(*list, key)) return true;
    return false;
}

static const char *type_name(const cJSON *v) {
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    return "invalid";
}

/* One option from a JSON value, through the option table (type, range). */
static int set_option(tempo_config *c, const char *key, const cJSON *v, srv_error *err) {
    char text[64];
    const char *value = text;
    int type = tempo_option_type(key);
    switch (type) {
    case TEMPO_OPT_BOOL:
        if (!cJSON_IsBool(v)) return srv_fail(err, 400, key, "invalid_type", "%s: expected a boolean, got %s", key, type_name(v));
        snprintf(text, sizeof text, "%s", cJSON_IsTrue(v) ? "true" : "false");
        break;
    case TEMPO_OPT_INT: {
        if (!cJSON_IsNumber(v)) return srv_fail(err, 400, key, "invalid_type", "%s: expected an integer, got %s", key, type_name(v));
        double d = v->valuedouble;
        if (d != floor(d) || fabs(d) > 9.2e18)
            return srv_fail(err, 400, key, "invalid_value", "%s: expected an integer, got %g", key, d);
        snprintf(text, sizeof text, "%.0f", d);
        break;
    }
    case TEMPO_OPT_FLOAT:
        if (!cJSON_IsNumber(v)) return srv_fail(err, 400, key, "invalid_type", "%s: expected a number, got %s", key, type_name(v));
        snprintf(text, sizeof text, "%.17g", v->valuedouble);
        break;
    case TEMPO_OPT_STRING:
        if (!cJSON_IsString(v)) return srv_fail(err, 400, key, "invalid_type", "%s: expected a string, got %s", key, type_name(v));
        value = v->valuestring;
        break;
    default:
        return srv_fail(err, 400, key, "unknown_field", "unknown field '%s'", key);
    }
    tempo_error te;
    if (tempo_config_set(c, key, value, &te)) return srv_fail(err, 400, key, "invalid_value", "%s", te.message);
    return 0;
}

/* A field of TEMPO's API (or a TEMPO extra of the OpenAI API): any CLI option by its YAML name,
 * or one of the prototype's names. 1 = handled, 0 = not an option, -1 = error. */
static int tempo_field(srv_request *r, const char *key, const cJSON *v, srv_error *err) {
    if (!strcmp(key, "use_retroactive_removal")) key = "use_retroactive_pruning"; /* the prototype's name */
    if (!strcmp(key, "show_token_ids")) {
        if (!cJSON_IsBool(v)) return srv_fail(err, 400, key, "invalid_type", "%s: expected a boolean, got %s", key, type_name(v));
        r->show_token_ids = cJSON_IsTrue(v);
        return 1;
    }
    if (tempo_option_type(key) < 0) return 0;
    if (in_list(server_only, key))
        return srv_fail(err, 400, key, "unsupported_field",
                        "%s is a setting of the server (tempo serve --%s), not of a request", key, key);
    if (!strcmp(key, "prompt") && !cJSON_IsString(v))
        return srv_fail(err, 400, key, "invalid_type", "prompt: expected a string, got %s", type_name(v));
    return set_option(&r->cfg, key, v, err) ? -1 : 1;
}

static int validate(srv_request *r, srv_error *err) {
    tempo_error te;
    if (tempo_config_validate(&r->cfg, &te)) {
        /* name the field when the message starts with its flag ("--temperature applies to ...") */
        char param[64] = "";
        if (!strncmp(te.message, "--", 2)) {
            size_t i = 0;
            for (const char *p = te.message + 2; *p && (isalnum((unsigned char)*p) || *p == '-') && i + 1 < sizeof param; p++)
                param[i++] = *p == '-' ? '_' : *p;
            param[i] = 0;
        }
        return srv_fail(err, 400, param, "invalid_value", "%s", te.message);
    }
    return 0;
}

/* ----------------------------------------------------------------- OpenAI -- */

static int parse_stop(srv_request *r, const cJSON *v, srv_error *err) {
    if (cJSON_IsNull(v)) return 0;
    if (cJSON_IsString(v)) {
        if (!*v->valuestring) return srv_fail(err, 400, "stop", "invalid_value", "stop: an empty string");
        if (!(r->stop[r->n_stop++] = strdup(v->valuestring))) return srv_fail(err, 500, NULL, NULL, "out of memory");
        return 0;
    }
    if (!cJSON_IsArray(v)) return srv_fail(err, 400, "stop", "invalid_type", "stop: expected a string or an array of strings, got %s", type_name(v));
    int n = cJSON_GetArraySize(v);
    if (n > SRV_MAX_STOP) return srv_fail(err, 400, "stop", "invalid_value", "stop: at most %d strings, got %d", SRV_MAX_STOP, n);
    const cJSON *s;
    cJSON_ArrayForEach(s, v) {
        if (!cJSON_IsString(s) || !*s->valuestring)
            return srv_fail(err, 400, "stop", "invalid_type", "stop: every entry must be a non-empty string");
        if (!(r->stop[r->n_stop++] = strdup(s->valuestring))) return srv_fail(err, 500, NULL, NULL, "out of memory");
    }
    return 0;
}

static int int_in(const cJSON *v, const char *key, int lo, int hi, int *out, srv_error *err) {
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble))
        return srv_fail(err, 400, key, "invalid_type", "%s: expected an integer, got %s", key, cJSON_IsNumber(v) ? "a fraction" : type_name(v));
    if (v->valuedouble < lo || v->valuedouble > hi)
        return srv_fail(err, 400, key, "invalid_value", "%s: %g is out of range (must be in [%d, %d])", key, v->valuedouble, lo, hi);
    *out = (int)v->valuedouble;
    return 0;
}

/* The text of a chat message's content: a string, or text parts. */
static int message_text(const cJSON *c, size_t i, char **out, srv_error *err) {
    char param[48];
    snprintf(param, sizeof param, "messages[%zu].content", i);
    if (cJSON_IsNull(c) || !c) { *out = strdup(""); return 0; }
    if (cJSON_IsString(c)) { *out = strdup(c->valuestring); return 0; }
    if (!cJSON_IsArray(c)) return srv_fail(err, 400, param, "invalid_type", "%s: expected a string or text parts, got %s", param, type_name(c));
    srv_buf b = { 0 };
    const cJSON *part;
    cJSON_ArrayForEach(part, c) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "type"), *x = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsString(t) || strcmp(t->valuestring, "text") || !cJSON_IsString(x)) {
            srv_buf_free(&b);
            return srv_fail(err, 400, param, "unsupported_value", "%s: only {\"type\": \"text\", \"text\": ...} parts are supported", param);
        }
        srv_buf_str(&b, x->valuestring);
    }
    *out = b.s ? b.s : strdup("");
    return 0;
}

static int parse_messages(srv_request *r, const cJSON *v, srv_error *err) {
    if (!cJSON_IsArray(v)) return srv_fail(err, 400, "messages", "invalid_type", "messages: expected an array, got %s", type_name(v));
    int n = cJSON_GetArraySize(v);
    if (n < 1) return srv_fail(err, 400, "messages", "invalid_value", "messages: the conversation is empty");
    r->msgs = calloc((size_t)n, sizeof *r->msgs);
    if (!r->msgs) return srv_fail(err, 500, NULL, NULL, "out of memory");
    const cJSON *m;
    cJSON_ArrayForEach(m, v) {
        size_t i = r->n_msgs;
        char param[48];
        snprintf(param, sizeof param, "messages[%zu]", i);
        if (!cJSON_IsObject(m)) return srv_fail(err, 400, param, "invalid_type", "%s: expected an object, got %s", param, type_name(m));
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsString(role)) return srv_fail(err, 400, param, "invalid_type", "%s.role: expected a string", param);
        const cJSON *f;
        cJSON_ArrayForEach(f, m) {
            if (strcmp(f->string, "role") && strcmp(f->string, "content") && strcmp(f->string, "name"))
                return srv_fail(err, 400, param, "unsupported_field", "%s: field '%s' is not supported", param, f->string);
        }
        char *content = NULL;
        if (message_text(cJSON_GetObjectItemCaseSensitive(m, "content"), i, &content, err)) return -1;
        r->msgs[i].role = strdup(role->valuestring);
        r->msgs[i].content = content;
        r->n_msgs++;
        if (!r->msgs[i].role || !content) return srv_fail(err, 500, NULL, NULL, "out of memory");
    }
    return 0;
}

static const char *const openai_unsupported[] = { "best_of", "echo", "suffix", "logit_bias", "tools", "tool_choice",
                                                  "functions", "function_call", "response_format", "parallel_tool_calls",
                                                  NULL };

static int parse_openai(srv_request *r, const cJSON *doc, srv_error *err) {
    bool chat = r->kind == RK_CHAT;
    bool has_prompt = false, sampling = false, has_max = false;
    const cJSON *f;
    cJSON_ArrayForEach(f, doc) {
        const char *k = f->string;
        if (!strcmp(k, "model") || !strcmp(k, "user")) {
            if (!cJSON_IsString(f) && !cJSON_IsNull(f)) return srv_fail(err, 400, k, "invalid_type", "%s: expected a string, got %s", k, type_name(f));
        } else if (!chat && !strcmp(k, "prompt")) {
            const cJSON *p = f;
            if (cJSON_IsArray(f) && cJSON_GetArraySize(f) == 1) p = cJSON_GetArrayItem(f, 0);
            if (!cJSON_IsString(p)) return srv_fail(err, 400, k, "invalid_type", "prompt: expected a string, got %s", type_name(f));
            tempo_error te;
            if (tempo_config_set(&r->cfg, "prompt", p->valuestring, &te)) return srv_fail(err, 400, k, "invalid_value", "%s", te.message);
            has_prompt = true;
        } else if (chat && !strcmp(k, "messages")) {
            if (parse_messages(r, f, err)) return -1;
            has_prompt = true;
        } else if (!strcmp(k, "max_tokens") || (chat && !strcmp(k, "max_completion_tokens"))) {
            if (cJSON_IsNull(f)) continue;
            if (set_option(&r->cfg, "max_tokens", f, err)) { snprintf(err->param, sizeof err->param, "%s", k); return -1; }
            has_max = true;
        } else if (!strcmp(k, "stream")) {
            if (!cJSON_IsBool(f) && !cJSON_IsNull(f)) return srv_fail(err, 400, k, "invalid_type", "stream: expected a boolean, got %s", type_name(f));
            r->stream = cJSON_IsTrue(f);
        } else if (!strcmp(k, "stream_options")) {
            if (cJSON_IsNull(f)) continue;
            const cJSON *u = cJSON_GetObjectItemCaseSensitive(f, "include_usage");
            if (!cJSON_IsObject(f) || (u && !cJSON_IsBool(u)) || cJSON_GetArraySize(f) != (u ? 1 : 0))
                return srv_fail(err, 400, k, "invalid_value", "stream_options: only {\"include_usage\": true|false} is supported");
            r->include_usage = cJSON_IsTrue(u);
        } else if (!strcmp(k, "stop")) {
            if (parse_stop(r, f, err)) return -1;
        } else if (!strcmp(k, "n")) {
            if (cJSON_IsNull(f)) continue;
            if (!cJSON_IsNumber(f) || f->valuedouble != 1) return srv_fail(err, 400, k, "unsupported_value", "n: only 1 is supported");
        } else if (!strcmp(k, "frequency_penalty") || !strcmp(k, "presence_penalty")) {
            if (cJSON_IsNull(f)) continue;
            if (!cJSON_IsNumber(f) || f->valuedouble != 0)
                return srv_fail(err, 400, k, "unsupported_value", "%s: only 0 is supported (use repetition_penalty)", k);
        } else if (!strcmp(k, "logprobs")) {
            if (cJSON_IsNull(f)) continue;
            if (chat) {
                if (!cJSON_IsBool(f)) return srv_fail(err, 400, k, "invalid_type", "logprobs: expected a boolean, got %s", type_name(f));
                if (cJSON_IsTrue(f) && r->logprobs < 0) r->logprobs = 0;
            } else if (int_in(f, k, 0, SRV_MAX_TOP_LOGPROBS, &r->logprobs, err)) return -1;
        } else if (chat && !strcmp(k, "top_logprobs")) {
            if (cJSON_IsNull(f)) continue;
            int n;
            if (int_in(f, k, 0, SRV_MAX_TOP_LOGPROBS, &n, err)) return -1;
            r->logprobs = n; /* needs logprobs: true, checked below */
        } else if (in_list(openai_unsupported, k)) {
            return srv_fail(err, 400, k, "unsupported_field", "%s is not supported by tempo serve", k);
        } else if (in_list(sampling_fields, k)) {
            if (cJSON_IsNull(f)) continue;
            if (set_option(&r->cfg, k, f, err)) return -1;
            sampling = true;
        } else {
            if (!strcmp(k, "prompt") || !strcmp(k, "messages"))
                return srv_fail(err, 400, k, "unknown_field", "%s belongs to /v1/%s", k, chat ? "completions" : "chat/completions");
            int h = tempo_field(r, k, f, err);
            if (h < 0) return -1;
            if (h == 0) return srv_fail(err, 400, k, "unknown_field", "unknown field '%s'", k);
            if (in_list(tempo_fields, k) || !strcmp(k, "use_retroactive_removal") ||
                (!strcmp(k, "default_mode") && cJSON_IsFalse(f)))
                r->tempo = true;
        }
    }
    if (chat) {
        const cJSON *lp = cJSON_GetObjectItemCaseSensitive(doc, "logprobs");
        if (cJSON_GetObjectItemCaseSensitive(doc, "top_logprobs") && !cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(doc, "top_logprobs")) && !cJSON_IsTrue(lp))
            return srv_fail(err, 400, "top_logprobs", "invalid_value", "top_logprobs needs logprobs: true");
    }
    if (!has_prompt) return srv_fail(err, 400, chat ? "messages" : "prompt", "missing_field", "%s is required", chat ? "messages" : "prompt");
    /* OpenAI's default length for completions is 16 tokens; chat's is the server's. */
    if (!chat && !has_max && !tempo_config_was_set(&r->cfg, "max_tokens")) {
        tempo_error te;
        tempo_config_set(&r->cfg, "max_tokens", "16", &te);
    }
    if (r->tempo) {
        r->cfg.gen.default_mode = false;
        for (const char *const *k = sampling_fields; *k; k++)
            if (!sampling || !cJSON_GetObjectItemCaseSensitive(doc, *k)) config_forget(&r->cfg, *k);
    } else {
        /* plain sampling, as any OpenAI server; OpenAI's default temperature is 1 */
        bool server_temp = tempo_config_was_set(&r->cfg, "temperature");
        r->cfg.gen.default_mode = true;
        for (const char *const *k = tempo_fields; *k; k++) config_forget(&r->cfg, *k);
        if (!server_temp) r->cfg.gen.temperature = 1.0;
    }
    return validate(r, err);
}

/* ---------------------------------------------------------------- TEMPO's -- */

static int parse_generate(srv_request *r, const cJSON *doc, srv_error *err) {
    const cJSON *f;
    cJSON_ArrayForEach(f, doc) {
        if (!strcmp(f->string, "stream") && r->kind == RK_BRANCH) continue; /* the branch's own */
        int h = tempo_field(r, f->string, f, err);
        if (h < 0) return -1;
        if (h == 0) return srv_fail(err, 400, f->string, "unknown_field", "unknown field '%s'", f->string);
    }
    r->tempo = !r->cfg.gen.default_mode;
    return validate(r, err);
}

static int parse_branch(srv_request *r, const cJSON *doc, srv_error *err) {
    const cJSON *req = NULL, *path = NULL, *step = NULL, *tok = NULL, *f;
    cJSON_ArrayForEach(f, doc) {
        const char *k = f->string;
        if (!strcmp(k, "request")) req = f;
        else if (!strcmp(k, "path")) path = f;
        else if (!strcmp(k, "step")) step = f;
        else if (!strcmp(k, "token_id")) tok = f;
        else if (!strcmp(k, "stream")) {
            if (!cJSON_IsBool(f)) return srv_fail(err, 400, k, "invalid_type", "stream: expected a boolean, got %s", type_name(f));
            r->stream = cJSON_IsTrue(f);
        } else return srv_fail(err, 400, k, "unknown_field", "unknown field '%s'", k);
    }
    if (!req) return srv_fail(err, 400, "request", "missing_field", "request (the original /api/generate body) is required");
    if (!cJSON_IsObject(req)) return srv_fail(err, 400, "request", "invalid_type", "request: expected an object, got %s", type_name(req));
    if (!path) return srv_fail(err, 400, "path", "missing_field", "path (the sets of the steps before 'step') is required");
    if (!step) return srv_fail(err, 400, "step", "missing_field", "step is required");
    if (!tok) return srv_fail(err, 400, "token_id", "missing_field", "token_id is required");
    if (int_in(step, "step", 0, 1 << 30, &r->branch_step, err)) return -1;
    int t;
    if (int_in(tok, "token_id", 0, 1 << 30, &t, err)) return -1;
    r->branch_token = t;
    if (!cJSON_IsArray(path)) return srv_fail(err, 400, "path", "invalid_type", "path: expected an array of arrays of token ids, got %s", type_name(path));
    int n = cJSON_GetArraySize(path);
    if (n < r->branch_step)
        return srv_fail(err, 400, "path", "invalid_value", "path has %d steps; branching at step %d needs the %d before it", n, r->branch_step, r->branch_step);
    r->path_len = r->branch_step; /* later steps are not needed */
    r->path = calloc((size_t)r->path_len + 1, sizeof *r->path);
    r->path_n = calloc((size_t)r->path_len + 1, sizeof *r->path_n);
    if (!r->path || !r->path_n) return srv_fail(err, 500, NULL, NULL, "out of memory");
    for (int k = 0; k < r->path_len; k++) {
        const cJSON *set = cJSON_GetArrayItem(path, k);
        int m = cJSON_IsArray(set) ? cJSON_GetArraySize(set) : -1;
        if (m < 1) return srv_fail(err, 400, "path", "invalid_value", "path[%d]: expected a non-empty array of token ids", k);
        r->path[k] = calloc((size_t)m, sizeof(int32_t));
        if (!r->path[k]) return srv_fail(err, 500, NULL, NULL, "out of memory");
        r->path_n[k] = m;
        for (int j = 0; j < m; j++) {
            const cJSON *id = cJSON_GetArrayItem(set, j);
            if (!cJSON_IsNumber(id) || id->valuedouble != floor(id->valuedouble) || id->valuedouble < 0 || id->valuedouble > 1 << 30)
                return srv_fail(err, 400, "path", "invalid_value", "path[%d][%d]: expected a token id", k, j);
            r->path[k][j] = (int32_t)id->valuedouble;
        }
    }
    r->original_body = cJSON_PrintUnformatted(req);
    /* the original request, parsed as /api/generate */
    if (parse_generate(r, req, err)) {
        char tmp[sizeof err->param + 8];
        snprintf(tmp, sizeof tmp, "request.%s", err->param);
        if (err->param[0]) snprintf(err->param, sizeof err->param, "%.*s", (int)sizeof err->param - 1, tmp);
        return -1;
    }
    if (r->branch_step >= r->cfg.gen.max_tokens)
        return srv_fail(err, 400, "step", "invalid_value", "step %d is past the request's max_tokens (%d)", r->branch_step, r->cfg.gen.max_tokens);
    return 0;
}

/* ------------------------------------------------------------------ entry -- */

int srv_parse_request(srv_kind kind, const char *body, size_t len, const tempo_config *defaults, srv_request *r,
                      srv_error *err) {
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->logprobs = -1;
    if (srv_config_copy(&r->cfg, defaults)) return srv_fail(err, 500, NULL, NULL, "out of memory");
    const char *end = NULL;
    cJSON *doc = cJSON_ParseWithLengthOpts(body, len, &end, false);
    if (!doc) {
        size_t at = end && end >= body ? (size_t)(end - body) : 0;
        return srv_fail(err, 400, NULL, "invalid_json", "the body is not valid JSON (at byte %zu of %zu)", at, len);
    }
    /* trailing bytes other than white space are an error too */
    for (const char *p = end; p && p < body + len; p++)
        if (!isspace((unsigned char)*p)) {
            cJSON_Delete(doc);
            return srv_fail(err, 400, NULL, "invalid_json", "the body has data after its JSON value (at byte %zu)", (size_t)(p - body));
        }
    int rc;
    if (!cJSON_IsObject(doc)) rc = srv_fail(err, 400, NULL, "invalid_json", "the body must be a JSON object, got %s", type_name(doc));
    else {
        /* cJSON keeps duplicate keys; the first would silently win: refuse them */
        const cJSON *a, *b;
        rc = 0;
        cJSON_ArrayForEach(a, doc) {
            for (b = a->next; b; b = b->next)
                if (!strcmp(a->string, b->string)) { rc = srv_fail(err, 400, a->string, "invalid_json", "field '%s' appears twice", a->string); break; }
            if (rc) break;
        }
        if (!rc) {
            switch (kind) {
            case RK_COMPLETION: case RK_CHAT: rc = parse_openai(r, doc, err); break;
            case RK_GENERATE: rc = parse_generate(r, doc, err); break;
            case RK_BRANCH: rc = parse_branch(r, doc, err); break;
            }
        }
    }
    cJSON_Delete(doc);
    return rc;
}

void srv_request_free(srv_request *r) {
    tempo_config_free(&r->cfg);
    for (size_t i = 0; i < r->n_msgs; i++) {
        free((char *)r->msgs[i].role);
        free((char *)r->msgs[i].content);
    }
    free(r->msgs);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    if (r->path)
        for (int k = 0; k < r->path_len; k++) free(r->path[k]);
    free(r->path);
    free(r->path_n);
    free(r->original_body);
    memset(r, 0, sizeof *r);
}

/* -------------------------------------------------------------- text buffer -- */

void srv_buf_add(srv_buf *b, const char *data, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *s = realloc(b->s, cap);
        if (!s) { b->oom = true; return; }
        b->s = s;
        b->cap = cap;
    }
    if (n) memcpy(b->s + b->len, data, n);
    b->len += n;
    b->s[b->len] = 0;
}

void srv_buf_str(srv_buf *b, const char *s) { srv_buf_add(b, s, strlen(s)); }

void srv_buf_printf(srv_buf *b, const char *fmt, ...) {
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof small) { srv_buf_add(b, small, (size_t)n); return; }
    char *big = malloc((size_t)n + 1);
    if (!big) { b->oom = true; return; }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    srv_buf_add(b, big, (size_t)n);
    free(big);
}

void srv_buf_free(srv_buf *b) {
    free(b->s);
    memset(b, 0, sizeof *b);
}
