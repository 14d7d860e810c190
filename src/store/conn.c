/* conn.c -- connections: setup, requests, replies, pipelining, failures.
 *
 * A StoreConn is a transport (plain or TLS, transport.h), a RESP reader
 * building StoreReply objects (reader.h), and an output buffer for
 * pipelined requests.
 *
 * Large values are not copied on their way through. A single command
 * (store_command_argv and every typed helper) is framed around its
 * arguments (request.h) and written with a gathering write, its large
 * arguments straight from the caller's memory; its reply's large strings
 * are read from the socket straight into their final buffers (reader.h),
 * or into the caller's own (a sink, for tensors). Pipelined commands
 * (store_append*) are copied into the output buffer, as the caller's
 * buffers need not outlive the call, and written when a reply is wanted.
 * store_command's printf-like format is hiredis's (redisvFormatCommand);
 * hiredis is used for nothing else.
 *
 * Every wait goes through poll with the connection's time-outs.
 *
 * Failure model (store.h): a server error reply is an ordinary result; any
 * transport, time-out or protocol failure breaks the connection, closes the
 * socket and is remembered, so later calls fail fast with the same error
 * until a reconnect. */
#include <hiredis/hiredis.h> /* redisvFormatCommand, for store_command's format only */
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spirt/log.h"
#include "spirt/store.h"
#include "store/conn.h"
#include "store/reader.h"
#include "store/request.h"
#include "store/transport.h"

enum {
    /* Queued requests beyond this are written at append time, so a long
     * pipeline does not hold all of its requests in memory. */
    APPEND_FLUSH_BYTES = 1024 * 1024,
    /* Arguments of a single command this long or longer are written from
     * the caller's memory; shorter ones are copied next to their framing
     * (a copy of a few kilobytes costs less than another piece). */
    SEND_IN_PLACE_BYTES = 4 * 1024,
    /* Framing and small arguments of most commands fit on the stack. */
    LOCAL_FRAME_BYTES = 1024,
    LOCAL_PIECES = 9
};

/* Pipelined requests not yet written. The buffer may be one that hiredis
 * formatted (adopted to save copying a large command), which must go back
 * through redisFreeCommand. */
typedef struct OutBuffer {
    char *data;
    size_t length;   /* bytes queued */
    size_t sent;     /* bytes of them already written */
    size_t capacity; /* bytes allocated */
    int from_hiredis;
} OutBuffer;

struct StoreConn {
    StoreOptions options; /* owned copies of every string, defaults filled in */
    char address[300];    /* "host:port", for messages */
    StoreTransport *transport; /* NULL while broken */
    StoreReader *reader;
    OutBuffer out;
    size_t pending;         /* replies owed by the server */
    SpirtError broken;      /* SPIRT_OK, or the failure that broke the connection */
    int64_t extra_wait_ms;  /* read time-out extension for one blocking command */
};

/* --- Owned options --- */

static int copy_string(const char **field) {
    if (*field == NULL) return 1;
    char *copy = strdup(*field);
    *field = copy;
    return copy != NULL;
}

static void free_string(const char *text, int secret) {
    if (text == NULL) return;
    if (secret) explicit_bzero((char *)text, strlen(text));
    free((char *)text);
}

static void release_options(StoreOptions *options) {
    free_string(options->host, 0);
    free_string(options->tls.ca_file, 0);
    free_string(options->tls.cert_file, 0);
    free_string(options->tls.key_file, 0);
    free_string(options->tls.server_name, 0);
    free_string(options->username, 0);
    free_string(options->password, 1);
    free_string(options->client_name, 0);
    memset(options, 0, sizeof(*options));
}

