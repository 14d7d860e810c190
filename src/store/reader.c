/* reader.c -- the RESP2 reader (see reader.h).
 *
 * State: a small buffer of received, unparsed bytes [start, end); the
 * reply under construction, whose open arrays are a stack of levels (an
 * array is linked into its parent as soon as it is opened, so the tree is
 * always whole from its root, for freeing and for the sink); and at most
 * one bulk string being received, linked only once complete.
 *
 * The parser works line by line: a type byte, text up to CRLF. A bulk
 * string's header line is followed by its bytes, which go to the string's
 * own buffer: first what is already buffered, then, if much is still to
 * come, straight from the socket (store_reader_space offers the string's
 * unfilled tail as the first piece, and the buffer as the second, for
 * whatever follows it in the same read). */
#include "store/reader.h"

#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    BUFFER_INITIAL_BYTES = 16 * 1024,
    /* Less room than this at the buffer's end: compact or grow first, so
     * reads are never tiny. */
    BUFFER_MIN_ROOM = 4 * 1024,
    /* A string with less than this still to come is read through the
     * buffer: one copy of a few kilobytes costs less than a read of its
     * own. */
    DIRECT_MIN_BYTES = 4 * 1024,
    /* ":", "$" and "*" lines hold one number: a sign and 19 digits, with
     * room to spare. Longer is malformed, found without waiting for CRLF. */
    NUMBER_LINE_MAX = 32
};

typedef struct Level {
    StoreReply *array; /* open array */
    size_t filled;     /* elements linked so far */
} Level;

struct StoreReader {
    size_t limit; /* bytes one reply may take */
    size_t used;  /* taken by the reply under construction */
    char *buffer;
    size_t capacity, start, end;
    StoreReply *root; /* the reply under construction (its outer array) */
    Level levels[STORE_READER_MAX_DEPTH];
    int depth;
    StoreReply *bulk;     /* string being received; not linked yet */
    char *bulk_bytes;     /* where its bytes go (its str, or a sink's place) */
    size_t bulk_filled;   /* bytes of it received */
    size_t offered_bulk;  /* bytes of the last store_reader_space that go to it */
    StoreBulkSink sink;
    void *sink_context;
    SpirtError failure; /* SPIRT_OK, or why the reader stopped */
};

/* --- Building the reply --- */

static void drop_partial(StoreReader *reader) {
    store_reply_free(reader->root);
    store_reply_free(reader->bulk); /* a sink's place is the sink's: str is NULL then */
    reader->root = NULL;
    reader->bulk = NULL;
    reader->bulk_bytes = NULL;
    reader->depth = 0;
}

static int fail(StoreReader *reader, int code, const char *format, ...) __attribute__((format(printf, 3, 4)));
static int fail(StoreReader *reader, int code, const char *format, ...) {
    char message[SPIRT_ERROR_MESSAGE_MAX];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof(message), format, args);
    va_end(args);
    drop_partial(reader);
    return spirt_error_set(&reader->failure, code, "%s", message);
}

static int over_limit(StoreReader *reader) {
    return fail(reader, SPIRT_ERR_PROTOCOL, "reply larger than the %zu-byte limit (max_reply_bytes)", reader->limit);
}

/* Charges `bytes` to the reply; 0 (nothing charged) if over the limit. */
static int budget_take(StoreReader *reader, size_t bytes) {
    if (bytes > reader->limit - reader->used) return 0;
    reader->used += bytes;
    return 1;
}

/* A new object of `type` charged with `payload` bytes beyond itself; NULL
 * with the failure set. */
static StoreReply *new_object(StoreReader *reader, StoreReplyType type, size_t payload) {
    if (payload > SIZE_MAX - sizeof(StoreReply) || !budget_take(reader, sizeof(StoreReply) + payload)) {
        over_limit(reader);
        return NULL;
    }
    StoreReply *reply = calloc(1, sizeof(*reply));
    if (reply == NULL) {
        fail(reader, SPIRT_ERR_NOMEM, "out of memory reading a reply");
        return NULL;
    }
    reply->type = type;
    return reply;
}

