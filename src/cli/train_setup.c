/* train_setup.c -- `spirt train` sets up a run: the run folder, and for
 * every peer its database, identity, data shard, workers and peer process
 * (see cmd_train.c for the whole job and train.h for the state). */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/train.h"
#include "spirt/keys.h"
#include "spirt/rng.h"

int train_make_dir(const char *path, SpirtError *error) {
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        return spirt_error_set(error, SPIRT_ERR_IO, "cannot create %s: %s", path, strerror(errno));
    return SPIRT_OK;
}

int train_write_json(const char *path, json_t *json, SpirtError *error) {
    if (json_dump_file(json, path, JSON_INDENT(2) | JSON_SORT_KEYS) != 0)
        return spirt_error_set(error, SPIRT_ERR_IO, "cannot write %s", path);
    return SPIRT_OK;
}

int train_prepare_run_dir(Run *run, SpirtError *error) {
    if (run->options.out) {
        snprintf(run->dir, sizeof(run->dir), "%s", run->options.out);
    } else {
        time_t now = time(NULL);
        struct tm local;
        localtime_r(&now, &local);
        char stamp[32];
        strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", &local);
        if (train_make_dir("runs", error) != SPIRT_OK) return error->code;
        snprintf(run->dir, sizeof(run->dir), "runs/%s-%ld", stamp, (long)getpid());
    }
    if (train_make_dir(run->dir, error) != SPIRT_OK) return error->code;
    /* A folder with a previous run in it would hand its databases' state
     * (old rounds, old members' addresses) to this run's servers. */
    DIR *folder = opendir(run->dir);
    struct dirent *entry;
    int empty = 1;
    while (folder && (entry = readdir(folder)) != NULL)
        if (strcmp(entry->d_name, ".") != 0 && strcmp(entry->d_name, "..") != 0) empty = 0;
    if (folder) closedir(folder);
    if (!empty)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "run folder %s is not empty (choose another --out)", run->dir);
    /* Absolute, since children run with other working folders. */
    char absolute[1024];
    if (realpath(run->dir, absolute)) snprintf(run->dir, sizeof(run->dir), "%s", absolute);
    return SPIRT_OK;
}

static void derive_seed(uint64_t seed, int peer, unsigned char out[SPIRT_KEY_SEED_BYTES]) {
    SpirtRng rng;
    rng_init_stream(&rng, seed, 0x6b657973ull /* "keys" */ + (uint64_t)peer);
    for (int i = 0; i < SPIRT_KEY_SEED_BYTES; i += 8) {
        uint64_t word = rng_next_u64(&rng);
        memcpy(out + i, &word, 8);
    }
}

/* The rule every peer runs: --aggregator, with f from --f, else from the
 * spec's f=, else the number of Byzantine peers; --pre nnm mixes first. */
AggConfig train_effective_aggregator(const TrainOptions *o) {
    AggConfig aggregator;
    run_parse_aggregator(o->aggregator, &aggregator, NULL);
    if (o->f >= 0) aggregator.f = (size_t)o->f;
    else if (strstr(o->aggregator, "f=") == NULL) aggregator.f = (size_t)o->byzantine;
    if (o->pre && strcmp(o->pre, "nnm") == 0) aggregator.pre_nnm = 1;
    return aggregator;
}

static json_t *run_json(const Run *run, const PeerState *peer, const AttackConfig *attack) {
    const TrainOptions *o = &run->options;
    RunConfig config;
    run_config_default(&config);
    snprintf(config.peer_id, sizeof(config.peer_id), "%s", peer->id);
    nn_model_kind_parse(o->model, &config.model, NULL);
    config.batch_size = (size_t)o->batch_size;
    config.batches_per_round = (size_t)o->batches_per_round;
    config.seed = o->seed;
    config.rounds = o->rounds;
    config.evaluate_every = (uint64_t)o->evaluate_every;
    OptimConfig optimizer = optim_config_default(OPTIM_SGD, (float)o->lr);
    optim_kind_parse(o->optimizer, &optimizer, NULL);
    OptimConfig full = optim_config_default(optimizer.kind, (float)o->lr);
    full.nesterov = optimizer.nesterov;
    full.decoupled = optimizer.decoupled;
    full.momentum = (float)o->momentum;
    full.weight_decay = (float)o->weight_decay;
    config.optimizer = full;
    config.aggregator = train_effective_aggregator(o);
    config.attack = peer->byzantine ? *attack : attack_config_default(ATTACK_NONE);
    if (peer->byzantine) {
        for (int i = 0; i < o->peers; i++)
            if (run->peers[i].byzantine)
                snprintf(config.byzantine[config.byzantine_count++], sizeof(config.byzantine[0]), "%s", run->peers[i].id);
    }
    config.exchange_wait_seconds = o->exchange_wait;
    config.silent_after_rounds = (uint64_t)o->silent_after;
    config.silent_wait_seconds = o->silent_wait;
    config.cosine_schedule = strcmp(o->schedule, "cosine") == 0;
    json_t *json = run_config_to_json(&config);
    /* The peer fills these from its shard. */
    json_object_del(json, "train_count");
    json_object_del(json, "validation_count");
    json_object_del(json, "data_digest");
    return json;
}

