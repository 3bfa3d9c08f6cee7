/* sched.c: the scheduler thread (continuous batching across requests).
 *
 * One thread owns the sessions of the running requests. Each turn of its loop:
 *   1. admit: take queued jobs while fewer than --parallel run; create each one's session and
 *      prefill them together (tempo_session_prefill_batch: one batched forward for all the new
 *      prompts); a job that cannot start fails with its HTTP status;
 *   2. tick: advance every running session by one step with tempo_session_step_batch, ONE
 *      batched forward for all of their sets (each token keeps its session's position and
 *      visibility), then hand each step to its job (srv_on_step) and end the jobs that are over.
 * A job whose client went away (j->cancelled) is cancelled before the tick, so its session stops
 * and is freed in that tick. Compute happens only here; the sessions' thread pools run the
 * matmuls (the batched pass uses the pool of the session with the largest cache).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/server.h"

struct srv_sched {
    tempo_model *m;
    int parallel, queue_cap;
    pthread_t thread;
    bool started;

    pthread_mutex_t mu;
    pthread_cond_t wake;     /* work arrived, or quit */
    pthread_cond_t idle;     /* a job ended */
    srv_job **queue;         /* ring of queue_cap */
    int q_head, q_len;
    int n_running;
    bool draining, quit, cancel_all;

    /* the scheduler thread's own */
    srv_job **running;
    tempo_session **sessions;
    int *rc;
    tempo_step_info *out;
    tempo_error *errs;
};

/* -------------------------------------------------------------------- jobs -- */

srv_job *srv_job_new(void) {
    srv_job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    j->refs = 1;
    atomic_init(&j->cancelled, 0);
    j->created = (long)time(NULL);
    return j;
}

void srv_job_ref(srv_job *j) {
    pthread_mutex_lock(&j->mu);
    j->refs++;
    pthread_mutex_unlock(&j->mu);
}

void srv_job_unref(srv_job *j) {
    if (!j) return;
    pthread_mutex_lock(&j->mu);
    int left = --j->refs;
    pthread_mutex_unlock(&j->mu);
    if (left) return;
    if (j->s) tempo_session_free(j->s);
    tempo_result_free(j->result);
    srv_request_free(&j->req);
    free(j->prompt);
    srv_buf_free(&j->out);
    srv_buf_free(&j->text);
    cJSON_Delete(j->logprobs);
    cJSON_Delete(j->prunes);
    cJSON_Delete(j->pending_prunes);
    pthread_cond_destroy(&j->cv);
    pthread_mutex_destroy(&j->mu);
    free(j);
}

void srv_job_emit(srv_job *j, const char *data, size_t n) {
    srv_buf_add(&j->out, data, n);
    pthread_cond_broadcast(&j->cv);
}

/* The job is over: take its record, free its session, wake its connection. */
static void job_end(srv_sched *sc, srv_job *j) {
    tempo_result *r = NULL;
    if (j->s) {
        tempo_error e;
        r = tempo_session_result(j->s, &e);
        tempo_session_free(j->s);
        j->s = NULL;
    }
    /* the slot is free before the client hears the answer (a client that asks /health next
     * sees it free) */
    pthread_mutex_lock(&sc->mu);
    sc->n_running--;
    pthread_cond_broadcast(&sc->idle);
    pthread_mutex_unlock(&sc->mu);
    pthread_mutex_lock(&j->mu);
    j->result = r;
    if (!r && !j->failed) {
        j->failed = true;
        srv_fail(&j->err, 500, NULL, NULL, "out of memory building the result");
    }
    j->state = J_DONE;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    srv_job_unref(j);
}

/* A job that could not start: its HTTP status from the library's status. */
static void job_fail_start(srv_sched *sc, srv_job *j, const tempo_error *e, int others_running) {
    pthread_mutex_lock(&j->mu);
    j->failed = true;
    switch (e->code) {
    case TEMPO_ERR_ARG: srv_fail(&j->err, 400, NULL, "invalid_value", "%s", e->message); break;
    case TEMPO_ERR_CACHE_LIMIT: srv_fail(&j->err, 400, "max_tokens", "context_length_exceeded", "%s", e->message); break;
    case TEMPO_ERR_MEMORY_LIMIT:
    case TEMPO_ERR_NOMEM:
        /* With others running it may fit later (503, retry); alone it never will (413). */
        if (others_running) srv_fail(&j->err, 503, NULL, "memory_limit", "%s (other requests are using the memory now; retry later)", e->message);
        else srv_fail(&j->err, 413, NULL, "memory_limit", "%s", e->message);
        break;
    default: srv_fail(&j->err, 500, NULL, NULL, "%s", e->message); break;
    }
    pthread_mutex_unlock(&j->mu);
    job_end(sc, j); /* it was counted running when admitted */
}

