/* bench_indb.c -- `spirt bench indb`: SPIRT's central claim, measured side by
 * side in one run: averaging B minibatch gradients and taking an SGD step is
 * much faster inside the database than anywhere else.
 *
 *   (a) in-DB      SPIRT.AVG avg g0..gB-1 + SPIRT.UPDATE p avg OPT sgd LR x,
 *                  pipelined in one round trip (the module, build/spirt.so)
 *   (a') in-DB,    SPIRT.AVGUPDATE p avg OPT sgd LR x SRC B g0..gB-1: the
 *        one pass  same two results from one command and one pass over
 *                  the data
 *   (b) client     SPIRT.TGET of the B gradients and the parameters over
 *                  hiredis (pipelined), the same kernels (agg_mean,
 *                  optim_step) in this process, SPIRT.TSET of the parameters;
 *                  the buffer for the mean is kept from run to run, as a
 *                  client doing this every round would
 *   (c) Lua/JSON   what SPIRT's public code does: gradients and parameters as
 *                  JSON lists in string keys, averaged and stepped by one EVAL
 *                  with cjson (bench/indb_average_update.lua)
 *
 * It starts its own redis-server on loopback with the module loaded
 * (bench_database_start: stopped by pid at the end), without persistence, so only the
 * computation and the data movement are measured. All are timed in rounds
 * -- (a) and (a') three times each, (b), (c) -- so a burst of other work on a
 * shared machine hits them alike (see time_interleaved); each figure is the
 * median of its runs. (c) is skipped for the cases whose estimated time exceeds
 * --lua-max-s (a note says which). The load average at the start and the end
 * is printed with the notes, and indb_server_ms says how much of (a) the
 * server spent in the two commands (INFO commandstats).
 *
 * Before timing, (a), (a') and (b) are run once from the same parameters and
 * their results compared bit for bit: all use the project's one
 * implementation of each kernel, so they must agree exactly.
 *
 * The in-database paths are memory-bound, so the run also measures what the
 * machine streams from memory (bench_memory_bandwidth, at the start and the
 * end; the higher counts) and sets each row's rate against it: (a') must
 * read the B gradients and the parameters and write the average and the new
 * parameters, (B + 3) * 4 bytes per parameter ((a): B + 4, the average is
 * read back). `avgupdate_gb_s` is that over (a')'s time, and
 * `avgupdate_reduction_at_bandwidth` the reduction (a') would reach if it
 * moved those bytes at the probe's rate: the most a pass whose inputs come
 * from memory can reach against this client, however good its kernel. Inputs
 * still in cache from the previous run can do better. */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/bench.h"
#include "cli/options.h"
#include "spirt/agg.h"
#include "spirt/clock.h"
#include "spirt/optim.h"
#include "spirt/parallel.h"
#include "spirt/rng.h"
#include "spirt/tensor.h"

#define MAX_CASES 16
#define LEARNING_RATE "0.01"

/* --- The server ------------------------------------------------------------ */

static redisContext *connect_server(int port) {
    struct timeval timeout = {120, 0};
    redisContext *context = redisConnectWithTimeout("127.0.0.1", port, timeout);
    if (context && context->err) {
        redisFree(context);
        return NULL;
    }
    if (context) redisSetTimeout(context, timeout);
    return context;
}

/* --- Commands ---------------------------------------------------------------- */

/* Sends argv (binary-safe) and returns the reply; NULL on a connection error. */
static redisReply *command_argv(redisContext *context, int argc, const char **argv, const size_t *lengths) {
    return redisCommandArgv(context, argc, argv, lengths);
}

static int reply_ok(redisReply *reply, const char *what, SpirtError *error) {
    if (reply == NULL) return spirt_error_set(error, SPIRT_ERR_CLOSED, "%s: connection lost", what);
    int ok = reply->type != REDIS_REPLY_ERROR;
    if (!ok) spirt_error_set(error, SPIRT_ERR_SERVER, "%s: %s", what, reply->str);
    freeReplyObject(reply);
    return ok ? SPIRT_OK : SPIRT_ERR_SERVER;
}

static int tensor_set(redisContext *context, const char *key, const float *values, size_t count, SpirtError *error) {
    char dim[32];
    snprintf(dim, sizeof(dim), "%zu", count);
    const char *argv[] = {"SPIRT.TSET", key, "FLOAT32", dim, "BLOB", (const char *)values};
    size_t lengths[] = {10, strlen(key), 7, strlen(dim), 4, count * sizeof(float)};
    return reply_ok(command_argv(context, 6, argv, lengths), key, error);
}

