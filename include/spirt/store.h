/* store.h -- the Redis client: the only part of spirt that speaks RESP.
 *
 * Everything else (functions, peers, the CLI) talks to a database through
 * this API. A StoreConn is one connection, plain TCP or TLS (the caller
 * never sees the difference), authenticated and on the chosen database once
 * store_connect returns.
 *
 * Minimal use:
 *
 *     StoreOptions options = {.host = "127.0.0.1", .port = 6379};
 *     SpirtError error;
 *     StoreConn *conn = store_connect(&options, &error);
 *     if (conn == NULL) { log_error("%s", error.message); return error.code; }
 *     if (store_set(conn, "k", "v", 1, &error) != SPIRT_OK) ...
 *     store_free(conn);
 *
 * Errors. Every call returns SPIRT_OK or a negative SpirtStatus and fills
 * the optional SpirtError:
 *   SPIRT_ERR_SERVER   the server replied with an error (message = its text,
 *                      e.g. "ERR wrong number of arguments ..."); the
 *                      connection stays usable.
 *   SPIRT_ERR_IO, SPIRT_ERR_TIMEOUT, SPIRT_ERR_CLOSED, SPIRT_ERR_PROTOCOL
 *                      the connection failed (socket/TLS error, a time-out,
 *                      the server closed it, a malformed reply). These are
 *                      sticky: every later call fails the same way without
 *                      touching the socket, until store_reconnect (or,
 *                      with options.auto_reconnect, the next call) opens a
 *                      new connection. Replies of commands sent before the
 *                      failure are lost; a command that failed this way
 *                      may or may not have run on the server.
 *   SPIRT_ERR_AUTH     AUTH refused, the server demands a password, or TLS
 *                      certificate verification failed (either side).
 *   SPIRT_ERR_NOT_FOUND, SPIRT_ERR_FORMAT, SPIRT_ERR_SHAPE, SPIRT_ERR_INVALID
 *                      from the typed helpers: a missing key, a value of the
 *                      wrong form, a tensor of another shape, bad arguments.
 *
 * Time-outs are enforced with poll(2), so a silent server cannot hang a
 * caller: connect_timeout_ms bounds the whole of store_connect (TCP connect,
 * TLS handshake, AUTH/SELECT/PING; name lookup excepted), read_timeout_ms is
 * the longest silence tolerated while waiting for reply bytes, and
 * write_timeout_ms the longest wait for the socket to accept request bytes.
 * A time-out breaks the connection (the late reply would be out of step).
 *
 * Threads: a StoreConn is NOT thread-safe. Use one connection per thread (or
 * a lock around every use, including the reply objects' lifetimes if they are
 * shared). Different connections may be used from different threads at once.
 *
 * Signals: the library never raises SIGPIPE (sends use MSG_NOSIGNAL, TLS
 * included), so callers need not ignore it for our sake.
 *
 * Ownership: replies, strings, tensors and stream batches returned through
 * out-parameters belong to the caller and are freed with the function named
 * in each comment. Apart from store_conn_address, nothing returned borrows
 * from the connection: a reply outlives store_free. */
#ifndef SPIRT_STORE_H
#define SPIRT_STORE_H

#include <stddef.h> /* size_t */
#include <stdint.h> /* int64_t */

#include "spirt/error.h"  /* SpirtError */
#include "spirt/tensor.h" /* TensorShape, Tensor for the tensor helpers */

