/* module.c -- RedisModule_OnLoad: the entry point of spirt.so. Loads the
 * API, reads the load arguments, registers the tensor type and the commands
 * with their key specs (see spirt_module.h for the map of the module).
 *
 *   redis-server --loadmodule build/spirt.so [THREADS n] [INLINE_MAX floats]
 *
 * THREADS: threads one kernel may use (default: every CPU the server may
 * run on, or SPIRT_THREADS).
 * INLINE_MAX: commands that read at most this many floats run on the main
 * thread; larger ones on a worker thread (default 262144, i.e. 1 MiB).
 * CACHE_MAX: bytes of freed tensor blocks kept for reuse (default 256 MiB;
 * 0 disables; see tensor_type.c).
 * TRANSIENT_PREFIX p (repeatable, up to 8): keys starting with p are scratch;
 * module commands writing them do not send the write to the AOF or to
 * replicas (spirt train uses "spirt:r:", the per-round keys a restarted
 * peer recomputes anyway). */
#include <pthread.h>
#include <string.h>

#include "spirt/parallel.h"
#include "spirt_module.h"

SpirtModuleConfig spirt_config = {.threads = 1, .inline_max = 262144, .cache_max = (size_t)256 << 20};

/* --- Load arguments ----------------------------------------------------- */

static int parse_load_arguments(RedisModuleCtx *ctx, RedisModuleString **argv, int argc) {
    spirt_config.threads = parallel_default_threads();
    spirt_config.main_thread = pthread_self();
    for (int i = 0; i < argc; i += 2) {
        size_t length;
        const char *name = RedisModule_StringPtrLen(argv[i], &length);
        if (spirt_arg_is(argv[i], "TRANSIENT_PREFIX")) {
            size_t prefix_length = 0;
            const char *prefix = i + 1 < argc ? RedisModule_StringPtrLen(argv[i + 1], &prefix_length) : NULL;
            if (prefix == NULL || prefix_length == 0 || prefix_length >= SPIRT_TRANSIENT_PREFIX_MAX ||
                spirt_config.transient_prefix_count == SPIRT_TRANSIENT_PREFIXES_MAX) {
                RedisModule_Log(ctx, "warning", "TRANSIENT_PREFIX needs a prefix of 1 to %d bytes (at most %d of them)",
                                SPIRT_TRANSIENT_PREFIX_MAX - 1, SPIRT_TRANSIENT_PREFIXES_MAX);
                return REDISMODULE_ERR;
            }
            memcpy(spirt_config.transient_prefixes[spirt_config.transient_prefix_count++], prefix, prefix_length);
            continue;
        }
        long long value;
        if (i + 1 >= argc || RedisModule_StringToLongLong(argv[i + 1], &value) != REDISMODULE_OK) {
            RedisModule_Log(ctx, "warning", "load argument '%s' needs an integer value", name);
            return REDISMODULE_ERR;
        }
        if (spirt_arg_is(argv[i], "THREADS") && value >= 1 && value <= 64) {
            spirt_config.threads = (int)value;
        } else if (spirt_arg_is(argv[i], "INLINE_MAX") && value >= 0) {
            spirt_config.inline_max = (size_t)value;
        } else if (spirt_arg_is(argv[i], "CACHE_MAX") && value >= 0) {
            spirt_config.cache_max = (size_t)value;
        } else {
            RedisModule_Log(ctx, "warning",
                            "bad load argument '%s %lld' (known: THREADS 1..64, INLINE_MAX >= 0, CACHE_MAX >= 0, "
                            "TRANSIENT_PREFIX p)", name,
                            value);
            return REDISMODULE_ERR;
        }
    }
    return REDISMODULE_OK;
}

/* --- Commands and key specs ------------------------------------------------
 * Key specs tell ACL which keys a command reads and which it writes, so a
 * user limited to reading some keys (%R~pattern) may still run the commands
 * that only read them. */

#define KEY_READ (REDISMODULE_CMD_KEY_RO | REDISMODULE_CMD_KEY_ACCESS)
#define KEY_OVERWRITE (REDISMODULE_CMD_KEY_OW | REDISMODULE_CMD_KEY_UPDATE)
#define KEY_READ_WRITE (REDISMODULE_CMD_KEY_RW | REDISMODULE_CMD_KEY_ACCESS | REDISMODULE_CMD_KEY_UPDATE)

/* One key at argv[position]. */
#define SPEC_AT(key_flags, position)                                                   \
    {.flags = (key_flags), .begin_search_type = REDISMODULE_KSPEC_BS_INDEX,            \
     .bs.index.pos = (position), .find_keys_type = REDISMODULE_KSPEC_FK_RANGE,         \
     .fk.range = {0, 1, 0}}
/* Every argument from argv[position] to the last. */
#define SPEC_FROM(key_flags, position)                                                 \
    {.flags = (key_flags), .begin_search_type = REDISMODULE_KSPEC_BS_INDEX,            \
     .bs.index.pos = (position), .find_keys_type = REDISMODULE_KSPEC_FK_RANGE,         \
     .fk.range = {-1, 1, 0}}
