/* socket.c -- TCP connections with deadlines, and the plain transport.
 *
 * Sockets are non-blocking from the start, and every wait goes through
 * poll(2) with a deadline: this is what makes the connection's time-outs
 * hold, for connect as for reads and writes (see transport.h). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h> /* IOV_MAX */
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "spirt/clock.h"
#include "store/transport.h"

/* Keepalive probes find a peer that vanished without closing (a machine
 * that lost power, a cut link) on an idle connection within about a minute
 * instead of the kernel's default two hours. */
enum { KEEPALIVE_IDLE_S = 30, KEEPALIVE_INTERVAL_S = 10, KEEPALIVE_PROBES = 3 };

uint64_t store_deadline_after(int64_t timeout_ms) {
    if (timeout_ms < 0) return STORE_NO_DEADLINE;
    return clock_monotonic_ns() + (uint64_t)timeout_ms * 1000000ull;
}

int store_wait_fd(int fd, short events, uint64_t deadline_ns, SpirtError *error) {
    for (;;) {
        int timeout_ms = -1;
        if (deadline_ns != STORE_NO_DEADLINE) {
            uint64_t now = clock_monotonic_ns();
            if (now >= deadline_ns) return 0;
            /* Round up, so a wait never ends just short of the deadline
             * and spins on zero-millisecond polls. */
            uint64_t remaining_ms = (deadline_ns - now + 999999) / 1000000;
            timeout_ms = remaining_ms > 1000000000 ? 1000000000 : (int)remaining_ms;
        }
        struct pollfd entry = {.fd = fd, .events = events, .revents = 0};
        int ready = poll(&entry, 1, timeout_ms);
        if (ready > 0) return 1;
        if (ready == 0) {
            if (deadline_ns == STORE_NO_DEADLINE) continue;
            if (clock_monotonic_ns() >= deadline_ns) return 0;
            continue;
        }
        if (errno == EINTR) continue;
        return spirt_error_set(error, SPIRT_ERR_IO, "poll: %s", strerror(errno));
    }
}

static void set_socket_options(int fd) {
    /* Requests are written whole; Nagle's delay would only add latency to
     * the small commands that follow a large one. */
    int on = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
#ifdef TCP_KEEPIDLE
    int idle = KEEPALIVE_IDLE_S, interval = KEEPALIVE_INTERVAL_S, probes = KEEPALIVE_PROBES;
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof(interval));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof(probes));
#endif
}

/* "[::1]:6379" or "127.0.0.1:6379" for one resolved address. */
static void format_address(const struct addrinfo *info, char *out, size_t size) {
    char host[NI_MAXHOST], port[NI_MAXSERV];
    if (getnameinfo(info->ai_addr, info->ai_addrlen, host, sizeof(host), port, sizeof(port),
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        snprintf(out, size, "?");
        return;
    }
    snprintf(out, size, info->ai_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, port);
}

/* One connect attempt. Returns the fd, or a negative status with `error`
 * set; a time-out is SPIRT_ERR_TIMEOUT. */
static int connect_one(const struct addrinfo *info, uint64_t deadline_ns, SpirtError *error) {
    char where[NI_MAXHOST + NI_MAXSERV + 4];
    format_address(info, where, sizeof(where));
    int fd = socket(info->ai_family, info->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, info->ai_protocol);
    if (fd < 0) return spirt_error_set(error, SPIRT_ERR_IO, "socket for %s: %s", where, strerror(errno));
    if (connect(fd, info->ai_addr, info->ai_addrlen) != 0) {
        if (errno != EINPROGRESS && errno != EINTR) {
            int status = spirt_error_set(error, SPIRT_ERR_IO, "connect to %s: %s", where, strerror(errno));
            close(fd);
            return status;
        }
        int ready = store_wait_fd(fd, POLLOUT, deadline_ns, error);
        if (ready <= 0) {
            close(fd);
            return ready < 0 ? ready : spirt_error_set(error, SPIRT_ERR_TIMEOUT, "connect to %s timed out", where);
        }
        int failure = 0;
        socklen_t length = sizeof(failure);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &failure, &length) != 0) failure = errno;
        if (failure != 0) {
            close(fd);
            return spirt_error_set(error, SPIRT_ERR_IO, "connect to %s: %s", where, strerror(failure));
        }
    }
    set_socket_options(fd);
    return fd;
}

/* A Unix-domain socket at `path`: the same protocol without the TCP stack,
 * for databases on this machine (a large transfer costs about half). */
