/* respond.c: what a job says, in each API's form (docs/server.md).
 *
 * The scheduler thread calls srv_on_start after a job's prefill and srv_on_step after each of its
 * steps: these keep what only exists at that moment (the step's distribution for logprobs, the
 * pruning events of the pass, the content so far for stop strings) and emit the stream's events.
 * The connection's thread builds the final documents from the finished job (srv_final_json,
 * srv_final_stream), so the scheduler spends no time on big JSON.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/server.h"

static bool is_openai(const srv_job *j) { return j->req.kind == RK_COMPLETION || j->req.kind == RK_CHAT; }

/* Text as JSON may carry it: valid UTF-8, other bytes as <0xNN> (the library's display form). */
static cJSON *text_json(const char *s, size_t n) {
    char *copy = malloc(n + 1);
    if (!copy) return cJSON_CreateString("");
    memcpy(copy, s, n);
    copy[n] = 0;
    char *shown = tempo_token_display(copy);
    cJSON *j = cJSON_CreateString(shown ? shown : "");
    free(shown);
    free(copy);
    return j;
}

static double finite_lp(float lp) { return isfinite(lp) ? lp : -9999.0; }

static void emit_event(srv_job *j, const char *event, cJSON *data) {
    char *text = cJSON_PrintUnformatted(data);
    pthread_mutex_lock(&j->mu);
    if (event) srv_buf_printf(&j->out, "event: %s\n", event);
    srv_buf_printf(&j->out, "data: %s\n\n", text ? text : "{}");
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    free(text);
}

/* ------------------------------------------------------------ OpenAI parts -- */

static cJSON *openai_chunk(const srv_job *j) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", j->id);
    cJSON_AddStringToObject(o, "object", j->req.kind == RK_CHAT ? "chat.completion.chunk" : "text_completion");
    cJSON_AddNumberToObject(o, "created", (double)j->created);
    cJSON_AddStringToObject(o, "model", j->model_name ? j->model_name : "");
    return o;
}

/* One streamed choice: content delta (may be empty), finish reason (NULL: running). */
static cJSON *openai_choice(const srv_job *j, const char *delta, size_t n, const char *finish, bool role) {
    cJSON *c = cJSON_CreateObject();
    cJSON_AddNumberToObject(c, "index", 0);
    if (j->req.kind == RK_CHAT) {
        cJSON *d = cJSON_AddObjectToObject(c, "delta");
        if (role) cJSON_AddStringToObject(d, "role", "assistant");
        if (n || role) cJSON_AddItemToObject(d, "content", text_json(delta, n));
    } else {
        cJSON_AddItemToObject(c, "text", text_json(delta, n));
    }
    cJSON_AddNullToObject(c, "logprobs");
    if (finish) cJSON_AddStringToObject(c, "finish_reason", finish);
    else cJSON_AddNullToObject(c, "finish_reason");
    return c;
}

