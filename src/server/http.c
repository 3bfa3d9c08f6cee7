/* http.c: `tempo serve`: libmicrohttpd, the routes, the limits, and the process's life.
 *
 * libmicrohttpd runs one thread per connection (MHD_USE_THREAD_PER_CONNECTION), so a handler may
 * block: a generation request is parsed, handed to the scheduler (sched.c) and its connection's
 * thread waits for the job's events, polling the client's socket so that a client that goes away
 * cancels its job within one step. Streams are chunked responses whose reader callback waits for
 * the job's next bytes.
 *
 * The main thread opens the model, starts the scheduler and the daemon, prints the URL and waits
 * for SIGINT/SIGTERM (blocked in every thread, taken with sigwait); then it drains: no new
 * connections or jobs, running jobs get --drain-timeout seconds, the rest are cancelled, exit 0.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <malloc.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "server/server.h"

#define EXIT_USAGE 2
#define EXIT_RUNTIME 1

struct server {
    tempo_model *model;
    tempo_config defaults;       /* --config and flags: every request starts from these */
    srv_sched *sched;
    char model_name[256];
    const char *api_key, *cors;
    size_t max_body;
    int timeout_s;
    double drain_s;
    int parallel, queue;
    char bos_text[64];           /* the BOS token's text when the tokenizer adds one ("" otherwise) */
    atomic_uint ids;
    char instance[32];           /* X-Tempo-Instance: host process id and port */
    atomic_int inflight;         /* requests between their first call and their completion */
};

/* Per request (libmicrohttpd's con_cls). */
typedef struct server server;
typedef struct {
    srv_buf body;
    bool refused; /* a response was queued before the body arrived (413, 401...) */
    size_t skipped; /* bytes of a body over the limit, read and dropped */
    server *sv;
    double t0;
} conn_state;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---------------------------------------------------------------- replies -- */

static void common_headers(const server *sv, struct MHD_Response *r) {
    /* which replica answered, behind a load balancer */
    MHD_add_response_header(r, "X-Tempo-Instance", sv->instance);
    if (sv->cors) {
        MHD_add_response_header(r, "Access-Control-Allow-Origin", sv->cors);
        MHD_add_response_header(r, "Vary", "Origin");
    }
}

