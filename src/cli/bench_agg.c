/* bench_agg.c -- `spirt bench agg`: every aggregation rule against the same
 * rule written with NumPy, on the same data, in the same run.
 *
 * For each n in {10, 20} and d in {1M, 10M} (--quick: 100K, 1M) it makes n
 * input vectors (n - f honest-looking, f = (n - 3) / 4 scaled up 10x, so the
 * robust rules have something to reject), times every rule through agg_run
 * (median of --repeats runs after one warm-up), writes the inputs and spirt's
 * results under $TMPDIR, and runs bench/agg_numpy.py, which times its own
 * version of each rule on those inputs and checks its result against spirt's
 * (the `match` column; a mismatch is also a note).
 *
 * Inputs are passed with inputs_known_finite = 1, as the Redis module does
 * (it stores only finite tensors): the finiteness scan is one more read of
 * the inputs, which NumPy's versions do not do either; its cost is reported
 * as a note.
 *
 * A bandwidth probe runs first: a read-only sum over 512 MiB with the
 * threads the rules use (what the machine can stream from memory). The mean
 * must read n * d floats and write d; `fraction_of_bandwidth` is those bytes
 * over its time over the probe's rate. Inputs that fit the last-level cache
 * (40-80 MB at d = 1M, against a 260 MB L3 on the target) are read from it
 * in the warm runs, so their fraction can exceed 1: the d = 10M rows are the
 * memory-bound figure. For the largest d, a note compares
 * the Gram pass of Krum (one thread) with gathering the same blocks and
 * calling OpenBLAS's cblas_ssyrk (one thread), the alternative src/agg/gram.c
 * explains it does not use. */
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

typedef float ProbeVector __attribute__((vector_size(64)));

/* --- Bandwidth probe ------------------------------------------------------- */

typedef struct Probe {
    const float *data;
    size_t count;
    int threads;
    float sums[64]; /* kept so the reads are not optimised away */
} Probe;

static void probe_range(void *argument, size_t begin, size_t end) {
    Probe *probe = argument;
    ProbeVector a = {0}, b = {0}, c = {0}, d = {0};
    for (size_t i = begin; i + 64 <= end; i += 64) {
        ProbeVector x0, x1, x2, x3;
        memcpy(&x0, probe->data + i, 64);
        memcpy(&x1, probe->data + i + 16, 64);
        memcpy(&x2, probe->data + i + 32, 64);
        memcpy(&x3, probe->data + i + 48, 64);
        a += x0, b += x1, c += x2, d += x3;
    }
    ProbeVector s = a + b + c + d;
    probe->sums[(begin / 4096) % 64] = s[0] + s[15];
}

static void probe_run(void *argument) {
    Probe *probe = argument;
    parallel_for(probe->count, 4096, probe->threads, probe_range, probe);
}

/* GB/s of a read-only pass over 512 MiB; 0 if it cannot allocate. */
static double measure_bandwidth(int threads, int repeats) {
    size_t count = (size_t)128 << 20;
    float *data = aligned_alloc(64, count * sizeof(float));
    if (data == NULL) return 0.0;
    for (size_t i = 0; i < count; i++) data[i] = (float)(i & 1023);
    Probe probe = {data, count, threads, {0}};
    double ms = bench_median_ms(probe_run, &probe, 1, repeats);
    free(data);
    return (double)count * sizeof(float) / (ms * 1e6);
}

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

