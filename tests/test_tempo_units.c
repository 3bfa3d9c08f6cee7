/* test_tempo_units.c: TEMPO's pure parts: thresholds at known points, selection
 * (inclusive threshold, top-W cap, ties, end of generation, fallback), the mixture,
 * pruning weights and decisions, the sampler, text and JSON output. */
#include <math.h>
#include "test.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "output/json.h"
#include "output/text.h"
#include "tempo/prune.h"
#include "tempo/rng.h"
#include "tempo/sample.h"
#include "tempo/select.h"
#include "kernels/ops.h"

static tp_threshold_params thr(double t0, int T, bool dyn, bool relu) {
    tp_threshold_params p = { t0, T, dyn, 1.0, relu, 0.2, 0.8, 0.5 };
    return p;
}

TEST(tempo_threshold_constant) {
    tp_threshold_params p = thr(0.1, 10, false, false);
    for (int k = 0; k < 10; k++) CHECK_NEAR(tp_threshold(&p, k), 0.1, 1e-15);
}

TEST(tempo_threshold_bezier_known_points) {
    CHECK_NEAR(tp_bezier(0.0, 0.2, 0.8), 0.0, 1e-15);
    CHECK_NEAR(tp_bezier(1.0, 0.2, 0.8), 1.0, 1e-15);
    CHECK_NEAR(tp_bezier(0.5, 0.2, 0.8), 0.5, 1e-15);     /* .075 + .3 + .125 */
    CHECK_NEAR(tp_bezier(0.25, 0.2, 0.8), 0.2125, 1e-15); /* .084375 + .1125 + .015625 */
    CHECK_NEAR(tp_bezier(0.5, 0.0, 0.0), 0.125, 1e-15);
    /* max_tokens 11: t = k / 10 */
    tp_threshold_params p = thr(0.1, 11, true, false);
    CHECK_NEAR(tp_threshold(&p, 0), 0.1, 1e-12);
    CHECK_NEAR(tp_threshold(&p, 5), 0.1 + 0.9 * 0.5, 1e-12);
    CHECK_NEAR(tp_threshold(&p, 10), 1.0, 1e-12);
    /* one step: t = 0 / max(1, 0) = 0 */
    tp_threshold_params one = thr(0.3, 1, true, false);
    CHECK_NEAR(tp_threshold(&one, 0), 0.3, 1e-12);
}

TEST(tempo_threshold_relu_known_points) {
    CHECK_NEAR(tp_relu_schedule(0.25, 0.5), 0.0, 1e-15);
    CHECK_NEAR(tp_relu_schedule(0.5, 0.5), 0.0, 1e-15);
    CHECK_NEAR(tp_relu_schedule(0.75, 0.5), 0.5, 1e-15);
    CHECK_NEAR(tp_relu_schedule(1.0, 0.5), 1.0, 1e-15);
    CHECK_NEAR(tp_relu_schedule(0.5, 0.0), 0.5, 1e-15);
    tp_threshold_params p = thr(0.1, 5, true, true); /* t = k / 4 */
    CHECK_NEAR(tp_threshold(&p, 1), 0.1, 1e-12);
    CHECK_NEAR(tp_threshold(&p, 3), 0.1 + 0.9 * 0.5, 1e-12);
    CHECK_NEAR(tp_threshold(&p, 4), 1.0, 1e-12);
}

TEST(tempo_threshold_clamped) {
    tp_threshold_params p = { 0.5, 3, true, 1.5, false, 1.0, 1.0, 0.5 }; /* B overshoots nothing, tau_f > 1 */
    CHECK_NEAR(tp_threshold(&p, 2), 1.0, 1e-15);
    tp_threshold_params q = { 0.5, 3, true, -0.5, false, 0.2, 0.8, 0.5 };
    CHECK_NEAR(tp_threshold(&q, 2), 0.0, 1e-15);
}

