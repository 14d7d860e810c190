/* dataset.c -- Datasets: loading MNIST-format files, normalisation,
 * subsets, the validation split and gathering batches (see
 * include/spirt/data.h).
 *
 * The IDX reading itself is idx.c; this file pairs an images file with a
 * labels file, checks that they agree, and turns bytes into floats. */
#include "spirt/data.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data/idx.h"
#include "data/streams.h"
#include "spirt/rng.h"

/* --- Allocation --- */

/* A dataset with room for `count` examples. Arrays are never NULL, even for
 * count 0, so callers need no special case. */
static Dataset *dataset_allocate(size_t count, size_t rows, size_t cols, SpirtError *error) {
    size_t features = rows * cols;
    if (rows != 0 && features / rows != cols) {
        spirt_error_set(error, SPIRT_ERR_INVALID, "dataset of %zu x %zu pixels is too large", rows, cols);
        return NULL;
    }
    size_t slots = count ? count : 1;
    if (features != 0 && slots > SIZE_MAX / sizeof(float) / features) {
        spirt_error_set(error, SPIRT_ERR_INVALID, "dataset of %zu examples of %zu features is too large", count,
                        features);
        return NULL;
    }
    Dataset *dataset = calloc(1, sizeof(*dataset));
    if (dataset == NULL) {
        spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory for a dataset");
        return NULL;
    }
    dataset->images = malloc(slots * (features ? features : 1) * sizeof(float));
    dataset->labels = malloc(slots);
    if (dataset->images == NULL || dataset->labels == NULL) {
        dataset_free(dataset);
        spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory for %zu examples of %zu features", count, features);
        return NULL;
    }
    dataset->count = count;
    dataset->rows = rows;
    dataset->cols = cols;
    dataset->features = features;
    dataset->classes = DATA_CLASSES;
    return dataset;
}

void dataset_free(Dataset *dataset) {
    if (dataset == NULL) return;
    free(dataset->images);
    free(dataset->labels);
    free(dataset);
}

/* --- Loading --- */

Dataset *data_load_files(const char *images_path, const char *labels_path, SpirtError *error) {
    DataIdxArray images, labels;
    if (data_idx_read(images_path, 3, &images, error) != SPIRT_OK) return NULL;
    if (data_idx_read(labels_path, 1, &labels, error) != SPIRT_OK) {
        free(images.values);
        return NULL;
    }
    Dataset *dataset = NULL;
    if (images.dims[0] != labels.dims[0]) {
        spirt_error_set(error, SPIRT_ERR_FORMAT, "%s has %u images but %s has %u labels", images_path,
                        images.dims[0], labels_path, labels.dims[0]);
        goto done;
    }
    for (size_t i = 0; i < labels.count; i++) {
        if (labels.values[i] >= DATA_CLASSES) {
            spirt_error_set(error, SPIRT_ERR_FORMAT, "%s: label %u at index %zu is not below %d classes",
                            labels_path, labels.values[i], i, DATA_CLASSES);
            goto done;
        }
    }
    dataset = dataset_allocate(images.dims[0], images.dims[1], images.dims[2], error);
    if (dataset == NULL) goto done;
    /* x / 255 is correctly rounded, so pixel 255 is exactly 1 and 0 exactly 0. */
    for (size_t i = 0; i < images.count; i++) dataset->images[i] = (float)images.values[i] / 255.0f;
    memcpy(dataset->labels, labels.values, labels.count);
done:
    free(images.values);
    free(labels.values);
    return dataset;
}

static int path_exists(const char *path) {
    struct stat info;
    return stat(path, &info) == 0;
}

/* Finds folder/name or folder/name.gz (the raw file first: it reads faster). */
static int find_file(const char *folder, const char *name, char *path, size_t size, SpirtError *error) {
    const char *suffixes[] = {"", ".gz"};
    for (size_t k = 0; k < 2; k++) {
        int length = snprintf(path, size, "%s/%s%s", folder, name, suffixes[k]);
        if (length < 0 || (size_t)length >= size)
            return spirt_error_set(error, SPIRT_ERR_INVALID, "%s: folder name too long", folder);
        if (path_exists(path)) return SPIRT_OK;
    }
    return spirt_error_set(error, SPIRT_ERR_NOT_FOUND, "%s: neither %s nor %s.gz exists", folder, name, name);
}

