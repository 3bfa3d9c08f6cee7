/* test_session.c: the embeddable library: one model shared by many sessions and threads, the
 * step API (choose, replay, cancel, batched steps), one memory budget for the model and all of
 * its sessions, and errors instead of prints or aborts. */
#include "test.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tempo.h"

#define STORIES SHARED_DIR "/models/stories260K.gguf"

static tempo_model *open_model(double max_gb, int threads) {
    tempo_error err;
    tempo_model_params mp;
    tempo_model_params_init(&mp);
    mp.threads = threads;
    mp.max_memory_gb = max_gb;
    tempo_model *m = tempo_model_open(STORIES, &mp, &err);
    if (!m) fprintf(stderr, "  open: %s\n", err.message);
    return m;
}

/* Bit-for-bit: the same steps, members, ids, probabilities (as bits), pruning and stop reason. */
static bool same_bits(const tempo_result *a, const tempo_result *b, char *why, size_t cap) {
    if (a->n_steps != b->n_steps || a->stop_reason != b->stop_reason) {
        snprintf(why, cap, "%d vs %d steps, stop %d vs %d", a->n_steps, b->n_steps, a->stop_reason, b->stop_reason);
        return false;
    }
    for (int k = 0; k < a->n_steps; k++) {
        const tempo_step *x = &a->steps[k], *y = &b->steps[k];
        if (x->n_tokens != y->n_tokens) { snprintf(why, cap, "step %d: %d vs %d members", k, x->n_tokens, y->n_tokens); return false; }
        for (int j = 0; j < x->n_tokens; j++) {
            const tempo_token *s = &x->tokens[j], *t = &y->tokens[j];
            if (s->token_id != t->token_id || memcmp(&s->probability, &t->probability, sizeof(float)) ||
                s->pruned != t->pruned || s->pruned_at_step != t->pruned_at_step) {
                snprintf(why, cap, "step %d member %d: id %d/%d p %.9g/%.9g", k, j, s->token_id, t->token_id,
                         s->probability, t->probability);
                return false;
            }
        }
    }
    return strcmp(a->clean_text, b->clean_text) == 0 || (snprintf(why, cap, "texts differ"), false);
}

/* ---------------------------------------------------------- concurrency -- */

#define N_RUNS 8

typedef struct {
    tempo_model *m;
    const char *prompt;
    tempo_gen_params p;
    tempo_result *r;
    tempo_error err;
    atomic_int *go;
} job;

/* Eight different runs: prompts, widths, visibility, pruning, dynamic thresholds, standard mode. */
static void make_jobs(tempo_model *m, job *jobs) {
    static const char *const prompts[N_RUNS] = { "Once upon a time", "The little dog", "Lily wanted to",
                                                 "One day, a boy", "Tom and Sue", "There was a cat",
                                                 "The sun was", "Mom said" };
    for (int i = 0; i < N_RUNS; i++) {
        job *j = &jobs[i];
        memset(j, 0, sizeof *j);
        j->m = m;
        j->prompt = prompts[i];
        tempo_gen_params_init(&j->p);
        j->p.max_tokens = 24 + 3 * i;
        j->p.selection_threshold = 0.04 + 0.01 * i;
        j->p.max_parallel_tokens = 2 + i;
        j->p.allow_intraset_token_visibility = i % 3 == 1;
        j->p.use_retroactive_pruning = i % 2 == 0;
        j->p.dynamic_threshold = i == 5;
        if (i == 7) {
            tempo_gen_params_init(&j->p);
            j->p.default_mode = true;
            j->p.temperature = 0.8;
            j->p.top_k = 40;
            j->p.seed = 1234;
            j->p.max_tokens = 30;
        }
    }
}

static void *run_job(void *arg) {
    job *j = arg;
    if (j->go)
        while (!atomic_load(j->go)) {} /* start together, to overlap as much as possible */
    j->r = tempo_generate(j->m, j->prompt, &j->p, NULL, NULL, NULL, &j->err);
    return NULL;
}

