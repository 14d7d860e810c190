/* test_train.c -- `spirt train` end to end, with real processes: databases,
 * peers and workers, on a small subset of the real Fashion-MNIST.
 *
 * Checked: peers that see the same inputs end with one model; the run folder
 * holds what it promises; injected worker crashes and hangs change nothing in
 * the result; a peer killed mid-run is left out and the others finish; a
 * worker started by hand takes a share of a peer's invocations, and one that
 * dies mid-invocation loses nothing; bad inputs give one line and a non-zero
 * exit; and no process is left behind, ever.
 * SPIRT_TEST_LABELS: db slow */
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "spirt/clock.h"
#include "spirt/tensor.h"
#include "test.h"
#include "test_process.h"

static char dataset[600];

/* The options every run here shares: 3 peers, logreg, small batches. */
#define COMMON "--peers", "3", "--model", "logreg", "--batch-size", "16", "--batches-per-round", "2", \
               "--validation", "100", "--evaluate-every", "5", "--dataset", dataset, "--seed", "3",      \
               "--exchange-wait", "5", "--json"

static json_t *load_summary(const char *run_dir) {
    char path[1200];
    snprintf(path, sizeof(path), "%s/summary.json", run_dir);
    return json_load_file(path, 0, NULL);
}

static const json_t *peer_entry(const json_t *summary, const char *id) {
    size_t index;
    const json_t *peer;
    json_array_foreach(json_object_get(summary, "peers"), index, peer) if (
        strcmp(json_string_value(json_object_get(peer, "id")), id) == 0) return peer;
    return NULL;
}

static int no_processes_left(const char *run_dir) {
    /* Children may take a moment to be reaped after the parent exits. */
    for (int i = 0; i < 100; i++) {
        if (test_count_processes_mentioning(run_dir) == 0) return 1;
        clock_sleep_ms(50);
    }
    return 0;
}

static int count_lines(const char *path) {
    FILE *file = fopen(path, "r");
    if (file == NULL) return -1;
    int lines = 0, c;
    while ((c = fgetc(file)) != EOF) lines += c == '\n';
    fclose(file);
    return lines;
}

static char clean_digest[SPIRT_DIGEST_HEX_SIZE];

static void test_clean_run(void) {
    test_begin("a clean run: one model, a complete run folder, nothing left running");
    char out[600];
    test_temp_path(out, sizeof(out), "clean");
    const char *argv[] = {test_spirt_path(), "train", COMMON, "--rounds", "12", "--out", out, NULL};
    char *stdout_text = NULL, *stderr_text = NULL;
    int status = test_run(argv, 300, &stdout_text, &stderr_text);
    CHECKF(status == 0, "exit %d: %s", status, stderr_text);
    json_t *printed = json_loads(stdout_text, 0, NULL);
    json_t *summary = load_summary(out);
    CHECK(printed && summary && json_equal(json_object_get(printed, "params_digest"), json_object_get(summary, "params_digest")));
    CHECK(json_is_true(json_object_get(summary, "digests_agree")));
    CHECK(json_integer_value(json_object_get(summary, "rounds")) == 12);
    CHECK(json_number_value(json_object_get(summary, "test_accuracy")) > 0.3);
    const char *digest = json_string_value(json_object_get(summary, "params_digest"));
    snprintf(clean_digest, sizeof(clean_digest), "%s", digest ? digest : "");
    for (int i = 0; i < 3; i++) {
        char id[24];
        snprintf(id, sizeof(id), "peer-%d", i);
        const json_t *peer = peer_entry(summary, id);
        CHECKF(peer && strcmp(json_string_value(json_object_get(peer, "status")), "ok") == 0 &&
                   strcmp(json_string_value(json_object_get(peer, "params_digest")), clean_digest) == 0,
               "%s", id);
    }
    char path[1200];
    snprintf(path, sizeof(path), "%s/metrics.csv", out);
    CHECKF(count_lines(path) == 1 + 3 * 12, "metrics.csv has %d lines", count_lines(path));
    snprintf(path, sizeof(path), "%s/model/params.tensor", out);
    Tensor *model = tensor_file_read(path, NULL);
    char file_digest[SPIRT_DIGEST_HEX_SIZE] = "";
    if (model) tensor_digest_hex(model->data, model->count, file_digest);
    CHECK(model && model->count == 7850 && strcmp(file_digest, clean_digest) == 0);
    tensor_free(model);
    const char *files[] = {"peers.json", "config.json", "model/model.json", "accuracy.png", "time.png",
                           "peer-0/identity.key", "peer-2/peer.json"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", out, files[i]);
        CHECKF(access(path, R_OK) == 0, "%s is missing", files[i]);
    }
    CHECK(no_processes_left(out));
    json_decref(printed);
    json_decref(summary);
    free(stdout_text);
    free(stderr_text);
}