TEST(tempo_select_inclusive_order_and_cap) {
    float D[8] = { 0.0625f, 0.25f, 0.0f, 0.25f, 0.125f, 0.3125f, 0.0f, 0.0f };
    int32_t ids[8];
    float p[8];
    /* tau = 0.125 exactly: 4 is included (inclusive); ties 1 and 3 by id */
    int n = tp_select(D, 8, NULL, 0.125, 8, 0, 0, ids, p);
    REQUIRE(n == 4);
    CHECK(ids[0] == 5 && ids[1] == 1 && ids[2] == 3 && ids[3] == 4);
    CHECK(p[0] == 0.3125f && p[1] == 0.25f && p[3] == 0.125f);
    /* W = 2 keeps the first two in selection order */
    n = tp_select(D, 8, NULL, 0.125, 2, 0, 0, ids, p);
    REQUIRE(n == 2);
    CHECK(ids[0] == 5 && ids[1] == 1);
    /* W = 1: greedy */
    n = tp_select(D, 8, NULL, 0.0, 1, 0, 0, ids, p);
    CHECK(n == 1 && ids[0] == 5);
    /* nothing passes: the most probable token */
    n = tp_select(D, 8, NULL, 0.9, 4, 0, 0, ids, p);
    CHECK(n == 1 && ids[0] == 5 && p[0] == 0.3125f);
}

TEST(tempo_select_end_of_generation) {
    float D[6] = { 0.05f, 0.4f, 0.3f, 0.2f, 0.05f, 0.0f };
    uint8_t eog[6] = { 0, 1, 0, 0, 0, 0 }; /* id 1 is the argmax and an EOG */
    int32_t ids[6];
    float p[6];
    CHECK(tp_select(D, 6, eog, 0.1, 4, 3, 0, ids, p) == 0);      /* k >= min_steps: stop */
    CHECK(tp_select(D, 6, eog, 0.1, 4, 3, 3, ids, p) == 0);      /* k == min_steps: stop */
    int n = tp_select(D, 6, eog, 0.1, 4, 2, 3, ids, p);          /* before min_steps: EOG removed */
    REQUIRE(n == 2);
    CHECK(ids[0] == 2 && ids[1] == 3);
    n = tp_select(D, 6, eog, 0.5, 4, 0, 5, ids, p);              /* nothing left: best non-EOG */
    CHECK(n == 1 && ids[0] == 2);
    /* an EOG that passes but is not the argmax is simply removed */
    uint8_t eog2[6] = { 0, 0, 1, 0, 0, 0 };
    n = tp_select(D, 6, eog2, 0.1, 4, 0, 0, ids, p);
    REQUIRE(n == 2);
    CHECK(ids[0] == 1 && ids[1] == 3);
}

TEST(tempo_mixture_weights_and_single_member) {
    float logits[2 * 3] = { 1.0f, 2.0f, 3.0f, 0.0f, 0.0f, 0.0f };
    float p[2] = { 0.3f, 0.1f }, out[3];
    tp_mixture(logits, p, 2, 3, out);
    double e1 = exp(1), e2 = exp(2), e3 = exp(3), s = e1 + e2 + e3;
    double w0 = 0.75, w1 = 0.25;
    CHECK_NEAR(out[0], w0 * e1 / s + w1 / 3.0, 1e-6);
    CHECK_NEAR(out[1], w0 * e2 / s + w1 / 3.0, 1e-6);
    CHECK_NEAR(out[2], w0 * e3 / s + w1 / 3.0, 1e-6);
    CHECK_NEAR(out[0] + out[1] + out[2], 1.0, 1e-6);
    float one[3] = { 1.0f, 2.0f, 3.0f }, p1 = 0.7f, o1[3];
    tp_mixture(one, &p1, 1, 3, o1);
    CHECK_NEAR(o1[2], e3 / s, 1e-6);
    CHECK(tp_argmax(o1, 3, NULL) == 2);
}

/* The pool version splits the vocabulary across threads: the same bits as one thread, for
 * one member and several, with a vocabulary that does not divide evenly. */
/* The reference: the loop tp_argmax's contract names. */
static int argmax_loop(const float *D, int n, const uint8_t *skip) {
    int best = -1;
    for (int i = 0; i < n; i++) {
        if (skip && skip[i]) continue;
        if (best < 0 || D[i] > D[best]) best = i;
    }
    return best;
}

/* tp_argmax (two passes, 8 chains) returns the plain loop's index: ties, skipped ids,
 * -inf, NaN (first or not), every length around the 8-wide blocks. */
