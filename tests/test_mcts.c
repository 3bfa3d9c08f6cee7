/* test_mcts.c: --use-mcts on stories260K: a search of one simulation without rollouts is greedy
 * decoding, a simulation's value is the mean log-probability of its tokens (checked against a
 * separate forward pass), single-member sets are never changed by more simulations, the search
 * leaves no slot in the cache, seeded rollouts are reproducible, and the options are checked. */
#include "test.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "kv/kvcache.h"
#include "model/model.h"
#include "tempo/mcts.h"
#include "tempo/session.h"

#define STORIES SHARED_DIR "/models/stories260K.gguf"
#define PROMPT "Once upon a time"

static tempo_model *open_stories(void) {
    tempo_error err;
    tempo_model_params mp;
    tempo_model_params_init(&mp);
    mp.threads = 2;
    tempo_model *m = tempo_model_open(STORIES, &mp, &err);
    if (!m) fprintf(stderr, "  open %s: %s\n", STORIES, err.message);
    return m;
}

static void mcts_params(tempo_gen_params *c, int steps, double threshold, int sims, int depth) {
    tempo_gen_params_init(c);
    c->max_tokens = steps;
    c->selection_threshold = threshold;
    c->max_parallel_tokens = 8;
    c->use_mcts = true;
    c->mcts_simulations = sims;
    c->mcts_depth = depth;
}

/* Per step after it is selected: the session (for hooks and stats). */
typedef void (*step_hook)(tempo_session *s, int k, void *user);

static tempo_result *run_mcts(tempo_model *m, const tempo_gen_params *c, step_hook hook, void *user) {
    tempo_error err;
    tempo_session *s = tempo_session_new(m, c, &err);
    if (!s || tempo_session_prefill(s, PROMPT, &err)) {
        fprintf(stderr, "  session: %s\n", err.message);
        tempo_session_free(s);
        return NULL;
    }
    tempo_step_info st;
    int rc;
    while ((rc = tempo_session_step(s, &st, &err)) == 1)
        if (hook) hook(s, st.step->step, user);
    if (rc < 0) fprintf(stderr, "  step: %s\n", err.message);
    tempo_result *r = tempo_session_result(s, &err);
    tempo_session_free(s);
    return r;
}

/* One simulation, no rollout: PUCT's first pick is the most probable candidate (every score is
 * 0 before any visit, ties go to selection order), so every step commits the greedy token. */
TEST(mcts_one_simulation_depth_zero_is_greedy) {
    int ref[128];
    int nref = test_reference_greedy_ids(ref, 128);
    REQUIRE(nref == 64);
    tempo_model *m = open_stories();
    REQUIRE(m);
    tempo_gen_params c;
    mcts_params(&c, 64, 0.02, 1, 0); /* a low threshold: many steps have several candidates */
    tempo_result *r = run_mcts(m, &c, NULL, NULL);
    REQUIRE(r);
    CHECK_INT_EQ(r->n_steps, 64);
    int multi = 0;
    for (int k = 0; k < r->n_steps && k < 64; k++) {
        const tempo_step *st = &r->steps[k];
        CHECK_INT_EQ(st->n_tokens, 1);
        if (st->tokens[0].token_id != ref[k]) {
            test_fail_at(__FILE__, __LINE__, "step %d: id %d, greedy %d", k, st->tokens[0].token_id, ref[k]);
            break;
        }
        REQUIRE(st->n_mcts >= 1 && st->mcts);
        multi += st->n_mcts > 1;
        CHECK(st->mcts[0].committed && st->mcts[0].visits == 1 && st->mcts[0].token_id == ref[k]);
        for (int j = 1; j < st->n_mcts; j++) CHECK(!st->mcts[j].committed && st->mcts[j].visits == 0);
    }
    CHECK_MSG(multi >= 10, "only %d steps had several candidates", multi);
    CHECK(strncmp(r->clean_text, "Once upon a time, there was a little girl named Lily.", 53) == 0);
    tempo_result_free(r);
    tempo_model_close(m);
}