static int copy_options(StoreOptions *copy, const StoreOptions *options, SpirtError *error) {
    *copy = *options;
    if (copy->host == NULL || copy->host[0] == '\0') copy->host = "127.0.0.1";
    int ok = copy_string(&copy->host);
    ok &= copy_string(&copy->tls.ca_file);
    ok &= copy_string(&copy->tls.cert_file);
    ok &= copy_string(&copy->tls.key_file);
    ok &= copy_string(&copy->tls.server_name);
    ok &= copy_string(&copy->username);
    ok &= copy_string(&copy->password);
    ok &= copy_string(&copy->client_name);
    if (!ok) {
        release_options(copy);
        return spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory copying connection options");
    }
    if (copy->port == 0) copy->port = STORE_DEFAULT_PORT;
    if (copy->connect_timeout_ms == 0) copy->connect_timeout_ms = STORE_DEFAULT_CONNECT_TIMEOUT_MS;
    if (copy->read_timeout_ms == 0) copy->read_timeout_ms = STORE_DEFAULT_READ_TIMEOUT_MS;
    if (copy->write_timeout_ms == 0) copy->write_timeout_ms = STORE_DEFAULT_WRITE_TIMEOUT_MS;
    if (copy->max_reply_bytes == 0) copy->max_reply_bytes = STORE_DEFAULT_MAX_REPLY_BYTES;
    return SPIRT_OK;
}

static int check_options(const StoreOptions *options, SpirtError *error) {
    if (options == NULL) return spirt_error_set(error, SPIRT_ERR_INVALID, "no connection options");
    if (options->host && options->host[0] == '/' && options->tls.enabled)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "TLS over a Unix socket is not supported (%s)", options->host);
    if (options->port < 0 || options->port > 65535)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "port %d is outside 1..65535", options->port);
    if (options->database < 0)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "database index %d is negative", options->database);
    if (options->username != NULL && options->password == NULL)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "user '%s' has no password", options->username);
    if (options->client_name != NULL && strpbrk(options->client_name, " \t\r\n") != NULL)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "client name '%s' contains white space",
                               options->client_name);
    return SPIRT_OK;
}

/* --- The output buffer --- */

static void out_reset(OutBuffer *out) {
    if (out->from_hiredis)
        redisFreeCommand(out->data);
    else
        free(out->data);
    memset(out, 0, sizeof(*out));
}

/* Room for `size` more bytes at out->data + out->length, in a buffer of
 * our own; NULL when out of memory (the queue is unchanged). */
static char *out_reserve(OutBuffer *out, size_t size) {
    if (out->from_hiredis || out->capacity - out->length < size) {
        size_t needed = out->length + size;
        size_t capacity = out->from_hiredis ? needed : out->capacity;
        if (capacity < 4096) capacity = 4096;
        while (capacity < needed) capacity *= 2;
        char *data = malloc(capacity);
        if (data == NULL) return NULL;
        if (out->length > 0) memcpy(data, out->data, out->length);
        size_t queued = out->length, sent = out->sent;
        out_reset(out);
        out->data = data;
        out->length = queued;
        out->sent = sent;
        out->capacity = capacity;
    }
    return out->data + out->length;
}

/* Queues one command formatted by hiredis (taking ownership of it). */
static int out_take(OutBuffer *out, char *command, size_t length, SpirtError *error) {
    if (out->length == 0) {
        /* Nothing queued: adopt hiredis's buffer as is, so a large value
         * is not copied once more. */
        out_reset(out);
        out->data = command;
        out->length = out->capacity = length;
        out->from_hiredis = 1;
        return SPIRT_OK;
    }
    char *room = out_reserve(out, length);
    if (room != NULL) {
        memcpy(room, command, length);
        out->length += length;
    }
    redisFreeCommand(command);
    return room ? SPIRT_OK : spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory queueing a command");
}

/* --- Failures --- */

static void close_transport(StoreConn *conn) {
    if (conn->transport != NULL) conn->transport->ops->close(conn->transport);
    conn->transport = NULL;
    out_reset(&conn->out);
    conn->pending = 0;
    /* Whatever was half read is out of step now (and may be large). */
    if (conn->reader != NULL) store_reader_reset(conn->reader);
}

/* Breaks the connection: closes it, remembers why ("host:port: message")
 * and returns `code` with the same message in `error`. */
