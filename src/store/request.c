/* request.c -- RESP requests framed for gathering writes (see request.h).
 *
 * Framing is done in two passes over the arguments, plan then frame, so the
 * caller can size its buffer and piece list exactly (often on its stack)
 * and framing itself never allocates. */
#include "store/request.h"

#include <limits.h>
#include <string.h>

#include "spirt/store.h" /* STORE_MAX_REQUEST_BYTES */

static size_t argument_length(const char *const *argv, const size_t *lengths, size_t i) {
    return lengths ? lengths[i] : strlen(argv[i]);
}

static size_t decimal_digits(size_t value) {
    size_t digits = 1;
    while (value >= 10) {
        value /= 10;
        digits++;
    }
    return digits;
}

/* "<prefix><value>\r\n" at out; returns the bytes written. */
static size_t put_header(char *out, char prefix, size_t value) {
    size_t digits = decimal_digits(value);
    out[0] = prefix;
    for (size_t i = digits; i > 0; i--) {
        out[i] = (char)('0' + value % 10);
        value /= 10;
    }
    out[digits + 1] = '\r';
    out[digits + 2] = '\n';
    return digits + 3;
}

int store_request_plan(size_t argc, const char *const *argv, const size_t *lengths, size_t copy_from,
                       StoreRequestPlan *plan, SpirtError *error) {
    if (argc == 0 || argc > INT_MAX || argv == NULL)
        return spirt_error_set(error, SPIRT_ERR_INVALID, "a command needs 1 to INT_MAX arguments (got %zu)", argc);
    size_t total = 3 + decimal_digits(argc), copied = total, large = 0;
    for (size_t i = 0; i < argc; i++) {
        if (argv[i] == NULL) return spirt_error_set(error, SPIRT_ERR_INVALID, "argument %zu is NULL", i);
        size_t length = argument_length(argv, lengths, i);
        /* Checked before it is added, so the sum stays near the limit and
         * cannot wrap; only the lengths are looked at, never the bytes. */
        size_t framing = 5 + decimal_digits(length);
        if (length > STORE_MAX_REQUEST_BYTES || total + framing + length > STORE_MAX_REQUEST_BYTES)
            return spirt_error_set(error, SPIRT_ERR_INVALID, "command larger than the %zu-byte request limit",
                                   STORE_MAX_REQUEST_BYTES);
        total += framing + length;
        copied += framing;
        if (length >= copy_from)
            large++;
        else
            copied += length;
    }
    plan->total_bytes = total;
    plan->copied_bytes = copied;
    plan->piece_count = 1 + 2 * large;
    return SPIRT_OK;
}

void store_request_frame(size_t argc, const char *const *argv, const size_t *lengths, size_t copy_from,
                         char *buffer, struct iovec *pieces) {
    /* `start` is where the buffer's current piece began: it ends where a
     * large argument is referenced, and a new one begins after it. */
    char *out = buffer, *start = buffer;
    size_t piece = 0;
    out += put_header(out, '*', argc);
    for (size_t i = 0; i < argc; i++) {
        size_t length = argument_length(argv, lengths, i);
        out += put_header(out, '$', length);
        if (length >= copy_from) {
            pieces[piece++] = (struct iovec){start, (size_t)(out - start)};
            pieces[piece++] = (struct iovec){(void *)argv[i], length}; /* only read from */
            start = out;
        } else {
            memcpy(out, argv[i], length);
            out += length;
        }
        out[0] = '\r';
        out[1] = '\n';
        out += 2;
    }
    pieces[piece] = (struct iovec){start, (size_t)(out - start)};
}
