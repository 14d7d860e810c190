/* bench_store.c -- `spirt bench store`: how fast large values move through
 * the store client, next to plain hiredis, in the same run.
 *
 * Peers move megabyte tensors through Redis many times a round, so the
 * client's cost per byte matters. Cases, for each size (default 1 MB and
 * 16 MB) and each transport (TCP loopback and a Unix socket):
 *   SET   store_set                    vs redisCommandArgv SET
 *   GET   store_get                    vs redisCommandArgv GET
 *   TSET  store_tensor_set             vs redisCommandArgv SPIRT.TSET
 *   TGET  store_tensor_get_into        vs redisCommandArgv SPIRT.TGET FULL
 *         (into the caller's floats)      and a copy of the blob into the
 *                                         same floats (where the values
 *                                         must end up)
 * against one redis-server started here with the module (no persistence),
 * stopped by pid at the end. Both clients send the same commands to the
 * same server; their runs are interleaved (one of each, in turn, who goes
 * first alternating), so both sample the same moments of a busy machine,
 * and each figure is a median.
 * Before timing, each case's values are read back through both clients
 * and compared bit for bit.
 *
 * speedup = baseline time / spirt time (above 1: spirt is faster);
 * spirt_mb_s = bytes moved per second by spirt (10^6 bytes). */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/bench.h"
#include "cli/options.h"
#include "spirt/clock.h"
#include "spirt/rng.h"
#include "spirt/store.h"
#include "spirt/tensor.h"

#define MAX_SIZES 8

/* One transport's two clients. */
typedef struct Clients {
    const char *name; /* "tcp" or "unix" */
    StoreConn *spirt;
    redisContext *hiredis;
} Clients;

typedef enum Operation { OP_SET, OP_GET, OP_TSET, OP_TGET } Operation;
static const char *const operation_names[] = {"SET", "GET", "TSET", "TGET"};

typedef struct Case {
    Clients *clients;
    Operation operation;
    size_t bytes;
    const float *values;  /* bytes / 4 floats to send */
    float *destination;   /* where TGET puts them */
    TensorShape shape;    /* (bytes / 4) */
    char count_text[24];  /* bytes / 4, for SPIRT.TSET */
    SpirtError error;     /* first failure */
} Case;

static void fail(Case *bench, int status, const SpirtError *error) {
    if (status != SPIRT_OK && bench->error.code == SPIRT_OK) bench->error = *error;
}

/* --- The two clients --------------------------------------------------------- */

static void run_spirt(void *context) {
    Case *bench = context;
    StoreConn *conn = bench->clients->spirt;
    SpirtError error;
    int status = SPIRT_OK;
    switch (bench->operation) {
    case OP_SET: status = store_set(conn, "bench:value", bench->values, bench->bytes, &error); break;
    case OP_GET: {
        char *value = NULL;
        size_t length = 0;
        status = store_get(conn, "bench:value", &value, &length, &error);
        if (status == SPIRT_OK && length != bench->bytes)
            status = spirt_error_set(&error, SPIRT_ERR_PROTOCOL, "GET: %zu bytes, expected %zu", length, bench->bytes);
        free(value);
        break;
    }
    case OP_TSET: status = store_tensor_set(conn, "bench:tensor", &bench->shape, bench->values, &error); break;
    case OP_TGET: status = store_tensor_get_into(conn, "bench:tensor", &bench->shape, bench->destination, &error); break;
    }
    fail(bench, status, &error);
}

/* The reply of a baseline command: SPIRT_OK if it is not an error. */
static int hiredis_status(Case *bench, redisReply *reply, SpirtError *error) {
    if (reply == NULL)
        return spirt_error_set(error, SPIRT_ERR_IO, "hiredis: %s", bench->clients->hiredis->errstr);
    if (reply->type == REDIS_REPLY_ERROR) return spirt_error_set(error, SPIRT_ERR_SERVER, "hiredis: %s", reply->str);
    return SPIRT_OK;
}

