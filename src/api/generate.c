/* generate.c: the one-call generation of include/tempo.h, on top of the session API, and the
 * result's JSON form. */
#include "api/api.h"

#include <stdlib.h>
#include <string.h>

#include "output/json.h"


/* Report the pruning pass of a step: one PRUNE event per earlier step that lost members, in the
 * order the pass judged them. */
static int report_prunes(tempo_session *s, const tempo_step_info *st, tempo_step_cb cb, void *user) {
    int last = -1;
    for (int i = 0; i < st->n_prune; i++) {
        const tempo_prune_event *e = &st->prune[i];
        if (!e->pruned || e->step == last) continue;
        last = e->step;
        if (cb(TEMPO_EVENT_PRUNE, tempo_session_get_step(s, e->step), user)) return -1;
    }
    return 0;
}

tempo_result *tempo_generate(tempo_model *m, const char *prompt, const tempo_gen_params *p, tempo_step_cb cb,
                             void *user, volatile int *cancel, tempo_error *err) {
    tempo_session *s = tempo_session_new(m, p, err);
    if (!s) return NULL;
    if (tempo_session_prefill(s, prompt, err)) {
        tempo_session_free(s);
        return NULL;
    }
    tempo_error step_err;
    tempo_step_info st;
    int rc;
    while ((rc = tempo_session_step(s, &st, &step_err)) >= 0) {
        /* A call that fed a set and then ended (end of generation) still reports its pruning. */
        if (cb && (report_prunes(s, &st, cb, user) || (rc == 1 && cb(TEMPO_EVENT_STEP, st.step, user))))
            tempo_session_cancel(s);
        if (cancel && *cancel) tempo_session_cancel(s);
        if (rc == 0) break;
    }
    /* The record is returned whatever stopped the run; when an error or a limit did, err says
     * which too (its code: TEMPO_ERR_NUMERIC, TEMPO_ERR_MEMORY_LIMIT, ...), as the step call
     * reported it. */
    tempo_result *r = tempo_session_result(s, err);
    tempo_session_free(s);
    if (!r) return NULL;
    if (rc < 0 && err) *err = step_err;
    else if (r->stop_reason == TEMPO_STOP_MEMORY_LIMIT || r->stop_reason == TEMPO_STOP_CACHE_LIMIT)
        tp_set_error(err, r->stop_reason == TEMPO_STOP_MEMORY_LIMIT ? TEMPO_ERR_MEMORY_LIMIT : TEMPO_ERR_CACHE_LIMIT,
                     "%s", r->stop_message ? r->stop_message : tempo_stop_reason_name(r->stop_reason));
    else tp_ok(err);
    return r;
}

char *tempo_result_to_json(const tempo_result *r, const tempo_config *cfg) { return tp_json_result(r, cfg); }
