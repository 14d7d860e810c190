/* module_client.h -- what the module's tests (tests/test_module*.c) share:
 * sending binary-safe commands with hiredis, storing and reading tensors,
 * checking error replies, and starting a server with the module and load
 * arguments. The client side is written with hiredis directly, as any user
 * of the module would, independently of the module's own code. */
#ifndef SPIRT_TEST_MODULE_CLIENT_H
#define SPIRT_TEST_MODULE_CLIENT_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>

#include "redis_fixture.h"

/* Starts a server with the module loaded; `module_arguments` (NULL-
 * terminated, may be NULL) follow the module path on --loadmodule, `extra`
 * (may be NULL) are further server options. The server gets
 * --enable-debug-command yes. 0 on success. */
int module_test_start(TestRedis *server, const char *const *module_arguments, const char *const *extra, int appendonly,
                      const char *dir);

/* A command from NULL-terminated C strings (no binary data). The caller
 * frees the reply; NULL if the connection failed. */
redisReply *module_test_command(redisContext *context, const char *first, ...) __attribute__((sentinel));
/* A command from NULL-terminated C strings that must reply +OK: 1 if it
 * did; otherwise prints the command and the reply and returns 0. */
int module_test_ok(redisContext *context, const char *first, ...) __attribute__((sentinel));
/* Takes (and frees) a reply: 1 if it was +OK; otherwise prints it. */
int module_test_reply_ok(redisReply *reply);
/* A command from argc binary-safe arguments. */
redisReply *module_test_command_argv(redisContext *context, int argc, const char **argv, const size_t *lengths);

/* SPIRT.TSET key FLOAT32 dims... BLOB values; returns the reply (caller frees). */
redisReply *module_test_tset_reply(redisContext *context, const char *key, const float *values, uint32_t ndim,
                                   const uint64_t *dims);
/* The same, as a check: 1 if the reply was +OK. */
int module_test_tset(redisContext *context, const char *key, const float *values, uint32_t ndim, const uint64_t *dims);
/* A vector of `count` values. */
int module_test_tset_vector(redisContext *context, const char *key, const float *values, size_t count);

/* SPIRT.TGET key BLOB as a malloc'd float array (caller frees) and its
 * count; NULL for a missing key or an error. */
float *module_test_tget(redisContext *context, const char *key, size_t *count);

/* 1 if `reply` is an error whose text starts with `code` (e.g. "SHAPE"). */
int module_test_is_error(const redisReply *reply, const char *code);
/* 1 if `reply` is the status "OK". */
int module_test_is_ok(const redisReply *reply);
/* 1 if the server answers PING with PONG on this connection. */
int module_test_ping(redisContext *context);
/* An integer field of INFO (e.g. "blocked_clients"), -1 if absent. */
long long module_test_info_field(redisContext *context, const char *section, const char *field);

/* The value of `field` in a flat [name, value, ...] reply, or NULL. */
const redisReply *module_test_field(const redisReply *reply, const char *field);

/* A command that must be refused: its arguments (NULL-ended), the code its
 * error reply must start with, and text the message must contain (NULL:
 * any). */
typedef struct ModuleTestBadCase {
    const char *argv[24];
    const char *code;
    const char *needle;
} ModuleTestBadCase;
/* Sends argv and checks that the reply is that error and that the server
 * still answers PING afterwards (one check each). */
void module_test_expect_error(redisContext *context, int argc, const char **argv, const size_t *lengths,
                              const char *code, const char *needle);
/* module_test_expect_error for each of `count` cases. */
void module_test_expect_errors(redisContext *context, const ModuleTestBadCase *cases, size_t count);

/* Fills values with normal(0, scale) draws from a simple seeded generator. */
void module_test_random(float *values, size_t count, uint64_t seed, double scale);

#endif /* SPIRT_TEST_MODULE_CLIENT_H */
