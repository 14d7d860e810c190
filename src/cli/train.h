/* train.h -- the parts of `spirt train` (cmd_train.c): the options and the
 * state of a run, shared by the files that set it up (train_setup.c),
 * follow it while it runs (train_progress.c) and wrap it up
 * (train_finish.c). Internal to src/cli. */
#ifndef SPIRT_CLI_TRAIN_H
#define SPIRT_CLI_TRAIN_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

#include "spirt/agg.h"
#include "spirt/attack.h"
#include "spirt/cluster.h"
#include "spirt/data.h"
#include "spirt/peer.h"

enum { MAX_PEERS = 64 };

typedef struct TrainOptions {
    int snapshot_every;
    int peers, workers, batches_per_round, batch_size, byzantine, validation, evaluate_every, json, quiet, inline_functions;
    int visibility_ms, hang_ms, f, silent_after;
    uint64_t seed, rounds;
    double epochs, lr, momentum, weight_decay, exchange_wait, silent_wait, crash_rate, hang_rate, round_timeout;
    const char *model, *dataset, *optimizer, *aggregator, *pre, *attack, *partition, *out, *workflow, *schedule;
    const char *transport;
    const char *placement; /* "peer": each peer's processes share its CPUs; "none" */
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

/* --- train_setup.c --- */

/* mkdir that accepts an existing folder. */
int train_make_dir(const char *path, SpirtError *error);
/* Writes `json` to `path`, indented, keys sorted (the caller keeps `json`). */
int train_write_json(const char *path, json_t *json, SpirtError *error);
/* Creates the run folder (options.out, or runs/DATE-PID) and config.json. */
int train_prepare_run_dir(Run *run, SpirtError *error);
/* The rule every peer runs: --aggregator, with f from --f, else from the
 * spec's f=, else the number of Byzantine peers; --pre nnm mixes first. */
AggConfig train_effective_aggregator(const TrainOptions *o);
/* Starts every peer's redis-server, prepares its database (identity, data
 * shard, run configuration), then its workers and its peer process. */
int train_start_everything(Run *run, const Dataset *train, const AttackConfig *attack, const char *self,
                           const char *module_path, SpirtError *error);
/* peers.json: each peer's id, pids, database and status. */
int train_write_peers_json(const Run *run, SpirtError *error);

/* --- train_progress.c --- */

/* metrics.csv's first line. */
void train_write_metrics_header(FILE *file);
/* Reads the new metrics entries of every peer still reachable. */
void train_collect_metrics(Run *run);
/* One line (or a bar on a terminal) of the run's progress; `final` ends it. */
void train_show_progress(Run *run, int final);
/* 1 while any peer process is still running. */
int train_peers_running(const Run *run);

/* --- train_finish.c --- */

/* Evaluates every peer's final model, writes summary.json, the model,
 * the plots and peers.json, and prints the summary (JSON with --json). */
int train_finish(Run *run, double wall_seconds, SpirtError *error);

#endif /* SPIRT_CLI_TRAIN_H */
