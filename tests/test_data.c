/* test_data.c -- the IDX reader on real and crafted files, data_load on the
 * real Fashion-MNIST and on MNIST-format folders written here, statistics,
 * subsets, the validation split, partitions and the batcher.
 *
 * Known Fashion-MNIST values below (first labels, pixel sums, mean and std)
 * were computed by an independent reader, Python's gzip module and numpy:
 *   np.frombuffer(gzip.open(f).read()[16:], np.uint8).reshape(-1, 784)
 * and the per-class counts (6000 per class in train, 1000 in test) are a
 * published property of the dataset. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "data/idx.h"
#include "spirt/data.h"
#include "test.h"

/* --- Writing crafted IDX files --- */

/* Writes `size` bytes to `path`, gzip-compressed when `gzip` is set. */
static void write_file(const char *path, const uint8_t *bytes, size_t size, int gzip) {
    if (gzip) {
        gzFile file = gzopen(path, "wb");
        CHECKF(file != NULL, "cannot create %s", path);
        if (file == NULL) return;
        if (size > 0) CHECK(gzwrite(file, bytes, (unsigned)size) == (int)size);
        CHECK(gzclose(file) == Z_OK);
    } else {
        FILE *file = fopen(path, "wb");
        CHECKF(file != NULL, "cannot create %s", path);
        if (file == NULL) return;
        if (size > 0) CHECK(fwrite(bytes, 1, size, file) == size);
        fclose(file);
    }
}

/* Builds an IDX file image into `out` (which has room): the magic bytes,
 * the dims big-endian, then `data_size` bytes of `data`. Returns its size. */
static size_t idx_bytes(uint8_t *out, uint8_t zero0, uint8_t type, uint8_t ndim, const uint32_t *dims,
                        const uint8_t *data, size_t data_size) {
    size_t size = 0;
    out[size++] = zero0;
    out[size++] = 0;
    out[size++] = type;
    out[size++] = ndim;
    for (uint8_t d = 0; d < ndim; d++)
        for (int shift = 24; shift >= 0; shift -= 8) out[size++] = (uint8_t)(dims[d] >> shift);
    if (data_size) memcpy(out + size, data, data_size);
    return size + data_size;
}

/* A well-formed images file of count (rows x cols) images and its labels,
 * pixel k of the file being (k * 37 + seed) mod 256, label i being
 * (i * 3 + seed) mod 10. */
static void write_good_pair(const char *images_path, const char *labels_path, uint32_t count, uint32_t rows,
                            uint32_t cols, unsigned seed, int gzip) {
    size_t pixels = (size_t)count * rows * cols;
    uint8_t *data = malloc(pixels + count), *file = malloc(pixels + count + 32);
    for (size_t k = 0; k < pixels; k++) data[k] = (uint8_t)((k * 37 + seed) % 256);
    uint32_t dims[3] = {count, rows, cols};
    write_file(images_path, file, idx_bytes(file, 0, 0x08, 3, dims, data, pixels), gzip);
    for (uint32_t i = 0; i < count; i++) data[i] = (uint8_t)((i * 3 + seed) % 10);
    write_file(labels_path, file, idx_bytes(file, 0, 0x08, 1, dims, data, count), gzip);
    free(data);
    free(file);
}

/* Checks that a dataset holds exactly what write_good_pair wrote. */
static void check_good_pair(const Dataset *dataset, uint32_t count, uint32_t rows, uint32_t cols, unsigned seed) {
    CHECK(dataset->count == count && dataset->rows == rows && dataset->cols == cols);
    CHECK(dataset->features == (size_t)rows * cols && dataset->classes == DATA_CLASSES);
    size_t pixels = (size_t)count * rows * cols;
    double worst = 0.0;
    for (size_t k = 0; k < pixels; k++) {
        double expected = (double)((k * 37 + seed) % 256) / 255.0;
        double difference = fabs(dataset->images[k] - expected);
        if (difference > worst) worst = difference;
    }
    CHECKF(worst < 1e-7, "largest pixel error %g", worst);
    int labels_match = 1;
    for (uint32_t i = 0; i < count; i++) labels_match &= dataset->labels[i] == (i * 3 + seed) % 10;
    CHECK(labels_match);
}

/* --- The reader on crafted files --- */

typedef struct BadCase {
    const char *what;
    int damaged_file_is_labels; /* else the images file */
    uint8_t zero0, type, ndim;
    uint32_t dims[3];
    long data_change; /* bytes more (or fewer) than the dims declare */
    size_t file_size; /* when > 0, the file is cut to this many bytes */
    const char *needle;
} BadCase;

