/* stream.c -- Redis Streams helpers for the function-invocation queue.
 *
 * A peer appends invocations to a stream (XADD); warm workers in one
 * consumer group take them (XREADGROUP), acknowledge them when done
 * (XACK), and take over the ones a dead or stuck worker left pending
 * (XAUTOCLAIM). These helpers are thin: one command each, with the reply
 * checked and turned into a StoreStreamBatch whose fields point into the
 * reply itself (no copies of the payloads). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spirt/store.h"
#include "store/conn.h"

static int is_string(const StoreReply *reply) { return reply != NULL && reply->type == STORE_REPLY_STRING; }

static int is_array(const StoreReply *reply, size_t minimum) {
    return reply != NULL && reply->type == STORE_REPLY_ARRAY && reply->elements >= minimum;
}

/* An entry is [id, [name, value, ...]] or [id, nil] (deleted meanwhile). */
static int entry_is_valid(const StoreReply *entry) {
    if (!is_array(entry, 2) || entry->elements != 2 || !is_string(entry->element[0])) return 0;
    const StoreReply *fields = entry->element[1];
    if (fields->type == STORE_REPLY_NIL) return 1;
    if (fields->type != STORE_REPLY_ARRAY || fields->elements % 2 != 0) return 0;
    for (size_t i = 0; i < fields->elements; i++)
        if (!is_string(fields->element[i])) return 0;
    return 1;
}

void store_stream_batch_free(StoreStreamBatch *batch) {
    if (batch == NULL) return;
    free((void *)batch->entries); /* entries and their fields: one block */
    store_reply_free(batch->reply);
    free(batch);
}

/* Builds a batch from `entries` (an array inside `reply`, or NULL for
 * none). Takes ownership of `reply` whatever happens. */
static int make_batch(StoreConn *conn, StoreReply *reply, const StoreReply *entries, const char *what,
                      StoreStreamBatch **out, SpirtError *error) {
    size_t count = entries ? entries->elements : 0, field_total = 0;
    for (size_t i = 0; i < count; i++) {
        if (!entry_is_valid(entries->element[i])) {
            int status = store_unexpected_reply(conn, entries->element[i], what, error);
            store_reply_free(reply);
            return status;
        }
        const StoreReply *fields = entries->element[i]->element[1];
        if (fields->type == STORE_REPLY_ARRAY) field_total += fields->elements / 2;
    }
    StoreStreamBatch *batch = calloc(1, sizeof(*batch));
    void *block = NULL;
    if (batch != NULL && count > 0)
        block = calloc(1, count * sizeof(StoreStreamEntry) + field_total * sizeof(StoreStreamField));
    if (batch == NULL || (count > 0 && block == NULL)) {
        free(batch);
        store_reply_free(reply);
        return spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory for %zu stream entries", count);
    }
    StoreStreamEntry *entry_array = block;
    StoreStreamField *field_array = (StoreStreamField *)(entry_array + count);
    for (size_t i = 0; i < count; i++) {
        const StoreReply *item = entries->element[i];
        const StoreReply *fields = item->element[1];
        StoreStreamEntry *entry = &entry_array[i];
        entry->id = item->element[0]->str;
        entry->fields = field_array;
        entry->field_count = fields->type == STORE_REPLY_ARRAY ? fields->elements / 2 : 0;
        for (size_t f = 0; f < entry->field_count; f++) {
            const StoreReply *name = fields->element[2 * f], *value = fields->element[2 * f + 1];
            field_array[f] = (StoreStreamField){name->str, name->len, value->str, value->len};
        }
        field_array += entry->field_count;
    }
    batch->count = count;
    batch->entries = entry_array;
    batch->reply = reply;
    snprintf(batch->next_id, sizeof(batch->next_id), "0-0");
    *out = batch;
    return SPIRT_OK;
}

const char *store_stream_entry_value(const StoreStreamEntry *entry, const char *name, size_t *length) {
    if (entry == NULL || name == NULL) return NULL;
    size_t name_length = strlen(name);
    for (size_t i = 0; i < entry->field_count; i++) {
        const StoreStreamField *field = &entry->fields[i];
        if (field->name_length == name_length && memcmp(field->name, name, name_length) == 0) {
            if (length != NULL) *length = field->value_length;
            return field->value;
        }
    }
    return NULL;
}

