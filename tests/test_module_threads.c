/* test_module_threads.c -- the module's worker threads against a real
 * redis-server: the server answers other clients while a long command runs
 * (ordering asserted, not timed), a command computes on the values its
 * sources had when it started even if they are overwritten meanwhile, an
 * UPDATE or AVGUPDATE whose parameters were replaced under it writes
 * nothing, a client
 * that disconnects mid-command leaves nothing behind, and many concurrent
 * commands all complete.
 *
 * "While it runs" is established by the server itself: INFO's
 * blocked_clients counts the client whose command is on a worker thread.
 *
 * SPIRT_TEST_LABELS: db */
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "module_client.h"
#include "spirt/clock.h"
#include "test.h"

/* Waits until the server reports `count` blocked clients (at most ~20 s). */
static int wait_blocked(redisContext *observer, long long count) {
    for (int i = 0; i < 20000; i++) {
        if (module_test_info_field(observer, "clients", "blocked_clients") == count) return 1;
        clock_sleep_ms(1);
    }
    return 0;
}

/* 1 if a reply (or anything) is waiting to be read on the connection. */
static int reply_pending(redisContext *context) {
    struct pollfd fd = {.fd = context->fd, .events = POLLIN};
    return poll(&fd, 1, 0) > 0;
}

static void store_random(redisContext *c, const char *key, size_t count, uint64_t seed) {
    float *values = malloc(count * sizeof(float));
    module_test_random(values, count, seed, 1.0);
    CHECK(module_test_tset_vector(c, key, values, count));
    free(values);
}

/* A command long enough to watch: centered clipping runs exactly ITERS
 * passes over the inputs (geomed may stop early once it converges). */
static void append_long_agg(redisContext *c, const char *destination, const char *prefix, int n) {
    const char *argv[40];
    char keys[16][32];
    char count[8];
    int argc = 0;
    argv[argc++] = "SPIRT.AGG";
    argv[argc++] = destination;
    argv[argc++] = "RULE";
    argv[argc++] = "cclip";
    argv[argc++] = "ITERS";
    argv[argc++] = "1500";
    argv[argc++] = "TAU";
    argv[argc++] = "0.5";
    argv[argc++] = "SRC";
    snprintf(count, sizeof(count), "%d", n);
    argv[argc++] = count;
    for (int i = 0; i < n; i++) {
        snprintf(keys[i], sizeof(keys[i]), "%s:%d", prefix, i);
        argv[argc++] = keys[i];
    }
    redisAppendCommandArgv(c, argc, argv, NULL);
}

/* Two connections: one runs the long command, the other watches. */
static int open_pair(const TestRedis *server, redisContext **worker, redisContext **other) {
    *worker = test_redis_connect(server);
    *other = test_redis_connect(server);
    CHECK(*worker && *other);
    if (*worker && *other) return 1;
    if (*worker) redisFree(*worker);
    if (*other) redisFree(*other);
    return 0;
}

static redisReply *read_reply(redisContext *c) {
    redisReply *reply = NULL;
    if (redisGetReply(c, (void **)&reply) != REDIS_OK) return NULL;
    return reply;
}

static void test_ping_during_agg(const TestRedis *server) {
    test_begin("PING on another connection is answered before a long SPIRT.AGG replies");
    redisContext *worker, *other;
    if (!open_pair(server, &worker, &other)) return;
    enum { N = 8, COUNT = 50000 };
    for (int i = 0; i < N; i++) {
        char key[32];
        snprintf(key, sizeof(key), "long:%d", i);
        store_random(other, key, COUNT, 10 + (uint64_t)i);
    }
    append_long_agg(worker, "long:out", "long", N);
    int done = 0;
    while (!done) redisBufferWrite(worker, &done);
    CHECK(wait_blocked(other, 1));
    int pongs = 0;
    for (int i = 0; i < 5; i++) pongs += module_test_ping(other);
    /* The heartbeat-like traffic went through while the AGG still runs. */
    CHECK(pongs == 5);
    CHECK(!reply_pending(worker));
    CHECK(module_test_info_field(other, "clients", "blocked_clients") == 1);
    CHECK(module_test_reply_ok(read_reply(worker)));
    size_t count = 0;
    float *result = module_test_tget(other, "long:out", &count);
    CHECK(result && count == COUNT);
    free(result);
    redisFree(worker);
    redisFree(other);
}