static void test_bad_files(void) {
    test_begin("IDX reader refuses malformed files, raw and gzip");
    const BadCase cases[] = {
        {"bad magic", 0, 1, 0x08, 3, {5, 3, 4}, 0, 0, "bad magic 0x01000803"},
        {"type not ubyte", 0, 0, 0x0D, 3, {5, 3, 4}, 0, 0, "IDX type 0x0d"},
        {"images with 2 dims", 0, 0, 0x08, 2, {5, 12, 0}, 0, 0, "2 dimensions, expected 3"},
        {"labels with 3 dims", 1, 0, 0x08, 3, {5, 1, 1}, 0, 0, "3 dimensions, expected 1"},
        {"truncated data", 0, 0, 0x08, 3, {5, 3, 4}, -1, 0, "truncated data: 59 of 60 bytes"},
        {"trailing data", 0, 0, 0x08, 3, {5, 3, 4}, +1, 0, "trailing data"},
        {"truncated labels", 1, 0, 0x08, 1, {5, 0, 0}, -3, 0, "truncated data: 2 of 5 bytes"},
        {"zero dimension", 0, 0, 0x08, 3, {5, 0, 4}, 0, 0, "dimension 1 is 0"},
        {"zero count", 1, 0, 0x08, 1, {0, 0, 0}, 0, 0, "dimension 0 is 0"},
        {"absurd size", 0, 0, 0x08, 3, {100000, 100000, 100000}, 0, 0, "refused"},
        {"absurd labels", 1, 0, 0x08, 1, {0xFFFFFFFFu, 0, 0}, 0, 0, "refused"},
        /* 784 MB declared, under the cap: must fail on the short data without
         * having allocated for the claim (memory grows with the data). */
        {"large claim, short data", 0, 0, 0x08, 3, {1000000, 28, 28}, 0, 0, "truncated data: 60 of 784000000"},
        {"header cut in dims", 0, 0, 0x08, 3, {5, 3, 4}, 0, 9, "truncated header: 9 of 16 bytes"},
        {"header cut in magic", 0, 0, 0x08, 3, {5, 3, 4}, 0, 3, "truncated header: 3 of 4 bytes"},
    };
    uint8_t data[64], file[128];
    for (size_t i = 0; i < sizeof(data); i++) data[i] = (uint8_t)(i % 10);
    SpirtError error;
    for (int gzip = 0; gzip <= 1; gzip++) {
        char good_images[600], good_labels[600], bad[600];
        test_temp_path(good_images, sizeof(good_images), gzip ? "good-images.gz" : "good-images");
        test_temp_path(good_labels, sizeof(good_labels), gzip ? "good-labels.gz" : "good-labels");
        write_good_pair(good_images, good_labels, 5, 3, 4, 0, gzip);
        Dataset *good = data_load_files(good_images, good_labels, &error);
        CHECKF(good != NULL, "%s", error.message);
        if (good) check_good_pair(good, 5, 3, 4, 0);
        dataset_free(good);

        for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
            const BadCase *c = &cases[k];
            uint64_t declared = 1;
            for (uint8_t d = 0; d < c->ndim; d++) declared *= c->dims[d];
            if (declared > 60) declared = 60; /* big claims come with a little data */
            size_t data_size = (size_t)((long)declared + c->data_change);
            size_t size = idx_bytes(file, c->zero0, c->type, c->ndim, c->dims, data, data_size);
            if (c->file_size) size = c->file_size;
            snprintf(bad, sizeof(bad), "%s/bad-%zu%s", test_temp_dir(), k, gzip ? ".gz" : "");
            write_file(bad, file, size, gzip);
            spirt_error_clear(&error);
            Dataset *loaded = c->damaged_file_is_labels ? data_load_files(good_images, bad, &error)
                                                        : data_load_files(bad, good_labels, &error);
            CHECKF(loaded == NULL && error.code == SPIRT_ERR_FORMAT && strstr(error.message, c->needle) &&
                       strstr(error.message, bad),
                   "%s case '%s': code %d, message '%s'", gzip ? "gzip" : "raw", c->what, error.code,
                   error.message);
            dataset_free(loaded);
        }

        /* Problems between two good files: a label out of range, and counts
         * that disagree. */
        uint32_t five[1] = {5}, four[1] = {4};
        uint8_t labels[5] = {1, 2, 10, 3, 4};
        snprintf(bad, sizeof(bad), "%s/bad-labels%s", test_temp_dir(), gzip ? ".gz" : "");
        write_file(bad, file, idx_bytes(file, 0, 0x08, 1, five, labels, 5), gzip);
        Dataset *loaded = data_load_files(good_images, bad, &error);
        CHECK_ERROR(loaded == NULL ? error.code : SPIRT_OK, SPIRT_ERR_FORMAT, &error, "label 10 at index 2");
        CHECK(strstr(error.message, bad) != NULL);
        dataset_free(loaded);
        write_file(bad, file, idx_bytes(file, 0, 0x08, 1, four, labels, 4), gzip);
        loaded = data_load_files(good_images, bad, &error);
        CHECK_ERROR(loaded == NULL ? error.code : SPIRT_OK, SPIRT_ERR_FORMAT, &error, "has 5 images but");
        CHECK(strstr(error.message, "has 4 labels") && strstr(error.message, bad));
        dataset_free(loaded);
    }

    /* An empty file, and one that does not exist. */
    char path[600];
    test_temp_path(path, sizeof(path), "empty");
    write_file(path, NULL, 0, 0);
    DataIdxArray array;
    CHECK_ERROR(data_idx_read(path, 1, &array, &error), SPIRT_ERR_FORMAT, &error, "truncated header: 0 of 4");
    CHECK(array.values == NULL && array.count == 0);
    test_temp_path(path, sizeof(path), "missing");
    CHECK_ERROR(data_idx_read(path, 1, &array, &error), SPIRT_ERR_NOT_FOUND, &error, "missing: no such file");
}