int bench_agg(int argc, char **argv) {
    int quick = 0, as_json = 0, repeats = 5, numpy_repeats = 3, threads = 0, skip_numpy = 0;
    uint64_t seed = 1;
    const char *rules_list = NULL;
    const CliOption options[] = {
        {"quick", CLI_FLAG, &quick, NULL, "d = 100K and 1M instead of 1M and 10M"},
        {"rules", CLI_STRING, &rules_list, "LIST", "comma-separated rules (default: all)"},
        {"repeats", CLI_INT, &repeats, "N", "timed runs of each spirt rule, median reported (default 5)"},
        {"numpy-repeats", CLI_INT, &numpy_repeats, "N", "timed runs of each NumPy rule (default 3; 1 if > 3 s)"},
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
    double bandwidth = measure_bandwidth(threads, 5);
    bench_report_set(report, "bandwidth_gb_s", json_real(bandwidth));
    bench_report_set(report, "bandwidth_probe",
                     json_string("read-only sum over 512 MiB, same thread count as the rules, median of 5"));
    bench_report_set(report, "threads", json_integer(threads));
    bench_report_note(report, "bandwidth probe: %.1f GB/s reading 512 MiB with %d threads", bandwidth, threads);
    openblas_set_num_threads(1); /* only the Gram comparison below calls BLAS */

    const size_t ns[] = {10, 20};
    const size_t ds[] = {quick ? 100000 : 1000000, quick ? 1000000 : 10000000};
    const char *tmp = getenv("TMPDIR");
    char prefix[512], path[600];
    snprintf(prefix, sizeof(prefix), "%s/spirt-bench-agg-%ld", tmp && *tmp ? tmp : "/tmp", (long)getpid());
    int failures = 0;

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
            snprintf(path, sizeof(path), "%s-inputs.f32", prefix);
            int files_ok = skip_numpy || write_floats(path, data, n * d) == 0;
            json_t *rows[AGG_RULE_COUNT] = {0};
            char rules_arg[256] = "";

            for (int r = 0; r < AGG_RULE_COUNT; r++) {
                if (!wanted[r]) continue;
                AggCall call = {.config = agg_config_default((AggRule)r), .inputs = inputs, .n = n, .d = d, .out = out};
                call.config.f = f;
                call.config.threads = threads;
                call.config.inputs_known_finite = 1;
                call.workspace_bytes = agg_workspace_bytes(&call.config, n, d);
                call.workspace = call.workspace_bytes ? aligned_alloc(64, (call.workspace_bytes + 63) & ~(size_t)63)
                                                      : NULL;
                double ms = bench_median_ms(agg_call_run, &call, 1, repeats);
                free(call.workspace);
                if (call.status != SPIRT_OK) {
                    bench_report_note(report, "%s n=%zu d=%zu failed: %s", agg_rule_name((AggRule)r), n, d,
                                      call.error.message);
                    failures++;
                    continue;
                }
                json_t *row = bench_report_add_row(report);
                rows[r] = row;
                json_object_set_new(row, "rule", json_string(agg_rule_name((AggRule)r)));
                json_object_set_new(row, "n", json_integer((json_int_t)n));
                json_object_set_new(row, "d", json_integer((json_int_t)d));
                json_object_set_new(row, "f", json_integer((json_int_t)f));
                json_object_set_new(row, "spirt_ms", json_real(ms));
                if (call.report.iterations) json_object_set_new(row, "iterations", json_integer(call.report.iterations));
                if (r == AGG_MEAN && bandwidth > 0) {
                    double moved = (double)(n + 1) * (double)d * sizeof(float);
                    json_object_set_new(row, "fraction_of_bandwidth", json_real(moved / (ms * 1e6) / bandwidth));
                }
                if (!skip_numpy) {
                    snprintf(path, sizeof(path), "%s-%s.f32", prefix, agg_rule_name((AggRule)r));
                    files_ok &= write_floats(path, out, d) == 0;
                    snprintf(rules_arg + strlen(rules_arg), sizeof(rules_arg) - strlen(rules_arg), "%s%s",
                             rules_arg[0] ? "," : "", agg_rule_name((AggRule)r));
                }
            }

            /* What the finiteness scan would add (agg_run without
             * inputs_known_finite), once per size. */
            AggCall scan = {.config = agg_config_default(AGG_MEAN), .inputs = inputs, .n = n, .d = d, .out = out};
            scan.config.threads = threads;
            scan.config.inputs_known_finite = 1;
            scan.workspace_bytes = agg_workspace_bytes(&scan.config, n, d);
            scan.workspace = aligned_alloc(64, (scan.workspace_bytes + 63) & ~(size_t)63);
            double mean_known = bench_median_ms(agg_call_run, &scan, 1, 3);
            scan.config.inputs_known_finite = 0;
            double mean_checked = bench_median_ms(agg_call_run, &scan, 0, 3);
            free(scan.workspace);
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

            if (!skip_numpy && rules_arg[0] && files_ok) {
                char n_text[32], d_text[32], f_text[32], repeats_text[32], inputs_path[600];
                snprintf(n_text, sizeof(n_text), "%zu", n);
                snprintf(d_text, sizeof(d_text), "%zu", d);
                snprintf(f_text, sizeof(f_text), "%zu", f);
                snprintf(repeats_text, sizeof(repeats_text), "%d", numpy_repeats);
                snprintf(inputs_path, sizeof(inputs_path), "%s-inputs.f32", prefix);
                const char *args[] = {inputs_path, n_text, d_text, f_text, rules_arg, repeats_text, prefix, NULL};
                SpirtError error;
                json_t *result = bench_run_python("agg_numpy.py", args, &error);
                json_t *rules = result ? json_object_get(result, "rules") : NULL;
                if (rules == NULL) {
                    bench_report_note(report, "NumPy baseline for n=%zu d=%zu: %s", n, d,
                                      result ? "no rules in its output" : error.message);
                    failures++;
                }
                for (int r = 0; rules && r < AGG_RULE_COUNT; r++) {
                    json_t *entry = json_object_get(rules, agg_rule_name((AggRule)r));
                    if (rows[r] == NULL || entry == NULL) continue;
                    double numpy_ms = json_real_value(json_object_get(entry, "numpy_ms"));
                    double spirt_ms = json_real_value(json_object_get(rows[r], "spirt_ms"));
                    int match = json_is_true(json_object_get(entry, "match"));
                    json_object_set_new(rows[r], "numpy_ms", json_real(numpy_ms));
                    json_object_set_new(rows[r], "speedup", json_real(spirt_ms > 0 ? numpy_ms / spirt_ms : 0.0));
                    json_object_set_new(rows[r], "match", json_boolean(match));
                    json_object_set(rows[r], "max_diff", json_object_get(entry, "max_diff"));
                    if (json_object_get(entry, "iterations")) /* the same work? */
                        json_object_set(rows[r], "numpy_iterations", json_object_get(entry, "iterations"));
                    if (!match) {
                        bench_report_note(report, "MISMATCH %s n=%zu d=%zu: max |spirt - numpy| = %g > %g",
                                          agg_rule_name((AggRule)r), n, d,
                                          json_real_value(json_object_get(entry, "max_diff")),
                                          json_real_value(json_object_get(entry, "tolerance")));
                        failures++;
                    }
                }
                json_decref(result);
            } else if (!skip_numpy && !files_ok) {
                bench_report_note(report, "could not write %s-*.f32: %s", prefix, strerror(errno));
                failures++;
            }
            for (int r = -1; r < AGG_RULE_COUNT; r++) {
                snprintf(path, sizeof(path), "%s-%s.f32", prefix, r < 0 ? "inputs" : agg_rule_name((AggRule)r));
                unlink(path);
            }
            free(data), free(out), free(inputs);
        }

    const char *columns[] = {"rule", "n", "d", "spirt_ms", "numpy_ms", "speedup", "match", "iterations",
                             "numpy_iterations", "fraction_of_bandwidth", NULL};
    bench_report_print(report, as_json, columns);
    bench_report_free(report);
    return failures ? 1 : 0;
}