static int break_connection(StoreConn *conn, int code, SpirtError *error, const char *format, ...)
    __attribute__((format(printf, 4, 5)));
static int break_connection(StoreConn *conn, int code, SpirtError *error, const char *format, ...) {
    char message[SPIRT_ERROR_MESSAGE_MAX];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof(message), format, args);
    va_end(args);
    close_transport(conn);
    spirt_error_set(&conn->broken, code, "%s: %s", conn->address, message);
    log_debug("store: %s", conn->broken.message);
    return spirt_error_set(error, code, "%s", conn->broken.message);
}

/* SPIRT_OK if the connection can be used now; reconnects first if it is
 * broken and auto_reconnect is on. */
static int ensure_usable(StoreConn *conn, SpirtError *error) {
    if (conn->broken.code == SPIRT_OK) return SPIRT_OK;
    if (conn->options.auto_reconnect) return store_reconnect(conn, error);
    return spirt_error_set(error, conn->broken.code, "%s", conn->broken.message);
}

/* --- Writing and reading --- */

/* The deadline for the next wait: `fixed` if set (during connect), else
 * the idle time-out from now. */
static uint64_t next_deadline(uint64_t fixed, int64_t timeout_ms) {
    if (fixed != 0) return fixed;
    return store_deadline_after(timeout_ms);
}

/* Writes the pieces in order (advancing through them: the array is
 * changed). */
static int send_pieces(StoreConn *conn, struct iovec *pieces, size_t count, uint64_t fixed_deadline,
                       SpirtError *error) {
    size_t first = 0;
    for (;;) {
        while (first < count && pieces[first].iov_len == 0) first++;
        if (first == count) return SPIRT_OK;
        SpirtError failure;
        size_t left = count - first;
        ssize_t n = conn->transport->ops->write(conn->transport, pieces + first, left > INT_MAX ? INT_MAX : (int)left,
                                                &failure);
        if (n > 0) {
            for (size_t moved = (size_t)n; moved > 0; first++) {
                size_t take = moved < pieces[first].iov_len ? moved : pieces[first].iov_len;
                pieces[first].iov_base = (char *)pieces[first].iov_base + take;
                pieces[first].iov_len -= take;
                moved -= take;
                if (pieces[first].iov_len > 0) break;
            }
            continue;
        }
        if (n < 0) return break_connection(conn, (int)n, error, "%s", failure.message);
        int ready = store_wait_fd(conn->transport->fd, (short)conn->transport->want,
                                  next_deadline(fixed_deadline, conn->options.write_timeout_ms), &failure);
        if (ready < 0) return break_connection(conn, ready, error, "%s", failure.message);
        if (ready == 0) {
            if (fixed_deadline != 0)
                return break_connection(conn, SPIRT_ERR_TIMEOUT, error, "connect timed out after %d ms (writing)",
                                        conn->options.connect_timeout_ms);
            return break_connection(conn, SPIRT_ERR_TIMEOUT, error, "write timed out after %d ms",
                                    conn->options.write_timeout_ms);
        }
    }
}

/* Writes everything queued. */
static int flush_output(StoreConn *conn, uint64_t fixed_deadline, SpirtError *error) {
    OutBuffer *out = &conn->out;
    struct iovec piece = {out->data + out->sent, out->length - out->sent};
    int status = send_pieces(conn, &piece, 1, fixed_deadline, error);
    if (status == SPIRT_OK) out_reset(out);
    return status;
}

