/* test_functions.c -- the round's functions against real databases.
 *
 * Three peers, each with its own redis-server and the module, prepared with
 * a small shard of the real Fashion-MNIST data. Every function is invoked as
 * a worker would (fn_invoke) and its effect checked against a computation
 * made here, independently: gradients recomputed from the examples the
 * function reports, averages and medians in double, the SGD step by hand,
 * envelopes opened with the public key. Exchange is also fed every kind of
 * bad publication, and peers that are silent, dead or unreachable.
 * SPIRT_TEST_LABELS: db */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis_fixture.h"
#include "spirt/attack.h"
#include "spirt/clock.h"
#include "spirt/crypto.h"
#include "spirt/fn.h"
#include "spirt/keys.h"
#include "spirt/nn.h"
#include "spirt/peer.h"
#include "spirt/store.h"
#include "test.h"

enum { PEERS = 3, BATCH = 16, PER_ROUND = 2 };

typedef struct TestPeer {
    TestRedis server;
    char id[24];
    char address[64];
    char key_path[600];
    Identity identity;
    StoreConn *conn;
    FnContext *context;
} TestPeer;

static TestPeer peers[PEERS];

static json_t *event_for(int peer, uint64_t round) {
    return json_pack("{s:{s:s, s:s}, s:I}", "peer", "id", peers[peer].id, "db", peers[peer].address, "round",
                     (json_int_t)round);
}

static json_t *invoke(int peer, const char *name, json_t *event, int expect_ok) {
    SpirtError error;
    json_t *result = NULL;
    int status = fn_invoke(peers[peer].context, name, event, &result, &error);
    if (expect_ok) CHECKF(status == SPIRT_OK, "%s on %s: %s", name, peers[peer].id, error.message);
    json_decref(event);
    return result;
}

static int setup(void) {
    json_t *list = json_array();
    for (int i = 0; i < PEERS; i++) {
        TestPeer *peer = &peers[i];
        snprintf(peer->id, sizeof(peer->id), "peer-%d", i);
        TestRedisOptions options = {.load_module = 1};
        if (test_redis_start(&peer->server, &options) != 0) return -1;
        snprintf(peer->address, sizeof(peer->address), "127.0.0.1:%d", peer->server.port);
        unsigned char seed[32] = {(unsigned char)(i + 1)};
        identity_from_seed(&peer->identity, peer->id, seed, NULL);
        char name[32];
        snprintf(name, sizeof(name), "%s.key", peer->id);
        test_temp_path(peer->key_path, sizeof(peer->key_path), name);
        identity_save(&peer->identity, peer->key_path, NULL);
        char hex[SPIRT_PUBLIC_KEY_HEX_SIZE];
        identity_public_hex(&peer->identity, hex);
        json_array_append_new(list, json_pack("{s:s, s:s, s:s}", "id", peer->id, "address", peer->address,
                                              "public_key", hex));
    }
    for (int i = 0; i < PEERS; i++) {
        TestPeer *peer = &peers[i];
        SpirtError error;
        peer->conn = store_connect_address(peer->address, NULL, &error);
        /* Small shards (3000 examples each) keep the test quick; sgd makes
         * the update easy to check by hand. */
        json_t *config = json_pack(
            "{s:s, s:O, s:{s:s, s:i, s:i, s:i, s:i, s:{s:s, s:f}, s:s, s:f, s:i, s:f, s:i, s:i, s:i, s:i}, "
            "s:{s:s, s:s, s:i, s:i, s:i, s:i}}",
            "peer_id", peer->id, "peers", list, "run", "model", "logreg", "batch_size", BATCH, "batches_per_round",
            PER_ROUND, "rounds", 1000, "seed", 7, "optimizer", "kind", "sgd", "lr", 0.1, "aggregator", "median",
            "exchange_wait_seconds", 2.0, "silent_after_rounds", 2, "silent_wait_seconds", 0.2, "heartbeat_ttl_ms",
            400, "dead_after_ms", 300, "keep_rounds", 2, "checkpoint_every", 1, "data",
            "source", "fashion-mnist", "partition", "iid", "shard", i, "shards", 20, "validation", 100, "seed", 7);
        int status = peer->conn ? peer_prepare_database(peer->conn, config, NULL, &error) : error.code;
        json_decref(config);
        if (status != SPIRT_OK) {
            fprintf(stderr, "prepare %s: %s\n", peer->id, error.message);
            return -1;
        }
        FnContextOptions options = {.identity_path = peer->key_path};
        peer->context = fn_context_create(&options, &error);
        fn_write_heartbeat(peer->conn, 0, 60000, NULL);
    }
    json_decref(list);
    return 0;
}

static void teardown(void) {
    for (int i = 0; i < PEERS; i++) {
        fn_context_free(peers[i].context);
        store_free(peers[i].conn);
        test_redis_stop(&peers[i].server);
    }
}