static int unix_connect(const char *path, uint64_t deadline_ns, SpirtError *error) {
    struct sockaddr_un address = {0};
    if (strlen(path) >= sizeof(address.sun_path))
        return spirt_error_set(error, SPIRT_ERR_INVALID, "socket path longer than %zu bytes: %s",
                               sizeof(address.sun_path) - 1, path);
    address.sun_family = AF_UNIX;
    memcpy(address.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return spirt_error_set(error, SPIRT_ERR_IO, "socket for %s: %s", path, strerror(errno));
    if (connect(fd, (struct sockaddr *)&address, sizeof(address)) != 0) {
        if (errno != EINPROGRESS && errno != EAGAIN && errno != EINTR) {
            int status = spirt_error_set(error, SPIRT_ERR_IO, "connect to %s: %s", path, strerror(errno));
            close(fd);
            return status;
        }
        int ready = store_wait_fd(fd, POLLOUT, deadline_ns, error);
        int failure = 0;
        socklen_t length = sizeof(failure);
        if (ready > 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &failure, &length) != 0) failure = errno;
        if (ready <= 0 || failure != 0) {
            close(fd);
            if (ready < 0) return ready;
            return ready == 0 ? spirt_error_set(error, SPIRT_ERR_TIMEOUT, "connect to %s timed out", path)
                              : spirt_error_set(error, SPIRT_ERR_IO, "connect to %s: %s", path, strerror(failure));
        }
    }
    return fd;
}

int store_tcp_connect(const char *host, int port, uint64_t deadline_ns, SpirtError *error) {
    if (host[0] == '/') return unix_connect(host, deadline_ns, error);
    char service[16];
    snprintf(service, sizeof(service), "%d", port);
    struct addrinfo hints = {0}, *found = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_ADDRCONFIG;
    int lookup = getaddrinfo(host, service, &hints, &found);
    if (lookup != 0 && lookup != EAI_AGAIN && lookup != EAI_MEMORY) {
        /* AI_ADDRCONFIG hides ::1 on hosts whose only IPv6 address is the
         * loopback; ask again without it before giving up. */
        hints.ai_flags = 0;
        lookup = getaddrinfo(host, service, &hints, &found);
    }
    if (lookup != 0)
        return spirt_error_set(error, SPIRT_ERR_IO, "cannot resolve '%s': %s", host,
                               lookup == EAI_SYSTEM ? strerror(errno) : gai_strerror(lookup));
    int result = SPIRT_ERR_IO;
    for (const struct addrinfo *info = found; info != NULL; info = info->ai_next) {
        result = connect_one(info, deadline_ns, error);
        if (result >= 0 || result == SPIRT_ERR_TIMEOUT) break;
    }
    freeaddrinfo(found);
    return result;
}

/* --- The plain transport --- */

/* After recv/send returned -1: 0 with transport->want set when the socket
 * is only not ready (try again after a wait), else the failure. */
static ssize_t socket_failure(StoreTransport *transport, short wanted, const char *doing, SpirtError *error) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
        transport->want = wanted;
        return 0;
    }
    int closed = errno == ECONNRESET || errno == EPIPE || errno == ENOTCONN;
    return spirt_error_set(error, closed ? SPIRT_ERR_CLOSED : SPIRT_ERR_IO, "%s: %s", doing, strerror(errno));
}

/* The kernel takes at most IOV_MAX pieces per call; the rest go next time
 * (the caller loops on partial transfers anyway). */
static int capped_count(int count) { return count > IOV_MAX ? IOV_MAX : count; }

static ssize_t plain_read(StoreTransport *transport, const struct iovec *pieces, int count, SpirtError *error) {
    ssize_t n;
    do {
        n = readv(transport->fd, pieces, capped_count(count));
    } while (n < 0 && errno == EINTR);
    if (n > 0) return n;
    if (n == 0) return spirt_error_set(error, SPIRT_ERR_CLOSED, "connection closed by the server");
    return socket_failure(transport, POLLIN, "read", error);
}

static ssize_t plain_write(StoreTransport *transport, const struct iovec *pieces, int count, SpirtError *error) {
    /* sendmsg rather than writev for MSG_NOSIGNAL: a closed connection is
     * an error to report, not a SIGPIPE that kills the process. */
    struct msghdr message = {0};
    message.msg_iov = (struct iovec *)pieces; /* not written to by the kernel */
    message.msg_iovlen = (size_t)capped_count(count);
    ssize_t n;
    do {
        n = sendmsg(transport->fd, &message, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n > 0) return n;
    if (n == 0) errno = EAGAIN; /* nothing taken: wait for room */
    return socket_failure(transport, POLLOUT, "write", error);
}

static void plain_close(StoreTransport *transport) {
    if (transport == NULL) return;
    close(transport->fd);
    free(transport);
}

static const StoreTransportOps plain_ops = {"tcp", plain_read, plain_write, plain_close};

StoreTransport *store_plain_transport(int fd, SpirtError *error) {
    StoreTransport *transport = calloc(1, sizeof(*transport));
    if (transport == NULL) {
        close(fd);
        spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory for a connection");
        return NULL;
    }
    transport->ops = &plain_ops;
    transport->fd = fd;
    return transport;
}
