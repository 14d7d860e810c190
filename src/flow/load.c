/* load.c -- reading a state machine definition and refusing bad ones.
 *
 * Everything that can be checked without running is checked here, once, so
 * that a mistake in a workflow file shows up when a peer starts and not in
 * round 300: JSON syntax (with line and column), duplicate keys, unknown or
 * unsupported fields, field types and values, End/Next rules, dangling state
 * names, unreachable states, error names in Retry/Catch, path syntax. Every
 * message names the JSON path of the problem:
 *   round.json: States.Gradients.Retry[0].MaxAttempts: must be a non-negative integer
 *
 * The definition becomes a FlowMachine: states in arrays, transitions as
 * indices, paths parsed, templates compiled. It is never changed afterwards,
 * which is what lets executions share it without locks. */
#include "flow_internal.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ASL bounds TimeoutSeconds and friends by 99999999; so do we, which also
 * keeps every deadline in range of a uint64 nanosecond clock. */
#define SECONDS_MAX 99999999.0

/* --- The loader's path and messages --- */

size_t flow_loader_push(FlowLoader *loader, const char *field) {
    size_t old = loader->path_length;
    int written = snprintf(loader->path + old, sizeof(loader->path) - old, "%s%s", old ? "." : "", field);
    if (written > 0) loader->path_length = old + (size_t)written;
    if (loader->path_length >= sizeof(loader->path)) loader->path_length = sizeof(loader->path) - 1;
    return old;
}

size_t flow_loader_push_index(FlowLoader *loader, size_t index) {
    size_t old = loader->path_length;
    int written = snprintf(loader->path + old, sizeof(loader->path) - old, "[%zu]", index);
    if (written > 0) loader->path_length = old + (size_t)written;
    if (loader->path_length >= sizeof(loader->path)) loader->path_length = sizeof(loader->path) - 1;
    return old;
}

void flow_loader_pop(FlowLoader *loader, size_t length) {
    loader->path_length = length;
    loader->path[length] = '\0';
}

int flow_loader_fail(FlowLoader *loader, const char *format, ...) {
    char message[SPIRT_ERROR_MESSAGE_MAX];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof(message), format, args);
    va_end(args);
    if (loader->path_length > 0)
        return spirt_error_set(loader->error, SPIRT_ERR_FORMAT, "%s: %s: %s", loader->source, loader->path, message);
    return spirt_error_set(loader->error, SPIRT_ERR_FORMAT, "%s: %s", loader->source, message);
}

int flow_loader_nomem(FlowLoader *loader) {
    return spirt_error_set(loader->error, SPIRT_ERR_NOMEM, "%s: out of memory while loading", loader->source);
}

/* Fields of ASL that this engine knows and deliberately does not implement:
 * they get a clearer message than "unknown field". */
static const char *const unsupported_fields[] = {
    "HeartbeatSeconds", "HeartbeatSecondsPath", "Credentials", "Timestamp", "TimestampPath", "ItemReader",
    "ResultWriter", "ItemBatcher", "ToleratedFailurePercentage", "ToleratedFailurePercentagePath",
    "ToleratedFailureCount", "ToleratedFailureCountPath", "Label", "Assign", "Output", "Arguments",
    "QueryLanguage", "Items", NULL};

static int in_list(const char *const *list, const char *name) {
    for (; *list; list++)
        if (strcmp(*list, name) == 0) return 1;
    return 0;
}

int flow_loader_check_fields(FlowLoader *loader, const json_t *object, const char *const *allowed,
                             const char *what) {
    const char *key;
    json_t *member;
    json_object_foreach((json_t *)object, key, member) {
        if (in_list(allowed, key)) continue;
        flow_loader_push(loader, key);
        if (in_list(unsupported_fields, key)) return flow_loader_fail(loader, "not supported by this engine");
        if (strcmp(key, "Retry") == 0 || strcmp(key, "Catch") == 0 || strcmp(key, "Next") == 0 ||
            strcmp(key, "End") == 0 || strcmp(key, "ResultPath") == 0 || strcmp(key, "Parameters") == 0 ||
            strcmp(key, "InputPath") == 0 || strcmp(key, "OutputPath") == 0 || strcmp(key, "ResultSelector") == 0)
            return flow_loader_fail(loader, "not allowed on %s", what);
        return flow_loader_fail(loader, "unknown field in %s", what);
    }
    return SPIRT_OK;
}

int flow_loader_array(FlowLoader *loader, const json_t *object, const char *field, int required, int allow_empty,
                      const char *what, size_t element_size, void **elements, size_t *count,
                      FlowLoaderElement read, void *context) {
    json_t *array = json_object_get(object, field);
    *elements = NULL;
    *count = 0;
    if (array == NULL && !required) return SPIRT_OK;
    size_t saved = flow_loader_push(loader, field);
    if (array == NULL) return flow_loader_fail(loader, "required field missing");
    if (!json_is_array(array) || (!allow_empty && json_array_size(array) == 0))
        return flow_loader_fail(loader, "must be a%s array of %s", allow_empty ? "n" : " non-empty", what);
    size_t size = json_array_size(array);
    *elements = calloc(size + 1, element_size);
    if (*elements == NULL) return flow_loader_nomem(loader);
    for (size_t i = 0; i < size; i++) {
        size_t inner = flow_loader_push_index(loader, i);
        *count = i + 1;
        int status = read(loader, json_array_get(array, i), i, i + 1 == size, (char *)*elements + i * element_size,
                          context);
        if (status != SPIRT_OK) return status;
        flow_loader_pop(loader, inner);
    }
    flow_loader_pop(loader, saved);
    return SPIRT_OK;
}