static Tensor *get_tensor(int peer, const char *key) {
    Tensor *tensor = NULL;
    SpirtError error;
    if (store_tensor_get(peers[peer].conn, key, &tensor, &error) != SPIRT_OK)
        fprintf(stderr, "reading %s: %s\n", key, error.message);
    return tensor;
}

/* --- compute_gradients --- */

static void test_gradients(void) {
    test_begin("compute_gradients: the gradient of the examples it reports, each example once per epoch");
    Tensor *images = get_tensor(0, KEY_TRAIN_IMAGES), *labels = get_tensor(0, KEY_TRAIN_LABELS);
    Tensor *params = get_tensor(0, KEY_PARAMS);
    CHECK(images && labels && params && labels->count == 2900);
    if (!images || !labels || !params) return;
    NnModel *model = nn_model_create(NN_LOGREG, BATCH, NULL);
    nn_model_load_params(model, params->data, params->count, NULL);

    size_t per_epoch = labels->count / BATCH; /* 181 minibatches */
    unsigned char *seen = calloc(labels->count, 1);
    int mismatches = 0, checked = 0;
    for (size_t global = 0; global < per_epoch; global++) {
        uint64_t round = global / PER_ROUND;
        unsigned batch = (unsigned)(global % PER_ROUND);
        json_t *event = event_for(0, round);
        json_object_set_new(event, "batch", json_integer(batch));
        json_object_set_new(event, "report_examples", json_true());
        json_t *result = invoke(0, "compute_gradients", event, 1);
        json_t *examples = json_object_get(result, "examples");
        CHECK(json_array_size(examples) == BATCH);
        for (size_t k = 0; k < json_array_size(examples); k++) seen[json_integer_value(json_array_get(examples, k))]++;
        /* Every tenth: recompute the gradient here from those examples. */
        if (global % 10 == 0 && json_array_size(examples) == BATCH) {
            float batch_images[BATCH * NN_INPUT_FEATURES];
            uint8_t batch_labels[BATCH];
            for (size_t k = 0; k < BATCH; k++) {
                size_t example = (size_t)json_integer_value(json_array_get(examples, k));
                memcpy(batch_images + k * NN_INPUT_FEATURES, images->data + example * NN_INPUT_FEATURES,
                       NN_INPUT_FEATURES * sizeof(float));
                batch_labels[k] = (uint8_t)labels->data[example];
            }
            float loss;
            nn_model_zero_grads(model);
            nn_model_forward(model, batch_images, batch_labels, BATCH, &loss, NULL, NULL);
            nn_model_backward(model, NULL);
            char key[KEY_MAX];
            Tensor *stored = get_tensor(0, key_round_gradient(key, round, batch));
            checked++;
            if (!stored || memcmp(stored->data, nn_model_grads(model), stored->count * sizeof(float)) != 0) mismatches++;
            CHECK_NEAR(json_number_value(json_object_get(result, "loss")), loss, 1e-6);
            tensor_free(stored);
        }
        json_decref(result);
    }
    CHECKF(mismatches == 0, "%d of %d gradients differ from the recomputation", mismatches, checked);
    size_t once = 0, never = 0;
    for (size_t i = 0; i < labels->count; i++) {
        once += seen[i] == 1;
        never += seen[i] == 0;
    }
    /* 181 x 16 = 2896 of 2900 examples: each used once, 4 left for later. */
    CHECKF(once == per_epoch * BATCH && never == labels->count - per_epoch * BATCH, "once %zu never %zu", once, never);

    /* The same invocation again writes the same bits (a retry is harmless). */
    char key[KEY_MAX];
    Tensor *before = get_tensor(0, key_round_gradient(key, 0, 1));
    json_t *event = event_for(0, 0);
    json_object_set_new(event, "batch", json_integer(1));
    json_decref(invoke(0, "compute_gradients", event, 1));
    Tensor *after = get_tensor(0, key);
    CHECK(before && after && memcmp(before->data, after->data, before->count * sizeof(float)) == 0);
    tensor_free(before);
    tensor_free(after);

    event = event_for(0, 0);
    json_object_set_new(event, "batch", json_integer(PER_ROUND));
    SpirtError error;
    json_t *result = NULL;
    CHECK_ERROR(fn_invoke(peers[0].context, "compute_gradients", event, &result, &error), SPIRT_ERR_INVALID, &error,
                "out of range");
    json_decref(event);
    free(seen);
    nn_model_free(model);
    tensor_free(images);
    tensor_free(labels);
    tensor_free(params);
}

/* Runs gradients + average + publish for `round` on every peer. */
static void prepare_round(uint64_t round) {
    for (int p = 0; p < PEERS; p++) {
        for (unsigned b = 0; b < PER_ROUND; b++) {
            json_t *event = event_for(p, round);
            json_object_set_new(event, "batch", json_integer(b));
            json_decref(invoke(p, "compute_gradients", event, 1));
        }
        json_decref(invoke(p, "average", event_for(p, round), 1));
        json_decref(invoke(p, "publish", event_for(p, round), 1));
    }
}

