/* sample.h: standard-mode sampling (design/tempo-semantics.md section 9):
 * repetition penalty, temperature (0 = greedy), top-k, top-p, from a seeded PRNG.
 * Buffers are allocated once in tp_sampler_new; picking never allocates. */
#ifndef TEMPO_SAMPLE_H
#define TEMPO_SAMPLE_H

#include <stdint.h>

#include "tempo/rng.h"

typedef struct {
    double temperature;        /* 0 = greedy */
    int top_k;                 /* 0 = off */
    double top_p;              /* 1 = off */
    double repetition_penalty; /* 1 = off */
    uint64_t seed;
} tp_sampler_params;

typedef struct {
    tp_sampler_params p;
    int n_vocab;
    int32_t *idx;   /* [n_vocab] candidate ids */
    float *val;     /* [n_vocab] scratch */
    uint8_t *mark;  /* [n_vocab] */
    tp_rng rng;
} tp_sampler;

tp_sampler *tp_sampler_new(const tp_sampler_params *p, int n_vocab);
void tp_sampler_free(tp_sampler *s);

/* Pick a token from raw logits (modified in place). hist: the ids so far (prompt
 * and generated) for the repetition penalty, applied once per distinct id the
 * llama.cpp way (positive logits divided, negative multiplied). ban: ids never
 * picked (NULL = none). Order: penalty, ban, temperature, top-k, top-p, draw.
 * top-k and top-p need the candidates in descending order of logit (ties by id),
 * but only as far as the k-th or as far as the mass reaches top_p: that prefix is
 * sorted, not the vocabulary. top-p's denominator (without top-k) is the mass of
 * every allowed id added in id order. */
int tp_sampler_pick(tp_sampler *s, float *logits, const int32_t *hist, int n_hist, const uint8_t *ban);

#endif
