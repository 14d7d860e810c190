/* agg.h -- aggregation rules: n vectors of d floats in, one vector out.
 *
 * The one implementation of every rule, used by the library and by the Redis
 * module (SPIRT.AVG, SPIRT.AGG). Rules are pure functions: no I/O, no
 * allocation (the caller supplies a workspace of agg_workspace_bytes()), and
 * a result that depends only on the inputs and their order -- not on the
 * thread count -- so peers that aggregate the same vectors in the same order
 * get bit-identical results. Callers that want order independence sort their
 * inputs (peers sort by peer id).
 *
 * Definitions follow shared notes/robust-aggregation.md (n inputs, at most f
 * Byzantine):
 *   mean          (1/n) sum x_i
 *   median        coordinate-wise median (even n: mean of the middle two)
 *   trimmed-mean  coordinate-wise: drop the `trim` largest and smallest,
 *                 average the rest; needs n > 2 trim (trim defaults to f)
 *   krum          the x_i with the least sum of squared distances to its
 *                 n - f - 2 nearest others; needs n >= 2f + 3
 *   multi-krum    the mean of the m inputs with the least Krum scores
 *                 (m defaults to n - f); needs n >= 2f + 3
 *   bulyan        select theta = n - 2f inputs by repeated Krum, then per
 *                 coordinate average the beta = theta - 2f values closest
 *                 to the median of the selected; needs n >= 4f + 3
 *   geomed        geometric median by smoothed Weiszfeld iterations
 *   cclip         centered clipping: L rounds of v += (1/n) sum clip_tau(x_i - v)
 * and, before any rule, optional nearest-neighbour mixing (NNM): each x_i is
 * replaced by the mean of its n - f nearest inputs (itself included); needs
 * n > 2f.
 *
 * Details the definitions leave open, fixed here so every peer agrees:
 *   - Krum-family ties go to the lowest input index; Multi-Krum and the
 *     report list picks best first.
 *   - Bulyan's later Krum picks run on sets of r < 2f + 3 vectors; their
 *     score sums the max(0, r - f - 2) nearest (an empty sum is 0).
 *   - Bulyan's "beta values closest to the median": on a tie in distance the
 *     smaller value is kept.
 *   - NNM neighbours: ties in distance go to the lowest index.
 *   - geomed: the spread s is the mean distance of the inputs to their mean;
 *     the smoothing is nu * s and iterations stop once the step is at most
 *     tolerance * (s + ||z||) (or after max_iterations). If every input
 *     equals the mean, that is the result (0 iterations).
 *   - Sums are formed in double and rounded once, so the mean of identical
 *     inputs is that input, bit for bit, for every rule.
 *
 * Determinism: the result does not depend on the thread count (bit for bit).
 * Across machines it can differ in the last bits where the compiler targets
 * different instruction sets (fused multiply-add in the distance kernel).
 *
 * Threads: config->threads threads started per call (parallel_for), each
 * taking the next piece of a pass when it is free, so a core that other work
 * keeps busy does not hold a pass back (results do not change); no BLAS is
 * called, so OpenBLAS's process-wide thread count is neither needed nor
 * changed (this runs inside redis-server, on a worker thread).
 *
 * Inputs must be finite: agg_run refuses NaN and infinities (naming the
 * input), so a poisoned vector cannot turn the aggregate into NaN. */
#ifndef SPIRT_AGG_H
#define SPIRT_AGG_H

#include <stddef.h>
#include <stdint.h>

#include "spirt/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum AggRule {
    AGG_MEAN = 0,
    AGG_MEDIAN,
    AGG_TRIMMED_MEAN,
    AGG_KRUM,
    AGG_MULTI_KRUM,
    AGG_BULYAN,
    AGG_GEOMED,
    AGG_CCLIP,
    AGG_RULE_COUNT
} AggRule;

/* Parameters of a rule; agg_config_default() fills every field. A field that
 * does not apply to the rule is ignored. */