static enum MHD_Result reply(const server *sv, struct MHD_Connection *c, int status, const char *type, char *body) {
    struct MHD_Response *r = MHD_create_response_from_buffer(body ? strlen(body) : 0, body ? body : (char *)"",
                                                             body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!r) { free(body); return MHD_NO; }
    MHD_add_response_header(r, "Content-Type", type);
    common_headers(sv, r);
    if (status == 503) MHD_add_response_header(r, "Retry-After", "1");
    if (status == 401) MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result reply_json(const server *sv, struct MHD_Connection *c, int status, cJSON *doc) {
    char *s = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    if (!s) return MHD_NO;
    return reply(sv, c, status, "application/json", s);
}

static enum MHD_Result reply_error(const server *sv, struct MHD_Connection *c, const srv_error *e) {
    char *s = srv_error_json(e);
    if (!s) return MHD_NO;
    return reply(sv, c, e->status, "application/json", s);
}

static enum MHD_Result fail_reply(const server *sv, struct MHD_Connection *c, int status, const char *param,
                                  const char *code, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static enum MHD_Result fail_reply(const server *sv, struct MHD_Connection *c, int status, const char *param,
                                  const char *code, const char *fmt, ...) {
    srv_error e;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    srv_fail(&e, status, param, code, "%s", msg);
    return reply_error(sv, c, &e);
}

/* ------------------------------------------------------------- the client -- */

/* Did the client close its side (or reset)? Read bytes stay queued: poll only looks. */
static bool client_gone(int fd) {
    if (fd < 0) return false;
    struct pollfd p = { .fd = fd, .events = POLLRDHUP };
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

static int connection_fd(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

static void wait_tick(srv_job *j) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += 50 * 1000000L;
    if (until.tv_nsec >= 1000000000L) { until.tv_sec++; until.tv_nsec -= 1000000000L; }
    pthread_cond_timedwait(&j->cv, &j->mu, &until);
}

/* Wait (j->mu held) until the job reaches `state`, cancelling it if the client goes away. */
static void wait_state(srv_job *j, srv_job_state state) {
    while (j->state < state) {
        wait_tick(j);
        if (j->state < state && client_gone(j->fd)) atomic_store(&j->cancelled, 1);
    }
}

/* The stream's reader: the job's bytes as they come; the end when the job is over. */
static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    srv_job *j = cls;
    pthread_mutex_lock(&j->mu);
    for (;;) {
        if (j->out_sent < j->out.len) {
            size_t n = j->out.len - j->out_sent;
            if (n > max) n = max;
            memcpy(buf, j->out.s + j->out_sent, n);
            j->out_sent += n;
            if (j->out_sent == j->out.len) j->out_sent = j->out.len = 0; /* reuse the buffer */
            pthread_mutex_unlock(&j->mu);
            return (ssize_t)n;
        }
        if (j->state == J_DONE) {
            if (!j->final_sent) {
                j->final_sent = true;
                srv_final_stream(j);
                continue;
            }
            pthread_mutex_unlock(&j->mu);
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        wait_tick(j);
        if (j->state != J_DONE && j->out_sent == j->out.len && client_gone(j->fd)) {
            atomic_store(&j->cancelled, 1);
            pthread_mutex_unlock(&j->mu);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
}

/* The response is gone (sent, or the client left): a job still running is cancelled. */
static void sse_free(void *cls) {
    srv_job *j = cls;
    atomic_store(&j->cancelled, 1);
    srv_job_unref(j);
}

/* ------------------------------------------------------------ generation -- */

/* "<s>" when the tokenizer adds it: a chat template's text may start with it too. */
static const char *skip_bos(const server *sv, const char *text) {
    size_t n = strlen(sv->bos_text);
    return n && !strncmp(text, sv->bos_text, n) ? text + n : text;
}

static char *chat_prompt(server *sv, srv_request *q, srv_error *err) {
    tempo_chat_message *msgs = q->msgs;
    size_t n = q->n_msgs;
    tempo_chat_message *with = NULL;
    if (q->cfg.gen.enable_thinking) {
        /* the thinking system message goes first, rendered with the rest (not wrapped twice) */
        with = calloc(n + 1, sizeof *with);
        if (!with) { srv_fail(err, 500, NULL, NULL, "out of memory"); return NULL; }
        with[0] = (tempo_chat_message){ "system", "Enable deep thinking subroutine." };
        memcpy(with + 1, msgs, n * sizeof *msgs);
        msgs = with;
        n++;
        q->cfg.gen.enable_thinking = false;
    }
    tempo_error te;
    char *text = tempo_chat_apply(sv->model, q->cfg.gen.chat_template, msgs, n, true, &te);
    free(with);
    if (!text) {
        srv_fail(err, 400, q->cfg.gen.chat_template[0] ? "chat_template" : "messages", "chat_template", "%s", te.message);
        return NULL;
    }
    char *out = strdup(skip_bos(sv, text));
    free(text);
    if (!out) srv_fail(err, 500, NULL, NULL, "out of memory");
    return out;
}

/* A generation request of any API. stream_route: /api/generate/stream (a stream whatever the body). */
static enum MHD_Result generate(server *sv, struct MHD_Connection *c, srv_kind kind, bool stream_route, const char *body,
                                size_t len) {
    srv_job *j = srv_job_new();
    if (!j) return fail_reply(sv, c, 500, NULL, NULL, "out of memory");
    srv_error err;
    if (srv_parse_request(kind, body, len, &sv->defaults, &j->req, &err)) {
        srv_job_unref(j);
        return reply_error(sv, c, &err);
    }
    if (stream_route) j->req.stream = true;
    if (kind == RK_CHAT) j->prompt = chat_prompt(sv, &j->req, &err);
    else if (!(j->prompt = strdup(j->req.cfg.prompt ? j->req.cfg.prompt : ""))) srv_fail(&err, 500, NULL, NULL, "out of memory");
    if (!j->prompt) {
        srv_job_unref(j);
        return reply_error(sv, c, &err);
    }
    const char *prefix = kind == RK_COMPLETION ? "cmpl" : kind == RK_CHAT ? "chatcmpl" : "gen";
    snprintf(j->id, sizeof j->id, "%s-%x%08x", prefix, atomic_fetch_add(&sv->ids, 1), (unsigned)rand());
    j->model_name = sv->model_name;
    j->model = sv->model;
    j->fd = connection_fd(c);
    if (srv_sched_submit(sv->sched, j, &err)) {
        srv_job_unref(j);
        return reply_error(sv, c, &err);
    }
    pthread_mutex_lock(&j->mu);
    if (!j->req.stream) {
        wait_state(j, J_DONE);
        pthread_mutex_unlock(&j->mu);
        char *s = srv_final_json(j);
        int status = j->failed ? j->err.status : 200;
        srv_job_unref(j);
        if (!s) return fail_reply(sv, c, 500, NULL, NULL, "out of memory building the response");
        return reply(sv, c, status, "application/json", s);
    }
    /* Stream: errors before the first step are plain HTTP errors. */
    wait_state(j, J_RUNNING);
    if (j->state == J_DONE && j->failed && !j->result) {
        srv_error e = j->err;
        pthread_mutex_unlock(&j->mu);
        srv_job_unref(j);
        return reply_error(sv, c, &e);
    }
    pthread_mutex_unlock(&j->mu);
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, sse_read, j, sse_free);
    if (!r) { sse_free(j); return MHD_NO; }
    MHD_add_response_header(r, "Content-Type", "text/event-stream");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no"); /* nginx: pass events at once */
    common_headers(sv, r);
    enum MHD_Result ok = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ok;
}

/* ---------------------------------------------------------- small routes -- */

static enum MHD_Result health(server *sv, struct MHD_Connection *c) {
    tempo_memory_stats ms;
    tempo_memory_get_stats(tempo_model_memory(sv->model), &ms);
    tempo_model_info info;
    tempo_model_get_info(sv->model, &info);
    srv_sched_stats st;
    srv_sched_stats_get(sv->sched, &st);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", st.draining ? "draining" : "ok");
    cJSON_AddStringToObject(o, "model", sv->model_name);
    cJSON *m = cJSON_AddObjectToObject(o, "memory");
    cJSON_AddNumberToObject(m, "used_gb", ms.weights_gb + ms.kv_gb + ms.work_gb);
    cJSON_AddNumberToObject(m, "limit_gb", info.max_memory_gb);
    cJSON_AddNumberToObject(m, "kv_gb", ms.kv_gb);
    cJSON_AddNumberToObject(m, "weights_gb", ms.weights_gb);
    cJSON_AddNumberToObject(m, "rss_gb", ms.process_rss_gb);
    cJSON *s = cJSON_AddObjectToObject(o, "sessions");
    cJSON_AddNumberToObject(s, "busy", st.busy);
    cJSON_AddNumberToObject(s, "free", st.free);
    cJSON_AddNumberToObject(s, "queued", st.queued);
    cJSON_AddNumberToObject(s, "parallel", st.parallel);
    return reply_json(sv, c, 200, o);
}

static enum MHD_Result models(server *sv, struct MHD_Connection *c) {
    tempo_model_info info;
    tempo_model_get_info(sv->model, &info);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON *d = cJSON_AddArrayToObject(o, "data");
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", sv->model_name);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", 0);
    cJSON_AddStringToObject(m, "owned_by", "tempo");
    cJSON *meta = cJSON_AddObjectToObject(m, "meta");
    cJSON_AddNumberToObject(meta, "n_vocab", info.n_vocab);
    cJSON_AddNumberToObject(meta, "n_ctx", info.n_ctx);
    cJSON_AddNumberToObject(meta, "n_layers", info.n_layers);
    cJSON_AddNumberToObject(meta, "dim", info.dim);
    cJSON_AddItemToArray(d, m);
    return reply_json(sv, c, 200, o);
}

/* A small JSON body with known fields, for /tokenize and /detokenize. */
static cJSON *small_body(server *sv, struct MHD_Connection *c, const char *body, size_t len, const char *const *fields,
                         enum MHD_Result *ret) {
    cJSON *doc = cJSON_ParseWithLength(body, len);
    if (!cJSON_IsObject(doc)) {
        cJSON_Delete(doc);
        *ret = fail_reply(sv, c, 400, NULL, "invalid_json", "the body must be a JSON object");
        return NULL;
    }
    const cJSON *f;
    cJSON_ArrayForEach(f, doc) {
        bool known = false;
        for (const char *const *k = fields; *k; k++) known |= !strcmp(*k, f->string);
        if (!known) {
            *ret = fail_reply(sv, c, 400, f->string, "unknown_field", "unknown field '%s'", f->string);
            cJSON_Delete(doc);
            return NULL;
        }
    }
    return doc;
}

static int opt_bool(const cJSON *doc, const char *key, bool def, bool *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, key);
    if (!v) { *out = def; return 0; }
    if (!cJSON_IsBool(v)) return -1;
    *out = cJSON_IsTrue(v);
    return 0;
}

static enum MHD_Result tokenize(server *sv, struct MHD_Connection *c, const char *body, size_t len) {
    static const char *const fields[] = { "content", "add_special", "with_pieces", NULL };
    enum MHD_Result ret = MHD_NO;
    cJSON *doc = small_body(sv, c, body, len, fields, &ret);
    if (!doc) return ret;
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(doc, "content");
    bool bos, pieces;
    if (!cJSON_IsString(content)) ret = fail_reply(sv, c, 400, "content", "invalid_type", "content: expected a string");
    else if (opt_bool(doc, "add_special", true, &bos)) ret = fail_reply(sv, c, 400, "add_special", "invalid_type", "add_special: expected a boolean");
    else if (opt_bool(doc, "with_pieces", false, &pieces)) ret = fail_reply(sv, c, 400, "with_pieces", "invalid_type", "with_pieces: expected a boolean");
    else {
        size_t n = strlen(content->valuestring);
        int cap = (int)n + 8;
        int32_t *ids = malloc(sizeof(int32_t) * (size_t)cap);
        int got = ids ? tempo_tokenize(sv->model, content->valuestring, bos, ids, cap) : -1;
        if (got < 0 || got > cap) ret = fail_reply(sv, c, 400, "content", "invalid_value", "could not tokenize the content");
        else {
            cJSON *o = cJSON_CreateObject(), *a = cJSON_AddArrayToObject(o, "tokens");
            for (int i = 0; i < got; i++) {
                if (!pieces) { cJSON_AddItemToArray(a, cJSON_CreateNumber(ids[i])); continue; }
                cJSON *t = cJSON_CreateObject();
                char *p = tempo_token_text(sv->model, ids[i]);
                char *shown = p ? tempo_token_display(p) : NULL;
                cJSON_AddNumberToObject(t, "id", ids[i]);
                cJSON_AddStringToObject(t, "piece", shown ? shown : "");
                free(p);
                free(shown);
                cJSON_AddItemToArray(a, t);
            }
            ret = reply_json(sv, c, 200, o);
        }
        free(ids);
    }
    cJSON_Delete(doc);
    return ret;
}

static enum MHD_Result detokenize(server *sv, struct MHD_Connection *c, const char *body, size_t len) {
    static const char *const fields[] = { "tokens", NULL };
    enum MHD_Result ret = MHD_NO;
    cJSON *doc = small_body(sv, c, body, len, fields, &ret);
    if (!doc) return ret;
    const cJSON *toks = cJSON_GetObjectItemCaseSensitive(doc, "tokens");
    tempo_model_info info;
    tempo_model_get_info(sv->model, &info);
    int n = cJSON_IsArray(toks) ? cJSON_GetArraySize(toks) : -1;
    int32_t *ids = n > 0 ? malloc(sizeof(int32_t) * (size_t)n) : NULL;
    if (n < 0) ret = fail_reply(sv, c, 400, "tokens", "invalid_type", "tokens: expected an array of token ids");
    else if (n > 0 && !ids) ret = fail_reply(sv, c, 500, NULL, NULL, "out of memory");
    else {
        int i = 0;
        const cJSON *t;
        bool ok = true;
        cJSON_ArrayForEach(t, toks) {
            if (!cJSON_IsNumber(t) || t->valuedouble != (double)(int32_t)t->valuedouble || t->valuedouble < 0 ||
                t->valuedouble >= info.n_vocab) {
                ret = fail_reply(sv, c, 400, "tokens", "invalid_value", "tokens[%d]: not a token id (0..%d)", i, info.n_vocab - 1);
                ok = false;
                break;
            }
            ids[i++] = (int32_t)t->valuedouble;
        }
        if (ok) {
            char *text = n ? tempo_detokenize(sv->model, ids, n) : strdup("");
            char *shown = text ? tempo_token_display(text) : NULL;
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "content", shown ? shown : "");
            free(text);
            free(shown);
            ret = reply_json(sv, c, 200, o);
        }
    }
    free(ids);
    cJSON_Delete(doc);
    return ret;
}

static enum MHD_Result asset(server *sv, struct MHD_Connection *c, const char *url) {
    if (!strcmp(url, "/")) url = "/index.html";
    for (size_t i = 0; i < tempo_web_assets_count; i++) {
        const tempo_web_asset *a = &tempo_web_assets[i];
        if (strcmp(a->path, url)) continue;
        struct MHD_Response *r = MHD_create_response_from_buffer(a->size, (void *)a->data, MHD_RESPMEM_PERSISTENT);
        if (!r) return MHD_NO;
        MHD_add_response_header(r, "Content-Type", a->mime);
        MHD_add_response_header(r, "Cache-Control",
                                strncmp(url, "/assets/", 8) ? "no-cache" : "public, max-age=31536000, immutable");
        common_headers(sv, r);
        enum MHD_Result ok = MHD_queue_response(c, 200, r);
        MHD_destroy_response(r);
        return ok;
    }
    return fail_reply(sv, c, 404, NULL, "not_found", "no such path: %s", url);
}

/* ------------------------------------------------------------- dispatch -- */

typedef enum { R_NONE, R_HEALTH, R_MODELS, R_COMPLETIONS, R_CHAT, R_GENERATE, R_STREAM, R_BRANCH, R_TOKENIZE, R_DETOKENIZE, R_ASSET } route_id;

static const struct { const char *path; const char *method; route_id id; } routes[] = {
    { "/health", "GET", R_HEALTH },
    { "/v1/models", "GET", R_MODELS },
    { "/v1/completions", "POST", R_COMPLETIONS },
    { "/v1/chat/completions", "POST", R_CHAT },
    { "/api/generate", "POST", R_GENERATE },
    { "/api/generate/stream", "POST", R_STREAM },
    { "/api/branch", "POST", R_BRANCH },
    { "/tokenize", "POST", R_TOKENIZE },
    { "/detokenize", "POST", R_DETOKENIZE },
};

static route_id find_route(const char *url, const char **method) {
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (!strcmp(url, routes[i].path)) { *method = routes[i].method; return routes[i].id; }
    *method = "GET";
    for (size_t i = 0; i < tempo_web_assets_count; i++)
        if (!strcmp(url, tempo_web_assets[i].path)) return R_ASSET;
    return !strcmp(url, "/") ? R_ASSET : R_NONE;
}

/* Constant time for equal lengths: the key is not guessed byte by byte from timings. */
static bool key_ok(const server *sv, struct MHD_Connection *c) {
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7)) return false;
    h += 7;
    size_t a = strlen(h), b = strlen(sv->api_key);
    unsigned char diff = a != b;
    for (size_t i = 0; i < a && i < b; i++) diff |= (unsigned char)(h[i] ^ sv->api_key[i]);
    return diff == 0;
}

