/* evaluate.c -- loss and accuracy of the current model on the peer's
 * validation split.
 *
 * Event: {"peer", "round"}. Result: {"loss": mean cross-entropy,
 * "accuracy": fraction correct, "count": examples, "round": r}. */
#include "fn/fn_internal.h"

enum { EVALUATION_BATCH = 500 };

int fn_evaluate(FnContext *context, const json_t *event, json_t **result, SpirtError *error) {
    FnEvent parsed;
    StoreConn *db;
    const RunConfig *config;
    int status = fn_begin(context, event, 0, &parsed, &db, &config, error);
    if (status != SPIRT_OK) return status;
    FnData data;
    if ((status = fn_validation_data(context, db, config, &data, error)) != SPIRT_OK) return status;
    NnModel *model = fn_model(context, config->model, EVALUATION_BATCH, error);
    if (model == NULL) return error->code;
    TensorShape shape;
    tensor_shape_vector(&shape, nn_model_param_count(model), NULL);
    if ((status = store_tensor_get_into(db, KEY_PARAMS, &shape, nn_model_params(model), error)) != SPIRT_OK)
        return spirt_error_prefix(error, "reading %s", KEY_PARAMS);
    double loss = 0;
    size_t correct = 0;
    if ((status = nn_model_evaluate(model, data.images, data.labels, data.count, &loss, &correct, error)) != SPIRT_OK)
        return status;
    *result = json_pack("{s:f, s:f, s:I, s:I}", "loss", loss, "accuracy", (double)correct / (double)data.count, "count",
                        (json_int_t)data.count, "round", (json_int_t)parsed.round);
    return SPIRT_OK;
}
