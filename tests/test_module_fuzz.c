/* test_module_fuzz.c -- thousands of malformed module commands against a
 * real redis-server: random command names and arities, random arguments
 * (keywords, numbers good and absurd, key names of every kind, binary
 * blobs of random length, some poisoned with NaN), and random-but-plausible
 * TSETs that create tensors of random shapes. The server must answer every
 * one (a reply, never a dropped connection), answer PING throughout, keep
 * sane memory, and hold only finite, well-formed tensors at the end -- the
 * database invariant the module promises.
 *
 * Seeded, so a failure reproduces; SPIRT_FUZZ_SEED and SPIRT_FUZZ_COUNT
 * override the seed and the number of commands.
 *
 * SPIRT_TEST_LABELS: db */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "module_client.h"
#include "spirt/rng.h"
#include "test.h"

static const char *const commands[] = {"SPIRT.TSET", "SPIRT.TGET", "SPIRT.INFO",   "SPIRT.MINFO",
                                       "SPIRT.AVG",  "SPIRT.AGG",  "SPIRT.UPDATE", "SPIRT.AVGUPDATE",
                                       "SPIRT.SET",  "SPIRT.TDIGEST", "SPIRT.TWRAP", "SPIRT.FETCH"};
static const char *const words[] = {
    "FLOAT32",  "FLOAT64",  "BLOB",   "META",         "FULL",  "RULE",       "SRC",    "OPT",    "LR",     "MOMENTUM",
    "BETA1",    "BETA2",    "EPS",    "WD",           "STEP",  "STATE",      "CENTER", "F",      "TRIM",   "M",
    "MAXITER",  "TOL",      "NU",     "TAU",          "ITERS", "PRE",        "NNM",    "NONE",   "REPORT", "YES",
    "NO",       "mean",     "median", "trimmed-mean", "krum",  "multi-krum", "bulyan", "geomed", "cclip",  "sgd",
    "momentum", "nesterov", "adam",   "adamw",        "",      "src",        "rule",   "PREFIX", "SUFFIX", "DIGEST", "ADDRESS", "KEY", "RANGE", "USER", "PASSWORD", "TIMEOUT"};
static const char *const numbers[] = {"0",
                                      "1",
                                      "2",
                                      "3",
                                      "4",
                                      "-1",
                                      "0.5",
                                      "1e-8",
                                      "1e30",
                                      "-1e30",
                                      "nan",
                                      "inf",
                                      "-inf",
                                      "1e400",
                                      "9223372036854775807",
                                      "-9223372036854775808",
                                      "18446744073709551616",
                                      "4294967296",
                                      "2147483648",
                                      "0x10",
                                      "1.5",
                                      " 2",
                                      "0.999",
                                      "100",
                                      "1000000"};
enum { KEY_POOL = 12 };

typedef struct Argument {
    char *bytes;
    size_t length;
} Argument;

static void set_text(Argument *argument, const char *text) {
    argument->length = strlen(text);
    argument->bytes = malloc(argument->length + 1);
    memcpy(argument->bytes, text, argument->length + 1);
}

static void set_key(Argument *argument, SpirtRng *rng) {
    char key[32];
    uint64_t pick = rng_below(rng, KEY_POOL + 3);
    if (pick < KEY_POOL)
        snprintf(key, sizeof(key), "fz:%llu", (unsigned long long)pick);
    else if (pick == KEY_POOL)
        snprintf(key, sizeof(key), "fz:string");
    else
        snprintf(key, sizeof(key), "fz:none:%llu", (unsigned long long)rng_below(rng, 4));
    set_text(argument, key);
}

