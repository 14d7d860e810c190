/* bench_e2e.c -- `spirt bench e2e`: whole training runs, side by side.
 *
 * For each number of peers N it runs `spirt train --peers N` and the PyTorch
 * DistributedDataParallel baseline (bench/e2e_ddp.py) with N processes, the
 * same model, global batch (N x B x S), learning rate and epochs, and
 * reports the time per epoch of each (training time, startup and evaluation
 * excluded on both sides) and the time until the test accuracy first reaches
 * the target (spirt: from the snapshots `spirt train --snapshot-every` keeps;
 * DDP: from its evaluations, at the same rounds). `spirt fit`, one process,
 * is the single-process reference row.
 *
 * Both sides run B minibatches of S per process per round (DDP with
 * --per-minibatch), so their matrix products have the same sizes. On this
 * 2-core machine N > 2 over-subscribes the cores on both sides alike (spirt
 * also runs N databases and N x W workers): compare N with N, not across N. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/bench.h"
#include "cli/options.h"
#include "cli/self.h"
#include "spirt/clock.h"

/* The first time in `curve` ([[round, seconds, accuracy], ...]) at which the
 * accuracy reaches `target`; -1 if never. */
static double time_to_target(const json_t *curve, double target) {
    size_t index;
    const json_t *point;
    json_array_foreach(curve, index, point) {
        if (json_number_value(json_array_get(point, 2)) >= target) return json_number_value(json_array_get(point, 1));
    }
    return -1;
}

static json_t *seconds_or_null(double seconds) { return seconds >= 0 ? json_real(seconds) : json_null(); }