/* The argument after `word` (searched from argv[start]). */
#define SPEC_AFTER(key_flags, word, start)                                             \
    {.flags = (key_flags), .begin_search_type = REDISMODULE_KSPEC_BS_KEYWORD,          \
     .bs.keyword = {(word), (start)}, .find_keys_type = REDISMODULE_KSPEC_FK_RANGE,    \
     .fk.range = {0, 1, 0}}

static RedisModuleCommandKeySpec tset_keys[] = {SPEC_AT(KEY_OVERWRITE, 1), {0}};
static RedisModuleCommandKeySpec read_one_key[] = {SPEC_AT(KEY_READ, 1), {0}};
static RedisModuleCommandKeySpec read_all_keys[] = {SPEC_FROM(KEY_READ, 1), {0}};
static RedisModuleCommandKeySpec avg_keys[] = {SPEC_AT(KEY_OVERWRITE, 1), SPEC_FROM(KEY_READ, 2), {0}};
/* TWRAP dst src: writes dst, reads src. */
static RedisModuleCommandKeySpec twrap_keys[] = {SPEC_AT(KEY_OVERWRITE, 1), SPEC_AT(KEY_READ, 2), {0}};
static RedisModuleCommandKeySpec agg_keys[] = {
    SPEC_AT(KEY_OVERWRITE, 1),
    /* SRC n key...: the count, then n keys. */
    {.flags = KEY_READ, .begin_search_type = REDISMODULE_KSPEC_BS_KEYWORD, .bs.keyword = {"SRC", 4},
     .find_keys_type = REDISMODULE_KSPEC_FK_KEYNUM, .fk.keynum = {0, 1, 1}},
    SPEC_AFTER(KEY_READ, "CENTER", 4),
    {0}};
static RedisModuleCommandKeySpec update_keys[] = {
    SPEC_AT(KEY_READ_WRITE, 1), SPEC_AT(KEY_READ, 2), SPEC_AFTER(KEY_READ_WRITE, "STATE", 5), {0}};
static RedisModuleCommandKeySpec avgupdate_keys[] = {
    SPEC_AT(KEY_READ_WRITE, 1), SPEC_AT(KEY_OVERWRITE, 2), SPEC_AFTER(KEY_READ_WRITE, "STATE", 5),
    {.flags = KEY_READ, .begin_search_type = REDISMODULE_KSPEC_BS_KEYWORD, .bs.keyword = {"SRC", 5},
     .find_keys_type = REDISMODULE_KSPEC_FK_KEYNUM, .fk.keynum = {0, 1, 1}},
    {0}};

typedef struct CommandEntry {
    const char *name;
    RedisModuleCmdFunc function;
    const char *flags;
    int first_key, last_key, key_step; /* the legacy triple, for old clients */
    int arity;
    RedisModuleCommandKeySpec *key_specs;
    const char *summary;
} CommandEntry;

static const CommandEntry commands[] = {
    {"spirt.tset", spirt_command_tset, "write deny-oom", 1, 1, 1, -6, tset_keys,
     "Store a float32 tensor: SPIRT.TSET key FLOAT32 dim [dim ...] BLOB bytes"},
    {"spirt.tget", spirt_command_tget, "readonly", 1, 1, 1, -2, read_one_key,
     "Read a tensor: SPIRT.TGET key [BLOB|META|FULL]"},
    {"spirt.info", spirt_command_info, "readonly", 1, 1, 1, 2, read_one_key,
     "Shape, count, L2 norm, min, max, mean and digest of a tensor"},
    {"spirt.minfo", spirt_command_minfo, "readonly", 1, -1, 1, -2, read_all_keys, "SPIRT.INFO of several keys at once"},
    {"spirt.avg", spirt_command_avg, "write deny-oom", 1, -1, 1, -3, avg_keys,
     "Element-wise mean: SPIRT.AVG dst src [src ...]"},
    {"spirt.agg", spirt_command_agg, "write deny-oom", 1, 1, 1, -7, agg_keys,
     "Robust aggregation: SPIRT.AGG dst RULE name [param value ...] SRC n src [src ...]"},
    {"spirt.update", spirt_command_update, "write deny-oom", 1, 2, 1, -7, update_keys,
     "Optimizer step: SPIRT.UPDATE params grad OPT name LR x [options] [STATE key]"},
    {"spirt.avgupdate", spirt_command_avgupdate, "write deny-oom", 1, 2, 1, -10, avgupdate_keys,
     "SPIRT.AVG then SPIRT.UPDATE in one pass: SPIRT.AVGUPDATE params avg OPT name LR x [options] SRC n src ..."},
    {"spirt.set", spirt_command_set, "write deny-oom", 1, 1, 1, 3, tset_keys,
     "Store a string, as SET, without propagating it under a TRANSIENT_PREFIX: SPIRT.SET key value"},
    {"spirt.tdigest", spirt_command_tdigest, "readonly", 1, 1, 1, 2, read_one_key,
     "BLAKE3 of a tensor's encoding and the encoding's length: SPIRT.TDIGEST key"},
    {"spirt.fetch", spirt_command_fetch, "write deny-oom deny-script", 1, 1, 1, -11, tset_keys,
     "Copy a tensor from another Redis server, checked against its digest: SPIRT.FETCH dst ADDRESS a KEY k RANGE o n "
     "DIGEST hex [USER u] [PASSWORD p] [TIMEOUT ms]"},
    {"spirt.twrap", spirt_command_twrap, "write deny-oom", 1, 2, 1, -3, twrap_keys,
     "Store PREFIX + a tensor's encoding + SUFFIX as a string: SPIRT.TWRAP dst src [PREFIX b] [SUFFIX b] [DIGEST hex]"},
};