static void set_blob(Argument *argument, SpirtRng *rng, size_t floats) {
    argument->length = floats * sizeof(float) + (rng_below(rng, 4) == 0 ? rng_below(rng, 4) : 0);
    argument->bytes = malloc(argument->length + 1);
    float value;
    for (size_t i = 0; i + sizeof(float) <= argument->length; i += sizeof(float)) {
        uint64_t kind = rng_below(rng, 40);
        value = kind == 0 ? NAN : kind == 1 ? INFINITY : kind == 2 ? 3e38f : (float)rng_normal(rng);
        memcpy(argument->bytes + i, &value, sizeof(float));
    }
    for (size_t i = argument->length / sizeof(float) * sizeof(float); i < argument->length; i++)
        argument->bytes[i] = (char)rng_below(rng, 256);
}

static void set_random(Argument *argument, SpirtRng *rng) {
    switch (rng_below(rng, 6)) {
    case 0: set_text(argument, words[rng_below(rng, sizeof(words) / sizeof(words[0]))]); break;
    case 1: set_text(argument, numbers[rng_below(rng, sizeof(numbers) / sizeof(numbers[0]))]); break;
    case 2:
    case 3: set_key(argument, rng); break;
    case 4: set_blob(argument, rng, rng_below(rng, 40)); break;
    default: {
        char text[32];
        snprintf(text, sizeof(text), "%lld", (long long)rng_below(rng, 20) - 3);
        set_text(argument, text);
    }
    }
}

/* A TSET that is well-formed more often than not: random rank and dims. */
static int make_tset(Argument *arguments, SpirtRng *rng) {
    int argc = 0;
    set_text(&arguments[argc++], "SPIRT.TSET");
    set_key(&arguments[argc++], rng);
    set_text(&arguments[argc++], rng_below(rng, 20) ? "FLOAT32" : "float64");
    int ndim = 1 + (int)rng_below(rng, rng_below(rng, 10) ? 4 : 6);
    size_t count = 1;
    for (int i = 0; i < ndim; i++) {
        uint64_t dim = rng_below(rng, 30) ? 1 + rng_below(rng, 4) : rng_below(rng, 3);
        char text[24];
        snprintf(text, sizeof(text), "%llu", (unsigned long long)dim);
        set_text(&arguments[argc++], text);
        count *= dim;
    }
    set_text(&arguments[argc++], rng_below(rng, 30) ? "BLOB" : "BLOBS");
    set_blob(&arguments[argc++], rng, rng_below(rng, 8) ? count : rng_below(rng, 300));
    return argc;
}

static int make_random_command(Argument *arguments, SpirtRng *rng) {
    int argc = 0;
    if (rng_below(rng, 50) == 0) {
        set_blob(&arguments[argc++], rng, 1 + rng_below(rng, 3)); /* garbage name */
    } else {
        set_text(&arguments[argc++], commands[rng_below(rng, sizeof(commands) / sizeof(commands[0]))]);
    }
    int extra = (int)rng_below(rng, 14);
    for (int i = 0; i < extra; i++) {
        /* Plausible structure often enough to get past the first checks. */
        if (i == 0 || i == 1)
            set_key(&arguments[argc++], rng);
        else
            set_random(&arguments[argc++], rng);
    }
    return argc;
}

/* Every tensor in the database is well-formed and finite. */
static void check_invariant(redisContext *c) {
    redisReply *keys = module_test_command(c, "KEYS", "fz:*", NULL);
    CHECK(keys && keys->type == REDIS_REPLY_ARRAY);
    int tensors = 0, good = 0;
    for (size_t i = 0; keys && i < keys->elements; i++) {
        redisReply *type = module_test_command(c, "TYPE", keys->element[i]->str, NULL);
        int is_tensor = type && type->type == REDIS_REPLY_STATUS && strcmp(type->str, "spirt-tns") == 0;
        if (type) freeReplyObject(type);
        if (!is_tensor) continue;
        tensors++;
        redisReply *full = module_test_command(c, "SPIRT.TGET", keys->element[i]->str, "FULL", NULL);
        const redisReply *count = module_test_field(full, "count"), *blob = module_test_field(full, "blob"),
                         *shape = module_test_field(full, "shape");
        int ok = count && blob && shape && blob->len == (size_t)count->integer * sizeof(float) &&
                 shape->elements >= 1 && shape->elements <= 4;
        long long product = 1;
        for (size_t d = 0; ok && d < shape->elements; d++) product *= shape->element[d]->integer;
        ok = ok && product == count->integer;
        for (size_t j = 0; ok && j < blob->len / sizeof(float); j++) {
            float value;
            memcpy(&value, blob->str + j * sizeof(float), sizeof(float));
            ok = isfinite(value);
        }
        good += ok;
        CHECKF(ok, "tensor %s is malformed or not finite", keys->element[i]->str);
        if (full) freeReplyObject(full);
    }
    CHECKF(tensors > 0, "the fuzzer created no tensor at all");
    fprintf(stderr, "  %d tensors checked, %d good\n", tensors, good);
    if (keys) freeReplyObject(keys);
}

