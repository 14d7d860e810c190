/* test_store_reader.c -- the RESP2 reader on crafted bytes, alone and
 * behind a real socket.
 *
 * Part one drives the reader (src/store/reader.h) exactly as a connection
 * does -- ask where bytes go, put them there, take replies -- with crafted
 * streams cut at every byte boundary, one byte at a time, and in chunks of
 * many sizes. Every parsed reply is encoded back to RESP by an encoder of
 * this test's own and must give the original bytes. Malformed and hostile
 * input (huge, negative and overflowing lengths, deep nesting, junk) must
 * fail with SPIRT_ERR_PROTOCOL, and stay failed.
 *
 * Part two puts a "drip" server thread on a loopback socket: it answers the
 * connection's PING, then sends crafted replies in chunks as small as one
 * byte, with pauses, so the client meets them split across many reads.
 * This is also where tensors read in place are checked (a crafted
 * SPIRT.TGET FULL reply): values land in the caller's floats, a wrong shape
 * leaves them untouched. No database is involved. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "spirt/rng.h"
#include "spirt/store.h"
#include "store/reader.h"
#include "test.h"

/* --- A growing byte buffer --- */

typedef struct Bytes {
    char *data;
    size_t length, capacity;
} Bytes;

static void bytes_add(Bytes *bytes, const void *data, size_t length) {
    if (bytes->length + length + 1 > bytes->capacity) {
        size_t capacity = bytes->capacity ? bytes->capacity : 256;
        while (capacity < bytes->length + length + 1) capacity *= 2;
        char *grown = realloc(bytes->data, capacity);
        if (grown == NULL) abort(); /* a test that cannot allocate cannot go on */
        bytes->data = grown;
        bytes->capacity = capacity;
    }
    memcpy(bytes->data + bytes->length, data, length);
    bytes->length += length;
    bytes->data[bytes->length] = '\0';
}

static void bytes_printf(Bytes *bytes, const char *format, ...) __attribute__((format(printf, 2, 3)));
static void bytes_printf(Bytes *bytes, const char *format, ...) {
    char text[128];
    va_list args;
    va_start(args, format);
    int length = vsnprintf(text, sizeof(text), format, args);
    va_end(args);
    bytes_add(bytes, text, (size_t)length);
}

/* RESP for a reply, written independently of the reader: what a server
 * would have sent to produce it (nil as "$-1"). */
static void encode(Bytes *out, const StoreReply *reply) {
    switch (reply->type) {
    case STORE_REPLY_STATUS:
    case STORE_REPLY_ERROR:
        bytes_add(out, reply->type == STORE_REPLY_STATUS ? "+" : "-", 1);
        bytes_add(out, reply->str, reply->len);
        bytes_add(out, "\r\n", 2);
        break;
    case STORE_REPLY_INTEGER: bytes_printf(out, ":%lld\r\n", reply->integer); break;
    case STORE_REPLY_NIL: bytes_add(out, "$-1\r\n", 5); break;
    case STORE_REPLY_STRING:
        bytes_printf(out, "$%zu\r\n", reply->len);
        if (reply->str != NULL) {
            bytes_add(out, reply->str, reply->len);
        } else { /* delivered to a sink: '?' for each byte */
            for (size_t i = 0; i < reply->len; i++) bytes_add(out, "?", 1);
        }
        bytes_add(out, "\r\n", 2);
        break;
    case STORE_REPLY_ARRAY:
        bytes_printf(out, "*%zu\r\n", reply->elements);
        for (size_t i = 0; i < reply->elements; i++) encode(out, reply->element[i]);
        break;
    }
}

/* --- Driving the reader as a connection does --- */

/* Feeds `stream` to the reader in the given cut: bytes go where
 * store_reader_space says, at most `cut(i)` bytes per read. Complete
 * replies are encoded into `out`. Returns the number of replies, or the
 * reader's failure. */
typedef size_t (*CutRule)(size_t read_index, const void *context);

