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
 *    "rejected": [{"peer", "reason"}], "bytes": n, "waited_ms": t}
 *
 * Silent peers. A live peer that published nothing in time for
 * silent_after_rounds exchanges in a row (RunConfig; default 3) is waited
 * for only silent_wait_seconds (default 0.1 s) once every other peer is
 * settled, not the full wait: a Byzantine peer that stays alive but never
 * publishes would otherwise cost every honest peer the full wait every
 * round. The count is kept per peer in our database (spirt:silence) and
 * drops to 0 as soon as the peer publishes anything in time (a bad
 * publication too: refusing it costs no waiting). It is only about how long
 * to wait, never about what is accepted, so peers that receive the same
 * publications still aggregate the same inputs; only a silent peer that
 * comes back and lands within the short wait at some peers and after it at
 * others can split them, as any publication landing at a deadline can. */
#include <stdio.h>
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
    uint64_t missed_before;      /* exchanges it missed in a row before this round */
    int silent;                  /* missed_before reached silent_after_rounds */
    int missed;                  /* it missed this one too (deadline or silent wait) */
    int fetch_in_database;       /* our database reads its payloads (SPIRT.FETCH) at `target` */
    FnFetchTarget target;
} Pending;

/* --- Silence records: "round streak before" per peer in spirt:silence --- */

/* How many exchanges in a row the peer missed before `round`, from its
 * record. A record of this very round is a retry: its `before` is the
 * answer, so running exchange again counts the same. */
static uint64_t missed_before_round(const char *record, uint64_t round) {
    unsigned long long recorded_round = 0, streak = 0, before = 0;
    if (record == NULL || sscanf(record, "%llu %llu %llu", &recorded_round, &streak, &before) != 3) return 0;
    return recorded_round == round ? (uint64_t)before : (uint64_t)streak;
}

static void read_silence(StoreConn *db, Pending *pending, size_t count, uint64_t round, uint64_t silent_after) {
    StoreReply *reply = NULL;
    const char *argv[] = {"HGETALL", KEY_SILENCE};
    if (store_command_argv(db, 2, argv, NULL, &reply, NULL) != SPIRT_OK || reply->type != STORE_REPLY_ARRAY) {
        store_reply_free(reply);
        return;
    }
    for (size_t k = 0; k + 1 < reply->elements; k += 2)
        for (size_t i = 0; i < count; i++)
            if (strcmp(pending[i].member->id, reply->element[k]->str) == 0) {
                pending[i].missed_before = missed_before_round(reply->element[k + 1]->str, round);
                pending[i].silent = silent_after > 0 && pending[i].missed_before >= silent_after;
            }
    store_reply_free(reply);
}

/* Records this round's outcome: a peer that missed it (it was alive and
 * published nothing in time) counts one more, one that published counts 0,
 * one that was dead or unreachable keeps its count. */
static int write_silence(StoreConn *db, const Pending *pending, size_t count, uint64_t round, SpirtError *error) {
    if (count == 0) return SPIRT_OK;
    const char **argv = calloc(2 + 2 * count, sizeof(char *));
    char (*values)[80] = calloc(count, sizeof(*values));
    if (argv == NULL || values == NULL) {
        free(argv);
        free(values);
        return spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory");
    }
    size_t argc = 0;
    argv[argc++] = "HSET";
    argv[argc++] = KEY_SILENCE;
    for (size_t i = 0; i < count; i++) {
        const Pending *entry = &pending[i];
        uint64_t streak = entry->missed ? entry->missed_before + 1
                          : entry->state == PENDING_MISSING ? entry->missed_before
                                                            : 0;
        snprintf(values[i], sizeof(values[i]), "%llu %llu %llu", (unsigned long long)round, (unsigned long long)streak,
                 (unsigned long long)entry->missed_before);
        argv[argc++] = entry->member->id;
        argv[argc++] = values[i];
    }
    int status = store_command_argv(db, argc, argv, NULL, NULL, error);
    free(argv);
    free(values);
    return status;
}

/* The refusal of a publication of `values` values for a model of
 * `param_count`, in the same words on both ways of reading. */
static int refuse_size(size_t values, size_t param_count, SpirtError *error) {
    return spirt_error_set(error, SPIRT_ERR_SHAPE, "%zu values, the model has %zu", values, param_count);
}

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
        status = refuse_size(vector->count, param_count, error);
    else if (!tensor_all_finite(vector->data, vector->count, &bad))
        status = spirt_error_set(error, SPIRT_ERR_NONFINITE, "value %zu is not finite", bad);
    if (status == SPIRT_OK) {
        char key[KEY_MAX];
        status = store_tensor_set(db, key_round_received(key, round, member->id), &vector->shape, vector->data, error);
    }
    tensor_free(vector);
    return status;
}