/* Damage that only gzip can have: its checksum and its trailer. */
static void test_damaged_gzip(void) {
    test_begin("IDX reader refuses damaged gzip streams");
    uint8_t data[400], file[500];
    for (size_t i = 0; i < sizeof(data); i++) data[i] = (uint8_t)(i * 7);
    uint32_t dims[3] = {4, 10, 10};
    char path[600];
    test_temp_path(path, sizeof(path), "damaged.gz");
    write_file(path, file, idx_bytes(file, 0, 0x08, 3, dims, data, 400), 1);
    FILE *handle = fopen(path, "rb");
    uint8_t compressed[2048];
    size_t size = fread(compressed, 1, sizeof(compressed), handle);
    fclose(handle);
    CHECK(size > 30 && size < sizeof(compressed));

    SpirtError error;
    DataIdxArray array;
    CHECK_OK(data_idx_read(path, 3, &array, &error), &error); /* the undamaged stream reads */
    CHECK(array.count == 400 && memcmp(array.values, data, 400) == 0);
    free(array.values);

    /* The CRC-32 is the trailer's first 4 bytes: change one of them. */
    compressed[size - 6] ^= 0x40;
    write_file(path, compressed, size, 0);
    CHECK_ERROR(data_idx_read(path, 3, &array, &error), SPIRT_ERR_FORMAT, &error, "damaged gzip data");
    CHECK(strstr(error.message, "damaged.gz") != NULL && array.values == NULL);
    compressed[size - 6] ^= 0x40;

    /* The trailer cut off: every data byte arrives, the stream is incomplete. */
    write_file(path, compressed, size - 8, 0);
    CHECK_ERROR(data_idx_read(path, 3, &array, &error), SPIRT_ERR_FORMAT, &error, "damaged gzip data");

    /* Cut in the middle of the deflate data. */
    write_file(path, compressed, size / 2, 0);
    int status = data_idx_read(path, 3, &array, &error);
    CHECKF(status == SPIRT_ERR_FORMAT && (strstr(error.message, "damaged gzip") || strstr(error.message, "truncated")),
           "message '%s'", error.message);
}

/* --- data_load on folders --- */

static void write_folder(const char *folder, int gzip) {
    mkdir(folder, 0700);
    char images[700], labels[700];
    const char *suffix = gzip ? ".gz" : "";
    snprintf(images, sizeof(images), "%s/train-images-idx3-ubyte%s", folder, suffix);
    snprintf(labels, sizeof(labels), "%s/train-labels-idx1-ubyte%s", folder, suffix);
    write_good_pair(images, labels, 7, 2, 3, 11, gzip);
    snprintf(images, sizeof(images), "%s/t10k-images-idx3-ubyte%s", folder, suffix);
    snprintf(labels, sizeof(labels), "%s/t10k-labels-idx1-ubyte%s", folder, suffix);
    write_good_pair(images, labels, 3, 2, 3, 5, gzip);
}