TEST(tempo_argmax_equals_the_loop) {
    float D[75];
    uint8_t skip[75];
    uint32_t r = 12345;
    int cases = 0;
    for (int n = 0; n <= 75; n++)
        for (int rep = 0; rep < 40; rep++) {
            for (int i = 0; i < n; i++) {
                r = r * 1664525u + 1013904223u;
                int kind = (int)(r >> 28); /* 16 kinds */
                D[i] = kind < 8 ? (float)((r >> 8) % 5) /* many ties */
                     : kind < 12 ? (float)(r >> 8) / 16777216.0f
                     : kind < 14 ? -INFINITY : kind < 15 ? NAN : INFINITY;
                if (rep % 3 == 0 && kind == 15) D[i] = -INFINITY; /* sometimes no +inf at all */
                skip[i] = (uint8_t)(((r >> 4) & 3) == 0);
            }
            if (rep % 5 == 0 && n > 0) D[0] = NAN;
            if (rep % 7 == 0) for (int i = 0; i < n; i++) skip[i] = 1;
            CHECK_INT_EQ(tp_argmax(D, n, NULL), argmax_loop(D, n, NULL));
            CHECK_INT_EQ(tp_argmax(D, n, skip), argmax_loop(D, n, skip));
            cases++;
        }
    CHECK_INT_EQ(cases, 76 * 40);
}

/* tp_prob_softmax finds its maximum in 8 chains: the same bits as the one-chain loop it
 * replaced (this reference), on every length around the chains, with ties, -inf and a NaN. */
static void softmax_loop(float *x, int n) {
    float mx = x[0];
    for (int i = 1; i < n; i++) if (x[i] > mx) mx = x[i];
    float sum = 0.0f;
    for (int i = 0; i < n; i++) { x[i] = tp_expf(x[i] - mx); sum += x[i]; }
    float inv = 1.0f / sum;
    for (int i = 0; i < n; i++) x[i] *= inv;
}

TEST(tempo_softmax_equals_the_one_chain_loop) {
    float a[80], b[80];
    uint32_t r = 777;
    for (int n = 1; n <= 80; n++)
        for (int rep = 0; rep < 20; rep++) {
            for (int i = 0; i < n; i++) {
                r = r * 1664525u + 1013904223u;
                int kind = (int)(r >> 28);
                a[i] = kind < 6 ? (float)((r >> 8) % 7) : kind < 14 ? ((float)(r >> 8) / 16777216.0f - 0.5f) * 20.0f
                     : kind < 15 ? -INFINITY : NAN;
            }
            memcpy(b, a, sizeof(float) * (size_t)n);
            tp_prob_softmax(a, n);
            softmax_loop(b, n);
            CHECK_MSG(!memcmp(a, b, sizeof(float) * (size_t)n), "n %d rep %d", n, rep);
        }
}

TEST(tempo_mixture_pool_equals_serial_bit_for_bit) {
    enum { V = 4099, N = 8 };
    static float a[N * V], b[N * V], oa[V], ob[V];
    uint32_t r = 7;
    tp_pool *pool = tp_pool_create(0);
    REQUIRE(pool != NULL);
    const int ns[] = { 1, 3, N };
    for (int c = 0; c < 3; c++) {
        int n = ns[c];
        float p[N];
        for (int j = 0; j < n; j++) p[j] = 0.05f + 0.1f * (float)j;
        for (int i = 0; i < n * V; i++) {
            r = r * 1664525u + 1013904223u;
            a[i] = b[i] = (float)(r >> 8) / (float)(1u << 24) * 30.0f - 15.0f;
        }
        tp_mixture(a, p, n, V, oa);
        tp_mixture_pool(b, p, n, V, ob, pool);
        CHECK(memcmp(oa, ob, sizeof oa) == 0);
        CHECK(memcmp(a, b, sizeof(float) * (size_t)n * V) == 0);
    }
    tp_pool_free(pool);
}

