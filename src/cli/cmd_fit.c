/* cmd_fit.c -- `spirt fit`: trains one model in one process, with no
 * database and no peers.
 *
 * It is the reference the distributed runs are compared with: the same
 * model, data, optimizer and seed as a peer would use, in the plainest
 * loop -- shuffle, gather a batch, zero the gradient, forward, backward,
 * optimizer step -- and the same bits every time it is run with the same
 * options (the params_digest in the output says so). Each epoch prints one
 * progress line (stdout, or stderr with --json); the end prints the test
 * accuracy, or with --json one JSON object on stdout. --out DIR saves the
 * model for `spirt eval` (cli/model_dir.h).
 *
 * Data: the training split's pixels are normalised with its own mean and
 * standard deviation, and the same transform is applied to the validation
 * and test images (and saved with the model). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/model_dir.h"
#include "cli/options.h"
#include "spirt/clock.h"
#include "spirt/data.h"
#include "spirt/nn.h"
#include "spirt/optim.h"
#include "spirt/tensor.h"

/* Per-model defaults for --optimizer and --lr: what reaches the accuracy
 * targets of docs/architecture.md in 5 epochs at batch 64 with seed 1. */
typedef struct ModelDefaults {
    const char *optimizer;
    double learning_rate;
} ModelDefaults;

static const ModelDefaults model_defaults[NN_MODEL_KIND_COUNT] = {
    [NN_LOGREG] = {"sgd", 0.05},
    [NN_MLP] = {"adam", 0.001},
    [NN_CNN] = {"adam", 0.001},
};

typedef struct FitOptions {
    const char *model, *dataset, *optimizer, *out, *schedule;
    int epochs, batch_size, threads, as_json;
    double learning_rate, momentum, weight_decay;
    uint64_t seed, validation, train_limit, max_steps;
} FitOptions;

/* Everything the run owns, freed in one place. */
typedef struct FitRun {
    Dataset *train, *validation, *test;
    NnModel *model;
    float *optimizer_state, *images;
    uint8_t *labels;
    size_t *indices;
    DataBatcher batcher;
    json_t *history;
} FitRun;

static void fit_run_free(FitRun *run) {
    dataset_free(run->train);
    dataset_free(run->validation);
    dataset_free(run->test);
    nn_model_free(run->model);
    free(run->optimizer_state);
    free(run->images);
    free(run->labels);
    free(run->indices);
    data_batcher_deinit(&run->batcher);
    json_decref(run->history);
}

static int fail(FitRun *run, const SpirtError *error) {
    fprintf(stderr, "spirt fit: %s\n", error->message);
    fit_run_free(run);
    return 1;
}

/* Loads the splits, keeps a validation part, limits the training part,
 * and normalises all of them with the training part's statistics. */
static int load_data(const FitOptions *options, FitRun *run, float *mean, float *std, SpirtError *error) {
    Dataset *full = data_load(options->dataset, DATA_TRAIN, error);
    if (full == NULL) return error->code;
    run->test = data_load(options->dataset, DATA_TEST, error);
    if (run->test == NULL) {
        dataset_free(full);
        return error->code;
    }
    if (full->features != NN_INPUT_FEATURES || run->test->features != NN_INPUT_FEATURES) {
        dataset_free(full);
        return spirt_error_set(error, SPIRT_ERR_SHAPE, "%s: images of %zux%zu pixels (the models take 28x28)",
                               options->dataset, full->rows, full->cols);
    }
    if (options->validation >= full->count) {
        size_t count = full->count;
        dataset_free(full);
        return spirt_error_set(error, SPIRT_ERR_INVALID, "--validation %llu leaves nothing of %zu examples to train on",
                               (unsigned long long)options->validation, count);
    }
    int status = data_split_validation(full, options->validation, options->seed, &run->train, &run->validation, error);
    dataset_free(full);
    if (status != SPIRT_OK) return status;
    if (options->train_limit > 0 && options->train_limit < run->train->count) {
        size_t *first = malloc(options->train_limit * sizeof(size_t));
        if (first == NULL) return spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory");
        for (size_t i = 0; i < options->train_limit; i++) first[i] = i;
        Dataset *limited = data_subset(run->train, first, options->train_limit, error);
        free(first);
        if (limited == NULL) return error->code;
        dataset_free(run->train);
        run->train = limited;
    }
    data_statistics(run->train, mean, std);
    if ((status = data_normalize(run->train, *mean, *std, error)) != SPIRT_OK) return status;
    if ((status = data_normalize(run->test, *mean, *std, error)) != SPIRT_OK) return status;
    if (run->validation->count > 0) status = data_normalize(run->validation, *mean, *std, error);
    return status;
}

