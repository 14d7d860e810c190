/* test_store.c -- the Redis client against real servers and crafted ones.
 *
 * Real redis-server processes (tests/redis_fixture.h) for commands, binary
 * values, a 64 MB value, pipelining, errors, AUTH with ACL users, a server
 * killed and restarted. A "fake server" thread in this test, on a real
 * loopback socket, answers the connection's PING and then sends crafted
 * bytes (malformed replies) or nothing (time-outs): what a faulty or
 * hostile database could do, and what a real Redis never does.
 *
 * SPIRT_TEST_LABELS: db */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "redis_fixture.h"
#include "spirt/rng.h"
#include "spirt/store.h"
#include "store_round_trip.h"
#include "test.h"

/* --- A fake server on a real socket --- */

typedef struct FakeServer {
    int listen_fd;
    int port;
    int family; /* AF_INET or AF_INET6 */
    pthread_t thread;
    /* Sent in turn, each after one request arrives; NULL entries send
     * nothing (the server goes silent). response_lengths[i] = 0 means
     * strlen. After the last, the thread waits for the client to close. */
    const char *responses[4];
    size_t response_lengths[4];
    size_t response_count;
    int close_after_last; /* 1: hang up right after the last response */
} FakeServer;

static void send_all(int fd, const char *data, size_t length) {
    while (length > 0) {
        ssize_t n = send(fd, data, length, MSG_NOSIGNAL);
        if (n <= 0) return; /* the client gave up: fine */
        data += n;
        length -= (size_t)n;
    }
}

static void *fake_server_main(void *argument) {
    FakeServer *server = argument;
    int fd = accept(server->listen_fd, NULL, NULL);
    if (fd < 0) return NULL;
    char buffer[4096];
    for (size_t i = 0; i < server->response_count; i++) {
        if (recv(fd, buffer, sizeof(buffer), 0) <= 0) break;
        const char *response = server->responses[i];
        if (response == NULL) continue;
        size_t length = server->response_lengths[i] ? server->response_lengths[i] : strlen(response);
        send_all(fd, response, length);
    }
    while (!server->close_after_last && recv(fd, buffer, sizeof(buffer), 0) > 0) {
    }
    close(fd);
    return NULL;
}

/* Listens on loopback; with `serve`, a thread answers one connection. */
static int fake_server_start(FakeServer *server, int family, int serve) {
    server->family = family;
    server->listen_fd = socket(family, SOCK_STREAM, 0);
    if (server->listen_fd < 0) return -1;
    struct sockaddr_storage address = {0};
    socklen_t length;
    if (family == AF_INET6) {
        struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&address;
        v6->sin6_family = AF_INET6;
        v6->sin6_addr = in6addr_loopback;
        length = sizeof(*v6);
    } else {
        struct sockaddr_in *v4 = (struct sockaddr_in *)&address;
        v4->sin_family = AF_INET;
        v4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        length = sizeof(*v4);
    }
    if (bind(server->listen_fd, (struct sockaddr *)&address, length) != 0 || listen(server->listen_fd, 4) != 0 ||
        getsockname(server->listen_fd, (struct sockaddr *)&address, &length) != 0) {
        close(server->listen_fd);
        return -1;
    }
    server->port = ntohs(family == AF_INET6 ? ((struct sockaddr_in6 *)&address)->sin6_port
                                           : ((struct sockaddr_in *)&address)->sin_port);
    if (serve && pthread_create(&server->thread, NULL, fake_server_main, server) != 0) {
        close(server->listen_fd);
        return -1;
    }
    return 0;
}

static void fake_server_stop(FakeServer *server, int serve) {
    if (serve) pthread_join(server->thread, NULL);
    close(server->listen_fd);
}

/* Connects to a fake server that answers PING, then sends `crafted` in
 * reply to the next command; returns the status of that command. */
static int command_against_crafted(const char *crafted, size_t crafted_length, size_t max_reply_bytes,
                                   int close_after, SpirtError *error) {
    FakeServer server = {.responses = {"+PONG\r\n", crafted}, .response_lengths = {0, crafted_length},
                         .response_count = 2, .close_after_last = close_after};
    if (fake_server_start(&server, AF_INET, 1) != 0) return spirt_error_set(error, SPIRT_ERR_IO, "no fake server");
    StoreOptions options = {.port = server.port, .read_timeout_ms = 2000, .max_reply_bytes = max_reply_bytes};
    StoreConn *conn = store_connect(&options, error);
    int status = SPIRT_ERR_INTERNAL;
    if (conn != NULL) {
        StoreReply *reply = NULL;
        status = store_command(conn, &reply, error, "GET %s", "key");
        CHECK(reply == NULL || status == SPIRT_OK);
        store_reply_free(reply);
        /* A failure of the connection is sticky, whatever it was. */
        if (status != SPIRT_OK && status != SPIRT_ERR_SERVER) {
            SpirtError again;
            CHECK(store_ping(conn, &again) == status);
            CHECK(store_conn_status(conn) == status);
        }
        store_free(conn);
    }
    fake_server_stop(&server, 1);
    return status;
}