static int deliver(StoreReader *reader, const char *stream, size_t length, CutRule cut, const void *context,
                   Bytes *out, SpirtError *error) {
    size_t offset = 0, read_index = 0;
    int replies = 0;
    for (;;) {
        StoreReply *reply = NULL;
        int status = store_reader_next(reader, &reply, error);
        if (status != SPIRT_OK) return status;
        if (reply != NULL) {
            encode(out, reply);
            store_reply_free(reply);
            replies++;
            continue;
        }
        if (offset == length) return replies;
        struct iovec pieces[2];
        int count = store_reader_space(reader, pieces, error);
        if (count < 0) return count;
        size_t allowed = cut(read_index++, context), moved = 0;
        for (int i = 0; i < count && moved < allowed && offset < length; i++) {
            size_t take = pieces[i].iov_len;
            if (take > allowed - moved) take = allowed - moved;
            if (take > length - offset) take = length - offset;
            memcpy(pieces[i].iov_base, stream + offset, take);
            offset += take;
            moved += take;
            if (take < pieces[i].iov_len) break; /* a read fills pieces in order */
        }
        store_reader_received(reader, moved);
    }
}

static size_t cut_fixed(size_t read_index, const void *context) {
    (void)read_index;
    return *(const size_t *)context;
}

/* The first read takes `split` bytes, later ones everything. */
static size_t cut_at(size_t read_index, const void *context) {
    return read_index == 0 ? *(const size_t *)context : (size_t)-1;
}

/* Pseudo-random reads of 1 to 9000 bytes. */
static size_t cut_random(size_t read_index, const void *context) {
    SpirtRng rng;
    rng_init_stream(&rng, *(const uint64_t *)context, read_index);
    return 1 + (size_t)rng_below(&rng, 9000);
}

/* --- Part one: the reader alone --- */

/* One of every kind of reply, as a pipeline: text, binary and empty
 * strings, CR LF inside strings, extreme integers, nils, arrays (empty,
 * nested, holding errors), a 100 KB string. */
static void canonical_stream(Bytes *stream) {
    bytes_printf(stream, "+OK\r\n");
    bytes_printf(stream, "-ERR something went wrong\r\n");
    bytes_printf(stream, "+\r\n");
    bytes_printf(stream, ":0\r\n:-1\r\n:9223372036854775807\r\n:-9223372036854775808\r\n");
    bytes_printf(stream, "$0\r\n\r\n$-1\r\n$5\r\nhello\r\n");
    bytes_printf(stream, "$9\r\n\r\n$1\r\n*\r\n\r\n"); /* looks like RESP: must stay data */
    bytes_printf(stream, "$3\r\n%c%c%c\r\n", 0, 0xff, '\r');
    bytes_printf(stream, "*0\r\n*3\r\n:1\r\n*2\r\n$1\r\na\r\n-WRONGTYPE x\r\n$-1\r\n");
    bytes_printf(stream, "*2\r\n*1\r\n*1\r\n*0\r\n+deep\r\n");
    size_t big = 100 * 1000 + 7;
    bytes_printf(stream, "$%zu\r\n", big);
    SpirtRng rng;
    rng_init(&rng, 7);
    for (size_t i = 0; i < big; i++) {
        char c = (char)rng_next_u64(&rng);
        bytes_add(stream, &c, 1);
    }
    bytes_printf(stream, "\r\n:42\r\n");
}