/* The value of a simulation is the mean log-probability of its tokens: recomputed here with a
 * separate causal forward over prompt + committed path + the simulation's tokens. */
typedef struct {
    tempo_model *m;
    int32_t prompt[16];
    int n_prompt;
    int checked;
    double worst;
} value_check;

static void check_value(tempo_session *s, int k, void *user) {
    value_check *vc = user;
    const int32_t *sim;
    int first;
    float value;
    int n = tp_mcts_last_simulation(tp_session_mcts(s), &sim, &first, &value);
    if (n < 2 || first != k) { /* only simulations that rolled out */
        CHECK(first == k);
        return;
    }
    tp_model *tm = vc->m;
    int V = tm->hp.n_vocab, total = vc->n_prompt + k + n;
    int32_t *ids = malloc(sizeof *ids * (size_t)total), *pos = malloc(sizeof *pos * (size_t)total);
    float *logits = malloc(sizeof *logits * (size_t)total * (size_t)V);
    char err[TP_ERR_LEN];
    tp_kv *kv = tp_kv_new(tm->hp.n_layers, tm->hp.n_kv_heads * tm->hp.head_dim, TP_KV_F32, total, 0, err);
    REQUIRE(ids && pos && logits && kv);
    memcpy(ids, vc->prompt, sizeof *ids * (size_t)vc->n_prompt);
    for (int j = 0; j < k; j++) ids[vc->n_prompt + j] = tempo_session_get_step(s, j)->tokens[0].token_id;
    memcpy(ids + vc->n_prompt + k, sim, sizeof *ids * (size_t)n);
    for (int i = 0; i < total; i++) pos[i] = i;
    tp_batch b = { .n = total, .tokens = ids, .pos = pos, .step = -1, .vis = TP_VIS_CAUSAL, .logits = logits };
    CHECK(test_forward(tm, kv, &b, err) == 0);
    double sum = 0;
    for (int i = 0; i < n; i++) {
        int at = vc->n_prompt + k + i - 1; /* the logits that predict sim[i] */
        float *z = logits + (size_t)at * V, mx = z[0];
        for (int v = 1; v < V; v++) mx = z[v] > mx ? z[v] : mx;
        double se = 0;
        for (int v = 0; v < V; v++) se += exp((double)z[v] - mx);
        sum += (double)z[sim[i]] - mx - log(se);
    }
    double want = sum / n, diff = fabs(want - value);
    if (diff > vc->worst) vc->worst = diff;
    CHECK_MSG(diff < 1e-4, "step %d: value %.6f, mean log-probability %.6f over %d tokens", k, value, want, n);
    vc->checked++;
    tp_kv_free(kv);
    free(ids);
    free(pos);
    free(logits);
}

TEST(mcts_value_is_mean_log_probability) {
    tempo_model *m = open_stories();
    REQUIRE(m);
    value_check vc = { .m = m };
    vc.n_prompt = tempo_tokenize(m, PROMPT, true, vc.prompt, 16);
    REQUIRE(vc.n_prompt == 5);
    tempo_gen_params c;
    mcts_params(&c, 10, 0.03, 6, 4);
    tempo_result *r = run_mcts(m, &c, check_value, &vc);
    REQUIRE(r);
    CHECK_INT_EQ(r->n_steps, 10);
    CHECK_MSG(vc.checked >= 5, "%d simulations checked", vc.checked);
    /* sampled rollouts too */
    c.temperature = 1.0;
    c.seed = 3;
    tempo_result *r2 = run_mcts(m, &c, check_value, &vc);
    REQUIRE(r2);
    CHECK_MSG(vc.checked >= 10, "%d simulations checked", vc.checked);
    tempo_result_free(r);
    tempo_result_free(r2);
    tempo_model_close(m);
}

/* A step whose set has one member commits it whatever the search: two runs with different
 * searches agree until the first step with several candidates where they commit differently. */
