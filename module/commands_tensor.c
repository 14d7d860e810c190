/* commands_tensor.c -- storing, reading and describing tensors:
 * SPIRT.TSET, SPIRT.TGET, SPIRT.INFO, SPIRT.MINFO (docs/module.md has the
 * full reference of each). */
#include <math.h>
#include <string.h>

#include "spirt_module.h"

/* --- SPIRT.TSET key FLOAT32 dim [dim ...] BLOB bytes ------------------------
 * Reply: +OK. Errors: INVALID (dtype, syntax), SHAPE (dims, blob length),
 * NONFINITE (first NaN/infinity's index), NOMEM. The key is overwritten
 * whatever it held, like SET. Runs inline: the blob is already in memory and
 * copying it once into aligned storage is the whole cost. */
int spirt_command_tset(RedisModuleCtx *ctx, RedisModuleString **argv, int argc) {
    if (argc < 6) return RedisModule_WrongArity(ctx);
    char label[80];
    if (!spirt_arg_is(argv[2], "FLOAT32"))
        return spirt_reply_error(ctx, "INVALID", "dtype '%s' is not supported (only FLOAT32)",
                                 spirt_key_label(argv[2], label, sizeof(label)));
    if (!spirt_arg_is(argv[argc - 2], "BLOB"))
        return spirt_reply_error(ctx, "INVALID", "syntax: SPIRT.TSET key FLOAT32 dim [dim ...] BLOB bytes");
    int ndim = argc - 5;
    if (ndim > SPIRT_TENSOR_MAX_DIMS)
        return spirt_reply_error(ctx, "SHAPE", "a tensor has 1 to %d dimensions, not %d", SPIRT_TENSOR_MAX_DIMS, ndim);
    uint64_t dims[SPIRT_TENSOR_MAX_DIMS] = {0};
    for (int i = 0; i < ndim; i++) {
        long long dim;
        if (RedisModule_StringToLongLong(argv[3 + i], &dim) != REDISMODULE_OK || dim <= 0)
            return spirt_reply_error(ctx, "SHAPE", "dimension %d is '%s': not a positive integer", i,
                                     spirt_key_label(argv[3 + i], label, sizeof(label)));
        dims[i] = (uint64_t)dim;
    }
    TensorShape shape;
    SpirtError error;
    if (tensor_shape_init(&shape, (uint32_t)ndim, dims, &error) != SPIRT_OK)
        return spirt_reply_spirt_error(ctx, &error);
    size_t count = tensor_shape_count(&shape);
    size_t length;
    const char *blob = RedisModule_StringPtrLen(argv[argc - 1], &length);
    if (length != count * sizeof(float)) {
        char shape_text[96];
        return spirt_reply_error(ctx, "SHAPE", "blob has %zu bytes but shape %s needs %zu (4 per float32)", length,
                                 tensor_shape_format(&shape, shape_text, sizeof(shape_text)), count * sizeof(float));
    }
    SpirtTensor *tensor = spirt_tensor_create(&shape, 0);
    if (tensor == NULL) return spirt_reply_error(ctx, "NOMEM", "out of memory for a tensor of %zu values", count);
    /* The argument's bytes are not aligned for floats (notes/redis-module-abi.md):
     * check finiteness on the aligned copy. */
    memcpy(tensor->data, blob, length);
    size_t bad = 0;
    if (!spirt_values_finite(tensor->data, count, &bad)) {
        float value = tensor->data[bad];
        spirt_tensor_release(tensor);
        return spirt_reply_error(ctx, "NONFINITE", "value %zu is %s; tensors in the database must be finite", bad,
                                 isnan(value) ? "NaN"
                                 : value > 0  ? "+infinity"
                                              : "-infinity");
    }
    if (spirt_key_store(ctx, argv[1], tensor, "spirt.tset") != REDISMODULE_OK)
        return spirt_reply_error(ctx, "INTERNAL", "cannot store the tensor");
    /* The command is its own deterministic effect (scratch keys excepted). */
    if (spirt_key_is_transient(argv[1]))
        spirt_propagate_nothing(ctx, argv[1]);
    else
        RedisModule_ReplicateVerbatim(ctx);
    return RedisModule_ReplyWithSimpleString(ctx, "OK");
}

/* --- SPIRT.TGET key [BLOB|META|FULL] ------------------------------------------
 * BLOB (default): the values as one bulk string (4 * count bytes, float32
 * little-endian). META: ["dtype", "float32", "shape", [dims...], "count", n].
 * FULL: META followed by "blob", bytes -- shape and values read atomically.
 * A missing key replies nil; another type WRONGTYPE. */
