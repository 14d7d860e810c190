/* commands_fetch.c -- SPIRT.FETCH: copy a tensor out of another peer's
 * database into this one, server to server.
 *
 * SPIRT.FETCH dst ADDRESS addr KEY key RANGE offset length DIGEST hex
 *             [USER name] [PASSWORD secret] [TIMEOUT ms]
 *
 * Reads bytes [offset, offset + length) of the string `key` on the Redis
 * server at `addr` (GETRANGE, after AUTH when PASSWORD is given), takes them
 * as a tensor's encoding (tensor_payload_header, then the values), and
 * stores the tensor under dst -- only if the bytes' BLAKE3 is `hex`, the
 * header is well-formed and every value is finite. Reply: the number of
 * bytes read. Nothing is written on any error.
 *
 * Why: exchange used to GET each peer's envelope into the function, check
 * it, and SPIRT.TSET the vector into its own database: two socket crossings
 * and three copies of every received vector. Now the function reads only
 * the envelope's signed head and its signature (a few hundred bytes),
 * checks them, and hands the digest the head vouches for to this command;
 * the payload crosses one socket, from the other server's reply straight
 * into the new tensor's memory, and is hashed there. A peer that publishes
 * bytes other than the ones it signed gets AUTH, and the receiver leaves it
 * out, as before.
 *
 * The wait is on the network, so it always runs on a worker thread, bounded
 * by TIMEOUT (default 5000 ms) from connect to the last byte; inside MULTI
 * or a script, where the client cannot be blocked, it is refused. The
 * command makes this server open connections: grant it (ACL +spirt.fetch)
 * only to the peer's own user. No TLS here: a peer reached over TLS is read
 * by the function's own client instead.
 *
 * Errors: INVALID (syntax, a bad address, range or digest), NOKEY (the
 * remote key is missing or empty), SHAPE/INVALID (a malformed encoding),
 * AUTH (AUTH refused, or the bytes are not the ones the digest names),
 * NONFINITE, NOMEM, IO, TIMEOUT, PROTOCOL, REMOTE (the other server replied
 * with an error), and ERR for MULTI/scripts. */
#include <stdio.h>
#include <string.h>

#include "spirt/digest.h"
#include "spirt_module.h"

#define FETCH_DEFAULT_TIMEOUT_MS 5000
#define FETCH_MAX_TIMEOUT_MS 600000
#define FETCH_ADDRESS_MAX 300

typedef struct FetchJob {
    SpirtJob base;
    RedisModuleString *destination; /* retained */
    RedisModuleString *user, *password; /* retained; NULL when not given */
    char address[FETCH_ADDRESS_MAX];
    char *key; /* RedisModule_Alloc'd copy (binary-safe) */
    size_t key_length;
    unsigned long long offset;
    size_t length;
    unsigned char digest[SPIRT_DIGEST_BYTES];
    int timeout_ms;
    SpirtTensor *result;
} FetchJob;

/* Reads the reply's bytes into a new tensor (job->result), checking them. */
static int read_tensor(FetchJob *job, SpirtRemote *remote, SpirtError *error) {
    long long length = 0;
    int status = spirt_remote_read_bulk_length(remote, &length, error);
    if (status != SPIRT_OK) return status;
    if (length <= 0)
        return spirt_error_set(error, SPIRT_ERR_NOT_FOUND, "%s has nothing at that range of the key (missing or empty)",
                               job->address);
    if ((size_t)length != job->length)
        return spirt_error_set(error, SPIRT_ERR_FORMAT, "%s holds %lld bytes at that range, not the %zu asked for",
                               job->address, length, job->length);
    unsigned char header[SPIRT_TENSOR_FILE_HEADER_SIZE];
    if ((status = spirt_remote_read_exact(remote, header, sizeof(header), error)) != SPIRT_OK) return status;
    TensorShape shape;
    char what[340];
    snprintf(what, sizeof(what), "the tensor from %s", job->address);
    if ((status = tensor_payload_shape(header, job->length - sizeof(header), what, &shape, error)) != SPIRT_OK)
        return status;
    SpirtTensor *tensor = spirt_tensor_create(&shape, 0);
    if (tensor == NULL)
        return spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory for a tensor of %zu values", tensor_shape_count(&shape));
    char end[2];
    status = spirt_remote_read_exact(remote, tensor->data, spirt_tensor_bytes(tensor), error);
    if (status == SPIRT_OK) status = spirt_remote_read_exact(remote, end, 2, error);
    if (status == SPIRT_OK && (end[0] != '\r' || end[1] != '\n'))
        status = spirt_error_set(error, SPIRT_ERR_PROTOCOL, "%s did not end the bulk string with CRLF", job->address);
    if (status == SPIRT_OK) {
        unsigned char digest[SPIRT_DIGEST_BYTES];
        DigestPiece pieces[] = {{header, sizeof(header)}, {tensor->data, spirt_tensor_bytes(tensor)}};
        digest_blake3_pieces(pieces, 2, digest);
        if (memcmp(digest, job->digest, SPIRT_DIGEST_BYTES) != 0)
            status = spirt_error_set(error, SPIRT_ERR_AUTH, "the bytes from %s do not have the DIGEST given",
                                     job->address);
    }
    size_t bad = 0;
    if (status == SPIRT_OK && !spirt_values_finite(tensor->data, tensor->count, &bad))
        status = spirt_error_set(error, SPIRT_ERR_NONFINITE, "value %zu from %s is not finite", bad, job->address);
    if (status != SPIRT_OK) {
        spirt_tensor_release(tensor);
        return status;
    }
    job->result = tensor;
    return SPIRT_OK;
}

