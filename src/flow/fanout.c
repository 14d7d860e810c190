/* fanout.c -- Map and Parallel: one sub-machine per item or branch, on
 * several threads, results gathered in order.
 *
 * A fan-out has its own scope. Workers take the next index from an atomic
 * counter, so at most `threads` sub-machines -- hence at most `threads`
 * invoker calls from this state -- run at once: that is how MaxConcurrency
 * is honoured. The first real failure is kept and the scope is stopped, so
 * the other workers give up at their next wait or state boundary (their
 * in-flight calls are abandoned, not waited for); the state then fails with
 * that error, which the Map's or Parallel's own Retry/Catch may handle.
 * The calling thread is one of the workers; if no extra thread can be
 * started, it does all the work alone. */
#include "flow_internal.h"

#include <stdlib.h>
#include <string.h>

#include "spirt/clock.h"

typedef struct Fanout {
    const FlowFrame *parent;
    const FlowState *state;
    FlowScope scope;
    json_t *input;             /* Map: the effective input (for ItemSelector); Parallel: the branch input */
    json_t *items;             /* Map: the items; NULL for Parallel */
    size_t count;              /* items or branches */
    int64_t entered_wall_ms;   /* for $$.State.EnteredTime in ItemSelector */
    atomic_size_t next_index;
    json_t **results;          /* [count], each set by the worker that ran it */
    pthread_mutex_t lock;      /* guards failed / failure */
    int failed;
    FlowFailure failure;
} Fanout;

static void record_failure(Fanout *fanout, const FlowFailure *failure) {
    /* A CANCELLED failure is the echo of a stop, not a cause: the real
     * failure was recorded by whoever stopped the scope (or belongs to a
     * scope above this one, which will report it). */
    if (failure->kind != FLOW_FAILURE_CANCELLED) {
        pthread_mutex_lock(&fanout->lock);
        if (!fanout->failed) {
            fanout->failure = *failure;
            fanout->failed = 1;
        }
        pthread_mutex_unlock(&fanout->lock);
    }
    flow_scope_stop(fanout->parent->execution->engine, &fanout->scope);
}

/* The input of Map item `index`: ItemSelector over the effective input with
 * $$.Map.Item set, or a copy of the item. Either way a document of the
 * worker's own: the items and the Map's input are shared by all workers and
 * only read here (template expansion copies what it takes). */
static json_t *item_input(Fanout *fanout, size_t index, const FlowFrame *frame, FlowFailure *failure) {
    json_t *item = json_array_get(fanout->items, index);
    const FlowState *state = fanout->state;
    if (state->parameters == NULL) {
        json_t *copy = json_deep_copy(item);
        if (copy == NULL) flow_fail(failure, FLOW_FAILURE_RUNTIME, FLOW_ERROR_RUNTIME, "out of memory");
        return copy;
    }
    json_t *context = flow_context_object(frame, state, fanout->entered_wall_ms, 0, (long)index, item);
    if (context == NULL) {
        flow_fail(failure, FLOW_FAILURE_RUNTIME, FLOW_ERROR_RUNTIME, "out of memory");
        return NULL;
    }
    FlowRoots roots = {.input = fanout->input, .context = context};
    json_t *input = flow_template_expand(state->parameters, &roots, "ItemSelector", failure);
    json_decref(context);
    return input;
}

static void *fanout_worker(void *argument) {
    Fanout *fanout = argument;
    const FlowState *state = fanout->state;
    for (;;) {
        if (flow_scope_stopped(&fanout->scope)) break;
        size_t index = atomic_fetch_add(&fanout->next_index, 1);
        if (index >= fanout->count) break;
        int is_map = fanout->items != NULL;
        FlowFrame frame = {.execution = fanout->parent->execution,
                           .scope = &fanout->scope,
                           .map_index = is_map ? (long)index : fanout->parent->map_index};
        FlowFailure failure;
        memset(&failure, 0, sizeof(failure));
        json_t *input = is_map ? item_input(fanout, index, fanout->parent, &failure) : json_deep_copy(fanout->input);
        if (input == NULL && !is_map) flow_fail(&failure, FLOW_FAILURE_RUNTIME, FLOW_ERROR_RUNTIME, "out of memory");
        json_t *output = NULL;
        int status = input ? flow_run_machine(&frame, &state->branches[is_map ? 0 : index], input, &output, &failure)
                           : SPIRT_ERR_INVALID;
        json_decref(input);
        if (status != SPIRT_OK) {
            record_failure(fanout, &failure);
            break;
        }
        fanout->results[index] = output;
    }
    return NULL;
}

