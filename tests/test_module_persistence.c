/* test_module_persistence.c -- tensors survive restarts and reach replicas
 * bit for bit, against real redis-servers:
 *   - RDB: SAVE, restart, every tensor identical (and DEBUG DIGEST equal);
 *   - AOF: a crash (SIGKILL, appendfsync always) and a restart replay the
 *     propagated commands; BGREWRITEAOF without the RDB preamble goes
 *     through the type's aof_rewrite (SPIRT.TSET) and replays identically;
 *   - the RDB loader refuses malformed payloads: DUMP/RESTORE runs the same
 *     rdb_load as loading a file, so crafted payloads (with a valid CRC64)
 *     test every check without stopping the server;
 *   - replication: AVG, AGG, UPDATE and AVGUPDATE on a master (inline and
 *     on worker threads) give bit-identical tensors on its replica after
 *     WAIT.
 *
 * SPIRT_TEST_LABELS: db */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "module_client.h"
#include "spirt/clock.h"
#include "test.h"

static const char *const tensor_keys[] = {"p:vector",    "p:matrix",   "p:cube",    "p:four",      "p:special",
                                          "p:avg",       "p:agg",      "p:params",  "p:state",     "p:big-avg",
                                          "p:big-agg",   "p:big-mean", "p:big-params", "p:big-state"};
enum { KEY_COUNT = sizeof(tensor_keys) / sizeof(tensor_keys[0]) };

typedef struct Snapshot {
    float *values[KEY_COUNT];
    size_t counts[KEY_COUNT];
    char digest[64]; /* DEBUG DIGEST of the whole dataset */
} Snapshot;

/* Tensors of every rank, special values, and results of every command,
 * small ones inline and big ones on worker threads. */
static void populate(redisContext *c) {
    static float values[24 * 4];
    module_test_random(values, 96, 1, 2.0);
    uint64_t vector = 96, matrix[2] = {8, 12}, cube[3] = {2, 6, 8}, four[4] = {2, 2, 4, 6};
    CHECK(module_test_tset(c, "p:vector", values, 1, &vector));
    CHECK(module_test_tset(c, "p:matrix", values, 2, matrix));
    CHECK(module_test_tset(c, "p:cube", values, 3, cube));
    CHECK(module_test_tset(c, "p:four", values, 4, four));
    float special[6] = {-0.0f, FLT_MAX, -FLT_MAX, 1e-45f, FLT_MIN, 0.1f};
    CHECK(module_test_tset_vector(c, "p:special", special, 6));
    CHECK(module_test_ok(c, "SPIRT.AVG", "p:avg", "p:vector", "p:vector", NULL));
    CHECK(module_test_ok(c, "SPIRT.AGG", "p:agg", "RULE", "median", "SRC", "3", "p:vector", "p:avg", "p:vector", NULL));
    CHECK(module_test_tset_vector(c, "p:params", values, 96));
    for (int t = 1; t <= 2; t++) {
        char step[16];
        snprintf(step, sizeof(step), "%d", t);
        CHECK(module_test_ok(c, "SPIRT.UPDATE", "p:params", "p:agg", "OPT", "adam", "LR", "0.01", "STEP", step, "STATE",
                             "p:state", NULL));
    }
    enum { BIG = 300000 };
    float *big = malloc(BIG * sizeof(float));
    module_test_random(big, BIG, 2, 1.0);
    CHECK(module_test_tset_vector(c, "p:big-1", big, BIG));
    module_test_random(big, BIG, 3, 1.0);
    CHECK(module_test_tset_vector(c, "p:big-2", big, BIG));
    free(big);
    CHECK(module_test_ok(c, "SPIRT.AVG", "p:big-avg", "p:big-1", "p:big-2", NULL));
    CHECK(module_test_ok(c, "SPIRT.AGG", "p:big-agg", "RULE", "geomed", "SRC", "3", "p:big-1", "p:big-2", "p:big-avg",
                         NULL));
    /* AVGUPDATE writes three keys: the mean, the parameters, the state. */
    redisReply *copied = module_test_command(c, "COPY", "p:big-agg", "p:big-params", "REPLACE", NULL);
    CHECK(copied && copied->type == REDIS_REPLY_INTEGER && copied->integer == 1);
    if (copied) freeReplyObject(copied);
    CHECK(module_test_ok(c, "SPIRT.AVGUPDATE", "p:big-params", "p:big-mean", "OPT", "momentum", "LR", "0.1", "STATE",
                         "p:big-state", "SRC", "2", "p:big-1", "p:big-2", NULL));
}