static void test_snapshot_semantics(const TestRedis *server) {
    test_begin("a command computes on its sources as they were when it started");
    redisContext *worker, *other;
    if (!open_pair(server, &worker, &other)) return;
    enum { N = 6, COUNT = 40000 };
    for (int i = 0; i < N; i++) {
        char key[32], backup[32];
        snprintf(key, sizeof(key), "snap:%d", i);
        snprintf(backup, sizeof(backup), "keep:%d", i);
        store_random(other, key, COUNT, 20 + (uint64_t)i);
        redisReply *copied = module_test_command(other, "COPY", key, backup, NULL);
        if (copied) freeReplyObject(copied);
    }
    append_long_agg(worker, "snap:out", "snap", N);
    int done = 0;
    while (!done) redisBufferWrite(worker, &done);
    CHECK(wait_blocked(other, 1));
    /* Overwrite two sources (one with another shape) and delete a third. */
    store_random(other, "snap:0", COUNT, 999);
    store_random(other, "snap:1", 7, 998);
    redisReply *deleted = module_test_command(other, "DEL", "snap:2", NULL);
    CHECK(deleted && deleted->integer == 1);
    if (deleted) freeReplyObject(deleted);
    CHECK(module_test_reply_ok(read_reply(worker)));
    /* The same rule over untouched copies of the old values: same bits. */
    append_long_agg(worker, "snap:reference", "keep", N);
    CHECK(module_test_reply_ok(read_reply(worker)));
    size_t count_a = 0, count_b = 0;
    float *got = module_test_tget(other, "snap:out", &count_a),
          *want = module_test_tget(other, "snap:reference", &count_b);
    CHECK(got && want && count_a == count_b && memcmp(got, want, count_a * sizeof(float)) == 0);
    free(got);
    free(want);
    redisFree(worker);
    redisFree(other);
}

/* UPDATE, or AVGUPDATE (`fused`), whose parameters are replaced while it
 * runs: nothing is written (for AVGUPDATE, not even the average). */
static void test_update_conflict(const TestRedis *server, int fused) {
    test_begin(fused ? "an AVGUPDATE whose parameters are replaced while it runs writes nothing (CONFLICT)"
                     : "an UPDATE whose parameters are replaced while it runs writes nothing (CONFLICT)");
    redisContext *worker, *other;
    if (!open_pair(server, &worker, &other)) return;
    /* Big enough that the step is still running when TSET arrives; retried
     * larger if the machine was too quick to catch it. */
    int caught = 0;
    for (size_t count = 4000000; count <= 16000000 && !caught; count *= 2) {
        store_random(other, "conflict:p", count, 30);
        store_random(other, "conflict:g", count, 31);
        redisReply *gone = module_test_command(other, "DEL", "conflict:state", "conflict:avg", NULL);
        if (gone) freeReplyObject(gone);
        const char *argv[] = {"SPIRT.UPDATE", "conflict:p", "conflict:g", "OPT",   "adam",          "LR",
                              "0.1",          "STEP",       "1",          "STATE", "conflict:state"};
        const char *fused_argv[] = {"SPIRT.AVGUPDATE", "conflict:p", "conflict:avg", "OPT",          "adam",
                                    "LR",              "0.1",        "STEP",         "1",            "STATE",
                                    "conflict:state",  "SRC",        "2",            "conflict:g", "conflict:g"};
        if (fused)
            redisAppendCommandArgv(worker, 15, fused_argv, NULL);
        else
            redisAppendCommandArgv(worker, 11, argv, NULL);
        int done = 0;
        while (!done) redisBufferWrite(worker, &done);
        int blocked = 0;
        for (int i = 0; i < 5000 && !blocked && !reply_pending(worker); i++) {
            blocked = module_test_info_field(other, "clients", "blocked_clients") == 1;
            if (!blocked) clock_sleep_ms(0.2);
        }
        float replacement[3] = {1, 2, 3};
        if (blocked) CHECK(module_test_tset_vector(other, "conflict:p", replacement, 3));
        redisReply *reply = read_reply(worker);
        if (blocked && module_test_is_error(reply, "CONFLICT")) {
            caught = 1;
            size_t got_count = 0;
            float *params = module_test_tget(other, "conflict:p", &got_count);
            CHECK(params && got_count == 3 && memcmp(params, replacement, sizeof(replacement)) == 0);
            free(params);
            redisReply *state = module_test_command(other, "EXISTS", "conflict:state", "conflict:avg", NULL);
            CHECK(state && state->integer == 0);
            if (state) freeReplyObject(state);
        } else if (blocked) {
            /* The step finished between our check and the TSET. */
            CHECK(module_test_is_ok(reply));
        }
        if (reply) freeReplyObject(reply);
    }
    CHECKF(caught, "never caught an %s in flight", fused ? "AVGUPDATE" : "UPDATE");
    redisFree(worker);
    redisFree(other);
}

