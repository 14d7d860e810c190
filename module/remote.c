/* remote.c -- the module's one outbound client: a blocking RESP connection
 * to another Redis server, used off the main thread by SPIRT.FETCH.
 *
 * It is deliberately small: connect (Unix socket or TCP, with a deadline),
 * send one command, read a status or bulk reply, and read a bulk string's
 * bytes straight into the caller's buffer (a tensor's values), so a
 * megabyte arrives with one copy out of the kernel and none in between.
 * Every wait is bounded by one deadline for the whole exchange: a peer that
 * accepts and then says nothing costs the caller TIMEOUT, not a thread
 * forever. No TLS: a caller with a TLS peer reads through its own client
 * (src/store) instead. */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "spirt/clock.h"
#include "spirt_module.h"

/* Waits until the socket is ready for `events` or the deadline passes. */
static int wait_ready(SpirtRemote *remote, short events, SpirtError *error) {
    for (;;) {
        double left = remote->deadline_ms - clock_monotonic_ms();
        if (left <= 0)
            return spirt_error_set(error, SPIRT_ERR_TIMEOUT, "%s did not answer within %d ms", remote->address,
                                   remote->timeout_ms);
        struct pollfd descriptor = {.fd = remote->fd, .events = events};
        int ready = poll(&descriptor, 1, (int)(left + 1));
        if (ready > 0) return SPIRT_OK;
        if (ready < 0 && errno != EINTR)
            return spirt_error_set(error, SPIRT_ERR_IO, "waiting for %s: %s", remote->address, strerror(errno));
    }
}

/* A non-blocking connect to one socket address, finished within the deadline. */
static int connect_to(SpirtRemote *remote, int family, const struct sockaddr *address, socklen_t length,
                      SpirtError *error) {
    remote->fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (remote->fd < 0) return spirt_error_set(error, SPIRT_ERR_IO, "socket: %s", strerror(errno));
    if (connect(remote->fd, address, length) == 0) return SPIRT_OK;
    if (errno != EINPROGRESS && errno != EAGAIN)
        return spirt_error_set(error, SPIRT_ERR_IO, "cannot connect to %s: %s", remote->address, strerror(errno));
    int status = wait_ready(remote, POLLOUT, error);
    if (status != SPIRT_OK) return status;
    int failure = 0;
    socklen_t size = sizeof(failure);
    if (getsockopt(remote->fd, SOL_SOCKET, SO_ERROR, &failure, &size) != 0) failure = errno;
    if (failure != 0)
        return spirt_error_set(error, SPIRT_ERR_IO, "cannot connect to %s: %s", remote->address, strerror(failure));
    return SPIRT_OK;
}

static void close_socket(SpirtRemote *remote) {
    if (remote->fd >= 0) close(remote->fd);
    remote->fd = -1;
}

