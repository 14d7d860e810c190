/* bench_agg.c -- `spirt bench agg`: every aggregation rule against the same
 * rule written with NumPy, on the same data, in the same run.
 *
 * For each n in {10, 20} and d in {1M, 10M} (--quick: 100K, 1M) it makes n
 * input vectors (n - f honest-looking, f = (n - 3) / 4 scaled up 10x, so the
 * robust rules have something to reject), writes them under $TMPDIR and
 * starts bench/agg_numpy.py on them, which keeps them loaded and runs its own
 * version of a rule on request. For each rule: one warm-up run of spirt's
 * agg_run, whose result NumPy's first run is checked against (the `match`
 * column; a mismatch is also a note); then spirt's --repeats timed runs
 * alternate with NumPy's --numpy-repeats (one only if its first took over
 * 3 s), so a burst of other work on a shared machine hits both alike. Each
 * figure is the median of its runs. The load average at the start and the
 * end is printed with the notes.
 *
 * Inputs are passed with inputs_known_finite = 1, as the Redis module does
 * (it stores only finite tensors): the finiteness scan is one more read of
 * the inputs, which NumPy's versions do not do either; its cost is reported
 * as a note.
 *
 * A bandwidth probe runs at the start and at the end: a read-only sum over
 * 512 MiB with the threads the rules use (what the machine can stream from
 * memory); the higher of the two is used. The mean must read n * d floats
 * and write d; `fraction_of_bandwidth` is those bytes over its time over the
 * probe's rate. Inputs that fit the last-level cache (40-80 MB at d = 1M,
 * against a 260 MB L3 on the target) are read from it in the warm runs, so
 * their fraction can exceed 1: the d = 10M rows are the memory-bound
 * figure. For the largest d, a note compares the Gram pass of Krum (one
 * thread) with gathering the same blocks and calling OpenBLAS's cblas_ssyrk
 * (one thread), the alternative src/agg/gram.c explains it does not use. */
#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/bench.h"
#include "cli/options.h"
#include "spirt/agg.h"
#include "spirt/clock.h"
#include "spirt/parallel.h"
#include "spirt/rng.h"

/* --- Timing agg_run ---------------------------------------------------------- */

typedef struct AggCall {
    AggConfig config;
    const float *const *inputs;
    size_t n, d;
    float *out;
    void *workspace;
    size_t workspace_bytes;
    AggReport report;
    int status;
    SpirtError error;
} AggCall;

static void agg_call_run(void *argument) {
    AggCall *call = argument;
    call->status = agg_run(&call->config, call->inputs, call->n, call->d, call->out, call->workspace,
                           call->workspace_bytes, &call->report, &call->error);
}

/* Gather + cblas_ssyrk over blocks, one thread: OpenBLAS's way to the Gram
 * matrix (accumulated in double across blocks, as gram.c does). */
typedef struct BlasGram {
    const float *const *inputs;
    size_t n, d;
    float *block;   /* n * 4096 */
    float *partial; /* n * n */
    double *gram;   /* n * n */
} BlasGram;

static void blas_gram_run(void *argument) {
    BlasGram *g = argument;
    enum { K = 4096 };
    memset(g->gram, 0, g->n * g->n * sizeof(double));
    for (size_t begin = 0; begin < g->d; begin += K) {
        size_t length = g->d - begin < K ? g->d - begin : K;
        for (size_t i = 0; i < g->n; i++) memcpy(g->block + i * length, g->inputs[i] + begin, length * sizeof(float));
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (int)g->n, (int)length, 1.0f, g->block, (int)length, 0.0f,
                    g->partial, (int)g->n);
        for (size_t k = 0; k < g->n * g->n; k++) g->gram[k] += g->partial[k];
    }
}

/* --- The benchmark ---------------------------------------------------------- */

