/* cmd_bench.c -- `spirt bench NAME`: runs one of the project's benchmarks,
 * each in its own file bench_NAME.c (see bench.h). */
#include <stdio.h>
#include <string.h>

#include "cli/bench.h"
#include "cli/commands.h"

typedef struct Benchmark {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
    int in_all; /* run by `spirt bench all`; the matrix of whole runs is too long for it */
} Benchmark;

static const Benchmark benchmarks[] = {
    /* BENCHMARKS: each benchmark adds its line here. */
    {"agg", bench_agg, "aggregation rules vs NumPy, and the mean vs memory bandwidth", 1},
    {"e2e", bench_e2e, "time per epoch and to a target accuracy: spirt train vs PyTorch DDP", 1},
    {"indb", bench_indb, "average B gradients + SGD step: in the database vs a client vs Lua/JSON", 1},
    {"grad", bench_grad, "gradient steps per second of mlp and cnn, spirt vs PyTorch", 1},
    {"store", bench_store, "SET/GET and SPIRT.TSET/TGET of 1 MB and 16 MB values: store client vs hiredis", 1},
    {"robustness", bench_robustness, "final accuracy of each rule under each attack (spirt train per cell)", 0},
    {NULL, NULL, NULL, 0},
};

static void print_help(FILE *stream) {
    fprintf(stream, "usage: spirt bench NAME [options] [--json]\n\nbenchmarks:\n");
    for (size_t i = 0; benchmarks[i].name; i++) fprintf(stream, "  %-12s %s\n", benchmarks[i].name, benchmarks[i].summary);
    fprintf(stream, "  %-12s %s\n", "all", "every benchmark above but robustness (about 25 min a matrix), in turn");
    fprintf(stream, "\n`spirt bench NAME --help` lists a benchmark's options.\n");
}

int command_bench(int argc, char **argv) {
    if (argc < 2) {
        print_help(stderr);
        return 2;
    }
    const char *name = argv[1];
    if (strcmp(name, "-h") == 0 || strcmp(name, "--help") == 0) {
        print_help(stdout);
        return 0;
    }
    if (strcmp(name, "all") == 0) {
        int worst = 0;
        for (size_t i = 0; benchmarks[i].name; i++) {
            if (!benchmarks[i].in_all) continue;
            char *bench_argv[] = {(char *)benchmarks[i].name, NULL};
            int status = benchmarks[i].run(1, bench_argv);
            if (status > worst) worst = status;
        }
        return worst;
    }
    for (size_t i = 0; benchmarks[i].name; i++)
        if (strcmp(name, benchmarks[i].name) == 0) return benchmarks[i].run(argc - 1, argv + 1);
    fprintf(stderr, "spirt bench: unknown benchmark '%s' (see spirt bench --help)\n", name);
    return 2;
}