TEST(tempo_prune_layer_weights) {
    float w[5];
    tp_prune_layer_weights(5, true, w); /* linspace(.2, 1, 5) / 3 */
    CHECK_NEAR(w[0], 0.2 / 3, 1e-7);
    CHECK_NEAR(w[2], 0.6 / 3, 1e-7);
    CHECK_NEAR(w[4], 1.0 / 3, 1e-7);
    tp_prune_layer_weights(5, false, w);
    CHECK(w[0] == 0.0f && w[1] == 0.0f);
    CHECK_NEAR(w[2], 1.0 / 3, 1e-7);
    CHECK_NEAR(w[4], 1.0 / 3, 1e-7);
    tp_prune_layer_weights(2, false, w);
    CHECK_NEAR(w[0], 0.5, 1e-7);
    CHECK_NEAR(w[1], 0.5, 1e-7);
    tp_prune_layer_weights(1, true, w);
    CHECK_NEAR(w[0], 1.0, 1e-7);
}

TEST(tempo_prune_score_weights_queries) {
    /* 2 queries x 4 columns; p = .6, .2 -> w = .75, .25 */
    float attn[8] = { 0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.0f, 0.5f, 0.0f };
    float p[2] = { 0.6f, 0.2f };
    CHECK_NEAR(tp_prune_score(attn, 4, p, 2, 0), 0.75 * 0.1 + 0.25 * 0.5, 1e-7);
    CHECK_NEAR(tp_prune_score(attn, 4, p, 2, 1), 0.75 * 0.2, 1e-7);
}

TEST(tempo_prune_rules_keep_the_best_member) {
    tp_prune_rule rel = { true, 0.5, 0.01 }, abs_ = { false, 0.5, 0.2 };
    float score[4] = { 0.5f, 0.1f, 0.3f, 0.2f }, prob[4] = { 0.4f, 0.3f, 0.2f, 0.1f };
    int32_t id[4] = { 10, 11, 12, 13 };
    bool alive[4] = { true, true, true, true }, pr[4];
    /* mean .275, limit .1375: only member 1 */
    CHECK(tp_prune_decide(&rel, 4, score, prob, id, alive, pr) == 1);
    CHECK(pr[1] && !pr[0] && !pr[2] && !pr[3]);
    /* absolute .2: member 1 only (0.2 is not below 0.2) */
    CHECK(tp_prune_decide(&abs_, 4, score, prob, id, alive, pr) == 1);
    CHECK(pr[1] && !pr[3]);
    /* a dead member is not in the mean: alive {0, 2, 3}: mean 1/3, limit 1/6: none */
    bool alive2[4] = { true, false, true, true };
    CHECK(tp_prune_decide(&rel, 4, score, prob, id, alive2, pr) == 0);
    /* everything under the absolute threshold: the best one stays */
    tp_prune_rule hi = { false, 0.5, 0.9 };
    CHECK(tp_prune_decide(&hi, 4, score, prob, id, alive, pr) == 3);
    CHECK(!pr[0] && pr[1] && pr[2] && pr[3]);
    /* ties on score: higher probability, then lower id */
    float flat[3] = { 0.1f, 0.1f, 0.1f }, fp[3] = { 0.2f, 0.5f, 0.5f };
    int32_t fid[3] = { 7, 9, 8 };
    bool fa[3] = { true, true, true }, fpr[3];
    CHECK(tp_prune_decide(&hi, 3, flat, fp, fid, fa, fpr) == 2);
    CHECK(fpr[0] && fpr[1] && !fpr[2]);
    /* a set with one alive member is left alone */
    bool one[3] = { false, true, false };
    CHECK(tp_prune_decide(&hi, 3, flat, fp, fid, one, fpr) == 0);
}

