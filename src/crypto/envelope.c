/* envelope.c -- signed envelopes for what peers publish
 * (format in include/spirt/crypto.h). */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "spirt/crypto.h"
#include "spirt/digest.h"

static const char envelope_magic[8] = {'S', 'P', 'I', 'R', 'T', 'E', 'N', 'V'};
enum { ENVELOPE_VERSION = 2 };

static void put_u16(unsigned char *p, uint16_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}
static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint16_t get_u16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint64_t get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

int envelope_seal_around(const Identity *signer, EnvelopeKind kind, uint64_t round, size_t payload_size,
                         const unsigned char digest[SPIRT_DIGEST_BYTES], unsigned char head[ENVELOPE_HEAD_MAX],
                         size_t *head_size, unsigned char signature[ENVELOPE_SIGNATURE_BYTES], SpirtError *error) {
    if (!signer->has_secret)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "identity %s has no secret key: cannot sign", signer->peer_id);
    if (sodium_init() < 0) return spirt_error_set(error, SPIRT_ERR_INTERNAL, "libsodium failed to initialise");
    size_t id_length = strlen(signer->peer_id);
    size_t signed_length = ENVELOPE_HEADER_BYTES + id_length;
    if (payload_size > SIZE_MAX - signed_length - ENVELOPE_SIGNATURE_BYTES)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "payload too large");
    memset(head, 0, ENVELOPE_HEADER_BYTES);
    memcpy(head, envelope_magic, 8);
    put_u16(head + 8, ENVELOPE_VERSION);
    put_u16(head + 10, (uint16_t)kind);
    put_u16(head + 12, (uint16_t)id_length);
    put_u64(head + 16, round);
    put_u64(head + 24, payload_size);
    memcpy(head + 32, digest, SPIRT_DIGEST_BYTES);
    memcpy(head + ENVELOPE_HEADER_BYTES, signer->peer_id, id_length);
    /* The signature goes last, over the header and the id; the payload is
     * bound through its digest in the header. */
    crypto_sign_detached(signature, NULL, head, signed_length, signer->secret_key);
    *head_size = signed_length;
    return SPIRT_OK;
}

unsigned char *envelope_seal(const Identity *signer, EnvelopeKind kind, uint64_t round, const void *payload,
                             size_t payload_size, size_t *size, SpirtError *error) {
    unsigned char head[ENVELOPE_HEAD_MAX], signature[ENVELOPE_SIGNATURE_BYTES], digest[SPIRT_DIGEST_BYTES];
    size_t head_size = 0;
    digest_blake3(payload, payload_size, digest);
    if (envelope_seal_around(signer, kind, round, payload_size, digest, head, &head_size, signature, error) != SPIRT_OK)
        return NULL;
    size_t total = head_size + payload_size + ENVELOPE_SIGNATURE_BYTES;
    unsigned char *envelope = malloc(total);
    if (envelope == NULL) {
        spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory for a %zu-byte envelope", total);
        return NULL;
    }
    memcpy(envelope, head, head_size);
    if (payload_size) memcpy(envelope + head_size, payload, payload_size);
    memcpy(envelope + head_size + payload_size, signature, ENVELOPE_SIGNATURE_BYTES);
    *size = total;
    return envelope;
}

/* Parses a head (header and id, from `available` bytes) of an envelope of
 * `size` bytes in all: every field but the signature. The payload pointer
 * is left NULL. */
static int parse_head(const unsigned char *head, size_t available, size_t size, EnvelopeContents *contents,
                      SpirtError *error) {
    if (size < ENVELOPE_HEADER_BYTES + 1 + ENVELOPE_SIGNATURE_BYTES || available < ENVELOPE_HEADER_BYTES + 1)
        return spirt_error_set(error, SPIRT_ERR_FORMAT, "envelope too short (%zu bytes)", size);
    if (memcmp(head, envelope_magic, 8) != 0)
        return spirt_error_set(error, SPIRT_ERR_FORMAT, "not a signed envelope (bad magic)");
    if (get_u16(head + 8) != ENVELOPE_VERSION)
        return spirt_error_set(error, SPIRT_ERR_FORMAT, "envelope version %u is not supported (this build reads %d)",
                               get_u16(head + 8), ENVELOPE_VERSION);
    if (get_u16(head + 14) != 0)
        return spirt_error_set(error, SPIRT_ERR_FORMAT, "envelope reserved field is not zero");
    size_t id_length = get_u16(head + 12);
    uint64_t payload_size = get_u64(head + 24);
    if (id_length == 0 || id_length > SPIRT_PEER_ID_MAX)
        return spirt_error_set(error, SPIRT_ERR_FORMAT, "envelope peer id length %zu out of range", id_length);
    if (available < ENVELOPE_HEADER_BYTES + id_length)
        return spirt_error_set(error, SPIRT_ERR_FORMAT, "envelope head cut short (%zu of %zu bytes)", available,
                               ENVELOPE_HEADER_BYTES + id_length);
    /* Exact length: no truncation, no trailing bytes, no overflow. */
    size_t fixed = ENVELOPE_HEADER_BYTES + id_length + ENVELOPE_SIGNATURE_BYTES;
    if (payload_size > size || size < fixed || size - fixed != payload_size)
        return spirt_error_set(error, SPIRT_ERR_FORMAT, "envelope length %zu does not match its header (payload %llu)",
                               size, (unsigned long long)payload_size);
    memset(contents, 0, sizeof(*contents));
    memcpy(contents->peer_id, head + ENVELOPE_HEADER_BYTES, id_length);
    contents->peer_id[id_length] = '\0';
    if (!identity_peer_id_valid(contents->peer_id))
        return spirt_error_set(error, SPIRT_ERR_FORMAT, "envelope peer id is not a valid id");
    contents->kind = (EnvelopeKind)get_u16(head + 10);
    contents->round = get_u64(head + 16);
    contents->payload_size = (size_t)payload_size;
    return SPIRT_OK;
}