/* Not published yet: is the peer still alive? Checked every 100 ms, not on
 * every poll. */
static void check_liveness(StoreConn *peer, Pending *entry, double now) {
    if (now < entry->next_liveness_check_ms) return;
    entry->next_liveness_check_ms = now + 100.0;
    int alive = 0;
    if (store_exists(peer, KEY_HEARTBEAT, &alive, NULL) == SPIRT_OK && !alive) {
        entry->state = PENDING_MISSING;
        snprintf(entry->reason, sizeof(entry->reason), "no heartbeat");
    }
}

/* What reading one publication came to. */
typedef enum Outcome {
    OUTCOME_NOT_YET = 0, /* not published yet */
    OUTCOME_RECEIVED,
    OUTCOME_REJECTED,    /* published, and refused: `reason` says why */
    OUTCOME_UNREACHABLE, /* the peer's server or the way to it failed */
    OUTCOME_TRY_AGAIN    /* a passing failure that tells nothing */
} Outcome;

/* The in-database path, first half: the publication's length, signed head
 * and signature from the peer (a few hundred bytes, one round trip),
 * checked. OUTCOME_RECEIVED here means "the head is authentic and names a
 * payload of the model's size": *head and *envelope_size are set. */
static Outcome read_signed_head(StoreConn *peer, const Member *member, uint64_t round, const char *published_key,
                                size_t param_count, EnvelopeHead *head, size_t *envelope_size, SpirtError *reason) {
    char last_head_byte[24], signature_start[24];
    snprintf(last_head_byte, sizeof(last_head_byte), "%d", ENVELOPE_HEAD_MAX - 1);
    snprintf(signature_start, sizeof(signature_start), "%d", -ENVELOPE_SIGNATURE_BYTES);
    StoreReply *length = NULL, *head_bytes = NULL, *signature = NULL;
    int status = store_append(peer, reason, "STRLEN %s", published_key);
    if (status == SPIRT_OK) status = store_append(peer, reason, "GETRANGE %s 0 %s", published_key, last_head_byte);
    if (status == SPIRT_OK) status = store_append(peer, reason, "GETRANGE %s %s -1", published_key, signature_start);
    if (status == SPIRT_OK) status = store_get_reply(peer, &length, reason);
    if (status == SPIRT_OK) status = store_get_reply(peer, &head_bytes, reason);
    if (status == SPIRT_OK) status = store_get_reply(peer, &signature, reason);
    Outcome outcome = OUTCOME_REJECTED;
    Identity sender;
    if (status != SPIRT_OK) {
        outcome = OUTCOME_UNREACHABLE;
    } else if (length->type != STORE_REPLY_INTEGER || head_bytes->type != STORE_REPLY_STRING ||
               signature->type != STORE_REPLY_STRING) {
        spirt_error_set(reason, SPIRT_ERR_FORMAT, "the publication is not a string");
    } else if (length->integer == 0) {
        outcome = OUTCOME_NOT_YET;
    } else if (signature->len != ENVELOPE_SIGNATURE_BYTES) {
        spirt_error_set(reason, SPIRT_ERR_FORMAT, "envelope too short (%lld bytes)", length->integer);
    } else if (identity_from_public_hex(&sender, member->id, member->public_key, reason) == SPIRT_OK &&
               envelope_check_head((const unsigned char *)head_bytes->str, head_bytes->len,
                                   (const unsigned char *)signature->str, (size_t)length->integer, &sender,
                                   ENVELOPE_KIND_ROUND_AVERAGE, round, head, reason) == SPIRT_OK) {
        size_t header = SPIRT_TENSOR_FILE_HEADER_SIZE;
        if (head->payload_size <= header || (head->payload_size - header) % sizeof(float) != 0)
            spirt_error_set(reason, SPIRT_ERR_FORMAT, "a payload of %zu bytes is no tensor of %zu values",
                            head->payload_size, param_count);
        else if ((head->payload_size - header) / sizeof(float) != param_count)
            refuse_size((head->payload_size - header) / sizeof(float), param_count, reason);
        else
            outcome = OUTCOME_RECEIVED;
        *envelope_size = (size_t)length->integer;
    }
    store_reply_free(length);
    store_reply_free(head_bytes);
    store_reply_free(signature);
    return outcome;
}

/* The in-database path, second half: our own database fetches the payload
 * the head vouches for and checks it against the signed digest
 * (SPIRT.FETCH). Sets *outcome; a failure of our own database is returned
 * as an error. */