/* Links a complete object (or a non-empty array, which `opens` a level)
 * into the reply. Returns 1 when that completes the whole reply. The depth
 * limit was checked by the caller. */
static int place(StoreReader *reader, StoreReply *object, int opens) {
    if (reader->depth == 0) {
        reader->root = object;
    } else {
        Level *top = &reader->levels[reader->depth - 1];
        top->array->element[top->filled++] = object;
    }
    if (opens) {
        reader->levels[reader->depth++] = (Level){object, 0};
        return 0;
    }
    while (reader->depth > 0) {
        const Level *top = &reader->levels[reader->depth - 1];
        if (top->filled < top->array->elements) return 0;
        reader->depth--;
    }
    return 1;
}

/* --- Lines --- */

/* The first CRLF in text[0..length), or NULL. */
static const char *find_crlf(const char *text, size_t length) {
    const char *end = text + length;
    for (const char *p = text; p + 1 < end; p++) {
        p = memchr(p, '\r', (size_t)(end - p - 1));
        if (p == NULL) return NULL;
        if (p[1] == '\n') return p;
    }
    return NULL;
}

/* A whole decimal number: an optional '-', 1 to 19 digits, nothing else,
 * within long long. 0 if it is not one. */
static int parse_number(const char *text, size_t length, long long *value) {
    int negative = length > 0 && text[0] == '-';
    size_t i = negative ? 1 : 0;
    if (length == i || length - i > 19) return 0;
    unsigned long long magnitude = 0;
    for (; i < length; i++) {
        if (text[i] < '0' || text[i] > '9') return 0;
        magnitude = magnitude * 10 + (unsigned long long)(text[i] - '0'); /* 19 digits cannot wrap */
    }
    if (magnitude > (unsigned long long)LLONG_MAX + (negative ? 1u : 0u)) return 0;
    *value = negative ? (long long)(0 - magnitude) : (long long)magnitude;
    return 1;
}

/* "+text" or "-text": a status or an error reply. */
static StoreReply *text_reply(StoreReader *reader, char type, const char *text, size_t length) {
    StoreReply *reply = new_object(reader, type == '+' ? STORE_REPLY_STATUS : STORE_REPLY_ERROR, length + 1);
    if (reply == NULL) return NULL;
    reply->str = malloc(length + 1);
    if (reply->str == NULL) {
        free(reply);
        fail(reader, SPIRT_ERR_NOMEM, "out of memory reading a reply");
        return NULL;
    }
    memcpy(reply->str, text, length);
    reply->str[length] = '\0';
    reply->len = length;
    return reply;
}

/* "$length" (length >= 0): sets up the string's reception. Returns 1 if
 * that completed the reply, 0 if not, < 0 on failure. */
static int begin_bulk(StoreReader *reader, size_t length) {
    if (length >= reader->limit) return over_limit(reader); /* before the +1 below can wrap */
    StoreReply *bulk = new_object(reader, STORE_REPLY_STRING, length + 1);
    if (bulk == NULL) return reader->failure.code;
    bulk->len = length;
    const StoreReply *parent = reader->depth > 0 ? reader->levels[reader->depth - 1].array : NULL;
    size_t index = reader->depth > 0 ? reader->levels[reader->depth - 1].filled : 0;
    void *place_given = reader->sink ? reader->sink(reader->sink_context, parent, index, length) : NULL;
    if (place_given == NULL) {
        bulk->str = malloc(length + 1);
        if (bulk->str == NULL) {
            free(bulk);
            return fail(reader, SPIRT_ERR_NOMEM, "out of memory for a %zu-byte string", length);
        }
        bulk->str[length] = '\0'; /* text replies usable as C strings */
    }
    reader->bulk = bulk;
    reader->bulk_bytes = place_given ? place_given : bulk->str;
    reader->bulk_filled = 0;
    return 0;
}

