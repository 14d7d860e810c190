/* run.c -- executions: walking a machine from StartAt to its end.
 *
 * Each state turns its raw input into an output and names the next state.
 * The data path follows ASL:
 *   effective = InputPath(raw)
 *   result    = the state's work on Parameters(effective)   (Task, Parallel)
 *               Result / Parameters(effective) / effective (Pass)
 *   result    = ResultSelector(result)
 *   output    = OutputPath(ResultPath(raw, result))
 * Task, Map and Parallel retry their work per Retry; an error that is left
 * goes to the first matching Catch, whose ResultPath places {"Error",
 * "Cause"} into the raw input for the catcher's Next state.
 *
 * Threads and documents: a document belongs to one thread at a time. What
 * crosses to another thread is deep-copied first (a Map item's input, a
 * branch's input, a call's input, the context object's Execution.Input),
 * and what several threads can see at once -- the machine's literals, a
 * Map's input while its items run -- is only read, never referenced: even
 * json_incref on a shared node would be a data race (jansson reads the
 * count before its atomic increment). Within a thread, ResultPath copies
 * the containers on its way (see flow_path_set) instead of changing them.
 *
 * Stopping: every wait (calls, Wait states, back-offs) ends at the
 * execution's deadline or when its scope stops, and every state boundary
 * checks both, so an execution time-out ends all branches promptly. */
#include "flow_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "spirt/clock.h"

#define SECONDS_MAX 99999999.0
#define CANCELLED_ERROR "States.BranchFailed"

/* --- Execution-wide helpers --- */

void flow_count(FlowExecution *execution, uint64_t *counter, uint64_t amount) {
    pthread_mutex_lock(&execution->lock);
    *counter += amount;
    pthread_mutex_unlock(&execution->lock);
}

int flow_execution_timeout(FlowExecution *execution, FlowFailure *failure) {
    atomic_store(&execution->timed_out, 1);
    flow_scope_stop(execution->engine, &execution->root);
    return flow_fail(failure, FLOW_FAILURE_EXECUTION_TIMEOUT, FLOW_ERROR_TIMEOUT,
                     "execution '%s' did not finish within %.3f s", execution->name,
                     (double)(execution->deadline_ns - execution->start_ns) / 1e9);
}

int flow_frame_stopped(const FlowFrame *frame, FlowFailure *failure) {
    FlowExecution *execution = frame->execution;
    if (atomic_load(&execution->timed_out)) return flow_execution_timeout(execution, failure);
    if (execution->deadline_ns && clock_monotonic_ns() >= execution->deadline_ns)
        return flow_execution_timeout(execution, failure);
    return flow_fail(failure, FLOW_FAILURE_CANCELLED, CANCELLED_ERROR,
                     "stopped: another Map iteration or Parallel branch failed");
}

int flow_frame_check(const FlowFrame *frame, FlowFailure *failure) {
    FlowExecution *execution = frame->execution;
    if (execution->deadline_ns && clock_monotonic_ns() >= execution->deadline_ns)
        return flow_execution_timeout(execution, failure);
    if (flow_scope_stopped(frame->scope)) return flow_frame_stopped(frame, failure);
    return SPIRT_OK;
}

static void format_time(int64_t wall_ms, char *buffer, size_t size) {
    time_t seconds = (time_t)(wall_ms / 1000);
    struct tm utc;
    gmtime_r(&seconds, &utc);
    char date[32];
    strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &utc);
    snprintf(buffer, size, "%s.%03dZ", date, (int)(wall_ms % 1000));
}