/* A default connection to a fixture server; NULL (a failed check) if not. */
static StoreConn *connect_plain(const TestRedis *redis) {
    SpirtError error;
    StoreOptions options = {.port = redis->port};
    StoreConn *conn = store_connect(&options, &error);
    CHECK_OK(conn ? SPIRT_OK : error.code, &error);
    return conn;
}

/* --- Tests --- */

static void test_addresses(void) {
    test_begin("address strings");
    StoreAddress address;
    SpirtError error;
    CHECK_OK(store_address_parse("10.1.2.3:7000", &address, &error), &error);
    CHECK(strcmp(address.host, "10.1.2.3") == 0 && address.port == 7000 && address.tls == -1);
    CHECK(!address.has_password && address.database == -1);
    CHECK_OK(store_address_parse("db.example", &address, &error), &error);
    CHECK(strcmp(address.host, "db.example") == 0 && address.port == 0);
    CHECK_OK(store_address_parse("[::1]:6380", &address, &error), &error);
    CHECK(strcmp(address.host, "::1") == 0 && address.port == 6380);
    CHECK_OK(store_address_parse("fe80::1", &address, &error), &error);
    CHECK(strcmp(address.host, "fe80::1") == 0 && address.port == 0);
    CHECK_OK(store_address_parse("rediss://peer%201:p%40ss:word@h.example:6390/3", &address, &error), &error);
    CHECK(address.tls == 1 && strcmp(address.host, "h.example") == 0 && address.port == 6390);
    CHECK(strcmp(address.username, "peer 1") == 0 && strcmp(address.password, "p@ss:word") == 0);
    CHECK(address.has_password && address.database == 3);
    CHECK_OK(store_address_parse("redis://:secret@127.0.0.1", &address, &error), &error);
    CHECK(address.tls == 0 && address.username[0] == '\0' && strcmp(address.password, "secret") == 0);
    CHECK(address.port == 0 && address.database == -1);

    /* The options keep what the address does not say. */
    StoreOptions options = {.port = 1111, .username = "u", .password = "p", .database = 5};
    options.tls.enabled = 1;
    CHECK_OK(store_address_parse("10.0.0.9:2222", &address, &error), &error);
    store_options_use_address(&options, &address);
    CHECK(strcmp(options.host, "10.0.0.9") == 0 && options.port == 2222 && options.tls.enabled == 1);
    CHECK(strcmp(options.username, "u") == 0 && strcmp(options.password, "p") == 0 && options.database == 5);
    CHECK_OK(store_address_parse("redis://a:b@h/0", &address, &error), &error);
    store_options_use_address(&options, &address);
    CHECK(options.port == 2222 && options.tls.enabled == 0 && options.database == 0);
    CHECK(strcmp(options.username, "a") == 0 && strcmp(options.password, "b") == 0);

    CHECK_OK(store_address_parse("unix:/run/spirt/db.sock", &address, &error), &error);
    CHECK(strcmp(address.host, "/run/spirt/db.sock") == 0 && address.port == 0 && address.tls == 0);
    CHECK_OK(store_address_parse("/tmp/x.sock", &address, &error), &error);
    CHECK(strcmp(address.host, "/tmp/x.sock") == 0);
    CHECK(store_address_parse("unix:relative.sock", &address, &error) == SPIRT_ERR_INVALID);

    const char *bad[] = {"",          "http://h:1",       "h:0",           "h:65536",      "h:12x",
                         "h:",        "[::1",             "[::1]x",        "redis://u@h",  "redis://h/db",
                         "redis://h/-1", "redis://u:%zz@h", "redis://:%00@h", "redis://@",   "a b:1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECKF(store_address_parse(bad[i], &address, &error) == SPIRT_ERR_INVALID, "'%s' was accepted", bad[i]);
    /* Messages never repeat a password. */
    CHECK(store_address_parse("redis://user:hunter2%zz@h", &address, &error) == SPIRT_ERR_INVALID);
    CHECK(strstr(error.message, "hunter2") == NULL);
}

static void test_basic_commands(const TestRedis *redis) {
    test_begin("basic commands and typed helpers");
    SpirtError error;
    StoreOptions options = {.port = redis->port, .client_name = "spirt-test", .database = 2};
    StoreConn *conn = store_connect(&options, &error);
    CHECK_OK(conn ? SPIRT_OK : error.code, &error);
    if (conn == NULL) return;
    CHECK(store_conn_status(conn) == SPIRT_OK);
    CHECK_OK(store_ping(conn, &error), &error);

    /* The session is on database 2 with its name: asked of the server. */
    StoreReply *reply = NULL;
    CHECK_OK(store_command(conn, &reply, &error, "CLIENT GETNAME"), &error);
    CHECK(reply && reply->type == STORE_REPLY_STRING && strcmp(reply->str, "spirt-test") == 0);
    store_reply_free(reply);
    CHECK_OK(store_set(conn, "where", "db2", 3, &error), &error);
    redisContext *direct = test_redis_connect(redis);
    redisReply *in_db2 = direct ? redisCommand(direct, "SELECT 2") : NULL;
    if (in_db2) freeReplyObject(in_db2);
    in_db2 = direct ? redisCommand(direct, "GET where") : NULL;
    CHECK(in_db2 && in_db2->type == REDIS_REPLY_STRING && strcmp(in_db2->str, "db2") == 0);
    if (in_db2) freeReplyObject(in_db2);
    if (direct) redisFree(direct);

    char *value = NULL;
    size_t length = 0;
    CHECK_OK(store_get(conn, "where", &value, &length, &error), &error);
    CHECK(value && length == 3 && memcmp(value, "db2", 3) == 0 && value[3] == '\0');
    free(value);
    CHECK_ERROR(store_get(conn, "missing", &value, &length, &error), SPIRT_ERR_NOT_FOUND, &error, "missing");
    CHECK(value == NULL);

    int flag = -1;
    CHECK_OK(store_exists(conn, "where", &flag, &error), &error);
    CHECK(flag == 1);
    CHECK_OK(store_del(conn, "where", &flag, &error), &error);
    CHECK(flag == 1);
    CHECK_OK(store_del(conn, "where", &flag, &error), &error);
    CHECK(flag == 0);
    CHECK_OK(store_exists(conn, "where", &flag, &error), &error);
    CHECK(flag == 0);

    long long number = 0;
    CHECK_OK(store_set_int(conn, "n", -42, &error), &error);
    CHECK_OK(store_get_int(conn, "n", &number, &error), &error);
    CHECK(number == -42);
    CHECK_OK(store_incr(conn, "n", 50, &number, &error), &error);
    CHECK(number == 8);
    CHECK_OK(store_incr(conn, "fresh", -3, &number, &error), &error);
    CHECK(number == -3);
    CHECK_OK(store_set(conn, "text", "12abc", 5, &error), &error);
    CHECK_ERROR(store_get_int(conn, "text", &number, &error), SPIRT_ERR_FORMAT, &error, "not an integer");
    CHECK_ERROR(store_get_int(conn, "nothing", &number, &error), SPIRT_ERR_NOT_FOUND, &error, "nothing");
    /* INCRBY on text: the server's error, and the connection goes on. */
    CHECK_ERROR(store_incr(conn, "text", 1, &number, &error), SPIRT_ERR_SERVER, &error, "not an integer");
    CHECK(store_conn_status(conn) == SPIRT_OK);

    CHECK_OK(store_set_px(conn, "ttl", "x", 1, 60000, &error), &error);
    CHECK_OK(store_command(conn, &reply, &error, "PTTL ttl"), &error);
    CHECK(reply && reply->type == STORE_REPLY_INTEGER && reply->integer > 0 && reply->integer <= 60000);
    store_reply_free(reply);
    CHECK(store_set_px(conn, "ttl", "x", 1, 0, &error) == SPIRT_ERR_INVALID);

    CHECK_OK(store_hset(conn, "h", "a", "1", 1, &error), &error);
    CHECK_OK(store_hset(conn, "h", "b", "22", 2, &error), &error);
    CHECK_OK(store_hget(conn, "h", "b", &value, &length, &error), &error);
    CHECK(value && length == 2 && strcmp(value, "22") == 0);
    free(value);
    CHECK_ERROR(store_hget(conn, "h", "zz", &value, NULL, &error), SPIRT_ERR_NOT_FOUND, &error, "zz");
    CHECK_OK(store_hdel(conn, "h", "a", &error), &error);
    CHECK_OK(store_command(conn, &reply, &error, "HGETALL %s", "h"), &error);
    CHECK(reply && reply->type == STORE_REPLY_ARRAY && reply->elements == 2);
    if (reply && reply->elements == 2) CHECK(strcmp(reply->element[0]->str, "b") == 0);
    store_reply_free(reply);

    /* Nil and array replies through the generic call. */
    CHECK_OK(store_command(conn, &reply, &error, "GET %s", "absent"), &error);
    CHECK(reply && reply->type == STORE_REPLY_NIL);
    store_reply_free(reply);
    CHECK_OK(store_command(conn, NULL, &error, "SET %s %s", "discarded", "reply"), &error);

    /* Bad uses are refused before anything is sent. */
    CHECK(store_command_argv(conn, 0, NULL, NULL, &reply, &error) == SPIRT_ERR_INVALID);
    CHECK_ERROR(store_command(conn, &reply, &error, "GET %q"), SPIRT_ERR_INVALID, &error, "format");
    /* Over the request limit: refused from the lengths alone, before the
     * (here absent) bytes would be read. */
    const char *huge_argv[] = {"SET", "k", "tiny"};
    const size_t huge_lengths[] = {3, 1, STORE_MAX_REQUEST_BYTES + 1};
    CHECK_ERROR(store_command_argv(conn, 3, huge_argv, huge_lengths, NULL, &error), SPIRT_ERR_INVALID, &error,
                "request limit");
    const size_t near_lengths[] = {3, 1, STORE_MAX_REQUEST_BYTES - 8};
    CHECK_ERROR(store_command_argv(conn, 3, huge_argv, near_lengths, NULL, &error), SPIRT_ERR_INVALID, &error,
                "request limit");
    CHECK_ERROR(store_get_reply(conn, &reply, &error), SPIRT_ERR_INVALID, &error, "no reply pending");
    CHECK_OK(store_append(conn, &error, "PING"), &error);
    CHECK_ERROR(store_ping(conn, &error), SPIRT_ERR_INVALID, &error, "unread");
    CHECK_OK(store_get_reply(conn, &reply, &error), &error);
    CHECK(reply && reply->type == STORE_REPLY_STATUS && strcmp(reply->str, "PONG") == 0);
    store_reply_free(reply);
    CHECK(store_conn_status(conn) == SPIRT_OK);
    store_free(conn);

    /* Bad options. */
    StoreOptions bad = {.port = 70000};
    CHECK_ERROR(store_connect(&bad, &error) ? SPIRT_OK : error.code, SPIRT_ERR_INVALID, &error, "port");
    StoreOptions user_only = {.port = redis->port, .username = "u"};
    CHECK_ERROR(store_connect(&user_only, &error) ? SPIRT_OK : error.code, SPIRT_ERR_INVALID, &error, "password");
    StoreOptions spaced = {.port = redis->port, .client_name = "a b"};
    CHECK_ERROR(store_connect(&spaced, &error) ? SPIRT_OK : error.code, SPIRT_ERR_INVALID, &error, "white space");
    StoreOptions far_db = {.port = redis->port, .database = 1000};
    CHECK_ERROR(store_connect(&far_db, &error) ? SPIRT_OK : error.code, SPIRT_ERR_SERVER, &error, "SELECT");
}

static void test_binary_values(const TestRedis *redis) {
    test_begin("binary-safe values: NUL, CR LF, every byte");
    SpirtError error;
    StoreConn *conn = connect_plain(redis);
    if (conn == NULL) return;
    char blob[1024];
    for (size_t i = 0; i < sizeof(blob); i++) blob[i] = (char)(i * 7 + (i >> 8));
    memcpy(blob, "\0\r\n$5\r\n*1\r\n", 12); /* looks like RESP: must stay data */
    CHECK_OK(store_set(conn, "bin", blob, sizeof(blob), &error), &error);
    char *value = NULL;
    size_t length = 0;
    CHECK_OK(store_get(conn, "bin", &value, &length, &error), &error);
    CHECK(value && length == sizeof(blob) && memcmp(value, blob, sizeof(blob)) == 0);
    free(value);
    /* The server's own count agrees (STRLEN is computed by Redis). */
    StoreReply *reply = NULL;
    CHECK_OK(store_command(conn, &reply, &error, "STRLEN bin"), &error);
    CHECK(reply && reply->integer == (long long)sizeof(blob));
    store_reply_free(reply);

    /* Binary keys and fields through argv, and the empty value. */
    const char *argv[] = {"HSET", "h\0key", "f\r\n", blob};
    const size_t lengths[] = {4, 5, 3, 100};
    CHECK_OK(store_command_argv(conn, 4, argv, lengths, NULL, &error), &error);
    const char *get_argv[] = {"HGET", "h\0key", "f\r\n"};
    const size_t get_lengths[] = {4, 5, 3};
    CHECK_OK(store_command_argv(conn, 3, get_argv, get_lengths, &reply, &error), &error);
    CHECK(reply && reply->type == STORE_REPLY_STRING && reply->len == 100 && memcmp(reply->str, blob, 100) == 0);
    store_reply_free(reply);
    CHECK_OK(store_set(conn, "empty", NULL, 0, &error), &error);
    CHECK_OK(store_get(conn, "empty", &value, &length, &error), &error);
    CHECK(value && length == 0 && value[0] == '\0');
    free(value);
    store_free(conn);
}

static void test_large_value(const TestRedis *redis) {
    test_begin("a 64 MB value");
    SpirtError error;
    StoreConn *conn = connect_plain(redis);
    if (conn == NULL) return;
    size_t size = (size_t)64 << 20;
    unsigned char *blob = malloc(size);
    if (blob == NULL) {
        store_free(conn);
        return;
    }
    SpirtRng rng;
    rng_init(&rng, 1234);
    for (size_t i = 0; i < size; i += 8) {
        uint64_t word = rng_next_u64(&rng);
        memcpy(blob + i, &word, 8);
    }
    CHECK_OK(store_set(conn, "big", blob, size, &error), &error);
    StoreReply *reply = NULL;
    CHECK_OK(store_command(conn, &reply, &error, "STRLEN big"), &error);
    CHECK(reply && reply->integer == (long long)size);
    store_reply_free(reply);
    /* A slice from the middle, cut by the server. */
    CHECK_OK(store_command(conn, &reply, &error, "GETRANGE big 40000000 40000999"), &error);
    CHECK(reply && reply->len == 1000 && memcmp(reply->str, blob + 40000000, 1000) == 0);
    store_reply_free(reply);
    char *value = NULL;
    size_t length = 0;
    CHECK_OK(store_get(conn, "big", &value, &length, &error), &error);
    CHECK(value && length == size && memcmp(value, blob, size) == 0);
    free(value);
    /* A reply over the client's limit is refused, not allocated. */
    StoreOptions small = {.port = redis->port, .max_reply_bytes = (size_t)1 << 20};
    StoreConn *limited = store_connect(&small, &error);
    CHECK_OK(limited ? SPIRT_OK : error.code, &error);
    if (limited) {
        CHECK_ERROR(store_get(limited, "big", &value, &length, &error), SPIRT_ERR_PROTOCOL, &error, "limit");
        store_free(limited);
    }
    free(blob);
    store_free(conn);
}

static void test_round_trips(const TestRedis *redis) {
    test_begin("values of every size round-trip bit for bit (TCP)");
    StoreConn *conn = connect_plain(redis);
    if (conn == NULL) return;
    store_check_round_trips(conn, 31, 0);
    store_free(conn);
}

static void test_pipelining(const TestRedis *redis) {
    test_begin("pipelining 10,000 commands");
    enum { COUNT = 10000 };
    SpirtError error;
    StoreConn *conn = connect_plain(redis);
    if (conn == NULL) return;
    int ok = 1;
    for (int i = 0; i < COUNT && ok; i++) {
        char key[32], value[32];
        snprintf(key, sizeof(key), "p:%d", i);
        snprintf(value, sizeof(value), "%d", i * 3);
        const char *argv[] = {"SET", key, value};
        ok = store_append_argv(conn, 3, argv, NULL, &error) == SPIRT_OK;
    }
    CHECK_OK(ok ? SPIRT_OK : error.code, &error);
    CHECK(store_pending_replies(conn) == COUNT);
    int all_ok = 1;
    for (int i = 0; i < COUNT; i++) {
        StoreReply *reply = NULL;
        int status = store_get_reply(conn, &reply, &error);
        all_ok &= status == SPIRT_OK && reply->type == STORE_REPLY_STATUS && strcmp(reply->str, "OK") == 0;
        store_reply_free(reply);
    }
    CHECK(all_ok);
    CHECK(store_pending_replies(conn) == 0);

    /* Reads in one pipeline, with an error reply in the middle that takes
     * only its own place. */
    for (int i = 0; i < COUNT; i++) {
        if (i == 5000)
            store_append(conn, &error, "INCR %s", "text-key-that-is-not-there-and-then-is");
        store_append(conn, &error, "GET p:%d", i);
    }
    store_append(conn, &error, "SET %s %s", "text-key-that-is-not-there-and-then-is", "x");
    store_append(conn, &error, "INCR %s", "text-key-that-is-not-there-and-then-is");
    CHECK(store_pending_replies(conn) == COUNT + 3);
    int values_ok = 1;
    for (int i = 0; i < COUNT; i++) {
        StoreReply *reply = NULL;
        if (i == 5000) {
            CHECK_OK(store_get_reply(conn, &reply, &error), &error); /* INCR of a fresh key: 1 */
            CHECK(reply && reply->type == STORE_REPLY_INTEGER && reply->integer == 1);
            store_reply_free(reply);
        }
        int status = store_get_reply(conn, &reply, &error);
        values_ok &= status == SPIRT_OK && reply->type == STORE_REPLY_STRING && atoi(reply->str) == i * 3;
        store_reply_free(reply);
    }
    CHECK(values_ok);
    CHECK_OK(store_get_reply(conn, NULL, &error), &error);
    CHECK_ERROR(store_get_reply(conn, NULL, &error), SPIRT_ERR_SERVER, &error, "not an integer");
    CHECK(store_pending_replies(conn) == 0 && store_conn_status(conn) == SPIRT_OK);
    CHECK_OK(store_ping(conn, &error), &error);
    store_free(conn);
}

static void test_server_errors(const TestRedis *redis) {
    test_begin("server errors are results, not broken connections");
    SpirtError error;
    StoreConn *conn = connect_plain(redis);
    if (conn == NULL) return;
    StoreReply *reply = (StoreReply *)&error; /* must be reset to NULL */
    CHECK_ERROR(store_command(conn, &reply, &error, "NOSUCHCOMMAND a b"), SPIRT_ERR_SERVER, &error,
                "unknown command");
    CHECK(reply == NULL);
    CHECK(strncmp(error.message, "ERR", 3) == 0); /* exactly the server's text */
    CHECK_ERROR(store_command(conn, &reply, &error, "GET"), SPIRT_ERR_SERVER, &error, "wrong number of arguments");
    CHECK_OK(store_command(conn, NULL, &error, "LPUSH %s %s", "list", "x"), &error);
    CHECK_ERROR(store_get(conn, "list", NULL, NULL, &error), SPIRT_ERR_SERVER, &error, "WRONGTYPE");
    CHECK(store_conn_status(conn) == SPIRT_OK);
    CHECK_OK(store_ping(conn, &error), &error);
    store_free(conn);
}

static void test_refused_and_silent(void) {
    test_begin("connection refused, a silent server, a server that stops answering");
    SpirtError error;
    int port = test_free_port(); /* nobody listens there */
    StoreOptions refused = {.port = port, .connect_timeout_ms = 2000};
    CHECK_ERROR(store_connect(&refused, &error) ? SPIRT_OK : error.code, SPIRT_ERR_IO, &error, "refused");

    /* Listening but never accepting: the kernel completes the TCP
     * handshake, nobody ever answers PING. */
    FakeServer silent = {0};
    CHECK(fake_server_start(&silent, AF_INET, 0) == 0);
    StoreOptions options = {.port = silent.port, .connect_timeout_ms = 300};
    CHECK_ERROR(store_connect(&options, &error) ? SPIRT_OK : error.code, SPIRT_ERR_TIMEOUT, &error, "timed out");
    fake_server_stop(&silent, 0);

    /* Answers the connection's PING, then goes silent. */
    FakeServer quiet = {.responses = {"+PONG\r\n", NULL}, .response_count = 2};
    CHECK(fake_server_start(&quiet, AF_INET, 1) == 0);
    StoreOptions read_limited = {.port = quiet.port, .read_timeout_ms = 200};
    StoreConn *conn = store_connect(&read_limited, &error);
    CHECK_OK(conn ? SPIRT_OK : error.code, &error);
    if (conn) {
        CHECK_ERROR(store_ping(conn, &error), SPIRT_ERR_TIMEOUT, &error, "read time-out");
        /* Sticky: the late reply would be out of step with any later one. */
        CHECK_ERROR(store_set(conn, "k", "v", 1, &error), SPIRT_ERR_TIMEOUT, &error, "read time-out");
        CHECK(store_conn_status(conn) == SPIRT_ERR_TIMEOUT);
        store_free(conn);
    }
    fake_server_stop(&quiet, 1);
}

static void test_ipv6(void) {
    test_begin("IPv6 loopback");
    const char *args[] = {"--bind", "127.0.0.1", "::1", NULL};
    TestRedisOptions options = {.extra_args = args};
    TestRedis redis;
    if (test_redis_start(&redis, &options) != 0) {
        CHECK(!"redis-server on ::1 did not start");
        return;
    }
    SpirtError error;
    char address[64];
    snprintf(address, sizeof(address), "redis://[::1]:%d/1", redis.port);
    StoreConn *conn = store_connect_address(address, NULL, &error);
    CHECK_OK(conn ? SPIRT_OK : error.code, &error);
    if (conn) {
        CHECK(strncmp(store_conn_address(conn), "[::1]:", 6) == 0);
        StoreReply *reply = NULL;
        CHECK_OK(store_command(conn, &reply, &error, "CLIENT INFO"), &error);
        /* The server saw us come from ::1, on database 1. */
        CHECK(reply && strstr(reply->str, "addr=[::1]:") != NULL && strstr(reply->str, " db=1 ") != NULL);
        store_reply_free(reply);
        store_free(conn);
    }
    test_redis_stop(&redis);
}

static void test_kill_and_restart(void) {
    test_begin("the server killed mid-session, restarted on the same port");
    TestRedis redis;
    if (test_redis_start(&redis, NULL) != 0) {
        CHECK(!"redis-server did not start");
        return;
    }
    int port = redis.port;
    SpirtError error;
    StoreOptions options = {.port = port, .read_timeout_ms = 5000};
    StoreConn *conn = store_connect(&options, &error);
    StoreOptions automatic_options = options;
    automatic_options.auto_reconnect = 1;
    StoreConn *automatic = store_connect(&automatic_options, &error);
    CHECK(conn != NULL && automatic != NULL);
    if (conn == NULL || automatic == NULL) {
        store_free(conn);
        store_free(automatic);
        test_redis_stop(&redis);
        return;
    }
    CHECK_OK(store_set(conn, "before", "1", 1, &error), &error);
    test_redis_kill(&redis);
    int status = store_set(conn, "after", "2", 1, &error);
    CHECKF(status == SPIRT_ERR_CLOSED || status == SPIRT_ERR_IO, "status %d: %s", status, error.message);
    CHECK(store_conn_status(conn) == status);
    CHECK(store_ping(conn, &error) == status); /* sticky, no socket touched */
    CHECK(store_reconnect(conn, &error) == SPIRT_ERR_IO); /* nobody there yet */

    TestRedisOptions same_port = {.port = port};
    if (test_redis_start(&redis, &same_port) != 0) {
        CHECK(!"redis-server did not restart on its port");
        store_free(conn);
        store_free(automatic);
        return;
    }
    CHECK_OK(store_reconnect(conn, &error), &error);
    CHECK(store_conn_status(conn) == SPIRT_OK);
    CHECK_OK(store_set(conn, "after", "2", 1, &error), &error);
    int exists = 1;
    CHECK_OK(store_exists(conn, "before", &exists, &error), &error);
    CHECK(exists == 0); /* a new server without persistence */

    /* auto_reconnect: the call that meets the dead connection fails, the
     * next one reconnects by itself. */
    status = store_ping(automatic, &error);
    CHECKF(status == SPIRT_ERR_CLOSED || status == SPIRT_ERR_IO, "status %d: %s", status, error.message);
    CHECK_OK(store_ping(automatic, &error), &error);
    CHECK(store_conn_status(automatic) == SPIRT_OK);
    store_free(automatic);
    store_free(conn);
    test_redis_stop(&redis);
}

static void test_auth(void) {
    test_begin("AUTH with ACL users, wrong passwords, re-authentication");
    TestRedis redis;
    /* Users are made with ACL SETUSER once the server runs: the fixture's
     * readiness PING carries no password. */
    if (test_redis_start(&redis, NULL) != 0) {
        CHECK(!"redis-server did not start");
        return;
    }
    SpirtError error;
    StoreOptions open_options = {.port = redis.port};
    StoreConn *admin = store_connect(&open_options, &error);
    CHECK_OK(admin ? SPIRT_OK : error.code, &error);
    if (admin == NULL) {
        test_redis_stop(&redis);
        return;
    }
    CHECK_OK(store_command(admin, NULL, &error, "ACL SETUSER peer1 on >s3cret ~spirt:* +@all -flushall -flushdb"),
             &error);
    CHECK_OK(store_command(admin, NULL, &error, "ACL SETUSER default resetpass >defaultpass"), &error);

    StoreOptions peer = {.port = redis.port, .username = "peer1", .password = "s3cret", .database = 4,
                         .client_name = "peer-one"};
    StoreConn *conn = store_connect(&peer, &error);
    CHECK_OK(conn ? SPIRT_OK : error.code, &error);
    if (conn) {
        /* AUTH came first, so a large value right away is accepted. */
        size_t size = 1 << 20;
        char *big = calloc(1, size);
        CHECK_OK(store_set(conn, "spirt:big", big, size, &error), &error);
        free(big);
        CHECK_ERROR(store_set(conn, "other:key", "x", 1, &error), SPIRT_ERR_SERVER, &error, "NOPERM");
        StoreReply *reply = NULL;
        CHECK_OK(store_command(conn, &reply, &error, "ACL WHOAMI"), &error);
        CHECK(reply && strcmp(reply->str, "peer1") == 0);
        store_reply_free(reply);

        /* The server drops the client: reconnecting logs in again, on the
         * same database, with the same name. */
        CHECK_OK(store_command(admin, NULL, &error, "CLIENT KILL USER peer1"), &error);
        int status = store_ping(conn, &error);
        CHECKF(status == SPIRT_ERR_CLOSED || status == SPIRT_ERR_IO, "status %d: %s", status, error.message);
        CHECK_OK(store_reconnect(conn, &error), &error);
        CHECK_OK(store_command(conn, &reply, &error, "CLIENT INFO"), &error);
        CHECK(reply && strstr(reply->str, " user=peer1 ") && strstr(reply->str, " db=4 ") &&
              strstr(reply->str, " name=peer-one "));
        store_reply_free(reply);
        store_free(conn);
    }

    StoreOptions wrong = peer;
    wrong.password = "guess";
    CHECK_ERROR(store_connect(&wrong, &error) ? SPIRT_OK : error.code, SPIRT_ERR_AUTH, &error, "WRONGPASS");
    CHECK(strstr(error.message, "guess") == NULL);
    StoreOptions no_user = wrong;
    no_user.username = "nobody";
    CHECK_ERROR(store_connect(&no_user, &error) ? SPIRT_OK : error.code, SPIRT_ERR_AUTH, &error, "nobody");
    /* No password at all, where one is needed. */
    CHECK_ERROR(store_connect(&open_options, &error) ? SPIRT_OK : error.code, SPIRT_ERR_AUTH, &error, "NOAUTH");
    /* A password alone logs in as the default user. */
    StoreOptions default_user = {.port = redis.port, .password = "defaultpass"};
    conn = store_connect(&default_user, &error);
    CHECK_OK(conn ? SPIRT_OK : error.code, &error);
    store_free(conn);
    char address[128];
    snprintf(address, sizeof(address), "redis://peer1:s3cret@127.0.0.1:%d/2", redis.port);
    conn = store_connect_address(address, NULL, &error);
    CHECK_OK(conn ? SPIRT_OK : error.code, &error);
    store_free(conn);
    store_free(admin);
    test_redis_stop(&redis);
}

static void test_malformed_replies(void) {
    test_begin("malformed replies from a crafted server");
    SpirtError error;
    CHECK_ERROR(command_against_crafted("!oops\r\n", 0, 0, 0, &error), SPIRT_ERR_PROTOCOL, &error, "malformed");
    /* Arrays nested deeper than the reader supports. */
    char deep[200] = "";
    for (int i = 0; i < 12; i++) strcat(deep, "*1\r\n");
    strcat(deep, ":1\r\n");
    CHECK_ERROR(command_against_crafted(deep, 0, 0, 0, &error), SPIRT_ERR_PROTOCOL, &error, "malformed");
    /* A 2^31-1 element array announced in 13 bytes: refused, not allocated. */
    CHECK_ERROR(command_against_crafted("*2147483647\r\n", 0, 0, 0, &error), SPIRT_ERR_PROTOCOL, &error, "limit");
    CHECK_ERROR(command_against_crafted("*-5\r\n", 0, 0, 0, &error), SPIRT_ERR_PROTOCOL, &error, "malformed");
    /* A bulk string longer than the client accepts: refused before it is
     * all buffered. */
    size_t flood_size = (size_t)3 << 20;
    char *flood = malloc(flood_size);
    if (flood) {
        memset(flood, 'x', flood_size);
        memcpy(flood, "$999999999\r\n", 12);
        CHECK_ERROR(command_against_crafted(flood, flood_size, (size_t)1 << 20, 0, &error), SPIRT_ERR_PROTOCOL, &error,
                    "limit");
        free(flood);
    }
    /* 400 KB of small integers become far more than 1 MB of reply objects:
     * the budget counts what is built, not only what arrives. */
    size_t many = 100000, many_size = 16 + 4 * many;
    char *integers = malloc(many_size);
    if (integers) {
        size_t used = (size_t)snprintf(integers, many_size, "*%zu\r\n", many);
        for (size_t i = 0; i < many; i++, used += 4) memcpy(integers + used, ":1\r\n", 4);
        CHECK_ERROR(command_against_crafted(integers, used, (size_t)1 << 20, 0, &error), SPIRT_ERR_PROTOCOL, &error,
                    "limit");
        /* The same reply within a larger budget is fine. */
        CHECK_OK(command_against_crafted(integers, used, (size_t)64 << 20, 0, &error), &error);
        free(integers);
    }
    /* Cut off in the middle of a reply. */
    CHECK_ERROR(command_against_crafted("$10\r\nabc", 0, 0, 1, &error), SPIRT_ERR_CLOSED, &error, "closed");
    /* Well-formed, but not what GET promises: the helper says so, and the
     * connection (which is in step) stays usable. */
    FakeServer server = {.responses = {"+PONG\r\n", ":5\r\n", "+PONG\r\n"}, .response_count = 3};
    CHECK(fake_server_start(&server, AF_INET, 1) == 0);
    StoreOptions options = {.port = server.port};
    StoreConn *conn = store_connect(&options, &error);
    CHECK_OK(conn ? SPIRT_OK : error.code, &error);
    if (conn) {
        char *value = NULL;
        CHECK_ERROR(store_get(conn, "k", &value, NULL, &error), SPIRT_ERR_PROTOCOL, &error, "integer reply to GET");
        CHECK(value == NULL && store_conn_status(conn) == SPIRT_OK);
        CHECK_OK(store_ping(conn, &error), &error);
        store_free(conn);
    }
    fake_server_stop(&server, 1);
}

/* The same commands over a Unix-domain socket. */
static void test_unix_socket(void) {
    test_begin("a Unix-domain socket");
    char path[600], address_text[700];
    test_temp_path(path, sizeof(path), "db.sock");
    const char *extra[] = {"--unixsocket", path, "--unixsocketperm", "700", NULL};
    TestRedisOptions options = {.extra_args = extra};
    TestRedis redis;
    if (test_redis_start(&redis, &options) != 0) {
        CHECK(!"server with a Unix socket started");
        return;
    }
    SpirtError error;
    snprintf(address_text, sizeof(address_text), "unix:%s", path);
    StoreConn *conn = store_connect_address(address_text, NULL, &error);
    CHECKF(conn != NULL, "%s", error.message);
    if (conn) {
        CHECK(strcmp(store_conn_address(conn), address_text) == 0);
        char *big = malloc(4 << 20), *back = NULL;
        memset(big, 'u', 4 << 20);
        size_t length = 0;
        CHECK_OK(store_set(conn, "k", big, 4 << 20, &error), &error);
        CHECK(store_get(conn, "k", &back, &length, &error) == SPIRT_OK && length == (4u << 20) &&
              memcmp(back, big, length) == 0);
        StoreReply *reply = NULL;
        /* The server sees a Unix-socket client: CLIENT INFO says laddr is the path. */
        CHECK(store_command(conn, &reply, &error, "CLIENT INFO") == SPIRT_OK && reply && strstr(reply->str, "/db.sock"));
        store_reply_free(reply);
        free(big);
        free(back);
        test_begin("values of every size round-trip bit for bit (Unix socket)");
        store_check_round_trips(conn, 32, 0);
        store_free(conn);
    }
    char missing[700];
    snprintf(missing, sizeof(missing), "unix:%s.missing", path);
    CHECK(store_connect_address(missing, NULL, &error) == NULL && error.code == SPIRT_ERR_IO &&
          strstr(error.message, ".missing"));
    StoreOptions tls_options = {0};
    tls_options.tls.enabled = 1;
    tls_options.host = path;
    CHECK(store_connect(&tls_options, &error) == NULL && error.code == SPIRT_ERR_INVALID);
    test_redis_stop(&redis);
}

int main(void) {
    test_addresses();
    test_unix_socket();
    test_refused_and_silent();
    test_malformed_replies();
    TestRedis redis;
    if (test_redis_start(&redis, NULL) != 0) {
        CHECK(!"redis-server did not start");
        return test_finish();
    }
    test_basic_commands(&redis);
    test_binary_values(&redis);
    test_large_value(&redis);
    test_round_trips(&redis);
    test_pipelining(&redis);
    test_server_errors(&redis);
    test_redis_stop(&redis);
    test_ipv6();
    test_kill_and_restart();
    test_auth();
    return test_finish();
}