static void test_every_split(void) {
    test_begin("reader: a pipeline of every reply kind, cut every way");
    Bytes stream = {0};
    canonical_stream(&stream);
    const int expected_replies = 17;
    StoreReader *reader = store_reader_create((size_t)1 << 30);
    CHECK(reader != NULL);
    if (reader == NULL) return;
    SpirtError error;

    const size_t chunks[] = {1, 2, 3, 5, 7, 64, 4095, 4096, 4097, 65536, (size_t)-1};
    for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
        Bytes out = {0};
        int replies = deliver(reader, stream.data, stream.length, cut_fixed, &chunks[c], &out, &error);
        CHECKF(replies == expected_replies, "chunk %zu: %d replies (%s)", chunks[c], replies,
               replies < 0 ? error.message : "");
        CHECKF(out.length == stream.length && memcmp(out.data, stream.data, stream.length) == 0,
               "chunk %zu: replies differ from the bytes sent", chunks[c]);
        free(out.data);
    }
    /* Two reads, split at every byte boundary of the small replies (the
     * 100 KB string's header and its surroundings included). */
    int all_same = 1;
    for (size_t split = 0; split <= 400; split++) {
        Bytes out = {0};
        int replies = deliver(reader, stream.data, stream.length, cut_at, &split, &out, &error);
        all_same &= replies == expected_replies && out.length == stream.length &&
                    memcmp(out.data, stream.data, stream.length) == 0;
        free(out.data);
    }
    for (size_t split = stream.length - 300; split <= stream.length; split++) {
        Bytes out = {0};
        int replies = deliver(reader, stream.data, stream.length, cut_at, &split, &out, &error);
        all_same &= replies == expected_replies && out.length == stream.length &&
                    memcmp(out.data, stream.data, stream.length) == 0;
        free(out.data);
    }
    CHECK(all_same);
    for (uint64_t seed = 1; seed <= 20; seed++) {
        Bytes out = {0};
        int replies = deliver(reader, stream.data, stream.length, cut_random, &seed, &out, &error);
        CHECKF(replies == expected_replies && out.length == stream.length &&
                   memcmp(out.data, stream.data, stream.length) == 0,
               "random cut %llu", (unsigned long long)seed);
        free(out.data);
    }
    /* "*-1" is a nil too (it encodes back as "$-1"). */
    Bytes out = {0};
    const size_t whole = (size_t)-1;
    CHECK(deliver(reader, "*-1\r\n", 5, cut_fixed, &whole, &out, &error) == 1 && strcmp(out.data, "$-1\r\n") == 0);
    free(out.data);
    store_reader_free(reader);
    free(stream.data);
}

static void test_large_string_in_place(void) {
    test_begin("reader: a large string is read into its own buffer, not through the reader's");
    StoreReader *reader = store_reader_create((size_t)1 << 30);
    if (reader == NULL) return;
    SpirtError error;
    size_t length = ((size_t)3 << 20) + 5;
    char header[32];
    int header_length = snprintf(header, sizeof(header), "$%zu\r\n", length);
    char *payload = malloc(length);
    SpirtRng rng;
    rng_init(&rng, 11);
    for (size_t i = 0; payload && i < length; i++) payload[i] = (char)rng_next_u64(&rng);
    if (payload == NULL) {
        store_reader_free(reader);
        return;
    }
    /* The header and 100 bytes arrive: the reader then offers the string's
     * remaining bytes as the first piece, exactly that many. */
    struct iovec pieces[2];
    CHECK(store_reader_space(reader, pieces, &error) == 1);
    memcpy(pieces[0].iov_base, header, (size_t)header_length);
    memcpy((char *)pieces[0].iov_base + header_length, payload, 100);
    store_reader_received(reader, (size_t)header_length + 100);
    StoreReply *reply = NULL;
    CHECK_OK(store_reader_next(reader, &reply, &error), &error);
    CHECK(reply == NULL);
    CHECK(store_reader_space(reader, pieces, &error) == 2);
    CHECK(pieces[0].iov_len == length - 100 && pieces[1].iov_len > 0);
    /* The rest in one read that also brings the CRLF and the next reply
     * (into the second piece). */
    if (pieces[0].iov_len == length - 100 && pieces[1].iov_len >= 6) {
        memcpy(pieces[0].iov_base, payload + 100, length - 100);
        memcpy(pieces[1].iov_base, "\r\n:7\r\n", 6);
        store_reader_received(reader, length - 100 + 6);
    }
    CHECK_OK(store_reader_next(reader, &reply, &error), &error);
    CHECK(reply && reply->type == STORE_REPLY_STRING && reply->len == length && reply->str[length] == '\0' &&
          memcmp(reply->str, payload, length) == 0);
    store_reply_free(reply);
    CHECK_OK(store_reader_next(reader, &reply, &error), &error);
    CHECK(reply && reply->type == STORE_REPLY_INTEGER && reply->integer == 7);
    store_reply_free(reply);
    free(payload);
    store_reader_free(reader);
}

/* A sink that takes strings of exactly `length` bytes at `index` of an
 * array (or at top level when want_top), and records what it was shown. */
typedef struct TestSink {
    char place[64];
    size_t length;
    size_t index;
    int want_top;
    int calls;
    size_t seen_filled; /* elements before `index` that were complete */
} TestSink;

