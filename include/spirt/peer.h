/* peer.h -- the peer runtime: function workers, the invoker that reaches
 * them, a peer's round loop, and a local cluster of peers for `spirt train`.
 *
 * Invocations travel through the peer's own database as entries of the
 * stream spirt:invocations, read by the consumer group "workers": Redis does
 * the delivery, keeps unacknowledged entries pending, and lets any worker
 * take over an entry whose worker died or hung (XAUTOCLAIM after a
 * visibility time-out). A worker writes each result to a list
 * spirt:result:{id} that the invoker waits on (BLPOP), then acknowledges.
 *
 *   entry fields:  id        the invocation's unique id
 *                  fn        the function's name
 *                  event     the JSON event
 *                  deadline  wall-clock ms after which nobody waits for it
 *   result:        {"ok": true, "output": ...} or
 *                  {"ok": false, "error": "spirt.NotFound", "cause": "..."}
 *
 * A peer (peer_run) prepares its database if needed (data shard, initial
 * model, configuration, membership), then runs the round workflow once per
 * round from the last completed round on, so a restarted peer resumes. */
#ifndef SPIRT_PEER_H
#define SPIRT_PEER_H

#include <jansson.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "spirt/error.h"
#include "spirt/flow.h"
#include "spirt/fn.h"
#include "spirt/store.h"

#ifdef __cplusplus
extern "C" {
#endif

/* --- The invoker: the engine's side of the stream --- */

typedef struct StreamInvoker StreamInvoker;

/* An invoker putting calls on the stream of the database at `address`,
 * connecting with `defaults` (credentials, TLS). Thread-safe. Owned by the
 * caller: stream_invoker_free (only once no call is running). */
StreamInvoker *stream_invoker_create(const char *address, const StoreOptions *defaults, SpirtError *error);
void stream_invoker_free(StreamInvoker *invoker);
/* The FlowInvoker to give flow_engine_create. */
FlowInvoker stream_invoker_flow(StreamInvoker *invoker);

/* An invoker running functions in the calling process (one FnContext per
 * thread), for `spirt peer --inline` and tests of the round itself. */
typedef struct InlineInvoker InlineInvoker;
InlineInvoker *inline_invoker_create(const FnContextOptions *options, SpirtError *error);
void inline_invoker_free(InlineInvoker *invoker);
FlowInvoker inline_invoker_flow(InlineInvoker *invoker);

/* --- Workers --- */

typedef struct WorkerOptions {
    const char *db;              /* the peer's database address */
    StoreOptions store;          /* connection defaults (credentials, TLS) */
    const char *identity_path;   /* the peer's key file (publish) */
    const char *name;            /* consumer name; NULL: "<host>-<pid>" */
    int visibility_ms;           /* reclaim entries pending longer (default 2000) */
    int threads;                 /* compute threads per invocation (default 1) */
    uint64_t max_invocations;    /* stop after this many (0: never) */
    /* Fault injection for tests (docs/runtime.md): each invocation this
     * worker takes crashes the process (exit 3, nothing acknowledged) with
     * probability crash_rate, or hangs for hang_ms without acknowledging
     * with probability hang_rate. Draws come from fault_seed. */
    double crash_rate, hang_rate;
    int hang_ms;
    uint64_t fault_seed;
    volatile sig_atomic_t *stop; /* set (by a signal handler) to stop */
} WorkerOptions;

/* Serves invocations until *stop, max_invocations, or a database failure
 * that lasts longer than a reconnect attempt. Returns SPIRT_OK when told to
 * stop. */
int worker_run(const WorkerOptions *options, SpirtError *error);

/* --- Peers --- */

/* A peer's configuration file (docs/runtime.md):
 *   {"peer_id", "db", "identity", "workflow", "peers": [{"id", "address",
 *    "public_key"}], "run": {RunConfig fields}, "data": {"source",
 *    "partition", "shard", "shards", "validation", "seed"},
 *    "round_timeout_seconds", "gradient_timeout_seconds", "max_concurrency",
 *    "inline": false, "workers_expected": n} */
typedef struct PeerOptions {
    json_t *config;              /* the parsed configuration file (borrowed) */
    const char *config_path;     /* for messages and relative paths */
    StoreOptions store;          /* connection defaults */
    volatile sig_atomic_t *stop; /* set to stop after the current round */
} PeerOptions;

/* Runs the peer to its last round. SPIRT_OK when every round completed. */
int peer_run(const PeerOptions *options, SpirtError *error);

/* Writes everything a peer needs into its (empty or stale) database: its
 * data shard and validation split, the initial model (seeded: every peer of
 * a run starts from the same one), spirt:config and spirt:members. Keeps
 * what is already there and still valid, so a restarted peer resumes. */
int peer_prepare_database(StoreConn *db, const json_t *config, const char *config_path, SpirtError *error);

/* The whole training set of `source`, normalised with its own statistics
 * (what every shard is cut from). Owned: dataset_free. */
struct Dataset;
struct Dataset *peer_load_training_data(const char *source, SpirtError *error);
/* Cuts the shard `data_spec` names ({"partition", "shard", "shards",
 * "validation", "seed"}) from `all` and writes it to the database, with the
 * spec, so peer_prepare_database finds it and keeps it. */
int peer_upload_shard(StoreConn *db, const struct Dataset *all, const json_t *data_spec, SpirtError *error);

#ifdef __cplusplus
}
#endif

#endif /* SPIRT_PEER_H */
