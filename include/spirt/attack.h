/* attack.h -- what a Byzantine peer publishes instead of its honest average.
 *
 * Used by experiments and tests: a peer given an attack role runs the normal
 * runtime and, at publish time, replaces its honest average with
 * attack_craft()'s output (or, for label-flip, trains on flipped labels).
 * Definitions follow shared notes/robust-aggregation.md:
 *
 *   sign-flip  -scale * own                          scale (10, SPIRT's code)
 *   gaussian   N(0, sigma^2) per coordinate           sigma (100)
 *   label-flip honest training on labels y -> C-1-y   (no parameter)
 *   alie       mu - z * sd per coordinate over the honest vectors; z from
 *              n and f: s = floor(n/2 + 1) - f, z = Phi^-1((n - s) / n)
 *              (Baruch et al. 2019), or given        z (0 = from n, f)
 *   ipm        -epsilon * mean of the honest vectors  epsilon (0.1)
 *   mimic      a copy of one honest peer's vector     target (index into the
 *              honest vectors, sorted by peer id; default 0)
 *
 * and protocol misbehaviours, which validation must catch (exchange checks
 * every publication; see docs/robustness.md):
 *
 *   silent       publishes nothing, while staying alive (heartbeat on)
 *   wrong-shape  a validly signed tensor of the wrong size: the first half
 *                of its honest average (d/2 values; 2 if d = 1)
 *   nan          a validly signed tensor of the right size holding NaN: its
 *                honest average with every 100th coordinate (0, 100, ...)
 *                set to NaN
 *   garbage      random bytes (drawn from the seed) instead of an envelope,
 *                as long as an honest envelope would be
 * None of them takes a parameter.
 *
 * The omniscient attacks (alie, ipm, mimic) need the round's honest vectors;
 * in spirt a Byzantine peer reads what honest peers publish, as a real
 * attacker could. */
#ifndef SPIRT_ATTACK_H
#define SPIRT_ATTACK_H

#include <stddef.h>
#include <stdint.h>

#include "spirt/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum AttackKind {
    ATTACK_NONE = 0,
    ATTACK_SIGN_FLIP,
    ATTACK_GAUSSIAN,
    ATTACK_LABEL_FLIP,
    ATTACK_ALIE,
    ATTACK_IPM,
    ATTACK_MIMIC,
    ATTACK_SILENT,
    ATTACK_WRONG_SHAPE,
    ATTACK_NAN,
    ATTACK_GARBAGE,
    ATTACK_KIND_COUNT
} AttackKind;

typedef struct AttackConfig {
    AttackKind kind;
    double scale;   /* sign-flip */
    double sigma;   /* gaussian */
    double z;       /* alie; 0: computed from n and f */
    double epsilon; /* ipm */
    size_t target;  /* mimic */
} AttackConfig;

/* Parses "NAME[:param=value,...]", e.g. "sign-flip", "gaussian:sigma=50",
 * "alie:z=1.5", "ipm:epsilon=0.5", "mimic:target=2". Unknown names and
 * parameters, and out-of-range values, are refused with a message listing
 * what is accepted. */
int attack_parse(const char *spec, AttackConfig *config, SpirtError *error);
AttackConfig attack_config_default(AttackKind kind);
const char *attack_kind_name(AttackKind kind);
/* Writes the spec back as "name:param=value" (round-trips through parse). */
void attack_format(const AttackConfig *config, char *buffer, size_t size);

/* 1 if the attack needs the round's honest vectors (alie, ipm, mimic). */
int attack_is_omniscient(const AttackConfig *config);
/* 1 if the attack poisons training data rather than the published vector. */
int attack_poisons_labels(const AttackConfig *config);
/* 1 if the peer publishes anything at all (0 for silent). */
int attack_publishes(const AttackConfig *config);
/* 1 if what the peer publishes passes validation (a signed, finite vector
 * of the model's size): every attack but the protocol misbehaviours. */
int attack_publication_valid(const AttackConfig *config);
/* 1 if the peer publishes random bytes instead of a signed envelope. */
int attack_publishes_garbage(const AttackConfig *config);
/* How many floats the attack's vector has when the model has d: for
 * wrong-shape d/2 (2 if d = 1: never d), otherwise d. */
size_t attack_vector_count(const AttackConfig *config, size_t d);
/* Fills bytes[0..size) with random bytes drawn from `seed` (garbage). */
void attack_fill_garbage(uint64_t seed, unsigned char *bytes, size_t size);

/* labels[i] <- classes - 1 - labels[i]. */
void attack_flip_labels(uint8_t *labels, size_t count, size_t classes);

/* Phi^-1(p), the standard normal quantile, for 0 < p < 1 (|error| < 1e-9). */
double attack_normal_quantile(double p);
/* ALIE's z for n peers of which f are Byzantine (may be <= 0 for large f,
 * in which case the attack publishes the honest mean or beyond). */
double attack_alie_z(size_t n, size_t f);

/* Writes the malicious vector into `out`, which holds
 * attack_vector_count(config, d) floats; d is the model's size. `own` is
 * the peer's honest average of d floats (sign-flip, wrong-shape, nan);
 * `honest` holds honest_count honest vectors (omniscient attacks; may be
 * NULL otherwise); n and f are the numbers of peers and of Byzantine peers
 * (alie); `seed` makes gaussian noise reproducible (pass a per-round,
 * per-peer seed). Label-flip, none, silent and garbage copy `own` (silent
 * and garbage publish no vector: the caller does not use it). */
int attack_craft(const AttackConfig *config, const float *own, const float *const *honest, size_t honest_count,
                 size_t d, size_t n, size_t f, uint64_t seed, float *out, SpirtError *error);

#ifdef __cplusplus
}
#endif

#endif /* SPIRT_ATTACK_H */