TEST(tempo_sampler_greedy_ban_penalty) {
    tp_sampler_params sp = { 0.0, 0, 1.0, 1.0, 1 };
    tp_sampler *s = tp_sampler_new(&sp, 4);
    float z[4] = { 1.0f, 3.0f, 2.9f, -1.0f };
    CHECK(tp_sampler_pick(s, z, NULL, 0, NULL) == 1);
    float z2[4] = { 1.0f, 3.0f, 2.9f, -1.0f };
    uint8_t ban[4] = { 0, 1, 0, 0 };
    CHECK(tp_sampler_pick(s, z2, NULL, 0, ban) == 2);
    tp_sampler_free(s);
    /* repetition penalty 1.5 on id 1 (seen twice, applied once): 3/1.5 = 2 < 2.9 */
    tp_sampler_params rp = { 0.0, 0, 1.0, 1.5, 1 };
    s = tp_sampler_new(&rp, 4);
    float z3[4] = { 1.0f, 3.0f, 2.9f, -1.0f };
    int32_t hist[3] = { 1, 1, 3 };
    CHECK(tp_sampler_pick(s, z3, hist, 3, NULL) == 2);
    CHECK_NEAR(z3[1], 2.0, 1e-6);
    CHECK_NEAR(z3[3], -1.5, 1e-6); /* negative logits are multiplied */
    tp_sampler_free(s);
}

TEST(tempo_sampler_seeded_and_distribution) {
    enum { V = 4, N = 20000 };
    tp_sampler_params sp = { 1.0, 0, 1.0, 1.0, 42 };
    tp_sampler *a = tp_sampler_new(&sp, V), *b = tp_sampler_new(&sp, V);
    sp.seed = 43;
    tp_sampler *c = tp_sampler_new(&sp, V);
    const float base[V] = { 0.0f, 1.0f, 2.0f, 0.5f };
    int count[V] = { 0 }, same = 0, diff = 0;
    for (int i = 0; i < N; i++) {
        float z1[V], z2[V], z3[V];
        memcpy(z1, base, sizeof z1); memcpy(z2, base, sizeof z2); memcpy(z3, base, sizeof z3);
        int x = tp_sampler_pick(a, z1, NULL, 0, NULL), y = tp_sampler_pick(b, z2, NULL, 0, NULL);
        int w = tp_sampler_pick(c, z3, NULL, 0, NULL);
        same += x == y;
        diff += x != w;
        count[x]++;
    }
    CHECK(same == N);
    CHECK(diff > N / 10);
    double s = exp(0) + exp(1) + exp(2) + exp(0.5);
    CHECK_NEAR(count[2] / (double)N, exp(2) / s, 0.02);
    CHECK_NEAR(count[0] / (double)N, 1.0 / s, 0.02);
    tp_sampler_free(a); tp_sampler_free(b); tp_sampler_free(c);
    /* top-k 1 and a tiny top-p are greedy */
    tp_sampler_params k1 = { 1.0, 1, 1.0, 1.0, 7 }, p0 = { 1.0, 0, 0.01, 1.0, 7 };
    tp_sampler *sk = tp_sampler_new(&k1, V), *spp = tp_sampler_new(&p0, V);
    for (int i = 0; i < 100; i++) {
        float z1[V], z2[V];
        memcpy(z1, base, sizeof z1); memcpy(z2, base, sizeof z2);
        CHECK(tp_sampler_pick(sk, z1, NULL, 0, NULL) == 2);
        CHECK(tp_sampler_pick(spp, z2, NULL, 0, NULL) == 2);
    }
    tp_sampler_free(sk); tp_sampler_free(spp);
    /* top-k 2 never picks outside the two best */
    tp_sampler_params k2 = { 5.0, 2, 1.0, 1.0, 9 };
    tp_sampler *s2 = tp_sampler_new(&k2, V);
    int seen[V] = { 0 };
    for (int i = 0; i < 500; i++) {
        float z[V];
        memcpy(z, base, sizeof z);
        seen[tp_sampler_pick(s2, z, NULL, 0, NULL)]++;
    }
    CHECK(seen[0] == 0 && seen[3] == 0 && seen[1] > 0 && seen[2] > 0);
    tp_sampler_free(s2);
}

/* The sampler as it was with a full sort of the vocabulary (the reference): the draws of
 * tp_sampler_pick, which sorts only the prefix that top-k / top-p reach, must be the same. */
static int ref_cmp_desc(const void *a, const void *b, void *ctx) {
    const float *x = ctx;
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    if (x[i] != x[j]) return x[i] > x[j] ? -1 : 1;
    return (i > j) - (i < j);
}

