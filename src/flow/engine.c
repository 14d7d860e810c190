/* engine.c -- engines, invoker calls on their own threads, and waiting.
 *
 * Why a thread per call: C cannot interrupt a blocking call, and the engine
 * must not wait forever for an invoker that ignores its time-out. So the
 * invoker runs on a detached thread while the state's thread waits on the
 * engine's condition variable with a deadline. Whoever comes second -- the
 * waiter giving up, or the call returning -- frees the call's record; a
 * result arriving after the waiter gave up is dropped. The record holds its
 * own copies of everything the call reads, so an abandoned call never
 * touches memory of an execution that has moved on.
 *
 * One mutex and one condition variable per engine serve every wait: call
 * ends and scope stops broadcast on it. Waiters re-check their own condition,
 * so a broadcast meant for another execution costs a wake-up, nothing more;
 * that is cheap next to tasks that take milliseconds or more. The condition
 * variable runs on CLOCK_MONOTONIC, like every deadline here. */
#include "flow_internal.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "spirt/clock.h"
#include "spirt/log.h"

#define DEFAULT_GRACE_SECONDS 0.05
#define DEFAULT_MAP_THREADS 64

typedef struct CallRecord {
    FlowEngine *engine;
    int references; /* the waiter and the call thread; under engine->lock */
    int done;       /* the invoker returned and the waiter may read below */
    int abandoned;  /* the waiter left; drop the result */
    FlowCall call;
    char *resource, *execution_name, *state_path;
    int status;
    FlowCallResult result;
} CallRecord;

static void record_free(CallRecord *record) {
    json_decref(record->call.input);
    json_decref(record->result.output);
    free(record->resource);
    free(record->execution_name);
    free(record->state_path);
    free(record);
}

static void engine_destroy(FlowEngine *engine) {
    pthread_cond_destroy(&engine->changed);
    pthread_mutex_destroy(&engine->lock);
    free(engine);
}

static struct timespec to_timespec(uint64_t ns) {
    struct timespec when;
    when.tv_sec = (time_t)(ns / 1000000000ull);
    when.tv_nsec = (long)(ns % 1000000000ull);
    return when;
}

/* Waits on the engine's condition variable until `deadline_ns` at most.
 * Called with the lock held. */
static void wait_changed(FlowEngine *engine, uint64_t deadline_ns) {
    struct timespec when = to_timespec(deadline_ns);
    pthread_cond_timedwait(&engine->changed, &engine->lock, &when);
}

FlowEngine *flow_engine_create(const FlowInvoker *invoker, const FlowEngineOptions *options, SpirtError *error) {
    if (invoker == NULL || invoker->invoke == NULL) {
        spirt_error_set(error, SPIRT_ERR_INVALID, "flow engine: an invoker with an invoke function is required");
        return NULL;
    }
    FlowEngine *engine = calloc(1, sizeof(*engine));
    if (engine == NULL) {
        spirt_error_set(error, SPIRT_ERR_NOMEM, "flow engine: out of memory");
        return NULL;
    }
    engine->invoker = *invoker;
    engine->abandon_grace_seconds = DEFAULT_GRACE_SECONDS;
    engine->map_threads_max = DEFAULT_MAP_THREADS;
    if (options != NULL) {
        if (options->abandon_grace_seconds > 0) engine->abandon_grace_seconds = options->abandon_grace_seconds;
        if (options->map_threads_max > 0) engine->map_threads_max = options->map_threads_max;
    }
    pthread_condattr_t attributes;
    int failed = pthread_condattr_init(&attributes) != 0;
    failed = failed || pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC) != 0;
    failed = failed || pthread_cond_init(&engine->changed, &attributes) != 0;
    pthread_condattr_destroy(&attributes);
    if (failed || pthread_mutex_init(&engine->lock, NULL) != 0) {
        if (!failed) pthread_cond_destroy(&engine->changed);
        free(engine);
        spirt_error_set(error, SPIRT_ERR_INTERNAL, "flow engine: cannot set up its lock");
        return NULL;
    }
    return engine;
}

size_t flow_engine_running_calls(FlowEngine *engine) {
    if (engine == NULL) return 0;
    pthread_mutex_lock(&engine->lock);
    size_t running = engine->running_calls;
    pthread_mutex_unlock(&engine->lock);
    return running;
}

int flow_engine_wait_idle(FlowEngine *engine, double seconds) {
    if (engine == NULL) return SPIRT_OK;
    uint64_t deadline = clock_monotonic_ns() + (uint64_t)(seconds > 0 ? seconds * 1e9 : 0);
    pthread_mutex_lock(&engine->lock);
    while (engine->running_calls > 0 && clock_monotonic_ns() < deadline) wait_changed(engine, deadline);
    size_t running = engine->running_calls;
    pthread_mutex_unlock(&engine->lock);
    return running == 0 ? SPIRT_OK : SPIRT_ERR_TIMEOUT;
}