int main(void) {
    const char *seed_text = getenv("SPIRT_FUZZ_SEED"), *count_text = getenv("SPIRT_FUZZ_COUNT");
    uint64_t seed = seed_text ? strtoull(seed_text, NULL, 10) : 20240611;
    long total = count_text ? atol(count_text) : 4000;
    /* Small inputs on worker threads too, so both paths are fuzzed. */
    static const char *const mixed[] = {"INLINE_MAX", "24", NULL};
    TestRedis server;
    if (module_test_start(&server, mixed, NULL, 0, NULL) != 0) return 1;
    redisContext *c = test_redis_connect(&server);
    if (c == NULL) {
        test_redis_stop(&server);
        return 1;
    }
    test_begin("fuzz: malformed commands get replies; the server lives; tensors stay finite");
    fprintf(stderr, "  seed %llu, %ld commands\n", (unsigned long long)seed, total);
    redisReply *set = module_test_command(c, "SET", "fz:string", "text", NULL);
    if (set) freeReplyObject(set);
    SpirtRng rng;
    rng_init(&rng, seed);
    long errors = 0, successes = 0, lost = 0;
    for (long n = 0; n < total && lost == 0; n++) {
        Argument arguments[24];
        int argc = rng_below(&rng, 3) == 0 ? make_tset(arguments, &rng) : make_random_command(arguments, &rng);
        const char *argv[24];
        size_t lengths[24];
        for (int i = 0; i < argc; i++) argv[i] = arguments[i].bytes, lengths[i] = arguments[i].length;
        redisReply *reply = redisCommandArgv(c, argc, argv, lengths);
        if (reply == NULL) {
            lost++;
            fprintf(stderr, "  command %ld (%s, %d arguments) lost the connection\n", n, argv[0], argc);
        } else {
            if (reply->type == REDIS_REPLY_ERROR)
                errors++;
            else
                successes++;
            freeReplyObject(reply);
        }
        for (int i = 0; i < argc; i++) free(arguments[i].bytes);
        if (n % 250 == 0) CHECKF(module_test_ping(c), "no PONG after command %ld", n);
    }
    CHECK(lost == 0);
    fprintf(stderr, "  %ld errors, %ld successes\n", errors, successes);
    CHECK(errors > total / 4 && successes > total / 20); /* both kinds were exercised */
    CHECK(module_test_ping(c));
    /* Wait for worker threads, then check the invariant and the memory. */
    for (int i = 0; i < 1000 && module_test_info_field(c, "spirt", "spirt_jobs_running") != 0; i++) module_test_ping(c);
    CHECK(module_test_info_field(c, "spirt", "spirt_jobs_running") == 0);
    CHECK(module_test_info_field(c, "spirt", "spirt_jobs_threaded_total") > 0);
    check_invariant(c);
    long long memory = module_test_info_field(c, "memory", "used_memory");
    CHECKF(memory > 0 && memory < 64LL * 1024 * 1024, "used_memory %lld", memory);
    redisFree(c);
    CHECK(test_redis_alive(&server));
    test_redis_stop(&server);
    return test_finish();
}