int store_xgroup_create(StoreConn *conn, const char *stream, const char *group, const char *start_id,
                        SpirtError *error) {
    if (stream == NULL || group == NULL)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "XGROUP CREATE: no stream or group");
    const char *argv[] = {"XGROUP", "CREATE", stream, group, start_id ? start_id : "$", "MKSTREAM"};
    StoreReply *reply = NULL;
    SpirtError local;
    int status = store_command_argv(conn, 6, argv, NULL, &reply, &local);
    /* Another worker created it first: exactly the state we wanted. */
    if (status == SPIRT_ERR_SERVER && strncmp(local.message, "BUSYGROUP", 9) == 0) status = SPIRT_OK;
    else if (status != SPIRT_OK && error != NULL) *error = local;
    else if (status == SPIRT_OK && reply->type != STORE_REPLY_STATUS)
        status = store_unexpected_reply(conn, reply, "XGROUP CREATE", error);
    store_reply_free(reply);
    return status;
}

int store_xadd(StoreConn *conn, const char *stream, size_t field_count, const char *const *fields,
               const char *const *values, const size_t *value_lengths, size_t max_length,
               char id[STORE_STREAM_ID_SIZE], SpirtError *error) {
    if (stream == NULL || field_count == 0 || fields == NULL || values == NULL)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "XADD: no stream or no fields");
    if (field_count > (1u << 20))
        return spirt_error_set(error, SPIRT_ERR_INVALID, "XADD: %zu fields is too many", field_count);
    size_t argc = 0, capacity = 6 + 2 * field_count;
    const char **argv = malloc(capacity * sizeof(*argv));
    size_t *lengths = malloc(capacity * sizeof(*lengths));
    if (argv == NULL || lengths == NULL) {
        free(argv);
        free(lengths);
        return spirt_error_set(error, SPIRT_ERR_NOMEM, "XADD: out of memory");
    }
    char limit[24];
    argv[argc++] = "XADD";
    argv[argc++] = stream;
    if (max_length > 0) {
        /* "~": trim in whole radix-tree nodes, which is far cheaper. */
        snprintf(limit, sizeof(limit), "%zu", max_length);
        argv[argc++] = "MAXLEN";
        argv[argc++] = "~";
        argv[argc++] = limit;
    }
    argv[argc++] = "*";
    for (size_t i = 0; i < argc; i++) lengths[i] = strlen(argv[i]);
    int status = SPIRT_OK;
    for (size_t i = 0; i < field_count; i++) {
        int has_value = values[i] != NULL || (value_lengths != NULL && value_lengths[i] == 0);
        if (fields[i] == NULL || !has_value) {
            status = spirt_error_set(error, SPIRT_ERR_INVALID, "XADD %s: field %zu has no name or value", stream, i);
            break;
        }
        argv[argc] = fields[i];
        lengths[argc++] = strlen(fields[i]);
        argv[argc] = values[i] ? values[i] : "";
        lengths[argc++] = value_lengths ? value_lengths[i] : strlen(values[i]);
    }
    StoreReply *reply = NULL;
    if (status == SPIRT_OK) status = store_command_argv(conn, argc, argv, lengths, &reply, error);
    free(argv);
    free(lengths);
    if (status != SPIRT_OK) return status;
    if (!is_string(reply) || reply->len >= STORE_STREAM_ID_SIZE)
        status = store_unexpected_reply(conn, reply, "XADD", error);
    else if (id != NULL)
        memcpy(id, reply->str, reply->len + 1);
    store_reply_free(reply);
    return status;
}

