/* test_agg.c -- every aggregation rule against an independent naive
 * reference written here (double precision, sort-based, O(n^2 d) distances),
 * on random inputs with ties, duplicates, huge and tiny magnitudes and
 * awkward sizes; the literature's behaviour under attack; preconditions,
 * parameter and workspace errors; non-finite inputs; thread-count
 * determinism; the report. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agg/agg_internal.h"
#include "spirt/agg.h"
#include "spirt/rng.h"
#include "test.h"

/* --- Test data ---------------------------------------------------------- */

typedef enum DataKind { DATA_NORMAL, DATA_TIES, DATA_DUPLICATES, DATA_HUGE, DATA_TINY } DataKind;
static const char *const data_names[] = {"normal", "ties", "duplicates", "huge", "tiny"};

typedef struct Inputs {
    size_t n, d;
    float *storage;       /* n * d, row-major */
    const float **rows;   /* n pointers into storage */
    double magnitude;     /* max |x| */
} Inputs;

static Inputs inputs_make(size_t n, size_t d, DataKind kind, uint64_t seed) {
    Inputs in = {n, d, malloc(n * d * sizeof(float)), malloc(n * sizeof(float *)), 0.0};
    SpirtRng rng;
    rng_init(&rng, seed);
    for (size_t i = 0; i < n; i++) {
        float *row = in.storage + i * d;
        in.rows[i] = row;
        double offset = rng_normal(&rng);
        for (size_t c = 0; c < d; c++) {
            double v = offset + rng_normal(&rng);
            if (kind == DATA_TIES) v = (double)rng_below(&rng, 4) - 1.5;
            if (kind == DATA_HUGE) v *= 1e30;
            if (kind == DATA_TINY) v *= 1e-30;
            row[c] = (float)v;
        }
        if (kind == DATA_DUPLICATES && i >= 2 && i % 2 == 0) memcpy(row, in.storage, d * sizeof(float));
    }
    for (size_t k = 0; k < n * d; k++)
        if (fabs(in.storage[k]) > in.magnitude) in.magnitude = fabs(in.storage[k]);
    return in;
}

static void inputs_free(Inputs *in) {
    free(in->storage);
    free(in->rows);
}

/* --- Naive references (double precision) ------------------------------- */

static int compare_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double ref_sq_distance(const double *a, const double *b, size_t d) {
    double sum = 0.0;
    for (size_t c = 0; c < d; c++) sum += (a[c] - b[c]) * (a[c] - b[c]);
    return sum;
}

/* x as doubles, n * d */
static double *to_double(const Inputs *in) {
    double *x = malloc(in->n * in->d * sizeof(double));
    for (size_t k = 0; k < in->n * in->d; k++) x[k] = in->storage[k];
    return x;
}

static void ref_mean(const double *x, size_t n, size_t d, double *out) {
    for (size_t c = 0; c < d; c++) {
        double s = 0.0;
        for (size_t i = 0; i < n; i++) s += x[i * d + c];
        out[c] = s / (double)n;
    }
}

/* Coordinate-wise: median (kind 0), trimmed mean (1), bulyan's step (2, on
 * the n rows given, with f = trim). */
static void ref_coordinate(const double *x, size_t n, size_t d, int kind, size_t trim, double *out) {
    double *v = malloc(n * sizeof(double));
    double *key = malloc(2 * n * sizeof(double));
    for (size_t c = 0; c < d; c++) {
        for (size_t i = 0; i < n; i++) v[i] = x[i * d + c];
        qsort(v, n, sizeof(double), compare_double);
        double median = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
        if (kind == 0) {
            out[c] = median;
        } else if (kind == 1) {
            double s = 0.0;
            for (size_t k = trim; k < n - trim; k++) s += v[k];
            out[c] = s / (double)(n - 2 * trim);
        } else {
            /* Sort by (|v - median|, v): the beta nearest, ties to the smaller. */
            size_t beta = n - 2 * trim;
            for (size_t i = 0; i < n; i++) {
                key[2 * i] = fabs(v[i] - median);
                key[2 * i + 1] = v[i];
            }
            for (size_t i = 1; i < n; i++)
                for (size_t j = i; j > 0 && (key[2 * j] < key[2 * j - 2] ||
                                             (key[2 * j] == key[2 * j - 2] && key[2 * j + 1] < key[2 * j - 1]));
                     j--) {
                    double t0 = key[2 * j], t1 = key[2 * j + 1];
                    key[2 * j] = key[2 * j - 2], key[2 * j + 1] = key[2 * j - 1];
                    key[2 * j - 2] = t0, key[2 * j - 1] = t1;
                }
            double s = 0.0;
            for (size_t k = 0; k < beta; k++) s += key[2 * k + 1];
            out[c] = s / (double)beta;
        }
    }
    free(v);
    free(key);
}

static double *ref_distances(const double *x, size_t n, size_t d) {
    double *D = malloc(n * n * sizeof(double));
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++) D[i * n + j] = ref_sq_distance(x + i * d, x + j * d, d);
    return D;
}

/* Krum score of active[a] among active[0..r). */
static double ref_krum_score(const double *D, size_t n, const size_t *active, size_t r, size_t a, size_t f) {
    double *others = malloc(n * sizeof(double));
    size_t count = 0;
    for (size_t b = 0; b < r; b++)
        if (b != a) others[count++] = D[active[a] * n + active[b]];
    qsort(others, count, sizeof(double), compare_double);
    size_t k = r >= f + 2 ? r - f - 2 : 0;
    double s = 0.0;
    for (size_t i = 0; i < k && i < count; i++) s += others[i];
    free(others);
    return s;
}

