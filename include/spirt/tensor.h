/* tensor.h -- flat float32 tensors: shapes, owned buffers, digests, files.
 *
 * A tensor is a shape (1 to 4 dimensions, each > 0) and `count` float32
 * values in row-major order. In memory, on the wire (SPIRT.TSET blobs) and in
 * files the values are IEEE-754 binary32, little-endian; spirt refuses to
 * build on big-endian machines rather than convert.
 *
 * Model parameters, gradients and optimizer state are each ONE tensor, so a
 * model travels to and from a database as one value (see src/nn).
 *
 * Tensor file format (version 1), for checkpoints and final models:
 *   offset  size  field
 *        0     8  magic "SPIRTTNS"
 *        8     4  version (1), uint32 LE
 *       12     4  dtype (1 = float32 LE), uint32 LE
 *       16     4  ndim, uint32 LE
 *       20     4  flags, uint32 LE: bit 0 set = no digest (the 16 digest
 *                 bytes are zero); other bits 0
 *       24    32  dims[4], uint64 LE (unused dims are 0)
 *       56     8  count, uint64 LE (product of dims)
 *       64    16  BLAKE2b-128 digest of the data bytes
 *       80    16  reserved, 0
 *       96  4*count  data
 * Readers check every field and the digest, and refuse files with trailing
 * bytes. Only tensors inside a signed envelope may go without a digest
 * (flag bit 0): the envelope's signature already covers their bytes, and a
 * second hash of a megabyte every round was the largest cost of publishing.
 * tensor_decode and tensor_file_read refuse such tensors. */
#ifndef SPIRT_TENSOR_H
#define SPIRT_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "spirt/error.h" /* SpirtError */

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "spirt stores float32 little-endian and supports little-endian machines only"
#endif

#define SPIRT_TENSOR_MAX_DIMS 4
/* 2^31 values (8 GiB): far above any model here, and small enough that
 * counts and byte sizes never overflow. */
#define SPIRT_TENSOR_MAX_COUNT ((uint64_t)1 << 31)
/* Buffers are aligned for AVX-512 loads. */
#define SPIRT_TENSOR_ALIGNMENT 64
/* 32 hex digits of BLAKE2b-128 and the NUL. */
#define SPIRT_DIGEST_HEX_SIZE 33
#define SPIRT_TENSOR_FILE_HEADER_SIZE 96

typedef struct TensorShape {
    uint32_t ndim;                        /* 1..SPIRT_TENSOR_MAX_DIMS */
    uint64_t dims[SPIRT_TENSOR_MAX_DIMS]; /* dims[i] > 0 for i < ndim, 0 after */
} TensorShape;

typedef struct Tensor {
    TensorShape shape;
    size_t count; /* product of the dims */
    float *data;  /* count values, SPIRT_TENSOR_ALIGNMENT-aligned, owned */
} Tensor;

/* Fills `shape` from ndim dims after checking them: 1 <= ndim <= 4, every dim
 * > 0, product <= SPIRT_TENSOR_MAX_COUNT. */
int tensor_shape_init(TensorShape *shape, uint32_t ndim, const uint64_t *dims, SpirtError *error);
/* A one-dimensional shape of `count` values. */
int tensor_shape_vector(TensorShape *shape, uint64_t count, SpirtError *error);
size_t tensor_shape_count(const TensorShape *shape);
int tensor_shape_equal(const TensorShape *a, const TensorShape *b);
/* Writes "(256, 784)" into buffer (always NUL-terminated); returns buffer. */
char *tensor_shape_format(const TensorShape *shape, char *buffer, size_t size);

/* A new zero-filled tensor of `shape`. The caller owns it: tensor_free. */
Tensor *tensor_create(const TensorShape *shape, SpirtError *error);
/* A new tensor holding a copy of `count` values, shaped as a vector. */
Tensor *tensor_from_vector(const float *values, size_t count, SpirtError *error);
void tensor_free(Tensor *tensor); /* NULL is allowed */

/* Aligned float buffers for kernels' callers: zero-filled; free with
 * tensor_buffer_free. Returns NULL when count is 0 or on overflow/OOM. */
float *tensor_buffer_alloc(size_t count);
void tensor_buffer_free(float *buffer);

/* 1 if all `count` values are finite. Otherwise 0, and *first_bad (if not
 * NULL) receives the index of the first NaN or infinity. */
int tensor_all_finite(const float *values, size_t count, size_t *first_bad);

/* BLAKE2b-128 of the values' little-endian bytes as 32 lowercase hex digits.
 * Two vectors have the same digest exactly when they are bit-identical (up to
 * the hash's collision resistance); this is how peers compare models. */
void tensor_digest_hex(const float *values, size_t count, char out[SPIRT_DIGEST_HEX_SIZE]);

/* The file format above as bytes in memory (also the payload of a signed
 * publication): a new buffer of *size bytes that the caller frees with
 * free(). NULL on allocation failure. */
unsigned char *tensor_encode(const Tensor *tensor, size_t *size, SpirtError *error);
/* Parses bytes in the format above, checking every field and the digest.
 * `what` names the source in error messages (a file, a key, a peer). The
 * caller owns the result (tensor_free). */
Tensor *tensor_decode(const unsigned char *bytes, size_t size, const char *what, SpirtError *error);

/* The same encoding without the digest (flag bit 0), for the payload of a
 * signed envelope only. Caller frees with free(). */
unsigned char *tensor_encode_without_digest(const Tensor *tensor, size_t *size, SpirtError *error);
/* The SPIRT_TENSOR_FILE_HEADER_SIZE bytes that tensor_encode_without_digest
 * puts before the values of a tensor of `shape`: with the values' bytes
 * after it, the encoding. The module wraps a stored tensor this way
 * (SPIRT.TWRAP) without a copy of it leaving the database. */
void tensor_payload_header(const TensorShape *shape, unsigned char header[SPIRT_TENSOR_FILE_HEADER_SIZE]);
/* The reverse, for bytes whose integrity is proven otherwise (the module
 * reading a peer's publication, SPIRT.FETCH): checks every field of a
 * header followed by `data_bytes` bytes of values, as
 * tensor_decode_authenticated does, and gives the shape. SPIRT_ERR_FORMAT
 * (or SHAPE) naming `what` otherwise. */
int tensor_payload_shape(const unsigned char header[SPIRT_TENSOR_FILE_HEADER_SIZE], size_t data_bytes, const char *what,
                         TensorShape *shape, SpirtError *error);

/* tensor_decode for bytes whose integrity is already proven -- the payload
 * of an envelope whose signature covers its digest (BLAKE3): checks every
 * field but does not hash the data again (the costliest part of decoding),
 * and accepts encodings without a digest. */
Tensor *tensor_decode_authenticated(const unsigned char *bytes, size_t size, const char *what, SpirtError *error);

/* Writes `tensor` to `path` in the file format above, atomically (a
 * temporary file renamed into place). */
int tensor_file_write(const char *path, const Tensor *tensor, SpirtError *error);
/* Reads a tensor file; the caller owns the result (tensor_free). NULL on
 * error, with a message naming the file and the problem. */
Tensor *tensor_file_read(const char *path, SpirtError *error);

#ifdef __cplusplus
}
#endif

#endif /* SPIRT_TENSOR_H */
