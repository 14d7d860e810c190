/* error.c -- the error record (see include/spirt/error.h). */
#include "spirt/error.h"

#include <stdarg.h> /* va_list */
#include <stdio.h>  /* vsnprintf */
#include <string.h>

int spirt_error_set(SpirtError *error, int code, const char *format, ...) {
    if (error == NULL) return code;
    error->code = code;
    va_list args;
    va_start(args, format);
    vsnprintf(error->message, sizeof(error->message), format, args);
    va_end(args);
    /* Messages are one line: a newline from a file name or a server reply
     * would break log lines and the CLI's one-line error contract. */
    for (char *c = error->message; *c; c++)
        if (*c == '\n' || *c == '\r') *c = ' ';
    return code;
}

int spirt_error_prefix(SpirtError *error, const char *format, ...) {
    if (error == NULL) return SPIRT_OK;
    char prefix[SPIRT_ERROR_MESSAGE_MAX];
    va_list args;
    va_start(args, format);
    vsnprintf(prefix, sizeof(prefix), format, args);
    va_end(args);
    char joined[SPIRT_ERROR_MESSAGE_MAX];
    /* Truncation is acceptable: messages are bounded by design. */
    if (snprintf(joined, sizeof(joined), "%s: %s", prefix, error->message) < 0) return error->code;
    memcpy(error->message, joined, sizeof(joined));
    return error->code;
}

void spirt_error_clear(SpirtError *error) {
    if (error == NULL) return;
    error->code = SPIRT_OK;
    error->message[0] = '\0';
}

const char *spirt_status_name(int code) {
    switch (code) {
    case SPIRT_OK: return "ok";
    case SPIRT_ERR_INVALID: return "invalid";
    case SPIRT_ERR_NOMEM: return "out of memory";
    case SPIRT_ERR_IO: return "io";
    case SPIRT_ERR_FORMAT: return "format";
    case SPIRT_ERR_SHAPE: return "shape";
    case SPIRT_ERR_NONFINITE: return "non-finite";
    case SPIRT_ERR_PRECONDITION: return "precondition";
    case SPIRT_ERR_TIMEOUT: return "timeout";
    case SPIRT_ERR_PROTOCOL: return "protocol";
    case SPIRT_ERR_NOT_FOUND: return "not found";
    case SPIRT_ERR_AUTH: return "auth";
    case SPIRT_ERR_CLOSED: return "closed";
    case SPIRT_ERR_SERVER: return "server";
    case SPIRT_ERR_INTERNAL: return "internal";
    default: return "unknown";
    }
}