TEST(mcts_more_simulations_never_change_single_member_steps) {
    tempo_model *m = open_stories();
    REQUIRE(m);
    tempo_gen_params c;
    mcts_params(&c, 30, 0.05, 1, 0);
    tempo_result *a = run_mcts(m, &c, NULL, NULL);
    c.mcts_simulations = 12;
    c.mcts_depth = 3;
    tempo_result *b = run_mcts(m, &c, NULL, NULL);
    REQUIRE(a && b);
    int singles = 0, k = 0;
    for (; k < a->n_steps && k < b->n_steps; k++) {
        const tempo_step *x = &a->steps[k], *y = &b->steps[k];
        REQUIRE(x->n_mcts == y->n_mcts);
        for (int j = 0; j < x->n_mcts; j++) CHECK(x->mcts[j].token_id == y->mcts[j].token_id);
        if (y->n_mcts == 1) {
            singles++;
            CHECK(y->mcts[0].visits == 12 && y->mcts[0].committed);
            CHECK(x->tokens[0].token_id == y->tokens[0].token_id);
        }
        if (x->tokens[0].token_id != y->tokens[0].token_id) break;
    }
    if (k < a->n_steps && k < b->n_steps)
        CHECK_MSG(b->steps[k].n_mcts > 1, "the runs part at step %d, which has one candidate", k);
    CHECK_MSG(singles >= 3, "%d single-member steps compared", singles);
    /* every step of the wider search: a single member is committed with every simulation */
    for (int j = 0; j < b->n_steps; j++)
        if (b->steps[j].n_mcts == 1) CHECK(b->steps[j].mcts[0].visits == 12);
    tempo_result_free(a);
    tempo_result_free(b);
    tempo_model_close(m);
}

/* After each step the cache holds exactly the prompt and the committed tokens fed so far. */
typedef struct {
    int checked, bad;
} slot_check;

static void check_slots(tempo_session *s, int k, void *user) {
    slot_check *sc = user;
    tempo_session_stats st;
    tempo_session_get_stats(s, &st);
    if (st.kv_slots != st.n_prompt + st.fed_tokens || st.kv_alive != st.kv_slots || st.fed_tokens != k) {
        sc->bad++;
        fprintf(stderr, "  step %d: %d slots, %d alive, prompt %d + fed %d\n", k, st.kv_slots, st.kv_alive, st.n_prompt,
                st.fed_tokens);
    }
    sc->checked++;
}

TEST(mcts_rollout_slots_are_dropped_every_step) {
    tempo_model *m = open_stories();
    REQUIRE(m);
    tempo_gen_params c;
    mcts_params(&c, 25, 0.03, 10, 5);
    slot_check sc = { 0 };
    tempo_error err;
    tempo_session *s = tempo_session_new(m, &c, &err);
    REQUIRE(s && tempo_session_prefill(s, PROMPT, &err) == 0);
    tempo_step_info st;
    while (tempo_session_step(s, &st, &err) == 1) check_slots(s, st.step->step, &sc);
    CHECK_INT_EQ(sc.checked, 25);
    CHECK_INT_EQ(sc.bad, 0);
    tempo_session_stats stats;
    tempo_session_get_stats(s, &stats);
    CHECK_MSG(stats.forward_calls > 25 * 5, "%d forward passes: the searches did not run", stats.forward_calls);
    tempo_session_free(s);
    tempo_model_close(m);
}

static bool same_searches(const tempo_result *a, const tempo_result *b) {
    if (a->n_steps != b->n_steps) return false;
    for (int k = 0; k < a->n_steps; k++) {
        const tempo_step *x = &a->steps[k], *y = &b->steps[k];
        if (x->tokens[0].token_id != y->tokens[0].token_id || x->n_mcts != y->n_mcts) return false;
        for (int j = 0; j < x->n_mcts; j++)
            if (x->mcts[j].token_id != y->mcts[j].token_id || x->mcts[j].visits != y->mcts[j].visits ||
                x->mcts[j].value != y->mcts[j].value)
                return false;
    }
    return true;
}