static void test_load_folder(void) {
    test_begin("data_load on MNIST-format folders, raw and gzip");
    SpirtError error;
    for (int gzip = 0; gzip <= 1; gzip++) {
        char folder[600];
        test_temp_path(folder, sizeof(folder), gzip ? "mnist-gz" : "mnist-raw");
        write_folder(folder, gzip);
        Dataset *train = data_load(folder, DATA_TRAIN, &error);
        CHECKF(train != NULL, "%s", error.message);
        if (train) check_good_pair(train, 7, 2, 3, 11);
        Dataset *test = data_load(folder, DATA_TEST, &error);
        CHECKF(test != NULL, "%s", error.message);
        if (test) check_good_pair(test, 3, 2, 3, 5);
        dataset_free(train);
        dataset_free(test);
    }
    /* A folder missing its test labels, a missing folder, a file given as folder. */
    char folder[600], path[700];
    test_temp_path(folder, sizeof(folder), "mnist-partial");
    write_folder(folder, 0);
    snprintf(path, sizeof(path), "%s/t10k-labels-idx1-ubyte", folder);
    remove(path);
    Dataset *none = data_load(folder, DATA_TEST, &error);
    CHECK_ERROR(none == NULL ? error.code : SPIRT_OK, SPIRT_ERR_NOT_FOUND, &error, "t10k-labels-idx1-ubyte.gz");
    none = data_load(folder, DATA_TRAIN, &error); /* the training half is complete */
    CHECKF(none != NULL, "%s", error.message);
    dataset_free(none);
    test_temp_path(folder, sizeof(folder), "no-such-folder");
    none = data_load(folder, DATA_TRAIN, &error);
    CHECK_ERROR(none == NULL ? error.code : SPIRT_OK, SPIRT_ERR_NOT_FOUND, &error, "no-such-folder");
    test_temp_path(folder, sizeof(folder), "mnist-raw/train-images-idx3-ubyte");
    none = data_load(folder, DATA_TRAIN, &error);
    CHECK_ERROR(none == NULL ? error.code : SPIRT_OK, SPIRT_ERR_INVALID, &error, "not a dataset folder");
    none = data_load("", DATA_TRAIN, &error);
    CHECK_ERROR(none == NULL ? error.code : SPIRT_OK, SPIRT_ERR_INVALID, &error, "no dataset");
}

/* --- Real Fashion-MNIST --- */

static double pixel_sum(const Dataset *dataset, size_t example) {
    double sum = 0.0;
    for (size_t k = 0; k < dataset->features; k++) sum += dataset->images[example * dataset->features + k];
    return sum;
}

static void check_balanced(const Dataset *dataset, size_t per_class) {
    size_t counts[DATA_CLASSES] = {0};
    int in_range = 1;
    for (size_t i = 0; i < dataset->count; i++) {
        in_range &= dataset->labels[i] < DATA_CLASSES;
        if (dataset->labels[i] < DATA_CLASSES) counts[dataset->labels[i]]++;
    }
    CHECK(in_range);
    for (int c = 0; c < DATA_CLASSES; c++) CHECKF(counts[c] == per_class, "class %d has %zu", c, counts[c]);
}

static void moments(const Dataset *dataset, double *mean, double *std) {
    size_t total = dataset->count * dataset->features;
    double sum = 0.0, squares = 0.0;
    for (size_t i = 0; i < total; i++) sum += dataset->images[i];
    *mean = sum / (double)total;
    for (size_t i = 0; i < total; i++) squares += (dataset->images[i] - *mean) * (dataset->images[i] - *mean);
    *std = sqrt(squares / (double)total);
}

static Dataset *test_fashion_mnist(void) {
    test_begin("real Fashion-MNIST: sizes, balance, known values, normalisation");
    SpirtError error;
    Dataset *train = data_load("fashion-mnist", DATA_TRAIN, &error);
    Dataset *test = data_load("fashion-mnist", DATA_TEST, &error);
    CHECKF(train != NULL && test != NULL, "%s", error.message);
    if (train == NULL || test == NULL) {
        dataset_free(train);
        dataset_free(test);
        return NULL;
    }
    CHECK(train->count == 60000 && test->count == 10000);
    CHECK(train->rows == 28 && train->cols == 28 && train->features == 784 && test->features == 784);
    check_balanced(train, 6000);
    check_balanced(test, 1000);

    const uint8_t first_train[10] = {9, 0, 0, 3, 0, 2, 7, 2, 5, 5};
    const uint8_t first_test[10] = {9, 2, 1, 1, 6, 1, 4, 6, 5, 7};
    CHECK(memcmp(train->labels, first_train, 10) == 0);
    CHECK(memcmp(test->labels, first_test, 10) == 0);
    CHECK_NEAR(pixel_sum(train, 0), 76247.0 / 255.0, 1e-3);
    CHECK_NEAR(pixel_sum(train, 59999), 16684.0 / 255.0, 1e-3);
    CHECK_NEAR(pixel_sum(test, 0), 33456.0 / 255.0, 1e-3);
    float low = 1.0f, high = 0.0f;
    for (size_t i = 0; i < train->count * train->features; i++) {
        if (train->images[i] < low) low = train->images[i];
        if (train->images[i] > high) high = train->images[i];
    }
    CHECK(low == 0.0f && high == 1.0f);

    float mean, std;
    data_statistics(train, &mean, &std);
    CHECK_NEAR(mean, 0.2860405969887955, 1e-6);
    CHECK_NEAR(std, 0.35302424451492237, 1e-6);
    CHECK_OK(data_normalize(train, mean, std, &error), &error);
    CHECK_OK(data_normalize(test, mean, std, &error), &error);
    double after_mean, after_std;
    moments(train, &after_mean, &after_std);
    CHECK_NEAR(after_mean, 0.0, 1e-5);
    CHECK_NEAR(after_std, 1.0, 1e-5);
    moments(test, &after_mean, &after_std); /* same transform: close, not exact */
    CHECK_NEAR(after_mean, 0.0, 0.02);
    CHECK_NEAR(after_std, 1.0, 0.02);
    /* Pixel 0 of train image 0 is 0: it must now be -mean/std. */
    CHECK_NEAR(train->images[0], -0.2860405969887955 / 0.35302424451492237, 1e-5);

    CHECK_ERROR(data_normalize(train, 0.0f, 0.0f, &error), SPIRT_ERR_INVALID, &error, "std");
    CHECK_ERROR(data_normalize(train, NAN, 1.0f, &error), SPIRT_ERR_INVALID, &error, "mean");
    CHECK_ERROR(data_normalize(train, 0.0f, INFINITY, &error), SPIRT_ERR_INVALID, &error, "std");
    dataset_free(test);
    return train;
}