static void test_average_and_publish(void) {
    test_begin("average and publish: an in-database mean, signed for the others");
    prepare_round(100);
    char key[KEY_MAX];
    Tensor *g0 = get_tensor(1, key_round_gradient(key, 100, 0));
    Tensor *g1 = get_tensor(1, key_round_gradient(key, 100, 1));
    Tensor *average = get_tensor(1, key_round_average(key, 100));
    CHECK(g0 && g1 && average);
    if (g0 && g1 && average) {
        double worst = 0;
        for (size_t i = 0; i < average->count; i++) {
            double expected = ((double)g0->data[i] + (double)g1->data[i]) / 2.0;
            double difference = fabs(expected - average->data[i]);
            if (difference > worst) worst = difference;
        }
        CHECKF(worst < 1e-7, "largest difference %g", worst);
    }
    /* The publication opens with peer-1's public key and holds the average. */
    char *envelope = NULL;
    size_t size = 0;
    CHECK(store_get(peers[1].conn, key_published(key, 100), &envelope, &size, NULL) == SPIRT_OK);
    Identity public_only;
    char hex[SPIRT_PUBLIC_KEY_HEX_SIZE];
    identity_public_hex(&peers[1].identity, hex);
    identity_from_public_hex(&public_only, "peer-1", hex, NULL);
    EnvelopeContents contents;
    SpirtError error;
    CHECK_OK(envelope_open((unsigned char *)envelope, size, &public_only, ENVELOPE_KIND_ROUND_AVERAGE, 100, &contents,
                           &error),
             &error);
    Tensor *published = tensor_decode_authenticated(contents.payload, contents.payload_size, "publication", &error);
    CHECK(published && average && memcmp(published->data, average->data, average->count * sizeof(float)) == 0);
    tensor_free(published);
    free(envelope);

    /* Gradients that failed are left out of the average. */
    json_t *event = event_for(1, 100);
    json_object_set_new(event, "gradients", json_pack("[{s:i, s:b}, {s:i, s:f, s:i, s:i}]", "batch", 0, "ok", 0,
                                                      "batch", 1, "loss", 1.5, "correct", 3, "count", 16));
    json_t *result = invoke(1, "average", event, 1);
    CHECK(json_integer_value(json_object_get(result, "batches")) == 1);
    json_decref(result);
    Tensor *only_one = get_tensor(1, key_round_average(key, 100));
    CHECK(only_one && g1 && memcmp(only_one->data, g1->data, g1->count * sizeof(float)) == 0);
    tensor_free(only_one);
    event = event_for(1, 100);
    json_object_set_new(event, "gradients", json_pack("[{s:i, s:b}]", "batch", 0, "ok", 0));
    result = NULL;
    CHECK_ERROR(fn_invoke(peers[1].context, "average", event, &result, &error), SPIRT_ERR_PRECONDITION, &error,
                "no gradient");
    json_decref(event);
    tensor_free(g0);
    tensor_free(g1);
    tensor_free(average);
}

static int contains(const json_t *list, const char *id) {
    size_t index;
    const json_t *item;
    json_array_foreach((json_t *)list, index, item) {
        const char *text = json_is_string(item) ? json_string_value(item) : json_string_value(json_object_get(item, "peer"));
        if (text && strcmp(text, id) == 0) return 1;
    }
    return 0;
}

static const char *reason_of(const json_t *list, const char *id) {
    size_t index;
    const json_t *item;
    json_array_foreach((json_t *)list, index, item) if (strcmp(json_string_value(json_object_get(item, "peer")), id) == 0)
        return json_string_value(json_object_get(item, "reason"));
    return "";
}

