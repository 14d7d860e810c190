/* bench.c -- the benchmarks' shared harness (see bench.h). */
#include "cli/bench.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/self.h"
#include "spirt/clock.h"
#include "spirt/parallel.h"

struct BenchReport {
    json_t *object; /* {"bench": name, "rows": [...], ...} */
    json_t *rows;   /* borrowed from object */
    json_t *notes;  /* borrowed from object */
};

BenchReport *bench_report_create(const char *name) {
    BenchReport *report = calloc(1, sizeof(*report));
    if (report == NULL) return NULL;
    report->object = json_object();
    report->rows = json_array();
    report->notes = json_array();
    json_object_set_new(report->object, "bench", json_string(name));
    json_object_set_new(report->object, "rows", report->rows);
    json_object_set_new(report->object, "notes", report->notes);
    return report;
}

void bench_report_free(BenchReport *report) {
    if (report == NULL) return;
    json_decref(report->object);
    free(report);
}

json_t *bench_report_add_row(BenchReport *report) {
    json_t *row = json_object();
    json_array_append_new(report->rows, row);
    return row;
}

void bench_report_set(BenchReport *report, const char *key, json_t *value) {
    json_object_set_new(report->object, key, value);
}

void bench_report_note(BenchReport *report, const char *format, ...) {
    char line[512];
    va_list args;
    va_start(args, format);
    vsnprintf(line, sizeof(line), format, args);
    va_end(args);
    json_array_append_new(report->notes, json_string(line));
}

void bench_report_note_load(BenchReport *report, const char *when) {
    double load[3];
    if (getloadavg(load, 3) == 3)
        bench_report_note(report, "load average %s: %.2f %.2f %.2f (1, 5, 15 min; %ld CPUs)", when, load[0], load[1],
                          load[2], sysconf(_SC_NPROCESSORS_ONLN));
    else
        bench_report_note(report, "load average %s: unknown", when);
}

static void format_cell(const json_t *value, char *out, size_t size) {
    if (value == NULL || json_is_null(value))
        snprintf(out, size, "-");
    else if (json_is_integer(value))
        snprintf(out, size, "%lld", (long long)json_integer_value(value));
    else if (json_is_real(value)) {
        double x = json_real_value(value);
        double magnitude = x < 0 ? -x : x;
        snprintf(out, size, magnitude >= 100 || magnitude == 0 ? "%.1f" : magnitude >= 1 ? "%.2f" : "%.3g", x);
    } else if (json_is_string(value))
        snprintf(out, size, "%s", json_string_value(value));
    else if (json_is_boolean(value))
        snprintf(out, size, "%s", json_is_true(value) ? "yes" : "no");
    else
        snprintf(out, size, "?");
}

