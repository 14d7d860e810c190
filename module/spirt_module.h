/* spirt_module.h -- what the files of the Redis module spirt.so share.
 *
 * The module keeps float32 tensors in Redis as a module data type and runs
 * the project's kernels (src/agg, src/optim) on them next to the data. The
 * files, one concern each:
 *   module.c            RedisModule_OnLoad: load arguments, type, commands
 *   module_api.c        the server's API pointers (redismodule.h)
 *   tensor_type.c       SpirtTensor: reference counting and the type methods
 *                       (RDB, AOF, digest, memory, COPY)
 *   keys.c              reading/writing tensors in keys, propagation,
 *                       error replies and argument parsing
 *   jobs.c              running a command inline or on a worker thread
 *   commands_tensor.c   SPIRT.TSET, SPIRT.TGET, SPIRT.INFO, SPIRT.MINFO
 *   commands_agg.c      SPIRT.AVG, SPIRT.AGG
 *   commands_update.c   SPIRT.UPDATE, SPIRT.AVGUPDATE
 * docs/module.md is the user's reference for every command.
 *
 * The one invariant everything relies on: a tensor that a key holds is never
 * modified. Writers build a new tensor and swap it into the key; the old one
 * lives on as long as someone (a running command, another key after COPY)
 * holds a reference. That is what lets a long command compute on a worker
 * thread from references taken on the main thread while the server goes on
 * serving reads and writes of the same keys. */
#ifndef SPIRT_MODULE_H
#define SPIRT_MODULE_H

#include <pthread.h> /* pthread_t */
#include <stdatomic.h>
#include <stddef.h>

#include "redismodule.h"
#include "spirt/digest.h" /* SPIRT_DIGEST_BYTES */
#include "spirt/error.h"  /* SpirtError */
#include "spirt/tensor.h" /* TensorShape, SPIRT_TENSOR_* */

#define SPIRT_MODULE_NAME "spirt"
#define SPIRT_MODULE_VERSION 1
/* Module type names are exactly 9 characters; this one is what TYPE shows. */
#define SPIRT_TENSOR_TYPE_NAME "spirt-tns"
/* RDB encoding of a tensor (see tensor_type.c); bump on any change. */
#define SPIRT_TENSOR_ENCODING_VERSION 1
/* dtype code in the RDB encoding: IEEE-754 binary32, little-endian. */
#define SPIRT_DTYPE_FLOAT32 1

/* --- Settings (module load arguments) ----------------------------------- */

#define SPIRT_TRANSIENT_PREFIXES_MAX 8
#define SPIRT_TRANSIENT_PREFIX_MAX 64

typedef struct SpirtModuleConfig {
    int threads;       /* threads a kernel may use (THREADS n; default: all CPUs) */
    size_t inline_max; /* commands reading at most this many floats run on the
                          main thread (INLINE_MAX n; default 262144) */
    size_t cache_max;  /* bytes of freed tensor blocks kept for reuse
                          (CACHE_MAX n; default 256 MiB; 0 disables) */
    pthread_t main_thread; /* Redis's main thread (where OnLoad runs) */
    /* Keys starting with one of these prefixes are scratch: module commands
     * that write them do not propagate the write to the AOF or replicas
     * (TRANSIENT_PREFIX p, repeatable). A restart loses them. */
    char transient_prefixes[SPIRT_TRANSIENT_PREFIXES_MAX][SPIRT_TRANSIENT_PREFIX_MAX];
    int transient_prefix_count;
} SpirtModuleConfig;

/* Set once in RedisModule_OnLoad, read-only afterwards. */
extern SpirtModuleConfig spirt_config;

/* --- Tensors (tensor_type.c) ------------------------------------------- */

/* An immutable float32 tensor shared by keys and running commands. The
 * header and the values are one allocation (RedisModule_TryAlloc, so it
 * counts towards maxmemory); `data` is SPIRT_TENSOR_ALIGNMENT-aligned. */
