/* module_client.c -- helpers for the module's tests (see tests/module_client.h). */
#include "module_client.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spirt/rng.h"
#include "test.h"

int module_test_start(TestRedis *server, const char *const *module_arguments, const char *const *extra, int appendonly,
                      const char *dir) {
    const char *arguments[64];
    int count = 0;
    /* Module arguments come first: the fixture puts extra arguments right
     * after "--loadmodule path", and Redis reads every word up to the next
     * "--option" as part of that directive. */
    for (int i = 0; module_arguments && module_arguments[i] && count < 40; i++)
        arguments[count++] = module_arguments[i];
    arguments[count++] = "--enable-debug-command";
    arguments[count++] = "yes";
    for (int i = 0; extra && extra[i] && count < 62; i++) arguments[count++] = extra[i];
    arguments[count] = NULL;
    TestRedisOptions options = {0};
    options.load_module = 1;
    options.appendonly = appendonly;
    options.dir = dir;
    options.extra_args = arguments;
    return test_redis_start(server, &options);
}

redisReply *module_test_command_argv(redisContext *context, int argc, const char **argv, const size_t *lengths) {
    return redisCommandArgv(context, argc, argv, lengths);
}

/* Collects the NULL-terminated arguments after `first` into argv. */
static int collect_arguments(const char *first, va_list args, const char **argv, int max) {
    int argc = 0;
    for (const char *argument = first; argument && argc < max; argument = va_arg(args, const char *))
        argv[argc++] = argument;
    return argc;
}

redisReply *module_test_command(redisContext *context, const char *first, ...) {
    const char *argv[64];
    va_list args;
    va_start(args, first);
    int argc = collect_arguments(first, args, argv, 64);
    va_end(args);
    return redisCommandArgv(context, argc, argv, NULL);
}

int module_test_reply_ok(redisReply *reply) {
    int ok = module_test_is_ok(reply);
    if (!ok) fprintf(stderr, "  reply: %s\n", reply ? (reply->str ? reply->str : "(not a string)") : "(none)");
    if (reply) freeReplyObject(reply);
    return ok;
}

int module_test_ok(redisContext *context, const char *first, ...) {
    const char *argv[64];
    va_list args;
    va_start(args, first);
    int argc = collect_arguments(first, args, argv, 64);
    va_end(args);
    redisReply *reply = redisCommandArgv(context, argc, argv, NULL);
    if (!module_test_is_ok(reply)) fprintf(stderr, "  %s %s ...:\n", argv[0], argc > 1 ? argv[1] : "");
    return module_test_reply_ok(reply);
}

redisReply *module_test_tset_reply(redisContext *context, const char *key, const float *values, uint32_t ndim,
                                   const uint64_t *dims) {
    const char *argv[12];
    size_t lengths[12];
    char dim_text[8][24];
    size_t count = 1;
    int argc = 0;
    argv[argc] = "SPIRT.TSET", lengths[argc++] = 10;
    argv[argc] = key, lengths[argc++] = strlen(key);
    argv[argc] = "FLOAT32", lengths[argc++] = 7;
    for (uint32_t i = 0; i < ndim && i < 6; i++) {
        snprintf(dim_text[i], sizeof(dim_text[i]), "%llu", (unsigned long long)dims[i]);
        argv[argc] = dim_text[i], lengths[argc++] = strlen(dim_text[i]);
        count *= dims[i];
    }
    argv[argc] = "BLOB", lengths[argc++] = 4;
    argv[argc] = (const char *)values, lengths[argc++] = count * sizeof(float);
    return redisCommandArgv(context, argc, argv, lengths);
}

int module_test_tset(redisContext *context, const char *key, const float *values, uint32_t ndim, const uint64_t *dims) {
    redisReply *reply = module_test_tset_reply(context, key, values, ndim, dims);
    int ok = module_test_is_ok(reply);
    if (!ok) fprintf(stderr, "TSET %s: %s\n", key, reply && reply->str ? reply->str : "no reply");
    if (reply) freeReplyObject(reply);
    return ok;
}

int module_test_tset_vector(redisContext *context, const char *key, const float *values, size_t count) {
    uint64_t dim = count;
    return module_test_tset(context, key, values, 1, &dim);
}

float *module_test_tget(redisContext *context, const char *key, size_t *count) {
    redisReply *reply = module_test_command(context, "SPIRT.TGET", key, "BLOB", NULL);
    float *values = NULL;
    if (reply && reply->type == REDIS_REPLY_STRING && reply->len % sizeof(float) == 0) {
        *count = reply->len / sizeof(float);
        values = malloc(reply->len ? reply->len : 1);
        if (values) memcpy(values, reply->str, reply->len);
    }
    if (reply) freeReplyObject(reply);
    return values;
}

int module_test_is_error(const redisReply *reply, const char *code) {
    return reply && reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, code, strlen(code)) == 0;
}

int module_test_is_ok(const redisReply *reply) {
    return reply && reply->type == REDIS_REPLY_STATUS && strcmp(reply->str, "OK") == 0;
}

int module_test_ping(redisContext *context) {
    redisReply *reply = module_test_command(context, "PING", NULL);
    int ok = reply && reply->type == REDIS_REPLY_STATUS && strcmp(reply->str, "PONG") == 0;
    if (reply) freeReplyObject(reply);
    return ok;
}

long long module_test_info_field(redisContext *context, const char *section, const char *field) {
    redisReply *reply = module_test_command(context, "INFO", section, NULL);
    long long value = -1;
    if (reply && reply->type == REDIS_REPLY_STRING) {
        size_t length = strlen(field);
        for (const char *line = reply->str; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
            if (strncmp(line, field, length) == 0 && line[length] == ':') {
                value = strtoll(line + length + 1, NULL, 10);
                break;
            }
    }
    if (reply) freeReplyObject(reply);
    return value;
}

const redisReply *module_test_field(const redisReply *reply, const char *field) {
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) return NULL;
    for (size_t i = 0; i + 1 < reply->elements; i += 2) {
        const redisReply *name = reply->element[i];
        if (name->type == REDIS_REPLY_STRING && strcmp(name->str, field) == 0) return reply->element[i + 1];
    }
    return NULL;
}

void module_test_random(float *values, size_t count, uint64_t seed, double scale) {
    SpirtRng rng;
    rng_init(&rng, seed);
    for (size_t i = 0; i < count; i++) values[i] = (float)(scale * rng_normal(&rng));
}

void module_test_expect_error(redisContext *context, int argc, const char **argv, const size_t *lengths,
                              const char *code, const char *needle) {
    redisReply *reply = module_test_command_argv(context, argc, argv, lengths);
    int ok = module_test_is_error(reply, code) && (needle == NULL || strstr(reply->str, needle) != NULL);
    CHECKF(ok, "%s %s ...: got '%s', expected %s%s%s", argv[0], argc > 1 ? argv[1] : "",
           reply ? (reply->str ? reply->str : "(not an error)") : "(no reply)", code, needle ? " mentioning " : "",
           needle ? needle : "");
    if (reply) freeReplyObject(reply);
    CHECKF(module_test_ping(context), "server stopped answering after %s", argv[0]);
}

void module_test_expect_errors(redisContext *context, const ModuleTestBadCase *cases, size_t count) {
    for (size_t i = 0; i < count; i++) {
        int argc = 0;
        while (argc < 24 && cases[i].argv[argc]) argc++;
        module_test_expect_error(context, argc, (const char **)cases[i].argv, NULL, cases[i].code, cases[i].needle);
    }
}