/* A JSON list of `count` numbers, as SPIRT stores gradients. Caller frees. */
static char *json_list(const float *values, size_t count, size_t *length) {
    size_t capacity = count * 16 + 16, used = 0;
    char *text = malloc(capacity);
    if (text == NULL) return NULL;
    text[used++] = '[';
    for (size_t i = 0; i < count; i++)
        used += (size_t)snprintf(text + used, capacity - used, i ? ",%.9g" : "%.9g", (double)values[i]);
    text[used++] = ']';
    text[used] = '\0';
    *length = used;
    return text;
}

/* --- One case ------------------------------------------------------------------ */

typedef struct BenchCase {
    redisContext *context;
    size_t params;
    int batches;
    int threads;
    char keys[17][32]; /* g:0 .. g:15, then the parameter key */
    const char *lua_sha;
    float *average; /* the client path's buffer for the mean, params floats */
    SpirtError error; /* first failure of a timed run */
} BenchCase;

static void fail(BenchCase *bench, int status, const SpirtError *error) {
    if (status != SPIRT_OK && bench->error.code == SPIRT_OK) bench->error = *error;
}

/* (a) in the database: AVG and UPDATE pipelined in one round trip. */
static void run_indb_on(BenchCase *bench, const char *params_key) {
    const char *argv[20];
    argv[0] = "SPIRT.AVG";
    argv[1] = "bench:avg";
    for (int b = 0; b < bench->batches; b++) argv[2 + b] = bench->keys[b];
    redisAppendCommandArgv(bench->context, 2 + bench->batches, argv, NULL);
    const char *update[] = {"SPIRT.UPDATE", params_key, "bench:avg", "OPT", "sgd", "LR", LEARNING_RATE};
    redisAppendCommandArgv(bench->context, 7, update, NULL);
    SpirtError error;
    for (int i = 0; i < 2; i++) {
        redisReply *reply = NULL;
        if (redisGetReply(bench->context, (void **)&reply) != REDIS_OK) reply = NULL;
        fail(bench, reply_ok(reply, i ? "SPIRT.UPDATE" : "SPIRT.AVG", &error), &error);
    }
}

static void run_indb(void *context) {
    BenchCase *bench = context;
    run_indb_on(bench, "bench:params");
}

/* (a') in the database, one command. */
static void run_fused_on(BenchCase *bench, const char *params_key) {
    const char *argv[32];
    char count[16];
    snprintf(count, sizeof(count), "%d", bench->batches);
    int argc = 0;
    const char *head[] = {"SPIRT.AVGUPDATE", params_key, "bench:avg", "OPT", "sgd", "LR", LEARNING_RATE, "SRC", count};
    for (size_t i = 0; i < sizeof(head) / sizeof(head[0]); i++) argv[argc++] = head[i];
    for (int b = 0; b < bench->batches; b++) argv[argc++] = bench->keys[b];
    SpirtError error;
    fail(bench, reply_ok(command_argv(bench->context, argc, argv, NULL), "SPIRT.AVGUPDATE", &error), &error);
}

static void run_fused(void *context) {
    BenchCase *bench = context;
    run_fused_on(bench, "bench:params");
}

