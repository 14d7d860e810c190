/* agg.c -- the public face of the aggregation rules (include/spirt/agg.h):
 * names, parameter checks, the workspace layout, and each rule as a short
 * sequence of the kernels in the other files of src/agg.
 *
 * A request runs in this order: check the rule's precondition and
 * parameters; check the workspace; refuse non-finite inputs (before out is
 * written); compute the Gram matrix if the rule or NNM needs distances; then
 * the rule. Nothing is allocated: every buffer is a region of the caller's
 * workspace, laid out by plan_workspace() both when sizing it
 * (agg_workspace_bytes) and when using it (agg_run). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "agg/agg_internal.h"
#include "spirt/parallel.h"

enum { MAX_THREADS = 64 }; /* parallel_for's own cap */

static const char *const rule_names[AGG_RULE_COUNT] = {
    "mean", "median", "trimmed-mean", "krum", "multi-krum", "bulyan", "geomed", "cclip",
};

AggConfig agg_config_default(AggRule rule) {
    AggConfig config = {
        .rule = rule,
        .f = 0,
        .trim = SIZE_MAX,
        .m = 0,
        .pre_nnm = 0,
        .max_iterations = 100,
        .tolerance = 1e-6,
        .nu = 1e-6,
        .tau = 10.0,
        .clip_iterations = 3,
        .center = NULL,
        .threads = 0,
        .inputs_known_finite = 0,
    };
    return config;
}

int agg_rule_parse(const char *name, AggRule *rule, SpirtError *error) {
    for (int r = 0; r < AGG_RULE_COUNT; r++)
        if (name && strcmp(name, rule_names[r]) == 0) {
            *rule = (AggRule)r;
            return SPIRT_OK;
        }
    return spirt_error_set(error, SPIRT_ERR_INVALID,
                           "unknown aggregation rule '%s' (expected mean, median, trimmed-mean, krum, multi-krum, "
                           "bulyan, geomed or cclip)",
                           name ? name : "(null)");
}

const char *agg_rule_name(AggRule rule) {
    return (unsigned)rule < AGG_RULE_COUNT ? rule_names[rule] : "unknown";
}

static size_t resolved_trim(const AggConfig *config) { return config->trim == SIZE_MAX ? config->f : config->trim; }

static size_t resolved_m(const AggConfig *config, size_t n) { return config->m ? config->m : n - config->f; }

static int resolved_threads(const AggConfig *config) {
    int threads = config->threads > 0 ? config->threads : parallel_default_threads();
    return threads > MAX_THREADS ? MAX_THREADS : threads;
}