static void test_exchange_aggregate_update(void) {
    test_begin("exchange, aggregate, update: verified inputs, a median, one SGD step");
    prepare_round(101);
    json_t *event = event_for(0, 101);
    json_t *exchange = invoke(0, "exchange", event, 1);
    json_t *received = json_object_get(exchange, "received");
    CHECK(json_array_size(received) == 2 && contains(received, "peer-1") && contains(received, "peer-2"));
    char key[KEY_MAX];
    Tensor *inputs[PEERS];
    inputs[0] = get_tensor(0, key_round_average(key, 101));
    inputs[1] = get_tensor(0, key_round_received(key, 101, "peer-1"));
    inputs[2] = get_tensor(0, key_round_received(key, 101, "peer-2"));
    Tensor *theirs = get_tensor(1, key_round_average(key, 101));
    CHECK(inputs[1] && theirs && memcmp(inputs[1]->data, theirs->data, theirs->count * sizeof(float)) == 0);
    tensor_free(theirs);

    event = event_for(0, 101);
    json_object_set(event, "received", received);
    json_t *aggregate = invoke(0, "aggregate", event, 1);
    CHECK(strcmp(json_string_value(json_object_get(aggregate, "rule")), "median") == 0);
    CHECK(json_is_null(json_object_get(aggregate, "fallback")));
    Tensor *median = get_tensor(0, key_round_aggregate(key, 101));
    Tensor *before = get_tensor(0, KEY_PARAMS);
    int median_ok = median && inputs[0] && inputs[1] && inputs[2];
    for (size_t i = 0; median_ok && i < median->count; i++) {
        float a = inputs[0]->data[i], b = inputs[1]->data[i], c = inputs[2]->data[i];
        float middle = fmaxf(fminf(a, b), fminf(fmaxf(a, b), c));
        if (middle != median->data[i]) median_ok = 0;
    }
    CHECK(median_ok);

    /* A rule whose precondition three peers cannot meet falls back. */
    event = event_for(0, 101);
    json_object_set(event, "received", received);
    json_object_set_new(event, "aggregator", json_string("krum:f=1"));
    json_t *fallback = invoke(0, "aggregate", event, 1);
    CHECK(strcmp(json_string_value(json_object_get(fallback, "rule")), "median") == 0 &&
          strstr(json_string_value(json_object_get(fallback, "fallback")), "2f + 3"));
    json_decref(fallback);

    json_t *update = invoke(0, "update", event_for(0, 101), 1);
    CHECK(json_is_true(json_object_get(update, "applied")));
    Tensor *after = get_tensor(0, KEY_PARAMS);
    double worst = 0;
    for (size_t i = 0; after && before && median && i < after->count; i++) {
        double expected = (double)before->data[i] - 0.1 * (double)median->data[i];
        double difference = fabs(expected - after->data[i]);
        if (difference > worst) worst = difference;
    }
    CHECKF(after && worst < 1e-6, "largest difference from p - lr * g: %g", worst);
    char digest[SPIRT_DIGEST_HEX_SIZE];
    if (after) tensor_digest_hex(after->data, after->count, digest);
    CHECK(after && strcmp(json_string_value(json_object_get(update, "digest")), digest) == 0);
    json_decref(update);

    /* Again: nothing happens. */
    update = invoke(0, "update", event_for(0, 101), 1);
    CHECK(json_is_false(json_object_get(update, "applied")));
    Tensor *again = get_tensor(0, KEY_PARAMS);
    CHECK(again && after && memcmp(again->data, after->data, after->count * sizeof(float)) == 0);
    json_decref(update);

    /* keep_rounds = 2: round 101's update deleted round 99's keys; 100's stay. */
    int exists = 1;
    store_exists(peers[0].conn, key_round_average(key, 99), &exists, NULL);
    int kept = 0;
    store_exists(peers[0].conn, key_round_average(key, 100), &kept, NULL);
    CHECK(kept);
    store_tensor_set(peers[0].conn, key_round_average(key, 99), &after->shape, after->data, NULL);
    json_decref(invoke(0, "update", event_for(0, 101), 1));
    store_exists(peers[0].conn, key_round_average(key, 99), &exists, NULL);
    CHECK(!exists);

    for (int i = 0; i < PEERS; i++) tensor_free(inputs[i]);
    tensor_free(median);
    tensor_free(before);
    tensor_free(after);
    tensor_free(again);
    json_decref(aggregate);
    json_decref(exchange);
}

/* Writes `bytes` as the publication of `round` in peer `into`'s database. */
static void put_publication(int into, uint64_t round, const void *bytes, size_t size) {
    char key[KEY_MAX];
    store_set(peers[into].conn, key_published(key, round), bytes, size, NULL);
}

static void publish_tensor_as(int into, const Identity *signer, uint64_t round, const float *values, size_t count) {
    Tensor *tensor = tensor_from_vector(values, count, NULL);
    size_t payload_size, size;
    unsigned char *payload = tensor_encode(tensor, &payload_size, NULL);
    unsigned char *envelope = envelope_seal(signer, ENVELOPE_KIND_ROUND_AVERAGE, round, payload, payload_size, &size, NULL);
    put_publication(into, round, envelope, size);
    free(envelope);
    free(payload);
    tensor_free(tensor);
}

static void set_config_field(int peer, const char *field, json_t *value);

/* Both ways of reading a publication: our database fetching the payload
 * (SPIRT.FETCH, the default) and the function reading whole envelopes (what
 * a TLS peer gets). */