json_t *flow_context_object(const FlowFrame *frame, const FlowState *state, int64_t entered_wall_ms,
                            unsigned retry_count, long item_index, json_t *item) {
    const FlowExecution *execution = frame->execution;
    char entered[40];
    format_time(entered_wall_ms, entered, sizeof(entered));
    /* Execution.Input is copied: Map threads build context objects at once. */
    json_t *context = json_pack("{s:{s:s,s:s,s:o,s:s},s:{s:s,s:s,s:i}}", "Execution", "Id", execution->name,
                                "Name", execution->name, "Input", json_deep_copy(execution->input), "StartTime",
                                execution->start_time, "State", "Name", state->name, "EnteredTime", entered,
                                "RetryCount", (int)retry_count);
    if (context != NULL && item != NULL) {
        json_t *map = json_pack("{s:{s:I,s:o}}", "Item", "Index", (json_int_t)item_index, "Value", json_deep_copy(item));
        if (map == NULL || json_object_set_new(context, "Map", map) != 0) {
            json_decref(context);
            return NULL;
        }
    }
    return context;
}

/* --- Events and statistics --- */

static void emit(const FlowFrame *frame, const FlowState *state, FlowEvent *event) {
    FlowExecution *execution = frame->execution;
    if (execution->on_event == NULL) return;
    event->execution_name = execution->name;
    event->state_name = state->name;
    event->state_path = state->path;
    event->state_type = flow_state_type_name(state->type);
    event->map_index = frame->map_index;
    pthread_mutex_lock(&execution->event_lock);
    execution->on_event(execution->event_context, event);
    pthread_mutex_unlock(&execution->event_lock);
}

/* --- One visit of a state --- */

typedef struct Visit {
    const FlowFrame *frame;
    const FlowState *state;
    json_t *raw;        /* the state's input, borrowed */
    json_t *effective;  /* after InputPath, owned */
    uint64_t entered_ns;
    int64_t entered_wall_ms;
    unsigned attempt;   /* retries so far */
} Visit;

/* The roots for paths of this visit: the effective input and, if the state
 * uses $$, a fresh context object (the caller releases roots->context). */
static int visit_roots(const Visit *visit, json_t *input, FlowRoots *roots, FlowFailure *failure) {
    roots->input = input;
    roots->context = NULL;
    if (!visit->state->uses_context) return SPIRT_OK;
    roots->context = flow_context_object(visit->frame, visit->state, visit->entered_wall_ms, visit->attempt, -1, NULL);
    if (roots->context == NULL)
        return flow_fail(failure, FLOW_FAILURE_RUNTIME, FLOW_ERROR_RUNTIME, "out of memory");
    return SPIRT_OK;
}

static json_t *select_path(const FlowIoPath *io, json_t *document, const char *field, FlowFailure *failure) {
    switch (io->kind) {
    case FLOW_IO_DEFAULT: return json_incref(document);
    case FLOW_IO_NULL: {
        json_t *empty = json_object();
        if (empty == NULL) flow_fail(failure, FLOW_FAILURE_RUNTIME, FLOW_ERROR_RUNTIME, "out of memory");
        return empty;
    }
    case FLOW_IO_PATH: break;
    }
    json_t *found = flow_path_get(&io->path, document);
    if (found == NULL) {
        flow_fail(failure, FLOW_FAILURE_RUNTIME, FLOW_ERROR_RUNTIME, "%s '%s' found nothing in the input", field,
                  io->path.text);
        return NULL;
    }
    return json_incref(found);
}

static json_t *place_result(const FlowIoPath *io, json_t *raw, json_t *result, FlowFailure *failure) {
    if (io->kind == FLOW_IO_DEFAULT) return json_incref(result);
    if (io->kind == FLOW_IO_NULL) return json_incref(raw);
    const char *why = NULL;
    json_t *placed = flow_path_set(raw, &io->path, result, &why);
    if (placed == NULL)
        flow_fail(failure, FLOW_FAILURE_ERROR, FLOW_ERROR_RESULT_PATH_MATCH_FAILURE, "ResultPath '%s': %s",
                  io->path.text, why ? why : "cannot be applied");
    return placed;
}

