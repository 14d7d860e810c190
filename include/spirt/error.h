/* error.h -- status codes and the error record every part fills in.
 *
 * Library code never exits on bad input: a function that can fail returns an
 * int status (SPIRT_OK = 0, a negative SpirtStatus otherwise) and, when the
 * caller passes a SpirtError, writes a one-line human message into it. The
 * message says what was wrong and, where it helps, with what (a file name, a
 * key, a field). Passing NULL for the error is always allowed. */
#ifndef SPIRT_ERROR_H
#define SPIRT_ERROR_H

#include <stddef.h> /* size_t */

#ifdef __cplusplus
extern "C" {
#endif

typedef enum SpirtStatus {
    SPIRT_OK = 0,
    SPIRT_ERR_INVALID = -1,      /* a bad argument, option or value */
    SPIRT_ERR_NOMEM = -2,        /* an allocation failed */
    SPIRT_ERR_IO = -3,           /* a file or socket operation failed */
    SPIRT_ERR_FORMAT = -4,       /* malformed file, message or blob */
    SPIRT_ERR_SHAPE = -5,        /* tensor shapes do not agree */
    SPIRT_ERR_NONFINITE = -6,    /* NaN or infinity where none is allowed */
    SPIRT_ERR_PRECONDITION = -7, /* e.g. Krum with n < 2f + 3 */
    SPIRT_ERR_TIMEOUT = -8,      /* a deadline passed */
    SPIRT_ERR_PROTOCOL = -9,     /* the peer spoke something unexpected */
    SPIRT_ERR_NOT_FOUND = -10,   /* a key, file or name that does not exist */
    SPIRT_ERR_AUTH = -11,        /* a signature, certificate or password failed */
    SPIRT_ERR_CLOSED = -12,      /* the connection is gone */
    SPIRT_ERR_SERVER = -13,      /* the database replied with an error */
    SPIRT_ERR_INTERNAL = -14     /* a bug: an invariant did not hold */
} SpirtStatus;

#define SPIRT_ERROR_MESSAGE_MAX 256

typedef struct SpirtError {
    int code;                              /* SPIRT_OK or a SpirtStatus */
    char message[SPIRT_ERROR_MESSAGE_MAX]; /* NUL-terminated, one line */
} SpirtError;

/* Records `code` and a printf-style message in `error` (if not NULL) and
 * returns `code`, so a failing function can `return spirt_error_set(...)`. */
int spirt_error_set(SpirtError *error, int code, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

/* Puts context in front of the message already in `error`, e.g.
 * spirt_error_prefix(err, "loading %s", path) turns "bad magic" into
 * "loading x.gz: bad magic". Returns error->code (SPIRT_OK when error is NULL). */
int spirt_error_prefix(SpirtError *error, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

/* Resets `error` to SPIRT_OK with an empty message. NULL is allowed. */
void spirt_error_clear(SpirtError *error);

/* A short fixed name for a status ("invalid", "shape", ...). Never NULL. */
const char *spirt_status_name(int code);

#ifdef __cplusplus
}
#endif

#endif /* SPIRT_ERROR_H */
