/* store_round_trip.c -- see tests/store_round_trip.h. */
#include "store_round_trip.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spirt/rng.h"
#include "test.h"

static char *random_bytes(size_t length, SpirtRng *rng) {
    char *bytes = malloc(length ? length : 1);
    for (size_t i = 0; bytes && i < length; i++) bytes[i] = (char)rng_next_u64(rng);
    return bytes;
}

static int same(const StoreReply *reply, const char *bytes, size_t length) {
    return reply && reply->type == STORE_REPLY_STRING && reply->len == length && reply->str[length] == '\0' &&
           memcmp(reply->str, bytes, length) == 0;
}

/* SET then GET (typed helper and generic call) of one value. */
static void check_value(StoreConn *conn, size_t length, SpirtRng *rng) {
    SpirtError error;
    char *value = random_bytes(length, rng);
    if (value == NULL) return;
    CHECKF(store_set(conn, "rt:value", value, length, &error) == SPIRT_OK, "SET of %zu bytes: %s", length,
           error.message);
    char *back = NULL;
    size_t back_length = 0;
    CHECKF(store_get(conn, "rt:value", &back, &back_length, &error) == SPIRT_OK && back_length == length &&
               memcmp(back, value, length) == 0 && back[length] == '\0',
           "GET of %zu bytes", length);
    free(back);
    const char *argv[] = {"GET", "rt:value"};
    StoreReply *reply = NULL;
    CHECKF(store_command_argv(conn, 2, argv, NULL, &reply, &error) == SPIRT_OK && same(reply, value, length),
           "GET (argv) of %zu bytes", length);
    store_reply_free(reply);
    free(value);
}

/* HSET of several large and small fields in one command, HMGET back. */
static void check_many_arguments(StoreConn *conn, SpirtRng *rng) {
    SpirtError error;
    const size_t lengths[] = {((size_t)1 << 20) + 1, 10, 100 * 1000, 0, 4096, ((size_t)2 << 20) + 7};
    enum { FIELDS = sizeof(lengths) / sizeof(lengths[0]) };
    const char *argv[2 + 2 * FIELDS], *get_argv[2 + FIELDS];
    size_t argv_lengths[2 + 2 * FIELDS];
    char names[FIELDS][8], *values[FIELDS];
    argv[0] = "HSET";
    get_argv[0] = "HMGET";
    argv[1] = get_argv[1] = "rt:hash";
    argv_lengths[0] = 4;
    argv_lengths[1] = 7;
    int ok = 1;
    for (size_t f = 0; f < FIELDS; f++) {
        snprintf(names[f], sizeof(names[f]), "f%zu", f);
        values[f] = random_bytes(lengths[f], rng);
        ok &= values[f] != NULL;
        argv[2 + 2 * f] = get_argv[2 + f] = names[f];
        argv_lengths[2 + 2 * f] = strlen(names[f]);
        argv[3 + 2 * f] = values[f] ? values[f] : "";
        argv_lengths[3 + 2 * f] = values[f] ? lengths[f] : 0;
    }
    if (ok) {
        CHECK_OK(store_command_argv(conn, 2 + 2 * FIELDS, argv, argv_lengths, NULL, &error), &error);
        StoreReply *reply = NULL;
        CHECK_OK(store_command_argv(conn, 2 + FIELDS, get_argv, NULL, &reply, &error), &error);
        CHECK(reply && reply->type == STORE_REPLY_ARRAY && reply->elements == FIELDS);
        for (size_t f = 0; reply && reply->type == STORE_REPLY_ARRAY && f < reply->elements && f < FIELDS; f++)
            CHECKF(same(reply->element[f], values[f], lengths[f]), "HMGET field of %zu bytes", lengths[f]);
        store_reply_free(reply);
    }
    for (size_t f = 0; f < FIELDS; f++) free(values[f]);
}

/* Large values through a pipeline (copied when appended). */
static void check_pipeline(StoreConn *conn, SpirtRng *rng) {
    SpirtError error;
    size_t length = ((size_t)3 << 20) + 1;
    char *value = random_bytes(length, rng);
    if (value == NULL) return;
    const char *set_argv[] = {"SET", "rt:piped", value};
    const size_t set_lengths[] = {3, 8, length};
    const char *get_argv[] = {"GET", "rt:piped"};
    CHECK_OK(store_append_argv(conn, 3, set_argv, set_lengths, &error), &error);
    CHECK_OK(store_append_argv(conn, 2, get_argv, NULL, &error), &error);
    /* The appended copy is what goes out: changing ours now changes nothing. */
    char first = value[0];
    value[0] = (char)~first;
    CHECK_OK(store_append_argv(conn, 2, get_argv, NULL, &error), &error);
    value[0] = first;
    StoreReply *reply = NULL;
    CHECK_OK(store_get_reply(conn, NULL, &error), &error);
    for (int i = 0; i < 2; i++) {
        CHECK_OK(store_get_reply(conn, &reply, &error), &error);
        CHECK(same(reply, value, length));
        store_reply_free(reply);
    }
    free(value);
}

static void check_tensors(StoreConn *conn, SpirtRng *rng) {
    SpirtError error;
    const size_t counts[] = {1, 1023, 1024, 4097, (size_t)1 << 18, ((size_t)4 << 20) + 3};
    for (size_t c = 0; c < sizeof(counts) / sizeof(counts[0]); c++) {
        TensorShape shape;
        tensor_shape_vector(&shape, counts[c], NULL);
        float *values = malloc(counts[c] * sizeof(float)), *into = calloc(counts[c], sizeof(float));
        for (size_t i = 0; values && i < counts[c]; i++) values[i] = (float)rng_normal(rng);
        if (values && into) {
            CHECK_OK(store_tensor_set(conn, "rt:tensor", &shape, values, &error), &error);
            CHECKF(store_tensor_get_into(conn, "rt:tensor", &shape, into, &error) == SPIRT_OK &&
                       memcmp(into, values, counts[c] * sizeof(float)) == 0,
                   "tensor of %zu floats, into a buffer", counts[c]);
            Tensor *tensor = NULL;
            CHECKF(store_tensor_get(conn, "rt:tensor", &tensor, &error) == SPIRT_OK && tensor->count == counts[c] &&
                       memcmp(tensor->data, values, counts[c] * sizeof(float)) == 0,
                   "tensor of %zu floats", counts[c]);
            tensor_free(tensor);
        }
        free(values);
        free(into);
    }
}

void store_check_round_trips(StoreConn *conn, uint64_t seed, int with_tensors) {
    SpirtRng rng;
    rng_init(&rng, seed);
    const size_t lengths[] = {0,     1,     4095,  4096,  4097,  16383, 16384,
                              16385, 65543, ((size_t)1 << 20) + 3, ((size_t)16 << 20) + 1};
    for (size_t i = 0; i < sizeof(lengths) / sizeof(lengths[0]); i++) check_value(conn, lengths[i], &rng);
    check_many_arguments(conn, &rng);
    check_pipeline(conn, &rng);
    if (with_tensors) check_tensors(conn, &rng);
    CHECK(store_conn_status(conn) == SPIRT_OK && store_pending_replies(conn) == 0);
}