static void run_hiredis(void *context) {
    Case *bench = context;
    redisContext *redis = bench->clients->hiredis;
    SpirtError error;
    redisReply *reply = NULL;
    int status = SPIRT_OK;
    switch (bench->operation) {
    case OP_SET: {
        const char *argv[] = {"SET", "bench:value", (const char *)bench->values};
        const size_t lengths[] = {3, 11, bench->bytes};
        reply = redisCommandArgv(redis, 3, argv, lengths);
        status = hiredis_status(bench, reply, &error);
        break;
    }
    case OP_GET: {
        const char *argv[] = {"GET", "bench:value"};
        reply = redisCommandArgv(redis, 2, argv, NULL);
        status = hiredis_status(bench, reply, &error);
        if (status == SPIRT_OK && (reply->type != REDIS_REPLY_STRING || reply->len != bench->bytes))
            status = spirt_error_set(&error, SPIRT_ERR_PROTOCOL, "hiredis GET: not %zu bytes", bench->bytes);
        break;
    }
    case OP_TSET: {
        const char *argv[] = {"SPIRT.TSET", "bench:tensor", "FLOAT32", bench->count_text, "BLOB",
                              (const char *)bench->values};
        const size_t lengths[] = {10, 12, 7, strlen(bench->count_text), 4, bench->bytes};
        reply = redisCommandArgv(redis, 6, argv, lengths);
        status = hiredis_status(bench, reply, &error);
        break;
    }
    case OP_TGET: {
        const char *argv[] = {"SPIRT.TGET", "bench:tensor", "FULL"};
        reply = redisCommandArgv(redis, 3, argv, NULL);
        status = hiredis_status(bench, reply, &error);
        /* dtype, shape, count, blob: the values are the last element. */
        const redisReply *blob =
            status == SPIRT_OK && reply->type == REDIS_REPLY_ARRAY && reply->elements == 8 ? reply->element[7] : NULL;
        if (status == SPIRT_OK && (blob == NULL || blob->type != REDIS_REPLY_STRING || blob->len != bench->bytes))
            status = spirt_error_set(&error, SPIRT_ERR_PROTOCOL, "hiredis SPIRT.TGET: no %zu-byte blob", bench->bytes);
        if (status == SPIRT_OK) memcpy(bench->destination, blob->str, bench->bytes);
        break;
    }
    }
    if (reply) freeReplyObject(reply);
    fail(bench, status, &error);
}

/* Reads the values just written back through both clients; 1 if both
 * give exactly the bytes sent. */
static int both_read_back(Case *bench) {
    Operation written = bench->operation;
    bench->operation = written == OP_SET ? OP_GET : OP_TGET;
    int same = 1;
    for (int client = 0; client < 2 && bench->error.code == SPIRT_OK; client++) {
        if (bench->operation == OP_GET) {
            /* GET's value is dropped by the timed run: fetch it here. */
            char *value = NULL;
            size_t length = 0;
            if (client == 0) {
                SpirtError error;
                fail(bench, store_get(bench->clients->spirt, "bench:value", &value, &length, &error), &error);
                same &= value != NULL && length == bench->bytes && memcmp(value, bench->values, length) == 0;
                free(value);
            } else {
                const char *argv[] = {"GET", "bench:value"};
                redisReply *reply = redisCommandArgv(bench->clients->hiredis, 2, argv, NULL);
                same &= reply != NULL && reply->type == REDIS_REPLY_STRING && reply->len == bench->bytes &&
                        memcmp(reply->str, bench->values, bench->bytes) == 0;
                if (reply) freeReplyObject(reply);
            }
        } else {
            memset(bench->destination, 0, bench->bytes);
            (client == 0 ? run_spirt : run_hiredis)(bench);
            same &= memcmp(bench->destination, bench->values, bench->bytes) == 0;
        }
    }
    bench->operation = written;
    return same && bench->error.code == SPIRT_OK;
}