Dataset *data_load(const char *source, DataSplit split, SpirtError *error) {
    if (source == NULL || *source == '\0') {
        spirt_error_set(error, SPIRT_ERR_INVALID, "no dataset given (\"fashion-mnist\" or a folder)");
        return NULL;
    }
    if (split != DATA_TRAIN && split != DATA_TEST) {
        spirt_error_set(error, SPIRT_ERR_INVALID, "unknown split %d", (int)split);
        return NULL;
    }
    const char *folder = strcmp(source, "fashion-mnist") == 0 ? DATA_FASHION_MNIST_DIR : source;
    struct stat info;
    int found = stat(folder, &info) == 0;
    if (!found || !S_ISDIR(info.st_mode)) {
        spirt_error_set(error, found ? SPIRT_ERR_INVALID : SPIRT_ERR_NOT_FOUND,
                        "%s: not a dataset folder (give \"fashion-mnist\" or a folder of MNIST-format files)",
                        folder);
        return NULL;
    }
    const char *prefix = split == DATA_TRAIN ? "train" : "t10k";
    char images_name[32], labels_name[32], images_path[4096], labels_path[4096];
    snprintf(images_name, sizeof(images_name), "%s-images-idx3-ubyte", prefix);
    snprintf(labels_name, sizeof(labels_name), "%s-labels-idx1-ubyte", prefix);
    if (find_file(folder, images_name, images_path, sizeof(images_path), error) != SPIRT_OK ||
        find_file(folder, labels_name, labels_path, sizeof(labels_path), error) != SPIRT_OK)
        return NULL;
    return data_load_files(images_path, labels_path, error);
}

/* --- Normalisation --- */

void data_statistics(const Dataset *dataset, float *mean, float *std) {
    size_t total = dataset->count * dataset->features;
    if (total == 0) {
        *mean = 0.0f; /* the identity transform */
        *std = 1.0f;
        return;
    }
    /* Two passes in double: the mean first, then squared deviations from it,
     * which stays accurate where sum(x^2) - n*mean^2 would cancel. */
    const float *x = dataset->images;
    double sum = 0.0;
    for (size_t i = 0; i < total; i++) sum += x[i];
    double average = sum / (double)total;
    double squares = 0.0;
    for (size_t i = 0; i < total; i++) {
        double deviation = x[i] - average;
        squares += deviation * deviation;
    }
    *mean = (float)average;
    *std = (float)sqrt(squares / (double)total); /* population std, as torchvision's usual constants */
}

int data_normalize(Dataset *dataset, float mean, float std, SpirtError *error) {
    if (!isfinite(mean)) return spirt_error_set(error, SPIRT_ERR_INVALID, "normalisation mean %g is not finite", mean);
    if (!(std > 0.0f) || !isfinite(std))
        return spirt_error_set(error, SPIRT_ERR_INVALID, "normalisation std %g must be finite and > 0", std);
    size_t total = dataset->count * dataset->features;
    float *x = dataset->images;
    for (size_t i = 0; i < total; i++) x[i] = (x[i] - mean) / std;
    return SPIRT_OK;
}

/* --- Subsets and the validation split --- */

Dataset *data_subset(const Dataset *source, const size_t *indices, size_t count, SpirtError *error) {
    for (size_t i = 0; i < count; i++) {
        if (indices[i] >= source->count) {
            spirt_error_set(error, SPIRT_ERR_INVALID, "subset index %zu at position %zu is not below %zu examples",
                            indices[i], i, source->count);
            return NULL;
        }
    }
    Dataset *subset = dataset_allocate(count, source->rows, source->cols, error);
    if (subset == NULL) return NULL;
    subset->classes = source->classes;
    data_gather(source, indices, count, subset->images, subset->labels);
    return subset;
}

int data_split_validation(const Dataset *source, size_t validation_count, uint64_t seed, Dataset **train,
                          Dataset **validation, SpirtError *error) {
    *train = NULL;
    *validation = NULL;
    if (validation_count >= source->count)
        return spirt_error_set(error, SPIRT_ERR_INVALID,
                               "validation size %zu leaves no training examples out of %zu", validation_count,
                               source->count);
    size_t *order = malloc(source->count * sizeof(size_t));
    if (order == NULL) return spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory for a validation split");
    for (size_t i = 0; i < source->count; i++) order[i] = i;
    SpirtRng rng;
    rng_init_stream(&rng, seed, DATA_STREAM_VALIDATION);
    rng_shuffle_indices(&rng, order, source->count);
    /* The first validation_count of a random permutation are a uniform random
     * subset; each part is then put back in dataset order, so the split
     * depends only on which examples were chosen. */
    unsigned char *chosen = calloc(source->count, 1);
    if (chosen == NULL) {
        free(order);
        return spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory for a validation split");
    }
    for (size_t i = 0; i < validation_count; i++) chosen[order[i]] = 1;
    size_t *train_indices = order, *validation_indices = order + (source->count - validation_count);
    size_t train_used = 0, validation_used = 0;
    for (size_t i = 0; i < source->count; i++) {
        if (chosen[i])
            validation_indices[validation_used++] = i;
        else
            train_indices[train_used++] = i;
    }
    free(chosen);
    *train = data_subset(source, train_indices, train_used, error);
    if (*train != NULL) *validation = data_subset(source, validation_indices, validation_used, error);
    free(order);
    if (*validation == NULL) {
        dataset_free(*train);
        *train = NULL;
        return error ? error->code : SPIRT_ERR_NOMEM;
    }
    return SPIRT_OK;
}

void data_gather(const Dataset *dataset, const size_t *indices, size_t n, float *images, uint8_t *labels) {
    size_t features = dataset->features;
    for (size_t i = 0; i < n; i++) {
        memcpy(images + i * features, dataset->images + indices[i] * features, features * sizeof(float));
        labels[i] = dataset->labels[indices[i]];
    }
}
