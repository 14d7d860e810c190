/* cmd_worker.c -- `spirt worker --db ADDR`: a warm function worker serving
 * one peer's invocation stream, until SIGINT/SIGTERM. Started by `spirt
 * train` (W per peer), or by hand, on any machine that reaches the peer's
 * database, to scale that peer out. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/options.h"
#include "spirt/log.h"
#include "spirt/peer.h"

static volatile sig_atomic_t stop_requested;

static void on_stop(int signal_number) {
    (void)signal_number;
    stop_requested = 1;
}

int command_worker(int argc, char **argv) {
    const char *db = NULL, *identity = NULL, *name = NULL;
    int visibility_ms = 2000, hang_ms = 10000, threads = 1;
    double crash_rate = 0, hang_rate = 0;
    uint64_t fault_seed = 1, max_invocations = 0;
    const CliOption options[] = {
        {"db", CLI_STRING, &db, "ADDR", "the peer's database, host:port or redis[s]://... (required)"},
        {"identity", CLI_STRING, &identity, "FILE", "the peer's key file (needed by publish)"},
        {"name", CLI_STRING, &name, "NAME", "consumer name in the group (default: host-pid)"},
        {"visibility-ms", CLI_INT, &visibility_ms, "MS", "take over invocations pending longer (default 2000)"},
        {"threads", CLI_INT, &threads, "N", "compute threads per invocation (default 1)"},
        {"max-invocations", CLI_U64, &max_invocations, "N", "stop after N invocations (default: never)"},
        {"crash-rate", CLI_DOUBLE, &crash_rate, "P", "test: crash on this fraction of invocations"},
        {"hang-rate", CLI_DOUBLE, &hang_rate, "P", "test: hang on this fraction of invocations"},
        {"hang-ms", CLI_INT, &hang_ms, "MS", "test: how long a hang lasts (default 10000)"},
        {"fault-seed", CLI_U64, &fault_seed, "N", "test: seed of the injected faults (default 1)"},
    };
    const CliCommand command = {"worker", "", "Serve a peer's function invocations from its database's stream.",
                                options, sizeof(options) / sizeof(options[0])};
    int status = cli_parse(&command, argc, argv, NULL, 0, NULL);
    if (status != CLI_PARSED) return status == CLI_EXIT_OK ? 0 : 2;
    if (db == NULL) return cli_usage_error(&command, "--db is required");
    if (crash_rate < 0 || hang_rate < 0 || crash_rate + hang_rate > 1)
        return cli_usage_error(&command, "--crash-rate and --hang-rate must be >= 0 and add up to at most 1");
    if (visibility_ms < 10) return cli_usage_error(&command, "--visibility-ms must be >= 10");

    signal(SIGINT, on_stop);
    signal(SIGTERM, on_stop);
    signal(SIGPIPE, SIG_IGN);
    char tag[96];
    snprintf(tag, sizeof(tag), "worker %s", name ? name : "");
    spirt_log_set_tag(tag);
    WorkerOptions worker = {.db = db, .identity_path = identity, .name = name, .visibility_ms = visibility_ms,
                            .threads = threads, .max_invocations = max_invocations, .crash_rate = crash_rate,
                            .hang_rate = hang_rate, .hang_ms = hang_ms, .fault_seed = fault_seed,
                            .stop = &stop_requested};
    SpirtError error;
    if (worker_run(&worker, &error) != SPIRT_OK) {
        fprintf(stderr, "spirt worker: %s\n", error.message);
        return 1;
    }
    return 0;
}