/* (b) in the client: fetch, average and step here, write back. */
static void run_client_on(BenchCase *bench, const char *params_key) {
    SpirtError error;
    int count = bench->batches + 1;
    for (int b = 0; b <= bench->batches; b++) {
        const char *argv[] = {"SPIRT.TGET", b < bench->batches ? bench->keys[b] : params_key, "BLOB"};
        redisAppendCommandArgv(bench->context, 3, argv, NULL);
    }
    redisReply *replies[17] = {0};
    size_t bytes = bench->params * sizeof(float);
    int ok = 1;
    for (int i = 0; i < count; i++) {
        if (redisGetReply(bench->context, (void **)&replies[i]) != REDIS_OK) replies[i] = NULL;
        if (replies[i] == NULL || replies[i]->type != REDIS_REPLY_STRING || replies[i]->len != bytes) ok = 0;
    }
    /* A client doing this every round keeps its buffer for the mean (a new
     * one each time would add its page faults to the client's time). */
    float *average = bench->average;
    const float *inputs[16];
    if (ok && average) {
        /* hiredis gives each bulk reply its own malloc'd buffer: aligned for
         * floats, and ours to step in place -- no extra copy. */
        for (int b = 0; b < bench->batches; b++) inputs[b] = (const float *)replies[b]->str;
        float *params = (float *)replies[bench->batches]->str;
        agg_mean(inputs, (size_t)bench->batches, bench->params, average, bench->threads);
        OptimConfig config = optim_config_default(OPTIM_SGD, strtof(LEARNING_RATE, NULL));
        fail(bench, optim_step(&config, params, average, NULL, bench->params, 1, &error), &error);
        char dim[32];
        snprintf(dim, sizeof(dim), "%zu", bench->params);
        const char *argv[] = {"SPIRT.TSET", params_key, "FLOAT32", dim, "BLOB", (const char *)params};
        size_t lengths[] = {10, strlen(params_key), 7, strlen(dim), 4, bytes};
        fail(bench, reply_ok(command_argv(bench->context, 6, argv, lengths), "SPIRT.TSET", &error), &error);
    } else {
        spirt_error_set(&error, SPIRT_ERR_SERVER, "client path: a TGET failed or memory is short");
        fail(bench, SPIRT_ERR_SERVER, &error);
    }
    for (int i = 0; i < count; i++)
        if (replies[i]) freeReplyObject(replies[i]);
}

static void run_client(void *context) {
    BenchCase *bench = context;
    run_client_on(bench, "bench:params");
}

/* (c) Lua over JSON lists, one EVALSHA. */
static void run_lua(void *context) {
    BenchCase *bench = context;
    const char *argv[24];
    char key_count[16], json_keys[17][32];
    snprintf(key_count, sizeof(key_count), "%d", bench->batches + 1);
    int argc = 0;
    argv[argc++] = "EVALSHA";
    argv[argc++] = bench->lua_sha;
    argv[argc++] = key_count;
    for (int b = 0; b < bench->batches; b++) {
        snprintf(json_keys[b], sizeof(json_keys[b]), "json:%s", bench->keys[b]);
        argv[argc++] = json_keys[b];
    }
    argv[argc++] = "json:params";
    argv[argc++] = LEARNING_RATE;
    SpirtError error;
    fail(bench, reply_ok(command_argv(bench->context, argc, argv, NULL), "EVALSHA", &error), &error);
}

/* Stores the parameters and the 16 gradients of a case as tensors. */
static int load_tensors(BenchCase *bench, SpirtRng *rng, SpirtError *error) {
    float *values = tensor_buffer_alloc(bench->params);
    if (values == NULL) return spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory");
    int status = SPIRT_OK;
    for (int b = 0; b <= 16 && status == SPIRT_OK; b++) {
        for (size_t i = 0; i < bench->params; i++) values[i] = (float)(0.1 * rng_normal(rng));
        status = tensor_set(bench->context, b < 16 ? bench->keys[b] : "bench:params", values, bench->params, error);
    }
    tensor_buffer_free(values);
    return status;
}

/* Stores JSON copies of the parameters and of gradients up to `batches`
 * (JSON lists are ~4x bigger than the tensors and slow to make: only those
 * a Lua case needs). *loaded counts the gradients already stored; -1: none,
 * not even the parameters. */
static int load_json(BenchCase *bench, int batches, int *loaded, SpirtError *error) {
    float *values = tensor_buffer_alloc(bench->params);
    if (values == NULL) return spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory");
    int status = SPIRT_OK;
    for (int b = *loaded < 0 ? -1 : *loaded; b < batches && status == SPIRT_OK; b++) {
        /* b = -1 is the parameters: the tensor's own values, as JSON. */
        size_t count = 0;
        const char *argv_get[] = {"SPIRT.TGET", b < 0 ? "bench:params" : bench->keys[b]};
        redisReply *tensor = command_argv(bench->context, 2, argv_get, NULL);
        if (tensor == NULL || tensor->type != REDIS_REPLY_STRING) {
            if (tensor) freeReplyObject(tensor);
            status = spirt_error_set(error, SPIRT_ERR_SERVER, "cannot read %s", argv_get[1]);
            break;
        }
        count = tensor->len / sizeof(float);
        memcpy(values, tensor->str, count * sizeof(float));
        freeReplyObject(tensor);
        size_t length;
        char *json = json_list(values, count, &length);
        if (json == NULL) {
            status = spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory");
            break;
        }
        char json_key[48];
        snprintf(json_key, sizeof(json_key), "json:%s", b < 0 ? "params" : bench->keys[b]);
        const char *argv[] = {"SET", json_key, json};
        size_t lengths[] = {3, strlen(json_key), length};
        status = reply_ok(command_argv(bench->context, 3, argv, lengths), "SET", error);
        free(json);
        *loaded = b + 1;
    }
    tensor_buffer_free(values);
    return status;
}

