/* compute_gradients.c -- one minibatch's gradient.
 *
 * Event: {"peer": {...}, "round": r, "batch": b}. Reads spirt:params and
 * the peer's shard (cached per data digest), runs forward and backward on
 * minibatch b of round r, writes spirt:r:{r}:grad:{b}. Result:
 * {"batch": b, "loss": mean loss, "correct": k, "count": n, "epoch": e}, and
 * with "report_examples": true in the event, "examples": the shard indices
 * used (for tests and debugging).
 *
 * Which examples make minibatch b of round r is a pure function of the run:
 * the peer visits its shard epoch by epoch in an order drawn from (seed,
 * peer, epoch); round r's minibatches are the (r * B + b)-th minibatches of
 * that sequence. So a retried or reclaimed invocation computes exactly the
 * same gradient, and a peer that restarts resumes where it was. */
#include <stdlib.h>

#include "fn/fn_internal.h"
#include "spirt/attack.h"

int fn_compute_gradients(FnContext *context, const json_t *event, json_t **result, SpirtError *error) {
    FnEvent parsed;
    uint64_t batch;
    int status = fn_event_parse(event, 1, &parsed, error);
    if (status != SPIRT_OK) return status;
    if ((status = fn_json_u64(event, "batch", &batch, error)) != SPIRT_OK) return status;
    StoreConn *db = fn_connect(context, parsed.db, error);
    if (db == NULL) return error->code;
    const RunConfig *config = fn_run_config(context, db, error);
    if (config == NULL) return error->code;
    if (batch >= config->batches_per_round)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "batch %llu out of range (the run has %zu per round)",
                               (unsigned long long)batch, config->batches_per_round);
    FnData data;
    if ((status = fn_training_data(context, db, config, &data, error)) != SPIRT_OK) return status;
    size_t batch_size = config->batch_size < data.count ? config->batch_size : data.count;
    NnModel *model = fn_model(context, config->model, batch_size, error);
    if (model == NULL) return error->code;

    TensorShape shape;
    tensor_shape_vector(&shape, nn_model_param_count(model), NULL);
    if ((status = store_tensor_get_into(db, KEY_PARAMS, &shape, nn_model_params(model), error)) != SPIRT_OK)
        return spirt_error_prefix(error, "reading %s", KEY_PARAMS);

    /* The minibatch's examples. */
    uint64_t batches_per_epoch = data.count / batch_size;
    uint64_t global = parsed.round * config->batches_per_round + batch;
    uint64_t epoch = global / batches_per_epoch;
    size_t first = (size_t)(global % batches_per_epoch) * batch_size;
    const size_t *order = fn_epoch_order(context, config, epoch, error);
    if (order == NULL) return error->code;
    float *images = malloc(batch_size * NN_INPUT_FEATURES * sizeof(float));
    uint8_t *labels = malloc(batch_size);
    if (images == NULL || labels == NULL) {
        free(images);
        free(labels);
        return spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory for a minibatch");
    }
    for (size_t i = 0; i < batch_size; i++) {
        size_t example = order[first + i];
        for (size_t k = 0; k < NN_INPUT_FEATURES; k++)
            images[i * NN_INPUT_FEATURES + k] = data.images[example * NN_INPUT_FEATURES + k];
        labels[i] = data.labels[example];
    }
    /* A label-flipping Byzantine peer trains honestly on poisoned labels. */
    if (attack_poisons_labels(&config->attack)) attack_flip_labels(labels, batch_size, NN_CLASSES);

    float loss = 0;
    size_t correct = 0;
    nn_model_zero_grads(model);
    status = nn_model_forward(model, images, labels, batch_size, &loss, &correct, error);
    if (status == SPIRT_OK) status = nn_model_backward(model, error);
    free(images);
    free(labels);
    if (status != SPIRT_OK) return status;

    char key[KEY_MAX];
    key_round_gradient(key, parsed.round, (unsigned)batch);
    if ((status = store_tensor_set(db, key, &shape, nn_model_grads(model), error)) != SPIRT_OK)
        return spirt_error_prefix(error, "writing %s", key);
    *result = json_pack("{s:I, s:f, s:I, s:I, s:I}", "batch", (json_int_t)batch, "loss", (double)loss, "correct",
                        (json_int_t)correct, "count", (json_int_t)batch_size, "epoch", (json_int_t)epoch);
    int report = 0;
    fn_json_bool_or(event, "report_examples", 0, &report, NULL);
    if (report && *result) {
        json_t *examples = json_array();
        for (size_t i = 0; i < batch_size; i++) json_array_append_new(examples, json_integer((json_int_t)order[first + i]));
        json_object_set_new(*result, "examples", examples);
    }
    return SPIRT_OK;
}
