/* test_store_tensor.c -- tensor helpers against redis-server with spirt.so.
 *
 * Values written are random float32 vectors generated here; what comes
 * back must be bit-identical, and the server's own view (SPIRT.TGET BLOB
 * and META, read through the generic command call) must agree with the
 * helpers.
 *
 * SPIRT_TEST_LABELS: db */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis_fixture.h"
#include "spirt/rng.h"
#include "spirt/store.h"
#include "spirt/tensor.h"
#include "store_round_trip.h"
#include "test.h"

static float *random_values(size_t count, uint64_t seed) {
    float *values = malloc(count * sizeof(float));
    SpirtRng rng;
    rng_init(&rng, seed);
    for (size_t i = 0; values && i < count; i++) values[i] = (float)rng_normal(&rng);
    return values;
}

static void test_round_trips(StoreConn *conn) {
    test_begin("tensors round-trip bit for bit");
    SpirtError error;
    const uint64_t shapes[][4] = {{7, 0, 0, 0}, {3, 5, 0, 0}, {2, 3, 4, 5}, {(uint64_t)1 << 22, 0, 0, 0}};
    const uint32_t ndims[] = {1, 2, 4, 1};
    for (size_t s = 0; s < 4; s++) {
        TensorShape shape;
        CHECK_OK(tensor_shape_init(&shape, ndims[s], shapes[s], &error), &error);
        size_t count = tensor_shape_count(&shape);
        float *values = random_values(count, 100 + s);
        char key[32];
        snprintf(key, sizeof(key), "spirt:t:%zu", s);
        CHECK_OK(store_tensor_set(conn, key, &shape, values, &error), &error);

        Tensor *tensor = NULL;
        CHECK_OK(store_tensor_get(conn, key, &tensor, &error), &error);
        CHECK(tensor && tensor_shape_equal(&tensor->shape, &shape) && tensor->count == count);
        CHECK(tensor && memcmp(tensor->data, values, count * sizeof(float)) == 0);
        tensor_free(tensor);

        /* The module's own answers, through the generic call. */
        StoreReply *reply = NULL;
        CHECK_OK(store_command(conn, &reply, &error, "SPIRT.TGET %s BLOB", key), &error);
        CHECK(reply && reply->type == STORE_REPLY_STRING && reply->len == count * sizeof(float) &&
              memcmp(reply->str, values, reply->len) == 0);
        store_reply_free(reply);
        TensorShape stored;
        CHECK_OK(store_tensor_shape(conn, key, &stored, &error), &error);
        CHECK(tensor_shape_equal(&stored, &shape));

        float *into = calloc(count, sizeof(float));
        CHECK_OK(store_tensor_get_into(conn, key, &shape, into, &error), &error);
        CHECK(into && memcmp(into, values, count * sizeof(float)) == 0);
        free(into);
        free(values);
    }
}

static void test_refusals(StoreConn *conn) {
    test_begin("tensor errors: missing, wrong type, wrong shape, non-finite, bad shapes");
    SpirtError error;
    Tensor *tensor = (Tensor *)&error; /* must be reset to NULL */
    CHECK_ERROR(store_tensor_get(conn, "spirt:none", &tensor, &error), SPIRT_ERR_NOT_FOUND, &error, "spirt:none");
    CHECK(tensor == NULL);
    TensorShape shape;
    CHECK_ERROR(store_tensor_shape(conn, "spirt:none", &shape, &error), SPIRT_ERR_NOT_FOUND, &error, "spirt:none");
    CHECK_OK(store_set(conn, "spirt:text", "abc", 3, &error), &error);
    CHECK_ERROR(store_tensor_get(conn, "spirt:text", &tensor, &error), SPIRT_ERR_SERVER, &error, "WRONGTYPE");

    /* Same count, other shape: refused, the buffer untouched. */
    const uint64_t dims[] = {2, 6}, other[] = {3, 4};
    TensorShape stored_shape, expected;
    CHECK_OK(tensor_shape_init(&stored_shape, 2, dims, &error), &error);
    CHECK_OK(tensor_shape_init(&expected, 2, other, &error), &error);
    float values[12], buffer[12];
    for (int i = 0; i < 12; i++) values[i] = (float)i - 5.5f;
    for (int i = 0; i < 12; i++) buffer[i] = 42.0f;
    CHECK_OK(store_tensor_set(conn, "spirt:m", &stored_shape, values, &error), &error);
    CHECK_ERROR(store_tensor_get_into(conn, "spirt:m", &expected, buffer, &error), SPIRT_ERR_SHAPE, &error,
                "(2, 6)");
    int untouched = 1;
    for (int i = 0; i < 12; i++) untouched &= buffer[i] == 42.0f;
    CHECK(untouched);

    /* NaN never reaches the database; the old value stays. */
    values[7] = NAN;
    CHECK_ERROR(store_tensor_set(conn, "spirt:m", &stored_shape, values, &error), SPIRT_ERR_SERVER, &error,
                "NONFINITE");
    Tensor *kept = NULL;
    CHECK_OK(store_tensor_get(conn, "spirt:m", &kept, &error), &error);
    CHECK(kept && kept->data[7] == 7.0f - 5.5f);
    tensor_free(kept);

    /* Shapes that are not shapes are refused before anything is sent. */
    TensorShape bad = {.ndim = 0};
    CHECK_ERROR(store_tensor_set(conn, "spirt:bad", &bad, values, &error), SPIRT_ERR_SHAPE, &error, "dimensions");
    bad = (TensorShape){.ndim = 2, .dims = {3, 0}};
    CHECK_ERROR(store_tensor_set(conn, "spirt:bad", &bad, values, &error), SPIRT_ERR_SHAPE, &error, "is 0");
    int exists = 1;
    CHECK_OK(store_exists(conn, "spirt:bad", &exists, &error), &error);
    CHECK(exists == 0);
    CHECK(store_conn_status(conn) == SPIRT_OK);
}

int main(void) {
    TestRedisOptions options = {.load_module = 1};
    TestRedis redis;
    if (test_redis_start(&redis, &options) != 0) {
        CHECK(!"redis-server with spirt.so did not start");
        return test_finish();
    }
    SpirtError error;
    StoreOptions store_options = {.port = redis.port};
    StoreConn *conn = store_connect(&store_options, &error);
    CHECK_OK(conn ? SPIRT_OK : error.code, &error);
    if (conn) {
        test_round_trips(conn);
        test_refusals(conn);
        test_begin("values and tensors of every size round-trip bit for bit");
        store_check_round_trips(conn, 33, 1);
        store_free(conn);
    }
    test_redis_stop(&redis);
    return test_finish();
}