int flow_loader_path(FlowLoader *loader, const json_t *value, int allow_context, FlowPath *path) {
    memset(path, 0, sizeof(*path));
    if (!json_is_string(value)) return flow_loader_fail(loader, "must be a path string");
    const char *why = NULL;
    int status = flow_path_parse(json_string_value(value), path, &why);
    if (status == SPIRT_ERR_NOMEM) return flow_loader_nomem(loader);
    if (status != SPIRT_OK) return flow_loader_fail(loader, "bad path '%s': %s", json_string_value(value), why);
    if (path->context) {
        if (!allow_context) {
            flow_path_deinit(path);
            return flow_loader_fail(loader, "the context object ($$) is not allowed here");
        }
        if (loader->state) loader->state->uses_context = 1;
    }
    return SPIRT_OK;
}

/* --- Field readers: each pushes the field, checks, pops --- */

static int read_string(FlowLoader *loader, const json_t *object, const char *field, int required, char **out) {
    json_t *value = json_object_get(object, field);
    *out = NULL;
    if (value == NULL) {
        if (!required) return SPIRT_OK;
        flow_loader_push(loader, field);
        return flow_loader_fail(loader, "required field missing");
    }
    size_t saved = flow_loader_push(loader, field);
    if (!json_is_string(value)) return flow_loader_fail(loader, "must be a string");
    if (json_string_length(value) == 0) return flow_loader_fail(loader, "must not be empty");
    *out = strdup(json_string_value(value));
    if (*out == NULL) return flow_loader_nomem(loader);
    flow_loader_pop(loader, saved);
    return SPIRT_OK;
}

/* A number of seconds in (0, SECONDS_MAX], or [0, ..] when `allow_zero`.
 * ASL asks for integers in most places; fractions are accepted on purpose
 * (documented), so that tests and local runs can use milliseconds. */
static int read_seconds(FlowLoader *loader, const json_t *object, const char *field, int allow_zero, double *out) {
    json_t *value = json_object_get(object, field);
    if (value == NULL) return SPIRT_OK;
    size_t saved = flow_loader_push(loader, field);
    double seconds = json_number_value(value);
    if (!json_is_number(value) || !isfinite(seconds) || seconds < 0 || (!allow_zero && seconds == 0) ||
        seconds > SECONDS_MAX)
        return flow_loader_fail(loader, "must be a %s number of seconds (at most 99999999)",
                                allow_zero ? "non-negative" : "positive");
    *out = seconds;
    flow_loader_pop(loader, saved);
    return SPIRT_OK;
}

static int read_count(FlowLoader *loader, const json_t *object, const char *field, long *out) {
    json_t *value = json_object_get(object, field);
    if (value == NULL) return SPIRT_OK;
    size_t saved = flow_loader_push(loader, field);
    if (!json_is_integer(value) || json_integer_value(value) < 0 || json_integer_value(value) > 99999999)
        return flow_loader_fail(loader, "must be a non-negative integer");
    *out = (long)json_integer_value(value);
    flow_loader_pop(loader, saved);
    return SPIRT_OK;
}

/* An optional field compiled into a structure of its own (a path, a
 * template), allocated only when the field is there. */
typedef int (*Compile)(FlowLoader *loader, const json_t *value, void *out);

static int read_optional(FlowLoader *loader, const json_t *object, const char *field, size_t size, Compile compile,
                         void **out) {
    json_t *value = json_object_get(object, field);
    *out = NULL;
    if (value == NULL) return SPIRT_OK;
    size_t saved = flow_loader_push(loader, field);
    *out = calloc(1, size);
    if (*out == NULL) return flow_loader_nomem(loader);
    int status = compile(loader, value, *out);
    if (status != SPIRT_OK) return status;
    flow_loader_pop(loader, saved);
    return SPIRT_OK;
}

static int compile_path(FlowLoader *loader, const json_t *value, void *out) {
    return flow_loader_path(loader, value, 1, out);
}

static int compile_template(FlowLoader *loader, const json_t *value, void *out) {
    return flow_template_compile(loader, value, out);
}

static int read_optional_path(FlowLoader *loader, const json_t *object, const char *field, FlowPath **out) {
    return read_optional(loader, object, field, sizeof(FlowPath), compile_path, (void **)out);
}

static int read_template(FlowLoader *loader, const json_t *object, const char *field, FlowTemplate **out) {
    return read_optional(loader, object, field, sizeof(FlowTemplate), compile_template, (void **)out);
}

/* InputPath, OutputPath and ResultPath: absent, null or a path. ResultPath
 * must be made of member names only: it says where to write. */
static int read_io_path(FlowLoader *loader, const json_t *object, const char *field, FlowIoPath *out) {
    json_t *value = json_object_get(object, field);
    memset(out, 0, sizeof(*out));
    if (value == NULL) return SPIRT_OK;
    if (json_is_null(value)) {
        out->kind = FLOW_IO_NULL;
        return SPIRT_OK;
    }
    size_t saved = flow_loader_push(loader, field);
    int status = flow_loader_path(loader, value, 0, &out->path);
    if (status != SPIRT_OK) return status;
    out->kind = FLOW_IO_PATH;
    if (strcmp(field, "ResultPath") == 0) {
        for (size_t i = 0; i < out->path.step_count; i++)
            if (out->path.steps[i].name == NULL)
                return flow_loader_fail(loader, "ResultPath may only name members, not array indices");
    }
    flow_loader_pop(loader, saved);
    return SPIRT_OK;
}

/* --- Error names in Retry and Catch --- */

/* Every "States." name of ASL. The engine raises a few of them; the others
 * are accepted so that definitions written for Step Functions load, and
 * anything else starting with "States." is a typo worth refusing. */
