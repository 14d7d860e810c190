/* test_module_transient.c -- scratch keys and checkpointed updates survive
 * (or not) a crash exactly as documented.
 *
 * A server with AOF (appendfsync always) and TRANSIENT_PREFIX scratch: is
 * killed with SIGKILL and restarted on the same files. Writes to scratch:*
 * keys by any module command must be gone (SPIRT.SET and SPIRT.TWRAP strings
 * too); other
 * keys must be back bit for bit; and parameters stepped with SPIRT.UPDATE ... PERSIST NO after a step
 * with PERSIST YES must come back as they were after the persisted step.
 * SPIRT_TEST_LABELS: db */
#include <stdlib.h>
#include <string.h>

#include "module_client.h"
#include "test.h"

enum { N = 1000 };

/* GET key as bytes: 1 if it holds exactly `expected`. */
static int get_equals(redisContext *c, const char *key, const unsigned char *expected, size_t length) {
    redisReply *reply = module_test_command(c, "GET", key, NULL);
    int result = reply && reply->type == REDIS_REPLY_STRING && (size_t)reply->len == length &&
                 memcmp(reply->str, expected, length) == 0;
    freeReplyObject(reply);
    return result;
}

static int set_string(redisContext *c, const char *key, const unsigned char *bytes, size_t length) {
    redisReply *reply = redisCommand(c, "SPIRT.SET %s %b", key, bytes, length);
    int ok = reply && reply->type == REDIS_REPLY_STATUS && strcmp(reply->str, "OK") == 0;
    freeReplyObject(reply);
    return ok;
}

static int exists(redisContext *c, const char *key) {
    redisReply *reply = module_test_command(c, "EXISTS", key, NULL);
    int result = reply && reply->type == REDIS_REPLY_INTEGER && reply->integer == 1;
    freeReplyObject(reply);
    return result;
}

