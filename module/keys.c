/* keys.c -- what every command does the same way: error replies with a
 * code, argument parsing, reading and storing tensors in keys, and
 * propagating a computed tensor (see spirt_module.h). Main thread only. */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "spirt/agg.h"
#include "spirt_module.h"

/* --- Error replies ------------------------------------------------------- */

int spirt_reply_error(RedisModuleCtx *ctx, const char *code, const char *format, ...) {
    char reply[512];
    int used = snprintf(reply, sizeof(reply), "%s ", code);
    if (used < 0 || (size_t)used >= sizeof(reply)) used = 0;
    va_list args;
    va_start(args, format);
    vsnprintf(reply + used, sizeof(reply) - (size_t)used, format, args);
    va_end(args);
    /* An error reply is one line: a key name or a message must not end it. */
    for (char *c = reply; *c; c++)
        if ((unsigned char)*c < 0x20 || (unsigned char)*c == 0x7f) *c = ' ';
    return RedisModule_ReplyWithError(ctx, reply);
}

const char *spirt_error_code(int status) {
    switch (status) {
    case SPIRT_ERR_SHAPE: return "SHAPE";
    case SPIRT_ERR_NONFINITE: return "NONFINITE";
    case SPIRT_ERR_PRECONDITION: return "PRECONDITION";
    case SPIRT_ERR_NOMEM: return "NOMEM";
    case SPIRT_ERR_NOT_FOUND: return "NOKEY";
    case SPIRT_ERR_INTERNAL: return "INTERNAL";
    case SPIRT_ERR_INVALID:
    case SPIRT_ERR_FORMAT: return "INVALID";
    /* SPIRT.FETCH's failures, which are the other server's or the network's. */
    case SPIRT_ERR_IO:
    case SPIRT_ERR_CLOSED: return "IO";
    case SPIRT_ERR_TIMEOUT: return "TIMEOUT";
    case SPIRT_ERR_PROTOCOL: return "PROTOCOL";
    case SPIRT_ERR_AUTH: return "AUTH";
    case SPIRT_ERR_SERVER: return "REMOTE";
    default: return "ERR";
    }
}

int spirt_reply_spirt_error(RedisModuleCtx *ctx, const SpirtError *error) {
    return spirt_reply_error(ctx, spirt_error_code(error->code), "%s", error->message);
}

/* --- Arguments ----------------------------------------------------------- */

int spirt_arg_is(const RedisModuleString *argument, const char *token) {
    size_t length;
    const char *text = RedisModule_StringPtrLen(argument, &length);
    size_t token_length = strlen(token);
    if (length != token_length) return 0;
    for (size_t i = 0; i < length; i++)
        if (tolower((unsigned char)text[i]) != tolower((unsigned char)token[i])) return 0;
    return 1;
}

const char *spirt_key_label(const RedisModuleString *name, char *buffer, size_t size) {
    size_t length;
    const char *text = RedisModule_StringPtrLen(name, &length);
    if (size == 0) return buffer;
    size_t limit = size - 1 < 64 ? size - 1 : 64;
    size_t n = length < limit ? length : limit;
    for (size_t i = 0; i < n; i++) buffer[i] = isprint((unsigned char)text[i]) ? text[i] : '?';
    buffer[n] = '\0';
    if (length > n && n >= 3) memcpy(buffer + n - 3, "...", 3);
    return buffer;
}

int spirt_parse_integer_or_reply(RedisModuleCtx *ctx, const RedisModuleString *argument, const char *what,
                                 long long minimum, long long maximum, long long *value) {
    char label[80];
    if (RedisModule_StringToLongLong(argument, value) != REDISMODULE_OK) {
        spirt_reply_error(ctx, "INVALID", "%s '%s' is not an integer", what,
                          spirt_key_label(argument, label, sizeof(label)));
        return REDISMODULE_ERR;
    }
    if (*value < minimum || *value > maximum) {
        spirt_reply_error(ctx, "INVALID", "%s is %lld, outside [%lld, %lld]", what, *value, minimum, maximum);
        return REDISMODULE_ERR;
    }
    return REDISMODULE_OK;
}

