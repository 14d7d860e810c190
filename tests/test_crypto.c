/* test_crypto.c -- identities, key files, signed envelopes and their digest. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "spirt/crypto.h"
#include "spirt/digest.h"
#include "test.h"

static void test_identities(void) {
    test_begin("identities: known key, ids, key files");
    SpirtError error;
    /* RFC 8032, Ed25519 test 1: this seed has this public key. */
    unsigned char seed[32];
    size_t length;
    sodium_hex2bin(seed, 32, "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60", 64, NULL, &length, NULL);
    Identity identity;
    CHECK_OK(identity_from_seed(&identity, "peer-1", seed, &error), &error);
    char hex[SPIRT_PUBLIC_KEY_HEX_SIZE];
    identity_public_hex(&identity, hex);
    CHECKF(strcmp(hex, "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a") == 0, "got %s", hex);

    Identity bad;
    CHECK_ERROR(identity_generate(&bad, "", &error), SPIRT_ERR_INVALID, &error, "invalid peer id");
    CHECK_ERROR(identity_generate(&bad, "a b", &error), SPIRT_ERR_INVALID, &error, "invalid peer id");
    char long_id[80];
    memset(long_id, 'x', 79);
    long_id[79] = '\0';
    CHECK_ERROR(identity_generate(&bad, long_id, &error), SPIRT_ERR_INVALID, &error, "invalid peer id");
    CHECK_ERROR(identity_from_public_hex(&bad, "p", "abcd", &error), SPIRT_ERR_FORMAT, &error, "64 hex digits");

    char path[600];
    test_temp_path(path, sizeof(path), "peer.key");
    CHECK_OK(identity_save(&identity, path, &error), &error);
    struct stat info;
    CHECK(stat(path, &info) == 0 && (info.st_mode & 0777) == 0600);
    Identity loaded;
    CHECK_OK(identity_load(&loaded, path, &error), &error);
    CHECK(strcmp(loaded.peer_id, "peer-1") == 0 && memcmp(loaded.secret_key, identity.secret_key, 64) == 0);
    chmod(path, 0644);
    CHECK_ERROR(identity_load(&loaded, path, &error), SPIRT_ERR_AUTH, &error, "chmod 600");

    /* A key file whose public key does not belong to its secret key. */
    Identity other;
    identity_generate(&other, "peer-1", &error);
    memcpy(other.public_key, identity.public_key, 32);
    test_temp_path(path, sizeof(path), "mismatch.key");
    CHECK_OK(identity_save(&other, path, &error), &error);
    CHECK_ERROR(identity_load(&loaded, path, &error), SPIRT_ERR_AUTH, &error, "does not belong");
    test_temp_path(path, sizeof(path), "garbage.key");
    FILE *file = fopen(path, "w");
    fputs("{\"peer_id\": 3", file);
    fclose(file);
    chmod(path, 0600);
    CHECK_ERROR(identity_load(&loaded, path, &error), SPIRT_ERR_FORMAT, &error, "garbage.key");
}