static json_t *data_spec(const Run *run, int shard) {
    const TrainOptions *o = &run->options;
    return json_pack("{s:s, s:s, s:i, s:i, s:i, s:I}", "source", o->dataset, "partition", o->partition, "shard", shard,
                     "shards", o->peers, "validation", o->validation, "seed", (json_int_t)o->seed);
}

int train_start_everything(Run *run, const Dataset *train, const AttackConfig *attack, const char *self,
                            const char *module_path, SpirtError *error) {
    const TrainOptions *o = &run->options;
    int status = SPIRT_OK;
    run->cluster = cluster_create(run->dir, error);
    if (run->cluster == NULL) return error->code;
    /* Each peer's processes on its own share of the CPUs (cluster.h). A
     * machine whose CPUs cannot be read runs without placement: without a
     * plan, cluster_use_cpu_group(i) below means anywhere. */
    if (strcmp(o->placement, "peer") == 0) (void)cluster_plan_cpu_groups(run->cluster, o->peers, NULL);
    json_t *peers = json_array();
    Identity identities[MAX_PEERS];
    for (int i = 0; i < o->peers; i++) {
        PeerState *peer = &run->peers[i];
        char dir[1100];
        snprintf(dir, sizeof(dir), "%s/%s", run->dir, peer->id);
        if ((status = train_make_dir(dir, error)) != SPIRT_OK) break;
        unsigned char seed[SPIRT_KEY_SEED_BYTES];
        derive_seed(o->seed, i, seed);
        char key_path[1200];
        snprintf(key_path, sizeof(key_path), "%s/identity.key", dir);
        if ((status = identity_from_seed(&identities[i], peer->id, seed, error)) != SPIRT_OK ||
            (status = identity_save(&identities[i], key_path, error)) != SPIRT_OK)
            break;
        /* The module arguments first: per-round keys and publications are
         * scratch, not persisted. Then the AOF rewrite threshold, above the shard's
         * size: the data is written once, and rewriting it every few rounds
         * would only stall the server (redis-module-abi.md). */
        /* Peers on this machine talk through a Unix-domain socket (no TCP
         * stack: half the cost of moving a tensor), when its path fits. */
        char socket_path[1200];
        snprintf(socket_path, sizeof(socket_path), "%s/redis.sock", dir);
        int use_unix = strcmp(o->transport, "unix") == 0 && strlen(socket_path) < 100;
        cluster_use_cpu_group(run->cluster, i);
        const char *extra[] = {"TRANSIENT_PREFIX", KEY_ROUND_PREFIX, "TRANSIENT_PREFIX", KEY_PUBLISHED_PREFIX,
                               "--auto-aof-rewrite-min-size", "1gb",
                               use_unix ? "--unixsocket" : NULL, socket_path, "--unixsocketperm", "700", NULL};
        if ((status = cluster_start_database(run->cluster, peer->id, dir, module_path, 1, extra, &peer->database,
                                             error)) != SPIRT_OK)
            break;
        if (use_unix)
            snprintf(peer->address, sizeof(peer->address), "unix:%s", socket_path);
        else
            snprintf(peer->address, sizeof(peer->address), "127.0.0.1:%d", peer->database->port);
        /* The shard, cut from the data loaded once here rather than by
         * every peer; the peer finds it and keeps it. */
        StoreConn *conn = store_connect_address(peer->address, NULL, error);
        json_t *spec = data_spec(run, i);
        status = conn ? peer_upload_shard(conn, train, spec, error) : error->code;
        json_decref(spec);
        store_free(conn);
        if (status != SPIRT_OK) break;
        char public_hex[SPIRT_PUBLIC_KEY_HEX_SIZE];
        identity_public_hex(&identities[i], public_hex);
        json_array_append_new(peers, json_pack("{s:s, s:s, s:s}", "id", peer->id, "address", peer->address,
                                               "public_key", public_hex));
    }
    for (int i = 0; i < o->peers; i++) identity_wipe(&identities[i]);
    for (int i = 0; status == SPIRT_OK && i < o->peers; i++) {
        PeerState *peer = &run->peers[i];
        char path[1200], log_path[1200];
        json_t *config = json_pack("{s:s, s:s, s:s, s:s, s:O, s:o, s:o, s:f, s:f, s:b}", "peer_id", peer->id, "db",
                                   peer->address, "identity", "identity.key", "workflow", o->workflow, "peers", peers,
                                   "run", run_json(run, peer, attack), "data", data_spec(run, i),
                                   "gradient_timeout_seconds", 30.0, "round_timeout_seconds", o->round_timeout,
                                   "inline", o->inline_functions);
        json_object_set_new(config, "snapshot_every", json_integer(o->snapshot_every));
        snprintf(path, sizeof(path), "%s/%s/peer.json", run->dir, peer->id);
        status = train_write_json(path, config, error);
        json_decref(config);
        if (status != SPIRT_OK) break;
        char key_path[1200];
        snprintf(key_path, sizeof(key_path), "%s/%s/identity.key", run->dir, peer->id);
        cluster_use_cpu_group(run->cluster, i);
        for (int w = 0; !o->inline_functions && w < o->workers && status == SPIRT_OK; w++) {
            char name[64], crash[32], hang[32], hang_ms[32], visibility[32], fault_seed[32];
            snprintf(name, sizeof(name), "%s-worker-%d", peer->id, w);
            snprintf(crash, sizeof(crash), "%g", o->crash_rate);
            snprintf(hang, sizeof(hang), "%g", o->hang_rate);
            snprintf(hang_ms, sizeof(hang_ms), "%d", o->hang_ms);
            snprintf(visibility, sizeof(visibility), "%d", o->visibility_ms);
            snprintf(fault_seed, sizeof(fault_seed), "%llu", (unsigned long long)(o->seed * 1000 + (uint64_t)i * 16 + (uint64_t)w));
            snprintf(log_path, sizeof(log_path), "%s/%s/%s.log", run->dir, peer->id, name);
            const char *argv[] = {self, "worker", "--db", peer->address, "--identity", key_path, "--name", name,
                                  "--crash-rate", crash, "--hang-rate", hang, "--hang-ms", hang_ms, "--visibility-ms",
                                  visibility, "--fault-seed", fault_seed, NULL};
            status = cluster_start_process(run->cluster, name, CLUSTER_WORKER, argv, log_path, 1, &peer->workers[w],
                                           error);
        }
        if (status != SPIRT_OK) break;
        snprintf(log_path, sizeof(log_path), "%s/%s/peer.log", run->dir, peer->id);
        const char *argv[] = {self, "peer", "--config", path, NULL};
        status = cluster_start_process(run->cluster, peer->id, CLUSTER_PEER, argv, log_path, 0, &peer->process, error);
    }
    cluster_use_cpu_group(run->cluster, -1);
    json_decref(peers);
    return status;
}

int train_write_peers_json(const Run *run, SpirtError *error) {
    json_t *list = json_array();
    for (int i = 0; i < run->options.peers; i++) {
        const PeerState *peer = &run->peers[i];
        json_t *workers = json_array();
        for (int w = 0; w < run->options.workers; w++)
            if (peer->workers[w]) json_array_append_new(workers, json_integer(peer->workers[w]->pid));
        json_array_append_new(list, json_pack("{s:s, s:i, s:i, s:i, s:s, s:o, s:b, s:s}", "id", peer->id, "pid",
                                              peer->process ? peer->process->pid : 0, "db_port",
                                              peer->database ? peer->database->port : 0, "db_pid",
                                              peer->database ? peer->database->pid : 0, "db", peer->address,
                                              "worker_pids", workers, "byzantine", peer->byzantine, "status",
                                              peer->status[0] ? peer->status : "running"));
    }
    char path[1100];
    snprintf(path, sizeof(path), "%s/peers.json", run->dir);
    int status = train_write_json(path, list, error);
    json_decref(list);
    return status;
}
