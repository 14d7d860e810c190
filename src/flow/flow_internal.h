/* flow_internal.h -- what the files of src/flow share and nobody else sees:
 * the compiled form of a machine (states, paths, templates, choice rules),
 * the loader's error-path helpers, failures, and the engine's call and wait
 * primitives that the executor (run.c, fanout.c) is built on.
 *
 * Files: path.c (JSONPath subset), template.c (Parameters and friends),
 * choice.c (Choice rules), load.c (definitions -> FlowMachine), engine.c
 * (engines, invoker threads, waits, scopes), run.c (executions),
 * fanout.c (Map and Parallel). */
#ifndef SPIRT_FLOW_INTERNAL_H
#define SPIRT_FLOW_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "spirt/flow.h"
#include "spirt/rng.h" /* jitter of retry back-offs */

/* --- Paths (path.c) --- */

/* One step of a reference path: a member name, or an array index when
 * `name` is NULL. */
typedef struct FlowPathStep {
    char *name;
    size_t index;
} FlowPathStep;

/* A parsed reference path: "$" or "$$" followed by steps. */
typedef struct FlowPath {
    char *text;         /* as written, for messages */
    int context;        /* 1: starts at the context object ($$) */
    FlowPathStep *steps;
    size_t step_count;
} FlowPath;

/* Parses `text`. On a syntax error returns SPIRT_ERR_FORMAT and points *why
 * at a static explanation; SPIRT_ERR_NOMEM when out of memory. */
int flow_path_parse(const char *text, FlowPath *path, const char **why);
void flow_path_deinit(FlowPath *path);
/* The node `path` names under `root` (borrowed), or NULL if there is none. */
json_t *flow_path_get(const FlowPath *path, json_t *root);
/* A new document: `root` with `value` placed at `path` (member steps only;
 * missing objects on the way are created). Nothing reachable from `root` is
 * changed: containers along the path are copied, so documents shared between
 * threads stay intact. `value` is borrowed. NULL with *why set when an
 * existing node on the way is not an object, or on allocation failure. */
json_t *flow_path_set(json_t *root, const FlowPath *path, json_t *value, const char **why);

/* The two documents a path may start from. `context` may be NULL when the
 * state makes no use of $$. */
typedef struct FlowRoots {
    json_t *input;
    json_t *context;
} FlowRoots;

json_t *flow_roots_get(const FlowRoots *roots, const FlowPath *path);

/* --- Failures --- */

typedef enum FlowFailureKind {
    FLOW_FAILURE_NONE = 0,
    FLOW_FAILURE_ERROR,             /* an error Retry and Catch may handle */
    FLOW_FAILURE_RUNTIME,           /* States.Runtime: ends the execution */
    FLOW_FAILURE_CANCELLED,         /* a sibling branch failed; stop quietly */
    FLOW_FAILURE_EXECUTION_TIMEOUT  /* the execution's deadline passed */
} FlowFailureKind;

typedef struct FlowFailure {
    FlowFailureKind kind;
    char error[FLOW_ERROR_NAME_MAX];
    char cause[FLOW_CAUSE_MAX];
} FlowFailure;

/* Fills `failure` and returns SPIRT_ERR_INVALID, for `return flow_fail(...)`. */
int flow_fail(FlowFailure *failure, FlowFailureKind kind, const char *error_name, const char *format, ...)
    __attribute__((format(printf, 4, 5)));

/* ASL's matching rule: `pattern` (from ErrorEquals) matches `error`. */
int flow_error_matches(const char *pattern, const char *error);

/* --- Templates: Parameters, ItemSelector, ResultSelector (template.c) --- */

typedef enum FlowTemplateKind {
    FLOW_TEMPLATE_LITERAL = 0, /* a constant subtree, copied as is */
    FLOW_TEMPLATE_PATH,        /* the value of a "key.$" member */
    FLOW_TEMPLATE_OBJECT,
    FLOW_TEMPLATE_ARRAY
} FlowTemplateKind;

