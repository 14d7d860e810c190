/* reply.c -- StoreReply objects, built by hiredis's reader (see reply.h).
 *
 * hiredis 0.14 calls these functions as it parses: each object is created
 * once its bytes are complete and linked into its parent array at the
 * index the reader gives. If a function returns NULL the reader stops with
 * an "out of memory" error and frees the partial tree through freeObject;
 * the connection tells a refused budget from a real allocation failure by
 * budget->exceeded. */
#include "store/reply.h"

#include <stdlib.h>
#include <string.h>

#include "spirt/store.h"

/* Charges `bytes` to the reply under construction; 0 when over budget. */
static int budget_take(const redisReadTask *task, size_t bytes) {
    StoreReplyBudget *budget = task->privdata;
    if (budget == NULL) return 1;
    if (budget->used > budget->limit || bytes > budget->limit - budget->used) {
        budget->exceeded = 1;
        return 0;
    }
    budget->used += bytes;
    return 1;
}

/* Refuses an object the protocol cannot describe (returns NULL). */
static void *malformed(const redisReadTask *task) {
    StoreReplyBudget *budget = task->privdata;
    if (budget != NULL) budget->malformed = 1;
    return NULL;
}

/* A new object of `type`, linked into its parent array if it has one. */
static StoreReply *create_object(const redisReadTask *task, StoreReplyType type, size_t payload_bytes) {
    if (task->parent != NULL) {
        StoreReply *parent = task->parent->obj;
        /* The reader guarantees this; checked because a broken invariant
         * here would be a write out of bounds. */
        if (parent == NULL || parent->type != STORE_REPLY_ARRAY || task->idx < 0 ||
            (size_t)task->idx >= parent->elements)
            return malformed(task);
    }
    if (!budget_take(task, sizeof(StoreReply) + payload_bytes)) return NULL;
    StoreReply *reply = calloc(1, sizeof(*reply));
    if (reply == NULL) return NULL;
    reply->type = type;
    return reply;
}

static void *link_to_parent(const redisReadTask *task, StoreReply *reply) {
    if (task->parent != NULL) {
        StoreReply *parent = task->parent->obj;
        parent->element[task->idx] = reply;
    }
    return reply;
}

static void *create_string(const redisReadTask *task, char *text, size_t length) {
    StoreReplyType type;
    switch (task->type) {
    case REDIS_REPLY_ERROR: type = STORE_REPLY_ERROR; break;
    case REDIS_REPLY_STATUS: type = STORE_REPLY_STATUS; break;
    case REDIS_REPLY_STRING: type = STORE_REPLY_STRING; break;
    default: return malformed(task);
    }
    if (length == (size_t)-1) return malformed(task);
    StoreReply *reply = create_object(task, type, length + 1);
    if (reply == NULL) return NULL;
    reply->str = malloc(length + 1);
    if (reply->str == NULL) {
        free(reply);
        return NULL;
    }
    memcpy(reply->str, text, length);
    reply->str[length] = '\0'; /* text replies usable as C strings */
    reply->len = length;
    return link_to_parent(task, reply);
}

static void *create_array(const redisReadTask *task, int elements) {
    if (elements < 0) return malformed(task);
    StoreReply *reply = create_object(task, STORE_REPLY_ARRAY, (size_t)elements * sizeof(StoreReply *));
    if (reply == NULL) return NULL;
    if (elements > 0) {
        reply->element = calloc((size_t)elements, sizeof(StoreReply *));
        if (reply->element == NULL) {
            free(reply);
            return NULL;
        }
    }
    reply->elements = (size_t)elements;
    return link_to_parent(task, reply);
}

static void *create_integer(const redisReadTask *task, long long value) {
    StoreReply *reply = create_object(task, STORE_REPLY_INTEGER, 0);
    if (reply == NULL) return NULL;
    reply->integer = value;
    return link_to_parent(task, reply);
}

static void *create_nil(const redisReadTask *task) {
    StoreReply *reply = create_object(task, STORE_REPLY_NIL, 0);
    if (reply == NULL) return NULL;
    return link_to_parent(task, reply);
}

static void free_object(void *reply) { store_reply_free(reply); }

/* The reader keeps a pointer to this table; it is never modified. */
static redisReplyObjectFunctions reply_functions = {create_string, create_array, create_integer, create_nil,
                                                    free_object};

redisReader *store_reader_create(StoreReplyBudget *budget) {
    redisReader *reader = redisReaderCreateWithFunctions(&reply_functions);
    if (reader == NULL) return NULL;
    reader->privdata = budget;
    return reader;
}

size_t store_reader_unparsed(const redisReader *reader) { return reader->len - reader->pos; }

void store_reply_free(StoreReply *reply) {
    if (reply == NULL) return;
    if (reply->type == STORE_REPLY_ARRAY) {
        /* Elements of a partly parsed array may still be NULL. */
        for (size_t i = 0; i < reply->elements; i++) store_reply_free(reply->element[i]);
        free(reply->element);
    }
    free(reply->str);
    free(reply);
}
