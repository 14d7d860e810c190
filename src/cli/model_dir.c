/* model_dir.c -- saving and loading a trained model (see model_dir.h). */
#include "cli/model_dir.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "spirt/tensor.h"

/* mkdir -p: every missing folder of `path`. */
static int make_folders(const char *path, SpirtError *error) {
    char partial[1024];
    size_t length = strlen(path);
    if (length == 0 || length >= sizeof(partial))
        return spirt_error_set(error, SPIRT_ERR_INVALID, "output folder '%s': bad path", path);
    memcpy(partial, path, length + 1);
    for (size_t i = 1; i <= length; i++) {
        if (partial[i] != '/' && partial[i] != '\0') continue;
        char saved = partial[i];
        partial[i] = '\0';
        if (mkdir(partial, 0755) != 0 && errno != EEXIST)
            return spirt_error_set(error, SPIRT_ERR_IO, "cannot create %s: %s", partial, strerror(errno));
        partial[i] = saved;
    }
    struct stat info;
    if (stat(path, &info) != 0 || !S_ISDIR(info.st_mode))
        return spirt_error_set(error, SPIRT_ERR_IO, "%s is not a folder", path);
    return SPIRT_OK;
}

int model_dir_save(const char *dir, NnModel *model, float mean, float std, json_t *training, SpirtError *error) {
    int status = make_folders(dir, error);
    if (status != SPIRT_OK) return status;
    size_t count = nn_model_param_count(model);
    Tensor *tensor = tensor_from_vector(nn_model_params(model), count, error);
    if (tensor == NULL) return error ? error->code : SPIRT_ERR_NOMEM;
    char path[1200];
    snprintf(path, sizeof(path), "%s/%s", dir, MODEL_DIR_PARAMS);
    status = tensor_file_write(path, tensor, error);
    tensor_free(tensor);
    if (status != SPIRT_OK) return status;

    char digest[SPIRT_DIGEST_HEX_SIZE];
    tensor_digest_hex(nn_model_params(model), count, digest);
    char *layout_text = nn_model_layout_json(model);
    json_t *layout = layout_text ? json_loads(layout_text, 0, NULL) : NULL;
    free(layout_text);
    if (layout == NULL) return spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory describing the model");
    json_t *description = json_pack("{s:s, s:i, s:s, s:I, s:s, s:s, s:{s:f, s:f}, s:o}", "format", "spirt-model",
                                    "version", 1, "model", nn_model_kind_name(nn_model_kind(model)), "param_count",
                                    (json_int_t)count, "params_file", MODEL_DIR_PARAMS, "params_digest", digest,
                                    "normalization", "mean", (double)mean, "std", (double)std, "layout", layout);
    if (description == NULL) return spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory describing the model");
    if (training) json_object_set(description, "training", training);
    snprintf(path, sizeof(path), "%s/%s", dir, MODEL_DIR_DESCRIPTION);
    status = json_dump_file(description, path, JSON_INDENT(2) | JSON_SORT_KEYS) == 0
                 ? SPIRT_OK
                 : spirt_error_set(error, SPIRT_ERR_IO, "cannot write %s", path);
    json_decref(description);
    return status;
}

