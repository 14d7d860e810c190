/* cmd_train.c -- `spirt train`: the main job on this machine.
 *
 * Starts one redis-server per peer on loopback (the module loaded, AOF on),
 * W warm workers per peer and the peer processes, each peer with its own
 * identity and shard of the data; shows progress while they train; then
 * evaluates every peer's final model on the test set and leaves a run
 * folder:
 *   config.json    the options of the run
 *   peers.json     each peer's id, pid, database port and pid, worker pids
 *   metrics.csv    per round and peer: loss, accuracy, phase times, bytes
 *   summary.json   test accuracy, rounds, wall time, each peer's outcome
 *   model/         the final model: params.tensor and model.json
 *   accuracy.png, time.png
 *   peer-N/        the peer's database files, key, configuration and logs
 * Everything it started is stopped by pid at the end, on Ctrl-C, and (via
 * PR_SET_PDEATHSIG) if it is killed. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/commands.h"
#include "cli/options.h"
#include "cli/self.h"
#include "spirt/clock.h"
#include "spirt/cluster.h"
#include "spirt/data.h"
#include "spirt/flow.h"
#include "spirt/fn.h"
#include "spirt/keys.h"
#include "spirt/log.h"
#include "spirt/peer.h"
#include "spirt/rng.h"

enum { MAX_PEERS = 64 };

static volatile sig_atomic_t interrupted;

static void on_interrupt(int signal_number) {
    (void)signal_number;
    interrupted = 1;
}

typedef struct TrainOptions {
    int snapshot_every;
    int peers, workers, batches_per_round, batch_size, byzantine, validation, evaluate_every, json, quiet, inline_functions;
    int visibility_ms, hang_ms, f, silent_after;
    uint64_t seed, rounds;
    double epochs, lr, momentum, weight_decay, exchange_wait, silent_wait, crash_rate, hang_rate, round_timeout;
    const char *model, *dataset, *optimizer, *aggregator, *pre, *attack, *partition, *out, *workflow, *schedule;
    const char *transport;
} TrainOptions;

typedef struct PeerState {
    char id[32];
    int index;
    int byzantine;
    ClusterProcess *database, *process;
    ClusterProcess *workers[16];
    char address[1300];
    StoreConn *conn;        /* the orchestrator's own connection, for metrics */
    char last_metrics_id[STORE_STREAM_ID_SIZE];
    long long rounds_done;
    double *round_end_ms;   /* wall clock at the end of each round (index: round) */
    double first_start_ms;  /* wall clock at the start of round 0 */
    double last_val_accuracy;
    char status[16];        /* ok, dead, failed */
    double test_accuracy, test_loss;
    char digest[SPIRT_DIGEST_HEX_SIZE];
    Tensor *params;
    json_t *left_out;       /* {peer: {"missing": rounds, "rejected": rounds, "reason": last}} */
    long long fallback_rounds;  /* rounds whose rule fell back to the median */
    char fallback[256];     /* the last fallback's reason */
} PeerState;

typedef struct Run {
    TrainOptions options;
    char dir[1024];
    Cluster *cluster;
    PeerState peers[MAX_PEERS];
    FILE *metrics;
    Dataset *test;
    size_t shard_size;
    double start_ms;
    int tty;
} Run;

static int make_dir(const char *path, SpirtError *error) {
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        return spirt_error_set(error, SPIRT_ERR_IO, "cannot create %s: %s", path, strerror(errno));
    return SPIRT_OK;
}

static int write_json(const char *path, json_t *json, SpirtError *error) {
    if (json_dump_file(json, path, JSON_INDENT(2) | JSON_SORT_KEYS) != 0)
        return spirt_error_set(error, SPIRT_ERR_IO, "cannot write %s", path);
    return SPIRT_OK;
}

/* --- Setting up --- */