static enum MHD_Result dispatch(server *sv, struct MHD_Connection *c, route_id id, const char *url, const char *body,
                                size_t len) {
    switch (id) {
    case R_HEALTH: return health(sv, c);
    case R_MODELS: return models(sv, c);
    case R_COMPLETIONS: return generate(sv, c, RK_COMPLETION, false, body, len);
    case R_CHAT: return generate(sv, c, RK_CHAT, false, body, len);
    case R_GENERATE: return generate(sv, c, RK_GENERATE, false, body, len);
    case R_STREAM: return generate(sv, c, RK_GENERATE, true, body, len);
    case R_BRANCH: return generate(sv, c, RK_BRANCH, false, body, len);
    case R_TOKENIZE: return tokenize(sv, c, body, len);
    case R_DETOKENIZE: return detokenize(sv, c, body, len);
    case R_ASSET: return asset(sv, c, url);
    case R_NONE: break;
    }
    return fail_reply(sv, c, 404, NULL, "not_found", "no such path: %s", url);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    (void)version;
    server *sv = cls;
    conn_state *st = *con_cls;
    const char *want;
    route_id id = find_route(url, &want);
    if (!st) { /* first call: headers only; refuse early what will be refused anyway */
        st = calloc(1, sizeof *st);
        if (!st) return MHD_NO;
        st->t0 = now_s();
        st->sv = sv;
        atomic_fetch_add(&sv->inflight, 1);
        *con_cls = st;
        if (sv->cors && !strcmp(method, "OPTIONS")) {
            struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
            common_headers(sv, r);
            MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
            MHD_add_response_header(r, "Access-Control-Allow-Headers", "Authorization, Content-Type");
            MHD_add_response_header(r, "Access-Control-Max-Age", "600");
            st->refused = true;
            enum MHD_Result ok = MHD_queue_response(c, 204, r);
            MHD_destroy_response(r);
            return ok;
        }
        st->refused = true;
        if (id == R_NONE) return fail_reply(sv, c, 404, NULL, "not_found", "no such path: %s", url);
        if (strcmp(method, want)) return fail_reply(sv, c, 405, NULL, "method_not_allowed", "%s takes %s, not %s", url, want, method);
        if (sv->api_key && id != R_HEALTH && id != R_ASSET && !key_ok(sv, c))
            return fail_reply(sv, c, 401, NULL, "invalid_api_key", "missing or wrong API key (send Authorization: Bearer KEY)");
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > sv->max_body)
            return fail_reply(sv, c, 413, NULL, "body_too_large", "the body is %s bytes, over the limit of %zu", cl, sv->max_body);
        st->refused = false;
        return MHD_YES;
    }
    if (st->refused) { *upload_size = 0; return MHD_YES; }
    if (*upload_size) {
        if (st->body.len + st->skipped + *upload_size > sv->max_body) {
            /* libmicrohttpd sends a response only once the body is read: skip the rest (a
             * chunked body has no Content-Length to refuse it by), up to a bound */
            st->skipped += *upload_size;
            *upload_size = 0;
            srv_buf_free(&st->body);
            return st->skipped > 16 * sv->max_body + (64u << 20) ? MHD_NO : MHD_YES;
        }
        srv_buf_add(&st->body, upload, *upload_size);
        *upload_size = 0;
        if (st->body.oom) { st->refused = true; return fail_reply(sv, c, 500, NULL, NULL, "out of memory reading the body"); }
        return MHD_YES;
    }
    if (st->skipped)
        return fail_reply(sv, c, 413, NULL, "body_too_large", "the body is over the limit of %zu bytes", sv->max_body);
    return dispatch(sv, c, id, url, st->body.s ? st->body.s : "", st->body.len);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode why) {
    (void)cls;
    (void)c;
    (void)why;
    conn_state *st = *con_cls;
    if (!st) return;
    srv_buf_free(&st->body);
    server *sv = st->sv;
    free(st);
    /* the last request in flight is done: give what it freed back to the system */
    if (atomic_fetch_sub(&sv->inflight, 1) == 1) tempo_memory_free_memory(tempo_model_memory(sv->model));
    *con_cls = NULL;
}