typedef struct AggConfig {
    AggRule rule;
    size_t f;              /* assumed number of Byzantine inputs (default 0) */
    size_t trim;           /* trimmed-mean: values dropped per side; SIZE_MAX = f */
    size_t m;              /* multi-krum: inputs averaged; 0 = n - f */
    int pre_nnm;           /* apply nearest-neighbour mixing first */
    int max_iterations;    /* geomed: Weiszfeld iteration cap (default 100) */
    double tolerance;      /* geomed: stop when the relative change < this (1e-6) */
    double nu;             /* geomed: smoothing, relative to the inputs' scale (1e-6) */
    double tau;            /* cclip: clipping radius (default 10) */
    int clip_iterations;   /* cclip: L (default 3) */
    const float *center;   /* cclip: starting centre of d floats (e.g. last round's
                              aggregate); NULL = the coordinate-wise median */
    int threads;           /* worker threads; <= 0: parallel_default_threads() */
    int inputs_known_finite; /* the caller guarantees finite inputs (the module
                                stores only finite tensors): skip the scan */
} AggConfig;

/* What a rule did, for logs and tests. All fields optional to read. */
typedef struct AggReport {
    size_t selected_count;  /* krum family / bulyan: inputs selected */
    uint32_t selected[256]; /* their indices (first 256), in selection order */
    int iterations;         /* geomed / cclip: iterations run */
    double scores_min;      /* krum family: the best score (bulyan: of its first pick) */
} AggReport;

#define AGG_MAX_INPUTS 4096

AggConfig agg_config_default(AggRule rule);
/* "mean", "median", "trimmed-mean", "krum", "multi-krum", "bulyan", "geomed",
 * "cclip"; SPIRT_ERR_INVALID for anything else (the message lists them). */
int agg_rule_parse(const char *name, AggRule *rule, SpirtError *error);
const char *agg_rule_name(AggRule rule);

/* Checks the rule's precondition for n inputs of d floats (e.g. "krum needs
 * n >= 2f + 3: n = 5, f = 2") and the parameters' ranges. 1 <= n <=
 * AGG_MAX_INPUTS and d >= 1 always. */
int agg_check(const AggConfig *config, size_t n, size_t d, SpirtError *error);

/* Bytes of scratch memory agg_run needs for this rule, n and d; 0 if
 * agg_check refuses them. It depends on config->threads (per-thread scratch),
 * so pass agg_run the same config; with threads <= 0 it reads
 * parallel_default_threads() each time. Largest parts: for the Krum family
 * and NNM, per-chunk Gram partials (at most 64 MiB; about 50 KiB per million
 * coordinates at n = 20) and two or three n x n matrices of doubles (3 KiB at
 * n = 20, 128 MiB each at n = 4096); otherwise a few KiB per thread. Never
 * n * d. */
size_t agg_workspace_bytes(const AggConfig *config, size_t n, size_t d);

/* Aggregates inputs[0..n), each d floats, into out (d floats, not aliasing
 * any input). `workspace` must hold agg_workspace_bytes() bytes, aligned to
 * 64 (NULL if that is 0). `report` may be NULL. Returns SPIRT_OK, or an error
 * from agg_check, SPIRT_ERR_NONFINITE for a non-finite input (out untouched),
 * or SPIRT_ERR_NONFINITE if the result overflowed float32. */
int agg_run(const AggConfig *config, const float *const *inputs, size_t n, size_t d, float *out,
            void *workspace, size_t workspace_bytes, AggReport *report, SpirtError *error);

/* The element-wise mean alone, as fast as memory allows; inputs are not
 * checked for finiteness (agg_run does that). Used by SPIRT.AVG. Needs no
 * workspace; threads <= 0 means parallel_default_threads(). Sums in double,
 * so the result is the same as agg_run's mean. */
void agg_mean(const float *const *inputs, size_t n, size_t d, float *out, int threads);

#ifdef __cplusplus
}
#endif

#endif /* SPIRT_AGG_H */
