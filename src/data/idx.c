/* idx.c -- reads one IDX file, raw or gzip (see idx.h).
 *
 * zlib's gz* functions read gzip and plain files alike (they look at the
 * first bytes, not the name), so one code path serves both. The reader
 * trusts nothing in the file: the header is checked field by field, the
 * declared size is bounded before any allocation, the buffer grows only as
 * data really arrives, and the file must end exactly where the header says.
 * For gzip input the stream's own checks (CRC, length, complete trailer)
 * must also pass. */
#include "data/idx.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* Bytes asked of zlib per gzread call, and the first allocation: small
 * enough that a short file never causes a large allocation. */
enum { READ_CHUNK = 1 << 20, GZ_BUFFER = 1 << 17 };

/* Reads up to `size` bytes; returns how many arrived (short at end of file),
 * or -1 on a read or decompression error. */
static long long read_up_to(gzFile file, uint8_t *buffer, size_t size) {
    size_t total = 0;
    while (total < size) {
        size_t want = size - total;
        if (want > READ_CHUNK) want = READ_CHUNK;
        int got = gzread(file, buffer + total, (unsigned)want);
        if (got < 0) return -1;
        if (got == 0) break;
        total += (size_t)got;
    }
    return (long long)total;
}

/* The zlib-level problem with the stream, if any: corrupt or cut-short
 * gzip data shows up here rather than as a short read. */
static int stream_failed(gzFile file, const char *path, SpirtError *error) {
    int zlib_status = Z_OK;
    const char *message = gzerror(file, &zlib_status);
    if (zlib_status == Z_OK) return SPIRT_OK;
    if (zlib_status == Z_ERRNO)
        return spirt_error_set(error, SPIRT_ERR_IO, "%s: read failed: %s", path, strerror(errno));
    if (zlib_status == Z_MEM_ERROR) return spirt_error_set(error, SPIRT_ERR_NOMEM, "%s: out of memory", path);
    return spirt_error_set(error, SPIRT_ERR_FORMAT, "%s: damaged gzip data: %s", path,
                           message && *message ? message : "unknown zlib error");
}

/* A short read: a stream error explains it if there is one, else the file
 * simply ended early. */
static int short_read(gzFile file, const char *path, const char *what, size_t got, size_t expected,
                      SpirtError *error) {
    if (stream_failed(file, path, error) != SPIRT_OK) return error ? error->code : SPIRT_ERR_FORMAT;
    return spirt_error_set(error, SPIRT_ERR_FORMAT, "%s: truncated %s: %zu of %zu bytes", path, what, got,
                           expected);
}

static uint32_t big_endian_u32(const uint8_t *bytes) {
    return (uint32_t)bytes[0] << 24 | (uint32_t)bytes[1] << 16 | (uint32_t)bytes[2] << 8 | (uint32_t)bytes[3];
}

/* Checks the header after the magic and fills dims/count. */
static int read_dims(gzFile file, const char *path, uint32_t ndim, DataIdxArray *array, SpirtError *error) {
    uint8_t bytes[4 * DATA_IDX_MAX_DIMS];
    size_t size = 4 * (size_t)ndim;
    long long got = read_up_to(file, bytes, size);
    if (got < 0) return stream_failed(file, path, error);
    if ((size_t)got < size) return short_read(file, path, "header", 4 + (size_t)got, 4 + size, error);
    uint64_t count = 1;
    for (uint32_t d = 0; d < ndim; d++) {
        uint32_t dim = big_endian_u32(bytes + 4 * d);
        if (dim == 0) return spirt_error_set(error, SPIRT_ERR_FORMAT, "%s: dimension %u is 0", path, d);
        array->dims[d] = dim;
        /* Each dim < 2^32 and count <= 2^30 before this multiply, so the
         * product fits in 64 bits; the bound is checked at every step. */
        count *= dim;
        if (count > DATA_IDX_MAX_VALUES)
            return spirt_error_set(error, SPIRT_ERR_FORMAT,
                                   "%s: dimensions claim more than %llu values (dimension %u is %u): refused", path,
                                   (unsigned long long)DATA_IDX_MAX_VALUES, d, dim);
    }
    array->ndim = ndim;
    array->count = (size_t)count;
    return SPIRT_OK;
}

