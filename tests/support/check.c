/* check.c -- the test checks and temp folder (see tests/test.h). */
#include "test.h"

#include <ftw.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failure_count;
static int check_count;
static const char *current_test = "";
static char temp_dir[512];
static int cleanup_registered;

void test_begin(const char *name) {
    current_test = name;
    fprintf(stderr, "-- %s\n", name);
}

int test_check(int ok, const char *file, int line, const char *expression, const char *format, ...) {
    check_count++;
    if (ok) return 1;
    failure_count++;
    char message[512];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof(message), format, args);
    va_end(args);
    fprintf(stderr, "FAIL %s:%d [%s] %s  %s\n", file, line, current_test, expression, message);
    return 0;
}

int test_check_near(double actual, double expected, double tolerance, const char *file, int line,
                    const char *expression) {
    int ok = fabs(actual - expected) <= tolerance; /* false for NaN */
    return test_check(ok, file, line, expression, "= %.9g, expected %.9g +- %.3g", actual, expected, tolerance);
}

int test_check_error(int status, int expected, const SpirtError *error, const char *needle, const char *file,
                     int line, const char *expression) {
    const char *message = error ? error->message : "";
    int ok = status == expected && (needle == NULL || strstr(message, needle) != NULL);
    return test_check(ok, file, line, expression, "status %d (expected %d), message \"%s\" (expected to mention \"%s\")",
                      status, expected, message, needle ? needle : "");
}

int test_check_ok(int status, const SpirtError *error, const char *file, int line, const char *expression) {
    return test_check(status == SPIRT_OK, file, line, expression, "status %d: %s", status,
                      error ? error->message : "");
}

int test_failures(void) { return failure_count; }

static int remove_entry(const char *path, const struct stat *info, int flag, struct FTW *walk) {
    (void)info, (void)flag, (void)walk;
    remove(path);
    return 0;
}

static void remove_temp_dir(void) {
    if (temp_dir[0]) {
        nftw(temp_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
        temp_dir[0] = '\0';
    }
}

const char *test_temp_dir(void) {
    if (temp_dir[0]) return temp_dir;
    const char *base = getenv("TMPDIR");
    snprintf(temp_dir, sizeof(temp_dir), "%s/spirt-test-XXXXXX", base && *base ? base : "/tmp");
    if (mkdtemp(temp_dir) == NULL) {
        perror("mkdtemp");
        abort(); /* a test that cannot make its folder cannot run */
    }
    if (!cleanup_registered) {
        atexit(remove_temp_dir);
        cleanup_registered = 1;
    }
    return temp_dir;
}

char *test_temp_path(char *buffer, size_t size, const char *name) {
    snprintf(buffer, size, "%s/%s", test_temp_dir(), name);
    return buffer;
}

double test_max_relative_error(const float *a, const float *b, size_t count) {
    double worst = 0.0;
    for (size_t i = 0; i < count; i++) {
        double scale = fabs((double)b[i]) > 1.0 ? fabs((double)b[i]) : 1.0;
        double error = fabs((double)a[i] - (double)b[i]) / scale;
        if (!(error <= worst)) worst = error; /* NaN propagates as worst */
    }
    return worst;
}

int test_finish(void) {
    remove_temp_dir();
    if (failure_count)
        fprintf(stderr, "%d of %d checks FAILED\n", failure_count, check_count);
    else
        fprintf(stderr, "all %d checks passed\n", check_count);
    return failure_count ? 1 : 0;
}
