/* values.c -- typed helpers for strings, integers and hashes.
 *
 * Each helper is one command through store_command_argv plus a check that
 * the reply has the type that command promises; anything else is
 * SPIRT_ERR_PROTOCOL (the server is not the Redis we expect). Values are
 * binary-safe; keys and field names are C strings, as everywhere in spirt. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spirt/store.h"
#include "store/conn.h"

/* Runs a command whose reply must be of `expected` type (NIL also allowed
 * when allow_nil). On SPIRT_OK the caller owns *reply. */
static int command_expecting(StoreConn *conn, size_t argc, const char *const *argv, const size_t *lengths,
                             StoreReplyType expected, int allow_nil, StoreReply **reply, SpirtError *error) {
    int status = store_command_argv(conn, argc, argv, lengths, reply, error);
    if (status != SPIRT_OK) return status;
    if ((*reply)->type == expected || (allow_nil && (*reply)->type == STORE_REPLY_NIL)) return SPIRT_OK;
    status = store_unexpected_reply(conn, *reply, argv[0], error);
    store_reply_free(*reply);
    *reply = NULL;
    return status;
}

/* The same when only success matters. */
static int command_status(StoreConn *conn, size_t argc, const char *const *argv, const size_t *lengths,
                          StoreReplyType expected, SpirtError *error) {
    StoreReply *reply = NULL;
    int status = command_expecting(conn, argc, argv, lengths, expected, 0, &reply, error);
    store_reply_free(reply);
    return status;
}

/* Hands a string reply's buffer to the caller (no copy), or NOT_FOUND. */
static int take_string(StoreReply *reply, const char *key, char **value, size_t *length, SpirtError *error) {
    if (reply->type == STORE_REPLY_NIL) {
        store_reply_free(reply);
        return spirt_error_set(error, SPIRT_ERR_NOT_FOUND, "key '%s' does not exist", key);
    }
    if (length != NULL) *length = reply->len;
    if (value != NULL) {
        *value = reply->str;
        reply->str = NULL;
    }
    store_reply_free(reply);
    return SPIRT_OK;
}

int store_ping(StoreConn *conn, SpirtError *error) {
    const char *argv[] = {"PING"};
    return command_status(conn, 1, argv, NULL, STORE_REPLY_STATUS, error);
}

int store_set(StoreConn *conn, const char *key, const void *value, size_t length, SpirtError *error) {
    if (key == NULL || (value == NULL && length > 0))
        return spirt_error_set(error, SPIRT_ERR_INVALID, "SET: no key or no value");
    const char *argv[] = {"SET", key, value ? (const char *)value : ""};
    const size_t lengths[] = {3, strlen(key), length};
    return command_status(conn, 3, argv, lengths, STORE_REPLY_STATUS, error);
}

int store_set_px(StoreConn *conn, const char *key, const void *value, size_t length, int64_t ttl_ms,
                 SpirtError *error) {
    if (key == NULL || (value == NULL && length > 0))
        return spirt_error_set(error, SPIRT_ERR_INVALID, "SET: no key or no value");
    if (ttl_ms <= 0) return spirt_error_set(error, SPIRT_ERR_INVALID, "SET %s: time to live %lld ms is not positive",
                                            key, (long long)ttl_ms);
    char ttl[24];
    snprintf(ttl, sizeof(ttl), "%lld", (long long)ttl_ms);
    const char *argv[] = {"SET", key, value ? (const char *)value : "", "PX", ttl};
    const size_t lengths[] = {3, strlen(key), length, 2, strlen(ttl)};
    return command_status(conn, 5, argv, lengths, STORE_REPLY_STATUS, error);
}

int store_get(StoreConn *conn, const char *key, char **value, size_t *length, SpirtError *error) {
    if (value != NULL) *value = NULL;
    if (key == NULL) return spirt_error_set(error, SPIRT_ERR_INVALID, "GET: no key");
    const char *argv[] = {"GET", key};
    StoreReply *reply = NULL;
    int status = command_expecting(conn, 2, argv, NULL, STORE_REPLY_STRING, 1, &reply, error);
    if (status != SPIRT_OK) return status;
    return take_string(reply, key, value, length, error);
}

