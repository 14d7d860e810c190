/* test_fit.c -- `spirt fit` and `spirt eval` end to end on the real
 * Fashion-MNIST files: reproducible runs (same options, same digest; the
 * thread count changes nothing), a short run that learns, the saved model
 * and its evaluation, and bad input.
 * SPIRT_TEST_LABELS: slow */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_process.h"
#include "spirt/tensor.h"
#include "test.h"

/* Runs spirt with args and parses its stdout as exactly one JSON object
 * (NULL, with a failed check, otherwise). */
static json_t *run_json(const char *const *args) {
    TestCommand command;
    test_run_spirt(args, &command);
    json_error_t error;
    json_t *result = command.status == 0 ? json_loads(command.output, 0, &error) : NULL;
    CHECKF(result != NULL && json_is_object(result), "spirt %s %s: status %d, stdout '%.200s', stderr '%.300s'",
           args[0], args[1], command.status, command.output, command.errors);
    test_command_free(&command);
    return result;
}

static const char *text(json_t *object, const char *key) {
    const char *value = json_string_value(json_object_get(object, key));
    return value ? value : "";
}

static double number(json_t *object, const char *key) {
    json_t *value = json_object_get(object, key);
    return value ? json_number_value(value) : NAN;
}

static void test_short_run(void) {
    test_begin("fit: a short mlp run learns, repeats bit for bit, saves a model eval agrees with");
    char first_dir[600], second_dir[600];
    test_temp_path(first_dir, sizeof(first_dir), "first/model");
    test_temp_path(second_dir, sizeof(second_dir), "second");
    const char *args[] = {"fit", "--model", "mlp", "--epochs", "1", "--train-limit", "6000", "--seed", "1",
                          "--json", "--out", first_dir, NULL};
    json_t *first = run_json(args);
    args[11] = second_dir;
    json_t *second = run_json(args);
    if (!first || !second) return;
    /* 6000 examples in batches of 64: 93 full batches and one of 48. */
    CHECK(strcmp(text(first, "model"), "mlp") == 0 && number(first, "param_count") == 235146);
    CHECK(number(first, "steps") == 94 && number(first, "epochs") == 1 && number(first, "train_examples") == 6000);
    CHECK(number(first, "test_examples") == 10000 && number(first, "wall_seconds") > 0);
    CHECK(json_array_size(json_object_get(first, "history")) == 1);
    /* Ten classes: chance is 0.1; one pass over a tenth of the data
     * already separates most of them. */
    CHECKF(number(first, "test_accuracy") >= 0.75, "test accuracy %.4f", number(first, "test_accuracy"));
    CHECKF(strlen(text(first, "params_digest")) == 32 &&
               strcmp(text(first, "params_digest"), text(second, "params_digest")) == 0,
           "digests %s and %s", text(first, "params_digest"), text(second, "params_digest"));
    CHECK(number(first, "test_accuracy") == number(second, "test_accuracy"));

    /* The saved tensor is the reported model. */
    char path[700];
    snprintf(path, sizeof(path), "%s/params.tensor", first_dir);
    SpirtError error;
    Tensor *tensor = tensor_file_read(path, &error);
    CHECKF(tensor != NULL, "%s", error.message);
    if (tensor) {
        char digest[SPIRT_DIGEST_HEX_SIZE];
        tensor_digest_hex(tensor->data, tensor->count, digest);
        CHECK(tensor->count == 235146 && strcmp(digest, text(first, "params_digest")) == 0);
        tensor_free(tensor);
    }

    /* eval on the folder: the same predictions, so the same accuracy. */
    const char *eval_args[] = {"eval", first_dir, "--json", NULL};
    json_t *evaluated = run_json(eval_args);
    if (evaluated) {
        CHECK(strcmp(text(evaluated, "params_digest"), text(first, "params_digest")) == 0);
        CHECK(number(evaluated, "test_accuracy") == number(first, "test_accuracy"));
        CHECK_NEAR(number(evaluated, "test_loss"), number(first, "test_loss"), 1e-5);
        json_decref(evaluated);
    }
    /* eval on the bare tensor: the kind from the count, the normalisation
     * from all 60000 training images instead of the 6000 fit used. */
    const char *bare_args[] = {"eval", path, "--json", NULL};
    json_t *bare = run_json(bare_args);
    if (bare) {
        CHECK(strcmp(text(bare, "model"), "mlp") == 0);
        CHECK(strcmp(text(bare, "params_digest"), text(first, "params_digest")) == 0);
        CHECK_NEAR(number(bare, "test_accuracy"), number(first, "test_accuracy"), 0.02);
        json_decref(bare);
    }
    json_decref(first);
    json_decref(second);
}