typedef struct FlowTemplate {
    FlowTemplateKind kind;
    char *key;                 /* member name in the output ("x" for "x.$"); NULL at the top */
    json_t *literal;           /* LITERAL */
    FlowPath path;             /* PATH */
    struct FlowTemplate *children; /* OBJECT, ARRAY */
    size_t child_count;
} FlowTemplate;

/* --- Loading (load.c, also used by template.c and choice.c) --- */

#define FLOW_LOADER_PATH_MAX 200

struct FlowState;

typedef struct FlowLoader {
    const char *source;
    SpirtError *error;
    char path[FLOW_LOADER_PATH_MAX]; /* JSON path of what is being read */
    size_t path_length;
    struct FlowState *state;         /* the state being read, or NULL */
    const struct FlowState **states; /* every state read so far, in definition order */
    size_t state_count, state_capacity;
} FlowLoader;

/* Appends ".field" (or "[index]") to the loader's path and returns the old
 * length, for flow_loader_pop. */
size_t flow_loader_push(FlowLoader *loader, const char *field);
size_t flow_loader_push_index(FlowLoader *loader, size_t index);
void flow_loader_pop(FlowLoader *loader, size_t length);
/* Records "source: path: message" and returns SPIRT_ERR_FORMAT. */
int flow_loader_fail(FlowLoader *loader, const char *format, ...) __attribute__((format(printf, 2, 3)));
int flow_loader_nomem(FlowLoader *loader);
/* Refuses any member of `object` not in the NULL-terminated `allowed` list,
 * naming it. `what` says what the object is ("a Task state"). */
int flow_loader_check_fields(FlowLoader *loader, const json_t *object, const char *const *allowed,
                             const char *what);
/* Reads the array object[field]: allocates *elements (zeroed, one
 * `element_size` slot per element) and calls `read` on each element with the
 * loader's path at field[index]. *count grows before each call, so the
 * caller's free function also releases a half-read array. A missing field is
 * refused only when `required`, an empty array unless `allow_empty`; `what`
 * names the elements in messages ("retriers"). */
typedef int (*FlowLoaderElement)(FlowLoader *loader, const json_t *value, size_t index, int is_last, void *slot,
                                 void *context);
int flow_loader_array(FlowLoader *loader, const json_t *object, const char *field, int required, int allow_empty,
                      const char *what, size_t element_size, void **elements, size_t *count,
                      FlowLoaderElement read, void *context);
/* Parses the string `value` (at the loader's current path) as a path.
 * `allow_context` says whether "$$" paths are allowed here. */
int flow_loader_path(FlowLoader *loader, const json_t *value, int allow_context, FlowPath *path);

int flow_template_compile(FlowLoader *loader, const json_t *value, FlowTemplate *template_out);
void flow_template_deinit(FlowTemplate *template_value);
/* A new document built from the template, or NULL with `failure` set
 * (States.Runtime) when a path finds nothing. */
json_t *flow_template_expand(const FlowTemplate *template_value, const FlowRoots *roots, const char *field,
                             FlowFailure *failure);

/* --- Choice rules (choice.c) --- */

typedef enum FlowChoiceKind {
    FLOW_CHOICE_AND = 0,
    FLOW_CHOICE_OR,
    FLOW_CHOICE_NOT,
    FLOW_CHOICE_COMPARE
} FlowChoiceKind;

typedef struct FlowChoiceRule {
    FlowChoiceKind kind;
    int next;                 /* top-level rules: the state index to go to; -1 inside */
    char *next_name;          /* top-level rules: Next as written, until resolved */
    FlowPath variable;        /* COMPARE */
    int operator_index;       /* COMPARE: index into the operator table of choice.c */
    json_t *operand;          /* COMPARE with a literal operand */
    FlowPath operand_path;    /* COMPARE with a ...Path operand */
    int operand_is_path;
    struct FlowChoiceRule *children; /* AND, OR (child_count >= 1), NOT (one) */
    size_t child_count;
} FlowChoiceRule;

/* Reads one rule; `top_level` rules must have Next, nested ones must not. */
int flow_choice_compile(FlowLoader *loader, const json_t *value, int top_level, FlowChoiceRule *rule);
void flow_choice_deinit(FlowChoiceRule *rule);
/* Evaluates the rule against `roots` into *matched. Returns SPIRT_OK, or a
 * failure (States.Runtime) when a Variable names nothing (IsPresent aside). */
