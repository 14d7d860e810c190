/* average.c -- the in-database mean of the round's minibatch gradients.
 *
 * Event: {"peer", "round", "gradients": [the Map's results]}. Gradients whose
 * result says "ok": false (a batch that kept failing) are left out; with no
 * "gradients" field every batch of the round is used. One SPIRT.AVG runs in
 * the database: no gradient leaves it. Result: {"batches": n, "loss": mean
 * of their losses, "accuracy": training accuracy over them}. */
#include <stdlib.h>
#include <string.h>

#include "fn/fn_internal.h"

int fn_average(FnContext *context, const json_t *event, json_t **result, SpirtError *error) {
    FnEvent parsed;
    StoreConn *db;
    const RunConfig *config;
    int status = fn_begin(context, event, 1, &parsed, &db, &config, error);
    if (status != SPIRT_OK) return status;

    size_t capacity = config->batches_per_round;
    char(*keys)[KEY_MAX] = calloc(capacity, KEY_MAX);
    const char **argv = calloc(capacity + 2, sizeof(char *));
    if (keys == NULL || argv == NULL) {
        free(keys);
        free(argv);
        return spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory");
    }
    size_t used = 0;
    double loss_sum = 0;
    uint64_t correct = 0, count = 0;
    const json_t *gradients = json_object_get(event, "gradients");
    if (gradients && !json_is_array(gradients)) {
        status = spirt_error_set(error, SPIRT_ERR_INVALID, "field 'gradients' must be a list of results");
    } else if (gradients) {
        size_t index;
        const json_t *item;
        json_array_foreach((json_t *)gradients, index, item) {
            int ok = 1;
            uint64_t batch, item_correct = 0, item_count = 0;
            double loss = 0;
            if (!json_is_object(item) || fn_json_bool_or(item, "ok", 1, &ok, error) != SPIRT_OK ||
                fn_json_u64(item, "batch", &batch, error) != SPIRT_OK) {
                status = spirt_error_set(error, SPIRT_ERR_INVALID, "gradients[%zu] is not a gradient result", index);
                break;
            }
            if (!ok) continue;
            if (batch >= capacity || used == capacity) {
                status = spirt_error_set(error, SPIRT_ERR_INVALID, "gradients[%zu]: batch %llu out of range", index,
                                         (unsigned long long)batch);
                break;
            }
            fn_json_double_or(item, "loss", 0, &loss, NULL);
            fn_json_u64_or(item, "correct", 0, &item_correct, NULL);
            fn_json_u64_or(item, "count", 0, &item_count, NULL);
            loss_sum += loss;
            correct += item_correct;
            count += item_count;
            key_round_gradient(keys[used++], parsed.round, (unsigned)batch);
        }
    } else {
        for (size_t b = 0; b < capacity; b++) key_round_gradient(keys[used++], parsed.round, (unsigned)b);
    }
    if (status == SPIRT_OK && used == 0)
        status = spirt_error_set(error, SPIRT_ERR_PRECONDITION, "round %llu has no gradient to average",
                                 (unsigned long long)parsed.round);
    char destination[KEY_MAX];
    key_round_average(destination, parsed.round);
    if (status == SPIRT_OK) {
        argv[0] = "SPIRT.AVG";
        argv[1] = destination;
        for (size_t i = 0; i < used; i++) argv[2 + i] = keys[i];
        status = store_command_argv(db, used + 2, argv, NULL, NULL, error);
    }
    free(keys);
    free(argv);
    if (status != SPIRT_OK) return status;
    *result = json_pack("{s:I, s:f, s:f}", "batches", (json_int_t)used, "loss", used ? loss_sum / (double)used : 0.0,
                        "accuracy", count ? (double)correct / (double)count : 0.0);
    return SPIRT_OK;
}