int command_fit(int argc, char **argv) {
    FitOptions o = {"mlp", "fashion-mnist", NULL, NULL, "cosine", 5, 64, 1, 0, NAN, 0.9, 0.0, 1, 0, 0, 0};
    const CliOption options[] = {
        {"model", CLI_STRING, &o.model, "NAME", "logreg, mlp or cnn (default: mlp)"},
        {"epochs", CLI_INT, &o.epochs, "N", "passes over the training data (default: 5)"},
        {"batch-size", CLI_INT, &o.batch_size, "N", "examples per step (default: 64)"},
        {"optimizer", CLI_STRING, &o.optimizer, "NAME",
         "sgd, momentum, nesterov, adam or adamw (default: per model, see --lr)"},
        {"lr", CLI_DOUBLE, &o.learning_rate, "X",
         "learning rate (defaults: logreg sgd 0.05, mlp and cnn adam 0.001)"},
        {"schedule", CLI_STRING, &o.schedule, "NAME",
         "learning rate over the run: constant, or cosine from --lr down to 0 (default: cosine)"},
        {"momentum", CLI_DOUBLE, &o.momentum, "X", "momentum of momentum/nesterov (default: 0.9)"},
        {"weight-decay", CLI_DOUBLE, &o.weight_decay, "X", "L2 weight decay (default: 0)"},
        {"seed", CLI_U64, &o.seed, "N", "initialisation, validation split and shuffling (default: 1)"},
        {"dataset", CLI_STRING, &o.dataset, "NAME|PATH", "fashion-mnist, or a folder of MNIST-format files"},
        {"validation", CLI_U64, &o.validation, "N", "training examples held out for validation (default: 0)"},
        {"train-limit", CLI_U64, &o.train_limit, "N", "train on the first N examples only (default: all)"},
        {"max-steps", CLI_U64, &o.max_steps, "N", "stop after N optimizer steps (default: no limit)"},
        {"threads", CLI_INT, &o.threads, "T", "threads for the matrix products and the optimizer (default: 1)"},
        {"out", CLI_STRING, &o.out, "DIR", "save the trained model in DIR (params.tensor, model.json)"},
        {"json", CLI_FLAG, &o.as_json, NULL, "print one JSON object on stdout (progress goes to stderr)"},
    };
    const CliCommand command = {"fit", "", "Train one model in this process and report its test accuracy.", options,
                                sizeof(options) / sizeof(options[0])};
    int parsed = cli_parse(&command, argc, argv, NULL, 0, NULL);
    if (parsed != CLI_PARSED) return parsed == CLI_EXIT_OK ? 0 : 2;

    SpirtError error;
    NnModelKind kind;
    if (nn_model_kind_parse(o.model, &kind, &error) != SPIRT_OK) return cli_usage_error(&command, "--model: %s", error.message);
    if (o.epochs < 1) return cli_usage_error(&command, "--epochs must be at least 1, not %d", o.epochs);
    if (o.batch_size < 1 || o.batch_size > 65536)
        return cli_usage_error(&command, "--batch-size must be 1 to 65536, not %d", o.batch_size);
    if (o.threads < 1 || o.threads > 64) return cli_usage_error(&command, "--threads must be 1 to 64, not %d", o.threads);
    if (o.optimizer == NULL) o.optimizer = model_defaults[kind].optimizer;
    if (isnan(o.learning_rate)) o.learning_rate = model_defaults[kind].learning_rate;
    OptimConfig optimizer = optim_config_default(OPTIM_SGD, (float)o.learning_rate);
    optimizer.momentum = (float)o.momentum;
    optimizer.weight_decay = (float)o.weight_decay;
    optimizer.threads = o.threads;
    if (optim_kind_parse(o.optimizer, &optimizer, &error) != SPIRT_OK ||
        optim_config_check(&optimizer, &error) != SPIRT_OK)
        return cli_usage_error(&command, "%s", error.message);

    int cosine = strcmp(o.schedule, "cosine") == 0;
    if (!cosine && strcmp(o.schedule, "constant") != 0)
        return cli_usage_error(&command, "--schedule: '%s' is not constant or cosine", o.schedule);

    double start_ms = clock_monotonic_ms();
    FitRun run;
    memset(&run, 0, sizeof(run));
    float mean = 0, std = 1;
    if (load_data(&o, &run, &mean, &std, &error) != SPIRT_OK) return fail(&run, &error);
    size_t batch = (size_t)o.batch_size;
    run.model = nn_model_create(kind, batch, &error);
    if (run.model == NULL) return fail(&run, &error);
    nn_model_set_threads(run.model, o.threads);
    nn_model_init_params(run.model, o.seed);
    size_t count = nn_model_param_count(run.model), state_count = optim_state_count(&optimizer, count);
    run.optimizer_state = state_count ? calloc(state_count, sizeof(float)) : NULL;
    run.images = malloc(batch * NN_INPUT_FEATURES * sizeof(float));
    run.labels = malloc(batch);
    run.indices = malloc(batch * sizeof(size_t));
    run.history = json_array();
    if ((state_count && !run.optimizer_state) || !run.images || !run.labels || !run.indices || !run.history) {
        spirt_error_set(&error, SPIRT_ERR_NOMEM, "out of memory");
        return fail(&run, &error);
    }
    if (data_batcher_init(&run.batcher, run.train->count, batch, o.seed, 0, &error) != SPIRT_OK) return fail(&run, &error);

    /* The steps the run will take: what the cosine schedule spans. */
    uint64_t planned = (uint64_t)o.epochs * data_batcher_batches(&run.batcher);
    if (o.max_steps > 0 && o.max_steps < planned) planned = o.max_steps;
    FILE *progress = o.as_json ? stderr : stdout;
    fprintf(progress, "fit %s (%zu parameters) on %zu examples, %s lr %g (%s), batch %zu, seed %llu\n",
            nn_model_kind_name(kind), count, run.train->count, o.optimizer, o.learning_rate, o.schedule, batch,
            (unsigned long long)o.seed);
    double train_start_ms = clock_monotonic_ms();
    uint64_t steps = 0;
    double last_loss = NAN;
    int epochs_run = 0;
    for (int epoch = 1; epoch <= o.epochs && (o.max_steps == 0 || steps < o.max_steps); epoch++) {
        double epoch_start_ms = clock_monotonic_ms(), loss_sum = 0;
        size_t seen = 0, right = 0, n;
        while ((o.max_steps == 0 || steps < o.max_steps) && (n = data_batcher_next(&run.batcher, run.indices)) > 0) {
            data_gather(run.train, run.indices, n, run.images, run.labels);
            float loss;
            size_t correct;
            /* cosine: lr_t = lr (1 + cos(pi t / T)) / 2 for steps t = 0..T-1,
             * from lr to just above 0, in double so every run agrees. */
            if (cosine)
                optimizer.learning_rate =
                    (float)(o.learning_rate * 0.5 * (1.0 + cos(M_PI * (double)steps / (double)planned)));
            nn_model_zero_grads(run.model);
            if (nn_model_forward(run.model, run.images, run.labels, n, &loss, &correct, &error) != SPIRT_OK ||
                nn_model_backward(run.model, &error) != SPIRT_OK ||
                optim_step_checked(&optimizer, nn_model_params(run.model), nn_model_grads(run.model),
                                   run.optimizer_state, count, steps + 1, &error) != SPIRT_OK) {
                spirt_error_prefix(&error, "epoch %d, step %llu", epoch, (unsigned long long)(steps + 1));
                return fail(&run, &error);
            }
            steps++;
            loss_sum += (double)loss * n;
            seen += n;
            right += correct;
        }
        epochs_run = epoch;
        last_loss = loss_sum / (double)seen;
        json_t *record = json_pack("{s:i, s:f, s:f, s:f}", "epoch", epoch, "train_loss", last_loss, "train_accuracy",
                                   (double)right / (double)seen, "seconds",
                                   (clock_monotonic_ms() - epoch_start_ms) / 1e3);
        char validation_text[48] = "";
        if (run.validation->count > 0) {
            double validation_loss;
            size_t validation_right;
            if (nn_model_evaluate(run.model, run.validation->images, run.validation->labels, run.validation->count,
                                  &validation_loss, &validation_right, &error) != SPIRT_OK) {
                json_decref(record);
                return fail(&run, &error);
            }
            double accuracy = (double)validation_right / (double)run.validation->count;
            json_object_set_new(record, "validation_accuracy", json_real(accuracy));
            json_object_set_new(record, "validation_loss", json_real(validation_loss));
            snprintf(validation_text, sizeof(validation_text), "  validation accuracy %.4f", accuracy);
        }
        json_array_append_new(run.history, record);
        fprintf(progress, "epoch %d/%d  train loss %.4f  train accuracy %.4f%s  %.1f s\n", epoch, o.epochs,
                last_loss, (double)right / (double)seen, validation_text, (clock_monotonic_ms() - epoch_start_ms) / 1e3);
        fflush(progress);
    }
    double train_seconds = (clock_monotonic_ms() - train_start_ms) / 1e3;

    double test_loss;
    size_t test_right;
    if (nn_model_evaluate(run.model, run.test->images, run.test->labels, run.test->count, &test_loss, &test_right,
                          &error) != SPIRT_OK)
        return fail(&run, &error);
    double test_accuracy = (double)test_right / (double)run.test->count;
    char digest[SPIRT_DIGEST_HEX_SIZE];
    tensor_digest_hex(nn_model_params(run.model), count, digest);

    json_t *result = json_pack(
        "{s:s, s:I, s:s, s:s, s:f, s:f, s:i, s:i, s:I, s:I, s:i, s:I, s:I, s:I, s:f, s:f, s:f, s:s, s:f, s:f, s:O}",
        "model", nn_model_kind_name(kind), "param_count", (json_int_t)count, "dataset", o.dataset, "optimizer",
        o.optimizer, "learning_rate", o.learning_rate, "weight_decay", o.weight_decay, "batch_size", o.batch_size,
        "epochs", epochs_run, "steps", (json_int_t)steps, "seed", (json_int_t)o.seed, "threads", o.threads,
        "train_examples", (json_int_t)run.train->count, "validation_examples", (json_int_t)run.validation->count,
        "test_examples", (json_int_t)run.test->count, "test_accuracy", test_accuracy, "test_loss", test_loss,
        "final_train_loss", last_loss, "params_digest", digest, "train_seconds", train_seconds, "wall_seconds",
        (clock_monotonic_ms() - start_ms) / 1e3, "history", run.history);
    if (result == NULL) {
        spirt_error_set(&error, SPIRT_ERR_NOMEM, "out of memory");
        return fail(&run, &error);
    }
    if (optimizer.kind == OPTIM_MOMENTUM) json_object_set_new(result, "momentum", json_real(o.momentum));
    json_object_set_new(result, "schedule", json_string(o.schedule));
    if (o.out) {
        if (model_dir_save(o.out, run.model, mean, std, result, &error) != SPIRT_OK) {
            json_decref(result);
            return fail(&run, &error);
        }
        json_object_set_new(result, "out", json_string(o.out));
    }
    if (o.as_json) {
        char *text = json_dumps(result, JSON_COMPACT);
        if (text) printf("%s\n", text);
        free(text);
    } else {
        printf("test accuracy %.4f  test loss %.4f  (%llu steps, %.1f s training, %.1f s in all)\nparams digest %s\n",
               test_accuracy, test_loss, (unsigned long long)steps, train_seconds,
               (clock_monotonic_ms() - start_ms) / 1e3, digest);
        if (o.out) printf("saved to %s\n", o.out);
    }
    json_decref(result);
    fit_run_free(&run);
    return 0;
}