int agg_check(const AggConfig *config, size_t n, size_t d, SpirtError *error) {
    if (config == NULL) return spirt_error_set(error, SPIRT_ERR_INVALID, "aggregation: no configuration");
    if ((unsigned)config->rule >= AGG_RULE_COUNT)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "aggregation: unknown rule %d", (int)config->rule);
    const char *name = rule_names[config->rule];
    size_t f = config->f;
    if (n == 0) return spirt_error_set(error, SPIRT_ERR_INVALID, "%s needs at least one input (n = 0)", name);
    if (n > AGG_MAX_INPUTS)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "%s takes at most %d inputs (n = %zu)", name, AGG_MAX_INPUTS,
                               n);
    if (d == 0) return spirt_error_set(error, SPIRT_ERR_INVALID, "%s needs vectors of d >= 1 floats (d = 0)", name);
    /* Preconditions, written so that no f overflows them. */
    switch (config->rule) {
    case AGG_TRIMMED_MEAN: {
        size_t trim = resolved_trim(config);
        if (trim >= n || n - trim <= trim)
            return spirt_error_set(error, SPIRT_ERR_PRECONDITION, "trimmed-mean needs n > 2 trim: n = %zu, trim = %zu",
                                   n, trim);
        break;
    }
    case AGG_KRUM:
    case AGG_MULTI_KRUM:
        if (n < 3 || (n - 3) / 2 < f)
            return spirt_error_set(error, SPIRT_ERR_PRECONDITION, "%s needs n >= 2f + 3: n = %zu, f = %zu", name, n, f);
        if (config->rule == AGG_MULTI_KRUM) {
            size_t m = resolved_m(config, n);
            if (m < 1 || m > n)
                return spirt_error_set(error, SPIRT_ERR_INVALID, "multi-krum needs 1 <= m <= n: m = %zu, n = %zu", m, n);
        }
        break;
    case AGG_BULYAN:
        if (n < 3 || (n - 3) / 4 < f)
            return spirt_error_set(error, SPIRT_ERR_PRECONDITION, "bulyan needs n >= 4f + 3: n = %zu, f = %zu", n, f);
        break;
    case AGG_GEOMED:
        if (config->max_iterations < 1)
            return spirt_error_set(error, SPIRT_ERR_INVALID, "geomed needs max_iterations >= 1 (got %d)",
                                   config->max_iterations);
        if (!(config->tolerance >= 0.0) || !isfinite(config->tolerance))
            return spirt_error_set(error, SPIRT_ERR_INVALID, "geomed needs a finite tolerance >= 0 (got %g)",
                                   config->tolerance);
        if (!(config->nu > 0.0) || !isfinite(config->nu))
            return spirt_error_set(error, SPIRT_ERR_INVALID, "geomed needs a finite nu > 0 (got %g)", config->nu);
        break;
    case AGG_CCLIP:
        if (!(config->tau > 0.0) || !isfinite(config->tau))
            return spirt_error_set(error, SPIRT_ERR_INVALID, "cclip needs a finite tau > 0 (got %g)", config->tau);
        if (config->clip_iterations < 1)
            return spirt_error_set(error, SPIRT_ERR_INVALID, "cclip needs clip_iterations >= 1 (got %d)",
                                   config->clip_iterations);
        break;
    default:
        break;
    }
    if (config->pre_nnm && (f >= n || n - f <= f))
        return spirt_error_set(error, SPIRT_ERR_PRECONDITION, "nnm needs n > 2f: n = %zu, f = %zu", n, f);
    return SPIRT_OK;
}

size_t agg_chunk_length(size_t n, size_t d) {
    size_t per_chunk = n * n * sizeof(double);
    size_t max_chunks = ((size_t)64 << 20) / (per_chunk ? per_chunk : 1);
    if (max_chunks < 1) max_chunks = 1;
    size_t length = AGG_CHUNK_MIN;
    if ((d + length - 1) / length > max_chunks) length = (d + max_chunks - 1) / max_chunks;
    return (length + AGG_BLOCK - 1) / AGG_BLOCK * AGG_BLOCK;
}

/* --- Workspace --------------------------------------------------------- */

typedef struct AggPlan {
    int threads;
    int needs_gram;  /* krum family, or NNM */
    size_t order_rows; /* rows of a coordinate-wise order pass, 0 if none */
    int combine;     /* geomed / cclip */
    size_t total;
    AggSlots slots;
    double *gram_partials, *gram, *distances, *mixed_gram, *nnm_scratch;
    uint32_t *members, *selected;
    void *krum_scratch;
    double *weights, *combine_partials, *distances2;
    const float **pointers;
} AggPlan;

/* Reserves `bytes` (64-aligned) at *cursor; a pointer into base, or NULL
 * when only sizing. */
static void *reserve(unsigned char *base, size_t *cursor, size_t bytes) {
    size_t offset = *cursor;
    *cursor += agg_align64(bytes);
    return base && bytes ? base + offset : NULL;
}

