/* worker.c -- a warm function worker: the Lambda execution environment of
 * spirt. It initialises once (connections, model buffers, the peer's shard
 * are cached in its FnContext), then serves invocations from the peer's
 * stream for as long as it runs.
 *
 * Delivery is Redis's: XREADGROUP hands each new entry to one worker of the
 * group; an entry stays pending until acknowledged; an entry pending longer
 * than the visibility time-out (its worker crashed or hangs) is taken over
 * by another worker with XAUTOCLAIM. A worker acknowledges only after the
 * result is written, so an invocation is never lost, and functions are
 * idempotent, so running one twice is harmless.
 *
 * Counters (HINCRBY spirt:counters, per worker and in total): invocations,
 * reclaims, expired (picked up after their deadline), failures, cold_starts,
 * queue_wait_ms (entry added -> picked up), run_ms. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "spirt/clock.h"
#include "spirt/keys.h"
#include "spirt/log.h"
#include "spirt/peer.h"
#include "spirt/rng.h"

typedef struct Worker {
    const WorkerOptions *options;
    char name[128];
    StoreConn *conn;
    FnContext *functions;
    SpirtRng faults;
    uint64_t served;
} Worker;

static void count(Worker *worker, const char *counter, long long by) {
    char field[200];
    store_command(worker->conn, NULL, NULL, "HINCRBY %s %s %lld", KEY_COUNTERS, counter, by);
    snprintf(field, sizeof(field), "%s:%s", counter, worker->name);
    store_command(worker->conn, NULL, NULL, "HINCRBY %s %s %lld", KEY_COUNTERS, field, by);
}

/* The time the entry was added: its id is "<ms>-<sequence>". */
static int64_t entry_added_ms(const char *id) { return strtoll(id, NULL, 10); }

static int write_result(Worker *worker, const char *invocation, const char *stream_id, json_t *document,
                        SpirtError *error) {
    char key[KEY_MAX];
    key_result(key, invocation);
    char *text = json_dumps(document, JSON_COMPACT);
    if (text == NULL) return spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory");
    /* Result, its expiry (nobody may ever read it) and the acknowledgement,
     * in one round trip; the acknowledgement comes last. */
    int status = store_append(worker->conn, error, "LPUSH %s %s", key, text);
    if (status == SPIRT_OK) status = store_append(worker->conn, error, "PEXPIRE %s 120000", key);
    if (status == SPIRT_OK)
        status = store_append(worker->conn, error, "XACK %s %s %s", KEY_INVOCATIONS, KEY_INVOCATION_GROUP, stream_id);
    free(text);
    while (store_pending_replies(worker->conn)) {
        int reply_status = store_get_reply(worker->conn, NULL, error);
        if (reply_status != SPIRT_OK && status == SPIRT_OK) status = reply_status;
        if (store_conn_status(worker->conn) != SPIRT_OK) break;
    }
    return status;
}

static int serve_entry(Worker *worker, const StoreStreamEntry *entry, int reclaimed, SpirtError *error) {
    const char *invocation = store_stream_entry_value(entry, "id", NULL);
    const char *name = store_stream_entry_value(entry, "fn", NULL);
    const char *event_text = store_stream_entry_value(entry, "event", NULL);
    const char *deadline_text = store_stream_entry_value(entry, "deadline", NULL);
    if (invocation == NULL || name == NULL || event_text == NULL) {
        /* Not an invocation (or deleted meanwhile): acknowledge and forget. */
        log_warn("dropping malformed stream entry %s", entry->id);
        return store_xack(worker->conn, KEY_INVOCATIONS, KEY_INVOCATION_GROUP, entry->id, NULL, error);
    }
    int64_t now = clock_wall_ms();
    if (deadline_text && now > strtoll(deadline_text, NULL, 10)) {
        count(worker, "expired", 1);
        return store_xack(worker->conn, KEY_INVOCATIONS, KEY_INVOCATION_GROUP, entry->id, NULL, error);
    }
    if (reclaimed) count(worker, "reclaims", 1);
    count(worker, "invocations", 1);
    count(worker, "queue_wait_ms", now - entry_added_ms(entry->id));

    /* Injected faults, drawn per invocation taken. */
    double draw = rng_uniform(&worker->faults);
    if (draw < worker->options->crash_rate) {
        log_warn("fault injection: crashing while running %s (%s)", name, invocation);
        _exit(3);
    }
    if (draw < worker->options->crash_rate + worker->options->hang_rate) {
        log_warn("fault injection: hanging %d ms in %s (%s)", worker->options->hang_ms, name, invocation);
        clock_sleep_ms(worker->options->hang_ms);
        /* Someone else has taken it over meanwhile; do not answer. */
        return SPIRT_OK;
    }

    json_error_t parse_error;
    json_t *event = json_loads(event_text, 0, &parse_error);
    json_t *output = NULL, *document;
    SpirtError function_error;
    spirt_error_clear(&function_error);
    double start = clock_monotonic_ms();
    int status = event ? fn_invoke(worker->functions, name, event, &output, &function_error)
                       : spirt_error_set(&function_error, SPIRT_ERR_INVALID, "event is not JSON: %s", parse_error.text);
    double elapsed = clock_monotonic_ms() - start;
    json_decref(event);
    count(worker, "run_ms", (long long)elapsed);
    if (status == SPIRT_OK) {
        document = json_pack("{s:b, s:o}", "ok", 1, "output", output);
    } else {
        count(worker, "failures", 1);
        log_warn("%s failed: %s", name, function_error.message);
        document = json_pack("{s:b, s:s, s:s}", "ok", 0, "error", fn_error_name(status), "cause", function_error.message);
    }
    status = write_result(worker, invocation, entry->id, document, error);
    json_decref(document);
    worker->served++;
    return status;
}

