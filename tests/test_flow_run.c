/* test_flow_run.c -- running state machines.
 *
 * The invoker is real and in-process: C functions registered by name, some
 * failing the first k times, some ignoring their time-out and hanging until
 * the test releases them, some honouring it, some returning named errors.
 * What is checked is the engine's behaviour: ordering, data through the
 * paths, Map concurrency (an atomic in-flight counter never exceeds
 * MaxConcurrency), retries and their back-off, Catch, Choice, Wait,
 * Parallel, Fail, time-outs of calls and of executions, several executions
 * at once, and the round workflow of workflows/round.json.
 *
 * Times are only checked as bounds that a loaded machine cannot break: a
 * back-off is at least its interval; an abandoned call ends the state well
 * before the call itself would have (it hangs for 20 s unless released). */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "flow_test_text.h"
#include "spirt/clock.h"
#include "spirt/flow.h"
#include "test.h"

/* --- The world the registered functions live in --- */

typedef struct World {
    atomic_int in_flight, max_in_flight;     /* square */
    atomic_int flaky_calls;
    double flaky_times_ms[32];
    pthread_mutex_t lock;                    /* hang */
    pthread_cond_t released_changed;
    int released;
    atomic_int hang_calls;
    int bad_batch;                           /* round: -1 none, -2 every batch */
    int exchange_hangs;
    atomic_int evaluate_calls, gradient_calls, gradient_in_flight, gradient_max_in_flight;
} World;

static World world;

static void flight_enter(atomic_int *in_flight, atomic_int *max_in_flight) {
    int now = atomic_fetch_add(in_flight, 1) + 1;
    int seen = atomic_load(max_in_flight);
    while (now > seen && !atomic_compare_exchange_weak(max_in_flight, &seen, now)) {
    }
}

static json_int_t integer_member(const json_t *object, const char *name) {
    return json_integer_value(json_object_get(object, name));
}

/* Blocks until the test releases hung functions, ignoring the call's
 * deadline on purpose (20 s at most, so a broken test still ends). */
static void hang_until_released(World *w) {
    atomic_fetch_add(&w->hang_calls, 1);
    uint64_t give_up = clock_monotonic_ns() + 20000000000ull;
    struct timespec when = {.tv_sec = (time_t)(give_up / 1000000000ull), .tv_nsec = (long)(give_up % 1000000000ull)};
    pthread_mutex_lock(&w->lock);
    while (!w->released && pthread_cond_timedwait(&w->released_changed, &w->lock, &when) == 0) {
    }
    pthread_mutex_unlock(&w->lock);
}

static void release_hung(World *w) {
    pthread_mutex_lock(&w->lock);
    w->released = 1;
    pthread_cond_broadcast(&w->released_changed);
    pthread_mutex_unlock(&w->lock);
}

typedef int (*TestFunction)(World *w, const FlowCall *call, FlowCallResult *result);

static int fn_echo(World *w, const FlowCall *call, FlowCallResult *result) {
    (void)w;
    result->output = json_incref(call->input);
    return SPIRT_OK;
}

/* {a, b, who} -> {sum, who}; anything else in the input is refused, which
 * is how the tests see that InputPath and Parameters shaped it. */
static int fn_add(World *w, const FlowCall *call, FlowCallResult *result) {
    (void)w;
    json_t *a = json_object_get(call->input, "a"), *b = json_object_get(call->input, "b");
    json_t *who = json_object_get(call->input, "who");
    if (!json_is_integer(a) || !json_is_integer(b) || !who || json_object_size(call->input) != 3)
        return flow_call_fail(result, "spirt.BadInput", "add wants exactly {a, b, who}");
    result->output = json_pack("{s:I,s:O}", "sum", json_integer_value(a) + json_integer_value(b), "who", who);
    return SPIRT_OK;
}

/* n or {value: n, ...} -> {square, index, tag}, slowly enough to overlap. */
static int fn_square(World *w, const FlowCall *call, FlowCallResult *result) {
    json_t *input = call->input;
    json_int_t value = json_is_integer(input) ? json_integer_value(input) : integer_member(input, "value");
    if (value == 13) return flow_call_fail(result, "spirt.Unlucky", "thirteen");
    flight_enter(&w->in_flight, &w->max_in_flight);
    clock_sleep_ms(20);
    atomic_fetch_sub(&w->in_flight, 1);
    if (json_is_integer(input)) {
        result->output = json_integer(value * value);
    } else {
        result->output = json_pack("{s:I,s:O?,s:O?}", "square", value * value, "index",
                                   json_object_get(input, "index"), "tag", json_object_get(input, "tag"));
    }
    return SPIRT_OK;
}

/* Fails the first fail_times calls (counted over the test) with `error`. */
static int fn_flaky(World *w, const FlowCall *call, FlowCallResult *result) {
    int n = atomic_fetch_add(&w->flaky_calls, 1);
    if (n < 32) w->flaky_times_ms[n] = clock_monotonic_ms();
    const char *error = json_string_value(json_object_get(call->input, "error"));
    if (n < integer_member(call->input, "fail_times"))
        return flow_call_fail(result, error ? error : "spirt.Transient", "attempt %d fails on purpose", n + 1);
    result->output = json_pack("{s:i,s:O?}", "attempts", n + 1, "retry", json_object_get(call->input, "retry"));
    return SPIRT_OK;
}

static int fn_fail_named(World *w, const FlowCall *call, FlowCallResult *result) {
    (void)w;
    return flow_call_fail(result, json_string_value(json_object_get(call->input, "error")), "%s",
                          json_string_value(json_object_get(call->input, "cause")));
}

static int fn_hang(World *w, const FlowCall *call, FlowCallResult *result) {
    (void)call;
    hang_until_released(w);
    result->output = json_string("too late");
    return SPIRT_OK;
}

/* Sleeps `seconds`, but honours the deadline: gives up there with
 * States.Timeout, as a well-behaved invoker does. */
static int fn_polite(World *w, const FlowCall *call, FlowCallResult *result) {
    (void)w;
    double seconds = json_number_value(json_object_get(call->input, "seconds"));
    uint64_t until = clock_monotonic_ns() + (uint64_t)(seconds * 1e9);
    if (until > call->deadline_ns) {
        uint64_t now = clock_monotonic_ns();
        if (call->deadline_ns > now) clock_sleep_ms((double)(call->deadline_ns - now) / 1e6);
        return flow_call_fail(result, FLOW_ERROR_TIMEOUT, "gave up at the deadline");
    }
    clock_sleep_ms(seconds * 1000);
    result->output = json_pack("{s:f}", "slept", seconds);
    return SPIRT_OK;
}

/* Reports what the engine handed over. */
static int fn_describe(World *w, const FlowCall *call, FlowCallResult *result) {
    (void)w;
    result->output = json_pack("{s:i,s:I,s:f,s:s,s:s,s:O}", "attempt", (int)call->attempt, "map_index",
                               (json_int_t)call->map_index, "timeout", call->timeout_seconds, "state",
                               call->state_path, "execution", call->execution_name, "input", call->input);
    return SPIRT_OK;
}

/* --- The round's functions, as plain data transformations --- */

static int fn_admit(World *w, const FlowCall *call, FlowCallResult *result) {
    (void)w, (void)call;
    result->output = json_pack("{s:[s]}", "admitted", "10.0.0.9:7000");
    return SPIRT_OK;
}

static int fn_heartbeat(World *w, const FlowCall *call, FlowCallResult *result) {
    (void)w, (void)call;
    result->output = json_pack("{s:[s,s]}", "live", "127.0.0.1:7001", "127.0.0.1:7002");
    return SPIRT_OK;
}