static void test_exchange_refusals(int in_database) {
    test_begin(in_database ? "exchange (SPIRT.FETCH): bad publications are left out, with the reason"
                           : "exchange (whole envelopes): bad publications are left out, with the reason");
    set_config_field(0, "exchange_in_database", json_boolean(in_database));
    size_t count = nn_model_kind_param_count(NN_LOGREG);
    float *values = calloc(count + 10, sizeof(float));
    struct {
        const char *what, *reason;
    } cases[] = {{"garbage", "bad magic"},       {"wrong signer", "bad signature"}, {"wrong round", "round"},
                 {"wrong shape", "the model has"}, {"nan", "not finite"},           {"truncated", "does not match"}};
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        uint64_t round = (in_database ? 200 : 220) + k;
        if (k == 0) {
            char garbage[300];
            memset(garbage, 'x', sizeof(garbage));
            put_publication(1, round, garbage, sizeof(garbage));
        } else if (k == 1) {
            Identity impostor = peers[2].identity; /* peer-2's key, claiming to be peer-1 */
            snprintf(impostor.peer_id, sizeof(impostor.peer_id), "peer-1");
            publish_tensor_as(1, &impostor, round, values, count);
        } else if (k == 2) {
            publish_tensor_as(1, &peers[1].identity, round + 50, values, count);
            char from[KEY_MAX], to[KEY_MAX];
            store_command(peers[1].conn, NULL, NULL, "RENAME %s %s", key_published(from, round + 50), key_published(to, round));
        } else if (k == 3) {
            publish_tensor_as(1, &peers[1].identity, round, values, count + 10);
        } else if (k == 4) {
            values[17] = NAN;
            publish_tensor_as(1, &peers[1].identity, round, values, count);
            values[17] = 0;
        } else {
            publish_tensor_as(1, &peers[1].identity, round, values, count);
            char key[KEY_MAX];
            char *envelope = NULL;
            size_t size = 0;
            store_get(peers[1].conn, key_published(key, round), &envelope, &size, NULL);
            put_publication(1, round, envelope, size - 5);
            free(envelope);
        }
        /* peer-2 publishes correctly each time, and is received. */
        publish_tensor_as(2, &peers[2].identity, round, values, count);
        char key[KEY_MAX];
        json_t *event = event_for(0, round);
        json_object_set_new(event, "wait_seconds", json_real(1.0));
        json_t *result = invoke(0, "exchange", event, 1);
        json_t *rejected = json_object_get(result, "rejected");
        CHECKF(contains(rejected, "peer-1") && strstr(reason_of(rejected, "peer-1"), cases[k].reason),
               "%s: rejected with '%s'", cases[k].what, reason_of(rejected, "peer-1"));
        int exists = 1;
        store_exists(peers[0].conn, key_round_received(key, round, "peer-1"), &exists, NULL);
        CHECKF(!exists, "%s: stored anyway", cases[k].what);
        CHECKF(contains(json_object_get(result, "received"), "peer-2"), "%s: the good one was not received",
               cases[k].what);
        json_decref(result);
    }
    free(values);
}

static void test_exchange_waiting(void) {
    test_begin("exchange: a silent peer costs the wait, a dead one nothing, an unreachable one its time to live");
    char key[KEY_MAX];
    /* Nobody published round 300; peer-1 is alive, peer-2's heartbeat is gone. */
    store_del(peers[2].conn, KEY_HEARTBEAT, NULL, NULL);
    json_t *event = event_for(0, 300);
    json_object_set_new(event, "wait_seconds", json_real(1.5));
    double start = clock_monotonic_ms();
    json_t *result = invoke(0, "exchange", event, 1);
    double elapsed = clock_monotonic_ms() - start;
    json_t *missing = json_object_get(result, "missing");
    CHECKF(strstr(reason_of(missing, "peer-1"), "deadline") != NULL, "peer-1: %s", reason_of(missing, "peer-1"));
    CHECKF(strstr(reason_of(missing, "peer-2"), "no heartbeat") != NULL, "peer-2: %s", reason_of(missing, "peer-2"));
    CHECKF(elapsed >= 1400, "returned after %.0f ms, before the wait ended", elapsed);
    json_decref(result);

    /* With the wait long and only the dead peer missing, exchange returns
     * as soon as the live peer has published. */
    prepare_round(301);
    store_del(peers[2].conn, KEY_HEARTBEAT, NULL, NULL);
    store_del(peers[2].conn, key_published(key, 301), NULL, NULL);
    event = event_for(0, 301);
    json_object_set_new(event, "wait_seconds", json_real(30.0));
    start = clock_monotonic_ms();
    result = invoke(0, "exchange", event, 1);
    elapsed = clock_monotonic_ms() - start;
    CHECK(contains(json_object_get(result, "received"), "peer-1"));
    CHECKF(elapsed < 5000, "took %.0f ms with a 30 s wait", elapsed);
    json_decref(result);
    fn_write_heartbeat(peers[2].conn, 0, 60000, NULL);
}

static char peer1_reason[256];

/* Runs peer-0's exchange of `round` with a wait of wait_seconds; returns
 * its result (owned) and sets *reason to why peer-1 was missing ("" if it
 * was not). */
