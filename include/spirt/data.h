/* data.h -- datasets: IDX files, normalisation, splits, partitions, batches.
 *
 * The IDX format (MNIST's, also Fashion-MNIST's) is a big-endian header --
 * two zero bytes, a type byte (0x08 = unsigned byte), a dimension count, then
 * one uint32 per dimension -- followed by the values. Files may be gzip
 * compressed (.gz) or raw; the reader tells by content, not by name. Anything
 * malformed (bad magic, a type other than unsigned byte, dimensions that do
 * not match the data length, truncated or trailing data, labels >= classes,
 * image and label counts that disagree, zero dimensions, a header claiming
 * more than 2^30 values) is refused with a message naming the file and the
 * problem; gzip input must also pass zlib's own checks (CRC, trailer).
 * Memory grows only as data really arrives, so a lying header costs nothing.
 *
 * A Dataset owns its arrays; a DataPartition is index lists into one. All
 * shuffling is seeded (include/spirt/rng.h). */
#ifndef SPIRT_DATA_H
#define SPIRT_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "spirt/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Where Debian's dataset-fashion-mnist package puts the files. */
#define DATA_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"
#define DATA_CLASSES 10

typedef struct Dataset {
    size_t count;    /* examples */
    size_t rows;     /* image height (28) */
    size_t cols;     /* image width (28) */
    size_t features; /* rows * cols */
    size_t classes;  /* DATA_CLASSES */
    float *images;   /* (count, features) row-major, owned; never NULL */
    uint8_t *labels; /* (count), each < classes, owned; never NULL */
} Dataset;

typedef enum DataSplit { DATA_TRAIN = 0, DATA_TEST = 1 } DataSplit;

/* Loads the images and labels of one split. `source` is "fashion-mnist"
 * (DATA_FASHION_MNIST_DIR) or a folder holding the four standard MNIST-format
 * files, train-images-idx3-ubyte / train-labels-idx1-ubyte / t10k-images-
 * idx3-ubyte / t10k-labels-idx1-ubyte, each optionally with ".gz" (the raw
 * file is used when both exist). Pixels become floats in [0, 1] (byte / 255).
 * The caller owns the result (dataset_free). NULL on error:
 * SPIRT_ERR_NOT_FOUND for a missing folder or file, SPIRT_ERR_FORMAT for a
 * malformed file (see above). */
Dataset *data_load(const char *source, DataSplit split, SpirtError *error);
/* The same for an explicit pair of files. */
Dataset *data_load_files(const char *images_path, const char *labels_path, SpirtError *error);
void dataset_free(Dataset *dataset); /* NULL is allowed */

/* Per-pixel-independent normalisation: x <- (x - mean) / std, with one
 * scalar mean and std over all pixels of all examples (population std,
 * computed in double). The statistics come from the training set
 * (data_statistics) and are applied to every split, so validation and test
 * see the same transform. An empty dataset gives mean 0, std 1.
 * data_normalize refuses a non-finite mean or a std that is not > 0. */
void data_statistics(const Dataset *dataset, float *mean, float *std);
int data_normalize(Dataset *dataset, float mean, float std, SpirtError *error);

/* A new dataset holding the examples at indices[0..count) of `source`, in
 * that order (repeats allowed). The caller owns it. Refuses an index >=
 * source->count. */
Dataset *data_subset(const Dataset *source, const size_t *indices, size_t count, SpirtError *error);

/* Splits `source` into a training part and a validation part of
 * `validation_count` examples (< source->count; 0 allowed) chosen uniformly
 * at random by `seed`. Each part keeps dataset order. Both are new datasets
 * the caller owns; on error both are set to NULL. */
int data_split_validation(const Dataset *source, size_t validation_count, uint64_t seed, Dataset **train,
                          Dataset **validation, SpirtError *error);

/* Index lists of a dataset cut into `parts` shards: part p holds
 * indices[offsets[p] .. offsets[p + 1]). Owned; free with
 * data_partition_free. */
typedef struct DataPartition {
    size_t parts;
    size_t *offsets; /* parts + 1 */
    size_t *indices; /* offsets[parts] */
} DataPartition;

/* Both partitioners need 1 <= parts <= count and list each shard's indices
 * in ascending (dataset) order; on error *partition is left empty (parts 0,
 * NULL arrays), so data_partition_free is always safe.
 * IID: a seeded shuffle dealt into `parts` shards of equal size (+-1). */
int data_partition_iid(size_t count, size_t parts, uint64_t seed, DataPartition *partition, SpirtError *error);
/* Non-IID: for each class, proportions ~ Dirichlet(alpha, ..., alpha) over the
 * parts decide how that class's examples are dealt. Small alpha (0.1) gives
 * very skewed shards, large alpha (100) nearly IID ones. Every shard gets at
 * least one example: the proportions are re-drawn otherwise, and after 100
 * failed draws SPIRT_ERR_PRECONDITION asks for fewer parts or a larger
 * alpha. alpha finite and > 0; every label < classes <= 256. */
int data_partition_dirichlet(const uint8_t *labels, size_t count, size_t classes, size_t parts, double alpha,
                             uint64_t seed, DataPartition *partition, SpirtError *error);
void data_partition_free(DataPartition *partition);

/* Minibatches over `count` examples in a seeded order, reshuffled every
 * epoch. Epoch e's order is a function of (seed, e) only, so a restarted
 * peer can rebuild it. Caller-owned storage: data_batcher_init /
 * data_batcher_deinit. */
typedef struct DataBatcher {
    size_t count, batch_size;
    uint64_t seed;
    uint64_t epoch;    /* epochs started (0 until the first batch) */
    size_t position;   /* next index in order[]; SIZE_MAX between epochs */
    size_t *order;     /* owned permutation of [0, count) */
    int drop_last;     /* skip a final short batch */
} DataBatcher;

/* Refuses count 0, batch_size 0, and drop_last with batch_size > count
 * (an epoch of no batches). */
int data_batcher_init(DataBatcher *batcher, size_t count, size_t batch_size, uint64_t seed, int drop_last,
                      SpirtError *error);
/* Writes the next batch's indices (at most batch_size) into `indices` and
 * returns how many; 0 at the end of an epoch (the next call starts a new,
 * reshuffled one). */
size_t data_batcher_next(DataBatcher *batcher, size_t *indices);
/* Batches per epoch. */
size_t data_batcher_batches(const DataBatcher *batcher);
void data_batcher_deinit(DataBatcher *batcher);

/* Copies the examples at indices[0..n) into images (n x features) and
 * labels (n). The indices must be < dataset->count (batcher and partition
 * indices are). */
void data_gather(const Dataset *dataset, const size_t *indices, size_t n, float *images, uint8_t *labels);

#ifdef __cplusplus
}
#endif

#endif /* SPIRT_DATA_H */