static void *test_sink(void *context, const StoreReply *array, size_t index, size_t length) {
    TestSink *sink = context;
    sink->calls++;
    if (array == NULL) return sink->want_top && length == sink->length ? sink->place : NULL;
    if (sink->want_top || index != sink->index || length != sink->length) return NULL;
    sink->seen_filled = 0;
    for (size_t i = 0; i < index; i++) sink->seen_filled += array->element[i] != NULL;
    return sink->place;
}

static void test_sink_places(void) {
    test_begin("reader: a sink takes the strings it asks for, and only those");
    StoreReader *reader = store_reader_create(1 << 20);
    if (reader == NULL) return;
    SpirtError error;
    TestSink sink = {.length = 6, .index = 3};
    store_reader_set_sink(reader, test_sink, &sink);
    const char *stream = "*4\r\n$6\r\nfirst!\r\n:2\r\n$-1\r\n$6\r\nsixsix\r\n";
    const size_t one = 1;
    Bytes out = {0};
    /* Byte by byte: the sink is asked once per string, and sees every
     * element before its own complete. */
    StoreReply *reply = NULL;
    for (size_t i = 0; stream[i] != '\0'; i++) {
        struct iovec pieces[2];
        CHECK(store_reader_space(reader, pieces, &error) == 1);
        memcpy(pieces[0].iov_base, stream + i, 1);
        store_reader_received(reader, 1);
        CHECK_OK(store_reader_next(reader, &reply, &error), &error);
        if (reply) break;
    }
    CHECK(reply && reply->type == STORE_REPLY_ARRAY && reply->elements == 4);
    if (reply && reply->elements == 4) {
        CHECK(reply->element[0]->str && strcmp(reply->element[0]->str, "first!") == 0);
        CHECK(reply->element[3]->type == STORE_REPLY_STRING && reply->element[3]->str == NULL &&
              reply->element[3]->len == 6);
    }
    CHECK(memcmp(sink.place, "sixsix", 6) == 0 && sink.calls == 2 && sink.seen_filled == 3);
    store_reply_free(reply);

    /* A top-level string; the sink stays set until changed. */
    sink = (TestSink){.length = 3, .want_top = 1};
    CHECK(deliver(reader, "$3\r\nabc\r\n$2\r\nxy\r\n", 17, cut_fixed, &one, &out, &error) == 2);
    CHECK(memcmp(sink.place, "abc", 3) == 0 && sink.calls == 2);
    CHECK(strcmp(out.data, "$3\r\n???\r\n$2\r\nxy\r\n") == 0); /* abc went to the sink */
    free(out.data);
    store_reader_free(reader);
}

/* The reader's failure for `stream` fed whole, then fed one byte at a time;
 * both must agree, mention `needle`, and stick. */
static void expect_failure(const char *name, const char *stream, size_t length, size_t limit, int code,
                           const char *needle) {
    const size_t sizes[] = {(size_t)-1, 1};
    for (int s = 0; s < 2; s++) {
        StoreReader *reader = store_reader_create(limit);
        if (reader == NULL) return;
        SpirtError error;
        Bytes out = {0};
        int status = deliver(reader, stream, length, cut_fixed, &sizes[s], &out, &error);
        CHECKF(status == code && strstr(error.message, needle) != NULL, "%s (%s): status %d, \"%s\"", name,
               s ? "byte by byte" : "whole", status, error.message);
        StoreReply *reply = (StoreReply *)&error;
        CHECKF(store_reader_next(reader, &reply, &error) == code && reply == NULL, "%s: not sticky", name);
        /* After a reset the same reader reads good input again. */
        store_reader_reset(reader);
        free(out.data);
        out = (Bytes){0};
        CHECKF(deliver(reader, "+fine\r\n", 7, cut_fixed, &sizes[s], &out, &error) == 1, "%s: reset", name);
        free(out.data);
        store_reader_free(reader);
    }
}