void bench_report_print(const BenchReport *report, int as_json, const char *const *columns) {
    if (as_json) {
        char *text = json_dumps(report->object, JSON_COMPACT);
        if (text) {
            printf("%s\n", text);
            free(text);
        }
        fflush(stdout);
        return;
    }
    size_t column_count = 0;
    while (columns[column_count]) column_count++;
    size_t widths[32] = {0};
    if (column_count > 32) column_count = 32;
    char cell[64];
    for (size_t c = 0; c < column_count; c++) widths[c] = strlen(columns[c]);
    size_t index;
    json_t *row;
    json_array_foreach(report->rows, index, row) {
        for (size_t c = 0; c < column_count; c++) {
            format_cell(json_object_get(row, columns[c]), cell, sizeof(cell));
            if (strlen(cell) > widths[c]) widths[c] = strlen(cell);
        }
    }
    printf("%s\n", json_string_value(json_object_get(report->object, "bench")));
    for (size_t c = 0; c < column_count; c++) printf("%s%*s", c ? "  " : "", (int)widths[c], columns[c]);
    printf("\n");
    json_array_foreach(report->rows, index, row) {
        for (size_t c = 0; c < column_count; c++) {
            format_cell(json_object_get(row, columns[c]), cell, sizeof(cell));
            printf("%s%*s", c ? "  " : "", (int)widths[c], cell);
        }
        printf("\n");
    }
    json_t *note;
    json_array_foreach(report->notes, index, note) printf("note: %s\n", json_string_value(note));
    fflush(stdout);
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_median(double *values, size_t count) {
    if (count == 0) return 0.0;
    qsort(values, count, sizeof(double), compare_doubles);
    return count % 2 ? values[count / 2] : 0.5 * (values[count / 2 - 1] + values[count / 2]);
}

/* --- Memory bandwidth probe --------------------------------------------------- */

typedef float ProbeVector __attribute__((vector_size(64)));

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

double bench_memory_bandwidth(int threads, int repeats) {
    size_t count = (size_t)128 << 20;
    float *data = aligned_alloc(64, count * sizeof(float));
    if (data == NULL) return 0.0;
    for (size_t i = 0; i < count; i++) data[i] = (float)(i & 1023);
    Probe probe = {data, count, threads, {0}};
    double ms = bench_median_ms(probe_run, &probe, 1, repeats);
    free(data);
    return (double)count * sizeof(float) / (ms * 1e6);
}

double bench_report_bandwidth(BenchReport *report, double start_gb_s, int threads) {
    double end_gb_s = bench_memory_bandwidth(threads, 5);
    double bandwidth = start_gb_s > end_gb_s ? start_gb_s : end_gb_s;
    bench_report_set(report, "bandwidth_gb_s", json_real(bandwidth));
    bench_report_set(report, "bandwidth_probe",
                     json_string("read-only sum over 512 MiB, same thread count as the kernels, median of 5, "
                                 "the higher of a probe at the start and one at the end"));
    bench_report_note(report,
                      "bandwidth probe: %.1f GB/s at the start, %.1f at the end, reading 512 MiB with %d threads",
                      start_gb_s, end_gb_s, threads);
    return bandwidth;
}

double bench_median_ms(void (*run)(void *context), void *context, int warmup, int repeats) {
    if (repeats < 1) repeats = 1;
    for (int i = 0; i < warmup; i++) run(context);
    double *times = malloc((size_t)repeats * sizeof(double));
    if (times == NULL) return -1.0;
    for (int i = 0; i < repeats; i++) {
        double start = clock_monotonic_ms();
        run(context);
        times[i] = clock_monotonic_ms() - start;
    }
    double median = bench_median(times, (size_t)repeats);
    free(times);
    return median;
}

const char *bench_source_path(char *buffer, size_t size, const char *relative) {
    const char *root = getenv("SPIRT_SOURCE_DIR");
    snprintf(buffer, size, "%s/%s", root && *root ? root : SPIRT_SOURCE_DIR, relative);
    return buffer;
}

/* Starts argv (argv[0] a path, NULL-terminated) with its stdout on
 * *from_child and, if to_child is not NULL, its stdin on *to_child (both
 * file descriptors the caller closes). The child's pid, or -1 with an error. */
static pid_t start_process(const char *const *argv, int *from_child, int *to_child, SpirtError *error) {
    int out_fds[2], in_fds[2] = {-1, -1};
    if (pipe(out_fds) != 0) {
        spirt_error_set(error, SPIRT_ERR_IO, "pipe: %s", strerror(errno));
        return -1;
    }
    if (to_child && pipe(in_fds) != 0) {
        spirt_error_set(error, SPIRT_ERR_IO, "pipe: %s", strerror(errno));
        close(out_fds[0]);
        close(out_fds[1]);
        return -1;
    }
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        spirt_error_set(error, SPIRT_ERR_IO, "fork: %s", strerror(errno));
        close(out_fds[0]);
        close(out_fds[1]);
        if (to_child) close(in_fds[0]), close(in_fds[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(out_fds[1], STDOUT_FILENO);
        close(out_fds[0]);
        close(out_fds[1]);
        if (to_child) {
            dup2(in_fds[0], STDIN_FILENO);
            close(in_fds[0]);
            close(in_fds[1]);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(out_fds[1]);
    *from_child = out_fds[0];
    if (to_child) {
        close(in_fds[0]);
        *to_child = in_fds[1];
    }
    return pid;
}

/* Fills argv (room for 64) with `/usr/bin/python3 bench/SCRIPT args...`;
 * script_path (1024 bytes) holds the script's path argv points into.
 * -1 with an error if python3 or the script is missing. */
static int python_argv(const char *script, const char *const *args, const char **argv, char *script_path,
                       SpirtError *error) {
    char relative[512];
    snprintf(relative, sizeof(relative), "bench/%s", script);
    bench_source_path(script_path, 1024, relative);
    if (access("/usr/bin/python3", X_OK) != 0) {
        spirt_error_set(error, SPIRT_ERR_NOT_FOUND, "/usr/bin/python3 not found (run scripts/deps.sh --bench)");
        return -1;
    }
    if (access(script_path, R_OK) != 0) {
        spirt_error_set(error, SPIRT_ERR_NOT_FOUND, "baseline script %s: %s", script_path, strerror(errno));
        return -1;
    }
    int argc = 0;
    argv[argc++] = "/usr/bin/python3";
    argv[argc++] = script_path;
    for (int i = 0; args && args[i] && argc < 63; i++) argv[argc++] = args[i];
    argv[argc] = NULL;
    return 0;
}

/* Parses `text` (one JSON object) printed by `program`; NULL with an error. */
static json_t *parse_object(const char *program, const char *text, SpirtError *error) {
    json_error_t parse_error;
    json_t *result = json_loads(text, 0, &parse_error);
    if (result == NULL || !json_is_object(result)) {
        json_decref(result);
        spirt_error_set(error, SPIRT_ERR_FORMAT, "%s did not print one JSON object: %s", program, parse_error.text);
        return NULL;
    }
    return result;
}

/* Runs argv (argv[0] a path) to its end with its stdout collected: a new
 * NUL-terminated string the caller frees. *exit_status receives its exit
 * status (-1 if it did not exit normally). */
static char *run_capturing(const char *const *argv, int *exit_status, SpirtError *error) {
    int from_child;
    pid_t pid = start_process(argv, &from_child, NULL, error);
    if (pid < 0) return NULL;
    size_t capacity = 4096, length = 0;
    char *output = malloc(capacity);
    for (;;) {
        if (output == NULL) break;
        if (length + 1024 > capacity) {
            char *grown = realloc(output, capacity * 2);
            if (grown == NULL) {
                free(output);
                output = NULL;
                break;
            }
            output = grown;
            capacity *= 2;
        }
        ssize_t got = read(from_child, output + length, capacity - length - 1);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) break;
        length += (size_t)got;
    }
    close(from_child);
    int status = 0;
    waitpid(pid, &status, 0);
    if (output == NULL) {
        spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory reading %s's output", argv[0]);
        return NULL;
    }
    output[length] = '\0';
    *exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return output;
}

json_t *bench_run_json(const char *const *argv, SpirtError *error) {
    int exit_status = 0;
    char *output = run_capturing(argv, &exit_status, error);
    if (output == NULL) return NULL;
    if (exit_status != 0) {
        spirt_error_set(error, SPIRT_ERR_IO, "%s%s%s failed (exit status %d)", argv[0], argv[1] ? " " : "",
                        argv[1] ? argv[1] : "", exit_status);
        free(output);
        return NULL;
    }
    json_t *result = parse_object(argv[0], output, error);
    free(output);
    return result;
}

json_t *bench_run_python(const char *script, const char *const *args, SpirtError *error) {
    const char *argv[64];
    char script_path[1024];
    if (python_argv(script, args, argv, script_path, error) != 0) return NULL;
    json_t *result = bench_run_json(argv, error);
    if (result == NULL && error && error->code == SPIRT_ERR_IO)
        spirt_error_prefix(error, "baseline %s (is python3-torch/numpy installed? scripts/deps.sh --bench)", script);
    return result;
}

struct BenchPython {
    pid_t pid;
    FILE *to, *from;
    char script[128];
};

/* One line from the child, parsed; NULL with an error at its end or on
 * anything but a JSON object. */
static json_t *read_answer(BenchPython *python, SpirtError *error) {
    char *line = NULL;
    size_t capacity = 0;
    if (getline(&line, &capacity, python->from) < 0) {
        free(line);
        spirt_error_set(error, SPIRT_ERR_IO, "baseline %s stopped answering (is python3-numpy installed?)",
                        python->script);
        return NULL;
    }
    json_t *answer = parse_object(python->script, line, error);
    free(line);
    return answer;
}

BenchPython *bench_python_start(const char *script, const char *const *args, json_t **greeting, SpirtError *error) {
    BenchPython *python = calloc(1, sizeof(*python));
    if (python == NULL) {
        spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory");
        return NULL;
    }
    snprintf(python->script, sizeof(python->script), "%s", script);
    /* A script that dies makes the next request's write fail with EPIPE
     * (reported) instead of killing this process. */
    signal(SIGPIPE, SIG_IGN);
    const char *argv[64];
    char script_path[1024];
    int from_child, to_child;
    if (python_argv(script, args, argv, script_path, error) != 0) {
        free(python);
        return NULL;
    }
    python->pid = start_process(argv, &from_child, &to_child, error);
    if (python->pid < 0) {
        free(python);
        return NULL;
    }
    python->from = fdopen(from_child, "r");
    python->to = fdopen(to_child, "w");
    if (python->from == NULL || python->to == NULL) {
        if (python->from == NULL) close(from_child);
        if (python->to == NULL) close(to_child);
        spirt_error_set(error, SPIRT_ERR_IO, "fdopen: %s", strerror(errno));
        bench_python_stop(python);
        return NULL;
    }
    json_t *hello = read_answer(python, error);
    if (hello == NULL) {
        bench_python_stop(python);
        return NULL;
    }
    if (greeting)
        *greeting = hello;
    else
        json_decref(hello);
    return python;
}

json_t *bench_python_ask(BenchPython *python, const char *request, SpirtError *error) {
    if (fprintf(python->to, "%s\n", request) < 0 || fflush(python->to) != 0) {
        spirt_error_set(error, SPIRT_ERR_IO, "baseline %s: cannot send '%s'", python->script, request);
        return NULL;
    }
    json_t *answer = read_answer(python, error);
    json_t *problem = answer ? json_object_get(answer, "error") : NULL;
    if (problem) {
        spirt_error_set(error, SPIRT_ERR_INVALID, "baseline %s: %s", python->script, json_string_value(problem));
        json_decref(answer);
        return NULL;
    }
    return answer;
}

void bench_python_stop(BenchPython *python) {
    if (python == NULL) return;
    if (python->to) fclose(python->to); /* end of input: the script exits */
    if (python->from) fclose(python->from);
    if (python->pid > 0) waitpid(python->pid, NULL, 0);
    free(python);
}

int bench_database_start(BenchDatabase *database, const char *module_path, int unix_socket, SpirtError *error) {
    memset(database, 0, sizeof(*database));
    char default_module[1024];
    if (module_path == NULL) {
        if (cli_sibling_path(default_module, sizeof(default_module), "spirt.so") != 0)
            return spirt_error_set(error, SPIRT_ERR_NOT_FOUND, "cannot find this program's folder: give --module");
        module_path = default_module;
    }
    const char *base = getenv("TMPDIR");
    snprintf(database->dir, sizeof(database->dir), "%s/spirt-bench-XXXXXX", base && *base ? base : "/tmp");
    if (mkdtemp(database->dir) == NULL) {
        database->dir[0] = '\0';
        return spirt_error_set(error, SPIRT_ERR_IO, "cannot make a temporary folder: %s", strerror(errno));
    }
    if (unix_socket) snprintf(database->socket_path, sizeof(database->socket_path), "%s/db.sock", database->dir);
    const char *extra[] = {"--unixsocket", database->socket_path, "--unixsocketperm", "700", NULL};
    database->cluster = cluster_create(database->dir, error);
    int status = database->cluster ? cluster_start_database(database->cluster, "bench-db", database->dir, module_path,
                                                            0, unix_socket ? extra : NULL, &database->process, error)
                                   : error->code;
    if (status != SPIRT_OK) bench_database_stop(database);
    return status;
}

void bench_database_stop(BenchDatabase *database) {
    cluster_free(database->cluster); /* stops the server by pid */
    database->cluster = NULL;
    database->process = NULL;
    if (database->dir[0] == '\0') return;
    char path[700];
    snprintf(path, sizeof(path), "%s/redis.log", database->dir);
    unlink(path);
    if (database->socket_path[0]) unlink(database->socket_path);
    rmdir(database->dir);
    database->dir[0] = '\0';
}

int bench_parse_list(const char *text, double kilo, double *values, int max) {
    int count = 0;
    const char *p = text;
    while (*p && count < max) {
        char *end;
        errno = 0;
        double value = strtod(p, &end);
        if (end == p || errno || value <= 0) return -1;
        if (*end == 'M' || *end == 'm')
            value *= kilo * kilo, end++;
        else if (*end == 'K' || *end == 'k')
            value *= kilo, end++;
        values[count++] = value;
        if (*end == ',')
            end++;
        else if (*end)
            return -1;
        p = end;
    }
    return *p ? -1 : count;
}