/* Reads exactly array->count data bytes, growing the buffer as they come. */
static int read_values(gzFile file, const char *path, DataIdxArray *array, SpirtError *error) {
    size_t capacity = array->count < READ_CHUNK ? array->count : READ_CHUNK;
    uint8_t *values = malloc(capacity);
    if (values == NULL) return spirt_error_set(error, SPIRT_ERR_NOMEM, "%s: out of memory", path);
    size_t total = 0;
    for (;;) {
        long long got = read_up_to(file, values + total, capacity - total);
        if (got < 0) {
            free(values);
            return stream_failed(file, path, error);
        }
        total += (size_t)got;
        if (total < capacity || capacity == array->count) break; /* end of file, or all of it */
        size_t grown = capacity * 2 < array->count ? capacity * 2 : array->count;
        uint8_t *larger = realloc(values, grown);
        if (larger == NULL) {
            free(values);
            return spirt_error_set(error, SPIRT_ERR_NOMEM, "%s: out of memory for %zu bytes", path, grown);
        }
        values = larger;
        capacity = grown;
    }
    if (total < array->count) {
        free(values);
        return short_read(file, path, "data", total, array->count, error);
    }
    /* One more byte must not exist; reading it also makes zlib check the
     * gzip trailer (CRC and length) of a compressed file. */
    uint8_t extra;
    long long more = read_up_to(file, &extra, 1);
    if (more != 0 || stream_failed(file, path, error) != SPIRT_OK) {
        free(values);
        if (more > 0)
            return spirt_error_set(error, SPIRT_ERR_FORMAT,
                                   "%s: trailing data after the %zu values the header declares", path, array->count);
        return stream_failed(file, path, error);
    }
    array->values = values;
    return SPIRT_OK;
}

int data_idx_read(const char *path, uint32_t expected_ndim, DataIdxArray *array, SpirtError *error) {
    memset(array, 0, sizeof(*array));
    if (expected_ndim < 1 || expected_ndim > DATA_IDX_MAX_DIMS)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "%s: cannot read %u-dimensional IDX data", path,
                               expected_ndim);
    errno = 0;
    gzFile file = gzopen(path, "rb");
    if (file == NULL) {
        if (errno == ENOENT) return spirt_error_set(error, SPIRT_ERR_NOT_FOUND, "%s: no such file", path);
        return spirt_error_set(error, SPIRT_ERR_IO, "%s: cannot open: %s", path,
                               errno ? strerror(errno) : "out of memory");
    }
    gzbuffer(file, GZ_BUFFER);

    int status = SPIRT_OK;
    uint8_t magic[4];
    long long got = read_up_to(file, magic, sizeof(magic));
    if (got < 0)
        status = stream_failed(file, path, error);
    else if ((size_t)got < sizeof(magic))
        status = short_read(file, path, "header", (size_t)got, sizeof(magic), error);
    else if (magic[0] != 0 || magic[1] != 0)
        status = spirt_error_set(error, SPIRT_ERR_FORMAT,
                                 "%s: bad magic 0x%02x%02x%02x%02x (an IDX file starts with two zero bytes)", path,
                                 magic[0], magic[1], magic[2], magic[3]);
    else if (magic[2] != DATA_IDX_TYPE_UBYTE)
        status = spirt_error_set(error, SPIRT_ERR_FORMAT, "%s: IDX type 0x%02x, expected 0x%02x (unsigned byte)",
                                 path, magic[2], DATA_IDX_TYPE_UBYTE);
    else if (magic[3] != expected_ndim)
        status = spirt_error_set(error, SPIRT_ERR_FORMAT,
                                 "%s: %u dimensions, expected %u (images have 3, labels 1)", path, magic[3],
                                 expected_ndim);
    else
        status = read_dims(file, path, expected_ndim, array, error);
    if (status == SPIRT_OK) status = read_values(file, path, array, error);
    gzclose(file); /* read-only: nothing to flush, and stream errors were checked above */
    if (status != SPIRT_OK) {
        free(array->values);
        memset(array, 0, sizeof(*array));
    }
    return status;
}
