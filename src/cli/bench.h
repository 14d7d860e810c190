/* bench.h -- what every `spirt bench NAME` shares: timing, the report (a
 * readable table or one JSON object), and running a Python baseline.
 *
 * A benchmark is a function `int bench_NAME(int argc, char **argv)` in its
 * own file src/cli/bench_NAME.c, listed in cmd_bench.c. It measures spirt
 * and its baseline side by side in the same run, adds one row per case to a
 * BenchReport, and prints it. JSON output is
 *   {"bench": NAME, "rows": [{...}, ...], ...extra top-level fields...}
 * with units in the key names (spirt_ms, baseline_samples_per_s, ...) and
 * `speedup` = baseline time / spirt time (above 1: spirt is faster). */
#ifndef SPIRT_CLI_BENCH_H
#define SPIRT_CLI_BENCH_H

#include <jansson.h>
#include <stddef.h>

#include "spirt/cluster.h"
#include "spirt/error.h"

typedef struct BenchReport BenchReport;

/* A new, empty report for benchmark `name`. Owned by the caller: bench_report_free. */
BenchReport *bench_report_create(const char *name);
void bench_report_free(BenchReport *report);

/* A new row appended to the report; fill it with json_object_set_new. The
 * row is borrowed: it lives as long as the report. */
json_t *bench_report_add_row(BenchReport *report);
/* A top-level field of the JSON object (e.g. "bandwidth_gb_s"); takes
 * ownership of value. */
void bench_report_set(BenchReport *report, const char *key, json_t *value);
/* A line printed under the table and kept in "notes" (e.g. why a case was
 * skipped). */
void bench_report_note(BenchReport *report, const char *format, ...) __attribute__((format(printf, 2, 3)));

/* A note with the machine's load average (1, 5 and 15 minutes) `when`
 * ("at start", "at end"): figures from a shared machine are read with it. */
void bench_report_note_load(BenchReport *report, const char *when);

/* Prints the report to stdout: one JSON object if as_json, otherwise a table
 * of the given columns (NULL-terminated row keys; missing values print "-")
 * and the notes. */
void bench_report_print(const BenchReport *report, int as_json, const char *const *columns);

/* Median wall time in milliseconds of `repeats` calls of run(context), after
 * `warmup` unmeasured calls. repeats >= 1. */
double bench_median_ms(void (*run)(void *context), void *context, int warmup, int repeats);

/* Median of values[0..count) (reorders them). */
double bench_median(double *values, size_t count);

/* What the machine streams from memory: GB/s of a read-only pass over 512
 * MiB on `threads` threads, the median of `repeats` after one warm-up; 0 if
 * it cannot allocate. The figure a memory-bound kernel is compared with. */
double bench_memory_bandwidth(int threads, int repeats);
/* The probe again at the end of a run that took one (start_gb_s) at its
 * start: notes both, and sets and returns the higher ("bandwidth_gb_s"),
 * the rate of the machine when it was least disturbed. */
double bench_report_bandwidth(BenchReport *report, double start_gb_s, int threads);

/* Runs `/usr/bin/python3 script args...` (script relative to the source tree's
 * bench/ folder), waits for it, and parses its stdout as one JSON object.
 * NULL with an error if python3, the script or its modules are missing
 * (hint: scripts/deps.sh --bench) or its output is not JSON. Caller owns the
 * result (json_decref). */
json_t *bench_run_python(const char *script, const char *const *args, SpirtError *error);

/* Runs argv (argv[0] a path, NULL-terminated) to its end and parses its
 * stdout as one JSON object (its stderr passes through). NULL with an error
 * if it fails to run, exits non-zero, or prints something else. Caller owns
 * the result (json_decref). */
json_t *bench_run_json(const char *const *argv, SpirtError *error);

/* A Python baseline driven line by line, so that its timed runs can
 * alternate with spirt's: the script (started as for bench_run_python)
 * prints one JSON object when ready, then answers each request line written
 * to its stdin with one line holding one JSON object, and exits at the end
 * of its input. */
typedef struct BenchPython BenchPython;

/* Starts the script and waits for its first line (returned in *greeting if
 * not NULL; the caller owns it). NULL with an error if it cannot start or
 * its first line is not a JSON object. Stop it with bench_python_stop. */
BenchPython *bench_python_start(const char *script, const char *const *args, json_t **greeting, SpirtError *error);
/* Sends `request` (one line, no newline) and returns the answer (caller
 * owns it); NULL with an error if the script died, did not answer with a
 * JSON object, or answered {"error": message}. */
json_t *bench_python_ask(BenchPython *python, const char *request, SpirtError *error);
/* Closes its input, waits for it to exit and frees it. NULL is allowed. */
void bench_python_stop(BenchPython *python);

/* A comma-separated list of positive numbers, each with an optional k/K
 * (times `kilo`) or m/M (times kilo squared) suffix: "0.1M,4,16k". Fills
 * values[] and returns how many, or -1 if the text is not such a list or
 * holds more than `max`. */
int bench_parse_list(const char *text, double kilo, double *values, int max);

/* A redis-server for one benchmark: the module loaded, no persistence, a
 * fresh temporary folder (under $TMPDIR) for its files, a free loopback
 * port, and with `unix_socket` also a Unix socket at socket_path. */
typedef struct BenchDatabase {
    char dir[512];
    char socket_path[600];    /* "" without a Unix socket */
    Cluster *cluster;
    ClusterProcess *process;  /* process->port */
} BenchDatabase;

/* Starts it with `module_path` (NULL: spirt.so next to this program) and
 * waits until it answers. On failure nothing is left running or on disk. */
int bench_database_start(BenchDatabase *database, const char *module_path, int unix_socket, SpirtError *error);
/* Stops the server by pid and removes its folder. */
void bench_database_stop(BenchDatabase *database);

/* Fills `buffer` with a path in the source tree (SPIRT_SOURCE_DIR). */
const char *bench_source_path(char *buffer, size_t size, const char *relative);

/* BENCHMARK ENTRY POINTS: each bench_NAME.c adds its declaration here. */
int bench_agg(int argc, char **argv);
int bench_indb(int argc, char **argv); /* bench_indb.c */
int bench_e2e(int argc, char **argv);  /* bench_e2e.c */
int bench_grad(int argc, char **argv); /* bench_grad.c */
int bench_store(int argc, char **argv); /* bench_store.c */
int bench_robustness(int argc, char **argv); /* bench_robustness.c */

#endif /* SPIRT_CLI_BENCH_H */
