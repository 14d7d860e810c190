/* tensors.c -- tensors through the spirt module's commands.
 *
 * SPIRT.TSET key FLOAT32 dim... BLOB bytes stores a tensor; SPIRT.TGET key
 * FULL reads shape and values in one atomic reply; SPIRT.TGET key META the
 * shape alone (the module's reference is docs/module.md). The reply of
 * META/FULL is a flat list of name/value pairs
 *     dtype float32  shape [dims...]  count n  [blob bytes]
 * read here by name, so fields the module may add later are ignored. The
 * blob is float32 little-endian, as everywhere in spirt (tensor.h).
 *
 * Reads put the blob where it ends up, with no copy on the way: a sink
 * (reader.h) sees the reply's fields before the blob's bytes arrive, and
 * once dtype and shape are known to fit, has the bytes read straight into
 * the caller's floats (store_tensor_get_into) or into the new Tensor
 * (store_tensor_get). A reply in another order, or of another shape,
 * declines the sink and is copied as before. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "spirt/store.h"
#include "spirt/tensor.h"
#include "store/conn.h"
#include "store/reader.h"

/* What a META or FULL reply says. */
typedef struct TensorReply {
    TensorShape shape;
    const char *blob; /* NULL for META */
    size_t blob_length;
} TensorReply;

/* The value of field `name` among the first `count` elements (name/value
 * pairs), or NULL. */
static const StoreReply *find_field(const StoreReply *reply, size_t count, const char *name) {
    for (size_t i = 0; i + 1 < count; i += 2) {
        const StoreReply *field = reply->element[i];
        if (field->type == STORE_REPLY_STRING && field->str != NULL && strcasecmp(field->str, name) == 0)
            return reply->element[i + 1];
    }
    return NULL;
}

/* Checks dtype and shape among the first `count` elements of a META/FULL
 * reply; SPIRT_ERR_PROTOCOL with the reason if they do not describe a
 * float32 tensor. */
static int parse_header(const char *key, const StoreReply *reply, size_t count, TensorShape *out, SpirtError *error) {
    const StoreReply *dtype = find_field(reply, count, "dtype");
    const StoreReply *shape = find_field(reply, count, "shape");
    if (dtype == NULL || dtype->type != STORE_REPLY_STRING || dtype->str == NULL ||
        strcasecmp(dtype->str, "float32") != 0)
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
    if (tensor_shape_init(out, (uint32_t)shape->elements, dims, &shape_error) != SPIRT_OK)
        return spirt_error_set(error, SPIRT_ERR_PROTOCOL, "tensor '%s': %s", key, shape_error.message);
    return SPIRT_OK;
}

/* Checks a META/FULL reply and extracts it; SPIRT_ERR_PROTOCOL with the
 * reason if it does not describe a float32 tensor consistently. A blob
 * that went to a sink has blob == NULL (and its length). */
