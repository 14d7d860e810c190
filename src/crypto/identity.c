/* identity.c -- peer identities: Ed25519 key pairs with a peer id, and their
 * key files (see include/spirt/crypto.h). */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "spirt/crypto.h"

static int sodium_ready(SpirtError *error) {
    if (sodium_init() < 0) return spirt_error_set(error, SPIRT_ERR_INTERNAL, "libsodium failed to initialise");
    return SPIRT_OK;
}

int identity_peer_id_valid(const char *peer_id) {
    if (peer_id == NULL) return 0;
    size_t length = strlen(peer_id);
    if (length == 0 || length > SPIRT_PEER_ID_MAX) return 0;
    for (size_t i = 0; i < length; i++) {
        char c = peer_id[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                 c == '_' || c == '-';
        if (!ok) return 0;
    }
    return 1;
}

static int set_peer_id(Identity *identity, const char *peer_id, SpirtError *error) {
    if (!identity_peer_id_valid(peer_id))
        return spirt_error_set(error, SPIRT_ERR_INVALID,
                               "invalid peer id '%.80s': use 1 to %d of letters, digits, '.', '_' and '-'",
                               peer_id ? peer_id : "(null)", SPIRT_PEER_ID_MAX);
    memset(identity, 0, sizeof(*identity));
    memcpy(identity->peer_id, peer_id, strlen(peer_id) + 1);
    return SPIRT_OK;
}

int identity_generate(Identity *identity, const char *peer_id, SpirtError *error) {
    if (sodium_ready(error) != SPIRT_OK || set_peer_id(identity, peer_id, error) != SPIRT_OK) return error ? error->code : -1;
    crypto_sign_keypair(identity->public_key, identity->secret_key);
    identity->has_secret = 1;
    return SPIRT_OK;
}

int identity_from_seed(Identity *identity, const char *peer_id, const unsigned char seed[SPIRT_KEY_SEED_BYTES],
                       SpirtError *error) {
    if (sodium_ready(error) != SPIRT_OK || set_peer_id(identity, peer_id, error) != SPIRT_OK) return error ? error->code : -1;
    crypto_sign_seed_keypair(identity->public_key, identity->secret_key, seed);
    identity->has_secret = 1;
    return SPIRT_OK;
}

static int parse_hex(const char *hex, unsigned char *out, size_t size, const char *what, SpirtError *error) {
    size_t length = 0;
    if (hex == NULL || strlen(hex) != 2 * size || sodium_hex2bin(out, size, hex, strlen(hex), NULL, &length, NULL) != 0 ||
        length != size)
        return spirt_error_set(error, SPIRT_ERR_FORMAT, "%s: expected %zu hex digits", what, 2 * size);
    return SPIRT_OK;
}

int identity_from_public_hex(Identity *identity, const char *peer_id, const char *public_key_hex, SpirtError *error) {
    if (sodium_ready(error) != SPIRT_OK || set_peer_id(identity, peer_id, error) != SPIRT_OK) return error ? error->code : -1;
    if (parse_hex(public_key_hex, identity->public_key, SPIRT_PUBLIC_KEY_BYTES, "public key", error) != SPIRT_OK)
        return spirt_error_prefix(error, "peer %s", peer_id);
    return SPIRT_OK;
}

void identity_public_hex(const Identity *identity, char out[SPIRT_PUBLIC_KEY_HEX_SIZE]) {
    sodium_bin2hex(out, SPIRT_PUBLIC_KEY_HEX_SIZE, identity->public_key, SPIRT_PUBLIC_KEY_BYTES);
}

void identity_wipe(Identity *identity) {
    sodium_memzero(identity->secret_key, sizeof(identity->secret_key));
    identity->has_secret = 0;
}

int identity_save(const Identity *identity, const char *path, SpirtError *error) {
    if (!identity->has_secret)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "identity %s has no secret key to save", identity->peer_id);
    char public_hex[SPIRT_PUBLIC_KEY_HEX_SIZE];
    char secret_hex[2 * SPIRT_SECRET_KEY_BYTES + 1];
    identity_public_hex(identity, public_hex);
    sodium_bin2hex(secret_hex, sizeof(secret_hex), identity->secret_key, SPIRT_SECRET_KEY_BYTES);
    json_t *object = json_pack("{s:s, s:s, s:s}", "peer_id", identity->peer_id, "public_key", public_hex,
                               "secret_key", secret_hex);
    char *text = object ? json_dumps(object, JSON_INDENT(2)) : NULL;
    json_decref(object);
    sodium_memzero(secret_hex, sizeof(secret_hex));
    if (text == NULL) return spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory saving identity");

    char temporary[4096];
    int status = SPIRT_OK;
    if (snprintf(temporary, sizeof(temporary), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(temporary)) {
        status = spirt_error_set(error, SPIRT_ERR_INVALID, "path too long: %s", path);
    } else {
        int fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        size_t length = strlen(text);
        if (fd < 0) {
            status = spirt_error_set(error, SPIRT_ERR_IO, "cannot create %s: %s", temporary, strerror(errno));
        } else {
            int ok = write(fd, text, length) == (ssize_t)length && write(fd, "\n", 1) == 1;
            ok = (close(fd) == 0) && ok;
            if (!ok || rename(temporary, path) != 0) {
                status = spirt_error_set(error, SPIRT_ERR_IO, "cannot write %s: %s", path, strerror(errno));
                unlink(temporary);
            }
        }
    }
    sodium_memzero(text, strlen(text));
    free(text);
    return status;
}

int identity_load(Identity *identity, const char *path, SpirtError *error) {
    if (sodium_ready(error) != SPIRT_OK) return error ? error->code : -1;
    struct stat info;
    if (stat(path, &info) != 0)
        return spirt_error_set(error, errno == ENOENT ? SPIRT_ERR_NOT_FOUND : SPIRT_ERR_IO, "%s: %s", path,
                               strerror(errno));
    if (info.st_mode & (S_IRWXG | S_IRWXO))
        return spirt_error_set(error, SPIRT_ERR_AUTH,
                               "%s: a secret key file must not be accessible to group or others (chmod 600)", path);
    json_error_t parse_error;
    json_t *object = json_load_file(path, 0, &parse_error);
    if (object == NULL)
        return spirt_error_set(error, SPIRT_ERR_FORMAT, "%s:%d:%d: %s", path, parse_error.line, parse_error.column,
                               parse_error.text);
    const char *peer_id = json_string_value(json_object_get(object, "peer_id"));
    const char *public_hex = json_string_value(json_object_get(object, "public_key"));
    const char *secret_hex = json_string_value(json_object_get(object, "secret_key"));
    int status = SPIRT_OK;
    if (peer_id == NULL || public_hex == NULL || secret_hex == NULL) {
        status = spirt_error_set(error, SPIRT_ERR_FORMAT, "%s: needs string fields peer_id, public_key, secret_key", path);
    } else if ((status = set_peer_id(identity, peer_id, error)) == SPIRT_OK &&
               (status = parse_hex(public_hex, identity->public_key, SPIRT_PUBLIC_KEY_BYTES, "public_key", error)) ==
                   SPIRT_OK &&
               (status = parse_hex(secret_hex, identity->secret_key, SPIRT_SECRET_KEY_BYTES, "secret_key", error)) ==
                   SPIRT_OK) {
        unsigned char derived[SPIRT_PUBLIC_KEY_BYTES];
        crypto_sign_ed25519_sk_to_pk(derived, identity->secret_key);
        if (sodium_memcmp(derived, identity->public_key, sizeof(derived)) != 0)
            status = spirt_error_set(error, SPIRT_ERR_AUTH, "public_key does not belong to secret_key");
        else
            identity->has_secret = 1;
    }
    if (status != SPIRT_OK) {
        spirt_error_prefix(error, "%s", path);
        identity_wipe(identity);
    }
    json_decref(object);
    return status;
}
