/* bench_robustness.c -- `spirt bench robustness`: how much each aggregation
 * rule keeps of the clean run's accuracy under each attack.
 *
 * One configuration (default: 10 peers, mlp, IID shards, fixed rounds, seed
 * and learning rate), and for each f in --f, each rule and each attack one
 * whole `spirt train` run (a cell): f peers chosen by the seed attack, the
 * honest ones aggregate with the rule assuming f Byzantine peers, and the
 * cell's figure is the honest peers' final test accuracy. The reference is
 * the clean run: plain mean, nobody attacking. "none" in the attack list
 * gives each rule's own clean figure (robust rules cost a little accuracy
 * even without attackers).
 *
 * A rule whose precondition the configuration cannot meet is run at the
 * largest f it allows, and said so (Bulyan needs n >= 4f + 3: with 10 peers
 * it runs assuming f = 1 while 2 attack); if none is allowed the cell is
 * n/a. A rule that fell back to the median during a run (aggregate's
 * fallback) is flagged in every output.
 *
 * Writes into --out: robustness.csv (one row per cell), robustness.md (the
 * tables, accuracy and drop from the clean run in points), one heatmap per
 * f (robustness-f{F}.png, gnuplot), and cells/ with each run's summary.json.
 * Each run's folder (databases, shards) is deleted once read. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/bench.h"
#include "cli/options.h"
#include "cli/self.h"
#include "spirt/agg.h"
#include "spirt/attack.h"
#include "spirt/clock.h"
#include "spirt/fn.h"
#include "spirt/log.h"

enum { MAX_ITEMS = 32 };

typedef struct Setup {
    int peers, batch_size, workers, json, quick;
    uint64_t seed, rounds;
    double lr, exchange_wait;
    const char *model, *optimizer, *partition, *out, *dataset;
    char self[1024];
} Setup;

/* One rule of the matrix: "median", "nnm+median", "cclip:tau=1". */
typedef struct RuleItem {
    char label[96];
    char aggregator[96]; /* the spec for --aggregator (f comes from --f) */
    int nnm;
} RuleItem;

typedef struct Cell {
    const RuleItem *rule;
    const char *attack;
    int f;      /* Byzantine peers (0 for "none") and the f of the matrix */
    int rule_f; /* the f the rule assumed (-1: n/a) */
    double accuracy; /* -1: not run or failed */
    double wall_seconds;
    long long fallback_rounds;
    char fallback[256];
    int agree;
} Cell;

/* Splits a comma-separated list into items (pointers into `buffer`). A
 * piece with '=' but no ':' continues the item before it, so a spec's own
 * parameters can be listed: "mean,cclip:tau=1,iterations=5,median". */
static size_t split_list(char *buffer, char **items, size_t capacity) {
    size_t count = 0;
    char *save = NULL;
    for (char *item = strtok_r(buffer, ",", &save); item && count < capacity; item = strtok_r(NULL, ",", &save)) {
        if (count > 0 && strchr(item, '=') && !strchr(item, ':'))
            item[-1] = ','; /* the comma strtok_r cut: glue it back on */
        else
            items[count++] = item;
    }
    return count;
}

static int parse_rule(const char *text, RuleItem *rule, SpirtError *error) {
    memset(rule, 0, sizeof(*rule));
    const char *name = text;
    if (strncmp(text, "nnm+", 4) == 0) {
        rule->nnm = 1;
        name = text + 4;
    }
    AggConfig parsed;
    if (strlen(text) >= sizeof(rule->label)) return spirt_error_set(error, SPIRT_ERR_INVALID, "rule '%s' is too long", text);
    if (run_parse_aggregator(name, &parsed, error) != SPIRT_OK) return error->code;
    snprintf(rule->label, sizeof(rule->label), "%s", text);
    snprintf(rule->aggregator, sizeof(rule->aggregator), "%s", name);
    return SPIRT_OK;
}

/* The largest f <= wanted for which `rule` runs with n inputs, or -1. */
static int largest_allowed_f(const RuleItem *rule, int n, int wanted) {
    AggConfig spec;
    if (run_parse_aggregator(rule->aggregator, &spec, NULL) != SPIRT_OK) return -1;
    for (int f = wanted; f >= 0; f--) {
        AggConfig config = spec;
        config.f = (size_t)f;
        config.pre_nnm = rule->nnm;
        if (agg_check(&config, (size_t)n, 1, NULL) == SPIRT_OK) return f == 0 && wanted > 0 ? -1 : f;
    }
    return -1;
}