/* logprobs of content tokens [from, to) in the API's form. */
static cJSON *logprobs_json(const srv_job *j, int from, int to) {
    if (j->req.logprobs < 0 || !j->logprobs) return cJSON_CreateNull();
    bool chat = j->req.kind == RK_CHAT;
    cJSON *o = cJSON_CreateObject();
    cJSON *content = chat ? cJSON_AddArrayToObject(o, "content") : NULL;
    cJSON *tokens = NULL, *lps = NULL, *tops = NULL, *offs = NULL;
    if (!chat) {
        tokens = cJSON_AddArrayToObject(o, "tokens");
        lps = cJSON_AddArrayToObject(o, "token_logprobs");
        tops = j->req.logprobs > 0 ? cJSON_AddArrayToObject(o, "top_logprobs") : NULL;
        if (!tops) cJSON_AddNullToObject(o, "top_logprobs");
        offs = cJSON_AddArrayToObject(o, "text_offset");
    }
    for (int i = from; i < to; i++) {
        const cJSON *e = cJSON_GetArrayItem(j->logprobs, i);
        if (!e) break;
        const cJSON *text = cJSON_GetObjectItem(e, "text"), *top = cJSON_GetObjectItem(e, "top");
        double lp = cJSON_GetObjectItem(e, "logprob")->valuedouble;
        if (chat) {
            cJSON *t = cJSON_CreateObject();
            cJSON_AddItemToObject(t, "token", cJSON_Duplicate(text, false));
            cJSON_AddNumberToObject(t, "logprob", lp);
            cJSON_AddItemToObject(t, "bytes", cJSON_Duplicate(cJSON_GetObjectItem(e, "bytes"), true));
            cJSON *alts = cJSON_AddArrayToObject(t, "top_logprobs");
            const cJSON *a;
            cJSON_ArrayForEach(a, top) {
                cJSON *x = cJSON_CreateObject();
                cJSON_AddItemToObject(x, "token", cJSON_Duplicate(cJSON_GetObjectItem(a, "text"), false));
                cJSON_AddNumberToObject(x, "logprob", cJSON_GetObjectItem(a, "logprob")->valuedouble);
                cJSON_AddItemToObject(x, "bytes", cJSON_Duplicate(cJSON_GetObjectItem(a, "bytes"), true));
                cJSON_AddItemToArray(alts, x);
            }
            cJSON_AddItemToArray(content, t);
        } else {
            cJSON_AddItemToArray(tokens, cJSON_Duplicate(text, false));
            cJSON_AddItemToArray(lps, cJSON_CreateNumber(lp));
            cJSON_AddItemToArray(offs, cJSON_CreateNumber(cJSON_GetObjectItem(e, "offset")->valuedouble));
            if (tops) {
                cJSON *d = cJSON_CreateObject();
                const cJSON *a;
                cJSON_ArrayForEach(a, top) {
                    const char *k = cJSON_GetObjectItem(a, "text")->valuestring;
                    if (!cJSON_GetObjectItemCaseSensitive(d, k))
                        cJSON_AddNumberToObject(d, k, cJSON_GetObjectItem(a, "logprob")->valuedouble);
                }
                cJSON_AddItemToArray(tops, d);
            }
        }
    }
    return o;
}

static cJSON *bytes_json(const char *s) {
    cJSON *a = cJSON_CreateArray();
    for (const unsigned char *p = (const unsigned char *)s; p && *p; p++) cJSON_AddItemToArray(a, cJSON_CreateNumber(*p));
    return a;
}

/* A step's set as selected (the `tempo` extra of a streamed chunk, the TEMPO stream's step). */
static cJSON *step_json(const tempo_step *st, bool full) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "step", st->step);
    cJSON_AddNumberToObject(o, "position", st->position);
    cJSON *toks = cJSON_AddArrayToObject(o, "tokens");
    for (int m = 0; m < st->n_tokens; m++) {
        const tempo_token *t = &st->tokens[m];
        cJSON *tj = cJSON_CreateObject();
        cJSON_AddNumberToObject(tj, "token_id", t->token_id);
        cJSON_AddItemToObject(tj, "text", text_json(t->text ? t->text : "", t->text ? strlen(t->text) : 0));
        cJSON_AddNumberToObject(tj, "probability", t->probability);
        if (full) {
            cJSON_AddBoolToObject(tj, "pruned", t->pruned);
            if (t->pruned) cJSON_AddNumberToObject(tj, "pruned_at_step", t->pruned_at_step);
            else cJSON_AddNullToObject(tj, "pruned_at_step");
        }
        cJSON_AddItemToArray(toks, tj);
    }
    if (full) cJSON_AddBoolToObject(o, "was_pruned", st->was_pruned);
    if (st->chosen) cJSON_AddBoolToObject(o, "chosen", true);
    return o;
}

static cJSON *prune_json(const tempo_prune_event *e) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "at_step", e->at_step);
    cJSON_AddNumberToObject(o, "step", e->step);
    cJSON_AddNumberToObject(o, "member", e->member);
    cJSON_AddNumberToObject(o, "token_id", e->token_id);
    cJSON_AddNumberToObject(o, "score", e->score);
    cJSON_AddBoolToObject(o, "pruned", e->pruned);
    return o;
}

/* Where text can be sent up to without showing a stop string that may still complete, or half
 * of a UTF-8 character. */