static void test_disconnect(const TestRedis *server) {
    test_begin("a client that disconnects during a command: nothing written, server fine");
    redisContext *worker, *other;
    if (!open_pair(server, &worker, &other)) return;
    long long memory_before = module_test_info_field(other, "memory", "used_memory");
    append_long_agg(worker, "gone:out", "long", 8);
    int done = 0;
    while (!done) redisBufferWrite(worker, &done);
    CHECK(wait_blocked(other, 1));
    redisFree(worker);
    /* The job runs to its end, then is dropped with its result. */
    int finished = 0;
    for (int i = 0; i < 20000 && !finished; i++) {
        finished = module_test_info_field(other, "spirt", "spirt_jobs_running") == 0;
        if (!finished) clock_sleep_ms(1);
    }
    CHECK(finished);
    CHECK(module_test_info_field(other, "memory", "used_memory") < memory_before + 1000000);
    redisReply *exists = module_test_command(other, "EXISTS", "gone:out", NULL);
    CHECK(exists && exists->integer == 0);
    if (exists) freeReplyObject(exists);
    CHECK(module_test_ping(other));
    redisFree(other);
}

static void test_many_concurrent(const TestRedis *server) {
    test_begin("many clients' commands at once all complete with the right results");
    enum { CLIENTS = 6, COUNT = 20000 };
    redisContext *clients[CLIENTS];
    redisContext *admin = test_redis_connect(server);
    CHECK(admin != NULL);
    if (!admin) return;
    float *a = malloc(COUNT * sizeof(float)), *b = malloc(COUNT * sizeof(float));
    module_test_random(a, COUNT, 40, 1.0);
    module_test_random(b, COUNT, 41, 1.0);
    CHECK(module_test_tset_vector(admin, "many:a", a, COUNT));
    CHECK(module_test_tset_vector(admin, "many:b", b, COUNT));
    for (int i = 0; i < CLIENTS; i++) {
        clients[i] = test_redis_connect(server);
        char destination[32];
        snprintf(destination, sizeof(destination), "many:out:%d", i);
        const char *argv[] = {"SPIRT.AVG", destination, "many:a", "many:b"};
        const char *info[] = {"SPIRT.INFO", "many:a"};
        if (clients[i]) {
            redisAppendCommandArgv(clients[i], 4, argv, NULL);
            redisAppendCommandArgv(clients[i], 2, info, NULL);
        }
    }
    for (int i = 0; i < CLIENTS; i++) {
        if (!clients[i]) continue;
        CHECK(module_test_reply_ok(read_reply(clients[i])));
        redisReply *info = read_reply(clients[i]);
        CHECK(info && info->type == REDIS_REPLY_ARRAY);
        if (info) freeReplyObject(info);
        char destination[32];
        snprintf(destination, sizeof(destination), "many:out:%d", i);
        size_t count = 0;
        float *got = module_test_tget(admin, destination, &count);
        int right = got && count == COUNT;
        for (size_t j = 0; right && j < COUNT; j++) {
            double want = ((double)a[j] + b[j]) / 2;
            right = fabs(got[j] - want) <= 1e-6 * (fabs(want) > 1 ? fabs(want) : 1);
        }
        CHECK(right);
        free(got);
        redisFree(clients[i]);
    }
    free(a);
    free(b);
    CHECK(module_test_info_field(admin, "clients", "blocked_clients") == 0);
    redisFree(admin);
}