static void test_injected_faults(void) {
    test_begin("workers that crash and hang: reclaimed, retried, and the same model");
    char out[600];
    test_temp_path(out, sizeof(out), "faults");
    /* The exchange wait must exceed the longest delay the faults can pile
     * up (hangs, reclaims, restarts of crashed workers, a loaded machine):
     * a peer left out of one round would end with another model. Healthy
     * peers never wait that long; the option given last wins. */
    const char *argv[] = {test_spirt_path(), "train", COMMON, "--rounds", "12", "--out", out, "--crash-rate", "0.08",
                          "--hang-rate", "0.08", "--hang-ms", "1500", "--visibility-ms", "300", "--exchange-wait", "60",
                          NULL};
    char *stderr_text = NULL;
    int status = test_run(argv, 300, NULL, &stderr_text);
    CHECKF(status == 0, "exit %d: %s", status, stderr_text);
    json_t *summary = load_summary(out);
    const json_t *counters = json_object_get(summary, "counters");
    CHECKF(json_integer_value(json_object_get(counters, "reclaims")) > 0, "no invocation was reclaimed");
    CHECKF(json_integer_value(json_object_get(counters, "cold_starts")) > 6, "no crashed worker was restarted");
    const char *digest = json_string_value(json_object_get(summary, "params_digest"));
    CHECKF(digest && strcmp(digest, clean_digest) == 0, "digest %s, clean run %s", digest ? digest : "-", clean_digest);
    CHECK(no_processes_left(out));
    json_decref(summary);
    free(stderr_text);
}

/* Reads peers.json until it lists pids (the run has started). */
static json_t *wait_for_peers(const char *out) {
    char path[1200];
    snprintf(path, sizeof(path), "%s/peers.json", out);
    for (int i = 0; i < 600; i++) {
        json_t *peers = json_load_file(path, 0, NULL);
        if (json_array_size(peers) == 3) return peers;
        json_decref(peers);
        clock_sleep_ms(100);
    }
    return NULL;
}

/* Waits until metrics.csv has at least `lines` lines. */
static void wait_for_lines(const char *out, int lines) {
    char path[1200];
    snprintf(path, sizeof(path), "%s/metrics.csv", out);
    for (int i = 0; i < 1200 && count_lines(path) < lines; i++) clock_sleep_ms(100);
}