static size_t safe_end(const srv_job *j) {
    const char *s = j->text.s;
    size_t n = j->text.len, keep = n;
    for (int i = 0; i < j->req.n_stop; i++) {
        size_t sl = strlen(j->req.stop[i]);
        for (size_t l = sl - 1; l > 0; l--) /* the longest tail that starts the stop string */
            if (l <= n && !memcmp(s + n - l, j->req.stop[i], l)) {
                if (n - l < keep) keep = n - l;
                break;
            }
    }
    /* back off over an unfinished UTF-8 sequence at the end */
    size_t i = keep, back = 0;
    while (i > 0 && back < 4 && ((unsigned char)s[i - 1] & 0xC0) == 0x80) { i--; back++; }
    if (i > 0) {
        unsigned char lead = (unsigned char)s[i - 1];
        size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
        if (need > 1 && back + 1 < need) keep = i - 1;
    }
    return keep;
}

/* The earliest stop string in text (n bytes), or n. */
static size_t find_stop(const srv_job *j, const char *text, size_t n, size_t from) {
    size_t best = n;
    for (int i = 0; i < j->req.n_stop; i++) {
        const char *p = memmem(text + from, n - from, j->req.stop[i], strlen(j->req.stop[i]));
        if (p && (size_t)(p - text) < best) best = (size_t)(p - text);
    }
    return best;
}

/* --------------------------------------------------------------- the hooks -- */

void srv_on_start(srv_job *j) {
    j->prunes = cJSON_CreateArray();
    j->pending_prunes = cJSON_CreateArray();
    if (j->req.logprobs >= 0) j->logprobs = cJSON_CreateArray();
    if (!j->req.stream) return;
    if (is_openai(j)) {
        if (j->req.kind == RK_CHAT) { /* the first chunk names the role, as OpenAI's do */
            cJSON *c = openai_chunk(j);
            cJSON *ch = cJSON_AddArrayToObject(c, "choices");
            cJSON_AddItemToArray(ch, openai_choice(j, "", 0, NULL, true));
            emit_event(j, NULL, c);
            cJSON_Delete(c);
        }
        return;
    }
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "id", j->id);
    cJSON_AddItemToObject(d, "prompt", text_json(j->prompt, strlen(j->prompt)));
    cJSON_AddNumberToObject(d, "n_prompt_tokens", j->n_prompt_tokens);
    tempo_session_stats st;
    tempo_session_get_stats(j->s, &st);
    cJSON_AddNumberToObject(d, "max_parallel_tokens", st.width);
    tempo_error e;
    tempo_result *r = tempo_session_result(j->s, &e);
    char *rec = r ? tempo_result_to_json(r, &j->req.cfg) : NULL;
    cJSON *doc = rec ? cJSON_Parse(rec) : NULL;
    cJSON *cfg = doc ? cJSON_DetachItemFromObject(doc, "config") : NULL;
    cJSON_AddItemToObject(d, "config", cfg ? cfg : cJSON_CreateObject());
    cJSON_Delete(doc);
    free(rec);
    tempo_result_free(r);
    emit_event(j, "start", d);
    cJSON_Delete(d);
}

/* Branch: replay the recorded sets, then the chosen member. */
static int branch_replay(srv_job *j, int k) {
    const srv_request *q = &j->req;
    tempo_error e;
    int rc = 0;
    if (k < q->branch_step) rc = tempo_session_set_members(j->s, q->path[k], q->path_n[k], &e);
    else if (k == q->branch_step) rc = tempo_session_set_members(j->s, &q->branch_token, 1, &e);
    if (rc) {
        pthread_mutex_lock(&j->mu);
        j->failed = true;
        srv_fail(&j->err, 400, k < q->branch_step ? "path" : "token_id", "path_diverged", "step %d: %s", k, e.message);
        pthread_mutex_unlock(&j->mu);
        return -1;
    }
    return 0;
}

