/* server.h: what the files of `tempo serve` share (docs/server.md is the contract).
 *
 *   request.c  bytes of a request body -> srv_request, or an error naming the field (pure: no model,
 *              no threads; tests/fuzz/fuzz_server_body.c feeds it anything)
 *   sched.c    the scheduler thread: owns the sessions of running requests, prefills new ones and
 *              advances all of them one step per tick in one batched forward
 *   respond.c  what a job says: per-step hooks (on the scheduler thread) and the final documents
 *              (OpenAI objects, the TEMPO record with its graph, SSE events)
 *   http.c     libmicrohttpd: routing, limits, API key, CORS, streaming, signals, tempo_serve_main
 *
 * Only include/tempo.h of the library is used: the server is an application like the CLI.
 */
#ifndef TEMPO_SERVER_H
#define TEMPO_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "server/serve.h"
#include "tempo.h"

/* ------------------------------------------------------------------ errors -- */
typedef struct {
    int status;          /* HTTP status */
    const char *type;    /* "invalid_request_error", "authentication_error", "server_error" */
    char param[64];      /* the field at fault, or "" */
    const char *code;    /* "invalid_value", "context_length_exceeded", ... or NULL */
    char message[TEMPO_ERR_LEN + 128];
} srv_error;

int srv_fail(srv_error *e, int status, const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* {"error": {...}} as text (malloc'ed). */
char *srv_error_json(const srv_error *e);

/* ---------------------------------------------------------------- requests -- */
typedef enum { RK_COMPLETION, RK_CHAT, RK_GENERATE, RK_BRANCH } srv_kind;

#define SRV_MAX_STOP 4
#define SRV_MAX_TOP_LOGPROBS 20

typedef struct {
    srv_kind kind;
    bool stream;            /* SSE (OpenAI chunks, or TEMPO events) */
    bool tempo;             /* TEMPO mode: the OpenAI answer carries the `tempo` field */
    tempo_config cfg;       /* the server's defaults with the request's fields applied; cfg.prompt */
    bool show_token_ids;
    /* chat (rendered later, with the model) */
    tempo_chat_message *msgs;
    size_t n_msgs;
    /* OpenAI */
    char *stop[SRV_MAX_STOP];
    int n_stop;
    int logprobs;           /* -1: none; else the number of alternatives per token (0..20) */
    bool include_usage;
    /* branch */
    int32_t **path;         /* path[k]: step k's set */
    int *path_n;
    int path_len;
    int branch_step;
    int32_t branch_token;
    char *original_body;    /* /api/branch: its "request" object, echoed nowhere but kept for the record */
} srv_request;

/* Parse one request body of a kind. defaults: the server's configuration (copied into out->cfg
 * first). Returns 0, or -1 with err (status 400 and the field). out must be freed with
 * srv_request_free in both cases. Pure: safe on any bytes (the fuzz harness's entry). */
int srv_parse_request(srv_kind kind, const char *body, size_t len, const tempo_config *defaults, srv_request *out,
                      srv_error *err);
void srv_request_free(srv_request *r);
/* A deep copy of a configuration (strings duplicated). */
int srv_config_copy(tempo_config *dst, const tempo_config *src);

/* -------------------------------------------------------------- text buffer -- */
typedef struct {
    char *s;
    size_t len, cap;
    bool oom;
} srv_buf;
void srv_buf_add(srv_buf *b, const char *data, size_t n);
void srv_buf_str(srv_buf *b, const char *s);
void srv_buf_printf(srv_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void srv_buf_free(srv_buf *b);

/* -------------------------------------------------------------------- jobs -- */
typedef enum { J_QUEUED = 0, J_RUNNING, J_DONE } srv_job_state;

typedef struct srv_job {
    srv_request req;
    char *prompt;           /* the text to prefill (the rendered chat for RK_CHAT) */
    char id[40];            /* "cmpl-...", "chatcmpl-...", "gen-..." */
    long created;           /* unix time */
    const char *model_name;
    tempo_model *model;     /* for token texts (any-thread functions only) */

    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;
    atomic_int cancelled;   /* the client went away, or the server is draining past its limit */
    srv_job_state state;
    bool failed;            /* could not start (err), or failed while running */
    srv_error err;
    tempo_result *result;   /* when done (NULL if it never started) */
    srv_buf out;            /* streamed bytes the connection has not sent yet */
    size_t out_sent;
    bool final_sent;        /* srv_final_stream ran */
    int fd;                 /* the client's socket: polled to see it go away */

    /* Written by the scheduler thread only; read by the connection after J_DONE. */
    tempo_session *s;
    int n_prompt_tokens;
    int n_done_steps;       /* steps reported so far */
    srv_buf text;           /* OpenAI: the content so far (most probable member of each step) */
    size_t text_sent;       /* bytes of text streamed */
    bool stop_hit;          /* a stop string ended the text at text.len */
    bool finish_now;        /* end the run after this step (stop string) */
    cJSON *logprobs;        /* per content token: {id, text, logprob, top: [[id, lp]...]} */
    cJSON *prunes;          /* every pruning event, in order */
    cJSON *pending_prunes;  /* stream: events not sent yet */
    double t_admitted, t_prefilled, t_last_step; /* CLOCK_MONOTONIC seconds, for "timings" */
} srv_job;

srv_job *srv_job_new(void);
void srv_job_ref(srv_job *j);
void srv_job_unref(srv_job *j);
/* Under j->mu: append streamed bytes and wake the connection. */
void srv_job_emit(srv_job *j, const char *data, size_t n);

/* --------------------------------------------------------------- scheduler -- */
typedef struct srv_sched srv_sched;

typedef struct {
    int busy, free, queued, parallel;
    bool draining;
} srv_sched_stats;

srv_sched *srv_sched_new(tempo_model *m, int parallel, int queue, char *err, size_t errcap);
/* Hand a job over (takes a reference). -1 with err (503) when the queue is full or draining. */
int srv_sched_submit(srv_sched *sc, srv_job *j, srv_error *err);
void srv_sched_stats_get(srv_sched *sc, srv_sched_stats *st);
/* Stop taking new jobs; running ones go on. */
void srv_sched_drain(srv_sched *sc);
/* Wait until no job runs or waits, at most timeout_s; returns the jobs left. */
int srv_sched_wait_idle(srv_sched *sc, double timeout_s);
/* Cancel every running and queued job. */
void srv_sched_cancel_all(srv_sched *sc);
/* Join the thread and free (after everything is done). */
void srv_sched_free(srv_sched *sc);

/* ----------------------------------------------------------------- respond -- */
/* Scheduler-thread hooks. on_start: after a successful prefill; on_step: after each step call
 * (rc as tempo_session_step), before the next tick; on_end: when the run is over (result set). */
void srv_on_start(srv_job *j);
/* Returns -1 with j->err set when the job must fail (a branch whose path cannot be replayed). */
int srv_on_step(srv_job *j, int rc, const tempo_step_info *st);

/* Connection side: the whole answer of a finished non-streaming job (JSON text, malloc'ed). */
char *srv_final_json(srv_job *j);
/* Connection side, streaming: the bytes that end the stream of a finished job (final chunk and
 * [DONE], or the done/error event), appended to j->out. Called with j->mu held. */
void srv_final_stream(srv_job *j);
/* The TEMPO record of a result plus id and graph, as a cJSON object (NULL on out of memory). */
cJSON *srv_record_json(const tempo_result *r, const srv_job *j);

/* -------------------------------------------------------------- web assets -- */
typedef struct {
    const char *path; /* "/index.html" */
    const char *mime;
    const unsigned char *data;
    size_t size;
} tempo_web_asset;
extern const tempo_web_asset tempo_web_assets[];
extern const size_t tempo_web_assets_count;

#endif