static int fetch_payload(StoreConn *db, const FnFetchTarget *target, const Member *member, uint64_t round,
                         const char *published_key, const EnvelopeHead *head, double seconds_left, Outcome *outcome,
                         SpirtError *reason, SpirtError *error) {
    char key[KEY_MAX], offset[24], size[24], hex[SPIRT_DIGEST_HEX_BYTES + 1], timeout[24];
    key_round_received(key, round, member->id);
    snprintf(offset, sizeof(offset), "%zu", head->payload_offset);
    snprintf(size, sizeof(size), "%zu", head->payload_size);
    digest_to_hex(head->payload_digest, hex);
    double timeout_ms = seconds_left * 1000.0;
    snprintf(timeout, sizeof(timeout), "%d", timeout_ms < 1000 ? 1000 : timeout_ms > 10000 ? 10000 : (int)timeout_ms);
    const char *argv[17] = {"SPIRT.FETCH", key,  "ADDRESS", target->address, "KEY",    published_key,
                            "RANGE",       offset, size,    "DIGEST",        hex,      "TIMEOUT",
                            timeout};
    size_t argc = 13;
    if (target->has_password) {
        if (target->username[0]) argv[argc++] = "USER", argv[argc++] = target->username;
        argv[argc++] = "PASSWORD", argv[argc++] = target->password;
    }
    *outcome = OUTCOME_RECEIVED;
    if (store_command_argv(db, argc, argv, NULL, NULL, reason) == SPIRT_OK) return SPIRT_OK;
    if (store_conn_status(db) != SPIRT_OK) return spirt_error_set(error, reason->code, "%s", reason->message);
    /* The network or the peer's server failed on the way (IO, TIMEOUT,
     * REMOTE): try again at the next poll, as for a peer we cannot reach.
     * Anything else is about the bytes: refused. */
    const char *message = reason->message;
    int transient = strncmp(message, "IO ", 3) == 0 || strncmp(message, "TIMEOUT ", 8) == 0 ||
                    strncmp(message, "REMOTE ", 7) == 0;
    *outcome = transient ? OUTCOME_UNREACHABLE : OUTCOME_REJECTED;
    return SPIRT_OK;
}

/* The client path: the whole envelope into the function, checked there
 * and stored with SPIRT.TSET (TLS peers, exchange_in_database false). */
static int read_envelope(StoreConn *db, StoreConn *peer, const Member *member, uint64_t round,
                         const char *published_key, size_t param_count, Outcome *outcome, uint64_t *bytes,
                         SpirtError *reason, SpirtError *error) {
    char *envelope = NULL;
    size_t size = 0;
    int got = store_get(peer, published_key, &envelope, &size, reason);
    /* Not published yet, or a passing read failure (then nothing is learnt). */
    *outcome = got == SPIRT_ERR_NOT_FOUND ? OUTCOME_NOT_YET : OUTCOME_TRY_AGAIN;
    if (got != SPIRT_OK) return SPIRT_OK;
    *bytes += size;
    int accepted = accept_publication(db, member, round, (unsigned char *)envelope, size, param_count, reason);
    free(envelope);
    if (accepted != SPIRT_OK && store_conn_status(db) != SPIRT_OK)
        /* Our own database failed: that is our error, not theirs. */
        return spirt_error_set(error, reason->code, "%s", reason->message);
    *outcome = accepted == SPIRT_OK ? OUTCOME_RECEIVED : OUTCOME_REJECTED;
    return SPIRT_OK;
}

/* Polls one peer once; moves the entry out of PENDING_WAITING when its
 * publication arrived (received or rejected) or it is known to be gone.
 * Fails only if our own database fails (then the error is ours). */