int spirt_remote_open(SpirtRemote *remote, const char *address, int timeout_ms, SpirtError *error) {
    memset(remote, 0, sizeof(*remote));
    remote->fd = -1;
    remote->timeout_ms = timeout_ms;
    remote->deadline_ms = clock_monotonic_ms() + timeout_ms;
    snprintf(remote->address, sizeof(remote->address), "%s", address);
    if (strncmp(address, "unix:", 5) == 0) {
        struct sockaddr_un unix_address = {.sun_family = AF_UNIX};
        const char *path = address + 5;
        if (path[0] != '/' || strlen(path) >= sizeof(unix_address.sun_path))
            return spirt_error_set(error, SPIRT_ERR_INVALID, "ADDRESS unix: needs an absolute path of at most %zu bytes",
                                   sizeof(unix_address.sun_path) - 1);
        memcpy(unix_address.sun_path, path, strlen(path) + 1);
        int status = connect_to(remote, AF_UNIX, (const struct sockaddr *)&unix_address, sizeof(unix_address), error);
        if (status != SPIRT_OK) close_socket(remote);
        return status;
    }
    /* host:port or [v6]:port */
    char host[256], port[8];
    const char *colon = strrchr(address, ':');
    const char *host_start = address, *host_end = colon;
    if (address[0] == '[') {
        const char *bracket = strchr(address, ']');
        if (bracket == NULL || bracket[1] != ':')
            return spirt_error_set(error, SPIRT_ERR_INVALID, "ADDRESS must be unix:/path, host:port or [ipv6]:port");
        host_start = address + 1;
        host_end = bracket;
        colon = bracket + 1;
    }
    size_t host_length = colon && host_end ? (size_t)(host_end - host_start) : 0;
    size_t port_length = colon ? strlen(colon + 1) : 0;
    if (colon == NULL || host_length == 0 || host_length >= sizeof(host) || port_length == 0 ||
        port_length >= sizeof(port) || strspn(colon + 1, "0123456789") != port_length)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "ADDRESS must be unix:/path, host:port or [ipv6]:port");
    memcpy(host, host_start, host_length);
    host[host_length] = '\0';
    memcpy(port, colon + 1, port_length + 1);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *found = NULL;
    int resolved = getaddrinfo(host, port, &hints, &found);
    if (resolved != 0)
        return spirt_error_set(error, SPIRT_ERR_IO, "cannot resolve %s: %s", host, gai_strerror(resolved));
    int status = SPIRT_ERR_IO;
    for (struct addrinfo *candidate = found; candidate; candidate = candidate->ai_next) {
        status = connect_to(remote, candidate->ai_family, candidate->ai_addr, candidate->ai_addrlen, error);
        if (status == SPIRT_OK) break;
        close_socket(remote);
        if (status == SPIRT_ERR_TIMEOUT) break;
    }
    freeaddrinfo(found);
    if (status == SPIRT_OK) {
        int one = 1;
        setsockopt(remote->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    return status;
}

void spirt_remote_close(SpirtRemote *remote) { close_socket(remote); }

static int send_all(SpirtRemote *remote, const char *bytes, size_t length, SpirtError *error) {
    while (length > 0) {
        ssize_t sent = send(remote->fd, bytes, length, MSG_NOSIGNAL);
        if (sent > 0) {
            bytes += sent;
            length -= (size_t)sent;
            continue;
        }
        if (sent < 0 && errno == EINTR) continue;
        if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int status = wait_ready(remote, POLLOUT, error);
            if (status != SPIRT_OK) return status;
            continue;
        }
        return spirt_error_set(error, SPIRT_ERR_IO, "sending to %s: %s", remote->address, strerror(errno));
    }
    return SPIRT_OK;
}

int spirt_remote_send(SpirtRemote *remote, int argc, const char *const *argv, const size_t *lengths, SpirtError *error) {
    /* One RESP array in one buffer, so a command is one send() (the
     * commands here are small: AUTH, GETRANGE). */
    size_t total = 16;
    for (int i = 0; i < argc; i++) total += lengths[i] + 24;
    char *buffer = RedisModule_Alloc(total);
    size_t used = (size_t)snprintf(buffer, total, "*%d\r\n", argc);
    for (int i = 0; i < argc; i++) {
        used += (size_t)snprintf(buffer + used, total - used, "$%zu\r\n", lengths[i]);
        memcpy(buffer + used, argv[i], lengths[i]);
        used += lengths[i];
        memcpy(buffer + used, "\r\n", 2);
        used += 2;
    }
    int status = send_all(remote, buffer, used, error);
    RedisModule_Free(buffer);
    return status;
}

/* Reads into `out` up to `capacity` bytes (at least one) within the deadline. */
static int receive_some(SpirtRemote *remote, char *out, size_t capacity, size_t *received, SpirtError *error) {
    for (;;) {
        ssize_t count = recv(remote->fd, out, capacity, 0);
        if (count > 0) {
            *received = (size_t)count;
            return SPIRT_OK;
        }
        if (count == 0) return spirt_error_set(error, SPIRT_ERR_CLOSED, "%s closed the connection", remote->address);
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return spirt_error_set(error, SPIRT_ERR_IO, "reading from %s: %s", remote->address, strerror(errno));
        int status = wait_ready(remote, POLLIN, error);
        if (status != SPIRT_OK) return status;
    }
}