TEST(mcts_seeded_rollouts_are_reproducible) {
    tempo_model *m = open_stories();
    REQUIRE(m);
    tempo_gen_params c;
    mcts_params(&c, 15, 0.03, 8, 4);
    c.temperature = 0.9;
    c.seed = 7;
    tempo_result *a = run_mcts(m, &c, NULL, NULL), *b = run_mcts(m, &c, NULL, NULL);
    c.seed = 8;
    tempo_result *d = run_mcts(m, &c, NULL, NULL);
    REQUIRE(a && b && d);
    CHECK(same_searches(a, b));
    CHECK(!same_searches(a, d)); /* another seed samples other rollouts */
    tempo_result_free(a);
    tempo_result_free(b);
    tempo_result_free(d);
    tempo_model_close(m);
}

TEST(mcts_json_records_every_candidate) {
    tempo_model *m = open_stories();
    REQUIRE(m);
    tempo_gen_params c;
    mcts_params(&c, 12, 0.03, 10, 2);
    tempo_result *r = run_mcts(m, &c, NULL, NULL);
    REQUIRE(r);
    char *js = tempo_result_to_json(r, NULL);
    cJSON *d = cJSON_Parse(js);
    REQUIRE(d);
    cJSON *cfg = cJSON_GetObjectItem(d, "config");
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(cfg, "use_mcts")));
    CHECK_INT_EQ(cJSON_GetObjectItem(cfg, "mcts_simulations")->valueint, 10);
    CHECK_INT_EQ(cJSON_GetObjectItem(cfg, "mcts_depth")->valueint, 2);
    CHECK(cJSON_GetObjectItem(cfg, "mcts_c_puct")->valuedouble == 1.0);
    cJSON *steps = cJSON_GetObjectItem(d, "steps");
    int several = 0;
    for (int k = 0; k < cJSON_GetArraySize(steps); k++) {
        cJSON *st = cJSON_GetArrayItem(steps, k);
        cJSON *cands = cJSON_GetObjectItem(st, "mcts");
        REQUIRE(cands && cJSON_GetArraySize(cands) >= 1);
        int visits = 0, committed = 0, n = cJSON_GetArraySize(cands);
        double prior = 0;
        several += n > 1;
        for (int j = 0; j < n; j++) {
            cJSON *cj = cJSON_GetArrayItem(cands, j);
            int v = cJSON_GetObjectItem(cj, "visits")->valueint;
            cJSON *val = cJSON_GetObjectItem(cj, "value");
            visits += v;
            prior += cJSON_GetObjectItem(cj, "prior")->valuedouble;
            CHECK(v > 0 ? cJSON_IsNumber(val) && val->valuedouble <= 0 : cJSON_IsNull(val));
            if (cJSON_IsTrue(cJSON_GetObjectItem(cj, "committed"))) {
                committed++;
                CHECK_INT_EQ(cJSON_GetObjectItem(cj, "token_id")->valueint,
                             cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(st, "tokens"), 0), "token_id")->valueint);
            }
        }
        CHECK_INT_EQ(visits, 10);
        CHECK_INT_EQ(committed, 1);
        CHECK_NEAR(prior, 1.0, 1e-5);
        CHECK_INT_EQ(cJSON_GetArraySize(cJSON_GetObjectItem(st, "tokens")), 1);
    }
    CHECK(several >= 3);
    cJSON_Delete(d);
    free(js);
    tempo_result_free(r);
    tempo_model_close(m);
}