typedef struct SpirtTensor {
    atomic_size_t references; /* keys + running commands holding it */
    TensorShape shape;
    size_t count; /* product of the dims */
    float *data;  /* count values; never written once stored */
    /* The BLAKE3 of its encoding once SPIRT.TDIGEST or SPIRT.TWRAP ...
     * DIGEST computed it, so that neither hashes it again. Main thread only. */
    int encoding_digest_known;
    unsigned char encoding_digest[SPIRT_DIGEST_BYTES];
} SpirtTensor;

/* The registered data type (set by spirt_tensor_type_register). */
extern RedisModuleType *SpirtTensorType;

/* A new tensor of `shape` holding one reference (the caller's), values
 * uninitialised, or zeroed if `zeroed`. NULL when memory is short. Safe on
 * any thread. */
SpirtTensor *spirt_tensor_create(const TensorShape *shape, int zeroed);
/* Adds a reference and returns `tensor`. Safe on any thread. */
SpirtTensor *spirt_tensor_retain(SpirtTensor *tensor);
/* Drops a reference; the last one frees the tensor. NULL is allowed. Safe on
 * any thread (Redis may free values on its lazy-free thread). */
void spirt_tensor_release(SpirtTensor *tensor);
/* 1 if all `count` values are finite; otherwise 0 and *first_bad (if not
 * NULL) is the first NaN or infinity. tensor_all_finite's contract, on a
 * faster path (see tensor_type.c). */
int spirt_values_finite(const float *values, size_t count, size_t *first_bad);
/* Blocks and bytes held by the cache of freed tensor blocks. */
void spirt_tensor_cache_info(size_t *blocks, size_t *bytes);
/* Bytes of data: count * 4. */
size_t spirt_tensor_bytes(const SpirtTensor *tensor);

/* Creates the data type with every method. REDISMODULE_OK or _ERR. */
int spirt_tensor_type_register(RedisModuleCtx *ctx);

/* --- Keys, replies, arguments (keys.c) ----------------------------------- */

/* Replies "-CODE message" (printf-style message; control characters are
 * replaced so the reply stays one line). Always returns REDISMODULE_OK, so a
 * command can `return spirt_reply_error(...)`. */
int spirt_reply_error(RedisModuleCtx *ctx, const char *code, const char *format, ...)
    __attribute__((format(printf, 3, 4)));
/* The reply code for a SpirtStatus: SHAPE, NONFINITE, PRECONDITION, ... */
const char *spirt_error_code(int status);
/* Replies with error->message under the code of error->code. */
int spirt_reply_spirt_error(RedisModuleCtx *ctx, const SpirtError *error);

/* 1 if the argument equals `token`, ignoring ASCII case. */
int spirt_arg_is(const RedisModuleString *argument, const char *token);
/* A key name for messages: at most 64 bytes, printable, NUL-terminated. */
const char *spirt_key_label(const RedisModuleString *name, char *buffer, size_t size);

/* Integer in [minimum, maximum] or an "INVALID <what> ..." reply. */
int spirt_parse_integer_or_reply(RedisModuleCtx *ctx, const RedisModuleString *argument, const char *what,
                                 long long minimum, long long maximum, long long *value);
/* Finite double or an "INVALID <what> ..." reply. */
int spirt_parse_double_or_reply(RedisModuleCtx *ctx, const RedisModuleString *argument, const char *what,
                                double *value);

/* What a key holds. */
typedef enum SpirtKeyState { SPIRT_KEY_EMPTY = 0, SPIRT_KEY_TENSOR = 1, SPIRT_KEY_WRONGTYPE = 2 } SpirtKeyState;

/* Looks `name` up without keeping the key open. For SPIRT_KEY_TENSOR,
 * *tensor is borrowed: valid during this main-thread callback only (retain
 * it to keep it). */
SpirtKeyState spirt_key_lookup(RedisModuleCtx *ctx, RedisModuleString *name, SpirtTensor **tensor);