static void cell_name(const Cell *cell, char *buffer, size_t size) {
    snprintf(buffer, size, "%s--%s--f%d", cell->rule->label, cell->attack, cell->f);
}

/* Runs one cell's `spirt train`; fills accuracy (or leaves -1 and notes why). */
static void run_cell(const Setup *setup, Cell *cell, BenchReport *report) {
    char peers[16], rounds[32], lr[32], batch[16], seed[32], workers[16], wait[32], rule_f[16], byzantine[16],
        run_dir[1200], name[200];
    snprintf(peers, sizeof(peers), "%d", setup->peers);
    snprintf(rounds, sizeof(rounds), "%llu", (unsigned long long)setup->rounds);
    snprintf(lr, sizeof(lr), "%g", setup->lr);
    snprintf(batch, sizeof(batch), "%d", setup->batch_size);
    snprintf(seed, sizeof(seed), "%llu", (unsigned long long)setup->seed);
    snprintf(workers, sizeof(workers), "%d", setup->workers);
    snprintf(wait, sizeof(wait), "%g", setup->exchange_wait);
    snprintf(rule_f, sizeof(rule_f), "%d", cell->rule_f);
    int attacked = strcmp(cell->attack, "none") != 0;
    snprintf(byzantine, sizeof(byzantine), "%d", attacked ? cell->f : 0);
    cell_name(cell, name, sizeof(name));
    snprintf(run_dir, sizeof(run_dir), "%s/run-%s", setup->out, name);
    const char *argv[64] = {setup->self, "train", "--peers", peers, "--model", setup->model, "--rounds", rounds,
                            "--lr", lr, "--optimizer", setup->optimizer, "--batch-size", batch, "--seed", seed,
                            "--workers", workers, "--validation", "0", "--evaluate-every", "0", "--partition",
                            setup->partition, "--dataset", setup->dataset, "--exchange-wait", wait, "--aggregator",
                            cell->rule->aggregator, "--f", rule_f, "--byzantine", byzantine, "--out", run_dir,
                            "--json", "--quiet"};
    size_t argc = 38;
    if (cell->rule->nnm) {
        argv[argc++] = "--pre";
        argv[argc++] = "nnm";
    }
    if (attacked) {
        argv[argc++] = "--attack";
        argv[argc++] = cell->attack;
    }
    argv[argc] = NULL;
    if (!setup->json) fprintf(stderr, "bench robustness: %-18s %-11s f=%d ... ", cell->rule->label, cell->attack, cell->f);
    /* A folder left by an interrupted run would be refused by train. */
    char command[1400];
    snprintf(command, sizeof(command), "rm -rf '%s'", run_dir);
    if (system(command) != 0) bench_report_note(report, "could not remove %s", run_dir);
    double start = clock_monotonic_ms();
    SpirtError error;
    json_t *summary = bench_run_json(argv, &error);
    cell->wall_seconds = (clock_monotonic_ms() - start) / 1000.0;
    if (summary) {
        cell->accuracy = json_number_value(json_object_get(summary, "test_accuracy"));
        cell->fallback_rounds = (long long)json_integer_value(json_object_get(summary, "fallback_rounds"));
        const char *fallback = json_string_value(json_object_get(summary, "fallback"));
        snprintf(cell->fallback, sizeof(cell->fallback), "%s", fallback ? fallback : "");
        cell->agree = json_is_true(json_object_get(summary, "digests_agree"));
        /* Keep the summary (small), not the run folder (every peer's shard
         * is in its database's files: hundreds of MB a cell). */
        json_object_del(summary, "counters_by_peer");
        char path[1400];
        snprintf(path, sizeof(path), "%s/cells/%s.json", setup->out, name);
        if (json_dump_file(summary, path, JSON_INDENT(1) | JSON_SORT_KEYS) != 0)
            bench_report_note(report, "could not write %s", path);
        json_decref(summary);
    } else {
        bench_report_note(report, "%s: %s", name, error.message);
    }
    if (!setup->json) {
        if (cell->accuracy >= 0)
            fprintf(stderr, "%.4f (%.0f s)%s\n", cell->accuracy, cell->wall_seconds, cell->fallback_rounds ? " fallback" : "");
        else
            fprintf(stderr, "failed (%.0f s): %s\n", cell->wall_seconds, error.message);
    }
    if (system(command) != 0) bench_report_note(report, "could not remove %s", run_dir);
}