/* A number of seconds read through a path: SecondsPath, TimeoutSecondsPath. */
static int seconds_from_path(const FlowPath *path, const FlowRoots *roots, const char *field, int allow_zero,
                             double *seconds, FlowFailure *failure) {
    json_t *node = flow_roots_get(roots, path);
    double value = json_number_value(node);
    if (node == NULL || !json_is_number(node) || !isfinite(value) || value < 0 || (!allow_zero && value == 0) ||
        value > SECONDS_MAX)
        return flow_fail(failure, FLOW_FAILURE_RUNTIME, FLOW_ERROR_RUNTIME,
                         "%s '%s' must name a %s number of seconds", field, path->text,
                         allow_zero ? "non-negative" : "positive");
    *seconds = value;
    return SPIRT_OK;
}

/* Sleeps `seconds` unless the scope stops or the execution's deadline comes
 * first (both are failures). */
static int visit_sleep(const Visit *visit, double seconds, FlowFailure *failure) {
    const FlowFrame *frame = visit->frame;
    FlowExecution *execution = frame->execution;
    uint64_t target = clock_monotonic_ns() + (uint64_t)(seconds * 1e9);
    int past_deadline = execution->deadline_ns && target > execution->deadline_ns;
    if (past_deadline) target = execution->deadline_ns;
    if (!flow_engine_sleep_until(execution->engine, frame->scope, target)) return flow_frame_stopped(frame, failure);
    if (past_deadline) return flow_execution_timeout(execution, failure);
    return SPIRT_OK;
}

/* --- Task --- */

static int task_attempt(Visit *visit, json_t **result, FlowFailure *failure) {
    const FlowState *state = visit->state;
    const FlowFrame *frame = visit->frame;
    FlowExecution *execution = frame->execution;
    FlowRoots roots;
    int status = visit_roots(visit, visit->effective, &roots, failure);
    if (status != SPIRT_OK) return status;
    json_t *parameters = state->parameters ? flow_template_expand(state->parameters, &roots, "Parameters", failure)
                                           : json_incref(visit->effective);
    double timeout = state->timeout_seconds;
    if (parameters != NULL && state->timeout_path != NULL &&
        seconds_from_path(state->timeout_path, &roots, "TimeoutSecondsPath", 0, &timeout, failure) != SPIRT_OK) {
        json_decref(parameters);
        parameters = NULL;
    }
    json_decref(roots.context);
    if (parameters == NULL) return SPIRT_ERR_INVALID;

    uint64_t now = clock_monotonic_ns();
    uint64_t deadline = now + (uint64_t)(timeout * 1e9);
    int execution_bound = execution->deadline_ns && execution->deadline_ns < deadline;
    if (execution_bound) deadline = execution->deadline_ns;
    if (deadline <= now) {
        json_decref(parameters);
        return flow_execution_timeout(execution, failure);
    }
    FlowCall call = {
        .resource = state->resource,
        .input = json_deep_copy(parameters),
        .timeout_seconds = (double)(deadline - now) / 1e9,
        .deadline_ns = deadline,
        .execution_name = execution->name,
        .state_path = state->path,
        .attempt = visit->attempt,
        .map_index = frame->map_index,
    };
    json_decref(parameters);
    if (call.input == NULL) return flow_fail(failure, FLOW_FAILURE_RUNTIME, FLOW_ERROR_RUNTIME, "out of memory");
    flow_count(execution, &execution->counters.invocations, 1);

    FlowCallOutcome outcome;
    FlowCallEnd end = flow_engine_call(execution->engine, frame->scope, &call, &outcome);
    FlowCounters *counters = &execution->counters;
    switch (end) {
    case FLOW_CALL_RETURNED: {
        if (outcome.status == SPIRT_OK) {
            *result = outcome.output ? outcome.output : json_null();
            return SPIRT_OK;
        }
        json_decref(outcome.output);
        const char *name = outcome.error[0]                        ? outcome.error
                           : outcome.status == SPIRT_ERR_TIMEOUT ? FLOW_ERROR_TIMEOUT
                                                                 : FLOW_ERROR_TASK_FAILED;
        int is_timeout = strcmp(name, FLOW_ERROR_TIMEOUT) == 0;
        flow_count(execution, &counters->task_errors, 1);
        if (is_timeout) flow_count(execution, &counters->timeouts, 1);
        if (is_timeout && execution_bound) return flow_execution_timeout(execution, failure);
        FlowFailureKind kind = strcmp(name, FLOW_ERROR_RUNTIME) == 0 ? FLOW_FAILURE_RUNTIME : FLOW_FAILURE_ERROR;
        return flow_fail(failure, kind, name, "%s", outcome.cause);
    }
    case FLOW_CALL_DEADLINE:
        flow_count(execution, &counters->task_errors, 1);
        flow_count(execution, &counters->timeouts, 1);
        flow_count(execution, &counters->abandoned, 1);
        if (execution_bound) return flow_execution_timeout(execution, failure);
        return flow_fail(failure, FLOW_FAILURE_ERROR, FLOW_ERROR_TIMEOUT,
                         "%s: '%s' gave no result within %.3f s; the call was abandoned", state->path,
                         state->resource, timeout);
    case FLOW_CALL_STOPPED:
        flow_count(execution, &counters->abandoned, 1);
        return flow_frame_stopped(frame, failure);
    case FLOW_CALL_NOT_STARTED: break;
    }
    flow_count(execution, &counters->task_errors, 1);
    return flow_fail(failure, FLOW_FAILURE_ERROR, FLOW_ERROR_TASK_FAILED,
                     "%s: could not start a thread for the call to '%s'", state->path, state->resource);
}

