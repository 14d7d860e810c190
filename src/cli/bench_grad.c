/* bench_grad.c -- `spirt bench grad`: gradient throughput of the nn engine
 * against PyTorch (bench/grad_torch.py), side by side in one run.
 *
 * One step is what a gradient function does per minibatch: zero the
 * gradients, forward with the loss, backward. Both sides run the same
 * architectures (the script is told the cnn's widths) at the same batch on
 * random inputs, on one thread by default, and report the median over
 * --repeats timed runs of --steps steps each, after --warmup steps.
 *
 * Wall time is the figure (speedup = baseline_ms / spirt_ms). Each side
 * also reports its process CPU time per step (*_cpu_ms): on a shared
 * machine wall time includes waiting for a core, CPU time much less so;
 * when the two disagree by more than a fifth, a note says so. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <time.h>

#include "cli/bench.h"
#include "cli/options.h"
#include "spirt/clock.h"
#include "spirt/nn.h"
#include "spirt/rng.h"

typedef struct GradRun {
    NnModel *model;
    const float *images;
    const uint8_t *labels;
    size_t batch;
    int steps;
    int failed;
} GradRun;

static void run_steps(void *context) {
    GradRun *run = context;
    SpirtError error;
    for (int s = 0; s < run->steps; s++) {
        nn_model_zero_grads(run->model);
        if (nn_model_forward(run->model, run->images, run->labels, run->batch, NULL, NULL, &error) != SPIRT_OK ||
            nn_model_backward(run->model, &error) != SPIRT_OK)
            run->failed = 1;
    }
}

static double cpu_ms(void) {
    struct timespec now;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
    return (double)now.tv_sec * 1e3 + (double)now.tv_nsec / 1e6;
}

/* Median wall and CPU milliseconds per step for `kind` into *wall and
 * *cpu; negative *wall on error. */
static void time_spirt(NnModelKind kind, size_t batch, int threads, int warmup, int repeats, int steps, double *wall,
                       double *cpu, SpirtError *error) {
    *wall = *cpu = -1;
    NnModel *model = nn_model_create(kind, batch, error);
    if (model == NULL) return;
    nn_model_set_threads(model, threads);
    nn_model_init_params(model, 1);
    SpirtRng rng;
    rng_init(&rng, 2);
    float *images = malloc(batch * NN_INPUT_FEATURES * sizeof(float));
    uint8_t *labels = malloc(batch);
    double *walls = malloc((size_t)repeats * sizeof(double)), *cpus = malloc((size_t)repeats * sizeof(double));
    if (images == NULL || labels == NULL || walls == NULL || cpus == NULL) {
        spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory for the inputs");
    } else {
        for (size_t i = 0; i < batch * NN_INPUT_FEATURES; i++) images[i] = (float)rng_uniform(&rng);
        for (size_t b = 0; b < batch; b++) labels[b] = (uint8_t)rng_below(&rng, NN_CLASSES);
        GradRun run = {model, images, labels, batch, warmup, 0};
        run_steps(&run);
        run.steps = steps;
        for (int r = 0; r < repeats; r++) {
            double wall_start = clock_monotonic_ms(), cpu_start = cpu_ms();
            run_steps(&run);
            walls[r] = (clock_monotonic_ms() - wall_start) / steps;
            cpus[r] = (cpu_ms() - cpu_start) / steps;
        }
        if (run.failed) {
            spirt_error_set(error, SPIRT_ERR_INTERNAL, "a step failed");
        } else {
            *wall = bench_median(walls, (size_t)repeats);
            *cpu = bench_median(cpus, (size_t)repeats);
        }
    }
    free(walls);
    free(cpus);
    free(images);
    free(labels);
    nn_model_free(model);
}

