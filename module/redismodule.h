/* redismodule.h -- the part of the Redis Modules API that spirt.so uses.
 *
 * Debian ships redis-server without its module header, so the project
 * declares the ABI itself: only the constants, structures and entry points
 * this module calls, with the layouts of Redis 7.0 (checked against a running
 * 7.0.15; see notes/redis-module-abi.md). Every entry point is a function
 * pointer filled at load time by spirt_api_load() (module_api.c) through the
 * server's GetApi lookup; a server that lacks one fails the load with a log
 * line naming it.
 *
 * The list of entry points is written once, as SPIRT_REDISMODULE_API below;
 * the declarations here and the loader in module_api.c are both generated from
 * it, so they cannot drift apart. Add an entry there to use a new function.
 *
 * This is not Redis's own redismodule.h and does not try to be: no inline
 * helpers, no RedisModule_Init, nothing this module does not need. */
#ifndef SPIRT_MODULE_REDISMODULE_H
#define SPIRT_MODULE_REDISMODULE_H

#include <stddef.h> /* size_t */
#include <stdint.h> /* uint64_t */

/* --- Constants --------------------------------------------------------- */

#define REDISMODULE_OK 0
#define REDISMODULE_ERR 1
#define REDISMODULE_APIVER_1 1

/* OpenKey modes. */
#define REDISMODULE_READ (1 << 0)
#define REDISMODULE_WRITE (1 << 1)

/* KeyType results used here. */
#define REDISMODULE_KEYTYPE_EMPTY 0
#define REDISMODULE_KEYTYPE_MODULE 6

/* ReplyWithArray length to be set later with ReplySetArrayLength. */
#define REDISMODULE_POSTPONED_LEN -1

#define REDISMODULE_ERRORMSG_WRONGTYPE "WRONGTYPE Operation against a key holding the wrong kind of value"

/* GetContextFlags bits used here. */
#define REDISMODULE_CTX_FLAGS_LUA (1 << 0)
#define REDISMODULE_CTX_FLAGS_MULTI (1 << 1)
#define REDISMODULE_CTX_FLAGS_MASTER (1 << 2)
#define REDISMODULE_CTX_FLAGS_SLAVE (1 << 3)
#define REDISMODULE_CTX_FLAGS_AOF (1 << 6)
#define REDISMODULE_CTX_FLAGS_REPLICATED (1 << 12)
#define REDISMODULE_CTX_FLAGS_LOADING (1 << 13)
#define REDISMODULE_CTX_FLAGS_DENY_BLOCKING (1 << 21)

/* NotifyKeyspaceEvent class of module-type keys ('d' in notify-keyspace-events). */
#define REDISMODULE_NOTIFY_MODULE (1 << 13)
/* ... and of strings ('$'). */
#define REDISMODULE_NOTIFY_STRING (1 << 3)

/* SetModuleOptions: the module checks IsIOError itself while loading, so a
 * truncated payload is an error it reports instead of a server panic. */
#define REDISMODULE_OPTIONS_HANDLE_IO_ERRORS (1 << 0)

/* RedisModuleTypeMethods.version understood by 7.0 (fields up to copy2). */
#define REDISMODULE_TYPE_METHOD_VERSION 4

/* Key-spec flags (SetCommandInfo). Exactly one of RO/RW/OW/RM per spec. */
#define REDISMODULE_CMD_KEY_RO (1ULL << 0)
#define REDISMODULE_CMD_KEY_RW (1ULL << 1)
#define REDISMODULE_CMD_KEY_OW (1ULL << 2)
#define REDISMODULE_CMD_KEY_RM (1ULL << 3)
#define REDISMODULE_CMD_KEY_ACCESS (1ULL << 4)
#define REDISMODULE_CMD_KEY_UPDATE (1ULL << 5)
#define REDISMODULE_CMD_KEY_INSERT (1ULL << 6)
#define REDISMODULE_CMD_KEY_DELETE (1ULL << 7)
#define REDISMODULE_CMD_KEY_INCOMPLETE (1ULL << 9)

/* --- Opaque handles ---------------------------------------------------- */

