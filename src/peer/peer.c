/* peer.c -- a peer's life: prepare its database, then run the round
 * workflow once per round, from the last completed round on.
 *
 * Each round's input is built here (workflows/README.md lists its fields);
 * the workflow does the rest through the functions. After a round the peer
 * records it (spirt:round) and appends a metrics entry to spirt:metrics,
 * which `spirt train` reads for its progress display and metrics.csv. A
 * heartbeat thread keeps spirt:heartbeat alive independently of how long a
 * round takes, so other peers see this one alive exactly while it runs. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peer/peer_internal.h"
#include "spirt/clock.h"
#include "spirt/keys.h"
#include "spirt/log.h"

typedef struct Heartbeat {
    pthread_t thread;
    int running;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int stop;
    StoreConn *conn;
    int64_t ttl_ms;
    uint64_t round;
} Heartbeat;

static void *heartbeat_main(void *argument) {
    Heartbeat *heartbeat = argument;
    pthread_mutex_lock(&heartbeat->lock);
    while (!heartbeat->stop) {
        uint64_t round = heartbeat->round;
        pthread_mutex_unlock(&heartbeat->lock);
        SpirtError error;
        if (fn_write_heartbeat(heartbeat->conn, round, heartbeat->ttl_ms, &error) != SPIRT_OK) {
            log_warn("heartbeat: %s", error.message);
            store_reconnect(heartbeat->conn, NULL);
        }
        pthread_mutex_lock(&heartbeat->lock);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        int64_t wait_ns = heartbeat->ttl_ms * 1000000 / 4;
        until.tv_sec += (time_t)(wait_ns / 1000000000);
        until.tv_nsec += (long)(wait_ns % 1000000000);
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000;
        }
        if (!heartbeat->stop) pthread_cond_timedwait(&heartbeat->wake, &heartbeat->lock, &until);
    }
    pthread_mutex_unlock(&heartbeat->lock);
    return NULL;
}

static int heartbeat_start(Heartbeat *heartbeat, const char *address, const StoreOptions *store, int64_t ttl_ms,
                           SpirtError *error) {
    memset(heartbeat, 0, sizeof(*heartbeat));
    StoreOptions options = *store;
    options.read_timeout_ms = (int)(ttl_ms / 2);
    options.write_timeout_ms = (int)(ttl_ms / 2);
    heartbeat->conn = store_connect_address(address, &options, error);
    if (heartbeat->conn == NULL) return error->code;
    heartbeat->ttl_ms = ttl_ms;
    pthread_mutex_init(&heartbeat->lock, NULL);
    pthread_cond_init(&heartbeat->wake, NULL);
    if (pthread_create(&heartbeat->thread, NULL, heartbeat_main, heartbeat) != 0) {
        store_free(heartbeat->conn);
        return spirt_error_set(error, SPIRT_ERR_INTERNAL, "cannot start the heartbeat thread");
    }
    heartbeat->running = 1;
    return SPIRT_OK;
}

static void heartbeat_set_round(Heartbeat *heartbeat, uint64_t round) {
    pthread_mutex_lock(&heartbeat->lock);
    heartbeat->round = round;
    pthread_mutex_unlock(&heartbeat->lock);
}

static void heartbeat_stop(Heartbeat *heartbeat) {
    if (!heartbeat->running) return;
    pthread_mutex_lock(&heartbeat->lock);
    heartbeat->stop = 1;
    pthread_cond_signal(&heartbeat->wake);
    pthread_mutex_unlock(&heartbeat->lock);
    pthread_join(heartbeat->thread, NULL);
    /* A peer that stops on purpose says so at once instead of letting its
     * heartbeat expire. */
    store_del(heartbeat->conn, KEY_HEARTBEAT, NULL, NULL);
    store_free(heartbeat->conn);
    pthread_mutex_destroy(&heartbeat->lock);
    pthread_cond_destroy(&heartbeat->wake);
    heartbeat->running = 0;
}

/* --- One round --- */

static json_t *optimizer_json(const OptimConfig *optimizer) {
    RunConfig config;
    run_config_default(&config);
    config.optimizer = *optimizer;
    json_t *all = run_config_to_json(&config);
    json_t *only = json_incref(json_object_get(all, "optimizer"));
    json_decref(all);
    return only;
}