/* The digest of a short run with extra options. */
static char *digest_of(const char *model, const char *seed, const char *threads) {
    const char *args[] = {"fit", "--model", model, "--train-limit", "1000", "--max-steps", "6", "--seed", seed,
                          "--threads", threads, "--json", NULL};
    json_t *result = run_json(args);
    char *digest = strdup(result ? text(result, "params_digest") : "");
    if (result) CHECK(number(result, "steps") == 6);
    json_decref(result);
    return digest;
}

static void test_seeds_and_threads(void) {
    test_begin("fit: another seed, another model; more threads, the same bits");
    const char *models[] = {"logreg", "mlp", "cnn"};
    for (int m = 0; m < 3; m++) {
        char *one = digest_of(models[m], "1", "1"), *two_threads = digest_of(models[m], "1", "2");
        char *other_seed = digest_of(models[m], "2", "1");
        CHECKF(*one && strcmp(one, two_threads) == 0, "%s: 1 thread %s, 2 threads %s", models[m], one, two_threads);
        CHECKF(strcmp(one, other_seed) != 0, "%s: seeds 1 and 2 both gave %s", models[m], one);
        free(one), free(two_threads), free(other_seed);
    }
}

/* A usage error: status 2, and stderr starting with one line naming the
 * problem, then the usage. */
static void check_usage_error(const char *const *args, const char *needle) {
    TestCommand command;
    test_run_spirt(args, &command);
    const char *newline = strchr(command.errors, '\n');
    CHECKF(command.status == 2 && strstr(command.errors, needle) && newline &&
               strncmp(newline + 1, "usage: spirt", 12) == 0 && command.output[0] == '\0',
           "spirt %s %s: status %d, stderr '%.300s'", args[0], args[1], command.status, command.errors);
    test_command_free(&command);
}

/* A run-time failure: status 1 and one line on stderr mentioning needle. */
static void check_failure(const char *const *args, const char *needle) {
    TestCommand command;
    test_run_spirt(args, &command);
    CHECKF(command.status == 1 && strstr(command.errors, needle) && strchr(command.errors, '\n') ==
                                                                         command.errors + strlen(command.errors) - 1,
           "spirt %s %s: status %d, stderr '%.300s'", args[0], args[1], command.status, command.errors);
    test_command_free(&command);
}

static void test_bad_input(void) {
    test_begin("fit and eval: bad options and broken models");
    check_usage_error((const char *[]){"fit", "--bogus", NULL}, "unknown option '--bogus'");
    check_usage_error((const char *[]){"fit", "--model", "resnet", NULL}, "resnet");
    check_usage_error((const char *[]){"fit", "--lr", "fast", NULL}, "--lr");
    check_usage_error((const char *[]){"fit", "--epochs", "0", NULL}, "--epochs");
    check_usage_error((const char *[]){"fit", "--optimizer", "lbfgs", NULL}, "lbfgs");
    check_usage_error((const char *[]){"fit", "--schedule", "linear", NULL}, "linear");
    check_usage_error((const char *[]){"fit", "--lr", "-1", NULL}, "learning");
    check_usage_error((const char *[]){"eval", NULL}, "which model");
    check_failure((const char *[]){"fit", "--dataset", "/nonexistent/data", "--max-steps", "1", NULL}, "/nonexistent");
    check_failure((const char *[]){"eval", "/nonexistent/model", NULL}, "/nonexistent/model");

    /* A saved model whose description no longer matches its tensor. */
    char dir[600], path[700];
    test_temp_path(dir, sizeof(dir), "broken");
    const char *args[] = {"fit", "--model", "logreg", "--max-steps", "2", "--train-limit", "500", "--out", dir, NULL};
    TestCommand command;
    CHECK(test_run_spirt(args, &command) == 0);
    test_command_free(&command);
    snprintf(path, sizeof(path), "%s/model.json", dir);
    json_t *description = json_load_file(path, 0, NULL);
    CHECK(description != NULL);
    if (description == NULL) return;
    json_object_set_new(description, "params_digest", json_string("00000000000000000000000000000000"));
    json_dump_file(description, path, 0);
    check_failure((const char *[]){"eval", dir, NULL}, "digest");
    json_object_set_new(description, "model", json_string("cnn"));
    json_dump_file(description, path, 0);
    check_failure((const char *[]){"eval", dir, NULL}, "a cnn model has 215370 parameters");
    json_decref(description);
    /* A bare file of the wrong size names no model. */
    SpirtError error;
    float values[5] = {1, 2, 3, 4, 5};
    Tensor *odd = tensor_from_vector(values, 5, &error);
    snprintf(path, sizeof(path), "%s/odd.tensor", dir);
    tensor_file_write(path, odd, &error);
    tensor_free(odd);
    check_failure((const char *[]){"eval", path, NULL}, "match no model");
}

int main(void) {
    test_short_run();
    test_seeds_and_threads();
    test_bad_input();
    return test_finish();
}