static json_t *exchange_round(uint64_t round, double wait_seconds, const char **reason) {
    json_t *event = event_for(0, round);
    json_object_set_new(event, "wait_seconds", json_real(wait_seconds));
    json_t *result = invoke(0, "exchange", event, 1);
    snprintf(peer1_reason, sizeof(peer1_reason), "%s", reason_of(json_object_get(result, "missing"), "peer-1"));
    *reason = peer1_reason;
    return result;
}

static void test_exchange_silent_peer(void) {
    test_begin("exchange: a live peer silent for silent_after_rounds (2) exchanges is waited for only briefly");
    size_t count = nn_model_kind_param_count(NN_LOGREG);
    float *values = calloc(count + 1, sizeof(float)); /* + 1: a wrong-size publication below */
    const double wait = 1.0; /* the full wait; silent_wait_seconds is 0.2 */
    const char *reason = NULL;
    /* peer-1 stays alive (its heartbeat lives 60 s) and publishes nothing;
     * peer-2 publishes every round. */
    for (uint64_t round = 500; round < 503; round++) {
        publish_tensor_as(2, &peers[2].identity, round, values, count);
        json_t *result = exchange_round(round, wait, &reason);
        double waited = json_number_value(json_object_get(result, "waited_ms"));
        CHECK(contains(json_object_get(result, "received"), "peer-2"));
        if (round < 502) {
            CHECKF(strstr(reason, "deadline") && waited >= 0.95 * wait * 1000, "round %llu: '%s' after %.0f ms",
                   (unsigned long long)round, reason, waited);
        } else {
            /* Two missed in a row: silent now, and the wait is short. */
            CHECKF(strncmp(reason, "silent", 6) == 0 && waited < 0.8 * wait * 1000, "round %llu: '%s' after %.0f ms",
                   (unsigned long long)round, reason, waited);
        }
        json_decref(result);
    }
    /* The same round again (a retry) counts the same: still silent, not
     * one more miss. */
    json_decref(exchange_round(502, wait, &reason));
    CHECKF(strncmp(reason, "silent", 6) == 0, "retry of round 502: '%s'", reason);
    char *record = NULL;
    size_t length = 0;
    CHECK(store_hget(peers[0].conn, KEY_SILENCE, "peer-1", &record, &length, NULL) == SPIRT_OK && record &&
          strcmp(record, "502 3 2") == 0);
    free(record);

    /* A silent peer that publishes again within the short wait is received,
     * and its count is back to 0: the next miss costs the full wait. */
    publish_tensor_as(1, &peers[1].identity, 503, values, count);
    publish_tensor_as(2, &peers[2].identity, 503, values, count);
    json_t *result = exchange_round(503, wait, &reason);
    CHECK(contains(json_object_get(result, "received"), "peer-1"));
    json_decref(result);
    publish_tensor_as(2, &peers[2].identity, 504, values, count);
    json_decref(exchange_round(504, wait, &reason));
    CHECKF(strstr(reason, "deadline"), "round 504: '%s'", reason);

    /* A bad publication also resets it (refusing it costs no wait). */
    publish_tensor_as(2, &peers[2].identity, 505, values, count);
    json_decref(exchange_round(505, wait, &reason));
    publish_tensor_as(2, &peers[2].identity, 506, values, count);
    json_decref(exchange_round(506, wait, &reason));
    CHECKF(strncmp(reason, "silent", 6) == 0, "round 506: '%s'", reason);
    publish_tensor_as(1, &peers[1].identity, 507, values, count + 1);
    publish_tensor_as(2, &peers[2].identity, 507, values, count);
    result = exchange_round(507, wait, &reason);
    CHECK(contains(json_object_get(result, "rejected"), "peer-1"));
    json_decref(result);
    publish_tensor_as(2, &peers[2].identity, 508, values, count);
    json_decref(exchange_round(508, wait, &reason));
    CHECKF(strstr(reason, "deadline"), "round 508: '%s'", reason);
    free(values);
}

/* Sets one field of peer `peer`'s spirt:config (functions re-read it);
 * takes the value's reference. */
static void set_config_field(int peer, const char *field, json_t *value) {
    char *text = NULL;
    size_t length = 0;
    store_get(peers[peer].conn, KEY_CONFIG, &text, &length, NULL);
    json_t *config = text ? json_loadb(text, length, 0, NULL) : NULL;
    free(text);
    json_object_set_new(config, field, value);
    char *updated = json_dumps(config, JSON_COMPACT);
    CHECK(updated && store_set(peers[peer].conn, KEY_CONFIG, updated, strlen(updated), NULL) == SPIRT_OK);
    free(updated);
    json_decref(config);
}