/* Create the job's session; 0 when it has one. */
static int job_create(srv_sched *sc, srv_job *j, int others_running) {
    tempo_error e;
    if (atomic_load(&j->cancelled)) {
        e.code = TEMPO_ERR_STATE;
        snprintf(e.message, sizeof e.message, "cancelled before it started");
        job_fail_start(sc, j, &e, others_running);
        return -1;
    }
    j->s = tempo_session_new(sc->m, &j->req.cfg.gen, &e);
    if (!j->s) {
        job_fail_start(sc, j, &e, others_running);
        return -1;
    }
    return 0;
}

/* After the prefill: the job runs (rc 0), or fails with the prefill's error. */
static int job_started(srv_sched *sc, srv_job *j, int rc, tempo_error *e, int others_running) {
    if (rc) {
        tempo_session_free(j->s);
        j->s = NULL;
        job_fail_start(sc, j, e, others_running);
        return -1;
    }
    tempo_session_stats st;
    tempo_session_get_stats(j->s, &st);
    j->n_prompt_tokens = st.n_prompt;
    pthread_mutex_lock(&j->mu);
    j->state = J_RUNNING;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    srv_on_start(j);
    return 0;
}

/* --------------------------------------------------------------- the loop -- */

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void *sched_main(void *arg) {
    srv_sched *sc = arg;
    int n = 0; /* running jobs: sc->running[0..n) */
    for (;;) {
        srv_job *admit[64];
        int n_admit = 0;
        pthread_mutex_lock(&sc->mu);
        while (n == 0 && sc->q_len == 0 && !sc->quit) pthread_cond_wait(&sc->wake, &sc->mu);
        if (sc->quit && n == 0 && sc->q_len == 0) { pthread_mutex_unlock(&sc->mu); break; }
        while (sc->q_len > 0 && n + n_admit < sc->parallel && n_admit < 64) {
            admit[n_admit++] = sc->queue[sc->q_head];
            sc->q_head = (sc->q_head + 1) % sc->queue_cap;
            sc->q_len--;
            sc->n_running++;
        }
        bool cancel_all = sc->cancel_all;
        pthread_mutex_unlock(&sc->mu);

        /* The budget also reads the measured resident set: give freed pages (of ended sessions,
         * of sent responses) back to the system first, or a new request would be judged
         * against memory that no one holds any more. */
        if (n_admit) tempo_memory_free_memory(tempo_model_memory(sc->m));
        /* The admitted prompts go through the model together, one batched forward. */
        int n_new = 0;
        const double t_admit = mono_s();
        for (int i = 0; i < n_admit; i++) {
            admit[i]->t_admitted = t_admit;
            if (cancel_all) atomic_store(&admit[i]->cancelled, 1);
            if (job_create(sc, admit[i], n) == 0) admit[n_new++] = admit[i];
        }
        if (n_new > 0) {
            tempo_session *ss[64];
            const char *prompts[64];
            int prc[64];
            tempo_error perr[64];
            for (int i = 0; i < n_new; i++) {
                ss[i] = admit[i]->s;
                prompts[i] = admit[i]->prompt;
            }
            tempo_session_prefill_batch(ss, prompts, n_new, prc, perr);
            const double t_done = mono_s();
            for (int i = 0; i < n_new; i++) admit[i]->t_prefilled = admit[i]->t_last_step = t_done;
            /* job i was judged against the memory of the running jobs and of the i set up before it */
            int n_before = n;
            for (int i = 0; i < n_new; i++)
                if (job_started(sc, admit[i], prc[i], &perr[i], n_before + i) == 0) sc->running[n++] = admit[i];
        }
        if (n == 0) continue;

        for (int i = 0; i < n; i++) {
            if (cancel_all) atomic_store(&sc->running[i]->cancelled, 1);
            if (atomic_load(&sc->running[i]->cancelled)) tempo_session_cancel(sc->running[i]->s);
            sc->sessions[i] = sc->running[i]->s;
        }
        tempo_session_step_batch(sc->sessions, n, sc->rc, sc->out, sc->errs);
        const double t_step = mono_s();

        int kept = 0;
        for (int i = 0; i < n; i++) {
            srv_job *j = sc->running[i];
            int rc = sc->rc[i];
            if (rc < 0) {
                pthread_mutex_lock(&j->mu);
                j->failed = true;
                srv_fail(&j->err, 500, NULL, NULL, "%s", sc->errs[i].message);
                pthread_mutex_unlock(&j->mu);
            }
            if (rc > 0) j->t_last_step = t_step;
            if (rc >= 0 && srv_on_step(j, rc, &sc->out[i])) rc = -1;
            if (rc <= 0 || j->finish_now) job_end(sc, j);
            else sc->running[kept++] = j;
        }
        n = kept;
    }
    return NULL;
}