static void reply_meta_fields(RedisModuleCtx *ctx, const SpirtTensor *tensor) {
    RedisModule_ReplyWithStringBuffer(ctx, "dtype", 5);
    RedisModule_ReplyWithStringBuffer(ctx, "float32", 7);
    RedisModule_ReplyWithStringBuffer(ctx, "shape", 5);
    RedisModule_ReplyWithArray(ctx, tensor->shape.ndim);
    for (uint32_t i = 0; i < tensor->shape.ndim; i++)
        RedisModule_ReplyWithLongLong(ctx, (long long)tensor->shape.dims[i]);
    RedisModule_ReplyWithStringBuffer(ctx, "count", 5);
    RedisModule_ReplyWithLongLong(ctx, (long long)tensor->count);
}

int spirt_command_tget(RedisModuleCtx *ctx, RedisModuleString **argv, int argc) {
    if (argc < 2 || argc > 3) return RedisModule_WrongArity(ctx);
    enum { BLOB, META, FULL } mode = BLOB;
    if (argc == 3) {
        char label[80];
        if (spirt_arg_is(argv[2], "BLOB"))
            mode = BLOB;
        else if (spirt_arg_is(argv[2], "META"))
            mode = META;
        else if (spirt_arg_is(argv[2], "FULL"))
            mode = FULL;
        else
            return spirt_reply_error(ctx, "INVALID", "'%s' is not BLOB, META or FULL",
                                     spirt_key_label(argv[2], label, sizeof(label)));
    }
    SpirtTensor *tensor;
    SpirtKeyState state = spirt_key_lookup(ctx, argv[1], &tensor);
    if (state == SPIRT_KEY_EMPTY) return RedisModule_ReplyWithNull(ctx);
    if (state == SPIRT_KEY_WRONGTYPE) return RedisModule_ReplyWithError(ctx, REDISMODULE_ERRORMSG_WRONGTYPE);
    if (mode == BLOB)
        return RedisModule_ReplyWithStringBuffer(ctx, (const char *)tensor->data, spirt_tensor_bytes(tensor));
    RedisModule_ReplyWithArray(ctx, mode == META ? 6 : 8);
    reply_meta_fields(ctx, tensor);
    if (mode == FULL) {
        RedisModule_ReplyWithStringBuffer(ctx, "blob", 4);
        RedisModule_ReplyWithStringBuffer(ctx, (const char *)tensor->data, spirt_tensor_bytes(tensor));
    }
    return REDISMODULE_OK;
}

/* --- SPIRT.INFO key and SPIRT.MINFO key [key ...] --------------------------------
 * INFO replies ["dtype", "float32", "shape", [dims], "count", n,
 * "l2_norm", x, "min", x, "max", x, "mean", x, "digest", hex] for a tensor,
 * nil for a missing key, WRONGTYPE for another type. MINFO replies an array
 * with one such entry per key (nil for a missing key or another type, as
 * MGET does). The digest is tensor_digest_hex of the values (BLAKE2b-128),
 * the same that clients compute. Sums run in double, in a fixed order, so
 * the figures are reproducible. Big tensors are described on a worker. */

typedef struct TensorStats {
    double l2_norm, minimum, maximum, mean;
    char digest[SPIRT_DIGEST_HEX_SIZE];
} TensorStats;

static void compute_stats(const SpirtTensor *tensor, TensorStats *stats) {
    /* Eight partial sums in a fixed pattern: fast, and the same result on
     * every machine and run. */
    double sums[8] = {0}, squares[8] = {0};
    float minimum = tensor->data[0], maximum = tensor->data[0];
    size_t count = tensor->count, i = 0;
    const float *x = tensor->data;
    for (; i + 8 <= count; i += 8) {
        for (int k = 0; k < 8; k++) {
            double value = x[i + (size_t)k];
            sums[k] += value;
            squares[k] += value * value;
            minimum = x[i + (size_t)k] < minimum ? x[i + (size_t)k] : minimum;
            maximum = x[i + (size_t)k] > maximum ? x[i + (size_t)k] : maximum;
        }
    }
    for (; i < count; i++) {
        sums[0] += x[i];
        squares[0] += (double)x[i] * x[i];
        minimum = x[i] < minimum ? x[i] : minimum;
        maximum = x[i] > maximum ? x[i] : maximum;
    }
    double sum = 0, square = 0;
    for (int k = 0; k < 8; k++) {
        sum += sums[k];
        square += squares[k];
    }
    stats->l2_norm = sqrt(square);
    stats->minimum = minimum;
    stats->maximum = maximum;
    stats->mean = sum / (double)count;
    tensor_digest_hex(tensor->data, count, stats->digest);
}

