/* exchange.c -- collect the round's signed averages from the other peers.
 *
 * Event: {"peer", "round", "wait_seconds" (optional; default the run's
 * exchange wait)}. For every member that is not dead, polls its database
 * for spirt:pub:{r} until it appears, the member's heartbeat lapses, or the
 * wait ends -- so a dead peer is never waited for, and a live but silent one
 * at most `wait_seconds`. Each publication is checked before it counts:
 * the envelope must be signed by the member's known key for this round, and
 * the tensor inside must be well-formed, of the model's size, and finite.
 * What passes is stored as spirt:r:{r}:in:{q} in our own database; what
 * fails is reported and left out. Result:
 *   {"received": [ids, sorted], "missing": [{"peer", "reason"}],
 *    "rejected": [{"peer", "reason"}], "bytes": n, "waited_ms": t} */
#include <stdlib.h>
#include <string.h>

#include "fn/fn_internal.h"
#include "spirt/clock.h"
#include "spirt/log.h"

typedef enum PendingState { PENDING_WAITING = 0, PENDING_RECEIVED, PENDING_MISSING, PENDING_REJECTED } PendingState;

typedef struct Pending {
    const Member *member;
    PendingState state;
    char reason[SPIRT_ERROR_MESSAGE_MAX + 32];
    double next_liveness_check_ms;
    double unreachable_since_ms; /* 0 while reachable */
} Pending;

/* Checks one publication and stores it; returns SPIRT_OK or the reason it
 * was refused (in error). */
static int accept_publication(StoreConn *db, const Member *member, uint64_t round, const unsigned char *envelope,
                              size_t size, size_t param_count, SpirtError *error) {
    Identity sender;
    int status = identity_from_public_hex(&sender, member->id, member->public_key, error);
    if (status != SPIRT_OK) return status;
    EnvelopeContents contents;
    if ((status = envelope_open(envelope, size, &sender, ENVELOPE_KIND_ROUND_AVERAGE, round, &contents, error)) !=
        SPIRT_OK)
        return status;
    /* The signature covers the payload's digest: no need to hash it again. */
    Tensor *vector = tensor_decode_authenticated(contents.payload, contents.payload_size, member->id, error);
    if (vector == NULL) return error->code;
    size_t bad = 0;
    if (vector->count != param_count)
        status = spirt_error_set(error, SPIRT_ERR_SHAPE, "%zu values, the model has %zu", vector->count, param_count);
    else if (!tensor_all_finite(vector->data, vector->count, &bad))
        status = spirt_error_set(error, SPIRT_ERR_NONFINITE, "value %zu is not finite", bad);
    if (status == SPIRT_OK) {
        char key[KEY_MAX];
        status = store_tensor_set(db, key_round_received(key, round, member->id), &vector->shape, vector->data, error);
    }
    tensor_free(vector);
    return status;
}