/* --- Subsets and the validation split --- */

/* A dataset of `count` 1x2 examples whose first feature is the example's
 * number, so any subset reveals which examples it holds. */
static Dataset *numbered_dataset(size_t count) {
    SpirtError error;
    size_t *all = malloc(count * sizeof(size_t));
    for (size_t i = 0; i < count; i++) all[i] = i;
    /* Build from a real subset call on a hand-made source. */
    Dataset source = {count, 1, 2, 2, DATA_CLASSES, malloc(count * 2 * sizeof(float)), malloc(count)};
    for (size_t i = 0; i < count; i++) {
        source.images[2 * i] = (float)i;
        source.images[2 * i + 1] = -(float)i;
        source.labels[i] = (uint8_t)(i % DATA_CLASSES);
    }
    Dataset *copy = data_subset(&source, all, count, &error);
    free(source.images);
    free(source.labels);
    free(all);
    return copy;
}

static void test_subset_and_split(void) {
    test_begin("subset, gather and the validation split");
    SpirtError error;
    Dataset *numbered = numbered_dataset(1000);
    CHECK(numbered != NULL);
    if (numbered == NULL) return;
    size_t picks[4] = {5, 2, 5, 999};
    Dataset *subset = data_subset(numbered, picks, 4, &error);
    CHECKF(subset != NULL, "%s", error.message);
    if (subset) {
        CHECK(subset->count == 4 && subset->features == 2);
        for (size_t i = 0; i < 4; i++) {
            CHECK(subset->images[2 * i] == (float)picks[i] && subset->images[2 * i + 1] == -(float)picks[i]);
            CHECK(subset->labels[i] == picks[i] % 10);
        }
    }
    dataset_free(subset);
    size_t out_of_range[2] = {3, 1000};
    subset = data_subset(numbered, out_of_range, 2, &error);
    CHECK_ERROR(subset == NULL ? error.code : SPIRT_OK, SPIRT_ERR_INVALID, &error, "index 1000 at position 1");

    Dataset *train = NULL, *validation = NULL, *train2 = NULL, *validation2 = NULL;
    CHECK_OK(data_split_validation(numbered, 100, 42, &train, &validation, &error), &error);
    if (train && validation) {
        CHECK(train->count == 900 && validation->count == 100);
        unsigned char seen[1000] = {0};
        int ascending = 1, consistent = 1;
        for (size_t i = 0; i < train->count; i++) {
            size_t id = (size_t)train->images[2 * i];
            seen[id]++;
            consistent &= train->labels[i] == id % 10;
            if (i) ascending &= train->images[2 * i] > train->images[2 * i - 2];
        }
        for (size_t i = 0; i < validation->count; i++) {
            size_t id = (size_t)validation->images[2 * i];
            seen[id]++;
            consistent &= validation->labels[i] == id % 10;
            if (i) ascending &= validation->images[2 * i] > validation->images[2 * i - 2];
        }
        int each_once = 1;
        for (size_t i = 0; i < 1000; i++) each_once &= seen[i] == 1;
        CHECK(each_once && ascending && consistent);
        /* Not simply the last (or first) 100. */
        CHECK(validation->images[0] != 0.0f && validation->images[2 * 99] != 999.0f);
    }
    CHECK_OK(data_split_validation(numbered, 100, 42, &train2, &validation2, &error), &error);
    CHECK(validation && validation2 && memcmp(validation->images, validation2->images, 200 * sizeof(float)) == 0);
    dataset_free(train2);
    dataset_free(validation2);
    CHECK_OK(data_split_validation(numbered, 100, 43, &train2, &validation2, &error), &error);
    CHECK(validation && validation2 && memcmp(validation->images, validation2->images, 200 * sizeof(float)) != 0);
    dataset_free(train);
    dataset_free(validation);
    dataset_free(train2);
    dataset_free(validation2);

    CHECK_OK(data_split_validation(numbered, 0, 1, &train, &validation, &error), &error);
    CHECK(train && validation && train->count == 1000 && validation->count == 0);
    dataset_free(train);
    dataset_free(validation);
    CHECK_ERROR(data_split_validation(numbered, 1000, 1, &train, &validation, &error), SPIRT_ERR_INVALID, &error,
                "leaves no training");
    CHECK(train == NULL && validation == NULL);

    /* Statistics of a tiny known set: values 0..999 and their negatives. */
    float mean, std;
    data_statistics(numbered, &mean, &std);
    double sum_squares = 0.0;
    for (int i = 0; i < 1000; i++) sum_squares += 2.0 * i * i;
    CHECK_NEAR(mean, 0.0, 1e-9);
    CHECK_NEAR(std, sqrt(sum_squares / 2000.0), 1e-3);
    dataset_free(numbered);
}