/* Reads until the reader yields one complete reply (any type). */
static int read_reply(StoreConn *conn, uint64_t fixed_deadline, StoreReply **reply, SpirtError *error) {
    StoreReader *reader = conn->reader;
    for (;;) {
        SpirtError failure;
        int status = store_reader_next(reader, reply, &failure);
        if (status != SPIRT_OK) return break_connection(conn, status, error, "%s", failure.message);
        if (*reply != NULL) return SPIRT_OK;
        /* Into the reader's buffer, or straight into a string's own. */
        struct iovec pieces[2];
        int count = store_reader_space(reader, pieces, &failure);
        if (count < 0) return break_connection(conn, count, error, "%s", failure.message);
        ssize_t n = conn->transport->ops->read(conn->transport, pieces, count, &failure);
        if (n > 0) {
            store_reader_received(reader, (size_t)n);
            continue;
        }
        if (n < 0) return break_connection(conn, (int)n, error, "%s", failure.message);
        int64_t timeout_ms = conn->options.read_timeout_ms;
        if (timeout_ms >= 0) timeout_ms += conn->extra_wait_ms;
        int ready = store_wait_fd(conn->transport->fd, (short)conn->transport->want,
                                  next_deadline(fixed_deadline, timeout_ms), &failure);
        if (ready < 0) return break_connection(conn, ready, error, "%s", failure.message);
        if (ready == 0) {
            if (fixed_deadline != 0)
                return break_connection(conn, SPIRT_ERR_TIMEOUT, error,
                                        "connect timed out after %d ms (waiting for the server to answer)",
                                        conn->options.connect_timeout_ms);
            return break_connection(conn, SPIRT_ERR_TIMEOUT, error, "no reply within %lld ms (read time-out)",
                                    (long long)timeout_ms);
        }
    }
}

/* --- Queueing commands --- */

/* Queues a copy of the command (pipelining: argv need not outlive the call). */
static int queue_argv(StoreConn *conn, size_t argc, const char *const *argv, const size_t *lengths,
                      SpirtError *error) {
    StoreRequestPlan plan;
    int status = store_request_plan(argc, argv, lengths, STORE_REQUEST_COPY_ALL, &plan, error);
    if (status != SPIRT_OK) return status;
    char *room = out_reserve(&conn->out, plan.total_bytes);
    if (room == NULL) return spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory queueing a command");
    struct iovec whole; /* one piece: the copy itself */
    store_request_frame(argc, argv, lengths, STORE_REQUEST_COPY_ALL, room, &whole);
    conn->out.length += plan.total_bytes;
    conn->pending++;
    return SPIRT_OK;
}

static int queue_format(StoreConn *conn, SpirtError *error, const char *format, va_list args) {
    if (format == NULL) return spirt_error_set(error, SPIRT_ERR_INVALID, "no command format");
    char *command = NULL;
    int length = redisvFormatCommand(&command, format, args);
    /* hiredis 0.14 answers -1 both for an invalid format and for a failed
     * allocation; the format is by far the likelier cause. */
    if (length < 0 || command == NULL)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "cannot format command \"%s\" (bad format?)", format);
    int status = out_take(&conn->out, command, (size_t)length, error);
    if (status != SPIRT_OK) return status;
    conn->pending++;
    return SPIRT_OK;
}

/* Writes early when much is queued (see APPEND_FLUSH_BYTES). */
static int maybe_flush(StoreConn *conn, SpirtError *error) {
    if (conn->out.length - conn->out.sent < APPEND_FLUSH_BYTES) return SPIRT_OK;
    return flush_output(conn, 0, error);
}

/* --- Connecting --- */

/* The reply to one setup command: SPIRT_OK, or why the connection cannot
 * be used (message without the address). The reply is freed. */
static int check_setup_reply(const StoreConn *conn, const char *command, StoreReply *reply, SpirtError *error) {
    int status = SPIRT_OK;
    if (reply->type == STORE_REPLY_ERROR) {
        if (strcmp(command, "AUTH") == 0)
            status = spirt_error_set(error, SPIRT_ERR_AUTH, "AUTH as user '%s' refused: %s",
                                     conn->options.username ? conn->options.username : "default", reply->str);
        else if (strncmp(reply->str, "NOAUTH", 6) == 0)
            status = spirt_error_set(error, SPIRT_ERR_AUTH, "the server requires a password: %s", reply->str);
        else
            status = spirt_error_set(error, SPIRT_ERR_SERVER, "%s refused: %s", command, reply->str);
    }
    store_reply_free(reply);
    return status;
}