typedef struct RedisModuleCtx RedisModuleCtx;
typedef struct RedisModuleKey RedisModuleKey;
typedef struct RedisModuleString RedisModuleString;
typedef struct RedisModuleIO RedisModuleIO;
typedef struct RedisModuleType RedisModuleType;
typedef struct RedisModuleDigest RedisModuleDigest;
typedef struct RedisModuleBlockedClient RedisModuleBlockedClient;
typedef struct RedisModuleCommand RedisModuleCommand;
typedef struct RedisModuleServerInfoData RedisModuleServerInfoData;
typedef struct RedisModuleDefragCtx RedisModuleDefragCtx;
typedef struct RedisModuleKeyOptCtx RedisModuleKeyOptCtx;
typedef struct RedisModuleInfoCtx RedisModuleInfoCtx;

typedef int (*RedisModuleCmdFunc)(RedisModuleCtx *ctx, RedisModuleString **argv, int argc);
typedef void (*RedisModuleBlockedFreeFunc)(RedisModuleCtx *ctx, void *privdata);
typedef void (*RedisModuleInfoFunc)(RedisModuleInfoCtx *ctx, int for_crash_report);

/* --- Data type methods (layout of version 4) --------------------------- */

typedef struct RedisModuleTypeMethods {
    uint64_t version;
    void *(*rdb_load)(RedisModuleIO *rdb, int encver);
    void (*rdb_save)(RedisModuleIO *rdb, void *value);
    void (*aof_rewrite)(RedisModuleIO *aof, RedisModuleString *key, void *value);
    size_t (*mem_usage)(const void *value);
    void (*digest)(RedisModuleDigest *digest, void *value);
    void (*free)(void *value);
    int (*aux_load)(RedisModuleIO *rdb, int encver, int when);
    void (*aux_save)(RedisModuleIO *rdb, int when);
    int aux_save_triggers;
    size_t (*free_effort)(RedisModuleString *key, const void *value);
    void (*unlink)(RedisModuleString *key, const void *value);
    void *(*copy)(RedisModuleString *fromkey, RedisModuleString *tokey, const void *value);
    int (*defrag)(RedisModuleDefragCtx *ctx, RedisModuleString *key, void **value);
    size_t (*mem_usage2)(RedisModuleKeyOptCtx *ctx, const void *value, size_t sample_size);
    size_t (*free_effort2)(RedisModuleKeyOptCtx *ctx, const void *value);
    void (*unlink2)(RedisModuleKeyOptCtx *ctx, const void *value);
    void *(*copy2)(RedisModuleKeyOptCtx *ctx, const void *value);
} RedisModuleTypeMethods;

/* --- Command info and key specs (SetCommandInfo, version 1) ------------- */

typedef enum {
    REDISMODULE_KSPEC_BS_INVALID = 0, /* terminates the key_specs array */
    REDISMODULE_KSPEC_BS_UNKNOWN,
    REDISMODULE_KSPEC_BS_INDEX,
    REDISMODULE_KSPEC_BS_KEYWORD
} RedisModuleKeySpecBeginSearchType;

typedef enum {
    REDISMODULE_KSPEC_FK_OMITTED = 0, /* exactly one key */
    REDISMODULE_KSPEC_FK_UNKNOWN,
    REDISMODULE_KSPEC_FK_RANGE,
    REDISMODULE_KSPEC_FK_KEYNUM
} RedisModuleKeySpecFindKeysType;

typedef struct RedisModuleCommandKeySpec {
    const char *notes;
    uint64_t flags; /* REDISMODULE_CMD_KEY_* */
    RedisModuleKeySpecBeginSearchType begin_search_type;
    union {
        struct {
            int pos; /* argv index of the first key */
        } index;
        struct {
            const char *keyword; /* keys follow this token */
            int startfrom;       /* argv index where the search starts */
        } keyword;
    } bs;
    RedisModuleKeySpecFindKeysType find_keys_type;
    union {
        struct {
            int lastkey; /* relative to the begin search; -1: the last argument */
            int keystep;
            int limit;
        } range;
        struct {
            int keynumidx; /* the argument holding the key count, relative */
            int firstkey;
            int keystep;
        } keynum;
    } fk;
} RedisModuleCommandKeySpec;