int spirt_remote_read_exact(SpirtRemote *remote, void *out, size_t length, SpirtError *error) {
    char *target = out;
    size_t buffered = remote->end - remote->start;
    size_t taken = buffered < length ? buffered : length;
    memcpy(target, remote->buffer + remote->start, taken);
    remote->start += taken;
    target += taken;
    length -= taken;
    /* The rest straight into the caller's memory. */
    while (length > 0) {
        size_t received = 0;
        int status = receive_some(remote, target, length, &received, error);
        if (status != SPIRT_OK) return status;
        target += received;
        length -= received;
    }
    return SPIRT_OK;
}

/* Reads one CRLF-ended line (without it) into line[size]; a longer line
 * keeps its start. */
static int read_line(SpirtRemote *remote, char *line, size_t size, SpirtError *error) {
    for (;;) {
        char *end = memchr(remote->buffer + remote->start, '\n', remote->end - remote->start);
        if (end) {
            size_t length = (size_t)(end - (remote->buffer + remote->start));
            if (length == 0 || end[-1] != '\r')
                return spirt_error_set(error, SPIRT_ERR_PROTOCOL, "%s sent a line not ended by CRLF", remote->address);
            length--; /* the \r */
            if (length >= size) length = size - 1; /* a long error message: keep its start */
            memcpy(line, remote->buffer + remote->start, length);
            line[length] = '\0';
            remote->start = (size_t)(end - remote->buffer) + 1;
            return SPIRT_OK;
        }
        if (remote->start > 0) {
            memmove(remote->buffer, remote->buffer + remote->start, remote->end - remote->start);
            remote->end -= remote->start;
            remote->start = 0;
        }
        if (remote->end == sizeof(remote->buffer))
            return spirt_error_set(error, SPIRT_ERR_PROTOCOL, "%s sent a line longer than %zu bytes", remote->address,
                                   sizeof(remote->buffer));
        size_t received = 0;
        int status = receive_some(remote, remote->buffer + remote->end, sizeof(remote->buffer) - remote->end,
                                  &received, error);
        if (status != SPIRT_OK) return status;
        remote->end += received;
    }
}

/* Keeps an error line printable and free of the reply's own framing. */
static void printable(char *text) {
    for (char *c = text; *c; c++)
        if ((unsigned char)*c < 32 || (unsigned char)*c > 126) *c = '?';
}

int spirt_remote_expect_ok(SpirtRemote *remote, const char *what, SpirtError *error) {
    char line[256];
    int status = read_line(remote, line, sizeof(line), error);
    if (status != SPIRT_OK) return status;
    printable(line);
    if (line[0] == '-') return spirt_error_set(error, SPIRT_ERR_AUTH, "%s refused %s: %s", remote->address, what, line + 1);
    if (line[0] != '+')
        return spirt_error_set(error, SPIRT_ERR_PROTOCOL, "%s answered %s with '%.40s'", remote->address, what, line);
    return SPIRT_OK;
}

int spirt_remote_read_bulk_length(SpirtRemote *remote, long long *length, SpirtError *error) {
    char line[256];
    int status = read_line(remote, line, sizeof(line), error);
    if (status != SPIRT_OK) return status;
    printable(line);
    if (line[0] == '-') return spirt_error_set(error, SPIRT_ERR_SERVER, "%s replied: %s", remote->address, line + 1);
    char *end = NULL;
    errno = 0;
    long long value = line[0] == '$' ? strtoll(line + 1, &end, 10) : 0;
    if (line[0] != '$' || end == line + 1 || *end != '\0' || errno != 0 || value < -1)
        return spirt_error_set(error, SPIRT_ERR_PROTOCOL, "%s sent '%.40s' where a bulk string was expected",
                               remote->address, line);
    *length = value;
    return SPIRT_OK;
}