static const char *const known_error_names[] = {
    FLOW_ERROR_ALL, FLOW_ERROR_TIMEOUT, FLOW_ERROR_TASK_FAILED, FLOW_ERROR_NO_CHOICE_MATCHED,
    FLOW_ERROR_RESULT_PATH_MATCH_FAILURE, "States.ParameterPathFailure", "States.BranchFailed",
    "States.HeartbeatTimeout", "States.Permissions", "States.IntrinsicFailure",
    "States.ExceedToleratedFailureThreshold", "States.ItemReaderFailed", "States.ResultWriterFailed",
    "States.DataLimitExceeded", "States.QueryEvaluationError", NULL};

static int read_error_equals(FlowLoader *loader, const json_t *object, int is_last, char ***errors, size_t *count) {
    json_t *value = json_object_get(object, "ErrorEquals");
    size_t saved = flow_loader_push(loader, "ErrorEquals");
    if (value == NULL) return flow_loader_fail(loader, "required field missing");
    if (!json_is_array(value) || json_array_size(value) == 0)
        return flow_loader_fail(loader, "must be a non-empty array of error names");
    *count = 0;
    *errors = calloc(json_array_size(value), sizeof(**errors));
    if (*errors == NULL) return flow_loader_nomem(loader);
    size_t index;
    json_t *name;
    json_array_foreach(value, index, name) {
        size_t inner = flow_loader_push_index(loader, index);
        if (!json_is_string(name) || json_string_length(name) == 0)
            return flow_loader_fail(loader, "must be an error name (a non-empty string)");
        const char *text = json_string_value(name);
        if (strcmp(text, FLOW_ERROR_RUNTIME) == 0)
            return flow_loader_fail(loader, "States.Runtime errors end the execution; they cannot be retried or caught");
        if (strncmp(text, "States.", 7) == 0 && !in_list(known_error_names, text))
            return flow_loader_fail(loader, "unknown error name '%s'", text);
        if (strcmp(text, FLOW_ERROR_ALL) == 0 && (json_array_size(value) != 1 || !is_last))
            return flow_loader_fail(loader, "States.ALL must be alone in the last retrier or catcher");
        (*errors)[index] = strdup(text);
        if ((*errors)[index] == NULL) return flow_loader_nomem(loader);
        *count = index + 1;
        flow_loader_pop(loader, inner);
    }
    flow_loader_pop(loader, saved);
    return SPIRT_OK;
}

static const char *const retrier_fields[] = {"ErrorEquals", "IntervalSeconds", "MaxAttempts", "BackoffRate",
                                             "MaxDelaySeconds", "JitterStrategy", "Comment", NULL};
static const char *const catcher_fields[] = {"ErrorEquals", "Next", "ResultPath", "Comment", NULL};

static int read_retrier(FlowLoader *loader, const json_t *value, size_t index, int is_last, void *slot,
                        void *context) {
    (void)index, (void)context;
    FlowRetrier *retrier = slot;
    /* ASL's defaults. */
    retrier->interval_seconds = 1.0;
    retrier->max_attempts = 3;
    retrier->backoff_rate = 2.0;
    if (!json_is_object(value)) return flow_loader_fail(loader, "must be a retrier (an object)");
    int status = flow_loader_check_fields(loader, value, retrier_fields, "a retrier");
    if (status == SPIRT_OK) status = read_error_equals(loader, value, is_last, &retrier->errors, &retrier->error_count);
    if (status == SPIRT_OK) status = read_seconds(loader, value, "IntervalSeconds", 0, &retrier->interval_seconds);
    if (status == SPIRT_OK) status = read_count(loader, value, "MaxAttempts", &retrier->max_attempts);
    if (status == SPIRT_OK) status = read_seconds(loader, value, "MaxDelaySeconds", 0, &retrier->max_delay_seconds);
    if (status != SPIRT_OK) return status;
    json_t *rate = json_object_get(value, "BackoffRate");
    if (rate != NULL) {
        size_t saved = flow_loader_push(loader, "BackoffRate");
        if (!json_is_number(rate) || !(json_number_value(rate) >= 1.0) || json_number_value(rate) > 1e6)
            return flow_loader_fail(loader, "must be a number >= 1.0");
        retrier->backoff_rate = json_number_value(rate);
        flow_loader_pop(loader, saved);
    }
    json_t *jitter = json_object_get(value, "JitterStrategy");
    if (jitter != NULL) {
        size_t saved = flow_loader_push(loader, "JitterStrategy");
        const char *text = json_string_value(jitter);
        if (text == NULL || (strcmp(text, "FULL") != 0 && strcmp(text, "NONE") != 0))
            return flow_loader_fail(loader, "must be \"FULL\" or \"NONE\"");
        retrier->full_jitter = strcmp(text, "FULL") == 0;
        flow_loader_pop(loader, saved);
    }
    return SPIRT_OK;
}

static int read_catcher(FlowLoader *loader, const json_t *value, size_t index, int is_last, void *slot,
                        void *context) {
    (void)index, (void)context;
    FlowCatcher *catcher = slot;
    catcher->next = -1;
    if (!json_is_object(value)) return flow_loader_fail(loader, "must be a catcher (an object)");
    int status = flow_loader_check_fields(loader, value, catcher_fields, "a catcher");
    if (status == SPIRT_OK) status = read_error_equals(loader, value, is_last, &catcher->errors, &catcher->error_count);
    if (status == SPIRT_OK) status = read_string(loader, value, "Next", 1, &catcher->next_name);
    if (status == SPIRT_OK) status = read_io_path(loader, value, "ResultPath", &catcher->result_path);
    return status;
}