/* The m best by (score, index), best first. */
static void ref_krum_select(const double *D, size_t n, size_t f, size_t m, size_t *selected, double *best) {
    size_t *all = malloc(n * sizeof(size_t));
    double *score = malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) all[i] = i;
    for (size_t i = 0; i < n; i++) score[i] = ref_krum_score(D, n, all, n, i, f);
    for (size_t i = 0; i < n; i++) /* insertion sort by (score, index) */
        for (size_t j = i; j > 0 && score[all[j]] < score[all[j - 1]]; j--) {
            size_t t = all[j];
            all[j] = all[j - 1];
            all[j - 1] = t;
        }
    for (size_t s = 0; s < m; s++) selected[s] = all[s];
    *best = score[all[0]];
    free(all);
    free(score);
}

static void ref_bulyan_select(const double *D, size_t n, size_t f, size_t *selected) {
    size_t *active = malloc(n * sizeof(size_t));
    size_t r = n;
    for (size_t i = 0; i < n; i++) active[i] = i;
    for (size_t pick = 0; pick < n - 2 * f; pick++) {
        size_t winner = 0;
        double best = ref_krum_score(D, n, active, r, 0, f);
        for (size_t a = 1; a < r; a++) {
            double s = ref_krum_score(D, n, active, r, a, f);
            if (s < best) best = s, winner = a;
        }
        selected[pick] = active[winner];
        for (size_t a = winner; a + 1 < r; a++) active[a] = active[a + 1];
        r--;
    }
    free(active);
}

/* NNM: mixed vectors in double (n * d), neighbours by exact distances. */
static double *ref_nnm(const double *x, size_t n, size_t d, size_t f) {
    double *D = ref_distances(x, n, d);
    double *y = calloc(n * d, sizeof(double));
    size_t k = n - f;
    size_t *order = malloc(n * sizeof(size_t));
    for (size_t i = 0; i < n; i++) {
        /* others by (distance, index), itself first */
        size_t count = 0;
        for (size_t j = 0; j < n; j++)
            if (j != i) order[count++] = j;
        for (size_t a = 1; a < count; a++)
            for (size_t b = a; b > 0 && D[i * n + order[b]] < D[i * n + order[b - 1]]; b--) {
                size_t t = order[b];
                order[b] = order[b - 1];
                order[b - 1] = t;
            }
        /* The neighbour set: itself and the k - 1 nearest others, summed in
         * ascending index order (as the definition does not fix an order,
         * this one matches spirt's, so rounded rows can be compared). */
        char *member = calloc(n, 1);
        member[i] = 1;
        for (size_t a = 0; a + 1 < k; a++) member[order[a]] = 1;
        for (size_t j = 0; j < n; j++)
            if (member[j])
                for (size_t c = 0; c < d; c++) y[i * d + c] += x[j * d + c];
        for (size_t c = 0; c < d; c++) y[i * d + c] /= (double)k;
        free(member);
    }
    free(order);
    free(D);
    return y;
}

static double ref_objective(const double *x, size_t n, size_t d, const double *z) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += sqrt(ref_sq_distance(x + i * d, z, d));
    return s;
}

/* The geometric median to near machine precision: plain Weiszfeld in double
 * from the mean, many iterations. */
static void ref_geomed(const double *x, size_t n, size_t d, double *z) {
    ref_mean(x, n, d, z);
    double *next = malloc(d * sizeof(double));
    for (int it = 0; it < 2000; it++) {
        double total = 0.0;
        memset(next, 0, d * sizeof(double));
        for (size_t i = 0; i < n; i++) {
            double dist = sqrt(ref_sq_distance(x + i * d, z, d));
            double w = 1.0 / (dist > 1e-300 ? dist : 1e-300);
            total += w;
            for (size_t c = 0; c < d; c++) next[c] += w * x[i * d + c];
        }
        for (size_t c = 0; c < d; c++) z[c] = next[c] / total;
    }
    free(next);
}

static void ref_cclip(const double *x, size_t n, size_t d, const double *start, double tau, int iterations,
                      double *v) {
    memcpy(v, start, d * sizeof(double));
    double *step = malloc(d * sizeof(double));
    for (int it = 0; it < iterations; it++) {
        memset(step, 0, d * sizeof(double));
        for (size_t i = 0; i < n; i++) {
            double norm = sqrt(ref_sq_distance(x + i * d, v, d));
            double scale = norm > 0 && tau / norm < 1.0 ? tau / norm : 1.0;
            for (size_t c = 0; c < d; c++) step[c] += scale * (x[i * d + c] - v[c]);
        }
        for (size_t c = 0; c < d; c++) v[c] += step[c] / (double)n;
    }
    free(step);
}

/* Whether spirt's picks are Krum-optimal by the reference's scores, up to
 * ties: each pick's score is the least among the candidates left (replayed
 * with spirt's own earlier picks). Bulyan re-scores the remaining set after
 * each pick; Multi-Krum scores once. */
static int ref_picks_optimal(const double *D, size_t n, size_t f, const uint32_t *picks, size_t count, int rescore,
                             double slack) {
    size_t *active = malloc(n * sizeof(size_t));
    double *score = malloc(n * sizeof(double));
    size_t r = n;
    int ok = 1;
    for (size_t i = 0; i < n; i++) active[i] = i;
    for (size_t a = 0; a < r; a++) score[a] = ref_krum_score(D, n, active, r, a, f);
    for (size_t pick = 0; pick < count; pick++) {
        if (rescore)
            for (size_t a = 0; a < r; a++) score[a] = ref_krum_score(D, n, active, r, a, f);
        double best = INFINITY, mine = INFINITY;
        size_t where = r;
        for (size_t a = 0; a < r; a++) {
            if (score[a] < best) best = score[a];
            if (active[a] == picks[pick]) mine = score[a], where = a;
        }
        ok &= where < r && mine <= best + slack;
        if (where == r) break;
        for (size_t a = where; a + 1 < r; a++) active[a] = active[a + 1], score[a] = score[a + 1];
        r--;
    }
    free(active);
    free(score);
    return ok;
}