static int write_floats(const char *path, const float *values, size_t count) {
    FILE *file = fopen(path, "wb");
    if (file == NULL) return -1;
    size_t written = fwrite(values, sizeof(float), count, file);
    int closed = fclose(file);
    return written == count && closed == 0 ? 0 : -1;
}

/* n vectors of d floats, contiguous: vector i is o_i + s_i * uniform(-1, 1),
 * the last f scaled by 10 (far from the others). */
static float *make_inputs(size_t n, size_t d, size_t f, uint64_t seed) {
    float *data = aligned_alloc(64, n * d * sizeof(float));
    if (data == NULL) return NULL;
    for (size_t i = 0; i < n; i++) {
        SpirtRng rng;
        rng_init_stream(&rng, seed, i);
        double scale = (1.0 + 0.05 * (double)i) * (i >= n - f ? 10.0 : 1.0), offset = 0.01 * (double)i;
        float *row = data + i * d;
        for (size_t c = 0; c < d; c += 2) {
            uint64_t bits = rng_next_u64(&rng);
            row[c] = (float)(offset + scale * ((double)(bits >> 40) * 0x1p-23 - 1.0));
            if (c + 1 < d) row[c + 1] = (float)(offset + scale * ((double)(bits & 0xffffff) * 0x1p-23 - 1.0));
        }
    }
    return data;
}