static void test_envelopes(void) {
    test_begin("envelopes: round trip and every way to break one");
    SpirtError error;
    Identity alice, bob, alice_public;
    identity_generate(&alice, "alice", &error);
    identity_generate(&bob, "bob", &error);
    char hex[SPIRT_PUBLIC_KEY_HEX_SIZE];
    identity_public_hex(&alice, hex);
    CHECK_OK(identity_from_public_hex(&alice_public, "alice", hex, &error), &error);
    CHECK(!alice_public.has_secret);

    float payload[300];
    for (int i = 0; i < 300; i++) payload[i] = (float)i * 0.25f;
    size_t size = 0;
    unsigned char *envelope = envelope_seal(&alice, ENVELOPE_KIND_ROUND_AVERAGE, 17, payload, sizeof(payload), &size, &error);
    CHECK(envelope != NULL && size == ENVELOPE_HEADER_BYTES + 5 + sizeof(payload) + ENVELOPE_SIGNATURE_BYTES);
    EnvelopeContents contents;
    CHECK_OK(envelope_open(envelope, size, &alice_public, ENVELOPE_KIND_ROUND_AVERAGE, 17, &contents, &error), &error);
    CHECK(contents.round == 17 && contents.payload_size == sizeof(payload) &&
          memcmp(contents.payload, payload, sizeof(payload)) == 0 && strcmp(contents.peer_id, "alice") == 0);

    CHECK_ERROR(envelope_open(envelope, size, &bob, ENVELOPE_KIND_ROUND_AVERAGE, 17, &contents, &error), SPIRT_ERR_AUTH,
                &error, "expected 'bob'");
    CHECK_ERROR(envelope_open(envelope, size, &alice_public, ENVELOPE_KIND_ROUND_AVERAGE, 18, &contents, &error),
                SPIRT_ERR_AUTH, &error, "round 17, expected 18");
    CHECK_ERROR(envelope_open(envelope, size, &alice_public, ENVELOPE_KIND_MODEL, 17, &contents, &error), SPIRT_ERR_AUTH,
                &error, "kind");
    CHECK(envelope_open(envelope, size, &alice_public, ENVELOPE_KIND_ROUND_AVERAGE, 17, &contents, NULL) == SPIRT_OK);

    /* Flip one bit at every position: each must be refused. */
    int refused = 0;
    for (size_t i = 0; i < size; i++) {
        envelope[i] ^= 0x04;
        if (envelope_open(envelope, size, &alice_public, ENVELOPE_KIND_ROUND_AVERAGE, 17, &contents, &error) != SPIRT_OK)
            refused++;
        else
            fprintf(stderr, "flipping byte %zu went unnoticed\n", i);
        envelope[i] ^= 0x04;
    }
    CHECKF(refused == (int)size, "%d of %zu flips refused", refused, size);

    /* An impostor: bob signs an envelope and claims to be alice. */
    Identity impostor = bob;
    memcpy(impostor.peer_id, "alice", 6);
    size_t forged_size;
    unsigned char *forged = envelope_seal(&impostor, ENVELOPE_KIND_ROUND_AVERAGE, 17, payload, sizeof(payload),
                                          &forged_size, &error);
    CHECK_ERROR(envelope_open(forged, forged_size, &alice_public, ENVELOPE_KIND_ROUND_AVERAGE, 17, &contents, &error),
                SPIRT_ERR_AUTH, &error, "bad signature");
    free(forged);

    CHECK_ERROR(envelope_open(envelope, size - 1, &alice_public, ENVELOPE_KIND_ROUND_AVERAGE, 17, &contents, &error),
                SPIRT_ERR_FORMAT, &error, "does not match");
    unsigned char *longer = malloc(size + 3);
    memcpy(longer, envelope, size);
    CHECK_ERROR(envelope_open(longer, size + 3, &alice_public, ENVELOPE_KIND_ROUND_AVERAGE, 17, &contents, &error),
                SPIRT_ERR_FORMAT, &error, "does not match");
    free(longer);
    CHECK_ERROR(envelope_open(envelope, 20, &alice_public, ENVELOPE_KIND_ROUND_AVERAGE, 17, &contents, &error),
                SPIRT_ERR_FORMAT, &error, "too short");
    /* A header claiming a payload of 2^64 - 1 bytes. */
    memset(envelope + 24, 0xff, 8);
    CHECK_ERROR(envelope_open(envelope, size, &alice_public, ENVELOPE_KIND_ROUND_AVERAGE, 17, &contents, &error),
                SPIRT_ERR_FORMAT, &error, "does not match");
    free(envelope);

    Identity public_only = alice_public;
    CHECK(envelope_seal(&public_only, ENVELOPE_KIND_ROUND_AVERAGE, 1, payload, 4, &size, &error) == NULL &&
          error.code == SPIRT_ERR_INVALID);
    /* An empty payload is legal. */
    envelope = envelope_seal(&alice, ENVELOPE_KIND_JOIN_REQUEST, 0, NULL, 0, &size, &error);
    CHECK_OK(envelope_open(envelope, size, &alice_public, ENVELOPE_KIND_JOIN_REQUEST, 0, &contents, &error), &error);
    free(envelope);
}

/* BLAKE3 against b3sum, Debian's Rust implementation (independent code),
 * at sizes around the 64-byte block and 1 KiB chunk boundaries and past
 * the 16-chunk width of the AVX-512 kernel, and through pieces split at
 * odd places. The envelope's header must hold that digest. */
static void hex_of(const unsigned char *bytes, size_t count, char *out) {
    for (size_t i = 0; i < count; i++) sprintf(out + 2 * i, "%02x", bytes[i]);
}

