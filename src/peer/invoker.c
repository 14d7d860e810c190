/* invoker.c -- how the workflow engine runs a task: on a warm worker through
 * the database's invocation stream (StreamInvoker), or in this process
 * (InlineInvoker). Both are FlowInvokers (include/spirt/flow.h).
 *
 * The stream invoker adds the call to spirt:invocations and waits (BLPOP)
 * for spirt:result:{id}, each waiting call on a connection of its own from
 * a small pool: a blocked connection can do nothing else. If no result comes
 * by the call's deadline the call fails with States.Timeout and the engine's
 * Retry decides; a worker that picks the entry up later sees its deadline
 * passed and drops it. */
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

enum { POOL_MAX = 64 };

struct StreamInvoker {
    char address[256];
    StoreOptions defaults;
    pthread_mutex_t lock;
    StoreConn *idle[POOL_MAX];
    size_t idle_count;
    uint64_t next_sequence;
    uint64_t instance; /* random per invoker: ids stay unique across restarts */
};

StreamInvoker *stream_invoker_create(const char *address, const StoreOptions *defaults, SpirtError *error) {
    StreamInvoker *invoker = calloc(1, sizeof(*invoker));
    if (invoker == NULL) {
        spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory for an invoker");
        return NULL;
    }
    snprintf(invoker->address, sizeof(invoker->address), "%s", address);
    if (defaults) invoker->defaults = *defaults;
    /* BLPOP waits as long as the call's time-out; the read time-out must
     * not cut it short. The deadline still bounds every call. */
    invoker->defaults.read_timeout_ms = -1;
    pthread_mutex_init(&invoker->lock, NULL);
    SpirtRng rng;
    rng_init(&rng, (uint64_t)clock_monotonic_ns() ^ ((uint64_t)getpid() << 32));
    invoker->instance = rng_next_u64(&rng);
    /* The group must exist before the first XADD, or workers that create it
     * at "$" would never see entries added before they started. */
    StoreConn *conn = store_connect_address(address, &invoker->defaults, error);
    if (conn == NULL || store_xgroup_create(conn, KEY_INVOCATIONS, KEY_INVOCATION_GROUP, "0", error) != SPIRT_OK) {
        store_free(conn);
        pthread_mutex_destroy(&invoker->lock);
        free(invoker);
        return NULL;
    }
    invoker->idle[invoker->idle_count++] = conn;
    return invoker;
}

void stream_invoker_free(StreamInvoker *invoker) {
    if (invoker == NULL) return;
    for (size_t i = 0; i < invoker->idle_count; i++) store_free(invoker->idle[i]);
    pthread_mutex_destroy(&invoker->lock);
    free(invoker);
}

static StoreConn *take_connection(StreamInvoker *invoker, SpirtError *error) {
    pthread_mutex_lock(&invoker->lock);
    StoreConn *conn = invoker->idle_count ? invoker->idle[--invoker->idle_count] : NULL;
    pthread_mutex_unlock(&invoker->lock);
    if (conn && store_conn_status(conn) != SPIRT_OK && store_reconnect(conn, error) != SPIRT_OK) {
        store_free(conn);
        return NULL;
    }
    return conn ? conn : store_connect_address(invoker->address, &invoker->defaults, error);
}

static void return_connection(StreamInvoker *invoker, StoreConn *conn) {
    if (store_conn_status(conn) != SPIRT_OK) {
        store_free(conn);
        return;
    }
    pthread_mutex_lock(&invoker->lock);
    if (invoker->idle_count < POOL_MAX) {
        invoker->idle[invoker->idle_count++] = conn;
        conn = NULL;
    }
    pthread_mutex_unlock(&invoker->lock);
    store_free(conn);
}

/* Turns a worker's result document into the engine's result. */
static int read_result(const char *text, size_t length, const FlowCall *call, FlowCallResult *result) {
    json_error_t parse_error;
    json_t *document = json_loadb(text, length, 0, &parse_error);
    if (!json_is_object(document)) {
        json_decref(document);
        return flow_call_fail(result, "spirt.Protocol", "%s: a worker returned a malformed result", call->resource);
    }
    int status = SPIRT_OK;
    if (json_is_true(json_object_get(document, "ok"))) {
        json_t *output = json_object_get(document, "output");
        result->output = output ? json_incref(output) : json_null();
    } else {
        const char *name = json_string_value(json_object_get(document, "error"));
        const char *cause = json_string_value(json_object_get(document, "cause"));
        status = flow_call_fail(result, name && *name ? name : "spirt.Internal", "%s", cause ? cause : "");
    }
    json_decref(document);
    return status;
}