/* The OpenAI side of a step: content, logprobs, stop strings, the stream's chunk. */
static void openai_step(srv_job *j, const tempo_step *st, int n_prune_new) {
    const tempo_token *t = &st->tokens[0]; /* the most probable member */
    size_t before = j->text.len;
    const char *piece = t->text ? t->text : "";
    srv_buf_str(&j->text, piece);
    if (j->logprobs) {
        cJSON *e = cJSON_CreateObject();
        char *shown = tempo_token_display(piece);
        cJSON_AddStringToObject(e, "text", shown ? shown : "");
        free(shown);
        cJSON_AddItemToObject(e, "bytes", bytes_json(piece));
        cJSON_AddNumberToObject(e, "logprob", finite_lp(tempo_session_logprob(j->s, t->token_id)));
        cJSON_AddNumberToObject(e, "offset", (double)before);
        cJSON *top = cJSON_AddArrayToObject(e, "top");
        int32_t ids[SRV_MAX_TOP_LOGPROBS];
        float lps[SRV_MAX_TOP_LOGPROBS];
        int n = j->req.logprobs > 0 ? tempo_session_top_logprobs(j->s, j->req.logprobs, ids, lps) : 0;
        for (int i = 0; i < n; i++) {
            cJSON *a = cJSON_CreateObject();
            char *tt = tempo_token_text(j->model, ids[i]);
            char *ts = tt ? tempo_token_display(tt) : NULL;
            cJSON_AddNumberToObject(a, "id", ids[i]);
            cJSON_AddStringToObject(a, "text", ts ? ts : "");
            cJSON_AddItemToObject(a, "bytes", bytes_json(tt));
            cJSON_AddNumberToObject(a, "logprob", finite_lp(lps[i]));
            cJSON_AddItemToArray(top, a);
            free(tt);
            free(ts);
        }
        cJSON_AddItemToArray(j->logprobs, e);
    }
    if (j->req.n_stop) {
        size_t longest = 0;
        for (int i = 0; i < j->req.n_stop; i++)
            if (strlen(j->req.stop[i]) > longest) longest = strlen(j->req.stop[i]);
        size_t from = before >= longest ? before - longest + 1 : 0;
        size_t at = find_stop(j, j->text.s, j->text.len, from);
        if (at < j->text.len) {
            j->text.len = at;
            j->text.s[at] = 0;
            j->stop_hit = true;
            j->finish_now = true;
        }
    }
    if (!j->req.stream) return;
    size_t end = j->stop_hit ? j->text.len : safe_end(j);
    if (end < j->text_sent) end = j->text_sent;
    bool has_text = end > j->text_sent;
    if (!has_text && !j->req.tempo) return;
    cJSON *c = openai_chunk(j);
    cJSON *ch = cJSON_AddArrayToObject(c, "choices");
    cJSON *choice = openai_choice(j, j->text.s + j->text_sent, end - j->text_sent, NULL, false);
    if (j->logprobs) {
        int idx = cJSON_GetArraySize(j->logprobs);
        cJSON_ReplaceItemInObject(choice, "logprobs", logprobs_json(j, idx - 1, idx));
    }
    if (j->req.tempo) {
        cJSON *x = cJSON_AddObjectToObject(choice, "tempo");
        cJSON *steps = cJSON_AddArrayToObject(x, "steps");
        cJSON_AddItemToArray(steps, step_json(st, true));
        cJSON_AddItemToObject(x, "prune", j->pending_prunes);
        j->pending_prunes = cJSON_CreateArray();
    }
    (void)n_prune_new;
    cJSON_AddItemToArray(ch, choice);
    j->text_sent = end;
    emit_event(j, NULL, c);
    cJSON_Delete(c);
}

int srv_on_step(srv_job *j, int rc, const tempo_step_info *info) {
    bool tempo_stream = j->req.stream && !is_openai(j);
    for (int i = 0; i < info->n_prune; i++) {
        cJSON_AddItemToArray(j->prunes, prune_json(&info->prune[i]));
        if (tempo_stream) {
            cJSON *e = prune_json(&info->prune[i]);
            emit_event(j, "prune", e);
            cJSON_Delete(e);
        } else if (j->req.stream) {
            cJSON_AddItemToArray(j->pending_prunes, prune_json(&info->prune[i]));
        }
    }
    if (rc == 0) {
        if (j->req.kind == RK_BRANCH && j->n_done_steps <= j->req.branch_step) {
            pthread_mutex_lock(&j->mu);
            j->failed = true;
            const char *msg = NULL;
            tempo_stop_reason why = tempo_session_stop_reason(j->s, &msg);
            srv_fail(&j->err, 400, "path", "path_diverged",
                     "the replayed generation ended (%s) at step %d, before the branch step %d", tempo_stop_reason_name(why),
                     j->n_done_steps, j->req.branch_step);
            pthread_mutex_unlock(&j->mu);
            return -1;
        }
        return 0;
    }
    int k = info->step->step;
    if (j->req.kind == RK_BRANCH && k <= j->req.branch_step && branch_replay(j, k)) return -1;
    const tempo_step *st = tempo_session_get_step(j->s, k);
    j->n_done_steps = k + 1;
    if (is_openai(j)) openai_step(j, st, info->n_prune);
    else if (tempo_stream) {
        cJSON *e = step_json(st, false);
        emit_event(j, "step", e);
        cJSON_Delete(e);
    }
    return 0;
}