static void plan_workspace(const AggConfig *config, size_t n, size_t d, unsigned char *base, AggPlan *plan) {
    memset(plan, 0, sizeof(*plan));
    AggRule rule = config->rule;
    int mixing = config->pre_nnm != 0;
    plan->threads = resolved_threads(config);
    plan->needs_gram = mixing || rule == AGG_KRUM || rule == AGG_MULTI_KRUM || rule == AGG_BULYAN;
    plan->combine = rule == AGG_GEOMED || rule == AGG_CCLIP;
    if (rule == AGG_MEDIAN || rule == AGG_TRIMMED_MEAN || (rule == AGG_CCLIP && config->center == NULL))
        plan->order_rows = n;
    if (rule == AGG_BULYAN) plan->order_rows = n - 2 * config->f;

    size_t slot = 0;
    if (plan->needs_gram) slot = agg_gram_scratch_bytes(n);
    if (plan->order_rows) {
        size_t bytes = agg_source_scratch_bytes(plan->order_rows, mixing) + agg_order_scratch_bytes(plan->order_rows);
        if (bytes > slot) slot = bytes;
    }
    if (plan->combine) {
        size_t bytes = agg_source_scratch_bytes(n, mixing) + agg_combine_scratch_bytes(n);
        if (bytes > slot) slot = bytes;
    }
    size_t cursor = 0;
    plan->slots.slot_bytes = agg_align64(slot);
    plan->slots.slot_count = slot ? plan->threads : 0;
    plan->slots.base = reserve(base, &cursor, (size_t)plan->slots.slot_count * plan->slots.slot_bytes);
    if (plan->needs_gram) {
        plan->gram_partials = reserve(base, &cursor, agg_gram_partials_bytes(n, d));
        plan->gram = reserve(base, &cursor, n * n * sizeof(double));
        plan->distances = reserve(base, &cursor, n * n * sizeof(double));
        plan->krum_scratch = reserve(base, &cursor, agg_krum_scratch_bytes(n));
    }
    if (mixing) {
        plan->members = reserve(base, &cursor, n * (n - config->f) * sizeof(uint32_t));
        plan->mixed_gram = reserve(base, &cursor, n * n * sizeof(double));
        plan->nnm_scratch = reserve(base, &cursor, agg_nnm_scratch_bytes(n));
    }
    if (plan->combine) {
        plan->combine_partials = reserve(base, &cursor, agg_combine_partials_bytes(n, d));
        plan->distances2 = reserve(base, &cursor, n * sizeof(double));
    }
    /* Selections and weighted sums of inputs (Krum family, NNM), and the
     * iterative rules' weights; the plain mean, median and trimmed mean
     * need nothing beyond their slots (the mean: nothing at all). */
    if (plan->needs_gram) {
        plan->selected = reserve(base, &cursor, n * sizeof(uint32_t));
        plan->pointers = reserve(base, &cursor, n * sizeof(float *));
    }
    if (plan->needs_gram || plan->combine) plan->weights = reserve(base, &cursor, n * sizeof(double));
    plan->total = cursor;
}

size_t agg_workspace_bytes(const AggConfig *config, size_t n, size_t d) {
    if (agg_check(config, n, d, NULL) != SPIRT_OK) return 0;
    AggPlan plan;
    plan_workspace(config, n, d, NULL, &plan);
    return plan.total;
}

/* --- Rules ------------------------------------------------------------- */

/* out = sum_j weights[j] x_j / divisor over the inputs with a nonzero
 * weight (in index order), reading only those. `weights` may be
 * plan->weights: it is compacted in place (entry j moves to <= j). */
static void weighted_inputs(const float *const *inputs, size_t n, size_t d, const double *weights, double divisor,
                            AggPlan *plan, float *out) {
    size_t count = 0;
    int all_ones = 1;
    for (size_t j = 0; j < n; j++)
        if (weights[j] != 0.0) {
            plan->pointers[count] = inputs[j];
            plan->weights[count] = weights[j]; /* count <= j: compacting in place is safe */
            all_ones &= weights[j] == 1.0;
            count++;
        }
    agg_mean_rows(plan->pointers, count, all_ones ? NULL : plan->weights, 1.0 / divisor, d, out, plan->threads);
}

static void run_geomed(const AggConfig *config, const AggSource *source, float *out, AggPlan *plan,
                       AggReport *report) {
    size_t n = source->count;
    double change2 = 0.0, norm2 = 0.0;
    double *weights = plan->weights;
    for (size_t j = 0; j < n; j++) weights[j] = 1.0;
    /* Start from the mean, and learn the distances to it. */
    agg_combine_pass(source, 0.0, NULL, weights, 1.0 / (double)n, out, plan->threads, &plan->slots,
                     plan->combine_partials, plan->distances2, &change2, &norm2);
    /* The inputs' spread sets the scale of nu and of the stopping test. */
    double spread = 0.0;
    for (size_t j = 0; j < n; j++) spread += sqrt(plan->distances2[j]);
    spread /= (double)n;
    if (spread == 0.0) return; /* every input equals the mean */
    double nu = config->nu * spread;
    for (int iteration = 1; iteration <= config->max_iterations; iteration++) {
        double total = 0.0;
        for (size_t j = 0; j < n; j++) {
            double distance = sqrt(plan->distances2[j]);
            weights[j] = 1.0 / (distance > nu ? distance : nu);
            total += weights[j];
        }
        agg_combine_pass(source, 0.0, out, weights, 1.0 / total, out, plan->threads, &plan->slots,
                         plan->combine_partials, plan->distances2, &change2, &norm2);
        report->iterations = iteration;
        if (sqrt(change2) <= config->tolerance * (spread + sqrt(norm2))) break;
    }
}