static int ref_pick(const tp_sampler_params *p, tp_rng *rng, float *logits, int V, const uint8_t *ban, int32_t *idx,
                    float *val) {
    if (ban)
        for (int i = 0; i < V; i++) if (ban[i]) logits[i] = -INFINITY;
    int best = tp_argmax(logits, V, ban);
    if (p->temperature <= 0.0) return best;
    int n = 0;
    for (int i = 0; i < V; i++) if (!ban || !ban[i]) idx[n++] = i;
    float inv_t = (float)(1.0 / p->temperature);
    if ((p->top_k > 0 && p->top_k < n) || p->top_p < 1.0) qsort_r(idx, (size_t)n, sizeof(int32_t), ref_cmp_desc, logits);
    if (p->top_k > 0 && p->top_k < n) n = p->top_k;
    float mx = -INFINITY;
    for (int c = 0; c < n; c++) if (logits[idx[c]] > mx) mx = logits[idx[c]];
    double sum = 0.0;
    for (int c = 0; c < n; c++) { val[c] = expf((logits[idx[c]] - mx) * inv_t); sum += val[c]; }
    if (p->top_p < 1.0) {
        double acc = 0.0;
        int keep = n;
        for (int c = 0; c < n; c++) {
            acc += val[c] / sum;
            if (acc >= p->top_p) { keep = c + 1; break; }
        }
        n = keep;
        sum = 0.0;
        for (int c = 0; c < n; c++) sum += val[c];
    }
    double u = tp_rng_uniform(rng) * sum, acc = 0.0;
    for (int c = 0; c < n; c++) {
        acc += val[c];
        if (u < acc) return idx[c];
    }
    return idx[n - 1];
}

TEST(tempo_sampler_prefix_sort_equals_full_sort) {
    enum { V = 3000, DRAWS = 40 };
    static const double temps[] = { 0.3, 1.0, 4.0 }, top_ps[] = { 1.0, 0.9, 0.5, 0.999, 1e-4 };
    static const int top_ks[] = { 0, 1, 7, 40, V - 1 };
    float *z = malloc(sizeof(float) * V), *za = malloc(sizeof(float) * V), *zb = malloc(sizeof(float) * V);
    float *val = malloc(sizeof(float) * V);
    int32_t *idx = malloc(sizeof(int32_t) * V);
    uint8_t *ban = malloc(V);
    uint32_t r = 99;
    int draws = 0;
    for (size_t ti = 0; ti < sizeof temps / sizeof temps[0]; ti++)
        for (size_t ki = 0; ki < sizeof top_ks / sizeof top_ks[0]; ki++)
            for (size_t pi = 0; pi < sizeof top_ps / sizeof top_ps[0]; pi++) {
                tp_sampler_params sp = { temps[ti], top_ks[ki], top_ps[pi], 1.0, 1000 + ti * 100 + ki * 10 + pi };
                tp_sampler *s = tp_sampler_new(&sp, V);
                tp_rng rng;
                tp_rng_seed(&rng, sp.seed);
                for (int d = 0; d < DRAWS; d++) {
                    for (int i = 0; i < V; i++) {
                        r = r * 1664525u + 1013904223u;
                        /* logits of a real model's spread, some ties, a few far below */
                        z[i] = (r >> 28) == 0 ? (float)((r >> 8) % 3) : ((float)(r >> 8) / 16777216.0f) * 12.0f - 8.0f;
                        ban[i] = (uint8_t)((r & 0xFF) == 0);
                    }
                    const uint8_t *b = d % 2 ? ban : NULL;
                    memcpy(za, z, sizeof(float) * V);
                    memcpy(zb, z, sizeof(float) * V);
                    int got = tp_sampler_pick(s, za, NULL, 0, b), want = ref_pick(&sp, &rng, zb, V, b, idx, val);
                    CHECK_MSG(got == want, "T %g top_k %d top_p %g draw %d: %d, the full sort %d", sp.temperature,
                              sp.top_k, sp.top_p, d, got, want);
                    draws++;
                }
                tp_sampler_free(s);
            }
    CHECK_INT_EQ(draws, 3 * 5 * 5 * DRAWS);
    free(z); free(za); free(zb); free(val); free(idx); free(ban);
}

