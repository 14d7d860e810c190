/* checked.c -- optim_step_checked: a step that refuses, before touching
 * anything, inputs that are not finite and steps that could overflow
 * (the policy is in include/spirt/optim.h).
 *
 * Why bounds and not "step, then look": a step that overflows has already
 * written inf into params and state, and undoing it would need a copy of
 * both (11.7M floats each in the module). Bounding every intermediate from
 * the inputs' largest magnitudes costs one read of each input, never
 * allocates, and leaves nothing to undo. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "optim/plan.h"
#include "spirt/parallel.h"
#include "spirt/tensor.h"

/* Every intermediate must stay below this: half of FLT_MAX leaves more than
 * enough room for the few roundings between the bound and the float value. */
#define OPTIM_BOUND ((double)FLT_MAX / 2.0)

/* --- The pre-pass: largest magnitude, finiteness and sign of a vector --- */

/* The scan works on the values' bit patterns: with the sign bit cleared,
 * IEEE-754 floats order like their bits as unsigned integers, and every
 * infinity or NaN lies above FLT_MAX's pattern. Integer max reductions
 * vectorise (a float max with NaN semantics does not), and the result is
 * exact whatever order the blocks are combined in. */
#define FLOAT_MAX_BITS 0x7f7fffffu
#define FLOAT_SIGN_BIT 0x80000000u

/* One result per block; blocks are fixed by n alone, so the outcome does
 * not depend on the thread count. */
enum { SCAN_SLOTS = 64 };

typedef struct Scan {
    const float *values;
    size_t block;
    uint32_t max_magnitude[SCAN_SLOTS]; /* largest bits & ~sign */
    uint32_t max_raw[SCAN_SLOTS];       /* largest bits: > sign bit iff a value < 0 */
} Scan;

typedef struct ScanSummary {
    double max_abs; /* largest |value| (meaningful when all are finite) */
    int nonfinite;  /* some value is NaN or infinite */
    int negative;   /* some value is < 0 (-0 is not) */
} ScanSummary;

static void scan_block(const float *restrict values, size_t n, uint32_t *max_magnitude, uint32_t *max_raw) {
    uint32_t magnitude_max = 0, raw_max = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, values + i, sizeof(bits));
        uint32_t magnitude = bits & ~FLOAT_SIGN_BIT;
        magnitude_max = magnitude > magnitude_max ? magnitude : magnitude_max;
        raw_max = bits > raw_max ? bits : raw_max;
    }
    *max_magnitude = magnitude_max;
    *max_raw = raw_max;
}

static void scan_range(void *context, size_t begin, size_t end) {
    Scan *scan = context;
    for (size_t start = begin; start < end; start += scan->block) {
        size_t slot = start / scan->block; /* ranges start on block boundaries */
        size_t length = end - start < scan->block ? end - start : scan->block;
        scan_block(scan->values + start, length, &scan->max_magnitude[slot], &scan->max_raw[slot]);
    }
}

static ScanSummary scan_values(const float *values, size_t n, int threads) {
    Scan scan = {.values = values};
    /* Blocks of whole grains, few enough to fit the slots. */
    size_t grains = (n + OPTIM_GRAIN - 1) / OPTIM_GRAIN;
    scan.block = (grains + SCAN_SLOTS - 1) / SCAN_SLOTS * OPTIM_GRAIN;
    parallel_for(n, scan.block, threads > 1 ? threads : 1, scan_range, &scan);
    uint32_t magnitude = 0, raw = 0;
    for (size_t slot = 0; slot * scan.block < n; slot++) {
        if (scan.max_magnitude[slot] > magnitude) magnitude = scan.max_magnitude[slot];
        if (scan.max_raw[slot] > raw) raw = scan.max_raw[slot];
    }
    ScanSummary summary = {0.0, magnitude > FLOAT_MAX_BITS, raw > FLOAT_SIGN_BIT};
    if (!summary.nonfinite) {
        float largest;
        memcpy(&largest, &magnitude, sizeof(largest));
        summary.max_abs = largest;
    }
    return summary;
}

/* Scans one input; refuses it if it holds a NaN or an infinity, naming the
 * first. The index search runs only on that error path. */
static int scan_finite(const char *name, const float *values, size_t n, int threads, ScanSummary *summary,
                       SpirtError *error) {
    *summary = scan_values(values, n, threads);
    if (!summary->nonfinite) return SPIRT_OK;
    size_t bad = 0;
    tensor_all_finite(values, n, &bad);
    return spirt_error_set(error, SPIRT_ERR_NONFINITE, "optimizer step refused: %s[%zu] is %s", name, bad,
                           isnan(values[bad]) ? "NaN" : "infinite");
}

/* --- The bounds --- */

typedef struct Bound {
    const char *what;
    double value;
} Bound;