static int fn_compute_gradients(World *w, const FlowCall *call, FlowCallResult *result) {
    json_t *input = call->input;
    if (!json_is_string(json_object_get(input, "peer")) || !json_is_integer(json_object_get(input, "round")) ||
        !json_is_integer(json_object_get(input, "batch")) || !json_is_number(json_object_get(input, "timeout_seconds")))
        return flow_call_fail(result, "spirt.BadInput", "compute_gradients wants {peer, round, batch, timeout_seconds}");
    atomic_fetch_add(&w->gradient_calls, 1);
    json_int_t batch = integer_member(input, "batch"), round = integer_member(input, "round");
    if (w->bad_batch == -2 || batch == w->bad_batch)
        return flow_call_fail(result, "spirt.DataMissing", "batch %lld is not in the database", (long long)batch);
    flight_enter(&w->gradient_in_flight, &w->gradient_max_in_flight);
    clock_sleep_ms(10);
    atomic_fetch_sub(&w->gradient_in_flight, 1);
    char key[64];
    snprintf(key, sizeof(key), "spirt:r:%lld:grad:%lld", (long long)round, (long long)batch);
    result->output = json_pack("{s:I,s:b,s:s}", "batch", batch, "ok", 1, "key", key);
    return SPIRT_OK;
}

static int fn_average(World *w, const FlowCall *call, FlowCallResult *result) {
    (void)w;
    size_t index, ok = 0;
    json_t *gradient;
    json_array_foreach(json_object_get(call->input, "gradients"), index, gradient) {
        ok += json_is_true(json_object_get(gradient, "ok"));
    }
    if (ok == 0) return flow_call_fail(result, "spirt.NoGradient", "no gradient to average");
    result->output = json_pack("{s:s,s:i}", "key", "spirt:r:avg", "count", (int)ok);
    return SPIRT_OK;
}

static int fn_publish(World *w, const FlowCall *call, FlowCallResult *result) {
    (void)w;
    if (!json_is_string(json_object_get(json_object_get(call->input, "average"), "key")))
        return flow_call_fail(result, "spirt.BadInput", "publish wants the average's key");
    result->output = json_pack("{s:s}", "key", "spirt:pub");
    return SPIRT_OK;
}

static int fn_exchange(World *w, const FlowCall *call, FlowCallResult *result) {
    (void)call;
    if (w->exchange_hangs) hang_until_released(w);
    result->output = json_pack("{s:[{s:s,s:s}],s:[]}", "received", "peer", "127.0.0.1:7002", "key", "spirt:r:in:1",
                               "missing");
    return SPIRT_OK;
}

static int fn_aggregate(World *w, const FlowCall *call, FlowCallResult *result) {
    (void)w;
    size_t received = json_array_size(json_object_get(call->input, "received"));
    if (!json_is_object(json_object_get(call->input, "aggregator")))
        return flow_call_fail(result, "spirt.BadInput", "aggregate wants the aggregator");
    result->output = json_pack("{s:s,s:i}", "key", "spirt:r:agg", "inputs", 1 + (int)received);
    return SPIRT_OK;
}

static int fn_update(World *w, const FlowCall *call, FlowCallResult *result) {
    (void)w;
    result->output = json_pack("{s:I}", "applied_round", integer_member(call->input, "round"));
    return SPIRT_OK;
}

static int fn_evaluate(World *w, const FlowCall *call, FlowCallResult *result) {
    (void)call;
    atomic_fetch_add(&w->evaluate_calls, 1);
    result->output = json_pack("{s:f}", "accuracy", 0.5);
    return SPIRT_OK;
}

static const struct {
    const char *name;
    TestFunction function;
} registry[] = {
    {"echo", fn_echo},           {"add", fn_add},
    {"square", fn_square},       {"flaky", fn_flaky},
    {"fail_named", fn_fail_named}, {"hang", fn_hang},
    {"polite", fn_polite},       {"describe", fn_describe},
    {"admit", fn_admit},         {"heartbeat", fn_heartbeat},
    {"compute_gradients", fn_compute_gradients}, {"average", fn_average},
    {"publish", fn_publish},     {"exchange", fn_exchange},
    {"aggregate", fn_aggregate}, {"update", fn_update},
    {"evaluate", fn_evaluate},
};

static int invoke_registered(void *context, const FlowCall *call, FlowCallResult *result) {
    for (size_t i = 0; i < sizeof(registry) / sizeof(registry[0]); i++)
        if (strcmp(registry[i].name, call->resource) == 0) return registry[i].function(context, call, result);
    return flow_call_fail(result, "spirt.UnknownFunction", "no function named '%s'", call->resource);
}

/* --- Helpers --- */

static FlowEngine *new_engine(void) {
    FlowInvoker invoker = {.invoke = invoke_registered, .context = &world};
    SpirtError error;
    FlowEngine *engine = flow_engine_create(&invoker, NULL, &error);
    CHECKF(engine != NULL, "%s", error.message);
    return engine;
}

static FlowMachine *load(const char *definition) {
    char *text = flow_test_text(definition);
    SpirtError error;
    spirt_error_clear(&error);
    FlowMachine *machine = flow_machine_load_string(text, "test", &error);
    CHECKF(machine != NULL, "%s", error.message);
    free(text);
    return machine;
}

static json_t *parse(const char *json_text) {
    char *text = flow_test_text(json_text);
    json_error_t error;
    json_t *value = json_loads(text, JSON_DECODE_ANY, &error);
    CHECKF(value != NULL, "test JSON: %s", error.text);
    free(text);
    return value;
}

/* Runs `machine` on `input_text` ("{...}" with single quotes). */
static void run(FlowEngine *engine, const FlowMachine *machine, const char *input_text, const FlowRunOptions *options,
                FlowRunResult *result) {
    json_t *input = input_text ? parse(input_text) : NULL;
    SpirtError error;
    int status = flow_run(engine, machine, input, options, result, &error);
    CHECK_OK(status, &error);
    json_decref(input);
}