static int read_retry_and_catch(FlowLoader *loader, const json_t *object, FlowState *state) {
    int status = flow_loader_array(loader, object, "Retry", 0, 1, "retriers", sizeof(FlowRetrier),
                                   (void **)&state->retriers, &state->retrier_count, read_retrier, NULL);
    if (status != SPIRT_OK) return status;
    return flow_loader_array(loader, object, "Catch", 0, 1, "catchers", sizeof(FlowCatcher),
                             (void **)&state->catchers, &state->catcher_count, read_catcher, NULL);
}

/* --- States --- */

static const char *const task_fields[] = {"Type", "Comment", "Next", "End", "InputPath", "OutputPath",
                                          "ResultPath", "Parameters", "ResultSelector", "Resource",
                                          "TimeoutSeconds", "TimeoutSecondsPath", "Retry", "Catch", NULL};
static const char *const parallel_fields[] = {"Type", "Comment", "Next", "End", "InputPath", "OutputPath",
                                              "ResultPath", "Parameters", "ResultSelector", "Branches",
                                              "Retry", "Catch", NULL};
static const char *const map_fields[] = {"Type", "Comment", "Next", "End", "InputPath", "OutputPath",
                                         "ResultPath", "ItemsPath", "MaxConcurrency", "MaxConcurrencyPath",
                                         "Iterator", "ItemProcessor", "ItemSelector", "Parameters",
                                         "ResultSelector", "Retry", "Catch", NULL};
static const char *const choice_fields[] = {"Type", "Comment", "InputPath", "OutputPath", "Choices", "Default", NULL};
static const char *const wait_fields[] = {"Type", "Comment", "Next", "End", "InputPath", "OutputPath",
                                          "Seconds", "SecondsPath", NULL};
static const char *const pass_fields[] = {"Type", "Comment", "Next", "End", "InputPath", "OutputPath",
                                          "ResultPath", "Parameters", "Result", NULL};
static const char *const succeed_fields[] = {"Type", "Comment", "InputPath", "OutputPath", NULL};
static const char *const fail_fields[] = {"Type", "Comment", "Error", "Cause", "ErrorPath", "CausePath", NULL};

static const struct {
    const char *name;
    FlowStateType type;
    const char *const *fields;
    const char *what;
} state_types[] = {
    {"Task", FLOW_STATE_TASK, task_fields, "a Task state"},
    {"Parallel", FLOW_STATE_PARALLEL, parallel_fields, "a Parallel state"},
    {"Map", FLOW_STATE_MAP, map_fields, "a Map state"},
    {"Choice", FLOW_STATE_CHOICE, choice_fields, "a Choice state"},
    {"Wait", FLOW_STATE_WAIT, wait_fields, "a Wait state"},
    {"Pass", FLOW_STATE_PASS, pass_fields, "a Pass state"},
    {"Succeed", FLOW_STATE_SUCCEED, succeed_fields, "a Succeed state"},
    {"Fail", FLOW_STATE_FAIL, fail_fields, "a Fail state"},
};
#define STATE_TYPE_COUNT (sizeof(state_types) / sizeof(state_types[0]))

const char *flow_state_type_name(FlowStateType type) {
    for (size_t i = 0; i < STATE_TYPE_COUNT; i++)
        if (state_types[i].type == type) return state_types[i].name;
    return "?";
}

static int read_sub_machine(FlowLoader *loader, const json_t *value, const char *qualified_prefix,
                            const char *const *fields, const char *what, FlowSubMachine *machine);

static const char *const branch_fields[] = {"StartAt", "States", "Comment", NULL};
static const char *const processor_fields[] = {"StartAt", "States", "Comment", "ProcessorConfig", NULL};
static const char *const processor_config_fields[] = {"Mode", NULL};

static int read_branch(FlowLoader *loader, const json_t *value, size_t index, int is_last, void *slot,
                       void *context) {
    (void)is_last;
    const FlowState *state = context;
    char prefix[256];
    snprintf(prefix, sizeof(prefix), "%s[%zu]/", state->path, index);
    return read_sub_machine(loader, value, prefix, branch_fields, "a branch", slot);
}

static int read_branches(FlowLoader *loader, const json_t *object, FlowState *state) {
    return flow_loader_array(loader, object, "Branches", 1, 0, "branches", sizeof(FlowSubMachine),
                             (void **)&state->branches, &state->branch_count, read_branch, state);
}