/* ------------------------------------------------------------- the record -- */

static void add_edge(cJSON *edges, const char *src, const char *dst, const char *kind, double w) {
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "source", src);
    cJSON_AddStringToObject(e, "target", dst);
    cJSON_AddStringToObject(e, "kind", kind);
    cJSON_AddNumberToObject(e, "weight", w);
    cJSON_AddItemToArray(edges, e);
}

/* The run's structure: prompt -> D_0 -> members of S_0 -> D_1 -> ... (docs/server.md). */
static cJSON *graph_json(const tempo_result *r) {
    cJSON *g = cJSON_CreateObject();
    cJSON *nodes = cJSON_AddArrayToObject(g, "nodes"), *edges = cJSON_AddArrayToObject(g, "edges");
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "id", "prompt");
    cJSON_AddStringToObject(p, "kind", "prompt");
    cJSON_AddItemToObject(p, "text", text_json(r->prompt ? r->prompt : "", r->prompt ? strlen(r->prompt) : 0));
    cJSON_AddNumberToObject(p, "n_tokens", r->n_prompt_tokens);
    cJSON_AddItemToArray(nodes, p);
    /* D_0..D_{n-1}; D_n when the last set was fed (end of generation) or a pass after it pruned */
    bool eos = r->stop_reason == TEMPO_STOP_EOS;
    int n_dist = r->n_steps + (eos ? 1 : 0);
    for (int k = 0; k < r->n_steps; k++)
        for (int m = 0; m < r->steps[k].n_tokens; m++)
            if (r->steps[k].tokens[m].pruned && r->steps[k].tokens[m].pruned_at_step + 2 > n_dist)
                n_dist = r->steps[k].tokens[m].pruned_at_step + 2;
    if (r->n_steps == 0 && n_dist == 0) n_dist = 1; /* the prompt's distribution exists */
    char id[48], id2[48];
    for (int k = 0; k < n_dist; k++) {
        cJSON *d = cJSON_CreateObject();
        snprintf(id, sizeof id, "d%d", k);
        cJSON_AddStringToObject(d, "id", id);
        cJSON_AddStringToObject(d, "kind", "dist");
        cJSON_AddNumberToObject(d, "step", k);
        if (eos && k == r->n_steps) cJSON_AddBoolToObject(d, "eos", true);
        cJSON_AddItemToArray(nodes, d);
    }
    add_edge(edges, "prompt", "d0", "prefill", 1.0);
    for (int k = 0; k < r->n_steps; k++) {
        const tempo_step *st = &r->steps[k];
        double sum = 0;
        for (int m = 0; m < st->n_tokens; m++) sum += st->tokens[m].probability;
        bool fed = k + 1 < r->n_steps || (eos && k + 1 == r->n_steps);
        for (int m = 0; m < st->n_tokens; m++) {
            const tempo_token *t = &st->tokens[m];
            cJSON *o = cJSON_CreateObject();
            snprintf(id, sizeof id, "s%dm%d", k, m);
            cJSON_AddStringToObject(o, "id", id);
            cJSON_AddStringToObject(o, "kind", "token");
            cJSON_AddNumberToObject(o, "step", k);
            cJSON_AddNumberToObject(o, "member", m);
            cJSON_AddNumberToObject(o, "token_id", t->token_id);
            cJSON_AddItemToObject(o, "text", text_json(t->text ? t->text : "", t->text ? strlen(t->text) : 0));
            cJSON_AddNumberToObject(o, "probability", t->probability);
            cJSON_AddBoolToObject(o, "pruned", t->pruned);
            if (t->pruned) cJSON_AddNumberToObject(o, "pruned_at_step", t->pruned_at_step);
            else cJSON_AddNullToObject(o, "pruned_at_step");
            if (t->scored_at_step >= 0) {
                cJSON_AddNumberToObject(o, "prune_score", t->prune_score);
                cJSON_AddNumberToObject(o, "scored_at_step", t->scored_at_step);
            }
            if (st->chosen) cJSON_AddBoolToObject(o, "chosen", true);
            cJSON_AddItemToArray(nodes, o);
            snprintf(id2, sizeof id2, "d%d", k);
            add_edge(edges, id2, id, "select", t->probability);
            if (fed) {
                snprintf(id2, sizeof id2, "d%d", k + 1);
                add_edge(edges, id, id2, "feed", sum > 0 ? t->probability / sum : 0.0);
            }
            if (t->pruned) {
                snprintf(id2, sizeof id2, "d%d", t->pruned_at_step + 1);
                add_edge(edges, id, id2, "prune", t->prune_score);
            }
        }
    }
    return g;
}