static void test_refusals(void) {
    test_begin("reader: malformed and hostile input is refused, never trusted");
    const size_t mb = 1 << 20;
#define FAILS(name, text, limit, code, needle) expect_failure(name, text, sizeof(text) - 1, limit, code, needle)
    FAILS("unknown type byte", "!oops\r\n", mb, SPIRT_ERR_PROTOCOL, "unknown type byte");
    FAILS("NUL type byte", "\0\r\n", mb, SPIRT_ERR_PROTOCOL, "unknown type byte");
    FAILS("huge bulk length", "$999999999999\r\n", mb, SPIRT_ERR_PROTOCOL, "limit");
    FAILS("largest bulk length", "$9223372036854775807\r\n", (size_t)1 << 30, SPIRT_ERR_PROTOCOL, "limit");
    FAILS("overflowing bulk length", "$9223372036854775808\r\n", mb, SPIRT_ERR_PROTOCOL, "malformed");
    FAILS("very overflowing length", "$99999999999999999999999\r\n", mb, SPIRT_ERR_PROTOCOL, "malformed");
    FAILS("negative bulk length", "$-2\r\n", mb, SPIRT_ERR_PROTOCOL, "malformed");
    FAILS("most negative length", "$-9223372036854775808\r\n", mb, SPIRT_ERR_PROTOCOL, "malformed");
    FAILS("negative array length", "*-5\r\n", mb, SPIRT_ERR_PROTOCOL, "malformed");
    FAILS("huge array", "*2147483647\r\n", (size_t)1 << 30, SPIRT_ERR_PROTOCOL, "limit");
    FAILS("empty length", "$\r\n", mb, SPIRT_ERR_PROTOCOL, "malformed");
    FAILS("junk after a length", "$3x\r\nabc\r\n", mb, SPIRT_ERR_PROTOCOL, "malformed");
    FAILS("plus sign", ":+5\r\n", mb, SPIRT_ERR_PROTOCOL, "malformed");
    FAILS("lone minus", ":-\r\n", mb, SPIRT_ERR_PROTOCOL, "malformed");
    FAILS("space in an integer", ":1 2\r\n", mb, SPIRT_ERR_PROTOCOL, "malformed");
    FAILS("integer overflow", ":9223372036854775808\r\n", mb, SPIRT_ERR_PROTOCOL, "malformed");
    FAILS("endless number line", ":111111111111111111111111111111111111111111", mb, SPIRT_ERR_PROTOCOL,
          "longer than");
    FAILS("string without CRLF", "$3\r\nabcXY", mb, SPIRT_ERR_PROTOCOL, "not followed by CRLF");
    FAILS("string too long", "$3\r\nabcd\r\n", mb, SPIRT_ERR_PROTOCOL, "not followed by CRLF");
    FAILS("bad element inside an array", "*3\r\n:1\r\n$2\r\nab\r\n?\r\n", mb, SPIRT_ERR_PROTOCOL, "unknown type");
#undef FAILS
    /* A status line that never ends is bounded by the limit. */
    size_t endless = 20000;
    char *line = malloc(endless);
    if (line) {
        memset(line, 'a', endless);
        line[0] = '+';
        expect_failure("endless status line", line, endless, 16384, SPIRT_ERR_PROTOCOL, "limit");
        free(line);
    }
    /* Small objects add up: 20,000 nils take far more than 256 KB as
     * replies, though they are only 100 KB of bytes. */
    Bytes many = {0};
    bytes_printf(&many, "*20000\r\n");
    for (int i = 0; i < 20000; i++) bytes_add(&many, "$-1\r\n", 5);
    expect_failure("many small elements", many.data, many.length, 256 * 1024, SPIRT_ERR_PROTOCOL, "limit");
    free(many.data);

    /* Nesting: 8 arrays deep is fine, 9 is not. */
    Bytes nested = {0};
    for (int depth = 0; depth < STORE_READER_MAX_DEPTH; depth++) bytes_add(&nested, "*1\r\n", 4);
    bytes_add(&nested, ":5\r\n", 4);
    StoreReader *reader = store_reader_create(mb);
    SpirtError error;
    Bytes out = {0};
    const size_t one = 1;
    CHECK(reader && deliver(reader, nested.data, nested.length, cut_fixed, &one, &out, &error) == 1 &&
          out.length == nested.length && memcmp(out.data, nested.data, nested.length) == 0);
    free(out.data);
    store_reader_free(reader);
    Bytes deeper = {0};
    bytes_add(&deeper, "*1\r\n", 4);
    bytes_add(&deeper, nested.data, nested.length);
    expect_failure("nested too deep", deeper.data, deeper.length, mb, SPIRT_ERR_PROTOCOL, "nested deeper");
    free(nested.data);
    free(deeper.data);
}