static void run_cclip(const AggConfig *config, const AggSource *source, float *out, AggPlan *plan,
                      AggReport *report) {
    size_t n = source->count;
    double change2 = 0.0, norm2 = 0.0;
    const float *start = config->center;
    if (start == NULL) {
        agg_order_pass(source, AGG_ORDER_MEDIAN, 0, out, plan->threads, &plan->slots);
        start = out;
    }
    /* Copy the centre into out and measure the distances to it. */
    agg_combine_pass(source, 1.0, start, NULL, 1.0, out, plan->threads, &plan->slots, plan->combine_partials,
                     plan->distances2, &change2, &norm2);
    double *clip = plan->weights;
    for (int iteration = 1; iteration <= config->clip_iterations; iteration++) {
        double kept = 0.0;
        for (size_t j = 0; j < n; j++) {
            double distance = sqrt(plan->distances2[j]);
            clip[j] = distance > config->tau ? config->tau / distance : 1.0;
            kept += clip[j];
        }
        /* v + (1/n) sum c_j (x_j - v) = ((n - sum c) v + sum c_j x_j) / n */
        agg_combine_pass(source, (double)n - kept, out, clip, 1.0 / (double)n, out, plan->threads, &plan->slots,
                         plan->combine_partials, plan->distances2, &change2, &norm2);
        report->iterations = iteration;
    }
}

static void record_selection(AggReport *report, const uint32_t *selected, size_t count, double best) {
    report->selected_count = count;
    for (size_t s = 0; s < count && s < sizeof(report->selected) / sizeof(report->selected[0]); s++)
        report->selected[s] = selected[s];
    report->scores_min = best;
}