/* --- Partitions --- */

/* Every index of [0, count) exactly once, each shard ascending and
 * non-empty. */
static void check_partition_cover(const DataPartition *partition, size_t count) {
    unsigned char *seen = calloc(count, 1);
    int in_range = 1, ascending = 1, non_empty = 1;
    for (size_t p = 0; p < partition->parts; p++) {
        non_empty &= partition->offsets[p + 1] > partition->offsets[p];
        for (size_t k = partition->offsets[p]; k < partition->offsets[p + 1]; k++) {
            size_t index = partition->indices[k];
            in_range &= index < count;
            if (index < count) seen[index]++;
            if (k > partition->offsets[p]) ascending &= index > partition->indices[k - 1];
        }
    }
    int each_once = partition->offsets[0] == 0 && partition->offsets[partition->parts] == count;
    for (size_t i = 0; i < count; i++) each_once &= seen[i] == 1;
    CHECK(in_range && each_once);
    CHECK(ascending);
    CHECK(non_empty);
    free(seen);
}

static int partitions_equal(const DataPartition *a, const DataPartition *b) {
    return a->parts == b->parts && memcmp(a->offsets, b->offsets, (a->parts + 1) * sizeof(size_t)) == 0 &&
           memcmp(a->indices, b->indices, a->offsets[a->parts] * sizeof(size_t)) == 0;
}

static void test_partition_iid(void) {
    test_begin("IID partition: disjoint, complete, equal sizes, seeded");
    SpirtError error;
    DataPartition partition, again, other;
    CHECK_OK(data_partition_iid(1003, 7, 9, &partition, &error), &error);
    CHECK(partition.parts == 7);
    check_partition_cover(&partition, 1003);
    size_t larger = 0;
    for (size_t p = 0; p < 7; p++) {
        size_t size = partition.offsets[p + 1] - partition.offsets[p];
        CHECKF(size == 143 || size == 144, "part %zu has %zu", p, size);
        larger += size == 144;
    }
    CHECK(larger == 1003 % 7);
    /* Random, not consecutive runs: part 0 is not 0..142 or so. */
    CHECK(partition.indices[partition.offsets[1] - 1] > 500);
    CHECK_OK(data_partition_iid(1003, 7, 9, &again, &error), &error);
    CHECK_OK(data_partition_iid(1003, 7, 10, &other, &error), &error);
    CHECK(partitions_equal(&partition, &again));
    CHECK(!partitions_equal(&partition, &other));
    data_partition_free(&partition);
    data_partition_free(&again);
    data_partition_free(&other);

    CHECK_OK(data_partition_iid(5, 5, 1, &partition, &error), &error);
    check_partition_cover(&partition, 5);
    data_partition_free(&partition);
    CHECK_ERROR(data_partition_iid(5, 6, 1, &partition, &error), SPIRT_ERR_INVALID, &error, "6 parts");
    CHECK(partition.parts == 0 && partition.offsets == NULL);
    data_partition_free(&partition); /* safe on a failed partition */
    CHECK_ERROR(data_partition_iid(5, 0, 1, &partition, &error), SPIRT_ERR_INVALID, &error, "0 parts");
}

/* Mean over parts of the total-variation distance between the part's label
 * distribution and the whole set's: 0 for perfectly IID shards, up to 0.9
 * for ten balanced classes each in a shard of its own. */
