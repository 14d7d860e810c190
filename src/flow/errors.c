/* errors.c -- error names and failure records of the workflow engine.
 *
 * ASL identifies errors by name. Two of the built-in names are wildcards
 * when they appear in ErrorEquals: States.ALL matches every error, and
 * States.TaskFailed every error but States.Timeout. Neither matches
 * States.Runtime, which always ends the execution (a path that found
 * nothing: a bug in the definition or in the data, not a transient fault). */
#include "flow_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void copy_bounded(char *destination, size_t size, const char *source) {
    snprintf(destination, size, "%s", source ? source : "");
}

int flow_fail(FlowFailure *failure, FlowFailureKind kind, const char *error_name, const char *format, ...) {
    failure->kind = kind;
    copy_bounded(failure->error, sizeof(failure->error), error_name);
    va_list args;
    va_start(args, format);
    vsnprintf(failure->cause, sizeof(failure->cause), format, args);
    va_end(args);
    return SPIRT_ERR_INVALID;
}

int flow_error_matches(const char *pattern, const char *error) {
    if (strcmp(error, FLOW_ERROR_RUNTIME) == 0) return 0;
    if (strcmp(pattern, error) == 0) return 1;
    if (strcmp(pattern, FLOW_ERROR_ALL) == 0) return 1;
    if (strcmp(pattern, FLOW_ERROR_TASK_FAILED) == 0) return strcmp(error, FLOW_ERROR_TIMEOUT) != 0;
    return 0;
}

int flow_call_fail(FlowCallResult *result, const char *error_name, const char *format, ...) {
    if (result == NULL) return SPIRT_ERR_INVALID;
    copy_bounded(result->error, sizeof(result->error), error_name ? error_name : FLOW_ERROR_TASK_FAILED);
    va_list args;
    va_start(args, format);
    vsnprintf(result->cause, sizeof(result->cause), format, args);
    va_end(args);
    return strcmp(result->error, FLOW_ERROR_TIMEOUT) == 0 ? SPIRT_ERR_TIMEOUT : SPIRT_ERR_INVALID;
}

const char *flow_run_status_name(FlowRunStatus status) {
    switch (status) {
    case FLOW_RUN_SUCCEEDED: return "succeeded";
    case FLOW_RUN_FAILED: return "failed";
    case FLOW_RUN_TIMED_OUT: return "timed out";
    }
    return "unknown";
}