/* "*count" (count >= 0): an array. Same returns as begin_bulk. */
static int begin_array(StoreReader *reader, size_t count) {
    if (count > reader->limit / sizeof(StoreReply *)) return over_limit(reader);
    if (count > 0 && reader->depth == STORE_READER_MAX_DEPTH)
        return fail(reader, SPIRT_ERR_PROTOCOL, "malformed reply: arrays nested deeper than %d",
                    STORE_READER_MAX_DEPTH);
    StoreReply *array = new_object(reader, STORE_REPLY_ARRAY, count * sizeof(StoreReply *));
    if (array == NULL) return reader->failure.code;
    if (count > 0) {
        array->element = calloc(count, sizeof(StoreReply *));
        if (array->element == NULL) {
            free(array);
            return fail(reader, SPIRT_ERR_NOMEM, "out of memory for an array of %zu", count);
        }
    }
    array->elements = count;
    return place(reader, array, count > 0);
}

/* One complete line (type byte, then text without CRLF). Same returns as
 * begin_bulk. */
static int parse_line(StoreReader *reader, char type, const char *text, size_t length) {
    if (type == '+' || type == '-') {
        StoreReply *reply = text_reply(reader, type, text, length);
        return reply ? place(reader, reply, 0) : reader->failure.code;
    }
    long long number;
    if (!parse_number(text, length, &number))
        return fail(reader, SPIRT_ERR_PROTOCOL, "malformed reply: '%c' line \"%.*s\" is not a number", type,
                    length > 24 ? 24 : (int)length, text);
    if (type != ':' && number < 0) {
        /* "$-1" and "*-1" are nil; no other length is negative. */
        if (number != -1)
            return fail(reader, SPIRT_ERR_PROTOCOL, "malformed reply: %s length %lld", type == '$' ? "bulk" : "array",
                        number);
        StoreReply *nil = new_object(reader, STORE_REPLY_NIL, 0);
        return nil ? place(reader, nil, 0) : reader->failure.code;
    }
    if (type == '$') return begin_bulk(reader, (size_t)number);
    if (type == '*') return begin_array(reader, (size_t)number);
    StoreReply *integer = new_object(reader, STORE_REPLY_INTEGER, 0);
    if (integer == NULL) return reader->failure.code;
    integer->integer = number;
    return place(reader, integer, 0);
}

/* Moves buffered bytes into the string being received and completes it
 * when its bytes and CRLF are there. Same returns as begin_bulk, with 0
 * also meaning "more bytes needed" when reader->bulk is still set. */
static int continue_bulk(StoreReader *reader) {
    StoreReply *bulk = reader->bulk;
    size_t buffered = reader->end - reader->start, missing = bulk->len - reader->bulk_filled;
    size_t take = buffered < missing ? buffered : missing;
    memcpy(reader->bulk_bytes + reader->bulk_filled, reader->buffer + reader->start, take);
    reader->bulk_filled += take;
    reader->start += take;
    if (reader->bulk_filled < bulk->len || reader->end - reader->start < 2) return 0;
    if (memcmp(reader->buffer + reader->start, "\r\n", 2) != 0)
        return fail(reader, SPIRT_ERR_PROTOCOL, "malformed reply: a %zu-byte string not followed by CRLF",
                    bulk->len);
    reader->start += 2;
    reader->bulk = NULL;
    reader->bulk_bytes = NULL;
    return place(reader, bulk, 0);
}

/* --- The interface --- */

StoreReader *store_reader_create(size_t max_reply_bytes) {
    StoreReader *reader = calloc(1, sizeof(*reader));
    if (reader == NULL) return NULL;
    reader->buffer = malloc(BUFFER_INITIAL_BYTES);
    if (reader->buffer == NULL) {
        free(reader);
        return NULL;
    }
    reader->capacity = BUFFER_INITIAL_BYTES;
    reader->limit = max_reply_bytes;
    return reader;
}

void store_reader_free(StoreReader *reader) {
    if (reader == NULL) return;
    drop_partial(reader);
    free(reader->buffer);
    free(reader);
}

void store_reader_reset(StoreReader *reader) {
    drop_partial(reader);
    reader->used = 0;
    reader->start = reader->end = 0;
    reader->offered_bulk = 0;
    reader->sink = NULL;
    reader->sink_context = NULL;
    spirt_error_clear(&reader->failure);
}

void store_reader_set_sink(StoreReader *reader, StoreBulkSink sink, void *context) {
    reader->sink = sink;
    reader->sink_context = context;
}