static void test_killed_peer(void) {
    test_begin("a peer killed mid-run: left out, the others finish without stalling");
    char out[600], log[700];
    test_temp_path(out, sizeof(out), "kill");
    snprintf(log, sizeof(log), "%s.log", out);
    const char *argv[] = {test_spirt_path(), "train", COMMON, "--rounds", "40", "--out", out, NULL};
    pid_t train = test_spawn(argv, log);
    json_t *peers = wait_for_peers(out);
    CHECK(peers != NULL);
    wait_for_lines(out, 1 + 3 * 8);
    pid_t victim = (pid_t)json_integer_value(json_object_get(json_array_get(peers, 1), "pid"));
    CHECK(victim > 0 && kill(victim, SIGKILL) == 0);
    int status = test_wait(train, 300);
    CHECKF(status == 0, "exit %d (see %s)", status, log);
    json_t *summary = load_summary(out);
    const json_t *dead = peer_entry(summary, "peer-1");
    CHECK(dead && strcmp(json_string_value(json_object_get(dead, "status")), "dead") == 0);
    for (int i = 0; i < 3; i += 2) {
        char id[24];
        snprintf(id, sizeof(id), "peer-%d", i);
        const json_t *peer = peer_entry(summary, id);
        CHECKF(peer && strcmp(json_string_value(json_object_get(peer, "status")), "ok") == 0 &&
                   json_integer_value(json_object_get(peer, "rounds_completed")) == 40,
               "%s did not finish", id);
    }
    CHECK(json_is_true(json_object_get(summary, "digests_agree")));
    /* No round of a survivor waited much past the heartbeat's time to live
     * (3 s) for the dead peer, let alone forever. */
    char path[1200];
    snprintf(path, sizeof(path), "%s/metrics.csv", out);
    FILE *file = fopen(path, "r");
    char line[2048];
    double longest = 0;
    while (file && fgets(line, sizeof(line), file)) {
        char *fields[8] = {0};
        char *save = NULL, *field = strtok_r(line, ",", &save);
        for (int k = 0; field && k < 8; k++, field = strtok_r(NULL, ",", &save)) fields[k] = field;
        if (fields[1] && strcmp(fields[1], "peer-1") != 0 && fields[6]) {
            double round_ms = atof(fields[6]);
            if (round_ms > longest) longest = round_ms;
        }
    }
    if (file) fclose(file);
    CHECKF(longest < 5000 + 3000, "a survivor's round took %.0f ms", longest);
    CHECK(no_processes_left(out));
    json_decref(summary);
    json_decref(peers);
}

static void test_scale_out(void) {
    test_begin("scale-out: a hand-started worker takes a share; one that dies mid-invocation loses nothing");
    char out[600], log[700], helper_log[700], crasher_log[700];
    test_temp_path(out, sizeof(out), "scale");
    snprintf(log, sizeof(log), "%s.log", out);
    snprintf(helper_log, sizeof(helper_log), "%s.helper.log", out);
    snprintf(crasher_log, sizeof(crasher_log), "%s.crasher.log", out);
    const char *argv[] = {test_spirt_path(), "train", COMMON, "--rounds", "12", "--out", out, "--workers", "1", NULL};
    pid_t train = test_spawn(argv, log);
    json_t *peers = wait_for_peers(out);
    const char *db = json_string_value(json_object_get(json_array_get(peers, 0), "db"));
    char key[700];
    snprintf(key, sizeof(key), "%s/peer-0/identity.key", out);
    /* One that dies on the first invocation it takes, before answering... */
    const char *crasher[] = {test_spirt_path(), "worker", "--db", db, "--identity", key, "--name", "crasher",
                             "--crash-rate", "1", NULL};
    pid_t crasher_pid = test_spawn(crasher, crasher_log);
    /* ...and one that helps for the rest of the run. */
    const char *helper[] = {test_spirt_path(), "worker", "--db", db, "--identity", key, "--name", "helper", NULL};
    pid_t helper_pid = test_spawn(helper, helper_log);
    int status = test_wait(train, 300);
    CHECKF(status == 0, "exit %d (see %s)", status, log);
    CHECK(test_wait(crasher_pid, 30) == 3);
    /* Its database is gone with the run: it has stopped or stops now. */
    kill(helper_pid, SIGTERM);
    CHECK(test_wait(helper_pid, 30) >= 0);
    json_t *summary = load_summary(out);
    const json_t *counters = json_object_get(json_object_get(summary, "counters_by_peer"), "peer-0");
    long long helped = json_integer_value(json_object_get(counters, "invocations:helper"));
    long long crashed = json_integer_value(json_object_get(counters, "invocations:crasher"));
    CHECKF(helped > 0, "the hand-started worker served %lld invocations", helped);
    CHECKF(crashed == 1, "the crashing worker took %lld", crashed);
    CHECKF(json_integer_value(json_object_get(counters, "reclaims")) >= 1, "nothing was reclaimed");
    const char *digest = json_string_value(json_object_get(summary, "params_digest"));
    CHECKF(digest && strcmp(digest, clean_digest) == 0, "digest %s, clean run %s", digest ? digest : "-", clean_digest);
    CHECK(no_processes_left(out));
    json_decref(summary);
    json_decref(peers);
}

