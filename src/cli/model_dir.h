/* model_dir.h -- a saved model: the folder `spirt fit --out DIR` writes and
 * `spirt eval` reads.
 *
 *   DIR/params.tensor   the parameter vector, one tensor (include/spirt/tensor.h
 *                       file format; shape (param_count))
 *   DIR/model.json      {"format": "spirt-model", "version": 1, "model": "mlp",
 *                        "param_count": N, "params_file": "params.tensor",
 *                        "params_digest": "...", "normalization": {"mean": m,
 *                        "std": s}, "layout": {nn_model_layout_json},
 *                        "training": {...what fit reported...}}
 * The normalisation is the transform the model was trained with; eval
 * applies it to the test images. A bare tensor file works too: the model
 * kind follows from the parameter count, and the normalisation is then
 * recomputed from the training split. */
#ifndef SPIRT_CLI_MODEL_DIR_H
#define SPIRT_CLI_MODEL_DIR_H

#include <jansson.h>

#include "spirt/error.h"
#include "spirt/nn.h"

#define MODEL_DIR_PARAMS "params.tensor"
#define MODEL_DIR_DESCRIPTION "model.json"

typedef struct ModelDirInfo {
    NnModelKind kind;
    int has_normalization; /* 0 for a bare tensor file */
    float mean, std;
    char digest[33];       /* of the loaded parameters */
} ModelDirInfo;

/* Writes DIR (created if missing, parents too) with the model's parameters
 * and description; `training` (borrowed, may be NULL) is stored as is. */
int model_dir_save(const char *dir, NnModel *model, float mean, float std, json_t *training, SpirtError *error);

/* Loads a model folder or a bare tensor file into a new model for batches
 * of up to max_batch (the caller owns it: nn_model_free). Checks that the
 * description and the tensor agree (kind, count, digest). */
NnModel *model_dir_load(const char *path, size_t max_batch, ModelDirInfo *info, SpirtError *error);

#endif /* SPIRT_CLI_MODEL_DIR_H */