TEST(session_concurrent_sessions_equal_sequential) {
    tempo_model *m = open_model(36.0, 1);
    REQUIRE(m);
    job seq[N_RUNS], par[N_RUNS];
    make_jobs(m, seq);
    make_jobs(m, par);
    for (int i = 0; i < N_RUNS; i++) {
        run_job(&seq[i]);
        REQUIRE(seq[i].r);
    }
    atomic_int go = 0;
    pthread_t th[N_RUNS];
    for (int i = 0; i < N_RUNS; i++) {
        par[i].go = &go;
        REQUIRE(pthread_create(&th[i], NULL, run_job, &par[i]) == 0);
    }
    atomic_store(&go, 1);
    for (int i = 0; i < N_RUNS; i++) pthread_join(th[i], NULL);
    int parallel_steps = 0;
    for (int i = 0; i < N_RUNS; i++) {
        char why[256] = "";
        CHECK_MSG(par[i].r, "run %d: %s", i, par[i].err.message);
        if (!par[i].r) continue;
        CHECK_MSG(same_bits(seq[i].r, par[i].r, why, sizeof why), "run %d differs from its sequential run: %s", i, why);
        parallel_steps += par[i].r->parallel_steps;
        tempo_result_free(seq[i].r);
        tempo_result_free(par[i].r);
    }
    CHECK(parallel_steps > 20); /* the runs really were TEMPO runs with sets */
    tempo_memory_stats st;
    tempo_memory_get_stats(tempo_model_memory(m), &st);
    CHECK_INT_EQ(st.sessions, 0); /* every session gave its share back */
    tempo_model_close(m);
}

/* ------------------------------------------------------------ step API -- */

static tempo_session *start(tempo_model *m, tempo_gen_params *p, const char *prompt) {
    tempo_error err;
    tempo_session *s = tempo_session_new(m, p, &err);
    if (s && tempo_session_prefill(s, prompt, &err) == 0) return s;
    fprintf(stderr, "  session: %s\n", err.message);
    tempo_session_free(s);
    return NULL;
}

/* tempo_generate and the step loop are the same run. */
TEST(session_step_loop_equals_generate) {
    tempo_model *m = open_model(36.0, 2);
    REQUIRE(m);
    tempo_gen_params p;
    tempo_gen_params_init(&p);
    p.max_tokens = 30;
    p.selection_threshold = 0.05;
    p.max_parallel_tokens = 5;
    p.use_retroactive_pruning = true;
    tempo_error err;
    tempo_result *a = tempo_generate(m, "Once upon a time", &p, NULL, NULL, NULL, &err);
    REQUIRE(a);
    tempo_session *s = start(m, &p, "Once upon a time");
    REQUIRE(s);
    CHECK(tempo_session_step(s, NULL, &err) == 1);
    tempo_step_info st;
    int steps = 1, prunes = 0, rc;
    while ((rc = tempo_session_step(s, &st, &err)) == 1) {
        steps++;
        CHECK_INT_EQ(st.step->step, steps - 1);
        for (int i = 0; i < st.n_prune; i++) {
            prunes += st.prune[i].pruned;
            CHECK(st.prune[i].step < st.prune[i].at_step && st.prune[i].at_step == st.step->step - 1);
        }
    }
    CHECK_INT_EQ(rc, 0);
    CHECK(prunes > 0);
    CHECK(tempo_session_step(s, &st, &err) == 0); /* stays done */
    CHECK(tempo_session_stop_reason(s, NULL) == TEMPO_STOP_MAX_TOKENS);
    tempo_result *b = tempo_session_result(s, &err);
    REQUIRE(b);
    char why[256] = "";
    CHECK_MSG(same_bits(a, b, why, sizeof why), "%s", why);
    tempo_result_free(a);
    tempo_result_free(b);
    tempo_session_free(s);
    tempo_model_close(m);
}

/* Choosing a member continues as if it had been selected alone: the same as a run whose set at
 * that step is replayed as that single member. */
