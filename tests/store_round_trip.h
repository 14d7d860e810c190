/* store_round_trip.h -- values of every size the client treats differently,
 * sent through a connection and read back bit for bit.
 *
 * The client copies small arguments and sends large ones from the caller's
 * memory, reads small strings through its buffer and large ones in place,
 * and gathers TLS records; these checks cross every one of those
 * thresholds, with single commands, a command of several large arguments,
 * and a pipeline, so each transport (TCP, Unix socket, TLS) is checked the
 * same way. */
#ifndef SPIRT_TEST_STORE_ROUND_TRIP_H
#define SPIRT_TEST_STORE_ROUND_TRIP_H

#include <stdint.h>

#include "spirt/store.h"

/* Runs the checks on `conn` (keys "rt:*"); with_tensors also round-trips
 * tensors with SPIRT.TSET/TGET (the server must have spirt.so). */
void store_check_round_trips(StoreConn *conn, uint64_t seed, int with_tensors);

#endif /* SPIRT_TEST_STORE_ROUND_TRIP_H */