/* Queues the session setup: AUTH first (Redis 7 drops an unauthenticated
 * client that sends a large argument, and every later command depends on
 * it), then SELECT and CLIENT SETNAME, and PING last to prove the session
 * works. Fills names[] with what was queued; returns how many or < 0. */
static int queue_setup(StoreConn *conn, const char *names[4], SpirtError *error) {
    const StoreOptions *options = &conn->options;
    int count = 0, status = SPIRT_OK;
    if (options->password != NULL) {
        const char *argv[3] = {"AUTH", options->username ? options->username : options->password,
                               options->password};
        status = queue_argv(conn, options->username ? 3 : 2, argv, NULL, error);
        names[count++] = "AUTH";
    }
    if (status == SPIRT_OK && options->database != 0) {
        char index[16];
        snprintf(index, sizeof(index), "%d", options->database);
        const char *argv[2] = {"SELECT", index};
        status = queue_argv(conn, 2, argv, NULL, error);
        names[count++] = "SELECT";
    }
    if (status == SPIRT_OK && options->client_name != NULL) {
        const char *argv[3] = {"CLIENT", "SETNAME", options->client_name};
        status = queue_argv(conn, 3, argv, NULL, error);
        names[count++] = "CLIENT SETNAME";
    }
    if (status == SPIRT_OK) {
        const char *argv[1] = {"PING"};
        status = queue_argv(conn, 1, argv, NULL, error);
        names[count++] = "PING";
    }
    return status == SPIRT_OK ? count : status;
}

/* Connects, handshakes and sets the session up, all within the connect
 * time-out. On failure the connection is left broken with the error. */
static int open_connection(StoreConn *conn, SpirtError *error) {
    const StoreOptions *options = &conn->options;
    SpirtError failure;
    spirt_error_clear(&conn->broken);
    close_transport(conn); /* resets the reader too */

    uint64_t deadline = store_deadline_after(options->connect_timeout_ms);
    /* The read and write loops take 0 as "no fixed deadline": an unlimited
     * connect is a deadline that never comes instead. */
    if (deadline == STORE_NO_DEADLINE) deadline = STORE_NO_DEADLINE - 1;
    int fd = store_tcp_connect(options->host, options->port, deadline, &failure);
    if (fd < 0) return break_connection(conn, fd, error, "%s", failure.message);
    conn->transport = options->tls.enabled ? store_tls_transport(fd, &options->tls, options->host, deadline, &failure)
                                           : store_plain_transport(fd, &failure);
    if (conn->transport == NULL) return break_connection(conn, failure.code, error, "%s", failure.message);

    const char *names[4];
    int count = queue_setup(conn, names, &failure);
    if (count < 0) return break_connection(conn, count, error, "%s", failure.message);
    int status = flush_output(conn, deadline, error);
    for (int i = 0; i < count && status == SPIRT_OK; i++) {
        StoreReply *reply = NULL;
        status = read_reply(conn, deadline, &reply, error); /* breaks the connection itself on failure */
        if (status != SPIRT_OK) break;
        status = check_setup_reply(conn, names[i], reply, &failure);
        if (status != SPIRT_OK) return break_connection(conn, status, error, "%s", failure.message);
    }
    if (status != SPIRT_OK) return status;
    conn->pending = 0;
    log_debug("store: connected to %s over %s", conn->address, conn->transport->ops->name);
    return SPIRT_OK;
}

StoreConn *store_connect(const StoreOptions *options, SpirtError *error) {
    if (check_options(options, error) != SPIRT_OK) return NULL;
    StoreConn *conn = calloc(1, sizeof(*conn));
    if (conn == NULL) {
        spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory for a connection");
        return NULL;
    }
    if (copy_options(&conn->options, options, error) != SPIRT_OK) {
        free(conn);
        return NULL;
    }
    const char *host = conn->options.host;
    if (host[0] == '/')
        snprintf(conn->address, sizeof(conn->address), "unix:%s", host);
    else
        snprintf(conn->address, sizeof(conn->address), strchr(host, ':') ? "[%s]:%d" : "%s:%d", host,
                 conn->options.port);
    conn->reader = store_reader_create(conn->options.max_reply_bytes);
    if (conn->reader == NULL) {
        spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory for a connection");
        store_free(conn);
        return NULL;
    }
    if (open_connection(conn, error) != SPIRT_OK) {
        store_free(conn);
        return NULL;
    }
    return conn;
}

