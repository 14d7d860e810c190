/* test_fit_long.c -- the accuracy targets: `spirt fit` with each model's
 * default optimizer, 5 epochs at batch 64, seed 1, on Fashion-MNIST, must
 * reach logreg >= 0.83, mlp >= 0.88, cnn >= 0.90 test accuracy. Minutes of
 * CPU (the cnn most), hence out of `make test`: run with make check-long
 * (also labelled slow for the longer CTest time-out).
 * SPIRT_TEST_LABELS: long slow */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "test_process.h"
#include "test.h"

static void check_target(const char *model, double target) {
    char name[64];
    snprintf(name, sizeof(name), "%s: 5 epochs reach %.2f", model, target);
    test_begin(name);
    const char *args[] = {"fit", "--model", model, "--epochs", "5", "--batch-size", "64", "--seed", "1", "--json", NULL};
    TestCommand command;
    test_run_spirt(args, &command);
    json_t *result = command.status == 0 ? json_loads(command.output, 0, NULL) : NULL;
    CHECKF(result != NULL, "status %d: %.300s", command.status, command.errors);
    if (result) {
        double accuracy = json_number_value(json_object_get(result, "test_accuracy"));
        fprintf(stderr, "   %s: test accuracy %.4f, loss %.4f, %.1f s\n", model, accuracy,
                json_number_value(json_object_get(result, "test_loss")),
                json_number_value(json_object_get(result, "wall_seconds")));
        CHECKF(accuracy >= target, "%s: test accuracy %.4f < %.2f", model, accuracy, target);
        CHECK(json_integer_value(json_object_get(result, "epochs")) == 5);
        json_decref(result);
    }
    test_command_free(&command);
}

int main(void) {
    check_target("logreg", 0.83);
    check_target("mlp", 0.88);
    check_target("cnn", 0.90);
    return test_finish();
}