/* --- Part two: behind a socket --- */

/* Replies sent in order, one per request; each in chunks of chunk_bytes
 * with pause_us between chunks. */
typedef struct DripReply {
    const char *bytes;
    size_t length;
    size_t chunk_bytes;
    int pause_us;
} DripReply;

typedef struct DripServer {
    int listen_fd;
    int port;
    pthread_t thread;
    DripReply replies[4];
    size_t reply_count;
    int close_after_last; /* hang up right after the last reply */
} DripServer;

static void pause_us(int microseconds) {
    struct timespec delay = {0, (long)microseconds * 1000};
    if (microseconds > 0) nanosleep(&delay, NULL);
}

static void *drip_main(void *argument) {
    DripServer *server = argument;
    int fd = accept(server->listen_fd, NULL, NULL);
    if (fd < 0) return NULL;
    int on = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on)); /* each chunk its own segment */
    char request[4096];
    if (recv(fd, request, sizeof(request), 0) > 0) send(fd, "+PONG\r\n", 7, MSG_NOSIGNAL);
    for (size_t r = 0; r < server->reply_count; r++) {
        if (recv(fd, request, sizeof(request), 0) <= 0) break;
        const DripReply *reply = &server->replies[r];
        for (size_t sent = 0; sent < reply->length;) {
            size_t chunk = reply->length - sent < reply->chunk_bytes ? reply->length - sent : reply->chunk_bytes;
            ssize_t n = send(fd, reply->bytes + sent, chunk, MSG_NOSIGNAL);
            if (n <= 0) break; /* the client gave up */
            sent += (size_t)n;
            pause_us(reply->pause_us);
        }
    }
    while (!server->close_after_last && recv(fd, request, sizeof(request), 0) > 0) {
    }
    close(fd);
    return NULL;
}

static StoreConn *drip_connect(DripServer *server, size_t max_reply_bytes) {
    server->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {0};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    if (server->listen_fd < 0 || bind(server->listen_fd, (struct sockaddr *)&address, length) != 0 ||
        listen(server->listen_fd, 1) != 0 || getsockname(server->listen_fd, (struct sockaddr *)&address, &length) != 0 ||
        pthread_create(&server->thread, NULL, drip_main, server) != 0) {
        CHECK(!"the drip server could not start");
        if (server->listen_fd >= 0) close(server->listen_fd);
        server->listen_fd = -1;
        return NULL;
    }
    server->port = ntohs(address.sin_port);
    SpirtError error;
    StoreOptions options = {.port = server->port, .read_timeout_ms = 5000, .max_reply_bytes = max_reply_bytes};
    StoreConn *conn = store_connect(&options, &error);
    CHECK_OK(conn ? SPIRT_OK : error.code, &error);
    return conn;
}

static void drip_stop(DripServer *server, StoreConn *conn) {
    store_free(conn); /* the server thread ends when we hang up */
    if (server->listen_fd < 0) return;
    pthread_join(server->thread, NULL);
    close(server->listen_fd);
}

/* The status of one GET answered by `bytes` (in `chunk`-byte drips, the
 * server hanging up after them if close_after); *out (may be NULL)
 * receives the reply encoded back to RESP. */
static int get_through_drip(const char *bytes, size_t length, size_t chunk, int pause, int close_after, Bytes *out,
                            SpirtError *error) {
    DripServer server = {.replies = {{bytes, length, chunk, pause}}, .reply_count = 1, .close_after_last = close_after};
    StoreConn *conn = drip_connect(&server, 0);
    int status = SPIRT_ERR_INTERNAL;
    if (conn != NULL) {
        StoreReply *reply = NULL;
        const char *argv[] = {"GET", "k"};
        status = store_command_argv(conn, 2, argv, NULL, &reply, error);
        if (status == SPIRT_OK && out != NULL) encode(out, reply);
        store_reply_free(reply);
        if (status != SPIRT_OK && status != SPIRT_ERR_SERVER) CHECK(store_conn_status(conn) == status);
    }
    drip_stop(&server, conn);
    return status;
}