static void take_snapshot(redisContext *c, Snapshot *snapshot) {
    memset(snapshot, 0, sizeof(*snapshot));
    for (int i = 0; i < KEY_COUNT; i++) snapshot->values[i] = module_test_tget(c, tensor_keys[i], &snapshot->counts[i]);
    redisReply *digest = module_test_command(c, "DEBUG", "DIGEST", NULL);
    if (digest && digest->type == REDIS_REPLY_STATUS)
        snprintf(snapshot->digest, sizeof(snapshot->digest), "%s", digest->str);
    if (digest) freeReplyObject(digest);
}

static void free_snapshot(Snapshot *snapshot) {
    for (int i = 0; i < KEY_COUNT; i++) free(snapshot->values[i]);
}

static void check_same(redisContext *c, const Snapshot *before, const char *what) {
    Snapshot after;
    take_snapshot(c, &after);
    for (int i = 0; i < KEY_COUNT; i++) {
        int same = before->values[i] && after.values[i] && before->counts[i] == after.counts[i] &&
                   memcmp(before->values[i], after.values[i], before->counts[i] * sizeof(float)) == 0;
        CHECKF(same, "%s: %s differs", what, tensor_keys[i]);
    }
    CHECKF(before->digest[0] && strcmp(before->digest, after.digest) == 0, "%s: DEBUG DIGEST %s vs %s", what,
           before->digest, after.digest);
    free_snapshot(&after);
}

/* How a test starts its server: module arguments, server options, AOF,
 * and the data folder kept across restarts. */
typedef struct Setup {
    const char *const *module_arguments;
    const char *const *options;
    int appendonly;
    const char *dir;
} Setup;

/* Starts a server as `setup` says and connects; NULL (server stopped) on
 * failure. */
static redisContext *start_connected(TestRedis *server, const Setup *setup) {
    if (module_test_start(server, setup->module_arguments, setup->options, setup->appendonly, setup->dir) != 0)
        return NULL;
    redisContext *c = test_redis_connect(server);
    if (c == NULL) test_redis_stop(server);
    CHECK(c != NULL);
    return c;
}

/* Starts the server again on its folder and checks that it holds `before`.
 * Returns the connection, or NULL (server stopped). */
static redisContext *restart_and_compare(TestRedis *server, const Setup *setup, const Snapshot *before,
                                         const char *what) {
    redisContext *c = start_connected(server, setup);
    if (c) check_same(c, before, what);
    return c;
}

static void stop_connected(TestRedis *server, redisContext *c) {
    if (c) redisFree(c);
    test_redis_stop(server);
}

static const char *const mixed[] = {"INLINE_MAX", "100000", NULL};

static void test_rdb(void) {
    test_begin("RDB: SAVE and restart (and DEBUG RELOAD) give back bit-identical tensors");
    char dir[512];
    test_temp_path(dir, sizeof(dir), "rdb");
    const Setup setup = {mixed, NULL, 0, dir};
    TestRedis server;
    redisContext *c = start_connected(&server, &setup);
    if (c == NULL) return;
    Snapshot before;
    populate(c);
    take_snapshot(c, &before);
    CHECK(module_test_ok(c, "SAVE", NULL));
    stop_connected(&server, c);
    c = restart_and_compare(&server, &setup, &before, "after RDB restart");
    if (c) {
        /* DEBUG RELOAD saves and loads within the running server. */
        CHECK(module_test_ok(c, "DEBUG", "RELOAD", NULL));
        check_same(c, &before, "after DEBUG RELOAD");
    }
    stop_connected(&server, c);
    free_snapshot(&before);
}

static int wait_rewrite(redisContext *c) {
    for (int i = 0; i < 3000; i++) {
        if (module_test_info_field(c, "persistence", "aof_rewrite_in_progress") == 0 &&
            module_test_info_field(c, "persistence", "aof_rewrite_scheduled") == 0)
            return 1;
        clock_sleep_ms(10);
    }
    return 0;
}