static int json_matches(const json_t *actual, const char *expected_text) {
    json_t *expected = parse(expected_text);
    int equal = actual != NULL && json_equal((json_t *)actual, expected);
    if (!equal) {
        char *got = actual ? json_dumps(actual, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        char *want = json_dumps(expected, JSON_COMPACT | JSON_SORT_KEYS);
        fprintf(stderr, "   got      %s\n   expected %s\n", got ? got : "(null)", want);
        free(got);
        free(want);
    }
    json_decref(expected);
    return equal;
}

#define CHECK_JSON(actual, expected) CHECKF(json_matches((actual), (expected)), "JSON differs")
#define CHECK_SUCCEEDED(result) \
    CHECKF((result).status == FLOW_RUN_SUCCEEDED, "run %s: %s: %s", flow_run_status_name((result).status), \
           (result).error, (result).cause)

/* The run ended with `status`, the error name `error` and, unless `needle`
 * is NULL, a cause mentioning `needle`. */
static int ended_as(const FlowRunResult *result, FlowRunStatus status, const char *error, const char *needle) {
    return result->status == status && strcmp(result->error, error) == 0 && result->output == NULL &&
           (needle == NULL || strstr(result->cause, needle) != NULL);
}

#define CHECK_ENDED(result, expected_status, expected_error, needle)                                      \
    CHECKF(ended_as(&(result), (expected_status), (expected_error), (needle)), "run %s: %s: %s",          \
           flow_run_status_name((result).status), (result).error, (result).cause)

/* Runs and checks that the run failed as described. */
static void expect_failure(FlowEngine *engine, const FlowMachine *machine, const char *input, const char *error,
                           const char *needle) {
    FlowRunResult result;
    run(engine, machine, input, NULL, &result);
    CHECK_ENDED(result, FLOW_RUN_FAILED, error, needle);
    flow_run_result_deinit(&result);
}

static const FlowStateTime *state_time(const FlowRunResult *result, const char *path) {
    for (size_t i = 0; i < result->state_count; i++)
        if (strcmp(result->state_times[i].path, path) == 0) return &result->state_times[i];
    return NULL;
}

/* Events, recorded as "entered:Path" etc. (callbacks are serialised). */
typedef struct EventLog {
    char lines[256][96];
    size_t count;
    int retries;
    double retry_delays[8];
    int caught;
    char caught_next[64];
    int map_indices_seen;
} EventLog;

static void record_event(void *context, const FlowEvent *event) {
    EventLog *log = context;
    static const char *const names[] = {"entered", "exited", "failed", "retry", "caught"};
    if (log->count < 256)
        snprintf(log->lines[log->count++], sizeof(log->lines[0]), "%s:%s", names[event->type], event->state_path);
    if (event->type == FLOW_EVENT_RETRY && log->retries < 8) log->retry_delays[log->retries++] = event->delay_seconds;
    if (event->type == FLOW_EVENT_CAUGHT) {
        log->caught++;
        snprintf(log->caught_next, sizeof(log->caught_next), "%s", event->next_state);
    }
    if (event->type == FLOW_EVENT_STATE_ENTERED && event->map_index >= 0) log->map_indices_seen++;
}

static void reset_world(void) {
    atomic_store(&world.in_flight, 0);
    atomic_store(&world.max_in_flight, 0);
    atomic_store(&world.flaky_calls, 0);
    atomic_store(&world.hang_calls, 0);
    atomic_store(&world.gradient_calls, 0);
    atomic_store(&world.gradient_in_flight, 0);
    atomic_store(&world.gradient_max_in_flight, 0);
    atomic_store(&world.evaluate_calls, 0);
    world.bad_batch = -1;
    world.exchange_hangs = 0;
    pthread_mutex_lock(&world.lock);
    world.released = 0;
    pthread_mutex_unlock(&world.lock);
}

/* Lets hung calls return and waits for every call to end, so nothing of
 * one test leaks into the next. */
static void settle(FlowEngine *engine) {
    release_hung(&world);
    CHECK(flow_engine_wait_idle(engine, 30) == SPIRT_OK);
    CHECK(flow_engine_running_calls(engine) == 0);
    reset_world();
}

/* --- Tests --- */

static const char data_flow_machine[] =
    "{'Comment': 'data flow', 'StartAt': 'Prepare', 'States': {"
    " 'Prepare': {'Type': 'Pass', 'Result': {'a': 2, 'b': 40}, 'ResultPath': '$.numbers', 'Next': 'Add'},"
    " 'Add': {'Type': 'Task', 'Resource': 'add', 'InputPath': '$.numbers',"
    "   'Parameters': {'a.$': '$.a', 'b.$': '$.b', 'who.$': '$$.Execution.Name'},"
    "   'ResultSelector': {'total.$': '$.sum', 'by.$': '$.who'}, 'ResultPath': '$.result', 'Next': 'Shape'},"
    " 'Shape': {'Type': 'Pass', 'Parameters': {'total.$': '$.result.total', 'by.$': '$.result.by',"
    "   'first.$': '$.list[0]', 'spaced.$': '$[\\'odd key\\'].x', 'original.$': '$$.Execution.Input.list[1]',"
    "   'constant': {'nested': [1, {'copied.$': '$.list'}]}}, 'Next': 'Keep'},"
    " 'Keep': {'Type': 'Task', 'Resource': 'echo', 'Parameters': {'ignored': true}, 'ResultPath': null, 'Next': 'Pick'},"
    " 'Pick': {'Type': 'Pass', 'OutputPath': '$.constant', 'Next': 'Done'},"
    " 'Done': {'Type': 'Succeed'}}}";

static void test_data_flow(FlowEngine *engine) {
    test_begin("run: states in order, data through InputPath/Parameters/ResultSelector/ResultPath/OutputPath");
    FlowMachine *machine = load(data_flow_machine);
    if (!machine) return;
    EventLog log = {0};
    FlowRunOptions options = {.name = "round-7", .on_event = record_event, .event_context = &log};
    FlowRunResult result;
    run(engine, machine, "{'list': [7, 8], 'odd key': {'x': 'y'}}", &options, &result);
    CHECK_SUCCEEDED(result);
    CHECK_JSON(result.output, "{'nested': [1, {'copied': [7, 8]}]}");
    CHECK(result.counters.states_entered == 6);
    CHECK(result.counters.invocations == 2);
    CHECK(result.counters.retries == 0 && result.counters.caught == 0);

    static const char *const expected[] = {"entered:Prepare", "exited:Prepare", "entered:Add",  "exited:Add",
                                           "entered:Shape",   "exited:Shape",   "entered:Keep", "exited:Keep",
                                           "entered:Pick",    "exited:Pick",    "entered:Done", "exited:Done"};
    CHECK(log.count == sizeof(expected) / sizeof(expected[0]));
    for (size_t i = 0; i < log.count && i < sizeof(expected) / sizeof(expected[0]); i++)
        CHECKF(strcmp(log.lines[i], expected[i]) == 0, "event %zu: %s, expected %s", i, log.lines[i], expected[i]);
    CHECK(result.state_count == 6);
    const FlowStateTime *add = state_time(&result, "Add");
    CHECK(add != NULL && add->entries == 1 && add->total_ms >= 0);
    flow_run_result_deinit(&result);

    /* Without the final OutputPath, the whole document: Shape's output,
     * untouched by Keep (ResultPath null). */
    FlowMachine *shorter = load("{'StartAt': 'Prepare', 'States': {"
                                " 'Prepare': {'Type': 'Pass', 'Result': {'a': 2, 'b': 40}, 'ResultPath': '$.numbers', 'Next': 'Add'},"
                                " 'Add': {'Type': 'Task', 'Resource': 'add', 'InputPath': '$.numbers',"
                                "   'Parameters': {'a.$': '$.a', 'b.$': '$.b', 'who.$': '$$.Execution.Name'},"
                                "   'ResultPath': '$.numbers.result', 'End': true}}}");
    if (shorter) {
        run(engine, shorter, "{'keep': 'me'}", &options, &result);
        CHECK_SUCCEEDED(result);
        CHECK_JSON(result.output, "{'keep': 'me', 'numbers': {'a': 2, 'b': 40, 'result': {'sum': 42, 'who': 'round-7'}}}");
        flow_run_result_deinit(&result);
    }
    flow_machine_free(shorter);

    /* A missing path is States.Runtime, which no Catch catches. */
    FlowMachine *broken = load("{'StartAt': 'A', 'States': {"
                               " 'A': {'Type': 'Task', 'Resource': 'echo', 'InputPath': '$.missing', 'End': true,"
                               "   'Catch': [{'ErrorEquals': ['States.ALL'], 'Next': 'B'}]},"
                               " 'B': {'Type': 'Succeed'}}}");
    if (broken) {
        run(engine, broken, "{}", NULL, &result);
        CHECK_ENDED(result, FLOW_RUN_FAILED, FLOW_ERROR_RUNTIME, "InputPath '$.missing'");
        CHECK(result.counters.caught == 0 && result.counters.invocations == 0);
        flow_run_result_deinit(&result);
    }
    /* ResultPath into a non-object is States.ResultPathMatchFailure, which is catchable. */
    flow_machine_free(broken);
    FlowMachine *mismatch = load("{'StartAt': 'A', 'States': {"
                                 " 'A': {'Type': 'Task', 'Resource': 'echo', 'ResultPath': '$.list.x', 'End': true,"
                                 "   'Catch': [{'ErrorEquals': ['States.ResultPathMatchFailure'], 'ResultPath': '$.error', 'Next': 'B'}]},"
                                 " 'B': {'Type': 'Pass', 'OutputPath': '$.error.Error', 'End': true}}}");
    if (mismatch) {
        run(engine, mismatch, "{'list': [1]}", NULL, &result);
        CHECK_SUCCEEDED(result);
        CHECK_JSON(result.output, "'States.ResultPathMatchFailure'");
        flow_run_result_deinit(&result);
    }
    flow_machine_free(mismatch);
    flow_machine_free(machine);
}

static void test_choice(FlowEngine *engine) {
    test_begin("run: Choice rules, Default, NoChoiceMatched, a missing Variable");
    FlowMachine *machine = load(
        "{'StartAt': 'Decide', 'States': {"
        " 'Decide': {'Type': 'Choice', 'Choices': ["
        "   {'Or': [{'Variable': '$.n', 'NumericLessThan': -5}, {'Variable': '$.n', 'NumericEquals': -1}], 'Next': 'Negative'},"
        "   {'Variable': '$.n', 'NumericGreaterThan': 10, 'Next': 'Big'},"
        "   {'And': [{'Variable': '$.s', 'IsPresent': true}, {'Variable': '$.s', 'StringMatches': 'lo*ng'}], 'Next': 'Long'},"
        "   {'Not': {'Variable': '$.flag', 'BooleanEquals': true}, 'Next': 'NotFlag'},"
        "   {'Variable': '$.n', 'NumericEqualsPath': '$.m', 'Next': 'Same'},"
        "   {'Variable': '$.name', 'StringLessThanEquals': 'b', 'Next': 'Early'}],"
        "  'Default': 'Other'},"
        " 'Negative': {'Type': 'Pass', 'Result': 'Negative', 'End': true},"
        " 'Big': {'Type': 'Pass', 'Result': 'Big', 'End': true},"
        " 'Long': {'Type': 'Pass', 'Result': 'Long', 'End': true},"
        " 'NotFlag': {'Type': 'Pass', 'Result': 'NotFlag', 'End': true},"
        " 'Same': {'Type': 'Pass', 'Result': 'Same', 'End': true},"
        " 'Early': {'Type': 'Pass', 'Result': 'Early', 'End': true},"
        " 'Other': {'Type': 'Pass', 'Result': 'Other', 'End': true}}}");
    if (!machine) return;
    static const struct {
        const char *input, *branch;
    } cases[] = {
        {"{'n': -1, 'flag': true, 'm': 0, 'name': 'z'}", "'Negative'"},
        {"{'n': -7, 'flag': true, 'm': 0, 'name': 'z'}", "'Negative'"},
        {"{'n': 11, 'flag': true, 'm': 0, 'name': 'z'}", "'Big'"},
        {"{'n': 1, 's': 'looooong', 'flag': true, 'm': 0, 'name': 'z'}", "'Long'"},
        {"{'n': 1, 's': 'short', 'flag': false, 'm': 0, 'name': 'z'}", "'NotFlag'"},
        {"{'n': 3, 'm': 3, 'flag': true, 'name': 'z'}", "'Same'"},
        {"{'n': 3, 'm': 4, 'flag': true, 'name': 'b'}", "'Early'"},
        {"{'n': 3, 'm': 4, 'flag': true, 'name': 'c'}", "'Other'"},
        /* a type mismatch is false, not an error: '11' is no number */
        {"{'n': '11', 'flag': true, 'm': '11', 'name': 3}", "'Other'"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        FlowRunResult result;
        run(engine, machine, cases[i].input, NULL, &result);
        CHECK_SUCCEEDED(result);
        CHECKF(json_matches(result.output, cases[i].branch), "case %zu", i);
        flow_run_result_deinit(&result);
    }
    /* No flag: the Not rule's Variable names nothing -> States.Runtime. */
    expect_failure(engine, machine, "{'n': 3, 'm': 3}", FLOW_ERROR_RUNTIME, "$.flag");
    flow_machine_free(machine);

    machine = load("{'StartAt': 'C', 'States': {"
                   " 'C': {'Type': 'Choice', 'Choices': [{'Variable': '$.x', 'StringEquals': 'yes', 'Next': 'Y'}]},"
                   " 'Y': {'Type': 'Succeed'}}}");
    if (!machine) return;
    expect_failure(engine, machine, "{'x': 'no'}", FLOW_ERROR_NO_CHOICE_MATCHED, "no Choice rule matched");
    flow_machine_free(machine);
}

static void test_wait_and_fail(FlowEngine *engine) {
    test_begin("run: Wait (Seconds, SecondsPath) and Fail (Error/Cause, ErrorPath/CausePath)");
    FlowMachine *machine = load("{'StartAt': 'W1', 'States': {"
                                " 'W1': {'Type': 'Wait', 'Seconds': 0.1, 'Next': 'W2'},"
                                " 'W2': {'Type': 'Wait', 'SecondsPath': '$.pause', 'OutputPath': '$.pause', 'End': true}}}");
    if (machine) {
        FlowRunResult result;
        run(engine, machine, "{'pause': 0.05}", NULL, &result);
        CHECK_SUCCEEDED(result);
        CHECK_JSON(result.output, "0.05");
        CHECKF(result.elapsed_ms >= 150, "elapsed %.1f ms", result.elapsed_ms);
        const FlowStateTime *w1 = state_time(&result, "W1");
        CHECK(w1 != NULL && w1->total_ms >= 100);
        flow_run_result_deinit(&result);
        expect_failure(engine, machine, "{'pause': 'soon'}", FLOW_ERROR_RUNTIME, "SecondsPath");
    }
    flow_machine_free(machine);

    machine = load("{'StartAt': 'C', 'States': {"
                   " 'C': {'Type': 'Choice', 'Choices': [{'Variable': '$.dynamic', 'BooleanEquals': true, 'Next': 'F2'}],"
                   "   'Default': 'F1'},"
                   " 'F1': {'Type': 'Fail', 'Error': 'spirt.Bad', 'Cause': 'because'},"
                   " 'F2': {'Type': 'Fail', 'ErrorPath': '$.why.error', 'CausePath': '$.why.cause'}}}");
    if (machine) {
        expect_failure(engine, machine, "{'dynamic': false}", "spirt.Bad", "because");
        expect_failure(engine, machine, "{'dynamic': true, 'why': {'error': 'spirt.Dyn', 'cause': 'from input'}}",
                       "spirt.Dyn", "from input");
    }
    flow_machine_free(machine);
}

static void test_retry(FlowEngine *engine) {
    test_begin("run: Retry with back-off, per-retrier counts, MaxDelaySeconds, exhaustion into Catch");
    FlowMachine *machine = load("{'StartAt': 'F', 'States': {'F': {'Type': 'Task', 'Resource': 'flaky',"
                                " 'Parameters': {'fail_times.$': '$.fail_times', 'retry.$': '$$.State.RetryCount'}, 'End': true,"
                                " 'Retry': [{'ErrorEquals': ['spirt.Transient'], 'IntervalSeconds': 0.05,"
                                "   'MaxAttempts': 3, 'BackoffRate': 2.0}],"
                                " 'Catch': [{'ErrorEquals': ['States.ALL'], 'Next': 'Gave up'}]},"
                                " 'Gave up': {'Type': 'Pass', 'End': true}}}");
    if (!machine) return;
    EventLog log = {0};
    FlowRunOptions options = {.on_event = record_event, .event_context = &log};
    FlowRunResult result;
    run(engine, machine, "{'fail_times': 2}", &options, &result);
    CHECK_SUCCEEDED(result);
    CHECK_JSON(result.output, "{'attempts': 3, 'retry': 2}"); /* RetryCount of the third attempt */
    CHECK(result.counters.invocations == 3 && result.counters.retries == 2 && result.counters.task_errors == 2);
    CHECK(log.retries == 2);
    CHECK_NEAR(log.retry_delays[0], 0.05, 1e-9);
    CHECK_NEAR(log.retry_delays[1], 0.10, 1e-9);
    /* The waits happened: each gap is at least its back-off. */
    CHECKF(world.flaky_times_ms[1] - world.flaky_times_ms[0] >= 49.0, "gap %.1f ms",
           world.flaky_times_ms[1] - world.flaky_times_ms[0]);
    CHECKF(world.flaky_times_ms[2] - world.flaky_times_ms[1] >= 99.0, "gap %.1f ms",
           world.flaky_times_ms[2] - world.flaky_times_ms[1]);
    flow_run_result_deinit(&result);

    /* Four failures: three retries are used up, the Catch takes the fourth,
     * and the error object replaces the input (default ResultPath). */
    reset_world();
    run(engine, machine, "{'fail_times': 10}", NULL, &result);
    CHECK_SUCCEEDED(result);
    CHECK_JSON(result.output, "{'Error': 'spirt.Transient', 'Cause': 'attempt 4 fails on purpose'}");
    CHECK(result.counters.invocations == 4 && result.counters.retries == 3 && result.counters.caught == 1);
    flow_run_result_deinit(&result);
    flow_machine_free(machine);

    /* An error goes to the first retrier naming it, each retrier has its own
     * count, and an error no retrier names is not retried. */
    reset_world();
    machine = load("{'StartAt': 'F', 'States': {'F': {'Type': 'Task', 'Resource': 'flaky', 'End': true,"
                   " 'Retry': [{'ErrorEquals': ['spirt.Other'], 'IntervalSeconds': 0.01, 'MaxAttempts': 5},"
                   "           {'ErrorEquals': ['States.ALL'], 'IntervalSeconds': 0.01, 'MaxAttempts': 1}]}}}");
    if (machine) {
        run(engine, machine, "{'fail_times': 3}", NULL, &result);
        CHECK_ENDED(result, FLOW_RUN_FAILED, "spirt.Transient", "attempt 2");
        CHECK(result.counters.invocations == 2 && result.counters.retries == 1);
        flow_run_result_deinit(&result);
        reset_world();
        run(engine, machine, "{'fail_times': 3, 'error': 'spirt.Other'}", NULL, &result);
        CHECK_SUCCEEDED(result);
        CHECK(result.counters.invocations == 4 && result.counters.retries == 3);
        flow_run_result_deinit(&result);
    }
    flow_machine_free(machine);

    /* MaxDelaySeconds caps the growth: uncapped, the second wait would be 5 s. */
    reset_world();
    machine = load("{'StartAt': 'F', 'States': {'F': {'Type': 'Task', 'Resource': 'flaky', 'End': true,"
                   " 'Retry': [{'ErrorEquals': ['States.TaskFailed'], 'IntervalSeconds': 0.05, 'MaxAttempts': 3,"
                   "   'BackoffRate': 100, 'MaxDelaySeconds': 0.1}]}}}");
    if (machine) {
        memset(&log, 0, sizeof(log));
        run(engine, machine, "{'fail_times': 2}", &options, &result);
        CHECK_SUCCEEDED(result);
        CHECK(log.retries == 2);
        CHECK_NEAR(log.retry_delays[1], 0.1, 1e-9);
        double gap = world.flaky_times_ms[2] - world.flaky_times_ms[1];
        CHECKF(gap >= 99.0 && gap < 3000.0, "gap %.1f ms", gap);
        flow_run_result_deinit(&result);
    }
    flow_machine_free(machine);

    /* FULL jitter draws each wait from [0, nominal). */
    reset_world();
    machine = load("{'StartAt': 'F', 'States': {'F': {'Type': 'Task', 'Resource': 'flaky', 'End': true,"
                   " 'Retry': [{'ErrorEquals': ['States.ALL'], 'IntervalSeconds': 0.02, 'MaxAttempts': 6,"
                   "   'BackoffRate': 1.5, 'JitterStrategy': 'FULL'}]}}}");
    if (machine) {
        memset(&log, 0, sizeof(log));
        run(engine, machine, "{'fail_times': 6}", &options, &result);
        CHECK_SUCCEEDED(result);
        CHECK(log.retries == 6);
        int below = 1, distinct = 0;
        for (int i = 0; i < log.retries; i++) {
            below &= log.retry_delays[i] >= 0 && log.retry_delays[i] < 0.02 * pow(1.5, i);
            distinct += i > 0 && log.retry_delays[i] != log.retry_delays[i - 1];
        }
        CHECK(below);
        CHECK(distinct > 0);
        flow_run_result_deinit(&result);
    }
    flow_machine_free(machine);
}

static void test_catch(FlowEngine *engine) {
    test_begin("run: Catch routing, error objects at ResultPath, TaskFailed vs Timeout, custom names");
    FlowMachine *machine = load(
        "{'StartAt': 'T', 'States': {"
        " 'T': {'Type': 'Task', 'Resource': 'fail_named', 'TimeoutSeconds': 0.2, 'Next': 'Unreached',"
        "   'Catch': [{'ErrorEquals': ['spirt.Special'], 'ResultPath': '$.caught', 'Next': 'Special'},"
        "             {'ErrorEquals': ['States.TaskFailed'], 'ResultPath': '$.caught', 'Next': 'Failed'},"
        "             {'ErrorEquals': ['States.ALL'], 'ResultPath': '$.caught', 'Next': 'Other'}]},"
        " 'Unreached': {'Type': 'Succeed'},"
        " 'Special': {'Type': 'Pass', 'Result': 'special', 'ResultPath': '$.route', 'End': true},"
        " 'Failed': {'Type': 'Pass', 'Result': 'failed', 'ResultPath': '$.route', 'End': true},"
        " 'Other': {'Type': 'Pass', 'Result': 'other', 'ResultPath': '$.route', 'End': true}}}");
    if (!machine) return;
    EventLog log = {0};
    FlowRunOptions options = {.on_event = record_event, .event_context = &log};
    FlowRunResult result;
    run(engine, machine, "{'error': 'spirt.Special', 'cause': 'c1'}", &options, &result);
    CHECK_SUCCEEDED(result);
    CHECK_JSON(result.output, "{'error': 'spirt.Special', 'cause': 'c1', "
                              "'caught': {'Error': 'spirt.Special', 'Cause': 'c1'}, 'route': 'special'}");
    CHECK(log.caught == 1 && strcmp(log.caught_next, "Special") == 0);
    CHECK(result.counters.caught == 1);
    flow_run_result_deinit(&result);

    run(engine, machine, "{'error': 'spirt.Whatever', 'cause': 'c2'}", NULL, &result);
    CHECK_SUCCEEDED(result);
    CHECK_JSON(json_object_get(result.output, "route"), "'failed'");
    flow_run_result_deinit(&result);
    /* An invoker saying Timeout is not matched by States.TaskFailed. */
    run(engine, machine, "{'error': 'States.Timeout', 'cause': 'slow'}", NULL, &result);
    CHECK_SUCCEEDED(result);
    CHECK_JSON(json_object_get(result.output, "route"), "'other'");
    CHECK(result.counters.timeouts == 1);
    flow_run_result_deinit(&result);
    flow_machine_free(machine);

    /* An unknown resource is an invoker error like any other. */
    machine = load("{'StartAt': 'T', 'States': {'T': {'Type': 'Task', 'Resource': 'nobody', 'End': true}}}");
    if (machine) expect_failure(engine, machine, "{}", "spirt.UnknownFunction", "nobody");
    flow_machine_free(machine);
}

static void test_call_timeouts(FlowEngine *engine) {
    test_begin("run: a hung call is abandoned at its time-out (+grace), then Retry and Catch apply");
    FlowMachine *machine = load("{'StartAt': 'H', 'States': {"
                                " 'H': {'Type': 'Task', 'Resource': 'hang', 'TimeoutSeconds': 0.2, 'End': true,"
                                "   'Retry': [{'ErrorEquals': ['States.Timeout'], 'IntervalSeconds': 0.01, 'MaxAttempts': 1}],"
                                "   'Catch': [{'ErrorEquals': ['States.Timeout'], 'ResultPath': '$.error', 'Next': 'After'}]},"
                                " 'After': {'Type': 'Pass', 'End': true}}}");
    if (!machine) return;
    FlowRunResult result;
    double start = clock_monotonic_ms();
    run(engine, machine, "{'x': 1}", NULL, &result);
    double elapsed = clock_monotonic_ms() - start;
    CHECK_SUCCEEDED(result);
    CHECK_JSON(json_object_get(json_object_get(result.output, "error"), "Error"), "'States.Timeout'");
    CHECK_JSON(json_object_get(result.output, "x"), "1");
    CHECK(result.counters.invocations == 2 && result.counters.retries == 1);
    CHECK(result.counters.abandoned == 2 && result.counters.timeouts == 2 && result.counters.caught == 1);
    /* Two attempts of 0.2 s: well under what the hung calls would take (20 s). */
    CHECKF(elapsed >= 400 && elapsed < 400 + 3000, "elapsed %.0f ms", elapsed);
    CHECK(atomic_load(&world.hang_calls) == 2);
    CHECK(flow_engine_running_calls(engine) == 2); /* still hanging, abandoned */
    flow_run_result_deinit(&result);
    flow_machine_free(machine);
    settle(engine);

    test_begin("run: a polite invoker times out itself; the time-out reaches it; TimeoutSecondsPath");
    machine = load("{'StartAt': 'P', 'States': {"
                   " 'P': {'Type': 'Task', 'Resource': 'polite', 'TimeoutSeconds': 0.1, 'Next': 'D',"
                   "   'Catch': [{'ErrorEquals': ['States.Timeout'], 'ResultPath': '$.error', 'Next': 'D'}]},"
                   " 'D': {'Type': 'Task', 'Resource': 'describe', 'TimeoutSecondsPath': '$.budget', 'End': true}}}");
    if (machine) {
        run(engine, machine, "{'seconds': 5, 'budget': 7.5}", NULL, &result);
        CHECK_SUCCEEDED(result);
        CHECK(result.counters.timeouts == 1 && result.counters.abandoned == 0);
        json_t *timeout = json_object_get(result.output, "timeout");
        CHECKF(json_number_value(timeout) <= 7.5 && json_number_value(timeout) > 6.5, "timeout %g",
               json_number_value(timeout));
        CHECK_JSON(json_object_get(result.output, "state"), "'D'");
        CHECK_JSON(json_object_get(result.output, "map_index"), "-1");
        flow_run_result_deinit(&result);
        expect_failure(engine, machine, "{'seconds': 0.01, 'budget': -1}", FLOW_ERROR_RUNTIME, "TimeoutSecondsPath");
    }
    flow_machine_free(machine);
    settle(engine);
}

static void test_execution_timeout(FlowEngine *engine) {
    test_begin("run: the execution time-out ends everything, Map branches included, and is not caught");
    FlowMachine *machine = load("{'StartAt': 'W', 'TimeoutSeconds': 0.3, 'States': {"
                                " 'W': {'Type': 'Wait', 'Seconds': 30, 'End': true}}}");
    if (machine) {
        FlowRunResult result;
        run(engine, machine, "{}", NULL, &result);
        CHECK_ENDED(result, FLOW_RUN_TIMED_OUT, FLOW_ERROR_TIMEOUT, "did not finish within 0.300 s");
        CHECKF(result.elapsed_ms >= 300 && result.elapsed_ms < 3000, "elapsed %.0f ms", result.elapsed_ms);
        flow_run_result_deinit(&result);
    }
    flow_machine_free(machine);

    /* Calls hang with a 20 s time-out in a Map under a Catch: the execution's
     * 0.4 s wins, and States.ALL does not catch it. */
    machine = load("{'StartAt': 'M', 'TimeoutSeconds': 0.4, 'States': {"
                   " 'M': {'Type': 'Map', 'MaxConcurrency': 2, 'End': true,"
                   "   'Catch': [{'ErrorEquals': ['States.ALL'], 'Next': 'Caught'}],"
                   "   'ItemProcessor': {'StartAt': 'H', 'States': {'H': {'Type': 'Task', 'Resource': 'hang',"
                   "     'TimeoutSeconds': 20, 'End': true,"
                   "     'Retry': [{'ErrorEquals': ['States.ALL'], 'MaxAttempts': 3}]}}}},"
                   " 'Caught': {'Type': 'Succeed'}}}");
    if (machine) {
        FlowRunResult result;
        run(engine, machine, "[1, 2, 3, 4]", NULL, &result);
        CHECK_ENDED(result, FLOW_RUN_TIMED_OUT, FLOW_ERROR_TIMEOUT, "did not finish within 0.400 s");
        CHECKF(result.elapsed_ms >= 400 && result.elapsed_ms < 3400, "elapsed %.0f ms", result.elapsed_ms);
        CHECK(result.counters.caught == 0 && result.counters.retries == 0);
        CHECK(result.counters.invocations == 2); /* MaxConcurrency 2; the others never started */
        flow_run_result_deinit(&result);
    }
    flow_machine_free(machine);
    settle(engine);

    /* The caller's bound applies too, and a back-off that would end past the
     * deadline ends at it. */
    machine = load("{'StartAt': 'F', 'States': {'F': {'Type': 'Task', 'Resource': 'flaky', 'End': true,"
                   " 'Retry': [{'ErrorEquals': ['States.ALL'], 'IntervalSeconds': 60, 'MaxAttempts': 1}]}}}");
    if (machine) {
        FlowRunOptions options = {.timeout_seconds = 0.3};
        FlowRunResult result;
        run(engine, machine, "{'fail_times': 1}", &options, &result);
        CHECK_ENDED(result, FLOW_RUN_TIMED_OUT, FLOW_ERROR_TIMEOUT, NULL);
        CHECKF(result.elapsed_ms >= 300 && result.elapsed_ms < 3000, "elapsed %.0f ms", result.elapsed_ms);
        flow_run_result_deinit(&result);
    }
    flow_machine_free(machine);
    settle(engine);
}

static void test_map(FlowEngine *engine) {
    test_begin("run: Map keeps at most MaxConcurrency calls in flight and results in item order");
    FlowMachine *machine = load("{'StartAt': 'Squares', 'States': {'Squares': {'Type': 'Map',"
                                " 'ItemsPath': '$.values', 'MaxConcurrency': 3,"
                                " 'ItemSelector': {'value.$': '$$.Map.Item.Value', 'index.$': '$$.Map.Item.Index', 'tag.$': '$.tag'},"
                                " 'ItemProcessor': {'StartAt': 'Square', 'States': {"
                                "   'Square': {'Type': 'Task', 'Resource': 'square', 'End': true}}},"
                                " 'ResultPath': '$.squares', 'End': true}}}");
    if (!machine) return;
    json_t *input = json_pack("{s:s,s:[]}", "tag", "t", "values");
    for (int i = 0; i < 12; i++) json_array_append_new(json_object_get(input, "values"), json_integer(3 * i + 2));
    EventLog log = {0};
    FlowRunOptions options = {.on_event = record_event, .event_context = &log};
    FlowRunResult result;
    SpirtError error;
    CHECK_OK(flow_run(engine, machine, input, &options, &result, &error), &error);
    CHECK_SUCCEEDED(result);
    json_t *squares = json_object_get(result.output, "squares");
    CHECK(json_array_size(squares) == 12);
    for (int i = 0; i < 12 && i < (int)json_array_size(squares); i++) {
        json_t *square = json_array_get(squares, (size_t)i);
        json_int_t value = 3 * i + 2;
        CHECKF(integer_member(square, "square") == value * value && integer_member(square, "index") == i,
               "item %d", i);
        CHECK(strcmp(json_string_value(json_object_get(square, "tag")), "t") == 0);
    }
    int peak = atomic_load(&world.max_in_flight);
    CHECKF(peak <= 3 && peak >= 2, "peak in flight %d with MaxConcurrency 3", peak);
    CHECK(result.counters.invocations == 12 && result.counters.states_entered == 13);
    CHECK(log.map_indices_seen == 12 * 1);
    const FlowStateTime *inner = state_time(&result, "Squares/Square");
    CHECK(inner != NULL && inner->entries == 12);
    flow_run_result_deinit(&result);
    json_decref(input);
    flow_machine_free(machine);

    /* MaxConcurrencyPath, and 0 = no limit (at most one thread per item). */
    machine = load("{'StartAt': 'M', 'States': {'M': {'Type': 'Map', 'MaxConcurrencyPath': '$.limit', 'ItemsPath': '$.v',"
                   " 'ItemProcessor': {'StartAt': 'S', 'States': {'S': {'Type': 'Task', 'Resource': 'square', 'End': true}}},"
                   " 'End': true}}}");
    if (machine) {
        static const int limits[] = {1, 5, 0};
        for (size_t l = 0; l < 3; l++) {
            reset_world();
            char text[128];
            snprintf(text, sizeof(text), "{'limit': %d, 'v': [1, 2, 3, 4, 5, 6, 7, 8]}", limits[l]);
            run(engine, machine, text, NULL, &result);
            CHECK_SUCCEEDED(result);
            CHECK_JSON(result.output, "[1, 4, 9, 16, 25, 36, 49, 64]");
            int most = limits[l] ? limits[l] : 8;
            peak = atomic_load(&world.max_in_flight);
            CHECKF(peak <= most && (most == 1 || peak >= 2), "peak %d with limit %d", peak, limits[l]);
            flow_run_result_deinit(&result);
        }
        expect_failure(engine, machine, "{'limit': -2, 'v': []}", FLOW_ERROR_RUNTIME, "MaxConcurrencyPath");
        run(engine, machine, "{'limit': 2, 'v': []}", NULL, &result);
        CHECK_SUCCEEDED(result);
        CHECK_JSON(result.output, "[]");
        flow_run_result_deinit(&result);
        expect_failure(engine, machine, "{'limit': 2, 'v': {'not': 'a list'}}", FLOW_ERROR_RUNTIME, "is not an array");
    }
    flow_machine_free(machine);

    test_begin("run: a failing item fails the Map (others stop); the Map's Catch handles it; nested Maps");
    machine = load("{'StartAt': 'M', 'States': {'M': {'Type': 'Map', 'MaxConcurrency': 2,"
                   " 'ItemProcessor': {'StartAt': 'S', 'States': {'S': {'Type': 'Task', 'Resource': 'square', 'End': true}}},"
                   " 'Catch': [{'ErrorEquals': ['spirt.Unlucky'], 'ResultPath': '$', 'Next': 'Recovered'}],"
                   " 'End': true},"
                   " 'Recovered': {'Type': 'Pass', 'Parameters': {'recovered.$': '$.Error'}, 'End': true}}}");
    if (machine) {
        run(engine, machine, "[1, 2, 13, 4, 5, 6]", NULL, &result);
        CHECK_SUCCEEDED(result);
        CHECK_JSON(result.output, "{'recovered': 'spirt.Unlucky'}");
        CHECK(result.counters.caught == 1);
        flow_run_result_deinit(&result);
    }
    flow_machine_free(machine);
    machine = load("{'StartAt': 'Outer', 'States': {'Outer': {'Type': 'Map', 'MaxConcurrency': 2, 'End': true,"
                   " 'ItemProcessor': {'StartAt': 'Inner', 'States': {'Inner': {'Type': 'Map', 'End': true,"
                   "   'ItemProcessor': {'StartAt': 'S', 'States': {'S': {'Type': 'Task', 'Resource': 'square', 'End': true}}}}}}}}}");
    if (machine) {
        run(engine, machine, "[[1, 2], [3], [], [4, 5, 6]]", NULL, &result);
        CHECK_SUCCEEDED(result);
        CHECK_JSON(result.output, "[[1, 4], [9], [], [16, 25, 36]]");
        const FlowStateTime *leaf = state_time(&result, "Outer/Inner/S");
        CHECK(leaf != NULL && leaf->entries == 6);
        flow_run_result_deinit(&result);
    }
    flow_machine_free(machine);
    reset_world();
}

static void test_parallel(FlowEngine *engine) {
    test_begin("run: Parallel branches see the same input; results in branch order; a failed branch");
    FlowMachine *machine = load(
        "{'StartAt': 'Both', 'States': {'Both': {'Type': 'Parallel', 'ResultPath': '$.both', 'Next': 'Done',"
        " 'Parameters': {'a.$': '$.a', 'b.$': '$.b', 'who': 'p', 'e.$': '$.e'},"
        " 'ResultSelector': {'sum.$': '$[0].sum', 'echoed.$': '$[1].b'},"
        " 'Catch': [{'ErrorEquals': ['spirt.Branch'], 'ResultPath': '$.both', 'Next': 'Done'}],"
        " 'Branches': ["
        "   {'StartAt': 'Add', 'States': {'Add': {'Type': 'Task', 'Resource': 'add', 'Parameters': {'a.$': '$.a', 'b.$': '$.b', 'who.$': '$.who'}, 'End': true}}},"
        "   {'StartAt': 'Check', 'States': {"
        "     'Check': {'Type': 'Choice', 'Choices': [{'Variable': '$.e', 'StringEquals': 'none', 'Next': 'Echo'}], 'Default': 'Boom'},"
        "     'Echo': {'Type': 'Task', 'Resource': 'echo', 'End': true},"
        "     'Boom': {'Type': 'Fail', 'Error': 'spirt.Branch', 'Cause': 'asked to fail'}}}]},"
        " 'Done': {'Type': 'Pass', 'OutputPath': '$.both', 'End': true}}}");
    if (!machine) return;
    FlowRunResult result;
    run(engine, machine, "{'a': 5, 'b': 6, 'e': 'none'}", NULL, &result);
    CHECK_SUCCEEDED(result);
    CHECK_JSON(result.output, "{'sum': 11, 'echoed': 6}");
    const FlowStateTime *echo = state_time(&result, "Both[1]/Echo");
    CHECK(echo != NULL && echo->entries == 1);
    flow_run_result_deinit(&result);
    run(engine, machine, "{'a': 5, 'b': 6, 'e': 'fail'}", NULL, &result);
    CHECK_SUCCEEDED(result);
    CHECK_JSON(result.output, "{'Error': 'spirt.Branch', 'Cause': 'asked to fail'}");
    flow_run_result_deinit(&result);
    flow_machine_free(machine);

    /* The first failing branch stops its hung sibling at once: the hung call
     * is abandoned, not waited for (its own time-out is 20 s). */
    machine = load("{'StartAt': 'Both', 'States': {'Both': {'Type': 'Parallel', 'End': true, 'Branches': ["
                   " {'StartAt': 'Hang', 'States': {'Hang': {'Type': 'Task', 'Resource': 'hang', 'TimeoutSeconds': 20, 'End': true}}},"
                   " {'StartAt': 'Pause', 'States': {'Pause': {'Type': 'Wait', 'Seconds': 0.1, 'Next': 'Fail'},"
                   "   'Fail': {'Type': 'Task', 'Resource': 'fail_named', 'End': true}}}]}}}");
    if (machine) {
        run(engine, machine, "{'error': 'spirt.Second', 'cause': 'second branch'}", NULL, &result);
        CHECK_ENDED(result, FLOW_RUN_FAILED, "spirt.Second", "second branch");
        CHECKF(result.elapsed_ms >= 100 && result.elapsed_ms < 3000, "elapsed %.0f ms", result.elapsed_ms);
        CHECK(result.counters.abandoned == 1 && atomic_load(&world.hang_calls) == 1);
        flow_run_result_deinit(&result);
    }
    flow_machine_free(machine);
    settle(engine);
}

typedef struct ConcurrentRun {
    FlowEngine *engine;
    const FlowMachine *machine;
    int base;
    int ok;
} ConcurrentRun;

static void *run_concurrently(void *argument) {
    ConcurrentRun *job = argument;
    json_t *input = json_pack("{s:[i,i,i,i,i]}", "values", job->base, job->base + 1, job->base + 2, job->base + 3,
                              job->base + 4);
    char name[32];
    snprintf(name, sizeof(name), "run-%d", job->base);
    FlowRunOptions options = {.name = name};
    FlowRunResult result;
    job->ok = flow_run(job->engine, job->machine, input, &options, &result, NULL) == SPIRT_OK &&
              result.status == FLOW_RUN_SUCCEEDED;
    json_t *squares = json_object_get(result.output, "squares");
    for (int i = 0; job->ok && i < 5; i++)
        job->ok = json_integer_value(json_array_get(squares, (size_t)i)) == (json_int_t)(job->base + i) * (job->base + i);
    job->ok = job->ok && strcmp(json_string_value(json_object_get(result.output, "by")), name) == 0;
    flow_run_result_deinit(&result);
    json_decref(input);
    return NULL;
}

static void test_concurrent_executions(FlowEngine *engine) {
    test_begin("run: several executions at once on one engine and one machine");
    FlowMachine *machine = load("{'StartAt': 'M', 'States': {"
                                " 'M': {'Type': 'Map', 'ItemsPath': '$.values', 'MaxConcurrency': 2, 'ResultPath': '$.squares',"
                                "   'ItemProcessor': {'StartAt': 'S', 'States': {'S': {'Type': 'Task', 'Resource': 'square', 'End': true}}},"
                                "   'Next': 'Name'},"
                                " 'Name': {'Type': 'Pass', 'Parameters': {'squares.$': '$.squares', 'by.$': '$$.Execution.Name'}, 'End': true}}}");
    if (!machine) return;
    enum { RUNS = 4 };
    ConcurrentRun jobs[RUNS];
    pthread_t threads[RUNS];
    for (int i = 0; i < RUNS; i++) {
        jobs[i] = (ConcurrentRun){.engine = engine, .machine = machine, .base = 100 * (i + 1)};
        pthread_create(&threads[i], NULL, run_concurrently, &jobs[i]);
    }
    for (int i = 0; i < RUNS; i++) {
        pthread_join(threads[i], NULL);
        CHECKF(jobs[i].ok, "execution %d", i);
    }
    flow_machine_free(machine);
    reset_world();
}

static FlowMachine *load_round(void) {
    char path[1024];
    snprintf(path, sizeof(path), "%s/workflows/round.json", SPIRT_SOURCE_DIR);
    SpirtError error;
    FlowMachine *machine = flow_machine_load_file(path, &error);
    CHECKF(machine != NULL, "%s", error.message);
    return machine;
}

static const char round_input[] =
    "{'peer': '127.0.0.1:7001', 'round': 3, 'batches': [0, 1, 2, 3, 4, 5], 'max_concurrency': 2,"
    " 'evaluate': %s, 'gradient_timeout_seconds': 5, 'exchange_wait_seconds': 0.1, 'exchange_timeout_seconds': %s,"
    " 'optimizer': {'name': 'sgd', 'lr': 0.05}, 'aggregator': {'rule': 'median'}}";

static void test_round(FlowEngine *engine) {
    test_begin("run: workflows/round.json, a good round with one bad batch and an evaluation");
    FlowMachine *machine = load_round();
    if (!machine) return;
    char input[1024];
    snprintf(input, sizeof(input), round_input, "true", "2");
    world.bad_batch = 4;
    FlowRunResult result;
    run(engine, machine, input, NULL, &result);
    CHECK_SUCCEEDED(result);
    json_t *out = result.output;
    json_t *gradients = json_object_get(out, "gradients");
    CHECK(json_array_size(gradients) == 6);
    for (size_t b = 0; b < json_array_size(gradients); b++) {
        json_t *gradient = json_array_get(gradients, b);
        CHECK(integer_member(gradient, "batch") == (json_int_t)b);
        CHECK(json_is_true(json_object_get(gradient, "ok")) == (b != 4));
    }
    CHECK_JSON(json_object_get(json_object_get(json_array_get(gradients, 4), "error"), "Error"), "'spirt.DataMissing'");
    CHECK(integer_member(json_object_get(out, "average"), "count") == 5);
    CHECK(integer_member(json_object_get(out, "aggregate"), "inputs") == 2);
    CHECK_JSON(json_object_get(out, "update"), "{'applied_round': 3}");
    CHECK_JSON(json_object_get(json_object_get(out, "membership"), "liveness"),
               "{'live': ['127.0.0.1:7001', '127.0.0.1:7002']}");
    CHECK(json_object_get(out, "evaluation") != NULL);
    CHECK(atomic_load(&world.evaluate_calls) == 1);
    /* The bad batch was tried three times (two retries), the others once. */
    CHECK(atomic_load(&world.gradient_calls) == 5 + 3);
    int peak = atomic_load(&world.gradient_max_in_flight);
    CHECKF(peak <= 2, "peak %d with max_concurrency 2", peak);
    flow_run_result_deinit(&result);
    reset_world();

    test_begin("run: workflows/round.json, a hung exchange is abandoned and the round aggregates alone");
    snprintf(input, sizeof(input), round_input, "false", "0.3");
    world.exchange_hangs = 1;
    run(engine, machine, input, NULL, &result);
    CHECK_SUCCEEDED(result);
    out = result.output;
    CHECK_JSON(json_object_get(out, "exchange"), "{'received': [], 'missing': 'all'}");
    CHECK_JSON(json_object_get(json_object_get(out, "exchange_error"), "Error"), "'States.Timeout'");
    CHECK(integer_member(json_object_get(out, "aggregate"), "inputs") == 1);
    CHECK(json_object_get(out, "evaluation") == NULL && atomic_load(&world.evaluate_calls) == 0);
    CHECK(result.counters.abandoned == 1);
    flow_run_result_deinit(&result);
    settle(engine);

    test_begin("run: workflows/round.json, no gradient at all fails the round at Average");
    snprintf(input, sizeof(input), round_input, "false", "2");
    world.bad_batch = -2;
    run(engine, machine, input, NULL, &result);
    CHECK_ENDED(result, FLOW_RUN_FAILED, "spirt.NoGradient", "no gradient");
    const FlowStateTime *average = state_time(&result, "Average");
    CHECK(average != NULL && average->entries == 1);
    const FlowStateTime *publish = state_time(&result, "Publish");
    CHECK(publish != NULL && publish->entries == 0);
    flow_run_result_deinit(&result);
    flow_machine_free(machine);
    reset_world();
}

static void test_bad_arguments(FlowEngine *engine) {
    test_begin("run: bad arguments are refused, nothing runs");
    SpirtError error;
    FlowRunResult result;
    CHECK_ERROR(flow_run(engine, NULL, NULL, NULL, &result, &error), SPIRT_ERR_INVALID, &error, "machine");
    CHECK(flow_run(engine, NULL, NULL, NULL, NULL, &error) == SPIRT_ERR_INVALID);
    FlowMachine *machine = load("{'StartAt': 'A', 'States': {'A': {'Type': 'Succeed'}}}");
    FlowRunOptions options = {.timeout_seconds = -1};
    CHECK_ERROR(flow_run(engine, machine, NULL, &options, &result, &error), SPIRT_ERR_INVALID, &error, "time-out");
    CHECK_OK(flow_run(engine, machine, NULL, NULL, &result, &error), &error);
    CHECK_JSON(result.output, "{}");
    flow_run_result_deinit(&result);
    flow_machine_free(machine);
    FlowInvoker no_function = {0};
    CHECK(flow_engine_create(&no_function, NULL, &error) == NULL && error.code == SPIRT_ERR_INVALID);
    flow_engine_free(NULL);
    flow_run_result_deinit(NULL);
}

int main(void) {
    pthread_mutex_init(&world.lock, NULL);
    pthread_condattr_t attributes;
    pthread_condattr_init(&attributes);
    pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC);
    pthread_cond_init(&world.released_changed, &attributes);
    pthread_condattr_destroy(&attributes);
    reset_world();

    FlowEngine *engine = new_engine();
    if (engine == NULL) return test_finish();
    test_data_flow(engine);
    test_choice(engine);
    test_wait_and_fail(engine);
    test_retry(engine);
    test_catch(engine);
    test_call_timeouts(engine);
    test_execution_timeout(engine);
    test_map(engine);
    test_parallel(engine);
    test_concurrent_executions(engine);
    test_round(engine);
    test_bad_arguments(engine);
    settle(engine);
    flow_engine_free(engine);
    return test_finish();
}