/* ---------------------------------------------------------------- options -- */

static int fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(int code, const char *fmt, ...) {
    va_list ap;
    fputs("tempo serve: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return code;
}

static void log_to_stderr(tempo_log_level level, const char *text, void *user) {
    (void)level;
    (void)user;
    fprintf(stderr, "%s\n", text);
}

typedef struct {
    const char *host;
    long port, parallel, queue, max_body, timeout;
    double drain;
    const char *api_key, *cors, *config;
} serve_opts;

static void serve_usage(FILE *f) {
    fprintf(f,
            "usage: tempo serve --model PATH [--host 127.0.0.1] [--port 8765] [--parallel N] [--api-key KEY]\n"
            "                   [--max-memory-gb X] [--config FILE] [--chat-template NAME] [options]\n\n"
            "An HTTP server: the OpenAI API (/v1/completions, /v1/chat/completions, /v1/models) and TEMPO's\n"
            "(/api/generate, /api/generate/stream, /api/branch, /tokenize, /detokenize, /health); see docs/server.md.\n\n"
            "  --host ADDR            address to bind (default 127.0.0.1: this machine only)\n"
            "  --port N               port (default 8765; 0 picks a free one and prints it)\n"
            "  --parallel N           requests run at once, batched together (default 4, at most 64)\n"
            "  --queue N              requests that may wait for a free slot; more get 503 (default 16)\n"
            "  --api-key KEY          require Authorization: Bearer KEY (all but /health and the page)\n"
            "  --cors ORIGIN          allow browsers from ORIGIN (default: no CORS headers)\n"
            "  --max-body-bytes N     larger request bodies get 413 (default 1048576)\n"
            "  --timeout S            drop a connection idle this long, e.g. a half-sent request (default 30)\n"
            "  --drain-timeout S      on SIGINT/SIGTERM, let running requests finish this long (default 10)\n"
            "  --config FILE          YAML defaults for every request (as for the CLI)\n"
            "  --chat-template NAME   chat format of /v1/chat/completions (default: the model's)\n"
            "  every generation option of `tempo --help` sets the default of every request\n");
}

static int parse_long(const char *flag, const char *v, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (end == v || *end || errno || x < lo || x > hi)
        return fail(EXIT_USAGE, "%s: expected an integer in [%ld, %ld], got '%s'", flag, lo, hi, v);
    *out = x;
    return 0;
}

/* Serve's own flags into o, every other flag through the option table into cfg. */
static int parse_args(int argc, char **argv, serve_opts *o, tempo_config *cfg) {
    tempo_error err;
    /* --config first, so flags override it wherever they appear */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config")) {
            if (i + 1 >= argc) return fail(EXIT_USAGE, "--config needs a file");
            o->config = argv[++i];
        } else if (!strncmp(argv[i], "--config=", 9)) {
            o->config = argv[i] + 9;
        }
    }
    if (o->config && tempo_config_load_yaml(cfg, o->config, &err)) return fail(EXIT_USAGE, "%s", err.message);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) || !a[2]) return fail(EXIT_USAGE, "unexpected argument '%s' (see tempo serve --help)", a);
        char key[128];
        size_t k = 0;
        const char *eq = strchr(a, '=');
        for (const char *p = a + 2; *p && p != eq && k + 1 < sizeof key; p++) key[k++] = *p == '-' ? '_' : *p;
        key[k] = 0;
        if (!strcmp(key, "config")) { if (!eq) i++; continue; }
        int type = tempo_option_type(key);
        bool own = !strcmp(key, "host") || !strcmp(key, "port") || !strcmp(key, "parallel") || !strcmp(key, "queue") ||
                   !strcmp(key, "api_key") || !strcmp(key, "cors") || !strcmp(key, "max_body_bytes") ||
                   !strcmp(key, "timeout") || !strcmp(key, "drain_timeout");
        if (!own && type < 0) return fail(EXIT_USAGE, "unknown option '%.*s' (see tempo serve --help)", eq ? (int)(eq - a) : (int)strlen(a), a);
        const char *v;
        if (eq) v = eq + 1;
        else if (!own && type == TEMPO_OPT_BOOL) v = "true";
        else if (i + 1 < argc) v = argv[++i];
        else return fail(EXIT_USAGE, "%s needs a value", a);
        int rc = 0;
        if (!strcmp(key, "host")) o->host = v;
        else if (!strcmp(key, "port")) rc = parse_long("--port", v, 0, 65535, &o->port);
        else if (!strcmp(key, "parallel")) rc = parse_long("--parallel", v, 1, 64, &o->parallel);
        else if (!strcmp(key, "queue")) rc = parse_long("--queue", v, 0, 100000, &o->queue);
        else if (!strcmp(key, "max_body_bytes")) rc = parse_long("--max-body-bytes", v, 64, 1L << 30, &o->max_body);
        else if (!strcmp(key, "timeout")) rc = parse_long("--timeout", v, 1, 86400, &o->timeout);
        else if (!strcmp(key, "drain_timeout")) {
            long d;
            rc = parse_long("--drain-timeout", v, 0, 86400, &d);
            o->drain = (double)d;
        } else if (!strcmp(key, "api_key")) {
            if (!*v) return fail(EXIT_USAGE, "--api-key: the key is empty");
            o->api_key = v;
        } else if (!strcmp(key, "cors")) o->cors = v;
        else if (tempo_config_set(cfg, key, v, &err)) return fail(EXIT_USAGE, "%s", err.message);
        if (rc) return rc;
    }
    if (tempo_config_validate(cfg, &err)) return fail(EXIT_USAGE, "%s", err.message);
    if (!cfg->model || !*cfg->model) return fail(EXIT_USAGE, "no model given (use --model PATH)");
    return 0;
}