static void test_digest(void) {
    test_begin("digest: BLAKE3 matches b3sum; envelopes carry it; a head checks alone");
    const size_t sizes[] = {0, 1, 63, 64, 65, 1023, 1024, 1025, 2048, 3 * 1024 + 1, 16 * 1024, 17 * 1024 + 5,
                            (1 << 20) + 3, 940 * 1024};
    unsigned char *bytes = malloc((1 << 20) + 3);
    uint64_t state = 0x243f6a8885a308d3ull;
    for (size_t i = 0; i < (1 << 20) + 3; i++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        bytes[i] = (unsigned char)(state >> 56);
    }
    char path[1024], command[1200];
    test_temp_path(path, sizeof(path), "digest.bin");
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        size_t size = sizes[k];
        FILE *file = fopen(path, "wb");
        CHECK(file != NULL && fwrite(bytes, 1, size, file) == size);
        if (file) fclose(file);
        snprintf(command, sizeof(command), "b3sum --no-names '%s'", path);
        FILE *pipe = popen(command, "r");
        char expected[128] = "";
        CHECKF(pipe != NULL && fgets(expected, sizeof(expected), pipe) != NULL, "b3sum did not run (scripts/deps.sh installs it)");
        if (pipe) pclose(pipe);
        expected[strcspn(expected, "\n")] = '\0';

        unsigned char digest[SPIRT_DIGEST_BYTES];
        char actual[2 * SPIRT_DIGEST_BYTES + 1];
        digest_blake3(bytes, size, digest);
        hex_of(digest, SPIRT_DIGEST_BYTES, actual);
        CHECKF(strcmp(actual, expected) == 0, "%zu bytes: %s, b3sum %s", size, actual, expected);

        /* The same bytes in three pieces, cut off the block grid. */
        size_t first = size / 3, second = size / 3 + (size > 7 ? 7 : 0);
        if (first + second > size) second = size - first;
        DigestPiece pieces[] = {{bytes, first}, {bytes + first, second}, {bytes + first + second, size - first - second}};
        unsigned char pieced[SPIRT_DIGEST_BYTES];
        digest_blake3_pieces(pieces, 3, pieced);
        CHECKF(memcmp(pieced, digest, SPIRT_DIGEST_BYTES) == 0, "%zu bytes in pieces", size);
    }

    SpirtError error;
    Identity alice;
    identity_generate(&alice, "alice", &error);
    size_t envelope_size = 0;
    unsigned char *envelope =
        envelope_seal(&alice, ENVELOPE_KIND_ROUND_AVERAGE, 3, bytes, 5000, &envelope_size, &error);
    unsigned char digest[SPIRT_DIGEST_BYTES];
    digest_blake3(bytes, 5000, digest);
    CHECK(envelope != NULL && memcmp(envelope + 32, digest, SPIRT_DIGEST_BYTES) == 0);
    /* Version 1 (SHA-256) envelopes are refused by name. */
    if (envelope) {
        envelope[8] = 1;
        EnvelopeContents contents;
        CHECK_ERROR(envelope_open(envelope, envelope_size, &alice, ENVELOPE_KIND_ROUND_AVERAGE, 3, &contents, &error),
                    SPIRT_ERR_FORMAT, &error, "version 1 is not supported");
    }
    free(envelope);

    /* The head and signature alone (what exchange reads before SPIRT.FETCH):
     * accepted with the signed digest, and refused as envelope_open would. */
    envelope = envelope_seal(&alice, ENVELOPE_KIND_ROUND_AVERAGE, 9, bytes, 7000, &envelope_size, &error);
    const unsigned char *tail = envelope + envelope_size - ENVELOPE_SIGNATURE_BYTES;
    EnvelopeHead head;
    CHECK_OK(envelope_check_head(envelope, ENVELOPE_HEAD_MAX, tail, envelope_size, &alice, ENVELOPE_KIND_ROUND_AVERAGE,
                                 9, &head, &error),
             &error);
    digest_blake3(bytes, 7000, digest);
    CHECK(head.payload_offset == ENVELOPE_HEADER_BYTES + 5 && head.payload_size == 7000 &&
          memcmp(head.payload_digest, digest, SPIRT_DIGEST_BYTES) == 0 &&
          memcmp(envelope + head.payload_offset, bytes, 7000) == 0);
    CHECK_ERROR(envelope_check_head(envelope, ENVELOPE_HEAD_MAX, tail, envelope_size - 1, &alice,
                                    ENVELOPE_KIND_ROUND_AVERAGE, 9, &head, &error),
                SPIRT_ERR_FORMAT, &error, "does not match");
    CHECK_ERROR(envelope_check_head(envelope, ENVELOPE_HEADER_BYTES + 2, tail, envelope_size, &alice,
                                    ENVELOPE_KIND_ROUND_AVERAGE, 9, &head, &error),
                SPIRT_ERR_FORMAT, &error, "cut short");
    CHECK_ERROR(envelope_check_head(envelope, ENVELOPE_HEAD_MAX, tail, envelope_size, &alice,
                                    ENVELOPE_KIND_ROUND_AVERAGE, 10, &head, &error),
                SPIRT_ERR_AUTH, &error, "round 9, expected 10");
    int refused = 0, positions = 0;
    for (size_t i = 0; i < ENVELOPE_HEADER_BYTES + 5; i++, positions++) {
        envelope[i] ^= 0x10;
        refused += envelope_check_head(envelope, ENVELOPE_HEAD_MAX, tail, envelope_size, &alice,
                                       ENVELOPE_KIND_ROUND_AVERAGE, 9, &head, NULL) != SPIRT_OK;
        envelope[i] ^= 0x10;
    }
    for (size_t i = envelope_size - ENVELOPE_SIGNATURE_BYTES; i < envelope_size; i++, positions++) {
        envelope[i] ^= 0x10;
        refused += envelope_check_head(envelope, ENVELOPE_HEAD_MAX, tail, envelope_size, &alice,
                                       ENVELOPE_KIND_ROUND_AVERAGE, 9, &head, NULL) != SPIRT_OK;
        envelope[i] ^= 0x10;
    }
    CHECKF(refused == positions, "%d of %d flipped head/signature bytes refused", refused, positions);
    free(envelope);
    free(bytes);
}

int main(void) {
    test_identities();
    test_envelopes();
    test_digest();
    return test_finish();
}