StoreConn *store_connect_address(const char *address, const StoreOptions *defaults, SpirtError *error) {
    StoreAddress parsed;
    if (store_address_parse(address, &parsed, error) != SPIRT_OK) return NULL;
    StoreOptions options = {0};
    if (defaults != NULL) options = *defaults;
    store_options_use_address(&options, &parsed);
    StoreConn *conn = store_connect(&options, error);
    explicit_bzero(parsed.password, sizeof(parsed.password));
    return conn;
}

void store_free(StoreConn *conn) {
    if (conn == NULL) return;
    close_transport(conn);
    store_reader_free(conn->reader);
    release_options(&conn->options);
    free(conn);
}

int store_reconnect(StoreConn *conn, SpirtError *error) {
    if (conn == NULL) return spirt_error_set(error, SPIRT_ERR_INVALID, "no connection");
    return open_connection(conn, error);
}

int store_conn_status(const StoreConn *conn) { return conn ? conn->broken.code : SPIRT_ERR_INVALID; }

const char *store_conn_address(const StoreConn *conn) { return conn ? conn->address : ""; }

/* --- Commands --- */

int store_append_argv(StoreConn *conn, size_t argc, const char *const *argv, const size_t *lengths,
                      SpirtError *error) {
    if (conn == NULL) return spirt_error_set(error, SPIRT_ERR_INVALID, "no connection");
    int status = ensure_usable(conn, error);
    if (status == SPIRT_OK) status = queue_argv(conn, argc, argv, lengths, error);
    if (status == SPIRT_OK) status = maybe_flush(conn, error);
    return status;
}

int store_append(StoreConn *conn, SpirtError *error, const char *format, ...) {
    if (conn == NULL) return spirt_error_set(error, SPIRT_ERR_INVALID, "no connection");
    int status = ensure_usable(conn, error);
    if (status != SPIRT_OK) return status;
    va_list args;
    va_start(args, format);
    status = queue_format(conn, error, format, args);
    va_end(args);
    if (status == SPIRT_OK) status = maybe_flush(conn, error);
    return status;
}

/* Reads the next pending reply (whose request was written), with the
 * rules of store_get_reply. */
static int take_reply(StoreConn *conn, StoreReply **reply, SpirtError *error) {
    StoreReply *result = NULL;
    int status = read_reply(conn, 0, &result, error);
    if (status != SPIRT_OK) return status;
    conn->pending--;
    if (result->type == STORE_REPLY_ERROR) {
        status = spirt_error_set(error, SPIRT_ERR_SERVER, "%s", result->str);
        store_reply_free(result);
        return status;
    }
    if (reply != NULL)
        *reply = result;
    else
        store_reply_free(result);
    return SPIRT_OK;
}

int store_get_reply(StoreConn *conn, StoreReply **reply, SpirtError *error) {
    if (reply != NULL) *reply = NULL;
    if (conn == NULL) return spirt_error_set(error, SPIRT_ERR_INVALID, "no connection");
    if (conn->broken.code != SPIRT_OK) return spirt_error_set(error, conn->broken.code, "%s", conn->broken.message);
    if (conn->pending == 0)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "%s: no reply pending (nothing was appended)",
                               conn->address);
    int status = flush_output(conn, 0, error);
    if (status != SPIRT_OK) return status;
    return take_reply(conn, reply, error);
}

size_t store_pending_replies(const StoreConn *conn) { return conn ? conn->pending : 0; }

/* A single command must not be mixed into unread pipelined replies: its
 * reply would be taken for theirs. */
