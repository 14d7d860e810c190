/* fn_internal.h -- what the functions share: event fields, the context's
 * caches, and small helpers. Private to src/fn. */
#ifndef SPIRT_FN_INTERNAL_H
#define SPIRT_FN_INTERNAL_H

#include <jansson.h>
#include <stdint.h>

#include "spirt/fn.h"
#include "spirt/keys.h"
#include "spirt/store.h"

/* --- JSON fields, with errors naming the field --- */

/* Each returns SPIRT_OK, or SPIRT_ERR_INVALID naming `what`.`name` when the
 * field is missing (unless a default is given by the _or variants) or of
 * the wrong type or range. */
int fn_json_u64(const json_t *object, const char *name, uint64_t *value, SpirtError *error);
int fn_json_u64_or(const json_t *object, const char *name, uint64_t fallback, uint64_t *value, SpirtError *error);
int fn_json_double_or(const json_t *object, const char *name, double fallback, double *value, SpirtError *error);
int fn_json_bool_or(const json_t *object, const char *name, int fallback, int *value, SpirtError *error);
/* A borrowed string (valid while `object` is). */
int fn_json_string(const json_t *object, const char *name, const char **value, SpirtError *error);
int fn_json_string_or(const json_t *object, const char *name, const char *fallback, const char **value,
                      SpirtError *error);

/* --- The event's common part --- */

typedef struct FnEvent {
    const char *peer_id; /* borrowed from the event */
    const char *db;      /* the peer's own database address */
    uint64_t round;
} FnEvent;

/* Reads {"peer": {"id", "db"}, "round"}; round may be absent when
 * `needs_round` is 0 (then 0). */
int fn_event_parse(const json_t *event, int needs_round, FnEvent *parsed, SpirtError *error);

/* --- The context's caches --- */

/* A connection to `address`, opened on first use with the context's
 * defaults and kept. Borrowed: valid until fn_context_free or until a
 * failure drops it (fn_invoke drops every connection whose status is bad
 * after a failed invocation). */
StoreConn *fn_connect(FnContext *context, const char *address, SpirtError *error);
/* Drops connections that failed, so the next invocation starts clean. */
void fn_context_drop_broken(FnContext *context);
/* The same with a short time-out, for probing other peers. */
StoreConn *fn_connect_probe(FnContext *context, const char *address, int timeout_ms, SpirtError *error);

/* Where our own database can read a peer's database itself (SPIRT.FETCH):
 * "unix:/path" or "host:port", with the credentials a connection from us
 * would use. */
typedef struct FnFetchTarget {
    char address[300];
    char username[128]; /* "" when none */
    char password[256];
    int has_password;
} FnFetchTarget;
/* 1 and *target filled when a connection to `address` (with the context's
 * defaults) is plain: no TLS, which the module does not speak, and database
 * 0. 0 otherwise, and the caller reads the peer through its own client. */
int fn_fetch_target(const FnContext *context, const char *address, FnFetchTarget *target);

/* The run configuration in `db` (spirt:config), re-read on every call but
 * parsed only when it changed. Borrowed until the next call. */
const RunConfig *fn_run_config(FnContext *context, StoreConn *db, SpirtError *error);

/* What nearly every function starts with: the event's common part, the
 * peer's database (fn_connect) and the run configuration (fn_run_config),
 * all borrowed as above. Returns the first failure's code (with `error`
 * set) and leaves the outputs unset. */
int fn_begin(FnContext *context, const json_t *event, int needs_round, FnEvent *parsed, StoreConn **db,
             const RunConfig **config, SpirtError *error);

/* The model buffers for `kind`, created on first use with room for
 * max_batch examples. Borrowed. */
NnModel *fn_model(FnContext *context, NnModelKind kind, size_t max_batch, SpirtError *error);

/* The peer's training shard or validation split, read from the database
 * once per data digest. */
typedef struct FnData {
    size_t count;
    const float *images;   /* count x NN_INPUT_FEATURES */
    const uint8_t *labels; /* count */
} FnData;
int fn_training_data(FnContext *context, StoreConn *db, const RunConfig *config, FnData *data, SpirtError *error);
int fn_validation_data(FnContext *context, StoreConn *db, const RunConfig *config, FnData *data, SpirtError *error);

/* The order of the shard's examples in `epoch`: a permutation of
 * [0, count) that depends only on (seed, peer, epoch), cached. Borrowed. */
const size_t *fn_epoch_order(FnContext *context, const RunConfig *config, uint64_t epoch, SpirtError *error);

/* The peer's identity (from FnContextOptions.identity_path, or the event's
 * "identity" field naming a key file). */
const Identity *fn_identity(FnContext *context, const json_t *event, SpirtError *error);

int fn_compute_threads(const FnContext *context);

/* --- Membership, as kept in spirt:members --- */

typedef enum MemberStatus { MEMBER_ALIVE = 0, MEMBER_SUSPECT = 1, MEMBER_DEAD = 2 } MemberStatus;

typedef struct Member {
    char id[SPIRT_PEER_ID_MAX + 1];
    char address[256];
    char public_key[SPIRT_PUBLIC_KEY_HEX_SIZE];
    MemberStatus status;
    int64_t status_since_ms; /* wall time of the last status change */
    uint64_t joined_round;
} Member;

typedef struct Membership {
    size_t count;
    Member members[RUN_MAX_PEERS];
} Membership;

/* Reads every member (sorted by id, so every peer sees the same order). */
int fn_members_read(StoreConn *db, Membership *membership, SpirtError *error);
/* Writes one member's record. */
int fn_member_write(StoreConn *db, const Member *member, SpirtError *error);
const char *fn_member_status_name(MemberStatus status);
/* A Member from its JSON record; the id is the hash field's name. */
int fn_member_from_json(const char *id, const char *text, size_t length, Member *member, SpirtError *error);
char *fn_member_to_json(const Member *member); /* free() */

/* --- Handlers (one file each) --- */

int fn_compute_gradients(FnContext *context, const json_t *event, json_t **result, SpirtError *error);
int fn_average(FnContext *context, const json_t *event, json_t **result, SpirtError *error);
int fn_publish(FnContext *context, const json_t *event, json_t **result, SpirtError *error);
int fn_exchange(FnContext *context, const json_t *event, json_t **result, SpirtError *error);
int fn_aggregate(FnContext *context, const json_t *event, json_t **result, SpirtError *error);
int fn_update(FnContext *context, const json_t *event, json_t **result, SpirtError *error);
int fn_evaluate(FnContext *context, const json_t *event, json_t **result, SpirtError *error);
int fn_heartbeat(FnContext *context, const json_t *event, json_t **result, SpirtError *error);
int fn_admit(FnContext *context, const json_t *event, json_t **result, SpirtError *error);

#endif /* SPIRT_FN_INTERNAL_H */
