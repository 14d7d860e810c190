/* digest.h -- the digest of what peers publish: BLAKE3, 32 bytes.
 *
 * Every published average is hashed by its sender and again by each of its
 * receivers, so the hash's speed is a share of every round (docs/
 * benchmarks.md). BLAKE3 hashes a megabyte's 1 KiB chunks side by side in
 * vector registers (AVX-512 where there is some): several times SHA-256's
 * speed even with the CPU's SHA extensions, with the same 128-bit security.
 * The implementation is BLAKE3's reference C code from Debian's
 * librust-blake3-dev (CMakeLists.txt), which picks its fastest kernel at
 * run time; the result is the same bits on every CPU.
 *
 * Used by the envelopes of src/crypto and by the module, so that a digest
 * computed inside the database and one computed by a function agree. */
#ifndef SPIRT_DIGEST_H
#define SPIRT_DIGEST_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { SPIRT_DIGEST_BYTES = 32, SPIRT_DIGEST_HEX_BYTES = 2 * SPIRT_DIGEST_BYTES };

/* The BLAKE3-256 digest of bytes[0, size) into out. bytes may be NULL when
 * size is 0. Thread-safe; allocates nothing. */
void digest_blake3(const void *bytes, size_t size, unsigned char out[SPIRT_DIGEST_BYTES]);

/* The same digest over several pieces, as if they were one run of bytes. */
typedef struct DigestPiece {
    const void *bytes;
    size_t size;
} DigestPiece;
void digest_blake3_pieces(const DigestPiece *pieces, size_t count, unsigned char out[SPIRT_DIGEST_BYTES]);

/* A digest as SPIRT_DIGEST_HEX_BYTES lowercase hex digits and a NUL. */
void digest_to_hex(const unsigned char digest[SPIRT_DIGEST_BYTES], char out[SPIRT_DIGEST_HEX_BYTES + 1]);
/* The reverse, from exactly SPIRT_DIGEST_HEX_BYTES hex digits (either
 * case): 0, or -1 for anything else (out is then undefined). */
int digest_from_hex(const char *hex, size_t length, unsigned char out[SPIRT_DIGEST_BYTES]);

#ifdef __cplusplus
}
#endif

#endif
