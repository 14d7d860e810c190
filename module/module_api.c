/* module_api.c -- the Redis module API's function pointers and their loader
 * (see redismodule.h).
 *
 * The pointers are the module's only link to the server: they are set once,
 * on the main thread, in RedisModule_OnLoad, before any other code runs, and
 * only read afterwards (worker threads call the few entry points documented
 * as thread-safe: Alloc/TryAlloc/Free, UnblockClient). */
#include <stdio.h>

#include "redismodule.h"

#define SPIRT_REDISMODULE_DEFINE(type, name, parameters) type(*RedisModule_##name) parameters = NULL;
SPIRT_REDISMODULE_API(SPIRT_REDISMODULE_DEFINE)
#undef SPIRT_REDISMODULE_DEFINE

typedef int (*GetApiFunction)(const char *name, void *pointer);

int spirt_api_load(RedisModuleCtx *ctx) {
    /* The first field of every context is the server's lookup function. */
    GetApiFunction get_api = (GetApiFunction)((void **)ctx)[0];
    if (get_api == NULL) return REDISMODULE_ERR;
    /* Log first, so the other misses can be named in the server's log. */
    if (get_api("RedisModule_Log", (void *)&RedisModule_Log) != 0) RedisModule_Log = NULL;

    int missing = 0;
#define SPIRT_REDISMODULE_LOAD(type, name, parameters)                                                                 \
    if (get_api("RedisModule_" #name, (void *)&RedisModule_##name) != 0) {                                             \
        RedisModule_##name = NULL;                                                                                     \
        missing++;                                                                                                     \
        if (RedisModule_Log)                                                                                           \
            RedisModule_Log(ctx, "warning", "spirt: this server lacks RedisModule_%s (Redis >= 7.0 needed)", #name);   \
        else                                                                                                           \
            fprintf(stderr, "spirt: this server lacks RedisModule_%s\n", #name);                                       \
    }
    SPIRT_REDISMODULE_API(SPIRT_REDISMODULE_LOAD)
#undef SPIRT_REDISMODULE_LOAD
    return missing ? REDISMODULE_ERR : REDISMODULE_OK;
}
