/* crypto.h -- peer identities and signed envelopes (libsodium, Ed25519).
 *
 * The only part of spirt that touches keys. A peer has an identity: a name
 * (its peer id) and an Ed25519 key pair. Whatever a peer publishes for
 * others (its round average) travels in an envelope it signs; a receiver
 * opens it with the public key it already knows for that peer id, and gets
 * the payload only if the signature, the sender's id, the kind, the round
 * and the payload's digest all check out. Replaying an old round's envelope
 * or someone else's fails, as does any flipped byte.
 *
 * Envelope format (version 2), integers little-endian:
 *   offset  size  field
 *        0     8  magic "SPIRTENV"
 *        8     2  version (2)
 *       10     2  kind (ENVELOPE_KIND_*)
 *       12     2  peer id length L (1..SPIRT_PEER_ID_MAX)
 *       14     2  reserved, 0
 *       16     8  round
 *       24     8  payload length P
 *       32    32  BLAKE3 of the payload (spirt/digest.h)
 *       64     L  peer id
 *     64+L     P  payload
 *   64+L+P    64  Ed25519 signature of bytes [0, 64 + L)
 * The signature covers the header, which binds the payload through its
 * digest: signing costs the same for a 40 MB model as for 4 bytes. The
 * digest is BLAKE3 (version 1 used SHA-256 with the CPU's SHA extensions,
 * and hashing every published and received megabyte was still a sixth
 * of a round's CPU time; BLAKE3 is several times faster). Signatures are
 * libsodium's Ed25519. */
#ifndef SPIRT_CRYPTO_H
#define SPIRT_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#include "spirt/digest.h"
#include "spirt/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SPIRT_PEER_ID_MAX 64
#define SPIRT_PUBLIC_KEY_BYTES 32
#define SPIRT_SECRET_KEY_BYTES 64
#define SPIRT_KEY_SEED_BYTES 32
#define SPIRT_PUBLIC_KEY_HEX_SIZE (2 * SPIRT_PUBLIC_KEY_BYTES + 1)
#define ENVELOPE_HEADER_BYTES 64
#define ENVELOPE_SIGNATURE_BYTES 64
/* The signed part before the payload: header and peer id. */
#define ENVELOPE_HEAD_MAX (ENVELOPE_HEADER_BYTES + SPIRT_PEER_ID_MAX)

typedef enum EnvelopeKind {
    ENVELOPE_KIND_ROUND_AVERAGE = 1, /* a peer's averaged gradient of one round */
    ENVELOPE_KIND_JOIN_REQUEST = 2,  /* a new peer asking to be admitted */
    ENVELOPE_KIND_MODEL = 3          /* a model snapshot (catch-up) */
} EnvelopeKind;

typedef struct Identity {
    char peer_id[SPIRT_PEER_ID_MAX + 1];
    unsigned char public_key[SPIRT_PUBLIC_KEY_BYTES];
    unsigned char secret_key[SPIRT_SECRET_KEY_BYTES]; /* all zero for a public-only identity */
    int has_secret;
} Identity;

/* 1 if `peer_id` is a valid id: 1..SPIRT_PEER_ID_MAX of [A-Za-z0-9._-]. */
int identity_peer_id_valid(const char *peer_id);

/* A new random identity. */
int identity_generate(Identity *identity, const char *peer_id, SpirtError *error);
/* A deterministic identity from a 32-byte seed (for reproducible tests and
 * `spirt train`, which derives each peer's seed from the run's). */
int identity_from_seed(Identity *identity, const char *peer_id, const unsigned char seed[SPIRT_KEY_SEED_BYTES],
                       SpirtError *error);
/* A public-only identity (to verify another peer) from its id and hex key. */
int identity_from_public_hex(Identity *identity, const char *peer_id, const char *public_key_hex, SpirtError *error);
void identity_public_hex(const Identity *identity, char out[SPIRT_PUBLIC_KEY_HEX_SIZE]);

/* Saves to `path` as JSON {"peer_id", "public_key", "secret_key"} (hex),
 * created with mode 0600 and written atomically. */
int identity_save(const Identity *identity, const char *path, SpirtError *error);
/* Loads what identity_save wrote, checking that the public key matches the
 * secret key. Refuses a secret key file readable by group or others. */
int identity_load(Identity *identity, const char *path, SpirtError *error);
/* Overwrites the secret key in memory. */
void identity_wipe(Identity *identity);

/* Signs `payload` as `kind` for `round` with `signer`'s secret key. Returns a
 * new envelope of *size bytes that the caller frees with free(). */
unsigned char *envelope_seal(const Identity *signer, EnvelopeKind kind, uint64_t round, const void *payload,
                             size_t payload_size, size_t *size, SpirtError *error);

/* envelope_seal for a payload kept elsewhere (a tensor in the database,
 * which SPIRT.TWRAP wraps where it is): from the payload's size and BLAKE3
 * digest, fills head[0, *head_size) (header and peer id) and the
 * signature. The envelope is head, then the payload, then the signature. */
int envelope_seal_around(const Identity *signer, EnvelopeKind kind, uint64_t round, size_t payload_size,
                         const unsigned char digest[SPIRT_DIGEST_BYTES], unsigned char head[ENVELOPE_HEAD_MAX],
                         size_t *head_size, unsigned char signature[ENVELOPE_SIGNATURE_BYTES], SpirtError *error);

typedef struct EnvelopeContents {
    EnvelopeKind kind;
    uint64_t round;
    char peer_id[SPIRT_PEER_ID_MAX + 1];
    const unsigned char *payload; /* borrowed: points into the envelope */
    size_t payload_size;
} EnvelopeContents;

/* Checks an envelope claimed to come from `sender` (a public identity) with
 * the expected kind and round, and on success fills `contents` (its payload
 * pointer is valid as long as `envelope` is). Errors: SPIRT_ERR_FORMAT for a
 * malformed envelope, SPIRT_ERR_AUTH for a wrong signer, signature, kind,
 * round or digest. */
int envelope_open(const unsigned char *envelope, size_t size, const Identity *sender, EnvelopeKind kind,
                  uint64_t round, EnvelopeContents *contents, SpirtError *error);

/* Parses the header only, without verifying anything: for logging who
 * claims to have sent something. */
int envelope_peek(const unsigned char *envelope, size_t size, EnvelopeContents *contents, SpirtError *error);

/* What an authentic envelope head says of the payload it signs. */
typedef struct EnvelopeHead {
    size_t payload_offset; /* where the payload starts: header and id */
    size_t payload_size;
    unsigned char payload_digest[SPIRT_DIGEST_BYTES];
} EnvelopeHead;

/* envelope_open for an envelope read in pieces: its head (the first
 * head_available bytes, at least the header and the id; more is ignored),
 * its last ENVELOPE_SIGNATURE_BYTES, and its total size. Checks everything
 * envelope_open checks but the payload's digest, which is left to the
 * caller: out->payload_digest is the digest the sender signed, and bytes
 * are the payload only if they hash to it (SPIRT.FETCH checks that where
 * it stores them). */
int envelope_check_head(const unsigned char *head, size_t head_available,
                        const unsigned char signature[ENVELOPE_SIGNATURE_BYTES], size_t envelope_size,
                        const Identity *sender, EnvelopeKind kind, uint64_t round, EnvelopeHead *out,
                        SpirtError *error);

#ifdef __cplusplus
}
#endif

#endif /* SPIRT_CRYPTO_H */