static int parse_tensor_reply(const StoreConn *conn, const char *key, const StoreReply *reply, int want_blob,
                              TensorReply *out, SpirtError *error) {
    if (reply->type != STORE_REPLY_ARRAY || reply->elements % 2 != 0)
        return store_unexpected_reply(conn, reply, "SPIRT.TGET", error);
    int status = parse_header(key, reply, reply->elements, &out->shape, error);
    if (status != SPIRT_OK) return status;
    const StoreReply *count = find_field(reply, reply->elements, "count");
    const StoreReply *blob = find_field(reply, reply->elements, "blob");
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

/* --- Reading the blob in place --- */

/* Where a FULL reply's blob may go. Exactly one of `values` (with
 * `expected`) and `create` is set. */
typedef struct BlobSink {
    const char *key;
    const TensorShape *expected; /* store_tensor_get_into: the caller's shape... */
    float *values;               /* ...and floats */
    int create;                  /* store_tensor_get: make the tensor for it */
    Tensor *created;             /* the tensor made (owned here until handed over) */
    int taken;                   /* a blob went here already: never a second */
} BlobSink;

/* StoreBulkSink: takes the string that follows the field name "blob" when
 * the fields before it give a float32 shape the blob's length matches
 * (and, for get_into, equal to the caller's: otherwise the caller's floats
 * must stay untouched, and the blob is read the usual way). */
static void *blob_sink(void *context, const StoreReply *array, size_t index, size_t length) {
    BlobSink *sink = context;
    if (array == NULL || index % 2 != 1 || sink->taken) return NULL;
    const StoreReply *name = array->element[index - 1];
    if (name->type != STORE_REPLY_STRING || name->str == NULL || strcasecmp(name->str, "blob") != 0) return NULL;
    TensorShape shape;
    if (parse_header(sink->key, array, index - 1, &shape, NULL) != SPIRT_OK) return NULL;
    if (length != tensor_shape_count(&shape) * sizeof(float)) return NULL;
    void *place = NULL;
    if (sink->values != NULL && tensor_shape_equal(&shape, sink->expected)) {
        place = sink->values;
    } else if (sink->create) {
        sink->created = tensor_create(&shape, NULL);
        place = sink->created ? sink->created->data : NULL;
    }
    sink->taken = place != NULL;
    return place;
}

/* SPIRT.TGET key MODE; a missing key is SPIRT_ERR_NOT_FOUND. On SPIRT_OK the
 * caller owns *reply and `parsed` points into it. `sink` (may be NULL) is
 * offered the blob. */
static int tensor_read(StoreConn *conn, const char *key, int want_blob, BlobSink *sink, StoreReply **reply,
                       TensorReply *parsed, SpirtError *error) {
    *reply = NULL;
    if (key == NULL) return spirt_error_set(error, SPIRT_ERR_INVALID, "SPIRT.TGET: no key");
    const char *argv[] = {"SPIRT.TGET", key, want_blob ? "FULL" : "META"};
    const StoreCallOptions call = {.sink = sink ? blob_sink : NULL, .sink_context = sink};
    int status = store_command_argv_with(conn, 3, argv, NULL, &call, reply, error);
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
    BlobSink sink = {.key = key, .create = 1};
    int status = tensor_read(conn, key, 1, &sink, &reply, &parsed, error);
    if (status != SPIRT_OK) {
        tensor_free(sink.created);
        return status;
    }
    Tensor *result = sink.created;
    if (parsed.blob != NULL) {
        /* Not read in place (the sink declined): copy, never cast, as the
         * reply's bytes are not float-aligned. */
        tensor_free(result);
        result = tensor_create(&parsed.shape, error);
        if (result == NULL) {
            store_reply_free(reply);
            return error ? error->code : SPIRT_ERR_NOMEM;
        }
        memcpy(result->data, parsed.blob, parsed.blob_length);
    }
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
    BlobSink sink = {.key = key, .expected = expected, .values = values};
    int status = tensor_read(conn, key, 1, &sink, &reply, &parsed, error);
    if (status != SPIRT_OK) return status;
    if (!tensor_shape_equal(&parsed.shape, expected)) {
        char stored[96], wanted[96];
        status = spirt_error_set(error, SPIRT_ERR_SHAPE, "tensor '%s' has shape %s, expected %s", key,
                                 tensor_shape_format(&parsed.shape, stored, sizeof(stored)),
                                 tensor_shape_format(expected, wanted, sizeof(wanted)));
    } else if (parsed.blob != NULL) {
        memcpy(values, parsed.blob, parsed.blob_length); /* the sink declined: the usual copy */
    }
    store_reply_free(reply);
    return status;
}

int store_tensor_shape(StoreConn *conn, const char *key, TensorShape *shape, SpirtError *error) {
    if (shape == NULL) return spirt_error_set(error, SPIRT_ERR_INVALID, "SPIRT.TGET: nowhere to put the shape");
    StoreReply *reply;
    TensorReply parsed;
    int status = tensor_read(conn, key, 0, NULL, &reply, &parsed, error);
    if (status != SPIRT_OK) return status;
    *shape = parsed.shape;
    store_reply_free(reply);
    return SPIRT_OK;
}