/* The four flags: names, defaults, ranges in the messages, and the combinations refused. */
TEST(mcts_options_checked) {
    tempo_config c;
    tempo_error e;
    tempo_config_init(&c);
    CHECK(!c.gen.use_mcts && c.gen.mcts_simulations == 10 && c.gen.mcts_c_puct == 1.0 && c.gen.mcts_depth == 5);
    CHECK(tempo_config_set(&c, "mcts_simulations", "0", &e) == -1);
    CHECK_MSG(strstr(e.message, "--mcts-simulations: 0 is out of range (must be [1, 10000])"), "%s", e.message);
    CHECK(tempo_config_set(&c, "mcts_depth", "-1", &e) == -1);
    CHECK_MSG(strstr(e.message, "--mcts-depth: -1 is out of range (must be [0, 1000])"), "%s", e.message);
    CHECK(tempo_config_set(&c, "mcts_c_puct", "-0.5", &e) == -1);
    CHECK_MSG(strstr(e.message, "--mcts-c-puct: -0.5 is out of range (must be in [0, 100])"), "%s", e.message);
    /* the MCTS flags need --use-mcts */
    CHECK(tempo_config_set(&c, "mcts_depth", "3", &e) == 0);
    CHECK(tempo_config_validate(&c, &e) == -1);
    CHECK_MSG(strstr(e.message, "--mcts-depth applies to --use-mcts only"), "%s", e.message);
    CHECK(tempo_config_set(&c, "use_mcts", "true", &e) == 0);
    CHECK(tempo_config_validate(&c, &e) == 0);
    /* rollouts sample with --temperature and --seed; the repetition penalty is refused */
    CHECK(tempo_config_set(&c, "temperature", "0.7", &e) == 0 && tempo_config_set(&c, "seed", "5", &e) == 0);
    CHECK_MSG(tempo_config_validate(&c, &e) == 0, "%s", e.message);
    CHECK(tempo_config_set(&c, "repetition_penalty", "1.2", &e) == 0);
    CHECK(tempo_config_validate(&c, &e) == -1);
    CHECK_MSG(strstr(e.message, "--repetition-penalty"), "%s", e.message);
    tempo_config_free(&c);
    /* combinations that cannot work */
    tempo_gen_params g;
    tempo_gen_params_init(&g);
    g.use_mcts = true;
    g.disable_kv_cache = true;
    CHECK(tempo_gen_params_validate(&g, &e) == -1 && strstr(e.message, "--disable-kv-cache"));
    g.disable_kv_cache = false;
    g.default_mode = true;
    CHECK(tempo_gen_params_validate(&g, &e) == -1 && strstr(e.message, "--default-mode"));
    g.default_mode = false;
    g.mcts_simulations = 20000;
    CHECK(tempo_gen_params_validate(&g, &e) == -1 && strstr(e.message, "--mcts-simulations: 20000"));
    /* the CLI: a usage error (exit 2) naming the flag */
    char cmd[512];
    int status;
    snprintf(cmd, sizeof cmd, "%s --model %s --use-mcts --mcts-simulations 0 2>&1", test_tempo_bin(), STORIES);
    char *out = test_run_capture(cmd, &status);
    CHECK_INT_EQ(status, 2);
    CHECK_MSG(out && strstr(out, "--mcts-simulations: 0 is out of range"), "%s", out ? out : "");
    free(out);
}

/* A search needs simulations + depth slots above the path: a cache that cannot hold them is
 * refused at the start, and a run that reaches the cache's end says the search's slots count. */
TEST(mcts_search_slots_must_fit_the_cache) {
    tempo_model *m = open_stories();
    REQUIRE(m);
    tempo_gen_params c;
    mcts_params(&c, 40, 0.1, 10, 5);
    c.max_cache_tokens = 10;
    tempo_error err;
    tempo_session *s = tempo_session_new(m, &c, &err);
    REQUIRE(s);
    CHECK(tempo_session_prefill(s, PROMPT, &err) == -1);
    CHECK_INT_EQ(err.code, TEMPO_ERR_CACHE_LIMIT);
    CHECK_MSG(strstr(err.message, "the --use-mcts search's 15 slots") && strstr(err.message, "may hold only 10"), "%s",
              err.message);
    tempo_session_free(s);
    c.max_cache_tokens = 40; /* 5 + 15 + 20 committed = 40: step 20 cannot be granted */
    tempo_result *r = run_mcts(m, &c, NULL, NULL);
    REQUIRE(r);
    CHECK_INT_EQ(r->stop_reason, TEMPO_STOP_CACHE_LIMIT);
    CHECK_INT_EQ(r->n_steps, 20);
    CHECK_MSG(r->stop_message && strstr(r->stop_message, "includes the 15 slots the --use-mcts search uses"), "%s",
              r->stop_message ? r->stop_message : "");
    tempo_result_free(r);
    tempo_model_close(m);
}