static void test_aof(void) {
    test_begin("AOF: crash and restart, then BGREWRITEAOF (aof_rewrite) and restart: bit-identical");
    char dir[512];
    test_temp_path(dir, sizeof(dir), "aof");
    static const char *const aof_options[] = {"--aof-use-rdb-preamble", "no", "--appendfsync", "always", NULL};
    const Setup setup = {mixed, aof_options, 1, dir};
    TestRedis server;
    redisContext *c = start_connected(&server, &setup);
    if (c == NULL) return;
    Snapshot before;
    populate(c);
    take_snapshot(c, &before);
    redisFree(c);
    test_redis_kill(&server); /* a crash: only what reached the AOF counts */
    c = restart_and_compare(&server, &setup, &before, "after AOF replay");
    if (c) {
        redisReply *rewrite = module_test_command(c, "BGREWRITEAOF", NULL);
        CHECK(rewrite && rewrite->type == REDIS_REPLY_STATUS);
        if (rewrite) freeReplyObject(rewrite);
        CHECK(wait_rewrite(c));
        /* Writes after the rewrite land in the new incremental file. */
        CHECK(module_test_ok(c, "SPIRT.AVG", "p:avg", "p:agg", "p:vector", NULL));
        CHECK(module_test_ok(c, "SPIRT.UPDATE", "p:params", "p:agg", "OPT", "adam", "LR", "0.01", "STEP", "3", "STATE",
                             "p:state", NULL));
        free_snapshot(&before);
        take_snapshot(c, &before);
        stop_connected(&server, c);
        stop_connected(&server, restart_and_compare(&server, &setup, &before, "after AOF rewrite and restart"));
    }
    free_snapshot(&before);
}

/* --- Crafted RDB payloads ---------------------------------------------------- */

/* CRC-64/Jones, reflected (what Redis appends to DUMP payloads). */
static uint64_t crc64_jones(uint64_t crc, const unsigned char *bytes, size_t length) {
    for (size_t i = 0; i < length; i++) {
        crc ^= bytes[i];
        for (int bit = 0; bit < 8; bit++) crc = (crc & 1) ? (crc >> 1) ^ 0x95AC9329AC4BC9B5ULL : crc >> 1;
    }
    return crc;
}

typedef struct Payload {
    unsigned char bytes[4096];
    size_t length;
} Payload;

static void put(Payload *payload, const void *bytes, size_t length) {
    memcpy(payload->bytes + payload->length, bytes, length);
    payload->length += length;
}

/* RDB length encoding: 6-bit, 14-bit, 32-bit or 64-bit big-endian. */
static void put_length(Payload *payload, uint64_t value) {
    unsigned char buffer[9];
    if (value < 64) {
        buffer[0] = (unsigned char)value;
        put(payload, buffer, 1);
    } else if (value < 16384) {
        buffer[0] = (unsigned char)(0x40 | (value >> 8));
        buffer[1] = (unsigned char)value;
        put(payload, buffer, 2);
    } else if (value <= 0xffffffffULL) {
        buffer[0] = 0x80;
        for (int i = 0; i < 4; i++) buffer[1 + i] = (unsigned char)(value >> (24 - 8 * i));
        put(payload, buffer, 5);
    } else {
        buffer[0] = 0x81;
        for (int i = 0; i < 8; i++) buffer[1 + i] = (unsigned char)(value >> (56 - 8 * i));
        put(payload, buffer, 9);
    }
}

enum { OPCODE_EOF = 0, OPCODE_UINT = 2, OPCODE_STRING = 5, RDB_TYPE_MODULE_2 = 7 };

typedef struct Crafted {
    int encoding_version;
    uint64_t dtype, ndim, dims[5];
    int dims_given; /* how many dims to write */
    const float *values;
    size_t value_bytes; /* bytes of the values string */
    int truncate;       /* stop after the dims */
} Crafted;

/* A DUMP payload for `crafted`, with the module id (the type's name and
 * encoding version) taken from a real DUMP and a valid checksum. */