int agg_run(const AggConfig *config, const float *const *inputs, size_t n, size_t d, float *out, void *workspace,
            size_t workspace_bytes, AggReport *report, SpirtError *error) {
    int status = agg_check(config, n, d, error);
    if (status != SPIRT_OK) return status;
    const char *name = rule_names[config->rule];
    if (inputs == NULL || out == NULL)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "%s: %s is NULL", name, inputs ? "out" : "inputs");
    for (size_t i = 0; i < n; i++)
        if (inputs[i] == NULL) return spirt_error_set(error, SPIRT_ERR_INVALID, "%s: input %zu is NULL", name, i);
    AggPlan plan;
    plan_workspace(config, n, d, NULL, &plan);
    if (workspace_bytes < plan.total || (plan.total && workspace == NULL))
        return spirt_error_set(error, SPIRT_ERR_INVALID, "%s: workspace of %zu bytes, needs %zu (agg_workspace_bytes)",
                               name, workspace ? workspace_bytes : 0, plan.total);
    if ((uintptr_t)workspace % 64 != 0)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "%s: workspace is not 64-byte aligned", name);
    plan_workspace(config, n, d, workspace, &plan);
    AggReport local_report;
    if (report == NULL) report = &local_report;
    memset(report, 0, sizeof(*report));

    if (config->rule == AGG_CCLIP && config->center) {
        for (size_t c = 0; c < d; c++)
            if (!isfinite(config->center[c]))
                return spirt_error_set(error, SPIRT_ERR_NONFINITE, "cclip: the centre has a non-finite value at %zu",
                                       c);
    }
    size_t bad = n, coordinate = 0;
    if (!config->inputs_known_finite && !plan.needs_gram) bad = agg_find_nonfinite(inputs, n, d, plan.threads, &coordinate);
    if (plan.needs_gram) {
        size_t gram_bad = agg_gram(inputs, n, d, plan.threads, &plan.slots, plan.gram_partials, plan.gram);
        if (!config->inputs_known_finite) bad = gram_bad;
        if (bad < n) /* the gram pass only says which input: find where */
            for (coordinate = 0; coordinate + 1 < d && isfinite(inputs[bad][coordinate]); coordinate++) {
            }
    }
    if (bad < n)
        return spirt_error_set(error, SPIRT_ERR_NONFINITE, "%s: input %zu has a non-finite value (%g at coordinate %zu)",
                               name, bad, (double)inputs[bad][coordinate], coordinate);

    AggMixing mixing = {0};
    const double *distances = plan.distances;
    if (plan.needs_gram) {
        agg_gram_distances(plan.gram, n, plan.distances);
        if (config->pre_nnm) {
            mixing.neighbours = n - config->f;
            mixing.members = plan.members;
            agg_nnm_neighbours(plan.distances, n, config->f, plan.members, plan.nnm_scratch);
            agg_nnm_mixed_gram(plan.gram, n, &mixing, plan.mixed_gram, plan.nnm_scratch);
            agg_gram_distances(plan.mixed_gram, n, plan.distances);
        }
    }
    const AggMixing *mix = config->pre_nnm ? &mixing : NULL;
    double mix_divisor = mix ? (double)mixing.neighbours : 1.0;
    AggSource source = {inputs, d, n, NULL, mix};

    switch (config->rule) {
    case AGG_MEAN:
        if (mix) {
            for (size_t j = 0; j < n; j++) plan.selected[j] = (uint32_t)j;
            agg_nnm_input_weights(mix, n, plan.selected, n, plan.weights);
            weighted_inputs(inputs, n, d, plan.weights, (double)n * mix_divisor, &plan, out);
        } else {
            agg_mean_rows(inputs, n, NULL, 1.0 / (double)n, d, out, plan.threads);
        }
        break;
    case AGG_MEDIAN:
        agg_order_pass(&source, AGG_ORDER_MEDIAN, 0, out, plan.threads, &plan.slots);
        break;
    case AGG_TRIMMED_MEAN:
        agg_order_pass(&source, AGG_ORDER_TRIMMED, resolved_trim(config), out, plan.threads, &plan.slots);
        break;
    case AGG_KRUM:
    case AGG_MULTI_KRUM: {
        size_t m = config->rule == AGG_KRUM ? 1 : resolved_m(config, n);
        double best = agg_krum_select(distances, n, config->f, m, plan.selected, plan.krum_scratch);
        record_selection(report, plan.selected, m, best);
        if (mix) {
            agg_nnm_input_weights(mix, n, plan.selected, m, plan.weights);
        } else {
            for (size_t j = 0; j < n; j++) plan.weights[j] = 0.0;
            for (size_t s = 0; s < m; s++) plan.weights[plan.selected[s]] = 1.0;
        }
        weighted_inputs(inputs, n, d, plan.weights, (double)m * mix_divisor, &plan, out);
        break;
    }
    case AGG_BULYAN: {
        size_t theta = n - 2 * config->f;
        double best = agg_bulyan_select(distances, n, config->f, plan.selected, plan.krum_scratch);
        record_selection(report, plan.selected, theta, best);
        AggSource chosen = {inputs, d, theta, plan.selected, mix};
        agg_order_pass(&chosen, AGG_ORDER_BULYAN, config->f, out, plan.threads, &plan.slots);
        break;
    }
    case AGG_GEOMED:
        run_geomed(config, &source, out, &plan, report);
        break;
    case AGG_CCLIP:
        run_cclip(config, &source, out, &plan, report);
        break;
    default:
        return spirt_error_set(error, SPIRT_ERR_INTERNAL, "aggregation: rule %d not dispatched", (int)config->rule);
    }
    /* Every rule forms its result in double from finite floats, so this
     * should not happen; it is cheap (d reads) and the header promises it. */
    if (!agg_all_finite(out, d))
        return spirt_error_set(error, SPIRT_ERR_NONFINITE, "%s: the result overflowed float32", name);
    return SPIRT_OK;
}