static const Cell *find_cell(const Cell *cells, size_t count, const RuleItem *rule, const char *attack, int f) {
    for (size_t i = 0; i < count; i++)
        if (cells[i].rule == rule && strcmp(cells[i].attack, attack) == 0 && cells[i].f == f) return &cells[i];
    return NULL;
}

/* Creates `name` in the output folder (its path into path[1100]); NULL,
 * and a note in the report, if it cannot. */
static FILE *create_output(const Setup *setup, const char *name, char path[1100], BenchReport *report) {
    snprintf(path, 1100, "%s/%s", setup->out, name);
    FILE *file = fopen(path, "w");
    if (file == NULL) bench_report_note(report, "cannot write %s", path);
    return file;
}

static void write_csv(const Setup *setup, const Cell *cells, size_t count, double clean, BenchReport *report) {
    char path[1100];
    FILE *file = create_output(setup, "robustness.csv", path, report);
    if (file == NULL) return;
    fprintf(file, "rule,pre,rule_f,attack,f,test_accuracy,clean_accuracy,drop_points,rule_clean_accuracy,"
                  "fallback_rounds,fallback,digests_agree,wall_seconds\n");
    for (size_t i = 0; i < count; i++) {
        const Cell *cell = &cells[i];
        const Cell *own_clean = find_cell(cells, count, cell->rule, "none", cell->f);
        /* Specs may hold commas ("cclip:tau=1,iterations=2"): quoted. */
        fprintf(file, "\"%s\",%s,", cell->rule->aggregator, cell->rule->nnm ? "nnm" : "none");
        if (cell->rule_f >= 0) fprintf(file, "%d", cell->rule_f);
        fprintf(file, ",\"%s\",%d,", cell->attack, cell->f);
        if (cell->accuracy >= 0) fprintf(file, "%.4f", cell->accuracy);
        fprintf(file, ",%.4f,", clean);
        if (cell->accuracy >= 0 && clean >= 0) fprintf(file, "%.2f", 100.0 * (clean - cell->accuracy));
        fprintf(file, ",");
        if (own_clean && own_clean->accuracy >= 0) fprintf(file, "%.4f", own_clean->accuracy);
        /* Fallback reasons contain commas: quoted. */
        fprintf(file, ",%lld,\"%s\",%s,%.1f\n", cell->fallback_rounds, cell->fallback, cell->agree ? "yes" : "no",
                cell->wall_seconds);
    }
    fclose(file);
}