int bench_e2e(int argc, char **argv) {
    const char *peer_list = "1,2,4,8", *model = "mlp", *optimizer = "adam";
    double epochs = 2, target = 0.85, lr = 0.003;
    int batch_size = 128, batches = 1, json = 0, quick = 0, workers = 1, inline_functions = 0, pin_baseline = 0;
    const char *placement = "peer";
    const CliOption options[] = {
        {"peers", CLI_STRING, &peer_list, "LIST", "numbers of peers, e.g. 1,2,4,8 (default)"},
        {"model", CLI_STRING, &model, "NAME", "logreg, mlp or cnn (default mlp)"},
        {"epochs", CLI_DOUBLE, &epochs, "E", "epochs per run (default 2)"},
        {"target", CLI_DOUBLE, &target, "A", "test accuracy for time-to-target (default 0.85)"},
        {"batch-size", CLI_INT, &batch_size, "S", "examples per minibatch (default 128)"},
        {"batches-per-round", CLI_INT, &batches, "B", "minibatches per peer and round (default 1)"},
        {"optimizer", CLI_STRING, &optimizer, "NAME", "sgd, momentum or adam (default adam)"},
        {"lr", CLI_DOUBLE, &lr, "X", "learning rate (default 0.003)"},
        {"workers", CLI_INT, &workers, "W", "spirt's warm workers per peer (default 1)"},
        {"inline", CLI_FLAG, &inline_functions, NULL,
         "spirt runs its functions inside the peer processes (spirt train --inline): the round without workers"},
        {"placement", CLI_STRING, &placement, "NAME", "spirt train --placement: peer (default) or none"},
        {"pin-baseline", CLI_FLAG, &pin_baseline, NULL,
         "pin DDP's rank r to CPU r mod n, as --placement peer places spirt's peers (default: the kernel places "
         "them, as torch.multiprocessing does)"},
        {"quick", CLI_FLAG, &quick, NULL, "1 and 2 peers, 1 epoch"},
        {"json", CLI_FLAG, &json, NULL, "one JSON object on stdout"},
    };
    const CliCommand command = {"bench e2e", "", "Time per epoch and to a target accuracy: spirt train vs PyTorch DDP.",
                                options, sizeof(options) / sizeof(options[0])};
    int parsed = cli_parse(&command, argc, argv, NULL, 0, NULL);
    if (parsed != CLI_PARSED) return parsed == CLI_EXIT_OK ? 0 : 2;
    if (quick) {
        peer_list = "1,2";
        epochs = 1;
    }
    if (!(epochs > 0) || batch_size < 1 || batches < 1) return cli_usage_error(&command, "epochs, batch sizes must be > 0");
    if (strcmp(placement, "peer") != 0 && strcmp(placement, "none") != 0)
        return cli_usage_error(&command, "--placement: peer or none");
    char self[1024];
    if (cli_self_path(self, sizeof(self)) != 0) return 1;
    BenchReport *report = bench_report_create("e2e");
    char list[128];
    snprintf(list, sizeof(list), "%s", peer_list);
    char *save = NULL;
    int failures = 0;
    for (char *item = strtok_r(list, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        int peers = atoi(item);
        if (peers < 1 || peers > 64) {
            bench_report_free(report);
            return cli_usage_error(&command, "--peers: '%s' is not a number of peers", item);
        }
        /* Four test-accuracy points per epoch on both sides. */
        size_t shard = 60000 / (size_t)peers;
        long rounds_per_epoch = (long)ceil((double)shard / (double)(batch_size * batches));
        long every = rounds_per_epoch / 4 > 0 ? rounds_per_epoch / 4 : 1;
        char peers_text[16], epochs_text[32], batch_text[16], batches_text[16], lr_text[32], every_text[32],
            target_text[32], workers_text[16], out[256];
        snprintf(peers_text, sizeof(peers_text), "%d", peers);
        snprintf(epochs_text, sizeof(epochs_text), "%g", epochs);
        snprintf(batch_text, sizeof(batch_text), "%d", batch_size);
        snprintf(batches_text, sizeof(batches_text), "%d", batches);
        snprintf(lr_text, sizeof(lr_text), "%g", lr);
        snprintf(every_text, sizeof(every_text), "%ld", every);
        snprintf(target_text, sizeof(target_text), "%g", target);
        snprintf(workers_text, sizeof(workers_text), "%d", workers);
        snprintf(out, sizeof(out), "/tmp/spirt-bench-e2e-%ld-%d", (long)getpid(), peers);
        const char *train[] = {self, "train", "--peers", peers_text, "--model", model, "--epochs", epochs_text,
                               "--batch-size", batch_text, "--batches-per-round", batches_text, "--optimizer", optimizer,
                               "--lr", lr_text, "--validation", "0", "--evaluate-every", "0", "--snapshot-every",
                               every_text, "--workers", workers_text, "--placement", placement, "--out", out, "--json",
                               "--quiet", inline_functions ? "--inline" : NULL, NULL};
        if (!json) fprintf(stderr, "bench e2e: spirt train, %d peers...\n", peers);
        SpirtError error;
        json_t *spirt = bench_run_json(train, &error);
        char remove_command[300];
        snprintf(remove_command, sizeof(remove_command), "rm -rf '%s'", out);
        if (system(remove_command) != 0) bench_report_note(report, "could not remove %s", out);
        if (!json) fprintf(stderr, "bench e2e: PyTorch DDP, %d processes...\n", peers);
        const char *ddp_args[] = {"--processes", peers_text, "--model", model, "--epochs", epochs_text,
                                  "--batch-size", batch_text, "--batches-per-round", batches_text, "--optimizer",
                                  optimizer, "--lr", lr_text, "--eval-every", every_text, "--target-accuracy",
                                  target_text, "--per-minibatch", pin_baseline ? "--pin" : NULL, NULL};
        SpirtError baseline_error;
        json_t *ddp = bench_run_python("e2e_ddp.py", ddp_args, &baseline_error);
        json_t *row = bench_report_add_row(report);
        json_object_set_new(row, "peers", json_integer(peers));
        json_object_set_new(row, "model", json_string(model));
        json_object_set_new(row, "global_batch", json_integer(peers * batches * batch_size));
        json_object_set_new(row, "epochs", json_real(epochs));
        double spirt_epoch = -1, ddp_epoch = -1;
        if (spirt) {
            double train_seconds = json_number_value(json_object_get(spirt, "train_seconds"));
            double actual_epochs = json_number_value(json_object_get(spirt, "epochs"));
            spirt_epoch = actual_epochs > 0 ? train_seconds / actual_epochs : -1;
            json_object_set_new(row, "spirt_epoch_s", seconds_or_null(spirt_epoch));
            json_object_set_new(row, "spirt_wall_s", json_real(json_number_value(json_object_get(spirt, "wall_seconds"))));
            json_object_set_new(row, "spirt_time_to_target_s",
                                seconds_or_null(time_to_target(json_object_get(spirt, "accuracy_curve"), target)));
            json_object_set_new(row, "spirt_test_accuracy", json_real(json_number_value(json_object_get(spirt, "test_accuracy"))));
            json_object_set_new(row, "spirt_peers_agree", json_boolean(json_is_true(json_object_get(spirt, "digests_agree"))));
        } else {
            failures++;
            bench_report_note(report, "spirt train with %d peers failed: %s", peers, error.message);
        }
        if (ddp) {
            ddp_epoch = json_number_value(json_object_get(ddp, "time_per_epoch_s"));
            json_object_set_new(row, "baseline_epoch_s", seconds_or_null(ddp_epoch));
            json_object_set_new(row, "baseline_wall_s", json_real(json_number_value(json_object_get(ddp, "train_seconds")) +
                                                                  json_number_value(json_object_get(ddp, "eval_seconds")) +
                                                                  json_number_value(json_object_get(ddp, "startup_seconds"))));
            json_t *to_target = json_object_get(ddp, "time_to_target_s");
            json_object_set_new(row, "baseline_time_to_target_s", json_is_number(to_target) ? json_real(json_number_value(to_target)) : json_null());
            json_object_set_new(row, "baseline_test_accuracy",
                                json_real(json_number_value(json_object_get(ddp, "final_test_accuracy"))));
        } else {
            bench_report_note(report, "DDP baseline with %d processes: %s", peers, baseline_error.message);
        }
        json_object_set_new(row, "speedup", spirt_epoch > 0 && ddp_epoch > 0 ? json_real(ddp_epoch / spirt_epoch) : json_null());
        json_decref(spirt);
        json_decref(ddp);
    }
    bench_report_note(report, "epoch times exclude start-up and evaluation on both sides; speedup = DDP epoch / spirt epoch");
    if (inline_functions)
        bench_report_note(report, "spirt: functions inside the peer processes (--inline), no workers");
    else
        bench_report_note(report, "spirt: %d warm worker(s) per peer, invoked through its database's stream", workers);
    bench_report_note(report, "spirt --placement %s; DDP's ranks %s", placement,
                      pin_baseline ? "pinned to CPU r mod n (--pin-baseline)" : "placed by the kernel");
    bench_report_note(report, "this machine has %ld cores: N > cores over-subscribes both sides", sysconf(_SC_NPROCESSORS_ONLN));
    const char *columns[] = {"peers", "global_batch", "spirt_epoch_s", "baseline_epoch_s", "speedup",
                             "spirt_time_to_target_s", "baseline_time_to_target_s", "spirt_test_accuracy",
                             "baseline_test_accuracy", NULL};
    bench_report_print(report, json, columns);
    bench_report_free(report);
    return failures ? 1 : 0;
}
