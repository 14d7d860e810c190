/* publish.c -- sign the round's average and expose it to the other peers.
 *
 * Event: {"peer", "round"}. Reads spirt:r:{r}:avg, wraps it (tensor_encode)
 * in an envelope signed with the peer's identity, and stores the envelope
 * under spirt:pub:{r}, which other peers' exchange functions read. Result:
 * {"bytes": envelope size, "attack": null or the attack's name}.
 *
 * A Byzantine peer (RunConfig.attack) publishes the attack's vector
 * instead. Omniscient attacks first read the round's honest publications
 * from the other peers' databases, as a real attacker could, waiting for
 * them up to the exchange wait. The protocol misbehaviours publish nothing
 * (silent), a signed vector of the wrong size or with NaN in it, or random
 * bytes in place of the envelope (garbage): what exchange must refuse. */
#include <stdlib.h>
#include <string.h>

#include "fn/fn_internal.h"
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

    char key[KEY_MAX];
    Tensor *average = NULL;
    if ((status = store_tensor_get(db, key_round_average(key, parsed.round), &average, error)) != SPIRT_OK)
        return spirt_error_prefix(error, "reading %s", key);

    const AttackConfig *attack = &config->attack;
    if (!attack_publishes(attack)) {
        /* A silent Byzantine peer: alive, heartbeat on, and nothing for
         * the others to read. Exchange stops waiting for it once it has
         * missed a few rounds (docs/robustness.md). */
        tensor_free(average);
        *result = json_pack("{s:i, s:s}", "bytes", 0, "attack", attack_kind_name(attack->kind));
        return SPIRT_OK;
    }
    Tensor *published = average;
    int crafted = attack->kind != ATTACK_NONE && !attack_poisons_labels(attack);
    uint64_t noise_seed = config->seed ^ (parsed.round * 0x9e3779b97f4a7c15ull);
    for (const char *c = parsed.peer_id; *c; c++) noise_seed = noise_seed * 131 + (unsigned char)*c;
    if (crafted) {
        TensorShape shape;
        published = tensor_shape_vector(&shape, attack_vector_count(attack, average->count), error) == SPIRT_OK
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
    }
    /* Keep the vector for our own aggregate (see aggregate.c): a Byzantine
     * peer aggregates what the honest peers aggregate. */
    if (status == SPIRT_OK && crafted && attack_publication_valid(attack))
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
    if (published != average) tensor_free(published);
    tensor_free(average);
    if (status != SPIRT_OK) return status;
    *result = json_pack("{s:I, s:o}", "bytes", (json_int_t)envelope_size, "attack",
                        attack->kind != ATTACK_NONE ? json_string(attack_kind_name(attack->kind)) : json_null());
    return SPIRT_OK;
}