/* Medians of both clients' times, their runs interleaved. */
static void time_both(Case *bench, int repeats, double *spirt_ms, double *baseline_ms) {
    double *spirt = malloc((size_t)repeats * sizeof(double)), *baseline = malloc((size_t)repeats * sizeof(double));
    if (spirt == NULL || baseline == NULL) {
        free(spirt);
        free(baseline);
        *spirt_ms = *baseline_ms = -1;
        return;
    }
    for (int i = 0; i < 2; i++) {
        run_spirt(bench);
        run_hiredis(bench);
    }
    for (int i = 0; i < repeats; i++) {
        /* Who goes first alternates, so neither always follows the other
         * (a server still freeing the last value, caches). */
        for (int turn = 0; turn < 2; turn++) {
            int spirt_turn = (turn + i) % 2 == 0;
            double start = clock_monotonic_ms();
            (spirt_turn ? run_spirt : run_hiredis)(bench);
            (spirt_turn ? spirt : baseline)[i] = clock_monotonic_ms() - start;
        }
    }
    *spirt_ms = bench_median(spirt, (size_t)repeats);
    *baseline_ms = bench_median(baseline, (size_t)repeats);
    free(spirt);
    free(baseline);
}

/* --- Setup ------------------------------------------------------------------------ */

static int connect_clients(Clients *clients, const char *name, int port, const char *socket_path,
                           SpirtError *error) {
    clients->name = name;
    StoreOptions options = {.host = socket_path ? socket_path : "127.0.0.1", .port = port};
    clients->spirt = store_connect(&options, error);
    if (clients->spirt == NULL) return error->code;
    struct timeval timeout = {120, 0};
    clients->hiredis = socket_path ? redisConnectUnixWithTimeout(socket_path, timeout)
                                   : redisConnectWithTimeout("127.0.0.1", port, timeout);
    if (clients->hiredis == NULL || clients->hiredis->err)
        return spirt_error_set(error, SPIRT_ERR_IO, "hiredis cannot connect over %s: %s", name,
                               clients->hiredis ? clients->hiredis->errstr : "out of memory");
    redisSetTimeout(clients->hiredis, timeout);
    return SPIRT_OK;
}

static void disconnect_clients(Clients *clients) {
    store_free(clients->spirt);
    if (clients->hiredis) redisFree(clients->hiredis);
    memset(clients, 0, sizeof(*clients));
}

/* A list of sizes in bytes ("1M,16M", K and M binary), each rounded down
 * to whole floats, 4 bytes to 256 MiB. */
static int parse_sizes(const char *text, size_t *sizes, int max) {
    double values[MAX_SIZES];
    int count = bench_parse_list(text, 1024, values, max < MAX_SIZES ? max : MAX_SIZES);
    for (int i = 0; i < count; i++) {
        sizes[i] = (size_t)values[i] / 4 * 4;
        if (sizes[i] == 0 || sizes[i] > ((size_t)256 << 20)) return -1;
    }
    return count;
}

/* Runs every case on one transport; rows go to the report. */
static int run_cases(Clients *clients, const size_t *sizes, int size_count, int repeats, BenchReport *report,
                     int *all_identical, SpirtError *error) {
    SpirtRng rng;
    rng_init(&rng, 20240611);
    for (int s = 0; s < size_count; s++) {
        size_t count = sizes[s] / sizeof(float);
        float *values = tensor_buffer_alloc(count), *destination = tensor_buffer_alloc(count);
        if (values == NULL || destination == NULL) {
            tensor_buffer_free(values);
            tensor_buffer_free(destination);
            return spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory for %zu bytes", sizes[s]);
        }
        for (size_t i = 0; i < count; i++) values[i] = (float)rng_normal(&rng);
        for (int op = 0; op < 4; op++) {
            Case bench = {.clients = clients, .operation = (Operation)op, .bytes = sizes[s], .values = values,
                          .destination = destination};
            tensor_shape_vector(&bench.shape, count, NULL);
            snprintf(bench.count_text, sizeof(bench.count_text), "%zu", count);
            if (op == OP_SET || op == OP_TSET) {
                run_spirt(&bench); /* the value the reads will read */
                if (!both_read_back(&bench)) *all_identical = 0;
            }
            double spirt_ms, baseline_ms;
            time_both(&bench, repeats, &spirt_ms, &baseline_ms);
            if (bench.error.code != SPIRT_OK) {
                *error = bench.error;
                tensor_buffer_free(values);
                tensor_buffer_free(destination);
                return error->code;
            }
            char name[32];
            snprintf(name, sizeof(name), "%s %s", clients->name, operation_names[op]);
            json_t *row = bench_report_add_row(report);
            json_object_set_new(row, "case", json_string(name));
            json_object_set_new(row, "bytes", json_integer((json_int_t)sizes[s]));
            json_object_set_new(row, "spirt_ms", json_real(spirt_ms));
            json_object_set_new(row, "baseline_ms", json_real(baseline_ms));
            json_object_set_new(row, "speedup", json_real(baseline_ms / spirt_ms));
            json_object_set_new(row, "spirt_mb_s", json_real((double)sizes[s] / 1e6 / (spirt_ms / 1e3)));
        }
        tensor_buffer_free(values);
        tensor_buffer_free(destination);
    }
    return SPIRT_OK;
}