int bench_grad(int argc, char **argv) {
    const char *models = "mlp,cnn";
    int batch = 64, threads = 1, warmup = 5, repeats = 7, steps = 10, as_json = 0, no_baseline = 0;
    const CliOption options[] = {
        {"models", CLI_STRING, &models, "LIST", "comma-separated: logreg, mlp, cnn (default: mlp,cnn)"},
        {"batch", CLI_INT, &batch, "N", "examples per step (default: 64)"},
        {"threads", CLI_INT, &threads, "T", "threads on both sides (default: 1)"},
        {"warmup", CLI_INT, &warmup, "N", "unmeasured steps first (default: 5)"},
        {"repeats", CLI_INT, &repeats, "N", "timed runs; the median is reported (default: 7)"},
        {"steps", CLI_INT, &steps, "N", "steps per timed run (default: 10)"},
        {"no-baseline", CLI_FLAG, &no_baseline, NULL, "skip PyTorch"},
        {"json", CLI_FLAG, &as_json, NULL, "print one JSON object"},
    };
    const CliCommand command = {"bench grad", "",
                                "Gradient steps per second (zero grads, forward, loss, backward), spirt vs PyTorch.",
                                options, sizeof(options) / sizeof(options[0])};
    int status = cli_parse(&command, argc, argv, NULL, 0, NULL);
    if (status != CLI_PARSED) return status == CLI_EXIT_OK ? 0 : 2;
    if (batch < 1 || batch > 4096) return cli_usage_error(&command, "--batch must be 1 to 4096, not %d", batch);
    if (threads < 1 || threads > 64) return cli_usage_error(&command, "--threads must be 1 to 64, not %d", threads);
    if (warmup < 0 || repeats < 1 || steps < 1)
        return cli_usage_error(&command, "need --warmup >= 0, --repeats >= 1 and --steps >= 1");

    char list[64];
    snprintf(list, sizeof(list), "%s", models);
    NnModelKind kinds[NN_MODEL_KIND_COUNT];
    size_t kind_count = 0;
    SpirtError error;
    for (char *name = strtok(list, ","); name; name = strtok(NULL, ",")) {
        if (kind_count == NN_MODEL_KIND_COUNT || nn_model_kind_parse(name, &kinds[kind_count], &error) != SPIRT_OK)
            return cli_usage_error(&command, "--models: %s", kind_count == NN_MODEL_KIND_COUNT ? "too many" : error.message);
        kind_count++;
    }

    BenchReport *report = bench_report_create("grad");
    if (report == NULL) {
        fprintf(stderr, "spirt bench grad: out of memory\n");
        return 1;
    }
    json_t *baseline = NULL;
    if (!no_baseline) {
        char batch_text[16], threads_text[16], warmup_text[16], repeats_text[16], steps_text[16];
        char conv1[16], conv2[16], hidden[16];
        snprintf(batch_text, sizeof(batch_text), "%d", batch);
        snprintf(threads_text, sizeof(threads_text), "%d", threads);
        snprintf(warmup_text, sizeof(warmup_text), "%d", warmup);
        snprintf(repeats_text, sizeof(repeats_text), "%d", repeats);
        snprintf(steps_text, sizeof(steps_text), "%d", steps);
        snprintf(conv1, sizeof(conv1), "%d", NN_CNN_CONV1_CHANNELS);
        snprintf(conv2, sizeof(conv2), "%d", NN_CNN_CONV2_CHANNELS);
        snprintf(hidden, sizeof(hidden), "%d", NN_CNN_HIDDEN);
        const char *args[] = {"--models", models,  "--batch",     batch_text, "--threads", threads_text,
                              "--warmup", warmup_text, "--repeats", repeats_text, "--steps", steps_text,
                              "--cnn-conv1", conv1, "--cnn-conv2", conv2, "--cnn-hidden", hidden, NULL};
        baseline = bench_run_python("grad_torch.py", args, &error);
        if (baseline == NULL) bench_report_note(report, "no PyTorch baseline: %s", error.message);
        else bench_report_set(report, "torch_version", json_incref(json_object_get(baseline, "torch_version")));
    }

    int worst = 0;
    for (size_t k = 0; k < kind_count; k++) {
        const char *name = nn_model_kind_name(kinds[k]);
        double spirt_ms, spirt_cpu_ms;
        time_spirt(kinds[k], (size_t)batch, threads, warmup, repeats, steps, &spirt_ms, &spirt_cpu_ms, &error);
        json_t *row = bench_report_add_row(report);
        json_object_set_new(row, "model", json_string(name));
        json_object_set_new(row, "batch", json_integer(batch));
        json_object_set_new(row, "threads", json_integer(threads));
        json_object_set_new(row, "param_count", json_integer((json_int_t)nn_model_kind_param_count(kinds[k])));
        if (spirt_ms <= 0) {
            bench_report_note(report, "%s: %s", name, error.message);
            worst = 1;
            continue;
        }
        json_object_set_new(row, "spirt_ms", json_real(spirt_ms));
        json_object_set_new(row, "spirt_cpu_ms", json_real(spirt_cpu_ms));
        json_object_set_new(row, "spirt_samples_per_s", json_real(batch / (spirt_ms / 1e3)));
        if (threads == 1 && spirt_cpu_ms < 0.8 * spirt_ms)
            bench_report_note(report, "%s: spirt's wall time is %.0f%% above its CPU time: the machine is busy", name,
                              100.0 * (spirt_ms / spirt_cpu_ms - 1.0));
        json_t *torch_row = NULL, *candidate;
        size_t index;
        json_array_foreach(json_object_get(baseline, "rows"), index, candidate)
            if (strcmp(json_string_value(json_object_get(candidate, "model")), name) == 0) torch_row = candidate;
        if (torch_row == NULL) continue;
        double baseline_ms = json_number_value(json_object_get(torch_row, "ms_per_step"));
        json_object_set_new(row, "baseline_ms", json_real(baseline_ms));
        json_object_set_new(row, "baseline_cpu_ms", json_incref(json_object_get(torch_row, "cpu_ms_per_step")));
        json_object_set_new(row, "baseline_samples_per_s", json_real(batch / (baseline_ms / 1e3)));
        json_object_set_new(row, "speedup", json_real(baseline_ms / spirt_ms));
        json_int_t torch_params = json_integer_value(json_object_get(torch_row, "param_count"));
        if ((size_t)torch_params != nn_model_kind_param_count(kinds[k]))
            bench_report_note(report, "%s: PyTorch's model has %lld parameters, spirt's %zu: not the same model",
                              name, (long long)torch_params, nn_model_kind_param_count(kinds[k]));
    }
    static const char *const columns[] = {"model",        "batch",           "threads",
                                          "spirt_ms",     "baseline_ms",     "spirt_cpu_ms",
                                          "baseline_cpu_ms", "spirt_samples_per_s", "baseline_samples_per_s",
                                          "speedup",      NULL};
    bench_report_print(report, as_json, columns);
    json_decref(baseline);
    bench_report_free(report);
    return worst;
}