/* Runs (a), (a') and (b) on three copies of the parameters; 1 if the
 * results are bit-identical, 0 if not, -1 on error. */
static int paths_agree(BenchCase *bench) {
    SpirtError error;
    static const char *const copies[3] = {"bench:check-a", "bench:check-fused", "bench:check-b"};
    for (int k = 0; k < 3; k++) {
        const char *copy[] = {"COPY", "bench:params", copies[k], "REPLACE"};
        if (reply_ok(command_argv(bench->context, 4, copy, NULL), "COPY", &error) != SPIRT_OK) return -1;
    }
    run_indb_on(bench, copies[0]);
    run_fused_on(bench, copies[1]);
    run_client_on(bench, copies[2]);
    redisReply *results[3];
    int agree = 1, failed = bench->error.code != SPIRT_OK;
    for (int k = 0; k < 3; k++) {
        const char *get[] = {"SPIRT.TGET", copies[k]};
        results[k] = command_argv(bench->context, 2, get, NULL);
        if (results[k] == NULL || results[k]->type != REDIS_REPLY_STRING) failed = 1;
    }
    for (int k = 1; k < 3 && !failed; k++)
        agree &= results[k]->len == results[0]->len && memcmp(results[k]->str, results[0]->str, results[0]->len) == 0;
    for (int k = 0; k < 3; k++)
        if (results[k]) freeReplyObject(results[k]);
    return failed ? -1 : agree;
}

/* The time the server spent in the given commands since the last CONFIG
 * RESETSTAT, per call of the first, in ms (their usec in INFO
 * commandstats, which for a command run on a worker thread includes the
 * worker's time); -1 if unknown. */
static double server_ms_per_call(redisContext *context, const char *const *names, int count) {
    redisReply *reply = redisCommand(context, "INFO commandstats");
    if (reply == NULL || reply->type != REDIS_REPLY_STRING) {
        if (reply) freeReplyObject(reply);
        return -1;
    }
    double total = 0;
    long long calls = -1;
    for (int k = 0; k < count; k++) {
        char field[64];
        snprintf(field, sizeof(field), "cmdstat_%s:", names[k]);
        const char *line = strstr(reply->str, field);
        long long these = 0, usec = 0;
        if (line == NULL || sscanf(line + strlen(field), "calls=%lld,usec=%lld", &these, &usec) != 2) {
            freeReplyObject(reply);
            return -1;
        }
        total += (double)usec / 1000.0;
        if (k == 0) calls = these;
    }
    freeReplyObject(reply);
    return calls > 0 ? total / (double)calls : -1;
}

static void reset_stats(redisContext *context) {
    redisReply *reply = redisCommand(context, "CONFIG RESETSTAT");
    if (reply) freeReplyObject(reply);
}

/* Medians of (a), (a'), (b) and (c), their runs interleaved: (a) and (a')
 * take milliseconds, so timed back to back their runs would all fall into
 * whatever else the machine was doing in those few milliseconds; spread
 * between (b)'s and (c)'s runs they sample the same moments. (a) and (a')
 * run three times each per round (alternating), as they are cheap, after
 * five warm-up runs each (the first few after a case is loaded are slower
 * while the server's allocator settles); (c) runs in the first lua_repeats
 * rounds only (0: not at all). Also the server's own time per (a) and per
 * (a'), from INFO commandstats over the timed runs. Last, (a') `repeats`
 * times back to back, with nothing between: each run finds what the one
 * before left in cache, which is the most a warm pass can do, not the
 * figure of a round (back_to_back_ms). */
typedef struct Timings {
    double indb_ms, fused_ms, client_ms, lua_ms, server_ms, fused_server_ms, back_to_back_ms;
} Timings;

static double timed(void (*run)(void *), BenchCase *bench) {
    double start = clock_monotonic_ms();
    run(bench);
    return clock_monotonic_ms() - start;
}

