/* test_peer_start.c -- peers that start at different moments still train
 * together from round 0.
 *
 * Two `spirt peer` processes (functions inline) with their own databases,
 * on a small subset of the real Fashion-MNIST. peer-0 starts alone; while
 * peer-1 is not up, it must wait at the start barrier rather than take
 * peer-1 (reachable, but without a heartbeat yet) for a stopped peer and
 * run its rounds alone. Checked: peer-0 has completed no round 1.5 s after
 * it started; once peer-1 starts, both finish, peer-0 received peer-1's
 * average in round 0, and both hold the same model bit for bit.
 * SPIRT_TEST_LABELS: db */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis_fixture.h"
#include "spirt/clock.h"
#include "spirt/crypto.h"
#include "spirt/keys.h"
#include "spirt/store.h"
#include "spirt/tensor.h"
#include "test.h"
#include "test_process.h"

enum { PEERS = 2, ROUNDS = 5 };

static TestRedis servers[PEERS];
static char config_paths[PEERS][600], log_paths[PEERS][600];

/* Writes each peer's key and peer.json (see docs/runtime.md). */
static int write_configs(const char *dataset) {
    json_t *list = json_array();
    for (int i = 0; i < PEERS; i++) {
        char id[24], key_path[600], name[32], address[64], hex[SPIRT_PUBLIC_KEY_HEX_SIZE];
        snprintf(id, sizeof(id), "peer-%d", i);
        snprintf(name, sizeof(name), "%s.key", id);
        test_temp_path(key_path, sizeof(key_path), name);
        unsigned char seed[SPIRT_KEY_SEED_BYTES] = {(unsigned char)(40 + i)};
        Identity identity;
        if (identity_from_seed(&identity, id, seed, NULL) != SPIRT_OK || identity_save(&identity, key_path, NULL) != SPIRT_OK)
            return -1;
        identity_public_hex(&identity, hex);
        identity_wipe(&identity);
        snprintf(address, sizeof(address), "127.0.0.1:%d", servers[i].port);
        json_array_append_new(list, json_pack("{s:s, s:s, s:s}", "id", id, "address", address, "public_key", hex));
    }
    char workflow[600];
    snprintf(workflow, sizeof(workflow), "%s/workflows/round.json", SPIRT_SOURCE_DIR);
    for (int i = 0; i < PEERS; i++) {
        char id[24], key_name[40], address[64];
        snprintf(id, sizeof(id), "peer-%d", i);
        snprintf(key_name, sizeof(key_name), "%s.key", id);
        snprintf(address, sizeof(address), "127.0.0.1:%d", servers[i].port);
        json_t *config = json_pack(
            "{s:s, s:s, s:s, s:s, s:O, s:b, s:{s:s, s:i, s:i, s:i, s:i, s:i, s:{s:s, s:f}, s:s, s:f}, "
            "s:{s:s, s:s, s:i, s:i, s:i, s:i}}",
            "peer_id", id, "db", address, "identity", key_name, "workflow", workflow, "peers", list, "inline", 1,
            "run", "model", "logreg", "batch_size", 16, "batches_per_round", 1, "rounds", ROUNDS, "evaluate_every", 0,
            "seed", 5, "optimizer", "kind", "sgd", "lr", 0.1, "aggregator", "mean", "exchange_wait_seconds", 20.0,
            "data", "source", dataset, "partition", "iid", "shard", i, "shards", PEERS, "validation", 100, "seed", 5);
        char name[32];
        snprintf(name, sizeof(name), "%s.json", id);
        test_temp_path(config_paths[i], sizeof(config_paths[i]), name);
        snprintf(name, sizeof(name), "%s.log", id);
        test_temp_path(log_paths[i], sizeof(log_paths[i]), name);
        int written = json_dump_file(config, config_paths[i], JSON_INDENT(1));
        json_decref(config);
        if (written != 0) return -1;
    }
    json_decref(list);
    return 0;
}