/* A tensor that must exist: on success *tensor is borrowed as above;
 * otherwise replies "NOKEY <role> '<name>' does not exist" or WRONGTYPE and
 * returns REDISMODULE_ERR. */
int spirt_key_tensor_or_reply(RedisModuleCtx *ctx, RedisModuleString *name, const char *role, SpirtTensor **tensor);

/* "SRC n key [key ...]" with argv[at] the SRC and the keys running to the
 * end of argv: n must be 1..AGG_MAX_INPUTS and match the keys given. Sets
 * *first (the first key's index) and *count, or replies INVALID and
 * returns REDISMODULE_ERR. argv[at + 1] must exist. */
int spirt_parse_sources_or_reply(RedisModuleCtx *ctx, RedisModuleString **argv, int argc, int at, int *first,
                                 size_t *count);

/* Sources of an aggregation: every names[i] must hold a tensor of
 * names[0]'s shape. On success found[0..n) are borrowed as above;
 * otherwise replies (NOKEY, WRONGTYPE, or SHAPE naming both shapes) and
 * returns REDISMODULE_ERR. */
int spirt_sources_or_reply(RedisModuleCtx *ctx, RedisModuleString **names, size_t n, SpirtTensor **found);

/* Stores `tensor` in `name` (whatever the key held before, like SET) and
 * sends the keyspace event `event` (e.g. "spirt.avg", class 'd' of
 * notify-keyspace-events). Takes over the caller's reference, also on
 * failure. REDISMODULE_OK or _ERR. */
int spirt_key_store(RedisModuleCtx *ctx, RedisModuleString *name, SpirtTensor *tensor, const char *event);

/* Propagates "SPIRT.TSET name FLOAT32 dims... BLOB values" to the AOF and
 * replicas: how every command that computes a tensor makes its effect
 * durable and replicated (see docs/module.md, "Replication"). */
void spirt_propagate_tensor(RedisModuleCtx *ctx, RedisModuleString *name, const SpirtTensor *tensor);
/* 1 if `name` starts with a TRANSIENT_PREFIX: its writes are not propagated. */
int spirt_key_is_transient(const RedisModuleString *name);
/* Counts a write that is not propagated (for Redis's save points) without
 * sending anything to the AOF or replicas. */
void spirt_propagate_nothing(RedisModuleCtx *ctx, RedisModuleString *name);

/* The dims of `tensor` as strings for a 'v' argument of Replicate/EmitAOF;
 * free them with spirt_dims_free. */
int spirt_dims_strings(const SpirtTensor *tensor, RedisModuleString **dims);
void spirt_dims_free(RedisModuleString **dims, int count);

/* --- Jobs (jobs.c) ------------------------------------------------------- */

typedef struct SpirtJob SpirtJob;

/* A command's work, split so that the heavy part can leave the main thread.
 * The command's handler parses its arguments and takes references on the
 * main thread, then submits the job. compute() may run on a worker thread:
 * it touches only what the job holds (no Redis calls but Alloc/Free). finish()
 * runs on the main thread: it stores results, propagates and replies.
 * destroy() frees the job and drops its references, on the main thread. */
struct SpirtJob {
    void (*compute)(SpirtJob *job);
    int (*finish)(RedisModuleCtx *ctx, SpirtJob *job);
    void (*destroy)(SpirtJob *job);
    SpirtError error;                  /* set by compute on failure */
    RedisModuleBlockedClient *blocked; /* NULL when run inline */
};

/* A zero-filled job of `size` bytes -- a command's struct whose first member
 * is a SpirtJob -- with its three steps set. Its destroy step frees it
 * (RedisModule_Free). */
void *spirt_job_create(size_t size, void (*compute)(SpirtJob *job), int (*finish)(RedisModuleCtx *ctx, SpirtJob *job),
                       void (*destroy)(SpirtJob *job));

/* Runs `job`: inline when `work_floats` <= spirt_config.inline_max or when
 * the client cannot be blocked (MULTI, scripts, loading, commands from a
 * master); otherwise on a new worker thread, with the client blocked until
 * finish() replies. Takes ownership of the job. Returns REDISMODULE_OK (the
 * command's return value). If the client disconnects while a worker runs,
 * the job is destroyed without finish(): nothing is written. */