/* A command with an integer reply, given back in *value (may be NULL). */
static int command_integer(StoreConn *conn, size_t argc, const char *const *argv, long long *value,
                           SpirtError *error) {
    StoreReply *reply = NULL;
    int status = command_expecting(conn, argc, argv, NULL, STORE_REPLY_INTEGER, 0, &reply, error);
    if (status == SPIRT_OK && value != NULL) *value = reply->integer;
    store_reply_free(reply);
    return status;
}

/* NAME key, an integer reply read as a yes/no in *flag (may be NULL). */
static int command_flag(StoreConn *conn, const char *name, const char *key, int *flag, SpirtError *error) {
    if (key == NULL) return spirt_error_set(error, SPIRT_ERR_INVALID, "%s: no key", name);
    const char *argv[] = {name, key};
    long long count = 0;
    int status = command_integer(conn, 2, argv, &count, error);
    if (status == SPIRT_OK && flag != NULL) *flag = count > 0;
    return status;
}

int store_del(StoreConn *conn, const char *key, int *deleted, SpirtError *error) {
    return command_flag(conn, "DEL", key, deleted, error);
}

int store_exists(StoreConn *conn, const char *key, int *exists, SpirtError *error) {
    return command_flag(conn, "EXISTS", key, exists, error);
}

int store_set_int(StoreConn *conn, const char *key, long long value, SpirtError *error) {
    char text[24];
    int length = snprintf(text, sizeof(text), "%lld", value);
    return store_set(conn, key, text, (size_t)length, error);
}

int store_get_int(StoreConn *conn, const char *key, long long *value, SpirtError *error) {
    char *text = NULL;
    size_t length = 0;
    int status = store_get(conn, key, &text, &length, error);
    if (status != SPIRT_OK) return status;
    /* Whole decimal numbers only, as INCRBY would accept them. */
    char *end = NULL;
    errno = 0;
    long long parsed = strtoll(text, &end, 10);
    int starts_well = isdigit((unsigned char)text[0]) || (text[0] == '-' && isdigit((unsigned char)text[1]));
    int ok = starts_well && length < 24 && errno == 0 && end == text + length;
    if (ok && value != NULL) *value = parsed;
    if (!ok) status = spirt_error_set(error, SPIRT_ERR_FORMAT, "key '%s' holds '%.32s', not an integer", key, text);
    free(text);
    return status;
}

int store_incr(StoreConn *conn, const char *key, long long by, long long *value, SpirtError *error) {
    if (key == NULL) return spirt_error_set(error, SPIRT_ERR_INVALID, "INCRBY: no key");
    char amount[24];
    snprintf(amount, sizeof(amount), "%lld", by);
    const char *argv[] = {"INCRBY", key, amount};
    return command_integer(conn, 3, argv, value, error);
}

int store_hset(StoreConn *conn, const char *key, const char *field, const void *value, size_t length,
               SpirtError *error) {
    if (key == NULL || field == NULL || (value == NULL && length > 0))
        return spirt_error_set(error, SPIRT_ERR_INVALID, "HSET: no key, field or value");
    const char *argv[] = {"HSET", key, field, value ? (const char *)value : ""};
    const size_t lengths[] = {4, strlen(key), strlen(field), length};
    return command_status(conn, 4, argv, lengths, STORE_REPLY_INTEGER, error);
}

int store_hget(StoreConn *conn, const char *key, const char *field, char **value, size_t *length,
               SpirtError *error) {
    if (value != NULL) *value = NULL;
    if (key == NULL || field == NULL) return spirt_error_set(error, SPIRT_ERR_INVALID, "HGET: no key or field");
    const char *argv[] = {"HGET", key, field};
    StoreReply *reply = NULL;
    int status = command_expecting(conn, 3, argv, NULL, STORE_REPLY_STRING, 1, &reply, error);
    if (status != SPIRT_OK) return status;
    if (reply->type == STORE_REPLY_NIL) {
        store_reply_free(reply);
        return spirt_error_set(error, SPIRT_ERR_NOT_FOUND, "hash '%s' has no field '%s'", key, field);
    }
    return take_string(reply, key, value, length, error);
}

int store_hdel(StoreConn *conn, const char *key, const char *field, SpirtError *error) {
    if (key == NULL || field == NULL) return spirt_error_set(error, SPIRT_ERR_INVALID, "HDEL: no key or field");
    const char *argv[] = {"HDEL", key, field};
    return command_integer(conn, 3, argv, NULL, error);
}
