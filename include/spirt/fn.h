/* fn.h -- the functions: stateless units of work of a training round.
 *
 * A function takes a JSON event, reads what it needs from the peer's
 * database (and, for exchange, from other peers' databases), writes its
 * output back there, and returns a JSON result. It keeps nothing between
 * invocations that changes its result: what a warm worker caches (database
 * connections, the model's buffers, the peer's data shard, its identity) is
 * only a faster way to read the same inputs. Writes are keyed by round and
 * batch, so running an invocation twice (a retry, a reclaimed invocation
 * whose first worker was only slow) leaves the same state as running it
 * once.
 *
 *   compute_gradients  one minibatch's gradient -> spirt:r:{r}:grad:{b}
 *   average            in-database mean of the round's gradients -> avg
 *   publish            sign the average (or, for a Byzantine peer, the
 *                      attack's vector) -> spirt:pub:{r}
 *   exchange           fetch and verify the live peers' publications -> in:{q}
 *   aggregate          in-database robust rule over avg and in:* -> agg
 *   update             in-database optimizer step on spirt:params
 *   evaluate           loss and accuracy on the validation split
 *   heartbeat          refresh own liveness, probe peers, update membership
 *   admit              verify join requests and add the joiners
 *
 * Every event names the peer: {"peer": {"id": "peer-0", "db": "host:port"},
 * "round": r, ...}; the rest is per function (docs/runtime.md). The run's
 * constant settings (model, batch size, seed, shard sizes) are in the
 * database under spirt:config (RunConfig below), so events stay small and a
 * function can be run by hand: `spirt fn NAME < event.json`. */
#ifndef SPIRT_FN_H
#define SPIRT_FN_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "spirt/agg.h"
#include "spirt/attack.h"
#include "spirt/crypto.h"
#include "spirt/error.h"
#include "spirt/nn.h"
#include "spirt/optim.h"
#include "spirt/store.h"

#ifdef __cplusplus
extern "C" {
#endif

/* --- The run's configuration, as stored in spirt:config --- */

#define RUN_MAX_PEERS 256

typedef struct RunConfig {
    char peer_id[SPIRT_PEER_ID_MAX + 1];
    NnModelKind model;
    size_t batch_size;        /* examples per minibatch */
    size_t batches_per_round; /* minibatches per round (B) */
    uint64_t seed;            /* the run's seed: initialisation, shuffles, noise */
    uint64_t rounds;          /* rounds to run */
    uint64_t evaluate_every;  /* evaluate every k rounds (and on the last) */
    size_t train_count;       /* examples in the peer's shard (spirt:data:train:*) */
    size_t validation_count;  /* examples in its validation split */
    char data_digest[SPIRT_DIGEST_HEX_SIZE]; /* of the shard's images: caches key on it */
    OptimConfig optimizer;
    AggConfig aggregator;     /* rule, f, parameters, pre_nnm */
    AttackConfig attack;      /* ATTACK_NONE for an honest peer */
    size_t byzantine_count;   /* peers listed below (known to attackers only) */
    char byzantine[RUN_MAX_PEERS][SPIRT_PEER_ID_MAX + 1];
    double exchange_wait_seconds; /* how long exchange waits for live peers */
    uint64_t silent_after_rounds; /* a live peer that missed this many exchanges in a row
                                     (published nothing in time) is "silent": 0 = never */
    double silent_wait_seconds;   /* how long exchange waits for a silent peer once every
                                     other peer is settled (instead of the full wait) */
    int exchange_in_database;     /* 1 (default): our database fetches each peer's payload itself
                                     (SPIRT.FETCH) after the function checked the signed head;
                                     0: the function reads whole envelopes. TLS peers: always 0 */
    int64_t heartbeat_ttl_ms;     /* a peer whose heartbeat is older is suspect */
    int64_t dead_after_ms;        /* suspect for this long: dead */
    uint64_t keep_rounds;         /* per-round keys older than this are deleted */
    uint64_t checkpoint_every;    /* persist the model every k rounds (and the last) */
    int cosine_schedule;          /* learning rate: 0 constant; 1 cosine from optimizer.learning_rate
                                     at round 0 down to 0 after the last round */
} RunConfig;

/* The learning rate of `round` under the run's schedule. */
double run_learning_rate(const RunConfig *config, uint64_t round);

/* Defaults for every field (model mlp, batch 32, 2 per round, momentum 0.05,
 * mean, honest, wait 10 s, ...). */
void run_config_default(RunConfig *config);
/* Parses spirt:config's JSON, refusing unknown fields and bad values with
 * the field's name. */
int run_config_from_json(const json_t *json, RunConfig *config, SpirtError *error);
/* The JSON form; the caller owns it (json_decref). */
json_t *run_config_to_json(const RunConfig *config);

/* "median", "trimmed-mean:trim=2", "krum:f=2", "multi-krum:f=2,m=6",
 * "geomed:iterations=50,tolerance=1e-6", "cclip:tau=10,iterations=3",
 * with f applying to any rule. Unknown rules or parameters are refused. */
int run_parse_aggregator(const char *spec, AggConfig *config, SpirtError *error);
void run_format_aggregator(const AggConfig *config, char *buffer, size_t size);

/* --- Function contexts (a worker's warm state) --- */

typedef struct FnContextOptions {
    StoreOptions store;        /* defaults for every connection (credentials, TLS, time-outs) */
    const char *identity_path; /* the peer's key file (publish signs with it); NULL: none */
    int threads;               /* compute threads per invocation; <= 0: 1 */
} FnContextOptions;

/* Caches of one worker: connections by address, the model's buffers, the
 * shard read from the database, the identity. Not thread-safe: one per
 * worker thread. */
typedef struct FnContext FnContext;

FnContext *fn_context_create(const FnContextOptions *options, SpirtError *error);
void fn_context_free(FnContext *context); /* NULL is allowed */

/* --- The functions --- */

typedef int (*FnHandler)(FnContext *context, const json_t *event, json_t **result, SpirtError *error);

typedef struct FnDescriptor {
    const char *name;
    FnHandler handler;
    const char *summary;
} FnDescriptor;

/* The function called `name`, or NULL. */
const FnDescriptor *fn_find(const char *name);
/* All functions; *count receives how many. */
const FnDescriptor *fn_all(size_t *count);

/* Runs function `name` on `event`. On SPIRT_OK *result is a new JSON object
 * owned by the caller (json_decref). On failure the error says why; a
 * connection that failed is dropped from the cache so the next invocation
 * reconnects. */
int fn_invoke(FnContext *context, const char *name, const json_t *event, json_t **result, SpirtError *error);

/* Sets the peer's spirt:heartbeat to {"round": r, "ms": now} with a time to
 * live of ttl_ms: while it exists, other peers count this one alive. */
int fn_write_heartbeat(StoreConn *db, uint64_t round, int64_t ttl_ms, SpirtError *error);

/* The workflow error name for a failure status, e.g. "spirt.NotFound",
 * "spirt.Timeout": what Retry/Catch match on (any of them is also
 * States.TaskFailed). */
const char *fn_error_name(int status);

#ifdef __cplusplus
}
#endif

#endif /* SPIRT_FN_H */