static int one_line(const char *text) {
    const char *newline = strchr(text, '\n');
    return text[0] && newline && newline[1] == '\0';
}

static void test_bad_inputs(void) {
    test_begin("bad inputs: one line, a non-zero exit, nothing started or left");
    char out[600], workflow[600], config[600];
    test_temp_path(out, sizeof(out), "bad");
    test_temp_path(workflow, sizeof(workflow), "bad-round.json");
    FILE *file = fopen(workflow, "w");
    fputs("{\"StartAt\": \"A\", \"States\": {\"A\": {\"Type\": \"Pass\", \"Next\": \"Nowhere\"}}}", file);
    fclose(file);
    char *errors = NULL;
    const char *bad_workflow[] = {test_spirt_path(), "train", COMMON, "--rounds", "3", "--out", out, "--workflow", workflow, NULL};
    int status = test_run(bad_workflow, 60, NULL, &errors);
    CHECKF(status == 1 && one_line(errors) && strstr(errors, "Nowhere"), "exit %d: %s", status, errors);
    free(errors);
    const char *no_dataset[] = {test_spirt_path(), "train", "--dataset", "/nonexistent/data", "--out", out, NULL};
    status = test_run(no_dataset, 60, NULL, &errors);
    CHECKF(status == 1 && one_line(errors) && strstr(errors, "/nonexistent/data"), "exit %d: %s", status, errors);
    free(errors);
    const char *bad_option[] = {test_spirt_path(), "train", "--peers", "zero", NULL};
    status = test_run(bad_option, 60, NULL, &errors);
    CHECKF(status == 2 && strncmp(errors, "spirt train: --peers", 20) == 0, "exit %d: %s", status, errors);
    free(errors);

    /* A peer whose database does not answer. */
    test_temp_path(config, sizeof(config), "peer.json");
    file = fopen(config, "w");
    fprintf(file, "{\"peer_id\": \"peer-0\", \"db\": \"127.0.0.1:1\", \"identity\": \"nokey\", \"workflow\": \"%s/workflows/round.json\", "
                  "\"peers\": [], \"data\": {}}", SPIRT_SOURCE_DIR);
    fclose(file);
    const char *peer[] = {test_spirt_path(), "peer", "--config", config, NULL};
    status = test_run(peer, 60, NULL, &errors);
    CHECKF(status == 1 && one_line(errors), "exit %d: %s", status, errors);
    free(errors);

    /* A function given a bad event. */
    char event_path[600];
    test_temp_path(event_path, sizeof(event_path), "event.json");
    char *output = NULL;
    char command[2000];
    snprintf(command, sizeof(command), "echo '{\"round\": 1}' | '%s' fn average > '%s' 2>/dev/null", test_spirt_path(),
             event_path);
    status = system(command);
    json_t *failure = json_load_file(event_path, 0, NULL);
    CHECKF(WEXITSTATUS(status) == 1 && json_string_value(json_object_get(failure, "error")) &&
               strstr(json_string_value(json_object_get(failure, "cause")), "'peer'"),
           "exit %d", WEXITSTATUS(status));
    json_decref(failure);
    free(output);
    CHECK(no_processes_left(out));
}

int main(void) {
    test_temp_path(dataset, sizeof(dataset), "fashion-small");
    if (test_write_small_dataset(dataset, 9000, 2000) != 0) {
        test_check(0, __FILE__, __LINE__, "test_write_small_dataset", "could not write the small dataset");
        return test_finish();
    }
    test_clean_run();
    test_injected_faults();
    test_killed_peer();
    test_scale_out();
    test_bad_inputs();
    return test_finish();
}
