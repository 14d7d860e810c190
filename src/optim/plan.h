/* plan.h -- one optimizer step, validated and reduced to its coefficients
 * (private to src/optim).
 *
 * step.c builds a plan from a config (checking it) and runs it; checked.c
 * builds the same plan, bounds what running it could produce, and only then
 * runs it. Sharing the plan means the bounds are computed from exactly the
 * float coefficients the kernels use. */
#ifndef SPIRT_OPTIM_PLAN_H
#define SPIRT_OPTIM_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "spirt/optim.h"

/* Work is split across threads in ranges of this many elements (a multiple
 * of any vector width, so every range starts aligned like the vector). */
#define OPTIM_GRAIN ((size_t)16384)

typedef struct OptimPlan {
    OptimKind kind;
    int nesterov;
    int threads;
    float learning_rate;
    float coupled_decay;  /* wd added to the gradient (L2): wd, or 0 for AdamW */
    float momentum;       /* momentum: mu */
    float beta1, beta2, one_minus_beta1, one_minus_beta2, epsilon;
    float step_size;      /* adam: lr / (1 - b1^t) */
    float bias2_sqrt;     /* adam: sqrt(1 - b2^t) */
    float shrink;         /* adam: 1 - lr * wd for AdamW, else exactly 1 */
    float *params;
    const float *grad;
    float *state; /* momentum: v; adam: m then s */
    size_t n;
} OptimPlan;

/* Checks the config, the step number and the buffers, and fills `plan`.
 * SPIRT_ERR_INVALID (naming the problem) otherwise. */
int optim_plan_init(OptimPlan *plan, const OptimConfig *config, float *params, const float *grad, float *state,
                    size_t n, uint64_t step, SpirtError *error);
/* Runs the step over all n elements, on plan->threads threads. */
void optim_plan_run(const OptimPlan *plan);

#endif /* SPIRT_OPTIM_PLAN_H */
