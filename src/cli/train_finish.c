/* train_finish.c -- `spirt train` at the end: evaluates each peer's final
 * model, finds the model the honest peers agree on, and writes
 * summary.json, the model, the plots and peers.json (see cmd_train.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/train.h"
#include "spirt/keys.h"
#include "spirt/log.h"

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

int train_finish(Run *run, double wall_seconds, SpirtError *error) {
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
    AggConfig aggregator = train_effective_aggregator(&run->options);
    char spec[256];
    run_format_aggregator(&aggregator, spec, sizeof(spec));
    json_object_set_new(summary, "aggregator_spec", json_string(spec)); /* as the peers ran it */
    json_object_set_new(summary, "fallback", fallback ? json_string(fallback) : json_null());
    json_object_set_new(summary, "accuracy_curve", accuracy_curve(run, consensus));
    char path[1100];
    snprintf(path, sizeof(path), "%s/summary.json", run->dir);
    int status = train_write_json(path, summary, error);
    if (consensus) {
        snprintf(path, sizeof(path), "%s/model", run->dir);
        train_make_dir(path, NULL);
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
            if (status == SPIRT_OK) status = train_write_json(path, description, error);
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
