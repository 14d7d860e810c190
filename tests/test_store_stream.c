/* test_store_stream.c -- the invocation-queue helpers against a real Redis.
 *
 * One stream, one consumer group, two workers (consumers A and B): entries
 * are added with binary payloads, delivered once each, acknowledged,
 * reclaimed from a worker that stopped (XAUTOCLAIM), and read back from a
 * worker's own pending list. Every expectation is checked against the
 * server's own view (XPENDING, XLEN), not only against what the helpers
 * return.
 *
 * SPIRT_TEST_LABELS: db */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis_fixture.h"
#include "spirt/store.h"
#include "test.h"

/* The consumer that owns pending entry `id`, per XPENDING, into owner. */
static int pending_owner(StoreConn *conn, const char *id, char *owner, size_t size) {
    StoreReply *reply = NULL;
    SpirtError error;
    owner[0] = '\0';
    if (store_command(conn, &reply, &error, "XPENDING jobs workers %s %s 1", id, id) != SPIRT_OK) return -1;
    int found = reply->type == STORE_REPLY_ARRAY && reply->elements == 1;
    if (found) snprintf(owner, size, "%s", reply->element[0]->element[1]->str);
    store_reply_free(reply);
    return found ? 0 : -1;
}

static void test_streams(const TestRedis *redis) {
    SpirtError error;
    StoreOptions options = {.port = redis->port, .read_timeout_ms = 1000};
    StoreConn *conn = store_connect(&options, &error);
    CHECK_OK(conn ? SPIRT_OK : error.code, &error);
    if (conn == NULL) return;

    test_begin("group creation is idempotent");
    CHECK_OK(store_xgroup_create(conn, "jobs", "workers", "$", &error), &error);
    CHECK_OK(store_xgroup_create(conn, "jobs", "workers", NULL, &error), &error); /* already there: fine */
    CHECK_ERROR(store_xgroup_create(conn, "jobs", "workers", "not-an-id", &error), SPIRT_ERR_SERVER, &error, "ID");

    test_begin("XADD with binary payloads");
    char ids[3][STORE_STREAM_ID_SIZE];
    const char payload[] = {'{', 0, '\r', '\n', (char)0xff, '}'};
    for (int i = 0; i < 3; i++) {
        char event[32];
        snprintf(event, sizeof(event), "{\"batch\": %d}", i);
        const char *fields[] = {"fn", "event", "raw"};
        const char *values[] = {"gradient", event, payload};
        const size_t lengths[] = {8, strlen(event), sizeof(payload)};
        CHECK_OK(store_xadd(conn, "jobs", 3, fields, values, lengths, 0, ids[i], &error), &error);
    }
    CHECK(strcmp(ids[0], ids[1]) != 0 && strchr(ids[0], '-') != NULL);
    const char *bad_fields[] = {"fn"};
    const char *bad_values[] = {NULL};
    CHECK(store_xadd(conn, "jobs", 1, bad_fields, bad_values, NULL, 0, NULL, &error) == SPIRT_ERR_INVALID);

    test_begin("XREADGROUP delivers each entry once");
    StoreStreamBatch *batch = NULL;
    CHECK_OK(store_xreadgroup(conn, "jobs", "workers", "A", NULL, 2, 0, &batch, &error), &error);
    CHECK(batch && batch->count == 2);
    if (batch && batch->count == 2) {
        CHECK(strcmp(batch->entries[0].id, ids[0]) == 0 && strcmp(batch->entries[1].id, ids[1]) == 0);
        const StoreStreamEntry *entry = &batch->entries[1];
        CHECK(entry->field_count == 3);
        size_t length = 0;
        const char *value = store_stream_entry_value(entry, "event", &length);
        CHECK(value && length == strlen("{\"batch\": 1}") && memcmp(value, "{\"batch\": 1}", length) == 0);
        value = store_stream_entry_value(entry, "raw", &length);
        CHECK(value && length == sizeof(payload) && memcmp(value, payload, sizeof(payload)) == 0);
        CHECK(store_stream_entry_value(entry, "absent", NULL) == NULL);
        CHECK(strcmp(store_stream_entry_value(entry, "fn", NULL), "gradient") == 0);
    }
    store_stream_batch_free(batch);
    /* BLOCK longer than the 1 s read time-out: the wait is extended, so an
     * empty read is a normal, empty answer and not a time-out. */
    CHECK_OK(store_xreadgroup(conn, "jobs", "workers", "B", NULL, 10, 1500, &batch, &error), &error);
    CHECK(batch && batch->count == 1 && strcmp(batch->entries[0].id, ids[2]) == 0);
    store_stream_batch_free(batch);
    CHECK_OK(store_xreadgroup(conn, "jobs", "workers", "B", NULL, 10, 1500, &batch, &error), &error);
    CHECK(batch && batch->count == 0);
    store_stream_batch_free(batch);
    CHECK(store_conn_status(conn) == SPIRT_OK);

    test_begin("XACK");
    int acknowledged = -1;
    CHECK_OK(store_xack(conn, "jobs", "workers", ids[0], &acknowledged, &error), &error);
    CHECK(acknowledged == 1);
    CHECK_OK(store_xack(conn, "jobs", "workers", ids[0], &acknowledged, &error), &error);
    CHECK(acknowledged == 0);
    char owner[64];
    CHECK(pending_owner(conn, ids[0], owner, sizeof(owner)) != 0); /* no longer pending */
    CHECK(pending_owner(conn, ids[1], owner, sizeof(owner)) == 0 && strcmp(owner, "A") == 0);

    test_begin("XAUTOCLAIM takes over another worker's entry");
    /* Nothing has been idle for a minute yet. */
    CHECK_OK(store_xautoclaim(conn, "jobs", "workers", "B", 60000, NULL, 10, &batch, &error), &error);
    CHECK(batch && batch->count == 0 && strcmp(batch->next_id, "0-0") == 0);
    store_stream_batch_free(batch);
    /* min idle 0: B takes A's entry 1 (and re-takes its own entry 2). */
    CHECK_OK(store_xautoclaim(conn, "jobs", "workers", "B", 0, "0-0", 10, &batch, &error), &error);
    CHECK(batch && batch->count == 2 && strcmp(batch->next_id, "0-0") == 0);
    if (batch && batch->count == 2) {
        CHECK(strcmp(batch->entries[0].id, ids[1]) == 0);
        size_t length = 0;
        const char *value = store_stream_entry_value(&batch->entries[0], "raw", &length);
        CHECK(value && length == sizeof(payload) && memcmp(value, payload, sizeof(payload)) == 0);
    }
    store_stream_batch_free(batch);
    CHECK(pending_owner(conn, ids[1], owner, sizeof(owner)) == 0 && strcmp(owner, "B") == 0);
    /* A's own pending list is now empty; B's holds both. */
    CHECK_OK(store_xreadgroup(conn, "jobs", "workers", "A", "0", 10, 0, &batch, &error), &error);
    CHECK(batch && batch->count == 0);
    store_stream_batch_free(batch);
    CHECK_OK(store_xautoclaim(conn, "jobs", "workers", "B", 0, "0-0", 1, &batch, &error), &error);
    CHECK(batch && batch->count == 1 && strcmp(batch->next_id, ids[2]) == 0); /* a cursor to go on from */
    store_stream_batch_free(batch);

    test_begin("pending entries deleted from the stream");
    CHECK_OK(store_command(conn, NULL, &error, "XDEL jobs %s", ids[2]), &error);
    CHECK_OK(store_xreadgroup(conn, "jobs", "workers", "B", "0", 10, 0, &batch, &error), &error);
    CHECK(batch && batch->count == 2);
    if (batch && batch->count == 2) {
        CHECK(strcmp(batch->entries[0].id, ids[1]) == 0 && batch->entries[0].field_count == 3);
        CHECK(strcmp(batch->entries[1].id, ids[2]) == 0 && batch->entries[1].field_count == 0);
    }
    store_stream_batch_free(batch);
    /* XAUTOCLAIM drops deleted entries from the pending list and does not
     * return them. */
    CHECK_OK(store_xautoclaim(conn, "jobs", "workers", "A", 0, NULL, 10, &batch, &error), &error);
    CHECK(batch && batch->count == 1 && strcmp(batch->entries[0].id, ids[1]) == 0);
    store_stream_batch_free(batch);
    CHECK(pending_owner(conn, ids[2], owner, sizeof(owner)) != 0);

    test_begin("trimming and errors");
    for (int i = 0; i < 500; i++) {
        const char *fields[] = {"n"};
        const char *values[] = {"x"};
        CHECK_OK(store_xadd(conn, "trimmed", 1, fields, values, NULL, 100, NULL, &error), &error);
    }
    StoreReply *reply = NULL;
    CHECK_OK(store_command(conn, &reply, &error, "XLEN trimmed"), &error);
    /* "~" trims in whole nodes: about 100, never all 500. */
    CHECK(reply && reply->integer >= 100 && reply->integer < 500);
    store_reply_free(reply);
    CHECK_ERROR(store_xreadgroup(conn, "jobs", "nogroup", "A", NULL, 1, 0, &batch, &error), SPIRT_ERR_SERVER, &error,
                "NOGROUP");
    CHECK(batch == NULL);
    CHECK_OK(store_set(conn, "plain", "x", 1, &error), &error);
    CHECK_ERROR(store_xgroup_create(conn, "plain", "g", "0", &error), SPIRT_ERR_SERVER, &error, "WRONGTYPE");
    CHECK(store_conn_status(conn) == SPIRT_OK);
    store_free(conn);
}

int main(void) {
    TestRedis redis;
    if (test_redis_start(&redis, NULL) != 0) {
        CHECK(!"redis-server did not start");
        return test_finish();
    }
    test_streams(&redis);
    test_redis_stop(&redis);
    return test_finish();
}