static json_t *round_input(const char *peer_id, const char *db, const RunConfig *config, uint64_t round,
                           const json_t *file) {
    json_t *batches = json_array();
    for (size_t b = 0; b < config->batches_per_round; b++) json_array_append_new(batches, json_integer((json_int_t)b));
    int evaluate = config->evaluate_every && ((round + 1) % config->evaluate_every == 0 || round + 1 == config->rounds);
    uint64_t membership_every = 10;
    fn_json_u64_or(file, "membership_every", membership_every, &membership_every, NULL);
    int membership = membership_every <= 1 || round % membership_every == 0;
    uint64_t snapshot_every = 0;
    fn_json_u64_or(file, "snapshot_every", 0, &snapshot_every, NULL);
    int snapshot = snapshot_every && ((round + 1) % snapshot_every == 0 || round + 1 == config->rounds);
    double gradient_timeout = 30, wait = config->exchange_wait_seconds;
    uint64_t concurrency = config->batches_per_round;
    fn_json_double_or(file, "gradient_timeout_seconds", gradient_timeout, &gradient_timeout, NULL);
    fn_json_u64_or(file, "max_concurrency", concurrency, &concurrency, NULL);
    char aggregator[256];
    run_format_aggregator(&config->aggregator, aggregator, sizeof(aggregator));
    return json_pack("{s:{s:s, s:s}, s:I, s:o, s:I, s:b, s:b, s:b, s:f, s:f, s:f, s:s, s:o}", "peer", "id", peer_id,
                     "db", db, "round", (json_int_t)round, "batches", batches, "max_concurrency", (json_int_t)concurrency,
                     "membership", membership, "evaluate", evaluate, "snapshot", snapshot, "gradient_timeout_seconds", gradient_timeout, "exchange_wait_seconds", wait,
                     "exchange_timeout_seconds", wait + 15.0, "aggregator", aggregator, "optimizer",
                     optimizer_json(&config->optimizer));
}

/* Condenses a round's output into its metrics entry. */
static json_t *round_metrics(uint64_t round, const FlowRunResult *result) {
    const json_t *output = result->output;
    json_t *metrics = json_pack("{s:I, s:f}", "round", (json_int_t)round, "round_ms", result->elapsed_ms);
    const json_t *average = json_object_get(output, "average");
    json_object_set(metrics, "loss", json_object_get(average, "loss") ? json_object_get(average, "loss") : json_null());
    json_object_set(metrics, "train_accuracy",
                    json_object_get(average, "accuracy") ? json_object_get(average, "accuracy") : json_null());
    const json_t *evaluation = json_object_get(output, "evaluation");
    if (evaluation) {
        json_object_set(metrics, "val_loss", json_object_get(evaluation, "loss"));
        json_object_set(metrics, "val_accuracy", json_object_get(evaluation, "accuracy"));
    }
    const json_t *exchange = json_object_get(output, "exchange");
    json_object_set_new(metrics, "received", json_integer((json_int_t)json_array_size(json_object_get(exchange, "received"))));
    json_object_set_new(metrics, "missing", json_deep_copy(json_object_get(exchange, "missing")));
    json_object_set_new(metrics, "rejected", json_deep_copy(json_object_get(exchange, "rejected")));
    json_t *bytes = json_object_get(exchange, "bytes");
    json_object_set_new(metrics, "bytes_in", json_integer(bytes ? json_integer_value(bytes) : 0));
    const json_t *published = json_object_get(output, "published");
    json_t *bytes_out = json_object_get(published, "bytes");
    json_object_set_new(metrics, "bytes_out", json_integer(bytes_out ? json_integer_value(bytes_out) : 0));
    const json_t *aggregate = json_object_get(output, "aggregate");
    json_object_set_new(metrics, "fallback", json_deep_copy(json_object_get(aggregate, "fallback")));
    json_object_set_new(metrics, "digest", json_deep_copy(json_object_get(json_object_get(output, "update"), "digest")));
    json_t *phases = json_object();
    for (size_t i = 0; i < result->state_count; i++) {
        const char *path = result->state_times[i].path;
        if (strchr(path, '/') || strchr(path, '[')) continue; /* top-level states only */
        json_object_set_new(phases, path, json_real(result->state_times[i].total_ms));
    }
    json_object_set_new(metrics, "phase_ms", phases);
    json_object_set_new(metrics, "retries", json_integer((json_int_t)result->counters.retries));
    json_object_set_new(metrics, "time_ms", json_integer(clock_wall_ms()));
    return metrics;
}

static int record_round(StoreConn *db, uint64_t round, json_t *metrics, SpirtError *error) {
    char *text = json_dumps(metrics, JSON_COMPACT);
    if (text == NULL) return spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory");
    char round_text[32];
    snprintf(round_text, sizeof(round_text), "%llu", (unsigned long long)round);
    const char *fields[] = {"round", "metrics"};
    const char *values[] = {round_text, text};
    int status = store_xadd(db, KEY_METRICS, 2, fields, values, NULL, 0, NULL, error);
    free(text);
    if (status == SPIRT_OK) status = store_set_int(db, KEY_ROUND, (long long)round, error);
    return status;
}