TEST(session_choose_continues_from_the_member) {
    tempo_model *m = open_model(36.0, 2);
    REQUIRE(m);
    tempo_gen_params p;
    tempo_gen_params_init(&p);
    p.max_tokens = 20;
    p.selection_threshold = 0.05;
    p.max_parallel_tokens = 4;
    tempo_error err;
    tempo_session *s = start(m, &p, "Once upon a time");
    REQUIRE(s);
    tempo_step_info st;
    int wide = -1;
    int32_t chosen = -1;
    for (int k = 0; k < 20 && tempo_session_step(s, &st, &err) == 1; k++) {
        if (wide < 0 && st.step->n_tokens >= 2) {
            wide = st.step->step;
            chosen = st.step->tokens[1].token_id; /* not the most probable one */
            CHECK(tempo_session_choose(s, 1, &err) == 0);
            CHECK(st.step->n_tokens == 1 && st.step->tokens[0].token_id == chosen && st.step->chosen);
            CHECK(tempo_session_choose(s, 5, &err) == -1 && err.code == TEMPO_ERR_ARG);
        }
    }
    REQUIRE(wide >= 0);
    tempo_result *a = tempo_session_result(s, &err);
    REQUIRE(a);
    tempo_session_free(s);
    /* the same path replayed on a fresh session with set_members, as a server replica would */
    s = start(m, &p, "Once upon a time");
    REQUIRE(s);
    for (int k = 0; k < a->n_steps && tempo_session_step(s, &st, &err) == 1; k++) {
        int32_t ids[8];
        for (int j = 0; j < a->steps[k].n_tokens; j++) ids[j] = a->steps[k].tokens[j].token_id;
        CHECK(tempo_session_set_members(s, ids, a->steps[k].n_tokens, &err) == 0);
    }
    tempo_result *b = tempo_session_result(s, &err);
    REQUIRE(b);
    char why[256] = "";
    CHECK_MSG(same_bits(a, b, why, sizeof why), "%s", why);
    CHECK(a->steps[wide].n_tokens == 1 && a->steps[wide].tokens[0].token_id == chosen);
    /* bad replays are refused with a reason */
    tempo_session_free(s);
    s = start(m, &p, "Once upon a time");
    REQUIRE(s);
    int32_t twice[2] = { 5, 5 }, outside[1] = { 100000 };
    CHECK(tempo_session_set_members(s, twice, 1, &err) == -1 && err.code == TEMPO_ERR_STATE); /* before a step */
    REQUIRE(tempo_session_step(s, &st, &err) == 1);
    CHECK(tempo_session_set_members(s, twice, 2, &err) == -1 && strstr(err.message, "twice"));
    CHECK(tempo_session_set_members(s, outside, 1, &err) == -1 && strstr(err.message, "outside the vocabulary"));
    CHECK(tempo_session_set_members(s, twice, 0, &err) == -1 && err.code == TEMPO_ERR_ARG);
    tempo_session_free(s);
    tempo_result_free(a);
    tempo_result_free(b);
    tempo_model_close(m);
}

/* Step 4 sessions together (tempo_session_step_batch) until every one is over. */
static void step_batch_to_the_end(tempo_session **s) {
    int rc[4], running = 4, ticks = 0;
    tempo_step_info out[4];
    tempo_error errs[4];
    while (running > 0 && ticks < 200) {
        tempo_session_step_batch(s, 4, rc, out, errs);
        running = 0;
        for (int i = 0; i < 4; i++) {
            CHECK_MSG(rc[i] >= 0, "session %d: %s", i, errs[i].message);
            running += rc[i] == 1;
        }
        ticks++;
    }
}

/* Several sessions stepped in one batched forward give each the same run as stepping alone. */
TEST(session_step_batch_equals_alone) {
    tempo_model *m = open_model(36.0, 2);
    REQUIRE(m);
    job jobs[N_RUNS];
    make_jobs(m, jobs);
    tempo_session *s[4];
    tempo_result *alone[4];
    for (int i = 0; i < 4; i++) {
        alone[i] = tempo_generate(m, jobs[i].prompt, &jobs[i].p, NULL, NULL, NULL, &jobs[i].err);
        REQUIRE(alone[i]);
        s[i] = start(m, &jobs[i].p, jobs[i].prompt);
        REQUIRE(s[i]);
    }
    step_batch_to_the_end(s);
    for (int i = 0; i < 4; i++) {
        tempo_error err;
        tempo_result *r = tempo_session_result(s[i], &err);
        REQUIRE(r);
        char why[256] = "";
        CHECK_MSG(same_bits(alone[i], r, why, sizeof why), "session %d: %s", i, why);
        tempo_session_stats st;
        tempo_session_get_stats(s[i], &st);
        CHECK_INT_EQ(st.forward_calls, 1 + st.fed_steps); /* one pass per step: shared, not repeated */
        tempo_result_free(r);
        tempo_result_free(alone[i]);
        tempo_session_free(s[i]);
    }
    tempo_model_close(m);
}

/* Prompts prefilled together (one batched forward) give the runs each gives alone; a prompt that
 * cannot start fails by itself. */
