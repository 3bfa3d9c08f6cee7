/* rng.h: a small seeded PRNG (xoshiro256**, seeded through splitmix64) so that
 * standard-mode sampling is reproducible from --seed on every platform. */
#ifndef TEMPO_RNG_H
#define TEMPO_RNG_H

#include <stdint.h>

typedef struct { uint64_t s[4]; } tp_rng;

void tp_rng_seed(tp_rng *r, uint64_t seed);
uint64_t tp_rng_next(tp_rng *r);
/* Uniform in [0, 1) with 53 random bits. */
double tp_rng_uniform(tp_rng *r);

#endif
