/* optim.h -- optimizer steps over flat float32 vectors.
 *
 * The one implementation of every optimizer step: `spirt fit` calls it on
 * the model's parameter vector, and the Redis module (SPIRT.UPDATE) calls it
 * on tensors inside the database. Kernels do no I/O and never allocate: the
 * optimizer state is a flat vector the caller owns, of
 * optim_state_count(config, n) floats (its layout is below), and it starts
 * zeroed.
 *
 *   sgd        p -= lr * (g + wd * p)                          state: none
 *   momentum   v = mu * v + (g + wd * p)                       state: v (n)
 *              p -= lr * v            (heavy ball, as PyTorch SGD)
 *              p -= lr * (g' + mu * v) with nesterov, g' = g + wd * p
 *   adam       m = b1 m + (1 - b1) g';  s = b2 s + (1 - b2) g'^2
 *              p -= lr * (m / (1 - b1^t)) / (sqrt(s / (1 - b2^t)) + eps)
 *              state: m (n) then s (n); t is the 1-based step number,
 *              passed by the caller (peers pass round + 1, so it needs no
 *              storage and survives restarts)
 *              weight decay is L2 (g' = g + wd * p) unless `decoupled` is
 *              set, which gives AdamW: p -= lr * wd * p before the step.
 *
 * Every step is element-wise, so its result does not depend on how the work
 * is split across threads. */
#ifndef SPIRT_OPTIM_H
#define SPIRT_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "spirt/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum OptimKind { OPTIM_SGD = 0, OPTIM_MOMENTUM = 1, OPTIM_ADAM = 2 } OptimKind;

typedef struct OptimConfig {
    OptimKind kind;
    float learning_rate;   /* > 0 */
    float momentum;        /* momentum: in [0, 1) (default 0.9) */
    int nesterov;          /* momentum: Nesterov's variant */
    float beta1, beta2;    /* adam: in [0, 1) (defaults 0.9, 0.999) */
    float epsilon;         /* adam: > 0 (default 1e-8) */
    float weight_decay;    /* >= 0 (default 0) */
    int decoupled;         /* adam: decoupled weight decay (AdamW) */
} OptimConfig;

/* The defaults above for `kind`, with the given learning rate. */
OptimConfig optim_config_default(OptimKind kind, float learning_rate);
/* "sgd", "momentum", "nesterov" (momentum with nesterov = 1), "adam",
 * "adamw" (adam with decoupled = 1). Returns SPIRT_ERR_INVALID otherwise. */
int optim_kind_parse(const char *name, OptimConfig *config, SpirtError *error);
const char *optim_kind_name(OptimKind kind);
/* Checks every field's range; the message names the bad field. */
int optim_config_check(const OptimConfig *config, SpirtError *error);

/* Floats of state for n parameters: 0 (sgd), n (momentum), 2n (adam). */
size_t optim_state_count(const OptimConfig *config, size_t n);

/* One step in place on params[0..n) with gradient grad[0..n). `state` holds
 * optim_state_count(config, n) floats (NULL allowed when that is 0). `step`
 * is the 1-based step number (adam's bias correction; ignored otherwise).
 * Refuses a bad config or step 0 for adam; it does not check the values for
 * NaN (callers validate inputs: see optim_step_checked). */
int optim_step(const OptimConfig *config, float *params, const float *grad, float *state, size_t n,
               uint64_t step, SpirtError *error);

/* optim_step, but first refuses a gradient with a NaN or infinity (naming the
 * first bad index) and leaves params and state untouched in that case; after
 * the step, reports SPIRT_ERR_NONFINITE if a parameter overflowed. */
int optim_step_checked(const OptimConfig *config, float *params, const float *grad, float *state, size_t n,
                       uint64_t step, SpirtError *error);

#ifdef __cplusplus
}
#endif

#endif /* SPIRT_OPTIM_H */
