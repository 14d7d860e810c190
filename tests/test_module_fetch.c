/* test_module_fetch.c -- SPIRT.FETCH between real servers: a tensor copied
 * from a string on another server over TCP and a Unix socket, with AUTH;
 * every way the bytes or the network can be wrong refused with nothing
 * written; a silent server costs the TIMEOUT, not the destination's main
 * thread; the result persists through the AOF.
 * SPIRT_TEST_LABELS: db */
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "module_client.h"
#include "spirt/digest.h"
#include "spirt/tensor.h"
#include "test.h"

enum { COUNT = 70001, PREFIX_BYTES = 37, SUFFIX_BYTES = 64 };
_Static_assert(PREFIX_BYTES == 37, "the pipelined FETCH below spells the offset out");

static float values[COUNT];

/* The encoding of `data` (tensor_encode_without_digest) as a malloc'd
 * buffer, with its size and BLAKE3 in hex. */
static unsigned char *encode(const float *data, size_t count, size_t *size, char hex[SPIRT_DIGEST_HEX_BYTES + 1]) {
    Tensor *tensor = tensor_from_vector(data, count, NULL);
    unsigned char *bytes = tensor ? tensor_encode_without_digest(tensor, size, NULL) : NULL;
    tensor_free(tensor);
    if (bytes) {
        unsigned char digest[SPIRT_DIGEST_BYTES];
        digest_blake3(bytes, *size, digest);
        digest_to_hex(digest, hex);
    }
    return bytes;
}

/* Stores prefix + bytes + suffix under `key` on the source, as a publication is laid out. */
static int put_wrapped(redisContext *c, const char *key, const unsigned char *bytes, size_t size) {
    size_t total = PREFIX_BYTES + size + SUFFIX_BYTES;
    unsigned char *wrapped = malloc(total);
    memset(wrapped, 'p', PREFIX_BYTES);
    memcpy(wrapped + PREFIX_BYTES, bytes, size);
    memset(wrapped + PREFIX_BYTES + size, 's', SUFFIX_BYTES);
    redisReply *reply = redisCommand(c, "SET %s %b", key, wrapped, total);
    int ok = reply && reply->type == REDIS_REPLY_STATUS;
    if (reply) freeReplyObject(reply);
    free(wrapped);
    return ok;
}

/* SPIRT.FETCH dst ADDRESS address KEY key RANGE PREFIX_BYTES size DIGEST hex, then `more` (NULL-ended). */
static redisReply *fetch(redisContext *c, const char *dst, const char *address, const char *key, size_t size,
                         const char *hex, const char *const *more) {
    char offset[24], length[24];
    snprintf(offset, sizeof(offset), "%d", PREFIX_BYTES);
    snprintf(length, sizeof(length), "%zu", size);
    const char *argv[24] = {"SPIRT.FETCH", dst, "ADDRESS", address, "KEY", key, "RANGE", offset, length, "DIGEST", hex};
    int argc = 11;
    for (int i = 0; more && more[i] && argc < 24; i++) argv[argc++] = more[i];
    return module_test_command_argv(c, argc, argv, NULL);
}

static int holds_values(redisContext *c, const char *key, const float *expected, size_t count) {
    size_t got = 0;
    float *stored = module_test_tget(c, key, &got);
    int same = stored && got == count && memcmp(stored, expected, count * sizeof(float)) == 0;
    free(stored);
    return same;
}

static int key_exists(redisContext *c, const char *key) {
    redisReply *reply = module_test_command(c, "EXISTS", key, NULL);
    int exists = reply && reply->type == REDIS_REPLY_INTEGER && reply->integer == 1;
    if (reply) freeReplyObject(reply);
    return exists;
}

static double now_ms(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec * 1e3 + now.tv_nsec / 1e6;
}

