/* tensor.c -- shapes, owned tensors, digests and the tensor file format
 * (see include/spirt/tensor.h). */
#include "spirt/tensor.h"

#include <errno.h>
#include <math.h>
#include <sodium.h> /* crypto_generichash: BLAKE2b */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char file_magic[8] = {'S', 'P', 'I', 'R', 'T', 'T', 'N', 'S'};
enum { FILE_VERSION = 1, DTYPE_FLOAT32 = 1, DIGEST_BYTES = 16, FLAG_NO_DIGEST = 1 };

int tensor_shape_init(TensorShape *shape, uint32_t ndim, const uint64_t *dims, SpirtError *error) {
    if (ndim < 1 || ndim > SPIRT_TENSOR_MAX_DIMS)
        return spirt_error_set(error, SPIRT_ERR_SHAPE, "a tensor has 1 to %d dimensions, not %u",
                               SPIRT_TENSOR_MAX_DIMS, ndim);
    uint64_t count = 1;
    memset(shape, 0, sizeof(*shape));
    for (uint32_t i = 0; i < ndim; i++) {
        if (dims[i] == 0)
            return spirt_error_set(error, SPIRT_ERR_SHAPE, "dimension %u is 0 (empty tensors are not allowed)", i);
        if (dims[i] > SPIRT_TENSOR_MAX_COUNT || count > SPIRT_TENSOR_MAX_COUNT / dims[i])
            return spirt_error_set(error, SPIRT_ERR_SHAPE, "tensor too large: more than %llu values",
                                   (unsigned long long)SPIRT_TENSOR_MAX_COUNT);
        count *= dims[i];
        shape->dims[i] = dims[i];
    }
    shape->ndim = ndim;
    return SPIRT_OK;
}

int tensor_shape_vector(TensorShape *shape, uint64_t count, SpirtError *error) {
    return tensor_shape_init(shape, 1, &count, error);
}

size_t tensor_shape_count(const TensorShape *shape) {
    size_t count = 1;
    for (uint32_t i = 0; i < shape->ndim; i++) count *= (size_t)shape->dims[i];
    return shape->ndim ? count : 0;
}

int tensor_shape_equal(const TensorShape *a, const TensorShape *b) {
    if (a->ndim != b->ndim) return 0;
    for (uint32_t i = 0; i < a->ndim; i++)
        if (a->dims[i] != b->dims[i]) return 0;
    return 1;
}

char *tensor_shape_format(const TensorShape *shape, char *buffer, size_t size) {
    size_t used = 0;
    if (size == 0) return buffer;
    buffer[0] = '\0';
    used += (size_t)snprintf(buffer, size, "(");
    for (uint32_t i = 0; i < shape->ndim && used < size; i++)
        used += (size_t)snprintf(buffer + used, size - used, i ? ", %llu" : "%llu",
                                 (unsigned long long)shape->dims[i]);
    if (used < size) snprintf(buffer + used, size - used, ")");
    return buffer;
}

float *tensor_buffer_alloc(size_t count) {
    if (count == 0 || count > SPIRT_TENSOR_MAX_COUNT) return NULL;
    size_t bytes = count * sizeof(float);
    /* aligned_alloc wants a size that is a multiple of the alignment. */
    bytes = (bytes + SPIRT_TENSOR_ALIGNMENT - 1) / SPIRT_TENSOR_ALIGNMENT * SPIRT_TENSOR_ALIGNMENT;
    float *buffer = aligned_alloc(SPIRT_TENSOR_ALIGNMENT, bytes);
    if (buffer) memset(buffer, 0, bytes);
    return buffer;
}

void tensor_buffer_free(float *buffer) { free(buffer); }

Tensor *tensor_create(const TensorShape *shape, SpirtError *error) {
    TensorShape checked;
    if (tensor_shape_init(&checked, shape->ndim, shape->dims, error) != SPIRT_OK) return NULL;
    Tensor *tensor = calloc(1, sizeof(*tensor));
    if (tensor == NULL) {
        spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory for a tensor");
        return NULL;
    }
    tensor->shape = checked;
    tensor->count = tensor_shape_count(&checked);
    tensor->data = tensor_buffer_alloc(tensor->count);
    if (tensor->data == NULL) {
        free(tensor);
        spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory for a tensor of %zu values",
                        tensor_shape_count(&checked));
        return NULL;
    }
    return tensor;
}