static int parse_rules(const char *list, int *wanted) {
    for (int r = 0; r < AGG_RULE_COUNT; r++) wanted[r] = list == NULL;
    if (list == NULL) return 0;
    char copy[256];
    snprintf(copy, sizeof(copy), "%s", list);
    for (char *save = NULL, *name = strtok_r(copy, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
        AggRule rule;
        if (agg_rule_parse(name, &rule, NULL) != SPIRT_OK) {
            fprintf(stderr, "spirt bench agg: unknown rule '%s'\n", name);
            return -1;
        }
        wanted[rule] = 1;
    }
    return 0;
}

/* The rows of the rules that ran, by rule (NULL: not run or failed). */
typedef json_t *RuleRows[AGG_RULE_COUNT];

/* Asks the NumPy server for `verb rule`; NULL (with a note) on failure. */
static json_t *numpy_ask(BenchPython *numpy, const char *verb, AggRule rule, BenchReport *report) {
    char request[64];
    snprintf(request, sizeof(request), "%s %s", verb, agg_rule_name(rule));
    SpirtError error;
    json_t *answer = bench_python_ask(numpy, request, &error);
    if (answer == NULL) bench_report_note(report, "NumPy '%s': %s", request, error.message);
    return answer;
}

/* Times one rule at one size: spirt's runs alternating with NumPy's (numpy
 * NULL: spirt only). Adds the row; returns 0, or 1 on a failure (noted). */
static int time_rule(AggRule rule, const float *const *inputs, size_t n, size_t d, size_t f, float *out, int threads,
                     int repeats, int numpy_repeats, BenchPython *numpy, const char *prefix, BenchReport *report,
                     json_t **row_out) {
    AggCall call = {.config = agg_config_default(rule), .inputs = inputs, .n = n, .d = d, .out = out};
    call.config.f = f;
    call.config.threads = threads;
    call.config.inputs_known_finite = 1;
    call.workspace_bytes = agg_workspace_bytes(&call.config, n, d);
    call.workspace = call.workspace_bytes ? aligned_alloc(64, (call.workspace_bytes + 63) & ~(size_t)63) : NULL;
    double *spirt_ms = malloc((size_t)repeats * sizeof(double));
    double *numpy_ms = malloc((size_t)numpy_repeats * sizeof(double));
    int failed = 0;
    if ((call.workspace_bytes && call.workspace == NULL) || spirt_ms == NULL || numpy_ms == NULL) {
        bench_report_note(report, "%s n=%zu d=%zu: out of memory", agg_rule_name(rule), n, d);
        failed = 1;
        goto done;
    }
    agg_call_run(&call); /* warm-up, and the result NumPy's is checked against */
    if (call.status != SPIRT_OK) {
        bench_report_note(report, "%s n=%zu d=%zu failed: %s", agg_rule_name(rule), n, d, call.error.message);
        failed = 1;
        goto done;
    }
    json_t *row = bench_report_add_row(report);
    *row_out = row;
    json_object_set_new(row, "rule", json_string(agg_rule_name(rule)));
    json_object_set_new(row, "n", json_integer((json_int_t)n));
    json_object_set_new(row, "d", json_integer((json_int_t)d));
    json_object_set_new(row, "f", json_integer((json_int_t)f));
    if (call.report.iterations) json_object_set_new(row, "iterations", json_integer(call.report.iterations));

    int numpy_runs = 0;
    if (numpy) {
        char path[600];
        snprintf(path, sizeof(path), "%s-%s.f32", prefix, agg_rule_name(rule));
        json_t *first = NULL, *check = NULL;
        if (write_floats(path, out, d) != 0) {
            bench_report_note(report, "could not write %s: %s", path, strerror(errno));
            failed = 1;
        } else if ((first = numpy_ask(numpy, "run", rule, report)) == NULL ||
                   (check = numpy_ask(numpy, "check", rule, report)) == NULL) {
            failed = 1;
        } else {
            numpy_ms[numpy_runs++] = json_real_value(json_object_get(first, "numpy_ms"));
            int match = json_is_true(json_object_get(check, "match"));
            json_object_set_new(row, "match", json_boolean(match));
            json_object_set(row, "max_diff", json_object_get(check, "max_diff"));
            if (json_object_get(first, "iterations")) /* the same work? */
                json_object_set(row, "numpy_iterations", json_object_get(first, "iterations"));
            if (!match) {
                bench_report_note(report, "MISMATCH %s n=%zu d=%zu: max |spirt - numpy| = %g > %g",
                                  agg_rule_name(rule), n, d, json_real_value(json_object_get(check, "max_diff")),
                                  json_real_value(json_object_get(check, "tolerance")));
                failed = 1;
            }
        }
        unlink(path);
        if (first && numpy_ms[0] > 3000.0) numpy_repeats = 1; /* seconds-long runs vary little */
        json_decref(first);
        json_decref(check);
        if (numpy_runs == 0) numpy = NULL;
    }
    /* Alternate: spirt, NumPy, spirt, NumPy, ... */
    int rounds = repeats > numpy_repeats ? repeats : numpy_repeats;
    for (int r = 0; r < rounds; r++) {
        if (r < repeats) {
            double start = clock_monotonic_ms();
            agg_call_run(&call);
            spirt_ms[r] = clock_monotonic_ms() - start;
        }
        if (numpy && numpy_runs < numpy_repeats) {
            json_t *answer = numpy_ask(numpy, "run", rule, report);
            if (answer == NULL) {
                failed = 1;
                numpy = NULL;
            } else {
                numpy_ms[numpy_runs++] = json_real_value(json_object_get(answer, "numpy_ms"));
                json_decref(answer);
            }
        }
    }
    double spirt_median = bench_median(spirt_ms, (size_t)repeats);
    json_object_set_new(row, "spirt_ms", json_real(spirt_median));
    if (numpy_runs > 0) {
        double numpy_median = bench_median(numpy_ms, (size_t)numpy_runs);
        json_object_set_new(row, "numpy_ms", json_real(numpy_median));
        json_object_set_new(row, "numpy_runs", json_integer(numpy_runs));
        json_object_set_new(row, "speedup", json_real(numpy_median / spirt_median));
    }
done:
    free(call.workspace);
    free(spirt_ms);
    free(numpy_ms);
    return failed;
}

int bench_agg(int argc, char **argv) {
    int quick = 0, as_json = 0, repeats = 7, numpy_repeats = 5, threads = 0, skip_numpy = 0;
    uint64_t seed = 1;
    const char *rules_list = NULL;
    const CliOption options[] = {
        {"quick", CLI_FLAG, &quick, NULL, "d = 100K and 1M instead of 1M and 10M"},
        {"rules", CLI_STRING, &rules_list, "LIST", "comma-separated rules (default: all)"},
        {"repeats", CLI_INT, &repeats, "N", "timed runs of each spirt rule, median reported (default 7)"},
        {"numpy-repeats", CLI_INT, &numpy_repeats, "N", "timed runs of each NumPy rule (default 5; 1 if > 3 s)"},
        {"threads", CLI_INT, &threads, "T", "threads for spirt and the bandwidth probe (default: all CPUs)"},
        {"seed", CLI_U64, &seed, "S", "seed of the input data (default 1)"},
        {"skip-numpy", CLI_FLAG, &skip_numpy, NULL, "time spirt only"},
        {"json", CLI_FLAG, &as_json, NULL, "print one JSON object"},
    };
    const CliCommand command = {"bench agg", "", "every aggregation rule, spirt vs NumPy on the same data", options,
                                sizeof(options) / sizeof(options[0])};
    int parsed = cli_parse(&command, argc, argv, NULL, 0, NULL);
    if (parsed != CLI_PARSED) return parsed == CLI_EXIT_OK ? 0 : 2;
    int wanted[AGG_RULE_COUNT];
    if (parse_rules(rules_list, wanted) != 0) return 2;
    if (repeats < 1 || numpy_repeats < 1) return cli_usage_error(&command, "--repeats must be >= 1");
    if (threads <= 0) threads = parallel_default_threads();

    BenchReport *report = bench_report_create("agg");
    bench_report_note_load(report, "at start");
    double bandwidth_start = bench_memory_bandwidth(threads, 5);
    bench_report_set(report, "threads", json_integer(threads));
    openblas_set_num_threads(1); /* only the Gram comparison below calls BLAS */

    const size_t ns[] = {10, 20};
    const size_t ds[] = {quick ? 100000 : 1000000, quick ? 1000000 : 10000000};
    const char *tmp = getenv("TMPDIR");
    char prefix[512], inputs_path[600];
    snprintf(prefix, sizeof(prefix), "%s/spirt-bench-agg-%ld", tmp && *tmp ? tmp : "/tmp", (long)getpid());
    snprintf(inputs_path, sizeof(inputs_path), "%s-inputs.f32", prefix);
    int failures = 0;
    json_t *mean_rows[4] = {0};

    for (size_t a = 0; a < 2; a++)
        for (size_t b = 0; b < 2; b++) {
            size_t n = ns[a], d = ds[b], f = (n - 3) / 4;
            float *data = make_inputs(n, d, f, seed);
            float *out = aligned_alloc(64, d * sizeof(float));
            const float **inputs = malloc(n * sizeof(float *));
            if (data == NULL || out == NULL || inputs == NULL) {
                fprintf(stderr, "spirt bench agg: out of memory for n = %zu, d = %zu\n", n, d);
                free(data), free(out), free(inputs);
                bench_report_free(report);
                return 1;
            }
            for (size_t i = 0; i < n; i++) inputs[i] = data + i * d;

            BenchPython *numpy = NULL;
            if (!skip_numpy) {
                SpirtError error;
                char n_text[32], d_text[32], f_text[32];
                snprintf(n_text, sizeof(n_text), "%zu", n);
                snprintf(d_text, sizeof(d_text), "%zu", d);
                snprintf(f_text, sizeof(f_text), "%zu", f);
                const char *args[] = {inputs_path, n_text, d_text, f_text, prefix, NULL};
                if (write_floats(inputs_path, data, n * d) != 0)
                    spirt_error_set(&error, SPIRT_ERR_IO, "could not write %s: %s", inputs_path, strerror(errno));
                else
                    numpy = bench_python_start("agg_numpy.py", args, NULL, &error);
                unlink(inputs_path); /* loaded (or not): no longer needed */
                if (numpy == NULL) {
                    bench_report_note(report, "NumPy baseline for n=%zu d=%zu: %s", n, d, error.message);
                    failures++;
                }
            }

            RuleRows rows = {0};
            for (int r = 0; r < AGG_RULE_COUNT; r++)
                if (wanted[r])
                    failures += time_rule((AggRule)r, inputs, n, d, f, out, threads, repeats, numpy_repeats, numpy,
                                          prefix, report, &rows[r]);
            bench_python_stop(numpy);
            mean_rows[2 * a + b] = rows[AGG_MEAN];

            /* What the finiteness scan would add (agg_run without
             * inputs_known_finite), once per size. */
            AggCall scan = {.config = agg_config_default(AGG_MEAN), .inputs = inputs, .n = n, .d = d, .out = out};
            scan.config.threads = threads;
            scan.config.inputs_known_finite = 1;
            double mean_known = bench_median_ms(agg_call_run, &scan, 1, 3);
            scan.config.inputs_known_finite = 0;
            double mean_checked = bench_median_ms(agg_call_run, &scan, 0, 3);
            if (scan.status == SPIRT_OK)
                bench_report_note(report, "n=%zu d=%zu: the finiteness scan adds %.1f ms (mean %.1f -> %.1f ms)", n, d,
                                  mean_checked - mean_known, mean_known, mean_checked);

            if (b == 1 && wanted[AGG_KRUM]) {
                AggCall krum = {.config = agg_config_default(AGG_KRUM), .inputs = inputs, .n = n, .d = d, .out = out};
                krum.config.f = f;
                krum.config.threads = 1;
                krum.config.inputs_known_finite = 1;
                krum.workspace_bytes = agg_workspace_bytes(&krum.config, n, d);
                krum.workspace = aligned_alloc(64, (krum.workspace_bytes + 63) & ~(size_t)63);
                double ours = bench_median_ms(agg_call_run, &krum, 1, 3);
                free(krum.workspace);
                BlasGram blas = {inputs, n, d, malloc(n * 4096 * sizeof(float)), malloc(n * n * sizeof(float)),
                                 malloc(n * n * sizeof(double))};
                double theirs = blas.block && blas.partial && blas.gram ? bench_median_ms(blas_gram_run, &blas, 1, 3)
                                                                         : -1.0;
                free(blas.block), free(blas.partial), free(blas.gram);
                bench_report_note(report,
                                  "n=%zu d=%zu, 1 thread: krum (spirt Gram kernel) %.1f ms; gather + cblas_ssyrk "
                                  "Gram alone %.1f ms (OpenBLAS core %s)",
                                  n, d, ours, theirs, openblas_get_corename());
            }
            free(data), free(out), free(inputs);
        }

    double bandwidth = bench_report_bandwidth(report, bandwidth_start, threads);
    for (int k = 0; k < 4 && bandwidth > 0; k++) {
        if (mean_rows[k] == NULL) continue;
        double ms = json_real_value(json_object_get(mean_rows[k], "spirt_ms"));
        double moved = (double)(json_integer_value(json_object_get(mean_rows[k], "n")) + 1) *
                       (double)json_integer_value(json_object_get(mean_rows[k], "d")) * sizeof(float);
        json_object_set_new(mean_rows[k], "fraction_of_bandwidth", json_real(moved / (ms * 1e6) / bandwidth));
    }
    bench_report_note(report, "medians of %d spirt runs (after a warm-up) alternating with %d NumPy runs (1 if over 3 s)",
                      repeats, numpy_repeats);
    bench_report_note_load(report, "at end");
    const char *columns[] = {"rule", "n", "d", "spirt_ms", "numpy_ms", "speedup", "match", "iterations",
                             "numpy_iterations", "fraction_of_bandwidth", NULL};
    bench_report_print(report, as_json, columns);
    bench_report_free(report);
    return failures ? 1 : 0;
}