int envelope_peek(const unsigned char *envelope, size_t size, EnvelopeContents *contents, SpirtError *error) {
    int status = parse_head(envelope, size, size, contents, error);
    if (status == SPIRT_OK) contents->payload = envelope + ENVELOPE_HEADER_BYTES + strlen(contents->peer_id);
    return status;
}

/* The sender, the signature over the head, then kind and round. */
static int verify_head(const unsigned char *head, const unsigned char *signature, const EnvelopeContents *parsed,
                       const Identity *sender, EnvelopeKind kind, uint64_t round, SpirtError *error) {
    if (sodium_init() < 0) return spirt_error_set(error, SPIRT_ERR_INTERNAL, "libsodium failed to initialise");
    if (strcmp(parsed->peer_id, sender->peer_id) != 0)
        return spirt_error_set(error, SPIRT_ERR_AUTH, "envelope claims sender '%s', expected '%s'", parsed->peer_id,
                               sender->peer_id);
    size_t signed_length = ENVELOPE_HEADER_BYTES + strlen(parsed->peer_id);
    if (crypto_sign_verify_detached(signature, head, signed_length, sender->public_key) != 0)
        return spirt_error_set(error, SPIRT_ERR_AUTH, "bad signature on envelope from %s", sender->peer_id);
    /* Only now, with the header authentic, do kind and round mean anything. */
    if (parsed->kind != kind)
        return spirt_error_set(error, SPIRT_ERR_AUTH, "envelope from %s is of kind %d, expected %d", sender->peer_id,
                               (int)parsed->kind, (int)kind);
    if (parsed->round != round)
        return spirt_error_set(error, SPIRT_ERR_AUTH, "envelope from %s is for round %llu, expected %llu",
                               sender->peer_id, (unsigned long long)parsed->round, (unsigned long long)round);
    return SPIRT_OK;
}

int envelope_open(const unsigned char *envelope, size_t size, const Identity *sender, EnvelopeKind kind,
                  uint64_t round, EnvelopeContents *contents, SpirtError *error) {
    EnvelopeContents parsed;
    int status = envelope_peek(envelope, size, &parsed, error);
    if (status == SPIRT_OK)
        status = verify_head(envelope, envelope + size - ENVELOPE_SIGNATURE_BYTES, &parsed, sender, kind, round, error);
    if (status != SPIRT_OK) return status;
    unsigned char digest[SPIRT_DIGEST_BYTES];
    digest_blake3(parsed.payload, parsed.payload_size, digest);
    if (sodium_memcmp(digest, envelope + 32, SPIRT_DIGEST_BYTES) != 0)
        return spirt_error_set(error, SPIRT_ERR_AUTH, "payload from %s does not match its signed digest", sender->peer_id);
    *contents = parsed;
    return SPIRT_OK;
}

int envelope_check_head(const unsigned char *head, size_t head_available,
                        const unsigned char signature[ENVELOPE_SIGNATURE_BYTES], size_t envelope_size,
                        const Identity *sender, EnvelopeKind kind, uint64_t round, EnvelopeHead *out,
                        SpirtError *error) {
    EnvelopeContents parsed;
    int status = parse_head(head, head_available, envelope_size, &parsed, error);
    if (status == SPIRT_OK) status = verify_head(head, signature, &parsed, sender, kind, round, error);
    if (status != SPIRT_OK) return status;
    out->payload_offset = ENVELOPE_HEADER_BYTES + strlen(parsed.peer_id);
    out->payload_size = parsed.payload_size;
    memcpy(out->payload_digest, head + 32, SPIRT_DIGEST_BYTES);
    return SPIRT_OK;
}