/* The markdown tables (one per f) and the gnuplot heatmaps. */
static void write_tables(const Setup *setup, const Cell *cells, size_t count, const RuleItem *rules, size_t rule_count,
                         char **attacks, size_t attack_count, const int *fs, size_t f_count, double clean,
                         double total_seconds, BenchReport *report) {
    char path[1100];
    FILE *md = create_output(setup, "robustness.md", path, report);
    if (md == NULL) return;
    fprintf(md, "# Robustness matrix\n\n%d peers, %s, %s, %llu rounds of %d per peer, %s lr %g (cosine), seed %llu, "
                "%d worker per peer. Final test accuracy of the honest peers' model; in brackets the difference from "
                "the clean run (mean, nobody attacking: %.4f) in points. * = the rule fell back to the median in some "
                "rounds; n/a = the rule cannot run with these n and f. Matrix: %.0f min.\n",
            setup->peers, setup->model, setup->partition, (unsigned long long)setup->rounds, setup->batch_size,
            setup->optimizer, setup->lr, (unsigned long long)setup->seed, setup->workers, clean, total_seconds / 60.0);
    for (size_t k = 0; k < f_count; k++) {
        int f = fs[k];
        fprintf(md, "\n## f = %d (%d of %d peers attack)\n\n| rule |", f, f, setup->peers);
        for (size_t a = 0; a < attack_count; a++) fprintf(md, " %s |", attacks[a]);
        fprintf(md, "\n|---|");
        for (size_t a = 0; a < attack_count; a++) fprintf(md, "---|");
        fprintf(md, "\n");
        char data_path[1100], name[64];
        snprintf(name, sizeof(name), "heatmap-f%d.dat", f);
        FILE *data = create_output(setup, name, data_path, report);
        if (data) {
            fprintf(data, "rule");
            for (size_t a = 0; a < attack_count; a++) fprintf(data, " %s", attacks[a]);
            fprintf(data, "\n");
        }
        for (size_t r = 0; r < rule_count; r++) {
            const Cell *first = find_cell(cells, count, &rules[r], attacks[0], f);
            char label[128];
            if (first && first->rule_f >= 0 && first->rule_f != f)
                snprintf(label, sizeof(label), "%.95s (assumes f=%d)", rules[r].label, first->rule_f);
            else
                snprintf(label, sizeof(label), "%.95s", rules[r].label);
            fprintf(md, "| %s |", label);
            if (data) {
                /* gnuplot splits headers at white space unless quoted. */
                fprintf(data, "\"%s\"", label);
            }
            for (size_t a = 0; a < attack_count; a++) {
                const Cell *cell = find_cell(cells, count, &rules[r], attacks[a], f);
                if (cell == NULL || cell->rule_f < 0) {
                    fprintf(md, " n/a |");
                    if (data) fprintf(data, " NaN");
                } else if (cell->accuracy < 0) {
                    fprintf(md, " failed |");
                    if (data) fprintf(data, " NaN");
                } else {
                    if (strcmp(attacks[a], "none") == 0)
                        fprintf(md, " %.4f%s |", cell->accuracy, cell->fallback_rounds ? "*" : "");
                    else
                        fprintf(md, " %.4f (%+.1f)%s |", cell->accuracy, -100.0 * (clean - cell->accuracy),
                                cell->fallback_rounds ? "*" : "");
                    if (data) fprintf(data, " %.4f", cell->accuracy);
                }
            }
            fprintf(md, "\n");
            if (data) fprintf(data, "\n");
        }
        if (data) fclose(data);
        /* The heatmap: rows rules, columns attacks, labels the accuracy;
         * the colour spans 30 points below the clean run, so a drop of 1
         * point is visible and anything past 30 is simply red. */
        char script_path[1100], png_path[1100], command[2400];
        snprintf(png_path, sizeof(png_path), "%s/robustness-f%d.png", setup->out, f);
        snprintf(name, sizeof(name), "heatmap-f%d.gp", f);
        FILE *script = create_output(setup, name, script_path, report);
        if (script == NULL) continue;
        fprintf(script,
                "set terminal pngcairo size %d,%d noenhanced\n"
                "set output '%s'\n"
                "set title 'final test accuracy: %d peers, f = %d, %s, %s (clean %.4f)'\n"
                "set palette defined (0 '#b2182b', 0.7 '#fddbc7', 0.9 '#f7f7f7', 1 '#1a9850')\n"
                "set cbrange [%.4f:%.4f]\n"
                "set xtics rotate by -30 left\n"
                "set yrange [] reverse\n"
                "unset key\n"
                "plot '%s' matrix rowheaders columnheaders with image, \\\n"
                "     '' matrix rowheaders columnheaders using 1:2:($3 == $3 ? sprintf('%%.3f', $3) : 'n/a') "
                "with labels font ',10'\n",
                260 + 110 * (int)attack_count, 160 + 38 * (int)rule_count, png_path, setup->peers, f, setup->model,
                setup->partition, clean, clean > 0.3 ? clean - 0.3 : 0.0, clean > 0 ? clean : 1.0, data_path);
        fclose(script);
        snprintf(command, sizeof(command), "gnuplot '%s' >/dev/null 2>&1", script_path);
        if (system(command) != 0) bench_report_note(report, "gnuplot failed: no %s (the data is in %s)", png_path, data_path);
    }
    fclose(md);
}

