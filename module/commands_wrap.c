/* commands_wrap.c -- SPIRT.TDIGEST and SPIRT.TWRAP: a stored tensor's
 * encoding, hashed and wrapped in place.
 *
 * A peer publishes its round average as a signed envelope (include/spirt/
 * crypto.h): a signed head, the tensor's encoding (tensor_payload_header,
 * then the values), a signature. Building it in a function meant reading
 * the average out of the database and writing the envelope back, two
 * crossings of the whole vector, for a few hundred bytes of head and
 * signature. Here the function asks for the encoding's digest
 * (SPIRT.TDIGEST), signs a head around it, and has the module put head,
 * encoding and signature together where the tensor already is
 * (SPIRT.TWRAP). The other peers read the result with a plain GET, as
 * before: nothing changes on the wire.
 *
 * The digest is BLAKE3 (include/spirt/digest.h), the one envelopes use, so
 * what the module hashes and what a receiver hashes agree. Hashing a big
 * tensor runs off the main thread (jobs.c); storing the string does not,
 * since only the main thread may write a key. */
#include <string.h>

#include "spirt/digest.h"
#include "spirt_module.h"

/* The BLAKE3 of the tensor's encoding: its payload header, then its values. */
static void encoding_digest(const SpirtTensor *tensor, unsigned char out[SPIRT_DIGEST_BYTES]) {
    unsigned char header[SPIRT_TENSOR_FILE_HEADER_SIZE];
    tensor_payload_header(&tensor->shape, header);
    DigestPiece pieces[] = {{header, sizeof(header)}, {tensor->data, spirt_tensor_bytes(tensor)}};
    digest_blake3_pieces(pieces, 2, out);
}

static size_t encoding_bytes(const SpirtTensor *tensor) {
    return SPIRT_TENSOR_FILE_HEADER_SIZE + spirt_tensor_bytes(tensor);
}

/* One job for both commands: hash the tensor if its digest is needed and
 * not known yet (on a worker when it is big), then reply (TDIGEST) or
 * check the digest and store (TWRAP). */
typedef struct WrapJob {
    SpirtJob base;
    SpirtTensor *tensor; /* a reference to the source */
    int hash;            /* the digest is still to be computed */
    unsigned char digest[SPIRT_DIGEST_BYTES];
    int check; /* TWRAP with DIGEST: the digest must be `expected` */
    unsigned char expected[SPIRT_DIGEST_BYTES];
    RedisModuleString *destination; /* TWRAP (NULL: TDIGEST): retained names and bytes */
    RedisModuleString *prefix, *suffix;
} WrapJob;

static void wrap_compute(SpirtJob *base) {
    WrapJob *job = (WrapJob *)base;
    if (job->hash) encoding_digest(job->tensor, job->digest);
}

static int reply_digest(RedisModuleCtx *ctx, const WrapJob *job) {
    char hex[SPIRT_DIGEST_HEX_BYTES + 1];
    digest_to_hex(job->digest, hex);
    RedisModule_ReplyWithArray(ctx, 2);
    RedisModule_ReplyWithStringBuffer(ctx, hex, SPIRT_DIGEST_HEX_BYTES);
    return RedisModule_ReplyWithLongLong(ctx, (long long)encoding_bytes(job->tensor));
}

/* Stores prefix + encoding + suffix as a string under the destination,
 * replacing whatever it held (as SET does), and replies its length. */
static int store_wrapped(RedisModuleCtx *ctx, WrapJob *job) {
    size_t prefix_length = 0, suffix_length = 0;
    const char *prefix = job->prefix ? RedisModule_StringPtrLen(job->prefix, &prefix_length) : "";
    const char *suffix = job->suffix ? RedisModule_StringPtrLen(job->suffix, &suffix_length) : "";
    size_t total = prefix_length + encoding_bytes(job->tensor) + suffix_length;
    RedisModuleKey *key = RedisModule_OpenKey(ctx, job->destination, REDISMODULE_READ | REDISMODULE_WRITE);
    if (key == NULL) return spirt_reply_error(ctx, "INTERNAL", "cannot open the destination for writing");
    /* A fresh string: no old type, value or TTL survives, as with SET. */
    if (RedisModule_KeyType(key) != REDISMODULE_KEYTYPE_EMPTY) RedisModule_DeleteKey(key);
    size_t length = 0;
    char *bytes = NULL;
    if (RedisModule_StringTruncate(key, total) == REDISMODULE_OK)
        bytes = RedisModule_StringDMA(key, &length, REDISMODULE_WRITE);
    if (bytes == NULL || length != total) {
        RedisModule_DeleteKey(key);
        RedisModule_CloseKey(key);
        return spirt_reply_error(ctx, "NOMEM", "cannot make a %zu-byte string", total);
    }
    memcpy(bytes, prefix, prefix_length);
    tensor_payload_header(&job->tensor->shape, (unsigned char *)bytes + prefix_length);
    memcpy(bytes + prefix_length + SPIRT_TENSOR_FILE_HEADER_SIZE, job->tensor->data, spirt_tensor_bytes(job->tensor));
    memcpy(bytes + prefix_length + encoding_bytes(job->tensor), suffix, suffix_length);
    RedisModule_CloseKey(key);
    RedisModule_NotifyKeyspaceEvent(ctx, REDISMODULE_NOTIFY_STRING, "spirt.twrap", job->destination);
    if (spirt_key_is_transient(job->destination)) {
        spirt_propagate_nothing(ctx, job->destination);
    } else {
        /* Replicas and the AOF get the bytes themselves: they may not hold
         * the source, or hold another one by the time they replay. */
        RedisModuleString *value = RedisModule_CreateString(ctx, bytes, total);
        RedisModule_Replicate(ctx, "SET", "ss", job->destination, value);
        RedisModule_FreeString(ctx, value);
    }
    return RedisModule_ReplyWithLongLong(ctx, (long long)total);
}

