/* reader.h -- RESP2 replies parsed into StoreReply trees, large strings
 * read in place.
 *
 * Internal to src/store. The reader does no I/O. The connection asks it
 * where the next bytes from the server should go (store_reader_space),
 * reads into those pieces, says how many came (store_reader_received), and
 * takes complete replies with store_reader_next. Asking is the point: once
 * the header "$L\r\n" of a bulk string has been parsed, the reply's own
 * L+1-byte buffer exists, and the rest of the string is read from the
 * socket straight into it. A megabyte value is then copied by the kernel
 * and by nobody else, bar the few kilobytes that came in the same read as
 * its header (those pass through the reader's small buffer).
 *
 * Replies: strings, status, errors, integers, arrays, nil (both "$-1" and
 * "*-1"), as StoreReply (store.h); strings are NUL-terminated after len.
 *
 * Limits, since a faulty or hostile server may send anything:
 *   - each reply may take at most max_reply_bytes of memory, counted as it
 *     is built (the StoreReply objects, strings, element arrays, a line
 *     still waiting for its end), and checked before anything is
 *     allocated: an announced length alone can fail it;
 *   - arrays nest at most STORE_READER_MAX_DEPTH deep;
 *   - anything that is not RESP2 (an unknown type byte, a length that is
 *     negative, overflows or has junk in it, a string not followed by CRLF)
 *     is malformed.
 * Failures are SPIRT_ERR_PROTOCOL ("reply larger than the ...-byte limit",
 * "malformed reply: ...") or SPIRT_ERR_NOMEM, and sticky until
 * store_reader_reset: the byte stream is out of step from there on. */
#ifndef SPIRT_STORE_READER_H
#define SPIRT_STORE_READER_H

#include <stddef.h>  /* size_t */
#include <sys/uio.h> /* struct iovec */

#include "spirt/error.h"
#include "spirt/store.h" /* StoreReply */

/* Arrays inside arrays up to this depth; deeper is malformed. Redis's own
 * replies nest 4 deep at most (XAUTOCLAIM). */
#define STORE_READER_MAX_DEPTH 8

typedef struct StoreReader StoreReader;

/* A caller's place for a bulk string's bytes, instead of a new buffer
 * (store_tensor_get_into reads a tensor straight into the caller's floats).
 * Called once a bulk header of `length` bytes is parsed, with the array the
 * string will be element `index` of (NULL for a top-level string); that
 * array's elements before `index` are complete, later ones still NULL.
 * Returns `length` writable bytes that stay valid until the reply is
 * complete or the reader reset, or NULL for the usual allocation. A string
 * delivered this way has str == NULL in the reply (len is its length); if
 * the reply fails midway, the place may hold part of the string. */
typedef void *(*StoreBulkSink)(void *context, const StoreReply *array, size_t index, size_t length);

/* A reader for replies of at most max_reply_bytes each. Owned by the
 * caller (store_reader_free). NULL when out of memory. */
StoreReader *store_reader_create(size_t max_reply_bytes);
void store_reader_free(StoreReader *reader); /* NULL is allowed */

/* Back to a fresh state: buffered bytes, a half-read reply, the sink and
 * any failure are dropped (for a new connection). */
void store_reader_reset(StoreReader *reader);

/* Sends the following bulk strings to `sink` first (until changed or
 * reset); NULL: none. */
void store_reader_set_sink(StoreReader *reader, StoreBulkSink sink, void *context);

/* The next complete reply, if the bytes received hold one: SPIRT_OK with
 * *reply set (owned by the caller: store_reply_free) or NULL (more bytes
 * are needed), or a failure (see above). */
int store_reader_next(StoreReader *reader, StoreReply **reply, SpirtError *error);

/* Where the next bytes should go: fills 1 or 2 pieces, to be filled in
 * order, and returns how many; SPIRT_ERR_NOMEM if the buffer could not
 * grow. Call after store_reader_next said it needs more. */
int store_reader_space(StoreReader *reader, struct iovec pieces[2], SpirtError *error);

/* `count` bytes were written into the pieces of the last
 * store_reader_space, from the first on. */
void store_reader_received(StoreReader *reader, size_t count);

/* Copies bytes in, as if received (for tests and crafted input). */
int store_reader_feed(StoreReader *reader, const void *bytes, size_t length, SpirtError *error);

#endif /* SPIRT_STORE_READER_H */