static void time_interleaved(BenchCase *bench, int repeats, int lua_repeats, Timings *timings) {
    size_t rounds = (size_t)repeats;
    double *indb = malloc(3 * rounds * sizeof(double)), *fused = malloc(3 * rounds * sizeof(double));
    double *client = malloc(rounds * sizeof(double)), *lua = malloc(rounds * sizeof(double));
    timings->indb_ms = timings->fused_ms = timings->client_ms = timings->lua_ms = -1;
    timings->server_ms = timings->fused_server_ms = timings->back_to_back_ms = -1;
    if (indb && fused && client && lua) {
        if (lua_repeats > repeats) lua_repeats = repeats;
        for (int i = 0; i < 5; i++) run_indb(bench), run_fused(bench);
        run_client(bench);
        reset_stats(bench->context);
        for (size_t i = 0; i < rounds; i++) {
            for (size_t k = 0; k < 3; k++) {
                indb[3 * i + k] = timed(run_indb, bench);
                fused[3 * i + k] = timed(run_fused, bench);
            }
            client[i] = timed(run_client, bench);
            if ((int)i < lua_repeats) lua[i] = timed(run_lua, bench);
        }
        static const char *const pair[] = {"spirt.avg", "spirt.update"}, *const one[] = {"spirt.avgupdate"};
        timings->server_ms = server_ms_per_call(bench->context, pair, 2);
        timings->fused_server_ms = server_ms_per_call(bench->context, one, 1);
        timings->indb_ms = bench_median(indb, 3 * rounds);
        timings->fused_ms = bench_median(fused, 3 * rounds);
        timings->client_ms = bench_median(client, rounds);
        if (lua_repeats > 0) timings->lua_ms = bench_median(lua, (size_t)lua_repeats);
        run_fused(bench);
        for (size_t i = 0; i < rounds; i++) fused[i] = timed(run_fused, bench);
        timings->back_to_back_ms = bench_median(fused, rounds);
    }
    free(indb);
    free(fused);
    free(client);
    free(lua);
}

/* --- Options, loop, report ---------------------------------------------------------- */

/* The figures of one in-DB path in a row, their keys prefixed (""
 * for (a), whose times are indb_ms and indb_server_ms; "avgupdate_" for
 * (a')). */
static void add_path(json_t *row, const char *prefix, double ms, double server_ms, double client_ms, double lua_ms) {
    char key[64];
    const char *time_prefix = *prefix ? prefix : "indb_";
    snprintf(key, sizeof(key), "%sms", time_prefix);
    json_object_set_new(row, key, json_real(ms));
    snprintf(key, sizeof(key), "%sserver_ms", time_prefix);
    json_object_set_new(row, key, server_ms >= 0 ? json_real(server_ms) : json_null());
    snprintf(key, sizeof(key), "%sreduction_vs_client", prefix);
    json_object_set_new(row, key, json_real(1.0 - ms / client_ms));
    snprintf(key, sizeof(key), "%sspeedup", prefix);
    json_object_set_new(row, key, json_real(client_ms / ms));
    snprintf(key, sizeof(key), "%sspeedup_vs_lua_json", prefix);
    json_object_set_new(row, key, lua_ms >= 0 ? json_real(lua_ms / ms) : json_null());
}

/* Bytes a path must move per step (see the top of the file). */
static double path_bytes(size_t params, int batches, int fused) {
    return (double)params * sizeof(float) * (batches + (fused ? 3 : 4));
}

/* The rates of a row set against the machine's bandwidth (GB/s); returns the
 * row's avgupdate_reduction_at_bandwidth. */
static double add_bandwidth(json_t *row, double bandwidth) {
    size_t params = (size_t)json_integer_value(json_object_get(row, "params"));
    int batches = (int)json_integer_value(json_object_get(row, "batches"));
    double pair_bytes = path_bytes(params, batches, 0), fused_bytes = path_bytes(params, batches, 1);
    double pair_ms = json_real_value(json_object_get(row, "indb_ms"));
    double fused_ms = json_real_value(json_object_get(row, "avgupdate_ms"));
    double client_ms = json_real_value(json_object_get(row, "client_ms"));
    json_object_set_new(row, "indb_gb_s", json_real(pair_bytes / (pair_ms * 1e6)));
    json_object_set_new(row, "avgupdate_gb_s", json_real(fused_bytes / (fused_ms * 1e6)));
    double bound = 1.0 - fused_bytes / (bandwidth * 1e6) / client_ms;
    json_object_set_new(row, "avgupdate_reduction_at_bandwidth", json_real(bound));
    return bound;
}

/* The acceptance criterion over the rows of >= 1M parameters, per path. */
typedef struct Acceptance {
    int met;
    double worst_reduction, worst_lua_speedup;
} Acceptance;

