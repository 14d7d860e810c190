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
 * While a worker runs an invocation, a lease thread renews its claim on the
 * entry (XCLAIM ... JUSTID resets the entry's idle time) until the
 * invocation's deadline. So the visibility time-out can be short -- a
 * crashed worker's invocation is taken over within it -- without a slow but
 * healthy invocation (a cold start reading the shard) being run twice. A
 * process that hangs as a whole stops renewing, and is taken over.
 *
 * Counters (HINCRBY spirt:counters, per worker and in total): invocations,
 * reclaims, expired (picked up after their deadline), failures, cold_starts,
 * queue_wait_ms (entry added -> picked up), run_ms. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "spirt/clock.h"
#include "spirt/keys.h"
#include "spirt/log.h"
#include "spirt/peer.h"
#include "spirt/rng.h"

typedef struct Lease {
    pthread_t thread;
    int running;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int stop;
    char entry[STORE_STREAM_ID_SIZE]; /* "" when no invocation runs */
    int64_t deadline_ms;              /* renew until then (wall clock) */
    StoreConn *conn;
    const char *consumer;
    int period_ms;
} Lease;

typedef struct Worker {
    const WorkerOptions *options;
    char name[128];
    StoreConn *conn;
    FnContext *functions;
    SpirtRng faults;
    uint64_t served;
    Lease lease;
    /* Counters gathered during one invocation, sent with its result. */
    const char *counter_names[8];
    long long counter_values[8];
    size_t counter_count;
} Worker;

static void count(Worker *worker, const char *counter, long long by) {
    if (worker->counter_count < 8) {
        worker->counter_names[worker->counter_count] = counter;
        worker->counter_values[worker->counter_count++] = by;
    }
}

/* Queues the gathered counters (total and per worker) on the pipeline. */
static void append_counters(Worker *worker) {
    for (size_t i = 0; i < worker->counter_count; i++) {
        store_append(worker->conn, NULL, "HINCRBY %s %s %lld", KEY_COUNTERS, worker->counter_names[i],
                     worker->counter_values[i]);
        store_append(worker->conn, NULL, "HINCRBY %s %s:%s %lld", KEY_COUNTERS, worker->counter_names[i], worker->name,
                     worker->counter_values[i]);
    }
    worker->counter_count = 0;
}

static int flush_pipeline(Worker *worker, int status, SpirtError *error) {
    while (store_pending_replies(worker->conn)) {
        int reply_status = store_get_reply(worker->conn, NULL, error);
        if (reply_status != SPIRT_OK && status == SPIRT_OK) status = reply_status;
        if (store_conn_status(worker->conn) != SPIRT_OK) break;
    }
    return status;
}

/* --- The lease --- */

static void *lease_main(void *argument) {
    Lease *lease = argument;
    pthread_mutex_lock(&lease->lock);
    while (!lease->stop) {
        if (lease->entry[0] && clock_wall_ms() < lease->deadline_ms) {
            char entry[STORE_STREAM_ID_SIZE];
            memcpy(entry, lease->entry, sizeof(entry));
            pthread_mutex_unlock(&lease->lock);
            const char *argv[] = {"XCLAIM", KEY_INVOCATIONS, KEY_INVOCATION_GROUP, lease->consumer, "0", entry, "JUSTID"};
            if (store_command_argv(lease->conn, 7, argv, NULL, NULL, NULL) != SPIRT_OK &&
                store_conn_status(lease->conn) != SPIRT_OK)
                store_reconnect(lease->conn, NULL);
            pthread_mutex_lock(&lease->lock);
        }
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        long long nanoseconds = until.tv_nsec + (long long)lease->period_ms * 1000000;
        until.tv_sec += (time_t)(nanoseconds / 1000000000);
        until.tv_nsec = (long)(nanoseconds % 1000000000);
        if (!lease->stop) pthread_cond_timedwait(&lease->wake, &lease->lock, &until);
    }
    pthread_mutex_unlock(&lease->lock);
    return NULL;
}

static int lease_start(Lease *lease, const WorkerOptions *options, const char *consumer, int visibility_ms,
                       SpirtError *error) {
    memset(lease, 0, sizeof(*lease));
    lease->conn = store_connect_address(options->db, &options->store, error);
    if (lease->conn == NULL) return error->code;
    lease->consumer = consumer;
    lease->period_ms = visibility_ms / 3 > 1 ? visibility_ms / 3 : 1;
    pthread_mutex_init(&lease->lock, NULL);
    pthread_cond_init(&lease->wake, NULL);
    if (pthread_create(&lease->thread, NULL, lease_main, lease) != 0) {
        store_free(lease->conn);
        return spirt_error_set(error, SPIRT_ERR_INTERNAL, "cannot start the lease thread");
    }
    lease->running = 1;
    return SPIRT_OK;
}

static void lease_hold(Lease *lease, const char *entry, int64_t deadline_ms) {
    pthread_mutex_lock(&lease->lock);
    snprintf(lease->entry, sizeof(lease->entry), "%s", entry ? entry : "");
    lease->deadline_ms = deadline_ms;
    pthread_mutex_unlock(&lease->lock);
}

static void lease_stop(Lease *lease) {
    if (!lease->running) return;
    pthread_mutex_lock(&lease->lock);
    lease->stop = 1;
    pthread_cond_signal(&lease->wake);
    pthread_mutex_unlock(&lease->lock);
    pthread_join(lease->thread, NULL);
    store_free(lease->conn);
    pthread_mutex_destroy(&lease->lock);
    pthread_cond_destroy(&lease->wake);
    lease->running = 0;
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
    append_counters(worker);
    return flush_pipeline(worker, status, error);
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
    int64_t deadline = deadline_text ? strtoll(deadline_text, NULL, 10) : now + 600000;
    if (now > deadline) {
        count(worker, "expired", 1);
        append_counters(worker);
        store_append(worker->conn, NULL, "XACK %s %s %s", KEY_INVOCATIONS, KEY_INVOCATION_GROUP, entry->id);
        return flush_pipeline(worker, SPIRT_OK, error);
    }
    if (reclaimed) count(worker, "reclaims", 1);
    count(worker, "invocations", 1);
    count(worker, "queue_wait_ms", now - entry_added_ms(entry->id));
    /* Sent now, not with the result: an invocation that crashes its worker
     * was still taken, and counts. */
    append_counters(worker);
    flush_pipeline(worker, SPIRT_OK, NULL);

    /* Injected faults, drawn per invocation taken. */
    double draw = rng_uniform(&worker->faults);
    if (draw < worker->options->crash_rate) {
        log_warn("fault injection: crashing while running %s (%s)", name, invocation);
        _exit(3);
    }
    if (draw < worker->options->crash_rate + worker->options->hang_rate) {
        /* A hung process renews nothing: no lease, so the entry is taken
         * over after the visibility time-out. */
        log_warn("fault injection: hanging %d ms in %s (%s)", worker->options->hang_ms, name, invocation);
        worker->counter_count = 0;
        clock_sleep_ms(worker->options->hang_ms);
        /* Someone else has taken it over meanwhile; do not answer. */
        return SPIRT_OK;
    }
    lease_hold(&worker->lease, entry->id, deadline);

    json_error_t parse_error;
    json_t *event = json_loads(event_text, 0, &parse_error);
    json_t *output = NULL, *document;
    SpirtError function_error;
    spirt_error_clear(&function_error);
    double start = clock_monotonic_ms();
    int status = event ? fn_invoke(worker->functions, name, event, &output, &function_error)
                       : spirt_error_set(&function_error, SPIRT_ERR_INVALID, "event is not JSON: %s", parse_error.text);
    double elapsed = clock_monotonic_ms() - start;
    lease_hold(&worker->lease, NULL, 0);
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
    if (status == SPIRT_OK) status = lease_start(&worker.lease, options, worker.name, visibility_ms, error);
    if (status != SPIRT_OK) {
        fn_context_free(worker.functions);
        store_free(worker.conn);
        return status;
    }
    count(&worker, "cold_starts", 1);
    append_counters(&worker);
    flush_pipeline(&worker, SPIRT_OK, NULL);
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
    lease_stop(&worker.lease);
    fn_context_free(worker.functions);
    store_free(worker.conn);
    return status;
}