static int check_bounds(const Bound *bounds, size_t count, SpirtError *error) {
    for (size_t k = 0; k < count; k++)
        if (!(bounds[k].value <= OPTIM_BOUND))
            return spirt_error_set(error, SPIRT_ERR_NONFINITE,
                                   "optimizer step refused: %s could reach %.3g, beyond the %.3g float32 allows "
                                   "safely",
                                   bounds[k].what, bounds[k].value, OPTIM_BOUND);
    return SPIRT_OK;
}

/* Worst cases of every intermediate of the step, from the largest
 * magnitudes of the gradient (g), parameters (p) and state (v, or m and s),
 * following the kernels in step.c operation by operation. */
static int check_step_bounds(const OptimPlan *plan, double g, double p, double v_or_m, double s,
                             SpirtError *error) {
    const double lr = plan->learning_rate, wd = plan->coupled_decay;
    Bound bounds[16];
    size_t count = 0;
    if (plan->kind == OPTIM_ADAM) {
        double shrunk = p * fabs((double)plan->shrink);
        double direction = g + wd * shrunk;
        double squared = direction * direction;
        double first = plan->beta1 * v_or_m + plan->one_minus_beta1 * direction;
        double second = plan->beta2 * s + plan->one_minus_beta2 * squared;
        double denominator = sqrt(second) / plan->bias2_sqrt + plan->epsilon;
        double ratio = first / plan->epsilon; /* the denominator is never below epsilon */
        double update = plan->step_size * ratio;
        bounds[count++] = (Bound){"|p * (1 - lr * wd)| (AdamW decay)", shrunk};
        bounds[count++] = (Bound){"|g + wd * p|", direction};
        bounds[count++] = (Bound){"(g + wd * p)^2 (adam second moment)", squared};
        bounds[count++] = (Bound){"|m| (adam first moment)", first};
        bounds[count++] = (Bound){"s (adam second moment)", second};
        bounds[count++] = (Bound){"sqrt(s) / sqrt(1 - b2^t) + eps", denominator};
        bounds[count++] = (Bound){"|m| / (sqrt(s) / sqrt(1 - b2^t) + eps)", ratio};
        bounds[count++] = (Bound){"the adam update", update};
        bounds[count++] = (Bound){"|p| after the step", shrunk + update};
    } else {
        double direction = g + wd * p;
        bounds[count++] = (Bound){"|wd * p|", wd * p};
        bounds[count++] = (Bound){"|g + wd * p|", direction};
        double update = direction;
        if (plan->kind == OPTIM_MOMENTUM) {
            double velocity = plan->momentum * v_or_m + direction;
            bounds[count++] = (Bound){"|v| (momentum)", velocity};
            update = velocity;
            if (plan->nesterov) {
                update = direction + plan->momentum * velocity;
                bounds[count++] = (Bound){"|g' + mu * v| (nesterov)", update};
            }
        }
        bounds[count++] = (Bound){"the update lr * step", lr * update};
        bounds[count++] = (Bound){"|p| after the step", p + lr * update};
    }
    return check_bounds(bounds, count, error);
}

int optim_step_checked(const OptimConfig *config, float *params, const float *grad, float *state, size_t n,
                       uint64_t step, SpirtError *error) {
    OptimPlan plan;
    int status = optim_plan_init(&plan, config, params, grad, state, n, step, error);
    if (status != SPIRT_OK || n == 0) return status;
    int threads = plan.threads;
    ScanSummary g, p, first = {0.0, 0, 0}, second = {0.0, 0, 0};
    if ((status = scan_finite("gradient", grad, n, threads, &g, error)) != SPIRT_OK) return status;
    if ((status = scan_finite("params", params, n, threads, &p, error)) != SPIRT_OK) return status;
    if (plan.kind == OPTIM_MOMENTUM &&
        (status = scan_finite("momentum state v", state, n, threads, &first, error)) != SPIRT_OK)
        return status;
    if (plan.kind == OPTIM_ADAM) {
        if ((status = scan_finite("adam state m", state, n, threads, &first, error)) != SPIRT_OK) return status;
        if ((status = scan_finite("adam state s", state + n, n, threads, &second, error)) != SPIRT_OK)
            return status;
        /* sqrt of a negative second moment is NaN: only a damaged state has one. */
        if (second.negative) {
            size_t bad = 0;
            while (!(state[n + bad] < 0.0f)) bad++;
            return spirt_error_set(error, SPIRT_ERR_NONFINITE, "optimizer step refused: adam state s[%zu] is "
                                   "negative (%g)", bad, state[n + bad]);
        }
    }
    status = check_step_bounds(&plan, g.max_abs, p.max_abs, first.max_abs, second.max_abs, error);
    if (status != SPIRT_OK) return status;
    optim_plan_run(&plan);
    return SPIRT_OK;
}