static double label_skew(const DataPartition *partition, const uint8_t *labels, size_t count) {
    double overall[DATA_CLASSES] = {0};
    for (size_t i = 0; i < count; i++) overall[labels[i]] += 1.0 / (double)count;
    double total = 0.0;
    for (size_t p = 0; p < partition->parts; p++) {
        double local[DATA_CLASSES] = {0};
        size_t size = partition->offsets[p + 1] - partition->offsets[p];
        for (size_t k = partition->offsets[p]; k < partition->offsets[p + 1]; k++)
            local[labels[partition->indices[k]]] += 1.0 / (double)size;
        double distance = 0.0;
        for (int c = 0; c < DATA_CLASSES; c++) distance += 0.5 * fabs(local[c] - overall[c]);
        total += distance;
    }
    return total / (double)partition->parts;
}

static void test_partition_dirichlet(const Dataset *train) {
    test_begin("Dirichlet partition: complete, non-empty, skew grows as alpha shrinks");
    SpirtError error;
    DataPartition skewed, mild, again;
    const uint8_t *labels = train->labels;
    size_t count = train->count;
    CHECK_OK(data_partition_dirichlet(labels, count, DATA_CLASSES, 10, 0.1, 5, &skewed, &error), &error);
    CHECK_OK(data_partition_dirichlet(labels, count, DATA_CLASSES, 10, 100.0, 5, &mild, &error), &error);
    if (skewed.parts == 10 && mild.parts == 10) {
        check_partition_cover(&skewed, count);
        check_partition_cover(&mild, count);
        double skew_small_alpha = label_skew(&skewed, labels, count);
        double skew_large_alpha = label_skew(&mild, labels, count);
        /* Dirichlet(100) shares deviate ~1% from 1/10: TV ~0.04. Dirichlet(0.1)
         * puts most of a class in one or two parts: TV well over 0.3. */
        CHECKF(skew_large_alpha < 0.1, "alpha 100 skew %.3f", skew_large_alpha);
        CHECKF(skew_small_alpha > 0.3, "alpha 0.1 skew %.3f", skew_small_alpha);
        CHECKF(skew_small_alpha > 5.0 * skew_large_alpha, "skews %.3f vs %.3f", skew_small_alpha, skew_large_alpha);
    }
    CHECK_OK(data_partition_dirichlet(labels, count, DATA_CLASSES, 10, 0.1, 5, &again, &error), &error);
    CHECK(skewed.parts == 10 && again.parts == 10 && partitions_equal(&skewed, &again));
    data_partition_free(&again);
    CHECK_OK(data_partition_dirichlet(labels, count, DATA_CLASSES, 10, 0.1, 6, &again, &error), &error);
    CHECK(again.parts == 10 && !partitions_equal(&skewed, &again));
    data_partition_free(&again);
    data_partition_free(&skewed);
    data_partition_free(&mild);

    /* Many parts at small alpha: redraws until each part has an example. */
    CHECK_OK(data_partition_dirichlet(labels, count, DATA_CLASSES, 100, 0.1, 3, &skewed, &error), &error);
    if (skewed.parts == 100) check_partition_cover(&skewed, count);
    data_partition_free(&skewed);

    /* One class of 10 examples, 10 parts, alpha so small that each draw hands
     * the whole class to one part: impossible, and said so. */
    uint8_t one_class[10] = {0};
    CHECK_ERROR(data_partition_dirichlet(one_class, 10, DATA_CLASSES, 10, 1e-3, 1, &skewed, &error),
                SPIRT_ERR_PRECONDITION, &error, "each of 10 parts");
    CHECK(skewed.parts == 0 && skewed.indices == NULL);
    CHECK_ERROR(data_partition_dirichlet(labels, count, DATA_CLASSES, 10, 0.0, 1, &skewed, &error),
                SPIRT_ERR_INVALID, &error, "alpha");
    CHECK_ERROR(data_partition_dirichlet(labels, count, DATA_CLASSES, 10, NAN, 1, &skewed, &error),
                SPIRT_ERR_INVALID, &error, "alpha");
    CHECK_ERROR(data_partition_dirichlet(labels, count, 5, 10, 1.0, 1, &skewed, &error), SPIRT_ERR_INVALID, &error,
                "not below 5 classes");
    CHECK_ERROR(data_partition_dirichlet(labels, 3, DATA_CLASSES, 4, 1.0, 1, &skewed, &error), SPIRT_ERR_INVALID,
                &error, "4 parts");
}

/* --- The batcher --- */

/* Runs one epoch; returns the number of batches and writes the indices
 * served into `served` (room for count) and their number into *total. */
static size_t run_epoch(DataBatcher *batcher, size_t *served, size_t *total, size_t *short_batches) {
    size_t batches = 0, n, batch[64];
    *total = 0;
    *short_batches = 0;
    while ((n = data_batcher_next(batcher, batch)) > 0) {
        CHECK(n <= batcher->batch_size);
        *short_batches += n < batcher->batch_size;
        memcpy(served + *total, batch, n * sizeof(size_t));
        *total += n;
        batches++;
    }
    return batches;
}

