/* registry.c -- the functions by name, and invoking one. */
#include <string.h>

#include "fn/fn_internal.h"

static const FnDescriptor functions[] = {
    {"admit", fn_admit, "verify join requests and add the joiners to the membership"},
    {"heartbeat", fn_heartbeat, "refresh own liveness, probe peers, update membership"},
    {"compute_gradients", fn_compute_gradients, "one minibatch's gradient -> spirt:r:{r}:grad:{b}"},
    {"average", fn_average, "in-database mean of the round's gradients -> spirt:r:{r}:avg"},
    {"publish", fn_publish, "sign the round's average for the other peers -> spirt:pub:{r}"},
    {"exchange", fn_exchange, "fetch and verify the live peers' averages -> spirt:r:{r}:in:{q}"},
    {"aggregate", fn_aggregate, "in-database robust rule over the averages -> spirt:r:{r}:agg"},
    {"update", fn_update, "in-database optimizer step on spirt:params, once per round"},
    {"evaluate", fn_evaluate, "loss and accuracy on the validation split"},
};
static const size_t function_count = sizeof(functions) / sizeof(functions[0]);

const FnDescriptor *fn_find(const char *name) {
    for (size_t i = 0; name && i < function_count; i++)
        if (strcmp(functions[i].name, name) == 0) return &functions[i];
    return NULL;
}

const FnDescriptor *fn_all(size_t *count) {
    *count = function_count;
    return functions;
}

int fn_invoke(FnContext *context, const char *name, const json_t *event, json_t **result, SpirtError *error) {
    SpirtError local;
    if (error == NULL) error = &local;
    spirt_error_clear(error);
    *result = NULL;
    const FnDescriptor *function = fn_find(name);
    if (function == NULL) return spirt_error_set(error, SPIRT_ERR_NOT_FOUND, "no function called '%s'", name ? name : "");
    int status = function->handler(context, event, result, error);
    if (status == SPIRT_OK && *result == NULL)
        status = spirt_error_set(error, SPIRT_ERR_NOMEM, "%s: out of memory building the result", name);
    if (status != SPIRT_OK) {
        json_decref(*result);
        *result = NULL;
        if (error->message[0] == '\0') spirt_error_set(error, status, "%s failed", name);
        fn_context_drop_broken(context);
    }
    return status;
}

const char *fn_error_name(int status) {
    switch (status) {
    case SPIRT_ERR_INVALID: return "spirt.Invalid";
    case SPIRT_ERR_NOMEM: return "spirt.OutOfMemory";
    case SPIRT_ERR_IO: return "spirt.IO";
    case SPIRT_ERR_FORMAT: return "spirt.Format";
    case SPIRT_ERR_SHAPE: return "spirt.Shape";
    case SPIRT_ERR_NONFINITE: return "spirt.NonFinite";
    case SPIRT_ERR_PRECONDITION: return "spirt.Precondition";
    case SPIRT_ERR_TIMEOUT: return "spirt.Timeout";
    case SPIRT_ERR_PROTOCOL: return "spirt.Protocol";
    case SPIRT_ERR_NOT_FOUND: return "spirt.NotFound";
    case SPIRT_ERR_AUTH: return "spirt.Auth";
    case SPIRT_ERR_CLOSED: return "spirt.Closed";
    case SPIRT_ERR_SERVER: return "spirt.Server";
    default: return "spirt.Internal";
    }
}
