/* test_faults.c: the library never aborts on a failed allocation.
 *
 * This program is linked with -Wl,--wrap=malloc,--wrap=calloc,... so that every allocation the
 * library's own code makes goes through the wrappers below, which can make the N-th one fail.
 * (cJSON is pointed at them too through its hooks; PCRE2's and libyaml's internal allocations
 * are theirs.) For N = 1, 2, 3, ... it runs a whole job -- open the model, generate with pruning,
 * build the JSON; then the step API on a quantized file: two sessions stepped together, a member
 * chosen, a path replayed -- with allocation N failing, and checks that the job either did not reach
 * allocation N or failed with a clear error; never a crash. LeakSanitizer, at exit, checks that no
 * failed job left memory behind. It stops when a job completes with no allocation failed: every
 * allocation site on the job's path has then been made to fail once.
 *
 *   build/asan/test_faults            (from the repository root; reads ../shared)
 */
#include <cjson/cJSON.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tempo.h"

#define STORIES "../shared/models/stories260K.gguf"
#define STORIES_Q4 "../shared/models/generated/stories260K-q4_0.gguf" /* repacked at load */

/* ------------------------------------------------------------- wrappers -- */
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
void *__real_aligned_alloc(size_t align, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);

static atomic_long countdown = -1; /* allocations left before the one that fails; -1: never */
static atomic_long failed;         /* allocations made to fail in this job */

static bool fail_now(void) {
    long c = atomic_load(&countdown);
    if (c < 0) return false;
    if (atomic_fetch_sub(&countdown, 1) == 0) {
        atomic_fetch_add(&failed, 1);
        return true;
    }
    return false;
}

void *__wrap_malloc(size_t n) { return fail_now() ? NULL : __real_malloc(n); }
void *__wrap_calloc(size_t n, size_t size) { return fail_now() ? NULL : __real_calloc(n, size); }
void *__wrap_realloc(void *p, size_t n) { return fail_now() ? NULL : __real_realloc(p, n); }
void *__wrap_aligned_alloc(size_t align, size_t n) { return fail_now() ? NULL : __real_aligned_alloc(align, n); }
char *__wrap_strdup(const char *s) { return fail_now() ? NULL : __real_strdup(s); }
char *__wrap_strndup(const char *s, size_t n) { return fail_now() ? NULL : __real_strndup(s, n); }

static void *json_malloc(size_t n) { return __wrap_malloc(n); }

/* ----------------------------------------------------------------- the job -- */

/* Open, generate 12 steps with pruning, build the JSON. 0 when it all worked; -1 with a message. */
static int job(char *why, size_t cap) {
    tempo_error err = { 0 };
    tempo_model_params mp;
    tempo_model_params_init(&mp);
    mp.threads = 1;
    tempo_model *m = tempo_model_open(STORIES, &mp, &err);
    if (!m) { snprintf(why, cap, "open: %s", err.message); return -1; }
    tempo_gen_params p;
    tempo_gen_params_init(&p);
    p.max_tokens = 12;
    p.selection_threshold = 0.05;
    p.max_parallel_tokens = 4;
    p.use_retroactive_pruning = true;
    p.enable_thinking = true; /* the chat module's allocations too */
    int rc = -1;
    tempo_result *r = tempo_generate(m, "Once upon a time", &p, NULL, NULL, NULL, &err);
    if (!r) snprintf(why, cap, "generate: %s", err.message);
    else if (r->stop_reason == TEMPO_STOP_ERROR) snprintf(why, cap, "stopped: %s", r->stop_message ? r->stop_message : "");
    else {
        char *json = tempo_result_to_json(r, NULL);
        if (!json) snprintf(why, cap, "json: out of memory");
        else rc = 0;
        free(json);
    }
    tempo_result_free(r);
    tempo_model_close(m);
    return rc;
}

/* The step API: two sessions of a Q4_0 model stepped in one batch, a member chosen in one, a
 * recorded path replayed in the other, then both records copied out. */