static void fetch_compute(SpirtJob *base) {
    FetchJob *job = (FetchJob *)base;
    SpirtError *error = &job->base.error;
    SpirtRemote *remote = RedisModule_Alloc(sizeof(*remote));
    int status = spirt_remote_open(remote, job->address, job->timeout_ms, error);
    if (status == SPIRT_OK && job->password) {
        const char *argv[3];
        size_t lengths[3];
        int argc = 0;
        argv[argc] = "AUTH", lengths[argc++] = 4;
        if (job->user) argv[argc] = RedisModule_StringPtrLen(job->user, &lengths[argc]), argc++;
        argv[argc] = RedisModule_StringPtrLen(job->password, &lengths[argc]), argc++;
        status = spirt_remote_send(remote, argc, argv, lengths, error);
        if (status == SPIRT_OK) status = spirt_remote_expect_ok(remote, "AUTH", error);
    }
    if (status == SPIRT_OK) {
        char first[24], last[24];
        snprintf(first, sizeof(first), "%llu", job->offset);
        snprintf(last, sizeof(last), "%llu", job->offset + job->length - 1);
        const char *argv[] = {"GETRANGE", job->key, first, last};
        size_t lengths[] = {8, job->key_length, strlen(first), strlen(last)};
        status = spirt_remote_send(remote, 4, argv, lengths, error);
        if (status == SPIRT_OK) status = read_tensor(job, remote, error);
    }
    spirt_remote_close(remote);
    RedisModule_Free(remote);
}

static int fetch_finish(RedisModuleCtx *ctx, SpirtJob *base) {
    FetchJob *job = (FetchJob *)base;
    if (job->base.error.code != SPIRT_OK) return spirt_reply_spirt_error(ctx, &job->base.error);
    SpirtTensor *result = job->result;
    job->result = NULL; /* the key owns it from here */
    if (spirt_key_store(ctx, job->destination, result, "spirt.fetch") != REDISMODULE_OK)
        return spirt_reply_error(ctx, "INTERNAL", "cannot store the result");
    spirt_propagate_tensor(ctx, job->destination, result);
    return RedisModule_ReplyWithLongLong(ctx, (long long)job->length);
}

static void fetch_destroy(SpirtJob *base) {
    FetchJob *job = (FetchJob *)base;
    spirt_tensor_release(job->result);
    if (job->destination) RedisModule_FreeString(NULL, job->destination);
    if (job->user) RedisModule_FreeString(NULL, job->user);
    if (job->password) RedisModule_FreeString(NULL, job->password);
    RedisModule_Free(job->key);
    RedisModule_Free(job);
}