Tensor *tensor_from_vector(const float *values, size_t count, SpirtError *error) {
    TensorShape shape;
    if (tensor_shape_vector(&shape, count, error) != SPIRT_OK) return NULL;
    Tensor *tensor = tensor_create(&shape, error);
    if (tensor) memcpy(tensor->data, values, count * sizeof(float));
    return tensor;
}

void tensor_free(Tensor *tensor) {
    if (tensor == NULL) return;
    tensor_buffer_free(tensor->data);
    free(tensor);
}

int tensor_all_finite(const float *values, size_t count, size_t *first_bad) {
    /* A float is NaN or infinite exactly when its exponent bits are all
     * ones. Testing that on the bit patterns, in fixed-size blocks, is pure
     * integer arithmetic the compiler vectorises (a float comparison chain
     * would not be, and must not be reordered); the index is found only on
     * failure. */
    enum { BLOCK = 1024 };
    for (size_t start = 0; start < count; start += BLOCK) {
        size_t length = count - start < BLOCK ? count - start : BLOCK;
        uint32_t bad = 0;
        const float *block = values + start;
        if (length == BLOCK) {
            /* A constant trip count: GCC's -O2 vectoriser takes only those. */
            for (size_t i = 0; i < BLOCK; i++) {
                uint32_t bits;
                memcpy(&bits, block + i, sizeof(bits));
                /* exponent all ones + 1 carries into the sign bit */
                bad |= ((bits & 0x7f800000u) + 0x00800000u) & 0x80000000u;
            }
        } else {
            for (size_t i = 0; i < length; i++) {
                uint32_t bits;
                memcpy(&bits, block + i, sizeof(bits));
                bad |= ((bits & 0x7f800000u) + 0x00800000u) & 0x80000000u;
            }
        }
        if (bad) {
            for (size_t i = 0; i < length; i++) {
                if (!isfinite(block[i])) {
                    if (first_bad) *first_bad = start + i;
                    return 0;
                }
            }
        }
    }
    return 1;
}

static void digest_bytes(const float *values, size_t count, unsigned char out[DIGEST_BYTES]) {
    /* sodium_init is idempotent and thread-safe; it selects the fastest
     * BLAKE2b code, which gives the same digest as the portable one. */
    if (sodium_init() < 0) memset(out, 0, DIGEST_BYTES);
    crypto_generichash(out, DIGEST_BYTES, (const unsigned char *)values, count * sizeof(float), NULL, 0);
}