static int prepare_run_dir(Run *run, SpirtError *error) {
    if (run->options.out) {
        snprintf(run->dir, sizeof(run->dir), "%s", run->options.out);
    } else {
        time_t now = time(NULL);
        struct tm local;
        localtime_r(&now, &local);
        char stamp[32];
        strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", &local);
        if (make_dir("runs", error) != SPIRT_OK) return error->code;
        snprintf(run->dir, sizeof(run->dir), "runs/%s-%ld", stamp, (long)getpid());
    }
    if (make_dir(run->dir, error) != SPIRT_OK) return error->code;
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
static AggConfig effective_aggregator(const TrainOptions *o) {
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
    config.aggregator = effective_aggregator(o);
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

static int start_everything(Run *run, const Dataset *train, const AttackConfig *attack, const char *self,
                            const char *module_path, SpirtError *error) {
    const TrainOptions *o = &run->options;
    int status = SPIRT_OK;
    run->cluster = cluster_create(run->dir, error);
    if (run->cluster == NULL) return error->code;
    json_t *peers = json_array();
    Identity identities[MAX_PEERS];
    for (int i = 0; i < o->peers; i++) {
        PeerState *peer = &run->peers[i];
        char dir[1100];
        snprintf(dir, sizeof(dir), "%s/%s", run->dir, peer->id);
        if ((status = make_dir(dir, error)) != SPIRT_OK) break;
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
        status = write_json(path, config, error);
        json_decref(config);
        if (status != SPIRT_OK) break;
        char key_path[1200];
        snprintf(key_path, sizeof(key_path), "%s/%s/identity.key", run->dir, peer->id);
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
    json_decref(peers);
    return status;
}

static int write_peers_json(const Run *run, SpirtError *error) {
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
    int status = write_json(path, list, error);
    json_decref(list);
    return status;
}

/* --- While it runs --- */

static const char *const phase_names[] = {"Membership", "Gradients", "Average", "Publish", "Exchange",
                                          "Aggregate",  "Update",    "Evaluate", NULL};

static void write_metrics_header(FILE *file) {
    fprintf(file, "round,peer,loss,train_accuracy,val_loss,val_accuracy,round_ms");
    for (int i = 0; phase_names[i]; i++) fprintf(file, ",%s_ms", phase_names[i]);
    fprintf(file, ",bytes_in,bytes_out,received,missing,rejected,retries,fallback,digest\n");
}

static void print_number(FILE *file, const json_t *value) {
    if (json_is_number(value))
        fprintf(file, ",%.6g", json_number_value(value));
    else
        fprintf(file, ",");
}

static void write_metrics_row(FILE *file, const char *peer, const json_t *metrics) {
    fprintf(file, "%lld,%s", (long long)json_integer_value(json_object_get(metrics, "round")), peer);
    print_number(file, json_object_get(metrics, "loss"));
    print_number(file, json_object_get(metrics, "train_accuracy"));
    print_number(file, json_object_get(metrics, "val_loss"));
    print_number(file, json_object_get(metrics, "val_accuracy"));
    print_number(file, json_object_get(metrics, "round_ms"));
    const json_t *phases = json_object_get(metrics, "phase_ms");
    for (int i = 0; phase_names[i]; i++) print_number(file, json_object_get(phases, phase_names[i]));
    print_number(file, json_object_get(metrics, "bytes_in"));
    print_number(file, json_object_get(metrics, "bytes_out"));
    print_number(file, json_object_get(metrics, "received"));
    fprintf(file, ",%zu,%zu", json_array_size(json_object_get(metrics, "missing")),
            json_array_size(json_object_get(metrics, "rejected")));
    print_number(file, json_object_get(metrics, "retries"));
    const char *fallback = json_string_value(json_object_get(metrics, "fallback"));
    fprintf(file, ",%s", fallback ? "yes" : "");
    const char *digest = json_string_value(json_object_get(metrics, "digest"));
    fprintf(file, ",%s\n", digest ? digest : "");
}

/* Counts, per other peer, the rounds in which `peer` left it out (missing
 * or rejected), keeping the last reason: summary.json shows who was kept
 * out of the rounds and why. */
static void note_left_out(PeerState *peer, const json_t *metrics) {
    static const char *const kinds[] = {"missing", "rejected"};
    if (peer->left_out == NULL) peer->left_out = json_object();
    for (int k = 0; k < 2; k++) {
        size_t index;
        const json_t *item;
        json_array_foreach(json_object_get(metrics, kinds[k]), index, item) {
            const char *id = json_string_value(json_object_get(item, "peer"));
            if (id == NULL) continue;
            json_t *entry = json_object_get(peer->left_out, id);
            if (entry == NULL) {
                entry = json_pack("{s:i, s:i, s:s}", "missing", 0, "rejected", 0, "reason", "");
                json_object_set_new(peer->left_out, id, entry);
            }
            json_object_set_new(entry, kinds[k], json_integer(json_integer_value(json_object_get(entry, kinds[k])) + 1));
            json_object_set(entry, "reason", json_object_get(item, "reason"));
        }
    }
    const char *fallback = json_string_value(json_object_get(metrics, "fallback"));
    if (fallback) {
        peer->fallback_rounds++;
        snprintf(peer->fallback, sizeof(peer->fallback), "%s", fallback);
    }
}

/* Reads the new metrics entries of every peer still reachable. */
static void collect_metrics(Run *run) {
    for (int i = 0; i < run->options.peers; i++) {
        PeerState *peer = &run->peers[i];
        if (peer->conn == NULL) {
            StoreOptions options = {.connect_timeout_ms = 500, .read_timeout_ms = 2000};
            peer->conn = store_connect_address(peer->address, &options, NULL);
            if (peer->conn == NULL) continue;
        }
        StoreReply *reply = NULL;
        const char *argv[] = {"XREAD", "COUNT", "1000", "STREAMS", KEY_METRICS,
                              peer->last_metrics_id[0] ? peer->last_metrics_id : "0"};
        if (store_command_argv(peer->conn, 6, argv, NULL, &reply, NULL) != SPIRT_OK) {
            if (store_conn_status(peer->conn) != SPIRT_OK) {
                store_free(peer->conn);
                peer->conn = NULL;
            }
            continue;
        }
        /* [[stream, [[id, [field, value, ...]], ...]]] or nil */
        if (reply->type == STORE_REPLY_ARRAY && reply->elements == 1 && reply->element[0]->elements == 2) {
            const StoreReply *entries = reply->element[0]->element[1];
            for (size_t e = 0; e < entries->elements; e++) {
                const StoreReply *entry = entries->element[e];
                if (entry->elements != 2) continue;
                snprintf(peer->last_metrics_id, sizeof(peer->last_metrics_id), "%s", entry->element[0]->str);
                const StoreReply *fields = entry->element[1];
                for (size_t f = 0; f + 1 < fields->elements; f += 2) {
                    if (strcmp(fields->element[f]->str, "metrics") != 0) continue;
                    json_t *metrics = json_loadb(fields->element[f + 1]->str, fields->element[f + 1]->len, 0, NULL);
                    if (metrics == NULL) continue;
                    write_metrics_row(run->metrics, peer->id, metrics);
                    note_left_out(peer, metrics);
                    long long round = json_integer_value(json_object_get(metrics, "round"));
                    peer->rounds_done = round + 1;
                    double end_ms = (double)json_integer_value(json_object_get(metrics, "time_ms"));
                    if (round >= 0 && (uint64_t)round < run->options.rounds && peer->round_end_ms)
                        peer->round_end_ms[round] = end_ms;
                    if (round == 0)
                        peer->first_start_ms = end_ms - json_number_value(json_object_get(metrics, "round_ms"));
                    const json_t *accuracy = json_object_get(metrics, "val_accuracy");
                    if (json_is_number(accuracy)) peer->last_val_accuracy = json_number_value(accuracy);
                    json_decref(metrics);
                }
            }
        }
        store_reply_free(reply);
    }
    fflush(run->metrics);
}

static void show_progress(Run *run, int final) {
    if (run->options.quiet || run->options.json) return;
    long long slowest = -1, fastest = 0;
    double accuracy = 0;
    int alive = 0;
    for (int i = 0; i < run->options.peers; i++) {
        const PeerState *peer = &run->peers[i];
        if (peer->process && peer->process->exited && peer->process->exit_code != 0) continue;
        alive++;
        if (slowest < 0 || peer->rounds_done < slowest) slowest = peer->rounds_done;
        if (peer->rounds_done > fastest) fastest = peer->rounds_done;
        if (peer->last_val_accuracy > accuracy) accuracy = peer->last_val_accuracy;
    }
    if (slowest < 0) slowest = 0;
    double seconds = (clock_monotonic_ms() - run->start_ms) / 1000.0;
    double fraction = run->options.rounds ? (double)slowest / (double)run->options.rounds : 0;
    if (run->tty) {
        char bar[31];
        int filled = (int)(fraction * 30);
        for (int i = 0; i < 30; i++) bar[i] = i < filled ? '#' : '.';
        bar[30] = '\0';
        fprintf(stderr, "\r[%s] round %lld/%llu  val acc %.4f  peers %d/%d  %.1f s  ", bar, slowest,
                (unsigned long long)run->options.rounds, accuracy, alive, run->options.peers, seconds);
        if (final) fprintf(stderr, "\n");
    } else {
        static long long last_printed = -1;
        long long step = (long long)run->options.rounds / 20;
        if (step < 1) step = 1;
        if (final || slowest / step != last_printed / step) {
            fprintf(stderr, "round %lld/%llu  val acc %.4f  peers %d/%d  %.1f s\n", slowest,
                    (unsigned long long)run->options.rounds, accuracy, alive, run->options.peers, seconds);
            last_printed = slowest;
        }
    }
}

static int peers_running(const Run *run) {
    for (int i = 0; i < run->options.peers; i++)
        if (run->peers[i].process && !run->peers[i].process->exited) return 1;
    return 0;
}

/* --- At the end --- */

static void evaluate_peers(Run *run) {
    NnModelKind kind;
    nn_model_kind_parse(run->options.model, &kind, NULL);
    NnModel *model = nn_model_create(kind, 500, NULL);
    for (int i = 0; model && i < run->options.peers; i++) {
        PeerState *peer = &run->peers[i];
        StoreOptions options = {.connect_timeout_ms = 2000};
        StoreConn *conn = store_connect_address(peer->address, &options, NULL);
        if (conn == NULL || store_tensor_get(conn, KEY_PARAMS, &peer->params, NULL) != SPIRT_OK) {
            store_free(conn);
            continue;
        }
        char *status_text = NULL;
        size_t length = 0;
        if (store_get(conn, KEY_STATUS, &status_text, &length, NULL) == SPIRT_OK && strcmp(status_text, "done") != 0 &&
            strcmp(peer->status, "ok") == 0)
            snprintf(peer->status, sizeof(peer->status), "failed");
        free(status_text);
        store_free(conn);
        tensor_digest_hex(peer->params->data, peer->params->count, peer->digest);
        size_t correct = 0;
        if (nn_model_load_params(model, peer->params->data, peer->params->count, NULL) == SPIRT_OK &&
            nn_model_evaluate(model, run->test->images, run->test->labels, run->test->count, &peer->test_loss,
                              &correct, NULL) == SPIRT_OK)
            peer->test_accuracy = (double)correct / (double)run->test->count;
    }
    nn_model_free(model);
}

/* The model most honest, finished peers hold (they agree when nothing
 * split them); NULL if none finished. */
static const PeerState *consensus_peer(const Run *run, int *agreeing) {
    const PeerState *best = NULL;
    int best_count = 0;
    for (int i = 0; i < run->options.peers; i++) {
        const PeerState *candidate = &run->peers[i];
        if (candidate->byzantine || strcmp(candidate->status, "ok") != 0 || candidate->params == NULL) continue;
        int count = 0;
        for (int k = 0; k < run->options.peers; k++)
            if (!run->peers[k].byzantine && strcmp(run->peers[k].status, "ok") == 0 &&
                strcmp(run->peers[k].digest, candidate->digest) == 0)
                count++;
        if (count > best_count) {
            best = candidate;
            best_count = count;
        }
    }
    *agreeing = best_count;
    return best;
}

static void write_plots(const Run *run) {
    char script_path[1100], command[2400];
    snprintf(script_path, sizeof(script_path), "%s/plots.gp", run->dir);
    FILE *script = fopen(script_path, "w");
    if (script == NULL) return;
    fprintf(script,
            "set datafile separator ','\n"
            "set terminal pngcairo size 900,540 noenhanced\n"
            "set key outside right\n"
            "set grid\n"
            "set output '%s/accuracy.png'\n"
            "set title 'validation accuracy by peer'\n"
            "set xlabel 'round'\nset ylabel 'accuracy'\n"
            "plot for [p in \"",
            run->dir);
    for (int i = 0; i < run->options.peers; i++) fprintf(script, "%s%s", i ? " " : "", run->peers[i].id);
    fprintf(script,
            "\"] '%s/metrics.csv' using 1:(strcol(2) eq p && strlen(strcol(6)) > 0 ? $6 : 1/0) "
            "with linespoints title p\n"
            "set output '%s/time.png'\n"
            "set title 'time per round by phase (all peers)'\n"
            "set ylabel 'ms'\n"
            "plot for [c=8:15] '%s/metrics.csv' using 1:c with dots title columnhead(c)\n",
            run->dir, run->dir, run->dir);
    fclose(script);
    snprintf(command, sizeof(command), "gnuplot '%s' >/dev/null 2>&1", script_path);
    if (system(command) != 0) log_warn("gnuplot failed; the plots are missing (the data is in metrics.csv)");
}

/* Every counter of every peer's spirt:counters, as {peer: {field: n}}. */
static json_t *counters_by_peer(const Run *run) {
    json_t *all = json_object();
    for (int i = 0; i < run->options.peers; i++) {
        StoreOptions options = {.connect_timeout_ms = 1000};
        StoreConn *conn = store_connect_address(run->peers[i].address, &options, NULL);
        StoreReply *reply = NULL;
        const char *argv[] = {"HGETALL", KEY_COUNTERS};
        if (conn && store_command_argv(conn, 2, argv, NULL, &reply, NULL) == SPIRT_OK && reply->type == STORE_REPLY_ARRAY) {
            json_t *fields = json_object();
            for (size_t k = 0; k + 1 < reply->elements; k += 2)
                json_object_set_new(fields, reply->element[k]->str, json_integer(atoll(reply->element[k + 1]->str)));
            json_object_set_new(all, run->peers[i].id, fields);
        }
        store_reply_free(reply);
        store_free(conn);
    }
    return all;
}

static json_t *sum_counters(const Run *run) {
    json_t *total = json_object();
    static const char *const names[] = {"invocations", "reclaims", "expired", "failures", "cold_starts",
                                        "queue_wait_ms", "run_ms", NULL};
    for (int k = 0; names[k]; k++) json_object_set_new(total, names[k], json_integer(0));
    for (int i = 0; i < run->options.peers; i++) {
        StoreOptions options = {.connect_timeout_ms = 1000};
        StoreConn *conn = store_connect_address(run->peers[i].address, &options, NULL);
        if (conn == NULL) continue;
        for (int k = 0; names[k]; k++) {
            char *value = NULL;
            size_t length = 0;
            if (store_hget(conn, KEY_COUNTERS, names[k], &value, &length, NULL) == SPIRT_OK)
                json_object_set_new(total, names[k],
                                    json_integer(json_integer_value(json_object_get(total, names[k])) + atoll(value)));
            free(value);
        }
        store_free(conn);
    }
    return total;
}

/* Training time: from the first peer starting round 0 to the end of
 * `round` (the slowest peer's), in seconds. */
static double training_start_ms(const Run *run) {
    double start = 0;
    for (int i = 0; i < run->options.peers; i++)
        if (run->peers[i].first_start_ms > 0 && (start == 0 || run->peers[i].first_start_ms < start))
            start = run->peers[i].first_start_ms;
    return start;
}

/* The test accuracy of the snapshots `peer` kept, with when they were made. */
static json_t *accuracy_curve(Run *run, const PeerState *peer) {
    json_t *curve = json_array();
    if (run->options.snapshot_every <= 0 || peer == NULL) return curve;
    NnModelKind kind;
    nn_model_kind_parse(run->options.model, &kind, NULL);
    NnModel *model = nn_model_create(kind, 500, NULL);
    StoreOptions options = {.connect_timeout_ms = 2000};
    StoreConn *conn = store_connect_address(peer->address, &options, NULL);
    double start = training_start_ms(run);
    for (uint64_t round = 0; model && conn && round < run->options.rounds; round++) {
        if (!((round + 1) % (uint64_t)run->options.snapshot_every == 0 || round + 1 == run->options.rounds)) continue;
        char key[64];
        snprintf(key, sizeof(key), "spirt:snapshot:%llu", (unsigned long long)round);
        Tensor *params = NULL;
        if (store_tensor_get(conn, key, &params, NULL) != SPIRT_OK) continue;
        double loss = 0;
        size_t correct = 0;
        if (nn_model_load_params(model, params->data, params->count, NULL) == SPIRT_OK &&
            nn_model_evaluate(model, run->test->images, run->test->labels, run->test->count, &loss, &correct, NULL) ==
                SPIRT_OK) {
            double end = peer->round_end_ms ? peer->round_end_ms[round] : 0;
            json_array_append_new(curve, json_pack("[I, f, f]", (json_int_t)round,
                                                   end > 0 && start > 0 ? (end - start) / 1000.0 : -1.0,
                                                   (double)correct / (double)run->test->count));
        }
        tensor_free(params);
        store_del(conn, key, NULL, NULL);
    }
    store_free(conn);
    nn_model_free(model);
    return curve;
}

static int finish(Run *run, double wall_seconds, SpirtError *error) {
    evaluate_peers(run);
    int agreeing = 0;
    const PeerState *consensus = consensus_peer(run, &agreeing);
    double start = training_start_ms(run), end = 0;
    for (int i = 0; i < run->options.peers; i++)
        for (uint64_t r = 0; run->peers[i].round_end_ms && r < run->options.rounds; r++)
            if (run->peers[i].round_end_ms[r] > end) end = run->peers[i].round_end_ms[r];
    double train_seconds = start > 0 && end > start ? (end - start) / 1000.0 : 0;
    json_t *peers = json_array(), *byzantine = json_array();
    long long fallback_rounds = 0;
    const char *fallback = NULL;
    for (int i = 0; i < run->options.peers; i++) {
        const PeerState *peer = &run->peers[i];
        if (peer->byzantine) json_array_append_new(byzantine, json_string(peer->id));
        json_t *left_out = peer->left_out ? json_incref(peer->left_out) : json_object();
        json_array_append_new(peers, json_pack("{s:s, s:f, s:f, s:s, s:s, s:I, s:b, s:o, s:I}", "id", peer->id,
                                               "test_accuracy", peer->test_accuracy, "test_loss", peer->test_loss,
                                               "params_digest", peer->digest, "status", peer->status,
                                               "rounds_completed", (json_int_t)peer->rounds_done, "byzantine",
                                               peer->byzantine, "left_out", left_out, "fallback_rounds",
                                               (json_int_t)peer->fallback_rounds));
        if (!peer->byzantine && peer->fallback_rounds) {
            fallback_rounds += peer->fallback_rounds;
            fallback = peer->fallback;
        }
    }
    int honest_ok = 0;
    for (int i = 0; i < run->options.peers; i++)
        honest_ok += !run->peers[i].byzantine && strcmp(run->peers[i].status, "ok") == 0;
    double epochs = run->shard_size ? (double)run->options.rounds * run->options.batches_per_round *
                                          run->options.batch_size / (double)run->shard_size
                                    : 0;
    json_t *summary = json_pack(
        "{s:f, s:f, s:I, s:f, s:f, s:o, s:s, s:i, s:i, s:b, s:o, s:s, s:s, s:s, s:s, s:o, s:s}", "test_accuracy",
        consensus ? consensus->test_accuracy : 0.0, "test_loss", consensus ? consensus->test_loss : 0.0, "rounds",
        (json_int_t)run->options.rounds, "epochs", epochs, "wall_seconds", wall_seconds, "peers", peers, "model",
        run->options.model, "honest_peers_finished", honest_ok, "honest_peers_agreeing", agreeing,
        "digests_agree", honest_ok > 0 && agreeing == honest_ok, "byzantine", byzantine, "attack",
        run->options.byzantine ? run->options.attack : "none", "aggregator", run->options.aggregator, "optimizer",
        run->options.optimizer, "params_digest", consensus ? consensus->digest : "", "counters", sum_counters(run),
        "run_dir", run->dir);
    json_object_set_new(summary, "counters_by_peer", counters_by_peer(run));
    json_object_set_new(summary, "train_seconds", json_real(train_seconds));
    /* Honest peers' rounds whose rule could not run and fell back to the
     * median, and why (e.g. "bulyan needs n >= 4f + 3"). */
    json_object_set_new(summary, "fallback_rounds", json_integer(fallback_rounds));
    AggConfig aggregator = effective_aggregator(&run->options);
    char spec[256];
    run_format_aggregator(&aggregator, spec, sizeof(spec));
    json_object_set_new(summary, "aggregator_spec", json_string(spec)); /* as the peers ran it */
    json_object_set_new(summary, "fallback", fallback ? json_string(fallback) : json_null());
    json_object_set_new(summary, "accuracy_curve", accuracy_curve(run, consensus));
    char path[1100];
    snprintf(path, sizeof(path), "%s/summary.json", run->dir);
    int status = write_json(path, summary, error);
    if (consensus) {
        snprintf(path, sizeof(path), "%s/model", run->dir);
        make_dir(path, NULL);
        snprintf(path, sizeof(path), "%s/model/params.tensor", run->dir);
        if (status == SPIRT_OK) status = tensor_file_write(path, consensus->params, error);
        NnModelKind kind;
        nn_model_kind_parse(run->options.model, &kind, NULL);
        NnModel *model = nn_model_create(kind, 1, NULL);
        char *layout = model ? nn_model_layout_json(model) : NULL;
        json_t *description = layout ? json_loads(layout, 0, NULL) : NULL;
        if (description) {
            json_object_set_new(description, "params_file", json_string("params.tensor"));
            json_object_set_new(description, "params_digest", json_string(consensus->digest));
            json_object_set_new(description, "dataset", json_string(run->options.dataset));
            snprintf(path, sizeof(path), "%s/model/model.json", run->dir);
            if (status == SPIRT_OK) status = write_json(path, description, error);
        }
        json_decref(description);
        free(layout);
        nn_model_free(model);
    }
    write_plots(run);
    if (run->options.json) {
        json_dumpf(summary, stdout, JSON_COMPACT);
        printf("\n");
    } else if (!run->options.quiet) {
        printf("test accuracy %.4f after %llu rounds (%.2f epochs) in %.1f s; %d of %d honest peers agree\n",
               consensus ? consensus->test_accuracy : 0.0, (unsigned long long)run->options.rounds, epochs,
               wall_seconds, agreeing, honest_ok);
        for (int i = 0; i < run->options.peers; i++)
            printf("  %-8s %-6s test acc %.4f  digest %s%s\n", run->peers[i].id, run->peers[i].status,
                   run->peers[i].test_accuracy, run->peers[i].digest, run->peers[i].byzantine ? "  (byzantine)" : "");
        printf("run folder: %s\n", run->dir);
    }
    json_decref(summary);
    return status;
}

static int known_function(void *context, const char *name) {
    (void)context;
    return fn_find(name) != NULL;
}

/* --- The command --- */

int command_train(int argc, char **argv) {
    static char default_workflow[1024];
    snprintf(default_workflow, sizeof(default_workflow), "%s/workflows/round.json", SPIRT_SOURCE_DIR);
    Run *run = calloc(1, sizeof(*run));
    if (run == NULL) return 1;
    TrainOptions *o = &run->options;
    /* One minibatch of 128 per peer and round on one worker: on a machine
     * whose cores the peers already share, parallel functions have no idle
     * core to use, and each one moves the model in and a gradient out
     * (measured: 52 ms against 64 ms a round for B = 2 x 64, W = 2, with 4
     * peers on 2 cores). With cores to spare, raise --batches-per-round and
     * --workers: the gradient of the round is the same. */
    *o = (TrainOptions){.peers = 4, .workers = 1, .batches_per_round = 1, .batch_size = 128, .validation = 500,
                        .evaluate_every = 50, .visibility_ms = 2000, .hang_ms = 10000, .f = -1, .seed = 1,
                        .epochs = 4, .lr = 0.003, .momentum = 0.9, .exchange_wait = 10, .silent_after = 3,
                        .silent_wait = 0.1, .round_timeout = 600,
                        .model = "mlp", .dataset = "fashion-mnist", .optimizer = "adam", .schedule = "cosine", .transport = "unix",
                        .aggregator = "mean", .attack = "sign-flip", .partition = "iid", .workflow = default_workflow};
    const CliOption options[] = {
        {"peers", CLI_INT, &o->peers, "N", "peers, each with its own database (default 4)"},
        {"model", CLI_STRING, &o->model, "NAME", "logreg, mlp or cnn (default mlp)"},
        {"dataset", CLI_STRING, &o->dataset, "SRC", "fashion-mnist or a folder of MNIST-format files"},
        {"rounds", CLI_U64, &o->rounds, "R", "rounds to train (default: from --epochs)"},
        {"epochs", CLI_DOUBLE, &o->epochs, "E", "passes over each peer's shard, if --rounds is not given (default 4)"},
        {"batches-per-round", CLI_INT, &o->batches_per_round, "B", "minibatch gradients per peer and round, computed "
                                                                   "in parallel (default 1)"},
        {"batch-size", CLI_INT, &o->batch_size, "S", "examples per minibatch (default 128)"},
        {"optimizer", CLI_STRING, &o->optimizer, "NAME", "sgd, momentum, nesterov, adam or adamw (default adam)"},
        {"lr", CLI_DOUBLE, &o->lr, "X", "learning rate (default 0.003)"},
        {"schedule", CLI_STRING, &o->schedule, "NAME", "learning rate over the rounds: constant, or cosine from --lr "
                                                       "down to 0 (default cosine)"},
        {"momentum", CLI_DOUBLE, &o->momentum, "M", "momentum (default 0.9)"},
        {"weight-decay", CLI_DOUBLE, &o->weight_decay, "W", "weight decay (default 0)"},
        {"aggregator", CLI_STRING, &o->aggregator, "RULE", "mean, median, trimmed-mean, krum, multi-krum, bulyan, "
                                                            "geomed, cclip [:param=value,...] (default mean)"},
        {"pre", CLI_STRING, &o->pre, "NAME", "pre-aggregation: nnm (nearest-neighbour mixing) or none"},
        {"f", CLI_INT, &o->f, "F", "Byzantine peers the rule assumes (default: --byzantine)"},
        {"byzantine", CLI_INT, &o->byzantine, "K", "peers that attack, chosen by the seed (default 0)"},
        {"attack", CLI_STRING, &o->attack, "NAME", "what they do: sign-flip[:scale=10], gaussian[:sigma=100], "
                                                   "label-flip, alie[:z=from n and f], ipm[:epsilon=0.1], "
                                                   "mimic[:target=0], or break the protocol: silent, wrong-shape, nan, "
                                                   "garbage (default sign-flip; docs/robustness.md)"},
        {"partition", CLI_STRING, &o->partition, "P", "iid or dirichlet:ALPHA (default iid)"},
        {"validation", CLI_INT, &o->validation, "N", "validation examples held out per peer (default 500)"},
        {"evaluate-every", CLI_INT, &o->evaluate_every, "K", "evaluate every K rounds (default 50)"},
        {"workers", CLI_INT, &o->workers, "W", "warm function workers per peer (default 1)"},
        {"inline", CLI_FLAG, &o->inline_functions, NULL, "run functions inside the peer processes, no workers"},
        {"exchange-wait", CLI_DOUBLE, &o->exchange_wait, "SEC", "how long a peer waits for the others (default 10)"},
        {"silent-after", CLI_INT, &o->silent_after, "R", "a live peer that missed R exchanges in a row is waited for "
                                                        "only --silent-wait after the others (default 3; 0: never)"},
        {"silent-wait", CLI_DOUBLE, &o->silent_wait, "SEC", "how long to wait for such a silent peer (default 0.1)"},
        {"round-timeout", CLI_DOUBLE, &o->round_timeout, "SEC", "time-out of one round's workflow (default 600)"},
        {"workflow", CLI_STRING, &o->workflow, "FILE", "the round's state machine (default workflows/round.json)"},
        {"transport", CLI_STRING, &o->transport, "NAME", "how peers reach the databases: unix (sockets, the default) "
                                                         "or tcp (loopback)"},
        {"snapshot-every", CLI_INT, &o->snapshot_every, "K", "keep the model every K rounds and report its test "
                                                             "accuracy over time in summary.json (default 0: off)"},
        {"seed", CLI_U64, &o->seed, "N", "seed of everything random (default 1)"},
        {"out", CLI_STRING, &o->out, "DIR", "the run folder (default runs/DATE-PID)"},
        {"json", CLI_FLAG, &o->json, NULL, "print the summary as one JSON object on stdout"},
        {"quiet", CLI_FLAG, &o->quiet, NULL, "no progress display"},
        {"crash-rate", CLI_DOUBLE, &o->crash_rate, "P", "test: workers crash on this fraction of invocations"},
        {"hang-rate", CLI_DOUBLE, &o->hang_rate, "P", "test: workers hang on this fraction of invocations"},
        {"hang-ms", CLI_INT, &o->hang_ms, "MS", "test: how long a hang lasts (default 10000)"},
        {"visibility-ms", CLI_INT, &o->visibility_ms, "MS", "invocations pending longer are reclaimed (default 2000)"},
    };
    const CliCommand command = {"train", "", "Train across peers with no server, each with its own database.",
                                options, sizeof(options) / sizeof(options[0])};
    int parsed = cli_parse(&command, argc, argv, NULL, 0, NULL);
    if (parsed != CLI_PARSED) {
        free(run);
        return parsed == CLI_EXIT_OK ? 0 : 2;
    }
    int usage = 0;
    NnModelKind kind;
    OptimConfig optimizer;
    AggConfig aggregator;
    AttackConfig attack = attack_config_default(ATTACK_NONE);
    SpirtError error;
    if (o->peers < 1 || o->peers > MAX_PEERS) usage = cli_usage_error(&command, "--peers must be 1 to %d", MAX_PEERS);
    else if (nn_model_kind_parse(o->model, &kind, &error) != SPIRT_OK) usage = cli_usage_error(&command, "--model: %s", error.message);
    else if (optim_kind_parse(o->optimizer, &optimizer, &error) != SPIRT_OK) usage = cli_usage_error(&command, "--optimizer: %s", error.message);
    else if (!(o->lr > 0)) usage = cli_usage_error(&command, "--lr must be > 0");
    else if (strcmp(o->transport, "unix") != 0 && strcmp(o->transport, "tcp") != 0) usage = cli_usage_error(&command, "--transport: unix or tcp");
    else if (strcmp(o->schedule, "constant") != 0 && strcmp(o->schedule, "cosine") != 0) usage = cli_usage_error(&command, "--schedule: constant or cosine");
    else if (run_parse_aggregator(o->aggregator, &aggregator, &error) != SPIRT_OK) usage = cli_usage_error(&command, "--aggregator: %s", error.message);
    else if (o->pre && strcmp(o->pre, "nnm") != 0 && strcmp(o->pre, "none") != 0) usage = cli_usage_error(&command, "--pre: nnm or none");
    else if (o->f >= o->peers) usage = cli_usage_error(&command, "--f must be less than --peers");
    else if (o->byzantine < 0 || o->byzantine >= o->peers) usage = cli_usage_error(&command, "--byzantine must be 0 to peers - 1");
    else if (o->byzantine && attack_parse(o->attack, &attack, &error) != SPIRT_OK) usage = cli_usage_error(&command, "--attack: %s", error.message);
    else if (o->batch_size < 1 || o->batches_per_round < 1 || o->batches_per_round > 1024) usage = cli_usage_error(&command, "--batch-size and --batches-per-round must be >= 1");
    else if (o->workers < 1 || o->workers > 16) usage = cli_usage_error(&command, "--workers must be 1 to 16");
    else if (o->validation < 0 || o->evaluate_every < 0) usage = cli_usage_error(&command, "--validation and --evaluate-every must be >= 0");
    else if (strcmp(o->partition, "iid") != 0 && strncmp(o->partition, "dirichlet:", 10) != 0) usage = cli_usage_error(&command, "--partition: iid or dirichlet:ALPHA");
    else if (o->silent_after < 0 || !(o->silent_wait >= 0 && o->silent_wait <= 3600)) usage = cli_usage_error(&command, "--silent-after must be >= 0 and --silent-wait 0 to 3600");
    else if (o->crash_rate < 0 || o->hang_rate < 0 || o->crash_rate + o->hang_rate >= 1) usage = cli_usage_error(&command, "--crash-rate + --hang-rate must be in [0, 1)");
    else if (o->rounds == 0 && !(o->epochs > 0)) usage = cli_usage_error(&command, "--epochs must be > 0");
    if (usage) {
        free(run);
        return 2;
    }
    if (!o->json && !o->quiet) spirt_log_set_level(SPIRT_LOG_WARN);
    if (o->json || o->quiet) spirt_log_set_level(SPIRT_LOG_ERROR);

    /* The dataset first: a missing one is refused before anything starts.
     * A folder is made absolute, as the peers run elsewhere. */
    static char dataset_path[1024];
    if (strcmp(o->dataset, "fashion-mnist") != 0 && realpath(o->dataset, dataset_path)) o->dataset = dataset_path;
    Dataset *raw_train = data_load(o->dataset, DATA_TRAIN, &error);
    run->test = raw_train ? data_load(o->dataset, DATA_TEST, &error) : NULL;
    if (run->test == NULL) {
        fprintf(stderr, "spirt train: %s\n", error.message);
        dataset_free(raw_train);
        free(run);
        return 1;
    }
    float mean, std;
    data_statistics(raw_train, &mean, &std);
    data_normalize(run->test, mean, std, NULL);
    data_normalize(raw_train, mean, std, NULL);
    Dataset *train = raw_train; /* now normalised, as peer_load_training_data gives it */
    run->shard_size = train->count / (size_t)o->peers - (size_t)o->validation;
    if (train->count / (size_t)o->peers <= (size_t)o->validation) {
        fprintf(stderr, "spirt train: --validation %d leaves no training data in shards of %zu\n", o->validation,
                train->count / (size_t)o->peers);
        dataset_free(train);
        dataset_free(run->test);
        free(run);
        return 2;
    }
    if (o->rounds == 0)
        o->rounds = (uint64_t)ceil(o->epochs * (double)run->shard_size / (double)(o->batches_per_round * o->batch_size));
    char module_path[1024], self[1024];
    if (cli_self_path(self, sizeof(self)) != 0 || cli_sibling_path(module_path, sizeof(module_path), "spirt.so") != 0) {
        fprintf(stderr, "spirt train: cannot find its own executable\n");
        dataset_free(train);
        dataset_free(run->test);
        free(run);
        return 1;
    }
    if (access(module_path, R_OK) != 0) {
        fprintf(stderr, "spirt train: the module %s is missing (make build)\n", module_path);
        dataset_free(train);
        dataset_free(run->test);
        free(run);
        return 1;
    }
    /* The workflow too: a broken one is refused here, with its path. */
    FlowMachine *machine = flow_machine_load_file(o->workflow, &error);
    if (machine && flow_machine_check_resources(machine, known_function, NULL, &error) != SPIRT_OK) {
        flow_machine_free(machine);
        machine = NULL;
    }
    if (machine == NULL) {
        fprintf(stderr, "spirt train: %s\n", error.message);
        dataset_free(train);
        dataset_free(run->test);
        free(run);
        return 1;
    }
    flow_machine_free(machine);

    /* Byzantine peers, chosen by the seed. */
    size_t order[MAX_PEERS];
    for (int i = 0; i < o->peers; i++) {
        order[i] = (size_t)i;
        snprintf(run->peers[i].id, sizeof(run->peers[i].id), "peer-%d", i);
        run->peers[i].index = i;
        snprintf(run->peers[i].status, sizeof(run->peers[i].status), "ok");
    }
    SpirtRng rng;
    rng_init_stream(&rng, o->seed, 0x62797a616e74ull /* "byzant" */);
    rng_shuffle_indices(&rng, order, (size_t)o->peers);
    for (int k = 0; k < o->byzantine; k++) run->peers[order[k]].byzantine = 1;
    for (int i = 0; i < o->peers; i++) run->peers[i].round_end_ms = calloc(o->rounds, sizeof(double));

    int status = prepare_run_dir(run, &error);
    char path[1100];
    if (status == SPIRT_OK) {
        json_t *config = json_object();
        for (size_t i = 0; i < sizeof(options) / sizeof(options[0]); i++) {
            const CliOption *option = &options[i];
            json_t *value = NULL;
            switch (option->type) {
            case CLI_FLAG: value = json_boolean(*(int *)option->target); break;
            case CLI_INT: value = json_integer(*(int *)option->target); break;
            case CLI_U64: value = json_integer((json_int_t) * (uint64_t *)option->target); break;
            case CLI_DOUBLE: value = json_real(*(double *)option->target); break;
            case CLI_STRING: value = *(const char **)option->target ? json_string(*(const char **)option->target) : json_null(); break;
            }
            json_object_set_new(config, option->name, value);
        }
        snprintf(path, sizeof(path), "%s/config.json", run->dir);
        status = write_json(path, config, &error);
        json_decref(config);
    }
    signal(SIGINT, on_interrupt);
    signal(SIGTERM, on_interrupt);
    signal(SIGPIPE, SIG_IGN);
    run->start_ms = clock_monotonic_ms();
    run->tty = isatty(STDERR_FILENO);
    if (status == SPIRT_OK) {
        if (!o->json && !o->quiet)
            fprintf(stderr, "spirt train: %d peers, %s, %llu rounds of %d x %d per peer; run folder %s\n", o->peers,
                    o->model, (unsigned long long)o->rounds, o->batches_per_round, o->batch_size, run->dir);
        status = start_everything(run, train, &attack, self, module_path, &error);
    }
    dataset_free(train);
    train = NULL;
    if (status == SPIRT_OK) status = write_peers_json(run, &error);
    if (status == SPIRT_OK) {
        snprintf(path, sizeof(path), "%s/metrics.csv", run->dir);
        run->metrics = fopen(path, "w");
        if (run->metrics == NULL) status = spirt_error_set(&error, SPIRT_ERR_IO, "cannot create %s", path);
        else write_metrics_header(run->metrics);
    }
    while (status == SPIRT_OK && peers_running(run) && !interrupted) {
        if (cluster_poll(run->cluster)) {
            for (int i = 0; i < o->peers; i++) {
                PeerState *peer = &run->peers[i];
                if (peer->process->exited && peer->process->exit_code != 0 && strcmp(peer->status, "ok") == 0) {
                    snprintf(peer->status, sizeof(peer->status), peer->process->exit_code >= 128 ? "dead" : "failed");
                    if (!o->json && !o->quiet)
                        fprintf(stderr, "%s%s stopped (%s, exit %d); see %s/%s/peer.log\n", run->tty ? "\n" : "",
                                peer->id, peer->status, peer->process->exit_code, run->dir, peer->id);
                }
            }
            write_peers_json(run, NULL);
        }
        collect_metrics(run);
        show_progress(run, 0);
        clock_sleep_ms(100);
    }
    double wall_seconds = (clock_monotonic_ms() - run->start_ms) / 1000.0;
    if (status == SPIRT_OK) {
        cluster_poll(run->cluster);
        collect_metrics(run);
        show_progress(run, 1);
    }
    if (interrupted) {
        fprintf(stderr, "\nspirt train: interrupted; stopping everything\n");
        status = SPIRT_ERR_INTERNAL;
        spirt_error_set(&error, SPIRT_ERR_INTERNAL, "interrupted");
    }
    if (run->cluster) cluster_stop_kind(run->cluster, CLUSTER_WORKER, 2000);
    if (status == SPIRT_OK) {
        for (int i = 0; i < o->peers; i++)
            if (run->peers[i].process->exit_code != 0 && strcmp(run->peers[i].status, "ok") == 0)
                snprintf(run->peers[i].status, sizeof(run->peers[i].status), "failed");
        write_peers_json(run, NULL);
        status = finish(run, wall_seconds, &error);
    }
    for (int i = 0; i < o->peers; i++) {
        store_free(run->peers[i].conn);
        tensor_free(run->peers[i].params);
        json_decref(run->peers[i].left_out);
        free(run->peers[i].round_end_ms);
    }
    if (run->metrics) fclose(run->metrics);
    cluster_free(run->cluster); /* stops the databases last */
    dataset_free(run->test);
    int finished = 0;
    for (int i = 0; i < o->peers; i++) finished += strcmp(run->peers[i].status, "ok") == 0;
    if (status == SPIRT_OK && finished == 0) status = spirt_error_set(&error, SPIRT_ERR_INTERNAL, "no peer finished its rounds (see the peer logs in %s)", run->dir);
    free(run);
    if (status != SPIRT_OK && !interrupted) fprintf(stderr, "spirt train: %s\n", error.message);
    return interrupted ? 130 : status == SPIRT_OK ? 0 : 1;
}
