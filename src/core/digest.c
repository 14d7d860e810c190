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

void digest_to_hex(const unsigned char digest[SPIRT_DIGEST_BYTES], char out[SPIRT_DIGEST_HEX_BYTES + 1]) {
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < SPIRT_DIGEST_BYTES; i++) {
        out[2 * i] = hex[digest[i] >> 4];
        out[2 * i + 1] = hex[digest[i] & 15];
    }
    out[SPIRT_DIGEST_HEX_BYTES] = '\0';
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int digest_from_hex(const char *hex, size_t length, unsigned char out[SPIRT_DIGEST_BYTES]) {
    if (hex == NULL || length != SPIRT_DIGEST_HEX_BYTES) return -1;
    for (size_t i = 0; i < SPIRT_DIGEST_BYTES; i++) {
        int high = hex_value(hex[2 * i]), low = hex_value(hex[2 * i + 1]);
        if (high < 0 || low < 0) return -1;
        out[i] = (unsigned char)(high << 4 | low);
    }
    return 0;
}