TEST(tempo_rng_uniform_range) {
    tp_rng r;
    tp_rng_seed(&r, 123);
    double sum = 0;
    for (int i = 0; i < 10000; i++) {
        double u = tp_rng_uniform(&r);
        CHECK(u >= 0.0 && u < 1.0);
        sum += u;
    }
    CHECK_NEAR(sum / 10000, 0.5, 0.02);
}

/* A two-step result: " a" then [" b"/" c"(pruned)/" d"]. */
static tempo_token toks[4] = {
    { 5, " a", 0.9f, false, -1, -1.0f, -1 },
    { 6, " b", 0.5f, false, -1, 0.4f, 1 }, { 7, " c", 0.3f, true, 1, 0.01f, 1 }, { 8, " d", 0.2f, false, -1, 0.3f, 1 },
};
static tempo_step steps2[2] = {
    { 0, 3, 1, &toks[0], false, false, 0, NULL },
    { 1, 4, 3, &toks[1], true, false, 0, NULL },
};

TEST(tempo_text_plain_and_ids) {
    char *t = tp_text_generated("P:", steps2, 2, false);
    CHECK(strcmp(t, "P: a[ b/ d]") == 0);
    free(t);
    t = tp_text_generated("P:", steps2, 2, true);
    CHECK(strcmp(t, "P: a(5)[ b(6)/ d(8)]") == 0);
    free(t);
    t = tp_text_clean("P:", steps2, 2);
    CHECK(strcmp(t, "P: a b") == 0);
    free(t);
    /* one member left alive: no brackets */
    tempo_token two[2] = { { 1, "x", 0.6f, true, 3, 0.0f, 3 }, { 2, "y", 0.4f, false, -1, 0.5f, 3 } };
    tempo_step st = { 0, 0, 2, two, true, false, 0, NULL };
    tp_str s = { 0 };
    tp_text_append_step(&s, &st, true, false);
    char *o = tp_str_take(&s);
    CHECK(strcmp(o, "y") == 0);
    free(o);
}

TEST(tempo_text_colour) {
    tp_str s = { 0 };
    tp_text_append_step(&s, &steps2[1], true, false);
    char *o = tp_str_take(&s);
    /* member 0 green, member 2 (index kept after pruning) blue */
    CHECK(strcmp(o, "[\x1b[32m b\x1b[0m/\x1b[34m d\x1b[0m]") == 0);
    free(o);
    tp_text_append_step(&s, &steps2[0], true, false); /* a single token is not coloured */
    o = tp_str_take(&s);
    CHECK(strcmp(o, " a") == 0);
    free(o);
}

TEST(tempo_text_utf8_sanitize) {
    char *o = tp_utf8_sanitize("ok \xC3\xA9 \xE2\x82 x \xF0\x9F\x98\x80 \xFF");
    CHECK(strcmp(o, "ok \xC3\xA9 \xEF\xBF\xBD\xEF\xBF\xBD x \xF0\x9F\x98\x80 \xEF\xBF\xBD") == 0);
    free(o);
    /* what a user reads: the bytes of a broken character as <0xNN>, valid text as it is */
    o = tempo_token_display("ok \xC3\xA9 \xE2\x82 x \xF0\x9F\x98\x80 \xFF");
    CHECK_MSG(strcmp(o, "ok \xC3\xA9 <0xE2><0x82> x \xF0\x9F\x98\x80 <0xFF>") == 0, "%s", o);
    free(o);
    CHECK(tp_text_is_utf8("ok \xC3\xA9") && !tp_text_is_utf8("\xE2\x82"));
    /* a step's text shows a partial member as bytes; the whole text joins a character split
     * across single-token steps */
    tempo_token parts[3] = { { 1, "\xE2", 0.9f, false, -1, -1.0f, -1 }, { 2, "\x82\xAC", 0.9f, false, -1, -1.0f, -1 },
                             { 3, "\xFE", 0.1f, false, -1, -1.0f, -1 } };
    tempo_step two_steps[2] = { { 0, 1, 1, &parts[0], false, false, 0, NULL }, { 1, 2, 2, &parts[1], false, false, 0, NULL } };
    char *st = tempo_step_text(&two_steps[0], false, false);
    CHECK_MSG(strcmp(st, "<0xE2>") == 0, "%s", st);
    free(st);
    o = tp_text_generated("", two_steps, 1, false);
    CHECK_MSG(strcmp(o, "<0xE2>") == 0, "%s", o);
    free(o);
    tempo_step joined[2] = { { 0, 1, 1, &parts[0], false, false, 0, NULL }, { 1, 2, 1, &parts[1], false, false, 0, NULL } };
    o = tp_text_generated("", joined, 2, false);
    CHECK_MSG(strcmp(o, "\xE2\x82\xAC") == 0, "%s", o); /* the euro sign */
    free(o);
}