/* -------------------------------------------------------------- the API -- */

srv_sched *srv_sched_new(tempo_model *m, int parallel, int queue, char *err, size_t errcap) {
    srv_sched *sc = calloc(1, sizeof *sc);
    if (!sc) { snprintf(err, errcap, "out of memory"); return NULL; }
    sc->m = m;
    sc->parallel = parallel;
    sc->queue_cap = queue > 0 ? queue : 1;
    pthread_mutex_init(&sc->mu, NULL);
    pthread_cond_init(&sc->wake, NULL);
    pthread_cond_init(&sc->idle, NULL);
    sc->queue = calloc((size_t)sc->queue_cap, sizeof *sc->queue);
    sc->running = calloc((size_t)parallel, sizeof *sc->running);
    sc->sessions = calloc((size_t)parallel, sizeof *sc->sessions);
    sc->rc = calloc((size_t)parallel, sizeof *sc->rc);
    sc->out = calloc((size_t)parallel, sizeof *sc->out);
    sc->errs = calloc((size_t)parallel, sizeof *sc->errs);
    if (!sc->queue || !sc->running || !sc->sessions || !sc->rc || !sc->out || !sc->errs) {
        snprintf(err, errcap, "out of memory");
        srv_sched_free(sc);
        return NULL;
    }
    int rc = pthread_create(&sc->thread, NULL, sched_main, sc);
    if (rc) {
        snprintf(err, errcap, "cannot start the scheduler thread: %s", strerror(rc));
        srv_sched_free(sc);
        return NULL;
    }
    sc->started = true;
    return sc;
}

int srv_sched_submit(srv_sched *sc, srv_job *j, srv_error *err) {
    pthread_mutex_lock(&sc->mu);
    int rc = 0;
    if (sc->draining) rc = srv_fail(err, 503, NULL, "draining", "the server is shutting down");
    else if (sc->q_len >= sc->queue_cap)
        rc = srv_fail(err, 503, NULL, "queue_full", "the server is busy: %d requests running and %d waiting (retry later)",
                      sc->n_running, sc->q_len);
    else {
        srv_job_ref(j);
        sc->queue[(sc->q_head + sc->q_len) % sc->queue_cap] = j;
        sc->q_len++;
        pthread_cond_signal(&sc->wake);
    }
    pthread_mutex_unlock(&sc->mu);
    return rc;
}

void srv_sched_stats_get(srv_sched *sc, srv_sched_stats *st) {
    pthread_mutex_lock(&sc->mu);
    st->busy = sc->n_running;
    st->free = sc->parallel - sc->n_running;
    st->queued = sc->q_len;
    st->parallel = sc->parallel;
    st->draining = sc->draining;
    pthread_mutex_unlock(&sc->mu);
}

void srv_sched_drain(srv_sched *sc) {
    pthread_mutex_lock(&sc->mu);
    sc->draining = true;
    pthread_mutex_unlock(&sc->mu);
}

int srv_sched_wait_idle(srv_sched *sc, double timeout_s) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    long ns = until.tv_nsec + (long)((timeout_s - (long)timeout_s) * 1e9);
    until.tv_sec += (time_t)timeout_s + ns / 1000000000L;
    until.tv_nsec = ns % 1000000000L;
    pthread_mutex_lock(&sc->mu);
    while (sc->n_running + sc->q_len > 0)
        if (pthread_cond_timedwait(&sc->idle, &sc->mu, &until) == ETIMEDOUT) break;
    int left = sc->n_running + sc->q_len;
    pthread_mutex_unlock(&sc->mu);
    return left;
}

void srv_sched_cancel_all(srv_sched *sc) {
    pthread_mutex_lock(&sc->mu);
    sc->cancel_all = true;
    pthread_cond_signal(&sc->wake);
    pthread_mutex_unlock(&sc->mu);
}

void srv_sched_free(srv_sched *sc) {
    if (!sc) return;
    if (sc->started) {
        pthread_mutex_lock(&sc->mu);
        sc->quit = true;
        sc->cancel_all = true;
        pthread_cond_signal(&sc->wake);
        pthread_mutex_unlock(&sc->mu);
        pthread_join(sc->thread, NULL);
    }
    free(sc->queue);
    free(sc->running);
    free(sc->sessions);
    free(sc->rc);
    free(sc->out);
    free(sc->errs);
    pthread_cond_destroy(&sc->wake);
    pthread_cond_destroy(&sc->idle);
    pthread_mutex_destroy(&sc->mu);
    free(sc);
}