static int is_permutation(const size_t *values, size_t count) {
    unsigned char *seen = calloc(count, 1);
    int ok = 1;
    for (size_t i = 0; i < count; i++) {
        ok &= values[i] < count;
        if (values[i] < count) ok &= seen[values[i]]++ == 0;
    }
    free(seen);
    return ok;
}

static void test_batcher(void) {
    test_begin("batcher: permutations per epoch, seeded, reshuffled, drop_last");
    SpirtError error;
    enum { COUNT = 1000, BATCH = 32, EPOCHS = 3 };
    DataBatcher batcher, twin, other;
    CHECK_OK(data_batcher_init(&batcher, COUNT, BATCH, 77, 0, &error), &error);
    CHECK_OK(data_batcher_init(&twin, COUNT, BATCH, 77, 0, &error), &error);
    CHECK_OK(data_batcher_init(&other, COUNT, BATCH, 78, 0, &error), &error);
    CHECK(data_batcher_batches(&batcher) == 32 && batcher.epoch == 0);
    static size_t orders[EPOCHS][COUNT];
    size_t twin_order[COUNT], other_order[COUNT], total, short_batches;
    for (int e = 0; e < EPOCHS; e++) {
        CHECK(run_epoch(&batcher, orders[e], &total, &short_batches) == 32);
        CHECK(total == COUNT && short_batches == 1 && batcher.epoch == (uint64_t)e + 1);
        CHECK(is_permutation(orders[e], COUNT));
        run_epoch(&twin, twin_order, &total, &short_batches);
        CHECK(memcmp(orders[e], twin_order, sizeof(twin_order)) == 0);
        run_epoch(&other, other_order, &total, &short_batches);
        CHECK(memcmp(orders[e], other_order, sizeof(other_order)) != 0);
    }
    CHECK(memcmp(orders[0], orders[1], sizeof(orders[0])) != 0);
    CHECK(memcmp(orders[1], orders[2], sizeof(orders[0])) != 0);
    size_t identity_hits = 0;
    for (size_t i = 0; i < COUNT; i++) identity_hits += orders[0][i] == i;
    CHECK(identity_hits < 20); /* a shuffle fixes ~1 point on average */
    data_batcher_deinit(&batcher);
    data_batcher_deinit(&twin);
    data_batcher_deinit(&other);

    /* drop_last: 1000 = 31 * 32 + 8, the 8 left over are skipped. */
    CHECK_OK(data_batcher_init(&batcher, COUNT, BATCH, 77, 1, &error), &error);
    CHECK(data_batcher_batches(&batcher) == 31);
    for (int e = 0; e < 2; e++) {
        size_t served[COUNT];
        CHECK(run_epoch(&batcher, served, &total, &short_batches) == 31);
        CHECK(total == 31 * 32 && short_batches == 0);
        int distinct = 1;
        unsigned char seen[COUNT] = {0};
        for (size_t i = 0; i < total; i++) distinct &= served[i] < COUNT && seen[served[i]]++ == 0;
        CHECK(distinct);
        /* The epoch's order without drop_last, cut short: same seed, same order. */
        CHECK(memcmp(served, orders[e], total * sizeof(size_t)) == 0);
    }
    data_batcher_deinit(&batcher);

    /* A batch larger than the data: one short batch without drop_last. */
    CHECK_OK(data_batcher_init(&batcher, 5, 8, 1, 0, &error), &error);
    size_t served[8];
    CHECK(data_batcher_batches(&batcher) == 1 && run_epoch(&batcher, served, &total, &short_batches) == 1);
    CHECK(total == 5 && is_permutation(served, 5));
    data_batcher_deinit(&batcher);

    CHECK_ERROR(data_batcher_init(&batcher, 5, 8, 1, 1, &error), SPIRT_ERR_INVALID, &error, "leaves none");
    CHECK_ERROR(data_batcher_init(&batcher, 0, 8, 1, 0, &error), SPIRT_ERR_INVALID, &error, "0 examples");
    CHECK_ERROR(data_batcher_init(&batcher, 5, 0, 1, 0, &error), SPIRT_ERR_INVALID, &error, "batch size");
    CHECK(batcher.order == NULL);
    data_batcher_deinit(&batcher);
}

int main(void) {
    test_bad_files();
    test_damaged_gzip();
    test_load_folder();
    test_subset_and_split();
    test_partition_iid();
    test_batcher();
    Dataset *train = test_fashion_mnist();
    if (train) test_partition_dirichlet(train);
    dataset_free(train);
    return test_finish();
}