static int wrap_finish(RedisModuleCtx *ctx, SpirtJob *base) {
    WrapJob *job = (WrapJob *)base;
    if (job->hash) {
        /* Remembered (main thread) for the next TDIGEST or TWRAP of it. */
        memcpy(job->tensor->encoding_digest, job->digest, SPIRT_DIGEST_BYTES);
        job->tensor->encoding_digest_known = 1;
    }
    if (job->check && memcmp(job->digest, job->expected, SPIRT_DIGEST_BYTES) != 0)
        return spirt_reply_error(ctx, "CONFLICT",
                                 "the source's encoding does not have the DIGEST given (replaced?); nothing was written");
    return job->destination ? store_wrapped(ctx, job) : reply_digest(ctx, job);
}

static void wrap_destroy(SpirtJob *base) {
    WrapJob *job = (WrapJob *)base;
    spirt_tensor_release(job->tensor);
    if (job->destination) RedisModule_FreeString(NULL, job->destination);
    if (job->prefix) RedisModule_FreeString(NULL, job->prefix);
    if (job->suffix) RedisModule_FreeString(NULL, job->suffix);
    RedisModule_Free(job);
}

/* A job over `tensor`; with need_digest, job->digest is the encoding's
 * digest by the time the job finishes: the one remembered from an earlier
 * TDIGEST or TWRAP of this very tensor (it never changes), or hashed. */
static WrapJob *wrap_job_new(SpirtTensor *tensor, int need_digest) {
    WrapJob *job = spirt_job_create(sizeof(WrapJob), wrap_compute, wrap_finish, wrap_destroy);
    job->tensor = spirt_tensor_retain(tensor);
    job->hash = need_digest && !tensor->encoding_digest_known;
    if (need_digest && tensor->encoding_digest_known)
        memcpy(job->digest, tensor->encoding_digest, SPIRT_DIGEST_BYTES);
    return job;
}

/* --- SPIRT.TDIGEST key -------------------------------------------------------
 * Reply: [hex, length]: the BLAKE3 of the tensor's encoding as 64 lowercase
 * hex digits, and the encoding's length in bytes. NOKEY, WRONGTYPE. */
int spirt_command_tdigest(RedisModuleCtx *ctx, RedisModuleString **argv, int argc) {
    if (argc != 2) return RedisModule_WrongArity(ctx);
    SpirtTensor *tensor;
    if (spirt_key_tensor_or_reply(ctx, argv[1], "tensor", &tensor) != REDISMODULE_OK) return REDISMODULE_OK;
    WrapJob *job = wrap_job_new(tensor, 1);
    return spirt_job_submit(ctx, &job->base, job->hash ? tensor->count : 0);
}

/* --- SPIRT.TWRAP dst src [PREFIX bytes] [SUFFIX bytes] [DIGEST hex] ----------
 * Stores the string PREFIX + encoding(src) + SUFFIX under dst (replacing
 * any value and TTL, as SET), not propagated when dst is under a
 * TRANSIENT_PREFIX (like SPIRT.SET), and replies its length. With DIGEST
 * (what SPIRT.TDIGEST replied), refuses with CONFLICT, writing nothing,
 * unless the encoding still has that digest: the head a caller signed
 * around a digest is then never stored around other bytes. Errors: NOKEY,
 * WRONGTYPE, INVALID (syntax, a bad digest), CONFLICT, NOMEM. */
int spirt_command_twrap(RedisModuleCtx *ctx, RedisModuleString **argv, int argc) {
    if (argc < 3 || argc % 2 == 0) return RedisModule_WrongArity(ctx);
    RedisModuleString *prefix = NULL, *suffix = NULL;
    unsigned char expected[SPIRT_DIGEST_BYTES] = {0};
    int check = 0;
    for (int i = 3; i + 1 < argc; i += 2) {
        if (spirt_arg_is(argv[i], "PREFIX") && prefix == NULL) {
            prefix = argv[i + 1];
        } else if (spirt_arg_is(argv[i], "SUFFIX") && suffix == NULL) {
            suffix = argv[i + 1];
        } else if (spirt_arg_is(argv[i], "DIGEST") && !check) {
            size_t length = 0;
            const char *hex = RedisModule_StringPtrLen(argv[i + 1], &length);
            if (digest_from_hex(hex, length, expected) != 0)
                return spirt_reply_error(ctx, "INVALID", "DIGEST must be %d hex digits", SPIRT_DIGEST_HEX_BYTES);
            check = 1;
        } else {
            char label[80];
            return spirt_reply_error(ctx, "INVALID", "unexpected or repeated option '%s' (PREFIX, SUFFIX, DIGEST)",
                                     spirt_key_label(argv[i], label, sizeof(label)));
        }
    }
    SpirtTensor *tensor;
    if (spirt_key_tensor_or_reply(ctx, argv[2], "source", &tensor) != REDISMODULE_OK) return REDISMODULE_OK;
    WrapJob *job = wrap_job_new(tensor, check);
    job->check = check;
    memcpy(job->expected, expected, sizeof(expected));
    job->destination = argv[1];
    RedisModule_RetainString(NULL, argv[1]);
    if (prefix) RedisModule_RetainString(NULL, job->prefix = prefix);
    if (suffix) RedisModule_RetainString(NULL, job->suffix = suffix);
    /* Without a digest to compute the job only stores: inline. */
    return spirt_job_submit(ctx, &job->base, job->hash ? tensor->count : 0);
}
