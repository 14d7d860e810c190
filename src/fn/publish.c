/* publish.c -- sign the round's average and expose it to the other peers.
 *
 * Event: {"peer", "round"}. Wraps spirt:r:{r}:avg (its encoding,
 * tensor_payload_header then the values) in an envelope signed with the
 * peer's identity and stores the envelope under spirt:pub:{r}, which other
 * peers' exchange functions read. Result: {"bytes": envelope size,
 * "attack": null or the attack's name}.
 *
 * An honest peer's average never leaves the database: the function asks
 * the module for its encoding's digest (SPIRT.TDIGEST), signs the
 * envelope's head around that digest, and has the module store head,
 * encoding and signature as the publication (SPIRT.TWRAP, which checks the
 * digest again). Only the head and signature cross the socket, instead of
 * the vector twice (docs/benchmarks.md, "Where a round's time goes").
 *
 * A Byzantine peer (RunConfig.attack) publishes the attack's vector
 * instead, built here. Omniscient attacks first read the round's honest
 * publications from the other peers' databases, as a real attacker could,
 * waiting for them up to the exchange wait. The protocol misbehaviours
 * publish nothing (silent), a signed vector of the wrong size or with NaN
 * in it, or random bytes in place of the envelope (garbage): what exchange
 * must refuse. */
#include <stdlib.h>
#include <string.h>

#include "fn/fn_internal.h"
#include "spirt/digest.h"
#include "spirt/clock.h"
#include "spirt/log.h"

static int is_byzantine(const RunConfig *config, const char *peer_id) {
    for (size_t i = 0; i < config->byzantine_count; i++)
        if (strcmp(config->byzantine[i], peer_id) == 0) return 1;
    return 0;
}

/* Reads the honest peers' published vectors of `round` (waiting for them up
 * to the exchange wait); fills vectors[] with new tensors. */
static size_t read_honest_vectors(FnContext *context, StoreConn *db, const RunConfig *config, uint64_t round,
                                  size_t param_count, Tensor **vectors, size_t capacity) {
    Membership *membership = malloc(sizeof(*membership));
    if (membership == NULL || fn_members_read(db, membership, NULL) != SPIRT_OK) {
        free(membership);
        return 0;
    }
    size_t found = 0;
    char key[KEY_MAX];
    key_published(key, round);
    double deadline = clock_monotonic_ms() + config->exchange_wait_seconds * 1000.0;
    int *done = calloc(membership->count, sizeof(int));
    for (int pass = 0; done && found < capacity; pass++) {
        size_t waiting = 0;
        for (size_t i = 0; i < membership->count && found < capacity; i++) {
            const Member *member = &membership->members[i];
            if (done[i] || strcmp(member->id, config->peer_id) == 0 || is_byzantine(config, member->id) ||
                member->status == MEMBER_DEAD)
                continue;
            StoreConn *peer = fn_connect_probe(context, member->address, 1000, NULL);
            char *envelope = NULL;
            size_t size = 0;
            if (peer == NULL || store_get(peer, key, &envelope, &size, NULL) != SPIRT_OK) {
                waiting++;
                continue;
            }
            done[i] = 1;
            EnvelopeContents contents;
            Identity sender;
            Tensor *vector = NULL;
            if (identity_from_public_hex(&sender, member->id, member->public_key, NULL) == SPIRT_OK &&
                envelope_open((unsigned char *)envelope, size, &sender, ENVELOPE_KIND_ROUND_AVERAGE, round, &contents,
                              NULL) == SPIRT_OK)
                vector = tensor_decode_authenticated(contents.payload, contents.payload_size, member->id, NULL);
            free(envelope);
            if (vector && vector->count == param_count)
                vectors[found++] = vector;
            else
                tensor_free(vector);
        }
        if (waiting == 0 || clock_monotonic_ms() > deadline) break;
        clock_sleep_ms(2);
    }
    free(done);
    free(membership);
    return found;
}

static size_t peer_count(StoreConn *db) {
    long long count = 0;
    StoreReply *reply = NULL;
    if (store_command(db, &reply, NULL, "HLEN %s", KEY_MEMBERS) == SPIRT_OK && reply->type == STORE_REPLY_INTEGER)
        count = reply->integer;
    store_reply_free(reply);
    return count > 0 ? (size_t)count : 1;
}