int bench_robustness(int argc, char **argv) {
    Setup setup = {.peers = 10, .batch_size = 128, .workers = 1, .seed = 1, .rounds = 100, .lr = 0.005,
                   .exchange_wait = 10, .model = "mlp", .optimizer = "adam", .partition = "iid",
                   .dataset = "fashion-mnist", .out = NULL};
    static const char default_rules[] = "mean,median,trimmed-mean,krum,multi-krum,bulyan,geomed,cclip,nnm+median,"
                                        "nnm+trimmed-mean";
    static const char default_attacks[] = "none,sign-flip,gaussian,label-flip,alie,ipm,mimic";
    const char *rule_list = default_rules, *attack_list = default_attacks;
    const char *f_list = "2";
    const CliOption options[] = {
        {"peers", CLI_INT, &setup.peers, "N", "peers (default 10)"},
        {"f", CLI_STRING, &f_list, "LIST", "numbers of Byzantine peers, each also the f the rules assume (default 2)"},
        {"rules", CLI_STRING, &rule_list, "LIST", "rules, with parameters if wanted (cclip:tau=1); nnm+RULE mixes "
                                                  "first (default: every rule, nnm+median, nnm+trimmed-mean)"},
        {"attacks", CLI_STRING, &attack_list, "LIST", "attacks, with parameters if wanted (alie:z=1), none for the "
                                                      "clean runs (default: none, sign-flip, gaussian, label-flip, "
                                                      "alie, ipm, mimic)"},
        {"partition", CLI_STRING, &setup.partition, "P", "iid or dirichlet:ALPHA (default iid)"},
        {"model", CLI_STRING, &setup.model, "NAME", "logreg, mlp or cnn (default mlp)"},
        {"rounds", CLI_U64, &setup.rounds, "R", "rounds per run (default 100: 2.1 epochs of the 60000 examples)"},
        {"lr", CLI_DOUBLE, &setup.lr, "X", "learning rate, cosine down to 0 (default 0.005)"},
        {"optimizer", CLI_STRING, &setup.optimizer, "NAME", "optimizer (default adam)"},
        {"batch-size", CLI_INT, &setup.batch_size, "S", "examples per peer and round (default 128)"},
        {"seed", CLI_U64, &setup.seed, "N", "seed of every run (default 1)"},
        {"workers", CLI_INT, &setup.workers, "W", "function workers per peer (default 1)"},
        {"exchange-wait", CLI_DOUBLE, &setup.exchange_wait, "SEC", "exchange wait (default 10)"},
        {"dataset", CLI_STRING, &setup.dataset, "SRC", "fashion-mnist or a folder of MNIST-format files"},
        {"out", CLI_STRING, &setup.out, "DIR", "output folder, created (default robustness-DATE)"},
        {"quick", CLI_FLAG, &setup.quick, NULL, "a small subset: mean, median, nnm+median x none, sign-flip, alie "
                                                "(unless --rules / --attacks are given)"},
        {"json", CLI_FLAG, &setup.json, NULL, "one JSON object on stdout"},
    };
    const CliCommand command = {"bench robustness", "",
                                "Final test accuracy of each rule under each attack, one spirt train run per cell.",
                                options, sizeof(options) / sizeof(options[0])};
    int parsed = cli_parse(&command, argc, argv, NULL, 0, NULL);
    if (parsed != CLI_PARSED) return parsed == CLI_EXIT_OK ? 0 : 2;
    /* --quick shrinks the lists not given explicitly. */
    if (setup.quick && rule_list == default_rules) rule_list = "mean,median,nnm+median";
    if (setup.quick && attack_list == default_attacks) attack_list = "none,sign-flip,alie";
    if (setup.peers < 2 || setup.peers > 64) return cli_usage_error(&command, "--peers must be 2 to 64");
    if (setup.rounds < 1 || !(setup.lr > 0) || setup.batch_size < 1 || setup.workers < 1)
        return cli_usage_error(&command, "--rounds, --lr, --batch-size and --workers must be positive");
    char rules_buffer[512], attacks_buffer[512], fs_buffer[128];
    snprintf(rules_buffer, sizeof(rules_buffer), "%s", rule_list);
    snprintf(attacks_buffer, sizeof(attacks_buffer), "%s", attack_list);
    snprintf(fs_buffer, sizeof(fs_buffer), "%s", f_list);
    char *rule_texts[MAX_ITEMS], *attacks[MAX_ITEMS], *f_texts[MAX_ITEMS];
    size_t rule_count = split_list(rules_buffer, rule_texts, MAX_ITEMS);
    size_t attack_count = split_list(attacks_buffer, attacks, MAX_ITEMS);
    size_t f_count = split_list(fs_buffer, f_texts, MAX_ITEMS);
    if (rule_count == 0 || attack_count == 0 || f_count == 0)
        return cli_usage_error(&command, "--rules, --attacks and --f need at least one item each");
    RuleItem rules[MAX_ITEMS];
    SpirtError error;
    for (size_t r = 0; r < rule_count; r++)
        if (parse_rule(rule_texts[r], &rules[r], &error) != SPIRT_OK)
            return cli_usage_error(&command, "--rules: %s", error.message);
    for (size_t a = 0; a < attack_count; a++) {
        AttackConfig attack;
        if (strcmp(attacks[a], "none") != 0 && attack_parse(attacks[a], &attack, &error) != SPIRT_OK)
            return cli_usage_error(&command, "--attacks: %s", error.message);
    }
    int fs[MAX_ITEMS];
    for (size_t k = 0; k < f_count; k++) {
        fs[k] = atoi(f_texts[k]);
        if (fs[k] < 1 || fs[k] >= setup.peers)
            return cli_usage_error(&command, "--f: '%s' is not a number of Byzantine peers (1 to peers - 1)", f_texts[k]);
    }
    if (cli_self_path(setup.self, sizeof(setup.self)) != 0) return 1;
    static char out_default[256], dataset_path[1024];
    if (setup.out == NULL) {
        time_t now = time(NULL);
        struct tm local;
        localtime_r(&now, &local);
        strftime(out_default, sizeof(out_default), "robustness-%Y%m%d-%H%M%S", &local);
        setup.out = out_default;
    }
    /* The runs work in other folders: absolute paths. */
    if (strcmp(setup.dataset, "fashion-mnist") != 0 && realpath(setup.dataset, dataset_path)) setup.dataset = dataset_path;
    char cells_dir[1100];
    snprintf(cells_dir, sizeof(cells_dir), "%s/cells", setup.out);
    if ((mkdir(setup.out, 0755) != 0 && access(setup.out, W_OK) != 0) || (mkdir(cells_dir, 0755) != 0 && access(cells_dir, W_OK) != 0)) {
        fprintf(stderr, "spirt bench robustness: cannot create %s\n", cells_dir);
        return 1;
    }
    static char out_absolute[1024];
    if (realpath(setup.out, out_absolute)) setup.out = out_absolute;

    BenchReport *report = bench_report_create("robustness");
    double load_before[3] = {0};
    getloadavg(load_before, 3);
    double start = clock_monotonic_ms();
    /* The reference first: the plain mean with nobody attacking. */
    RuleItem reference_rule;
    parse_rule("mean", &reference_rule, NULL);
    Cell reference = {.rule = &reference_rule, .attack = "none", .f = 0, .rule_f = 0, .accuracy = -1};
    const Cell *clean_cell = NULL;
    size_t capacity = f_count * rule_count * attack_count;
    Cell *cells = calloc(capacity, sizeof(Cell));
    size_t count = 0;
    for (size_t k = 0; cells && k < f_count; k++)
        for (size_t r = 0; r < rule_count; r++)
            for (size_t a = 0; a < attack_count; a++) {
                Cell *cell = &cells[count++];
                *cell = (Cell){.rule = &rules[r], .attack = attacks[a], .f = fs[k], .accuracy = -1};
                cell->rule_f = largest_allowed_f(&rules[r], setup.peers, fs[k]);
                /* mean with nobody attacking is the reference: whatever f it
                 * assumes, the mean ignores it. */
                if (!rules[r].nnm && strcmp(rules[r].aggregator, "mean") == 0 && strcmp(attacks[a], "none") == 0)
                    clean_cell = cell;
            }
    if (cells == NULL) {
        bench_report_free(report);
        return 1;
    }
    if (clean_cell == NULL) {
        run_cell(&setup, &reference, report);
        clean_cell = &reference;
    }
    int failures = 0;
    /* The clean cell of the matrix first (if it is one), so every later
     * line of progress can be read against it. */
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < count; i++) {
            Cell *cell = &cells[i];
            if ((pass == 0) != (cell == clean_cell) || cell->rule_f < 0) continue;
            /* The mean with nobody attacking ignores f: one run serves every f. */
            if (pass == 1 && cell->rule == clean_cell->rule && strcmp(cell->attack, "none") == 0) {
                Cell copy = *clean_cell;
                copy.f = cell->f;
                copy.rule_f = cell->rule_f;
                *cell = copy;
                continue;
            }
            run_cell(&setup, cell, report);
            failures += cell->accuracy < 0;
        }
    double total_seconds = (clock_monotonic_ms() - start) / 1000.0;
    double clean = clean_cell->accuracy;
    double load_after[3] = {0};
    getloadavg(load_after, 3);

    for (size_t i = 0; i < count; i++) {
        const Cell *cell = &cells[i];
        const Cell *own_clean = find_cell(cells, count, cell->rule, "none", cell->f);
        json_t *row = bench_report_add_row(report);
        json_object_set_new(row, "rule", json_string(cell->rule->aggregator));
        json_object_set_new(row, "pre", json_string(cell->rule->nnm ? "nnm" : "none"));
        json_object_set_new(row, "label", json_string(cell->rule->label));
        json_object_set_new(row, "attack", json_string(cell->attack));
        json_object_set_new(row, "f", json_integer(cell->f));
        json_object_set_new(row, "rule_f", cell->rule_f >= 0 ? json_integer(cell->rule_f) : json_null());
        int ran = cell->accuracy >= 0;
        json_object_set_new(row, "test_accuracy", ran ? json_real(cell->accuracy) : json_null());
        json_object_set_new(row, "clean_accuracy", clean >= 0 ? json_real(clean) : json_null());
        json_object_set_new(row, "drop", ran && clean >= 0 ? json_real(clean - cell->accuracy) : json_null());
        json_object_set_new(row, "rule_clean_accuracy",
                            own_clean && own_clean->accuracy >= 0 ? json_real(own_clean->accuracy) : json_null());
        json_object_set_new(row, "fallback", cell->fallback_rounds ? json_string(cell->fallback) : json_null());
        json_object_set_new(row, "fallback_rounds", json_integer(cell->fallback_rounds));
        json_object_set_new(row, "digests_agree", json_boolean(cell->agree));
        json_object_set_new(row, "wall_s", ran ? json_real(cell->wall_seconds) : json_null());
    }
    write_csv(&setup, cells, count, clean, report);
    write_tables(&setup, cells, count, rules, rule_count, attacks, attack_count, fs, f_count, clean, total_seconds, report);
    for (size_t i = 0; i < count; i++)
        if (cells[i].rule_f >= 0 && cells[i].rule_f != cells[i].f && strcmp(cells[i].attack, attacks[0]) == 0)
            bench_report_note(report, "%s cannot run with n = %d and f = %d: run assuming f = %d", cells[i].rule->label,
                              setup.peers, cells[i].f, cells[i].rule_f);
        else if (cells[i].rule_f < 0 && strcmp(cells[i].attack, attacks[0]) == 0)
            bench_report_note(report, "%s cannot run with n = %d and f = %d, nor any f >= 1: n/a", cells[i].rule->label,
                              setup.peers, cells[i].f);
    bench_report_set(report, "clean_accuracy", json_real(clean));
    bench_report_set(report, "out", json_string(setup.out));
    bench_report_set(report, "total_seconds", json_real(total_seconds));
    bench_report_note(report, "clean run (mean, no attack): %.4f; matrix took %.1f min; load average %.2f before, %.2f "
                              "after (%ld cores)",
                      clean, total_seconds / 60.0, load_before[0], load_after[0], sysconf(_SC_NPROCESSORS_ONLN));
    bench_report_note(report, "tables and heatmaps in %s", setup.out);
    const char *columns[] = {"label", "attack", "f", "rule_f", "test_accuracy", "drop", "fallback_rounds", "wall_s", NULL};
    bench_report_print(report, setup.json, columns);
    bench_report_free(report);
    free(cells);
    return failures ? 1 : 0;
}
