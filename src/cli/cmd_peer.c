/* cmd_peer.c -- `spirt peer --config FILE`: one peer against its own,
 * already running database, for deployments where peers are separate
 * machines. The configuration file is documented in docs/runtime.md. */
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

int command_peer(int argc, char **argv) {
    const char *config_path = NULL;
    int inline_functions = 0;
    const CliOption options[] = {
        {"config", CLI_STRING, &config_path, "FILE", "the peer's configuration (JSON; required)"},
        {"inline", CLI_FLAG, &inline_functions, NULL, "run functions in this process instead of on workers"},
    };
    const CliCommand command = {"peer", "", "Run one peer: prepare its database, then run the rounds.", options,
                                sizeof(options) / sizeof(options[0])};
    int status = cli_parse(&command, argc, argv, NULL, 0, NULL);
    if (status != CLI_PARSED) return status == CLI_EXIT_OK ? 0 : 2;
    if (config_path == NULL) return cli_usage_error(&command, "--config is required");
    json_error_t parse_error;
    json_t *config = json_load_file(config_path, JSON_REJECT_DUPLICATES, &parse_error);
    if (config == NULL) {
        fprintf(stderr, "spirt peer: %s:%d:%d: %s\n", config_path, parse_error.line, parse_error.column,
                parse_error.text);
        return 1;
    }
    if (inline_functions) json_object_set_new(config, "inline", json_true());
    const char *peer_id = json_string_value(json_object_get(config, "peer_id"));
    spirt_log_set_tag(peer_id ? peer_id : "peer");
    signal(SIGINT, on_stop);
    signal(SIGTERM, on_stop);
    signal(SIGPIPE, SIG_IGN);
    PeerOptions peer = {.config = config, .config_path = config_path, .stop = &stop_requested};
    SpirtError error;
    status = peer_run(&peer, &error);
    json_decref(config);
    if (status != SPIRT_OK) {
        fprintf(stderr, "spirt peer: %s\n", error.message);
        return 1;
    }
    return 0;
}
