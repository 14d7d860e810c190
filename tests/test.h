/* test.h -- the checks every test program uses, and its temp folder.
 *
 * A test program is a main() that calls test_begin("what") before each group
 * of checks and returns test_finish() at the end: exit status 0 only if every
 * check held. A failed check prints file:line, the expression and a message,
 * and the program goes on, so one run shows every failure.
 *
 * test_temp_dir() is a fresh folder under $TMPDIR for this process; it and
 * everything in it is removed by test_finish() (and at exit). */
#ifndef SPIRT_TEST_H
#define SPIRT_TEST_H

#include <stddef.h>

#include "spirt/error.h"

void test_begin(const char *name);
int test_check(int ok, const char *file, int line, const char *expression, const char *format, ...)
    __attribute__((format(printf, 5, 6)));
int test_check_near(double actual, double expected, double tolerance, const char *file, int line,
                    const char *expression);
int test_finish(void);
int test_failures(void);

/* A folder of this test's own, created on first use; never NULL. */
const char *test_temp_dir(void);
/* test_temp_dir()/name written into buffer; returns buffer. */
char *test_temp_path(char *buffer, size_t size, const char *name);

/* Largest |a[i] - b[i]| / max(1, |b[i]|) over count values. */
double test_max_relative_error(const float *a, const float *b, size_t count);

#define CHECK(condition) test_check(!!(condition), __FILE__, __LINE__, #condition, " ")
#define CHECKF(condition, ...) test_check(!!(condition), __FILE__, __LINE__, #condition, __VA_ARGS__)
#define CHECK_NEAR(actual, expected, tolerance) \
    test_check_near((actual), (expected), (tolerance), __FILE__, __LINE__, #actual)
/* A status that must be SPIRT_OK; prints the error's message otherwise. */
#define CHECK_OK(status, error) test_check_ok((status), (error), __FILE__, __LINE__, #status)
int test_check_ok(int status, const SpirtError *error, const char *file, int line, const char *expression);
/* A status that must be the given failure, with a message mentioning `needle`. */
int test_check_error(int status, int expected, const SpirtError *error, const char *needle,
                     const char *file, int line, const char *expression);
#define CHECK_ERROR(status, expected, error, needle) \
    test_check_error((status), (expected), (error), (needle), __FILE__, __LINE__, #status)

#endif /* SPIRT_TEST_H */
