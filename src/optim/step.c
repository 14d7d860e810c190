/* step.c -- the optimizer kernels and optim_step (see include/spirt/optim.h).
 *
 * One loop per rule, each element-wise over a range [begin, end) so
 * parallel_for can split the vector anywhere without changing a single bit
 * of the result: every element is computed by the same sequence of IEEE
 * operations whichever thread does it (the build is C11 without
 * -ffast-math, so the compiler neither contracts a * b + c into FMA nor
 * reorders). The loops are plain and restrict-qualified so they vectorise.
 * No allocation, no I/O. */
#include <math.h>

#include "optim/plan.h"
#include "spirt/parallel.h"

/* --- Kernels: each updates elements [0, n) of the pointers it is given --- */

static void sgd_range(float *restrict p, const float *restrict g, size_t n, float lr, float wd) {
    for (size_t i = 0; i < n; i++) {
        float direction = g[i] + wd * p[i];
        p[i] -= lr * direction;
    }
}

/* v = mu v + g', then p -= lr v (heavy ball: PyTorch's SGD with momentum,
 * dampening 0) or p -= lr (g' + mu v) with the new v (PyTorch's nesterov).
 * The choice is loop-invariant; the vectoriser turns it into a blend. */
static void momentum_range(float *restrict p, const float *restrict g, float *restrict v, size_t n, float lr,
                           float wd, float mu, int nesterov) {
    for (size_t i = 0; i < n; i++) {
        float direction = g[i] + wd * p[i];
        float velocity = mu * v[i] + direction;
        v[i] = velocity;
        p[i] -= lr * (nesterov ? direction + mu * velocity : velocity);
    }
}

/* Adam and AdamW in one loop: for Adam shrink is exactly 1 (p * 1 == p) and
 * the decay is coupled into g'; for AdamW the decay is the shrink and the
 * coupled decay is 0. */
static void adam_range(float *restrict p, const float *restrict g, float *restrict m, float *restrict s, size_t n,
                       const OptimPlan *plan) {
    const float b1 = plan->beta1, b2 = plan->beta2, c1 = plan->one_minus_beta1, c2 = plan->one_minus_beta2;
    const float wd = plan->coupled_decay, shrink = plan->shrink, eps = plan->epsilon;
    const float step_size = plan->step_size, bias2_sqrt = plan->bias2_sqrt;
    for (size_t i = 0; i < n; i++) {
        float param = p[i] * shrink;
        float direction = g[i] + wd * param;
        float first = b1 * m[i] + c1 * direction;
        float second = b2 * s[i] + c2 * (direction * direction);
        m[i] = first;
        s[i] = second;
        float denominator = sqrtf(second) / bias2_sqrt + eps;
        p[i] = param - step_size * (first / denominator);
    }
}

static void run_range(void *context, size_t begin, size_t end) {
    const OptimPlan *plan = context;
    float *p = plan->params + begin;
    const float *g = plan->grad + begin;
    size_t count = end - begin;
    switch (plan->kind) {
    case OPTIM_SGD: sgd_range(p, g, count, plan->learning_rate, plan->coupled_decay); break;
    case OPTIM_MOMENTUM:
        momentum_range(p, g, plan->state + begin, count, plan->learning_rate, plan->coupled_decay, plan->momentum,
                       plan->nesterov);
        break;
    case OPTIM_ADAM: adam_range(p, g, plan->state + begin, plan->state + plan->n + begin, count, plan); break;
    }
}

/* --- Plans --- */

int optim_plan_init(OptimPlan *plan, const OptimConfig *config, float *params, const float *grad, float *state,
                    size_t n, uint64_t step, SpirtError *error) {
    int status = optim_config_check(config, error);
    if (status != SPIRT_OK) return status;
    if (config->kind == OPTIM_ADAM && step == 0)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "adam step number must be >= 1 (it is 1-based), got 0");
    if (n > 0 && (params == NULL || grad == NULL))
        return spirt_error_set(error, SPIRT_ERR_INVALID, "optimizer step: %s is NULL",
                               params == NULL ? "params" : "grad");
    if (optim_state_count(config, n) > 0 && state == NULL)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "optimizer step: %s needs %zu floats of state, got NULL",
                               optim_kind_name(config->kind), optim_state_count(config, n));
    *plan = (OptimPlan){
        .kind = config->kind,
        .nesterov = config->nesterov,
        .threads = config->threads,
        .learning_rate = config->learning_rate,
        .coupled_decay = config->weight_decay,
        .momentum = config->momentum,
        .beta1 = config->beta1,
        .beta2 = config->beta2,
        .epsilon = config->epsilon,
        .shrink = 1.0f,
        .params = params,
        .grad = grad,
        .state = state,
        .n = n,
    };
    if (config->kind == OPTIM_ADAM) {
        /* The scalars in double, then rounded once, as PyTorch does. */
        double bias1 = 1.0 - pow((double)config->beta1, (double)step);
        double bias2 = 1.0 - pow((double)config->beta2, (double)step);
        plan->one_minus_beta1 = (float)(1.0 - (double)config->beta1);
        plan->one_minus_beta2 = (float)(1.0 - (double)config->beta2);
        plan->step_size = (float)((double)config->learning_rate / bias1);
        plan->bias2_sqrt = (float)sqrt(bias2);
        if (config->decoupled) {
            plan->shrink = (float)(1.0 - (double)config->learning_rate * (double)config->weight_decay);
            plan->coupled_decay = 0.0f;
        }
    }
    return SPIRT_OK;
}

void optim_plan_run(const OptimPlan *plan) {
    if (plan->n == 0) return;
    /* Threads only pay off on vectors of several grains. */
    if (plan->threads <= 1 || plan->n < 2 * OPTIM_GRAIN)
        run_range((void *)plan, 0, plan->n);
    else
        parallel_for(plan->n, OPTIM_GRAIN, plan->threads, run_range, (void *)plan);
}

int optim_step(const OptimConfig *config, float *params, const float *grad, float *state, size_t n, uint64_t step,
               SpirtError *error) {
    OptimPlan plan;
    int status = optim_plan_init(&plan, config, params, grad, state, n, step, error);
    if (status != SPIRT_OK) return status;
    optim_plan_run(&plan);
    return SPIRT_OK;
}