static int stream_invoke(void *context, const FlowCall *call, FlowCallResult *result) {
    StreamInvoker *invoker = context;
    SpirtError error;
    StoreConn *conn = take_connection(invoker, &error);
    if (conn == NULL) return flow_call_fail(result, fn_error_name(error.code), "%s", error.message);

    pthread_mutex_lock(&invoker->lock);
    uint64_t sequence = invoker->next_sequence++;
    pthread_mutex_unlock(&invoker->lock);
    char id[64];
    snprintf(id, sizeof(id), "%016llx-%llu", (unsigned long long)invoker->instance, (unsigned long long)sequence);
    char *event = json_dumps(call->input, JSON_COMPACT);
    double remaining_ms = (double)(int64_t)(call->deadline_ns - clock_monotonic_ns()) / 1e6;
    char deadline[32];
    snprintf(deadline, sizeof(deadline), "%lld", (long long)(clock_wall_ms() + (int64_t)remaining_ms));
    const char *fields[] = {"id", "fn", "event", "deadline"};
    const char *values[] = {id, call->resource, event ? event : "{}", deadline};
    int status = event ? store_xadd(conn, KEY_INVOCATIONS, 4, fields, values, NULL, 10000, NULL, &error)
                       : spirt_error_set(&error, SPIRT_ERR_NOMEM, "out of memory");
    free(event);
    if (status != SPIRT_OK) {
        return_connection(invoker, conn);
        return flow_call_fail(result, fn_error_name(status), "queueing %s: %s", call->resource, error.message);
    }

    char key[KEY_MAX];
    key_result(key, id);
    char timeout[32];
    double wait_seconds = remaining_ms / 1000.0;
    if (wait_seconds < 0.01) wait_seconds = 0.01;
    snprintf(timeout, sizeof(timeout), "%.3f", wait_seconds);
    const char *argv[] = {"BLPOP", key, timeout};
    StoreReply *reply = NULL;
    status = store_command_argv(conn, 3, argv, NULL, &reply, &error);
    if (status != SPIRT_OK) {
        return_connection(invoker, conn);
        return flow_call_fail(result, fn_error_name(status), "waiting for %s: %s", call->resource, error.message);
    }
    if (reply->type != STORE_REPLY_ARRAY || reply->elements != 2) {
        /* BLPOP timed out: nil. */
        store_reply_free(reply);
        return_connection(invoker, conn);
        return flow_call_fail(result, FLOW_ERROR_TIMEOUT, "%s: no result within %.1f s", call->resource,
                              call->timeout_seconds);
    }
    status = read_result(reply->element[1]->str, reply->element[1]->len, call, result);
    store_reply_free(reply);
    /* The result list is consumed; nothing else to clean (it had a TTL). */
    return_connection(invoker, conn);
    return status;
}

FlowInvoker stream_invoker_flow(StreamInvoker *invoker) {
    FlowInvoker flow = {stream_invoke, invoker};
    return flow;
}

/* --- In-process invocations --- */

struct InlineInvoker {
    FnContextOptions options;
    char *identity_path;
    pthread_mutex_t lock;
    FnContext *idle[POOL_MAX];
    size_t idle_count;
};

InlineInvoker *inline_invoker_create(const FnContextOptions *options, SpirtError *error) {
    InlineInvoker *invoker = calloc(1, sizeof(*invoker));
    if (invoker == NULL) {
        spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory for an invoker");
        return NULL;
    }
    if (options) invoker->options = *options;
    if (options && options->identity_path) {
        invoker->identity_path = strdup(options->identity_path);
        invoker->options.identity_path = invoker->identity_path;
    }
    pthread_mutex_init(&invoker->lock, NULL);
    return invoker;
}

void inline_invoker_free(InlineInvoker *invoker) {
    if (invoker == NULL) return;
    for (size_t i = 0; i < invoker->idle_count; i++) fn_context_free(invoker->idle[i]);
    pthread_mutex_destroy(&invoker->lock);
    free(invoker->identity_path);
    free(invoker);
}

/* Each concurrent call gets a context of its own (contexts are not
 * thread-safe); finished ones are kept warm for the next calls. */
static int inline_invoke(void *context, const FlowCall *call, FlowCallResult *result) {
    InlineInvoker *invoker = context;
    SpirtError error;
    pthread_mutex_lock(&invoker->lock);
    FnContext *function_context = invoker->idle_count ? invoker->idle[--invoker->idle_count] : NULL;
    pthread_mutex_unlock(&invoker->lock);
    if (function_context == NULL) function_context = fn_context_create(&invoker->options, &error);
    if (function_context == NULL) return flow_call_fail(result, fn_error_name(error.code), "%s", error.message);
    json_t *output = NULL;
    int status = fn_invoke(function_context, call->resource, call->input, &output, &error);
    pthread_mutex_lock(&invoker->lock);
    if (invoker->idle_count < POOL_MAX) {
        invoker->idle[invoker->idle_count++] = function_context;
        function_context = NULL;
    }
    pthread_mutex_unlock(&invoker->lock);
    fn_context_free(function_context);
    if (status != SPIRT_OK) return flow_call_fail(result, fn_error_name(status), "%s", error.message);
    result->output = output;
    return SPIRT_OK;
}

FlowInvoker inline_invoker_flow(InlineInvoker *invoker) {
    FlowInvoker flow = {inline_invoke, invoker};
    return flow;
}
