/* rng.c -- xoshiro256** with splitmix64 seeding (see include/spirt/rng.h).
 *
 * The generator is Blackman and Vigna's xoshiro256**; splitmix64 spreads a
 * 64-bit seed over its 256 bits of state so nearby seeds give unrelated
 * sequences. */
#include "spirt/rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void rng_init(SpirtRng *rng, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) rng->state[i] = splitmix64(&x);
    rng->has_spare_normal = 0;
    rng->spare_normal = 0.0;
}

void rng_init_stream(SpirtRng *rng, uint64_t seed, uint64_t stream) {
    /* Mix the stream number through splitmix64 before combining, so streams
     * 1 and 2 of seed s are not streams 2 and 1 of seed s + 1. */
    uint64_t x = stream ^ 0x5851f42d4c957f2dull;
    rng_init(rng, seed ^ splitmix64(&x));
}

static inline uint64_t rotate_left(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t rng_next_u64(SpirtRng *rng) {
    uint64_t *s = rng->state;
    uint64_t result = rotate_left(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotate_left(s[3], 45);
    return result;
}

double rng_uniform(SpirtRng *rng) { return (double)(rng_next_u64(rng) >> 11) * 0x1.0p-53; }

uint64_t rng_below(SpirtRng *rng, uint64_t bound) {
    /* Reject the top partial range so every residue is equally likely. */
    uint64_t threshold = (0 - bound) % bound;
    for (;;) {
        uint64_t r = rng_next_u64(rng);
        if (r >= threshold) return r % bound;
    }
}

double rng_normal(SpirtRng *rng) {
    if (rng->has_spare_normal) {
        rng->has_spare_normal = 0;
        return rng->spare_normal;
    }
    double u1;
    do u1 = rng_uniform(rng);
    while (u1 <= 0.0);
    double u2 = rng_uniform(rng);
    double radius = sqrt(-2.0 * log(u1));
    double angle = 2.0 * M_PI * u2;
    rng->spare_normal = radius * sin(angle);
    rng->has_spare_normal = 1;
    return radius * cos(angle);
}

double rng_gamma(SpirtRng *rng, double shape) {
    if (shape < 1.0) {
        /* Gamma(a) = Gamma(a + 1) * U^(1/a) for a < 1. */
        double u;
        do u = rng_uniform(rng);
        while (u <= 0.0);
        return rng_gamma(rng, shape + 1.0) * pow(u, 1.0 / shape);
    }
    double d = shape - 1.0 / 3.0;
    double c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x, v;
        do {
            x = rng_normal(rng);
            v = 1.0 + c * x;
        } while (v <= 0.0);
        v = v * v * v;
        double u = rng_uniform(rng);
        if (u < 1.0 - 0.0331 * x * x * x * x) return d * v;
        if (u > 0.0 && log(u) < 0.5 * x * x + d * (1.0 - v + log(v))) return d * v;
    }
}

void rng_shuffle_indices(SpirtRng *rng, size_t *indices, size_t count) {
    for (size_t i = count; i > 1; i--) {
        size_t j = (size_t)rng_below(rng, i);
        size_t tmp = indices[i - 1];
        indices[i - 1] = indices[j];
        indices[j] = tmp;
    }
}
