/* rng.h -- a small, seedable, reproducible random number generator.
 *
 * xoshiro256** seeded through splitmix64. Everything random in spirt (weight
 * initialisation, shuffling, partitioning, attacks, injected faults) draws
 * from an SpirtRng seeded from the run's --seed, so a run can be repeated
 * bit for bit. Independent streams come from rng_init_stream(seed, stream):
 * peer 3's shuffling and peer 4's never share a sequence.
 *
 * An SpirtRng is plain caller-owned storage; it is not thread-safe (give each
 * thread its own stream). */
#ifndef SPIRT_RNG_H
#define SPIRT_RNG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct SpirtRng {
    uint64_t state[4];
    int has_spare_normal; /* Box-Muller makes normals in pairs */
    double spare_normal;
} SpirtRng;

void rng_init(SpirtRng *rng, uint64_t seed);
/* A stream of its own for each (seed, stream) pair, e.g. (run seed, peer id). */
void rng_init_stream(SpirtRng *rng, uint64_t seed, uint64_t stream);

uint64_t rng_next_u64(SpirtRng *rng);
/* Uniform in [0, 1), 53 random bits. */
double rng_uniform(SpirtRng *rng);
/* Uniform integer in [0, bound), without modulo bias. bound must be > 0. */
uint64_t rng_below(SpirtRng *rng, uint64_t bound);
/* Standard normal N(0, 1). */
double rng_normal(SpirtRng *rng);
/* Gamma(shape, 1), shape > 0 (Marsaglia and Tsang). Used for Dirichlet draws. */
double rng_gamma(SpirtRng *rng, double shape);
/* Fisher-Yates shuffle of `count` indices in place. */
void rng_shuffle_indices(SpirtRng *rng, size_t *indices, size_t count);

#ifdef __cplusplus
}
#endif

#endif /* SPIRT_RNG_H */