int spirt_command_fetch(RedisModuleCtx *ctx, RedisModuleString **argv, int argc) {
    /* The secret never reaches MONITOR or the slow log, whatever else is
     * wrong with the command: redacted before anything is checked. */
    for (int i = 2; i + 1 < argc; i++)
        if (spirt_arg_is(argv[i], "PASSWORD")) RedisModule_RedactClientCommandArgument(ctx, i + 1);
    if (argc < 11) return RedisModule_WrongArity(ctx);
    if (!spirt_job_client_can_block(ctx))
        return spirt_reply_error(ctx, "INVALID", "SPIRT.FETCH waits on the network: not inside MULTI or a script");
    RedisModuleString *address = NULL, *key = NULL, *digest = NULL, *user = NULL, *password = NULL;
    RedisModuleString *offset_text = NULL, *length_text = NULL;
    long long timeout_ms = FETCH_DEFAULT_TIMEOUT_MS;
    int timeout_given = 0;
    for (int i = 2; i < argc; i += 2) {
        RedisModuleString **slot = NULL;
        if (spirt_arg_is(argv[i], "ADDRESS")) slot = &address;
        else if (spirt_arg_is(argv[i], "KEY")) slot = &key;
        else if (spirt_arg_is(argv[i], "DIGEST")) slot = &digest;
        else if (spirt_arg_is(argv[i], "USER")) slot = &user;
        else if (spirt_arg_is(argv[i], "PASSWORD")) slot = &password;
        if (i + 1 >= argc) return RedisModule_WrongArity(ctx);
        if (slot && *slot == NULL) {
            *slot = argv[i + 1];
        } else if (spirt_arg_is(argv[i], "RANGE") && offset_text == NULL && i + 2 < argc) {
            offset_text = argv[i + 1];
            length_text = argv[i + 2];
            i++;
        } else if (spirt_arg_is(argv[i], "TIMEOUT") && !timeout_given) {
            if (spirt_parse_integer_or_reply(ctx, argv[i + 1], "TIMEOUT (ms)", 1, FETCH_MAX_TIMEOUT_MS, &timeout_ms) !=
                REDISMODULE_OK)
                return REDISMODULE_OK;
            timeout_given = 1;
        } else {
            char label[80];
            return spirt_reply_error(ctx, "INVALID",
                                     "unexpected or repeated '%s' (ADDRESS, KEY, RANGE, DIGEST, USER, PASSWORD, TIMEOUT)",
                                     spirt_key_label(argv[i], label, sizeof(label)));
        }
    }
    if (!address || !key || !offset_text || !digest)
        return spirt_reply_error(ctx, "INVALID", "ADDRESS, KEY, RANGE offset length and DIGEST are required");
    if (user && !password) return spirt_reply_error(ctx, "INVALID", "USER needs PASSWORD");
    long long offset = 0, length = 0;
    if (spirt_parse_integer_or_reply(ctx, offset_text, "RANGE offset", 0, (long long)1 << 40, &offset) !=
            REDISMODULE_OK ||
        spirt_parse_integer_or_reply(ctx, length_text, "RANGE length", SPIRT_TENSOR_FILE_HEADER_SIZE + 4,
                                     SPIRT_TENSOR_FILE_HEADER_SIZE + (long long)SPIRT_TENSOR_MAX_COUNT * 4,
                                     &length) != REDISMODULE_OK)
        return REDISMODULE_OK;
    if ((length - SPIRT_TENSOR_FILE_HEADER_SIZE) % 4 != 0)
        return spirt_reply_error(ctx, "INVALID", "RANGE length must be %d + 4 per value", SPIRT_TENSOR_FILE_HEADER_SIZE);
    size_t address_length = 0, digest_length = 0, key_length = 0;
    const char *address_text = RedisModule_StringPtrLen(address, &address_length);
    const char *digest_hex = RedisModule_StringPtrLen(digest, &digest_length);
    const char *key_text = RedisModule_StringPtrLen(key, &key_length);
    if (address_length == 0 || address_length >= FETCH_ADDRESS_MAX || memchr(address_text, '\0', address_length))
        return spirt_reply_error(ctx, "INVALID", "ADDRESS must be 1 to %d bytes", FETCH_ADDRESS_MAX - 1);
    if (key_length == 0) return spirt_reply_error(ctx, "INVALID", "KEY must not be empty");
    unsigned char expected[SPIRT_DIGEST_BYTES];
    if (digest_from_hex(digest_hex, digest_length, expected) != 0)
        return spirt_reply_error(ctx, "INVALID", "DIGEST must be %d hex digits", SPIRT_DIGEST_HEX_BYTES);

    FetchJob *job = spirt_job_create(sizeof(*job), fetch_compute, fetch_finish, fetch_destroy);
    memcpy(job->address, address_text, address_length);
    job->address[address_length] = '\0';
    job->key = RedisModule_Alloc(key_length);
    memcpy(job->key, key_text, key_length);
    job->key_length = key_length;
    job->offset = (unsigned long long)offset;
    job->length = (size_t)length;
    memcpy(job->digest, expected, sizeof(expected));
    job->timeout_ms = (int)timeout_ms;
    RedisModule_RetainString(NULL, job->destination = argv[1]);
    if (user) RedisModule_RetainString(NULL, job->user = user);
    if (password) RedisModule_RetainString(NULL, job->password = password);
    /* Always on a worker: the wait is on the network, whatever the size. */
    return spirt_job_submit(ctx, &job->base, SIZE_MAX);
}