int flow_choice_evaluate(const FlowChoiceRule *rule, const FlowRoots *roots, int *matched, FlowFailure *failure);

/* --- The machine --- */

typedef enum FlowStateType {
    FLOW_STATE_TASK = 0,
    FLOW_STATE_PARALLEL,
    FLOW_STATE_MAP,
    FLOW_STATE_CHOICE,
    FLOW_STATE_WAIT,
    FLOW_STATE_PASS,
    FLOW_STATE_SUCCEED,
    FLOW_STATE_FAIL
} FlowStateType;

/* InputPath / OutputPath / ResultPath: absent ("$"), null, or a path. */
typedef enum FlowIoKind { FLOW_IO_DEFAULT = 0, FLOW_IO_NULL, FLOW_IO_PATH } FlowIoKind;

typedef struct FlowIoPath {
    FlowIoKind kind;
    FlowPath path;
} FlowIoPath;

typedef struct FlowRetrier {
    char **errors;
    size_t error_count;
    double interval_seconds;
    long max_attempts;
    double backoff_rate;
    double max_delay_seconds; /* 0: no cap */
    int full_jitter;
} FlowRetrier;

typedef struct FlowCatcher {
    char **errors;
    size_t error_count;
    int next;
    char *next_name;
    FlowIoPath result_path;
} FlowCatcher;

typedef struct FlowSubMachine {
    struct FlowState *states;
    size_t state_count;
    int start;
} FlowSubMachine;

typedef struct FlowState {
    char *name;
    char *path;               /* qualified name, "Gradients/ComputeGradient" */
    int id;                   /* index over the whole machine, nested states included */
    FlowStateType type;
    int next;                 /* index in its sub-machine; -1 with `end` */
    char *next_name;
    int end;
    int uses_context;         /* some path of this state starts with $$ */

    FlowIoPath input_path, output_path, result_path;
    FlowTemplate *parameters;      /* Task, Pass, Parallel; Map: ItemSelector */
    FlowTemplate *result_selector; /* Task, Parallel, Map */
    FlowRetrier *retriers;
    size_t retrier_count;
    FlowCatcher *catchers;
    size_t catcher_count;

    /* Task */
    char *resource;
    double timeout_seconds;
    FlowPath *timeout_path;

    /* Parallel (branch_count sub-machines) and Map (one, `branches[0]`) */
    FlowSubMachine *branches;
    size_t branch_count;
    FlowPath *items_path;          /* Map; NULL: "$" */
    long max_concurrency;          /* Map; 0: no limit */
    FlowPath *max_concurrency_path;

    /* Choice */
    FlowChoiceRule *choices;
    size_t choice_count;
    int default_next;              /* -1: none */
    char *default_name;

    /* Wait */
    double seconds;
    FlowPath *seconds_path;

    /* Pass */
    json_t *result;

    /* Fail */
    char *error;
    char *cause;
    FlowPath *error_path;
    FlowPath *cause_path;
} FlowState;

struct FlowMachine {
    FlowSubMachine root;
    double timeout_seconds; /* 0: none */
    char *comment;
    char *source;
    const FlowState **states_by_id; /* every state, in definition order */
    size_t state_total;
};

const char *flow_state_type_name(FlowStateType type);

/* --- Engine primitives (engine.c) --- */

struct FlowEngine {
    FlowInvoker invoker;
    double abandon_grace_seconds;
    unsigned map_threads_max;
    pthread_mutex_t lock;   /* guards the fields below and every call record */
    pthread_cond_t changed; /* broadcast on any call's end and any scope stop */
    size_t running_calls;
    int freed;              /* flow_engine_free was called while calls ran */
};

/* A cancellation scope: a run, a Map, a Parallel. A scope is stopped when it
 * or any scope above it is. */
typedef struct FlowScope {
    atomic_int stopped;
    const struct FlowScope *parent;
} FlowScope;

int flow_scope_stopped(const FlowScope *scope);
/* Stops `scope` and wakes every waiter of the engine. */
void flow_scope_stop(FlowEngine *engine, FlowScope *scope);

