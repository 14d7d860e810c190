/* idx.h -- the IDX file reader behind data_load (private to src/data).
 *
 * One IDX file of unsigned bytes (the only type MNIST-format data uses),
 * raw or gzip compressed, read whole into memory after every header field
 * and the exact data length have been checked. The dataset code turns an
 * images file and a labels file into a Dataset; tests use this directly to
 * probe the reader with crafted files. */
#ifndef SPIRT_DATA_IDX_H
#define SPIRT_DATA_IDX_H

#include <stddef.h>
#include <stdint.h>

#include "spirt/error.h"

/* An images file has 3 dimensions (count, rows, cols); a labels file 1. */
#define DATA_IDX_MAX_DIMS 3
/* The largest data section accepted, in values (bytes): 2^30, twenty times
 * Fashion-MNIST's training images. A header claiming more is refused before
 * anything is allocated; below it, memory grows only as data actually
 * arrives, so a lying header in a short file costs nothing either. */
#define DATA_IDX_MAX_VALUES ((uint64_t)1 << 30)
/* The IDX type byte for unsigned 8-bit values. */
#define DATA_IDX_TYPE_UBYTE 0x08

typedef struct DataIdxArray {
    uint32_t ndim;                     /* as required by the caller */
    uint32_t dims[DATA_IDX_MAX_DIMS];  /* each > 0 */
    size_t count;                      /* product of dims */
    uint8_t *values;                   /* count bytes, owned: free() */
} DataIdxArray;

/* Reads the IDX file at `path` (raw or gzip, told by content), which must
 * have exactly `expected_ndim` dimensions (1..DATA_IDX_MAX_DIMS). On success
 * the caller owns array->values (free). On failure array is zeroed and the
 * message names the file and the problem: SPIRT_ERR_NOT_FOUND if the file
 * does not exist, SPIRT_ERR_IO if it cannot be read, SPIRT_ERR_FORMAT for
 * malformed content, SPIRT_ERR_NOMEM. */
int data_idx_read(const char *path, uint32_t expected_ndim, DataIdxArray *array, SpirtError *error);

#endif /* SPIRT_DATA_IDX_H */