static int read_map(FlowLoader *loader, const json_t *object, FlowState *state) {
    int status = read_optional_path(loader, object, "ItemsPath", &state->items_path);
    if (status == SPIRT_OK) status = read_count(loader, object, "MaxConcurrency", &state->max_concurrency);
    if (status == SPIRT_OK) status = read_optional_path(loader, object, "MaxConcurrencyPath", &state->max_concurrency_path);
    if (status != SPIRT_OK) return status;
    if (json_object_get(object, "MaxConcurrency") && json_object_get(object, "MaxConcurrencyPath")) {
        flow_loader_push(loader, "MaxConcurrencyPath");
        return flow_loader_fail(loader, "give MaxConcurrency or MaxConcurrencyPath, not both");
    }

    /* ItemSelector is the current name of what older definitions call
     * Parameters; both are accepted, one at a time. */
    const char *selector = json_object_get(object, "ItemSelector") ? "ItemSelector" : "Parameters";
    if (json_object_get(object, "ItemSelector") && json_object_get(object, "Parameters")) {
        flow_loader_push(loader, "Parameters");
        return flow_loader_fail(loader, "give ItemSelector or Parameters, not both");
    }
    status = read_template(loader, object, selector, &state->parameters);
    if (status != SPIRT_OK) return status;

    json_t *processor = json_object_get(object, "ItemProcessor");
    json_t *iterator = json_object_get(object, "Iterator");
    if (processor && iterator) {
        flow_loader_push(loader, "Iterator");
        return flow_loader_fail(loader, "give ItemProcessor or Iterator, not both");
    }
    if (!processor && !iterator) {
        flow_loader_push(loader, "ItemProcessor");
        return flow_loader_fail(loader, "required field missing");
    }
    const char *field = processor ? "ItemProcessor" : "Iterator";
    size_t saved = flow_loader_push(loader, field);
    if (processor && json_is_object(processor)) {
        json_t *config = json_object_get(processor, "ProcessorConfig");
        if (config != NULL) {
            size_t inner = flow_loader_push(loader, "ProcessorConfig");
            if (!json_is_object(config)) return flow_loader_fail(loader, "must be an object");
            status = flow_loader_check_fields(loader, config, processor_config_fields, "ProcessorConfig");
            if (status != SPIRT_OK) return status;
            json_t *mode = json_object_get(config, "Mode");
            if (mode != NULL && (!json_is_string(mode) || strcmp(json_string_value(mode), "INLINE") != 0)) {
                flow_loader_push(loader, "Mode");
                return flow_loader_fail(loader, "only \"INLINE\" is supported");
            }
            flow_loader_pop(loader, inner);
        }
    }
    state->branches = calloc(1, sizeof(*state->branches));
    if (state->branches == NULL) return flow_loader_nomem(loader);
    state->branch_count = 1;
    char prefix[256];
    snprintf(prefix, sizeof(prefix), "%s/", state->path);
    status = read_sub_machine(loader, processor ? processor : iterator, prefix,
                              processor ? processor_fields : branch_fields, "an item processor", &state->branches[0]);
    if (status != SPIRT_OK) return status;
    flow_loader_pop(loader, saved);
    return SPIRT_OK;
}

static int read_top_rule(FlowLoader *loader, const json_t *value, size_t index, int is_last, void *slot,
                         void *context) {
    (void)index, (void)is_last, (void)context;
    return flow_choice_compile(loader, value, 1, slot);
}

static int read_choice(FlowLoader *loader, const json_t *object, FlowState *state) {
    state->default_next = -1;
    int status = flow_loader_array(loader, object, "Choices", 1, 0, "Choice rules", sizeof(FlowChoiceRule),
                                   (void **)&state->choices, &state->choice_count, read_top_rule, NULL);
    if (status != SPIRT_OK) return status;
    return read_string(loader, object, "Default", 0, &state->default_name);
}

static int read_wait(FlowLoader *loader, const json_t *object, FlowState *state) {
    int has_seconds = json_object_get(object, "Seconds") != NULL;
    int has_path = json_object_get(object, "SecondsPath") != NULL;
    if (has_seconds == has_path) {
        if (has_seconds) flow_loader_push(loader, "SecondsPath");
        return flow_loader_fail(loader, has_seconds ? "give Seconds or SecondsPath, not both"
                                                    : "a Wait state needs Seconds or SecondsPath");
    }
    int status = read_seconds(loader, object, "Seconds", 1, &state->seconds);
    if (status == SPIRT_OK) status = read_optional_path(loader, object, "SecondsPath", &state->seconds_path);
    return status;
}

static int read_fail(FlowLoader *loader, const json_t *object, FlowState *state) {
    static const char *const pairs[2][2] = {{"Error", "ErrorPath"}, {"Cause", "CausePath"}};
    for (int i = 0; i < 2; i++) {
        if (json_object_get(object, pairs[i][0]) && json_object_get(object, pairs[i][1])) {
            flow_loader_push(loader, pairs[i][1]);
            return flow_loader_fail(loader, "give %s or %s, not both", pairs[i][0], pairs[i][1]);
        }
    }
    int status = read_string(loader, object, "Error", 0, &state->error);
    if (status == SPIRT_OK) status = read_string(loader, object, "Cause", 0, &state->cause);
    if (status == SPIRT_OK) status = read_optional_path(loader, object, "ErrorPath", &state->error_path);
    if (status == SPIRT_OK) status = read_optional_path(loader, object, "CausePath", &state->cause_path);
    return status;
}

/* Next/End: states that transition need exactly one of them; End must be
 * true when given (End: false would be a Next-less non-terminal state). */
static int read_transition(FlowLoader *loader, const json_t *object, FlowState *state) {
    json_t *end = json_object_get(object, "End");
    json_t *next = json_object_get(object, "Next");
    if (end != NULL) {
        size_t saved = flow_loader_push(loader, "End");
        if (!json_is_true(end)) return flow_loader_fail(loader, "must be true when present");
        if (next != NULL) return flow_loader_fail(loader, "a state has either End or Next, not both");
        flow_loader_pop(loader, saved);
        state->end = 1;
        state->next = -1;
        return SPIRT_OK;
    }
    if (next == NULL) return flow_loader_fail(loader, "a %s state needs Next or \"End\": true",
                                              flow_state_type_name(state->type));
    return read_string(loader, object, "Next", 1, &state->next_name);
}

