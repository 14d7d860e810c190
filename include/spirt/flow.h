/* flow.h -- the workflow engine: state machines written in Amazon States
 * Language (ASL), run against tasks named by their Resource.
 *
 * A FlowMachine is a definition loaded from JSON and checked once, at load
 * time: unknown state types, unknown or misspelt fields, dangling Next /
 * Default / StartAt, bad values, unreachable states and End/Next mistakes are
 * refused with the JSON path of the culprit, e.g.
 *   workflows/round.json: States.Gradients.Retry[0].MaxAttempts: must be a non-negative integer
 * A loaded machine is immutable and may be shared by any number of threads.
 *
 * A FlowEngine runs machines. It knows no particular function: a Task state
 * names a resource ("compute_gradients"), and the engine hands the resource
 * name, a JSON input and a time-out to the FlowInvoker the caller supplied.
 * The peer wires names to src/fn; a remote invoker puts the call on a Redis
 * Stream and waits for a worker's result; the tests register C functions.
 *
 * Supported ASL (details and deviations in docs/flow.md):
 *   states   Task, Parallel, Map (inline), Choice, Wait, Pass, Succeed, Fail
 *   top      StartAt, States, Comment, TimeoutSeconds, Version ("1.0")
 *   data     InputPath, Parameters / ItemSelector / ResultSelector with
 *            "key.$" references, ResultPath, OutputPath, Result
 *   errors   Retry (ErrorEquals, IntervalSeconds, MaxAttempts, BackoffRate,
 *            MaxDelaySeconds, JitterStrategy), Catch (ErrorEquals, Next,
 *            ResultPath); TimeoutSeconds / TimeoutSecondsPath per Task
 *   paths    reference paths only: $, $.a.b, $.a[0], $['a b'], $$.x (the
 *            context object); no wildcards, filters, slices or intrinsics
 *
 * Time-outs never depend on the invoker's good behaviour: each call runs on
 * its own thread while the engine waits on a condition variable with a
 * deadline (the call's time-out plus FlowEngineOptions.abandon_grace_seconds).
 * A call still running at that deadline is abandoned: the state fails with
 * States.Timeout, the run goes on per Retry/Catch, and whatever the call
 * returns later is dropped. An execution time-out (the machine's
 * TimeoutSeconds, or FlowRunOptions.timeout_seconds) ends the whole run,
 * including every Map iteration and Parallel branch, and cannot be caught.
 *
 * Thread-safety: FlowMachine is read-only after loading. FlowEngine is
 * thread-safe: any number of flow_run() calls may run at once on one engine
 * (and on one machine). Invoker calls happen concurrently on engine threads,
 * so the invoker must be thread-safe. Event callbacks of one execution are
 * serialised (never two at once for the same run) but come from any thread. */
#ifndef SPIRT_FLOW_H
#define SPIRT_FLOW_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h> /* json_t: inputs, outputs and definitions are JSON */

#include "spirt/error.h" /* SpirtError */