int spirt_parse_double_or_reply(RedisModuleCtx *ctx, const RedisModuleString *argument, const char *what,
                                double *value) {
    char label[80];
    if (RedisModule_StringToDouble(argument, value) != REDISMODULE_OK || !isfinite(*value)) {
        spirt_reply_error(ctx, "INVALID", "%s '%s' is not a finite number", what,
                          spirt_key_label(argument, label, sizeof(label)));
        return REDISMODULE_ERR;
    }
    return REDISMODULE_OK;
}

/* --- Keys ------------------------------------------------------------------ */

SpirtKeyState spirt_key_lookup(RedisModuleCtx *ctx, RedisModuleString *name, SpirtTensor **tensor) {
    *tensor = NULL;
    RedisModuleKey *key = RedisModule_OpenKey(ctx, name, REDISMODULE_READ);
    SpirtKeyState state = SPIRT_KEY_EMPTY;
    if (key != NULL) {
        int type = RedisModule_KeyType(key);
        if (type == REDISMODULE_KEYTYPE_EMPTY) {
            state = SPIRT_KEY_EMPTY;
        } else if (type == REDISMODULE_KEYTYPE_MODULE && RedisModule_ModuleTypeGetType(key) == SpirtTensorType) {
            *tensor = RedisModule_ModuleTypeGetValue(key);
            state = SPIRT_KEY_TENSOR;
        } else {
            state = SPIRT_KEY_WRONGTYPE;
        }
        /* The value outlives the handle: it changes only when a command
         * writes the key, and none runs during this callback. */
        RedisModule_CloseKey(key);
    }
    return state;
}

int spirt_key_tensor_or_reply(RedisModuleCtx *ctx, RedisModuleString *name, const char *role, SpirtTensor **tensor) {
    char label[80];
    switch (spirt_key_lookup(ctx, name, tensor)) {
    case SPIRT_KEY_TENSOR: return REDISMODULE_OK;
    case SPIRT_KEY_EMPTY:
        spirt_reply_error(ctx, "NOKEY", "%s '%s' does not exist", role, spirt_key_label(name, label, sizeof(label)));
        return REDISMODULE_ERR;
    default:
        spirt_reply_error(ctx, "WRONGTYPE", "%s '%s' does not hold a spirt tensor", role,
                          spirt_key_label(name, label, sizeof(label)));
        return REDISMODULE_ERR;
    }
}

int spirt_key_store(RedisModuleCtx *ctx, RedisModuleString *name, SpirtTensor *tensor, const char *event) {
    RedisModuleKey *key = RedisModule_OpenKey(ctx, name, REDISMODULE_READ | REDISMODULE_WRITE);
    if (key == NULL) {
        spirt_tensor_release(tensor);
        return REDISMODULE_ERR;
    }
    /* Replaces any value (the old one is freed through the type's free method, i.e.
     * released: a command still holding it keeps it alive) and any TTL. */
    int status = RedisModule_ModuleTypeSetValue(key, SpirtTensorType, tensor);
    RedisModule_CloseKey(key);
    if (status != REDISMODULE_OK) {
        spirt_tensor_release(tensor);
        return status;
    }
    /* So that a client can wait for a key to be written (a peer's
     * published average, say) without polling. */
    RedisModule_NotifyKeyspaceEvent(ctx, REDISMODULE_NOTIFY_MODULE, event, name);
    return REDISMODULE_OK;
}

/* Checks that every source exists, is a tensor and has the first one's
 * shape, then returns the borrowed tensors in `found`. */
int spirt_sources_or_reply(RedisModuleCtx *ctx, RedisModuleString **names, size_t n, SpirtTensor **found) {
    for (size_t i = 0; i < n; i++) {
        if (spirt_key_tensor_or_reply(ctx, names[i], "source", &found[i]) != REDISMODULE_OK) return REDISMODULE_ERR;
        if (i > 0 && !tensor_shape_equal(&found[i]->shape, &found[0]->shape)) {
            char a[80], b[80], shape_a[96], shape_b[96];
            spirt_reply_error(ctx, "SHAPE", "source '%s' has shape %s but '%s' has %s",
                              spirt_key_label(names[i], a, sizeof(a)),
                              tensor_shape_format(&found[i]->shape, shape_a, sizeof(shape_a)),
                              spirt_key_label(names[0], b, sizeof(b)),
                              tensor_shape_format(&found[0]->shape, shape_b, sizeof(shape_b)));
            return REDISMODULE_ERR;
        }
    }
    return REDISMODULE_OK;
}