/* The honest publication, built in the database (see the top). Sets
 * *envelope_size. */
static int publish_in_database(StoreConn *db, const Identity *identity, uint64_t round, size_t *envelope_size,
                               SpirtError *error) {
    char average_key[KEY_MAX], published_key[KEY_MAX];
    key_round_average(average_key, round);
    key_published(published_key, round);
    StoreReply *reply = NULL;
    int status = store_command(db, &reply, error, "SPIRT.TDIGEST %s", average_key);
    if (status != SPIRT_OK) return spirt_error_prefix(error, "digest of %s", average_key);
    unsigned char digest[SPIRT_DIGEST_BYTES];
    if (reply->type != STORE_REPLY_ARRAY || reply->elements != 2 || reply->element[0]->type != STORE_REPLY_STRING ||
        reply->element[1]->type != STORE_REPLY_INTEGER || reply->element[1]->integer <= 0 ||
        digest_from_hex(reply->element[0]->str, reply->element[0]->len, digest) != 0) {
        store_reply_free(reply);
        return spirt_error_set(error, SPIRT_ERR_PROTOCOL, "SPIRT.TDIGEST %s: unexpected reply", average_key);
    }
    char hex[SPIRT_DIGEST_HEX_BYTES + 1];
    memcpy(hex, reply->element[0]->str, SPIRT_DIGEST_HEX_BYTES);
    hex[SPIRT_DIGEST_HEX_BYTES] = '\0';
    size_t encoding_size = (size_t)reply->element[1]->integer;
    store_reply_free(reply);

    unsigned char head[ENVELOPE_HEAD_MAX], signature[ENVELOPE_SIGNATURE_BYTES];
    size_t head_size = 0;
    status = envelope_seal_around(identity, ENVELOPE_KIND_ROUND_AVERAGE, round, encoding_size, digest, head,
                                  &head_size, signature, error);
    if (status != SPIRT_OK) return status;
    /* Under TRANSIENT_PREFIX spirt:pub: (spirt train loads the module so)
     * the publication stays out of the AOF: a restarted peer publishes the
     * round again. */
    const char *argv[] = {"SPIRT.TWRAP", published_key, average_key, "PREFIX", (const char *)head,
                          "SUFFIX", (const char *)signature, "DIGEST", hex};
    size_t lengths[] = {11, strlen(published_key), strlen(average_key), 6, head_size,
                        6, ENVELOPE_SIGNATURE_BYTES, 6, SPIRT_DIGEST_HEX_BYTES};
    status = store_command_argv(db, 9, argv, lengths, &reply, error);
    if (status != SPIRT_OK) return spirt_error_prefix(error, "storing %s", published_key);
    *envelope_size = head_size + encoding_size + ENVELOPE_SIGNATURE_BYTES;
    int stored = reply->type == STORE_REPLY_INTEGER && (size_t)reply->integer == *envelope_size;
    store_reply_free(reply);
    if (!stored) return spirt_error_set(error, SPIRT_ERR_PROTOCOL, "SPIRT.TWRAP %s: unexpected reply", published_key);
    return SPIRT_OK;
}

/* The function's result: {"bytes", "attack": null or the attack's name}. */
static json_t *publish_result(size_t envelope_size, const AttackConfig *attack) {
    return json_pack("{s:I, s:o}", "bytes", (json_int_t)envelope_size, "attack",
                     attack->kind != ATTACK_NONE ? json_string(attack_kind_name(attack->kind)) : json_null());
}