static void test_notifications(const TestRedis *server) {
    test_begin("keyspace events: a subscriber hears spirt.tset, spirt.avg and spirt.update");
    redisContext *client, *subscriber;
    if (!open_pair(server, &client, &subscriber)) return;
    CHECK(module_test_ok(client, "CONFIG", "SET", "notify-keyspace-events", "Kd", NULL));
    redisReply *subscribed = module_test_command(subscriber, "PSUBSCRIBE", "__keyspace@0__:note:*", NULL);
    CHECK(subscribed && subscribed->type == REDIS_REPLY_ARRAY);
    if (subscribed) freeReplyObject(subscribed);
    store_random(client, "note:g", 1000, 50);
    CHECK(module_test_ok(client, "SPIRT.AVG", "note:avg", "note:g", "note:g", NULL));
    CHECK(module_test_ok(client, "SPIRT.UPDATE", "note:g", "note:avg", "OPT", "sgd", "LR", "0.1", NULL));
    static const char *const expected[][2] = {
        {"__keyspace@0__:note:g", "spirt.tset"},
        {"__keyspace@0__:note:avg", "spirt.avg"},
        {"__keyspace@0__:note:g", "spirt.update"},
    };
    for (int i = 0; i < 3; i++) {
        redisReply *message = read_reply(subscriber);
        int ok = message && message->type == REDIS_REPLY_ARRAY && message->elements == 4 &&
                 strcmp(message->element[2]->str, expected[i][0]) == 0 &&
                 strcmp(message->element[3]->str, expected[i][1]) == 0;
        CHECKF(ok, "event %d: expected %s on %s", i, expected[i][1], expected[i][0]);
        if (message) freeReplyObject(message);
    }
    CHECK(module_test_ok(client, "CONFIG", "SET", "notify-keyspace-events", "", NULL));
    redisFree(client);
    redisFree(subscriber);
}

static void test_block_cache(const TestRedis *server) {
    test_begin("block cache: a freed big tensor's block is kept, reused, and bounded");
    redisContext *c = test_redis_connect(server);
    CHECK(c != NULL);
    if (!c) return;
    enum { COUNT = 1 << 20 }; /* 4 MiB */
    CHECK(module_test_ok(c, "FLUSHALL", NULL));
    store_random(c, "cache:x", COUNT, 60);
    long long before = module_test_info_field(c, "spirt", "spirt_cache_blocks");
    store_random(c, "cache:x", COUNT, 61); /* the first tensor's block is released */
    long long kept = module_test_info_field(c, "spirt", "spirt_cache_blocks");
    CHECKF(kept == before + 1, "cache blocks %lld -> %lld", before, kept);
    store_random(c, "cache:y", COUNT, 62); /* same size: takes the kept block */
    CHECK(module_test_info_field(c, "spirt", "spirt_cache_blocks") == kept - 1);
    for (int i = 0; i < 40; i++) store_random(c, "cache:z", COUNT + (size_t)i * 1024, 63);
    long long blocks = module_test_info_field(c, "spirt", "spirt_cache_blocks");
    long long bytes = module_test_info_field(c, "spirt", "spirt_cache_bytes");
    long long limit = module_test_info_field(c, "spirt", "spirt_cache_max");
    CHECKF(blocks <= 8 && bytes <= limit, "%lld blocks, %lld bytes (limit %lld)", blocks, bytes, limit);
    size_t count = 0;
    float *y = module_test_tget(c, "cache:y", &count), *expected = malloc(COUNT * sizeof(float));
    module_test_random(expected, COUNT, 62, 1.0);
    CHECK(y && count == COUNT && memcmp(y, expected, COUNT * sizeof(float)) == 0);
    free(y);
    free(expected);
    redisFree(c);
}

int main(void) {
    /* Every command on a worker thread; one kernel thread keeps runs long
     * enough to watch on a fast machine. */
    static const char *const threaded[] = {"INLINE_MAX", "0", "THREADS", "1", NULL};
    TestRedis server;
    if (module_test_start(&server, threaded, NULL, 0, NULL) != 0) return 1;
    test_ping_during_agg(&server);
    test_snapshot_semantics(&server);
    test_update_conflict(&server, 0);
    test_update_conflict(&server, 1);
    test_disconnect(&server);
    test_many_concurrent(&server);
    test_notifications(&server);
    test_block_cache(&server);
    CHECK(test_redis_alive(&server));
    test_redis_stop(&server);
    return test_finish();
}