/* --- Retry and Catch --- */

static int work_attempt(Visit *visit, json_t **result, FlowFailure *failure) {
    const FlowState *state = visit->state;
    if (state->type == FLOW_STATE_TASK) return task_attempt(visit, result, failure);
    if (state->type == FLOW_STATE_MAP) return flow_run_map(visit->frame, state, visit->effective, result, failure);
    /* Parallel: every branch gets Parameters(effective), or effective. */
    json_t *input = visit->effective;
    if (state->parameters) {
        FlowRoots roots;
        int status = visit_roots(visit, visit->effective, &roots, failure);
        if (status != SPIRT_OK) return status;
        input = flow_template_expand(state->parameters, &roots, "Parameters", failure);
        json_decref(roots.context);
        if (input == NULL) return SPIRT_ERR_INVALID;
    } else {
        json_incref(input);
    }
    int status = flow_run_parallel(visit->frame, state, input, result, failure);
    json_decref(input);
    return status;
}

static int find_retrier(const FlowState *state, const char *error) {
    for (size_t r = 0; r < state->retrier_count; r++)
        for (size_t e = 0; e < state->retriers[r].error_count; e++)
            if (flow_error_matches(state->retriers[r].errors[e], error)) return (int)r;
    return -1;
}

static double backoff_delay(FlowExecution *execution, const FlowRetrier *retrier, long retries_before) {
    double delay = retrier->interval_seconds * pow(retrier->backoff_rate, (double)retries_before);
    if (!(delay <= SECONDS_MAX)) delay = SECONDS_MAX; /* also catches overflow to infinity */
    if (retrier->max_delay_seconds > 0 && delay > retrier->max_delay_seconds) delay = retrier->max_delay_seconds;
    if (retrier->full_jitter) {
        pthread_mutex_lock(&execution->lock);
        delay *= rng_uniform(&execution->rng);
        pthread_mutex_unlock(&execution->lock);
    }
    return delay;
}

/* Runs the state's work, retrying per Retry. Each retrier counts its own
 * attempts; an error goes to the first retrier that names it. */