static void test_drip(void) {
    test_begin("socket: replies dripped one byte at a time");
    SpirtError error;
    const char nested[] = "*5\r\n+OK\r\n:-12\r\n$-1\r\n*2\r\n$4\r\nab\r\n\r\n-ERR inner\r\n$0\r\n\r\n";
    Bytes out = {0};
    CHECK_OK(get_through_drip(nested, sizeof(nested) - 1, 1, 200, 0, &out, &error), &error);
    CHECK(out.length == sizeof(nested) - 1 && memcmp(out.data, nested, out.length) == 0);
    free(out.data);

    test_begin("socket: a 3 MB string in a thousand pieces, and one in a single send");
    size_t length = (size_t)3 << 20;
    Bytes big = {0};
    bytes_printf(&big, "$%zu\r\n", length);
    SpirtRng rng;
    rng_init(&rng, 5);
    for (size_t i = 0; i < length; i += 8) {
        uint64_t word = rng_next_u64(&rng);
        bytes_add(&big, &word, 8);
    }
    bytes_add(&big, "\r\n", 2);
    const size_t chunks[] = {997, 3000000, (size_t)16 << 20};
    for (int c = 0; c < 3; c++) {
        out = (Bytes){0};
        CHECK_OK(get_through_drip(big.data, big.length, chunks[c], c == 0 ? 20 : 0, 0, &out, &error), &error);
        CHECKF(out.length == big.length && memcmp(out.data, big.data, big.length) == 0, "chunks of %zu", chunks[c]);
        free(out.data);
    }
    free(big.data);

    test_begin("socket: hostile lengths and nesting break the connection cleanly");
    CHECK_ERROR(get_through_drip("$2000000000\r\n", 13, 1, 100, 0, NULL, &error), SPIRT_ERR_PROTOCOL, &error,
                "limit");
    CHECK_ERROR(get_through_drip("$-7\r\n", 5, 1, 100, 0, NULL, &error), SPIRT_ERR_PROTOCOL, &error, "malformed");
    CHECK_ERROR(get_through_drip("$99999999999999999999\r\n", 23, 2, 100, 0, NULL, &error), SPIRT_ERR_PROTOCOL,
                &error, "malformed");
    CHECK_ERROR(get_through_drip("*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", 40, 3, 100, 0, NULL,
                                 &error),
                SPIRT_ERR_PROTOCOL, &error, "nested deeper");
    /* Announced within the limit, then cut off midway. */
    CHECK_ERROR(get_through_drip("$100000\r\nabc", 12, 4, 100, 1, NULL, &error), SPIRT_ERR_CLOSED, &error,
                "closed");
}

/* --- Tensors read in place --- */

/* A SPIRT.TGET FULL reply for float32 values of shape (rows, cols), as the
 * module sends it (dtype, shape, count, blob). */
static void tensor_reply(Bytes *out, size_t rows, size_t cols, const float *values) {
    size_t count = rows * cols;
    bytes_printf(out, "*8\r\n$5\r\ndtype\r\n$7\r\nfloat32\r\n$5\r\nshape\r\n*2\r\n:%zu\r\n:%zu\r\n", rows, cols);
    bytes_printf(out, "$5\r\ncount\r\n:%zu\r\n$4\r\nblob\r\n$%zu\r\n", count, count * sizeof(float));
    bytes_add(out, values, count * sizeof(float));
    bytes_add(out, "\r\n", 2);
}

