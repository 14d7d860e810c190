/* cmd_eval.c -- `spirt eval MODEL`: the test accuracy and loss of a saved
 * model (a folder written by `spirt fit --out`, or a bare parameter tensor
 * file; see cli/model_dir.h). */
#include <stdio.h>
#include <stdlib.h>

#include "cli/commands.h"
#include "cli/model_dir.h"
#include "cli/options.h"
#include "spirt/clock.h"
#include "spirt/data.h"
#include "spirt/nn.h"

int command_eval(int argc, char **argv) {
    const char *dataset_name = "fashion-mnist";
    int batch_size = 256, threads = 1, as_json = 0;
    const CliOption options[] = {
        {"dataset", CLI_STRING, &dataset_name, "NAME|PATH", "fashion-mnist, or a folder of MNIST-format files"},
        {"batch-size", CLI_INT, &batch_size, "N", "examples per forward pass (default: 256)"},
        {"threads", CLI_INT, &threads, "T", "threads for the matrix products (default: 1)"},
        {"json", CLI_FLAG, &as_json, NULL, "print one JSON object"},
    };
    const CliCommand command = {"eval", "MODEL_DIR|TENSOR_FILE",
                                "Evaluate a saved model on the test set: accuracy and mean cross-entropy.", options,
                                sizeof(options) / sizeof(options[0])};
    char *positional[1];
    int positional_count = 0;
    int parsed = cli_parse(&command, argc, argv, positional, 1, &positional_count);
    if (parsed != CLI_PARSED) return parsed == CLI_EXIT_OK ? 0 : 2;
    if (positional_count != 1) return cli_usage_error(&command, "which model? (a folder from spirt fit --out, or a tensor file)");
    if (batch_size < 1 || batch_size > 65536)
        return cli_usage_error(&command, "--batch-size must be 1 to 65536, not %d", batch_size);
    if (threads < 1 || threads > 64) return cli_usage_error(&command, "--threads must be 1 to 64, not %d", threads);

    double start_ms = clock_monotonic_ms();
    SpirtError error;
    ModelDirInfo info;
    NnModel *model = model_dir_load(positional[0], (size_t)batch_size, &info, &error);
    Dataset *test = NULL;
    int status = 1;
    if (model == NULL) goto done;
    nn_model_set_threads(model, threads);
    if (!info.has_normalization) {
        /* A bare tensor: the transform fit uses, recomputed from the
         * training split. */
        Dataset *train = data_load(dataset_name, DATA_TRAIN, &error);
        if (train == NULL) goto done;
        data_statistics(train, &info.mean, &info.std);
        dataset_free(train);
    }
    test = data_load(dataset_name, DATA_TEST, &error);
    if (test == NULL || data_normalize(test, info.mean, info.std, &error) != SPIRT_OK) goto done;
    if (test->features != NN_INPUT_FEATURES) {
        spirt_error_set(&error, SPIRT_ERR_SHAPE, "%s: images of %zux%zu pixels (the models take 28x28)", dataset_name,
                        test->rows, test->cols);
        goto done;
    }
    double loss;
    size_t right;
    if (nn_model_evaluate(model, test->images, test->labels, test->count, &loss, &right, &error) != SPIRT_OK) goto done;
    double accuracy = (double)right / (double)test->count, seconds = (clock_monotonic_ms() - start_ms) / 1e3;
    if (as_json) {
        json_t *result = json_pack("{s:s, s:s, s:I, s:s, s:I, s:f, s:f, s:f}", "model_path", positional[0], "model",
                                   nn_model_kind_name(info.kind), "param_count",
                                   (json_int_t)nn_model_param_count(model), "params_digest", info.digest,
                                   "test_examples", (json_int_t)test->count, "test_accuracy", accuracy, "test_loss",
                                   loss, "wall_seconds", seconds);
        char *text = result ? json_dumps(result, JSON_COMPACT) : NULL;
        if (text) printf("%s\n", text);
        free(text);
        json_decref(result);
    } else {
        printf("%s (%zu parameters, digest %s)\ntest accuracy %.4f  test loss %.4f  on %zu examples (%.1f s)\n",
               nn_model_kind_name(info.kind), nn_model_param_count(model), info.digest, accuracy, loss, test->count,
               seconds);
    }
    status = 0;
done:
    if (status != 0) fprintf(stderr, "spirt eval: %s\n", error.message);
    dataset_free(test);
    nn_model_free(model);
    return status;
}