static int known_function(void *context, const char *name) {
    (void)context;
    return fn_find(name) != NULL;
}

/* The start barrier. Peers of a run start at slightly different moments, and
 * exchange takes a reachable peer without a heartbeat for one that stopped:
 * a peer that reached its first exchange before another had written its
 * first heartbeat would leave that one out of round 0 -- and, its inputs
 * differing from the others', end with another model. So before its first
 * round a fresh peer waits until every other member's heartbeat is there, at
 * most `timeout_seconds` (a member still absent then is left to exchange's
 * usual rules). A peer that resumes skips this: the others are running. */
static void wait_for_members(StoreConn *db, const char *peer_id, const StoreOptions *store, double timeout_seconds) {
    Membership *membership = malloc(sizeof(*membership));
    StoreConn **conns = calloc(RUN_MAX_PEERS, sizeof(StoreConn *));
    int *ready = calloc(RUN_MAX_PEERS, sizeof(int));
    if (membership == NULL || conns == NULL || ready == NULL || fn_members_read(db, membership, NULL) != SPIRT_OK) {
        free(membership);
        free(conns);
        free(ready);
        return;
    }
    StoreOptions options = *store;
    options.connect_timeout_ms = 500;
    options.read_timeout_ms = 1000;
    double deadline = clock_monotonic_ms() + timeout_seconds * 1000.0;
    size_t waiting;
    do {
        waiting = 0;
        for (size_t i = 0; i < membership->count; i++) {
            const Member *member = &membership->members[i];
            if (ready[i] || strcmp(member->id, peer_id) == 0 || member->status == MEMBER_DEAD) continue;
            if (conns[i] == NULL) conns[i] = store_connect_address(member->address, &options, NULL);
            int alive = 0;
            if (conns[i] && store_exists(conns[i], KEY_HEARTBEAT, &alive, NULL) != SPIRT_OK) {
                store_free(conns[i]);
                conns[i] = NULL;
            }
            ready[i] = alive;
            waiting += !alive;
        }
        if (waiting) clock_sleep_ms(20);
    } while (waiting && clock_monotonic_ms() < deadline);
    if (waiting) log_warn("%s: starting with %zu peer(s) not up after %.1f s", peer_id, waiting, timeout_seconds);
    for (size_t i = 0; i < membership->count; i++) store_free(conns[i]);
    free(membership);
    free(conns);
    free(ready);
}

