/* train_progress.c -- `spirt train` while it runs: reads each peer's
 * metrics stream into metrics.csv and shows the progress (see cmd_train.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/train.h"
#include "spirt/clock.h"
#include "spirt/keys.h"

static const char *const phase_names[] = {"Membership", "Gradients", "Average", "Publish", "Exchange",
                                          "Aggregate",  "Update",    "Evaluate", NULL};

void train_write_metrics_header(FILE *file) {
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
void train_collect_metrics(Run *run) {
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

void train_show_progress(Run *run, int final) {
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

int train_peers_running(const Run *run) {
    for (int i = 0; i < run->options.peers; i++)
        if (run->peers[i].process && !run->peers[i].process->exited) return 1;
    return 0;
}