/* Reads DIR/model.json: kind, count, digest and normalisation. */
static int read_description(const char *dir, ModelDirInfo *info, size_t *count, char *digest, SpirtError *error) {
    char path[1200];
    snprintf(path, sizeof(path), "%s/%s", dir, MODEL_DIR_DESCRIPTION);
    json_error_t parse_error;
    json_t *description = json_load_file(path, 0, &parse_error);
    if (description == NULL)
        return spirt_error_set(error, errno == ENOENT ? SPIRT_ERR_NOT_FOUND : SPIRT_ERR_FORMAT, "%s: %s", path,
                               parse_error.text);
    const char *format = NULL, *model = NULL, *file_digest = NULL;
    json_int_t version = 0, param_count = 0;
    double mean = 0, std = 0;
    int status = SPIRT_OK;
    if (json_unpack(description, "{s:s, s:I, s:s, s:I, s:s, s:{s:F, s:F}}", "format", &format, "version", &version,
                    "model", &model, "param_count", &param_count, "params_digest", &file_digest, "normalization",
                    "mean", &mean, "std", &std) != 0 ||
        strcmp(format, "spirt-model") != 0)
        status = spirt_error_set(error, SPIRT_ERR_FORMAT, "%s: not a spirt model description", path);
    else if (version != 1)
        status = spirt_error_set(error, SPIRT_ERR_FORMAT, "%s: version %lld (this spirt reads version 1)", path,
                                 (long long)version);
    else if ((status = nn_model_kind_parse(model, &info->kind, error)) != SPIRT_OK)
        spirt_error_prefix(error, "%s", path);
    else if ((size_t)param_count != nn_model_kind_param_count(info->kind))
        status = spirt_error_set(error, SPIRT_ERR_FORMAT, "%s: a %s model has %zu parameters, not %lld", path, model,
                                 nn_model_kind_param_count(info->kind), (long long)param_count);
    else if (!(std > 0))
        status = spirt_error_set(error, SPIRT_ERR_FORMAT, "%s: normalization std %g is not positive", path, std);
    if (status == SPIRT_OK) {
        *count = (size_t)param_count;
        snprintf(digest, SPIRT_DIGEST_HEX_SIZE, "%s", file_digest);
        info->has_normalization = 1;
        info->mean = (float)mean;
        info->std = (float)std;
    }
    json_decref(description);
    return status;
}

NnModel *model_dir_load(const char *path, size_t max_batch, ModelDirInfo *info, SpirtError *error) {
    struct stat file_info;
    if (stat(path, &file_info) != 0) {
        spirt_error_set(error, SPIRT_ERR_NOT_FOUND, "%s: %s", path, strerror(errno));
        return NULL;
    }
    memset(info, 0, sizeof(*info));
    char tensor_path[1200], described_digest[SPIRT_DIGEST_HEX_SIZE] = "";
    size_t described_count = 0;
    int is_folder = S_ISDIR(file_info.st_mode);
    if (is_folder) {
        if (read_description(path, info, &described_count, described_digest, error) != SPIRT_OK) return NULL;
        snprintf(tensor_path, sizeof(tensor_path), "%s/%s", path, MODEL_DIR_PARAMS);
    } else {
        snprintf(tensor_path, sizeof(tensor_path), "%s", path);
    }
    Tensor *tensor = tensor_file_read(tensor_path, error);
    if (tensor == NULL) return NULL;
    NnModel *model = NULL;
    if (!is_folder && nn_model_kind_from_param_count(tensor->count, &info->kind, error) != SPIRT_OK) {
        spirt_error_prefix(error, "%s", tensor_path);
    } else if (is_folder && tensor->count != described_count) {
        spirt_error_set(error, SPIRT_ERR_FORMAT, "%s holds %zu values, %s says %zu", tensor_path, tensor->count,
                        MODEL_DIR_DESCRIPTION, described_count);
    } else if ((model = nn_model_create(info->kind, max_batch, error)) != NULL) {
        if (nn_model_load_params(model, tensor->data, tensor->count, error) != SPIRT_OK) {
            spirt_error_prefix(error, "%s", tensor_path);
            nn_model_free(model);
            model = NULL;
        } else {
            tensor_digest_hex(nn_model_params(model), tensor->count, info->digest);
            if (is_folder && strcmp(info->digest, described_digest) != 0) {
                spirt_error_set(error, SPIRT_ERR_FORMAT, "%s: digest %s, but %s says %s", tensor_path, info->digest,
                                MODEL_DIR_DESCRIPTION, described_digest);
                nn_model_free(model);
                model = NULL;
            }
        }
    }
    tensor_free(tensor);
    return model;
}