int store_xreadgroup(StoreConn *conn, const char *stream, const char *group, const char *consumer,
                     const char *id, size_t count, int block_ms, StoreStreamBatch **batch, SpirtError *error) {
    if (batch != NULL) *batch = NULL;
    if (stream == NULL || group == NULL || consumer == NULL || batch == NULL)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "XREADGROUP: no stream, group, consumer or batch");
    char count_text[24], block_text[24];
    snprintf(count_text, sizeof(count_text), "%zu", count > 0 ? count : 1);
    snprintf(block_text, sizeof(block_text), "%d", block_ms);
    const char *argv[12];
    size_t argc = 0;
    argv[argc++] = "XREADGROUP";
    argv[argc++] = "GROUP";
    argv[argc++] = group;
    argv[argc++] = consumer;
    argv[argc++] = "COUNT";
    argv[argc++] = count_text;
    /* BLOCK 0 would mean "forever" to Redis: never sent, so a call always
     * ends within block_ms plus the read time-out. */
    if (block_ms > 0) {
        argv[argc++] = "BLOCK";
        argv[argc++] = block_text;
    }
    argv[argc++] = "STREAMS";
    argv[argc++] = stream;
    argv[argc++] = id ? id : ">";
    StoreReply *reply = NULL;
    const StoreCallOptions call = {.extra_wait_ms = block_ms > 0 ? block_ms : 0};
    int status = store_command_argv_with(conn, argc, argv, NULL, &call, &reply, error);
    if (status != SPIRT_OK) return status;
    if (reply->type == STORE_REPLY_NIL) return make_batch(conn, reply, NULL, "XREADGROUP", batch, error);
    /* [[stream, [entry, ...]]]: one stream was asked for. */
    const StoreReply *streams = reply;
    if (!is_array(streams, 1) || !is_array(streams->element[0], 2) || !is_array(streams->element[0]->element[1], 0)) {
        status = store_unexpected_reply(conn, reply, "XREADGROUP", error);
        store_reply_free(reply);
        return status;
    }
    return make_batch(conn, reply, streams->element[0]->element[1], "XREADGROUP", batch, error);
}

int store_xack(StoreConn *conn, const char *stream, const char *group, const char *id, int *acknowledged,
               SpirtError *error) {
    if (stream == NULL || group == NULL || id == NULL)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "XACK: no stream, group or id");
    const char *argv[] = {"XACK", stream, group, id};
    StoreReply *reply = NULL;
    int status = store_command_argv(conn, 4, argv, NULL, &reply, error);
    if (status != SPIRT_OK) return status;
    if (reply->type != STORE_REPLY_INTEGER)
        status = store_unexpected_reply(conn, reply, "XACK", error);
    else if (acknowledged != NULL)
        *acknowledged = reply->integer > 0;
    store_reply_free(reply);
    return status;
}

int store_xautoclaim(StoreConn *conn, const char *stream, const char *group, const char *consumer,
                     int64_t min_idle_ms, const char *start_id, size_t count, StoreStreamBatch **batch,
                     SpirtError *error) {
    if (batch != NULL) *batch = NULL;
    if (stream == NULL || group == NULL || consumer == NULL || batch == NULL || min_idle_ms < 0)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "XAUTOCLAIM: missing argument or negative idle time");
    char idle_text[24], count_text[24];
    snprintf(idle_text, sizeof(idle_text), "%lld", (long long)min_idle_ms);
    snprintf(count_text, sizeof(count_text), "%zu", count > 0 ? count : 1);
    const char *argv[] = {"XAUTOCLAIM", stream, group, consumer, idle_text, start_id ? start_id : "0-0",
                          "COUNT", count_text};
    StoreReply *reply = NULL;
    int status = store_command_argv(conn, 8, argv, NULL, &reply, error);
    if (status != SPIRT_OK) return status;
    /* [next-id, [entry, ...]] (Redis 6.2), plus [deleted-id, ...] (7.0). */
    if (!is_array(reply, 2) || !is_string(reply->element[0]) || reply->element[0]->len >= STORE_STREAM_ID_SIZE ||
        !is_array(reply->element[1], 0)) {
        status = store_unexpected_reply(conn, reply, "XAUTOCLAIM", error);
        store_reply_free(reply);
        return status;
    }
    char next_id[STORE_STREAM_ID_SIZE];
    memcpy(next_id, reply->element[0]->str, reply->element[0]->len + 1);
    status = make_batch(conn, reply, reply->element[1], "XAUTOCLAIM", batch, error);
    if (status == SPIRT_OK) memcpy((*batch)->next_id, next_id, sizeof(next_id));
    return status;
}