cJSON *srv_record_json(const tempo_result *r, const srv_job *j) {
    char *rec = tempo_result_to_json(r, &j->req.cfg);
    cJSON *doc = rec ? cJSON_Parse(rec) : NULL;
    free(rec);
    if (!doc) return NULL;
    cJSON_AddStringToObject(doc, "id", j->id);
    cJSON_AddItemToObject(doc, "graph", graph_json(r));
    if (j->req.show_token_ids) {
        srv_buf b = { 0 };
        srv_buf_str(&b, r->prompt ? r->prompt : "");
        for (int k = 0; k < r->n_steps; k++) {
            char *s = tempo_step_text(&r->steps[k], false, true);
            if (s) srv_buf_str(&b, s);
            free(s);
        }
        cJSON_AddItemToObject(doc, "text_with_ids", text_json(b.s ? b.s : "", b.len));
        srv_buf_free(&b);
    }
    return doc;
}

/* ------------------------------------------------------- final documents -- */

static const char *finish_reason(const srv_job *j) {
    if (j->stop_hit) return "stop";
    tempo_stop_reason why = j->result ? j->result->stop_reason : TEMPO_STOP_ERROR;
    switch (why) {
    case TEMPO_STOP_EOS: return "stop";
    case TEMPO_STOP_MAX_TOKENS: case TEMPO_STOP_CACHE_LIMIT: case TEMPO_STOP_MEMORY_LIMIT: return "length";
    default: return tempo_stop_reason_name(why);
    }
}

/* The content of a finished run: per step the alive member with the highest probability (the
 * clean text after pruning), ending before the first stop string. */
static void final_content(const srv_job *j, srv_buf *b) {
    const tempo_result *r = j->result;
    for (int k = 0; r && k < r->n_steps; k++) {
        const tempo_step *st = &r->steps[k];
        for (int m = 0; m < st->n_tokens; m++)
            if (!st->tokens[m].pruned) {
                srv_buf_str(b, st->tokens[m].text ? st->tokens[m].text : "");
                break;
            }
    }
    if (b->s) b->len = find_stop(j, b->s, b->len, 0);
}

static cJSON *usage_json(const srv_job *j) {
    cJSON *u = cJSON_CreateObject();
    int n = j->result ? j->result->n_steps : 0;
    cJSON_AddNumberToObject(u, "prompt_tokens", j->n_prompt_tokens);
    cJSON_AddNumberToObject(u, "completion_tokens", n);
    cJSON_AddNumberToObject(u, "total_tokens", j->n_prompt_tokens + n);
    return u;
}

/* llama.cpp's server "timings": the prompt (admitted to prefilled: queueing excluded) and the
 * generation (prefilled to the last step), in milliseconds. */
static cJSON *timings_json(const srv_job *j) {
    cJSON *t = cJSON_CreateObject();
    int n = j->result ? j->result->n_steps : 0;
    double pms = (j->t_prefilled - j->t_admitted) * 1e3, gms = (j->t_last_step - j->t_prefilled) * 1e3;
    if (pms < 0) pms = 0;
    if (gms < 0) gms = 0;
    cJSON_AddNumberToObject(t, "prompt_n", j->n_prompt_tokens);
    cJSON_AddNumberToObject(t, "prompt_ms", pms);
    cJSON_AddNumberToObject(t, "prompt_per_second", pms > 0 ? j->n_prompt_tokens / pms * 1e3 : 0);
    cJSON_AddNumberToObject(t, "predicted_n", n);
    cJSON_AddNumberToObject(t, "predicted_ms", gms);
    cJSON_AddNumberToObject(t, "predicted_per_second", gms > 0 ? n / gms * 1e3 : 0);
    return t;
}

