/* conn.h -- what the typed helpers of src/store need beyond store.h.
 *
 * Internal to src/store. */
#ifndef SPIRT_STORE_CONN_H
#define SPIRT_STORE_CONN_H

#include <stddef.h>
#include <stdint.h>

#include "spirt/store.h"

/* store_command_argv for a command the server may hold for up to
 * `extra_wait_ms` before answering (XREADGROUP BLOCK): the read time-out is
 * extended by that much for this one reply. */
int store_command_argv_waiting(StoreConn *conn, size_t argc, const char *const *argv, const size_t *lengths,
                               int64_t extra_wait_ms, StoreReply **reply, SpirtError *error);

/* Fails with SPIRT_ERR_PROTOCOL: `what` said something unexpected (a
 * reply of the wrong type or shape). The connection stays usable: the
 * reply was complete, only its content was not what we asked for. */
int store_unexpected_reply(const StoreConn *conn, const StoreReply *reply, const char *what, SpirtError *error);

#endif /* SPIRT_STORE_CONN_H */