static StoreConn *connect_to(int peer) {
    char address[64];
    snprintf(address, sizeof(address), "127.0.0.1:%d", servers[peer].port);
    return store_connect_address(address, NULL, NULL);
}

/* The `received` count of peer-0's metrics entry for round 0, or -1. */
static long long received_in_round_0(StoreConn *conn) {
    StoreReply *reply = NULL;
    long long received = -1;
    const char *argv[] = {"XRANGE", KEY_METRICS, "-", "+", "COUNT", "1"};
    if (store_command_argv(conn, 6, argv, NULL, &reply, NULL) == SPIRT_OK && reply->type == STORE_REPLY_ARRAY &&
        reply->elements == 1) {
        const StoreReply *fields = reply->element[0]->element[1];
        for (size_t k = 0; k + 1 < fields->elements; k += 2)
            if (strcmp(fields->element[k]->str, "metrics") == 0) {
                json_t *metrics = json_loads(fields->element[k + 1]->str, 0, NULL);
                if (json_integer_value(json_object_get(metrics, "round")) == 0)
                    received = json_integer_value(json_object_get(metrics, "received"));
                json_decref(metrics);
            }
    }
    store_reply_free(reply);
    return received;
}

static void test_late_start(void) {
    test_begin("a peer that starts late is waited for at the start, not left out of round 0");
    const char *first[] = {test_spirt_path(), "peer", "--config", config_paths[0], NULL};
    pid_t peer0 = test_spawn(first, log_paths[0]);
    clock_sleep_ms(1500);
    StoreConn *conn0 = connect_to(0);
    int progressed = 1;
    CHECK(conn0 && store_exists(conn0, KEY_ROUND, &progressed, NULL) == SPIRT_OK);
    CHECKF(!progressed, "peer-0 ran rounds while peer-1 was not up (see %s)", log_paths[0]);
    const char *second[] = {test_spirt_path(), "peer", "--config", config_paths[1], NULL};
    pid_t peer1 = test_spawn(second, log_paths[1]);
    CHECKF(test_wait(peer0, 120) == 0, "peer-0 failed (see %s)", log_paths[0]);
    CHECKF(test_wait(peer1, 120) == 0, "peer-1 failed (see %s)", log_paths[1]);
    StoreConn *conn1 = connect_to(1);
    long long round = -1;
    CHECK(conn0 && store_get_int(conn0, KEY_ROUND, &round, NULL) == SPIRT_OK && round == ROUNDS - 1);
    CHECKF(received_in_round_0(conn0) == 1, "peer-0 received %lld averages in round 0", received_in_round_0(conn0));
    Tensor *params0 = NULL, *params1 = NULL;
    CHECK(conn0 && store_tensor_get(conn0, KEY_PARAMS, &params0, NULL) == SPIRT_OK);
    CHECK(conn1 && store_tensor_get(conn1, KEY_PARAMS, &params1, NULL) == SPIRT_OK);
    CHECK(params0 && params1 && params0->count == params1->count &&
          memcmp(params0->data, params1->data, params0->count * sizeof(float)) == 0);
    tensor_free(params0);
    tensor_free(params1);
    store_free(conn0);
    store_free(conn1);
}

int main(void) {
    char dataset[600];
    test_temp_path(dataset, sizeof(dataset), "fashion-small");
    int ready = test_write_small_dataset(dataset, 3000, 100) == 0;
    for (int i = 0; ready && i < PEERS; i++) {
        TestRedisOptions options = {.load_module = 1};
        ready = test_redis_start(&servers[i], &options) == 0;
    }
    if (ready) ready = write_configs(dataset) == 0;
    if (ready)
        test_late_start();
    else
        test_check(0, __FILE__, __LINE__, "setup", "could not start the databases or write the configurations");
    for (int i = 0; i < PEERS; i++) test_redis_stop(&servers[i]);
    return test_finish();
}