static int work_with_retry(Visit *visit, json_t **result, FlowFailure *failure) {
    const FlowState *state = visit->state;
    FlowExecution *execution = visit->frame->execution;
    long *used = calloc(state->retrier_count + 1, sizeof(*used));
    if (used == NULL) return flow_fail(failure, FLOW_FAILURE_RUNTIME, FLOW_ERROR_RUNTIME, "out of memory");
    int status;
    for (;;) {
        status = work_attempt(visit, result, failure);
        if (status == SPIRT_OK || failure->kind != FLOW_FAILURE_ERROR) break;
        int r = find_retrier(state, failure->error);
        if (r < 0 || used[r] >= state->retriers[r].max_attempts) break;
        double delay = backoff_delay(execution, &state->retriers[r], used[r]);
        used[r]++;
        visit->attempt++;
        flow_count(execution, &execution->counters.retries, 1);
        FlowEvent event = {.type = FLOW_EVENT_RETRY, .error = failure->error, .cause = failure->cause,
                           .attempt = visit->attempt, .delay_seconds = delay};
        emit(visit->frame, state, &event);
        status = visit_sleep(visit, delay, failure);
        if (status != SPIRT_OK) break;
    }
    free(used);
    return status;
}

/* Routes a failure to the first catcher naming it. Returns SPIRT_OK with the
 * catcher's output and next state, or leaves the failure as it is. */
static int catch_failure(Visit *visit, FlowFailure *failure, json_t **output, int *next) {
    const FlowState *state = visit->state;
    if (failure->kind != FLOW_FAILURE_ERROR) return SPIRT_ERR_INVALID;
    for (size_t c = 0; c < state->catcher_count; c++) {
        const FlowCatcher *catcher = &state->catchers[c];
        int matches = 0;
        for (size_t e = 0; e < catcher->error_count && !matches; e++)
            matches = flow_error_matches(catcher->errors[e], failure->error);
        if (!matches) continue;
        json_t *error_object = json_pack("{s:s,s:s}", "Error", failure->error, "Cause", failure->cause);
        if (error_object == NULL)
            return flow_fail(failure, FLOW_FAILURE_RUNTIME, FLOW_ERROR_RUNTIME, "out of memory");
        FlowFailure placing = {0};
        json_t *placed = place_result(&catcher->result_path, visit->raw, error_object, &placing);
        json_decref(error_object);
        if (placed == NULL) {
            *failure = placing;
            return SPIRT_ERR_INVALID;
        }
        FlowExecution *execution = visit->frame->execution;
        flow_count(execution, &execution->counters.caught, 1);
        FlowEvent event = {.type = FLOW_EVENT_CAUGHT, .error = failure->error, .cause = failure->cause,
                           .next_state = catcher->next_name};
        emit(visit->frame, state, &event);
        *output = placed;
        *next = catcher->next;
        return SPIRT_OK;
    }
    return SPIRT_ERR_INVALID;
}

/* --- The state types --- */

/* ResultSelector, ResultPath and OutputPath: from the work's result to the
 * state's output. Consumes `result`. */
static int finish(Visit *visit, json_t *result, json_t **output, FlowFailure *failure) {
    const FlowState *state = visit->state;
    if (state->result_selector != NULL) {
        FlowRoots roots;
        if (visit_roots(visit, result, &roots, failure) != SPIRT_OK) {
            json_decref(result);
            return SPIRT_ERR_INVALID;
        }
        json_t *selected = flow_template_expand(state->result_selector, &roots, "ResultSelector", failure);
        json_decref(roots.context);
        json_decref(result);
        if (selected == NULL) return SPIRT_ERR_INVALID;
        result = selected;
    }
    json_t *placed = place_result(&state->result_path, visit->raw, result, failure);
    json_decref(result);
    if (placed == NULL) return SPIRT_ERR_INVALID;
    *output = select_path(&state->output_path, placed, "OutputPath", failure);
    json_decref(placed);
    return *output ? SPIRT_OK : SPIRT_ERR_INVALID;
}

