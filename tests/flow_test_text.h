/* flow_test_text.h -- JSON written with single quotes, for the flow tests.
 *
 * State machines in C string literals drown in \" escapes; the flow tests
 * write them with single quotes instead, and this turns every ' into " (a
 * backslash before a ' keeps that one). The caller frees the copy. */
#ifndef SPIRT_FLOW_TEST_TEXT_H
#define SPIRT_FLOW_TEST_TEXT_H

#include <stdlib.h>
#include <string.h>

static inline char *flow_test_text(const char *text) {
    char *copy = malloc(strlen(text) + 1), *out = copy;
    if (copy == NULL) return NULL;
    for (const char *c = text; *c; c++) {
        if (c[0] == '\\' && c[1] == '\'')
            *out++ = *++c;
        else
            *out++ = *c == '\'' ? '"' : *c;
    }
    *out = '\0';
    return copy;
}

#endif /* SPIRT_FLOW_TEST_TEXT_H */