int bench_store(int argc, char **argv) {
    const char *sizes_text = "1M,16M", *module_path = NULL;
    int repeats = 15, as_json = 0;
    const CliOption options[] = {
        {"sizes", CLI_STRING, &sizes_text, "LIST", "value sizes, K/M = 2^10/2^20 bytes (default 1M,16M)"},
        {"repeats", CLI_INT, &repeats, "N", "timed runs per figure and client; the median is reported (default 15)"},
        {"module", CLI_STRING, &module_path, "PATH", "the module (default: spirt.so next to this program)"},
        {"json", CLI_FLAG, &as_json, NULL, "print one JSON object instead of a table"},
    };
    const CliCommand command = {"bench store", "",
                                "SET/GET and SPIRT.TSET/TGET of large values: the store client vs plain hiredis",
                                options, sizeof(options) / sizeof(options[0])};
    int positional_count = 0;
    int parsed = cli_parse(&command, argc, argv, NULL, 0, &positional_count);
    if (parsed != CLI_PARSED) return parsed == CLI_EXIT_OK ? 0 : 2;
    size_t sizes[MAX_SIZES];
    int size_count = parse_sizes(sizes_text, sizes, MAX_SIZES);
    if (size_count <= 0) return cli_usage_error(&command, "--sizes: '%s' is not a list of sizes up to 256M", sizes_text);
    if (repeats < 1) return cli_usage_error(&command, "--repeats must be >= 1");
    SpirtError error;
    spirt_error_clear(&error);
    BenchDatabase database;
    int status = bench_database_start(&database, module_path, 1, &error);
    BenchReport *report = bench_report_create("store");
    int all_identical = 1;
    Clients clients = {0};
    if (status == SPIRT_OK) status = connect_clients(&clients, "tcp", database.process->port, NULL, &error);
    if (status == SPIRT_OK) status = run_cases(&clients, sizes, size_count, repeats, report, &all_identical, &error);
    disconnect_clients(&clients);
    if (status == SPIRT_OK) status = connect_clients(&clients, "unix", 0, database.socket_path, &error);
    if (status == SPIRT_OK) status = run_cases(&clients, sizes, size_count, repeats, report, &all_identical, &error);
    disconnect_clients(&clients);
    bench_database_stop(&database);

    if (status != SPIRT_OK) {
        fprintf(stderr, "spirt bench store: %s\n", error.message);
        bench_report_free(report);
        return 1;
    }
    bench_report_note(report, "values read back bit-identical through both clients: %s", all_identical ? "yes" : "NO");
    bench_report_note(report,
                      "baseline: hiredis %d.%d redisCommandArgv (TGET: plus a copy of the blob into the same floats); "
                      "medians of %d interleaved runs; redis-server without persistence",
                      HIREDIS_MAJOR, HIREDIS_MINOR, repeats);
    bench_report_set(report, "repeats", json_integer(repeats));
    bench_report_set(report, "bit_identical", json_boolean(all_identical));
    static const char *const columns[] = {"case", "bytes", "spirt_ms", "baseline_ms", "speedup", "spirt_mb_s", NULL};
    bench_report_print(report, as_json, columns);
    bench_report_free(report);
    return all_identical ? 0 : 1;
}
