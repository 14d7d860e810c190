/* transport.h -- the byte pipe under a StoreConn: plain TCP or TLS.
 *
 * Internal to src/store. A transport moves bytes over one connected,
 * non-blocking socket; the connection code above it (conn.c) knows nothing
 * of TLS. Waiting is done by the caller with store_wait_fd, so every wait
 * honours the connection's time-outs.
 *
 * read/write move bytes between the socket and a list of pieces (an iovec
 * array, filled or sent in order), so that a request can go out straight
 * from the caller's buffers and a large reply can land straight in its
 * final allocation, with no staging copy in between. They return:
 *    > 0  bytes moved (possibly fewer than the pieces hold);
 *      0  nothing now: wait for transport->want (POLLIN or POLLOUT; TLS may
 *         need to write while reading and the other way round), then retry;
 *    < 0  a SpirtStatus, with `error` filled: SPIRT_ERR_CLOSED when the
 *         server closed or reset the connection, SPIRT_ERR_AUTH when TLS
 *         refused a certificate, SPIRT_ERR_IO otherwise.
 * A transport that failed once is not used again (the connection is
 * broken and will be closed). */
#ifndef SPIRT_STORE_TRANSPORT_H
#define SPIRT_STORE_TRANSPORT_H

#include <stddef.h>    /* size_t */
#include <stdint.h>    /* uint64_t */
#include <sys/types.h> /* ssize_t */
#include <sys/uio.h>   /* struct iovec */

#include "spirt/error.h"
#include "spirt/store.h" /* StoreTlsOptions */

typedef struct StoreTransport StoreTransport;

typedef struct StoreTransportOps {
    const char *name; /* "tcp" or "tls", for messages */
    /* `count` >= 1 pieces; empty pieces are allowed. */
    ssize_t (*read)(StoreTransport *transport, const struct iovec *pieces, int count, SpirtError *error);
    ssize_t (*write)(StoreTransport *transport, const struct iovec *pieces, int count, SpirtError *error);
    /* Closes the socket and frees the transport (best-effort TLS close_notify). */
    void (*close)(StoreTransport *transport);
} StoreTransportOps;

struct StoreTransport {
    const StoreTransportOps *ops;
    int fd;   /* connected, non-blocking */
    int want; /* after a 0 return: POLLIN or POLLOUT */
};

/* No deadline (wait forever): a value no monotonic clock reaches. */
#define STORE_NO_DEADLINE UINT64_MAX

/* A deadline `timeout_ms` from now on the monotonic clock (ns); a negative
 * time-out gives STORE_NO_DEADLINE. */
uint64_t store_deadline_after(int64_t timeout_ms);

/* Waits until fd is ready for `events` or the deadline passes. Returns 1
 * when ready (or on POLLERR/POLLHUP: the next read/write reports it), 0 on
 * time-out, a negative SpirtStatus on a poll failure. */
int store_wait_fd(int fd, short events, uint64_t deadline_ns, SpirtError *error);

/* Connects a TCP socket to host:port, trying every address getaddrinfo
 * gives (IPv6 and IPv4) in turn until the deadline. The socket is
 * non-blocking, with TCP_NODELAY and keepalive. Returns the fd, or a
 * negative SpirtStatus (SPIRT_ERR_IO with the last address's reason,
 * SPIRT_ERR_TIMEOUT, SPIRT_ERR_INVALID for an unknown host). */
int store_tcp_connect(const char *host, int port, uint64_t deadline_ns, SpirtError *error);

/* A plain transport over the connected socket; takes ownership of fd (it
 * is closed on failure too). NULL only when out of memory. */
StoreTransport *store_plain_transport(int fd, SpirtError *error);

/* Runs the TLS handshake over the connected socket and returns the TLS
 * transport; takes ownership of fd (closed on failure). `host` is what the
 * caller connected to (the default name to verify). NULL on failure:
 * SPIRT_ERR_INVALID (unreadable CA/certificate/key files),
 * SPIRT_ERR_AUTH (verification failed, with the reason),
 * SPIRT_ERR_TIMEOUT, SPIRT_ERR_IO / SPIRT_ERR_CLOSED. */
StoreTransport *store_tls_transport(int fd, const StoreTlsOptions *tls, const char *host, uint64_t deadline_ns,
                                    SpirtError *error);

#endif /* SPIRT_STORE_TRANSPORT_H */