/* --- Helpers -------------------------------------------------------------- */

typedef struct Run {
    int status;
    float *out;
    AggReport report;
    SpirtError error;
} Run;

static Run run_rule(const AggConfig *config, const float *const *rows, size_t n, size_t d) {
    Run run = {0};
    run.out = malloc(d * sizeof(float));
    for (size_t c = 0; c < d; c++) run.out[c] = -12345.0f;
    size_t bytes = agg_workspace_bytes(config, n, d);
    void *workspace = bytes ? aligned_alloc(64, (bytes + 63) & ~(size_t)63) : NULL;
    run.status = agg_run(config, rows, n, d, run.out, workspace, bytes, &run.report, &run.error);
    free(workspace);
    return run;
}

/* max_c |out - ref| / (|ref| + scale) */
static double worst_error(const float *out, const double *ref, size_t d, double scale) {
    double worst = 0.0;
    for (size_t c = 0; c < d; c++) {
        double e = fabs((double)out[c] - ref[c]) / (fabs(ref[c]) + scale);
        if (!(e <= worst)) worst = e; /* NaN sticks */
    }
    return worst;
}

static int exactly_equals_float_of(const float *out, const double *ref, size_t d) {
    for (size_t c = 0; c < d; c++)
        if (out[c] != (float)ref[c]) return 0;
    return 1;
}

/* --- Rules against references ---------------------------------------------- */

typedef struct Case {
    size_t n, d, f;
    DataKind kind;
} Case;

static void check_case(const Case *k, uint64_t seed, int nnm) {
    Inputs in = inputs_make(k->n, k->d, k->kind, seed);
    size_t n = k->n, d = k->d, f = k->f;
    double *x = to_double(&in);
    /* The vectors the rule sees: exact mixtures (what Krum-family outputs,
     * weighted sums of the inputs, are compared with) and the same rounded
     * to float (what the coordinate-wise and iterative rules work on). */
    double *base = nnm ? ref_nnm(x, n, d, f) : x;
    double *rounded = base;
    if (nnm) {
        rounded = malloc(n * d * sizeof(double));
        for (size_t k2 = 0; k2 < n * d; k2++) rounded[k2] = (float)base[k2];
    }
    double *ref = malloc(d * sizeof(double));
    double *D = ref_distances(base, n, d);
    double scale = in.magnitude;
    char label[160];
    snprintf(label, sizeof(label), "n=%zu d=%zu f=%zu %s%s", n, d, f, data_names[k->kind], nnm ? " nnm" : "");

    for (int r = 0; r < AGG_RULE_COUNT; r++) {
        AggConfig config = agg_config_default((AggRule)r);
        config.f = f;
        config.pre_nnm = nnm;
        config.threads = 2;
        if (agg_check(&config, n, d, NULL) != SPIRT_OK) continue;
        Run run = run_rule(&config, in.rows, n, d);
        if (!CHECKF(run.status == SPIRT_OK, "%s %s: %s", label, agg_rule_name((AggRule)r), run.error.message)) {
            free(run.out);
            continue;
        }
        double tolerance = 1e-6;
        size_t selected[AGG_MAX_INPUTS];
        double best = 0.0;
        switch ((AggRule)r) {
        case AGG_MEAN: ref_mean(base, n, d, ref); break;
        case AGG_MEDIAN:
            ref_coordinate(rounded, n, d, 0, 0, ref);
            CHECKF(exactly_equals_float_of(run.out, ref, d), "%s median is not exact", label);
            break;
        case AGG_TRIMMED_MEAN: ref_coordinate(rounded, n, d, 1, f, ref); break;
        case AGG_KRUM:
        case AGG_MULTI_KRUM: {
            size_t m = r == AGG_KRUM ? 1 : n - f;
            ref_krum_select(D, n, f, m, selected, &best);
            CHECKF(run.report.selected_count == m, "%s %s: %zu selected", label, agg_rule_name(r),
                   run.report.selected_count);
            int same = 1;
            for (size_t s = 0; s < m; s++) same &= run.report.selected[s] == selected[s];
            /* Exact ties (duplicates, and mixed vectors with the same
             * neighbours) may be broken differently after rounding: then
             * spirt's picks must still be optimal by the reference scores. */
            double slack = 1e-9 * (best + scale * scale * (double)d);
            CHECKF(ref_picks_optimal(D, n, f, run.report.selected, m, 0, slack), "%s %s: picks not optimal", label,
                   agg_rule_name(r));
            if (k->kind != DATA_TIES && k->kind != DATA_DUPLICATES && !nnm)
                CHECKF(same, "%s %s: selection %u.. vs reference %zu..", label, agg_rule_name(r),
                       run.report.selected[0], selected[0]);
            CHECK_NEAR(run.report.scores_min, best, 1e-9 * (best + scale * scale * (double)d));
            /* The output is the average of the rows spirt selected. */
            for (size_t c = 0; c < d; c++) {
                double s = 0.0;
                for (size_t j = 0; j < m; j++) s += base[(size_t)run.report.selected[j] * d + c];
                ref[c] = s / (double)m;
            }
            if (r == AGG_KRUM && !nnm)
                CHECKF(memcmp(run.out, in.rows[run.report.selected[0]], d * sizeof(float)) == 0,
                       "%s krum output is not bit-identical to input %u", label, run.report.selected[0]);
            break;
        }
        case AGG_BULYAN: {
            size_t theta = n - 2 * f;
            ref_bulyan_select(D, n, f, selected);
            CHECK(run.report.selected_count == theta);
            int same = 1;
            for (size_t s = 0; s < theta; s++) same &= run.report.selected[s] == selected[s];
            double slack = 1e-9 * scale * scale * (double)d * (double)n;
            CHECKF(ref_picks_optimal(D, n, f, run.report.selected, theta, 1, slack), "%s bulyan picks not optimal",
                   label);
            if (k->kind != DATA_TIES && k->kind != DATA_DUPLICATES && !nnm)
                CHECKF(same, "%s bulyan picks differ from the reference", label);
            double *chosen = malloc(theta * d * sizeof(double));
            for (size_t s = 0; s < theta; s++)
                memcpy(chosen + s * d, rounded + (size_t)run.report.selected[s] * d, d * sizeof(double));
            ref_coordinate(chosen, theta, d, 2, f, ref);
            free(chosen);
            break;
        }
        case AGG_GEOMED: {
            ref_geomed(rounded, n, d, ref);
            double *z = malloc(d * sizeof(double));
            for (size_t c = 0; c < d; c++) z[c] = run.out[c];
            double got = ref_objective(rounded, n, d, z), optimum = ref_objective(rounded, n, d, ref);
            /* Stopping at a relative change of 1e-6 leaves the objective
             * within ~1e-5 of the optimum; storing z as float adds rounding. */
            double rounding = (double)n * sqrt((double)d) * 1.2e-7 * scale;
            CHECKF(got <= optimum * (1 + 1e-5) + rounding, "%s geomed objective %.12g vs optimum %.12g", label, got,
                   optimum);
            CHECKF(run.report.iterations >= 0 && run.report.iterations <= config.max_iterations, "%s iterations %d",
                   label, run.report.iterations);
            free(z);
            /* The point itself: the optimum is flat, so compare loosely. */
            double spread = optimum / (double)n + rounding;
            tolerance = 0.0;
            double worst = 0.0;
            for (size_t c = 0; c < d; c++) {
                double e = fabs(run.out[c] - ref[c]);
                if (e > worst) worst = e;
            }
            CHECKF(worst <= 1e-2 * spread, "%s geomed off by %g (spread %g)", label, worst, spread);
            break;
        }
        case AGG_CCLIP: {
            double *start = malloc(d * sizeof(double));
            ref_coordinate(rounded, n, d, 0, 0, start);
            for (size_t c = 0; c < d; c++) start[c] = (float)start[c]; /* spirt's start is a float vector */
            ref_cclip(rounded, n, d, start, config.tau, config.clip_iterations, ref);
            CHECK(run.report.iterations == config.clip_iterations);
            free(start);
            tolerance = 1e-5;
            break;
        }
        default: break;
        }
        if (tolerance > 0.0) {
            double worst = worst_error(run.out, ref, d, scale);
            CHECKF(worst <= tolerance, "%s %s: error %.3g > %.3g", label, agg_rule_name((AggRule)r), worst, tolerance);
        }
        free(run.out);
    }
    free(D);
    free(ref);
    if (rounded != base) free(rounded);
    if (base != x) free(base);
    free(x);
    inputs_free(&in);
}