int spirt_job_submit(RedisModuleCtx *ctx, SpirtJob *job, size_t work_floats);

/* 1 if the command's client may be blocked (not in MULTI, a script,
 * loading or replication). spirt_job_submit runs a job inline otherwise;
 * a command that must never run on the main thread (SPIRT.FETCH waits on
 * the network) refuses instead. */
int spirt_job_client_can_block(RedisModuleCtx *ctx);

/* Adds jobs_running (submitted, not yet destroyed), jobs_inline_total and
 * jobs_threaded_total to the module's INFO section. */
void spirt_jobs_info(RedisModuleInfoCtx *ctx);

/* --- The outbound client (remote.c) ---------------------------------------
 * A blocking RESP connection to another Redis server, for worker threads
 * (SPIRT.FETCH). One deadline, set at open, bounds every wait of the
 * connection's life: SPIRT_ERR_TIMEOUT when it passes. Errors: INVALID (a
 * bad address), IO, CLOSED, TIMEOUT, PROTOCOL (not RESP), AUTH and SERVER
 * (the server replied with an error). */

typedef struct SpirtRemote {
    int fd;
    int timeout_ms;
    double deadline_ms;
    char address[320];
    size_t start, end; /* unread bytes: buffer[start, end) */
    char buffer[16384];
} SpirtRemote;

/* Connects to "unix:/path", "host:port" or "[ipv6]:port" within timeout_ms,
 * which then bounds everything else too. */
int spirt_remote_open(SpirtRemote *remote, const char *address, int timeout_ms, SpirtError *error);
void spirt_remote_close(SpirtRemote *remote);
/* Sends one command as a RESP array of binary-safe arguments. */
int spirt_remote_send(SpirtRemote *remote, int argc, const char *const *argv, const size_t *lengths, SpirtError *error);
/* Reads a status reply: "+..." is SPIRT_OK, "-..." SPIRT_ERR_AUTH naming `what`. */
int spirt_remote_expect_ok(SpirtRemote *remote, const char *what, SpirtError *error);
/* Reads the "$n" line of a bulk reply (-1: nil); "-..." is SPIRT_ERR_SERVER. */
int spirt_remote_read_bulk_length(SpirtRemote *remote, long long *length, SpirtError *error);
/* Reads exactly `length` bytes of the reply into `out`. */
int spirt_remote_read_exact(SpirtRemote *remote, void *out, size_t length, SpirtError *error);

/* --- Commands ------------------------------------------------------------ */

int spirt_command_tset(RedisModuleCtx *ctx, RedisModuleString **argv, int argc);
int spirt_command_tget(RedisModuleCtx *ctx, RedisModuleString **argv, int argc);
int spirt_command_info(RedisModuleCtx *ctx, RedisModuleString **argv, int argc);
int spirt_command_minfo(RedisModuleCtx *ctx, RedisModuleString **argv, int argc);
int spirt_command_avg(RedisModuleCtx *ctx, RedisModuleString **argv, int argc);
int spirt_command_agg(RedisModuleCtx *ctx, RedisModuleString **argv, int argc);
int spirt_command_update(RedisModuleCtx *ctx, RedisModuleString **argv, int argc);
int spirt_command_avgupdate(RedisModuleCtx *ctx, RedisModuleString **argv, int argc);
int spirt_command_set(RedisModuleCtx *ctx, RedisModuleString **argv, int argc); /* commands_string.c */
int spirt_command_tdigest(RedisModuleCtx *ctx, RedisModuleString **argv, int argc); /* commands_wrap.c */
int spirt_command_twrap(RedisModuleCtx *ctx, RedisModuleString **argv, int argc);
int spirt_command_fetch(RedisModuleCtx *ctx, RedisModuleString **argv, int argc); /* commands_fetch.c */

#endif /* SPIRT_MODULE_H */
