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
 * PR_SET_PDEATHSIG) if it is killed. This file holds the options and the
 * job's order; train_setup.c, train_progress.c and train_finish.c its
 * steps, over the state in train.h. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/commands.h"
#include "cli/options.h"
#include "cli/self.h"
#include "cli/train.h"
#include "spirt/clock.h"
#include "spirt/log.h"
#include "spirt/rng.h"

static volatile sig_atomic_t interrupted;

static void on_interrupt(int signal_number) {
    (void)signal_number;
    interrupted = 1;
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
                        .model = "mlp", .dataset = "fashion-mnist", .optimizer = "adam", .schedule = "cosine", .transport = "unix", .placement = "peer",
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
        {"placement", CLI_STRING, &o->placement, "NAME", "peer (the default): each peer's database, workers and "
                                                         "engine share one share of the CPUs; none: anywhere"},
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
    else if (strcmp(o->placement, "peer") != 0 && strcmp(o->placement, "none") != 0) usage = cli_usage_error(&command, "--placement: peer or none");
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

    int status = train_prepare_run_dir(run, &error);
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
        status = train_write_json(path, config, &error);
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
        status = train_start_everything(run, train, &attack, self, module_path, &error);
    }
    dataset_free(train);
    train = NULL;
    if (status == SPIRT_OK) status = train_write_peers_json(run, &error);
    if (status == SPIRT_OK) {
        snprintf(path, sizeof(path), "%s/metrics.csv", run->dir);
        run->metrics = fopen(path, "w");
        if (run->metrics == NULL) status = spirt_error_set(&error, SPIRT_ERR_IO, "cannot create %s", path);
        else train_write_metrics_header(run->metrics);
    }
    while (status == SPIRT_OK && train_peers_running(run) && !interrupted) {
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
            train_write_peers_json(run, NULL);
        }
        train_collect_metrics(run);
        train_show_progress(run, 0);
        clock_sleep_ms(100);
    }
    double wall_seconds = (clock_monotonic_ms() - run->start_ms) / 1000.0;
    if (status == SPIRT_OK) {
        cluster_poll(run->cluster);
        train_collect_metrics(run);
        train_show_progress(run, 1);
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
        train_write_peers_json(run, NULL);
        status = train_finish(run, wall_seconds, &error);
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
