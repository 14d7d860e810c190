/* conn.h -- what the typed helpers of src/store need beyond store.h.
 *
 * Internal to src/store. */
#ifndef SPIRT_STORE_CONN_H
#define SPIRT_STORE_CONN_H

#include <stddef.h>
#include <stdint.h>

#include "spirt/store.h"
#include "store/reader.h" /* StoreBulkSink */

/* What one command may ask beyond store_command_argv. Zero: nothing. */
typedef struct StoreCallOptions {
    /* The server may hold the reply this long before answering (XREADGROUP
     * BLOCK): the read time-out is extended by as much for this reply. */
    int64_t extra_wait_ms;
    /* Bulk strings of the reply go to this sink first (reader.h), e.g.
     * straight into a caller's tensor; NULL: none. */
    StoreBulkSink sink;
    void *sink_context;
} StoreCallOptions;

/* store_command_argv with those options (`call` may be NULL). */
int store_command_argv_with(StoreConn *conn, size_t argc, const char *const *argv, const size_t *lengths,
                            const StoreCallOptions *call, StoreReply **reply, SpirtError *error);

/* Fails with SPIRT_ERR_PROTOCOL: `what` said something unexpected (a
 * reply of the wrong type or shape). The connection stays usable: the
 * reply was complete, only its content was not what we asked for. */
int store_unexpected_reply(const StoreConn *conn, const StoreReply *reply, const char *what, SpirtError *error);

#endif /* SPIRT_STORE_CONN_H */