static int run_choice(Visit *visit, json_t **output, int *next, FlowFailure *failure) {
    const FlowState *state = visit->state;
    FlowRoots roots;
    int status = visit_roots(visit, visit->effective, &roots, failure);
    if (status != SPIRT_OK) return status;
    int chosen = -1;
    for (size_t c = 0; c < state->choice_count && chosen < 0 && status == SPIRT_OK; c++) {
        int matched = 0;
        status = flow_choice_evaluate(&state->choices[c], &roots, &matched, failure);
        if (status == SPIRT_OK && matched) chosen = state->choices[c].next;
    }
    json_decref(roots.context);
    if (status != SPIRT_OK) return status;
    if (chosen < 0) chosen = state->default_next;
    if (chosen < 0)
        return flow_fail(failure, FLOW_FAILURE_ERROR, FLOW_ERROR_NO_CHOICE_MATCHED,
                         "%s: no Choice rule matched and there is no Default", state->path);
    *next = chosen;
    *output = select_path(&state->output_path, visit->effective, "OutputPath", failure);
    return *output ? SPIRT_OK : SPIRT_ERR_INVALID;
}

static int run_wait(Visit *visit, json_t **output, FlowFailure *failure) {
    const FlowState *state = visit->state;
    double seconds = state->seconds;
    if (state->seconds_path != NULL) {
        FlowRoots roots;
        int status = visit_roots(visit, visit->effective, &roots, failure);
        if (status == SPIRT_OK) status = seconds_from_path(state->seconds_path, &roots, "SecondsPath", 1, &seconds, failure);
        json_decref(roots.context);
        if (status != SPIRT_OK) return status;
    }
    int status = visit_sleep(visit, seconds, failure);
    if (status != SPIRT_OK) return status;
    *output = select_path(&state->output_path, visit->effective, "OutputPath", failure);
    return *output ? SPIRT_OK : SPIRT_ERR_INVALID;
}

static int run_pass(Visit *visit, json_t **output, FlowFailure *failure) {
    const FlowState *state = visit->state;
    json_t *result;
    if (state->result != NULL) {
        result = json_deep_copy(state->result); /* the machine's: shared by executions */
        if (result == NULL) return flow_fail(failure, FLOW_FAILURE_RUNTIME, FLOW_ERROR_RUNTIME, "out of memory");
    } else if (state->parameters != NULL) {
        FlowRoots roots;
        if (visit_roots(visit, visit->effective, &roots, failure) != SPIRT_OK) return SPIRT_ERR_INVALID;
        result = flow_template_expand(state->parameters, &roots, "Parameters", failure);
        json_decref(roots.context);
        if (result == NULL) return SPIRT_ERR_INVALID;
    } else {
        result = json_incref(visit->effective);
    }
    return finish(visit, result, output, failure);
}

/* Error and Cause of a Fail state: literal, through a path, or defaults. */
static int run_fail(Visit *visit, FlowFailure *failure) {
    const FlowState *state = visit->state;
    FlowRoots roots;
    if (visit_roots(visit, visit->raw, &roots, failure) != SPIRT_OK) return SPIRT_ERR_INVALID;
    const char *texts[2] = {state->error ? state->error : "Failed", state->cause ? state->cause : ""};
    const FlowPath *paths[2] = {state->error_path, state->cause_path};
    static const char *const fields[2] = {"ErrorPath", "CausePath"};
    for (int i = 0; i < 2; i++) {
        if (paths[i] == NULL) continue;
        json_t *node = flow_roots_get(&roots, paths[i]);
        if (!json_is_string(node)) {
            json_decref(roots.context);
            return flow_fail(failure, FLOW_FAILURE_RUNTIME, FLOW_ERROR_RUNTIME, "%s '%s' must name a string",
                             fields[i], paths[i]->text);
        }
        texts[i] = json_string_value(node);
    }
    flow_fail(failure, FLOW_FAILURE_ERROR, texts[0], "%s", texts[1]);
    json_decref(roots.context);
    return SPIRT_ERR_INVALID;
}