#ifdef __cplusplus
extern "C" {
#endif

/* --- Error names (ASL's, plus whatever custom names invokers report) --- */

#define FLOW_ERROR_ALL "States.ALL"                 /* matches any error but States.Runtime */
#define FLOW_ERROR_TIMEOUT "States.Timeout"         /* a Task or the execution ran too long */
#define FLOW_ERROR_TASK_FAILED "States.TaskFailed"  /* matches any error but Timeout/Runtime */
#define FLOW_ERROR_RUNTIME "States.Runtime"         /* bad path at run time; never retried or caught */
#define FLOW_ERROR_NO_CHOICE_MATCHED "States.NoChoiceMatched"
#define FLOW_ERROR_RESULT_PATH_MATCH_FAILURE "States.ResultPathMatchFailure"

#define FLOW_ERROR_NAME_MAX 128 /* bytes of an error name, NUL included */
#define FLOW_CAUSE_MAX 1024     /* bytes of a cause, NUL included (longer is cut) */

/* --- Machines --- */

typedef struct FlowMachine FlowMachine;

/* Reads, parses and validates the definition in the file at `path`. Malformed
 * JSON is reported with line and column ("round.json:12:5: ..."); invalid
 * definitions with the JSON path of the problem. Duplicate keys are refused
 * (two states with one name would otherwise silently merge). The caller owns
 * the result (flow_machine_free). Errors: SPIRT_ERR_IO / SPIRT_ERR_NOT_FOUND
 * (file), SPIRT_ERR_FORMAT (JSON or definition), SPIRT_ERR_NOMEM. */
FlowMachine *flow_machine_load_file(const char *path, SpirtError *error);
/* The same from text; `source_name` prefixes messages (NULL: "workflow"). */
FlowMachine *flow_machine_load_string(const char *text, const char *source_name, SpirtError *error);
/* The same from a parsed definition; `definition` is only read (the machine
 * keeps copies of what it needs). */
FlowMachine *flow_machine_load_json(const json_t *definition, const char *source_name, SpirtError *error);
void flow_machine_free(FlowMachine *machine); /* NULL is allowed */

/* The top-level Comment, or "" when there is none. Borrowed from the machine. */
const char *flow_machine_comment(const FlowMachine *machine);

/* Calls `known(context, name)` for every Task Resource of the machine
 * (nested ones included) and fails with SPIRT_ERR_NOT_FOUND and the Task's
 * path at the first name for which it returns 0. Lets a peer refuse a
 * workflow naming a function it does not have before the first round. */
typedef int (*FlowResourceKnown)(void *context, const char *resource);
int flow_machine_check_resources(const FlowMachine *machine, FlowResourceKnown known, void *context,
                                 SpirtError *error);

/* --- Invokers --- */

/* One task invocation, as the engine hands it to the invoker. */
typedef struct FlowCall {
    const char *resource;       /* the Task's Resource, e.g. "compute_gradients" */
    json_t *input;              /* the call's own copy of its input (after Parameters): no other
                                   thread sees it; the invoker may change it, or return it (a new
                                   reference) as its output, but must not use it after returning */
    double timeout_seconds;     /* the time the invoker may take, from when it was called */
    uint64_t deadline_ns;       /* the same as a clock_monotonic_ns() instant */
    const char *execution_name; /* the run this call belongs to (for logs, stream entries) */
    const char *state_path;     /* e.g. "Gradients/ComputeGradient" */
    unsigned attempt;           /* 0 for the first try, 1 for the first retry, ... */
    long map_index;             /* the Map item being processed, or -1 */
} FlowCall;

/* What the invoker fills in. It starts zeroed. */
typedef struct FlowCallResult {
    json_t *output;                  /* success: a reference the engine takes over (NULL = null) */
    char error[FLOW_ERROR_NAME_MAX]; /* failure: the error name ("" = States.TaskFailed) */
    char cause[FLOW_CAUSE_MAX];      /* failure: a human explanation (may be "") */
} FlowCallResult;

/* Runs one call and returns SPIRT_OK with result->output set, or a negative
 * status with result->error / result->cause set. A return of
 * SPIRT_ERR_TIMEOUT with no error name means States.Timeout. The invoker
 * must return by call->deadline_ns (reporting States.Timeout if it had to
 * give up); if it does not, the engine abandons the call anyway and drops
 * its late result. Called concurrently from several threads. */
typedef int (*FlowInvokeFunction)(void *context, const FlowCall *call, FlowCallResult *result);

typedef struct FlowInvoker {
    FlowInvokeFunction invoke;
    void *context; /* passed back to invoke; must outlive every call (see flow_engine_wait_idle) */
} FlowInvoker;

/* Fills `result` with an error name and a printf-style cause and returns
 * SPIRT_ERR_INVALID (or SPIRT_ERR_TIMEOUT when `error_name` is
 * States.Timeout), so an invoker can `return flow_call_fail(result, ...)`. */
int flow_call_fail(FlowCallResult *result, const char *error_name, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

/* --- Engines --- */

typedef struct FlowEngine FlowEngine;

typedef struct FlowEngineOptions {
    /* How long past a call's own deadline the engine still waits for its
     * result before abandoning it. <= 0 means the default, 0.05 s. */
    double abandon_grace_seconds;
    /* Most threads one Map state runs its items on when MaxConcurrency is 0
     * ("no limit"). 0 means the default, 64. */
    unsigned map_threads_max;
} FlowEngineOptions;

/* A new engine calling `invoker` (copied). `options` may be NULL. The caller
 * owns the engine (flow_engine_free). */
FlowEngine *flow_engine_create(const FlowInvoker *invoker, const FlowEngineOptions *options, SpirtError *error);

/* Waits up to `seconds` until no invoker call is running, abandoned ones
 * included. Returns SPIRT_OK when idle, SPIRT_ERR_TIMEOUT otherwise: then
 * the invoker's context is still in use and must not be freed yet. */
int flow_engine_wait_idle(FlowEngine *engine, double seconds);

/* Invoker calls (abandoned ones) still running right now. */
size_t flow_engine_running_calls(FlowEngine *engine);

/* Frees the engine; no flow_run may be in progress on it. Never blocks: if
 * abandoned calls are still running, the last of them frees the engine's
 * memory when it returns. NULL is allowed. */
void flow_engine_free(FlowEngine *engine);

/* --- Running --- */

typedef enum FlowEventType {
    FLOW_EVENT_STATE_ENTERED = 0, /* a state starts (once per entry, not per retry) */
    FLOW_EVENT_STATE_EXITED,      /* a state ended successfully; elapsed_ms is set */
    FLOW_EVENT_STATE_FAILED,      /* a state ended with an error (before Catch); error/cause set */
    FLOW_EVENT_RETRY,             /* a retry is scheduled: error, attempt, delay_seconds set */
    FLOW_EVENT_CAUGHT             /* a Catch routed an error: error and next_state set */
} FlowEventType;

typedef struct FlowEvent {
    FlowEventType type;
    const char *execution_name;
    const char *state_name; /* the state's own name */
    const char *state_path; /* qualified: "Gradients/ComputeGradient", "Both[1]/Evaluate" */
    const char *state_type; /* "Task", "Map", ... */
    long map_index;         /* the Map item this state runs for, or -1 */
    double elapsed_ms;      /* EXITED, FAILED: time since the state was entered */
    const char *error;      /* FAILED, RETRY, CAUGHT; NULL otherwise */
    const char *cause;      /* FAILED, RETRY, CAUGHT; NULL otherwise */
    unsigned attempt;       /* RETRY: 1 for the first retry, ... */
    double delay_seconds;   /* RETRY: the back-off before that retry */
    const char *next_state; /* CAUGHT: the catcher's Next */
} FlowEvent;

/* Everything in `event` is borrowed for the duration of the call. */
typedef void (*FlowEventFunction)(void *context, const FlowEvent *event);

typedef struct FlowRunOptions {
    const char *name;           /* $$.Execution.Name and Id; NULL: "execution" */
    double timeout_seconds;     /* > 0: a bound on the whole run, in addition to the
                                   machine's TimeoutSeconds (the smaller wins) */
    FlowEventFunction on_event; /* NULL: no events */
    void *event_context;
} FlowRunOptions;

typedef enum FlowRunStatus {
    FLOW_RUN_SUCCEEDED = 0,
    FLOW_RUN_FAILED = 1,   /* an error no Catch handled, or a Fail state */
    FLOW_RUN_TIMED_OUT = 2 /* the execution time-out passed (error is States.Timeout) */
} FlowRunStatus;

typedef struct FlowCounters {
    uint64_t states_entered; /* state entries, Map iterations and branches included */
    uint64_t invocations;    /* invoker calls started, retries included */
    uint64_t retries;        /* retries scheduled (Task, Map and Parallel) */
    uint64_t caught;         /* errors routed by a Catch */
    uint64_t task_errors;    /* calls that ended with an error (time-outs included) */
    uint64_t timeouts;       /* calls that ended with States.Timeout */
    uint64_t abandoned;      /* calls the engine stopped waiting for */
} FlowCounters;

/* Time spent in one state over the run. For states inside a Map or a
 * Parallel the times of all iterations add up, so they can exceed the run's
 * wall time. */
typedef struct FlowStateTime {
    char *path;         /* qualified state path, owned by the result */
    uint64_t entries;   /* how many times it was entered */
    double total_ms;    /* summed time from entry to exit */
} FlowStateTime;

typedef struct FlowRunResult {
    FlowRunStatus status;
    json_t *output;                  /* SUCCEEDED: the final output (owned by the result) */
    char error[FLOW_ERROR_NAME_MAX]; /* FAILED, TIMED_OUT: the error name */
    char cause[FLOW_CAUSE_MAX];      /* FAILED, TIMED_OUT: its cause */
    FlowCounters counters;
    FlowStateTime *state_times;      /* one per state of the machine, in definition order */
    size_t state_count;
    double elapsed_ms;               /* wall time of the run */
} FlowRunResult;

/* Runs `machine` on `input` (only read; NULL means {}) to its end. Returns
 * SPIRT_OK whenever the execution ran to an end -- successful or not:
 * result->status says which -- and a negative status only when it could not
 * run at all (SPIRT_ERR_INVALID, SPIRT_ERR_NOMEM; `error` says why). The
 * caller owns what `result` holds afterwards: flow_run_result_deinit. */
int flow_run(FlowEngine *engine, const FlowMachine *machine, const json_t *input,
             const FlowRunOptions *options, FlowRunResult *result, SpirtError *error);
void flow_run_result_deinit(FlowRunResult *result); /* NULL is allowed */

/* A short name for a status ("succeeded", "failed", "timed out"). */
const char *flow_run_status_name(FlowRunStatus status);

#ifdef __cplusplus
}
#endif

#endif /* SPIRT_FLOW_H */