static int read_state(FlowLoader *loader, const char *name, const json_t *object, const char *qualified_prefix,
                      FlowState *state) {
    state->next = -1;
    state->default_next = -1;
    state->name = strdup(name);
    size_t prefix_length = strlen(qualified_prefix);
    state->path = malloc(prefix_length + strlen(name) + 1);
    if (state->name == NULL || state->path == NULL) return flow_loader_nomem(loader);
    memcpy(state->path, qualified_prefix, prefix_length);
    strcpy(state->path + prefix_length, name);

    if (loader->state_count == loader->state_capacity) {
        size_t capacity = loader->state_capacity ? 2 * loader->state_capacity : 16;
        const FlowState **grown = realloc(loader->states, capacity * sizeof(*grown));
        if (grown == NULL) return flow_loader_nomem(loader);
        loader->states = grown;
        loader->state_capacity = capacity;
    }
    state->id = (int)loader->state_count;
    loader->states[loader->state_count++] = state;

    if (!json_is_object(object)) return flow_loader_fail(loader, "a state must be an object");
    json_t *type = json_object_get(object, "Type");
    size_t saved = flow_loader_push(loader, "Type");
    if (type == NULL) return flow_loader_fail(loader, "required field missing");
    if (!json_is_string(type)) return flow_loader_fail(loader, "must be a string");
    size_t kind = 0;
    while (kind < STATE_TYPE_COUNT && strcmp(state_types[kind].name, json_string_value(type)) != 0) kind++;
    if (kind == STATE_TYPE_COUNT)
        return flow_loader_fail(loader, "unknown state type '%s' (Task, Parallel, Map, Choice, Wait, Pass, "
                                        "Succeed or Fail)", json_string_value(type));
    flow_loader_pop(loader, saved);
    state->type = state_types[kind].type;

    FlowState *outer = loader->state;
    loader->state = state;
    int status = flow_loader_check_fields(loader, object, state_types[kind].fields, state_types[kind].what);
    json_t *comment = json_object_get(object, "Comment");
    if (status == SPIRT_OK && comment != NULL && !json_is_string(comment)) {
        flow_loader_push(loader, "Comment");
        status = flow_loader_fail(loader, "must be a string");
    }
    if (status == SPIRT_OK && in_list(state_types[kind].fields, "Next"))
        status = read_transition(loader, object, state);
    if (status == SPIRT_OK) status = read_io_path(loader, object, "InputPath", &state->input_path);
    if (status == SPIRT_OK) status = read_io_path(loader, object, "OutputPath", &state->output_path);
    if (status == SPIRT_OK) status = read_io_path(loader, object, "ResultPath", &state->result_path);
    if (status == SPIRT_OK && state->type != FLOW_STATE_MAP)
        status = read_template(loader, object, "Parameters", &state->parameters);
    if (status == SPIRT_OK) status = read_template(loader, object, "ResultSelector", &state->result_selector);
    if (status == SPIRT_OK) status = read_retry_and_catch(loader, object, state);
    if (status != SPIRT_OK) return status;

    switch (state->type) {
    case FLOW_STATE_TASK:
        state->timeout_seconds = 60.0; /* ASL's default */
        status = read_string(loader, object, "Resource", 1, &state->resource);
        if (status == SPIRT_OK) status = read_seconds(loader, object, "TimeoutSeconds", 0, &state->timeout_seconds);
        if (status == SPIRT_OK) status = read_optional_path(loader, object, "TimeoutSecondsPath", &state->timeout_path);
        if (status == SPIRT_OK && json_object_get(object, "TimeoutSeconds") && state->timeout_path) {
            flow_loader_push(loader, "TimeoutSecondsPath");
            status = flow_loader_fail(loader, "give TimeoutSeconds or TimeoutSecondsPath, not both");
        }
        break;
    case FLOW_STATE_PARALLEL: status = read_branches(loader, object, state); break;
    case FLOW_STATE_MAP: status = read_map(loader, object, state); break;
    case FLOW_STATE_CHOICE: status = read_choice(loader, object, state); break;
    case FLOW_STATE_WAIT: status = read_wait(loader, object, state); break;
    case FLOW_STATE_PASS: {
        json_t *result = json_object_get(object, "Result");
        if (result != NULL) {
            state->result = json_deep_copy(result);
            if (state->result == NULL) status = flow_loader_nomem(loader);
        }
        break;
    }
    case FLOW_STATE_FAIL: status = read_fail(loader, object, state); break;
    case FLOW_STATE_SUCCEED: break;
    }
    loader->state = outer;
    return status;
}

/* --- Sub-machines: names, transitions, reachability --- */

static int find_state(const FlowSubMachine *machine, const char *name) {
    for (size_t i = 0; i < machine->state_count; i++)
        if (strcmp(machine->states[i].name, name) == 0) return (int)i;
    return -1;
}

/* Turns the state name written at `field` -- or at list[index].field when
 * `list` is given -- into its index in `machine`. No name, nothing to do. */
static int resolve(FlowLoader *loader, const FlowSubMachine *machine, const char *list, size_t index,
                   const char *field, const char *name, int *target) {
    if (name == NULL) return SPIRT_OK;
    size_t saved = flow_loader_push(loader, list ? list : field);
    if (list) {
        flow_loader_push_index(loader, index);
        flow_loader_push(loader, field);
    }
    *target = find_state(machine, name);
    if (*target < 0) return flow_loader_fail(loader, "no state named '%s' in this machine", name);
    flow_loader_pop(loader, saved);
    return SPIRT_OK;
}

/* Turns every Next / Default / Choices[i].Next / Catch[i].Next into an
 * index; the loader's path is at the machine's States. */
static int resolve_transitions(FlowLoader *loader, FlowSubMachine *machine) {
    for (size_t i = 0; i < machine->state_count; i++) {
        FlowState *state = &machine->states[i];
        size_t saved = flow_loader_push(loader, state->name);
        int status = resolve(loader, machine, NULL, 0, "Next", state->next_name, &state->next);
        if (status == SPIRT_OK)
            status = resolve(loader, machine, NULL, 0, "Default", state->default_name, &state->default_next);
        for (size_t c = 0; c < state->choice_count && status == SPIRT_OK; c++)
            status = resolve(loader, machine, "Choices", c, "Next", state->choices[c].next_name, &state->choices[c].next);
        for (size_t c = 0; c < state->catcher_count && status == SPIRT_OK; c++)
            status = resolve(loader, machine, "Catch", c, "Next", state->catchers[c].next_name, &state->catchers[c].next);
        if (status != SPIRT_OK) return status;
        flow_loader_pop(loader, saved);
    }
    return SPIRT_OK;
}