static void acceptance_add(Acceptance *acceptance, double ms, double client_ms, double lua_ms) {
    double reduction = 1.0 - ms / client_ms;
    if (reduction < acceptance->worst_reduction) acceptance->worst_reduction = reduction;
    if (reduction < 0.95) acceptance->met = 0;
    if (lua_ms >= 0) {
        if (lua_ms / ms < acceptance->worst_lua_speedup) acceptance->worst_lua_speedup = lua_ms / ms;
        if (lua_ms / ms < 300) acceptance->met = 0;
    }
}

static void note_acceptance(BenchReport *report, const char *path, const Acceptance *acceptance) {
    bench_report_note(report,
                      "acceptance of %s at >= 1M params (>= 95%% less time than the client, >= 300x faster than "
                      "Lua/JSON): %s (least reduction %.3f, least Lua/JSON speedup %.0fx)",
                      path, acceptance->met ? "met" : "NOT met", acceptance->worst_reduction,
                      acceptance->worst_lua_speedup < 1e300 ? acceptance->worst_lua_speedup : 0.0);
}

/* A list of counts ("0.1M,1M", k and M decimal) as whole numbers. */
static int parse_counts(const char *text, uint64_t *counts, int max) {
    double values[MAX_CASES];
    int count = bench_parse_list(text, 1e3, values, max < MAX_CASES ? max : MAX_CASES);
    for (int i = 0; i < count; i++) counts[i] = (uint64_t)(values[i] + 0.5);
    return count;
}