static int step_job(char *why, size_t cap) {
    tempo_error err = { 0 };
    tempo_model_params mp;
    tempo_model_params_init(&mp);
    mp.threads = 1;
    tempo_model *m = tempo_model_open(STORIES_Q4, &mp, &err);
    if (!m) { snprintf(why, cap, "open: %s", err.message); return -1; }
    tempo_gen_params p;
    tempo_gen_params_init(&p);
    p.max_tokens = 6;
    p.selection_threshold = 0.02;
    p.max_parallel_tokens = 3;
    p.use_retroactive_pruning = true;
    int rc = -1;
    tempo_session *s[2] = { tempo_session_new(m, &p, &err), NULL };
    if (!s[0]) { snprintf(why, cap, "session: %s", err.message); goto done; }
    s[1] = tempo_session_new(m, &p, &err);
    if (!s[1]) { snprintf(why, cap, "session: %s", err.message); goto done; }
    if (tempo_session_prefill(s[0], "Once upon a time", &err) || tempo_session_prefill(s[1], "The cat", &err)) {
        snprintf(why, cap, "prefill: %s", err.message);
        goto done;
    }
    for (int k = 0; k < 3; k++) {
        int st[2];
        tempo_step_info info[2];
        tempo_error errs[2] = { { 0 }, { 0 } };
        tempo_session_step_batch(s, 2, st, info, errs);
        for (int i = 0; i < 2; i++)
            if (st[i] < 0) { snprintf(why, cap, "step: %s", errs[i].message); goto done; }
        if (st[0] == 1 && tempo_session_choose(s[0], info[0].step->n_tokens - 1, &err)) {
            snprintf(why, cap, "choose: %s", err.message);
            goto done;
        }
        if (st[1] == 1 && tempo_session_set_members(s[1], &info[1].step->tokens[0].token_id, 1, &err)) {
            snprintf(why, cap, "set_members: %s", err.message);
            goto done;
        }
    }
    for (int i = 0; i < 2; i++) {
        tempo_result *r = tempo_session_result(s[i], &err);
        if (!r) { snprintf(why, cap, "result: %s", err.message); goto done; }
        tempo_result_free(r);
    }
    rc = 0;
done:
    tempo_session_free(s[0]);
    tempo_session_free(s[1]);
    tempo_model_close(m);
    return rc;
}

/* Runs `job` with allocation n failing for n = 0, 1, 2, ... until a run reaches no failure.
 * Returns the problems found; *tried gets the count. */
static int sweep(const char *name, int (*job)(char *, size_t), long *tried) {
    char why[TEMPO_ERR_LEN + 64];
    if (job(why, sizeof why)) { fprintf(stderr, "test_faults: %s fails without faults: %s\n", name, why); return 1; }
    int bad = 0;
    long n;
    for (n = 0; n < 100000; n++) {
        atomic_store(&failed, 0);
        atomic_store(&countdown, n);
        why[0] = 0;
        int rc = job(why, sizeof why);
        atomic_store(&countdown, -1);
        if (atomic_load(&failed) == 0) {
            if (rc) { fprintf(stderr, "test_faults: %s failed with no fault: %s\n", name, why); bad++; }
            break; /* allocation n was never reached: every site has been tried */
        }
        if (rc == 0) continue; /* the failure was absorbed (an optional buffer): fine */
        if (!why[0] || strchr(why, '\n')) {
            fprintf(stderr, "test_faults: %s, allocation %ld: unclear error '%s'\n", name, n, why);
            bad++;
        }
    }
    *tried = n;
    return bad;
}

int main(void) {
    cJSON_Hooks hooks = { json_malloc, free };
    cJSON_InitHooks(&hooks);
    long n1 = 0, n2 = 0;
    int bad = sweep("generate", job, &n1);
    bad += sweep("step API", step_job, &n2);
    printf("test_faults: %ld + %ld allocations made to fail one at a time (generate, step API), %d problems\n", n1, n2,
           bad);
    return bad ? 1 : 0;
}