static void visit(int target, int *seen, int *stack, size_t *top) {
    if (target < 0 || seen[target]) return;
    seen[target] = 1;
    stack[(*top)++] = target;
}

/* Unreachable states are refused: they are nearly always a misspelt Next
 * that happened to name another existing state, or a forgotten edit. */
static int check_reachable(FlowLoader *loader, const FlowSubMachine *machine) {
    size_t count = machine->state_count;
    int *seen = calloc(count, sizeof(*seen));
    int *stack = calloc(count, sizeof(*stack)); /* each state is pushed once */
    if (seen == NULL || stack == NULL) {
        free(seen);
        free(stack);
        return flow_loader_nomem(loader);
    }
    size_t top = 0;
    visit(machine->start, seen, stack, &top);
    while (top > 0) {
        const FlowState *state = &machine->states[stack[--top]];
        visit(state->next, seen, stack, &top);
        visit(state->default_next, seen, stack, &top);
        for (size_t c = 0; c < state->choice_count; c++) visit(state->choices[c].next, seen, stack, &top);
        for (size_t c = 0; c < state->catcher_count; c++) visit(state->catchers[c].next, seen, stack, &top);
    }
    int status = SPIRT_OK;
    for (size_t i = 0; i < count && status == SPIRT_OK; i++) {
        if (seen[i]) continue;
        flow_loader_push(loader, machine->states[i].name);
        status = flow_loader_fail(loader, "unreachable: no StartAt, Next, Default or Catch leads here");
    }
    free(seen);
    free(stack);
    return status;
}

static int read_sub_machine(FlowLoader *loader, const json_t *value, const char *qualified_prefix,
                            const char *const *fields, const char *what, FlowSubMachine *machine) {
    if (!json_is_object(value)) return flow_loader_fail(loader, "must be an object with StartAt and States");
    int status = flow_loader_check_fields(loader, value, fields, what);
    if (status != SPIRT_OK) return status;
    json_t *comment = json_object_get(value, "Comment");
    if (comment != NULL && !json_is_string(comment)) {
        flow_loader_push(loader, "Comment");
        return flow_loader_fail(loader, "must be a string");
    }
    json_t *states = json_object_get(value, "States");
    size_t saved = flow_loader_push(loader, "States");
    if (states == NULL) return flow_loader_fail(loader, "required field missing");
    if (!json_is_object(states) || json_object_size(states) == 0)
        return flow_loader_fail(loader, "must be an object holding at least one state");
    machine->states = calloc(json_object_size(states), sizeof(*machine->states));
    if (machine->states == NULL) return flow_loader_nomem(loader);
    const char *name;
    json_t *state;
    json_object_foreach(states, name, state) {
        size_t inner = flow_loader_push(loader, name);
        if (name[0] == '\0') return flow_loader_fail(loader, "a state name must not be empty");
        if (strlen(name) > 80) return flow_loader_fail(loader, "state names are limited to 80 characters");
        status = read_state(loader, name, state, qualified_prefix, &machine->states[machine->state_count++]);
        if (status != SPIRT_OK) return status;
        flow_loader_pop(loader, inner);
    }
    status = resolve_transitions(loader, machine);
    if (status != SPIRT_OK) return status;
    flow_loader_pop(loader, saved);

    json_t *start = json_object_get(value, "StartAt");
    if (start == NULL || !json_is_string(start)) {
        flow_loader_push(loader, "StartAt");
        return flow_loader_fail(loader, start ? "must be a state name (a string)" : "required field missing");
    }
    status = resolve(loader, machine, NULL, 0, "StartAt", json_string_value(start), &machine->start);
    if (status != SPIRT_OK) return status;

    saved = flow_loader_push(loader, "States");
    status = check_reachable(loader, machine);
    flow_loader_pop(loader, saved);
    return status;
}

/* --- Machines --- */

static void state_deinit(FlowState *state);

static void sub_machine_deinit(FlowSubMachine *machine) {
    for (size_t i = 0; i < machine->state_count; i++) state_deinit(&machine->states[i]);
    free(machine->states);
    memset(machine, 0, sizeof(*machine));
}

static void free_path(FlowPath *path) {
    flow_path_deinit(path);
    free(path);
}

static void free_template(FlowTemplate *template_value) {
    flow_template_deinit(template_value);
    free(template_value);
}

static void free_names(char **names, size_t count) {
    for (size_t i = 0; i < count; i++) free(names[i]);
    free(names);
}

static void state_deinit(FlowState *state) {
    free(state->name);
    free(state->path);
    free(state->next_name);
    flow_path_deinit(&state->input_path.path);
    flow_path_deinit(&state->output_path.path);
    flow_path_deinit(&state->result_path.path);
    free_template(state->parameters);
    free_template(state->result_selector);
    for (size_t i = 0; i < state->retrier_count; i++) free_names(state->retriers[i].errors, state->retriers[i].error_count);
    free(state->retriers);
    for (size_t i = 0; i < state->catcher_count; i++) {
        free_names(state->catchers[i].errors, state->catchers[i].error_count);
        free(state->catchers[i].next_name);
        flow_path_deinit(&state->catchers[i].result_path.path);
    }
    free(state->catchers);
    free(state->resource);
    free_path(state->timeout_path);
    for (size_t i = 0; i < state->branch_count; i++) sub_machine_deinit(&state->branches[i]);
    free(state->branches);
    free_path(state->items_path);
    free_path(state->max_concurrency_path);
    for (size_t i = 0; i < state->choice_count; i++) flow_choice_deinit(&state->choices[i]);
    free(state->choices);
    free(state->default_name);
    free_path(state->seconds_path);
    json_decref(state->result);
    free(state->error);
    free(state->cause);
    free_path(state->error_path);
    free_path(state->cause_path);
}