/* A listening socket on host:port (port 0: the system picks one); its port in *bound. */
static int listen_on(const char *host, long port, int *bound, char *url, size_t cap) {
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
    struct addrinfo *res = NULL;
    char ps[16];
    snprintf(ps, sizeof ps, "%ld", port);
    int gai = getaddrinfo(host, ps, &hints, &res);
    if (gai) return fail(EXIT_USAGE, "--host %s: %s", host, gai_strerror(gai)) ? -1 : -1;
    int fd = -1, last = 0;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) { last = errno; continue; }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) || listen(fd, 128)) {
            last = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) { fail(EXIT_RUNTIME, "cannot listen on %s:%ld: %s", host, port, strerror(last)); return -1; }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    char addr[INET6_ADDRSTRLEN] = "";
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &s6->sin6_addr, addr, sizeof addr);
        *bound = ntohs(s6->sin6_port);
        snprintf(url, cap, "http://[%s]:%d", addr, *bound);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &s4->sin_addr, addr, sizeof addr);
        *bound = ntohs(s4->sin_port);
        snprintf(url, cap, "http://%s:%d", addr, *bound);
    }
    return fd;
}

/* ------------------------------------------------------------------- main -- */

int tempo_serve_main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { serve_usage(stdout); return 0; }
    serve_opts o = { .host = "127.0.0.1", .port = 8765, .parallel = 4, .queue = 16, .max_body = 1L << 20,
                     .timeout = 30, .drain = 10 };
    server sv;
    memset(&sv, 0, sizeof sv);
    tempo_config_init(&sv.defaults);
    int rc = parse_args(argc, argv, &o, &sv.defaults);
    if (rc) { tempo_config_free(&sv.defaults); return rc; }

    /* Signals are taken by the main thread only (sigwait): block them before any thread starts. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* A thread per connection and a pool per session: with glibc's default of one malloc arena
     * per thread (up to 8 per core) freed memory spreads over arenas and the resident set creeps
     * up request after request; two arenas keep it flat (the compute threads hardly allocate). */
    mallopt(M_ARENA_MAX, 2);
    tempo_log_set(log_to_stderr, NULL);
    srand((unsigned)time(NULL) ^ (unsigned)getpid());

    tempo_error err;
    sv.model = tempo_model_open(sv.defaults.model, &sv.defaults.model_params, &err);
    if (!sv.model) { tempo_config_free(&sv.defaults); return fail(err.code == TEMPO_ERR_ARG ? EXIT_USAGE : EXIT_RUNTIME, "%s", err.message); }
    const char *slash = strrchr(sv.defaults.model, '/');
    const char *base = slash && slash[1] ? slash + 1 : sv.defaults.model;
    snprintf(sv.model_name, sizeof sv.model_name, "%s", base);
    /* The chat format: a named one that does not exist is a usage error; a model template that
     * is not recognised only fails chat requests (completions still work). */
    const char *forced = sv.defaults.gen.chat_template[0] ? sv.defaults.gen.chat_template : NULL;
    const char *fmt = tempo_chat_format_of(sv.model, forced, &err);
    if (!fmt && forced) {
        tempo_model_close(sv.model);
        tempo_config_free(&sv.defaults);
        return fail(EXIT_USAGE, "%s", err.message);
    }
    if (!fmt) fprintf(stderr, "tempo serve: warning: /v1/chat/completions will fail: %s\n", err.message);
    int32_t bos[4];
    if (tempo_tokenize(sv.model, "", true, bos, 4) == 1) {
        char *t = tempo_token_text(sv.model, bos[0]);
        if (t) snprintf(sv.bos_text, sizeof sv.bos_text, "%s", t);
        free(t);
    }
    sv.api_key = o.api_key;
    sv.cors = o.cors;
    sv.max_body = (size_t)o.max_body;
    sv.parallel = (int)o.parallel;
    sv.queue = (int)o.queue;
    atomic_init(&sv.ids, 1);

    char msg[256];
    sv.sched = srv_sched_new(sv.model, sv.parallel, sv.queue, msg, sizeof msg);
    int port = 0, lfd = -1;
    char url[128];
    struct MHD_Daemon *d = NULL;
    if (!sv.sched) { rc = fail(EXIT_RUNTIME, "%s", msg); goto out; }
    lfd = listen_on(o.host, o.port, &port, url, sizeof url);
    if (lfd < 0) { rc = EXIT_RUNTIME; goto out; }
    snprintf(sv.instance, sizeof sv.instance, "%ld:%d", (long)getpid(), port);
    d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ITC, 0, NULL, NULL,
                         on_request, &sv, MHD_OPTION_LISTEN_SOCKET, lfd, MHD_OPTION_NOTIFY_COMPLETED, on_completed, &sv,
                         MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)o.timeout, MHD_OPTION_CONNECTION_LIMIT, 512u,
                         MHD_OPTION_END);
    if (!d) { rc = fail(EXIT_RUNTIME, "cannot start the HTTP server on %s", url); close(lfd); goto out; }
    tempo_model_info info;
    tempo_model_get_info(sv.model, &info);
    fprintf(stderr, "tempo serve: %s, %d requests at once, %d threads, chat format %s\n", sv.model_name, sv.parallel,
            info.threads, fmt ? fmt : "(none)");
    printf("tempo: listening on %s\n", url);
    fflush(stdout);

    int sig = 0;
    sigwait(&sigs, &sig);
    fprintf(stderr, "tempo serve: %s: draining (at most %.0f s)\n", sig == SIGINT ? "SIGINT" : "SIGTERM", o.drain);
    srv_sched_drain(sv.sched);
    int qfd = MHD_quiesce_daemon(d); /* no new connections */
    if (qfd >= 0) close(qfd);
    double t_drain = now_s();
    if (srv_sched_wait_idle(sv.sched, o.drain) > 0) {
        srv_sched_cancel_all(sv.sched);
        srv_sched_wait_idle(sv.sched, 30);
    }
    /* the answers of the last jobs are still being sent: let them go out */
    while (atomic_load(&sv.inflight) > 0 && now_s() - t_drain < o.drain + 5) usleep(10000);
    MHD_stop_daemon(d);
    fprintf(stderr, "tempo serve: stopped\n");
    rc = 0;
out:
    srv_sched_free(sv.sched);
    tempo_model_close(sv.model);
    tempo_config_free(&sv.defaults);
    return rc;
}
