/* keys.h -- the names of everything spirt keeps in a peer's database.
 *
 * One place for the key schema, so functions, the peer runtime, the CLI and
 * the tests cannot drift apart. Per-round keys carry the round number and
 * are deleted a few rounds later, so memory stays flat over a long run.
 *
 *   spirt:config              the run's configuration (JSON, see fn.h)
 *   spirt:params              the model parameters (tensor)
 *   spirt:opt:state           the optimizer state (tensor, made by SPIRT.UPDATE)
 *   spirt:data:train:images   the peer's training shard (tensor, count x 784)
 *   spirt:data:train:labels   its labels (tensor of class numbers, count)
 *   spirt:data:val:images     the peer's validation split, likewise
 *   spirt:data:val:labels
 *   spirt:r:{r}:grad:{b}      minibatch b's gradient in round r (tensor)
 *   spirt:r:{r}:avg           the peer's average of round r (tensor)
 *   spirt:r:{r}:in:{q}        peer q's verified average of round r (tensor)
 *   spirt:r:{r}:agg           the robust aggregate of round r (tensor)
 *   spirt:r:{r}:sent          a Byzantine peer's published vector (tensor)
 *   spirt:r:{r}:updated       set once round r's optimizer step is applied
 *   spirt:pub:{r}             the signed average other peers read (envelope)
 *   spirt:round               the last completed round (integer)
 *   spirt:checkpoint          the last round whose model is persisted (integer)
 *   spirt:members             membership: peer id -> JSON (hash)
 *   spirt:heartbeat           the peer's liveness, with a time to live
 *   spirt:silence             per other peer: exchanges it missed in a row (hash)
 *   spirt:inbox               join requests (list of signed envelopes)
 *   spirt:invocations         function invocations (stream, group "workers")
 *   spirt:result:{id}         an invocation's result (list, expires)
 *   spirt:counters            invocation counters (hash)
 *   spirt:metrics             one entry per completed round (stream)
 *   spirt:status              "running", "done" or "failed: ..." */
#ifndef SPIRT_KEYS_H
#define SPIRT_KEYS_H

#include <stdint.h>
#include <stdio.h>

#define KEY_CONFIG "spirt:config"
#define KEY_PARAMS "spirt:params"
#define KEY_OPTIMIZER_STATE "spirt:opt:state"
#define KEY_TRAIN_IMAGES "spirt:data:train:images"
#define KEY_TRAIN_LABELS "spirt:data:train:labels"
#define KEY_VALIDATION_IMAGES "spirt:data:val:images"
#define KEY_VALIDATION_LABELS "spirt:data:val:labels"
#define KEY_ROUND "spirt:round"
#define KEY_CHECKPOINT "spirt:checkpoint"
/* Per-round keys: scratch, never persisted when the module is loaded with
 * TRANSIENT_PREFIX spirt:r: (a restarted peer recomputes them). */
#define KEY_ROUND_PREFIX "spirt:r:"
/* Publications (spirt:pub:{r}) are scratch too (TRANSIENT_PREFIX spirt:pub:):
 * a restarted peer publishes the round again. */
#define KEY_PUBLISHED_PREFIX "spirt:pub:"
#define KEY_MEMBERS "spirt:members"
#define KEY_HEARTBEAT "spirt:heartbeat"
#define KEY_SILENCE "spirt:silence"
#define KEY_INBOX "spirt:inbox"
#define KEY_INVOCATIONS "spirt:invocations"
#define KEY_INVOCATION_GROUP "workers"
#define KEY_COUNTERS "spirt:counters"
#define KEY_METRICS "spirt:metrics"
#define KEY_STATUS "spirt:status"

#define KEY_MAX 160 /* every key fits, peer ids included */

static inline char *key_round_gradient(char key[KEY_MAX], uint64_t round, unsigned batch) {
    snprintf(key, KEY_MAX, "spirt:r:%llu:grad:%u", (unsigned long long)round, batch);
    return key;
}
static inline char *key_round_average(char key[KEY_MAX], uint64_t round) {
    snprintf(key, KEY_MAX, "spirt:r:%llu:avg", (unsigned long long)round);
    return key;
}
static inline char *key_round_received(char key[KEY_MAX], uint64_t round, const char *peer_id) {
    snprintf(key, KEY_MAX, "spirt:r:%llu:in:%s", (unsigned long long)round, peer_id);
    return key;
}
static inline char *key_round_sent(char key[KEY_MAX], uint64_t round) {
    snprintf(key, KEY_MAX, "spirt:r:%llu:sent", (unsigned long long)round);
    return key;
}
static inline char *key_round_aggregate(char key[KEY_MAX], uint64_t round) {
    snprintf(key, KEY_MAX, "spirt:r:%llu:agg", (unsigned long long)round);
    return key;
}
static inline char *key_round_updated(char key[KEY_MAX], uint64_t round) {
    snprintf(key, KEY_MAX, "spirt:r:%llu:updated", (unsigned long long)round);
    return key;
}
static inline char *key_round_pattern(char key[KEY_MAX], uint64_t round) {
    snprintf(key, KEY_MAX, "spirt:r:%llu:*", (unsigned long long)round);
    return key;
}
static inline char *key_published(char key[KEY_MAX], uint64_t round) {
    snprintf(key, KEY_MAX, KEY_PUBLISHED_PREFIX "%llu", (unsigned long long)round);
    return key;
}
static inline char *key_result(char key[KEY_MAX], const char *invocation_id) {
    snprintf(key, KEY_MAX, "spirt:result:%s", invocation_id);
    return key;
}

#endif /* SPIRT_KEYS_H */