static void test_rules_against_references(void) {
    test_begin("every rule vs a naive double-precision reference");
    const Case cases[] = {
        {1, 5, 0, DATA_NORMAL},      {2, 33, 0, DATA_NORMAL},     {3, 17, 0, DATA_NORMAL},
        {4, 100, 0, DATA_TIES},      {5, 1000, 1, DATA_NORMAL},   {7, 1, 1, DATA_NORMAL},
        {7, 531, 1, DATA_TIES},      {8, 999, 1, DATA_DUPLICATES}, {10, 4099, 1, DATA_NORMAL},
        {10, 2000, 2, DATA_HUGE},    {10, 2000, 2, DATA_TINY},    {11, 1537, 2, DATA_NORMAL},
        {15, 777, 3, DATA_NORMAL},   {16, 512, 3, DATA_TIES},     {20, 3001, 4, DATA_NORMAL},
        {32, 300, 7, DATA_NORMAL},   {33, 300, 7, DATA_NORMAL},   {40, 129, 9, DATA_TIES},
        {41, 257, 9, DATA_NORMAL},   {12, 70001, 2, DATA_NORMAL}, {41, 100, 2, DATA_TIES},
        {38, 300, 1, DATA_NORMAL}, /* Bulyan's theta > 32: the sort path */
        {30, 2100, 6, DATA_NORMAL}, /* Gram of n > 24: lanes summed per block, 3 blocks */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        check_case(&cases[i], 100 + i, 0);
        if (cases[i].n >= 2 * cases[i].f + 1 && cases[i].d <= 5000) check_case(&cases[i], 200 + i, 1);
    }
}

/* --- Networks and sorting helpers ---------------------------------------- */