void flow_machine_free(FlowMachine *machine) {
    if (machine == NULL) return;
    sub_machine_deinit(&machine->root);
    free(machine->states_by_id);
    free(machine->comment);
    free(machine->source);
    free(machine);
}

static const char *const top_fields[] = {"StartAt", "States", "Comment", "TimeoutSeconds", "Version", NULL};

FlowMachine *flow_machine_load_json(const json_t *definition, const char *source_name, SpirtError *error) {
    if (source_name == NULL) source_name = "workflow";
    FlowLoader loader = {.source = source_name, .error = error};
    FlowMachine *machine = calloc(1, sizeof(*machine));
    if (machine == NULL || (machine->source = strdup(source_name)) == NULL) {
        flow_loader_nomem(&loader);
        free(machine);
        return NULL;
    }
    int status;
    if (definition == NULL || !json_is_object(definition)) {
        status = flow_loader_fail(&loader, "a state machine must be a JSON object");
        goto fail;
    }
    status = flow_loader_check_fields(&loader, definition, top_fields, "a state machine");
    if (status != SPIRT_OK) goto fail;
    json_t *version = json_object_get(definition, "Version");
    if (version != NULL && (!json_is_string(version) || strcmp(json_string_value(version), "1.0") != 0)) {
        flow_loader_push(&loader, "Version");
        status = flow_loader_fail(&loader, "must be \"1.0\"");
        goto fail;
    }
    json_t *comment = json_object_get(definition, "Comment");
    if (comment != NULL && !json_is_string(comment)) {
        flow_loader_push(&loader, "Comment");
        status = flow_loader_fail(&loader, "must be a string");
        goto fail;
    }
    machine->comment = strdup(comment ? json_string_value(comment) : "");
    if (machine->comment == NULL) {
        status = flow_loader_nomem(&loader);
        goto fail;
    }
    status = read_seconds(&loader, definition, "TimeoutSeconds", 0, &machine->timeout_seconds);
    if (status != SPIRT_OK) goto fail;
    status = read_sub_machine(&loader, definition, "", top_fields, "a state machine", &machine->root);
    if (status != SPIRT_OK) goto fail;
    machine->states_by_id = loader.states;
    machine->state_total = loader.state_count;
    return machine;
fail:
    free(loader.states);
    flow_machine_free(machine);
    return NULL;
}

FlowMachine *flow_machine_load_string(const char *text, const char *source_name, SpirtError *error) {
    if (source_name == NULL) source_name = "workflow";
    if (text == NULL) {
        spirt_error_set(error, SPIRT_ERR_INVALID, "%s: no text", source_name);
        return NULL;
    }
    json_error_t parse_error;
    /* Duplicate keys are an error, not "last one wins": two states with one
     * name, or two Next fields, would otherwise pass unnoticed. */
    json_t *definition = json_loads(text, JSON_REJECT_DUPLICATES, &parse_error);
    if (definition == NULL) {
        spirt_error_set(error, SPIRT_ERR_FORMAT, "%s:%d:%d: malformed JSON: %s", source_name, parse_error.line,
                        parse_error.column, parse_error.text);
        return NULL;
    }
    FlowMachine *machine = flow_machine_load_json(definition, source_name, error);
    json_decref(definition);
    return machine;
}

FlowMachine *flow_machine_load_file(const char *path, SpirtError *error) {
    FILE *file = fopen(path, "rb");
    if (file == NULL) {
        spirt_error_set(error, errno == ENOENT ? SPIRT_ERR_NOT_FOUND : SPIRT_ERR_IO, "%s: %s", path, strerror(errno));
        return NULL;
    }
    /* Definitions are small; 16 MiB is far above any sensible one and keeps
     * a wrong path (a dataset, say) from being read into memory. */
    enum { MAX_BYTES = 16 << 20 };
    char *text = malloc(MAX_BYTES + 1);
    size_t length = text ? fread(text, 1, MAX_BYTES + 1, file) : 0;
    int read_failed = text == NULL || ferror(file);
    fclose(file);
    if (read_failed || length > MAX_BYTES) {
        free(text);
        spirt_error_set(error, text == NULL ? SPIRT_ERR_NOMEM : SPIRT_ERR_IO, "%s: %s", path,
                        length > MAX_BYTES ? "larger than 16 MiB, not a workflow" : "cannot read");
        return NULL;
    }
    text[length] = '\0';
    if (strlen(text) != length) {
        free(text);
        spirt_error_set(error, SPIRT_ERR_FORMAT, "%s: contains a NUL byte, not a JSON text", path);
        return NULL;
    }
    FlowMachine *machine = flow_machine_load_string(text, path, error);
    free(text);
    return machine;
}

const char *flow_machine_comment(const FlowMachine *machine) { return machine ? machine->comment : ""; }

int flow_machine_check_resources(const FlowMachine *machine, FlowResourceKnown known, void *context,
                                 SpirtError *error) {
    if (machine == NULL || known == NULL) return spirt_error_set(error, SPIRT_ERR_INVALID, "no machine or no check");
    for (size_t i = 0; i < machine->state_total; i++) {
        const FlowState *state = machine->states_by_id[i];
        if (state->type == FLOW_STATE_TASK && !known(context, state->resource))
            return spirt_error_set(error, SPIRT_ERR_NOT_FOUND, "%s: state %s: no function named '%s'",
                                   machine->source, state->path, state->resource);
    }
    return SPIRT_OK;
}