int bench_indb(int argc, char **argv) {
    const char *params_text = "0.1M,1M,4.2M,11.7M", *batches_text = "4,8,16", *module_path = NULL;
    int repeats = 7, as_json = 0, threads = 0;
    double lua_max_s = 10.0;
    const CliOption options[] = {
        {"params", CLI_STRING, &params_text, "LIST", "parameter counts (default 0.1M,1M,4.2M,11.7M)"},
        {"batches", CLI_STRING, &batches_text, "LIST", "gradients averaged per step, each <= 16 (default 4,8,16)"},
        {"repeats", CLI_INT, &repeats, "N", "timed runs per figure; the median is reported (default 7)"},
        {"lua-max-s", CLI_DOUBLE, &lua_max_s, "S", "skip Lua/JSON cases estimated longer than this (default 10)"},
        {"threads", CLI_INT, &threads, "N", "kernel threads, in the module and the client (default: all CPUs)"},
        {"module", CLI_STRING, &module_path, "PATH", "the module (default: spirt.so next to this program)"},
        {"json", CLI_FLAG, &as_json, NULL, "print one JSON object instead of a table"},
    };
    const CliCommand command = {"bench indb", "",
                                "average B gradients and take an SGD step: in the database, in a client, in Lua/JSON",
                                options, sizeof(options) / sizeof(options[0])};
    int positional_count = 0;
    int parsed = cli_parse(&command, argc, argv, NULL, 0, &positional_count);
    if (parsed != CLI_PARSED) return parsed == CLI_EXIT_OK ? 0 : 2;
    uint64_t param_counts[MAX_CASES], batch_counts[MAX_CASES];
    int param_cases = parse_counts(params_text, param_counts, MAX_CASES);
    int batch_cases = parse_counts(batches_text, batch_counts, MAX_CASES);
    if (param_cases <= 0) return cli_usage_error(&command, "--params: '%s' is not a list of counts", params_text);
    if (batch_cases <= 0) return cli_usage_error(&command, "--batches: '%s' is not a list of counts", batches_text);
    for (int i = 0; i < batch_cases; i++)
        if (batch_counts[i] > 16) return cli_usage_error(&command, "--batches: at most 16");
    if (repeats < 1) return cli_usage_error(&command, "--repeats must be >= 1");
    if (threads <= 0) threads = parallel_default_threads();

    char lua_path[1024];
    bench_source_path(lua_path, sizeof(lua_path), "bench/indb_average_update.lua");
    FILE *lua_file = fopen(lua_path, "r");
    if (lua_file == NULL) {
        fprintf(stderr, "spirt bench indb: %s: %s\n", lua_path, strerror(errno));
        return 1;
    }
    static char lua_script[8192];
    size_t lua_length = fread(lua_script, 1, sizeof(lua_script) - 1, lua_file);
    fclose(lua_file);
    lua_script[lua_length] = '\0';

    /* The server's kernels use the same thread count as the client path. */
    char threads_text[16];
    snprintf(threads_text, sizeof(threads_text), "%d", threads);
    setenv("SPIRT_THREADS", threads_text, 1);
    BenchDatabase server;
    SpirtError error;
    spirt_error_clear(&error);
    if (bench_database_start(&server, module_path, 0, &error) != SPIRT_OK) {
        fprintf(stderr, "spirt bench indb: %s\n", error.message);
        return 1;
    }
    BenchCase bench;
    memset(&bench, 0, sizeof(bench));
    bench.threads = threads;
    bench.context = connect_server(server.process->port);
    redisReply *sha = bench.context ? redisCommand(bench.context, "SCRIPT LOAD %s", lua_script) : NULL;
    if (sha == NULL || sha->type != REDIS_REPLY_STRING) {
        fprintf(stderr, "spirt bench indb: cannot load the Lua script: %s\n",
                sha             ? sha->str
                : bench.context ? bench.context->errstr
                                : "no connection");
        if (sha) freeReplyObject(sha);
        if (bench.context) redisFree(bench.context);
        bench_database_stop(&server);
        return 1;
    }
    static char sha_text[64];
    snprintf(sha_text, sizeof(sha_text), "%s", sha->str);
    freeReplyObject(sha);
    bench.lua_sha = sha_text;
    for (int b = 0; b < 16; b++) snprintf(bench.keys[b], sizeof(bench.keys[b]), "bench:grad:%d", b);

    BenchReport *report = bench_report_create("indb");
    bench_report_note_load(report, "at start");
    double bandwidth_start = bench_memory_bandwidth(threads, 5);
    json_t *rows[MAX_CASES * MAX_CASES];
    int row_count = 0;
    SpirtRng rng;
    rng_init(&rng, 20230914);
    /* Time per value of the last Lua case, to estimate the next (it grows
     * with the size: the last one is the most telling). */
    double lua_ms_per_value = 0;
    int status = 0, all_agree = 1, acceptance_rows = 0;
    Acceptance pair_acceptance = {1, 1.0, 1e300}, fused_acceptance = {1, 1.0, 1e300};
    for (int p = 0; p < param_cases && status == 0; p++) {
        bench.params = (size_t)param_counts[p];
        int json_loaded = -1;
        tensor_buffer_free(bench.average);
        bench.average = tensor_buffer_alloc(bench.params);
        if (bench.average == NULL) spirt_error_set(&error, SPIRT_ERR_NOMEM, "out of memory");
        if (bench.average == NULL || load_tensors(&bench, &rng, &error) != SPIRT_OK) {
            fprintf(stderr, "spirt bench indb: loading %zu parameters: %s\n", bench.params, error.message);
            status = 1;
            break;
        }
        for (int c = 0; c < batch_cases && status == 0; c++) {
            bench.batches = (int)batch_counts[c];
            spirt_error_clear(&bench.error);
            int agree = paths_agree(&bench);
            if (agree != 1) all_agree = 0;
            int lua_repeats = 0;
            double estimate_s = lua_ms_per_value * (double)bench.params * (bench.batches + 1) / 1000.0;
            if (lua_ms_per_value == 0 || estimate_s <= lua_max_s) {
                if (load_json(&bench, bench.batches, &json_loaded, &error) != SPIRT_OK) {
                    fprintf(stderr, "spirt bench indb: storing JSON: %s\n", error.message);
                    status = 1;
                    break;
                }
                /* Seconds-long runs vary little: fewer repetitions suffice. */
                lua_repeats = estimate_s > 10 ? 1 : estimate_s > 2 ? (repeats < 3 ? repeats : 3) : repeats;
            } else {
                bench_report_note(report, "Lua/JSON skipped for %zu params x %d batches: estimated %.0f s a run",
                                  bench.params, bench.batches, estimate_s);
            }
            Timings timings;
            time_interleaved(&bench, repeats, lua_repeats, &timings);
            double client_ms = timings.client_ms, lua_ms = timings.lua_ms;
            if (lua_ms >= 0) lua_ms_per_value = lua_ms / ((double)bench.params * (bench.batches + 1));
            if (bench.error.code != SPIRT_OK) {
                fprintf(stderr, "spirt bench indb: %s\n", bench.error.message);
                status = 1;
                break;
            }
            json_t *row = bench_report_add_row(report);
            rows[row_count++] = row;
            json_object_set_new(row, "params", json_integer((json_int_t)bench.params));
            json_object_set_new(row, "batches", json_integer(bench.batches));
            json_object_set_new(row, "client_ms", json_real(client_ms));
            json_object_set_new(row, "lua_json_ms", lua_ms >= 0 ? json_real(lua_ms) : json_null());
            add_path(row, "", timings.indb_ms, timings.server_ms, client_ms, lua_ms);
            add_path(row, "avgupdate_", timings.fused_ms, timings.fused_server_ms, client_ms, lua_ms);
            json_object_set_new(row, "avgupdate_back_to_back_ms", json_real(timings.back_to_back_ms));
            json_object_set_new(row, "avgupdate_back_to_back_reduction",
                                json_real(1.0 - timings.back_to_back_ms / client_ms));
            json_object_set_new(row, "bit_identical", json_boolean(agree == 1));
            if (bench.params >= 1000000) {
                acceptance_rows++;
                acceptance_add(&pair_acceptance, timings.indb_ms, client_ms, lua_ms);
                acceptance_add(&fused_acceptance, timings.fused_ms, client_ms, lua_ms);
            }
        }
        /* Free the server's memory before the next, larger case. */
        redisReply *flush = redisCommand(bench.context, "FLUSHALL");
        if (flush) freeReplyObject(flush);
    }
    redisFree(bench.context);
    bench_database_stop(&server);
    tensor_buffer_free(bench.average);

    if (status == 0) {
        bench_report_note(report, "(a), (a') and (b) results bit-identical in every case: %s",
                          all_agree ? "yes" : "NO");
        if (acceptance_rows > 0) {
            note_acceptance(report, "(a) AVG + UPDATE", &pair_acceptance);
            note_acceptance(report, "(a') AVGUPDATE", &fused_acceptance);
        }
        double bandwidth = bench_report_bandwidth(report, bandwidth_start, threads);
        if (bandwidth > 0) {
            double least_bound = 2.0;
            json_t *least = NULL;
            for (int r = 0; r < row_count; r++) {
                double bound = add_bandwidth(rows[r], bandwidth);
                if (json_integer_value(json_object_get(rows[r], "params")) >= 1000000 && bound < least_bound)
                    least_bound = bound, least = rows[r];
            }
            if (least)
                bench_report_note(report,
                                  "moving its bytes at %.1f GB/s, (a') could take at most %.3f less time than the "
                                  "client at >= 1M params (least at %lld params, B = %lld): the bound when its inputs "
                                  "come from memory",
                                  bandwidth, least_bound,
                                  (long long)json_integer_value(json_object_get(least, "params")),
                                  (long long)json_integer_value(json_object_get(least, "batches")));
        }
        bench_report_note(report,
                          "medians of %d rounds, each running (a) and (a') 3 times each, then (b), then (c) (Lua: in "
                          "the first 3 or 1 rounds only when a run takes seconds); kernels on %d threads; "
                          "redis-server without persistence",
                          repeats, threads);
        bench_report_note(report, "*server_ms: the server's own time per run (a mean), from INFO commandstats (main "
                                  "thread and worker); the rest is the round trip, blocking and waking");
        bench_report_note(report, "avgupdate_back_to_back_*: (a') %d times in a row after the rounds, each run "
                                  "finding what the one before left in cache: what a warm pass can do, not the "
                                  "acceptance figure",
                          repeats);
        bench_report_note_load(report, "at end");
        bench_report_set(report, "threads", json_integer(threads));
        bench_report_set(report, "acceptance_met", json_boolean(pair_acceptance.met && acceptance_rows > 0));
        bench_report_set(report, "avgupdate_acceptance_met",
                         json_boolean(fused_acceptance.met && acceptance_rows > 0));
        static const char *const columns[] = {"params",
                                              "batches",
                                              "indb_ms",
                                              "indb_server_ms",
                                              "avgupdate_ms",
                                              "avgupdate_server_ms",
                                              "client_ms",
                                              "lua_json_ms",
                                              "reduction_vs_client",
                                              "avgupdate_reduction_vs_client",
                                              "speedup_vs_lua_json",
                                              "avgupdate_speedup_vs_lua_json",
                                              "avgupdate_gb_s",
                                              "avgupdate_reduction_at_bandwidth",
                                              "avgupdate_back_to_back_reduction",
                                              NULL};
        bench_report_print(report, as_json, columns);
    }
    bench_report_free(report);
    return status;
}