static void test_tensor_in_place(void) {
    test_begin("socket: tensors land in the caller's floats; a wrong shape leaves them untouched");
    enum { ROWS = 256, COLS = 1024, COUNT = ROWS * COLS };
    float *values = malloc(COUNT * sizeof(float)), *into = malloc(COUNT * sizeof(float));
    if (values == NULL || into == NULL) {
        free(values);
        free(into);
        return;
    }
    SpirtRng rng;
    rng_init(&rng, 3);
    for (size_t i = 0; i < COUNT; i++) values[i] = (float)rng_normal(&rng);
    Bytes reply = {0};
    tensor_reply(&reply, ROWS, COLS, values);
    SpirtError error;
    const uint64_t dims[] = {ROWS, COLS}, other_dims[] = {COLS, ROWS};
    TensorShape shape, other;
    CHECK_OK(tensor_shape_init(&shape, 2, dims, &error), &error);
    CHECK_OK(tensor_shape_init(&other, 2, other_dims, &error), &error);

    /* A small tensor whose reply comes a byte at a time: the sink meets
     * the fields before the blob in every state of completion. */
    const float small_values[6] = {1.5f, -2.0f, 0.0f, 3.25f, 1e-30f, -7e20f};
    Bytes small_reply = {0};
    tensor_reply(&small_reply, 2, 3, small_values);
    const uint64_t small_dims[] = {2, 3};
    TensorShape small_shape;
    CHECK_OK(tensor_shape_init(&small_shape, 2, small_dims, &error), &error);

    /* Whole, dripped in pieces, as a Tensor of its own, byte by byte. */
    DripServer server = {.replies = {{reply.data, reply.length, (size_t)1 << 30, 0},
                                     {reply.data, reply.length, 333, 0},
                                     {reply.data, reply.length, 4096, 0},
                                     {small_reply.data, small_reply.length, 1, 100}},
                         .reply_count = 4};
    StoreConn *conn = drip_connect(&server, 0);
    if (conn != NULL) {
        for (int round = 0; round < 2; round++) {
            memset(into, 0, COUNT * sizeof(float));
            CHECK_OK(store_tensor_get_into(conn, "t", &shape, into, &error), &error);
            CHECK(memcmp(into, values, COUNT * sizeof(float)) == 0);
        }
        Tensor *tensor = NULL;
        CHECK_OK(store_tensor_get(conn, "t", &tensor, &error), &error);
        CHECK(tensor && tensor_shape_equal(&tensor->shape, &shape) &&
              memcmp(tensor->data, values, COUNT * sizeof(float)) == 0);
        tensor_free(tensor);
        float small_into[6] = {0};
        CHECK_OK(store_tensor_get_into(conn, "s", &small_shape, small_into, &error), &error);
        CHECK(memcmp(small_into, small_values, sizeof(small_values)) == 0);
    }
    drip_stop(&server, conn);
    free(small_reply.data);

    DripServer shaped = {.replies = {{reply.data, reply.length, 65536, 0}}, .reply_count = 1};
    conn = drip_connect(&shaped, 0);
    if (conn != NULL) {
        for (size_t i = 0; i < COUNT; i++) into[i] = 42.0f;
        CHECK_ERROR(store_tensor_get_into(conn, "t", &other, into, &error), SPIRT_ERR_SHAPE, &error, "(256, 1024)");
        int untouched = 1;
        for (size_t i = 0; i < COUNT; i++) untouched &= into[i] == 42.0f;
        CHECK(untouched);
        CHECK(store_conn_status(conn) == SPIRT_OK);
    }
    drip_stop(&shaped, conn);

    /* Cut off halfway through the values: the first half is already in
     * the caller's floats -- they were read there directly, not copied
     * from a finished reply (store.h says they may be partly written). */
    size_t half = reply.length / 2;
    DripServer cut = {.replies = {{reply.data, half, 65536, 0}}, .reply_count = 1, .close_after_last = 1};
    conn = drip_connect(&cut, 0);
    if (conn != NULL) {
        for (size_t i = 0; i < COUNT; i++) into[i] = 42.0f;
        CHECK_ERROR(store_tensor_get_into(conn, "t", &shape, into, &error), SPIRT_ERR_CLOSED, &error, "closed");
        size_t header = reply.length - 2 - COUNT * sizeof(float), arrived = (half - header) / sizeof(float);
        CHECK(memcmp(into, values, arrived * sizeof(float)) == 0);
        CHECK(into[COUNT - 1] == 42.0f);
    }
    drip_stop(&cut, conn);
    free(reply.data);
    free(values);
    free(into);
}

int main(void) {
    test_every_split();
    test_large_string_in_place();
    test_sink_places();
    test_refusals();
    test_drip();
    test_tensor_in_place();
    return test_finish();
}