static void craft(Payload *payload, uint64_t module_id, const unsigned char version[2], const Crafted *crafted) {
    payload->length = 0;
    unsigned char type = RDB_TYPE_MODULE_2;
    put(payload, &type, 1);
    put_length(payload, (module_id & ~1023ULL) | (uint64_t)crafted->encoding_version);
    put_length(payload, OPCODE_UINT);
    put_length(payload, crafted->dtype);
    put_length(payload, OPCODE_UINT);
    put_length(payload, crafted->ndim);
    for (int i = 0; i < crafted->dims_given; i++) {
        put_length(payload, OPCODE_UINT);
        put_length(payload, crafted->dims[i]);
    }
    if (!crafted->truncate) {
        put_length(payload, OPCODE_STRING);
        put_length(payload, crafted->value_bytes);
        put(payload, crafted->values, crafted->value_bytes);
        put_length(payload, OPCODE_EOF);
    }
    put(payload, version, 2);
    uint64_t crc = crc64_jones(0, payload->bytes, payload->length);
    unsigned char trailer[8];
    for (int i = 0; i < 8; i++) trailer[i] = (unsigned char)(crc >> (8 * i));
    put(payload, trailer, 8);
}

static redisReply *restore(redisContext *c, const char *key, const Payload *payload) {
    const char *argv[] = {"RESTORE", key, "0", (const char *)payload->bytes};
    size_t lengths[] = {7, strlen(key), 1, payload->length};
    return redisCommandArgv(c, 4, argv, lengths);
}

static void test_restore_payloads(void) {
    test_begin("RDB loader: crafted DUMP payloads are refused field by field");
    CHECK(crc64_jones(0, (const unsigned char *)"123456789", 9) == 0xe9c6d914c4b8d9caULL);
    TestRedis server;
    if (module_test_start(&server, NULL, NULL, 0, NULL) != 0) return;
    redisContext *c = test_redis_connect(&server);
    if (c == NULL) {
        test_redis_stop(&server);
        return;
    }
    float values[6] = {1, 2, 3, 4, 5, 6};
    uint64_t shape[2] = {2, 3};
    CHECK(module_test_tset(c, "r:source", values, 2, shape));
    redisReply *dump = module_test_command(c, "DUMP", "r:source", NULL);
    CHECK(dump && dump->type == REDIS_REPLY_STRING && dump->len > 20 &&
          (unsigned char)dump->str[0] == RDB_TYPE_MODULE_2 && (unsigned char)dump->str[1] == 0x81);
    if (dump && dump->type == REDIS_REPLY_STRING && dump->len > 20) {
        uint64_t module_id = 0;
        for (int i = 0; i < 8; i++) module_id = (module_id << 8) | (unsigned char)dump->str[2 + i];
        CHECK((module_id & 1023) == 1); /* the encoding version */
        unsigned char version[2] = {(unsigned char)dump->str[dump->len - 10], (unsigned char)dump->str[dump->len - 9]};
        /* The real payload restores to an identical tensor. */
        Payload real = {.length = dump->len};
        memcpy(real.bytes, dump->str, dump->len);
        CHECK(module_test_reply_ok(restore(c, "r:copy", &real)));
        size_t count = 0;
        float *back = module_test_tget(c, "r:copy", &count);
        CHECK(back && count == 6 && memcmp(back, values, sizeof(values)) == 0);
        free(back);

        float poisoned[6] = {1, 2, 3, NAN, 5, 6};
        const Crafted good = {1, 1, 2, {2, 3}, 2, values, sizeof(values), 0};
        Crafted cases[10];
        const char *names[10];
        int n = 0;
        cases[n] = good, names[n++] = "a well-formed payload"; /* our encoder is right */
        cases[n] = good, cases[n].encoding_version = 2, names[n++] = "unknown encoding version";
        cases[n] = good, cases[n].dtype = 2, names[n++] = "unknown dtype";
        cases[n] = good, cases[n].ndim = 0, cases[n].dims_given = 0, names[n++] = "zero dimensions";
        cases[n] = good, cases[n].ndim = 5, cases[n].dims_given = 5,
        cases[n].dims[2] = cases[n].dims[3] = cases[n].dims[4] = 1, names[n++] = "five dimensions";
        cases[n] = good, cases[n].dims[0] = 0, names[n++] = "a zero dimension";
        cases[n] = good, cases[n].dims[0] = 1ULL << 40, cases[n].dims[1] = 1ULL << 40, names[n++] = "a shape too large";
        cases[n] = good, cases[n].value_bytes = 20, names[n++] = "values shorter than the shape";
        cases[n] = good, cases[n].values = poisoned, names[n++] = "a NaN";
        cases[n] = good, cases[n].truncate = 1, names[n++] = "a truncated payload";
        for (int i = 0; i < n; i++) {
            Payload payload;
            craft(&payload, module_id, version, &cases[i]);
            char key[32];
            snprintf(key, sizeof(key), "r:crafted:%d", i);
            redisReply *reply = restore(c, key, &payload);
            if (i == 0) {
                CHECKF(module_test_is_ok(reply), "%s: %s", names[i], reply && reply->str ? reply->str : "?");
            } else {
                CHECKF(reply && reply->type == REDIS_REPLY_ERROR, "%s was accepted", names[i]);
                redisReply *exists = module_test_command(c, "EXISTS", key, NULL);
                CHECKF(exists && exists->integer == 0, "%s left a key", names[i]);
                if (exists) freeReplyObject(exists);
            }
            if (reply) freeReplyObject(reply);
            CHECKF(module_test_ping(c), "server gone after %s", names[i]);
        }
    }
    if (dump) freeReplyObject(dump);
    redisFree(c);
    CHECK(test_redis_alive(&server));
    test_redis_stop(&server);
    /* Each refusal was the loader's own check, as its log lines say. */
    static const char *const reasons[] = {"encoding version 2 is unknown",
                                          "dtype 2 is unknown",
                                          "with 0 dimensions",
                                          "with 5 dimensions",
                                          "dimension 0 is 0",
                                          "too large",
                                          "payload has 20 bytes, its shape needs 24",
                                          "value 3 is not finite"};
    FILE *log = fopen(server.log_path, "r");
    static char text[1 << 16];
    size_t length = log ? fread(text, 1, sizeof(text) - 1, log) : 0;
    text[length] = '\0';
    if (log) fclose(log);
    for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
        CHECKF(strstr(text, reasons[i]) != NULL, "the server log does not say '%s'", reasons[i]);
}

