/* parallel.c -- parallel_for on short-lived POSIX threads
 * (see include/spirt/parallel.h).
 *
 * Threads are started per call. Starting one costs tens of microseconds,
 * nothing next to the millisecond-scale kernels that use this, and it keeps
 * the module free of a long-lived pool inside redis-server. */
#include "spirt/parallel.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

enum { MAX_THREADS = 64 };

typedef struct Range {
    ParallelBody body;
    void *context;
    size_t begin, end;
} Range;

static void *run_range(void *argument) {
    Range *range = argument;
    range->body(range->context, range->begin, range->end);
    return NULL;
}

int parallel_default_threads(void) {
    const char *configured = getenv("SPIRT_THREADS");
    if (configured) {
        int threads = atoi(configured);
        if (threads > 0) return threads > MAX_THREADS ? MAX_THREADS : threads;
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (cpus < 1) cpus = 1;
    return cpus > MAX_THREADS ? MAX_THREADS : (int)cpus;
}

void parallel_for(size_t count, size_t grain, int threads, ParallelBody body, void *context) {
    if (count == 0) return;
    if (grain == 0) grain = 1;
    if (threads <= 0) threads = parallel_default_threads();
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    size_t grains = (count + grain - 1) / grain;
    if ((size_t)threads > grains) threads = (int)grains;
    if (threads <= 1) {
        body(context, 0, count);
        return;
    }
    Range ranges[MAX_THREADS];
    pthread_t ids[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    size_t per_thread = (grains + (size_t)threads - 1) / (size_t)threads;
    for (int t = 0; t < threads; t++) {
        size_t begin = (size_t)t * per_thread * grain;
        size_t end = begin + per_thread * grain;
        if (begin > count) begin = count;
        if (end > count) end = count;
        ranges[t] = (Range){body, context, begin, end};
    }
    for (int t = 1; t < threads; t++)
        if (ranges[t].begin < ranges[t].end)
            started[t] = pthread_create(&ids[t], NULL, run_range, &ranges[t]) == 0;
    run_range(&ranges[0]);
    for (int t = 1; t < threads; t++) {
        if (started[t])
            pthread_join(ids[t], NULL);
        else if (ranges[t].begin < ranges[t].end)
            run_range(&ranges[t]); /* could not start a thread: do it here */
    }
}