void flow_engine_free(FlowEngine *engine) {
    if (engine == NULL) return;
    pthread_mutex_lock(&engine->lock);
    size_t running = engine->running_calls;
    if (running > 0) engine->freed = 1; /* the last call thread destroys it */
    pthread_mutex_unlock(&engine->lock);
    if (running == 0) {
        engine_destroy(engine);
    } else {
        log_warn("flow engine freed with %zu abandoned call(s) still running; "
                 "its memory goes when they return", running);
    }
}

/* --- Scopes --- */

int flow_scope_stopped(const FlowScope *scope) {
    for (; scope != NULL; scope = scope->parent)
        if (atomic_load(&scope->stopped)) return 1;
    return 0;
}

void flow_scope_stop(FlowEngine *engine, FlowScope *scope) {
    /* Set before taking the lock, broadcast under it: a waiter either sees
     * the flag when it checks under the lock, or is already waiting and is
     * woken. No stop is lost. */
    atomic_store(&scope->stopped, 1);
    pthread_mutex_lock(&engine->lock);
    pthread_cond_broadcast(&engine->changed);
    pthread_mutex_unlock(&engine->lock);
}

int flow_engine_sleep_until(FlowEngine *engine, const FlowScope *scope, uint64_t deadline_ns) {
    pthread_mutex_lock(&engine->lock);
    int stopped;
    while (!(stopped = flow_scope_stopped(scope)) && clock_monotonic_ns() < deadline_ns)
        wait_changed(engine, deadline_ns);
    pthread_mutex_unlock(&engine->lock);
    return !stopped;
}

/* --- Calls --- */

static void *call_thread(void *argument) {
    CallRecord *record = argument;
    FlowEngine *engine = record->engine;
    FlowCallResult result;
    memset(&result, 0, sizeof(result));
    int status = engine->invoker.invoke(engine->invoker.context, &record->call, &result);

    pthread_mutex_lock(&engine->lock);
    if (record->abandoned) {
        json_decref(result.output); /* late: nobody wants it any more */
    } else {
        record->status = status;
        record->result = result;
        record->done = 1;
    }
    int free_record = --record->references == 0;
    engine->running_calls--;
    int destroy_engine = engine->freed && engine->running_calls == 0;
    pthread_cond_broadcast(&engine->changed);
    pthread_mutex_unlock(&engine->lock);

    if (free_record) record_free(record);
    if (destroy_engine) engine_destroy(engine);
    return NULL;
}

FlowCallEnd flow_engine_call(FlowEngine *engine, const FlowScope *scope, const FlowCall *call,
                             FlowCallOutcome *outcome) {
    memset(outcome, 0, sizeof(*outcome));
    CallRecord *record = calloc(1, sizeof(*record));
    if (record == NULL) {
        json_decref(call->input);
        return FLOW_CALL_NOT_STARTED;
    }
    record->engine = engine;
    record->references = 2;
    record->call = *call;
    record->resource = strdup(call->resource);
    record->execution_name = strdup(call->execution_name ? call->execution_name : "");
    record->state_path = strdup(call->state_path ? call->state_path : "");
    record->call.resource = record->resource;
    record->call.execution_name = record->execution_name;
    record->call.state_path = record->state_path;
    if (record->resource == NULL || record->execution_name == NULL || record->state_path == NULL) {
        record_free(record); /* frees call->input, now the record's */
        return FLOW_CALL_NOT_STARTED;
    }

    pthread_mutex_lock(&engine->lock);
    engine->running_calls++;
    pthread_mutex_unlock(&engine->lock);
    pthread_attr_t attributes;
    pthread_t thread;
    int started = pthread_attr_init(&attributes) == 0;
    started = started && pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED) == 0;
    started = started && pthread_create(&thread, &attributes, call_thread, record) == 0;
    pthread_attr_destroy(&attributes);
    if (!started) {
        pthread_mutex_lock(&engine->lock);
        engine->running_calls--;
        pthread_mutex_unlock(&engine->lock);
        record_free(record);
        return FLOW_CALL_NOT_STARTED;
    }

    uint64_t abandon_at = call->deadline_ns + (uint64_t)(engine->abandon_grace_seconds * 1e9);
    FlowCallEnd end = FLOW_CALL_RETURNED;
    pthread_mutex_lock(&engine->lock);
    while (!record->done) {
        if (flow_scope_stopped(scope)) {
            end = FLOW_CALL_STOPPED;
            break;
        }
        if (clock_monotonic_ns() >= abandon_at) {
            end = FLOW_CALL_DEADLINE;
            break;
        }
        wait_changed(engine, abandon_at);
    }
    if (record->done) {
        end = FLOW_CALL_RETURNED;
        outcome->status = record->status;
        outcome->output = record->result.output;
        record->result.output = NULL;
        memcpy(outcome->error, record->result.error, sizeof(outcome->error));
        memcpy(outcome->cause, record->result.cause, sizeof(outcome->cause));
        outcome->error[sizeof(outcome->error) - 1] = '\0';
        outcome->cause[sizeof(outcome->cause) - 1] = '\0';
    } else {
        record->abandoned = 1;
    }
    int free_record = --record->references == 0;
    pthread_mutex_unlock(&engine->lock);
    if (free_record) record_free(record);
    return end;
}