static int poll_peer(FnContext *context, StoreConn *db, Pending *entry, const RunConfig *config, uint64_t round,
                     const char *published_key, size_t param_count, double now, double deadline_ms, uint64_t *bytes,
                     SpirtError *error) {
    SpirtError reason;
    spirt_error_clear(&reason);
    Outcome outcome = OUTCOME_UNREACHABLE;
    int status = SPIRT_OK;
    StoreConn *peer = fn_connect_probe(context, entry->member->address, 1000, &reason);
    if (peer && entry->fetch_in_database) {
        EnvelopeHead head;
        size_t envelope_size = 0;
        outcome = read_signed_head(peer, entry->member, round, published_key, param_count, &head, &envelope_size,
                                   &reason);
        if (outcome == OUTCOME_RECEIVED)
            status = fetch_payload(db, &entry->target, entry->member, round, published_key, &head,
                                   (deadline_ms - now) / 1000.0, &outcome, &reason, error);
        if (outcome == OUTCOME_RECEIVED) *bytes += envelope_size;
    } else if (peer)
        status = read_envelope(db, peer, entry->member, round, published_key, param_count, &outcome, bytes, &reason,
                               error);
    if (status != SPIRT_OK) return status;
    if (outcome == OUTCOME_UNREACHABLE) {
        /* Its database is down, or the way to it failed: give it the
         * heartbeat's time to live before leaving it out. */
        if (entry->unreachable_since_ms == 0) entry->unreachable_since_ms = now;
        if (now - entry->unreachable_since_ms > (double)config->heartbeat_ttl_ms) {
            entry->state = PENDING_MISSING;
            snprintf(entry->reason, sizeof(entry->reason), "unreachable: %s", reason.message);
        }
        return SPIRT_OK;
    }
    entry->unreachable_since_ms = 0;
    if (outcome == OUTCOME_RECEIVED) {
        entry->state = PENDING_RECEIVED;
    } else if (outcome == OUTCOME_REJECTED) {
        entry->state = PENDING_REJECTED;
        snprintf(entry->reason, sizeof(entry->reason), "%s", reason.message);
        log_warn("round %llu: rejected %s's publication: %s", (unsigned long long)round, entry->member->id,
                 reason.message);
    } else if (outcome == OUTCOME_NOT_YET) {
        check_liveness(peer, entry, now);
    }
    return SPIRT_OK;
}

/* Leaves every entry still waiting (of silent ones only, if `silent_only`)
 * out as missed, with `reason`. */
static void give_up_waiting(Pending *pending, size_t count, int silent_only, const char *reason) {
    for (size_t i = 0; i < count; i++) {
        Pending *entry = &pending[i];
        if (entry->state != PENDING_WAITING || (silent_only && !entry->silent)) continue;
        entry->state = PENDING_MISSING;
        entry->missed = 1;
        snprintf(entry->reason, sizeof(entry->reason), "%s", reason);
    }
}

int fn_exchange(FnContext *context, const json_t *event, json_t **result, SpirtError *error) {
    FnEvent parsed;
    StoreConn *db;
    const RunConfig *config;
    int status = fn_begin(context, event, 1, &parsed, &db, &config, error);
    if (status != SPIRT_OK) return status;
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
        pending[count].fetch_in_database =
            config->exchange_in_database && fn_fetch_target(context, member->address, &pending[count].target);
        if (member->status == MEMBER_DEAD) {
            pending[count].state = PENDING_MISSING;
            snprintf(pending[count].reason, sizeof(pending[count].reason), "dead");
        }
        count++;
    }
    read_silence(db, pending, count, parsed.round, config->silent_after_rounds);

    char published_key[KEY_MAX];
    key_published(published_key, parsed.round);
    double start = clock_monotonic_ms();
    double deadline = start + wait_seconds * 1000.0;
    double others_settled_ms = 0; /* when every peer but the silent ones was settled */
    double pause = 1.0;
    uint64_t bytes = 0;
    for (;;) {
        size_t waiting = 0, waiting_for_others = 0;
        double now = clock_monotonic_ms();
        for (size_t i = 0; i < count && status == SPIRT_OK; i++) {
            Pending *entry = &pending[i];
            if (entry->state != PENDING_WAITING) continue;
            status = poll_peer(context, db, entry, config, parsed.round, published_key, param_count, now, deadline,
                               &bytes, error);
            if (entry->state != PENDING_WAITING) continue;
            waiting++;
            waiting_for_others += !entry->silent;
        }
        if (status != SPIRT_OK || waiting == 0) break;
        now = clock_monotonic_ms();
        if (waiting_for_others == 0) {
            /* Only silent peers left: a short wait for them, not the full one. */
            if (others_settled_ms == 0) others_settled_ms = now;
            if (now - others_settled_ms >= config->silent_wait_seconds * 1000.0) {
                char reason[96];
                snprintf(reason, sizeof(reason), "silent (missed %llu+ rounds; waited %.2f s after the others)",
                         (unsigned long long)config->silent_after_rounds, config->silent_wait_seconds);
                give_up_waiting(pending, count, 1, reason);
                break;
            }
        }
        if (now >= deadline) {
            char reason[64];
            snprintf(reason, sizeof(reason), "deadline (%.1f s)", wait_seconds);
            give_up_waiting(pending, count, 0, reason);
            break;
        }
        /* Poll quickly at first (peers publish at nearly the same time),
         * then back off to a few milliseconds. */
        clock_sleep_ms(pause);
        if (pause < 5.0) pause *= 1.5;
    }
    if (status == SPIRT_OK) status = write_silence(db, pending, count, parsed.round, error);
    if (status != SPIRT_OK) {
        free(membership);
        free(pending);
        return status;
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