static void test_networks(void) {
    test_begin("pruned sorting networks: 0-1 principle, exhaustive up to 16 wires");
    for (size_t wires = 1; wires <= AGG_NETWORK_MAX_WIRES; wires++) {
        unsigned char labels[AGG_NETWORK_MAX_WIRES];
        for (size_t w = 0; w < wires; w++) labels[w] = AGG_WIRE_EXACT;
        AggNetwork network;
        agg_network_build(&network, wires, labels);
        int sorted_all = 1;
        uint64_t patterns = wires <= 16 ? (uint64_t)1 << wires : 200000;
        SpirtRng rng;
        rng_init(&rng, wires);
        for (uint64_t p = 0; p < patterns; p++) {
            uint64_t bits = wires <= 16 ? p : rng_next_u64(&rng);
            unsigned char v[AGG_NETWORK_MAX_WIRES];
            for (size_t w = 0; w < wires; w++) v[w] = (bits >> w) & 1;
            for (size_t t = 0; t < network.count; t++) {
                unsigned char a = v[network.pairs[t][0]], b = v[network.pairs[t][1]];
                v[network.pairs[t][0]] = a < b ? a : b;
                v[network.pairs[t][1]] = a < b ? b : a;
            }
            for (size_t w = 1; w < wires; w++) sorted_all &= v[w - 1] <= v[w];
        }
        CHECKF(sorted_all, "network on %zu wires does not sort", wires);
        if (wires == 32) CHECKF(network.count == 191, "Batcher on 32 wires has %zu comparators", network.count);
    }
    /* Pruning: a median network needs far fewer comparators than a sort. */
    unsigned char labels[20] = {0};
    labels[9] = labels[10] = AGG_WIRE_GROUP;
    AggNetwork median, full;
    agg_network_build(&median, 20, labels);
    for (int w = 0; w < 20; w++) labels[w] = AGG_WIRE_EXACT;
    agg_network_build(&full, 20, labels);
    CHECKF(median.count < full.count, "median %zu vs sort %zu comparators", median.count, full.count);

    test_begin("sort and select helpers vs qsort");
    SpirtRng rng;
    rng_init(&rng, 5);
    for (int trial = 0; trial < 200; trial++) {
        size_t count = 1 + rng_below(&rng, 300);
        double a[300], b[300], c[300];
        for (size_t i = 0; i < count; i++) a[i] = b[i] = c[i] = trial % 3 ? rng_normal(&rng) : (double)rng_below(&rng, 3);
        qsort(a, count, sizeof(double), compare_double);
        agg_sort_doubles(b, count);
        CHECK(memcmp(a, b, count * sizeof(double)) == 0);
        size_t k = rng_below(&rng, count);
        agg_select_doubles(c, count, k);
        int ok = c[k] == a[k];
        for (size_t i = 0; i < count; i++) ok &= i < k ? c[i] <= c[k] : c[i] >= c[k];
        CHECKF(ok, "select k=%zu of %zu", k, count);
    }
}

/* --- Literature behaviour --------------------------------------------------- */

static double distance_to(const float *out, const double *point, size_t d) {
    double s = 0.0;
    for (size_t c = 0; c < d; c++) s += (out[c] - point[c]) * (out[c] - point[c]);
    return sqrt(s);
}

static void test_attacks(void) {
    test_begin("f huge outliers: robust rules stay with the honest, the mean does not");
    size_t n = 15, f = 3, d = 1000;
    Inputs in = inputs_make(n, d, DATA_NORMAL, 77);
    /* Honest: mean + small noise around a common point; attackers far away. */
    SpirtRng rng;
    rng_init(&rng, 78);
    double *honest_mean = calloc(d, sizeof(double));
    for (size_t i = 0; i < n; i++)
        for (size_t c = 0; c < d; c++) {
            float *row = in.storage + i * d;
            row[c] = i < n - f ? (float)(1.0 + 0.1 * rng_normal(&rng)) : (float)(1e6 + 1e3 * rng_normal(&rng));
            if (i < n - f) honest_mean[c] += row[c] / (double)(n - f);
        }
    double honest_radius = 0.0; /* the farthest honest vector from the honest mean */
    for (size_t i = 0; i < n - f; i++) {
        double r = distance_to(in.rows[i], honest_mean, d);
        if (r > honest_radius) honest_radius = r;
    }
    for (int nnm = 0; nnm <= 1; nnm++)
        for (int r = 0; r < AGG_RULE_COUNT; r++) {
            AggConfig config = agg_config_default((AggRule)r);
            config.f = f;
            config.pre_nnm = nnm;
            config.tau = 1.0;
            config.clip_iterations = 5;
            Run run = run_rule(&config, in.rows, n, d);
            CHECK_OK(run.status, &run.error);
            double off = distance_to(run.out, honest_mean, d);
            if (r == AGG_MEAN)
                CHECKF(off > 1e5, "the mean should be dragged away, off by %g", off);
            else
                CHECKF(off <= honest_radius, "%s%s: off by %g (honest radius %g)", agg_rule_name((AggRule)r),
                       nnm ? "+nnm" : "", off, honest_radius);
            if ((r == AGG_KRUM || r == AGG_MULTI_KRUM || r == AGG_BULYAN) && !nnm)
                for (size_t s = 0; s < run.report.selected_count; s++)
                    CHECKF(run.report.selected[s] < n - f, "%s selected attacker %u", agg_rule_name((AggRule)r),
                           run.report.selected[s]);
            free(run.out);
        }
    free(honest_mean);

    test_begin("Krum-family outputs are inputs or averages of inputs");
    AggConfig krum = agg_config_default(AGG_MULTI_KRUM);
    krum.f = 2;
    krum.m = 3;
    Run run = run_rule(&krum, in.rows, n, d);
    CHECK_OK(run.status, &run.error);
    int average_of_selected = 1;
    for (size_t c = 0; c < d; c++) {
        double s = 0.0;
        for (size_t j = 0; j < 3; j++) s += in.rows[run.report.selected[j]][c];
        average_of_selected &= run.out[c] == (float)(s / 3.0);
    }
    CHECK(run.report.selected_count == 3 && average_of_selected);
    free(run.out);
    inputs_free(&in);

    test_begin("f = 0 and identical inputs: every rule returns that input exactly");
    for (size_t count = 1; count <= 9; count += 4) {
        Inputs same = inputs_make(count, 333, DATA_NORMAL, 9);
        for (size_t i = 1; i < count; i++) memcpy(same.storage + i * 333, same.storage, 333 * sizeof(float));
        for (int nnm = 0; nnm <= 1; nnm++)
            for (int r = 0; r < AGG_RULE_COUNT; r++) {
                AggConfig config = agg_config_default((AggRule)r);
                config.pre_nnm = nnm;
                if (agg_check(&config, count, 333, NULL) != SPIRT_OK) continue;
                Run same_run = run_rule(&config, same.rows, count, 333);
                CHECK_OK(same_run.status, &same_run.error);
                CHECKF(memcmp(same_run.out, same.storage, 333 * sizeof(float)) == 0, "%s%s n=%zu changed the input",
                       agg_rule_name((AggRule)r), nnm ? "+nnm" : "", count);
                free(same_run.out);
            }
        inputs_free(&same);
    }
}

