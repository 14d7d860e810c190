/* clock.c -- clocks (see include/spirt/clock.h). */
#include "spirt/clock.h"

#include <errno.h>
#include <time.h>

uint64_t clock_monotonic_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
}

double clock_monotonic_ms(void) { return (double)clock_monotonic_ns() / 1e6; }

int64_t clock_wall_ms(void) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

void clock_sleep_ms(double milliseconds) {
    if (milliseconds <= 0) return;
    struct timespec remaining;
    remaining.tv_sec = (time_t)(milliseconds / 1000.0);
    remaining.tv_nsec = (long)((milliseconds - (double)remaining.tv_sec * 1000.0) * 1e6);
    while (nanosleep(&remaining, &remaining) != 0 && errno == EINTR) {
    }
}
