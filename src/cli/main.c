/* main.c -- the `spirt` command: dispatches to a subcommand.
 *
 * `spirt CMD --help` documents each subcommand; `spirt --help` lists them. */
#include <malloc.h> /* mallopt */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "spirt/log.h"

typedef struct Subcommand {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} Subcommand;

static const Subcommand subcommands[] = {
    {"train", command_train, "train across peers, each with its own database, on this machine"},
    {"peer", command_peer, "run one peer against its own, already running database"},
    {"worker", command_worker, "serve a peer's function invocations (a warm worker)"},
    {"fn", command_fn, "run one function: JSON event on stdin, JSON result on stdout"},
    {"identity", command_identity, "make or show a peer's key pair"},
    {"fit", command_fit, "train one model in this process (the single-machine reference)"},
    {"eval", command_eval, "evaluate a saved model on the test set"},
    {"bench", command_bench, "run a benchmark side by side with its baseline"},
    {NULL, NULL, NULL},
};
static const size_t subcommand_count = sizeof(subcommands) / sizeof(subcommands[0]) - 1;

static void print_help(FILE *stream) {
    fprintf(stream,
            "usage: spirt COMMAND [options]\n\n"
            "spirt %s: peer-to-peer machine-learning training with in-database aggregation.\n\n"
            "commands:\n",
            SPIRT_VERSION);
    for (size_t i = 0; i < subcommand_count; i++)
        fprintf(stream, "  %-8s %s\n", subcommands[i].name, subcommands[i].summary);
    fprintf(stream, "\n`spirt COMMAND --help` describes a command. Environment: SPIRT_LOG=debug|info|warn|error.\n");
}

int main(int argc, char **argv) {
    /* Workers and peers allocate and free megabyte tensors every round.
     * glibc would serve each from a fresh mmap (and fault in and zero every
     * page again); keep them in the heap, and the heap's top, instead. */
    mallopt(M_MMAP_THRESHOLD, 256 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
    if (argc < 2) {
        print_help(stderr);
        return 2;
    }
    const char *name = argv[1];
    if (strcmp(name, "-h") == 0 || strcmp(name, "--help") == 0 || strcmp(name, "help") == 0) {
        print_help(stdout);
        return 0;
    }
    if (strcmp(name, "--version") == 0 || strcmp(name, "version") == 0) {
        printf("spirt %s\n", SPIRT_VERSION);
        return 0;
    }
    for (size_t i = 0; i < subcommand_count; i++)
        if (strcmp(name, subcommands[i].name) == 0) return subcommands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "spirt: unknown command '%s' (see spirt --help)\n", name);
    return 2;
}
