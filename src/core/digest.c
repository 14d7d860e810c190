/* digest.c -- BLAKE3 digests (include/spirt/digest.h), over the reference
 * implementation built from librust-blake3-dev's C sources. */
#include "spirt/digest.h"

#include <blake3.h>

void digest_blake3_pieces(const DigestPiece *pieces, size_t count, unsigned char out[SPIRT_DIGEST_BYTES]) {
    blake3_hasher hasher;
    blake3_hasher_init(&hasher);
    for (size_t i = 0; i < count; i++)
        if (pieces[i].size > 0) blake3_hasher_update(&hasher, pieces[i].bytes, pieces[i].size);
    blake3_hasher_finalize(&hasher, out, SPIRT_DIGEST_BYTES);
}

void digest_blake3(const void *bytes, size_t size, unsigned char out[SPIRT_DIGEST_BYTES]) {
    DigestPiece piece = {bytes, size};
    digest_blake3_pieces(&piece, 1, out);
}