static int serve_batch(Worker *worker, StoreStreamBatch *batch, int reclaimed, SpirtError *error) {
    int status = SPIRT_OK;
    for (size_t i = 0; i < batch->count && status == SPIRT_OK; i++)
        status = serve_entry(worker, &batch->entries[i], reclaimed, error);
    return status;
}

static int connect_worker(Worker *worker, SpirtError *error) {
    store_free(worker->conn);
    worker->conn = store_connect_address(worker->options->db, &worker->options->store, error);
    if (worker->conn == NULL) return error->code;
    return store_xgroup_create(worker->conn, KEY_INVOCATIONS, KEY_INVOCATION_GROUP, "0", error);
}

int worker_run(const WorkerOptions *options, SpirtError *error) {
    SpirtError local;
    if (error == NULL) error = &local;
    Worker worker = {.options = options};
    if (options->name)
        snprintf(worker.name, sizeof(worker.name), "%s", options->name);
    else {
        char host[64] = "host";
        gethostname(host, sizeof(host) - 1);
        snprintf(worker.name, sizeof(worker.name), "%s-%ld", host, (long)getpid());
    }
    int visibility_ms = options->visibility_ms > 0 ? options->visibility_ms : 2000;
    rng_init_stream(&worker.faults, options->fault_seed, (uint64_t)getpid());
    FnContextOptions function_options = {.store = options->store, .identity_path = options->identity_path,
                                         .threads = options->threads};
    worker.functions = fn_context_create(&function_options, error);
    if (worker.functions == NULL) return error->code;
    int status = connect_worker(&worker, error);
    if (status != SPIRT_OK) {
        fn_context_free(worker.functions);
        store_free(worker.conn);
        return status;
    }
    count(&worker, "cold_starts", 1);
    log_info("worker %s serving %s", worker.name, options->db);

    double next_reclaim = 0;
    while (status == SPIRT_OK && !(options->stop && *options->stop) &&
           !(options->max_invocations && worker.served >= options->max_invocations)) {
        StoreStreamBatch *batch = NULL;
        if (clock_monotonic_ms() >= next_reclaim) {
            /* Entries whose worker died or hangs. */
            next_reclaim = clock_monotonic_ms() + visibility_ms / 4.0;
            status = store_xautoclaim(worker.conn, KEY_INVOCATIONS, KEY_INVOCATION_GROUP, worker.name, visibility_ms,
                                      "0-0", 4, &batch, error);
            if (status == SPIRT_OK && batch->count) status = serve_batch(&worker, batch, 1, error);
            store_stream_batch_free(batch);
            batch = NULL;
            if (status != SPIRT_OK) goto failed;
        }
        status = store_xreadgroup(worker.conn, KEY_INVOCATIONS, KEY_INVOCATION_GROUP, worker.name, NULL, 1, 200, &batch,
                                  error);
        if (status == SPIRT_OK) status = serve_batch(&worker, batch, 0, error);
        store_stream_batch_free(batch);
    failed:
        if (status != SPIRT_OK && store_conn_status(worker.conn) != SPIRT_OK) {
            /* The database went away: one reconnect attempt, after a pause. */
            log_warn("worker %s: %s; reconnecting", worker.name, error->message);
            clock_sleep_ms(500);
            status = connect_worker(&worker, error);
        } else if (status != SPIRT_OK) {
            log_warn("worker %s: %s", worker.name, error->message);
            status = SPIRT_OK; /* a command error on one entry does not stop the worker */
        }
    }
    fn_context_free(worker.functions);
    store_free(worker.conn);
    return status;
}