/* Sets peer `peer`'s attack in its spirt:config. */
static void set_attack(int peer, const char *attack) {
    set_config_field(peer, "attack", json_string(attack));
    set_config_field(peer, "byzantine",
                     strcmp(attack, "none") == 0 ? json_array() : json_pack("[s]", peers[peer].id));
}

/* Runs exchange and a mean aggregate on `peer` for `round`; returns the
 * aggregate (owned). */
static Tensor *exchange_and_mean(int peer, uint64_t round) {
    json_t *exchange = invoke(peer, "exchange", event_for(peer, round), 1);
    json_t *event = event_for(peer, round);
    json_object_set(event, "received", json_object_get(exchange, "received"));
    json_object_set_new(event, "aggregator", json_string("mean"));
    json_decref(invoke(peer, "aggregate", event, 1));
    json_decref(exchange);
    char key[KEY_MAX];
    return get_tensor(peer, key_round_aggregate(key, round));
}

static void test_byzantine_aggregate(void) {
    test_begin("a Byzantine peer aggregates what the honest peers aggregate: what it sent, or nothing");
    char key[KEY_MAX];
    /* sign-flip: peer-2 publishes -10 x its average and aggregates that. */
    set_attack(2, "sign-flip");
    prepare_round(600);
    Tensor *average = get_tensor(2, key_round_average(key, 600));
    Tensor *sent = get_tensor(2, key_round_sent(key, 600));
    int flipped = average && sent && sent->count == average->count;
    for (size_t i = 0; flipped && i < sent->count; i++) flipped = sent->data[i] == (float)(-10.0 * average->data[i]);
    CHECK(flipped);
    Tensor *byzantine = exchange_and_mean(2, 600), *honest = exchange_and_mean(0, 600);
    /* Both aggregate {avg0, avg1, -10 avg2}, in the same order: the same bits. */
    CHECK(byzantine && honest && memcmp(byzantine->data, honest->data, honest->count * sizeof(float)) == 0);
    Tensor *a0 = get_tensor(0, key_round_average(key, 600)), *a1 = get_tensor(1, key_round_average(key, 600));
    double worst = 0;
    for (size_t i = 0; honest && a0 && a1 && sent && i < honest->count; i++) {
        double expected = ((double)a0->data[i] + (double)a1->data[i] + (double)sent->data[i]) / 3.0;
        if (fabs(expected - honest->data[i]) > worst) worst = fabs(expected - honest->data[i]);
    }
    CHECKF(honest && worst < 1e-6, "largest difference from the mean by hand: %g", worst);
    tensor_free(byzantine);
    tensor_free(honest);
    tensor_free(sent);

    /* silent: nothing sent, so its own average is not an input either. */
    set_attack(2, "silent");
    prepare_round(601);
    int exists = 1;
    store_exists(peers[2].conn, key_round_sent(key, 601), &exists, NULL);
    CHECK(!exists);
    byzantine = exchange_and_mean(2, 601);
    Tensor *b0 = get_tensor(0, key_round_average(key, 601)), *b1 = get_tensor(1, key_round_average(key, 601));
    worst = 0;
    for (size_t i = 0; byzantine && b0 && b1 && i < byzantine->count; i++) {
        double expected = ((double)b0->data[i] + (double)b1->data[i]) / 2.0;
        if (fabs(expected - byzantine->data[i]) > worst) worst = fabs(expected - byzantine->data[i]);
    }
    CHECKF(byzantine && worst < 1e-6, "largest difference from the mean of the two others: %g", worst);
    set_attack(2, "none");
    tensor_free(byzantine);
    tensor_free(average);
    tensor_free(a0);
    tensor_free(a1);
    tensor_free(b0);
    tensor_free(b1);
}

static void test_heartbeat(void) {
    test_begin("heartbeat: alive -> suspect -> dead -> alive again");
    store_del(peers[2].conn, KEY_HEARTBEAT, NULL, NULL);
    json_t *result = invoke(0, "heartbeat", event_for(0, 5), 1);
    CHECK(contains(json_object_get(result, "suspect"), "peer-2") && contains(json_object_get(result, "alive"), "peer-1"));
    json_decref(result);
    clock_sleep_ms(400); /* dead_after_ms is 300 */
    result = invoke(0, "heartbeat", event_for(0, 6), 1);
    CHECK(contains(json_object_get(result, "dead"), "peer-2"));
    json_decref(result);
    /* A dead peer is not waited for at all by exchange. */
    json_t *event = event_for(0, 400);
    json_object_set_new(event, "wait_seconds", json_real(0.3));
    result = invoke(0, "exchange", event, 1);
    CHECK(strcmp(reason_of(json_object_get(result, "missing"), "peer-2"), "dead") == 0);
    json_decref(result);
    fn_write_heartbeat(peers[2].conn, 0, 60000, NULL);
    result = invoke(0, "heartbeat", event_for(0, 7), 1);
    CHECK(contains(json_object_get(result, "alive"), "peer-2") && contains(json_object_get(result, "changed"), "peer-2"));
    json_decref(result);
}