/* --- Replication -------------------------------------------------------------- */

static int wait_link_up(redisContext *replica) {
    for (int i = 0; i < 2000; i++) {
        redisReply *reply = module_test_command(replica, "INFO", "replication", NULL);
        int up = reply && reply->type == REDIS_REPLY_STRING && strstr(reply->str, "master_link_status:up");
        if (reply) freeReplyObject(reply);
        if (up) return 1;
        clock_sleep_ms(10);
    }
    return 0;
}

static void test_replication(void) {
    test_begin("replication: AVG, AGG and UPDATE reach a replica bit for bit");
    static const char *const master_options[] = {"--repl-diskless-sync-delay", "0", NULL};
    TestRedis master, replica;
    if (module_test_start(&master, mixed, master_options, 0, NULL) != 0) return;
    char port[16];
    snprintf(port, sizeof(port), "%d", master.port);
    const char *replica_options[] = {"--replicaof", "127.0.0.1", port, NULL};
    if (module_test_start(&replica, NULL, replica_options, 0, NULL) != 0) {
        test_redis_stop(&master);
        return;
    }
    redisContext *m = test_redis_connect(&master), *r = test_redis_connect(&replica);
    if (m && r && wait_link_up(r)) {
        populate(m);
        /* A second round on top, so that the replica applies updates of
         * tensors it already holds. */
        CHECK(module_test_ok(m, "SPIRT.UPDATE", "p:params", "p:avg", "OPT", "adam", "LR", "0.01", "STEP", "3", "STATE",
                             "p:state", NULL));
        CHECK(module_test_ok(m, "SPIRT.AGG", "p:big-agg", "RULE", "trimmed-mean", "TRIM", "1", "SRC", "4", "p:big-1",
                             "p:big-2", "p:big-avg", "p:big-agg", NULL));
        redisReply *waited = module_test_command(m, "WAIT", "1", "10000", NULL);
        CHECK(waited && waited->type == REDIS_REPLY_INTEGER && waited->integer == 1);
        if (waited) freeReplyObject(waited);
        Snapshot on_master;
        take_snapshot(m, &on_master);
        check_same(r, &on_master, "on the replica");
        free_snapshot(&on_master);
    } else {
        CHECK(!"replica did not connect");
    }
    if (m) redisFree(m);
    if (r) redisFree(r);
    test_redis_stop(&replica);
    test_redis_stop(&master);
}

int main(void) {
    test_rdb();
    test_aof();
    test_restore_payloads();
    test_replication();
    return test_finish();
}