TEST(session_prefill_batch_equals_alone) {
    tempo_model *m = open_model(36.0, 2);
    REQUIRE(m);
    job jobs[N_RUNS];
    make_jobs(m, jobs);
    enum { N = 5 };
    tempo_session *s[N];
    tempo_result *alone[4];
    const char *prompts[N];
    char *too_long = malloc(6 * 2000 + 1);
    REQUIRE(too_long);
    for (int i = 0; i < 2000; i++) memcpy(too_long + 6 * i, "hello ", 6);
    too_long[6 * 2000] = 0;
    for (int i = 0; i < N; i++) {
        tempo_error err;
        s[i] = tempo_session_new(m, &jobs[i % 4].p, &err);
        REQUIRE(s[i]);
        prompts[i] = i == 2 ? too_long : jobs[i % 4].prompt; /* session 2: longer than the context */
        if (i < 4) {
            alone[i] = tempo_generate(m, jobs[i].prompt, &jobs[i].p, NULL, NULL, NULL, &jobs[i].err);
            REQUIRE(alone[i]);
        }
    }
    int rc[N];
    tempo_error errs[N];
    tempo_session_prefill_batch(s, prompts, N, rc, errs);
    CHECK_INT_EQ(rc[2], -1);
    CHECK_INT_EQ(errs[2].code, TEMPO_ERR_CACHE_LIMIT);
    CHECK_MSG(strstr(errs[2].message, "longer than the model's context") != NULL, "%s", errs[2].message);
    for (int i = 0; i < N; i++)
        if (i != 2) CHECK_MSG(rc[i] == 0, "session %d: %s", i, errs[i].message);
    tempo_session *run[4] = { s[0], s[1], s[3], s[4] };
    const int which[4] = { 0, 1, 3, 0 }; /* session 4 runs job 0 again */
    step_batch_to_the_end(run);
    for (int i = 0; i < 4; i++) {
        tempo_error err;
        tempo_result *r = tempo_session_result(run[i], &err);
        REQUIRE(r);
        char why[256] = "";
        CHECK_MSG(same_bits(alone[which[i]], r, why, sizeof why), "session %d: %s", i, why);
        tempo_result_free(r);
    }
    for (int i = 0; i < 4; i++) tempo_result_free(alone[i]);
    for (int i = 0; i < N; i++) tempo_session_free(s[i]);
    free(too_long);
    tempo_model_close(m);
}

/* Cancel from another thread while a session steps: it stops after its current step. */
typedef struct { tempo_session *s; atomic_int steps; } cancel_ctx;

static void *canceller(void *arg) {
    cancel_ctx *c = arg;
    while (atomic_load(&c->steps) < 3) usleep(100);
    tempo_session_cancel(c->s);
    return NULL;
}

TEST(session_cancel_from_another_thread) {
    tempo_model *m = open_model(36.0, 1);
    REQUIRE(m);
    tempo_gen_params p;
    tempo_gen_params_init(&p);
    p.max_tokens = 2000;
    p.selection_threshold = 0.05;
    p.max_parallel_tokens = 3;
    cancel_ctx c = { start(m, &p, "Once upon a time"), 0 };
    REQUIRE(c.s);
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, canceller, &c) == 0);
    tempo_error err;
    tempo_step_info st;
    int rc;
    while ((rc = tempo_session_step(c.s, &st, &err)) == 1) atomic_fetch_add(&c.steps, 1);
    pthread_join(th, NULL);
    CHECK_INT_EQ(rc, 0);
    const char *msg = NULL;
    CHECK(tempo_session_stop_reason(c.s, &msg) == TEMPO_STOP_INTERRUPTED);
    CHECK(tempo_session_n_steps(c.s) >= 3 && tempo_session_n_steps(c.s) < 2000);
    tempo_result *r = tempo_session_result(c.s, &err);
    REQUIRE(r);
    CHECK_INT_EQ(r->n_steps, tempo_session_n_steps(c.s)); /* nothing produced is lost */
    CHECK(strcmp(tempo_stop_reason_name(r->stop_reason), "interrupted") == 0);
    tempo_result_free(r);
    tempo_session_free(c.s);
    tempo_model_close(m);
}

/* The model's budget covers the model and every live session: a session that would pass it
 * does not start, with a message naming the limit; freeing a session makes room again. */
