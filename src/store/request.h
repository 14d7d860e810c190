/* request.h -- RESP requests framed for gathering writes.
 *
 * Internal to src/store. A request is "*N\r\n", then "$len\r\n" arg "\r\n"
 * for each argument. The framing and the small arguments are written into
 * one buffer; arguments of at least `copy_from` bytes are not copied but
 * referenced where they are, as pieces of an iovec list that the transport
 * gathers (writev, or direct SSL_write), so a megabyte tensor goes from the
 * caller's memory to the socket with no copy in between. Pure code: no I/O,
 * no allocation. */
#ifndef SPIRT_STORE_REQUEST_H
#define SPIRT_STORE_REQUEST_H

#include <stddef.h>  /* size_t */
#include <sys/uio.h> /* struct iovec */

#include "spirt/error.h"

/* Copy every argument (one contiguous request, e.g. for a pipeline). */
#define STORE_REQUEST_COPY_ALL ((size_t)-1)

typedef struct StoreRequestPlan {
    size_t total_bytes;  /* the whole request as it goes on the wire */
    size_t copied_bytes; /* bytes store_request_frame writes into its buffer */
    size_t piece_count;  /* iovec pieces the request takes (1 + 2 x large arguments) */
} StoreRequestPlan;

/* Checks a command and sizes its request. lengths may be NULL when every
 * argument is a C string. SPIRT_ERR_INVALID for no arguments, more than
 * INT_MAX, a NULL argument, or a request over STORE_MAX_REQUEST_BYTES. */
int store_request_plan(size_t argc, const char *const *argv, const size_t *lengths, size_t copy_from,
                       StoreRequestPlan *plan, SpirtError *error);

/* Frames a planned request (same argc, argv, lengths and copy_from): the
 * copied part into `buffer` (plan->copied_bytes), the pieces into `pieces`
 * (plan->piece_count), which point into `buffer` and into argv's large
 * arguments, so both must outlive the write. */
void store_request_frame(size_t argc, const char *const *argv, const size_t *lengths, size_t copy_from,
                         char *buffer, struct iovec *pieces);

#endif /* SPIRT_STORE_REQUEST_H */