static int check_no_pending(const StoreConn *conn, SpirtError *error) {
    if (conn->pending == 0) return SPIRT_OK;
    return spirt_error_set(error, SPIRT_ERR_INVALID, "%s: %zu pipelined replies are still unread", conn->address,
                           conn->pending);
}

int store_command_argv(StoreConn *conn, size_t argc, const char *const *argv, const size_t *lengths,
                       StoreReply **reply, SpirtError *error) {
    return store_command_argv_with(conn, argc, argv, lengths, NULL, reply, error);
}

/* Frames a single command around its arguments and writes it, large
 * arguments straight from argv (valid for the whole call). */
static int send_in_place(StoreConn *conn, size_t argc, const char *const *argv, const size_t *lengths,
                         SpirtError *error) {
    StoreRequestPlan plan;
    int status = store_request_plan(argc, argv, lengths, SEND_IN_PLACE_BYTES, &plan, error);
    if (status != SPIRT_OK) return status;
    char local_frame[LOCAL_FRAME_BYTES];
    struct iovec local_pieces[LOCAL_PIECES];
    char *frame = plan.copied_bytes <= sizeof(local_frame) ? local_frame : malloc(plan.copied_bytes);
    struct iovec *pieces =
        plan.piece_count <= LOCAL_PIECES ? local_pieces : malloc(plan.piece_count * sizeof(struct iovec));
    if (frame == NULL || pieces == NULL) {
        status = spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory framing a command");
    } else {
        store_request_frame(argc, argv, lengths, SEND_IN_PLACE_BYTES, frame, pieces);
        conn->pending++;
        status = send_pieces(conn, pieces, plan.piece_count, 0, error);
    }
    if (frame != local_frame) free(frame);
    if (pieces != local_pieces) free(pieces);
    return status;
}

int store_command_argv_with(StoreConn *conn, size_t argc, const char *const *argv, const size_t *lengths,
                            const StoreCallOptions *call, StoreReply **reply, SpirtError *error) {
    if (reply != NULL) *reply = NULL;
    if (conn == NULL) return spirt_error_set(error, SPIRT_ERR_INVALID, "no connection");
    int status = ensure_usable(conn, error);
    if (status == SPIRT_OK) status = check_no_pending(conn, error);
    /* Nothing pending means nothing queued: the request goes out alone. */
    if (status == SPIRT_OK) status = send_in_place(conn, argc, argv, lengths, error);
    if (status != SPIRT_OK) return status;
    if (call != NULL) {
        conn->extra_wait_ms = call->extra_wait_ms > 0 ? call->extra_wait_ms : 0;
        store_reader_set_sink(conn->reader, call->sink, call->sink_context);
    }
    status = take_reply(conn, reply, error);
    conn->extra_wait_ms = 0;
    store_reader_set_sink(conn->reader, NULL, NULL);
    return status;
}

int store_command(StoreConn *conn, StoreReply **reply, SpirtError *error, const char *format, ...) {
    if (reply != NULL) *reply = NULL;
    if (conn == NULL) return spirt_error_set(error, SPIRT_ERR_INVALID, "no connection");
    int status = ensure_usable(conn, error);
    if (status == SPIRT_OK) status = check_no_pending(conn, error);
    if (status != SPIRT_OK) return status;
    va_list args;
    va_start(args, format);
    status = queue_format(conn, error, format, args);
    va_end(args);
    if (status != SPIRT_OK) return status;
    return store_get_reply(conn, reply, error);
}

int store_unexpected_reply(const StoreConn *conn, const StoreReply *reply, const char *what, SpirtError *error) {
    static const char *const names[] = {"?", "string", "array", "integer", "nil", "status", "error"};
    int type = reply ? (int)reply->type : 0;
    if (type < 0 || type > 6) type = 0;
    return spirt_error_set(error, SPIRT_ERR_PROTOCOL, "%s: unexpected %s reply to %s", conn->address, names[type],
                           what);
}