int fn_publish(FnContext *context, const json_t *event, json_t **result, SpirtError *error) {
    FnEvent parsed;
    StoreConn *db;
    const RunConfig *config;
    int status = fn_begin(context, event, 1, &parsed, &db, &config, error);
    if (status != SPIRT_OK) return status;
    const Identity *identity = fn_identity(context, event, error);
    if (identity == NULL) return error->code;
    if (strcmp(identity->peer_id, parsed.peer_id) != 0)
        return spirt_error_set(error, SPIRT_ERR_AUTH, "the identity is %s's, not %s's", identity->peer_id, parsed.peer_id);

    const AttackConfig *attack = &config->attack;
    if (!attack_publishes(attack)) {
        /* A silent Byzantine peer: alive, heartbeat on, and nothing for
         * the others to read. Exchange stops waiting for it once it has
         * missed a few rounds (docs/robustness.md). */
        *result = json_pack("{s:i, s:s}", "bytes", 0, "attack", attack_kind_name(attack->kind));
        return SPIRT_OK;
    }
    if (attack->kind == ATTACK_NONE || attack_poisons_labels(attack)) {
        /* Honest (a label flipper's poison is already in its gradients). */
        size_t envelope_size = 0;
        if ((status = publish_in_database(db, identity, parsed.round, &envelope_size, error)) != SPIRT_OK) return status;
        *result = publish_result(envelope_size, attack);
        return SPIRT_OK;
    }

    char key[KEY_MAX];
    Tensor *average = NULL;
    if ((status = store_tensor_get(db, key_round_average(key, parsed.round), &average, error)) != SPIRT_OK)
        return spirt_error_prefix(error, "reading %s", key);
    /* A Byzantine peer's vector, crafted from its own average (and, for an
     * omniscient attack, the honest peers' publications). */
    uint64_t noise_seed = config->seed ^ (parsed.round * 0x9e3779b97f4a7c15ull);
    for (const char *c = parsed.peer_id; *c; c++) noise_seed = noise_seed * 131 + (unsigned char)*c;
    TensorShape shape;
    Tensor *published = tensor_shape_vector(&shape, attack_vector_count(attack, average->count), error) == SPIRT_OK
                            ? tensor_create(&shape, error)
                            : NULL;
    Tensor *honest[RUN_MAX_PEERS] = {0};
    size_t honest_count = 0;
    if (published && attack_is_omniscient(attack))
        honest_count = read_honest_vectors(context, db, config, parsed.round, average->count, honest, RUN_MAX_PEERS);
    const float *honest_values[RUN_MAX_PEERS];
    for (size_t i = 0; i < honest_count; i++) honest_values[i] = honest[i]->data;
    size_t n = peer_count(db);
    size_t f = config->byzantine_count ? config->byzantine_count : 1;
    if (published == NULL)
        status = error->code;
    else if (attack_is_omniscient(attack) && honest_count == 0)
        /* Nothing to imitate this round: behave honestly rather than
         * publish nothing (a silent peer is another experiment). */
        memcpy(published->data, average->data, average->count * sizeof(float));
    else
        status = attack_craft(attack, average->data, honest_values, honest_count, average->count, n, f, noise_seed,
                              published->data, error);
    for (size_t i = 0; i < honest_count; i++) tensor_free(honest[i]);
    /* Keep the vector for our own aggregate (see aggregate.c): a Byzantine
     * peer aggregates what the honest peers aggregate. */
    if (status == SPIRT_OK && attack_publication_valid(attack))
        status = store_tensor_set(db, key_round_sent(key, parsed.round), &published->shape, published->data, error);
    size_t payload_size = 0, envelope_size = 0;
    /* No inner digest: the envelope's signature covers the payload. */
    unsigned char *payload = status == SPIRT_OK ? tensor_encode_without_digest(published, &payload_size, error) : NULL;
    unsigned char *envelope = payload ? envelope_seal(identity, ENVELOPE_KIND_ROUND_AVERAGE, parsed.round, payload,
                                                      payload_size, &envelope_size, error)
                                      : NULL;
    /* Garbage: bytes as long as the real envelope, none of them meaningful. */
    if (envelope && attack_publishes_garbage(attack)) attack_fill_garbage(noise_seed, envelope, envelope_size);
    if (envelope) {
        /* A plain string the others GET. SPIRT.SET leaves it out of the AOF
         * when the module takes TRANSIENT_PREFIX spirt:pub: (spirt train
         * does): a restarted peer publishes the round again. */
        key_published(key, parsed.round);
        const char *argv[] = {"SPIRT.SET", key, (const char *)envelope};
        size_t lengths[] = {9, strlen(key), envelope_size};
        status = store_command_argv(db, 3, argv, lengths, NULL, error);
    } else if (status == SPIRT_OK) {
        status = error->code;
    }
    free(payload);
    free(envelope);
    tensor_free(published);
    tensor_free(average);
    if (status != SPIRT_OK) return status;
    *result = publish_result(envelope_size, attack);
    return SPIRT_OK;
}