static cJSON *tempo_extra(const srv_job *j) {
    cJSON *x = cJSON_CreateObject();
    cJSON *steps = cJSON_AddArrayToObject(x, "steps");
    for (int k = 0; j->result && k < j->result->n_steps; k++) cJSON_AddItemToArray(steps, step_json(&j->result->steps[k], true));
    cJSON_AddItemToObject(x, "prune", j->prunes ? cJSON_Duplicate(j->prunes, true) : cJSON_CreateArray());
    return x;
}

static char *print_and_free(cJSON *doc) {
    char *s = doc ? cJSON_PrintUnformatted(doc) : NULL;
    cJSON_Delete(doc);
    return s;
}

char *srv_final_json(srv_job *j) {
    if (j->failed) return srv_error_json(&j->err);
    if (!is_openai(j)) return print_and_free(srv_record_json(j->result, j));
    bool chat = j->req.kind == RK_CHAT;
    srv_buf text = { 0 };
    final_content(j, &text);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", j->id);
    cJSON_AddStringToObject(o, "object", chat ? "chat.completion" : "text_completion");
    cJSON_AddNumberToObject(o, "created", (double)j->created);
    cJSON_AddStringToObject(o, "model", j->model_name ? j->model_name : "");
    cJSON *ch = cJSON_AddArrayToObject(o, "choices");
    cJSON *c = cJSON_CreateObject();
    cJSON_AddNumberToObject(c, "index", 0);
    if (chat) {
        cJSON *msg = cJSON_AddObjectToObject(c, "message");
        cJSON_AddStringToObject(msg, "role", "assistant");
        cJSON_AddItemToObject(msg, "content", text_json(text.s ? text.s : "", text.len));
    } else {
        cJSON_AddItemToObject(c, "text", text_json(text.s ? text.s : "", text.len));
    }
    cJSON_AddItemToObject(c, "logprobs", logprobs_json(j, 0, j->logprobs ? cJSON_GetArraySize(j->logprobs) : 0));
    cJSON_AddStringToObject(c, "finish_reason", finish_reason(j));
    if (j->req.tempo) cJSON_AddItemToObject(c, "tempo", tempo_extra(j));
    cJSON_AddItemToArray(ch, c);
    cJSON_AddItemToObject(o, "usage", usage_json(j));
    cJSON_AddItemToObject(o, "timings", timings_json(j));
    srv_buf_free(&text);
    return print_and_free(o);
}

void srv_final_stream(srv_job *j) {
    srv_buf *out = &j->out;
    if (!is_openai(j)) {
        char *text = NULL;
        if (j->failed) {
            text = srv_error_json(&j->err);
            srv_buf_printf(out, "event: error\ndata: %s\n\n", text ? text : "{}");
        } else {
            text = print_and_free(srv_record_json(j->result, j));
            srv_buf_printf(out, "event: done\ndata: %s\n\n", text ? text : "{}");
        }
        free(text);
        return;
    }
    if (j->failed) {
        char *e = srv_error_json(&j->err);
        srv_buf_printf(out, "data: %s\n\n", e ? e : "{}");
        free(e);
    } else {
        /* what was held back, then the chunk with the finish reason */
        cJSON *c = openai_chunk(j);
        cJSON *ch = cJSON_AddArrayToObject(c, "choices");
        size_t n = j->text.len > j->text_sent ? j->text.len - j->text_sent : 0;
        cJSON *choice = openai_choice(j, j->text.s ? j->text.s + j->text_sent : "", n, finish_reason(j), false);
        if (j->req.tempo && cJSON_GetArraySize(j->pending_prunes) > 0) {
            cJSON *x = cJSON_AddObjectToObject(choice, "tempo");
            cJSON_AddArrayToObject(x, "steps");
            cJSON_AddItemToObject(x, "prune", j->pending_prunes);
            j->pending_prunes = NULL;
        }
        cJSON_AddItemToArray(ch, choice);
        cJSON_AddItemToObject(c, "timings", timings_json(j));
        j->text_sent = j->text.len;
        char *s = print_and_free(c);
        srv_buf_printf(out, "data: %s\n\n", s ? s : "{}");
        free(s);
        if (j->req.include_usage) {
            c = openai_chunk(j);
            cJSON_AddArrayToObject(c, "choices");
            cJSON_AddItemToObject(c, "usage", usage_json(j));
            s = print_and_free(c);
            srv_buf_printf(out, "data: %s\n\n", s ? s : "{}");
            free(s);
        }
    }
    srv_buf_str(out, "data: [DONE]\n\n");
}