static int register_commands(RedisModuleCtx *ctx) {
    static const RedisModuleCommandInfoVersion info_version = {
        .version = 1,
        .sizeof_historyentry = sizeof(RedisModuleCommandHistoryEntry),
        .sizeof_keyspec = sizeof(RedisModuleCommandKeySpec),
        .sizeof_arg = 0, /* no args descriptions given */
    };
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        const CommandEntry *entry = &commands[i];
        if (RedisModule_CreateCommand(ctx, entry->name, entry->function, entry->flags, entry->first_key,
                                      entry->last_key, entry->key_step) != REDISMODULE_OK) {
            RedisModule_Log(ctx, "warning", "cannot register %s", entry->name);
            return REDISMODULE_ERR;
        }
        RedisModuleCommand *command = RedisModule_GetCommand(ctx, entry->name);
        RedisModuleCommandInfo info = {
            .version = &info_version,
            .summary = entry->summary,
            .since = "0.1.0",
            .arity = entry->arity,
            .key_specs = entry->key_specs,
        };
        if (command == NULL || RedisModule_SetCommandInfo(command, &info) != REDISMODULE_OK) {
            RedisModule_Log(ctx, "warning", "cannot set the command info (key specs) of %s", entry->name);
            return REDISMODULE_ERR;
        }
    }
    return REDISMODULE_OK;
}

/* --- INFO spirt -------------------------------------------------------------
 * Fields appear as spirt_<name> in the "spirt" section of INFO. */
static void info_callback(RedisModuleInfoCtx *ctx, int for_crash_report) {
    (void)for_crash_report;
    RedisModule_InfoAddSection(ctx, "");
    RedisModule_InfoAddFieldLongLong(ctx, "threads", spirt_config.threads);
    RedisModule_InfoAddFieldLongLong(ctx, "inline_max", (long long)spirt_config.inline_max);
    size_t blocks, bytes;
    spirt_tensor_cache_info(&blocks, &bytes);
    RedisModule_InfoAddFieldLongLong(ctx, "cache_max", (long long)spirt_config.cache_max);
    RedisModule_InfoAddFieldLongLong(ctx, "cache_blocks", (long long)blocks);
    RedisModule_InfoAddFieldLongLong(ctx, "cache_bytes", (long long)bytes);
    spirt_jobs_info(ctx);
}

/* --- Entry point ------------------------------------------------------------ */

int RedisModule_OnLoad(RedisModuleCtx *ctx, RedisModuleString **argv, int argc);

int RedisModule_OnLoad(RedisModuleCtx *ctx, RedisModuleString **argv, int argc) {
    if (spirt_api_load(ctx) != REDISMODULE_OK) return REDISMODULE_ERR;
    if (RedisModule_IsModuleNameBusy(SPIRT_MODULE_NAME)) {
        RedisModule_Log(ctx, "warning", "a module named '%s' is already loaded", SPIRT_MODULE_NAME);
        return REDISMODULE_ERR;
    }
    RedisModule_SetModuleAttribs(ctx, SPIRT_MODULE_NAME, SPIRT_MODULE_VERSION, REDISMODULE_APIVER_1);
    /* Loading checks RedisModule_IsIOError itself (tensor_type.c). */
    RedisModule_SetModuleOptions(ctx, REDISMODULE_OPTIONS_HANDLE_IO_ERRORS);
    if (parse_load_arguments(ctx, argv, argc) != REDISMODULE_OK) return REDISMODULE_ERR;
    if (spirt_tensor_type_register(ctx) != REDISMODULE_OK) {
        RedisModule_Log(ctx, "warning", "cannot create the data type '%s'", SPIRT_TENSOR_TYPE_NAME);
        return REDISMODULE_ERR;
    }
    if (register_commands(ctx) != REDISMODULE_OK) return REDISMODULE_ERR;
    if (RedisModule_RegisterInfoFunc(ctx, info_callback) != REDISMODULE_OK) return REDISMODULE_ERR;
    RedisModule_Log(ctx, "notice", "loaded (threads %d, inline up to %zu floats, block cache %zu bytes)",
                    spirt_config.threads, spirt_config.inline_max, spirt_config.cache_max);
    return REDISMODULE_OK;
}