int peer_run(const PeerOptions *options, SpirtError *error) {
    SpirtError local;
    if (error == NULL) error = &local;
    const json_t *file = options->config;
    const char *peer_id, *db_address, *identity_file, *workflow_file = NULL;
    int status;
    if ((status = fn_json_string(file, "peer_id", &peer_id, error)) != SPIRT_OK ||
        (status = fn_json_string(file, "db", &db_address, error)) != SPIRT_OK ||
        (status = fn_json_string(file, "identity", &identity_file, error)) != SPIRT_OK ||
        (status = fn_json_string(file, "workflow", &workflow_file, error)) != SPIRT_OK)
        return spirt_error_prefix(error, "%s", options->config_path ? options->config_path : "peer configuration");
    char identity_path[1024], workflow_path[1024];
    peer_resolve_path(options->config_path, identity_file, identity_path, sizeof(identity_path));
    peer_resolve_path(options->config_path, workflow_file, workflow_path, sizeof(workflow_path));
    int inline_functions = 0;
    fn_json_bool_or(file, "inline", 0, &inline_functions, NULL);

    /* Everything that can be wrong is checked before the first round. */
    Identity identity;
    if ((status = identity_load(&identity, identity_path, error)) != SPIRT_OK) return status;
    if (strcmp(identity.peer_id, peer_id) != 0) {
        identity_wipe(&identity);
        return spirt_error_set(error, SPIRT_ERR_AUTH, "%s holds %s's identity, not %s's", identity_path, identity.peer_id,
                               peer_id);
    }
    identity_wipe(&identity);
    FlowMachine *machine = flow_machine_load_file(workflow_path, error);
    if (machine == NULL) return error->code;
    if ((status = flow_machine_check_resources(machine, known_function, NULL, error)) != SPIRT_OK) {
        flow_machine_free(machine);
        return status;
    }
    StoreConn *db = store_connect_address(db_address, &options->store, error);
    if (db == NULL) {
        flow_machine_free(machine);
        return spirt_error_prefix(error, "%s's database", peer_id);
    }
    RunConfig config;
    char *config_text = NULL;
    size_t config_length = 0;
    json_t *config_json = NULL;
    if ((status = peer_prepare_database(db, file, options->config_path, error)) == SPIRT_OK &&
        (status = store_get(db, KEY_CONFIG, &config_text, &config_length, error)) == SPIRT_OK) {
        config_json = json_loadb(config_text, config_length, 0, NULL);
        status = run_config_from_json(config_json, &config, error);
    }
    free(config_text);
    json_decref(config_json);

    StreamInvoker *stream = NULL;
    InlineInvoker *inline_invoker = NULL;
    FlowEngine *engine = NULL;
    Heartbeat heartbeat = {0};
    if (status == SPIRT_OK) {
        FlowInvoker invoker;
        if (inline_functions) {
            FnContextOptions function_options = {.store = options->store, .identity_path = identity_path};
            inline_invoker = inline_invoker_create(&function_options, error);
            if (inline_invoker) invoker = inline_invoker_flow(inline_invoker);
        } else {
            stream = stream_invoker_create(db_address, &options->store, error);
            if (stream) invoker = stream_invoker_flow(stream);
        }
        if (stream == NULL && inline_invoker == NULL)
            status = error->code;
        else if ((engine = flow_engine_create(&invoker, NULL, error)) == NULL)
            status = error->code;
    }
    if (status == SPIRT_OK) status = heartbeat_start(&heartbeat, db_address, &options->store, config.heartbeat_ttl_ms, error);

    /* Resume after the last checkpoint: the model and optimizer state in
     * the database are that round's (later rounds' steps were not persisted
     * and are redone; functions are idempotent). */
    long long last = -1, completed = -1;
    if (status == SPIRT_OK && store_get_int(db, KEY_CHECKPOINT, &last, NULL) != SPIRT_OK) last = -1;
    if (status == SPIRT_OK && store_get_int(db, KEY_ROUND, &completed, NULL) == SPIRT_OK && completed < last)
        last = completed;
    if (status == SPIRT_OK) {
        store_set(db, KEY_STATUS, "running", 7, NULL);
        if (last >= 0)
            log_info("%s resumes after round %lld (its last checkpoint)", peer_id, last);
        else
            wait_for_members(db, peer_id, &options->store, config.exchange_wait_seconds);
    }
    double round_timeout = 600;
    fn_json_double_or(file, "round_timeout_seconds", round_timeout, &round_timeout, NULL);
    int attempts = 0;
    for (uint64_t round = (uint64_t)(last + 1); status == SPIRT_OK && round < config.rounds; round++) {
        if (options->stop && *options->stop) break;
        heartbeat_set_round(&heartbeat, round);
        json_t *input = round_input(peer_id, db_address, &config, round, file);
        char name[96];
        snprintf(name, sizeof(name), "%s-round-%llu", peer_id, (unsigned long long)round);
        FlowRunOptions run_options = {.name = name, .timeout_seconds = round_timeout};
        FlowRunResult result;
        status = flow_run(engine, machine, input, &run_options, &result, error);
        json_decref(input);
        if (status != SPIRT_OK) break;
        if (result.status != FLOW_RUN_SUCCEEDED) {
            log_warn("%s: round %llu %s: %s: %s", peer_id, (unsigned long long)round,
                     flow_run_status_name(result.status), result.error, result.cause);
            if (++attempts < 3) {
                round--; /* try the same round again: every step is idempotent */
            } else {
                status = spirt_error_set(error, SPIRT_ERR_INTERNAL, "round %llu failed %d times: %s: %s",
                                         (unsigned long long)round, attempts, result.error, result.cause);
            }
            flow_run_result_deinit(&result);
            continue;
        }
        attempts = 0;
        json_t *metrics = round_metrics(round, &result);
        status = record_round(db, round, metrics, error);
        json_decref(metrics);
        flow_run_result_deinit(&result);
    }
    if (status == SPIRT_OK && !(options->stop && *options->stop))
        store_set(db, KEY_STATUS, "done", 4, NULL);
    else if (status != SPIRT_OK) {
        char failed[SPIRT_ERROR_MESSAGE_MAX + 16];
        int length = snprintf(failed, sizeof(failed), "failed: %s", error->message);
        store_set(db, KEY_STATUS, failed, (size_t)length, NULL);
    }
    heartbeat_stop(&heartbeat);
    if (engine) {
        /* Calls abandoned after a time-out may still be running in the
         * invoker; give them a moment before freeing it. */
        if (flow_engine_wait_idle(engine, 5.0) == SPIRT_OK) {
            stream_invoker_free(stream);
            inline_invoker_free(inline_invoker);
        }
        flow_engine_free(engine);
    } else {
        stream_invoker_free(stream);
        inline_invoker_free(inline_invoker);
    }
    flow_machine_free(machine);
    store_free(db);
    return status;
}