void tensor_digest_hex(const float *values, size_t count, char out[SPIRT_DIGEST_HEX_SIZE]) {
    unsigned char digest[DIGEST_BYTES];
    digest_bytes(values, count, digest);
    sodium_bin2hex(out, SPIRT_DIGEST_HEX_SIZE, digest, DIGEST_BYTES);
}

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get_u32(const unsigned char *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
static uint64_t get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static void encode_shape(const TensorShape *shape, size_t count, unsigned char header[SPIRT_TENSOR_FILE_HEADER_SIZE]) {
    memset(header, 0, SPIRT_TENSOR_FILE_HEADER_SIZE);
    memcpy(header, file_magic, 8);
    put_u32(header + 8, FILE_VERSION);
    put_u32(header + 12, DTYPE_FLOAT32);
    put_u32(header + 16, shape->ndim);
    for (int i = 0; i < SPIRT_TENSOR_MAX_DIMS; i++) put_u64(header + 24 + 8 * i, shape->dims[i]);
    put_u64(header + 56, count);
}

static void encode_header(const Tensor *tensor, int with_digest, unsigned char header[SPIRT_TENSOR_FILE_HEADER_SIZE]) {
    encode_shape(&tensor->shape, tensor->count, header);
    if (with_digest)
        digest_bytes(tensor->data, tensor->count, header + 64);
    else
        put_u32(header + 20, FLAG_NO_DIGEST);
}

void tensor_payload_header(const TensorShape *shape, unsigned char header[SPIRT_TENSOR_FILE_HEADER_SIZE]) {
    encode_shape(shape, tensor_shape_count(shape), header);
    put_u32(header + 20, FLAG_NO_DIGEST);
}

/* Checks a header and returns the shape it describes. `available` is the
 * number of data bytes that follow the header. */
static int decode_header(const unsigned char *header, size_t available, const char *what, int digest_optional,
                         TensorShape *shape, SpirtError *error) {
    if (memcmp(header, file_magic, 8) != 0)
        return spirt_error_set(error, SPIRT_ERR_FORMAT, "%s: not a spirt tensor (bad magic)", what);
    if (get_u32(header + 8) != FILE_VERSION)
        return spirt_error_set(error, SPIRT_ERR_FORMAT, "%s: tensor format version %u is not supported (this build reads %d)",
                               what, get_u32(header + 8), FILE_VERSION);
    if (get_u32(header + 12) != DTYPE_FLOAT32)
        return spirt_error_set(error, SPIRT_ERR_FORMAT, "%s: unknown dtype %u (only float32 = 1)", what, get_u32(header + 12));
    uint32_t flags = get_u32(header + 20);
    if (flags & ~(uint32_t)FLAG_NO_DIGEST)
        return spirt_error_set(error, SPIRT_ERR_FORMAT, "%s: unknown flags 0x%x", what, flags);
    if ((flags & FLAG_NO_DIGEST) && !digest_optional)
        return spirt_error_set(error, SPIRT_ERR_FORMAT, "%s: tensor without a digest (valid only inside a signed envelope)",
                               what);
    uint64_t dims[SPIRT_TENSOR_MAX_DIMS];
    for (int i = 0; i < SPIRT_TENSOR_MAX_DIMS; i++) dims[i] = get_u64(header + 24 + 8 * i);
    if (tensor_shape_init(shape, get_u32(header + 16), dims, error) != SPIRT_OK)
        return spirt_error_prefix(error, "%s", what);
    for (uint32_t i = shape->ndim; i < SPIRT_TENSOR_MAX_DIMS; i++)
        if (dims[i] != 0)
            return spirt_error_set(error, SPIRT_ERR_FORMAT, "%s: unused dimension %u is %llu, not 0", what, i,
                                   (unsigned long long)dims[i]);
    uint64_t count = get_u64(header + 56);
    if (count != tensor_shape_count(shape))
        return spirt_error_set(error, SPIRT_ERR_FORMAT, "%s: count %llu does not match the dimensions", what,
                               (unsigned long long)count);
    if (available < count * sizeof(float))
        return spirt_error_set(error, SPIRT_ERR_FORMAT, "%s: truncated: %zu of %llu values", what,
                               available / sizeof(float), (unsigned long long)count);
    if (available > count * sizeof(float))
        return spirt_error_set(error, SPIRT_ERR_FORMAT, "%s: trailing bytes after the data", what);
    return SPIRT_OK;
}

int tensor_payload_shape(const unsigned char header[SPIRT_TENSOR_FILE_HEADER_SIZE], size_t data_bytes, const char *what,
                         TensorShape *shape, SpirtError *error) {
    return decode_header(header, data_bytes, what, 1, shape, error);
}

static int check_digest(const Tensor *tensor, const unsigned char *header, const char *what, SpirtError *error) {
    unsigned char digest[DIGEST_BYTES];
    digest_bytes(tensor->data, tensor->count, digest);
    if (memcmp(digest, header + 64, DIGEST_BYTES) != 0)
        return spirt_error_set(error, SPIRT_ERR_FORMAT, "%s: data digest mismatch (corrupt)", what);
    return SPIRT_OK;
}

static unsigned char *encode(const Tensor *tensor, int with_digest, size_t *size, SpirtError *error) {
    size_t total = SPIRT_TENSOR_FILE_HEADER_SIZE + tensor->count * sizeof(float);
    unsigned char *bytes = malloc(total);
    if (bytes == NULL) {
        spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory encoding a tensor of %zu values", tensor->count);
        return NULL;
    }
    encode_header(tensor, with_digest, bytes);
    memcpy(bytes + SPIRT_TENSOR_FILE_HEADER_SIZE, tensor->data, tensor->count * sizeof(float));
    *size = total;
    return bytes;
}

unsigned char *tensor_encode(const Tensor *tensor, size_t *size, SpirtError *error) {
    return encode(tensor, 1, size, error);
}

unsigned char *tensor_encode_without_digest(const Tensor *tensor, size_t *size, SpirtError *error) {
    return encode(tensor, 0, size, error);
}

static Tensor *decode(const unsigned char *bytes, size_t size, const char *what, int check, SpirtError *error) {
    if (size < SPIRT_TENSOR_FILE_HEADER_SIZE) {
        spirt_error_set(error, SPIRT_ERR_FORMAT, "%s: too short for a tensor header (%zu bytes)", what, size);
        return NULL;
    }
    TensorShape shape;
    if (decode_header(bytes, size - SPIRT_TENSOR_FILE_HEADER_SIZE, what, !check, &shape, error) != SPIRT_OK) return NULL;
    Tensor *tensor = tensor_create(&shape, error);
    if (tensor == NULL) return NULL;
    memcpy(tensor->data, bytes + SPIRT_TENSOR_FILE_HEADER_SIZE, tensor->count * sizeof(float));
    if (check && check_digest(tensor, bytes, what, error) != SPIRT_OK) {
        tensor_free(tensor);
        return NULL;
    }
    return tensor;
}

Tensor *tensor_decode(const unsigned char *bytes, size_t size, const char *what, SpirtError *error) {
    return decode(bytes, size, what, 1, error);
}

Tensor *tensor_decode_authenticated(const unsigned char *bytes, size_t size, const char *what, SpirtError *error) {
    return decode(bytes, size, what, 0, error);
}

int tensor_file_write(const char *path, const Tensor *tensor, SpirtError *error) {
    unsigned char header[SPIRT_TENSOR_FILE_HEADER_SIZE];
    encode_header(tensor, 1, header);
    char temporary[4096];
    if (snprintf(temporary, sizeof(temporary), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(temporary))
        return spirt_error_set(error, SPIRT_ERR_INVALID, "path too long: %s", path);
    FILE *file = fopen(temporary, "wb");
    if (file == NULL)
        return spirt_error_set(error, SPIRT_ERR_IO, "cannot create %s: %s", temporary, strerror(errno));
    int ok = fwrite(header, 1, sizeof(header), file) == sizeof(header) &&
             fwrite(tensor->data, sizeof(float), tensor->count, file) == tensor->count;
    ok = (fclose(file) == 0) && ok;
    if (!ok) {
        unlink(temporary);
        return spirt_error_set(error, SPIRT_ERR_IO, "cannot write %s: %s", temporary, strerror(errno));
    }
    if (rename(temporary, path) != 0) {
        int saved = errno;
        unlink(temporary);
        return spirt_error_set(error, SPIRT_ERR_IO, "cannot rename %s to %s: %s", temporary, path, strerror(saved));
    }
    return SPIRT_OK;
}

Tensor *tensor_file_read(const char *path, SpirtError *error) {
    FILE *file = fopen(path, "rb");
    if (file == NULL) {
        spirt_error_set(error, errno == ENOENT ? SPIRT_ERR_NOT_FOUND : SPIRT_ERR_IO, "%s: %s", path, strerror(errno));
        return NULL;
    }
    Tensor *tensor = NULL;
    unsigned char header[SPIRT_TENSOR_FILE_HEADER_SIZE];
    struct stat info;
    if (fstat(fileno(file), &info) != 0 || !S_ISREG(info.st_mode)) {
        spirt_error_set(error, SPIRT_ERR_IO, "%s: not a regular file", path);
    } else if ((size_t)info.st_size < sizeof(header) || fread(header, 1, sizeof(header), file) != sizeof(header)) {
        spirt_error_set(error, SPIRT_ERR_FORMAT, "%s: too short for a tensor file header", path);
    } else {
        TensorShape shape;
        /* The header is checked against the file's real size before any
         * allocation, so a lying header cannot make us allocate gigabytes. */
        if (decode_header(header, (size_t)info.st_size - sizeof(header), path, 0, &shape, error) == SPIRT_OK &&
            (tensor = tensor_create(&shape, error)) != NULL) {
            if (fread(tensor->data, sizeof(float), tensor->count, file) != tensor->count) {
                spirt_error_set(error, SPIRT_ERR_IO, "%s: read failed", path);
                tensor_free(tensor);
                tensor = NULL;
            } else if (check_digest(tensor, header, path, error) != SPIRT_OK) {
                tensor_free(tensor);
                tensor = NULL;
            }
        }
    }
    fclose(file);
    return tensor;
}
