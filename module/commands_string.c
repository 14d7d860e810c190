/* commands_string.c -- SPIRT.SET: a plain Redis string that is scratch when
 * its key is.
 *
 * A peer's signed publication (spirt:pub:{r}) is a string the other peers
 * read with GET, rewritten every round and recomputed by a restarted peer:
 * nothing to keep in the AOF, where a plain SET would append a megabyte a
 * round. Redis has no SET that skips the AOF, so publish used EVAL with
 * redis.set_repl(REPL_NONE): that copies the value twice (into Lua, back
 * out), and Lua hashes every byte of a new string, about 6% of all CPU time
 * of a 4-peer mlp run. SPIRT.SET stores the argument itself (no copy) and
 * propagates it like SET unless the key is under a TRANSIENT_PREFIX. */
#include "spirt_module.h"

/* --- SPIRT.SET key value ------------------------------------------------------
 * Reply: +OK. Replaces any value of any type and any TTL, as SET does. */
int spirt_command_set(RedisModuleCtx *ctx, RedisModuleString **argv, int argc) {
    if (argc != 3) return RedisModule_WrongArity(ctx);
    RedisModuleKey *key = RedisModule_OpenKey(ctx, argv[1], REDISMODULE_WRITE);
    if (key == NULL) return spirt_reply_error(ctx, "INTERNAL", "cannot open the key for writing");
    int status = RedisModule_StringSet(key, argv[2]);
    RedisModule_CloseKey(key);
    if (status != REDISMODULE_OK) return spirt_reply_error(ctx, "INTERNAL", "cannot store the string");
    RedisModule_NotifyKeyspaceEvent(ctx, REDISMODULE_NOTIFY_STRING, "spirt.set", argv[1]);
    if (spirt_key_is_transient(argv[1]))
        spirt_propagate_nothing(ctx, argv[1]);
    else
        RedisModule_ReplicateVerbatim(ctx);
    return RedisModule_ReplyWithSimpleString(ctx, "OK");
}
