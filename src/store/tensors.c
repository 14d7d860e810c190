/* tensors.c -- tensors through the spirt module's commands.
 *
 * SPIRT.TSET key FLOAT32 dim... BLOB bytes stores a tensor; SPIRT.TGET key
 * FULL reads shape and values in one atomic reply; SPIRT.TGET key META the
 * shape alone (the module's reference is docs/module.md). The reply of
 * META/FULL is a flat list of name/value pairs
 *     dtype float32  shape [dims...]  count n  [blob bytes]
 * read here by name, so fields the module may add later are ignored. The
 * blob is float32 little-endian, as everywhere in spirt (tensor.h). */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "spirt/store.h"
#include "spirt/tensor.h"
#include "store/conn.h"

/* What a META or FULL reply says. */
typedef struct TensorReply {
    TensorShape shape;
    const char *blob; /* NULL for META */
    size_t blob_length;
} TensorReply;

static const StoreReply *find_field(const StoreReply *reply, const char *name) {
    for (size_t i = 0; i + 1 < reply->elements; i += 2) {
        const StoreReply *field = reply->element[i];
        if (field->type == STORE_REPLY_STRING && strcasecmp(field->str, name) == 0) return reply->element[i + 1];
    }
    return NULL;
}

/* Checks a META/FULL reply and extracts it; SPIRT_ERR_PROTOCOL with the
 * reason if it does not describe a float32 tensor consistently. */
static int parse_tensor_reply(const StoreConn *conn, const char *key, const StoreReply *reply, int want_blob,
                              TensorReply *out, SpirtError *error) {
    if (reply->type != STORE_REPLY_ARRAY || reply->elements % 2 != 0)
        return store_unexpected_reply(conn, reply, "SPIRT.TGET", error);
    const StoreReply *dtype = find_field(reply, "dtype");
    const StoreReply *shape = find_field(reply, "shape");
    const StoreReply *count = find_field(reply, "count");
    const StoreReply *blob = find_field(reply, "blob");
    if (dtype == NULL || dtype->type != STORE_REPLY_STRING || strcasecmp(dtype->str, "float32") != 0)
        return spirt_error_set(error, SPIRT_ERR_PROTOCOL, "tensor '%s': dtype is not float32", key);
    if (shape == NULL || shape->type != STORE_REPLY_ARRAY || shape->elements == 0 ||
        shape->elements > SPIRT_TENSOR_MAX_DIMS)
        return spirt_error_set(error, SPIRT_ERR_PROTOCOL, "tensor '%s': no valid shape in the reply", key);
    uint64_t dims[SPIRT_TENSOR_MAX_DIMS] = {0};
    for (size_t i = 0; i < shape->elements; i++) {
        if (shape->element[i]->type != STORE_REPLY_INTEGER || shape->element[i]->integer <= 0)
            return spirt_error_set(error, SPIRT_ERR_PROTOCOL, "tensor '%s': dimension %zu is not positive", key, i);
        dims[i] = (uint64_t)shape->element[i]->integer;
    }
    SpirtError shape_error;
    if (tensor_shape_init(&out->shape, (uint32_t)shape->elements, dims, &shape_error) != SPIRT_OK)
        return spirt_error_set(error, SPIRT_ERR_PROTOCOL, "tensor '%s': %s", key, shape_error.message);
    size_t values = tensor_shape_count(&out->shape);
    if (count != NULL && (count->type != STORE_REPLY_INTEGER || (unsigned long long)count->integer != values))
        return spirt_error_set(error, SPIRT_ERR_PROTOCOL, "tensor '%s': count does not match its shape", key);
    out->blob = NULL;
    out->blob_length = 0;
    if (!want_blob) return SPIRT_OK;
    if (blob == NULL || blob->type != STORE_REPLY_STRING || blob->len != values * sizeof(float))
        return spirt_error_set(error, SPIRT_ERR_PROTOCOL, "tensor '%s': blob missing or not %zu bytes", key,
                               values * sizeof(float));
    out->blob = blob->str;
    out->blob_length = blob->len;
    return SPIRT_OK;
}

/* SPIRT.TGET key MODE; a missing key is SPIRT_ERR_NOT_FOUND. On SPIRT_OK the
 * caller owns *reply and `parsed` points into it. */