/* --- Errors ------------------------------------------------------------------ */

static void expect_error(AggConfig config, size_t n, size_t d, int code, const char *needle) {
    SpirtError error;
    int status = agg_check(&config, n, d, &error);
    CHECK_ERROR(status, code, &error, needle);
    CHECK(agg_workspace_bytes(&config, n, d) == 0);
    /* agg_run refuses the same way, out untouched. */
    Inputs in = inputs_make(n ? n : 1, d ? d : 1, DATA_NORMAL, 1);
    float out[4] = {7, 7, 7, 7};
    status = agg_run(&config, in.rows, n, d, d <= 4 ? out : NULL, NULL, 0, NULL, &error);
    CHECK_ERROR(status, code, &error, needle);
    CHECK(out[0] == 7 && out[3] == 7);
    inputs_free(&in);
}

static void test_errors(void) {
    test_begin("preconditions and parameters are refused with a clear message");
    /* Each case: a rule's defaults, f, one field changed, n and d. */
    enum Field { NONE, TRIM, M, NNM, MAX_ITERATIONS, NU, TOLERANCE, TAU, CLIP_ITERATIONS };
    static const struct {
        AggRule rule;
        size_t f;
        enum Field field;
        double value;
        size_t n, d;
        int code;
        const char *needle;
    } cases[] = {
        {AGG_KRUM, 1, NONE, 0, 4, 3, SPIRT_ERR_PRECONDITION, "krum needs n >= 2f + 3: n = 4, f = 1"},
        {AGG_KRUM, SIZE_MAX, NONE, 0, 4, 3, SPIRT_ERR_PRECONDITION, "n >= 2f + 3"},
        {AGG_MULTI_KRUM, 2, NONE, 0, 6, 3, SPIRT_ERR_PRECONDITION, "multi-krum needs n >= 2f + 3"},
        {AGG_MULTI_KRUM, 2, M, 9, 8, 3, SPIRT_ERR_INVALID, "1 <= m <= n"},
        {AGG_BULYAN, 1, NONE, 0, 6, 3, SPIRT_ERR_PRECONDITION, "bulyan needs n >= 4f + 3: n = 6, f = 1"},
        {AGG_TRIMMED_MEAN, 0, TRIM, 2, 4, 3, SPIRT_ERR_PRECONDITION, "trimmed-mean needs n > 2 trim: n = 4, trim = 2"},
        {AGG_TRIMMED_MEAN, 3, NONE, 0, 6, 3, SPIRT_ERR_PRECONDITION, "trim = 3"}, /* trim defaults to f */
        {AGG_MEAN, 0, NONE, 0, 0, 3, SPIRT_ERR_INVALID, "n = 0"},
        {AGG_MEAN, 0, NONE, 0, 3, 0, SPIRT_ERR_INVALID, "d = 0"},
        {AGG_MEAN, 0, NONE, 0, AGG_MAX_INPUTS + 1, 3, SPIRT_ERR_INVALID, "at most 4096"},
        {AGG_MEAN, 2, NNM, 1, 4, 3, SPIRT_ERR_PRECONDITION, "nnm needs n > 2f"},
        {AGG_GEOMED, 0, MAX_ITERATIONS, 0, 3, 3, SPIRT_ERR_INVALID, "max_iterations"},
        {AGG_GEOMED, 0, NU, 0, 3, 3, SPIRT_ERR_INVALID, "nu > 0"},
        {AGG_GEOMED, 0, TOLERANCE, NAN, 3, 3, SPIRT_ERR_INVALID, "tolerance"},
        {AGG_CCLIP, 0, TAU, -1, 3, 3, SPIRT_ERR_INVALID, "tau > 0"},
        {AGG_CCLIP, 0, CLIP_ITERATIONS, 0, 3, 3, SPIRT_ERR_INVALID, "clip_iterations"},
        {(AggRule)99, 0, NONE, 0, 3, 3, SPIRT_ERR_INVALID, "unknown rule"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        AggConfig config = agg_config_default(cases[i].rule);
        config.f = cases[i].f;
        double value = cases[i].value;
        switch (cases[i].field) {
        case TRIM: config.trim = (size_t)value; break;
        case M: config.m = (size_t)value; break;
        case NNM: config.pre_nnm = (int)value; break;
        case MAX_ITERATIONS: config.max_iterations = (int)value; break;
        case NU: config.nu = value; break;
        case TOLERANCE: config.tolerance = value; break;
        case TAU: config.tau = value; break;
        case CLIP_ITERATIONS: config.clip_iterations = (int)value; break;
        case NONE: break;
        }
        expect_error(config, cases[i].n, cases[i].d, cases[i].code, cases[i].needle);
    }

    test_begin("rule names");
    SpirtError error;
    AggRule rule;
    for (int r = 0; r < AGG_RULE_COUNT; r++) {
        CHECK_OK(agg_rule_parse(agg_rule_name((AggRule)r), &rule, &error), &error);
        CHECK(rule == (AggRule)r);
    }
    CHECK_ERROR(agg_rule_parse("krumm", &rule, &error), SPIRT_ERR_INVALID, &error, "'krumm'");
    CHECK(strstr(error.message, "multi-krum") != NULL);

    test_begin("workspace and argument errors");
    Inputs in = inputs_make(7, 100, DATA_NORMAL, 3);
    AggConfig krum = agg_config_default(AGG_KRUM);
    krum.f = 1;
    size_t bytes = agg_workspace_bytes(&krum, 7, 100);
    CHECK(bytes > 0);
    unsigned char *workspace = aligned_alloc(64, bytes + 64);
    float out[100];
    for (int c = 0; c < 100; c++) out[c] = 7.0f;
    CHECK_ERROR(agg_run(&krum, in.rows, 7, 100, out, workspace, bytes - 1, NULL, &error), SPIRT_ERR_INVALID, &error,
                "workspace of");
    CHECK_ERROR(agg_run(&krum, in.rows, 7, 100, out, workspace + 8, bytes, NULL, &error), SPIRT_ERR_INVALID, &error,
                "aligned");
    const float *with_null[7];
    memcpy(with_null, in.rows, sizeof(with_null));
    with_null[4] = NULL;
    CHECK_ERROR(agg_run(&krum, with_null, 7, 100, out, workspace, bytes, NULL, &error), SPIRT_ERR_INVALID, &error,
                "input 4 is NULL");
    CHECK(out[0] == 7.0f && out[99] == 7.0f);
    CHECK_OK(agg_run(&krum, in.rows, 7, 100, out, workspace, bytes, NULL, &error), &error);
    free(workspace);
    AggConfig mean = agg_config_default(AGG_MEAN);
    CHECK(agg_workspace_bytes(&mean, 7, 100) == 0); /* the mean streams: no scratch */
    CHECK_OK(agg_run(&mean, in.rows, 7, 100, out, NULL, 0, NULL, &error), &error);
    inputs_free(&in);

    test_begin("NaN and infinities are refused naming the input; out untouched");
    const float poison[3] = {NAN, INFINITY, -INFINITY};
    for (int p = 0; p < 3; p++)
        for (int nnm = 0; nnm <= 1; nnm++)
            for (int r = 0; r < AGG_RULE_COUNT; r++) {
                Inputs bad = inputs_make(9, 1000, DATA_NORMAL, 11);
                bad.storage[5 * 1000 + 617] = poison[p];
                bad.storage[7 * 1000 + 3] = poison[p];
                AggConfig rule_config = agg_config_default((AggRule)r);
                rule_config.f = 1;
                rule_config.pre_nnm = nnm;
                Run run = run_rule(&rule_config, bad.rows, 9, 1000);
                CHECK_ERROR(run.status, SPIRT_ERR_NONFINITE, &run.error, "input 5 has a non-finite value");
                CHECKF(strstr(run.error.message, "coordinate 617") != NULL, "%s", run.error.message);
                int untouched = 1;
                for (size_t c = 0; c < 1000; c++) untouched &= run.out[c] == -12345.0f;
                CHECKF(untouched, "%s wrote out", agg_rule_name((AggRule)r));
                free(run.out);
                inputs_free(&bad);
            }
    AggConfig clip = agg_config_default(AGG_CCLIP);
    Inputs good = inputs_make(5, 50, DATA_NORMAL, 12);
    float center[50] = {0};
    center[20] = NAN;
    clip.center = center;
    Run run = run_rule(&clip, good.rows, 5, 50);
    CHECK_ERROR(run.status, SPIRT_ERR_NONFINITE, &run.error, "centre");
    free(run.out);
    inputs_free(&good);
}

/* --- Determinism, the report, agg_mean, cclip's centre ------------------------ */

static void test_determinism(void) {
    test_begin("bit-identical results for threads = 1, 2, 3");
    size_t n = 11, d = 200003, f = 2; /* 4 chunks, many blocks, ragged end */
    Inputs in = inputs_make(n, d, DATA_NORMAL, 21);
    for (int nnm = 0; nnm <= 1; nnm++)
        for (int r = 0; r < AGG_RULE_COUNT; r++) {
            Run runs[3];
            for (int t = 0; t < 3; t++) {
                AggConfig config = agg_config_default((AggRule)r);
                config.f = f;
                config.pre_nnm = nnm;
                config.threads = t + 1;
                config.max_iterations = 5;
                runs[t] = run_rule(&config, in.rows, n, d);
                CHECK_OK(runs[t].status, &runs[t].error);
            }
            for (int t = 1; t < 3; t++) {
                CHECKF(memcmp(runs[0].out, runs[t].out, d * sizeof(float)) == 0, "%s%s: %d threads differ",
                       agg_rule_name((AggRule)r), nnm ? "+nnm" : "", t + 1);
                CHECK(memcmp(&runs[0].report, &runs[t].report, sizeof(AggReport)) == 0);
            }
            for (int t = 0; t < 3; t++) free(runs[t].out);
        }
    inputs_free(&in);
}

static void test_report_and_extras(void) {
    test_begin("the report: iterations, selections");
    Inputs in = inputs_make(9, 500, DATA_NORMAL, 31);
    AggConfig geomed = agg_config_default(AGG_GEOMED);
    Run run = run_rule(&geomed, in.rows, 9, 500);
    CHECK_OK(run.status, &run.error);
    CHECKF(run.report.iterations >= 1 && run.report.iterations < 100, "iterations %d", run.report.iterations);
    CHECK(run.report.selected_count == 0);
    free(run.out);
    geomed.max_iterations = 2;
    geomed.tolerance = 0.0;
    run = run_rule(&geomed, in.rows, 9, 500);
    CHECK(run.status == SPIRT_OK && run.report.iterations == 2);
    free(run.out);
    AggConfig bulyan = agg_config_default(AGG_BULYAN);
    bulyan.f = 1;
    run = run_rule(&bulyan, in.rows, 9, 500);
    CHECK(run.status == SPIRT_OK && run.report.selected_count == 7);
    int distinct = 1;
    for (size_t a = 0; a < 7; a++)
        for (size_t b = a + 1; b < 7; b++) distinct &= run.report.selected[a] != run.report.selected[b];
    CHECK(distinct);
    free(run.out);

    test_begin("cclip from a given centre");
    double *x = to_double(&in);
    double start[500], ref[500];
    float center[500];
    for (int c = 0; c < 500; c++) center[c] = (float)(start[c] = 0.25 * (c % 7));
    AggConfig clip = agg_config_default(AGG_CCLIP);
    clip.center = center;
    clip.tau = 3.0;
    clip.clip_iterations = 4;
    run = run_rule(&clip, in.rows, 9, 500);
    CHECK_OK(run.status, &run.error);
    ref_cclip(x, 9, 500, start, 3.0, 4, ref);
    CHECKF(worst_error(run.out, ref, 500, in.magnitude) < 1e-5, "error %g", worst_error(run.out, ref, 500, in.magnitude));
    free(run.out);
    free(x);

    test_begin("agg_mean alone");
    float out[500];
    double mean[500];
    x = to_double(&in);
    ref_mean(x, 9, 500, mean);
    agg_mean(in.rows, 9, 500, out, 3);
    CHECK(worst_error(out, mean, 500, 1.0) < 1e-7);
    free(x);
    inputs_free(&in);

    test_begin("agg_mean of large vectors (streaming stores) vs plain stores and a reference");
    /* From 8M floats the mean streams its output when out is 64-byte
     * aligned; one float further in, the same call takes plain stores. */
    size_t long_d = ((size_t)8 << 20) + 1008, long_n = 3; /* (long_d + 16) * 4: a multiple of 64 */
    float *long_data = malloc(long_n * long_d * sizeof(float));
    float *long_out = aligned_alloc(64, (long_d + 16) * sizeof(float));
    const float *long_rows[3];
    SpirtRng long_rng;
    rng_init(&long_rng, 77);
    for (size_t k = 0; k < long_n * long_d; k++) long_data[k] = (float)rng_normal(&long_rng);
    for (size_t i = 0; i < long_n; i++) long_rows[i] = long_data + i * long_d;
    float *streamed = long_out, *plain = long_out + 1;
    int long_ok = 1;
    agg_mean(long_rows, long_n, long_d, streamed, 2);
    for (size_t c = 0; c < long_d; c++) {
        double sum = 0.0;
        for (size_t i = 0; i < long_n; i++) sum += long_rows[i][c];
        long_ok &= streamed[c] == (float)(sum * (1.0 / (double)long_n));
    }
    CHECKF(long_ok, "streamed mean differs from the double reference");
    float *copy = malloc(long_d * sizeof(float));
    memcpy(copy, streamed, long_d * sizeof(float));
    agg_mean(long_rows, long_n, long_d, plain, 3);
    CHECK(memcmp(copy, plain, long_d * sizeof(float)) == 0);
    free(copy);
    free(long_out);
    free(long_data);

    test_begin("agg_mean of the largest floats is finite (SPIRT.AVG relies on it)");
    /* Every n up to AGG_MAX_INPUTS: all FLT_MAX, all -FLT_MAX, and FLT_MAX
     * with one slightly smaller value (the sum is then inexact in double).
     * The mean must be finite and, for identical inputs, exactly FLT_MAX. */
    float *extremes = malloc(AGG_MAX_INPUTS * 64 * sizeof(float));
    const float **extreme_rows = malloc(AGG_MAX_INPUTS * sizeof(float *));
    for (size_t i = 0; i < AGG_MAX_INPUTS; i++) {
        extreme_rows[i] = extremes + i * 64;
        for (size_t c = 0; c < 64; c++)
            extremes[i * 64 + c] = c < 32 ? FLT_MAX : -FLT_MAX;
        if (i == 1) extremes[i * 64 + 5] = nextafterf(FLT_MAX, 0.0f);
    }
    int all_finite = 1, identical_exact = 1;
    for (size_t count = 1; count <= AGG_MAX_INPUTS; count = count < 64 ? count + 1 : count * 2) {
        float mean_out[64];
        agg_mean(extreme_rows, count, 64, mean_out, 2);
        for (size_t c = 0; c < 64; c++) all_finite &= isfinite(mean_out[c]) != 0;
        identical_exact &= mean_out[0] == FLT_MAX && mean_out[40] == -FLT_MAX;
    }
    CHECK(all_finite);
    CHECK(identical_exact);
    free(extremes);
    free(extreme_rows);

    test_begin("AGG_MAX_INPUTS inputs (selection path) for the coordinate-wise rules");
    Inputs many = inputs_make(AGG_MAX_INPUTS, 37, DATA_TIES, 51);
    x = to_double(&many);
    double *expected = malloc(37 * sizeof(double));
    for (int kind = 0; kind < 2; kind++) {
        AggConfig config = agg_config_default(kind ? AGG_TRIMMED_MEAN : AGG_MEDIAN);
        config.trim = 1000;
        run = run_rule(&config, many.rows, AGG_MAX_INPUTS, 37);
        CHECK_OK(run.status, &run.error);
        ref_coordinate(x, AGG_MAX_INPUTS, 37, kind, 1000, expected);
        CHECKF(worst_error(run.out, expected, 37, 1.0) < 1e-6, "%s", agg_rule_name(config.rule));
        free(run.out);
    }
    free(expected);
    free(x);
    inputs_free(&many);

    test_begin("inputs_known_finite skips the scan");
    Inputs big = inputs_make(5, 64, DATA_NORMAL, 41);
    AggConfig known = agg_config_default(AGG_MEDIAN);
    known.inputs_known_finite = 1;
    run = run_rule(&known, big.rows, 5, 64);
    CHECK_OK(run.status, &run.error);
    free(run.out);
    inputs_free(&big);
}

int main(void) {
    test_networks();
    test_rules_against_references();
    test_attacks();
    test_errors();
    test_determinism();
    test_report_and_extras();
    return test_finish();
}