#ifdef __cplusplus
extern "C" {
#endif

/* --- Options and connections --- */

#define STORE_DEFAULT_PORT 6379
#define STORE_DEFAULT_CONNECT_TIMEOUT_MS 5000
#define STORE_DEFAULT_READ_TIMEOUT_MS 30000
#define STORE_DEFAULT_WRITE_TIMEOUT_MS 30000
/* Replies (and requests) above this are refused: a faulty or hostile server
 * cannot make a client allocate without bound. Redis itself caps one string
 * at 512 MB (proto-max-bulk-len). */
#define STORE_DEFAULT_MAX_REPLY_BYTES ((size_t)1 << 30)
#define STORE_MAX_REQUEST_BYTES ((size_t)1 << 30)

/* TLS settings. All-zero means plain TCP. With `enabled`, the server's
 * certificate is always verified (there is no switch to turn that off). */
typedef struct StoreTlsOptions {
    int enabled;             /* 1: TLS (a "rediss://" address sets it) */
    const char *ca_file;     /* PEM CA certificates that sign the server's;
                                NULL: the system's default trust store */
    const char *cert_file;   /* PEM client certificate (chain) for mutual
                                TLS; NULL: none */
    const char *key_file;    /* PEM private key of cert_file; required with it */
    const char *server_name; /* name sent as SNI and checked against the
                                certificate; NULL: options.host */
    int skip_hostname_check; /* 1: check the chain only, not the name (for
                                certificates without the address in them) */
} StoreTlsOptions;

/* Connection settings. Zero-initialise and set what you need: every zero
 * field has the documented default. store_connect copies all strings, so
 * they need to live only during the call. */
typedef struct StoreOptions {
    const char *host;        /* DNS name, IPv4 or IPv6 address, or the absolute path of a
                                Unix-domain socket; NULL: "127.0.0.1" */
    int port;                /* 0: STORE_DEFAULT_PORT */
    StoreTlsOptions tls;
    const char *username;    /* ACL user; NULL: "AUTH password" (user default) */
    const char *password;    /* NULL: no AUTH */
    int database;            /* SELECT index; 0: database 0 */
    const char *client_name; /* CLIENT SETNAME (no spaces); NULL: none */
    int connect_timeout_ms;  /* 0: default; < 0: no limit */
    int read_timeout_ms;     /* 0: default; < 0: no limit */
    int write_timeout_ms;    /* 0: default; < 0: no limit */
    size_t max_reply_bytes;  /* 0: STORE_DEFAULT_MAX_REPLY_BYTES */
    /* 1: a call made on a broken connection first reconnects, once, then
     * runs. The call that hit the failure still reports it, so a command is
     * never sent twice behind the caller's back; state of the old session
     * (MULTI, WATCH) is lost. 0: only store_reconnect reconnects. */
    int auto_reconnect;
} StoreOptions;

typedef struct StoreConn StoreConn; /* opaque */

/* Opens a connection: TCP connect (every address of the host in turn),
 * TLS handshake if asked, then AUTH (first, before anything large: Redis 7
 * drops unauthenticated clients that send big arguments), SELECT, CLIENT
 * SETNAME and PING, so a returned connection is known to work. The caller
 * owns the result (store_free). NULL on failure: SPIRT_ERR_IO (refused,
 * unreachable, unknown host), SPIRT_ERR_TIMEOUT, SPIRT_ERR_AUTH (password,
 * certificates), SPIRT_ERR_INVALID (bad options, unreadable certificate
 * files), SPIRT_ERR_SERVER (SELECT refused, a server still LOADING). */
StoreConn *store_connect(const StoreOptions *options, SpirtError *error);

/* The same for an address string (see store_address_parse), with every
 * setting the address does not name taken from `defaults` (may be NULL). */
StoreConn *store_connect_address(const char *address, const StoreOptions *defaults, SpirtError *error);

/* Closes the connection and frees it. NULL is allowed. */
void store_free(StoreConn *conn);

/* Closes the current connection (healthy or not) and opens a new one with
 * the same options, authenticating and selecting the database again.
 * Unread replies of the old connection are dropped. On failure the
 * connection stays broken with this error. */
int store_reconnect(StoreConn *conn, SpirtError *error);

/* SPIRT_OK while the connection is usable, else its sticky error code. */
int store_conn_status(const StoreConn *conn);

/* "host:port" of the server, for messages. Borrowed; valid until store_free. */
const char *store_conn_address(const StoreConn *conn);

/* --- Addresses --- */

/* A parsed address; fixed buffers, so it can live on the stack. Parts the
 * text does not give are marked as such, so they can fall back to other
 * settings (store_options_use_address). */
typedef struct StoreAddress {
    char host[256];     /* without brackets for IPv6 */
    int port;           /* 0 when not given */
    int tls;            /* 1 "rediss://", 0 "redis://", -1 no scheme */
    char username[128]; /* "" when not given */
    char password[256]; /* meaningful when has_password */
    int has_password;   /* 1 when the address carries a password (even "") */
    int database;       /* -1 when not given */
} StoreAddress;

/* Parses "unix:/path/redis.sock" or "/path/redis.sock" (a Unix-domain
 * socket on this machine; no TLS), "host", "host:port", "[v6]:port", a bare IPv6 address, or
 * "redis://[user:password@ | :password@]host[:port][/db]" and "rediss://..."
 * (TLS). User and password may be %XX-escaped. Refuses (SPIRT_ERR_INVALID)
 * unknown schemes, ports outside 1..65535, a bad database number, over-long
 * parts and junk; messages never repeat a password. */
int store_address_parse(const char *text, StoreAddress *address, SpirtError *error);

/* Points options at what the address gives: host always; port, TLS on/off,
 * credentials and database only when the address names them (a plain
 * "host:port" keeps the options' TLS files, user and password, so peers can
 * share one set of settings). The options then borrow the address's
 * buffers, which must outlive their use (store_connect copies them). */
void store_options_use_address(StoreOptions *options, const StoreAddress *address);

/* --- Replies --- */

typedef enum StoreReplyType {
    STORE_REPLY_STRING = 1,  /* bulk string: str/len, binary-safe */
    STORE_REPLY_ARRAY = 2,   /* element[0..elements) */
    STORE_REPLY_INTEGER = 3, /* integer */
    STORE_REPLY_NIL = 4,     /* missing key, empty BLPOP, ... */
    STORE_REPLY_STATUS = 5,  /* "+OK": str/len */
    STORE_REPLY_ERROR = 6    /* "-ERR ...": str/len (only nested in arrays) */
} StoreReplyType;

/* One reply (RESP2). str is NUL-terminated after len bytes, so text replies
 * can be used as C strings; binary ones must use len. A top-level reply is
 * never of type STORE_REPLY_ERROR: that comes back as SPIRT_ERR_SERVER. */
typedef struct StoreReply {
    StoreReplyType type;
    long long integer;           /* STORE_REPLY_INTEGER */
    size_t len;                  /* STRING, STATUS, ERROR */
    char *str;                   /* STRING, STATUS, ERROR; NULL otherwise */
    size_t elements;             /* STORE_REPLY_ARRAY */
    struct StoreReply **element; /* STORE_REPLY_ARRAY; owned by this reply */
} StoreReply;

/* Frees a reply and everything in it. Only top-level replies may be freed;
 * elements belong to their array. NULL is allowed. */
void store_reply_free(StoreReply *reply);

/* --- Commands --- */

/* Sends one command and waits for its reply. argv[i] is lengths[i] bytes
 * (binary-safe); lengths may be NULL when every argument is a C string.
 * On SPIRT_OK, *reply (if reply is not NULL) receives the reply, owned by the
 * caller (store_reply_free); pass reply = NULL to discard it. On an error
 * reply the status is SPIRT_ERR_SERVER with the server's message and
 * *reply is NULL. Must not be called while pipelined replies are unread
 * (SPIRT_ERR_INVALID): read them with store_get_reply first. */
int store_command_argv(StoreConn *conn, size_t argc, const char *const *argv, const size_t *lengths,
                       StoreReply **reply, SpirtError *error);

/* The same with hiredis's format: "%s" a C string, "%b" a (pointer, size_t)
 * pair for binary data, "%d"/"%lld"/... numbers; every space-separated word
 * is one argument. Never put binary data through %s. */
int store_command(StoreConn *conn, StoreReply **reply, SpirtError *error, const char *format, ...);

/* Pipelining: queue commands without waiting, then read each reply in order
 * with store_get_reply. Nothing is sent before the first store_get_reply,
 * unless the queued bytes pass 1 MiB (then append writes them, and may
 * fail like any write). */
int store_append_argv(StoreConn *conn, size_t argc, const char *const *argv, const size_t *lengths,
                      SpirtError *error);
int store_append(StoreConn *conn, SpirtError *error, const char *format, ...);

/* Sends what is queued and reads the next reply, with the ownership and
 * error rules of store_command_argv. SPIRT_ERR_INVALID if nothing is pending.
 * An error reply (SPIRT_ERR_SERVER) consumes that command's reply only: the
 * next call reads the next command's. */
int store_get_reply(StoreConn *conn, StoreReply **reply, SpirtError *error);

/* Replies still to be read with store_get_reply. */
size_t store_pending_replies(const StoreConn *conn);

/* --- Strings, integers, hashes --- */

int store_ping(StoreConn *conn, SpirtError *error);

/* SET key value (binary-safe; value may be NULL when length is 0).
 * store_set_px also sets a time to live of ttl_ms > 0 milliseconds (PX). */
int store_set(StoreConn *conn, const char *key, const void *value, size_t length, SpirtError *error);
int store_set_px(StoreConn *conn, const char *key, const void *value, size_t length, int64_t ttl_ms,
                 SpirtError *error);

/* GET key. On SPIRT_OK, *value is a new buffer of *length bytes plus a NUL,
 * owned by the caller (free()). SPIRT_ERR_NOT_FOUND if the key does not
 * exist (and *value = NULL). */
int store_get(StoreConn *conn, const char *key, char **value, size_t *length, SpirtError *error);

/* DEL key; a missing key is not an error. *deleted (may be NULL) is 1 if a
 * key was removed, 0 if there was none. */
int store_del(StoreConn *conn, const char *key, int *deleted, SpirtError *error);
int store_exists(StoreConn *conn, const char *key, int *exists, SpirtError *error);

/* Integers are stored as decimal strings (so INCRBY works on them).
 * store_get_int: SPIRT_ERR_NOT_FOUND if missing, SPIRT_ERR_FORMAT if the value
 * is not a whole decimal number. store_incr adds `by` (may be negative)
 * atomically and gives the new value in *value (may be NULL). */
int store_set_int(StoreConn *conn, const char *key, long long value, SpirtError *error);
int store_get_int(StoreConn *conn, const char *key, long long *value, SpirtError *error);
int store_incr(StoreConn *conn, const char *key, long long by, long long *value, SpirtError *error);

/* Hash fields: HSET, HGET (value rules of store_get), HDEL (missing is fine).
 * For HGETALL and the rest, use store_command. */
int store_hset(StoreConn *conn, const char *key, const char *field, const void *value, size_t length,
               SpirtError *error);
int store_hget(StoreConn *conn, const char *key, const char *field, char **value, size_t *length,
               SpirtError *error);
int store_hdel(StoreConn *conn, const char *key, const char *field, SpirtError *error);

/* --- Tensors (the spirt module's SPIRT.TSET / SPIRT.TGET; needs spirt.so) --- */

/* SPIRT.TSET key FLOAT32 dims... BLOB bytes: stores a float32 tensor of
 * `shape` (values: tensor_shape_count(shape) floats, little-endian).
 * SPIRT_ERR_SHAPE, before anything is sent, for a shape that is not one
 * (no dimensions, a zero dimension); the module refuses non-finite values
 * (SPIRT_ERR_SERVER with its "NONFINITE ..." message). */
int store_tensor_set(StoreConn *conn, const char *key, const TensorShape *shape, const float *values,
                     SpirtError *error);

/* Reads a tensor: shape and values in one reply (SPIRT.TGET key FULL), so
 * they always belong together. On SPIRT_OK, *tensor is new and owned by the
 * caller (tensor_free). SPIRT_ERR_NOT_FOUND if the key does not exist;
 * SPIRT_ERR_SERVER if it holds something else (WRONGTYPE); SPIRT_ERR_PROTOCOL
 * if the reply does not describe a float32 tensor consistently. */
int store_tensor_get(StoreConn *conn, const char *key, Tensor **tensor, SpirtError *error);

/* Reads a tensor into caller storage of `expected` shape (e.g. a model's
 * parameter vector), without allocating a Tensor: the values are read from
 * the socket straight into `values`. SPIRT_ERR_SHAPE (values untouched) if
 * the stored tensor has another shape. If the connection fails while the
 * values arrive (SPIRT_ERR_IO, _TIMEOUT, _CLOSED, _PROTOCOL), `values` may
 * hold part of them. */
int store_tensor_get_into(StoreConn *conn, const char *key, const TensorShape *expected, float *values,
                          SpirtError *error);

/* SPIRT.TGET key META: the stored tensor's shape only. */
int store_tensor_shape(StoreConn *conn, const char *key, TensorShape *shape, SpirtError *error);

/* --- Streams (the function-invocation queue) --- */

/* "<ms>-<seq>": two 64-bit numbers, a dash and the NUL fit in 48 bytes. */
#define STORE_STREAM_ID_SIZE 48

/* XGROUP CREATE stream group start_id MKSTREAM. start_id: "$" (only entries
 * added from now on) or "0" (the whole stream); NULL means "$". A group that
 * already exists is not an error, so every worker may call this at start. */
int store_xgroup_create(StoreConn *conn, const char *stream, const char *group, const char *start_id,
                        SpirtError *error);

/* XADD stream [MAXLEN ~ max_length] * field value [field value ...]. Fields
 * are C strings; values are binary-safe (value_lengths may be NULL for C
 * strings). max_length 0: no trimming. The new entry's id is written to `id`
 * (may be NULL). */
int store_xadd(StoreConn *conn, const char *stream, size_t field_count, const char *const *fields,
               const char *const *values, const size_t *value_lengths, size_t max_length,
               char id[STORE_STREAM_ID_SIZE], SpirtError *error);

/* One field of an entry; both point into the batch (binary-safe, and
 * NUL-terminated after their lengths). */
typedef struct StoreStreamField {
    const char *name;
    size_t name_length;
    const char *value;
    size_t value_length;
} StoreStreamField;

/* One entry. A pending entry deleted from the stream meanwhile comes back
 * with field_count 0. */
typedef struct StoreStreamEntry {
    const char *id;
    size_t field_count;
    const StoreStreamField *fields;
} StoreStreamEntry;

/* The entries of one read. Everything in it lives until
 * store_stream_batch_free. */
typedef struct StoreStreamBatch {
    size_t count;
    const StoreStreamEntry *entries;
    /* XAUTOCLAIM only: where the next scan starts; "0-0" when the whole
     * pending list has been scanned. */
    char next_id[STORE_STREAM_ID_SIZE];
    StoreReply *reply; /* private: the reply everything points into */
} StoreStreamBatch;

void store_stream_batch_free(StoreStreamBatch *batch); /* NULL is allowed */

/* The value of field `name` in an entry, or NULL if it has none; *length
 * (may be NULL) receives its length. Borrowed from the batch. */
const char *store_stream_entry_value(const StoreStreamEntry *entry, const char *name, size_t *length);

/* XREADGROUP GROUP group consumer COUNT count [BLOCK block_ms] STREAMS stream id.
 * id: ">" (NULL) for entries never delivered to the group, "0" for this
 * consumer's own pending ones (after a restart). block_ms > 0 waits up to
 * that long for entries (the read time-out is extended by as much); <= 0
 * does not wait. count 0 means 1. On SPIRT_OK, *batch is new (maybe with
 * count 0 when nothing came) and owned by the caller. */
int store_xreadgroup(StoreConn *conn, const char *stream, const char *group, const char *consumer,
                     const char *id, size_t count, int block_ms, StoreStreamBatch **batch, SpirtError *error);

/* XACK stream group id. *acknowledged (may be NULL) is 1 if the entry was
 * pending and is now done, 0 if it was not pending (already acknowledged). */
int store_xack(StoreConn *conn, const char *stream, const char *group, const char *id, int *acknowledged,
               SpirtError *error);

/* XAUTOCLAIM stream group consumer min_idle_ms start_id COUNT count: takes
 * over entries pending for at least min_idle_ms (their worker died, or is
 * too slow) for `consumer`. start_id NULL means "0-0"; continue with
 * batch->next_id until it is "0-0". Entries deleted from the stream are
 * dropped from the pending list by the server and not returned. */
int store_xautoclaim(StoreConn *conn, const char *stream, const char *group, const char *consumer,
                     int64_t min_idle_ms, const char *start_id, size_t count, StoreStreamBatch **batch,
                     SpirtError *error);

#ifdef __cplusplus
}
#endif

#endif /* SPIRT_STORE_H */