static int run_state_work(Visit *visit, json_t **output, int *next, FlowFailure *failure) {
    const FlowState *state = visit->state;
    *next = state->next;
    if (state->type == FLOW_STATE_FAIL) return run_fail(visit, failure);
    visit->effective = select_path(&state->input_path, visit->raw, "InputPath", failure);
    if (visit->effective == NULL) return SPIRT_ERR_INVALID;
    switch (state->type) {
    case FLOW_STATE_TASK:
    case FLOW_STATE_MAP:
    case FLOW_STATE_PARALLEL: {
        json_t *result = NULL;
        int status = work_with_retry(visit, &result, failure);
        if (status != SPIRT_OK) return status;
        return finish(visit, result, output, failure);
    }
    case FLOW_STATE_PASS: return run_pass(visit, output, failure);
    case FLOW_STATE_CHOICE: return run_choice(visit, output, next, failure);
    case FLOW_STATE_WAIT: return run_wait(visit, output, failure);
    case FLOW_STATE_SUCCEED:
        *next = -1;
        *output = select_path(&state->output_path, visit->effective, "OutputPath", failure);
        return *output ? SPIRT_OK : SPIRT_ERR_INVALID;
    case FLOW_STATE_FAIL: break;
    }
    return flow_fail(failure, FLOW_FAILURE_RUNTIME, FLOW_ERROR_RUNTIME, "unknown state type");
}

static int run_state(const FlowFrame *frame, const FlowState *state, json_t *raw, json_t **output, int *next,
                     FlowFailure *failure) {
    FlowExecution *execution = frame->execution;
    Visit visit = {.frame = frame, .state = state, .raw = raw, .entered_ns = clock_monotonic_ns(),
                   .entered_wall_ms = clock_wall_ms()};
    flow_count(execution, &execution->counters.states_entered, 1);
    FlowEvent entered = {.type = FLOW_EVENT_STATE_ENTERED};
    emit(frame, state, &entered);

    *output = NULL;
    int status = run_state_work(&visit, output, next, failure);
    json_decref(visit.effective);

    uint64_t spent = clock_monotonic_ns() - visit.entered_ns;
    pthread_mutex_lock(&execution->lock);
    execution->stats[state->id].entries++;
    execution->stats[state->id].total_ns += spent;
    pthread_mutex_unlock(&execution->lock);

    FlowEvent exited = {.type = status == SPIRT_OK ? FLOW_EVENT_STATE_EXITED : FLOW_EVENT_STATE_FAILED,
                        .elapsed_ms = (double)spent / 1e6};
    if (status != SPIRT_OK) {
        exited.error = failure->error;
        exited.cause = failure->cause;
    }
    emit(frame, state, &exited);
    if (status != SPIRT_OK && state->catcher_count > 0) status = catch_failure(&visit, failure, output, next);
    return status;
}

int flow_run_machine(const FlowFrame *frame, const FlowSubMachine *machine, json_t *input, json_t **output,
                     FlowFailure *failure) {
    int index = machine->start;
    json_t *current = json_incref(input);
    for (;;) {
        int status = flow_frame_check(frame, failure);
        json_t *produced = NULL;
        int next = -1;
        if (status == SPIRT_OK) status = run_state(frame, &machine->states[index], current, &produced, &next, failure);
        json_decref(current);
        if (status != SPIRT_OK) return status;
        if (next < 0) {
            *output = produced;
            return SPIRT_OK;
        }
        current = produced;
        index = next;
    }
}

/* --- The public entry point --- */

static void fill_result(const FlowExecution *execution, FlowRunResult *result) {
    result->counters = execution->counters;
    const FlowMachine *machine = execution->machine;
    result->state_times = calloc(machine->state_total ? machine->state_total : 1, sizeof(*result->state_times));
    if (result->state_times == NULL) return; /* the times are a convenience; the outcome stands */
    result->state_count = machine->state_total;
    for (size_t i = 0; i < machine->state_total; i++) {
        FlowStateTime *time = &result->state_times[i];
        time->path = strdup(machine->states_by_id[i]->path);
        time->entries = execution->stats[i].entries;
        time->total_ms = (double)execution->stats[i].total_ns / 1e6;
    }
}