TEST(tempo_json_schema) {
    tempo_config cfg;
    tempo_config_init(&cfg);
    tempo_result r = { 0 };
    tempo_gen_params_init(&r.params);
    r.prompt = "P:";
    r.generated_text = "P: a[ b/ d]";
    r.clean_text = "P: a b";
    r.n_steps = 2;
    r.steps = steps2;
    r.stop_reason = TEMPO_STOP_EOS;
    r.generation_time_s = 0.5;
    r.parallel_steps = 1;
    r.total_slots = 7;
    r.max_parallel_tokens = 7;
    char *js = tp_json_result(&r, &cfg);
    cJSON *d = cJSON_Parse(js);
    REQUIRE(d);
    const char *top[] = { "prompt", "generated_text", "clean_text", "steps", "config", "metrics", "stop_reason" };
    for (size_t i = 0; i < sizeof top / sizeof *top; i++) CHECK_MSG(cJSON_HasObjectItem(d, top[i]), "missing %s", top[i]);
    CHECK(strcmp(cJSON_GetObjectItem(d, "stop_reason")->valuestring, "eos") == 0);
    cJSON *steps = cJSON_GetObjectItem(d, "steps");
    REQUIRE(cJSON_GetArraySize(steps) == 2);
    cJSON *s1 = cJSON_GetArrayItem(steps, 1);
    CHECK(cJSON_GetObjectItem(s1, "step")->valueint == 1);
    CHECK(cJSON_GetObjectItem(s1, "position")->valueint == 4);
    CHECK(cJSON_GetObjectItem(s1, "original_count")->valueint == 3);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(s1, "was_pruned")));
    cJSON *t1 = cJSON_GetArrayItem(cJSON_GetObjectItem(s1, "tokens"), 1);
    const char *tk[] = { "token_id", "text", "probability", "pruned", "pruned_at_step", "prune_score", "scored_at_step" };
    for (size_t i = 0; i < 7; i++) CHECK_MSG(cJSON_HasObjectItem(t1, tk[i]), "missing token key %s", tk[i]);
    CHECK(cJSON_GetObjectItem(t1, "token_id")->valueint == 7);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(t1, "pruned")));
    CHECK(cJSON_GetObjectItem(t1, "pruned_at_step")->valueint == 1);
    CHECK_NEAR(cJSON_GetObjectItem(t1, "probability")->valuedouble, 0.3, 1e-6);
    cJSON *m = cJSON_GetObjectItem(d, "metrics");
    const char *mk[] = { "generation_time_s", "steps", "parallel_steps", "total_slots", "peak_memory_bytes", "steps_per_second" };
    for (size_t i = 0; i < 6; i++) CHECK_MSG(cJSON_HasObjectItem(m, mk[i]), "missing metric %s", mk[i]);
    CHECK_NEAR(cJSON_GetObjectItem(m, "steps_per_second")->valuedouble, 4.0, 1e-9);
    /* config: every option of the table, effective width */
    cJSON *c = cJSON_GetObjectItem(d, "config");
    int n;
    const tempo_option_info *opts = tempo_options(&n);
    for (int i = 0; i < n; i++) CHECK_MSG(cJSON_HasObjectItem(c, opts[i].key), "config lacks %s", opts[i].key);
    CHECK(cJSON_GetObjectItem(c, "max_parallel_tokens")->valueint == 7);
    CHECK_NEAR(cJSON_GetObjectItem(c, "selection_threshold")->valuedouble, 0.1, 1e-12);
    cJSON_Delete(d);
    free(js);
    tempo_config_free(&cfg);
}