int main(void) {
    test_begin("TRANSIENT_PREFIX and PERSIST NO across a crash");
    char dir[600];
    test_temp_path(dir, sizeof(dir), "transient");
    const char *module_arguments[] = {"TRANSIENT_PREFIX", "scratch:", NULL};
    const char *extra[] = {"--appendfsync", "always", NULL};
    TestRedis server;
    if (module_test_start(&server, module_arguments, extra, 1, dir) != 0) {
        test_check(0, __FILE__, __LINE__, "start", "server did not start");
        return test_finish();
    }
    redisContext *c = test_redis_connect(&server);
    float values[N], gradient[N];
    module_test_random(values, N, 1, 1.0);
    module_test_random(gradient, N, 2, 0.1);
    /* Strings with every byte value, NULs included, as an envelope has. */
    unsigned char bytes[3 * 256];
    for (size_t i = 0; i < sizeof(bytes); i++) bytes[i] = (unsigned char)(i * 7);
    CHECK(set_string(c, "scratch:pub", bytes, sizeof(bytes)));
    CHECK(set_string(c, "keep:pub", bytes + 1, sizeof(bytes) - 1));
    CHECK(get_equals(c, "scratch:pub", bytes, sizeof(bytes)));
    CHECK(module_test_tset_vector(c, "keep:data", values, N));
    CHECK(module_test_tset_vector(c, "scratch:grad", gradient, N));
    CHECK(module_test_ok(c, "SPIRT.AVG", "scratch:avg", "scratch:grad", "keep:data", NULL));
    CHECK(module_test_ok(c, "SPIRT.AGG", "scratch:agg", "RULE", "median", "SRC", "2", "scratch:grad", "scratch:avg", NULL));
    CHECK(module_test_ok(c, "SPIRT.AVG", "keep:avg", "scratch:grad", "keep:data", NULL));
    /* TWRAP into a scratch key and into a kept one; the kept one must come
     * back as the bytes themselves even though its source is scratch. */
    redisReply *wrapped = module_test_command(c, "SPIRT.TWRAP", "scratch:wrapped", "scratch:grad", "PREFIX", "h", NULL);
    CHECK(wrapped && wrapped->type == REDIS_REPLY_INTEGER);
    freeReplyObject(wrapped);
    wrapped = module_test_command(c, "SPIRT.TWRAP", "keep:wrapped", "scratch:grad", "SUFFIX", "s", NULL);
    CHECK(wrapped && wrapped->type == REDIS_REPLY_INTEGER);
    freeReplyObject(wrapped);
    wrapped = module_test_command(c, "GET", "keep:wrapped", NULL);
    unsigned char *kept_wrapped = NULL;
    size_t kept_wrapped_length = 0;
    if (wrapped && wrapped->type == REDIS_REPLY_STRING) {
        kept_wrapped_length = (size_t)wrapped->len;
        kept_wrapped = malloc(kept_wrapped_length);
        memcpy(kept_wrapped, wrapped->str, kept_wrapped_length);
    }
    CHECK(kept_wrapped_length == 96 + N * sizeof(float) + 1);
    freeReplyObject(wrapped);
    CHECK(module_test_tset_vector(c, "keep:params", values, N));
    CHECK(module_test_ok(c, "SPIRT.UPDATE", "keep:params", "scratch:grad", "OPT", "momentum", "LR", "0.1", "MOMENTUM",
                         "0.9", "STATE", "keep:state", "PERSIST", "YES", NULL));
    size_t count = 0;
    float *persisted_params = module_test_tget(c, "keep:params", &count);
    float *persisted_state = module_test_tget(c, "keep:state", &count);
    float *kept_avg = module_test_tget(c, "keep:avg", &count);
    CHECK(module_test_ok(c, "SPIRT.UPDATE", "keep:params", "scratch:grad", "OPT", "momentum", "LR", "0.1", "MOMENTUM",
                         "0.9", "STATE", "keep:state", "PERSIST", "NO", NULL));
    float *memory_params = module_test_tget(c, "keep:params", &count);
    CHECK(persisted_params && memory_params && memcmp(persisted_params, memory_params, N * sizeof(float)) != 0);
    redisReply *reply = module_test_command(c, "SPIRT.UPDATE", "keep:params", "scratch:grad", "OPT", "sgd", "LR", "0.1",
                                            "PERSIST", "MAYBE", NULL);
    CHECK(module_test_is_error(reply, "INVALID"));
    freeReplyObject(reply);
    redisFree(c);

    test_redis_kill(&server);
    TestRedis again;
    CHECK(module_test_start(&again, module_arguments, extra, 1, dir) == 0);
    c = test_redis_connect(&again);
    CHECK(c && !exists(c, "scratch:grad") && !exists(c, "scratch:avg") && !exists(c, "scratch:agg"));
    CHECK(c && !exists(c, "scratch:pub") && get_equals(c, "keep:pub", bytes + 1, sizeof(bytes) - 1));
    CHECK(c && !exists(c, "scratch:wrapped") && kept_wrapped &&
          get_equals(c, "keep:wrapped", kept_wrapped, kept_wrapped_length));
    free(kept_wrapped);
    float *data = module_test_tget(c, "keep:data", &count);
    CHECK(data && count == N && memcmp(data, values, sizeof(values)) == 0);
    float *avg = module_test_tget(c, "keep:avg", &count);
    CHECK(avg && kept_avg && memcmp(avg, kept_avg, N * sizeof(float)) == 0);
    float *params = module_test_tget(c, "keep:params", &count);
    float *state = module_test_tget(c, "keep:state", &count);
    CHECK(params && persisted_params && memcmp(params, persisted_params, N * sizeof(float)) == 0);
    CHECK(state && persisted_state && memcmp(state, persisted_state, N * sizeof(float)) == 0);
    free(data);
    free(avg);
    free(params);
    free(state);
    free(persisted_params);
    free(persisted_state);
    free(memory_params);
    free(kept_avg);
    if (c) redisFree(c);
    test_redis_stop(&again);
    return test_finish();
}