static void push_join(int into, const Identity *signer, const char *id, const char *public_hex) {
    char payload[512];
    int length = snprintf(payload, sizeof(payload), "{\"id\":\"%s\",\"address\":\"127.0.0.1:1\",\"public_key\":\"%s\"}",
                          id, public_hex);
    size_t size;
    unsigned char *envelope = envelope_seal(signer, ENVELOPE_KIND_JOIN_REQUEST, 0, payload, (size_t)length, &size, NULL);
    const char *argv[] = {"RPUSH", KEY_INBOX, (const char *)envelope};
    size_t lengths[] = {5, strlen(KEY_INBOX), size};
    store_command_argv(peers[into].conn, 3, argv, lengths, NULL, NULL);
    free(envelope);
}

static void test_admit(void) {
    test_begin("admit: only allowed keys join");
    Identity newcomer, stranger;
    identity_generate(&newcomer, "peer-9", NULL);
    identity_generate(&stranger, "peer-8", NULL);
    char newcomer_hex[SPIRT_PUBLIC_KEY_HEX_SIZE], stranger_hex[SPIRT_PUBLIC_KEY_HEX_SIZE];
    identity_public_hex(&newcomer, newcomer_hex);
    identity_public_hex(&stranger, stranger_hex);
    store_hset(peers[0].conn, "spirt:allowed", "peer-9", newcomer_hex, strlen(newcomer_hex), NULL);
    push_join(0, &stranger, "peer-8", stranger_hex);   /* not allowed */
    Identity forger = stranger;
    snprintf(forger.peer_id, sizeof(forger.peer_id), "peer-9");
    push_join(0, &forger, "peer-9", stranger_hex);     /* allowed id, wrong key */
    push_join(0, &newcomer, "peer-9", newcomer_hex);   /* good */
    json_t *result = invoke(0, "admit", event_for(0, 10), 1);
    CHECK(json_array_size(json_object_get(result, "admitted")) == 1 &&
          contains(json_object_get(result, "admitted"), "peer-9"));
    json_t *refused = json_object_get(result, "refused");
    CHECKF(json_array_size(refused) == 2 && strstr(reason_of(refused, "peer-8"), "not in spirt:allowed"),
           "refused: %zu", json_array_size(refused));
    char *member = NULL;
    size_t length = 0;
    CHECK(store_hget(peers[0].conn, KEY_MEMBERS, "peer-9", &member, &length, NULL) == SPIRT_OK &&
          strstr(member, "\"joined_round\":11"));
    free(member);
    store_hdel(peers[0].conn, KEY_MEMBERS, "peer-9", NULL);
    json_decref(result);
}

static void test_bad_events(void) {
    test_begin("bad events are refused with the field named");
    SpirtError error;
    json_t *result = NULL;
    json_t *event = json_pack("{s:s}", "peer", "nope");
    CHECK_ERROR(fn_invoke(peers[0].context, "average", event, &result, &error), SPIRT_ERR_INVALID, &error, "'peer'");
    json_decref(event);
    event = json_pack("{s:{s:s, s:s}}", "peer", "id", "peer-0", "db", peers[0].address);
    CHECK_ERROR(fn_invoke(peers[0].context, "average", event, &result, &error), SPIRT_ERR_INVALID, &error, "'round'");
    json_decref(event);
    event = json_pack("{s:{s:s, s:s}, s:i}", "peer", "id", "peer-0", "db", "127.0.0.1:1", "round", 1);
    CHECK(fn_invoke(peers[0].context, "average", event, &result, &error) == SPIRT_ERR_IO &&
          strstr(error.message, "127.0.0.1:1"));
    json_decref(event);
    CHECK_ERROR(fn_invoke(peers[0].context, "no_such_function", NULL, &result, &error), SPIRT_ERR_NOT_FOUND, &error,
                "no function");
    event = event_for(0, 1);
    json_object_set_new(event, "aggregator", json_string("krum:x=1"));
    CHECK_ERROR(fn_invoke(peers[0].context, "aggregate", event, &result, &error), SPIRT_ERR_INVALID, &error, "'x'");
    json_decref(event);
}

int main(void) {
    if (setup() != 0) {
        teardown();
        test_check(0, __FILE__, __LINE__, "setup", "could not start the peers' databases");
        return test_finish();
    }
    test_gradients();
    test_average_and_publish();
    test_exchange_aggregate_update();
    test_exchange_refusals(1);
    test_exchange_refusals(0);
    set_config_field(0, "exchange_in_database", json_true());
    test_exchange_waiting();
    test_exchange_silent_peer();
    test_byzantine_aggregate();
    test_heartbeat();
    test_admit();
    test_bad_events();
    teardown();
    return test_finish();
}
