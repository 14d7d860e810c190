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
 * In float32 the steps are evaluated as PyTorch evaluates them: adam's
 * update is p -= (lr / (1 - b1^t)) * (m / (sqrt(s) / sqrt(1 - b2^t) + eps)),
 * with the bias corrections computed in double; AdamW's decay is
 * p *= 1 - lr * wd.
 *
 * Every step is element-wise, so its result does not depend on how the work
 * is split across threads: any `threads` value gives bit-identical results.
 *
 * Overflow policy (optim_step_checked). Before touching anything it scans
 * the gradient, the parameters and the state for NaN, infinity and their
 * largest magnitudes G, P and (per state vector) V, M, S, then bounds, in
 * double, every intermediate of the step from those maxima (for example
 * |g'| <= G + wd * P; adam's second moment needs g'^2 <= (G + wd * P)^2;
 * the adam update is at most (lr / (1 - b1^t)) * M' / eps). If any bound
 * exceeds FLT_MAX / 2 (the half leaves room for rounding) the step is
 * refused with SPIRT_ERR_NONFINITE naming the quantity, and params and state
 * are left bit-identical. A step that passes cannot produce an infinity or a
 * NaN. In practice adam refuses any |g'| above ~1.3e19 (its square must
 * fit), so a Byzantine gradient of 1e30 never reaches an adam model; sgd and
 * momentum accept such a gradient only while every result stays below
 * FLT_MAX / 2 (p ~ -lr * 1e30 is finite; keeping it out is the robust
 * aggregation's job, not the optimizer's). The bounds take each term at its
 * worst over the whole vector, so they may refuse a step that would in fact
 * have stayed finite, but only when some input is already enormous (|g'|
 * near 1e19 for adam, near 1e38 otherwise). The pre-pass costs about as much
 * as the step itself (one more read of every input; measured ~2x the
 * unchecked step on 11.7M parameters). */
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
    int threads;           /* >= 0: split the element-wise loop over up to this
                              many threads for large vectors (0 and 1: the
                              calling thread only; default 1). Results do not
                              depend on it. */
} OptimConfig;

/* The defaults above, with the given kind and learning rate. Every field gets
 * its default whatever the kind (momentum 0.9, betas 0.9 / 0.999, epsilon
 * 1e-8, weight decay 0, threads 1), so switching the kind later with
 * optim_kind_parse needs nothing else. */
OptimConfig optim_config_default(OptimKind kind, float learning_rate);
/* "sgd", "momentum", "nesterov" (momentum with nesterov = 1), "adam",
 * "adamw" (adam with decoupled = 1): sets config->kind, ->nesterov and
 * ->decoupled and leaves every other field as it is (start from
 * optim_config_default). Returns SPIRT_ERR_INVALID otherwise, touching
 * nothing. */
int optim_kind_parse(const char *name, OptimConfig *config, SpirtError *error);
const char *optim_kind_name(OptimKind kind);
/* Checks the range of every field the kind uses (learning_rate, weight_decay
 * and threads always; momentum for momentum; beta1, beta2 and epsilon for
 * adam) and refuses nesterov outside momentum (or with momentum 0) and
 * decoupled outside adam. The message names the bad field. */
int optim_config_check(const OptimConfig *config, SpirtError *error);

/* Floats of state for n parameters: 0 (sgd), n (momentum), 2n (adam). */
size_t optim_state_count(const OptimConfig *config, size_t n);

/* One step in place on params[0..n) with gradient grad[0..n). `state` holds
 * optim_state_count(config, n) floats (NULL allowed when that is 0). `step`
 * is the 1-based step number (adam's bias correction; ignored otherwise).
 * grad must not overlap params or state. Refuses a bad config, step 0 for
 * adam and NULL buffers (SPIRT_ERR_INVALID, touching nothing); it does not
 * check the values for NaN or overflow (see optim_step_checked). */
int optim_step(const OptimConfig *config, float *params, const float *grad, float *state, size_t n,
               uint64_t step, SpirtError *error);

/* optim_step, but first refuses with SPIRT_ERR_NONFINITE, touching nothing:
 * a gradient, parameter or state value that is NaN or infinite (naming the
 * first bad index, e.g. "gradient[12] is NaN"), a negative adam second
 * moment, and any step whose worst-case bound could overflow float32 (the
 * policy at the top of this file). A step it accepts leaves params and state
 * finite. The pre-pass reads every input once more (in parallel like the
 * step). */
int optim_step_checked(const OptimConfig *config, float *params, const float *grad, float *state, size_t n,
                       uint64_t step, SpirtError *error);

#ifdef __cplusplus
}
#endif

#endif /* SPIRT_OPTIM_H */