static int tensor_read(StoreConn *conn, const char *key, int want_blob, StoreReply **reply, TensorReply *parsed,
                       SpirtError *error) {
    *reply = NULL;
    if (key == NULL) return spirt_error_set(error, SPIRT_ERR_INVALID, "SPIRT.TGET: no key");
    const char *argv[] = {"SPIRT.TGET", key, want_blob ? "FULL" : "META"};
    int status = store_command_argv(conn, 3, argv, NULL, reply, error);
    if (status != SPIRT_OK) return status;
    if ((*reply)->type == STORE_REPLY_NIL)
        status = spirt_error_set(error, SPIRT_ERR_NOT_FOUND, "tensor '%s' does not exist", key);
    else
        status = parse_tensor_reply(conn, key, *reply, want_blob, parsed, error);
    if (status != SPIRT_OK) {
        store_reply_free(*reply);
        *reply = NULL;
    }
    return status;
}

int store_tensor_set(StoreConn *conn, const char *key, const TensorShape *shape, const float *values,
                     SpirtError *error) {
    if (key == NULL || shape == NULL || values == NULL)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "SPIRT.TSET: no key, shape or values");
    TensorShape checked;
    int status = tensor_shape_init(&checked, shape->ndim, shape->dims, error);
    if (status != SPIRT_OK) return spirt_error_prefix(error, "SPIRT.TSET %s", key);
    char dims[SPIRT_TENSOR_MAX_DIMS][24];
    const char *argv[4 + SPIRT_TENSOR_MAX_DIMS + 2];
    size_t lengths[4 + SPIRT_TENSOR_MAX_DIMS + 2];
    size_t argc = 0;
    argv[argc++] = "SPIRT.TSET";
    argv[argc++] = key;
    argv[argc++] = "FLOAT32";
    for (uint32_t i = 0; i < checked.ndim; i++) {
        snprintf(dims[i], sizeof(dims[i]), "%llu", (unsigned long long)checked.dims[i]);
        argv[argc++] = dims[i];
    }
    argv[argc++] = "BLOB";
    for (size_t i = 0; i < argc; i++) lengths[i] = strlen(argv[i]);
    argv[argc] = (const char *)values; /* float32 little-endian in memory already */
    lengths[argc++] = tensor_shape_count(&checked) * sizeof(float);
    StoreReply *reply = NULL;
    status = store_command_argv(conn, argc, argv, lengths, &reply, error);
    if (status == SPIRT_OK && reply->type != STORE_REPLY_STATUS)
        status = store_unexpected_reply(conn, reply, "SPIRT.TSET", error);
    store_reply_free(reply);
    return status;
}

int store_tensor_get(StoreConn *conn, const char *key, Tensor **tensor, SpirtError *error) {
    if (tensor == NULL) return spirt_error_set(error, SPIRT_ERR_INVALID, "SPIRT.TGET: nowhere to put the tensor");
    *tensor = NULL;
    StoreReply *reply;
    TensorReply parsed;
    int status = tensor_read(conn, key, 1, &reply, &parsed, error);
    if (status != SPIRT_OK) return status;
    Tensor *result = tensor_create(&parsed.shape, error);
    if (result == NULL) {
        store_reply_free(reply);
        return error ? error->code : SPIRT_ERR_NOMEM;
    }
    /* The reply's bytes are not float-aligned: copy, never cast. */
    memcpy(result->data, parsed.blob, parsed.blob_length);
    store_reply_free(reply);
    *tensor = result;
    return SPIRT_OK;
}

int store_tensor_get_into(StoreConn *conn, const char *key, const TensorShape *expected, float *values,
                          SpirtError *error) {
    if (expected == NULL || values == NULL)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "SPIRT.TGET: no expected shape or buffer");
    StoreReply *reply;
    TensorReply parsed;
    int status = tensor_read(conn, key, 1, &reply, &parsed, error);
    if (status != SPIRT_OK) return status;
    if (!tensor_shape_equal(&parsed.shape, expected)) {
        char stored[96], wanted[96];
        status = spirt_error_set(error, SPIRT_ERR_SHAPE, "tensor '%s' has shape %s, expected %s", key,
                                 tensor_shape_format(&parsed.shape, stored, sizeof(stored)),
                                 tensor_shape_format(expected, wanted, sizeof(wanted)));
    } else {
        memcpy(values, parsed.blob, parsed.blob_length);
    }
    store_reply_free(reply);
    return status;
}

int store_tensor_shape(StoreConn *conn, const char *key, TensorShape *shape, SpirtError *error) {
    if (shape == NULL) return spirt_error_set(error, SPIRT_ERR_INVALID, "SPIRT.TGET: nowhere to put the shape");
    StoreReply *reply;
    TensorReply parsed;
    int status = tensor_read(conn, key, 0, &reply, &parsed, error);
    if (status != SPIRT_OK) return status;
    *shape = parsed.shape;
    store_reply_free(reply);
    return SPIRT_OK;
}