int fn_exchange(FnContext *context, const json_t *event, json_t **result, SpirtError *error) {
    FnEvent parsed;
    int status = fn_event_parse(event, 1, &parsed, error);
    if (status != SPIRT_OK) return status;
    StoreConn *db = fn_connect(context, parsed.db, error);
    if (db == NULL) return error->code;
    const RunConfig *config = fn_run_config(context, db, error);
    if (config == NULL) return error->code;
    double wait_seconds;
    if ((status = fn_json_double_or(event, "wait_seconds", config->exchange_wait_seconds, &wait_seconds, error)) !=
        SPIRT_OK)
        return status;
    size_t param_count = nn_model_kind_param_count(config->model);
    Membership *membership = malloc(sizeof(*membership));
    Pending *pending = calloc(RUN_MAX_PEERS, sizeof(*pending));
    if (membership == NULL || pending == NULL) {
        free(membership);
        free(pending);
        return spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory");
    }
    if ((status = fn_members_read(db, membership, error)) != SPIRT_OK) {
        free(membership);
        free(pending);
        return status;
    }
    size_t count = 0;
    for (size_t i = 0; i < membership->count; i++) {
        const Member *member = &membership->members[i];
        if (strcmp(member->id, parsed.peer_id) == 0) continue;
        pending[count].member = member;
        if (member->status == MEMBER_DEAD) {
            pending[count].state = PENDING_MISSING;
            snprintf(pending[count].reason, sizeof(pending[count].reason), "dead");
        }
        count++;
    }

    char published_key[KEY_MAX];
    key_published(published_key, parsed.round);
    double start = clock_monotonic_ms();
    double deadline = start + wait_seconds * 1000.0;
    double pause = 1.0;
    uint64_t bytes = 0;
    for (;;) {
        size_t waiting = 0;
        double now = clock_monotonic_ms();
        for (size_t i = 0; i < count; i++) {
            Pending *entry = &pending[i];
            if (entry->state != PENDING_WAITING) continue;
            SpirtError peer_error;
            StoreConn *peer = fn_connect_probe(context, entry->member->address, 1000, &peer_error);
            if (peer == NULL) {
                /* Unreachable: its database is down. Give it the heartbeat's
                 * time to live before leaving it out. */
                if (entry->unreachable_since_ms == 0) entry->unreachable_since_ms = now;
                if (now - entry->unreachable_since_ms > (double)config->heartbeat_ttl_ms) {
                    entry->state = PENDING_MISSING;
                    snprintf(entry->reason, sizeof(entry->reason), "unreachable: %s", peer_error.message);
                } else {
                    waiting++;
                }
                continue;
            }
            entry->unreachable_since_ms = 0;
            char *envelope = NULL;
            size_t size = 0;
            int got = store_get(peer, published_key, &envelope, &size, &peer_error);
            if (got == SPIRT_OK) {
                bytes += size;
                SpirtError reason;
                if (accept_publication(db, entry->member, parsed.round, (unsigned char *)envelope, size, param_count,
                                       &reason) == SPIRT_OK) {
                    entry->state = PENDING_RECEIVED;
                } else if (store_conn_status(db) != SPIRT_OK) {
                    /* Our own database failed: that is our error, not theirs. */
                    free(envelope);
                    spirt_error_set(error, reason.code, "%s", reason.message);
                    free(membership);
                    free(pending);
                    return error->code;
                } else {
                    entry->state = PENDING_REJECTED;
                    snprintf(entry->reason, sizeof(entry->reason), "%s", reason.message);
                    log_warn("round %llu: rejected %s's publication: %s", (unsigned long long)parsed.round,
                             entry->member->id, reason.message);
                }
                free(envelope);
                continue;
            }
            if (got != SPIRT_ERR_NOT_FOUND) {
                waiting++;
                continue;
            }
            /* Not published yet: is it still alive? Checked every 100 ms,
             * not on every poll. */
            if (now >= entry->next_liveness_check_ms) {
                entry->next_liveness_check_ms = now + 100.0;
                int alive = 0;
                if (store_exists(peer, KEY_HEARTBEAT, &alive, NULL) == SPIRT_OK && !alive) {
                    entry->state = PENDING_MISSING;
                    snprintf(entry->reason, sizeof(entry->reason), "no heartbeat");
                    continue;
                }
            }
            waiting++;
        }
        if (waiting == 0) break;
        if (clock_monotonic_ms() >= deadline) {
            for (size_t i = 0; i < count; i++)
                if (pending[i].state == PENDING_WAITING) {
                    pending[i].state = PENDING_MISSING;
                    snprintf(pending[i].reason, sizeof(pending[i].reason), "deadline (%.1f s)", wait_seconds);
                }
            break;
        }
        /* Poll quickly at first (peers publish at nearly the same time),
         * then back off to a few milliseconds. */
        clock_sleep_ms(pause);
        if (pause < 5.0) pause *= 1.5;
    }

    json_t *received = json_array(), *missing = json_array(), *rejected = json_array();
    for (size_t i = 0; i < count; i++) {
        const Pending *entry = &pending[i];
        if (entry->state == PENDING_RECEIVED)
            json_array_append_new(received, json_string(entry->member->id));
        else if (entry->state == PENDING_REJECTED)
            json_array_append_new(rejected, json_pack("{s:s, s:s}", "peer", entry->member->id, "reason", entry->reason));
        else
            json_array_append_new(missing, json_pack("{s:s, s:s}", "peer", entry->member->id, "reason", entry->reason));
    }
    *result = json_pack("{s:o, s:o, s:o, s:I, s:f}", "received", received, "missing", missing, "rejected", rejected,
                        "bytes", (json_int_t)bytes, "waited_ms", clock_monotonic_ms() - start);
    free(membership);
    free(pending);
    return SPIRT_OK;
}