int store_reader_next(StoreReader *reader, StoreReply **reply, SpirtError *error) {
    *reply = NULL;
    int done = 0;
    while (!done && reader->failure.code == SPIRT_OK) {
        if (reader->bulk != NULL) {
            done = continue_bulk(reader);
            if (done == 0 && reader->bulk != NULL) break; /* more bytes needed */
            continue;
        }
        size_t buffered = reader->end - reader->start;
        if (buffered == 0) break;
        const char *line = reader->buffer + reader->start;
        char type = line[0];
        if (type == '\0' || strchr("+-:$*", type) == NULL) {
            fail(reader, SPIRT_ERR_PROTOCOL, "malformed reply: unknown type byte 0x%02x", (unsigned char)type);
            break;
        }
        int is_number = type == ':' || type == '$' || type == '*';
        const char *crlf = find_crlf(line + 1, buffered - 1);
        if (crlf == NULL) {
            /* An incomplete line: refuse it early if it can only grow into
             * nonsense, or beyond what the reply may take. */
            if (is_number && buffered > NUMBER_LINE_MAX)
                fail(reader, SPIRT_ERR_PROTOCOL, "malformed reply: a '%c' line longer than %d bytes", type,
                     NUMBER_LINE_MAX);
            else if (buffered > reader->limit - reader->used)
                over_limit(reader);
            break;
        }
        size_t length = (size_t)(crlf - (line + 1));
        reader->start += length + 3;
        done = parse_line(reader, type, line + 1, length);
    }
    if (reader->failure.code != SPIRT_OK)
        return spirt_error_set(error, reader->failure.code, "%s", reader->failure.message);
    if (reader->start == reader->end) reader->start = reader->end = 0;
    if (done) {
        *reply = reader->root;
        reader->root = NULL;
        reader->used = 0;
    }
    return SPIRT_OK;
}

int store_reader_space(StoreReader *reader, struct iovec pieces[2], SpirtError *error) {
    reader->offered_bulk = 0;
    if (reader->start == reader->end) reader->start = reader->end = 0;
    if (reader->bulk != NULL && reader->end == 0) {
        size_t missing = reader->bulk->len - reader->bulk_filled;
        if (missing >= DIRECT_MIN_BYTES) {
            /* The string's own buffer first, then ours for what follows. */
            pieces[0] = (struct iovec){reader->bulk_bytes + reader->bulk_filled, missing};
            pieces[1] = (struct iovec){reader->buffer, reader->capacity};
            reader->offered_bulk = missing;
            return 2;
        }
    }
    if (reader->capacity - reader->end < BUFFER_MIN_ROOM && reader->start > 0) {
        memmove(reader->buffer, reader->buffer + reader->start, reader->end - reader->start);
        reader->end -= reader->start;
        reader->start = 0;
    }
    if (reader->capacity - reader->end < BUFFER_MIN_ROOM) {
        /* Only a long line can fill the buffer, and store_reader_next
         * bounds those by the reply limit. */
        size_t capacity = reader->capacity * 2;
        char *grown = realloc(reader->buffer, capacity);
        if (grown == NULL) return spirt_error_set(error, SPIRT_ERR_NOMEM, "out of memory reading a reply");
        reader->buffer = grown;
        reader->capacity = capacity;
    }
    pieces[0] = (struct iovec){reader->buffer + reader->end, reader->capacity - reader->end};
    return 1;
}

void store_reader_received(StoreReader *reader, size_t count) {
    size_t to_bulk = count < reader->offered_bulk ? count : reader->offered_bulk;
    reader->bulk_filled += to_bulk;
    reader->end += count - to_bulk;
    reader->offered_bulk = 0;
}

/* --- Replies --- */

void store_reply_free(StoreReply *reply) {
    if (reply == NULL) return;
    if (reply->type == STORE_REPLY_ARRAY) {
        /* Elements of a partly parsed array may still be NULL. */
        for (size_t i = 0; i < reply->elements; i++) store_reply_free(reply->element[i]);
        free(reply->element);
    }
    free(reply->str);
    free(reply);
}