typedef struct InfoJob {
    SpirtJob base;
    int multiple;          /* MINFO: reply an array of entries */
    int count;             /* keys */
    SpirtTensor **tensors; /* count references (NULL: missing or other type) */
    TensorStats *stats;    /* count results */
} InfoJob;

static void info_compute(SpirtJob *base) {
    InfoJob *job = (InfoJob *)base;
    for (int i = 0; i < job->count; i++)
        if (job->tensors[i]) compute_stats(job->tensors[i], &job->stats[i]);
}

static void reply_info_entry(RedisModuleCtx *ctx, const SpirtTensor *tensor, const TensorStats *stats) {
    RedisModule_ReplyWithArray(ctx, 16);
    reply_meta_fields(ctx, tensor);
    RedisModule_ReplyWithStringBuffer(ctx, "l2_norm", 7);
    RedisModule_ReplyWithDouble(ctx, stats->l2_norm);
    RedisModule_ReplyWithStringBuffer(ctx, "min", 3);
    RedisModule_ReplyWithDouble(ctx, stats->minimum);
    RedisModule_ReplyWithStringBuffer(ctx, "max", 3);
    RedisModule_ReplyWithDouble(ctx, stats->maximum);
    RedisModule_ReplyWithStringBuffer(ctx, "mean", 4);
    RedisModule_ReplyWithDouble(ctx, stats->mean);
    RedisModule_ReplyWithStringBuffer(ctx, "digest", 6);
    RedisModule_ReplyWithStringBuffer(ctx, stats->digest, strlen(stats->digest));
}

static int info_finish(RedisModuleCtx *ctx, SpirtJob *base) {
    InfoJob *job = (InfoJob *)base;
    if (!job->multiple) {
        reply_info_entry(ctx, job->tensors[0], &job->stats[0]);
        return REDISMODULE_OK;
    }
    RedisModule_ReplyWithArray(ctx, job->count);
    for (int i = 0; i < job->count; i++) {
        if (job->tensors[i])
            reply_info_entry(ctx, job->tensors[i], &job->stats[i]);
        else
            RedisModule_ReplyWithNull(ctx);
    }
    return REDISMODULE_OK;
}

static void info_destroy(SpirtJob *base) {
    InfoJob *job = (InfoJob *)base;
    for (int i = 0; i < job->count; i++) spirt_tensor_release(job->tensors[i]);
    RedisModule_Free(job->tensors);
    RedisModule_Free(job->stats);
    RedisModule_Free(job);
}

static int submit_info(RedisModuleCtx *ctx, RedisModuleString **keys, int count, int multiple) {
    InfoJob *job = spirt_job_create(sizeof(*job), info_compute, info_finish, info_destroy);
    job->multiple = multiple;
    job->count = count;
    job->tensors = RedisModule_Alloc(sizeof(SpirtTensor *) * (size_t)count);
    job->stats = RedisModule_Alloc(sizeof(TensorStats) * (size_t)count);
    size_t work = 0;
    for (int i = 0; i < count; i++) {
        SpirtTensor *tensor;
        job->tensors[i] =
            spirt_key_lookup(ctx, keys[i], &tensor) == SPIRT_KEY_TENSOR ? spirt_tensor_retain(tensor) : NULL;
        if (job->tensors[i]) work += job->tensors[i]->count;
    }
    return spirt_job_submit(ctx, &job->base, work);
}

int spirt_command_info(RedisModuleCtx *ctx, RedisModuleString **argv, int argc) {
    if (argc != 2) return RedisModule_WrongArity(ctx);
    SpirtTensor *tensor;
    SpirtKeyState state = spirt_key_lookup(ctx, argv[1], &tensor);
    if (state == SPIRT_KEY_EMPTY) return RedisModule_ReplyWithNull(ctx);
    if (state == SPIRT_KEY_WRONGTYPE) return RedisModule_ReplyWithError(ctx, REDISMODULE_ERRORMSG_WRONGTYPE);
    return submit_info(ctx, argv + 1, 1, 0);
}

int spirt_command_minfo(RedisModuleCtx *ctx, RedisModuleString **argv, int argc) {
    if (argc < 2) return RedisModule_WrongArity(ctx);
    return submit_info(ctx, argv + 1, argc - 1, 1);
}