int main(void) {
    test_begin("FETCH: a tensor from another server, checked, and every refusal");
    module_test_random(values, COUNT, 11, 1.0);
    char socket_path[600], guarded_socket[600], dir[600];
    test_temp_path(socket_path, sizeof(socket_path), "source.sock");
    test_temp_path(guarded_socket, sizeof(guarded_socket), "guarded.sock");
    test_temp_path(dir, sizeof(dir), "destination");
    const char *source_extra[] = {"--unixsocket", socket_path, NULL};
    const char *guarded_extra[] = {"--unixsocket", guarded_socket, NULL}; /* a password once it answers */
    const char *destination_extra[] = {"--appendfsync", "always", NULL};
    TestRedis source = {0}, guarded = {0}, destination = {0};
    TestRedisOptions plain = {.extra_args = source_extra}, locked = {.extra_args = guarded_extra};
    if (test_redis_start(&source, &plain) != 0 || test_redis_start(&guarded, &locked) != 0 ||
        module_test_start(&destination, NULL, destination_extra, 1, dir) != 0) {
        test_check(0, __FILE__, __LINE__, "start", "servers did not start");
        test_redis_stop(&source);
        test_redis_stop(&guarded);
        return test_finish();
    }
    redisContext *src = test_redis_connect(&source), *dst = test_redis_connect(&destination);
    char tcp_address[64], unix_address[700], guarded_address[700];
    snprintf(tcp_address, sizeof(tcp_address), "127.0.0.1:%d", source.port);
    snprintf(unix_address, sizeof(unix_address), "unix:%s", socket_path);
    snprintf(guarded_address, sizeof(guarded_address), "unix:%s", guarded_socket);

    size_t size = 0;
    char hex[SPIRT_DIGEST_HEX_BYTES + 1];
    unsigned char *encoding = encode(values, COUNT, &size, hex);
    CHECK(encoding && put_wrapped(src, "pub", encoding, size));

    /* Over TCP and over a Unix socket: the values, bit for bit. */
    redisReply *reply = fetch(dst, "in:tcp", tcp_address, "pub", size, hex, NULL);
    CHECKF(reply && reply->type == REDIS_REPLY_INTEGER && (size_t)reply->integer == size, "%s",
           reply && reply->str ? reply->str : "");
    freeReplyObject(reply);
    CHECK(holds_values(dst, "in:tcp", values, COUNT));
    reply = fetch(dst, "in:unix", unix_address, "pub", size, hex, NULL);
    CHECK(reply && reply->type == REDIS_REPLY_INTEGER);
    freeReplyObject(reply);
    CHECK(holds_values(dst, "in:unix", values, COUNT));

    /* AUTH: refused without or with a wrong password; accepted with it. */
    redisContext *guard = test_redis_connect(&guarded);
    CHECK(module_test_ok(guard, "CONFIG", "SET", "requirepass", "s3cret", NULL));
    CHECK(put_wrapped(guard, "pub", encoding, size));
    const char *wrong_password[] = {"PASSWORD", "nope", NULL};
    const char *right_password[] = {"PASSWORD", "s3cret", "TIMEOUT", "3000", NULL};
    const char *user_and_password[] = {"USER", "default", "PASSWORD", "s3cret", NULL};
    reply = fetch(dst, "in:guarded", guarded_address, "pub", size, hex, NULL);
    CHECKF(module_test_is_error(reply, "REMOTE") && strstr(reply->str, "NOAUTH"), "%s", reply ? reply->str : "");
    freeReplyObject(reply);
    reply = fetch(dst, "in:guarded", guarded_address, "pub", size, hex, wrong_password);
    CHECKF(module_test_is_error(reply, "AUTH") && strstr(reply->str, "refused AUTH"), "%s", reply ? reply->str : "");
    freeReplyObject(reply);
    CHECK(!key_exists(dst, "in:guarded"));
    reply = fetch(dst, "in:guarded", guarded_address, "pub", size, hex, right_password);
    CHECK(reply && reply->type == REDIS_REPLY_INTEGER);
    freeReplyObject(reply);
    reply = fetch(dst, "in:user", guarded_address, "pub", size, hex, user_and_password);
    CHECK(reply && reply->type == REDIS_REPLY_INTEGER);
    freeReplyObject(reply);
    CHECK(holds_values(dst, "in:guarded", values, COUNT) && holds_values(dst, "in:user", values, COUNT));
    redisFree(guard);

    /* The secret stays out of the slow log, also for a refused command. */
    CHECK(module_test_ok(dst, "CONFIG", "SET", "slowlog-log-slower-than", "0", NULL));
    CHECK(module_test_ok(dst, "SLOWLOG", "RESET", NULL));
    reply = fetch(dst, "in:guarded", guarded_address, "pub", size, hex, right_password);
    freeReplyObject(reply);
    reply = module_test_command(dst, "SPIRT.FETCH", "in:x", "ADDRESS", tcp_address, "KEY", "pub", "RANGE", "0", "100",
                                "PASSWORD", "s3cret", "DIGEST", hex, "TIMEOUT", "-5", NULL);
    CHECK(module_test_is_error(reply, "INVALID")); /* refused at its TIMEOUT, after the PASSWORD */
    freeReplyObject(reply);
    reply = module_test_command(dst, "SLOWLOG", "GET", "10", NULL);
    int fetches = 0, redacted = 0, leaked = 0;
    for (size_t e = 0; reply && reply->type == REDIS_REPLY_ARRAY && e < reply->elements; e++) {
        redisReply *entry = reply->element[e], *arguments = entry->elements > 3 ? entry->element[3] : NULL;
        if (arguments == NULL || arguments->elements == 0 || strcasecmp(arguments->element[0]->str, "SPIRT.FETCH") != 0)
            continue;
        fetches++;
        for (size_t a = 0; a < arguments->elements; a++) {
            redacted += strcmp(arguments->element[a]->str, "(redacted)") == 0;
            leaked += strcmp(arguments->element[a]->str, "s3cret") == 0;
        }
    }
    freeReplyObject(reply);
    CHECKF(fetches == 2 && redacted == 2 && leaked == 0, "%d FETCH entries, %d redacted, %d with the password",
           fetches, redacted, leaked);
    CHECK(module_test_ok(dst, "CONFIG", "SET", "slowlog-log-slower-than", "10000", NULL));

    /* Bytes that are not what the digest names, or not a finite tensor:
     * refused, and an old value of the destination stays. */
    float old[3] = {1, 2, 3};
    CHECK(module_test_tset_vector(dst, "in:kept", old, 3));
    reply = module_test_command(src, "SETRANGE", "pub", "5000", "X", NULL); /* one byte of the values */
    freeReplyObject(reply);
    reply = fetch(dst, "in:kept", tcp_address, "pub", size, hex, NULL);
    CHECKF(module_test_is_error(reply, "AUTH") && strstr(reply->str, "DIGEST"), "%s", reply ? reply->str : "");
    freeReplyObject(reply);

    float *poisoned = malloc(COUNT * sizeof(float));
    memcpy(poisoned, values, COUNT * sizeof(float));
    poisoned[123] = NAN;
    char poisoned_hex[SPIRT_DIGEST_HEX_BYTES + 1];
    size_t poisoned_size = 0;
    unsigned char *poisoned_encoding = encode(poisoned, COUNT, &poisoned_size, poisoned_hex);
    CHECK(put_wrapped(src, "nan", poisoned_encoding, poisoned_size));
    reply = fetch(dst, "in:kept", tcp_address, "nan", poisoned_size, poisoned_hex, NULL);
    CHECKF(module_test_is_error(reply, "NONFINITE") && strstr(reply->str, "value 123"), "%s", reply ? reply->str : "");
    freeReplyObject(reply);

    /* A broken header, with a digest that matches the broken bytes. */
    unsigned char digest[SPIRT_DIGEST_BYTES];
    encoding[0] ^= 0x20;
    digest_blake3(encoding, size, digest);
    char broken_hex[SPIRT_DIGEST_HEX_BYTES + 1];
    digest_to_hex(digest, broken_hex);
    CHECK(put_wrapped(src, "broken", encoding, size));
    encoding[0] ^= 0x20;
    reply = fetch(dst, "in:kept", tcp_address, "broken", size, broken_hex, NULL);
    CHECKF(module_test_is_error(reply, "INVALID") && strstr(reply->str, "magic"), "%s", reply ? reply->str : "");
    freeReplyObject(reply);

    /* Fewer bytes than asked for, and a key that is not there. */
    reply = fetch(dst, "in:kept", tcp_address, "pub", size + 4 * 100, hex, NULL);
    CHECKF(module_test_is_error(reply, "INVALID") && strstr(reply->str, "not the"), "%s", reply ? reply->str : "");
    freeReplyObject(reply);
    reply = fetch(dst, "in:kept", tcp_address, "nothing-here", size, hex, NULL);
    CHECKF(module_test_is_error(reply, "NOKEY"), "%s", reply ? reply->str : "");
    freeReplyObject(reply);
    CHECK(holds_values(dst, "in:kept", old, 3));

    /* Nobody listening, and a listener that never answers: IO and TIMEOUT,
     * while the destination keeps answering. */
    char refused[32];
    snprintf(refused, sizeof(refused), "127.0.0.1:%d", test_free_port());
    reply = fetch(dst, "in:kept", refused, "pub", size, hex, NULL);
    CHECKF(module_test_is_error(reply, "IO") && strstr(reply->str, "connect"), "%s", reply ? reply->str : "");
    freeReplyObject(reply);
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in any = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t any_size = sizeof(any);
    CHECK(listener >= 0 && bind(listener, (struct sockaddr *)&any, sizeof(any)) == 0 && listen(listener, 4) == 0 &&
          getsockname(listener, (struct sockaddr *)&any, &any_size) == 0);
    char silent[32];
    snprintf(silent, sizeof(silent), "127.0.0.1:%d", ntohs(any.sin_port));
    redisContext *other = test_redis_connect(&destination);
    double start = now_ms();
    char length_text[24];
    snprintf(length_text, sizeof(length_text), "%zu", size);
    redisAppendCommand(dst, "SPIRT.FETCH in:kept ADDRESS %s KEY pub RANGE 37 %s DIGEST %s TIMEOUT 400", silent,
                       length_text, hex);
    redisBufferWrite(dst, &(int){0});
    CHECK(module_test_ping(other)); /* answered while FETCH waits */
    double ping_ms = now_ms() - start;
    reply = NULL;
    CHECKF(redisGetReply(dst, (void **)&reply) == REDIS_OK, "%s", dst->errstr);
    double fetch_ms = now_ms() - start;
    CHECKF(module_test_is_error(reply, "TIMEOUT"), "%s", reply ? reply->str : "");
    CHECKF(ping_ms < 200 && fetch_ms >= 350 && fetch_ms < 3000, "PING after %.0f ms, FETCH gave up after %.0f ms",
           ping_ms, fetch_ms);
    if (reply) freeReplyObject(reply);
    close(listener);

    /* Syntax, and places where it may not run. */
    static const ModuleTestBadCase cases[] = {
        {{"SPIRT.FETCH", "d", "ADDRESS", "a:1", "KEY", "k", "RANGE", "0", "100"}, "ERR", "wrong number"},
        {{"SPIRT.FETCH", "d", "ADDRESS", "a:1", "KEY", "k", "RANGE", "0", "100", "TIMEOUT", "5"}, "INVALID", "required"},
        {{"SPIRT.FETCH", "d", "ADDRESS", "a:1", "KEY", "k", "RANGE", "0", "101", "DIGEST", "00"}, "INVALID", "96 + 4"},
        {{"SPIRT.FETCH", "d", "ADDRESS", "a:1", "KEY", "k", "RANGE", "0", "100", "DIGEST", "00"}, "INVALID", "64 hex"},
        {{"SPIRT.FETCH", "d", "ADDRESS", "a:1", "KEY", "k", "RANGE", "-1", "100", "DIGEST", "00"}, "INVALID", "offset"},
        {{"SPIRT.FETCH", "d", "ADDRESS", "a:1", "KEY", "k", "RANGE", "0", "100", "DIGEST", "00", "TIMEOUT", "0"},
         "INVALID", "TIMEOUT"},
        {{"SPIRT.FETCH", "d", "ADDRESS", "a:1", "KEY", "k", "RANGE", "0", "100", "DIGEST", "00", "USER", "u"},
         "INVALID", "PASSWORD"},
        {{"SPIRT.FETCH", "d", "ADDRESS", "a:1", "ADDRESS", "b:1", "RANGE", "0", "100", "DIGEST", "00"}, "INVALID",
         "repeated"},
        {{"SPIRT.FETCH", "d", "ADDRESS", "a:1", "KEY", "k", "RANGE", "0", "100", "DIGEST", "00", "COLOR", "red"},
         "INVALID", "COLOR"},
    };
    module_test_expect_errors(dst, cases, sizeof(cases) / sizeof(cases[0]));
    /* An unparseable address is the command's error, found on the worker. */
    char long_digest[SPIRT_DIGEST_HEX_BYTES + 1];
    memset(long_digest, 'a', SPIRT_DIGEST_HEX_BYTES);
    long_digest[SPIRT_DIGEST_HEX_BYTES] = '\0';
    reply = fetch(dst, "in:kept", "no-port-here", "pub", size, long_digest, NULL);
    CHECKF(module_test_is_error(reply, "INVALID") && strstr(reply->str, "ADDRESS"), "%s", reply ? reply->str : "");
    freeReplyObject(reply);
    reply = module_test_command(dst, "MULTI", NULL);
    freeReplyObject(reply);
    reply = fetch(dst, "in:multi", tcp_address, "pub", size, hex, NULL);
    freeReplyObject(reply);
    reply = module_test_command(dst, "EXEC", NULL);
    CHECKF(reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 1 &&
               module_test_is_error(reply->element[0], "INVALID") && strstr(reply->element[0]->str, "MULTI"),
           "EXEC: %s", reply && reply->elements ? reply->element[0]->str : "");
    freeReplyObject(reply);
    reply = module_test_command(dst, "EVAL", "return redis.call('SPIRT.FETCH','d','ADDRESS','a:1','KEY','k','RANGE','0','100','DIGEST','00')",
                                "0", NULL);
    CHECKF(reply && reply->type == REDIS_REPLY_ERROR, "EVAL: %s", reply && reply->str ? reply->str : "");
    freeReplyObject(reply);
    CHECK(!key_exists(dst, "in:multi") && !key_exists(dst, "d") && holds_values(dst, "in:kept", old, 3));

    /* A fetched tensor is an ordinary tensor: it survives a crash through the AOF. */
    redisFree(dst);
    redisFree(other);
    test_redis_kill(&destination);
    TestRedis again = {0};
    CHECK(module_test_start(&again, NULL, destination_extra, 1, dir) == 0);
    dst = test_redis_connect(&again);
    CHECK(dst && holds_values(dst, "in:tcp", values, COUNT) && holds_values(dst, "in:user", values, COUNT));
    if (dst) redisFree(dst);
    redisFree(src);
    free(encoding);
    free(poisoned_encoding);
    free(poisoned);
    test_redis_stop(&again);
    test_redis_stop(&source);
    test_redis_stop(&guarded);
    return test_finish();
}