static int fanout_run(const FlowFrame *frame, const FlowState *state, json_t *input, json_t *items, size_t count,
                      size_t threads, json_t **result, FlowFailure *failure) {
    Fanout fanout;
    memset(&fanout, 0, sizeof(fanout));
    fanout.parent = frame;
    fanout.state = state;
    fanout.scope.parent = frame->scope;
    fanout.input = input;
    fanout.items = items;
    fanout.count = count;
    fanout.entered_wall_ms = clock_wall_ms();
    atomic_init(&fanout.next_index, 0);
    atomic_init(&fanout.scope.stopped, 0);
    fanout.results = calloc(count ? count : 1, sizeof(*fanout.results));
    pthread_t *workers = calloc(threads ? threads : 1, sizeof(*workers));
    if (fanout.results == NULL || workers == NULL) {
        free(fanout.results);
        free(workers);
        return flow_fail(failure, FLOW_FAILURE_RUNTIME, FLOW_ERROR_RUNTIME, "out of memory");
    }
    pthread_mutex_init(&fanout.lock, NULL);

    size_t started = 0;
    while (started + 1 < threads && pthread_create(&workers[started], NULL, fanout_worker, &fanout) == 0) started++;
    fanout_worker(&fanout);
    for (size_t t = 0; t < started; t++) pthread_join(workers[t], NULL);

    int status = SPIRT_OK;
    if (fanout.failed) {
        *failure = fanout.failure;
        status = SPIRT_ERR_INVALID;
    } else {
        for (size_t i = 0; i < count && status == SPIRT_OK; i++)
            if (fanout.results[i] == NULL) status = flow_frame_stopped(frame, failure); /* stopped from above */
    }
    if (status == SPIRT_OK) {
        json_t *array = json_array();
        for (size_t i = 0; array != NULL && i < count; i++) {
            if (json_array_append(array, fanout.results[i]) != 0) {
                json_decref(array);
                array = NULL;
            }
        }
        if (array == NULL) status = flow_fail(failure, FLOW_FAILURE_RUNTIME, FLOW_ERROR_RUNTIME, "out of memory");
        *result = array;
    }
    for (size_t i = 0; i < count; i++) json_decref(fanout.results[i]);
    free(fanout.results);
    free(workers);
    pthread_mutex_destroy(&fanout.lock);
    return status;
}

int flow_run_map(const FlowFrame *frame, const FlowState *state, json_t *effective_input, json_t **result,
                 FlowFailure *failure) {
    FlowExecution *execution = frame->execution;
    json_t *context = NULL;
    if (state->uses_context) {
        context = flow_context_object(frame, state, clock_wall_ms(), 0, -1, NULL);
        if (context == NULL) return flow_fail(failure, FLOW_FAILURE_RUNTIME, FLOW_ERROR_RUNTIME, "out of memory");
    }
    FlowRoots roots = {.input = effective_input, .context = context};
    json_t *items = state->items_path ? flow_roots_get(&roots, state->items_path) : effective_input;
    const char *items_text = state->items_path ? state->items_path->text : "$";
    int status = SPIRT_OK;
    if (!json_is_array(items))
        status = flow_fail(failure, FLOW_FAILURE_RUNTIME, FLOW_ERROR_RUNTIME, "ItemsPath '%s' %s", items_text,
                           items ? "is not an array" : "found nothing in the input");
    long concurrency = state->max_concurrency;
    if (status == SPIRT_OK && state->max_concurrency_path != NULL) {
        json_t *node = flow_roots_get(&roots, state->max_concurrency_path);
        if (!json_is_integer(node) || json_integer_value(node) < 0)
            status = flow_fail(failure, FLOW_FAILURE_RUNTIME, FLOW_ERROR_RUNTIME,
                               "MaxConcurrencyPath '%s' must name a non-negative integer",
                               state->max_concurrency_path->text);
        else
            concurrency = json_integer_value(node) > 1000000 ? 1000000 : (long)json_integer_value(node);
    }
    if (status == SPIRT_OK) {
        json_incref(items); /* the context object may hold the only other reference */
        size_t count = json_array_size(items);
        size_t threads = concurrency == 0 ? execution->engine->map_threads_max : (size_t)concurrency;
        if (threads > count) threads = count;
        if (threads == 0) threads = 1;
        status = fanout_run(frame, state, effective_input, items, count, threads, result, failure);
        json_decref(items);
    }
    json_decref(context);
    return status;
}

int flow_run_parallel(const FlowFrame *frame, const FlowState *state, json_t *effective_input, json_t **result,
                      FlowFailure *failure) {
    return fanout_run(frame, state, effective_input, NULL, state->branch_count, state->branch_count, result, failure);
}