int spirt_parse_sources_or_reply(RedisModuleCtx *ctx, RedisModuleString **argv, int argc, int at, int *first,
                                 size_t *count) {
    long long announced;
    if (spirt_parse_integer_or_reply(ctx, argv[at + 1], "SRC count", 1, AGG_MAX_INPUTS, &announced))
        return REDISMODULE_ERR;
    if ((long long)(argc - at - 2) != announced) {
        spirt_reply_error(ctx, "INVALID", "SRC announces %lld sources but %d follow", announced, argc - at - 2);
        return REDISMODULE_ERR;
    }
    *first = at + 2;
    *count = (size_t)announced;
    return REDISMODULE_OK;
}

/* --- Propagation ------------------------------------------------------------ */

int spirt_dims_strings(const SpirtTensor *tensor, RedisModuleString **dims) {
    int ndim = (int)tensor->shape.ndim;
    for (int i = 0; i < ndim; i++)
        dims[i] = RedisModule_CreateStringFromLongLong(NULL, (long long)tensor->shape.dims[i]);
    return ndim;
}

void spirt_dims_free(RedisModuleString **dims, int count) {
    for (int i = 0; i < count; i++) RedisModule_FreeString(NULL, dims[i]);
}

/* 1 if Redis would send a propagated command anywhere: to the AOF (when
 * enabled) or, on a master, to the replication stream (when a replica is
 * connected or the backlog kept for reconnecting ones is active) -- the
 * conditions Redis itself checks before propagating. Unsure means yes. */
static int propagation_needed(RedisModuleCtx *ctx) {
    int flags = RedisModule_GetContextFlags(ctx);
    if (flags & REDISMODULE_CTX_FLAGS_AOF) return 1;
    if (!(flags & REDISMODULE_CTX_FLAGS_MASTER)) return 0; /* replicas relay their master's stream only */
    RedisModuleServerInfoData *info = RedisModule_GetServerInfo(ctx, "replication");
    if (info == NULL) return 1;
    int missing_replicas = 0, missing_backlog = 0;
    long long replicas = RedisModule_ServerInfoGetFieldSigned(info, "connected_slaves", &missing_replicas);
    long long backlog = RedisModule_ServerInfoGetFieldSigned(info, "repl_backlog_active", &missing_backlog);
    RedisModule_FreeServerInfo(ctx, info);
    return missing_replicas || missing_backlog || replicas > 0 || backlog != 0;
}

int spirt_key_is_transient(const RedisModuleString *name) {
    size_t length;
    const char *text = RedisModule_StringPtrLen(name, &length);
    for (int i = 0; i < spirt_config.transient_prefix_count; i++) {
        size_t prefix_length = strlen(spirt_config.transient_prefixes[i]);
        if (length >= prefix_length && memcmp(text, spirt_config.transient_prefixes[i], prefix_length) == 0) return 1;
    }
    return 0;
}

void spirt_propagate_nothing(RedisModuleCtx *ctx, RedisModuleString *name) {
    /* Replicate with "A" and "R" (neither AOF nor replicas) and no payload
     * sends nothing but counts the write in Redis's dirty counter, which
     * drives the RDB save points. */
    RedisModule_Replicate(ctx, "SPIRT.TSET", "ARs", name);
}

void spirt_propagate_tensor(RedisModuleCtx *ctx, RedisModuleString *name, const SpirtTensor *tensor) {
    if (spirt_key_is_transient(name) || !propagation_needed(ctx)) {
        /* Building the command copies the whole tensor (about 1 ms per 4 MB
         * on the main thread): skip it when nothing would keep it. */
        spirt_propagate_nothing(ctx, name);
        return;
    }
    RedisModuleString *dims[SPIRT_TENSOR_MAX_DIMS];
    int ndim = spirt_dims_strings(tensor, dims);
    RedisModule_Replicate(ctx, "SPIRT.TSET", "scvcb", name, "FLOAT32", dims, (size_t)ndim, "BLOB",
                          (const char *)tensor->data, spirt_tensor_bytes(tensor));
    spirt_dims_free(dims, ndim);
}