/* Sleeps until `deadline_ns` (monotonic) unless `scope` stops first.
 * Returns 1 if the deadline was reached, 0 if the scope stopped. */
int flow_engine_sleep_until(FlowEngine *engine, const FlowScope *scope, uint64_t deadline_ns);

typedef enum FlowCallEnd {
    FLOW_CALL_RETURNED = 0,  /* the invoker returned; see status/output/error */
    FLOW_CALL_DEADLINE,      /* abandoned: deadline + grace passed */
    FLOW_CALL_STOPPED,       /* abandoned: the scope stopped */
    FLOW_CALL_NOT_STARTED    /* no thread could be started (or no memory) */
} FlowCallEnd;

typedef struct FlowCallOutcome {
    int status;              /* the invoker's return value (RETURNED) */
    json_t *output;          /* RETURNED with SPIRT_OK: owned by the caller */
    char error[FLOW_ERROR_NAME_MAX];
    char cause[FLOW_CAUSE_MAX];
} FlowCallOutcome;

/* Runs one invoker call on a thread of its own and waits for it, for
 * call->deadline_ns plus the grace at most, or until `scope` stops. Takes
 * ownership of call->input; copies the strings it needs, so an abandoned
 * call never touches the caller's memory again. */
FlowCallEnd flow_engine_call(FlowEngine *engine, const FlowScope *scope, const FlowCall *call,
                             FlowCallOutcome *outcome);

/* --- Executions (run.c, fanout.c) --- */

typedef struct FlowStateStats {
    uint64_t entries;
    uint64_t total_ns;
} FlowStateStats;

typedef struct FlowExecution {
    FlowEngine *engine;
    const FlowMachine *machine;
    json_t *input;              /* a private copy of the run's input */
    char *name;
    char start_time[40];        /* ISO 8601, UTC */
    uint64_t start_ns;
    uint64_t deadline_ns;       /* 0: none */
    FlowScope root;
    atomic_int timed_out;
    pthread_mutex_t lock;       /* counters, stats and rng */
    FlowCounters counters;
    SpirtRng rng;
    FlowStateStats *stats;      /* [machine->state_total] */
    pthread_mutex_t event_lock; /* serialises callbacks */
    FlowEventFunction on_event;
    void *event_context;
} FlowExecution;

/* Where a sub-machine runs: its execution, its scope, its Map item. */
typedef struct FlowFrame {
    FlowExecution *execution;
    const FlowScope *scope;
    long map_index;
} FlowFrame;

/* Runs a sub-machine from its StartAt to its end. `input` is borrowed;
 * *output is a new reference on success. */
int flow_run_machine(const FlowFrame *frame, const FlowSubMachine *machine, json_t *input, json_t **output,
                     FlowFailure *failure);

/* Checks, at a state boundary, whether the run must stop: the deadline
 * passed (marks the execution timed out) or the scope stopped. Returns
 * SPIRT_OK to go on, or a failure of kind EXECUTION_TIMEOUT / CANCELLED. */
int flow_frame_check(const FlowFrame *frame, FlowFailure *failure);
/* The failure for a scope that stopped while waiting. */
int flow_frame_stopped(const FlowFrame *frame, FlowFailure *failure);
/* Marks the execution timed out and stops everything in it. */
int flow_execution_timeout(FlowExecution *execution, FlowFailure *failure);

/* A new context object ($$) for a state entered at `entered_wall_ms`;
 * `item` may be NULL (no Map.Item). */
json_t *flow_context_object(const FlowFrame *frame, const FlowState *state, int64_t entered_wall_ms,
                            unsigned retry_count, long item_index, json_t *item);

void flow_count(FlowExecution *execution, uint64_t *counter, uint64_t amount);

/* Map and Parallel: their result array, a new reference, or a failure. */
int flow_run_map(const FlowFrame *frame, const FlowState *state, json_t *effective_input, json_t **result,
                 FlowFailure *failure);
int flow_run_parallel(const FlowFrame *frame, const FlowState *state, json_t *effective_input, json_t **result,
                      FlowFailure *failure);

#endif /* SPIRT_FLOW_INTERNAL_H */