int flow_run(FlowEngine *engine, const FlowMachine *machine, const json_t *input, const FlowRunOptions *options,
             FlowRunResult *result, SpirtError *error) {
    if (result == NULL) return spirt_error_set(error, SPIRT_ERR_INVALID, "flow_run: no result record");
    memset(result, 0, sizeof(*result));
    if (engine == NULL || machine == NULL)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "flow_run: an engine and a machine are required");
    FlowRunOptions defaults = {0};
    if (options == NULL) options = &defaults;
    if (options->timeout_seconds < 0 || !isfinite(options->timeout_seconds))
        return spirt_error_set(error, SPIRT_ERR_INVALID, "flow_run: the time-out must be a finite number >= 0");

    FlowExecution execution;
    memset(&execution, 0, sizeof(execution));
    execution.engine = engine;
    execution.machine = machine;
    execution.input = input ? json_deep_copy(input) : json_object();
    execution.name = strdup(options->name ? options->name : "execution");
    execution.stats = calloc(machine->state_total ? machine->state_total : 1, sizeof(*execution.stats));
    if (execution.input == NULL || execution.name == NULL || execution.stats == NULL) {
        json_decref(execution.input);
        free(execution.name);
        free(execution.stats);
        return spirt_error_set(error, SPIRT_ERR_NOMEM, "flow_run: out of memory");
    }
    execution.start_ns = clock_monotonic_ns();
    format_time(clock_wall_ms(), execution.start_time, sizeof(execution.start_time));
    double timeout = machine->timeout_seconds;
    if (options->timeout_seconds > 0 && (timeout == 0 || options->timeout_seconds < timeout))
        timeout = options->timeout_seconds;
    if (timeout > SECONDS_MAX) timeout = SECONDS_MAX;
    execution.deadline_ns = timeout > 0 ? execution.start_ns + (uint64_t)(timeout * 1e9) : 0;
    execution.on_event = options->on_event;
    execution.event_context = options->event_context;
    rng_init(&execution.rng, execution.start_ns ^ (uint64_t)(uintptr_t)&execution);
    pthread_mutex_init(&execution.lock, NULL);
    pthread_mutex_init(&execution.event_lock, NULL);

    FlowFrame frame = {.execution = &execution, .scope = &execution.root, .map_index = -1};
    FlowFailure failure;
    memset(&failure, 0, sizeof(failure));
    json_t *output = NULL;
    int status = flow_run_machine(&frame, &machine->root, execution.input, &output, &failure);
    if (status == SPIRT_OK) {
        result->status = FLOW_RUN_SUCCEEDED;
        result->output = output;
    } else {
        result->status = failure.kind == FLOW_FAILURE_EXECUTION_TIMEOUT ? FLOW_RUN_TIMED_OUT : FLOW_RUN_FAILED;
        memcpy(result->error, failure.error, sizeof(result->error));
        memcpy(result->cause, failure.cause, sizeof(result->cause));
    }
    result->elapsed_ms = (double)(clock_monotonic_ns() - execution.start_ns) / 1e6;
    fill_result(&execution, result);

    pthread_mutex_destroy(&execution.lock);
    pthread_mutex_destroy(&execution.event_lock);
    json_decref(execution.input);
    free(execution.name);
    free(execution.stats);
    return SPIRT_OK;
}

void flow_run_result_deinit(FlowRunResult *result) {
    if (result == NULL) return;
    json_decref(result->output);
    for (size_t i = 0; i < result->state_count; i++) free(result->state_times[i].path);
    free(result->state_times);
    memset(result, 0, sizeof(*result));
}