TEST(session_budget_covers_model_and_sessions) {
    tempo_model *m = open_model(36.0, 1);
    REQUIRE(m);
    tempo_memory_stats st;
    tempo_gen_params p;
    tempo_gen_params_init(&p);
    p.max_tokens = 200;
    p.max_parallel_tokens = 8;
    /* what one session reserves, and what the process uses with the model loaded */
    tempo_session *one = start(m, &p, "Once upon a time");
    REQUIRE(one);
    tempo_session_stats ss;
    tempo_session_get_stats(one, &ss);
    tempo_session_free(one);
    /* freed pages back to the system first (earlier tests leave heap behind), as the server does */
    tempo_memory_free_memory(tempo_model_memory(m));
    double base = tempo_memory_current_usage_gb(tempo_model_memory(m));
    tempo_model_close(m);
    /* a limit with room for about three such sessions above that; the process's resident set
     * drifts with what earlier tests left (heap, thread stacks), so the base is re-measured with
     * the limited model open until it holds */
    const double share = (double)ss.reserved_bytes / 1073741824.0;
    for (int attempt = 0;; attempt++) {
        m = open_model((base + 3.5 * share) / 0.95, 1);
        REQUIRE(m);
        double now = tempo_memory_current_usage_gb(tempo_model_memory(m));
        if (now <= base + 0.5 * share || attempt == 3) break;
        base = now;
        tempo_model_close(m);
    }

    tempo_session *live[64];
    int n = 0;
    tempo_error err = { 0 };
    while (n < 64) {
        tempo_session *s = tempo_session_new(m, &p, &err);
        REQUIRE(s);
        if (tempo_session_prefill(s, "Once upon a time", &err)) { tempo_session_free(s); break; }
        live[n++] = s;
    }
    CHECK_MSG(n >= 1 && n <= 4, "%d sessions started (%s)", n, err.message);
    REQUIRE(n >= 1);
    CHECK_MSG(err.code == TEMPO_ERR_MEMORY_LIMIT && strstr(err.message, "--max-memory-gb") &&
              strstr(err.message, "other live session"), "%s", err.message);
    tempo_memory_get_stats(tempo_model_memory(m), &st);
    CHECK_INT_EQ(st.sessions, n);
    /* freeing a session gives its share back to the model's budget (the measured resident set,
     * which also counts, may stay up: freed pages are not always returned to the system) */
    tempo_session_get_stats(live[n - 1], &ss);
    CHECK(ss.reserved_bytes > 0);
    tempo_memory_stats before, after;
    tempo_memory_get_stats(tempo_model_memory(m), &before);
    tempo_session_free(live[--n]);
    tempo_memory_get_stats(tempo_model_memory(m), &after);
    CHECK_NEAR((before.kv_gb + before.work_gb - after.kv_gb - after.work_gb) * 1073741824.0,
               (double)ss.reserved_bytes, 1024.0 * 64); /* its records are the rest */
    CHECK_INT_EQ(after.sessions, n);
    while (n > 0) tempo_session_free(live[--n]);
    tempo_memory_get_stats(tempo_model_memory(m), &st);
    CHECK_INT_EQ(st.sessions, 0);
    tempo_model_close(m);
}

/* Wrong calls give state errors, never crashes. */
TEST(session_state_errors) {
    tempo_model *m = open_model(36.0, 1);
    REQUIRE(m);
    tempo_error err;
    tempo_gen_params p;
    tempo_gen_params_init(&p);
    p.max_tokens = 3;
    tempo_session *s = tempo_session_new(m, &p, &err);
    REQUIRE(s);
    tempo_step_info st;
    CHECK(tempo_session_step(s, &st, &err) == -1 && err.code == TEMPO_ERR_STATE);
    CHECK(tempo_session_choose(s, 0, &err) == -1 && err.code == TEMPO_ERR_STATE);
    CHECK(tempo_session_prefill(s, "Hi", &err) == 0);
    CHECK(tempo_session_prefill(s, "Hi", &err) == -1 && err.code == TEMPO_ERR_STATE);
    int32_t ids[4];
    float lp[4];
    CHECK(tempo_session_top_logprobs(s, 4, ids, lp) == -1);
    CHECK(tempo_session_step(s, &st, &err) == 1);
    CHECK(tempo_session_top_logprobs(s, 4, ids, lp) == 4);
    CHECK(ids[0] == st.step->tokens[0].token_id && lp[0] >= lp[1] && lp[1] >= lp[2]);
    CHECK_NEAR(lp[0], logf(st.step->tokens[0].probability), 1e-6);
    tempo_session_free(s);
    p.max_tokens = 0;
    CHECK(tempo_session_new(m, &p, &err) == NULL && err.code == TEMPO_ERR_ARG && strstr(err.message, "--max-tokens"));
    tempo_gen_params_init(&p);
    p.selection_threshold = 0.0 / 0.0;
    CHECK(tempo_session_new(m, &p, &err) == NULL && strstr(err.message, "--selection-threshold"));
    tempo_model_close(m);
}