typedef struct RedisModuleCommandHistoryEntry {
    const char *since;
    const char *changes;
} RedisModuleCommandHistoryEntry;

/* Tells the server the sizes of the structures above, so it can walk arrays
 * of them. `args` is never given here, so sizeof_arg is not used. */
typedef struct RedisModuleCommandInfoVersion {
    int version; /* 1 */
    size_t sizeof_historyentry;
    size_t sizeof_keyspec;
    size_t sizeof_arg;
} RedisModuleCommandInfoVersion;

typedef struct RedisModuleCommandInfo {
    const RedisModuleCommandInfoVersion *version;
    const char *summary;
    const char *complexity;
    const char *since;
    RedisModuleCommandHistoryEntry *history;
    const char *tips;
    int arity; /* N: exactly N arguments (with the name); -N: at least N */
    RedisModuleCommandKeySpec *key_specs; /* ended by a zeroed entry */
    void *args;                           /* not used by this module: NULL */
} RedisModuleCommandInfo;

/* --- Entry points -------------------------------------------------------- */

/* X(return type, name without the RedisModule_ prefix, parameter list) */
#define SPIRT_REDISMODULE_API(X)                                                                       \
    X(void, Log, (RedisModuleCtx * ctx, const char *level, const char *format, ...))                    \
    X(void, LogIOError, (RedisModuleIO * io, const char *level, const char *format, ...))               \
    X(void, SetModuleAttribs, (RedisModuleCtx * ctx, const char *name, int version, int api_version))   \
    X(int, IsModuleNameBusy, (const char *name))                                                        \
    X(void, SetModuleOptions, (RedisModuleCtx * ctx, int options))                                      \
    X(int, CreateCommand,                                                                               \
      (RedisModuleCtx * ctx, const char *name, RedisModuleCmdFunc function, const char *flags,          \
       int first_key, int last_key, int key_step))                                                      \
    X(RedisModuleCommand *, GetCommand, (RedisModuleCtx * ctx, const char *name))                       \
    X(int, SetCommandInfo, (RedisModuleCommand * command, const RedisModuleCommandInfo *info))          \
    X(int, GetContextFlags, (RedisModuleCtx * ctx))                                                     \
    X(void *, Alloc, (size_t bytes))                                                                    \
    X(void *, TryAlloc, (size_t bytes))                                                                 \
    X(void, Free, (void *pointer))                                                                      \
    X(double, GetUsedMemoryRatio, (void))                                                               \
    X(int, WrongArity, (RedisModuleCtx * ctx))                                                          \
    X(int, ReplyWithError, (RedisModuleCtx * ctx, const char *error))                                   \
    X(int, ReplyWithSimpleString, (RedisModuleCtx * ctx, const char *text))                             \
    X(int, ReplyWithLongLong, (RedisModuleCtx * ctx, long long value))                                  \
    X(int, ReplyWithDouble, (RedisModuleCtx * ctx, double value))                                       \
    X(int, ReplyWithStringBuffer, (RedisModuleCtx * ctx, const char *buffer, size_t length))           \
    X(int, ReplyWithArray, (RedisModuleCtx * ctx, long length))                                         \
    X(void, ReplySetArrayLength, (RedisModuleCtx * ctx, long length))                                   \
    X(int, ReplyWithNull, (RedisModuleCtx * ctx))                                                       \
    X(const char *, StringPtrLen, (const RedisModuleString *text, size_t *length))                      \
    X(int, StringToLongLong, (const RedisModuleString *text, long long *value))                         \
    X(int, StringToDouble, (const RedisModuleString *text, double *value))                              \
    X(RedisModuleString *, CreateString, (RedisModuleCtx * ctx, const char *buffer, size_t length))     \
    X(RedisModuleString *, CreateStringFromLongLong, (RedisModuleCtx * ctx, long long value))           \
    X(void, FreeString, (RedisModuleCtx * ctx, RedisModuleString * text))                               \
    X(void, RetainString, (RedisModuleCtx * ctx, RedisModuleString * text))                             \
    X(void *, OpenKey, (RedisModuleCtx * ctx, RedisModuleString * name, int mode))                      \
    X(void, CloseKey, (RedisModuleKey * key))                                                           \
    X(int, KeyType, (RedisModuleKey * key))                                                             \
    X(int, StringSet, (RedisModuleKey * key, RedisModuleString * text))                                 \
    X(int, StringTruncate, (RedisModuleKey * key, size_t length))                                       \
    X(char *, StringDMA, (RedisModuleKey * key, size_t * length, int mode))                             \
    X(int, DeleteKey, (RedisModuleKey * key))                                                           \
    X(RedisModuleType *, CreateDataType,                                                                \
      (RedisModuleCtx * ctx, const char *name, int encoding_version, RedisModuleTypeMethods *methods))  \
    X(int, ModuleTypeSetValue, (RedisModuleKey * key, RedisModuleType * type, void *value))             \
    X(RedisModuleType *, ModuleTypeGetType, (RedisModuleKey * key))                                     \
    X(void *, ModuleTypeGetValue, (RedisModuleKey * key))                                               \
    X(void, SaveUnsigned, (RedisModuleIO * io, uint64_t value))                                         \
    X(uint64_t, LoadUnsigned, (RedisModuleIO * io))                                                     \
    X(void, SaveStringBuffer, (RedisModuleIO * io, const char *buffer, size_t length))                  \
    X(char *, LoadStringBuffer, (RedisModuleIO * io, size_t * length))                                  \
    X(int, IsIOError, (RedisModuleIO * io))                                                             \
    X(void, EmitAOF, (RedisModuleIO * io, const char *command, const char *format, ...))                \
    X(void, DigestAddStringBuffer, (RedisModuleDigest * digest, const char *buffer, size_t length))     \
    X(void, DigestAddLongLong, (RedisModuleDigest * digest, long long value))                           \
    X(void, DigestEndSequence, (RedisModuleDigest * digest))                                            \
    X(int, Replicate, (RedisModuleCtx * ctx, const char *command, const char *format, ...))             \
    X(int, ReplicateVerbatim, (RedisModuleCtx * ctx))                                                   \
    X(int, NotifyKeyspaceEvent, (RedisModuleCtx * ctx, int type, const char *event, RedisModuleString * key)) \
    X(RedisModuleBlockedClient *, BlockClient,                                                          \
      (RedisModuleCtx * ctx, RedisModuleCmdFunc reply_callback, RedisModuleCmdFunc timeout_callback,    \
       RedisModuleBlockedFreeFunc free_privdata, long long timeout_ms))                                 \
    X(int, UnblockClient, (RedisModuleBlockedClient * client, void *privdata))                          \
    X(void *, GetBlockedClientPrivateData, (RedisModuleCtx * ctx))                                      \
    X(int, BlockedClientMeasureTimeStart, (RedisModuleBlockedClient * client))                          \
    X(int, BlockedClientMeasureTimeEnd, (RedisModuleBlockedClient * client))                            \
    X(RedisModuleServerInfoData *, GetServerInfo, (RedisModuleCtx * ctx, const char *section))          \
    X(void, FreeServerInfo, (RedisModuleCtx * ctx, RedisModuleServerInfoData * data))                   \
    X(long long, ServerInfoGetFieldSigned,                                                              \
      (RedisModuleServerInfoData * data, const char *field, int *out_error))                           \
    X(int, RegisterInfoFunc, (RedisModuleCtx * ctx, RedisModuleInfoFunc callback))                      \
    X(int, InfoAddSection, (RedisModuleInfoCtx * ctx, const char *name))                                \
    X(int, InfoAddFieldLongLong, (RedisModuleInfoCtx * ctx, const char *field, long long value))       \
    X(int, RedactClientCommandArgument, (RedisModuleCtx * ctx, int position))

#define SPIRT_REDISMODULE_DECLARE(type, name, parameters) extern type(*RedisModule_##name) parameters;
SPIRT_REDISMODULE_API(SPIRT_REDISMODULE_DECLARE)
#undef SPIRT_REDISMODULE_DECLARE

/* Fills every pointer above through the server's GetApi (the first field of
 * the load context). Returns REDISMODULE_OK, or REDISMODULE_ERR after logging
 * (to the server log) the name of each entry point this server lacks. */
int spirt_api_load(RedisModuleCtx *ctx);

#endif /* SPIRT_MODULE_REDISMODULE_H */
